#!/usr/bin/env bash
# cli_train_mistral.sh BUILD_DIR GOLDEN_DIR — a Mistral checkpoint as transformers saves one
# (tests/golden/mistral/hf_shards/, tools/gen_mistral_shards.py: bfloat16, three shards and their
# model.safetensors.index.json, config.json with MistralConfig's keys and rope_parameters) trains
# through `asvr-train train --llm INDEX`: one stage-pt step equals, byte for byte, the step from the same
# tensors given under our names in one file (--init expected_llm.safetensors, written by the script
# without our loader); without --llm the LLM is random and the step differs; a shard that is missing
# and an index whose shard lacks a tensor are refused naming them. Data: the train_cli samples packed
# with the mistral_instruct template and the tiny Mistral tokenizer (800 pieces = the model's vocab).
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
H="$G/mistral/hf_shards"
Q="--log-level warn"

"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/it.lmdb" $Q
"$BIN/asvr-pack" build --template mistral_instruct --tokenizer "$G/mistral/tiny_mistral/tokenizer.model" --codes "$TMP/it.lmdb" \
    --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
check '[ $? -eq 0 ] && [ -f "$TMP/it.pack" ]' "mistral_instruct pack with the Mistral tokenizer"

T=("$BIN/asvr-train" train --config "$H/asvr_model.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2
   --accum 1 --stage pt --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" --steps 1 $Q)
"${T[@]}" --llm "$H/model.safetensors.index.json" --out "$TMP/shards"
check '[ $? -eq 0 ] && [ -f "$TMP/shards/step-00000001/DONE" ]' "--llm reads the sharded bf16 Mistral checkpoint"
"${T[@]}" --init "$H/expected_llm.safetensors" --out "$TMP/ours"
check 'cmp -s "$TMP/shards/step-00000001/model.safetensors" "$TMP/ours/step-00000001/model.safetensors"' \
      "the step from the shards equals the step from the same tensors under our names"
"${T[@]}" --out "$TMP/random"
check '! cmp -s "$TMP/shards/step-00000001/model.safetensors" "$TMP/random/step-00000001/model.safetensors"' \
      "without --llm the step differs (the shards were read)"

mkdir "$TMP/broken"
cp "$H"/*.json "$H"/model-0000[12]-of-00003.safetensors "$TMP/broken/"
"${T[@]}" --llm "$TMP/broken/model.safetensors.index.json" --out "$TMP/b1" 2> "$TMP/e1"
check '[ $? -eq 1 ] && grep -q "model-00003-of-00003.safetensors" "$TMP/e1" && [ ! -e "$TMP/b1/step-00000001" ]' "a missing shard: exit 1 naming it"
"${T[@]}" --llm "$H/model-00001-of-00003.safetensors" --out "$TMP/b2" 2> "$TMP/e2"
check '[ $? -eq 1 ] && grep -q "is missing" "$TMP/e2" && grep -q "model-00001-of-00003.safetensors" "$TMP/e2" && [ ! -e "$TMP/b2/step-00000001" ]' "one shard alone: exit 1 naming the missing tensor"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
