#!/usr/bin/env python3
"""The PyTorch side of the GPU training benchmark (issue: asvr-train on the GPU), and the table that
compares it with ours in the same run.

The step, as the ASVR reference trains (bf16 autocast over fp32 master weights, SDPA attention,
fused AdamW), at the benchmark configuration:
  SigLIP-SO400M tower, frozen, forward only, output of layer 26 (the 27th layer is not built, as the
    LLaVA-style towers drop it) — 729 positions per 384 px image;
  mm_projector Linear(1152→d) → GELU → Linear(d→d);
  LLaMA d 4096, 8 layers, 32 heads, FFN 11008, vocab 32000 (HF LlamaForCausalLM, trainable);
  the visual head of tools/asvr_reference.py: E 2048, head dim 128, D 8, K 16384, 3 layers;
  batch 4 rows × 2048 positions, one sample per row: 729 image positions then text, every text
    position supervised; random weights and data (seeded).
Loss = text CE + visual CE (mean over depths). Timing: `--warmup` untimed steps, then `--steps` timed
steps between torch.cuda.synchronize() calls. MFU = model FLOPs per step (counted below, the same
count for both sides) / time / the bf16 GEMM peak measured in this run (8192³ torch.matmul).

Ours: `--ours "CMD"` runs CMD (e.g. build-gpu/tests/bench_train_cuda --json) which must print one JSON
object on its last stdout line with at least "tokens_per_s" and optionally "peak_bytes" and "phases"
({name: seconds per step}); the table then shows both and the ratio.

--tiny runs a small configuration (on the CPU when no GPU is visible) to check the script itself.
Needs: torch, transformers (any version with LlamaForCausalLM / SiglipVisionModel and SDPA).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asvr_reference import VisualHead  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel  # noqa: E402

REAL = dict(image=384, patch=14, vis_hidden=1152, vis_mlp=4304, vis_heads=16, vis_layers=26,
            d=4096, layers=8, heads=32, ffn=11008, vocab=32000,
            E=2048, head_dim=128, D=8, K=16384, head_layers=3, B=4, T=2048)
TINY = dict(image=56, patch=14, vis_hidden=64, vis_mlp=128, vis_heads=4, vis_layers=2,
            d=128, layers=2, heads=4, ffn=256, vocab=512,
            E=64, head_dim=16, D=4, K=256, head_layers=1, B=2, T=64)


def model_flops(c):
    """Matmul FLOPs of one training step (2 per multiply-add): the frozen tower forward only, every
    trainable matmul forward + backward (3×), the LLM's causal attention scores and values included."""
    N = (c["image"] // c["patch"]) ** 2
    B, T, d, C = c["B"], c["T"], c["d"], c["vis_hidden"]
    n_img = B
    vis_layer = 2 * N * (4 * C * C + 2 * C * c["vis_mlp"]) + 2 * 2 * N * N * C
    vis = n_img * (c["vis_layers"] * vis_layer + 2 * N * 3 * c["patch"] ** 2 * C)
    proj = n_img * 2 * N * (C * d + d * d)
    llm_tok = c["layers"] * 2 * (4 * d * d + 3 * d * c["ffn"]) + 2 * d * c["vocab"]
    llm_att = c["layers"] * B * 2 * 2 * (T * (T + 1) / 2) * d  # q·k and p·v over the causal half
    llm = B * T * llm_tok + llm_att
    E, D = c["E"], c["D"]
    head_pos = (2 * (d * E + E * E) + (D - 1) * 2 * C * E
                + c["head_layers"] * D * (2 * 4 * E * E + 2 * 2 * (E * 2 * E)) + c["head_layers"] * 2 * 2 * D * D * E
                + D * 2 * E * c["K"])
    head = n_img * N * head_pos
    return vis + 3 * (proj + llm + head)


def gemm_peak(device, n=8192, reps=10):
    if device.type != "cuda":
        return float("nan")
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


class Step(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        vc = SiglipVisionConfig(hidden_size=c["vis_hidden"], intermediate_size=c["vis_mlp"],
                                num_hidden_layers=c["vis_layers"], num_attention_heads=c["vis_heads"],
                                image_size=c["image"], patch_size=c["patch"], layer_norm_eps=1e-6,
                                hidden_act="gelu_pytorch_tanh")
        vc._attn_implementation = "sdpa"
        self.tower = SiglipVisionModel(vc).requires_grad_(False).eval()
        lc = LlamaConfig(vocab_size=c["vocab"], hidden_size=c["d"], intermediate_size=c["ffn"],
                         num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                         num_key_value_heads=c["heads"], rms_norm_eps=1e-5, max_position_embeddings=4096,
                         hidden_act="silu", tie_word_embeddings=False)
        lc._attn_implementation = "sdpa"
        self.llm = LlamaForCausalLM(lc)
        self.mm_projector = nn.Sequential(nn.Linear(c["vis_hidden"], c["d"]), nn.GELU(), nn.Linear(c["d"], c["d"]))
        self.head = VisualHead(c["d"], c["vis_hidden"], c["E"], c["head_dim"], c["D"], c["K"], c["head_layers"])
        for p in (self.head.layers.parameters()):
            if p.dim() == 3:
                nn.init.normal_(p, std=0.02)
        self.register_buffer("codebooks", torch.randn(c["D"], c["K"], c["vis_hidden"]) * 0.1)

    def forward(self, images, ids, codes, N):
        with torch.no_grad():
            feats = self.tower(pixel_values=images, output_hidden_states=True).hidden_states[self.c["vis_layers"]]
        img = self.mm_projector(feats)                               # [B, N, d]
        emb = self.llm.model.embed_tokens(ids[:, N:])                 # text after the image
        x = torch.cat([img, emb], dim=1)                              # [B, T, d]
        hs = self.llm.model(inputs_embeds=x, use_cache=False).last_hidden_state
        logits = self.llm.lm_head(hs[:, N:-1])                        # text positions predict the next id
        loss_text = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, N + 1:].reshape(-1))
        hid = hs[:, :N].reshape(-1, hs.shape[-1])
        cf = codes.reshape(-1, self.c["D"])
        vl = self.head(hid, cf, self.codebooks)                       # [D, P, K]
        loss_vis = torch.stack([F.cross_entropy(vl[d].float(), cf[:, d]) for d in range(self.c["D"])]).mean()
        return loss_text + loss_vis, loss_text, loss_vis


