#!/usr/bin/env bash
# cli_shards.sh BUILD_DIR GOLDEN_DIR — tokenizing and evaluating in parts, as under mpirun/srun:
# `asvr-tokenize encode --shard K/N` takes image i of the deduplicated list when i mod N = K and writes
# STORE.shard-K-of-N; `merge` of the parts equals one run record for record (same meta record, verify
# passes, asvr-pack and asvr-train take it alike); merge refuses another tokenizer or policy, a key
# with different codes (naming both stores and the key), a missing or repeated part; a key twice with
# the same codes is stored once. `asvr-eval run --shard K/N` answers question i when i mod N = K into
# answers/<bench>.part-K-of-N.jsonl; `score` over the parts equals one run's scores, and the report
# too. --shard auto reads Open MPI's and Slurm's variables; bad values are usage errors (exit 2).
. "$(dirname "$0")/lib_cli.sh" "$@"
F="$G/train_cli"
Q="--log-level warn"
T="$BIN/asvr-tokenize"
# No launcher unless a check sets one (the test itself may run inside a Slurm job or under mpirun).
NOL=(env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u OMPI_COMM_WORLD_LOCAL_RANK -u SLURM_STEP_ID -u SLURM_PROCID
     -u SLURM_NTASKS -u SLURM_STEP_NUM_TASKS -u SLURM_LOCALID -u PMI_RANK -u PMI_SIZE -u MPI_LOCALRANKID -u ASVR_LOCAL_DEVICE)
ENCA=("$T" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad $Q)
ENC=("${NOL[@]}" "${ENCA[@]}")
keys() { "$T" dump "$1" | sed 's/^{"key":"\([^"]*\)".*/\1/'; }

# ---- tokenize: one run, then two parts -------------------------------------------------------------
cd "$TMP" || exit 1
"${ENC[@]}" --out one.lmdb; check '[ $? -eq 0 ] && [ -f one.lmdb ]' "one run"
"${ENC[@]}" --out c.lmdb --shard 0/2; r0=$?
"${ENC[@]}" --out c.lmdb --shard 1/2; r1=$?
check '[ $r0 -eq 0 ] && [ $r1 -eq 0 ] && [ -f c.lmdb.shard-0-of-2 ] && [ -f c.lmdb.shard-1-of-2 ] && [ ! -e c.lmdb ] && [ -z "$(ls | grep partial)" ]' \
      "--shard K/2 writes STORE.shard-K-of-2, atomically"
# The split: image i of the deduplicated list (first occurrence in the JSON) goes to part i mod 2.
grep -o '"image": *"[^"]*"' "$F/it.json" | sed 's/.*"\([^"]*\)"$/\1/' | awk '!seen[$0]++' > list.txt
awk 'NR % 2 == 1' list.txt | sort > want0.txt; awk 'NR % 2 == 0' list.txt | sort > want1.txt
keys c.lmdb.shard-0-of-2 > got0.txt; keys c.lmdb.shard-1-of-2 > got1.txt
check '[ "$(wc -l < list.txt)" -ge 4 ] && cmp -s want0.txt got0.txt && cmp -s want1.txt got1.txt' "part K holds images i with i mod 2 = K"
check '[ "$("$T" dump --meta c.lmdb.shard-0-of-2)" = "$("$T" dump --meta one.lmdb)" ]' \
      "a part's meta record is a one-run store's (readers of the meta see no change)"
"$T" stats --json c.lmdb.shard-1-of-2 > st1.json
check 'grep -q "\"shard\": {" st1.json && grep -q "\"index\": 1" st1.json && grep -q "\"count\": 2" st1.json && grep -q "\"list_images\": $(wc -l < list.txt)" st1.json' \
      "stats shows the part record"
# A rerun of a finished part does nothing.
before=$(stat -c %Y.%s c.lmdb.shard-1-of-2)
"${ENC[@]}" --out c.lmdb --shard 1/2 --log-level info 2> rerun.err
check '[ $? -eq 0 ] && grep -q "nothing to do" rerun.err && [ "$(stat -c %Y.%s c.lmdb.shard-1-of-2)" = "$before" ]' "a finished part: nothing to do"

