// ops_conv_cuda.cu — the CUDA backend of the convolutional-block ops of ops.h (GroupNorm, SiLU,
// same-padding conv2d) that the appearance tokenizer's projection block runs, plus the fused
// distance + argmin VQ step (cuda_vq_step_fused) that the tokenizer can select instead of the
// GEMM + pick path of ops_cuda.cu. f32 or bf16 storage per tensor, fp32 math (GroupNorm statistics
// in double). Arguments were validated by ops.c (or by the caller, for the fused VQ step).
// Not for: the encoder ops (ops_cuda.cu) or the training ops.
#include <cuda_bf16.h>
#include <float.h>
#include <limits.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_check.h"
#include "nn/cuda/cuda_common.cuh"
#include "nn/cuda/ops_cuda.h"

// ---- GroupNorm: one block per (group, image) ------------------------------------------------------
__global__ void k_groupnorm(void *y, int ybf, const void *x, int xbf, const void *w, int wbf, const void *b,
                            int bbf, int64_t P, int64_t C, int64_t cg, float eps) {
    int64_t g = blockIdx.x, bi = blockIdx.y;
    int64_t n = P * cg, base = bi * P * C + g * cg;
    double s = 0.0;
    for (int64_t e = threadIdx.x; e < n; e += NT) s += (double)ldv(x, xbf, base + (e / cg) * C + e % cg);
    double mean = block_sum_d(s) / (double)n;
    double v = 0.0;
    for (int64_t e = threadIdx.x; e < n; e += NT) {
        double d = (double)ldv(x, xbf, base + (e / cg) * C + e % cg) - mean;
        v += d * d;
    }
    double var = block_sum_d(v) / (double)n;
    float m = (float)mean, r = (float)(1.0 / sqrt(var + (double)eps));
    for (int64_t e = threadIdx.x; e < n; e += NT) {
        int64_t c = g * cg + e % cg, i = base + (e / cg) * C + e % cg;
        stv(y, ybf, i, (ldv(x, xbf, i) - m) * r * ldv(w, wbf, c) + ldv(b, bbf, c));
    }
}

extern "C" void cuda_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups,
                               float eps) {
    int64_t B = x->shape[0], P = x->shape[1], C = x->shape[2];
    dim3 grid((unsigned)groups, (unsigned)B);
    k_groupnorm<<<grid, NT>>>(y->data, isbf(y), x->data, isbf(x), w->data, isbf(w), b->data, isbf(b), P, C,
                               C / groups, eps);
    CHECK_CUDA(cudaGetLastError());
}

// ---- SiLU -------------------------------------------------------------------------------------------
__global__ void k_silu(void *y, int ybf, const void *x, int xbf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = ldv(x, xbf, i);
        stv(y, ybf, i, v / (1.0f + expf(-v)));
    }
}

extern "C" void cuda_silu(tensor *y, const tensor *x) {
    int64_t n = tensor_numel(x);
    k_silu<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), n);
    CHECK_CUDA(cudaGetLastError());
}

// ---- conv2d with same padding: im2col per image, then one GEMM ---------------------------------------
// cols[p, c*k*k + i*k + j] = x[(h+i-r)*W + (w+j-r), c] (0 outside the grid): the order of w's
// [Cout, Cin*k*k] flattening.
__global__ void k_im2col_same(void *cols, int cbf_, const void *x, int xbf, int64_t H, int64_t W, int64_t Cin,
                              int64_t k) {
    int64_t KK = Cin * k * k, n = H * W * KK;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    int64_t p = t / KK, col = t % KK;
    int64_t c = col / (k * k), i = (col / k) % k, j = col % k, r = k / 2;
    int64_t hh = p / W + i - r, ww = p % W + j - r;
    float v = (hh < 0 || hh >= H || ww < 0 || ww >= W) ? 0.0f : ldv(x, xbf, (hh * W + ww) * Cin + c);
    stv(cols, cbf_, t, v);
}

__global__ void k_add_bias(void *y, int ybf, const void *b, int bbf, int64_t M, int64_t N) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < M * N) stv(y, ybf, i, ldv(y, ybf, i) + ldv(b, bbf, i % N));
}

