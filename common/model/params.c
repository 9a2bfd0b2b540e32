#include "model/params.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

void param_set_init(param_set *ps, const char *label) {
    memset(ps, 0, sizeof *ps);
    snprintf(ps->label, sizeof ps->label, "%s", label);
    ps->flat_pad = PARAM_FLAT_ALIGN;
    ps->bucket_elems = INT64_MAX;
    ps->bucket_multiple = PARAM_FLAT_ALIGN;
}

param *param_add(param_set *ps, int ndim, const int64_t *shape, int decay, param_init init, float init_std,
                 const char *fmt, ...) {
    CHECK(!ps->committed, "", "parameter set '%s': a parameter was added after commit", ps->label);
    CHECK(ndim >= 1 && ndim <= NN_MAX_DIMS, "", "parameter set '%s': %d dims", ps->label, ndim);
    param *p = asvr_calloc(1, sizeof *p, "a parameter");
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    CHECK(len > 0 && (size_t)len < sizeof p->name, "", "parameter name too long: %s", p->name);
    CHECK(param_find(ps, p->name) == NULL, "", "parameter '%s' declared twice", p->name);
    p->decay = decay;
    p->init = init;
    p->init_std = init_std;
    p->trainable = 1;
    p->off = -1;
    p->roff = -1;
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        CHECK(shape[d] >= 1, "", "parameter '%s': dim %d is %lld", p->name, d, (long long)shape[d]);
        p->shape[d] = shape[d];
        p->numel *= shape[d];
    }
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->v = asvr_realloc(ps->v, (size_t)ps->cap * sizeof *ps->v, "the parameter list");
    }
    ps->v[ps->n++] = p;
    /* until commit, w is a shape-only view (no data) so callers may read the shape */
    p->view_w = tensor_make(p->name, NN_F32, NN_CPU, ndim, shape, NULL);
    p->w = &p->view_w;
    return p;
}

void param_set_trainable(param_set *ps, const char *prefix, int trainable) {
    CHECK(!ps->committed, "", "parameter set '%s': trainability changed after commit", ps->label);
    size_t n = strlen(prefix);
    for (int i = 0; i < ps->n; i++)
        if (strncmp(ps->v[i]->name, prefix, n) == 0) ps->v[i]->trainable = trainable;
}

void param_set_set_device(param_set *ps, nn_device dev) {
    CHECK(!ps->committed, "", "parameter set '%s': device changed after commit", ps->label);
    ps->device = dev;
}

void param_set_set_compute_dtype(param_set *ps, nn_dtype dt) {
    CHECK(!ps->committed, "", "parameter set '%s': compute dtype changed after commit", ps->label);
    CHECK(dt == NN_F32 || dt == NN_BF16, "", "parameter set '%s': compute dtype %s (want f32 or bf16)", ps->label,
          nn_dtype_name(dt));
    ps->compute_dtype = dt;
}

void param_set_set_order(param_set *ps, int n, const char *const *prefixes) {
    CHECK(!ps->committed, "", "parameter set '%s': slot order changed after commit", ps->label);
    for (int i = 0; i < ps->n_order; i++) free(ps->order[i]);
    free(ps->order);
    ps->order = asvr_calloc((size_t)(n ? n : 1), sizeof *ps->order, "the slot order");
    for (int i = 0; i < n; i++) ps->order[i] = asvr_strdup(prefixes[i]);
    ps->n_order = n;
}

void param_set_set_flat_pad(param_set *ps, int64_t multiple) {
    CHECK(!ps->committed, "", "parameter set '%s': flat padding changed after commit", ps->label);
    CHECK(multiple >= 1, "", "parameter set '%s': flat padding %lld", ps->label, (long long)multiple);
    ps->flat_pad = (multiple + PARAM_FLAT_ALIGN - 1) / PARAM_FLAT_ALIGN * PARAM_FLAT_ALIGN;
}

