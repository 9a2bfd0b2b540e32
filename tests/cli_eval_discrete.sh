#!/usr/bin/env bash
# cli_eval_discrete.sh BUILD_DIR GOLDEN_DIR — asvr-eval on a model trained with --input discrete (the
# paper's Table 4 row): each image encoded by the vision tokenizer given as --codebooks, its summed
# codebook rows the projector's input. A tiny chain on the CPU: codes (pad) → pack (it) → 3 steps of
# stage it with --input discrete → ask (from the run folder, from --model/--config --input discrete, and
# from a llava export: the same first-step logits bit for bit), attention, run on a two-question
# benchmark, codes; the image reaches the answer (another image, other logits); no --vision needed;
# errors: --codebooks missing (exit 2), a tokenizer other than the training's (exit 1, both named).
# The numbers themselves are checked against PyTorch in test_generate (the golden's discrete part).
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level warn"

"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/it.lmdb" $Q
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
"$BIN/asvr-train" train --config "$F/model.json" --codebooks "$TOK" --rows 2 --accum 1 $Q --stage it --packed "$TMP/it.pack" \
    --codes "$TMP/it.lmdb" --image-root "$G/images" --steps 3 --lr 3e-3 --input discrete --out "$TMP/disc"
check '[ $? -eq 0 ] && [ -f "$TMP/disc/step-00000003/DONE" ]' "--input discrete trains (no tower)"
CK="$TMP/disc/step-00000003"

ASK=(--tokenizer "$SP" --question "What is in the picture?" --max-new-tokens 6 $Q)
a1=$("$BIN/asvr-eval" ask --checkpoint "$TMP/disc" --codebooks "$TOK" --image "$G/images/photo1.jpg" "${ASK[@]}" --logits "$TMP/l1.st"); rc=$?
check '[ $rc -eq 0 ] && [ -n "$a1" ] && [ -s "$TMP/l1.st" ]' "ask answers a discrete-input checkpoint without --vision ('$a1')"
"$BIN/asvr-eval" ask --model "$CK/model.safetensors" --config "$F/model.json" --input discrete --codebooks "$TOK" \
    --image "$G/images/photo1.jpg" "${ASK[@]}" --logits "$TMP/l2.st" > /dev/null
check '[ $? -eq 0 ] && cmp -s "$TMP/l1.st" "$TMP/l2.st"' "--model/--config --input discrete: the same logits bit for bit"
"$BIN/asvr-eval" ask --checkpoint "$TMP/disc" --codebooks "$TOK" --image "$G/images/photo3.png" "${ASK[@]}" --logits "$TMP/l3.st" > /dev/null
check '[ $? -eq 0 ] && ! cmp -s "$TMP/l1.st" "$TMP/l3.st"' "another image gives other logits (the codes reach the model)"
"$BIN/asvr-train" export --format llava "$CK" "$TMP/exp" $Q
check '[ $? -eq 0 ] && grep -q "\"input\": \"discrete\"" "$TMP/exp/config.json"' "export --format llava records the discrete input"
"$BIN/asvr-eval" ask --checkpoint "$TMP/exp" --codebooks "$TOK" --image "$G/images/photo1.jpg" "${ASK[@]}" --logits "$TMP/l4.st" > /dev/null
check '[ $? -eq 0 ] && cmp -s "$TMP/l1.st" "$TMP/l4.st"' "the llava export answers with the same logits"
"$BIN/asvr-train" export "$CK" "$TMP/exp-hf" --vision "$TOK" --tokenizer "$SP" $Q 2> "$TMP/hf.err"
check '[ $? -ne 0 ] && grep -q "format llava" "$TMP/hf.err" && [ ! -e "$TMP/exp-hf" ]' "export --format hf refuses it (LLaVA cannot feed codes)"

"$BIN/asvr-eval" attention --checkpoint "$TMP/disc" --codebooks "$TOK" --tokenizer "$SP" --image "$G/images/photo3.png" \
    --question "Describe it." --out "$TMP/map.png" --json $Q > "$TMP/grid.json"
check '[ $? -eq 0 ] && [ -s "$TMP/map.png" ] && grep -q "\"grid_size\":3" "$TMP/grid.json"' "attention draws a discrete-input model's map"

{ printf '{"question_id": "q0", "image": "photo0.jpg", "question": "What is it?", "answer": "sky"}\n'
  printf '{"question_id": "q1", "image": "photo2.jpg", "question": "What colour?", "answer": "red"}\n'; } > "$TMP/gqa.jsonl"
"$BIN/asvr-eval" run --checkpoint "$TMP/disc" --codebooks "$TOK" --tokenizer "$SP" --bench gqa --questions "$TMP/gqa.jsonl" \
    --image-root "$G/images" --max-new-tokens 4 --batch 2 --out "$TMP/ev" $Q > /dev/null
check '[ $? -eq 0 ] && [ "$(wc -l < "$TMP/ev/answers/gqa.jsonl")" = 2 ]' "run answers a benchmark with a discrete-input model"

"$BIN/asvr-eval" codes --checkpoint "$TMP/disc" --codebooks "$TOK" --tokenizer "$SP" --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" \
    --image-root "$G/images" $Q > "$TMP/codes.json"
check '[ $? -eq 0 ] && grep -q "\"positions\": [1-9]" "$TMP/codes.json"' "codes scores a discrete-input model's head"

# errors
"$BIN/asvr-eval" ask --checkpoint "$TMP/disc" --image "$G/images/photo1.jpg" "${ASK[@]}" 2> "$TMP/e"
check '[ $? -eq 2 ] && grep -q -- "--codebooks" "$TMP/e"' "without --codebooks: exit 2 naming it"
cp "$TOK" "$TMP/tok2.safetensors"; printf '\x11' | dd of="$TMP/tok2.safetensors" bs=1 seek=$(( $(stat -c %s "$TOK") - 3 )) conv=notrunc status=none
"$BIN/asvr-eval" ask --checkpoint "$TMP/disc" --codebooks "$TMP/tok2.safetensors" --image "$G/images/photo1.jpg" "${ASK[@]}" 2> "$TMP/e"
check '[ $? -eq 1 ] && grep -q "tok2.safetensors" "$TMP/e" && grep -q "trained on the codes of tokenizer" "$TMP/e"' "another tokenizer: exit 1 naming it"
"$BIN/asvr-eval" ask --checkpoint "$TMP/disc" --codebooks "$TOK" --input sideways --image "$G/images/photo1.jpg" "${ASK[@]}" 2> /dev/null
check '[ $? -eq 2 ]' "--input other than continuous|discrete: exit 2"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
