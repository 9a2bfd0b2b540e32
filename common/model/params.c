#include "model/params.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

void param_set_init(param_set *ps, const char *label) {
    memset(ps, 0, sizeof *ps);
    snprintf(ps->label, sizeof ps->label, "%s", label);
}

param *param_add(param_set *ps, int ndim, const int64_t *shape, int decay, param_init init, float init_std,
                 const char *fmt, ...) {
    CHECK(!ps->committed, "", "parameter set '%s': a parameter was added after commit", ps->label);
    param *p = asvr_calloc(1, sizeof *p, "a parameter");
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    CHECK(len > 0 && (size_t)len < sizeof p->name, "", "parameter name too long: %s", p->name);
    CHECK(param_find(ps, p->name) == NULL, "", "parameter '%s' declared twice", p->name);
    p->decay = decay;
    p->init = init;
    p->init_std = init_std;
    p->trainable = 1;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 64;
        ps->v = asvr_realloc(ps->v, (size_t)ps->cap * sizeof *ps->v, "the parameter list");
    }
    ps->v[ps->n++] = p;
    /* the shape is kept on a tensor made at commit; stash it in a temporary tensor now */
    p->w = asvr_malloc(sizeof *p->w, "a parameter shape");
    *p->w = tensor_make(p->name, NN_F32, NN_CPU, ndim, shape, NULL);
    return p;
}

void param_set_trainable(param_set *ps, const char *prefix, int trainable) {
    CHECK(!ps->committed, "", "parameter set '%s': trainability changed after commit", ps->label);
    size_t n = strlen(prefix);
    for (int i = 0; i < ps->n; i++)
        if (strncmp(ps->v[i]->name, prefix, n) == 0) ps->v[i]->trainable = trainable;
}

void param_set_set_device(param_set *ps, nn_device dev) {
    CHECK(!ps->committed, "", "parameter set '%s': device changed after commit", ps->label);
    ps->device = dev;
}

void param_set_set_compute_dtype(param_set *ps, nn_dtype dt) {
    CHECK(!ps->committed, "", "parameter set '%s': compute dtype changed after commit", ps->label);
    CHECK(dt == NN_F32 || dt == NN_BF16, "", "parameter set '%s': compute dtype %s (want f32 or bf16)", ps->label,
          nn_dtype_name(dt));
    ps->compute_dtype = dt;
}

void param_set_commit(param_set *ps) {
    CHECK(ps->compute_dtype == NN_F32 || ps->device == NN_CUDA || nn_arena_plan_only(), "compute in f32 on the CPU",
          "parameter set '%s': bf16 compute copies need the set on cuda, it is on %s", ps->label,
          nn_device_name(ps->device));
    char label[96];
    snprintf(label, sizeof label, "%s values", ps->label);
    ps->values = nn_arena_new(label, ps->device);
    snprintf(label, sizeof label, "%s grads", ps->label);
    ps->grads = nn_arena_new(label, ps->device);
    tensor **shapes = asvr_malloc(sizeof(tensor *) * (size_t)(ps->n ? ps->n : 1), "parameter shapes");
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        shapes[i] = p->w;
        p->w = nn_arena_add(ps->values, p->name, NN_F32, shapes[i]->ndim, shapes[i]->shape);
        p->g = p->trainable ? nn_arena_add(ps->grads, p->name, NN_F32, shapes[i]->ndim, shapes[i]->shape) : NULL;
        p->wc = p->w;
    }
    if (ps->compute_dtype != NN_F32) {
        snprintf(label, sizeof label, "%s %s copies", ps->label, nn_dtype_name(ps->compute_dtype));
        ps->compute = nn_arena_new(label, ps->device);
        for (int i = 0; i < ps->n; i++) {
            param *p = ps->v[i];
            if (p->w->ndim >= 2 && !p->keep_f32)
                p->wc = nn_arena_add(ps->compute, p->name, ps->compute_dtype, p->w->ndim, p->w->shape);
        }
        nn_arena_commit(ps->compute);
    }
    nn_arena_commit(ps->values);
    nn_arena_commit(ps->grads);
    for (int i = 0; i < ps->n; i++) free(shapes[i]);
    free(shapes);
    ps->committed = 1;
}

param *param_find(const param_set *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->v[i]->name, name) == 0) return ps->v[i];
    return NULL;
}