void param_set_set_buckets(param_set *ps, int64_t bucket_elems, int64_t multiple, int grads_in_buckets) {
    CHECK(!ps->committed, "", "parameter set '%s': buckets changed after commit", ps->label);
    CHECK(bucket_elems >= 1 && multiple >= 1, "", "parameter set '%s': buckets of %lld, multiple %lld", ps->label,
          (long long)bucket_elems, (long long)multiple);
    ps->bucket_elems = bucket_elems;
    ps->bucket_multiple = (multiple + PARAM_FLAT_ALIGN - 1) / PARAM_FLAT_ALIGN * PARAM_FLAT_ALIGN;
    ps->grads_in_buckets = grads_in_buckets != 0;
}

void param_set_set_shard(param_set *ps, int rank, int world) {
    CHECK(!ps->committed, "", "parameter set '%s': sharding changed after commit", ps->label);
    CHECK(world >= 1 && rank >= 0 && rank < world, "", "parameter set '%s': rank %d of %d", ps->label, rank, world);
    ps->shard_rank = rank;
    ps->shard_world = world;
}

void param_set_for_pieces(const param_set *ps, const param *p, void (*fn)(void *ctx, int64_t elem, int64_t len, int64_t shard),
                          void *ctx) {
    if (p->off < 0 || ps->shard_world < 1) return;
    for (int b = 0; b < ps->n_buckets; b++) {
        int64_t pl = ps->bucket_len[b] / ps->shard_world, lo = ps->bucket_off[b] + (int64_t)ps->shard_rank * pl,
                hi = lo + pl;
        int64_t a = p->off > lo ? p->off : lo, e = p->off + p->numel < hi ? p->off + p->numel : hi;
        if (a < e) fn(ctx, a - p->off, e - a, ps->piece_off[b] + (a - lo));
    }
}

int param_set_bucket_of(const param_set *ps, int64_t off) {
    for (int b = 0; b < ps->n_buckets; b++)
        if (off >= ps->bucket_off[b] && off < ps->bucket_off[b] + ps->bucket_len[b]) return b;
    return -1;
}

/* The index of the first order prefix name starts with (n_order when none). */
static int order_rank(const param_set *ps, const char *name) {
    for (int i = 0; i < ps->n_order; i++)
        if (strncmp(name, ps->order[i], strlen(ps->order[i])) == 0) return i;
    return ps->n_order;
}

static int has_copy(const param_set *ps, const param *p) {
    return ps->compute_dtype != NN_F32 && p->ndim >= 2 && !p->keep_f32;
}

/* A view of n elements at element offset off of a flat buffer, shaped like p (data NULL in plan-only
 * mode, where the buffer has none). */
static tensor flat_view(const tensor *flat, const param *p) {
    void *data = flat->data ? (char *)flat->data + (size_t)p->off * nn_dtype_size(flat->dtype) : NULL;
    return tensor_make(p->name, flat->dtype, flat->device, p->ndim, p->shape, data);
}

/* Slots along the order (trained tensors by order rank, then declaration order), grouped into
 * buckets closed between order groups; each bucket padded to bucket_multiple, the whole to flat_pad. */
static void layout(param_set *ps) {
    ps->flat = asvr_calloc((size_t)(ps->n ? ps->n : 1), sizeof *ps->flat, "the flat layout");
    ps->bucket_off = asvr_calloc((size_t)(ps->n_order + 2), sizeof(int64_t), "the buckets");
    ps->bucket_len = asvr_calloc((size_t)(ps->n_order + 2), sizeof(int64_t), "the buckets");
    ps->bucket_end = asvr_calloc((size_t)(ps->n_order + 2), sizeof(int64_t), "the buckets");
    ps->n_flat = ps->n_buckets = 0;
    int64_t off = 0, start = 0; /* next slot; start of the open bucket */
    for (int r = 0; r <= ps->n_order; r++) {
        int64_t group = 0;
        int first = ps->n_flat;
        for (int i = 0; i < ps->n; i++)
            if (ps->v[i]->trainable && order_rank(ps, ps->v[i]->name) == r) {
                ps->flat[ps->n_flat++] = ps->v[i];
                group += (ps->v[i]->numel + PARAM_FLAT_ALIGN - 1) / PARAM_FLAT_ALIGN * PARAM_FLAT_ALIGN;
            }
        if (!group) continue;
        if (off > start && off - start + group > ps->bucket_elems) { /* close the open bucket */
            int b = ps->n_buckets++;
            ps->bucket_off[b] = start, ps->bucket_end[b] = off;
            ps->bucket_len[b] = (off - start + ps->bucket_multiple - 1) / ps->bucket_multiple * ps->bucket_multiple;
            start = off = start + ps->bucket_len[b];
        }
        for (int k = first; k < ps->n_flat; k++) {
            ps->flat[k]->off = off;
            off += (ps->flat[k]->numel + PARAM_FLAT_ALIGN - 1) / PARAM_FLAT_ALIGN * PARAM_FLAT_ALIGN;
        }
    }
    if (off > start) {
        int b = ps->n_buckets++;
        ps->bucket_off[b] = start, ps->bucket_end[b] = off;
        ps->bucket_len[b] = (off - start + ps->bucket_multiple - 1) / ps->bucket_multiple * ps->bucket_multiple;
        off = start + ps->bucket_len[b];
    }
    ps->flat_n = (off + ps->flat_pad - 1) / ps->flat_pad * ps->flat_pad;
    if (ps->n_buckets) ps->bucket_len[ps->n_buckets - 1] += ps->flat_n - off; /* the last bucket runs to the end */
}

