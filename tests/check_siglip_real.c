/* check_siglip_real.c — SigLIP (to the tap layer) + RVQ at full size against PyTorch outputs that
 * tools/check_siglip_real.py writes into a directory:
 *     check_siglip_real DIR
 * DIR/weights.safetensors: vision_model.* and quantizer_semantic.codebooks.{d}.weight, config JSON in
 * __metadata__["config"]; DIR/io.safetensors: pixel_values, features, codes (i32).
 * Prints one JSON line (errors, code agreement, timings); exits 1 when the features' relative error
 * is >= 1e-4, or a code of torch's features differs by more than a near-tie (the two chosen rows'
 * double-precision distances more than 1e-5 apart, relative).
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/safetensors.h"
#include "model/rvq.h"
#include "model/siglip.h"
#include "nn/ops.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static safetensors *open_st(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    asvr_error err = {{0}};
    safetensors *st = NULL;
    if (safetensors_open(path, &st, &err) < 0) ASVR_FATAL("run tools/check_siglip_real.py", "%s", err.msg);
    return st;
}

static void *load(const safetensors *st, const char *name, int64_t *numel) {
    const st_tensor *t = safetensors_find(st, name);
    CHECK(t != NULL, "run tools/check_siglip_real.py", "tensor '%s' missing", name);
    *numel = t->numel;
    void *p = asvr_malloc(sizeof(float) * (size_t)t->numel, name);
    if (t->dtype == ST_I32) {
        memcpy(p, t->data, t->nbytes);
        return p;
    }
    asvr_error err = {{0}};
    if (st_tensor_to_f32(t, p, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    return p;
}

static int geti(json_t *j, const char *k) {
    json_t *v = json_object_get(j, k);
    CHECK(json_is_integer(v), "", "config lacks '%s'", k);
    return (int)json_integer_value(v);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: check_siglip_real DIR\n");
        return 2;
    }
    asvr_error err = {{0}};
    safetensors *wst = open_st(argv[1], "weights.safetensors"), *io = open_st(argv[1], "io.safetensors");
    const char *cs = safetensors_metadata(wst, "config");
    CHECK(cs != NULL, "", "weights.safetensors has no config metadata");
    json_error_t je;
    json_t *cj = json_loads(cs, 0, &je);
    CHECK(cj != NULL, "", "config JSON: %s", je.text);
    siglip_config cfg = {.image_size = geti(cj, "image_size"), .patch_size = geti(cj, "patch_size"),
                         .hidden = geti(cj, "hidden_size"), .intermediate = geti(cj, "intermediate_size"),
                         .layers = geti(cj, "num_layers"), .heads = geti(cj, "num_heads"),
                         .ln_eps = (float)json_real_value(json_object_get(cj, "layer_norm_eps")),
                         .tap = geti(cj, "tap_layer"), .act = NN_ACT_GELU_TANH};
    int D = geti(cj, "rvq_depth"), K = geti(cj, "rvq_codebook_size"), B = geti(cj, "batch");
    int N = siglip_num_patches(&cfg), C = cfg.hidden, S = cfg.image_size;

    double t0 = now();
    siglip *m = NULL;
    if (siglip_load(&cfg, wst, "vision_model.", &m, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    rvq *q = NULL;
    if (rvq_load(wst, "quantizer_semantic.codebooks.", D, K, C, &q, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    double t_load = now() - t0;
    siglip_print_plan(m, stderr);
    siglip_acts *acts = siglip_acts_new(m, B);
    siglip_acts_print_plan(acts, stderr);
    rvq_work *w = rvq_work_new(q, (int64_t)B * N);

    int64_t np, nf, nc;
    float *pix = load(io, "pixel_values", &np), *feat = load(io, "features", &nf);
    int32_t *want = load(io, "codes", &nc);
    CHECK(np == (int64_t)B * 3 * S * S && nf == (int64_t)B * N * C && nc == (int64_t)B * N * D, "",
          "fixture sizes do not match the config");
    float *out = asvr_malloc(sizeof(float) * (size_t)nf, "features");
    tensor img = tensor_make("images", NN_F32, NN_CPU, 4, (int64_t[]){B, 3, S, S}, pix);
    tensor ot = tensor_make("features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, C}, out);
    op_fill(&ot, NAN);
    t0 = now();
    siglip_forward(m, acts, &img, &ot);
    double t_fwd = now() - t0;
    double num = 0, den = 0, maxabs = 0;
    int64_t nonfinite = 0;
    for (int64_t i = 0; i < nf; i++) {
        if (!isfinite(out[i])) nonfinite++;
        double d = (double)out[i] - feat[i];
        num += d * d, den += (double)feat[i] * feat[i];
        if (fabs(d) > maxabs) maxabs = fabs(d);
    }
    double rel = sqrt(num / den);

    uint16_t *codes = asvr_malloc(sizeof(uint16_t) * (size_t)nc, "codes");
    tensor ct = tensor_make("codes", NN_U16, NN_CPU, 3, (int64_t[]){B, N, D}, codes);
    tensor ft = tensor_make("torch_features", NN_F32, NN_CPU, 3, (int64_t[]){B, N, C}, feat);
    memset(codes, 0xFF, sizeof(uint16_t) * (size_t)nc);
    t0 = now();
    rvq_encode(q, w, &ft, &ct);
    double t_rvq = now() - t0;
    int64_t diff_torch_in = 0, diff_ours_in = 0, first_depth_diff = -1;
    for (int64_t i = 0; i < nc; i++) diff_torch_in += codes[i] != want[i];
    /* Each row's first differing code: both runs had the same residual there, so compare the two
     * chosen rows' distances in double. A gap within fp32 rounding of |r|^2 + |c|^2 is a near-tie
     * that the two GEMMs' summation orders decide differently, not a wrong choice. */
    double worst_gap = 0.0; /* max over rows of (d(ours) - d(torch)) / d(torch), in double */
    double *r = asvr_malloc(sizeof(double) * (size_t)C, "residual");
    for (int64_t row = 0; row < (int64_t)B * N; row++) {
        int d0 = -1;
        for (int d = 0; d < D && d0 < 0; d++)
            if (codes[row * D + d] != want[row * D + d]) d0 = d;
        if (d0 < 0) continue;
        for (int j = 0; j < C; j++) r[j] = feat[row * C + j];
        for (int d = 0; d < d0; d++) {
            const float *cb = (const float *)rvq_codebook(q, d)->data + (int64_t)want[row * D + d] * C;
            for (int j = 0; j < C; j++) r[j] -= cb[j];
        }
        const float *ca = (const float *)rvq_codebook(q, d0)->data + (int64_t)codes[row * D + d0] * C;
        const float *cw = (const float *)rvq_codebook(q, d0)->data + (int64_t)want[row * D + d0] * C;
        double da = 0, dw = 0;
        for (int j = 0; j < C; j++) da += (r[j] - ca[j]) * (r[j] - ca[j]), dw += (r[j] - cw[j]) * (r[j] - cw[j]);
        double gap = fabs(da - dw) / dw;
        fprintf(stderr, "row %lld depth %d: ours %u torch %d, double distances %.9g vs %.9g (rel gap %.2g)\n",
                (long long)row, d0, codes[row * D + d0], want[row * D + d0], da, dw, gap);
        if (gap > worst_gap) worst_gap = gap;
    }
    free(r);
    memset(codes, 0xFF, sizeof(uint16_t) * (size_t)nc);
    rvq_encode(q, w, &ot, &ct);
    for (int64_t i = 0; i < nc; i++)
        if (codes[i] != want[i]) {
            diff_ours_in++;
            if (first_depth_diff < 0 || i % D < first_depth_diff) first_depth_diff = i % D;
        }
    printf("{\"batch\": %d, \"tokens\": %d, \"width\": %d, \"tap\": %d, \"feature_rel_err\": %.4g, "
           "\"feature_max_abs_err\": %.4g, \"feature_norm\": %.6g, \"nonfinite\": %lld, \"codes\": %lld, "
           "\"code_diff_on_torch_features\": %lld, \"code_diff_on_our_features\": %lld, "
           "\"first_depth_with_diff\": %lld, \"worst_tie_gap_rel\": %.3g, \"load_s\": %.2f, \"siglip_forward_s\": %.2f, \"rvq_s\": %.2f}\n",
           B, N, C, cfg.tap, rel, maxabs, sqrt(den), (long long)nonfinite, (long long)nc,
           (long long)diff_torch_in, (long long)diff_ours_in, (long long)first_depth_diff, worst_gap, t_load, t_fwd,
           t_rvq);
    /* fp32 distances of ~|r|^2 carry rounding of a few 1e-7 relative; allow 1e-5 for near-ties. */
    int ok = rel < 1e-4 && nonfinite == 0 && worst_gap < 1e-5;
    rvq_work_free(w);
    rvq_free(q);
    siglip_acts_free(acts);
    siglip_free(m);
    free(pix), free(feat), free(want), free(out), free(codes);
    json_decref(cj);
    safetensors_close(wst);
    safetensors_close(io);
    return ok ? 0 : 1;
}
