/* cpu_common.h — what the files of the CPU backend (nn/cpu/ops_<family>.c) share: the f32 data of a
 * tensor, the GELU forms and their derivatives (the tanh form over arrays vectorised, vec_math.h), and
 * the GEMM y = x·w^T + b on raw pointers.
 * Not for: code outside nn/cpu/ (call the op_* functions of nn/ops.h).
 */
#ifndef ASVR_NN_CPU_COMMON_H
#define ASVR_NN_CPU_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/backend.h"

static inline float *F(const tensor *t) { return t ? (float *)t->data : NULL; }

static inline float gelu_tanh(float x) {
    const float beta = 0.7978845608028654f; /* sqrt(2/pi) */
    const float kappa = 0.044715f;
    float inner = beta * (x + kappa * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

/* y[i] = GELU-tanh(x[i]) over an array, vectorised (vec_math.h's tanh; y may alias x); and
 * o[i] (+)= g[i] · GELU-tanh'(x[i]) (o may alias g). Each element's value does not depend on n or i.
 * (cpu/ops_elementwise.c) */
void cpu_gelu_tanh_array(float *y, const float *x, int64_t n);
void cpu_gelu_tanh_grad_array(float *o, const float *g, const float *x, int64_t n, int accumulate);

static inline void apply_act(float *y, const float *x, int64_t n, nn_act act) {
    if (act == NN_ACT_GELU_TANH)
        cpu_gelu_tanh_array(y, x, n);
    else if (act == NN_ACT_GELU_ERF)
        for (int64_t i = 0; i < n; i++) y[i] = gelu_erf(x[i]);
    else if (y != x)
        memcpy(y, x, (size_t)n * sizeof *y);
}

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

/* y[M,N] = x[M,K] · w[N,K]^T + b (b may be NULL), on raw pointers (OpenBLAS; cpu/ops_matmul.c). */
void cpu_gemm_xwt(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K);

#endif