# ---- merge == one run ----------------------------------------------------------------------------
"$T" merge c.lmdb c.lmdb.shard-0-of-2 c.lmdb.shard-1-of-2 $Q --stats merge.json
check '[ $? -eq 0 ] && [ -f c.lmdb ] && [ ! -e c.lmdb.partial ] && [ ! -e c.lmdb.partial-lock ]' "merge writes OUT atomically"
"$T" dump one.lmdb > one.txt; "$T" dump c.lmdb > c.txt
check '[ -s one.txt ] && cmp -s one.txt c.txt' "merged parts == one run, record for record"
check '[ "$("$T" dump --meta c.lmdb)" = "$("$T" dump --meta one.lmdb)" ]' "the merged meta record equals the one run's"
"$T" verify c.lmdb $Q; check '[ $? -eq 0 ]' "verify passes on the merged store"
check 'grep -q "\"records\": $(wc -l < list.txt)" merge.json && grep -q "\"duplicates_skipped\": 0" merge.json' "merge --stats"
"$T" stats c.lmdb > stm.txt
check 'grep -q "merged from 2 store(s): c.lmdb.shard-0-of-2 c.lmdb.shard-1-of-2" stm.txt' "stats names what a merge combined"
before=$(stat -c %Y.%s c.lmdb)
"$T" merge c.lmdb c.lmdb.shard-0-of-2 c.lmdb.shard-1-of-2 2> remerge.err
check '[ $? -eq 0 ] && grep -q "nothing to do" remerge.err && [ "$(stat -c %Y.%s c.lmdb)" = "$before" ]' "a rerun of a finished merge does nothing"
"$T" merge --shards d.lmdb $Q 2> /dev/null; check '[ $? -eq 1 ] && [ ! -e d.lmdb ]' "--shards without parts fails"
cp c.lmdb.shard-0-of-2 d.lmdb.shard-0-of-2; cp c.lmdb.shard-1-of-2 d.lmdb.shard-1-of-2; touch d.lmdb.shard-1-of-2.partial
"$T" merge --shards d.lmdb $Q; check '[ $? -eq 0 ] && cmp -s one.txt <("$T" dump d.lmdb)' "--shards finds OUT.shard-K-of-N (finished ones only)"
# Three parts, unequal sizes, merged: the same again.
for k in 0 1 2; do "${ENC[@]}" --out e.lmdb --shard $k/3; done
"$T" merge --shards e.lmdb $Q; check '[ $? -eq 0 ] && cmp -s one.txt <("$T" dump e.lmdb)' "3 parts merged == one run"
# More parts than images: an empty part is a valid store.
"${ENC[@]}" --out z.lmdb --shard 11/12; check '[ $? -eq 0 ] && [ -f z.lmdb.shard-11-of-12 ] && [ -z "$("$T" dump z.lmdb.shard-11-of-12)" ]' \
      "an empty part"

# asvr-pack and asvr-train take the merged store exactly like the one-run store.
for s in one c; do
  "$BIN/asvr-pack" build --template vicuna_v1 --tokenizer "$SP" --codes $s.lmdb --max-len 128 --out $s.pack $Q "$F/it.json"
  "$BIN/asvr-train" train --config "$F/model.json" --image-root "$G/images" --vision "$TOK" --codebooks "$TOK" --rows 2 \
      --accum 1 --stage it --packed $s.pack --codes $s.lmdb --steps 2 --lr 3e-3 --out run-$s $Q
done
check '[ -f one.pack ] && cmp -s one.pack c.pack' "asvr-pack: the same packed store from either"
check '[ -f run-one/step-00000002/model.safetensors ] && cmp -s run-one/step-00000002/model.safetensors run-c/step-00000002/model.safetensors' \
      "asvr-train: the same weights after 2 steps from either"

