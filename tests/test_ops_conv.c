/* test_ops_conv.c — the convolutional-block ops (GroupNorm, SiLU, same-padding conv over a
 * channels-last grid) against naive double-precision loops on fresh seeded random inputs, written
 * from the NCHW definitions of torch.nn.GroupNorm / F.silu / nn.Conv2d(padding=k//2). */
#include <math.h>
#include <stdint.h>

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
static float *P(tensor *t) { return (float *)t->data; }
static void fill_rand(tensor *t, float scale, float offset) {
    for (int64_t i = 0; i < tensor_numel(t); i++) P(t)[i] = offset + scale * frand();
}

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

/* Reference GroupNorm on the NCHW view x_nchw[b][c][p] = x[b][p][c]. */
static void groupnorm_ref(double *ref, const float *x, const float *w, const float *bias, int64_t B,
                          int64_t Pn, int64_t C, int G, double eps) {
    int64_t cg = C / G;
    for (int64_t b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            double s = 0, ss = 0;
            for (int64_t c = g * cg; c < (g + 1) * cg; c++)
                for (int64_t p = 0; p < Pn; p++) s += x[(b * Pn + p) * C + c];
            double mean = s / (double)(cg * Pn);
            for (int64_t c = g * cg; c < (g + 1) * cg; c++)
                for (int64_t p = 0; p < Pn; p++) {
                    double d = x[(b * Pn + p) * C + c] - mean;
                    ss += d * d;
                }
            double rstd = 1.0 / sqrt(ss / (double)(cg * Pn) + eps);
            for (int64_t c = g * cg; c < (g + 1) * cg; c++)
                for (int64_t p = 0; p < Pn; p++) {
                    int64_t i = (b * Pn + p) * C + c;
                    ref[i] = (x[i] - mean) * rstd * w[c] + bias[c];
                }
        }
}

static void test_groupnorm(int64_t B, int64_t Pn, int64_t C, int G, float offset) {
    fresh("groupnorm");
    tensor *x = T("gn.x", 3, B, Pn, C, 0), *y = T("gn.y", 3, B, Pn, C, 0), *w = T("gn.w", 1, C, 0, 0, 0),
           *b = T("gn.b", 1, C, 0, 0, 0);
    nn_arena_commit(ar);
    /* an offset makes the mean large against the spread, as real activations often are */
    fill_rand(x, 3.0f, offset), fill_rand(w, 1.0f, 1.0f), fill_rand(b, 0.5f, 0.0f);
    int64_t n = B * Pn * C;
    double *ref = malloc(sizeof(double) * (size_t)n);
    groupnorm_ref(ref, P(x), P(w), P(b), B, Pn, C, G, 1e-6);
    op_fill(y, NAN);
    op_groupnorm(y, x, w, b, G, 1e-6f);
    double e = relerr(P(y), ref, n);
    T_CHECK(e < 9e-7, /* measured 8.8e-8 (f32 vs the double loop) */
            "groupnorm B=%lld P=%lld C=%lld G=%d offset %g: relative error %.3g", (long long)B,
            (long long)Pn, (long long)C, G, (double)offset, e);
    op_groupnorm(x, x, w, b, G, 1e-6f); /* in place */
    T_REL(P(x), ref, n, 9e-7); /* measured 8.8e-8 */
    free(ref);
}

