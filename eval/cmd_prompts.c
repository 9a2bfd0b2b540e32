/* asvr-eval prompts — the prompt of every question of a question file, one JSON object per line:
 * {"question_id", "image", "prompt", "max_new_tokens"}. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/cli.h"
#include "base/log.h"
#include "bench.h"
#include "commands.h"

int cmd_prompts(int argc, char **argv) {
    const char *bench = NULL, *questions = NULL;
    const asvr_opt opts[] = {
        {"bench", ASVR_OPT_STR, &bench, "NAME", "benchmark (asvr-eval benchmarks lists them)"},
        {"questions", ASVR_OPT_STR, &questions, "Q.jsonl", "the benchmark's question file"},
    };
    const asvr_cli cli = {"asvr-eval prompts", "--bench NAME --questions Q.jsonl",
                          "Prints the user-turn text of every question (\"<image>\\n\" first when the row has an\n"
                          "image), as the reference builds it, with the benchmark's max_new_tokens, as JSONL.\n"
                          "A malformed row is listed with its line number and id and fails the command.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!bench || !questions) asvr_cli_usage_error(&cli, "--bench and --questions are required");
    const bench_def *b = bench_find(bench);
    if (!b) asvr_cli_usage_error(&cli, "unknown benchmark '%s' (known: %s)", bench, bench_names());
    asvr_error err;
    bench_set s;
    if (bench_load_questions(questions, b, &s, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        bench_set_free(&s);
        return ASVR_EXIT_FAIL;
    }
    int bad = 0;
    for (size_t i = 0; i < s.n; i++) {
        char *p = bench_prompt(b, s.items[i].q, &err);
        if (!p) {
            bench_row_error(&s, i, "%s", err.msg);
            bad++;
            continue;
        }
        json_t *im = json_object_get(s.items[i].q, "image");
        json_t *o = json_pack("{s:s, s:O, s:s, s:i}", "question_id", s.items[i].qid, "image", im ? im : json_null(),
                              "prompt", p, "max_new_tokens", b->max_new_tokens);
        char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        CHECK(line != NULL, "", "serialising a prompt");
        puts(line);
        free(line);
        json_decref(o);
        free(p);
    }
    bench_set_free(&s);
    if (fflush(stdout) != 0) {
        LOG_ERROR("writing stdout failed");
        return ASVR_EXIT_FAIL;
    }
    return bad ? ASVR_EXIT_FAIL : ASVR_EXIT_OK;
}
