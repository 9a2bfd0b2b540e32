#!/usr/bin/env python3
"""SigLIP-SO400M (to layer 26 of 27) + RVQ 8 x 16384 x 1152 at the real sizes with seeded random
weights: PyTorch / HF transformers compute the expected features and codes in fp32, our C checker
(build/tests/check_siglip_real) recomputes them from the same files and compares.

    python3 tools/check_siglip_real.py [--checker build/tests/check_siglip_real] [--keep DIR]
                                       [--batch 1] [--layers 27] [--tap 26]

Writes ~2.3 GB into a temporary directory (removed afterwards unless --keep) and needs ~10 GB RAM.
Prints the checker's JSON line and exits with its status.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_siglip_fixtures import build_model, hf_weights, make_codebooks, rvq_greedy  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--checker", default=os.path.join(here, "..", "build", "tests", "check_siglip_real"))
    ap.add_argument("--keep", default=None, help="write into this directory and keep it")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layers", type=int, default=27)
    ap.add_argument("--tap", type=int, default=26)
    args = ap.parse_args()
    if not os.access(args.checker, os.X_OK):
        sys.exit(f"no checker at {args.checker}: build it with cmake --build build")

    c = dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304,
             num_layers=args.layers, num_heads=16, layer_norm_eps=1e-6, tap_layer=args.tap,
             rvq_depth=8, rvq_codebook_size=16384, batch=args.batch)
    torch.manual_seed(4321)
    t0 = time.time()
    model = build_model(c)
    B, S = c["batch"], c["image_size"]
    pixels = torch.rand(B, 3, S, S) * 2.0 - 1.0
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    feats = out.hidden_states[c["tap_layer"]].contiguous()
    t_fwd = time.time() - t0
    C, K, D = c["hidden_size"], c["rvq_codebook_size"], c["rvq_depth"]
    books = make_codebooks(feats, K, D)
    t1 = time.time()
    codes = rvq_greedy(feats.reshape(-1, C), books).reshape(B, -1, D)
    t_rvq = time.time() - t1
    print(f"torch: model + forward {t_fwd:.1f}s, rvq {t_rvq:.1f}s, |features| {feats.norm():.4g}",
          file=sys.stderr)

    out_dir = args.keep or tempfile.mkdtemp(prefix="asvr_siglip_real_")
    os.makedirs(out_dir, exist_ok=True)
    try:
        weights = hf_weights(model)
        del model, out
        for d in range(D):
            weights[f"quantizer_semantic.codebooks.{d}.weight"] = torch.cat([books[d], torch.zeros(1, C)])
        cfg_json = json.dumps(c, sort_keys=True)
        save_file(weights, os.path.join(out_dir, "weights.safetensors"), metadata={"config": cfg_json})
        del weights
        save_file({"pixel_values": pixels.contiguous(), "features": feats,
                   "codes": codes.to(torch.int32).contiguous()},
                  os.path.join(out_dir, "io.safetensors"), metadata={"config": cfg_json})
        rc = subprocess.run([args.checker, out_dir]).returncode
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
