/* ops.c — argument checks and backend dispatch for the ops of ops.h (through the entries of
 * ops_list.h), and the device helpers: transfers, device names, synchronisation, host memory. */
#include "nn/ops.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "nn/backend.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

#define HINT "this is a bug in the calling model code"

#define need nn_ops_need
void nn_ops_need(int cond, const char *op, const char *fmt, ...) {
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
nn_device nn_ops_same_device(const char *op, int n, const tensor *const *ts) {
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

static void need_dtype(const char *op, const tensor *t, nn_dtype dt) {
    if (t)
        need(t->dtype == dt, op, "tensor '%s' is %s; want %s", t->name, nn_dtype_name(t->dtype), nn_dtype_name(dt));
}

static void need_f32(const char *op, const tensor *t) { need_dtype(op, t, NN_F32); }
static void need_i32(const char *op, const tensor *t) { need_dtype(op, t, NN_I32); }

static void need_numel(const char *op, const tensor *t, int64_t n) {
    if (t)
        need(tensor_numel(t) == n, op, "tensor '%s' has %lld elements, want %lld", t->name,
             (long long)tensor_numel(t), (long long)n);
}

static void need_act(const char *op, nn_act act) {
    need(act == NN_ACT_NONE || act == NN_ACT_GELU_TANH || act == NN_ACT_GELU_ERF, op,
         "unknown activation %d", (int)act);
}

/* nn_run_<name>(dev, parameters...): the entry <name> of ops_list.h on dev's backend. */
#ifdef ASVR_HAVE_CUDA
#define NN_DISPATCHER(name, params, args)                                                          \
    static void nn_run_##name(nn_device dev_, NN_OP_PARAMS params) {                               \
        if (dev_ == NN_CUDA) cuda_##name args;                                                     \
        else cpu_##name args;                                                                      \
    }
#else
#define NN_DISPATCHER(name, params, args)                                                          \
    static void nn_run_##name(nn_device dev_, NN_OP_PARAMS params) {                               \
        (void)dev_;                                                                                \
        cpu_##name args;                                                                           \
    }
#endif
NN_BACKEND_OPS(NN_DISPATCHER)
#undef NN_DISPATCHER

/* Values only the device holds (ids, targets) are checked by the CUDA kernels into an error record;
 * this reads it (a synchronisation) and exits naming op if a kernel set it. Nothing to do on the CPU,
 * where the front ends check such values before dispatching. */
static void device_errors(nn_device dev, const char *op) {
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) nn_cuda_check_errors(op);
#else
    (void)dev, (void)op;
#endif
}

/* ---- elementwise ------------------------------------------------------------------------------ */

/* y and x of one numel, float tensors on one device (op_gelu, op_silu). */
static nn_device check_unary(const char *op, const tensor *y, const tensor *x) {
    const tensor *ts[] = {y, x};
    nn_device dev = nn_ops_same_device(op, 2, ts);
    need_float(op, y);
    need_float(op, x);
    need_numel(op, y, tensor_numel(x));
    return dev;
}

void op_gelu(tensor *y, const tensor *x, nn_act act) {
    nn_device dev = check_unary("op_gelu", y, x);
    need(act == NN_ACT_GELU_TANH || act == NN_ACT_GELU_ERF, "op_gelu", "activation %d is not a GELU", (int)act);
    nn_run_gelu(dev, y, x, act);
}

void op_gelu_backward(tensor *dx, const tensor *dy, const tensor *x, nn_act act, int accumulate) {
    const char *op = "op_gelu_backward";
    const tensor *ts[] = {dx, dy, x};
    nn_device dev = nn_ops_same_device(op, 3, ts);
    for (int i = 0; i < 3; i++) need_float(op, ts[i]);
    need(act == NN_ACT_GELU_TANH || act == NN_ACT_GELU_ERF, op, "activation %d is not a GELU", (int)act);
    need_numel(op, dy, tensor_numel(x));
    need_numel(op, dx, tensor_numel(x));
    need(!accumulate || dx->data != dy->data, op, "dx '%s' aliases dy while accumulating", dx->name);
    nn_run_gelu_backward(dev, dx, dy, x, act, accumulate);
}

/* y and two inputs of y's numel, all float tensors on one device (op_add, op_swiglu). */
static nn_device check_binary(const char *op, const tensor *y, const tensor *a, const tensor *b) {
    const tensor *ts[] = {y, a, b};
    nn_device dev = nn_ops_same_device(op, 3, ts);
    for (int i = 0; i < 3; i++) need_float(op, ts[i]);
    need_numel(op, a, tensor_numel(y));
    need_numel(op, b, tensor_numel(y));
    return dev;
}

void op_add(tensor *y, const tensor *a, const tensor *b) { nn_run_add(check_binary("op_add", y, a, b), y, a, b); }

void op_copy(tensor *y, const tensor *x) {
    const char *op = "op_copy";
    const tensor *ts[] = {y, x};
    nn_device dev = nn_ops_same_device(op, 2, ts);
    int convert = dev == NN_CUDA && y->dtype != x->dtype;
    if (convert) { /* f32 <-> bf16 on the device */
        need_float(op, y);
        need_float(op, x);
        need(y->data != x->data, op, "converting '%s' to %s in place", x->name, nn_dtype_name(y->dtype));
    } else {
        need(y->dtype == x->dtype, op, "'%s' is %s, '%s' is %s", y->name, nn_dtype_name(y->dtype), x->name,
             nn_dtype_name(x->dtype));
    }
    need_numel(op, y, tensor_numel(x));
    nn_run_copy(dev, y, x);
}

void op_fill(tensor *t, float value) {
    const tensor *ts[] = {t};
    nn_device dev = nn_ops_same_device("op_fill", 1, ts);
    need_float("op_fill", t);
    nn_run_fill(dev, t, value);
}

void op_swiglu(tensor *y, const tensor *gate, const tensor *up) {
    nn_run_swiglu(check_binary("op_swiglu", y, gate, up), y, gate, up);
}

