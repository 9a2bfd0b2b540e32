#!/usr/bin/env python3
"""Writes the safetensors fixtures of tests/test_safetensors.c and the fuzz seed corpus.

    pip install safetensors numpy
    python3 tools/gen_safetensors_fixtures.py

Outputs (paths relative to the repository root):
  tests/golden/safetensors/all_dtypes.safetensors   every dtype, odd shapes, a scalar, a zero-size
                                                    dim, __metadata__ (written by Python's safetensors)
  tests/golden/safetensors/all_dtypes.expected.json the same tensors: dtype, shape, raw bytes (hex) and,
                                                    for convertible dtypes, the fp32 values numpy
                                                    computes (hex of the fp32 bits)
  tests/golden/safetensors/sharded/                 model.safetensors.index.json + 2 shards, and
                                                    sharded.expected.json
  tests/golden/safetensors/parity_*.safetensors     writer parity: the C writer must reproduce these
                                                    bytes from the tensors in parity_*.expected.json
  tests/golden/safetensors/corrupt/                 one small broken file per validation failure and
                                                    manifest.json ({file, expect: substring of our
                                                    error, python_rejects: what Python's library does})
  tests/golden/fuzz/safetensors/                    tiny valid files, the fuzzer's seed corpus

Everything is seeded; rerunning reproduces the same bytes (except the key order of a multi-key
__metadata__, which Python's library writes in hash-map order; the tests do not depend on it).
BF16 and F8 tensors are passed to the library as raw bytes with dtype "bfloat16" / "float8_*".
"""
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import safetensors
from safetensors import TensorSpec, serialize, serialize_file
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden" / "safetensors"
FUZZ = ROOT / "tests" / "golden" / "fuzz" / "safetensors"

# our dtype name -> (library dtype string, numpy dtype of the raw bytes, convertible to f32)
DTYPES = {
    "BOOL": ("bool", np.bool_, False),
    "U8": ("uint8", np.uint8, True),
    "I8": ("int8", np.int8, True),
    "I16": ("int16", np.int16, True),
    "U16": ("uint16", np.uint16, True),
    "I32": ("int32", np.int32, True),
    "U32": ("uint32", np.uint32, True),
    "I64": ("int64", np.int64, True),
    "U64": ("uint64", np.uint64, True),
    "F16": ("float16", np.float16, True),
    "BF16": ("bfloat16", np.uint16, True),
    "F32": ("float32", np.float32, True),
    "F64": ("float64", np.float64, True),
    "F8_E4M3": ("float8_e4m3fn", np.uint8, False),
    "F8_E5M2": ("float8_e5m2", np.uint8, False),
}


def bf16_bits(x):
    """float32 array -> bfloat16 bits, round to nearest even (NaN kept as a quiet NaN)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, np.float32))
    r[nan] = 0x7FC0
    return r


def f32_of(dtype, arr):
    """The fp32 values st_tensor_to_f32 must produce, computed here with numpy."""
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore"):  # F64 1e300 -> inf, as the C cast does
        return arr.astype(np.float32)


class T:
    def __init__(self, name, dtype, arr):
        self.name, self.dtype = name, dtype
        self.arr = np.ascontiguousarray(arr, dtype=DTYPES[dtype][1])

    def spec(self):
        return TensorSpec(dtype=DTYPES[self.dtype][0], shape=list(self.arr.shape),
                          data_ptr=self.arr.ctypes.data, data_len=self.arr.nbytes)

    def expected(self):
        e = {"name": self.name, "dtype": self.dtype, "shape": list(self.arr.shape),
             "hex": self.arr.tobytes().hex()}
        if DTYPES[self.dtype][2]:
            e["f32_hex"] = np.ascontiguousarray(f32_of(self.dtype, self.arr)).tobytes().hex()
        return e


def write(tensors, path, metadata=None):
    """Writes through Python's safetensors (serialize_file, what save_file calls)."""
    specs = {t.name: t.spec() for t in tensors}
    serialize_file(specs, str(path), metadata=metadata)


def write_expected(tensors, path, metadata=None):
    doc = {"metadata": metadata or {}, "tensors": [t.expected() for t in tensors]}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def rand_for(rng, dtype, shape):
    np_t = DTYPES[dtype][1]
    if dtype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype == "BF16":
        return bf16_bits(rng.standard_normal(shape).astype(np.float32) * 3)
    if dtype in ("F8_E4M3", "F8_E5M2"):
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if np.issubdtype(np_t, np.integer):
        info = np.iinfo(np_t)
        return rng.integers(info.min, info.max, size=shape, dtype=np_t, endpoint=True)
    return (rng.standard_normal(shape) * 5).astype(np_t)


