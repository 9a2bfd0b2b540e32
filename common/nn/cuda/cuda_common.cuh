// cuda_common.cuh — small pieces shared by the .cu files of the CUDA backend: the block size, the
// per-tensor storage helpers (f32 or bf16 storage, fp32 math), the GELU forms, block-wide
// reductions and the process-wide cuBLAS handle.
// Not for: C code (include nn/cuda/ops_cuda.h there) or anything outside common/nn/cuda/.
#ifndef ASVR_NN_CUDA_COMMON_CUH
#define ASVR_NN_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <float.h>
#include <stdint.h>

#include "nn/tensor.h"
#include "nn/ops.h"
#include "nn/cuda/cuda_check.h"

#define NT 256 // threads per block of every kernel of the backend; block_* assume it

// The cuBLAS handle of the process (created on first use, default stream; defined in ops_cuda.cu).
cublasHandle_t nn_cuda_blas(void);

// A grow-only device buffer per slot (0..NN_CUDA_SCRATCH_SLOTS-1) for operands converted on the fly;
// it grows during the first steps and then stays (defined in ops_cuda.cu).
#define NN_CUDA_SCRATCH_SLOTS 4
void *nn_cuda_scratch(int slot, size_t bytes);
// t's data in storage type want_bf (1: bf16, 0: f32): t->data when it is stored so, else a converted
// copy in scratch slot `slot` (valid until that slot is used again).
const void *nn_cuda_as_type(const tensor *t, int want_bf, int slot);

// The deterministic scatter-add of op_embedding_backward (ops_train_cuda.cu); skip_negative: ids < 0
// add nothing (op_embedding_skip_backward) instead of being reported.
void nn_cuda_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids, int skip_negative);

static inline int isbf(const tensor *t) { return t && t->dtype == NN_BF16; }
static inline cudaDataType_t cuty(const tensor *t) { return isbf(t) ? CUDA_R_16BF : CUDA_R_32F; }
static inline unsigned blocks(int64_t n) { return (unsigned)((n + NT - 1) / NT); }

// Element i of a tensor stored as bf16 (bf != 0) or f32, read and written as fp32.
static __device__ __forceinline__ float ldv(const void *p, int bf, int64_t i) {
    return bf ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}
static __device__ __forceinline__ void stv(void *p, int bf, int64_t i, float v) {
    if (bf) ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
    else ((float *)p)[i] = v;
}
static __device__ __forceinline__ float act_f(float x, int act) {
    if (act == NN_ACT_GELU_TANH) {
        float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    if (act == NN_ACT_GELU_ERF) return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    return x;
}

// Block-wide sum / max for blockDim.x == NT; every thread gets the result.
static __device__ float block_sum(float v) {
    __shared__ float sh[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = threadIdx.x < (NT / 32) ? sh[threadIdx.x] : 0.0f;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}
static __device__ float block_max(float v) {
    __shared__ float sh[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = threadIdx.x < (NT / 32) ? sh[threadIdx.x] : -FLT_MAX;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}
static __device__ double block_sum_d(double v) {
    __shared__ double sh[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = threadIdx.x < (NT / 32) ? sh[threadIdx.x] : 0.0;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

#endif
