/* bench_tokenize_cuda.c — images/s of vision_tokenizer_encode on the CUDA backend, and its MFU.
 *
 *   bench_tokenize_cuda TOKENIZER [--batch 64] [--iters 10] [--warmup 3] [--dtype bf16|f32]
 *                       [--vq gemm|fused] [--peak-n 8192]
 *
 * Loads the tokenizer file (e.g. random weights at the SO400M shape from
 * `tools/convert_tokenizer.py random --preset so400m --out tok.safetensors`) on the GPU, encodes
 * batches of seeded random normalised images from pinned host memory (upload, model, codes back),
 * and prints one human line and one JSON line {"bench": "asvr-tokenize-cuda", ...}: images/s end to
 * end and model-only, the encoder's FLOPs per image (counted below from the config), the achieved
 * TFLOP/s, the measured peak of a bf16 cuBLAS GEMM of size peak-n^3 on this GPU, and MFU = achieved
 * / that peak. tools/bench_tokenize_gpu.py runs it next to the PyTorch reference.
 * Built without CUDA (or without a device) it says so and exits 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/progress.h" /* asvr_now */
#include "model/vision_tokenizer.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

/* Multiply-adds x 2 of one image through the tokenizer: patch embedding, `tap` encoder layers
 * (q, k, v, o projections, the two attention products, the MLP), the projection block (appearance)
 * and the D distance GEMMs of the RVQ. Elementwise work (norms, GELU, softmax, argmin) is not
 * counted, as usual for MFU. */
__attribute__((unused)) static double flops_per_image(const vtok_config *c) {
    double N = (double)(c->enc.image_size / c->enc.patch_size) * (c->enc.image_size / c->enc.patch_size);
    double C = c->enc.hidden, I = c->enc.intermediate, p = c->enc.patch_size, E = c->embed_dim;
    double f = 2.0 * N * C * 3.0 * p * p;
    f += c->enc.tap * (2.0 * N * C * C * 4.0 + 2.0 * 2.0 * N * N * C + 2.0 * 2.0 * N * C * I);
    if (c->kind_id == VTOK_APPEARANCE) f += 2.0 * N * C * E + 2.0 * N * E * E * 9.0 + (C != E ? 2.0 * N * C * E : 0.0);
    f += c->depth * 2.0 * N * (double)c->codebook_size * E;
    return f;
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s TOKENIZER [--batch 64] [--iters 10] [--warmup 3] [--dtype bf16|f32] "
                        "[--vq gemm|fused] [--peak-n 8192]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1], *dtype = "bf16", *vq = "gemm";
    int batch = 64, iters = 10, warmup = 3, peak_n = 8192;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype")) dtype = argv[i + 1];
        else if (!strcmp(argv[i], "--vq")) vq = argv[i + 1];
        else if (!strcmp(argv[i], "--peak-n")) peak_n = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_tokenize_cuda: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (batch < 1 || iters < 1 || warmup < 0 || (strcmp(dtype, "bf16") && strcmp(dtype, "f32")) ||
        (strcmp(vq, "gemm") && strcmp(vq, "fused"))) {
        fprintf(stderr, "bench_tokenize_cuda: bad --batch/--iters/--warmup/--dtype/--vq\n");
        return 2;
    }
#ifndef ASVR_HAVE_CUDA
    (void)path, (void)peak_n;
    fprintf(stderr, "bench_tokenize_cuda: built without the CUDA backend\n");
    return 2;
#else
    if (!nn_cuda_available()) {
        fprintf(stderr, "bench_tokenize_cuda: no CUDA device visible\n");
        return 2;
    }
    vtok_load_opts o;
    vtok_load_opts_default(&o);
    o.device = NN_CUDA;
    o.dtype = strcmp(dtype, "bf16") == 0 ? NN_BF16 : NN_F32;
    o.fused_vq = strcmp(vq, "fused") == 0;
    vision_tokenizer *vt;
    asvr_error err;
    double tl = asvr_now();
    if (vision_tokenizer_load_ex(path, &o, &vt, &err) < 0) {
        fprintf(stderr, "bench_tokenize_cuda: %s\n", err.msg);
        return 1;
    }
    tl = asvr_now() - tl;
    const vtok_config *c = vision_tokenizer_config(vt);
    int64_t S = c->enc.image_size, N = vision_tokenizer_positions(vt);
    size_t npx = (size_t)batch * 3 * (size_t)(S * S);
    float *img = nn_cuda_host_alloc(npx * sizeof(float), "benchmark images");
    uint16_t *codes = nn_cuda_host_alloc((size_t)batch * (size_t)N * (size_t)c->depth * sizeof(uint16_t), "codes");
    uint64_t r = 0x2545F4914F6CDD1DULL;
    for (size_t i = 0; i < npx; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        img[i] = 2.0f * (float)((r >> 40) & 0xFFFFFF) / 16777216.0f - 1.0f;
    }
    vtok_work *w = vtok_work_new(vt, batch);
    for (int i = 0; i < warmup; i++) vision_tokenizer_encode(vt, w, batch, img, codes);
    vtok_times before = vtok_work_times(w);
    nn_cuda_sync();
    double t0 = asvr_now();
    for (int i = 0; i < iters; i++) vision_tokenizer_encode(vt, w, batch, img, codes);
    nn_cuda_sync();
    double el = asvr_now() - t0;
    vtok_times after = vtok_work_times(w);
    double model_s = after.compute_s - before.compute_s, up = after.upload_s - before.upload_s,
           down = after.download_s - before.download_s;
    double imgs = (double)batch * iters, ips = imgs / el, mips = imgs / model_s;
    double fpi = flops_per_image(c), tflops = fpi * mips / 1e12;
    double peak = nn_cuda_gemm_peak_tflops(peak_n, 20);
    printf("%s (%s, %s, vq %s): batch %d, %d iterations after %d warm-up: %.1f images/s end to end, %.1f "
           "model-only (upload %.1f ms, model %.1f ms, download %.1f ms per batch); %.1f GFLOP/image -> %.1f "
           "TFLOP/s; bf16 GEMM %d^3 peak %.1f TFLOP/s -> MFU %.1f%%; load %.1f s\n",
           path, c->kind, vision_tokenizer_backend(vt), vq, batch, iters, warmup, ips, mips, 1e3 * up / iters,
           1e3 * model_s / iters, 1e3 * down / iters, fpi / 1e9, tflops, peak_n, peak, 100.0 * tflops / peak, tl);
    printf("{\"bench\": \"asvr-tokenize-cuda\", \"backend\": \"%s\", \"vq\": \"%s\", \"batch\": %d, \"iters\": %d, "
           "\"images_per_s\": %.3f, \"model_images_per_s\": %.3f, \"gflop_per_image\": %.3f, \"tflops\": %.3f, "
           "\"gemm_peak_tflops\": %.3f, \"mfu\": %.5f}\n",
           vision_tokenizer_backend(vt), vq, batch, iters, ips, mips, fpi / 1e9, tflops, peak, tflops / peak);
    vtok_work_free(w);
    nn_cuda_host_free(img);
    nn_cuda_host_free(codes);
    vision_tokenizer_free(vt);
    return 0;
#endif
}