def all_dtypes(rng):
    shapes = {"BOOL": (3, 5), "U8": (7,), "I8": (2, 3, 5), "I16": (5, 3), "U16": (3, 1, 3),
              "I32": (4, 3), "U32": (9,), "I64": (3, 3), "U64": (2, 5), "F16": (5, 7),
              "BF16": (2, 3, 5), "F32": (3, 5, 7), "F64": (7, 3), "F8_E4M3": (6, 1),
              "F8_E5M2": (1, 11)}
    ts = [T("w." + d.lower(), d, rand_for(rng, d, s)) for d, s in shapes.items()]
    # F16 edge values: zeros, extremes, subnormals, inf, nan.
    f16_special = np.array([0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0xFBFF, 0x0400, 0x0001, 0x03FF,
                            0x8001, 0x0200, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x3555],
                           np.uint16).view(np.float16)
    ts.append(T("special.f16", "F16", f16_special))
    bf16_special = np.array([0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x807F,
                             0x7F7F, 0x4049], np.uint16)
    ts.append(T("special.bf16", "BF16", bf16_special))
    ts.append(T("scalar", "F32", np.array(3.25, np.float32)))
    ts.append(T("scalar.i64", "I64", np.array(-(2**40) - 7, np.int64)))
    ts.append(T("empty", "I32", np.zeros((4, 0, 3), np.int32)))
    ts.append(T("empty.f16", "F16", np.zeros((0,), np.float16)))
    ts.append(T("extremes.i64", "I64", np.array([2**63 - 1, -(2**63), 2**53 + 1, -1], np.int64)))
    ts.append(T("extremes.u64", "U64", np.array([2**64 - 1, 2**63, 1, 0], np.uint64)))
    ts.append(T("extremes.f64", "F64", np.array([1e300, -1e-300, np.inf, 3.0000001], np.float64)))
    meta = {"format": "pt", "note": "every dtype; \"quoted\" \u00fc"}
    write(ts, OUT / "all_dtypes.safetensors", meta)
    write_expected(ts, OUT / "all_dtypes.expected.json", meta)
    return ts


def sharded(rng):
    d = OUT / "sharded"
    d.mkdir(parents=True, exist_ok=True)
    s1 = [T("model.embed", "F32", rand_for(rng, "F32", (5, 4))),
          T("model.layers.0.w", "BF16", rand_for(rng, "BF16", (4, 4))),
          T("model.layers.0.b", "F16", rand_for(rng, "F16", (4,)))]
    s2 = [T("model.layers.1.w", "BF16", rand_for(rng, "BF16", (4, 4))),
          T("model.norm", "F32", rand_for(rng, "F32", (4,))),
          T("lm_head", "F32", rand_for(rng, "F32", (3, 4)))]
    f1, f2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    write(s1, d / f1, {"format": "pt", "shard": "1"})
    write(s2, d / f2, {"format": "pt", "shard": "2"})
    wm = {t.name: f1 for t in s1}
    wm.update({t.name: f2 for t in s2})
    total = sum(t.arr.nbytes for t in s1 + s2)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    doc = {"metadata": {"format": "pt", "shard": "1"},
           "tensors": [dict(t.expected(), shard=f) for t, f in
                       [(t, f1) for t in s1] + [(t, f2) for t in s2]]}
    (d / "sharded.expected.json").write_text(json.dumps(doc, indent=1) + "\n")


