/* test_llama.c — the LLaMA decoder (model/llama) and the packed-row text-loss targets
 * (model/text_loss) against the PyTorch training fixtures (tests/golden/train/, made by
 * tools/gen_train_fixtures.py; HF LlamaForCausalLM, d 32, 2 layers, 4 heads x 8 over 2 kv heads).
 * Checks: config.json parsing and refusals; the forward (final-norm hidden states and logits at
 * every non-padding position of a batch with two samples packed in one row and restarting
 * positions) within 3e-6 relative error; the step-0 text loss within 7e-7 and every llm.*
 * gradient within 9e-6 per tensor (text loss only: CE with scale 1/count, lm_head backward, decoder
 * backward, embedding backward at text positions); a fully frozen and a partly frozen decoder give
 * the same input gradient, leave other gradient buffers alone and, where trainable, the same
 * gradients; outputs are NaN-filled first so every element must be written; the targets skip the
 * sample boundary that a row-level shift would score; llama_embed leaves positions with ids < 0
 * alone. Beyond the fixture: a config with head_dim != dim / n_heads against central differences.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/text_loss.h"
#include "nn/ops.h"
#include "test.h"

#define GOLD ASVR_GOLDEN "/train"
#define FWD_TOL 3e-6  /* measured 2.7e-7 (f32 vs the PyTorch golden, logits) */
#define GRAD_TOL 9e-6 /* measured 8.1e-7 (f32 vs the PyTorch golden) */

static safetensors *open_or_die(const char *path) {
    asvr_error err = {{0}};
    safetensors *st = NULL;
    if (safetensors_open(path, &st, &err) < 0) {
        fprintf(stderr, "cannot open %s: %s\n(regenerate with tools/gen_train_fixtures.py)\n", path, err.msg);
        exit(1);
    }
    return st;
}

static const st_tensor *find_or_die(const safetensors *st, const char *name) {
    const st_tensor *t = safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "fixture tensor '%s' missing\n", name);
        exit(1);
    }
    return t;
}

static float *get_f32(const safetensors *st, const char *name, int64_t want_numel) {
    const st_tensor *t = find_or_die(st, name);
    if (t->numel != want_numel) {
        fprintf(stderr, "fixture tensor '%s' has %lld elements, want %lld\n", name, (long long)t->numel,
                (long long)want_numel);
        exit(1);
    }
    float *p = malloc(sizeof(float) * (size_t)t->numel);
    asvr_error err = {{0}};
    if (!p || st_tensor_to_f32(t, p, &err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        exit(1);
    }
    return p;
}

static int32_t *get_i32(const safetensors *st, const char *name, int64_t want_numel) {
    const st_tensor *t = find_or_die(st, name);
    if (t->dtype != ST_I64 || t->numel != want_numel) {
        fprintf(stderr, "fixture tensor '%s' must be I64 with %lld elements\n", name, (long long)want_numel);
        exit(1);
    }
    int32_t *p = malloc(sizeof(int32_t) * (size_t)t->numel);
    if (!p) exit(1);
    const unsigned char *src = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t v;
        memcpy(&v, src + 8 * i, 8);
        p[i] = (int32_t)v;
    }
    return p;
}

