#!/usr/bin/env python3
"""Golden fixtures for the trainer: one tiny ASVR model (tools/asvr_reference.py), one packed batch,
and what PyTorch computes for it in fp32: step-0 losses, step-0 gradients of every trainable
parameter, and the parameters after 3 AdamW steps, for each freeze stage (pt, it), each visual-loss
setting (default, none) and three optimiser variants (wd 0, wd 0.1, clip-norm 1.0).

Writes tests/golden/train/ (see the README.md there for what each file holds):
    python3 tools/gen_train_fixtures.py            # writes the fixtures, runs the self-checks
    python3 tools/gen_train_fixtures.py --check    # self-checks only, writes nothing
Needs: torch, transformers (made with 5.24.0), safetensors, numpy. Deterministic: a rerun writes
byte-identical files (CPU, fixed seeds, one thread).
"""
import argparse
import copy
import hashlib
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import get_cosine_schedule_with_warmup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import asvr_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "train")
SEED = 20240611

CFG = {
    "vision": dict(image_size=46, patch_size=14, hidden_size=48, intermediate_size=96, num_layers=4,
                   num_heads=4, layer_norm_eps=1e-6, tap_layer=3, hidden_act="gelu_pytorch_tanh",
                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
    "llm": dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0,
                max_position_embeddings=64, hidden_act="silu", tie_word_embeddings=False),
    "visual_head": dict(embed_dim=24, head_dim=8, n_heads=3, depth=3, codebook_size=64, n_layers=3,
                        ffn_dim=48, rms_norm_eps=1e-6),
    "mm_projector": "Linear(C_vis->d), GELU(erf), Linear(d->d)",
    "image_positions": 9,
    "lambda_visual": 1.0,
}

# The Mistral-shaped variant (manifest "mistral"): the same tiny model with HF MistralForCausalLM as
# the LLM, RoPE theta 1e6 and a sliding window of 20 positions: shorter than a row (28), longer than
# every sample (10, 18, 18), so per-sample attention never reaches it.
MISTRAL_LLM = dict(CFG["llm"], model_type="mistral", rope_theta=1000000.0, sliding_window=20)

TOTAL_STEPS = 100
WARMUP_RATIO = 0.03
STEPS = 3
PEAK_LR = {"pt": 1e-3, "it": 1e-3}
VARIANTS = {  # name: (weight_decay, clip max-norm or None)
    "wd0": (0.0, None),
    "wd0.1": (0.1, None),
    "clip1": (0.0, 1.0),
}
T = 28  # row length


# ---------------------------------------------------------------------------------------------
def build_model(visual_loss="default"):
    cfg = dict(CFG, visual_loss=visual_loss)
    return ref.ASVRModel(cfg)


def randomise(model, g):
    """Every parameter re-drawn from g, in name order: norm weights 1 + 0.2·N(0,1), biases 0.1·N(0,1),
    position embeddings 0.5·N(0,1), matrices N(0,1)/sqrt(fan_in). No element is 0 or 1."""
    for name, p in sorted(model.named_parameters()):
        shape = p.shape
        if p.ndim == 1 and "norm" in name:
            t = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif p.ndim == 1:
            t = 0.1 * torch.randn(shape, generator=g)
        elif "position_embedding" in name or "embed_tokens" in name:
            t = 0.5 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if p.ndim != 3 else shape[-1]  # ffn_w*: per depth [out, in]
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        with torch.no_grad():
            p.copy_(t)
    model.codebooks.copy_(torch.randn(model.codebooks.shape, generator=g))


def stored_params(model):
    """Parameters that go into model_init.safetensors: everything except the SigLIP layers at or
    after the tap and its post-LN / head (never used)."""
    tap = CFG["vision"]["tap_layer"]
    out = {}
    for n, p in model.named_parameters():
        if n.startswith("vision_tower."):
            parts = n.split(".")
            if "post_layernorm" in n or "head" in parts[1:2]:
                continue
            if parts[1] == "encoder" and int(parts[3]) >= tap:
                continue
        out[n] = p.detach().clone().contiguous()
    return out


