/* ops.h — the compute ops the models are written in, one function per op, for every backend, and the
 * few device helpers model and tool code need (moving tensors between host and device, naming and
 * waiting for a device, host memory for device copies).
 *
 * Each op_* checks its arguments (dtypes, shapes, that all tensors live on one device) and then
 * runs the implementation of the tensors' device: nn/cpu/ (fp32 reference, OpenBLAS) or nn/cuda/
 * (bf16 storage, fp32 accumulation; built with nvcc); nn/ops_list.h lists those implementations. A
 * shape mismatch is a programming error and exits naming the op and the tensors. Activations are
 * row-major and contiguous; a tensor with more than 2 dims is read as a matrix [rows = product of
 * leading dims, cols = last dim].
 * Forward ops take the optional "save" tensors (pre-activation, mean/rstd, attention probabilities)
 * their backward reads; pass NULL when only the forward is run. Backward ops (op_*_backward) take the
 * upstream gradient and those saved tensors. Gradients of parameters (weights, biases, tables)
 * always accumulate (+=), so micro-batches add up in one buffer; clear them with op_fill(g, 0)
 * before the first micro-batch. Gradients of activations are written, or added where the op takes
 * an `accumulate` flag (a residual stream fed by two branches).
 * Every op runs on both backends. On CUDA, values only the device holds (ids, indices, targets,
 * positions) are checked by the kernels and reported by the next op that synchronises (embedding,
 * row gathers, cross-entropy); the ops that skip negative ids (op_embedding_skip and its backward) are
 * the exception: their model code validates ids on its host copies before uploading them, and their
 * kernels skip an out-of-range id instead of reading past the table.
 * Not for: numeric loops in model code (compose these ops instead), strided views, autograd,
 * sampling (top-k / top-p), or attention with more than one query per row over a cache
 * (llama_prefill runs op_attention_seg for the prompt).
 */
#ifndef ASVR_NN_OPS_H
#define ASVR_NN_OPS_H

#include <stddef.h>

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NN_ACT_NONE,
    NN_ACT_GELU_TANH, /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), torch gelu(approximate='tanh') */
    NN_ACT_GELU_ERF,  /* 0.5 x (1 + erf(x / sqrt 2)), torch gelu() */
} nn_act;

/* What op_attention / op_attention_seg do with their `att` buffer. */
typedef enum {
    NN_ATT_SCRATCH, /* att: f32 scratch with at least T*T elements, one head at a time; nothing kept */
    NN_ATT_KEEP,    /* att: f32 [B,H,T,T] (exactly that many elements) receives the probabilities that
                     * op_attention_backward reads */
} nn_att_mode;

#define NN_IGNORE_INDEX (-100)

/* ---- elementwise: activations, sums, copies, fills, SwiGLU, RoPE -------------------------------- */

/* y = act(x), elementwise; y may alias x. act must not be NN_ACT_NONE. */
void op_gelu(tensor *y, const tensor *x, nn_act act);
/* Backward of op_gelu: dx = dy * act'(x), written or (accumulate) added. dx may alias dy when not
 * accumulating. act is NN_ACT_GELU_TANH or NN_ACT_GELU_ERF. */
void op_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate);

/* y = a + b elementwise (same shapes); y may alias a or b. */
void op_add(tensor *y, const tensor *a, const tensor *b);

/* y = x (same numel and device; same dtype, except that on CUDA f32 <-> bf16 converts). */
void op_copy(tensor *y, const tensor *x);

/* Fills a tensor with one f32 value (f32 tensors) — for sentinels in tests and clearing buffers. */
void op_fill(tensor *t, float value);

/* SwiGLU: y = silu(gate) * up = gate * sigmoid(gate) * up, elementwise (same numel).
 * y may alias gate or up. */
void op_swiglu(tensor *y, const tensor *gate, const tensor *up);
/* Backward (written): dgate = dy * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))), dup = dy * silu(g).
 * Either output may alias dy; they must not alias gate or up or each other. */
void op_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                        const tensor *up);

