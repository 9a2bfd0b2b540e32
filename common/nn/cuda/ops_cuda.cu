// ops_cuda.cu — the CUDA backend of the ops in ops.h: f32 or bf16 storage per tensor, fp32 math.
// GEMMs: cuBLAS GemmEx (fp32 compute); the rest: plain kernels, one thread per element or one block
// per row. op_matmul with a bias and/or the tanh GELU runs as one cuBLASLt GEMM with the BIAS / GELU /
// GELU_BIAS epilogue (GELU_AUX(_BIAS) writes pre when asked for) — cuBLASLt's GELU is the tanh form,
// so the erf GELU keeps GemmEx + the epilogue kernel, as do the cases matmul_lt lists. Setting the
// environment variable ASVR_NO_CUBLASLT=1 forces GemmEx + kernel everywhere (tests compare the two).
// Batched per-group matmul (op_matmul_batched): one cublasGemmStridedBatchedEx. Residual + RMSNorm
// (op_add_rmsnorm): one block per row. Attention: with the probabilities kept ([B,H,T,T]) two batched
// cuBLAS GEMMs around a row softmax (tensor cores); with only a T x T scratch, a straightforward
// kernel (one block per query row, scores in shared memory, T <= 12288). The training ops are in
// ops_train_cuda.cu, the helpers both files share in cuda_common.cuh. Arguments were validated by ops.c.
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"
#include "nn/cuda/ops_cuda.h"

cublasHandle_t nn_cuda_blas(void) {
    static cublasHandle_t h = NULL;
    if (!h) CHECK_CUBLAS(cublasCreate(&h));
    return h;
}

// ---- memory ------------------------------------------------------------------------------------
__global__ void k_convert(void *dst, int dbf, const void *src, int sbf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(dst, dbf, i, ldv(src, sbf, i));
}

extern "C" int nn_cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

extern "C" void *nn_cuda_malloc(size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
        asvr_fatal(__FILE__, __LINE__, asvr_cuda_hint((int)e), "cudaMalloc %.1f MiB for %s: %s",
                   (double)bytes / (1 << 20), what, cudaGetErrorString(e));
    return p;
}

extern "C" void nn_cuda_free(void *p) { CHECK_CUDA(cudaFree(p)); }

extern "C" void nn_cuda_mem_used(size_t *used, size_t *total) {
    size_t fr = 0, tot = 0;
    CHECK_CUDA(cudaMemGetInfo(&fr, &tot));
    *used = tot - fr;
    *total = tot;
}

extern "C" void nn_cuda_upload(tensor *dst, const tensor *src) {
    int64_t n = tensor_numel(src);
    CHECK(dst->device == NN_CUDA && src->device == NN_CPU && src->dtype == NN_F32 && tensor_numel(dst) == n &&
              (dst->dtype == NN_F32 || dst->dtype == NN_BF16),
          "", "nn_cuda_upload: '%s' -> '%s' must be cpu f32 -> cuda f32/bf16 of equal size", src->name, dst->name);
    if (dst->dtype == NN_F32) {
        CHECK_CUDA(cudaMemcpy(dst->data, src->data, (size_t)n * 4, cudaMemcpyHostToDevice));
        return;
    }
    float *tmp = (float *)nn_cuda_malloc((size_t)n * 4, "upload staging");
    CHECK_CUDA(cudaMemcpy(tmp, src->data, (size_t)n * 4, cudaMemcpyHostToDevice));
    k_convert<<<blocks(n), NT>>>(dst->data, 1, tmp, 0, n);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaDeviceSynchronize());
    nn_cuda_free(tmp);
}

