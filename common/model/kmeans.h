/* kmeans.h — k-means (k-means++ seeding, Lloyd iterations) and residual k-means over an in-memory
 * f32 matrix: how a residual quantiser's codebooks are fitted to features.
 *
 * Distances go through the same nearest-row op as encoding (op_vq_step: squared L2 as
 * |x|^2 + |c|^2 - 2 x.c, lowest index on a tie), so a vector is assigned exactly as rvq_encode will
 * later code it. Everything is deterministic for a given seed and input: random draws come from one
 * seeded generator, sums are taken in row order (centroid sums and objectives in double), and the
 * distance steps run on fixed blocks of rows, one op call per block, so the thread count does not
 * change any value as long as the backend's GEMM gives the same result for the same shape (the
 * CPU backend's OpenBLAS does when its own thread count is fixed; asvr-tokenize fit pins it to 1).
 *  - seeding: the first centroid a uniformly drawn row; each next one drawn with probability
 *    proportional to its squared distance to the nearest centroid chosen so far (D^2 sampling).
 *  - Lloyd: assign every row to its nearest centroid, then move each centroid to the mean of its
 *    rows; an empty cluster is re-seeded with the row farthest from its own centroid (the lowest
 *    row index on a tie; rows already used for an empty cluster in the same step are skipped).
 *    Stops after max_iters updates or when an assignment equals the previous one.
 *  - residual fit: for d in 0..D-1, fit codebook d on the residual, then residual -= the nearest
 *    row of the fitted codebook (one op_vq_step, i.e. what encoding does).
 * The objective reported is the mean squared error per element: sum |x - c(x)|^2 / (rows * cols).
 * Not for: encoding (rvq.h), online/minibatch or GPU k-means, or matrices that do not fit in memory
 * (the caller samples and budgets; the working set is about 2x the matrix plus K x C doubles).
 * Thread-safe: calls on different data may run concurrently.
 */
#ifndef ASVR_MODEL_KMEANS_H
#define ASVR_MODEL_KMEANS_H

#include <stdint.h>

#include "base/error.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* on_iter: once per assignment step. iter counts from 1; mse is the objective of this assignment
 * against the current centroids (non-increasing from one call to the next, up to float rounding);
 * changed is how many rows moved to another cluster (all rows at iter 1).
 * on_seeded: once per centroid placed by k-means++ (k = centroids placed so far; progress only).
 * on_depth: kmeans_residual_fit only, after depth d's residual update, with the residual's mean
 * square before and after it. Any may be NULL. */
struct kmeans_stats;
typedef struct kmeans_callbacks {
    void (*on_iter)(void *ctx, int depth, int iter, double mse, int64_t changed);
    void (*on_seeded)(void *ctx, int depth, int k);
    void (*on_depth)(void *ctx, int depth, double mse_before, double mse_after, const struct kmeans_stats *st);
    void *ctx;
} kmeans_callbacks;

typedef struct kmeans_opts {
    int k;             /* clusters, 1..65536 and <= rows */
    int max_iters;     /* Lloyd updates, >= 0 (0: k-means++ centroids only) */
    uint64_t seed;
    int threads;       /* worker threads for the distance steps (<= 1: the calling thread only);
                        * rows go in fixed blocks, so the result does not depend on it */
    int64_t block_rows; /* rows per distance block (0: about 32 MiB of distances per block) */
    kmeans_callbacks cb;
} kmeans_opts;

typedef struct kmeans_stats {
    int iters;          /* Lloyd updates made */
    int converged;      /* the last assignment equalled the one before */
    int64_t reseeded;   /* empty clusters re-seeded, over all iterations */
    double seed_mse;    /* objective of the k-means++ centroids */
    double final_mse;   /* objective of the last assignment step */
} kmeans_stats;

/* A seeded uniform sample of k distinct indices out of 0..n-1 (k <= n), in increasing order
 * (for picking training images; the same seed gives the same sample). */
void kmeans_sample_indices(uint64_t seed, int64_t n, int64_t k, int64_t *out);

/* Bytes of scratch kmeans_fit / kmeans_residual_fit allocate (at most) for x [M, C], k clusters and
 * the given threads with the default block size (to budget memory before loading features; the
 * matrix itself is not included). */
uint64_t kmeans_scratch_bytes(int64_t rows, int64_t cols, int k, int threads);

/* Fits centroids [k, C] (f32, CPU, caller memory) to x [M, C] (f32, CPU, not modified).
 * assign (optional, M entries) receives the last assignment. -1 with err for k out of range or
 * k > M; shape mismatches are programming errors (exit). depth is passed to the callbacks only. */
int kmeans_fit(const tensor *x, tensor *centroids, int32_t *assign, int depth, const kmeans_opts *o,
               kmeans_stats *st, asvr_error *err);

/* Residual k-means: books[d] ([k, C] each, caller memory) fitted in order d = 0..D-1, each with seed
 * o->seed + d. x [M, C] is the residual, updated in place (it ends as the residual after depth D-1).
 * mse[D+1] (optional): mse[0] the input's mean square, mse[d+1] the residual's after depth d.
 * st[D] (optional) per-depth statistics. */
int kmeans_residual_fit(tensor *x, int D, tensor *const *books, const kmeans_opts *o, double *mse,
                        kmeans_stats *st, asvr_error *err);

#ifdef __cplusplus
}
#endif
#endif
