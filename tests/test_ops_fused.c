/* test_ops_fused.c — the fused residual + RMSNorm and the per-group batched matmul on the CPU backend.
 *
 * op_add_rmsnorm must give exactly (bit for bit) what op_add then op_rmsnorm give, also with r over a
 * and y over b, and be within 6e-7 of a double loop; its backward, as ops.h spells it (op_rmsnorm_backward
 * accumulating into the residual gradient), is checked against central finite differences of a double
 * forward (8e-7). op_matmul_batched and its backward must give exactly what op_matmul and
 * op_matmul_backward give group by group, and be within 1e-6 of double loops (each bound about ten
 * times the measured error written beside it). Inputs are fresh random
 * non-zero values; written outputs are pre-filled with NaN, accumulated ones (dw, dx when accumulating)
 * with random values. Shape misuse must exit 1 naming the op.
 * The fused optimizer ops: op_adamw_multi must give exactly what op_scale (on a copy of g), op_adamw
 * and op_copy give tensor by tensor, leave g as it was, and op_grad_sqnorm_multi exactly the sum of
 * op_grad_sqnorm.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"

static uint64_t rng = 0x853C49E6748FEA9BULL;
static float frand(void) { return t_frand(&rng); }

#define MAXT 64
static void *owned[MAXT];
static int n_owned;
static tensor mk(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t sh[3] = {d0, d1, d2};
    tensor t = tensor_make(name, NN_F32, NN_CPU, ndim, sh, NULL);
    t.data = malloc(tensor_nbytes(&t));
    T_CHECK(t.data != NULL && n_owned < MAXT, "alloc");
    owned[n_owned++] = t.data;
    return t;
}
static void release(void) {
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    n_owned = 0;
}
static float *P(const tensor *t) { return (float *)t->data; }
static tensor rnd(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, float scale) {
    tensor t = mk(name, ndim, d0, d1, d2);
    for (int64_t i = 0; i < tensor_numel(&t); i++) P(&t)[i] = scale * frand();
    return t;
}
static tensor filled(const char *name, const tensor *like, float v) {
    tensor t = mk(name, like->ndim, like->shape[0], like->shape[1], like->ndim > 2 ? like->shape[2] : 0);
    for (int64_t i = 0; i < tensor_numel(&t); i++) P(&t)[i] = v;
    return t;
}
static tensor copy(const char *name, const tensor *src) {
    tensor t = filled(name, src, 0.0f);
    memcpy(t.data, src->data, tensor_nbytes(src));
    return t;
}

static int same_bits(const tensor *a, const tensor *b) {
    return tensor_numel(a) == tensor_numel(b) && memcmp(a->data, b->data, tensor_nbytes(a)) == 0;
}

/* ||(a - a0) - b|| / ||b|| in double (a0 may be NULL); inf when a holds a NaN. */
static double relerr(const tensor *a, const tensor *a0, const double *b) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < tensor_numel(a); i++) {
        double d = (double)P(a)[i] - (a0 ? (double)P(a0)[i] : 0.0) - b[i];
        num += d * d, den += b[i] * b[i];
    }
    if (num != num) return INFINITY;
    return sqrt(num / (den > 0 ? den : 1e-300));
}

#define T_ERR(what, e, tol)                                                                        \
    do {                                                                                           \
        double e_ = (e);                                                                           \
        printf("  %-70s %.2e  (< %.0e)\n", (what), e_, (double)(tol));                             \
        T_CHECK(e_ < (tol), "%s: relative error %.3g", (what), e_);                                \
    } while (0)
#define T_SAME(what, a, b)                                                                         \
    do {                                                                                           \
        int s_ = same_bits(&(a), &(b));                                                            \
        printf("  %-70s %s\n", (what), s_ ? "identical" : "DIFFERENT");                            \
        T_CHECK(s_, "%s: not bit-identical", (what));                                              \
    } while (0)

static char lab[256];
#define L(...) (snprintf(lab, sizeof lab, __VA_ARGS__), lab)

