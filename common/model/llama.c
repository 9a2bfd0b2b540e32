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
    param_set *ps;   /* where the parameters were declared (the backward reports its progress there) */
    char prefix[64];
    param *embed, *norm, *head;
    llama_layer *layer;
};

/* What one layer keeps for its backward. */
typedef struct llama_layer_acts {
    tensor *rstd_in, *xn_in, *q, *k, *v, *att, *attn, *hmid, *rstd_post, *xn_post, *gate, *up, *act;
    tensor *lse; /* flash: [B, H, T] log-sum-exp per query instead of att */
} llama_layer_acts;

struct llama_acts {
    const llama *m;
    int B, T;
    int flash; /* 1: op_flash_attention (keeps lse [B,H,T]); 0: op_attention_seg (keeps [B,H,T,T]) */
    unsigned char *rc; /* [n_layers]: 1 for the recomputed layers, which share one set of activations */
    int shared_holds; /* the recomputed layer whose activations the shared set holds now (-1: none) */
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
        json_int(o, "sliding_window", 0, 0, &c->sliding_window, err) < 0 ||
        json_int(o, "max_position_embeddings", 0, 0, &c->max_positions, err) < 0)
        goto done;
    json_t *act = json_object_get(o, "hidden_act");
    if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0)) {
        asvr_err_set(err, "llama config: \"hidden_act\" must be \"silu\" (SwiGLU)");
        goto done;
    }
    if (json_false_or_absent(o, "tie_word_embeddings", err) < 0 || json_false_or_absent(o, "attention_bias", err) < 0 ||
        json_false_or_absent(o, "mlp_bias", err) < 0 || json_false_or_absent(o, "rope_scaling", err) < 0)
        goto done;
    float dropout = 0.0f;
    if (json_float(o, "attention_dropout", 0.0f, &dropout, err) < 0) goto done;
    if (dropout != 0.0f) {
        asvr_err_set(err, "llama config: \"attention_dropout\" is %g; training without dropout is what this model implements",
                     (double)dropout);
        goto done;
    }
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
    if (c->dim > (1 << 20) || c->ffn_dim > (1 << 22) || c->vocab > (1 << 24) || c->n_layers > 4096 ||
        c->n_heads > 4096 || c->head_dim > 65536)
        return asvr_err_set(err, "llama config: hidden_size %d, intermediate_size %d, vocab %d, layers %d, heads %d or "
                                 "head_dim %d out of range", c->dim, c->ffn_dim, c->vocab, c->n_layers, c->n_heads,
                            c->head_dim);
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
    m->ps = ps;
    CHECK(strlen(P) < sizeof m->prefix, "", "llama_new: prefix '%s' too long", P);
    snprintf(m->prefix, sizeof m->prefix, "%s", P);
    m->layer = asvr_calloc((size_t)c->n_layers, sizeof *m->layer, "llama layers");
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab, hd = llama_head_dim(c);
    int64_t QD = hd * c->n_heads, KVD = hd * c->n_kv_heads;
    const float s = LLAMA_INIT_STD;
    m->embed = param_add(ps, 2, (int64_t[]){V, D}, 1, PARAM_INIT_NORMAL, s, "%smodel.embed_tokens.weight", P);
    m->embed->keep_f32 = 1; /* looked up, never multiplied */
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

static tensor *add3t(nn_arena *ar, const char *name, nn_dtype dt, int64_t a, int64_t b, int64_t c) {
    return nn_arena_add(ar, name, dt, 3, (int64_t[]){a, b, c});
}
static tensor *add3(nn_arena *ar, const char *name, int64_t a, int64_t b, int64_t c) {
    return add3t(ar, name, NN_F32, a, b, c);
}

llama_acts *llama_acts_new(const llama *m, int B, int T) { return llama_acts_new_ex(m, B, T, 0, 0); }

llama_acts *llama_acts_new_ex(const llama *m, int B, int T, int flash, int recompute) {
    CHECK(recompute >= 0 && recompute <= m->cfg.n_layers, "give 0 .. the number of layers",
          "llama: %d recomputed layers of %d", recompute, m->cfg.n_layers);
    unsigned char *mask = asvr_calloc((size_t)m->cfg.n_layers, 1, "recompute mask");
    for (int i = 0; i < recompute; i++) mask[i] = 1;
    llama_acts *a = llama_acts_new_sel(m, B, T, flash, mask);
    free(mask);
    return a;
}

