#!/usr/bin/env python3
"""Golden fixtures for the appearance (pixel) tokenizer: a tiny seeded appearance tokenizer file and
what PyTorch computes with it:

  images → the preprocessing of gen_tokenize_fixtures.py (Pillow, pad or squash) → HF
  SiglipVisionModel hidden_states[tap] (B, L, C) → reshape (B, g, g, C) → NCHW → ProjectResnetBlock
  (written below from its definition) → NHWC → greedy RVQ on embed_dim-wide vectors → codes (B, L, D)

ProjectResnetBlock (DualToken's prequant_visual, a VQGAN-style ResNet block without time embedding):
  h = conv1x1(silu(GroupNorm(32, eps 1e-6)(x)));  h = conv3x3_pad1(dropout0(silu(GroupNorm(32)(h))))
  out = (nin_shortcut(x) if C_in != C_out else x) + h

Writes tests/golden/tokenize_appearance/:
  tiny_appearance.safetensors   the tokenizer (tap 2 of 4 layers, 64 wide, 7 x 7 grid, block 64 → 32,
                                RVQ 3 x 64 x 32)
  expected_codes.json           {policy: {key: codes}} for the images of tests/golden/tokenize/images.txt
  features.safetensors          fixed inputs [2,3,56,56] and their tap features, block outputs and codes;
                                plus an identity-shortcut block (id_block.*, 32 → 32) with an input on a
                                4 x 6 grid and its output

    python3 tools/gen_appearance_fixtures.py
Needs: torch, transformers, safetensors, numpy, Pillow.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_tokenizer as ct  # noqa: E402
import gen_tokenize_fixtures as gt  # noqa: E402

OUT = os.path.join(gt.ROOT, "tests", "golden", "tokenize_appearance")


def project_block(x, p, groups=ct.NORM_GROUPS, eps=ct.NORM_EPS):
    """x: NCHW. p: {name: tensor} with the ProjectResnetBlock names (no prefix)."""
    h = F.silu(F.group_norm(x, groups, p["norm1.weight"], p["norm1.bias"], eps))
    h = F.conv2d(h, p["conv1.weight"], p["conv1.bias"])
    h = F.silu(F.group_norm(h, groups, p["norm2.weight"], p["norm2.bias"], eps))
    h = F.conv2d(h, p["conv2.weight"], p["conv2.bias"], padding=1)
    shortcut = F.conv2d(x, p["nin_shortcut.weight"], p["nin_shortcut.bias"]) if "nin_shortcut.weight" in p else x
    return shortcut + h


def rvq_margin(x, books):
    """Codes as gt.rvq, plus the smallest gap between the best and second-best distance (how far a
    code is from flipping under rounding)."""
    residual = x.clone().double()
    codes, margin = [], float("inf")
    for cb in books:
        cbd = cb.double()
        dist = torch.addmm(residual.pow(2).sum(1, keepdim=True) + cbd.pow(2).sum(1)[None, :], residual, cbd.t(), alpha=-2.0)
        top2 = dist.topk(2, dim=1, largest=False).values
        margin = min(margin, float((top2[:, 1] - top2[:, 0]).min()))
        idx = dist.argmin(dim=1)
        codes.append(idx)
        residual = residual - cbd[idx]
    return torch.stack(codes, dim=1), margin


class Tokenizer:
    def __init__(self, cfg, tensors):
        self.cfg = cfg
        config = SiglipVisionConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                                    num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
                                    image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                                    layer_norm_eps=cfg["layer_norm_eps"], hidden_act="gelu_pytorch_tanh")
        self.model = SiglipVisionModel(config).eval()
        self.model.config._attn_implementation = "eager"
        sd = {k[len("vision_model."):]: v for k, v in tensors.items() if k.startswith("vision_model.")}
        target = getattr(self.model, "vision_model", self.model)
        missing, unexpected = target.load_state_dict(sd, strict=False)
        assert not unexpected, unexpected
        assert all(int(k.split(".")[2]) >= cfg["tap_layer"] for k in missing if k.startswith("encoder.layers.")), missing
        self.block = {k[len(ct.PREQUANT):]: v for k, v in tensors.items() if k.startswith(ct.PREQUANT)}
        self.books = [tensors["quantizer.codebooks.%d.weight" % d] for d in range(cfg["depth"])]

    @torch.no_grad()
    def __call__(self, images):
        cfg = self.cfg
        hs = self.model(pixel_values=images, output_hidden_states=True).hidden_states[cfg["tap_layer"]]
        B, L, C = hs.shape
        g = int(round(L ** 0.5))
        z = project_block(hs.reshape(B, g, g, C).permute(0, 3, 1, 2).contiguous(), self.block)
        z = z.permute(0, 2, 3, 1).reshape(B, L, -1).contiguous()
        codes, margin = rvq_margin(z.reshape(-1, z.shape[-1]), self.books)
        # the float32 argmin (what the reference computes) must agree with the float64 one
        assert torch.equal(codes, gt.rvq(z.reshape(-1, z.shape[-1]), self.books)), "float32 and float64 codes differ"
        return hs, z, codes.reshape(B, L, -1), margin


def main():
    os.makedirs(OUT, exist_ok=True)
    cfg = dict(ct.PRESETS_APPEARANCE["tiny"], kind="appearance")
    enc, books = ct.random_weights(cfg, seed=11)
    tensors = ct.write(os.path.join(OUT, "tiny_appearance.safetensors"), cfg, enc, books, torch.float32)
    tok = Tokenizer(cfg, tensors)

    expected, margins = {}, []
    for policy in ("pad", "squash"):
        batch = torch.stack([gt.preprocess(os.path.join(gt.IMAGES, k), policy, cfg["image_size"]) for k in gt.KEYS])
        _, _, codes, margin = tok(batch)
        margins.append(margin)
        expected[policy] = {k: codes[i].reshape(-1).tolist() for i, k in enumerate(gt.KEYS)}
    L = (cfg["image_size"] // cfg["patch_size"]) ** 2
    with open(os.path.join(OUT, "expected_codes.json"), "w") as f:
        json.dump({"positions": L, "depth": cfg["depth"], "codes": expected, "bad": gt.BAD}, f)

    g = torch.Generator().manual_seed(5)
    images = (torch.rand((2, 3, cfg["image_size"], cfg["image_size"]), generator=g) * 2 - 1).float()
    hs, z, codes, margin = tok(images)
    margins.append(margin)
    # identity-shortcut block (C_in == C_out, as DualToken's embed_dim = hidden_size = 1152 would give)
    idb = {k: v for k, v in ct.random_weights(dict(cfg, hidden_size=32, embed_dim=32, tap_layer=0), seed=12)[0].items()
           if k.startswith(ct.PREQUANT)}
    assert not any("nin_shortcut" in k for k in idb)
    idb = {k[len(ct.PREQUANT):]: v for k, v in idb.items()}
    x = torch.randn((1, 32, 4, 6), generator=g) * 2 + 0.5
    with torch.no_grad():
        y = project_block(x, idb)
    feats = {"images": images, "tap_features": hs.contiguous(), "block_output": z.contiguous(),
             "codes": codes.to(torch.int32).contiguous(),
             "id_block_input": x.permute(0, 2, 3, 1).reshape(1, 24, 32).contiguous(),
             "id_block_output": y.permute(0, 2, 3, 1).reshape(1, 24, 32).contiguous()}
    feats.update({"id_block." + k: v.contiguous() for k, v in idb.items()})
    save_file(feats, os.path.join(OUT, "features.safetensors"), metadata={"id_block_grid": "4x6"})
    print("wrote %d images x 2 policies + features; smallest top-2 distance gap %.3g" % (len(gt.KEYS), min(margins)))


if __name__ == "__main__":
    main()
