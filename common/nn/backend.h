/* backend.h — the per-backend entry points behind ops.h (cpu_* in nn/cpu/, cuda_* in nn/cuda/).
 * ops.c validates arguments and dispatches on the tensors' device; the implementations here may
 * assume valid shapes, matching devices and the dtypes their backend accepts.
 * Not for: model code (call the op_* functions of ops.h).
 */
#ifndef ASVR_NN_BACKEND_H
#define ASVR_NN_BACKEND_H

#include "nn/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NN_BACKEND_DECLARE(pfx)                                                                    \
    void pfx##_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act,    \
                      tensor *pre);                                                                \
    void pfx##_gelu(tensor *y, const tensor *x, nn_act act);                                       \
    void pfx##_add(tensor *y, const tensor *a, const tensor *b);                                   \
    void pfx##_copy(tensor *y, const tensor *x);                                                   \
    void pfx##_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,  \
                         tensor *mean, tensor *rstd);                                              \
    void pfx##_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd);      \
    void pfx##_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v,           \
                         int n_heads, int n_kv_heads, float scale, int causal, tensor *att);       \
    void pfx##_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b,         \
                           int patch, tensor *cols);                                               \
    void pfx##_row_sqnorm(tensor *n, const tensor *c);                                             \
    void pfx##_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm,              \
                       tensor *codes, int depth, tensor *dist);                                    \
    void pfx##_fill(tensor *t, float value);

NN_BACKEND_DECLARE(cpu)
#ifdef ASVR_HAVE_CUDA
NN_BACKEND_DECLARE(cuda)
#endif

#ifdef __cplusplus
}
#endif
#endif
