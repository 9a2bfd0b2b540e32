#include "model/kmeans.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

#define KM_MAX_THREADS 256

/* Rows of the [R, K] distance scratch: about 32 MiB of floats at any K. */
static int64_t dist_rows(int64_t M, int K) {
    int64_t r = ((int64_t)1 << 23) / K;
    if (r < 16) r = 16;
    return r < M ? r : M;
}

uint64_t kmeans_scratch_bytes(int64_t M, int64_t C, int k, int threads) {
    if (threads < 1) threads = 1;
    if (threads > KM_MAX_THREADS) threads = KM_MAX_THREADS;
    uint64_t b = 0;
    b += (uint64_t)M * (uint64_t)C * 4;                     /* working copy / difference rows */
    b += (uint64_t)M * 4 * 4;                               /* errors, D^2, codes, previous codes */
    b += (uint64_t)dist_rows(M, k) * ((uint64_t)k + 1) * 4 * (uint64_t)threads; /* distances per thread */
    b += (uint64_t)k * (uint64_t)C * 8 + (uint64_t)k * 16;  /* centroid sums, counts, norms */
    b += (uint64_t)M * 16;                                  /* order of rows for re-seeding */
    return b + (uint64_t)8 * 256;                           /* arena alignment */
}

/* ---- seeded generator (splitmix64) ------------------------------------------------------------ */

static uint64_t mix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(mix64(s) >> 11) * (1.0 / 9007199254740992.0); }

static uint64_t below(uint64_t *s, uint64_t n) { /* uniform in [0, n), no modulo bias */
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, v;
    do v = mix64(s);
    while (v >= lim);
    return v % n;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : (x > y);
}

