/* ops_norms.c — the CPU norm family (fp32, statistics in double): LayerNorm, RMSNorm and its backward,
 * the residual add + RMSNorm, GroupNorm. Arguments were validated by ops.c. */
#include <string.h>

#include "nn/cpu/cpu_common.h"

void cpu_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                   tensor *mean, tensor *rstd) {
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    const float *px = F(x), *pw = F(w), *pb = F(b);
    float *py = F(y);
    for (int64_t r = 0; r < R; r++) {
        const float *xr = px + r * C;
        float *yr = py + r * C;
        double s = 0.0;
        for (int64_t j = 0; j < C; j++) s += xr[j];
        double mu = s / (double)C, v = 0.0;
        for (int64_t j = 0; j < C; j++) {
            double d = xr[j] - mu;
            v += d * d;
        }
        float m = (float)mu, rs = (float)(1.0 / sqrt(v / (double)C + (double)eps));
        for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - m) * rs * pw[j] + pb[j];
        if (mean) F(mean)[r] = m;
        if (rstd) F(rstd)[r] = rs;
    }
}

void cpu_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd) {
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    const float *px = F(x), *pw = F(w);
    float *py = F(y);
    for (int64_t r = 0; r < R; r++) {
        const float *xr = px + r * C;
        float *yr = py + r * C;
        double ss = 0.0;
        for (int64_t j = 0; j < C; j++) ss += (double)xr[j] * xr[j];
        float rs = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        for (int64_t j = 0; j < C; j++) yr[j] = xr[j] * rs * pw[j];
        if (rstd) F(rstd)[r] = rs;
    }
}

void cpu_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x,
                          const tensor *w, const tensor *rstd, int accumulate_dx) {
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    const float *px = F(x), *pw = F(w), *g = F(dy), *pr = F(rstd);
    float *o = F(dx), *pdw = F(dw);
    for (int64_t r = 0; r < R; r++) {
        const float *xr = px + r * C, *gr = g + r * C;
        float *orow = o + r * C;
        float rs = pr[r];
        double dot = 0.0; /* sum_j dy_j w_j x_j */
        for (int64_t j = 0; j < C; j++) dot += (double)gr[j] * pw[j] * xr[j];
        float c = (float)(dot / (double)C) * rs * rs;
        for (int64_t j = 0; j < C; j++) {
            float gj = gr[j]; /* read before dx (which may alias dy) is written */
            if (pdw) pdw[j] += gj * xr[j] * rs;
            float d = rs * (gj * pw[j] - xr[j] * c);
            orow[j] = accumulate_dx ? orow[j] + d : d;
        }
    }
}

/* Exactly op_add then op_rmsnorm: the fusion is a CUDA matter (one pass over memory). */
void cpu_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                     tensor *rstd) {
    cpu_add(r, a, b);
    cpu_rmsnorm(y, r, w, eps, rstd);
}

void cpu_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups, float eps) {
    int64_t B = x->shape[0], P = x->shape[1], C = x->shape[2], cg = C / groups;
    const float *px = F(x), *pw = F(w), *pb = F(b);
    float *py = F(y);
    for (int64_t bi = 0; bi < B; bi++) {
        const float *xb = px + bi * P * C;
        float *yb = py + bi * P * C;
        for (int64_t g = 0; g < groups; g++) {
            int64_t c0 = g * cg;
            double s = 0.0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = c0; c < c0 + cg; c++) s += xb[p * C + c];
            double mean = s / (double)(P * cg), v = 0.0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = c0; c < c0 + cg; c++) {
                    double d = xb[p * C + c] - mean;
                    v += d * d;
                }
            float m = (float)mean, r = (float)(1.0 / sqrt(v / (double)(P * cg) + (double)eps));
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = c0; c < c0 + cg; c++) yb[p * C + c] = (xb[p * C + c] - m) * r * pw[c] + pb[c];
        }
    }
}
