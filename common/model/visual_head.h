/* visual_head.h — ASVR's visual head: from the LLM's final-norm hidden state at each image position,
 * the logits of that patch's D residual-quantisation codes, with the visual loss and its backward.
 *
 * Per image position p (no shift: position p predicts patch p's codes c_{p,0..D-1}) the head runs a
 * causal transformer over D depth tokens:
 *   token 0     = head_in_proj(h_p)              (Linear d_in->E, GELU erf, Linear E->E)
 *   token d >= 1 = code_in_proj(sum_{d'<d} codebooks[d'][c_{p,d'}])   (Linear code_dim->E; the
 *                 codebooks are the tokenizer's, frozen; no depth position embedding)
 * then n_layers layers, each (the residual stream is replaced by its normalised value, as in ASVR)
 *   h = norm2(x + out_proj(MHA_causal(in_proj(norm1(x)))));  out = h + W2_d · gelu_erf(W1_d · h)
 * with packed in_proj [3E, E] (rows q; k; v) + bias, out_proj + bias, scale 1/sqrt(E/heads), and
 * separate bias-free FFN weights per depth position d; then a final RMSNorm and D Linear heads with
 * bias: logits_d = heads[d](y_d), [N, K]. RMSNorms are weight-only with eps `eps`.
 * The loss is softmax cross-entropy of logits_d against c_{.,d}; the caller folds the means (per
 * depth over positions, then over depths, across accumulation steps) into `scale`.
 * Parameter names (checkpoint layout, under `prefix`, normally "visual_head."):
 *   head_in_proj.{0,2}.{weight,bias}, code_in_proj.{weight,bias},
 *   layers.{l}.{norm1.weight, norm2.weight, attn.in_proj_weight, attn.in_proj_bias,
 *               attn.out_proj.weight, attn.out_proj.bias, ffn_w1 [D,F,E], ffn_w2 [D,E,F]},
 *   norm.weight, heads.{d}.{weight,bias}.
 * Activations are planned in one arena for up to max_positions positions; they are stored
 * depth-major ([D, N, E]: each depth's rows contiguous, for the per-depth FFNs and heads) and
 * permuted to token-major ([N, D, E]) around the attention with row gathers.
 * Activations live on the parameters' device; the index bookkeeping (codes depth-major, the two
 * permutations) is built on the host and uploaded per call, and the top-1 count compares the
 * downloaded op_argmax_rows of each depth's logits with the host codes.
 * Not for: sampling codes at inference (no KV cache, no top-k), the appearance tokenizer's head, or
 * computing the codes themselves (model/rvq.h does that).
 */
#ifndef ASVR_MODEL_VISUAL_HEAD_H
#define ASVR_MODEL_VISUAL_HEAD_H

#include <stdint.h>
#include <stdio.h>

#include "base/error.h"
#include "model/mlp.h"
#include "model/params.h"
#include "nn/ops.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vhead_config {
    int d_in;          /* LLM hidden size (4096) */
    int embed;         /* E, the depth transformer's width (2048) */
    int n_heads;       /* attention heads (16); E % n_heads == 0 */
    int depth;         /* D, codes per patch (8) */
    int codebook_size; /* K, codes per depth (16384) */
    int code_dim;      /* codebook row width (1152) */
    int n_layers;      /* depth transformer layers (3) */
    int ffn_dim;       /* per-depth FFN width (2E = 4096) */
    float eps;         /* RMSNorm eps (1e-6) */
} vhead_config;

/* The ASVR head at LLaVA-1.5-7B scale with the DualToken semantic tokenizer. */
vhead_config vhead_config_asvr(void);
/* -1 with err naming the field when the numbers are inconsistent. */
int vhead_config_check(const vhead_config *c, asvr_error *err);

typedef struct vhead vhead;
typedef struct vhead_acts vhead_acts;

/* Declares the head's parameters under prefix (normally "visual_head.") in ps, which must not be
 * committed yet; the values are used after the caller commits and loads or initialises ps.
 * Exits on an inconsistent config (check it first with vhead_config_check). */
vhead *vhead_new(const vhead_config *c, param_set *ps, const char *prefix);
const vhead_config *vhead_cfg(const vhead *h);
void vhead_free(vhead *h);

/* Activations for up to max_positions image positions per call, one arena (plan printable). */
vhead_acts *vhead_acts_new(const vhead *h, int max_positions);
void vhead_acts_print_plan(const vhead_acts *a, FILE *f);
size_t vhead_acts_bytes(const vhead_acts *a);
/* Fills every float activation with `value` (tests: NaN, to show nothing unwritten is read). */
void vhead_acts_fill(vhead_acts *a, float value);
void vhead_acts_free(vhead_acts *a);

/* h_img [N, d_in] f32: the LLM's final-norm states at the image positions (N <= max_positions).
 * codes [N, D] i32 or u16 in host memory (they are rearranged depth-major on the host), each in
 * [0, K). codebooks [D, K, code_dim] f32, frozen. h_img is copied, so it may change after the call.
 * Computes the logits (vhead_logits reads them until vhead_loss) and, per depth d, correct[d] =
 * positions whose top-1 logit (lowest index on ties) is the target (correct: D entries, or NULL). */
void vhead_forward(const vhead *h, vhead_acts *a, const tensor *h_img, const tensor *codes, const tensor *codebooks,
                   int64_t *correct);
/* The loss of the last vhead_forward: loss_sum[d] (D entries) = sum over the N positions of the CE
 * of depth d (in double; the count is N). The cross-entropy runs in place: the logits buffer then
 * holds dlogits = scale · (softmax − onehot) for vhead_backward (the head's largest buffer is not
 * doubled). The caller passes 1 / (D · N_global) for the mean over positions per depth, then over
 * depths, across the accumulation steps of one optimizer step. */
void vhead_loss(const vhead *h, vhead_acts *a, float scale, double *loss_sum);
/* vhead_forward, then vhead_loss. */
void vhead_forward_loss(const vhead *h, vhead_acts *a, const tensor *h_img, const tensor *codes,
                        const tensor *codebooks, float scale, double *loss_sum, int64_t *correct);

/* Backward of the last vhead_forward + vhead_loss from the kept dlogits: accumulates the gradients of the
 * trainable parameters (frozen ones, g == NULL, are not touched) and writes dh_img [N, d_in]
 * (NULL: not wanted). With every parameter frozen and dh_img NULL it returns at once. */
void vhead_backward(const vhead *h, vhead_acts *a, tensor *dh_img);

/* The logits of depth d of the last vhead_forward, [N, K], until vhead_loss overwrites them (tests
 * and diagnostics). */
const tensor *vhead_logits(const vhead_acts *a, int d);

#ifdef __cplusplus
}
#endif
#endif
