#include "model/asvr.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/progress.h" /* asvr_now */
#include "model/text_loss.h"
#include "model/weights.h"
#include "nn/ops.h"

/* ---- config ------------------------------------------------------------------------------------- */

static int jint(json_t *o, const char *k, int *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!json_is_integer(j)) return asvr_err_set(err, "model config: \"%s\" must be an integer", k);
    *v = (int)json_integer_value(j);
    return 0;
}
static int jnum(json_t *o, const char *k, float *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!json_is_number(j)) return asvr_err_set(err, "model config: \"%s\" must be a number", k);
    *v = (float)json_number_value(j);
    return 0;
}

static int parse_head(json_t *vh, int d_in, int code_dim, vhead_config *h, asvr_error *err) {
    if (jint(vh, "embed_dim", &h->embed, err) < 0 || jint(vh, "n_heads", &h->n_heads, err) < 0 ||
        jint(vh, "depth", &h->depth, err) < 0 || jint(vh, "codebook_size", &h->codebook_size, err) < 0 ||
        jint(vh, "n_layers", &h->n_layers, err) < 0 || jint(vh, "ffn_dim", &h->ffn_dim, err) < 0 ||
        jnum(vh, "rms_norm_eps", &h->eps, err) < 0)
        return -1;
    h->d_in = d_in;
    h->code_dim = code_dim;
    json_t *cd = json_object_get(vh, "code_dim"); /* the codebook width when it is not the tower's */
    if (json_is_integer(cd)) h->code_dim = (int)json_integer_value(cd);
    if (h->depth < 1 || h->depth > 255) return asvr_err_set(err, "model config: visual head depth %d outside 1..255", h->depth);
    return vhead_config_check(h, err);
}

int asvr_config_from_json(const char *text, asvr_config *c, asvr_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return asvr_err_set(err, "model config is not a JSON object: %s", je.text);
    }
    int rc = -1;
    json_t *llm = json_object_get(o, "llm"), *vis = json_object_get(o, "vision"), *vh = json_object_get(o, "visual_head");
    if (!json_is_object(llm) || !json_is_object(vis)) {
        asvr_err_set(err, "model config needs \"llm\" and \"vision\" objects");
        goto out;
    }
    char *llm_text = json_dumps(llm, JSON_COMPACT);
    int r = llama_config_from_json(llm_text, &c->llm, err);
    free(llm_text);
    if (r < 0) goto out;
    siglip_config *v = &c->vision;
    if (jint(vis, "image_size", &v->image_size, err) < 0 || jint(vis, "patch_size", &v->patch_size, err) < 0 ||
        jint(vis, "hidden_size", &v->hidden, err) < 0 || jint(vis, "intermediate_size", &v->intermediate, err) < 0 ||
        jint(vis, "num_layers", &v->layers, err) < 0 || jint(vis, "num_heads", &v->heads, err) < 0 ||
        jint(vis, "tap_layer", &v->tap, err) < 0 || jnum(vis, "layer_norm_eps", &v->ln_eps, err) < 0)
        goto out;
    v->act = NN_ACT_GELU_TANH;
    for (int i = 0; i < 3; i++) c->image_mean[i] = c->image_std[i] = 0.5f;
    json_t *mean = json_object_get(vis, "image_mean"), *std = json_object_get(vis, "image_std");
    for (int i = 0; i < 3; i++) {
        if (json_is_array(mean)) c->image_mean[i] = (float)json_number_value(json_array_get(mean, (size_t)i));
        if (json_is_array(std)) c->image_std[i] = (float)json_number_value(json_array_get(std, (size_t)i));
    }
    if (siglip_config_check(v, err) < 0) goto out;
    c->image_positions = siglip_num_patches(v);
    json_t *ip = json_object_get(o, "image_positions");
    if (ip && json_integer_value(ip) != c->image_positions) {
        asvr_err_set(err, "model config: image_positions %lld, the vision tower gives %d",
                     (long long)json_integer_value(ip), c->image_positions);
        goto out;
    }
    c->lambda_visual = 1.0f;
    json_t *lam = json_object_get(o, "lambda_visual");
    if (json_is_number(lam)) c->lambda_visual = (float)json_number_value(lam);
    c->has_head = json_is_object(vh);
    if (c->has_head && parse_head(vh, c->llm.dim, v->hidden, &c->head, err) < 0) goto out;
    json_t *va = json_object_get(o, "visual_head_appearance");
    c->has_app_head = json_is_object(va);
    if (c->has_app_head && parse_head(va, c->llm.dim, v->hidden, &c->head_app, err) < 0) goto out;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/* ---- model -------------------------------------------------------------------------------------- */

