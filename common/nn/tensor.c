#include "nn/tensor.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

#define NN_ALIGN 256

size_t nn_dtype_size(nn_dtype t) {
    switch (t) {
    case NN_F32: return 4;
    case NN_BF16: return 2;
    case NN_F16: return 2;
    case NN_U16: return 2;
    case NN_I32: return 4;
    case NN_U8: return 1;
    default: ASVR_FATAL("", "unknown tensor dtype %d", (int)t);
    }
}

const char *nn_dtype_name(nn_dtype t) {
    static const char *names[] = {"f32", "bf16", "f16", "u16", "i32", "u8"};
    return (t >= 0 && t < NN_NDTYPES) ? names[t] : "?";
}

const char *nn_device_name(nn_device d) { return d == NN_CPU ? "cpu" : d == NN_CUDA ? "cuda" : "?"; }

tensor tensor_make(const char *name, nn_dtype dtype, nn_device dev, int ndim, const int64_t *shape,
                   void *data) {
    tensor t;
    memset(&t, 0, sizeof t);
    CHECK(ndim >= 1 && ndim <= NN_MAX_DIMS, "", "tensor '%s': %d dims (1..%d allowed)", name, ndim,
          NN_MAX_DIMS);
    CHECK(dtype >= 0 && dtype < NN_NDTYPES, "", "tensor '%s': bad dtype %d", name, (int)dtype);
    t.dtype = dtype;
    t.device = dev;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        CHECK(shape[i] > 0, "", "tensor '%s': dim %d is %lld", name, i, (long long)shape[i]);
        t.shape[i] = shape[i];
    }
    t.data = data;
    snprintf(t.name, sizeof t.name, "%s", name);
    return t;
}

