/* setup.c — a run's setup (trainer.h): the run-time choices applied to the model config, the model
 * and its frozen parts, the initial weights, the data, the optimizer, the activations and the memory
 * plan. `asvr-train plan` shares the choices, the model build and the memory figures. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/ops.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "checkpoint.h"
#include "io/json_stream.h"
#include "io/safetensors.h"
#include "model/vision_tokenizer.h"
#include "store/code_store.h"
#include "trainer.h"

/* ---- choices, model, memory (shared with plan) ------------------------------------------------- */

void run_choices_default(run_choices *c) {
    memset(c, 0, sizeof *c);
    c->stage = "pt";
    c->visual_loss = "semantic";
    c->input = "continuous";
    c->attention = "auto";
    c->precision = "auto";
    c->tower_dtype = "auto";
}

static int one_of(const char *v, const char *a, const char *b, const char *c) {
    return !strcmp(v, a) || !strcmp(v, b) || (c && !strcmp(v, c));
}

int run_choices_apply(const run_choices *c, const char *config_json, nn_device dev, asvr_config *mc, asvr_error *err) {
    if (!one_of(c->stage, "pt", "it", NULL)) return asvr_err_set(err, "--stage must be pt or it"), -2;
    int want_sem = !strcmp(c->visual_loss, "semantic") || !strcmp(c->visual_loss, "both");
    int want_app = !strcmp(c->visual_loss, "appearance") || !strcmp(c->visual_loss, "both");
    if (!want_sem && !want_app && strcmp(c->visual_loss, "none"))
        return asvr_err_set(err, "--visual-loss must be none, semantic, appearance or both"), -2;
    if (!one_of(c->input, "continuous", "discrete", NULL)) return asvr_err_set(err, "--input must be continuous or discrete"), -2;
    if (!one_of(c->attention, "auto", "kept", "flash")) return asvr_err_set(err, "--attention must be auto, kept or flash"), -2;
    if (!one_of(c->tower_dtype, "auto", "f32", "bf16")) return asvr_err_set(err, "--tower-dtype must be auto, f32 or bf16"), -2;
    if (dev != NN_CUDA && !strcmp(c->tower_dtype, "bf16"))
        return asvr_err_set(err, "--tower-dtype bf16 needs --device cuda (the CPU backend computes in f32)"), -2;
    if (!one_of(c->precision, "auto", "f32", "bf16")) return asvr_err_set(err, "--precision must be auto, f32 or bf16"), -2;
    if (dev != NN_CUDA && !strcmp(c->precision, "bf16"))
        return asvr_err_set(err, "--precision bf16 needs --device cuda (the CPU backend computes in f32)"), -2;
    if (c->recompute > 0 && c->recompute_list) return asvr_err_set(err, "give --recompute or --recompute-layers, not both"), -2;
    if (c->head_chunk < 0) return asvr_err_set(err, "--head-chunk must be >= 0"), -2;
    if (asvr_config_from_json(config_json, mc, err) < 0) return asvr_err_prefix(err, "model config");
    if (want_sem && !mc->has_head)
        return asvr_err_set(err, "the model config has no visual_head (add one, or pass --visual-loss none)");
    if (want_app && !mc->has_app_head)
        return asvr_err_set(err, "--visual-loss %s but the model config has no visual_head_appearance (add one, or give "
                                 "--codebooks-app a vision tokenizer file: its depth, codebook size and width then make "
                                 "one from visual_head)", c->visual_loss);
    mc->has_head = want_sem;
    mc->has_app_head = want_app;
    mc->input_discrete = !strcmp(c->input, "discrete");
    if (mc->input_discrete && mc->n_scales > 0)
        return asvr_err_set(err, "--input discrete reads codes, not images: the model config's vision \"scales\" (S2) "
                                 "apply to the continuous input tower only"), -2;
    mc->flash_attention = !strcmp(c->attention, "auto") ? dev == NN_CUDA : !strcmp(c->attention, "flash");
    if (asvr_config_set_recompute(mc, (int)c->recompute, c->recompute_list, err) < 0)
        return asvr_err_prefix(err, "the LLM has %d layers", mc->llm.n_layers), -2;
    mc->tower_bf16 = dev == NN_CUDA && strcmp(c->tower_dtype, "f32") != 0;
    mc->compute_bf16 = dev == NN_CUDA && strcmp(c->precision, "f32") != 0;
    mc->head_chunk = (int)(c->head_chunk > 1 << 30 ? 1 << 30 : c->head_chunk);
    return 0;
}

