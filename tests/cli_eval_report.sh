#!/usr/bin/env bash
# cli_eval_report.sh BUILD_DIR GOLDEN_DIR — asvr-eval scoring and the report as a user runs them:
# score two runs' answers (tests/golden/eval, expected numbers in its README.md), print the paper's
# table, AVG with MME as a percentage and missing benchmarks left out, --compare deltas, Markdown
# and JSON outputs, and the refusals (malformed lines with their line number, missing answers,
# unknown benchmark, bad usage) with their exit codes.
set -u
BIN="$1/bin/asvr-eval"
G="$2/eval"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
Q="--log-level warn"

for run in a b; do
  for b in textvqa mme pope gqa; do
    [ -f "$G/answers_$run/$b.jsonl" ] || continue
    "$BIN" score --bench $b --questions "$G/$b.jsonl" --answers "$G/answers_$run/$b.jsonl" \
      --out "$TMP/$run/scores/$b.json" $Q > "$TMP/$run.$b.stdout"
    check '[ $? -eq 0 ] && [ -f "$TMP/$run/scores/$b.json" ] && cmp -s "$TMP/$run.$b.stdout" "$TMP/$run/scores/$b.json"' \
      "score $run/$b exits 0 and prints what it writes"
  done
done
check '[ -z "$(find "$TMP" -name "*.tmp.*")" ]' "no temporary files left"
check 'grep -q "\"value\": 95.0" "$TMP/a/scores/textvqa.json"' "TextVQA soft accuracy 95.0 (k=4 → 1.0, k=3 → 0.9)"
check 'grep -q "\"metric\": \"perception\"" "$TMP/b/scores/mme.json" && grep -q "\"value\": 200.0" "$TMP/b/scores/mme.json"' \
  "MME reports Perception (200 = 100·(1 + 1))"
check 'grep -q "\"llava_mean_f1\"" "$TMP/b/scores/pope.json" && grep -q "\"lmms_accuracy\"" "$TMP/b/scores/pope.json"' \
  "POPE variants are labelled"

# The table: groups, titles, values, AVG, footnotes.
"$BIN" report "$TMP/a" "$TMP/b" > "$TMP/table.txt"
check '[ $? -eq 0 ]' "report exits 0"
check 'head -1 "$TMP/table.txt" | grep -q "OCR .*| General .*| Knowledge .*| Vision-centric .*| Hallucination"' "group line in the paper's order"
check 'sed -n 2p "$TMP/table.txt" | grep -q "TextVQA  DocVQA  OCRBench  ChartQA | MMBench  *MME  SEED-I   GQA | MMMU  AI2D | RWQA  MMVP | HallB  *POPE |  *AVG"' \
  "14 columns then AVG"
check 'grep -E "^a  " "$TMP/table.txt" | grep -q "95.0 .* 50.0 .* 75.0 | 57.5$"' "run a: values and AVG (95 + 2.5 + 75)/3 = 57.5"
check 'grep -E "^b  " "$TMP/table.txt" | grep -q "100.0 .* 200.0 .* 50.0 .* 100.0 | 65.0$"' "run b: AVG over its 4 benchmarks = 65.0"
check 'grep -E "^a  " "$TMP/table.txt" | grep -q "–"' "a missing benchmark shows –"
check 'grep -q "^– a: not evaluated: DocVQA, OCRBench" "$TMP/table.txt" && grep -q "AVG over the 3 benchmark(s) present" "$TMP/table.txt"' \
  "footnote names the missing benchmarks"
check 'grep -q "MME is a point score" "$TMP/table.txt"' "footnote on MME in AVG"

# --compare: deltas of the displayed numbers, AVG over shared benchmarks.
"$BIN" report --compare "$TMP/a" "$TMP/b" --markdown "$TMP/t.md" --json "$TMP/t.json" > "$TMP/cmp.txt"
check '[ $? -eq 0 ]' "report --compare exits 0"
check 'grep -E "^b  " "$TMP/cmp.txt" | grep -q "100.0 (+5.0)" && grep -E "^b  " "$TMP/cmp.txt" | grep -q "200.0 (+150.0)"' "deltas"
check 'grep -E "^b  " "$TMP/cmp.txt" | grep -q "| 70.0 (+12.5)$"' "AVG delta over the shared benchmarks: 70.0 (+12.5)"
check 'grep -E "^b  " "$TMP/cmp.txt" | grep -q " 50.0 |"' "a benchmark the baseline lacks has no delta"
check 'grep -q "^| b | 100.0 (+5.0) | – |" "$TMP/t.md" && grep -q "^| Run | TextVQA | DocVQA |" "$TMP/t.md"' "Markdown table"
check 'grep -q "\"baseline\": \"a\"" "$TMP/t.json" && grep -q "\"avg\": 57.5" "$TMP/t.json" && grep -q "\"avg\": 12.5" "$TMP/t.json"' "JSON report"
check '[ -z "$(ls "$TMP" | grep tmp)" ]' "report outputs atomic"
"$BIN" report --pick pope=lmms_accuracy,mme=total_score "$TMP/b" > "$TMP/pick.txt"
check '[ $? -eq 0 ] && grep -q "Metrics other than the default: MME = total_score, POPE = lmms_accuracy" "$TMP/pick.txt"' "--pick"