/* ‖a−b‖/‖b‖ over the rows with mask[r] != 0 (all rows when mask is NULL); counts non-finite a. */
static double relerr_rows(const float *a, const float *b, int64_t rows, int64_t cols, const int *mask,
                          int *nonfinite) {
    double num = 0, den = 0;
    *nonfinite = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (mask && !mask[r]) continue;
        for (int64_t j = 0; j < cols; j++) {
            float x = a[r * cols + j], y = b[r * cols + j];
            if (!isfinite(x)) (*nonfinite)++;
            num += ((double)x - y) * ((double)x - y);
            den += (double)y * y;
        }
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int all_finite(const tensor *t) {
    const float *p = t->data;
    for (int64_t i = 0; i < tensor_numel(t); i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}

static int json_int_or_die(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) {
        fprintf(stderr, "manifest config lacks integer '%s'\n", k);
        exit(1);
    }
    return (int)json_integer_value(v);
}

/* ---- the fixture batch, shared by every run ------------------------------------------------- */

enum { B = 2, T = 28, NIMG = 2, NPOS = 9 };

typedef struct fixture {
    llama_config cfg;
    safetensors *init, *batch, *fwd, *grads;
    int32_t ids[B * T], tok_ids[B * T], labels[B * T], pos[B * T], seg[B * T], flat_pos[NIMG * NPOS];
    float *image_embeds, *hidden_final, *text_logits, *pad_fill;
    int scored_rows[B * T]; /* non-padding positions */
    double text_loss_ref;
    int n_text_ref;
} fixture;

/* One model over its own parameter set, the fixture step run on it. */
typedef struct run {
    param_set ps;
    llama *m;
    llama_acts *a;
    tensor *x, *h, *logits, *dlogits, *dh, *dx, *ids, *pos, *seg, *labels, *targets;
    nn_arena *io;
    double loss;
    int64_t count, n_targets;
} run;

/* Builds the parameter set (trainable except names starting with any of frozen[]; "probe.weight" is
 * an extra trainable parameter outside the model whose gradient must stay untouched), copies the
 * values from src (or loads them from the fixture when src is NULL), plans activations for
 * planned_b >= B rows. */
static int use_flash;     /* plan the activations with flash attention (llama_acts_new_ex) */
static int use_recompute; /* and this many recomputed layers */
static const unsigned char *use_recompute_mask; /* or these (llama_acts_new_sel) */

static void run_init(run *r, const fixture *fx, const param_set *src, const char **frozen, int n_frozen,
                     int planned_b) {
    memset(r, 0, sizeof *r);
    param_set_init(&r->ps, "test");
    r->m = llama_new(&fx->cfg, &r->ps, "llm.");
    param_add(&r->ps, 1, (int64_t[]){4}, 0, PARAM_INIT_ZERO, 0, "probe.weight");
    for (int i = 0; i < n_frozen; i++) param_set_trainable(&r->ps, frozen[i], 0);
    param_set_commit(&r->ps);
    asvr_error err = {{0}};
    if (src) {
        for (int i = 0; i < r->ps.n; i++) {
            const param *s = param_find(src, r->ps.v[i]->name);
            if (s) op_copy(r->ps.v[i]->w, s->w);
        }
    } else {
        /* the fixture has no probe: load the llm.* names only */
        param_set tmp;
        param_set_init(&tmp, "fixture");
        llama *lm = llama_new(&fx->cfg, &tmp, "llm.");
        param_set_commit(&tmp);
        if (param_set_load(&tmp, fx->init, "", &err) < 0) {
            fprintf(stderr, "loading the fixture parameters: %s\n", err.msg);
            exit(1);
        }
        for (int i = 0; i < tmp.n; i++) op_copy(param_find(&r->ps, tmp.v[i]->name)->w, tmp.v[i]->w);
        llama_free(lm);
        param_set_free(&tmp);
    }
    param *probe = param_find(&r->ps, "probe.weight");
    op_fill(probe->g, 7.0f);
    r->a = use_recompute_mask ? llama_acts_new_sel(r->m, planned_b, T, use_flash, use_recompute_mask)
                              : llama_acts_new_ex(r->m, planned_b, T, use_flash, use_recompute);

    int64_t D = fx->cfg.dim, V = fx->cfg.vocab;
    r->io = nn_arena_new("test io", NN_CPU);
    r->x = nn_arena_add(r->io, "inputs_embeds", NN_F32, 3, (int64_t[]){B, T, D});
    r->h = nn_arena_add(r->io, "h_final", NN_F32, 3, (int64_t[]){B, T, D});
    r->logits = nn_arena_add(r->io, "logits", NN_F32, 2, (int64_t[]){B * T, V});
    r->dlogits = nn_arena_add(r->io, "dlogits", NN_F32, 2, (int64_t[]){B * T, V});
    r->dh = nn_arena_add(r->io, "dh", NN_F32, 3, (int64_t[]){B, T, D});
    r->dx = nn_arena_add(r->io, "dx", NN_F32, 3, (int64_t[]){B, T, D});
    r->ids = nn_arena_add(r->io, "token_ids", NN_I32, 2, (int64_t[]){B, T});
    r->pos = nn_arena_add(r->io, "position_ids", NN_I32, 2, (int64_t[]){B, T});
    r->seg = nn_arena_add(r->io, "segment_ids", NN_I32, 2, (int64_t[]){B, T});
    r->labels = nn_arena_add(r->io, "labels", NN_I32, 2, (int64_t[]){B, T});
    r->targets = nn_arena_add(r->io, "targets", NN_I32, 2, (int64_t[]){B, T});
    nn_arena_commit(r->io);
    memcpy(r->ids->data, fx->tok_ids, sizeof fx->tok_ids);
    memcpy(r->pos->data, fx->pos, sizeof fx->pos);
    memcpy(r->seg->data, fx->seg, sizeof fx->seg);
    memcpy(r->labels->data, fx->labels, sizeof fx->labels);
}

/* inputs_embeds: tokens at text positions, the fixture's projected image features at image
 * positions, fresh finite values at padding (never seen by the other positions). */
static void run_inputs(run *r, const fixture *fx) {
    int64_t D = fx->cfg.dim;
    op_fill(r->x, NAN);
    llama_embed(r->m, r->ids, r->x);
    float *x = r->x->data;
    int untouched = 1;
    for (int i = 0; i < B * T; i++)
        if (fx->tok_ids[i] < 0) untouched &= isnan(x[(int64_t)i * D]) && isnan(x[(int64_t)i * D + D - 1]);
    T_CHECK(untouched, "llama_embed left the positions with ids < 0 alone");
    for (int i = 0; i < NIMG * NPOS; i++)
        memcpy(x + (int64_t)fx->flat_pos[i] * D, fx->image_embeds + (int64_t)i * D, sizeof(float) * (size_t)D);
    for (int i = 0; i < B * T; i++)
        if (fx->seg[i] < 0) memcpy(x + (int64_t)i * D, fx->pad_fill + (int64_t)i * D, sizeof(float) * (size_t)D);
}

static void run_step(run *r, const fixture *fx) {
    run_inputs(r, fx);
    op_fill(r->h, NAN);
    op_fill(r->logits, NAN);
    op_fill(r->dlogits, NAN);
    op_fill(r->dh, NAN);
    op_fill(r->dx, NAN);
    llama_forward(r->m, r->a, r->x, r->pos, r->seg, r->h);
    llama_lm_head(r->m, r->h, r->logits);
    r->n_targets = text_loss_targets(r->labels, r->seg, r->targets);
    double sum = 0;
    int64_t cnt = 0;
    op_cross_entropy(r->dlogits, &sum, &cnt, r->logits, r->targets, 1.0f / (float)r->n_targets);
    r->loss = sum / (double)cnt;
    r->count = cnt;
    llama_lm_head_backward(r->m, r->dlogits, r->h, r->dh, 0);
    llama_backward(r->m, r->a, r->dh, r->dx);
    llama_embed_backward(r->m, r->ids, r->dx);
}

static void run_free(run *r) {
    llama_acts_free(r->a);
    llama_free(r->m);
    param_set_free(&r->ps);
    nn_arena_free(r->io);
}

/* ---- the tests ------------------------------------------------------------------------------ */

static void test_config(fixture *fx, json_t *llm) {
    /* an HF config.json for the fixture's model, with the keys HF writes */
    json_t *j = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:b, s:b, s:n}", "hidden_size",
                          json_int_or_die(llm, "hidden_size"), "num_hidden_layers", json_int_or_die(llm, "num_layers"),
                          "num_attention_heads", json_int_or_die(llm, "num_heads"), "num_key_value_heads",
                          json_int_or_die(llm, "num_kv_heads"), "head_dim", json_int_or_die(llm, "head_dim"),
                          "intermediate_size", json_int_or_die(llm, "intermediate_size"), "vocab_size",
                          json_int_or_die(llm, "vocab_size"), "rms_norm_eps",
                          json_number_value(json_object_get(llm, "rms_norm_eps")), "rope_theta",
                          json_number_value(json_object_get(llm, "rope_theta")), "hidden_act", "silu",
                          "tie_word_embeddings", 0, "attention_bias", 0, "rope_scaling");
    char *text = json_dumps(j, 0);
    asvr_error err = {{0}};
    int rc = llama_config_from_json(text, &fx->cfg, &err);
    T_CHECK(rc == 0, "config parses: %s", err.msg);
    if (rc) exit(1);
    T_EQ_INT(fx->cfg.dim, 32);
    T_EQ_INT(fx->cfg.n_kv_heads, 2);
    T_EQ_INT(llama_head_dim(&fx->cfg), 8);
    T_CHECK(fx->cfg.rms_eps == 1e-5f && fx->cfg.rope_theta == 1e4f, "eps %g theta %g", (double)fx->cfg.rms_eps,
            (double)fx->cfg.rope_theta);
    free(text);

    /* transformers 5 keeps theta in rope_parameters; defaults for kv heads */
    llama_config c2;
    rc = llama_config_from_json("{\"hidden_size\":64,\"num_hidden_layers\":1,\"num_attention_heads\":4,"
                                "\"intermediate_size\":96,\"vocab_size\":10,"
                                "\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":500000.0}}",
                                &c2, &err);
    T_CHECK(rc == 0 && c2.n_kv_heads == 4 && c2.sliding_window == 0 && c2.rope_theta == 5e5f && c2.rms_eps == 1e-6f && llama_head_dim(&c2) == 16,
            "defaults and rope_parameters: rc %d kv %d theta %g: %s", rc, c2.n_kv_heads, (double)c2.rope_theta, err.msg);

    rc = llama_config_from_json("{\"hidden_size\":64,\"num_hidden_layers\":1,\"num_attention_heads\":4,"
                                "\"num_key_value_heads\":1,\"intermediate_size\":96,\"vocab_size\":10,"
                                "\"sliding_window\":4096,\"rope_theta\":1000000.0,\"rms_norm_eps\":1e-5}",
                                &c2, &err);
    T_CHECK(rc == 0 && c2.sliding_window == 4096 && c2.n_kv_heads == 1 && c2.rope_theta == 1e6f,
            "Mistral-style config: %s", err.msg);

    /* the config.json files as released: Mistral-7B-Instruct-v0.2 (transformers 4.36: rope_theta 1e6,
     * sliding_window null, 8 kv heads) and Vicuna-13B-v1.5 (pretraining_tp, rope_scaling null) */
    rc = llama_config_from_json(
        "{\"architectures\":[\"MistralForCausalLM\"],\"attention_dropout\":0.0,\"bos_token_id\":1,\"eos_token_id\":2,"
        "\"hidden_act\":\"silu\",\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":14336,"
        "\"max_position_embeddings\":32768,\"model_type\":\"mistral\",\"num_attention_heads\":32,\"num_hidden_layers\":32,"
        "\"num_key_value_heads\":8,\"rms_norm_eps\":1e-05,\"rope_theta\":1000000.0,\"sliding_window\":null,"
        "\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.36.0\",\"use_cache\":true,"
        "\"vocab_size\":32000}",
        &c2, &err);
    T_CHECK(rc == 0 && c2.n_kv_heads == 8 && c2.ffn_dim == 14336 && c2.rope_theta == 1e6f && c2.sliding_window == 0 &&
                llama_head_dim(&c2) == 128,
            "Mistral-7B-Instruct-v0.2 config.json: %s", err.msg);
    rc = llama_config_from_json(
        "{\"architectures\":[\"LlamaForCausalLM\"],\"bos_token_id\":1,\"eos_token_id\":2,\"hidden_act\":\"silu\","
        "\"hidden_size\":5120,\"initializer_range\":0.02,\"intermediate_size\":13824,\"max_position_embeddings\":4096,"
        "\"model_type\":\"llama\",\"num_attention_heads\":40,\"num_hidden_layers\":40,\"num_key_value_heads\":40,"
        "\"pad_token_id\":0,\"pretraining_tp\":1,\"rms_norm_eps\":1e-05,\"rope_scaling\":null,\"tie_word_embeddings\":false,"
        "\"torch_dtype\":\"float16\",\"transformers_version\":\"4.31.0\",\"use_cache\":true,\"vocab_size\":32000}",
        &c2, &err);
    T_CHECK(rc == 0 && c2.dim == 5120 && c2.n_layers == 40 && c2.rope_theta == 1e4f && llama_head_dim(&c2) == 128,
            "Vicuna-13B-v1.5 config.json: %s", err.msg);

    struct { const char *key, *value, *msg; } bad[] = {
        {"attention_dropout", "0.1", "attention_dropout"},
        {"tie_word_embeddings", "true", "tie_word_embeddings"},
        {"hidden_act", "\"gelu\"", "hidden_act"},
        {"attention_bias", "true", "attention_bias"},
        {"rope_scaling", "{\"rope_type\":\"linear\",\"factor\":2.0}", "rope_scaling"},
        {"num_key_value_heads", "3", "kv heads"},
        {"head_dim", "7", "head_dim"},
        {"hidden_size", "\"x\"", "hidden_size"},
        {"sliding_window", "-1", "sliding_window"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *b = json_deep_copy(j);
        json_error_t je;
        json_object_set_new(b, bad[i].key, json_loads(bad[i].value, JSON_DECODE_ANY, &je));
        char *t2 = json_dumps(b, 0);
        err.msg[0] = 0;
        rc = llama_config_from_json(t2, &c2, &err);
        T_CHECK(rc == -1, "%s=%s refused", bad[i].key, bad[i].value);
        T_STR_CONTAINS(err.msg, bad[i].msg);
        free(t2);
        json_decref(b);
    }
    json_object_del(j, "vocab_size");
    text = json_dumps(j, 0);
    T_CHECK(llama_config_from_json(text, &c2, &err) == -1, "missing vocab_size refused");
    T_STR_CONTAINS(err.msg, "vocab_size");
    free(text);
    T_CHECK(llama_config_from_json("[1]", &c2, &err) == -1, "not an object");
    json_decref(j);
}

