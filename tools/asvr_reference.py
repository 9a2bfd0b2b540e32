#!/usr/bin/env python3
"""PyTorch reference of one ASVR training step (fp32), written from DESIGN.md §2 and
reference/asvr_dualtoken.md §2-3, for checking the C trainer.

Model = frozen SigLIP input tower (output of layer `tap`, no post-LN)
      + mm_projector  Linear(C_vis→d) → GELU(erf) → Linear(d→d)
      + LLM           HF LlamaForCausalLM (or MistralForCausalLM, cfg llm.model_type "mistral") fed with inputs_embeds, explicit position_ids and a 4D
                      additive block-diagonal causal mask (packed rows)
      + visual head   (ASVR's depth transformer, see VisualHead)
      + loss          text CE (shifted, never across a sample boundary, mean over scored tokens of
                      the batch) + λ·visual CE (mean over image positions per depth, then mean over
                      depths), λ = 1.

A batch is a set of rows; a row holds one or more whole samples (segment ids 0, 1, … in the row;
-1 = padding) whose positions restart at 0. Image features replace the embeddings at the image
positions (input id IMAGE_TOKEN = -200 there). Text-only samples add no visual loss unless
`text_only_visual="zero_image"` (the reference behaviour: such a sample contributes N positions whose
LLM hidden state is zero, scored against the codes of the zero image).

Needs: torch, transformers (tested with 5.24.0; the 4D custom mask path is
transformers.masking_utils: a 4D mask is used as-is, and the eager attention adds it to the scores).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, SiglipVisionConfig,
                          SiglipVisionModel)

IGNORE = -100
IMAGE_TOKEN = -200
PAD_SEGMENT = -1


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps), computed in fp32 (the visual head's norm, eps 1e-6)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class DepthLayer(nn.Module):
    """One causal depth-transformer layer over the D depth tokens of a patch:
        h   = norm2(x + MHA(norm1(x)))          (the residual stream is replaced by its normalised value)
        out = h + FFN_d(h),  FFN_d(h_d) = W2_d · gelu_erf(W1_d · h_d)   (separate weights per depth d, no bias)
    MHA: packed in_proj [3E, E] + bias (q; k; v), out_proj + bias, E/head_dim heads, scale 1/sqrt(head_dim)."""

    def __init__(self, E, n_heads, D, eps=1e-6):
        super().__init__()
        self.norm1 = RMSNorm(E, eps)
        self.attn = nn.MultiheadAttention(E, n_heads, bias=True, batch_first=True)
        self.norm2 = RMSNorm(E, eps)
        self.ffn_w1 = nn.Parameter(torch.empty(D, 2 * E, E))  # W1_d: [2E, E]
        self.ffn_w2 = nn.Parameter(torch.empty(D, E, 2 * E))  # W2_d: [E, 2E]

    def forward(self, x):  # x [N, D, E]
        D = x.shape[1]
        causal = torch.triu(torch.ones(D, D, dtype=torch.bool, device=x.device), diagonal=1)  # True = masked
        y = self.norm1(x)
        a, _ = self.attn(y, y, y, attn_mask=causal, need_weights=False)
        h = self.norm2(x + a)
        u = F.gelu(torch.einsum("nde,dfe->ndf", h, self.ffn_w1))  # [N, D, 2E]
        f = torch.einsum("ndf,def->nde", u, self.ffn_w2)          # [N, D, E]
        return h + f


class VisualHead(nn.Module):
    """hidden [N, d] (final-norm LLM state at image positions) + codes [N, D] → logits [D, N, K].
    depth token 0 = head_in_proj(hidden); depth token d ≥ 1 = code_in_proj(Σ_{d'<d} codebook_{d'}[code_{d'}])
    (codebooks frozen, not parameters of this module). No depth position embedding."""

    def __init__(self, d_model, C_vis, E, head_dim, D, K, n_layers=3, eps=1e-6):
        super().__init__()
        self.D = D
        self.head_in_proj = nn.Sequential(nn.Linear(d_model, E), nn.GELU(), nn.Linear(E, E))
        self.code_in_proj = nn.Linear(C_vis, E)
        self.layers = nn.ModuleList([DepthLayer(E, E // head_dim, D, eps) for _ in range(n_layers)])
        self.norm = RMSNorm(E, eps)
        self.heads = nn.ModuleList([nn.Linear(E, K) for _ in range(D)])

    def forward(self, hidden, codes, codebooks):  # codebooks [D, K, C_vis]
        tok0 = self.head_in_proj(hidden)[:, None, :]                       # [N, 1, E]
        emb = torch.stack([codebooks[d][codes[:, d]] for d in range(self.D)], dim=1)  # [N, D, C]
        ctx = self.code_in_proj(torch.cumsum(emb, dim=1)[:, :-1])          # [N, D-1, E]
        x = torch.cat([tok0, ctx], dim=1)                                   # [N, D, E]
        for layer in self.layers:
            x = layer(x)
        y = self.norm(x)
        return torch.stack([self.heads[d](y[:, d]) for d in range(self.D)], dim=0)  # [D, N, K]


def block_causal_mask(segment_ids, dtype=torch.float32):
    """segment_ids [B, T] (-1 = padding) → additive mask [B, 1, T, T]: 0 where key j ≤ query i and both
    are in the same sample, the dtype's minimum elsewhere. A padding token sees only itself."""
    B, T = segment_ids.shape
    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    pad = segment_ids == PAD_SEGMENT
    allowed = same & causal[None] & ~(pad[:, :, None] | pad[:, None, :])
    allowed = allowed | (torch.eye(T, dtype=torch.bool)[None] & pad[:, :, None])
    mask = torch.zeros(B, 1, T, T, dtype=dtype)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


class ASVRModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        v = cfg["vision"]
        vc = SiglipVisionConfig(hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
                                num_hidden_layers=v["num_layers"], num_attention_heads=v["num_heads"],
                                image_size=v["image_size"], patch_size=v["patch_size"],
                                layer_norm_eps=v["layer_norm_eps"], hidden_act="gelu_pytorch_tanh")
        vc._attn_implementation = "eager"
        self.vision_tower = SiglipVisionModel(vc)
        L = cfg["llm"]
        common = dict(vocab_size=L["vocab_size"], hidden_size=L["hidden_size"],
                      intermediate_size=L["intermediate_size"], num_hidden_layers=L["num_layers"],
                      num_attention_heads=L["num_heads"], num_key_value_heads=L["num_kv_heads"],
                      rms_norm_eps=L["rms_norm_eps"], rope_theta=L["rope_theta"],
                      max_position_embeddings=L["max_position_embeddings"], hidden_act="silu",
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        if L.get("model_type", "llama") == "mistral":  # HF MistralForCausalLM (GQA, sliding window)
            lc = MistralConfig(head_dim=L["head_dim"], sliding_window=L.get("sliding_window"), **common)
            lc._attn_implementation = "eager"
            self.llm = MistralForCausalLM(lc)
        else:
            lc = LlamaConfig(attention_bias=False, mlp_bias=False, **common)
            lc._attn_implementation = "eager"
            self.llm = LlamaForCausalLM(lc)
        d, C = L["hidden_size"], v["hidden_size"]
        self.mm_projector = nn.Sequential(nn.Linear(C, d), nn.GELU(), nn.Linear(d, d))
        h = cfg["visual_head"]
        self.visual_head = VisualHead(d, C, h["embed_dim"], h["head_dim"], h["depth"], h["codebook_size"],
                                      h["n_layers"], h["rms_norm_eps"]) if cfg["visual_loss"] != "none" else None
        self.register_buffer("codebooks", torch.zeros(h["depth"], h["codebook_size"], C))

    # ---- pieces -------------------------------------------------------------------------------
    def vision_features(self, images):
        """images [n, 3, S, S] (normalised) → tap-layer output [n, N, C_vis], no post-LN."""
        out = self.vision_tower(pixel_values=images, output_hidden_states=True)
        return out.hidden_states[self.cfg["vision"]["tap_layer"]]

    def embed(self, batch, image_embeds):
        """Text embeddings with image rows spliced in at batch['image_pos'] ([n, N] flat indices into
        row*T + t)."""
        ids = batch["input_ids"]
        B, T = ids.shape
        emb = self.llm.model.embed_tokens(ids.clamp(min=0))  # ids < 0 (image, padding) are replaced/ignored
        flat = emb.reshape(B * T, -1)
        idx = batch["image_flat_pos"].reshape(-1)
        flat = flat.index_copy(0, idx, image_embeds.reshape(-1, image_embeds.shape[-1]))
        return flat.reshape(B, T, -1)

    def forward(self, batch, text_only_visual="skip", lam=1.0):
        """Returns a dict of losses and intermediates. batch: see tools/gen_train_fixtures.py."""
        with torch.no_grad():
            feats = self.vision_features(batch["images"])                 # frozen tower
        image_embeds = self.mm_projector(feats)                             # [n, N, d]
        x = self.embed(batch, image_embeds)
        mask = block_causal_mask(batch["segment_ids"], x.dtype)
        hs = self.llm.model(inputs_embeds=x, attention_mask=mask, position_ids=batch["position_ids"],
                            use_cache=False).last_hidden_state                # final-norm states
        logits = self.llm.lm_head(hs)                                       # [B, T, V]
        out = {"vision_features": feats, "image_embeds": image_embeds, "hidden_final": hs, "text_logits": logits}

        # text CE: logits at t predict label at t+1, only inside one sample
        seg = batch["segment_ids"]
        lab = batch["labels"][:, 1:]
        valid = (lab != IGNORE) & (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != PAD_SEGMENT)
        tgt = torch.where(valid, lab, torch.full_like(lab, IGNORE))
        out["n_text_tokens"] = int(valid.sum())
        out["loss_text"] = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=IGNORE, reduction="mean")
        total = out["loss_text"]

        if self.visual_head is not None:
            D = self.cfg["visual_head"]["depth"]
            hidden = hs.reshape(-1, hs.shape[-1])[batch["image_flat_pos"].reshape(-1)]  # [n*N, d], no shift
            codes = batch["codes"].reshape(-1, D)
            if text_only_visual == "zero_image" and batch["n_text_only"] > 0:
                N = batch["codes"].shape[1]
                m = batch["n_text_only"]
                hidden = torch.cat([hidden, hidden.new_zeros(m * N, hidden.shape[-1])])
                codes = torch.cat([codes, batch["codes_zero_image"].repeat(m, 1)])
            elif text_only_visual not in ("skip", "zero_image"):
                raise ValueError(text_only_visual)
            vlogits = self.visual_head(hidden, codes, self.codebooks)        # [D, P, K]
            per_depth = torch.stack([F.cross_entropy(vlogits[d], codes[:, d]) for d in range(D)])
            out["visual_logits"] = vlogits
            out["loss_visual_depth"] = per_depth
            out["loss_visual"] = per_depth.mean()
            out["n_visual_positions"] = codes.shape[0]
            total = total + lam * out["loss_visual"]
        out["loss"] = total
        return out

    # ---- which parameters train -----------------------------------------------------------------
    def trainable(self, stage):
        """pt: mm_projector + visual head; it: also the LLM. SigLIP and codebooks are always frozen."""
        names = []
        for n, _ in self.named_parameters():
            top = n.split(".")[0]
            if top == "mm_projector" or top == "visual_head" or (stage == "it" and top == "llm"):
                names.append(n)
            elif top not in ("vision_tower", "mm_projector", "visual_head", "llm"):
                raise AssertionError(n)
        return names


def hf_name(name):
    """Where a parameter of this module lives in the reference (ASVR) model, for the fixture manifest.
    LLaMA and SigLIP names are HF's. Visual-head names are relative to the module that owns them in the
    reference (ASVRLlamaForCausalLM for `projector.*`, the tokenizer's RQTransformer for
    `rqtransformer_semantic.*`); the reference's depth layer calls its parts self_attention
    (nn.MultiheadAttention), layernorm1, layernorm2, linear1, linear2."""
    if name.startswith("llm."):
        return name[len("llm."):]                        # LlamaForCausalLM names
    if name.startswith("mm_projector."):
        return "model." + name                           # LLaVA: model.mm_projector.{0,2}
    if name.startswith("vision_tower."):
        return "model.vision_tower.vision_tower.vision_model." + name[len("vision_tower."):]
    if name.startswith("visual_head.head_in_proj."):
        return "projector." + name[len("visual_head.head_in_proj."):]
    r = "rqtransformer_semantic."
    if name.startswith("visual_head.code_in_proj."):
        return r + "in_mlp_1." + name[len("visual_head.code_in_proj."):]
    if name.startswith("visual_head.norm."):
        return r + "headnorm." + name[len("visual_head.norm."):]
    if name.startswith("visual_head.heads."):
        return r + name[len("visual_head."):]
    if name.startswith("visual_head.layers."):
        rest = name[len("visual_head.layers."):]
        l, sub = rest.split(".", 1)
        base = r + "head_transformer.%s." % l
        if sub == "ffn_w1":
            return base + "linear1.weight [2E, D*E]: ffn_w1 = weight.view(2E, D, E).permute(1, 0, 2); bias unused"
        if sub == "ffn_w2":
            return base + "linear2.weight [E, D*2E]: ffn_w2 = weight.view(E, D, 2E).permute(1, 0, 2); bias unused"
        sub = sub.replace("norm1.", "layernorm1.").replace("norm2.", "layernorm2.").replace("attn.", "self_attention.")
        return base + sub
    raise KeyError(name)


def lr_lambda_cosine_warmup(step, warmup, total):
    """HF get_cosine_schedule_with_warmup (num_cycles 0.5), for documentation and a cross-check."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
