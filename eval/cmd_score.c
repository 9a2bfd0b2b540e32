/* asvr-eval score — scores one benchmark's answers (bench.h) and prints/writes the scores JSON. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "bench.h"
#include "commands.h"

int cmd_score(int argc, char **argv) {
    const char *bench = NULL, *questions = NULL, *answers = NULL, *out = NULL, *stats = NULL;
    int allow_missing = 0;
    const asvr_opt opts[] = {
        {"bench", ASVR_OPT_STR, &bench, "NAME", "benchmark (asvr-eval benchmarks lists them)"},
        {"questions", ASVR_OPT_STR, &questions, "Q.jsonl", "the benchmark's question file"},
        {"answers", ASVR_OPT_STR, &answers, "A.jsonl", "answers: one {question_id, answer} per line"},
        {"out", ASVR_OPT_STR, &out, "SCORES.json", "also write the scores here (atomically); a run's layout is "
                                                  "RUN/scores/<bench>.json"},
        {"allow-missing", ASVR_OPT_FLAG, &allow_missing, NULL,
         "score questions without an answer as wrong (default: fail)"},
        {"stats", ASVR_OPT_STR, &stats, "FILE", "write a JSON summary (counts and the reported number)"},
    };
    const asvr_cli cli = {"asvr-eval score", "--bench NAME --questions Q.jsonl --answers A.jsonl [--out SCORES.json]",
                          "Scores a benchmark's answers with every metric variant the reference defines (each\n"
                          "labelled) and prints the scores as JSON on stdout; \"reported\" names the number the\n"
                          "paper's table uses. Malformed question or answer lines are listed with their line\n"
                          "number and id, and fail the command.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!bench || !questions || !answers) asvr_cli_usage_error(&cli, "--bench, --questions and --answers are required");
    const bench_def *b = bench_find(bench);
    if (!b) asvr_cli_usage_error(&cli, "unknown benchmark '%s' (known: %s)", bench, bench_names());

    asvr_error err;
    bench_set s;
    if (bench_load_questions(questions, b, &s, &err) < 0 || bench_attach_answers(&s, answers, allow_missing, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        bench_set_free(&s);
        return ASVR_EXIT_FAIL;
    }
    json_t *scores = bench_score(b, &s, &err);
    if (!scores) {
        LOG_ERROR("%s", err.msg);
        bench_set_free(&s);
        return ASVR_EXIT_FAIL;
    }
    int rc = ASVR_EXIT_OK;
    if (out && bench_write_scores(out, scores, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        rc = ASVR_EXIT_FAIL;
    }
    char *text = json_dumps(scores, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    CHECK(text != NULL, "", "serialising the scores of %s", b->name);
    if (rc == ASVR_EXIT_OK) {
        if (puts(text) < 0 || fflush(stdout) != 0) {
            LOG_ERROR("writing the scores to stdout failed");
            rc = ASVR_EXIT_FAIL;
        }
        json_t *rep = json_object_get(scores, "reported");
        LOG_INFO("%s: %zu questions, %zu answered; %s = %.4f", b->name, s.n, s.answered,
                 json_string_value(json_object_get(rep, "metric")), json_number_value(json_object_get(rep, "value")));
        if (stats) {
            json_t *st = json_pack("{s:s, s:I, s:I, s:O}", "benchmark", b->name, "questions", (json_int_t)s.n,
                                   "answered", (json_int_t)s.answered, "reported", rep);
            asvr_stats_write(stats, st);
            json_decref(st);
        }
    }
    free(text);
    json_decref(scores);
    bench_set_free(&s);
    return rc;
}
