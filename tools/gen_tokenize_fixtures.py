#!/usr/bin/env python3
"""Golden fixtures for asvr-tokenize encode: a tiny seeded tokenizer file and the codes PyTorch
computes for real images through the reference pipeline:

  Pillow open().convert('RGB') → expand2square(127,127,127) (pad) or nothing (squash) → Pillow
  BICUBIC resize → x/255 (float64 → float32) → (x - 0.5)/0.5 → HF SiglipVisionModel hidden_states[tap]
  → greedy RVQ (|x|^2 + |c|^2 - 2 x c^T, argmin)

Writes tests/golden/tokenize/: tiny_tokenizer.safetensors, images.txt (keys relative to
tests/golden/images, plus a corrupt and a missing one), expected_codes.json {policy: {key: codes}}.

    python3 tools/gen_tokenize_fixtures.py
Needs: torch, transformers, safetensors, numpy, Pillow.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from transformers import SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_tokenizer as ct  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "tokenize")
IMAGES = os.path.join(ROOT, "tests", "golden", "images")
KEYS = ["photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.png", "jcmyk.jpg", "jgray.jpg", "jprog.jpg",
        "ptall.png", "pwide.png", "prgba16.png", "ppal_trns.png", "j1xn.jpg", "pnx1.png", "exif6.jpg"]
BAD = ["corrupt/truncated.jpg", "corrupt/text.jpg", "missing/nothing_here.jpg"]


def preprocess(path, policy, S):
    img = Image.open(path).convert("RGB")
    if policy == "pad":
        w, h = img.size
        if w != h:
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), (127, 127, 127))
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
    img = img.resize((S, S), Image.BICUBIC)
    x = (np.asarray(img, dtype=np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def rvq(x, books):
    residual = x.clone()
    codes = []
    for cb in books:
        dist = torch.addmm(residual.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1)[None, :], residual, cb.t(), alpha=-2.0)
        idx = dist.argmin(dim=1)
        codes.append(idx)
        residual = residual - cb[idx]
    return torch.stack(codes, dim=1)


def main():
    os.makedirs(OUT, exist_ok=True)
    cfg = dict(ct.PRESETS["tiny"])
    enc, books = ct.random_weights(cfg, seed=7)
    tensors = ct.write(os.path.join(OUT, "tiny_tokenizer.safetensors"), cfg, enc, books, torch.float32)
    config = SiglipVisionConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                                num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
                                image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                                layer_norm_eps=cfg["layer_norm_eps"], hidden_act="gelu_pytorch_tanh")
    model = SiglipVisionModel(config).eval()
    model.config._attn_implementation = "eager"
    sd = {k[len("vision_model."):]: v for k, v in tensors.items() if k.startswith("vision_model.")}
    target = getattr(model, "vision_model", model)  # newer transformers drop the prefix
    missing, unexpected = target.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("encoder.layers.%d." % (cfg["num_layers"] - 1)) or k.startswith("post_layernorm")
               or k.startswith("head.") for k in missing), missing  # only layers after the tap
    cbs = [tensors["quantizer.codebooks.%d.weight" % d] for d in range(cfg["depth"])]
    expected = {}
    for policy in ("pad", "squash"):
        batch = torch.stack([preprocess(os.path.join(IMAGES, k), policy, cfg["image_size"]) for k in KEYS])
        with torch.no_grad():
            hs = model(pixel_values=batch, output_hidden_states=True).hidden_states[cfg["tap_layer"]]
        codes = rvq(hs.reshape(-1, cfg["hidden_size"]), cbs).reshape(len(KEYS), -1)
        expected[policy] = {k: codes[i].tolist() for i, k in enumerate(KEYS)}
    with open(os.path.join(OUT, "images.txt"), "w") as f:
        f.write("# keys relative to tests/golden/images; the last three are bad on purpose\n")
        for k in KEYS + BAD:
            f.write(k + "\n")
    with open(os.path.join(OUT, "expected_codes.json"), "w") as f:
        json.dump({"positions": (cfg["image_size"] // cfg["patch_size"]) ** 2, "depth": cfg["depth"],
                   "codes": expected, "bad": BAD}, f)
    print("wrote %d images x 2 policies" % len(KEYS))


if __name__ == "__main__":
    main()