extern "C" void nn_cuda_download(tensor *dst, const tensor *src) {
    int64_t n = tensor_numel(src);
    CHECK(dst->device == NN_CPU && src->device == NN_CUDA && dst->dtype == NN_F32 && tensor_numel(dst) == n,
          "", "nn_cuda_download: '%s' -> '%s' must be cuda -> cpu f32 of equal size", src->name, dst->name);
    if (src->dtype == NN_F32) {
        CHECK_CUDA(cudaMemcpy(dst->data, src->data, (size_t)n * 4, cudaMemcpyDeviceToHost));
        return;
    }
    CHECK(src->dtype == NN_BF16, "", "nn_cuda_download: '%s' is %s", src->name, nn_dtype_name(src->dtype));
    float *tmp = (float *)nn_cuda_malloc((size_t)n * 4, "download staging");
    k_convert<<<blocks(n), NT>>>(tmp, 0, src->data, 1, n);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaMemcpy(dst->data, tmp, (size_t)n * 4, cudaMemcpyDeviceToHost));
    nn_cuda_free(tmp);
}

// ---- matmul ------------------------------------------------------------------------------------
__global__ void k_bias_act(void *y, int ybf, const void *b, int bbf, void *pre, int pbf, int64_t M, int64_t N,
                           int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M * N) return;
    float v = ldv(y, ybf, i) + (b ? ldv(b, bbf, i % N) : 0.0f);
    if (pre) stv(pre, pbf, i, v);
    stv(y, ybf, i, act_f(v, act));
}

