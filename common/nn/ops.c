/* ops.c — argument checks and backend dispatch for the ops of ops.h. */
#include "nn/ops.h"

#include <stdarg.h>
#include <string.h>

#include "base/error.h"
#include "nn/backend.h"

#define HINT "this is a bug in the calling model code"

static void need(int cond, const char *op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void need(int cond, const char *op, const char *fmt, ...) {
    if (cond) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ASVR_FATAL(HINT, "%s: %s", op, msg);
}

static const char *shp(const tensor *t, char *buf) { return tensor_shape_str(t, buf, 96); }

/* Every non-NULL tensor on one device, float tensors in a dtype the device accepts, data set. */
static nn_device same_device(const char *op, int n, const tensor *const *ts) {
    const tensor *first = NULL;
    for (int i = 0; i < n; i++) {
        const tensor *t = ts[i];
        if (!t) continue;
        need(t->data != NULL, op, "tensor '%s' has no data (arena not committed?)", t->name);
        if (!first) first = t;
        need(t->device == first->device, op, "tensor '%s' is on %s but '%s' is on %s", t->name,
             nn_device_name(t->device), first->name, nn_device_name(first->device));
    }
    need(first != NULL, op, "no tensors");
#ifndef ASVR_HAVE_CUDA
    need(first->device == NN_CPU, op, "tensor '%s' is on cuda but this build has no CUDA backend",
         first->name);
#endif
    return first->device;
}

static void need_float(const char *op, const tensor *t) {
    if (!t) return;
    if (t->device == NN_CPU)
        need(t->dtype == NN_F32, op, "tensor '%s' is %s; the CPU backend computes in f32", t->name,
             nn_dtype_name(t->dtype));
    else
        need(t->dtype == NN_F32 || t->dtype == NN_BF16, op, "tensor '%s' is %s; want f32 or bf16",
             t->name, nn_dtype_name(t->dtype));
}

static void need_f32(const char *op, const tensor *t) {
    if (t) need(t->dtype == NN_F32, op, "tensor '%s' is %s; want f32", t->name, nn_dtype_name(t->dtype));
}

static void need_numel(const char *op, const tensor *t, int64_t n) {
    if (t)
        need(tensor_numel(t) == n, op, "tensor '%s' has %lld elements, want %lld", t->name,
             (long long)tensor_numel(t), (long long)n);
}

#ifdef ASVR_HAVE_CUDA
#define DISPATCH(dev, fn, ...)                                                                     \
    do {                                                                                           \
        if ((dev) == NN_CUDA) cuda_##fn(__VA_ARGS__);                                              \
        else cpu_##fn(__VA_ARGS__);                                                                \
    } while (0)
#else
#define DISPATCH(dev, fn, ...) ((void)(dev), cpu_##fn(__VA_ARGS__))
#endif

void op_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre) {
    const char *op = "op_matmul";
    const tensor *ts[] = {y, x, w, b, pre};
    nn_device dev = same_device(op, 5, ts);
    for (int i = 0; i < 5; i++) need_float(op, ts[i]);
    char s1[96], s2[96], s3[96];
    need(w->ndim == 2, op, "weight '%s' must be 2-d [out, in], is %s", w->name, shp(w, s1));
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    need(w->shape[1] == K, op, "x '%s' %s does not fit weight '%s' %s (want [out, %lld])", x->name,
         shp(x, s1), w->name, shp(w, s2), (long long)K);
    need(tensor_rows(y) == M && tensor_cols(y) == N, op, "y '%s' %s, want [%lld, %lld] from x %s, w %s",
         y->name, shp(y, s1), (long long)M, (long long)N, shp(x, s2), shp(w, s3));
    if (b) need_numel(op, b, N);
    if (pre) need(tensor_rows(pre) == M && tensor_cols(pre) == N, op, "pre '%s' %s, want [%lld, %lld]",
                  pre->name, shp(pre, s1), (long long)M, (long long)N);
    need(y->data != x->data, op, "y '%s' aliases x", y->name);
    DISPATCH(dev, matmul, y, x, w, b, act, pre);
}

