// ops_embedding.cu — the CUDA row gathers behind the embedding ops and op_gather_rows /
// op_scatter_add_rows: y[n] = x[idx[n]] (one thread per element) and the deterministic, sort-free,
// atomic-free scatter-add y[idx[n]] += x[n] (bit-identical run to run; a float atomicAdd would add
// repeated indices in whatever order the blocks run). f32 or bf16 storage per tensor. An index outside
// the table is recorded in the device error record (reported by the front end right after); with
// skip_negative a negative index leaves its row alone. Arguments were validated by ops.c.
#include <limits.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- gather: one thread per element -------------------------------------------------------------
// y[n, c] = x[idx[n], c]. An index outside [0, V): recorded and the row zeroed, or with skip (and for a
// negative index) the row left as it is, nothing recorded.
__global__ void kt_gather_rows(void *y, int ybf, const int32_t *idx, const void *x, int xbf, int64_t N, int64_t C,
                               int64_t V, int skip, nn_dev_err *err) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    int64_t n = i / C, c = i % C;
    int32_t id = idx[n];
    if (id < 0 || id >= V) {
        if (skip) return;
        if (c == 0) nn_report_err(err, NN_ERR_ID, n, id, V);
        stv(y, ybf, i, 0.0f);
        return;
    }
    stv(y, ybf, i, ldv(x, xbf, (int64_t)id * C + c));
}

extern "C" void cuda_gather_rows(tensor *y, const tensor *x, const tensor *idx, int skip_negative) {
    int64_t N = tensor_numel(idx), C = tensor_cols(x), V = tensor_rows(x);
    if (N * C == 0) return;
    kt_gather_rows<<<blocks(N * C), NT>>>(y->data, isbf(y), (const int32_t *)idx->data, x->data, isbf(x), N, C, V,
                                          skip_negative, nn_cuda_err_record());
    LAUNCH_CHECK();
}

// ---- scatter-add --------------------------------------------------------------------------------
// The scatter-add is deterministic and sort-free: for each row n, lead[n] = 1 when no earlier row has
// its index and next[n] = the next row with the same index (-1: none); then the block of each leading
// row sums x over its chain in row order and adds the sum to the row of y once.
// skip: negative indices are no error and lead nothing (op_embedding_skip_backward).
__global__ void kt_scatter_chain(int32_t *next, int32_t *lead, const int32_t *idx, int64_t N, int64_t V, int skip,
                                 nn_dev_err *err) {
    __shared__ int nx;
    int64_t n = blockIdx.x;
    int32_t id = idx[n];
    if (threadIdx.x == 0) nx = INT_MAX;
    __syncthreads();
    int earlier = 0;
    for (int64_t m = threadIdx.x; m < N; m += NT) {
        if (m == n || idx[m] != id) continue;
        if (m < n) earlier = 1;
        else atomicMin(&nx, (int)m); // an integer min: the result does not depend on the order
    }
    int any = __syncthreads_or(earlier);
    if (threadIdx.x == 0) {
        next[n] = nx == INT_MAX ? -1 : nx;
        lead[n] = !any && !(skip && id < 0);
        if ((id < 0 && !skip) || id >= V) nn_report_err(err, NN_ERR_ID, n, id, V);
    }
}

__global__ void kt_scatter_add_rows(void *y, int ybf, const void *x, int xbf, const int32_t *idx, const int32_t *next,
                                    const int32_t *lead, int64_t C, int64_t V) {
    int64_t n = blockIdx.x;
    int32_t id = idx[n];
    if (!lead[n] || id < 0 || id >= V) return;
    for (int64_t c = threadIdx.x; c < C; c += NT) {
        float s = 0.0f;
        for (int64_t m = n; m >= 0; m = next[m]) s += ldv(x, xbf, m * C + c);
        stv(y, ybf, (int64_t)id * C + c, ldv(y, ybf, (int64_t)id * C + c) + s);
    }
}

extern "C" void cuda_scatter_add_rows(tensor *y, const tensor *x, const tensor *idx, int skip_negative) {
    int64_t N = tensor_numel(idx), C = tensor_cols(y), V = tensor_rows(y);
    if (N == 0 || C == 0) return;
    CHECK(N < INT_MAX, "", "cuda scatter-add: %lld indices", (long long)N);
    int32_t *next = (int32_t *)nn_cuda_workspace((size_t)N * 2 * sizeof(int32_t)), *lead = next + N;
    const int32_t *pid = (const int32_t *)idx->data;
    kt_scatter_chain<<<(unsigned)N, NT>>>(next, lead, pid, N, V, skip_negative, nn_cuda_err_record());
    LAUNCH_CHECK();
    kt_scatter_add_rows<<<(unsigned)N, NT>>>(y->data, isbf(y), x->data, isbf(x), pid, next, lead, C, V);
    LAUNCH_CHECK();
}
