/* asvr_step.c — one micro-batch through the ASVR model (asvr.h): the activations, and the step in
 * three parts over the state they keep: asvr_forward (inputs → final LLM states), asvr_loss (text and
 * visual losses; when training, the visual heads' own backward too) and asvr_backward (the LLM, the
 * embeddings and the projector). */
#include <stdlib.h>
#include <string.h>

#include "base/progress.h" /* asvr_now */
#include "model/asvr.h"
#include "model/text_loss.h"
#include "nn/ops.h"

struct asvr_acts {
    int B, T, max_images, head_chunk;
    nn_arena *arena;     /* on the model's device */
    nn_arena *host;      /* the inputs built on the host each micro-batch, uploaded into arena's tensors */
    tensor *h_ids, *h_targets, *h_iflat, *h_isrc, *h_cid, *h_codes;
    tensor *images;      /* [max_images, 3, S, S] on the device (NULL without the tower) */
    llama_acts *la;
    vhead_acts *va, *va_app;
    siglip_acts *sa;
    s2_acts *s2;         /* the S2 multi-scale tower's buffers (config scales), instead of sa */
    tensor *x, *h, *dh, *dx, *logits, *targets, *ids, *pos, *seg;
    tensor *feats, *pre, *hid, *emb, *demb, *dscratch, *tmp_rows;
    tensor *feats_lp; /* the tower's output in its own dtype when that is not f32 (bf16 tower), else NULL */
    tensor *idx_flat, *idx_src, *h_img, *rows_d, *code_ids;
    tensor *dh_img, *dh_img_app; /* the visual heads' gradients of the states at the image positions */
    /* the micro-batch of the last asvr_forward (the caller keeps it alive until asvr_backward) */
    const asvr_batch *b;
    int64_t nv;          /* image positions that survived truncation */
    int stage;           /* 0 nothing run, 1 forward, 2 loss (for backward), 3 loss only */
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

static void phase_start(asvr_acts *a, nn_device dev) {
    if (!a->timing) return;
    nn_device_sync(dev);
    a->mark = asvr_now();
}

/* Ends phase p (waiting for the device) and starts the next one. */
static void phase_end(asvr_acts *a, nn_device dev, asvr_phase p) {
    if (!a->timing) return;
    nn_device_sync(dev);
    double now = asvr_now();
    a->phase_s[p] += now - a->mark;
    a->mark = now;
}

/* ---- activations -------------------------------------------------------------------------------- */

static tensor *add2(nn_arena *ar, const char *name, nn_dtype dt, int64_t rows, int64_t cols) {
    return nn_arena_add(ar, name, dt, 2, (int64_t[]){rows, cols});
}

static tensor *add1(nn_arena *ar, const char *name, nn_dtype dt, int64_t n) {
    return nn_arena_add(ar, name, dt, 1, (int64_t[]){n});
}

asvr_acts *asvr_acts_new(const asvr_model *m, int B, int T, int max_images) {
    const asvr_config *c = &m->c;
    asvr_acts *a = asvr_calloc(1, sizeof *a, "model activations");
    a->B = B, a->T = T, a->max_images = max_images > 0 ? max_images : 1;
    int64_t BT = (int64_t)B * T, d = c->llm.dim, P = c->image_positions, NI = (int64_t)a->max_images * P;
    int64_t C = asvr_feature_width(c), D = c->has_head ? c->head.depth : 1;
    if (c->has_app_head && c->head_app.depth > D) D = c->head_app.depth;
    /* the visual heads run over chunks of at most head_chunk positions (all of them by default); the
     * zero-image rows of --text-only-visual reference are one chunk of P */
    a->head_chunk = c->head_chunk > 0 && c->head_chunk < NI ? c->head_chunk : (int)NI;
    if (a->head_chunk < P) a->head_chunk = (int)(P < NI ? P : NI);
    nn_arena *ar = a->arena = nn_arena_new("step activations", m->ps.device);
    a->x = add2(ar, "inputs_embeds", NN_F32, BT, d);
    a->h = add2(ar, "hidden_final", NN_F32, BT, d);
    a->dh = add2(ar, "d_hidden_final", NN_F32, BT, d);
    a->dx = add2(ar, "d_inputs_embeds", NN_F32, BT, d);
    /* text logits in the LM head's compute dtype (bf16 with bf16 weight copies, as an autocast lm_head
     * gives them); the fused cross-entropy reads them in fp32 and writes dlogits in place */
    a->logits = add2(ar, "text_logits", llama_head_dtype(m->llm), BT, c->llm.vocab);
    a->targets = add2(ar, "text_targets", NN_I32, B, T);
    a->ids = add2(ar, "ids", NN_I32, B, T);
    a->pos = add2(ar, "positions", NN_I32, B, T);
    a->seg = add2(ar, "segments", NN_I32, B, T);
    /* the projector's hidden activations in its compute dtype (bf16 with bf16 weight copies) */
    nn_dtype pdt = m->proj.w1->wc->dtype;
    a->feats = add2(ar, "image_features", NN_F32, NI, C);
    if (m->tower && siglip_dtype(m->tower) != NN_F32)
        a->feats_lp = add2(ar, "image_features_tower_dtype", siglip_dtype(m->tower), NI, C);
    a->pre = add2(ar, "projector_pre", pdt, NI, d);
    a->hid = add2(ar, "projector_hidden", pdt, NI, d);
    a->emb = add2(ar, "image_embeds", NN_F32, NI, d);
    a->demb = add2(ar, "d_image_embeds", NN_F32, NI, d);
    a->dscratch = add2(ar, "d_projector_hidden", pdt, NI, d);
    a->tmp_rows = add2(ar, "image_rows", NN_F32, NI, d);
    a->rows_d = add2(ar, "feature_rows", NN_F32, NI, c->vision.hidden); /* codebook rows (--input discrete) */
    a->idx_flat = add1(ar, "image_flat_index", NN_I32, NI);
    a->idx_src = add1(ar, "image_source_index", NN_I32, NI);
    a->code_ids = add1(ar, "code_ids", NN_I32, NI);
    a->h_img = add2(ar, "h_image", NN_F32, NI, d);
    if (m->head) a->dh_img = add2(ar, "d_h_image", NN_F32, NI, d);
    if (m->head_app) a->dh_img_app = add2(ar, "d_h_image_appearance", NN_F32, NI, d);
    if (m->tower) {
        int64_t S = asvr_input_size(c);
        a->images = nn_arena_add(ar, "images", NN_F32, 4, (int64_t[]){a->max_images, 3, S, S});
    }
    nn_arena_commit(ar);
    nn_arena *hs = a->host = nn_arena_new("step inputs (host)", NN_CPU);
    a->h_ids = add2(hs, "ids", NN_I32, B, T);
    a->h_targets = add2(hs, "text_targets", NN_I32, B, T);
    a->h_iflat = add1(hs, "image_flat_index", NN_I32, NI);
    a->h_isrc = add1(hs, "image_source_index", NN_I32, NI);
    a->h_cid = add1(hs, "code_ids", NN_I32, NI);
    a->h_codes = add2(hs, "codes", NN_I32, NI, D);
    nn_arena_commit(hs);
    a->la = llama_acts_new_sel(m->llm, B, T, c->flash_attention,
                               c->llm.n_layers <= ASVR_MAX_RECOMPUTE_LAYERS ? c->recompute_mask : NULL);
    if (m->head) a->va = vhead_acts_new(m->head, a->head_chunk);
    if (m->head_app) a->va_app = vhead_acts_new(m->head_app, a->head_chunk);
    if (m->tower && c->n_scales > 0) a->s2 = s2_acts_new(m->tower, c->scales, c->n_scales, a->max_images);
    else if (m->tower) a->sa = siglip_acts_new(m->tower, a->max_images);
    return a;
}

void asvr_acts_print_plan(const asvr_acts *a, FILE *f) {
    nn_arena_print_plan(a->arena, f);
    nn_arena_print_plan(a->host, f);
    fprintf(f, "activations on %s: step %.2f MiB, llama %.2f MiB, visual heads %.2f MiB (chunks of %d positions), "
               "input tower %.2f MiB; host inputs %.2f MiB\n",
            nn_device_name(a->x->device), (double)nn_arena_bytes(a->arena) / 1048576.0,
            (double)llama_acts_bytes(a->la) / 1048576.0,
            (double)((a->va ? vhead_acts_bytes(a->va) : 0) + (a->va_app ? vhead_acts_bytes(a->va_app) : 0)) / 1048576.0,
            a->head_chunk, (double)(a->sa ? siglip_acts_bytes(a->sa) : a->s2 ? s2_acts_bytes(a->s2) : 0) / 1048576.0,
            (double)nn_arena_bytes(a->host) / 1048576.0);
}

size_t asvr_acts_bytes(const asvr_acts *a) {
    return nn_arena_bytes(a->arena) + llama_acts_bytes(a->la) + (a->va ? vhead_acts_bytes(a->va) : 0) +
           (a->va_app ? vhead_acts_bytes(a->va_app) : 0) + (a->sa ? siglip_acts_bytes(a->sa) : 0) +
           (a->s2 ? s2_acts_bytes(a->s2) : 0);
}

void asvr_acts_free(asvr_acts *a) {
    if (!a) return;
    llama_acts_free(a->la);
    if (a->va) vhead_acts_free(a->va);
    if (a->va_app) vhead_acts_free(a->va_app);
    if (a->sa) siglip_acts_free(a->sa);
    s2_acts_free(a->s2);
    nn_arena_free(a->arena);
    nn_arena_free(a->host);
    free(a);
}

/* ---- views -------------------------------------------------------------------------------------- */

static tensor head_rows(const tensor *t, int64_t n) {
    return tensor_make(t->name, t->dtype, t->device, 2, (int64_t[]){n, t->shape[1]}, t->data);
}

static tensor rows_at(const tensor *t, int64_t row0, int64_t n) {
    char *base = (char *)t->data + (size_t)(row0 * t->shape[1]) * nn_dtype_size(t->dtype);
    return tensor_make(t->name, t->dtype, t->device, 2, (int64_t[]){n, t->shape[1]}, base);
}

/* A 1-d view of the first n entries of an index tensor (n >= 1). */
static tensor head_vec(const tensor *t, int64_t n) {
    return tensor_make(t->name, t->dtype, t->device, 1, (int64_t[]){n}, t->data);
}

/* A [B, T, d] view of the first B*T rows of a [rows, d] buffer. */
static tensor rows3(const tensor *t, int64_t B, int64_t T, const char *name) {
    return tensor_make(name, t->dtype, t->device, 3, (int64_t[]){B, T, t->shape[1]}, t->data);
}

/* ---- forward ------------------------------------------------------------------------------------ */

/* The micro-batch's inputs, built on the host (ids checked against the vocabulary there) and
 * uploaded once: ids (placeholders and padding as -1), shifted text targets, positions, segments, and
 * the image positions that survived truncation (where they go in the rows, where they come from). */
static void upload_inputs(asvr_model *m, asvr_acts *a, const asvr_batch *b) {
    int64_t BT = (int64_t)b->B * b->T, V = m->c.llm.vocab, NI = (int64_t)b->n_images * m->c.image_positions;
    int32_t *ids = a->h_ids->data;
    for (int64_t i = 0; i < BT; i++) {
        ids[i] = b->ids[i] >= 0 && b->seg[i] >= 0 ? b->ids[i] : -1;
        CHECK(ids[i] < V, "the packed store was made with another tokenizer", "token id %d at %lld is >= the vocabulary %lld",
              (int)ids[i], (long long)i, (long long)V);
    }
    tensor t_labels = tensor_make("labels", NN_I32, NN_CPU, 2, (int64_t[]){b->B, b->T}, (void *)b->labels);
    tensor t_seg = tensor_make("segments", NN_I32, NN_CPU, 2, (int64_t[]){b->B, b->T}, (void *)b->seg);
    tensor t_pos = tensor_make("positions", NN_I32, NN_CPU, 2, (int64_t[]){b->B, b->T}, (void *)b->pos);
    tensor h_ids = tensor_head0(a->h_ids, b->B), h_targets = tensor_head0(a->h_targets, b->B);
    tensor d_ids = tensor_head0(a->ids, b->B), d_targets = tensor_head0(a->targets, b->B),
           d_pos = tensor_head0(a->pos, b->B), d_seg = tensor_head0(a->seg, b->B);
    text_loss_targets(&t_labels, &t_seg, &h_targets);
    op_transfer(&d_ids, &h_ids);
    op_transfer(&d_targets, &h_targets);
    op_transfer(&d_pos, &t_pos);
    op_transfer(&d_seg, &t_seg);

    int32_t *iflat = a->h_iflat->data, *isrc = a->h_isrc->data;
    int64_t nv = 0;
    for (int64_t k = 0; k < NI; k++)
        if (b->image_pos[k] >= 0) iflat[nv] = b->image_pos[k], isrc[nv] = (int32_t)k, nv++;
    /* (a batch of text-only samples has no image positions: the index tensors are then unused) */
    if (nv > 0) {
        tensor t_iflat = head_vec(a->idx_flat, nv), t_isrc = head_vec(a->idx_src, nv);
        tensor hf = head_vec(a->h_iflat, nv), hs = head_vec(a->h_isrc, nv);
        op_transfer(&t_iflat, &hf);
        op_transfer(&t_isrc, &hs);
    }
    a->nv = nv;
}

void asvr_code_features(const asvr_model *m, const uint16_t *codes, int64_t n, tensor *feats, tensor *rows, tensor *ids,
                        tensor *h_ids) {
    CHECK(m->codebooks != NULL, "load the codebooks (asvr_model_load_codebooks) first",
          "the discrete input needs the tokenizer's codebooks");
    int32_t *cid = h_ids->data;
    int64_t Dd = m->codebooks->shape[0], K = m->codebooks->shape[1];
    tensor r = head_rows(rows, n), t_cid = head_vec(ids, n), hc = head_vec(h_ids, n), f = head_rows(feats, n);
    op_fill(&f, 0.0f);
    for (int d = 0; d < (int)Dd; d++) {
        for (int64_t k = 0; k < n; k++) {
            cid[k] = codes[k * Dd + d];
            CHECK(cid[k] < K, "the codes must come from the tokenizer of --codebooks",
                  "code %d of image position %lld is >= the codebook size %lld", (int)cid[k], (long long)k, (long long)K);
        }
        op_transfer(&t_cid, &hc);
        tensor book = tensor_index0(m->codebooks, d);
        op_embedding(&r, &t_cid, &book);
        op_add(&f, &f, &r);
    }
}

/* The frozen tower's tap-layer features of the micro-batch's images; returns the tensor the projector
 * reads (the f32 buffer, or the bf16 tower's own output when the projector computes in bf16). */
static tensor tower_features(asvr_model *m, asvr_acts *a, const asvr_batch *b) {
    const asvr_config *c = &m->c;
    int64_t P = c->image_positions, NI = (int64_t)b->n_images * P, S = asvr_input_size(c);
    CHECK(m->tower != NULL && b->pixels != NULL && a->images != NULL, "", "the vision tower or the images are missing");
    tensor hp = tensor_make("images", NN_F32, NN_CPU, 4, (int64_t[]){b->n_images, 3, S, S}, (void *)b->pixels);
    tensor img = tensor_head0(a->images, b->n_images);
    op_transfer(&img, &hp);
    tensor *dst = a->feats_lp ? a->feats_lp : a->feats;
    tensor out = tensor_make("image_features", dst->dtype, dst->device, 3, (int64_t[]){b->n_images, P, asvr_feature_width(c)},
                             dst->data);
    if (a->s2) s2_forward(m->tower, a->s2, &img, &out);
    else siglip_forward(m->tower, a->sa, &img, &out);
    if (a->feats_lp && a->feats_lp->dtype == m->proj.w1->wc->dtype)
        return head_rows(a->feats_lp, NI); /* bf16 tower, bf16 projector: read its features as they are */
    tensor f32 = head_rows(a->feats, NI);
    if (a->feats_lp) { /* bf16 tower, f32 projector: its features to f32 */
        tensor lp = head_rows(a->feats_lp, NI);
        op_copy(&f32, &lp);
    }
    return f32;
}

void asvr_forward(asvr_model *m, asvr_acts *a, const asvr_batch *b) {
    const asvr_config *c = &m->c;
    CHECK(b->B >= 1 && b->B <= a->B && b->T == a->T && b->n_images <= a->max_images, "",
          "batch %dx%d with %d images does not fit activations planned for %dx%d with %d", b->B, b->T, b->n_images,
          a->B, a->T, a->max_images);
    nn_device dev = a->x->device;
    int64_t BT = (int64_t)b->B * b->T, NI = (int64_t)b->n_images * c->image_positions;
    for (int64_t i = 0; c->llm.sliding_window > 0 && i < BT; i++) /* positions restart per sample */
        CHECK(b->pos[i] < c->llm.sliding_window, "pack with --max-len at most the window",
              "asvr_forward: row %lld holds a sample longer than the sliding attention window of %d positions, which "
              "this build does not implement", (long long)(i / b->T), c->llm.sliding_window);
    upload_inputs(m, a, b);
    a->b = b;

    /* image features → projector */
    phase_start(a, dev);
    if (NI > 0) {
        tensor feats = head_rows(a->feats, NI);
        if (c->input_discrete) asvr_code_features(m, b->codes, NI, &feats, a->rows_d, a->code_ids, a->h_cid);
        else feats = tower_features(m, a, b);
        tensor pre = head_rows(a->pre, NI), hid = head_rows(a->hid, NI), emb = head_rows(a->emb, NI);
        mlp2_forward(&m->proj, &feats, &pre, &hid, &emb);
    }
    phase_end(a, dev, ASVR_PHASE_VISION);

    /* inputs_embeds: token embeddings, image embeddings spliced in (0 + v, exactly v) */
    tensor x = head_rows(a->x, BT), ids = tensor_head0(a->ids, b->B);
    op_fill(&x, 0.0f);
    llama_embed(m->llm, &ids, &x);
    if (a->nv > 0) {
        tensor rows = head_rows(a->tmp_rows, a->nv), emb = head_rows(a->emb, NI);
        tensor t_iflat = head_vec(a->idx_flat, a->nv), t_isrc = head_vec(a->idx_src, a->nv);
        op_gather_rows(&rows, &emb, &t_isrc);
        op_scatter_add_rows(&x, &rows, &t_iflat);
    }
    tensor x3 = rows3(a->x, b->B, b->T, "inputs_embeds"), h3 = rows3(a->h, b->B, b->T, "hidden_final");
    tensor pos = tensor_head0(a->pos, b->B), seg = tensor_head0(a->seg, b->B);
    llama_forward(m->llm, a->la, &x3, &pos, &seg, &h3);
    phase_end(a, dev, ASVR_PHASE_LLM_FORWARD);
    a->stage = 1;
}

/* ---- losses ------------------------------------------------------------------------------------- */

/* One visual head over the surviving image positions, chunk by chunk: gather the LLM states (no
 * shift), forward and loss against the codes (rearranged on the host), and when training the head's
 * backward, its state gradient kept in dh_img for asvr_backward. */
static void visual_head_loss(asvr_acts *a, const vhead *head, vhead_acts *va, const tensor *books,
                             const uint16_t *codes_src, int D, double scale, tensor *dh_img, double *sum,
                             int64_t *correct, int64_t *count) {
    int64_t nv = a->nv;
    const int32_t *isrc = a->h_isrc->data;
    int32_t *cd = a->h_codes->data;
    for (int64_t k = 0; k < nv; k++)
        for (int d = 0; d < D; d++) cd[k * D + d] = codes_src[(int64_t)isrc[k] * D + d];
    tensor h_img = head_rows(a->h_img, nv), t_iflat = head_vec(a->idx_flat, nv);
    op_gather_rows(&h_img, a->h, &t_iflat);
    for (int64_t k0 = 0; k0 < nv; k0 += a->head_chunk) {
        int64_t n = nv - k0 < a->head_chunk ? nv - k0 : a->head_chunk;
        tensor hc = rows_at(a->h_img, k0, n);
        tensor codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){n, D}, cd + k0 * D);
        double vs[256] = {0};
        int64_t vc[256] = {0};
        vhead_forward(head, va, &hc, &codes, books, vc);
        vhead_loss(head, va, (float)scale, vs);
        if (dh_img) {
            tensor dc = rows_at(dh_img, k0, n);
            vhead_backward(head, va, &dc);
        }
        for (int d = 0; d < D; d++) sum[d] += vs[d], correct[d] += vc[d];
    }
    *count += nv;
}

