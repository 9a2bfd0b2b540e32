#include "model/llama.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"

typedef struct llama_layer {
    param *ln_in, *q, *k, *v, *o, *ln_post, *gate, *up, *down;
} llama_layer;

struct llama {
    llama_config cfg;
    param *embed, *norm, *head;
    llama_layer *layer;
};

/* What one layer keeps for its backward. */
typedef struct llama_layer_acts {
    tensor *rstd_in, *xn_in, *q, *k, *v, *att, *attn, *hmid, *rstd_post, *xn_post, *gate, *up, *act;
} llama_layer_acts;

struct llama_acts {
    const llama *m;
    int B, T;
    int cur_b; /* rows of the last forward, 0 before the first */
    nn_arena *arena;
    tensor *pos, *seg;
    tensor **res; /* n_layers + 1: the residual stream entering each layer, then the final norm's input */
    llama_layer_acts *L;
    tensor *rstd_final, *branch;
    /* backward scratch */
    tensor *dres, *dxn, *dattn, *dq, *dk, *dv, *dgate, *dup, *att_scratch;
};

/* ---- config -------------------------------------------------------------------------------- */

static int json_int(json_t *o, const char *k, int required, int dflt, int *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!j || json_is_null(j)) {
        if (required) return asvr_err_set(err, "llama config: \"%s\" is missing", k);
        *v = dflt;
        return 0;
    }
    if (!json_is_integer(j) || json_integer_value(j) < 0 || json_integer_value(j) > 0x7fffffff)
        return asvr_err_set(err, "llama config: \"%s\" must be a non-negative integer", k);
    *v = (int)json_integer_value(j);
    return 0;
}

static int json_float(json_t *o, const char *k, float dflt, float *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!j || json_is_null(j)) {
        *v = dflt;
        return 0;
    }
    if (!json_is_number(j)) return asvr_err_set(err, "llama config: \"%s\" must be a number", k);
    *v = (float)json_number_value(j);
    return 0;
}

static int json_false_or_absent(json_t *o, const char *k, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!j || json_is_null(j) || json_is_false(j)) return 0;
    return asvr_err_set(err, "llama config: \"%s\" is set; this LLaMA implementation does not support it", k);
}

int llama_config_from_json(const char *json_text, llama_config *c, asvr_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *o = json_loads(json_text, 0, &je);
    if (!o) return asvr_err_set(err, "llama config: JSON error at line %d: %s", je.line, je.text);
    int rc = -1;
    if (!json_is_object(o)) {
        asvr_err_set(err, "llama config: not a JSON object");
        goto done;
    }
    if (json_int(o, "hidden_size", 1, 0, &c->dim, err) < 0 ||
        json_int(o, "num_hidden_layers", 1, 0, &c->n_layers, err) < 0 ||
        json_int(o, "num_attention_heads", 1, 0, &c->n_heads, err) < 0 ||
        json_int(o, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, err) < 0 ||
        json_int(o, "head_dim", 0, 0, &c->head_dim, err) < 0 ||
        json_int(o, "intermediate_size", 1, 0, &c->ffn_dim, err) < 0 ||
        json_int(o, "vocab_size", 1, 0, &c->vocab, err) < 0 ||
        json_float(o, "rms_norm_eps", 1e-6f, &c->rms_eps, err) < 0 ||
        json_float(o, "rope_theta", 1e4f, &c->rope_theta, err) < 0 ||
        json_int(o, "sliding_window", 0, 0, &c->sliding_window, err) < 0)
        goto done;
    json_t *act = json_object_get(o, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0)) {
        asvr_err_set(err, "llama config: \"hidden_act\" must be \"silu\" (SwiGLU)");
        goto done;
    }
    if (json_false_or_absent(o, "tie_word_embeddings", err) < 0 || json_false_or_absent(o, "attention_bias", err) < 0 ||
        json_false_or_absent(o, "mlp_bias", err) < 0 || json_false_or_absent(o, "rope_scaling", err) < 0)
        goto done;
    /* newer configs keep RoPE settings in one object */
    json_t *rp = json_object_get(o, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        json_t *type = json_object_get(rp, "rope_type");
        if (!json_is_object(rp) ||
            (type && !(json_is_string(type) && strcmp(json_string_value(type), "default") == 0))) {
            asvr_err_set(err, "llama config: \"rope_parameters\" must be an object with rope_type \"default\"");
            goto done;
        }
        if (json_float(rp, "rope_theta", c->rope_theta, &c->rope_theta, err) < 0) goto done;
    }
    /* a head_dim equal to the default is the same model */
    if (c->head_dim > 0 && c->n_heads > 0 && c->head_dim * c->n_heads == c->dim) c->head_dim = 0;
    rc = llama_config_check(c, err);
