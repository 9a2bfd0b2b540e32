#!/usr/bin/env python3
"""Golden data for the S2 multi-scale input (tests/test_s2.c, tests/test_tokenize_s2.c), from an
implementation written here in PyTorch, independent of the C code:

  images [n, 3, 138, 138] (normalised) → for each scale s in 46, 92, 138:
    F.interpolate(bicubic, align_corners=False, antialias=False) to s x s,
    chessboard split into (s/46)² tiles of 46 x 46 (row-major, concatenated on the batch),
    HF SiglipVisionModel(output_hidden_states=True).hidden_states[tap] per tile (no post-LN),
    the tiles' 3 x 3 maps merged back to (3·s/46)-wide maps, F.interpolate(mode='area') to 3 x 3;
  the three scales concatenated on channels (46 first) → [n, 9, 144].

The model is the tiny ASVR model of tests/golden/train/ (tools/gen_train_fixtures.py, tower 46 px,
patch 14 → 3 x 3 positions with 4 pixels per tile unseen, as SigLIP's 384/14) with its weights, except
the projector's first layer, which reads 3 x 48 = 144 features (re-drawn here); its batch, except the
two images, drawn at 138 x 138. Recorded: the S2 features of the two images, step-0 losses and every
stage-it gradient (text + visual loss), as the training goldens do.

Codes: the tiny tokenizer (tests/golden/tokenize/tiny_tokenizer.safetensors, 46 px) on real photos
prepared at 138 (Pillow: convert RGB, pad with 127 or squash, BICUBIC resize to 138, /255, (x-0.5)/0.5)
then F.interpolate(bilinear, align_corners=False, antialias=False) to 46 — the reference's S2 targets —
through HF SigLIP and greedy RVQ; with each code's distance margin to the runner-up. And a checksum of
Pillow's 8-bit 1152 x 1152 image of each photo and policy (all photos are smaller: upsampling).

Writes tests/golden/s2/: s2_init.safetensors (the projector's first weight [32, 144], the batch images),
forward.safetensors (vision_features [2, 9, 144]), grads_it_default.safetensors, manifest.json,
expected_codes.json.
    python3 tools/gen_s2_fixtures.py
Needs: torch, transformers, safetensors, numpy, Pillow. Deterministic (CPU, fixed seeds, one thread).
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asvr_reference as ref  # noqa: E402
import gen_tokenize_fixtures as gtok  # noqa: E402
import gen_train_fixtures as gt  # noqa: E402
from transformers import SiglipVisionConfig, SiglipVisionModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "s2")
TRAIN = os.path.join(ROOT, "tests", "golden", "train")
SCALES = [46, 92, 138]
SEED = 20240902
CODE_KEYS = ["photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.png", "jgray.jpg", "ptall.png", "pwide.png", "j1xn.jpg"]


def s2_features(tower_features, images, t, patch, C):
    """The S2 forward over a per-tile feature function (tiles [m, 3, t, t] → [m, g², C])."""
    n, g = images.shape[0], t // patch
    outs = []
    for s in SCALES:
        x = F.interpolate(images.float(), size=(s, s), mode="bicubic", align_corners=False, antialias=False)
        k = s // t
        tiles = torch.cat([x[:, :, i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(k) for j in range(k)], dim=0)
        f = tower_features(tiles)                                      # [k*k*n, g*g, C], tile-major
        f = f.reshape(k, k, n, g, g, C).permute(2, 5, 0, 3, 1, 4)      # (b, c, i, y, j, x)
        f = f.reshape(n, C, k * g, k * g)
        outs.append(F.interpolate(f, size=(g, g), mode="area"))
    return torch.cat(outs, dim=1).flatten(2).transpose(1, 2)          # [n, g*g, len(SCALES)*C]


class S2Model(ref.ASVRModel):
    def __init__(self, cfg):
        super().__init__(cfg)
        d, C = cfg["llm"]["hidden_size"], cfg["vision"]["hidden_size"]
        self.mm_projector = nn.Sequential(nn.Linear(len(SCALES) * C, d), nn.GELU(), nn.Linear(d, d))

    def vision_features(self, images):
        v = self.cfg["vision"]
        return s2_features(super().vision_features, images, v["image_size"], v["patch_size"], v["hidden_size"])


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def save(name, tensors):
    path = os.path.join(OUT, name)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return name


def train_part(manifest):
    init = load_file(os.path.join(TRAIN, "model_init.safetensors"))
    tb = load_file(os.path.join(TRAIN, "batch.safetensors"))
    model = S2Model(dict(gt.CFG, visual_loss="default"))
    g = torch.Generator().manual_seed(SEED)
    w0 = torch.randn(model.mm_projector[0].weight.shape, generator=g) / math.sqrt(model.mm_projector[0].weight.shape[1])
    sd = dict(init)
    sd["mm_projector.0.weight"] = w0
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith("vision_tower.") for k in missing), (missing, unexpected)
    S = SCALES[-1]
    images = torch.rand(2, 3, S, S, generator=g) * 2 - 1
    batch = {k: tb[k] for k in ("input_ids", "labels", "segment_ids", "position_ids", "codes", "image_flat_pos",
                                "codes_zero_image")}
    batch["images"] = images
    batch["n_text_only"] = 1

    # self-checks: (1) one scale equal to the tower's size is the plain forward; (2) the 3x downsample of
    # the bicubic resize is the subsample x[3o+1] (every source position on a sample); (3) the area
    # pooling of the merged 2x2-tile map is 2x2 averaging of the tiles' features
    with torch.no_grad():
        x46 = images[:, :, 1::3, 1::3]
        assert torch.equal(F.interpolate(images, size=(46, 46), mode="bicubic", align_corners=False), x46)
        plain = ref.ASVRModel.vision_features(model, x46)
        feats = model.vision_features(images)
        assert torch.equal(feats[:, :, :48], plain), rel(feats[:, :, :48], plain)
        assert rel(feats[:, :, 48:96], feats[:, :, :48]) > 1e-2  # the scales differ

    params = set(model.trainable("it"))
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
    out = model(batch)
    out["loss"].backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if n in params}
    save("s2_init.safetensors", {"mm_projector.0.weight": w0, "images": images})
    save("forward.safetensors", {"vision_features": out["vision_features"].detach(),
                                 "image_embeds": out["image_embeds"].detach()})
    save("grads_it_default.safetensors", grads)
    manifest["losses_step0_it_default"] = gt.losses_of(out)
    manifest["scales"] = SCALES
    print("step 0 (it, default): text %.6f visual %.6f total %.6f" % (
        out["loss_text"].item(), out["loss_visual"].item(), out["loss"].item()))


def pillow_u8(path, policy, S):
    """The reference's 8-bit S x S image (HWC): convert RGB, expand2square with 127 or not, BICUBIC."""
    img = Image.open(path).convert("RGB")
    if policy == "pad":
        w, h = img.size
        if w != h:
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), (127, 127, 127))
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
    return np.asarray(img.resize((S, S), Image.BICUBIC), dtype=np.uint8)