int asvr_config_set_recompute(asvr_config *c, int first_n, const char *list, asvr_error *err) {
    int nl = c->llm.n_layers;
    memset(c->recompute_mask, 0, sizeof c->recompute_mask);
    c->recompute_layers = 0;
    if (nl > ASVR_MAX_RECOMPUTE_LAYERS && (first_n > 0 || (list && *list)))
        return asvr_err_set(err, "recompute: the LLM has %d layers; at most %d can be named", nl, ASVR_MAX_RECOMPUTE_LAYERS);
    if (!list || !*list) {
        if (first_n < 0 || first_n > nl) return asvr_err_set(err, "recompute %d layers: give 0 .. %d", first_n, nl);
        for (int i = 0; i < first_n; i++) c->recompute_mask[i] = 1;
        c->recompute_layers = first_n;
        return 0;
    }
    const char *p = list;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p) return asvr_err_set(err, "recompute layers '%s': expected a layer number at '%s'", list, p);
        p = end;
        if (*p == '-') {
            const char *q = p + 1;
            b = strtol(q, &end, 10);
            if (end == q) return asvr_err_set(err, "recompute layers '%s': expected a layer number after '-'", list);
            p = end;
        }
        if (a < 0 || b < a || b >= nl)
            return asvr_err_set(err, "recompute layers '%s': %ld-%ld is not a range within 0 .. %d", list, a, b, nl - 1);
        for (long i = a; i <= b; i++) c->recompute_mask[i] = 1;
        if (*p == ',') p++;
        else if (*p) return asvr_err_set(err, "recompute layers '%s': unexpected '%c'", list, *p);
    }
    for (int i = 0; i < nl; i++) c->recompute_layers += c->recompute_mask[i];
    return 0;
}

void asvr_model_init(asvr_model *m, const asvr_config *c) {
    memset(m, 0, sizeof *m);
    m->c = *c;
    param_set_init(&m->ps, "asvr");
    m->llm = llama_new(&c->llm, &m->ps, "llm.");
    mlp2_declare(&m->proj, &m->ps, c->vision.hidden, c->llm.dim, c->llm.dim, "mm_projector.");
    if (c->has_head) m->head = vhead_new(&c->head, &m->ps, "visual_head.");
    if (c->has_app_head) m->head_app = vhead_new(&c->head_app, &m->ps, "visual_head_appearance.");
    if (c->compute_bf16) param_set_set_compute_dtype(&m->ps, NN_BF16);
}

int asvr_model_load_tower(asvr_model *m, const safetensors *st, const char *prefix, asvr_error *err) {
    nn_dtype dt = m->ps.device == NN_CUDA && m->c.tower_bf16 ? NN_BF16 : NN_F32;
    return siglip_load_ex(&m->c.vision, st, prefix, m->ps.device, dt, &m->tower, err);
}