static double gelu_d(double x, nn_act act) {
    if (act == NN_ACT_GELU_TANH) return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    if (act == NN_ACT_GELU_ERF) return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    return x;
}
static double gelu_grad_d(double x, nn_act act) { /* by central difference of the double GELU */
    if (act == NN_ACT_NONE) return 1.0;
    const double h = 1e-5;
    return (gelu_d(x + h, act) - gelu_d(x - h, act)) / (2 * h);
}

/* ---- op_add_rmsnorm ---------------------------------------------------------------------------- */
/* mode 0: separate r and y; 1: r over a; 2: r separate, y over b. */
static void test_add_rmsnorm(int R, int C, int mode, int with_rstd) {
    const float eps = 1e-5f;
    tensor a = rnd("a", 2, R, C, 0, 2.0f), b = rnd("b", 2, R, C, 0, 1.0f), w = rnd("w", 1, C, 0, 0, 1.5f);
    tensor a2 = copy("a2", &a), b2 = copy("b2", &b);
    tensor r_ref = filled("r_ref", &a, NAN), y_ref = filled("y_ref", &a, NAN);
    tensor rs_ref = mk("rstd_ref", 1, R, 0, 0), rs = mk("rstd", 1, R, 0, 0);
    for (int i = 0; i < R; i++) P(&rs_ref)[i] = P(&rs)[i] = NAN;
    op_add(&r_ref, &a, &b);
    op_rmsnorm(&y_ref, &r_ref, &w, eps, &rs_ref);
    tensor r = filled("r", &a, NAN), y = filled("y", &a, NAN);
    tensor *pr = mode == 1 ? &a2 : &r, *py = mode == 2 ? &b2 : &y;
    op_add_rmsnorm(pr, py, &a2, &b2, &w, eps, with_rstd ? &rs : NULL);
    const char *how = mode == 0 ? "separate r, y" : mode == 1 ? "r over a" : "y over b";
    T_SAME(L("add_rmsnorm %dx%d %s: r == op_add", R, C, how), *pr, r_ref);
    T_SAME(L("add_rmsnorm %dx%d %s: y == op_rmsnorm(r)", R, C, how), *py, y_ref);
    if (with_rstd) T_SAME(L("add_rmsnorm %dx%d %s: rstd", R, C, how), rs, rs_ref);
    /* a double loop */
    double *yd = malloc(sizeof(double) * (size_t)R * C);
    T_CHECK(yd != NULL, "malloc");
    for (int i = 0; i < R; i++) {
        double ss = 0;
        for (int j = 0; j < C; j++) {
            double v = (double)P(&a)[i * C + j] + P(&b)[i * C + j];
            ss += v * v;
        }
        double rsd = 1.0 / sqrt(ss / C + eps);
        for (int j = 0; j < C; j++) yd[i * C + j] = ((double)P(&a)[i * C + j] + P(&b)[i * C + j]) * rsd * P(&w)[j];
    }
    T_ERR(L("add_rmsnorm %dx%d %s: y vs double loop", R, C, how), relerr(py, NULL, yd), 6e-7); /* measured 5.2e-8 */
    free(yd);
    release();
}

/* The backward recipe of ops.h: with L = sum(gy * y) + sum(gr * r) (r also feeds the rest of the
 * residual stream), dr = gr, then op_rmsnorm_backward(dr, dw, gy, r, w, rstd, accumulate 1); da = db = dr. */
