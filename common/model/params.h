/* params.h — a model's named parameters: values, gradients, compute copies and flags, for training.
 *
 * A model declares each parameter (name, shape, whether weight decay applies); the trainer marks
 * which are trainable (by name prefix, per stage), then commit lays them out:
 *  - the TRAINED tensors live in flat buffers, one per kind, with the same element offsets: the f32
 *    values (master weights), the f32 gradients and, for mixed precision, the bf16 compute copies.
 *    Each tensor is a view at its slot (p->off); slots are aligned to PARAM_FLAT_ALIGN elements and
 *    the total (flat_n) is padded to a multiple of flat_pad, so the buffers can be cut into equal
 *    shards (one per rank) and an optimizer can keep its state in flat buffers of the same layout.
 *    The slot order is the declaration order, or the prefix order given by param_set_set_order (a
 *    model puts its tensors in the order its backward finishes their gradients, so a finished
 *    gradient is always a prefix of the flat buffer: see param_set_grads_done).
 *  - FROZEN tensors get values (and compute copies) in an arena of their own, and no gradient: their
 *    `g` stays NULL and backward passes skip them.
 * Values come from safetensors under a prefix (every declared name must be present with exactly its
 * shape) or from a seeded init. The set lives on one device (param_set_set_device before commit;
 * default the CPU); loading and random init go through a host f32 staging buffer and op_transfer.
 * Values and gradients are f32 on every device. For mixed-precision training on CUDA,
 * param_set_set_compute_dtype(ps, NN_BF16) adds the bf16 copies `wc` of every matrix (ndim >= 2,
 * unless marked keep_f32, e.g. an embedding table that is only looked up), which the GEMMs read;
 * param_set_sync_compute refreshes the copies from the masters (load, random init and the optimizer
 * step call it). Without it, and for vectors (norm weights, biases), wc == w.
 * Names follow the checkpoint layout (`llm.model.layers.0.self_attn.q_proj.weight`,
 * `visual_head.heads.3.weight`, ...), so save/load is a loop over the set.
 * Not for: frozen towers loaded once for inference only (model/weights.h does that), or optimizer
 * state (the trainer owns it, in flat buffers of this layout).
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

/* Slot alignment in the flat buffers, in elements: 256 bytes of f32, 128 of bf16. */
#define PARAM_FLAT_ALIGN 64

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
    int64_t off;     /* trained: element offset of its slot in the flat buffers; -1 when frozen */
    int64_t roff;    /* sharded masters, a tensor computed in f32: its offset in the replica; else -1 */
    int64_t numel;
    int ndim;
    int64_t shape[NN_MAX_DIMS];
    tensor view_w, view_wc, view_g; /* the trained tensor's views into the flat buffers */
} param;

/* Called by param_set_grads_done: every flat element below flat_end has its final gradient of the
 * current backward pass. */
typedef void (*param_ready_fn)(void *ctx, int64_t flat_end);

typedef struct param_set {
    char label[64];
    param **v;
    int n, cap;
    nn_dtype compute_dtype; /* NN_F32 (default) or NN_BF16 */
    nn_device device;       /* where everything lives (NN_CPU unless param_set_set_device said otherwise) */
    int committed;
    /* the trained tensors: flat buffers, one 1-d tensor [flat_n] each, in arenas of their own */
    int64_t flat_n, flat_pad;
    nn_arena *values, *grads, *compute; /* compute: NULL when the compute dtype is f32 */
    tensor *flat_values, *flat_grads, *flat_compute;
    param **flat;                       /* the trained parameters in slot order */
    int n_flat;
    /* buckets: consecutive ranges of the flat buffers (param_set_set_buckets; default one) */
    int64_t bucket_elems, bucket_multiple;
    int grads_in_buckets;
    int n_buckets;
    int64_t *bucket_off, *bucket_len, *bucket_end; /* start, padded length, end of the last slot */
    tensor *bucket_grads[2];            /* grads_in_buckets: the two buffers, bucket b in b % 2 */
    /* sharded masters (param_set_set_shard, with bf16 compute copies): this rank keeps the f32 master
     * values of its pieces only; the compute copies stay whole, and so do the f32 values of the tensors
     * computed in f32 (vectors, lookup tables: the replica) */
    int shard_rank, shard_world;        /* 0, 0: not sharded */
    int master_sharded;
    int64_t shard_n, *piece_off;        /* the pieces' length in all, and where bucket b's piece starts */
    tensor *master;                     /* [shard_n] f32 (in the values arena; flat_values is then NULL) */
    nn_arena *replica_arena;
    tensor *replica;                    /* [replica_n] f32 */
    char **order;                       /* slot order by name prefix (param_set_set_order) */
    int n_order;
    /* the frozen tensors: values and compute copies, tensor by tensor */
    nn_arena *frozen;
    param_ready_fn ready;
    void *ready_ctx;
} param_set;

