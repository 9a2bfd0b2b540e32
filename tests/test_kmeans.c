/* test_kmeans.c — the k-means core on in-memory matrices: planted well-separated clusters are
 * recovered (assignment purity 100%, centroids at the planted means), the objective never increases
 * across Lloyd iterations, residual MSE strictly decreases across depths, results depend only on
 * the seed, empty clusters are re-seeded, and bad requests are refused. */
#include <stdint.h>

#include "model/kmeans.h"
#include "nn/ops.h"
#include "test.h"

static uint64_t rs = 12345;
static double urand(void) { /* [0, 1) */
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rs >> 11) * (1.0 / 9007199254740992.0);
}

typedef struct iter_log {
    double mse[256];
    int n[16];
    int bad_order;
    int depth_calls;
    double before[16], after[16];
} iter_log;

static void on_iter(void *ctx, int depth, int iter, double mse, int64_t changed) {
    iter_log *l = ctx;
    if (depth < 16 && iter <= 256 && l->n[depth] == iter - 1) {
        if (depth == 0) l->mse[iter - 1] = mse;
        l->n[depth] = iter;
    } else {
        l->bad_order++;
    }
    (void)changed;
}

static void on_depth(void *ctx, int depth, double before, double after, const kmeans_stats *st) {
    iter_log *l = ctx;
    if (depth < 16) l->before[depth] = before, l->after[depth] = after;
    l->depth_calls++;
    (void)st;
}

/* Planted clusters: K centres in C dims, spread over [-10, 10], each with P points at noise 0.05;
 * rows interleaved so cluster membership is not contiguous. */
static void planted(int K, int C, int P, float *x, float *centres, int *label) {
    for (int k = 0; k < K; k++)
        for (int c = 0; c < C; c++) centres[k * C + c] = (float)(urand() * 20 - 10);
    for (int i = 0; i < K * P; i++) {
        int k = (i * 7 + i / K) % K;
        label[i] = k;
        for (int c = 0; c < C; c++) x[(size_t)i * C + c] = centres[k * C + c] + (float)(urand() - 0.5) * 0.1f;
    }
}

static void test_planted(uint64_t seed) {
    enum { K = 8, C = 16, P = 40, M = K * P };
    static float x[M * C], centres[K * C], got[K * C];
    static int label[M];
    static int32_t a[M];
    planted(K, C, P, x, centres, label);
    tensor tx = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, x);
    tensor tc = tensor_make("centroids", NN_F32, NN_CPU, 2, (int64_t[]){K, C}, got);
    iter_log log = {0};
    kmeans_opts o = {.k = K, .max_iters = 50, .seed = seed, .cb = {.on_iter = on_iter, .ctx = &log}};
    kmeans_stats st;
    asvr_error err;
    T_EQ_INT(kmeans_fit(&tx, &tc, a, 0, &o, &st, &err), 0);
    /* purity: every found cluster holds one planted cluster, and the map is a bijection */
    int map[K], used[K] = {0}, impure = 0;
    for (int k = 0; k < K; k++) map[k] = -1;
    for (int i = 0; i < M; i++) {
        if (map[a[i]] < 0) map[a[i]] = label[i];
        else if (map[a[i]] != label[i]) impure++;
    }
    for (int k = 0; k < K; k++)
        if (map[k] >= 0) used[map[k]]++;
    int bij = 1;
    for (int k = 0; k < K; k++) bij &= used[k] == 1;
    T_CHECK(impure == 0 && bij, "seed %llu: %d rows in a mixed cluster, bijection %d", (unsigned long long)seed, impure, bij);
    double maxd = 0;
    for (int k = 0; k < K && bij; k++)
        for (int c = 0; c < C; c++) {
            double d = fabs(got[k * C + c] - centres[map[k] * C + c]);
            if (d > maxd) maxd = d;
        }
    /* measured 1.8e-2: the sampling noise of the cluster means, not rounding (the bound stays) */
    T_CHECK(bij && maxd < 0.03, "seed %llu: centroid off the planted centre by %g", (unsigned long long)seed, maxd);
    T_CHECK(st.converged, "seed %llu: did not converge in 50 iterations", (unsigned long long)seed);
    T_CHECK(st.final_mse < 0.01, "final mse %g (noise variance ~0.00083)", st.final_mse); /* measured 8.3e-4 */
    /* measured: never rose (1e-6 allows for rounding of the sums) */
    for (int i = 1; i < log.n[0]; i++)
        T_CHECK(log.mse[i] <= log.mse[i - 1] * (1 + 1e-6), "objective rose at iteration %d: %g -> %g", i + 1, log.mse[i - 1], log.mse[i]);
    T_EQ_INT(log.bad_order, 0);
}

