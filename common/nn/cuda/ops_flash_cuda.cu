// ops_flash_cuda.cu — tensor-core flash attention for bf16 q, k, v (and bf16 dout in the backward):
// the fast path behind cuda_flash_attention / cuda_flash_attention_backward (ops_train_cuda.cu
// dispatches here when cuda_flash_tc_ok() says so and keeps its scalar kernels for everything else).
// Contract: that of op_flash_attention(_backward) in nn/ops.h — causal (key j <= query i), packed
// segments (seg ids equal; seg may be NULL), GQA (query head h reads kv head h / (H / Hkv)); lse
// [B,H,T] f32 is the log-sum-exp of each query's scaled visible scores. Outputs may be f32 or bf16.
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

#include "nn/cuda/cuda_common.cuh" // cuda_bf16.h before mma.h: its bf16 fragments need the type
#include "nn/cuda/ops_flash_cuda.h"

#include <mma.h>

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

struct fa_fwd_sm {
    bf16 *Qs, *Ks, *Vs, *Pb;
    float *S, *Os, *rm, *rl;
    int *qseg, *kseg;
};
static __host__ __device__ inline size_t fa_fwd_layout(void *base, int Dh, fa_fwd_sm *m) {
    fa_carver c = {(char *)base, 0};
    const int LDH = Dh + 8, LDO = Dh + 4;
    m->Qs = FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH));
    m->Ks = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->Vs = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->S = FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS));
    m->Pb = FA_TAKE(c, bf16, fa_bh(FA_BQ, FA_LDP));
    m->Os = FA_TAKE(c, float, fa_bf(FA_BQ, LDO));
    m->rm = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->rl = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->qseg = FA_TAKE(c, int, fa_bf(FA_BQ, 1));
    m->kseg = FA_TAKE(c, int, fa_bf(FA_BK, 1));
    return c.n;
}

struct fa_bwd_q_sm {
    bf16 *Qs, *dOs, *Ks, *Vs, *dSb;
    float *S, *dP, *dQa, *lse_s, *dl_s;
    int *qseg, *kseg;
};
static __host__ __device__ inline size_t fa_bwd_q_layout(void *base, int Dh, fa_bwd_q_sm *m) {
    fa_carver c = {(char *)base, 0};
    const int LDH = Dh + 8, LDO = Dh + 4;
    m->Qs = FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH));
    m->dOs = FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH));
    m->Ks = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->Vs = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->S = FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS));
    m->dP = FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS));
    m->dSb = FA_TAKE(c, bf16, fa_bh(FA_BQ, FA_LDP));
    m->dQa = FA_TAKE(c, float, fa_bf(FA_BQ, LDO));
    m->lse_s = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->dl_s = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->qseg = FA_TAKE(c, int, fa_bf(FA_BQ, 1));
    m->kseg = FA_TAKE(c, int, fa_bf(FA_BK, 1));
    return c.n;
}

struct fa_bwd_kv_sm {
    bf16 *Qs, *dOs, *Ks, *Vs, *Pb, *dSb;
    float *S, *dP, *dKa, *dVa, *lse_s, *dl_s;
    int *qseg, *kseg;
};
static __host__ __device__ inline size_t fa_bwd_kv_layout(void *base, int Dh, fa_bwd_kv_sm *m) {
    fa_carver c = {(char *)base, 0};
    const int LDH = Dh + 8, LDO = Dh + 4;
    m->Qs = FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH));
    m->dOs = FA_TAKE(c, bf16, fa_bh(FA_BQ, LDH));
    m->Ks = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->Vs = FA_TAKE(c, bf16, fa_bh(FA_BK, LDH));
    m->S = FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS));
    m->dP = FA_TAKE(c, float, fa_bf(FA_BQ, FA_LDS));
    m->Pb = FA_TAKE(c, bf16, fa_bh(FA_BQ, FA_LDP));
    m->dSb = FA_TAKE(c, bf16, fa_bh(FA_BQ, FA_LDP));
    m->dKa = FA_TAKE(c, float, fa_bf(FA_BK, LDO));
    m->dVa = FA_TAKE(c, float, fa_bf(FA_BK, LDO));
    m->lse_s = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
    m->dl_s = FA_TAKE(c, float, fa_bf(FA_BQ, 1));
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

