/* ops_conv.c — the CPU conv family (fp32): the ViT patch embedding and the same-padding conv2d as
 * im2col + GEMM (cpu_gemm_xwt), and SiLU. Arguments were validated by ops.c. */
#include <string.h>

#include "nn/cpu/cpu_common.h"

void cpu_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                     tensor *cols) {
    int64_t B = img->shape[0], Cin = img->shape[1], H = img->shape[2], W = img->shape[3];
    int64_t Hp = H / patch, Wp = W / patch, NP = Hp * Wp, P = patch, KK = Cin * P * P;
    const float *pi = F(img);
    float *pc = F(cols);
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t py = 0; py < Hp; py++)
            for (int64_t px = 0; px < Wp; px++) {
                float *row = pc + ((bi * NP) + py * Wp + px) * KK;
                for (int64_t c = 0; c < Cin; c++)
                    for (int64_t ky = 0; ky < P; ky++)
                        memcpy(row + (c * P + ky) * P,
                               pi + ((bi * Cin + c) * H + py * P + ky) * W + px * P,
                               (size_t)P * sizeof(float));
            }
    /* w [C, Cin, p, p] is the matrix [C, Cin*p*p] in memory. */
    cpu_gemm_xwt(F(y), pc, F(w), F(b), B * NP, w->shape[0], KK);
}

void cpu_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                     tensor *cols) {
    int64_t B = x->shape[0], Cin = x->shape[2], Cout = w->shape[0], k = w->shape[2], r = k / 2;
    int64_t P = (int64_t)H * W, KK = Cin * k * k;
    float *pc = F(cols);
    for (int64_t bi = 0; bi < B; bi++) {
        const float *xb = F(x) + bi * P * Cin;
        /* cols[p, c*k*k + i*k + j] = x[(h+i-r)*W + (w+j-r), c], 0 outside: the row order of w's
         * [Cout, Cin*k*k] flattening. */
        for (int64_t h = 0; h < H; h++)
            for (int64_t ww = 0; ww < W; ww++) {
                float *row = pc + (h * W + ww) * KK;
                for (int64_t i = 0; i < k; i++) {
                    int64_t hh = h + i - r;
                    for (int64_t j = 0; j < k; j++) {
                        int64_t wx = ww + j - r;
                        float *dst = row + i * k + j;
                        if (hh < 0 || hh >= H || wx < 0 || wx >= W) {
                            for (int64_t c = 0; c < Cin; c++) dst[c * k * k] = 0.0f;
                        } else {
                            const float *src = xb + (hh * W + wx) * Cin;
                            for (int64_t c = 0; c < Cin; c++) dst[c * k * k] = src[c];
                        }
                    }
                }
            }
        cpu_gemm_xwt(F(y) + bi * P * Cout, pc, F(w), F(b), P, Cout, KK);
    }
}

void cpu_silu(tensor *y, const tensor *x) {
    const float *px = F(x);
    float *py = F(y);
    int64_t n = tensor_numel(x);
    for (int64_t i = 0; i < n; i++) py[i] = px[i] / (1.0f + expf(-px[i]));
}