extern "C" void cuda_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                                 tensor *cols) {
    int64_t B = x->shape[0], Cin = x->shape[2], Cout = w->shape[0], k = w->shape[2];
    int64_t P = (int64_t)H * W, KK = Cin * k * k;
    CHECK(cols->dtype == w->dtype, "", "cuda conv2d: cols '%s' and weight '%s' must share a dtype", cols->name,
          w->name);
    CHECK(!isbf(y) || isbf(w), "", "cuda conv2d: bf16 output '%s' needs bf16 weights", y->name);
    size_t xs = nn_dtype_size(x->dtype), ys = nn_dtype_size(y->dtype);
    const float one = 1.0f, zero = 0.0f;
    for (int64_t bi = 0; bi < B; bi++) {
        const char *xb = (const char *)x->data + (size_t)(bi * P * Cin) * xs;
        char *yb = (char *)y->data + (size_t)(bi * P * Cout) * ys;
        k_im2col_same<<<blocks(P * KK), NT>>>(cols->data, isbf(cols), xb, isbf(x), H, W, Cin, k);
        CHECK_CUDA(cudaGetLastError());
        // Row-major yb[P, Cout] = cols[P, KK] · w[Cout, KK]^T == column-major yb^T = w · cols^T.
        CHECK_CUBLAS(cublasGemmEx(nn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)Cout, (int)P, (int)KK, &one, w->data,
                                  cuty(w), (int)KK, cols->data, cuty(cols), (int)KK, &zero, yb, cuty(y), (int)Cout,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (b) {
            k_add_bias<<<blocks(P * Cout), NT>>>(yb, isbf(y), b->data, isbf(b), P, Cout);
            CHECK_CUDA(cudaGetLastError());
        }
    }
}

// ---- fused VQ step: distances and argmin without the [rows, K] matrix ---------------------------------
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

extern "C" void cuda_vq_step_fused(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                                   int depth) {
    CHECK(residual->device == NN_CUDA && codebook->device == NN_CUDA && cnorm->device == NN_CUDA &&
              codes->device == NN_CUDA && cnorm->dtype == NN_F32 && residual->dtype == codebook->dtype &&
              (codes->dtype == NN_U16 || codes->dtype == NN_I32),
          "this is a bug in the calling model code",
          "cuda fused vq: residual '%s' and codebook '%s' (one float dtype), f32 norms and u16/i32 codes, all on cuda",
          residual->name, codebook->name);
    int64_t N = tensor_rows(residual), C = tensor_cols(residual), K = codebook->shape[0];
    CHECK(codebook->shape[1] == C && tensor_numel(cnorm) == K && tensor_rows(codes) == N && depth >= 0 &&
              depth < tensor_cols(codes) && K <= INT_MAX,
          "this is a bug in the calling model code", "cuda fused vq: shapes of '%s', '%s', '%s' do not fit",
          residual->name, codebook->name, codes->name);
    size_t shmem = (size_t)VQF_ROWS * (size_t)C * sizeof(float);
    CHECK(shmem <= 160 * 1024, "use the GEMM vq path for this width",
          "cuda fused vq: %lld-wide rows need %zu bytes of shared memory", (long long)C, shmem);
    // 16 KiB of static shared memory come on top; opt in to more than the default 48 KiB in all.
    CHECK_CUDA(cudaFuncSetAttribute(k_vq_fused, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem));
    unsigned grid = (unsigned)((N + VQF_ROWS - 1) / VQF_ROWS);
    k_vq_fused<<<grid, NT, shmem>>>(residual->data, isbf(residual), codebook->data, isbf(codebook),
                                     (const float *)cnorm->data, N, C, K, codes->data, codes->dtype == NN_U16,
                                     tensor_cols(codes), depth);
    CHECK_CUDA(cudaGetLastError());
}

// ---- host helpers: pinned memory, raw copies, synchronisation ------------------------------------------
extern "C" void *nn_cuda_host_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess)
        asvr_fatal(__FILE__, __LINE__, "free host memory or lower --batch", "cudaHostAlloc %.1f MiB for %s: %s",
                   (double)bytes / (1 << 20), what, cudaGetErrorString(e));
    return p;
}

extern "C" void nn_cuda_host_free(void *p) {
    if (p) CHECK_CUDA(cudaFreeHost(p));
}

extern "C" void nn_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes) {
    CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

extern "C" void nn_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes) {
    CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

extern "C" void nn_cuda_zero(void *dst, size_t bytes) { CHECK_CUDA(cudaMemset(dst, 0, bytes)); }

extern "C" void nn_cuda_sync(void) { CHECK_CUDA(cudaDeviceSynchronize()); }
