/* ops_matmul.c — the CPU matmul family (fp32, OpenBLAS sgemm): op_matmul with bias and GELU, the
 * per-group batched matmul, their backward, and the raw GEMM the conv ops share (cpu_gemm_xwt).
 * Arguments were validated by ops.c. */
#include <cblas.h>
#include <string.h>

#include "nn/cpu/cpu_common.h"

/* y[M,N] = x[M,K] · w[N,K]^T + b, on raw pointers. */
void cpu_gemm_xwt(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K) {
    if (b)
        for (int64_t i = 0; i < M; i++) memcpy(y + i * N, b, (size_t)N * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)K, w,
                (int)K, b ? 1.0f : 0.0f, y, (int)N);
}

void cpu_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre) {
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    cpu_gemm_xwt(F(y), F(x), F(w), F(b), M, N, K);
    if (pre) memcpy(pre->data, y->data, (size_t)(M * N) * sizeof(float));
    if (act != NN_ACT_NONE) apply_act(F(y), F(y), M * N, act);
}

void cpu_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                         const tensor *w, nn_act act, const tensor *pre, int accumulate_dx) {
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    float *g = F(dy);
    if (act == NN_ACT_GELU_TANH) {
        cpu_gelu_tanh_grad_array(g, g, F(pre), M * N, 0);
    } else if (act != NN_ACT_NONE) {
        const float *pp = F(pre);
        for (int64_t i = 0; i < M * N; i++) g[i] *= act_grad(pp[i], act);
    }
    if (dx) /* dx[M,K] (+)= dy[M,N] · w[N,K] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)K, (int)N, 1.0f, g, (int)N,
                    F(w), (int)K, accumulate_dx ? 1.0f : 0.0f, F(dx), (int)K);
    if (dw) /* dw[N,K] += dy^T[N,M] · x[M,K] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)K, (int)M, 1.0f, g, (int)N,
                    F(x), (int)K, 1.0f, F(dw), (int)K);
    if (db) {
        float *pb = F(db);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) pb[j] += g[i * N + j];
    }
}

/* Group g of a [G, rows, cols] tensor as a 2-d view (NULL stays NULL). */
static tensor *group_view(tensor *view, const tensor *t, int64_t g) {
    if (!t) return NULL;
    *view = tensor_index0(t, g);
    return view;
}

void cpu_matmul_batched(tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre) {
    for (int64_t g = 0; g < x->shape[0]; g++) {
        tensor yg, xg, wg, pg;
        cpu_matmul(group_view(&yg, y, g), group_view(&xg, x, g), group_view(&wg, w, g), NULL, act,
                   group_view(&pg, pre, g));
    }
}

void cpu_matmul_batched_backward(tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,
                                 nn_act act, const tensor *pre, int accumulate_dx) {
    for (int64_t g = 0; g < x->shape[0]; g++) {
        tensor dxg, dwg, dyg, xg, wg, pg;
        cpu_matmul_backward(group_view(&dxg, dx, g), group_view(&dwg, dw, g), NULL, group_view(&dyg, dy, g),
                            group_view(&xg, x, g), group_view(&wg, w, g), act,
                            act != NN_ACT_NONE ? group_view(&pg, pre, g) : NULL, accumulate_dx);
    }
}