// Row-major y[M,N] = x[M,K] · w[N,K]^T  ==  column-major y^T = (w^T)^T x^T.
static void gemm_xwt(void *y, cudaDataType_t ty, const void *x, const void *w, cudaDataType_t tin, int64_t M,
                     int64_t N, int64_t K, float alpha, float beta) {
    CHECK_CUBLAS(cublasGemmEx(nn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w, tin, (int)K,
                              x, tin, (int)K, &beta, y, ty, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ---- cuBLASLt: the GEMM with its bias / GELU epilogue in one kernel ------------------------------
static cublasLtHandle_t nn_cuda_blaslt(void) {
    static cublasLtHandle_t h = NULL;
    if (!h) CHECK_CUBLAS(cublasLtCreate(&h));
    return h;
}

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
static void *lt_workspace(void) { // one buffer for every Lt GEMM (all on the default stream)
    static void *p = NULL;
    if (!p) p = nn_cuda_malloc(LT_WORKSPACE_BYTES, "cuBLASLt workspace");
    return p;
}

static long long lt_matmuls = 0;
extern "C" long long nn_cuda_matmul_lt_count(void) { return lt_matmuls; }

// ASVR_NO_CUBLASLT=1 (anything but empty or "0"): GEMM + separate epilogue kernel. Read on every call,
// so a test can compare both paths in one process.
static int lt_disabled(void) {
    const char *e = getenv("ASVR_NO_CUBLASLT");
    return e && *e && strcmp(e, "0") != 0;
}

// The heuristic's answer per GEMM shape, storage types and epilogue, asked once per shape (a step
// repeats the same few shapes; the query costs far more than the descriptors). The newest shapes
// replace the oldest when the table is full.
typedef struct {
    int valid, ok;
    int64_t M, N, K;
    int wbf, ybf;
    uint32_t epi, align[3]; /* the alignment of w, x and y the algorithm was chosen for */
    cublasLtMatmulAlgo_t algo;
} lt_plan;
#define LT_PLANS 64
static lt_plan *lt_find(int64_t M, int64_t N, int64_t K, int wbf, int ybf, uint32_t epi, const uint32_t *align) {
    static lt_plan plans[LT_PLANS];
    static int next = 0;
    for (int i = 0; i < LT_PLANS; i++) {
        lt_plan *p = &plans[i];
        if (p->valid && p->M == M && p->N == N && p->K == K && p->wbf == wbf && p->ybf == ybf && p->epi == epi &&
            memcmp(p->align, align, sizeof p->align) == 0)
            return p;
    }
    lt_plan *p = &plans[next];
    next = (next + 1) % LT_PLANS;
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->wbf = wbf, p->ybf = ybf, p->epi = epi;
    memcpy(p->align, align, sizeof p->align);
    return p;
}

// The largest power of two up to 256 dividing the address (cuBLASLt assumes 256 unless told less).
static uint32_t lt_alignment(const void *ptr) {
    uintptr_t a = (uintptr_t)ptr;
    uint32_t al = 256;
    while (al > 1 && a % al) al >>= 1;
    return al;
}

// y = act(x·w^T + b) with pre = x·w^T + b through one cublasLtMatmul, in the column-major view of
// gemm_xwt: D = y^T [N, M] (ld N) = op(A) B with A = w ([K, N], ld K, transposed) and B = x^T
// ([K, M], ld K); the bias has D's row count N; the GELU aux output has D's layout, so with ld N
// it is pre [M, N] row-major. Returns 0 (nothing written) when this call is not for cuBLASLt: no
// bias and no tanh GELU, the erf GELU (cuBLASLt's GELU is the tanh form), a bias or pre in another
// dtype than y (the epilogue's defaults), pre without a GELU or with N % 8 != 0 (the aux leading
// dimension must be a multiple of 8), or no algorithm offered by the heuristic.
static int matmul_lt(tensor *y, const void *x, const tensor *w, const tensor *b, nn_act act, tensor *pre,
                     int64_t M, int64_t N, int64_t K) {
    int gelu = act == NN_ACT_GELU_TANH;
    if (act == NN_ACT_GELU_ERF || (!b && !gelu) || lt_disabled()) return 0;
    if (b && b->dtype != y->dtype) return 0;
    if (pre && (!gelu || pre->dtype != y->dtype || N % 8 != 0)) return 0;
    /* views into the middle of an arena tensor can start anywhere: the algorithm is chosen for the
     * operands' actual alignment, and an epilogue vector (bias, aux) below 16 bytes takes the fallback */
    if ((b && lt_alignment(b->data) < 16) || (pre && lt_alignment(pre->data) < 16)) return 0;
    const uint32_t align[3] = {lt_alignment(w->data), lt_alignment(x), lt_alignment(y->data)};
    cublasLtEpilogue_t epi = gelu ? (pre ? (b ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                                         : (b ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU))
                                  : CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    CHECK_CUBLAS(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    uint32_t epv = (uint32_t)epi;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epv, sizeof epv));
    if (b) {
        const void *bp = b->data;
        CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
    }
    if (pre) {
        void *ap = pre->data;
        int64_t ald = N;
        CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &ap, sizeof ap));
        CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ald, sizeof ald));
    }
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&la, cuty(w), (uint64_t)K, (uint64_t)N, K));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&lb, cuty(w), (uint64_t)K, (uint64_t)M, K));
    CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&ld, cuty(y), (uint64_t)N, (uint64_t)M, N));
    CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsb = LT_WORKSPACE_BYTES;
    CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t align_val[4] = {align[0], align[1], align[2], align[2]}; /* A = w, B = x, C = D = y */
    for (int i = 0; i < 4; i++)
        CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align_val[i], sizeof align_val[i]));
    lt_plan *pl = lt_find(M, N, K, isbf(w), isbf(y), epv, align);
    if (!pl->valid) { // first GEMM of this shape: ask the heuristic once
        cublasLtMatmulHeuristicResult_t res;
        memset(&res, 0, sizeof res);
        int found = 0;
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(nn_cuda_blaslt(), desc, la, lb, ld, ld, pref, 1, &res, &found);
        pl->ok = st == CUBLAS_STATUS_SUCCESS && found > 0 && res.state == CUBLAS_STATUS_SUCCESS;
        pl->algo = res.algo;
        pl->valid = 1;
    }
    int ok = pl->ok;
    if (ok) {
        const float one = 1.0f, zero = 0.0f;
        CHECK_CUBLAS(cublasLtMatmul(nn_cuda_blaslt(), desc, &one, w->data, la, x, lb, &zero, y->data, ld, y->data, ld,
                                    &pl->algo, lt_workspace(), LT_WORKSPACE_BYTES, 0));
        lt_matmuls++;
    }
    CHECK_CUBLAS(cublasLtMatmulPreferenceDestroy(pref));
    CHECK_CUBLAS(cublasLtMatrixLayoutDestroy(ld));
    CHECK_CUBLAS(cublasLtMatrixLayoutDestroy(lb));
    CHECK_CUBLAS(cublasLtMatrixLayoutDestroy(la));
    CHECK_CUBLAS(cublasLtMatmulDescDestroy(desc));
    return ok;
}