/* Rotary position embedding as HF LLaMA applies it (rotate_half: dims i and i + Dh/2 form a pair):
 *   x [B,T,H*Dh] (q or k; Dh even), pos [B,T] i32 >= 0, one position per token (packed rows restart
 *   it per sample); inv_freq_i = 1 / theta^(2i/Dh) and angle = pos * inv_freq_i, both in fp32 as HF
 *   computes them; y_i = x_i cos - x_{i+Dh/2} sin, y_{i+Dh/2} = x_{i+Dh/2} cos + x_i sin.
 * y may alias x. */
void op_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta);
/* Backward: the inverse rotation, dx = R^T dy (written). dx may alias dy. */
void op_rope_backward(tensor *dx, const tensor *dy, const tensor *pos, int n_heads, float theta);

/* ---- matmul: linear layers, per-group batched GEMMs, their backward ----------------------------- */

/* y[M,N] = act(x[M,K] · w[N,K]^T + b[N]); w is stored [out, in] like torch.nn.Linear.
 * b may be NULL. pre (optional, [M,N]) receives x·w^T + b before the activation.
 * y must not alias x. On CUDA a bias and/or the tanh GELU run as the epilogue of one cuBLASLt GEMM
 * where cuBLASLt takes the case (nn/cuda/ops_matmul.cu says when); ASVR_NO_CUBLASLT=1 in the
 * environment forces the plain GEMM + epilogue kernel. On CUDA the GEMM runs in w's storage type (bf16
 * or f32, fp32 accumulation); an x (or, in the backward ops, a dy or x) stored in the other float type
 * is converted into a grow-only device scratch first (mixed precision: bf16 weight copies against f32
 * activations); a bf16 y (or dx) needs bf16 w. The batched and backward GEMMs follow the same rule. */
void op_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre);

/* Backward of op_matmul. dy [M,N] is the gradient w.r.t. y (after the activation). With an
 * activation, pre [M,N] (saved by op_matmul) is required and dy is overwritten in place by the
 * gradient w.r.t. pre; with NN_ACT_NONE dy is only read and pre is ignored. Then
 *   dx [M,K] = dy · w  (written, or added when accumulate_dx; NULL to skip, e.g. the first layer),
 *   dw [N,K] += dy^T · x (NULL for a frozen weight),   db [N] += sum over rows of dy (NULL: no bias).
 * dx must not alias dy, x or w. */
void op_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                        const tensor *w, nn_act act, const tensor *pre, int accumulate_dx);

/* Batched matmul with one weight per group, no bias (per-depth FFN weights stored as one tensor):
 *   x [G,M,K], w [G,N,K], y [G,M,N]: y[g] = act(x[g] · w[g]^T) for g < G (all three 3-d).
 * pre (optional, [G,M,N]) receives the products before the activation. y must not alias x. */
void op_matmul_batched(tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre);
/* Backward of op_matmul_batched, group by group as op_matmul_backward (no bias): dy [G,M,N]; with an
 * activation, pre (required) and dy is overwritten in place by the gradient w.r.t. pre. Then
 *   dx [G,M,K]: dx[g] = dy[g] · w[g] (written, or added when accumulate_dx; NULL to skip),
 *   dw [G,N,K]: dw[g] += dy[g]^T · x[g] (NULL for frozen weights).
 * dx must not alias dy, x or w. */
void op_matmul_batched_backward(tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,
                                nn_act act, const tensor *pre, int accumulate_dx);

/* ---- norms: LayerNorm, RMSNorm (+ backward, + fused residual add), GroupNorm -------------------- */

/* LayerNorm over the last dim: y = (x - mean) / sqrt(var + eps) * w + b (biased variance).
 * mean and rstd (optional, [rows] f32) receive the statistics for backward. y may alias x. */
void op_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                  tensor *mean, tensor *rstd);

/* RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * w. rstd optional. y may alias x. */
void op_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd);
/* Backward of op_rmsnorm, with rstd [rows] saved by the forward (same eps):
 *   dx = rstd * (dy*w - x * rstd^2 * mean_j(dy_j w_j x_j))  (written, or added when accumulate_dx),
 *   dw += sum over rows of dy * x * rstd (NULL for a frozen weight).
 * dx may alias dy when not accumulating; it must not alias x. */
void op_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                         const tensor *rstd, int accumulate_dx);

