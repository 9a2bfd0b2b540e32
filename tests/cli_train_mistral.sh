#!/usr/bin/env bash
# cli_train_mistral.sh BUILD_DIR GOLDEN_DIR — a Mistral-style model.json (HF MistralConfig keys: GQA,
# rope_theta 1e6, sliding_window) at the tiny size of cli_train: a window shorter than --max-len (128)
# but longer than every sample (the longest is 113 positions) trains; a window shorter than a sample is
# refused before any step, naming the sample; the paper's Mistral and 13B configs plan.
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level warn"

"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/it.lmdb" $Q
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$G/sp/tiny_bpe.model" --codes "$TMP/it.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
mistral() { # mistral WINDOW: the cli_train model (tests/golden/train_cli/model.json) with an HF MistralConfig-style llm
  cat > "$TMP/m$1.json" <<JSON
{"llm": {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu", "hidden_size": 32,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": null, "intermediate_size": 64,
         "vocab_size": 700, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": $1,
         "max_position_embeddings": 32768, "attention_dropout": 0.0, "tie_word_embeddings": false, "use_cache": true,
         "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2},
 "vision": {"image_size": 46, "patch_size": 14, "hidden_size": 48, "intermediate_size": 96, "num_layers": 4,
            "num_heads": 4, "layer_norm_eps": 1e-6, "tap_layer": 3, "image_mean": [0.5,0.5,0.5], "image_std": [0.5,0.5,0.5]},
 "visual_head": {"embed_dim": 24, "n_heads": 3, "depth": 3, "codebook_size": 64, "n_layers": 3, "ffn_dim": 48, "rms_norm_eps": 1e-6}}
JSON
}
COMMON=(--image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 --accum 1 --stage it --packed "$TMP/it.pack" --codes "$TMP/it.lmdb" $Q)
mistral 120
check 'grep -q "\"sliding_window\": 120" "$TMP/m120.json"' "the Mistral config is written"
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/m120.json" --steps 2 --out "$TMP/r120" 2> "$TMP/r120.err"
check '[ $? -eq 0 ] && [ -f "$TMP/r120/step-00000002/DONE" ]' "a window below --max-len but above every sample trains ($(tail -c 300 "$TMP/r120.err"))"
mistral 110
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/m110.json" --steps 2 --out "$TMP/r110" 2> "$TMP/r110.err"
check '[ $? -eq 1 ] && grep -q "sample 4 (id '"'"'4'"'"', JSON index 4) is 113 positions long" "$TMP/r110.err" && [ ! -e "$TMP/r110/step-00000001" ]' \
      "a sample longer than the window is refused before any step, by name"
# no window (null, Mistral-7B-v0.2): no check at all
mistral null
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/mnull.json" --steps 1 --out "$TMP/rnull" 2> /dev/null
check '[ $? -eq 0 ] && [ -f "$TMP/rnull/step-00000001/DONE" ]' "sliding_window null trains"
# the recipe's configs plan (7B Mistral, Vicuna-13B) at one GPU's worth of memory
EX="$(cd "$(dirname "$0")/.." && pwd)/examples/llava15"
for m in model-mistral.json model-13b.json; do
  "$BIN/asvr-train" plan --config "$EX/$m" --stage it --max-images 1 --attention flash --gpu-gib 1000 > "$TMP/plan.txt" 2>&1
  check '[ $? -eq 0 ] && grep -qi "total" "$TMP/plan.txt"' "asvr-train plan --config $m ($(tail -c 200 "$TMP/plan.txt"))"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
