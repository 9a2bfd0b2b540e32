/* test_ops.c — every CPU op against a naive double-precision loop on seeded random inputs,
 * plus the tensor arena (plan, alignment, lookup). Each bound is about ten times the relative error
 * measured against the double loop, written beside it. */
#include <math.h>
#include <stdint.h>

#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float frand(void) { return t_frand(&rng); }

static nn_arena *ar;
static tensor *T(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t sh[4] = {d0, d1, d2, d3};
    return nn_arena_add(ar, name, NN_F32, ndim, sh);
}
static float *P(tensor *t) { return (float *)t->data; }
static void randn(tensor *t, float scale) {
    for (int64_t i = 0; i < tensor_numel(t); i++) P(t)[i] = scale * frand();
}

/* ||a - b|| / ||b|| with b in double. */
static double relerr(const float *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

#define T_REL(a, b, n, tol)                                                                        \
    do {                                                                                           \
        double e_ = relerr((a), (b), (n));                                                         \
        T_CHECK(e_ < (tol), "relative error %.3g >= %.1g", e_, (double)(tol));                     \
    } while (0)

static double gelu_tanh_d(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double gelu_erf_d(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static void test_arena(void) {
    nn_arena *a = nn_arena_new("test", NN_CPU);
    int64_t s1[2] = {3, 5}, s2[1] = {7};
    tensor *x = nn_arena_add(a, "x", NN_F32, 2, s1);
    tensor *c = nn_arena_add(a, "codes", NN_U16, 1, s2);
    T_EQ_INT(nn_arena_count(a), 2);
    T_EQ_INT(nn_arena_bytes(a), 256 + 256);
    T_CHECK(x->data == NULL, "no data before commit");
    nn_arena_commit(a);
    T_CHECK(x->data && c->data && ((uintptr_t)c->data % 256) == 0, "aligned data");
    T_CHECK((char *)c->data - (char *)x->data == 256, "second tensor after the first");
    T_CHECK(nn_arena_find(a, "codes") == c, "find");
    T_CHECK(nn_arena_find(a, "nope") == NULL, "find absent");
    T_EQ_INT(tensor_nbytes(c), 14);
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    T_CHECK(f != NULL, "fmemopen");
    nn_arena_print_plan(a, f);
    fclose(f);
    T_STR_CONTAINS(buf, "[3, 5]");
    T_STR_CONTAINS(buf, "codes");
    T_STR_CONTAINS(buf, "total 512 bytes");
    nn_arena_free(a);
}

static void test_matmul(int M, int N, int K, int bias, nn_act act) {
    tensor *x = T("mm.x", 3, 2, M / 2, K, 0), *w = T("mm.w", 2, N, K, 0, 0), *b = T("mm.b", 1, N, 0, 0, 0);
    tensor *y = T("mm.y", 2, M, N, 0, 0), *pre = T("mm.pre", 2, M, N, 0, 0);
    nn_arena_commit(ar);
    randn(x, 1.0f), randn(w, 0.5f), randn(b, 0.5f);
    op_fill(y, NAN);
    op_matmul(y, x, w, bias ? b : NULL, act, pre);
    double *ref = malloc(sizeof(double) * M * N), *refpre = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = bias ? P(b)[j] : 0.0;
            for (int k = 0; k < K; k++) s += (double)P(x)[i * K + k] * P(w)[j * K + k];
            refpre[i * N + j] = s;
            ref[i * N + j] = act == NN_ACT_GELU_TANH ? gelu_tanh_d(s) : act == NN_ACT_GELU_ERF ? gelu_erf_d(s) : s;
        }
    T_REL(P(y), ref, M * N, 2e-6);     /* measured 1.6e-7 (f32 vs double loop) */
    T_REL(P(pre), refpre, M * N, 2e-6); /* measured 1.5e-7 */
    free(ref), free(refpre);
}

static void test_elementwise(void) {
    int n = 1000;
    tensor *x = T("x", 2, 10, 100, 0, 0), *y = T("y", 2, 10, 100, 0, 0), *z = T("z", 1, 1000, 0, 0, 0);
    nn_arena_commit(ar);
    randn(x, 4.0f), randn(z, 1.0f);
    double *ref = malloc(sizeof(double) * n);
    for (int a = 0; a < 2; a++) {
        nn_act act = a ? NN_ACT_GELU_ERF : NN_ACT_GELU_TANH;
        op_fill(y, NAN);
        op_gelu(y, x, act);
        for (int i = 0; i < n; i++) ref[i] = a ? gelu_erf_d(P(x)[i]) : gelu_tanh_d(P(x)[i]);
        T_REL(P(y), ref, n, 2e-7); /* measured 3.5e-8 */
    }
    op_fill(y, NAN);
    op_add(y, x, z);
    for (int i = 0; i < n; i++) ref[i] = (double)P(x)[i] + P(z)[i];
    T_REL(P(y), ref, n, 1e-7); /* measured 2.2e-8 */
    op_add(y, y, x); /* in place */
    for (int i = 0; i < n; i++) ref[i] += P(x)[i];
    T_REL(P(y), ref, n, 3e-7); /* measured 2.9e-8 */
    op_copy(y, z);
    T_CHECK(memcmp(y->data, z->data, tensor_nbytes(z)) == 0, "copy");
    free(ref);
}

static void test_norms(void) {
    int R = 37, C = 96;
    tensor *x = T("x", 2, R, C, 0, 0), *y = T("y", 2, R, C, 0, 0), *w = T("w", 1, C, 0, 0, 0),
           *b = T("b", 1, C, 0, 0, 0), *mean = T("mean", 1, R, 0, 0, 0), *rstd = T("rstd", 1, R, 0, 0, 0);
    nn_arena_commit(ar);
    randn(x, 3.0f), randn(w, 1.0f), randn(b, 1.0f);
    for (int i = 0; i < tensor_numel(x); i++) P(x)[i] += 1.5f; /* non-zero mean */
    double *ref = malloc(sizeof(double) * R * C), *rm = malloc(sizeof(double) * R), *rr = malloc(sizeof(double) * R);
    float eps = 1e-6f;
    op_fill(y, NAN), op_fill(mean, NAN), op_fill(rstd, NAN);
    op_layernorm(y, x, w, b, eps, mean, rstd);
    for (int r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int j = 0; j < C; j++) m += P(x)[r * C + j];
        m /= C;
        for (int j = 0; j < C; j++) v += (P(x)[r * C + j] - m) * (P(x)[r * C + j] - m);
        v /= C;
        rm[r] = m, rr[r] = 1.0 / sqrt(v + eps);
        for (int j = 0; j < C; j++) ref[r * C + j] = (P(x)[r * C + j] - m) * rr[r] * P(w)[j] + P(b)[j];
    }
    T_REL(P(y), ref, R * C, 5e-7); /* measured 4.9e-8 */
    T_REL(P(mean), rm, R, 3e-7);   /* measured 2.6e-8 */
    T_REL(P(rstd), rr, R, 4e-7);   /* measured 3.2e-8 */
    op_fill(y, NAN), op_fill(rstd, NAN);
    op_rmsnorm(y, x, w, 1e-5f, rstd);
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int j = 0; j < C; j++) ss += (double)P(x)[r * C + j] * P(x)[r * C + j];
        rr[r] = 1.0 / sqrt(ss / C + 1e-5);
        for (int j = 0; j < C; j++) ref[r * C + j] = P(x)[r * C + j] * rr[r] * P(w)[j];
    }
    T_REL(P(y), ref, R * C, 4e-7); /* measured 4.0e-8 */
    T_REL(P(rstd), rr, R, 2e-7);   /* measured 1.9e-8 */
    free(ref), free(rm), free(rr);
}

