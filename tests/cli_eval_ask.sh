#!/usr/bin/env bash
# cli_eval_ask.sh BUILD_DIR GOLDEN_DIR — asvr-eval on the tiny committed checkpoint of
# tests/golden/eval_ask/ (asvr-train's run on train_cli/it.json, 150 steps of stage it, text loss only;
# regen.sh there remakes it): `ask` answers (exit 0, a non-empty answer, the same from the run folder,
# its step folder and --model/--config), `attention` writes a PNG atomically and a JSON grid, usage
# errors exit 2, a missing image fails naming it.
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/eval_ask"
Q="--log-level warn"

RUN="$F/run" # read only: every output below goes to $TMP
check '[ -f "$RUN/step-00000150/DONE" ] && [ -f "$RUN/step-00000150/model.safetensors" ]' "the committed checkpoint is there"

M=(--vision "$TOK" --tokenizer "$SP")
ASK=(--image "$G/images/photo1.jpg" --question "What is in the picture?" --max-new-tokens 16 $Q)
a1=$("$BIN/asvr-eval" ask --checkpoint "$RUN" "${M[@]}" "${ASK[@]}"); rc=$?
check '[ $rc -eq 0 ] && [ -n "$a1" ]' "ask answers from the run folder (answer: '$a1')"
check '[ "$(printf "%s" "$a1" | wc -l)" = 0 ] && [ "$a1" = "$(printf "%s" "$a1" | sed "s/^ *//; s/ *$//")" ]' "the answer is one stripped line"
a2=$("$BIN/asvr-eval" ask --checkpoint "$RUN/step-00000150" "${M[@]}" "${ASK[@]}")
check '[ "$a2" = "$a1" ]' "the step folder gives the same answer"
a3=$("$BIN/asvr-eval" ask --model "$RUN/step-00000150/model.safetensors" --config "$F/model.json" "${M[@]}" "${ASK[@]}")
check '[ "$a3" = "$a1" ]' "--model/--config gives the same answer (pad policy by default)"
"$BIN/asvr-train" export "$RUN/step-00000150" "$TMP/export" "${M[@]}" --log-level warn
check '[ $? -eq 0 ] && grep -q "\"model_type\": \"llava\"" "$TMP/export/config.json" && grep -q "LlavaForConditionalGeneration" "$TMP/export/config.json" && grep -q "\"image_token_index\": 700" "$TMP/export/config.json" && grep -q "\"vision_feature_layer\": 3" "$TMP/export/config.json" && grep -q "siglip_vision_model" "$TMP/export/config.json" && [ -f "$TMP/export/tokenizer.model" ] && grep -q "<image>" "$TMP/export/tokenizer_config.json" && [ -f "$TMP/export/preprocessor_config.json" ]' \
      "export (hf, the default): LlavaConfig with a SigLIP vision_config, the tap layer, an image token and the tokenizer"
a5=$("$BIN/asvr-eval" ask --checkpoint "$TMP/export" "${M[@]}" "${ASK[@]}" --policy pad)
check '[ "$a5" = "$a1" ]' "an hf export loads directly and gives the same answer"
a6=$("$BIN/asvr-eval" ask --checkpoint "$TMP/export" --tokenizer "$SP" "${ASK[@]}")
check '[ "$a6" = "$a1" ]' "an hf export carries its tower: no --vision needed"
"$BIN/asvr-train" export --format llava --vision "$TOK" "$RUN/step-00000150" "$TMP/export-llava" --log-level warn
check '[ $? -eq 0 ] && grep -q "\"model_type\": \"llava_llama\"" "$TMP/export-llava/config.json" && grep -q "\"mm_vision_tower\": \".*siglip_vision_tower\"" "$TMP/export-llava/config.json" && [ -f "$TMP/export-llava/siglip_vision_tower/model.safetensors" ]' \
      "export --format llava: LLaVA's names, mm_vision_tower set to the tower written beside it"