static int load_books(const vhead_config *h, const safetensors *st, const char *name, const char *label, nn_device dev,
                      nn_arena **frozen, tensor **books, int C, asvr_error *err) {
    int D = h ? h->depth : 0, K = h ? h->codebook_size : 0;
    if (h) C = h->code_dim;
    const st_tensor *all = safetensors_find(st, name);
    if (all) { /* one [D,K,C] tensor */
        if (all->ndim != 3 || (D && (all->shape[0] != D || all->shape[1] != K)) || all->shape[2] != C)
            return asvr_err_set(err, "codebooks '%s' must be [%d, %d, %d]", name, D, K, C);
        D = (int)all->shape[0], K = (int)all->shape[1];
    }
    if (!D) return asvr_err_set(err, "the codebooks' depth is unknown without a visual head config");
    *frozen = nn_arena_new(label, dev);
    *books = nn_arena_add(*frozen, label, NN_F32, 3, (int64_t[]){D, K, C});
    nn_arena_commit(*frozen);
    if (all) return param_tensor_load(*books, all, err);
    for (int d = 0; d < D; d++) {
        char key[256];
        snprintf(key, sizeof key, "%s%d.weight", name, d);
        const st_tensor *t = safetensors_find(st, key);
        if (!t) return asvr_err_set(err, "codebook '%s' is missing", key);
        if (t->ndim != 2 || t->shape[1] != C || (t->shape[0] != K && t->shape[0] != K + 1))
            return asvr_err_set(err, "codebook '%s' must be [%d or %d, %d]", key, K, K + 1, C);
        float *tmp = asvr_malloc(sizeof(float) * (size_t)t->numel, "a codebook");
        if (st_tensor_to_f32(t, tmp, err) < 0) {
            free(tmp);
            return -1;
        }
        tensor book = tensor_index0(*books, d);
        op_write_f32(&book, tmp); /* the leading K rows (a padding row K, if any, is dropped) */
        free(tmp);
    }
    return 0;
}

int asvr_model_load_codebooks(asvr_model *m, const safetensors *st, const char *name, asvr_error *err) {
    /* the semantic head's config gives D and K even when that head is off (--input discrete) */
    return load_books(m->c.head.depth > 0 ? &m->c.head : NULL, st, name, "codebooks", m->ps.device, &m->frozen,
                      &m->codebooks, m->c.vision.hidden, err);
}

int asvr_model_load_app_codebooks(asvr_model *m, const safetensors *st, const char *name, asvr_error *err) {
    if (!m->c.has_app_head) return asvr_err_set(err, "the model config has no visual_head_appearance");
    return load_books(&m->c.head_app, st, name, "appearance codebooks", m->ps.device, &m->frozen_app,
                      &m->codebooks_app, m->c.vision.hidden, err);
}

void asvr_model_free(asvr_model *m) {
    llama_free(m->llm);
    if (m->head) vhead_free(m->head);
    if (m->head_app) vhead_free(m->head_app);
    siglip_free(m->tower);
    if (m->frozen) nn_arena_free(m->frozen);
    if (m->frozen_app) nn_arena_free(m->frozen_app);
    param_set_free(&m->ps);
    memset(m, 0, sizeof *m);
}

void asvr_model_print(const asvr_model *m, FILE *f) {
    const asvr_config *c = &m->c;
    fprintf(f, "model: LLaMA d%d x %d layers, %d heads (%d kv), FFN %d, vocab %d | vision %dpx/%d, %d wide, tap %d, "
               "%d positions%s | ",
            c->llm.dim, c->llm.n_layers, c->llm.n_heads, c->llm.n_kv_heads, c->llm.ffn_dim, c->llm.vocab,
            c->vision.image_size, c->vision.patch_size, c->vision.hidden, c->vision.tap, c->image_positions,
            c->input_discrete ? " (discrete input)" : "");
    fprintf(f, "%s attention, %d of %d layers recomputed | ", c->flash_attention ? "flash" : "kept-probabilities",
            c->recompute_layers, c->llm.n_layers);
    if (c->has_app_head)
        fprintf(f, "appearance head E%d, D %d, K %d, code dim %d | ", c->head_app.embed, c->head_app.depth,
                c->head_app.codebook_size, c->head_app.code_dim);
    if (c->has_head)
        fprintf(f, "visual head E%d, %d heads, D %d, K %d, %d layers, FFN %d, lambda %.2f\n", c->head.embed,
                c->head.n_heads, c->head.depth, c->head.codebook_size, c->head.n_layers, c->head.ffn_dim,
                (double)c->lambda_visual);
    else
        fprintf(f, "no visual head (text loss only)\n");
    param_set_print(&m->ps, f);
}

/* ---- activations -------------------------------------------------------------------------------- */

