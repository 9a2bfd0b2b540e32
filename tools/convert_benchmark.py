#!/usr/bin/env python3
"""Converts the public benchmark releases into asvr-eval's question files (eval/README.md).

Writes OUT/<bench>.jsonl (one question per line) and OUT/images/<bench>/<sha1-16>.<ext> with the
image bytes exactly as released (JPEG/PNG; RealWorldQA's images are WebP and stay WebP — decoding
WebP in C is a separate piece of work). Images shared by several questions are written once (named
by content hash). `image` in the JSONL is relative to OUT.

Source layouts:
  * lmms-eval / HF datasets parquet (lmms-lab/<name>, echo840/OCRBench): one file, a folder of
    shards, or several files; image columns are structs {bytes, path} (SEED: a list of them).
  * GQA: the testdev_balanced_instructions parquet plus --images with the testdev_balanced_images
    parquet (joined on imageId).
  * MMVP: the MMVP/MMVP repository folder (Questions.csv + "MMVP Images/<Index>.jpg").
  * POPE, LLaVA layout: coco_pope_{adversarial,popular,random}.json (JSON lines {question_id,
    image, text, label}); images stay references into COCO val2014 (use --image-root there).

    pip install pyarrow pandas pillow
    python3 tools/convert_benchmark.py textvqa --source textvqa/validation-*.parquet --out bench/
    python3 tools/convert_benchmark.py gqa --source instructions.parquet --images images.parquet --out bench/
    python3 tools/convert_benchmark.py mmvp --source MMVP/ --out bench/
    python3 tools/convert_benchmark.py pope --layout llava --source coco_pope_random.json ... --out bench/

Every mapping is a function `convert_<bench>(rows, ctx)` below; the fields follow
reference/data_and_eval.md §B2–B15. Rows the reference skips (SEED video rows, HallusionBench rows
without an image) are skipped and counted.
"""
import argparse
import ast
import csv
import glob
import hashlib
import io
import json
import os
import re
import sys

BENCHES = ["textvqa", "docvqa", "ocrbench", "chartqa", "mmbench_en_dev", "mme", "seed_image", "gqa",
           "mmmu_val", "ai2d", "realworldqa", "mmvp", "hallusionbench", "pope"]


def image_ext(data):
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    return "bin"


class Ctx:
    """Output folder, image writer and counters."""

    def __init__(self, bench, out, image_root=None):
        self.bench, self.out, self.image_root = bench, out, image_root
        self.img_dir = os.path.join(out, "images", bench)
        self.written = {}
        self.skipped = 0

    def image(self, cell):
        """Writes an image cell ({bytes, path} struct, raw bytes, or None); returns its path relative to out."""
        if cell is None:
            return None
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if data is None:
            raise ValueError("image cell without bytes (path %r): re-export the dataset with embedded images"
                             % (cell.get("path") if isinstance(cell, dict) else None))
        data = bytes(data)
        h = hashlib.sha1(data).hexdigest()[:16]
        if h not in self.written:
            name = "%s.%s" % (h, image_ext(data))
            os.makedirs(self.img_dir, exist_ok=True)
            path = os.path.join(self.img_dir, name)
            if not os.path.exists(path):
                tmp = path + ".tmp.%d" % os.getpid()
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            self.written[h] = os.path.join("images", self.bench, name)
        return self.written[h]

    def pixel_key(self, cell):
        """An exact image fingerprint for MMBench's circular groups: decoded RGB pixels when Pillow
        is present (equal images with different encodings group together), else the bytes."""
        data = bytes(cell["bytes"] if isinstance(cell, dict) else cell)
        try:
            from PIL import Image
            im = Image.open(io.BytesIO(data)).convert("RGB")
            return hashlib.sha1(repr(im.size).encode() + im.tobytes()).hexdigest()[:16]
        except ImportError:
            return hashlib.sha1(data).hexdigest()[:16]