char *run_config_with_app_head(const char *config_json, const char *visual_loss, const char *app_tokenizer, asvr_error *err) {
    int want_app = !strcmp(visual_loss, "appearance") || !strcmp(visual_loss, "both");
    json_error_t je;
    json_t *cfg = want_app && app_tokenizer ? json_loads(config_json, 0, &je) : NULL;
    json_t *vh = cfg ? json_object_get(cfg, "visual_head") : NULL;
    if (!json_is_object(vh) || json_object_get(cfg, "visual_head_appearance")) {
        json_decref(cfg); /* nothing to add (a config that does not parse is reported by run_choices_apply) */
        return asvr_strdup(config_json);
    }
    safetensors *st;
    if (safetensors_open(app_tokenizer, &st, err) < 0) {
        json_decref(cfg);
        return NULL;
    }
    const char *meta = safetensors_metadata(st, VTOK_META_KEY);
    vtok_config tc;
    int ok = meta && vtok_config_parse(meta, &tc, err) == 0;
    safetensors_close(st);
    if (!ok) { /* bare codebooks: the config must say how the head is shaped */
        json_decref(cfg);
        return asvr_strdup(config_json);
    }
    json_t *va = json_deep_copy(vh);
    json_object_set_new(va, "depth", json_integer(tc.depth));
    json_object_set_new(va, "codebook_size", json_integer(tc.codebook_size));
    json_object_set_new(va, "code_dim", json_integer(tc.embed_dim));
    json_object_set_new(cfg, "visual_head_appearance", va);
    char *text = json_dumps(cfg, JSON_COMPACT);
    LOG_INFO("visual_head_appearance: visual_head's shape with depth %d, codebook size %d and code width %d from '%s'",
             tc.depth, tc.codebook_size, tc.embed_dim, app_tokenizer);
    json_decref(cfg);
    return text;
}

void run_build_model(asvr_model *m, const asvr_config *mc, int stage_it, nn_device dev, int rank, int world, int zero,
                     int64_t bucket_elems) {
    asvr_model_init(m, mc);
    param_set_trainable(&m->ps, "", 1);
    if (!stage_it) param_set_trainable(&m->ps, "llm.", 0);
    param_set_set_device(&m->ps, dev);
    dp_configure(&m->ps, rank, world, zero, bucket_elems);
    param_set_commit(&m->ps);
}

/* Bytes of the SigLIP tower's weights up to the tap layer (esize bytes per value: 4 f32, 2 bf16), and
 * of its activations for n images (the arenas model/siglip.c plans on cuda: im2col columns, seven [N, C]
 * buffers, the MLP, in the tower's dtype; the f32 attention probabilities [n, heads, N, N]), plus the
 * step's f32 input images [n, 3, S, S]. With S2 scales the tower runs on n x tiles-per-image tiles, the input images are
 * at the largest scale, and model/s2.c's buffers come on top. */
