#!/usr/bin/env bash
# gpu_kit.sh — builds, on a machine without a GPU, what a GPU machine needs to run asvr's GPU checks
# (tools/gpu_check.sh): a Release build with the CUDA backend and the Debian libraries linked
# statically in build-gpu/, and the GPU tests, checkers, benchmarks and the four executables packed
# into gpu-kit/kit.tar.xz (each program is ~29 MB, ~2 MB packed), with the source folder the build
# recorded (the tests read their fixtures from there; gpu_check.sh links it to wherever the
# checkout lands). The GPU machine then needs only the CUDA 13 runtime, cuBLAS and python3 with torch.
#   tools/gpu_kit.sh            # then carry gpu-kit/ to the GPU machine and run tools/gpu_check.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-gpu
progs="test_ops_cuda test_ops_cuda_train test_ops_extra test_ops_cuda_fused test_ops_rows test_tokenize_cuda test_train_cuda test_train_s2_cuda test_generate_cuda
       check_tokenize_real_cuda bench_tokenize_cuda bench_train_cuda comm_check st_compare"
tools="asvr-tokenize asvr-pack asvr-train asvr-eval"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DASVR_CUDA=ON -DASVR_STATIC_DEPS=ON >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $progs $tools
kit=$root/gpu-kit
rm -rf "$kit"
mkdir -p "$kit"
files=()
for p in $progs; do files+=("tests/$p"); done
for t in $tools; do files+=("bin/$t"); done
[ -f "$build/lib/libasvr_comm_mpi.so" ] && files+=("lib/libasvr_comm_mpi.so") # for mpirun runs, when MPI was found
(cd "$build" && tar -cf - "${files[@]}" | xz -T0 -6 > "$kit/kit.tar.xz")
echo "$root" > "$kit/SOURCE_DIR"
git -C "$root" rev-parse --short HEAD > "$kit/COMMIT" 2>/dev/null || echo unknown > "$kit/COMMIT"
echo "gpu-kit: $(du -h "$kit/kit.tar.xz" | cut -f1) for commit $(cat "$kit/COMMIT") (built from $root)"
