/* test_ops_backward.c — the training ops of ops.h on the CPU backend.
 *
 * Every forward is compared with a naive double-precision loop. Every backward is compared with
 * central finite differences of that double forward under the scalar loss L = sum(wl * y) (wl random):
 * the analytic fp32 gradient must be within 3e-6 relative error (||a - b|| / ||b||). Parameter
 * gradients are pre-filled with random values and must come back as that value plus the gradient
 * (+= semantics); written gradients are pre-filled with NaN. AdamW is checked against three steps
 * of torch's documented algorithm in double.
 */
#include <math.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static float frand(void) { return t_frand(&rng); }

static nn_arena *ar;
static void fresh(const char *label) {
    if (ar) nn_arena_free(ar);
    ar = nn_arena_new(label, NN_CPU);
}
static tensor *T(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t sh[4] = {d0, d1, d2, d3};
    return nn_arena_add(ar, name, NN_F32, ndim, sh);
}
static tensor *TI(const char *name, int ndim, int64_t d0, int64_t d1) {
    int64_t sh[4] = {d0, d1, 0, 0};
    return nn_arena_add(ar, name, NN_I32, ndim, sh);
}
static float *P(tensor *t) { return (float *)t->data; }
static int32_t *I(tensor *t) { return (int32_t *)t->data; }
static void randn(tensor *t, float scale) {
    for (int64_t i = 0; i < tensor_numel(t); i++) P(t)[i] = scale * frand();
}
static double *dcopy(const tensor *t) { /* a double copy of an f32 tensor (caller frees) */
    int64_t n = tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)n);
    T_CHECK(d != NULL, "malloc");
    for (int64_t i = 0; i < n; i++) d[i] = ((const float *)t->data)[i];
    return d;
}

/* ||(a - a0) - b|| / ||b|| in double; a0 (the pre-filled value of an accumulated gradient) may be NULL. */
static double relerr(const float *a, const float *a0, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (a0 ? (double)a0[i] : 0.0) - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    if (num != num) return INFINITY; /* NaN left in an output */
    return sqrt(num / (den > 0 ? den : 1e-300));
}

/* "<label>: <what>" in a static buffer, for the printed table. */
static const char *label_;
static const char *nm(const char *what) {
    static char buf[160];
    snprintf(buf, sizeof buf, "%s: %s", label_ ? label_ : "", what);
    return buf;
}

/* Checks and prints one relative error (the printed table is the measured accuracy). */
#define T_GRAD(what, a, a0, b, n, tol)                                                             \
    do {                                                                                           \
        double e_ = relerr((a), (a0), (b), (n));                                                   \
        printf("  %-64s %.2e  (< %.0e)\n", nm(what), e_, (double)(tol));                            \
        T_CHECK(e_ < (tol), "%s: relative error %.3g >= %.1g", nm(what), e_, (double)(tol));        \
    } while (0)

/* Central differences of f (a double forward + loss) w.r.t. each of the n doubles of x. */
typedef double (*lossfn)(void *ctx);
static void fd_grad(double *x, int64_t n, lossfn f, void *ctx, double *g) {
    for (int64_t i = 0; i < n; i++) {
        double xi = x[i], h = 1e-5;
        x[i] = xi + h;
        double fp = f(ctx);
        x[i] = xi - h;
        double fm = f(ctx);
        x[i] = xi;
        g[i] = (fp - fm) / (2.0 * h);
    }
}
static double *fd_of(double *x, int64_t n, lossfn f, void *ctx) {
    double *g = malloc(sizeof(double) * (size_t)n);
    T_CHECK(g != NULL, "malloc");
    fd_grad(x, n, f, ctx, g);
    return g;
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double gelu_d(double x, nn_act act) {
    if (act == NN_ACT_GELU_TANH) return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    if (act == NN_ACT_GELU_ERF) return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    return x;
}

#define GRAD_TOL 3e-6 /* measured 2.7e-7 (flash attention dk vs double central differences) */
#define FWD_TOL 2e-6  /* measured 1.2e-7 (matmul forward vs the double loop; flash attention has its own) */

/* ---- matmul ----------------------------------------------------------------------------------- */
typedef struct {
    int M, N, K, bias;
    nn_act act;
    double *x, *w, *b, *wl, *y;
} mm_ctx;
static void mm_fwd(mm_ctx *c) {
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double s = c->bias ? c->b[j] : 0.0;
            for (int k = 0; k < c->K; k++) s += c->x[i * c->K + k] * c->w[j * c->K + k];
            c->y[i * c->N + j] = gelu_d(s, c->act);
        }
}
static double mm_loss(void *p) {
    mm_ctx *c = p;
    mm_fwd(c);
    return dot(c->wl, c->y, c->M * c->N);
}