llama_acts *llama_acts_new_sel(const llama *m, int B, int T, int flash, const unsigned char *recompute_mask) {
    CHECK(B >= 1 && T >= 1, "", "llama activations for %d rows of %d positions", B, T);
    const llama_config *c = &m->cfg;
    int nl = c->n_layers;
    int64_t D = c->dim, F = c->ffn_dim, hd = llama_head_dim(c), QD = hd * c->n_heads, KVD = hd * c->n_kv_heads;
    /* Mixed precision: with bf16 weight copies, what feeds a GEMM or the attention (norm outputs, q/k/v,
     * attention and MLP activations, and their gradients) is kept in bf16; the residual stream, its
     * gradient, the norm statistics and the sums of several GEMMs (grad.norm_out) stay f32. */
    nn_dtype cdt = m->layer[0].q->wc->dtype;
    llama_acts *a = asvr_calloc(1, sizeof *a, "llama activations");
    a->m = m;
    a->B = B;
    a->T = T;
    a->flash = flash != 0;
    a->rc = asvr_calloc((size_t)c->n_layers, 1, "recompute mask");
    int owner = -1; /* the first recomputed layer: its set is the shared one */
    for (int i = 0; recompute_mask && i < c->n_layers; i++) {
        a->rc[i] = recompute_mask[i] != 0;
        if (a->rc[i] && owner < 0) owner = i;
    }
    a->shared_holds = -1;
    a->res = asvr_calloc((size_t)nl + 1, sizeof *a->res, "llama residual list");
    a->L = asvr_calloc((size_t)nl, sizeof *a->L, "llama layer activations");
    nn_arena *ar = a->arena = nn_arena_new("llama activations", m->embed->w->device);
    a->pos = nn_arena_add(ar, "positions", NN_I32, 2, (int64_t[]){B, T});
    a->seg = nn_arena_add(ar, "segments", NN_I32, 2, (int64_t[]){B, T});
    char nm[NN_NAME_MAX], layer_name[32];
    for (int i = 0; i < nl; i++) {
        llama_layer_acts *L = &a->L[i];
        snprintf(layer_name, sizeof layer_name, "layer%d", i);
#define NM(s) (snprintf(nm, sizeof nm, "%s.%s", layer_name, s), nm)
        a->res[i] = add3(ar, NM("residual_in"), B, T, D);
        if (a->rc[i] && i != owner) { /* the recomputed layers share the first one's set */
            *L = a->L[owner];
            continue;
        }
        if (i == owner) snprintf(layer_name, sizeof layer_name, "recomputed_layers");
        L->rstd_in = nn_arena_add(ar, NM("rstd_in"), NN_F32, 2, (int64_t[]){B, T});
        L->xn_in = add3t(ar, NM("norm_in"), cdt, B, T, D);
        L->q = add3t(ar, NM("q_rope"), cdt, B, T, QD);
        L->k = add3t(ar, NM("k_rope"), cdt, B, T, KVD);
        L->v = add3t(ar, NM("v"), cdt, B, T, KVD);
        if (a->flash) L->lse = nn_arena_add(ar, NM("attn_lse"), NN_F32, 3, (int64_t[]){B, c->n_heads, T});
        else L->att = nn_arena_add(ar, NM("attn_probs"), NN_F32, 4, (int64_t[]){B, c->n_heads, T, T});
        L->attn = add3t(ar, NM("attn_out"), cdt, B, T, QD);
        L->hmid = add3(ar, NM("residual_mid"), B, T, D);
        L->rstd_post = nn_arena_add(ar, NM("rstd_post"), NN_F32, 2, (int64_t[]){B, T});
        L->xn_post = add3t(ar, NM("norm_post"), cdt, B, T, D);
        L->gate = add3t(ar, NM("mlp_gate"), cdt, B, T, F);
        L->up = add3t(ar, NM("mlp_up"), cdt, B, T, F);
        L->act = add3t(ar, NM("mlp_act"), cdt, B, T, F);
#undef NM
    }
    a->res[nl] = add3(ar, "final.residual", B, T, D);
    a->rstd_final = nn_arena_add(ar, "final.rstd", NN_F32, 2, (int64_t[]){B, T});
    a->branch = add3(ar, "branch_out", B, T, D);
    a->dres = add3(ar, "grad.residual", B, T, D);
    a->dxn = add3(ar, "grad.norm_out", B, T, D);
    a->dattn = add3t(ar, "grad.attn_out", cdt, B, T, QD);
    a->dq = add3t(ar, "grad.q", cdt, B, T, QD);
    a->dk = add3t(ar, "grad.k", cdt, B, T, KVD);
    a->dv = add3t(ar, "grad.v", cdt, B, T, KVD);
    a->dgate = add3t(ar, "grad.mlp_gate", cdt, B, T, F);
    a->dup = add3t(ar, "grad.mlp_up", cdt, B, T, F);
    if (!a->flash) a->att_scratch = nn_arena_add(ar, "grad.attn_scratch", NN_F32, 2, (int64_t[]){T, T});
    nn_arena_commit(ar);
    return a;
}

void llama_acts_print_plan(const llama_acts *a, FILE *f) { nn_arena_print_plan(a->arena, f); }
size_t llama_acts_bytes(const llama_acts *a) { return nn_arena_bytes(a->arena); }

void llama_acts_free(llama_acts *a) {
    if (!a) return;
    nn_arena_free(a->arena);
    free(a->res);
    free(a->L);
    free(a->rc);
    free(a);
}

/* ---- embedding ----------------------------------------------------------------------------- */

