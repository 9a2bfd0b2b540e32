#!/usr/bin/env bash
# gen_fuzz_seeds.sh BUILD_DIR — regenerates the seed corpora of the libFuzzer harnesses in
# tests/golden/fuzz/ that are not copies of other fixtures: sp_model, json_stream, packed_store,
# code_store, model_config, state_json, bench_jsonl (image/ and safetensors/ come from
# tools/gen_image_fixtures.py and tools/gen_safetensors_fixtures.py). Needs the built tools
# (asvr-tokenize, asvr-pack) and zstd. Deterministic: a rerun writes the same bytes except the LMDB
# stores, whose free pages may differ.
set -euo pipefail
B="$1/bin"
cd "$(dirname "$0")/.."
G=tests/golden
F=$G/fuzz
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p $F/sp_model $F/json_stream $F/packed_store $F/code_store $F/model_config $F/state_json $F/bench_jsonl

# SentencePiece models: the tiny test model and the demo's
cp $G/sp/tiny_bpe.model $F/sp_model/tiny_bpe.model
cp examples/demo/demo_tokenizer.model $F/sp_model/demo.model

# JSON arrays: LLaVA samples, nesting, escapes (a \u0000 too), empty, zstd
cat > $F/json_stream/llava.json <<'JSON'
[{"id": "1", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]},
 {"id": 2, "conversations": [{"from": "human", "value": "hi \"there\" \\ \u00e9 \u0000 end"}, {"from": "gpt", "value": "[1, {2}]"}]}]
JSON
printf '[[1, [2, [3]]], {"a": {"b": []}}, "x,y]", 4.5e-3, null, true]' > $F/json_stream/nested.json
printf '[]' > $F/json_stream/empty.json
zstd -q -19 -c $F/json_stream/llava.json > $F/json_stream/llava.json.zst

# Packed stores: vicuna_v1 and plain, tiny tokenizer, 9 image positions
"$B/asvr-pack" build --template vicuna_v1 --tokenizer $G/sp/tiny_bpe.model --image-positions 9 --max-len 128 \
    --out $F/packed_store/it.pack --log-level error $F/json_stream/llava.json
"$B/asvr-pack" build --template plain --tokenizer $G/sp/tiny_bpe.model --image-positions 9 --max-len 64 --no-packing \
    --compress 0 --out $F/packed_store/pt_raw.pack --log-level error $G/train_cli/pt.json

# Code stores: two images of the tiny tokenizer, raw and zstd
printf 'photo0.jpg\njgray.jpg\n' > "$TMP/two.txt"
rm -f $F/code_store/*.lmdb
"$B/asvr-tokenize" encode --list "$TMP/two.txt" --image-root $G/images --tokenizer $G/tokenize/tiny_tokenizer.safetensors \
    --policy pad --threads 1 --out $F/code_store/raw.lmdb --log-level error
"$B/asvr-tokenize" encode --list "$TMP/two.txt" --image-root $G/images --tokenizer $G/tokenize/tiny_tokenizer.safetensors \
    --policy squash --threads 1 --compress --out $F/code_store/zstd.lmdb --log-level error

# Model configs
cp $G/train_cli/model.json $F/model_config/tiny.json
cp $G/train_cli/model_dual.json $F/model_config/dual.json
cp examples/llava15/model.json $F/model_config/llava15.json

# state.json of a checkpoint
cp $G/eval_ask/run/step-00000150/state.json $F/state_json/state.json

# Benchmark JSONL: the first byte picks the benchmark (its index in `asvr-eval benchmarks`)
{ printf '\x00'; cat $G/eval/textvqa.jsonl; } > $F/bench_jsonl/textvqa.bin
{ printf '\x05'; cat $G/eval/mme.jsonl; } > $F/bench_jsonl/mme.bin
{ printf '\x07'; cat $G/eval/gqa.jsonl; } > $F/bench_jsonl/gqa.bin
{ printf '\x0d'; cat $G/eval/pope.jsonl; } > $F/bench_jsonl/pope.bin
{ printf '\x04'; cat <<'JSON'; } > $F/bench_jsonl/mmbench.bin
{"question_id": 1, "image": "a.png", "question": "Which?", "options": ["x", "y", null, "nan"], "hint": "h", "answer": "A", "index": 1, "category": "c"}
{"question_id": 2, "image": "a.png", "question": "Which?", "options": ["y", "x"], "hint": null, "answer": "B", "index": 1000001, "category": "c"}
JSON
{ printf '\x0b'; cat <<'JSON'; } > $F/bench_jsonl/mmvp.bin
{"question_id": 1, "image": "1.jpg", "question": "Open?", "options_raw": "(a) Open (b) Closed", "answer": "(a)", "pair_id": 1}
{"question_id": 2, "image": "2.jpg", "question": "Open?", "options_raw": "(a) Open (b) Closed", "answer": "(b)", "pair_id": 1}
JSON
echo "seeds written under $F" >&2
