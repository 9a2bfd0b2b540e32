// ops_train_cuda.cu — the CUDA twins of the training ops of ops.h (backward ops, RoPE, SwiGLU,
// packed attention and its backward, embedding gather/scatter, fused cross-entropy, AdamW, the
// gradient norm and scaling). Storage f32 or bf16 per tensor, math in fp32 (double where the CPU
// op uses double for a sum that is returned to the host). Arguments were validated by ops.c.
//
// Determinism: every op gives bit-identical results run to run on one device; no float atomics.
// Column sums (matmul db, rmsnorm dw, attention dK/dV, embedding scatter) run in a fixed order:
// per-block partials, then a reduction over a fixed number of partials.
// Values the host cannot check without reading device memory (ids, targets, positions) are checked
// by the kernels: a bad one is recorded in a device error record (first one wins) and the op is
// reported with its index and value by the next op that synchronises with the host (embedding and
// cross-entropy check right after their kernels; RoPE, called per layer, does not stop to check).
// op_attention_seg keeps the probabilities in att [B,H,T,T] (f32) for backward, the contract of the
// CPU op; its backward works through `scratch` (f32, T*T per head; a larger scratch processes more
// heads per launch). op_flash_attention keeps only lse [B,H,T] and its backward recomputes the
// probabilities: for bf16 q, k, v (and dout) with a head dim that is a multiple of 16 up to 128 the
// tiled tensor-core kernels of ops_flash_cuda.cu; otherwise (the f32 path) one block per query row
// with that row's scores in shared memory (T + 2 Dh floats), scalar fp32 math.
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"
#include "nn/cuda/ops_cuda.h"
#include "nn/cuda/ops_flash_cuda.h"

#define BUG "this is a bug in the calling model code"

#define LAUNCH_CHECK() CHECK_CUDA(cudaGetLastError())

// ---- device error record -------------------------------------------------------------------------
enum { ERR_NONE, ERR_ID, ERR_TARGET, ERR_POS };
struct dev_err {
    int code;
    int pad;
    long long index, value, bound;
};
__device__ dev_err g_train_err;

static __device__ void report_err(int code, long long index, long long value, long long bound) {
    if (atomicCAS(&g_train_err.code, 0, code) == 0) {
        g_train_err.index = index;
        g_train_err.value = value;
        g_train_err.bound = bound;
    }
}

// Reads the error record (synchronises with the device) and exits naming `op` if a kernel set it.
static void check_device_errors(const char *op) {
    dev_err e;
    CHECK_CUDA(cudaMemcpyFromSymbol(&e, g_train_err, sizeof e));
    if (e.code == ERR_NONE) return;
    dev_err z;
    memset(&z, 0, sizeof z);
    CHECK_CUDA(cudaMemcpyToSymbol(g_train_err, &z, sizeof z));
    if (e.code == ERR_ID)
        ASVR_FATAL(BUG, "%s: id %lld at %lld is outside [0, %lld) (found on the device)", op, e.value, e.index,
                   e.bound);
    if (e.code == ERR_TARGET)
        ASVR_FATAL(BUG, "%s: target %lld of row %lld is outside [0, %lld) and not the ignore index %d (found on the device)",
                   op, e.value, e.index, e.bound, NN_IGNORE_INDEX);
    ASVR_FATAL(BUG, "%s: position %lld is %lld; positions are >= 0 (found on the device by an earlier op_rope)", op,
               e.index, e.value);
}

// ---- workspace -----------------------------------------------------------------------------------
// One grow-only device buffer for partial sums and small results; ops run in order on the default
// stream, so one op's use never overlaps another's. Grows (cudaFree synchronises) only when an op
// needs more than any earlier one: after the first step nothing is allocated.
static void *workspace(size_t bytes) {
    static void *p = NULL;
    static size_t cap = 0;
    if (bytes > cap) {
        if (p) nn_cuda_free(p);
        cap = (bytes + 4095) / 4096 * 4096;
        p = nn_cuda_malloc(cap, "training-op workspace");
    }
    return p;
}

// ---- matmul backward -----------------------------------------------------------------------------
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

// dy *= act'(pre), in place.
__global__ void kt_act_backward(void *dy, int dbf, const void *pre, int pbf, int64_t n, int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(dy, dbf, i, ldv(dy, dbf, i) * act_grad(ldv(pre, pbf, i), act));
}

// db[j] += sum_i dy[i, j]: a block owns 32 columns; its 8 row lanes sum rows lane, lane+8, ... and
// the 8 partials are added in lane order (a fixed order: deterministic).
__global__ void kt_colsum_add(void *db, int bbf, const void *dy, int dbf, int64_t M, int64_t N) {
    __shared__ float part[8][33];
    int c = threadIdx.x & 31, lane = threadIdx.x >> 5;
    int64_t j = (int64_t)blockIdx.x * 32 + c;
    float s = 0.0f;
    if (j < N)
        for (int64_t i = lane; i < M; i += 8) s += ldv(dy, dbf, i * N + j);
    part[lane][c] = s;
    __syncthreads();
    if (lane == 0 && j < N) {
        float t = 0.0f;
        for (int l = 0; l < 8; l++) t += part[l][c];
        stv(db, bbf, j, ldv(db, bbf, j) + t);
    }
}