struct asvr_acts {
    int B, T, max_images;
    nn_arena *arena;     /* on the model's device */
    nn_arena *host;      /* the inputs built on the host each micro-batch, uploaded into arena's tensors */
    tensor *h_ids, *h_targets, *h_iflat, *h_isrc, *h_cid, *h_codes;
    tensor *images;      /* [max_images, 3, S, S] on the device (NULL without the tower) */
    llama_acts *la;
    vhead_acts *va, *va_app;
    siglip_acts *sa;
    tensor *x, *h, *dh, *dx, *logits, *targets, *ids, *pos, *seg;
    tensor *feats, *pre, *hid, *emb, *demb, *dscratch, *tmp_rows;
    tensor *feats_lp; /* the tower's output in its own dtype when that is not f32 (bf16 tower), else NULL */
    tensor *idx_flat, *idx_src, *h_img, *dh_img, *rows_d, *code_ids;
    int timing;
    double phase_s[ASVR_NPHASES], mark;
};

const char *asvr_phase_name(asvr_phase p) {
    static const char *names[ASVR_NPHASES] = {"vision", "llm_forward", "text_head", "visual_head", "llm_backward",
                                              "projector_backward"};
    return p >= 0 && p < ASVR_NPHASES ? names[p] : "?";
}

void asvr_acts_set_timing(asvr_acts *a, int on) {
    a->timing = on != 0;
    memset(a->phase_s, 0, sizeof a->phase_s);
}

const double *asvr_acts_phase_seconds(const asvr_acts *a) { return a->phase_s; }

/* Ends phase p (waiting for the device) and starts the next one. */
static void phase_end(asvr_acts *a, nn_device dev, asvr_phase p) {
    if (!a->timing) return;
    nn_device_sync(dev);
    double now = asvr_now();
    a->phase_s[p] += now - a->mark;
    a->mark = now;
}

