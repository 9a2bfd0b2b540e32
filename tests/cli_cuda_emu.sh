#!/usr/bin/env bash
# cli_cuda_emu.sh BUILD_DIR GOLDEN_DIR — the CUDA op, tokenizer and generation tests on the CPU stand-in
# for the CUDA runtime (tools/cuda_emu/run.sh): the kernels' logic checked on a machine without a GPU
# (~1 minute; the training-step test, test_train_cuda, is left to run.sh by hand: another minute).
# Skips (passes) on a build without the CUDA backend or on a machine other than x86-64.
set -u
B=$(cd "$1" && pwd)
R=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$B/CMakeFiles/asvr.dir/common/nn/cuda" ]; then echo "skipped: build without the CUDA backend"; exit 0; fi
if [ "$(uname -m)" != x86_64 ]; then echo "skipped: the stand-in's fiber switch is x86-64 only"; exit 0; fi
CUDA_EMU_BUILD="$B" CUDA_EMU_NO_BUILD=1 "$R/tools/cuda_emu/run.sh" test_ops_cuda test_ops_extra test_tokenize_cuda \
    test_generate_cuda test_ops_cuda_train test_ops_cuda_fused
