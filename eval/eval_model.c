#include "eval_model.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "base/log.h"
#include "io/json_stream.h"
#include "io/safetensors.h"
#include "nn/ops.h"

void eval_model_opts_default(eval_model_opts *o) {
    memset(o, 0, sizeof *o);
    o->vision_prefix = "vision_model.";
    o->template_name = "vicuna_v1";
    o->device = "cpu";
}

void eval_model_opts_table(eval_model_opts *o, asvr_opt *out) {
    const asvr_opt t[EVAL_MODEL_NOPTS] = {
        {"checkpoint", ASVR_OPT_STR, &o->checkpoint, "DIR",
         "asvr-train checkpoint folder (step-N/, or a run folder: its newest complete step)"},
        {"model", ASVR_OPT_STR, &o->model, "FILE", "model.safetensors (llm.*, mm_projector.*), with --config"},
        {"config", ASVR_OPT_STR, &o->config, "FILE", "model config JSON (llm, vision), with --model"},
        {"vision", ASVR_OPT_STR, &o->vision, "FILE", "frozen SigLIP input tower (safetensors, HF names)"},
        {"vision-prefix", ASVR_OPT_STR, &o->vision_prefix, "P", "name prefix of the tower's tensors (default vision_model.)"},
        {"tokenizer", ASVR_OPT_STR, &o->tokenizer, "FILE", "SentencePiece tokenizer.model of the LLM"},
        {"policy", ASVR_OPT_STR, &o->policy, "pad|squash",
         "image preprocessing (default: the checkpoint's stage: pt squash, it pad; pad without a checkpoint)"},
        {"template", ASVR_OPT_STR, &o->template_name, "NAME", "prompt template: vicuna_v1 (default), plain, mistral_instruct, llama_2, llava_llama_2"},
        {"device", ASVR_OPT_STR, &o->device, "cpu|cuda", "where the model and the KV cache live (default cpu)"},
        {"codebooks", ASVR_OPT_STR, &o->codebooks, "FILE",
         "the vision tokenizer file: a --input discrete model's image input (each image encoded by it); the codes "
         "command's codebooks"},
        {"input", ASVR_OPT_STR, &o->input, "continuous|discrete",
         "what the model reads for an image (default: what the checkpoint trained with; continuous with --config)"},
    };
    memcpy(out, t, sizeof t);
}

/* A run folder: the newest "step-N" holding DONE. NULL when none. */
static char *newest_step(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    struct dirent *e;
    long long best = -1;
    char *path = NULL;
    while ((e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "step-", 5) != 0) continue;
        long long n = strtoll(e->d_name + 5, &end, 10);
        if (*end || n <= best) continue;
        char *p = asvr_path_join(dir, e->d_name), *done = asvr_path_join(p, "DONE");
        int ok = asvr_path_exists(done);
        free(done);
        if (!ok) {
            free(p);
            continue;
        }
        free(path);
        path = p;
        best = n;
    }
    closedir(d);
    return path;
}

/* An export's name for one of our parameters. llava: llm.X as X (HF LLaMA), anything else as
 * model.<name>; hf: llm.X as language_model.X, the projector as multi_modal_projector.linear_{1,2}, the
 * visual head under its own name (visual_head.safetensors). */
static void exported_name(const char *ours, int hf, char *key, size_t n) {
    if (!strncmp(ours, "llm.", 4)) snprintf(key, n, hf ? "language_model.%s" : "%s", ours + 4);
    else if (hf && !strncmp(ours, "mm_projector.", 13))
        snprintf(key, n, "multi_modal_projector.linear_%c.%s", ours[13] == '0' ? '1' : '2', ours + 15);
    else if (hf) snprintf(key, n, "%s", ours);
    else snprintf(key, n, "model.%s", ours);
}

/* Parameters from an export (hf: the visual head from head_st, NULL when not wanted). The hf export's
 * embedding and lm_head have one more row (the image token), which the model does not use. */
static int load_exported(param_set *ps, const safetensors *st, const safetensors *head_st, int hf, asvr_error *err) {
    for (int i = 0; i < ps->n; i++) {
        param *p = ps->v[i];
        char key[256];
        exported_name(p->name, hf, key, sizeof key);
        const safetensors *src = hf && !strncmp(p->name, "visual_head", 11) ? head_st : st;
        const st_tensor *t = src ? safetensors_find(src, key) : NULL;
        if (!t) return asvr_err_set(err, "tensor '%s' (for %s) is missing%s", key, p->name,
                                    src ? "" : " (the export has no visual_head.safetensors)");
        st_tensor view = *t;
        if (hf && (!strcmp(p->name, "llm.model.embed_tokens.weight") || !strcmp(p->name, "llm.lm_head.weight")) &&
            t->ndim == 2 && p->w->ndim == 2 && t->shape[0] == p->w->shape[0] + 1 && t->shape[1] == p->w->shape[1]) {
            view.shape[0] = p->w->shape[0]; /* the rows before the image token's */
            view.numel = p->w->shape[0] * p->w->shape[1];
            view.nbytes = (size_t)view.numel * st_dtype_size(t->dtype);
        }
        if (view.numel != tensor_numel(p->w)) return asvr_err_set(err, "tensor '%s' has %lld elements, %s needs %lld", key,
                                                                   (long long)view.numel, p->name, (long long)tensor_numel(p->w));
        if (param_tensor_load(p->w, &view, err) < 0) return -1;
    }
    param_set_sync_compute(ps); /* compute copies, if the set has any, follow the values */
    return 0;
}

