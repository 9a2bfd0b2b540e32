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

void optim_init(optim *o, const optim_config *c, param_set *ps) {
    memset(o, 0, sizeof *o);
    o->c = *c;
    o->ps = ps;
    o->state = nn_arena_new("optimizer state", ps->device);
    int64_t fn = ps->flat_n ? ps->flat_n : PARAM_FLAT_ALIGN;
    o->flat_m = nn_arena_add(o->state, "m", NN_F32, 1, &fn);
    o->flat_v = nn_arena_add(o->state, "v", NN_F32, 1, &fn);
    nn_arena_commit(o->state);
    o->m = asvr_calloc((size_t)(ps->n ? ps->n : 1), sizeof(tensor *), "optimizer state");
    o->v = asvr_calloc((size_t)(ps->n ? ps->n : 1), sizeof(tensor *), "optimizer state");
    o->views = asvr_calloc((size_t)(2 * ps->n + 1), sizeof(tensor), "optimizer state views");
    char name[NN_NAME_MAX + 8];
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        if (!p->g) continue;
        tensor *mv[2] = {o->flat_m, o->flat_v};
        for (int k = 0; k < 2; k++) {
            tensor *t = &o->views[2 * i + k];
            snprintf(name, sizeof name, "%s.%s", k ? "v" : "m", p->name);
            void *data = mv[k]->data ? (char *)mv[k]->data + (size_t)p->off * sizeof(float) : NULL;
            *t = tensor_make(name, NN_F32, ps->device, p->ndim, p->shape, data);
            if (k) o->v[i] = t;
            else o->m[i] = t;
        }
    }
    size_t cap = (size_t)(ps->n ? ps->n : 1);
    o->tp = asvr_calloc(cap, sizeof(tensor *), "optimizer lists");
    o->tg = asvr_calloc(cap, sizeof(tensor *), "optimizer lists");
    o->tm = asvr_calloc(cap, sizeof(tensor *), "optimizer lists");
    o->tv = asvr_calloc(cap, sizeof(tensor *), "optimizer lists");
    o->tpc = asvr_calloc(cap, sizeof(tensor *), "optimizer lists");
    o->twd = asvr_calloc(cap, sizeof(float), "optimizer lists");
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        if (!p->g) continue;
        int k = o->nt++;
        o->tp[k] = p->w, o->tg[k] = p->g, o->tm[k] = o->m[i], o->tv[k] = o->v[i];
        o->tpc[k] = p->wc != p->w ? p->wc : NULL;
        o->twd[k] = p->decay ? (float)c->weight_decay : 0.0f;
    }
}

void optim_free(optim *o) {
    if (o->state) nn_arena_free(o->state);
    free(o->m);
    free(o->v);
    free(o->views);
    free(o->tp), free(o->tg), free(o->tm), free(o->tv), free(o->tpc), free(o->twd);
    memset(o, 0, sizeof *o);
}

size_t optim_bytes(const optim *o) { return o->state ? nn_arena_bytes(o->state) : 0; }

double optim_step(optim *o, double *grad_norm, double *clip_coef) {
    double sq = 0;
    if (o->nt) op_grad_sqnorm_multi(&sq, o->nt, (const tensor *const *)o->tg);
    double norm = sqrt(sq), coef = 1.0;
    if (o->c.clip_norm > 0) {
        coef = o->c.clip_norm / (norm + 1e-6);
        if (coef >= 1.0) coef = 1.0;
    }
    double lr = o->c.lr * lr_schedule(o->step, o->c.warmup_steps, o->c.total_steps);
    /* AdamW on the clipped gradients (g scaled by coef on the fly, as torch's clip_grad_norm_ then
     * step give it), refreshing the bf16 copies the next forward computes with */
    if (o->nt)
        op_adamw_multi(o->nt, o->tp, o->tg, o->tm, o->tv, o->tpc, o->twd, (float)coef, (float)lr, (float)o->c.beta1,
                       (float)o->c.beta2, (float)o->c.eps, o->step + 1);
    o->step++;
    if (grad_norm) *grad_norm = norm;
    if (clip_coef) *clip_coef = coef;
    return lr;
}
