#!/usr/bin/env python3
"""Regenerates tests/golden/siglip/: a tiny seeded HF SiglipVisionModel, its weights (HF names),
D residual-quantiser codebooks, an input batch, and the expected tap-layer features and RVQ codes,
all computed by PyTorch / HF transformers in fp32.

    python3 tools/gen_siglip_fixtures.py [--out tests/golden/siglip]

Needs: torch, transformers, safetensors, numpy.

Files:
  weights.safetensors  vision_model.* (HF names, all layers) and quantizer_semantic.codebooks.{d}.weight
                       [K+1, C] (the last row is the padding row, zeros, never chosen); __metadata__
                       holds the config as JSON under "config".
  io.safetensors       pixel_values [B,3,S,S] f32, features [B,N,C] f32 (= hidden_states[tap]),
                       embeddings [B,N,C] f32 (= hidden_states[0]), codes [B,N,D] i32 (torch greedy
                       RVQ on `features`), tie_input [M,C] f32 and tie_codes [M,D] i32 (planted exact
                       ties: the lowest index must win).
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

# image 46 = 3 x 14 + 4: like SigLIP's 384 = 27 x 14 + 6, the last pixels fall outside every patch.
CFG = dict(image_size=46, patch_size=14, hidden_size=48, intermediate_size=96, num_layers=4,
           num_heads=4, layer_norm_eps=1e-6, tap_layer=3, rvq_depth=3, rvq_codebook_size=64, batch=2)


def rvq_greedy(x, books):
    """Greedy residual quantisation as DualToken's VQEmbedding/RQBottleneck do it (fp32):
    distance = |x|^2 + |c|^2 - 2 x c^T via addmm, argmin (first index on ties), residual -= row."""
    residual = x.clone()
    codes = []
    for cb in books:
        xn = residual.pow(2.0).sum(dim=1, keepdim=True)
        cn = cb.t().pow(2.0).sum(dim=0, keepdim=True)
        dist = torch.addmm(xn + cn, residual, cb.t(), alpha=-2.0)
        idx = dist.argmin(dim=1)
        codes.append(idx)
        residual = residual - cb[idx]
    return torch.stack(codes, dim=1)


def build_model(c):
    """A seeded HF SiglipVisionModel for config dict c, every parameter re-randomised (HF init zeroes
    the biases): no weight is trivially 0 or 1."""
    config = SiglipVisionConfig(hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                                num_hidden_layers=c["num_layers"], num_attention_heads=c["num_heads"],
                                image_size=c["image_size"], patch_size=c["patch_size"],
                                layer_norm_eps=c["layer_norm_eps"], hidden_act="gelu_pytorch_tanh",
                                attention_dropout=0.0)
    model = SiglipVisionModel(config)
    model.config._attn_implementation = "eager"  # plain softmax(q k^T * scale) v, fp32 softmax
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "post_layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "position_embedding" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    return model


def make_codebooks(feats, K, D):
    """Codebooks drawn around the residual at each depth (random residual rows plus noise), so that
    the greedy search has real choices to make at every depth."""
    C = feats.shape[-1]
    books = []
    residual = feats.reshape(-1, C).clone()
    for _ in range(D):
        rows = residual[torch.randint(0, residual.shape[0], (K,))]
        cb = rows + 0.5 * residual.std(dim=0, keepdim=True) * torch.randn(K, C)
        books.append(cb)
        residual = residual - cb[rvq_greedy(residual, [cb])[:, 0]]
    return books


def hf_weights(model):
    """state_dict under the HF checkpoint names (vision_model.*); newer transformers drop the prefix."""
    weights = {}
    for k, v in model.state_dict().items():
        if "position_ids" in k:
            continue
        weights[k if k.startswith("vision_model.") else "vision_model." + k] = v.detach().contiguous()
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in weights, sorted(weights)
    return weights


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "golden", "siglip"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(1234)

    c = CFG
    model = build_model(c)
    B, S = c["batch"], c["image_size"]
    pixels = torch.rand(B, 3, S, S) * 2.0 - 1.0  # mean = std = 0.5 normalisation gives [-1, 1]
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    feats = out.hidden_states[c["tap_layer"]].contiguous()
    emb = out.hidden_states[0].contiguous()
    C, K, D = c["hidden_size"], c["rvq_codebook_size"], c["rvq_depth"]

    books = make_codebooks(feats, K, D)
    # Planted exact ties, all values dyadic so every distance is exact in fp32:
    #  depth 0: rows 11 and 37 identical; tie_input[0] == row 37 -> 11 must win.
    #           rows 12 and 45 distinct; tie_input[1] is their midpoint -> 12 must win.
    #  depth 1: rows 7 and 50 have the smallest norm and equal norms (50 is 7 reversed);
    #           tie_input[0] has a zero residual after depth 0 -> 7 must win (and not the
    #           all-zero padding row K).
    j = torch.arange(C, dtype=torch.float32)
    row_a = ((j % 5) - 2) * 0.25
    books[0][11] = row_a
    books[0][37] = row_a
    books[0][12] = ((j % 3) - 1) * 0.125
    books[0][45] = ((j % 4) - 1.5) * 0.125
    row_s = ((j % 2) * 2 - 1) * 0.0625
    row_s[0] = 0.125
    books[1][7] = row_s
    books[1][50] = row_s.flip(0)
    tie_input = torch.stack([row_a.clone(), 0.5 * (books[0][12] + books[0][45]),
                             ((j % 7) - 3) * 0.125])

    codes = rvq_greedy(feats.reshape(-1, C), books).reshape(B, -1, D)
    tie_codes = rvq_greedy(tie_input, books)
    assert tie_codes[0, 0].item() == 11 and tie_codes[1, 0].item() == 12 and tie_codes[0, 1].item() == 7, \
        tie_codes

    cfg_json = json.dumps(c, sort_keys=True)
    weights = hf_weights(model)
    for d in range(D):
        weights[f"quantizer_semantic.codebooks.{d}.weight"] = torch.cat([books[d], torch.zeros(1, C)])
    save_file(weights, os.path.join(args.out, "weights.safetensors"), metadata={"config": cfg_json})
    save_file({"pixel_values": pixels.contiguous(), "features": feats, "embeddings": emb,
               "codes": codes.to(torch.int32).contiguous(), "tie_input": tie_input.contiguous(),
               "tie_codes": tie_codes.to(torch.int32).contiguous()},
              os.path.join(args.out, "io.safetensors"), metadata={"config": cfg_json})
    print(f"wrote {args.out}: features {tuple(feats.shape)} |f| {feats.norm():.3f}, codes "
          f"{tuple(codes.shape)}, distinct codes per depth "
          f"{[len(set(codes[..., d].flatten().tolist())) for d in range(D)]}, tie codes {tie_codes.tolist()}")


if __name__ == "__main__":
    main()
