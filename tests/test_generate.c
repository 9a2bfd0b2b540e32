/* test_generate.c — greedy generation (model/generate) and the LLaMA KV cache (model/llama) against
 * PyTorch (tests/golden/generate/generate.json, made by tools/gen_generate_fixtures.py from the tiny
 * model of tests/golden/train/: HF LlamaForCausalLM d 32, 2 layers, 4 heads over 2 kv heads, SigLIP
 * tower 46 px -> 9 image positions, images from tests/golden/images/ padded to square).
 * Checks: the 12 greedy tokens of three prompts (image in the middle, image first, text only) equal
 * PyTorch's, with the KV cache and with the full recompute, in one batch of rows of different lengths
 * and one prompt at a time; every step's logits written (NaN-filled first) and equal between cache and
 * recompute and between batched and single runs, and within 5e-6 of PyTorch's; the last prompt
 * token's attention over the image positions per layer (mean over heads) within 4e-6 of PyTorch's
 * eager attentions, 0 for a row without an image; a stop token ends its row only; prompt errors
 * name the sample; llama_prefill's last states equal the training forward's.
 * Discrete input (the golden's "discrete" part, `--input discrete`): the tiny vision tokenizer of
 * tests/golden/tokenize/ encodes the two images to the reference's codes (every one of 9 x 3), and the
 * model reading summed codebook rows generates PyTorch's 12 greedy tokens for both image prompts
 * (batched and alone, cache and recompute), the first prompt's step logits within 4e-6 of PyTorch's.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "model/asvr.h"
#include "model/generate.h"
#include "model/vision_tokenizer.h"
#include "nn/ops.h"
#include "test.h"
#include "generate_fixture.h"

#define NP 3

static double relerr(const float *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
/* The tiny model: config from the training manifest (its keys mapped to the HF / ours), all
 * parameters and the tower from model_init.safetensors. */
static void load_model(asvr_model *m, safetensors **st_out) { *st_out = load_model_on(m, NN_CPU, 1); }

typedef struct golden {
    int32_t ids[NP][32];
    int n[NP];
    int32_t greedy[NP][16];
    int ng[NP];
    float *pixels[NP];
    double att[NP][8][16]; /* [prompt][layer][position] */
    int has_att[NP];
    double *step_logits;   /* prompt 0: [steps, vocab] */
    int steps0;
} golden;

