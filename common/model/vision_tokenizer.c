#include "model/vision_tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/progress.h" /* asvr_now */
#include "io/safetensors.h"
#include "nn/ops.h"

struct vision_tokenizer {
    vtok_config cfg;
    safetensors *st;
    siglip *enc;
    proj_block *proj; /* appearance only */
    rvq *q;
    char fingerprint[17];
    char *path;
    vtok_load_opts opts;
    char backend[16];
};

struct vtok_work {
    const vision_tokenizer *vt;
    int max_batch;
    siglip_acts *acts;
    proj_block_acts *pacts; /* appearance only */
    rvq_work *rw;
    float *feats; /* [max_batch, N, hidden]: tap output */
    float *qin;   /* [max_batch, N, embed_dim]: projection output (appearance only) */
    /* CUDA: device buffers for a batch (images f32, features and projection in the model dtype,
     * codes u16 [max_batch * N, D]) */
    nn_arena *dev;
    tensor *d_img, *d_feats, *d_qin, *d_codes;
    vtok_times times;
};

static int get_int(json_t *o, const char *k, int *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!json_is_integer(j)) return asvr_err_set(err, "config field \"%s\" must be an integer", k);
    *v = (int)json_integer_value(j);
    return 0;
}

static int get_str(json_t *o, const char *k, char *dst, size_t n, const char *dflt, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!j && dflt) {
        snprintf(dst, n, "%s", dflt);
        return 0;
    }
    if (!json_is_string(j) || json_string_length(j) >= n) return asvr_err_set(err, "config field \"%s\" must be a short string", k);
    snprintf(dst, n, "%s", json_string_value(j));
    return 0;
}

/* An optional integer / number: dflt when the key is absent. */
static int get_int_opt(json_t *o, const char *k, int dflt, int *v, asvr_error *err) {
    if (!json_object_get(o, k)) {
        *v = dflt;
        return 0;
    }
    return get_int(o, k, v, err);
}

static int get_num_opt(json_t *o, const char *k, double dflt, double *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!j) {
        *v = dflt;
        return 0;
    }
    if (!json_is_number(j)) return asvr_err_set(err, "config field \"%s\" must be a number", k);
    *v = json_number_value(j);
    return 0;
}

static int get_vec3(json_t *o, const char *k, double *v, asvr_error *err) {
    json_t *j = json_object_get(o, k);
    if (!json_is_array(j) || json_array_size(j) != 3) return asvr_err_set(err, "config field \"%s\" must be an array of 3 numbers", k);
    for (int i = 0; i < 3; i++) {
        json_t *x = json_array_get(j, (size_t)i);
        if (!json_is_number(x)) return asvr_err_set(err, "config field \"%s\" must be an array of 3 numbers", k);
        v[i] = json_number_value(x);
    }
    return 0;
}

