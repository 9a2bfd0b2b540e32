/* check_tokenize_real_cuda.c — bf16 against f32 codes of a full-size tokenizer on real photos, on
 * the GPU (a checker: built, not run by ctest; it needs a GPU and a full-size tokenizer file).
 *
 *   python3 tools/convert_tokenizer.py random --preset so400m --seed 0 --out /tmp/so400m.safetensors
 *   build/tests/check_tokenize_real_cuda /tmp/so400m.safetensors [--cpu] [IMAGE ...]
 *
 * The images (default: the photographs and test images of tests/golden/images) are decoded and
 * preprocessed as asvr-tokenize does (pad policy, the tokenizer's pad colour, mean and std), then
 * encoded with the tokenizer on cuda-f32 and on cuda-bf16 (and, with --cpu, on cpu-f32 too: slow at
 * full size). It prints the feature error and, per depth, the share of positions whose codes agree
 * (a depth-d agreement counts positions whose first d codes all agree), as a table. Exit status 1
 * when bf16 and f32 agree on fewer than 99% of positions at depth 1 (or cuda-f32 and cpu-f32 on
 * fewer than 99.9%), 2 when it cannot run (no CUDA build or device, bad arguments).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "io/safetensors.h"
#include "model/vision_tokenizer.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

#define MAX_IMAGES 64
#define BATCH 8

static const char *default_images[] = {
    "photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.png", "jcmyk.jpg", "jgray.jpg", "jprog.jpg",
    "ptall.png",  "pwide.png",  "j420.jpg",   "exif1.jpg",  "exif6.png",
};

#ifdef ASVR_HAVE_CUDA
static vision_tokenizer *load(const char *path, nn_device dev, nn_dtype dt) {
    vtok_load_opts o;
    vtok_load_opts_default(&o);
    o.device = dev, o.dtype = dt;
    vision_tokenizer *vt;
    asvr_error err;
    if (vision_tokenizer_load_ex(path, &o, &vt, &err) < 0) {
        fprintf(stderr, "check_tokenize_real_cuda: %s\n", err.msg);
        exit(2);
    }
    return vt;
}

/* Features and codes of all n images with one backend. */
static void run(const char *path, nn_device dev, nn_dtype dt, int n, const float *px, float *feats, uint16_t *codes) {
    vision_tokenizer *vt = load(path, dev, dt);
    const vtok_config *c = vision_tokenizer_config(vt);
    size_t S = (size_t)c->enc.image_size, N = (size_t)vision_tokenizer_positions(vt);
    size_t per_img = 3 * S * S, per_feat = N * (size_t)c->enc.hidden, per_code = N * (size_t)c->depth;
    vtok_work *w = vtok_work_new(vt, BATCH);
    for (int i = 0; i < n; i += BATCH) {
        int b = n - i < BATCH ? n - i : BATCH;
        vision_tokenizer_features(vt, w, b, px + per_img * (size_t)i, feats + per_feat * (size_t)i);
        vision_tokenizer_encode(vt, w, b, px + per_img * (size_t)i, codes + per_code * (size_t)i);
    }
    fprintf(stderr, "  %s done\n", vision_tokenizer_backend(vt));
    vtok_work_free(w);
    vision_tokenizer_free(vt);
}

static double relerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return isfinite(num) ? sqrt(num / (den > 0 ? den : 1e-300)) : INFINITY;
}

/* Prints one table row; returns the depth-1 agreement. */
static double row(const char *name, const uint16_t *a, const uint16_t *b, size_t rows, int D, double ferr) {
    printf("| %-22s | %9.2e |", name, ferr);
    double first = 0;
    for (int d = 0; d < D; d++) {
        size_t same = 0, prefix = 0;
        for (size_t r = 0; r < rows; r++) {
            same += a[r * D + d] == b[r * D + d];
            int all = 1;
            for (int e = 0; e <= d; e++) all &= a[r * D + e] == b[r * D + e];
            prefix += all;
        }
        if (d == 0) first = (double)same / (double)rows;
        printf(" %6.2f%% (%6.2f%%) |", 100.0 * same / rows, 100.0 * prefix / rows);
    }
    printf("\n");
    return first;
}
#endif

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s TOKENIZER [--cpu] [IMAGE ...]\n", argv[0]);
        return 2;
    }
#ifndef ASVR_HAVE_CUDA
    fprintf(stderr, "check_tokenize_real_cuda: built without the CUDA backend\n");
    (void)default_images;
    return 2;
