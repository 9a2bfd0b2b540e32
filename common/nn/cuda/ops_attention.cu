// ops_attention.cu — the CUDA attention family: attention with the causal / segment mask keeping its
// probabilities or not, its backward from the kept probabilities, flash attention (lse only) and its
// backward, and one query per row over a KV cache. Storage f32 or bf16 per tensor, math in fp32.
//
// One scalar row kernel does the maths of every path that is not a GEMM or tensor-core path
// (k_attention_rows: one block per (query row, head, batch), that row's scores in shared memory or in
// the caller's scratch, masked keys at -inf so their probability is exactly 0, softmax in fp32, then
// out = P · V): op_attention(_seg) without kept probabilities or with a segment mask (writing att when
// kept), the f32 path of op_flash_attention (writing lse), and op_attention_decode (one query per row,
// keys up to that row's length). With the probabilities kept and no segments, attention runs on the
// tensor cores instead: two batched cuBLAS GEMMs around a row softmax.
// The backward from kept probabilities works through `scratch` (f32, T*T per head; a larger scratch
// processes more heads per launch). op_flash_attention keeps only lse [B,H,T] and its backward recomputes
// the probabilities: for bf16 q, k, v (and dout) with a head dim that is a multiple of 16 up to 128 the
// tiled tensor-core kernels below (kt_fa_*); otherwise one block per query row (or key row) with that
// row's scores in shared memory, scalar fp32 math.
// Determinism: every output element is written by one thread of one block after a loop in a fixed
// order; the dK/dV sums run over heads and rows in order; no float atomics. Arguments were validated
// by ops.c.
//
// Tensor-core flash attention (kt_fa_*): the contract of op_flash_attention(_backward) in nn/ops.h —
// causal (key j <= query i), packed segments (seg ids equal; seg may be NULL), GQA (query head h reads
// kv head h / (H / Hkv)); lse [B,H,T] f32 is the log-sum-exp of each query's scaled visible scores.
// Outputs may be f32 or bf16.
//
// Tiling: FA_BQ = 64 query rows and FA_BK = 64 keys per tile, blocks of FA_THREADS = 128 threads
// (4 warps, 1-D). Warp w owns the 16-row slice w of the block's 64-row tile in every product. Tiles
// of q, k, v, dout are staged in shared memory as bf16 (rows past T zeroed), products run on
// nvcuda::wmma 16x16x16 bf16 fragments with f32 accumulators; the running accumulators (O, dQ, dK,
// dV) live in shared f32 and pass through accumulator fragments (load, mma, store), so per-row work
// (softmax rescaling) is plain scalar code on shared memory.
//   Forward kt_fa_fwd, one block per (query tile, head, batch): for each key tile S = Q K^T, mask,
//   online softmax in fp32 (two threads per row: running max m and sum l), P to bf16, O = alpha O +
//   P V; at the end out = O / l and lse = m + log l.
//   Backward: kt_fa_bwd_delta delta_i = dO_i · O_i (one warp per row); kt_fa_bwd_q, one block per
//   (query tile, head, batch), recomputes P = exp(scale S - lse) and dP = dO V^T over the key tiles,
//   dS = P (dP - delta), dQ = scale dS K; kt_fa_bwd_kv, one block per (key tile, kv head, batch),
//   loops over the query heads sharing the kv head and over the query tiles: dV += P^T dO,
//   dK += dS^T Q, written once as scale dK and dV at the end.
// Key (or query) tiles with no visible pair are skipped: causal ones past the diagonal by the loop
// bounds, with segments any tile where no (query, key) pair meets (a block-wide __syncthreads_or).
// Determinism: every output element is written by exactly one thread of one block, after a loop in a
// fixed order (tiles, heads, the k steps of each product); no atomics, no clearing, no dependence on
// scheduling — runs give bit-identical results on one device.
#include <math.h>

#include "nn/backend.h"
#include "nn/cuda/cuda_common.cuh" // cuda_bf16.h before mma.h: its bf16 fragments need the type

#include <mma.h>

#define FA_MAX_DH 128 /* largest head dim of the tensor-core flash path */

// ---- the scalar row kernel ----------------------------------------------------------------------
static void shmem_limit(const void *kernel, size_t bytes, const char *what, long long T) {
    CHECK(bytes <= 200 * 1024, "split the sequence", "%s: T = %lld needs %zu bytes of shared memory", what, T,
          bytes);
    nn_cuda_allow_shmem(kernel, bytes);
}

// out[o + t] = scale * sum over j < n of s[j] m[m0 + j ld + t] for t < Dh (one thread per t, j in order,
// zero weights skipped): one row of weights times n rows of a kv head (P V, dS K).
static __device__ void row_times_rows(void *out, int obf, int64_t o, const float *s, int64_t n, const void *m,
                                      int mbf, int64_t m0, int64_t ld, int64_t Dh, float scale) {
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; j++)
            if (s[j] != 0.0f) acc += s[j] * ldv(m, mbf, m0 + j * ld + t);
        stv(out, obf, o + t, scale * acc);
    }
}

// One block per (query i, head h, batch b) of q [B, Tq, H*Dh] over k, v [B, Tk, Hkv*Dh]. Query i sees
// key j when j < n — n = lens[b] clamped to [1, Tk] when lens is given (a KV cache), else i + 1 when
// causal, else Tk — and, with seg [B, T], when seg[j] == seg[i]. The scores live in shared memory after
// the staged query, or in sc [B, H, Tq, Tk] (global scratch) when given. att [B, H, Tq, Tk] (optional)
// receives the probabilities, lse [B, H, Tq] (optional) the log-sum-exp of the scaled visible scores.
__global__ void k_attention_rows(void *out, int obf, const void *q, int qbf, const void *k, int kbf, const void *v,
                                 int vbf, const int32_t *seg, const int32_t *lens, int64_t Tq, int64_t Tk, int H,
                                 int group, int64_t Dh, float scale, int causal, float *sc, float *att, float *lse) {
    extern __shared__ float sm[];
    int64_t i = blockIdx.x, b = blockIdx.z;
    int h = blockIdx.y, g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh, row = (b * H + h) * Tq + i;
    float *qs = sm, *s = sc ? sc + row * Tk : sm + Dh;
    int64_t qoff = (b * Tq + i) * HD + (int64_t)h * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) qs[t] = ldv(q, qbf, qoff + t);
    __syncthreads();
    const int32_t *sb = seg ? seg + b * Tq : NULL;
    int32_t si = sb ? sb[i] : 0;
    int64_t n = causal ? i + 1 : Tk;
    if (lens) n = lens[b] < 1 ? 1 : lens[b] > Tk ? Tk : lens[b];
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < Tk; j += NT) {
        float d = -INFINITY;
        if (j < n && (!sb || sb[j] == si)) {
            int64_t koff = (b * Tk + j) * KVD + (int64_t)g * Dh;
            float acc = 0.0f;
            for (int64_t t = 0; t < Dh; t++) acc += qs[t] * ldv(k, kbf, koff + t);
            d = scale * acc;
            mx = fmaxf(mx, d);
        }
        s[j] = d;
    }
    mx = block_max(mx); // finite: every query sees at least one key
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < Tk; j += NT) {
        float e = expf(s[j] - mx); // exactly 0 for the masked -inf
        s[j] = e;
        sum += e;
    }
    float tot = block_sum(sum), inv = 1.0f / tot;
    if (lse && threadIdx.x == 0) lse[row] = (float)((double)mx + log((double)tot));
    for (int64_t j = threadIdx.x; j < Tk; j += NT) {
        s[j] *= inv;
        if (att) att[row * Tk + j] = s[j];
    }
    __syncthreads();
    row_times_rows(out, obf, qoff, s, n, v, vbf, b * Tk * KVD + (int64_t)g * Dh, KVD, Dh, 1.0f);
}

