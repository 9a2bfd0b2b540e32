#!/usr/bin/env python3
"""Writes an asvr vision-tokenizer file (one safetensors file: the SigLIP-shaped encoder up to the
tap layer, the D codebooks, and the config JSON in __metadata__["asvr_tokenizer"]; see
common/model/vision_tokenizer.h) from:

  dualtoken CKPT.pt            a DualToken / ASVR tokenizer checkpoint, torch.load(p)["state_dict"]
                               (keys siglip_model.vision_model.*, quantizer_semantic.codebooks.{d}.weight;
                               with --kind appearance: prequant_visual.* and quantizer.codebooks.{d}.weight)
  hf SIGLIP --codebooks FILE   an HF SigLIP checkpoint (model.safetensors, a folder, or a sharded
                               index) plus codebooks (safetensors/.pt with {prefix}{d}.weight or
                               codebooks.{d}.weight, [K or K+1, C]). Every shape, the LayerNorm eps
                               and the activation come from the checkpoint's config.json (a SiglipConfig's
                               vision_config or a SiglipVisionConfig, transformers' defaults for keys it
                               leaves out), the mean/std from its preprocessor_config.json (the pad colour
                               is int(mean x 255), as LLaVA's expand2square), D and K from the codebooks.
                               Keys as transformers 4 saves them (vision_model.*, or model.vision_model.*)
                               or as transformers 5 saves a SiglipVisionModel (embeddings.*, encoder.*).
                               --config / --preprocessor-config name the JSON files when they are not
                               beside the weights; --tap-layer defaults to the last layer but one (LLaVA's
                               hidden_states[-2]).
  random --preset P --seed N   seeded random weights at a preset shape (so400m, tiny), for tests
                               and benchmarks

--kind semantic (default) taps the encoder (layer 26 for so400m) and quantises the raw features.
--kind appearance is DualToken's pixel tokenizer: tap layer 6, then the ResNet projection block
prequant_visual (GroupNorm(32, eps 1e-6) -> SiLU -> Conv1x1 -> GroupNorm -> SiLU -> Conv3x3, plus a 1x1
nin_shortcut when hidden_size != embed_dim, added to the output), then its own RVQ "quantizer" on
embed_dim-wide codes. embed_dim is read from the checkpoint's prequant_visual.conv1.weight unless
--embed-dim is given. The block is stored under "prequant_visual.", the codebooks under
"quantizer.codebooks." for both kinds.

Every expected tensor must be present with its exact shape; a missing or mis-shaped key is an error
naming it (the reference loads with strict=False and would silently ignore it).

    python3 tools/convert_tokenizer.py dualtoken epoch_6.pt --out dualtoken-semantic.safetensors
    python3 tools/convert_tokenizer.py dualtoken epoch_6.pt --kind appearance --out dualtoken-appearance.safetensors
    python3 tools/convert_tokenizer.py random --preset so400m --seed 0 --out random-so400m.safetensors

Needs: torch, safetensors, numpy.
"""
import argparse
import glob
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

