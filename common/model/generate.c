#include "model/generate.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/ops.h"

void gen_result_free(gen_result *r) {
    if (!r) return;
    free(r->ids);
    free(r->n);
    memset(r, 0, sizeof *r);
}

int32_t gen_argmax(const float *row, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (row[i] == row[i] && (best < 0 || row[i] > row[best])) best = i;
    return best < 0 ? 0 : (int32_t)best;
}

/* [r, cols] or [r, t, cols] view over the start of t's data. */
static tensor view2(const tensor *t, int64_t r, int64_t cols) {
    return tensor_make(t->name, t->dtype, t->device, 2, (int64_t[]){r, cols}, t->data);
}
static tensor view3(const tensor *t, int64_t r, int64_t n, int64_t cols) {
    return tensor_make(t->name, t->dtype, t->device, 3, (int64_t[]){r, n, cols}, t->data);
}
static tensor f32_view(const char *name, float *p, int64_t n) {
    return tensor_make(name, NN_F32, NN_CPU, 1, (int64_t[]){n}, p);
}

int asvr_generate(asvr_model *m, const gen_prompt *p, int B, const gen_options *o, gen_result *r,
                  asvr_error *err) {
    memset(r, 0, sizeof *r);
    const asvr_config *c = &m->c;
    if (B < 1 || o->max_new_tokens < 1)
        return asvr_err_set(err, "generate: %d prompts and max_new_tokens %d must both be >= 1", B, o->max_new_tokens);
    const int P = c->image_positions, S = asvr_input_size(c), d = c->llm.dim, V = c->llm.vocab;
    const int L = c->llm.n_layers, H = c->llm.n_heads, N = o->max_new_tokens;
    const int64_t C = asvr_feature_width(c);

    /* prompts: lengths after expanding the placeholder, where the image goes */
    int32_t *lens = asvr_calloc((size_t)B, sizeof *lens, "prompt lengths");
    int *img_at = asvr_calloc((size_t)B, sizeof *img_at, "image positions");
    int n_img = 0, Tp = 0, rc = -1;
    for (int b = 0; b < B; b++) {
        const char *nm = p[b].name ? p[b].name : "";
        int k = 0;
        img_at[b] = -1;
        for (int i = 0; i < p[b].n; i++) {
            int32_t id = p[b].ids[i];
            if (id == IMAGE_TOKEN_INDEX) {
                if (k++ == 0) img_at[b] = i;
            } else if (id < 0 || id >= V) {
                asvr_err_set(err, "prompt %d (%s): token id %d at %d is outside the vocabulary of %d", b, nm, id, i, V);
                goto out;
            }
        }
        if (k > 1) {
            asvr_err_set(err, "prompt %d (%s) has %d image placeholders; one image per prompt is supported", b, nm, k);
            goto out;
        }
        if (k == 1 && !(c->input_discrete ? (const void *)p[b].codes : (const void *)p[b].pixels)) {
            asvr_err_set(err, "prompt %d (%s) has an image placeholder but no image%s", b, nm,
                         c->input_discrete ? " codes (the model reads the tokenizer's codes)" : "");
            goto out;
        }
        if (k == 0 && (p[b].pixels || p[b].codes)) {
            asvr_err_set(err, "prompt %d (%s) has an image but no image placeholder", b, nm);
            goto out;
        }
        if (k == 1 && !(c->input_discrete ? (const void *)m->codebooks : (const void *)m->tower)) {
            asvr_err_set(err, "prompt %d (%s): the model has no %s loaded", b, nm,
                         c->input_discrete ? "codebooks (discrete input)" : "input vision tower");
            goto out;
        }
        lens[b] = p[b].n - k + k * P;
        if (lens[b] < 1) {
            asvr_err_set(err, "prompt %d (%s) is empty", b, nm);
            goto out;
        }
        n_img += k;
        if (lens[b] > Tp) Tp = lens[b];
    }
    /* bounds before anything is allocated: the model's context, then the memory of the KV cache */
    if ((int64_t)Tp + N > INT32_MAX / 2 ||
        (c->llm.max_positions > 0 && (int64_t)Tp + N > c->llm.max_positions)) {
        int lb = 0;
        for (int b = 1; b < B; b++)
            if (lens[b] > lens[lb]) lb = b;
        asvr_err_set(err, "prompt %d (%s): %d prompt positions + %d new tokens exceed the model's context of %d positions "
                          "(max_position_embeddings)", lb, p[lb].name ? p[lb].name : "", Tp, N, c->llm.max_positions);
        goto out;
    }
    {
        /* the KV cache, and (at most) the prompt's attention scores of one layer */
        double kv = 2.0 * L * (double)B * ((double)Tp + N) * c->llm.n_kv_heads * llama_head_dim(&c->llm) * 4.0 +
                    (double)B * H * (double)Tp * (double)Tp * 4.0;
        size_t used = 0, total = 0;
        double have = m->ps.device == NN_CPU ? (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE)
                      : nn_device_mem_used(m->ps.device, &used, &total) ? (double)total : 0;
        if (have > 0 && kv > have) {
            int lb = 0;
            for (int b = 1; b < B; b++)
                if (lens[b] > lens[lb]) lb = b;
            asvr_err_set(err, "%d prompts of up to %d positions (the longest: prompt %d, %s) + %d new tokens need %.1f GiB "
                              "for the KV cache and the attention scores; the %s has %.1f GiB: lower the batch, the "
                              "prompt or the new tokens", B, Tp, lb, p[lb].name ? p[lb].name : "", N, kv / 1073741824.0,
                         nn_device_name(m->ps.device), have / 1073741824.0);
            goto out;
        }
    }
    const int Tt = Tp + N;                    /* prompt + new tokens: the cache's length */
    const int Tx = o->use_cache ? Tp : Tt;    /* positions kept in x */
    const int NI = n_img > 0 ? n_img : 1, disc = c->input_discrete;
    const int64_t Dc = disc ? m->codebooks->shape[0] : 0; /* codes per image position */

    nn_device dev = m->ps.device;
    nn_arena *ar = nn_arena_new("generation", dev);
    tensor *ids = nn_arena_add(ar, "prompt_ids", NN_I32, 2, (int64_t[]){B, Tx});
    tensor *x = nn_arena_add(ar, "inputs_embeds", NN_F32, 3, (int64_t[]){B, Tx, d});
    tensor *xs = o->use_cache ? NULL : nn_arena_add(ar, "step_embeds", NN_F32, 3, (int64_t[]){B, Tt, d});
    tensor *pix = disc ? NULL : nn_arena_add(ar, "images", NN_F32, 4, (int64_t[]){NI, 3, S, S});
    tensor *rows = disc ? nn_arena_add(ar, "codebook_rows", NN_F32, 2, (int64_t[]){(int64_t)NI * P, C}) : NULL;
    tensor *cids = disc ? nn_arena_add(ar, "code_ids", NN_I32, 1, (int64_t[]){(int64_t)NI * P}) : NULL;
    tensor *feats = nn_arena_add(ar, "image_features", NN_F32, 2, (int64_t[]){(int64_t)NI * P, C});
    tensor *pre = nn_arena_add(ar, "projector_pre", NN_F32, 2, (int64_t[]){(int64_t)NI * P, d});
    tensor *hid = nn_arena_add(ar, "projector_hidden", NN_F32, 2, (int64_t[]){(int64_t)NI * P, d});
    tensor *emb = nn_arena_add(ar, "image_embeds", NN_F32, 2, (int64_t[]){(int64_t)NI * P, d});
    tensor *iflat = nn_arena_add(ar, "image_flat_index", NN_I32, 1, (int64_t[]){(int64_t)NI * P});
    tensor *h = nn_arena_add(ar, "hidden_last", NN_F32, 2, (int64_t[]){B, d});
    tensor *logits = nn_arena_add(ar, "logits", NN_F32, 2, (int64_t[]){B, V});
    tensor *tok = nn_arena_add(ar, "next_ids", NN_I32, 2, (int64_t[]){B, 1});
    tensor *x1 = nn_arena_add(ar, "next_embeds", NN_F32, 3, (int64_t[]){B, 1, d});
    tensor *att = o->attention ? nn_arena_add(ar, "attention_last", NN_F32, 4, (int64_t[]){L, B, H, Tp}) : NULL;
    nn_arena_commit(ar);
    /* host side: the ids and image indices built here, each step's logits and next tokens */
    nn_arena *hs = nn_arena_new("generation (host)", NN_CPU);
    tensor *h_ids = nn_arena_add(hs, "prompt_ids", NN_I32, 2, (int64_t[]){B, Tx});
    tensor *h_iflat = nn_arena_add(hs, "image_flat_index", NN_I32, 1, (int64_t[]){(int64_t)NI * P});
    tensor *h_cids = disc ? nn_arena_add(hs, "code_ids", NN_I32, 1, (int64_t[]){(int64_t)NI * P}) : NULL;
    tensor *h_codes = disc ? nn_arena_add(hs, "codes", NN_U16, 1, (int64_t[]){(int64_t)NI * P * Dc}) : NULL;
    tensor *h_logits = nn_arena_add(hs, "logits", NN_F32, 2, (int64_t[]){B, V});
    tensor *h_tok = nn_arena_add(hs, "next_ids", NN_I32, 2, (int64_t[]){B, 1});
    tensor *h_att = att ? nn_arena_add(hs, "attention_last", NN_F32, 4, (int64_t[]){L, B, H, Tp}) : NULL;
    nn_arena_commit(hs);

    /* ids with the image positions and the padding marked -1 (llama_embed leaves them alone) */
    int32_t *idv = h_ids->data, *fl = h_iflat->data;
    int ii = 0;
    for (int b = 0; b < B; b++) {
        int32_t *row = idv + (int64_t)b * Tx;
        for (int t = 0; t < Tx; t++) row[t] = -1;
        int t = 0;
        for (int i = 0; i < p[b].n; i++) {
            if (p[b].ids[i] == IMAGE_TOKEN_INDEX) {
                for (int j = 0; j < P; j++) fl[ii * P + j] = (int32_t)((int64_t)b * Tx + t + j);
                if (disc) {
                    memcpy((uint16_t *)h_codes->data + (size_t)ii * P * Dc, p[b].codes, sizeof(uint16_t) * (size_t)(P * Dc));
                } else {
                    tensor pi = tensor_index0(pix, ii);
                    op_write_f32(&pi, p[b].pixels);
                }
                ii++;
                t += P;
            } else {
                row[t++] = p[b].ids[i];
            }
        }
    }

    op_transfer(ids, h_ids);
    op_transfer(iflat, h_iflat);

    /* inputs_embeds: token embeddings, image embeddings written at their positions (0 + v = v) */
    op_fill(x, 0.0f);
    llama_embed(m->llm, ids, x);
    if (n_img > 0) {
        tensor img = pix ? *pix : (tensor){0}, fv = view3(feats, n_img, P, C);
        img.shape[0] = n_img;
        if (disc) { /* --input discrete: summed codebook rows of the image's codes */
            asvr_code_features(m, h_codes->data, (int64_t)n_img * P, feats, rows, cids, h_cids);
        } else if (c->n_scales > 0) { /* S2: the tower's features in its dtype, then f32 for the projector */
            s2_acts *s2 = s2_acts_new(m->tower, c->scales, c->n_scales, n_img);
            nn_arena *fa = nn_arena_new("S2 features", dev);
            tensor *f = nn_arena_add(fa, "image_features_tower_dtype", siglip_dtype(m->tower), 3, (int64_t[]){n_img, P, C});
            nn_arena_commit(fa);
            s2_forward(m->tower, s2, &img, f);
            op_copy(&fv, f);
            nn_arena_free(fa);
            s2_acts_free(s2);
        } else {
            siglip_acts *sa = siglip_acts_new(m->tower, n_img);
            siglip_forward(m->tower, sa, &img, &fv);
            siglip_acts_free(sa);
        }
        tensor f2 = view2(feats, (int64_t)n_img * P, C), pr = view2(pre, (int64_t)n_img * P, d),
               hd = view2(hid, (int64_t)n_img * P, d), em = view2(emb, (int64_t)n_img * P, d);
        mlp2_forward(&m->proj, &f2, &pr, &hd, &em);
        tensor x2 = view2(x, (int64_t)B * Tx, d), fi = *iflat;
        fi.shape[0] = (int64_t)n_img * P;
        op_embedding_backward(&x2, &em, &fi);
    }

    r->B = B, r->max_new = N;
    r->ids = asvr_calloc((size_t)B * N, sizeof *r->ids, "generated ids");
    r->n = asvr_calloc((size_t)B, sizeof *r->n, "generated counts");
    int *done = asvr_calloc((size_t)B, sizeof *done, "finished rows");
    int32_t *cur = asvr_calloc((size_t)B, sizeof *cur, "row lengths");
    llama_cache *kv = llama_cache_new(m->llm, B, Tt, o->use_cache ? Tp : Tt, att != NULL);
    int32_t *tv = h_tok->data;
    for (int s = 0; s < N; s++) {
        if (s == 0 && o->use_cache) {
            llama_prefill(m->llm, kv, x, lens, h, att);
        } else if (o->use_cache) {
            llama_embed(m->llm, tok, x1);
            llama_decode_step(m->llm, kv, x1, h);
        } else {
            /* the whole forward again over prompt + tokens so far (contiguous [B, T, d] copy) */
            int Tc = Tp + s;
            if (s > 0)
                for (int b = 0; b < B; b++) {
                    tensor xb = tensor_index0(x, b), dst = tensor_index0(&xb, lens[b] + s - 1);
                    tensor id1 = tensor_index0(tok, b);
                    llama_embed(m->llm, &id1, &dst);
                }
            tensor xv = view3(xs, B, Tc, d);
            for (int b = 0; b < B; b++) {
                tensor xb = tensor_index0(x, b), src = tensor_head0(&xb, Tc), dst = tensor_index0(&xv, b);
                op_copy(&dst, &src);
                cur[b] = lens[b] + s;
            }
            llama_prefill(m->llm, kv, &xv, cur, h, s == 0 ? att : NULL);
        }
        llama_lm_head(m->llm, h, logits);
        op_transfer(h_logits, logits); /* one [B, vocab] download per step; the argmax runs on the host */
        const float *lg = h_logits->data;
        int all = 1;
        for (int b = 0; b < B; b++) {
            if (o->logits) memcpy(o->logits + ((size_t)b * N + s) * V, lg + (size_t)b * V, sizeof(float) * (size_t)V);
            int32_t t = gen_argmax(lg + (size_t)b * V, V);
            tv[b] = t;
            if (done[b]) continue;
            r->ids[(size_t)b * N + r->n[b]++] = t;
            if (t == o->eos_id || r->n[b] == N) done[b] = 1;
            all &= done[b];
        }
        op_transfer(tok, h_tok);
        r->steps = s + 1;
        if (all) break;
    }

    /* attention maps: the last prompt token over the image positions, mean over heads */
    if (o->attention) {
        op_transfer(h_att, att);
        const float *av = h_att->data;
        for (int l = 0; l < L; l++)
            for (int b = 0; b < B; b++) {
                tensor acc = f32_view("attention_map", o->attention + ((size_t)l * B + b) * P, P);
                op_fill(&acc, 0.0f);
                if (img_at[b] < 0) continue;
                for (int hh = 0; hh < H; hh++) {
                    tensor src = f32_view("attention_last", (float *)av + (((size_t)l * B + b) * H + hh) * Tp + img_at[b], P);
                    op_add(&acc, &acc, &src);
                }
                op_scale(&acc, 1.0f / (float)H);
            }
    }
    llama_cache_free(kv);
    free(done);
    free(cur);
    nn_arena_free(ar);
    nn_arena_free(hs);
    rc = 0;
out:
    free(lens);
    free(img_at);
    return rc;
}

