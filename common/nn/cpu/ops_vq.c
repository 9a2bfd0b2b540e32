/* ops_vq.c — the CPU residual-quantisation family (fp32): codebook row norms, the VQ step through a
 * distance matrix (sgemm) and the fused step that reduces each row's distances on the fly.
 * Arguments were validated by ops.c. */
#include <cblas.h>
#include <float.h>
#include <string.h>

#include "nn/cpu/cpu_common.h"

void cpu_row_sqnorm(tensor *n, const tensor *c) {
    int64_t R = tensor_rows(c), C = tensor_cols(c);
    const float *pc = F(c);
    for (int64_t r = 0; r < R; r++) {
        float s = 0.0f;
        for (int64_t j = 0; j < C; j++) s += pc[r * C + j] * pc[r * C + j];
        F(n)[r] = s;
    }
}

void cpu_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                 int depth, tensor *dist) {
    int64_t N = tensor_rows(residual), C = tensor_cols(residual), K = codebook->shape[0];
    int64_t D = tensor_cols(codes), R = tensor_rows(dist);
    float *res = F(residual), *pd = F(dist);
    const float *cb = F(codebook), *cn = F(cnorm);
    for (int64_t r0 = 0; r0 < N; r0 += R) {
        int64_t rows = N - r0 < R ? N - r0 : R;
        float *x = res + r0 * C;
        /* dist = (|x|^2 + |c|^2) - 2 x·c^T, the order torch.addmm uses. */
        for (int64_t i = 0; i < rows; i++) {
            float xn = 0.0f;
            for (int64_t j = 0; j < C; j++) xn += x[i * C + j] * x[i * C + j];
            for (int64_t kk = 0; kk < K; kk++) pd[i * K + kk] = xn + cn[kk];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)K, (int)C, -2.0f, x,
                    (int)C, cb, (int)C, 1.0f, pd, (int)K);
        for (int64_t i = 0; i < rows; i++) {
            const float *d = pd + i * K;
            int64_t best = 0;
            float bv = d[0];
            for (int64_t kk = 1; kk < K; kk++)
                if (d[kk] < bv) { /* strict: the lowest index wins a tie */
                    bv = d[kk];
                    best = kk;
                }
            int64_t n = r0 + i;
            if (codes->dtype == NN_U16) ((uint16_t *)codes->data)[n * D + depth] = (uint16_t)best;
            else ((int32_t *)codes->data)[n * D + depth] = (int32_t)best;
            const float *c = cb + best * C;
            for (int64_t j = 0; j < C; j++) x[i * C + j] -= c[j];
        }
    }
}

/* Row by row: |x|^2, then each codebook row's distance |x|^2 + |c|^2 - 2 x·c (sums in index order, fp32)
 * kept only as the running minimum (strict <: the lowest index wins a tie); the reference for the CUDA
 * kernel, which computes the same expression per row. */
void cpu_vq_fused(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth) {
    int64_t N = tensor_rows(residual), C = tensor_cols(residual), K = codebook->shape[0], D = tensor_cols(codes);
    const float *cb = F(codebook), *cn = F(cnorm);
    for (int64_t n = 0; n < N; n++) {
        float *x = F(residual) + n * C;
        float xn = 0.0f;
        for (int64_t j = 0; j < C; j++) xn += x[j] * x[j];
        float bv = FLT_MAX;
        int64_t best = -1;
        for (int64_t kk = 0; kk < K; kk++) {
            float dot = 0.0f;
            for (int64_t j = 0; j < C; j++) dot += x[j] * cb[kk * C + j];
            float d = xn + cn[kk] - 2.0f * dot;
            if (d < bv) bv = d, best = kk;
        }
        if (best < 0) best = 0; /* no finite distance */
        if (codes->dtype == NN_U16) ((uint16_t *)codes->data)[n * D + depth] = (uint16_t)best;
        else ((int32_t *)codes->data)[n * D + depth] = (int32_t)best;
        const float *c = cb + best * C;
        for (int64_t j = 0; j < C; j++) x[j] -= c[j];
    }
}
