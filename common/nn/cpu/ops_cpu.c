/* ops_cpu.c — the CPU backend: fp32 reference implementations of the ops in ops.h.
 * GEMMs go through OpenBLAS (which threads them); the elementwise and row-wise ops are plain loops.
 * Arguments were validated by ops.c.
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
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

/* Whether query i may see key j: j <= i when causal, and the same segment when seg is given. */
static inline int visible(int64_t i, int64_t j, int causal, const int32_t *seg) {
    return (!causal || j <= i) && (!seg || seg[j] == seg[i]);
}

/* Row-wise softmax of s[T,T] in place over the visible keys; the others get probability 0.
 * seg: the T segment ids of this batch row, or NULL. Every row sees at least its own key. */
static void softmax_rows(float *s, int64_t T, int causal, const int32_t *seg) {
    for (int64_t i = 0; i < T; i++) {
        float *row = s + i * T;
        int64_t n = causal ? i + 1 : T;
        float mx = -FLT_MAX;
        for (int64_t j = 0; j < n; j++)
            if (visible(i, j, causal, seg) && row[j] > mx) mx = row[j];
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            row[j] = visible(i, j, causal, seg) ? expf(row[j] - mx) : 0.0f;
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        for (int64_t j = n; j < T; j++) row[j] = 0.0f;
    }
}

void cpu_attention_seg(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                       int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    int keep = tensor_numel(att) == B * n_heads * T * T;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *sb = seg ? (const int32_t *)seg->data + b * T : NULL;
        for (int h = 0; h < n_heads; h++) {
            const float *qh = F(q) + b * T * HD + h * Dh;
            const float *kh = F(k) + b * T * KVD + (h / group) * Dh;
            const float *vh = F(v) + b * T * KVD + (h / group) * Dh;
            float *oh = F(out) + b * T * HD + h * Dh;
            float *s = F(att) + (keep ? (b * n_heads + h) * T * T : 0);
            /* s = scale · q_h k_h^T; rows of q_h and k_h are strided by the full width. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, scale, qh,
                        (int)HD, kh, (int)KVD, 0.0f, s, (int)T);
            softmax_rows(s, T, causal, sb);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, s,
                        (int)T, vh, (int)KVD, 0.0f, oh, (int)HD);
        }
    }
}

void cpu_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                   int n_kv_heads, float scale, int causal, tensor *att) {
    cpu_attention_seg(out, q, k, v, n_heads, n_kv_heads, scale, causal, NULL, att);
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

/* ---- training ops ----------------------------------------------------------------------------- */

/* d act(x) / dx for the GELUs of apply_act. */
static inline float gelu_tanh_grad(float x) {
    const float beta = 0.7978845608028654f, kappa = 0.044715f;
    float t = tanhf(beta * (x + kappa * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * beta * (1.0f + 3.0f * kappa * x * x);
}

static inline float gelu_erf_grad(float x) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
    return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) + x * inv_sqrt_2pi * expf(-0.5f * x * x);
}

static inline float act_grad(float x, nn_act act) {
    return act == NN_ACT_GELU_TANH ? gelu_tanh_grad(x) : act == NN_ACT_GELU_ERF ? gelu_erf_grad(x) : 1.0f;
}

void cpu_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                         const tensor *w, nn_act act, const tensor *pre, int accumulate_dx) {
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    float *g = F(dy);
    if (act != NN_ACT_NONE) {
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

/* ---- fused residual + RMSNorm, per-group batched matmul ------------------------------------------ */

/* Exactly op_add then op_rmsnorm: the fusion is a CUDA matter (one pass over memory). */
void cpu_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                     tensor *rstd) {
    cpu_add(r, a, b);
    cpu_rmsnorm(y, r, w, eps, rstd);
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

void cpu_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate) {
    int64_t n = tensor_numel(x);
    const float *px = F(x), *g = F(dy);
    float *o = F(dx);
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * act_grad(px[i], act);
        o[i] = accumulate ? o[i] + d : d;
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

void cpu_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta, int inverse) {
    int64_t B = x->shape[0], T = x->shape[1], HD = x->shape[2], Dh = HD / n_heads, half = Dh / 2;
    float *inv_freq = asvr_malloc((size_t)half * 3 * sizeof(float), "rope frequencies");
    float *cs = inv_freq + half, *sn = cs + half;
    /* As HF LLaMA: inv_freq = 1 / theta^(arange(0, Dh, 2) / Dh), all in fp32. */
    for (int64_t i = 0; i < half; i++) inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)Dh);
    const int32_t *pp = (const int32_t *)pos->data;
    const float *px = F(x);
    float *py = F(y);
    for (int64_t bt = 0; bt < B * T; bt++) {
        float p = (float)pp[bt];
        for (int64_t i = 0; i < half; i++) {
            float a = p * inv_freq[i]; /* fp32 product, as HF's fp32 position x frequency */
            cs[i] = cosf(a);
            sn[i] = inverse ? -sinf(a) : sinf(a);
        }
        for (int h = 0; h < n_heads; h++) {
            const float *xr = px + bt * HD + h * Dh;
            float *yr = py + bt * HD + h * Dh;
            for (int64_t i = 0; i < half; i++) {
                float x1 = xr[i], x2 = xr[i + half];
                yr[i] = x1 * cs[i] - x2 * sn[i];
                yr[i + half] = x2 * cs[i] + x1 * sn[i];
            }
        }
    }
    free(inv_freq);
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_swiglu(tensor *y, const tensor *gate, const tensor *up) {
    int64_t n = tensor_numel(y);
    const float *g = F(gate), *u = F(up);
    float *o = F(y);
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i], ui = u[i];
        o[i] = gi * sigmoidf(gi) * ui;
    }
}