typedef struct {
    int R, C;
    double eps, *a, *b, *w, *gy, *gr;
} arn_ctx;
static double arn_loss(const arn_ctx *c) {
    double L = 0;
    for (int i = 0; i < c->R; i++) {
        double ss = 0;
        for (int j = 0; j < c->C; j++) {
            double v = c->a[i * c->C + j] + c->b[i * c->C + j];
            ss += v * v;
            L += c->gr[i * c->C + j] * v;
        }
        double rsd = 1.0 / sqrt(ss / c->C + c->eps);
        for (int j = 0; j < c->C; j++)
            L += c->gy[i * c->C + j] * (c->a[i * c->C + j] + c->b[i * c->C + j]) * rsd * c->w[j];
    }
    return L;
}
static double *dvec(const tensor *t) {
    double *d = malloc(sizeof(double) * (size_t)tensor_numel(t));
    T_CHECK(d != NULL, "malloc");
    for (int64_t i = 0; i < tensor_numel(t); i++) d[i] = P(t)[i];
    return d;
}
static void test_add_rmsnorm_backward(void) {
    const int R = 5, C = 24;
    const float eps = 1e-5f;
    tensor a = rnd("a", 2, R, C, 0, 2.0f), b = rnd("b", 2, R, C, 0, 1.0f), w = rnd("w", 1, C, 0, 0, 1.5f);
    tensor gy = rnd("gy", 2, R, C, 0, 1.0f), gr = rnd("gr", 2, R, C, 0, 1.0f);
    tensor r = filled("r", &a, NAN), y = filled("y", &a, NAN), rs = mk("rstd", 1, R, 0, 0);
    op_add_rmsnorm(&r, &y, &a, &b, &w, eps, &rs);
    tensor dr = copy("dr", &gr), dw0 = rnd("dw0", 1, C, 0, 0, 1.0f), dw = copy("dw", &dw0);
    op_rmsnorm_backward(&dr, &dw, &gy, &r, &w, &rs, 1);
    arn_ctx c = {R, C, eps, dvec(&a), dvec(&b), dvec(&w), dvec(&gy), dvec(&gr)};
    double *ga = malloc(sizeof(double) * R * C), *gw = malloc(sizeof(double) * C);
    T_CHECK(ga && gw, "malloc");
    const double h = 1e-4;
    for (int i = 0; i < R * C; i++) {
        double s = c.a[i];
        c.a[i] = s + h;
        double lp = arn_loss(&c);
        c.a[i] = s - h;
        double lm = arn_loss(&c);
        c.a[i] = s;
        ga[i] = (lp - lm) / (2 * h);
    }
    for (int j = 0; j < C; j++) {
        double s = c.w[j];
        c.w[j] = s + h;
        double lp = arn_loss(&c);
        c.w[j] = s - h;
        double lm = arn_loss(&c);
        c.w[j] = s;
        gw[j] = (lp - lm) / (2 * h);
    }
    /* measured 4.7e-8 (dr) and 7.7e-8 (dw) */
    T_ERR("add_rmsnorm backward (op_rmsnorm_backward, accumulate): da = db = dr", relerr(&dr, NULL, ga), 5e-7);
    T_ERR("add_rmsnorm backward: dw (+=)", relerr(&dw, &dw0, gw), 8e-7);
    free(c.a), free(c.b), free(c.w), free(c.gy), free(c.gr), free(ga), free(gw);
    release();
}