// The two gradient GEMMs of G groups (G = 1: op_matmul_backward; G > 1: op_matmul_batched_backward,
// group g at offsets g*M*K, g*N*K, g*M*N):
//   dx[g] = dy[g] · w[g] (written, or added when accumulate_dx),  dw[g] += dy[g]^T · x[g].
// Operands in the other float type than their GEMM needs are converted into scratch (slot 1: dy,
// slot 2: x): dx runs in w's type; dw in bf16 when x or dy is bf16 (the mixed-precision trainer: bf16
// weight copies and activations, f32 residual-stream gradients).
static void gemm_grads(int64_t G, int64_t M, int64_t N, int64_t K, tensor *dx, tensor *dw, const tensor *dy,
                       const tensor *x, const tensor *w, int accumulate_dx, const char *op) {
    const float one = 1.0f, zero = 0.0f;
    const void *dyw = NULL; // dy in w's type, once converted for dx
    if (dx) { // row-major dx[M,K] = dy[M,N] · w[N,K]  ==  column-major dx^T = w^T · dy^T
        CHECK(isbf(w) || !isbf(dx), "give dx f32 when w is f32",
              "%s: dx '%s' is bf16 but w '%s' is f32 (not a cuBLAS GEMM type combination)", op, dx->name, w->name);
        dyw = nn_cuda_as_type(dy, isbf(w), 1);
        if (G == 1)
            CHECK_CUBLAS(cublasGemmEx(nn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)N, &one, w->data,
                                      cuty(w), (int)K, dyw, cuty(w), (int)N, accumulate_dx ? &one : &zero, dx->data,
                                      cuty(dx), (int)K, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        else
            CHECK_CUBLAS(cublasGemmStridedBatchedEx(
                nn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)N, &one, w->data, cuty(w), (int)K,
                (long long)(N * K), dyw, cuty(w), (int)N, (long long)(M * N), accumulate_dx ? &one : &zero, dx->data,
                cuty(dx), (int)K, (long long)(M * K), (int)G, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (dw) { // row-major dw[N,K] += dy^T[N,M] · x[M,K]  ==  column-major dw^T += x^T · dy
        int bf = isbf(x) || isbf(dy);
        CHECK(bf || !isbf(dw), "give dw f32 when x and dy are f32",
              "%s: dw '%s' is bf16 but x '%s' and dy '%s' are f32 (not a cuBLAS GEMM type combination)", op,
              dw->name, x->name, dy->name);
        const void *dyb = dyw && bf == isbf(w) ? dyw : nn_cuda_as_type(dy, bf, 1);
        const void *xb = nn_cuda_as_type(x, bf, 2);
        cudaDataType_t t = bf ? CUDA_R_16BF : CUDA_R_32F;
        if (G == 1)
            CHECK_CUBLAS(cublasGemmEx(nn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)N, (int)M, &one, xb, t,
                                      (int)K, dyb, t, (int)N, &one, dw->data, cuty(dw), (int)K, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
        else
            CHECK_CUBLAS(cublasGemmStridedBatchedEx(nn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)N, (int)M,
                                                    &one, xb, t, (int)K, (long long)(M * K), dyb, t, (int)N,
                                                    (long long)(M * N), &one, dw->data, cuty(dw), (int)K,
                                                    (long long)(N * K), (int)G, CUBLAS_COMPUTE_32F,
                                                    CUBLAS_GEMM_DEFAULT));
    }
}

extern "C" void cuda_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                                     const tensor *w, nn_act act, const tensor *pre, int accumulate_dx) {
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    if (act != NN_ACT_NONE) {
        kt_act_backward<<<blocks(M * N), NT>>>(dy->data, isbf(dy), pre->data, isbf(pre), M * N, (int)act);
        LAUNCH_CHECK();
    }
    gemm_grads(1, M, N, K, dx, dw, dy, x, w, accumulate_dx, "cuda matmul backward");
    if (db) {
        kt_colsum_add<<<(unsigned)((N + 31) / 32), NT>>>(db->data, isbf(db), dy->data, isbf(dy), M, N);
        LAUNCH_CHECK();
    }
}

// Backward of op_matmul_batched: the activation's backward over all groups, then the batched GEMMs.
extern "C" void cuda_matmul_batched_backward(tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,
                                             nn_act act, const tensor *pre, int accumulate_dx) {
    int64_t G = x->shape[0], M = x->shape[1], K = x->shape[2], N = w->shape[1];
    if (act != NN_ACT_NONE) {
        kt_act_backward<<<blocks(G * M * N), NT>>>(dy->data, isbf(dy), pre->data, isbf(pre), G * M * N, (int)act);
        LAUNCH_CHECK();
    }
    gemm_grads(G, M, N, K, dx, dw, dy, x, w, accumulate_dx, "cuda batched matmul backward");
}

// ---- gelu backward -------------------------------------------------------------------------------
__global__ void kt_gelu_backward(void *dx, int xbf_out, const void *dy, int ybf, const void *x, int xbf, int64_t n,
                                 int act, int accumulate) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float d = ldv(dy, ybf, i) * act_grad(ldv(x, xbf, i), act);
    stv(dx, xbf_out, i, accumulate ? ldv(dx, xbf_out, i) + d : d);
}

extern "C" void cuda_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate) {
    int64_t n = tensor_numel(x);
    kt_gelu_backward<<<blocks(n), NT>>>(dx->data, isbf(dx), dy->data, isbf(dy), x->data, isbf(x), n, (int)act,
                                        accumulate);
    LAUNCH_CHECK();
}

// ---- rmsnorm backward ----------------------------------------------------------------------------
#define RMS_PARTS 512 // blocks of the row kernel = partial dw rows; fixed, so the sum order is too

// Rows r = blockIdx.x, + gridDim.x, ...; part (gridDim.x x C, or NULL) gets this block's dw partial.
__global__ void kt_rmsnorm_backward(void *dx, int dxbf, float *part, const void *dy, int dybf, const void *x,
                                    int xbf, const void *w, int wbf, const float *rstd, int64_t R, int64_t C,
                                    int accumulate) {
    float *mine = part ? part + (int64_t)blockIdx.x * C : NULL;
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        const int64_t off = r * C;
        const float rs = rstd[r];
        float d = 0.0f;
        for (int64_t j = threadIdx.x; j < C; j += NT) d += ldv(dy, dybf, off + j) * ldv(w, wbf, j) * ldv(x, xbf, off + j);
        const float c = block_sum(d) / (float)C * rs * rs; // every read of the row's dy is done
        for (int64_t j = threadIdx.x; j < C; j += NT) {
            float gj = ldv(dy, dybf, off + j), xj = ldv(x, xbf, off + j); // before dx (may alias dy)
            if (mine) {
                float v = gj * xj * rs;
                mine[j] = r == blockIdx.x ? v : mine[j] + v;
            }
            float o = rs * (gj * ldv(w, wbf, j) - xj * c);
            stv(dx, dxbf, off + j, accumulate ? ldv(dx, dxbf, off + j) + o : o);
        }
    }
}

