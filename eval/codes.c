/* asvr-eval codes — visual reconstruction diagnostics: the visual head's per-depth top-1 code
 * accuracy (and loss) on held-out images, against a code store: how much of the tokenizer's codes the
 * model reconstructs at each image position from its own final hidden states. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/log.h"
#include "base/progress.h"
#include "commands.h"
#include "eval_model.h"
#include "store/batches.h"

int cmd_codes(int argc, char **argv) {
    eval_model_opts mo;
    eval_model_opts_default(&mo);
    mo.with_head = 1;
    const char *packed = NULL, *codes = NULL, *image_root = "";
    int64_t rows = 2, max_rows = 0;
    asvr_opt opts[EVAL_MODEL_NOPTS + 5];
    eval_model_opts_table(&mo, opts);
    int k = EVAL_MODEL_NOPTS;
    opts[k++] = (asvr_opt){"packed", ASVR_OPT_STR, &packed, "FILE", "packed store of the held-out samples (asvr-pack build)"};
    opts[k++] = (asvr_opt){"codes", ASVR_OPT_STR, &codes, "STORE", "their code store (asvr-tokenize encode)"};
    opts[k++] = (asvr_opt){"image-root", ASVR_OPT_STR, &image_root, "DIR", "folder the image keys are relative to"};
    opts[k++] = (asvr_opt){"rows", ASVR_OPT_COUNT, &rows, "N", "packed rows per forward pass (default 2)"};
    opts[k++] = (asvr_opt){"max-rows", ASVR_OPT_COUNT, &max_rows, "N", "stop after N rows (default: all)"};
    const asvr_cli cli = {"asvr-eval codes",
                          "--checkpoint DIR --vision FILE --tokenizer FILE --codebooks FILE --packed FILE --codes STORE "
                          "[--image-root DIR]",
                          "Runs the model over held-out samples and prints, as JSON, the visual head's top-1 code accuracy\n"
                          "and cross-entropy per depth at the image positions (no shift: position p predicts patch p's\n"
                          "codes), and the text loss, against the code store's codes.",
                          opts, k, 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!packed || !codes || !mo.codebooks) asvr_cli_usage_error(&cli, "--packed, --codes and --codebooks are required");
    if (rows < 1 || max_rows < 0) asvr_cli_usage_error(&cli, "bad --rows or --max-rows");
    asvr_error err = {{0}};
    eval_model em;
    if (eval_model_load(&cli, &mo, &em, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        return ASVR_EXIT_FAIL;
    }
    int rc = ASVR_EXIT_FAIL;
    data_loader *dl = NULL;
    asvr_acts *acts = NULL;
    if (!em.m.head) {
        LOG_ERROR("the checkpoint's model has no visual head (trained with --visual-loss none)");
        goto out;
    }
    const asvr_config *c = &em.m.c;
    data_config dc = {packed, codes, image_root, NULL, (int)rows, 0, !c->input_discrete, asvr_input_size(c), {0}, {0}, {127, 127, 127},
                      asvr_num_cores()};
    memcpy(dc.mean, c->image_mean, sizeof dc.mean);
    memcpy(dc.std, c->image_std, sizeof dc.std);
    for (int i = 0; i < 3; i++) dc.pad[i] = em.pre.pad[i];
    if (data_open(&dc, &dl, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto out;
    }
    int64_t total = data_rows(dl);
    if (max_rows > 0 && max_rows < total) total = max_rows;
    int T = data_max_len(dl);
    acts = asvr_acts_new(&em.m, (int)rows, T, asvr_max_images(c, (int)rows, T));
    asvr_losses L;
    memset(&L, 0, sizeof L);
    int64_t done = 0, images = 0;
    asvr_progress *bar = asvr_progress_begin("codes", (uint64_t)total, "rows");
    while (done < total) {
        train_batch b;
        if (data_next(dl, &b, &err) < 0) {
            LOG_ERROR("%s", err.msg);
            asvr_progress_end(bar);
            goto out;
        }
        asvr_batch ab = {b.B, b.T, b.ids, b.labels, b.pos, b.seg, b.n_images, b.image_pos, b.codes, NULL, b.pixels, 0, NULL};
        asvr_forward(&em.m, acts, &ab);
        asvr_loss(&em.m, acts, &(asvr_scales){0, 0, 0}, &L, 0); /* losses and accuracies only: no backward */
        done += b.B;
        images += b.n_images;
        asvr_progress_add(bar, (uint64_t)b.B);
        train_batch_free(&b);
    }
    asvr_progress_end(bar);
    int D = c->head.depth;
    json_t *acc = json_array(), *ce = json_array();
    for (int d = 0; d < D; d++) {
        json_array_append_new(acc, json_real(L.vis_count ? (double)L.vis_correct[d] / (double)L.vis_count : 0));
        json_array_append_new(ce, json_real(L.vis_count ? L.vis_sum[d] / (double)L.vis_count : 0));
    }
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:o, s:o, s:f, s:f}", "packed", packed, "rows", (json_int_t)done, "images",
                          (json_int_t)images, "positions", (json_int_t)L.vis_count, "code_accuracy_depth", acc,
                          "visual_loss_depth", ce, "chance", 1.0 / c->head.codebook_size, "text_loss",
                          L.text_count ? L.text_sum / (double)L.text_count : 0.0);
    char *s = json_dumps(o, JSON_INDENT(2));
    printf("%s\n", s);
    free(s);
    json_decref(o);
    rc = ASVR_EXIT_OK;
out:
    asvr_acts_free(acts);
    data_close(dl);
    eval_model_free(&em);
    return rc;
}
