// ops_extra_cuda.cu — the CUDA side of nn/ops_extra.h: host<->device transfers of any dtype, the
// embedding that skips negative ids (and its deterministic scatter-add backward), one query per row
// over a KV cache, and the argmax of rows (f32 or bf16 rows). f32 storage otherwise; arguments were
// validated by ops_extra.c.
#include <float.h>
#include <stdint.h>

#include "nn/cuda/cuda_common.cuh"
#include "nn/cuda/ops_extra_cuda.h"

extern "C" void cuda_extra_transfer(tensor *dst, const tensor *src) {
    cudaMemcpyKind kind = src->device == NN_CPU   ? cudaMemcpyHostToDevice
                          : dst->device == NN_CPU ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
    if (dst->data == src->data) return;
    CHECK_CUDA(cudaMemcpy(dst->data, src->data, tensor_nbytes(src), kind));
}

// ---- embedding that skips negative ids ---------------------------------------------------------
__global__ void k_embed_skip(float *y, const int32_t *ids, const float *table, int64_t n, int64_t C, int64_t V) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * C) return;
    int64_t r = i / C, c = i % C;
    int32_t id = ids[r];
    if (id >= 0 && id < V) y[i] = table[(int64_t)id * C + c];
}

extern "C" void cuda_extra_embedding_skip(tensor *y, const tensor *ids, const tensor *table) {
    int64_t n = tensor_numel(ids), C = table->shape[1];
    if (n * C == 0) return;
    k_embed_skip<<<blocks(n * C), NT>>>((float *)y->data, (const int32_t *)ids->data, (const float *)table->data,
                                          n, C, table->shape[0]);
    CHECK_CUDA(cudaGetLastError());
}

// The same sort-free, atomic-free scatter-add as op_embedding_backward (bit-identical run to run; a
// float atomicAdd would add repeated ids in whatever order the blocks run).
extern "C" void cuda_extra_embedding_skip_backward(tensor *dtable, const tensor *dy, const tensor *ids) {
    nn_cuda_embedding_backward(dtable, dy, ids, 1);
}


// ---- one query over the cache: one block per (row, head) ---------------------------------------
__global__ void k_attn_decode(float *out, const float *q, const float *k, const float *v, const int32_t *lens,
                              float *scores, int H, int group, int64_t Dh, int64_t Tm, int64_t KVD, float scale) {
    int64_t b = blockIdx.x / H;
    int h = blockIdx.x % H;
    int64_t n = lens[b];
    if (n < 1) n = 1;
    if (n > Tm) n = Tm;
    int64_t HD = Dh * H;
    const float *qh = q + b * HD + h * Dh;
    const float *kb = k + b * Tm * KVD + (h / group) * Dh;
    const float *vb = v + b * Tm * KVD + (h / group) * Dh;
    float *s = scores + ((int64_t)b * H + h) * Tm;
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        float d = 0.0f;
        for (int64_t e = 0; e < Dh; e++) d += qh[e] * kb[j * KVD + e];
        s[j] = scale * d;
        mx = fmaxf(mx, s[j]);
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        float p = expf(s[j] - mx);
        s[j] = p;
        sum += p;
    }
    sum = block_sum(sum); // also a barrier: every s[j] is written
    float inv = 1.0f / sum;
    for (int64_t e = threadIdx.x; e < Dh; e += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++) acc += s[j] * vb[j * KVD + e];
        out[b * HD + h * Dh + e] = acc * inv;
    }
}

extern "C" void cuda_extra_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v,
                                            const tensor *lens, int n_heads, int n_kv_heads, float scale,
                                            tensor *scores) {
    int64_t B = k->shape[0], Tm = k->shape[1], KVD = k->shape[2], Dh = KVD / n_kv_heads;
    k_attn_decode<<<(unsigned)(B * n_heads), NT>>>((float *)out->data, (const float *)q->data,
                                                    (const float *)k->data, (const float *)v->data,
                                                    (const int32_t *)lens->data, (float *)scores->data, n_heads,
                                                    n_heads / n_kv_heads, Dh, Tm, KVD, scale);
    CHECK_CUDA(cudaGetLastError());
}

// ---- argmax of rows: one block per row; NaN never chosen, the lowest index wins a tie -------------
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

extern "C" void cuda_extra_argmax_rows(tensor *idx, const tensor *x) {
    int64_t M = tensor_rows(x), N = tensor_cols(x);
    k_argmax<<<(unsigned)M, NT>>>((int32_t *)idx->data, x->data, isbf(x), N);
    CHECK_CUDA(cudaGetLastError());
}