/* The reference's treatment of text-only samples: every one contributes the same P rows (zero states,
 * the zero image's codes), so one pass over them with the scale multiplied by their number gives the
 * summed gradient; the states are constants, so no gradient flows back. */
static void zero_image_loss(asvr_model *m, asvr_acts *a, const asvr_batch *b, double scale, int backward,
                            asvr_losses *l) {
    int64_t n0 = b->n_text_only, P = m->c.image_positions;
    int D = m->c.head.depth;
    int32_t *cd = a->h_codes->data;
    for (int64_t k = 0; k < P; k++)
        for (int d = 0; d < D; d++) cd[k * D + d] = b->zero_codes[k * D + d];
    tensor h0 = head_rows(a->h_img, P), codes = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){P, D}, cd);
    op_fill(&h0, 0.0f);
    double vs[256] = {0};
    int64_t vc[256] = {0};
    vhead_forward(m->head, a->va, &h0, &codes, m->codebooks, vc);
    vhead_loss(m->head, a->va, (float)(scale * (double)n0), vs);
    if (backward) vhead_backward(m->head, a->va, NULL);
    for (int d = 0; d < D; d++) l->vis_sum[d] += vs[d] * (double)n0, l->vis_correct[d] += vc[d] * n0;
    l->vis_count += n0 * P;
}

