// ops_optimizer.cu — the CUDA optimizer family: AdamW on one tensor and on many at once (one launch over a
// table of 64K-element chunks, with the gradient scale and the compute copy), the gradient squared norm
// of one tensor or many (per-block partial sums in double added in a fixed order: deterministic), and
// scaling. Every AdamW operation is rounded as the CPU op rounds it (no contractions), so both backends
// update alike. Arguments were validated by ops.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh"

// ---- optimizer and gradient reductions ----------------------------------------------------------
// The CPU op's fp32 expression, with explicit roundings (no fused multiply-adds) so that both
// backends round alike.
// One element of AdamW, every operation rounded as the CPU op rounds it (no contractions); returns the
// new value of p[i].
static __device__ __forceinline__ float adamw_elem(float *p, float *m, float *v, int64_t i, float gi, float decay,
                                                   float a1, float beta2, float a2, float step_size, float bc2_sqrt,
                                                   float eps) {
    float pi = __fmul_rn(p[i], decay);
    float mi = __fadd_rn(m[i], __fmul_rn(a1, __fsub_rn(gi, m[i])));
    float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(a2, gi), gi));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    float np = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mi), denom));
    p[i] = np;
    m[i] = mi;
    v[i] = vi;
    return np;
}

__global__ void kt_adamw(float *p, const float *g, float *m, float *v, int64_t n, float decay, float a1, float beta2,
                         float a2, float step_size, float bc2_sqrt, float eps) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) adamw_elem(p, m, v, i, g[i], decay, a1, beta2, a2, step_size, bc2_sqrt, eps);
}

extern "C" void cuda_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
                           float eps, float weight_decay, int64_t step) {
    int64_t n = tensor_numel(p);
    // Scalars on the host exactly as the CPU op computes them.
    float decay = (float)(1.0 - (double)lr * weight_decay);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    kt_adamw<<<blocks(n), NT>>>((float *)p->data, (const float *)g->data, (float *)m->data, (float *)v->data, n,
                                decay, a1, beta2, a2, step_size, bc2_sqrt, eps);
    LAUNCH_CHECK();
}

#define SQ_PARTS 1024 // partial sums of op_grad_sqnorm: fixed per size, so the sum order is too

__global__ void kt_sqnorm_part(double *part, const void *g, int gbf, int64_t n) {
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
        double x = ldv(g, gbf, i);
        s += x * x;
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" void cuda_grad_sqnorm(double *acc, const tensor *g) {
    int64_t n = tensor_numel(g);
    unsigned G = blocks(n) < SQ_PARTS ? blocks(n) : SQ_PARTS;
    double *part = (double *)nn_cuda_workspace((size_t)(G + 1) * sizeof(double));
    kt_sqnorm_part<<<G, NT>>>(part + 1, g->data, isbf(g), n);
    LAUNCH_CHECK();
    nn_cuda_sum_d(part, part + 1, G);
    double h;
    CHECK_CUDA(cudaMemcpy(&h, part, sizeof h, cudaMemcpyDeviceToHost));
    *acc += h;
}

__global__ void kt_scale(void *t, int tbf, int64_t n, float s) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(t, tbf, i, ldv(t, tbf, i) * s);
}

extern "C" void cuda_scale(tensor *t, float s) {
    int64_t n = tensor_numel(t);
    kt_scale<<<blocks(n), NT>>>(t->data, isbf(t), n, s);
    LAUNCH_CHECK();
}

// ---- multi-tensor optimizer ops (the fused AdamW) -----------------------------------------------
// A table of the tensors (pointers, sizes, per-tensor weight decay) and of 64K-element chunks over
// them lives on the device; block b handles chunk b. The table is rebuilt on the host each call and
// uploaded only when its bytes change (the trainer passes the same tensors every step).
#define MT_CHUNK 65536

struct mt_tensor {
    float *p;
    const void *g;
    float *m, *v;
    void *pc;
    int gbf, pcbf;
    float wd;
    int64_t n;
};
struct mt_chunk {
    int t;
    int64_t start;
};

struct mt_table {
    void *dev;         // [tensors | chunks] on the device
    size_t cap;
    unsigned char *host; // what dev holds now
    size_t bytes;
};

