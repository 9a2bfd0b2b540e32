/* dp.h — data parallelism for the trainer: the gradient flow of one optimizer step over the ranks of
 * common/nn/comm.h, under ZeRO stage 0, 1 or 2, the sharded optimizer's segments, the all-gather of
 * the updated parameters, and the collectives a checkpoint needs.
 *
 * Layout. The trained tensors' flat buffers (params.h) are cut into buckets along the backward's
 * order (closed between groups: the LLM's layers, its norm, lm_head, the visual heads, the
 * projector), each padded to a multiple of world × 64 elements and cut into world equal pieces: rank
 * r owns piece r of every bucket. Its SHARD is the concatenation of its pieces (equal sizes on every
 * rank); the optimizer's state (AdamW moments and the step's gradient) covers the shard only.
 *
 * One step of R micro-batch rounds (every rank runs R = ceil(global micro-batches / world) rounds; a
 * rank without a micro-batch in a round contributes zeros):
 *  zero 0  every round: the gradients of a bucket are summed over the ranks (all-reduce) as soon as
 *          the backward has finished them, and added to a full-size step gradient; every rank keeps
 *          the whole optimizer state and updates everything (no gather). With one rank and one round
 *          the optimizer reads the gradient buffer itself (no copy).
 *  zero 1  the gradients accumulate over the rounds in one full buffer; in the last round each bucket
 *          is reduce-scattered into the owners' pieces as it is finished.
 *  zero 2  the gradients live in two bucket-sized buffers used in turn (params.h); every round each
 *          bucket is reduce-scattered as soon as it is finished and added to the owner's shard of the
 *          step gradient, while the backward goes on into the other buffer.
 *  1 and 2: AdamW runs on the shard (the squared gradient norm is summed in double across ranks, so
 *  the clip coefficient is that of the whole gradient), then every bucket's updated values are
 *  all-gathered and the bf16 compute copies refreshed. With bf16 compute copies the f32 masters exist
 *  only as the rank's pieces (params.h: sharded masters): the updated pieces are converted and the
 *  bf16 copies all-gathered bucket by bucket, and the f32 values of the tensors computed in f32
 *  (norms, biases, the embedding table) are completed across the ranks with one exact sum.
 * Each micro-batch's gradient is built on its own and then added to the step's, so (N ranks,
 * accumulation k) sums the same micro-batch gradients as (1 rank, accumulation N·k); with N = 2 every
 * sum is a two-operand sum and the runs are bitwise equal.
 * Not for: launching ranks or moving bytes (comm.h), the model (common/model), the data (prefetch.h).
 */
#ifndef ASVR_TRAIN_DP_H
#define ASVR_TRAIN_DP_H

#include <stdint.h>

#include "model/params.h"
#include "nn/comm.h"
#include "optim.h"

#define DP_BUCKET_DEFAULT (16LL << 20) /* elements per bucket: 4096² as DeepSpeed's "auto" for a 4096-wide LLM */

typedef struct dp {
    comm *c;
    int rank, world, zero;
    param_set *ps;
    int64_t shard_n;              /* the optimizer's state length */
    int64_t *piece_off;           /* [n_buckets] where this rank's piece of bucket b sits in the state */
    int64_t piece_max;
    nn_arena *arena;              /* the step gradient (state layout) and the reduce-scatter landing pieces */
    tensor *gacc, *tmp[2];
    int alias;                    /* the optimizer reads the set's flat gradients directly */
    int round, rounds, next;      /* the round of the step, their number, the next bucket to reduce */
    comm_ticket *tick;            /* [n_buckets] the collective of each bucket in this round */
    int deferred;                 /* NCCL collectives overlap compute; waits are explicit (comm.h) */
} dp;

/* Before committing ps: buckets and padding for `world` ranks at this ZeRO stage (world 1 and zero 0:
 * the layout stays the default one). */
void dp_configure(param_set *ps, int rank, int world, int zero, int64_t bucket_elems);
/* After committing ps: the step's buffers, and the optimizer (unsharded for zero 0, else over this
 * rank's segments), which it initialises with oc. c: the ranks (NULL for a plan: then rank of world,
 * and no collective may run). may_accumulate = 0 promises one micro-batch round per step, which saves
 * zero 0 the full-size step gradient. */
void dp_init(dp *d, comm *c, int rank, int world, param_set *ps, int zero, int may_accumulate, optim *o,
             const optim_config *oc);
void dp_free(dp *d);
/* Bytes dp_init allocates (the step gradient and landing pieces), for the memory plan; valid in
 * plan-only mode too. */
size_t dp_bytes(const dp *d);

/* A step of `rounds` micro-batch rounds: call dp_step_begin, then for every round dp_round_begin, the
 * model's forward / loss / backward (or nothing, for a round without a micro-batch of this rank) and
 * dp_round_end; then optim_step; then dp_step_end (the gather of the updated values). */
void dp_step_begin(dp *d, optim *o, int rounds);
void dp_round_begin(dp *d, int round);
void dp_round_end(dp *d);
void dp_step_end(dp *d, const optim *o);

/* Sums of host values over the ranks (loss sums, counts); nothing with one rank. */
void dp_sum_f64(dp *d, double *v, int n);
void dp_sum_i64(dp *d, int64_t *v, int n);
/* The checkpoint's collectives (checkpoint.h's checkpoint_ranks): the sum of a host buffer over the
 * ranks, and the worst return code of all ranks. */
void dp_gather_host(void *ctx, float *full, int64_t n);
int dp_agree(void *ctx, int rc);
/* Whether every rank holds the same parameter values (a hash of the flat values compared across the
 * ranks); 1 when they do. */
int dp_replicas_equal(dp *d);

#endif
