/* ops_optimizer.c — the CPU optimizer family (fp32 updates, scalars and norms in double): AdamW on one
 * tensor or many (with the gradient scale and the compute copy), gradient squared norms, scaling.
 * Arguments were validated by ops.c. */
#include <string.h>

#include "nn/cpu/cpu_common.h"

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
