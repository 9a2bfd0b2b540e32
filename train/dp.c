#include "dp.h"

#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "nn/ops.h"

void dp_configure(param_set *ps, int rank, int world, int zero, int64_t bucket_elems) {
    CHECK(world >= 1 && zero >= 0 && zero <= 2, "", "dp_configure: %d ranks, zero %d", world, zero);
    if (world == 1 && zero == 0) return;
    int64_t multiple = (int64_t)world * PARAM_FLAT_ALIGN;
    param_set_set_buckets(ps, bucket_elems > 0 ? bucket_elems : DP_BUCKET_DEFAULT, multiple, zero == 2);
    param_set_set_flat_pad(ps, multiple);
    if (zero >= 1) param_set_set_shard(ps, rank, world); /* with bf16 copies: the f32 masters as pieces only */
}

/* A 1-d view of n elements of t at element offset off. */
static tensor range(const tensor *t, int64_t off, int64_t n, const char *name) {
    void *data = t->data ? (char *)t->data + (size_t)off * nn_dtype_size(t->dtype) : NULL;
    return tensor_make(name, t->dtype, t->device, 1, (int64_t[]){n}, data);
}

static int64_t piece_len(const dp *d, int b) { return d->ps->bucket_len[b] / d->world; }

/* This rank's segments: every trained tensor's part in each of its pieces, in bucket order. */
static int shard_segments(dp *d, optim_segment **out) {
    param_set *ps = d->ps;
    int cap = ps->n_flat + 2 * ps->n_buckets + 1, n = 0;
    optim_segment *seg = asvr_calloc((size_t)cap, sizeof *seg, "optimizer segments");
    int *index = asvr_calloc((size_t)(ps->n ? ps->n : 1), sizeof *index, "parameter indices");
    for (int i = 0; i < ps->n; i++) index[i] = i;
    for (int b = 0; b < ps->n_buckets; b++) {
        int64_t pl = piece_len(d, b), lo = ps->bucket_off[b] + (int64_t)d->rank * pl, hi = lo + pl;
        for (int i = 0; i < ps->n; i++) {
            const param *p = ps->v[i];
            if (p->off < 0) continue;
            int64_t a = p->off > lo ? p->off : lo, e = p->off + p->numel < hi ? p->off + p->numel : hi;
            if (a >= e) continue;
            if (n == cap) seg = asvr_realloc(seg, sizeof *seg * (size_t)(cap *= 2), "optimizer segments");
            seg[n++] = (optim_segment){index[i], a - p->off, e - a, d->piece_off[b] + (a - lo)};
        }
    }
    free(index);
    *out = seg;
    return n;
}

static void sum_ranks(void *ctx, double *v) { dp_sum_f64(ctx, v, 1); }

void dp_init(dp *d, comm *c, int rank, int world, param_set *ps, int zero, int may_accumulate, optim *o,
             const optim_config *oc) {
    memset(d, 0, sizeof *d);
    d->c = c;
    d->rank = c ? comm_rank(c) : rank;
    d->world = c ? comm_size(c) : world;
    d->zero = zero;
    d->ps = ps;
    int nb = ps->n_buckets;
    d->piece_off = asvr_calloc((size_t)(nb ? nb : 1), sizeof *d->piece_off, "bucket pieces");
    d->tick = asvr_calloc((size_t)(nb ? nb : 1), sizeof *d->tick, "bucket tickets");
    d->arena = nn_arena_new("data-parallel step gradient", ps->device);
    if (zero == 0) {
        optim_init(o, oc, ps);
        d->shard_n = ps->flat_n;
        for (int b = 0; b < nb; b++) d->piece_off[b] = ps->bucket_off[b];
        int64_t n = ps->flat_n ? ps->flat_n : PARAM_FLAT_ALIGN;
        if (may_accumulate) d->gacc = nn_arena_add(d->arena, "step gradient", NN_F32, 1, &n);
    } else {
        CHECK(ps->shard_world == d->world && ps->shard_rank == d->rank, "", "dp_init: the parameter set was laid out for "
              "rank %d of %d, this is rank %d of %d (call dp_configure before committing it)", ps->shard_rank,
              ps->shard_world, d->rank, d->world);
        for (int b = 0; b < nb; b++) {
            d->piece_off[b] = ps->piece_off[b];
            if (piece_len(d, b) > d->piece_max) d->piece_max = piece_len(d, b);
        }
        d->shard_n = ps->shard_n;
        optim_segment *seg;
        int nseg = shard_segments(d, &seg);
        optim_init_segments(o, oc, ps, nseg, seg, d->shard_n);
        free(seg);
        int64_t n = d->shard_n ? d->shard_n : PARAM_FLAT_ALIGN, m = d->piece_max ? d->piece_max : PARAM_FLAT_ALIGN;
        d->gacc = nn_arena_add(d->arena, "step gradient shard", NN_F32, 1, &n);
        if (zero == 2) {
            d->tmp[0] = nn_arena_add(d->arena, "reduce-scatter landing 0", NN_F32, 1, &m);
            d->tmp[1] = nn_arena_add(d->arena, "reduce-scatter landing 1", NN_F32, 1, &m);
        }
        o->sum_ranks = sum_ranks;
        o->sum_ctx = d;
    }
    nn_arena_commit(d->arena);
    /* on a GPU the reduce-scatters overlap the rest of the backward: the compute stream waits for a
     * bucket's collective only where its buffers are used again (comm_wait in finish_bucket, the round's
     * end and the gathers), and the host once per step (comm_sync in dp_step_end) */
    d->deferred = c && ps->device == NN_CUDA && zero >= 1 && d->world > 1;
    if (d->deferred) comm_set_deferred(c, 1);
}

