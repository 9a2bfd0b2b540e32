/* optim.h — AdamW with torch semantics over a parameter set, HF's cosine schedule with linear
 * warmup, and global gradient-norm clipping (torch clip_grad_norm_).
 * Optimizer state (m, v) is fp32, for trainable parameters only, in two flat buffers with the
 * parameter set's flat layout (params.h: tensor p's moments sit at p->off). A step is two
 * multi-tensor ops over all trainable tensors (op_grad_sqnorm_multi, then op_adamw_multi with the
 * clipping coefficient folded in and the bf16 compute copies refreshed): one launch each on CUDA.
 * Not for: deciding which parameters train (params.h) or when a step happens (the trainer).
 */
#ifndef ASVR_TRAIN_OPTIM_H
#define ASVR_TRAIN_OPTIM_H

#include <stdint.h>

#include "model/params.h"

typedef struct optim_config {
    double lr, beta1, beta2, eps, weight_decay, clip_norm; /* clip_norm <= 0: off */
    int64_t total_steps, warmup_steps;
} optim_config;

typedef struct optim {
    optim_config c;
    param_set *ps;
    nn_arena *state;               /* the flat moments: one allocation */
    tensor *flat_m, *flat_v;       /* [ps->flat_n] each */
    tensor **m, **v;               /* per parameter index: views into flat_m / flat_v; NULL for frozen */
    tensor *views;                 /* the storage of those views */
    int64_t step;    /* optimizer steps taken */
    /* the trainable tensors as lists for the multi-tensor ops: values, gradients, moments, compute
     * copies (NULL where the value is the compute tensor), weight decay */
    int nt;
    tensor **tp, **tg, **tm, **tv, **tpc;
    float *twd;
} optim;

/* HF get_cosine_schedule_with_warmup (num_cycles 0.5) as a multiplier of the peak lr. */
double lr_schedule(int64_t step, int64_t warmup, int64_t total);
/* HF rounding of the warmup: ceil(ratio × total). */
int64_t warmup_steps_from_ratio(double ratio, int64_t total);

void optim_init(optim *o, const optim_config *c, param_set *ps);
void optim_free(optim *o);
size_t optim_bytes(const optim *o); /* the moments' planned bytes */
/* One step on the accumulated gradients: clip (returns the pre-clip global L2 norm in *grad_norm and
 * the applied coefficient in *clip_coef), AdamW at lr_schedule(step) × lr (returned), step += 1. */
double optim_step(optim *o, double *grad_norm, double *clip_coef);

#endif
