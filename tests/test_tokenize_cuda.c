/* test_tokenize_cuda.c — the tokenizer on the CUDA backend against the CPU one, on the tiny test
 * tokenizers of tests/golden (semantic and appearance) and seeded random normalised images:
 *   - cuda f32: tap features and RVQ inputs within 6e-6 relative, every code equal;
 *   - cuda bf16: features within 2e-2 relative, codes agreeing on >= 90% of positions at depth 1
 *     (the agreement at every depth is printed);
 *   - asvr-tokenize encode --device cuda --dtype f32 on the golden images: the store records
 *     backend cuda-f32 and holds the CPU run's codes.
 * Without a CUDA build or a visible device it reports itself skipped (after the CPU-side refusals). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/vision_tokenizer.h"
#include "store/code_store.h"
#include "test.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"

#define B 3

static double relerr(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return isfinite(num) ? sqrt(num / (den > 0 ? den : 1e-300)) : INFINITY;
}

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float frand(void) { return t_frand(&rng); }

static vision_tokenizer *load(const char *path, nn_device dev, nn_dtype dt) {
    vtok_load_opts o;
    vtok_load_opts_default(&o);
    o.device = dev, o.dtype = dt;
    vision_tokenizer *vt = NULL;
    asvr_error err;
    int rc = vision_tokenizer_load_ex(path, &o, &vt, &err);
    T_CHECK(rc == 0, "loading %s on %s %s: %s", path, nn_device_name(dev), nn_dtype_name(dt), rc ? err.msg : "");
    return vt;
}

/* One tokenizer file: CPU reference, then cuda f32 and cuda bf16. */
static void compare(const char *path) {
    vision_tokenizer *cpu = load(path, NN_CPU, NN_F32);
    if (!cpu) return;
    const vtok_config *c = vision_tokenizer_config(cpu);
    int64_t S = c->enc.image_size, N = vision_tokenizer_positions(cpu), C = c->enc.hidden, E = c->embed_dim;
    int64_t D = c->depth, npx = B * 3 * S * S;
    float *img = malloc(sizeof(float) * (size_t)npx);
    for (int64_t i = 0; i < npx; i++) img[i] = frand(); /* normalised pixels lie in [-1, 1] */
    float *f_cpu = malloc(sizeof(float) * (size_t)(B * N * C)), *f_gpu = malloc(sizeof(float) * (size_t)(B * N * C));
    float *q_cpu = malloc(sizeof(float) * (size_t)(B * N * E)), *q_gpu = malloc(sizeof(float) * (size_t)(B * N * E));
    uint16_t *k_cpu = malloc(sizeof(uint16_t) * (size_t)(B * N * D)), *k_gpu = malloc(sizeof(uint16_t) * (size_t)(B * N * D));
    vtok_work *w = vtok_work_new(cpu, B);
    vision_tokenizer_features(cpu, w, B, img, f_cpu);
    vision_tokenizer_quant_input(cpu, w, B, img, q_cpu);
    vision_tokenizer_encode(cpu, w, B, img, k_cpu);
    vtok_work_free(w);
    for (int pass = 0; pass < 2; pass++) {
        nn_dtype dt = pass ? NN_BF16 : NN_F32;
        /* measured on the stand-in: f32 5.6e-7; bf16 8.0e-3, bf16 rounding through the tower (the bound stays) */
        double ftol = pass ? 2e-2 : 6e-6;
        vision_tokenizer *g = load(path, NN_CUDA, dt);
        if (!g) continue;
        T_CHECK(strcmp(vision_tokenizer_backend(g), pass ? "cuda-bf16" : "cuda-f32") == 0, "backend %s",
                vision_tokenizer_backend(g));
        vtok_work *gw = vtok_work_new(g, B + 1); /* a partial batch */
        for (int64_t i = 0; i < B * N * C; i++) f_gpu[i] = NAN;
        for (int64_t i = 0; i < B * N * E; i++) q_gpu[i] = NAN;
        for (int64_t i = 0; i < B * N * D; i++) k_gpu[i] = 0xFFFF;
        vision_tokenizer_features(g, gw, B, img, f_gpu);
        vision_tokenizer_quant_input(g, gw, B, img, q_gpu);
        vision_tokenizer_encode(g, gw, B, img, k_gpu);
        double ef = relerr(f_gpu, f_cpu, B * N * C), eq = relerr(q_gpu, q_cpu, B * N * E);
        printf("%s %s: features rel err %.3g, RVQ input rel err %.3g\n", c->kind, vision_tokenizer_backend(g), ef, eq);
        T_CHECK(ef < ftol, "%s %s features rel err %.3g >= %.0e", c->kind, vision_tokenizer_backend(g), ef, ftol);
        T_CHECK(eq < ftol, "%s %s RVQ input rel err %.3g >= %.0e", c->kind, vision_tokenizer_backend(g), eq, ftol);
        int unset = 0;
        for (int64_t i = 0; i < B * N * D; i++) unset += k_gpu[i] >= c->codebook_size;
        T_EQ_INT(unset, 0);
        printf("%s %s: code agreement with cpu-f32 per depth:", c->kind, vision_tokenizer_backend(g));
        double agree1 = 0;
        for (int64_t d = 0; d < D; d++) {
            int64_t same = 0;
            for (int64_t r = 0; r < B * N; r++) same += k_gpu[r * D + d] == k_cpu[r * D + d];
            double a = (double)same / (double)(B * N);
            if (d == 0) agree1 = a;
            printf(" d%lld %.1f%%", (long long)d + 1, 100.0 * a);
        }
        printf("\n");
        if (!pass) {
            int64_t diff = 0;
            for (int64_t i = 0; i < B * N * D; i++) diff += k_gpu[i] != k_cpu[i];
            T_CHECK(diff == 0, "%s cuda-f32: %lld of %lld codes differ from cpu-f32", c->kind, (long long)diff,
                    (long long)(B * N * D));
        } else {
            T_CHECK(agree1 >= 0.9, "%s cuda-bf16: depth-1 agreement %.1f%% < 90%%", c->kind, 100.0 * agree1);
        }
        vtok_times t = vtok_work_times(gw);
        T_EQ_INT(t.batches, 1);
        vtok_work_free(gw);
        vision_tokenizer_free(g);
    }
    free(img), free(f_cpu), free(f_gpu), free(q_cpu), free(q_gpu), free(k_cpu), free(k_gpu);
    vision_tokenizer_free(cpu);
}

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The encode pipeline on cuda f32 against the same run on the CPU. */
static void encode_cli(void) {
    char dir[] = "/tmp/asvr_test_tok_cuda_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    const char *dev[2] = {"--device cpu", "--device cuda --dtype f32"};
    /* ASVR_TEST_BIN_DIR: another build's bin/ (dev/cuda_emu/run.sh points it at the emulated CLI) */
    const char *bin = getenv("ASVR_TEST_BIN_DIR") ? getenv("ASVR_TEST_BIN_DIR") : ASVR_BIN_DIR;
    char store[2][600];
    for (int i = 0; i < 2; i++) {
        char cmd[4096];
        snprintf(store[i], sizeof store[i], "%s/s%d.lmdb", dir, i);
        snprintf(cmd, sizeof cmd,
                 "%s/bin/asvr-tokenize encode --list %s/tokenize/images.txt --image-root %s/images "
                 "--tokenizer %s/tokenize/tiny_tokenizer.safetensors --policy pad --out %s --batch 4 "
                 "--log-level error --stats %s/s%d.json %s",
                 bin, ASVR_GOLDEN, ASVR_GOLDEN, ASVR_GOLDEN, store[i], dir, i, dev[i]);
        T_EQ_INT(run(cmd), 0);
    }
    code_store *a = NULL, *g = NULL;
    asvr_error err;
    T_EQ_INT(code_store_open(store[0], &a, &err), 0);
    T_EQ_INT(code_store_open(store[1], &g, &err), 0);
    if (a && g) {
        T_CHECK(strcmp(code_store_get_meta(g)->backend, "cuda-f32") == 0, "backend recorded: %s",
                code_store_get_meta(g)->backend);
        T_EQ_INT(code_store_count(a), code_store_count(g));
        const char *keys[] = {"photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.png"};
        size_t per = (size_t)code_store_get_meta(a)->positions * (size_t)code_store_get_meta(a)->depth;
        uint16_t *x = malloc(2 * per * sizeof(uint16_t));
        for (int k = 0; k < 4; k++) {
            T_EQ_INT(code_store_get(a, keys[k], x, &err), 0);
            T_EQ_INT(code_store_get(g, keys[k], x + per, &err), 0);
            size_t diff = 0;
            for (size_t i = 0; i < per; i++) diff += x[i] != x[per + i];
            T_CHECK(diff == 0, "%s: %zu of %zu codes differ between cpu-f32 and cuda-f32", keys[k], diff, per);
        }
        free(x);
    }
    code_store_close(a);
    code_store_close(g);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_EQ_INT(run(cmd), 0);
}
#endif

