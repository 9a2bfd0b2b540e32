/* optim.h — AdamW with torch semantics over a parameter set, HF's cosine schedule with linear
 * warmup, and global gradient-norm clipping (torch clip_grad_norm_).
 *
 * The optimizer works on SEGMENTS of the trained tensors: each a contiguous range of one tensor with
 * its place in the optimizer's state buffers (fp32 m and v, and the gradient the step reads, all of
 * length state_n). Unsharded (optim_init), a segment is a whole tensor and the state has the
 * parameter set's flat layout (tensor p at p->off), so the gradient can be the set's flat gradient
 * buffer itself. Sharded (optim_init_segments, data parallelism with ZeRO), a rank's segments are the
 * parts of the tensors in its pieces of the flat buffer, and its state holds those pieces only.
 * With sharded masters (params.h) the values a segment updates are the rank's pieces, in the state
 * layout too. A step is two multi-tensor ops over the segments (op_grad_sqnorm_multi, then op_adamw_multi with the
 * clipping coefficient folded in and, unsharded, the bf16 compute copies refreshed): one launch each
 * on CUDA. The squared norm is summed in double over the segments in a fixed order, then across ranks
 * by the caller's hook.
 * Not for: deciding which parameters train (params.h), when a step happens or moving gradients and
 * parameters between ranks (the trainer).
 */
#ifndef ASVR_TRAIN_OPTIM_H
#define ASVR_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "model/params.h"

typedef struct optim_config {
    double lr, beta1, beta2, eps, weight_decay, clip_norm; /* clip_norm <= 0: off */
    int64_t total_steps, warmup_steps;
} optim_config;

/* A contiguous range of trained tensor `param` (an index into ps->v): elements [elem, elem + len) of
 * it, at [state, state + len) of the state buffers. */
typedef struct optim_segment {
    int param;
    int64_t elem, len, state;
} optim_segment;

typedef struct optim {
    optim_config c;
    param_set *ps;
    int64_t step;              /* optimizer steps taken */
    int64_t state_n;
    nn_arena *state;           /* the moments: one allocation */
    tensor *flat_m, *flat_v;   /* [state_n] each */
    const tensor *grad;        /* the gradient a step reads, [state_n] (optim_set_grad) */
    int refresh_copies;        /* the step writes the bf16 compute copies of its segments */
    /* the segments, in order, and their views for the multi-tensor ops */
    int nseg;
    optim_segment *seg;
    tensor *vp, *vg, *vm, *vv, *vpc;
    tensor **tp, **tg, **tm, **tv, **tpc;
    float *twd;
    /* the sum of the squared norm across ranks (NULL: one rank) */
    void (*sum_ranks)(void *ctx, double *v);
    void *sum_ctx;
} optim;

/* HF get_cosine_schedule_with_warmup (num_cycles 0.5) as a multiplier of the peak lr. */
double lr_schedule(int64_t step, int64_t warmup, int64_t total);
/* HF rounding of the warmup: ceil(ratio × total). */
int64_t warmup_steps_from_ratio(double ratio, int64_t total);

/* Unsharded: every trained tensor whole, in declaration order; state in the flat layout; the gradient
 * is the set's flat gradient buffer until optim_set_grad says otherwise. */
void optim_init(optim *o, const optim_config *c, param_set *ps);
/* Sharded: the given segments (copied) over a state of state_n elements; no gradient until
 * optim_set_grad; the compute copies are not refreshed (the caller gathers the values, then syncs). */
void optim_init_segments(optim *o, const optim_config *c, param_set *ps, int nseg, const optim_segment *seg,
                         int64_t state_n);
/* The gradient the next steps read: [state_n] f32 on the set's device. */
void optim_set_grad(optim *o, const tensor *grad);
void optim_free(optim *o);
size_t optim_bytes(const optim *o); /* the moments' planned bytes */
/* One step on the gradient: clip (returns the pre-clip global L2 norm in *grad_norm and the applied
 * coefficient in *clip_coef), AdamW at lr_schedule(step) × lr (returned), step += 1. */
double optim_step(optim *o, double *grad_norm, double *clip_coef);

/* Checkpoints: which = 0 for m, 1 for v, of trained tensor i (an index into ps->v). optim_get writes
 * this rank's segments of it into full (numel floats, host), leaving the other elements as they are;
 * optim_set reads them from full. Unsharded, that is the whole tensor. */
void optim_get(const optim *o, int i, int which, float *full);
void optim_set(optim *o, int i, int which, const float *full);
/* 1 when this rank holds all of tensor i's state (unsharded). */
int optim_holds_all(const optim *o, int i);

#endif
