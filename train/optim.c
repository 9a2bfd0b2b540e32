#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

double lr_schedule(int64_t step, int64_t warmup, int64_t total) {
    if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
    double progress = (double)(step - warmup) / (double)((total - warmup) > 1 ? (total - warmup) : 1);
    double v = 0.5 * (1.0 + cos(M_PI * 2.0 * 0.5 * progress));
    return v > 0 ? v : 0;
}

int64_t warmup_steps_from_ratio(double ratio, int64_t total) { return (int64_t)ceil(ratio * (double)total); }

/* A 1-d view of n elements of a flat buffer at element offset off (data NULL when the buffer has none). */
static tensor flat_range(const tensor *t, int64_t off, int64_t n, const char *name) {
    void *data = t && t->data ? (char *)t->data + (size_t)off * nn_dtype_size(t->dtype) : NULL;
    return tensor_make(name, t ? t->dtype : NN_F32, t ? t->device : NN_CPU, 1, (int64_t[]){n}, data);
}

/* The segments' views into the values, compute copies and state (the gradient's in optim_set_grad). */
static void build_views(optim *o) {
    param_set *ps = o->ps;
    size_t n = (size_t)(o->nseg ? o->nseg : 1);
    o->vp = asvr_calloc(n, sizeof(tensor), "optimizer views"), o->vg = asvr_calloc(n, sizeof(tensor), "optimizer views");
    o->vm = asvr_calloc(n, sizeof(tensor), "optimizer views"), o->vv = asvr_calloc(n, sizeof(tensor), "optimizer views");
    o->vpc = asvr_calloc(n, sizeof(tensor), "optimizer views");
    o->tp = asvr_calloc(n, sizeof(tensor *), "optimizer lists"), o->tg = asvr_calloc(n, sizeof(tensor *), "optimizer lists");
    o->tm = asvr_calloc(n, sizeof(tensor *), "optimizer lists"), o->tv = asvr_calloc(n, sizeof(tensor *), "optimizer lists");
    o->tpc = asvr_calloc(n, sizeof(tensor *), "optimizer lists");
    o->twd = asvr_calloc(n, sizeof(float), "optimizer lists");
    for (int k = 0; k < o->nseg; k++) {
        const optim_segment *s = &o->seg[k];
        const param *p = ps->v[s->param];
        /* the master values: the flat buffer, or (sharded masters) the rank's pieces, in the state layout */
        o->vp[k] = ps->master_sharded ? flat_range(ps->master, s->state, s->len, p->name)
                                      : flat_range(ps->flat_values, p->off + s->elem, s->len, p->name);
        o->vm[k] = flat_range(o->flat_m, s->state, s->len, "m");
        o->vv[k] = flat_range(o->flat_v, s->state, s->len, "v");
        o->tp[k] = &o->vp[k], o->tg[k] = &o->vg[k], o->tm[k] = &o->vm[k], o->tv[k] = &o->vv[k];
        o->tpc[k] = NULL;
        if (o->refresh_copies && p->wc != p->w) {
            o->vpc[k] = flat_range(ps->flat_compute, p->off + s->elem, s->len, p->name);
            o->tpc[k] = &o->vpc[k];
        }
        o->twd[k] = p->decay ? (float)o->c.weight_decay : 0.0f;
    }
}

static void init_common(optim *o, const optim_config *c, param_set *ps, int nseg, int64_t state_n) {
    memset(o, 0, sizeof *o);
    o->c = *c;
    o->ps = ps;
    o->state_n = state_n;
    o->nseg = nseg;
    o->seg = asvr_calloc((size_t)(nseg ? nseg : 1), sizeof *o->seg, "optimizer segments");
    o->state = nn_arena_new("optimizer state", ps->device);
    int64_t n = state_n ? state_n : PARAM_FLAT_ALIGN;
    o->flat_m = nn_arena_add(o->state, "m", NN_F32, 1, &n);
    o->flat_v = nn_arena_add(o->state, "v", NN_F32, 1, &n);
    nn_arena_commit(o->state);
}