static void test_matmul_backward(nn_act act, int bias, int accumulate) {
    int M = 6, K = 5, N = 4;
    static char lab[96];
    snprintf(lab, sizeof lab, "matmul act %d bias %d accumulate %d", (int)act, bias, accumulate);
    label_ = lab;
    fresh("matmul backward");
    tensor *x = T("x", 3, 2, M / 2, K, 0), *w = T("w", 2, N, K, 0, 0), *b = T("b", 1, N, 0, 0, 0);
    tensor *y = T("y", 2, M, N, 0, 0), *pre = T("pre", 2, M, N, 0, 0), *dy = T("dy", 2, M, N, 0, 0);
    tensor *dx = T("dx", 3, 2, M / 2, K, 0), *dw = T("dw", 2, N, K, 0, 0), *db = T("db", 1, N, 0, 0, 0);
    tensor *dx0 = T("dx0", 2, M, K, 0, 0), *dw0 = T("dw0", 2, N, K, 0, 0), *db0 = T("db0", 1, N, 0, 0, 0);
    nn_arena_commit(ar);
    randn(x, 1.0f), randn(w, 0.7f), randn(b, 0.5f), randn(dy, 1.0f);
    randn(dw0, 1.0f), randn(db0, 1.0f);
    if (accumulate) randn(dx0, 1.0f);
    else op_fill(dx0, NAN);
    op_copy(dx, dx0), op_copy(dw, dw0), op_copy(db, db0);
    mm_ctx c = {M, N, K, bias, act, dcopy(x), dcopy(w), dcopy(b), dcopy(dy), NULL};
    c.y = malloc(sizeof(double) * M * N);
    mm_fwd(&c);
    op_matmul(y, x, w, bias ? b : NULL, act, pre);
    T_GRAD("matmul forward", P(y), NULL, c.y, M * N, FWD_TOL);

    op_matmul_backward(dx, dw, bias ? db : NULL, dy, x, w, act, pre, accumulate);
    double *gx = fd_of(c.x, M * K, mm_loss, &c), *gw = fd_of(c.w, N * K, mm_loss, &c);
    double *gb = fd_of(c.b, N, mm_loss, &c);
    T_GRAD("matmul dx", P(dx), accumulate ? P(dx0) : NULL, gx, M * K, GRAD_TOL);
    T_GRAD("matmul dw (+=)", P(dw), P(dw0), gw, N * K, GRAD_TOL);
    if (bias) T_GRAD("matmul db (+=)", P(db), P(db0), gb, N, GRAD_TOL);
    else T_CHECK(memcmp(db->data, db0->data, tensor_nbytes(db)) == 0, "db untouched without bias");

    if (act == NN_ACT_NONE && bias) {
        /* A second micro-batch with the same gradient adds the same amount again; dx NULL skips it. */
        op_matmul_backward(NULL, dw, db, dy, x, w, act, NULL, 0);
        for (int i = 0; i < N * K; i++) gw[i] *= 2.0;
        for (int i = 0; i < N; i++) gb[i] *= 2.0;
        T_GRAD("matmul dw after two micro-batches", P(dw), P(dw0), gw, N * K, GRAD_TOL);
        T_GRAD("matmul db after two micro-batches", P(db), P(db0), gb, N, GRAD_TOL);
        /* Frozen weight: only dx. */
        op_fill(dx, NAN);
        op_matmul_backward(dx, NULL, NULL, dy, x, w, act, NULL, 0);
        T_GRAD("matmul dx, frozen weight", P(dx), NULL, gx, M * K, GRAD_TOL);
    }
    free(c.x), free(c.w), free(c.b), free(c.wl), free(c.y), free(gx), free(gw), free(gb);
}

/* ---- gelu ------------------------------------------------------------------------------------- */
typedef struct {
    int n;
    nn_act act;
    double *x, *wl;
} gelu_ctx;
static double gelu_loss(void *p) {
    gelu_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->n; i++) s += c->wl[i] * gelu_d(c->x[i], c->act);
    return s;
}
static void test_gelu_backward(nn_act act, int accumulate) {
    int n = 60;
    label_ = accumulate ? "gelu, accumulate" : "gelu";
    fresh("gelu backward");
    tensor *x = T("x", 2, 6, 10, 0, 0), *dy = T("dy", 1, n, 0, 0, 0), *dx = T("dx", 1, n, 0, 0, 0),
           *dx0 = T("dx0", 1, n, 0, 0, 0);
    nn_arena_commit(ar);
    randn(x, 4.0f), randn(dy, 1.0f);
    if (accumulate) randn(dx0, 1.0f);
    else op_fill(dx0, NAN);
    op_copy(dx, dx0);
    gelu_ctx c = {n, act, dcopy(x), dcopy(dy)};
    op_gelu_backward(dx, dy, x, act, accumulate);
    double *g = fd_of(c.x, n, gelu_loss, &c);
    T_GRAD(act == NN_ACT_GELU_TANH ? "gelu tanh dx" : "gelu erf dx", P(dx), accumulate ? P(dx0) : NULL,
           g, n, GRAD_TOL);
    if (!accumulate) { /* in place over dy */
        op_gelu_backward(dy, dy, x, act, 0);
        T_GRAD("gelu dx in place", P(dy), NULL, g, n, GRAD_TOL);
    }
    free(c.x), free(c.wl), free(g);
}

/* ---- rmsnorm ---------------------------------------------------------------------------------- */
typedef struct {
    int R, C;
    double eps, *x, *w, *wl, *y;
} rms_ctx;
static void rms_fwd(rms_ctx *c) {
    for (int r = 0; r < c->R; r++) {
        double ss = 0;
        for (int j = 0; j < c->C; j++) ss += c->x[r * c->C + j] * c->x[r * c->C + j];
        double rs = 1.0 / sqrt(ss / c->C + c->eps);
        for (int j = 0; j < c->C; j++) c->y[r * c->C + j] = c->x[r * c->C + j] * rs * c->w[j];
    }
}
static double rms_loss(void *p) {
    rms_ctx *c = p;
    rms_fwd(c);
    return dot(c->wl, c->y, c->R * c->C);
}
static void test_rmsnorm_backward(int accumulate, int in_place) {
    int R = 5, C = 16;
    float eps = 1e-5f;
    label_ = accumulate ? "rmsnorm, accumulate" : "rmsnorm";
    fresh("rmsnorm backward");
    tensor *x = T("x", 3, 1, R, C, 0), *w = T("w", 1, C, 0, 0, 0), *y = T("y", 2, R, C, 0, 0),
           *rstd = T("rstd", 1, R, 0, 0, 0), *dy = T("dy", 2, R, C, 0, 0), *dx = T("dx", 2, R, C, 0, 0),
           *dx0 = T("dx0", 2, R, C, 0, 0), *dw = T("dw", 1, C, 0, 0, 0), *dw0 = T("dw0", 1, C, 0, 0, 0);
    nn_arena_commit(ar);
    randn(x, 2.0f), randn(w, 1.0f), randn(dy, 1.0f), randn(dw0, 1.0f);
    if (accumulate) randn(dx0, 1.0f);
    else op_fill(dx0, NAN);
    op_copy(dx, dx0), op_copy(dw, dw0);
    rms_ctx c = {R, C, (double)eps, dcopy(x), dcopy(w), dcopy(dy), NULL};
    c.y = malloc(sizeof(double) * R * C);
    rms_fwd(&c);
    op_rmsnorm(y, x, w, eps, rstd);
    T_GRAD("rmsnorm forward", P(y), NULL, c.y, R * C, FWD_TOL);
    tensor *out = in_place ? dy : dx;
    op_rmsnorm_backward(out, dw, dy, x, w, rstd, accumulate);
    double *gx = fd_of(c.x, R * C, rms_loss, &c), *gw = fd_of(c.w, C, rms_loss, &c);
    T_GRAD(in_place ? "rmsnorm dx (in place)" : "rmsnorm dx", P(out), accumulate ? P(dx0) : NULL, gx,
           R * C, GRAD_TOL);
    T_GRAD("rmsnorm dw (+=)", P(dw), P(dw0), gw, C, GRAD_TOL);
    free(c.x), free(c.w), free(c.wl), free(c.y), free(gx), free(gw);
}