/* Residual add fused with RMSNorm (the pre-norm block's "h = h + branch; y = norm(h)"):
 *   r = a + b (elementwise, same numel), then y = r / sqrt(mean(r^2) + eps) * w over the last dim,
 *   rstd optional [rows] f32 — the numbers of op_add(r, a, b) followed by op_rmsnorm(y, r, w, eps,
 *   rstd) (on CUDA one block per row does both in one pass; r is read back as stored, so bf16 storage
 *   rounds as the two ops do). r may alias a or b; y may alias a, b or r (then r is not kept).
 * Backward: no op of its own. The gradient of r is the sum of the residual path's and the norm's:
 *   op_rmsnorm_backward(dr, dw, dy, r, w, rstd, accumulate_dx = 1) adds the norm's part into the
 *   residual-stream gradient dr, which is then both da and db. */
void op_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                    tensor *rstd);

/* GroupNorm as torch.nn.GroupNorm(groups, C, eps, affine) on the NCHW view of a channels-last grid
 * (see the conv section): for each image b and group g (channels g*C/G .. (g+1)*C/G - 1), mean and
 * biased variance over all H*W positions and the group's channels (accumulated in double), then
 * y = (x - mean)/sqrt(var + eps) * w[c] + b[c].
 * x and y [B, P, C] (P = H*W, any P >= 1), C % groups == 0; w, b [C]. y may alias x. */
void op_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups, float eps);

/* ---- attention: kept probabilities, flash (lse only), one query over a KV cache ----------------- */

/* Multi-head self-attention core (projections are separate op_matmul calls):
 *   q [B,T,H*Dh], k and v [B,T,Hkv*Dh] (H % Hkv == 0; query head h reads kv head h/(H/Hkv)),
 *   out [B,T,H*Dh]; softmax(scale · q·k^T (+ causal mask)) · v per head, softmax in fp32.
 * mode NN_ATT_KEEP: att [B,H,T,T] receives the probabilities for backward; NN_ATT_SCRATCH: att is
 * any f32 tensor with at least T*T elements, used as scratch for one head at a time. */
void op_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                  int n_kv_heads, float scale, int causal, tensor *att, nn_att_mode mode);

/* op_attention with a block-diagonal mask for packed rows: seg [B,T] i32 gives each token's
 * segment (sample) id; query i sees key j only when seg[j] == seg[i] (and j <= i when causal).
 * seg NULL: plain causal or full attention, exactly op_attention. Every query sees at least itself,
 * so no row is empty. To keep the probabilities for op_attention_backward (NN_ATT_KEEP), att is the
 * full [B,H,T,T] (4·B·H·T² bytes in fp32: 2 GiB per layer at B=4, H=32, T=2048 — fine for CPU tests,
 * too much at training scale, where op_flash_attention recomputes them instead).
 * Also the core of torch.nn.MultiheadAttention (batch_first, no dropout, scale 1/sqrt(Dh), causal
 * bool mask triu(1)): heads are contiguous Dh-wide column blocks of E, as in its reshape. */
void op_attention_seg(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                      int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att,
                      nn_att_mode mode);

/* Backward of op_attention / op_attention_seg from the kept probabilities att [B,H,T,T] (the mask
 * needs no second look: masked probabilities are 0 and so are their gradients):
 *   dV = P^T dO,  dP = dO V^T,  dS = P ⊙ (dP - rowsum(dP ⊙ P)),  dQ = scale dS K,  dK = scale dS^T Q,
 * summed over the query heads that share a kv head (GQA). dq [B,T,H*Dh], dk and dv [B,T,Hkv*Dh]
 * are written. scratch: f32, at least T*T elements. */
void op_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                           const tensor *k, const tensor *v, const tensor *att, int n_heads,
                           int n_kv_heads, float scale, tensor *scratch);

/* Attention that never stores the T x T probabilities: the mask and result of op_attention_seg
 * (seg may be NULL), plus lse [B,H,T] f32, the log-sum-exp of each query's scaled visible scores,
 * which is all the backward needs to recompute the probabilities P_ij = exp(scale q_i·k_j - lse_i).
 * Memory O(B·H·T) instead of O(B·H·T²); each step of the backward costs one more score product. */
