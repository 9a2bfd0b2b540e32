#!/usr/bin/env bash
# cli_bad_input.sh BUILD_DIR GOLDEN_DIR — the four tools against hostile or unlucky input: no crash
# (never an exit by a signal), no hang (every run under a timeout), no silent success, and a failure
# never costs a finished output. Cases, most severe first:
#  1. damaged code stores (truncated, changed bytes, empty): every tool exits 1 naming the store;
#  2. a failed or killed append leaves the finished store finished and usable;
#  3. a diverging run (--lr 1e30) stops naming the step, no checkpoint of it, a log of valid JSON;
#     image_std 0 is refused;
#  4. named pipes as store, tokenizer, model, JSON, questions, image: no tool waits on them;
#  5. absurd sizes (--threads, --global-batch, --rows, --max-new-tokens, a 70 MB string, a 1 MB
#     question) are refused naming the flag, file or sample;
#  6. flag values that break their kind's rule exit 2 naming the flag;
#  7. a \u0000 in a conversation keeps the text after it;
#  8. messages keep their cause and name no build machine's paths;
#  9. unchecked states: a checkpoint without DONE, resuming on other data, bad state.json values,
#     export of a checkpoint that disagrees with its config, question fields of the wrong type,
#     image_mean of one value, stats on corrupt records;
# 10. state.json and log.jsonl record the BLAS thread count;
# 11. a killed writer's temp file is reclaimed by the next run.
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level error"
T() { timeout 60 "$@"; } # a hang fails the check (exit 124), a signal shows as >= 128

grep -vE 'corrupt|missing|^#' "$G/tokenize/images.txt" > "$TMP/good.txt"
ENC=("$BIN/asvr-tokenize" encode --image-root "$G/images" --tokenizer "$TOK" --threads 1 $Q)
"${ENC[@]}" --list "$TMP/good.txt" --policy pad --out "$TMP/s.lmdb"
check '[ $? -eq 0 ] && [ -f "$TMP/s.lmdb" ]' "the store is built"
T "${ENC[@]}" --json "$F/it.json" --policy pad --out "$TMP/it.lmdb"
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
T "$BIN/asvr-pack" build --template plain --tokenizer "$SP" --image-positions 9 --max-len 64 --out "$TMP/pt.pack" $Q "$F/pt.json"
check '[ -f "$TMP/it.pack" ] && [ -f "$TMP/pt.pack" ]' "packed stores built"
TRAIN=("$BIN/asvr-train" train --config "$F/model.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK"
       --rows 2 --accum 1 --stage it $Q)

# ---- 1. damaged code stores ------------------------------------------------------------------
size=$(stat -c %s "$TMP/s.lmdb")
head -c $((size / 2)) "$TMP/s.lmdb" > "$TMP/half.lmdb"
cp "$TMP/half.lmdb" "$TMP/half.copy"
for cmd in verify stats dump; do
  T "$BIN/asvr-tokenize" $cmd "$TMP/half.lmdb" > /dev/null 2> "$TMP/e"; rc=$?
  check '[ $rc -eq 1 ] && grep -q "truncated" "$TMP/e" && grep -q "half.lmdb" "$TMP/e"' "$cmd on a truncated store: exit 1 naming it (rc $rc)"
