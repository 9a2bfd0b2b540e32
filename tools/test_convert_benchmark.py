#!/usr/bin/env python3
"""Round trip of tools/convert_benchmark.py on small hand-made sources, one per layout: lmms-eval
parquet with {bytes, path} image structs (TextVQA, MME, MMBench, SEED with image lists and a video
row, MMMU, HallusionBench, RealWorldQA with WebP bytes, GQA's two parquets), the MMVP folder and
POPE's LLaVA JSON lines. Checks the JSONL fields and that every image file holds the source bytes.

    pip install pyarrow pandas pillow
    python3 tools/test_convert_benchmark.py [--bin build/bin/asvr-eval-metrics]

With --bin it also runs `prompts` on every converted file (the C side accepts what was written).
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_benchmark as cb  # noqa: E402

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def img_bytes(fmt, color, size=(8, 6)):
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, format=fmt)
    return b.getvalue()


IMG_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_parquet(path, cols, image_cols=("image",)):
    arrays, fields = [], []
    for k, v in cols.items():
        if k in image_cols:
            arr = pa.array(v, type=IMG_T)
        elif k == "image_list":
            arr = pa.array(v, type=pa.list_(IMG_T))
            k = "image"
        else:
            arr = pa.array(v)
        arrays.append(arr)
        fields.append(k)
    pq.write_table(pa.Table.from_arrays(arrays, names=fields), path)


def load(out, bench):
    with open(os.path.join(out, bench + ".jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def same_bytes(out, rec, data):
    with open(os.path.join(out, rec["image"]), "rb") as f:
        return f.read() == data


def run(bench, src, out, *extra):
    cb.main([bench, "--source", *src, "--out", out, *extra])
    return load(out, bench)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="asvr-eval, to run `prompts` over the converted files")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    out = os.path.join(tmp, "out")
    jpg, png, webp = img_bytes("JPEG", (200, 10, 10)), img_bytes("PNG", (10, 200, 10)), img_bytes("WEBP", (1, 2, 3))

    # TextVQA
    p = os.path.join(tmp, "textvqa.parquet")
    write_parquet(p, {"question_id": [34602, 34603], "question": ["what brand?", "what?"],
                      "image_id": ["a", "b"], "image": [{"bytes": jpg, "path": "a.jpg"}, {"bytes": png, "path": None}],
                      "answers": [["coke"] * 10, ["x"] * 10], "ocr_tokens": [["coca", "cola"], []]})
    r = run("textvqa", [p], out)
    check(len(r) == 2 and r[0]["question_id"] == 34602 and r[0]["answers"] == ["coke"] * 10, "textvqa fields")
    check(r[0]["ocr_tokens"] == ["coca", "cola"] and r[0]["benchmark"] == "textvqa", "textvqa ocr tokens")
    check(same_bytes(out, r[0], jpg) and r[0]["image"].endswith(".jpg"), "textvqa JPEG bytes kept")
    check(same_bytes(out, r[1], png) and r[1]["image"].endswith(".png"), "textvqa PNG bytes kept")

    # MME: shared question_id per image → unique ids, order kept, one image file
    p = os.path.join(tmp, "mme.parquet")
    write_parquet(p, {"question_id": ["code_reasoning/0020.png"] * 2, "question": ["q1? Please answer yes or no.",
                                                                                   "q2? Please answer yes or no."],
                      "answer": ["Yes", "No"], "category": ["code_reasoning"] * 2,
                      "image": [{"bytes": png, "path": None}] * 2})
    r = run("mme", [p], out)
    check([x["question_id"] for x in r] == ["code_reasoning/0020.png#0", "code_reasoning/0020.png#1"], "mme ids")
    check(r[0]["image"] == r[1]["image"] and same_bytes(out, r[0], png), "mme one image for the pair")

    # MMBench: "nan" options/hint → null; circular copies (same question, image, source) group together
    p = os.path.join(tmp, "mmb.parquet")
    write_parquet(p, {"index": [5, 1000005], "question": ["Which?", "Which?"], "hint": ["nan", "nan"],
                      "A": ["x", "y"], "B": ["y", "x"], "C": ["nan", "nan"], "D": ["nan", "nan"],
                      "answer": ["A", "B"], "category": ["c", "c"], "l2-category": ["l", "l"],
                      "source": ["s", "s"], "split": ["dev", "dev"],
                      "image": [{"bytes": jpg, "path": None}, {"bytes": jpg, "path": None}]})
    r = run("mmbench_en_dev", [p], out)
    check(r[0]["options"] == ["x", "y", None, None] and r[0]["hint"] is None, "mmbench nan → null")
    check(r[0]["circular_group"] == r[1]["circular_group"] and r[1]["index"] == 1000005, "mmbench circular group")

    # SEED: the video row (several images) is skipped
    p = os.path.join(tmp, "seed.parquet")
    write_parquet(p, {"question_id": ["1", "2"], "question": ["How many?", "What happens?"],
                      "choice_a": ["1", "a"], "choice_b": ["2", "b"], "choice_c": ["3", "c"], "choice_d": ["4", "d"],
                      "answer": ["B", "A"], "question_type_id": [5, 10], "data_type": ["image", "video"],
                      "image_list": [[{"bytes": jpg, "path": None}],
                                     [{"bytes": jpg, "path": None}, {"bytes": png, "path": None}]]})
    r = run("seed_image", [p], out)
    check(len(r) == 1 and r[0]["options"] == ["1", "2", "3", "4"] and r[0]["category"] == "5", "seed image rows only")

    # MMMU: options parsed the way Cambrian does (single-quoted items), subject from the id
    p = os.path.join(tmp, "mmmu.parquet")
    write_parquet(p, {"id": ["validation_Art_Theory_1"], "question": ["<image 1> Which?"],
                      "options": ["['cat', 'dog']"], "answer": ["A"], "question_type": ["multiple-choice"],
                      "image_1": [{"bytes": png, "path": None}]}, image_cols=("image_1",))
    r = run("mmmu_val", [p], out)
    check(r[0]["options"] == ["cat", "dog"] and r[0]["category"] == "Art_Theory" and same_bytes(out, r[0], png),
          "mmmu fields")

    # HallusionBench: composite unique id, yes/no answer, row without image skipped
    p = os.path.join(tmp, "hb.parquet")
    write_parquet(p, {"category": ["VS", "VD"], "subcategory": ["chart", "math"], "visual_input": ["1", "0"],
                      "set_id": ["3", "4"], "figure_id": ["0", "0"], "sample_note": ["", ""],
                      "question_id": ["1", "1"], "question": ["Is it?", "Is it?"],
                      "gt_answer_details": ["", ""], "gt_answer": ["1", "0"], "filename": ["f.png", None],
                      "image": [{"bytes": png, "path": None}, None]})
    r = run("hallusionbench", [p], out)
    check(len(r) == 1 and r[0]["question_id"] == "VS_chart_3_0_1" and r[0]["answer"] == "yes"
          and r[0]["hb_question_id"] == "1", "hallusionbench fields")

    # RealWorldQA: WebP written as is
    p = os.path.join(tmp, "rwqa.parquet")
    write_parquet(p, {"question": ["Which? A. x B. y Please answer directly with only the letter."],
                      "answer": ["A"], "image": [{"bytes": webp, "path": None}]})
    r = run("realworldqa", [p], out)
    check(r[0]["image"].endswith(".webp") and same_bytes(out, r[0], webp), "realworldqa WebP bytes kept")

    # GQA: instructions joined with the images parquet on imageId
    p, pi = os.path.join(tmp, "gqa_q.parquet"), os.path.join(tmp, "gqa_i.parquet")
    write_parquet(p, {"id": ["201", "202"], "imageId": ["n1", "n2"], "question": ["Color?", "Animal?"],
                      "answer": ["red", "dog"], "fullAnswer": ["It is red.", "A dog."]})
    write_parquet(pi, {"id": ["n1", "n2"], "image": [{"bytes": jpg, "path": None}, {"bytes": png, "path": None}]})
    r = run("gqa", [p], out, "--images", pi)
    check(r[1]["question_id"] == "202" and same_bytes(out, r[1], png), "gqa join on imageId")

    # MMVP folder
    mm = os.path.join(tmp, "MMVP")
    os.makedirs(os.path.join(mm, "MMVP Images"))
    with open(os.path.join(mm, "Questions.csv"), "w", encoding="utf-8") as f:
        f.write("lndex,Question,Options,Correct Answer\n1,Is the door open?,(a) Open (b) Closed,(a)\n"
                "2,Is the door open?,(a) Open (b) Closed,(b)\n")
    for i, data in ((1, jpg), (2, img_bytes("JPEG", (0, 0, 255)))):
        with open(os.path.join(mm, "MMVP Images", "%d.jpg" % i), "wb") as f:
            f.write(data)
    r = run("mmvp", [mm], out)
    check(len(r) == 2 and r[0]["options_raw"] == "(a) Open (b) Closed" and r[0]["pair_id"] == r[1]["pair_id"] == 0,
          "mmvp rows and pairs")
    check(same_bytes(out, r[0], jpg), "mmvp image bytes")

    # POPE, LLaVA layout
    pj = os.path.join(tmp, "coco_pope_random.json")
    with open(pj, "w") as f:
        f.write('{"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the '
                'image?", "label": "yes"}\n')
    r = run("pope", [pj], out, "--layout", "llava", "--image-root", "val2014")
    check(r[0]["question_id"] == "random/1" and r[0]["category"] == "random"
          and r[0]["image"] == "val2014/COCO_val2014_000000310196.jpg" and r[0]["answer"] == "yes", "pope llava layout")

    if args.bin:
        for bench in ("textvqa", "mme", "mmbench_en_dev", "seed_image", "mmmu_val", "hallusionbench", "realworldqa",
                      "gqa", "mmvp", "pope"):
            p = subprocess.run([args.bin, "prompts", "--bench", bench, "--questions",
                                os.path.join(out, bench + ".jsonl")], capture_output=True, text=True)
            check(p.returncode == 0, "prompts accepts the converted %s file: %s" % (bench, p.stderr.strip()))
        p = subprocess.run([args.bin, "prompts", "--bench", "mmvp", "--questions", os.path.join(out, "mmvp.jsonl")],
                           capture_output=True, text=True)
        check("Options:\\nA. Open\\nB. Closed" in p.stdout, "mmvp prompt from the converted file")

    shutil.rmtree(tmp)
    print("%d failed" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