#else
    if (!nn_cuda_available()) {
        fprintf(stderr, "check_tokenize_real_cuda: no CUDA device visible\n");
        return 2;
    }
    const char *path = argv[1];
    int with_cpu = 0, n = 0;
    char *files[MAX_IMAGES];
    for (int i = 2; i < argc && n < MAX_IMAGES; i++) {
        if (!strcmp(argv[i], "--cpu")) with_cpu = 1;
        else files[n++] = strdup(argv[i]);
    }
    if (!n)
        for (size_t i = 0; i < sizeof default_images / sizeof *default_images; i++) {
            char p[1024];
            snprintf(p, sizeof p, "%s/images/%s", ASVR_GOLDEN, default_images[i]);
            files[n++] = strdup(p);
        }
    /* The config (size, normalisation) from the file's metadata, without loading the model. */
    vtok_config c;
    {
        safetensors *st;
        asvr_error err;
        const char *js;
        if (safetensors_open(path, &st, &err) < 0 || !(js = safetensors_metadata(st, VTOK_META_KEY)) ||
            vtok_config_parse(js, &c, &err) < 0) {
            fprintf(stderr, "check_tokenize_real_cuda: '%s' is not a readable tokenizer file\n", path);
            return 2;
        }
        safetensors_close(st);
    }
    int positions = (c.enc.image_size / c.enc.patch_size) * (c.enc.image_size / c.enc.patch_size);
    size_t S = (size_t)c.enc.image_size, N = (size_t)positions, D = (size_t)c.depth, C = (size_t)c.enc.hidden;
    float *px = malloc(sizeof(float) * 3 * S * S * (size_t)n);
    uint8_t *u8 = malloc(3 * S * S);
    image_decode_opts dopts;
    image_decode_opts_default(&dopts);
    image_preprocess_opts popts;
    image_preprocess_opts_default(&popts);
    popts.size = (int)S;
    memcpy(popts.pad, c.pad, 3);
    int kept = 0;
    for (int i = 0; i < n; i++) {
        image_rgb im = {0};
        asvr_error err;
        if (image_decode_file(files[i], &dopts, &im, &err) < 0 || image_preprocess(&im, &popts, u8, &err) < 0) {
            fprintf(stderr, "  skipping %s: %s\n", files[i], err.msg);
        } else {
            image_normalize_chw(u8, (int)S, (int)S, c.mean, c.std, px + 3 * S * S * (size_t)kept);
            kept++;
        }
        image_free(&im);
    }
    if (!kept) {
        fprintf(stderr, "check_tokenize_real_cuda: no image could be read\n");
        return 2;
    }
    fprintf(stderr, "check_tokenize_real_cuda: %d images, %s tokenizer %zupx, %zu positions, %zu x %d codebooks\n",
            kept, c.kind, S, N, D, c.codebook_size);
    size_t nf = N * C * (size_t)kept, nc = N * D * (size_t)kept;
    float *f32 = malloc(sizeof(float) * nf), *fbf = malloc(sizeof(float) * nf), *fcpu = malloc(sizeof(float) * nf);
    uint16_t *c32 = malloc(2 * nc), *cbf = malloc(2 * nc), *ccpu = malloc(2 * nc);
    run(path, NN_CUDA, NN_F32, kept, px, f32, c32);
    run(path, NN_CUDA, NN_BF16, kept, px, fbf, cbf);
    if (with_cpu) run(path, NN_CPU, NN_F32, kept, px, fcpu, ccpu);
    printf("\ncode agreement per depth over %zu positions: same code (same first d codes)\n\n", N * (size_t)kept);
    printf("| %-22s | %-9s |", "backends", "feat err");
    for (size_t d = 0; d < D; d++) printf("       depth %-2zu      |", d + 1);
    printf("\n|%s|%s|", "------------------------", "-----------");
    for (size_t d = 0; d < D; d++) printf("%s|", "---------------------");
    printf("\n");
    int rc = 0;
    double a = row("cuda-bf16 vs cuda-f32", cbf, c32, N * (size_t)kept, (int)D, relerr(fbf, f32, nf));
    if (a < 0.99) {
        fprintf(stderr, "FAIL: bf16 and f32 agree on %.2f%% of positions at depth 1 (< 99%%)\n", 100.0 * a);
        rc = 1;
    }
    if (with_cpu) {
        double b = row("cuda-f32 vs cpu-f32", c32, ccpu, N * (size_t)kept, (int)D, relerr(f32, fcpu, nf));
        row("cuda-bf16 vs cpu-f32", cbf, ccpu, N * (size_t)kept, (int)D, relerr(fbf, fcpu, nf));
        if (b < 0.999) {
            fprintf(stderr, "FAIL: cuda-f32 and cpu-f32 agree on %.2f%% of positions at depth 1 (< 99.9%%)\n",
                    100.0 * b);
            rc = 1;
        }
    }
    printf("\n%s\n", rc ? "FAIL" : "OK");
    for (int i = 0; i < n; i++) free(files[i]);
    free(px), free(u8), free(f32), free(fbf), free(fcpu), free(c32), free(cbf), free(ccpu);
    return rc;
#endif
}
