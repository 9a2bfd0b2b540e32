/* ops_elementwise.c — the CPU elementwise family (fp32 loops): GELU and its backward, add, copy, fill,
 * SwiGLU and its backward, RoPE in both directions, and the host-to-host transfer.
 * Arguments were validated by ops.c. */
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/cpu/cpu_common.h"

void cpu_gelu(tensor *y, const tensor *x, nn_act act) { apply_act(F(y), F(x), tensor_numel(x), act); }

void cpu_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate) {
    int64_t n = tensor_numel(x);
    const float *px = F(x), *g = F(dy);
    float *o = F(dx);
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