static void test_targets(const run *r, const fixture *fx) {
    const int32_t *tg = r->targets->data;
    T_EQ_INT(r->n_targets, fx->n_text_ref);
    T_EQ_INT(r->count, fx->n_text_ref);
    /* row 0: A is t 0..9, B starts at t 10 with a supervised label; t 9 must not score it */
    T_CHECK(fx->labels[10] >= 0, "B's first label is supervised in the fixture");
    T_EQ_INT(tg[9], NN_IGNORE_INDEX);
    T_EQ_INT(tg[8], fx->labels[9]);
    int plain = 0, same = 1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            int32_t want = (t + 1 < T && fx->seg[i] >= 0 && fx->seg[i + 1] == fx->seg[i]) ? fx->labels[i + 1]
                                                                                           : NN_IGNORE_INDEX;
            same &= tg[i] == want;
            plain += t + 1 < T && fx->labels[i + 1] != NN_IGNORE_INDEX;
        }
    T_CHECK(same, "targets follow the per-segment shift");
    T_EQ_INT(plain, fx->n_text_ref + 1); /* a row-level shift would score one pair more */
}

static void test_forward(const run *r, const fixture *fx) {
    int64_t D = fx->cfg.dim, V = fx->cfg.vocab;
    int nf;
    T_CHECK(all_finite(r->x), "inputs_embeds fully written (tokens, images, padding)");
    T_CHECK(all_finite(r->h), "h_final fully written");
    T_CHECK(all_finite(r->logits), "logits fully written");
    double eh = relerr_rows(r->h->data, fx->hidden_final, B * T, D, fx->scored_rows, &nf);
    T_CHECK(eh < FWD_TOL && nf == 0, "hidden_final rel err %.3g", eh);
    double el = relerr_rows(r->logits->data, fx->text_logits, B * T, V, fx->scored_rows, &nf);
    T_CHECK(el < FWD_TOL && nf == 0, "text_logits rel err %.3g", el);
    double lerr = fabs(r->loss - fx->text_loss_ref) / fx->text_loss_ref;
    /* measured 6.5e-8 (f32 vs the PyTorch golden) */
    T_CHECK(lerr < 7e-7, "text loss %.9g vs %.9g (rel %.3g)", r->loss, fx->text_loss_ref, lerr);
    printf("forward: hidden_final rel err %.3g, text_logits rel err %.3g; text loss %.9f vs %.9f (rel %.3g)\n", eh,
           el, r->loss, fx->text_loss_ref, lerr);
}