// ---- forward ---------------------------------------------------------------------------------------
__global__ void kt_fa_fwd(void *out, int obf, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          const int32_t *seg, int T, int H, int group, int Dh, float scale, int causal) {
    extern __shared__ float fa_sm[];
    const int LDH = Dh + 8, LDO = Dh + 4;
    fa_fwd_sm m;
    fa_fwd_layout(fa_sm, Dh, &m);
    bf16 *Qs = m.Qs, *Ks = m.Ks, *Vs = m.Vs, *Pb = m.Pb;
    float *S = m.S, *Os = m.Os, *rm = m.rm, *rl = m.rl;
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

// ---- backward --------------------------------------------------------------------------------------
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
    extern __shared__ float fa_sm[];
    const int LDH = Dh + 8, LDO = Dh + 4;
    fa_bwd_q_sm m;
    fa_bwd_q_layout(fa_sm, Dh, &m);
    bf16 *Qs = m.Qs, *dOs = m.dOs, *Ks = m.Ks, *Vs = m.Vs, *dSb = m.dSb;
    float *S = m.S, *dP = m.dP, *dQa = m.dQa, *lse_s = m.lse_s, *dl_s = m.dl_s;
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
    extern __shared__ float fa_sm[];
    const int LDH = Dh + 8, LDO = Dh + 4;
    fa_bwd_kv_sm m;
    fa_bwd_kv_layout(fa_sm, Dh, &m);
    bf16 *Qs = m.Qs, *dOs = m.dOs, *Ks = m.Ks, *Vs = m.Vs, *Pb = m.Pb, *dSb = m.dSb;
    float *S = m.S, *dP = m.dP, *dKa = m.dKa, *dVa = m.dVa, *lse_s = m.lse_s, *dl_s = m.dl_s;
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

// ---- host ------------------------------------------------------------------------------------------
static void fa_shmem(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

extern "C" int cuda_flash_tc_ok(const tensor *q, const tensor *k, const tensor *v, const tensor *dout, int n_heads) {
    int64_t Dh = q->shape[2] / n_heads;
    return isbf(q) && isbf(k) && isbf(v) && (!dout || isbf(dout)) && Dh % 16 == 0 && Dh >= 16 &&
           Dh <= FA_MAX_DH && q->shape[1] <= INT32_MAX - FA_BQ;
}

extern "C" void cuda_flash_tc_forward(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                                      int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    int B = (int)q->shape[0], T = (int)q->shape[1], Dh = (int)(q->shape[2] / n_heads);
    fa_fwd_sm lay;
    size_t sh = fa_fwd_layout(NULL, Dh, &lay);
    fa_shmem((const void *)kt_fa_fwd, sh);
    dim3 grid((unsigned)((T + FA_BQ - 1) / FA_BQ), (unsigned)n_heads, (unsigned)B);
    kt_fa_fwd<<<grid, FA_THREADS, sh>>>(out->data, isbf(out), (float *)lse->data, (const bf16 *)q->data,
                                        (const bf16 *)k->data, (const bf16 *)v->data,
                                        seg ? (const int32_t *)seg->data : NULL, T, n_heads, n_heads / n_kv_heads, Dh,
                                        scale, causal);
    CHECK_CUDA(cudaGetLastError());
}

extern "C" void cuda_flash_tc_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                                       const tensor *k, const tensor *v, const tensor *out, const tensor *lse,
                                       int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg,
                                       float *delta) {
    int B = (int)q->shape[0], T = (int)q->shape[1], Dh = (int)(q->shape[2] / n_heads), group = n_heads / n_kv_heads;
    const int32_t *sg = seg ? (const int32_t *)seg->data : NULL;
    int64_t rows = (int64_t)B * T * n_heads, per = FA_THREADS / 32;
    kt_fa_bwd_delta<<<(unsigned)((rows + per - 1) / per), FA_THREADS>>>(delta, (const bf16 *)dout->data, out->data,
                                                                        isbf(out), rows, T, n_heads, Dh);
    CHECK_CUDA(cudaGetLastError());
    fa_bwd_q_sm lq;
    fa_bwd_kv_sm lkv;
    size_t shq = fa_bwd_q_layout(NULL, Dh, &lq), shkv = fa_bwd_kv_layout(NULL, Dh, &lkv);
    fa_shmem((const void *)kt_fa_bwd_q, shq);
    fa_shmem((const void *)kt_fa_bwd_kv, shkv);
    unsigned nt = (unsigned)((T + FA_BQ - 1) / FA_BQ);
    kt_fa_bwd_q<<<dim3(nt, (unsigned)n_heads, (unsigned)B), FA_THREADS, shq>>>(
        dq->data, isbf(dq), delta, (const bf16 *)dout->data, (const bf16 *)q->data, (const bf16 *)k->data,
        (const bf16 *)v->data, (const float *)lse->data, sg, T, n_heads, group, Dh, scale, causal);
    CHECK_CUDA(cudaGetLastError());
    kt_fa_bwd_kv<<<dim3((unsigned)((T + FA_BK - 1) / FA_BK), (unsigned)n_kv_heads, (unsigned)B), FA_THREADS, shkv>>>(
        dk->data, isbf(dk), dv->data, isbf(dv), delta, (const bf16 *)dout->data, (const bf16 *)q->data,
        (const bf16 *)k->data, (const bf16 *)v->data, (const float *)lse->data, sg, T, n_heads, group, Dh, scale,
        causal);
    CHECK_CUDA(cudaGetLastError());
}
