// cublasLt.h (dev/cuda_emu) — the part of cuBLASLt that common/nn/cuda/*.cu use, on the CPU stand-in
// of cuda_emu.h: a handle; matmul descriptors (compute 32F, scale 32F) with the attributes TRANSA,
// TRANSB, EPILOGUE, BIAS_POINTER, EPILOGUE_AUX_POINTER and EPILOGUE_AUX_LD; matrix layouts (type, rows,
// cols, leading dimension; column-major, no batch); a preference with MAX_WORKSPACE_BYTES; a heuristic
// that offers one algorithm for what cublasLtMatmul below can run; and cublasLtMatmul itself: the
// naive GEMM of cuda_emu.h, then the epilogue DEFAULT, BIAS, GELU, GELU_BIAS, GELU_AUX or GELU_AUX_BIAS
// (bias added before the GELU, aux = the GELU's input in D's type and layout with its own leading
// dimension, GELU = the tanh approximation).
// Honesty, as for the cuBLAS GEMMs: A, B, C (when beta != 0), D, bias, aux and a non-empty workspace
// must be device memory, alpha and beta host memory; attribute sizes must match; an attribute or an
// epilogue not listed here is NOT_SUPPORTED (never silently ignored); a missing bias or aux pointer for
// an epilogue that needs one, an aux leading dimension below D's rows or not a multiple of 8, layouts
// that do not fit op(A)·op(B) = D, C different from D, or a type combination cuBLAS's GemmEx refuses
// are INVALID_VALUE (at the heuristic and at the call).
// Not for: the build (the real build uses the CUDA toolkit's header), speed, cuBLASLt's own rounding.
#pragma once
#include "cuda_emu.h"

typedef enum {
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER = 11,
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD = 12,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26, // not emulated: setting it is NOT_SUPPORTED
} cublasLtMatmulDescAttributes_t;

typedef enum {
    CUBLASLT_EPILOGUE_DEFAULT = 1,
    CUBLASLT_EPILOGUE_RELU = 2, // not emulated
    CUBLASLT_EPILOGUE_BIAS = 4,
    CUBLASLT_EPILOGUE_GELU = 32,
    CUBLASLT_EPILOGUE_GELU_AUX = 32 | 128,
    CUBLASLT_EPILOGUE_GELU_BIAS = 32 | 4,
    CUBLASLT_EPILOGUE_GELU_AUX_BIAS = 32 | 128 | 4,
} cublasLtEpilogue_t;

typedef enum {
    CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0,
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, // uint32; the algorithms assume 256 when unset
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;

typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

struct emu_lt_handle { int magic; };
struct emu_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    void *aux = nullptr;
    int64_t aux_ld = 0;
};
struct emu_lt_layout { cudaDataType_t type; uint64_t rows, cols; int64_t ld; };
struct emu_lt_pref { uint64_t max_ws = 0; uint32_t align[4] = {256, 256, 256, 256}; }; // A, B, C, D
typedef emu_lt_handle *cublasLtHandle_t;
typedef emu_lt_desc *cublasLtMatmulDesc_t;
typedef emu_lt_layout *cublasLtMatrixLayout_t;
typedef emu_lt_pref *cublasLtMatmulPreference_t;

inline cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = new emu_lt_handle{0x17}; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }

inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED; // all we emulate
    *d = new emu_lt_desc;
    (*d)->compute = compute, (*d)->scale = scale;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                                     const void *buf, size_t n) {
    if (!d || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
        if (n != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
        int32_t v;
        memcpy(&v, buf, n);
        if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
        (a == CUBLASLT_MATMUL_DESC_TRANSA ? d->transa : d->transb) = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        if (n != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
        uint32_t v;
        memcpy(&v, buf, n);
        if (v != CUBLASLT_EPILOGUE_DEFAULT && v != CUBLASLT_EPILOGUE_BIAS && v != CUBLASLT_EPILOGUE_GELU &&
            v != CUBLASLT_EPILOGUE_GELU_AUX && v != CUBLASLT_EPILOGUE_GELU_BIAS && v != CUBLASLT_EPILOGUE_GELU_AUX_BIAS)
            return CUBLAS_STATUS_NOT_SUPPORTED;
        d->epilogue = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (n != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias, buf, n);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
        if (n != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->aux, buf, n);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
        if (n != sizeof(int64_t)) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->aux_ld, buf, n);
        return CUBLAS_STATUS_SUCCESS;
    default:
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows,
                                                 uint64_t cols, int64_t ld) {
    if (type != CUDA_R_32F && type != CUDA_R_16BF) return CUBLAS_STATUS_NOT_SUPPORTED;
    *l = new emu_lt_layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }

inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) { *p = new emu_lt_pref; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a,
                                                           const void *buf, size_t n) {
    if (!p || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    if (a >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        uint32_t v;
        if (n != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&v, buf, n);
        if (v == 0 || (v & (v - 1)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
        p->align[a - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = v;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (a != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (n != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(&p->max_ws, buf, n);
    return CUBLAS_STATUS_SUCCESS;
}

namespace emu {
inline bool lt_has_bias(uint32_t e) { return (e & CUBLASLT_EPILOGUE_BIAS) != 0; }
inline bool lt_has_gelu(uint32_t e) { return (e & CUBLASLT_EPILOGUE_GELU) != 0; }
inline bool lt_has_aux(uint32_t e) { return (e & 128) != 0; }
// The problem a descriptor and its layouts describe, checked: m, n, k of D[m,n] = op(A)[m,k] op(B)[k,n].
inline cublasStatus_t lt_check(const emu_lt_desc *d, const emu_lt_layout *A, const emu_lt_layout *B,
                               const emu_lt_layout *C, const emu_lt_layout *D, int64_t *m, int64_t *n, int64_t *k) {
    if (!d || !A || !B || !C || !D) return CUBLAS_STATUS_INVALID_VALUE;
    *m = (int64_t)D->rows, *n = (int64_t)D->cols;
    int64_t am = d->transa == CUBLAS_OP_N ? (int64_t)A->rows : (int64_t)A->cols;
    int64_t ak = d->transa == CUBLAS_OP_N ? (int64_t)A->cols : (int64_t)A->rows;
    int64_t bk = d->transb == CUBLAS_OP_N ? (int64_t)B->rows : (int64_t)B->cols;
    int64_t bn = d->transb == CUBLAS_OP_N ? (int64_t)B->cols : (int64_t)B->rows;
    *k = ak;
    if (am != *m || bn != *n || bk != ak) return CUBLAS_STATUS_INVALID_VALUE;
    if (C->type != D->type || C->rows != D->rows || C->cols != D->cols || C->ld != D->ld) return CUBLAS_STATUS_INVALID_VALUE;
    for (const emu_lt_layout *l : {A, B, D})
        if (l->ld < (int64_t)(l->rows > 1 ? l->rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (A->type != B->type || (A->type == CUDA_R_32F && D->type != CUDA_R_32F)) return CUBLAS_STATUS_INVALID_VALUE;
    if (lt_has_bias(d->epilogue) && !d->bias) return CUBLAS_STATUS_INVALID_VALUE;
    if (lt_has_aux(d->epilogue) && (!d->aux || d->aux_ld < *m || d->aux_ld % 8 != 0)) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
inline float lt_gelu_tanh(float x) {
    float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}
inline void lt_st(void *p, cudaDataType_t t, int64_t i, float v) {
    if (t == CUDA_R_16BF) ((__nv_bfloat16 *)p)[i] = __float2bfloat16(v);
    else ((float *)p)[i] = v;
}
} // namespace emu

inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t A,
                                                     cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t C,
                                                     cublasLtMatrixLayout_t D, cublasLtMatmulPreference_t p, int requested,
                                                     cublasLtMatmulHeuristicResult_t results[], int *returned) {
    if (!h || !p || requested <= 0 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
    int64_t m, n, k;
    cublasStatus_t st = emu::lt_check(d, A, B, C, D, &m, &n, &k);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    memset(&results[0], 0, sizeof results[0]);
    results[0].algo.data[0] = 0xE3u; // the one algorithm: the naive loop
    for (int i = 0; i < 4; i++) results[0].algo.data[1 + i] = p->align[i]; // the alignment it may assume
    results[0].workspaceSize = p->max_ws < 4096 ? p->max_ws : 4096;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *Ap,
                                     cublasLtMatrixLayout_t A, const void *Bp, cublasLtMatrixLayout_t B, const void *beta,
                                     const void *Cp, cublasLtMatrixLayout_t C, void *Dp, cublasLtMatrixLayout_t D,
                                     const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes, cudaStream_t) {
    if (!h || !algo || algo->data[0] != 0xE3u) return CUBLAS_STATUS_INVALID_VALUE;
    int64_t m, n, k;
    cublasStatus_t st = emu::lt_check(d, A, B, C, D, &m, &n, &k);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    emu::device_scope ds;
    if (emu::is_dev(alpha) || emu::is_dev(beta)) { fprintf(stderr, "cuda_emu: cuBLASLt alpha/beta in device memory\n"); return CUBLAS_STATUS_INVALID_VALUE; }
    float al = *(const float *)alpha, be = *(const float *)beta;
    size_t des = D->type == CUDA_R_16BF ? 2 : 4;
    bool ok = (k == 0 || (emu::is_dev(Ap) && emu::is_dev(Bp))) && emu::is_dev(Dp, (size_t)(D->ld * (n - 1) + m) * des) &&
              (be == 0.0f || emu::is_dev(Cp)) && (ws_bytes == 0 || emu::is_dev(ws, ws_bytes)) &&
              (!emu::lt_has_bias(d->epilogue) || emu::is_dev(d->bias, (size_t)m * des)) &&
              (!emu::lt_has_aux(d->epilogue) || emu::is_dev(d->aux, (size_t)(d->aux_ld * (n - 1) + m) * des));
    if (!ok) {
        fprintf(stderr, "cuda_emu: cuBLASLt operand not in device memory (A %p, B %p, C %p, D %p, bias %p, aux %p, workspace %p)\n",
                Ap, Bp, Cp, Dp, d->bias, d->aux, ws);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    // A real algorithm may rely on the operand alignment its preference allowed (256 bytes by default):
    // an operand aligned less is an error the device would not report.
    const void *ops[4] = {Ap, Bp, be != 0.0f ? Cp : Dp, Dp};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)ops[i] % algo->data[1 + i] != 0) {
            fprintf(stderr, "cuda_emu: cuBLASLt operand %c at %p is not %llu-byte aligned, which the algorithm may assume "
                            "(set CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%c_BYTES)\n",
                    "ABCD"[i], ops[i], (unsigned long long)algo->data[1 + i], "ABCD"[i]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    // D = epilogue(alpha op(A) op(B) + beta C): one fp32 value per element, rounded once when stored.
    uint32_t e = d->epilogue;
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            float s = 0.0f;
            for (int64_t l = 0; l < k; l++) {
                float a = d->transa == CUBLAS_OP_N ? emu_ld(Ap, A->type, i + l * A->ld) : emu_ld(Ap, A->type, l + i * A->ld);
                float b = d->transb == CUBLAS_OP_N ? emu_ld(Bp, B->type, l + j * B->ld) : emu_ld(Bp, B->type, j + l * B->ld);
                s += a * b;
            }
            float v = al * s + (be != 0.0f ? be * emu_ld(Cp, C->type, i + j * C->ld) : 0.0f); // beta 0: C is not read
            if (emu::lt_has_bias(e)) v += emu_ld(d->bias, D->type, i);
            if (emu::lt_has_aux(e)) emu::lt_st(d->aux, D->type, i + j * d->aux_ld, v);
            if (emu::lt_has_gelu(e)) v = emu::lt_gelu_tanh(v);
            emu::lt_st(Dp, D->type, i + j * D->ld, v);
        }
    return CUBLAS_STATUS_SUCCESS;
}
