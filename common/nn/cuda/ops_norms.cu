// ops_norms.cu — the CUDA norm family: LayerNorm, RMSNorm and its backward, the residual add + RMSNorm
// (one pass), GroupNorm. f32 or bf16 storage per tensor, fp32 math (GroupNorm statistics in double),
// one block per row (per group and image for GroupNorm). RMSNorm's dw is summed over a fixed number of
// per-block partial rows in order (deterministic). Arguments were validated by ops.c.
#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- norms (one block per row) -----------------------------------------------------------------
__global__ void k_layernorm(void *y, int ybf, const void *x, int xbf, const void *w, int wbf, const void *b,
                            int bbf, float eps, float *mean, float *rstd, int64_t C) {
    int64_t r = blockIdx.x;
    const int64_t off = r * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) s += ldv(x, xbf, off + j);
    float mu = block_sum(s) / (float)C;
    float v = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float d = ldv(x, xbf, off + j) - mu;
        v += d * d;
    }
    float rs = rsqrtf(block_sum(v) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += NT)
        stv(y, ybf, off + j, (ldv(x, xbf, off + j) - mu) * rs * ldv(w, wbf, j) + ldv(b, bbf, j));
    if (threadIdx.x == 0) {
        if (mean) mean[r] = mu;
        if (rstd) rstd[r] = rs;
    }
}

__global__ void k_rmsnorm(void *y, int ybf, const void *x, int xbf, const void *w, int wbf, float eps, float *rstd,
                          int64_t C) {
    int64_t r = blockIdx.x;
    const int64_t off = r * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        float t = ldv(x, xbf, off + j);
        s += t * t;
    }
    float rs = rsqrtf(block_sum(s) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += NT) stv(y, ybf, off + j, ldv(x, xbf, off + j) * rs * ldv(w, wbf, j));
    if (threadIdx.x == 0 && rstd) rstd[r] = rs;
}

// Residual add + RMSNorm, one block per row: r = a + b is stored and read back as stored (bf16
// rounding as op_add then op_rmsnorm), its squares summed in k_rmsnorm's order; then y. Every element
// is read and written by one thread only, so r and y may alias a or b.
__global__ void k_add_rmsnorm(void *r, int rbf, void *y, int ybf, const void *a, int abf, const void *b, int bbf,
                              const void *w, int wbf, float eps, float *rstd, int64_t C) {
    int64_t row = blockIdx.x;
    const int64_t off = row * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += NT) {
        stv(r, rbf, off + j, ldv(a, abf, off + j) + ldv(b, bbf, off + j));
        float t = ldv(r, rbf, off + j);
        s += t * t;
    }
    float rs = rsqrtf(block_sum(s) / (float)C + eps);
    for (int64_t j = threadIdx.x; j < C; j += NT) stv(y, ybf, off + j, ldv(r, rbf, off + j) * rs * ldv(w, wbf, j));
    if (threadIdx.x == 0 && rstd) rstd[row] = rs;
}

extern "C" void cuda_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                               tensor *mean, tensor *rstd) {
    int64_t R = tensor_rows(x), C = tensor_cols(x);
    k_layernorm<<<(unsigned)R, NT>>>(y->data, isbf(y), x->data, isbf(x), w->data, isbf(w), b->data, isbf(b), eps,
                                     mean ? (float *)mean->data : NULL, rstd ? (float *)rstd->data : NULL, C);
    LAUNCH_CHECK();
}

extern "C" void cuda_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd) {
    int64_t R = tensor_rows(x), C = tensor_cols(x);
    k_rmsnorm<<<(unsigned)R, NT>>>(y->data, isbf(y), x->data, isbf(x), w->data, isbf(w), eps,
                                   rstd ? (float *)rstd->data : NULL, C);
    LAUNCH_CHECK();
}

extern "C" void cuda_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                                 tensor *rstd) {
    int64_t R = tensor_rows(a), C = tensor_cols(a);
    k_add_rmsnorm<<<(unsigned)R, NT>>>(r->data, isbf(r), y->data, isbf(y), a->data, isbf(a), b->data, isbf(b),
                                       w->data, isbf(w), eps, rstd ? (float *)rstd->data : NULL, C);
    LAUNCH_CHECK();
}

// ---- rmsnorm backward ---------------------------------------------------------------------------