static void test_attention(int B, int Tn, int H, int Hkv, int Dh, int causal, int keep) {
    int HD = H * Dh, KVD = Hkv * Dh;
    tensor *q = T("q", 3, B, Tn, HD, 0), *k = T("k", 3, B, Tn, KVD, 0), *v = T("v", 3, B, Tn, KVD, 0),
           *o = T("o", 3, B, Tn, HD, 0);
    tensor *att = keep ? T("att", 4, B, H, Tn, Tn) : T("att", 2, Tn, Tn + 3, 0, 0);
    nn_arena_commit(ar);
    randn(q, 1.0f), randn(k, 1.0f), randn(v, 1.0f);
    op_fill(o, NAN);
    float scale = 1.0f / sqrtf((float)Dh);
    op_attention(o, q, k, v, H, Hkv, scale, causal, att, keep ? NN_ATT_KEEP : NN_ATT_SCRATCH);
    double *ref = malloc(sizeof(double) * B * Tn * HD), *p = malloc(sizeof(double) * Tn);
    double *refatt = malloc(sizeof(double) * B * H * Tn * Tn);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / Hkv);
            for (int i = 0; i < Tn; i++) {
                double mx = -1e300, sum = 0;
                for (int j = 0; j < Tn; j++) {
                    double s = 0;
                    for (int d = 0; d < Dh; d++)
                        s += (double)P(q)[(b * Tn + i) * HD + h * Dh + d] * P(k)[(b * Tn + j) * KVD + g * Dh + d];
                    p[j] = (causal && j > i) ? -INFINITY : s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < Tn; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j < Tn; j++) refatt[((b * H + h) * Tn + i) * Tn + j] = p[j] / sum;
                for (int d = 0; d < Dh; d++) {
                    double s = 0;
                    for (int j = 0; j < Tn; j++) s += p[j] / sum * P(v)[(b * Tn + j) * KVD + g * Dh + d];
                    ref[(b * Tn + i) * HD + h * Dh + d] = s;
                }
            }
        }
    T_REL(P(o), ref, B * Tn * HD, 9e-7);                      /* measured 8.8e-8 */
    if (keep) T_REL(P(att), refatt, B * H * Tn * Tn, 5e-7); /* measured 4.9e-8 */
    free(ref), free(p), free(refatt);
}