// Builds the table of n tensors (p may be NULL for the sqnorm table: only g counts) into t, uploading
// when it differs from what the device holds. Returns the chunk count; *tensors / *chunks point into
// the device copy.
static int64_t mt_build(mt_table *tb, int n, tensor *const *p, const tensor *const *g, tensor *const *m,
                        tensor *const *v, tensor *const *pc, const float *wd, const mt_tensor **tensors,
                        const mt_chunk **chunks) {
    int64_t nchunks = 0;
    for (int i = 0; i < n; i++) nchunks += (tensor_numel(g[i]) + MT_CHUNK - 1) / MT_CHUNK;
    size_t tbytes = (size_t)n * sizeof(mt_tensor), bytes = tbytes + (size_t)nchunks * sizeof(mt_chunk);
    unsigned char *buf = (unsigned char *)calloc(1, bytes ? bytes : 1);
    CHECK(buf != NULL, "", "out of host memory for the multi-tensor table (%zu bytes)", bytes);
    mt_tensor *ts = (mt_tensor *)buf;
    mt_chunk *cs = (mt_chunk *)(buf + tbytes);
    int64_t c = 0;
    for (int i = 0; i < n; i++) {
        mt_tensor *e = &ts[i];
        e->p = p ? (float *)p[i]->data : NULL;
        e->g = g[i]->data;
        e->gbf = isbf(g[i]);
        e->m = m ? (float *)m[i]->data : NULL;
        e->v = v ? (float *)v[i]->data : NULL;
        e->pc = pc && pc[i] ? pc[i]->data : NULL;
        e->pcbf = pc && pc[i] ? isbf(pc[i]) : 0;
        e->wd = wd ? wd[i] : 0.0f;
        e->n = tensor_numel(g[i]);
        for (int64_t s = 0; s < e->n; s += MT_CHUNK) cs[c].t = i, cs[c].start = s, c++;
    }
    if (bytes != tb->bytes || memcmp(buf, tb->host, bytes) != 0) {
        if (bytes > tb->cap) {
            if (tb->dev) nn_cuda_free(tb->dev);
            tb->cap = bytes;
            tb->dev = nn_cuda_malloc(bytes, "multi-tensor table");
        }
        CHECK_CUDA(cudaMemcpy(tb->dev, buf, bytes, cudaMemcpyHostToDevice));
        free(tb->host);
        tb->host = buf;
        tb->bytes = bytes;
    } else {
        free(buf);
    }
    *tensors = (const mt_tensor *)tb->dev;
    *chunks = (const mt_chunk *)((unsigned char *)tb->dev + tbytes);
    return nchunks;
}

// kt_adamw's update (adamw_elem) with g scaled by gscale, then the compute copy.
__global__ void kt_adamw_multi(const mt_tensor *ts, const mt_chunk *cs, float gscale, float a1, float beta2,
                               float a2, float step_size, float bc2_sqrt, float eps, float lr) {
    mt_chunk c = cs[blockIdx.x];
    const mt_tensor *e = &ts[c.t];
    float decay = (float)(1.0 - (double)lr * e->wd); // as cuda_adamw computes it on the host
    int64_t end = c.start + MT_CHUNK < e->n ? c.start + MT_CHUNK : e->n;
    for (int64_t i = c.start + threadIdx.x; i < end; i += NT) {
        float gi = __fmul_rn(ldv(e->g, e->gbf, i), gscale);
        float np = adamw_elem(e->p, e->m, e->v, i, gi, decay, a1, beta2, a2, step_size, bc2_sqrt, eps);
        if (e->pc) stv(e->pc, e->pcbf, i, np);
    }
}

extern "C" void cuda_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                                 tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2,
                                 float eps, int64_t step) {
    static mt_table tb;
    const mt_tensor *ts;
    const mt_chunk *cs;
    int64_t nchunks = mt_build(&tb, n, p, (const tensor *const *)g, m, v, pc, wd, &ts, &cs);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float a1 = 1.0f - beta1, a2 = 1.0f - beta2;
    kt_adamw_multi<<<(unsigned)nchunks, NT>>>(ts, cs, gscale, a1, beta2, a2, step_size, bc2_sqrt, eps, lr);
    LAUNCH_CHECK();
}

__global__ void kt_sqnorm_multi(double *part, const mt_tensor *ts, const mt_chunk *cs) {
    mt_chunk c = cs[blockIdx.x];
    const mt_tensor *e = &ts[c.t];
    int64_t end = c.start + MT_CHUNK < e->n ? c.start + MT_CHUNK : e->n;
    double s = 0.0;
    for (int64_t i = c.start + threadIdx.x; i < end; i += NT) {
        double x = ldv(e->g, e->gbf, i);
        s += x * x;
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" void cuda_grad_sqnorm_multi(double *acc, int n, const tensor *const *g) {
    static mt_table tb;
    const mt_tensor *ts;
    const mt_chunk *cs;
    int64_t nchunks = mt_build(&tb, n, NULL, g, NULL, NULL, NULL, NULL, &ts, &cs);
    double *part = (double *)nn_cuda_workspace((size_t)(nchunks + 1) * sizeof(double));
    kt_sqnorm_multi<<<(unsigned)nchunks, NT>>>(part + 1, ts, cs);
    LAUNCH_CHECK();
    nn_cuda_sum_d(part, part + 1, nchunks);
    double h;
    CHECK_CUDA(cudaMemcpy(&h, part, sizeof h, cudaMemcpyDeviceToHost));
    *acc += h;
}
