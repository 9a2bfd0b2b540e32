/* ops_attention.c — the CPU attention family (fp32): attention with the causal / segment mask keeping
 * its probabilities or through a one-head scratch (sgemm + row softmax), its backward from the kept
 * probabilities, flash-style attention and its backward (one query row at a time, the reference for the
 * CUDA kernels), and one query per row over a KV cache. Arguments were validated by ops.c. */
#include <cblas.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/cpu/cpu_common.h"

/* Whether query i may see key j: j <= i when causal, and the same segment when seg is given. */
static inline int visible(int64_t i, int64_t j, int causal, const int32_t *seg) {
    return (!causal || j <= i) && (!seg || seg[j] == seg[i]);
}

/* Row-wise softmax of s[T,T] in place over the visible keys; the others get probability 0.
 * seg: the T segment ids of this batch row, or NULL. Every row sees at least its own key. */
static void softmax_rows(float *s, int64_t T, int causal, const int32_t *seg) {
    for (int64_t i = 0; i < T; i++) {
        float *row = s + i * T;
        int64_t n = causal ? i + 1 : T;
        float mx = -FLT_MAX;
        for (int64_t j = 0; j < n; j++)
            if (visible(i, j, causal, seg) && row[j] > mx) mx = row[j];
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            row[j] = visible(i, j, causal, seg) ? expf(row[j] - mx) : 0.0f;
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) row[j] *= inv;
        for (int64_t j = n; j < T; j++) row[j] = 0.0f;
    }
}

void cpu_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads, int n_kv_heads,
                   float scale, int causal, const tensor *seg, tensor *att, nn_att_mode mode) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    int keep = mode == NN_ATT_KEEP;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *sb = seg ? (const int32_t *)seg->data + b * T : NULL;
        for (int h = 0; h < n_heads; h++) {
            const float *qh = F(q) + b * T * HD + h * Dh;
            const float *kh = F(k) + b * T * KVD + (h / group) * Dh;
            const float *vh = F(v) + b * T * KVD + (h / group) * Dh;
            float *oh = F(out) + b * T * HD + h * Dh;
            float *s = F(att) + (keep ? (b * n_heads + h) * T * T : 0);
            /* s = scale · q_h k_h^T; rows of q_h and k_h are strided by the full width. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, scale, qh,
                        (int)HD, kh, (int)KVD, 0.0f, s, (int)T);
            softmax_rows(s, T, causal, sb);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, s,
                        (int)T, vh, (int)KVD, 0.0f, oh, (int)HD);
        }
    }
}

void cpu_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                            const tensor *q, const tensor *k, const tensor *v, const tensor *att,
                            int n_heads, int n_kv_heads, float scale, tensor *scratch) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    memset(dk->data, 0, tensor_nbytes(dk)); /* query heads of a group add into one kv head */
    memset(dv->data, 0, tensor_nbytes(dv));
    float *ds = F(scratch);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < n_heads; h++) {
            int64_t qo = b * T * HD + h * Dh, ko = b * T * KVD + (h / group) * Dh;
            const float *P = F(att) + (b * n_heads + h) * T * T, *dO = F(dout) + qo;
            /* dV += P^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, P,
                        (int)T, dO, (int)HD, 1.0f, F(dv) + ko, (int)KVD);
            /* dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) in place */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, 1.0f, dO,
                        (int)HD, F(v) + ko, (int)KVD, 0.0f, ds, (int)T);
            for (int64_t i = 0; i < T; i++) {
                const float *pr = P + i * T;
                float *dr = ds + i * T;
                double dot = 0.0;
                for (int64_t j = 0; j < T; j++) dot += (double)pr[j] * dr[j];
                float dt = (float)dot;
                for (int64_t j = 0; j < T; j++) dr[j] = pr[j] * (dr[j] - dt);
            }
            /* dQ = scale dS K;  dK += scale dS^T Q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, scale, ds,
                        (int)T, F(k) + ko, (int)KVD, 0.0f, F(dq) + qo, (int)HD);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, scale, ds,
                        (int)T, F(q) + qo, (int)HD, 1.0f, F(dk) + ko, (int)KVD);
        }
}

/* Flash-style attention on the CPU: one query row at a time, its scores in a T-float buffer, never
 * the T x T matrix. The reference for the CUDA kernels; checked against op_attention_seg. */
static float flash_score(const float *qi, const float *kj, int64_t Dh, float scale) {
    float acc = 0.0f;
    for (int64_t t = 0; t < Dh; t++) acc += qi[t] * kj[t];
    return scale * acc;
}

