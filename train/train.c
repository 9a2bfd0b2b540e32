/* asvr-train train — the training loop: data → forward/backward per micro-batch → AdamW step,
 * with logging, checkpoints and exact resume. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "base/progress.h"
#include "checkpoint.h"
#include "commands.h"
#include "store/batches.h"
#include "io/safetensors.h"
#include "model/asvr.h"
#include "model/vision_tokenizer.h"
#include "store/code_store.h"
#include "nn/ops.h"
#include "optim.h"
#include "prefetch.h"

typedef struct train_opts {
    const char *stage, *config, *packed, *codes, *codes_app, *codebooks_app, *image_root, *vision, *vision_prefix,
        *codebooks, *llm, *init,
        *out, *visual_loss, *input, *log_path, *text_only_visual, *device, *attention, *tower_dtype,
        *precision, *recompute_list;
    int64_t rows, accum, global_batch, steps, epochs, save_every, threads, seed, max_images, stop_after, recompute;
    double lr, warmup_ratio, weight_decay, clip_norm, beta1, beta2, eps, peak_tflops;
    int no_prefetch;
} train_opts;

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
        if (t->numel != tensor_numel(p->w) || t->ndim != p->w->ndim)
            return asvr_err_set(err, "tensor '%s' has %lld elements in %d dims, %s needs %lld", key, (long long)t->numel,
                                t->ndim, p->name, (long long)tensor_numel(p->w));
        if (param_tensor_load(p->w, t, err) < 0) return -1;
        loaded++;
    }
    return loaded;
}

static double now_s(void) { return asvr_now(); }

/* 1 when path is a vision tokenizer file (its metadata has the tokenizer config). */
static int is_tokenizer_file(const char *path) {
    safetensors *st;
    asvr_error err;
    if (safetensors_open(path, &st, &err) < 0) return 0;
    int has = safetensors_metadata(st, VTOK_META_KEY) != NULL;
    safetensors_close(st);
    return has;
}