void op_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                        int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg);
/* Backward of op_flash_attention from its out and lse (same q, k, v, scale, causal, seg):
 *   dS = P ⊙ (dO V^T - rowsum(dO ⊙ O)),  dQ = scale dS K,  dK = scale dS^T Q,  dV = P^T dO,
 * summed over the query heads that share a kv head. dq, dk, dv are written. */
void op_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                                 const tensor *q, const tensor *k, const tensor *v, const tensor *out,
                                 const tensor *lse, int n_heads, int n_kv_heads, float scale,
                                 int causal, const tensor *seg);

/* One new query per row over its cached keys and values (a decode step):
 *   q, out [B,1,H*Dh] or [B,H*Dh]; k, v [B,T_max,Hkv*Dh]; lens i32 [B], 1 <= lens[b] <= T_max;
 *   out[b,h] = softmax(scale · q[b,h] · K[b,0..lens[b])^T) · V[b,0..lens[b]) with kv head
 *   h / (H/Hkv); max-subtracted exponentials in fp32, summed in double on the CPU (as op_attention's
 *   CPU softmax) and in fp32 on CUDA. f32 storage only (lens i32).
 * scores: f32 scratch with at least B*H*T_max elements. out must not alias q, k or v. */
void op_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens,
                         int n_heads, int n_kv_heads, float scale, tensor *scores);

/* ---- embedding and row gathers: y[n] = x[idx[n]] and its scatter-add ---------------------------- */

/* y [N,C] = table[ids[n]] for ids [N] i32 (any shape with N elements), table [V,C]; an id outside
 * [0, V) is a programming error (exits). */
void op_embedding(tensor *y, const tensor *ids, const tensor *table);
/* dtable[ids[n]] += dy[n] (scatter-add; a repeated id adds up). */
void op_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids);

/* y [N,C] rows n with ids[n] >= 0 = table[ids[n]]; rows with ids[n] < 0 are left untouched (image
 * placeholders and padding the caller fills). ids i32 with N elements (any shape), table [V,C]; f32
 * storage only. */
void op_embedding_skip(tensor *y, const tensor *ids, const tensor *table);
/* dtable[ids[n]] += dy[n] for ids[n] >= 0 (scatter-add in row order on the CPU; on CUDA the repeats of
 * an id are summed in row order by one block, then added: bit-identical run to run). f32 only. */
void op_embedding_skip_backward(tensor *dtable, const tensor *dy, const tensor *ids);

/* Row gather: y[n] = x[idx[n]] for n < N, x read as a matrix [R, C] (R = rows of x), idx i32 with N
 * elements (any shape), y [N, C] (rows of y = N); an index outside [0, R) is a programming error
 * (exits). y must not alias x. */
void op_gather_rows(tensor *y, const tensor *x, const tensor *idx);
/* Row scatter-add, the backward of op_gather_rows: y[idx[n]] += x[n] for n < N, in row order (a
 * repeated index adds up; on CUDA the repeats of an index are summed in row order by one block, then
 * added: bit-identical run to run). y [R, C], x [N, C], idx as op_gather_rows. */
void op_scatter_add_rows(tensor *y, const tensor *x, const tensor *idx);

/* ---- losses: softmax cross-entropy, argmax ------------------------------------------------------ */

/* Softmax cross-entropy over rows of logits [M,V] with targets [M] i32 (NN_IGNORE_INDEX = ignored
 * row; otherwise in [0, V), else exits). *loss_sum = sum over non-ignored rows of
 * logsumexp(row) - row[target] (max-subtracted, accumulated in double), *count = their number.
 * dlogits (optional, [M,V]) = scale * (softmax(row) - onehot(target)), 0 on ignored rows; the
 * caller folds its mean into scale (e.g. 1 / supervised tokens of the global batch). dlogits may
 * alias logits (one row is read fully before it is overwritten); no other [M,V] buffer is used. */
void op_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                      const tensor *targets, float scale);

/* idx[m] = the first index of the largest value of row m of x [M,N] (torch.argmax); NaNs are never
 * chosen (0 when a row is all NaN). idx i32 with M elements; x f32 (CUDA: f32 or bf16). */
void op_argmax_rows(tensor *idx, const tensor *x);

/* ---- optimizer: AdamW (one tensor or many), gradient norms, scaling ----------------------------- */