asvr_acts *asvr_acts_new(const asvr_model *m, int B, int T, int max_images) {
    const asvr_config *c = &m->c;
    asvr_acts *a = asvr_calloc(1, sizeof *a, "model activations");
    a->B = B, a->T = T, a->max_images = max_images > 0 ? max_images : 1;
    int64_t BT = (int64_t)B * T, d = c->llm.dim, P = c->image_positions, NI = (int64_t)a->max_images * P;
    int64_t C = c->vision.hidden, D = c->has_head ? c->head.depth : 1;
    if (c->has_app_head && c->head_app.depth > D) D = c->head_app.depth;
    nn_arena *ar = a->arena = nn_arena_new("step activations", m->ps.device);
    a->x = nn_arena_add(ar, "inputs_embeds", NN_F32, 2, (int64_t[]){BT, d});
    a->h = nn_arena_add(ar, "hidden_final", NN_F32, 2, (int64_t[]){BT, d});
    a->dh = nn_arena_add(ar, "d_hidden_final", NN_F32, 2, (int64_t[]){BT, d});
    a->dx = nn_arena_add(ar, "d_inputs_embeds", NN_F32, 2, (int64_t[]){BT, d});
    /* text logits in the LM head's compute dtype (bf16 with bf16 weight copies, as an autocast lm_head
     * gives them); the fused cross-entropy reads them in fp32 and writes dlogits in place */
    a->logits = nn_arena_add(ar, "text_logits", llama_head_dtype(m->llm), 2, (int64_t[]){BT, c->llm.vocab});
    a->targets = nn_arena_add(ar, "text_targets", NN_I32, 2, (int64_t[]){B, T});
    a->ids = nn_arena_add(ar, "ids", NN_I32, 2, (int64_t[]){B, T});
    a->pos = nn_arena_add(ar, "positions", NN_I32, 2, (int64_t[]){B, T});
    a->seg = nn_arena_add(ar, "segments", NN_I32, 2, (int64_t[]){B, T});
    /* the projector's hidden activations in its compute dtype (bf16 with bf16 weight copies) */
    nn_dtype pdt = m->proj.w1->wc->dtype;
    a->feats = nn_arena_add(ar, "image_features", NN_F32, 2, (int64_t[]){NI, C});
    if (m->tower && siglip_dtype(m->tower) != NN_F32)
        a->feats_lp = nn_arena_add(ar, "image_features_tower_dtype", siglip_dtype(m->tower), 2, (int64_t[]){NI, C});
    a->pre = nn_arena_add(ar, "projector_pre", pdt, 2, (int64_t[]){NI, d});
    a->hid = nn_arena_add(ar, "projector_hidden", pdt, 2, (int64_t[]){NI, d});
    a->emb = nn_arena_add(ar, "image_embeds", NN_F32, 2, (int64_t[]){NI, d});
    a->demb = nn_arena_add(ar, "d_image_embeds", NN_F32, 2, (int64_t[]){NI, d});
    a->dscratch = nn_arena_add(ar, "d_projector_hidden", pdt, 2, (int64_t[]){NI, d});
    a->tmp_rows = nn_arena_add(ar, "image_rows", NN_F32, 2, (int64_t[]){NI, d});
    a->rows_d = nn_arena_add(ar, "feature_rows", NN_F32, 2, (int64_t[]){NI, C});
    a->idx_flat = nn_arena_add(ar, "image_flat_index", NN_I32, 1, (int64_t[]){NI});
    a->idx_src = nn_arena_add(ar, "image_source_index", NN_I32, 1, (int64_t[]){NI});
    a->code_ids = nn_arena_add(ar, "code_ids", NN_I32, 1, (int64_t[]){NI});
    a->h_img = nn_arena_add(ar, "h_image", NN_F32, 2, (int64_t[]){NI, d});
    a->dh_img = nn_arena_add(ar, "d_h_image", NN_F32, 2, (int64_t[]){NI, d});
    if (m->tower) {
        int64_t S = c->vision.image_size;
        a->images = nn_arena_add(ar, "images", NN_F32, 4, (int64_t[]){a->max_images, 3, S, S});
    }
    nn_arena_commit(ar);
    nn_arena *hs = a->host = nn_arena_new("step inputs (host)", NN_CPU);
    a->h_ids = nn_arena_add(hs, "ids", NN_I32, 2, (int64_t[]){B, T});
    a->h_targets = nn_arena_add(hs, "text_targets", NN_I32, 2, (int64_t[]){B, T});
    a->h_iflat = nn_arena_add(hs, "image_flat_index", NN_I32, 1, (int64_t[]){NI});
    a->h_isrc = nn_arena_add(hs, "image_source_index", NN_I32, 1, (int64_t[]){NI});
    a->h_cid = nn_arena_add(hs, "code_ids", NN_I32, 1, (int64_t[]){NI});
    a->h_codes = nn_arena_add(hs, "codes", NN_I32, 2, (int64_t[]){NI, D});
    nn_arena_commit(hs);
    a->la = llama_acts_new_sel(m->llm, B, T, c->flash_attention,
                               c->llm.n_layers <= ASVR_MAX_RECOMPUTE_LAYERS ? c->recompute_mask : NULL);
    if (m->head) a->va = vhead_acts_new(m->head, (int)NI);
    if (m->head_app) a->va_app = vhead_acts_new(m->head_app, (int)NI);
    if (m->tower) a->sa = siglip_acts_new(m->tower, a->max_images);
    return a;
}

void asvr_acts_print_plan(const asvr_acts *a, FILE *f) {
    nn_arena_print_plan(a->arena, f);
    nn_arena_print_plan(a->host, f);
    fprintf(f, "activations on %s: step %.2f MiB, llama %.2f MiB, visual heads %.2f MiB, input tower %.2f MiB; host inputs %.2f MiB\n",
            nn_device_name(a->x->device), (double)nn_arena_bytes(a->arena) / 1048576.0,
            (double)llama_acts_bytes(a->la) / 1048576.0,
            (double)((a->va ? vhead_acts_bytes(a->va) : 0) + (a->va_app ? vhead_acts_bytes(a->va_app) : 0)) / 1048576.0,
            (double)(a->sa ? siglip_acts_bytes(a->sa) : 0) / 1048576.0, (double)nn_arena_bytes(a->host) / 1048576.0);
}

size_t asvr_acts_bytes(const asvr_acts *a) {
    return nn_arena_bytes(a->arena) + llama_acts_bytes(a->la) + (a->va ? vhead_acts_bytes(a->va) : 0) +
           (a->va_app ? vhead_acts_bytes(a->va_app) : 0) + (a->sa ? siglip_acts_bytes(a->sa) : 0);
}

