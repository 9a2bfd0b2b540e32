#!/bin/bash
# run.sh [TEST...] — runs CUDA tests on a machine without a GPU (a TEST may carry arguments:
# 'bench_train_cuda TOKENIZER --config C --steps 1'): every common/nn/cuda/*.cu is compiled
# against the CPU stand-in (include/cuda_emu.h, include/cublasLt.h for cuBLASLt, after prep.py) and
# linked with the C objects of the configured CUDA build in build/ (the library, and as
# tests/CMakeLists.txt says, asvr_train_core for
# test_train*, asvr_eval_core for test_(metrics|bench|generate)); the tests' own objects come from that
# build, so they carry its definitions (ASVR_GOLDEN, ASVR_BIN_DIR, ASVR_SHARED_DATA, ...). An emulated
# asvr-tokenize (and asvr-train, asvr-eval, for runs by hand) is linked into build/cuda_emu/bin and
# ASVR_TEST_BIN_DIR points the tests at it (test_tokenize_cuda execs encode --device cuda with it).
# Output in build/cuda_emu/.
# Default tests: test_ops_cuda test_ops_extra test_ops_rows test_tokenize_cuda test_generate_cuda test_train_cuda
# (about 70 s once the stand-in's objects exist; test_train_cuda is most of it), test_ops_cuda_train
# takes about 25 s more. CUDA_EMU_BUILD=DIR uses another build folder than build/; CUDA_EMU_NO_BUILD=1 skips
# the `cmake --build` of the needed targets. Needs x86-64, g++ with C++20, a build configured with
# nvcc. The stand-in's own selftest (selftest.cu: it must catch what it claims to) runs first.
# ctest runs a fast subset (tests/cli_cuda_emu.sh).
# What passing shows: the kernels' and the device-side model code's logic — indexing, barriers, shared
# memory use, launch configuration limits, no host access to device memory (device memory is
# PROT_NONE outside device work), no host pointers handed to kernels or cuBLAS, no reliance on zeroed
# device or shared memory. What it cannot show: speed, that nvcc accepts the code for sm_90 (the real
# build does that), device-only numerics (ulp-level math, fast-math intrinsics, cuBLAS's summation
# order, tensor cores: include/mma.h's wmma computes exact products summed in order, every lane
# holding the whole tile), races between blocks or within a warp (blocks run one at a time, a block's
# threads in turn between barriers: forward in even blocks, backward in odd ones; 2-D and 3-D blocks
# run too, x fastest), static shared-memory limits, asynchronous streams and events (all work here is synchronous).
# Tests also checked by hand this way: bench_train_cuda with examples/demo/model.json (--device cuda
# losses equal the cpu run's to 1e-6), bench_tokenize_cuda on the tiny tokenizer (gemm/fused, bf16/f32),
# the emulated asvr-train --device cuda (4 steps of tests/cli_train.sh's stage it: with --precision f32
# --tower-dtype f32 the losses equal the cpu run's to 1e-8; with the defaults, bf16 tower and mixed
# precision, to 3e-4) and asvr-eval ask --device cuda (the same answer as on the cpu).
set -euo pipefail
R=$(cd "$(dirname "$0")/../.." && pwd)
E="$R/dev/cuda_emu"
B=${CUDA_EMU_BUILD:-$R/build}
O="$B/cuda_emu"
mkdir -p "$O/bin"
[ -d "$B/CMakeFiles/asvr.dir/common/nn/cuda" ] ||
  { echo "run.sh: configure a CUDA build in build/ first (cmake -S . -B build, with nvcc on PATH)" >&2; exit 2; }
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test_ops_cuda test_ops_extra test_ops_rows test_tokenize_cuda test_generate_cuda test_train_cuda)
if [ -z "${CUDA_EMU_NO_BUILD:-}" ]; then
  cmake --build "$B" -j"$(nproc)" --target asvr-tokenize "${tests[@]%% *}" >"$O/build.log" 2>&1 ||
    { tail -30 "$O/build.log" >&2; exit 2; }