PRESETS = {
    # google/siglip-so400m-patch14-384 as DualToken/ASVR use it: tap 26 of 27, RVQ 8 x 16384.
    "so400m": dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_layers=27,
                   num_heads=16, layer_norm_eps=1e-6, tap_layer=26, depth=8, codebook_size=16384),
    "tiny": dict(image_size=46, patch_size=14, hidden_size=48, intermediate_size=96, num_layers=4,
                 num_heads=4, layer_norm_eps=1e-6, tap_layer=3, depth=3, codebook_size=64),
    # the embedded demo's encoder: 56 px, 4 x 4 patches, tapped after its first layer so that a random
    # encoder still passes colour and layout through (used with --position-std 0.05)
    "demo": dict(image_size=56, patch_size=14, hidden_size=48, intermediate_size=96, num_layers=2,
                 num_heads=4, layer_norm_eps=1e-6, tap_layer=1, depth=4, codebook_size=64),
}
# The appearance kind: the same encoder tapped shallow, a projection block, its own RVQ. The tiny one
# is 64 wide (GroupNorm(32) needs widths divisible by 32) on a 7 x 7 grid, projecting to 32.
PRESETS_APPEARANCE = {
    "so400m": dict(image_size=384, patch_size=14, hidden_size=1152, intermediate_size=4304, num_layers=27,
                   num_heads=16, layer_norm_eps=1e-6, tap_layer=6, embed_dim=1152, depth=8, codebook_size=16384),
    "tiny": dict(image_size=56, patch_size=8, hidden_size=64, intermediate_size=128, num_layers=4,
                 num_heads=4, layer_norm_eps=1e-6, tap_layer=2, embed_dim=32, depth=3, codebook_size=64),
}
PREQUANT = "prequant_visual."
NORM_GROUPS, NORM_EPS = 32, 1e-6
LAYER_TENSORS = [("layer_norm1.weight", "C"), ("layer_norm1.bias", "C"), ("layer_norm2.weight", "C"),
                 ("layer_norm2.bias", "C"), ("self_attn.q_proj.weight", "CC"), ("self_attn.q_proj.bias", "C"),
                 ("self_attn.k_proj.weight", "CC"), ("self_attn.k_proj.bias", "C"),
                 ("self_attn.v_proj.weight", "CC"), ("self_attn.v_proj.bias", "C"),
                 ("self_attn.out_proj.weight", "CC"), ("self_attn.out_proj.bias", "C"),
                 ("mlp.fc1.weight", "IC"), ("mlp.fc1.bias", "I"), ("mlp.fc2.weight", "CI"), ("mlp.fc2.bias", "C")]


def expected_shapes(cfg):
    C, I, p = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"]
    N = (cfg["image_size"] // p) ** 2
    dims = {"C": C, "I": I}
    out = {"vision_model.embeddings.patch_embedding.weight": (C, 3, p, p),
           "vision_model.embeddings.patch_embedding.bias": (C,),
           "vision_model.embeddings.position_embedding.weight": (N, C)}
    for i in range(cfg["tap_layer"]):
        for name, spec in LAYER_TENSORS:
            out["vision_model.encoder.layers.%d.%s" % (i, name)] = tuple(dims[ch] for ch in spec)
    if cfg.get("kind", "semantic") == "appearance":
        out.update({PREQUANT + k: v for k, v in prequant_shapes(C, cfg["embed_dim"]).items()})
    return out


def prequant_shapes(cin, cout):
    """ProjectResnetBlock(cin -> cout) tensors: the 1x1 nin_shortcut exists only when cin != cout."""
    out = {"norm1.weight": (cin,), "norm1.bias": (cin,), "conv1.weight": (cout, cin, 1, 1), "conv1.bias": (cout,),
           "norm2.weight": (cout,), "norm2.bias": (cout,), "conv2.weight": (cout, cout, 3, 3), "conv2.bias": (cout,)}
    if cin != cout:
        out.update({"nin_shortcut.weight": (cout, cin, 1, 1), "nin_shortcut.bias": (cout,)})
    return out


def config_json(cfg, kind="semantic"):
    mean = cfg.get("image_mean", [0.5, 0.5, 0.5])
    c = dict(format="asvr-vision-tokenizer", version=1, kind=kind, hidden_act=cfg.get("hidden_act", "gelu_pytorch_tanh"),
             encoder_prefix="vision_model.", codebook_prefix="quantizer.codebooks.",
             image_mean=mean, image_std=cfg.get("image_std", [0.5, 0.5, 0.5]),
             pad_color=[int(m * 255) for m in mean])  # LLaVA's expand2square background
    c.update({k: cfg[k] for k in ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_layers",
                                  "num_heads", "layer_norm_eps", "tap_layer", "depth", "codebook_size")})
    if kind == "appearance":
        c.update(embed_dim=cfg["embed_dim"], prequant_prefix=PREQUANT, norm_groups=NORM_GROUPS, norm_eps=NORM_EPS)
    return json.dumps(c, sort_keys=True)


