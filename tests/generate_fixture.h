/* generate_fixture.h — the tiny model of tests/golden/train/ as the generation tests load it
 * (test_generate, test_generate_cuda): its config from the training manifest mapped to HF / our keys,
 * its parameters and tower from model_init.safetensors, on a device; and the JSON helpers they share.
 * Static functions: include it from one test file each.
 */
#ifndef ASVR_TESTS_GENERATE_FIXTURE_H
#define ASVR_TESTS_GENERATE_FIXTURE_H

/* helpers a test that includes this may not all use (e.g. a CUDA test built without CUDA) */
#define FIXTURE_FN static __attribute__((unused))

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/safetensors.h"
#include "model/asvr.h"
#include "test.h"

#define GOLD ASVR_GOLDEN "/generate/generate.json"
#define TRAIN ASVR_GOLDEN "/train"

FIXTURE_FN json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        fprintf(stderr, "cannot read %s: %s\n(regenerate with tools/gen_generate_fixtures.py)\n", path, je.text);
        exit(1);
    }
    return j;
}

FIXTURE_FN int jint(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) {
        fprintf(stderr, "fixture: integer '%s' missing\n", k);
        exit(1);
    }
    return (int)json_integer_value(v);
}

/* ||a - b|| / ||b|| over n floats (||a - b|| when b is 0) */
FIXTURE_FN double relerr_f(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The tiny model on dev, nothing trainable (with_head 0: without the visual head, which generation
 * never runs). Returns model_init.safetensors, still open (the caller closes it). */
FIXTURE_FN safetensors *load_model_on(asvr_model *m, nn_device dev, int with_head) {
    json_t *man = load_json(TRAIN "/manifest.json"), *cfg = json_object_get(man, "config");
    json_t *L = json_object_get(cfg, "llm"), *V = json_object_get(cfg, "vision"), *H = json_object_get(cfg, "visual_head");
    json_t *llm = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:O, s:O}", "hidden_size", jint(L, "hidden_size"),
                            "num_hidden_layers", jint(L, "num_layers"), "num_attention_heads", jint(L, "num_heads"),
                            "num_key_value_heads", jint(L, "num_kv_heads"), "head_dim", jint(L, "head_dim"),
                            "intermediate_size", jint(L, "intermediate_size"), "vocab_size", jint(L, "vocab_size"),
                            "rms_norm_eps", json_object_get(L, "rms_norm_eps"), "rope_theta",
                            json_object_get(L, "rope_theta"));
    json_t *all = json_pack("{s:o, s:O, s:O}", "llm", llm, "vision", V, "visual_head", H);
    char *text = json_dumps(all, JSON_COMPACT);
    asvr_config c;
    asvr_error err = {{0}};
    if (asvr_config_from_json(text, &c, &err) < 0) {
        fprintf(stderr, "config: %s\n", err.msg);
        exit(1);
    }
    free(text);
    json_decref(all);
    json_decref(man);
    if (!with_head) c.has_head = 0;
    asvr_model_init(m, &c);
    param_set_trainable(&m->ps, "", 0);
    param_set_set_device(&m->ps, dev);
    param_set_commit(&m->ps);
    safetensors *st;
    if (safetensors_open(TRAIN "/model_init.safetensors", &st, &err) < 0 || param_set_load(&m->ps, st, "", &err) < 0 ||
        asvr_model_load_tower(m, st, "vision_tower.", &err) < 0) {
        fprintf(stderr, "model: %s\n", err.msg);
        exit(1);
    }
    return st;
}

#endif