fi

objs=()
for f in "$R"/common/nn/cuda/*.cu; do
  n=$(basename "$f" .cu)
  python3 "$E/prep.py" "$f" "$O/$n.cpp"
  if [ ! -f "$O/$n.o" ] || [ "$O/$n.o" -ot "$O/$n.cpp" ] || [ -n "$(find "$E/include" -newer "$O/$n.o" | head -1)" ] ||
     [ -n "$(find "$R/common/nn/cuda" -newer "$O/$n.o" -name '*.h*' | head -1)" ]; then
    g++ -std=c++20 -O2 -g -ffp-contract=off -w -I"$E/include" -I"$R/common" -DASVR_HAVE_CUDA=1 -D_GNU_SOURCE \
        -c "$O/$n.cpp" -o "$O/$n.o"
  fi
  objs+=("$O/$n.o")
done
python3 "$E/prep.py" "$E/selftest.cu" "$O/selftest.cpp"
g++ -std=c++20 -O2 -g -w -I"$E/include" "$O/selftest.cpp" -o "$O/selftest"
"$O/selftest" 2>/dev/null || { echo "run.sh: the stand-in's selftest failed" >&2; exit 2; }
# the build's objects of sources that still exist (an incremental build keeps those of deleted files)
live() { while read -r o; do rel=${o#*/CMakeFiles/*.dir/}; [ -f "$R/$1${rel%.o}" ] && echo "$o"; done; }
mapfile -t COBJ < <(find "$B/CMakeFiles/asvr.dir/common" -name '*.c.o' | live "" | sort)
mapfile -t TRAIN < <(find "$B/train/CMakeFiles/asvr_train_core.dir" -name '*.c.o' | live train/ | sort)
mapfile -t EVAL < <(find "$B/eval/CMakeFiles/asvr_eval_core.dir" -name '*.c.o' | live eval/ | sort)
mapfile -t TOK < <(find "$B/tokenize/CMakeFiles/asvr-tokenize.dir" -name '*.c.o' | live tokenize/ | sort)
LIBS=(-lopenblas -lturbojpeg -llmdb -lzstd -lpng16 -ljansson -lxxhash -lwebp -lz -lm -lpthread)

g++ -rdynamic -o "$O/bin/asvr-tokenize" "${TOK[@]}" "${objs[@]}" "${COBJ[@]}" "${LIBS[@]}"
for cli in train eval; do # the other CLIs with --device cuda, for runs by hand
  main="$B/$cli/CMakeFiles/asvr-$cli.dir/main.c.o"
  core=(); [ $cli = train ] && core=("${TRAIN[@]}") || core=("${EVAL[@]}")
  [ -f "$main" ] && g++ -rdynamic -o "$O/bin/asvr-$cli" "$main" "${core[@]}" "${objs[@]}" "${COBJ[@]}" "${LIBS[@]}"
done
export ASVR_TEST_BIN_DIR="$O"

rc=0
for spec in "${tests[@]}"; do
  read -r t args <<<"$spec"
  extra=()
  [[ $t == test_train* || $t == bench_train* ]] && extra+=("${TRAIN[@]}")
  [[ $t =~ ^test_(metrics|bench|generate) ]] && extra+=("${EVAL[@]}")
  g++ -rdynamic -o "$O/$t" "$B/tests/CMakeFiles/$t.dir/$t.c.o" "${extra[@]}" "${objs[@]}" "${COBJ[@]}" "${LIBS[@]}"
  echo "== $t (emulated device)"
  start=$(date +%s)
  # shellcheck disable=SC2086 # args: the words after the program's name in a TEST argument
  (cd "$B/tests" && "$O/$t" $args) || { echo "== $t FAILED"; rc=1; }
  echo "== $t: $(( $(date +%s) - start )) s"
done
exit $rc