static void tower_bytes(const asvr_config *c, int n_images, double esize, double *weights, double *acts) {
    const siglip_config *v = &c->vision;
    double C = v->hidden, I = v->intermediate, p = v->patch_size, N = siglip_num_patches(v), S = asvr_input_size(c);
    double per_layer = 4 * (C * C + C) + 2 * 2 * C + (C * I + I) + (I * C + C);
    double n = c->n_scales > 0 ? (double)n_images * s2_tiles_per_image(c->scales, c->n_scales, v->image_size) : n_images;
    *weights = esize * (C * 3 * p * p + C + N * C + v->tap * per_layer);
    *acts = esize * (n * N * (3 * p * p + 7 * C + I)) + 4.0 * (n * v->heads * N * N + n_images * 3.0 * S * S);
    if (c->n_scales > 0) *acts += s2_buffer_bytes(v, c->scales, c->n_scales, n_images, esize);
}

void run_memory_of(const asvr_model *m, const optim *o, const dp *d, const asvr_acts *a, int max_images,
                   int tower_bf16, run_memory *r) {
    const asvr_config *c = &m->c;
    size_t v, cp, g;
    param_set_bytes(&m->ps, &v, &cp, &g);
    memset(r, 0, sizeof *r);
    r->values = (double)v, r->compute = (double)cp, r->grads = (double)g;
    r->optimizer = (double)optim_bytes(o);
    r->step_grad = d ? (double)dp_bytes(d) : 0;
    r->activations = (double)asvr_acts_bytes(a);
    if (!c->input_discrete) tower_bytes(c, max_images, tower_bf16 ? 2.0 : 4.0, &r->tower_weights, &r->tower_acts);
    if (c->has_head || c->input_discrete) r->codebooks = 4.0 * c->head.depth * (double)c->head.codebook_size * c->head.code_dim;
    if (c->has_app_head) r->codebooks += 4.0 * c->head_app.depth * (double)c->head_app.codebook_size * c->head_app.code_dim;
    r->total = r->values + r->compute + r->grads + r->optimizer + r->step_grad + r->activations + r->tower_weights +
               r->tower_acts + r->codebooks;
}

/* ---- the run ------------------------------------------------------------------------------------ */

/* Loads the parameters whose names start with `ours` from st, where they are named
 * file_prefix + the rest of the name ("llm." ↔ "" for an HF LLaMA checkpoint). */
static int load_subset(param_set *ps, const safetensors *st, const char *ours, const char *file_prefix, asvr_error *err) {
    size_t n = strlen(ours);
    int loaded = 0;
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        if (strncmp(p->name, ours, n) != 0) continue;
        char key[256];
        snprintf(key, sizeof key, "%s%s", file_prefix, p->name + n);
        const st_tensor *t = safetensors_find(st, key);
        if (!t) return asvr_err_set(err, "tensor '%s' (for %s) is missing", key, p->name);
        if (t->numel != p->numel || t->ndim != p->ndim)
            return asvr_err_set(err, "tensor '%s' has %lld elements in %d dims, %s needs %lld", key, (long long)t->numel,
                                t->ndim, p->name, (long long)p->numel);
        float *host = asvr_malloc(sizeof(float) * (size_t)p->numel, "a host staging buffer (one tensor)");
        int rc = st_tensor_to_f32(t, host, err);
        if (rc == 0) param_set_write(ps, p, host);
        free(host);
        if (rc < 0) return -1;
        loaded++;
    }
    return loaded;
}

/* 1 when path is a vision tokenizer file (its metadata has the tokenizer config). */
static int is_tokenizer_file(const char *path) {
    safetensors *st;
    asvr_error err;
    if (safetensors_open(path, &st, &err) < 0) return 0;
    int has = safetensors_metadata(st, VTOK_META_KEY) != NULL;
    safetensors_close(st);
    return has;
}