static void test_grads(const run *r, const fixture *fx) {
    double worst = 0;
    const char *worst_name = "";
    int n = 0;
    for (int i = 0; i < r->ps.n; i++) {
        const param *p = r->ps.v[i];
        if (strncmp(p->name, "llm.", 4) != 0) continue;
        int64_t numel = tensor_numel(p->g);
        float *ref = get_f32(fx->grads, p->name, numel);
        int nf;
        double e = relerr_rows(p->g->data, ref, 1, numel, NULL, &nf);
        T_CHECK(e < GRAD_TOL && nf == 0, "grad %s rel err %.3g (%d non-finite)", p->name, e, nf);
        if (e > worst) {
            worst = e;
            worst_name = p->name;
        }
        n++;
        free(ref);
    }
    T_EQ_INT(n, 2 + 9 * fx->cfg.n_layers + 1);
    T_CHECK(all_finite(r->dh), "dh fully written");
    T_CHECK(all_finite(r->dx), "dx fully written");
    printf("backward: %d llm.* gradients, worst rel err %.3g (%s)\n", n, worst, worst_name);
}

/* A fully frozen decoder: dx unchanged, no gradient anywhere; a partly frozen one: dx unchanged,
 * the trainable gradients unchanged. Both with activations planned for more rows than used. */
