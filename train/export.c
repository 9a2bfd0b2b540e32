/* asvr-train export — a checkpoint as a model folder others load directly.
 *
 * --format hf (the default): what transformers' LlavaForConditionalGeneration.from_pretrained loads as
 * it is: config.json (LlavaConfig: text_config = the LLM's config with one more vocabulary entry, the
 * image token; vision_config = a SigLIP vision config of the tower up to its tap layer, without the
 * pooling head; vision_feature_layer = the tap layer, vision_feature_select_strategy "full",
 * projector_hidden_act "gelu"), model.safetensors (vision_tower.vision_model.* from the --vision file,
 * multi_modal_projector.linear_{1,2}.*, language_model.*), generation_config.json, the tokenizer
 * (tokenizer.model, tokenizer_config.json with "<image>" as an added special token,
 * special_tokens_map.json), preprocessor_config.json (SiglipImageProcessor), and the visual head in
 * visual_head.safetensors with visual_head_config.json. The rows the image token adds to the
 * embedding and lm_head are the means of the others (its logit is then the mean of the real logits,
 * never above their maximum, so greedy decoding never picks it).
 * --format llava: the original LLaVA repository's naming (model.safetensors with the LLaMA under its HF
 * names, "model.mm_projector.{0,2}.*", "model.visual_head.*"; config.json with model_type llava_llama,
 * LLaVA's multimodal keys and mm_vision_tower, so LLaVA's own loader rebuilds the tower).
 * Both carry our model config under "asvr" (asvr-eval loads either folder as --checkpoint).
 * Built in OUT.tmp, renamed when complete. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "commands.h"
#include "io/json_stream.h"
#include "io/safetensors.h"
#include "model/asvr.h"
#include "model/params.h"
#include "text/sp_tokenizer.h"
#include "trainer.h"

#define SO400M_NAME "google/siglip-so400m-patch14-384"

typedef struct export_ctx {
    const char *ck, *out, *tmp;
    json_t *state, *mc;   /* state.json and its model_config */
    asvr_config cfg;      /* the parsed model config */
    safetensors *model;   /* the checkpoint's model.safetensors */
    void **bufs;          /* tensors built here (freed after writing) */
    int nbufs;
} export_ctx;

static void *keep(export_ctx *x, void *p) {
    x->bufs = asvr_realloc(x->bufs, sizeof(void *) * (size_t)(x->nbufs + 1), "export buffers");
    x->bufs[x->nbufs++] = p;
    return p;
}

/* A string x->bufs owns (the writer keeps pointers to names until it writes). */
static char *asvr_strdup_kept(export_ctx *x, const char *s) { return keep(x, asvr_strdup(s)); }

