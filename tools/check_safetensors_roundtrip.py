#!/usr/bin/env python3
"""Loads safetensors files written by our C writer with Python's safetensors and checks them.

    python3 tools/check_safetensors_roundtrip.py [--expected EXPECTED.json] FILE...

For each FILE, the expectation is --expected, or else the fixture whose stem FILE's name contains
(st_written_all_dtypes.safetensors -> tests/golden/safetensors/all_dtypes.expected.json; the C test
writes these files into its working directory, build/tests/). Checks, with Python's library:
  - the file loads (safetensors.deserialize: Python's own validation);
  - the same tensor names, dtypes, shapes and bytes as the expectation;
  - the same __metadata__;
  - the bytes equal what Python's serializer writes for the same tensors, when there is at most one
    metadata key (with more, Python's key order is not fixed, so the header is compared as JSON).
Exit status 0 when every file passes.
"""
import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors import TensorSpec, deserialize, safe_open, serialize

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "tests" / "golden" / "safetensors"

LIB_DTYPE = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
             "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16",
             "BF16": "bfloat16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn",
             "F8_E5M2": "float8_e5m2"}


def find_expected(path):
    for cand in sorted(GOLD.glob("*.expected.json"), key=lambda p: -len(p.name)):
        if cand.name[: -len(".expected.json")] in path.name:
            return cand
    return None


def check(path, expected):
    doc = json.loads(expected.read_text(encoding="utf-8"))
    data = path.read_bytes()
    problems = []
    loaded = dict(deserialize(data))  # name -> {"dtype", "shape", "data"}
    want = {t["name"]: t for t in doc["tensors"]}
    if set(loaded) != set(want):
        problems.append(f"names differ: {sorted(set(loaded) ^ set(want))}")
    for name, t in want.items():
        got = loaded.get(name)
        if got is None:
            continue
        if str(got["dtype"]) != t["dtype"]:  # deserialize reports the file's dtype name
            problems.append(f"{name}: dtype {got['dtype']} vs {t['dtype']}")
        if list(got["shape"]) != t["shape"]:
            problems.append(f"{name}: shape {got['shape']} vs {t['shape']}")
        if bytes(got["data"]) != bytes.fromhex(t["hex"]):
            problems.append(f"{name}: bytes differ")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if meta != doc["metadata"]:
        problems.append(f"metadata {meta} vs {doc['metadata']}")

    # What Python writes for the same tensors and metadata.
    keep = [np.frombuffer(bytes.fromhex(t["hex"]), np.uint8).copy() for t in doc["tensors"]]
    specs = {t["name"]: TensorSpec(dtype=LIB_DTYPE[t["dtype"]], shape=t["shape"],
                                   data_ptr=k.ctypes.data, data_len=k.nbytes)
             for t, k in zip(doc["tensors"], keep)}
    ref = bytes(serialize(specs, metadata=doc["metadata"] or None))
    if len(doc["metadata"]) <= 1:
        if ref != data:
            problems.append("bytes differ from Python's serializer")
    else:
        (na,), (nb,) = struct.unpack("<Q", data[:8]), struct.unpack("<Q", ref[:8])
        if len(ref) != len(data) or na != nb or data[8 + na:] != ref[8 + nb:]:
            problems.append("layout differs from Python's serializer")
        elif json.loads(data[8:8 + na]) != json.loads(ref[8:8 + nb]):
            problems.append("header differs from Python's serializer (as JSON)")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--expected", type=Path)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    bad = 0
    for p in args.files:
        exp = args.expected or find_expected(p)
        if exp is None:
            print(f"{p}: no expectation found (use --expected)")
            bad += 1
            continue
        try:
            problems = check(p, exp)
        except Exception as e:  # noqa: BLE001 - report and continue with the next file
            problems = [f"{type(e).__name__}: {e}"]
        print(f"{p}: {'ok' if not problems else 'FAILED'} (against {exp.name})")
        for q in problems:
            print(f"  {q}")
        bad += bool(problems)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