static void matmul_raw(tensor *y, const void *x, const tensor *w, const tensor *b, nn_act act, tensor *pre,
                       int64_t M, int64_t K) {
    int64_t N = w->shape[0];
    CHECK(!isbf(y) || isbf(w), "", "cuda matmul: bf16 output '%s' needs bf16 weights", y->name);
    if (matmul_lt(y, x, w, b, act, pre, M, N, K)) return;
    gemm_xwt(y->data, cuty(y), x, w->data, cuty(w), M, N, K, 1.0f, 0.0f);
    if (b || pre || act != NN_ACT_NONE) {
        k_bias_act<<<blocks(M * N), NT>>>(y->data, isbf(y), b ? b->data : NULL, isbf(b), pre ? pre->data : NULL,
                                          isbf(pre), M, N, (int)act);
        CHECK_CUDA(cudaGetLastError());
    }
}

static size_t scratch_cap[NN_CUDA_SCRATCH_SLOTS];
static void *scratch_ptr[NN_CUDA_SCRATCH_SLOTS];

void *nn_cuda_scratch(int slot, size_t bytes) {
    CHECK(slot >= 0 && slot < NN_CUDA_SCRATCH_SLOTS, "", "nn_cuda_scratch: slot %d", slot);
    if (bytes > scratch_cap[slot]) {
        if (scratch_ptr[slot]) nn_cuda_free(scratch_ptr[slot]);
        scratch_cap[slot] = bytes;
        scratch_ptr[slot] = nn_cuda_malloc(bytes, "operand conversion scratch");
    }
    return scratch_ptr[slot];
}

extern "C" size_t nn_cuda_scratch_bytes(void) {
    size_t n = 0;
    for (int i = 0; i < NN_CUDA_SCRATCH_SLOTS; i++) n += scratch_cap[i];
    return n;
}

// t's data in the storage type want_bf (1: bf16, 0: f32): t itself when it already is, else a copy
// converted into scratch slot `slot`.
const void *nn_cuda_as_type(const tensor *t, int want_bf, int slot) {
    if (isbf(t) == want_bf) return t->data;
    int64_t n = tensor_numel(t);
    void *s = nn_cuda_scratch(slot, (size_t)n * (want_bf ? 2 : 4));
    k_convert<<<blocks(n), NT>>>(s, want_bf, t->data, isbf(t), n);
    CHECK_CUDA(cudaGetLastError());
    return s;
}

// A GEMM runs in the weights' storage type; an activation in the other float type (f32 activations
// against the bf16 weight copies of mixed-precision training) is converted into scratch first.
extern "C" void cuda_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act,
                            tensor *pre) {
    matmul_raw(y, nn_cuda_as_type(x, isbf(w), 0), w, b, act, pre, tensor_rows(x), tensor_cols(x));
}