// dw[j] += sum over the G partial rows, in order.
__global__ void kt_sum_parts(void *dw, int wbf, const float *part, int G, int64_t C) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float s = 0.0f;
    for (int g = 0; g < G; g++) s += part[(int64_t)g * C + j];
    stv(dw, wbf, j, ldv(dw, wbf, j) + s);
}

extern "C" void cuda_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                                      const tensor *rstd, int accumulate_dx) {
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    int G = R < RMS_PARTS ? (int)R : RMS_PARTS;
    float *part = dw ? (float *)workspace((size_t)G * (size_t)C * sizeof(float)) : NULL;
    kt_rmsnorm_backward<<<(unsigned)G, NT>>>(dx->data, isbf(dx), part, dy->data, isbf(dy), x->data, isbf(x), w->data,
                                             isbf(w), (const float *)rstd->data, R, C, accumulate_dx);
    LAUNCH_CHECK();
    if (dw) {
        kt_sum_parts<<<blocks(C), NT>>>(dw->data, isbf(dw), part, G, C);
        LAUNCH_CHECK();
    }
}

// ---- RoPE ----------------------------------------------------------------------------------------
#define ROPE_MAX_HALF 256
struct rope_freqs {
    float f[ROPE_MAX_HALF];
};

// One thread per rotated pair (token, head, i < Dh/2).
__global__ void kt_rope(void *y, int ybf, const void *x, int xbf, const int32_t *pos, rope_freqs fr, int64_t BT, int H,
                        int64_t Dh, int inverse) {
    int64_t half = Dh / 2, n = BT * H * half;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int64_t d = i % half, rest = i / half, bt = rest / H;
    int h = (int)(rest % H);
    int32_t p = pos[bt];
    if (p < 0 && d == 0 && h == 0) report_err(ERR_POS, bt, p, 0);
    float a = (float)p * fr.f[d]; // fp32 product, as HF and the CPU op
    float c = cosf(a), s = sinf(a);
    if (inverse) s = -s;
    int64_t base = bt * H * Dh + (int64_t)h * Dh;
    float x1 = ldv(x, xbf, base + d), x2 = ldv(x, xbf, base + d + half);
    stv(y, ybf, base + d, x1 * c - x2 * s);
    stv(y, ybf, base + d + half, x2 * c + x1 * s);
}

extern "C" void cuda_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta, int inverse) {
    int64_t B = x->shape[0], T = x->shape[1], Dh = x->shape[2] / n_heads, half = Dh / 2;
    CHECK(half <= ROPE_MAX_HALF, "raise ROPE_MAX_HALF in ops_train_cuda.cu", "cuda rope: head dim %lld > %d",
          (long long)Dh, 2 * ROPE_MAX_HALF);
    rope_freqs fr;
    memset(&fr, 0, sizeof fr);
    // The frequencies on the host with the CPU op's expression (same libm), so both backends rotate
    // by the same fp32 angles.
    for (int64_t i = 0; i < half; i++) fr.f[i] = 1.0f / powf(theta, (float)(2 * i) / (float)Dh);
    int64_t n = B * T * n_heads * half;
    kt_rope<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), (const int32_t *)pos->data, fr, B * T, n_heads, Dh,
                               inverse);
    LAUNCH_CHECK();
}

// ---- SwiGLU --------------------------------------------------------------------------------------
static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void kt_swiglu(void *y, int ybf, const void *g, int gbf, const void *u, int ubf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = ldv(g, gbf, i), ui = ldv(u, ubf, i);
    stv(y, ybf, i, gi * sigmoid_f(gi) * ui);
}

__global__ void kt_swiglu_backward(void *dg, int dgbf, void *du, int dubf, const void *dy, int dybf, const void *g,
                                   int gbf, const void *u, int ubf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = ldv(g, gbf, i), ui = ldv(u, ubf, i), di = ldv(dy, dybf, i), s = sigmoid_f(gi);
    stv(dg, dgbf, i, di * ui * s * (1.0f + gi * (1.0f - s))); // dy is read before either write
    stv(du, dubf, i, di * gi * s);
}

extern "C" void cuda_swiglu(tensor *y, const tensor *gate, const tensor *up) {
    int64_t n = tensor_numel(y);
    kt_swiglu<<<blocks(n), NT>>>(y->data, isbf(y), gate->data, isbf(gate), up->data, isbf(up), n);
    LAUNCH_CHECK();
}

extern "C" void cuda_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                                     const tensor *up) {
    int64_t n = tensor_numel(dy);
    kt_swiglu_backward<<<blocks(n), NT>>>(dgate->data, isbf(dgate), dup->data, isbf(dup), dy->data, isbf(dy),
                                          gate->data, isbf(gate), up->data, isbf(up), n);
    LAUNCH_CHECK();
}

// ---- attention with segments ---------------------------------------------------------------------
static void shmem_limit(const void *kernel, size_t bytes, const char *what, long long T) {
    CHECK(bytes <= 200 * 1024, "split the sequence", "%s: T = %lld needs %zu bytes of shared memory", what, T,
          bytes);
    if (bytes > 48 * 1024)
        CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// One block per (query i, head h, batch b): scores of the visible keys in shared memory (masked ones
// -inf, so their probability is exactly 0), softmax in fp32, then out = P · V.
__global__ void kt_attention_seg(void *out, int obf, const void *q, int qbf, const void *k, int kbf, const void *v,
                                 int vbf, const int32_t *seg, int64_t T, int H, int group, int64_t Dh, float scale,
                                 int causal, float *att, float *lse) {
    extern __shared__ float sm[];
    float *s = sm, *qs = sm + T;
    int64_t i = blockIdx.x, b = blockIdx.z;
    int h = blockIdx.y, g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    int64_t qoff = (b * T + i) * HD + (int64_t)h * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) qs[t] = ldv(q, qbf, qoff + t);
    __syncthreads();
    const int32_t *sb = seg ? seg + b * T : NULL;
    int32_t si = sb ? sb[i] : 0;
    int64_t n = causal ? i + 1 : T;
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float d = -INFINITY;
        if (j < n && (!sb || sb[j] == si)) {
            int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
            float acc = 0.0f;
            for (int64_t t = 0; t < Dh; t++) acc += qs[t] * ldv(k, kbf, koff + t);
            d = scale * acc;
            mx = fmaxf(mx, d);
        }
        s[j] = d;
    }
    mx = block_max(mx); // finite: every query sees itself
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float e = expf(s[j] - mx); // exactly 0 for the masked -inf
        s[j] = e;
        sum += e;
    }
    float tot = block_sum(sum), inv = 1.0f / tot;
    if (lse && threadIdx.x == 0) lse[(b * H + h) * T + i] = (float)((double)mx + log((double)tot));
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        s[j] *= inv;
        if (att) att[((b * H + h) * T + i) * T + j] = s[j];
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++)
            if (s[j] != 0.0f) acc += s[j] * ldv(v, vbf, (b * T + j) * KVD + (int64_t)g * Dh + t);
        stv(out, obf, qoff + t, acc);
    }
}