void param_set_commit(param_set *ps) {
    CHECK(!ps->committed, "", "parameter set '%s' committed twice", ps->label);
    CHECK(ps->compute_dtype == NN_F32 || ps->device == NN_CUDA || nn_arena_plan_only(), "compute in f32 on the CPU",
          "parameter set '%s': bf16 compute copies need the set on cuda, it is on %s", ps->label,
          nn_device_name(ps->device));
    layout(ps);
    int64_t fn = ps->flat_n ? ps->flat_n : PARAM_FLAT_ALIGN, maxb = PARAM_FLAT_ALIGN;
    for (int b = 0; b < ps->n_buckets; b++)
        if (ps->bucket_len[b] > maxb) maxb = ps->bucket_len[b];
    if (ps->shard_world >= 1) { /* this rank's pieces: where they start in its shard */
        ps->piece_off = asvr_calloc((size_t)(ps->n_buckets + 1), sizeof *ps->piece_off, "bucket pieces");
        for (int b = 0; b < ps->n_buckets; b++) {
            CHECK(ps->bucket_len[b] % ((int64_t)ps->shard_world * PARAM_FLAT_ALIGN) == 0, "", "parameter set '%s': bucket %d "
                  "of %lld elements cannot be cut into %d aligned pieces", ps->label, b, (long long)ps->bucket_len[b],
                  ps->shard_world);
            ps->piece_off[b] = ps->shard_n;
            ps->shard_n += ps->bucket_len[b] / ps->shard_world;
        }
    }
    ps->master_sharded = ps->shard_world >= 1 && ps->compute_dtype != NN_F32;
    char label[96];
    snprintf(label, sizeof label, "%s values", ps->label);
    ps->values = nn_arena_new(label, ps->device);
    if (ps->master_sharded) {
        int64_t sn = ps->shard_n ? ps->shard_n : PARAM_FLAT_ALIGN, rn = 0;
        ps->master = nn_arena_add(ps->values, "master pieces", NN_F32, 1, &sn);
        for (int i = 0; i < ps->n_flat; i++) { /* the tensors computed in f32 keep whole f32 values */
            param *p = ps->flat[i];
            p->roff = has_copy(ps, p) ? -1 : rn;
            if (!has_copy(ps, p)) rn += (p->numel + PARAM_FLAT_ALIGN - 1) / PARAM_FLAT_ALIGN * PARAM_FLAT_ALIGN;
        }
        snprintf(label, sizeof label, "%s replica", ps->label);
        ps->replica_arena = nn_arena_new(label, ps->device);
        if (!rn) rn = PARAM_FLAT_ALIGN;
        ps->replica = nn_arena_add(ps->replica_arena, "f32 values of the tensors computed in f32", NN_F32, 1, &rn);
    } else {
        ps->flat_values = nn_arena_add(ps->values, "values", NN_F32, 1, &fn);
    }
    snprintf(label, sizeof label, "%s grads", ps->label);
    ps->grads = nn_arena_new(label, ps->device);
    if (ps->grads_in_buckets) {
        ps->bucket_grads[0] = nn_arena_add(ps->grads, "bucket grads 0", NN_F32, 1, &maxb);
        if (ps->n_buckets > 1) ps->bucket_grads[1] = nn_arena_add(ps->grads, "bucket grads 1", NN_F32, 1, &maxb);
    } else {
        ps->flat_grads = nn_arena_add(ps->grads, "grads", NN_F32, 1, &fn);
    }
    if (ps->compute_dtype != NN_F32) {
        snprintf(label, sizeof label, "%s %s copies", ps->label, nn_dtype_name(ps->compute_dtype));
        ps->compute = nn_arena_new(label, ps->device);
        ps->flat_compute = nn_arena_add(ps->compute, "compute", ps->compute_dtype, 1, &fn);
    }
    snprintf(label, sizeof label, "%s frozen", ps->label);
    ps->frozen = nn_arena_new(label, ps->device);
    char name[NN_NAME_MAX + 16];
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        if (p->trainable) continue;
        p->w = nn_arena_add(ps->frozen, p->name, NN_F32, p->ndim, p->shape);
        p->wc = p->w;
        if (has_copy(ps, p)) {
            snprintf(name, sizeof name, "%s (%s)", p->name, nn_dtype_name(ps->compute_dtype));
            p->wc = nn_arena_add(ps->frozen, name, ps->compute_dtype, p->ndim, p->shape);
        }
    }
    nn_arena_commit(ps->values);
    if (ps->replica_arena) nn_arena_commit(ps->replica_arena);
    nn_arena_commit(ps->grads);
    if (ps->compute) nn_arena_commit(ps->compute);
    nn_arena_commit(ps->frozen);
    for (int i = 0; i < ps->n_flat; i++) {
        param *p = ps->flat[i];
        if (!ps->master_sharded) {
            p->view_w = flat_view(ps->flat_values, p);
        } else if (p->roff >= 0) {
            void *data = ps->replica->data ? (char *)ps->replica->data + (size_t)p->roff * sizeof(float) : NULL;
            p->view_w = tensor_make(p->name, NN_F32, ps->device, p->ndim, p->shape, data);
        } else { /* only this rank's pieces exist, in the master: a view of the shape, without data */
            p->view_w = tensor_make(p->name, NN_F32, ps->device, p->ndim, p->shape, NULL);
        }
        if (ps->grads_in_buckets) { /* a view into its bucket's buffer, at its offset in the bucket */
            int b = param_set_bucket_of(ps, p->off);
            const tensor *buf = ps->bucket_grads[b % 2];
            void *data = buf->data ? (char *)buf->data + (size_t)(p->off - ps->bucket_off[b]) * sizeof(float) : NULL;
            p->view_g = tensor_make(p->name, NN_F32, ps->device, p->ndim, p->shape, data);
        } else {
            p->view_g = flat_view(ps->flat_grads, p);
        }
        p->w = &p->view_w;
        p->g = &p->view_g;
        p->wc = p->w;
        if (has_copy(ps, p)) {
            p->view_wc = flat_view(ps->flat_compute, p);
            p->wc = &p->view_wc;
        }
    }
    ps->committed = 1;
}