# ---- merge refusals ------------------------------------------------------------------------------
"${NOL[@]}" "$T" encode --json "$F/it.json" --image-root "$G/images" --tokenizer "$TOK" --policy squash --out sq.lmdb $Q
"$T" merge m1.lmdb one.lmdb sq.lmdb 2> m1.err
check '[ $? -eq 1 ] && grep -q "refusing to merge" m1.err && grep -q "policy" m1.err && grep -q "sq.lmdb" m1.err && [ ! -e m1.lmdb ] && [ ! -e m1.lmdb.partial ]' \
      "another policy is refused, naming the store; nothing written"
cp "$TOK" tok2.safetensors
size=$(stat -c %s tok2.safetensors)
printf '\x11' | dd of=tok2.safetensors bs=1 seek=$((size - 3)) conv=notrunc status=none
"${NOL[@]}" "$T" encode --json "$F/it.json" --image-root "$G/images" --tokenizer tok2.safetensors --policy pad --out t2.lmdb $Q
"$T" merge m2.lmdb one.lmdb t2.lmdb 2> m2.err
check '[ $? -eq 1 ] && grep -q "tokenizer_fingerprint" m2.err && grep -q "t2.lmdb" m2.err && [ ! -e m2.lmdb ]' "another tokenizer is refused"
# The same key from another image root: other pixels, other codes.
mkdir alt; cp "$G/images/photo2.jpg" alt/photo1.jpg; echo photo1.jpg > one.txt.list
"${NOL[@]}" "$T" encode --list one.txt.list --image-root alt --tokenizer "$TOK" --policy pad --out alt.lmdb $Q
"$T" merge m3.lmdb one.lmdb alt.lmdb 2> m3.err
check '[ $? -eq 1 ] && grep -q "photo1.jpg" m3.err && grep -q "one.lmdb" m3.err && grep -q "alt.lmdb" m3.err && grep -q "different codes" m3.err' \
      "a key with different codes names both stores and the key"
check '[ ! -e m3.lmdb ] && [ ! -e m3.lmdb.partial ] && [ ! -e m3.lmdb.partial-lock ]' "a refused merge leaves nothing behind"
# The same key with the same codes: fine, stored once.
"${NOL[@]}" "$T" encode --list one.txt.list --image-root "$G/images" --tokenizer "$TOK" --policy pad --out same.lmdb $Q
"$T" merge m4.lmdb one.lmdb same.lmdb --stats m4.json $Q
check '[ $? -eq 0 ] && grep -q "\"duplicates_skipped\": 1" m4.json && cmp -s one.txt <("$T" dump m4.lmdb)' "a key twice with the same codes is stored once"
"$T" merge m5.lmdb c.lmdb.shard-1-of-2 2> m5.err
check '[ $? -eq 1 ] && grep -q "part(s) 0 of 2" m5.err && grep -q "missing" m5.err && [ ! -e m5.lmdb ]' "a missing part is refused"
"$T" merge m5.lmdb c.lmdb.shard-1-of-2 --allow-missing $Q
check '[ $? -eq 0 ] && cmp -s <(keys m5.lmdb) got1.txt' "--allow-missing merges what is there"
cp c.lmdb.shard-1-of-2 copy.lmdb
"$T" merge m6.lmdb c.lmdb.shard-0-of-2 c.lmdb.shard-1-of-2 copy.lmdb 2> m6.err
check '[ $? -eq 1 ] && grep -q "given twice" m6.err' "a part given twice is refused"
"$T" merge one.lmdb c.lmdb one.lmdb 2> /dev/null; check '[ $? -eq 2 ]' "OUT among the inputs is a usage error"
"$T" merge m7.lmdb 2> /dev/null; check '[ $? -eq 2 ]' "merge without inputs is a usage error"
# A part of another list under the same name is refused (the list's fingerprint is recorded).
"${NOL[@]}" "$T" encode --json "$F/pt.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out c.lmdb --shard 0/2 2> l.err
check '[ $? -eq 1 ] && grep -q "refusing to mix" l.err && grep -q "part 0 of 2" l.err' "a part of another list is refused"
"${NOL[@]}" "$T" encode --json "$F/pt.json" --image-root "$G/images" --tokenizer "$TOK" --policy pad --out c.lmdb.shard-0-of-2 2> l2.err
check '[ $? -eq 1 ] && grep -q "refusing to mix" l2.err' "a whole-list run into a part's store is refused"