/* ---- op_matmul_batched ------------------------------------------------------------------------- */
static void test_matmul_batched(int G, int M, int K, int N, nn_act act, int with_pre) {
    tensor x = rnd("x", 3, G, M, K, 1.0f), w = rnd("w", 3, G, N, K, 0.4f);
    tensor y = mk("y", 3, G, M, N), pre = mk("pre", 3, G, M, N);
    tensor y_ref = filled("y_ref", &y, NAN), pre_ref = filled("pre_ref", &y, NAN);
    for (int64_t i = 0; i < tensor_numel(&y); i++) P(&y)[i] = P(&pre)[i] = NAN;
    op_matmul_batched(&y, &x, &w, act, with_pre ? &pre : NULL);
    for (int g = 0; g < G; g++) {
        tensor yg = tensor_index0(&y_ref, g), xg = tensor_index0(&x, g), wg = tensor_index0(&w, g);
        tensor pg = tensor_index0(&pre_ref, g);
        op_matmul(&yg, &xg, &wg, NULL, act, with_pre ? &pg : NULL);
    }
    T_SAME(L("matmul_batched G%d %dx%dx%d act %d pre %d: y == per-group op_matmul", G, M, K, N, (int)act, with_pre), y,
           y_ref);
    if (with_pre) T_SAME(L("matmul_batched act %d: pre == per-group op_matmul", (int)act), pre, pre_ref);
    double *yd = malloc(sizeof(double) * (size_t)G * M * N), *pd = malloc(sizeof(double) * (size_t)G * M * N);
    T_CHECK(yd && pd, "malloc");
    for (int g = 0; g < G; g++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < K; k++) s += (double)P(&x)[(g * M + i) * K + k] * P(&w)[(g * N + j) * K + k];
                pd[(g * M + i) * N + j] = s;
                yd[(g * M + i) * N + j] = gelu_d(s, act);
            }
    /* measured 9.7e-8 (y) and 7.8e-8 (pre) */
    T_ERR(L("matmul_batched G%d act %d: y vs double loop", G, (int)act), relerr(&y, NULL, yd), 1e-6);
    if (with_pre) T_ERR(L("matmul_batched G%d act %d: pre vs double loop", G, (int)act), relerr(&pre, NULL, pd), 8e-7);
    free(yd), free(pd);
    release();
}

static void test_matmul_batched_backward(int G, int M, int K, int N, nn_act act, int acc, int with_dx, int with_dw) {
    tensor x = rnd("x", 3, G, M, K, 1.0f), w = rnd("w", 3, G, N, K, 0.4f), pre = rnd("pre", 3, G, M, N, 2.0f);
    tensor dy0 = rnd("dy0", 3, G, M, N, 1.0f), dy = copy("dy", &dy0), dy_ref = copy("dy_ref", &dy0);
    tensor dx0 = acc ? rnd("dx0", 3, G, M, K, 1.0f) : filled("dx0", &x, NAN);
    tensor dx = copy("dx", &dx0), dx_ref = copy("dx_ref", &dx0);
    tensor dw0 = rnd("dw0", 3, G, N, K, 1.0f), dw = copy("dw", &dw0), dw_ref = copy("dw_ref", &dw0);
    op_matmul_batched_backward(with_dx ? &dx : NULL, with_dw ? &dw : NULL, &dy, &x, &w, act,
                               act != NN_ACT_NONE ? &pre : NULL, acc);
    for (int g = 0; g < G; g++) {
        tensor dxg = tensor_index0(&dx_ref, g), dwg = tensor_index0(&dw_ref, g), dyg = tensor_index0(&dy_ref, g);
        tensor xg = tensor_index0(&x, g), wg = tensor_index0(&w, g), pg = tensor_index0(&pre, g);
        op_matmul_backward(with_dx ? &dxg : NULL, with_dw ? &dwg : NULL, NULL, &dyg, &xg, &wg, act,
                           act != NN_ACT_NONE ? &pg : NULL, acc);
    }
    const char *tag = L("G%d %dx%dx%d act %d acc %d dx %d dw %d", G, M, K, N, (int)act, acc, with_dx, with_dw);
    char t[64];
    snprintf(t, sizeof t, "%.63s", tag);
    T_SAME(L("matmul_batched_backward %s: dy after act'", t), dy, dy_ref);
    T_SAME(L("matmul_batched_backward %s: dx", t), dx, dx_ref);
    T_SAME(L("matmul_batched_backward %s: dw", t), dw, dw_ref);
    /* double loops: g = dy * act'(pre); dx = g w; dw = g^T x */
    size_t nmn = (size_t)G * M * N;
    double *gd = malloc(sizeof(double) * nmn), *dxd = calloc((size_t)G * M * K, sizeof(double)),
           *dwd = calloc((size_t)G * N * K, sizeof(double));
    T_CHECK(gd && dxd && dwd, "malloc");
    for (size_t i = 0; i < nmn; i++) gd[i] = (double)P(&dy0)[i] * gelu_grad_d(P(&pre)[i], act);
    for (int g = 0; g < G; g++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double gv = gd[(g * M + i) * N + j];
                for (int k = 0; k < K; k++) {
                    dxd[(g * M + i) * K + k] += gv * P(&w)[(g * N + j) * K + k];
                    dwd[(g * N + j) * K + k] += gv * P(&x)[(g * M + i) * K + k];
                }
            }
    /* measured 5.6e-8 (dy), 9.9e-8 (dx), 8.8e-8 (dw) */
    T_ERR(L("matmul_batched_backward %s: dy after act' vs double", t), relerr(&dy, NULL, gd), 6e-7);
    if (with_dx) T_ERR(L("matmul_batched_backward %s: dx vs double", t), relerr(&dx, acc ? &dx0 : NULL, dxd), 1e-6);
    if (with_dw) T_ERR(L("matmul_batched_backward %s: dw (+=) vs double", t), relerr(&dw, &dw0, dwd), 9e-7);
    if (!with_dx) T_SAME(L("matmul_batched_backward %s: dx untouched", t), dx, dx0);
    if (!with_dw) T_SAME(L("matmul_batched_backward %s: dw untouched", t), dw, dw0);
    free(gd), free(dxd), free(dwd);
    release();
}

