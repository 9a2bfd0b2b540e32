#!/usr/bin/env python3
"""Golden fixtures for the LLaVA templates and label masking (asvr-pack).

Writes tests/golden/pack/{plain,vicuna_v1}.json.zst (LLaVA-format input: >= 1000 varied samples) and
tests/golden/pack/expected_llama2.jsonl.zst (per sample: ids and labels). The expected side is an
independent Python implementation of the reference preprocessing (reference/data_and_eval.md §A2:
preprocess_multimodal, the conv_vicuna_v1 / plain prompts, tokenizer_image_token, the preprocess_v1
round arithmetic), tokenizing with HF transformers' slow LlamaTokenizer(legacy=False) over the
Llama-2 tokenizer.model, as Vicuna-7B-v1.5 does.

It also writes the edge cases of tests/golden/pack/edge_{plain,vicuna_v1}.json with
expected_edge_llama2.jsonl.zst: what the reference model finally trains on (§A2.7: the collator cuts
ids and labels to 2048 and masks ids equal to the pad id, unk = 0; prepare_inputs_labels_for_multimodal
keeps only the unmasked positions, puts the image's 729 feature rows at -200 and cuts to 2048), or
"error" where the reference's preprocessing raises (an empty conversation, a plain sample without
<image>): literal <unk> in the text, an image without <image>, long samples, a leading gpt turn.

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
    if roles[conv[0]["from"]] != "USER":  # as the reference: an empty conversation raises IndexError
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
    assert len(conv) == 2
    assert "<image>" in conv[0]["value"]
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


# ---- edge cases: what the reference model trains on ------------------------------------------------

IMAGE_POSITIONS = 729


def reference_model_view(tok, ids, labels):
    """The collator (cut to model_max_length, attention_mask = ids != pad) and
    prepare_inputs_labels_for_multimodal (keep the unmasked positions, one feature row per image
    position at -200 with label -100, cut to model_max_length)."""
    ids, labels = ids[:MAX_LEN], labels[:MAX_LEN]
    keep = [k for k, x in enumerate(ids) if x != tok.pad_token_id]
    ids, labels = [ids[k] for k in keep], [labels[k] for k in keep]
    out_ids, out_labels = [], []
    for x, y in zip(ids, labels):
        if x == IMAGE:
            out_ids += [IMAGE] * IMAGE_POSITIONS
            out_labels += [IGNORE] * IMAGE_POSITIONS
        else:
            out_ids.append(x)
            out_labels.append(y)
    return out_ids[:MAX_LEN], out_labels[:MAX_LEN]


def make_edge_samples():
    rng = random.Random(99)
    long_text = " ".join(sentence(rng, 20, 40) for _ in range(150))  # > 2048 tokens
    unk_run = " ".join(["<unk>"] * 1500)
    v = [
        {"id": "unk-question-image", "image": "e/0.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat does <unk> mean here?"},
                           {"from": "gpt", "value": "An unknown token."}]},
        {"id": "unk-answer-text",
         "conversations": [{"from": "human", "value": "Print the pad piece."},
                           {"from": "gpt", "value": "Here: <unk><unk> and a<unk>b."}]},
        {"id": "empty", "image": "e/2.jpg", "conversations": []},
        {"id": "empty-text", "conversations": []},
        {"id": "image-no-placeholder", "image": "e/4.jpg",
         "conversations": [{"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "A bus."},
                           {"from": "human", "value": "Which colour?"}, {"from": "gpt", "value": "Red."}]},
        {"id": "image-no-placeholder-long", "image": "e/5.jpg",
         "conversations": [{"from": "human", "value": "Tell me everything."}, {"from": "gpt", "value": long_text}]},
        {"id": "text-long", "conversations": [{"from": "human", "value": "Tell me everything."},
                                              {"from": "gpt", "value": long_text}]},
        {"id": "image-in-leading-gpt-turn", "image": "e/7.jpg",
         "conversations": [{"from": "gpt", "value": "<image>\nA leading turn."},
                           {"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]},
        {"id": "leading-gpt-only", "conversations": [{"from": "gpt", "value": "Nothing else."}]},
        {"id": "unk-run-image-long", "image": "e/9.jpg",
         "conversations": [{"from": "human", "value": "<image>\n" + unk_run + " Summarise."},
                           {"from": "gpt", "value": long_text}]},
        {"id": "unk-no-placeholder", "image": "e/10.jpg",
         "conversations": [{"from": "human", "value": "Say <unk>."}, {"from": "gpt", "value": "<unk>"}]},
        {"id": "plain-control-v1", "image": "e/11.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]},
    ]
    p = [
        {"id": "plain-unk", "image": "p/0.jpg",
         "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                           {"from": "gpt", "value": "A <unk> on a table<unk>."}]},
        {"id": "plain-empty", "image": "p/1.jpg", "conversations": []},
        {"id": "plain-no-placeholder", "image": "p/2.jpg",
         "conversations": [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "A dog."}]},
        {"id": "plain-control", "image": "p/3.jpg",
         "conversations": [{"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "Two cats."}]},
        {"id": "plain-long", "image": "p/4.jpg",
         "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": long_text}]},
    ]
    return {"plain": p, "vicuna_v1": v}


def write_edge(tok, out_dir, cctx):
    expected = []
    for name, lst in make_edge_samples().items():
        with open(os.path.join(out_dir, "edge_%s.json" % name), "w") as f:
            f.write(json.dumps(lst, ensure_ascii=False, indent=1) + "\n")
        fn = preprocess_plain if name == "plain" else preprocess_v1
        for i, s in enumerate(lst):
            e = {"template": name, "index": i, "id": s["id"]}
            try:
                ids, labels, mismatch = fn(tok, s)
            except (IndexError, AssertionError) as ex:
                e["error"] = type(ex).__name__
                expected.append(e)
                continue
            mids, mlabels = reference_model_view(tok, ids, labels)
            e.update({"ids": ids, "labels": labels, "mismatch": mismatch, "model_ids": mids, "model_labels": mlabels,
                      "image_rows": sum(1 for x in ids if x == IMAGE)})
            expected.append(e)
    with open(os.path.join(out_dir, "expected_edge_llama2.jsonl.zst"), "wb") as f:
        f.write(cctx.compress("".join(json.dumps(e) + "\n" for e in expected).encode()))
    print("wrote %d edge samples (%d errors)" % (len(expected), sum("error" in e for e in expected)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "..", "shared", "data", "llama2-tokenizer.model"))
    ap.add_argument("--out", default=OUT)
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
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    cctx = zstandard.ZstdCompressor(level=19)
    write_edge(tok, out_dir, cctx)
    samples = {"plain": [], "vicuna_v1": []}
    for it in items:
        samples[it["template"]].append(it["sample"])
    expected = []
    for name, lst in samples.items():
        with open(os.path.join(out_dir, "%s.json.zst" % name), "wb") as f:
            f.write(cctx.compress(json.dumps(lst, ensure_ascii=False, indent=1).encode()))
        fn = preprocess_plain if name == "plain" else preprocess_v1
        for i, s in enumerate(lst):
            ids, labels, mismatch = fn(tok, s)
            expected.append({"template": name, "index": i, "ids": ids, "labels": labels, "mismatch": mismatch})
    with open(os.path.join(out_dir, "expected_llama2.jsonl.zst"), "wb") as f:
        f.write(cctx.compress("".join(json.dumps(e) + "\n" for e in expected).encode()))
    print("wrote %d samples (%d plain, %d vicuna_v1), %d mismatches" % (
        len(expected), len(samples["plain"]), len(samples["vicuna_v1"]), sum(e["mismatch"] for e in expected)))


if __name__ == "__main__":
    sys.exit(main())
