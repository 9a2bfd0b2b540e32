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

Discrete input (`--input discrete`, Table 4): the same model reading, for each image, the sum over
depths of the rows of the tiny vision tokenizer's codebooks (tests/golden/tokenize/tiny_tokenizer.safetensors,
whose dimensions match the model's tower: 9 positions x 48, depth 3, 64 codes) picked by the image's
codes; the codes come from that tokenizer run independently here (HF SiglipVisionModel to its tap
layer, greedy residual VQ with squared L2 distances, first index on ties), on the same padded images.
The sum is accumulated in depth order from zero in float32; then mm_projector, splice, greedy as above.
Self-check: every VQ choice wins by a margin (second-best minus best distance) above 1e-3.

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

TOKENIZER = os.path.join(ROOT, "tests", "golden", "tokenize", "tiny_tokenizer.safetensors")
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


def load_tokenizer():
    """The tiny vision tokenizer file as an HF SiglipVisionModel (layers up to the tap) and its codebooks."""
    from safetensors import safe_open
    from transformers import SiglipVisionConfig, SiglipVisionModel
    with safe_open(TOKENIZER, "pt") as f:
        cfg = json.loads(f.metadata()["asvr_tokenizer"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    vc = SiglipVisionConfig(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                            num_hidden_layers=cfg["num_layers"], num_attention_heads=cfg["num_heads"],
                            image_size=cfg["image_size"], patch_size=cfg["patch_size"],
                            layer_norm_eps=cfg["layer_norm_eps"], hidden_act="gelu_pytorch_tanh")
    vc._attn_implementation = "eager"
    tower = SiglipVisionModel(vc).eval()
    pre = cfg["encoder_prefix"]
    sd = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
    target = getattr(tower, "vision_model", tower)
    missing, unexpected = target.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith("encoder.layers.") and int(k.split(".")[2]) >= cfg["tap_layer"] or
               k.startswith(("post_layernorm", "head.")) for k in missing), missing
    books = torch.stack([tensors["%s%d.weight" % (cfg["codebook_prefix"], d)] for d in range(cfg["depth"])])
    return cfg, tower, books


def tokenize(cfg, tower, books, px):
    """px [3, S, S] -> codes [P, D] (greedy residual VQ on the tap output) and the smallest VQ margin."""
    x = tower(pixel_values=px[None], output_hidden_states=True).hidden_states[cfg["tap_layer"]][0]
    residual, codes, margin = x.clone(), [], float("inf")
    for cb in books:
        dist = ((residual[:, None, :].double() - cb[None].double()) ** 2).sum(-1)  # [P, K]
        two = torch.topk(dist, 2, largest=False).values
        margin = min(margin, float((two[:, 1] - two[:, 0]).min()))
        idx = dist.argmin(dim=1)
        codes.append(idx)
        residual = residual - cb[idx]
    return torch.stack(codes, 1), margin


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
        # discrete input: the image prompts again, the projector reading summed codebook rows
        tcfg, tower, books = load_tokenizer()
        assert (tcfg["image_size"] // tcfg["patch_size"]) ** 2 == P and tcfg["hidden_size"] == v["hidden_size"]
        discrete = []
        for name, ids, image in PROMPTS:
            if not image:
                continue
            px = preprocess(os.path.join(IMAGES, image), tcfg["image_size"], tcfg["image_mean"][0], tcfg["image_std"][0],
                            tuple(tcfg["pad_color"]))
            codes, vq_margin = tokenize(tcfg, tower, books, px)
            if vq_margin < 1e-3:
                print("self-check failed: near tie in the VQ of", image, vq_margin)
                ok = False
            feats = torch.zeros(P, books.shape[2])
            for d in range(books.shape[0]):
                feats = feats + books[d][codes[:, d]]
            img_emb = model.mm_projector(feats)
            toks, logits, margins = greedy(model, ids, img_emb)
            if min(margins) < 1e-3:
                print("self-check failed: near tie in discrete", name, min(margins))
                ok = False
            rec = {"name": name, "ids": ids, "image": image, "codes": [int(c) for c in codes.reshape(-1)],
                   "min_vq_margin": vq_margin, "greedy": toks, "min_top2_margin": min(margins)}
            if not discrete:  # the first prompt's logits of every step
                rec["step_logits"] = [[float(f) for f in row] for row in logits]
            discrete.append(rec)
            print("discrete", name, "codes", rec["codes"][:6], "... greedy", toks, "min margin %.4f" % min(margins))
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
           "prompts": results,
           "discrete": {"tokenizer": "tests/golden/tokenize/tiny_tokenizer.safetensors",
                        "input": "sum over depths of the tokenizer's codebook rows of the image's codes [positions, depth], "
                                 "then mm_projector; the images padded with the tokenizer's pad_color",
                        "prompts": discrete}}
    path = os.path.join(OUT, "generate.json")
    text = json.dumps(doc, indent=1)  # number lists on one line each
    text = re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda mm: "[" + ", ".join(x.strip() for x in mm.group(1).split(",")) + "]", text)
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)
    print("wrote", path)


if __name__ == "__main__":
    main()