# Refusals.
"$BIN" report --pick pope=f2 "$TMP/b" > /dev/null 2> "$TMP/e1"
check '[ $? -eq 1 ] && grep -q "no metric .f2." "$TMP/e1"' "an unknown metric lists the available ones"
"$BIN" report --compare "$TMP/a" > /dev/null 2>&1; check '[ $? -eq 2 ]' "--compare with one run is a usage error"
"$BIN" report "$TMP/nope" > /dev/null 2>&1; check '[ $? -eq 1 ]' "a missing run folder fails"
"$BIN" score --bench nope --questions "$G/pope.jsonl" --answers "$G/answers_a/pope.jsonl" > /dev/null 2>&1
check '[ $? -eq 2 ]' "unknown benchmark is a usage error"
"$BIN" score --bench pope > /dev/null 2>&1; check '[ $? -eq 2 ]' "missing flags are a usage error"
head -2 "$G/pope.jsonl" > "$TMP/bad.jsonl"; printf '{"question_id": 9, "answer": \n' >> "$TMP/bad.jsonl"
printf '{"answer": "yes"}\n' >> "$TMP/bad.jsonl"
"$BIN" score --bench pope --questions "$TMP/bad.jsonl" --answers "$G/answers_a/pope.jsonl" --out "$TMP/bad.json" > /dev/null 2> "$TMP/e2"
check '[ $? -eq 1 ] && grep -q "bad.jsonl:3:" "$TMP/e2" && grep -q "bad.jsonl:4: no question_id" "$TMP/e2" && [ ! -e "$TMP/bad.json" ]' \
  "malformed question lines named by line number, no output"
"$BIN" score --bench gqa --questions "$G/pope.jsonl" --answers "$G/answers_a/pope.jsonl" > /dev/null 2> "$TMP/e3"
check '[ $? -eq 1 ] && grep -q "benchmark .pope. in a file scored as .gqa." "$TMP/e3"' "a file of another benchmark is refused"
head -1 "$G/answers_a/pope.jsonl" > "$TMP/part.jsonl"
"$BIN" score --bench pope --questions "$G/pope.jsonl" --answers "$TMP/part.jsonl" > /dev/null 2> "$TMP/e4"
check '[ $? -eq 1 ] && grep -q "3 of 4 questions have no answer" "$TMP/e4"' "missing answers fail"
"$BIN" score --bench pope --questions "$G/pope.jsonl" --answers "$TMP/part.jsonl" --allow-missing $Q > "$TMP/part.json"
check '[ $? -eq 0 ] && grep -q "\"missing\": 3" "$TMP/part.json" && grep -q "\"accuracy\": 25.0" "$TMP/part.json"' \
  "--allow-missing scores them as wrong"
"$BIN" prompts --bench textvqa --questions "$G/textvqa.jsonl" > "$TMP/p.jsonl"
check '[ $? -eq 0 ] && grep -q "Reference OCR tokens: coca, cola" "$TMP/p.jsonl" && grep -q "\"max_new_tokens\":512" "$TMP/p.jsonl"' "prompts"
"$BIN" --help > /dev/null; check '[ $? -eq 0 ]' "--help exits 0"

# scores JSON carries full double precision (2 of 3 right: 66.66666666666667, not 66.66666667)
printf '%s\n' '{"question_id": 1, "image": "a.jpg", "question": "Q?", "answer": "yes", "category": "random"}' \
  '{"question_id": 2, "image": "a.jpg", "question": "Q?", "answer": "no", "category": "random"}' \
  '{"question_id": 3, "image": "a.jpg", "question": "Q?", "answer": "no", "category": "random"}' > "$TMP/p3.jsonl"
printf '%s\n' '{"question_id": 1, "answer": "Yes"}' '{"question_id": 2, "answer": "No"}' '{"question_id": 3, "answer": "Yes"}' > "$TMP/a3.jsonl"
"$BIN" score --bench pope --questions "$TMP/p3.jsonl" --answers "$TMP/a3.jsonl" $Q > "$TMP/s3.json"
check 'grep -q "\"accuracy\": 66\.666666666666[0-9]*," "$TMP/s3.json"' "scores JSON in full double precision"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