// k_attention_rows over q [B, Tq, H*Dh] and k, v [B, Tk, Hkv*Dh]; seg, lens, sc, att, lse as it says.
static void attention_rows(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *seg,
                           const tensor *lens, int64_t B, int64_t Tq, int64_t Tk, int n_heads, int n_kv_heads,
                           float scale, int causal, float *sc, float *att, float *lse, const char *what) {
    int64_t Dh = tensor_cols(q) / n_heads;
    size_t shmem = (size_t)(Dh + (sc ? 0 : Tk)) * sizeof(float);
    shmem_limit((const void *)k_attention_rows, shmem, what, (long long)Tk);
    dim3 grid((unsigned)Tq, (unsigned)n_heads, (unsigned)B);
    k_attention_rows<<<grid, NT, shmem>>>(out->data, isbf(out), q->data, isbf(q), k->data, isbf(k), v->data, isbf(v),
                                          seg ? (const int32_t *)seg->data : NULL,
                                          lens ? (const int32_t *)lens->data : NULL, Tq, Tk, n_heads,
                                          n_heads / n_kv_heads, Dh, scale, causal, sc, att, lse);
    LAUNCH_CHECK();
}

// ---- attention with kept probabilities on the tensor cores --------------------------------------
// Attention on the tensor cores, used when the caller keeps the probabilities att [B,H,T,T] (f32):
//   S = scale · Q_h K_g^T for every (image, head) in one batched GEMM into att (fp32 out),
//   a row softmax in place (causal mask; a bf16 copy of P when V is bf16, for the second GEMM),
//   O_h = P_h V_g in a second batched GEMM straight into out's [B,T,H*Dh] layout.
// The pointer arrays of the batched GEMMs are built by a small kernel (GQA: head h reads kv head
// h / group). Memory: att plus, for bf16 V, a grow-only B·H·T² bf16 buffer.
__global__ void k_attn_ptrs(const void **qp, const void **kp, const void **vp, void **sp, const void **pp, void **op,
                            const char *q, const char *k, const char *v, char *s, const char *pb, char *o, int64_t T,
                            int H, int group, int64_t Dh, size_t qes, size_t kves, size_t pes, int64_t BH) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BH) return;
    int64_t b = i / H, h = i % H, g = h / group, Hkv = H / group;
    qp[i] = q + (size_t)((b * T * H + h) * Dh) * qes;
    kp[i] = k + (size_t)((b * T * Hkv + g) * Dh) * kves;
    vp[i] = v + (size_t)((b * T * Hkv + g) * Dh) * kves;
    sp[i] = s + (size_t)(i * T * T) * sizeof(float);
    pp[i] = pb + (size_t)(i * T * T) * pes;
    op[i] = o + (size_t)((b * T * H + h) * Dh) * qes;
}

// One block per row of S (b, h, i): mask, max, exp, sum; P in place (f32) and optionally as bf16.
__global__ void k_attn_softmax(float *s, __nv_bfloat16 *pb, int64_t T, int causal) {
    int64_t r = blockIdx.x, i = r % T;
    float *row = s + r * T;
    int64_t n = causal ? i + 1 : T;
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < n; j += NT) mx = fmaxf(mx, row[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += NT) sum += __expf(row[j] - mx);
    float inv = 1.0f / block_sum(sum);
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float p = j < n ? __expf(row[j] - mx) * inv : 0.0f;
        row[j] = p;
        if (pb) pb[r * T + j] = __float2bfloat16(p);
    }
}

static void *attn_buffer(size_t bytes) { // grow-only, for the bf16 probabilities and pointer arrays
    static void *p = NULL;
    static size_t cap = 0;
    if (bytes > cap) {
        if (p) nn_cuda_free(p);
        cap = bytes + bytes / 4;
        p = nn_cuda_malloc(cap, "attention workspace");
    }
    return p;
}

