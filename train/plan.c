/* plan.c — `asvr-train plan`: the memory plan of a training run, built without allocating anything.
 *
 * The model, the optimizer state and the step's activations are declared exactly as `asvr-train
 * train` declares them, with the arenas in plan-only mode (nn_arena_set_plan_only), so the figures
 * are the trainer's own, for sizes this machine could not hold (Vicuna-7B on a 141 GB GPU). The frozen
 * input tower (weights and activations) and the codebooks are counted from the config, since they are
 * planned when their files are loaded. Device allocator overhead, cuBLAS workspaces, the operand
 * conversion scratch of mixed precision and the CUDA context are not included; compare with a
 * measured peak on the GPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "commands.h"
#include "model/asvr.h"
#include "optim.h"

/* Bytes of the SigLIP tower's weights up to the tap layer (esize bytes per value: 4 f32, 2 bf16), and
 * of its activations for n images (the arenas model/siglip.c plans: im2col columns, seven [N, C]
 * buffers, the MLP, in the tower's dtype; one f32 N x N score scratch), plus the step's f32 input
 * images [n, 3, S, S]. */
static void tower_bytes(const siglip_config *v, int n_images, double esize, double *weights, double *acts) {
    double C = v->hidden, I = v->intermediate, p = v->patch_size, N = siglip_num_patches(v);
    double per_layer = 4 * (C * C + C) + 2 * 2 * C + (C * I + I) + (I * C + C);
    *weights = esize * (C * 3 * p * p + C + N * C + v->tap * per_layer);
    *acts = esize * (n_images * N * (3 * p * p + 7 * C + I)) + 4.0 * (N * N + n_images * 3.0 * v->image_size * v->image_size);
}