static void write_json(const export_ctx *x, const char *name, json_t *o) {
    char *js = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    CHECK(js != NULL, "", "serialising %s", name);
    size_t n = strlen(js);
    js = asvr_realloc(js, n + 2, "a JSON text");
    js[n] = '\n', js[n + 1] = 0;
    char *p = asvr_path_join(x->tmp, name);
    asvr_error err;
    if (asvr_atomic_write(p, js, n + 1, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    free(js);
}

static void copy_file(const char *from, const char *dir, const char *name) {
    uint8_t *data;
    size_t n;
    asvr_error err;
    if (asvr_read_file(from, &data, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    char *p = asvr_path_join(dir, name);
    if (asvr_atomic_write(p, data, n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    free(data);
}

static const char *stage_of(const export_ctx *x) {
    const char *s = json_string_value(json_object_get(x->state, "stage"));
    return s ? s : "";
}

/* The tower's tensors: the embeddings, layers below the tap, the post-LN (identity when the file has
 * none: the features are taken before it), under prefix_out. Checks every shape against the config. */
static void add_tower(export_ctx *x, st_writer *w, const safetensors *vt, const char *vision, const char *prefix_in,
                      const char *prefix_out) {
    const siglip_config *v = &x->cfg.vision;
    int64_t C = v->hidden, I = v->intermediate, p = v->patch_size, N = siglip_num_patches(v);
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
    } fixed[] = {{"embeddings.patch_embedding.weight", 4, {C, 3, p, p}},
                 {"embeddings.patch_embedding.bias", 1, {C}},
                 {"embeddings.position_embedding.weight", 2, {N, C}}};
    const char *layer_names[] = {"layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
                                 "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
                                 "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
                                 "self_attn.out_proj.weight", "self_attn.out_proj.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                                 "mlp.fc2.weight", "mlp.fc2.bias"};
    char in[256], outn[256];
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
        snprintf(in, sizeof in, "%s%s", prefix_in, fixed[k].name);
        const st_tensor *t = safetensors_find(vt, in);
        if (!t) ASVR_FATAL("check --vision and --vision-prefix", "'%s' has no tensor '%s'", vision, in);
        int64_t numel = 1;
        for (int d = 0; d < fixed[k].ndim; d++) numel *= fixed[k].shape[d];
        if (t->numel != numel)
            ASVR_FATAL("export with the tower the model was trained with", "'%s': '%s' has %lld elements, the model config "
                       "needs %lld", vision, in, (long long)t->numel, (long long)numel);
        snprintf(outn, sizeof outn, "%s%s", prefix_out, fixed[k].name);
        st_writer_add(w, asvr_strdup_kept(x, outn), t->dtype, fixed[k].ndim, fixed[k].shape, t->data);
    }
    for (int l = 0; l < v->tap; l++)
        for (size_t k = 0; k < sizeof layer_names / sizeof layer_names[0]; k++) {
            snprintf(in, sizeof in, "%sencoder.layers.%d.%s", prefix_in, l, layer_names[k]);
            const st_tensor *t = safetensors_find(vt, in);
            if (!t) ASVR_FATAL("check --vision and --vision-prefix", "'%s' has no tensor '%s'", vision, in);
            const char *nm = layer_names[k];
            int is_w = strstr(nm, ".weight") != NULL, is_ln = !strncmp(nm, "layer_norm", 10);
            int64_t rows = !strncmp(nm, "mlp.fc1", 7) ? I : C, cols = !strncmp(nm, "mlp.fc2", 7) ? I : C;
            int64_t shape[2] = {rows, cols};
            int ndim = (is_w && !is_ln) ? 2 : 1;
            if (ndim == 1) shape[0] = rows;
            int64_t numel = ndim == 2 ? rows * cols : rows;
            if (t->numel != numel)
                ASVR_FATAL("export with the tower the model was trained with", "'%s': '%s' has %lld elements, the model "
                           "config needs %lld", vision, in, (long long)t->numel, (long long)numel);
            snprintf(outn, sizeof outn, "%sencoder.layers.%d.%s", prefix_out, l, nm);
            st_writer_add(w, asvr_strdup_kept(x, outn), t->dtype, ndim, shape, t->data);
        }
    for (int k = 0; k < 2; k++) {
        const char *nm = k ? "post_layernorm.bias" : "post_layernorm.weight";
        snprintf(in, sizeof in, "%s%s", prefix_in, nm);
        snprintf(outn, sizeof outn, "%s%s", prefix_out, nm);
        const st_tensor *t = safetensors_find(vt, in);
        int64_t shape[1] = {C};
        if (t && t->numel == C) {
            st_writer_add(w, asvr_strdup_kept(x, outn), t->dtype, 1, shape, t->data);
        } else { /* not used by the features (they are taken before it): an identity LayerNorm */
            float *b = keep(x, asvr_malloc(sizeof(float) * (size_t)C, "a layer norm"));
            for (int64_t i = 0; i < C; i++) b[i] = k ? 0.0f : 1.0f;
            st_writer_add(w, asvr_strdup_kept(x, outn), ST_F32, 1, shape, b);
        }
    }
}

/* A copy of an f32 [V, d] matrix with one more row, the mean of the others (computed in double). */
static float *with_mean_row(export_ctx *x, const st_tensor *t, const char *what) {
    if (t->ndim != 2) ASVR_FATAL("", "'%s' is not a matrix", what);
    int64_t V = t->shape[0], d = t->shape[1];
    float *src = asvr_malloc(sizeof(float) * (size_t)(V * d), "a matrix");
    asvr_error err;
    if (st_tensor_to_f32(t, src, &err) < 0) ASVR_FATAL("", "%s: %s", what, err.msg);
    float *dst = keep(x, asvr_malloc(sizeof(float) * (size_t)((V + 1) * d), "a matrix"));
    memcpy(dst, src, sizeof(float) * (size_t)(V * d));
    for (int64_t j = 0; j < d; j++) {
        double s = 0;
        for (int64_t i = 0; i < V; i++) s += src[i * d + j];
        dst[V * d + j] = (float)(s / (double)V);
    }
    free(src);
    return dst;
}


static json_t *added_token(const char *content) {
    return json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", content, "lstrip", 0, "normalized", 0, "rstrip", 0,
                     "single_word", 0, "special", 1);
}

/* A piece's text as a C string (pieces are not NUL-terminated), owned by x. */
static const char *piece_text(export_ctx *x, const sp_tokenizer *tok, int id) {
    size_t n = 0;
    const char *p = sp_tokenizer_id_to_piece(tok, id, &n);
    if (!p) return NULL;
    char *s = keep(x, asvr_malloc(n + 1, "a piece"));
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static void write_tokenizer(export_ctx *x, const char *tokenizer, int image_token) {
    asvr_error err;
    sp_tokenizer *tok = sp_tokenizer_load(tokenizer, &err);
    if (!tok) ASVR_FATAL("pass the LLM's tokenizer.model with --tokenizer", "%s", err.msg);
    if (sp_tokenizer_vocab_size(tok) != x->cfg.llm.vocab)
        ASVR_FATAL("pass the tokenizer the model was trained with", "'%s' has %d pieces, the model's vocabulary %d",
                   tokenizer, sp_tokenizer_vocab_size(tok), x->cfg.llm.vocab);
    copy_file(tokenizer, x->tmp, "tokenizer.model");
    int bos = sp_tokenizer_bos_id(tok), eos = sp_tokenizer_eos_id(tok), unk = sp_tokenizer_unk_id(tok);
    const char *pb = piece_text(x, tok, bos), *pe = piece_text(x, tok, eos), *pu = unk >= 0 ? piece_text(x, tok, unk) : NULL;
    if (!pb || !pe) ASVR_FATAL("", "'%s' has no BOS or EOS piece", tokenizer);
    json_t *dec = json_object();
    char key[32];
    if (pu) snprintf(key, sizeof key, "%d", unk), json_object_set_new(dec, key, added_token(pu));
    snprintf(key, sizeof key, "%d", bos), json_object_set_new(dec, key, added_token(pb));
    snprintf(key, sizeof key, "%d", eos), json_object_set_new(dec, key, added_token(pe));
    snprintf(key, sizeof key, "%d", image_token), json_object_set_new(dec, key, added_token("<image>"));
    json_t *tc = json_pack("{s:s, s:s, s:b, s:b, s:b, s:b, s:s, s:s, s:i, s:s, s:o, s:{}, s:o}", "tokenizer_class",
                           "LlamaTokenizer", "processor_class", "LlavaProcessor", "add_bos_token", 1, "add_eos_token", 0,
                           "legacy", sp_tokenizer_legacy(tok), "clean_up_tokenization_spaces", 0, "bos_token", pb,
                           "eos_token", pe, "model_max_length", 2048, "padding_side", "right", "added_tokens_decoder", dec,
                           "sp_model_kwargs", "additional_special_tokens", json_pack("[s]", "<image>"));
    if (pu) {
        json_object_set_new(tc, "unk_token", json_string(pu));
        json_object_set_new(tc, "pad_token", json_string(pu)); /* LLaVA: pad = unk */
    }
    write_json(x, "tokenizer_config.json", tc);
    json_decref(tc);
    json_t *sm = json_pack("{s:s, s:s, s:[s]}", "bos_token", pb, "eos_token", pe, "additional_special_tokens", "<image>");
    if (pu) json_object_set_new(sm, "unk_token", json_string(pu)), json_object_set_new(sm, "pad_token", json_string(pu));
    write_json(x, "special_tokens_map.json", sm);
    json_decref(sm);
    json_t *gc = json_pack("{s:i, s:i, s:s}", "bos_token_id", bos, "eos_token_id", eos, "transformers_version", "4.44.0");
    if (unk >= 0) json_object_set_new(gc, "pad_token_id", json_integer(unk));
    write_json(x, "generation_config.json", gc);
    json_decref(gc);
    sp_tokenizer_free(tok);
}

static json_t *preprocessor_config(const export_ctx *x, int with_class) {
    const asvr_config *c = &x->cfg;
    int S = c->vision.image_size;
    json_t *o = json_pack("{s:b, s:b, s:b, s:[f,f,f], s:[f,f,f], s:s, s:i, s:f, s:{s:i, s:i}}", "do_normalize", 1,
                          "do_rescale", 1, "do_resize", 1, "image_mean", (double)c->image_mean[0],
                          (double)c->image_mean[1], (double)c->image_mean[2], "image_std", (double)c->image_std[0],
                          (double)c->image_std[1], (double)c->image_std[2], "image_processor_type",
                          "SiglipImageProcessor", "resample", 3, "rescale_factor", 1.0 / 255.0, "size", "height", S,
                          "width", S);
    json_t *vis = json_object_get(x->mc, "vision"); /* the config's own values, not their float copies */
    if (json_is_array(json_object_get(vis, "image_mean"))) json_object_set(o, "image_mean", json_object_get(vis, "image_mean"));
    if (json_is_array(json_object_get(vis, "image_std"))) json_object_set(o, "image_std", json_object_get(vis, "image_std"));
    if (with_class) json_object_set_new(o, "processor_class", json_string("LlavaProcessor"));
    return o;
}

/* The image policy and pad colour a user must apply before the image processor (it only resizes). */
static json_t *export_notes(const export_ctx *x, const char *format, int image_token) {
    int pt = !strcmp(stage_of(x), "pt");
    const asvr_config *c = &x->cfg;
    json_t *o = json_pack("{s:s, s:s, s:s}", "format", format, "image_aspect_ratio", pt ? "square" : "pad",
                          "preprocessing", pt ? "squash to the image size (Pillow bicubic), then normalise"
                                              : "expand2square with pad_color, then resize (Pillow bicubic) and normalise");
    if (!pt) json_object_set_new(o, "pad_color", json_pack("[i,i,i]", c->image_pad[0], c->image_pad[1], c->image_pad[2]));
    if (image_token >= 0) json_object_set_new(o, "image_token_index", json_integer(image_token));
    const char *fp = json_string_value(json_object_get(x->state, "codes_tokenizer_fingerprint"));
    if (fp) json_object_set_new(o, "codes_tokenizer_fingerprint", json_string(fp));
    const char *in = json_string_value(json_object_get(x->state, "input"));
    if (in && strcmp(in, "continuous") != 0) json_object_set_new(o, "input", json_string(in)); /* asvr-eval reads it */
    return o;
}

/* The visual heads (visual_head.*, visual_head_appearance.*): their own file and a config saying what
 * they read and predict. 0 when the checkpoint has none. */
static int write_visual_head(export_ctx *x) {
    st_writer *w = st_writer_new();
    int n = 0;
    for (int i = 0; i < safetensors_count(x->model); i++) {
        const st_tensor *t = safetensors_at(x->model, i);
        if (strncmp(t->name, "visual_head", 11) != 0) continue;
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        n++;
    }
    if (n) {
        st_writer_set_metadata(w, "format", "pt");
        char *p = asvr_path_join(x->tmp, "visual_head.safetensors");
        asvr_error err;
        if (st_writer_write(w, p, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        free(p);
        json_t *hc = json_object();
        const char *heads[2] = {"visual_head", "visual_head_appearance"};
        for (int h = 0; h < 2; h++) {
            json_t *cfg = json_object_get(x->mc, heads[h]);
            if (cfg) json_object_set(hc, heads[h], cfg);
        }
        json_object_set_new(hc, "llm_hidden_size", json_integer(x->cfg.llm.dim));
        json_object_set_new(hc, "image_positions", json_integer(x->cfg.image_positions));
        const char *fp = json_string_value(json_object_get(x->state, "codes_tokenizer_fingerprint"));
        if (fp) json_object_set_new(hc, "codes_tokenizer_fingerprint", json_string(fp));
        json_object_set_new(hc, "input", json_string("the LLM's final-norm last-layer hidden state at each image position "
                                                     "(no shift: position p predicts patch p's codes, raster order)"));
        json_object_set_new(hc, "code_in_proj_input", json_string("the sum of the frozen codebook rows of depths < d "
                                                                  "(quantizer.codebooks.{d}.weight of the vision tokenizer file)"));
        json_object_set_new(hc, "output", json_string("per depth d, logits over codebook_size codes (heads.{d})"));
        json_object_set_new(hc, "doc", json_string("docs/formats.md, section Exported models"));
        write_json(x, "visual_head_config.json", hc);
        json_decref(hc);
    }
    st_writer_free(w);
    return n;
}

static void export_hf(export_ctx *x, const char *vision, const char *vision_prefix, const char *tokenizer) {
    const asvr_config *c = &x->cfg;
    int V = c->llm.vocab, image_token = V;
    st_writer *w = st_writer_new();
    asvr_error err;
    safetensors *vt;
    if (safetensors_open(vision, &vt, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    add_tower(x, w, vt, vision, vision_prefix, "vision_tower.vision_model.");
    int n_llm = 0;
    for (int i = 0; i < safetensors_count(x->model); i++) {
        const st_tensor *t = safetensors_at(x->model, i);
        char name[256];
        if (!strncmp(t->name, "llm.", 4)) {
            snprintf(name, sizeof name, "language_model.%s", t->name + 4);
            if (!strcmp(t->name, "llm.model.embed_tokens.weight") || !strcmp(t->name, "llm.lm_head.weight")) {
                int64_t shape[2] = {t->shape[0] + 1, t->shape[1]};
                if (t->shape[0] != V) ASVR_FATAL("", "'%s' has %lld rows, the vocabulary %d", t->name, (long long)t->shape[0], V);
                st_writer_add(w, asvr_strdup_kept(x, name), ST_F32, 2, shape, with_mean_row(x, t, t->name));
            } else {
                st_writer_add(w, asvr_strdup_kept(x, name), t->dtype, t->ndim, t->shape, t->data);
            }
            n_llm++;
        } else if (!strncmp(t->name, "mm_projector.0.", 15) || !strncmp(t->name, "mm_projector.2.", 15)) {
            snprintf(name, sizeof name, "multi_modal_projector.linear_%c.%s", t->name[13] == '0' ? '1' : '2', t->name + 15);
            st_writer_add(w, asvr_strdup_kept(x, name), t->dtype, t->ndim, t->shape, t->data);
        } else if (strncmp(t->name, "visual_head", 11) != 0) {
            ASVR_FATAL("", "'%s/model.safetensors': unexpected tensor '%s'", x->ck, t->name);
        }
    }
    if (!n_llm) ASVR_FATAL("", "'%s/model.safetensors' holds no LLM tensors", x->ck);
    st_writer_set_metadata(w, "format", "pt");
    char *p = asvr_path_join(x->tmp, "model.safetensors");
    if (st_writer_write(w, p, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    st_writer_free(w);
    safetensors_close(vt);

    /* config.json: LlavaConfig */
    json_t *llm = json_object_get(x->mc, "llm"), *vis = json_object_get(x->mc, "vision");
    json_t *text = json_deep_copy(llm);
    json_object_del(text, "architectures");
    if (!json_object_get(text, "model_type")) json_object_set_new(text, "model_type", json_string("llama"));
    json_object_set_new(text, "vocab_size", json_integer(V + 1));
    json_object_set_new(text, "tie_word_embeddings", json_false());
    json_t *vc = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:i, s:f, s:b}", "model_type",
                           "siglip_vision_model", "hidden_size", c->vision.hidden, "intermediate_size",
                           c->vision.intermediate, "num_hidden_layers", c->vision.tap, "num_attention_heads",
                           c->vision.heads, "image_size", c->vision.image_size, "patch_size", c->vision.patch_size,
                           "layer_norm_eps", json_number_value(json_object_get(vis, "layer_norm_eps")), "hidden_act",
                           "gelu_pytorch_tanh", "num_channels", 3, "attention_dropout", 0.0, "vision_use_head", 0);
    json_t *cfg = json_pack("{s:[s], s:s, s:o, s:o, s:i, s:i, s:s, s:s, s:i, s:b, s:s, s:i}", "architectures",
                            "LlavaForConditionalGeneration", "model_type", "llava", "text_config", text, "vision_config",
                            vc, "image_token_index", image_token, "ignore_index", -100, "projector_hidden_act", "gelu",
                            "vision_feature_select_strategy", "full", "vision_feature_layer", c->vision.tap,
                            "tie_word_embeddings", 0, "torch_dtype", "float32", "image_seq_length", c->image_positions);
    json_object_set(cfg, "asvr", x->mc);
    json_object_set_new(cfg, "asvr_export", export_notes(x, "hf", image_token));
    write_json(x, "config.json", cfg);
    json_decref(cfg);
    json_t *pc = preprocessor_config(x, 1);
    write_json(x, "preprocessor_config.json", pc);
    json_decref(pc);
    write_tokenizer(x, tokenizer, image_token);
    write_visual_head(x);
}

/* An HF SiglipVisionModel folder of the tower (config, weights, image processor) for mm_vision_tower. */
static void write_tower_folder(export_ctx *x, const char *vision, const char *vision_prefix, const char *dir) {
    char *d = asvr_path_join(x->tmp, dir);
    asvr_error err;
    if (asvr_mkdir_p(d, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    st_writer *w = st_writer_new();
    safetensors *vt;
    if (safetensors_open(vision, &vt, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    add_tower(x, w, vt, vision, vision_prefix, "vision_model.");
    st_writer_set_metadata(w, "format", "pt");
    char *p = asvr_path_join(d, "model.safetensors");
    if (st_writer_write(w, p, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    st_writer_free(w);
    safetensors_close(vt);
    const asvr_config *c = &x->cfg;
    json_t *vis = json_object_get(x->mc, "vision");
    json_t *vc = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:i, s:f, s:b, s:s}", "architectures",
                           "SiglipVisionModel", "model_type", "siglip_vision_model", "hidden_size", c->vision.hidden,
                           "intermediate_size", c->vision.intermediate, "num_hidden_layers", c->vision.tap,
                           "num_attention_heads", c->vision.heads, "image_size", c->vision.image_size, "patch_size",
                           c->vision.patch_size, "layer_norm_eps", json_number_value(json_object_get(vis, "layer_norm_eps")),
                           "hidden_act", "gelu_pytorch_tanh", "num_channels", 3, "attention_dropout", 0.0,
                           "vision_use_head", 0, "torch_dtype", "float32");
    char *sub = asvr_path_join(dir, "config.json");
    write_json(x, sub, vc);
    free(sub);
    json_decref(vc);
    json_t *pc = preprocessor_config(x, 0);
    sub = asvr_path_join(dir, "preprocessor_config.json");
    write_json(x, sub, pc);
    free(sub);
    json_decref(pc);
    free(d);
}

static int is_so400m(const siglip_config *v) {
    return v->image_size == 384 && v->patch_size == 14 && v->hidden == 1152 && v->intermediate == 4304 && v->heads == 16;
}

static void export_llava(export_ctx *x, const char *vision, const char *vision_prefix, const char *vision_tower,
                         const char *tokenizer) {
    st_writer *w = st_writer_new();
    for (int i = 0; i < safetensors_count(x->model); i++) {
        const st_tensor *t = safetensors_at(x->model, i);
        char name[256];
        if (!strncmp(t->name, "llm.", 4)) snprintf(name, sizeof name, "%s", t->name + 4);
        else snprintf(name, sizeof name, "model.%s", t->name);
        st_writer_add(w, asvr_strdup_kept(x, name), t->dtype, t->ndim, t->shape, t->data);
    }
    st_writer_set_metadata(w, "format", "pt");
    char *p = asvr_path_join(x->tmp, "model.safetensors");
    asvr_error err;
    if (st_writer_write(w, p, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    st_writer_free(w);
    const asvr_config *c = &x->cfg;
    /* mm_vision_tower: the name given, the published SO400M for its shapes, else the tower written here */
    char *tower = NULL;
    int tower_layers = c->vision.layers; /* of the tower mm_vision_tower names */
    const char *input = json_string_value(json_object_get(x->state, "input"));
    int discrete = input && !strcmp(input, "discrete"); /* reads codes: no tower to name (asvr_export.input says so) */
    if (vision_tower) tower = asvr_strdup(vision_tower);
    else if (discrete && !vision) tower = NULL;
    else if (is_so400m(&c->vision)) tower = asvr_strdup(SO400M_NAME);
    else if (vision) {
        write_tower_folder(x, vision, vision_prefix, "siglip_vision_tower");
        char *abs = realpath(x->out, NULL); /* the folder does not exist yet: its parent does */
        if (!abs) {
            char *parent = asvr_path_dirname(x->out);
            char *rp = realpath(parent, NULL);
            const char *base = strrchr(x->out, '/');
            base = base ? base + 1 : x->out;
            char *o = rp ? asvr_path_join(rp, base) : asvr_strdup(x->out);
            abs = o;
            free(rp);
            free(parent);
        }
        tower = asvr_path_join(abs, "siglip_vision_tower");
        free(abs);
        tower_layers = c->vision.tap; /* the folder holds the layers up to the tap */
    } else {
        ASVR_FATAL("pass --vision FILE (the tower is then written beside the model) or --vision-tower NAME",
                   "the tower is not SigLIP-SO400M/14@384, so LLaVA's loader needs it from somewhere");
    }
    json_t *llm = json_object_get(x->mc, "llm"), *vis = json_object_get(x->mc, "vision");
    json_t *cfg = json_deep_copy(llm ? llm : json_object());
    json_object_set_new(cfg, "architectures", json_pack("[s]", "LlavaLlamaForCausalLM"));
    json_object_set_new(cfg, "model_type", json_string("llava_llama"));
    json_object_set_new(cfg, "mm_projector_type", json_string("mlp2x_gelu"));
    if (tower) json_object_set_new(cfg, "mm_vision_tower", json_string(tower));
    json_object_set_new(cfg, "mm_vision_select_feature", json_string("patch"));
    json_object_set_new(cfg, "mm_use_im_start_end", json_false());
    json_object_set_new(cfg, "mm_use_im_patch_token", json_false());
    json_object_set_new(cfg, "mm_patch_merge_type", json_string("flat"));
    json_t *scales = json_object_get(vis, "scales");
    size_t n_scales = json_is_array(scales) ? json_array_size(scales) : 0;
    json_object_set_new(cfg, "mm_hidden_size", json_integer((json_int_t)c->vision.hidden * (json_int_t)(n_scales ? n_scales : 1)));
    if (n_scales) { /* the reference's S2 tower: use_s2 and its scales as "384,768,1152" */
        char list[128] = "";
        for (size_t i = 0; i < n_scales && strlen(list) < sizeof list - 16; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%lld", i ? "," : "",
                     (long long)json_integer_value(json_array_get(scales, i)));
        json_object_set_new(cfg, "use_s2", json_true());
        json_object_set_new(cfg, "s2_scales", json_string(list));
    }
    /* hidden_states[tap] of that tower, counted from the end as LLaVA does (-2 for SO400M's 26 of 27, -1 for
     * the folder written here) */
    json_object_set_new(cfg, "mm_vision_select_layer", json_integer(c->vision.tap - (tower_layers + 1)));
    json_object_set_new(cfg, "image_aspect_ratio", json_string(!strcmp(stage_of(x), "pt") ? "square" : "pad"));
    json_object_set_new(cfg, "tokenizer_model_max_length", json_integer(2048));
    json_object_set_new(cfg, "torch_dtype", json_string("float32"));
    json_object_set(cfg, "asvr", x->mc);
    json_object_set_new(cfg, "asvr_export", export_notes(x, "llava", -1));
    write_json(x, "config.json", cfg);
    json_decref(cfg);
    if (tokenizer) copy_file(tokenizer, x->tmp, "tokenizer.model");
    free(tower);
}

/* The checkpoint's tensors must be exactly the model's that its config describes (as trained: the
 * state's visual loss and input): names, shapes, f32. Anything else is a damaged checkpoint or an edited
 * config, refused naming the tensor. */
static void check_tensors(const export_ctx *x, const char *statep, const char *model) {
    asvr_error err;
    char *mtext = json_dumps(x->mc, JSON_COMPACT);
    asvr_config c;
    run_choices rc;
    run_choices_default(&rc);
    const char *vl = json_string_value(json_object_get(x->state, "visual_loss")),
               *in = json_string_value(json_object_get(x->state, "input"));
    if (vl) rc.visual_loss = vl;
    if (in) rc.input = in;
    if (run_choices_apply(&rc, mtext, NN_CPU, &c, &err) != 0)
        ASVR_FATAL("the checkpoint is damaged", "'%s': %s", statep, err.msg);
    free(mtext);
    asvr_model m;
    asvr_model_init(&m, &c);
    const safetensors *st = x->model;
    for (int i = 0; i < m.ps.n; i++) {
        const param *q = m.ps.v[i];
        const st_tensor *t = safetensors_find(st, q->name);
        if (!t) ASVR_FATAL("the checkpoint is damaged", "'%s' has no tensor '%s', which its model config needs", model, q->name);
        int same = t->ndim == q->ndim && t->dtype == ST_F32;
        for (int d = 0; same && d < q->ndim; d++) same = t->shape[d] == q->shape[d];
        if (!same) {
            char want[64] = "", got[64] = "";
            for (int d = 0; d < q->ndim; d++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "x" : "", (long long)q->shape[d]);
            for (int d = 0; d < t->ndim && d < 8; d++) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "x" : "", (long long)t->shape[d]);
            ASVR_FATAL("the checkpoint is damaged or its config was edited", "'%s': tensor '%s' is %s %s, its model config needs f32 %s",
                       model, q->name, st_dtype_name(t->dtype), got, want);
        }
    }
    for (int i = 0; i < safetensors_count(st); i++)
        if (!param_find(&m.ps, safetensors_at(st, i)->name))
            ASVR_FATAL("the checkpoint is damaged or its config was edited", "'%s': tensor '%s' is not part of the model its config describes",
                       model, safetensors_at(st, i)->name);
    asvr_model_free(&m);
}

int cmd_export(int argc, char **argv) {
    const char *format = "hf", *vision = NULL, *vision_prefix = "vision_model.", *tokenizer = NULL, *vision_tower = NULL;
    const asvr_opt opts[] = {
        {"format", ASVR_OPT_STR, &format, "hf|llava",
         "hf (default): a folder transformers' LlavaForConditionalGeneration loads as it is; llava: the LLaVA "
         "repository's naming (model_type llava_llama)"},
        {"vision", ASVR_OPT_STR, &vision, "FILE",
         "the frozen SigLIP tower the model was trained with (hf: required, its weights go in the folder)"},
        {"vision-prefix", ASVR_OPT_STR, &vision_prefix, "P", "name prefix of the tower's tensors (default vision_model.)"},
        {"tokenizer", ASVR_OPT_STR, &tokenizer, "MODEL", "the LLM's tokenizer.model (hf: required; copied with its configs)"},
        {"vision-tower", ASVR_OPT_STR, &vision_tower, "NAME",
         "llava: mm_vision_tower (default: " SO400M_NAME " for its shapes, else the tower written from --vision)"},
    };
    const asvr_cli cli = {"asvr-train export", "[--format hf|llava] --vision FILE --tokenizer MODEL CHECKPOINT_DIR OUT_DIR",
                          "Writes OUT_DIR from a checkpoint folder (run/step-N): with --format hf a folder that\n"
                          "transformers' LlavaForConditionalGeneration.from_pretrained loads (tower, projector, LLM with an\n"
                          "<image> token, tokenizer, image processor; the visual head in visual_head.safetensors); with\n"
                          "--format llava the LLaVA repository's layout. OUT_DIR must not exist.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 2, 2};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    int hf = !strcmp(format, "hf");
    if (!hf && strcmp(format, "llava") != 0) asvr_cli_usage_error(&cli, "--format must be hf or llava, not '%s'", format);
    if (hf && (!vision || !tokenizer))
        asvr_cli_usage_error(&cli, "--format hf needs --vision FILE (the tower's weights) and --tokenizer MODEL");
    if (hf && vision_tower) asvr_cli_usage_error(&cli, "--vision-tower is for --format llava");
    export_ctx x = {.ck = pos[0], .out = pos[1]};
    asvr_error err;
    if (asvr_path_exists(x.out)) ASVR_FATAL("choose a new folder", "'%s' exists", x.out);
    char *done = asvr_path_join(x.ck, "DONE"), *model = asvr_path_join(x.ck, "model.safetensors"),
         *statep = asvr_path_join(x.ck, "state.json");
    if (!asvr_path_exists(done)) ASVR_FATAL("pass a finished checkpoint folder (run/step-N)", "'%s' is not a finished checkpoint", x.ck);
    x.state = json_read_path(statep, (size_t)64 << 20, &err);
    if (!x.state) ASVR_FATAL("", "%s", err.msg);
    x.mc = json_object_get(x.state, "model_config");
    if (!json_is_object(x.mc)) ASVR_FATAL("the checkpoint is damaged", "'%s' has no model_config object", statep);
    char *mc_text = json_dumps(x.mc, JSON_COMPACT);
    if (!mc_text || asvr_config_from_json(mc_text, &x.cfg, &err) < 0)
        ASVR_FATAL("", "'%s': model_config: %s", statep, mc_text ? err.msg : "missing");
    free(mc_text);
    const char *input = json_string_value(json_object_get(x.state, "input"));
    if (hf && input && strcmp(input, "continuous") != 0)
        ASVR_FATAL("use --format llava", "the model reads %s input, which LlavaForConditionalGeneration cannot feed", input);
    if (hf && x.cfg.n_scales)
        ASVR_FATAL("use --format llava (use_s2, LLaVA's S2 tower)", "the model takes S2 multi-scale features, which "
                   "LlavaForConditionalGeneration does not compute");
    if (safetensors_open(model, &x.model, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    check_tensors(&x, statep, model);
    size_t tn = strlen(x.out) + 8;
    char *tmp = asvr_malloc(tn, "a path");
    snprintf(tmp, tn, "%s.tmp", x.out);
    x.tmp = tmp;
    if (asvr_mkdir_p(tmp, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    if (hf) export_hf(&x, vision, vision_prefix, tokenizer);
    else export_llava(&x, vision, vision_prefix, vision_tower, tokenizer);
    if (rename(tmp, x.out) != 0) ASVR_FATAL("", "renaming '%s' to '%s': %s", tmp, x.out, strerror(errno));
    LOG_INFO("exported '%s' to '%s' (%s format)", x.ck, x.out, format);
    safetensors_close(x.model);
    for (int i = 0; i < x.nbufs; i++) free(x.bufs[i]);
    free(x.bufs);
    json_decref(x.state);
    free(tmp), free(done), free(model), free(statep), free(pos);
    return ASVR_EXIT_OK;
}
