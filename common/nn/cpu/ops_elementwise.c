/* ops_elementwise.c — the CPU elementwise family (fp32 loops): GELU and its backward, add, copy, fill,
 * SwiGLU and its backward, RoPE in both directions, and the host-to-host transfer.
 * Arguments were validated by ops.c. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/cpu/cpu_common.h"
#include "nn/cpu/vec_math.h"

V4_INLINE v4f v4_gelu_tanh(v4f x) {
    v4f inner = v4_splat(0.7978845608028654f) * (x + v4_splat(0.044715f) * x * x * x);
    return v4_splat(0.5f) * x * (v4_splat(1.0f) + v4_tanh(inner));
}

V4_INLINE v4f v4_gelu_tanh_grad(v4f x) {
    const v4f beta = v4_splat(0.7978845608028654f), kappa = v4_splat(0.044715f);
    v4f t = v4_tanh(beta * (x + kappa * x * x * x));
    return v4_splat(0.5f) * (v4_splat(1.0f) + t) +
           v4_splat(0.5f) * x * (v4_splat(1.0f) - t * t) * beta * (v4_splat(1.0f) + v4_splat(3.0f) * kappa * x * x);
}

static void gelu_tanh_array(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        v = v4_gelu_tanh(v);
        memcpy(y + i, &v, sizeof v);
    }
    if (i < n) { /* the tail through the same lanes */
        v4f v = v4_splat(0.0f);
        memcpy(&v, x + i, sizeof(float) * (size_t)(n - i));
        v = v4_gelu_tanh(v);
        memcpy(y + i, &v, sizeof(float) * (size_t)(n - i));
    }
}

static void gelu_tanh_grad_array(float *o, const float *g, const float *x, int64_t n, int accumulate) {
    int64_t i = 0;
    for (; i < n; i += 4) {
        int64_t k = n - i < 4 ? n - i : 4;
        v4f vx = v4_splat(0.0f), vg = v4_splat(0.0f), vo = v4_splat(0.0f);
        memcpy(&vx, x + i, sizeof(float) * (size_t)k);
        memcpy(&vg, g + i, sizeof(float) * (size_t)k);
        v4f d = vg * v4_gelu_tanh_grad(vx);
        if (accumulate) {
            memcpy(&vo, o + i, sizeof(float) * (size_t)k);
            d = vo + d;
        }
        memcpy(o + i, &d, sizeof(float) * (size_t)k);
    }
}

void cpu_gelu_tanh_array(float *y, const float *x, int64_t n) { gelu_tanh_array(y, x, n); }
void cpu_gelu_tanh_grad_array(float *o, const float *g, const float *x, int64_t n, int accumulate) {
    gelu_tanh_grad_array(o, g, x, n, accumulate);
}

void cpu_gelu(tensor *y, const tensor *x, nn_act act) { apply_act(F(y), F(x), tensor_numel(x), act); }

void cpu_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate) {
    int64_t n = tensor_numel(x);
    const float *px = F(x), *g = F(dy);
    float *o = F(dx);
    if (act == NN_ACT_GELU_TANH) {
        cpu_gelu_tanh_grad_array(o, g, px, n, accumulate);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] * act_grad(px[i], act);
        o[i] = accumulate ? o[i] + d : d;
    }
}

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

/* Both tensors on the host, one dtype (ops.c checked): the bytes. */
void cpu_transfer(tensor *dst, const tensor *src) { cpu_copy(dst, src); }