int cmd_plan(int argc, char **argv) {
    const char *config = NULL, *stage = "it", *attention = "flash", *visual_loss = "semantic", *precision = "bf16",
               *tower_dtype = "bf16", *recompute_list = NULL;
    int64_t rows = 1, seq = 2048, max_images = 0, recompute = 0;
    double gpu_gib = 0;
    int verbose = 0;
    const asvr_opt opts[] = {
        {"config", ASVR_OPT_STR, &config, "FILE", "model config JSON (as for asvr-train train)"},
        {"stage", ASVR_OPT_STR, &stage, "pt|it", "what trains (default it: the LLM too)"},
        {"rows", ASVR_OPT_INT, &rows, "N", "rows per micro-batch (default 1)"},
        {"seq", ASVR_OPT_INT, &seq, "T", "positions per row (default 2048)"},
        {"max-images", ASVR_OPT_INT, &max_images, "N", "images per micro-batch (default rows x (T / positions + 1))"},
        {"attention", ASVR_OPT_STR, &attention, "kept|flash", "as asvr-train train --attention (default flash)"},
        {"recompute", ASVR_OPT_INT, &recompute, "N", "as asvr-train train --recompute (default 0)"},
        {"recompute-layers", ASVR_OPT_STR, &recompute_list, "LIST", "as asvr-train train --recompute-layers"},
        {"precision", ASVR_OPT_STR, &precision, "f32|bf16", "as asvr-train train --precision on cuda (default bf16)"},
        {"tower-dtype", ASVR_OPT_STR, &tower_dtype, "f32|bf16", "as asvr-train train --tower-dtype on cuda (default bf16)"},
        {"visual-loss", ASVR_OPT_STR, &visual_loss, "none|semantic", "with or without the visual head (default semantic)"},
        {"gpu-gib", ASVR_OPT_F64, &gpu_gib, "X", "say whether the plan fits in X GiB (e.g. 139 for an H200, 79 for an H100)"},
        {"verbose", ASVR_OPT_FLAG, &verbose, NULL, "also print every activation tensor"},
    };
    const asvr_cli cli = {"asvr-train plan", "--config FILE [options]",
                          "Prints the memory plan of a training run (parameters, gradients, AdamW state, activations,\n"
                          "the frozen tower and codebooks) without allocating it.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!config) asvr_cli_usage_error(&cli, "--config is required");
    int stage_it = !strcmp(stage, "it");
    if (!stage_it && strcmp(stage, "pt")) asvr_cli_usage_error(&cli, "--stage must be pt or it");
    int flash = !strcmp(attention, "flash");
    if (!flash && strcmp(attention, "kept")) asvr_cli_usage_error(&cli, "--attention must be kept or flash");
    int head = !strcmp(visual_loss, "semantic");
    if (!head && strcmp(visual_loss, "none")) asvr_cli_usage_error(&cli, "--visual-loss must be none or semantic");
    if (rows < 1 || seq < 2) asvr_cli_usage_error(&cli, "--rows must be >= 1 and --seq >= 2");
    int bf16 = !strcmp(precision, "bf16"), tower_bf16 = !strcmp(tower_dtype, "bf16");
    if (!bf16 && strcmp(precision, "f32")) asvr_cli_usage_error(&cli, "--precision must be f32 or bf16");
    if (!tower_bf16 && strcmp(tower_dtype, "f32")) asvr_cli_usage_error(&cli, "--tower-dtype must be f32 or bf16");

    asvr_error err;
    uint8_t *text;
    size_t n;
    if (asvr_read_file(config, &text, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    asvr_config mc;
    if (asvr_config_from_json((const char *)text, &mc, &err) < 0) ASVR_FATAL("check the model config", "%s", err.msg);
    free(text);
    if (head && !mc.has_head) ASVR_FATAL("add a visual_head or pass --visual-loss none", "the config has no visual_head");
    mc.has_head = head;
    mc.has_app_head = 0;
    mc.flash_attention = flash;
    if (recompute > 0 && recompute_list) asvr_cli_usage_error(&cli, "give --recompute or --recompute-layers, not both");
    if (asvr_config_set_recompute(&mc, (int)recompute, recompute_list, &err) < 0)
        asvr_cli_usage_error(&cli, "%s (the LLM has %d layers)", err.msg, mc.llm.n_layers);
    recompute = mc.recompute_layers;
    mc.compute_bf16 = bf16;
    if (max_images <= 0) max_images = rows * (seq / mc.image_positions + 1);

    nn_arena_set_plan_only(1);
    asvr_model m;
    asvr_model_init(&m, &mc);
    param_set_trainable(&m.ps, "", 1);
    if (!stage_it) param_set_trainable(&m.ps, "llm.", 0);
    param_set_commit(&m.ps);
    optim_config oc = {.lr = 1e-5, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .total_steps = 1};
    optim opt;
    optim_init(&opt, &oc, &m.ps);
    asvr_acts *acts = asvr_acts_new(&m, (int)rows, (int)seq, (int)max_images);
    nn_arena_set_plan_only(0);

    asvr_model_print(&m, stdout);
    if (verbose) asvr_acts_print_plan(acts, stdout);
    double tw, ta;
    tower_bytes(&mc.vision, (int)max_images, tower_bf16 ? 2.0 : 4.0, &tw, &ta);
    double cb = head ? 4.0 * mc.head.depth * (double)mc.head.codebook_size * mc.head.code_dim : 0.0;
    size_t bv, bc, bg;
    param_set_bytes(&m.ps, &bv, &bc, &bg);
    double pv = (double)bv, pc = (double)bc, pg = (double)bg, os = (double)nn_arena_bytes(opt.state),
           ac = (double)asvr_acts_bytes(acts);
    double total = pv + pc + pg + os + ac + tw + ta + cb, G = 1024.0 * 1024.0 * 1024.0;
    printf("memory plan (%s compute, %s tower; stage %s, %lld x %lld positions, %lld images, %s attention, %lld layers "
           "recomputed):\n",
           bf16 ? "bf16" : "f32", tower_bf16 ? "bf16" : "f32", stage, (long long)rows, (long long)seq, (long long)max_images, flash ? "flash" : "kept", (long long)recompute);
    const struct { const char *name; double bytes; } part[] = {
        {"parameters", pv}, {"bf16 copies", pc}, {"gradients", pg}, {"optimizer state", os}, {"activations", ac},
        {"input tower", tw + ta}, {"codebooks", cb}, {"total", total}};
    for (size_t i = 0; i < sizeof part / sizeof part[0]; i++)
        printf("  %-16s %9.2f GiB %12.1f MiB\n", part[i].name, part[i].bytes / G, part[i].bytes / 1048576.0);
    printf("  (%lld parameters, %lld trainable; the tower: weights %.2f GiB, activations %.2f GiB)\n",
           (long long)param_set_count(&m.ps, 0), (long long)param_set_count(&m.ps, 1), tw / G, ta / G);
    int rc = 0;
    if (gpu_gib > 0) {
        int fits = total / G <= gpu_gib;
        printf("%s in %.0f GiB (%.1f GiB %s; allocator, cuBLAS workspace, operand conversion scratch and the CUDA "
               "context come on top)\n",
               fits ? "fits" : "does NOT fit", gpu_gib, fits ? gpu_gib - total / G : total / G - gpu_gib,
               fits ? "left" : "short");
        rc = fits ? 0 : 1;
    }
    asvr_acts_free(acts);
    optim_free(&opt);
    asvr_model_free(&m);
    return rc;
}