/* ---- argument checks ---------------------------------------------------------------------------- */
static float mbuf[256];
static tensor mv(const char *name, int ndim, int64_t a, int64_t b, int64_t c) {
    int64_t sh[3] = {a, b, c};
    return tensor_make(name, NN_F32, NN_CPU, ndim, sh, mbuf);
}
static void misuse_groups(void) { /* 3 groups of inputs, 2 of weights */
    tensor x = mv("x", 3, 3, 2, 4), w = mv("w", 3, 2, 5, 4), y = mv("y", 3, 3, 2, 5);
    op_matmul_batched(&y, &x, &w, NN_ACT_NONE, NULL);
}
static void misuse_2d_weight(void) {
    tensor x = mv("x", 3, 2, 2, 4), w = mv("w", 2, 5, 4, 0), y = mv("y", 3, 2, 2, 5);
    op_matmul_batched(&y, &x, &w, NN_ACT_NONE, NULL);
}
static void misuse_no_pre(void) {
    tensor x = mv("x", 3, 2, 2, 4), w = mv("w", 3, 2, 5, 4), dy = mv("dy", 3, 2, 2, 5), dx = mv("dx", 3, 2, 2, 4);
    op_matmul_batched_backward(&dx, NULL, &dy, &x, &w, NN_ACT_GELU_TANH, NULL, 0);
}
static void misuse_rms_width(void) { /* w has the wrong width */
    tensor a = mv("a", 2, 4, 8, 0), b = mv("b", 2, 4, 8, 0), r = mv("r", 2, 4, 8, 0), y = mv("y", 2, 4, 8, 0);
    tensor w = mv("w", 1, 7, 0, 0);
    op_add_rmsnorm(&r, &y, &a, &b, &w, 1e-5f, NULL);
}
static void test_misuse(void) {
    t_expect_fatal("batched: group counts differ", misuse_groups, "op_matmul_batched: x 'x' [3, 2, 4] does not fit weight 'w'");
    t_expect_fatal("batched: 2-d weight", misuse_2d_weight, "op_matmul_batched: weight 'w' must be 3-d");
    t_expect_fatal("batched backward: act without pre", misuse_no_pre, "op_matmul_batched_backward: activation 1 needs");
    t_expect_fatal("add_rmsnorm: weight width", misuse_rms_width, "op_add_rmsnorm: tensor 'w' has 7 elements, want 8");
}

static int bits_equal(const tensor *a, const tensor *b) { return memcmp(a->data, b->data, tensor_nbytes(a)) == 0; }

