/* ops.h — the compute ops the models are written in, one function per op, for every backend.
 *
 * Each op_* checks its arguments (dtypes, shapes, that all tensors live on one device) and then
 * runs the implementation of the tensors' device: nn/cpu/ (fp32 reference, OpenBLAS) or nn/cuda/
 * (bf16 storage, fp32 accumulation; built with nvcc). A shape mismatch is a programming error and
 * exits naming the op and the tensors. Activations are row-major and contiguous; a tensor with
 * more than 2 dims is read as a matrix [rows = product of leading dims, cols = last dim].
 * Forward ops only for now. Each op that a backward pass will need takes the optional "save"
 * tensors (pre-activation, mean/rstd, attention probabilities) a backward op would read; pass NULL
 * when only the forward is run.
 * Not for: numeric loops in model code (compose these ops instead), strided views, or autograd.
 */
#ifndef ASVR_NN_OPS_H
#define ASVR_NN_OPS_H

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NN_ACT_NONE,
    NN_ACT_GELU_TANH, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), torch gelu(approximate='tanh') */
    NN_ACT_GELU_ERF,  /* 0.5 x (1 + erf(x / sqrt 2)), torch gelu() */
} nn_act;

/* y[M,N] = act(x[M,K] · w[N,K]^T + b[N]); w is stored [out, in] like torch.nn.Linear.
 * b may be NULL. pre (optional, [M,N]) receives x·w^T + b before the activation.
 * y must not alias x. */
void op_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre);

/* y = act(x), elementwise; y may alias x. act must not be NN_ACT_NONE. */
void op_gelu(tensor *y, const tensor *x, nn_act act);

/* y = a + b elementwise (same shapes); y may alias a or b. */
void op_add(tensor *y, const tensor *a, const tensor *b);

/* y = x (same numel, dtype and device). */
void op_copy(tensor *y, const tensor *x);

/* LayerNorm over the last dim: y = (x - mean) / sqrt(var + eps) * w + b (biased variance).
 * mean and rstd (optional, [rows] f32) receive the statistics for backward. y may alias x. */
void op_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                  tensor *mean, tensor *rstd);

/* RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * w. rstd optional. y may alias x. */
void op_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd);

/* Multi-head self-attention core (projections are separate op_matmul calls):
 *   q [B,T,H*Dh], k and v [B,T,Hkv*Dh] (H % Hkv == 0; query head h reads kv head h/(H/Hkv)),
 *   out [B,T,H*Dh]; softmax(scale · q·k^T (+ causal mask)) · v per head, softmax in fp32.
 * att: [B,H,T,T] to keep the probabilities for backward, or any f32 tensor with at least T*T
 * elements used as scratch for one head at a time. */
void op_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                  int n_kv_heads, float scale, int causal, tensor *att);

/* ViT patch embedding = Conv2d(Cin -> C, kernel = stride = p, padding "valid", with bias):
 *   img [B,Cin,H,W], w [C,Cin,p,p], b [C] (may be NULL), y [B,(H/p)*(W/p),C] with integer
 *   division (the last H%p rows and W%p columns are not seen, as in SigLIP's 384 px / 14), patches
 *   in raster (row-major) order.
 * cols: scratch [B*(H/p)*(W/p), Cin*p*p] for the im2col matrix. */
void op_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                    tensor *cols);

/* Squared L2 norm of each row: n[K] = sum_j c[K,j]^2 (codebook norms for op_vq_step). */
void op_row_sqnorm(tensor *n, const tensor *c);

/* One residual-quantisation depth: for each row x of residual [N,C], the nearest codebook row
 * (codebook [K,C], squared L2 computed as |x|^2 + |c|^2 - 2 x·c with cnorm [K] = |c|^2; the lowest
 * index wins a tie), written to codes[n, depth] (codes [N,D] u16 or i32, K <= 65536 for u16);
 * then residual[n] -= codebook[code]. dist: f32 scratch [R,K], R >= 1; rows go R at a time. */
void op_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                int depth, tensor *dist);

/* Fills a tensor with one f32 value (f32 tensors) — for sentinels in tests and clearing buffers. */
void op_fill(tensor *t, float value);

#ifdef __cplusplus
}
#endif
#endif
