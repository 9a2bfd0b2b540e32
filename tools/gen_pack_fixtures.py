#!/usr/bin/env python3
"""Golden fixtures for the LLaVA templates and label masking (asvr-pack).

Writes tests/golden/pack/conversations.json.zst (LLaVA-format input: >= 1000 varied samples) and
tests/golden/pack/expected_llama2.jsonl.zst (per sample: ids and labels). The expected side is an
independent Python implementation of the reference preprocessing (reference/data_and_eval.md §A2:
preprocess_multimodal, the conv_vicuna_v1 / plain prompts, tokenizer_image_token, the preprocess_v1
round arithmetic), tokenizing with HF transformers' slow LlamaTokenizer(legacy=False) over the
Llama-2 tokenizer.model, as Vicuna-7B-v1.5 does.

    pip install transformers sentencepiece protobuf zstandard
    python3 tools/gen_pack_fixtures.py [--model ../shared/data/llama2-tokenizer.model] [--bench N]

--bench N also times this reference preprocessing over N samples (for the speed comparison).
"""
import argparse
import json
import os
import random
import sys
import time

import zstandard
from transformers import LlamaTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "golden", "pack")
IGNORE, IMAGE = -100, -200
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
MAX_LEN = 2048


# ---- the reference preprocessing, from the spec --------------------------------------------------

def normalise_image_turns(conv):
    out = []
    for t in conv:
        v = t["value"]
        if "<image>" in v:
            v = v.replace("<image>", "").strip()
            v = ("<image>\n" + v).strip()
        out.append({"from": t["from"], "value": v})
    return out


def image_tokens(tok, prompt):
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    out, off = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        off = 1
        out.append(chunks[0][0])
    for k, c in enumerate(chunks):
        out.extend(c[off:])
        if k < len(chunks) - 1:
            out.append(IMAGE)
    return out