extern "C" void cuda_attention_seg(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                                   int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    int keep = tensor_numel(att) == B * n_heads * T * T;
    size_t shmem = (size_t)(T + Dh) * sizeof(float);
    shmem_limit((const void *)kt_attention_seg, shmem, "cuda attention", (long long)T);
    dim3 grid((unsigned)T, (unsigned)n_heads, (unsigned)B);
    kt_attention_seg<<<grid, NT, shmem>>>(out->data, isbf(out), q->data, isbf(q), k->data, isbf(k), v->data, isbf(v),
                                          seg ? (const int32_t *)seg->data : NULL, T, n_heads, n_heads / n_kv_heads,
                                          Dh, scale, causal, keep ? (float *)att->data : NULL, (float *)NULL);
    LAUNCH_CHECK();
}

// ---- attention backward --------------------------------------------------------------------------
// Query heads bh0 .. bh0+gridDim.y-1 (flattened b*H + h), one block per (query row i, head):
// dP_ij = dO_i · V_j (only where P_ij != 0: elsewhere dS is 0 whatever dP is),
// dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij) into ds [heads of the chunk, T, T], dQ_i = scale dS_i K.
__global__ void kt_attn_bwd_rows(void *dq, int dqbf, float *ds, const void *dout, int obf, const void *k, int kbf,
                                 const void *v, int vbf, const float *att, int64_t T, int H, int group, int64_t Dh,
                                 float scale, int64_t bh0) {
    extern __shared__ float sm[];
    float *s = sm, *dos = sm + T;
    int64_t i = blockIdx.x, bh = bh0 + blockIdx.y, b = bh / H;
    int h = (int)(bh % H), g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    int64_t qoff = (b * T + i) * HD + (int64_t)h * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) dos[t] = ldv(dout, obf, qoff + t);
    __syncthreads();
    const float *P = att + (bh * T + i) * T;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float p = P[j], dp = 0.0f;
        if (p != 0.0f) {
            int64_t voff = (b * T + j) * KVD + (int64_t)g * Dh;
            for (int64_t t = 0; t < Dh; t++) dp += dos[t] * ldv(v, vbf, voff + t);
        }
        s[j] = dp;
        dot += p * dp;
    }
    dot = block_sum(dot);
    float *dsr = ds + ((int64_t)blockIdx.y * T + i) * T;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float d = P[j] * (s[j] - dot);
        s[j] = d;
        dsr[j] = d;
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float acc = 0.0f;
        for (int64_t j = 0; j < T; j++)
            if (s[j] != 0.0f) acc += s[j] * ldv(k, kbf, (b * T + j) * KVD + (int64_t)g * Dh + t);
        stv(dq, dqbf, qoff + t, scale * acc);
    }
}

// One block per (key j, batch b, kv head g): over the query heads of g that lie in the chunk
// [bh0, bh0 + nh), dK_j += scale sum_i dS_ij Q_i and dV_j += sum_i P_ij dO_i (heads and rows in
// order: deterministic).
__global__ void kt_attn_bwd_cols(void *dk, int dkbf, void *dv, int dvbf, const float *ds, const void *q, int qbf,
                                 const void *dout, int obf, const float *att, int64_t T, int H, int Hkv, int64_t Dh,
                                 float scale, int64_t bh0, int64_t nh) {
    int64_t j = blockIdx.x, b = blockIdx.y / Hkv;
    int g = (int)(blockIdx.y % Hkv), group = H / Hkv;
    int64_t h0 = (int64_t)g * group, h1 = h0 + group;
    if (h0 < bh0 - b * H) h0 = bh0 - b * H;
    if (h1 > bh0 + nh - b * H) h1 = bh0 + nh - b * H;
    if (h0 >= h1) return;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)Hkv * Dh;
    int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float ak = 0.0f, av = 0.0f;
        for (int64_t h = h0; h < h1; h++) {
            int64_t bh = b * H + h;
            const float *P = att + bh * T * T, *dsh = ds + (bh - bh0) * T * T;
            for (int64_t i = 0; i < T; i++) {
                float p = P[i * T + j];
                if (p == 0.0f) continue;
                int64_t qo = (b * T + i) * HD + h * Dh + t;
                ak += dsh[i * T + j] * ldv(q, qbf, qo);
                av += p * ldv(dout, obf, qo);
            }
        }
        stv(dk, dkbf, koff + t, ldv(dk, dkbf, koff + t) + scale * ak);
        stv(dv, dvbf, koff + t, ldv(dv, dvbf, koff + t) + av);
    }
}

extern "C" void cuda_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                                        const tensor *k, const tensor *v, const tensor *att, int n_heads,
                                        int n_kv_heads, float scale, tensor *scratch) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    CHECK_CUDA(cudaMemset(dk->data, 0, tensor_nbytes(dk))); // heads of a group add into one kv head
    CHECK_CUDA(cudaMemset(dv->data, 0, tensor_nbytes(dv)));
    int64_t total = B * n_heads, per = tensor_numel(scratch) / (T * T);
    if (per > total) per = total;
    if (per > 65535) per = 65535; // grid.y
    size_t shmem = (size_t)(T + Dh) * sizeof(float);
    shmem_limit((const void *)kt_attn_bwd_rows, shmem, "cuda attention backward", (long long)T);
    for (int64_t bh0 = 0; bh0 < total; bh0 += per) {
        int64_t nh = total - bh0 < per ? total - bh0 : per;
        kt_attn_bwd_rows<<<dim3((unsigned)T, (unsigned)nh), NT, shmem>>>(
            dq->data, isbf(dq), (float *)scratch->data, dout->data, isbf(dout), k->data, isbf(k), v->data, isbf(v),
            (const float *)att->data, T, n_heads, n_heads / n_kv_heads, Dh, scale, bh0);
        LAUNCH_CHECK();
        kt_attn_bwd_cols<<<dim3((unsigned)T, (unsigned)(B * n_kv_heads)), NT>>>(
            dk->data, isbf(dk), dv->data, isbf(dv), (const float *)scratch->data, q->data, isbf(q), dout->data,
            isbf(dout), (const float *)att->data, T, n_heads, n_kv_heads, Dh, scale, bh0, nh);
        LAUNCH_CHECK();
    }
}