void op_swiglu_backward(tensor *dgate, tensor *dup, const tensor *dy, const tensor *gate,
                        const tensor *up) {
    const char *op = "op_swiglu_backward";
    const tensor *ts[] = {dgate, dup, dy, gate, up};
    nn_device dev = nn_ops_same_device(op, 5, ts);
    for (int i = 0; i < 5; i++) need_float(op, ts[i]);
    int64_t n = tensor_numel(dy);
    need_numel(op, dgate, n);
    need_numel(op, dup, n);
    need_numel(op, gate, n);
    need_numel(op, up, n);
    need(dgate->data != dup->data, op, "dgate and dup alias each other");
    for (int i = 0; i < 2; i++) {
        const tensor *o = i ? dup : dgate;
        need(o->data != gate->data && o->data != up->data, op, "'%s' aliases gate or up", o->name);
    }
    nn_run_swiglu_backward(dev, dgate, dup, dy, gate, up);
}

/* Two float tensors and an i32 index tensor on one device (RoPE positions, lookups, row gathers). */
static nn_device check_indexed(const char *op, const tensor *a, const tensor *b, const tensor *idx) {
    const tensor *ts[] = {a, b, idx};
    nn_device dev = nn_ops_same_device(op, 3, ts);
    need_float(op, a);
    need_float(op, b);
    need_i32(op, idx);
    return dev;
}

static nn_device check_rope(const char *op, const tensor *y, const tensor *x, const tensor *pos,
                             int n_heads, float theta) {
    nn_device dev = check_indexed(op, y, x, pos);
    char s1[96];
    need(x->ndim == 3, op, "'%s' must be [B, T, H*Dh], is %s", x->name, shp(x, s1));
    need(n_heads > 0 && x->shape[2] % n_heads == 0, op, "width %lld is not a multiple of %d heads",
         (long long)x->shape[2], n_heads);
    need((x->shape[2] / n_heads) % 2 == 0, op, "head dim %lld must be even",
         (long long)(x->shape[2] / n_heads));
    need(tensor_same_shape(y, x), op, "'%s' %s != '%s'", y->name, shp(y, s1), x->name);
    need(tensor_numel(pos) == x->shape[0] * x->shape[1], op, "positions '%s' %s, want [%lld, %lld]",
         pos->name, shp(pos, s1), (long long)x->shape[0], (long long)x->shape[1]);
    need(theta > 0.0f, op, "theta %g must be > 0", (double)theta);
    if (dev != NN_CPU) return dev; /* device positions: the kernel records a negative one */
    const int32_t *p = (const int32_t *)pos->data;
    for (int64_t i = 0; i < tensor_numel(pos); i++)
        need(p[i] >= 0, op, "position %lld is %d; positions are >= 0", (long long)i, (int)p[i]);
    return dev;
}

void op_rope(tensor *y, const tensor *x, const tensor *pos, int n_heads, float theta) {
    nn_device dev = check_rope("op_rope", y, x, pos, n_heads, theta);
    nn_run_rope(dev, y, x, pos, n_heads, theta, 0);
}

void op_rope_backward(tensor *dx, const tensor *dy, const tensor *pos, int n_heads, float theta) {
    nn_device dev = check_rope("op_rope_backward", dx, dy, pos, n_heads, theta);
    nn_run_rope(dev, dx, dy, pos, n_heads, theta, 1);
}

/* ---- matmul ----------------------------------------------------------------------------------- */

void op_matmul(tensor *y, const tensor *x, const tensor *w, const tensor *b, nn_act act, tensor *pre) {
    const char *op = "op_matmul";
    const tensor *ts[] = {y, x, w, b, pre};
    nn_device dev = nn_ops_same_device(op, 5, ts);
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
    nn_run_matmul(dev, y, x, w, b, act, pre);
}

void op_matmul_backward(tensor *dx, tensor *dw, tensor *db, tensor *dy, const tensor *x,
                        const tensor *w, nn_act act, const tensor *pre, int accumulate_dx) {
    const char *op = "op_matmul_backward";
    const tensor *ts[] = {dx, dw, db, dy, x, w, pre};
    nn_device dev = nn_ops_same_device(op, 7, ts);
    for (int i = 0; i < 7; i++) need_float(op, ts[i]);
    need_act(op, act);
    char s1[96], s2[96];
    need(w->ndim == 2, op, "weight '%s' must be 2-d [out, in], is %s", w->name, shp(w, s1));
    int64_t M = tensor_rows(x), K = tensor_cols(x), N = w->shape[0];
    need(w->shape[1] == K, op, "x '%s' %s does not fit weight '%s' %s", x->name, shp(x, s1), w->name,
         shp(w, s2));
    need(tensor_rows(dy) == M && tensor_cols(dy) == N, op, "dy '%s' %s, want [%lld, %lld]", dy->name,
         shp(dy, s1), (long long)M, (long long)N);
    if (dx) need(tensor_rows(dx) == M && tensor_cols(dx) == K, op, "dx '%s' %s, want [%lld, %lld]",
                 dx->name, shp(dx, s1), (long long)M, (long long)K);
    if (dw) need(tensor_same_shape(dw, w), op, "dw '%s' %s != w %s", dw->name, shp(dw, s1), shp(w, s2));
    need_numel(op, db, N);
    if (act != NN_ACT_NONE) {
        need(pre != NULL, op, "activation %d needs the saved pre-activation", (int)act);
        need(tensor_rows(pre) == M && tensor_cols(pre) == N, op, "pre '%s' %s, want [%lld, %lld]",
             pre->name, shp(pre, s1), (long long)M, (long long)N);
    }
    if (dx) need(dx->data != dy->data && dx->data != x->data && dx->data != w->data, op,
                 "dx '%s' aliases dy, x or w", dx->name);
    nn_run_matmul_backward(dev, dx, dw, db, dy, x, w, act, pre, accumulate_dx);
}