static void test_frozen(const run *full, const fixture *fx) {
    const char *all[] = {"llm."};
    const char *part[] = {"llm.model.layers.0.", "llm.lm_head.", "llm.model.norm."};
    for (int variant = 0; variant < 2; variant++) {
        run r;
        if (variant == 0) run_init(&r, fx, &full->ps, all, 1, B + 1);
        else run_init(&r, fx, &full->ps, part, 3, B + 1);
        run_step(&r, fx);
        int nf;
        double ex = relerr_rows(r.dx->data, full->dx->data, B * T, fx->cfg.dim, NULL, &nf);
        T_CHECK(ex == 0 && nf == 0, "%s: dx differs from the trainable run's (rel %.3g)",
                variant ? "partly frozen" : "frozen", ex);
        double eh = relerr_rows(r.h->data, full->h->data, B * T, fx->cfg.dim, NULL, &nf);
        T_CHECK(eh == 0, "h_final with more planned rows: rel %.3g", eh);
        const float *probe = param_find(&r.ps, "probe.weight")->g->data;
        T_CHECK(probe[0] == 7.0f && probe[3] == 7.0f, "the probe gradient was touched");
        int frozen_ok = 1, same_ok = 1, n_tr = 0;
        for (int i = 0; i < r.ps.n; i++) {
            const param *p = r.ps.v[i];
            if (strncmp(p->name, "llm.", 4) != 0) continue;
            int is_frozen = variant == 0 || strncmp(p->name, part[0], strlen(part[0])) == 0 ||
                            strncmp(p->name, part[1], strlen(part[1])) == 0 ||
                            strncmp(p->name, part[2], strlen(part[2])) == 0;
            if (is_frozen) frozen_ok &= p->g == NULL;
            else {
                n_tr++;
                const param *q = param_find(&full->ps, p->name);
                same_ok &= p->g && relerr_rows(p->g->data, q->g->data, 1, tensor_numel(p->g), NULL, &nf) == 0;
            }
        }
        T_CHECK(frozen_ok, "frozen parameters have no gradient buffer");
        T_CHECK(same_ok, "trainable gradients equal the fully trainable run's");
        if (variant == 1) T_EQ_INT(n_tr, 1 + 9); /* embedding + layer 1 */
        else {
            T_EQ_INT(n_tr, 0);
            T_EQ_INT(nn_arena_count(r.ps.grads), 1); /* the probe only */
        }
        run_free(&r);
    }
}

