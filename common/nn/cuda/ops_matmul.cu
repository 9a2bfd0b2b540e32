// ops_matmul.cu — the CUDA matmul family: op_matmul, the per-group batched matmul and their backward.
// f32 or bf16 storage per tensor, fp32 accumulation; a GEMM runs in the weights' storage type, an operand
// in the other float type is converted into scratch first (nn_cuda_as_type). op_matmul with a bias and/or
// the tanh GELU runs as one cuBLASLt GEMM with the BIAS / GELU / GELU_BIAS epilogue (GELU_AUX(_BIAS)
// writes pre when asked for) — cuBLASLt's GELU is the tanh form, so the erf GELU keeps GemmEx + the
// epilogue kernel, as do the cases matmul_lt lists. Setting the environment variable ASVR_NO_CUBLASLT=1
// forces GemmEx + kernel everywhere (tests compare the two). Batched per-group matmul: one
// cublasGemmStridedBatchedEx. Backward: the activation's derivative in place over dy, then the gradient
// GEMMs; db as a column sum in a fixed order (deterministic). Arguments were validated by ops.c.
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- matmul ------------------------------------------------------------------------------------
__global__ void k_bias_act(void *y, int ybf, const void *b, int bbf, void *pre, int pbf, int64_t M, int64_t N,
                           int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M * N) return;
    float v = ldv(y, ybf, i) + (b ? ldv(b, bbf, i % N) : 0.0f);
    if (pre) stv(pre, pbf, i, v);
    stv(y, ybf, i, act_f(v, act));
}

void nn_cuda_bias_act(void *y, int ybf, const void *b, int bbf, void *pre, int pbf, int64_t M, int64_t N, int act) {
    k_bias_act<<<blocks(M * N), NT>>>(y, ybf, b, bbf, pre, pbf, M, N, act);
    LAUNCH_CHECK();
}

// ---- cuBLASLt: the GEMM with its bias / GELU epilogue in one kernel -----------------------------
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

void nn_cuda_matmul_raw(tensor *y, const void *x, const tensor *w, const tensor *b, nn_act act, tensor *pre,
                        int64_t M, int64_t K) {
    int64_t N = w->shape[0];
    CHECK(!isbf(y) || isbf(w), "", "cuda matmul: bf16 output '%s' needs bf16 weights", y->name);
    if (matmul_lt(y, x, w, b, act, pre, M, N, K)) return;
    nn_cuda_gemm_xwt(y->data, cuty(y), x, w->data, cuty(w), M, N, K, 1.0f, 0.0f);
    if (b || pre || act != NN_ACT_NONE)
        nn_cuda_bias_act(y->data, isbf(y), b ? b->data : NULL, isbf(b), pre ? pre->data : NULL, isbf(pre), M, N,
                         (int)act);
}

// A GEMM runs in the weights' storage type; an activation in the other float type (f32 activations
// against the bf16 weight copies of mixed-precision training) is converted into scratch first.
extern "C" void cuda_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act,
                            tensor *pre) {
    nn_cuda_matmul_raw(y, nn_cuda_as_type(x, isbf(w), 0), w, b, act, pre, tensor_rows(x), tensor_cols(x));
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
        k_bias_act<<<blocks(G * M * N), NT>>>(y->data, isbf(y), NULL, 0, pre ? pre->data : NULL,
                                              isbf(pre), G * M, N, (int)act);
        LAUNCH_CHECK();
    }
}

// ---- backward -----------------------------------------------------------------------------------

// dy *= act'(pre), in place.
__global__ void kt_act_backward(void *dy, int dbf, const void *pre, int pbf, int64_t n, int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(dy, dbf, i, ldv(dy, dbf, i) * act_grad(ldv(pre, pbf, i), act));
}

// db[j] += sum_i dy[i, j]: a block of COLSUM_X x COLSUM_Y threads owns 32 columns (x: the column, so a
// warp reads 32 consecutive values of a row); its 8 row lanes (y) sum rows lane, lane+8, ... and the 8
// partials are added in lane order (a fixed order: deterministic).
#define COLSUM_X 32
#define COLSUM_Y 8
__global__ void kt_colsum_add(void *db, int bbf, const void *dy, int dbf, int64_t M, int64_t N) {
    __shared__ float part[COLSUM_Y][COLSUM_X + 1];
    int c = threadIdx.x, lane = threadIdx.y;
    int64_t j = (int64_t)blockIdx.x * COLSUM_X + c;
    float s = 0.0f;
    if (j < N)
        for (int64_t i = lane; i < M; i += COLSUM_Y) s += ldv(dy, dbf, i * N + j);
    part[lane][c] = s;
    __syncthreads();
    if (lane == 0 && j < N) {
        float t = 0.0f;
        for (int l = 0; l < COLSUM_Y; l++) t += part[l][c];
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
        dim3 block(COLSUM_X, COLSUM_Y);
        kt_colsum_add<<<(unsigned)((N + COLSUM_X - 1) / COLSUM_X), block>>>(db->data, isbf(db), dy->data, isbf(dy), M, N);
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