static void check_embed_io(const llama *m, const tensor *ids, const tensor *x, const char *op) {
    char s1[96], s2[96];
    CHECK(ids->dtype == NN_I32 && ids->device == x->device, "", "%s: ids '%s' must be i32 on %s, where '%s' is", op,
          ids->name, nn_device_name(x->device), x->name);
    int64_t n = tensor_numel(ids), D = m->cfg.dim;
    CHECK(tensor_rows(x) == n && tensor_cols(x) == D, "", "%s: '%s' %s does not match ids '%s' %s x %lld", op,
          x->name, tensor_shape_str(x, s1, sizeof s1), ids->name, tensor_shape_str(ids, s2, sizeof s2),
          (long long)D);
}

/* The gradients of the parameters named prefix + part... are final for this pass (params.h). */
static void grads_done(const llama *m, const char *part) {
    char name[NN_NAME_MAX + 64];
    snprintf(name, sizeof name, "%s%s", m->prefix, part);
    param_set_grads_done(m->ps, name);
}

static void layer_grads_done(const llama *m, int i) {
    char part[48];
    snprintf(part, sizeof part, "model.layers.%d.", i);
    grads_done(m, part);
}

void llama_slot_order(const llama *m, int *n, char ***prefixes) {
    int L = m->cfg.n_layers, k = 0;
    char **v = asvr_calloc((size_t)L + 3, sizeof *v, "the slot order");
    char name[NN_NAME_MAX + 64];
    snprintf(name, sizeof name, "%slm_head.", m->prefix), v[k++] = asvr_strdup(name);
    snprintf(name, sizeof name, "%smodel.norm.", m->prefix), v[k++] = asvr_strdup(name);
    for (int i = L - 1; i >= 0; i--) snprintf(name, sizeof name, "%smodel.layers.%d.", m->prefix, i), v[k++] = asvr_strdup(name);
    snprintf(name, sizeof name, "%smodel.embed_tokens.", m->prefix), v[k++] = asvr_strdup(name);
    *n = k;
    *prefixes = v;
}

void llama_embed(const llama *m, const tensor *ids, tensor *x) {
    check_embed_io(m, ids, x, "llama_embed");
    op_embedding_skip(x, ids, m->embed->wc);
}

void llama_embed_backward(const llama *m, const tensor *ids, const tensor *dx) {
    if (!m->embed->g) return;
    check_embed_io(m, ids, dx, "llama_embed_backward");
    op_embedding_skip_backward(m->embed->g, dx, ids);
    grads_done(m, "model.embed_tokens.");
}

/* ---- forward / backward -------------------------------------------------------------------- */

static void check_io(const llama_acts *a, const char *op, const tensor *t, int64_t B, const char *what) {
    char s1[96];
    CHECK(t->ndim == 3 && t->shape[0] == B && t->shape[1] == a->T && t->shape[2] == a->m->cfg.dim, "",
          "%s: %s '%s' is %s, want [%lld, %d, %d]", op, what, t->name, tensor_shape_str(t, s1, sizeof s1),
          (long long)B, a->T, a->m->cfg.dim);
}

/* Layer i's forward over the first B rows: reads res[i], writes its kept activations and (write_next)
 * res[i + 1]. The backward calls it again, without write_next, for a recomputed layer. */