void op_gelu(tensor *y, const tensor *x, nn_act act) {
    const char *op = "op_gelu";
    const tensor *ts[] = {y, x};
    nn_device dev = same_device(op, 2, ts);
    need_float(op, y);
    need_float(op, x);
    need(act == NN_ACT_GELU_TANH || act == NN_ACT_GELU_ERF, op, "activation %d is not a GELU", (int)act);
    need_numel(op, y, tensor_numel(x));
    DISPATCH(dev, gelu, y, x, act);
}

void op_add(tensor *y, const tensor *a, const tensor *b) {
    const char *op = "op_add";
    const tensor *ts[] = {y, a, b};
    nn_device dev = same_device(op, 3, ts);
    for (int i = 0; i < 3; i++) need_float(op, ts[i]);
    need_numel(op, a, tensor_numel(y));
    need_numel(op, b, tensor_numel(y));
    DISPATCH(dev, add, y, a, b);
}

void op_copy(tensor *y, const tensor *x) {
    const char *op = "op_copy";
    const tensor *ts[] = {y, x};
    nn_device dev = same_device(op, 2, ts);
    need(y->dtype == x->dtype, op, "'%s' is %s, '%s' is %s", y->name, nn_dtype_name(y->dtype), x->name,
         nn_dtype_name(x->dtype));
    need_numel(op, y, tensor_numel(x));
    DISPATCH(dev, copy, y, x);
}

void op_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                  tensor *mean, tensor *rstd) {
    const char *op = "op_layernorm";
    const tensor *ts[] = {y, x, w, b, mean, rstd};
    nn_device dev = same_device(op, 6, ts);
    for (int i = 0; i < 4; i++) need_float(op, ts[i]);
    need_f32(op, mean);
    need_f32(op, rstd);
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    need_numel(op, y, R * C);
    need_numel(op, w, C);
    need_numel(op, b, C);
    need_numel(op, mean, R);
    need_numel(op, rstd, R);
    need(eps > 0.0f, op, "eps %g must be > 0", (double)eps);
    DISPATCH(dev, layernorm, y, x, w, b, eps, mean, rstd);
}

void op_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd) {
    const char *op = "op_rmsnorm";
    const tensor *ts[] = {y, x, w, rstd};
    nn_device dev = same_device(op, 4, ts);
    for (int i = 0; i < 3; i++) need_float(op, ts[i]);
    need_f32(op, rstd);
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    need_numel(op, y, R * C);
    need_numel(op, w, C);
    need_numel(op, rstd, R);
    need(eps > 0.0f, op, "eps %g must be > 0", (double)eps);
    DISPATCH(dev, rmsnorm, y, x, w, eps, rstd);
}

void op_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                  int n_kv_heads, float scale, int causal, tensor *att) {
    const char *op = "op_attention";
    const tensor *ts[] = {out, q, k, v, att};
    nn_device dev = same_device(op, 5, ts);
    for (int i = 0; i < 4; i++) need_float(op, ts[i]);
    need_f32(op, att);
    char s1[96], s2[96];
    need(q->ndim == 3, op, "q '%s' must be [B, T, H*Dh], is %s", q->name, shp(q, s1));
    need(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, op,
         "%d query heads, %d kv heads: the first must be a multiple of the second", n_heads, n_kv_heads);
    int64_t B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    need(HD % n_heads == 0, op, "q width %lld is not a multiple of %d heads", (long long)HD, n_heads);
    int64_t Dh = HD / n_heads, KVD = Dh * n_kv_heads;
    need(tensor_same_shape(out, q), op, "out '%s' %s != q %s", out->name, shp(out, s1), shp(q, s2));
    need(k->ndim == 3 && k->shape[0] == B && k->shape[1] == T && k->shape[2] == KVD, op,
         "k '%s' %s, want [%lld, %lld, %lld]", k->name, shp(k, s1), (long long)B, (long long)T,
         (long long)KVD);
    need(tensor_same_shape(v, k), op, "v '%s' %s != k %s", v->name, shp(v, s1), shp(k, s2));
    need(att != NULL, op, "att (probabilities or scratch) is required");
    int64_t full = B * n_heads * T * T;
    need(tensor_numel(att) == full || tensor_numel(att) >= T * T, op,
         "att '%s' has %lld elements; want %lld (kept) or at least %lld (scratch)", att->name,
         (long long)tensor_numel(att), (long long)full, (long long)(T * T));
    need(out->data != q->data && out->data != k->data && out->data != v->data, op,
         "out '%s' aliases an input", out->name);
    DISPATCH(dev, attention, out, q, k, v, n_heads, n_kv_heads, scale, causal, att);
}