/* ---- RoPE ------------------------------------------------------------------------------------- */
typedef struct {
    int B, Tn, H, Dh;
    const int32_t *pos;
    double *x, *wl, *y;
} rope_ctx;
/* HF's angles: fp32 inv_freq and fp32 position x frequency; cos and sin of that angle in double. */
static void rope_fwd(rope_ctx *c) {
    int half = c->Dh / 2, HD = c->H * c->Dh;
    for (int bt = 0; bt < c->B * c->Tn; bt++)
        for (int i = 0; i < half; i++) {
            float inv = 1.0f / powf(10000.0f, (float)(2 * i) / (float)c->Dh);
            float a = (float)c->pos[bt] * inv;
            double cs = cos((double)a), sn = sin((double)a);
            for (int h = 0; h < c->H; h++) {
                const double *x = c->x + bt * HD + h * c->Dh;
                double *y = c->y + bt * HD + h * c->Dh;
                y[i] = x[i] * cs - x[i + half] * sn;
                y[i + half] = x[i + half] * cs + x[i] * sn;
            }
        }
}
static double rope_loss(void *p) {
    rope_ctx *c = p;
    rope_fwd(c);
    return dot(c->wl, c->y, c->B * c->Tn * c->H * c->Dh);
}
static void test_rope(void) {
    int B = 2, Tn = 7, H = 3, Dh = 8, HD = H * Dh, n = B * Tn * HD;
    label_ = "rope";
    fresh("rope");
    tensor *x = T("x", 3, B, Tn, HD, 0), *y = T("y", 3, B, Tn, HD, 0), *dy = T("dy", 3, B, Tn, HD, 0),
           *dx = T("dx", 3, B, Tn, HD, 0), *pos = TI("pos", 2, B, Tn);
    nn_arena_commit(ar);
    /* Row 0 packs samples of lengths 3, 2, 2 (positions restart); row 1 has large positions. */
    int32_t p[14] = {0, 1, 2, 0, 1, 0, 1, 2040, 2041, 2042, 2043, 2044, 2045, 2046};
    memcpy(I(pos), p, sizeof p);
    randn(x, 1.0f), randn(dy, 1.0f);
    rope_ctx c = {B, Tn, H, Dh, p, dcopy(x), dcopy(dy), NULL};
    c.y = malloc(sizeof(double) * n);
    rope_fwd(&c);
    op_rope(y, x, pos, H, 10000.0f);
    T_GRAD("rope forward", P(y), NULL, c.y, n, FWD_TOL);
    /* Position 0 is the identity, wherever it sits in the row. */
    T_CHECK(memcmp(P(y) + 3 * HD, P(x) + 3 * HD, sizeof(float) * HD) == 0, "restarted position 0");
    T_CHECK(memcmp(P(y) + 1 * HD, P(y) + 4 * HD, sizeof(float) * HD) != 0, "different x, same pos");
    op_fill(dx, NAN);
    op_rope_backward(dx, dy, pos, H, 10000.0f);
    double *g = fd_of(c.x, n, rope_loss, &c);
    T_GRAD("rope dx", P(dx), NULL, g, n, GRAD_TOL);
    /* In place both ways: rope then its backward is the identity (a rotation). */
    op_copy(y, x);
    op_rope(y, y, pos, H, 10000.0f);
    op_rope_backward(y, y, pos, H, 10000.0f);
    double *xd = dcopy(x);
    T_GRAD("rope backward(rope(x)) = x", P(y), NULL, xd, n, 5e-7); /* measured 5.0e-8 */
    free(c.x), free(c.wl), free(c.y), free(g), free(xd);
}