/* A decoder whose heads are not dim / n_heads wide (4 query heads x 16 over 2 kv heads on dim 32,
 * so q is 64 wide), seeded init, two samples packed in one row: the directional derivative of
 * L = <h_final, R> along a fixed direction of the input and of three weights matches central
 * differences (fp32 forward, so within 4e-3 and 6e-3). */
static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void test_wide_heads_fd(void) {
    llama_config c = {.dim = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .ffn_dim = 48,
                      .vocab = 20, .rms_eps = 1e-5f, .rope_theta = 1e4f};
    asvr_error err = {{0}};
    T_CHECK(llama_config_check(&c, &err) == 0, "wide-head config: %s", err.msg);
    enum { b = 2, t = 7 };
    param_set ps;
    param_set_init(&ps, "wide");
    llama *m = llama_new(&c, &ps, "");
    param_set_commit(&ps);
    param_set_init_random(&ps, 42);
    /* larger weights than HF's 0.02 so the layers do more than pass the residual through */
    for (int i = 0; i < ps.n; i++)
        if (ps.v[i]->init == PARAM_INIT_NORMAL) op_scale(ps.v[i]->w, 10.0f);
    llama_acts *a = llama_acts_new(m, b, t);
    int64_t D = c.dim, n = (int64_t)b * t * D;
    nn_arena *io = nn_arena_new("wide io", NN_CPU);
    tensor *x = nn_arena_add(io, "x", NN_F32, 3, (int64_t[]){b, t, D});
    tensor *h = nn_arena_add(io, "h", NN_F32, 3, (int64_t[]){b, t, D});
    tensor *R = nn_arena_add(io, "R", NN_F32, 3, (int64_t[]){b, t, D});
    tensor *dx = nn_arena_add(io, "dx", NN_F32, 3, (int64_t[]){b, t, D});
    tensor *dir = nn_arena_add(io, "dir", NN_F32, 3, (int64_t[]){b, t, D});
    tensor *pos = nn_arena_add(io, "pos", NN_I32, 2, (int64_t[]){b, t});
    tensor *seg = nn_arena_add(io, "seg", NN_I32, 2, (int64_t[]){b, t});
    nn_arena_commit(io);
    float *xd = x->data, *Rd = R->data, *vd = dir->data;
    for (int64_t i = 0; i < n; i++) {
        xd[i] = (float)sin(0.91 * (double)i + 0.3);
        Rd[i] = (float)cos(0.53 * (double)i + 1.1);
        vd[i] = (float)sin(1.7 * (double)i + 2.0);
    }
    int32_t *pd = pos->data, *sd = seg->data;
    for (int i = 0; i < b * t; i++) { /* row 0: samples of 3 and 4 tokens; row 1: one of 7 */
        int r = i / t, k = i % t;
        sd[i] = r == 0 ? (k >= 3) : 0;
        pd[i] = r == 0 && k >= 3 ? k - 3 : k + 2;
    }
    op_fill(h, NAN);
    op_fill(dx, NAN);
    llama_forward(m, a, x, pos, seg, h);
    T_CHECK(all_finite(h), "wide heads: h_final written");
    llama_backward(m, a, R, dx);
    T_CHECK(all_finite(dx), "wide heads: dx written");
    double an = dot(dx->data, vd, n);
    const float eps = 1e-2f;
    float *x0 = malloc(sizeof(float) * (size_t)n);
    memcpy(x0, xd, sizeof(float) * (size_t)n);
    double lp, lm;
    for (int64_t i = 0; i < n; i++) xd[i] = x0[i] + eps * vd[i];
    llama_forward(m, a, x, pos, seg, h);
    lp = dot(h->data, Rd, n);
    for (int64_t i = 0; i < n; i++) xd[i] = x0[i] - eps * vd[i];
    llama_forward(m, a, x, pos, seg, h);
    lm = dot(h->data, Rd, n);
    double fd = (lp - lm) / (2.0 * eps), e = fabs(fd - an) / fabs(an);
    /* measured 4.0e-4 (f32 forward, eps 1e-2: truncation and rounding of the difference) */
    T_CHECK(e < 4e-3, "wide heads: d/dx along a direction %.6g vs central difference %.6g (rel %.3g)", an, fd, e);
    printf("wide heads (4 x 16 on dim 32): input directional derivative rel err %.3g vs central differences\n", e);
    memcpy(xd, x0, sizeof(float) * (size_t)n);
    const char *wn[] = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                        "model.layers.0.input_layernorm.weight"};
    for (int w = 0; w < 3; w++) {
        param *p = param_find(&ps, wn[w]);
        int64_t nw = tensor_numel(p->w);
        float *w0 = malloc(sizeof(float) * (size_t)nw), *wv = malloc(sizeof(float) * (size_t)nw);
        float *wd = p->w->data;
        memcpy(w0, wd, sizeof(float) * (size_t)nw);
        for (int64_t i = 0; i < nw; i++) wv[i] = (float)cos(2.3 * (double)i + w);
        double ga = dot(p->g->data, wv, nw);
        const float ew = 1e-2f;
        for (int64_t i = 0; i < nw; i++) wd[i] = w0[i] + ew * wv[i];
        llama_forward(m, a, x, pos, seg, h);
        lp = dot(h->data, Rd, n);
        for (int64_t i = 0; i < nw; i++) wd[i] = w0[i] - ew * wv[i];
        llama_forward(m, a, x, pos, seg, h);
        lm = dot(h->data, Rd, n);
        memcpy(wd, w0, sizeof(float) * (size_t)nw);
        double fdw = (lp - lm) / (2.0 * ew), ewr = fabs(fdw - ga) / fabs(ga);
        T_CHECK(ewr < 6e-3, /* measured 5.8e-4, the worst of the three (as above) */
                "wide heads: d/d %s along a direction %.6g vs central difference %.6g (rel %.3g)", wn[w],
                ga, fdw, ewr);
        printf("wide heads: %s directional derivative rel err %.3g\n", wn[w], ewr);
        free(w0);
        free(wv);
    }
    free(x0);
    nn_arena_free(io);
    llama_acts_free(a);
    llama_free(m);
    param_set_free(&ps);
}