void op_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                    tensor *cols) {
    const char *op = "op_patch_embed";
    const tensor *ts[] = {y, img, w, b, cols};
    nn_device dev = same_device(op, 5, ts);
    for (int i = 0; i < 5; i++) need_float(op, ts[i]);
    char s1[96];
    need(img->ndim == 4, op, "img '%s' must be [B, Cin, H, W], is %s", img->name, shp(img, s1));
    need(patch > 0, op, "patch %d", patch);
    int64_t B = img->shape[0], Cin = img->shape[1], H = img->shape[2], W = img->shape[3];
    need(H >= patch && W >= patch, op, "image %lldx%lld is smaller than patch %d", (long long)H,
         (long long)W, patch);
    need(w->ndim == 4 && w->shape[1] == Cin && w->shape[2] == patch && w->shape[3] == patch, op,
         "weight '%s' %s, want [C, %lld, %d, %d]", w->name, shp(w, s1), (long long)Cin, patch, patch);
    int64_t C = w->shape[0], NP = (H / patch) * (W / patch);
    need(y->ndim == 3 && y->shape[0] == B && y->shape[1] == NP && y->shape[2] == C, op,
         "y '%s' %s, want [%lld, %lld, %lld]", y->name, shp(y, s1), (long long)B, (long long)NP,
         (long long)C);
    if (b) need_numel(op, b, C);
    need(cols && tensor_rows(cols) == B * NP && tensor_cols(cols) == Cin * patch * patch, op,
         "cols scratch must be [%lld, %lld]", (long long)(B * NP), (long long)(Cin * patch * patch));
    DISPATCH(dev, patch_embed, y, img, w, b, patch, cols);
}

void op_row_sqnorm(tensor *n, const tensor *c) {
    const char *op = "op_row_sqnorm";
    const tensor *ts[] = {n, c};
    nn_device dev = same_device(op, 2, ts);
    need_float(op, c);
    need_f32(op, n);
    need_numel(op, n, tensor_rows(c));
    DISPATCH(dev, row_sqnorm, n, c);
}

void op_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                int depth, tensor *dist) {
    const char *op = "op_vq_step";
    const tensor *ts[] = {residual, codebook, cnorm, codes, dist};
    nn_device dev = same_device(op, 5, ts);
    need_float(op, residual);
    need_float(op, codebook);
    need_f32(op, cnorm);
    need_f32(op, dist);
    char s1[96], s2[96];
    int64_t N = tensor_rows(residual), C = tensor_cols(residual);
    need(codebook->ndim == 2 && codebook->shape[1] == C, op, "codebook '%s' %s does not fit residual %s",
         codebook->name, shp(codebook, s1), shp(residual, s2));
    int64_t K = codebook->shape[0];
    need_numel(op, cnorm, K);
    need(codes->dtype == NN_U16 || codes->dtype == NN_I32, op, "codes '%s' must be u16 or i32",
         codes->name);
    need(codes->dtype != NN_U16 || K <= 65536, op, "%lld codes do not fit u16 codes", (long long)K);
    need(tensor_rows(codes) == N, op, "codes '%s' %s has %lld rows, residual has %lld", codes->name,
         shp(codes, s1), (long long)tensor_rows(codes), (long long)N);
    need(depth >= 0 && depth < tensor_cols(codes), op, "depth %d outside codes '%s' %s", depth,
         codes->name, shp(codes, s1));
    need(tensor_cols(dist) == K, op, "dist '%s' %s must be [R, %lld]", dist->name, shp(dist, s1),
         (long long)K);
    DISPATCH(dev, vq_step, residual, codebook, cnorm, codes, depth, dist);
}

void op_fill(tensor *t, float value) {
    const tensor *ts[] = {t};
    nn_device dev = same_device("op_fill", 1, ts);
    need_float("op_fill", t);
    DISPATCH(dev, fill, t, value);
}
