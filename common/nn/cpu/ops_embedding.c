/* ops_embedding.c — the CPU row gathers behind the embedding ops and op_gather_rows / op_scatter_add_rows
 * (fp32): y[n] = x[idx[n]] and y[idx[n]] += x[n] in row order, optionally skipping negative indices.
 * Arguments (and, on the host, the indices) were validated by ops.c. */
#include <string.h>

#include "nn/cpu/cpu_common.h"

void cpu_gather_rows(tensor *y, const tensor *x, const tensor *idx, int skip_negative) {
    int64_t N = tensor_numel(idx), C = tensor_cols(x);
    const int32_t *id = (const int32_t *)idx->data;
    for (int64_t n = 0; n < N; n++)
        if (!skip_negative || id[n] >= 0) memcpy(F(y) + n * C, F(x) + (int64_t)id[n] * C, (size_t)C * sizeof(float));
}

void cpu_scatter_add_rows(tensor *y, const tensor *x, const tensor *idx, int skip_negative) {
    int64_t N = tensor_numel(idx), C = tensor_cols(y);
    const int32_t *id = (const int32_t *)idx->data;
    for (int64_t n = 0; n < N; n++) {
        if (skip_negative && id[n] < 0) continue;
        float *dst = F(y) + (int64_t)id[n] * C;
        const float *src = F(x) + n * C;
        for (int64_t j = 0; j < C; j++) dst[j] += src[j];
    }
}