static void attention_gemm(tensor *out, const tensor *q, const tensor *k, const tensor *v, int H, int Hkv, float scale,
                           int causal, float *att) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / H, BH = B * H;
    CHECK(isbf(q) == isbf(k) && isbf(k) == isbf(v) && isbf(q) == isbf(out), "",
          "cuda attention: q, k, v and out must share a dtype (q '%s' is %s)", q->name, nn_dtype_name(q->dtype));
    int bf = isbf(v);
    size_t es = bf ? 2 : 4, pes = bf ? 2 : 4;
    size_t ptr_bytes = (size_t)BH * 6 * sizeof(void *), pbytes = bf ? (size_t)BH * T * T * 2 : 0;
    char *ws = (char *)attn_buffer(ptr_bytes + 256 + pbytes);
    const void **qp = (const void **)ws, **kp = qp + BH, **vp = kp + BH, **pp = vp + BH;
    void **sp = (void **)(pp + BH), **op = sp + BH;
    __nv_bfloat16 *pb = bf ? (__nv_bfloat16 *)(ws + ((ptr_bytes + 255) / 256) * 256) : NULL;
    k_attn_ptrs<<<blocks(BH), NT>>>(qp, kp, vp, sp, pp, op, (const char *)q->data, (const char *)k->data,
                                    (const char *)v->data, (char *)att, bf ? (const char *)pb : (const char *)att,
                                    (char *)out->data, T, H, H / Hkv, Dh, es, es, pes, BH);
    LAUNCH_CHECK();
    cudaDataType_t ty = bf ? CUDA_R_16BF : CUDA_R_32F;
    int ldq = (int)(H * Dh), ldkv = (int)(Hkv * Dh);
    float zero = 0.0f, one = 1.0f;
    // S^T (column-major) = K Q^T: row-major S[i, j] = q_i · k_j
    CHECK_CUBLAS(cublasGemmBatchedEx(nn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)T, (int)T, (int)Dh, &scale, kp, ty,
                                     ldkv, qp, ty, ldq, &zero, sp, CUDA_R_32F, (int)T, (int)BH, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    k_attn_softmax<<<(unsigned)(BH * T), NT>>>(att, pb, T, causal);
    LAUNCH_CHECK();
    // O^T (column-major, ld H*Dh) = V^T P^T: row-major O = P V
    CHECK_CUBLAS(cublasGemmBatchedEx(nn_cuda_blas(), CUBLAS_OP_N, CUBLAS_OP_N, (int)Dh, (int)T, (int)T, &one, vp, ty,
                                     ldkv, pp, ty, (int)T, &zero, op, ty, ldq, (int)BH, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

extern "C" void cuda_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                               int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att,
                               nn_att_mode mode) {
    int64_t B = q->shape[0], T = q->shape[1];
    float *keep = mode == NN_ATT_KEEP ? (float *)att->data : NULL;
    if (keep && !seg) { // the probabilities are kept anyway: use the tensor cores
        attention_gemm(out, q, k, v, n_heads, n_kv_heads, scale, causal, keep);
        return;
    }
    attention_rows(out, q, k, v, seg, NULL, B, T, T, n_heads, n_kv_heads, scale, causal, NULL, keep, NULL,
                   "cuda attention");
}

// ---- attention backward -------------------------------------------------------------------------
// Query heads bh0 .. bh0+gridDim.y-1 (flattened b*H + h), one block per (query row i, head):
// dP_ij = dO_i · V_j (only where P_ij != 0: elsewhere dS is 0 whatever dP is),
// dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij) into ds [heads of the chunk, T, T], dQ_i = scale dS_i K.
__global__ void kt_attn_bwd_rows(void *dq, int dqbf, float *ds, const void *dout, int obf, const void *k, int kbf,
                                 const void *v, int vbf, const float *att, int64_t T, int H, int group, int64_t Dh,
                                 float scale, int64_t bh0) {
    extern __shared__ float sm[];
    float *s = sm, *dos = sm + T;
    int64_t i = blockIdx.x, bh = bh0 + blockIdx.y, b = bh / H;
    int h = (int)(bh % H), g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    int64_t qoff = (b * T + i) * HD + (int64_t)h * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) dos[t] = ldv(dout, obf, qoff + t);
    __syncthreads();
    const float *P = att + (bh * T + i) * T;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float p = P[j], dp = 0.0f;
        if (p != 0.0f) {
            int64_t voff = (b * T + j) * KVD + (int64_t)g * Dh;
            for (int64_t t = 0; t < Dh; t++) dp += dos[t] * ldv(v, vbf, voff + t);
        }
        s[j] = dp;
        dot += p * dp;
    }
    dot = block_sum(dot);
    float *dsr = ds + ((int64_t)blockIdx.y * T + i) * T;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float d = P[j] * (s[j] - dot);
        s[j] = d;
        dsr[j] = d;
    }
    __syncthreads();
    row_times_rows(dq, dqbf, qoff, s, T, k, kbf, b * T * KVD + (int64_t)g * Dh, KVD, Dh, scale);
}

// One block per (key j, batch b, kv head g): over the query heads of g that lie in the chunk
// [bh0, bh0 + nh), dK_j += scale sum_i dS_ij Q_i and dV_j += sum_i P_ij dO_i (heads and rows in
// order: deterministic).
__global__ void kt_attn_bwd_cols(void *dk, int dkbf, void *dv, int dvbf, const float *ds, const void *q, int qbf,
                                 const void *dout, int obf, const float *att, int64_t T, int H, int Hkv, int64_t Dh,
                                 float scale, int64_t bh0, int64_t nh) {
    int64_t j = blockIdx.x, b = blockIdx.y / Hkv;
    int g = (int)(blockIdx.y % Hkv), group = H / Hkv;
    int64_t h0 = (int64_t)g * group, h1 = h0 + group;
    if (h0 < bh0 - b * H) h0 = bh0 - b * H;
    if (h1 > bh0 + nh - b * H) h1 = bh0 + nh - b * H;
    if (h0 >= h1) return;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)Hkv * Dh;
    int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        float ak = 0.0f, av = 0.0f;
        for (int64_t h = h0; h < h1; h++) {
            int64_t bh = b * H + h;
            const float *P = att + bh * T * T, *dsh = ds + (bh - bh0) * T * T;
            for (int64_t i = 0; i < T; i++) {
                float p = P[i * T + j];
                if (p == 0.0f) continue;
                int64_t qo = (b * T + i) * HD + h * Dh + t;
                ak += dsh[i * T + j] * ldv(q, qbf, qo);
                av += p * ldv(dout, obf, qo);
            }
        }
        stv(dk, dkbf, koff + t, ldv(dk, dkbf, koff + t) + scale * ak);
        stv(dv, dvbf, koff + t, ldv(dv, dvbf, koff + t) + av);
    }
}

extern "C" void cuda_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                                        const tensor *k, const tensor *v, const tensor *att, int n_heads,
                                        int n_kv_heads, float scale, tensor *scratch) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    CHECK_CUDA(cudaMemset(dk->data, 0, tensor_nbytes(dk))); // heads of a group add into one kv head
    CHECK_CUDA(cudaMemset(dv->data, 0, tensor_nbytes(dv)));
    int64_t total = B * n_heads, per = tensor_numel(scratch) / (T * T);
    if (per > total) per = total;
    if (per > 65535) per = 65535; // grid.y
    size_t shmem = (size_t)(T + Dh) * sizeof(float);
    shmem_limit((const void *)kt_attn_bwd_rows, shmem, "cuda attention backward", (long long)T);
    for (int64_t bh0 = 0; bh0 < total; bh0 += per) {
        int64_t nh = total - bh0 < per ? total - bh0 : per;
        kt_attn_bwd_rows<<<dim3((unsigned)T, (unsigned)nh), NT, shmem>>>(
            dq->data, isbf(dq), (float *)scratch->data, dout->data, isbf(dout), k->data, isbf(k), v->data, isbf(v),
            (const float *)att->data, T, n_heads, n_heads / n_kv_heads, Dh, scale, bh0);
        LAUNCH_CHECK();
        kt_attn_bwd_cols<<<dim3((unsigned)T, (unsigned)(B * n_kv_heads)), NT>>>(
            dk->data, isbf(dk), dv->data, isbf(dv), (const float *)scratch->data, q->data, isbf(q), dout->data,
            isbf(dout), (const float *)att->data, T, n_heads, n_kv_heads, Dh, scale, bh0, nh);
        LAUNCH_CHECK();
    }
}

// ---- one query per row over a KV cache ----------------------------------------------------------
extern "C" void cuda_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens,
                                      int n_heads, int n_kv_heads, float scale, tensor *scores) {
    attention_rows(out, q, k, v, NULL, lens, k->shape[0], 1, k->shape[1], n_heads, n_kv_heads, scale, 0,
                   (float *)scores->data, NULL, NULL, "cuda attention decode");
}

using namespace nvcuda;
typedef __nv_bfloat16 bf16;

#define FA_BQ 64
#define FA_BK 64
#define FA_THREADS 128
#define FA_LDS (FA_BK + 4) // f32 score tiles
#define FA_LDP (FA_BK + 8) // bf16 probability tiles
// bf16 tiles of width Dh use Dh + 8, f32 accumulators Dh + 4 (row offsets stay 32-byte aligned,
// and the padding spreads rows over the shared-memory banks).

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> frag_at;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