void asvr_loss(asvr_model *m, asvr_acts *a, const asvr_scales *s, asvr_losses *l, int for_backward) {
    const asvr_config *c = &m->c;
    CHECK(a->stage == 1, "", "asvr_loss: run asvr_forward first (once per loss)");
    const asvr_batch *b = a->b;
    nn_device dev = a->x->device;
    int64_t BT = (int64_t)b->B * b->T;

    /* text: logits and CE, dlogits in place */
    double ts = 0;
    int64_t tc = 0;
    tensor h = head_rows(a->h, BT), logits = head_rows(a->logits, BT), targets = tensor_head0(a->targets, b->B);
    llama_lm_head(m->llm, &h, &logits);
    op_cross_entropy(&logits, &ts, &tc, &logits, &targets, (float)s->text);
    l->text_sum += ts;
    l->text_count += tc;
    phase_end(a, dev, ASVR_PHASE_TEXT_HEAD);

    /* visual losses at the image positions (no shift) */
    if (m->head && a->nv > 0)
        visual_head_loss(a, m->head, a->va, m->codebooks, b->codes, c->head.depth, s->visual,
                         for_backward ? a->dh_img : NULL, l->vis_sum, l->vis_correct, &l->vis_count);
    if (m->head && b->zero_codes && b->n_text_only > 0) zero_image_loss(m, a, b, s->visual, for_backward, l);
    if (for_backward) param_set_grads_done(&m->ps, "visual_head.");
    if (m->head_app && a->nv > 0) {
        CHECK(b->codes_app != NULL, "", "the model has an appearance head but the batch has no appearance codes");
        visual_head_loss(a, m->head_app, a->va_app, m->codebooks_app, b->codes_app, c->head_app.depth, s->appearance,
                         for_backward ? a->dh_img_app : NULL, l->app_sum, l->app_correct, &l->app_count);
    }
    if (for_backward) param_set_grads_done(&m->ps, "visual_head_appearance.");
    phase_end(a, dev, ASVR_PHASE_VISUAL_HEAD);
    a->stage = for_backward ? 2 : 3;
}

