/* ops_extra.c — argument checks, dispatch and the CPU implementations of nn/ops_extra.h. */
#include "nn/ops_extra.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "base/error.h"
#include "nn/backend.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/ops_cuda.h"
#include "nn/cuda/ops_extra_cuda.h"
#endif

#define need nn_ops_need /* ops.c: exits naming the op when cond is false */

static void need_dtype(const char *op, const tensor *t, nn_dtype dt) {
    if (t)
        need(t->dtype == dt, op, "tensor '%s' is %s; want %s", t->name, nn_dtype_name(t->dtype), nn_dtype_name(dt));
}

static const char *shp(const tensor *t, char *buf) { return tensor_shape_str(t, buf, 96); }

/* ---- transfer --------------------------------------------------------------------------------- */

void op_transfer(tensor *dst, const tensor *src) {
    const char *op = "op_transfer";
    need(dst && src && dst->data && src->data, op, "dst and src need data");
    need(tensor_numel(dst) == tensor_numel(src), op, "'%s' has %lld elements, '%s' %lld", dst->name,
         (long long)tensor_numel(dst), src->name, (long long)tensor_numel(src));
    if (dst->device == NN_CPU && src->device == NN_CPU) {
        need(dst->dtype == src->dtype, op, "'%s' is %s, '%s' is %s", dst->name, nn_dtype_name(dst->dtype), src->name,
             nn_dtype_name(src->dtype));
        if (dst->data != src->data) memmove(dst->data, src->data, tensor_nbytes(src));
        return;
    }
#ifdef ASVR_HAVE_CUDA
    if (dst->dtype != src->dtype) {
        need(dst->device != src->device, op, "'%s' (%s) -> '%s' (%s) on one device: use op_copy", src->name,
             nn_dtype_name(src->dtype), dst->name, nn_dtype_name(dst->dtype));
        if (dst->device == NN_CUDA) nn_cuda_upload(dst, src); /* checks cpu f32 -> cuda bf16 */
        else nn_cuda_download(dst, src);
        return;
    }
    cuda_extra_transfer(dst, src);
#else
    need(0, op, "'%s' -> '%s' involves a cuda tensor but this build has no CUDA backend", src->name, dst->name);
#endif
}

int nn_device_from_name(const char *name, nn_device *dev, const char **why) {
    *why = NULL;
    if (name && !strcmp(name, "cpu")) {
        *dev = NN_CPU;
        return 0;
    }
    if (!name || strcmp(name, "cuda")) {
        *why = "--device must be cpu or cuda";
        return -1;
    }
#ifdef ASVR_HAVE_CUDA
    if (!nn_cuda_available()) {
        *why = "--device cuda: no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
        return -1;
    }
    *dev = NN_CUDA;
    return 0;
#else
    *why = "--device cuda: this build has no CUDA backend (rebuild with nvcc on PATH, or -DASVR_CUDA=ON)";
    return -1;
#endif
}

void nn_device_sync(nn_device dev) {
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) nn_cuda_sync();
#else
    (void)dev;
#endif
}

int nn_device_mem_used(nn_device dev, size_t *used, size_t *total) {
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) {
        nn_cuda_mem_used(used, total);
        return 1;
    }
#else
    (void)dev;
#endif
    *used = *total = 0;
    return 0;
}

void op_read_f32(const tensor *t, float *host) {
    tensor h = tensor_make(t->name, NN_F32, NN_CPU, t->ndim, t->shape, host);
    op_transfer(&h, t);
}

void op_write_f32(tensor *t, const float *host) {
    tensor h = tensor_make(t->name, NN_F32, NN_CPU, t->ndim, t->shape, (void *)host);
    op_transfer(t, &h);
}

/* ---- embedding that skips negative ids ---------------------------------------------------------- */

static void check_embed(const char *op, const tensor *rows, const tensor *ids, const tensor *table, const char *tname) {
    const tensor *ts[] = {rows, ids, table};
    nn_ops_same_device(op, 3, ts);
    need_dtype(op, rows, NN_F32);
    need_dtype(op, table, NN_F32);
    need_dtype(op, ids, NN_I32);
    char s1[96];
    need(table->ndim == 2, op, "%s '%s' must be [V, C], is %s", tname, table->name, shp(table, s1));
    need(tensor_rows(rows) == tensor_numel(ids) && tensor_cols(rows) == table->shape[1], op,
         "'%s' %s, want [%lld, %lld]", rows->name, shp(rows, s1), (long long)tensor_numel(ids),
         (long long)table->shape[1]);
    if (ids->device == NN_CPU) {
        const int32_t *p = ids->data;
        for (int64_t i = 0; i < tensor_numel(ids); i++)
            need(p[i] < table->shape[0], op, "id %d at %lld of '%s' is >= %lld rows", (int)p[i], (long long)i,
                 ids->name, (long long)table->shape[0]);
    }
}

void op_embedding_skip(tensor *y, const tensor *ids, const tensor *table) {
    check_embed("op_embedding_skip", y, ids, table, "table");
#ifdef ASVR_HAVE_CUDA
    if (y->device == NN_CUDA) {
        cuda_extra_embedding_skip(y, ids, table);
        return;
    }
#endif
    int64_t n = tensor_numel(ids), C = table->shape[1];
    const int32_t *id = ids->data;
    const float *tb = table->data;
    float *yd = y->data;
    for (int64_t i = 0; i < n; i++)
        if (id[i] >= 0) memcpy(yd + i * C, tb + (int64_t)id[i] * C, sizeof(float) * (size_t)C);
}

