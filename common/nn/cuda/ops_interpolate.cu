// ops_interpolate.cu — the CUDA interpolate family: bilinear and bicubic resizes and area (adaptive average)
// pooling of [N, C, H, W] or channels-last [N, H, W, C] grids, as nn/ops.h specifies them (the CPU's
// formulas: fp32 source positions, horizontal taps combined first). One thread per output value, in y's
// memory order; f32 or bf16 storage per tensor, fp32 math. Arguments were validated by ops.c.
#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

struct grid_dims {
    int64_t N, C, H, W, OH, OW;
    int64_t xs_c, xs_h, xs_w; // element strides of the input (channel, row, column)
    int channels_last;
};

static __device__ __forceinline__ int64_t clamp_idx(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }
static __device__ __forceinline__ float cubic_near(float x, float a) { return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f; }
static __device__ __forceinline__ float cubic_far(float x, float a) {
    return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
}

// The taps and weights of output index o on an axis of `in` inputs and `out` outputs (bicubic: 4, bilinear: 2).
static __device__ __forceinline__ int axis_taps(int mode, int64_t in, int64_t out, int64_t o, int64_t *ix, float *w) {
    const float scale = (float)in / (float)out;
    float src = scale * ((float)o + 0.5f) - 0.5f;
    if (mode == NN_RESIZE_BILINEAR) {
        if (src < 0.0f) src = 0.0f;
        int64_t i0 = (int64_t)floorf(src);
        if (i0 > in - 1) i0 = in - 1;
        float l = src - (float)i0;
        l = l < 0.0f ? 0.0f : l > 1.0f ? 1.0f : l;
        ix[0] = i0, ix[1] = i0 < in - 1 ? i0 + 1 : i0;
        w[0] = 1.0f - l, w[1] = l;
        return 2;
    }
    const float a = -0.75f;
    float f = floorf(src), t = src - f, u = 1.0f - t;
    int64_t i0 = (int64_t)f;
    for (int j = 0; j < 4; j++) ix[j] = clamp_idx(i0 - 1 + j, in);
    w[0] = cubic_far(t + 1.0f, a);
    w[1] = cubic_near(t, a);
    w[2] = cubic_near(u, a);
    w[3] = cubic_far(u + 1.0f, a);
    return 4;
}

__global__ void k_interpolate(void *y, int ybf, const void *x, int xbf, grid_dims g, int mode) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= g.N * g.C * g.OH * g.OW) return;
    int64_t n, c, oh, ow;
    if (g.channels_last) {
        c = i % g.C;
        ow = (i / g.C) % g.OW;
        oh = (i / (g.C * g.OW)) % g.OH;
        n = i / (g.C * g.OW * g.OH);
    } else {
        ow = i % g.OW;
        oh = (i / g.OW) % g.OH;
        c = (i / (g.OW * g.OH)) % g.C;
        n = i / (g.OW * g.OH * g.C);
    }
    int64_t base = n * g.C * g.H * g.W + c * g.xs_c;
    float out;
    if (mode == NN_RESIZE_AREA) {
        int64_t h0 = oh * g.H / g.OH, h1 = ((oh + 1) * g.H + g.OH - 1) / g.OH;
        int64_t w0 = ow * g.W / g.OW, w1 = ((ow + 1) * g.W + g.OW - 1) / g.OW;
        float sum = 0.0f;
        for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) sum += ldv(x, xbf, base + h * g.xs_h + w * g.xs_w);
        out = sum / (float)(h1 - h0) / (float)(w1 - w0);
    } else {
        int64_t ih[4], iw[4];
        float wh[4], ww[4];
        int T = axis_taps(mode, g.H, g.OH, oh, ih, wh);
        axis_taps(mode, g.W, g.OW, ow, iw, ww);
        out = 0.0f;
        for (int a = 0; a < T; a++) {
            int64_t row = base + ih[a] * g.xs_h;
            float r = ldv(x, xbf, row + iw[0] * g.xs_w) * ww[0];
            for (int b = 1; b < T; b++) r += ldv(x, xbf, row + iw[b] * g.xs_w) * ww[b];
            out = a == 0 ? r * wh[0] : out + r * wh[a];
        }
    }
    stv(y, ybf, i, out);
}

extern "C" void cuda_interpolate(tensor *y, const tensor *x, nn_resize mode, int channels_last) {
    grid_dims g;
    g.N = x->shape[0];
    g.channels_last = channels_last;
    if (channels_last) {
        g.C = x->shape[3], g.H = x->shape[1], g.W = x->shape[2], g.OH = y->shape[1], g.OW = y->shape[2];
        g.xs_c = 1, g.xs_h = g.W * g.C, g.xs_w = g.C;
    } else {
        g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3], g.OH = y->shape[2], g.OW = y->shape[3];
        g.xs_c = g.H * g.W, g.xs_h = g.W, g.xs_w = 1;
    }
    int64_t n = g.N * g.C * g.OH * g.OW;
    k_interpolate<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), g, (int)mode);
    LAUNCH_CHECK();
}