done:
    json_decref(o);
    return rc;
}

int llama_config_check(const llama_config *c, asvr_error *err) {
    if (c->dim <= 0 || c->n_layers <= 0 || c->ffn_dim <= 0 || c->vocab <= 0)
        return asvr_err_set(err, "llama config: hidden_size %d, layers %d, intermediate_size %d, vocab %d must be > 0",
                            c->dim, c->n_layers, c->ffn_dim, c->vocab);
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads)
        return asvr_err_set(err, "llama config: %d attention heads is not a positive multiple of %d kv heads",
                            c->n_heads, c->n_kv_heads);
    if (c->head_dim < 0 || (c->head_dim == 0 && c->dim % c->n_heads))
        return asvr_err_set(err, "llama config: hidden_size %d is not a multiple of %d heads (and no head_dim)",
                            c->dim, c->n_heads);
    if (llama_head_dim(c) % 2)
        return asvr_err_set(err, "llama config: head_dim %d must be even for RoPE", llama_head_dim(c));
    if (!(c->rms_eps > 0.0f)) return asvr_err_set(err, "llama config: rms_norm_eps %g must be > 0", (double)c->rms_eps);
    if (c->sliding_window < 0)
        return asvr_err_set(err, "llama config: sliding_window %d must be >= 0", c->sliding_window);
    if (!(c->rope_theta > 0.0f))
        return asvr_err_set(err, "llama config: rope_theta %g must be > 0", (double)c->rope_theta);
    return 0;
}

/* ---- parameters ---------------------------------------------------------------------------- */

#define LLAMA_INIT_STD 0.02f /* HF initializer_range */

