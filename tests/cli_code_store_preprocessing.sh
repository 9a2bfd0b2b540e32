#!/usr/bin/env bash
# cli_code_store_preprocessing.sh BUILD_DIR GOLDEN_DIR — the code store records the pad colour and the
# EXIF rule of its codes: encode refuses to add codes of another pad colour or EXIF rule (like another
# policy), stats shows both, stores without the keys read as 127,127,127 and no EXIF; asvr-train pads
# with int(image_mean x 255) as the reference does, so under CLIP's mean it refuses a store padded with
# 127 and trains from one padded with 122,116,104, and prepares its images with the store's EXIF rule.
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level warn"
ENC=("$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad $Q)

"${ENC[@]}" --out "$TMP/it.lmdb"
check '[ $? -eq 0 ]' "encode (pad, the tokenizer's 127,127,127)"
"$BIN/asvr-tokenize" stats --json "$TMP/it.lmdb" > "$TMP/st.json"
check 'tr -d " \n" < "$TMP/st.json" | grep -q "\"pad_color\":\[127,127,127\]" && grep -q "\"exif\": false" "$TMP/st.json"' \
      "stats shows the pad colour and the EXIF rule"
"${ENC[@]}" --out "$TMP/it.lmdb" --pad 122,116,104 2> "$TMP/e1"
check '[ $? -eq 1 ] && grep -q "pad colour: store has 127,127,127, this run 122,116,104" "$TMP/e1"' "another pad colour is refused"
"${ENC[@]}" --out "$TMP/it.lmdb" --exif 2> "$TMP/e2"
check '[ $? -eq 1 ] && grep -q "EXIF orientation" "$TMP/e2"' "another EXIF rule is refused"
"${ENC[@]}" --out "$TMP/it.lmdb" 2> "$TMP/e3"
check '[ $? -eq 0 ]' "the same preprocessing: a no-op rerun"
"$BIN/asvr-tokenize" encode --json "$F/pt.json" --image-root "$G/images" --tokenizer "$TOK" --policy squash --out "$TMP/pt.lmdb" $Q
"$BIN/asvr-tokenize" encode --json "$F/pt.json" --image-root "$G/images" --tokenizer "$TOK" --policy squash --pad 1,2,3 \
    --out "$TMP/pt.lmdb" $Q
check '[ $? -eq 0 ]' "squash ignores the pad colour"
"${ENC[@]}" --out "$TMP/clip.lmdb" --pad 122,116,104
"$BIN/asvr-tokenize" stats --json "$TMP/clip.lmdb" > "$TMP/st2.json"
check 'tr -d " \n" < "$TMP/st2.json" | grep -q "\"pad_color\":\[122,116,104\]"' "the pad colour is recorded"
"${ENC[@]}" --out "$TMP/exif.lmdb" --exif
"$BIN/asvr-tokenize" merge "$TMP/m.lmdb" "$TMP/it.lmdb" "$TMP/exif.lmdb" 2> "$TMP/e4"
check '[ $? -eq 1 ] && grep -q "EXIF" "$TMP/e4"' "merge refuses stores of another EXIF rule"

# asvr-train: CLIP's mean pads with 122,116,104.
sed 's/"image_mean": \[0.5,0.5,0.5\]/"image_mean": [0.48145466, 0.4578275, 0.40821073]/' "$F/model.json" > "$TMP/clip.json"
check 'grep -q 0.48145466 "$TMP/clip.json"' "a model config with CLIP's mean"
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
TR=("$BIN/asvr-train" train --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 --accum 1 $Q --stage it
    --packed "$TMP/it.pack" --steps 1)
"${TR[@]}" --config "$TMP/clip.json" --codes "$TMP/it.lmdb" --out "$TMP/r1" 2> "$TMP/e5"
check '[ $? -eq 1 ] && grep -q "padded with 127,127,127, but the model pads with 122,116,104" "$TMP/e5" && grep -q -- "--pad 122,116,104" "$TMP/e5"' \
      "train refuses codes of another pad colour, naming the one to encode with"
"${TR[@]}" --config "$TMP/clip.json" --codes "$TMP/clip.lmdb" --out "$TMP/r2"
check '[ $? -eq 0 ] && [ -f "$TMP/r2/step-00000001/DONE" ]' "train pads with int(mean x 255) = 122,116,104"
"${TR[@]}" --config "$F/model.json" --codes "$TMP/clip.lmdb" --out "$TMP/r3" 2> /dev/null
check '[ $? -eq 1 ]' "SigLIP's mean (127) refuses the 122,116,104 store"
"${TR[@]}" --config "$F/model.json" --codes "$TMP/exif.lmdb" --out "$TMP/r4"
check '[ $? -eq 0 ]' "a store made with --exif trains (images prepared with the EXIF rule)"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