/* ---- SwiGLU ----------------------------------------------------------------------------------- */
typedef struct {
    int n;
    double *g, *u, *wl;
} swi_ctx;
static double swi_loss(void *p) {
    swi_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->n; i++) s += c->wl[i] * c->g[i] / (1.0 + exp(-c->g[i])) * c->u[i];
    return s;
}
static void test_swiglu(void) {
    int n = 48;
    label_ = "swiglu";
    fresh("swiglu");
    tensor *g = T("gate", 2, 4, 12, 0, 0), *u = T("up", 2, 4, 12, 0, 0), *y = T("y", 2, 4, 12, 0, 0),
           *dy = T("dy", 2, 4, 12, 0, 0), *dg = T("dgate", 2, 4, 12, 0, 0), *du = T("dup", 2, 4, 12, 0, 0);
    nn_arena_commit(ar);
    randn(g, 5.0f), randn(u, 1.0f), randn(dy, 1.0f);
    swi_ctx c = {n, dcopy(g), dcopy(u), dcopy(dy)};
    double *ref = malloc(sizeof(double) * n);
    for (int i = 0; i < n; i++) ref[i] = c.g[i] / (1.0 + exp(-c.g[i])) * c.u[i];
    op_swiglu(y, g, u);
    T_GRAD("swiglu forward", P(y), NULL, ref, n, FWD_TOL);
    op_fill(dg, NAN), op_fill(du, NAN);
    op_swiglu_backward(dg, du, dy, g, u);
    double *gg = fd_of(c.g, n, swi_loss, &c), *gu = fd_of(c.u, n, swi_loss, &c);
    T_GRAD("swiglu dgate", P(dg), NULL, gg, n, GRAD_TOL);
    T_GRAD("swiglu dup", P(du), NULL, gu, n, GRAD_TOL);
    op_swiglu_backward(dy, du, dy, g, u); /* dgate over dy */
    T_GRAD("swiglu dgate in place", P(dy), NULL, gg, n, GRAD_TOL);
    free(c.g), free(c.u), free(c.wl), free(ref), free(gg), free(gu);
}

/* ---- attention -------------------------------------------------------------------------------- */
typedef struct {
    int B, Tn, H, Hkv, Dh, causal;
    const int32_t *seg; /* [B,T] or NULL */
    double scale, *q, *k, *v, *wl, *o, *p;
} att_ctx;
static void att_fwd(att_ctx *c) {
    int HD = c->H * c->Dh, KVD = c->Hkv * c->Dh, T_ = c->Tn;
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++) {
            int g = h / (c->H / c->Hkv);
            for (int i = 0; i < T_; i++) {
                double mx = -INFINITY, sum = 0, *p = c->p + ((b * c->H + h) * T_ + i) * T_;
                for (int j = 0; j < T_; j++) {
                    int vis = (!c->causal || j <= i) && (!c->seg || c->seg[b * T_ + j] == c->seg[b * T_ + i]);
                    double s = 0;
                    for (int d = 0; d < c->Dh; d++)
                        s += c->q[(b * T_ + i) * HD + h * c->Dh + d] * c->k[(b * T_ + j) * KVD + g * c->Dh + d];
                    p[j] = vis ? s * c->scale : -INFINITY;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < T_; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j < T_; j++) p[j] /= sum;
                for (int d = 0; d < c->Dh; d++) {
                    double s = 0;
                    for (int j = 0; j < T_; j++) s += p[j] * c->v[(b * T_ + j) * KVD + g * c->Dh + d];
                    c->o[(b * T_ + i) * HD + h * c->Dh + d] = s;
                }
            }
        }
}
static double att_loss(void *p) {
    att_ctx *c = p;
    att_fwd(c);
    return dot(c->wl, c->o, c->B * c->Tn * c->H * c->Dh);
}

/* seg: B*T segment ids or NULL. keep >= 0: loss weights only on the tokens of row 0 in segment
 * `keep`; then every other token must get exactly zero gradient. */
