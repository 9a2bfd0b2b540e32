/* asvr-eval attention — the paper's attention maps: the attention of the last prompt token over the
 * image positions (mean over heads; one layer or the mean over layers), drawn over the preprocessed
 * image as a heat map (PNG), and optionally printed as a JSON grid on stdout. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/log.h"
#include "commands.h"
#include "eval_model.h"
#include "heatmap.h"

int cmd_attention(int argc, char **argv) {
    eval_model_opts mo;
    eval_model_opts_default(&mo);
    const char *image = NULL, *question = NULL, *out = NULL;
    int64_t layer = -1;
    int all_layers = 0, json = 0;
    asvr_opt opts[EVAL_MODEL_NOPTS + 6];
    eval_model_opts_table(&mo, opts);
    opts[EVAL_MODEL_NOPTS] = (asvr_opt){"image", ASVR_OPT_STR, &image, "FILE", "the image (JPEG or PNG)"};
    opts[EVAL_MODEL_NOPTS + 1] = (asvr_opt){"question", ASVR_OPT_STR, &question, "TEXT", "the question"};
    opts[EVAL_MODEL_NOPTS + 2] = (asvr_opt){"out", ASVR_OPT_STR, &out, "MAP.png", "where the heat map goes (atomic)"};
    opts[EVAL_MODEL_NOPTS + 3] = (asvr_opt){"layer", ASVR_OPT_INT, &layer, "L", "one decoder layer, 0-based"};
    opts[EVAL_MODEL_NOPTS + 4] = (asvr_opt){"all-layers", ASVR_OPT_FLAG, &all_layers, NULL, "mean over all layers (default)"};
    opts[EVAL_MODEL_NOPTS + 5] = (asvr_opt){"json", ASVR_OPT_FLAG, &json, NULL, "also print the grid as JSON on stdout"};
    const asvr_cli cli = {"asvr-eval attention",
                          "(--checkpoint DIR | --model FILE --config FILE) --vision FILE --tokenizer FILE --image FILE "
                          "--question TEXT --out MAP.png [--layer L | --all-layers] [--json]",
                          "Runs the evaluation prompt and draws the attention of its last token over the image patches\n"
                          "(mean over heads; one layer or the mean over layers) as a heat map over the preprocessed image.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!image || !question || !out) asvr_cli_usage_error(&cli, "--image, --question and --out are required");
    if (layer >= 0 && all_layers) asvr_cli_usage_error(&cli, "--layer and --all-layers exclude each other");
    if (layer < -1) asvr_cli_usage_error(&cli, "--layer must be >= 0");

    asvr_error err = {{0}};
    eval_model em;
    if (eval_model_load(&cli, &mo, &em, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        return ASVR_EXIT_FAIL;
    }
    const asvr_config *c = &em.m.c;
    /* with S2 the image is drawn at the largest scale: a position covers a patch of that many times the pixels */
    int L = c->llm.n_layers, P = c->image_positions, S = em.pre.size;
    int grid = c->vision.image_size / c->vision.patch_size, patch = S / grid;
    if (layer >= L) {
        LOG_ERROR("--layer %lld: the model has layers 0..%d", (long long)layer, L - 1);
        eval_model_free(&em);
        return ASVR_EXIT_USAGE;
    }
    int rc = ASVR_EXIT_FAIL;
    float *pixels = asvr_malloc(sizeof(float) * 3 * (size_t)S * S, "image");
    uint8_t *rgb = asvr_malloc((size_t)3 * S * S, "image");
    uint16_t *codes = asvr_malloc(sizeof(uint16_t) * (size_t)(eval_model_codes_per_image(&em) + 1), "image codes");
    float *att = asvr_malloc(sizeof(float) * (size_t)L * P, "attention"), *map = asvr_calloc((size_t)P, sizeof(float), "map");
    ivec ids = {0};
    gen_result r = {0};
    if (eval_model_image(&em, image, pixels, codes, rgb, &err) < 0 ||
        gen_prompt_ids(em.tmpl, &em.enc, question, 1, &ids, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto done;
    }
    gen_prompt p = {ids.v, (int)ids.n, pixels, image, em.vt ? codes : NULL};
    gen_options o = {1, sp_tokenizer_eos_id(em.tok), 1, NULL, att};
    if (asvr_generate(&em.m, &p, 1, &o, &r, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto done;
    }
    for (int l = 0; l < L; l++) {
        if (layer >= 0 && l != layer) continue;
        for (int k = 0; k < P; k++) map[k] += att[(size_t)l * P + k] / (float)(layer >= 0 ? 1 : L);
    }
    if (heatmap_write_png(out, rgb, S, map, grid, patch, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto done;
    }
    if (json) {
        json_t *g = json_array();
        for (int y = 0; y < grid; y++) {
            json_t *row = json_array();
            for (int x = 0; x < grid; x++) json_array_append_new(row, json_real(map[y * grid + x]));
            json_array_append_new(g, row);
        }
        json_t *doc = json_pack("{s:s, s:s, s:o, s:i, s:i, s:o}", "image", image, "question", question, "layer",
                                layer >= 0 ? json_integer(layer) : json_string("mean"), "layers", L, "grid_size", grid,
                                "attention", g);
        char *s = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(8));
        int bad = !s || printf("%s\n", s) < 0 || fflush(stdout) != 0;
        free(s);
        json_decref(doc);
        if (bad) {
            LOG_ERROR("writing the JSON grid to stdout failed");
            goto done;
        }
    }
    LOG_INFO("attention map (%s) over %dx%d patches written to %s", layer >= 0 ? "one layer" : "mean over layers", grid,
             grid, out);
    rc = ASVR_EXIT_OK;
done:
    gen_result_free(&r);
    ivec_free(&ids);
    free(pixels);
    free(codes);
    free(rgb);
    free(att);
    free(map);
    eval_model_free(&em);
    return rc;
}
