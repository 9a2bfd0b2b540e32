// ops_vq.cu — the CUDA residual-quantisation family: codebook row norms, the VQ step as distance GEMM +
// pick (rows R at a time through the caller's [R, K] distances), and the fused step that computes each
// row's distances and argmin in one kernel without that matrix. f32 or bf16 storage for residual and
// codebook, fp32 math. Arguments were validated by ops.c.
#include <limits.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- residual quantisation ---------------------------------------------------------------------
// The squared L2 norm of row r of x [*, C] (every thread of the block gets it).
static __device__ float block_row_sqnorm(const void *x, int xbf, int64_t r, int64_t C) {
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float t = ldv(x, xbf, r * C + j);
        s += t * t;
    }
    return block_sum(s);
}

__global__ void k_row_sqnorm(float *n, const void *c, int cbf, int64_t C) {
    float s = block_row_sqnorm(c, cbf, blockIdx.x, C);
    if (threadIdx.x == 0) n[blockIdx.x] = s;
}

extern "C" void cuda_row_sqnorm(tensor *n, const tensor *c) {
    k_row_sqnorm<<<(unsigned)tensor_rows(c), NT>>>((float *)n->data, c->data, isbf(c), tensor_cols(c));
    LAUNCH_CHECK();
}

// ---- distance GEMM + pick -----------------------------------------------------------------------

// dist[i, k] = |x_i|^2 + |c_k|^2 (the GEMM then adds -2 x·c).
__global__ void k_vq_init(float *dist, const void *x, int xbf, const float *cn, int64_t C, int64_t K) {
    int64_t i = blockIdx.x;
    float s = block_row_sqnorm(x, xbf, i, C);
    for (int64_t k = threadIdx.x; k < K; k += NT) dist[i * K + k] = s + cn[k];
}

// Per row: the lowest index among the minimal distances; write the code; residual -= that row.
__global__ void k_vq_pick(const float *dist, int64_t K, void *x, int xbf, const void *cb, int cbf, int64_t C,
                          void *codes, int codes_u16, int64_t D, int depth, int64_t row0) {
    __shared__ float sv[NT];
    __shared__ int64_t si[NT];
    int64_t i = blockIdx.x;
    float bv = FLT_MAX;
    int64_t bi = INT64_MAX;
    for (int64_t k = threadIdx.x; k < K; k += NT) {
        float d = dist[i * K + k];
        if (d < bv) bv = d, bi = k; // k increases per thread: strict < keeps the lowest index
    }
    sv[threadIdx.x] = bv, si[threadIdx.x] = bi;
    __syncthreads();
    for (int stride = NT / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            float ov = sv[threadIdx.x + stride];
            int64_t oi = si[threadIdx.x + stride];
            if (ov < sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < si[threadIdx.x]))
                sv[threadIdx.x] = ov, si[threadIdx.x] = oi;
        }
        __syncthreads();
    }
    int64_t best = si[0] == INT64_MAX ? 0 : si[0];
    int64_t n = row0 + i;
    if (threadIdx.x == 0) {
        if (codes_u16) ((uint16_t *)codes)[n * D + depth] = (uint16_t)best;
        else ((int32_t *)codes)[n * D + depth] = (int32_t)best;
    }
    for (int64_t j = threadIdx.x; j < C; j += NT)
        stv(x, xbf, i * C + j, ldv(x, xbf, i * C + j) - ldv(cb, cbf, best * C + j));
}

extern "C" void cuda_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth,
                             tensor *dist) {
    CHECK(residual->dtype == codebook->dtype, "", "cuda vq: residual '%s' and codebook '%s' must share a dtype",
          residual->name, codebook->name);
    int64_t N = tensor_rows(residual), C = tensor_cols(residual), K = codebook->shape[0];
    int64_t D = tensor_cols(codes), R = tensor_rows(dist);
    size_t es = nn_dtype_size(residual->dtype);
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t rows = N - r0 < R ? N - r0 : R;
        char *x = (char *)residual->data + (size_t)(r0 * C) * es;
        k_vq_init<<<(unsigned)rows, NT>>>((float *)dist->data, x, isbf(residual), (const float *)cnorm->data, C, K);
        LAUNCH_CHECK();
        nn_cuda_gemm_xwt(dist->data, CUDA_R_32F, x, codebook->data, cuty(codebook), rows, K, C, -2.0f, 1.0f);
        k_vq_pick<<<(unsigned)rows, NT>>>((const float *)dist->data, K, x, isbf(residual), codebook->data,
                                          isbf(codebook), C, codes->data, codes->dtype == NN_U16, D, depth, r0);
        LAUNCH_CHECK();
    }
}

// ---- fused VQ step: distances and argmin without the [rows, K] matrix ---------------------------
// One block of VQF_ROWS residual rows (staged in shared memory as f32) walks the whole codebook; each
// thread owns codebook rows k = threadIdx.x, threadIdx.x + NT, ... and keeps, per residual row, its
// running (distance, index) minimum with the strict < that keeps the lowest index (k increases per
// thread). d = |x|^2 + |c|^2 - 2 x·c as the GEMM path computes it (fp32), then a block reduction with
// ties going to the lower index. The codebook row is read once per block from global memory (L2-resident
// across blocks); simple, no tensor cores.
#define VQF_ROWS 8