/* One AdamW step over one tensor, as torch.optim.AdamW (amsgrad off) does it:
 *   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).
 * p (fp32 master weights), g, m, v: same numel; step >= 1 counts this update. */
void op_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
              float eps, float weight_decay, int64_t step);

/* The optimizer step's elementwise work over n tensors at once (the trainer's fused AdamW): for each
 * i, g' = gscale * g[i] (gradient clipping; g[i] itself is left as it is), op_adamw's update of p[i],
 * m[i], v[i] with g' and weight decay wd[i], then, when pc[i] is not NULL, pc[i] = p[i] in pc[i]'s
 * dtype (the bf16 compute copy; f32 on the CPU). Bit for bit what op_scale, op_adamw and op_copy give
 * tensor by tensor. p, g, m, v f32 of one numel per i; pc (the array) may be NULL. On CUDA one launch
 * covers every tensor (a table of 64K-element chunks, uploaded again only when the tensor list
 * changes). */
void op_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                    tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2,
                    float eps, int64_t step);

/* *acc += sum of g^2 (in double), for the global gradient norm of clipping. */
void op_grad_sqnorm(double *acc, const tensor *g);
/* *acc += the sum of g^2 over the n tensors (double). On the CPU the sum of op_grad_sqnorm's; on CUDA
 * one launch and one download (per-chunk partial sums added in a fixed order: deterministic). */
void op_grad_sqnorm_multi(double *acc, int n, const tensor *const *g);

/* t *= s elementwise (gradient clipping, loss scaling). */
void op_scale(tensor *t, float s);

/* ---- conv: patch embedding, convolutional blocks over a feature grid (forward only) -------------
 * Grid layout: channels-last, x [B, H*W, C] with grid position p = h*W + w (row-major), which is what
 * a ViT produces and the NCHW tensor x.reshape(B,H,W,C).permute(0,3,1,2) of PyTorch holds. */

/* ViT patch embedding = Conv2d(Cin -> C, kernel = stride = p, padding "valid", with bias):
 *   img [B,Cin,H,W], w [C,Cin,p,p], b [C] (may be NULL), y [B,(H/p)*(W/p),C] with integer
 *   division (the last H%p rows and W%p columns are not seen, as in SigLIP's 384 px / 14), patches
 *   in raster (row-major) order.
 * cols: scratch [B*(H/p)*(W/p), Cin*p*p] for the im2col matrix. */
void op_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                    tensor *cols);

/* Conv2d(Cin -> Cout, k x k, stride 1, padding k/2 with zeros, with bias) on the channels-last grid:
 *   x [B, H*W, Cin], w [Cout, Cin, k, k] (torch layout; k odd), b [Cout] (may be NULL),
 *   y [B, H*W, Cout]: y[b,p,o] = b[o] + sum_{c,i,j} w[o,c,i,j] x[b, (h+i-k/2)*W + (w+j-k/2), c]
 *   (terms outside the grid are 0). Done as im2col + GEMM one image at a time:
 *   cols: scratch with at least H*W*Cin*k*k elements (f32; on CUDA in w's dtype). y must not alias x. */
void op_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                    tensor *cols);

/* SiLU: y = x * sigmoid(x) = x / (1 + exp(-x)), elementwise (same numel). y may alias x. */
void op_silu(tensor *y, const tensor *x);

/* ---- interpolate: resizes and area pooling of image-like grids, as torch.nn.functional.interpolate -----
 * x [N, C, H, W] -> y [N, C, OH, OW] (channels_last 0), or x [N, H, W, C] -> y [N, OH, OW, C] (channels_last
 * 1: the channels-last grid [B, H*W, C] of a ViT viewed with 4 dims). Every output value is computed in fp32
 * from the inputs (f32, or bf16 on CUDA), the way PyTorch's CPU kernels compute it for align_corners=False
 * and antialias=False, with the scale in/out and the source positions in fp32:
 *   NN_RESIZE_BILINEAR: src = max(0, (dst + 0.5) * in/out - 0.5); taps i0 = floor(src) and i0 + 1 (i0
 *     where i0 is the last row or column), weights 1 - (src - i0) and src - i0; the two horizontal taps
 *     are combined first, then the two rows (no antialias: a downsample reads 2 x 2 pixels).
 *   NN_RESIZE_BICUBIC: src = (dst + 0.5) * in/out - 0.5 (not clamped), t = src - floor(src), four taps
 *     floor(src) - 1 .. floor(src) + 2 each clamped into [0, in - 1] (replicated borders), Keys' cubic
 *     convolution with a = -0.75; horizontal first, then vertical. Same size in and out is the identity.
 *   NN_RESIZE_AREA: adaptive average pooling: output cell o covers inputs floor(o*in/out) ..
 *     ceil((o+1)*in/out) - 1 on each axis, summed in fp32 row by row, then divided by the cell's height
 *     and then by its width. When out divides in, k x k average pooling with k = in/out.
 * y must not alias x. */