/* Refusals that need no GPU: bf16 on the CPU, the fused kernel on the CPU, cuda without a device or
 * without a CUDA build. */
static void refusals(int have_device) {
    const char *tok = ASVR_GOLDEN "/tokenize/tiny_tokenizer.safetensors";
    vtok_load_opts o;
    vision_tokenizer *vt = NULL;
    asvr_error err;
    vtok_load_opts_default(&o);
    o.dtype = NN_BF16;
    T_EQ_INT(vision_tokenizer_load_ex(tok, &o, &vt, &err), -1);
    T_STR_CONTAINS(err.msg, "not supported");
    vtok_load_opts_default(&o);
    o.fused_vq = 1;
    T_EQ_INT(vision_tokenizer_load_ex(tok, &o, &vt, &err), -1);
    T_STR_CONTAINS(err.msg, "cuda only");
    if (!have_device) {
        vtok_load_opts_default(&o);
        o.device = NN_CUDA;
        T_EQ_INT(vision_tokenizer_load_ex(tok, &o, &vt, &err), -1);
        T_CHECK(strstr(err.msg, "no CUDA device") || strstr(err.msg, "no CUDA backend"), "cuda refused: %s", err.msg);
    }
    vtok_load_opts_default(&o);
    T_EQ_INT(vision_tokenizer_load_ex(tok, &o, &vt, &err), 0);
    if (vt) T_CHECK(strcmp(vision_tokenizer_backend(vt), "cpu-f32") == 0, "cpu backend name");
    vision_tokenizer_free(vt);
}

int main(void) {
#ifdef ASVR_HAVE_CUDA
    refusals(nn_cuda_available());
    if (!nn_cuda_available()) {
        t_skip("no CUDA device (the CPU-side refusals were checked)");
        return t_done();
    }
    compare(ASVR_GOLDEN "/tokenize/tiny_tokenizer.safetensors");
    compare(ASVR_GOLDEN "/tokenize_appearance/tiny_appearance.safetensors");
    encode_cli();
#else
    refusals(0);
    t_skip("no CUDA device (built without the CUDA backend)");
#endif
    return t_done();
}