// y[g] = act(x[g] · w[g]^T) for x [G,M,K], w [G,N,K]: one strided batched GEMM (the column-major view
// of gemm_xwt per group), then the activation / pre copy as matmul_raw's fallback does it.
extern "C" void cuda_matmul_batched(tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre) {
    int64_t G = x->shape[0], M = x->shape[1], K = x->shape[2], N = w->shape[1];
    CHECK(!isbf(y) || isbf(w), "", "cuda batched matmul: bf16 output '%s' needs bf16 weights", y->name);
    const float one = 1.0f, zero = 0.0f;
    const void *xw = nn_cuda_as_type(x, isbf(w), 0); // in the weights' type, as cuda_matmul does
    CHECK_CUBLAS(cublasGemmStridedBatchedEx(nn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
                                            w->data, cuty(w), (int)K, (long long)(N * K), xw, cuty(w), (int)K,
                                            (long long)(M * K), &zero, y->data, cuty(y), (int)N, (long long)(M * N),
                                            (int)G, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (pre || act != NN_ACT_NONE) {
        k_bias_act<<<blocks(G * M * N), NT>>>(y->data, isbf(y), (const void *)NULL, 0, pre ? pre->data : NULL,
                                              isbf(pre), G * M, N, (int)act);
        CHECK_CUDA(cudaGetLastError());
    }
}

// ---- elementwise -------------------------------------------------------------------------------
__global__ void k_gelu(void *y, int ybf, const void *x, int xbf, int64_t n, int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(y, ybf, i, act_f(ldv(x, xbf, i), act));
}
__global__ void k_add(void *y, int ybf, const void *a, int abf, const void *b, int bbf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(y, ybf, i, ldv(a, abf, i) + ldv(b, bbf, i));
}
__global__ void k_fill(void *y, int ybf, int64_t n, float v) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(y, ybf, i, v);
}

extern "C" void cuda_gelu(tensor *y, const tensor *x, nn_act act) {
    int64_t n = tensor_numel(x);
    k_gelu<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), n, (int)act);
    CHECK_CUDA(cudaGetLastError());
}
extern "C" void cuda_add(tensor *y, const tensor *a, const tensor *b) {
    int64_t n = tensor_numel(y);
    k_add<<<blocks(n), NT>>>(y->data, isbf(y), a->data, isbf(a), b->data, isbf(b), n);
    CHECK_CUDA(cudaGetLastError());
}
extern "C" void cuda_copy(tensor *y, const tensor *x) {
    if (y->dtype != x->dtype) { // f32 <-> bf16 (ops.c checked both are float types)
        int64_t n = tensor_numel(x);
        k_convert<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), n);
        CHECK_CUDA(cudaGetLastError());
        return;
    }
    if (y->data != x->data) CHECK_CUDA(cudaMemcpy(y->data, x->data, tensor_nbytes(x), cudaMemcpyDeviceToDevice));
}
extern "C" void cuda_fill(tensor *t, float value) {
    int64_t n = tensor_numel(t);
    k_fill<<<blocks(n), NT>>>(t->data, isbf(t), n, value);
    CHECK_CUDA(cudaGetLastError());
}

// ---- norms (one block per row) -----------------------------------------------------------------
__global__ void k_layernorm(void *y, int ybf, const void *x, int xbf, const void *w, int wbf, const void *b,
                            int bbf, float eps, float *mean, float *rstd, int64_t C) {
    int64_t r = blockIdx.x;
    const int64_t off = r * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) s += ldv(x, xbf, off + j);
    float mu = block_sum(s) / (float)C;
    float v = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float d = ldv(x, xbf, off + j) - mu;
        v += d * d;
    }
    float rs = rsqrtf(block_sum(v) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += NT)
        stv(y, ybf, off + j, (ldv(x, xbf, off + j) - mu) * rs * ldv(w, wbf, j) + ldv(b, bbf, j));
    if (threadIdx.x == 0) {
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
    }
}

__global__ void k_rmsnorm(void *y, int ybf, const void *x, int xbf, const void *w, int wbf, float eps, float *rstd,
                          int64_t C) {
    int64_t r = blockIdx.x;
    const int64_t off = r * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float t = ldv(x, xbf, off + j);
        s += t * t;
    }
    float rs = rsqrtf(block_sum(s) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += NT) stv(y, ybf, off + j, ldv(x, xbf, off + j) * rs * ldv(w, wbf, j));
    if (threadIdx.x == 0 && rstd) rstd[r] = rs;
}

// Residual add + RMSNorm, one block per row: r = a + b is stored and read back as stored (bf16
// rounding as op_add then op_rmsnorm), its squares summed in k_rmsnorm's order; then y. Every element
// is read and written by one thread only, so r and y may alias a or b.
__global__ void k_add_rmsnorm(void *r, int rbf, void *y, int ybf, const void *a, int abf, const void *b, int bbf,
                              const void *w, int wbf, float eps, float *rstd, int64_t C) {
    int64_t row = blockIdx.x;
    const int64_t off = row * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        stv(r, rbf, off + j, ldv(a, abf, off + j) + ldv(b, bbf, off + j));
        float t = ldv(r, rbf, off + j);
        s += t * t;
    }
    float rs = rsqrtf(block_sum(s) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += NT) stv(y, ybf, off + j, ldv(r, rbf, off + j) * rs * ldv(w, wbf, j));
    if (threadIdx.x == 0 && rstd) rstd[row] = rs;
}