void optim_init(optim *o, const optim_config *c, param_set *ps) {
    int n = 0;
    for (int i = 0; i < ps->n; i++) n += ps->v[i]->g != NULL;
    init_common(o, c, ps, n, ps->flat_n);
    int k = 0;
    for (int i = 0; i < ps->n; i++) {
        const param *p = ps->v[i];
        if (p->g) o->seg[k++] = (optim_segment){i, 0, p->numel, p->off};
    }
    o->refresh_copies = 1;
    build_views(o);
    if (ps->flat_grads) optim_set_grad(o, ps->flat_grads);
}

void optim_init_segments(optim *o, const optim_config *c, param_set *ps, int nseg, const optim_segment *seg,
                         int64_t state_n) {
    init_common(o, c, ps, nseg, state_n);
    if (nseg) memcpy(o->seg, seg, sizeof *seg * (size_t)nseg);
    o->refresh_copies = 0;
    build_views(o);
}

void optim_set_grad(optim *o, const tensor *grad) {
    CHECK(grad->dtype == NN_F32 && tensor_numel(grad) >= o->state_n, "", "optim_set_grad: '%s' must be f32 with %lld elements",
          grad->name, (long long)o->state_n);
    o->grad = grad;
    for (int k = 0; k < o->nseg; k++) o->vg[k] = flat_range(grad, o->seg[k].state, o->seg[k].len, "grad");
}

void optim_free(optim *o) {
    if (o->state) nn_arena_free(o->state);
    free(o->seg);
    free(o->vp), free(o->vg), free(o->vm), free(o->vv), free(o->vpc);
    free(o->tp), free(o->tg), free(o->tm), free(o->tv), free(o->tpc), free(o->twd);
    memset(o, 0, sizeof *o);
}

size_t optim_bytes(const optim *o) { return o->state ? nn_arena_bytes(o->state) : 0; }

double optim_step(optim *o, double *grad_norm, double *clip_coef) {
    CHECK(o->grad || !o->nseg, "", "optim_step: no gradient was set (optim_set_grad)");
    double sq = 0;
    if (o->nseg) op_grad_sqnorm_multi(&sq, o->nseg, (const tensor *const *)o->tg);
    if (o->sum_ranks) o->sum_ranks(o->sum_ctx, &sq);
    double norm = sqrt(sq), coef = 1.0;
    if (o->c.clip_norm > 0) {
        coef = o->c.clip_norm / (norm + 1e-6);
        if (coef >= 1.0) coef = 1.0;
    }
    double lr = o->c.lr * lr_schedule(o->step, o->c.warmup_steps, o->c.total_steps);
    /* AdamW on the clipped gradients (g scaled by coef on the fly, as torch's clip_grad_norm_ then
     * step give it), refreshing the bf16 copies the next forward computes with */
    if (o->nseg)
        op_adamw_multi(o->nseg, o->tp, o->tg, o->tm, o->tv, o->tpc, o->twd, (float)coef, (float)lr, (float)o->c.beta1,
                       (float)o->c.beta2, (float)o->c.eps, o->step + 1);
    o->step++;
    if (grad_norm) *grad_norm = norm;
    if (clip_coef) *clip_coef = coef;
    return lr;
}

int optim_holds_all(const optim *o, int i) {
    int64_t have = 0;
    for (int k = 0; k < o->nseg; k++)
        if (o->seg[k].param == i) have += o->seg[k].len;
    return have == o->ps->v[i]->numel;
}

void optim_get(const optim *o, int i, int which, float *full) {
    for (int k = 0; k < o->nseg; k++) {
        const optim_segment *s = &o->seg[k];
        if (s->param != i) continue;
        tensor src = flat_range(which ? o->flat_v : o->flat_m, s->state, s->len, "state");
        tensor dst = tensor_make("host", NN_F32, NN_CPU, 1, (int64_t[]){s->len}, full + s->elem);
        op_transfer(&dst, &src);
    }
}

void optim_set(optim *o, int i, int which, const float *full) {
    for (int k = 0; k < o->nseg; k++) {
        const optim_segment *s = &o->seg[k];
        if (s->param != i) continue;
        tensor dst = flat_range(which ? o->flat_v : o->flat_m, s->state, s->len, "state");
        tensor src = tensor_make("host", NN_F32, NN_CPU, 1, (int64_t[]){s->len}, (void *)(full + s->elem));
        op_transfer(&dst, &src);
    }
}
