#!/usr/bin/env python3
"""Benchmarks the tokenizer: the PyTorch reference as the reference runs it, next to asvr's CUDA path.

PyTorch side (what DESIGN.md's target compares against): HF transformers SiglipVisionModel at the
SigLIP-SO400M shape (384 px, patch 14, 1152 wide, MLP 4304, 16 heads, 27 layers) with random weights,
in bf16 with attn_implementation="sdpa", run with output_hidden_states=True and hidden_states[26]
taken (as the reference does: every layer runs), then greedy torch RVQ over 8 x 16384 x 1152 random
codebooks with the reference's squared L2 (|x|^2 + |c|^2 - 2 x c^T via addmm) and argmin, in bf16.
Batch 64 of random images; images/s over --iters batches after --warmup, timed with
torch.cuda.synchronize().

asvr side (--ours BUILD/tests/bench_tokenize_cuda): the same-shaped random tokenizer file (written
with tools/convert_tokenizer.py random unless --tokenizer is given) loaded on cuda bf16, encoding the
same batch size from pinned host memory (upload + model + codes back), plus its MFU against a
measured bf16 cuBLAS GEMM peak. The script prints both and the ratio as a table.

    python3 tools/bench_tokenize_gpu.py --ours build/tests/bench_tokenize_cuda           # on a GPU
    python3 tools/bench_tokenize_gpu.py --tiny                                         # CPU smoke test

--tiny runs the PyTorch side on the CPU at the tiny preset in f32 (batch 2, one iteration) to check
the script itself; with --ours it also runs the binary (which needs a GPU).

Needs: torch, transformers (4.4x or 5.x), safetensors, numpy. Not needed by the build or the tests.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REAL = dict(preset="so400m", image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304,
            num_layers=27, num_heads=16, tap=26, depth=8, codebook_size=16384)
TINY = dict(preset="tiny", image_size=46, patch_size=14, hidden_size=48, intermediate_size=96, num_layers=4,
            num_heads=4, tap=3, depth=3, codebook_size=64)


def flops_per_image(cfg, layers):
    """2 x multiply-adds of one image: patch embedding, `layers` encoder layers, the RVQ GEMMs (the
    count bench_tokenize_cuda.c makes, with the layers a given implementation runs)."""
    n = (cfg["image_size"] // cfg["patch_size"]) ** 2
    c, i, p = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"]
    f = 2.0 * n * c * 3 * p * p
    f += layers * (2.0 * n * c * c * 4 + 2.0 * 2.0 * n * n * c + 2.0 * 2.0 * n * c * i)
    f += cfg["depth"] * 2.0 * n * cfg["codebook_size"] * c
    return f


def build_model(cfg, device, dtype):
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    vc = SiglipVisionConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                            num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
                            image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    torch.manual_seed(0)
    try:
        model = SiglipVisionModel._from_config(vc, attn_implementation="sdpa")
    except (TypeError, ValueError):
        vc._attn_implementation = "sdpa"
        model = SiglipVisionModel(vc)
    model = model.to(device=device, dtype=dtype).eval()
    attn = getattr(model.config, "_attn_implementation", "?")
    return model, attn


def bench_torch(cfg, device, dtype, batch, warmup, iters):
    import torch

    model, attn = build_model(cfg, device, dtype)
    g = torch.Generator(device="cpu").manual_seed(1)
    C, K, D = cfg["hidden_size"], cfg["codebook_size"], cfg["depth"]
    books = torch.randn((D, K, C), generator=g).to(device=device, dtype=dtype)
    cnorm = (books * books).sum(-1)  # [D, K], computed once, as a cached buffer would be
    images = (2 * torch.rand((batch, 3, cfg["image_size"], cfg["image_size"]), generator=g) - 1).to(device, dtype)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        out = model(pixel_values=images, output_hidden_states=True)
        r = out.hidden_states[cfg["tap"]].reshape(-1, C)
        codes = []
        for d in range(D):
            dist = torch.addmm((r * r).sum(1, keepdim=True) + cnorm[d][None, :], r, books[d].t(), beta=1, alpha=-2)
            idx = dist.argmin(1)
            codes.append(idx)
            r = r - books[d][idx]
        return torch.stack(codes, 1)

    with torch.inference_mode():
        for _ in range(warmup):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            codes = step()
        sync()
        el = time.perf_counter() - t0
    assert codes.shape == (batch * (cfg["image_size"] // cfg["patch_size"]) ** 2, D)
    ips = batch * iters / el
    peak = None
    if device == "cuda":  # bf16 GEMM peak as torch sees it, for the PyTorch MFU
        n = 8192
        a = torch.randn((n, n), device=device, dtype=torch.bfloat16)
        b = torch.randn((n, n), device=device, dtype=torch.bfloat16)
        for _ in range(2):
            a @ b
        sync()
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        sync()
        peak = 2.0 * n ** 3 * 20 / (time.perf_counter() - t0) / 1e12
    return dict(images_per_s=ips, attn=attn, gemm_peak_tflops=peak, seconds=el)


def ensure_tokenizer(cfg, path):
    if path:
        return path
    out = os.path.join(tempfile.gettempdir(), "asvr_bench_%s.safetensors" % cfg["preset"])
    if not os.path.exists(out):
        here = os.path.dirname(os.path.abspath(__file__))
        cmd = [sys.executable, os.path.join(here, "convert_tokenizer.py"), "random", "--preset", cfg["preset"],
               "--seed", "0", "--dtype", "bfloat16", "--out", out]
        print("writing the random tokenizer:", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    return out


def bench_ours(binary, tokenizer, batch, warmup, iters, vq):
    cmd = [binary, tokenizer, "--batch", str(batch), "--iters", str(iters), "--warmup", str(warmup), "--vq", vq]
    print("running:", " ".join(cmd), file=sys.stderr)
    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        sys.exit("bench_tokenize_gpu: %s exited %d:\n%s" % (binary, p.returncode, p.stdout))
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"asvr-tokenize-cuda"' in line:
            return json.loads(line)
        print(line, file=sys.stderr)
    sys.exit("bench_tokenize_gpu: no JSON result line from %s" % binary)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", help="path of the bench_tokenize_cuda binary (build/tests/bench_tokenize_cuda)")
    ap.add_argument("--tokenizer", help="tokenizer file for --ours (default: a random one at the shape, written once)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test of this script at the tiny shape")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--iters", type=int)
    ap.add_argument("--vq", default="gemm", choices=["gemm", "fused"], help="asvr's VQ kernel")
    ap.add_argument("--skip-torch", action="store_true", help="only run --ours")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    cfg = TINY if a.tiny else REAL
    batch = a.batch or (2 if a.tiny else 64)
    warmup = a.warmup if a.warmup is not None else (1 if a.tiny else 3)
    iters = a.iters or (1 if a.tiny else 10)
    res = {"config": cfg, "batch": batch, "warmup": warmup, "iters": iters}
    ref_flops = flops_per_image(cfg, cfg["num_layers"])  # HF runs every layer
    our_flops = flops_per_image(cfg, cfg["tap"])          # asvr stops at the tap layer
    if not a.skip_torch:
        import torch

        device = "cpu" if a.tiny else "cuda"
        if device == "cuda" and not torch.cuda.is_available():
            sys.exit("bench_tokenize_gpu: no CUDA device for torch; use --tiny for a CPU smoke test")
        dtype = torch.float32 if a.tiny else torch.bfloat16
        t = bench_torch(cfg, device, dtype, batch, warmup, iters)
        t["tflops"] = ref_flops * t["images_per_s"] / 1e12
        res["torch"] = t
    if a.ours:
        res["ours"] = bench_ours(a.ours, ensure_tokenizer(cfg, a.tokenizer), batch, warmup, iters, a.vq)
    peak = (res.get("ours") or {}).get("gemm_peak_tflops") or (res.get("torch") or {}).get("gemm_peak_tflops")

    print("\ntokenizer benchmark: %s shape, batch %d, %d iterations after %d warm-up\n" % (cfg["preset"], batch, iters, warmup))
    print("| implementation | images/s | GFLOP/image | TFLOP/s | MFU |")
    print("|---|---:|---:|---:|---:|")
    if "torch" in res:
        t = res["torch"]
        mfu = "%.1f%%" % (100 * t["tflops"] / peak) if peak else "-"
        print("| PyTorch: HF SigLIP (%s, %d layers) + torch RVQ | %.1f | %.1f | %.2f | %s |" % (
            t["attn"], cfg["num_layers"], t["images_per_s"], ref_flops / 1e9, t["tflops"], mfu))
    if "ours" in res:
        o = res["ours"]
        print("| asvr %s (end to end, copies included; vq %s) | %.1f | %.1f | %.2f | %.1f%% |" % (
            o["backend"], o["vq"], o["images_per_s"], our_flops / 1e9, our_flops * o["images_per_s"] / 1e12,
            100 * o["mfu"] * o["images_per_s"] / o["model_images_per_s"]))
        print("| asvr %s (model only) | %.1f | %.1f | %.2f | %.1f%% |" % (
            o["backend"], o["model_images_per_s"], o["gflop_per_image"], o["tflops"], 100 * o["mfu"]))
    if "torch" in res and "ours" in res:
        r = res["ours"]["images_per_s"] / res["torch"]["images_per_s"]
        res["ratio"] = r
        print("\nasvr / PyTorch images/s: %.2fx (DESIGN.md target: >= 1.5x, end to end with decode and writes)" % r)
    if peak:
        print("MFU against a measured bf16 GEMM (8192^3) peak of %.0f TFLOP/s" % peak)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
