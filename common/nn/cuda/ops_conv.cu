// ops_conv.cu — the CUDA conv family: the ViT patch embedding (im2col + op_matmul's GEMM with its bias
// epilogue), the same-padding conv2d of the appearance tokenizer's projection block (im2col per image +
// one GEMM + bias), and SiLU. f32 or bf16 storage per tensor, fp32 math. Arguments were validated by
// ops.c.
#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- patch embedding ---------------------------------------------------------------------------
__global__ void k_im2col(void *cols, int cbf, const void *img, int ibf, int64_t B, int64_t Cin, int64_t H,
                         int64_t W, int64_t P) {
    int64_t Wp = W / P, NP = (H / P) * Wp, KK = Cin * P * P;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * NP * KK) return;
    int64_t col = i % KK, row = i / KK;
    int64_t bi = row / NP, pidx = row % NP, py = pidx / Wp, px = pidx % Wp;
    int64_t c = col / (P * P), ky = (col / P) % P, kx = col % P;
    stv(cols, cbf, i, ldv(img, ibf, ((bi * Cin + c) * H + py * P + ky) * W + px * P + kx));
}

extern "C" void cuda_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                                 tensor *cols) {
    int64_t B = img->shape[0], Cin = img->shape[1], H = img->shape[2], W = img->shape[3];
    int64_t n = tensor_numel(cols);
    CHECK(cols->dtype == w->dtype, "", "cuda patch embed: cols '%s' and weight '%s' must share a dtype",
          cols->name, w->name);
    k_im2col<<<blocks(n), NT>>>(cols->data, isbf(cols), img->data, isbf(img), B, Cin, H, W, patch);
    LAUNCH_CHECK();
    nn_cuda_matmul_raw(y, cols->data, w, b, NN_ACT_NONE, NULL, tensor_rows(cols), tensor_cols(cols));
}

// ---- conv2d with same padding: im2col per image, then one GEMM ----------------------------------
// cols[p, c*k*k + i*k + j] = x[(h+i-r)*W + (w+j-r), c] (0 outside the grid): the order of w's
// [Cout, Cin*k*k] flattening.
__global__ void k_im2col_same(void *cols, int cbf_, const void *x, int xbf, int64_t H, int64_t W, int64_t Cin,
                              int64_t k) {
    int64_t KK = Cin * k * k, n = H * W * KK;
    int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    int64_t p = t / KK, col = t % KK;
    int64_t c = col / (k * k), i = (col / k) % k, j = col % k, r = k / 2;
    int64_t hh = p / W + i - r, ww = p % W + j - r;
    float v = (hh < 0 || hh >= H || ww < 0 || ww >= W) ? 0.0f : ldv(x, xbf, (hh * W + ww) * Cin + c);
    stv(cols, cbf_, t, v);
}

extern "C" void cuda_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                                 tensor *cols) {
    int64_t B = x->shape[0], Cin = x->shape[2], Cout = w->shape[0], k = w->shape[2];
    int64_t P = (int64_t)H * W, KK = Cin * k * k;
    CHECK(cols->dtype == w->dtype, "", "cuda conv2d: cols '%s' and weight '%s' must share a dtype", cols->name,
          w->name);
    CHECK(!isbf(y) || isbf(w), "", "cuda conv2d: bf16 output '%s' needs bf16 weights", y->name);
    size_t xs = nn_dtype_size(x->dtype), ys = nn_dtype_size(y->dtype);
    for (int64_t bi = 0; bi < B; bi++) {
        const char *xb = (const char *)x->data + (size_t)(bi * P * Cin) * xs;
        char *yb = (char *)y->data + (size_t)(bi * P * Cout) * ys;
        k_im2col_same<<<blocks(P * KK), NT>>>(cols->data, isbf(cols), xb, isbf(x), H, W, Cin, k);
        LAUNCH_CHECK();
        // yb[P, Cout] = cols[P, KK] · w[Cout, KK]^T (+ b)
        nn_cuda_gemm_xwt(yb, cuty(y), cols->data, w->data, cuty(w), P, Cout, KK, 1.0f, 0.0f);
        if (b) nn_cuda_bias_act(yb, isbf(y), b->data, isbf(b), NULL, 0, P, Cout, NN_ACT_NONE);
    }
}

// ---- SiLU ---------------------------------------------------------------------------------------
__global__ void k_silu(void *y, int ybf, const void *x, int xbf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = ldv(x, xbf, i);
        stv(y, ybf, i, v / (1.0f + expf(-v)));
    }
}

extern "C" void cuda_silu(tensor *y, const tensor *x) {
    int64_t n = tensor_numel(x);
    k_silu<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), n);
    LAUNCH_CHECK();
}
