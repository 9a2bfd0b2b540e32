#include "model/weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void weights_loader_init(weights_loader *wl, const char *arena_label, const safetensors *st,
                         const char *prefix) {
    memset(wl, 0, sizeof *wl);
    wl->st = st;
    snprintf(wl->prefix, sizeof wl->prefix, "%s", prefix ? prefix : "");
    wl->arena = nn_arena_new(arena_label, NN_CPU);
    wl->device = NN_CPU;
    wl->dtype = NN_F32;
}

void weights_loader_target(weights_loader *wl, nn_device dev, nn_dtype dtype) {
    wl->device = dev;
    wl->dtype = dtype;
}

static tensor *want_v(weights_loader *wl, int ndim, const int64_t *shape, int pad_rows,
                      const char *fmt, va_list ap) {
    char name[200];
    vsnprintf(name, sizeof name, fmt, ap);
    if (wl->n == wl->cap) {
        wl->cap = wl->cap ? 2 * wl->cap : 64;
        wl->want = asvr_realloc(wl->want, (size_t)wl->cap * sizeof *wl->want, "weight list");
    }
    weights_want_entry *e = &wl->want[wl->n++];
    int len = snprintf(e->key, sizeof e->key, "%s%s", wl->prefix, name);
    CHECK(len > 0 && (size_t)len < sizeof e->key, "", "weight name too long: %s%s", wl->prefix, name);
    e->pad_rows = pad_rows;
    e->t = nn_arena_add(wl->arena, e->key, NN_F32, ndim, shape);
    return e->t;
}

tensor *weights_want(weights_loader *wl, int ndim, const int64_t *shape, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tensor *t = want_v(wl, ndim, shape, 0, fmt, ap);
    va_end(ap);
    return t;
}

tensor *weights_want_padded(weights_loader *wl, int ndim, const int64_t *shape, int pad_rows,
                            const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tensor *t = want_v(wl, ndim, shape, pad_rows, fmt, ap);
    va_end(ap);
    return t;
}

static void st_shape_str(const st_tensor *s, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < s->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)s->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
}

static int fits(const st_tensor *s, const tensor *t, int pad_rows) {
    if (s->ndim != t->ndim) return 0;
    for (int i = 0; i < t->ndim; i++) {
        int64_t lo = t->shape[i], hi = i == 0 ? t->shape[i] + pad_rows : t->shape[i];
        if (s->shape[i] < lo || s->shape[i] > hi) return 0;
    }
    return 1;
}

int weights_load(weights_loader *wl, asvr_error *err) {
    int rc = 0;
    const char *file = "";
    for (int i = 0; i < wl->n && rc == 0; i++) {
        weights_want_entry *e = &wl->want[i];
        const st_tensor *s = safetensors_find(wl->st, e->key);
        if (!s) {
            rc = asvr_err_set(err, "tensor '%s' is missing (%d of %d expected tensors checked); is this "
                              "the right checkpoint and prefix '%s'?", e->key, i, wl->n, wl->prefix);
            break;
        }
        file = s->file ? s->file : "";
        if (!fits(s, e->t, e->pad_rows)) {
            char got[128], want[128];
            st_shape_str(s, got, sizeof got);
            tensor_shape_str(e->t, want, sizeof want);
            rc = asvr_err_set(err, "tensor '%s' in '%s' has shape %s, expected %s%s", e->key, file, got,
                              want, e->pad_rows ? " (plus up to one padding row)" : "");
        }
    }
    if (rc == 0) {
        nn_arena_commit(wl->arena);
        for (int i = 0; i < wl->n && rc == 0; i++) {
            weights_want_entry *e = &wl->want[i];
            st_tensor view = *safetensors_find(wl->st, e->key);
            /* Keep only the leading rows (drops padding rows; row-major, so a prefix of the data). */
            view.shape[0] = e->t->shape[0];
            view.numel = tensor_numel(e->t);
            view.nbytes = (size_t)view.numel * st_dtype_size(view.dtype);
            if (st_tensor_to_f32(&view, (float *)e->t->data, err) < 0) /* CPU f32 here; moved below */
                rc = asvr_err_prefix(err, "converting '%s' to f32", e->key);
        }
    }
    if (rc == 0) nn_arena_move(wl->arena, wl->device, wl->dtype);
    free(wl->want);
    wl->want = NULL;
    wl->n = wl->cap = 0;
    return rc;
}

void weights_loader_init_on(weights_loader *wl, const char *arena_label, const safetensors *st,
                            const char *prefix, nn_device dev) {
    weights_loader_init(wl, arena_label, st, prefix);
    weights_loader_target(wl, dev, NN_F32);
}