/* ---- text level ------------------------------------------------------------------------------- */

static int sp_encode_adapter(void *ctx, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err) {
    return sp_tokenizer_encode((const sp_tokenizer *)ctx, text, len, add_bos, out, err);
}

text_encoder gen_text_encoder(const sp_tokenizer *tok) {
    text_encoder e = {(void *)tok, sp_encode_adapter, sp_tokenizer_bos_id(tok), sp_tokenizer_eos_id(tok),
                      sp_tokenizer_pad_id(tok) >= 0 ? sp_tokenizer_pad_id(tok) : 0, sp_tokenizer_legacy(tok)};
    return e;
}

int gen_prompt_ids(const template_spec *t, const text_encoder *enc, const char *question, int has_image, ivec *out,
                   asvr_error *err) {
    size_t ql = strlen(question);
    char *value = asvr_malloc(ql + 16, "question");
    snprintf(value, ql + 16, "%s%s", has_image ? "<image>\n" : "", question);
    chat_turn turn = {1, value};
    char *prompt = template_prompt(t, &turn, 1, has_image, 1);
    int rc = has_image ? template_tokenize_image(enc, prompt, strlen(prompt), out, err)
                       : enc->encode(enc->ctx, prompt, strlen(prompt), 1, out, err);
    free(prompt);
    free(value);
    return rc;
}

int gen_load_image(const char *path, const image_preprocess_opts *opts, const float mean[3], const float std[3],
                   float *pixels, uint8_t *rgb, asvr_error *err) {
    image_decode_opts dopts;
    image_decode_opts_default(&dopts);
    image_rgb img;
    if (image_decode_file(path, &dopts, &img, err) < 0) return -1;
    int S = opts->size;
    uint8_t *buf = rgb ? rgb : asvr_malloc((size_t)3 * S * S, "preprocessed image");
    int rc = image_preprocess(&img, opts, buf, err);
    image_free(&img);
    if (rc < 0) asvr_err_prefix(err, "'%s': ", path);
    else image_normalize_chw(buf, S, S, mean, std, pixels);
    if (!rgb) free(buf);
    return rc;
}

char *gen_decode_answer(const sp_tokenizer *tok, const int32_t *ids, int n, asvr_error *err) {
    size_t len = 0;
    char *s = sp_tokenizer_decode(tok, ids, (size_t)n, 1, &len, err);
    if (!s) return NULL;
    size_t b, e;
    py_strip(s, len, &b, &e);
    memmove(s, s + b, e - b);
    s[e - b] = 0;
    return s;
}