# ---- --shard values and launchers -----------------------------------------------------------------
for bad in 2/2 1/0 x -1/2 1 3/2x; do
  "${ENC[@]}" --out u.lmdb --shard "$bad" 2> /dev/null; rc=$?
  check '[ $rc -eq 2 ] && [ -z "$(ls | grep "^u.lmdb")" ]' "--shard $bad is a usage error"
done
"${NOL[@]}" OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_RANK=1 "${ENCA[@]}" --out a.lmdb --shard auto
check '[ $? -eq 0 ] && cmp -s <("$T" dump a.lmdb.shard-1-of-2) <("$T" dump c.lmdb.shard-1-of-2)' "--shard auto under mpirun (OMPI_COMM_WORLD_*)"
"${NOL[@]}" SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_NTASKS=2 SLURM_LOCALID=0 "${ENCA[@]}" --out a.lmdb --shard auto
check '[ $? -eq 0 ] && cmp -s <("$T" dump a.lmdb.shard-0-of-2) <("$T" dump c.lmdb.shard-0-of-2)' "--shard auto under srun (SLURM_*)"
"${NOL[@]}" SLURM_PROCID=1 SLURM_NTASKS=2 "${ENCA[@]}" --out b.lmdb --shard auto
check '[ $? -eq 0 ] && [ -f b.lmdb.shard-0-of-1 ] && cmp -s one.txt <("$T" dump b.lmdb.shard-0-of-1)' \
      "--shard auto in a Slurm batch script (no job step) or without a launcher: part 0 of 1"
"${NOL[@]}" OMPI_COMM_WORLD_RANK=2 OMPI_COMM_WORLD_SIZE=2 "${ENCA[@]}" --out a2.lmdb --shard auto 2> a2.err
check '[ $? -eq 2 ] && grep -q "OMPI_COMM_WORLD_RANK" a2.err' "a launcher rank outside its size is a usage error"
"${NOL[@]}" OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=two "${ENCA[@]}" --out a2.lmdb --shard auto 2> /dev/null
check '[ $? -eq 2 ] && [ -z "$(ls | grep "^a2.lmdb")" ]' "a malformed launcher variable is a usage error"

# ---- eval: two parts == one run -------------------------------------------------------------------
"$BIN/asvr-train" train --config "$F/model.json" --image-root "$G/images" --vision "$TOK" --rows 4 --stage it \
    --packed one.pack --codes one.lmdb --steps 30 --lr 5e-3 --visual-loss none --out model $Q
check '[ $? -eq 0 ] && [ -f model/step-00000030/DONE ]' "a tiny model to evaluate"
qs=(photo0.jpg photo1.jpg photo2.jpg photo3.png jgray.jpg jprog.jpg ptall.png)
: > gqa.jsonl
for i in "${!qs[@]}"; do
  printf '{"question_id": "q%d", "benchmark": "gqa", "image": "%s", "question": "What is in the picture?", "answer": "%s"}\n' \
    "$i" "${qs[$i]}" "$([ $((i % 3)) -eq 0 ] && echo sky || echo dog)" >> gqa.jsonl
done
EVA=("$BIN/asvr-eval" run --checkpoint model --vision "$TOK" --tokenizer "$SP" --bench gqa --questions gqa.jsonl
    --image-root "$G/images" --max-new-tokens 6 $Q)
EV=("${NOL[@]}" "${EVA[@]}")
mkdir u s
"${EV[@]}" --out u/run; check '[ $? -eq 0 ] && [ -f u/run/scores/gqa.json ] && [ "$(wc -l < u/run/answers/gqa.jsonl)" = 7 ]' "one eval run"
"${EV[@]}" --out s/run --shard 0/2; r0=$?
"${EV[@]}" --out s/run --shard 1/2; r1=$?
check '[ $r0 -eq 0 ] && [ $r1 -eq 0 ] && [ -f s/run/answers/gqa.part-0-of-2.jsonl ] && [ -f s/run/answers/gqa.part-1-of-2.jsonl ] && [ ! -e s/run/scores/gqa.json ]' \
      "eval --shard K/2 writes answers/gqa.part-K-of-2.jsonl and does not score"