a7=$("$BIN/asvr-eval" ask --checkpoint "$TMP/export-llava" "${M[@]}" "${ASK[@]}")
check '[ "$a7" = "$a1" ]' "a llava export loads directly and gives the same answer"
"$BIN/asvr-train" export "$RUN/step-00000150" "$TMP/export-bad" --log-level warn 2> /dev/null
check '[ $? -eq 2 ] && [ ! -e "$TMP/export-bad" ]' "export hf without --vision/--tokenizer is a usage error"
"$BIN/asvr-eval" ask --checkpoint "$RUN" "${M[@]}" "${ASK[@]}" --logits "$TMP/logits.safetensors" > /dev/null
check '[ $? -eq 0 ] && [ -s "$TMP/logits.safetensors" ] && grep -q "prompt_ids" "$TMP/logits.safetensors"' "ask --logits writes the first step's logits"
a4=$("$BIN/asvr-eval" ask --checkpoint "$RUN" "${M[@]}" "${ASK[@]}" --max-new-tokens 1)
check '[ "$(printf "%s" "$a4" | wc -w)" -le 1 ]' "--max-new-tokens 1 gives at most one word ('$a4')"

# attention: a PNG (atomically: no temp file left), a JSON grid of 3x3 (46 px / 14 px patches)
AT=(--checkpoint "$RUN" "${M[@]}" --image "$G/images/photo3.png" --question "Describe it." $Q)
"$BIN/asvr-eval" attention "${AT[@]}" --out "$TMP/map.png" --json > "$TMP/grid.json"
check '[ $? -eq 0 ] && [ "$(head -c 8 "$TMP/map.png" | od -An -tx1 | tr -d " \n")" = "89504e470d0a1a0a" ]' "attention writes a PNG"
check '[ -z "$(ls "$TMP" | grep "map.png.tmp")" ]' "no temporary file left"
check 'grep -q "\"grid_size\":3" "$TMP/grid.json" && grep -q "\"layer\":\"mean\"" "$TMP/grid.json"' "--json prints the 3x3 grid"
"$BIN/asvr-eval" attention "${AT[@]}" --out "$TMP/map1.png" --layer 1
check '[ $? -eq 0 ] && [ -s "$TMP/map1.png" ]' "--layer 1 works"

# errors
"$BIN/asvr-eval" ask --checkpoint "$RUN" "${M[@]}" --question "What?" $Q 2> /dev/null; check '[ $? -eq 2 ]' "missing --image exits 2"
"$BIN/asvr-eval" ask --checkpoint "$RUN" --tokenizer "$SP" --image x --question y $Q 2> /dev/null; check '[ $? -eq 2 ]' "missing --vision exits 2"
"$BIN/asvr-eval" ask --checkpoint "$RUN" --model a --config b "${M[@]}" --image x --question y $Q 2> /dev/null; check '[ $? -eq 2 ]' "--checkpoint with --model exits 2"
"$BIN/asvr-eval" attention "${AT[@]}" --out "$TMP/m.png" --layer 0 --all-layers 2> /dev/null; check '[ $? -eq 2 ]' "--layer with --all-layers exits 2"
"$BIN/asvr-eval" attention "${AT[@]}" --out "$TMP/m.png" --layer 7 2> /dev/null; check '[ $? -eq 2 ] && [ ! -e "$TMP/m.png" ]' "--layer beyond the model exits 2"
"$BIN/asvr-eval" frobnicate 2> /dev/null; check '[ $? -eq 2 ]' "unknown command exits 2"
"$BIN/asvr-eval" ask --checkpoint "$RUN" "${M[@]}" --image "$TMP/missing.jpg" --question "What?" $Q 2> "$TMP/err"
check '[ $? -eq 1 ] && grep -q "missing.jpg" "$TMP/err"' "a missing image fails naming it"
"$BIN/asvr-eval" ask --checkpoint "$TMP/nothing" "${M[@]}" "${ASK[@]}" 2> "$TMP/err"
check '[ $? -eq 1 ] && grep -q "nothing" "$TMP/err"' "a missing checkpoint fails naming it"
"$BIN/asvr-eval" --help > /dev/null; check '[ $? -eq 0 ]' "--help exits 0"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