static void test_attention_backward(const char *label, int B, int Tn, int H, int Hkv, int Dh,
                                    int causal, const int32_t *seg, int keep) {
    int HD = H * Dh, KVD = Hkv * Dh, nq = B * Tn * HD, nk = B * Tn * KVD;
    label_ = label;
    fresh(label);
    tensor *q = T("q", 3, B, Tn, HD, 0), *k = T("k", 3, B, Tn, KVD, 0), *v = T("v", 3, B, Tn, KVD, 0),
           *o = T("o", 3, B, Tn, HD, 0), *att = T("att", 4, B, H, Tn, Tn), *dout = T("dout", 3, B, Tn, HD, 0),
           *dq = T("dq", 3, B, Tn, HD, 0), *dk = T("dk", 3, B, Tn, KVD, 0), *dv = T("dv", 3, B, Tn, KVD, 0),
           *scr = T("scratch", 2, Tn, Tn, 0, 0), *sg = seg ? TI("seg", 2, B, Tn) : NULL;
    tensor *lse = T("lse", 3, B, H, Tn, 0), *fo = T("flash o", 3, B, Tn, HD, 0),
           *fdq = T("flash dq", 3, B, Tn, HD, 0), *fdk = T("flash dk", 3, B, Tn, KVD, 0),
           *fdv = T("flash dv", 3, B, Tn, KVD, 0);
    nn_arena_commit(ar);
    if (seg) memcpy(I(sg), seg, sizeof(int32_t) * B * Tn);
    randn(q, 1.5f), randn(k, 1.5f), randn(v, 1.0f), randn(dout, 1.0f);
    if (keep >= 0)
        for (int t = 0; t < B * Tn; t++)
            if (t >= Tn || seg[t] != keep)
                for (int j = 0; j < HD; j++) P(dout)[t * HD + j] = 0.0f;
    float scale = 1.0f / sqrtf((float)Dh);
    att_ctx c = {B, Tn, H, Hkv, Dh, causal, seg, scale, dcopy(q), dcopy(k), dcopy(v), dcopy(dout), NULL, NULL};
    c.o = malloc(sizeof(double) * nq), c.p = malloc(sizeof(double) * B * H * Tn * Tn);
    att_fwd(&c);
    op_fill(o, NAN);
    op_attention_seg(o, q, k, v, H, Hkv, scale, causal, sg, att, NN_ATT_KEEP);
    T_GRAD("attention forward", P(o), NULL, c.o, nq, FWD_TOL);
    T_GRAD("attention probabilities", P(att), NULL, c.p, B * H * Tn * Tn, FWD_TOL);
    op_fill(dq, NAN), op_fill(dk, NAN), op_fill(dv, NAN);
    op_attention_backward(dq, dk, dv, dout, q, k, v, att, H, Hkv, scale, scr);
    double *gq = fd_of(c.q, nq, att_loss, &c), *gk = fd_of(c.k, nk, att_loss, &c),
           *gv = fd_of(c.v, nk, att_loss, &c);
    T_GRAD("attention dq", P(dq), NULL, gq, nq, GRAD_TOL);
    T_GRAD("attention dk", P(dk), NULL, gk, nk, GRAD_TOL);
    T_GRAD("attention dv", P(dv), NULL, gv, nk, GRAD_TOL);
    /* The flash form (no T x T buffer) gives the same forward and gradients. */
    op_fill(fo, NAN), op_fill(lse, NAN);
    op_flash_attention(fo, lse, q, k, v, H, Hkv, scale, causal, sg);
    T_GRAD("flash attention forward", P(fo), NULL, c.o, nq, 1e-5); /* measured 1.7e-6 (f32 vs the double loop) */
    double lerr = 0.0; /* exp(scale q_i·k_j - lse_i) = P_ij */
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < Tn; i++)
            for (int j = 0; j < Tn; j++) {
                double pij = c.p[((int64_t)bh * Tn + i) * Tn + j];
                if (pij <= 0.0) continue;
                int b = bh / H, h = bh % H;
                double sc = 0.0;
                for (int t = 0; t < Dh; t++)
                    sc += c.q[(b * Tn + i) * HD + h * Dh + t] * c.k[(b * Tn + j) * KVD + (h / (H / Hkv)) * Dh + t];
                double e = fabs(exp(scale * sc - P(lse)[bh * Tn + i]) - pij);
                lerr = e > lerr ? e : lerr;
            }
    T_CHECK(lerr < 2e-6, "flash lse: max |exp(s - lse) - P| = %.3g", lerr); /* measured 1.2e-7 */
    op_fill(fdq, NAN), op_fill(fdk, NAN), op_fill(fdv, NAN);
    op_flash_attention_backward(fdq, fdk, fdv, dout, q, k, v, fo, lse, H, Hkv, scale, causal, sg);
    T_GRAD("flash attention dq", P(fdq), NULL, gq, nq, GRAD_TOL);
    T_GRAD("flash attention dk", P(fdk), NULL, gk, nk, GRAD_TOL);
    T_GRAD("flash attention dv", P(fdv), NULL, gv, nk, GRAD_TOL);
    if (keep >= 0) {
        int nz = 0, in = 0;
        for (int t = 0; t < B * Tn; t++) {
            int other = t >= Tn || seg[t] != keep;
            for (int j = 0; j < HD; j++) nz += other && P(dq)[t * HD + j] != 0.0f;
            for (int j = 0; j < KVD; j++) {
                nz += other && (P(dk)[t * KVD + j] != 0.0f || P(dv)[t * KVD + j] != 0.0f);
                in += !other && P(dv)[t * KVD + j] != 0.0f;
            }
        }
        T_EQ_INT(nz, 0);     /* no gradient crosses a segment boundary */
        T_CHECK(in > 0, "the kept segment itself gets gradient");
    }
    free(c.q), free(c.k), free(c.v), free(c.wl), free(c.o), free(c.p), free(gq), free(gk), free(gv);
}

/* A packed row gives each sample exactly what attention over that sample alone gives. */
static void test_packed_equals_separate(void) {
    int Tn = 9, H = 4, Hkv = 2, Dh = 4, HD = H * Dh, KVD = Hkv * Dh, s0 = 3, len = 4;
    int32_t seg[9] = {0, 0, 0, 1, 1, 1, 1, 2, 2};
    label_ = "attention";
    fresh("packed vs separate");
    tensor *q = T("q", 3, 1, Tn, HD, 0), *k = T("k", 3, 1, Tn, KVD, 0), *v = T("v", 3, 1, Tn, KVD, 0),
           *o = T("o", 3, 1, Tn, HD, 0), *att = T("att", 2, Tn, Tn, 0, 0), *sg = TI("seg", 2, 1, Tn);
    tensor *q1 = T("q1", 3, 1, len, HD, 0), *k1 = T("k1", 3, 1, len, KVD, 0), *v1 = T("v1", 3, 1, len, KVD, 0),
           *o1 = T("o1", 3, 1, len, HD, 0), *att1 = T("att1", 2, len, len, 0, 0);
    nn_arena_commit(ar);
    memcpy(I(sg), seg, sizeof seg);
    randn(q, 1.0f), randn(k, 1.0f), randn(v, 1.0f);
    memcpy(P(q1), P(q) + s0 * HD, sizeof(float) * len * HD);
    memcpy(P(k1), P(k) + s0 * KVD, sizeof(float) * len * KVD);
    memcpy(P(v1), P(v) + s0 * KVD, sizeof(float) * len * KVD);
    float scale = 0.5f;
    op_attention_seg(o, q, k, v, H, Hkv, scale, 1, sg, att, NN_ATT_SCRATCH);
    op_attention(o1, q1, k1, v1, H, Hkv, scale, 1, att1, NN_ATT_SCRATCH);
    double *ref = dcopy(o1);
    /* measured 0 (bit-identical here); 1e-6 is about ten f32 roundings */
    T_GRAD("packed sample = sample alone", P(o) + s0 * HD, NULL, ref, len * HD, 1e-6);
    free(ref);
}

/* The visual head's depth attention is torch.nn.MultiheadAttention(E, H, bias=True,
 * batch_first=True) with the causal bool mask triu(ones(D, D), 1): q/k/v from the packed in_proj
 * [3E,E] (rows q;k;v) plus bias, heads as contiguous Dh blocks of E, softmax(q k^T / sqrt(Dh)) v,
 * then out_proj. Composed here from op_matmul and op_attention over views of the packed weight. */
