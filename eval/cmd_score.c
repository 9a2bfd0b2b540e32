/* asvr-eval score — scores one benchmark's answers (bench.h) and prints/writes the scores JSON. The
 * answers may be several files (the parts of a run split with --shard) or a run's answers/ folder. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "bench.h"
#include "commands.h"

static int is_dir_path(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cmd_score(int argc, char **argv) {
    const char *bench = NULL, *questions = NULL, *answers = NULL, *out = NULL, *stats = NULL;
    int allow_missing = 0;
    const asvr_opt opts[] = {
        {"bench", ASVR_OPT_STR, &bench, "NAME", "benchmark (asvr-eval benchmarks lists them)"},
        {"questions", ASVR_OPT_STR, &questions, "Q.jsonl", "the benchmark's question file"},
        {"answers", ASVR_OPT_STR, &answers, "A.jsonl|DIR",
         "answers: one {question_id, answer} per line; more files may follow as arguments (the parts of run "
         "--shard); a folder (RUN/answers) gives <bench>.jsonl and every <bench>.part-K-of-N.jsonl in it"},
        {"out", ASVR_OPT_STR, &out, "SCORES.json", "also write the scores here (atomically); a run's layout is "
                                                  "RUN/scores/<bench>.json"},
        {"allow-missing", ASVR_OPT_FLAG, &allow_missing, NULL,
         "score questions without an answer as wrong (default: fail)"},
        {"stats", ASVR_OPT_STR, &stats, "FILE", "write a JSON summary (counts and the reported number)"},
    };
    const asvr_cli cli = {"asvr-eval score",
                          "--bench NAME --questions Q.jsonl --answers A.jsonl [MORE.jsonl...] | --answers DIR "
                          "[--out SCORES.json]",
                          "Scores a benchmark's answers with every metric variant the reference defines (each\n"
                          "labelled) and prints the scores as JSON on stdout; \"reported\" names the number the\n"
                          "paper's table uses. Malformed question or answer lines are listed with their line\n"
                          "number and id, and fail the command. The answers of a run split over processes\n"
                          "(asvr-eval run --shard K/N) are read from all its parts, with the same result as one run.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, -1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    if (!bench || !questions || !answers) asvr_cli_usage_error(&cli, "--bench, --questions and --answers are required");
    const bench_def *b = bench_find(bench);
    if (!b) asvr_cli_usage_error(&cli, "unknown benchmark '%s' (known: %s)", bench, bench_names());
    int is_dir = is_dir_path(answers);
    if (is_dir && npos > 0) asvr_cli_usage_error(&cli, "--answers DIR takes the files in DIR: give no further files");
    for (int i = 0; i < npos; i++)
        if (is_dir_path(pos[i])) asvr_cli_usage_error(&cli, "'%s' is a folder: give answer files after --answers", pos[i]);

    asvr_error err;
    char **files = NULL;
    int nfiles = 0;
    if (is_dir) {
        if (bench_find_answer_files(answers, b->name, &files, &nfiles, &err) != 0) {
            LOG_ERROR("%s", err.msg);
            free(pos);
            return ASVR_EXIT_FAIL;
        }
    } else {
        files = asvr_malloc(sizeof(char *) * (size_t)(npos + 1), "answer files");
        files[nfiles++] = asvr_strdup(answers);
        for (int i = 0; i < npos; i++) files[nfiles++] = asvr_strdup(pos[i]);
    }
    free(pos);
    if (nfiles > 1) LOG_INFO("%s: answers from %d files ('%s', ...)", b->name, nfiles, files[0]);
    bench_set s;
    int lrc = bench_load_questions(questions, b, &s, &err);
    if (lrc == 0) lrc = bench_attach_answer_files(&s, (const char *const *)files, nfiles, allow_missing, &err);
    for (int i = 0; i < nfiles; i++) free(files[i]);
    free(files);
    if (lrc < 0) {
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
    char *text = json_dumps(scores, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
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