extern "C" void cuda_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                               tensor *mean, tensor *rstd) {
    int64_t R = tensor_rows(x), C = tensor_cols(x);
    k_layernorm<<<(unsigned)R, NT>>>(y->data, isbf(y), x->data, isbf(x), w->data, isbf(w), b->data, isbf(b), eps,
                                     mean ? (float *)mean->data : NULL, rstd ? (float *)rstd->data : NULL, C);
    CHECK_CUDA(cudaGetLastError());
}

extern "C" void cuda_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd) {
    int64_t R = tensor_rows(x), C = tensor_cols(x);
    k_rmsnorm<<<(unsigned)R, NT>>>(y->data, isbf(y), x->data, isbf(x), w->data, isbf(w), eps,
                                   rstd ? (float *)rstd->data : NULL, C);
    CHECK_CUDA(cudaGetLastError());
}

extern "C" void cuda_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                                 tensor *rstd) {
    int64_t R = tensor_rows(a), C = tensor_cols(a);
    k_add_rmsnorm<<<(unsigned)R, NT>>>(r->data, isbf(r), y->data, isbf(y), a->data, isbf(a), b->data, isbf(b),
                                       w->data, isbf(w), eps, rstd ? (float *)rstd->data : NULL, C);
    CHECK_CUDA(cudaGetLastError());
}

// ---- attention (one block per (query row, head, batch)) ---------------------------------------
__global__ void k_attention(void *out, int obf, const void *q, int qbf, const void *k, int kbf, const void *v,
                            int vbf, int64_t T, int H, int group, int64_t Dh, float scale, int causal, float *att) {
    extern __shared__ float s[];
    int64_t i = blockIdx.x, b = blockIdx.z;
    int h = blockIdx.y, g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    int64_t qoff = (b * T + i) * HD + h * Dh;
    int64_t n = causal ? i + 1 : T;
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float d = -FLT_MAX;
        if (j < n) {
            int64_t koff = (b * T + j) * KVD + g * Dh;
            float acc = 0.0f;
            for (int64_t t = 0; t < Dh; t++) acc += ldv(q, qbf, qoff + t) * ldv(k, kbf, koff + t);
            d = acc * scale;
            mx = fmaxf(mx, d);
        }
        s[j] = d;
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float e = j < n ? __expf(s[j] - mx) : 0.0f;
        s[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum);
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        s[j] *= inv;
        if (att) att[((b * H + h) * T + i) * T + j] = s[j];
    }
    __syncthreads();
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++) acc += s[j] * ldv(v, vbf, (b * T + j) * KVD + g * Dh + t);
        stv(out, obf, qoff + t, acc);
    }
}

// Attention on the tensor cores, used when the caller keeps the probabilities att [B,H,T,T] (f32):
//   S = scale · Q_h K_g^T for every (image, head) in one batched GEMM into att (fp32 out),
//   a row softmax in place (causal mask; a bf16 copy of P when V is bf16, for the second GEMM),
//   O_h = P_h V_g in a second batched GEMM straight into out's [B,T,H*Dh] layout.
// The pointer arrays of the batched GEMMs are built by a small kernel (GQA: head h reads kv head
// h / group). Memory: att plus, for bf16 V, a grow-only B·H·T² bf16 buffer.
__global__ void k_attn_ptrs(const void **qp, const void **kp, const void **vp, void **sp, const void **pp, void **op,
                            const char *q, const char *k, const char *v, char *s, const char *pb, char *o, int64_t T,
                            int H, int group, int64_t Dh, size_t qes, size_t kves, size_t pes, int64_t BH) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BH) return;
    int64_t b = i / H, h = i % H, g = h / group, Hkv = H / group;
    qp[i] = q + (size_t)((b * T * H + h) * Dh) * qes;
    kp[i] = k + (size_t)((b * T * Hkv + g) * Dh) * kves;
    vp[i] = v + (size_t)((b * T * Hkv + g) * Dh) * kves;
    sp[i] = s + (size_t)(i * T * T) * sizeof(float);
    pp[i] = pb + (size_t)(i * T * T) * pes;
    op[i] = o + (size_t)((b * T * H + h) * Dh) * qes;
}