/* The model config: --config, or the one recorded in the newest checkpoint. */
static char *model_config_text(const train_opts *o, const char *ckpt, const asvr_cli *cli) {
    asvr_error err;
    if (o->config) {
        uint8_t *data;
        size_t n;
        if (asvr_read_file(o->config, &data, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        return (char *)data;
    }
    char *text = NULL;
    if (ckpt) {
        char *p = asvr_path_join(ckpt, "state.json");
        json_t *s = json_read_path(p, (size_t)64 << 20, &err);
        free(p);
        if (!s) ASVR_FATAL("", "%s", err.msg);
        json_t *cfg = json_object_get(s, "model_config");
        if (cfg) text = json_dumps(cfg, JSON_COMPACT);
        json_decref(s);
    }
    if (!text) asvr_cli_usage_error(cli, "--config is required for a new run");
    return text;
}

/* The codes must come from the tokenizer whose codebooks the head embeds (when the file says). */
static void check_codes_tokenizer(const char *codebooks, const char *codes, const char *what) {
    if (!is_tokenizer_file(codebooks)) return;
    asvr_error err;
    char fp[17];
    code_store *cs;
    if (vision_tokenizer_fingerprint_file(codebooks, fp, &err) < 0 || code_store_open(codes, &cs, &err) < 0)
        ASVR_FATAL("", "%s", err.msg);
    if (strcmp(fp, code_store_get_meta(cs)->tokenizer_fingerprint) != 0)
        ASVR_FATAL("pass the tokenizer file that made the code store", "%s '%s' (tokenizer %s) was not made by '%s' (%s)",
                   what, codes, code_store_get_meta(cs)->tokenizer_fingerprint, codebooks, fp);
    code_store_close(cs);
}

static void load_codebooks(const char *path, int app, asvr_model *m) {
    asvr_error err;
    safetensors *st;
    if (safetensors_open(path, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    const char *name = safetensors_find(st, "codebooks") ? "codebooks" : "quantizer.codebooks.";
    int r = app ? asvr_model_load_app_codebooks(m, st, name, &err) : asvr_model_load_codebooks(m, st, name, &err);
    if (r < 0) ASVR_FATAL("", "'%s': %s", path, err.msg);
    safetensors_close(st);
}

/* The frozen parts: the input tower, the codebooks (checked against the code stores), and for
 * --text-only-visual reference the codes the tokenizer gives a zero image. */
static void load_frozen(trainer *t, const asvr_cli *cli) {
    const train_opts *o = &t->o;
    asvr_model *m = &t->m;
    asvr_error err;
    if (!t->mc.input_discrete) {
        if (!o->vision) asvr_cli_usage_error(cli, "--vision is required (or --input discrete)");
        safetensors *st;
        if (safetensors_open(o->vision, &st, &err) < 0 || asvr_model_load_tower(m, st, o->vision_prefix, &err) < 0)
            ASVR_FATAL("check --vision and --vision-prefix", "%s", err.msg);
        safetensors_close(st);
    }
    if (t->mc.has_head || t->mc.input_discrete) {
        if (!o->codebooks) asvr_cli_usage_error(cli, "--codebooks is required for the visual loss and for --input discrete");
        load_codebooks(o->codebooks, 0, m);
    }
    if (t->mc.has_app_head) {
        load_codebooks(o->codebooks_app, 1, m);
        check_codes_tokenizer(o->codebooks_app, o->codes_app, "the appearance code store");
    }
    int ref_text_only = !strcmp(o->text_only_visual, "reference");
    if (!ref_text_only && strcmp(o->text_only_visual, "none")) asvr_cli_usage_error(cli, "--text-only-visual must be none or reference");
    if (t->mc.has_head || t->mc.input_discrete) check_codes_tokenizer(o->codebooks, o->codes, "the code store");
    if (ref_text_only && t->mc.has_head) {
        vision_tokenizer *vt;
        if (vision_tokenizer_load(o->codebooks, &vt, &err) < 0)
            ASVR_FATAL("--text-only-visual reference needs --codebooks to be a full tokenizer file", "%s", err.msg);
        int S = vision_tokenizer_config(vt)->enc.image_size, P = vision_tokenizer_positions(vt);
        CHECK(P == t->mc.image_positions && vision_tokenizer_config(vt)->depth == t->mc.head.depth, "",
              "the tokenizer's %d positions x %d depths do not match the model's", P, vision_tokenizer_config(vt)->depth);
        float *zeros = asvr_calloc((size_t)3 * S * S, sizeof(float), "a zero image");
        t->zero_codes = asvr_malloc(sizeof(uint16_t) * (size_t)P * t->mc.head.depth, "the zero image's codes");
        vtok_work *w = vtok_work_new(vt, 1);
        vision_tokenizer_encode(vt, w, 1, zeros, t->zero_codes);
        vtok_work_free(w);
        vision_tokenizer_free(vt);
        free(zeros);
    }
}

/* Initial values of a new run: random (done at build), then --llm for llm.*, then --init for whatever
 * groups it holds. */
static void load_initial(trainer *t) {
    const train_opts *o = &t->o;
    asvr_model *m = &t->m;
    asvr_error err;
    if (o->llm) {
        safetensors *st;
        if (safetensors_open(o->llm, &st, &err) < 0) ASVR_FATAL("--llm takes HF LLaMA or Mistral weights: a .safetensors file or a sharded checkpoint's .index.json", "%s", err.msg);
        if (load_subset(&m->ps, st, "llm.", "", &err) < 0)
            ASVR_FATAL("--llm takes HF LLaMA or Mistral weights: a .safetensors file or a sharded checkpoint's .index.json",
                       "--llm '%s': %s", o->llm, err.msg);
        safetensors_close(st);
    }
    if (!o->init) return;
    safetensors *st;
    if (safetensors_open(o->init, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    int got = 0;
    const char *groups[] = {"llm.", "mm_projector.", "visual_head."};
    for (int g = 0; g < 3; g++) {
        int has = 0;
        for (int i = 0; i < m->ps.n && !has; i++)
            if (!strncmp(m->ps.v[i]->name, groups[g], strlen(groups[g]))) has = safetensors_find(st, m->ps.v[i]->name) != NULL;
        if (!has) continue;
        int r = load_subset(&m->ps, st, groups[g], groups[g], &err);
        if (r < 0) ASVR_FATAL("", "'%s': %s", o->init, err.msg);
        got += r;
    }
    LOG_INFO("init: %d tensors from '%s'", got, o->init);
    safetensors_close(st);
}

/* Mistral's sliding attention window is not implemented; below it, it changes nothing. Attention
 * restarts per sample, so only a sample longer than the window is refused (not --max-len). */
static void check_sliding_window(const char *packed, int window, int max_len) {
    if (window <= 0 || max_len <= window) return;
    packed_store *ps;
    asvr_error err;
    if (packed_store_open(packed, &ps, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    uint64_t n = packed_store_info(ps)->n_samples;
    for (uint64_t i = 0; i < n; i++) {
        packed_sample s;
        if (packed_sample_meta(ps, i, &s, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        if (s.positions > (uint32_t)window)
            ASVR_FATAL("pack with --max-len at most the window, or drop the sample",
                       "'%s': sample %llu (id '%s', JSON index %llu) is %u positions long, longer than the model's "
                       "sliding attention window of %d, which this build does not implement",
                       packed, (unsigned long long)i, s.id, (unsigned long long)s.source_index, s.positions, window);
    }
    packed_store_close(ps);
}

static void open_data(trainer *t) {
    const train_opts *o = &t->o;
    const asvr_config *mc = &t->mc;
    data_config dc = {o->packed, o->codes, o->image_root ? o->image_root : "", mc->has_app_head ? o->codes_app : NULL,
                      (int)o->rows, (uint64_t)o->seed, !mc->input_discrete,
                      asvr_input_size(mc), {0}, {0}, {0}, (int)o->threads};
    memcpy(dc.pad, mc->image_pad, sizeof dc.pad); /* int(image_mean × 255), as the reference pads */
    memcpy(dc.mean, mc->image_mean, sizeof dc.mean);
    memcpy(dc.std, mc->image_std, sizeof dc.std);
    asvr_error err;
    if (data_open(&dc, &t->dl, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    int64_t rows = data_rows(t->dl), n_samples = data_samples(t->dl);
    int64_t per_step = o->rows * o->accum * t->world; /* rows of a step with a fixed accumulation */
    int64_t steps_per_epoch = o->accum > 0 ? (rows + per_step - 1) / per_step
                                           : (n_samples + o->global_batch - 1) / o->global_batch;
    t->total = o->steps > 0 ? o->steps : steps_per_epoch * o->epochs;
    t->T = data_max_len(t->dl);
    check_sliding_window(o->packed, t->mc.llm.sliding_window, t->T);
}

/* A recorded fingerprint against the one of the data given now: resuming on other data is refused. */
static void same_data(const trainer *t, const char *key, const char *then, const char *now, const char *flag,
                      const char *path) {
    if (now && strcmp(then, now) != 0)
        ASVR_FATAL("resume with the same data, or train into a new --out",
                   "checkpoint '%s' was trained with other data than %s '%s' gives now (%s %s, now %s)", t->ckpt, flag,
                   path, key, then, now);
}

static void resume(trainer *t) {
    asvr_error err;
    json_t *state;
    if (checkpoint_load(t->ckpt, &t->m.ps, &t->opt, &state, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    checkpoint_state cs;
    if (checkpoint_state_parse(state, data_rows(t->dl), &cs, &err) < 0)
        ASVR_FATAL("the checkpoint is damaged: remove it to resume from the one before", "checkpoint '%s': %s", t->ckpt,
                   err.msg);
    t->step = cs.step;
    t->opt.step = t->step;
    same_data(t, "packed_source_fingerprint", cs.packed_fp, data_packed_fingerprint(t->dl), "--packed", t->o.packed);
    same_data(t, "codes_tokenizer_fingerprint", cs.codes_fp, data_codes_fingerprint(t->dl), "--codes", t->o.codes);
    if (cs.blas_threads > 0 && cs.blas_threads != trainer_blas_threads() && t->dev == NN_CPU)
        LOG_WARN("checkpoint '%s' was trained with %lld BLAS threads, this run has %d: the CPU's sums split differently, "
                 "so the losses will not equal an uninterrupted run's (set OPENBLAS_NUM_THREADS=%lld to match)",
                 t->ckpt, (long long)cs.blas_threads, trainer_blas_threads(), (long long)cs.blas_threads);
    data_set_cursor(t->dl, cs.epoch, cs.index);
    LOG_INFO("resuming from '%s' at step %lld", t->ckpt, (long long)t->step);
    json_decref(state);
}

/* Model FLOPs per token for the MFU column: matmul FLOPs only, 6 per parameter that trains (forward,
 * input and weight gradients) and 4 per frozen LLM parameter (forward and input gradients), counted
 * over the LLM (without the embedding lookup), projector and heads as if every parameter saw every
 * token; attention scores and the frozen tower are left out. An estimate, for comparing runs. */
static double model_flops_per_token(const param_set *ps) {
    double f = 0;
    for (int i = 0; i < ps->n; i++) {
        const param *p = ps->v[i];
        if (strstr(p->name, "embed_tokens")) continue;
        f += (p->g ? 6.0 : 4.0) * (double)p->numel;
    }
    return f;
}

static void print_plan(const trainer *t) {
    const train_opts *o = &t->o;
    const run_memory *r = &t->mem;
    if (asvr_log_get_level() >= ASVR_LOG_INFO) {
        asvr_model_print(&t->m, stderr);
        asvr_acts_print_plan(t->acts, stderr);
    }
    const double M = 1048576.0;
    LOG_INFO("memory plan on %s (%s compute) for %lld rows x %d positions, %d images: parameters %.1f MiB (with "
             "compute copies), gradients %.1f MiB, optimizer state %.1f MiB, step gradient %.1f MiB, codebooks %.1f MiB, "
             "activations %.1f MiB (input tower apart: about %.1f MiB); total %.2f GiB per rank",
             nn_device_name(t->dev), t->mc.compute_bf16 ? "bf16" : "f32", (long long)o->rows, t->T, t->max_images,
             (r->values + r->compute) / M, r->grads / M, r->optimizer / M, r->step_grad / M, r->codebooks / M, r->activations / M,
             (r->tower_weights + r->tower_acts) / M, (r->total - r->tower_weights - r->tower_acts) / (M * 1024.0));
    if (o->accum > 0)
        LOG_INFO("train: stage %s, %lld rows, %lld micro-batches of %lld rows per step, %lld steps (warmup %lld), lr %g, wd %g, clip %g",
                 o->rc.stage, (long long)data_rows(t->dl), (long long)o->accum, (long long)o->rows, (long long)t->total,
                 (long long)t->opt.c.warmup_steps, o->lr, o->weight_decay, o->clip_norm);
    else
        LOG_INFO("train: stage %s, %lld samples in %lld rows, %lld samples per step (micro-batches of %lld rows), %lld steps "
                 "(warmup %lld), lr %g, wd %g, clip %g", o->rc.stage, (long long)data_samples(t->dl),
                 (long long)data_rows(t->dl), (long long)o->global_batch, (long long)o->rows, (long long)t->total,
                 (long long)t->opt.c.warmup_steps, o->lr, o->weight_decay, o->clip_norm);
}

/* The ranks: one process, or one of a launcher's (comm.h); on cuda each rank takes its device. */
static void start_ranks(trainer *t, const asvr_cli *cli) {
    const train_opts *o = &t->o;
    comm_options co = {.device = -1, .timeout_s = o->comm_timeout, .device_backend = NULL};
    t->comm = comm_init(&co);
    t->rank = comm_rank(t->comm);
    t->world = comm_size(t->comm);
    t->zero = o->zero >= 0 ? (int)o->zero : t->world > 1 ? 2 : 0;
    if (t->zero > 2) asvr_cli_usage_error(cli, "--zero must be 0, 1 or 2");
    if (t->rank > 0 && asvr_log_get_level() == ASVR_LOG_INFO) asvr_log_set_level(ASVR_LOG_WARN); /* rank 0 speaks */
    if (t->dev == NN_CUDA) comm_cuda_setup(t->comm);
    if (t->world > 1 || t->zero) {
        if (t->rank == 0) comm_print(t->comm, stderr);
        LOG_INFO("data parallel: %d ranks, ZeRO stage %d", t->world, t->zero);
    }
}

/* Sizes the flags ask for, bounded by the data and by the memory there is, before anything large
 * is allocated: usage errors naming the flag. */
static void check_sizes(trainer *t, const asvr_cli *cli) {
    const train_opts *o = &t->o;
    int64_t rows = data_rows(t->dl), n_samples = data_samples(t->dl);
    if (o->threads > asvr_max_threads())
        asvr_cli_usage_error(cli, "--threads %lld: at most %d on this machine (%d cores)", (long long)o->threads,
                             asvr_max_threads(), asvr_num_cores());
    if (o->rows > rows)
        asvr_cli_usage_error(cli, "--rows %lld: the packed store '%s' has %lld rows", (long long)o->rows, o->packed,
                             (long long)rows);
    if (o->accum > 0 && o->accum > rows)
        asvr_cli_usage_error(cli, "--accum %lld: more micro-batches per step than the %lld rows of '%s'",
                             (long long)o->accum, (long long)rows, o->packed);
    /* a step keeps its micro-batches (images decoded) until it is done: at most the whole data set, or
     * the paper's 256 samples when the data set is smaller */
    if (o->accum == 0 && o->global_batch > n_samples && o->global_batch > 256)
        asvr_cli_usage_error(cli, "--global-batch %lld: more than the %lld samples of '%s' (a step would hold the data "
                             "several times over); lower it, or give --accum", (long long)o->global_batch,
                             (long long)n_samples, o->packed);
    /* the activations of one micro-batch, planned without allocating, against the memory there is */
    int max_images = o->max_images > 0 ? (int)o->max_images : asvr_max_images(&t->mc, (int)o->rows, t->T);
    nn_arena_set_plan_only(1);
    asvr_acts *a = asvr_acts_new(&t->m, (int)o->rows, t->T, max_images);
    nn_arena_set_plan_only(0);
    double need = (double)asvr_acts_bytes(a);
    asvr_acts_free(a);
    size_t used = 0, total = 0;
    double have = 0;
    if (t->dev == NN_CPU) have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    else if (nn_device_mem_used(t->dev, &used, &total)) have = (double)total;
    const double G = 1024.0 * 1024.0 * 1024.0;
    if (have > 0 && need > have)
        asvr_cli_usage_error(cli, "--rows %lld x %d positions with %d images (--max-images) need %.1f GiB of activations; "
                             "the %s has %.1f GiB: lower --rows or --max-images",
                             (long long)o->rows, t->T, max_images, need / G, nn_device_name(t->dev), have / G);
}

void trainer_setup(trainer *t, const train_opts *o, const asvr_cli *cli) {
    memset(t, 0, sizeof *t);
    t->o = *o;
    asvr_error err;
    const char *why;
    if (nn_device_from_name(o->device, &t->dev, &why) < 0) asvr_cli_usage_error(cli, "%s", why);
    start_ranks(t, cli);
    if (asvr_mkdir_p(o->out, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    int64_t ckpt_step;
    checkpoint_find_latest(o->out, &t->ckpt, &ckpt_step);
    t->config_text = model_config_text(o, t->ckpt, cli);
    char *full = run_config_with_app_head(t->config_text, o->rc.visual_loss, o->codebooks_app, &err);
    if (!full) ASVR_FATAL("--codebooks-app must be the appearance tokenizer file", "%s", err.msg);
    free(t->config_text);
    t->config_text = full;
    int r = run_choices_apply(&o->rc, t->config_text, t->dev, &t->mc, &err);
    if (r == -2) asvr_cli_usage_error(cli, "%s", err.msg);
    if (r < 0) ASVR_FATAL("check the model config and the flags", "%s", err.msg);

    run_build_model(&t->m, &t->mc, !strcmp(o->rc.stage, "it"), t->dev, t->rank, t->world, t->zero, o->bucket_elems);
    param_set_init_random(&t->m.ps, (uint64_t)o->seed);
    load_frozen(t, cli);
    if (!t->ckpt) load_initial(t);
    open_data(t);
    check_sizes(t, cli);
    optim_config oc = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->clip_norm, t->total,
                       warmup_steps_from_ratio(o->warmup_ratio, t->total)};
    dp_init(&t->dp, t->comm, 0, 1, &t->m.ps, t->zero, o->accum != 1, &t->opt, &oc);
    t->max_images = o->max_images > 0 ? (int)o->max_images : asvr_max_images(&t->mc, (int)o->rows, t->T);
    t->acts = asvr_acts_new(&t->m, (int)o->rows, t->T, t->max_images);
    if (t->ckpt) resume(t);
    /* --llm, --init and the resume wrote master values directly: the bf16 copies the GEMMs read follow
     * them (frozen parameters are never touched again, so this is their only refresh) */
    param_set_sync_compute(&t->m.ps);
    run_memory_of(&t->m, &t->opt, &t->dp, t->acts, t->max_images, t->mc.tower_bf16, &t->mem);
    t->flops_per_token = model_flops_per_token(&t->m.ps);
    print_plan(t);
}

void trainer_free(trainer *t) {
    asvr_acts_free(t->acts);
    dp_free(&t->dp);
    optim_free(&t->opt);
    data_close(t->dl);
    asvr_model_free(&t->m);
    free(t->config_text);
    free(t->ckpt);
    free(t->zero_codes);
    comm_free(t->comm);
    memset(t, 0, sizeof *t);
}
