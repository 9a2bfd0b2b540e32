#!/usr/bin/env bash
# run.sh BUILD_DIR [WORK_DIR] — the embedded demo, end to end on the CPU:
#   generate the synthetic data → codes (squash for pt, pad for it) → pack (plain, vicuna_v1) →
#   train pt → train it, once as ASVR and once as the LLaVA baseline (--visual-loss none) →
#   answer the held-out questions → the score table (baseline vs ASVR) and the loss plot.
# Every step is a real tool call a user would make; a rerun skips what is already finished.
set -euo pipefail
BUILD=$(cd "${1:?usage: run.sh BUILD_DIR [WORK_DIR]}" && pwd)
BIN="$BUILD/bin"
HERE=$(cd "$(dirname "$0")" && pwd)
W=${2:-demo-run}
mkdir -p "$W"
W=$(cd "$W" && pwd)
TOK="$HERE/demo_vision_tokenizer.safetensors"   # vision tokenizer = the frozen input tower too
SP="$HERE/demo_tokenizer.model"
CFG="$HERE/model.json"
T0=$(date +%s)
say() { printf '\n== %s (%ds)\n' "$*" $(( $(date +%s) - T0 )) >&2; }

say "generate the data"
"$BIN/asvr-demo-gen" --out "$W/data" --seed 0 --max-shapes 1 --eval 40
IMG="$W/data/images"

say "visual codes: squash for stage pt, pad for stage it"
"$BIN/asvr-tokenize" encode --json "$W/data/pt.json" --image-root "$IMG" --tokenizer "$TOK" --policy squash --out "$W/codes-pt.lmdb"
"$BIN/asvr-tokenize" encode --json "$W/data/it.json" --image-root "$IMG" --tokenizer "$TOK" --policy pad --out "$W/codes-it.lmdb"

say "pack: plain for pt, vicuna_v1 for it"
"$BIN/asvr-pack" build --template plain --tokenizer "$SP" --codes "$W/codes-pt.lmdb" --max-len 256 --out "$W/pt.pack" "$W/data/pt.json"
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$W/codes-it.lmdb" --max-len 256 --out "$W/it.pack" "$W/data/it.json"

# held-out questions, one file per kind
for b in demo_yesno demo_mc demo_short; do
  grep -E "\"benchmark\": ?\"$b\"" "$W/data/eval.jsonl" > "$W/$b.jsonl.tmp" && mv "$W/$b.jsonl.tmp" "$W/$b.jsonl"
done

COMMON=(--config "$CFG" --image-root "$IMG" --vision "$TOK" --codebooks "$TOK" --rows 4 --accum 1 --log-level warn)
for run in baseline asvr; do
  loss=semantic; [ "$run" = baseline ] && loss=none
  say "train $run: stage pt"
  "$BIN/asvr-train" train "${COMMON[@]}" --stage pt --visual-loss "$loss" --packed "$W/pt.pack" --codes "$W/codes-pt.lmdb" \
      --epochs 1 --lr 1e-3 --out "$W/$run/pt"
  ptck=$(ls -d "$W/$run/pt"/step-* | tail -1)
  say "train $run: stage it (everything but the tower), from $(basename "$ptck")"
  "$BIN/asvr-train" train "${COMMON[@]}" --stage it --visual-loss "$loss" --packed "$W/it.pack" --codes "$W/codes-it.lmdb" \
      --init "$ptck/model.safetensors" --epochs 6 --lr 2e-3 --out "$W/$run/it"
  say "eval $run on the held-out questions"
  for b in demo_yesno demo_mc demo_short; do
    "$BIN/asvr-eval" run --checkpoint "$W/$run/it" --vision "$TOK" --tokenizer "$SP" --bench "$b" \
        --questions "$W/$b.jsonl" --image-root "$IMG" --out "$W/eval/$run" --batch 32 --log-level warn
  done
done

say "plots and the table"
"$BIN/asvr-train" plot "$W/asvr/it/log.jsonl" "$W/asvr-it-loss.png" --log-level warn
"$BIN/asvr-train" plot "$W/baseline/it/log.jsonl" "$W/baseline-it-loss.png" --log-level warn
echo
echo "Held-out accuracy (%), LLaVA baseline vs ASVR (chance: yes/no 50, MC 33, short answers about 25):"
"$BIN/asvr-eval" report --table demo --compare --markdown "$W/scores.md" "$W/eval/baseline" "$W/eval/asvr"
echo
echo "loss curves: $W/asvr-it-loss.png (ASVR), $W/baseline-it-loss.png (baseline); runs in $W; $(( $(date +%s) - T0 )) s in all"
