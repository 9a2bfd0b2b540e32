/* test_generate_cuda.c — greedy generation with the model, its activations and the KV cache on the
 * CUDA device against the CPU, on the fixture of test_generate.c (the tiny model of tests/golden/train/
 * and the three prompts of tests/golden/generate/generate.json: image in the middle, image first, text
 * only), in one batch of rows of different lengths: the same greedy tokens with and without the KV
 * cache, every step's logits within 8e-6 (relative, per step and row) and the last prompt token's
 * attention over the image positions within 6e-7 (f32 on both); and the discrete input (the golden's
 * reference codes of its two image prompts, the tiny tokenizer's codebooks on each device) with the
 * same greedy tokens and logits within 8e-6. Without a CUDA build or a visible device it reports
 * itself skipped.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "model/asvr.h"
#include "model/generate.h"
#include "test.h"
#include "generate_fixture.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

#define NP 3
#define NEW 12

#ifdef ASVR_HAVE_CUDA
/* The tiny model on dev, without the visual head (generation never runs it). */
static void load_model(asvr_model *m, nn_device dev) { safetensors_close(load_model_on(m, dev, 0)); }

typedef struct prompts {
    int32_t ids[NP][32];
    int n[NP];
    float *pixels[NP];
} prompts;

static void load_prompts(prompts *g, const asvr_model *m) {
    json_t *j = load_json(GOLD), *ps = json_object_get(j, "prompts");
    int S = m->c.vision.image_size;
    image_preprocess_opts po = {IMAGE_POLICY_PAD, S, {127, 127, 127}};
    for (int i = 0; i < NP; i++) {
        json_t *p = json_array_get(ps, (size_t)i), *ids = json_object_get(p, "ids");
        g->n[i] = (int)json_array_size(ids);
        for (int k = 0; k < g->n[i] && k < 32; k++) g->ids[i][k] = (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
        json_t *im = json_object_get(p, "image");
        g->pixels[i] = NULL;
        if (json_is_string(im)) {
            char path[512];
            snprintf(path, sizeof path, "%s/images/%s", ASVR_GOLDEN, json_string_value(im));
            g->pixels[i] = malloc(sizeof(float) * 3 * (size_t)S * S);
            asvr_error err = {{0}};
            T_CHECK(gen_load_image(path, &po, m->c.image_mean, m->c.image_std, g->pixels[i], NULL, &err) == 0, "%s", err.msg);
        }
    }
    json_decref(j);
}

typedef struct outcome {
    gen_result r;
    float *logits, *att;
} outcome;

static void run(asvr_model *m, const prompts *g, int use_cache, outcome *out) {
    int V = m->c.llm.vocab, L = m->c.llm.n_layers, P = m->c.image_positions;
    gen_prompt p[NP];
    for (int i = 0; i < NP; i++) p[i] = (gen_prompt){g->ids[i], g->n[i], g->pixels[i], "fixture", NULL};
    out->logits = malloc(sizeof(float) * (size_t)NP * NEW * V);
    out->att = malloc(sizeof(float) * (size_t)L * NP * P);
    for (size_t i = 0; i < (size_t)NP * NEW * V; i++) out->logits[i] = NAN;
    for (size_t i = 0; i < (size_t)L * NP * P; i++) out->att[i] = NAN;
    gen_options o = {NEW, -1, use_cache, out->logits, out->att};
    asvr_error err = {{0}};
    T_CHECK(asvr_generate(m, p, NP, &o, &out->r, &err) == 0, "generate: %s", err.msg);
}

static void compare(const asvr_model *m, const outcome *c, const outcome *g, const char *what) {
    int V = m->c.llm.vocab, L = m->c.llm.n_layers, P = m->c.image_positions;
    double worst = 0;
    for (int b = 0; b < NP; b++) {
        T_EQ_INT(g->r.n[b], c->r.n[b]);
        int same = g->r.n[b] == c->r.n[b];
        for (int k = 0; same && k < c->r.n[b]; k++) same = g->r.ids[b * NEW + k] == c->r.ids[b * NEW + k];
        T_CHECK(same, "%s: row %d greedy tokens differ between cuda and cpu", what, b);
        for (int s = 0; s < c->r.steps; s++) {
            const float *lc = c->logits + ((size_t)b * NEW + s) * V, *lg = g->logits + ((size_t)b * NEW + s) * V;
            double e = relerr_f(lg, lc, V);
            if (!(e <= worst)) worst = e;
            T_CHECK(e < 8e-6, "%s: row %d step %d logits off by %.2e", what, b, s, e); /* measured 7.4e-7 (stand-in) */
        }
    }
    double ea = 0;
    for (int i = 0; i < L * NP * P; i++) {
        double d = fabs((double)g->att[i] - c->att[i]);
        if (!(d <= ea)) ea = d;
    }
    T_CHECK(ea < 6e-7, "%s: attention maps off by %.2e", what, ea); /* measured 6.0e-8 (stand-in) */
    printf("%s: greedy tokens equal; logits worst relative error %.2e, attention %.2e\n", what, worst, ea);
}

/* Discrete input: the model reads the summed codebook rows of the golden's codes, on cpu and on cuda. */
static void check_discrete(void) {
    asvr_model m[2];
    json_t *j = load_json(GOLD), *ps = json_object_get(json_object_get(j, "discrete"), "prompts");
    T_EQ_INT(json_array_size(ps), 2);
    int32_t ids[2][32];
    uint16_t codes[2][64];
    gen_prompt gp[2];
    for (int i = 0; i < 2; i++) {
        json_t *p = json_array_get(ps, (size_t)i), *jid = json_object_get(p, "ids"), *jc = json_object_get(p, "codes");
        int n = (int)json_array_size(jid);
        for (int k = 0; k < n && k < 32; k++) ids[i][k] = (int32_t)json_integer_value(json_array_get(jid, (size_t)k));
        for (size_t k = 0; k < json_array_size(jc) && k < 64; k++) codes[i][k] = (uint16_t)json_integer_value(json_array_get(jc, k));
        gp[i] = (gen_prompt){ids[i], n, NULL, "discrete", codes[i]};
    }
    outcome o[2];
    for (int d = 0; d < 2; d++) {
        load_model(&m[d], d ? NN_CUDA : NN_CPU);
        m[d].c.input_discrete = 1;
        asvr_error err = {{0}};
        safetensors *st;
        T_CHECK(safetensors_open(ASVR_GOLDEN "/tokenize/tiny_tokenizer.safetensors", &st, &err) == 0 &&
                    asvr_model_load_codebooks(&m[d], st, "quantizer.codebooks.", &err) == 0, "codebooks: %s", err.msg);
        safetensors_close(st);
        int V = m[d].c.llm.vocab;
        o[d].logits = malloc(sizeof(float) * 2 * NEW * V);
        o[d].att = NULL;
        for (size_t i = 0; i < (size_t)2 * NEW * V; i++) o[d].logits[i] = NAN;
        gen_options go = {NEW, -1, 1, o[d].logits, NULL};
        T_CHECK(asvr_generate(&m[d], gp, 2, &go, &o[d].r, &err) == 0, "discrete generate: %s", err.msg);
    }
    int V = m[0].c.llm.vocab;
    double worst = 0;
    for (int b = 0; b < 2; b++) {
        int same = o[0].r.n[b] == o[1].r.n[b];
        for (int k = 0; same && k < o[0].r.n[b]; k++) same = o[0].r.ids[b * NEW + k] == o[1].r.ids[b * NEW + k];
        T_CHECK(same, "discrete: row %d greedy tokens differ between cuda and cpu", b);
        for (int s = 0; s < o[0].r.steps; s++) {
            double e = relerr_f(o[1].logits + ((size_t)b * NEW + s) * V, o[0].logits + ((size_t)b * NEW + s) * V, V);
            if (!(e <= worst)) worst = e;
        }
    }
    T_CHECK(worst < 8e-6, "discrete: logits off by %.2e", worst); /* measured 6.2e-7 (stand-in) */
    printf("discrete input: greedy tokens equal; logits worst relative error %.2e\n", worst);
    for (int d = 0; d < 2; d++) gen_result_free(&o[d].r), free(o[d].logits), asvr_model_free(&m[d]);
    json_decref(j);
}

static void check_cuda(void) {
    asvr_model mc, mg;
    load_model(&mc, NN_CPU);
    load_model(&mg, NN_CUDA);
    prompts g;
    load_prompts(&g, &mc);
    for (int cache = 1; cache >= 0; cache--) {
        outcome oc, og;
        run(&mc, &g, cache, &oc);
        run(&mg, &g, cache, &og);
        compare(&mc, &oc, &og, cache ? "kv cache" : "full recompute");
        gen_result_free(&oc.r);
        gen_result_free(&og.r);
        free(oc.logits), free(oc.att), free(og.logits), free(og.att);
    }
    for (int i = 0; i < NP; i++) free(g.pixels[i]);
    asvr_model_free(&mc);
    asvr_model_free(&mg);
}
#endif

int main(void) {
#ifdef ASVR_HAVE_CUDA
    if (nn_cuda_available()) check_cuda(), check_discrete();
    else t_skip("no CUDA device");
#else
    t_skip("no CUDA device (CPU-only build)");
#endif
    return t_done();
}
