#!/usr/bin/env bash
# cli_comm.sh BUILD_DIR GOLDEN_DIR — the communication layer (common/nn/comm.h) as jobs run it:
# tests/comm_check alone (size 1, no MPI: it must run with the plugin absent, and no binary may
# need libmpi), then under mpirun with 1, 2 and 3 ranks (3 oversubscribed on a 2-core machine):
# every collective against a serial reference, rank and device detection, the delay variable, a
# rank that sleeps past the timeout and a rank that exits mid-run (every rank must end non-zero
# within a bound, the message naming the rank), and a missing plugin under a launcher (a clear
# error). Every mpirun is wrapped in `timeout`, so a hang fails instead of stalling.
# Exits 77 (ctest: skipped) when mpirun is missing or the build has no MPI plugin, after the
# single-process checks passed.
set -u
B=$(cd "$1" && pwd)
CHECK="$B/tests/comm_check"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
check() { if eval "$1"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $2" >&2; fi; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
# Open MPI's own allocations are not ours to leak-check (an ASan build runs this too).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

# ---- one process, no launcher, no plugin --------------------------------------------------------
cp "$CHECK" "$TMP/comm_check" # no lib/ beside the copy: the plugin is absent
env -u OMPI_COMM_WORLD_SIZE -u SLURM_STEP_ID -u PMI_RANK ASVR_COMM_MPI_PLUGIN=/nonexistent/plugin.so \
    timeout 120 "$TMP/comm_check" check > "$TMP/single.out" 2> "$TMP/single.err"
check '[ $? -eq 0 ] && grep -q "1 rank(s)" "$TMP/single.out" && grep -q " 0 failed" "$TMP/single.out"' \
    "alone: size 1, every collective a copy or nothing, without the plugin ($(tail -1 "$TMP/single.out"))"
check 'grep -q "no launcher (single process, no MPI)" "$TMP/single.err"' "alone: comm_print says no MPI"
for exe in "$CHECK" "$B"/bin/asvr-*; do
    [ -x "$exe" ] || continue
    check '! readelf -d "$exe" | grep -q "NEEDED.*libmpi"' "$(basename "$exe") needs no libmpi"
done

if ! command -v mpirun > /dev/null; then
    echo "$pass passed, $fail failed (single process only)"
    [ $fail -eq 0 ] || exit 1
    echo "skipped: mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    exit 77
fi
if [ ! -f "$B/lib/libasvr_comm_mpi.so" ]; then
    echo "$pass passed, $fail failed (single process only)"
    [ $fail -eq 0 ] || exit 1
    echo "skipped: this build has no MPI plugin (MPI was not found when it was configured)"
    exit 77
fi

# CI runs as root; 3 ranks on 2 cores need --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI=(timeout 120 mpirun --oversubscribe)

# ---- every collective against the serial reference ---------------------------------------------
for np in 1 2 3; do
    t0=$(now)
    "${MPI[@]}" -np $np "$CHECK" check > "$TMP/c$np.out" 2> "$TMP/c$np.err"
    rc=$?
    echo "mpirun -np $np comm_check check: exit $rc in $(secs "$t0") s: $(tail -1 "$TMP/c$np.out")"
    check '[ $rc -eq 0 ] && grep -q "$np rank(s)" "$TMP/c$np.out" && grep -q " 0 failed" "$TMP/c$np.out"' \
        "mpirun -np $np: every collective ($(tail -3 "$TMP/c$np.err" | tr '\n' ' '))"
done
grep "differing" "$TMP/c3.out"

# ---- ranks and devices --------------------------------------------------------------------------
"${MPI[@]}" -np 2 "$CHECK" info > "$TMP/info.out" 2>&1
check 'grep -q "^rank 0 size 2 local 0/2 device 0 launcher mpirun" "$TMP/info.out" &&
       grep -q "^rank 1 size 2 local 1/2 device 1 launcher mpirun" "$TMP/info.out"' "rank, local rank and device from mpirun"
"${MPI[@]}" -np 2 -x ASVR_LOCAL_DEVICE=5 "$CHECK" info > "$TMP/info5.out" 2>&1
check '[ "$(grep -c "device 5 launcher" "$TMP/info5.out")" = 2 ]' "ASVR_LOCAL_DEVICE overrides the device"
"${MPI[@]}" -np 2 -x ASVR_COMM_LAUNCHER=none "$CHECK" info > "$TMP/none.out" 2>&1
check '[ "$(grep -c "^rank 0 size 1 .*launcher none" "$TMP/none.out")" = 2 ]' "ASVR_COMM_LAUNCHER=none: each process alone"

# ---- the delay variable: 5 all-reduces under 20 ms each take at least 0.1 s, and stay right ------
"${MPI[@]}" -np 2 -x ASVR_COMM_DELAY_US=20000 "$CHECK" delay 20000 5 > "$TMP/delay.out" 2>&1
check '[ $? -eq 0 ] && grep -q "^delay: 5 all-reduces" "$TMP/delay.out"' "ASVR_COMM_DELAY_US ($(grep -m1 delay: "$TMP/delay.out"))"

# ---- a rank past the timeout: every rank ends non-zero, naming rank 1 ---------------------------
t0=$(now)
"${MPI[@]}" -np 3 -x ASVR_COMM_TIMEOUT=2 "$CHECK" timeout 1 60 > "$TMP/to.out" 2>&1
rc=$? took=$(secs "$t0")
echo "a rank asleep past a 2 s timeout (3 ranks): the job ended with exit $rc after $took s"
check '[ $rc -ne 0 ] && [ $rc -ne 124 ] && awk -v t="$took" "BEGIN{exit !(t < 15)}"' "timeout: non-zero within 15 s (exit $rc, $took s)"
check 'grep -Eq "all-reduce #[0-9]+ .* did not complete within [0-9.]+ s; ranks missing from it \(no answer within [0-9.]+ s\): 1;" "$TMP/to.out"' \
    "timeout: the message names rank 1 ($(grep -m1 "fatal" "$TMP/to.out"))"
check '! grep -q "completed although" "$TMP/to.out"' "timeout: no rank went on"

# ---- a rank that exits mid-run: the others end non-zero, well within the timeout ----------------
t0=$(now)
"${MPI[@]}" -np 3 -x ASVR_COMM_TIMEOUT=10 "$CHECK" kill 1 > "$TMP/kill.out" 2>&1
rc=$? took=$(secs "$t0")
echo "a rank that exits (3 ranks, 10 s timeout): the job ended with exit $rc after $took s"
check '[ $rc -ne 0 ] && [ $rc -ne 124 ] && awk -v t="$took" "BEGIN{exit !(t < 10)}"' "killed rank: non-zero within 10 s (exit $rc, $took s)"
check 'grep -Eq "Exit code: +3|missing from it.*: 1;" "$TMP/kill.out" && ! grep -q "completed although" "$TMP/kill.out"' \
    "killed rank: named (exit code 3 of rank 1), no rank went on"

# ---- a launcher without the plugin: a clear error -----------------------------------------------
"${MPI[@]}" -np 1 "$TMP/comm_check" info > "$TMP/noplug.out" 2>&1
check '[ $? -ne 0 ] && grep -q "MPI plugin does not load" "$TMP/noplug.out" && grep -q "openmpi-bin libopenmpi-dev" "$TMP/noplug.out"' \
    "mpirun, no plugin beside the executable: names the places tried and the packages"
"${MPI[@]}" -np 1 -x ASVR_COMM_MPI_PLUGIN=/nonexistent/plugin.so "$CHECK" info > "$TMP/badplug.out" 2>&1
check '[ $? -ne 0 ] && grep -q "/nonexistent/plugin.so: no such file" "$TMP/badplug.out"' "ASVR_COMM_MPI_PLUGIN pointing nowhere"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