void cpu_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                         int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    float *s = asvr_malloc((size_t)T * sizeof(float), "flash attention row");
    for (int64_t b = 0; b < B; b++) {
        const int32_t *sb = seg ? (const int32_t *)seg->data + b * T : NULL;
        for (int h = 0; h < n_heads; h++)
            for (int64_t i = 0; i < T; i++) {
                const float *qi = F(q) + (b * T + i) * HD + h * Dh;
                const float *kb = F(k) + b * T * KVD + (h / group) * Dh, *vb = F(v) + b * T * KVD + (h / group) * Dh;
                float mx = -FLT_MAX;
                for (int64_t j = 0; j < T; j++)
                    if (visible(i, j, causal, sb)) {
                        s[j] = flash_score(qi, kb + j * KVD, Dh, scale);
                        mx = s[j] > mx ? s[j] : mx;
                    }
                double sum = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    s[j] = visible(i, j, causal, sb) ? expf(s[j] - mx) : 0.0f;
                    sum += s[j];
                }
                float inv = (float)(1.0 / sum);
                float *oi = F(out) + (b * T + i) * HD + h * Dh;
                for (int64_t t = 0; t < Dh; t++) oi[t] = 0.0f;
                for (int64_t j = 0; j < T; j++) {
                    if (s[j] == 0.0f) continue;
                    float p = s[j] * inv;
                    for (int64_t t = 0; t < Dh; t++) oi[t] += p * vb[j * KVD + t];
                }
                F(lse)[(b * n_heads + h) * T + i] = (float)((double)mx + log(sum));
            }
    }
    free(s);
}

void cpu_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                                  const tensor *q, const tensor *k, const tensor *v,
                                  const tensor *out, const tensor *lse, int n_heads, int n_kv_heads,
                                  float scale, int causal, const tensor *seg) {
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    int group = n_heads / n_kv_heads;
    memset(dk->data, 0, tensor_nbytes(dk));
    memset(dv->data, 0, tensor_nbytes(dv));
    for (int64_t b = 0; b < B; b++) {
        const int32_t *sb = seg ? (const int32_t *)seg->data + b * T : NULL;
        for (int h = 0; h < n_heads; h++)
            for (int64_t i = 0; i < T; i++) {
                int64_t qo = (b * T + i) * HD + h * Dh, kvo = b * T * KVD + (h / group) * Dh;
                const float *qi = F(q) + qo, *doi = F(dout) + qo, *oi = F(out) + qo;
                float l = F(lse)[(b * n_heads + h) * T + i];
                double di = 0.0; /* rowsum(dO ⊙ O) = sum_j P_ij dP_ij */
                for (int64_t t = 0; t < Dh; t++) di += (double)doi[t] * oi[t];
                float *dqi = F(dq) + qo;
                for (int64_t t = 0; t < Dh; t++) dqi[t] = 0.0f;
                for (int64_t j = 0; j < T; j++) {
                    if (!visible(i, j, causal, sb)) continue;
                    const float *kj = F(k) + kvo + j * KVD, *vj = F(v) + kvo + j * KVD;
                    float p = expf(flash_score(qi, kj, Dh, scale) - l);
                    float dp = flash_score(doi, vj, Dh, 1.0f);
                    float d = p * (dp - (float)di);
                    float *dkj = F(dk) + kvo + j * KVD, *dvj = F(dv) + kvo + j * KVD;
                    for (int64_t t = 0; t < Dh; t++) {
                        dqi[t] += d * kj[t];
                        dkj[t] += scale * d * qi[t];
                        dvj[t] += p * doi[t];
                    }
                }
                for (int64_t t = 0; t < Dh; t++) dqi[t] *= scale;
            }
    }
}

void cpu_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens,
                          int n_heads, int n_kv_heads, float scale, tensor *scores) {
    int64_t B = k->shape[0], Tm = k->shape[1], KVD = k->shape[2];
    int64_t Dh = KVD / n_kv_heads, HD = Dh * n_heads;
    const int32_t *n = lens->data;
    int group = n_heads / n_kv_heads;
    for (int64_t b = 0; b < B; b++) {
        for (int h = 0; h < n_heads; h++) {
            float *s = F(scores) + (b * n_heads + h) * Tm;
            const float *qh = F(q) + b * HD + h * Dh;
            const float *kb = F(k) + b * Tm * KVD + (h / group) * Dh;
            const float *vb = F(v) + b * Tm * KVD + (h / group) * Dh;
            float *oh = F(out) + b * HD + h * Dh;
            float mx = -FLT_MAX;
            for (int64_t j = 0; j < n[b]; j++) {
                float d = 0.0f;
                for (int64_t e = 0; e < Dh; e++) d += qh[e] * kb[j * KVD + e];
                s[j] = scale * d;
                if (s[j] > mx) mx = s[j];
            }
            double sum = 0.0;
            for (int64_t j = 0; j < n[b]; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            float inv = (float)(1.0 / sum);
            for (int64_t e = 0; e < Dh; e++) oh[e] = 0.0f;
            for (int64_t j = 0; j < n[b]; j++) {
                float p = s[j] * inv;
                for (int64_t e = 0; e < Dh; e++) oh[e] += p * vb[j * KVD + e];
            }
        }
    }
}
