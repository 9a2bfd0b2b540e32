/* bench.h — the 14 benchmarks of the paper's table: their question files, prompts, generation
 * lengths, table group and scoring (reference/data_and_eval.md §B0–B16; Cambrian protocol).
 *
 * Question file (JSONL, one JSON object per line; blank lines are skipped; full field list per
 * benchmark in eval/README.md):
 *   question_id  string or integer, unique in the file; kept as text ("12" and 12 are the same id)
 *   benchmark    optional; when present it must equal the benchmark's name (bench_def.name)
 *   image        image path relative to an image root (absent for a text-only row)
 *   question     the question text as released
 *   answer       the ground truth (string), or
 *   answers      the ground-truth list (TextVQA: exactly 10; DocVQA, OCRBench: one or more)
 *   options      multiple choice: list of option texts in letter order (null or "nan" = absent)
 *   ...          the fields a metric or a prompt needs: category, split, index, circular_group,
 *                hint, ocr_tokens, question_type, type, dataset, options_raw, pair_id, subcategory,
 *                set_id, figure_id, hb_question_id.
 * Answer file (JSONL): {"question_id": ..., "answer": "<decoded output, stripped>"}; other fields
 * are ignored; the last line wins for a repeated id. A run split over processes (asvr-eval run --shard
 * K/N) writes its part to <bench>.part-K-of-N.jsonl; scoring reads every part.
 *
 * Scores (bench_score): one JSON object:
 *   {"benchmark", "title", "group", "questions", "answered", "missing",
 *    "reported": {"metric", "value"}, "metrics": {name: number|null}, "labels": {name: "what it is"},
 *    "scale": {name: max} (only for metrics that are not percentages), "breakdown": {...}}
 * Every variant the spec lists is a separate labelled metric; "reported" names the one the paper's
 * table uses (B0/B16).
 * Not for: running the model or reading images; the caller wraps the prompt in the conversation
 * template.
 */
#ifndef ASVR_EVAL_BENCH_H
#define ASVR_EVAL_BENCH_H

#include <jansson.h>
#include <stddef.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BENCH_GROUP_OCR,
    BENCH_GROUP_GENERAL,
    BENCH_GROUP_KNOWLEDGE,
    BENCH_GROUP_VISION,
    BENCH_GROUP_HALLUCINATION,
    BENCH_GROUP_DEMO, /* the embedded demo's three held-out question kinds (not in the paper's table) */
    BENCH_N_GROUPS
} bench_group;

/* One question with its answer. */
typedef struct bench_item {
    json_t *q;        /* the question object */
    char *qid;        /* question_id as text */
    const char *pred; /* the model's answer ("" when missing) */
    int answered;
    long line;        /* 1-based line in the questions file */
} bench_item;

typedef struct bench_set {
    char *path;        /* the questions file, for messages */
    bench_item *items;
    size_t n;
    size_t answered;
    int errors;        /* malformed rows met while scoring */
} bench_set;

typedef struct bench_def bench_def;
struct bench_def {
    const char *name;       /* command-line name: "textvqa", "mmbench_en_dev", ... */
    const char *title;      /* column title in the report */
    bench_group group;
    int max_new_tokens;
    const char *reported;   /* metric shown in the table (a key of "metrics") */
    /* The user-turn text, "<image>\n" first when the row has an image, exactly as the reference
     * builds it (no training-time <image> normalisation). NULL with err for a malformed row. */
    char *(*prompt)(const bench_def *b, json_t *q, asvr_error *err);
    /* Fills metrics/labels/scale/breakdown of out; reports malformed rows through bench_row_error. */
    void (*score)(bench_set *s, json_t *out);
    const char *suffix;     /* the instruction appended by the prompt builder ("" if none) */
};

const bench_def *bench_find(const char *name);
/* The table in the paper's column order; *n = 14. */
const bench_def *bench_all(int *n);
/* A named table: "paper" (= bench_all) or "demo" (demo_yesno, demo_mc, demo_short); NULL when unknown. */
const bench_def *bench_table(const char *name, int *n);
/* Writes scores JSON (indented, trailing newline) to path atomically, creating its folder. */
int bench_write_scores(const char *path, json_t *scores, asvr_error *err);
const char *bench_group_name(bench_group g); /* "OCR", "General", "Knowledge", "Vision-centric", "Hallucination" */
/* "textvqa, docvqa, ..." */
const char *bench_names(void);

char *bench_prompt(const bench_def *b, json_t *q, asvr_error *err);

/* question_id as text into buf (string as is, integer in decimal); -1 when absent or another type. */
int bench_qid_text(json_t *v, char *buf, size_t n);

/* Reads a question file. Malformed lines (bad JSON, no question_id, repeated id, wrong benchmark)
 * are logged with their line number and id; any makes it return -1 (err says how many). */
int bench_load_questions(const char *path, const bench_def *b, bench_set *s, asvr_error *err);
/* Reads an answer file into s. Unknown ids are warned about; with allow_missing a question without
 * an answer is scored as the empty answer, otherwise any missing answer fails (-1). */
int bench_attach_answers(bench_set *s, const char *path, int allow_missing, asvr_error *err);
/* The same over several answer files read in order (the last answer wins for an id answered more than
 * once, with a warning); missing answers are counted once, over all of them. */
int bench_attach_answer_files(bench_set *s, const char *const *paths, int n, int allow_missing, asvr_error *err);
/* The answer files of benchmark `bench` in dir (a run's answers/ folder): <bench>.jsonl and every
 * <bench>.part-K-of-N.jsonl (asvr-eval run --shard), the whole file first, then the parts by K. The
 * parts must be one complete set (every K of one N). Paths malloc'd (free each and the array); 1 (err
 * set) when there are none; -1 with err when a part is missing or parts of two different N are there. */
int bench_find_answer_files(const char *dir, const char *bench, char ***paths, int *n, asvr_error *err);
/* Scores s with b; NULL with err when rows were malformed. */
json_t *bench_score(const bench_def *b, bench_set *s, asvr_error *err);
void bench_set_free(bench_set *s);

/* Logs "<file>:<line> (question_id X): <message>" and counts it in s->errors. */
void bench_row_error(bench_set *s, size_t i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