static __host__ __device__ inline size_t fa_al(size_t n) { return (n + 127) / 128 * 128; }
static __host__ __device__ inline size_t fa_bh(int rows, int ld) { return fa_al((size_t)rows * (size_t)ld * 2); }
static __host__ __device__ inline size_t fa_bf(int rows, int ld) { return fa_al((size_t)rows * (size_t)ld * 4); }

// Each kernel's shared memory, carved in one place for both sides: the kernel gets its buffers, the
// host (base NULL) only the byte count to launch with.
struct fa_carver {
    char *p;
    size_t n;
};
static __host__ __device__ inline void *fa_take(fa_carver *c, size_t bytes) {
    void *r = c->p ? (void *)(c->p + c->n) : (void *)0;
    c->n += bytes;
    return r;
}
#define FA_TAKE(c, T, bytes) ((T *)fa_take(&(c), (bytes)))

// One carve-up for the three kernels, in this order, each taking what it uses (the rest stays NULL and
// takes no bytes): FA_FWD (kt_fa_fwd: Pb, the output accumulator acc_q = O, the row values row0/row1 =
// running max and sum), FA_BWD_Q (kt_fa_bwd_q: dOs, dP, dSb, acc_q = dQ, row0/row1 = lse and delta),
// FA_BWD_KV (kt_fa_bwd_kv: as FA_BWD_Q with Pb, and dK, dV instead of dQ).
enum { FA_FWD, FA_BWD_Q, FA_BWD_KV };
struct fa_sm {
    bf16 *Qs, *dOs, *Ks, *Vs, *Pb, *dSb;
    float *S, *dP, *acc_q, *dKa, *dVa, *row0, *row1;
    int *qseg, *kseg;
};
static __host__ __device__ inline size_t fa_layout(void *base, int Dh, int kind, fa_sm *m) {
    fa_carver c = {(char *)base, 0};
    const int LDH = Dh + 8, LDO = Dh + 4, bwd = kind != FA_FWD, kv = kind == FA_BWD_KV;
    m->Qs = FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH));
    m->dOs = bwd ? FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH)) : NULL;
    m->Ks = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->Vs = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->S = FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS));
    m->dP = bwd ? FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS)) : NULL;
    m->Pb = !bwd || kv ? FA_TAKE(c, bf16, fa_bh(FA_BQ, FA_LDP)) : NULL;
    m->dSb = bwd ? FA_TAKE(c, bf16, fa_bh(FA_BQ, FA_LDP)) : NULL;
    m->acc_q = kv ? NULL : FA_TAKE(c, float, fa_bf(FA_BQ, LDO));
    m->dKa = kv ? FA_TAKE(c, float, fa_bf(FA_BK, LDO)) : NULL;
    m->dVa = kv ? FA_TAKE(c, float, fa_bf(FA_BK, LDO)) : NULL;
    m->row0 = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->row1 = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->qseg = FA_TAKE(c, int, fa_bf(FA_BQ, 1));
    m->kseg = FA_TAKE(c, int, fa_bf(FA_BK, 1));
    return c.n;
}

// Rows row0 .. row0+63 of a [*, stride] bf16 matrix (columns 0 .. Dh-1 from src) into dst [64, ld];
// rows at or past n (the valid count) are zero, so products over them are 0 and finite.
static __device__ void fa_stage(bf16 *dst, int ld, const bf16 *src, int64_t stride, int row0, int n, int Dh) {
    const bf16 zero = __float2bfloat16(0.0f);
    for (int e = threadIdx.x; e < 64 * Dh; e += FA_THREADS) {
        int r = e / Dh, c = e - r * Dh;
        dst[r * ld + c] = r < n ? src[(int64_t)(row0 + r) * stride + c] : zero;
    }
}

// C[16 x 16] f32 (row-major, ldc) = A[16 x Dh] B^T where B is [16 x Dh]: both row-major bf16.
static __device__ void fa_mm_abt(float *C, int ldc, const bf16 *A, int lda, const bf16 *B, int ldb, int Dh) {
    frag_c acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < Dh; kk += 16) {
        frag_a a;
        frag_bt bt;
        wmma::load_matrix_sync(a, A + kk, (unsigned)lda);
        wmma::load_matrix_sync(bt, B + kk, (unsigned)ldb);
        wmma::mma_sync(acc, a, bt, acc);
    }
    wmma::store_matrix_sync(C, acc, (unsigned)ldc, wmma::mem_row_major);
}

