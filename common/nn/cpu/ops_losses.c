/* ops_losses.c — the CPU loss family (fp32, sums in double): softmax cross-entropy with its gradient,
 * and the argmax of rows. Arguments were validated by ops.c. */
#include <float.h>
#include <string.h>

#include "nn/cpu/cpu_common.h"

void cpu_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                       const tensor *targets, float scale) {
    int64_t M = tensor_rows(logits), V = tensor_cols(logits);
    const int32_t *tg = (const int32_t *)targets->data;
    double total = 0.0;
    int64_t n = 0;
    for (int64_t r = 0; r < M; r++) {
        const float *x = F(logits) + r * V;
        float *d = dlogits ? F(dlogits) + r * V : NULL;
        int32_t t = tg[r];
        if (t == NN_IGNORE_INDEX) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -FLT_MAX;
        for (int64_t j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < V; j++) sum += expf(x[j] - mx);
        total += (double)mx + log(sum) - (double)x[t];
        n++;
        if (d) { /* x and d may be the same row: each x[j] is read just before d[j] is written */
            float c = (float)((double)scale / sum);
            for (int64_t j = 0; j < V; j++) d[j] = c * expf(x[j] - mx);
            d[t] -= scale;
        }
    }
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