def assemble(cfg, encoder, codebooks, dtype):
    """encoder: {hf name: tensor}; codebooks: list of D tensors [K or K+1, C]. Checks and returns the
    tensors to write."""
    want = expected_shapes(cfg)
    problems = []
    out = {}
    for name, shape in want.items():
        t = encoder.get(name)
        if t is None:
            problems.append("missing tensor %s (expected shape %s)" % (name, list(shape)))
        elif tuple(t.shape) != shape:
            problems.append("tensor %s has shape %s, expected %s" % (name, list(t.shape), list(shape)))
        else:
            out[name] = t.to(dtype).contiguous()
    K = cfg["codebook_size"]
    C = cfg["embed_dim"] if cfg.get("kind", "semantic") == "appearance" else cfg["hidden_size"]
    if len(codebooks) != cfg["depth"]:
        problems.append("%d codebooks, the config says depth %d" % (len(codebooks), cfg["depth"]))
    for d, cb in enumerate(codebooks):
        if cb is None:
            problems.append("missing codebook %d" % d)
            continue
        if cb.ndim != 2 or cb.shape[1] != C or cb.shape[0] not in (K, K + 1):
            problems.append("codebook %d has shape %s, expected [%d or %d, %d]" % (d, list(cb.shape), K, K + 1, C))
            continue
        out["quantizer.codebooks.%d.weight" % d] = cb[:K].to(dtype).contiguous()  # drop the padding row
    if problems:
        sys.exit("convert_tokenizer: the source does not fit the configuration:\n  " + "\n  ".join(problems))
    return out


def strip_prefixes(sd, prefixes):
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def from_dualtoken(path, cfg):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    sd = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
    sd = strip_prefixes(sd, ["module.", "rqvaesiglip.", "vision_tower."])
    enc = {k[len("siglip_model."):]: v for k, v in sd.items() if k.startswith("siglip_model.vision_model.")}
    if cfg["kind"] != "appearance":
        books = [sd.get("quantizer_semantic.codebooks.%d.weight" % d) for d in range(cfg["depth"])]
        return enc, books
    # The pixel branch: prequant_visual = ProjectResnetBlock(hidden_size -> embed_dim), then "quantizer".
    if PREQUANT + "conv_shortcut.weight" in sd:
        sys.exit("convert_tokenizer: %s has a 3x3 conv_shortcut; only the 1x1 nin_shortcut is supported" % path)
    conv1 = sd.get(PREQUANT + "conv1.weight")
    if cfg.get("embed_dim") is None:
        if conv1 is None:
            sys.exit("convert_tokenizer: %s has no %sconv1.weight (is it a DualToken checkpoint with the pixel "
                     "branch?); --embed-dim cannot replace the missing block" % (path, PREQUANT))
        cfg["embed_dim"] = int(conv1.shape[0])
    for k, v in sd.items():
        if k.startswith(PREQUANT):
            enc[k] = v
    books = [sd.get("quantizer.codebooks.%d.weight" % d) for d in range(cfg["depth"])]
    return enc, books


def load_any(path):
    if path.endswith(".json"):  # sharded index
        idx = json.load(open(path))
        out = {}
        for f in sorted(set(idx["weight_map"].values())):
            out.update(load_file(os.path.join(os.path.dirname(path), f)))
        return out
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            sys.exit("convert_tokenizer: no *.safetensors in %s" % path)
        out = {}
        for f in files:
            out.update(load_file(f))
        return out
    if path.endswith(".safetensors"):
        return load_file(path)
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return ck.get("state_dict", ck)


# transformers' SiglipVisionConfig defaults, for the keys a saved config.json leaves out (a SiglipConfig
# saves only the vision_config values that differ from them).
SIGLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                              layer_norm_eps=1e-6)
# Activations the C encoder computes; gelu_new is the same tanh formula as gelu_pytorch_tanh.
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_pytorch_tanh", "gelu_new": "gelu_pytorch_tanh", "gelu": "gelu"}


def beside(path, name):
    d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return os.path.join(d, name)