// ---- flash-style attention (no T x T buffer) ----------------------------------------------------
// bf16 inputs with a supported head dim go to ops_flash_cuda.cu (cuda_flash_tc_ok); the scalar
// kernels below are the path for everything else. Forward: kt_attention_seg without att, writing lse. Backward: a row pass (dQ, and
// delta_i = dO_i · O_i into the workspace) and a column pass (dK, dV), both recomputing
// P_ij = exp(scale q_i·k_j - lse_i) on the visible pairs; every output element is written by one
// thread of one block (deterministic, no clearing, no atomics).
extern "C" void cuda_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                                     int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    if (cuda_flash_tc_ok(q, k, v, NULL, n_heads)) {
        cuda_flash_tc_forward(out, lse, q, k, v, n_heads, n_kv_heads, scale, causal, seg);
        return;
    }
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    size_t shmem = (size_t)(T + Dh) * sizeof(float);
    shmem_limit((const void *)kt_attention_seg, shmem, "cuda flash attention", (long long)T);
    dim3 grid((unsigned)T, (unsigned)n_heads, (unsigned)B);
    kt_attention_seg<<<grid, NT, shmem>>>(out->data, isbf(out), q->data, isbf(q), k->data, isbf(k), v->data, isbf(v),
                                          seg ? (const int32_t *)seg->data : NULL, T, n_heads, n_heads / n_kv_heads,
                                          Dh, scale, causal, (float *)NULL, (float *)lse->data);
    LAUNCH_CHECK();
}

// One block per (query i, head h, batch b).
__global__ void kt_flash_bwd_rows(void *dq, int dqbf, float *delta, const void *dout, int dobf, const void *out,
                                  int outbf, const void *q, int qbf, const void *k, int kbf, const void *v, int vbf,
                                  const float *lse, const int32_t *seg, int64_t T, int H, int group, int64_t Dh,
                                  float scale, int causal) {
    extern __shared__ float sm[];
    float *s = sm, *qs = sm + T, *dos = qs + Dh;
    int64_t i = blockIdx.x, b = blockIdx.z;
    int h = blockIdx.y, g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    int64_t qoff = (b * T + i) * HD + (int64_t)h * Dh, row = (b * H + h) * T + i;
    float dd = 0.0f;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        qs[t] = ldv(q, qbf, qoff + t);
        dos[t] = ldv(dout, dobf, qoff + t);
        dd += dos[t] * ldv(out, outbf, qoff + t);
    }
    dd = block_sum(dd); // also the barrier after the loads into shared memory
    if (threadIdx.x == 0) delta[row] = dd;
    const float l = lse[row];
    const int32_t *sb = seg ? seg + b * T : NULL;
    int32_t si = sb ? sb[i] : 0;
    int64_t n = causal ? i + 1 : T;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float d = 0.0f;
        if (j < n && (!sb || sb[j] == si)) {
            int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
            float a = 0.0f, dp = 0.0f;
            for (int64_t t = 0; t < Dh; t++) {
                a += qs[t] * ldv(k, kbf, koff + t);
                dp += dos[t] * ldv(v, vbf, koff + t);
            }
            float p = expf(scale * a - l);
            d = p * (dp - dd);
        }
        s[j] = d;
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++)
            if (s[j] != 0.0f) acc += s[j] * ldv(k, kbf, (b * T + j) * KVD + (int64_t)g * Dh + t);
        stv(dq, dqbf, qoff + t, scale * acc);
    }
}

// One block per (key j, kv head g, batch b), over the query heads of g in order.
__global__ void kt_flash_bwd_cols(void *dk, int dkbf, void *dv, int dvbf, const float *delta, const void *dout,
                                  int dobf, const void *q, int qbf, const void *k, int kbf, const void *v, int vbf,
                                  const float *lse, const int32_t *seg, int64_t T, int H, int Hkv, int64_t Dh,
                                  float scale, int causal) {
    extern __shared__ float sm[];
    float *ps = sm, *dss = sm + T, *ks = dss + T, *vs = ks + Dh, *ak = vs + Dh, *av = ak + Dh;
    int64_t j = blockIdx.x, b = blockIdx.z;
    int g = blockIdx.y, group = H / Hkv;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)Hkv * Dh;
    int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        ks[t] = ldv(k, kbf, koff + t);
        vs[t] = ldv(v, vbf, koff + t);
        ak[t] = 0.0f;
        av[t] = 0.0f;
    }
    __syncthreads();
    const int32_t *sb = seg ? seg + b * T : NULL;
    int32_t sj = sb ? sb[j] : 0;
    int64_t i0 = causal ? j : 0;
    for (int h = g * group; h < (g + 1) * group; h++) {
        int64_t bh = b * H + h;
        for (int64_t i = threadIdx.x; i < T; i += NT) {
            float p = 0.0f, d = 0.0f;
            if (i >= i0 && (!sb || sb[i] == sj)) {
                int64_t qo = (b * T + i) * HD + (int64_t)h * Dh;
                float a = 0.0f, dp = 0.0f;
                for (int64_t t = 0; t < Dh; t++) {
                    a += ldv(q, qbf, qo + t) * ks[t];
                    dp += ldv(dout, dobf, qo + t) * vs[t];
                }
                p = expf(scale * a - lse[bh * T + i]);
                d = p * (dp - delta[bh * T + i]);
            }
            ps[i] = p;
            dss[i] = d;
        }
        __syncthreads();
        for (int64_t t = threadIdx.x; t < Dh; t += NT) {
            float sk = ak[t], sv = av[t];
            for (int64_t i = i0; i < T; i++) {
                if (ps[i] == 0.0f) continue;
                int64_t qo = (b * T + i) * HD + (int64_t)h * Dh + t;
                sk += dss[i] * ldv(q, qbf, qo);
                sv += ps[i] * ldv(dout, dobf, qo);
            }
            ak[t] = sk, av[t] = sv;
        }
        __syncthreads(); // before the next head overwrites ps, dss
    }
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        stv(dk, dkbf, koff + t, scale * ak[t]);
        stv(dv, dvbf, koff + t, av[t]);
    }
}

