/* asvr-train export — a checkpoint as an HF-style model folder for the evaluator and PyTorch users:
 * model.safetensors with LLaVA's names (the LLaMA under its HF names, "model.mm_projector.{0,2}.*",
 * the visual head as "model.visual_head.*") and a config.json (HF LlamaConfig keys plus LLaVA's
 * multimodal keys and the ASVR model config under "asvr"). Built in OUT.tmp, renamed when complete. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "commands.h"
#include "io/safetensors.h"

static void export_name(const char *ours, char *out, size_t n) {
    if (!strncmp(ours, "llm.", 4)) snprintf(out, n, "%s", ours + 4);
    else snprintf(out, n, "model.%s", ours);
}

int cmd_export(int argc, char **argv) {
    const asvr_cli cli = {"asvr-train export", "CHECKPOINT_DIR OUT_DIR",
                          "Writes OUT_DIR/model.safetensors (HF/LLaVA names) and OUT_DIR/config.json from a checkpoint\n"
                          "folder (run/step-N). OUT_DIR must not exist.",
                          NULL, 0, 2, 2};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    const char *ck = pos[0], *out = pos[1];
    asvr_error err;
    if (asvr_path_exists(out)) ASVR_FATAL("choose a new folder", "'%s' exists", out);
    char *done = asvr_path_join(ck, "DONE"), *model = asvr_path_join(ck, "model.safetensors"),
         *statep = asvr_path_join(ck, "state.json");
    if (!asvr_path_exists(done)) ASVR_FATAL("pass a finished checkpoint folder (run/step-N)", "'%s' is not a finished checkpoint", ck);
    json_error_t je;
    json_t *state = json_load_file(statep, 0, &je);
    if (!state) ASVR_FATAL("", "'%s': %s", statep, je.text);
    json_t *mc = json_object_get(state, "model_config");
    safetensors *st;
    if (safetensors_open(model, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    size_t tn = strlen(out) + 8;
    char *tmp = asvr_malloc(tn, "a path");
    snprintf(tmp, tn, "%s.tmp", out);
    if (asvr_mkdir_p(tmp, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    st_writer *w = st_writer_new();
    char (*names)[160] = asvr_calloc((size_t)safetensors_count(st), sizeof *names, "tensor names");
    for (int i = 0; i < safetensors_count(st); i++) {
        const st_tensor *t = safetensors_at(st, i);
        export_name(t->name, names[i], sizeof names[i]);
        st_writer_add(w, names[i], t->dtype, t->ndim, t->shape, t->data);
    }
    st_writer_set_metadata(w, "format", "pt");
    char *p = asvr_path_join(tmp, "model.safetensors");
    if (st_writer_write(w, p, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    st_writer_free(w);
    free(names);
    /* config.json: HF LLaMA keys, LLaVA's multimodal keys, and our model config */
    json_t *llm = json_object_get(mc, "llm"), *vis = json_object_get(mc, "vision");
    json_t *cfg = json_deep_copy(llm ? llm : json_object());
    json_object_set_new(cfg, "architectures", json_pack("[s]", "LlavaLlamaForCausalLM"));
    json_object_set_new(cfg, "model_type", json_string("llava_llama"));
    json_object_set_new(cfg, "mm_projector_type", json_string("mlp2x_gelu"));
    json_t *scales = json_object_get(vis, "scales");
    size_t n_scales = json_is_array(scales) ? json_array_size(scales) : 0;
    json_object_set_new(cfg, "mm_hidden_size",
                        json_integer(json_integer_value(json_object_get(vis, "hidden_size")) * (json_int_t)(n_scales ? n_scales : 1)));
    if (n_scales) { /* the reference's S2 tower: use_s2 and its scales as "384,768,1152" */
        char list[128] = "";
        for (size_t i = 0; i < n_scales && strlen(list) < sizeof list - 16; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%lld", i ? "," : "",
                     (long long)json_integer_value(json_array_get(scales, i)));
        json_object_set_new(cfg, "use_s2", json_true());
        json_object_set_new(cfg, "s2_scales", json_string(list));
    }
    json_object_set_new(cfg, "mm_vision_select_layer", json_integer(-2));
    json_object_set_new(cfg, "image_aspect_ratio", json_string(!strcmp(json_string_value(json_object_get(state, "stage")) ?
                                                                            json_string_value(json_object_get(state, "stage")) : "", "pt")
                                                                    ? "square" : "pad"));
    json_object_set_new(cfg, "torch_dtype", json_string("float32"));
    json_object_set(cfg, "asvr", mc);
    char *js = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    p = asvr_path_join(tmp, "config.json");
    if (asvr_atomic_write(p, js, strlen(js), &err) < 0) ASVR_FATAL("", "%s", err.msg);
    free(p);
    free(js);
    json_decref(cfg);
    if (rename(tmp, out) != 0) ASVR_FATAL("", "renaming '%s' to '%s': %s", tmp, out, strerror(errno));
    LOG_INFO("exported %d tensors from '%s' to '%s'", safetensors_count(st), ck, out);
    safetensors_close(st);
    json_decref(state);
    free(tmp), free(done), free(model), free(statep), free(pos);
    return ASVR_EXIT_OK;
}
