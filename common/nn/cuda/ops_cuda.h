/* ops_cuda.h — host-callable pieces of the CUDA backend that C code needs without CUDA headers:
 * device memory for arenas, pinned host memory for staging, host<->device copies, synchronisation,
 * whether a device is usable, the fused VQ step the tokenizer can select, and a count of the matmuls
 * that ran on cuBLASLt (for tests).
 * The op implementations themselves are declared in nn/backend.h (cuda_*).
 * Not for: kernels or cuBLAS handles (those stay inside the .cu files of nn/cuda/).
 */
#ifndef ASVR_NN_CUDA_OPS_CUDA_H
#define ASVR_NN_CUDA_OPS_CUDA_H

#include <stddef.h>

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

int nn_cuda_available(void);                    /* 1 when a CUDA device can be used */
/* The visible CUDA devices (0 when none), and choosing the one this process's later CUDA work uses
 * (call before anything is allocated; exits naming the index when it is not a visible device). */
int nn_cuda_device_count(void);
void nn_cuda_set_device(int index);
void *nn_cuda_malloc(size_t bytes, const char *what); /* exits naming `what` on failure */
void nn_cuda_free(void *p);
/* dst (cuda, f32 or bf16) <- src (cpu, f32), and dst (cpu, f32) <- src (cuda, f32 or bf16);
 * same numel. Synchronous. */
void nn_cuda_upload(tensor *dst, const tensor *src);
void nn_cuda_download(tensor *dst, const tensor *src);
/* Page-locked host memory (cudaHostAlloc) for batches that are copied to or from the device;
 * exits naming `what` on failure. Free with nn_cuda_host_free (NULL is ignored). */
void *nn_cuda_host_alloc(size_t bytes, const char *what);
void nn_cuda_host_free(void *p);
/* Raw synchronous copies of `bytes` bytes (any dtype), zeroing of device memory, and a wait for all
 * queued device work. */
void nn_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes);
void nn_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes);
void nn_cuda_zero(void *dst, size_t bytes);
void nn_cuda_sync(void);
/* Device memory in use now (cudaMemGetInfo: total - free, so the CUDA context and every other process's
 * allocations on the device count) and the device's total, in bytes. */
void nn_cuda_mem_used(size_t *used, size_t *total);
/* Bytes held by the operand-conversion scratch of mixed-precision GEMMs (grow-only). */
size_t nn_cuda_scratch_bytes(void);
/* op_vq_step without the [rows, K] distance matrix (ops_conv_cuda.cu): one kernel computes each row's
 * nearest codebook row (same formula and tie rule, fp32 math, no tensor cores) and subtracts it.
 * All tensors on cuda; residual and codebook in one float dtype, cnorm f32, codes u16/i32 [N, D].
 * Checks its own arguments. */
void cuda_vq_step_fused(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                        int depth);

/* How many op_matmul calls so far ran as one cuBLASLt GEMM with a fused epilogue (the others: cuBLAS
 * GemmEx + the epilogue kernel); tests use it to know which path they checked. */
long long nn_cuda_matmul_lt_count(void);

/* Benchmarks (bench_cuda.cu): the measured throughput of an n x n x n bf16 cuBLAS GEMM (fp32
 * accumulation), in TFLOP/s over `iters` calls after two warm-up calls. */
double nn_cuda_gemm_peak_tflops(int n, int iters);

#ifdef __cplusplus
}
#endif
#endif
