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

/* The device of an op's tensors (ops.c, ops_extra.c): every non-NULL tensor has data and they all live
 * on one device the build supports; otherwise exits naming the op and the tensors. */
nn_device nn_ops_same_device(const char *op, int n, const tensor *const *ts);
/* Exits naming op and the printf-formatted message when cond is false (a bug in the calling code). */
void nn_ops_need(int cond, const char *op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

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

/* The training ops (CUDA twins below; cpu_rope / cuda_rope do both directions: inverse = backward). */
void cpu_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                         const tensor *w, nn_act act, const tensor *pre, int accumulate_dx);
void cpu_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate);
void cpu_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x,
                          const tensor *w, const tensor *rstd, int accumulate_dx);
void cpu_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta, int inverse);
void cpu_swiglu(tensor *y, const tensor *gate, const tensor *up);
void cpu_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                         const tensor *up);
void cpu_attention_seg(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                       int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att);
void cpu_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                            const tensor *q, const tensor *k, const tensor *v, const tensor *att,
                            int n_heads, int n_kv_heads, float scale, tensor *scratch);
void cpu_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                         int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg);
void cpu_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                                  const tensor *q, const tensor *k, const tensor *v,
                                  const tensor *out, const tensor *lse, int n_heads, int n_kv_heads,
                                  float scale, int causal, const tensor *seg);
void cpu_embedding(tensor *y, const tensor *ids, const tensor *table);
void cpu_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids);
void cpu_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                       const tensor *targets, float scale);
void cpu_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
               float eps, float weight_decay, int64_t step);
void cpu_grad_sqnorm(double *acc, const tensor *g);
void cpu_scale(tensor *t, float s);
void cpu_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                     tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2, float eps,
                     int64_t step);
void cpu_grad_sqnorm_multi(double *acc, int n, const tensor *const *g);
#ifdef ASVR_HAVE_CUDA
void cuda_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                          const tensor *w, nn_act act, const tensor *pre, int accumulate_dx);
void cuda_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate);
void cuda_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x,
                           const tensor *w, const tensor *rstd, int accumulate_dx);
void cuda_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta, int inverse);
void cuda_swiglu(tensor *y, const tensor *gate, const tensor *up);
void cuda_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                          const tensor *up);
void cuda_attention_seg(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                        int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att);
void cuda_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                             const tensor *q, const tensor *k, const tensor *v, const tensor *att,
                             int n_heads, int n_kv_heads, float scale, tensor *scratch);
void cuda_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                          int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg);
void cuda_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                                    const tensor *q, const tensor *k, const tensor *v,
                                    const tensor *out, const tensor *lse, int n_heads, int n_kv_heads,
                                    float scale, int causal, const tensor *seg);
void cuda_embedding(tensor *y, const tensor *ids, const tensor *table);
void cuda_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids);
void cuda_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                        const tensor *targets, float scale);
void cuda_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
                float eps, float weight_decay, int64_t step);
void cuda_grad_sqnorm(double *acc, const tensor *g);
void cuda_scale(tensor *t, float s);
void cuda_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                      tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2, float eps,
                      int64_t step);
void cuda_grad_sqnorm_multi(double *acc, int n, const tensor *const *g);
#endif
/* Fused residual + RMSNorm and the per-group batched matmul (CUDA twins below). */
void cpu_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                     tensor *rstd);
void cpu_matmul_batched(tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre);
void cpu_matmul_batched_backward(tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,
                                 nn_act act, const tensor *pre, int accumulate_dx);
#ifdef ASVR_HAVE_CUDA
void cuda_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                      tensor *rstd);
void cuda_matmul_batched(tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre);
void cuda_matmul_batched_backward(tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,
                                  nn_act act, const tensor *pre, int accumulate_dx);
#endif
/* Convolutional-block ops (CUDA versions below). */
void cpu_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups, float eps);
void cpu_silu(tensor *y, const tensor *x);
void cpu_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                     tensor *cols);
#ifdef ASVR_HAVE_CUDA
NN_BACKEND_DECLARE(cuda)
/* Convolutional-block ops on CUDA (nn/cuda/ops_conv_cuda.cu). */
void cuda_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups, float eps);
void cuda_silu(tensor *y, const tensor *x);
void cuda_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                      tensor *cols);
#endif

#ifdef __cplusplus
}
#endif
#endif