typedef enum { NN_RESIZE_BILINEAR, NN_RESIZE_BICUBIC, NN_RESIZE_AREA } nn_resize;
void op_interpolate(tensor *y, const tensor *x, nn_resize mode, int channels_last);
const char *nn_resize_name(nn_resize mode); /* "bilinear", "bicubic", "area" */

/* ---- vq: residual quantisation against a codebook ----------------------------------------------- */

/* Squared L2 norm of each row: n[K] = sum_j c[K,j]^2 (codebook norms for op_vq_step). */
void op_row_sqnorm(tensor *n, const tensor *c);

/* One residual-quantisation depth: for each row x of residual [N,C], the nearest codebook row
 * (codebook [K,C], squared L2 computed as |x|^2 + |c|^2 - 2 x·c with cnorm [K] = |c|^2; the lowest
 * index wins a tie), written to codes[n, depth] (codes [N,D] u16 or i32, K <= 65536 for u16);
 * then residual[n] -= codebook[code]. dist: f32 scratch [R,K], R >= 1; rows go R at a time. */
void op_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                int depth, tensor *dist);
/* op_vq_step without the [rows, K] distance matrix: each row's distances are computed and reduced on
 * the fly (same formula and tie rule, fp32 sums in index order; on CUDA one kernel, no tensor cores,
 * rows up to 5120 wide). residual and codebook in one float dtype, cnorm f32, codes as op_vq_step. */
void op_vq_fused(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth);

/* ---- moving tensors between host and device ------------------------------------------------------ */

/* dst = src for tensors of equal numel on any devices (cpu/cpu, cpu->cuda, cuda->cpu, cuda/cuda):
 * equal dtypes copy the bytes; a cpu f32 <-> cuda bf16 pair converts. Synchronous. The one way model
 * code moves host-prepared inputs to the device and results back. */
void op_transfer(tensor *dst, const tensor *src);

/* Conveniences over op_transfer for f32 host buffers of numel(t) floats: t (f32 or bf16, any device)
 * read into host, or written from host. */
void op_read_f32(const tensor *t, float *host);
void op_write_f32(tensor *t, const float *host);

/* ---- devices ------------------------------------------------------------------------------------- */

/* "cpu" or "cuda" -> *dev, when this build and machine can run it; -1 with *why set (a sentence for
 * a usage error: no CUDA backend in this build, or no visible device) otherwise. */
int nn_device_from_name(const char *name, nn_device *dev, const char **why);
/* 1 when this build has dev's backend and the machine can run it (the CPU always; CUDA: a visible
 * device), else 0. */
int nn_device_available(nn_device dev);
/* Waits until all work queued on dev has finished (nothing to wait for on the CPU): for timing. */
void nn_device_sync(nn_device dev);
/* The device's memory in use (everything: this process's arenas, scratch and context, other processes)
 * and its total, in bytes; returns 1, or 0 with both 0 on the CPU (nothing to measure). */
int nn_device_mem_used(nn_device dev, size_t *used, size_t *total);
/* Host memory for buffers that are copied to or from dev: page-locked on CUDA (faster copies), the
 * heap on the CPU; exits naming `what` on failure (or for CUDA in a build without it). Free with
 * nn_host_free on the same dev (NULL is ignored). */
void *nn_host_alloc(nn_device dev, size_t bytes, const char *what);
void nn_host_free(nn_device dev, void *p);

#ifdef __cplusplus
}
#endif
#endif
