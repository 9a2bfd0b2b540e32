#!/usr/bin/env bash
# cli_tokenize_fit.sh BUILD_DIR GOLDEN_DIR — asvr-tokenize fit as a user runs it: a tokenizer fitted on
# the fixture images with the tiny encoder is usable by encode; the output is byte-identical across
# reruns and --threads, differs with another seed; a rerun with the same request is a no-op; bad
# requests fail with a clear message (exit 1) and usage errors exit 2.
set -u
BIN="$1/bin/asvr-tokenize"
G="$2"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { if eval "$1"; then ok; else bad "$2"; fi; }

TOK="$G/tokenize/tiny_tokenizer.safetensors"
FIT=("$BIN" fit --encoder "$TOK" --list "$G/tokenize/images.txt" --image-root "$G/images" --policy pad --depth 2 --codebook-size 16 --log-level error)

"${FIT[@]}" --out "$TMP/a.safetensors" --stats "$TMP/a.json"; check '[ $? -eq 0 ] && [ -f "$TMP/a.safetensors" ]' "fit exits 0 and writes the file"
check '! ls "$TMP" | grep -q "\.tmp\."' "no temp file left"
check 'grep -q "\"images_used\": 14" "$TMP/a.json" && grep -q "\"images_rejected\": 3" "$TMP/a.json" && grep -q "\"vectors\": 126" "$TMP/a.json"' "stats: 14 images, 3 rejected, 126 vectors"

# encode with the new tokenizer; the store records D = 2, K = 16 and every code is < 16.
"$BIN" encode --list "$G/tokenize/images.txt" --image-root "$G/images" --tokenizer "$TMP/a.safetensors" --policy pad --out "$TMP/s.lmdb" --log-level error
check '[ $? -eq 0 ]' "encode with the fitted tokenizer"
"$BIN" stats "$TMP/s.lmdb" > "$TMP/s.txt" 2>&1
check 'grep -q "2 depths, K = 16" "$TMP/s.txt" && grep -q "14 records" "$TMP/s.txt"' "store made with it: 14 records, D 2, K 16"
"$BIN" verify "$TMP/s.lmdb" > /dev/null 2>&1; check '[ $? -eq 0 ]' "verify: codes in range"
# its fingerprint differs from the source's, so the source's store refuses it
"$BIN" encode --list "$G/tokenize/images.txt" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/src.lmdb" --log-level error
"$BIN" encode --list "$G/tokenize/images.txt" --image-root "$G/images" --tokenizer "$TMP/a.safetensors" --policy pad --out "$TMP/src.lmdb" 2> "$TMP/mix.err"
check '[ $? -eq 1 ] && grep -q "refusing to mix" "$TMP/mix.err"' "a store of the source tokenizer refuses the fitted one"

# Determinism: rerun, other --threads, OpenBLAS thread count: byte-identical. Another seed: different.
"${FIT[@]}" --out "$TMP/b.safetensors"; check 'cmp -s "$TMP/a.safetensors" "$TMP/b.safetensors"' "two runs byte-identical"
"${FIT[@]}" --out "$TMP/t1.safetensors" --threads 1; check 'cmp -s "$TMP/a.safetensors" "$TMP/t1.safetensors"' "--threads 1 byte-identical"
OPENBLAS_NUM_THREADS=2 "${FIT[@]}" --out "$TMP/t5.safetensors" --threads 5; check 'cmp -s "$TMP/a.safetensors" "$TMP/t5.safetensors"' "--threads 5 byte-identical"
"${FIT[@]}" --out "$TMP/s1.safetensors" --seed 1; check '[ $? -eq 0 ] && ! cmp -s "$TMP/a.safetensors" "$TMP/s1.safetensors"' "another seed gives another file"

# A rerun with the same request does nothing; another request replaces the file.
before=$(stat -c %Y.%s.%i "$TMP/a.safetensors")
"${FIT[@]}" --out "$TMP/a.safetensors" --log-level info 2> "$TMP/noop.err"
check '[ $? -eq 0 ] && grep -q "nothing to do" "$TMP/noop.err" && [ "$(stat -c %Y.%s.%i "$TMP/a.safetensors")" = "$before" ]' "same request: no-op"
cp "$TMP/a.safetensors" "$TMP/r.safetensors"
"${FIT[@]}" --out "$TMP/r.safetensors" --seed 1; check '[ $? -eq 0 ] && cmp -s "$TMP/r.safetensors" "$TMP/s1.safetensors"' "another request replaces the file"