done
T "${ENC[@]}" --list "$TMP/good.txt" --policy pad --out "$TMP/half.lmdb" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "truncated" "$TMP/e" && cmp -s "$TMP/half.lmdb" "$TMP/half.copy"' "encode refuses to append to a truncated store, leaves it as it was (rc $rc)"
T "$BIN/asvr-tokenize" merge "$TMP/m.lmdb" "$TMP/half.lmdb" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "truncated" "$TMP/e"' "merge of a truncated store: exit 1 (rc $rc)"
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/half.lmdb" --max-len 128 --out "$TMP/h.pack" $Q "$F/it.json" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "truncated" "$TMP/e"' "pack --codes on a truncated store: exit 1 (rc $rc)"
head -c $(($(stat -c %s "$TMP/it.lmdb") / 2)) "$TMP/it.lmdb" > "$TMP/ithalf.lmdb"
T "${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/ithalf.lmdb" --steps 1 --out "$TMP/rh" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "truncated" "$TMP/e"' "train --codes on a truncated store: exit 1 (rc $rc)"
: > "$TMP/empty.lmdb"
T "$BIN/asvr-tokenize" stats "$TMP/empty.lmdb" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "is empty" "$TMP/e" && ! grep -q "Bad file descriptor" "$TMP/e"' "an empty store: says so (rc $rc)"
# one changed byte at 60 seeded places: verify and dump end by exit 0 or 1, never a signal or a hang
RANDOM=17
worst=0 found=0
for i in $(seq 1 60); do
  cp "$TMP/s.lmdb" "$TMP/flip.lmdb"
  off=$(( (RANDOM * 32768 + RANDOM) % size ))
  printf "\\x$(printf %02x $(( (RANDOM % 255) + 1 )))" | dd of="$TMP/flip.lmdb" bs=1 seek=$off conv=notrunc status=none
  T "$BIN/asvr-tokenize" verify "$TMP/flip.lmdb" > /dev/null 2>&1; r1=$?
  T "$BIN/asvr-tokenize" dump "$TMP/flip.lmdb" > /dev/null 2>&1; r2=$?
  [ $r1 -gt $worst ] && worst=$r1
  [ $r2 -gt $worst ] && worst=$r2
  [ $r1 -eq 1 ] && found=$((found + 1))
done
check '[ $worst -le 1 ]' "60 changed bytes: verify and dump exit 0 or 1 (worst exit $worst)"
check '[ $found -gt 0 ]' "verify reports damage ($found of 60)"
# damage in the codes tree: verify says what and exits 1
pg=$(( $(grep -obUa "photo0.jpg" "$TMP/s.lmdb" | tail -1 | cut -d: -f1) / 4096 ))
cp "$TMP/s.lmdb" "$TMP/tree.lmdb"
printf '\x04' | dd of="$TMP/tree.lmdb" bs=1 seek=$((pg * 4096 + 10)) conv=notrunc status=none
T "$BIN/asvr-tokenize" verify "$TMP/tree.lmdb" > "$TMP/v" 2>/dev/null; rc=$?
check '[ $rc -eq 1 ] && grep -q "page" "$TMP/v"' "verify reports a damaged tree page (rc $rc)"

# ---- 2. a failed or killed append keeps the store finished -----------------------------------
mkdir -p "$TMP/root"
for i in 0 1 2 3 4 5; do ln -s "$(cd "$G/images" && pwd)/photo$((i % 3)).jpg" "$TMP/root/new$i.jpg"; done
cp "$TMP/s.lmdb" "$TMP/a.lmdb"
printf 'new0.jpg\nnew1.jpg\nnew2.jpg\nmissing.jpg\nnew3.jpg\n' > "$TMP/more.txt"
T "$BIN/asvr-tokenize" encode --list "$TMP/more.txt" --image-root "$TMP/root" --tokenizer "$TOK" --policy pad --batch 1 \
    --threads 1 --max-errors 0 --out "$TMP/a.lmdb" $Q 2> /dev/null; rc=$?
check '[ $rc -eq 1 ] && [ -f "$TMP/a.lmdb" ] && [ ! -e "$TMP/a.lmdb.partial" ]' "a failed append: exit 1, the store stays finished (rc $rc)"
n=$("$BIN/asvr-tokenize" stats --json "$TMP/a.lmdb" | grep -o '"records": [0-9]*' | grep -o '[0-9]*$')
check '[ "${n:-0}" -ge 14 ] && "$BIN/asvr-tokenize" verify "$TMP/a.lmdb" > /dev/null 2>&1' "its old records (and whole batches) are there and sound ($n records)"
cat > "$TMP/p0.json" <<'JSON'
[{"id": "p", "image": "photo0.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A photo."}]}]
JSON
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/a.lmdb" --max-len 128 --out "$TMP/a.pack" $Q "$TMP/p0.json"; rc=$?
check '[ $rc -eq 0 ] && [ -f "$TMP/a.pack" ]' "pack takes it as a finished store (rc $rc)"
"$BIN/asvr-tokenize" dump "$TMP/a.lmdb" photo0.jpg > /dev/null; check '[ $? -eq 0 ]' "an old record reads"
for i in $(seq 0 299); do ln -s "$(cd "$G/images" && pwd)/photo$((i % 3)).jpg" "$TMP/root/k$i.jpg"; echo "k$i.jpg"; done > "$TMP/many.txt"
cp "$TMP/s.lmdb" "$TMP/k.lmdb"
"$BIN/asvr-tokenize" encode --list "$TMP/many.txt" --image-root "$TMP/root" --tokenizer "$TOK" --policy pad --batch 4 \
    --threads 1 --out "$TMP/k.lmdb" $Q & pid=$!