/* The codebooks of the tokenizer file path (a full tokenizer, or only its codebooks when no image has to
 * be encoded); encoder = 1 also loads the tokenizer to encode images on dev (bf16 on cuda, as
 * `asvr-tokenize encode`), its positions checked against the model's and its fingerprint against the
 * one the training's code store recorded (trained_fp, when known). */
static int load_codebooks(eval_model *em, const char *path, int encoder, const char *trained_fp, nn_device dev,
                          asvr_error *err) {
    if (encoder) {
        vtok_load_opts lo;
        vtok_load_opts_default(&lo);
        lo.device = dev;
        lo.dtype = dev == NN_CUDA ? NN_BF16 : NN_F32;
        if (vision_tokenizer_load_ex(path, &lo, &em->vt, err) < 0)
            return asvr_err_prefix(err, "--codebooks '%s' (the vision tokenizer that encodes the images of a discrete-input "
                                        "model): ", path);
        if (vision_tokenizer_positions(em->vt) != em->m.c.image_positions)
            return asvr_err_set(err, "--codebooks '%s' gives %d positions per image, the model reads %d", path,
                                vision_tokenizer_positions(em->vt), em->m.c.image_positions);
        if (trained_fp && strcmp(trained_fp, vision_tokenizer_fingerprint(em->vt)) != 0)
            return asvr_err_set(err, "--codebooks '%s' is tokenizer %s, but the model trained on the codes of tokenizer %s",
                                path, vision_tokenizer_fingerprint(em->vt), trained_fp);
        em->vw = vtok_work_new(em->vt, 1);
    }
    safetensors *st;
    if (safetensors_open(path, &st, err) < 0) return -1;
    int r = asvr_model_load_codebooks(&em->m, st, safetensors_find(st, "codebooks") ? "codebooks" : "quantizer.codebooks.", err);
    safetensors_close(st);
    return r < 0 ? asvr_err_prefix(err, "--codebooks '%s': ", path) : 0;
}