__global__ void k_vq_fused(void *x, int xbf, const void *cb, int cbbf, const float *cn, int64_t N, int64_t C,
                           int64_t K, void *codes, int codes_u16, int64_t D, int depth) {
    extern __shared__ float xs[]; // [VQF_ROWS, C]
    __shared__ float xn[VQF_ROWS];
    __shared__ float rv[VQF_ROWS][NT];
    __shared__ int rix[VQF_ROWS][NT];
    __shared__ int best_s[VQF_ROWS];
    int64_t r0 = (int64_t)blockIdx.x * VQF_ROWS;
    int nr = (int)(N - r0 < VQF_ROWS ? N - r0 : VQF_ROWS);
    for (int64_t t = threadIdx.x; t < (int64_t)VQF_ROWS * C; t += NT)
        xs[t] = t < (int64_t)nr * C ? ldv(x, xbf, r0 * C + t) : 0.0f; // rows past N: zeros, never picked
    __syncthreads();
    if (threadIdx.x < VQF_ROWS) {
        float s = 0.0f;
        if ((int)threadIdx.x < nr)
            for (int64_t j = 0; j < C; j++) s += xs[threadIdx.x * C + j] * xs[threadIdx.x * C + j];
        xn[threadIdx.x] = s;
    }
    __syncthreads();
    float bv[VQF_ROWS];
    int bi[VQF_ROWS];
    for (int r = 0; r < VQF_ROWS; r++) bv[r] = FLT_MAX, bi[r] = INT_MAX;
    for (int64_t k = threadIdx.x; k < K; k += NT) {
        float dot[VQF_ROWS];
        for (int r = 0; r < VQF_ROWS; r++) dot[r] = 0.0f;
        for (int64_t j = 0; j < C; j++) {
            float c = ldv(cb, cbbf, k * C + j);
            for (int r = 0; r < VQF_ROWS; r++) dot[r] += xs[r * C + j] * c;
        }
        for (int r = 0; r < VQF_ROWS; r++) {
            float d = xn[r] + cn[k] - 2.0f * dot[r];
            if (d < bv[r]) bv[r] = d, bi[r] = (int)k;
        }
    }
    for (int r = 0; r < VQF_ROWS; r++) rv[r][threadIdx.x] = bv[r], rix[r][threadIdx.x] = bi[r];
    __syncthreads();
    for (int stride = NT / 2; stride > 0; stride >>= 1) {
        if ((int)threadIdx.x < stride)
            for (int r = 0; r < VQF_ROWS; r++) {
                float ov = rv[r][threadIdx.x + stride];
                int oi = rix[r][threadIdx.x + stride];
                if (ov < rv[r][threadIdx.x] || (ov == rv[r][threadIdx.x] && oi < rix[r][threadIdx.x]))
                    rv[r][threadIdx.x] = ov, rix[r][threadIdx.x] = oi;
            }
        __syncthreads();
    }
    if ((int)threadIdx.x < nr) {
        int b = rix[threadIdx.x][0] == INT_MAX ? 0 : rix[threadIdx.x][0];
        best_s[threadIdx.x] = b;
        int64_t n = r0 + threadIdx.x;
        if (codes_u16) ((uint16_t *)codes)[n * D + depth] = (uint16_t)b;
        else ((int32_t *)codes)[n * D + depth] = (int32_t)b;
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < (int64_t)nr * C; t += NT) {
        int r = (int)(t / C);
        int64_t j = t % C;
        stv(x, xbf, r0 * C + t, ldv(x, xbf, r0 * C + t) - ldv(cb, cbbf, (int64_t)best_s[r] * C + j));
    }
}

extern "C" void cuda_vq_fused(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth) {
    int64_t N = tensor_rows(residual), C = tensor_cols(residual), K = codebook->shape[0];
    size_t shmem = (size_t)VQF_ROWS * (size_t)C * sizeof(float);
    CHECK(shmem <= 160 * 1024, "use the GEMM vq path for this width",
          "cuda fused vq: %lld-wide rows need %zu bytes of shared memory", (long long)C, shmem);
    // 16 KiB of static shared memory come on top; opt in to more than the default 48 KiB in all.
    CHECK_CUDA(cudaFuncSetAttribute(k_vq_fused, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem));
    unsigned grid = (unsigned)((N + VQF_ROWS - 1) / VQF_ROWS);
    k_vq_fused<<<grid, NT, shmem>>>(residual->data, isbf(residual), codebook->data, isbf(codebook),
                                     (const float *)cnorm->data, N, C, K, codes->data, codes->dtype == NN_U16,
                                     tensor_cols(codes), depth);
    LAUNCH_CHECK();
}