void cpu_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                         const tensor *up) {
    int64_t n = tensor_numel(dy);
    const float *g = F(gate), *u = F(up), *d = F(dy);
    float *dg = F(dgate), *du = F(dup);
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i], ui = u[i], di = d[i], s = sigmoidf(gi);
        dg[i] = di * ui * s * (1.0f + gi * (1.0f - s));
        du[i] = di * gi * s;
    }
}

void cpu_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                            const tensor *q, const tensor *k, const tensor *v, const tensor *att,
                            int n_heads, int n_kv_heads, float scale, tensor *scratch) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    memset(dk->data, 0, tensor_nbytes(dk)); /* query heads of a group add into one kv head */
    memset(dv->data, 0, tensor_nbytes(dv));
    float *ds = F(scratch);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < n_heads; h++) {
            int64_t qo = b * T * HD + h * Dh, ko = b * T * KVD + (h / group) * Dh;
            const float *P = F(att) + (b * n_heads + h) * T * T, *dO = F(dout) + qo;
            /* dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, P,
                        (int)T, dO, (int)HD, 1.0f, F(dv) + ko, (int)KVD);
            /* dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) in place */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, 1.0f, dO,
                        (int)HD, F(v) + ko, (int)KVD, 0.0f, ds, (int)T);
            for (int64_t i = 0; i < T; i++) {
                const float *pr = P + i * T;
                float *dr = ds + i * T;
                double dot = 0.0;
                for (int64_t j = 0; j < T; j++) dot += (double)pr[j] * dr[j];
                float dt = (float)dot;
                for (int64_t j = 0; j < T; j++) dr[j] = pr[j] * (dr[j] - dt);
            }
            /* dQ = scale dS K;  dK += scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, scale, ds,
                        (int)T, F(k) + ko, (int)KVD, 0.0f, F(dq) + qo, (int)HD);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, scale, ds,
                        (int)T, F(q) + qo, (int)HD, 1.0f, F(dk) + ko, (int)KVD);
        }
}

/* Flash-style attention on the CPU: one query row at a time, its scores in a T-float buffer, never
 * the T x T matrix. The reference for the CUDA kernels; checked against op_attention_seg. */
static float flash_score(const float *qi, const float *kj, int64_t Dh, float scale) {
    float acc = 0.0f;
    for (int64_t t = 0; t < Dh; t++) acc += qi[t] * kj[t];
    return scale * acc;
}