extern "C" void cuda_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                                              const tensor *k, const tensor *v, const tensor *out, const tensor *lse,
                                              int n_heads, int n_kv_heads, float scale, int causal,
                                              const tensor *seg) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    float *delta = (float *)workspace((size_t)(B * n_heads * T) * sizeof(float));
    if (cuda_flash_tc_ok(q, k, v, dout, n_heads)) {
        cuda_flash_tc_backward(dq, dk, dv, dout, q, k, v, out, lse, n_heads, n_kv_heads, scale, causal, seg, delta);
        return;
    }
    const int32_t *sg = seg ? (const int32_t *)seg->data : NULL;
    size_t sh_rows = (size_t)(T + 2 * Dh) * sizeof(float), sh_cols = (size_t)(2 * T + 4 * Dh) * sizeof(float);
    shmem_limit((const void *)kt_flash_bwd_rows, sh_rows, "cuda flash attention backward", (long long)T);
    shmem_limit((const void *)kt_flash_bwd_cols, sh_cols, "cuda flash attention backward", (long long)T);
    kt_flash_bwd_rows<<<dim3((unsigned)T, (unsigned)n_heads, (unsigned)B), NT, sh_rows>>>(
        dq->data, isbf(dq), delta, dout->data, isbf(dout), out->data, isbf(out), q->data, isbf(q), k->data, isbf(k),
        v->data, isbf(v), (const float *)lse->data, sg, T, n_heads, n_heads / n_kv_heads, Dh, scale, causal);
    LAUNCH_CHECK();
    kt_flash_bwd_cols<<<dim3((unsigned)T, (unsigned)n_kv_heads, (unsigned)B), NT, sh_cols>>>(
        dk->data, isbf(dk), dv->data, isbf(dv), delta, dout->data, isbf(dout), q->data, isbf(q), k->data, isbf(k),
        v->data, isbf(v), (const float *)lse->data, sg, T, n_heads, n_kv_heads, Dh, scale, causal);
    LAUNCH_CHECK();
}

// ---- embedding -----------------------------------------------------------------------------------
__global__ void kt_embedding(void *y, int ybf, const int32_t *ids, const void *tab, int tbf, int64_t N, int64_t C,
                             int64_t V) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    int64_t n = i / C, c = i % C;
    int32_t id = ids[n];
    if (id < 0 || id >= V) {
        if (c == 0) report_err(ERR_ID, n, id, V);
        stv(y, ybf, i, 0.0f);
        return;
    }
    stv(y, ybf, i, ldv(tab, tbf, (int64_t)id * C + c));
}

extern "C" void cuda_embedding(tensor *y, const tensor *ids, const tensor *table) {
    int64_t N = tensor_numel(ids), C = table->shape[1], V = table->shape[0];
    kt_embedding<<<blocks(N * C), NT>>>(y->data, isbf(y), (const int32_t *)ids->data, table->data, isbf(table), N, C,
                                        V);
    LAUNCH_CHECK();
    check_device_errors("op_embedding");
}

// The scatter-add is deterministic and sort-free: for each token n, lead[n] = 1 when no earlier
// token has its id and next[n] = the next token with the same id (-1: none); then the block of each
// leading token sums dy over its chain in token order and adds the sum to the table row once.
// skip: negative ids are no error and lead nothing (op_embedding_skip_backward).
__global__ void kt_embedding_chain(int32_t *next, int32_t *lead, const int32_t *ids, int64_t N, int64_t V, int skip) {
    __shared__ int nx;
    int64_t n = blockIdx.x;
    int32_t id = ids[n];
    if (threadIdx.x == 0) nx = INT_MAX;
    __syncthreads();
    int earlier = 0;
    for (int64_t m = threadIdx.x; m < N; m += NT) {
        if (m == n || ids[m] != id) continue;
        if (m < n) earlier = 1;
        else atomicMin(&nx, (int)m); // an integer min: the result does not depend on the order
    }
    int any = __syncthreads_or(earlier);
    if (threadIdx.x == 0) {
        next[n] = nx == INT_MAX ? -1 : nx;
        lead[n] = !any && !(skip && id < 0);
        if ((id < 0 && !skip) || id >= V) report_err(ERR_ID, n, id, V);
    }
}

__global__ void kt_embedding_backward(void *dt, int tbf, const void *dy, int ybf, const int32_t *ids,
                                      const int32_t *next, const int32_t *lead, int64_t C, int64_t V) {
    int64_t n = blockIdx.x;
    int32_t id = ids[n];
    if (!lead[n] || id < 0 || id >= V) return;
    for (int64_t c = threadIdx.x; c < C; c += NT) {
        float s = 0.0f;
        for (int64_t m = n; m >= 0; m = next[m]) s += ldv(dy, ybf, m * C + c);
        stv(dt, tbf, (int64_t)id * C + c, ldv(dt, tbf, (int64_t)id * C + c) + s);
    }
}

void nn_cuda_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids, int skip_negative) {
    int64_t N = tensor_numel(ids), C = dtable->shape[1], V = dtable->shape[0];
    if (N == 0 || C == 0) return;
    CHECK(N < INT_MAX, "", "cuda embedding backward: %lld ids", (long long)N);
    int32_t *next = (int32_t *)workspace((size_t)N * 2 * sizeof(int32_t)), *lead = next + N;
    const int32_t *pid = (const int32_t *)ids->data;
    kt_embedding_chain<<<(unsigned)N, NT>>>(next, lead, pid, N, V, skip_negative);
    LAUNCH_CHECK();
    kt_embedding_backward<<<(unsigned)N, NT>>>(dtable->data, isbf(dtable), dy->data, isbf(dy), pid, next, lead, C, V);
    LAUNCH_CHECK();
    check_device_errors(skip_negative ? "op_embedding_skip_backward" : "op_embedding_backward");
}