static void test_mha_composition(void) {
    int N = 3, D = 8, H = 4, Dh = 4, E = H * Dh;
    fresh("mha");
    tensor *x = T("x", 3, N, D, E, 0), *inw = T("in_proj_weight", 2, 3 * E, E, 0, 0),
           *inb = T("in_proj_bias", 1, 3 * E, 0, 0, 0), *ow = T("out_proj.weight", 2, E, E, 0, 0),
           *ob = T("out_proj.bias", 1, E, 0, 0, 0), *q = T("q", 3, N, D, E, 0), *k = T("k", 3, N, D, E, 0),
           *v = T("v", 3, N, D, E, 0), *a = T("a", 3, N, D, E, 0), *y = T("y", 3, N, D, E, 0),
           *att = T("att", 2, D, D, 0, 0);
    nn_arena_commit(ar);
    randn(x, 1.0f), randn(inw, 0.4f), randn(inb, 0.2f), randn(ow, 0.3f), randn(ob, 0.2f);
    tensor *qkv[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        int64_t ws[2] = {E, E}, bs[1] = {E};
        tensor wi = tensor_make("in_proj part", NN_F32, NN_CPU, 2, ws, P(inw) + i * E * E);
        tensor bi = tensor_make("in_proj bias part", NN_F32, NN_CPU, 1, bs, P(inb) + i * E);
        op_matmul(qkv[i], x, &wi, &bi, NN_ACT_NONE, NULL);
    }
    op_attention(a, q, k, v, H, H, 1.0f / sqrtf((float)Dh), 1, att, NN_ATT_SCRATCH);
    op_matmul(y, a, ow, ob, NN_ACT_NONE, NULL);
    /* Reference: torch's documented MHA in double. */
    double *ref = malloc(sizeof(double) * N * D * E), *pq = malloc(sizeof(double) * 3 * N * D * E),
           *ao = malloc(sizeof(double) * N * D * E);
    for (int r = 0; r < N * D; r++)
        for (int o = 0; o < 3 * E; o++) {
            double s = P(inb)[o];
            for (int e = 0; e < E; e++) s += (double)P(x)[r * E + e] * P(inw)[o * E + e];
            pq[r * 3 * E + o] = s; /* [q | k | v] per row */
        }
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < D; i++) {
                double sc[8], mx = -INFINITY, sum = 0;
                for (int j = 0; j < D; j++) {
                    double s = 0;
                    for (int d = 0; d < Dh; d++)
                        s += pq[(n * D + i) * 3 * E + h * Dh + d] * pq[(n * D + j) * 3 * E + E + h * Dh + d];
                    sc[j] = j > i ? -INFINITY : s / sqrt((double)Dh); /* mask True above the diagonal */
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j < D; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int d = 0; d < Dh; d++) {
                    double s = 0;
                    for (int j = 0; j < D; j++) s += sc[j] / sum * pq[(n * D + j) * 3 * E + 2 * E + h * Dh + d];
                    ao[(n * D + i) * E + h * Dh + d] = s;
                }
            }
    for (int r = 0; r < N * D; r++)
        for (int o = 0; o < E; o++) {
            double s = P(ob)[o];
            for (int e = 0; e < E; e++) s += ao[r * E + e] * P(ow)[o * E + e];
            ref[r * E + o] = s;
        }
    T_GRAD("MultiheadAttention composition", P(y), NULL, ref, N * D * E, FWD_TOL);
    free(ref), free(pq), free(ao);
}

/* ---- embedding -------------------------------------------------------------------------------- */
typedef struct {
    int N, C;
    const int32_t *ids;
    double *tab, *wl;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    double s = 0;
    for (int n = 0; n < c->N; n++)
        for (int j = 0; j < c->C; j++) s += c->wl[n * c->C + j] * c->tab[c->ids[n] * c->C + j];
    return s;
}
static void test_embedding(void) {
    int V = 7, C = 5, N = 10;
    int32_t ids[10] = {3, 0, 6, 3, 3, 1, 0, 5, 2, 3}; /* repeats add up; 4 is never used */
    label_ = "embedding";
    fresh("embedding");
    tensor *tab = T("table", 2, V, C, 0, 0), *id = TI("ids", 2, 2, 5), *y = T("y", 3, 2, 5, C, 0),
           *dy = T("dy", 2, N, C, 0, 0), *dt = T("dtable", 2, V, C, 0, 0), *dt0 = T("dtable0", 2, V, C, 0, 0);
    nn_arena_commit(ar);
    memcpy(I(id), ids, sizeof ids);
    randn(tab, 1.0f), randn(dy, 1.0f), randn(dt0, 1.0f);
    op_copy(dt, dt0);
    op_fill(y, NAN);
    op_embedding(y, id, tab);
    int bad = 0;
    for (int n = 0; n < N; n++) bad += memcmp(P(y) + n * C, P(tab) + ids[n] * C, sizeof(float) * C) != 0;
    T_EQ_INT(bad, 0);
    op_embedding_backward(dt, dy, id);
    emb_ctx c = {N, C, ids, dcopy(tab), dcopy(dy)};
    double *g = fd_of(c.tab, V * C, emb_loss, &c);
    T_GRAD("embedding dtable (+=)", P(dt), P(dt0), g, V * C, GRAD_TOL);
    T_CHECK(memcmp(P(dt) + 4 * C, P(dt0) + 4 * C, sizeof(float) * C) == 0, "unused row untouched");
    free(c.tab), free(c.wl), free(g);
}