def parity(rng):
    # Names that tie on dtype, sort differently as bytes than as numbers, and need escaping.
    single = [T("layers.10.weight", "F32", rand_for(rng, "F32", (2, 3))),
              T("layers.2.weight", "F32", rand_for(rng, "F32", (3,))),
              T("A.upper", "F32", rand_for(rng, "F32", (1,))),
              T("a_b", "I64", rand_for(rng, "I64", (2,))),
              T("a.b", "F64", rand_for(rng, "F64", (2, 1))),
              T("mask", "BOOL", rand_for(rng, "BOOL", (5,))),
              T("ids", "U8", rand_for(rng, "U8", (3,))),
              T("h", "F16", rand_for(rng, "F16", (3, 3))),
              T("s", "I16", rand_for(rng, "I16", (1,))),
              T("q\"uote\\back/slash\n\u00fcnicode\x01", "I32", rand_for(rng, "I32", (2,))),
              T("scalar", "F32", np.array(-1.5, np.float32)),
              T("zero", "F32", np.zeros((0, 3), np.float32))]
    meta1 = {"format": "np\t\"x\"\u00e9\x1f"}
    # Through save_file (the numpy front end) with numpy arrays, as a user would.
    save_file({t.name: t.arr for t in single}, str(OUT / "parity_single.safetensors"), metadata=meta1)
    write_expected(single, OUT / "parity_single.expected.json", meta1)

    every = [T(f"t.{d.lower()}", d, rand_for(rng, d, (2, 3))) for d in DTYPES]
    every += [T("u.bf16", "BF16", rand_for(rng, "BF16", (1,))), T("e", "F8_E5M2", np.zeros((2, 0), np.uint8))]
    write(every, OUT / "parity_nometa.safetensors")
    write_expected(every, OUT / "parity_nometa.expected.json")
    meta3 = {"zeta": "1", "alpha": "2", "mid": "three"}
    write(every, OUT / "parity_multimeta.safetensors", meta3)
    write_expected(every, OUT / "parity_multimeta.expected.json", meta3)


