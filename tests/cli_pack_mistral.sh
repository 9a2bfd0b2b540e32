#!/usr/bin/env bash
# cli_pack_mistral.sh BUILD_DIR GOLDEN_DIR — asvr-pack with the LLAMA_2-style templates and the data
# sets beyond LLaVA-1.5: the tokenizer's legacy flag from the tokenizer_config.json beside the model
# (or --legacy), the reference's masking and --masking corrected (the counts of samples masked out
# are those of tools/gen_mistral_fixtures.py), and LLaVA-NeXT / Bunny style records (numeric ids,
# images in sub-folders or in a one-element list, text-only and very long samples, an image without
# <image>, extra keys, .json.zst).
set -u
BIN="$1/bin/asvr-pack"
G="$2"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
jget() { tr -d '\n' < "$1" | sed -n "s/.*\"$2\": *\"\{0,1\}\([^,}\"]*\).*/\1/p"; }

HF="$G/mistral/tiny_mistral/tokenizer.model"   # beside it: Mistral's tokenizer_config.json ("legacy": true)
BARE="$G/mistral/tiny_mistral.model"           # the same model alone: non-legacy
IN="$G/mistral/conversations.json.zst"          # 165 samples, 1 to 4 rounds

"$BIN" build --template mistral_instruct --tokenizer "$HF" --image-positions 9 --out "$TMP/a.pack" --stats "$TMP/a.json" "$IN" 2> "$TMP/a.err"
check '[ $? -eq 0 ] && grep -q "legacy=true" "$TMP/a.err" && grep -q "tokenizer_config.json" "$TMP/a.err"' "the legacy flag comes from the config beside the model"
check '[ "$(jget "$TMP/a.json" samples)" = 165 ] && [ "$(jget "$TMP/a.json" masked_out)" = 2 ]' \
      "legacy: the reference masks out only the 2 samples that break its arithmetic ($(jget "$TMP/a.json" masked_out))"
"$BIN" info "$TMP/a.pack" > "$TMP/info.json"; check 'grep -q "\"template\": \"mistral_instruct\"" "$TMP/info.json"' "info names the template"
"$BIN" show --tokenizer "$HF" "$TMP/a.pack" 160 > "$TMP/show.txt"
check '[ $? -eq 0 ] && grep -q "\[INST\]" "$TMP/show.txt" && grep -q "\[\[" "$TMP/show.txt"' "show prints the [INST] rounds and the supervised spans"

"$BIN" build --template mistral_instruct --tokenizer "$BARE" --image-positions 9 --out "$TMP/b.pack" --stats "$TMP/b.json" "$IN" 2> "$TMP/b.err"
check '[ $? -eq 0 ] && grep -q "legacy=false" "$TMP/b.err"' "a bare model is non-legacy"
check '[ "$(jget "$TMP/b.json" masked_out)" = 118 ]' \
      "non-legacy with a user-defined [INST]: the reference masks out every multi-round sample (118, got $(jget "$TMP/b.json" masked_out))"
"$BIN" build --template mistral_instruct --tokenizer "$BARE" --image-positions 9 --masking corrected --out "$TMP/c.pack" --stats "$TMP/c.json" "$IN" 2> /dev/null
check '[ $? -eq 0 ] && [ "$(jget "$TMP/c.json" masked_out)" = 0 ] && [ "$(jget "$TMP/c.json" masking)" = corrected ]' "--masking corrected keeps them all"
check '[ "$(jget "$TMP/c.json" supervised_tokens)" -gt "$(jget "$TMP/b.json" supervised_tokens)" ]' "and supervises more tokens"
"$BIN" build --template mistral_instruct --tokenizer "$BARE" --legacy true --image-positions 9 --out "$TMP/d.pack" --stats "$TMP/d.json" "$IN" 2> /dev/null
check '[ $? -eq 0 ] && [ "$(jget "$TMP/d.json" masked_out)" = 2 ] && cmp -s "$TMP/a.pack" "$TMP/d.pack"' "--legacy true on the bare model equals the config's legacy"
cp "$TMP/b.pack" "$TMP/b.copy"
"$BIN" build --template mistral_instruct --tokenizer "$BARE" --image-positions 9 --masking corrected --out "$TMP/b.pack" "$IN" 2> "$TMP/re.err"
check '[ $? -eq 1 ] && grep -q -- "--masking" "$TMP/re.err" && cmp -s "$TMP/b.pack" "$TMP/b.copy"' "another masking over an existing store is refused"
"$BIN" build --template llama_2 --tokenizer "$HF" --image-positions 9 --out "$TMP/l2.pack" --stats "$TMP/l2.json" "$IN" 2> /dev/null
check '[ $? -eq 0 ] && [ "$(jget "$TMP/l2.json" masked_out)" = 2 ]' "llama_2 template"
"$BIN" build --template mistral_instruct --tokenizer "$HF" --masking nope --image-positions 9 --out "$TMP/x.pack" "$IN" 2> /dev/null
check '[ $? -eq 2 ]' "a bad --masking is a usage error"
"$BIN" build --template mistral_instruct --tokenizer "$HF" --legacy maybe --image-positions 9 --out "$TMP/x.pack" "$IN" 2> /dev/null
check '[ $? -eq 2 ]' "a bad --legacy is a usage error"
mkdir -p "$TMP/badcfg" && cp "$BARE" "$TMP/badcfg/tokenizer.model" && printf '{"legacy": true, "add_eos_token": true}' > "$TMP/badcfg/tokenizer_config.json"
"$BIN" build --template mistral_instruct --tokenizer "$TMP/badcfg/tokenizer.model" --image-positions 9 --out "$TMP/x.pack" "$IN" 2> "$TMP/cfg.err"
check '[ $? -eq 1 ] && grep -q "badcfg/tokenizer_config.json" "$TMP/cfg.err" && grep -q "add_eos_token" "$TMP/cfg.err" && [ ! -e "$TMP/x.pack" ]' \
      "an unsupported tokenizer_config.json fails naming the file and the key"