static void layer_forward(const llama *m, llama_acts *a, int i, int64_t B, float scale, int write_next) {
    const llama_config *c = &m->cfg;
    tensor posv = tensor_head0(a->pos, B), segv = tensor_head0(a->seg, B);
    tensor branch = tensor_head0(a->branch, B);
    const llama_layer *W = &m->layer[i];
    llama_layer_acts *S = &a->L[i];
    if (a->rc[i]) a->shared_holds = i;
    tensor res = tensor_head0(a->res[i], B), next = tensor_head0(a->res[i + 1], B);
    tensor rstd_in = tensor_head0(S->rstd_in, B), xn_in = tensor_head0(S->xn_in, B);
    tensor q = tensor_head0(S->q, B), k = tensor_head0(S->k, B), v = tensor_head0(S->v, B);
    tensor attn = tensor_head0(S->attn, B), hmid = tensor_head0(S->hmid, B);
    tensor rstd_post = tensor_head0(S->rstd_post, B), xn_post = tensor_head0(S->xn_post, B);
    tensor gate = tensor_head0(S->gate, B), up = tensor_head0(S->up, B), act = tensor_head0(S->act, B);

    op_rmsnorm(&xn_in, &res, W->ln_in->wc, c->rms_eps, &rstd_in);
    op_matmul(&q, &xn_in, W->q->wc, NULL, NN_ACT_NONE, NULL);
    op_matmul(&k, &xn_in, W->k->wc, NULL, NN_ACT_NONE, NULL);
    op_matmul(&v, &xn_in, W->v->wc, NULL, NN_ACT_NONE, NULL);
    op_rope(&q, &q, &posv, c->n_heads, c->rope_theta);
    op_rope(&k, &k, &posv, c->n_kv_heads, c->rope_theta);
    if (a->flash) {
        tensor lse = tensor_head0(S->lse, B);
        op_flash_attention(&attn, &lse, &q, &k, &v, c->n_heads, c->n_kv_heads, scale, 1, &segv);
    } else {
        tensor att = tensor_head0(S->att, B);
        op_attention_seg(&attn, &q, &k, &v, c->n_heads, c->n_kv_heads, scale, 1, &segv, &att, NN_ATT_KEEP);
    }
    op_matmul(&branch, &attn, W->o->wc, NULL, NN_ACT_NONE, NULL);
    op_add_rmsnorm(&hmid, &xn_post, &res, &branch, W->ln_post->wc, c->rms_eps, &rstd_post);
    op_matmul(&gate, &xn_post, W->gate->wc, NULL, NN_ACT_NONE, NULL);
    op_matmul(&up, &xn_post, W->up->wc, NULL, NN_ACT_NONE, NULL);
    op_swiglu(&act, &gate, &up);
    if (write_next) { /* the backward of a recomputed layer needs nothing past the MLP activation */
        op_matmul(&branch, &act, W->down->wc, NULL, NN_ACT_NONE, NULL);
        op_add(&next, &hmid, &branch);
    }
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
    tensor res0 = tensor_head0(a->res[0], B);
    op_copy(&res0, x);
    for (int i = 0; i < c->n_layers; i++) layer_forward(m, a, i, B, scale, 1);
    tensor last = tensor_head0(a->res[c->n_layers], B), rstd_f = tensor_head0(a->rstd_final, B);
    op_rmsnorm(h_final, &last, m->norm->wc, c->rms_eps, &rstd_f);
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
    tensor posv = tensor_head0(a->pos, B), segv = tensor_head0(a->seg, B);
    tensor dres = tensor_head0(a->dres, B), dxn = tensor_head0(a->dxn, B), dattn = tensor_head0(a->dattn, B);
    tensor dq = tensor_head0(a->dq, B), dk = tensor_head0(a->dk, B), dv = tensor_head0(a->dv, B);
    tensor dgate = tensor_head0(a->dgate, B), dup = tensor_head0(a->dup, B);

    tensor last = tensor_head0(a->res[c->n_layers], B), rstd_f = tensor_head0(a->rstd_final, B);
    op_rmsnorm_backward(&dres, g_of(m->norm), dh, &last, m->norm->wc, &rstd_f, 0);
    grads_done(m, "model.norm.");
    for (int i = c->n_layers - 1; i >= 0; i--) {
        const llama_layer *W = &m->layer[i];
        llama_layer_acts *S = &a->L[i];
        if (a->rc[i] && a->shared_holds != i) layer_forward(m, a, i, B, scale, 0);
        tensor res = tensor_head0(a->res[i], B);
        tensor rstd_in = tensor_head0(S->rstd_in, B), xn_in = tensor_head0(S->xn_in, B);
        tensor q = tensor_head0(S->q, B), k = tensor_head0(S->k, B), v = tensor_head0(S->v, B);
        tensor attn = tensor_head0(S->attn, B), hmid = tensor_head0(S->hmid, B);
        tensor rstd_post = tensor_head0(S->rstd_post, B), xn_post = tensor_head0(S->xn_post, B);
        tensor gate = tensor_head0(S->gate, B), up = tensor_head0(S->up, B), act = tensor_head0(S->act, B);

        /* MLP branch: dres is d/d(residual after the layer) = d/d(down output) */
        op_matmul_backward(&dgate, g_of(W->down), NULL, &dres, &act, W->down->wc, NN_ACT_NONE, NULL, 0);
        op_swiglu_backward(&dgate, &dup, &dgate, &gate, &up); /* dgate holds d act, overwritten in place */
        op_matmul_backward(&dxn, g_of(W->gate), NULL, &dgate, &xn_post, W->gate->wc, NN_ACT_NONE, NULL, 0);
        op_matmul_backward(&dxn, g_of(W->up), NULL, &dup, &xn_post, W->up->wc, NN_ACT_NONE, NULL, 1);
        op_rmsnorm_backward(&dres, g_of(W->ln_post), &dxn, &hmid, W->ln_post->wc, &rstd_post, 1);

        /* attention branch: dres is now d/d(residual after attention) */
        op_matmul_backward(&dattn, g_of(W->o), NULL, &dres, &attn, W->o->wc, NN_ACT_NONE, NULL, 0);
        if (a->flash) {
            tensor lse = tensor_head0(S->lse, B);
            op_flash_attention_backward(&dq, &dk, &dv, &dattn, &q, &k, &v, &attn, &lse, c->n_heads, c->n_kv_heads,
                                        scale, 1, &segv);
        } else {
            tensor att = tensor_head0(S->att, B);
            op_attention_backward(&dq, &dk, &dv, &dattn, &q, &k, &v, &att, c->n_heads, c->n_kv_heads, scale,
                                  a->att_scratch);
        }
        op_rope_backward(&dq, &dq, &posv, c->n_heads, c->rope_theta);
        op_rope_backward(&dk, &dk, &posv, c->n_kv_heads, c->rope_theta);
        op_matmul_backward(&dxn, g_of(W->q), NULL, &dq, &xn_in, W->q->wc, NN_ACT_NONE, NULL, 0);
        op_matmul_backward(&dxn, g_of(W->k), NULL, &dk, &xn_in, W->k->wc, NN_ACT_NONE, NULL, 1);
        op_matmul_backward(&dxn, g_of(W->v), NULL, &dv, &xn_in, W->v->wc, NN_ACT_NONE, NULL, 1);
        op_rmsnorm_backward(&dres, g_of(W->ln_in), &dxn, &res, W->ln_in->wc, &rstd_in, 1);
        layer_grads_done(m, i);
    }
    if (dx) op_copy(dx, &dres);
}

