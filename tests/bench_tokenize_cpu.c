/* bench_tokenize_cpu.c — images/s of vision_tokenizer_encode on the CPU backend (fp32), the model alone
 * (no decoding, no store): our side of tools/bench_cpu.py's tokenizer row.
 *
 *   bench_tokenize_cpu TOKENIZER [--batch 8] [--iters 3] [--warmup 1]
 *
 * Encodes batches of seeded random normalised images and prints one JSON line
 * {"bench": "asvr-tokenize-cpu", "batch", "iters", "images_per_s", "s_per_batch"}. The GEMMs run on
 * OpenBLAS's threads (OPENBLAS_NUM_THREADS), the rest on the calling thread unless the backend splits it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/progress.h" /* asvr_now */
#include "model/vision_tokenizer.h"

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s TOKENIZER [--batch 8] [--iters 3] [--warmup 1]\n", argv[0]);
        return 2;
    }
    int batch = 8, iters = 3, warmup = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_tokenize_cpu: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (batch < 1 || iters < 1 || warmup < 0) {
        fprintf(stderr, "bench_tokenize_cpu: bad --batch/--iters/--warmup\n");
        return 2;
    }
    vision_tokenizer *vt;
    asvr_error err;
    if (vision_tokenizer_load(argv[1], &vt, &err) < 0) {
        fprintf(stderr, "bench_tokenize_cpu: %s\n", err.msg);
        return 1;
    }
    const vtok_config *c = vision_tokenizer_config(vt);
    int64_t S = c->enc.image_size, N = vision_tokenizer_positions(vt);
    size_t npx = (size_t)batch * 3 * (size_t)(S * S);
    float *img = malloc(npx * sizeof(float));
    uint16_t *codes = malloc((size_t)batch * (size_t)N * (size_t)c->depth * sizeof(uint16_t));
    if (!img || !codes) return 1;
    uint64_t r = 0x2545F4914F6CDD1DULL;
    for (size_t i = 0; i < npx; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        img[i] = 2.0f * (float)((r >> 40) & 0xFFFFFF) / 16777216.0f - 1.0f;
    }
    vtok_work *w = vtok_work_new(vt, batch);
    for (int i = 0; i < warmup; i++) vision_tokenizer_encode(vt, w, batch, img, codes);
    double t0 = asvr_now();
    for (int i = 0; i < iters; i++) vision_tokenizer_encode(vt, w, batch, img, codes);
    double el = asvr_now() - t0;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a of the codes: the same files give the same value */
    for (size_t i = 0; i < (size_t)batch * (size_t)N * (size_t)c->depth; i++) h = (h ^ codes[i]) * 1099511628211ULL;
    printf("{\"bench\": \"asvr-tokenize-cpu\", \"batch\": %d, \"iters\": %d, \"images_per_s\": %.4f, "
           "\"s_per_batch\": %.4f, \"codes_hash\": \"%016llx\"}\n",
           batch, iters, (double)batch * iters / el, el / iters, (unsigned long long)h);
    vtok_work_free(w);
    free(img);
    free(codes);
    vision_tokenizer_free(vt);
    return 0;
}
