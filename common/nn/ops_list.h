/* ops_list.h — the one list of the backend entry points behind the ops of ops.h, grouped by op family.
 *
 * NN_BACKEND_OPS(X) applies X(name, (parameters), (arguments)) to every entry: each backend implements
 * void <backend>_<name> parameters — cpu_<name> in nn/cpu/ops_<family>.c, cuda_<name> in
 * nn/cuda/ops_<family>.cu — and `arguments` names those parameters in order, for forwarding calls.
 * nn/backend.h declares both backends from this list; ops.c validates arguments and dispatches through
 * it. A new op is one entry here, one function per backend and its op_* front end in ops.c.
 * Several public ops share an entry (op_attention and op_attention_seg; op_rope and its backward;
 * the embedding lookups and the row gathers), the front end passing the flag that tells them apart.
 * Not for: model code (call the op_* functions of ops.h).
 */
#ifndef ASVR_NN_OPS_LIST_H
#define ASVR_NN_OPS_LIST_H

#include "nn/ops.h"

/* clang-format off */
#define NN_BACKEND_OPS(X)                                                                                    \
    /* elementwise */                                                                                        \
    X(gelu, (tensor *y, const tensor *x, nn_act act), (y, x, act))                                           \
    X(gelu_backward, (tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate),            \
      (dx, dy, x, act, accumulate))                                                                          \
    X(add, (tensor *y, const tensor *a, const tensor *b), (y, a, b))                                         \
    X(copy, (tensor *y, const tensor *x), (y, x))                                                            \
    X(fill, (tensor *t, float value), (t, value))                                                            \
    X(swiglu, (tensor *y, const tensor *gate, const tensor *up), (y, gate, up))                              \
    X(swiglu_backward, (tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate, const tensor *up),  \
      (dgate, dup, dy, gate, up))                                                                            \
    /* inverse: the backward (rotation by -angle) */                                                         \
    X(rope, (tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta, int inverse),          \
      (y, x, pos, n_heads, theta, inverse))                                                                  \
    /* matmul */                                                                                             \
    X(matmul, (tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre),       \
      (y, x, w, b, act, pre))                                                                                \
    X(matmul_backward, (tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x, const tensor *w,    \
                        nn_act act, const tensor *pre, int accumulate_dx),                                   \
      (dx, dw, db, dy, x, w, act, pre, accumulate_dx))                                                       \
    X(matmul_batched, (tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre),                \
      (y, x, w, act, pre))                                                                                   \
    X(matmul_batched_backward, (tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,        \
                                nn_act act, const tensor *pre, int accumulate_dx),                           \
      (dx, dw, dy, x, w, act, pre, accumulate_dx))                                                           \
    /* norms */                                                                                              \
    X(layernorm, (tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps, tensor *mean,     \
                  tensor *rstd),                                                                             \
      (y, x, w, b, eps, mean, rstd))                                                                         \
    X(rmsnorm, (tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd), (y, x, w, eps, rstd)) \
    X(rmsnorm_backward, (tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,         \
                         const tensor *rstd, int accumulate_dx),                                             \
      (dx, dw, dy, x, w, rstd, accumulate_dx))                                                               \
    X(add_rmsnorm, (tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,      \
                    tensor *rstd),                                                                           \
      (r, y, a, b, w, eps, rstd))                                                                            \
    X(groupnorm, (tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups, float eps),      \
      (y, x, w, b, groups, eps))                                                                             \
    /* attention (seg NULL: no segment mask) */                                                              \
    X(attention, (tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,               \
                  int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att, nn_att_mode mode), \
      (out, q, k, v, n_heads, n_kv_heads, scale, causal, seg, att, mode))                                    \
    X(attention_backward, (tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,          \
                           const tensor *k, const tensor *v, const tensor *att, int n_heads, int n_kv_heads, \
                           float scale, tensor *scratch),                                                    \
      (dq, dk, dv, dout, q, k, v, att, n_heads, n_kv_heads, scale, scratch))                                 \
    X(flash_attention, (tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,         \
                        int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg),            \
      (out, lse, q, k, v, n_heads, n_kv_heads, scale, causal, seg))                                          \
    X(flash_attention_backward, (tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,    \
                                 const tensor *k, const tensor *v, const tensor *out, const tensor *lse,     \
                                 int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg),   \
      (dq, dk, dv, dout, q, k, v, out, lse, n_heads, n_kv_heads, scale, causal, seg))                        \
    X(attention_decode, (tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens, \
                         int n_heads, int n_kv_heads, float scale, tensor *scores),                          \
      (out, q, k, v, lens, n_heads, n_kv_heads, scale, scores))                                              \
    /* embedding and row gathers (skip_negative: rows with a negative index are left alone) */               \
    X(gather_rows, (tensor *y, const tensor *x, const tensor *idx, int skip_negative),                       \
      (y, x, idx, skip_negative))                                                                            \
    X(scatter_add_rows, (tensor *y, const tensor *x, const tensor *idx, int skip_negative),                  \
      (y, x, idx, skip_negative))                                                                            \
    /* losses */                                                                                             \
    X(cross_entropy, (tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,               \
                      const tensor *targets, float scale),                                                   \
      (dlogits, loss_sum, count, logits, targets, scale))                                                    \
    X(argmax_rows, (tensor *idx, const tensor *x), (idx, x))                                                 \
    /* optimizer */                                                                                          \
    X(adamw, (tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,          \
              float eps, float weight_decay, int64_t step),                                                  \
      (p, g, m, v, lr, beta1, beta2, eps, weight_decay, step))                                               \
    X(adamw_multi, (int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,           \
                    tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2,    \
                    float eps, int64_t step),                                                                \
      (n, p, g, m, v, pc, wd, gscale, lr, beta1, beta2, eps, step))                                          \
    X(grad_sqnorm, (double *acc, const tensor *g), (acc, g))                                                 \
    X(grad_sqnorm_multi, (double *acc, int n, const tensor *const *g), (acc, n, g))                          \
    X(scale, (tensor *t, float s), (t, s))                                                                   \
    /* conv */                                                                                               \
    X(patch_embed, (tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,               \
                    tensor *cols),                                                                           \
      (y, img, w, b, patch, cols))                                                                           \
    X(conv2d_same, (tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,              \
                    tensor *cols),                                                                           \
      (y, x, w, b, H, W, cols))                                                                              \
    X(silu, (tensor *y, const tensor *x), (y, x))                                                            \
    /* interpolate (resizes and area pooling of image-like grids) */                                         \
    X(interpolate, (tensor *y, const tensor *x, nn_resize mode, int channels_last), (y, x, mode, channels_last)) \
    /* vq */                                                                                                 \
    X(row_sqnorm, (tensor *n, const tensor *c), (n, c))                                                      \
    X(vq_step, (tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth,     \
                tensor *dist),                                                                               \
      (residual, codebook, cnorm, codes, depth, dist))                                                       \
    X(vq_fused, (tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth),   \
      (residual, codebook, cnorm, codes, depth))                                                             \
    /* transfer (dispatched to cuda when either tensor is there; cpu: both on the host) */                   \
    X(transfer, (tensor *dst, const tensor *src), (dst, src))
/* clang-format on */

/* The parameter list of an entry without its parentheses (to put more parameters before it). */
#define NN_OP_PARAMS(...) __VA_ARGS__

#endif
