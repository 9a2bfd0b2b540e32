/* ops_interpolate.c — the CPU interpolate family (fp32): bilinear and bicubic resizes and area (adaptive
 * average) pooling of [N, C, H, W] or channels-last [N, H, W, C] grids, as nn/ops.h specifies them.
 * Each axis gets its taps and weights once (fp32 positions, as PyTorch computes them); the values are then
 * combined horizontally first, then vertically. No state: callers may run it from several threads.
 * Arguments were validated by ops.c. */
#include <stdlib.h>

#include "base/error.h"
#include "nn/cpu/cpu_common.h"

/* One axis of a resize: for each output index, `taps` input indices and weights. */
typedef struct interp_axis {
    int taps;
    int64_t *idx;
    float *w;
} interp_axis;

static int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

static float cubic_near(float x, float a) { return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f; } /* |x| <= 1 */
static float cubic_far(float x, float a) { return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a; } /* 1 < |x| < 2 */

static void axis_make(interp_axis *ax, nn_resize mode, int64_t in, int64_t out) {
    ax->taps = mode == NN_RESIZE_BICUBIC ? 4 : 2;
    ax->idx = asvr_malloc(sizeof(int64_t) * (size_t)(out * ax->taps), "interpolation taps");
    ax->w = asvr_malloc(sizeof(float) * (size_t)(out * ax->taps), "interpolation weights");
    const float scale = (float)in / (float)out;
    for (int64_t o = 0; o < out; o++) {
        float src = scale * ((float)o + 0.5f) - 0.5f;
        int64_t *ix = ax->idx + o * ax->taps;
        float *w = ax->w + o * ax->taps;
        if (mode == NN_RESIZE_BILINEAR) {
            if (src < 0.0f) src = 0.0f;
            int64_t i0 = (int64_t)floorf(src);
            if (i0 > in - 1) i0 = in - 1;
            float l = src - (float)i0;
            l = l < 0.0f ? 0.0f : l > 1.0f ? 1.0f : l;
            ix[0] = i0, ix[1] = i0 < in - 1 ? i0 + 1 : i0;
            w[0] = 1.0f - l, w[1] = l;
        } else {
            const float a = -0.75f;
            float f = floorf(src), t = src - f;
            int64_t i0 = (int64_t)f;
            for (int j = 0; j < 4; j++) ix[j] = clamp_index(i0 - 1 + j, in);
            float u = 1.0f - t; /* the far right tap at u + 1, as torch forms it */
            w[0] = cubic_far(t + 1.0f, a);
            w[1] = cubic_near(t, a);
            w[2] = cubic_near(u, a);
            w[3] = cubic_far(u + 1.0f, a);
        }
    }
}

static void axis_free(interp_axis *ax) {
    free(ax->idx);
    free(ax->w);
}

void cpu_interpolate(tensor *y, const tensor *x, nn_resize mode, int channels_last) {
    int64_t N = x->shape[0], C, H, W, OH, OW;
    if (channels_last) C = x->shape[3], H = x->shape[1], W = x->shape[2], OH = y->shape[1], OW = y->shape[2];
    else C = x->shape[1], H = x->shape[2], W = x->shape[3], OH = y->shape[2], OW = y->shape[3];
    /* element strides of (image, channel, row, column), input and output */
    int64_t xs_c = channels_last ? 1 : H * W, xs_h = channels_last ? W * C : W, xs_w = channels_last ? C : 1;
    int64_t ys_c = channels_last ? 1 : OH * OW, ys_h = channels_last ? OW * C : OW, ys_w = channels_last ? C : 1;
    const float *px = F(x);
    float *py = F(y);
    if (mode == NN_RESIZE_AREA) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t oh = 0; oh < OH; oh++) {
                int64_t h0 = oh * H / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
                for (int64_t ow = 0; ow < OW; ow++) {
                    int64_t w0 = ow * W / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
                    for (int64_t c = 0; c < C; c++) {
                        const float *xb = px + n * C * H * W + c * xs_c;
                        float sum = 0.0f;
                        for (int64_t h = h0; h < h1; h++)
                            for (int64_t w = w0; w < w1; w++) sum += xb[h * xs_h + w * xs_w];
                        py[n * C * OH * OW + c * ys_c + oh * ys_h + ow * ys_w] = sum / (float)(h1 - h0) / (float)(w1 - w0);
                    }
                }
            }
        return;
    }
    interp_axis ah, aw;
    axis_make(&ah, mode, H, OH);
    axis_make(&aw, mode, W, OW);
    int T = ah.taps;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float *xb = px + n * C * H * W + c * xs_c;
            float *yb = py + n * C * OH * OW + c * ys_c;
            for (int64_t oh = 0; oh < OH; oh++) {
                const int64_t *ih = ah.idx + oh * T;
                const float *wh = ah.w + oh * T;
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t *iw = aw.idx + ow * T;
                    const float *ww = aw.w + ow * T;
                    float out = 0.0f;
                    for (int i = 0; i < T; i++) {
                        const float *row = xb + ih[i] * xs_h;
                        float r = row[iw[0] * xs_w] * ww[0];
                        for (int j = 1; j < T; j++) r += row[iw[j] * xs_w] * ww[j];
                        out = i == 0 ? r * wh[0] : out + r * wh[i];
                    }
                    yb[oh * ys_h + ow * ys_w] = out;
                }
            }
        }
    axis_free(&ah);
    axis_free(&aw);
}