// C[16 x 16] f32 += A[16 x K] B[K x 16]; A row-major (or, at, the transpose of a row-major [K x 16]
// tile: element (r, c) at A[c * lda + r]), B row-major.
template <class FA>
static __device__ void fa_mm_acc(float *C, int ldc, const bf16 *A, int lda, int a_step, const bf16 *B, int ldb,
                                 int K) {
    frag_c acc;
    wmma::load_matrix_sync(acc, C, (unsigned)ldc, wmma::mem_row_major);
    for (int kk = 0; kk < K; kk += 16) {
        FA a;
        frag_b b;
        wmma::load_matrix_sync(a, A + (int64_t)kk * a_step, (unsigned)lda);
        wmma::load_matrix_sync(b, B + (int64_t)kk * ldb, (unsigned)ldb);
        wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(C, acc, (unsigned)ldc, wmma::mem_row_major);
}

// 1 when query i may see key j (both < T; qs, ks their segment ids).
static __device__ __forceinline__ int fa_visible(int i, int j, int causal, const int32_t *seg, int qs, int ks) {
    return (!causal || j <= i) && (!seg || qs == ks);
}

// 1 (in every thread) when some query r < nq of the tile at q0 sees some key c < nk of the tile at k0.
// A barrier: every thread of the block must call it.
static __device__ int fa_tile_meets(int q0, int nq, int k0, int nk, int causal, const int32_t *seg, const int *qseg,
                                    const int *kseg) {
    int any = 0;
    for (int e = threadIdx.x; e < FA_BQ * FA_BK && !any; e += FA_THREADS) {
        int r = e / FA_BK, c = e % FA_BK;
        any = r < nq && c < nk && fa_visible(q0 + r, k0 + c, causal, seg, qseg[r], kseg[c]);
    }
    return __syncthreads_or(any);
}

// ---- tensor-core flash: forward -----------------------------------------------------------------
__global__ void kt_fa_fwd(void *out, int obf, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          const int32_t *seg, int T, int H, int group, int Dh, float scale, int causal) {
    extern __shared__ float fa_smem[];
    const int LDH = Dh + 8, LDO = Dh + 4;
    fa_sm m;
    fa_layout(fa_smem, Dh, FA_FWD, &m);
    bf16 *Qs = m.Qs, *Ks = m.Ks, *Vs = m.Vs, *Pb = m.Pb;
    float *S = m.S, *Os = m.acc_q, *rm = m.row0, *rl = m.row1;
    int *qseg = m.qseg, *kseg = m.kseg;
    const int tid = threadIdx.x, w = tid >> 5;
    const int q0 = blockIdx.x * FA_BQ, h = blockIdx.y, b = blockIdx.z, g = h / group;
    const int nq = T - q0 < FA_BQ ? T - q0 : FA_BQ;
    const int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    const bf16 *qb = q + (int64_t)b * T * HD + (int64_t)h * Dh;
    const bf16 *kb = k + (int64_t)b * T * KVD + (int64_t)g * Dh, *vb = v + (int64_t)b * T * KVD + (int64_t)g * Dh;
    const int32_t *sb = seg ? seg + (int64_t)b * T : NULL;

    fa_stage(Qs, LDH, qb, HD, q0, nq, Dh);
    for (int e = tid; e < FA_BQ * Dh; e += FA_THREADS) Os[(e / Dh) * LDO + e % Dh] = 0.0f;
    for (int r = tid; r < FA_BQ; r += FA_THREADS) {
        rm[r] = -INFINITY, rl[r] = 0.0f;
        qseg[r] = sb && r < nq ? sb[q0 + r] : 0;
    }
    const int kend = causal ? q0 + nq : T; // keys past the tile's last query are masked when causal
    for (int k0 = 0; k0 < kend; k0 += FA_BK) {
        const int nk = T - k0 < FA_BK ? T - k0 : FA_BK;
        __syncthreads(); // the previous tile's readers of Ks, Vs, Pb, kseg are done
        if (sb) {
            for (int c = tid; c < FA_BK; c += FA_THREADS) kseg[c] = c < nk ? sb[k0 + c] : 0;
            __syncthreads();
            if (!fa_tile_meets(q0, nq, k0, nk, causal, sb, qseg, kseg)) continue;
        }
        fa_stage(Ks, LDH, kb, KVD, k0, nk, Dh);
        fa_stage(Vs, LDH, vb, KVD, k0, nk, Dh);
        __syncthreads();
        for (int ct = 0; ct < FA_BK / 16; ct++) // S = Q K^T, warp w: rows 16w .. 16w+15
            fa_mm_abt(S + 16 * w * FA_LDS + 16 * ct, FA_LDS, Qs + 16 * w * LDH, LDH, Ks + 16 * ct * LDH, LDH, Dh);
        __syncthreads();
        { // online softmax: threads 2r and 2r+1 share row r, 32 columns each
            const int r = tid >> 1, c0 = (tid & 1) * (FA_BK / 2);
            float mloc = -INFINITY;
            for (int c = c0; c < c0 + FA_BK / 2; c++) {
                int ok = r < nq && c < nk && fa_visible(q0 + r, k0 + c, causal, sb, qseg[r], sb ? kseg[c] : 0);
                float s = ok ? scale * S[r * FA_LDS + c] : -INFINITY;
                S[r * FA_LDS + c] = s;
                mloc = fmaxf(mloc, s);
            }
            mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, 1));
            const float mold = rm[r], mnew = fmaxf(mold, mloc);
            // nothing visible yet: keep O (zero) and l as they are
            const float alpha = mnew == -INFINITY ? 1.0f : expf(mold - mnew);
            float sum = 0.0f;
            for (int c = c0; c < c0 + FA_BK / 2; c++) {
                float e = mnew == -INFINITY ? 0.0f : expf(S[r * FA_LDS + c] - mnew); // masked: exp(-inf) = 0
                Pb[r * FA_LDP + c] = __float2bfloat16(e);
                sum += e;
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            for (int c = (tid & 1) * (Dh / 2); c < ((tid & 1) + 1) * (Dh / 2); c++) Os[r * LDO + c] *= alpha;
            if ((tid & 1) == 0) rm[r] = mnew, rl[r] = rl[r] * alpha + sum;
        }
        __syncthreads();
        for (int ct = 0; ct < Dh / 16; ct++) // O += P V, warp w: rows 16w .. 16w+15
            fa_mm_acc<frag_a>(Os + 16 * w * LDO + 16 * ct, LDO, Pb + 16 * w * FA_LDP, FA_LDP, 1, Vs + 16 * ct, LDH,
                              FA_BK);
    }
    __syncthreads();
    for (int e = tid; e < nq * Dh; e += FA_THREADS) {
        int r = e / Dh, c = e - r * Dh;
        stv(out, obf, ((int64_t)b * T + q0 + r) * HD + (int64_t)h * Dh + c, Os[r * LDO + c] / rl[r]);
    }
    for (int r = tid; r < nq; r += FA_THREADS) // l > 0: every query sees itself
        lse[((int64_t)b * H + h) * T + q0 + r] = rm[r] + logf(rl[r]);
}

// ---- tensor-core flash: backward ----------------------------------------------------------------
// delta_i = dO_i · O_i for every (b, t, h) row n = (b T + t) H + h, one warp per row.
__global__ void kt_fa_bwd_delta(float *delta, const bf16 *dout, const void *out, int obf, int64_t rows, int T, int H,
                                int Dh) {
    const int64_t n = (int64_t)blockIdx.x * (FA_THREADS / 32) + (threadIdx.x >> 5);
    if (n >= rows) return; // whole warps
    const int lane = threadIdx.x & 31;
    float s = 0.0f;
    for (int c = lane; c < Dh; c += 32) s += __bfloat162float(dout[n * Dh + c]) * ldv(out, obf, n * Dh + c);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const int64_t bt = n / H, h = n % H, b = bt / T, t = bt % T;
    if (lane == 0) delta[(b * H + h) * T + t] = s;
}

// Scores and their gradients of one (query tile, key tile) pair, shared by both backward kernels:
// S = Q K^T and dP = dO V^T (warp w: query rows 16w ..), then P = exp(scale S - lse) on the visible
// pairs (0 elsewhere) and dS = P (dP - delta), into Pb (when not NULL) and dSb as bf16.
static __device__ void fa_bwd_scores(bf16 *Pb, bf16 *dSb, float *S, float *dP, const bf16 *Qs, const bf16 *dOs,
                                     const bf16 *Ks, const bf16 *Vs, int LDH, int Dh, const float *lse_s,
                                     const float *dl_s, int q0, int nq, int k0, int nk, int causal, const int32_t *sb,
                                     const int *qseg, const int *kseg, float scale) {
    const int w = threadIdx.x >> 5;
    for (int ct = 0; ct < FA_BK / 16; ct++) {
        fa_mm_abt(S + 16 * w * FA_LDS + 16 * ct, FA_LDS, Qs + 16 * w * LDH, LDH, Ks + 16 * ct * LDH, LDH, Dh);
        fa_mm_abt(dP + 16 * w * FA_LDS + 16 * ct, FA_LDS, dOs + 16 * w * LDH, LDH, Vs + 16 * ct * LDH, LDH, Dh);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < FA_BQ * FA_BK; e += FA_THREADS) {
        int r = e / FA_BK, c = e % FA_BK;
        float pr = 0.0f, ds = 0.0f;
        if (r < nq && c < nk && fa_visible(q0 + r, k0 + c, causal, sb, qseg[r], kseg[c])) {
            pr = expf(scale * S[r * FA_LDS + c] - lse_s[r]);
            ds = pr * (dP[r * FA_LDS + c] - dl_s[r]);
        }
        if (Pb) Pb[r * FA_LDP + c] = __float2bfloat16(pr);
        dSb[r * FA_LDP + c] = __float2bfloat16(ds);
    }
    __syncthreads();
}