llama *llama_new(const llama_config *c, param_set *ps, const char *prefix) {
    asvr_error err = {{0}};
    CHECK(llama_config_check(c, &err) == 0, "", "llama_new: %s", err.msg);
    const char *P = prefix ? prefix : "";
    llama *m = asvr_calloc(1, sizeof *m, "llama model");
    m->cfg = *c;
    m->layer = asvr_calloc((size_t)c->n_layers, sizeof *m->layer, "llama layers");
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab, hd = llama_head_dim(c);
    int64_t QD = hd * c->n_heads, KVD = hd * c->n_kv_heads;
    const float s = LLAMA_INIT_STD;
    m->embed = param_add(ps, 2, (int64_t[]){V, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.embed_tokens.weight", P);
    for (int i = 0; i < c->n_layers; i++) {
        llama_layer *L = &m->layer[i];
        L->ln_in = param_add(ps, 1, (int64_t[]){D}, 0, PARAM_INIT_ONE, 0, "%smodel.layers.%d.input_layernorm.weight", P, i);
        L->q = param_add(ps, 2, (int64_t[]){QD, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.self_attn.q_proj.weight", P, i);
        L->k = param_add(ps, 2, (int64_t[]){KVD, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.self_attn.k_proj.weight", P, i);
        L->v = param_add(ps, 2, (int64_t[]){KVD, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.self_attn.v_proj.weight", P, i);
        L->o = param_add(ps, 2, (int64_t[]){D, QD}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.self_attn.o_proj.weight", P, i);
        L->ln_post = param_add(ps, 1, (int64_t[]){D}, 0, PARAM_INIT_ONE, 0,
                               "%smodel.layers.%d.post_attention_layernorm.weight", P, i);
        L->gate = param_add(ps, 2, (int64_t[]){F, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.mlp.gate_proj.weight", P, i);
        L->up = param_add(ps, 2, (int64_t[]){F, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.mlp.up_proj.weight", P, i);
        L->down = param_add(ps, 2, (int64_t[]){D, F}, 1, PARAM_INIT_NORMAL, s, "%smodel.layers.%d.mlp.down_proj.weight", P, i);
    }
    m->norm = param_add(ps, 1, (int64_t[]){D}, 0, PARAM_INIT_ONE, 0, "%smodel.norm.weight", P);
    m->head = param_add(ps, 2, (int64_t[]){V, D}, 1, PARAM_INIT_NORMAL, s, "%slm_head.weight", P);
    return m;
}

const llama_config *llama_cfg(const llama *m) { return &m->cfg; }

void llama_print(const llama *m, FILE *f) {
    const llama_config *c = &m->cfg;
    int64_t hd = llama_head_dim(c), D = c->dim, F = c->ffn_dim, V = c->vocab;
    int64_t per_layer = 2 * D + D * hd * (2 * c->n_heads + 2 * c->n_kv_heads) + 3 * D * F;
    int64_t total = 2 * V * D + D + per_layer * c->n_layers;
    fprintf(f,
            "llama: dim %d, %d layers, %d heads x %lld (%d kv heads), ffn %d, vocab %d, rms eps %g, rope theta %g; "
            "%lld parameters\n",
            c->dim, c->n_layers, c->n_heads, (long long)hd, c->n_kv_heads, c->ffn_dim, c->vocab, (double)c->rms_eps,
            (double)c->rope_theta, (long long)total);
}

void llama_free(llama *m) {
    if (!m) return;
    free(m->layer);
    free(m);
}

/* ---- activations --------------------------------------------------------------------------- */

static tensor *add3(nn_arena *ar, const char *name, int64_t a, int64_t b, int64_t c) {
    return nn_arena_add(ar, name, NN_F32, 3, (int64_t[]){a, b, c});
}

llama_acts *llama_acts_new(const llama *m, int B, int T) {
    CHECK(B >= 1 && T >= 1, "", "llama activations for %d rows of %d positions", B, T);
    const llama_config *c = &m->cfg;
    CHECK(c->sliding_window == 0 || T <= c->sliding_window, "use rows no longer than the window",
          "llama: rows of %d positions exceed the sliding attention window %d, which is not implemented", T,
          c->sliding_window);
    int nl = c->n_layers;
    int64_t D = c->dim, F = c->ffn_dim, hd = llama_head_dim(c), QD = hd * c->n_heads, KVD = hd * c->n_kv_heads;
    llama_acts *a = asvr_calloc(1, sizeof *a, "llama activations");
    a->m = m;
    a->B = B;
    a->T = T;
    a->res = asvr_calloc((size_t)nl + 1, sizeof *a->res, "llama residual list");
    a->L = asvr_calloc((size_t)nl, sizeof *a->L, "llama layer activations");
    nn_arena *ar = a->arena = nn_arena_new("llama activations", NN_CPU);
    a->pos = nn_arena_add(ar, "positions", NN_I32, 2, (int64_t[]){B, T});
    a->seg = nn_arena_add(ar, "segments", NN_I32, 2, (int64_t[]){B, T});
    char nm[NN_NAME_MAX];
    for (int i = 0; i < nl; i++) {
        llama_layer_acts *L = &a->L[i];
#define NM(s) (snprintf(nm, sizeof nm, "layer%d.%s", i, s), nm)
        a->res[i] = add3(ar, NM("residual_in"), B, T, D);
        L->rstd_in = nn_arena_add(ar, NM("rstd_in"), NN_F32, 2, (int64_t[]){B, T});
        L->xn_in = add3(ar, NM("norm_in"), B, T, D);
        L->q = add3(ar, NM("q_rope"), B, T, QD);
        L->k = add3(ar, NM("k_rope"), B, T, KVD);
        L->v = add3(ar, NM("v"), B, T, KVD);
        L->att = nn_arena_add(ar, NM("attn_probs"), NN_F32, 4, (int64_t[]){B, c->n_heads, T, T});
        L->attn = add3(ar, NM("attn_out"), B, T, QD);
        L->hmid = add3(ar, NM("residual_mid"), B, T, D);
        L->rstd_post = nn_arena_add(ar, NM("rstd_post"), NN_F32, 2, (int64_t[]){B, T});
        L->xn_post = add3(ar, NM("norm_post"), B, T, D);
        L->gate = add3(ar, NM("mlp_gate"), B, T, F);
        L->up = add3(ar, NM("mlp_up"), B, T, F);
        L->act = add3(ar, NM("mlp_act"), B, T, F);
#undef NM
    }
    a->res[nl] = add3(ar, "final.residual", B, T, D);
    a->rstd_final = nn_arena_add(ar, "final.rstd", NN_F32, 2, (int64_t[]){B, T});
    a->branch = add3(ar, "branch_out", B, T, D);
    a->dres = add3(ar, "grad.residual", B, T, D);
    a->dxn = add3(ar, "grad.norm_out", B, T, D);
    a->dattn = add3(ar, "grad.attn_out", B, T, QD);
    a->dq = add3(ar, "grad.q", B, T, QD);
    a->dk = add3(ar, "grad.k", B, T, KVD);
    a->dv = add3(ar, "grad.v", B, T, KVD);
    a->dgate = add3(ar, "grad.mlp_gate", B, T, F);
    a->dup = add3(ar, "grad.mlp_up", B, T, F);
    a->att_scratch = nn_arena_add(ar, "grad.attn_scratch", NN_F32, 2, (int64_t[]){T, T});
    nn_arena_commit(ar);
    return a;
}

void llama_acts_print_plan(const llama_acts *a, FILE *f) { nn_arena_print_plan(a->arena, f); }

void llama_acts_free(llama_acts *a) {
    if (!a) return;
    nn_arena_free(a->arena);
    free(a->res);
    free(a->L);
    free(a);
}

/* ---- embedding ----------------------------------------------------------------------------- */

/* Calls fn on each maximal run of consecutive (row-major) positions whose ids are >= 0, with views
 * of the ids and of the matching rows of x. Index bookkeeping only. */
static void for_each_token_run(const llama *m, const tensor *ids, const tensor *x, const char *op,
                               void (*fn)(const llama *, tensor *ids_run, tensor *x_run)) {
    char s1[96], s2[96];
    CHECK(ids->device == NN_CPU && ids->dtype == NN_I32, "", "%s: ids '%s' must be i32 on the CPU", op, ids->name);
    CHECK(x->device == NN_CPU && (x->dtype == NN_F32), "", "%s: '%s' must be f32 on the CPU", op, x->name);
    int64_t n = tensor_numel(ids), D = m->cfg.dim;
    CHECK(tensor_rows(x) == n && tensor_cols(x) == D, "", "%s: '%s' %s does not match ids '%s' %s x %lld", op,
          x->name, tensor_shape_str(x, s1, sizeof s1), ids->name, tensor_shape_str(ids, s2, sizeof s2),
          (long long)D);
    int32_t *id = ids->data;
    float *xd = x->data;
    for (int64_t s = 0; s < n;) {
        if (id[s] < 0) {
            s++;
            continue;
        }
        int64_t e = s + 1;
        while (e < n && id[e] >= 0) e++;
        tensor ir = tensor_make("token ids run", NN_I32, NN_CPU, 1, (int64_t[]){e - s}, id + s);
        tensor xr = tensor_make(x->name, NN_F32, NN_CPU, 2, (int64_t[]){e - s, D}, xd + s * D);
        fn(m, &ir, &xr);
        s = e;
    }
}

static void embed_run(const llama *m, tensor *ids, tensor *x) { op_embedding(x, ids, m->embed->w); }
static void embed_backward_run(const llama *m, tensor *ids, tensor *dx) {
    op_embedding_backward(m->embed->g, dx, ids);
}

void llama_embed(const llama *m, const tensor *ids, tensor *x) {
    for_each_token_run(m, ids, x, "llama_embed", embed_run);
}

void llama_embed_backward(const llama *m, const tensor *ids, const tensor *dx) {
    if (!m->embed->g) return;
    for_each_token_run(m, ids, dx, "llama_embed_backward", embed_backward_run);
}

/* ---- forward / backward -------------------------------------------------------------------- */

static void check_io(const llama_acts *a, const char *op, const tensor *t, int64_t B, const char *what) {
    char s1[96];
    CHECK(t->ndim == 3 && t->shape[0] == B && t->shape[1] == a->T && t->shape[2] == a->m->cfg.dim, "",
          "%s: %s '%s' is %s, want [%lld, %d, %d]", op, what, t->name, tensor_shape_str(t, s1, sizeof s1),
          (long long)B, a->T, a->m->cfg.dim);
}

void llama_forward(const llama *m, llama_acts *a, const tensor *x, const tensor *pos, const tensor *seg,
                   tensor *h_final) {
    const char *op = "llama_forward";
    const llama_config *c = &m->cfg;
    CHECK(a->m == m, "", "%s: activations were planned for another model", op);
    CHECK(x->ndim == 3 && x->shape[0] >= 1 && x->shape[0] <= a->B, "", "%s: x '%s' has %lld rows, planned 1..%d",
          op, x->name, x->ndim == 3 ? (long long)x->shape[0] : -1LL, a->B);
    int64_t B = x->shape[0];
    check_io(a, op, x, B, "inputs_embeds");
    check_io(a, op, h_final, B, "h_final");
    tensor posv = tensor_head0(a->pos, B), segv = tensor_head0(a->seg, B);
    op_copy(&posv, pos); /* checks dtype and size */
    op_copy(&segv, seg);
    a->cur_b = (int)B;

    int64_t hd = llama_head_dim(c);
    float scale = 1.0f / sqrtf((float)hd);
    tensor branch = tensor_head0(a->branch, B);
    tensor res0 = tensor_head0(a->res[0], B);
    op_copy(&res0, x);
    for (int i = 0; i < c->n_layers; i++) {
        const llama_layer *W = &m->layer[i];
        llama_layer_acts *S = &a->L[i];
        tensor res = tensor_head0(a->res[i], B), next = tensor_head0(a->res[i + 1], B);
        tensor rstd_in = tensor_head0(S->rstd_in, B), xn_in = tensor_head0(S->xn_in, B);
        tensor q = tensor_head0(S->q, B), k = tensor_head0(S->k, B), v = tensor_head0(S->v, B);
        tensor att = tensor_head0(S->att, B), attn = tensor_head0(S->attn, B), hmid = tensor_head0(S->hmid, B);
        tensor rstd_post = tensor_head0(S->rstd_post, B), xn_post = tensor_head0(S->xn_post, B);
        tensor gate = tensor_head0(S->gate, B), up = tensor_head0(S->up, B), act = tensor_head0(S->act, B);

        op_rmsnorm(&xn_in, &res, W->ln_in->w, c->rms_eps, &rstd_in);
        op_matmul(&q, &xn_in, W->q->w, NULL, NN_ACT_NONE, NULL);
        op_matmul(&k, &xn_in, W->k->w, NULL, NN_ACT_NONE, NULL);
        op_matmul(&v, &xn_in, W->v->w, NULL, NN_ACT_NONE, NULL);
        op_rope(&q, &q, &posv, c->n_heads, c->rope_theta);
        op_rope(&k, &k, &posv, c->n_kv_heads, c->rope_theta);
        op_attention_seg(&attn, &q, &k, &v, c->n_heads, c->n_kv_heads, scale, 1, &segv, &att);
        op_matmul(&branch, &attn, W->o->w, NULL, NN_ACT_NONE, NULL);
        op_add(&hmid, &res, &branch);

        op_rmsnorm(&xn_post, &hmid, W->ln_post->w, c->rms_eps, &rstd_post);
        op_matmul(&gate, &xn_post, W->gate->w, NULL, NN_ACT_NONE, NULL);
        op_matmul(&up, &xn_post, W->up->w, NULL, NN_ACT_NONE, NULL);
        op_swiglu(&act, &gate, &up);
        op_matmul(&branch, &act, W->down->w, NULL, NN_ACT_NONE, NULL);
        op_add(&next, &hmid, &branch);
    }
    tensor last = tensor_head0(a->res[c->n_layers], B), rstd_f = tensor_head0(a->rstd_final, B);
    op_rmsnorm(h_final, &last, m->norm->w, c->rms_eps, &rstd_f);
}

static tensor *g_of(const param *p) { return p->g; }

void llama_backward(const llama *m, llama_acts *a, const tensor *dh, tensor *dx) {
    const char *op = "llama_backward";
    const llama_config *c = &m->cfg;
    CHECK(a->m == m, "", "%s: activations were planned for another model", op);
    CHECK(a->cur_b > 0, "", "%s: no forward was run on these activations", op);
    int64_t B = a->cur_b;
    check_io(a, op, dh, B, "dh");
    if (dx) check_io(a, op, dx, B, "dx");
    int64_t hd = llama_head_dim(c);
    float scale = 1.0f / sqrtf((float)hd);
    tensor posv = tensor_head0(a->pos, B);
    tensor dres = tensor_head0(a->dres, B), dxn = tensor_head0(a->dxn, B), dattn = tensor_head0(a->dattn, B);
    tensor dq = tensor_head0(a->dq, B), dk = tensor_head0(a->dk, B), dv = tensor_head0(a->dv, B);
    tensor dgate = tensor_head0(a->dgate, B), dup = tensor_head0(a->dup, B);

    tensor last = tensor_head0(a->res[c->n_layers], B), rstd_f = tensor_head0(a->rstd_final, B);
    op_rmsnorm_backward(&dres, g_of(m->norm), dh, &last, m->norm->w, &rstd_f, 0);
    for (int i = c->n_layers - 1; i >= 0; i--) {
        const llama_layer *W = &m->layer[i];
        llama_layer_acts *S = &a->L[i];
        tensor res = tensor_head0(a->res[i], B);
        tensor rstd_in = tensor_head0(S->rstd_in, B), xn_in = tensor_head0(S->xn_in, B);
        tensor q = tensor_head0(S->q, B), k = tensor_head0(S->k, B), v = tensor_head0(S->v, B);
        tensor att = tensor_head0(S->att, B), attn = tensor_head0(S->attn, B), hmid = tensor_head0(S->hmid, B);
        tensor rstd_post = tensor_head0(S->rstd_post, B), xn_post = tensor_head0(S->xn_post, B);
        tensor gate = tensor_head0(S->gate, B), up = tensor_head0(S->up, B), act = tensor_head0(S->act, B);

        /* MLP branch: dres is d/d(residual after the layer) = d/d(down output) */
        op_matmul_backward(&dgate, g_of(W->down), NULL, &dres, &act, W->down->w, NN_ACT_NONE, NULL, 0);
        op_swiglu_backward(&dgate, &dup, &dgate, &gate, &up); /* dgate holds d act, overwritten in place */
        op_matmul_backward(&dxn, g_of(W->gate), NULL, &dgate, &xn_post, W->gate->w, NN_ACT_NONE, NULL, 0);
        op_matmul_backward(&dxn, g_of(W->up), NULL, &dup, &xn_post, W->up->w, NN_ACT_NONE, NULL, 1);
        op_rmsnorm_backward(&dres, g_of(W->ln_post), &dxn, &hmid, W->ln_post->w, &rstd_post, 1);

        /* attention branch: dres is now d/d(residual after attention) */
        op_matmul_backward(&dattn, g_of(W->o), NULL, &dres, &attn, W->o->w, NN_ACT_NONE, NULL, 0);
        op_attention_backward(&dq, &dk, &dv, &dattn, &q, &k, &v, &att, c->n_heads, c->n_kv_heads, scale,
                              a->att_scratch);
        op_rope_backward(&dq, &dq, &posv, c->n_heads, c->rope_theta);
        op_rope_backward(&dk, &dk, &posv, c->n_kv_heads, c->rope_theta);
        op_matmul_backward(&dxn, g_of(W->q), NULL, &dq, &xn_in, W->q->w, NN_ACT_NONE, NULL, 0);
        op_matmul_backward(&dxn, g_of(W->k), NULL, &dk, &xn_in, W->k->w, NN_ACT_NONE, NULL, 1);
        op_matmul_backward(&dxn, g_of(W->v), NULL, &dv, &xn_in, W->v->w, NN_ACT_NONE, NULL, 1);
        op_rmsnorm_backward(&dres, g_of(W->ln_in), &dxn, &res, W->ln_in->w, &rstd_in, 1);
    }
    if (dx) op_copy(dx, &dres);
}

/* ---- lm_head ------------------------------------------------------------------------------- */

void llama_lm_head(const llama *m, const tensor *h, tensor *logits) {
    op_matmul(logits, h, m->head->w, NULL, NN_ACT_NONE, NULL);
}

void llama_lm_head_backward(const llama *m, const tensor *dlogits, const tensor *h, tensor *dh,
                            int accumulate_dh) {
    /* with no activation op_matmul_backward only reads dy, so dropping const is safe */
    tensor dy = *dlogits;
    op_matmul_backward(dh, m->head->g, NULL, &dy, h, m->head->w, NN_ACT_NONE, NULL, accumulate_dh);
}
