/* plan.c — `asvr-train plan`: the memory plan of a training run, built without allocating anything.
 *
 * The model, the optimizer state and the step's activations are built by the trainer's own setup
 * (trainer.h: the same choices, run_build_model, optim_init, asvr_acts_new) with the arenas in
 * plan-only mode (nn_arena_set_plan_only), so the figures are the trainer's own, for sizes this
 * machine could not hold (Vicuna-7B on a 141 GB GPU). The choices are those of a run on cuda. The
 * frozen input tower (weights and activations) and the codebooks are estimated from the config, since
 * they are planned when their files are loaded. Device allocator overhead, cuBLAS workspaces, the
 * operand conversion scratch of mixed precision and the CUDA context are not included; compare with a
 * measured peak on the GPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "commands.h"
#include "trainer.h"

int cmd_plan(int argc, char **argv) {
    const char *config = NULL, *codebooks_app = NULL;
    run_choices rc;
    run_choices_default(&rc);
    rc.stage = "it";
    int64_t rows = 1, seq = 2048, max_images = 0, world = 1, zero = -1, bucket = DP_BUCKET_DEFAULT, accum = 1;
    double gpu_gib = 0;
    int verbose = 0;
    asvr_opt opts[32];
    int n = run_choices_options(&rc, opts);
    const asvr_opt own[] = {
        {"config", ASVR_OPT_STR, &config, "FILE", "model config JSON (as for asvr-train train)"},
        {"rows", ASVR_OPT_COUNT, &rows, "N", "rows per micro-batch (default 1)"},
        {"seq", ASVR_OPT_COUNT, &seq, "T", "positions per row (default 2048)"},
        {"max-images", ASVR_OPT_COUNT, &max_images, "N", "images per micro-batch (default rows x (T / positions + 1))"},
        {"world", ASVR_OPT_COUNT, &world, "N", "ranks of a data-parallel run: the plan is per rank (default 1)"},
        {"zero", ASVR_OPT_INT, &zero, "0|1|2", "as asvr-train train --zero (default 2 with several ranks, 0 with one)"},
        {"bucket-elems", ASVR_OPT_COUNT, &bucket, "N", "as asvr-train train --bucket-elems"},
        {"accum", ASVR_OPT_COUNT, &accum, "N", "micro-batches per step and rank (1, the default, needs no step gradient at zero 0)"},
        {"gpu-gib", ASVR_OPT_POS, &gpu_gib, "X", "say whether the plan fits in X GiB (e.g. 139 for an H200, 79 for an H100)"},
        {"verbose", ASVR_OPT_FLAG, &verbose, NULL, "also print every activation tensor"},
        {"codebooks-app", ASVR_OPT_STR, &codebooks_app, "FILE",
         "the appearance tokenizer file (as for train: shapes the appearance head when the config has none)"},
    };
    memcpy(opts + n, own, sizeof own);
    n += (int)(sizeof own / sizeof own[0]);
    const asvr_cli cli = {"asvr-train plan", "--config FILE [options]",
                          "Prints the memory plan of a training run on cuda (parameters, gradients, AdamW state,\n"
                          "activations, the frozen tower and codebooks) without allocating it. Default stage: it.",
                          opts, n, 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!config) asvr_cli_usage_error(&cli, "--config is required");
    if (rows < 1 || seq < 2) asvr_cli_usage_error(&cli, "--rows must be >= 1 and --seq >= 2");
    if (world < 1 || world > 65536) asvr_cli_usage_error(&cli, "--world must be 1 .. 65536");
    if (zero < -1 || zero > 2) asvr_cli_usage_error(&cli, "--zero must be 0, 1 or 2");
    if (zero < 0) zero = world > 1 ? 2 : 0;
    if (bucket < 1 || accum < 0) asvr_cli_usage_error(&cli, "--bucket-elems must be >= 1 and --accum >= 0");

    asvr_error err;
    uint8_t *text;
    size_t len;
    if (asvr_read_file(config, &text, &len, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    asvr_config mc;
    /* the choices of a run on cuda; the model itself is declared on the CPU, in plan-only mode */
    char *full = run_config_with_app_head((const char *)text, rc.visual_loss, codebooks_app, &err);
    free(text);
    if (!full) ASVR_FATAL("--codebooks-app must be the appearance tokenizer file", "%s", err.msg);
    int r = run_choices_apply(&rc, full, NN_CUDA, &mc, &err);
    free(full);
    if (r == -2) asvr_cli_usage_error(&cli, "%s", err.msg);
    if (r < 0) ASVR_FATAL("check the model config and the flags", "%s", err.msg);
    if (max_images <= 0) max_images = asvr_max_images(&mc, (int)rows, (int)seq);

    nn_arena_set_plan_only(1);
    asvr_model m;
    run_build_model(&m, &mc, !strcmp(rc.stage, "it"), NN_CPU, 0, (int)world, (int)zero, bucket);
    optim_config oc = {.lr = 1e-5, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .total_steps = 1};
    optim opt;
    dp d;
    dp_init(&d, NULL, 0, (int)world, &m.ps, (int)zero, accum != 1, &opt, &oc); /* rank 0's plan: all ranks' are alike */
    asvr_acts *acts = asvr_acts_new(&m, (int)rows, (int)seq, (int)max_images);
    nn_arena_set_plan_only(0);

    asvr_model_print(&m, stdout);
    if (verbose) asvr_acts_print_plan(acts, stdout);
    run_memory mem;
    run_memory_of(&m, &opt, &d, acts, (int)max_images, mc.tower_bf16, &mem);
    const double G = 1024.0 * 1024.0 * 1024.0;
    printf("memory plan per rank (%s compute, %s tower; stage %s, %lld x %lld positions, %lld images, %s attention, %d "
           "layers recomputed; %lld rank%s, ZeRO stage %lld):\n",
           mc.compute_bf16 ? "bf16" : "f32", mc.tower_bf16 ? "bf16" : "f32", rc.stage, (long long)rows, (long long)seq,
           (long long)max_images, mc.flash_attention ? "flash" : "kept", mc.recompute_layers, (long long)world,
           world > 1 ? "s" : "", (long long)zero);
    const struct { const char *name; double bytes; } part[] = {
        {"parameters", mem.values}, {"bf16 copies", mem.compute}, {"gradients", mem.grads}, {"optimizer state", mem.optimizer},
        {"step gradient", mem.step_grad},
        {"activations", mem.activations}, {"input tower", mem.tower_weights + mem.tower_acts}, {"codebooks", mem.codebooks},
        {"total", mem.total}};
    for (size_t i = 0; i < sizeof part / sizeof part[0]; i++)
        printf("  %-16s %9.2f GiB %12.1f MiB\n", part[i].name, part[i].bytes / G, part[i].bytes / 1048576.0);
    printf("  (%lld parameters, %lld trainable; the tower: weights %.2f GiB, activations %.2f GiB)\n",
           (long long)param_set_count(&m.ps, 0), (long long)param_set_count(&m.ps, 1), mem.tower_weights / G,
           mem.tower_acts / G);
    int ret = 0;
    if (gpu_gib > 0) {
        int fits = mem.total / G <= gpu_gib;
        printf("%s in %.0f GiB (%.1f GiB %s; allocator, cuBLAS workspace, operand conversion scratch and the CUDA "
               "context come on top)\n",
               fits ? "fits" : "does NOT fit", gpu_gib, fits ? gpu_gib - mem.total / G : mem.total / G - gpu_gib,
               fits ? "left" : "short");
        ret = fits ? 0 : 1;
    }
    asvr_acts_free(acts);
    dp_free(&d);
    optim_free(&opt);
    asvr_model_free(&m);
    return ret;
}
