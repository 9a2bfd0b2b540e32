/* ops_losses.c — the CPU loss family (fp32, sums in double): softmax cross-entropy with its gradient (rows
 * over threads),
 * and the argmax of rows. Arguments were validated by ops.c. */
#include <float.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "nn/cpu/cpu_common.h"

/* One row: its loss term (0 when ignored) and, with d, its gradient. Each exp is computed once (kept in
 * d until the scale is known), the same values as computing it twice. x and d may be the same row. */
static int ce_row(const float *x, float *d, int32_t t, int64_t V, float scale, double *term) {
    if (t == NN_IGNORE_INDEX) {
        if (d) memset(d, 0, (size_t)V * sizeof(float));
        *term = 0.0;
        return 0;
    }
    float mx = -FLT_MAX;
    for (int64_t j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    float xt = x[t];
    double sum = 0.0;
    if (d) {
        for (int64_t j = 0; j < V; j++) {
            float e = expf(x[j] - mx);
            d[j] = e;
            sum += e;
        }
        float c = (float)((double)scale / sum);
        for (int64_t j = 0; j < V; j++) d[j] = c * d[j];
        d[t] -= scale;
    } else {
        for (int64_t j = 0; j < V; j++) sum += expf(x[j] - mx);
    }
    *term = (double)mx + log(sum) - (double)xt;
    return 1;
}

typedef struct ce_job {
    const float *logits;
    float *dlogits;
    const int32_t *tg;
    int64_t V, r0, r1;
    float scale;
    double *terms;
    int *counted;
} ce_job;

static void *ce_rows(void *arg) {
    ce_job *j = arg;
    for (int64_t r = j->r0; r < j->r1; r++)
        j->counted[r] = ce_row(j->logits + r * j->V, j->dlogits ? j->dlogits + r * j->V : NULL, j->tg[r], j->V,
                               j->scale, &j->terms[r]);
    return NULL;
}

/* Threads for row-parallel loops: OPENBLAS_NUM_THREADS when set (the GEMMs' count), else the cores. */
static int cpu_threads(void) {
    const char *e = getenv("OPENBLAS_NUM_THREADS");
    long n = e ? strtol(e, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* Rows split over threads, each row's term kept and then summed in row order: the same bits whatever
 * the number of threads. */
void cpu_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                       const tensor *targets, float scale) {
    int64_t M = tensor_rows(logits), V = tensor_cols(logits);
    double *terms = malloc(sizeof(double) * (size_t)(M ? M : 1));
    int *counted = malloc(sizeof(int) * (size_t)(M ? M : 1));
    CHECK(terms && counted, "", "out of memory for the loss terms");
    int T = M * V >= (1 << 20) ? cpu_threads() : 1;
    if (T > M) T = (int)(M ? M : 1);
    ce_job jobs[64];
    pthread_t tid[64];
    int started[64] = {0};
    for (int k = 0; k < T; k++) {
        jobs[k] = (ce_job){F(logits), dlogits ? F(dlogits) : NULL, (const int32_t *)targets->data, V, M * k / T,
                           M * (k + 1) / T, scale, terms, counted};
        if (k > 0) started[k] = pthread_create(&tid[k], NULL, ce_rows, &jobs[k]) == 0;
    }
    ce_rows(&jobs[0]);
    for (int k = 1; k < T; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else ce_rows(&jobs[k]); /* no thread: the rows here */
    }
    double total = 0.0;
    int64_t n = 0;
    for (int64_t r = 0; r < M; r++)
        if (counted[r]) total += terms[r], n++;
    free(terms);
    free(counted);
    *loss_sum = total;
    *count = n;
}

void cpu_argmax_rows(tensor *idx, const tensor *x) {
    int64_t M = tensor_rows(x), N = tensor_cols(x);
    int32_t *out = idx->data;
    for (int64_t m = 0; m < M; m++) {
        const float *row = F(x) + m * N;
        int64_t best = -1;
        for (int64_t i = 0; i < N; i++)
            if (row[i] == row[i] && (best < 0 || row[i] > row[best])) best = i;
        out[m] = best < 0 ? 0 : (int32_t)best;
    }
}
