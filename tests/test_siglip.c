/* test_siglip.c — the SigLIP encoder (to the tap layer) and the greedy RVQ against HF transformers /
 * PyTorch outputs (tests/golden/siglip/, made by tools/gen_siglip_fixtures.py): features within
 * 5e-6 relative error (measured 4.9e-7), codes exactly (including planted exact ties: lowest index
 * wins, padding row never chosen), every output element written, and clear errors for a checkpoint that does not fit.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "model/rvq.h"
#include "model/siglip.h"
#include "nn/ops.h"
#include "test.h"

#define GOLD ASVR_GOLDEN "/siglip"

static safetensors *open_or_die(const char *path) {
    asvr_error err = {{0}};
    safetensors *st = NULL;
    if (safetensors_open(path, &st, &err) < 0) {
        fprintf(stderr, "cannot open %s: %s\n(regenerate with tools/gen_siglip_fixtures.py)\n", path, err.msg);
        exit(1);
    }
    return st;
}

/* A fixture tensor converted to f32 (or copied as i32) into fresh memory. */
static void *get(const safetensors *st, const char *name, int64_t *numel) {
    const st_tensor *t = safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "fixture tensor '%s' missing\n", name);
        exit(1);
    }
    *numel = t->numel;
    if (t->dtype == ST_I32) {
        void *p = malloc(t->nbytes);
        memcpy(p, t->data, t->nbytes);
        return p;
    }
    float *p = malloc(sizeof(float) * (size_t)t->numel);
    asvr_error err = {{0}};
    if (st_tensor_to_f32(t, p, &err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        exit(1);
    }
    return p;
}

static int cfg_int(json_t *j, const char *k) {
    json_t *v = json_object_get(j, k);
    if (!json_is_integer(v)) {
        fprintf(stderr, "fixture config lacks integer '%s'\n", k);
        exit(1);
    }
    return (int)json_integer_value(v);
}

static double relerr(const float *a, const float *b, int64_t n, int *nonfinite) {
    double num = 0, den = 0;
    *nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) (*nonfinite)++;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