int main(void) {
    fixture fx;
    memset(&fx, 0, sizeof fx);
    json_error_t je;
    json_t *man = json_load_file(GOLD "/manifest.json", 0, &je);
    if (!man) {
        fprintf(stderr, "cannot read %s: %s\n", GOLD "/manifest.json", je.text);
        return 1;
    }
    json_t *llm = json_object_get(json_object_get(man, "config"), "llm");
    json_t *losses = json_object_get(json_object_get(json_object_get(man, "runs"), "it_none"), "losses_step0");
    if (!json_is_object(llm) || !json_is_object(losses)) {
        fprintf(stderr, "manifest lacks config.llm or runs.it_none.losses_step0\n");
        return 1;
    }
    fx.text_loss_ref = json_number_value(json_object_get(losses, "text"));
    fx.n_text_ref = json_int_or_die(losses, "n_text_tokens");
    test_config(&fx, llm);

    fx.init = open_or_die(GOLD "/model_init.safetensors");
    fx.batch = open_or_die(GOLD "/batch.safetensors");
    fx.fwd = open_or_die(GOLD "/forward_default.safetensors");
    fx.grads = open_or_die(GOLD "/grads_it_none.safetensors");
    int64_t D = fx.cfg.dim;
    int32_t *p;
    memcpy(fx.ids, p = get_i32(fx.batch, "input_ids", B * T), sizeof fx.ids), free(p);
    memcpy(fx.labels, p = get_i32(fx.batch, "labels", B * T), sizeof fx.labels), free(p);
    memcpy(fx.pos, p = get_i32(fx.batch, "position_ids", B * T), sizeof fx.pos), free(p);
    memcpy(fx.seg, p = get_i32(fx.batch, "segment_ids", B * T), sizeof fx.seg), free(p);
    memcpy(fx.flat_pos, p = get_i32(fx.batch, "image_flat_pos", NIMG * NPOS), sizeof fx.flat_pos), free(p);
    fx.image_embeds = get_f32(fx.fwd, "image_embeds", NIMG * NPOS * D);
    fx.hidden_final = get_f32(fx.fwd, "hidden_final", B * T * D);
    fx.text_logits = get_f32(fx.fwd, "text_logits", (int64_t)B * T * fx.cfg.vocab);
    /* the caller marks what llama_embed must leave alone: images (-200 already) and padding */
    int n_img = 0, n_pad = 0;
    for (int i = 0; i < B * T; i++) {
        fx.tok_ids[i] = fx.seg[i] < 0 ? -1 : fx.ids[i];
        fx.scored_rows[i] = fx.seg[i] >= 0;
        n_img += fx.ids[i] < 0;
        n_pad += fx.seg[i] < 0;
    }
    T_EQ_INT(n_img, NIMG * NPOS);
    T_CHECK(n_pad > 0, "the batch has padding");
    fx.pad_fill = malloc(sizeof(float) * (size_t)(B * T * D));
    for (int64_t i = 0; i < B * T * D; i++) fx.pad_fill[i] = (float)sin(0.37 * (double)i + 0.1);

    run full;
    run_init(&full, &fx, NULL, NULL, 0, B);
    llama_print(full.m, stdout);
    param_set_print(&full.ps, stdout);
    llama_acts_print_plan(full.a, stdout);
    run_step(&full, &fx);
    test_targets(&full, &fx);
    test_forward(&full, &fx);
    test_grads(&full, &fx);
    test_frozen(&full, &fx);
    test_wide_heads_fd();

    /* a second backward accumulates: every gradient doubles */
    {
        param *q = param_find(&full.ps, "llm.model.layers.0.self_attn.k_proj.weight");
        param *e = param_find(&full.ps, "llm.model.embed_tokens.weight");
        int64_t nq = tensor_numel(q->g), ne = tensor_numel(e->g);
        float *q1 = malloc(sizeof(float) * (size_t)nq), *e1 = malloc(sizeof(float) * (size_t)ne);
        memcpy(q1, q->g->data, sizeof(float) * (size_t)nq);
        memcpy(e1, e->g->data, sizeof(float) * (size_t)ne);
        run_step(&full, &fx);
        for (int64_t i = 0; i < nq; i++) q1[i] *= 2;
        for (int64_t i = 0; i < ne; i++) e1[i] *= 2;
        int nf;
        double eq = relerr_rows(q->g->data, q1, 1, nq, NULL, &nf), ee = relerr_rows(e->g->data, e1, 1, ne, NULL, &nf);
        /* measured 9.7e-10 (f32, two passes against twice one pass) */
        T_CHECK(eq < 1e-8 && ee < 1e-8, "gradients accumulate over two backward passes (%.3g, %.3g)", eq, ee);
        free(q1);
        free(e1);
    }

    run_free(&full);

    /* the same golden step with flash attention: only the log-sum-exp kept, probabilities recomputed */
    use_flash = 1;
    run fl;
    run_init(&fl, &fx, NULL, NULL, 0, B);
    run_step(&fl, &fx);
    printf("flash attention:\n");
    test_forward(&fl, &fx);
    test_grads(&fl, &fx);
    run_free(&fl);
    use_flash = 0;

    /* activation recomputation (one layer, then all, with each attention; then a set that is not the
     * first layers: every other layer from the last one down): the same ops on the same inputs, so the
     * gradients equal those of the plain run (and the goldens) */
    unsigned char alt[64] = {0};
    int n_alt = 0;
    for (int i = fx.cfg.n_layers - 1; i >= 0 && i < 64; i -= 2) alt[i] = 1, n_alt++;
    for (int mode = 0; mode < 4; mode++) {
        use_recompute = mode == 0 ? 1 : mode == 3 ? n_alt : fx.cfg.n_layers;
        use_recompute_mask = mode == 3 ? alt : NULL;
        use_flash = mode == 2;
        run rc;
        run_init(&rc, &fx, NULL, NULL, 0, B);
        run_step(&rc, &fx);
        printf("recompute %d of %d layers%s, %s attention:\n", use_recompute, fx.cfg.n_layers,
               mode == 3 ? " (every other from the last)" : "", use_flash ? "flash" : "kept");
        test_forward(&rc, &fx);
        test_grads(&rc, &fx);
        int keep = use_recompute;
        const unsigned char *keep_mask = use_recompute_mask;
        use_recompute = 0;
        use_recompute_mask = NULL;
        run plain;
        run_init(&plain, &fx, NULL, NULL, 0, B);
        run_step(&plain, &fx);
        use_recompute = keep;
        use_recompute_mask = keep_mask;
        size_t same = 0, total = 0;
        for (int i = 0; i < rc.ps.n; i++) {
            const param *p = rc.ps.v[i], *q = param_find(&plain.ps, p->name);
            if (!p->g || strncmp(p->name, "llm.", 4) != 0) continue;
            total++;
            same += memcmp(p->g->data, q->g->data, tensor_nbytes(p->g)) == 0;
        }
        T_CHECK(same == total && total > 0, "recomputed gradients equal the plain run's bit for bit (%zu of %zu)", same, total);
        size_t br = llama_acts_bytes(rc.a), bp = llama_acts_bytes(plain.a);
        T_CHECK(use_recompute == 1 ? br == bp : br < bp, "recomputing %d layers plans %zu bytes vs %zu", use_recompute, br, bp);
        printf("  activations %zu bytes vs %zu without recomputation\n", br, bp);
        run_free(&plain);
        run_free(&rc);
    }
    use_flash = use_recompute = 0;
    use_recompute_mask = NULL;

    free(fx.image_embeds);
    free(fx.hidden_final);
    free(fx.text_logits);
    free(fx.pad_fill);
    safetensors_close(fx.init);
    safetensors_close(fx.batch);
    safetensors_close(fx.fwd);
    safetensors_close(fx.grads);
    json_decref(man);
    return t_done();
}