void param_set_init(param_set *ps, const char *label);
/* Declares a parameter named printf(fmt, ...). Returns the record; w/g are valid after commit. */
param *param_add(param_set *ps, int ndim, const int64_t *shape, int decay, param_init init, float init_std,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Marks every parameter whose name starts with prefix ("" = all) trainable or frozen. */
void param_set_trainable(param_set *ps, const char *prefix, int trainable);
/* Puts the set on dev (before commit). NN_CUDA needs a CUDA build (exits otherwise). */
void param_set_set_device(param_set *ps, nn_device dev);
/* The dtype the matrices are computed in (before commit): NN_F32 (default) or NN_BF16, which needs
 * the set on CUDA (checked at commit). */
void param_set_set_compute_dtype(param_set *ps, nn_dtype dt);
/* Slot order of the trained tensors (before commit): a tensor goes with the first prefix its name
 * starts with, in the order of the prefixes, then declaration order; names matching none go last. */
void param_set_set_order(param_set *ps, int n, const char *const *prefixes);
/* The flat buffers' length is padded to a multiple of `multiple` elements (before commit; it is
 * rounded up to a multiple of PARAM_FLAT_ALIGN; default PARAM_FLAT_ALIGN). */
void param_set_set_flat_pad(param_set *ps, int64_t multiple);
/* Buckets (before commit; for a trainer that reduces gradients bucket by bucket during the backward):
 * the slots are grouped, along the slot order, into buckets of about bucket_elems elements, closed
 * only between order groups (the tensors of one prefix of param_set_set_order; a group larger than
 * bucket_elems is a bucket of its own); each bucket's length is padded to a multiple of `multiple`
 * elements, so that it can be cut into equal pieces, one per rank. grads_in_buckets = 1: the
 * gradients live in two buffers of the largest bucket's size, bucket b in buffer b % 2 (flat_grads is
 * then NULL; the trainer zeroes a buffer before its bucket's gradients are written and reduces it
 * once they are final), instead of one flat buffer. Default: one bucket, flat gradients. */
void param_set_set_buckets(param_set *ps, int64_t bucket_elems, int64_t multiple, int grads_in_buckets);
/* Sharding across `world` ranks (before commit; needs buckets padded to multiples of world × 64):
 * bucket b is cut into world equal pieces, rank `rank` owns piece `rank` of each (piece_off says where
 * they sit in this rank's shard). With bf16 compute copies the f32 masters of the trained tensors are
 * then kept only for the rank's pieces (`master`); p->w of a tensor with a compute copy has no data,
 * and its values are written with param_set_write and read with param_set_read. */
void param_set_set_shard(param_set *ps, int rank, int world);
/* Writes a trained or frozen tensor's values from host f32 (numel floats): the master (or this rank's
 * pieces of it), the compute copy, the replica. Call param_set_sync_compute afterwards for frozen
 * tensors (as after any direct write). */
void param_set_write(param_set *ps, param *p, const float *host);
/* Reads a tensor's values into host f32: 1 when host holds the whole tensor; 0 with sharded masters,
 * when only this rank's pieces were written (the other elements untouched: the caller completes them
 * across the ranks). */
int param_set_read(const param_set *ps, const param *p, float *host);
/* For each piece of this rank that overlaps trained tensor p: fn(ctx, elem, len, shard) with the
 * element offset in p, the length and the offset in the shard. */
void param_set_for_pieces(const param_set *ps, const param *p, void (*fn)(void *ctx, int64_t elem, int64_t len, int64_t shard),
                          void *ctx);
/* The bucket holding flat element `off` (-1 outside every bucket). */
int param_set_bucket_of(const param_set *ps, int64_t off);
/* Allocates the flat buffers and the frozen arena (zeroed) on the set's device. */
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
/* Zeroes the gradients (the flat buffer, or both bucket buffers). */
void param_set_zero_grads(param_set *ps);
/* Backward progress, for a trainer that reduces gradients while the backward goes on: a model's
 * backward calls this after the last write of the gradients of the parameters named `prefix`... in
 * the pass (prefix NULL: the pass is over); the set's hook (param_set_set_ready_hook) then learns that
 * the flat buffer up to the end of their slots is final. Nothing when none of them trains. The slot
 * order (param_set_set_order) must follow the backward, so that everything before is final too. */
void param_set_grads_done(param_set *ps, const char *prefix);
void param_set_set_ready_hook(param_set *ps, param_ready_fn fn, void *ctx);
/* Converts s to f32 into t (any device; shapes are the caller's to check, numel must match): directly
 * on the CPU, through a host staging buffer elsewhere. -1 with err on a conversion failure. */
int param_tensor_load(tensor *t, const st_tensor *s, asvr_error *err);
int64_t param_set_count(const param_set *ps, int trainable_only); /* number of scalars */
/* Planned bytes (valid before allocation, in plan-only mode too): values (flat + frozen), compute
 * copies (flat + frozen), gradients. */
void param_set_bytes(const param_set *ps, size_t *values, size_t *compute, size_t *grads);
void param_set_print(const param_set *ps, FILE *f);
void param_set_free(param_set *ps);

#ifdef __cplusplus
}
#endif
#endif