sleep 0.3; kill -KILL $pid 2> /dev/null; wait $pid 2> /dev/null
T "$BIN/asvr-tokenize" verify "$TMP/k.lmdb" > /dev/null 2>&1; rc=$?
n=$("$BIN/asvr-tokenize" stats --json "$TMP/k.lmdb" | grep -o '"records": [0-9]*' | grep -o '[0-9]*$')
check '[ $rc -eq 0 ] && [ ! -e "$TMP/k.lmdb.partial" ] && [ "${n:-0}" -ge 14 ]' "a killed append: the store is finished and sound ($n records)"

# ---- 3. divergence ----------------------------------------------------------------------------
T "${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 8 --save-every 1 --lr 1e30 --out "$TMP/nan" 2> "$TMP/e"; rc=$?
bad=$(grep -o "step [0-9]*: training diverged" "$TMP/e" | grep -o "[0-9]*" | head -1)
check '[ $rc -eq 1 ] && [ -n "$bad" ]' "--lr 1e30: exit 1 naming the step (rc $rc, step ${bad:-none})"
last=$(ls -d "$TMP"/nan/step-* 2> /dev/null | sed 's/.*step-0*//' | sort -n | tail -1)
check '[ -n "$bad" ] && [ "${last:-0}" -lt "$bad" ] && ! ls -d "$TMP"/nan/step-*.tmp > /dev/null 2>&1' "no checkpoint of the diverged step (last ${last:-none})"
check '[ -n "$bad" ] && [ "$(wc -l < "$TMP/nan/log.jsonl")" -eq $((bad - 1)) ] && ! grep -qiE "nan|inf|\(null\)" "$TMP/nan/log.jsonl"' "the log holds the good steps only, as valid JSON"
sed 's/"image_std": \[0.5,0.5,0.5\]/"image_std": [0.5,0,0.5]/' "$F/model.json" > "$TMP/std0.json"
T "$BIN/asvr-train" train --config "$TMP/std0.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 --accum 1 \
    --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --out "$TMP/std0" $Q 2> "$TMP/e"; rc=$?
check '[ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "image_std" "$TMP/e" && [ ! -e "$TMP/std0/step-00000001" ]' "image_std 0 is refused (rc $rc)"

# ---- 4. named pipes -------------------------------------------------------------------------
mkfifo "$TMP/pipe"
p="$TMP/pipe"
nb() { # nb DESCRIPTION CMD...: the command must end by itself, not by a signal
  T "${@:2}" > /dev/null 2> "$TMP/e"; local rc=$?
  check '[ $rc -ne 124 ] && [ $rc -lt 128 ] && [ $rc -ne 0 ]' "$1: exit $rc (no wait on the pipe)"
}
nb "verify of a pipe" "$BIN/asvr-tokenize" verify "$p"
nb "encode --tokenizer pipe" "${ENC[@]}" --list "$TMP/good.txt" --policy pad --tokenizer "$p" --out "$TMP/x.lmdb"
nb "encode --list pipe" "${ENC[@]}" --list "$p" --policy pad --out "$TMP/x2.lmdb"
nb "pack --tokenizer pipe" "$BIN/asvr-pack" build --template plain --tokenizer "$p" --image-positions 9 --out "$TMP/x.pack" "$F/pt.json"
nb "pack of a pipe" "$BIN/asvr-pack" build --template plain --tokenizer "$SP" --image-positions 9 --out "$TMP/x.pack" "$p"
nb "train --packed pipe" "${TRAIN[@]}" --packed "$p" --codes "$TMP/it.lmdb" --steps 1 --out "$TMP/xp"
nb "train --config pipe" "$BIN/asvr-train" train --config "$p" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --out "$TMP/xc" $Q
nb "score --questions pipe" "$BIN/asvr-eval" score --bench gqa --questions "$p" --answers "$p"
nb "preprocess of a pipe" "$BIN/asvr-tokenize" preprocess --policy pad "$p" "$TMP/x.ppm"
mkdir -p "$TMP/proot" && mkfifo "$TMP/proot/img.jpg"
T "${ENC[@]}" --list <(echo img.jpg) --image-root "$TMP/proot" --policy pad --out "$TMP/pi.lmdb" --rejects "$TMP/pi.rej" 2> /dev/null; rc=$?
check '[ $rc -ne 124 ] && [ $rc -lt 128 ] && grep -q "img.jpg" "$TMP/pi.rej" && grep -q "named pipe" "$TMP/pi.rej"' "an image that is a pipe is rejected with its reason (rc $rc)"