/* ---- cross-entropy ---------------------------------------------------------------------------- */
typedef struct {
    int M, V;
    const int32_t *t;
    double scale, *x;
} ce_ctx;
static double ce_sum(ce_ctx *c, int *count) {
    double s = 0;
    *count = 0;
    for (int r = 0; r < c->M; r++) {
        if (c->t[r] == NN_IGNORE_INDEX) continue;
        const double *x = c->x + r * c->V;
        double mx = -INFINITY, z = 0;
        for (int j = 0; j < c->V; j++) mx = x[j] > mx ? x[j] : mx;
        for (int j = 0; j < c->V; j++) z += exp(x[j] - mx);
        s += mx + log(z) - x[c->t[r]];
        (*count)++;
    }
    return s;
}
static double ce_loss(void *p) {
    ce_ctx *c = p;
    int n;
    return c->scale * ce_sum(c, &n);
}
static void test_cross_entropy(float offset) {
    int M = 7, V = 11;
    int32_t tg[7] = {3, NN_IGNORE_INDEX, 0, 10, NN_IGNORE_INDEX, 7, 3};
    label_ = "cross-entropy";
    fresh("cross entropy");
    tensor *lg = T("logits", 3, 1, M, V, 0), *t = TI("targets", 2, 1, M), *dl = T("dlogits", 2, M, V, 0, 0);
    nn_arena_commit(ar);
    memcpy(I(t), tg, sizeof tg);
    randn(lg, 4.0f);
    for (int i = 0; i < M * V; i++) P(lg)[i] += offset; /* softmax is shift-invariant; exp is not */
    float scale = 0.5f / 5.0f; /* e.g. a mean over 5 supervised rows, times a loss weight */
    ce_ctx c = {M, V, tg, (double)scale, dcopy(lg)};
    int rcount;
    double rsum = ce_sum(&c, &rcount), lsum = NAN;
    int64_t count = -1;
    op_fill(dl, NAN);
    op_cross_entropy(dl, &lsum, &count, lg, t, scale);
    T_EQ_INT(count, rcount);
    /* measured 4.6e-10 relative (f32 vs the double loop) */
    T_CHECK(fabs(lsum - rsum) <= 5e-9 * fabs(rsum), "loss sum %.9g vs %.9g (offset %g)", lsum, rsum,
            (double)offset);
    double *g = fd_of(c.x, M * V, ce_loss, &c);
    T_GRAD(offset != 0.0f ? "dlogits, logits + 1000" : "dlogits", P(dl), NULL,
           g, M * V, GRAD_TOL);
    int nz = 0;
    for (int j = 0; j < V; j++) nz += P(dl)[1 * V + j] != 0.0f || P(dl)[4 * V + j] != 0.0f;
    T_EQ_INT(nz, 0); /* ignored rows: exactly zero */
    /* Loss only, then in place over the logits. */
    double l2 = 0;
    int64_t c2 = 0;
    op_cross_entropy(NULL, &l2, &c2, lg, t, scale);
    T_CHECK(l2 == lsum && c2 == count, "loss without dlogits");
    op_cross_entropy(lg, &l2, &c2, lg, t, scale);
    T_CHECK(memcmp(lg->data, dl->data, tensor_nbytes(dl)) == 0, "dlogits in place over logits");
    free(c.x), free(g);
}

