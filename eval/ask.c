/* asvr-eval ask — one question about one image, answered greedily with the evaluation prompt
 * (`SYSTEM USER: <image>\n{question} ASSISTANT:` for vicuna_v1), the answer on stdout. */
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/log.h"
#include "commands.h"
#include "eval_model.h"

int cmd_ask(int argc, char **argv) {
    eval_model_opts mo;
    eval_model_opts_default(&mo);
    const char *image = NULL, *question = NULL;
    int64_t max_new = 128;
    asvr_opt opts[EVAL_MODEL_NOPTS + 3];
    eval_model_opts_table(&mo, opts);
    opts[EVAL_MODEL_NOPTS] = (asvr_opt){"image", ASVR_OPT_STR, &image, "FILE", "the image (JPEG or PNG)"};
    opts[EVAL_MODEL_NOPTS + 1] = (asvr_opt){"question", ASVR_OPT_STR, &question, "TEXT", "the question"};
    opts[EVAL_MODEL_NOPTS + 2] =
        (asvr_opt){"max-new-tokens", ASVR_OPT_INT, &max_new, "N", "stop after N new tokens (default 128) if no EOS came"};
    const asvr_cli cli = {"asvr-eval ask",
                          "(--checkpoint DIR | --model FILE --config FILE) --vision FILE --tokenizer FILE --image FILE "
                          "--question TEXT [options]",
                          "Answers one question about one image with greedy decoding (KV cache, stop at EOS) and prints\n"
                          "the answer, decoded without special tokens and stripped, on stdout.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!image || !question) asvr_cli_usage_error(&cli, "--image and --question are required");
    if (max_new < 1 || max_new > 1 << 20) asvr_cli_usage_error(&cli, "--max-new-tokens must be in 1..%d", 1 << 20);

    asvr_error err = {{0}};
    eval_model em;
    if (eval_model_load(&cli, &mo, &em, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        return ASVR_EXIT_FAIL;
    }
    int rc = ASVR_EXIT_FAIL, S = asvr_input_size(&em.m.c);
    float *pixels = asvr_malloc(sizeof(float) * 3 * (size_t)S * S, "image");
    ivec ids = {0};
    gen_result r = {0};
    char *answer = NULL;
    if (gen_load_image(image, &em.pre, em.m.c.image_mean, em.m.c.image_std, pixels, NULL, &err) < 0 ||
        gen_prompt_ids(em.tmpl, &em.enc, question, 1, &ids, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto out;
    }
    gen_prompt p = {ids.v, (int)ids.n, pixels, image};
    gen_options o = {(int)max_new, sp_tokenizer_eos_id(em.tok), 1, NULL, NULL};
    if (asvr_generate(&em.m, &p, 1, &o, &r, &err) < 0 || !(answer = gen_decode_answer(em.tok, r.ids, r.n[0], &err))) {
        LOG_ERROR("%s", err.msg);
        goto out;
    }
    if (asvr_log_get_level() >= ASVR_LOG_DEBUG) {
        char buf[256] = "";
        for (int i = 0; i < r.n[0] && strlen(buf) < sizeof buf - 16; i++)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%d", i ? " " : "", r.ids[i]);
        LOG_DEBUG("new ids: %s", buf);
    }
    LOG_INFO("%d prompt tokens (+%d image positions), %d new tokens", (int)ids.n - 1, em.m.c.image_positions, r.n[0]);
    if (printf("%s\n", answer) < 0 || fflush(stdout) != 0) {
        LOG_ERROR("writing the answer to stdout failed");
        goto out;
    }
    rc = ASVR_EXIT_OK;
out:
    free(answer);
    gen_result_free(&r);
    ivec_free(&ids);
    free(pixels);
    eval_model_free(&em);
    return rc;
}