int eval_model_load(const asvr_cli *cli, const eval_model_opts *o, eval_model *em, asvr_error *err) {
    memset(em, 0, sizeof *em);
    if (!o->checkpoint == !(o->model || o->config))
        asvr_cli_usage_error(cli, "give either --checkpoint DIR or --model FILE --config FILE");
    if (!o->checkpoint && (!o->model || !o->config)) asvr_cli_usage_error(cli, "--model and --config go together");
    if (o->input && strcmp(o->input, "continuous") != 0 && strcmp(o->input, "discrete") != 0)
        asvr_cli_usage_error(cli, "--input must be continuous or discrete, not '%s'", o->input);
    int discrete = o->input && !strcmp(o->input, "discrete");
    if (!o->vision && !o->checkpoint && !discrete)
        asvr_cli_usage_error(cli, "--vision is required (the input tower is not part of a checkpoint)");
    if (!o->tokenizer) asvr_cli_usage_error(cli, "--tokenizer is required");
    nn_device dev;
    const char *why;
    if (nn_device_from_name(o->device, &dev, &why) < 0) asvr_cli_usage_error(cli, "%s", why);
    em->tmpl = template_find(o->template_name);
    if (!em->tmpl) asvr_cli_usage_error(cli, "--template %s: known templates are %s", o->template_name, template_names());
    image_policy policy = IMAGE_POLICY_PAD;
    int policy_set = 0;
    if (o->policy) {
        if (image_policy_parse(o->policy, &policy) < 0) asvr_cli_usage_error(cli, "--policy must be pad or squash");
        policy_set = 1;
    }

    char *config_text = NULL, *weights = NULL, *dir = NULL, *head_path = NULL, *trained_fp = NULL;
    const char *vision = o->vision, *vision_prefix = o->vision_prefix;
    int rc = -1, exported = 0, hf = 0;
    if (o->checkpoint) {
        char *probe = asvr_path_join(o->checkpoint, "model.safetensors");
        if (asvr_path_exists(probe)) {
            dir = asvr_strdup(o->checkpoint);
        } else if (!(dir = newest_step(o->checkpoint))) {
            free(probe);
            return asvr_err_set(err, "'%s' is neither a checkpoint (no model.safetensors) nor a run folder with a "
                                     "complete step-N checkpoint",
                                o->checkpoint);
        }
        free(probe);
        weights = asvr_path_join(dir, "model.safetensors");
        char *cp = asvr_path_join(dir, "config.json"), *stp = asvr_path_join(dir, "state.json"),
             *donep = asvr_path_join(dir, "DONE");
        int is_export = !asvr_path_exists(stp) && asvr_path_exists(cp), done = asvr_path_exists(donep);
        free(stp);
        free(donep);
        if (!is_export && !done) { /* a checkpoint still being written, or one whose writer died */
            asvr_err_set(err, "'%s' is not a finished checkpoint (no DONE marker): pass a finished step-N folder, or "
                              "the run folder for its newest finished one", dir);
            free(cp);
            goto out;
        }
        if (is_export) { /* an `asvr-train export` folder: HF/LLaVA names, our config under "asvr" */
            json_t *c = json_read_path(cp, (size_t)16 << 20, err);
            if (!c) {
                free(cp);
                goto out;
            }
            json_t *cfg = json_object_get(c, "asvr");
            if (!json_is_object(cfg)) {
                asvr_err_set(err, "'%s' is not an asvr export (no \"asvr\" model config)", cp);
                json_decref(c);
                free(cp);
                goto out;
            }
            const char *ar = json_string_value(json_object_get(c, "image_aspect_ratio"));
            json_t *notes = json_object_get(c, "asvr_export");
            if (!ar) ar = json_string_value(json_object_get(notes, "image_aspect_ratio"));
            if (!policy_set && ar && !strcmp(ar, "square")) policy = IMAGE_POLICY_SQUASH;
            const char *in = json_string_value(json_object_get(notes, "input"));
            if (!o->input && in) discrete = !strcmp(in, "discrete");
            const char *fp = json_string_value(json_object_get(notes, "codes_tokenizer_fingerprint"));
            if (fp) trained_fp = asvr_strdup(fp);
            const char *mt = json_string_value(json_object_get(c, "model_type"));
            hf = mt && !strcmp(mt, "llava");
            if (hf) {
                head_path = asvr_path_join(dir, "visual_head.safetensors");
                if (!vision) vision = weights, vision_prefix = "vision_tower.vision_model."; /* the export's own tower */
            }
            config_text = json_dumps(cfg, JSON_COMPACT);
            exported = 1;
            json_decref(c);
            free(cp);
            goto have_config;
        }
        free(cp);
        char *sp = asvr_path_join(dir, "state.json");
        json_t *s = json_read_path(sp, (size_t)16 << 20, err);
        if (!s) {
            free(sp);
            goto out;
        }
        json_t *cfg = json_object_get(s, "model_config"), *stage = json_object_get(s, "stage"),
               *input = json_object_get(s, "input");
        if (!json_is_object(cfg)) {
            asvr_err_set(err, "'%s' has no model_config", sp);
            json_decref(s);
            free(sp);
            goto out;
        }
        if (json_is_string(input) && strcmp(json_string_value(input), "continuous") != 0 &&
            strcmp(json_string_value(input), "discrete") != 0) {
            asvr_err_set(err, "'%s': the model was trained with --input %s, which asvr-eval does not know", sp,
                         json_string_value(input));
            json_decref(s);
            free(sp);
            goto out;
        }
        if (!o->input && json_is_string(input)) discrete = !strcmp(json_string_value(input), "discrete");
        const char *fp = json_string_value(json_object_get(s, "codes_tokenizer_fingerprint"));
        if (fp) trained_fp = asvr_strdup(fp);
        if (!policy_set && json_is_string(stage) && strcmp(json_string_value(stage), "pt") == 0) policy = IMAGE_POLICY_SQUASH;
        config_text = json_dumps(cfg, JSON_COMPACT);
        json_decref(s);
        free(sp);
    } else {
        uint8_t *data;
        size_t n;
        if (asvr_read_file(o->config, &data, &n, err) < 0) goto out;
        config_text = (char *)data;
        weights = asvr_strdup(o->model);
    }
have_config:;
    if (!vision && !discrete)
        asvr_cli_usage_error(cli, "--vision is required: '%s' does not hold the input tower (an hf export does)",
                             o->checkpoint ? o->checkpoint : o->model);
    if (discrete && !o->codebooks)
        asvr_cli_usage_error(cli, "--codebooks is required: '%s' was trained with --input discrete, so each image is "
                                  "encoded by the vision tokenizer whose codes it trained on",
                             o->checkpoint ? o->checkpoint : o->model);
    asvr_config mc;
    if (asvr_config_from_json(config_text, &mc, err) < 0) {
        asvr_err_prefix(err, "%s: ", o->config ? o->config : o->checkpoint);
        goto out;
    }
    if (!o->with_head) mc.has_head = 0; /* generation never runs the visual head */
    mc.has_app_head = 0;
    mc.input_discrete = discrete;
    if (discrete && mc.n_scales > 0) {
        asvr_err_set(err, "%s: discrete input reads codes, not images at several scales (S2)", o->config ? o->config : o->checkpoint);
        goto out;
    }
    asvr_model_init(&em->m, &mc);
    param_set_trainable(&em->m.ps, "", 0);
    param_set_set_device(&em->m.ps, dev);
    param_set_commit(&em->m.ps);
    safetensors *st, *head_st = NULL;
    if (safetensors_open(weights, &st, err) < 0) goto out;
    if (hf && mc.has_head && asvr_path_exists(head_path) && safetensors_open(head_path, &head_st, err) < 0) {
        safetensors_close(st);
        goto out;
    }
    if ((exported ? load_exported(&em->m.ps, st, head_st, hf, err) : param_set_load(&em->m.ps, st, "", err)) < 0) {
        asvr_err_prefix(err, "'%s'", weights);
        safetensors_close(st);
        if (head_st) safetensors_close(head_st);
        goto out;
    }
    safetensors_close(st);
    if (head_st) safetensors_close(head_st);
    if ((discrete || mc.has_head) && o->codebooks && load_codebooks(em, o->codebooks, discrete && !o->with_head, trained_fp,
                                                                     dev, err) < 0)
        goto out;
    if (!discrete) {
        if (safetensors_open(vision, &st, err) < 0) goto out;
        if (asvr_model_load_tower(&em->m, st, vision_prefix, err) < 0) {
            asvr_err_prefix(err, "%s '%s' (prefix '%s'): ", vision == o->vision ? "--vision" : "the export's tower", vision,
                            vision_prefix);
            safetensors_close(st);
            goto out;
        }
        safetensors_close(st);
    }
    em->tok = sp_tokenizer_load(o->tokenizer, err);
    if (!em->tok) goto out;
    if (sp_tokenizer_vocab_size(em->tok) > mc.llm.vocab) {
        asvr_err_set(err, "tokenizer '%s' has %d pieces, more than the model's vocabulary of %d", o->tokenizer,
                     sp_tokenizer_vocab_size(em->tok), mc.llm.vocab);
        goto out;
    }
    em->enc = gen_text_encoder(em->tok);
    image_preprocess_opts_default(&em->pre);
    em->pre.policy = policy;
    em->pre.size = asvr_input_size(&mc); /* the largest scale with S2 */
    memcpy(em->pre.pad, mc.image_pad, 3); /* int(image_mean × 255), LLaVA's rule */
    memcpy(em->mean, mc.image_mean, sizeof em->mean);
    memcpy(em->std, mc.image_std, sizeof em->std);
    if (em->vt) { /* discrete input: the images are prepared as the tokenizer's code store had them */
        const vtok_config *vc = vision_tokenizer_config(em->vt);
        em->pre.size = vc->enc.image_size;
        memcpy(em->pre.pad, vc->pad, 3);
        memcpy(em->mean, vc->mean, sizeof em->mean);
        memcpy(em->std, vc->std, sizeof em->std);
    }
    em->source = weights;
    weights = NULL;
    LOG_INFO("model: %s (%s preprocessing, template %s%s%s)", em->source, image_policy_name(policy), em->tmpl->name,
             em->vt ? ", discrete input: images encoded by " : "", em->vt ? o->codebooks : "");
    rc = 0;
out:
    free(config_text);
    free(weights);
    free(head_path);
    free(trained_fp);
    free(dir);
    if (rc < 0) eval_model_free(em);
    return rc;
}

int eval_model_image(eval_model *em, const char *path, float *pixels, uint16_t *codes, uint8_t *rgb, asvr_error *err) {
    if (gen_load_image(path, &em->pre, em->mean, em->std, pixels, rgb, err) < 0) return -1;
    if (em->vt) vision_tokenizer_encode(em->vt, em->vw, 1, pixels, codes);
    return 0;
}

int64_t eval_model_codes_per_image(const eval_model *em) {
    return em->vt ? (int64_t)em->m.c.image_positions * em->m.codebooks->shape[0] : 0;
}

void eval_model_free(eval_model *em) {
    if (em->vw) vtok_work_free(em->vw);
    if (em->vt) vision_tokenizer_free(em->vt);
    if (em->m.llm) asvr_model_free(&em->m);
    if (em->tok) sp_tokenizer_free(em->tok);
    free(em->source);
    memset(em, 0, sizeof *em);
}