def make_batch(g):
    """2 rows × T. Row 0 packs sample A (text-only) then sample B (image 0); row 1 holds sample C
    (image 1) then right padding. Returns the batch dict and its description."""
    V = CFG["llm"]["vocab_size"]
    N = CFG["image_positions"]
    D, K = CFG["visual_head"]["depth"], CFG["visual_head"]["codebook_size"]
    S = CFG["vision"]["image_size"]
    # (row, text before image, text after image or total text for text-only, image index or None,
    #  supervised spans relative to the sample start)
    samples = [  # pre/post: text tokens before/after the image (post = all text for a text-only sample)
        dict(name="A", row=0, pre=0, post=10, image=None, first_supervised=False),
        dict(name="B", row=0, pre=3, post=6, image=0, first_supervised=True),
        dict(name="C", row=1, pre=1, post=8, image=1, first_supervised=False),
    ]
    ids = torch.zeros(2, T, dtype=torch.long)
    labels = torch.full((2, T), ref.IGNORE, dtype=torch.long)
    seg = torch.full((2, T), ref.PAD_SEGMENT, dtype=torch.long)
    pos = torch.zeros(2, T, dtype=torch.long)
    image_flat = torch.zeros(2, N, dtype=torch.long)
    cursor = [0, 0]
    nseg = [0, 0]
    desc = []
    for s in samples:
        r = s["row"]
        start = cursor[r]
        n_img = N if s["image"] is not None else 0
        length = s["pre"] + n_img + s["post"]
        tok = torch.randint(1, V, (length,), generator=g)
        lab = torch.full((length,), ref.IGNORE, dtype=torch.long)
        if s["image"] is not None:
            tok[s["pre"]:s["pre"] + N] = ref.IMAGE_TOKEN
            first_sup = s["pre"] + N + 1          # the text right after the image is the prompt, then the answer
            lab[first_sup:] = tok[first_sup:]
            image_flat[s["image"]] = r * T + start + s["pre"] + torch.arange(N)
        else:
            lab[4:] = tok[4:]                     # tokens 0..3 are the (masked) prompt
        if s["first_supervised"]:
            lab[0] = tok[0]                       # on purpose: a row-level shift would score it
        ids[r, start:start + length] = tok
        labels[r, start:start + length] = lab
        seg[r, start:start + length] = nseg[r]
        pos[r, start:start + length] = torch.arange(length)
        desc.append(dict(name=s["name"], row=r, segment=nseg[r], start=start, length=length,
                         image=s["image"], image_start=(start + s["pre"]) if s["image"] is not None else None,
                         image_offset_in_sample=s["pre"] if s["image"] is not None else None,
                         image_positions=n_img, first_token_supervised=s["first_supervised"]))
        cursor[r] += length
        nseg[r] += 1
    images = torch.rand(2, 3, S, S, generator=g) * 2 - 1
    codes = torch.randint(0, K, (2, N, D), generator=g)
    codes_zero = torch.randint(0, K, (N, D), generator=g)
    batch = dict(input_ids=ids, labels=labels, segment_ids=seg, position_ids=pos, images=images,
                 codes=codes, image_flat_pos=image_flat, codes_zero_image=codes_zero,
                 n_text_only=sum(1 for s in samples if s["image"] is None))
    return batch, desc


def unpack(batch, desc):
    """The same samples, one per row (each row padded to T): for the packing-equivalence check."""
    n = len(desc)
    out = dict(input_ids=torch.zeros(n, T, dtype=torch.long),
               labels=torch.full((n, T), ref.IGNORE, dtype=torch.long),
               segment_ids=torch.full((n, T), ref.PAD_SEGMENT, dtype=torch.long),
               position_ids=torch.zeros(n, T, dtype=torch.long),
               images=batch["images"], codes=batch["codes"], codes_zero_image=batch["codes_zero_image"],
               n_text_only=batch["n_text_only"], image_flat_pos=batch["image_flat_pos"].clone())
    for i, s in enumerate(desc):
        sl = slice(s["start"], s["start"] + s["length"])
        L = s["length"]
        for k in ("input_ids", "labels", "position_ids"):
            out[k][i, :L] = batch[k][s["row"], sl]
        out["segment_ids"][i, :L] = 0
        if s["image"] is not None:
            out["image_flat_pos"][s["image"]] = i * T + (s["image_start"] - s["start"]) + torch.arange(
                CFG["image_positions"])
    return out