# ---- 5. absurd sizes ----------------------------------------------------------------------------
T "${ENC[@]}" --list "$TMP/good.txt" --policy pad --threads 1000000 --out "$TMP/t.lmdb" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 2 ] && grep -q -- "--threads" "$TMP/e"' "encode --threads 1000000: exit 2 naming it"
T "$BIN/asvr-train" train --config "$F/model.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --stage it \
    --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --global-batch 2000000000 --out "$TMP/gb" $Q 2> "$TMP/e"; rc=$?
check '[ $rc -eq 2 ] && grep -q -- "--global-batch" "$TMP/e"' "--global-batch 2e9: exit 2 naming it (rc $rc)"
T "${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --rows 1000000 --out "$TMP/rw" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 2 ] && grep -q -- "--rows" "$TMP/e"' "--rows 1e6: exit 2 naming it (rc $rc)"
E=("$BIN/asvr-eval" run --model "$G/eval_ask/run/step-00000150/model.safetensors" --vision "$TOK" --tokenizer "$SP" --bench gqa $Q)
echo '{"question_id": "q1", "question": "What color?", "answer": "red"}' > "$TMP/q1.jsonl"
T "${E[@]}" --config "$G/eval_ask/model.json" --questions "$TMP/q1.jsonl" --out "$TMP/ev" --max-new-tokens 1000000000 2> "$TMP/e"; rc=$?
check '[ $rc -eq 2 ] && grep -q -- "--max-new-tokens" "$TMP/e"' "run --max-new-tokens 1e9: exit 2 naming it (rc $rc)"
sed 's/"rope_theta": 10000.0}/"rope_theta": 10000.0, "max_position_embeddings": 256}/' "$G/eval_ask/model.json" > "$TMP/ctx.json"
T "${E[@]}" --config "$TMP/ctx.json" --questions "$TMP/q1.jsonl" --out "$TMP/ev2" --max-new-tokens 300 2> "$TMP/e"; rc=$?
check '[ $rc -eq 2 ] && grep -q "context" "$TMP/e"' "--max-new-tokens beyond max_position_embeddings: exit 2 (rc $rc)"
{ printf '{"question_id": "big", "question": "'; head -c 1000000 /dev/zero | tr '\0' 'a'; printf '", "answer": "x"}\n'; } > "$TMP/big.jsonl"
T "${E[@]}" --config "$TMP/ctx.json" --questions "$TMP/big.jsonl" --out "$TMP/ev3" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "big" "$TMP/e" && grep -q "context" "$TMP/e"' "a 1 MB question: exit 1 naming it (rc $rc)"
{ printf '{"question_id": "big2", "question": "'; head -c 3000000 /dev/zero | tr '\0' 'q' | sed 's/qqqq/q q /g'; printf '", "answer": "x"}\n'; } > "$TMP/big2.jsonl"
T "${E[@]}" --config "$G/eval_ask/model.json" --questions "$TMP/big2.jsonl" --out "$TMP/ev4" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "big2" "$TMP/e" && grep -q "GiB" "$TMP/e"' "a 3 MB question, no context in the config: the memory bound names it (rc $rc)"
{ printf '[{"id": "ok", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}]},\n'
  printf ' {"id": "huge", "conversations": [{"from": "human", "value": "'; head -c 70000000 /dev/zero | tr '\0' 'b'
  printf '"}, {"from": "gpt", "value": "A"}]}]\n'; } > "$TMP/huge.json"
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --image-positions 9 --out "$TMP/huge.pack" --rejects "$TMP/huge.rej" "$TMP/huge.json" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 0 ] && grep -q "larger than" "$TMP/huge.rej" && grep -q "element 1" "$TMP/e"' "a 70 MB string: that sample refused naming it, the rest packed (rc $rc)"
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --image-positions 9 --max-errors 0 --out "$TMP/huge2.pack" "$TMP/huge.json" 2> /dev/null; rc=$?
check '[ $rc -eq 1 ] && [ ! -e "$TMP/huge2.pack" ]' "... fatal with --max-errors 0 (rc $rc)"

