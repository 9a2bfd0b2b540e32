/* bench_train_cuda.c — our side of the GPU training benchmark: tokens/s of one full ASVR training
 * step (frozen tower forward, projector, LLaMA and visual head forward + backward, AdamW) at the
 * benchmark configuration, with the time split into phases.
 *
 *   bench_train_cuda TOKENIZER [--config MODEL.json] [--device cuda|cpu] [--rows 4] [--seq 2048]
 *                    [--steps 10] [--warmup 3] [--seed 0] [--attention auto|kept|flash]
 *                    [--recompute N] [--precision f32|bf16] [--scales 384,768,1152]
 *
 * TOKENIZER: a vision-tokenizer file whose tower and codebooks match the config (for the benchmark:
 * `tools/convert_tokenizer.py random --preset so400m`, random weights). Without --config the model is
 * the benchmark's: LLaMA d 4096, 8 layers, 32 heads, FFN 11008, vocab 32000; SigLIP-SO400M to layer
 * 26; visual head E 2048, 16 heads, D 8, K 16384, 3 layers, FFN 4096; all trainable but the tower.
 * Attention: flash (log-sum-exps kept, probabilities recomputed) on cuda, kept probabilities on cpu,
 * unless --attention says otherwise. Precision: as asvr-train's default, the frozen tower in bf16 and
 * mixed precision (bf16 weight copies and activations, f32 masters) on cuda unless --precision f32.
 * --scales runs the input tower in S2 mode at those scales (model/s2.h: 14 tower forwards per image at
 * 384/768/1152, the projector reading 3 x 1152 features; the pixels are drawn at the largest scale).
 * Data: `rows` rows of `seq` positions, one sample per row: the image's positions first, then random
 * text, every text position supervised; random codes and pixels (seeded).
 * Prints a human summary on stderr and one JSON line on stdout: tokens_per_s, s_per_step, the phases
 * in seconds per step (vision, llm_forward, text_head, visual_head, llm_backward, projector_backward
 * from asvr_acts' phase clocks, which wait for the device at each boundary; optimizer;
 * forward_backward, their sum), peak_bytes (the planned arenas: parameters,
 * gradients, optimizer state, activations), device_used_bytes (cuda: the device memory in use after the
 * last step, context and conversion scratch included — nothing is freed between steps, so this is the
 * run's peak but for cuBLAS's transient workspace), the losses of every step. tools/bench_train_gpu.py runs it
 * next to the PyTorch step (`--ours`) and computes both sides' MFU with one FLOP count.
 * --device cpu with a small --config checks the program itself on a machine without a GPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/progress.h" /* asvr_now */
#include "io/safetensors.h"
#include "model/asvr.h"
#include "model/vision_tokenizer.h"
#include "optim.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

static const char *BENCH_CONFIG =
    "{\"llm\": {\"hidden_size\": 4096, \"num_hidden_layers\": 8, \"num_attention_heads\": 32,"
    " \"num_key_value_heads\": 32, \"intermediate_size\": 11008, \"vocab_size\": 32000, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 10000.0},"
    " \"vision\": {\"image_size\": 384, \"patch_size\": 14, \"hidden_size\": 1152, \"intermediate_size\": 4304,"
    " \"num_layers\": 27, \"num_heads\": 16, \"layer_norm_eps\": 1e-06, \"tap_layer\": 26,"
    " \"image_mean\": [0.5, 0.5, 0.5], \"image_std\": [0.5, 0.5, 0.5]},"
    " \"visual_head\": {\"embed_dim\": 2048, \"n_heads\": 16, \"depth\": 8, \"codebook_size\": 16384, \"n_layers\": 3,"
    " \"ffn_dim\": 4096, \"rms_norm_eps\": 1e-06},"
    " \"image_positions\": 729}";

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void sync_dev(nn_device dev) {
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) nn_cuda_sync();
#else
    (void)dev;