/* ---- AdamW, grad norm, scale ------------------------------------------------------------------ */
static void test_adamw(float wd) {
    int n = 12, steps = 3;
    float lr = 0.1f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    label_ = "adamw";
    fresh("adamw");
    tensor *p = T("p", 1, n, 0, 0, 0), *g = T("g", 1, n, 0, 0, 0), *m = T("m", 1, n, 0, 0, 0),
           *v = T("v", 1, n, 0, 0, 0);
    nn_arena_commit(ar);
    randn(p, 1.0f);
    op_fill(m, 0.0f), op_fill(v, 0.0f);
    double rp[12], rm[12] = {0}, rv[12] = {0};
    for (int i = 0; i < n; i++) rp[i] = P(p)[i];
    for (int t = 1; t <= steps; t++) {
        randn(g, 1.0f);
        if (t == 2) P(g)[0] = 0.0f; /* a zero gradient still decays and still moves by m */
        op_adamw(p, g, m, v, lr, b1, b2, eps, wd, t);
        /* torch.optim.AdamW, as documented: decay first, then the bias-corrected Adam step. */
        for (int i = 0; i < n; i++) {
            double gi = P(g)[i];
            rp[i] -= (double)lr * wd * rp[i];
            rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
            rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
            double mh = rm[i] / (1.0 - pow(b1, t)), vh = rv[i] / (1.0 - pow(b2, t));
            rp[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    T_GRAD(wd > 0 ? "adamw p (wd 0.5)" : "adamw p (wd 0)", P(p), NULL, rp, n, 1e-6); /* measured 9.3e-8 */
    T_GRAD("adamw m", P(m), NULL, rm, n, 6e-7);                                      /* measured 5.0e-8 */
    T_GRAD("adamw v", P(v), NULL, rv, n, 5e-7);                                      /* measured 4.2e-8 */
}

static void test_norm_scale(void) {
    label_ = "grad norm, scale";
    fresh("norm");
    tensor *g = T("g", 2, 7, 9, 0, 0);
    nn_arena_commit(ar);
    randn(g, 3.0f);
    double ref = 0, acc = 2.5;
    for (int i = 0; i < 63; i++) ref += (double)P(g)[i] * P(g)[i];
    op_grad_sqnorm(&acc, g);
    /* measured 0 (double; 1e-12 allows another summation order) */
    T_CHECK(fabs(acc - (2.5 + ref)) < 1e-12 * ref, "sqnorm accumulates: %.17g vs %.17g", acc, 2.5 + ref);
    double *before = dcopy(g);
    op_scale(g, 0.25f);
    for (int i = 0; i < 63; i++) before[i] *= 0.25;
    T_GRAD("scale", P(g), NULL, before, 63, 1e-7); /* measured 0 */
    free(before);
}

/* ---- argument checks: each misuse exits 1 with a message naming the op ------------------------ */

static float mbuf[64];
static int32_t ibuf[8];
static tensor mk(const char *name, nn_dtype dt, nn_device dev, int64_t a, int64_t b, int64_t c) {
    int64_t sh[3] = {a, b, c};
    return tensor_make(name, dt, dev, c ? 3 : 2, sh, dt == NN_I32 ? (void *)ibuf : (void *)mbuf);
}
static void misuse_cuda(void) { /* a CUDA tensor: refused before its data is touched */
    tensor x = mk("x", NN_F32, NN_CUDA, 1, 2, 4), pos = mk("pos", NN_I32, NN_CUDA, 1, 2, 0);
    op_rope(&x, &x, &pos, 1, 10000.0f);
}
static void misuse_mixed(void) { /* CUDA data with CPU positions: refused before either is touched */
    tensor x = mk("x", NN_F32, NN_CUDA, 1, 2, 4), pos = mk("pos", NN_I32, NN_CPU, 1, 2, 0);
    op_rope(&x, &x, &pos, 1, 10000.0f);
}
static void misuse_id(void) {
    tensor y = mk("y", NN_F32, NN_CPU, 2, 4, 0), tab = mk("table", NN_F32, NN_CPU, 3, 4, 0),
           ids = mk("ids", NN_I32, NN_CPU, 1, 2, 0);
    ibuf[0] = 1, ibuf[1] = 3;
    op_embedding(&y, &ids, &tab);
}
static void misuse_target(void) {
    tensor lg = mk("logits", NN_F32, NN_CPU, 2, 5, 0), t = mk("targets", NN_I32, NN_CPU, 1, 2, 0);
    ibuf[0] = 0, ibuf[1] = -1;
    double l;
    int64_t n;
    op_cross_entropy(NULL, &l, &n, &lg, &t, 1.0f);
}
static void misuse_pre(void) {
    tensor x = mk("x", NN_F32, NN_CPU, 2, 3, 0), w = mk("w", NN_F32, NN_CPU, 4, 3, 0),
           dy = mk("dy", NN_F32, NN_CPU, 2, 4, 0);
    op_matmul_backward(NULL, &w, NULL, &dy, &x, &w, NN_ACT_GELU_ERF, NULL, 0);
}
static void misuse_att(void) { /* probabilities kept for one head only */
    tensor t[9];
    for (int i = 0; i < 9; i++) {
        t[i] = mk(i == 7 ? "att" : "qkv", NN_F32, NN_CPU, 1, 2, 4);
        t[i].data = mbuf + 6 * i;
    }
    t[7] = mk("att", NN_F32, NN_CPU, 2, 2, 0), t[7].data = mbuf + 42;
    op_attention_backward(&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], 2, 2, 1.0f, &t[8]);
}
static void misuse_pos(void) {
    tensor x = mk("x", NN_F32, NN_CPU, 1, 2, 4), pos = mk("pos", NN_I32, NN_CPU, 1, 2, 0);
    ibuf[0] = 0, ibuf[1] = -3;
    op_rope(&x, &x, &pos, 1, 10000.0f);
}

static void test_misuse(void) {
#ifndef ASVR_HAVE_CUDA
    t_expect_fatal("cuda tensor", misuse_cuda, "this build has no CUDA backend");
#else
    (void)misuse_cuda; /* runs on the device in this build: tests/test_ops_cuda_train.c */
#endif
    t_expect_fatal("cuda and cpu tensors", misuse_mixed, "tensor 'pos' is on cpu but 'x' is on cuda");
    t_expect_fatal("id out of range", misuse_id, "outside [0, 3)");
    t_expect_fatal("target -1", misuse_target, "not the ignore index");
    t_expect_fatal("activation without pre", misuse_pre, "needs the saved pre-activation");
    t_expect_fatal("att not kept", misuse_att, "kept probabilities");
    t_expect_fatal("negative position", misuse_pos, "positions are >= 0");
}

int main(void) {
    nn_act acts[3] = {NN_ACT_NONE, NN_ACT_GELU_TANH, NN_ACT_GELU_ERF};
    for (int a = 0; a < 3; a++)
        for (int bias = 0; bias < 2; bias++)
            for (int acc = 0; acc < 2; acc++) test_matmul_backward(acts[a], bias, acc);
    for (int acc = 0; acc < 2; acc++) {
        test_gelu_backward(NN_ACT_GELU_TANH, acc);
        test_gelu_backward(NN_ACT_GELU_ERF, acc);
    }
    test_rmsnorm_backward(0, 0);
    test_rmsnorm_backward(1, 0);
    test_rmsnorm_backward(0, 1);
    test_rope();
    test_swiglu();

    int32_t seg[2 * 9] = {0, 0, 0, 1, 1, 1, 1, 2, 2, /* row 0: three samples */
                          5, 5, 5, 5, 5, 7, 7, 7, 7}; /* row 1: two, arbitrary ids */
    test_attention_backward("attention causal mha", 2, 7, 4, 4, 4, 1, NULL, -1);
    test_attention_backward("attention causal gqa", 2, 7, 4, 2, 4, 1, NULL, -1);
    test_attention_backward("attention full gqa", 2, 6, 6, 2, 4, 0, NULL, -1);
    test_attention_backward("attention packed causal gqa", 2, 9, 4, 2, 4, 1, seg, -1);
    test_attention_backward("attention packed bidirectional", 2, 9, 2, 2, 4, 0, seg, -1);
    /* Loss on the middle sample only: it may not reach the samples before or after it. */
    test_attention_backward("attention packed causal, loss on sample 1", 2, 9, 4, 1, 4, 1, seg, 1);
    test_attention_backward("attention packed bidirectional, loss on sample 1", 2, 9, 4, 2, 4, 0, seg, 1);
    test_attention_backward("attention depth head T=D=8", 3, 8, 4, 4, 4, 1, NULL, -1);
    test_packed_equals_separate();
    test_mha_composition();

    test_embedding();
    test_cross_entropy(0.0f);
    test_cross_entropy(1000.0f);
    test_adamw(0.5f);
    test_adamw(0.0f);
    test_norm_scale();
    test_misuse();
    nn_arena_free(ar);
    return t_done();
}
