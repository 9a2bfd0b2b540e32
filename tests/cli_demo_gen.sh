#!/usr/bin/env bash
# cli_demo_gen.sh BUILD_DIR GOLDEN_DIR — asvr-demo-gen as the demo runs it, at a small size: the same
# seed gives byte-identical files (another seed other files), a rerun is a no-op; the LLaVA JSON packs
# with the committed demo text tokenizer (plain and vicuna_v1: nothing skipped, nothing masked out by
# the length check); every image (train and eval, JPEG and PNG) decodes and encodes with the committed
# demo vision tokenizer; eval.jsonl holds the three benchmarks, balanced yes/no, held-out images only.
. "$(dirname "$0")/lib_cli.sh" "$@"
DEMO="$G/../../examples/demo"
SP="$DEMO/demo_tokenizer.model"
VT="$DEMO/demo_vision_tokenizer.safetensors"
Q="--log-level warn"
GEN=("$BIN/asvr-demo-gen" --train 60 --eval 20 --seed 7 $Q)

"${GEN[@]}" --out "$TMP/a"; check '[ $? -eq 0 ] && [ -f "$TMP/a/manifest.json" ]' "generator exits 0 and writes the manifest"
check '[ -f "$TMP/a/pt.json" ] && [ -f "$TMP/a/it.json" ] && [ -f "$TMP/a/eval.jsonl" ]' "pt.json, it.json, eval.jsonl written"
check '! find "$TMP/a" -name "*.tmp.*" | grep -q .' "no temp file left"
ntrain=$(find "$TMP/a/images/train" -type f | wc -l); neval=$(find "$TMP/a/images/eval" -type f | wc -l)
check '[ "$ntrain" = 60 ] && [ "$neval" = 20 ]' "60 training and 20 eval images ($ntrain, $neval)"
njpg=$(find "$TMP/a/images" -name "*.jpg" -exec head -c 3 {} \; -exec echo \; | grep -c $'^\xff\xd8\xff')
npng=$(find "$TMP/a/images" -name "*.png" -exec head -c 4 {} \; -exec echo \; | grep -c $'^\x89PNG')
check '[ "$njpg" -gt 10 ] && [ "$npng" -gt 10 ] && [ $((njpg + npng)) = 80 ]' "JPEG and PNG files with their magic bytes ($njpg + $npng)"
check 'grep -q "\"jpeg\": $njpg" "$TMP/a/manifest.json" && grep -q "\"seed\": 7" "$TMP/a/manifest.json"' "manifest counts and seed"

# Determinism: a second run is byte-identical; another seed is not.
"${GEN[@]}" --out "$TMP/b"
check 'diff -r "$TMP/a" "$TMP/b" > /dev/null' "same seed: byte-identical folders"
"$BIN/asvr-demo-gen" --train 60 --eval 20 --seed 8 $Q --out "$TMP/c"
check '! cmp -s "$TMP/a/pt.json" "$TMP/c/pt.json" && ! cmp -s "$TMP/a/it.json" "$TMP/c/it.json" && ! cmp -s "$TMP/a/eval.jsonl" "$TMP/c/eval.jsonl"' "another seed: other data"
before=$(stat -c %Y.%i "$TMP/a/manifest.json" "$TMP/a/pt.json" | tr '\n' ' ')
"${GEN[@]}" --out "$TMP/a" --log-level info 2> "$TMP/noop.err"
check '[ $? -eq 0 ] && grep -q "nothing to do" "$TMP/noop.err" && [ "$(stat -c %Y.%i "$TMP/a/manifest.json" "$TMP/a/pt.json" | tr "\n" " ")" = "$before" ]' "rerun of the same request is a no-op"
"$BIN/asvr-demo-gen" --train 61 --eval 20 --seed 7 $Q --out "$TMP/b"
check '[ $? -eq 0 ] && grep -q "\"train\": 61" "$TMP/b/manifest.json" && [ "$(grep -c "\"id\":\"pt-" "$TMP/b/pt.json")" = 61 ]' "another request regenerates"
"$BIN/asvr-demo-gen" --train 10 --eval 3 --seed 9 $Q --out "$TMP/b"
check '[ $? -eq 0 ] && [ "$(find "$TMP/b/images" -type f | wc -l)" = 13 ]' "a smaller request leaves no stale images"
"$BIN/asvr-demo-gen" --train 5 2> /dev/null; check '[ $? -eq 2 ]' "missing --out: usage error"
"$BIN/asvr-demo-gen" --out "$TMP/d" --size 64y64 2> /dev/null; check '[ $? -eq 2 ] && [ ! -e "$TMP/d" ]' "bad --size: usage error, nothing written"
"$BIN/asvr-demo-gen" --out "$TMP/d" --train 4 --eval 2 --size 48,100x40 $Q
check '[ $? -eq 0 ] && grep -q "\"100x40\"" "$TMP/d/manifest.json"' "--size takes S and WxH"