def hf_config(path, config_path, pre_path, cfg):
    """Shapes, eps, activation from config.json; mean/std from preprocessor_config.json."""
    config_path = config_path or beside(path, "config.json")
    pre_path = pre_path or beside(path, "preprocessor_config.json")
    for p, what in ((config_path, "--config"), (pre_path, "--preprocessor-config")):
        if not os.path.exists(p):
            sys.exit("convert_tokenizer: %s is missing (pass %s FILE)" % (p, what))
    raw = json.load(open(config_path))
    vc = raw.get("vision_config", raw) if raw.get("model_type") != "siglip_vision_model" else raw
    if raw.get("model_type") not in (None, "siglip", "siglip_vision_model"):
        sys.exit("convert_tokenizer: %s: model_type %r is not a SigLIP (siglip or siglip_vision_model)" %
                 (config_path, raw.get("model_type")))
    v = dict(SIGLIP_VISION_DEFAULTS)
    v.update({k: vc[k] for k in SIGLIP_VISION_DEFAULTS if k in vc})
    if v["num_channels"] != 3:
        sys.exit("convert_tokenizer: %s: num_channels %d; RGB towers only" % (config_path, v["num_channels"]))
    act = ACTIVATIONS.get(v["hidden_act"])
    if act is None:
        sys.exit("convert_tokenizer: %s: hidden_act %r is not supported (%s)" %
                 (config_path, v["hidden_act"], ", ".join(sorted(ACTIVATIONS))))
    pre = json.load(open(pre_path))
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3):
        sys.exit("convert_tokenizer: %s needs image_mean and image_std, 3 values each" % pre_path)
    size = pre.get("size", {})
    side = size.get("height", size.get("shortest_edge")) if isinstance(size, dict) else size
    if side is not None and side != v["image_size"]:
        sys.exit("convert_tokenizer: %s resizes to %s but %s says image_size %d" % (pre_path, side, config_path,
                                                                                     v["image_size"]))
    if pre.get("do_normalize") is False or pre.get("do_rescale") is False:
        sys.exit("convert_tokenizer: %s turns off rescaling or normalisation; the tokenizer always applies both" % pre_path)
    if "rescale_factor" in pre and abs(pre["rescale_factor"] - 1 / 255) > 1e-12:
        sys.exit("convert_tokenizer: %s: rescale_factor %r, not 1/255" % (pre_path, pre["rescale_factor"]))
    cfg.update(image_size=v["image_size"], patch_size=v["patch_size"], hidden_size=v["hidden_size"],
               intermediate_size=v["intermediate_size"], num_layers=v["num_hidden_layers"],
               num_heads=v["num_attention_heads"], layer_norm_eps=v["layer_norm_eps"], hidden_act=act,
               image_mean=[float(x) for x in mean], image_std=[float(x) for x in std])
    if cfg.get("tap_layer") is None:
        cfg["tap_layer"] = v["num_hidden_layers"] - 1  # LLaVA's hidden_states[-2]
    if not 1 <= cfg["tap_layer"] <= v["num_hidden_layers"]:
        sys.exit("convert_tokenizer: --tap-layer %d outside 1..%d" % (cfg["tap_layer"], v["num_hidden_layers"]))


def tower_keys(sd, path):
    """The tower's tensors under vision_model.*, whichever way the checkpoint names them."""
    enc = {k: v for k, v in sd.items() if k.startswith("vision_model.")}
    if not enc:  # a checkpoint that nests the tower one level deeper
        enc = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.vision_model.")}
    if not enc:  # transformers 5's save_pretrained of a SiglipVisionModel: no vision_model. prefix
        enc = {"vision_model." + k: v for k, v in sd.items() if k.startswith(("embeddings.", "encoder.", "post_layernorm.",
                                                                              "head."))}
    if not enc:
        sys.exit("convert_tokenizer: %s has no SigLIP tower tensors (vision_model.*, model.vision_model.*, or "
                 "embeddings.* / encoder.*)" % path)
    return enc


def from_hf(path, codebooks, cfg, config_path=None, pre_path=None):
    hf_config(path, config_path, pre_path, cfg)
    enc = tower_keys(load_any(path), path)
    cb = load_any(codebooks)
    books = []
    for d in range(1 << 16):
        t = None
        for pat in ("quantizer_semantic.codebooks.%d.weight", "quantizer.codebooks.%d.weight", "codebooks.%d.weight"):
            if pat % d in cb:
                t = cb[pat % d]
                break
        if t is None:
            break
        books.append(t)
    if not books:
        sys.exit("convert_tokenizer: %s has no codebooks ({quantizer_semantic.,quantizer.,}codebooks.{d}.weight)" % codebooks)
    if cfg.get("depth") is None:
        cfg["depth"] = len(books)
    books = books[:cfg["depth"]] + [None] * (cfg["depth"] - len(books))
    if cfg.get("codebook_size") is None:
        rows = books[0].shape[0]
        # nn.Embedding(K + 1, padding_idx=K) keeps an all-zero last row: not a code
        cfg["codebook_size"] = rows - 1 if bool((books[0][-1] == 0).all()) else rows
    return enc, books