void dp_free(dp *d) {
    if (d->ps) param_set_set_ready_hook(d->ps, NULL, NULL);
    if (d->arena) nn_arena_free(d->arena);
    free(d->piece_off);
    free(d->tick);
    memset(d, 0, sizeof *d);
}

size_t dp_bytes(const dp *d) { return d->arena ? nn_arena_bytes(d->arena) : 0; }

/* The gradient buffer of bucket b as the backward wrote it. */
static tensor bucket_grads(const dp *d, int b) {
    const param_set *ps = d->ps;
    if (ps->grads_in_buckets) return range(ps->bucket_grads[b % 2], 0, ps->bucket_len[b], "bucket gradients");
    return range(ps->flat_grads, ps->bucket_off[b], ps->bucket_len[b], "bucket gradients");
}

/* zero 2: bucket b's reduce-scatter is complete: add what landed to the step's shard (after the first
 * round), and clear its buffer for bucket b + 2. */
static void finish_bucket(dp *d, int b) {
    comm_wait(d->c, d->tick[b]);
    if (d->round > 0) {
        tensor acc = range(d->gacc, d->piece_off[b], piece_len(d, b), "step gradient"),
               got = range(d->tmp[b % 2], 0, piece_len(d, b), "landed piece");
        op_add(&acc, &acc, &got);
    }
    op_fill(d->ps->bucket_grads[b % 2], 0.0f);
}

/* Bucket b's gradients of this round are final. */
static void reduce_bucket(dp *d, int b) {
    const param_set *ps = d->ps;
    tensor g = bucket_grads(d, b);
    if (d->zero == 0) {
        if (d->world > 1) {
            d->tick[b] = comm_allreduce(d->c, &g);
            comm_wait(d->c, d->tick[b]);
        }
        if (!d->alias) {
            tensor acc = range(d->gacc, ps->bucket_off[b], ps->bucket_len[b], "step gradient");
            op_add(&acc, &acc, &g);
        }
    } else if (d->zero == 1) {
        if (d->round == d->rounds - 1) {
            tensor dst = range(d->gacc, d->piece_off[b], piece_len(d, b), "step gradient");
            d->tick[b] = comm_reduce_scatter(d->c, &dst, &g);
        }
    } else {
        tensor dst = d->round == 0 ? range(d->gacc, d->piece_off[b], piece_len(d, b), "step gradient")
                                   : range(d->tmp[b % 2], 0, piece_len(d, b), "landed piece");
        d->tick[b] = comm_reduce_scatter(d->c, &dst, &g);
        if (b > 0) finish_bucket(d, b - 1);
    }
}

static void on_ready(void *ctx, int64_t flat_end) {
    dp *d = ctx;
    while (d->next < d->ps->n_buckets && d->ps->bucket_end[d->next] <= flat_end) reduce_bucket(d, d->next++);
}

void dp_step_begin(dp *d, optim *o, int rounds) {
    CHECK(rounds >= 1, "", "dp_step_begin: %d rounds", rounds);
    d->rounds = rounds;
    d->alias = d->zero == 0 && rounds == 1;
    CHECK(d->alias || d->zero != 0 || d->gacc, "", "a step of %d micro-batch rounds, but the run was planned for one", rounds);
    if (d->zero == 0) optim_set_grad(o, d->alias ? d->ps->flat_grads : d->gacc);
    else optim_set_grad(o, d->gacc);
    if (d->zero == 0 && !d->alias) op_fill(d->gacc, 0.0f);
    if (d->zero == 1) param_set_zero_grads(d->ps);
    param_set_set_ready_hook(d->ps, on_ready, d);
}