# LLaVA-NeXT-779K / Bunny style records.
LONG=$(seq 0 29999 | sed 's/^/word/' | tr '\n' ' ')
cat > "$TMP/next.json" <<JSON
[{"id": 7, "image": "coco/train2017/000000000007.jpg", "data_source": "coco",
  "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]},
 {"id": "sub/dir/x", "image": "llava_next_raw_format/sub/dir/x.png",
  "conversations": [{"from": "human", "value": "Describe.\\n<image>"}, {"from": "gpt", "value": "Two dogs."},
                    {"from": "human", "value": "Colors?"}, {"from": "gpt", "value": "Brown."}]},
 {"id": 9, "conversations": [{"from": "human", "value": "Text only?"}, {"from": "gpt", "value": "Yes."}]},
 {"id": 10, "image": ["bunny/images/10.jpg"],
  "conversations": [{"from": "human", "value": "<image>\\nOne image in a list"}, {"from": "gpt", "value": "Fine."}]},
 {"id": 11, "conversations": [{"from": "human", "value": "Long?"}, {"from": "gpt", "value": "$LONG"}]},
 {"id": 12, "image": "long/12.jpg", "conversations": [{"from": "human", "value": "<image>\\nLong?"}, {"from": "gpt", "value": "$LONG"}]},
 {"id": 13, "image": "cauldron/geomverse/13.png",
  "conversations": [{"from": "human", "value": "No placeholder here."}, {"from": "gpt", "value": "12"}]},
 {"id": 14, "image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image>\\n<image>"}, {"from": "gpt", "value": "x"}]}]
JSON
NEXT="$TMP/next.json"
if command -v zstd > /dev/null; then zstd -q -19 "$TMP/next.json" -o "$TMP/next.json.zst" && NEXT="$TMP/next.json.zst"; fi
run_next() { "$BIN" build --template mistral_instruct --tokenizer "$HF" --image-positions 9 --max-len 256 --out "$TMP/$1.pack" \
               --stats "$TMP/$1.json" --rejects "$TMP/$1.rej" "${@:2}" 2> "$TMP/$1.err"; }
run_next n1 "$NEXT"
check '[ $? -eq 0 ] && [ "$(jget "$TMP/n1.json" samples)" = 7 ] && [ "$(jget "$TMP/n1.json" text_samples)" = 3 ] && [ "$(jget "$TMP/n1.json" truncated)" = 2 ]' \
      ".json.zst: numeric ids, sub-folders, a one-image list, text-only and long samples packed (7), the long ones truncated"
check '[ "$(jget "$TMP/n1.json" image_without_placeholder)" = 1 ] && [ "$(wc -l < "$TMP/n1.rej")" = 1 ] && grep -q "list of 2" "$TMP/n1.rej"' \
      "an image without <image> is trained as text by default (as the reference) and counted; a two-image list is rejected"
"$BIN" dump --source-index "$TMP/n1.pack" 6 > "$TMP/n1.dump"
check 'grep -q "\"id\":\"13\",\"image\":null" "$TMP/n1.dump" && grep -q "image_ignored" "$TMP/n1.dump"' "dump shows it without its image"
check 'grep -q "sample 7 (id '"'"'14'"'"')" "$TMP/n1.err"' "the log names the sample index and id"
"$BIN" show --tokenizer "$HF" "$TMP/n1.pack" 1 > "$TMP/n1.show"
check 'grep -q "<image x 9>" "$TMP/n1.show" && grep -q "Brown" "$TMP/n1.show"' "the sub-folder sample keeps its image and both rounds"
run_next n2 --image-without-placeholder reject "$TMP/next.json"
check '[ $? -eq 0 ] && [ "$(jget "$TMP/n2.json" samples)" = 6 ] && [ "$(jget "$TMP/n2.json" image_without_placeholder)" = 1 ] && grep -q "\"id\":\"13\"" "$TMP/n2.rej" && grep -q "no <image>" "$TMP/n2.rej"' \
      "--image-without-placeholder reject: rejected with its reason"
run_next n3 --image-without-placeholder prepend "$TMP/next.json"
check '[ $? -eq 0 ] && [ "$(jget "$TMP/n3.json" samples)" = 7 ] && [ "$(jget "$TMP/n3.json" image_samples)" = 5 ]' "--image-without-placeholder prepend: the image is used"
"$BIN" show --tokenizer "$HF" "$TMP/n3.pack" 6 > "$TMP/n3.show"
check 'grep -q "<image x 9>" "$TMP/n3.show" && grep -q "No placeholder" "$TMP/n3.show"' "the prepended sample has its image first"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