/* x [G,M,K], w [G,N,K] -> G, M, K, N; t (if given) must be [G, rows, cols]. */
static void batched_shape(const char *op, const tensor *t, int64_t G, int64_t rows, int64_t cols,
                          const char *what) {
    char s1[96];
    if (t)
        need(t->ndim == 3 && t->shape[0] == G && t->shape[1] == rows && t->shape[2] == cols, op,
             "%s '%s' %s, want [%lld, %lld, %lld]", what, t->name, shp(t, s1), (long long)G,
             (long long)rows, (long long)cols);
}

static void batched_check(const char *op, const tensor *x, const tensor *w) {
    char s1[96], s2[96];
    need(x->ndim == 3, op, "x '%s' must be 3-d [groups, rows, in], is %s", x->name, shp(x, s1));
    need(w->ndim == 3, op, "weight '%s' must be 3-d [groups, out, in], is %s", w->name, shp(w, s1));
    need(w->shape[0] == x->shape[0] && w->shape[2] == x->shape[2], op,
         "x '%s' %s does not fit weight '%s' %s (want [%lld, out, %lld])", x->name, shp(x, s1), w->name,
         shp(w, s2), (long long)x->shape[0], (long long)x->shape[2]);
}

void op_matmul_batched(tensor *y, const tensor *x, const tensor *w, nn_act act, tensor *pre) {
    const char *op = "op_matmul_batched";
    const tensor *ts[] = {y, x, w, pre};
    nn_device dev = nn_ops_same_device(op, 4, ts);
    need(y != NULL && x != NULL && w != NULL, op, "y, x and w are required");
    for (int i = 0; i < 4; i++) need_float(op, ts[i]);
    need_act(op, act);
    batched_check(op, x, w);
    int64_t G = x->shape[0], M = x->shape[1], N = w->shape[1];
    batched_shape(op, y, G, M, N, "y");
    batched_shape(op, pre, G, M, N, "pre");
    need(y->data != x->data, op, "y '%s' aliases x", y->name);
    need(!pre || pre->data != y->data, op, "pre '%s' aliases y", pre ? pre->name : "");
    nn_run_matmul_batched(dev, y, x, w, act, pre);
}

void op_matmul_batched_backward(tensor *dx, tensor *dw, tensor *dy, const tensor *x, const tensor *w,
                                nn_act act, const tensor *pre, int accumulate_dx) {
    const char *op = "op_matmul_batched_backward";
    const tensor *ts[] = {dx, dw, dy, x, w, pre};
    nn_device dev = nn_ops_same_device(op, 6, ts);
    need(dy != NULL && x != NULL && w != NULL, op, "dy, x and w are required");
    for (int i = 0; i < 6; i++) need_float(op, ts[i]);
    need_act(op, act);
    batched_check(op, x, w);
    int64_t G = x->shape[0], M = x->shape[1], K = x->shape[2], N = w->shape[1];
    batched_shape(op, dy, G, M, N, "dy");
    batched_shape(op, dx, G, M, K, "dx");
    batched_shape(op, dw, G, N, K, "dw");
    if (act != NN_ACT_NONE) {
        need(pre != NULL, op, "activation %d needs the saved pre-activation", (int)act);
        batched_shape(op, pre, G, M, N, "pre");
    }
    if (dx) need(dx->data != dy->data && dx->data != x->data && dx->data != w->data, op,
                 "dx '%s' aliases dy, x or w", dx->name);
    nn_run_matmul_batched_backward(dev, dx, dw, dy, x, w, act, pre, accumulate_dx);
}

/* ---- norms ------------------------------------------------------------------------------------ */

void op_layernorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, float eps,
                  tensor *mean, tensor *rstd) {
    const char *op = "op_layernorm";
    const tensor *ts[] = {y, x, w, b, mean, rstd};
    nn_device dev = nn_ops_same_device(op, 6, ts);
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
    nn_run_layernorm(dev, y, x, w, b, eps, mean, rstd);
}

void op_rmsnorm(tensor *y, const tensor *x, const tensor *w, float eps, tensor *rstd) {
    const char *op = "op_rmsnorm";
    const tensor *ts[] = {y, x, w, rstd};
    nn_device dev = nn_ops_same_device(op, 4, ts);
    for (int i = 0; i < 3; i++) need_float(op, ts[i]);
    need_f32(op, rstd);
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    need_numel(op, y, R * C);
    need_numel(op, w, C);
    need_numel(op, rstd, R);
    need(eps > 0.0f, op, "eps %g must be > 0", (double)eps);
    nn_run_rmsnorm(dev, y, x, w, eps, rstd);
}

void op_rmsnorm_backward(tensor *dx, tensor *dw, const tensor *dy, const tensor *x, const tensor *w,
                         const tensor *rstd, int accumulate_dx) {
    const char *op = "op_rmsnorm_backward";
    const tensor *ts[] = {dx, dw, dy, x, w, rstd};
    nn_device dev = nn_ops_same_device(op, 6, ts);
    for (int i = 0; i < 5; i++) need_float(op, ts[i]);
    need_f32(op, rstd);
    need(dx != NULL && rstd != NULL, op, "dx and rstd are required");
    int64_t C = tensor_cols(x), R = tensor_rows(x);
    need_numel(op, dx, R * C);
    need_numel(op, dy, R * C);
    need_numel(op, w, C);
    need_numel(op, dw, C);
    need_numel(op, rstd, R);
    need(dx->data != x->data, op, "dx '%s' aliases x", dx->name);
    need(!accumulate_dx || dx->data != dy->data, op, "dx '%s' aliases dy while accumulating", dx->name);
    nn_run_rmsnorm_backward(dev, dx, dw, dy, x, w, rstd, accumulate_dx);
}