# ---- 6. flag values -----------------------------------------------------------------------------
flag() { # flag FLAG VALUE CMD...: exit 2 naming the flag
  T "${@:3}" "$1" "$2" > /dev/null 2> "$TMP/e"; local rc=$? f="$1"
  check '[ $rc -eq 2 ] && grep -q -- "$f" "$TMP/e"' "$1 $2: exit 2 naming it (rc $rc)"
}
TR=("${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --out "$TMP/fl")
for v in nan inf -1; do flag --lr $v "${TR[@]}"; done
flag --weight-decay -1 "${TR[@]}"
flag --steps -1 "${TR[@]}"
flag --warmup-ratio nan "${TR[@]}"
flag --clip-norm nan "${TR[@]}"
flag --map-size -5 "${ENC[@]}" --list "$TMP/good.txt" --policy pad --out "$TMP/f.lmdb"
flag --max-pixels -1 "${ENC[@]}" --list "$TMP/good.txt" --policy pad --out "$TMP/f.lmdb"
flag --image-positions 1000000000 "$BIN/asvr-pack" build --template plain --tokenizer "$SP" --out "$TMP/f.pack" "$F/pt.json"

# ---- 7. a NUL inside a conversation -------------------------------------------------------------
cat > "$TMP/nul.json" <<'JSON'
[{"id": "n", "image": "b.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "ab\u0000cd ef"}]}]
JSON
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --image-positions 9 --out "$TMP/nul.pack" $Q "$TMP/nul.json"
"$BIN/asvr-pack" show --tokenizer "$SP" "$TMP/nul.pack" 0 | tr '\0' '@' > "$TMP/nul.txt"
check 'grep -q "ab@cd ef" "$TMP/nul.txt"' "a \\u0000 is kept with the text after it"
T "$BIN/asvr-pack" build --template mistral_instruct --masking corrected --tokenizer "$SP" --image-positions 9 \
    --out "$TMP/nul2.pack" $Q "$TMP/nul.json"
"$BIN/asvr-pack" show --tokenizer "$SP" "$TMP/nul2.pack" 0 | tr '\0' '@' > "$TMP/nul2.txt"
check 'grep -q "ab@cd ef" "$TMP/nul2.txt"' "the same with mistral_instruct and --masking corrected"

# ---- 8. messages ----------------------------------------------------------------------------------
"$BIN/asvr-tokenize" stats "$TMP/none.lmdb" 2> "$TMP/e"
check 'grep -q "(tokenize/" "$TMP/e" && ! grep -q "(/" "$TMP/e"' "fatal messages name source files relative to the tree"

# ---- 9. unchecked states ----------------------------------------------------------------------------
T "${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 2 --out "$TMP/r1"
check '[ -f "$TMP/r1/step-00000002/DONE" ]' "a short run"
mkdir -p "$TMP/nodone" && cp "$TMP/r1/step-00000002/"*.safetensors "$TMP/r1/step-00000002/state.json" "$TMP/nodone/"
T "$BIN/asvr-eval" ask --checkpoint "$TMP/nodone" --vision "$TOK" --tokenizer "$SP" --image "$G/images/photo1.jpg" \
    --question "Hi?" $Q 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "DONE" "$TMP/e"' "eval refuses a checkpoint folder without DONE (rc $rc)"
"$BIN/asvr-pack" build --template plain --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 64 --out "$TMP/other.pack" $Q "$F/pt.json"
T "${TRAIN[@]}" --packed "$TMP/other.pack" --codes "$TMP/it.lmdb" --steps 4 --out "$TMP/r1" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "other data" "$TMP/e" && [ ! -e "$TMP/r1/step-00000004" ]' "resuming on another --packed is refused (rc $rc)"
edit_state() { # edit_state SED_EXPR DIR: a copy of r1 with its state.json edited
  rm -rf "$2" && cp -r "$TMP/r1" "$2" && sed -i "$1" "$2/step-00000002/state.json"
}
edit_state 's/"data_index": [0-9]*/"data_index": 1000000000000/' "$TMP/r2"
T "${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 4 --out "$TMP/r2" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "data_index" "$TMP/e"' "state.json data_index 1e12: refused naming it (rc $rc)"
edit_state 's/"step": 2/"step": "four"/' "$TMP/r3"
T "${TRAIN[@]}" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 4 --out "$TMP/r3" 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "\"step\"" "$TMP/e"' "state.json step \"four\": refused naming it (rc $rc)"
edit_state 's/"intermediate_size": 64/"intermediate_size": 65/' "$TMP/r4"
T "$BIN/asvr-train" export --format llava "$TMP/r4/step-00000002" "$TMP/exp4" $Q 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "needs" "$TMP/e" && [ ! -e "$TMP/exp4" ]' "export of a checkpoint whose config disagrees with its tensors: refused (rc $rc)"
echo '{"question_id": "q1", "image": 5, "question": "What?", "answer": "red"}' > "$TMP/q5.jsonl"
echo '{"question_id": "q1", "answer": "red"}' > "$TMP/a5.jsonl"
T "$BIN/asvr-eval" score --bench gqa --questions "$TMP/q5.jsonl" --answers "$TMP/a5.jsonl" > /dev/null 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "\"image\" must be a string" "$TMP/e"' "a question with \"image\": 5 is malformed (rc $rc)"
echo '{"question_id": "q1", "question": "Which?", "options": "circle", "answer": "A"}' > "$TMP/q6.jsonl"
T "$BIN/asvr-eval" score --bench seed_image --questions "$TMP/q6.jsonl" --answers "$TMP/a5.jsonl" > /dev/null 2> "$TMP/e"; rc=$?
check '[ $rc -eq 1 ] && grep -q "\"options\" must be a list" "$TMP/e"' "a question with \"options\": \"circle\" is malformed (rc $rc)"
sed 's/"image_mean": \[0.5,0.5,0.5\]/"image_mean": [0.5]/' "$F/model.json" > "$TMP/mean1.json"
T "$BIN/asvr-train" train --config "$TMP/mean1.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 \
    --accum 1 --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 --out "$TMP/m1" $Q 2> "$TMP/e"; rc=$?
check '[ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "image_mean" "$TMP/e"' "image_mean of one value is refused (rc $rc)"
cp "$TMP/s.lmdb" "$TMP/c.lmdb" # a payload byte of photo0.jpg's record, in every copy LMDB keeps
for off in $(grep -obUa "photo0.jpg" "$TMP/c.lmdb" | cut -d: -f1); do
  printf '\x55' | dd of="$TMP/c.lmdb" bs=1 seek=$((off + 10 + 20)) conv=notrunc status=none
done
T "$BIN/asvr-tokenize" stats "$TMP/c.lmdb" > /dev/null 2>&1; rc=$?
check '[ $rc -eq 1 ]' "stats on a store with a corrupt record: exit 1 (rc $rc)"

# ---- 10. the BLAS thread count is recorded -------------------------------------------------------
check 'grep -q "\"blas_threads\"" "$TMP/r1/step-00000002/state.json" && [ "$(grep -c "\"blas_threads\":" "$TMP/r1/log.jsonl")" = 2 ]' "state.json and every log line record blas_threads"

# ---- 11. a killed writer's temp file is reclaimed ------------------------------------------------
echo partial > "$TMP/it.pack.tmp.999999999"
touch -d '10 minutes ago' "$TMP/it.pack.tmp.999999999"
T "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
check '[ $? -eq 0 ] && [ ! -e "$TMP/it.pack.tmp.999999999" ]' "a rerun removes a dead writer's temp file"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