def run_torch(c, device, steps, warmup, seed):
    torch.manual_seed(seed)
    m = Step(c).to(device)
    N = (c["image"] // c["patch"]) ** 2
    assert c["T"] > N + 1, "rows must hold the image and some text"
    params = [p for p in m.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=fused)
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(c["B"], 3, c["image"], c["image"], generator=g).to(device)
    ids = torch.randint(0, c["vocab"], (c["B"], c["T"]), generator=g).to(device)
    codes = torch.randint(0, c["K"], (c["B"], N, c["D"]), generator=g).to(device)
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dt, enabled=device.type == "cuda"):
            loss, lt, lv = m(images, ids, codes, N)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return lt.detach(), lv.detach()  # no host sync inside the timed loop

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = []
    for _ in range(warmup):
        losses.append(step())
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        losses.append(step())
    sync()
    sec = (time.perf_counter() - t) / max(steps, 1)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    losses = [(float(a), float(b)) for a, b in losses]
    n_params = sum(p.numel() for p in params)
    return dict(s_per_step=sec, tokens_per_s=c["B"] * c["T"] / sec, peak_bytes=peak, losses=losses,
                trainable_params=n_params)


def run_ours(cmd):
    out = subprocess.run(shlex.split(cmd), check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr[-4000:])
    lines = [l for l in out.stdout.strip().splitlines() if l.strip().startswith("{")]
    if not lines:
        raise SystemExit("--ours printed no JSON line: %r" % out.stdout[-500:])
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small configuration (script check; CPU if no GPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours", default=None, help="command running our step benchmark (prints JSON)")
    ap.add_argument("--json", default=None, help="write the results here too")
    a = ap.parse_args()
    c = dict(TINY if a.tiny else REAL)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    flops = model_flops(c)
    peak = gemm_peak(device)
    ref = run_torch(c, device, a.steps, a.warmup, a.seed)
    res = {"card": card, "config": c, "model_flops_per_step": flops, "gemm_peak_flops": peak, "pytorch": ref}
    if a.ours:
        res["ours"] = run_ours(a.ours)

    def mfu(tps):
        return flops / (c["B"] * c["T"] / tps) / peak if peak == peak else float("nan")

    print("card: %s; bf16 GEMM peak %.0f TFLOP/s (8192^3 torch.matmul); %.2f TFLOP per step" %
          (card, peak / 1e12, flops / 1e12))
    print("| side | tokens/s | MFU | peak memory | s/step |")
    print("| --- | --- | --- | --- | --- |")
    rows = [("PyTorch (bf16 autocast, SDPA, fused AdamW)", ref)]
    if "ours" in res:
        rows.append(("asvr", res["ours"]))
    for name, r in rows:
        tps = r["tokens_per_s"]
        mem = "%.1f GiB" % (r.get("peak_bytes", 0) / 2 ** 30)
        if r.get("device_used_bytes"):  # ours: planned arenas, then the device memory in use after the run
            mem += " planned, %.1f GiB in use" % (r["device_used_bytes"] / 2 ** 30)
        if r.get("precision"):
            name += " (%s)" % r["precision"]
        print("| %s | %.0f | %.1f%% | %s | %.3f |" % (name, tps, 100 * mfu(tps), mem, c["B"] * c["T"] / tps))
    if "ours" in res:
        print("ratio asvr / PyTorch tokens/s: %.2fx (target >= 1.3x)" % (res["ours"]["tokens_per_s"] / ref["tokens_per_s"]))
        for k, v in res["ours"].get("phases", {}).items():
            print("  asvr phase %-24s %.4f s/step" % (k, v))
    print("PyTorch losses (text, visual) first/last: %s / %s" % (ref["losses"][0], ref["losses"][-1]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