def raw(header, data=b"", hlen=None):
    h = header if isinstance(header, bytes) else header.encode()
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def corrupt():
    d = OUT / "corrupt"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    ok = '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    cases = [
        ("short", b"\x05\x00\x00", "shorter than the 8-byte header length", None),
        ("hlen_beyond", raw(ok, bytes(8), hlen=1000), "goes beyond the end of the file", None),
        ("hlen_absurd", raw(ok, bytes(8), hlen=1 << 62), "is absurd", None),
        ("bad_utf8", raw(b'{"t\xff":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "not valid UTF-8", None),
        ("bad_json", raw('{"t":{"dtype":"F32",', bytes(8)), "not valid JSON", None),
        ("not_object", raw("[1,2]"), "not a JSON object", None),
        ("entry_not_object", raw('{"t":[1]}'), "tensor 't': entry must be a JSON object", None),
        ("missing_dtype", raw('{"t":{"shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': missing 'dtype'", None),
        ("missing_shape", raw('{"t":{"dtype":"F32","data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': missing 'shape'", None),
        ("missing_offsets", raw('{"t":{"dtype":"F32","shape":[2]}}', bytes(8)),
         "tensor 't': missing 'data_offsets'", None),
        ("dtype_not_string", raw('{"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': 'dtype' must be a string", None),
        ("shape_not_array", raw('{"t":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': 'shape' must be an array", None),
        ("shape_float", raw('{"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': 'shape' must be an array of integers", None),
        ("offsets_one", raw('{"t":{"dtype":"F32","shape":[2],"data_offsets":[8]}}', bytes(8)),
         "tensor 't': 'data_offsets' must be [begin, end]", None),
        ("offsets_string", raw('{"t":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}}', bytes(8)),
         "tensor 't': 'data_offsets' must be [begin, end]", None),
        ("unknown_dtype", raw('{"t":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': unknown dtype 'F17'", None),
        ("negative_dim", raw('{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': negative dimension -2", None),
        ("numel_overflow", raw('{"t":{"dtype":"F32","shape":[4294967296,4294967296,0],'
                               '"data_offsets":[0,0]}}'), "tensor 't': numel overflow", None),
        ("bytes_overflow", raw('{"t":{"dtype":"F64","shape":[4611686018427387904],'
                               '"data_offsets":[0,0]}}'), "tensor 't': numel overflow", None),
        ("begin_gt_end", raw('{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', bytes(8)),
         "tensor 't': data_offsets begin 8 > end 0", None),
        ("end_beyond", raw('{"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(8)),
         "tensor 't': data_offsets end 12 is beyond the data area", None),
        ("size_mismatch", raw('{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)),
         "tensor 't': byte size 8 does not match", None),
        ("overlap", raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                        '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
         "overlaps tensor 'a'", None),
        ("hole", raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                     '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', bytes(12)),
         "before tensor 'b' belong to no tensor", None),
        ("trailing", raw(ok, bytes(12)), "trailing data bytes [8, 12) belong to no tensor", None),
        ("metadata_not_object", raw('{"__metadata__":["x"],' + ok[1:], bytes(8)),
         "'__metadata__' must be an object", None),
        ("metadata_not_string", raw('{"__metadata__":{"k":1},' + ok[1:], bytes(8)),
         "'__metadata__' value of 'k' must be a string", None),
        ("duplicate_key", raw('{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                              '"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
         "duplicate object key", None),
        ("too_many_dims", raw('{"t":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}}',
                              bytes(8)), "tensor 't': 9 dimensions", None),
    ]
    manifest = []
    for name, data, expect, _ in cases:
        fn = name + ".safetensors"
        (d / fn).write_bytes(data)
        try:
            safetensors.deserialize(data)
            py = None
        except Exception as e:  # noqa: BLE001 - any rejection counts
            py = f"{type(e).__name__}: {e}"
        manifest.append({"file": fn, "expect": expect, "python_rejects": py is not None,
                         "python_error": py})

    # Sharded checkpoints with broken indexes.
    good = np.arange(4, dtype=np.float32)

    def shard_case(name, weight_map, shards, expect, index_text=None):
        sd = d / name
        sd.mkdir()
        for fn, names in shards.items():
            save_file({n: good for n in names}, str(sd / fn))
        text = index_text if index_text is not None else json.dumps({"weight_map": weight_map})
        (sd / "model.safetensors.index.json").write_text(text)
        manifest.append({"file": f"{name}/model.safetensors.index.json", "expect": expect,
                         "python_rejects": None, "python_error": None})

    shard_case("shard_missing_tensor", {"a": "s1.safetensors", "b": "s1.safetensors"},
               {"s1.safetensors": ["a"]}, "tensor 'b' is listed in shard 's1.safetensors'")
    shard_case("shard_twice", {"a": "s1.safetensors", "b": "s2.safetensors"},
               {"s1.safetensors": ["a", "b"], "s2.safetensors": ["b"]}, "tensor 'b' is in two shards")
    shard_case("shard_wrong_file", {"a": "s2.safetensors", "b": "s1.safetensors"},
               {"s1.safetensors": ["a"], "s2.safetensors": ["b"]}, "tensor 'a' is listed in shard")
    shard_case("shard_file_absent", {"a": "s1.safetensors", "b": "nope.safetensors"},
               {"s1.safetensors": ["a", "b"]}, "nope.safetensors")
    shard_case("shard_unlisted", {"a": "s1.safetensors"}, {"s1.safetensors": ["a", "b"]},
               "tensor 'b' in shard")
    shard_case("index_no_weight_map", None, {"s1.safetensors": ["a"]}, "no \"weight_map\" object",
               index_text='{"metadata": {}}')
    shard_case("index_bad_json", None, {"s1.safetensors": ["a"]}, "index is not valid JSON",
               index_text='{"weight_map": {"a": "s1.safetensors",}')
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for m in manifest:
        if m["python_rejects"] is False:
            print(f"note: Python's safetensors accepts corrupt/{m['file']}; we reject it ({m['expect']})")


def fuzz_seeds(rng):
    if FUZZ.exists():
        shutil.rmtree(FUZZ)
    FUZZ.mkdir(parents=True)
    (FUZZ / "empty.safetensors").write_bytes(serialize({}, metadata=None))
    write([T("x", "F32", np.array(1.0, np.float32))], FUZZ / "scalar.safetensors")
    write([T("a", "F16", rand_for(rng, "F16", (2, 2))), T("b", "U8", np.zeros((0, 2), np.uint8)),
           T("c", "BF16", rand_for(rng, "BF16", (3,)))], FUZZ / "mixed.safetensors", {"format": "pt"})
    write([T(f"t{d}", d, rand_for(rng, d, (1,))) for d in DTYPES], FUZZ / "dtypes.safetensors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    all_dtypes(rng)
    sharded(rng)
    parity(rng)
    corrupt()
    fuzz_seeds(rng)
    total = sum(f.stat().st_size for p in (OUT, FUZZ) for f in p.rglob("*") if f.is_file())
    print(f"safetensors {safetensors.__version__}, numpy {np.__version__}: wrote {total} bytes of fixtures")
    if total > 300_000:
        sys.exit("fixtures exceed 300 KB")


if __name__ == "__main__":
    main()
