/* params.h — a model's named trainable parameters: values, gradients and flags, for training.
 *
 * A model declares each parameter (name, shape, whether weight decay applies); the trainer marks
 * which are trainable (by name prefix, per stage), then commit plans two arenas: the values of all
 * parameters and the gradients of the trainable ones only (frozen parameters get no gradient
 * buffer; their `g` stays NULL and backward passes skip them). Values come from safetensors under a
 * prefix (every declared name must be present with exactly its shape) or from a seeded init.
 * The set lives on one device (param_set_set_device before commit; default the CPU): both arenas are
 * allocated there, and loading / random init go through a host f32 staging buffer and op_transfer.
 * Values (the master weights) and gradients are f32 on every device. For mixed-precision training on
 * CUDA, param_set_set_compute_dtype(ps, NN_BF16) adds a third arena: a bf16 copy `wc` of every matrix
 * (ndim >= 2, unless marked keep_f32, e.g. an embedding table that is only looked up), which the
 * GEMMs read; param_set_sync_compute refreshes the copies from the masters (load, random init and the
 * optimizer step call it). Without it, and for vectors (norm weights, biases), wc == w.
 * Names follow the checkpoint layout (`llm.model.layers.0.self_attn.q_proj.weight`,
 * `visual_head.heads.3.weight`, ...), so save/load is a loop over the set.
 * Not for: frozen towers loaded once for inference only (model/weights.h does that), or optimizer
 * state (the trainer owns it).
 */
#ifndef ASVR_MODEL_PARAMS_H
#define ASVR_MODEL_PARAMS_H

#include <stdint.h>
#include <stdio.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { PARAM_INIT_NORMAL, PARAM_INIT_ZERO, PARAM_INIT_ONE } param_init;

typedef struct param {
    char name[NN_NAME_MAX];
    tensor *w;       /* value, f32 (valid after commit): the master weights the optimizer updates */
    tensor *wc;      /* what the forward and backward compute with: w, or its bf16 copy (see above) */
    tensor *g;       /* gradient, f32, accumulated by backward passes; NULL when frozen */
    int trainable;
    int decay;       /* weight decay applies (matrices and embeddings, not biases or norms) */
    param_init init; /* random init rule: NORMAL draws N(0, std) with std given at declaration */
    float init_std;
    int keep_f32;    /* no compute copy: read only by lookups (op_embedding), which take f32 */
} param;

typedef struct param_set {
    char label[64];
    param **v;
    int n, cap;
    nn_arena *values, *grads;
    nn_arena *compute;    /* the bf16 copies (NULL when the compute dtype is f32) */
    nn_dtype compute_dtype; /* NN_F32 (default) or NN_BF16 */
    nn_device device;  /* where values and grads live (NN_CPU unless param_set_set_device said otherwise) */
    int committed;
} param_set;

void param_set_init(param_set *ps, const char *label);
/* Declares a parameter named printf(fmt, ...). Returns the record; w/g are valid after commit. */
param *param_add(param_set *ps, int ndim, const int64_t *shape, int decay, param_init init, float init_std,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Marks every parameter whose name starts with prefix ("" = all) trainable or frozen. */
void param_set_trainable(param_set *ps, const char *prefix, int trainable);
/* Puts the set's arenas on dev (before commit). NN_CUDA needs a CUDA build (exits otherwise). */
void param_set_set_device(param_set *ps, nn_device dev);
/* The dtype the matrices are computed in (before commit): NN_F32 (default) or NN_BF16, which needs
 * the set on CUDA (checked at commit). */
void param_set_set_compute_dtype(param_set *ps, nn_dtype dt);
/* Allocates the value and gradient arenas (zeroed) on the set's device, and the compute copies. */
void param_set_commit(param_set *ps);
/* Copies every master value into its compute copy (nothing to do when there are none). Call it after
 * writing values directly; param_set_load, param_set_init_random and the trainer's optimizer step do. */
void param_set_sync_compute(param_set *ps);
param *param_find(const param_set *ps, const char *name);
/* Fills every parameter from st[prefix + name]; -1 with err naming the first missing or mis-shaped
 * tensor and its file. Accepts any float dtype (converted to f32). */
int param_set_load(param_set *ps, const safetensors *st, const char *prefix, asvr_error *err);
/* Fills every parameter with its declared init, from a seeded generator (deterministic). */
void param_set_init_random(param_set *ps, uint64_t seed);
void param_set_zero_grads(param_set *ps);
/* Converts s to f32 into t (any device; shapes are the caller's to check, numel must match): directly
 * on the CPU, through a host staging buffer elsewhere. -1 with err on a conversion failure. */
int param_tensor_load(tensor *t, const st_tensor *s, asvr_error *err);
int64_t param_set_count(const param_set *ps, int trainable_only); /* number of scalars */
void param_set_print(const param_set *ps, FILE *f);
void param_set_free(param_set *ps);

#ifdef __cplusplus
}
#endif
#endif