void op_add_rmsnorm(tensor *r, tensor *y, const tensor *a, const tensor *b, const tensor *w, float eps,
                    tensor *rstd) {
    const char *op = "op_add_rmsnorm";
    const tensor *ts[] = {r, y, a, b, w, rstd};
    nn_device dev = nn_ops_same_device(op, 6, ts);
    need(r != NULL && y != NULL && a != NULL && b != NULL && w != NULL, op, "r, y, a, b and w are required");
    for (int i = 0; i < 5; i++) need_float(op, ts[i]);
    need_f32(op, rstd);
    int64_t C = tensor_cols(a), R = tensor_rows(a);
    need_numel(op, b, R * C);
    need_numel(op, r, R * C);
    need_numel(op, y, R * C);
    need(tensor_cols(r) == C && tensor_cols(y) == C, op, "r '%s' and y '%s' must have a's last dim %lld",
         r->name, y->name, (long long)C);
    need_numel(op, w, C);
    need_numel(op, rstd, R);
    need(eps > 0.0f, op, "eps %g must be > 0", (double)eps);
    need(w->data != r->data && w->data != y->data, op, "weight '%s' aliases an output", w->name);
    nn_run_add_rmsnorm(dev, r, y, a, b, w, eps, rstd);
}

void op_groupnorm(tensor *y, const tensor *x, const tensor *w, const tensor *b, int groups, float eps) {
    const char *op = "op_groupnorm";
    const tensor *ts[] = {y, x, w, b};
    nn_device dev = nn_ops_same_device(op, 4, ts);
    for (int i = 0; i < 4; i++) need_float(op, ts[i]);
    char s1[96], s2[96];
    need(x->ndim == 3, op, "x '%s' must be [B, H*W, C], is %s", x->name, shp(x, s1));
    need(tensor_same_shape(y, x), op, "y '%s' %s != x %s", y->name, shp(y, s1), shp(x, s2));
    int64_t C = x->shape[2];
    need(groups > 0 && C % groups == 0, op, "%lld channels of '%s' are not a multiple of %d groups",
         (long long)C, x->name, groups);
    need(w != NULL && b != NULL, op, "weight and bias are required");
    need_numel(op, w, C);
    need_numel(op, b, C);
    need(eps > 0.0f, op, "eps %g must be > 0", (double)eps);
    nn_run_groupnorm(dev, y, x, w, b, groups, eps);
}

/* ---- attention -------------------------------------------------------------------------------- */

/* Shapes of the attention tensors (shared by op_attention, op_attention_seg and the backward). */
static void attention_shapes(const char *op, const tensor *out, const tensor *q, const tensor *k,
                             const tensor *v, int n_heads, int n_kv_heads) {
    const tensor *fl[] = {out, q, k, v};
    for (int i = 0; i < 4; i++) need_float(op, fl[i]);
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
    need(out->data != q->data && out->data != k->data && out->data != v->data, op,
         "out '%s' aliases an input", out->name);
}

/* att for the mode: the kept probabilities [B, H, T, T] (exactly that many elements) or scratch for
 * one head (at least T*T). */
static void attention_check(const char *op, const tensor *out, const tensor *q, const tensor *k,
                            const tensor *v, int n_heads, int n_kv_heads, const tensor *att, nn_att_mode mode) {
    attention_shapes(op, out, q, k, v, n_heads, n_kv_heads);
    need_f32(op, att);
    need(att != NULL, op, "att (probabilities or scratch) is required");
    need(mode == NN_ATT_KEEP || mode == NN_ATT_SCRATCH, op, "unknown attention mode %d", (int)mode);
    char s1[96];
    int64_t B = q->shape[0], T = q->shape[1];
    if (mode == NN_ATT_KEEP)
        need(tensor_numel(att) == B * n_heads * T * T, op,
             "att '%s' %s must hold the kept probabilities [%lld, %d, %lld, %lld]", att->name, shp(att, s1),
             (long long)B, n_heads, (long long)T, (long long)T);
    else
        need(tensor_numel(att) >= T * T, op, "att '%s' has %lld elements; want at least %lld (scratch)",
             att->name, (long long)tensor_numel(att), (long long)(T * T));
}

void op_attention(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                  int n_kv_heads, float scale, int causal, tensor *att, nn_att_mode mode) {
    const tensor *ts[] = {out, q, k, v, att};
    nn_device dev = nn_ops_same_device("op_attention", 5, ts);
    attention_check("op_attention", out, q, k, v, n_heads, n_kv_heads, att, mode);
    nn_run_attention(dev, out, q, k, v, n_heads, n_kv_heads, scale, causal, NULL, att, mode);
}

void op_attention_seg(tensor *out, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                      int n_kv_heads, float scale, int causal, const tensor *seg, tensor *att,
                      nn_att_mode mode) {
    const char *op = "op_attention_seg";
    if (!seg) { /* exactly op_attention, on every backend */
        op_attention(out, q, k, v, n_heads, n_kv_heads, scale, causal, att, mode);
        return;
    }
    const tensor *ts[] = {out, q, k, v, att, seg};
    nn_device dev = nn_ops_same_device(op, 6, ts);
    need_i32(op, seg);
    char s1[96];
    need(q->ndim == 3, op, "q '%s' must be [B, T, H*Dh], is %s", q->name, shp(q, s1));
    need(tensor_numel(seg) == q->shape[0] * q->shape[1], op, "segments '%s' %s, want [%lld, %lld]",
         seg->name, shp(seg, s1), (long long)q->shape[0], (long long)q->shape[1]);
    attention_check(op, out, q, k, v, n_heads, n_kv_heads, att, mode);
    nn_run_attention(dev, out, q, k, v, n_heads, n_kv_heads, scale, causal, seg, att, mode);
}

