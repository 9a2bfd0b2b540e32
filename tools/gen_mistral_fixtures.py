#!/usr/bin/env python3
"""Golden fixtures for the Llama-2-style templates (mistral_instruct, llama_2, llava_llama_2) and for
the SentencePiece tokenizer's legacy mode, in tests/golden/mistral/.

Regenerate (from the repository root; CI does not need these packages, the outputs are committed):
    python3 -m venv VENV
    VENV/bin/pip install sentencepiece transformers==4.44.0 protobuf zstandard
    VENV/bin/python tools/gen_mistral_fixtures.py [--shared-data ../shared/data]

Writes:
  tiny_mistral.model        a small SentencePiece BPE model trained here (seeded corpus of plain text
                            and [INST] conversations): byte fallback, user-defined pieces "[INST]",
                            "[/INST]", "<<SYS>>", "<</SYS>>", "<image>", "🙂", "a▁b" (spans a space)
                            and "\\n\\n", and a control piece "<ctl>"
  tiny_mistral/             the same model as tokenizer.model with a tokenizer_config.json like
                            Mistral-7B-Instruct's ("legacy": true, add_bos_token, the three added
                            special tokens): LlamaTokenizer.from_pretrained(folder) reads the flag
  sp_<model>_<mode>.json    tokenizer vectors of transformers' slow LlamaTokenizer(legacy=True|False)
                            (mode legacy / nonlegacy): ids with and without BOS, decode with and
                            without skip_special_tokens; model tiny_mistral, and llama2 in legacy mode
                            (its non-legacy vectors are tests/golden/sp/llama2.json)
  conversations.json.zst    LLaVA-format samples (single- and multi-round, with and without image,
                            digits, answers that break the reference arithmetic, long text-only ones)
  tmpl_<model>_<mode>.jsonl.zst
                            per template and sample: ids, the reference labels (LLaVA's
                            preprocess_llama_2 for the LLAMA_2 templates, preprocess_v1 for vicuna_v1,
                            implemented here from the spec), whether its length check failed, and the
                            corrected labels (every token that starts inside an assistant answer,
                            from " answer" to its "</s>", found by aligning the slow tokenizer's pieces
                            to the prompt text: an independent method from the C side's)

The llama2 files need ../shared/data/llama2-tokenizer.model (not committed); without it they are left
as they are.
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile

import sentencepiece as spm
import transformers
import zstandard
from transformers import LlamaTokenizer
from transformers.utils import sentencepiece_model_pb2_new as pb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "golden", "mistral")
sys.path.insert(0, HERE)
import gen_sp_fixtures as spf  # noqa: E402  (its corpus words and test texts)

IGNORE, IMAGE = -100, -200
MAX_LEN = 2048
SPACE = "\u2581"

# ---- templates, from LLaVA's conversation.py as the reference spec quotes it ---------------------

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAMA2_SYSTEM = ("You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
                 "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
                 "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased "
                 "and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, "
                 "explain why instead of answering something not correct. If you don't know the answer to a "
                 "question, please don't share false information.")
LLAVA_LLAMA2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual "
                       "content that the user provides, and assist the user with a variety of tasks using natural "
                       "language.")
TEMPLATES = {
    "mistral_instruct": {"style": "llama_2", "system": "", "sep": "", "sep2": "</s>"},
    "llama_2": {"style": "llama_2", "system": LLAMA2_SYSTEM, "sep": "<s>", "sep2": "</s>"},
    "llava_llama_2": {"style": "llama_2", "system": LLAVA_LLAMA2_SYSTEM, "sep": "<s>", "sep2": "</s>"},
    "vicuna_v1": {"style": "two", "system": VICUNA_SYSTEM, "sep": " ", "sep2": "</s>"},
}


def normalise_image_turns(conv):
    out = []
    for t in conv:
        v = t["value"]
        if "<image>" in v:
            v = v.replace("<image>", "").strip()
            v = ("<image>\n" + v).strip()
        out.append({"from": t["from"], "value": v})
    return out


def build_prompt(tpl, conv):
    """The prompt, plus (start, end) character spans of each assistant answer: from the text after
    the instruction marker ("[/INST]", "ASSISTANT:") to the end of its "</s>"."""
    roles = {"human": 0, "gpt": 1}
    if conv and roles[conv[0]["from"]] != 0:
        conv = conv[1:]
    for j, t in enumerate(conv):
        assert roles[t["from"]] == j % 2, "turns must alternate"
    spans = []
    if tpl["style"] == "two":
        ret = tpl["system"] + tpl["sep"]
        for j, t in enumerate(conv):
            role = ("USER", "ASSISTANT")[j % 2]
            if t["value"]:
                ret += role + ":"
                start = len(ret)
                ret += " " + t["value"] + (tpl["sep"] if j % 2 == 0 else tpl["sep2"])
                if j % 2 == 1:
                    spans.append((start, len(ret)))
            else:
                ret += role + ":"
        return ret, spans
    # LLAMA_2
    ret = ""
    for j, t in enumerate(conv):
        msg = t["value"]
        if j == 0:
            assert msg, "first message should not be empty"
        if not msg:
            continue
        if j == 0 and tpl["system"]:
            msg = "<<SYS>>\n" + tpl["system"] + "\n<</SYS>>\n\n" + msg
        if j % 2 == 0:
            ret += tpl["sep"] + "[INST] " + msg + " [/INST]"
        else:
            start = len(ret)
            ret += " " + msg + " " + tpl["sep2"]
            spans.append((start, len(ret)))
    strip = ret.lstrip(tpl["sep"]) if tpl["sep"] else ret  # Python's lstrip with a character set
    cut = len(ret) - len(strip)
    return strip, [(a - cut, b - cut) for a, b in spans]


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


def reference_labels(tok, tpl, prompt, ids, has_image):
    """preprocess_llama_2 / preprocess_v1 round arithmetic (reference/data_and_eval.md §A2.6,
    reference/scaleout_highres.md §1.6), on ids already made."""
    T = (lambda s: image_tokens(tok, s)) if has_image else (lambda s: tok(s).input_ids)
    labels = list(ids)
    total = sum(1 for x in ids if x != tok.pad_token_id)
    if tpl["style"] == "two":
        sep = tpl["sep"] + "ASSISTANT: "
    else:
        sep = "[/INST] "
    cur = 1
    labels[:1] = [IGNORE] * min(1, len(labels))
    for i, r in enumerate(prompt.split(tpl["sep2"])):
        if r == "":
            break
        parts = r.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(T(r))
        inst_len = len(T(parts[0])) - 2
        if tpl["style"] == "two" and i != 0 and not tok.legacy:  # preprocess_v1 only
            round_len -= 1
            inst_len -= 1
        for k in range(max(cur, 0), max(min(cur + inst_len, len(labels)), 0)):
            labels[k] = IGNORE
        cur += round_len
    for k in range(min(cur, len(labels)), len(labels)):
        labels[k] = IGNORE
    mismatch = False
    if cur < MAX_LEN and cur != total:
        labels = [IGNORE] * len(labels)
        mismatch = True
    return labels, mismatch


def token_starts(tok, text, ids):
    """Character offset in text where each of ids (tok(text).input_ids, BOS first) starts, found by
    walking the pieces along the text; None for BOS. A dummy-prefix "▁" consumes no text."""
    specials = {tok.bos_token_id: tok.bos_token, tok.eos_token_id: tok.eos_token, tok.unk_token_id: tok.unk_token}
    data = text.encode("utf-8")
    starts, pos = [], 0
    for k, i in enumerate(ids):
        if k == 0 and i == tok.bos_token_id:
            starts.append(None)
            continue
        starts.append(pos)
        piece = tok.convert_ids_to_tokens(i)
        if i in specials and data[pos:pos + len(specials[i].encode())] == specials[i].encode():
            pos += len(specials[i].encode())
            continue
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            assert data[pos] == int(piece[3:5], 16), (text, piece, pos)
            pos += 1
            continue
        for ch in piece:
            if ch == SPACE:
                if data[pos:pos + 1] == b" ":
                    pos += 1
                elif data[pos:pos + 3] == SPACE.encode():
                    pos += 3
                # else: the dummy prefix, no text
            else:
                b = ch.encode()
                assert data[pos:pos + len(b)] == b, (text, piece, pos, data[pos:pos + 10])
                pos += len(b)
    assert pos == len(data), (text, pos, len(data))
    # bytes -> characters
    char_at = []  # byte offset -> the character that holds it (byte pieces split characters)
    for ci, ch in enumerate(text):
        char_at += [ci] * len(ch.encode())
    char_at.append(len(text))
    return [None if s is None else char_at[s] for s in starts]


def corrected_labels(tok, prompt, spans, ids, has_image):
    """Every token that starts inside an answer span is supervised, the rest masked."""
    starts = []
    if has_image:
        chunks = prompt.split("<image>")
        base = 0
        for k, c in enumerate(chunks):
            cid = tok(c).input_ids
            st = token_starts(tok, c, cid)
            if k == 0:
                starts.append(None)
            starts.extend(base + s for s in st[1:])
            base += len(c)
            if k < len(chunks) - 1:
                starts.append(base)  # the image
                base += len("<image>")
    else:
        full = tok(prompt).input_ids
        starts = token_starts(tok, prompt, full)
    starts = starts[:len(ids)]
    labels = []
    for i, s in zip(ids, starts):
        sup = i != IMAGE and s is not None and any(a <= s < b for a, b in spans)
        labels.append(i if sup else IGNORE)
    return labels


def apply(tok, tpl, sample):
    has_image = "image" in sample
    conv = normalise_image_turns(sample["conversations"]) if has_image else sample["conversations"]
    prompt, spans = build_prompt(tpl, conv)
    if has_image:
        ids = image_tokens(tok, prompt)
    else:
        ids = tok(prompt, truncation=True, max_length=MAX_LEN).input_ids
    labels, mismatch = reference_labels(tok, tpl, prompt, ids, has_image)
    corr = corrected_labels(tok, prompt, spans, ids, has_image)
    return {"ids": ids, "labels": labels, "mismatch": mismatch, "labels_corrected": corr}


# ---- samples ------------------------------------------------------------------------------------

WORDS = spf.WORDS


def sentence(rng, lo=3, hi=14):
    ws = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    if rng.random() < 0.2:
        ws.insert(rng.randint(0, len(ws)), rng.choice(spf.EXTRA))
    s = " ".join(ws)
    return s[0].upper() + s[1:] + rng.choice([".", "?", "", "!"])


def answer(rng):
    r = rng.random()
    if r < 0.15:
        return str(rng.randint(0, 99))
    if r < 0.25:
        return rng.choice(["Yes", "No"])
    if r < 0.3:
        return "\n".join(sentence(rng) for _ in range(rng.randint(2, 3)))
    if r < 0.33:
        return "  " + sentence(rng) + "  "
    if r < 0.36:
        return "a b 🙂 [INST] inside"  # user-defined pieces in an answer (tiny model)
    return " ".join(sentence(rng) for _ in range(rng.randint(1, 3)))


def make_samples(n, seed=4321):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rounds = rng.choice([1, 1, 2, 2, 3, 4])
        has_image = rng.random() < 0.75
        conv = []
        if rng.random() < 0.03:
            conv.append({"from": "gpt", "value": "A leading answer that the template drops."})
        for r in range(rounds):
            q = sentence(rng)
            if has_image and r == 0:
                w = rng.random()
                q = "<image>\n" + q if w < 0.6 else (q + "\n<image>" if w < 0.9 else q + " <image> ")
            conv.append({"from": "human", "value": q})
            conv.append({"from": "gpt", "value": answer(rng)})
        s = {"id": i if rng.random() < 0.4 else "s%06d" % i, "conversations": conv}
        if has_image:
            s["image"] = "sub/dir%d/%06d.jpg" % (i % 3, i)
        if rng.random() < 0.02:  # long text-only: truncated at 2048 ids
            s.pop("image", None)
            for c in s["conversations"]:
                c["value"] = c["value"].replace("<image>", "")
            s["conversations"][-1]["value"] = " ".join(sentence(rng, 20, 40) for _ in range(120))
        out.append(s)
    img = lambda q: "<image>\n" + q  # noqa: E731
    out += [
        {"id": "bus", "image": "coco/train2017/000000033471.jpg", "conversations": [
            {"from": "human", "value": img("What are the colors of the bus in the image?")},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
        {"id": "digits", "image": "x.jpg", "conversations": [
            {"from": "human", "value": img("How many?")}, {"from": "gpt", "value": "2"},
            {"from": "human", "value": "And now?"}, {"from": "gpt", "value": "3"}]},
        {"id": "inst-in-answer", "image": "y.jpg", "conversations": [
            {"from": "human", "value": img("Quote the log.")},
            {"from": "gpt", "value": "It says [INST] hi [/INST] hello there."}]},
        {"id": "eos-in-question", "conversations": [
            {"from": "human", "value": "What does </s> mean?"}, {"from": "gpt", "value": "It ends a sequence."},
            {"from": "human", "value": "And <s>?"}, {"from": "gpt", "value": "It starts one."}]},
        {"id": "text-only-3", "conversations": [
            {"from": "human", "value": "One"}, {"from": "gpt", "value": "Two"},
            {"from": "human", "value": "Three"}, {"from": "gpt", "value": "Four"},
            {"from": "human", "value": "Five"}, {"from": "gpt", "value": "Six"}]},
    ]
    return out


# ---- the tiny model --------------------------------------------------------------------------------

def train_tiny(tmp):
    rng = random.Random(2718)
    lines = spf.corpus(rng, 3000)
    for _ in range(600):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7)))
        lines.append("[INST] " + q + " [/INST] " + a)
    text = os.path.join(tmp, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    prefix = os.path.join(tmp, "tiny_mistral")
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=prefix, model_type="bpe", vocab_size=800, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, num_threads=1, shuffle_input_sentence=False, seed_sentencepiece_size=100000,
        character_coverage=0.9995, max_sentencepiece_length=16, minloglevel=2,
        user_defined_symbols=["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<image>", "🙂", "a▁b", "\n\n"],
        control_symbols=["<ctl>"])
    m = pb.ModelProto()
    with open(prefix + ".model", "rb") as f:
        m.ParseFromString(f.read())
    del m.trainer_spec.input[:]
    m.trainer_spec.input.append("corpus.txt")  # no temporary paths in the committed file
    m.trainer_spec.model_prefix = "tiny_mistral"
    return m.SerializeToString()


TOKENIZER_CONFIG = {  # the keys and values of Mistral-7B-Instruct-v0.2's tokenizer_config.json
    "add_bos_token": True,
    "add_eos_token": False,
    "added_tokens_decoder": {
        str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": True} for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"))},
    "additional_special_tokens": [],
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "legacy": True,
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": None,
    "sp_model_kwargs": {},
    "spaces_between_special_tokens": False,
    "tokenizer_class": "LlamaTokenizer",
    "unk_token": "<unk>",
    "use_default_system_prompt": False,
}


# ---- tokenizer vectors -----------------------------------------------------------------------------

def tok_texts():
    t = spf.texts(False)
    t += ["[INST] hi [/INST]", "[INST] <image>\nWhat is this? [/INST] A bus. </s>[INST] And? [/INST] 2 </s>",
          "<s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nq [/INST] a </s><s>[INST] q2 [/INST]", "a b", "xa by", "a  b",
          "🙂🙂", "\n\n\n", " \n\n", "<ctl>", "x<ctl>y", "[/INST]", " [INST]", "</s>[INST]", "</s> [INST]",
          "</s>  x", "<s> <s>", "[INST][/INST]", "<image>", "a<image>b"]
    return t


def decode_lists(n_vocab):
    rng = random.Random(11)
    lists = [[], [1], [2], [0], [1, 2], [3, 4, 5], [4, 2, 4], [1, 4, 2, 1, 5]]
    for _ in range(40):
        lists.append([rng.randrange(n_vocab) for _ in range(rng.randint(1, 10))])
    return lists


def tok_golden(model_path, legacy):
    tok = LlamaTokenizer(model_path, legacy=legacy)
    cases = []
    for text in tok_texts():
        ids_bos = tok(text).input_ids
        cases.append({"text": text, "ids_bos": ids_bos, "ids": tok(text, add_special_tokens=False).input_ids,
                      "decode": tok.decode(ids_bos), "decode_skip": tok.decode(ids_bos, skip_special_tokens=True)})
    decodes = [{"ids": l, "decode": tok.decode(l), "decode_skip": tok.decode(l, skip_special_tokens=True)}
               for l in decode_lists(tok.vocab_size)]
    return {"model": os.path.basename(model_path), "legacy": legacy,
            "generator": "tools/gen_mistral_fixtures.py, sentencepiece %s, transformers %s" % (
                spm.__version__, transformers.__version__),
            "cases": cases, "decodes": decodes}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (os.path.relpath(path, ROOT), os.path.getsize(path)))


def template_golden(model_path, legacy, samples, out_path):
    tok = LlamaTokenizer(model_path, legacy=legacy)
    tok.pad_token = tok.unk_token
    lines, stats = [], {}
    for name, tpl in TEMPLATES.items():
        for idx, s in enumerate(samples):
            r = apply(tok, tpl, s)
            st = stats.setdefault(name, [0, 0, 0])
            st[0] += 1
            st[1] += r["mismatch"]
            st[2] += r["labels"] != r["labels_corrected"] and not r["mismatch"]
            lines.append(json.dumps(dict(template=name, index=idx, **r)))
    with open(out_path, "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(("\n".join(lines) + "\n").encode()))
    print("wrote %s (%d bytes); per template [samples, reference masked out, differ otherwise]: %s" % (
        os.path.relpath(out_path, ROOT), os.path.getsize(out_path), json.dumps(stats)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--n", type=int, default=160)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = train_tiny(tmp)
    tiny = os.path.join(OUT, "tiny_mistral.model")
    with open(tiny, "wb") as f:
        f.write(data)
    folder = os.path.join(OUT, "tiny_mistral")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(tiny, os.path.join(folder, "tokenizer.model"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    # The folder's config is honoured by transformers: from_pretrained gives the legacy tokenizer.
    hf = LlamaTokenizer.from_pretrained(folder)
    assert hf.legacy is True
    probe = "[INST] a </s>[INST] b"
    assert hf(probe).input_ids == LlamaTokenizer(tiny, legacy=True)(probe).input_ids
    assert hf(probe).input_ids != LlamaTokenizer(tiny, legacy=False)(probe).input_ids

    samples = make_samples(args.n)
    conv = os.path.join(OUT, "conversations.json.zst")
    with open(conv, "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(json.dumps(samples, ensure_ascii=False, indent=1).encode()))
    print("wrote %s (%d bytes)" % (os.path.relpath(conv, ROOT), os.path.getsize(conv)))
    models = [("tiny_mistral", tiny)]
    llama = os.path.join(args.shared_data, "llama2-tokenizer.model")
    if os.path.exists(llama):
        models.append(("llama2", llama))
    else:
        print("%s absent: the llama2 files are not regenerated" % llama, file=sys.stderr)
    for name, path in models:
        for legacy in (False, True):
            mode = "legacy" if legacy else "nonlegacy"
            if not (name == "llama2" and not legacy):  # tests/golden/sp/llama2.json has those
                write_json(os.path.join(OUT, "sp_%s_%s.json" % (name, mode)), tok_golden(path, legacy))
            template_golden(path, legacy, samples, os.path.join(OUT, "tmpl_%s_%s.jsonl.zst" % (name, mode)))


if __name__ == "__main__":
    main()