void cpu_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                         int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    float *s = asvr_malloc((size_t)T * sizeof(float), "flash attention row");
    for (int64_t b = 0; b < B; b++) {
        const int32_t *sb = seg ? (const int32_t *)seg->data + b * T : NULL;
        for (int h = 0; h < n_heads; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *qi = F(q) + (b * T + i) * HD + h * Dh;
                const float *kb = F(k) + b * T * KVD + (h / group) * Dh, *vb = F(v) + b * T * KVD + (h / group) * Dh;
                float mx = -FLT_MAX;
                for (int64_t j = 0; j < T; j++)
                    if (visible(i, j, causal, sb)) {
                        s[j] = flash_score(qi, kb + j * KVD, Dh, scale);
                        mx = s[j] > mx ? s[j] : mx;
                    }
                double sum = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    s[j] = visible(i, j, causal, sb) ? expf(s[j] - mx) : 0.0f;
                    sum += s[j];
                }
                float inv = (float)(1.0 / sum);
                float *oi = F(out) + (b * T + i) * HD + h * Dh;
                for (int64_t t = 0; t < Dh; t++) oi[t] = 0.0f;
                for (int64_t j = 0; j < T; j++) {
                    if (s[j] == 0.0f) continue;
                    float p = s[j] * inv;
                    for (int64_t t = 0; t < Dh; t++) oi[t] += p * vb[j * KVD + t];
                }
                F(lse)[(b * n_heads + h) * T + i] = (float)((double)mx + log(sum));
            }
    }
    free(s);
}

void cpu_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                                  const tensor *q, const tensor *k, const tensor *v,
                                  const tensor *out, const tensor *lse, int n_heads, int n_kv_heads,
                                  float scale, int causal, const tensor *seg) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    memset(dk->data, 0, tensor_nbytes(dk));
    memset(dv->data, 0, tensor_nbytes(dv));
    for (int64_t b = 0; b < B; b++) {
        const int32_t *sb = seg ? (const int32_t *)seg->data + b * T : NULL;
        for (int h = 0; h < n_heads; h++)
            for (int64_t i = 0; i < T; i++) {
                int64_t qo = (b * T + i) * HD + h * Dh, kvo = b * T * KVD + (h / group) * Dh;
                const float *qi = F(q) + qo, *doi = F(dout) + qo, *oi = F(out) + qo;
                float l = F(lse)[(b * n_heads + h) * T + i];
                double di = 0.0; /* rowsum(dO ⊙ O) = sum_j P_ij dP_ij */
                for (int64_t t = 0; t < Dh; t++) di += (double)doi[t] * oi[t];
                float *dqi = F(dq) + qo;
                for (int64_t t = 0; t < Dh; t++) dqi[t] = 0.0f;
                for (int64_t j = 0; j < T; j++) {
                    if (!visible(i, j, causal, sb)) continue;
                    const float *kj = F(k) + kvo + j * KVD, *vj = F(v) + kvo + j * KVD;
                    float p = expf(flash_score(qi, kj, Dh, scale) - l);
                    float dp = flash_score(doi, vj, Dh, 1.0f);
                    float d = p * (dp - (float)di);
                    float *dkj = F(dk) + kvo + j * KVD, *dvj = F(dv) + kvo + j * KVD;
                    for (int64_t t = 0; t < Dh; t++) {
                        dqi[t] += d * kj[t];
                        dkj[t] += scale * d * qi[t];
                        dvj[t] += p * doi[t];
                    }
                }
                for (int64_t t = 0; t < Dh; t++) dqi[t] *= scale;
            }
    }
}

void cpu_embedding(tensor *y, const tensor *ids, const tensor *table) {
    int64_t N = tensor_numel(ids), C = table->shape[1];
    const int32_t *id = (const int32_t *)ids->data;
    for (int64_t n = 0; n < N; n++)
        memcpy(F(y) + n * C, F(table) + (int64_t)id[n] * C, (size_t)C * sizeof(float));
}

void cpu_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids) {
    int64_t N = tensor_numel(ids), C = dtable->shape[1];
    const int32_t *id = (const int32_t *)ids->data;
    for (int64_t n = 0; n < N; n++) {
        float *dst = F(dtable) + (int64_t)id[n] * C;
        const float *src = F(dy) + n * C;
        for (int64_t j = 0; j < C; j++) dst[j] += src[j];
    }
}

void cpu_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                       const tensor *targets, float scale) {
    int64_t M = tensor_rows(logits), V = tensor_cols(logits);
    const int32_t *tg = (const int32_t *)targets->data;
    double total = 0.0;
    int64_t n = 0;
    for (int64_t r = 0; r < M; r++) {
        const float *x = F(logits) + r * V;
        float *d = dlogits ? F(dlogits) + r * V : NULL;
        int32_t t = tg[r];
        if (t == NN_IGNORE_INDEX) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -FLT_MAX;
        for (int64_t j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < V; j++) sum += expf(x[j] - mx);
        total += (double)mx + log(sum) - (double)x[t];
        n++;
        if (d) { /* x and d may be the same row: each x[j] is read just before d[j] is written */
            float c = (float)((double)scale / sum);
            for (int64_t j = 0; j < V; j++) d[j] = c * expf(x[j] - mx);
            d[t] -= scale;
        }
    }
    *loss_sum = total;
    *count = n;
}

