#!/usr/bin/env bash
# cli_makefile_llava15.sh BUILD_DIR GOLDEN_DIR — dry runs of examples/llava15/Makefile over stand-in
# inputs: the planned commands come in the recipe's order (codes → pack → train pt → train it → eval
# → report), every target is a file, and once the targets exist and are newer than their inputs,
# `make -q` / `make -n` have nothing to do.
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
MK="$HERE/examples/llava15/Makefile"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
command -v make > /dev/null || { echo "SKIPPED: make is not installed"; exit 77; } # 77: ctest's SKIP_RETURN_CODE

D="$TMP/data"; M="$TMP/models"
mkdir -p "$D/LLaVA-Pretrain/images" "$D/eval" "$M/vicuna"
touch "$D/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json" "$D/llava_v1_5_mix665k.json" "$M/vicuna/tokenizer.model" \
      "$M/vicuna/model.safetensors.index.json" "$M/siglip.safetensors" "$M/tok.safetensors" "$D/eval/textvqa.jsonl" "$D/eval/pope.jsonl"
VARS=(--no-print-directory -f "$MK" -C "$HERE/examples/llava15" DATA="$D" VICUNA="$M/vicuna" SIGLIP="$M/siglip.safetensors"
      TOKENIZER="$M/tok.safetensors" OUT="$TMP/out" BENCH="textvqa pope" ASVR=/nonexistent/bin)
make -n "${VARS[@]}" > "$TMP/plan.txt" 2> "$TMP/plan.err"
check '[ $? -eq 0 ]' "make -n plans the recipe ($(head -c 300 "$TMP/plan.err"))"
line() { grep -n -- "$1" "$TMP/plan.txt" | head -1 | cut -d: -f1; }
last() { grep -n -- "$1" "$TMP/plan.txt" | tail -1 | cut -d: -f1; }
check '[ "$(line "policy squash")" -lt "$(line "template plain")" ] && [ "$(line "template plain")" -lt "$(line "stage pt")" ]' \
      "pt: codes, then pack, then train"
check '[ "$(line "policy pad")" -lt "$(line "template vicuna_v1")" ] && [ "$(line "template vicuna_v1")" -lt "$(line "stage it")" ] && [ "$(line "stage pt")" -lt "$(line "stage it")" ]' \
      "it: codes, then pack, then train after pt"
check '[ "$(line "stage it")" -lt "$(line "asvr-eval run")" ] && [ "$(last "asvr-eval run")" -lt "$(line "asvr-eval report")" ]' \
      "eval after training, the report last"
check '[ "$(grep -c "asvr-tokenize encode" "$TMP/plan.txt")" = 2 ] && grep -q -- "--policy squash" "$TMP/plan.txt" && grep -q -- "--policy pad" "$TMP/plan.txt"' \
      "codes for both policies"
check 'grep -q -- "--template plain" "$TMP/plan.txt" && grep -q -- "--template vicuna_v1" "$TMP/plan.txt"' "both templates"
check '[ "$(grep -c "asvr-eval run" "$TMP/plan.txt")" = 2 ]' "one eval run per benchmark"
check 'grep -q "^\.DELETE_ON_ERROR:" "$MK"' ".DELETE_ON_ERROR is set"

# After a successful run (targets made in order, each newer than its inputs) there is nothing to do.
O="$TMP/out"
mkdir -p "$O/runs/pt/step-00000001" "$O/runs/it" "$O/eval/asvr/scores"
for f in codes-pt.lmdb codes-it.lmdb pt.pack it.pack runs/pt/DONE runs/it/DONE eval/asvr/scores/textvqa.json \
         eval/asvr/scores/pope.json report.md; do
  sleep 0.01; touch "$O/$f"
done
ln -sfn "$O/runs/pt/step-00000001" "$O/runs/pt/last"
make -q "${VARS[@]}"; check '[ $? -eq 0 ]' "make -q: up to date after a successful run"
check '[ "$(make -n "${VARS[@]}" 2> /dev/null)" = "make: Nothing to be done for '\''all'\''." ]' "make -n has nothing to do after a successful run"
# Touching the it data makes codes-it, it.pack, the it run, the evals and the report stale — not pt.
sleep 0.01; touch "$D/llava_v1_5_mix665k.json"
make -n "${VARS[@]}" > "$TMP/plan2.txt" 2> /dev/null
check 'grep -q -- "--policy pad" "$TMP/plan2.txt" && ! grep -q -- "--policy squash" "$TMP/plan2.txt" && ! grep -q -- "--stage pt" "$TMP/plan2.txt" && grep -q "asvr-eval report" "$TMP/plan2.txt"' \
      "a changed it JSON rebuilds only what depends on it"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