def vicuna_prompt(conv):
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if conv and roles[conv[0]["from"]] != "USER":
        conv = conv[1:]
    ret = SYSTEM + " "
    for j, t in enumerate(conv):
        role = roles[t["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2], "turns must alternate"
        if t["value"]:
            ret += role + ": " + t["value"] + (" " if j % 2 == 0 else "</s>")
        else:
            ret += role + ":"
    return ret


def preprocess_v1(tok, sample):
    has_image = "image" in sample
    conv = normalise_image_turns(sample["conversations"]) if has_image else sample["conversations"]
    prompt = vicuna_prompt(conv)
    if has_image:
        ids = image_tokens(tok, prompt)
    else:
        ids = tok(prompt, truncation=True, max_length=MAX_LEN).input_ids
    T = (lambda s: image_tokens(tok, s)) if has_image else (lambda s: tok(s).input_ids)
    labels = list(ids)
    total = sum(1 for x in ids if x != tok.pad_token_id)
    sep = " ASSISTANT: "
    cur = 1
    labels[:cur] = [IGNORE] * min(cur, len(labels))
    for i, r in enumerate(prompt.split("</s>")):
        if r == "":
            break
        parts = r.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(T(r))
        inst_len = len(T(parts[0])) - 2
        if i != 0:  # legacy=False with tokenizers >= 0.14
            round_len -= 1
            inst_len -= 1
        a, b = max(cur, 0), max(min(cur + inst_len, len(labels)), 0)
        for k in range(a, b):
            labels[k] = IGNORE
        cur += round_len
    for k in range(min(cur, len(labels)), len(labels)):
        labels[k] = IGNORE
    mismatch = False
    if cur < MAX_LEN and cur != total:
        labels = [IGNORE] * len(labels)
        mismatch = True
    return ids, labels, mismatch


def preprocess_plain(tok, sample):
    conv = normalise_image_turns(sample["conversations"])
    assert len(conv) == 2 and "<image>" in conv[0]["value"]
    text = "<image>" + conv[1]["value"] + "\n"
    ids = image_tokens(tok, text)
    labels = list(ids)
    n = len(image_tokens(tok, "<image>"))
    labels[:n] = [IGNORE] * n
    return ids, labels, False


# ---- varied conversations ------------------------------------------------------------------------

WORDS = ("the a bus cat dog red blue green image picture photo shows there is are two three man woman "
         "street table window sky tree car left right top bottom small large wooden metal people "
         "standing sitting holding looking near behind front of on in with and while").split()
UNICODE = ["café", "naïve", "Ångström", "東京タワー", "北京", "한국어", "emoji 🚌🙂", "🐈‍⬛", "Ελληνικά",
           "ß", "ﬁ", "—", "“quoted”", "x²", "½", "\u00a0nbsp", "tab\there", "zero\u200bwidth", "ℓ"]
QUESTIONS = ["What are the colors of the bus in the image?", "How many people are there?",
             "What is the man holding?", "Is there a dog in the picture?", "Describe the image in detail.",
             "What feature can be seen on the back of the bus?", "Where is the cat sitting?",
             "What time of day is it?", "Answer with a single word: what color is the car?"]


def sentence(rng, lo=3, hi=20):
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    if rng.random() < 0.25:
        words.insert(rng.randint(0, len(words)), rng.choice(UNICODE))
    if rng.random() < 0.15:
        words.append(str(rng.randint(0, 10000)))
    s = " ".join(words)
    s = s[0].upper() + s[1:] + rng.choice([".", "?", "!", "", "..."])
    return s


def answer(rng):
    r = rng.random()
    if r < 0.15:
        return str(rng.randint(0, 99))  # digit answers: the standalone "▁" is supervised
    if r < 0.25:
        return rng.choice(["Yes", "No", "yes", "no"])
    if r < 0.30:
        return "\n".join(sentence(rng) for _ in range(rng.randint(2, 4)))  # newlines
    if r < 0.33:
        return "  " + sentence(rng) + "   "  # whitespace runs
    if r < 0.36:
        return " ".join(sentence(rng, 10, 30) for _ in range(rng.randint(20, 60)))  # long
    return " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))


def make_samples(n, seed=1234):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.random()
        sid = i if rng.random() < 0.3 else "%012d" % rng.randint(0, 10**9)
        if kind < 0.2:  # stage pt: plain
            instr = rng.choice(["Render a clear and concise summary of the photo.", "Describe the image briefly.",
                                "Give a short caption.", "What is in the picture?"])
            first = instr + "\n<image>" if rng.random() < 0.5 else "<image>\n" + instr
            out.append({"template": "plain", "sample": {
                "id": sid, "image": "%05d/%09d.jpg" % (i % 700, i),
                "conversations": [{"from": "human", "value": first},
                                  {"from": "gpt", "value": sentence(rng, 3, 25)}]}})
            continue
        rounds = rng.choice([1, 1, 2, 2, 3, 4, 6])
        has_image = rng.random() < 0.8
        conv = []
        if rng.random() < 0.03:
            conv.append({"from": "gpt", "value": "A leading answer that the template drops."})
        for r in range(rounds):
            q = rng.choice(QUESTIONS) if rng.random() < 0.5 else sentence(rng)
            if has_image and r == 0:
                where = rng.random()
                q = "<image>\n" + q if where < 0.6 else (q + "\n<image>" if where < 0.9 else q + " <image> ")
            conv.append({"from": "human", "value": q})
            conv.append({"from": "gpt", "value": answer(rng)})
        s = {"id": sid, "conversations": conv}
        if has_image:
            s["image"] = "coco/train2017/%012d.jpg" % rng.randint(0, 10**6)
        if rng.random() < 0.02:  # very long text-only samples: truncated at 2048 ids
            s.pop("image", None)
            for c in s["conversations"]:
                c["value"] = c["value"].replace("<image>", "")
            s["conversations"][-1]["value"] = " ".join(sentence(rng, 20, 40) for _ in range(150))
        out.append({"template": "vicuna_v1", "sample": s})
    # The reference vectors of §A2.9 as explicit cases.
    out.append({"template": "vicuna_v1", "sample": {
        "id": "000000033471", "image": "coco/train2017/000000033471.jpg",
        "conversations": [{"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
                          {"from": "gpt", "value": "The bus in the image is white and red."},
                          {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                          {"from": "gpt", "value": "The back of the bus features an advertisement."}]}})
    out.append({"template": "vicuna_v1", "sample": {
        "id": "digits", "image": "x.jpg",
        "conversations": [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "2"}]}})
    # Samples the reference's round arithmetic gets wrong (the whole sample is masked out).
    out.append({"template": "vicuna_v1", "sample": {
        "id": "sep-in-answer", "image": "y.jpg",
        "conversations": [{"from": "human", "value": "<image>\nQuote the log."},
                          {"from": "gpt", "value": "It says USER: hi ASSISTANT: hello there."}]}})
    out.append({"template": "vicuna_v1", "sample": {
        "id": "eos-in-question",
        "conversations": [{"from": "human", "value": "What does </s> mean?"},
                          {"from": "gpt", "value": "It ends a sequence."},
                          {"from": "human", "value": "And <s>?"},
                          {"from": "gpt", "value": "It starts one."}]}})
    out.append({"template": "vicuna_v1", "sample": {
        "id": "unk-literal",
        "conversations": [{"from": "human", "value": "Say <unk> please."},
                          {"from": "gpt", "value": "<unk>"}]}})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "..", "shared", "data", "llama2-tokenizer.model"))
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--bench", type=int, default=0)
    args = ap.parse_args()
    tok = LlamaTokenizer(args.model, legacy=False)
    tok.pad_token = tok.unk_token
    items = make_samples(args.n)
    if args.bench:
        work = (items * (args.bench // len(items) + 1))[:args.bench]
        t0 = time.perf_counter()
        for it in work:
            (preprocess_plain if it["template"] == "plain" else preprocess_v1)(tok, it["sample"])
        dt = time.perf_counter() - t0
        print(json.dumps({"samples": len(work), "seconds": dt, "samples_per_s": len(work) / dt}))
        return
    os.makedirs(OUT, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=19)
    samples = {"plain": [], "vicuna_v1": []}
    for it in items:
        samples[it["template"]].append(it["sample"])
    expected = []
    for name, lst in samples.items():
        with open(os.path.join(OUT, "%s.json.zst" % name), "wb") as f:
            f.write(cctx.compress(json.dumps(lst, ensure_ascii=False, indent=1).encode()))
        fn = preprocess_plain if name == "plain" else preprocess_v1
        for i, s in enumerate(lst):
            ids, labels, mismatch = fn(tok, s)
            expected.append({"template": name, "index": i, "ids": ids, "labels": labels, "mismatch": mismatch})
    with open(os.path.join(OUT, "expected_llama2.jsonl.zst"), "wb") as f:
        f.write(cctx.compress("".join(json.dumps(e) + "\n" for e in expected).encode()))
    print("wrote %d samples (%d plain, %d vicuna_v1), %d mismatches" % (
        len(expected), len(samples["plain"]), len(samples["vicuna_v1"]), sum(e["mismatch"] for e in expected)))


if __name__ == "__main__":
    sys.exit(main())