extern "C" void cuda_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids) {
    nn_cuda_embedding_backward(dtable, dy, ids, 0);
}

// ---- cross-entropy -------------------------------------------------------------------------------
// One block per row: an online max / sum of exp over the row (one pass), then the loss of the row
// (double, into rl[r]; rc[r] = 1 when counted) and, when dl, the gradient written over the row (the
// logits of the row are all read before any thread writes: dl may alias the logits).
__global__ void kt_cross_entropy(void *dl, int dbf, double *rl, double *rc, const void *lg, int lbf,
                                 const int32_t *tg, int64_t V, float scale) {
    int64_t r = blockIdx.x, off = r * V;
    int32_t t = tg[r];
    int ignored = t == NN_IGNORE_INDEX, bad = !ignored && (t < 0 || t >= V);
    if (ignored || bad) {
        if (bad && threadIdx.x == 0) report_err(ERR_TARGET, r, t, V);
        if (dl)
            for (int64_t j = threadIdx.x; j < V; j += NT) stv(dl, dbf, off + j, 0.0f);
        if (threadIdx.x == 0) rl[r] = 0.0, rc[r] = 0.0;
        return;
    }
    float xt = ldv(lg, lbf, off + t); // every thread, before the first barrier
    float m = -FLT_MAX, s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += NT) {
        float x = ldv(lg, lbf, off + j);
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float M = block_max(m);
    float S = block_sum(s * expf(m - M));
    if (threadIdx.x == 0) {
        rl[r] = (double)M + log((double)S) - (double)xt;
        rc[r] = 1.0;
    }
    if (!dl) return;
    float c = (float)((double)scale / (double)S);
    for (int64_t j = threadIdx.x; j < V; j += NT) {
        float d = c * expf(ldv(lg, lbf, off + j) - M);
        if (j == t) d -= scale;
        stv(dl, dbf, off + j, d);
    }
}

// out[0] = sum of a[0..n) in double, in a fixed order (one block).
__global__ void kt_sum_d(double *out, const double *a, int64_t n) {
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += NT) s += a[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) out[0] = s;
}

extern "C" void cuda_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                                   const tensor *targets, float scale) {
    int64_t M = tensor_rows(logits), V = tensor_cols(logits);
    double *ws = (double *)workspace((size_t)(2 * M + 2) * sizeof(double));
    double *rl = ws, *rc = ws + M, *res = ws + 2 * M;
    kt_cross_entropy<<<(unsigned)M, NT>>>(dlogits ? dlogits->data : NULL, isbf(dlogits), rl, rc, logits->data,
                                          isbf(logits), (const int32_t *)targets->data, V, scale);
    LAUNCH_CHECK();
    kt_sum_d<<<1, NT>>>(res, rl, M);
    LAUNCH_CHECK();
    kt_sum_d<<<1, NT>>>(res + 1, rc, M);
    LAUNCH_CHECK();
    double h[2];
    CHECK_CUDA(cudaMemcpy(h, res, sizeof h, cudaMemcpyDeviceToHost));
    check_device_errors("op_cross_entropy");
    *loss_sum = h[0];
    *count = (int64_t)h[1];
}

// ---- optimizer and gradient reductions -----------------------------------------------------------
// The CPU op's fp32 expression, with explicit roundings (no fused multiply-adds) so that both
// backends round alike.
// One element of AdamW, every operation rounded as the CPU op rounds it (no contractions); returns the
// new value of p[i].
static __device__ __forceinline__ float adamw_elem(float *p, float *m, float *v, int64_t i, float gi, float decay,
                                                   float a1, float beta2, float a2, float step_size, float bc2_sqrt,
                                                   float eps) {
    float pi = __fmul_rn(p[i], decay);
    float mi = __fadd_rn(m[i], __fmul_rn(a1, __fsub_rn(gi, m[i])));
    float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(a2, gi), gi));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    float np = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mi), denom));
    p[i] = np;
    m[i] = mi;
    v[i] = vi;
    return np;
}

__global__ void kt_adamw(float *p, const float *g, float *m, float *v, int64_t n, float decay, float a1, float beta2,
                         float a2, float step_size, float bc2_sqrt, float eps) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) adamw_elem(p, m, v, i, g[i], decay, a1, beta2, a2, step_size, bc2_sqrt, eps);
}

extern "C" void cuda_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
                           float eps, float weight_decay, int64_t step) {
    int64_t n = tensor_numel(p);
    // Scalars on the host exactly as the CPU op computes them.
    float decay = (float)(1.0 - (double)lr * weight_decay);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    kt_adamw<<<blocks(n), NT>>>((float *)p->data, (const float *)g->data, (float *)m->data, (float *)v->data, n,
                                decay, a1, beta2, a2, step_size, bc2_sqrt, eps);
    LAUNCH_CHECK();
}

#define SQ_PARTS 1024 // partial sums of op_grad_sqnorm: fixed per size, so the sum order is too

__global__ void kt_sqnorm_part(double *part, const void *g, int gbf, int64_t n) {
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
        double x = ldv(g, gbf, i);
        s += x * x;
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" void cuda_grad_sqnorm(double *acc, const tensor *g) {
    int64_t n = tensor_numel(g);
    unsigned G = blocks(n) < SQ_PARTS ? blocks(n) : SQ_PARTS;
    double *part = (double *)workspace((size_t)(G + 1) * sizeof(double));
    kt_sqnorm_part<<<G, NT>>>(part + 1, g->data, isbf(g), n);
    LAUNCH_CHECK();
    kt_sum_d<<<1, NT>>>(part, part + 1, G);
    LAUNCH_CHECK();
    double h;
    CHECK_CUDA(cudaMemcpy(&h, part, sizeof h, cudaMemcpyDeviceToHost));
    *acc += h;
}

__global__ void kt_scale(void *t, int tbf, int64_t n, float s) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(t, tbf, i, ldv(t, tbf, i) * s);
}

extern "C" void cuda_scale(tensor *t, float s) {
    int64_t n = tensor_numel(t);
    kt_scale<<<blocks(n), NT>>>(t->data, isbf(t), n, s);
    LAUNCH_CHECK();
}