static void load_golden(golden *g, const asvr_model *m) {
    json_t *j = load_json(GOLD), *ps = json_object_get(j, "prompts");
    T_EQ_INT(json_array_size(ps), NP);
    T_EQ_INT(jint(j, "image_positions"), m->c.image_positions);
    int S = m->c.vision.image_size, P = m->c.image_positions, V = m->c.llm.vocab;
    image_preprocess_opts po = {IMAGE_POLICY_PAD, S, {127, 127, 127}};
    for (int i = 0; i < NP; i++) {
        json_t *p = json_array_get(ps, (size_t)i), *ids = json_object_get(p, "ids"), *gr = json_object_get(p, "greedy");
        g->n[i] = (int)json_array_size(ids);
        for (int k = 0; k < g->n[i]; k++) g->ids[i][k] = (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
        g->ng[i] = (int)json_array_size(gr);
        for (int k = 0; k < g->ng[i]; k++) g->greedy[i][k] = (int32_t)json_integer_value(json_array_get(gr, (size_t)k));
        json_t *im = json_object_get(p, "image");
        g->pixels[i] = NULL;
        if (json_is_string(im)) {
            char path[512];
            snprintf(path, sizeof path, "%s/images/%s", ASVR_GOLDEN, json_string_value(im));
            g->pixels[i] = malloc(sizeof(float) * 3 * (size_t)S * S);
            asvr_error err = {{0}};
            if (gen_load_image(path, &po, m->c.image_mean, m->c.image_std, g->pixels[i], NULL, &err) < 0) {
                fprintf(stderr, "%s\n", err.msg);
                exit(1);
            }
        }
        json_t *at = json_object_get(p, "attention_last_token");
        g->has_att[i] = json_is_array(at);
        for (size_t l = 0; g->has_att[i] && l < json_array_size(at); l++)
            for (int k = 0; k < P; k++) g->att[i][l][k] = json_real_value(json_array_get(json_array_get(at, l), (size_t)k));
        json_t *sl = json_object_get(p, "step_logits");
        if (i == 0) {
            g->steps0 = (int)json_array_size(sl);
            g->step_logits = malloc(sizeof(double) * (size_t)g->steps0 * V);
            for (int s = 0; s < g->steps0; s++)
                for (int v = 0; v < V; v++)
                    g->step_logits[(size_t)s * V + v] = json_real_value(json_array_get(json_array_get(sl, (size_t)s), (size_t)v));
        }
    }
    json_decref(j);
}

typedef struct outcome {
    gen_result r;
    float *logits, *att;
} outcome;

/* Runs prompts idx[0..n) in one batch; logits and attention NaN-filled first. */
static void run(asvr_model *m, const golden *g, const int *idx, int n, int use_cache, int eos, outcome *out) {
    int N = 12, V = m->c.llm.vocab, L = m->c.llm.n_layers, P = m->c.image_positions;
    gen_prompt p[NP];
    for (int i = 0; i < n; i++) p[i] = (gen_prompt){g->ids[idx[i]], g->n[idx[i]], g->pixels[idx[i]], "fixture", NULL};
    out->logits = malloc(sizeof(float) * (size_t)n * N * V);
    out->att = malloc(sizeof(float) * (size_t)L * n * P);
    for (size_t i = 0; i < (size_t)n * N * V; i++) out->logits[i] = NAN;
    for (size_t i = 0; i < (size_t)L * n * P; i++) out->att[i] = NAN;
    gen_options o = {N, eos, use_cache, out->logits, out->att};
    asvr_error err = {{0}};
    int rc = asvr_generate(m, p, n, &o, &out->r, &err);
    T_CHECK(rc == 0, "generate: %s", err.msg);
}

static void outcome_free(outcome *o) {
    gen_result_free(&o->r);
    free(o->logits);
    free(o->att);
}

static int same_tokens(const gen_result *r, int row, const int32_t *want, int n) {
    if (r->n[row] != n) return 0;
    for (int k = 0; k < n; k++)
        if (r->ids[(size_t)row * r->max_new + k] != want[k]) return 0;
    return 1;
}

static void check_golden(asvr_model *m, const golden *g) {
    int V = m->c.llm.vocab, L = m->c.llm.n_layers, P = m->c.image_positions, N = 12;
    int all[NP] = {0, 1, 2};
    outcome bc, bn, one[NP][2];
    run(m, g, all, NP, 1, 2, &bc);
    run(m, g, all, NP, 0, 2, &bn);
    for (int i = 0; i < NP; i++) {
        T_CHECK(same_tokens(&bc.r, i, g->greedy[i], g->ng[i]), "prompt %d: batched cached tokens differ", i);
        T_CHECK(same_tokens(&bn.r, i, g->greedy[i], g->ng[i]), "prompt %d: batched recompute tokens differ", i);
        for (int c = 0; c < 2; c++) {
            run(m, g, &all[i], 1, c, 2, &one[i][c]);
            T_CHECK(same_tokens(&one[i][c].r, 0, g->greedy[i], g->ng[i]), "prompt %d alone (cache %d): tokens differ", i, c);
        }
    }
    T_EQ_INT(bc.r.steps, N);
    /* logits: all written, cache == recompute, batched == single, PyTorch's for prompt 0 */
    int finite = 1;
    for (size_t i = 0; i < (size_t)NP * N * V; i++) finite &= isfinite(bc.logits[i]) && isfinite(bn.logits[i]);
    T_CHECK(finite, "a logits element was not written");
    double e_cache = relerr_f(bc.logits, bn.logits, (int64_t)NP * N * V);
    double e_single = 0;
    for (int i = 0; i < NP; i++) {
        double e = relerr_f(bc.logits + (size_t)i * N * V, one[i][1].logits, (int64_t)N * V);
        if (e > e_single) e_single = e;
    }
    double e_torch = relerr(bc.logits, g->step_logits, (int64_t)g->steps0 * V);
    printf("logits: cache vs recompute %.2e, batched vs single %.2e, vs PyTorch (prompt 0, %d steps) %.2e\n", e_cache,
           e_single, g->steps0, e_torch);
    /* measured 3.2e-7, 3.9e-7 (f32, this CPU) and 3.7e-7 (vs the PyTorch golden) */
    T_CHECK(e_cache < 4e-6, "cache vs recompute logits %.3e", e_cache);
    T_CHECK(e_single < 4e-6, "batched vs single logits %.3e", e_single);
    T_CHECK(e_torch < 5e-6, "logits vs PyTorch %.3e", e_torch);
    /* attention maps */
    double worst = 0;
    for (int i = 0; i < NP; i++)
        for (int l = 0; l < L; l++) {
            const float *a = bc.att + ((size_t)l * NP + i) * P, *an = bn.att + ((size_t)l * NP + i) * P;
            const float *a1 = one[i][1].att + (size_t)l * P;
            if (!g->has_att[i]) {
                int zero = 1;
                for (int k = 0; k < P; k++) zero &= a[k] == 0.0f && an[k] == 0.0f && a1[k] == 0.0f;
                T_CHECK(zero, "prompt %d without image: attention map not 0", i);
                continue;
            }
            double e = relerr(a, g->att[i][l], P), e2 = relerr(an, g->att[i][l], P), e3 = relerr(a1, g->att[i][l], P);
            if (e > worst) worst = e;
            if (e2 > worst) worst = e2;
            if (e3 > worst) worst = e3;
        }
    printf("attention maps vs PyTorch: worst relative error %.2e\n", worst);
    T_CHECK(worst < 4e-6, "attention map error %.3e", worst); /* measured 2.8e-7 (vs the PyTorch golden) */
    outcome_free(&bc);
    outcome_free(&bn);
    for (int i = 0; i < NP; i++) outcome_free(&one[i][0]), outcome_free(&one[i][1]);

    /* a stop token ends its own row only: prompt 0 produces 238 third */
    for (int c = 0; c < 2; c++) {
        outcome st;
        run(m, g, all, NP, c, 238, &st);
        T_CHECK(same_tokens(&st.r, 0, g->greedy[0], 3), "stop token: row 0 should end after 3 tokens (n %d)", st.r.n[0]);
        T_CHECK(same_tokens(&st.r, 1, g->greedy[1], 12) && same_tokens(&st.r, 2, g->greedy[2], 12),
                "stop token: the other rows continue");
        outcome_free(&st);
        outcome s0;
        run(m, g, all, 1, c, 238, &s0);
        T_EQ_INT(s0.r.steps, 3);
        outcome_free(&s0);
    }
}

static void check_errors(asvr_model *m, const golden *g) {
    asvr_error err = {{0}};
    gen_result r;
    gen_options o = {4, 2, 1, NULL, NULL};
    int32_t two[] = {1, IMAGE_TOKEN_INDEX, 5, IMAGE_TOKEN_INDEX};
    gen_prompt p = {two, 4, g->pixels[0], "two-images", NULL};
    T_EQ_INT(asvr_generate(m, &p, 1, &o, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "two-images");
    int32_t bad[] = {1, 5, 300};
    p = (gen_prompt){bad, 3, NULL, "bad-id", NULL};
    T_EQ_INT(asvr_generate(m, &p, 1, &o, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "vocabulary");
    p = (gen_prompt){g->ids[2], g->n[2], g->pixels[0], "no-placeholder", NULL};
    T_EQ_INT(asvr_generate(m, &p, 1, &o, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "no-placeholder");
    p = (gen_prompt){g->ids[0], g->n[0], NULL, "no-image", NULL};
    T_EQ_INT(asvr_generate(m, &p, 1, &o, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "no image");
    asvr_error e2 = {{0}};
    float px[3];
    image_preprocess_opts po = {IMAGE_POLICY_PAD, 46, {127, 127, 127}};
    T_EQ_INT(gen_load_image(ASVR_GOLDEN "/images/does-not-exist.png", &po, m->c.image_mean, m->c.image_std, px, NULL, &e2), -1);
    T_STR_CONTAINS(e2.msg, "does-not-exist.png");
}

#define DISC_TOKENIZER ASVR_GOLDEN "/tokenize/tiny_tokenizer.safetensors"

static void check_discrete(void) {
    asvr_model m;
    safetensors *st = load_model_on(&m, NN_CPU, 0), *tst;
    m.c.input_discrete = 1; /* generation reads codes and the tokenizer's codebooks; the tower stays unused */
    asvr_error err = {{0}};
    vision_tokenizer *vt;
    T_CHECK(vision_tokenizer_load(DISC_TOKENIZER, &vt, &err) == 0, "tokenizer: %s", err.msg);
    T_CHECK(safetensors_open(DISC_TOKENIZER, &tst, &err) == 0 &&
                asvr_model_load_codebooks(&m, tst, "quantizer.codebooks.", &err) == 0, "codebooks: %s", err.msg);
    safetensors_close(tst);
    const vtok_config *vc = vision_tokenizer_config(vt);
    vtok_work *w = vtok_work_new(vt, 1);
    json_t *j = load_json(GOLD), *ps = json_object_get(json_object_get(j, "discrete"), "prompts");
    T_EQ_INT(json_array_size(ps), 2);
    int P = m.c.image_positions, D = (int)m.codebooks->shape[0], S = vc->enc.image_size, V = m.c.llm.vocab, N = 12;
    int32_t ids[2][32], want[2][16];
    int n[2], nw[2];
    uint16_t codes[2][64];
    float *px = malloc(sizeof(float) * 3 * (size_t)S * S);
    double *logits0 = NULL;
    int steps0 = 0, code_bad = 0;
    for (int i = 0; i < 2; i++) {
        json_t *p = json_array_get(ps, (size_t)i), *jid = json_object_get(p, "ids"), *jg = json_object_get(p, "greedy"),
               *jc = json_object_get(p, "codes");
        n[i] = (int)json_array_size(jid), nw[i] = (int)json_array_size(jg);
        for (int k = 0; k < n[i]; k++) ids[i][k] = (int32_t)json_integer_value(json_array_get(jid, (size_t)k));
        for (int k = 0; k < nw[i]; k++) want[i][k] = (int32_t)json_integer_value(json_array_get(jg, (size_t)k));
        char path[512];
        snprintf(path, sizeof path, "%s/images/%s", ASVR_GOLDEN, json_string_value(json_object_get(p, "image")));
        image_preprocess_opts po = {IMAGE_POLICY_PAD, S, {vc->pad[0], vc->pad[1], vc->pad[2]}};
        T_CHECK(gen_load_image(path, &po, vc->mean, vc->std, px, NULL, &err) == 0, "%s", err.msg);
        for (int k = 0; k < P * D; k++) codes[i][k] = 0xffff; /* every code must be written */
        vision_tokenizer_encode(vt, w, 1, px, codes[i]);
        T_EQ_INT((int)json_array_size(jc), P * D);
        for (int k = 0; k < P * D; k++) code_bad += codes[i][k] != json_integer_value(json_array_get(jc, (size_t)k));
        json_t *sl = json_object_get(p, "step_logits");
        if (i == 0) {
            steps0 = (int)json_array_size(sl);
            logits0 = malloc(sizeof(double) * (size_t)steps0 * V);
            for (int s = 0; s < steps0; s++)
                for (int v = 0; v < V; v++)
                    logits0[(size_t)s * V + v] = json_real_value(json_array_get(json_array_get(sl, (size_t)s), (size_t)v));
        }
    }
    T_CHECK(code_bad == 0, "%d codes differ from the reference tokenizer's", code_bad);
    T_CHECK(steps0 == N, "the golden holds prompt 0's %d step logits", steps0);
    float *lg = malloc(sizeof(float) * 2 * N * V);
    for (int c = 0; c < 2; c++) {
        for (int B = 1; B <= 2; B++) { /* B 1: each prompt alone; B 2: both in one batch */
            for (int first = 0; first + B <= 2; first++) {
                gen_prompt gp[2];
                for (int b = 0; b < B; b++) gp[b] = (gen_prompt){ids[first + b], n[first + b], NULL, "discrete", codes[first + b]};
                for (size_t i = 0; i < (size_t)2 * N * V; i++) lg[i] = NAN;
                gen_options o = {N, 2, c, lg, NULL};
                gen_result r;
                T_CHECK(asvr_generate(&m, gp, B, &o, &r, &err) == 0, "discrete generate: %s", err.msg);
                for (int b = 0; b < B; b++)
                    T_CHECK(same_tokens(&r, b, want[first + b], nw[first + b]),
                            "discrete prompt %d (batch of %d, cache %d): tokens differ", first + b, B, c);
                if (first == 0) {
                    int finite = 1;
                    for (size_t i = 0; i < (size_t)N * V; i++) finite &= isfinite(lg[i]);
                    T_CHECK(finite, "a discrete logits element was not written");
                    double e = relerr(lg, logits0, (int64_t)N * V);
                    printf("discrete input (batch %d, cache %d): logits vs PyTorch %.2e\n", B, c, e);
                    T_CHECK(e < 4e-6, "discrete logits vs PyTorch %.3e", e); /* measured 3.7e-7 (f32, this CPU) */
                }
                gen_result_free(&r);
            }
        }
    }
    /* a discrete model needs the codes of each image */
    gen_prompt bad = {ids[0], n[0], px, "pixels-only", NULL};
    gen_options o = {2, 2, 1, NULL, NULL};
    gen_result r;
    T_EQ_INT(asvr_generate(&m, &bad, 1, &o, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "codes");
    free(lg);
    free(logits0);
    free(px);
    json_decref(j);
    vtok_work_free(w);
    vision_tokenizer_free(vt);
    safetensors_close(st);
    asvr_model_free(&m);
}

/* llama_prefill's last states == the training forward's at the same rows (random inputs). */
static void check_prefill_vs_forward(asvr_model *m) {
    const llama_config *c = llama_cfg(m->llm);
    int B = 2, T = 7, D = c->dim;
    int32_t lens[2] = {7, 4}, pos[14], seg[14];
    nn_arena *ar = nn_arena_new("prefill test", NN_CPU);
    tensor *x = nn_arena_add(ar, "x", NN_F32, 3, (int64_t[]){B, T, D});
    tensor *hf = nn_arena_add(ar, "h_forward", NN_F32, 3, (int64_t[]){B, T, D});
    tensor *hl = nn_arena_add(ar, "h_last", NN_F32, 2, (int64_t[]){B, D});
    nn_arena_commit(ar);
    float *xv = x->data;
    uint32_t s = 12345;
    for (int i = 0; i < B * T * D; i++) s = s * 1664525u + 1013904223u, xv[i] = (float)((s >> 8) / 16777216.0 - 0.5);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) pos[b * T + t] = t, seg[b * T + t] = t < lens[b] ? 0 : -1;
    tensor tp = tensor_make("pos", NN_I32, NN_CPU, 2, (int64_t[]){B, T}, pos);
    tensor ts = tensor_make("seg", NN_I32, NN_CPU, 2, (int64_t[]){B, T}, seg);
    llama_acts *a = llama_acts_new(m->llm, B, T);
    llama_forward(m->llm, a, x, &tp, &ts, hf);
    llama_cache *kv = llama_cache_new(m->llm, B, T + 2, T, 0);
    op_fill(hl, NAN);
    llama_prefill(m->llm, kv, x, lens, hl, NULL);
    double e = 0;
    for (int b = 0; b < B; b++) {
        double eb = relerr_f((float *)hl->data + b * D, (float *)hf->data + ((size_t)b * T + lens[b] - 1) * D, D);
        if (eb > e) e = eb;
    }
    printf("prefill vs training forward (last states): %.2e\n", e);
    T_CHECK(e < 1e-6, "prefill vs forward %.3e", e); /* measured 0 (bit-identical here); ~ten f32 roundings */
    T_EQ_INT(llama_cache_len(kv, 0), 7);
    T_EQ_INT(llama_cache_len(kv, 1), 4);
    llama_cache_free(kv);
    llama_acts_free(a);
    nn_arena_free(ar);
}

int main(void) {
    asvr_model m;
    safetensors *st;
    load_model(&m, &st);
    golden g;
    load_golden(&g, &m);
    T_EQ_INT(gen_argmax((float[]){1, 3, 3, 2}, 4), 1);
    T_EQ_INT(gen_argmax((float[]){NAN, -1, NAN}, 3), 1);
    check_prefill_vs_forward(&m);
    check_golden(&m, &g);
    check_errors(&m, &g);
    check_discrete();
    for (int i = 0; i < NP; i++) free(g.pixels[i]);
    free(g.step_logits);
    safetensors_close(st);
    asvr_model_free(&m);
    return t_done();
}