int64_t tensor_numel(const tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t tensor_nbytes(const tensor *t) { return (size_t)tensor_numel(t) * nn_dtype_size(t->dtype); }

int64_t tensor_cols(const tensor *t) { return t->shape[t->ndim - 1]; }
int64_t tensor_rows(const tensor *t) { return tensor_numel(t) / tensor_cols(t); }

char *tensor_shape_str(const tensor *t, char *buf, size_t n) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

int tensor_same_shape(const tensor *a, const tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

tensor tensor_index0(const tensor *t, int64_t i) {
    CHECK(t->ndim >= 2 && i >= 0 && i < t->shape[0], "", "tensor '%s': index %lld along dim 0 of %d-d %lld",
          t->name, (long long)i, t->ndim, (long long)t->shape[0]);
    tensor v = *t;
    v.ndim = t->ndim - 1;
    for (int d = 0; d < v.ndim; d++) v.shape[d] = t->shape[d + 1];
    v.shape[v.ndim] = 0;
    v.data = t->data ? (char *)t->data + (size_t)i * tensor_nbytes(&v) : NULL;
    return v;
}

tensor tensor_head0(const tensor *t, int64_t n) {
    CHECK(n >= 1 && n <= t->shape[0], "", "tensor '%s': first %lld of %lld along dim 0", t->name,
          (long long)n, (long long)t->shape[0]);
    tensor v = *t;
    v.shape[0] = n;
    return v;
}

/* ---- arena ---------------------------------------------------------------------------------- */
struct nn_arena {
    char label[NN_NAME_MAX];
    nn_device device;
    tensor **items;
    size_t *offsets;
    int n, cap;
    size_t total;
    void *base;
    int committed;
};

nn_arena *nn_arena_new(const char *label, nn_device dev) {
    nn_arena *a = asvr_calloc(1, sizeof *a, "tensor arena");
    snprintf(a->label, sizeof a->label, "%s", label);
    a->device = dev;
#ifndef ASVR_HAVE_CUDA
    CHECK(dev == NN_CPU, "rebuild with nvcc on PATH (or -DASVR_CUDA=ON) to use the GPU",
          "arena '%s' asks for a CUDA device but this build has no CUDA backend", label);
#endif
    return a;
}

tensor *nn_arena_add(nn_arena *a, const char *name, nn_dtype dtype, int ndim, const int64_t *shape) {
    CHECK(!a->committed, "", "arena '%s': tensor '%s' added after commit", a->label, name);
    CHECK(nn_arena_find(a, name) == NULL, "", "arena '%s': tensor '%s' declared twice", a->label, name);
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 32;
        a->items = asvr_realloc(a->items, (size_t)a->cap * sizeof *a->items, "arena plan");
        a->offsets = asvr_realloc(a->offsets, (size_t)a->cap * sizeof *a->offsets, "arena plan");
    }
    tensor *t = asvr_malloc(sizeof *t, "arena tensor");
    *t = tensor_make(name, dtype, a->device, ndim, shape, NULL);
    a->items[a->n] = t;
    a->offsets[a->n] = a->total;
    a->total += (tensor_nbytes(t) + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
    a->n++;
    return t;
}

static int plan_only;
void nn_arena_set_plan_only(int on) { plan_only = on != 0; }
int nn_arena_plan_only(void) { return plan_only; }

void nn_arena_commit(nn_arena *a) {
    CHECK(!a->committed, "", "arena '%s' committed twice", a->label);
    size_t bytes = a->total ? a->total : NN_ALIGN;
    if (plan_only) {
        a->committed = 1; /* data stays NULL */
        return;
    }
    if (a->device == NN_CPU) {
        a->base = aligned_alloc(NN_ALIGN, bytes);
        if (!a->base)
            ASVR_FATAL("free memory or lower the batch size", "arena '%s': cannot allocate %.1f MiB",
                       a->label, (double)bytes / (1 << 20));
        memset(a->base, 0, bytes);
    } else {
#ifdef ASVR_HAVE_CUDA
        a->base = nn_cuda_malloc(bytes, a->label);
        nn_cuda_zero(a->base, bytes); /* as on the CPU: state such as AdamW moments starts at zero */
#endif
    }
    for (int i = 0; i < a->n; i++) a->items[i]->data = (char *)a->base + a->offsets[i];
    a->committed = 1;
}

void nn_arena_move(nn_arena *a, nn_device dev, nn_dtype float_dtype) {
    CHECK(a->committed && a->device == NN_CPU, "", "arena '%s': only a committed CPU arena can be moved", a->label);
    CHECK(float_dtype == NN_F32 || (float_dtype == NN_BF16 && dev == NN_CUDA), "",
          "arena '%s': floats can move as f32, or as bf16 onto cuda (not %s on %s)", a->label,
          nn_dtype_name(float_dtype), nn_device_name(dev));
    if (dev == NN_CPU) return;
#ifdef ASVR_HAVE_CUDA
    size_t *off = asvr_malloc(sizeof *off * (size_t)(a->n ? a->n : 1), "arena plan");
    size_t total = 0;
    for (int i = 0; i < a->n; i++) {
        tensor moved = *a->items[i];
        if (moved.dtype == NN_F32) moved.dtype = float_dtype;
        off[i] = total;
        total += (tensor_nbytes(&moved) + NN_ALIGN - 1) / NN_ALIGN * NN_ALIGN;
    }
    void *base = nn_cuda_malloc(total ? total : NN_ALIGN, a->label);
    for (int i = 0; i < a->n; i++) {
        tensor *t = a->items[i];
        tensor moved = *t;
        moved.device = NN_CUDA;
        moved.data = (char *)base + off[i];
        if (t->dtype == NN_F32) {
            moved.dtype = float_dtype;
            nn_cuda_upload(&moved, t);
        } else {
            nn_cuda_memcpy_h2d(moved.data, t->data, tensor_nbytes(t));
        }
        *t = moved;
    }
    free(a->base);
    a->base = base;
    a->total = total;
    if (a->n) memcpy(a->offsets, off, sizeof *off * (size_t)a->n);
    a->device = NN_CUDA;
    free(off);
#else
    ASVR_FATAL("rebuild with nvcc on PATH (or -DASVR_CUDA=ON) to use the GPU",
               "arena '%s' cannot move to cuda: this build has no CUDA backend", a->label);
#endif
}

nn_device nn_arena_device(const nn_arena *a) { return a->device; }

size_t nn_arena_bytes(const nn_arena *a) { return a->total; }
int nn_arena_count(const nn_arena *a) { return a->n; }
tensor *nn_arena_at(nn_arena *a, int i) { return (i >= 0 && i < a->n) ? a->items[i] : NULL; }

tensor *nn_arena_find(nn_arena *a, const char *name) {
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->items[i]->name, name) == 0) return a->items[i];
    return NULL;
}

void nn_arena_print_plan(const nn_arena *a, FILE *f) {
    fprintf(f, "arena '%s' on %s: %d tensors\n", a->label, nn_device_name(a->device), a->n);
    for (int i = 0; i < a->n; i++) {
        const tensor *t = a->items[i];
        char sh[96];
        fprintf(f, "  %-48s %-5s %-24s %12zu bytes @ %zu\n", t->name, nn_dtype_name(t->dtype),
                tensor_shape_str(t, sh, sizeof sh), tensor_nbytes(t), a->offsets[i]);
    }
    fprintf(f, "  total %zu bytes (%.2f MiB)\n", a->total, (double)a->total / (1 << 20));
}

void nn_arena_free(nn_arena *a) {
    if (!a) return;
    if (a->base) {
        if (a->device == NN_CPU) free(a->base);
#ifdef ASVR_HAVE_CUDA
        else nn_cuda_free(a->base);
#endif
    }
    for (int i = 0; i < a->n; i++) free(a->items[i]);
    free(a->items);
    free(a->offsets);
    free(a);
}