qids() { grep -o '"question_id":"[^"]*"' "$1" | cut -d'"' -f4 | tr '\n' ' '; }
check '[ "$(qids s/run/answers/gqa.part-0-of-2.jsonl)" = "q0 q2 q4 q6 " ] && [ "$(qids s/run/answers/gqa.part-1-of-2.jsonl)" = "q1 q3 q5 " ]' \
      "part K answers questions i with i mod 2 = K"
check 'cmp -s <(sort u/run/answers/gqa.jsonl) <(cat s/run/answers/gqa.part-*-of-2.jsonl | sort)' "the parts' answers == one run's, answer for answer"
"$BIN/asvr-eval" score --bench gqa --questions gqa.jsonl --answers s/run/answers --out s/run/scores/gqa.json $Q > s1.json
check '[ $? -eq 0 ] && cmp -s s/run/scores/gqa.json u/run/scores/gqa.json' "score over the answers folder == one run's scores"
"$BIN/asvr-eval" score --bench gqa --questions gqa.jsonl --answers s/run/answers/gqa.part-1-of-2.jsonl s/run/answers/gqa.part-0-of-2.jsonl $Q > s2.json
check '[ $? -eq 0 ] && cmp -s s2.json u/run/scores/gqa.json' "score over the part files given one by one == one run's"
"$BIN/asvr-eval" report u/run > ru.txt; "$BIN/asvr-eval" report s/run > rs.txt
check '[ -s ru.txt ] && cmp -s ru.txt rs.txt' "the report of the parts == the report of one run"
# A rerun of a finished part does nothing; --shard auto under mpirun writes the same part.
"${EV[@]}" --out s/run --shard 1/2; check '[ $? -eq 0 ] && [ "$(wc -l < s/run/answers/gqa.part-1-of-2.jsonl)" = 3 ]' "a rerun of a part adds nothing"
"${NOL[@]}" OMPI_COMM_WORLD_RANK=1 OMPI_COMM_WORLD_SIZE=2 "${EVA[@]}" --out a/run --shard auto
check '[ $? -eq 0 ] && cmp -s a/run/answers/gqa.part-1-of-2.jsonl s/run/answers/gqa.part-1-of-2.jsonl' "eval --shard auto under mpirun"
# A missing part: score refuses naming it; the report says the answers are not scored.
"$BIN/asvr-eval" score --bench gqa --questions gqa.jsonl --answers a/run/answers 2> miss.err > /dev/null
check '[ $? -eq 1 ] && grep -q "lacks part 0 of 2" miss.err' "score refuses a missing part, naming it"
"$BIN/asvr-eval" score --bench gqa --questions gqa.jsonl --answers s/run/answers/gqa.part-0-of-2.jsonl 2> miss2.err > /dev/null
check '[ $? -eq 1 ] && grep -q "3 of 7 questions have no answer" miss2.err' "one part alone lacks the other's answers"
"$BIN/asvr-eval" report a/run 2> rep.err > /dev/null
check '[ $? -eq 0 ] && grep -q "lacks part 0 of 2" rep.err' "report names the missing part of unscored answers"
cp s/run/answers/gqa.part-0-of-2.jsonl a/run/answers/; "$BIN/asvr-eval" report a/run 2> rep2.err > /dev/null
check 'grep -q "asvr-eval score --bench gqa" rep2.err' "report says how to score complete unscored parts"
cp s/run/answers/gqa.part-0-of-2.jsonl s/run/answers/gqa.part-0-of-3.jsonl
"$BIN/asvr-eval" score --bench gqa --questions gqa.jsonl --answers s/run/answers 2> mix.err > /dev/null
check '[ $? -eq 1 ] && grep -q "parts of 2 and of 3" mix.err' "parts of two splits are refused"
"${EV[@]}" --out s/run --shard 2/2 2> /dev/null; check '[ $? -eq 2 ]' "eval --shard 2/2 is a usage error"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