int vtok_config_parse(const char *text, vtok_config *c, asvr_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return asvr_err_set(err, "the tokenizer config is not a JSON object: %s", je.text);
    }
    int rc = -1, version = 0, layers = 0;
    char format[64], act[32];
    double mean[3], std[3], pad[3];
    if (get_str(o, "format", format, sizeof format, NULL, err) < 0) goto out;
    if (strcmp(format, "asvr-vision-tokenizer") != 0) {
        asvr_err_set(err, "config \"format\" is '%s', expected 'asvr-vision-tokenizer'", format);
        goto out;
    }
    if (get_int(o, "version", &version, err) < 0) goto out;
    if (version != 1) {
        asvr_err_set(err, "tokenizer config version %d; this build reads version 1", version);
        goto out;
    }
    if (get_str(o, "kind", c->kind, sizeof c->kind, NULL, err) < 0 ||
        get_int(o, "image_size", &c->enc.image_size, err) < 0 || get_int(o, "patch_size", &c->enc.patch_size, err) < 0 ||
        get_int(o, "hidden_size", &c->enc.hidden, err) < 0 ||
        get_int(o, "intermediate_size", &c->enc.intermediate, err) < 0 || get_int(o, "num_layers", &layers, err) < 0 ||
        get_int(o, "num_heads", &c->enc.heads, err) < 0 || get_int(o, "tap_layer", &c->enc.tap, err) < 0 ||
        get_int(o, "depth", &c->depth, err) < 0 || get_int(o, "codebook_size", &c->codebook_size, err) < 0 ||
        get_str(o, "hidden_act", act, sizeof act, "gelu_pytorch_tanh", err) < 0 ||
        get_str(o, "encoder_prefix", c->encoder_prefix, sizeof c->encoder_prefix, "vision_model.", err) < 0 ||
        get_str(o, "codebook_prefix", c->codebook_prefix, sizeof c->codebook_prefix, "quantizer.codebooks.", err) < 0 ||
        get_vec3(o, "image_mean", mean, err) < 0 || get_vec3(o, "image_std", std, err) < 0 ||
        get_vec3(o, "pad_color", pad, err) < 0)
        goto out;
    c->enc.layers = layers;
    json_t *eps = json_object_get(o, "layer_norm_eps");
    if (!json_is_number(eps)) {
        asvr_err_set(err, "config field \"layer_norm_eps\" must be a number");
        goto out;
    }
    c->enc.ln_eps = (float)json_number_value(eps);
    if (strcmp(act, "gelu_pytorch_tanh") == 0) c->enc.act = NN_ACT_GELU_TANH;
    else if (strcmp(act, "gelu") == 0) c->enc.act = NN_ACT_GELU_ERF;
    else {
        asvr_err_set(err, "config \"hidden_act\" '%s' is not supported (gelu_pytorch_tanh, gelu)", act);
        goto out;
    }
    for (int i = 0; i < 3; i++) {
        c->mean[i] = (float)mean[i];
        c->std[i] = (float)std[i];
        if (pad[i] < 0 || pad[i] > 255 || std[i] <= 0) {
            asvr_err_set(err, "config image_std must be > 0 and pad_color within 0..255");
            goto out;
        }
        c->pad[i] = (uint8_t)pad[i];
    }
    if (strcmp(c->kind, "semantic") == 0) {
        c->kind_id = VTOK_SEMANTIC;
        c->embed_dim = c->enc.hidden;
    } else if (strcmp(c->kind, "appearance") == 0) {
        double neps = 1e-6;
        c->kind_id = VTOK_APPEARANCE;
        if (get_int(o, "embed_dim", &c->embed_dim, err) < 0 ||
            get_str(o, "prequant_prefix", c->prequant_prefix, sizeof c->prequant_prefix, "prequant_visual.", err) < 0 ||
            get_int_opt(o, "norm_groups", 32, &c->norm_groups, err) < 0 || get_num_opt(o, "norm_eps", 1e-6, &neps, err) < 0)
            goto out;
        c->norm_eps = (float)neps;
        if (c->norm_groups < 1 || c->embed_dim < 1 || c->enc.hidden % c->norm_groups || c->embed_dim % c->norm_groups) {
            asvr_err_set(err, "appearance config: hidden_size %d and embed_dim %d must be positive multiples of "
                         "norm_groups %d", c->enc.hidden, c->embed_dim, c->norm_groups);
            goto out;
        }
        if (!(c->norm_eps > 0.0f)) {
            asvr_err_set(err, "appearance config: norm_eps %g must be > 0", neps);
            goto out;
        }
    } else {
        asvr_err_set(err, "tokenizer kind '%s' is not supported (semantic, appearance)", c->kind);
        goto out;
    }
    if (c->depth < 1 || c->depth > 255 || c->codebook_size < 1 || c->codebook_size > 65536) {
        asvr_err_set(err, "config depth %d / codebook_size %d out of range (1..255 / 1..65536)", c->depth, c->codebook_size);
        goto out;
    }
    if (siglip_config_check(&c->enc, err) < 0) goto out;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

