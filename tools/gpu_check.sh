#!/usr/bin/env bash
# gpu_check.sh — every GPU check of asvr in one run, on the GPU machine, from the kit that
# tools/gpu_kit.sh built (gpu-kit/ carried next to the checkout). Prints a short table and writes the
# whole log and the benchmark JSON under $OUT (or gpu-out/).
#   1. CUDA vs CPU: every op (test_ops_cuda, test_ops_cuda_train, test_ops_extra,
#      test_ops_cuda_fused, test_ops_rows), the tokenizer (test_tokenize_cuda), the trainer (test_train_cuda: 20 steps, gradients, determinism, resume)
#      the S2 multi-scale input (test_train_s2_cuda) and generation (test_generate_cuda).
#   2. The real-size tokenizer (random SO400M weights): bf16 vs f32 code agreement per depth on the
#      golden photos (check_tokenize_real_cuda; depth 1 must agree on >= 99%).
#   3. Benchmarks against PyTorch in the same run: the tokenizer (tools/bench_tokenize_gpu.py) and the
#      training step (tools/bench_train_gpu.py), with MFU against a measured bf16 GEMM peak; our step's
#      tokens/s with the S2 input tower (384/768/1152) next to the 384 step; and
#      asvr-tokenize encode --device cuda end to end (decoding, GPU, LMDB; raw and zstd store sizes).
#   4. The communication layer (common/nn/comm.h): NCCL with one rank against copies, the event
#      ordering against the compute stream under delay spins, and the MPI backend staged through host
#      memory with two ranks sharing the GPU (skipped without libnccl.so.2 or mpirun on the machine).
#   5. Data-parallel training (tools/gpu_train_dp.sh): ZeRO 2 through a one-rank NCCL communicator
#      equals the plain run bit for bit; two ranks staged through host memory against one rank.
# Each item has its own time limit (seconds; GPU_CHECK_LIMIT scales them) so one hang cannot eat the
# machine's time; GPU_CHECK_ONLY="name ..." runs a subset.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
log=$out/gpu_check.log
: > "$log"
scale=${GPU_CHECK_LIMIT:-1}
only=${GPU_CHECK_ONLY:-}

[ -f gpu-kit/kit.tar.xz ] || { echo "gpu_check: no gpu-kit/kit.tar.xz; run tools/gpu_kit.sh first and carry gpu-kit" >&2; exit 2; }
src=$(cat gpu-kit/SOURCE_DIR)
if [ "$src" != "$root" ] && [ ! -e "$src" ]; then
    mkdir -p "$(dirname "$src")" && ln -s "$root" "$src"   # the tests read fixtures from the build's source path
fi
mkdir -p build-gpu && tar -xJf gpu-kit/kit.tar.xz -C build-gpu
bin=$root/build-gpu
card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi")
echo "card: $card; kit commit $(cat gpu-kit/COMMIT)" | tee -a "$log"

rows=()
run() { # run NAME LIMIT CMD...
    local name=$1 limit=$2
    shift 2
    if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then return; fi
    local t0 t1 rc
    t0=$(date +%s.%N)
    echo "=== $name: $*" >> "$log"
    local item=$out/.item.log
    (cd "$bin/tests" && timeout "$(awk -v a="$limit" -v s="$scale" 'BEGIN{print int(a*s)}')" "$@") > "$item" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    cat "$item" >> "$log"
    local verdict=pass
    grep -qi "skipped" "$item" && verdict="skipped (see log)"
    [ $rc -ne 0 ] && verdict="FAIL (exit $rc)"
    [ $rc -eq 124 ] && verdict="TIMEOUT"
    rm -f "$item"
    rows+=("| $name | $verdict | $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s |")
    echo "=== $name: $verdict" >> "$log"
    echo "$name: $verdict"
}

run test_ops_cuda 120 ./test_ops_cuda
run test_ops_cuda_train 180 ./test_ops_cuda_train
run test_ops_extra 60 ./test_ops_extra
run test_ops_cuda_fused 60 ./test_ops_cuda_fused
run test_ops_rows 60 ./test_ops_rows
run test_tokenize_cuda 120 ./test_tokenize_cuda
run test_generate_cuda 120 ./test_generate_cuda
run test_train_cuda 240 ./test_train_cuda
run test_train_s2_cuda 120 ./test_train_s2_cuda

want() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]]; }
tok=/tmp/asvr_so400m_random.safetensors
if [ ! -f "$tok" ] && { want check_tokenize_real || want bench_tokenize || want bench_train || want e2e_tokenize; }; then
    python3 "$root/tools/convert_tokenizer.py" random --preset so400m --seed 0 --dtype bfloat16 --out "$tok" >> "$log" 2>&1 ||
        echo "gpu_check: could not write the random SO400M tokenizer (see the log)" | tee -a "$log"