#endif
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: bench_train_cuda TOKENIZER [--config MODEL.json] [--device cuda|cpu] [--rows N]"
                        " [--seq T] [--steps N] [--warmup N] [--seed S] [--attention auto|kept|flash] [--recompute N]"
                        " [--precision f32|bf16]\n");
        return 2;
    }
    const char *tok_path = argv[1], *config_path = NULL, *device = "cuda";
    int rows = 4, T = 2048, steps = 10, warmup = 3, flash = -1, recompute = 0, bf16 = -1;
    uint64_t seed = 0;
    const char *scales = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) ASVR_FATAL("see the usage line", "option %s needs a value", a);
        if (!strcmp(a, "--config")) config_path = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--rows")) rows = atoi(v);
        else if (!strcmp(a, "--seq")) T = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--recompute")) recompute = atoi(v);
        else if (!strcmp(a, "--precision")) bf16 = !strcmp(v, "bf16") ? 1 : !strcmp(v, "f32") ? 0 : -2;
        else if (!strcmp(a, "--attention")) flash = !strcmp(v, "flash") ? 1 : !strcmp(v, "kept") ? 0 : -1;
        else if (!strcmp(a, "--scales")) scales = v;
        else ASVR_FATAL("see the usage line", "unknown option %s", a);
        i++;
    }
    nn_device dev = NN_CPU;
    if (!strcmp(device, "cuda")) {
#ifdef ASVR_HAVE_CUDA
        if (!nn_cuda_available()) {
            fprintf(stderr, "bench_train_cuda: no CUDA device is visible\n");
            return 2;
        }
        dev = NN_CUDA;
#else
        fprintf(stderr, "bench_train_cuda: built without the CUDA backend\n");
        return 2;
#endif
    } else if (strcmp(device, "cpu") != 0) {
        ASVR_FATAL("use cuda or cpu", "unknown --device %s", device);
    }
    CHECK(rows >= 1 && steps >= 1 && warmup >= 0, "", "rows %d, steps %d, warmup %d", rows, steps, warmup);

    asvr_error err;
    char *config_text = NULL;
    if (config_path) {
        size_t n;
        uint8_t *bytes;
        if (asvr_read_file(config_path, &bytes, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        config_text = (char *)bytes;
    } else {
        config_text = strdup(BENCH_CONFIG);
    }
    asvr_config mc;
    if (asvr_config_from_json(config_text, &mc, &err) < 0) ASVR_FATAL("check the config", "%s", err.msg);
    free(config_text);
    CHECK(mc.has_head, "add a visual_head", "the benchmark config has no visual head");
    if (scales) { /* S2: "384,768,1152" */
        mc.n_scales = 0;
        for (const char *p = scales; *p && mc.n_scales < S2_MAX_SCALES; p += *p == ',') {
            char *end;
            mc.scales[mc.n_scales++] = (int)strtol(p, &end, 10);
            CHECK(end != p, "give --scales as a comma-separated list", "--scales '%s'", scales);
            p = end;
        }
        if (s2_scales_check(mc.scales, mc.n_scales, mc.vision.image_size, &err) < 0) ASVR_FATAL("see --scales", "%s", err.msg);
    }
    mc.flash_attention = flash < 0 ? dev == NN_CUDA : flash;
    if (asvr_config_set_recompute(&mc, recompute, NULL, &err) < 0) ASVR_FATAL("see --recompute", "%s", err.msg);
    mc.tower_bf16 = dev == NN_CUDA; /* the frozen tower in bf16 on the GPU, as the reference runs it */
    CHECK(bf16 >= -1 && (bf16 != 1 || dev == NN_CUDA), "give --precision f32 or bf16 (bf16 on cuda only)",
          "bad --precision for device %s", device);
    mc.compute_bf16 = bf16 < 0 ? dev == NN_CUDA : bf16;
    const int P = mc.image_positions, D = mc.head.depth, K = mc.head.codebook_size, S = asvr_input_size(&mc);
    CHECK(T > P + 1, "raise --seq", "a row of %d positions cannot hold the %d image positions and text", T, P);

    asvr_model m;
    asvr_model_init(&m, &mc);
    param_set_trainable(&m.ps, "", 1); /* stage it: LLM, projector and head train; the tower is apart */
    param_set_set_device(&m.ps, dev);
    param_set_commit(&m.ps);
    param_set_init_random(&m.ps, seed);
    safetensors *st;
    if (safetensors_open(tok_path, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    if (asvr_model_load_tower(&m, st, "vision_model.", &err) < 0 ||
        asvr_model_load_codebooks(&m, st, "quantizer.codebooks.", &err) < 0)
        ASVR_FATAL("the tokenizer file must match the config (tower under vision_model., codebooks under "
                   "quantizer.codebooks.)",
                   "%s", err.msg);
    safetensors_close(st);

    optim_config oc = {.lr = 1e-5, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .clip_norm = 1.0,
                       .total_steps = warmup + steps, .warmup_steps = 0};
    optim opt;
    optim_init(&opt, &oc, &m.ps);
    asvr_acts *acts = asvr_acts_new(&m, rows, T, rows);
    asvr_model_print(&m, stderr);
    asvr_acts_print_plan(acts, stderr);
    asvr_acts_set_timing(acts, 1);
    size_t bv, bc, bg;
    param_set_bytes(&m.ps, &bv, &bc, &bg);
    size_t planned = bv + bc + bg +
                     (opt.state ? nn_arena_bytes(opt.state) : 0) + asvr_acts_bytes(acts);

    /* the batch: per row the image's P positions, then text; positions 0..T-1, one segment */
    size_t BT = (size_t)rows * T;
    int32_t *ids = malloc(BT * 4), *labels = malloc(BT * 4), *pos = malloc(BT * 4), *seg = malloc(BT * 4),
            *ipos = malloc((size_t)rows * P * 4);
    uint16_t *codes = malloc((size_t)rows * P * D * 2);
    float *pixels = malloc((size_t)rows * 3 * S * S * 4);
    CHECK(ids && labels && pos && seg && ipos && codes && pixels, "", "out of host memory for the batch");
    rng ^= seed * 0x2545F4914F6CDD1DULL;
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)r * T + t;
            int img = t < P;
            ids[i] = img ? -200 : (int32_t)(next() % (uint64_t)mc.llm.vocab);
            labels[i] = img ? -100 : ids[i];
            pos[i] = t;
            seg[i] = 0;
            if (img) ipos[(size_t)r * P + t] = (int32_t)i;
        }
    for (size_t i = 0; i < (size_t)rows * P * D; i++) codes[i] = (uint16_t)(next() % (uint64_t)K);
    for (size_t i = 0; i < (size_t)rows * 3 * S * S; i++) pixels[i] = (float)((next() >> 40) / 8388608.0 - 1.0);
    asvr_batch b = {.B = rows, .T = T, .ids = ids, .labels = labels, .pos = pos, .seg = seg, .n_images = rows,
                    .image_pos = ipos, .codes = codes, .pixels = pixels};
    int64_t text_targets = (int64_t)rows * (T - P - 1);
    double ts = 1.0 / (double)text_targets, vs = mc.lambda_visual / ((double)D * rows * P);

    int total = warmup + steps;
    double *lt = calloc((size_t)total, sizeof *lt), *lv = calloc((size_t)total, sizeof *lv);
    double t_fb = 0, t_opt = 0, t0 = 0;
    for (int s = 0; s < total; s++) {
        if (s == warmup) {
            sync_dev(dev);
            t0 = asvr_now();
            t_fb = t_opt = 0;
            asvr_acts_set_timing(acts, 1); /* restart the phase clocks */
        }
        asvr_losses L;
        memset(&L, 0, sizeof L);
        double a = asvr_now();
        param_set_zero_grads(&m.ps);
        asvr_forward_backward(&m, acts, &b, &(asvr_scales){ts, vs, 0.0}, &L);
        sync_dev(dev);
        double c = asvr_now();
        double gn, coef;
        optim_step(&opt, &gn, &coef);
        sync_dev(dev);
        double e = asvr_now();
        t_fb += c - a;
        t_opt += e - c;
        lt[s] = L.text_count ? L.text_sum / (double)L.text_count : 0.0;
        double v = 0;
        for (int d = 0; d < D; d++) v += L.vis_count ? L.vis_sum[d] / (double)L.vis_count : 0.0;
        lv[s] = v / D;
        fprintf(stderr, "step %d: text %.4f visual %.4f, %.3f s\n", s + 1, lt[s], lv[s], e - a);
    }
    sync_dev(dev);
    double sec = (asvr_now() - t0) / steps;
    double tps = (double)BT / sec;
    fprintf(stderr, "%s: %d x %d tokens per step, %.3f s/step, %.0f tokens/s; planned memory %.2f GiB\n", device, rows,
            T, sec, tps, (double)planned / (1 << 30));
    size_t used = 0, scratch = 0;
#ifdef ASVR_HAVE_CUDA
    if (dev == NN_CUDA) {
        size_t total_mem;
        nn_cuda_mem_used(&used, &total_mem);
        scratch = nn_cuda_scratch_bytes();
        fprintf(stderr, "device memory in use after the run: %.2f GiB of %.2f GiB (conversion scratch %.1f MiB)\n",
                (double)used / (1 << 30), (double)total_mem / (1 << 30), (double)scratch / (1 << 20));
    }
#endif
    const double *ph = asvr_acts_phase_seconds(acts);
    printf("{\"bench\": \"asvr-train-step\", \"device\": \"%s\", \"precision\": \"%s\", \"attention\": \"%s\", "
           "\"recompute\": %d, \"rows\": %d, \"seq\": %d, \"steps\": %d, \"s_per_step\": %.6f, \"tokens_per_s\": %.3f, "
           "\"peak_bytes\": %zu, \"device_used_bytes\": %zu, \"scratch_bytes\": %zu, \"phases\": {",
           device, mc.compute_bf16 ? "bf16" : "f32", mc.flash_attention ? "flash" : "kept", recompute, rows, T, steps, sec,
           tps, planned, used, scratch);
    for (int p = 0; p < ASVR_NPHASES; p++) printf("\"%s\": %.6f, ", asvr_phase_name((asvr_phase)p), ph[p] / steps);
    printf("\"optimizer\": %.6f, \"forward_backward\": %.6f}, \"losses\": [", t_opt / steps, t_fb / steps);
    for (int s = 0; s < total; s++) printf("%s[%.6f, %.6f]", s ? ", " : "", lt[s], lv[s]);
    printf("]}\n");

    free(lt), free(lv), free(ids), free(labels), free(pos), free(seg), free(ipos), free(codes), free(pixels);
    asvr_acts_free(acts);
    optim_free(&opt);
    asvr_model_free(&m);
    return 0;
}
