// ops_losses.cu — the CUDA loss family: fused softmax cross-entropy (loss in double, gradient written
// over the logits row, summed over rows in a fixed order) and the argmax of rows. f32 or bf16 storage.
// A target outside the vocabulary is recorded in the device error record (reported by the front end).
// Arguments were validated by ops.c.
#include <math.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- cross-entropy ------------------------------------------------------------------------------
// One block per row: an online max / sum of exp over the row (one pass), then the loss of the row
// (double, into rl[r]; rc[r] = 1 when counted) and, when dl, the gradient written over the row (the
// logits of the row are all read before any thread writes: dl may alias the logits).
__global__ void kt_cross_entropy(void *dl, int dbf, double *rl, double *rc, const void *lg, int lbf,
                                 const int32_t *tg, int64_t V, float scale, nn_dev_err *err) {
    int64_t r = blockIdx.x, off = r * V;
    int32_t t = tg[r];
    int ignored = t == NN_IGNORE_INDEX, bad = !ignored && (t < 0 || t >= V);
    if (ignored || bad) {
        if (bad && threadIdx.x == 0) nn_report_err(err, NN_ERR_TARGET, r, t, V);
        if (dl)
            for (int64_t j = threadIdx.x; j < V; j += NT) stv(dl, dbf, off + j, 0.0f);
        if (threadIdx.x == 0) rl[r] = 0.0, rc[r] = 0.0;
        return;
    }
    float xt = ldv(lg, lbf, off + t); // every thread, before the first barrier
    float m = -FLT_MAX, s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += NT) {
        float x = ldv(lg, lbf, off + j);
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float M = block_max(m);
    float S = block_sum(s * expf(m - M));
    if (threadIdx.x == 0) {
        rl[r] = (double)M + log((double)S) - (double)xt;
        rc[r] = 1.0;
    }
    if (!dl) return;
    float c = (float)((double)scale / (double)S);
    for (int64_t j = threadIdx.x; j < V; j += NT) {
        float d = c * expf(ldv(lg, lbf, off + j) - M);
        if (j == t) d -= scale;
        stv(dl, dbf, off + j, d);
    }
}

extern "C" void cuda_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                                   const tensor *targets, float scale) {
    int64_t M = tensor_rows(logits), V = tensor_cols(logits);
    double *ws = (double *)nn_cuda_workspace((size_t)(2 * M + 2) * sizeof(double));
    double *rl = ws, *rc = ws + M, *res = ws + 2 * M;
    kt_cross_entropy<<<(unsigned)M, NT>>>(dlogits ? dlogits->data : NULL, isbf(dlogits), rl, rc, logits->data,
                                          isbf(logits), (const int32_t *)targets->data, V, scale,
                                          nn_cuda_err_record());
    LAUNCH_CHECK();
    nn_cuda_sum_d(res, rl, M);
    nn_cuda_sum_d(res + 1, rc, M);
    double h[2];
    CHECK_CUDA(cudaMemcpy(h, res, sizeof h, cudaMemcpyDeviceToHost));
    *loss_sum = h[0];
    *count = (int64_t)h[1];
}

// ---- argmax of rows: one block per row; NaN never chosen, the lowest index wins a tie -----------
__device__ __forceinline__ int better(float a, int64_t ia, float b, int64_t ib) {
    // is (a, ia) a better candidate than (b, ib)? ib < 0 means "none yet"
    if (ia < 0) return 0;
    if (ib < 0) return 1;
    return a > b || (a == b && ia < ib);
}

__global__ void k_argmax(int32_t *idx, const void *x, int xbf, int64_t N) {
    __shared__ float sv[NT];
    __shared__ int64_t si[NT];
    int64_t row = (int64_t)blockIdx.x * N;
    float bv = 0.0f;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
        float r = ldv(x, xbf, row + i);
        if (r == r && better(r, i, bv, bi)) bv = r, bi = i;
    }
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s && better(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x])) {
            sv[threadIdx.x] = sv[threadIdx.x + s];
            si[threadIdx.x] = si[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) idx[blockIdx.x] = si[0] < 0 ? 0 : (int32_t)si[0];
}

extern "C" void cuda_argmax_rows(tensor *idx, const tensor *x) {
    int64_t M = tensor_rows(x), N = tensor_cols(x);
    k_argmax<<<(unsigned)M, NT>>>((int32_t *)idx->data, x->data, isbf(x), N);
    LAUNCH_CHECK();
}
