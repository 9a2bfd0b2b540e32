#!/usr/bin/env bash
# cli_train_s2.sh BUILD_DIR GOLDEN_DIR — the S2 high-resolution setting through the tools, at a tiny size
# on the CPU: the tiny tokenizer as the 46 px input tower with vision scales 46/92/138, its codes from
# 138 px images downsampled bilinearly (encode --input-size 138 --downsample bilinear). Stage it trains
# and its losses fall; a 46 px code store is refused by the S2 model and the S2 store by the plain model,
# naming both sizes; bad scales and a misspelt key in the vision object are refused; --input discrete
# with scales is a usage error; asvr-eval ask, attention and codes run on the S2 checkpoint; export
# records use_s2; asvr-train plan prints the S2 tower.
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level warn"

# model configs: the training CLI's with S2 scales, with bad scales, with a misspelt key
python3 - "$F/model.json" "$TMP" << 'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
for name, extra in (("s2", {"scales": [46, 92, 138]}), ("bad", {"scales": [46, 100]}), ("typo", {"scale": [46, 92, 138]})):
    c = json.loads(json.dumps(m))
    c["vision"].update(extra)
    json.dump(c, open("%s/%s.json" % (sys.argv[2], name), "w"))
EOF

"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --input-size 138 \
    --downsample bilinear --out "$TMP/it138.lmdb" $Q
check '[ $? -eq 0 ]' "encode at input size 138, bilinear to 46"
"$BIN/asvr-tokenize" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out "$TMP/it46.lmdb" $Q
"$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes "$TMP/it138.lmdb" --max-len 128 --out "$TMP/it.pack" $Q "$F/it.json"
check '[ -f "$TMP/it.pack" ]' "packed against the S2 code store"

COMMON=(--image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 --accum 1 --packed "$TMP/it.pack" --stage it $Q)
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/s2.json" --codes "$TMP/it138.lmdb" --steps 24 --lr 3e-3 --out "$TMP/s2run"
check '[ $? -eq 0 ] && [ -f "$TMP/s2run/step-00000024/DONE" ]' "stage it trains with the S2 tower"
avg() { sed -n "$3,$4p" "$1" | grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2 | awk '{s+=$1; n++} END {if (n) printf "%.6f", s/n; else print "nan"}'; }
t0=$(avg "$TMP/s2run/log.jsonl" text_loss 1 4); t1=$(avg "$TMP/s2run/log.jsonl" text_loss 21 24)
v0=$(avg "$TMP/s2run/log.jsonl" visual_loss 1 4); v1=$(avg "$TMP/s2run/log.jsonl" visual_loss 21 24)
check 'awk "BEGIN{exit !($t1 < 0.9 * $t0)}"' "S2: text loss falls ($t0 → $t1)"
check 'awk "BEGIN{exit !($v1 < 0.9 * $v0)}"' "S2: visual loss falls ($v0 → $v1)"
check 'python3 -c "import json,sys; s=json.load(open(sys.argv[1])); assert s[\"model_config\"][\"vision\"][\"scales\"] == [46, 92, 138]" "$TMP/s2run/step-00000024/state.json"' \
    "the checkpoint records the scales"

