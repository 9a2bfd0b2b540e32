#!/bin/bash
# run.sh [TEST...] — builds the CUDA backend's .cu files against the CPU stand-in (cuda_emu.h) and runs
# the CUDA op tests with it, for a machine without a GPU. Needs a configured CUDA build in build/
# (its C objects are reused: `cmake -S . -B build && cmake --build build --target asvr`) and g++ >= 12.
# Default tests: test_ops_cuda_train test_ops_cuda. Output in build/cuda_emu/. Slow (minutes): every
# block runs its threads for real. Passing here checks the kernels' logic, not that they run on a GPU.
set -euo pipefail
R=$(cd "$(dirname "$0")/../.." && pwd)
E="$R/tools/cuda_emu"
O="$R/build/cuda_emu"
mkdir -p "$O"
objs=()
[ -d "$R/build/CMakeFiles/asvr.dir/common" ] || { echo "run.sh: build the asvr target in build/ first" >&2; exit 2; }
for f in "$R"/common/nn/cuda/*.cu; do
  n=$(basename "$f" .cu)
  python3 "$E/prep.py" "$f" "$O/$n.cpp"
  g++ -std=c++20 -O1 -g -ffp-contract=off -w -I"$E/include" -I"$R/common" -DASVR_HAVE_CUDA=1 -D_GNU_SOURCE \
      -c "$O/$n.cpp" -o "$O/$n.o"
  objs+=("$O/$n.o")
done
COBJ=$(find "$R/build/CMakeFiles/asvr.dir/common" -name '*.c.o')
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test_ops_cuda_train test_ops_cuda)
rc=0
for t in "${tests[@]}"; do
  gcc -std=gnu11 -O1 -g -DASVR_HAVE_CUDA=1 -D_GNU_SOURCE -I"$R/common" -I"$R/tests" -c "$R/tests/$t.c" -o "$O/$t.o"
  g++ -o "$O/$t" "$O/$t.o" "${objs[@]}" $COBJ -lopenblas -lturbojpeg -llmdb -lzstd -lpng16 \
      -ljansson -lxxhash -lwebp -lz -lm -lpthread
  echo "== $t (emulated device)"
  "$O/$t" || rc=1
done
exit $rc