/* ---- lm_head ------------------------------------------------------------------------------- */

nn_dtype llama_head_dtype(const llama *m) { return m->head->wc->dtype; }

void llama_lm_head(const llama *m, const tensor *h, tensor *logits) {
    op_matmul(logits, h, m->head->wc, NULL, NN_ACT_NONE, NULL);
}

void llama_lm_head_backward(const llama *m, const tensor *dlogits, const tensor *h, tensor *dh,
                            int accumulate_dh) {
    /* with no activation op_matmul_backward only reads dy, so dropping const is safe */
    tensor dy = *dlogits;
    op_matmul_backward(dh, m->head->g, NULL, &dy, h, m->head->wc, NN_ACT_NONE, NULL, accumulate_dh);
    grads_done(m, "lm_head.");
}

/* ---- inference with a KV cache ------------------------------------------------------------- */

struct llama_cache {
    const llama *m;
    int B, T_max, T_pre, keep;
    int cur_b;    /* rows of the last prefill, 0 before */
    int32_t *len; /* [B] cached positions per row */
    int32_t *h_pos, *h_seg, *h_idx; /* host copies of pos, seg and gidx / decode lengths, built here and uploaded */
    nn_arena *arena;
    tensor *k, *v;                     /* [L, B, T_max, KVD] */
    tensor *pos, *seg, *gidx;          /* i32 [B, T_pre], [B, T_pre], [B] (gidx: last prompt rows, then decode lengths) */
    tensor *res, *xn, *q, *kk, *vv, *attn, *branch, *gate, *up; /* [B, T_pre, ...] scratch */
    tensor *att;                       /* [B, H, T_pre, T_pre] (keep) or [T_pre, T_pre] */
    tensor *scores;                    /* [B, H, T_max] the queries' scores in a decode step */
};

llama_cache *llama_cache_new(const llama *m, int B, int T_max, int T_prefill, int keep_attention) {
    const llama_config *c = &m->cfg;
    CHECK(B >= 1 && T_max >= 1 && T_prefill >= 1 && T_prefill <= T_max, "",
          "llama cache for %d rows of %d positions with prefills of %d", B, T_max, T_prefill);
    int64_t D = c->dim, F = c->ffn_dim, hd = llama_head_dim(c), QD = hd * c->n_heads, KVD = hd * c->n_kv_heads;
    int64_t Tp = T_prefill;
    llama_cache *a = asvr_calloc(1, sizeof *a, "llama cache");
    a->m = m;
    a->B = B, a->T_max = T_max, a->T_pre = T_prefill, a->keep = keep_attention != 0;
    a->len = asvr_calloc((size_t)B, sizeof *a->len, "llama cache lengths");
    a->h_pos = asvr_calloc((size_t)B * (size_t)Tp, sizeof *a->h_pos, "llama cache positions");
    a->h_seg = asvr_calloc((size_t)B * (size_t)Tp, sizeof *a->h_seg, "llama cache segments");
    a->h_idx = asvr_calloc((size_t)B, sizeof *a->h_idx, "llama cache indices");
    nn_arena *ar = a->arena = nn_arena_new("llama kv cache", m->embed->w->device);
    a->k = nn_arena_add(ar, "cache.k", NN_F32, 4, (int64_t[]){c->n_layers, B, T_max, KVD});
    a->v = nn_arena_add(ar, "cache.v", NN_F32, 4, (int64_t[]){c->n_layers, B, T_max, KVD});
    a->pos = nn_arena_add(ar, "positions", NN_I32, 2, (int64_t[]){B, Tp});
    a->seg = nn_arena_add(ar, "segments", NN_I32, 2, (int64_t[]){B, Tp});
    a->gidx = nn_arena_add(ar, "last_index", NN_I32, 1, (int64_t[]){B});
    a->res = add3(ar, "residual", B, Tp, D);
    a->xn = add3(ar, "norm_out", B, Tp, D);
    a->q = add3(ar, "q", B, Tp, QD);
    a->kk = add3(ar, "k", B, Tp, KVD);
    a->vv = add3(ar, "v", B, Tp, KVD);
    a->attn = add3(ar, "attn_out", B, Tp, QD);
    a->branch = add3(ar, "branch_out", B, Tp, D);
    a->gate = add3(ar, "mlp_gate", B, Tp, F);
    a->up = add3(ar, "mlp_up", B, Tp, F);
    if (a->keep)
        a->att = nn_arena_add(ar, "attn_probs", NN_F32, 4, (int64_t[]){B, c->n_heads, Tp, Tp});
    else
        a->att = nn_arena_add(ar, "attn_scratch", NN_F32, 2, (int64_t[]){Tp, Tp});
    a->scores = nn_arena_add(ar, "decode_scores", NN_F32, 3, (int64_t[]){B, c->n_heads, T_max});
    nn_arena_commit(ar);
    return a;
}

