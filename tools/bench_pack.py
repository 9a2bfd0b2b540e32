#!/usr/bin/env python3
"""asvr-pack against the reference preprocessing (tools/gen_pack_fixtures.py: transformers' slow
LlamaTokenizer + LLaVA's label arithmetic), on the same synthetic LLaVA file, in the same run, one
CPU core each. Prints samples/s for both and the ratio. --big N also times asvr-pack alone on an
N-sample file (e.g. 665000, LLaVA-665K's size) and reports its peak memory.

    python3 tools/bench_pack.py --bin build/bin/asvr-pack [--n 4000] [--big 665000]
Needs: transformers==4.44 (the slow tokenizer), sentencepiece, protobuf, zstandard.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_pack_fixtures as ref  # noqa: E402
from transformers import LlamaTokenizer  # noqa: E402


def samples(n, seed):
    items = [it["sample"] for it in ref.make_samples(max(n // 4, 100), seed=seed) if it["template"] == "vicuna_v1"]
    out = []
    for i in range(n):
        s = dict(items[i % len(items)])
        s["id"] = i
        out.append(s)
    return out


def run_pack(binary, model, path, out):
    cmd = ["/usr/bin/time", "-f", "%e %M", binary, "build", "--template", "vicuna_v1", "--tokenizer", model,
           "--image-positions", "729", "--out", out, "--force", "--log-level", "warn", path]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    secs, kb = r.stderr.strip().splitlines()[-1].split()
    return float(secs), int(kb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", default=os.path.join(ref.ROOT, "..", "shared", "data", "llama2-tokenizer.model"))
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--big", type=int, default=0)
    a = ap.parse_args()
    tok = LlamaTokenizer(a.model, legacy=False)
    tok.pad_token = tok.unk_token
    with tempfile.TemporaryDirectory() as d:
        data = samples(a.n, seed=99)
        path = os.path.join(d, "bench.json")
        json.dump(data, open(path, "w"))
        t0 = time.perf_counter()
        for s in data:
            ref.preprocess_v1(tok, s)
        py = time.perf_counter() - t0
        c_secs, c_kb = run_pack(a.bin, a.model, path, os.path.join(d, "bench.pack"))
        print(json.dumps({"samples": a.n, "python_samples_per_s": round(a.n / py, 1),
                          "asvr_samples_per_s": round(a.n / c_secs, 1), "ratio": round(py / c_secs, 2),
                          "asvr_seconds_end_to_end": c_secs, "asvr_peak_mb": round(c_kb / 1024, 1)}))
        if a.big:
            big = os.path.join(d, "big.json")
            with open(big, "w") as f:
                f.write("[")
                for i in range(a.big):
                    s = dict(data[i % len(data)])
                    s["id"] = i
                    f.write(("," if i else "") + json.dumps(s))
                f.write("]")
            size = os.path.getsize(big)
            b_secs, b_kb = run_pack(a.bin, a.model, big, os.path.join(d, "big.pack"))
            print(json.dumps({"big_samples": a.big, "json_mb": round(size / 1e6, 1), "asvr_seconds": b_secs,
                              "asvr_samples_per_s": round(a.big / b_secs, 1), "asvr_peak_mb": round(b_kb / 1024, 1)}))


if __name__ == "__main__":
    main()