static uint64_t fingerprint_st(const safetensors *st, const char *config) {
    asvr_hasher *h = asvr_hasher_new(0);
    asvr_hasher_update(h, config, strlen(config) + 1);
    for (int i = 0; i < safetensors_count(st); i++) {
        const st_tensor *t = safetensors_at(st, i);
        asvr_hasher_update(h, t->name, strlen(t->name) + 1);
        int32_t meta[2] = {(int32_t)t->dtype, t->ndim};
        asvr_hasher_update(h, meta, sizeof meta);
        asvr_hasher_update(h, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        asvr_hasher_update(h, t->data, t->nbytes);
    }
    uint64_t v = asvr_hasher_digest(h);
    asvr_hasher_free(h);
    return v;
}

static int open_config(const char *path, safetensors **st, const char **cfg, asvr_error *err) {
    if (safetensors_open(path, st, err) < 0) return -1;
    *cfg = safetensors_metadata(*st, VTOK_META_KEY);
    if (!*cfg) {
        safetensors_close(*st);
        *st = NULL;
        return asvr_err_set(err, "'%s' has no \"%s\" entry in its __metadata__: not an asvr tokenizer file "
                            "(make one with tools/convert_tokenizer.py)", path, VTOK_META_KEY);
    }
    return 0;
}

int vision_tokenizer_fingerprint_file(const char *path, char out[17], asvr_error *err) {
    safetensors *st;
    const char *cfg;
    if (open_config(path, &st, &cfg, err) < 0) return -1;
    asvr_hash_hex(fingerprint_st(st, cfg), out);
    safetensors_close(st);
    return 0;
}

void vtok_load_opts_default(vtok_load_opts *o) {
    memset(o, 0, sizeof *o);
    o->device = NN_CPU;
    o->dtype = NN_F32;
}

int vision_tokenizer_load(const char *path, vision_tokenizer **out, asvr_error *err) {
    return vision_tokenizer_load_ex(path, NULL, out, err);
}

int vision_tokenizer_load_ex(const char *path, const vtok_load_opts *o, vision_tokenizer **out, asvr_error *err) {
    *out = NULL;
    vtok_load_opts opts;
    if (o) opts = *o;
    else vtok_load_opts_default(&opts);
    if (opts.dtype != NN_F32 && !(opts.dtype == NN_BF16 && opts.device == NN_CUDA))
        return asvr_err_set(err, "tokenizer '%s': weights in %s on %s are not supported (cpu f32, cuda f32 or bf16)",
                            path, nn_dtype_name(opts.dtype), nn_device_name(opts.device));
    if (opts.fused_vq && opts.device != NN_CUDA)
        return asvr_err_set(err, "tokenizer '%s': the fused VQ kernel runs on cuda only", path);
#ifndef ASVR_HAVE_CUDA
    if (opts.device == NN_CUDA)
        return asvr_err_set(err, "tokenizer '%s': this build has no CUDA backend (rebuild with nvcc on PATH)", path);
#else
    if (opts.device == NN_CUDA && !nn_device_available(NN_CUDA))
        return asvr_err_set(err, "tokenizer '%s': no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)",
                            path);
#endif
    vision_tokenizer *vt = asvr_calloc(1, sizeof *vt, "a vision tokenizer");
    vt->path = asvr_strdup(path);
    vt->opts = opts;
    snprintf(vt->backend, sizeof vt->backend, "%s-%s", nn_device_name(opts.device), nn_dtype_name(opts.dtype));
    const char *cfg;
    if (open_config(path, &vt->st, &cfg, err) < 0) goto fail;
    if (vtok_config_parse(cfg, &vt->cfg, err) < 0) {
        asvr_err_prefix(err, "'%s'", path);
        goto fail;
    }
    const vtok_config *c = &vt->cfg;
    nn_device dev = opts.device;
    nn_dtype dt = opts.dtype;
    if (siglip_load_ex(&c->enc, vt->st, c->encoder_prefix, dev, dt, &vt->enc, err) < 0 ||
        (c->kind_id == VTOK_APPEARANCE &&
         proj_block_load_ex(vt->st, c->prequant_prefix, c->enc.hidden, c->embed_dim, c->norm_groups, c->norm_eps, dev,
                            dt, &vt->proj, err) < 0) ||
        rvq_load_ex(vt->st, c->codebook_prefix, c->depth, c->codebook_size, c->embed_dim, dev, dt, &vt->q, err) < 0) {
        asvr_err_prefix(err, "tokenizer '%s'", path);
        goto fail;
    }
    asvr_hash_hex(fingerprint_st(vt->st, cfg), vt->fingerprint);
    *out = vt;
    return 0;
fail:
    vision_tokenizer_free(vt);
    return -1;
}

void vision_tokenizer_free(vision_tokenizer *vt) {
    if (!vt) return;
    siglip_free(vt->enc);
    proj_block_free(vt->proj);
    rvq_free(vt->q);
    safetensors_close(vt->st);
    free(vt->path);
    free(vt);
}

const vtok_config *vision_tokenizer_config(const vision_tokenizer *vt) { return &vt->cfg; }
const char *vision_tokenizer_backend(const vision_tokenizer *vt) { return vt->backend; }
nn_device vision_tokenizer_device(const vision_tokenizer *vt) { return vt->opts.device; }
const char *vision_tokenizer_fingerprint(const vision_tokenizer *vt) { return vt->fingerprint; }
int vision_tokenizer_positions(const vision_tokenizer *vt) { return siglip_num_patches(&vt->cfg.enc); }
int vision_tokenizer_code_dim(const vision_tokenizer *vt) { return vt->cfg.embed_dim; }

void vision_tokenizer_print(const vision_tokenizer *vt, FILE *f) {
    const vtok_config *c = &vt->cfg;
    fprintf(f, "tokenizer %s (%s, fingerprint %s): SigLIP %dpx/%d, %d wide, MLP %d, %d heads, tap layer %d of %d; "
               "RVQ %d x %d x %d; %d positions\n",
            vt->path, c->kind, vt->fingerprint, c->enc.image_size, c->enc.patch_size, c->enc.hidden,
            c->enc.intermediate, c->enc.heads, c->enc.tap, c->enc.layers, c->depth, c->codebook_size, c->embed_dim,
            vision_tokenizer_positions(vt));
    if (vt->proj)
        fprintf(f, "  projection block '%s': GroupNorm(%d, eps %g) SiLU conv1x1 %d -> %d, GroupNorm SiLU conv3x3, "
                   "shortcut %s\n", c->prequant_prefix, c->norm_groups, (double)c->norm_eps, c->enc.hidden,
                c->embed_dim, c->enc.hidden != c->embed_dim ? "nin_shortcut (1x1)" : "identity");
    fprintf(f, "  backend %s%s\n", vt->backend, vt->opts.fused_vq ? ", fused VQ kernel" : "");
    siglip_print_plan(vt->enc, f);
    if (vt->proj) proj_block_print_plan(vt->proj, f);
    rvq_print_plan(vt->q, f);
}

vtok_work *vtok_work_new(const vision_tokenizer *vt, int max_batch) {
    vtok_work *w = asvr_calloc(1, sizeof *w, "tokenizer scratch");
    w->vt = vt;
    w->max_batch = max_batch;
    w->acts = siglip_acts_new(vt->enc, max_batch);
    int64_t rows = (int64_t)max_batch * vision_tokenizer_positions(vt);
    w->rw = rvq_work_new(vt->q, rows);
    if (vt->opts.fused_vq) rvq_work_set_fused(w->rw, 1);
    int g = vt->cfg.enc.image_size / vt->cfg.enc.patch_size;
    if (vt->proj) w->pacts = proj_block_acts_new(vt->proj, max_batch, g, g);
    if (vt->opts.device == NN_CPU) {
        w->feats = asvr_malloc(sizeof(float) * (size_t)rows * (size_t)vt->cfg.enc.hidden, "tap-layer features");
        if (vt->proj)
            w->qin = asvr_malloc(sizeof(float) * (size_t)rows * (size_t)vt->cfg.embed_dim, "projection block output");
        return w;
    }
    const vtok_config *c = &vt->cfg;
    int64_t B = max_batch, S = c->enc.image_size, N = vision_tokenizer_positions(vt);
    w->dev = nn_arena_new("tokenizer batch buffers", vt->opts.device);
    w->d_img = nn_arena_add(w->dev, "images", NN_F32, 4, (int64_t[]){B, 3, S, S});
    w->d_feats = nn_arena_add(w->dev, "features", vt->opts.dtype, 3, (int64_t[]){B, N, c->enc.hidden});
    if (vt->proj) w->d_qin = nn_arena_add(w->dev, "projected features", vt->opts.dtype, 3, (int64_t[]){B, N, c->embed_dim});
    w->d_codes = nn_arena_add(w->dev, "codes", NN_U16, 2, (int64_t[]){B * N, c->depth});
    nn_arena_commit(w->dev);
    return w;
}

void vtok_work_free(vtok_work *w) {
    if (!w) return;
    siglip_acts_free(w->acts);
    proj_block_acts_free(w->pacts);
    rvq_work_free(w->rw);
    nn_arena_free(w->dev);
    free(w->feats);
    free(w->qin);
    free(w);
}

void vtok_work_print_plan(const vtok_work *w, FILE *f) {
    siglip_acts_print_plan(w->acts, f);
    if (w->pacts) proj_block_acts_print_plan(w->pacts, f);
    if (w->dev) nn_arena_print_plan(w->dev, f);
}

vtok_times vtok_work_times(const vtok_work *w) { return w->times; }

static void check_batch(const vtok_work *w, int B) {
    CHECK(B >= 1 && B <= w->max_batch, "", "vision tokenizer batch %d outside 1..%d", B, w->max_batch);
}

/* ---- CPU ---------------------------------------------------------------------------------------- */

static void run_features(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *feats) {
    const vtok_config *c = &vt->cfg;
    check_batch(w, B);
    int64_t S = c->enc.image_size, N = vision_tokenizer_positions(vt), C = c->enc.hidden;
    tensor img = tensor_make("images", NN_F32, NN_CPU, 4, (int64_t[]){B, 3, S, S}, (void *)images);
    tensor out = tensor_make("features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, C}, feats);
    siglip_forward(vt->enc, w->acts, &img, &out);
}

/* The RVQ input: the tap features themselves (semantic, into w->feats) or the projection of them
 * (appearance, into w->qin, or into out when given). */
static float *run_quant_input(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *out) {
    if (!vt->proj) {
        run_features(vt, w, B, images, out ? out : w->feats);
        return out ? out : w->feats;
    }
    run_features(vt, w, B, images, w->feats);
    int64_t N = vision_tokenizer_positions(vt);
    float *dst = out ? out : w->qin;
    tensor x = tensor_make("tap features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, vt->cfg.enc.hidden}, w->feats);
    tensor y = tensor_make("projected features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, vt->cfg.embed_dim}, dst);
    proj_block_forward(vt->proj, w->pacts, &x, &y);
    return dst;
}

/* ---- CUDA: host images in, host results out ------------------------------------------------------ */
#ifdef ASVR_HAVE_CUDA
static void dev_upload(const vision_tokenizer *vt, vtok_work *w, int B, const float *images) {
    check_batch(w, B);
    double t0 = asvr_now();
    tensor img = tensor_head0(w->d_img, B);
    op_write_f32(&img, images);
    w->times.upload_s += asvr_now() - t0;
}

/* Runs the model on the uploaded batch; returns the device view of what the RVQ quantises
 * (features = the tap output, always computed into w->d_feats). */
static tensor dev_forward(const vision_tokenizer *vt, vtok_work *w, int B, int to_quant_input) {
    tensor img = tensor_head0(w->d_img, B), f = tensor_head0(w->d_feats, B);
    siglip_forward(vt->enc, w->acts, &img, &f);
    if (!vt->proj || !to_quant_input) return f;
    tensor q = tensor_head0(w->d_qin, B);
    proj_block_forward(vt->proj, w->pacts, &f, &q);
    return q;
}
#endif

void vision_tokenizer_features(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *feats) {
#ifdef ASVR_HAVE_CUDA
    if (vt->opts.device == NN_CUDA) {
        dev_upload(vt, w, B, images);
        tensor f = dev_forward(vt, w, B, 0);
        op_read_f32(&f, feats);
        return;
    }
#endif
    run_features(vt, w, B, images, feats);
}

void vision_tokenizer_quant_input(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *out) {
#ifdef ASVR_HAVE_CUDA
    if (vt->opts.device == NN_CUDA) {
        dev_upload(vt, w, B, images);
        tensor q = dev_forward(vt, w, B, 1);
        op_read_f32(&q, out);
        return;
    }
#endif
    run_quant_input(vt, w, B, images, out);
}

void vision_tokenizer_encode(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, uint16_t *codes) {
    int64_t N = vision_tokenizer_positions(vt), C = vt->cfg.embed_dim, D = vt->cfg.depth;
#ifdef ASVR_HAVE_CUDA
    if (vt->opts.device == NN_CUDA) {
        dev_upload(vt, w, B, images);
        double t0 = asvr_now();
        tensor q = dev_forward(vt, w, B, 1);
        tensor cd = tensor_head0(w->d_codes, B * N);
        rvq_encode(vt->q, w->rw, &q, &cd);
        nn_device_sync(NN_CUDA);
        double t1 = asvr_now();
        tensor hc = tensor_make("codes", NN_U16, NN_CPU, cd.ndim, cd.shape, codes);
        op_transfer(&hc, &cd);
        w->times.compute_s += t1 - t0;
        w->times.download_s += asvr_now() - t1;
        w->times.batches++;
        w->times.images += B;
        return;
    }
#endif
    double t0 = asvr_now();
    float *q = run_quant_input(vt, w, B, images, NULL);
    tensor x = tensor_make("features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, C}, q);
    tensor cd = tensor_make("codes", NN_U16, NN_CPU, 3, (int64_t[]){B, N, D}, codes);
    rvq_encode(vt->q, w->rw, &x, &cd);
    w->times.compute_s += asvr_now() - t0;
    w->times.batches++;
    w->times.images += B;
}
