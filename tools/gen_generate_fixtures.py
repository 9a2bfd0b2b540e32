#!/usr/bin/env python3
"""Golden fixtures for greedy generation: the tiny ASVR model of tests/golden/train/ (weights
model_init.safetensors, config in its manifest.json, PyTorch model tools/asvr_reference.py) continues
three prompts greedily, and reports the last prompt token's attention over the image positions.

Prompts are token ids of the tiny vocabulary (300; BOS 1, EOS 2) with one image placeholder
(-200, expanded to the 9 image positions) or none. Images come from tests/golden/images/, preprocessed
as LLaVA's eval does (expand2square with (127,127,127), PIL bicubic resize to 46, rescale 1/255 in
float64 cast to float32, normalise (x - 0.5) / 0.5 in float32).

Greedy decoding is a plain argmax loop (documented choice, equivalent to HF generate with
do_sample=False, num_beams=1): at each step the whole sequence of inputs_embeds (token embeddings,
the projected image features spliced at the placeholder) runs through LlamaForCausalLM without a
cache, the next id = torch.argmax of the last position's logits (first index on ties), stop at EOS
(kept) or after N = 12 new tokens. The attention maps use eager attention with output_attentions=True
on the prompt alone: attentions[l][0, :, -1, image positions].mean(over heads), per layer.

Writes tests/golden/generate/generate.json:
    python3 tools/gen_generate_fixtures.py            # self-checks, then writes
    python3 tools/gen_generate_fixtures.py --check    # self-checks only
Needs: torch, transformers (made with 5.24.0), safetensors, numpy, Pillow. Deterministic.
"""
import argparse
import json
import os
import re
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asvr_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tests", "golden", "train")
IMAGES = os.path.join(ROOT, "tests", "golden", "images")
OUT = os.path.join(ROOT, "tests", "golden", "generate")
N_NEW = 12
EOS = 2

PROMPTS = [  # name, ids, image (None: text only)
    ("image_middle", [1, 45, 67, 89, 12, ref.IMAGE_TOKEN, 33, 101, 250, 8], "photo1.jpg"),
    ("image_first", [1, ref.IMAGE_TOKEN, 150, 77, 190, 5], "photo3.png"),
    ("text_only", [1, 200, 201, 202, 17, 99], None),
]


def load_model():
    manifest = json.load(open(os.path.join(TRAIN, "manifest.json")))
    cfg = dict(manifest["config"], visual_loss="default")
    model = ref.ASVRModel(cfg)
    state = load_file(os.path.join(TRAIN, "model_init.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # the tower's layers at and after the tap, its post-LN and head are not stored (never used)
    tap = cfg["vision"]["tap_layer"]
    for k in missing:
        assert k.startswith("vision_tower.") and ("post_layernorm" in k or "head" in k or
                                                   int(k.split(".")[3]) >= tap), k
    assert not unexpected, unexpected
    model.eval()
    return model, cfg


def preprocess(path, size, mean, std, bg=(127, 127, 127)):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w != h:  # LLaVA expand2square
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), bg)
        canvas.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
        img = canvas
    img = img.resize((size, size), Image.BICUBIC, reducing_gap=None)
    x = (np.asarray(img, dtype=np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def embeds(model, ids, image_embeds):
    """inputs_embeds [1, T, d]: token embeddings with the image rows at the placeholder."""
    parts = []
    for i in ids:
        if i == ref.IMAGE_TOKEN:
            parts.append(image_embeds)
        else:
            parts.append(model.llm.model.embed_tokens(torch.tensor([i])))
    return torch.cat(parts, 0)[None]


def greedy(model, ids, image_embeds):
    seq, out, logits_seen, margins = list(ids), [], [], []
    for _ in range(N_NEW):
        x = embeds(model, seq, image_embeds)
        logits = model.llm(inputs_embeds=x, use_cache=False).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        margins.append(float(top2[0] - top2[1]))
        nxt = int(torch.argmax(logits))
        logits_seen.append(logits)
        out.append(nxt)
        seq.append(nxt)
        if nxt == EOS:
            break
    return out, torch.stack(logits_seen), margins


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model, cfg = load_model()
    v = cfg["vision"]
    P = cfg["image_positions"]
    results = []
    ok = True
    with torch.no_grad():
        for name, ids, image in PROMPTS:
            img_emb = None
            if image:
                px = preprocess(os.path.join(IMAGES, image), v["image_size"], v["image_mean"][0], v["image_std"][0])
                img_emb = model.mm_projector(model.vision_features(px[None]))[0]  # [P, d]
            toks, logits, margins = greedy(model, ids, img_emb)
            # self-check: the cached HF path (generate-style incremental decoding) gives the same tokens
            x = embeds(model, ids, img_emb)
            o = model.llm(inputs_embeds=x, use_cache=True)
            past, cached = o.past_key_values, [int(torch.argmax(o.logits[0, -1]))]
            while len(cached) < len(toks) and cached[-1] != EOS:
                e = model.llm.model.embed_tokens(torch.tensor([[cached[-1]]]))
                o = model.llm(inputs_embeds=e, past_key_values=past, use_cache=True)
                past = o.past_key_values
                cached.append(int(torch.argmax(o.logits[0, -1])))
            if cached != toks:
                print("self-check failed: cached decoding differs for", name, cached, toks)
                ok = False
            if min(margins) < 1e-3:
                print("self-check failed: near tie in", name, min(margins))
                ok = False
            rec = {"name": name, "ids": ids, "image": image, "expanded_length": len(ids) - (image is not None) + P * (image is not None),
                   "greedy": toks, "min_top2_margin": min(margins)}
            if image:
                at = model.llm(inputs_embeds=x, use_cache=False, output_attentions=True).attentions
                s = ids.index(ref.IMAGE_TOKEN)
                rec["image_start"] = s
                rec["attention_last_token"] = [[float(f) for f in layer[0, :, -1, s:s + P].mean(0)] for layer in at]
                rows = [float(layer[0, :, -1].sum(-1).mean()) for layer in at]
                assert all(abs(r - 1) < 1e-5 for r in rows), rows
            if name == "image_middle":
                rec["step_logits"] = [[float(f) for f in row] for row in logits]
            results.append(rec)
            print(name, "greedy", toks, "min margin %.4f" % min(margins))
    if not ok:
        sys.exit("gen_generate_fixtures: a self-check failed")
    if a.check:
        return
    os.makedirs(OUT, exist_ok=True)
    doc = {"format": "asvr-generate-golden", "version": 1, "generator": "tools/gen_generate_fixtures.py",
           "torch": torch.__version__.split("+")[0], "transformers": __import__("transformers").__version__,
           "model": "tests/golden/train/model_init.safetensors (config: tests/golden/train/manifest.json)",
           "max_new_tokens": N_NEW, "eos_id": EOS, "image_token": ref.IMAGE_TOKEN, "image_positions": P,
           "preprocess": {"policy": "pad", "pad": [127, 127, 127], "size": v["image_size"]},
           "decoding": "plain argmax loop, full forward without cache each step, stop at EOS (kept)",
           "prompts": results}
    path = os.path.join(OUT, "generate.json")
    text = json.dumps(doc, indent=1)  # number lists on one line each
    text = re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda mm: "[" + ", ".join(x.strip() for x in mm.group(1).split(",")) + "]", text)
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)
    print("wrote", path)


if __name__ == "__main__":
    main()
