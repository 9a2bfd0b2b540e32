/* mlp.h — the two-layer MLP of LLaVA's mm_projector and ASVR's head input projection:
 * y = W2 · gelu_erf(W1 · x + b1) + b2, with torch.nn.Sequential(Linear, GELU, Linear) parameter
 * names (prefix + "0.weight", "0.bias", "2.weight", "2.bias"; weights stored [out, in]).
 * Parameters are declared in a caller-owned param_set (model/params.h); after the caller commits,
 * w1->w ... are the values and w1->g ... the gradients (NULL when frozen, and then not touched).
 * Forward and backward are explicit; the caller owns the activations (pre and h, [M, hidden], are
 * what backward reads).
 * Not for: deeper MLPs, other activations, or the LLaMA SwiGLU feed-forward.
 */
#ifndef ASVR_MODEL_MLP_H
#define ASVR_MODEL_MLP_H

#include "model/params.h"
#include "nn/ops.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlp2 {
    param *w1, *b1, *w2, *b2; /* [hidden, in], [hidden], [out, hidden], [out] */
    int in, hidden, out;
} mlp2;

/* Declares prefix + "0.weight", "0.bias", "2.weight", "2.bias" (weights N(0, 1/sqrt(fan_in)) and
 * decayed, biases zero) in ps, which must not be committed yet. */
void mlp2_declare(mlp2 *m, param_set *ps, int in, int hidden, int out, const char *prefix);

/* x [M, in] -> pre [M, hidden] (x·W1^T + b1), h [M, hidden] (gelu_erf(pre)), y [M, out].
 * Every element of pre, h and y is written. y must not alias x or h. */
void mlp2_forward(const mlp2 *m, const tensor *x, tensor *pre, tensor *h, tensor *y);

/* Backward from dy [M, out] with the x, pre and h of the forward: parameter gradients accumulate
 * (trainable ones only); dx [M, in] is written, or added when accumulate_dx (NULL: not wanted).
 * dh_scratch [M, hidden] is overwritten. dy is only read. With every parameter frozen and dx NULL
 * nothing is computed. */
void mlp2_backward(const mlp2 *m, tensor *dy, const tensor *x, const tensor *pre, const tensor *h,
                   tensor *dh_scratch, tensor *dx, int accumulate_dx);

#ifdef __cplusplus
}
#endif
#endif