param *param_find(const param_set *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->v[i]->name, name) == 0) return ps->v[i];
    return NULL;
}

int param_set_load(param_set *ps, const safetensors *st, const char *prefix, asvr_error *err) {
    CHECK(ps->committed, "", "parameter set '%s' loaded before commit", ps->label);
    char key[256];
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        snprintf(key, sizeof key, "%s%s", prefix ? prefix : "", p->name);
        const st_tensor *s = safetensors_find(st, key);
        if (!s) return asvr_err_set(err, "tensor '%s' is missing; is this the right checkpoint?", key);
        int same = s->ndim == p->ndim;
        for (int d = 0; same && d < s->ndim; d++) same = s->shape[d] == p->shape[d];
        if (!same) {
            char want[96];
            tensor_shape_str(p->w, want, sizeof want);
            return asvr_err_set(err, "tensor '%s' in '%s' has %d dims / %lld elements, expected %s", key,
                                s->file ? s->file : "?", s->ndim, (long long)s->numel, want);
        }
        float *host = asvr_malloc(sizeof(float) * (size_t)p->numel, "a host staging buffer (one tensor)");
        int rc = st_tensor_to_f32(s, host, err);
        if (rc == 0) param_set_write(ps, p, host);
        free(host);
        if (rc < 0) return asvr_err_prefix(err, "tensor '%s'", key);
    }
    param_set_sync_compute(ps);
    return 0;
}

