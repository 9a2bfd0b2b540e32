#!/usr/bin/env python3
"""Decode + preprocess throughput, single-threaded: Pillow (the reference path) vs asvr's C path.

    python3 tools/bench_preprocess.py [--build build] [--size 384] [--policy pad] [--repeat 1] [FILES...]

Default files: the mate-backgrounds photographs (apt-get install -y mate-backgrounds) at full size.
Pillow side: Image.open(p).convert('RGB') -> expand2square(bg 127) -> resize((S, S), BICUBIC,
reducing_gap=None), as LLaVA + the SigLIP image processor do. C side: build/tests/bench_image. Every C
output is checked byte for byte against Pillow's before the figures are printed.
"""
import argparse
import glob
import json
import os
import platform
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def expand2square(img, bg):
    w, h = img.size
    if w == h:
        return img
    if w > h:
        res = Image.new(img.mode, (w, w), bg)
        res.paste(img, (0, (w - h) // 2))
        return res
    res = Image.new(img.mode, (h, h), bg)
    res.paste(img, ((h - w) // 2, 0))
    return res


def pillow_one(path, size, policy):
    img = Image.open(path).convert("RGB")
    if policy == "pad":
        img = expand2square(img, (127, 127, 127))
    return img.resize((size, size), Image.BICUBIC, reducing_gap=None)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--policy", default="pad", choices=["pad", "squash"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    files = a.files or sorted(glob.glob("/usr/share/backgrounds/mate/*/*.jpg") +
                              glob.glob("/usr/share/backgrounds/mate/*/*.png"))
    if not files:
        raise SystemExit("no input files (install mate-backgrounds or pass files)")
    exe = os.path.join(a.build, "tests", "bench_image")
    with tempfile.TemporaryDirectory() as d:
        # correctness first (and a warm page cache for both sides)
        r = subprocess.run([exe, "--size", str(a.size), "--policy", a.policy, "--dump", d] + files,
                           capture_output=True, text=True, check=True)
        mismatches = 0
        for i, f in enumerate(files):
            want = np.asarray(pillow_one(f, a.size, a.policy)).tobytes()
            got = open(os.path.join(d, "%d.rgb" % i), "rb").read()
            if got != want:
                mismatches += 1
                print("MISMATCH", f)
        # timings, both single-threaded
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            for f in files:
                pillow_one(f, a.size, a.policy)
        pil_s = time.perf_counter() - t0
        r = subprocess.run([exe, "--size", str(a.size), "--policy", a.policy, "--repeat", str(a.repeat)] + files,
                           capture_output=True, text=True, check=True)
        c = json.loads(r.stdout)
    n = len(files) * a.repeat
    pil_ips = n / pil_s
    out = {"machine": cpu_name(), "files": len(files), "repeat": a.repeat, "size": a.size, "policy": a.policy,
           "bit_exact": mismatches == 0, "mismatches": mismatches,
           "pillow_images_per_s": round(pil_ips, 3), "asvr_images_per_s": round(c["images_per_s"], 3),
           "asvr_decode_s": round(c["decode_seconds"], 3), "asvr_preprocess_s": round(c["preprocess_seconds"], 3),
           "ratio": round(c["images_per_s"] / pil_ips, 3), "pillow": Image.__version__}
    print(json.dumps(out, indent=1))
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
