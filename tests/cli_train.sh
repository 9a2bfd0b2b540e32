#!/usr/bin/env bash
# cli_train.sh BUILD_DIR GOLDEN_DIR — the chain a user runs, at a tiny size on the CPU:
# encode codes (squash for pt, pad for it) → pack pt and it → train pt → train it from the pt
# checkpoint. Checks that text and visual losses fall and code accuracy rises above chance, that a run
# stopped and resumed equals an uninterrupted one bit for bit, the baseline (--visual-loss none) and
# --input discrete, the loss plot, and that an image without codes is refused before any step.
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level warn"

"$BIN/asvr-tokenize" encode --json "$F/pt.json" --image-root "$G/images" --tokenizer "$TOK" --policy squash --out "$TMP/pt.lmdb" $Q
"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/it.lmdb" $Q
"$BIN/asvr-pack" build --template plain --tokenizer "$SP" --codes "$TMP/pt.lmdb" --max-len 64 --out "$TMP/pt.pack" $Q "$F/pt.json"
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
check '[ -f "$TMP/pt.pack" ] && [ -f "$TMP/it.pack" ]' "stores built"

COMMON=(--config "$F/model.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 --accum 1 $Q)
"$BIN/asvr-train" train "${COMMON[@]}" --stage pt --packed "$TMP/pt.pack" --codes "$TMP/pt.lmdb" --steps 16 --lr 3e-3 --out "$TMP/pt"
check '[ $? -eq 0 ] && [ -f "$TMP/pt/step-00000016/DONE" ] && [ "$(wc -l < "$TMP/pt/log.jsonl")" = 16 ]' "stage pt trains and checkpoints"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 48 --lr 3e-3 \
    --init "$TMP/pt/step-00000016/model.safetensors" --out "$TMP/it"
check '[ $? -eq 0 ] && [ "$(wc -l < "$TMP/it/log.jsonl")" = 48 ]' "stage it trains from the pt checkpoint"

# Learning: mean of the first 6 logged losses vs the last 6 (null entries skipped), accuracy vs chance.
avg() { # avg FILE KEY FROM TO  (1-based line range)
  sed -n "$3,$4p" "$1" | grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2 | awk '{s+=$1; n++} END {if (n) printf "%.6f", s/n; else print "nan"}'
}
t0=$(avg "$TMP/it/log.jsonl" text_loss 1 6); t1=$(avg "$TMP/it/log.jsonl" text_loss 43 48)
v0=$(avg "$TMP/it/log.jsonl" visual_loss 1 6); v1=$(avg "$TMP/it/log.jsonl" visual_loss 43 48)
check 'awk "BEGIN{exit !($t1 < 0.8 * $t0)}"' "text loss falls ($t0 → $t1)"
check 'awk "BEGIN{exit !($v1 < 0.8 * $v0)}"' "visual loss falls ($v0 → $v1)"
acc=$(sed -n '43,48p' "$TMP/it/log.jsonl" | grep -o '"code_accuracy_depth":\[[0-9.e+-]*' | cut -d[ -f2 | awk '{s+=$1; n++} END {printf "%.4f", s/n}')
check 'awk "BEGIN{exit !($acc > 4.0 / 64)}"' "depth-0 code accuracy $acc is well above chance (1/64)"

# Visual reconstruction diagnostics: per-depth code accuracy of the trained head (asvr-eval codes).
"$BIN/asvr-eval" codes --checkpoint "$TMP/it" --vision "$TOK" --tokenizer "$SP" --codebooks "$TOK" --packed "$TMP/it.pack" \
    --codes "$TMP/it.lmdb" --image-root "$G/images" $Q > "$TMP/codes.json"
d0=$(tr -d ' \n' < "$TMP/codes.json" | grep -o '"code_accuracy_depth":\[[0-9.e+-]*' | cut -d[ -f2)
check '[ -n "$d0" ] && awk "BEGIN{exit !($d0 > 4.0 / 64)}"' "asvr-eval codes: depth-0 accuracy $d0 above chance"

# Stop after 3 steps and resume == 6 steps straight: same log (timings aside), same parameters.
RUN=("$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 6 --lr 3e-3)
"${RUN[@]}" --out "$TMP/ra"
"${RUN[@]}" --out "$TMP/rb" --stop-after 3
check '[ -f "$TMP/rb/step-00000003/DONE" ] && [ ! -e "$TMP/rb/step-00000006" ]' "--stop-after leaves a checkpoint at step 3"
"${RUN[@]}" --out "$TMP/rb"
strip() { sed 's/"seconds":[^,]*,//; s/"tokens_per_s":[^}]*//' "$1"; }
check 'cmp -s "$TMP/ra/step-00000006/model.safetensors" "$TMP/rb/step-00000006/model.safetensors"' "resumed parameters equal the uninterrupted run's"
check 'cmp -s "$TMP/ra/step-00000006/optimizer.safetensors" "$TMP/rb/step-00000006/optimizer.safetensors"' "resumed optimizer state equal"
check '[ "$(strip "$TMP/ra/log.jsonl")" = "$(strip "$TMP/rb/log.jsonl")" ]' "resumed losses equal bit for bit"
# A checkpoint written while the next step's data is being prefetched records the cursor of the data
# trained on: resuming from it gives the uninterrupted run. Without prefetching, the same losses.
"${RUN[@]}" --out "$TMP/rc" --save-every 3
mkdir -p "$TMP/rd" && cp -r "$TMP/rc/step-00000003" "$TMP/rd/"
"${RUN[@]}" --out "$TMP/rd"
check 'cmp -s "$TMP/ra/step-00000006/model.safetensors" "$TMP/rd/step-00000006/model.safetensors"' "resumed from a checkpoint taken mid-run (prefetching): parameters equal"
"${RUN[@]}" --out "$TMP/re" --no-prefetch
check '[ "$(strip "$TMP/ra/log.jsonl")" = "$(strip "$TMP/re/log.jsonl")" ]' "--no-prefetch: the same losses bit for bit"

# The LLaVA baseline and the discrete-input variant run.
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 3 --visual-loss none --out "$TMP/none"
check '[ $? -eq 0 ] && grep -q "\"visual_loss\":null" "$TMP/none/log.jsonl"' "--visual-loss none trains the text loss only"
"$BIN/asvr-train" train --config "$F/model.json" --codebooks "$TOK" --rows 2 --accum 1 $Q --stage pt --packed "$TMP/pt.pack" \
    --codes "$TMP/pt.lmdb" --steps 3 --input discrete --out "$TMP/disc"
check '[ $? -eq 0 ] && [ -f "$TMP/disc/step-00000003/DONE" ]' "--input discrete trains without the vision tower"

"$BIN/asvr-train" plot "$TMP/it/log.jsonl" "$TMP/loss.png" $Q
check '[ "$(head -c 4 "$TMP/loss.png" | od -An -tx1 | tr -d " ")" = "89504e47" ]' "plot writes a PNG"

"$BIN/asvr-train" export "$TMP/it/step-00000048" "$TMP/export" --vision "$TOK" --tokenizer "$SP" $Q
check '[ $? -eq 0 ] && [ -f "$TMP/export/model.safetensors" ] && grep -q "multi_modal_projector" "$TMP/export/model.safetensors" && [ -f "$TMP/export/visual_head.safetensors" ] && grep -q "codebook_size" "$TMP/export/visual_head_config.json"' \
      "export writes a transformers LLaVA folder, the visual head in its own file"
"$BIN/asvr-eval" codes --checkpoint "$TMP/export" --tokenizer "$SP" --codebooks "$TOK" --packed "$TMP/it.pack" \
    --codes "$TMP/it.lmdb" --image-root "$G/images" $Q > "$TMP/codes-export.json"
check '[ "$(tr -d " \n" < "$TMP/codes-export.json" | grep -o "\"code_accuracy_depth\":\[[0-9.e+-]*")" = "\"code_accuracy_depth\":[$d0" ]' "asvr-eval codes reads the exported visual head: the same accuracy"
"$BIN/asvr-train" export --format llava "$TMP/it/step-00000048" "$TMP/export-llava" --vision "$TOK" $Q
check '[ $? -eq 0 ] && grep -q "mm_projector_type" "$TMP/export-llava/config.json" && grep -q "mm_vision_tower" "$TMP/export-llava/config.json"' "export --format llava writes LLaVA's layout"
"$BIN/asvr-train" export "$TMP/it/step-00000048" "$TMP/export" --vision "$TOK" --tokenizer "$SP" 2> /dev/null; check '[ $? -eq 1 ]' "export refuses an existing folder"

# Table 1's App. and Dual rows: a second head on a second tokenizer's codes (here the same tiny
# tokenizer stands in for the appearance one: the mechanics are what is checked).
"$BIN/asvr-train" train "${COMMON[@]}" --config "$F/model_dual.json" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" \
    --codes-app "$TMP/it.lmdb" --codebooks-app "$TOK" --visual-loss both --steps 3 --out "$TMP/dual"
check '[ $? -eq 0 ] && grep -q "\"appearance_loss\":[0-9]" "$TMP/dual/log.jsonl" && grep -q "\"visual_loss\":[0-9]" "$TMP/dual/log.jsonl"' "--visual-loss both trains two heads"
"$BIN/asvr-train" train "${COMMON[@]}" --config "$F/model_dual.json" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" \
    --codes-app "$TMP/it.lmdb" --codebooks-app "$TOK" --visual-loss appearance --steps 2 --out "$TMP/app"
check '[ $? -eq 0 ] && grep -q "\"visual_loss\":null" "$TMP/app/log.jsonl" && grep -q "\"appearance_loss\":[0-9]" "$TMP/app/log.jsonl"' "--visual-loss appearance trains the appearance head only"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --visual-loss both --steps 1 --out "$TMP/x" 2> /dev/null
check '[ $? -eq 2 ]' "--visual-loss both without --codes-app is a usage error"
# A config without visual_head_appearance: the head is visual_head's shape with the depth, codebook size
# and width of the --codebooks-app tokenizer (here model_dual.json's second head exactly: the same run).
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" \
    --codes-app "$TMP/it.lmdb" --codebooks-app "$TOK" --visual-loss both --steps 3 --out "$TMP/dual2"
check '[ $? -eq 0 ] && grep -q "visual_head_appearance" "$TMP/dual2/step-00000003/state.json" && cmp -s "$TMP/dual/step-00000003/model.safetensors" "$TMP/dual2/step-00000003/model.safetensors"' \
      "visual_head_appearance made from visual_head and the appearance tokenizer: the run of the explicit config"
APP="$G/tokenize_appearance/tiny_appearance.safetensors"
"$BIN/asvr-train" plan --config "$F/model.json" --visual-loss appearance --codebooks-app "$APP" --verbose > "$TMP/plan_app.txt"
"$BIN/asvr-train" plan --config "$F/model.json" --visual-loss appearance --verbose > /dev/null 2> "$TMP/plan_app.err"
check 'grep -q "appearance head E24, D 3, K 64, code dim 32" "$TMP/plan_app.txt" && grep -q -- "--codebooks-app" "$TMP/plan_app.err"' \
      "plan --visual-loss appearance: the head from --codebooks-app's tokenizer; without it the message says how"

# The reference behaviour for text-only samples runs (scored against the zero image's codes).
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 2 --text-only-visual reference --out "$TMP/ref"
check '[ $? -eq 0 ] && [ -f "$TMP/ref/step-00000002/DONE" ]' "--text-only-visual reference trains"
# Codes made by another tokenizer than --codebooks: refused.
cp "$TOK" "$TMP/tok2.safetensors"; printf '\x11' | dd of="$TMP/tok2.safetensors" bs=1 seek=$(( $(stat -c %s "$TOK") - 3 )) conv=notrunc status=none
"$BIN/asvr-train" train "${COMMON[@]}" --codebooks "$TMP/tok2.safetensors" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --out "$TMP/mix" 2> "$TMP/mix.err"
check '[ $? -eq 1 ] && grep -q "was not made by" "$TMP/mix.err"' "codes from another tokenizer refused"

# An image without codes: refused at start, naming it; nothing trained.
printf '[{"id": "x", "image": "exif1.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhat?"}, {"from": "gpt", "value": "red"}]}]' > "$TMP/extra.json"
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --image-positions 9 --max-len 128 --out "$TMP/it2.pack" $Q "$TMP/extra.json"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it2.pack" --codes "$TMP/it.lmdb" --steps 2 --out "$TMP/bad" 2> "$TMP/bad.err"
check '[ $? -eq 1 ] && grep -q "without codes" "$TMP/bad.err" && grep -q "exif1.jpg" "$TMP/bad.err" && [ ! -s "$TMP/bad/log.jsonl" ]' "missing codes refused before any step, naming the image"
"$BIN/asvr-train" train --stage xx 2> /dev/null; check '[ $? -eq 2 ]' "usage error exits 2"
# asvr-train plan declares what train declares: the same parameter, gradient, optimizer and activation
# bytes as the run's own memory plan (a CPU run: f32 compute), without allocating.
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --attention kept --log-level info --out "$TMP/plan_run" 2> "$TMP/plan_run.err"
shape=$(grep -o "for [0-9]* rows x [0-9]* positions, [0-9]* images" "$TMP/plan_run.err" | head -1)
read -r _ p_rows _ _ p_seq _ p_img _ <<< "$shape"
"$BIN/asvr-train" plan --config "$F/model.json" --stage it --rows "$p_rows" --seq "${p_seq%,}" --max-images "$p_img" --attention kept --precision f32 --tower-dtype f32 --verbose > "$TMP/plan.txt"
plan_mib() { awk -v k="$1" '$0 ~ "^  "k" " {print $(NF-1)}' "$TMP/plan.txt"; }
run_mib() { grep -o "$1 [0-9.]* MiB" "$TMP/plan_run.err" | head -1 | awk '{print $(NF-1)}'; }
acts_line() { grep -o "llama [0-9.]* MiB, visual heads [0-9.]* MiB" "$1" | head -1; } # the step arena and tower differ: no tower is loaded
check '[ -n "$shape" ] && [ -n "$(run_mib parameters)" ] && [ "$(plan_mib parameters)" = "$(run_mib parameters)" ] && [ "$(plan_mib gradients)" = "$(run_mib gradients)" ] && [ "$(plan_mib "optimizer state")" = "$(run_mib "optimizer state")" ] && [ -n "$(acts_line "$TMP/plan.txt")" ] && [ "$(acts_line "$TMP/plan.txt")" = "$(acts_line "$TMP/plan_run.err")" ]' "plan matches the run's memory plan"
# a recompute set given as a list plans what the same first layers give; a layer past the model is a usage error
P2=("$BIN/asvr-train" plan --config "$F/model.json" --precision f32 --tower-dtype f32)
"${P2[@]}" --recompute 2 | grep total > "$TMP/plan_n.txt"
"${P2[@]}" --recompute-layers 0-1 | grep total > "$TMP/plan_l.txt"
"${P2[@]}" --recompute-layers 1 | grep total > "$TMP/plan_1.txt"
"${P2[@]}" --recompute-layers 0,9 > /dev/null 2> "$TMP/plan_bad.err"; rc_bad=$?
check '[ -s "$TMP/plan_n.txt" ] && cmp -s "$TMP/plan_n.txt" "$TMP/plan_l.txt" && ! cmp -s "$TMP/plan_n.txt" "$TMP/plan_1.txt" && [ $rc_bad -eq 2 ] && grep -q "0,9" "$TMP/plan_bad.err"' "--recompute-layers: a list plans like --recompute N; a layer past the model is refused"
"$BIN/asvr-train" plan --config "$F/model.json" --gpu-gib 0.000001 > /dev/null; check '[ $? -eq 1 ]' "plan --gpu-gib exits 1 when it does not fit"
# Flash attention (only log-sum-exps kept, probabilities recomputed) trains like the kept-probabilities path.
for a in kept flash; do
    "$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 3 --attention $a --out "$TMP/att_$a"
done
# measured 5.8e-10 relative (flash vs kept; --recompute: 0): bound 6e-9
same_losses() { paste <(grep -o '"text_loss":[-0-9.e]*' "$1" | cut -d: -f2) <(grep -o '"text_loss":[-0-9.e]*' "$2" | cut -d: -f2) |
    awk 'BEGIN{ok=0} {n++; d=$1-$2; if (d<0) d=-d; if (d > 6e-9*($1<0?-$1:$1)) bad=1} END{exit !(n==3 && !bad)}'; }
check 'same_losses "$TMP/att_kept/log.jsonl" "$TMP/att_flash/log.jsonl"' "--attention flash gives the losses of --attention kept"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 3 --attention kept --recompute 2 --out "$TMP/att_rc"
check 'same_losses "$TMP/att_kept/log.jsonl" "$TMP/att_rc/log.jsonl"' "--recompute 2 gives the same losses"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --tower-dtype bf16 --out "$TMP/att_x" 2> "$TMP/td.err"
check '[ $? -eq 2 ] && grep -q "needs --device cuda" "$TMP/td.err"' "--tower-dtype bf16 on the cpu is a usage error"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --recompute 99 --out "$TMP/att_x" 2> /dev/null
check '[ $? -eq 2 ]' "--recompute beyond the layers is a usage error"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --attention foo --out "$TMP/att_x" 2> /dev/null
check '[ $? -eq 2 ]' "--attention other than auto|kept|flash is a usage error"
"$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --device tpu --out "$TMP/dev" 2> /dev/null
check '[ $? -eq 2 ]' "--device other than cpu|cuda is a usage error"
if ! nvidia-smi -L > /dev/null 2>&1; then # no GPU here: --device cuda is a usage error naming why
    "$BIN/asvr-train" train "${COMMON[@]}" --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --device cuda --out "$TMP/dev" 2> "$TMP/dev.err"
    check '[ $? -eq 2 ] && grep -q "device cuda" "$TMP/dev.err"' "--device cuda without a GPU is a usage error"
fi
# Global-batch mode: 48 samples, 16 per step → 3 steps for one epoch, each with about 16 samples.
"$BIN/asvr-train" train --config "$F/model.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 3 $Q \
    --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --global-batch 16 --out "$TMP/gb"
check '[ $? -eq 0 ] && [ "$(wc -l < "$TMP/gb/log.jsonl")" = 3 ] && grep -q "\"samples\":18" "$TMP/gb/log.jsonl"' "--global-batch accumulates rows up to the sample count"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