void asvr_acts_free(asvr_acts *a) {
    if (!a) return;
    llama_acts_free(a->la);
    if (a->va) vhead_acts_free(a->va);
    if (a->va_app) vhead_acts_free(a->va_app);
    if (a->sa) siglip_acts_free(a->sa);
    nn_arena_free(a->arena);
    nn_arena_free(a->host);
    free(a);
}

/* ---- one micro-batch ---------------------------------------------------------------------------- */

static tensor head_rows(const tensor *t, int64_t n) {
    return tensor_make(t->name, t->dtype, t->device, 2, (int64_t[]){n, t->shape[1]}, t->data);
}

/* A 1-d view of the first n entries of an index tensor (n >= 1). */
static tensor head_vec(const tensor *t, int64_t n) {
    return tensor_make(t->name, t->dtype, t->device, 1, (int64_t[]){n}, t->data);
}

/* One visual head over the surviving image positions: gather the LLM states (no shift), forward and
 * loss against the codes (built on the host: the head rearranges them there), backward, and the state
 * gradient added into dh. */
static void visual_target(asvr_acts *a, const vhead *head, vhead_acts *va, const tensor *books, const uint16_t *codes_src,
                          int D, int64_t nv, const int32_t *isrc, const tensor *t_iflat, double scale, double *sum,
                          int64_t *correct, int64_t *count) {
    int32_t *cd = a->h_codes->data;
    for (int64_t k = 0; k < nv; k++)
        for (int d = 0; d < D; d++) cd[k * D + d] = codes_src[(int64_t)isrc[k] * D + d];
    tensor h_img = head_rows(a->h_img, nv), dh_img = head_rows(a->dh_img, nv);
    tensor codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){nv, D}, cd);
    op_embedding(&h_img, t_iflat, a->h);
    double vs[256] = {0};
    int64_t vc[256] = {0};
    vhead_forward_loss(head, va, &h_img, &codes, books, (float)scale, vs, vc);
    vhead_backward(head, va, &dh_img);
    op_embedding_backward(a->dh, &dh_img, t_iflat);
    for (int d = 0; d < D; d++) sum[d] += vs[d], correct[d] += vc[d];
    *count += nv;
}

