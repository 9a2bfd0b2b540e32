#!/usr/bin/env python3
"""asvr-train export, both formats, loaded with transformers and run against asvr-eval ask.

For a checkpoint (default: the tiny committed one of tests/golden/eval_ask, and a short run of the
train_cli model with a visual head, trained here), this script
  1. exports it with --format hf and --format llava;
  2. hf: loads the folder with LlavaForConditionalGeneration.from_pretrained (no missing or unexpected
     weights allowed), its tokenizer with AutoTokenizer and its image processor with
     AutoImageProcessor; llava: rebuilds LLaVA's model from its config.json by hand, as LLaVA's own
     loader does (LlamaForCausalLM from the llava_llama config, SiglipVisionModel from
     mm_vision_tower, hidden_states[mm_vision_select_layer], mm_projector.{0,2} with exact GELU, the
     image features spliced at the -200 position);
  3. for a few images and questions, runs `asvr-eval ask --logits` and compares: the greedy tokens
     (equal), the first step's logits (max |diff|), the image processor's pixels against
     asvr-tokenize preprocess (equal after rounding), the visual head's tensors (equal).

    pip install torch transformers==4.44.0 sentencepiece protobuf safetensors numpy pillow
    python3 tools/check_export_hf.py --build build [--checkpoint RUN/step-N --vision TOWER --tokenizer SP]

Prints one JSON line per case and a summary; exits 1 on any difference beyond the tolerances.
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
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
G = os.path.join(ROOT, "tests", "golden")
QUESTIONS = [("photo1.jpg", "What is in the picture?"), ("pwide.png", "Describe it."),
             ("ptall.png", "What colour is the sky?"), ("photo2.jpg", "Is there a dog?")]
LOGIT_TOL = 1e-4


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit("failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr))
    return r.stdout


def asvr_ask(bin_dir, ck, vision, tok, image, question, max_new, logits_path, extra=()):
    cmd = [os.path.join(bin_dir, "asvr-eval"), "ask", "--checkpoint", ck, "--tokenizer", tok, "--image", image,
           "--question", question, "--max-new-tokens", str(max_new), "--logits", logits_path, "--log-level", "warn"]
    if vision:
        cmd += ["--vision", vision]
    answer = run(cmd + list(extra)).strip()
    f = load_file(logits_path)
    return answer, f["logits"], f["prompt_ids"].tolist(), f["ids"].tolist()


def our_pixels(bin_dir, image, size, policy, mean, std, tmp):
    """asvr-tokenize preprocess (Pillow-exact) then LLaVA's normalisation, as asvr-eval feeds the tower."""
    ppm = os.path.join(tmp, "img.ppm")
    run([os.path.join(bin_dir, "asvr-tokenize"), "preprocess", "--policy", policy, "--size", str(size), "--pad",
         ",".join(str(int(m * 255)) for m in mean), image, ppm, "--log-level", "warn"])
    u8 = np.asarray(Image.open(ppm).convert("RGB"), dtype=np.float32)
    x = (u8 * np.float32(1 / 255) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return u8, torch.from_numpy(x.transpose(2, 0, 1).copy())[None]


def expand2square(img, bg):
    w, h = img.size
    if w == h:
        return img
    s = max(w, h)
    out = Image.new(img.mode, (s, s), bg)
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


@torch.no_grad()
def greedy_hf(model, input_ids, pixel_values, max_new, eos):
    out = model.generate(input_ids=input_ids, pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids),
                         max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    new = out[0, input_ids.shape[1]:].tolist()
    if eos in new:
        new = new[:new.index(eos) + 1]
    first = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=torch.ones_like(input_ids)).logits[0, -1]
    return new, first