# ---------------------------------------------------------------------------------------------
def set_trainable(model, stage):
    names = set(model.trainable(stage))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return [(n, p) for n, p in model.named_parameters() if n in names]


def decays(name, p):
    """Weight decay applies to matrices and embeddings (ndim ≥ 2), never to biases or norm weights."""
    return p.ndim >= 2


def losses_of(out):
    r = {"text": out["loss_text"].item(), "total": out["loss"].item(), "n_text_tokens": out["n_text_tokens"]}
    if "loss_visual" in out:
        r["visual"] = out["loss_visual"].item()
        r["visual_per_depth"] = out["loss_visual_depth"].tolist()
        r["n_visual_positions"] = out["n_visual_positions"]
    return r


def train(init_model, batch, stage, variant, text_only_visual="skip"):
    """3 AdamW steps on the same batch; returns step-0 losses and grads, per-step lr and pre-clip
    grad norm, and the trainable parameters after the last step."""
    model = copy.deepcopy(init_model)
    model.train()
    params = set_trainable(model, stage)
    wd, clip = VARIANTS[variant]
    groups = [dict(params=[p for n, p in params if decays(n, p)], weight_decay=wd),
              dict(params=[p for n, p in params if not decays(n, p)], weight_decay=0.0)]
    opt = torch.optim.AdamW(groups, lr=PEAK_LR[stage], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    warmup = math.ceil(TOTAL_STEPS * WARMUP_RATIO)
    sched = get_cosine_schedule_with_warmup(opt, warmup, TOTAL_STEPS)
    rec = {"lr": [], "grad_norm": [], "loss": [], "clip_coef": []}
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        out = model(batch, text_only_visual=text_only_visual)
        out["loss"].backward()
        if step == 0:
            rec["losses0"] = losses_of(out)
            rec["grads0"] = {n: p.grad.detach().clone() for n, p in params}
        rec["loss"].append(out["loss"].item())
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for _, p in params]))
        rec["grad_norm"].append(float(norm))
        if clip is not None:
            n2 = torch.nn.utils.clip_grad_norm_([p for _, p in params], clip)
            assert torch.equal(n2, norm), (float(n2), float(norm))
            rec["clip_coef"].append(float(torch.clamp(clip / (norm + 1e-6), max=1.0)))
        lr = sched.get_last_lr()[0]
        assert abs(lr - PEAK_LR[stage] * ref.lr_lambda_cosine_warmup(step, warmup, TOTAL_STEPS)) < 1e-15
        rec["lr"].append(lr)
        opt.step()
        sched.step()
    rec["after"] = {n: p.detach().clone().contiguous() for n, p in params}
    if clip is None:
        del rec["clip_coef"]
    return rec


