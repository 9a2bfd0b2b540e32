#!/usr/bin/env python3
"""A tiny Mistral checkpoint as transformers saves one, for `asvr-train train --llm` (tests/cli_train_mistral.sh).

A seeded MistralForCausalLM (GQA 4 heads over 2, head_dim 8, rope theta 1e6, vocab 800 = the
tests/golden/mistral/tiny_mistral tokenizer's pieces) in bfloat16 — the dtype Mistral's own
release uses — written by save_pretrained in shards (model-0000k-of-0000n.safetensors and
model.safetensors.index.json, several shards) with its config.json, into
tests/golden/mistral/hf_shards/. Beside them, written without our loader:
  expected_llm.safetensors  the same tensors under our names (llm.<HF name>), bfloat16, one file: what
                            --llm must load, for a comparison with --init
  asvr_model.json           our model config: "llm" = that config.json as transformers wrote it (our
                            reader takes MistralConfig keys), plus the tiny tower and visual head of
                            tests/golden/train_cli/model.json

Regenerate (from the repository root; CI does not need these packages, the outputs are committed):
    python3 -m venv VENV && VENV/bin/pip install torch transformers safetensors
    VENV/bin/python tools/gen_mistral_shards.py
Deterministic (seed 11). Made with torch 2.15.0, transformers 5.24.0.
"""
import json
import os

import torch
from safetensors.torch import save_file
from transformers import MistralConfig, MistralForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "mistral", "hf_shards")


def main():
    torch.manual_seed(11)
    cfg = MistralConfig(vocab_size=800, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                        rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None, tie_word_embeddings=False,
                        bos_token_id=1, eos_token_id=2)
    model = MistralForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():  # norms away from 1 so that a weight read as another one shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    model.save_pretrained(OUT, max_shard_size="40KB", safe_serialization=True)
    for f in ("generation_config.json",):
        p = os.path.join(OUT, f)
        if os.path.exists(p):
            os.remove(p)
    index = json.load(open(os.path.join(OUT, "model.safetensors.index.json")))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2, shards
    state = {"llm." + k: v.contiguous() for k, v in model.state_dict().items()}
    assert set(k[4:] for k in state) == set(index["weight_map"]), "the shards hold every tensor"
    save_file(state, os.path.join(OUT, "expected_llm.safetensors"), metadata={"format": "pt"})
    hf = json.load(open(os.path.join(OUT, "config.json")))
    ours = json.load(open(os.path.join(ROOT, "tests", "golden", "train_cli", "model.json")))
    ours["llm"] = hf
    with open(os.path.join(OUT, "asvr_model.json"), "w") as f:
        json.dump(ours, f, indent=1)
        f.write("\n")
    print("wrote %d shards, %d tensors into %s" % (len(shards), len(state), OUT))


if __name__ == "__main__":
    main()