void op_embedding_skip_backward(tensor *dtable, const tensor *dy, const tensor *ids) {
    check_embed("op_embedding_skip_backward", dy, ids, dtable, "dtable");
#ifdef ASVR_HAVE_CUDA
    if (dy->device == NN_CUDA) {
        cuda_extra_embedding_skip_backward(dtable, dy, ids);
        return;
    }
#endif
    int64_t n = tensor_numel(ids), C = dtable->shape[1];
    const int32_t *id = ids->data;
    const float *g = dy->data;
    float *tb = dtable->data;
    for (int64_t i = 0; i < n; i++) {
        if (id[i] < 0) continue;
        float *row = tb + (int64_t)id[i] * C;
        const float *gr = g + i * C;
        for (int64_t c = 0; c < C; c++) row[c] += gr[c];
    }
}

/* ---- attention of one query over a cache ------------------------------------------------------- */

void op_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens,
                         int n_heads, int n_kv_heads, float scale, tensor *scores) {
    const char *op = "op_attention_decode";
    const tensor *ts[] = {out, q, k, v, lens, scores};
    nn_device dev = nn_ops_same_device(op, 6, ts);
    for (int i = 0; i < 6; i++)
        if (i != 4) need_dtype(op, ts[i], NN_F32);
    need_dtype(op, lens, NN_I32);
    char s1[96], s2[96];
    need(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, op,
         "%d query heads, %d kv heads: the first must be a multiple of the second", n_heads, n_kv_heads);
    need(k->ndim == 3 && tensor_same_shape(k, v), op, "k '%s' %s and v %s must be one [B, T_max, Hkv*Dh]", k->name,
         shp(k, s1), shp(v, s2));
    int64_t B = k->shape[0], Tm = k->shape[1], KVD = k->shape[2];
    need(KVD % n_kv_heads == 0, op, "k width %lld is not a multiple of %d kv heads", (long long)KVD, n_kv_heads);
    int64_t Dh = KVD / n_kv_heads, HD = Dh * n_heads;
    need(tensor_rows(q) == B && tensor_cols(q) == HD && (q->ndim == 2 || (q->ndim == 3 && q->shape[1] == 1)), op,
         "q '%s' %s, want [%lld, 1, %lld]", q->name, shp(q, s1), (long long)B, (long long)HD);
    need(tensor_same_shape(out, q), op, "out '%s' %s != q %s", out->name, shp(out, s1), shp(q, s2));
    need(tensor_numel(lens) == B, op, "lens '%s' has %lld elements, want %lld", lens->name,
         (long long)tensor_numel(lens), (long long)B);
    need(tensor_numel(scores) >= B * n_heads * Tm, op, "scores '%s' has %lld elements, want at least %lld",
         scores->name, (long long)tensor_numel(scores), (long long)(B * n_heads * Tm));
    need(out->data != q->data && out->data != k->data && out->data != v->data, op, "out '%s' aliases an input",
         out->name);
    if (dev == NN_CPU) {
        const int32_t *n = lens->data;
        for (int64_t b = 0; b < B; b++)
            need(n[b] >= 1 && n[b] <= Tm, op, "row %lld attends over %d positions, want 1..%lld", (long long)b,
                 (int)n[b], (long long)Tm);
    }
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) {
        cuda_extra_attention_decode(out, q, k, v, lens, n_heads, n_kv_heads, scale, scores);
        return;
    }
#endif
    const int32_t *n = lens->data;
    int group = n_heads / n_kv_heads;
    for (int64_t b = 0; b < B; b++) {
        for (int h = 0; h < n_heads; h++) {
            float *s = (float *)scores->data + (b * n_heads + h) * Tm;
            const float *qh = (const float *)q->data + b * HD + h * Dh;
            const float *kb = (const float *)k->data + b * Tm * KVD + (h / group) * Dh;
            const float *vb = (const float *)v->data + b * Tm * KVD + (h / group) * Dh;
            float *oh = (float *)out->data + b * HD + h * Dh;
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

/* ---- argmax ------------------------------------------------------------------------------------ */

void op_argmax_rows(tensor *idx, const tensor *x) {
    const char *op = "op_argmax_rows";
    const tensor *ts[] = {idx, x};
    nn_device dev = nn_ops_same_device(op, 2, ts);
    need_dtype(op, idx, NN_I32);
    if (dev == NN_CPU || x->dtype != NN_BF16) need_dtype(op, x, NN_F32); /* CUDA also reads bf16 rows */
    int64_t M = tensor_rows(x), N = tensor_cols(x);
    need(tensor_numel(idx) == M, op, "idx '%s' has %lld elements, x '%s' has %lld rows", idx->name,
         (long long)tensor_numel(idx), x->name, (long long)M);
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) {
        cuda_extra_argmax_rows(idx, x);
        return;
    }
#endif
    (void)dev;
    int32_t *out = idx->data;
    for (int64_t m = 0; m < M; m++) {
        const float *row = (const float *)x->data + m * N;
        int64_t best = -1;
        for (int64_t i = 0; i < N; i++)
            if (row[i] == row[i] && (best < 0 || row[i] > row[best])) best = i;
        out[m] = best < 0 ? 0 : (int32_t)best;
    }
}