# ---------------------------------------------------------------------------------------------
def rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def self_checks(init, init_none, batch, desc):
    ok = True

    def check(what, cond, detail):
        nonlocal ok
        print("%-4s %s  %s" % ("ok" if cond else "FAIL", what, detail))
        ok &= bool(cond)

    # 1. visual loss of an all-zero visual head is ln K (and stays so whatever the batch)
    m = copy.deepcopy(init)
    with torch.no_grad():
        for p in m.visual_head.parameters():
            p.zero_()
    with torch.no_grad():
        out = m(batch)
    K = CFG["visual_head"]["codebook_size"]
    lv = out["loss_visual_depth"]
    check("zero head → visual CE = ln K", torch.allclose(lv, torch.full_like(lv, math.log(K)), rtol=0, atol=1e-6),
          "per depth %s, ln K %.6f" % ([round(float(x), 6) for x in lv], math.log(K)))

    # 2. packing: one packed row == the samples in separate rows (losses and all grads)
    up = unpack(batch, desc)
    for name, model in (("default", init), ("none", init_none)):
        for tov in (("skip", "zero_image") if name == "default" else ("skip",)):
            res = []
            for b in (batch, up):
                mm = copy.deepcopy(model)
                params = set_trainable(mm, "it")
                out = mm(b, text_only_visual=tov)
                out["loss"].backward()
                res.append((losses_of(out), {n: p.grad for n, p in params}))
            (l0, g0), (l1, g1) = res
            dl = max(abs(l0[k] - l1[k]) for k in ("text", "total"))
            worst = max(rel(g0[n], g1[n]) for n in g0 if g1[n].norm() > 0)
            zero_ok = all(torch.equal(g0[n] == 0, g1[n] == 0) or g1[n].norm() > 0 for n in g0)
            check("packed == unpacked (%s, text-only %s)" % (name, tov),
                  dl < 1e-5 and worst < 1e-5 and zero_ok and l0["n_text_tokens"] == l1["n_text_tokens"],
                  "max |Δloss| %.2e, max rel grad diff %.2e" % (dl, worst))

    # 2b. negative control: the same row with both samples in one segment (no block-diagonal mask,
    #     row-level label shift) must give different losses, or check 2 proves nothing
    broken = dict(batch)
    broken["segment_ids"] = batch["segment_ids"].clone()
    broken["segment_ids"][0][broken["segment_ids"][0] >= 0] = 0
    with torch.no_grad():
        o0, o1 = init(batch), init(broken)
    d = abs(o0["loss_text"].item() - o1["loss_text"].item())
    dv = abs(o0["loss_visual"].item() - o1["loss_visual"].item())
    check("negative control: one mask over the packed row changes both losses",
          d > 1e-3 and dv > 1e-4 and o1["n_text_tokens"] == o0["n_text_tokens"] + 1,
          "|Δtext| %.3e, |Δvisual| %.3e, scored tokens %d vs %d" % (d, dv, o1["n_text_tokens"], o0["n_text_tokens"]))

    # 2c. the visual head against a loop written from the reference's layout: linear1/linear2 weights
    #     [2E, D·E] / [E, D·2E], MHA by hand (q;k;v rows of in_proj, scale 1/sqrt(head_dim), causal)
    vh = init.visual_head
    E, D, hd = CFG["visual_head"]["embed_dim"], CFG["visual_head"]["depth"], CFG["visual_head"]["head_dim"]
    gx = torch.Generator().manual_seed(2)
    x = torch.randn(5, D, E, generator=gx)
    with torch.no_grad():
        y_mod = vh.layers[0](x)
        L0 = vh.layers[0]
        lin1 = L0.ffn_w1.permute(1, 0, 2).reshape(2 * E, D * E)   # reference linear1.weight
        lin2 = L0.ffn_w2.permute(1, 0, 2).reshape(E, D * 2 * E)   # reference linear2.weight

        def rms(v, w):
            return w * v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)
        a_in = rms(x, L0.norm1.weight)
        W, bias = L0.attn.in_proj_weight, L0.attn.in_proj_bias
        q, k, v = [(a_in @ W[i * E:(i + 1) * E].T + bias[i * E:(i + 1) * E]).reshape(5, D, E // hd, hd).transpose(1, 2)
                   for i in range(3)]
        sc = q @ k.transpose(-1, -2) / math.sqrt(hd)
        sc = sc.masked_fill(torch.triu(torch.ones(D, D, dtype=torch.bool), 1), float("-inf"))
        att = (sc.softmax(-1) @ v).transpose(1, 2).reshape(5, D, E)
        att = att @ L0.attn.out_proj.weight.T + L0.attn.out_proj.bias
        h = rms(x + att, L0.norm2.weight)
        f = torch.stack([torch.nn.functional.gelu(h[:, l] @ lin1[:, l * E:(l + 1) * E].T) @
                         lin2[:, l * 2 * E:(l + 1) * 2 * E].T for l in range(D)], dim=1)
        y_ref = h + f
    check("depth layer == loop over the reference layout", rel(y_mod, y_ref) < 1e-6, "rel %.2e" % rel(y_mod, y_ref))

    # 3. HF LLaMA with our 4D mask on an unpacked row == plain causal HF LLaMA (no custom mask)
    mm = copy.deepcopy(init)
    L = desc[1]["length"]
    x = torch.randn(1, L, CFG["llm"]["hidden_size"], generator=torch.Generator().manual_seed(1))
    seg = torch.zeros(1, L, dtype=torch.long)
    with torch.no_grad():
        a = mm.llm.model(inputs_embeds=x, attention_mask=ref.block_causal_mask(seg), position_ids=torch.arange(L)[None],
                         use_cache=False).last_hidden_state
        b = mm.llm.model(inputs_embeds=x, use_cache=False).last_hidden_state
    check("custom 4D mask == HF causal mask on one sample", rel(a, b) < 1e-6, "rel %.2e" % rel(a, b))

    # 4. an image-free text-only sample's loss does not depend on the image pixels; the visual loss
    #    does not depend on the text-only sample's tokens (default: no visual term for it)
    b2 = dict(batch)
    b2["input_ids"] = batch["input_ids"].clone()
    s = [s for s in desc if s["image"] is None][0]
    b2["input_ids"][s["row"], s["start"] + 1:s["start"] + s["length"]] = 1 + (
        b2["input_ids"][s["row"], s["start"] + 1:s["start"] + s["length"]] % 7)
    with torch.no_grad():
        v0 = init(batch)["loss_visual_depth"]
        v1 = init(b2)["loss_visual_depth"]
    check("visual loss independent of the text-only sample", torch.equal(v0, v1), "")
    return ok


# ---------------------------------------------------------------------------------------------
def mistral_model(init):
    """The default model with the Mistral LLM, every parameter copied from init (same names)."""
    m = ref.ASVRModel(dict(CFG, llm=MISTRAL_LLM, visual_loss="default"))
    m.load_state_dict(init.state_dict(), strict=True)
    return m


def mistral_checks(init, batch):
    ok = True

    def check(what, cond, detail):
        nonlocal ok
        print("%-4s %s  %s" % ("ok" if cond else "FAIL", what, detail))
        ok &= bool(cond)

    mm = mistral_model(init)
    with torch.no_grad():
        a, b = init(batch), mm(batch)
    d = abs(a["loss_text"].item() - b["loss_text"].item())
    check("mistral: rope theta 1e6 changes the text loss", d > 1e-4, "|Δtext| %.3e" % d)
    # the window is below every sample: no window at all gives the same result on the packed batch
    nowin = copy.deepcopy(mm)
    nowin.llm.config.sliding_window = None
    for layer in nowin.llm.model.layers:
        layer.self_attn.sliding_window = None
    with torch.no_grad():
        c = nowin(batch)
    d2 = abs(b["loss"].item() - c["loss"].item())
    check("mistral: window 20 == no window on samples of <= 18 positions", d2 == 0.0, "|Δloss| %.2e" % d2)
    # HF's own mask (no custom 4D mask) does apply the window to a 28-position sequence, and not to a 20-position one
    x = torch.randn(1, 28, CFG["llm"]["hidden_size"], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h1 = mm.llm.model(inputs_embeds=x, use_cache=False).last_hidden_state
        h0 = nowin.llm.model(inputs_embeds=x, use_cache=False).last_hidden_state
    check("mistral: HF applies the window past 20 positions", rel(h1[:, 20:], h0[:, 20:]) > 1e-3 and
          rel(h1[:, :20], h0[:, :20]) < 1e-6, "rel %.2e after, %.2e within" % (rel(h1[:, 20:], h0[:, 20:]),
                                                                              rel(h1[:, :20], h0[:, :20])))
    return ok


def mistral_run(init, batch):
    """Stage it, default loss, wd 0: step-0 losses and gradients, the parameters after 3 steps."""
    mm = mistral_model(init)
    rec = train(mm, batch, "it", "wd0")
    init_params = dict(mm.named_parameters())
    run = {"losses_step0": rec["losses0"], "trainable": sorted(rec["grads0"]),
           "grads_file": save("grads_it_mistral.safetensors", rec["grads0"]),
           "variants": {"wd0": {"lr": rec["lr"], "loss": rec["loss"], "grad_norm_preclip": rec["grad_norm"],
                                "update_norm": {n: float((p - init_params[n].detach()).norm())
                                                for n, p in sorted(rec["after"].items())},
                                "params_file": save("after3_it_mistral_wd0.safetensors", rec["after"])}}}
    print("it_mistral  text %.6f visual %s total %.6f  grad norm %.4f" % (
        run["losses_step0"]["text"], run["losses_step0"].get("visual"), run["losses_step0"]["total"],
        rec["grad_norm"][0]))
    return {"llm": MISTRAL_LLM, "hf_config": json.loads(mm.llm.config.to_json_string()),
            "note": "the default model's parameters with HF MistralForCausalLM as the LLM; hf_config is its "
                    "MistralConfig as config.json holds it", "runs": {"it_mistral": run}}


# ---------------------------------------------------------------------------------------------
def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def save(name, tensors, meta=None):
    path = os.path.join(OUT, name)
    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="run the self-checks only, write nothing")
    ap.add_argument("--mistral-only", action="store_true",
                    help="write only the Mistral variant's files and its manifest entry, keep the rest")
    a = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(SEED)
    init = build_model("default")
    randomise(init, g)
    init_none = build_model("none")
    missing, unexpected = init_none.load_state_dict(init.state_dict(), strict=False)
    assert not missing and all(k.startswith("visual_head.") for k in unexpected), (missing, unexpected)
    batch, desc = make_batch(g)
    for p in init.parameters():
        assert not (p == 0).any() and not (p == 1).any()

    ok = (a.mistral_only or self_checks(init, init_none, batch, desc)) and mistral_checks(init, batch)
    if not ok:
        sys.exit("gen_train_fixtures: a self-check failed")
    if a.check:
        return
    if a.mistral_only:
        path = os.path.join(OUT, "manifest.json")
        with open(path) as f:
            manifest = json.load(f)
        manifest["mistral"] = mistral_run(init, batch)
        with open(path + ".tmp", "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(path + ".tmp", path)
        return

    os.makedirs(OUT, exist_ok=True)
    manifest = {"format": "asvr-train-golden", "version": 1, "generator": "tools/gen_train_fixtures.py",
                "seed": SEED, "torch": torch.__version__.split("+")[0],
                "transformers": __import__("transformers").__version__,
                "dtype": "float32", "config": CFG, "files": {}}

    # model
    params = stored_params(init)
    params["codebooks"] = init.codebooks.detach().clone()
    manifest["files"]["model_init"] = save("model_init.safetensors", params,
                                           {"asvr_train_golden_config": json.dumps(CFG, sort_keys=True)})
    manifest["parameters"] = {
        n: {"shape": list(p.shape), "reference_name": ref.hf_name(n) if n != "codebooks" else
            "quantizer_semantic.codebooks.{d}.weight (tokenizer; padding row dropped), stacked over d",
            "decay": decays(n, p) if not n.startswith(("vision_tower", "codebooks")) else None,
            "trainable_in": [s for s in ("pt", "it") if n in init.trainable(s)]}
        for n, p in sorted(params.items())}

    # batch
    bt = {k: batch[k] for k in ("input_ids", "labels", "segment_ids", "position_ids", "images", "codes",
                                "codes_zero_image", "image_flat_pos")}
    bt["attention_mask"] = ref.block_causal_mask(batch["segment_ids"])[:, 0]
    manifest["files"]["batch"] = save("batch.safetensors", bt)
    manifest["batch"] = {
        "rows": 2, "row_length": T, "pad_id": 0, "ignore_label": ref.IGNORE, "image_token": ref.IMAGE_TOKEN,
        "pad_segment": ref.PAD_SEGMENT, "samples": desc,
        "input_ids": batch["input_ids"].tolist(), "labels": batch["labels"].tolist(),
        "segment_ids": batch["segment_ids"].tolist(), "position_ids": batch["position_ids"].tolist(),
        "image_flat_pos": batch["image_flat_pos"].tolist(),
        "image_sample": {str(s["image"]): s["name"] for s in desc if s["image"] is not None},
        "text_only_samples": [s["name"] for s in desc if s["image"] is None],
    }

    # step-0 forward intermediates (default model)
    with torch.no_grad():
        out = init(batch)
    fw = {k: out[k].detach() for k in ("vision_features", "image_embeds", "hidden_final", "text_logits",
                                       "visual_logits")}
    manifest["files"]["forward"] = save("forward_default.safetensors", fw)

    # runs
    warmup = math.ceil(TOTAL_STEPS * WARMUP_RATIO)
    manifest["optimizer"] = {
        "type": "torch.optim.AdamW", "betas": [0.9, 0.999], "eps": 1e-8, "peak_lr": PEAK_LR,
        "schedule": "transformers.get_cosine_schedule_with_warmup", "total_steps": TOTAL_STEPS,
        "warmup_ratio": WARMUP_RATIO, "warmup_steps": warmup, "steps_recorded": STEPS,
        "variants": {k: {"weight_decay": v[0], "clip_max_norm": v[1]} for k, v in VARIANTS.items()},
        "decay_rule": "weight decay on parameters with ndim >= 2 only (no biases, no norm weights)",
        "clip_rule": "torch.nn.utils.clip_grad_norm_: coef = min(1, max_norm / (total_norm + 1e-6))",
    }
    # What is stored (the folder stays small): step-0 grads for the it stage (pt's grads are the same
    # tensors restricted to pt's trainable set: checked here), the parameters after 3 steps for every
    # stage x loss at wd 0 and, for pt_default, for every optimiser variant. Every run also records
    # per step lr, loss, pre-clip grad norm, and per parameter the L2 norm of (after - init).
    STORE_PARAMS = {("pt", "default"): VARIANTS, ("it", "default"): ["wd0"], ("pt", "none"): ["wd0"],
                    ("it", "none"): ["wd0"]}
    runs = {}
    for vl, model in (("default", init), ("none", init_none)):
        init_params = dict(model.named_parameters())
        grads_it = None
        for stage in ("it", "pt"):
            key = "%s_%s" % (stage, vl)
            r = {}
            for variant in VARIANTS:
                rec = train(model, batch, stage, variant)
                if variant == "wd0":
                    r["losses_step0"] = rec["losses0"]
                    r["trainable"] = sorted(rec["grads0"])
                    if stage == "it":
                        grads_it = rec["grads0"]
                        r["grads_file"] = save("grads_%s.safetensors" % key, rec["grads0"])
                    else:
                        worst = max(rel(g, grads_it[n]) for n, g in rec["grads0"].items())
                        assert worst < 1e-5, worst
                        r["grads_file"] = "grads_it_%s.safetensors (the same tensors, restricted to the pt " \
                                          "trainable names; max relative difference %.1e)" % (vl, worst)
                v = {"lr": rec["lr"], "loss": rec["loss"], "grad_norm_preclip": rec["grad_norm"],
                     "update_norm": {n: float((p - init_params[n].detach()).norm()) for n, p in sorted(rec["after"].items())}}
                if "clip_coef" in rec:
                    v["clip_coef"] = rec["clip_coef"]
                    if key == "pt_default":
                        assert all(c < 0.9 for c in rec["clip_coef"]), rec["clip_coef"]  # clipping really acts
                if variant in STORE_PARAMS[(stage, vl)]:
                    v["params_file"] = save("after3_%s_%s.safetensors" % (key, variant), rec["after"])
                r.setdefault("variants", {})[variant] = v
            runs[key] = r
            print("%-11s text %.6f visual %s total %.6f  grad norm %.4f" % (
                key, r["losses_step0"]["text"], r["losses_step0"].get("visual"), r["losses_step0"]["total"],
                r["variants"]["wd0"]["grad_norm_preclip"][0]))
    # reference behaviour for text-only samples (zero image): step-0 losses only
    rec = train(init, batch, "it", "wd0", text_only_visual="zero_image")
    runs["it_default_zeroimage"] = {"losses_step0": rec["losses0"]}
    manifest["runs"] = runs
    manifest["mistral"] = mistral_run(init, batch)
    path = os.path.join(OUT, "manifest.json")
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %s: %.2f MB" % (os.path.relpath(OUT, ROOT), total / 1e6))


if __name__ == "__main__":
    main()
