#!/usr/bin/env python3
"""Generates the SentencePiece tokenizer fixtures in tests/golden/sp/.

Regenerate (from the repository root):
    python3 -m venv VENV
    VENV/bin/pip install sentencepiece transformers==4.44.0 protobuf   # no torch needed
    VENV/bin/python tools/gen_sp_fixtures.py [--shared-data ../shared/data]

Writes:
  tiny_bpe.model        a small BPE model (byte fallback, one user-defined piece), trained here with
                        sentencepiece on a corpus this script generates (seeded, deterministic)
  tiny_bpe_nobf.model   the same corpus, smaller vocabulary, no byte fallback (unknowns -> <unk>)
  tiny_bpe_rmws.model   tiny_bpe.model with normalizer_spec.remove_extra_whitespaces = true
  tiny_bpe_xws.model    tiny_bpe.model plus pieces that span a space ("e▁t"), top score
  tiny_bpe_unused.model tiny_bpe.model with about one merged piece in eight typed UNUSED
  <name>.json           golden vectors per model: for every text, the ids of HF's slow
                        LlamaTokenizer(model, legacy=False) with BOS (tok(text).input_ids) and without
                        (add_special_tokens=False), plain sentencepiece ids (model's own normalizer
                        settings), and tok.decode(...) with and without skip_special_tokens
  llama2.json           the same for ../shared/data/llama2-tokenizer.model (when present; the model
                        itself is not committed)

The transformers version matters: the reference pipeline pins 4.44.0 (and LLaVA 4.37.2, same
LlamaTokenizer code path for legacy=False).
"""
import argparse
import json
import os
import random
import sys
import tempfile

import sentencepiece as spm
from transformers.utils import sentencepiece_model_pb2_new as pb  # the module LlamaTokenizer itself uses
import transformers
from transformers import LlamaTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "sp")

WORDS = ("the a of and to in is was for on that with as by at from this be are it an or which "
         "image picture photo cat dog bus red white blue green man woman street car tree sky water "
         "what where how many is there describe answer question assistant user system chat helpful "
         "detailed polite curious artificial intelligence people sitting standing holding table "
         "running building window train airplane kitchen pizza umbrella horse sheep elephant").split()
EXTRA = ["café", "naïve", "résumé", "über", "Straße", "façade", "niño", "東京", "日本語", "中文",
         "猫", "你好", "こんにちは", "Привет", "мир", "Ελληνικά", "😀", "🚌", "42", "2024", "3.14",
         "1,000", "x²", "#tag", "@user", "e-mail", "(yes)", "[no]", "{ok}", "\"quote\"", "it's"]


def corpus(rng, n_lines=4000):
    lines = []
    for _ in range(n_lines):
        k = rng.randint(3, 18)
        ws = []
        for _ in range(k):
            ws.append(rng.choice(EXTRA) if rng.random() < 0.08 else rng.choice(WORDS))
        s = " ".join(ws)
        if rng.random() < 0.5:
            s = s[0].upper() + s[1:]
        s += rng.choice([".", "?", "!", ",", ":", ""])
        lines.append(s)
    return lines


