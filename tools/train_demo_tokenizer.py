#!/usr/bin/env python3
"""Trains the demo's tiny SentencePiece BPE text tokenizer (examples/demo/demo_tokenizer.model) on the
text of the demo data that asvr-demo-gen writes.

Regenerate (from the repository root, after building):
    build/bin/asvr-demo-gen --out /tmp/asvr-demo-data --seed 0
    python3 tools/train_demo_tokenizer.py /tmp/asvr-demo-data --out examples/demo/demo_tokenizer.model

Needs: sentencepiece (pip install sentencepiece protobuf). Deterministic: the same data gives the
same bytes (one thread, no input shuffling, no temporary paths left in the model).

The corpus is the text as the templates present it to the tokenizer: for every stage-it
conversation the vicuna_v1 prompt (system prompt, "USER: ", "ASSISTANT: ", the answers), cut where
LLaVA cuts it (at "<image>" and "</s>") and at newlines; every stage-pt caption; every eval question.
The pieces are those of Llama: <unk> = 0, <s> = 1, </s> = 2, byte fallback, a dummy-prefix "▁".

"USER" is a user-defined piece. That is what makes LLaVA's per-round length arithmetic hold (and so
`asvr-pack build` masks no sample): rounds after the first start right after "</s>", where the
non-legacy tokenizer adds no dummy prefix, and the reference subtracts one token there because
Llama encodes "▁USER" as two pieces but "USER" as one. A learned "▁USER" piece would break that
(1 vs 1 or 1 vs 2+); a user-defined "USER" gives "▁" + "USER" vs "USER", as Llama does.
"""
import argparse
import json
import os
import sys
import tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def vicuna_prompt(conv):
    """LLaVA's conv_vicuna_v1 training string, with <image> moved to the front as preprocess_multimodal does."""
    out = SYSTEM + " "
    for i, turn in enumerate(conv):
        v = turn["value"]
        if "<image>" in v:
            v = ("<image>\n" + v.replace("<image>", "").strip()).strip()
        role = "USER" if turn["from"] == "human" else "ASSISTANT"
        out += role + ": " + v + (" " if i % 2 == 0 else "</s>")
    return out


def corpus_lines(data_dir):
    lines = []
    with open(os.path.join(data_dir, "it.json"), encoding="utf-8") as f:
        for s in json.load(f):
            for chunk in vicuna_prompt(s["conversations"]).replace("</s>", "<image>").split("<image>"):
                lines.extend(x for x in chunk.split("\n") if x.strip())
    with open(os.path.join(data_dir, "pt.json"), encoding="utf-8") as f:
        for s in json.load(f):
            lines.append(s["conversations"][1]["value"])
    with open(os.path.join(data_dir, "eval.jsonl"), encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            lines.extend(x for x in q["question"].split("\n") if x.strip())
            lines.append(q["answer"])
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="folder written by asvr-demo-gen (pt.json, it.json, eval.jsonl)")
    ap.add_argument("--out", required=True, help="the .model file to write")
    ap.add_argument("--vocab-size", type=int, default=512)
    args = ap.parse_args()
    lines = corpus_lines(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "corpus.txt")
        with open(text, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        prefix = os.path.join(tmp, "demo_tokenizer")
        spm.SentencePieceTrainer.train(
            input=text, model_prefix=prefix, model_type="bpe", vocab_size=args.vocab_size, byte_fallback=True,
            user_defined_symbols=["USER"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            split_digits=True, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
            character_coverage=1.0, max_sentencepiece_length=16, minloglevel=2)
        m = pb.ModelProto()
        with open(prefix + ".model", "rb") as f:
            m.ParseFromString(f.read())
    del m.trainer_spec.input[:]  # no temporary paths in the committed file
    m.trainer_spec.input.append("corpus.txt")
    m.trainer_spec.model_prefix = "demo_tokenizer"
    data = m.SerializeToString()
    tmp_out = args.out + ".tmp"
    with open(tmp_out, "wb") as f:
        f.write(data)
    os.replace(tmp_out, args.out)
    sp = spm.SentencePieceProcessor(model_file=args.out)
    n_tok = sum(len(sp.encode(x)) for x in lines)
    print("%s: %d pieces, %d corpus lines, %.2f tokens per line" % (args.out, sp.get_piece_size(), len(lines),
                                                                     n_tok / len(lines)), file=sys.stderr)


if __name__ == "__main__":
    main()