void llama_cache_print_plan(const llama_cache *c, FILE *f) { nn_arena_print_plan(c->arena, f); }

void llama_cache_free(llama_cache *c) {
    if (!c) return;
    nn_arena_free(c->arena);
    free(c->len);
    free(c->h_pos);
    free(c->h_seg);
    free(c->h_idx);
    free(c);
}

int llama_cache_len(const llama_cache *c, int b) {
    CHECK(b >= 0 && b < c->B, "", "llama_cache_len: row %d of %d", b, c->B);
    return c->len[b];
}

/* A contiguous [r, t, cols] (or [r, cols] when t == 0) view over the start of a scratch tensor. */
static tensor view_rows(const tensor *s, int64_t r, int64_t t, int64_t cols) {
    CHECK(r * (t ? t : 1) * cols <= tensor_numel(s), "", "llama cache: view of '%s' too large", s->name);
    if (!t) return tensor_make(s->name, s->dtype, s->device, 2, (int64_t[]){r, cols}, s->data);
    return tensor_make(s->name, s->dtype, s->device, 3, (int64_t[]){r, t, cols}, s->data);
}

/* The first r*t (or r when t == 0) entries of an i32 bookkeeping tensor, as [r, t] (or [r]). */
static tensor ivec_view(const tensor *s, int64_t r, int64_t t) {
    CHECK(r * (t ? t : 1) <= tensor_numel(s), "", "llama cache: view of '%s' too large", s->name);
    if (!t) return tensor_make(s->name, s->dtype, s->device, 1, (int64_t[]){r}, s->data);
    return tensor_make(s->name, s->dtype, s->device, 2, (int64_t[]){r, t}, s->data);
}

/* Row b of layer l's cache, positions [0, n): [n, KVD]. */
static tensor cache_rows(const tensor *kv, int l, int b, int64_t n) {
    tensor tl = tensor_index0(kv, l), tb = tensor_index0(&tl, b);
    return tensor_head0(&tb, n);
}

/* The MLP half of a layer on n rows: res += down(silu(gate(xn)) * up(xn)), xn = RMSNorm_post(res). */
static void mlp_block(const llama_layer *W, const llama_config *c, tensor *res, tensor *xn, tensor *gate,
                      tensor *up, tensor *branch) {
    op_rmsnorm(xn, res, W->ln_post->wc, c->rms_eps, NULL);
    op_matmul(gate, xn, W->gate->wc, NULL, NN_ACT_NONE, NULL);
    op_matmul(up, xn, W->up->wc, NULL, NN_ACT_NONE, NULL);
    op_swiglu(gate, gate, up);
    op_matmul(branch, gate, W->down->wc, NULL, NN_ACT_NONE, NULL);
    op_add(res, res, branch);
}