/* param_set_write's pieces: host elements [elem, elem + len) to master [shard, shard + len). */
typedef struct piece_io {
    const param_set *ps;
    float *host;
} piece_io;

static void write_piece(void *ctx, int64_t elem, int64_t len, int64_t shard) {
    const piece_io *io = ctx;
    tensor dst = tensor_make("master", NN_F32, io->ps->device, 1, (int64_t[]){len},
                             (char *)io->ps->master->data + (size_t)shard * sizeof(float));
    tensor src = tensor_make("host", NN_F32, NN_CPU, 1, (int64_t[]){len}, io->host + elem);
    op_transfer(&dst, &src);
}

static void read_piece(void *ctx, int64_t elem, int64_t len, int64_t shard) {
    const piece_io *io = ctx;
    tensor src = tensor_make("master", NN_F32, io->ps->device, 1, (int64_t[]){len},
                             (char *)io->ps->master->data + (size_t)shard * sizeof(float));
    tensor dst = tensor_make("host", NN_F32, NN_CPU, 1, (int64_t[]){len}, io->host + elem);
    op_transfer(&dst, &src);
}

void param_set_write(param_set *ps, param *p, const float *host) {
    CHECK(ps->committed, "", "parameter set '%s': '%s' written before commit", ps->label, p->name);
    if (!ps->master_sharded || !p->trainable) {
        op_write_f32(p->w, host);
        return;
    }
    piece_io io = {ps, (float *)host};
    param_set_for_pieces(ps, p, write_piece, &io);
    if (p->wc->data) op_write_f32(p->wc, host); /* the compute copy, or the replica (wc == w) */
}

int param_set_read(const param_set *ps, const param *p, float *host) {
    if (!ps->master_sharded || !p->trainable || p->w->data) {
        op_read_f32(p->w, host);
        return 1;
    }
    piece_io io = {ps, host};
    param_set_for_pieces(ps, p, read_piece, &io);
    return 0;
}

void param_set_sync_compute(param_set *ps) {
    /* the flat copies in one op (the slots of vectors, which compute in f32, are converted unread); with
     * sharded masters the trained copies are written with the values (param_set_write) and refreshed
     * by the trainer after each step */
    if (ps->flat_compute && ps->flat_values && ps->n_flat) op_copy(ps->flat_compute, ps->flat_values);
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        if (!p->trainable && p->wc != p->w) op_copy(p->wc, p->w);
    }
}

int param_tensor_load(tensor *t, const st_tensor *s, asvr_error *err) {
    CHECK(s->numel == tensor_numel(t), "", "param_tensor_load: '%s' has %lld elements, tensor '%s' %lld",
          s->name ? s->name : "?", (long long)s->numel, t->name, (long long)tensor_numel(t));
    if (t->device == NN_CPU && t->dtype == NN_F32) return st_tensor_to_f32(s, t->data, err);
    float *tmp = asvr_malloc(sizeof(float) * (size_t)(s->numel ? s->numel : 1), "a host staging buffer");
    int rc = st_tensor_to_f32(s, tmp, err);
    if (rc == 0) op_write_f32(t, tmp);
    free(tmp);
    return rc;
}

/* splitmix64 → uniform → Box-Muller, all in double: the same numbers on every machine. */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void param_set_init_random(param_set *ps, uint64_t seed) {
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        int64_t n = p->numel;
        int on_host = p->w->device == NN_CPU && p->w->data && !ps->master_sharded;
        float *w = on_host ? p->w->data : asvr_malloc(sizeof(float) * (size_t)n, "a host staging buffer");
        uint64_t s = seed ^ (0x51ED270B27A1F1C3ULL * (uint64_t)(i + 1));
        for (int64_t k = 0; k < n; k++) {
            if (p->init == PARAM_INIT_ZERO) w[k] = 0.0f;
            else if (p->init == PARAM_INIT_ONE) w[k] = 1.0f;
            else {
                double u1 = ((double)(sm64(&s) >> 11) + 1.0) / 9007199254740993.0;
                double u2 = (double)(sm64(&s) >> 11) / 9007199254740992.0;
                w[k] = (float)(p->init_std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            }
        }
        if (!on_host) {
            param_set_write(ps, p, w);
            free(w);
        }
    }
    param_set_sync_compute(ps);
}