void op_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q,
                           const tensor *k, const tensor *v, const tensor *att, int n_heads,
                           int n_kv_heads, float scale, tensor *scratch) {
    const char *op = "op_attention_backward";
    const tensor *ts[] = {dq, dk, dv, dout, q, k, v, att, scratch};
    nn_device dev = nn_ops_same_device(op, 9, ts);
    for (int i = 0; i < 9; i++) need_float(op, ts[i]);
    need(dq && dk && dv && att && scratch, op, "dq, dk, dv, att and scratch are required");
    char s1[96], s2[96];
    attention_check(op, dout, q, k, v, n_heads, n_kv_heads, att, NN_ATT_KEEP);
    int64_t T = q->shape[1];
    need(tensor_same_shape(dq, q), op, "dq '%s' %s != q %s", dq->name, shp(dq, s1), shp(q, s2));
    need(tensor_same_shape(dk, k), op, "dk '%s' %s != k %s", dk->name, shp(dk, s1), shp(k, s2));
    need(tensor_same_shape(dv, v), op, "dv '%s' %s != v %s", dv->name, shp(dv, s1), shp(v, s2));
    need_f32(op, scratch);
    need(tensor_numel(scratch) >= T * T, op, "scratch '%s' needs at least %lld elements",
         scratch->name, (long long)(T * T));
    const tensor *outs[] = {dq, dk, dv, scratch};
    const tensor *ins[] = {dout, q, k, v, att};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++)
            need(outs[i]->data != ins[j]->data, op, "'%s' aliases input '%s'", outs[i]->name,
                 ins[j]->name);
    nn_run_attention_backward(dev, dq, dk, dv, dout, q, k, v, att, n_heads, n_kv_heads, scale, scratch);
}

/* Shapes shared by the flash forward and backward: lse [B, H, T] f32, seg [B, T] i32 or NULL. */
static void flash_check(const char *op, const tensor *out, const tensor *lse, const tensor *q,
                        const tensor *k, const tensor *v, int n_heads, int n_kv_heads,
                        const tensor *seg) {
    attention_shapes(op, out, q, k, v, n_heads, n_kv_heads);
    char s1[96];
    int64_t B = q->shape[0], T = q->shape[1];
    need(lse != NULL, op, "lse is required");
    need_f32(op, lse);
    need(tensor_numel(lse) == B * n_heads * T, op, "lse '%s' %s, want [%lld, %d, %lld]", lse->name,
         shp(lse, s1), (long long)B, n_heads, (long long)T);
    need_i32(op, seg);
    if (seg)
        need(tensor_numel(seg) == B * T, op, "segments '%s' %s, want [%lld, %lld]", seg->name,
             shp(seg, s1), (long long)B, (long long)T);
}

void op_flash_attention(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v,
                        int n_heads, int n_kv_heads, float scale, int causal, const tensor *seg) {
    const char *op = "op_flash_attention";
    const tensor *ts[] = {out, lse, q, k, v, seg};
    nn_device dev = nn_ops_same_device(op, 6, ts);
    flash_check(op, out, lse, q, k, v, n_heads, n_kv_heads, seg);
    need(lse->data != out->data, op, "lse '%s' aliases out", lse->name);
    nn_run_flash_attention(dev, out, lse, q, k, v, n_heads, n_kv_heads, scale, causal, seg);
}

void op_flash_attention_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout,
                                 const tensor *q, const tensor *k, const tensor *v, const tensor *out,
                                 const tensor *lse, int n_heads, int n_kv_heads, float scale,
                                 int causal, const tensor *seg) {
    const char *op = "op_flash_attention_backward";
    const tensor *ts[] = {dq, dk, dv, dout, q, k, v, out, lse, seg};
    nn_device dev = nn_ops_same_device(op, 10, ts);
    need(dq && dk && dv && dout && out, op, "dq, dk, dv, dout and out are required");
    for (int i = 0; i < 4; i++) need_float(op, ts[i]);
    char s1[96], s2[96];
    flash_check(op, out, lse, q, k, v, n_heads, n_kv_heads, seg);
    need(tensor_same_shape(dout, q), op, "dout '%s' %s != q %s", dout->name, shp(dout, s1), shp(q, s2));
    need(tensor_same_shape(dq, q), op, "dq '%s' %s != q %s", dq->name, shp(dq, s1), shp(q, s2));
    need(tensor_same_shape(dk, k), op, "dk '%s' %s != k %s", dk->name, shp(dk, s1), shp(k, s2));
    need(tensor_same_shape(dv, v), op, "dv '%s' %s != v %s", dv->name, shp(dv, s1), shp(v, s2));
    const tensor *outs[] = {dq, dk, dv};
    const tensor *ins[] = {dout, q, k, v, out, lse};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            need(outs[i]->data != ins[j]->data, op, "'%s' aliases input '%s'", outs[i]->name,
                 ins[j]->name);
    nn_run_flash_attention_backward(dev, dq, dk, dv, dout, q, k, v, out, lse, n_heads, n_kv_heads,
             scale, causal, seg);
}

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
    nn_run_attention_decode(dev, out, q, k, v, lens, n_heads, n_kv_heads, scale, scores);
}

/* ---- embedding and row gathers ---------------------------------------------------------------- */

/* Ids on the host are checked here; on a device the kernel records a bad one (device_errors). */
static void check_ids(const char *op, const tensor *ids, int64_t V) {
    if (ids->device != NN_CPU) return;
    const int32_t *p = (const int32_t *)ids->data;
    for (int64_t i = 0; i < tensor_numel(ids); i++)
        need(p[i] >= 0 && p[i] < V, op, "id %d at %lld of '%s' is outside [0, %lld)", (int)p[i],
             (long long)i, ids->name, (long long)V);
}

/* The lookup's rows [N, C] (named `rname`) against the table [V, C] (named `tname`) and ids with N
 * elements, the ids included; returns the device. */
static nn_device check_lookup(const char *op, const tensor *rows, const char *rname, const tensor *ids,
                              const tensor *table, const char *tname) {
    nn_device dev = check_indexed(op, rows, table, ids);
    char s1[96];
    need(table->ndim == 2, op, "%s '%s' must be [V, C], is %s", tname, table->name, shp(table, s1));
    need(tensor_rows(rows) == tensor_numel(ids) && tensor_cols(rows) == table->shape[1], op,
         "%s '%s' %s, want [%lld, %lld]", rname, rows->name, shp(rows, s1), (long long)tensor_numel(ids),
         (long long)table->shape[1]);
    check_ids(op, ids, table->shape[0]);
    return dev;
}

void op_embedding(tensor *y, const tensor *ids, const tensor *table) {
    nn_device dev = check_lookup("op_embedding", y, "y", ids, table, "table");
    nn_run_gather_rows(dev, y, table, ids, 0);
    device_errors(dev, "op_embedding");
}