def text(v):
    """Python-side str() of a cell, None kept."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    return str(v)


def qid(v):
    """question_id: ints stay ints, everything else a string."""
    if isinstance(v, bool) or v is None:
        raise ValueError("bad question_id %r" % (v,))
    if isinstance(v, int):
        return v
    return str(v)


# ---- per-benchmark mappings (row dict -> record dict or None to skip) --------------------------

def convert_textvqa(row, i, ctx):
    return {"question_id": qid(row["question_id"]), "image": ctx.image(row["image"]), "question": row["question"],
            "answers": list(row["answers"]), "ocr_tokens": list(row.get("ocr_tokens") or []),
            "image_id": text(row.get("image_id"))}


def convert_docvqa(row, i, ctx):
    r = {"question_id": qid(row["questionId"]), "image": ctx.image(row["image"]), "question": row["question"],
         "question_types": list(row.get("question_types") or []), "doc_id": text(row.get("docId"))}
    if row.get("answers") is not None:
        r["answers"] = list(row["answers"])
    return r


def convert_ocrbench(row, i, ctx):
    ans = row["answer"]
    return {"question_id": qid(row.get("id", i)), "image": ctx.image(row["image"]), "question": row["question"],
            "answers": [ans] if isinstance(ans, str) else list(ans), "question_type": row["question_type"],
            "dataset": row.get("dataset")}


def convert_chartqa(row, i, ctx):
    return {"question_id": i, "image": ctx.image(row["image"]), "question": row["question"],
            "answer": text(row["answer"]), "type": row.get("type")}


def _nan_none(v):
    v = text(v)
    return None if v is None or v == "nan" else v


def convert_mmbench_en_dev(row, i, ctx):
    question, source = row["question"], text(row.get("source")) or ""
    group = "%s %s %s" % (question, ctx.pixel_key(row["image"]), source)
    return {"question_id": qid(row["index"]), "index": int(row["index"]), "image": ctx.image(row["image"]),
            "question": question, "hint": _nan_none(row.get("hint")),
            "options": [_nan_none(row.get(k)) for k in "ABCD"], "answer": row["answer"],
            "category": row.get("category"), "l2_category": row.get("l2-category"), "source": source,
            "split": row.get("split"), "circular_group": group}


def convert_mme(row, i, ctx):
    # The two questions of an image share question_id (the image path): make ids unique, keep the
    # rows in file order (acc+ pairs consecutive rows).
    base = str(row["question_id"])
    k = ctx.seen_mme.get(base, 0)
    ctx.seen_mme[base] = k + 1
    return {"question_id": "%s#%d" % (base, k), "image": ctx.image(row["image"]), "question": row["question"],
            "answer": row["answer"], "category": row["category"], "image_name": base}


def convert_seed_image(row, i, ctx):
    imgs = row["image"]
    if isinstance(imgs, dict) or imgs is None:
        imgs = [imgs] if imgs is not None else []
    if len(imgs) != 1 or (row.get("data_type") not in (None, "image")):
        ctx.skipped += 1  # Cambrian skips len(image) > 1 (video)
        return None
    return {"question_id": qid(row["question_id"]), "image": ctx.image(imgs[0]), "question": row["question"],
            "options": [row["choice_a"], row["choice_b"], row["choice_c"], row["choice_d"]],
            "answer": row["answer"], "category": text(row.get("question_type_id"))}


def convert_gqa(row, i, ctx):
    img = ctx.gqa_images.get(str(row["imageId"]))
    if img is None:
        raise ValueError("imageId %s is not in the --images parquet" % row["imageId"])
    return {"question_id": qid(row["id"]), "image": ctx.image(img), "question": row["question"],
            "answer": row["answer"], "full_answer": row.get("fullAnswer"), "image_id": str(row["imageId"])}


_MMMU_OPT = re.compile(r"'(.*?)'")


def convert_mmmu_val(row, i, ctx):
    rid = str(row["id"])
    raw = row.get("options") or "[]"
    subject = rid.split("_", 1)[1].rsplit("_", 1)[0] if rid.count("_") >= 2 else None
    r = {"question_id": rid, "image": ctx.image(row.get("image_1")), "question": row["question"],
         "question_type": row["question_type"], "answer": text(row["answer"]),
         # Cambrian parses the options with the regex '(.*?)' (single-quoted items only); kept as it does.
         "options": _MMMU_OPT.findall(raw), "options_raw": raw, "category": subject}
    if r["image"] is None:
        del r["image"]
    return r


def convert_ai2d(row, i, ctx):
    return {"question_id": i, "image": ctx.image(row["image"]), "question": row["question"],
            "options": list(row["options"]), "answer": text(row["answer"])}


def convert_realworldqa(row, i, ctx):
    return {"question_id": i, "image": ctx.image(row["image"]), "question": row["question"],
            "answer": text(row["answer"])}


def convert_hallusionbench(row, i, ctx):
    if row.get("image") is None:
        ctx.skipped += 1
        return None
    cat, sub = row["category"], row["subcategory"]
    set_id, fig, q = text(row["set_id"]), text(row["figure_id"]), text(row["question_id"])
    gt = text(row["gt_answer"])
    return {"question_id": "%s_%s_%s_%s_%s" % (cat, sub, set_id, fig, q), "image": ctx.image(row["image"]),
            "question": row["question"], "answer": "yes" if gt == "1" else "no", "gt_answer": gt,
            "category": cat, "subcategory": sub, "set_id": set_id, "figure_id": fig, "hb_question_id": q,
            "visual_input": text(row.get("visual_input")), "filename": row.get("filename")}


def convert_pope(row, i, ctx):
    cat = row.get("category")
    rid = row.get("id")
    return {"question_id": qid(rid) if rid is not None else "%s/%s" % (cat, row["question_id"]),
            "image": ctx.image(row["image"]), "question": row["question"], "answer": row["answer"],
            "category": cat, "image_source": row.get("image_source")}


CONVERTERS = {name: globals()["convert_" + name] for name in BENCHES if "convert_" + name in globals()}


# ---- readers ------------------------------------------------------------------------------------

def parquet_files(sources):
    files = []
    for s in sources:
        if os.path.isdir(s):
            files += sorted(glob.glob(os.path.join(s, "**", "*.parquet"), recursive=True))
        else:
            files += sorted(glob.glob(s)) or [s]
    if not files:
        raise SystemExit("no parquet files in %s" % sources)
    return files


def parquet_rows(sources):
    import pyarrow.parquet as pq
    for f in parquet_files(sources):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield row


def mmvp_rows(folder, ctx):
    """MMVP/MMVP: Questions.csv (Index, Question, Options, Correct Answer) + MMVP Images/<Index>.jpg."""
    with open(os.path.join(folder, "Questions.csv"), newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row[0] in ("Index", "lndex"):
                continue
            idx = int(row[0])
            with open(os.path.join(folder, "MMVP Images", "%d.jpg" % idx), "rb") as im:
                data = im.read()
            yield {"question_id": idx, "image": ctx.image(data), "question": row[1], "options_raw": row[2],
                   "answer": row[3], "pair_id": (idx - 1) // 2}


def pope_llava_rows(files, ctx):
    """coco_pope_<category>.json: JSON lines {question_id, image, text, label}; the image stays a
    COCO file name (relative to --image-root when given)."""
    for path in files:
        m = re.search(r"coco_pope_(\w+)\.json", os.path.basename(path))
        cat = m.group(1) if m else os.path.splitext(os.path.basename(path))[0]
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit("%s:%d: %s" % (path, n, e))
                image = r["image"] if not ctx.image_root else os.path.join(ctx.image_root, r["image"])
                yield {"question_id": "%s/%s" % (cat, r["question_id"]), "image": image, "question": r["text"],
                       "answer": r["label"], "category": cat}


def convert(args):
    ctx = Ctx(args.bench, args.out, args.image_root)
    ctx.seen_mme = {}
    os.makedirs(args.out, exist_ok=True)
    if args.bench == "mmvp":
        records = mmvp_rows(args.source[0], ctx)
    elif args.bench == "pope" and args.layout == "llava":
        records = pope_llava_rows(args.source, ctx)
    else:
        if args.bench == "gqa":
            if not args.images:
                raise SystemExit("gqa needs --images (the testdev_balanced_images parquet)")
            ctx.gqa_images = {str(r["id"]): r["image"] for r in parquet_rows([args.images])}
        conv = CONVERTERS[args.bench]

        def gen():
            for i, row in enumerate(parquet_rows(args.source)):
                try:
                    r = conv(row, i, ctx)
                except (KeyError, ValueError, TypeError) as e:
                    raise SystemExit("%s row %d: %s: %s" % (args.bench, i, type(e).__name__, e))
                if r is not None:
                    yield r
        records = gen()
    out_path = os.path.join(args.out, args.bench + ".jsonl")
    tmp = out_path + ".tmp.%d" % os.getpid()
    n, ids = 0, set()
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            r = {"question_id": r["question_id"], "benchmark": args.bench, **{k: v for k, v in r.items()
                                                                              if k != "question_id"}}
            key = str(r["question_id"])
            if key in ids:
                os.unlink(tmp)
                raise SystemExit("question_id %s repeats (row %d)" % (key, n))
            ids.add(key)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, out_path)
    print("%s: %d questions, %d images, %d rows skipped -> %s" % (args.bench, n, len(ctx.written), ctx.skipped,
                                                                  out_path), file=sys.stderr)
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench", choices=BENCHES)
    ap.add_argument("--source", nargs="+", required=True, help="parquet file(s)/folder, MMVP folder, or POPE json")
    ap.add_argument("--images", help="GQA: the testdev_balanced_images parquet")
    ap.add_argument("--layout", choices=["parquet", "llava"], default="parquet", help="POPE: source layout")
    ap.add_argument("--image-root", help="POPE llava layout: prefix for the COCO image names")
    ap.add_argument("--out", required=True, help="output folder (OUT/<bench>.jsonl, OUT/images/<bench>/)")
    args = ap.parse_args(argv)
    convert(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