// One block per row of S (b, h, i): mask, max, exp, sum; P in place (f32) and optionally as bf16.
__global__ void k_attn_softmax(float *s, __nv_bfloat16 *pb, int64_t T, int causal) {
    int64_t r = blockIdx.x, i = r % T;
    float *row = s + r * T;
    int64_t n = causal ? i + 1 : T;
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < n; j += NT) mx = fmaxf(mx, row[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += NT) sum += __expf(row[j] - mx);
    float inv = 1.0f / block_sum(sum);
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float p = j < n ? __expf(row[j] - mx) * inv : 0.0f;
        row[j] = p;
        if (pb) pb[r * T + j] = __float2bfloat16(p);
    }
}

static void *attn_buffer(size_t bytes) { // grow-only, for the bf16 probabilities and pointer arrays
    static void *p = NULL;
    static size_t cap = 0;
    if (bytes > cap) {
        if (p) nn_cuda_free(p);
        cap = bytes + bytes / 4;
        p = nn_cuda_malloc(cap, "attention workspace");
    }
    return p;
}

static void attention_gemm(tensor *out, const tensor *q, const tensor *k, const tensor *v, int H, int Hkv, float scale,
                           int causal, float *att) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / H, BH = B * H;
    CHECK(isbf(q) == isbf(k) && isbf(k) == isbf(v) && isbf(q) == isbf(out), "",
          "cuda attention: q, k, v and out must share a dtype (q '%s' is %s)", q->name, nn_dtype_name(q->dtype));
    int bf = isbf(v);
    size_t es = bf ? 2 : 4, pes = bf ? 2 : 4;
    size_t ptr_bytes = (size_t)BH * 6 * sizeof(void *), pbytes = bf ? (size_t)BH * T * T * 2 : 0;
    char *ws = (char *)attn_buffer(ptr_bytes + 256 + pbytes);
    const void **qp = (const void **)ws, **kp = qp + BH, **vp = kp + BH, **pp = vp + BH;
    void **sp = (void **)(pp + BH), **op = sp + BH;
    __nv_bfloat16 *pb = bf ? (__nv_bfloat16 *)(ws + ((ptr_bytes + 255) / 256) * 256) : NULL;
    k_attn_ptrs<<<blocks(BH), NT>>>(qp, kp, vp, sp, pp, op, (const char *)q->data, (const char *)k->data,
                                    (const char *)v->data, (char *)att, bf ? (const char *)pb : (const char *)att,
                                    (char *)out->data, T, H, H / Hkv, Dh, es, es, pes, BH);
    CHECK_CUDA(cudaGetLastError());
    cudaDataType_t ty = bf ? CUDA_R_16BF : CUDA_R_32F;
    int ldq = (int)(H * Dh), ldkv = (int)(Hkv * Dh);
    float zero = 0.0f, one = 1.0f;
    // S^T (column-major) = K Q^T: row-major S[i, j] = q_i · k_j
    CHECK_CUBLAS(cublasGemmBatchedEx(nn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)T, (int)T, (int)Dh, &scale, kp, ty,
                                     ldkv, qp, ty, ldq, &zero, sp, CUDA_R_32F, (int)T, (int)BH, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    k_attn_softmax<<<(unsigned)(BH * T), NT>>>(att, pb, T, causal);
    CHECK_CUDA(cudaGetLastError());
    // O^T (column-major, ld H*Dh) = V^T P^T: row-major O = P V
    CHECK_CUBLAS(cublasGemmBatchedEx(nn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)Dh, (int)T, (int)T, &one, vp, ty,
                                     ldkv, pp, ty, (int)T, &zero, op, ty, ldq, (int)BH, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

extern "C" void cuda_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                               int n_kv_heads, float scale, int causal, tensor *att) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    int keep = tensor_numel(att) == B * n_heads * T * T;
    if (keep && att->dtype == NN_F32) { // the probabilities are kept anyway: use the tensor cores
        attention_gemm(out, q, k, v, n_heads, n_kv_heads, scale, causal, (float *)att->data);
        return;
    }
    CHECK(T <= 12288, "split the sequence", "cuda attention: T = %lld exceeds the kernel's 12288", (long long)T);
    size_t shmem = (size_t)T * sizeof(float);
    if (shmem > 48 * 1024)
        CHECK_CUDA(cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem));
    dim3 grid((unsigned)T, (unsigned)n_heads, (unsigned)B);
    k_attention<<<grid, NT, shmem>>>(out->data, isbf(out), q->data, isbf(q), k->data, isbf(k), v->data, isbf(v), T,
                                     n_heads, n_heads / n_kv_heads, Dh, scale, causal, (float *)NULL);
    CHECK_CUDA(cudaGetLastError());
}

