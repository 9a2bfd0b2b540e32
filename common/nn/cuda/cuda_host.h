/* cuda_host.h — host-callable pieces of the CUDA backend that C code needs without CUDA headers
 * (implemented in cuda_common.cu unless said): device memory for arenas, pinned host memory for
 * staging, host<->device copies, synchronisation, whether a device is usable, the report of values
 * the kernels found bad, and, for tests and benchmarks, the scratch size, a count of the matmuls that
 * ran on cuBLASLt and a GEMM peak measurement.
 * The op implementations themselves are declared in nn/backend.h (cuda_*, from nn/ops_list.h).
 * Not for: model or tool code (call the op_* functions and device helpers of nn/ops.h), kernels or
 * cuBLAS handles (those stay inside the .cu files of nn/cuda/).
 */
#ifndef ASVR_NN_CUDA_HOST_H
#define ASVR_NN_CUDA_HOST_H

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
/* Reads the device error record (a synchronisation) that kernels set when a value only the device
 * holds is bad (an id, a target, a position) and exits naming op with the index and value; clears it. */
void nn_cuda_check_errors(const char *op);

/* How many op_matmul calls so far ran as one cuBLASLt GEMM with a fused epilogue (the others: cuBLAS
 * GemmEx + the epilogue kernel; ops_matmul.cu); tests use it to know which path they checked. */
long long nn_cuda_matmul_lt_count(void);

/* Benchmarks (bench_cuda.cu): the measured throughput of an n x n x n bf16 cuBLAS GEMM (fp32
 * accumulation), in TFLOP/s over `iters` calls after two warm-up calls. */
double nn_cuda_gemm_peak_tflops(int n, int iters);

#ifdef __cplusplus
}
#endif
#endif