class LlavaRepoModel(torch.nn.Module):
    """LLaVA's LlavaLlamaForCausalLM as its loader builds it from a --format llava folder."""

    def __init__(self, folder):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionModel
        cfg = json.load(open(os.path.join(folder, "config.json")))
        assert cfg["model_type"] == "llava_llama" and cfg["mm_projector_type"] == "mlp2x_gelu"
        keys = {k: v for k, v in cfg.items() if not k.startswith(("mm_", "asvr")) and k not in ("architectures", "model_type")}
        self.llm = LlamaForCausalLM(LlamaConfig(**keys)).eval()
        sd = load_torch(os.path.join(folder, "model.safetensors"))
        llm_sd = {k: v for k, v in sd.items() if not k.startswith(("model.mm_projector.", "model.visual_head"))}
        missing, unexpected = self.llm.load_state_dict(llm_sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        self.tower = SiglipVisionModel.from_pretrained(cfg["mm_vision_tower"]).eval()
        self.select = cfg["mm_vision_select_layer"]
        self.proj = torch.nn.Sequential(torch.nn.Linear(cfg["mm_hidden_size"], cfg["hidden_size"]), torch.nn.GELU(),
                                        torch.nn.Linear(cfg["hidden_size"], cfg["hidden_size"]))
        self.proj.load_state_dict({k[len("model.mm_projector."):]: v for k, v in sd.items()
                                   if k.startswith("model.mm_projector.")})
        self.head_tensors = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.visual_head")}

    @torch.no_grad()
    def embeds(self, ids, pixels):
        feats = self.proj(self.tower(pixels, output_hidden_states=True).hidden_states[self.select])[0]
        k = ids.index(-200)
        emb = self.llm.get_input_embeddings()
        left, right = emb(torch.tensor([ids[:k]])), emb(torch.tensor([ids[k + 1:]]))
        return torch.cat([left[0], feats, right[0]])[None]

    @torch.no_grad()
    def greedy(self, ids, pixels, max_new, eos):
        x = self.embeds(ids, pixels)
        new, first = [], None
        for _ in range(max_new):  # the whole forward each step: slow, simple, exact
            logits = self.llm(inputs_embeds=x).logits[0, -1]
            if first is None:
                first = logits
            t = int(torch.argmax(logits))
            new.append(t)
            if t == eos:
                break
            x = torch.cat([x, self.llm.get_input_embeddings()(torch.tensor([[t]]))], 1)
        return new, first


def check_case(name, ours, theirs, first_ours, first_theirs, vocab):
    diff = float((first_theirs[:vocab].float() - torch.from_numpy(first_ours)).abs().max())
    scale = float(torch.from_numpy(first_ours).abs().max())
    ok = ours == theirs and diff <= LOGIT_TOL * max(1.0, scale)
    extra = first_theirs.shape[0] - vocab
    if extra:  # the added image token must never win
        ok = ok and float(first_theirs[vocab:].max()) <= float(first_theirs[:vocab].max())
    return ok, {"case": name, "tokens_equal": ours == theirs, "n_tokens": len(ours), "first_logits_max_abs_diff": diff,
                "logit_scale": scale}


def check_checkpoint(args, label, ck, vision, tok, tmp, results):
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration
    hf_dir, llava_dir = os.path.join(tmp, label + "-hf"), os.path.join(tmp, label + "-llava")
    exp = [os.path.join(args.build, "bin", "asvr-train"), "export", ck, "--vision", vision, "--log-level", "warn"]
    run(exp + ["--tokenizer", tok, hf_dir])
    run(exp + ["--format", "llava", llava_dir])
    model, info = LlavaForConditionalGeneration.from_pretrained(hf_dir, output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    results.append({"case": label + ": from_pretrained", "loading_info_problems": bad})
    ok = not bad
    cfg = model.config
    vocab = cfg.text_config.vocab_size - 1
    asvr = json.load(open(os.path.join(hf_dir, "config.json")))["asvr"]
    mean, std = asvr["vision"]["image_mean"], asvr["vision"]["image_std"]
    size = asvr["vision"]["image_size"]
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, use_fast=False)
    t_ok = tokenizer.convert_tokens_to_ids("<image>") == cfg.image_token_index and len(tokenizer) == vocab + 1
    results.append({"case": label + ": tokenizer", "image_token_in_vocabulary": t_ok})
    ok = ok and t_ok
    processor = AutoImageProcessor.from_pretrained(hf_dir)
    repo = LlavaRepoModel(llava_dir)
    eos = tokenizer.eos_token_id
    head_path = os.path.join(hf_dir, "visual_head.safetensors")
    ck_sd = load_file(os.path.join(ck, "model.safetensors"))
    if any(k.startswith("visual_head") for k in ck_sd):
        head = load_file(head_path)
        cfgh = json.load(open(os.path.join(hf_dir, "visual_head_config.json")))
        h_ok = set(head) == {k for k in ck_sd if k.startswith("visual_head")} and \
            all(np.array_equal(head[k], ck_sd[k]) for k in head) and "visual_head" in cfgh and \
            all(np.array_equal(repo.head_tensors[k].numpy(), ck_sd[k]) for k in head)
        results.append({"case": label + ": visual head", "tensors": len(head), "equal": h_ok})
        ok = ok and h_ok
    for image, q in QUESTIONS:
        path = os.path.join(G, "images", image)
        answer, logits, prompt, ids = asvr_ask(args.build + "/bin", ck, vision, tok, path, q, args.max_new,
                                               os.path.join(tmp, "logits.safetensors"))
        u8, pixels = our_pixels(args.build + "/bin", path, size, "pad", mean, std, tmp)
        # the exported image processor on Pillow's expand2square gives the same pixels
        sq = expand2square(Image.open(path).convert("RGB"), tuple(int(m * 255) for m in mean))
        pv = processor(sq, return_tensors="pt")["pixel_values"]
        p_diff = float((pv - pixels).abs().max())
        input_ids = torch.tensor([[cfg.image_token_index if t == -200 else t for t in prompt]])
        new, first = greedy_hf(model, input_ids, pixels, args.max_new, eos)
        c_ok, rec = check_case("%s hf %s" % (label, image), ids, new, logits, first, vocab)
        rec.update({"answer": answer, "processor_pixels_max_abs_diff": p_diff})
        results.append(rec)
        ok = ok and c_ok and p_diff < 1e-5
        new_l, first_l = repo.greedy(prompt, pixels, args.max_new, eos)
        c_ok, rec = check_case("%s llava %s" % (label, image), ids, new_l, logits, first_l, vocab)
        results.append(rec)
        ok = ok and c_ok
    # the export loads back into asvr-eval, tower included, with the same answer
    a_hf = asvr_ask(args.build + "/bin", hf_dir, None, tok, os.path.join(G, "images", QUESTIONS[0][0]), QUESTIONS[0][1],
                    args.max_new, os.path.join(tmp, "l2.safetensors"))
    a_ck = asvr_ask(args.build + "/bin", ck, vision, tok, os.path.join(G, "images", QUESTIONS[0][0]), QUESTIONS[0][1],
                    args.max_new, os.path.join(tmp, "l3.safetensors"))
    same = a_hf[3] == a_ck[3] and np.array_equal(a_hf[1], a_ck[1])
    results.append({"case": label + ": asvr-eval on the hf export", "equal": same})
    return ok and same


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--checkpoint", help="a checkpoint folder (run/step-N); default: the test checkpoints")
    ap.add_argument("--vision", default=os.path.join(G, "tokenize", "tiny_tokenizer.safetensors"))
    ap.add_argument("--tokenizer", default=os.path.join(G, "sp", "tiny_bpe.model"))
    ap.add_argument("--max-new", type=int, default=12)
    args = ap.parse_args()
    import transformers
    results = [{"transformers": transformers.__version__, "torch": torch.__version__}]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            ok = check_checkpoint(args, "checkpoint", args.checkpoint, args.vision, args.tokenizer, tmp, results)
        else:
            ok = check_checkpoint(args, "eval_ask", os.path.join(G, "eval_ask", "run", "step-00000150"), args.vision,
                                  args.tokenizer, tmp, results)
            # a run with the visual head (the train_cli model, stage it, a few steps)
            B = os.path.join(args.build, "bin")
            F = os.path.join(G, "train_cli")
            q = ["--log-level", "warn"]
            run([B + "/asvr-tokenize", "encode", "--json", F + "/it.json", "--image-root", G + "/images", "--tokenizer",
                 args.vision, "--policy", "pad", "--out", tmp + "/it.lmdb"] + q)
            run([B + "/asvr-pack", "build", "--template", "vicuna_v1", "--tokenizer", args.tokenizer, "--codes",
                 tmp + "/it.lmdb", "--max-len", "128", "--out", tmp + "/it.pack", F + "/it.json"] + q)
            run([B + "/asvr-train", "train", "--config", F + "/model.json", "--image-root", G + "/images", "--vision",
                 args.vision, "--codebooks", args.vision, "--rows", "2", "--accum", "1", "--stage", "it", "--packed",
                 tmp + "/it.pack", "--codes", tmp + "/it.lmdb", "--steps", "30", "--lr", "3e-3", "--out", tmp + "/run"] + q)
            ok = check_checkpoint(args, "train_cli", tmp + "/run/step-00000030", args.vision, args.tokenizer, tmp,
                                  results) and ok
    for r in results:
        print(json.dumps(r))
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