void llama_prefill(const llama *m, llama_cache *a, const tensor *x, const int32_t *lens, tensor *h_last,
                   tensor *att_last) {
    const char *op = "llama_prefill";
    const llama_config *c = &m->cfg;
    char s1[96];
    CHECK(a->m == m, "", "%s: the cache was planned for another model", op);
    CHECK(x->ndim == 3 && x->shape[0] >= 1 && x->shape[0] <= a->B && x->shape[1] >= 1 && x->shape[1] <= a->T_pre &&
              x->shape[2] == c->dim,
          "", "%s: x '%s' is %s, want [1..%d, 1..%d, %d]", op, x->name, tensor_shape_str(x, s1, sizeof s1), a->B,
          a->T_pre, c->dim);
    int64_t B = x->shape[0], T = x->shape[1], D = c->dim, F = c->ffn_dim, hd = llama_head_dim(c);
    int64_t H = c->n_heads, QD = hd * H, KVD = hd * c->n_kv_heads;
    CHECK(h_last->ndim == 2 && h_last->shape[0] == B && h_last->shape[1] == D, "", "%s: h_last '%s' is %s, want [%lld, %lld]",
          op, h_last->name, tensor_shape_str(h_last, s1, sizeof s1), (long long)B, (long long)D);
    if (att_last) {
        CHECK(a->keep, "", "%s: attention requested from a cache planned without keep_attention", op);
        CHECK(att_last->ndim == 4 && att_last->shape[0] == c->n_layers && att_last->shape[1] == B &&
                  att_last->shape[2] == H && att_last->shape[3] == T && att_last->dtype == NN_F32,
              "", "%s: att_last '%s' is %s, want [%d, %lld, %lld, %lld]", op, att_last->name,
              tensor_shape_str(att_last, s1, sizeof s1), c->n_layers, (long long)B, (long long)H, (long long)T);
    }
    /* bookkeeping: positions 0..T-1, segment 0 for the prompt and -1 for the padding after it */
    int32_t *pos = a->h_pos, *seg = a->h_seg, *gi = a->h_idx;
    for (int64_t b = 0; b < B; b++) {
        CHECK(lens[b] >= 1 && lens[b] <= T, "", "%s: row %lld has length %d, want 1..%lld", op, (long long)b, lens[b],
              (long long)T);
        CHECK(c->sliding_window == 0 || lens[b] <= c->sliding_window, "use a shorter prompt",
              "%s: row %lld's prompt of %d positions is longer than the sliding attention window %d, which this build "
              "does not implement (below it, the window changes nothing)", op, (long long)b, lens[b], c->sliding_window);
        for (int64_t t = 0; t < T; t++) pos[b * T + t] = (int32_t)t, seg[b * T + t] = t < lens[b] ? 0 : -1;
        gi[b] = (int32_t)(b * T + lens[b] - 1);
        a->len[b] = 0;
    }
    tensor posv = ivec_view(a->pos, B, T), segv = ivec_view(a->seg, B, T), giv = ivec_view(a->gidx, B, 0);
    {
        tensor hp = tensor_make("positions", NN_I32, NN_CPU, 2, (int64_t[]){B, T}, pos);
        tensor hs = tensor_make("segments", NN_I32, NN_CPU, 2, (int64_t[]){B, T}, seg);
        tensor hg = tensor_make("last_index", NN_I32, NN_CPU, 1, (int64_t[]){B}, gi);
        op_transfer(&posv, &hp);
        op_transfer(&segv, &hs);
        op_transfer(&giv, &hg);
    }
    tensor res = view_rows(a->res, B, T, D), xn = view_rows(a->xn, B, T, D), q = view_rows(a->q, B, T, QD);
    tensor k = view_rows(a->kk, B, T, KVD), v = view_rows(a->vv, B, T, KVD), attn = view_rows(a->attn, B, T, QD);
    tensor branch = view_rows(a->branch, B, T, D), gate = view_rows(a->gate, B, T, F), up = view_rows(a->up, B, T, F);
    tensor att = a->keep ? tensor_make("attn_probs", NN_F32, a->att->device, 4, (int64_t[]){B, H, T, T}, a->att->data)
                         : *a->att;
    float scale = 1.0f / sqrtf((float)hd);

    op_copy(&res, x);
    for (int i = 0; i < c->n_layers; i++) {
        const llama_layer *W = &m->layer[i];
        op_rmsnorm(&xn, &res, W->ln_in->wc, c->rms_eps, NULL);
        op_matmul(&q, &xn, W->q->wc, NULL, NN_ACT_NONE, NULL);
        op_matmul(&k, &xn, W->k->wc, NULL, NN_ACT_NONE, NULL);
        op_matmul(&v, &xn, W->v->wc, NULL, NN_ACT_NONE, NULL);
        op_rope(&q, &q, &posv, c->n_heads, c->rope_theta);
        op_rope(&k, &k, &posv, c->n_kv_heads, c->rope_theta);
        op_attention_seg(&attn, &q, &k, &v, c->n_heads, c->n_kv_heads, scale, 1, &segv, &att,
                         a->keep ? NN_ATT_KEEP : NN_ATT_SCRATCH);
        for (int64_t b = 0; b < B; b++) {
            tensor kc = cache_rows(a->k, i, (int)b, T), vc = cache_rows(a->v, i, (int)b, T);
            tensor kb = tensor_index0(&k, b), vb = tensor_index0(&v, b);
            op_copy(&kc, &kb);
            op_copy(&vc, &vb);
            if (!att_last) continue;
            tensor al = tensor_index0(att_last, i), alb = tensor_index0(&al, b), ab = tensor_index0(&att, b);
            for (int64_t h = 0; h < H; h++) {
                tensor dst = tensor_index0(&alb, h), abh = tensor_index0(&ab, h), src = tensor_index0(&abh, lens[b] - 1);
                op_copy(&dst, &src);
            }
        }
        op_matmul(&branch, &attn, W->o->wc, NULL, NN_ACT_NONE, NULL);
        op_add(&res, &res, &branch);
        mlp_block(W, c, &res, &xn, &gate, &up, &branch);
    }
    /* the last prompt token of each row, then the final norm */
    tensor flat = view_rows(a->res, B * T, 0, D), last = view_rows(a->xn, B, 0, D);
    op_embedding(&last, &giv, &flat);
    op_rmsnorm(h_last, &last, m->norm->wc, c->rms_eps, NULL);
    for (int64_t b = 0; b < B; b++) a->len[b] = lens[b];
    for (int64_t b = B; b < a->B; b++) a->len[b] = 0;
    a->cur_b = (int)B;
}