// Per-row values of a query tile (rows past T: 0) and their segment ids.
static __device__ void fa_rows(float *lse_s, float *dl_s, int *qseg, const float *lse, const float *delta,
                               const int32_t *sb, int64_t bh, int T, int q0, int nq) {
    for (int r = threadIdx.x; r < FA_BQ; r += FA_THREADS) {
        lse_s[r] = r < nq ? lse[bh * T + q0 + r] : 0.0f;
        dl_s[r] = r < nq ? delta[bh * T + q0 + r] : 0.0f;
        qseg[r] = sb && r < nq ? sb[q0 + r] : 0;
    }
}

// dQ of one (query tile, head, batch): scale sum over key tiles of dS K.
__global__ void kt_fa_bwd_q(void *dq, int dqbf, const float *delta, const bf16 *dout, const bf16 *q, const bf16 *k,
                            const bf16 *v, const float *lse, const int32_t *seg, int T, int H, int group, int Dh,
                            float scale, int causal) {
    extern __shared__ float fa_smem[];
    const int LDH = Dh + 8, LDO = Dh + 4;
    fa_sm m;
    fa_layout(fa_smem, Dh, FA_BWD_Q, &m);
    bf16 *Qs = m.Qs, *dOs = m.dOs, *Ks = m.Ks, *Vs = m.Vs, *dSb = m.dSb;
    float *S = m.S, *dP = m.dP, *dQa = m.acc_q, *lse_s = m.row0, *dl_s = m.row1;
    int *qseg = m.qseg, *kseg = m.kseg;
    const int tid = threadIdx.x, w = tid >> 5;
    const int q0 = blockIdx.x * FA_BQ, h = blockIdx.y, b = blockIdx.z, g = h / group;
    const int nq = T - q0 < FA_BQ ? T - q0 : FA_BQ;
    const int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh, bh = (int64_t)b * H + h;
    const bf16 *kb = k + (int64_t)b * T * KVD + (int64_t)g * Dh, *vb = v + (int64_t)b * T * KVD + (int64_t)g * Dh;
    const int32_t *sb = seg ? seg + (int64_t)b * T : NULL;

    fa_stage(Qs, LDH, q + (int64_t)b * T * HD + (int64_t)h * Dh, HD, q0, nq, Dh);
    fa_stage(dOs, LDH, dout + (int64_t)b * T * HD + (int64_t)h * Dh, HD, q0, nq, Dh);
    for (int e = tid; e < FA_BQ * Dh; e += FA_THREADS) dQa[(e / Dh) * LDO + e % Dh] = 0.0f;
    fa_rows(lse_s, dl_s, qseg, lse, delta, sb, bh, T, q0, nq);
    const int kend = causal ? q0 + nq : T;
    for (int k0 = 0; k0 < kend; k0 += FA_BK) {
        const int nk = T - k0 < FA_BK ? T - k0 : FA_BK;
        __syncthreads(); // the previous tile's readers of Ks, Vs, dSb, kseg are done
        for (int c = tid; c < FA_BK; c += FA_THREADS) kseg[c] = sb && c < nk ? sb[k0 + c] : 0;
        if (sb) {
            __syncthreads();
            if (!fa_tile_meets(q0, nq, k0, nk, causal, sb, qseg, kseg)) continue;
        }
        fa_stage(Ks, LDH, kb, KVD, k0, nk, Dh);
        fa_stage(Vs, LDH, vb, KVD, k0, nk, Dh);
        __syncthreads();
        fa_bwd_scores(NULL, dSb, S, dP, Qs, dOs, Ks, Vs, LDH, Dh, lse_s, dl_s, q0, nq, k0, nk, causal, sb, qseg, kseg,
                      scale);
        for (int ct = 0; ct < Dh / 16; ct++) // dQ += dS K, warp w: rows 16w .. 16w+15
            fa_mm_acc<frag_a>(dQa + 16 * w * LDO + 16 * ct, LDO, dSb + 16 * w * FA_LDP, FA_LDP, 1, Ks + 16 * ct, LDH,
                              FA_BK);
    }
    __syncthreads();
    for (int e = tid; e < nq * Dh; e += FA_THREADS) {
        int r = e / Dh, c = e - r * Dh;
        stv(dq, dqbf, ((int64_t)b * T + q0 + r) * HD + (int64_t)h * Dh + c, scale * dQa[r * LDO + c]);
    }
}

