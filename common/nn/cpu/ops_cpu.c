/* ops_cpu.c — the CPU backend: fp32 reference implementations of the ops in ops.h.
 * GEMMs go through OpenBLAS (which threads them); the elementwise and row-wise ops are plain loops.
 * Arguments were validated by ops.c.
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/backend.h"

static float *F(const tensor *t) { return t ? (float *)t->data : NULL; }

static inline float gelu_tanh(float x) {
    const float beta = 0.7978845608028654f; /* sqrt(2/pi) */
    const float kappa = 0.044715f;
    float inner = beta * (x + kappa * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

static void apply_act(float *y, const float *x, int64_t n, nn_act act) {
    if (act == NN_ACT_GELU_TANH)
        for (int64_t i = 0; i < n; i++) y[i] = gelu_tanh(x[i]);
    else if (act == NN_ACT_GELU_ERF)
        for (int64_t i = 0; i < n; i++) y[i] = gelu_erf(x[i]);
    else if (y != x)
        memcpy(y, x, (size_t)n * sizeof *y);
}

/* y[M,N] = x[M,K] · w[N,K]^T + b, on raw pointers. */
static void gemm_xwt(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N,
                     int64_t K) {
    if (b)
        for (int64_t i = 0; i < M; i++) memcpy(y + i * N, b, (size_t)N * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)K, w,
                (int)K, b ? 1.0f : 0.0f, y, (int)N);
}

void cpu_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre) {
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    gemm_xwt(F(y), F(x), F(w), F(b), M, N, K);
    if (pre) memcpy(pre->data, y->data, (size_t)(M * N) * sizeof(float));
    if (act != NN_ACT_NONE) apply_act(F(y), F(y), M * N, act);
}

void cpu_gelu(tensor *y, const tensor *x, nn_act act) { apply_act(F(y), F(x), tensor_numel(x), act); }

void cpu_add(tensor *y, const tensor *a, const tensor *b) {
    float *py = F(y);
    const float *pa = F(a), *pb = F(b);
    int64_t n = tensor_numel(y);
    for (int64_t i = 0; i < n; i++) py[i] = pa[i] + pb[i];
}

void cpu_copy(tensor *y, const tensor *x) {
    if (y->data != x->data) memmove(y->data, x->data, tensor_nbytes(x));
}

void cpu_fill(tensor *t, float value) {
    float *p = F(t);
    int64_t n = tensor_numel(t);
    for (int64_t i = 0; i < n; i++) p[i] = value;
}

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

/* Row-wise softmax of s[T,T] in place; with causal, entries j > i get probability 0. */
static void softmax_rows(float *s, int64_t T, int causal) {
    for (int64_t i = 0; i < T; i++) {
        float *row = s + i * T;
        int64_t n = causal ? i + 1 : T;
        float mx = -FLT_MAX;
        for (int64_t j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        for (int64_t j = n; j < T; j++) row[j] = 0.0f;
    }
}

void cpu_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                   int n_kv_heads, float scale, int causal, tensor *att) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    int keep = tensor_numel(att) == B * n_heads * T * T;
    for (int64_t b = 0; b < B; b++) {
        for (int h = 0; h < n_heads; h++) {
            const float *qh = F(q) + b * T * HD + h * Dh;
            const float *kh = F(k) + b * T * KVD + (h / group) * Dh;
            const float *vh = F(v) + b * T * KVD + (h / group) * Dh;
            float *oh = F(out) + b * T * HD + h * Dh;
            float *s = F(att) + (keep ? (b * n_heads + h) * T * T : 0);
            /* s = scale · q_h k_h^T; rows of q_h and k_h are strided by the full width. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, scale, qh,
                        (int)HD, kh, (int)KVD, 0.0f, s, (int)T);
            softmax_rows(s, T, causal);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, s,
                        (int)T, vh, (int)KVD, 0.0f, oh, (int)HD);
        }
    }
}

void cpu_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                     tensor *cols) {
    int64_t B = img->shape[0], Cin = img->shape[1], H = img->shape[2], W = img->shape[3];
    int64_t Hp = H / patch, Wp = W / patch, NP = Hp * Wp, P = patch, KK = Cin * P * P;
    const float *pi = F(img);
    float *pc = F(cols);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t py = 0; py < Hp; py++)
            for (int64_t px = 0; px < Wp; px++) {
                float *row = pc + ((bi * NP) + py * Wp + px) * KK;
                for (int64_t c = 0; c < Cin; c++)
                    for (int64_t ky = 0; ky < P; ky++)
                        memcpy(row + (c * P + ky) * P,
                               pi + ((bi * Cin + c) * H + py * P + ky) * W + px * P,
                               (size_t)P * sizeof(float));
            }
    /* w [C, Cin, p, p] is the matrix [C, Cin*p*p] in memory. */
    gemm_xwt(F(y), pc, F(w), F(b), B * NP, w->shape[0], KK);
}

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
