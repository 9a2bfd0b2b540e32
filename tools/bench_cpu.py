#!/usr/bin/env python3
"""The CPU backend next to PyTorch on the CPU with the same number of threads: the tokenizer encode
and one ASVR training step, both in fp32, random weights, in the same run.

Tokenizer: HF SiglipVisionModel (to the tap layer, hidden_states[tap]) + the greedy torch RVQ
(|x|^2 + |c|^2 - 2 x c^T via addmm, argmin) on a batch of random normalised images, against
tests/bench_tokenize_cpu (vision_tokenizer_encode) on the same tokenizer file. Training step: the step
of tools/bench_train_gpu.py (HF LlamaForCausalLM + SiglipVisionModel + the reference visual head,
AdamW) in fp32, against tests/bench_train_cuda --device cpu at the same configuration.

Threads: torch.set_num_threads(T) on the PyTorch side; OPENBLAS_NUM_THREADS=T (and OMP_NUM_THREADS)
on ours. Shapes: --tokenizer-shape so400m (SigLIP-SO400M to layer 26, RVQ 8 x 16384: the real one) or
small; --step-shape small (a scaled-down model that runs in seconds on two cores; see STEP_SMALL).

    python3 tools/bench_cpu.py --build build --threads 2 [--tokenizer-shape so400m] [--json out.json]

Prints a table (rows per second on each side and the ratio). Needs: torch, transformers, safetensors.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_tokenizer as ct  # noqa: E402

TOK_SHAPES = {
    "so400m": dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_layers=27,
                   num_heads=16, layer_norm_eps=1e-6, tap_layer=26, depth=8, codebook_size=16384, batch=2),
    "small": dict(image_size=224, patch_size=14, hidden_size=384, intermediate_size=1536, num_layers=6,
                  num_heads=6, layer_norm_eps=1e-6, tap_layer=6, depth=4, codebook_size=4096, batch=4),
}
# A scaled-down training step: every part of the real one, sizes a 2-core machine runs in seconds.
STEP_SMALL = dict(image=224, patch=14, vis_hidden=384, vis_mlp=1536, vis_heads=6, vis_layers=6,
                  d=512, layers=4, heads=8, ffn=1376, vocab=32000,
                  E=256, head_dim=32, D=4, K=2048, head_layers=2, B=2, T=512)


def tokenizer_torch(cfg, path, batch, iters, warmup):
    from safetensors.torch import load_file
    from transformers import SiglipVisionConfig, SiglipVisionModel
    vc = SiglipVisionConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                            num_hidden_layers=cfg["tap_layer"], num_attention_heads=cfg["num_heads"],
                            image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                            layer_norm_eps=cfg["layer_norm_eps"], hidden_act="gelu_pytorch_tanh")
    model = SiglipVisionModel(vc).eval()
    sd = load_file(path)
    model.load_state_dict({k: v for k, v in sd.items() if k.startswith("vision_model.")}, strict=False)
    books = [sd["quantizer.codebooks.%d.weight" % d] for d in range(cfg["depth"])]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, cfg["image_size"], cfg["image_size"], generator=g) * 2 - 1

    @torch.no_grad()
    def run():
        f = model(pixel_values=x, output_hidden_states=True).hidden_states[cfg["tap_layer"]]
        r = f.reshape(-1, f.shape[-1]).clone()
        codes = []
        for cb in books:
            d = torch.addmm(r.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1)[None, :], r, cb.t(), alpha=-2.0)
            i = d.argmin(1)
            codes.append(i)
            r = r - cb[i]
        return codes

    for _ in range(warmup):
        run()
    t = time.perf_counter()
    for _ in range(iters):
        run()
    el = time.perf_counter() - t
    return dict(images_per_s=batch * iters / el, s_per_batch=el / iters)


def ours(cmd, threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               ASVR_CPU_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.strip().splitlines() if l.strip().startswith("{")]
    if not lines:
        sys.exit("%s printed no JSON: %s" % (cmd[0], out.stderr[-2000:]))
    return json.loads(lines[-1])


def step_config_json(c):
    return {"llm": {"hidden_size": c["d"], "num_hidden_layers": c["layers"], "num_attention_heads": c["heads"],
                    "num_key_value_heads": c["heads"], "intermediate_size": c["ffn"], "vocab_size": c["vocab"],
                    "rms_norm_eps": 1e-5, "rope_theta": 10000.0},
            "vision": {"image_size": c["image"], "patch_size": c["patch"], "hidden_size": c["vis_hidden"],
                       "intermediate_size": c["vis_mlp"], "num_layers": c["vis_layers"], "num_heads": c["vis_heads"],
                       "layer_norm_eps": 1e-6, "tap_layer": c["vis_layers"], "image_mean": [0.5] * 3,
                       "image_std": [0.5] * 3},
            "visual_head": {"embed_dim": c["E"], "n_heads": c["E"] // c["head_dim"], "depth": c["D"],
                            "codebook_size": c["K"], "n_layers": c["head_layers"], "ffn_dim": 2 * c["E"],
                            "rms_norm_eps": 1e-6}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokenizer-shape", default="small", choices=sorted(TOK_SHAPES))
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list: tokenizer, step")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    skip = set(filter(None, a.skip.split(",")))
    cpu = "?"
    if os.path.exists("/proc/cpuinfo"):
        names = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
        cpu = "%s (%d logical CPUs)" % (names[0], len(names)) if names else "?"
    res = {"threads": a.threads, "torch": torch.__version__, "cpu": cpu}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "tokenizer" not in skip:
            cfg = dict(TOK_SHAPES[a.tokenizer_shape])
            batch = cfg.pop("batch")
            cfg["kind"] = "semantic"
            path = os.path.join(tmp, "tok.safetensors")
            enc, books = ct.random_weights(cfg, 0)
            ct.write(path, cfg, enc, books, torch.float32)
            pt = tokenizer_torch(cfg, path, batch, a.iters, 1)
            us = ours([os.path.join(a.build, "tests", "bench_tokenize_cpu"), path, "--batch", str(batch), "--iters",
                       str(a.iters), "--warmup", "1"], a.threads)
            res["tokenizer"] = {"shape": a.tokenizer_shape, "batch": batch, "pytorch": pt, "asvr": us}
            rows.append(("tokenizer encode, %s, batch %d (images/s)" % (a.tokenizer_shape, batch), pt["images_per_s"],
                         us["images_per_s"]))
        if "step" not in skip:
            import bench_train_gpu as btg
            c = dict(STEP_SMALL)
            pt = btg.run_torch(c, torch.device("cpu"), a.steps, 1, 0)
            cfg_path = os.path.join(tmp, "model.json")
            json.dump(step_config_json(c), open(cfg_path, "w"))
            tcfg = dict(image_size=c["image"], patch_size=c["patch"], hidden_size=c["vis_hidden"],
                        intermediate_size=c["vis_mlp"], num_layers=c["vis_layers"], num_heads=c["vis_heads"],
                        layer_norm_eps=1e-6, tap_layer=c["vis_layers"], depth=c["D"], codebook_size=c["K"],
                        kind="semantic")
            tpath = os.path.join(tmp, "step_tok.safetensors")
            enc, books = ct.random_weights(tcfg, 0)
            ct.write(tpath, tcfg, enc, books, torch.float32)
            us = ours([os.path.join(a.build, "tests", "bench_train_cuda"), tpath, "--config", cfg_path, "--device", "cpu",
                       "--rows", str(c["B"]), "--seq", str(c["T"]), "--steps", str(a.steps), "--warmup", "1"], a.threads)
            res["step"] = {"config": c, "pytorch": {k: v for k, v in pt.items() if k != "losses"}, "asvr": us}
            rows.append(("training step, small, %d x %d (tokens/s)" % (c["B"], c["T"]), pt["tokens_per_s"],
                         us["tokens_per_s"]))
    print("CPU: %s; %d threads on both sides; torch %s" % (res["cpu"], a.threads, torch.__version__))
    print("| what | PyTorch | asvr | asvr / PyTorch |")
    print("| --- | --- | --- | --- |")
    for name, p, o in rows:
        print("| %s | %.3f | %.3f | %.2fx |" % (name, p, o, o / p))
    if "step" in res and res["step"]["asvr"].get("phases"):
        for k, v in res["step"]["asvr"]["phases"].items():
            print("  asvr phase %-22s %.4f s/step" % (k, v))
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