static void test_adamw_multi(void) {
    enum { N = 3 };
    const int64_t sizes[N] = {257, 3, 1000};
    const float wd[N] = {0.1f, 0.0f, 0.05f}, scales[3] = {0.5f, 1.0f, 0.3f};
    tensor p[N], m[N], v[N], pc[N], g[N], g0[N], rp[N], rm[N], rv[N], rpc[N], rg[N];
    tensor *Pp[N], *Pm[N], *Pv[N], *Ppc[N], *Pg[N];
    for (int i = 0; i < N; i++) {
        p[i] = rnd("p", 1, sizes[i], 0, 0, 1.0f), rp[i] = copy("rp", &p[i]);
        m[i] = filled("m", &p[i], 0.0f), rm[i] = filled("rm", &p[i], 0.0f);
        v[i] = filled("v", &p[i], 0.0f), rv[i] = filled("rv", &p[i], 0.0f);
        pc[i] = filled("pc", &p[i], NAN), rpc[i] = filled("rpc", &p[i], NAN);
        Pp[i] = &p[i], Pm[i] = &m[i], Pv[i] = &v[i], Ppc[i] = i == 1 ? NULL : &pc[i], Pg[i] = &g[i];
    }
    int same = 1, kept = 1;
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < N; i++) g[i] = rnd("g", 1, sizes[i], 0, 0, 1.0f), g0[i] = copy("g0", &g[i]), rg[i] = copy("rg", &g[i]);
        op_adamw_multi(N, Pp, Pg, Pm, Pv, Ppc, wd, scales[step - 1], 1e-2f, 0.9f, 0.999f, 1e-8f, step);
        for (int i = 0; i < N; i++) {
            op_scale(&rg[i], scales[step - 1]);
            op_adamw(&rp[i], &rg[i], &rm[i], &rv[i], 1e-2f, 0.9f, 0.999f, 1e-8f, wd[i], step);
            if (i != 1) op_copy(&rpc[i], &rp[i]);
            same &= bits_equal(&p[i], &rp[i]) && bits_equal(&m[i], &rm[i]) && bits_equal(&v[i], &rv[i]) &&
                    (i == 1 || bits_equal(&pc[i], &rpc[i]));
            kept &= bits_equal(&g[i], &g0[i]);
        }
    }
    T_CHECK(same, "op_adamw_multi differs from op_scale + op_adamw + op_copy");
    T_CHECK(kept, "op_adamw_multi changed g");
    T_CHECK(isnan(P(&pc[1])[0]), "op_adamw_multi wrote a compute copy that was NULL");
    double a = 0.5, b = 0.5;
    op_grad_sqnorm_multi(&a, N, (const tensor *const *)Pg);
    for (int i = 0; i < N; i++) op_grad_sqnorm(&b, &g[i]);
    T_CHECK(a == b && a > 0.5, "op_grad_sqnorm_multi %.17g vs %.17g", a, b);
    release();
}

int main(void) {
    printf("op_add_rmsnorm (CPU)\n");
    for (int mode = 0; mode < 3; mode++) test_add_rmsnorm(7, 200, mode, mode != 2);
    test_add_rmsnorm(1, 4096, 0, 1);
    test_add_rmsnorm_backward();
    printf("op_matmul_batched (CPU)\n");
    nn_act acts[3] = {NN_ACT_NONE, NN_ACT_GELU_TANH, NN_ACT_GELU_ERF};
    for (int a = 0; a < 3; a++) {
        test_matmul_batched(3, 9, 20, 13, acts[a], 1);
        test_matmul_batched(2, 5, 7, 6, acts[a], 0);
        test_matmul_batched_backward(3, 9, 20, 13, acts[a], 0, 1, 1);
        test_matmul_batched_backward(3, 9, 20, 13, acts[a], 1, 1, 1);
    }
    test_matmul_batched_backward(4, 6, 8, 5, NN_ACT_NONE, 0, 0, 1);
    test_matmul_batched_backward(4, 6, 8, 5, NN_ACT_GELU_ERF, 0, 1, 0);
    test_misuse();
    printf("op_adamw_multi, op_grad_sqnorm_multi (CPU)\n");
    test_adamw_multi();
    return t_done();
}