// ---- multi-tensor optimizer ops (the fused AdamW) ------------------------------------------------
// A table of the tensors (pointers, sizes, per-tensor weight decay) and of 64K-element chunks over
// them lives on the device; block b handles chunk b. The table is rebuilt on the host each call and
// uploaded only when its bytes change (the trainer passes the same tensors every step).
#define MT_CHUNK 65536

struct mt_tensor {
    float *p;
    const void *g;
    float *m, *v;
    void *pc;
    int gbf, pcbf;
    float wd;
    int64_t n;
};
struct mt_chunk {
    int t;
    int64_t start;
};

struct mt_table {
    void *dev;         // [tensors | chunks] on the device
    size_t cap;
    unsigned char *host; // what dev holds now
    size_t bytes;
};

// Builds the table of n tensors (p may be NULL for the sqnorm table: only g counts) into t, uploading
// when it differs from what the device holds. Returns the chunk count; *tensors / *chunks point into
// the device copy.
static int64_t mt_build(mt_table *tb, int n, tensor *const *p, const tensor *const *g, tensor *const *m,
                        tensor *const *v, tensor *const *pc, const float *wd, const mt_tensor **tensors,
                        const mt_chunk **chunks) {
    int64_t nchunks = 0;
    for (int i = 0; i < n; i++) nchunks += (tensor_numel(g[i]) + MT_CHUNK - 1) / MT_CHUNK;
    size_t tbytes = (size_t)n * sizeof(mt_tensor), bytes = tbytes + (size_t)nchunks * sizeof(mt_chunk);
    unsigned char *buf = (unsigned char *)calloc(1, bytes ? bytes : 1);
    CHECK(buf != NULL, "", "out of host memory for the multi-tensor table (%zu bytes)", bytes);
    mt_tensor *ts = (mt_tensor *)buf;
    mt_chunk *cs = (mt_chunk *)(buf + tbytes);
    int64_t c = 0;
    for (int i = 0; i < n; i++) {
        mt_tensor *e = &ts[i];
        e->p = p ? (float *)p[i]->data : NULL;
        e->g = g[i]->data;
        e->gbf = isbf(g[i]);
        e->m = m ? (float *)m[i]->data : NULL;
        e->v = v ? (float *)v[i]->data : NULL;
        e->pc = pc && pc[i] ? pc[i]->data : NULL;
        e->pcbf = pc && pc[i] ? isbf(pc[i]) : 0;
        e->wd = wd ? wd[i] : 0.0f;
        e->n = tensor_numel(g[i]);
        for (int64_t s = 0; s < e->n; s += MT_CHUNK) cs[c].t = i, cs[c].start = s, c++;
    }
    if (bytes != tb->bytes || memcmp(buf, tb->host, bytes) != 0) {
        if (bytes > tb->cap) {
            if (tb->dev) nn_cuda_free(tb->dev);
            tb->cap = bytes;
            tb->dev = nn_cuda_malloc(bytes, "multi-tensor table");
        }
        CHECK_CUDA(cudaMemcpy(tb->dev, buf, bytes, cudaMemcpyHostToDevice));
        free(tb->host);
        tb->host = buf;
        tb->bytes = bytes;
    } else {
        free(buf);
    }
    *tensors = (const mt_tensor *)tb->dev;
    *chunks = (const mt_chunk *)((unsigned char *)tb->dev + tbytes);
    return nchunks;
}

// kt_adamw's update (adamw_elem) with g scaled by gscale, then the compute copy.
__global__ void kt_adamw_multi(const mt_tensor *ts, const mt_chunk *cs, float gscale, float a1, float beta2,
                               float a2, float step_size, float bc2_sqrt, float eps, float lr) {
    mt_chunk c = cs[blockIdx.x];
    const mt_tensor *e = &ts[c.t];
    float decay = (float)(1.0 - (double)lr * e->wd); // as cuda_adamw computes it on the host
    int64_t end = c.start + MT_CHUNK < e->n ? c.start + MT_CHUNK : e->n;
    for (int64_t i = c.start + threadIdx.x; i < end; i += NT) {
        float gi = __fmul_rn(ldv(e->g, e->gbf, i), gscale);
        float np = adamw_elem(e->p, e->m, e->v, i, gi, decay, a1, beta2, a2, step_size, bc2_sqrt, eps);
        if (e->pc) stv(e->pc, e->pcbf, i, np);
    }
}

extern "C" void cuda_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                                 tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2,
                                 float eps, int64_t step) {
    static mt_table tb;
    const mt_tensor *ts;
    const mt_chunk *cs;
    int64_t nchunks = mt_build(&tb, n, p, (const tensor *const *)g, m, v, pc, wd, &ts, &cs);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    kt_adamw_multi<<<(unsigned)nchunks, NT>>>(ts, cs, gscale, a1, beta2, a2, step_size, bc2_sqrt, eps, lr);
    LAUNCH_CHECK();
}

__global__ void kt_sqnorm_multi(double *part, const mt_tensor *ts, const mt_chunk *cs) {
    mt_chunk c = cs[blockIdx.x];
    const mt_tensor *e = &ts[c.t];
    int64_t end = c.start + MT_CHUNK < e->n ? c.start + MT_CHUNK : e->n;
    double s = 0.0;
    for (int64_t i = c.start + threadIdx.x; i < end; i += NT) {
        double x = ldv(e->g, e->gbf, i);
        s += x * x;
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" void cuda_grad_sqnorm_multi(double *acc, int n, const tensor *const *g) {
    static mt_table tb;
    const mt_tensor *ts;
    const mt_chunk *cs;
    int64_t nchunks = mt_build(&tb, n, NULL, g, NULL, NULL, NULL, NULL, &ts, &cs);
    double *part = (double *)workspace((size_t)(nchunks + 1) * sizeof(double));
    kt_sqnorm_multi<<<(unsigned)nchunks, NT>>>(part + 1, ts, cs);
    LAUNCH_CHECK();
    kt_sum_d<<<1, NT>>>(part, part + 1, nchunks);
    LAUNCH_CHECK();
    double h;
    CHECK_CUDA(cudaMemcpy(&h, part, sizeof h, cudaMemcpyDeviceToHost));
    *acc += h;
}