/* op_adamw with the gradient scaled by gscale on the fly (1: as it is; multiplying by 1 is exact). */
static void adamw_scaled(tensor *p, const tensor *g, tensor *m, tensor *v, float gscale, float lr, float beta1,
                         float beta2, float eps, float weight_decay, int64_t step) {
    int64_t n = tensor_numel(p);
    /* Scalars in double, as torch computes them from Python numbers; the update in fp32. */
    float decay = (float)(1.0 - (double)lr * weight_decay);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    float *pp = F(p), *pm = F(m), *pv = F(v);
    const float *pg = F(g);
    for (int64_t i = 0; i < n; i++) {
        float gi = pg[i] * gscale;
        pp[i] *= decay;
        pm[i] += a1 * (gi - pm[i]); /* = b1 m + (1 - b1) g */
        pv[i] = pv[i] * beta2 + a2 * gi * gi;
        float denom = sqrtf(pv[i]) / bc2_sqrt + eps;
        pp[i] -= step_size * pm[i] / denom;
    }
}

void cpu_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
               float eps, float weight_decay, int64_t step) {
    adamw_scaled(p, g, m, v, 1.0f, lr, beta1, beta2, eps, weight_decay, step);
}

void cpu_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                     tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2, float eps,
                     int64_t step) {
    for (int i = 0; i < n; i++) {
        adamw_scaled(p[i], g[i], m[i], v[i], gscale, lr, beta1, beta2, eps, wd[i], step);
        if (pc && pc[i]) cpu_copy(pc[i], p[i]);
    }
}

void cpu_grad_sqnorm_multi(double *acc, int n, const tensor *const *g) {
    for (int i = 0; i < n; i++) cpu_grad_sqnorm(acc, g[i]);
}

void cpu_grad_sqnorm(double *acc, const tensor *g) {
    int64_t n = tensor_numel(g);
    const float *pg = F(g);
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)pg[i] * pg[i];
    *acc += s;
}

void cpu_scale(tensor *t, float s) {
    int64_t n = tensor_numel(t);
    float *pt = F(t);
    for (int64_t i = 0; i < n; i++) pt[i] *= s;
}

/* ---- convolutional blocks ---------------------------------------------------------------------- */

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

void cpu_silu(tensor *y, const tensor *x) {
    const float *px = F(x);
    float *py = F(y);
    int64_t n = tensor_numel(x);
    for (int64_t i = 0; i < n; i++) py[i] = px[i] / (1.0f + expf(-px[i]));
}

void cpu_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                     tensor *cols) {
    int64_t B = x->shape[0], Cin = x->shape[2], Cout = w->shape[0], k = w->shape[2], r = k / 2;
    int64_t P = (int64_t)H * W, KK = Cin * k * k;
    float *pc = F(cols);
    for (int64_t bi = 0; bi < B; bi++) {
        const float *xb = F(x) + bi * P * Cin;
        /* cols[p, c*k*k + i*k + j] = x[(h+i-r)*W + (w+j-r), c], 0 outside: the row order of w's
         * [Cout, Cin*k*k] flattening. */
        for (int64_t h = 0; h < H; h++)
            for (int64_t ww = 0; ww < W; ww++) {
                float *row = pc + (h * W + ww) * KK;
                for (int64_t i = 0; i < k; i++) {
                    int64_t hh = h + i - r;
                    for (int64_t j = 0; j < k; j++) {
                        int64_t wx = ww + j - r;
                        float *dst = row + i * k + j;
                        if (hh < 0 || hh >= H || wx < 0 || wx >= W) {
                            for (int64_t c = 0; c < Cin; c++) dst[c * k * k] = 0.0f;
                        } else {
                            const float *src = xb + (hh * W + wx) * Cin;
                            for (int64_t c = 0; c < Cin; c++) dst[c * k * k] = src[c];
                        }
                    }
                }
            }
        gemm_xwt(F(y) + bi * P * Cout, pc, F(w), F(b), P, Cout, KK);
    }
}
