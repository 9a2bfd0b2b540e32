#!/usr/bin/env bash
# cli_makefile_llava15.sh BUILD_DIR GOLDEN_DIR — dry runs of examples/llava15/Makefile over stand-in
# inputs: the planned commands come in the recipe's order (codes → pack → train pt → train it → eval
# → report), every target is a file, and once the targets exist and are newer than their inputs,
# `make -q` / `make -n` have nothing to do. GPUS=8 and MPIRUN=... plan the parallel steps under the
# launcher (codes in parts + merge, both trainings, eval in parts + score); GPUS=1 plans today's commands.
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
check '! grep -qE -- "--shard|merge|mpirun|--device|asvr-eval score" "$TMP/plan.txt"' "GPUS=1 (default): one process per step, today's commands"

# GPUS=8: every parallel step under mpirun -np 8, one GPU each; codes in parts then merged; eval parts then scored.
make -n "${VARS[@]}" GPUS=8 > "$TMP/plan8.txt" 2> "$TMP/plan8.err"
check '[ $? -eq 0 ]' "make -n GPUS=8 plans the recipe ($(head -c 300 "$TMP/plan8.err"))"
O="$TMP/out"
l8() { grep -n -F -- "$1" "$TMP/plan8.txt" | head -1 | cut -d: -f1; }
for p in pt it; do
  check '[ "$(grep -c -F -- "mpirun -np 8 /nonexistent/bin/asvr-tokenize encode --shard auto" "$TMP/plan8.txt")" = 2 ] && grep -F -- "--out $O/codes-$p.lmdb --device cuda" "$TMP/plan8.txt" | grep -q "^mpirun -np 8 "' \
        "GPUS=8: codes-$p encoded in 8 parts on cuda"
  check '[ -n "$(l8 "asvr-tokenize merge --shards $O/codes-$p.lmdb")" ] && [ "$(l8 "codes-$p.lmdb --device cuda")" -lt "$(l8 "asvr-tokenize merge --shards $O/codes-$p.lmdb")" ] && [ "$(l8 "asvr-tokenize merge --shards $O/codes-$p.lmdb")" -lt "$(l8 "--codes $O/codes-$p.lmdb --out $O/$p.pack")" ]' \
        "GPUS=8: the parts of codes-$p are merged before pack reads the store"
  check 'grep -q -- "^mpirun -np 8 /nonexistent/bin/asvr-train train --stage $p " "$TMP/plan8.txt" && grep -A1 -- "--stage $p " "$TMP/plan8.txt" | grep -q -- "--out $O/runs/$p --device cuda"' \
        "GPUS=8: mpirun -np 8 asvr-train train --stage $p --device cuda"
done
for b in textvqa pope; do
  check 'grep -q -- "^mpirun -np 8 /nonexistent/bin/asvr-eval run --shard auto .* --bench $b " "$TMP/plan8.txt" && grep -q -F -- "/nonexistent/bin/asvr-eval score --bench $b --questions $D/eval/$b.jsonl --answers $O/eval/asvr/answers --out $O/eval/asvr/scores/$b.json" "$TMP/plan8.txt"' \
        "GPUS=8: $b answered in parts, then every part scored"
  check '[ "$(l8 "--bench $b ")" -lt "$(l8 "asvr-eval score --bench $b ")" ] && [ "$(l8 "asvr-eval score --bench $b ")" -lt "$(l8 "asvr-eval report")" ]' \
        "GPUS=8: $b scored after its parts, before the report"
done
check '[ "$(grep -c "^mpirun -np 8 " "$TMP/plan8.txt")" = 6 ] && ! grep -q "^mpirun.*asvr-pack" "$TMP/plan8.txt" && ! grep -q "^mpirun.*asvr-eval report" "$TMP/plan8.txt"' \
      "GPUS=8: 2 encodes, 2 trainings and 2 evals under mpirun; pack and report once"
# MPIRUN replaces the prefix (srun inside a Slurm allocation), whatever GPUS says.
make -n "${VARS[@]}" MPIRUN=srun GPUS=8 > "$TMP/plans.txt" 2> /dev/null
check '[ "$(grep -c "^srun /nonexistent/bin/" "$TMP/plans.txt")" = 6 ] && ! grep -q mpirun "$TMP/plans.txt" && [ "$(grep -c "asvr-tokenize merge --shards" "$TMP/plans.txt")" = 2 ] && [ "$(grep -c "asvr-eval score" "$TMP/plans.txt")" = 2 ]' \
      "MPIRUN=srun: the same plan under srun"