def train_tiny(tmp):
    rng = random.Random(1234)
    text = os.path.join(tmp, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n".join(corpus(rng)) + "\n")
    common = dict(input=text, model_type="bpe", normalization_rule_name="identity",
                  remove_extra_whitespaces=False, add_dummy_prefix=True, split_digits=True,
                  num_threads=1, shuffle_input_sentence=False, seed_sentencepiece_size=100000,
                  character_coverage=0.9995, max_sentencepiece_length=16, minloglevel=2)
    prefix = os.path.join(tmp, "tiny_bpe")
    spm.SentencePieceTrainer.train(model_prefix=prefix, vocab_size=700, byte_fallback=True,
                                   user_defined_symbols=["<sep>"], **common)
    prefix_nobf = os.path.join(tmp, "tiny_bpe_nobf")
    spm.SentencePieceTrainer.train(model_prefix=prefix_nobf, vocab_size=300, byte_fallback=False,
                                   **common)
    out = {}
    for name, p in (("tiny_bpe", prefix), ("tiny_bpe_nobf", prefix_nobf)):
        m = pb.ModelProto()
        with open(p + ".model", "rb") as f:
            m.ParseFromString(f.read())
        # no temporary paths in the committed file (and the same bytes on every run)
        del m.trainer_spec.input[:]
        m.trainer_spec.input.append("corpus.txt")
        m.trainer_spec.model_prefix = name
        out[name] = m.SerializeToString()
    m = pb.ModelProto()
    m.ParseFromString(out["tiny_bpe"])
    m.normalizer_spec.remove_extra_whitespaces = True
    out["tiny_bpe_rmws"] = m.SerializeToString()
    # pieces that span a word boundary ("x▁y"), so words cannot be merged independently
    m = pb.ModelProto()
    m.ParseFromString(out["tiny_bpe"])
    for text in ("e▁t", "s▁a", "e▁a", ".▁"):
        p = m.pieces.add()
        p.piece = text
        p.score = 0.0
        p.type = pb.ModelProto.SentencePiece.NORMAL
    out["tiny_bpe_xws"] = m.SerializeToString()
    # some merged pieces marked UNUSED: merges still go through them, then they are split back
    m = pb.ModelProto()
    m.ParseFromString(out["tiny_bpe"])
    n_unused = 0
    for p in m.pieces:
        if p.type == pb.ModelProto.SentencePiece.NORMAL and len(p.piece) >= 2 and hash_choice(p.piece):
            p.type = pb.ModelProto.SentencePiece.UNUSED
            n_unused += 1
    assert n_unused > 10
    out["tiny_bpe_unused"] = m.SerializeToString()
    return out


def hash_choice(text):
    """Deterministic pick of about one piece in eight."""
    return sum(text.encode()) % 8 == 3


def long_text(rng, n_chars):
    parts = []
    size = 0
    while size < n_chars:
        r = rng.random()
        if r < 0.75:
            w = rng.choice(WORDS)
        elif r < 0.9:
            w = rng.choice(EXTRA)
        elif r < 0.95:
            w = rng.choice(["\n", "\n\n", "\t", "  ", "   "])
        else:
            w = str(rng.randint(0, 100000))
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)


def random_text(rng):
    alphabet = ["a", "b", "e", "t", "h", "the", " ", " ", "  ", "\n", "\t", "▁", "<s>", "</s>",
                "<unk>", "<sep>", "<", ">", "s", "/", "é", "猫", "😀", "\u0301", "\x00", "\x7f",
                "USER", ":", "ASSISTANT", "1", "23", ".", "\ufeff", "\u00a0", "Ω", "<0x41>", "<pad>"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant "
          "gives helpful, detailed, and polite answers to the user's questions.")


def texts(full):
    t = [
        "", " ", "  ", "   ", "\n", "\t", "a", "Hello world", "Hello  world", " Hello world",
        "Hello world ", "  leading and trailing  ", "Hello\nworld", "line1\n\nline2\n", "tab\there",
        "mixed \t \n spaces", "12345", "3.14159 and 2024-01-01", "1,000,000 people",
        "café naïve résumé über Straße", "東京は日本の首都です。", "中文 和 English", "😀 🚌 🐈‍⬛",
        "emoji😀inside", "Ω≈ç√∫˜µ≤≥÷", "\u0301combining", "zero\u200bwidth", "nbsp\u00a0here",
        "\x00nul", "ctrl\x01\x7f", "ⅰⅱⅲ ＡＢＣ ﬁ", "▁already▁escaped", "▁", "▁▁x",
        "<s>", "</s>", "<unk>", "<s>Hello", "Hello</s>", "Hello </s> world", "a<s>b</s>c<unk>d",
        " <s> x", "<s> x", "</s>USER: hi", "x </s>  y", "<sep>", "a<sep>b", " <sep> ", "<0x41>",
        "<pad>", "<<s>>", "</s></s>", "<unk><unk>", "<s>\n",
        SYSTEM + " USER: ",
        "\nWhat is this? ASSISTANT:",
        SYSTEM + " USER: <image>\nWhat is this? ASSISTANT:",
        SYSTEM + " USER: <image>\nWhat color is the bus? ASSISTANT: The bus in the image is white and "
        "red.</s>USER: What feature can be seen on the back of the bus? ASSISTANT: The back of the bus "
        "features an advertisement.</s>",
        " ASSISTANT: 2</s>", "USER: How many? ASSISTANT: 2",
        "select luxury furniture 3 - inch gel memory foam mattress topper\n",
    ]
    rng = random.Random(99)
    t += [random_text(rng) for _ in range(200 if full else 80)]
    if full:
        rng = random.Random(7)
        t += [long_text(rng, n) for n in (1500, 6000)]
    return t