int cmd_train(int argc, char **argv) {
    train_opts o = {.text_only_visual = "none", .stage = "pt", .vision_prefix = "vision_model.", .visual_loss = "semantic", .input = "continuous",
                    .rows = 1, .accum = 0, .global_batch = 0, .epochs = 1, .save_every = 0, .seed = 0, .max_images = 0,
                    .lr = -1, .warmup_ratio = 0.03, .weight_decay = 0, .clip_norm = 0, .beta1 = 0.9, .beta2 = 0.999,
                    .eps = 1e-8, .device = "cpu", .attention = "auto", .tower_dtype = "auto", .precision = "auto",
                    .peak_tflops = 989};
    const asvr_opt opts[] = {
        {"stage", ASVR_OPT_STR, &o.stage, "pt|it", "pt trains mm_projector + visual head; it also the LLM (default pt)"},
        {"config", ASVR_OPT_STR, &o.config, "FILE", "model config JSON (llm, vision, visual_head); default: the checkpoint's"},
        {"packed", ASVR_OPT_STR, &o.packed, "FILE", "packed store (asvr-pack build)"},
        {"codes", ASVR_OPT_STR, &o.codes, "STORE", "code store of the same images and policy (asvr-tokenize encode)"},
        {"codes-app", ASVR_OPT_STR, &o.codes_app, "STORE", "appearance tokenizer's code store (--visual-loss appearance|both)"},
        {"codebooks-app", ASVR_OPT_STR, &o.codebooks_app, "FILE", "the appearance tokenizer file (its codebooks)"},
        {"image-root", ASVR_OPT_STR, &o.image_root, "DIR", "folder the image keys are relative to"},
        {"vision", ASVR_OPT_STR, &o.vision, "FILE", "frozen SigLIP input tower (safetensors, HF names)"},
        {"vision-prefix", ASVR_OPT_STR, &o.vision_prefix, "P", "name prefix of the tower's tensors (default vision_model.)"},
        {"codebooks", ASVR_OPT_STR, &o.codebooks, "FILE", "vision tokenizer file whose codebooks feed the visual head"},
        {"llm", ASVR_OPT_STR, &o.llm, "FILE", "HF LLaMA weights (.safetensors or .index.json) for llm.*"},
        {"init", ASVR_OPT_STR, &o.init, "FILE", "parameters to start from (e.g. a stage-pt checkpoint's model.safetensors)"},
        {"out", ASVR_OPT_STR, &o.out, "DIR", "run folder: checkpoints, log.jsonl (resumes from its newest checkpoint)"},
        {"visual-loss", ASVR_OPT_STR, &o.visual_loss, "none|semantic|appearance|both",
         "none = the LLaVA baseline; semantic (default) = ASVR; appearance / both = Table 1's App. and Dual rows"},
        {"input", ASVR_OPT_STR, &o.input, "continuous|discrete", "projector input: SigLIP features or summed codebook rows"},
        {"text-only-visual", ASVR_OPT_STR, &o.text_only_visual, "none|reference",
         "text-only samples add no visual loss (none, default) or, as the reference, score zero states against a zero image's codes"},
        {"rows", ASVR_OPT_INT, &o.rows, "N", "packed rows per micro-batch (default 1)"},
        {"global-batch", ASVR_OPT_INT, &o.global_batch, "N",
         "samples per optimizer step: micro-batches accumulate until N samples (default 256 for pt, 128 for it)"},
        {"accum", ASVR_OPT_INT, &o.accum, "N", "or a fixed number of micro-batches per step (overrides --global-batch)"},
        {"steps", ASVR_OPT_INT, &o.steps, "N", "optimizer steps (default: --epochs over the packed rows)"},
        {"epochs", ASVR_OPT_INT, &o.epochs, "N", "epochs when --steps is not given (default 1)"},
        {"lr", ASVR_OPT_F64, &o.lr, "X", "peak learning rate (default 1e-3 for pt, 2e-5 for it)"},
        {"warmup-ratio", ASVR_OPT_F64, &o.warmup_ratio, "X", "linear warmup share of the steps (default 0.03)"},
        {"weight-decay", ASVR_OPT_F64, &o.weight_decay, "X", "decoupled weight decay on matrices (default 0)"},
        {"clip-norm", ASVR_OPT_F64, &o.clip_norm, "X", "clip the global gradient norm (default off)"},
        {"save-every", ASVR_OPT_INT, &o.save_every, "N", "checkpoint every N steps (and always at the end)"},
        {"stop-after", ASVR_OPT_INT, &o.stop_after, "N", "stop (with a checkpoint) after N steps of this invocation; rerun to go on"},
        {"no-prefetch", ASVR_OPT_FLAG, &o.no_prefetch, NULL,
         "read and decode each step's data when it is needed instead of during the step before (same losses)"},
        {"seed", ASVR_OPT_INT, &o.seed, "N", "seed of the data order and of random initialisation (default 0)"},
        {"threads", ASVR_OPT_INT, &o.threads, "N", "image decode threads (default: cores)"},
        {"max-images", ASVR_OPT_INT, &o.max_images, "N", "images per micro-batch to plan for (default: from the store)"},
        {"device", ASVR_OPT_STR, &o.device, "cpu|cuda", "where parameters, optimizer state and activations live (default cpu)"},
        {"attention", ASVR_OPT_STR, &o.attention, "auto|kept|flash",
         "LLM attention: kept stores the [rows, heads, T, T] probabilities for the backward, flash only their "
         "log-sum-exp and recomputes them (auto: flash on cuda, kept on cpu)"},
        {"tower-dtype", ASVR_OPT_STR, &o.tower_dtype, "auto|f32|bf16",
         "the frozen input tower's storage on cuda (auto: bf16, as the reference runs it; the cpu is always f32)"},
        {"precision", ASVR_OPT_STR, &o.precision, "auto|f32|bf16",
         "the trained model's compute on cuda: bf16 = bf16 weight copies for the GEMMs, bf16 kept LLM activations "
         "and logits, f32 master weights, gradients and AdamW state; f32 = f32 everywhere (auto: bf16 on cuda; "
         "the cpu is always f32)"},
        {"recompute", ASVR_OPT_INT, &o.recompute, "N",
         "recompute the activations of the first N LLM layers in the backward instead of keeping them (default 0)"},
        {"recompute-layers", ASVR_OPT_STR, &o.recompute_list, "LIST",
         "recompute these LLM layers instead (a comma-separated list of layers and ranges, e.g. 0-15,20)"},
        {"peak-tflops", ASVR_OPT_F64, &o.peak_tflops, "X",
         "peak TFLOP/s of the GPU for the MFU column (default 989: H100/H200 dense bf16)"},
    };
    const asvr_cli cli = {"asvr-train train", "--packed FILE --codes STORE --out DIR [options]",
                          "Trains ASVR (or the text-only baseline) from a packed store and a code store. Each step\n"
                          "prints one line; log.jsonl keeps every step; checkpoints make a rerun resume exactly.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!o.packed || !o.codes || !o.out) asvr_cli_usage_error(&cli, "--packed, --codes and --out are required");
    int stage_it = strcmp(o.stage, "it") == 0;
    if (!stage_it && strcmp(o.stage, "pt") != 0) asvr_cli_usage_error(&cli, "--stage must be pt or it");
    int want_sem = !strcmp(o.visual_loss, "semantic") || !strcmp(o.visual_loss, "both");
    int want_app = !strcmp(o.visual_loss, "appearance") || !strcmp(o.visual_loss, "both");
    if (!want_sem && !want_app && strcmp(o.visual_loss, "none"))
        asvr_cli_usage_error(&cli, "--visual-loss must be none, semantic, appearance or both");
    if (want_app && (!o.codes_app || !o.codebooks_app))
        asvr_cli_usage_error(&cli, "--visual-loss %s needs --codes-app and --codebooks-app", o.visual_loss);
    int discrete = strcmp(o.input, "discrete") == 0;
    if (!discrete && strcmp(o.input, "continuous")) asvr_cli_usage_error(&cli, "--input must be continuous or discrete");
    if (o.rows < 1 || o.accum < 0 || o.global_batch < 0) asvr_cli_usage_error(&cli, "--rows must be >= 1, --accum and --global-batch >= 0");
    if (o.global_batch == 0) o.global_batch = stage_it ? 128 : 256;
    if (o.lr < 0) o.lr = stage_it ? 2e-5 : 1e-3;
    if (o.threads <= 0) o.threads = asvr_num_cores();
    nn_device dev;
    const char *why;
    if (nn_device_from_name(o.device, &dev, &why) < 0) asvr_cli_usage_error(&cli, "%s", why);
    if (!(o.peak_tflops > 0)) asvr_cli_usage_error(&cli, "--peak-tflops must be > 0");
    int flash;
    if (!strcmp(o.attention, "auto")) flash = dev == NN_CUDA;
    else if (!strcmp(o.attention, "flash") || !strcmp(o.attention, "kept")) flash = !strcmp(o.attention, "flash");
    else asvr_cli_usage_error(&cli, "--attention must be auto, kept or flash");
    asvr_error err;
    if (asvr_mkdir_p(o.out, &err) < 0) ASVR_FATAL("", "%s", err.msg);

    /* model config: --config, or the one recorded in the newest checkpoint */
    char *ckpt = NULL;
    int64_t ckpt_step = -1;
    checkpoint_find_latest(o.out, &ckpt, &ckpt_step);
    char *config_text = NULL;
    if (o.config) {
        uint8_t *data;
        size_t n;
        if (asvr_read_file(o.config, &data, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        config_text = (char *)data;
    } else if (ckpt) {
        char *p = asvr_path_join(ckpt, "state.json");
        json_t *s = json_load_file(p, 0, NULL);
        free(p);
        json_t *cfg = json_object_get(s, "model_config");
        if (cfg) config_text = json_dumps(cfg, JSON_COMPACT);
        json_decref(s);
    }
    if (!config_text) asvr_cli_usage_error(&cli, "--config is required for a new run");
    asvr_config mc;
    if (asvr_config_from_json(config_text, &mc, &err) < 0) ASVR_FATAL("check the model config", "%s", err.msg);
    if (want_sem && !mc.has_head) ASVR_FATAL("add a visual_head to the config or pass --visual-loss none", "the model config has no visual_head");
    if (want_app && !mc.has_app_head)
        ASVR_FATAL("add a visual_head_appearance to the config", "--visual-loss %s but the model config has no visual_head_appearance",
                   o.visual_loss);
    mc.has_head = want_sem;
    mc.has_app_head = want_app;
    mc.input_discrete = discrete;
    mc.flash_attention = flash;
    if (o.recompute > 0 && o.recompute_list) asvr_cli_usage_error(&cli, "give --recompute or --recompute-layers, not both");
    if (asvr_config_set_recompute(&mc, (int)o.recompute, o.recompute_list, &err) < 0)
        asvr_cli_usage_error(&cli, "%s (the LLM has %d layers)", err.msg, mc.llm.n_layers);
    if (strcmp(o.tower_dtype, "auto") && strcmp(o.tower_dtype, "f32") && strcmp(o.tower_dtype, "bf16"))
        asvr_cli_usage_error(&cli, "--tower-dtype must be auto, f32 or bf16");
    if (dev != NN_CUDA && !strcmp(o.tower_dtype, "bf16"))
        asvr_cli_usage_error(&cli, "--tower-dtype bf16 needs --device cuda (the CPU backend computes in f32)");
    mc.tower_bf16 = dev == NN_CUDA && strcmp(o.tower_dtype, "f32") != 0;
    if (strcmp(o.precision, "auto") && strcmp(o.precision, "f32") && strcmp(o.precision, "bf16"))
        asvr_cli_usage_error(&cli, "--precision must be auto, f32 or bf16");
    if (dev != NN_CUDA && !strcmp(o.precision, "bf16"))
        asvr_cli_usage_error(&cli, "--precision bf16 needs --device cuda (the CPU backend computes in f32)");
    mc.compute_bf16 = dev == NN_CUDA && strcmp(o.precision, "f32") != 0;

    asvr_model m;
    asvr_model_init(&m, &mc);
    param_set_trainable(&m.ps, "", 1);
    if (!stage_it) param_set_trainable(&m.ps, "llm.", 0);
    param_set_set_device(&m.ps, dev);
    param_set_commit(&m.ps);
    param_set_init_random(&m.ps, (uint64_t)o.seed);

    /* frozen parts */
    if (!discrete) {
        if (!o.vision) asvr_cli_usage_error(&cli, "--vision is required (or --input discrete)");
        safetensors *st;
        if (safetensors_open(o.vision, &st, &err) < 0 || asvr_model_load_tower(&m, st, o.vision_prefix, &err) < 0)
            ASVR_FATAL("check --vision and --vision-prefix", "%s", err.msg);
        safetensors_close(st);
    }
    if (mc.has_head || discrete) {
        if (!o.codebooks) asvr_cli_usage_error(&cli, "--codebooks is required for the visual loss and for --input discrete");
        safetensors *st;
        if (safetensors_open(o.codebooks, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        const char *name = safetensors_find(st, "codebooks") ? "codebooks" : "quantizer.codebooks.";
        if (asvr_model_load_codebooks(&m, st, name, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        safetensors_close(st);
    }
    if (want_app) {
        safetensors *st;
        if (safetensors_open(o.codebooks_app, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        const char *name = safetensors_find(st, "codebooks") ? "codebooks" : "quantizer.codebooks.";
        if (asvr_model_load_app_codebooks(&m, st, name, &err) < 0) ASVR_FATAL("", "'%s': %s", o.codebooks_app, err.msg);
        safetensors_close(st);
        if (is_tokenizer_file(o.codebooks_app)) {
            char fp[17];
            code_store *cs;
            if (vision_tokenizer_fingerprint_file(o.codebooks_app, fp, &err) < 0 || code_store_open(o.codes_app, &cs, &err) < 0)
                ASVR_FATAL("", "%s", err.msg);
            if (strcmp(fp, code_store_get_meta(cs)->tokenizer_fingerprint) != 0)
                ASVR_FATAL("pass the tokenizer file that made the appearance code store", "'%s' was not made by '%s'",
                           o.codes_app, o.codebooks_app);
            code_store_close(cs);
        }
    }
    int ref_text_only = !strcmp(o.text_only_visual, "reference");
    if (!ref_text_only && strcmp(o.text_only_visual, "none")) asvr_cli_usage_error(&cli, "--text-only-visual must be none or reference");
    uint16_t *zero_codes = NULL;
    if ((mc.has_head || discrete) && is_tokenizer_file(o.codebooks)) {
        /* the codes must come from the tokenizer whose codebooks the head embeds */
        char fp[17];
        code_store *cs;
        if (vision_tokenizer_fingerprint_file(o.codebooks, fp, &err) < 0 || code_store_open(o.codes, &cs, &err) < 0)
            ASVR_FATAL("", "%s", err.msg);
        if (strcmp(fp, code_store_get_meta(cs)->tokenizer_fingerprint) != 0)
            ASVR_FATAL("pass the tokenizer file that made the code store", "'%s' (tokenizer %s) was not made by '%s' (%s)",
                       o.codes, code_store_get_meta(cs)->tokenizer_fingerprint, o.codebooks, fp);
        code_store_close(cs);
    }
    if (ref_text_only && mc.has_head) {
        vision_tokenizer *vt;
        if (vision_tokenizer_load(o.codebooks, &vt, &err) < 0)
            ASVR_FATAL("--text-only-visual reference needs --codebooks to be a full tokenizer file", "%s", err.msg);
        int S = vision_tokenizer_config(vt)->enc.image_size, P = vision_tokenizer_positions(vt);
        CHECK(P == mc.image_positions && vision_tokenizer_config(vt)->depth == mc.head.depth, "",
              "the tokenizer's %d positions x %d depths do not match the model's", P, vision_tokenizer_config(vt)->depth);
        float *zeros = asvr_calloc((size_t)3 * S * S, sizeof(float), "a zero image");
        zero_codes = asvr_malloc(sizeof(uint16_t) * (size_t)P * mc.head.depth, "the zero image's codes");
        vtok_work *w = vtok_work_new(vt, 1);
        vision_tokenizer_encode(vt, w, 1, zeros, zero_codes);
        vtok_work_free(w);
        vision_tokenizer_free(vt);
        free(zeros);
    }
    /* initial values: random, then --llm for llm.*, then --init for whatever it holds */
    if (!ckpt) {
        if (o.llm) {
            safetensors *st;
            if (safetensors_open(o.llm, &st, &err) < 0 || load_subset(&m.ps, st, "llm.", "", &err) < 0)
                ASVR_FATAL("pass HF LLaMA weights", "%s", err.msg);
            safetensors_close(st);
        }
        if (o.init) {
            safetensors *st;
            if (safetensors_open(o.init, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
            int got = 0;
            const char *groups[] = {"llm.", "mm_projector.", "visual_head."};
            for (int g = 0; g < 3; g++) {
                char probe[NN_NAME_MAX];
                int has = 0;
                for (int i = 0; i < m.ps.n && !has; i++)
                    if (!strncmp(m.ps.v[i]->name, groups[g], strlen(groups[g]))) {
                        snprintf(probe, sizeof probe, "%s", m.ps.v[i]->name);
                        has = safetensors_find(st, probe) != NULL;
                    }
                if (!has) continue;
                int r = load_subset(&m.ps, st, groups[g], groups[g], &err);
                if (r < 0) ASVR_FATAL("", "'%s': %s", o.init, err.msg);
                got += r;
            }
            LOG_INFO("init: %d tensors from '%s'", got, o.init);
            safetensors_close(st);
        }
    }

    data_config dc = {o.packed, o.codes, o.image_root ? o.image_root : "", want_app ? o.codes_app : NULL, (int)o.rows,
                      (uint64_t)o.seed, !discrete,
                      mc.vision.image_size, {0}, {0}, {127, 127, 127}, (int)o.threads};
    memcpy(dc.mean, mc.image_mean, sizeof dc.mean);
    memcpy(dc.std, mc.image_std, sizeof dc.std);
    data_loader *dl;
    if (data_open(&dc, &dl, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    int64_t rows = data_rows(dl);
    int64_t n_samples = data_samples(dl);
    int64_t steps_per_epoch = o.accum > 0 ? (rows + o.rows * o.accum - 1) / (o.rows * o.accum)
                                          : (n_samples + o.global_batch - 1) / o.global_batch;
    int64_t total = o.steps > 0 ? o.steps : steps_per_epoch * o.epochs;
    optim_config oc = {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.clip_norm, total,
                       warmup_steps_from_ratio(o.warmup_ratio, total)};
    optim opt;
    optim_init(&opt, &oc, &m.ps);
    int T = data_max_len(dl);
    int max_images = o.max_images > 0 ? (int)o.max_images : (int)o.rows * (T / mc.image_positions + 1);
    asvr_acts *acts = asvr_acts_new(&m, (int)o.rows, T, max_images);

    int64_t step = 0;
    if (ckpt) {
        json_t *state;
        if (checkpoint_load(ckpt, &m.ps, &opt, &state, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        step = json_integer_value(json_object_get(state, "step"));
        opt.step = step;
        data_set_cursor(dl, json_integer_value(json_object_get(state, "data_epoch")),
                        json_integer_value(json_object_get(state, "data_index")));
        LOG_INFO("resuming from '%s' at step %lld", ckpt, (long long)step);
        json_decref(state);
    }
    /* --llm, --init and the resume wrote master values directly: the bf16 copies the GEMMs read follow
     * them (frozen parameters are never touched again, so this is their only refresh) */
    param_set_sync_compute(&m.ps);
    size_t planned_bytes = 0;
    if (asvr_log_get_level() >= ASVR_LOG_INFO) {
        asvr_model_print(&m, stderr);
        asvr_acts_print_plan(acts, stderr);
    }
    {
        size_t pv = nn_arena_bytes(m.ps.values) + (m.ps.compute ? nn_arena_bytes(m.ps.compute) : 0),
               pg = nn_arena_bytes(m.ps.grads), os = nn_arena_bytes(opt.state),
               ac = asvr_acts_bytes(acts), fr = (m.frozen ? nn_arena_bytes(m.frozen) : 0) +
                                             (m.frozen_app ? nn_arena_bytes(m.frozen_app) : 0);
        LOG_INFO("memory plan on %s (%s compute) for %lld rows x %d positions, %d images: parameters %.1f MiB (with "
                 "compute copies), gradients %.1f MiB, "
                 "optimizer state %.1f MiB, codebooks %.1f MiB, activations %.1f MiB (input tower weights apart); total %.2f GiB",
                 nn_device_name(dev), mc.compute_bf16 ? "bf16" : "f32", (long long)o.rows, T, max_images, pv / 1048576.0, pg / 1048576.0, os / 1048576.0, fr / 1048576.0, ac / 1048576.0,
                 (double)(pv + pg + os + fr + ac) / (1024.0 * 1024.0 * 1024.0));
        planned_bytes = pv + pg + os + fr + ac;
    }
    /* Model FLOPs per token for the MFU column: matmul FLOPs only, 6 per parameter that trains (forward,
     * input and weight gradients) and 4 per frozen LLM parameter (forward and input gradients), counted
     * over the LLM (without the embedding lookup), projector and heads as if every parameter saw every
     * token; attention scores and the frozen tower are left out. An estimate, for comparing runs. */
    double flops_per_token = 0;
    for (int i = 0; i < m.ps.n; i++) {
        const param *p = m.ps.v[i];
        if (strstr(p->name, "embed_tokens")) continue;
        flops_per_token += (p->g ? 6.0 : 4.0) * (double)tensor_numel(p->w);
    }
    if (o.accum > 0)
        LOG_INFO("train: stage %s, %lld rows, %lld micro-batches of %lld rows per step, %lld steps (warmup %lld), lr %g, wd %g, clip %g",
                 o.stage, (long long)rows, (long long)o.accum, (long long)o.rows, (long long)total, (long long)oc.warmup_steps,
                 o.lr, o.weight_decay, o.clip_norm);
    else
        LOG_INFO("train: stage %s, %lld samples in %lld rows, %lld samples per step (micro-batches of %lld rows), %lld steps "
                 "(warmup %lld), lr %g, wd %g, clip %g", o.stage, (long long)n_samples, (long long)rows,
                 (long long)o.global_batch, (long long)o.rows, (long long)total, (long long)oc.warmup_steps, o.lr,
                 o.weight_decay, o.clip_norm);

    /* log: keep the lines of steps the checkpoint covers (a crash may have logged more) */
    char *log_path = asvr_path_join(o.out, "log.jsonl");
    {
        uint8_t *data = NULL;
        size_t n = 0;
        asvr_error e2;
        char *kept = NULL;
        size_t kn = 0;
        if (asvr_read_file(log_path, &data, &n, &e2) == 0) {
            kept = asvr_malloc(n + 1, "the log");
            char *save = NULL;
            for (char *line = strtok_r((char *)data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                json_t *j = json_loads(line, 0, NULL);
                if (j && json_integer_value(json_object_get(j, "step")) <= step) {
                    size_t l = strlen(line);
                    memcpy(kept + kn, line, l);
                    kept[kn + l] = '\n';
                    kn += l + 1;
                }
                json_decref(j);
            }
            free(data);
        }
        if (asvr_atomic_write(log_path, kept ? kept : "", kn, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        free(kept);
    }
    FILE *logf = fopen(log_path, "a");
    CHECK_PTR(logf, "opening '%s'", log_path);

    int D = mc.has_head ? mc.head.depth : 0;
    /* the next step's data is read and its images decoded on a background thread while this one computes */
    prefetcher *pf = prefetch_new(dl, o.accum, o.global_batch, !o.no_prefetch);
    int rc = ASVR_EXIT_OK;
    int64_t first_step = step;
    while (step < total) {
        double t0 = now_s();
        step_batches *sb;
        int last = step + 1 >= total || (o.stop_after > 0 && step + 1 - first_step >= o.stop_after);
        if (prefetch_take(pf, !last, &sb, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        train_batch *mb = sb->mb;
        int n_mb = sb->n;
        int64_t text_targets = sb->text_targets, img_pos = sb->image_positions, tokens = sb->tokens,
                samples = sb->samples;
        param_set_zero_grads(&m.ps);
        asvr_losses L;
        memset(&L, 0, sizeof L);
        if (zero_codes)
            for (int k = 0; k < n_mb; k++) img_pos += (int64_t)mb[k].n_text_only * mc.image_positions;
        int Da = mc.has_app_head ? mc.head_app.depth : 0;
        int64_t app_pos = 0;
        for (int k = 0; k < n_mb; k++) app_pos += mb[k].n_image_positions;
        double ts = text_targets ? 1.0 / (double)text_targets : 0, vs = (D && img_pos) ? mc.lambda_visual / ((double)D * img_pos) : 0;
        double as = (Da && app_pos) ? mc.lambda_visual / ((double)Da * app_pos) : 0;
        for (int k = 0; k < n_mb; k++) {
            train_batch *b = &mb[k];
            asvr_batch ab = {b->B, b->T, b->ids, b->labels, b->pos, b->seg, b->n_images, b->image_pos, b->codes,
                             b->codes_app, b->pixels, b->n_text_only, zero_codes};
            if (b->B != (int)o.rows) { /* the last, shorter micro-batch of an epoch */
                asvr_acts_free(acts);
                acts = asvr_acts_new(&m, b->B, T, max_images);
            }
            asvr_forward_backward(&m, acts, &ab, ts, vs, as, &L);
            if (b->B != (int)o.rows) {
                asvr_acts_free(acts);
                acts = asvr_acts_new(&m, (int)o.rows, T, max_images);
            }
        }
        double gn, coef, lr = optim_step(&opt, &gn, &coef);
        step++;
        double dt = now_s() - t0;
        double text = L.text_count ? L.text_sum / (double)L.text_count : 0, vis = 0;
        json_t *vd = json_array(), *acc = json_array();
        for (int d = 0; d < D; d++) {
            double ld = L.vis_count ? L.vis_sum[d] / (double)L.vis_count : 0;
            vis += ld / D;
            json_array_append_new(vd, json_real(ld));
            json_array_append_new(acc, json_real(L.vis_count ? (double)L.vis_correct[d] / (double)L.vis_count : 0));
        }
        double app = 0;
        json_t *ad = json_array(), *aacc = json_array();
        for (int d = 0; d < Da; d++) {
            double ld = L.app_count ? L.app_sum[d] / (double)L.app_count : 0;
            app += ld / Da;
            json_array_append_new(ad, json_real(ld));
            json_array_append_new(aacc, json_real(L.app_count ? (double)L.app_correct[d] / (double)L.app_count : 0));
        }
        double loss = text + mc.lambda_visual * (vis + app);
        double mfu = dt > 0 ? flops_per_token * (double)tokens / dt / (o.peak_tflops * 1e12) : 0;
        /* a loss with nothing to score in this step (no supervised token, no image) is logged as null */
        json_t *line = json_pack("{s:I, s:f, s:o, s:o, s:o, s:o, s:f, s:f, s:I, s:I, s:f, s:f}", "step", (json_int_t)step,
                                 "loss", loss, "text_loss", L.text_count ? json_real(text) : json_null(),
                                 "visual_loss", (D && L.vis_count) ? json_real(vis) : json_null(), "visual_loss_depth", vd,
                                 "code_accuracy_depth", acc, "lr", lr, "grad_norm", gn, "tokens", (json_int_t)tokens,
                                 "samples", (json_int_t)samples, "seconds", dt, "tokens_per_s", dt > 0 ? tokens / dt : 0);
        if (dev != NN_CPU) json_object_set_new(line, "mfu", json_real(mfu));
        size_t mem_used, mem_total;
        if (nn_device_mem_used(dev, &mem_used, &mem_total)) {
            json_object_set_new(line, "device_mem_gib", json_real((double)mem_used / (1024.0 * 1024.0 * 1024.0)));
            if (step == first_step + 1) /* the arenas are all allocated and the scratch has grown by now */
                LOG_INFO("device memory in use after the first step: %.2f GiB of %.2f GiB (the plan above: %.2f GiB)",
                         (double)mem_used / (1024.0 * 1024.0 * 1024.0), (double)mem_total / (1024.0 * 1024.0 * 1024.0),
                         (double)planned_bytes / (1024.0 * 1024.0 * 1024.0));
        }
        if (Da) {
            json_object_set_new(line, "appearance_loss", L.app_count ? json_real(app) : json_null());
            json_object_set_new(line, "appearance_loss_depth", ad);
            json_object_set_new(line, "appearance_accuracy_depth", aacc);
        } else {
            json_decref(ad);
            json_decref(aacc);
        }
        char *s = json_dumps(line, JSON_COMPACT);
        fprintf(logf, "%s\n", s);
        fflush(logf);
        free(s);
        json_decref(line);
        char accs[256] = "";
        for (int d = 0; d < D && d < 8; d++) {
            size_t l = strlen(accs);
            snprintf(accs + l, sizeof accs - l, "%s%.2f", d ? " " : "", L.vis_count ? (double)L.vis_correct[d] / (double)L.vis_count : 0);
        }
        char apps[64] = "", mfus[32] = "";
        if (Da) snprintf(apps, sizeof apps, "  appearance %.4f", app);
        if (dev != NN_CPU) snprintf(mfus, sizeof mfus, "  MFU %.1f%%", 100.0 * mfu);
        LOG_INFO("step %lld/%lld  loss %.4f  text %.4f  visual %.4f%s  acc [%s]  lr %.3g  gnorm %.3f  %.0f tok/s%s",
                 (long long)step, (long long)total, loss, text, vis, apps, accs, lr, gn, dt > 0 ? tokens / dt : 0, mfus);
        int stop_now = o.stop_after > 0 && step - first_step >= o.stop_after;
        if ((o.save_every > 0 && step % o.save_every == 0) || step == total || stop_now) {
            int64_t ep = sb->epoch, ix = sb->index; /* the cursor after this step's data, not the prefetch's */
            json_t *cfg = json_loads(config_text, 0, NULL);
            json_t *state = json_pack("{s:I, s:I, s:I, s:s, s:I, s:I, s:f, s:o, s:s, s:s, s:s, s:s}", "step", (json_int_t)step,
                                      "data_epoch", (json_int_t)ep, "data_index", (json_int_t)ix, "stage", o.stage,
                                      "seed", (json_int_t)o.seed, "total_steps", (json_int_t)total, "lr", o.lr,
                                      "model_config", cfg, "visual_loss", o.visual_loss, "input", o.input,
                                      "packed_source_fingerprint", data_packed_fingerprint(dl),
                                      "codes_tokenizer_fingerprint", data_codes_fingerprint(dl));
            if (checkpoint_save(o.out, step, &m.ps, &opt, state, &err) < 0) {
                LOG_ERROR("%s", err.msg);
                rc = ASVR_EXIT_FAIL;
                json_decref(state);
                break;
            }
            json_decref(state);
            LOG_INFO("checkpoint: step %lld", (long long)step);
        }
        if (stop_now) {
            LOG_INFO("stopping after %lld steps (--stop-after); rerun to continue from step %lld", (long long)o.stop_after,
                     (long long)step);
            break;
        }
    }
    prefetch_free(pf);
    fclose(logf);
    free(log_path);
    asvr_acts_free(acts);
    optim_free(&opt);
    data_close(dl);
    asvr_model_free(&m);
    free(config_text);
    free(ckpt);
    free(zero_codes);
    return rc;
}