# The JSON packs with the demo tokenizer: nothing skipped or masked out.
"$BIN/asvr-pack" build --template plain --tokenizer "$SP" --image-positions 9 --out "$TMP/pt.pack" --stats "$TMP/pt.json" $Q "$TMP/a/pt.json"
check '[ $? -eq 0 ] && grep -q "\"samples\": 60," "$TMP/pt.json" && grep -q "\"skipped\": 0" "$TMP/pt.json" && grep -q "\"masked_out\": 0" "$TMP/pt.json"' "pt.json packs (plain): 60 samples, 0 skipped, 0 masked out"
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --image-positions 9 --out "$TMP/it.pack" --stats "$TMP/it.json" $Q "$TMP/a/it.json"
check '[ $? -eq 0 ] && grep -q "\"samples\": 63," "$TMP/it.json" && grep -q "\"text_samples\": 3," "$TMP/it.json" && grep -q "\"skipped\": 0" "$TMP/it.json" && grep -q "\"masked_out\": 0" "$TMP/it.json"' "it.json packs (vicuna_v1): 63 samples (3 text-only), 0 skipped, 0 masked out"
check 'grep -q "\"no_supervision\": 0" "$TMP/it.json" && grep -q "\"truncated\": 0" "$TMP/it.json"' "every it sample supervised, none truncated"

# Every image decodes and encodes with the demo vision tokenizer.
(cd "$TMP/a/images" && find . -type f | sed 's|^\./||' | sort) > "$TMP/images.txt"
"$BIN/asvr-tokenize" encode --list "$TMP/images.txt" --image-root "$TMP/a/images" --tokenizer "$VT" --policy pad --out "$TMP/codes.lmdb" --stats "$TMP/enc.json" $Q
check '[ $? -eq 0 ] && grep -q "\"rejected\": 0" "$TMP/enc.json" && grep -q "\"encoded\": 80" "$TMP/enc.json"' "all 80 images encode, 0 rejected"
"$BIN/asvr-tokenize" encode --json "$TMP/a/pt.json" --image-root "$TMP/a/images" --tokenizer "$VT" --policy squash --out "$TMP/pt.lmdb" $Q
"$BIN/asvr-pack" build --template plain --tokenizer "$SP" --codes "$TMP/pt.lmdb" --out "$TMP/ptc.pack" $Q "$TMP/a/pt.json"
check '[ $? -eq 0 ]' "pt.json packs against its code store (every image has codes)"

# eval.jsonl: 3 questions per held-out image, the three benchmarks, balanced yes/no.
E="$TMP/a/eval.jsonl"
check '[ "$(wc -l < "$E")" = 60 ]' "60 eval questions"
for b in demo_yesno demo_mc demo_short; do
    check '[ "$(grep -c "\"benchmark\":\"'$b'\"" "$E")" = 20 ]' "20 $b questions"
done
yes=$(grep "\"demo_yesno\"" "$E" | grep -c '"answer":"yes"'); no=$(grep "\"demo_yesno\"" "$E" | grep -c '"answer":"no"')
check '[ "$yes" = 10 ] && [ "$no" = 10 ]' "yes/no balanced ($yes yes, $no no)"
check '[ "$(grep "\"demo_mc\"" "$E" | grep -c "\"answer\":\"[ABC]\".*\"options\":\[\"circle\",\"square\",\"triangle\"\]")" = 20 ]' "multiple choice: a letter answer and the options"
check '[ "$(grep "\"demo_mc\"" "$E" | grep -c "A. circle\\\\nB. square\\\\nC. triangle\\\\nAnswer with the option'"'"'s letter from the given choices directly.\"")" = 20 ]' "multiple choice: options and instruction in the question"
check '[ "$(grep -c "\"question_id\":[0-9]*,\"benchmark\":\"[a-z_]*\",\"image\":\"eval/[0-9]*\.\(jpg\|png\)\",\"question\":\"[^\"]*\",\"answer\":\"[^\"]*\"" "$E")" = 60 ]' "every line has question_id, benchmark, image, question, answer"
check '! grep -q "eval/" "$TMP/a/pt.json" "$TMP/a/it.json"' "eval images are held out of training"
# The eval wording is the training wording.
q=$(grep "\"demo_short\"" "$E" | head -1 | sed 's/.*"question":"\([^"]*\)".*/\1/')
check '[ -n "$q" ] && grep -qF "$q" "$TMP/a/it.json"' "eval questions are worded as in training ($q)"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