static void test_patch_embed(void) {
    /* 31 x 44 with patch 14: the last 3 rows and 2 columns fall outside every patch. */
    int B = 2, Cin = 3, Hh = 31, Ww = 44, p = 14, C = 20, Hp = Hh / p, Wp = Ww / p, NP = Hp * Wp;
    tensor *img = T("img", 4, B, Cin, Hh, Ww), *w = T("w", 4, C, Cin, p, p), *b = T("b", 1, C, 0, 0, 0),
           *y = T("y", 3, B, NP, C, 0), *cols = T("cols", 2, B * NP, Cin * p * p, 0, 0);
    nn_arena_commit(ar);
    randn(img, 1.0f), randn(w, 0.1f), randn(b, 0.5f);
    op_fill(y, NAN);
    op_patch_embed(y, img, w, b, p, cols);
    double *ref = malloc(sizeof(double) * B * NP * C);
    for (int bi = 0; bi < B; bi++)
        for (int py = 0; py < Hp; py++)
            for (int px = 0; px < Wp; px++)
                for (int co = 0; co < C; co++) {
                    double s = P(b)[co];
                    for (int ci = 0; ci < Cin; ci++)
                        for (int ky = 0; ky < p; ky++)
                            for (int kx = 0; kx < p; kx++)
                                s += (double)P(w)[((co * Cin + ci) * p + ky) * p + kx] *
                                     P(img)[((bi * Cin + ci) * Hh + py * p + ky) * Ww + px * p + kx];
                    ref[(bi * NP + py * Wp + px) * C + co] = s;
                }
    T_REL(P(y), ref, B * NP * C, 3e-6); /* measured 2.3e-7 */
    free(ref);
}

