/* params.h — a model's named trainable parameters: values, gradients and flags, for training.
 *
 * A model declares each parameter (name, shape, whether weight decay applies); the trainer marks
 * which are trainable (by name prefix, per stage), then commit plans two arenas: the values of all
 * parameters and the gradients of the trainable ones only (frozen parameters get no gradient
 * buffer; their `g` stays NULL and backward passes skip them). Values come from safetensors under a
 * prefix (every declared name must be present with exactly its shape) or from a seeded init.
 * The set lives on one device (param_set_set_device before commit; default the CPU): both arenas are
 * allocated there, and loading / random init go through a host f32 staging buffer and op_transfer.
 * Storage is f32 on every device for now (exact CPU/CUDA parity to rounding); a bf16 copy of the
 * weights for the forward would be a third arena next to the f32 master values.
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
    tensor *w;       /* value, f32 (valid after commit) */
    tensor *g;       /* gradient, f32, accumulated by backward passes; NULL when frozen */
    int trainable;
    int decay;       /* weight decay applies (matrices and embeddings, not biases or norms) */
    param_init init; /* random init rule: NORMAL draws N(0, std) with std given at declaration */
    float init_std;
} param;

typedef struct param_set {
    char label[64];
    param **v;
    int n, cap;
    nn_arena *values, *grads;
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
/* Allocates the value and gradient arenas (zeroed) on the set's device. */
void param_set_commit(param_set *ps);
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