void kmeans_sample_indices(uint64_t seed, int64_t n, int64_t k, int64_t *out) {
    CHECK(k >= 0 && k <= n, "this is a bug in the caller", "sampling %lld of %lld", (long long)k, (long long)n);
    int64_t *all = asvr_malloc(sizeof(int64_t) * (size_t)(n ? n : 1), "a sample of indices");
    for (int64_t i = 0; i < n; i++) all[i] = i;
    uint64_t s = seed;
    for (int64_t i = 0; i < k; i++) { /* partial Fisher-Yates */
        int64_t j = i + (int64_t)below(&s, (uint64_t)(n - i));
        int64_t t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    qsort(all, (size_t)k, sizeof *all, cmp_i64);
    memcpy(out, all, sizeof(int64_t) * (size_t)k);
    free(all);
}

/* ---- workspace ---------------------------------------------------------------------------------- */

typedef struct km_row {
    float err;
    int64_t row;
} km_row;

typedef struct km_work {
    int64_t M, C;
    int K;
    nn_arena *arena;
    tensor *diff;  /* [M, C]: x - nearest centroid after an assignment */
    tensor *err;   /* [M]: |x - c(x)|^2 */
    tensor *mind;  /* [M]: D^2 during seeding */
    int threads;
    int64_t R;
    tensor *dist[KM_MAX_THREADS];  /* [R, K] per thread */
    tensor *dist1[KM_MAX_THREADS]; /* [R, 1] per thread */
    tensor *codes; /* [M, 1] i32 */
    tensor *cnorm; /* [K] */
    tensor *cn1;   /* [1] */
    int32_t *prev;
    double *sums;
    int64_t *counts;
    km_row *order;
} km_work;

static km_work *km_work_new(int64_t M, int64_t C, int K, int threads, int64_t block_rows) {
    km_work *w = asvr_calloc(1, sizeof *w, "k-means workspace");
    w->M = M, w->C = C, w->K = K;
    int64_t R = block_rows > 0 ? (block_rows < M ? block_rows : M) : dist_rows(M, K);
    w->R = R;
    w->threads = threads < 1 ? 1 : threads > KM_MAX_THREADS ? KM_MAX_THREADS : threads;
    if ((int64_t)w->threads > (M + R - 1) / R) w->threads = (int)((M + R - 1) / R);
    w->arena = nn_arena_new("k-means workspace", NN_CPU);
    w->diff = nn_arena_add(w->arena, "differences", NN_F32, 2, (int64_t[]){M, C});
    w->err = nn_arena_add(w->arena, "squared errors", NN_F32, 1, (int64_t[]){M});
    w->mind = nn_arena_add(w->arena, "seeding distances", NN_F32, 1, (int64_t[]){M});
    for (int t = 0; t < w->threads; t++) {
        char name[64];
        snprintf(name, sizeof name, "distances %d", t);
        w->dist[t] = nn_arena_add(w->arena, name, NN_F32, 2, (int64_t[]){R, K});
        snprintf(name, sizeof name, "distances to one centroid %d", t);
        w->dist1[t] = nn_arena_add(w->arena, name, NN_F32, 2, (int64_t[]){R, 1});
    }
    w->codes = nn_arena_add(w->arena, "assignment", NN_I32, 2, (int64_t[]){M, 1});
    w->cnorm = nn_arena_add(w->arena, "centroid norms", NN_F32, 1, (int64_t[]){K});
    w->cn1 = nn_arena_add(w->arena, "one centroid norm", NN_F32, 1, (int64_t[]){1});
    nn_arena_commit(w->arena);
    w->prev = asvr_malloc(sizeof(int32_t) * (size_t)M, "the previous k-means assignment");
    w->sums = asvr_malloc(sizeof(double) * (size_t)K * (size_t)C, "k-means centroid sums");
    w->counts = asvr_malloc(sizeof(int64_t) * (size_t)K, "k-means cluster sizes");
    w->order = asvr_malloc(sizeof(km_row) * (size_t)M, "k-means row order");
    return w;
}

static void km_work_free(km_work *w) {
    if (!w) return;
    nn_arena_free(w->arena);
    free(w->prev);
    free(w->sums);
    free(w->counts);
    free(w->order);
    free(w);
}

static double sum_f32(const tensor *t) { /* in index order: the same total for any thread count */
    const float *p = t->data;
    double s = 0;
    for (int64_t i = 0; i < tensor_numel(t); i++) s += p[i];
    return s;
}

/* op_vq_step over fixed blocks of R rows, spread over the workspace's threads. Each block is one
 * call of the same shape whichever thread runs it, so the result does not depend on the thread
 * count (given a backend whose GEMM is deterministic for a shape, e.g. single-threaded BLAS). */
typedef struct vq_par {
    km_work *w;
    tensor *res;
    const tensor *book, *cnorm;
    int one;
    _Atomic int64_t next;
} vq_par;

typedef struct vq_slot {
    vq_par *p;
    int t;
} vq_slot;

static void *vq_slot_run(void *arg) {
    vq_slot *s = arg;
    vq_par *p = s->p;
    km_work *w = p->w;
    int64_t C = w->C;
    for (;;) {
        int64_t b = atomic_fetch_add(&p->next, 1);
        int64_t r0 = b * w->R;
        if (r0 >= w->M) break;
        int64_t n = w->M - r0 < w->R ? w->M - r0 : w->R;
        tensor res = tensor_make(p->res->name, NN_F32, NN_CPU, 2, (int64_t[]){n, C}, (float *)p->res->data + (size_t)r0 * (size_t)C);
        tensor codes = tensor_make(w->codes->name, NN_I32, NN_CPU, 2, (int64_t[]){n, 1}, (int32_t *)w->codes->data + r0);
        tensor *d = p->one ? w->dist1[s->t] : w->dist[s->t];
        tensor dv = tensor_head0(d, n);
        op_vq_step(&res, p->book, p->cnorm, &codes, 0, &dv);
    }
    return NULL;
}

static void vq_parallel(km_work *w, tensor *res, const tensor *book, const tensor *cnorm, int one) {
    vq_par p = {w, res, book, cnorm, one, 0};
    vq_slot slots[KM_MAX_THREADS];
    pthread_t tids[KM_MAX_THREADS];
    for (int t = 0; t < w->threads; t++) slots[t] = (vq_slot){&p, t};
    if (w->threads == 1) {
        vq_slot_run(&slots[0]);
        return;
    }
    for (int t = 0; t < w->threads; t++)
        CHECK(pthread_create(&tids[t], NULL, vq_slot_run, &slots[t]) == 0, "", "starting a k-means thread");
    for (int t = 0; t < w->threads; t++) pthread_join(tids[t], NULL);
}

/* codes <- nearest centroid of every row; diff <- x - that centroid; err <- |diff|^2. Returns the
 * objective (sum of err). */
static double assign(km_work *w, const tensor *x, const tensor *cent) {
    op_copy(w->diff, x);
    op_row_sqnorm(w->cnorm, cent);
    vq_parallel(w, w->diff, cent, w->cnorm, 0);
    op_row_sqnorm(w->err, w->diff);
    return sum_f32(w->err);
}

/* ---- k-means++ ---------------------------------------------------------------------------------- */

static void copy_row(tensor *cent, int j, const tensor *x, int64_t i) {
    memcpy((float *)cent->data + (size_t)j * (size_t)x->shape[1], (const float *)x->data + (size_t)i * (size_t)x->shape[1],
           sizeof(float) * (size_t)x->shape[1]);
}

/* |x - c_j|^2 for every row into w->err, via the nearest-row op on a one-row codebook. */
static void dist_to_one(km_work *w, const tensor *x, const tensor *cent, int j) {
    tensor row = tensor_make("new centroid", NN_F32, NN_CPU, 2, (int64_t[]){1, w->C},
                             (float *)cent->data + (size_t)j * (size_t)w->C);
    op_row_sqnorm(w->cn1, &row);
    op_copy(w->diff, x);
    vq_parallel(w, w->diff, &row, w->cn1, 1);
    op_row_sqnorm(w->err, w->diff);
}

static void seed_plus_plus(km_work *w, const tensor *x, tensor *cent, uint64_t *rng, int depth, const kmeans_callbacks *cb) {
    int64_t M = w->M;
    float *mind = w->mind->data;
    const float *e = w->err->data;
    int64_t first = (int64_t)below(rng, (uint64_t)M);
    copy_row(cent, 0, x, first);
    dist_to_one(w, x, cent, 0);
    memcpy(mind, e, sizeof(float) * (size_t)M);
    if (cb->on_seeded) cb->on_seeded(cb->ctx, depth, 1);
    for (int j = 1; j < w->K; j++) {
        double total = sum_f32(w->mind);
        int64_t pick = -1;
        if (total > 0) {
            double u = uniform01(rng) * total, acc = 0;
            int64_t last_pos = -1;
            for (int64_t i = 0; i < M; i++) {
                if (mind[i] <= 0) continue;
                last_pos = i;
                acc += mind[i];
                if (acc > u) {
                    pick = i;
                    break;
                }
            }
            if (pick < 0) pick = last_pos; /* u within rounding of the total */
        } else {
            pick = (int64_t)below(rng, (uint64_t)M); /* every row already is a centroid */
        }
        copy_row(cent, j, x, pick);
        dist_to_one(w, x, cent, j);
        for (int64_t i = 0; i < M; i++)
            if (e[i] < mind[i]) mind[i] = e[i];
        if (cb->on_seeded) cb->on_seeded(cb->ctx, depth, j + 1);
    }
}

/* ---- Lloyd update -------------------------------------------------------------------------------- */

static int by_err_desc(const void *a, const void *b) {
    const km_row *x = a, *y = b;
    if (x->err != y->err) return x->err > y->err ? -1 : 1;
    return x->row < y->row ? -1 : (x->row > y->row);
}

/* Centroids <- means of their rows (codes = the current assignment, err = its distances). Empty
 * clusters take the rows farthest from their own centroids. Returns how many were re-seeded. */
static int64_t update(km_work *w, const tensor *x, tensor *cent) {
    int64_t M = w->M, C = w->C;
    int K = w->K;
    int32_t *a = w->codes->data;
    const float *px = x->data;
    float *pc = cent->data;
    memset(w->sums, 0, sizeof(double) * (size_t)K * (size_t)C);
    memset(w->counts, 0, sizeof(int64_t) * (size_t)K);
    for (int64_t i = 0; i < M; i++) {
        double *s = w->sums + (size_t)a[i] * (size_t)C;
        const float *r = px + (size_t)i * (size_t)C;
        for (int64_t c = 0; c < C; c++) s[c] += r[c];
        w->counts[a[i]]++;
    }
    int64_t empty = 0, reseeded = 0;
    for (int j = 0; j < K; j++) empty += w->counts[j] == 0;
    if (empty) {
        const float *e = w->err->data;
        for (int64_t i = 0; i < M; i++) w->order[i] = (km_row){e[i], i};
        qsort(w->order, (size_t)M, sizeof *w->order, by_err_desc);
        int64_t next = 0;
        for (int j = 0; j < K; j++) {
            if (w->counts[j]) continue;
            while (next < M && w->counts[a[w->order[next].row]] <= 1) next++; /* never empty a donor */
            if (next == M) break; /* fewer distinct donors than empty clusters: keep the centroid */
            int64_t i = w->order[next++].row;
            const float *r = px + (size_t)i * (size_t)C;
            double *from = w->sums + (size_t)a[i] * (size_t)C, *to = w->sums + (size_t)j * (size_t)C;
            for (int64_t c = 0; c < C; c++) {
                from[c] -= r[c];
                to[c] = r[c];
            }
            w->counts[a[i]]--;
            w->counts[j] = 1;
            a[i] = j;
            reseeded++;
        }
    }
    for (int j = 0; j < K; j++) {
        if (!w->counts[j]) continue;
        const double *s = w->sums + (size_t)j * (size_t)C;
        double n = (double)w->counts[j];
        for (int64_t c = 0; c < C; c++) pc[(size_t)j * (size_t)C + (size_t)c] = (float)(s[c] / n);
    }
    return reseeded;
}

/* ---- entry points -------------------------------------------------------------------------------- */

static int check_args(const tensor *x, const kmeans_opts *o, asvr_error *err) {
    CHECK(x->device == NN_CPU && x->dtype == NN_F32 && x->ndim == 2, "this is a bug in the caller",
          "k-means: x '%s' must be a 2-d f32 CPU matrix", x->name);
    if (o->k < 1 || o->k > 65536) return asvr_err_set(err, "k-means: codebook size %d outside 1..65536", o->k);
    if (o->max_iters < 0) return asvr_err_set(err, "k-means: %d iterations", o->max_iters);
    if ((int64_t)o->k > x->shape[0])
        return asvr_err_set(err, "k-means: codebook size %d is larger than the %lld training vectors; use more "
                            "images (--sample) or a smaller --codebook-size", o->k, (long long)x->shape[0]);
    return 0;
}

static void check_book(const tensor *x, const tensor *cent, int k) {
    CHECK(cent->device == NN_CPU && cent->dtype == NN_F32 && cent->ndim == 2 && cent->shape[0] == k &&
              cent->shape[1] == x->shape[1],
          "this is a bug in the caller", "k-means: centroids '%s' must be f32 [%d, %lld]", cent->name, k,
          (long long)x->shape[1]);
}

static void fit_one(km_work *w, const tensor *x, tensor *cent, int depth, const kmeans_opts *o, uint64_t seed,
                    kmeans_stats *st) {
    kmeans_stats s = {0};
    uint64_t rng = seed;
    double denom = (double)w->M * (double)w->C;
    seed_plus_plus(w, x, cent, &rng, depth, &o->cb);
    int32_t *a = w->codes->data;
    for (int iter = 1;; iter++) {
        double mse = assign(w, x, cent) / denom;
        int64_t changed = 0;
        if (iter == 1) {
            changed = w->M;
            s.seed_mse = mse;
        } else {
            for (int64_t i = 0; i < w->M; i++) changed += a[i] != w->prev[i];
        }
        s.final_mse = mse;
        if (o->cb.on_iter) o->cb.on_iter(o->cb.ctx, depth, iter, mse, changed);
        if (iter > 1 && changed == 0) {
            s.converged = 1;
            break;
        }
        if (s.iters == o->max_iters) break;
        s.reseeded += update(w, x, cent);
        s.iters++;
        memcpy(w->prev, a, sizeof(int32_t) * (size_t)w->M);
    }
    if (st) *st = s;
}

int kmeans_fit(const tensor *x, tensor *centroids, int32_t *assign_out, int depth, const kmeans_opts *o,
               kmeans_stats *st, asvr_error *err) {
    if (check_args(x, o, err) < 0) return -1;
    check_book(x, centroids, o->k);
    km_work *w = km_work_new(x->shape[0], x->shape[1], o->k, o->threads, o->block_rows);
    uint64_t s = o->seed;
    fit_one(w, x, centroids, depth, o, mix64(&s), st);
    if (assign_out) {
        assign(w, x, centroids); /* the nearest centroid after the last update */
        memcpy(assign_out, w->codes->data, sizeof(int32_t) * (size_t)w->M);
    }
    km_work_free(w);
    return 0;
}

int kmeans_residual_fit(tensor *x, int D, tensor *const *books, const kmeans_opts *o, double *mse,
                        kmeans_stats *st, asvr_error *err) {
    if (check_args(x, o, err) < 0) return -1;
    if (D < 1) return asvr_err_set(err, "residual k-means: depth %d", D);
    for (int d = 0; d < D; d++) check_book(x, books[d], o->k);
    km_work *w = km_work_new(x->shape[0], x->shape[1], o->k, o->threads, o->block_rows);
    double denom = (double)w->M * (double)w->C;
    op_row_sqnorm(w->err, x);
    double before = sum_f32(w->err) / denom;
    if (mse) mse[0] = before;
    for (int d = 0; d < D; d++) {
        uint64_t s = o->seed ^ ((uint64_t)d * 0xd1b54a32d192ed03ull);
        fit_one(w, x, books[d], d, o, mix64(&s), st ? &st[d] : NULL);
        /* What encoding does: residual -= the nearest row of the fitted codebook. */
        op_row_sqnorm(w->cnorm, books[d]);
        vq_parallel(w, x, books[d], w->cnorm, 0);
        op_row_sqnorm(w->err, x);
        double after = sum_f32(w->err) / denom;
        if (o->cb.on_depth) o->cb.on_depth(o->cb.ctx, d, before, after, st ? &st[d] : NULL);
        if (mse) mse[d + 1] = after;
        before = after;
    }
    km_work_free(w);
    return 0;
}