/* Unstructured data: many Lloyd iterations, so monotonicity is exercised; residual fit over depths. */
static void test_random_residual(void) {
    enum { M = 2000, C = 12, K = 16, D = 4 };
    static float x[M * C], x0[M * C], x2[M * C];
    static float books[D][K * C], books2[D][K * C];
    for (int i = 0; i < M * C; i++) x0[i] = (float)(urand() * 2 - 1) * (float)(1 + (i % C));
    memcpy(x, x0, sizeof x);
    tensor tx = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, x);
    tensor tb[D], *pb[D];
    for (int d = 0; d < D; d++) {
        tb[d] = tensor_make("book", NN_F32, NN_CPU, 2, (int64_t[]){K, C}, books[d]);
        pb[d] = &tb[d];
    }
    iter_log log = {0};
    kmeans_opts o = {.k = K, .max_iters = 100, .seed = 7, .cb = {.on_iter = on_iter, .on_depth = on_depth, .ctx = &log}};
    double mse[D + 1];
    kmeans_stats st[D];
    asvr_error err;
    T_EQ_INT(kmeans_residual_fit(&tx, D, pb, &o, mse, st, &err), 0);
    T_EQ_INT(log.depth_calls, D);
    for (int d = 0; d < D; d++) {
        T_CHECK(mse[d + 1] < mse[d], "depth %d: residual mse %g -> %g does not decrease", d, mse[d], mse[d + 1]);
        T_CHECK(log.before[d] == mse[d] && log.after[d] == mse[d + 1], "on_depth reports depth %d", d);
        T_CHECK(st[d].iters >= 1, "depth %d ran %d Lloyd updates", d, st[d].iters);
        /* measured: equal (1e-6 allows for rounding of the sums) */
        T_CHECK(mse[d + 1] <= st[d].final_mse * (1 + 1e-6), "depth %d: nearest-row residual %g above the last assignment's %g", d,
                mse[d + 1], st[d].final_mse);
    }
    T_CHECK(log.n[0] >= 5, "depth 0 ran %d assignment steps (want several to test monotonicity)", log.n[0]);
    /* measured: never rose (the smallest fall 1.0e-5 relative) */
    for (int i = 1; i < log.n[0]; i++)
        T_CHECK(log.mse[i] <= log.mse[i - 1] * (1 + 1e-6), "objective rose at iteration %d: %g -> %g", i + 1, log.mse[i - 1], log.mse[i]);
    /* The residual equals x - sum of the chosen rows: re-encoding x0 greedily gives the same residual. */
    memcpy(x2, x0, sizeof x2);
    tensor t2 = tensor_make("x2", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, x2);
    static int32_t codes[M * D];
    static float dist[M * K], cn[K];
    tensor tcodes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){M, D}, codes);
    tensor tdist = tensor_make("dist", NN_F32, NN_CPU, 2, (int64_t[]){M, K}, dist);
    tensor tcn = tensor_make("cn", NN_F32, NN_CPU, 1, (int64_t[]){K}, cn);
    for (int d = 0; d < D; d++) {
        op_row_sqnorm(&tcn, &tb[d]);
        op_vq_step(&t2, &tb[d], &tcn, &tcodes, d, &tdist);
    }
    T_CHECK(memcmp(x, x2, sizeof x) == 0, "the fitted residual equals greedy re-encoding's");

    /* Same seed: identical books; another seed: different books. */
    memcpy(x, x0, sizeof x);
    for (int d = 0; d < D; d++) tb[d].data = books2[d];
    o.cb = (kmeans_callbacks){0};
    T_EQ_INT(kmeans_residual_fit(&tx, D, pb, &o, NULL, NULL, &err), 0);
    T_CHECK(memcmp(books, books2, sizeof books) == 0, "same seed, same codebooks");
    /* Threads split the rows in fixed blocks: 1 or 3 threads, same codebooks. */
    static float books3[D][K * C];
    memcpy(x, x0, sizeof x);
    o.block_rows = 64;
    o.threads = 1;
    T_EQ_INT(kmeans_residual_fit(&tx, D, pb, &o, NULL, NULL, &err), 0);
    memcpy(books3, books2, sizeof books3);
    memcpy(x, x0, sizeof x);
    o.threads = 3;
    T_EQ_INT(kmeans_residual_fit(&tx, D, pb, &o, NULL, NULL, &err), 0);
    T_CHECK(memcmp(books3, books2, sizeof books3) == 0, "1 and 3 threads give the same codebooks");
    o.threads = 0;
    o.block_rows = 0;
    memcpy(x, x0, sizeof x);
    o.seed = 8;
    T_EQ_INT(kmeans_residual_fit(&tx, D, pb, &o, NULL, NULL, &err), 0);
    T_CHECK(memcmp(books, books2, sizeof books) != 0, "another seed, other codebooks");
}