void dp_round_begin(dp *d, int round) {
    d->round = round;
    d->next = 0;
    if (d->zero != 1) param_set_zero_grads(d->ps);
}

void dp_round_end(dp *d) {
    CHECK(d->next == d->ps->n_buckets, "", "the backward finished %d of %d gradient buckets (is the slot order the "
          "backward's?)", d->next, d->ps->n_buckets);
    if (d->zero == 2 && d->ps->n_buckets) finish_bucket(d, d->ps->n_buckets - 1);
    if (d->zero == 1 && d->round == d->rounds - 1 && d->ps->n_buckets) comm_wait(d->c, d->tick[d->ps->n_buckets - 1]);
}

/* Sharded masters: the updated pieces into their compute copies (bf16), gathered bucket by bucket, and
 * into the replica of the tensors computed in f32, completed across the ranks with one sum (every
 * element is one rank's value plus -0.0 from the others: exact). */
static void refresh_from_pieces(dp *d, const optim *o) {
    param_set *ps = d->ps;
    comm_ticket last = 0;
    for (int b = 0; b < ps->n_buckets; b++) {
        int64_t pl = piece_len(d, b);
        tensor mine = range(ps->flat_compute, ps->bucket_off[b] + (int64_t)d->rank * pl, pl, "compute piece"),
               src = range(ps->master, d->piece_off[b], pl, "master piece");
        op_copy(&mine, &src);
        tensor full = range(ps->flat_compute, ps->bucket_off[b], ps->bucket_len[b], "compute bucket");
        last = comm_allgather_inplace(d->c, &full);
    }
    op_fill(ps->replica, -0.0f);
    for (int k = 0; k < o->nseg; k++) {
        const optim_segment *s = &o->seg[k];
        const param *p = ps->v[s->param];
        if (p->roff < 0) continue;
        tensor dst = range(ps->replica, p->roff + s->elem, s->len, p->name), src = range(ps->master, s->state, s->len, "master");
        op_copy(&dst, &src);
    }
    last = comm_allreduce(d->c, ps->replica);
    comm_wait(d->c, last);
}

void dp_step_end(dp *d, const optim *o) {
    if (d->zero == 0) return;
    param_set *ps = d->ps;
    if (ps->master_sharded) {
        refresh_from_pieces(d, o);
        if (d->deferred) comm_sync(d->c);
        return;
    }
    comm_ticket last = 0;
    for (int b = 0; b < ps->n_buckets; b++) {
        tensor v = range(ps->flat_values, ps->bucket_off[b], ps->bucket_len[b], "values");
        last = comm_allgather_inplace(d->c, &v);
    }
    if (ps->n_buckets) comm_wait(d->c, last);
    param_set_sync_compute(ps);
    if (d->deferred) comm_sync(d->c);
}

void dp_sum_f64(dp *d, double *v, int n) {
    if (d->world > 1 && n > 0) comm_allreduce_f64(d->c, v, n);
}

void dp_sum_i64(dp *d, int64_t *v, int n) {
    if (d->world > 1 && n > 0) comm_allreduce_i64(d->c, v, n);
}

void dp_gather_host(void *ctx, float *full, int64_t n) {
    dp *d = ctx;
    if (d->world == 1 || n == 0) return;
    tensor t = tensor_make("checkpoint tensor", NN_F32, NN_CPU, 1, (int64_t[]){n}, full);
    comm_allreduce(d->c, &t);
}

int dp_agree(void *ctx, int rc) {
    dp *d = ctx;
    int64_t bad = rc < 0;
    dp_sum_i64(d, &bad, 1);
    return bad ? -1 : 0;
}

/* xxh64 of a tensor's values read as f32 on the host. */
static uint64_t hash_values(const tensor *v, uint64_t seed) {
    int64_t n = tensor_numel(v);
    float *h = asvr_malloc(sizeof(float) * (size_t)n, "a host copy of the parameters");
    op_read_f32(v, h);
    uint64_t x = asvr_xxh64(h, sizeof(float) * (size_t)n, seed);
    free(h);
    return x;
}

int dp_replicas_equal(dp *d) {
    if (d->world == 1) return 1;
    const param_set *ps = d->ps;
    /* what every rank holds whole: the values, or with sharded masters the compute copies and the replica */
    uint64_t mine = ps->master_sharded ? hash_values(ps->replica, hash_values(ps->flat_compute, 0))
                                       : hash_values(ps->flat_values, 0);
    uint64_t *all = asvr_calloc((size_t)d->world, sizeof *all, "replica hashes");
    comm_allgather_bytes(d->c, all, &mine, sizeof mine);
    int same = 1;
    for (int r = 1; r < d->world; r++) same &= all[r] == all[0];
    free(all);
    return same;
}