make -n "${VARS[@]}" MPIRUN="mpirun -np 16 --hostfile hosts" > "$TMP/planh.txt" 2> /dev/null
check '[ "$(grep -c "^mpirun -np 16 --hostfile hosts /nonexistent/bin/" "$TMP/planh.txt")" = 6 ]' "MPIRUN with its own options"
make -n "${VARS[@]}" GPUS=2 DEVICE=cpu > "$TMP/plancpu.txt" 2> /dev/null
check 'grep -q -- "--device cpu" "$TMP/plancpu.txt" && ! grep -q -- "--device cuda" "$TMP/plancpu.txt"' "DEVICE overrides the device of the parts"

# The paper's other settings, each a variable (issue: Mistral-7B, Vicuna-13B, LLaVA-NeXT-779K / Bunny, the ablations).
mkdir -p "$M/mistral" "$M/v13" "$D/next" "$D/bunny"
touch "$M/mistral/tokenizer.model" "$M/mistral/model.safetensors.index.json" "$M/v13/tokenizer.model" \
      "$M/v13/model.safetensors.index.json" "$D/next/llava_next_779k.json.zst" "$D/bunny/bunny_pretrain_laion_2m.json" "$M/app.safetensors" "$M/tok3m.safetensors"
check '! grep -qE -- "--masking|--visual-loss|--input|--codes-app|--template mistral|model-(13b|mistral)" "$TMP/plan.txt"' \
      "the default plan has none of the variant flags"
plan() { local out="$1"; shift; make -n "${VARS[@]}" "$@" > "$out" 2> "$out.err"; }
plan "$TMP/pm.txt" LLM=mistral-7b LLM_DIR="$M/mistral"
check '[ $? -eq 0 ] && grep -q -- "--template mistral_instruct --tokenizer $M/mistral/tokenizer.model" "$TMP/pm.txt" && grep -q -- "--template plain --tokenizer $M/mistral/tokenizer.model" "$TMP/pm.txt"' \
      "LLM=mistral-7b: packs with mistral_instruct (it) and plain (pt) and Mistral's tokenizer ($(head -c 200 "$TMP/pm.txt.err"))"
check '[ "$(grep -c -- "--config model-mistral.json" "$TMP/pm.txt")" = 2 ] && grep -q -- "--llm $M/mistral/model.safetensors.index.json" "$TMP/pm.txt"' \
      "LLM=mistral-7b: both stages train model-mistral.json from the Mistral weights"
check '[ "$(grep -c -- "asvr-eval run .*--tokenizer $M/mistral/tokenizer.model --template mistral_instruct --bench" "$TMP/pm.txt")" = 2 ]' \
      "LLM=mistral-7b: the evals prompt with mistral_instruct"
plan "$TMP/p13.txt" LLM=vicuna-13b LLM_DIR="$M/v13"
check '[ "$(grep -c -- "--config model-13b.json" "$TMP/p13.txt")" = 2 ] && grep -q -- "--template vicuna_v1 --tokenizer $M/v13/tokenizer.model" "$TMP/p13.txt" && ! grep -q -- "--template mistral" "$TMP/p13.txt"' \
      "LLM=vicuna-13b: model-13b.json, vicuna_v1"
plan "$TMP/pbad.txt" LLM=gpt2
check '[ $? -ne 0 ] && grep -q "LLM must be" "$TMP/pbad.txt.err"' "an unknown LLM is refused"
plan "$TMP/pd.txt" PT_JSON="$D/bunny/bunny_pretrain_laion_2m.json" IT_JSON="$D/next/llava_next_779k.json.zst" PT_IMAGES="$D/bunny" IT_IMAGES="$D/next" \
     MASKING=corrected PACK_FLAGS="--image-without-placeholder ignore"
check 'grep -q -- "--json $D/bunny/bunny_pretrain_laion_2m.json --image-root $D/bunny " "$TMP/pd.txt" && grep -q -- "--json $D/next/llava_next_779k.json.zst --image-root $D/next " "$TMP/pd.txt"' \
      "PT_JSON / IT_JSON (Bunny, LLaVA-NeXT .json.zst) reach the encodes"
check '[ "$(grep -c -- "--masking corrected --image-without-placeholder ignore $D/" "$TMP/pd.txt")" = 2 ] && grep -q -- "--image-root $D/next --out" "$TMP/pd.txt"' \
      "MASKING and PACK_FLAGS reach both packs, IT_IMAGES the it training"