static void test_silu(void) {
    fresh("silu");
    int n = 2000;
    tensor *x = T("silu.x", 2, 20, 100, 0, 0), *y = T("silu.y", 1, 2000, 0, 0, 0);
    nn_arena_commit(ar);
    fill_rand(x, 12.0f, 0.0f);
    P(x)[0] = -100.0f, P(x)[1] = 100.0f, P(x)[2] = 0.0f, P(x)[3] = -1e-3f;
    double *ref = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < n; i++) ref[i] = P(x)[i] / (1.0 + exp(-(double)P(x)[i]));
    op_fill(y, NAN);
    op_silu(y, x);
    T_REL(P(y), ref, n, 2e-7); /* measured 3.8e-8 */
    int finite = 1;
    for (int i = 0; i < n; i++) finite &= isfinite(P(y)[i]);
    T_CHECK(finite, "silu stays finite at +-100");
    T_CHECK(P(y)[0] == 0.0f || fabsf(P(y)[0]) < 1e-30f, "silu(-100) ~ 0, got %g", (double)P(y)[0]);
    T_CHECK(P(y)[1] == 100.0f, "silu(100) = 100, got %g", (double)P(y)[1]);
    op_silu(x, x); /* in place */
    T_REL(P(x), ref, n, 2e-7); /* measured 3.8e-8 */
    free(ref);
}

static void test_conv(int64_t B, int H, int W, int64_t Cin, int64_t Cout, int k, int bias) {
    fresh("conv");
    int64_t Pn = (int64_t)H * W;
    tensor *x = T("conv.x", 3, B, Pn, Cin, 0), *y = T("conv.y", 3, B, Pn, Cout, 0),
           *w = T("conv.w", 4, Cout, Cin, k, k), *b = T("conv.b", 1, Cout, 0, 0, 0),
           *cols = T("conv.cols", 1, Pn * Cin * k * k + 17, 0, 0, 0);
    nn_arena_commit(ar);
    fill_rand(x, 1.0f, 0.1f), fill_rand(w, 0.5f, 0.0f), fill_rand(b, 0.5f, 0.0f);
    int64_t n = B * Pn * Cout, r = k / 2;
    double *ref = malloc(sizeof(double) * (size_t)n);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t ww = 0; ww < W; ww++)
                for (int64_t o = 0; o < Cout; o++) {
                    double s = bias ? P(b)[o] : 0.0;
                    for (int64_t c = 0; c < Cin; c++)
                        for (int64_t i = 0; i < k; i++)
                            for (int64_t j = 0; j < k; j++) {
                                int64_t hh = h + i - r, wx = ww + j - r;
                                if (hh < 0 || hh >= H || wx < 0 || wx >= W) continue;
                                s += (double)P(w)[((o * Cin + c) * k + i) * k + j] *
                                     P(x)[(bi * Pn + hh * W + wx) * Cin + c];
                            }
                    ref[(bi * Pn + h * W + ww) * Cout + o] = s;
                }
    op_fill(y, NAN);
    op_fill(cols, NAN); /* every used scratch element must be written */
    op_conv2d_same(y, x, w, bias ? b : NULL, H, W, cols);
    double e = relerr(P(y), ref, n);
    T_CHECK(e < 3e-6, /* measured 2.5e-7 (f32 vs the double loop) */
            "conv B=%lld %dx%d Cin=%lld Cout=%lld k=%d bias=%d: relative error %.3g", (long long)B, H,
            W, (long long)Cin, (long long)Cout, k, bias, e);
    free(ref);
}

int main(void) {
    test_groupnorm(2, 13, 24, 4, 0.0f);
    test_groupnorm(3, 49, 64, 32, 5.0f); /* GroupNorm(32) with 2 channels a group, a 7x7 grid */
    test_groupnorm(1, 7, 32, 32, -2.0f); /* one channel a group */
    test_groupnorm(2, 5, 12, 1, 0.0f);   /* one group: LayerNorm over the whole image */
    test_silu();
    test_conv(2, 5, 7, 6, 10, 3, 1);
    test_conv(2, 5, 7, 6, 10, 3, 0);
    test_conv(1, 7, 7, 64, 32, 3, 1);
    test_conv(2, 4, 3, 5, 8, 1, 1); /* 1x1: a per-position linear map */
    test_conv(1, 6, 5, 3, 4, 5, 1);
    test_conv(1, 1, 1, 4, 3, 3, 1); /* a single position: only the centre tap */
    test_conv(2, 1, 9, 4, 3, 3, 1); /* one row */
    nn_arena_free(ar);
    return t_done();
}