// ---- patch embedding ---------------------------------------------------------------------------
__global__ void k_im2col(void *cols, int cbf, const void *img, int ibf, int64_t B, int64_t Cin, int64_t H,
                         int64_t W, int64_t P) {
    int64_t Wp = W / P, NP = (H / P) * Wp, KK = Cin * P * P;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * NP * KK) return;
    int64_t col = i % KK, row = i / KK;
    int64_t bi = row / NP, pidx = row % NP, py = pidx / Wp, px = pidx % Wp;
    int64_t c = col / (P * P), ky = (col / P) % P, kx = col % P;
    stv(cols, cbf, i, ldv(img, ibf, ((bi * Cin + c) * H + py * P + ky) * W + px * P + kx));
}

extern "C" void cuda_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                                 tensor *cols) {
    int64_t B = img->shape[0], Cin = img->shape[1], H = img->shape[2], W = img->shape[3];
    int64_t n = tensor_numel(cols);
    CHECK(cols->dtype == w->dtype, "", "cuda patch embed: cols '%s' and weight '%s' must share a dtype",
          cols->name, w->name);
    k_im2col<<<blocks(n), NT>>>(cols->data, isbf(cols), img->data, isbf(img), B, Cin, H, W, patch);
    CHECK_CUDA(cudaGetLastError());
    matmul_raw(y, cols->data, w, b, NN_ACT_NONE, NULL, tensor_rows(cols), tensor_cols(cols));
}

// ---- residual quantisation ---------------------------------------------------------------------
__global__ void k_row_sqnorm(float *n, const void *c, int cbf, int64_t C) {
    int64_t r = blockIdx.x;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float t = ldv(c, cbf, r * C + j);
        s += t * t;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) n[r] = s;
}

extern "C" void cuda_row_sqnorm(tensor *n, const tensor *c) {
    k_row_sqnorm<<<(unsigned)tensor_rows(c), NT>>>((float *)n->data, c->data, isbf(c), tensor_cols(c));
    CHECK_CUDA(cudaGetLastError());
}

// dist[i, k] = |x_i|^2 + |c_k|^2 (the GEMM then adds -2 x·c).
__global__ void k_vq_init(float *dist, const void *x, int xbf, const float *cn, int64_t C, int64_t K) {
    int64_t i = blockIdx.x;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float t = ldv(x, xbf, i * C + j);
        s += t * t;
    }
    s = block_sum(s);
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
        CHECK_CUDA(cudaGetLastError());
        gemm_xwt(dist->data, CUDA_R_32F, x, codebook->data, cuty(codebook), rows, K, C, -2.0f, 1.0f);
        k_vq_pick<<<(unsigned)rows, NT>>>((const float *)dist->data, K, x, isbf(residual), codebook->data,
                                          isbf(codebook), C, codes->data, codes->dtype == NN_U16, D, depth, r0);
        CHECK_CUDA(cudaGetLastError());
    }
}