// dK, dV of one (key tile, kv head, batch): over the query heads of the kv head and the query tiles,
// dV += P^T dO and dK += dS^T Q; written as scale dK and dV.
__global__ void kt_fa_bwd_kv(void *dk, int dkbf, void *dv, int dvbf, const float *delta, const bf16 *dout,
                             const bf16 *q, const bf16 *k, const bf16 *v, const float *lse, const int32_t *seg, int T,
                             int H, int group, int Dh, float scale, int causal) {
    extern __shared__ float fa_smem[];
    const int LDH = Dh + 8, LDO = Dh + 4;
    fa_sm m;
    fa_layout(fa_smem, Dh, FA_BWD_KV, &m);
    bf16 *Qs = m.Qs, *dOs = m.dOs, *Ks = m.Ks, *Vs = m.Vs, *Pb = m.Pb, *dSb = m.dSb;
    float *S = m.S, *dP = m.dP, *dKa = m.dKa, *dVa = m.dVa, *lse_s = m.row0, *dl_s = m.row1;
    int *qseg = m.qseg, *kseg = m.kseg;
    const int tid = threadIdx.x, w = tid >> 5;
    const int k0 = blockIdx.x * FA_BK, g = blockIdx.y, b = blockIdx.z;
    const int nk = T - k0 < FA_BK ? T - k0 : FA_BK;
    const int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    const int32_t *sb = seg ? seg + (int64_t)b * T : NULL;

    fa_stage(Ks, LDH, k + (int64_t)b * T * KVD + (int64_t)g * Dh, KVD, k0, nk, Dh);
    fa_stage(Vs, LDH, v + (int64_t)b * T * KVD + (int64_t)g * Dh, KVD, k0, nk, Dh);
    for (int e = tid; e < FA_BK * Dh; e += FA_THREADS) {
        int r = e / Dh, c = e - r * Dh;
        dKa[r * LDO + c] = 0.0f, dVa[r * LDO + c] = 0.0f;
    }
    for (int c = tid; c < FA_BK; c += FA_THREADS) kseg[c] = sb && c < nk ? sb[k0 + c] : 0;
    const int qbeg = causal ? k0 / FA_BQ * FA_BQ : 0; // earlier query tiles see none of these keys
    for (int h = g * group; h < (g + 1) * group; h++) {
        const int64_t bh = (int64_t)b * H + h;
        const bf16 *qb = q + (int64_t)b * T * HD + (int64_t)h * Dh, *dob = dout + (int64_t)b * T * HD + (int64_t)h * Dh;
        for (int q0 = qbeg; q0 < T; q0 += FA_BQ) {
            const int nq = T - q0 < FA_BQ ? T - q0 : FA_BQ;
            __syncthreads(); // the previous tile's readers of Qs, dOs, Pb, dSb, the row values are done
            fa_rows(lse_s, dl_s, qseg, lse, delta, sb, bh, T, q0, nq);
            if (sb) {
                __syncthreads();
                if (!fa_tile_meets(q0, nq, k0, nk, causal, sb, qseg, kseg)) continue;
            }
            fa_stage(Qs, LDH, qb, HD, q0, nq, Dh);
            fa_stage(dOs, LDH, dob, HD, q0, nq, Dh);
            __syncthreads();
            fa_bwd_scores(Pb, dSb, S, dP, Qs, dOs, Ks, Vs, LDH, Dh, lse_s, dl_s, q0, nq, k0, nk, causal, sb, qseg,
                          kseg, scale);
            for (int ct = 0; ct < Dh / 16; ct++) { // warp w: keys 16w .. 16w+15; P^T, dS^T read column-major
                fa_mm_acc<frag_at>(dVa + 16 * w * LDO + 16 * ct, LDO, Pb + 16 * w, FA_LDP, FA_LDP, dOs + 16 * ct, LDH,
                                   FA_BQ);
                fa_mm_acc<frag_at>(dKa + 16 * w * LDO + 16 * ct, LDO, dSb + 16 * w, FA_LDP, FA_LDP, Qs + 16 * ct, LDH,
                                   FA_BQ);
            }
        }
    }
    __syncthreads();
    for (int e = tid; e < nk * Dh; e += FA_THREADS) {
        int r = e / Dh, c = e - r * Dh;
        int64_t o = ((int64_t)b * T + k0 + r) * KVD + (int64_t)g * Dh + c;
        stv(dk, dkbf, o, scale * dKa[r * LDO + c]);
        stv(dv, dvbf, o, dVa[r * LDO + c]);
    }
}

// ---- tensor-core flash: host --------------------------------------------------------------------
static int cuda_flash_tc_ok(const tensor *q, const tensor *k, const tensor *v, const tensor *dout, int n_heads) {
    int64_t Dh = q->shape[2] / n_heads;
    return isbf(q) && isbf(k) && isbf(v) && (!dout || isbf(dout)) && Dh % 16 == 0 && Dh >= 16 &&
           Dh <= FA_MAX_DH && q->shape[1] <= INT32_MAX - FA_BQ;
}

static void cuda_flash_tc_forward(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                                  int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    int B = (int)q->shape[0], T = (int)q->shape[1], Dh = (int)(q->shape[2] / n_heads);
    fa_sm lay;
    size_t sh = fa_layout(NULL, Dh, FA_FWD, &lay);
    nn_cuda_allow_shmem((const void *)kt_fa_fwd, sh);
    dim3 grid((unsigned)((T + FA_BQ - 1) / FA_BQ), (unsigned)n_heads, (unsigned)B);
    kt_fa_fwd<<<grid, FA_THREADS, sh>>>(out->data, isbf(out), (float *)lse->data, (const bf16 *)q->data,
                                        (const bf16 *)k->data, (const bf16 *)v->data,
                                        seg ? (const int32_t *)seg->data : NULL, T, n_heads, n_heads / n_kv_heads, Dh,
                                        scale, causal);
    LAUNCH_CHECK();
}

static void cuda_flash_tc_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                                   const tensor *k, const tensor *v, const tensor *out, const tensor *lse, int n_heads,
                                   int n_kv_heads, float scale, int causal, const tensor *seg, float *delta) {
    int B = (int)q->shape[0], T = (int)q->shape[1], Dh = (int)(q->shape[2] / n_heads), group = n_heads / n_kv_heads;
    const int32_t *sg = seg ? (const int32_t *)seg->data : NULL;
    int64_t rows = (int64_t)B * T * n_heads, per = FA_THREADS / 32;
    kt_fa_bwd_delta<<<(unsigned)((rows + per - 1) / per), FA_THREADS>>>(delta, (const bf16 *)dout->data, out->data,
                                                                        isbf(out), rows, T, n_heads, Dh);
    LAUNCH_CHECK();
    fa_sm lay;
    size_t shq = fa_layout(NULL, Dh, FA_BWD_Q, &lay), shkv = fa_layout(NULL, Dh, FA_BWD_KV, &lay);
    nn_cuda_allow_shmem((const void *)kt_fa_bwd_q, shq);
    nn_cuda_allow_shmem((const void *)kt_fa_bwd_kv, shkv);
    unsigned nt = (unsigned)((T + FA_BQ - 1) / FA_BQ);
    kt_fa_bwd_q<<<dim3(nt, (unsigned)n_heads, (unsigned)B), FA_THREADS, shq>>>(
        dq->data, isbf(dq), delta, (const bf16 *)dout->data, (const bf16 *)q->data, (const bf16 *)k->data,
        (const bf16 *)v->data, (const float *)lse->data, sg, T, n_heads, group, Dh, scale, causal);
    LAUNCH_CHECK();
    kt_fa_bwd_kv<<<dim3((unsigned)((T + FA_BK - 1) / FA_BK), (unsigned)n_kv_heads, (unsigned)B), FA_THREADS, shkv>>>(
        dk->data, isbf(dk), dv->data, isbf(dv), delta, (const bf16 *)dout->data, (const bf16 *)q->data,
        (const bf16 *)k->data, (const bf16 *)v->data, (const float *)lse->data, sg, T, n_heads, group, Dh, scale,
        causal);
    LAUNCH_CHECK();
}

// ---- flash attention: dispatch and the scalar path ----------------------------------------------
// bf16 inputs with a supported head dim go to the tensor-core kernels above (cuda_flash_tc_ok); the
// scalar kernels are the path for everything else. Forward: k_attention_rows without att, writing lse.
// Backward: a row pass (dQ, and delta_i = dO_i · O_i into the workspace) and a column pass (dK, dV),
// both recomputing P_ij = exp(scale q_i·k_j - lse_i) on the visible pairs; every output element is
// written by one thread of one block (deterministic, no clearing, no atomics).
extern "C" void cuda_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                                     int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    if (cuda_flash_tc_ok(q, k, v, NULL, n_heads)) {
        cuda_flash_tc_forward(out, lse, q, k, v, n_heads, n_kv_heads, scale, causal, seg);
        return;
    }
    int64_t B = q->shape[0], T = q->shape[1];
    attention_rows(out, q, k, v, seg, NULL, B, T, T, n_heads, n_kv_heads, scale, causal, NULL, NULL,
                   (float *)lse->data, "cuda flash attention");
}