def checksum(u8):
    """sum over bytes i of x[i] * (i * 2654435761 + 1), modulo 2^64, as 16 hex digits."""
    x = u8.reshape(-1).astype(np.uint64)
    w = np.arange(x.size, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(1)
    return "%016x" % int((x * w).sum(dtype=np.uint64))


def codes_part(manifest):
    tok = load_file(os.path.join(ROOT, "tests", "golden", "tokenize", "tiny_tokenizer.safetensors"))
    import convert_tokenizer as ct
    cfg = dict(ct.PRESETS["tiny"])
    config = SiglipVisionConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                                num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
                                image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                                layer_norm_eps=cfg["layer_norm_eps"], hidden_act="gelu_pytorch_tanh")
    model = SiglipVisionModel(config).eval()
    model.config._attn_implementation = "eager"
    sd = {k[len("vision_model."):]: v for k, v in tok.items() if k.startswith("vision_model.")}
    target = getattr(model, "vision_model", model)
    _, unexpected = target.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    books = [tok["quantizer.codebooks.%d.weight" % d] for d in range(cfg["depth"])]
    S, Si = cfg["image_size"], SCALES[-1]
    expected, margins = {}, []
    for policy in ("pad", "squash"):
        big = torch.stack([gtok.preprocess(os.path.join(gtok.IMAGES, k), policy, Si) for k in CODE_KEYS])
        x = F.interpolate(big, size=(S, S), mode="bilinear", align_corners=False, antialias=False)
        with torch.no_grad():
            hs = model(pixel_values=x, output_hidden_states=True).hidden_states[cfg["tap_layer"]]
        feats = hs.reshape(-1, cfg["hidden_size"])
        codes = gtok.rvq(feats, books).reshape(len(CODE_KEYS), -1)
        # the smallest gap between the chosen row and the runner-up over all positions and depths
        res = feats.clone()
        for cb in books:
            dist = (res.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1)[None] - 2 * res @ cb.t())
            two = dist.topk(2, dim=1, largest=False).values
            margins.append(float((two[:, 1] - two[:, 0]).min()))
            res = res - cb[dist.argmin(1)]
        expected[policy] = {k: codes[i].tolist() for i, k in enumerate(CODE_KEYS)}
        # the 384-pipeline codes (Pillow straight to 46) differ: the S2 targets need their own store
        direct = torch.stack([gtok.preprocess(os.path.join(gtok.IMAGES, k), policy, S) for k in CODE_KEYS])
        with torch.no_grad():
            hd = model(pixel_values=direct, output_hidden_states=True).hidden_states[cfg["tap_layer"]]
        cd = gtok.rvq(hd.reshape(-1, cfg["hidden_size"]), books).reshape(len(CODE_KEYS), -1)
        assert not torch.equal(cd, codes)
    # Pillow's 8-bit images at 1152 (every photo is smaller: an upsample), as a position-weighted checksum
    pillow = {}
    for policy in ("pad", "squash"):
        pillow[policy] = {k: checksum(pillow_u8(os.path.join(gtok.IMAGES, k), policy, 1152)) for k in CODE_KEYS}
    with open(os.path.join(OUT, "expected_codes.json"), "w") as f:
        json.dump({"input_size": Si, "downsample": "bilinear", "positions": (S // cfg["patch_size"]) ** 2,
                   "depth": cfg["depth"], "min_margin": min(margins), "codes": expected,
                   "pillow_1152_checksum": pillow}, f)
        f.write("\n")
    with open(os.path.join(OUT, "images.txt"), "w") as f:
        f.write("# keys relative to tests/golden/images\n")
        for k in CODE_KEYS:
            f.write(k + "\n")
    print("codes: %d images x 2 policies, smallest distance margin %.3g" % (len(CODE_KEYS), min(margins)))


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    manifest = {"generator": "tools/gen_s2_fixtures.py", "torch": torch.__version__.split("+")[0],
                "transformers": __import__("transformers").__version__, "seed": SEED,
                "model": "tests/golden/train/ (its manifest's config and model_init) with vision scales %s" % SCALES}
    train_part(manifest)
    codes_part(manifest)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
