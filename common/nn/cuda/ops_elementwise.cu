// ops_elementwise.cu — the CUDA elementwise family: GELU and its backward, add, copy (f32 <-> bf16
// converts), fill, SwiGLU and its backward, RoPE in both directions, and transfers between host and
// device. f32 or bf16 storage per tensor, fp32 math, one thread per element (per rotated pair for RoPE).
// A negative RoPE position is recorded in the device error record (the next op that synchronises
// reports it). Arguments were validated by ops.c.
#include <math.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- elementwise -------------------------------------------------------------------------------
__global__ void k_gelu(void *y, int ybf, const void *x, int xbf, int64_t n, int act) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(y, ybf, i, act_f(ldv(x, xbf, i), act));
}

extern "C" void cuda_gelu(tensor *y, const tensor *x, nn_act act) {
    int64_t n = tensor_numel(x);
    k_gelu<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), n, (int)act);
    LAUNCH_CHECK();
}

// ---- gelu backward ------------------------------------------------------------------------------
__global__ void kt_gelu_backward(void *dx, int xbf_out, const void *dy, int ybf, const void *x, int xbf, int64_t n,
                                 int act, int accumulate) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float d = ldv(dy, ybf, i) * act_grad(ldv(x, xbf, i), act);
    stv(dx, xbf_out, i, accumulate ? ldv(dx, xbf_out, i) + d : d);
}

extern "C" void cuda_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate) {
    int64_t n = tensor_numel(x);
    kt_gelu_backward<<<blocks(n), NT>>>(dx->data, isbf(dx), dy->data, isbf(dy), x->data, isbf(x), n, (int)act,
                                        accumulate);
    LAUNCH_CHECK();
}

// ---- add, copy, fill, transfer ------------------------------------------------------------------

__global__ void k_add(void *y, int ybf, const void *a, int abf, const void *b, int bbf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(y, ybf, i, ldv(a, abf, i) + ldv(b, bbf, i));
}

__global__ void k_fill(void *y, int ybf, int64_t n, float v) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(y, ybf, i, v);
}

extern "C" void cuda_add(tensor *y, const tensor *a, const tensor *b) {
    int64_t n = tensor_numel(y);
    k_add<<<blocks(n), NT>>>(y->data, isbf(y), a->data, isbf(a), b->data, isbf(b), n);
    LAUNCH_CHECK();
}

extern "C" void cuda_copy(tensor *y, const tensor *x) {
    if (y->dtype != x->dtype) { // f32 <-> bf16 (ops.c checked both are float types)
        int64_t n = tensor_numel(x);
        nn_cuda_convert(y->data, isbf(y), x->data, isbf(x), n);
        return;
    }
    if (y->data != x->data) CHECK_CUDA(cudaMemcpy(y->data, x->data, tensor_nbytes(x), cudaMemcpyDeviceToDevice));
}

extern "C" void cuda_fill(tensor *t, float value) {
    int64_t n = tensor_numel(t);
    k_fill<<<blocks(n), NT>>>(t->data, isbf(t), n, value);
    LAUNCH_CHECK();
}

// Between host and device: equal dtypes copy the bytes, cpu f32 <-> cuda bf16 converts (ops.c checked
// the pair is on two devices).
extern "C" void cuda_transfer(tensor *dst, const tensor *src) {
    if (dst->dtype != src->dtype) {
        if (dst->device == NN_CUDA) nn_cuda_upload(dst, src); /* checks cpu f32 -> cuda bf16 */
        else nn_cuda_download(dst, src);
        return;
    }
    cudaMemcpyKind kind = src->device == NN_CPU   ? cudaMemcpyHostToDevice
                          : dst->device == NN_CPU ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
    if (dst->data == src->data) return;
    CHECK_CUDA(cudaMemcpy(dst->data, src->data, tensor_nbytes(src), kind));
}

// ---- SwiGLU -------------------------------------------------------------------------------------
static __device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void kt_swiglu(void *y, int ybf, const void *g, int gbf, const void *u, int ubf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = ldv(g, gbf, i), ui = ldv(u, ubf, i);
    stv(y, ybf, i, gi * sigmoid_f(gi) * ui);
}

__global__ void kt_swiglu_backward(void *dg, int dgbf, void *du, int dubf, const void *dy, int dybf, const void *g,
                                   int gbf, const void *u, int ubf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = ldv(g, gbf, i), ui = ldv(u, ubf, i), di = ldv(dy, dybf, i), s = sigmoid_f(gi);
    stv(dg, dgbf, i, di * ui * s * (1.0f + gi * (1.0f - s))); // dy is read before either write
    stv(du, dubf, i, di * gi * s);
}

extern "C" void cuda_swiglu(tensor *y, const tensor *gate, const tensor *up) {
    int64_t n = tensor_numel(y);
    kt_swiglu<<<blocks(n), NT>>>(y->data, isbf(y), gate->data, isbf(gate), up->data, isbf(up), n);
    LAUNCH_CHECK();
}

extern "C" void cuda_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                                     const tensor *up) {
    int64_t n = tensor_numel(dy);
    kt_swiglu_backward<<<blocks(n), NT>>>(dgate->data, isbf(dgate), dup->data, isbf(dup), dy->data, isbf(dy),
                                          gate->data, isbf(gate), up->data, isbf(up), n);
    LAUNCH_CHECK();
}

// ---- RoPE ---------------------------------------------------------------------------------------
#define ROPE_MAX_HALF 256
struct rope_freqs {
    float f[ROPE_MAX_HALF];
};

// One thread per rotated pair (token, head, i < Dh/2).
__global__ void kt_rope(void *y, int ybf, const void *x, int xbf, const int32_t *pos, rope_freqs fr, int64_t BT, int H,
                        int64_t Dh, int inverse, nn_dev_err *err) {
    int64_t half = Dh / 2, n = BT * H * half;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int64_t d = i % half, rest = i / half, bt = rest / H;
    int h = (int)(rest % H);
    int32_t p = pos[bt];
    if (p < 0 && d == 0 && h == 0) nn_report_err(err, NN_ERR_POS, bt, p, 0);
    float a = (float)p * fr.f[d]; // fp32 product, as HF and the CPU op
    float c = cosf(a), s = sinf(a);
    if (inverse) s = -s;
    int64_t base = bt * H * Dh + (int64_t)h * Dh;
    float x1 = ldv(x, xbf, base + d), x2 = ldv(x, xbf, base + d + half);
    stv(y, ybf, base + d, x1 * c - x2 * s);
    stv(y, ybf, base + d + half, x2 * c + x1 * s);
}

extern "C" void cuda_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta, int inverse) {
    int64_t B = x->shape[0], T = x->shape[1], Dh = x->shape[2] / n_heads, half = Dh / 2;
    CHECK(half <= ROPE_MAX_HALF, "raise ROPE_MAX_HALF in ops_elementwise.cu", "cuda rope: head dim %lld > %d",
          (long long)Dh, 2 * ROPE_MAX_HALF);
    rope_freqs fr;
    memset(&fr, 0, sizeof fr);
    // The frequencies on the host with the CPU op's expression (same libm), so both backends rotate
    // by the same fp32 angles.
    for (int64_t i = 0; i < half; i++) fr.f[i] = 1.0f / powf(theta, (float)(2 * i) / (float)Dh);
    int64_t n = B * T * n_heads * half;
    kt_rope<<<blocks(n), NT>>>(y->data, isbf(y), x->data, isbf(x), (const int32_t *)pos->data, fr, B * T, n_heads, Dh,
                               inverse, nn_cuda_err_record());
    LAUNCH_CHECK();
}