void op_embedding_backward(tensor *dtable, const tensor *dy, const tensor *ids) {
    nn_device dev = check_lookup("op_embedding_backward", dy, "dy", ids, dtable, "dtable");
    nn_run_scatter_add_rows(dev, dtable, dy, ids, 0);
    device_errors(dev, "op_embedding_backward");
}

static nn_device check_embed(const char *op, const tensor *rows, const tensor *ids, const tensor *table,
                             const char *tname) {
    const tensor *ts[] = {rows, ids, table};
    nn_device dev = nn_ops_same_device(op, 3, ts);
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
    return dev;
}

void op_embedding_skip(tensor *y, const tensor *ids, const tensor *table) {
    nn_device dev = check_embed("op_embedding_skip", y, ids, table, "table");
    nn_run_gather_rows(dev, y, table, ids, 1);
}

void op_embedding_skip_backward(tensor *dtable, const tensor *dy, const tensor *ids) {
    const char *op = "op_embedding_skip_backward";
    nn_device dev = check_embed(op, dy, ids, dtable, "dtable");
    nn_run_scatter_add_rows(dev, dtable, dy, ids, 1);
    device_errors(dev, op);
}

/* rows [N, C] (the gathered side) against x [R, C] (the indexed side) and idx with N elements. */
static nn_device check_rows(const char *op, const tensor *rows, const tensor *x, const tensor *idx) {
    nn_device dev = check_indexed(op, rows, x, idx);
    char s1[96], s2[96];
    need(tensor_rows(rows) == tensor_numel(idx) && tensor_cols(rows) == tensor_cols(x), op,
         "'%s' %s, want [%lld, %lld] (indices '%s', rows of '%s' %s)", rows->name, shp(rows, s1),
         (long long)tensor_numel(idx), (long long)tensor_cols(x), idx->name, x->name, shp(x, s2));
    need(rows->data != x->data, op, "'%s' aliases '%s'", rows->name, x->name);
    check_ids(op, idx, tensor_rows(x));
    return dev;
}

void op_gather_rows(tensor *y, const tensor *x, const tensor *idx) {
    nn_device dev = check_rows("op_gather_rows", y, x, idx);
    nn_run_gather_rows(dev, y, x, idx, 0);
    device_errors(dev, "op_gather_rows");
}

void op_scatter_add_rows(tensor *y, const tensor *x, const tensor *idx) {
    nn_device dev = check_rows("op_scatter_add_rows", x, y, idx);
    nn_run_scatter_add_rows(dev, y, x, idx, 0);
    device_errors(dev, "op_scatter_add_rows");
}

/* ---- losses ----------------------------------------------------------------------------------- */

void op_cross_entropy(tensor *dlogits, double *loss_sum, int64_t *count, const tensor *logits,
                      const tensor *targets, float scale) {
    const char *op = "op_cross_entropy";
    const tensor *ts[] = {dlogits, logits, targets};
    nn_device dev = nn_ops_same_device(op, 3, ts);
    need_float(op, dlogits);
    need_float(op, logits);
    need_i32(op, targets);
    need(loss_sum != NULL && count != NULL, op, "loss_sum and count are required");
    int64_t M = tensor_rows(logits), V = tensor_cols(logits);
    char s1[96], s2[96];
    need(tensor_numel(targets) == M, op, "targets '%s' has %lld elements, logits %s have %lld rows",
         targets->name, (long long)tensor_numel(targets), shp(logits, s1), (long long)M);
    if (dlogits) need(tensor_rows(dlogits) == M && tensor_cols(dlogits) == V, op,
                      "dlogits '%s' %s != logits %s", dlogits->name, shp(dlogits, s1), shp(logits, s2));
    const int32_t *t = (const int32_t *)targets->data;
    for (int64_t i = 0; dev == NN_CPU && i < M; i++) /* device targets: checked by the kernel */
        need(t[i] == NN_IGNORE_INDEX || (t[i] >= 0 && t[i] < V), op,
             "target %d of row %lld is outside [0, %lld) and not the ignore index %d", (int)t[i],
             (long long)i, (long long)V, NN_IGNORE_INDEX);
    nn_run_cross_entropy(dev, dlogits, loss_sum, count, logits, targets, scale);
    device_errors(dev, op);
}

void op_argmax_rows(tensor *idx, const tensor *x) {
    const char *op = "op_argmax_rows";
    const tensor *ts[] = {idx, x};
    nn_device dev = nn_ops_same_device(op, 2, ts);
    need_dtype(op, idx, NN_I32);
    if (dev == NN_CPU || x->dtype != NN_BF16) need_dtype(op, x, NN_F32); /* CUDA also reads bf16 rows */
    int64_t M = tensor_rows(x);
    need(tensor_numel(idx) == M, op, "idx '%s' has %lld elements, x '%s' has %lld rows", idx->name,
         (long long)tensor_numel(idx), x->name, (long long)M);
    nn_run_argmax_rows(dev, idx, x);
}

/* ---- optimizer -------------------------------------------------------------------------------- */

static void need_adamw_scalars(const char *op, float lr, float beta1, float beta2, float eps, float weight_decay,
                               int64_t step) {
    need(step >= 1, op, "step %lld; the first update is step 1", (long long)step);
    need(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f, op,
         "betas (%g, %g) must lie in [0, 1)", (double)beta1, (double)beta2);
    need(eps > 0.0f && lr >= 0.0f && weight_decay >= 0.0f, op, "lr %g, eps %g, weight decay %g",
         (double)lr, (double)eps, (double)weight_decay);
}

void op_adamw(tensor *p, const tensor *g, tensor *m, tensor *v, float lr, float beta1, float beta2,
              float eps, float weight_decay, int64_t step) {
    const char *op = "op_adamw";
    const tensor *ts[] = {p, g, m, v};
    nn_device dev = nn_ops_same_device(op, 4, ts);
    for (int i = 0; i < 4; i++) need_f32(op, ts[i]);
    for (int i = 1; i < 4; i++) need_numel(op, ts[i], tensor_numel(p));
    need_adamw_scalars(op, lr, beta1, beta2, eps, weight_decay, step);
    nn_run_adamw(dev, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step);
}