int param_set_load(param_set *ps, const safetensors *st, const char *prefix, asvr_error *err) {
    CHECK(ps->committed, "", "parameter set '%s' loaded before commit", ps->label);
    char key[256];
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        snprintf(key, sizeof key, "%s%s", prefix ? prefix : "", p->name);
        const st_tensor *s = safetensors_find(st, key);
        if (!s) return asvr_err_set(err, "tensor '%s' is missing; is this the right checkpoint?", key);
        int same = s->ndim == p->w->ndim;
        for (int d = 0; same && d < s->ndim; d++) same = s->shape[d] == p->w->shape[d];
        if (!same) {
            char want[96];
            tensor_shape_str(p->w, want, sizeof want);
            return asvr_err_set(err, "tensor '%s' in '%s' has %d dims / %lld elements, expected %s", key,
                                s->file ? s->file : "?", s->ndim, (long long)s->numel, want);
        }
        if (param_tensor_load(p->w, s, err) < 0) return asvr_err_prefix(err, "tensor '%s'", key);
    }
    param_set_sync_compute(ps);
    return 0;
}

void param_set_sync_compute(param_set *ps) {
    for (int i = 0; i < ps->n; i++)
        if (ps->v[i]->wc != ps->v[i]->w) op_copy(ps->v[i]->wc, ps->v[i]->w);
}

int param_tensor_load(tensor *t, const st_tensor *s, asvr_error *err) {
    CHECK(s->numel == tensor_numel(t), "", "param_tensor_load: '%s' has %lld elements, tensor '%s' %lld",
          s->name ? s->name : "?", (long long)s->numel, t->name, (long long)tensor_numel(t));
    if (t->device == NN_CPU && t->dtype == NN_F32) return st_tensor_to_f32(s, t->data, err);
    float *tmp = asvr_malloc(sizeof(float) * (size_t)(s->numel ? s->numel : 1), "a host staging buffer");
    int rc = st_tensor_to_f32(s, tmp, err);
    if (rc == 0) op_write_f32(t, tmp);
    free(tmp);
    return rc;
}

/* splitmix64 → uniform → Box-Muller, all in double: the same numbers on every machine. */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void param_set_init_random(param_set *ps, uint64_t seed) {
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        int64_t n = tensor_numel(p->w);
        int on_host = p->w->device == NN_CPU;
        float *w = on_host ? p->w->data : asvr_malloc(sizeof(float) * (size_t)n, "a host staging buffer");
        uint64_t s = seed ^ (0x51ED270B27A1F1C3ULL * (uint64_t)(i + 1));
        for (int64_t k = 0; k < n; k++) {
            if (p->init == PARAM_INIT_ZERO) w[k] = 0.0f;
            else if (p->init == PARAM_INIT_ONE) w[k] = 1.0f;
            else {
                double u1 = ((double)(sm64(&s) >> 11) + 1.0) / 9007199254740993.0;
                double u2 = (double)(sm64(&s) >> 11) / 9007199254740992.0;
                w[k] = (float)(p->init_std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
            }
        }
        if (!on_host) {
            op_write_f32(p->w, w);
            free(w);
        }
    }
    param_set_sync_compute(ps);
}

void param_set_zero_grads(param_set *ps) {
    for (int i = 0; i < ps->n; i++)
        if (ps->v[i]->g) op_fill(ps->v[i]->g, 0.0f);
}

int64_t param_set_count(const param_set *ps, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < ps->n; i++)
        if (!trainable_only || ps->v[i]->trainable) n += tensor_numel(ps->v[i]->w);
    return n;
}

void param_set_print(const param_set *ps, FILE *f) {
    fprintf(f, "parameters '%s' on %s: %d tensors, %lld scalars, %lld trainable (%.1f MiB values, %.1f MiB grads",
            ps->label, nn_device_name(ps->device), ps->n, (long long)param_set_count(ps, 0), (long long)param_set_count(ps, 1),
            ps->values ? (double)nn_arena_bytes(ps->values) / 1048576.0 : 0.0,
            ps->grads ? (double)nn_arena_bytes(ps->grads) / 1048576.0 : 0.0);
    if (ps->compute)
        fprintf(f, ", %.1f MiB %s compute copies", (double)nn_arena_bytes(ps->compute) / 1048576.0,
                nn_dtype_name(ps->compute_dtype));
    fprintf(f, ")\n");
}

void param_set_free(param_set *ps) {
    for (int i = 0; i < ps->n; i++) {
        if (!ps->committed) free(ps->v[i]->w);
        free(ps->v[i]);
    }
    free(ps->v);
    if (ps->values) nn_arena_free(ps->values);
    if (ps->grads) nn_arena_free(ps->grads);
    if (ps->compute) nn_arena_free(ps->compute);
    memset(ps, 0, sizeof *ps);
}