void param_set_zero_grads(param_set *ps) {
    if (!ps->n_flat) return;
    if (ps->flat_grads) op_fill(ps->flat_grads, 0.0f);
    for (int k = 0; k < 2; k++)
        if (ps->bucket_grads[k]) op_fill(ps->bucket_grads[k], 0.0f);
}

void param_set_set_ready_hook(param_set *ps, param_ready_fn fn, void *ctx) {
    ps->ready = fn;
    ps->ready_ctx = ctx;
}

void param_set_grads_done(param_set *ps, const char *prefix) {
    if (!ps->ready) return;
    if (!prefix) {
        ps->ready(ps->ready_ctx, ps->flat_n);
        return;
    }
    size_t n = strlen(prefix);
    int64_t end = -1;
    for (int i = 0; i < ps->n_flat; i++) {
        const param *p = ps->flat[i];
        if (strncmp(p->name, prefix, n) == 0 && p->off + p->numel > end) end = p->off + p->numel;
    }
    if (end >= 0) ps->ready(ps->ready_ctx, (end + PARAM_FLAT_ALIGN - 1) / PARAM_FLAT_ALIGN * PARAM_FLAT_ALIGN);
}

int64_t param_set_count(const param_set *ps, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < ps->n; i++)
        if (!trainable_only || ps->v[i]->trainable) n += ps->v[i]->numel;
    return n;
}

void param_set_bytes(const param_set *ps, size_t *values, size_t *compute, size_t *grads) {
    size_t v = 0, c = 0, g = 0;
    if (ps->values) v += nn_arena_bytes(ps->values);
    if (ps->replica_arena) v += nn_arena_bytes(ps->replica_arena);
    if (ps->grads) g += nn_arena_bytes(ps->grads);
    if (ps->compute) c += nn_arena_bytes(ps->compute);
    for (int i = 0; i < ps->n; i++) { /* the frozen arena holds values and copies: split them */
        const param *p = ps->v[i];
        if (p->trainable || !ps->frozen) continue;
        size_t vb = (tensor_nbytes(p->w) + 255) / 256 * 256;
        v += vb;
        if (p->wc != p->w) c += (tensor_nbytes(p->wc) + 255) / 256 * 256;
    }
    if (values) *values = v;
    if (compute) *compute = c;
    if (grads) *grads = g;
}

void param_set_print(const param_set *ps, FILE *f) {
    size_t v, c, g;
    param_set_bytes(ps, &v, &c, &g);
    fprintf(f, "parameters '%s' on %s: %d tensors, %lld scalars, %lld trainable in a flat layout of %lld (%.1f MiB values, "
               "%.1f MiB grads",
            ps->label, nn_device_name(ps->device), ps->n, (long long)param_set_count(ps, 0),
            (long long)param_set_count(ps, 1), (long long)ps->flat_n, (double)v / 1048576.0, (double)g / 1048576.0);
    if (c) fprintf(f, ", %.1f MiB %s compute copies", (double)c / 1048576.0, nn_dtype_name(ps->compute_dtype));
    fprintf(f, ")\n");
}

void param_set_free(param_set *ps) {
    for (int i = 0; i < ps->n; i++) free(ps->v[i]);
    free(ps->v);
    free(ps->flat);
    free(ps->bucket_off), free(ps->bucket_len), free(ps->bucket_end);
    free(ps->piece_off);
    if (ps->replica_arena) nn_arena_free(ps->replica_arena);
    for (int i = 0; i < ps->n_order; i++) free(ps->order[i]);
    free(ps->order);
    if (ps->values) nn_arena_free(ps->values);
    if (ps->grads) nn_arena_free(ps->grads);
    if (ps->compute) nn_arena_free(ps->compute);
    if (ps->frozen) nn_arena_free(ps->frozen);
    memset(ps, 0, sizeof *ps);
}