#define RMS_PARTS 512 // blocks of the row kernel = partial dw rows; fixed, so the sum order is too

// Rows r = blockIdx.x, + gridDim.x, ...; part (gridDim.x x C, or NULL) gets this block's dw partial.
__global__ void kt_rmsnorm_backward(void *dx, int dxbf, float *part, const void *dy, int dybf, const void *x,
                                    int xbf, const void *w, int wbf, const float *rstd, int64_t R, int64_t C,
                                    int accumulate) {
    float *mine = part ? part + (int64_t)blockIdx.x * C : NULL;
    for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
        const int64_t off = r * C;
        const float rs = rstd[r];
        float d = 0.0f;
        for (int64_t j = threadIdx.x; j < C; j += NT) d += ldv(dy, dybf, off + j) * ldv(w, wbf, j) * ldv(x, xbf, off + j);
        const float c = block_sum(d) / (float)C * rs * rs; // every read of the row's dy is done
        for (int64_t j = threadIdx.x; j < C; j += NT) {
            float gj = ldv(dy, dybf, off + j), xj = ldv(x, xbf, off + j); // before dx (may alias dy)
            if (mine) {
                float v = gj * xj * rs;
                mine[j] = r == blockIdx.x ? v : mine[j] + v;
            }
            float o = rs * (gj * ldv(w, wbf, j) - xj * c);
            stv(dx, dxbf, off + j, accumulate ? ldv(dx, dxbf, off + j) + o : o);
        }
    }
}

// dw[j] += sum over the G partial rows, in order.
__global__ void kt_sum_parts(void *dw, int wbf, const float *part, int G, int64_t C) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float s = 0.0f;
    for (int g = 0; g < G; g++) s += part[(int64_t)g * C + j];
    stv(dw, wbf, j, ldv(dw, wbf, j) + s);
}

extern "C" void cuda_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                                      const tensor *rstd, int accumulate_dx) {
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    int G = R < RMS_PARTS ? (int)R : RMS_PARTS;
    float *part = dw ? (float *)nn_cuda_workspace((size_t)G * (size_t)C * sizeof(float)) : NULL;
    kt_rmsnorm_backward<<<(unsigned)G, NT>>>(dx->data, isbf(dx), part, dy->data, isbf(dy), x->data, isbf(x), w->data,
                                             isbf(w), (const float *)rstd->data, R, C, accumulate_dx);
    LAUNCH_CHECK();
    if (dw) {
        kt_sum_parts<<<blocks(C), NT>>>(dw->data, isbf(dw), part, G, C);
        LAUNCH_CHECK();
    }
}

// ---- GroupNorm: one block per (group, image) ----------------------------------------------------
__global__ void k_groupnorm(void *y, int ybf, const void *x, int xbf, const void *w, int wbf, const void *b,
                            int bbf, int64_t P, int64_t C, int64_t cg, float eps) {
    int64_t g = blockIdx.x, bi = blockIdx.y;
    int64_t n = P * cg, base = bi * P * C + g * cg;
    double s = 0.0;
    for (int64_t e = threadIdx.x; e < n; e += NT) s += (double)ldv(x, xbf, base + (e / cg) * C + e % cg);
    double mean = block_sum_d(s) / (double)n;
    double v = 0.0;
    for (int64_t e = threadIdx.x; e < n; e += NT) {
        double d = (double)ldv(x, xbf, base + (e / cg) * C + e % cg) - mean;
        v += d * d;
    }
    double var = block_sum_d(v) / (double)n;
    float m = (float)mean, r = (float)(1.0 / sqrt(var + (double)eps));
    for (int64_t e = threadIdx.x; e < n; e += NT) {
        int64_t c = g * cg + e % cg, i = base + (e / cg) * C + e % cg;
        stv(y, ybf, i, (ldv(x, xbf, i) - m) * r * ldv(w, wbf, c) + ldv(b, bbf, c));
    }
}

extern "C" void cuda_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups,
                               float eps) {
    int64_t B = x->shape[0], P = x->shape[1], C = x->shape[2];
    dim3 grid((unsigned)groups, (unsigned)B);
    k_groupnorm<<<grid, NT>>>(y->data, isbf(y), x->data, isbf(x), w->data, isbf(w), b->data, isbf(b), P, C,
                               C / groups, eps);
    LAUNCH_CHECK();
}
