#!/usr/bin/env bash
# cli_eval_full_disk.sh BUILD_DIR GOLDEN_DIR — a full disk while asvr-eval run writes its answers is an
# error that keeps its cause (errno) and names the file, and the answers written so far are kept. Needs
# a small tmpfs (mount, as root); exits 77 (skipped) where one cannot be mounted.
set -u
BIN="$1/bin"
G="$2"
TMP=$(mktemp -d)
cleanup() { umount "$TMP/full" 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
mkdir "$TMP/full"
mount -t tmpfs -o size=12k tmpfs "$TMP/full" 2> /dev/null || { echo "SKIPPED: cannot mount a tmpfs here"; exit 77; }
dd if=/dev/zero of="$TMP/full/fill" bs=1k count=64 2> /dev/null # fills it
printf '{"question_id": "q0", "benchmark": "gqa", "image": "photo0.jpg", "question": "What is it?", "answer": "sky"}\n' \
    > "$TMP/gqa.jsonl"
"$BIN/asvr-eval" run --checkpoint "$G/eval_ask/run" --vision "$G/tokenize/tiny_tokenizer.safetensors" \
    --tokenizer "$G/sp/tiny_bpe.model" --bench gqa --questions "$TMP/gqa.jsonl" --image-root "$G/images" \
    --max-new-tokens 4 --out "$TMP/full/run" --log-level warn 2> "$TMP/err"
rc=$?
cat "$TMP/err"
if [ $rc -eq 1 ] && grep -q "No space left on device" "$TMP/err" && grep -q "gqa.jsonl" "$TMP/err"; then
  echo "1 passed, 0 failed"
else
  echo "FAIL: a full disk in asvr-eval run: exit $rc, the message must name the file and the cause"
  exit 1
fi