def random_weights(cfg, seed, position_std=0.5):
    g = torch.Generator().manual_seed(seed)
    enc = {}
    for name, shape in expected_shapes(cfg).items():
        if name.startswith(PREQUANT):
            if ".norm" in name and name.endswith("weight"):
                t = 1.0 + 0.1 * torch.randn(shape, generator=g)
            elif len(shape) == 1:
                t = 0.1 * torch.randn(shape, generator=g)
            else:
                t = torch.randn(shape, generator=g) / (shape[1] * shape[2] * shape[3]) ** 0.5
        elif "layer_norm" in name and name.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif "position_embedding" in name:
            t = position_std * torch.randn(shape, generator=g)
        else:
            fan_in = shape[-1] if len(shape) == 2 else (shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1)
            t = torch.randn(shape, generator=g) / (fan_in ** 0.5 if len(shape) > 1 else 10.0)
        enc[name] = t
    C = cfg["embed_dim"] if cfg.get("kind", "semantic") == "appearance" else cfg["hidden_size"]
    books = [torch.randn((cfg["codebook_size"] + 1, C), generator=g) for _ in range(cfg["depth"])]
    for b in books:
        b[-1] = 0  # the padding row, as nn.Embedding(padding_idx) has it
    return enc, books


def write(out_path, cfg, enc, books, dtype):
    tensors = assemble(cfg, enc, books, dtype)
    meta = {"asvr_tokenizer": config_json(cfg, cfg.get("kind", "semantic"))}
    tmp = out_path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, out_path)
    return tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", choices=["dualtoken", "hf", "random"])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--codebooks")
    ap.add_argument("--config", help="hf: the checkpoint's config.json (default: beside it)")
    ap.add_argument("--preprocessor-config", help="hf: its preprocessor_config.json (default: beside it)")
    ap.add_argument("--kind", default="semantic", choices=["semantic", "appearance"])
    ap.add_argument("--preset", default="so400m", choices=sorted(PRESETS))
    ap.add_argument("--embed-dim", type=int, help="appearance: the projection width (default: from the checkpoint)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--position-std", type=float, default=0.5, help="random: std of the position embeddings")
    ap.add_argument("--tap-layer", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--codebook-size", type=int)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = dict((PRESETS_APPEARANCE if a.kind == "appearance" else PRESETS)[a.preset])
    cfg["kind"] = a.kind
    if a.source == "hf":  # everything from the checkpoint's own files, not a preset
        cfg = dict(kind=a.kind, tap_layer=None, depth=None, codebook_size=None)
    if a.kind == "appearance" and a.source == "dualtoken":
        cfg["embed_dim"] = None  # read from the checkpoint unless given
    elif a.kind != "appearance" and a.embed_dim is not None:
        sys.exit("convert_tokenizer: --embed-dim is for --kind appearance (the semantic codes are hidden_size wide)")
    for k in ("tap_layer", "depth", "codebook_size", "embed_dim"):
        if getattr(a, k) is not None:
            cfg[k] = getattr(a, k)
    dtype = getattr(torch, a.dtype)
    if a.source == "dualtoken":
        enc, books = from_dualtoken(a.path, cfg)
    elif a.source == "hf":
        if a.kind == "appearance":
            sys.exit("convert_tokenizer: an HF SigLIP checkpoint has no projection block; the appearance kind "
                     "needs a DualToken checkpoint (dualtoken CKPT.pt --kind appearance)")
        if not a.codebooks:
            sys.exit("convert_tokenizer: hf needs --codebooks FILE")
        enc, books = from_hf(a.path, a.codebooks, cfg, a.config, a.preprocessor_config)
    else:
        enc, books = random_weights(cfg, a.seed, a.position_std)
    tensors = write(a.out, cfg, enc, books, dtype)
    print("wrote %s: %d tensors, %.1f MB" % (a.out, len(tensors), sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6))


if __name__ == "__main__":
    main()