void op_adamw_multi(int n, tensor *const *p, tensor *const *g, tensor *const *m, tensor *const *v,
                    tensor *const *pc, const float *wd, float gscale, float lr, float beta1, float beta2,
                    float eps, int64_t step) {
    const char *op = "op_adamw_multi";
    need(n >= 1 && p && g && m && v && wd, op, "%d tensors; p, g, m, v and wd are required", n);
    nn_device dev = NN_CPU;
    for (int i = 0; i < n; i++) {
        const tensor *ts[] = {p[i], g[i], m[i], v[i], pc ? pc[i] : NULL, p[0]};
        need(p[i] && g[i] && m[i] && v[i], op, "entry %d lacks a tensor", i);
        dev = nn_ops_same_device(op, 6, ts);
        for (int j = 0; j < 4; j++) need_f32(op, ts[j]);
        for (int j = 1; j < 5; j++) need_numel(op, ts[j], tensor_numel(p[i]));
        need_float(op, ts[4]);
        need_adamw_scalars(op, lr, beta1, beta2, eps, wd[i], step);
    }
    need(gscale >= 0.0f, op, "gradient scale %g", (double)gscale);
    nn_run_adamw_multi(dev, n, p, g, m, v, pc, wd, gscale, lr, beta1, beta2, eps, step);
}

void op_grad_sqnorm(double *acc, const tensor *g) {
    const tensor *ts[] = {g};
    nn_device dev = nn_ops_same_device("op_grad_sqnorm", 1, ts);
    need_float("op_grad_sqnorm", g);
    need(acc != NULL, "op_grad_sqnorm", "acc is required");
    nn_run_grad_sqnorm(dev, acc, g);
}

void op_grad_sqnorm_multi(double *acc, int n, const tensor *const *g) {
    const char *op = "op_grad_sqnorm_multi";
    need(acc != NULL && n >= 1 && g != NULL, op, "acc, n >= 1 (%d) and g are required", n);
    nn_device dev = NN_CPU;
    for (int i = 0; i < n; i++) {
        const tensor *ts[] = {g[i], g[0]};
        need(g[i] != NULL, op, "entry %d lacks a tensor", i);
        dev = nn_ops_same_device(op, 2, ts);
        need_float(op, g[i]);
    }
    nn_run_grad_sqnorm_multi(dev, acc, n, g);
}

void op_scale(tensor *t, float s) {
    const tensor *ts[] = {t};
    nn_device dev = nn_ops_same_device("op_scale", 1, ts);
    need_float("op_scale", t);
    nn_run_scale(dev, t, s);
}

/* ---- conv ------------------------------------------------------------------------------------- */

void op_patch_embed(tensor *y, const tensor *img, const tensor *w, const tensor *b, int patch,
                    tensor *cols) {
    const char *op = "op_patch_embed";
    const tensor *ts[] = {y, img, w, b, cols};
    nn_device dev = nn_ops_same_device(op, 5, ts);
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
    nn_run_patch_embed(dev, y, img, w, b, patch, cols);
}

void op_conv2d_same(tensor *y, const tensor *x, const tensor *w, const tensor *b, int H, int W,
                    tensor *cols) {
    const char *op = "op_conv2d_same";
    const tensor *ts[] = {y, x, w, b, cols};
    nn_device dev = nn_ops_same_device(op, 5, ts);
    for (int i = 0; i < 5; i++) need_float(op, ts[i]);
    char s1[96], s2[96];
    need(H > 0 && W > 0, op, "grid %d x %d", H, W);
    need(x->ndim == 3 && x->shape[1] == (int64_t)H * W, op, "x '%s' must be [B, %d*%d, Cin], is %s",
         x->name, H, W, shp(x, s1));
    need(w->ndim == 4 && w->shape[2] == w->shape[3] && w->shape[2] % 2 == 1, op,
         "weight '%s' must be [Cout, Cin, k, k] with k odd, is %s", w->name, shp(w, s1));
    int64_t B = x->shape[0], Cin = x->shape[2], Cout = w->shape[0], k = w->shape[2];
    need(w->shape[1] == Cin, op, "weight '%s' %s does not fit x '%s' %s (Cin %lld)", w->name, shp(w, s1),
         x->name, shp(x, s2), (long long)Cin);
    need(y->ndim == 3 && y->shape[0] == B && y->shape[1] == (int64_t)H * W && y->shape[2] == Cout, op,
         "y '%s' %s, want [%lld, %d, %lld]", y->name, shp(y, s1), (long long)B, H * W, (long long)Cout);
    need_numel(op, b, Cout);
    need(cols != NULL && tensor_numel(cols) >= (int64_t)H * W * Cin * k * k, op,
         "cols scratch has %lld elements, want at least %lld", cols ? (long long)tensor_numel(cols) : 0LL,
         (long long)H * W * Cin * k * k);
    need(y->data != x->data && cols->data != x->data && cols->data != y->data, op,
         "y '%s', x and cols must not alias", y->name);
    nn_run_conv2d_same(dev, y, x, w, b, H, W, cols);
}

void op_silu(tensor *y, const tensor *x) { nn_run_silu(check_unary("op_silu", y, x), y, x); }

/* ---- interpolate ------------------------------------------------------------------------------ */

const char *nn_resize_name(nn_resize mode) {
    return mode == NN_RESIZE_BILINEAR ? "bilinear" : mode == NN_RESIZE_BICUBIC ? "bicubic" : mode == NN_RESIZE_AREA ? "area" : "?";
}