static void test_vq(void) {
    int N = 53, C = 24, K = 40, D = 3;
    tensor *x = T("x", 2, N, C, 0, 0), *x0 = T("x0", 2, N, C, 0, 0), *cb = T("cb", 2, K, C, 0, 0),
           *cn = T("cn", 1, K, 0, 0, 0), *dist = T("dist", 2, 8, K, 0, 0);
    int64_t cs[2] = {N, D};
    tensor *codes = nn_arena_add(ar, "codes", NN_U16, 2, cs);
    nn_arena_commit(ar);
    randn(cb, 1.0f);
    randn(x, 1.0f);
    /* Planted exact ties: rows 9 and 31 equal, rows 4 and 20 equal, with dyadic values so every
     * distance is exact; x[5] sits on row 9, x[6] on row 4 (the copy at 20 must lose). */
    for (int j = 0; j < C; j++) {
        P(cb)[9 * C + j] = P(cb)[31 * C + j] = (float)((j % 5) - 2) * 0.25f;
        P(cb)[4 * C + j] = P(cb)[20 * C + j] = (float)((j % 3) - 1) * 0.5f;
        P(x)[5 * C + j] = P(cb)[9 * C + j];
        P(x)[6 * C + j] = P(cb)[4 * C + j];
    }
    op_copy(x0, x);
    op_row_sqnorm(cn, cb);
    double *ref = malloc(sizeof(double) * K);
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int j = 0; j < C; j++) s += (double)P(cb)[k * C + j] * P(cb)[k * C + j];
        ref[k] = s;
    }
    T_REL(P(cn), ref, K, 7e-7); /* measured 6.9e-8 */
    for (int i = 0; i < N * D; i++) ((uint16_t *)codes->data)[i] = 0xFFFF;
    double *res = malloc(sizeof(double) * N * C);
    for (int i = 0; i < N * C; i++) res[i] = P(x)[i];
    int bad = 0;
    for (int d = 0; d < D; d++) {
        op_vq_step(x, cb, cn, codes, d, dist);
        for (int n = 0; n < N; n++) {
            double best = 1e300;
            int bi = -1;
            for (int k = 0; k < K; k++) {
                double s = 0;
                for (int j = 0; j < C; j++) {
                    double t = res[n * C + j] - P(cb)[k * C + j];
                    s += t * t;
                }
                if (s < best) best = s, bi = k;
            }
            int got = ((uint16_t *)codes->data)[n * D + d];
            if (got != bi) bad++;
            for (int j = 0; j < C; j++) res[n * C + j] -= P(cb)[got * C + j];
        }
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(((uint16_t *)codes->data)[5 * D + 0], 9);
    T_EQ_INT(((uint16_t *)codes->data)[6 * D + 0], 4);
    T_REL(P(x), res, N * C, 4e-7); /* measured 3.9e-8 */
    free(ref), free(res);
}

static void fresh(const char *label) {
    if (ar) nn_arena_free(ar);
    ar = nn_arena_new(label, NN_CPU);
}

int main(void) {
    test_arena();
    int acts[3] = {NN_ACT_NONE, NN_ACT_GELU_TANH, NN_ACT_GELU_ERF};
    for (int a = 0; a < 3; a++)
        for (int bias = 0; bias < 2; bias++) {
            fresh("matmul");
            test_matmul(34, 29, 70, bias, (nn_act)acts[a]);
        }
    fresh("elementwise");
    test_elementwise();
    fresh("norms");
    test_norms();
    fresh("attention");
    test_attention(2, 19, 4, 4, 12, 0, 1);
    fresh("attention causal");
    test_attention(2, 23, 4, 4, 8, 1, 1);
    fresh("attention gqa scratch");
    test_attention(2, 17, 6, 2, 8, 1, 0);
    fresh("patch");
    test_patch_embed();
    fresh("vq");
    test_vq();
    nn_arena_free(ar);
    return t_done();
}