/* ---- backward ----------------------------------------------------------------------------------- */

void asvr_backward(asvr_model *m, asvr_acts *a) {
    const asvr_config *c = &m->c;
    CHECK(a->stage == 2, "", "asvr_backward: run asvr_forward and asvr_loss(..., for_backward = 1) first");
    const asvr_batch *b = a->b;
    nn_device dev = a->x->device;
    int64_t BT = (int64_t)b->B * b->T, NI = (int64_t)b->n_images * c->image_positions, nv = a->nv;
    tensor t_iflat = head_vec(a->idx_flat, nv ? nv : 1), t_isrc = head_vec(a->idx_src, nv ? nv : 1);
    phase_start(a, dev);

    /* d final states: from lm_head, then the visual heads' at the image positions */
    tensor h = head_rows(a->h, BT), logits = head_rows(a->logits, BT), dh = head_rows(a->dh, BT);
    llama_lm_head_backward(m->llm, &logits, &h, &dh, 0);
    if (nv > 0 && a->dh_img) {
        tensor d = head_rows(a->dh_img, nv);
        op_scatter_add_rows(&dh, &d, &t_iflat);
    }
    if (nv > 0 && a->dh_img_app) {
        tensor d = head_rows(a->dh_img_app, nv);
        op_scatter_add_rows(&dh, &d, &t_iflat);
    }
    phase_end(a, dev, ASVR_PHASE_TEXT_HEAD);

    /* back through the LLM; then the token embeddings and the projector */
    tensor dh3 = rows3(a->dh, b->B, b->T, "d_hidden_final"), dx3 = rows3(a->dx, b->B, b->T, "d_inputs_embeds");
    llama_backward(m->llm, a->la, &dh3, &dx3);
    tensor ids = tensor_head0(a->ids, b->B), dx = head_rows(a->dx, BT);
    llama_embed_backward(m->llm, &ids, &dx);
    phase_end(a, dev, ASVR_PHASE_LLM_BACKWARD);
    if (nv > 0 && m->proj.w1->g) {
        tensor feats = head_rows(a->feats, NI);
        if (!c->input_discrete && a->feats_lp && a->feats_lp->dtype == m->proj.w1->wc->dtype)
            feats = head_rows(a->feats_lp, NI);
        tensor demb = head_rows(a->demb, NI), rows = head_rows(a->tmp_rows, nv), ds = head_rows(a->dscratch, NI);
        tensor pre = head_rows(a->pre, NI), hid = head_rows(a->hid, NI);
        op_fill(&demb, 0.0f);
        op_gather_rows(&rows, &dx, &t_iflat);
        op_scatter_add_rows(&demb, &rows, &t_isrc);
        mlp2_backward(&m->proj, &demb, &feats, &pre, &hid, &ds, NULL, 0);
    }
    param_set_grads_done(&m->ps, "mm_projector.");
    param_set_grads_done(&m->ps, NULL);
    phase_end(a, dev, ASVR_PHASE_PROJ_BACKWARD);
    a->stage = 0;
}

void asvr_forward_backward(asvr_model *m, asvr_acts *a, const asvr_batch *b, const asvr_scales *s, asvr_losses *l) {
    asvr_forward(m, a, b);
    asvr_loss(m, a, s, l, 1);
    asvr_backward(m, a);
}
