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
#include "io/json_stream.h"
#include "io/safetensors.h"
#include "model/asvr.h"
#include "model/params.h"
#include "trainer.h"

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
    json_t *state = json_read_path(statep, (size_t)64 << 20, &err);
    if (!state) ASVR_FATAL("", "%s", err.msg);
    json_t *mc = json_object_get(state, "model_config");
    if (!json_is_object(mc)) ASVR_FATAL("the checkpoint is damaged", "'%s' has no model_config object", statep);
    safetensors *st;
    if (safetensors_open(model, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    /* the tensors must be exactly the model's that the config describes: names, shapes, f32 */
    {
        char *mtext = json_dumps(mc, JSON_COMPACT);
        asvr_config c;
        run_choices rc;
        run_choices_default(&rc); /* the model as trained: the state's stage, visual loss and input */
        const char *vl = json_string_value(json_object_get(state, "visual_loss")),
                   *in = json_string_value(json_object_get(state, "input"));
        if (vl) rc.visual_loss = vl;
        if (in) rc.input = in;
        if (run_choices_apply(&rc, mtext, NN_CPU, &c, &err) != 0)
            ASVR_FATAL("the checkpoint is damaged", "'%s': %s", statep, err.msg);
        free(mtext);
        asvr_model m;
        asvr_model_init(&m, &c);
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
    json_object_set(cfg, "mm_hidden_size", json_object_get(vis, "hidden_size"));
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
