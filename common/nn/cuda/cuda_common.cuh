// cuda_common.cuh — what the .cu files of the CUDA backend (nn/cuda/ops_<family>.cu) share: the check
// macros for the CUDA runtime and cuBLAS, the block size, the per-tensor storage helpers (f32 or bf16
// storage, fp32 math), the GELU forms and their derivatives, block-wide reductions, the device error
// record of values only the device holds, and the host-side runtime helpers of cuda_common.cu (cuBLAS
// handle, conversion scratch, op workspace, the GEMM every family uses) plus the two matmul pieces
// the conv ops reuse (ops_matmul.cu).
// Not for: C code (include nn/cuda/cuda_host.h there) or anything outside common/nn/cuda/.
#ifndef ASVR_NN_CUDA_COMMON_CUH
#define ASVR_NN_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <stdint.h>

#include "base/error.h"
#include "nn/cuda/cuda_host.h"
#include "nn/ops.h"
#include "nn/tensor.h"

// ---- checks --------------------------------------------------------------------------------------
#define CHECK_CUDA(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            asvr_fatal(__FILE__, __LINE__, asvr_cuda_hint((int)e_), "%s: %s (%s)", #call,          \
                       cudaGetErrorString(e_), cudaGetErrorName(e_));                              \
    } while (0)

#define CHECK_CUBLAS(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            asvr_fatal(__FILE__, __LINE__, asvr_cublas_hint((int)s_), "%s: %s", #call,             \
                       cublasGetStatusString(s_));                                                 \
    } while (0)

// After every kernel launch: a bad configuration or an earlier asynchronous fault exits here.
#define LAUNCH_CHECK() CHECK_CUDA(cudaGetLastError())

extern "C" {
const char *asvr_cuda_hint(int cuda_error);
const char *asvr_cublas_hint(int cublas_status);
// Name, SM count, memory and compute capability of the current device, one line on stderr.
void asvr_cuda_print_device(void);
}

// ---- launch shapes and storage -------------------------------------------------------------------
#define NT 256 // threads per block of the one-block-per-row and elementwise kernels; block_* assume it

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

// ---- activations ---------------------------------------------------------------------------------
static __device__ __forceinline__ float act_f(float x, int act) {
    if (act == NN_ACT_GELU_TANH) {
        float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    if (act == NN_ACT_GELU_ERF) return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    return x;
}
// d act(x) / dx (1 for NN_ACT_NONE).
static __device__ __forceinline__ float act_grad(float x, int act) {
    if (act == NN_ACT_GELU_TANH) {
        const float beta = 0.7978845608028654f, kappa = 0.044715f;
        float t = tanhf(beta * (x + kappa * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * beta * (1.0f + 3.0f * kappa * x * x);
    }
    if (act == NN_ACT_GELU_ERF)
        return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
    return 1.0f;
}

// ---- block-wide reductions (blockDim.x == NT; every thread gets the result) ----------------------
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

// ---- device error record -------------------------------------------------------------------------
// Values the host cannot check without reading device memory (ids, targets, positions) are checked
// by the kernels: a bad one is recorded in one device record (first one wins, an atomic on the code)
// and reported with its index and value by nn_cuda_check_errors, which the front end (ops.c) calls
// after the ops that synchronise with the host anyway (embedding and row gathers, cross-entropy).
enum { NN_ERR_NONE, NN_ERR_ID, NN_ERR_TARGET, NN_ERR_POS };
struct nn_dev_err {
    int code;
    int pad;
    long long index, value, bound;
};
static __device__ void nn_report_err(nn_dev_err *e, int code, long long index, long long value, long long bound) {
    if (atomicCAS(&e->code, 0, code) == 0) {
        e->index = index;
        e->value = value;
        e->bound = bound;
    }
}
// The record in device memory (allocated and cleared on first use; cuda_common.cu).
nn_dev_err *nn_cuda_err_record(void);

// ---- host-side runtime helpers (cuda_common.cu) --------------------------------------------------
// The cuBLAS handle of the process (created on first use, default stream).
cublasHandle_t nn_cuda_blas(void);

// A grow-only device buffer per slot (0..NN_CUDA_SCRATCH_SLOTS-1) for operands converted on the fly;
// it grows during the first steps and then stays.
#define NN_CUDA_SCRATCH_SLOTS 4
void *nn_cuda_scratch(int slot, size_t bytes);
// t's data in storage type want_bf (1: bf16, 0: f32): t->data when it is stored so, else a converted
// copy in scratch slot `slot` (valid until that slot is used again).
const void *nn_cuda_as_type(const tensor *t, int want_bf, int slot);
// dst[0..n) = src[0..n) converted between the storage types (dbf, sbf: 1 bf16, 0 f32), on the device.
void nn_cuda_convert(void *dst, int dbf, const void *src, int sbf, int64_t n);

// One grow-only device buffer for partial sums and small results; ops run in order on the default
// stream, so one op's use never overlaps another's. Grows (cudaFree synchronises) only when an op
// needs more than any earlier one: after the first step nothing is allocated.
void *nn_cuda_workspace(size_t bytes);
// out[0] = sum of a[0..n) in double, in a fixed order (one block): deterministic.
void nn_cuda_sum_d(double *out, const double *a, int64_t n);

// Lets `kernel` launch with `bytes` of dynamic shared memory (opts in above the default 48 KiB).
void nn_cuda_allow_shmem(const void *kernel, size_t bytes);

// Row-major y[M,N] = alpha x[M,K] · w[N,K]^T + beta y (one cublasGemmEx, fp32 compute; x and w in tin).
void nn_cuda_gemm_xwt(void *y, cudaDataType_t ty, const void *x, const void *w, cudaDataType_t tin, int64_t M,
                      int64_t N, int64_t K, float alpha, float beta);

// ---- matmul pieces other families reuse (ops_matmul.cu) ------------------------------------------
// y[M, N] = act(x[M, K] · w^T + b) with x already in w's storage type (the core of op_matmul: one
// cuBLASLt GEMM with its epilogue where it takes the case, else GEMM + nn_cuda_bias_act).
void nn_cuda_matmul_raw(tensor *y, const void *x, const tensor *w, const tensor *b, nn_act act, tensor *pre,
                        int64_t M, int64_t K);
// In place over y [M, N] (storage ybf): v = y + b[col] (b may be NULL); pre = v when given; y = act(v).
void nn_cuda_bias_act(void *y, int ybf, const void *b, int bbf, void *pre, int pbf, int64_t M, int64_t N, int act);

#endif