int main(void) {
    asvr_error err = {{0}};
    safetensors *wst = open_or_die(GOLD "/weights.safetensors");
    safetensors *io = open_or_die(GOLD "/io.safetensors");
    const char *cfg_s = safetensors_metadata(wst, "config");
    T_CHECK(cfg_s != NULL, "weights carry a config");
    json_error_t je;
    json_t *cj = json_loads(cfg_s ? cfg_s : "{}", 0, &je);
    T_CHECK(cj != NULL, "config JSON parses");
    siglip_config cfg = {.image_size = cfg_int(cj, "image_size"), .patch_size = cfg_int(cj, "patch_size"),
                         .hidden = cfg_int(cj, "hidden_size"), .intermediate = cfg_int(cj, "intermediate_size"),
                         .layers = cfg_int(cj, "num_layers"), .heads = cfg_int(cj, "num_heads"),
                         .ln_eps = (float)json_real_value(json_object_get(cj, "layer_norm_eps")),
                         .tap = cfg_int(cj, "tap_layer"), .act = NN_ACT_GELU_TANH};
    int D = cfg_int(cj, "rvq_depth"), K = cfg_int(cj, "rvq_codebook_size"), B = cfg_int(cj, "batch");
    T_CHECK(cfg.ln_eps > 0, "eps %g", (double)cfg.ln_eps);
    int N = siglip_num_patches(&cfg), C = cfg.hidden, S = cfg.image_size;

    siglip *m = NULL;
    T_EQ_INT(siglip_load(&cfg, wst, "vision_model.", &m, &err), 0);
    if (!m) {
        fprintf(stderr, "%s\n", err.msg);
        return t_done();
    }
    siglip_print_plan(m, stderr);
    siglip_acts *acts = siglip_acts_new(m, B);
    siglip_acts_print_plan(acts, stderr);

    int64_t n_pix, n_feat, n_codes, n_tie, n_tie_codes;
    float *pix = get(io, "pixel_values", &n_pix);
    float *feat = get(io, "features", &n_feat);
    int32_t *want_codes = get(io, "codes", &n_codes);
    float *tie_in = get(io, "tie_input", &n_tie);
    int32_t *want_tie = get(io, "tie_codes", &n_tie_codes);
    T_EQ_INT(n_pix, (int64_t)B * 3 * S * S);
    T_EQ_INT(n_feat, (int64_t)B * N * C);
    T_EQ_INT(n_codes, (int64_t)B * N * D);

    tensor images = tensor_make("images", NN_F32, NN_CPU, 4, (int64_t[]){B, 3, S, S}, pix);
    float *outbuf = malloc(sizeof(float) * (size_t)n_feat);
    tensor out = tensor_make("features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, C}, outbuf);
    op_fill(&out, NAN);
    siglip_forward(m, acts, &images, &out);
    int nonfinite;
    double e = relerr(outbuf, feat, n_feat, &nonfinite);
    printf("siglip tap-layer features: relative error %.3g over %lld values\n", e, (long long)n_feat);
    T_EQ_INT(nonfinite, 0);
    T_CHECK(e < 5e-6, "relative error %.3g", e); /* measured 4.9e-7 (vs the golden); gelu erf-vs-tanh alone is 1.4e-4 */

    /* A smaller batch than planned: image 1 alone gives the same features. */
    tensor img1 = tensor_make("image1", NN_F32, NN_CPU, 4, (int64_t[]){1, 3, S, S}, pix + 3 * S * S);
    tensor out1 = tensor_make("features1", NN_F32, NN_CPU, 3, (int64_t[]){1, N, C}, outbuf);
    op_fill(&out, NAN);
    siglip_forward(m, acts, &img1, &out1);
    e = relerr(outbuf, feat + N * C, (int64_t)N * C, &nonfinite);
    T_EQ_INT(nonfinite, 0);
    T_CHECK(e < 5e-6, "batch-1 relative error %.3g", e); /* measured 4.9e-7 (vs the golden) */

    /* RVQ: codes of torch's features must match exactly; so must codes of our features. */
    rvq *q = NULL;
    T_EQ_INT(rvq_load(wst, "quantizer_semantic.codebooks.", D, K, C, &q, &err), 0);
    if (!q) {
        fprintf(stderr, "%s\n", err.msg);
        return t_done();
    }
    rvq_work *w = rvq_work_new(q, (int64_t)B * N);
    uint16_t *codes = malloc(sizeof(uint16_t) * (size_t)n_codes);
    tensor ct = tensor_make("codes", NN_U16, NN_CPU, 3, (int64_t[]){B, N, D}, codes);
    tensor ft = tensor_make("torch_features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, C}, feat);
    memset(codes, 0xFF, sizeof(uint16_t) * (size_t)n_codes);
    rvq_encode(q, w, &ft, &ct);
    int bad = 0;
    for (int64_t i = 0; i < n_codes; i++) bad += codes[i] != want_codes[i];
    T_EQ_INT(bad, 0);
    siglip_forward(m, acts, &images, &out);
    memset(codes, 0xFF, sizeof(uint16_t) * (size_t)n_codes);
    rvq_encode(q, w, &out, &ct);
    bad = 0;
    for (int64_t i = 0; i < n_codes; i++) bad += codes[i] != want_codes[i];
    printf("rvq: %lld codes, %d differ from torch on our features\n", (long long)n_codes, bad);
    T_EQ_INT(bad, 0);
    double fsum = 0; /* the input was not modified */
    for (int64_t i = 0; i < n_feat; i++) fsum += fabs((double)outbuf[i] - feat[i]);
    /* measured 7.9e-7: our features' own distance from the golden ones (a residual left in place is O(1)) */
    T_CHECK(fsum / (double)n_feat < 8e-6, "features unchanged by rvq_encode");

    int M = (int)(n_tie / C);
    int32_t tie_codes[64];
    tensor tin = tensor_make("tie_input", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, tie_in);
    tensor tco = tensor_make("tie_codes", NN_I32, NN_CPU, 2, (int64_t[]){M, D}, tie_codes);
    for (int i = 0; i < M * D; i++) tie_codes[i] = -1;
    rvq_encode(q, w, &tin, &tco);
    for (int i = 0; i < M * D; i++)
        T_CHECK(tie_codes[i] == want_tie[i], "tie row %d depth %d: %d, torch %d", i / D, i % D,
                tie_codes[i], want_tie[i]);
    T_EQ_INT(tie_codes[0], 11);
    T_EQ_INT(tie_codes[D], 12);
    T_EQ_INT(tie_codes[1], 7);

    /* A checkpoint that does not fit the config: the error names the key and the shapes. */
    siglip *bad_m = NULL;
    siglip_config c2 = cfg;
    c2.intermediate = cfg.intermediate + 1;
    T_EQ_INT(siglip_load(&c2, wst, "vision_model.", &bad_m, &err), -1);
    T_STR_CONTAINS(err.msg, "encoder.layers.0.mlp.fc1.weight");
    T_STR_CONTAINS(err.msg, "expected [97, 48]");
    T_CHECK(bad_m == NULL, "no model on failure");
    c2 = cfg;
    c2.layers = 6, c2.tap = 5;
    T_EQ_INT(siglip_load(&c2, wst, "vision_model.", &bad_m, &err), -1);
    T_STR_CONTAINS(err.msg, "'vision_model.encoder.layers.4.layer_norm1.weight' is missing");
    T_EQ_INT(siglip_load(&cfg, wst, "model.", &bad_m, &err), -1);
    T_STR_CONTAINS(err.msg, "model.embeddings.patch_embedding.weight");
    c2 = cfg;
    c2.tap = 0;
    T_EQ_INT(siglip_load(&c2, wst, "vision_model.", &bad_m, &err), -1);
    T_STR_CONTAINS(err.msg, "tap layer");
    rvq *bad_q = NULL;
    T_EQ_INT(rvq_load(wst, "quantizer_semantic.codebooks.", D + 1, K, C, &bad_q, &err), -1);
    T_STR_CONTAINS(err.msg, "codebooks.3.weight");
    T_EQ_INT(rvq_load(wst, "quantizer_semantic.codebooks.", D, K - 2, C, &bad_q, &err), -1);
    T_STR_CONTAINS(err.msg, "has shape [65, 48]");

    rvq_work_free(w);
    rvq_free(q);
    siglip_acts_free(acts);
    siglip_free(m);
    free(pix), free(feat), free(want_codes), free(tie_in), free(want_tie), free(outbuf), free(codes);
    json_decref(cj);
    safetensors_close(wst);
    safetensors_close(io);
    return t_done();
}