// One block per (query i, head h, batch b).
__global__ void kt_flash_bwd_rows(void *dq, int dqbf, float *delta, const void *dout, int dobf, const void *out,
                                  int outbf, const void *q, int qbf, const void *k, int kbf, const void *v, int vbf,
                                  const float *lse, const int32_t *seg, int64_t T, int H, int group, int64_t Dh,
                                  float scale, int causal) {
    extern __shared__ float sm[];
    float *s = sm, *qs = sm + T, *dos = qs + Dh;
    int64_t i = blockIdx.x, b = blockIdx.z;
    int h = blockIdx.y, g = h / group;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)(H / group) * Dh;
    int64_t qoff = (b * T + i) * HD + (int64_t)h * Dh, row = (b * H + h) * T + i;
    float dd = 0.0f;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        qs[t] = ldv(q, qbf, qoff + t);
        dos[t] = ldv(dout, dobf, qoff + t);
        dd += dos[t] * ldv(out, outbf, qoff + t);
    }
    dd = block_sum(dd); // also the barrier after the loads into shared memory
    if (threadIdx.x == 0) delta[row] = dd;
    const float l = lse[row];
    const int32_t *sb = seg ? seg + b * T : NULL;
    int32_t si = sb ? sb[i] : 0;
    int64_t n = causal ? i + 1 : T;
    for (int64_t j = threadIdx.x; j < T; j += NT) {
        float d = 0.0f;
        if (j < n && (!sb || sb[j] == si)) {
            int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
            float a = 0.0f, dp = 0.0f;
            for (int64_t t = 0; t < Dh; t++) {
                a += qs[t] * ldv(k, kbf, koff + t);
                dp += dos[t] * ldv(v, vbf, koff + t);
            }
            float p = expf(scale * a - l);
            d = p * (dp - dd);
        }
        s[j] = d;
    }
    __syncthreads();
    row_times_rows(dq, dqbf, qoff, s, n, k, kbf, b * T * KVD + (int64_t)g * Dh, KVD, Dh, scale);
}

// One block per (key j, kv head g, batch b), over the query heads of g in order.
__global__ void kt_flash_bwd_cols(void *dk, int dkbf, void *dv, int dvbf, const float *delta, const void *dout,
                                  int dobf, const void *q, int qbf, const void *k, int kbf, const void *v, int vbf,
                                  const float *lse, const int32_t *seg, int64_t T, int H, int Hkv, int64_t Dh,
                                  float scale, int causal) {
    extern __shared__ float sm[];
    float *ps = sm, *dss = sm + T, *ks = dss + T, *vs = ks + Dh, *ak = vs + Dh, *av = ak + Dh;
    int64_t j = blockIdx.x, b = blockIdx.z;
    int g = blockIdx.y, group = H / Hkv;
    int64_t HD = (int64_t)H * Dh, KVD = (int64_t)Hkv * Dh;
    int64_t koff = (b * T + j) * KVD + (int64_t)g * Dh;
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        ks[t] = ldv(k, kbf, koff + t);
        vs[t] = ldv(v, vbf, koff + t);
        ak[t] = 0.0f;
        av[t] = 0.0f;
    }
    __syncthreads();
    const int32_t *sb = seg ? seg + b * T : NULL;
    int32_t sj = sb ? sb[j] : 0;
    int64_t i0 = causal ? j : 0;
    for (int h = g * group; h < (g + 1) * group; h++) {
        int64_t bh = b * H + h;
        for (int64_t i = threadIdx.x; i < T; i += NT) {
            float p = 0.0f, d = 0.0f;
            if (i >= i0 && (!sb || sb[i] == sj)) {
                int64_t qo = (b * T + i) * HD + (int64_t)h * Dh;
                float a = 0.0f, dp = 0.0f;
                for (int64_t t = 0; t < Dh; t++) {
                    a += ldv(q, qbf, qo + t) * ks[t];
                    dp += ldv(dout, dobf, qo + t) * vs[t];
                }
                p = expf(scale * a - lse[bh * T + i]);
                d = p * (dp - delta[bh * T + i]);
            }
            ps[i] = p;
            dss[i] = d;
        }
        __syncthreads();
        for (int64_t t = threadIdx.x; t < Dh; t += NT) {
            float sk = ak[t], sv = av[t];
            for (int64_t i = i0; i < T; i++) {
                if (ps[i] == 0.0f) continue;
                int64_t qo = (b * T + i) * HD + (int64_t)h * Dh + t;
                sk += dss[i] * ldv(q, qbf, qo);
                sv += ps[i] * ldv(dout, dobf, qo);
            }
            ak[t] = sk, av[t] = sv;
        }
        __syncthreads(); // before the next head overwrites ps, dss
    }
    for (int64_t t = threadIdx.x; t < Dh; t += NT) {
        stv(dk, dkbf, koff + t, scale * ak[t]);
        stv(dv, dvbf, koff + t, av[t]);
    }
}

extern "C" void cuda_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                                              const tensor *k, const tensor *v, const tensor *out, const tensor *lse,
                                              int n_heads, int n_kv_heads, float scale, int causal,
                                              const tensor *seg) {
    int64_t B = q->shape[0], T = q->shape[1], Dh = q->shape[2] / n_heads;
    float *delta = (float *)nn_cuda_workspace((size_t)(B * n_heads * T) * sizeof(float));
    if (cuda_flash_tc_ok(q, k, v, dout, n_heads)) {
        cuda_flash_tc_backward(dq, dk, dv, dout, q, k, v, out, lse, n_heads, n_kv_heads, scale, causal, seg, delta);
        return;
    }
    const int32_t *sg = seg ? (const int32_t *)seg->data : NULL;
    size_t sh_rows = (size_t)(T + 2 * Dh) * sizeof(float), sh_cols = (size_t)(2 * T + 4 * Dh) * sizeof(float);
    shmem_limit((const void *)kt_flash_bwd_rows, sh_rows, "cuda flash attention backward", (long long)T);
    shmem_limit((const void *)kt_flash_bwd_cols, sh_cols, "cuda flash attention backward", (long long)T);
    kt_flash_bwd_rows<<<dim3((unsigned)T, (unsigned)n_heads, (unsigned)B), NT, sh_rows>>>(
        dq->data, isbf(dq), delta, dout->data, isbf(dout), out->data, isbf(out), q->data, isbf(q), k->data, isbf(k),
        v->data, isbf(v), (const float *)lse->data, sg, T, n_heads, n_heads / n_kv_heads, Dh, scale, causal);
    LAUNCH_CHECK();
    kt_flash_bwd_cols<<<dim3((unsigned)T, (unsigned)n_kv_heads, (unsigned)B), NT, sh_cols>>>(
        dk->data, isbf(dk), dv->data, isbf(dv), delta, dout->data, isbf(dout), q->data, isbf(q), k->data, isbf(k),
        v->data, isbf(v), (const float *)lse->data, sg, T, n_heads, n_kv_heads, Dh, scale, causal);
    LAUNCH_CHECK();
}
