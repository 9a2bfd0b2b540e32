/* train_fixture.h — the tiny training fixture of tests/golden/train/ (made by
 * tools/gen_train_fixtures.py) for the tests that train on it (test_train_golden, test_train_cuda):
 * the manifest and the two safetensors files, the model config JSON, and a context holding the model
 * built from the fixture's init, its activations and its one batch (stage it: 2 packed rows of 28
 * positions with 2 images). Static functions: include it from one test file each.
 */
#ifndef ASVR_TESTS_TRAIN_FIXTURE_H
#define ASVR_TESTS_TRAIN_FIXTURE_H

/* helpers a test that includes this may not all use (e.g. a CUDA test built without CUDA) */
#define FIXTURE_FN static __attribute__((unused))

#include <jansson.h>
#include <math.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/asvr.h"
#include "optim.h"
#include "test.h"

#define G ASVR_GOLDEN "/train/"

static json_t *manifest;
static safetensors *init_st, *batch_st;

/* Opens the manifest and the two safetensors files; 0 when all three are there. */
FIXTURE_FN int fixture_open(void) {
    json_error_t je;
    manifest = json_load_file(G "manifest.json", 0, &je);
    T_CHECK(manifest != NULL, "manifest: %s", je.text);
    asvr_error err;
    T_CHECK(safetensors_open(G "model_init.safetensors", &init_st, &err) == 0, "%s", err.msg);
    T_CHECK(safetensors_open(G "batch.safetensors", &batch_st, &err) == 0, "%s", err.msg);
    return manifest && init_st && batch_st ? 0 : -1;
}

FIXTURE_FN void fixture_close(void) {
    safetensors_close(init_st);
    safetensors_close(batch_st);
    json_decref(manifest);
}

/* ||a - b|| / ||b|| (||a - b|| when b is 0) */
FIXTURE_FN double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The fixture's model as asvr's config JSON (HF LlamaConfig keys), with or without the visual head. */
FIXTURE_FN char *model_config_json(int with_head) {
    json_t *c = json_object_get(manifest, "config"), *l = json_object_get(c, "llm"), *v = json_object_get(c, "vision");
    json_t *llm = json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:b}", "hidden_size", json_object_get(l, "hidden_size"),
                            "num_hidden_layers", json_object_get(l, "num_layers"), "num_attention_heads",
                            json_object_get(l, "num_heads"), "num_key_value_heads", json_object_get(l, "num_kv_heads"),
                            "intermediate_size", json_object_get(l, "intermediate_size"), "vocab_size",
                            json_object_get(l, "vocab_size"), "rms_norm_eps", json_object_get(l, "rms_norm_eps"),
                            "rope_theta", json_object_get(l, "rope_theta"), "tie_word_embeddings", 0);
    json_t *o = json_pack("{s:o, s:O}", "llm", llm, "vision", v);
    if (with_head) json_object_set(o, "visual_head", json_object_get(c, "visual_head"));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The Mistral variant (manifest "mistral"): the same model with the LLM section replaced by the
 * MistralConfig that HF writes to config.json (rope_parameters, sliding_window, model_type, ...). */
FIXTURE_FN char *model_config_json_mistral(int with_head) {
    json_t *c = json_object_get(manifest, "config");
    json_t *o = json_pack("{s:O, s:O}", "llm", json_object_get(json_object_get(manifest, "mistral"), "hf_config"), "vision",
                          json_object_get(c, "vision"));
    if (with_head) json_object_set(o, "visual_head", json_object_get(c, "visual_head"));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Which LLM build_fixture gives: 0 the LLaMA of the main fixture, 1 the Mistral variant. */
static int fixture_mistral;

typedef struct ctx {
    asvr_model m;
    asvr_acts *a;
    asvr_batch b;
    optim o; /* set up by the tests that step (test_train_cuda) */
    int32_t ids[56], labels[56], pos[56], seg[56], image_pos[18];
    uint16_t codes[54];
    float pixels[2 * 3 * 46 * 46];
} ctx;

FIXTURE_FN void to_i32(const char *name, int32_t *dst, int64_t n) {
    const st_tensor *t = safetensors_find(batch_st, name);
    T_CHECK(t && t->dtype == ST_I64 && t->numel == n, "batch tensor %s", name);
    for (int64_t i = 0; t && i < n; i++) dst[i] = (int32_t)((const int64_t *)t->data)[i];
}

/* The model from the fixture's init on dev (stage it: everything trains; pt: the LLM frozen), its
 * activations for the batch, and the batch. tower_bf16 / compute_bf16: asvr_config's (CUDA only). */
FIXTURE_FN void build_fixture(ctx *c, int with_head, int stage_it, nn_device dev, int tower_bf16, int compute_bf16) {
    memset(c, 0, sizeof *c);
    asvr_error err;
    asvr_config cfg;
    char *js = fixture_mistral ? model_config_json_mistral(with_head) : model_config_json(with_head);
    T_EQ_INT(asvr_config_from_json(js, &cfg, &err), 0);
    free(js);
    cfg.tower_bf16 = tower_bf16;
    cfg.compute_bf16 = compute_bf16 && dev == NN_CUDA;
    asvr_model_init(&c->m, &cfg);
    param_set_trainable(&c->m.ps, "", 1);
    if (!stage_it) param_set_trainable(&c->m.ps, "llm.", 0);
    param_set_set_device(&c->m.ps, dev);
    param_set_commit(&c->m.ps);
    T_CHECK(param_set_load(&c->m.ps, init_st, "", &err) == 0, "%s", err.msg);
    T_CHECK(asvr_model_load_tower(&c->m, init_st, "vision_tower.", &err) == 0, "%s", err.msg);
    if (with_head) T_CHECK(asvr_model_load_codebooks(&c->m, init_st, "codebooks", &err) == 0, "%s", err.msg);
    to_i32("input_ids", c->ids, 56);
    to_i32("labels", c->labels, 56);
    to_i32("position_ids", c->pos, 56);
    to_i32("segment_ids", c->seg, 56);
    to_i32("image_flat_pos", c->image_pos, 18);
    int32_t codes[54];
    to_i32("codes", codes, 54);
    for (int i = 0; i < 54; i++) c->codes[i] = (uint16_t)codes[i];
    const st_tensor *px = safetensors_find(batch_st, "images");
    T_CHECK(px && px->numel == 2 * 3 * 46 * 46, "images");
    if (px) memcpy(c->pixels, px->data, sizeof c->pixels);
    c->b = (asvr_batch){2, 28, c->ids, c->labels, c->pos, c->seg, 2, c->image_pos, c->codes, NULL, c->pixels, 0, NULL};
    c->a = asvr_acts_new(&c->m, 2, 28, 2);
}

#endif