void llama_decode_step(const llama *m, llama_cache *a, const tensor *x, tensor *h) {
    const char *op = "llama_decode_step";
    const llama_config *c = &m->cfg;
    char s1[96];
    CHECK(a->m == m, "", "%s: the cache was planned for another model", op);
    CHECK(a->cur_b > 0, "", "%s: no prefill was run on this cache", op);
    int64_t B = a->cur_b, D = c->dim, F = c->ffn_dim, hd = llama_head_dim(c);
    int64_t QD = hd * c->n_heads, KVD = hd * c->n_kv_heads;
    CHECK(tensor_rows(x) == B && tensor_cols(x) == D && (x->ndim == 2 || (x->ndim == 3 && x->shape[1] == 1)), "",
          "%s: x '%s' is %s, want [%lld, %lld] (the rows of the last prefill)", op, x->name,
          tensor_shape_str(x, s1, sizeof s1), (long long)B, (long long)D);
    CHECK(h->ndim == 2 && h->shape[0] == B && h->shape[1] == D, "", "%s: h '%s' is %s, want [%lld, %lld]", op, h->name,
          tensor_shape_str(h, s1, sizeof s1), (long long)B, (long long)D);
    int32_t *pos = a->h_pos, *n = a->h_idx;
    for (int64_t b = 0; b < B; b++) {
        CHECK(a->len[b] < a->T_max, "plan a larger cache", "%s: row %lld already holds %d of %d positions", op,
              (long long)b, a->len[b], a->T_max);
        CHECK(m->cfg.sliding_window == 0 || a->len[b] < m->cfg.sliding_window, "generate fewer tokens",
              "%s: row %lld would pass the sliding attention window of %d positions, which this build does not implement",
              op, (long long)b, m->cfg.sliding_window);
        pos[b] = a->len[b];
        n[b] = a->len[b] + 1;
    }
    tensor posv = ivec_view(a->pos, B, 1), lensv = ivec_view(a->gidx, B, 0);
    {
        tensor hp = tensor_make("positions", NN_I32, NN_CPU, 2, (int64_t[]){B, 1}, pos);
        tensor hn = tensor_make("decode_lengths", NN_I32, NN_CPU, 1, (int64_t[]){B}, n);
        op_transfer(&posv, &hp);
        op_transfer(&lensv, &hn);
    }
    tensor res = view_rows(a->res, B, 1, D), xn = view_rows(a->xn, B, 1, D), q = view_rows(a->q, B, 1, QD);
    tensor k = view_rows(a->kk, B, 1, KVD), v = view_rows(a->vv, B, 1, KVD), attn = view_rows(a->attn, B, 1, QD);
    tensor branch = view_rows(a->branch, B, 1, D), gate = view_rows(a->gate, B, 1, F), up = view_rows(a->up, B, 1, F);
    float scale = 1.0f / sqrtf((float)hd);
    op_copy(&res, x);
    for (int i = 0; i < c->n_layers; i++) {
        const llama_layer *W = &m->layer[i];
        op_rmsnorm(&xn, &res, W->ln_in->wc, c->rms_eps, NULL);
        op_matmul(&q, &xn, W->q->wc, NULL, NN_ACT_NONE, NULL);
        op_matmul(&k, &xn, W->k->wc, NULL, NN_ACT_NONE, NULL);
        op_matmul(&v, &xn, W->v->wc, NULL, NN_ACT_NONE, NULL);
        op_rope(&q, &q, &posv, c->n_heads, c->rope_theta);
        op_rope(&k, &k, &posv, c->n_kv_heads, c->rope_theta);
        for (int64_t b = 0; b < B; b++) { /* append at position len[b] */
            tensor kc = cache_rows(a->k, i, (int)b, a->T_max), vc = cache_rows(a->v, i, (int)b, a->T_max);
            tensor kd = tensor_index0(&kc, a->len[b]), vd = tensor_index0(&vc, a->len[b]);
            tensor kb = tensor_index0(&k, b), vb = tensor_index0(&v, b);
            op_copy(&kd, &kb);
            op_copy(&vd, &vb);
        }
        tensor kl = tensor_index0(a->k, i), vl = tensor_index0(a->v, i);
        op_attention_decode(&attn, &q, &kl, &vl, &lensv, c->n_heads, c->n_kv_heads, scale, a->scores);
        op_matmul(&branch, &attn, W->o->wc, NULL, NN_ACT_NONE, NULL);
        op_add(&res, &res, &branch);
        mlp_block(W, c, &res, &xn, &gate, &up, &branch);
    }
    tensor last = view_rows(a->res, B, 0, D);
    op_rmsnorm(h, &last, m->norm->wc, c->rms_eps, NULL);
    for (int64_t b = 0; b < B; b++) a->len[b]++;
}