void asvr_forward_backward(asvr_model *m, asvr_acts *a, const asvr_batch *b, double text_scale, double vis_scale,
                           double app_scale, asvr_losses *l) {
    const asvr_config *c = &m->c;
    CHECK(b->B == a->B && b->T == a->T && b->n_images <= a->max_images, "",
          "batch %dx%d with %d images does not fit activations planned for %dx%d with %d", b->B, b->T, b->n_images,
          a->B, a->T, a->max_images);
    int64_t BT = (int64_t)b->B * b->T, P = c->image_positions, NI = (int64_t)b->n_images * P;
    int D = c->has_head ? c->head.depth : 0;
    nn_device dev = a->x->device;
    int64_t V = c->llm.vocab;

    /* the inputs, built on the host (ids checked against the vocabulary there) and uploaded once */
    int32_t *ids = a->h_ids->data;
    for (int64_t i = 0; i < BT; i++) {
        ids[i] = b->ids[i] >= 0 && b->seg[i] >= 0 ? b->ids[i] : -1;
        CHECK(ids[i] < V, "the packed store was made with another tokenizer", "token id %d at %lld is >= the vocabulary %lld",
              (int)ids[i], (long long)i, (long long)V);
    }
    tensor t_labels = tensor_make("labels", NN_I32, NN_CPU, 2, (int64_t[]){b->B, b->T}, (void *)b->labels);
    tensor t_seg = tensor_make("segments", NN_I32, NN_CPU, 2, (int64_t[]){b->B, b->T}, (void *)b->seg);
    tensor t_pos = tensor_make("positions", NN_I32, NN_CPU, 2, (int64_t[]){b->B, b->T}, (void *)b->pos);
    text_loss_targets(&t_labels, &t_seg, a->h_targets);
    op_transfer(a->ids, a->h_ids);
    op_transfer(a->targets, a->h_targets);
    op_transfer(a->pos, &t_pos);
    op_transfer(a->seg, &t_seg);

    /* image positions that survived truncation: where they go in the rows, where they come from */
    int32_t *iflat = a->h_iflat->data, *isrc = a->h_isrc->data;
    int64_t nv = 0;
    for (int64_t k = 0; k < NI; k++)
        if (b->image_pos[k] >= 0) iflat[nv] = b->image_pos[k], isrc[nv] = (int32_t)k, nv++;
    /* (a batch of text-only samples has no image positions: the index tensors are then unused) */
    tensor t_iflat = head_vec(a->idx_flat, nv ? nv : 1), t_isrc = head_vec(a->idx_src, nv ? nv : 1);
    if (nv > 0) {
        tensor hf = head_vec(a->h_iflat, nv), hs = head_vec(a->h_isrc, nv);
        op_transfer(&t_iflat, &hf);
        op_transfer(&t_isrc, &hs);
    }

    /* image features → projector */
    if (a->timing) {
        nn_device_sync(dev);
        a->mark = asvr_now();
    }
    int64_t NIr = NI ? NI : 1;
    tensor feats = head_rows(a->feats, NIr), pre = head_rows(a->pre, NIr), hid = head_rows(a->hid, NIr),
           emb = head_rows(a->emb, NIr);
    if (NI > 0) {
        if (c->input_discrete) {
            int32_t *cid = a->h_cid->data;
            int64_t Dd = m->codebooks->shape[0], K = m->codebooks->shape[1];
            tensor rows = head_rows(a->rows_d, NI), t_cid = head_vec(a->code_ids, NI), h_cid = head_vec(a->h_cid, NI);
            op_fill(&feats, 0.0f);
            for (int d = 0; d < (int)Dd; d++) {
                for (int64_t k = 0; k < NI; k++) {
                    cid[k] = b->codes[k * Dd + d];
                    CHECK(cid[k] < K, "the codes must come from the tokenizer of --codebooks",
                          "code %d of image position %lld is >= the codebook size %lld", (int)cid[k], (long long)k, (long long)K);
                }
                op_transfer(&t_cid, &h_cid);
                tensor book = tensor_index0(m->codebooks, d);
                op_embedding(&rows, &t_cid, &book);
                op_add(&feats, &feats, &rows);
            }
        } else {
            CHECK(m->tower != NULL && b->pixels != NULL && a->images != NULL, "", "the vision tower or the images are missing");
            int64_t S = c->vision.image_size;
            tensor hp = tensor_make("images", NN_F32, NN_CPU, 4, (int64_t[]){b->n_images, 3, S, S}, (void *)b->pixels);
            tensor img = tensor_head0(a->images, b->n_images);
            op_transfer(&img, &hp);
            tensor *dst = a->feats_lp ? a->feats_lp : a->feats;
            tensor out = tensor_make("image_features", dst->dtype, dev, 3, (int64_t[]){b->n_images, P, c->vision.hidden},
                                     dst->data);
            siglip_forward(m->tower, a->sa, &img, &out);
            if (a->feats_lp && a->feats_lp->dtype == m->proj.w1->wc->dtype) {
                feats = head_rows(a->feats_lp, NIr); /* bf16 tower, bf16 projector: read its features as they are */
            } else if (a->feats_lp) { /* bf16 tower, f32 projector: its features to f32 */
                tensor lp = head_rows(a->feats_lp, (int64_t)b->n_images * P), f32 = head_rows(a->feats, (int64_t)b->n_images * P);
                op_copy(&f32, &lp);
            }
        }
        mlp2_forward(&m->proj, &feats, &pre, &hid, &emb);
    }
    phase_end(a, dev, ASVR_PHASE_VISION);

    /* inputs_embeds: token embeddings, image embeddings spliced in (0 + v, exactly v) */
    tensor x = *a->x, ids_t = *a->ids;
    op_fill(&x, 0.0f);
    llama_embed(m->llm, &ids_t, &x);
    if (nv > 0) {
        tensor rows = head_rows(a->tmp_rows, nv);
        op_embedding(&rows, &t_isrc, &emb);
        op_embedding_backward(&x, &rows, &t_iflat);
    }
    tensor x3 = tensor_make("inputs_embeds", NN_F32, dev, 3, (int64_t[]){b->B, b->T, c->llm.dim}, x.data);
    tensor h3 = tensor_make("hidden_final", NN_F32, dev, 3, (int64_t[]){b->B, b->T, c->llm.dim}, a->h->data);
    llama_forward(m->llm, a->la, &x3, a->pos, a->seg, &h3);
    phase_end(a, dev, ASVR_PHASE_LLM_FORWARD);

    /* text loss: logits, CE (dlogits in place), back through lm_head into dh */
    double ts = 0;
    int64_t tc = 0;
    llama_lm_head(m->llm, a->h, a->logits);
    op_cross_entropy(a->logits, &ts, &tc, a->logits, a->targets, (float)text_scale);
    llama_lm_head_backward(m->llm, a->logits, a->h, a->dh, 0);
    l->text_sum += ts;
    l->text_count += tc;
    phase_end(a, dev, ASVR_PHASE_TEXT_HEAD);

    /* visual losses at the image positions (no shift) */
    if (m->head && nv > 0)
        visual_target(a, m->head, a->va, m->codebooks, b->codes, D, nv, isrc, &t_iflat, vis_scale, l->vis_sum,
                      l->vis_correct, &l->vis_count);
    if (m->head_app && nv > 0) {
        CHECK(b->codes_app != NULL, "", "the model has an appearance head but the batch has no appearance codes");
        visual_target(a, m->head_app, a->va_app, m->codebooks_app, b->codes_app, c->head_app.depth, nv, isrc, &t_iflat,
                      app_scale, l->app_sum, l->app_correct, &l->app_count);
    }
    if (m->head && b->zero_codes && b->n_text_only > 0) {
        /* Every text-only sample contributes the same P rows (zero states, the zero image's codes), so
         * one pass over them with the scale multiplied by their number gives the summed gradient. */
        int64_t n0 = b->n_text_only;
        CHECK(P <= a->max_images * P, "", "activations too small for the zero-image rows");
        int32_t *cd = a->h_codes->data;
        for (int64_t k = 0; k < P; k++)
            for (int d = 0; d < D; d++) cd[k * D + d] = b->zero_codes[k * D + d];
        tensor h0 = head_rows(a->h_img, P), codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){P, D}, cd);
        op_fill(&h0, 0.0f);
        double vs[256] = {0};
        int64_t vc[256] = {0};
        vhead_forward_loss(m->head, a->va, &h0, &codes, m->codebooks, (float)(vis_scale * (double)n0), vs, vc);
        vhead_backward(m->head, a->va, NULL); /* the states are constants: no gradient flows back */
        for (int d = 0; d < D; d++) l->vis_sum[d] += vs[d] * (double)n0, l->vis_correct[d] += vc[d] * n0;
        l->vis_count += n0 * P;
    }

    phase_end(a, dev, ASVR_PHASE_VISUAL_HEAD);

    /* back through the LLM; then the token embeddings and the projector */
    tensor dh3 = tensor_make("d_hidden_final", NN_F32, dev, 3, (int64_t[]){b->B, b->T, c->llm.dim}, a->dh->data);
    tensor dx3 = tensor_make("d_inputs_embeds", NN_F32, dev, 3, (int64_t[]){b->B, b->T, c->llm.dim}, a->dx->data);
    llama_backward(m->llm, a->la, &dh3, &dx3);
    llama_embed_backward(m->llm, &ids_t, a->dx);
    phase_end(a, dev, ASVR_PHASE_LLM_BACKWARD);
    if (nv > 0 && m->proj.w1->g) {
        tensor demb = head_rows(a->demb, NIr), rows = head_rows(a->tmp_rows, nv), ds = head_rows(a->dscratch, NIr);
        op_fill(&demb, 0.0f);
        op_embedding(&rows, &t_iflat, a->dx);
        op_embedding_backward(&demb, &rows, &t_isrc);
        mlp2_backward(&m->proj, &demb, &feats, &pre, &hid, &ds, NULL, 0);
    }
    phase_end(a, dev, ASVR_PHASE_PROJ_BACKWARD);
}