/* Duplicated rows: k-means++ runs out of distinct rows; the empty clusters are re-seeded or kept,
 * and the objective reaches 0. */
static void test_duplicates(void) {
    enum { M = 30, C = 4, K = 6 };
    float x[M * C], cent[K * C];
    for (int i = 0; i < M; i++)
        for (int c = 0; c < C; c++) x[i * C + c] = (float)((i % 3) * 5 + c);
    tensor tx = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, x);
    tensor tc = tensor_make("c", NN_F32, NN_CPU, 2, (int64_t[]){K, C}, cent);
    kmeans_opts o = {.k = K, .max_iters = 10, .seed = 1};
    kmeans_stats st;
    asvr_error err;
    int32_t a[M];
    T_EQ_INT(kmeans_fit(&tx, &tc, a, 0, &o, &st, &err), 0);
    T_CHECK(st.final_mse == 0, "three distinct rows, six clusters: mse %g", st.final_mse);
    T_CHECK(st.reseeded > 0, "empty clusters were re-seeded (%lld)", (long long)st.reseeded);
}

static void test_errors(void) {
    float x[10 * 3] = {0}, c[11 * 3];
    tensor tx = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){10, 3}, x);
    tensor tc = tensor_make("c", NN_F32, NN_CPU, 2, (int64_t[]){11, 3}, c);
    kmeans_opts o = {.k = 11, .max_iters = 5};
    asvr_error err;
    T_EQ_INT(kmeans_fit(&tx, &tc, NULL, 0, &o, NULL, &err), -1);
    T_STR_CONTAINS(err.msg, "larger than the 10 training vectors");
    o.k = 0;
    T_EQ_INT(kmeans_fit(&tx, &tc, NULL, 0, &o, NULL, &err), -1);
    o.k = 70000;
    T_EQ_INT(kmeans_fit(&tx, &tc, NULL, 0, &o, NULL, &err), -1);
    T_STR_CONTAINS(err.msg, "1..65536");
}

static void test_sample(void) {
    int64_t a[50], b[50], c[50];
    kmeans_sample_indices(3, 1000, 50, a);
    kmeans_sample_indices(3, 1000, 50, b);
    kmeans_sample_indices(4, 1000, 50, c);
    int sorted = 1, in_range = 1;
    for (int i = 0; i < 50; i++) {
        if (i) sorted &= a[i] > a[i - 1];
        in_range &= a[i] >= 0 && a[i] < 1000;
    }
    T_CHECK(sorted && in_range, "sample is increasing, distinct and in range");
    T_CHECK(memcmp(a, b, sizeof a) == 0, "same seed, same sample");
    T_CHECK(memcmp(a, c, sizeof a) != 0, "another seed, another sample");
    kmeans_sample_indices(3, 7, 7, a);
    int all = 1;
    for (int i = 0; i < 7; i++) all &= a[i] == i;
    T_CHECK(all, "a full sample is every index in order");
}

int main(void) {
    for (uint64_t s = 0; s < 6; s++) test_planted(s);
    test_random_residual();
    test_duplicates();
    test_errors();
    test_sample();
    return t_done();
}