# Sample, tap layer, squash: all usable by encode.
"${FIT[@]}" --out "$TMP/p.safetensors" --sample 5 --tap-layer 2 --iters 3 --stats "$TMP/p.json"
check '[ $? -eq 0 ] && grep -q "\"images_sampled\": 5" "$TMP/p.json" && grep -q "\"tap_layer\": 2" "$TMP/p.json"' "--sample 5 --tap-layer 2"
"$BIN" encode --list "$G/tokenize/images.txt" --image-root "$G/images" --tokenizer "$TMP/p.safetensors" --policy squash --out "$TMP/p.lmdb" --log-level error
check '[ $? -eq 0 ]' "encode with a tap-2 tokenizer"

# Failures (exit 1, a reason): K above the vectors, not a tokenizer, a tap beyond the file, memory cap.
"${FIT[@]}" --out "$TMP/e.safetensors" --codebook-size 200 2> "$TMP/e.err"
check '[ $? -eq 1 ] && grep -q "larger than the 153 training vectors" "$TMP/e.err" && [ ! -e "$TMP/e.safetensors" ]' "K > vectors refused"
"${FIT[@]}" --out "$TMP/e.safetensors" --sample 1 --codebook-size 10 2> "$TMP/e.err"
check '[ $? -eq 1 ] && grep -q "larger than the" "$TMP/e.err"' "K > vectors of the sample refused"
"${FIT[@]}" --encoder "$G/safetensors/parity_single.safetensors" --out "$TMP/e.safetensors" 2> "$TMP/e.err"
check '[ $? -eq 1 ] && grep -q "not an asvr tokenizer" "$TMP/e.err"' "a safetensors file that is not a tokenizer"
"${FIT[@]}" --encoder "$G/images/photo0.jpg" --out "$TMP/e.safetensors" 2> /dev/null; check '[ $? -eq 1 ]' "a JPEG as --encoder"
"${FIT[@]}" --out "$TMP/e.safetensors" --tap-layer 9 2> "$TMP/e.err"; check '[ $? -eq 1 ] && grep -q "tap" "$TMP/e.err"' "tap beyond the layers"
"${FIT[@]}" --out "$TMP/e.safetensors" --tap-layer 4 2> "$TMP/e.err"; check '[ $? -eq 1 ] && grep -q "layers.3" "$TMP/e.err"' "tap beyond the file's layers names the missing tensor"
for i in $(seq 0 2999); do echo "img$i.jpg"; done > "$TMP/many.txt"
"$BIN" fit --encoder "$TOK" --list "$TMP/many.txt" --policy pad --depth 2 --codebook-size 16 --max-memory 1 --out "$TMP/e.safetensors" 2> "$TMP/e.err"
check '[ $? -eq 1 ] && grep -q "max-memory" "$TMP/e.err" && grep -q "3000 images x 9 positions x 48 floats" "$TMP/e.err"' "memory cap refused before decoding"
check '[ ! -e "$TMP/e.safetensors" ]' "failed runs write nothing"

# Usage errors exit 2.
"$BIN" fit --bogus 2> /dev/null; check '[ $? -eq 2 ]' "unknown flag"
"$BIN" fit --encoder "$TOK" --list "$G/tokenize/images.txt" --policy pad --codebook-size 16 --out "$TMP/x" 2> /dev/null; check '[ $? -eq 2 ]' "missing --depth"
"${FIT[@]}" --out "$TMP/x" --codebook-size 70000 2> /dev/null; check '[ $? -eq 2 ]' "K > 65536"
"${FIT[@]}" --out "$TMP/x" --policy crop 2> /dev/null; check '[ $? -eq 2 ]' "bad policy"
"$BIN" fit --help | grep -q -- "--codebook-size"; check '[ $? -eq 0 ]' "--help lists the flags"
"$BIN" --help | grep -q "fit"; check '[ $? -eq 0 ]' "fit is in the command table"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