def decode_id_lists(sp, vocab, n_random):
    """Arbitrary id sequences for decode: bytes forming valid and invalid UTF-8, specials anywhere."""
    def b(x):
        return sp.piece_to_id("<0x%02X>" % x)
    lists = [[], [1], [2], [0], [1, 2], [0, 0]]
    if sp.piece_to_id("<0x41>") != sp.unk_id():
        lists += [[b(0xE4), b(0xB8), b(0xAD)], [b(0xE4), b(0xB8)], [b(0xFF)], [b(0x80), b(0x41)],
                  [b(0xC0), b(0x80)], [b(0xED), b(0xA0), b(0x80)], [b(0xF4), b(0x90), b(0x80), b(0x80)],
                  [b(0xF0), b(0x9F), b(0x98), b(0x80)], [b(0xF0), b(0x9F), 2, b(0x98), b(0x80)],
                  [1, b(0x20), b(0x41)], [b(0x0A)]]
    rng = random.Random(5)
    for _ in range(n_random):
        n = rng.randint(1, 10)
        lists.append([rng.randrange(vocab) for _ in range(n)])
    return lists


def golden(name, model_bytes, model_path, full):
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    tok = LlamaTokenizer(model_path, legacy=False)
    cases = []
    for text in texts(full):
        ids_bos = tok(text).input_ids
        ids = tok(text, add_special_tokens=False).input_ids
        cases.append({
            "text": text,
            "ids_bos": ids_bos,
            "ids": ids,
            "sp_ids": sp.encode(text),
            "decode": tok.decode(ids_bos),
            "decode_skip": tok.decode(ids_bos, skip_special_tokens=True),
        })
    decodes = []
    for idl in decode_id_lists(sp, sp.get_piece_size(), 60 if full else 20):
        decodes.append({"ids": idl, "decode": tok.decode(idl),
                        "decode_skip": tok.decode(idl, skip_special_tokens=True)})
    pieces = [[i, sp.id_to_piece(i)] for i in range(0, sp.get_piece_size(), max(1, sp.get_piece_size() // 50))]
    return {
        "model": os.path.basename(model_path),
        "generator": "tools/gen_sp_fixtures.py, sentencepiece %s, transformers %s" % (spm.__version__, transformers.__version__),
        "vocab_size": sp.get_piece_size(),
        "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(), "pad_id": sp.pad_id(),
        "pieces": pieces,
        "cases": cases,
        "decodes": decodes,
    }


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared-data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = train_tiny(tmp)
    for name, data in models.items():
        path = os.path.join(OUT, name + ".model")
        with open(path, "wb") as f:
            f.write(data)
        print("wrote %s (%d bytes)" % (os.path.relpath(path), len(data)))
        write_json(os.path.join(OUT, name + ".json"), golden(name, data, path, name == "tiny_bpe"))
    llama = os.path.join(args.shared_data, "llama2-tokenizer.model")
    if os.path.exists(llama):
        with open(llama, "rb") as f:
            data = f.read()
        write_json(os.path.join(OUT, "llama2.json"), golden("llama2", data, llama, True))
    else:
        print("%s absent: llama2.json not regenerated" % llama, file=sys.stderr)


if __name__ == "__main__":
    main()