# refusals: code stores of the other input size, bad configs
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/s2.json" --codes "$TMP/it46.lmdb" --steps 1 --out "$TMP/r1" 2> "$TMP/err1"
check '[ $? -eq 1 ] && grep -q "46 px" "$TMP/err1" && grep -q "138" "$TMP/err1"' "the S2 model refuses a 46 px code store"
"$BIN/asvr-train" train "${COMMON[@]}" --config "$F/model.json" --codes "$TMP/it138.lmdb" --steps 1 --out "$TMP/r2" 2> "$TMP/err2"
check '[ $? -eq 1 ] && grep -q "138 px" "$TMP/err2" && grep -q "46 px" "$TMP/err2"' "the plain model refuses the S2 code store"
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/bad.json" --codes "$TMP/it138.lmdb" --steps 1 --out "$TMP/r3" 2> "$TMP/err3"
check '[ $? -ne 0 ] && grep -q "100" "$TMP/err3" && grep -q "image_size 46" "$TMP/err3"' "scales that are not multiples of the tower's size are refused"
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/typo.json" --codes "$TMP/it138.lmdb" --steps 1 --out "$TMP/r4" 2> "$TMP/err4"
check '[ $? -ne 0 ] && grep -q "unknown key \"scale\"" "$TMP/err4"' "a misspelt vision key is refused"
"$BIN/asvr-train" train "${COMMON[@]}" --config "$TMP/s2.json" --codes "$TMP/it138.lmdb" --steps 1 --input discrete --out "$TMP/r5" 2> /dev/null
check '[ $? -eq 2 ]' "--input discrete with S2 scales is a usage error"

# evaluation on the S2 checkpoint
M=(--vision "$TOK" --tokenizer "$SP")
a=$("$BIN/asvr-eval" ask --checkpoint "$TMP/s2run" "${M[@]}" --image "$G/images/photo1.jpg" --question "What is in the picture?" \
    --max-new-tokens 8 $Q); rc=$?
check '[ $rc -eq 0 ]' "asvr-eval ask answers with the S2 tower ('$a')"
"$BIN/asvr-eval" attention --checkpoint "$TMP/s2run" "${M[@]}" --image "$G/images/photo3.png" --question "Describe it." \
    --out "$TMP/map.png" --json $Q > "$TMP/grid.json"
check '[ $? -eq 0 ] && [ -s "$TMP/map.png" ] && grep -q "\"grid_size\":3" "$TMP/grid.json"' "asvr-eval attention draws the 3x3 grid on the 138 px image"
"$BIN/asvr-eval" codes --checkpoint "$TMP/s2run" "${M[@]}" --codebooks "$TOK" --packed "$TMP/it.pack" --codes "$TMP/it138.lmdb" \
    --image-root "$G/images" $Q > "$TMP/codes.json"
check '[ $? -eq 0 ] && grep -q "code_accuracy_depth" "$TMP/codes.json"' "asvr-eval codes runs on the S2 model"
"$BIN/asvr-train" export --format llava --vision "$TOK" "$TMP/s2run/step-00000024" "$TMP/export" $Q
check 'grep -q "\"use_s2\": true" "$TMP/export/config.json" && grep -q "\"mm_hidden_size\": 144" "$TMP/export/config.json" && grep -q "46,92,138" "$TMP/export/config.json"' \
    "export --format llava records use_s2, s2_scales and mm_hidden_size 144"
"$BIN/asvr-train" export "${M[@]}" "$TMP/s2run/step-00000024" "$TMP/export-hf" 2> "$TMP/exp.err"
check '[ $? -eq 1 ] && grep -q "S2" "$TMP/exp.err" && [ ! -e "$TMP/export-hf" ]' "export --format hf refuses S2 (transformers' LLaVA has no S2 tower)"

# plan: the S2 tower in the memory figures
"$BIN/asvr-train" plan --config "$TMP/s2.json" --seq 64 > "$TMP/plan_s2.txt"
"$BIN/asvr-train" plan --config "$F/model.json" --seq 64 > "$TMP/plan_46.txt"
tw() { grep "input tower" "$1" | awk '{print $5}'; }
check 'grep -q "S2 input at scales 46/92/138 (14 tower forwards per image, 144 features per position)" "$TMP/plan_s2.txt"' "plan names the S2 input"
check 'awk "BEGIN{exit !($(tw "$TMP/plan_s2.txt") > 10 * $(tw "$TMP/plan_46.txt"))}"' "plan counts the S2 tower's activations ($(tw "$TMP/plan_46.txt") → $(tw "$TMP/plan_s2.txt") MiB)"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
