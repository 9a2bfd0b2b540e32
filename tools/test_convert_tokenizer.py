#!/usr/bin/env python3
"""tools/convert_tokenizer.py hf on HF SigLIP checkpoints that are not the presets, end to end:
a small SiglipVisionModel with other shapes, LayerNorm eps 1e-5, exact GELU and CLIP's mean/std is
saved with save_pretrained (and a copy with transformers 5's key names, no vision_model. prefix, and a
SiglipConfig-style config.json that leaves default values out), converted with random codebooks, and
`asvr-tokenize encode` must give, for real images with both policies, the codes PyTorch computes
through the reference pipeline (Pillow expand2square with int(mean x 255) or squash, bicubic resize,
the checkpoint's normalisation, HF SigLIP hidden_states[tap], greedy RVQ). Also reports how many codes
the file would get right with the old fixed mean/std 0.5 and pad 127 (informational).

    pip install torch transformers sentencepiece safetensors numpy pillow
    python3 tools/test_convert_tokenizer.py [--bin build/bin]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IMAGES = os.path.join(ROOT, "tests", "golden", "images")
KEYS = ["photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.png", "jgray.jpg", "ptall.png", "pwide.png", "jprog.jpg"]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def reference_codes(model, books, path, policy, S, mean, std, tap):
    img = Image.open(path).convert("RGB")
    if policy == "pad":
        w, h = img.size
        if w != h:
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
    img = img.resize((S, S), Image.BICUBIC)
    x = (np.asarray(img, dtype=np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    with torch.no_grad():
        f = model(torch.from_numpy(x.transpose(2, 0, 1).copy())[None], output_hidden_states=True).hidden_states[tap][0]
    residual, codes = f.clone(), []
    for cb in books:
        d = torch.addmm(residual.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1)[None, :], residual, cb.t(), alpha=-2.0)
        i = d.argmin(1)
        codes.append(i)
        residual = residual - cb[i]
    return torch.stack(codes, 1).reshape(-1).tolist()


def encode(bin_dir, tok, policy, tmp, tag):
    lst = os.path.join(tmp, "images.txt")
    open(lst, "w").write("\n".join(KEYS) + "\n")
    store = os.path.join(tmp, "%s-%s.lmdb" % (tag, policy))
    subprocess.run([os.path.join(bin_dir, "asvr-tokenize"), "encode", "--list", lst, "--image-root", IMAGES,
                    "--tokenizer", tok, "--policy", policy, "--out", store, "--log-level", "warn"], check=True)
    out = subprocess.run([os.path.join(bin_dir, "asvr-tokenize"), "dump", store], check=True, capture_output=True,
                         text=True).stdout
    return {r["key"]: [c for row in r["codes"] for c in (row if isinstance(row, list) else [row])]
            for r in map(json.loads, out.splitlines())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    args = ap.parse_args()
    torch.manual_seed(0)
    S, tap, D, K = 42, 2, 3, 32
    vcfg = SiglipVisionConfig(hidden_size=40, intermediate_size=72, num_hidden_layers=3, num_attention_heads=4,
                              image_size=S, patch_size=14, layer_norm_eps=1e-5, hidden_act="gelu")
    model = SiglipVisionModel(vcfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    books = [torch.randn(K + 1, 40) * 0.5 for _ in range(D)]
    for b in books:
        b[-1] = 0  # nn.Embedding(padding_idx) row, dropped by the converter
    ok = True
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        hf4 = os.path.join(tmp, "hf4")
        model.save_pretrained(hf4)
        SiglipImageProcessor(image_mean=CLIP_MEAN, image_std=CLIP_STD, size={"height": S, "width": S}).save_pretrained(hf4)
        # transformers 5 layout: keys without "vision_model.", a SiglipConfig that leaves defaults out
        hf5 = os.path.join(tmp, "hf5")
        os.makedirs(hf5)
        sd = load_file(os.path.join(hf4, "model.safetensors"))
        save_file({k[len("vision_model."):]: v.contiguous() for k, v in sd.items()}, os.path.join(hf5, "model.safetensors"))
        json.dump({"model_type": "siglip", "vision_config": {"hidden_size": 40, "intermediate_size": 72,
                   "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": S, "patch_size": 14,
                   "layer_norm_eps": 1e-5, "hidden_act": "gelu"}}, open(os.path.join(hf5, "config.json"), "w"))
        subprocess.run(["cp", os.path.join(hf4, "preprocessor_config.json"), hf5], check=True)
        cb_path = os.path.join(tmp, "codebooks.safetensors")
        save_file({"quantizer_semantic.codebooks.%d.weight" % d: b for d, b in enumerate(books)}, cb_path)
        books = [b[:K] for b in books]
        for tag, src in (("transformers4", hf4), ("transformers5", hf5)):
            tok = os.path.join(tmp, tag + ".safetensors")
            subprocess.run([sys.executable, os.path.join(HERE, "convert_tokenizer.py"), "hf", src, "--codebooks", cb_path,
                            "--tap-layer", str(tap), "--out", tok], check=True, stdout=subprocess.DEVNULL)
            from safetensors import safe_open
            with safe_open(tok, "np") as f:
                meta = json.loads(f.metadata()["asvr_tokenizer"])
            want = dict(hidden_size=40, intermediate_size=72, num_layers=3, num_heads=4, image_size=S, patch_size=14,
                        layer_norm_eps=1e-5, hidden_act="gelu", depth=D, codebook_size=K, tap_layer=tap,
                        pad_color=[122, 116, 104])
            bad = {k: meta.get(k) for k, v in want.items() if meta.get(k) != v}
            bad.update({k: meta[k] for k, v in (("image_mean", CLIP_MEAN), ("image_std", CLIP_STD))
                        if not np.allclose(meta[k], v, rtol=0, atol=1e-12)})
            for policy in ("pad", "squash"):
                got = encode(args.bin, tok, policy, tmp, tag)
                same = total = 0
                for key in KEYS:
                    ref = reference_codes(model, books, os.path.join(IMAGES, key), policy, S, CLIP_MEAN, CLIP_STD, tap)
                    total += len(ref)
                    same += sum(a == b for a, b in zip(ref, got[key]))
                rec = {"case": "%s %s" % (tag, policy), "config_problems": bad, "codes_equal": same, "codes": total}
                ok = ok and not bad and same == total
                results.append(rec)
        # what the old converter's fixed normalisation (mean/std 0.5, pad 127) would give
        old = os.path.join(tmp, "old.safetensors")
        with safe_open(os.path.join(tmp, "transformers4.safetensors"), "pt") as f:
            meta = json.loads(f.metadata()["asvr_tokenizer"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta.update(image_mean=[0.5] * 3, image_std=[0.5] * 3, pad_color=[127] * 3)
        save_file(tensors, old, metadata={"asvr_tokenizer": json.dumps(meta, sort_keys=True)})
        got = encode(args.bin, old, "pad", tmp, "old")
        same = total = 0
        for key in KEYS:
            ref = reference_codes(model, books, os.path.join(IMAGES, key), "pad", S, CLIP_MEAN, CLIP_STD, tap)
            total += len(ref)
            same += sum(a == b for a, b in zip(ref, got[key]))
        results.append({"case": "fixed mean/std 0.5 and pad 127 (the old converter), pad", "codes_equal": same,
                        "codes": total, "informational": True})
    for r in results:
        print(json.dumps(r))
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
