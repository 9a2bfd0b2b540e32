#!/usr/bin/env bash
# cli_pack.sh BUILD_DIR GOLDEN_DIR — asvr-pack as a user runs it: build, info, show, a no-op rerun,
# a changed setting refused, malformed samples reported and skipped (or fatal with --max-errors),
# --codes reporting images without codes, a truncated store refused.
. "$(dirname "$0")/lib_cli.sh" "$@"
PACK="$BIN/asvr-pack"
TOKBIN="$BIN/asvr-tokenize"

M="$G/sp/tiny_bpe.model"
IN="$G/pack/vicuna_v1.json.zst"
"$PACK" build --template vicuna_v1 --tokenizer "$M" --image-positions 9 --out "$TMP/it.pack" --stats "$TMP/st.json" --log-level error "$IN"
check '[ $? -eq 0 ] && [ -f "$TMP/it.pack" ]' "build exits 0"
check 'grep -q "\"samples\": 965" "$TMP/st.json" && grep -q "\"skipped\": 0" "$TMP/st.json"' "stats count every sample"
"$PACK" info "$TMP/it.pack" > "$TMP/info.json"; check '[ $? -eq 0 ] && grep -q "\"template\": \"vicuna_v1\"" "$TMP/info.json"' "info prints JSON"
"$PACK" show --tokenizer "$M" "$TMP/it.pack" 3 > "$TMP/show.txt"; check '[ $? -eq 0 ] && grep -q "\[\[" "$TMP/show.txt" && grep -q "<image x 9>" "$TMP/show.txt"' "show marks supervised spans"
cp "$TMP/it.pack" "$TMP/copy.pack"
"$PACK" build --template vicuna_v1 --tokenizer "$M" --image-positions 9 --out "$TMP/it.pack" "$IN" 2> "$TMP/noop.err"
check '[ $? -eq 0 ] && grep -q "up to date" "$TMP/noop.err" && cmp -s "$TMP/it.pack" "$TMP/copy.pack"' "rerun is a no-op"
"$PACK" build --template vicuna_v1 --tokenizer "$M" --image-positions 9 --max-len 1024 --out "$TMP/it.pack" "$IN" 2> "$TMP/diff.err"
check '[ $? -eq 1 ] && grep -q "max-len" "$TMP/diff.err" && cmp -s "$TMP/it.pack" "$TMP/copy.pack"' "a changed setting is refused, output untouched"
"$PACK" build --template vicuna_v1 --tokenizer "$M" --image-positions 9 --no-packing --out "$TMP/np.pack" --log-level error "$IN"
check '[ $? -eq 0 ] && "$PACK" info "$TMP/np.pack" | grep -q "\"rows\": 965"' "--no-packing gives one sample per row"

# Malformed samples: reported with index and id, skipped; --max-errors 0 makes them fatal.
# (sample 0 is text-only, which the plain template refuses, as the reference asserts)
cat > "$TMP/bad.json" <<'JSON'
[{"id": 1, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
 {"id": "two", "conversations": [{"from": "robot", "value": "x"}]},
 {"id": 3, "image": "a.jpg", "conversations": [{"from": "human", "value": "no image tag"}, {"from": "gpt", "value": "ok"}]},
 {"id": 4, "conversations": "not a list"},
 {"id": 5, "image": "b.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "This."}]}]
JSON
"$PACK" build --template plain --tokenizer "$M" --image-positions 9 --out "$TMP/bad.pack" --rejects "$TMP/rej.jsonl" "$TMP/bad.json" 2> "$TMP/bad.err"
check '[ $? -eq 0 ] && [ "$(wc -l < "$TMP/rej.jsonl")" = 4 ] && grep -q "\"id\":\"two\"" "$TMP/rej.jsonl"' "malformed samples skipped and listed"
check 'grep -q "sample 1 (id '"'"'two'"'"')" "$TMP/bad.err"' "the log names the sample index and id"
"$PACK" build --template plain --tokenizer "$M" --image-positions 9 --out "$TMP/bad2.pack" --max-errors 0 "$TMP/bad.json" 2> /dev/null
check '[ $? -eq 1 ] && [ ! -e "$TMP/bad2.pack" ] && [ -z "$(ls "$TMP" | grep tmp)" ]' "--max-errors 0: fails, no output, no temp file"
"$PACK" build --template plain --tokenizer "$M" --image-positions 9 --out "$TMP/bad4.pack" --max-errors 4 "$TMP/bad.json" 2> /dev/null
check '[ $? -eq 0 ] && [ -e "$TMP/bad4.pack" ]' "--max-errors 4 with 4 malformed samples: not more than 4, the build succeeds"
"$PACK" build --template plain --tokenizer "$M" --image-positions 9 --out "$TMP/bad3.pack" --max-errors 3 "$TMP/bad.json" 2> /dev/null
check '[ $? -eq 1 ] && [ ! -e "$TMP/bad3.pack" ]' "--max-errors 3 with 4 malformed samples fails"
printf '[{"id": 1, "conversations": [' > "$TMP/cut.json"
"$PACK" build --template vicuna_v1 --tokenizer "$M" --image-positions 9 --out "$TMP/cut.pack" "$TMP/cut.json" 2> "$TMP/cut.err"
check '[ $? -eq 1 ] && grep -q "cut off" "$TMP/cut.err" && [ ! -e "$TMP/cut.pack" ]' "a truncated JSON fails cleanly"

# --codes: images without codes are listed and fail the build.
printf 'photo0.jpg\n' > "$TMP/one.txt"
"$TOKBIN" encode --list "$TMP/one.txt" --image-root "$G/images" --tokenizer "$TOK" --policy squash --out "$TMP/codes.lmdb" --log-level error
printf '[{"id": 1, "image": "photo0.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a"}]},\n {"id": 2, "image": "nope.jpg", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "b"}]}]' > "$TMP/pt.json"
"$PACK" build --template plain --tokenizer "$M" --codes "$TMP/codes.lmdb" --out "$TMP/pt.pack" "$TMP/pt.json" 2> "$TMP/codes.err"
check '[ $? -eq 1 ] && grep -q "nope.jpg" "$TMP/codes.err" && [ ! -e "$TMP/pt.pack" ]' "--codes lists images without codes"

# A truncated store is refused with a clear message.
head -c 1000 "$TMP/copy.pack" > "$TMP/trunc.pack"
"$PACK" info "$TMP/trunc.pack" > /dev/null 2> "$TMP/trunc.err"
check '[ $? -eq 1 ] && grep -q "truncated or corrupt" "$TMP/trunc.err"' "truncated store refused"
"$PACK" build 2> /dev/null; check '[ $? -eq 2 ]' "usage error exits 2"
"$PACK" build --template vicuna_v1 --tokenizer "$M" --vision-tokenizer "$TOK" --out "$TMP/vt.pack" --log-level error "$IN"
check '[ $? -eq 0 ] && "$PACK" info "$TMP/vt.pack" | grep -q "\"image_positions\": 9"' "positions from the vision tokenizer's config"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
