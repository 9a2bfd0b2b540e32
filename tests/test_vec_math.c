/* test_vec_math.c — the CPU backend's vectorised tanh and GELU-tanh (nn/cpu/vec_math.h): tanh within
 * 1.5 ulp of double precision over floats of [-12, 12] (every 31st bit pattern) and at the edges (±0, ±inf, NaN, huge),
 * exp within 1.5 ulp on its range, GELU-tanh and its derivative over arrays close to double precision,
 * and an element's value independent of its position and of the array's length (tails included). */
#include <float.h>
#include <math.h>

#include "nn/cpu/cpu_common.h"
#include "nn/cpu/vec_math.h"
#include "test.h"

static double ulps(float got, double want) {
    float w = (float)want;
    double sp = w == 0.0f ? (double)FLT_TRUE_MIN : (double)(nextafterf(fabsf(w), INFINITY) - fabsf(w));
    return fabs((double)got - want) / sp;
}

static float bits_to_f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double gelu_d(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_d(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = tanh(u);
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
}

int main(void) {
    /* tanh: floats of [0, 12], both signs */
    double worst = 0, worst_x = 0;
    uint32_t hi = 0x41400000u; /* 12.0f */
    for (uint32_t u = 0; u <= hi; u += 31) { /* a prime stride: every residue of the low bits */
        v4f x;
        for (int k = 0; k < 4; k++) x[k] = (k & 1 ? -1.0f : 1.0f) * bits_to_f(u + (uint32_t)k);
        v4f y = v4_tanh(x);
        for (int k = 0; k < 4; k++) {
            double e = ulps(y[k], tanh((double)x[k]));
            if (e > worst) worst = e, worst_x = x[k];
        }
    }
    T_CHECK(worst <= 1.5, "tanh: %.3f ulp at %.9g", worst, worst_x);
    v4f e1 = {0.0f, -0.0f, INFINITY, -INFINITY}, e2 = {NAN, 1e30f, -1e30f, 1e-40f};
    v4f t1 = v4_tanh(e1), t2 = v4_tanh(e2);
    T_CHECK(t1[0] == 0.0f && !signbit(t1[0]) && t1[1] == 0.0f && signbit(t1[1]), "tanh(±0) = ±0");
    T_CHECK(t1[2] == 1.0f && t1[3] == -1.0f && t2[1] == 1.0f && t2[2] == -1.0f, "tanh(±inf, ±huge) = ±1");
    T_CHECK(isnan(t2[0]), "tanh(NaN) is NaN");
    T_CHECK(t2[3] == 1e-40f, "tanh of a denormal is itself");
    /* exp on [-87, 88] */
    double worst_e = 0;
    for (float x0 = -87.0f; x0 < 88.0f; x0 += 0.0123f) {
        v4f x;
        for (int k = 0; k < 4; k++) x[k] = x0 + 0.0013f * (float)k;
        v4f y = v4_exp(x);
        for (int k = 0; k < 4; k++) {
            double e = ulps(y[k], exp((double)x[k]));
            if (e > worst_e) worst_e = e;
        }
    }
    T_CHECK(worst_e <= 1.5, "exp: %.3f ulp", worst_e);
    /* GELU-tanh over an array, and its derivative */
    enum { N = 200003 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N), *g = malloc(sizeof(float) * N),
          *d = malloc(sizeof(float) * N);
    uint64_t s = 7;
    for (int i = 0; i < N; i++) x[i] = 8.0f * t_frand(&s), g[i] = t_frand(&s);
    cpu_gelu_tanh_array(y, x, N);
    cpu_gelu_tanh_grad_array(d, g, x, N, 0);
    double ey = 0, ed = 0;
    for (int i = 0; i < N; i++) {
        double sc = fmax(1.0, fabs(x[i]));
        ey = fmax(ey, fabs(y[i] - gelu_d(x[i])) / sc);
        ed = fmax(ed, fabs(d[i] - g[i] * gelu_grad_d(x[i])) / fmax(1.0, fabs(g[i] * x[i] * x[i])));
    }
    printf("tanh worst %.3f ulp (at %.9g), exp worst %.3f ulp, GELU-tanh %.3g, GELU-tanh' %.3g\n", worst, worst_x,
           worst_e, ey, ed);
    T_CHECK(ey < 1e-6, "GELU-tanh: %.3g relative to max(1, |x|)", ey);
    T_CHECK(ed < 2e-6, "GELU-tanh': %.3g", ed);
    /* position and length independence: each element alone equals its value in the long array */
    int same = 1;
    for (int i = 0; i < 64 && same; i++) {
        float one;
        cpu_gelu_tanh_array(&one, x + N - 1 - i, 1);
        same = memcmp(&one, y + N - 1 - i, sizeof one) == 0;
        float dd;
        cpu_gelu_tanh_grad_array(&dd, g + i, x + i, 1, 0);
        same = same && memcmp(&dd, d + i, sizeof dd) == 0;
    }
    T_CHECK(same, "an element's value does not depend on its position or the array's length");
    /* accumulate adds to what is there; in place works */
    memcpy(y, g, sizeof(float) * 11);
    cpu_gelu_tanh_grad_array(y, g, x, 11, 1);
    int acc = 1;
    for (int i = 0; i < 11; i++) acc = acc && y[i] == g[i] + d[i];
    T_CHECK(acc, "accumulate");
    free(x), free(y), free(g), free(d);
    return t_done();
}