fi
run check_tokenize_real 180 ./check_tokenize_real_cuda "$tok"
# End to end: real JPEG/PNG decoding, preprocessing threads, the GPU, LMDB writes (1,024 copies of the
# golden photos; random weights, so the codes are not meaningful, the throughput and stage times are).
if want e2e_tokenize; then
    e2e=/tmp/asvr_e2e
    rm -rf "$e2e" && mkdir -p "$e2e/img"
    imgs=("$root"/tests/golden/images/*.jpg "$root"/tests/golden/images/*.png)
    for i in $(seq 0 1023); do
        f=${imgs[$((i % ${#imgs[@]}))]}
        cp "$f" "$e2e/img/$i.${f##*.}"
        echo "$i.${f##*.}" >> "$e2e/list.txt"
    done
fi
run e2e_tokenize 300 "$bin/bin/asvr-tokenize" encode --list /tmp/asvr_e2e/list.txt --image-root /tmp/asvr_e2e/img \
    --tokenizer "$tok" --policy pad --device cuda --batch 64 --out /tmp/asvr_e2e/codes.lmdb --stats "$out/e2e_tokenize.json"
run e2e_tokenize_zstd 300 "$bin/bin/asvr-tokenize" encode --list /tmp/asvr_e2e/list.txt --image-root /tmp/asvr_e2e/img \
    --tokenizer "$tok" --policy pad --device cuda --batch 64 --compress --out /tmp/asvr_e2e/codes_zstd.lmdb
[ -d /tmp/asvr_e2e/codes.lmdb ] && [ -d /tmp/asvr_e2e/codes_zstd.lmdb ] &&
    echo "e2e store sizes: raw $(du -sk /tmp/asvr_e2e/codes.lmdb | cut -f1) KiB, zstd $(du -sk /tmp/asvr_e2e/codes_zstd.lmdb | cut -f1) KiB" | tee -a "$log"
run bench_tokenize 300 python3 "$root/tools/bench_tokenize_gpu.py" --ours ./bench_tokenize_cuda --tokenizer "$tok" \
    --json "$out/bench_tokenize.json"
run bench_train 420 python3 "$root/tools/bench_train_gpu.py" --steps 6 --warmup 2 \
    --ours "./bench_train_cuda $tok --steps 3 --warmup 1" --json "$out/bench_train.json"
# The S2 step (the tower at 384, 768 and 1152: 14 forwards per image, projector 3456 wide) next to the
# 384 one, our side only, same configuration otherwise.
run bench_train_384 300 bash -c "./bench_train_cuda $tok --steps 3 --warmup 1 > $out/bench_train_384.json"
run bench_train_s2 300 bash -c "./bench_train_cuda $tok --scales 384,768,1152 --steps 3 --warmup 1 > $out/bench_train_s2.json"
if [ -s "$out/bench_train_384.json" ] && [ -s "$out/bench_train_s2.json" ]; then
    tps() { grep -o '"tokens_per_s": *[0-9.e+-]*' "$1" | head -1 | sed 's/.*: *//'; }
    echo "train step tokens/s: 384 $(tps "$out/bench_train_384.json"), S2 384/768/1152 $(tps "$out/bench_train_s2.json")" | tee -a "$log"
fi

# ---- 4. the communication layer (tests/comm_check.c; docs/multi_gpu.md) ---------------------------
# comm_nccl* need libnccl.so.2 (the library path, ASVR_NCCL_LIB, or the toolkit the kit was built
# with): without it they report "skipped". comm_staged needs mpirun (Open MPI) and the kit's plugin.
comm_nccl() { # comm_nccl ARGS...: comm_check with a one-rank NCCL communicator, skipped without NCCL
    local o
    o=$(ASVR_COMM_DEVICE=nccl ./comm_check "$@" 2>&1); local rc=$?
    echo "$o"
    if [ $rc -ne 0 ] && grep -q "libnccl.so.2, which does not load" <<< "$o"; then echo "skipped: no libnccl.so.2"; return 0; fi
    return $rc
}
comm_staged() { # two ranks on device 0 through host memory, skipped without mpirun
    command -v mpirun > /dev/null || { echo "skipped: no mpirun on this machine"; return 0; }
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe -x ASVR_COMM_DEVICE=mpi \
        -x ASVR_LOCAL_DEVICE=0 -x ASVR_COMM_DELAY_US=20000 ./comm_check "$@"
}
export -f comm_nccl comm_staged
run comm_nccl_n1 120 bash -c 'comm_nccl check cuda'
run comm_nccl_order 60 bash -c 'ASVR_COMM_DELAY_US=50000 comm_nccl order cuda'
run comm_staged_n2 180 bash -c 'comm_staged check cuda && comm_staged order cuda'

# ---- 5. data-parallel training (train/dp.h) ----------------------------------------------------------
run train_dp 300 bash "$root/tools/gpu_train_dp.sh" "$bin/bin" "$bin/tests" "$root/tests/golden"

{
    echo
    echo "card: $card"
    echo "| check | result | time |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "benchmark tables:"
    grep -E '^\|' "$log" | grep -v -- '---' | grep -iv '^| check' || true
    grep -E 'ratio|agreement|depth|store sizes|images/s|bottleneck' "$log" | tail -30 || true
} | tee "$out/summary.md"