void op_interpolate(tensor *y, const tensor *x, nn_resize mode, int channels_last) {
    const char *op = "op_interpolate";
    const tensor *ts[] = {y, x};
    nn_device dev = nn_ops_same_device(op, 2, ts);
    need_float(op, y);
    need_float(op, x);
    need(mode == NN_RESIZE_BILINEAR || mode == NN_RESIZE_BICUBIC || mode == NN_RESIZE_AREA, op, "unknown mode %d",
         (int)mode);
    char s1[96], s2[96];
    need(x->ndim == 4 && y->ndim == 4, op, "x '%s' %s and y '%s' %s must have 4 dims", x->name, shp(x, s1), y->name,
         shp(y, s2));
    int c = channels_last ? 3 : 1;
    need(x->shape[0] == y->shape[0] && x->shape[c] == y->shape[c], op,
         "y '%s' %s must keep the batch and channels of x '%s' %s (%s)", y->name, shp(y, s1), x->name, shp(x, s2),
         channels_last ? "[N, H, W, C]" : "[N, C, H, W]");
    for (int i = 0; i < 4; i++) need(x->shape[i] > 0 && y->shape[i] > 0, op, "empty dims in x %s or y %s", shp(x, s1), shp(y, s2));
    need(y->data != x->data, op, "y '%s' aliases x", y->name);
    nn_run_interpolate(dev, y, x, mode, channels_last ? 1 : 0);
}

/* ---- vq --------------------------------------------------------------------------------------- */

void op_row_sqnorm(tensor *n, const tensor *c) {
    const char *op = "op_row_sqnorm";
    const tensor *ts[] = {n, c};
    nn_device dev = nn_ops_same_device(op, 2, ts);
    need_float(op, c);
    need_f32(op, n);
    need_numel(op, n, tensor_rows(c));
    nn_run_row_sqnorm(dev, n, c);
}

/* The arguments op_vq_step and op_vq_fused share; returns their device. */
static nn_device vq_check(const char *op, const tensor *residual, const tensor *codebook, const tensor *cnorm,
                          const tensor *codes, int depth, const tensor *dist) {
    const tensor *ts[] = {residual, codebook, cnorm, codes, dist};
    nn_device dev = nn_ops_same_device(op, 5, ts);
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
    return dev;
}

void op_vq_step(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes,
                int depth, tensor *dist) {
    const char *op = "op_vq_step";
    nn_device dev = vq_check(op, residual, codebook, cnorm, codes, depth, dist);
    char s1[96];
    int64_t K = codebook->shape[0];
    need(tensor_cols(dist) == K, op, "dist '%s' %s must be [R, %lld]", dist->name, shp(dist, s1),
         (long long)K);
    nn_run_vq_step(dev, residual, codebook, cnorm, codes, depth, dist);
}

void op_vq_fused(tensor *residual, const tensor *codebook, const tensor *cnorm, tensor *codes, int depth) {
    const char *op = "op_vq_fused";
    nn_device dev = vq_check(op, residual, codebook, cnorm, codes, depth, NULL);
    need(residual->dtype == codebook->dtype, op, "residual '%s' (%s) and codebook '%s' (%s) must share a dtype",
         residual->name, nn_dtype_name(residual->dtype), codebook->name, nn_dtype_name(codebook->dtype));
    need(codebook->shape[0] <= INT32_MAX, op, "%lld codebook rows", (long long)codebook->shape[0]);
    nn_run_vq_fused(dev, residual, codebook, cnorm, codes, depth);
}

/* ---- transfer and devices --------------------------------------------------------------------- */

void op_transfer(tensor *dst, const tensor *src) {
    const char *op = "op_transfer";
    need(dst && src && dst->data && src->data, op, "dst and src need data");
    need(tensor_numel(dst) == tensor_numel(src), op, "'%s' has %lld elements, '%s' %lld", dst->name,
         (long long)tensor_numel(dst), src->name, (long long)tensor_numel(src));
    nn_device dev = dst->device == NN_CPU && src->device == NN_CPU ? NN_CPU : NN_CUDA;
    if (dev == NN_CPU)
        need(dst->dtype == src->dtype, op, "'%s' is %s, '%s' is %s", dst->name, nn_dtype_name(dst->dtype), src->name,
             nn_dtype_name(src->dtype));
#ifndef ASVR_HAVE_CUDA
    need(dev == NN_CPU, op, "'%s' -> '%s' involves a cuda tensor but this build has no CUDA backend", src->name,
         dst->name);
#endif
    if (dst->dtype != src->dtype) /* cuda: cpu f32 <-> cuda bf16 (the backend checks the pair) */
        need(dst->device != src->device, op, "'%s' (%s) -> '%s' (%s) on one device: use op_copy", src->name,
             nn_dtype_name(src->dtype), dst->name, nn_dtype_name(dst->dtype));
    nn_run_transfer(dev, dst, src);
}
void op_read_f32(const tensor *t, float *host) {
    tensor h = tensor_make(t->name, NN_F32, NN_CPU, t->ndim, t->shape, host);
    op_transfer(&h, t);
}

void op_write_f32(tensor *t, const float *host) {
    tensor h = tensor_make(t->name, NN_F32, NN_CPU, t->ndim, t->shape, (void *)host);
    op_transfer(t, &h);
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
    if (!nn_device_available(NN_CUDA)) {
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

int nn_device_available(nn_device dev) {
    if (dev == NN_CPU) return 1;
#ifdef ASVR_HAVE_CUDA
    return nn_cuda_available();
#else
    return 0;
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

void *nn_host_alloc(nn_device dev, size_t bytes, const char *what) {
    if (dev == NN_CPU) return asvr_malloc(bytes, what);
#ifdef ASVR_HAVE_CUDA
    return nn_cuda_host_alloc(bytes, what);
#else
    need(0, "nn_host_alloc", "%s: page-locked memory for cuda, but this build has no CUDA backend", what);
    return NULL;
#endif
}

void nn_host_free(nn_device dev, void *p) {
    if (dev == NN_CPU) {
        free(p);
        return;
    }
#ifdef ASVR_HAVE_CUDA
    nn_cuda_host_free(p);
#else
    need(p == NULL, "nn_host_free", "page-locked memory for cuda, but this build has no CUDA backend");
#endif
}
