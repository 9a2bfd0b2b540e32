#!/usr/bin/env python3
"""Golden data for op_interpolate (tests/test_interpolate.c): random tensors resized by
torch.nn.functional.interpolate in fp32 on the CPU — bicubic and bilinear with align_corners=False and
antialias=False, and mode 'area' (adaptive average pooling) — down and up, square and not, with borders
(bicubic clamps its taps at the edges), on [N, C, H, W] and on channels-last [N, H, W, C] grids (x
permuted to NCHW, interpolated, permuted back).

Writes tests/golden/interpolate/cases.safetensors: per case i, "i.x" and "i.y" (F32), and the case list
in the metadata key "cases" (JSON: mode, channels_last, x and y shapes).
    python3 tools/gen_interp_fixtures.py
Needs: torch, safetensors, numpy. Deterministic (fixed seed, one thread): a rerun writes the same file.
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "interpolate")

# mode, channels_last, N, C, H, W, OH, OW
CASES = [
    ("bicubic", 0, 2, 3, 13, 17, 7, 29),   # down in H, up in W
    ("bicubic", 0, 1, 2, 30, 30, 10, 10),  # 3x down (S2's 1152 -> 384, small)
    ("bicubic", 0, 1, 2, 30, 30, 20, 20),  # 1.5x down (1152 -> 768)
    ("bicubic", 0, 1, 2, 9, 9, 9, 9),      # same size: the identity
    ("bicubic", 0, 1, 1, 2, 3, 7, 5),      # tiny input: every tap clamped
    ("bicubic", 1, 2, 5, 6, 9, 13, 4),
    ("bilinear", 0, 2, 3, 13, 17, 7, 29),
    ("bilinear", 0, 1, 3, 30, 30, 10, 10), # 3x down without antialias (the S2 targets' rule)
    ("bilinear", 0, 1, 1, 4, 6, 9, 2),
    ("bilinear", 1, 2, 4, 5, 3, 11, 8),
    ("area", 0, 2, 3, 12, 18, 4, 6),       # divisible: 3x3 average pooling
    ("area", 1, 2, 7, 9, 9, 3, 3),
    ("area", 1, 1, 5, 6, 6, 3, 3),         # 2x2 (S2's 54 -> 27)
    ("area", 0, 1, 2, 7, 5, 3, 4),         # not divisible: overlapping adaptive cells
    ("area", 1, 1, 3, 4, 4, 4, 4),         # same size: the identity
]


def main():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(20240817)
    tensors, meta = {}, []
    for i, (mode, cl, N, C, H, W, OH, OW) in enumerate(CASES):
        x = torch.rand(N, C, H, W, generator=g) * 4 - 2
        kw = dict(size=(OH, OW), mode=mode)
        if mode != "area":
            kw.update(align_corners=False, antialias=False)
        y = F.interpolate(x, **kw)
        if cl:
            x, y = x.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)
        tensors["%d.x" % i] = x.contiguous()
        tensors["%d.y" % i] = y.contiguous()
        meta.append(dict(mode=mode, channels_last=cl, x=list(tensors["%d.x" % i].shape), y=list(tensors["%d.y" % i].shape)))
    # a same-size bicubic resize is exactly the identity
    assert torch.equal(tensors["3.x"], tensors["3.y"]) and torch.equal(tensors["14.x"], tensors["14.y"])
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "cases.safetensors")
    save_file(tensors, path + ".tmp", metadata={"cases": json.dumps(meta), "torch": torch.__version__.split("+")[0]})
    os.replace(path + ".tmp", path)
    print("wrote %s: %d cases, %d bytes" % (os.path.relpath(path, ROOT), len(CASES), os.path.getsize(path)))


if __name__ == "__main__":
    main()
