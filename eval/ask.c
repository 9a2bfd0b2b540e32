/* asvr-eval ask — one question about one image, answered greedily with the evaluation prompt
 * (`SYSTEM USER: <image>\n{question} ASSISTANT:` for vicuna_v1), the answer on stdout. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "base/log.h"
#include "commands.h"
#include "eval_model.h"
#include "io/safetensors.h"

/* --logits FILE: the first step's logits [vocab] (f32), the prompt's ids (the image as -200) and the
 * new ids, as safetensors (for checks against another implementation). */
static int write_logits(const char *path, const float *logits, int64_t vocab, const ivec *prompt, const gen_result *r,
                        asvr_error *err) {
    st_writer *w = st_writer_new();
    int64_t sv[1] = {vocab}, sp[1] = {(int64_t)prompt->n}, sn[1] = {r->n[0]};
    st_writer_add(w, "logits", ST_F32, 1, sv, logits);
    st_writer_add(w, "prompt_ids", ST_I32, 1, sp, prompt->v);
    st_writer_add(w, "ids", ST_I32, 1, sn, r->ids);
    st_writer_set_metadata(w, "what", "asvr-eval ask: the first generation step's logits, the prompt ids (-200 = the "
                                      "image's positions), the greedy new ids");
    int rc = st_writer_write(w, path, err);
    st_writer_free(w);
    return rc;
}

int cmd_ask(int argc, char **argv) {
    eval_model_opts mo;
    eval_model_opts_default(&mo);
    const char *image = NULL, *question = NULL, *logits_path = NULL;
    int64_t max_new = 128;
    asvr_opt opts[EVAL_MODEL_NOPTS + 4];
    eval_model_opts_table(&mo, opts);
    opts[EVAL_MODEL_NOPTS] = (asvr_opt){"image", ASVR_OPT_STR, &image, "FILE", "the image (JPEG or PNG)"};
    opts[EVAL_MODEL_NOPTS + 1] = (asvr_opt){"question", ASVR_OPT_STR, &question, "TEXT", "the question"};
    opts[EVAL_MODEL_NOPTS + 2] =
        (asvr_opt){"max-new-tokens", ASVR_OPT_COUNT, &max_new, "N", "stop after N new tokens (default 128) if no EOS came"};
    opts[EVAL_MODEL_NOPTS + 3] = (asvr_opt){"logits", ASVR_OPT_STR, &logits_path, "FILE",
                                            "also write the first step's logits, the prompt ids and the new ids (safetensors)"};
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
    int rc = ASVR_EXIT_FAIL, S = em.pre.size;
    float *pixels = asvr_malloc(sizeof(float) * 3 * (size_t)S * S, "image");
    uint16_t *codes = asvr_malloc(sizeof(uint16_t) * (size_t)(eval_model_codes_per_image(&em) + 1), "image codes");
    ivec ids = {0};
    gen_result r = {0};
    char *answer = NULL;
    if (eval_model_image(&em, image, pixels, codes, NULL, &err) < 0 ||
        gen_prompt_ids(em.tmpl, &em.enc, question, 1, &ids, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        goto out;
    }
    gen_prompt p = {ids.v, (int)ids.n, pixels, image, em.vt ? codes : NULL};
    int64_t vocab = em.m.c.llm.vocab;
    if (logits_path) { /* every step's logits are kept: bounded before allocating, like the KV cache */
        double need = (double)max_new * (double)vocab * sizeof(float);
        double have = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        if (have > 0 && need > have) {
            LOG_ERROR("--logits keeps every step's logits: %lld new tokens x %lld vocabulary entries need %.1f GiB, the "
                      "machine has %.1f GiB; lower --max-new-tokens", (long long)max_new, (long long)vocab,
                      need / 1073741824.0, have / 1073741824.0);
            goto out;
        }
    }
    float *logits = logits_path ? asvr_malloc(sizeof(float) * (size_t)(max_new * vocab), "the logits") : NULL;
    gen_options o = {(int)max_new, sp_tokenizer_eos_id(em.tok), 1, logits, NULL};
    if (asvr_generate(&em.m, &p, 1, &o, &r, &err) < 0 || !(answer = gen_decode_answer(em.tok, r.ids, r.n[0], &err)) ||
        (logits_path && write_logits(logits_path, logits, vocab, &ids, &r, &err) < 0)) {
        LOG_ERROR("%s", err.msg);
        free(logits);
        goto out;
    }
    free(logits);
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
    free(codes);
    eval_model_free(&em);
    return rc;
}