plan "$TMP/pv.txt" PT_VISUAL_LOSS=none
check 'grep -A1 -e "--stage pt" "$TMP/pv.txt" | grep -q -- "--visual-loss none" && ! grep -A1 -e "--stage it" "$TMP/pv.txt" | grep -q -- "--visual-loss"' \
      "PT_VISUAL_LOSS=none: the visual loss in stage it only (Table 4)"
plan "$TMP/pn.txt" VISUAL_LOSS=none INPUT=discrete
check '[ "$(grep -c -- "--visual-loss none --input discrete" "$TMP/pn.txt")" = 2 ]' "VISUAL_LOSS=none INPUT=discrete: both stages"
check '[ "$(grep "asvr-eval run" "$TMP/pn.txt" | grep -c -- "--codebooks ")" = "$(grep -c "asvr-eval run" "$TMP/pn.txt")" ] && ! grep "asvr-eval run" "$TMP/pn.txt" | grep -q -- "--vision"' \
      "INPUT=discrete: every eval encodes its images with the tokenizer (--codebooks), no SigLIP"
plan "$TMP/pa.txt" VISUAL_LOSS=both TOKENIZER_APP="$M/app.safetensors"
check '[ "$(grep -c "asvr-tokenize encode" "$TMP/pa.txt")" = 4 ] && grep -q -- "--tokenizer $M/app.safetensors --policy pad --out $TMP/out/codes-it-app.lmdb" "$TMP/pa.txt"' \
      "VISUAL_LOSS=both: the appearance tokenizer's stores are encoded too"
check 'grep -q -- "--visual-loss both --codes-app $TMP/out/codes-pt-app.lmdb --codebooks-app $M/app.safetensors" "$TMP/pa.txt" && grep -q -- "--codes-app $TMP/out/codes-it-app.lmdb" "$TMP/pa.txt"' \
      "VISUAL_LOSS=both: each stage trains with its appearance store (Table 1, Dual)"
plan "$TMP/pa2.txt" VISUAL_LOSS=appearance
check '[ $? -ne 0 ] && grep -q "TOKENIZER_APP" "$TMP/pa2.txt.err"' "VISUAL_LOSS=appearance without TOKENIZER_APP is refused"
plan "$TMP/p3m.txt" TOKENIZER="$M/tok3m.safetensors" OUT="$TMP/out3m"
check '[ "$(grep -c -- "--tokenizer $M/tok3m.safetensors --policy" "$TMP/p3m.txt")" = 2 ] && [ "$(grep -c -- "--codebooks $M/tok3m.safetensors" "$TMP/p3m.txt")" = 2 ] && grep -q -- "--out $TMP/out3m/codes-it.lmdb" "$TMP/p3m.txt"' \
      "TOKENIZER=DualToken-3M with its own OUT: its own code stores and codebooks"
# S2=1: the high-resolution variant: the S2 model config, LLaVA-NeXT-779K for stage it, codes of images
# prepared at 1152 and downsampled to 384, its own output folder; pt keeps LLaVA-558K.
mkdir -p "$D/LLaVA-NeXT-Data" && touch "$D/LLaVA-NeXT-Data/llava_next_779k.json"
make -n "${VARS[@]}" S2=1 OUT="$TMP/out-s2" > "$TMP/plans2.txt" 2> "$TMP/plans2.err"
check '[ $? -eq 0 ]' "make -n S2=1 plans the recipe ($(head -c 300 "$TMP/plans2.err"))"
check '[ "$(grep -c -- "asvr-tokenize encode .*--input-size 1152 --downsample bilinear" "$TMP/plans2.txt")" = 2 ]'       "S2=1: both code stores from images prepared at 1152, bilinear to 384"
check '[ "$(grep -c -- "--config model-s2.json" "$TMP/plans2.txt")" = 2 ] && grep -q -- "--json $D/LLaVA-NeXT-Data/llava_next_779k.json" "$TMP/plans2.txt" && grep -q -- "--json $D/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json" "$TMP/plans2.txt" && ! grep -q "mix665k" "$TMP/plans2.txt"'       "S2=1: model-s2.json for both stages, LLaVA-558K for pt and LLaVA-NeXT-779K for it"
check 'grep -q -- "--out $TMP/out-s2/codes-it.lmdb" "$TMP/plans2.txt" && ! grep -q -- "--input-size" "$TMP/plan.txt"'       "S2=1 writes its own stores; the default recipe has no --input-size"

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
