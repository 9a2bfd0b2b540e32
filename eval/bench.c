/* bench.c — the benchmark table, prompt builders, question/answer loading and the aggregate
 * scorers (bench.h). Per-answer rules come from metrics.h. */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "base/sbuf.h"
#include "base/log.h"
#include "metrics.h"
#include "text/template.h"


/* ---- field access --------------------------------------------------------------------------------- */

static const char *q_str(json_t *q, const char *key) {
    json_t *v = json_object_get(q, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A string field, or an integer one as text (set_id, figure_id, index ...), into buf. */
static const char *q_text(json_t *q, const char *key, char *buf, size_t n) {
    json_t *v = json_object_get(q, key);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

/* A missing option is null or the string "nan" (MMBench's TSV convention). */
static int option_present(json_t *v) { return json_is_string(v) && strcmp(json_string_value(v), "nan") != 0; }

static int has_image(json_t *q) {
    const char *im = q_str(q, "image");
    return im && im[0];
}

int bench_qid_text(json_t *v, char *buf, size_t n) {
    if (json_is_string(v) && json_string_length(v) > 0) {
        snprintf(buf, n, "%s", json_string_value(v));
        return 0;
    }
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        return 0;
    }
    return -1;
}

void bench_row_error(bench_set *s, size_t i, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->errors < 50) LOG_ERROR("%s:%ld (question_id %s): %s", s->path, s->items[i].line, s->items[i].qid, msg);
    else if (s->errors == 50) LOG_ERROR("%s: more malformed rows; not listing them", s->path);
    s->errors++;
}

/* ---- prompts ------------------------------------------------------------------------------------- */

#define SUFFIX_WORD "Answer the question using a single word or phrase."
#define SUFFIX_NUMBER "Answer the question using a single number or phrase."
#define SUFFIX_SHORT "Give the short answer directly."
#define SUFFIX_LETTER "Answer with the option's letter from the given choices directly."

static const char *question_or_err(json_t *q, asvr_error *err) {
    const char *t = q_str(q, "question");
    if (!t) asvr_err_set(err, "no \"question\" string");
    return t;
}

static char *with_image(json_t *q, sbuf *qs) {
    sbuf out = {0};
    sb_str(&out, "");
    if (has_image(q)) sb_str(&out, "<image>\n");
    sb_str(&out, qs->s);
    free(qs->s);
    return out.s;
}

/* q + "\n" + suffix (suffix "" → q alone). */
static char *prompt_suffixed(const bench_def *b, json_t *q, asvr_error *err) {
    const char *t = question_or_err(q, err);
    if (!t) return NULL;
    sbuf qs = {0};
    sb_str(&qs, t);
    if (b->suffix[0]) {
        sb_str(&qs, "\n");
        sb_str(&qs, b->suffix);
    }
    return with_image(q, &qs);
}

/* TextVQA: q + "\nReference OCR tokens:" + " t1" + ", t2" ... + "\n" + suffix. */
static char *prompt_textvqa(const bench_def *b, json_t *q, asvr_error *err) {
    const char *t = question_or_err(q, err);
    if (!t) return NULL;
    json_t *toks = json_object_get(q, "ocr_tokens");
    if (toks && !json_is_array(toks)) {
        asvr_err_set(err, "\"ocr_tokens\" is not a list");
        return NULL;
    }
    sbuf qs = {0};
    sb_str(&qs, t);
    sb_str(&qs, "\nReference OCR tokens:");
    size_t i;
    json_t *v;
    json_array_foreach(toks, i, v) {
        if (!json_is_string(v)) {
            free(qs.s);
            asvr_err_set(err, "ocr_tokens[%zu] is not a string", i);
            return NULL;
        }
        sb_str(&qs, i == 0 ? " " : ", ");
        sb_str(&qs, json_string_value(v));
    }
    sb_str(&qs, "\n");
    sb_str(&qs, b->suffix);
    return with_image(q, &qs);
}

static json_t *options_or_err(json_t *q, asvr_error *err) {
    json_t *o = json_object_get(q, "options");
    if (!json_is_array(o) || json_array_size(o) == 0) {
        asvr_err_set(err, "no \"options\" list");
        return NULL;
    }
    return o;
}

/* "\nA. x\nB. y..." for present options (letter = position). */
static int add_options(sbuf *qs, json_t *opts, size_t max, asvr_error *err) {
    if (json_array_size(opts) > max) return asvr_err_set(err, "%zu options, at most %zu allowed", json_array_size(opts), max);
    size_t i;
    json_t *v;
    json_array_foreach(opts, i, v) {
        if (!option_present(v)) continue;
        char head[8];
        snprintf(head, sizeof head, "\n%c. ", (char)('A' + i));
        sb_str(qs, head);
        sb_str(qs, json_string_value(v));
    }
    return 0;
}

/* MMBench: (hint + "\n") + q + " Options:" + "\nA. x"... + "\n" + suffix. */
static char *prompt_mmbench(const bench_def *b, json_t *q, asvr_error *err) {
    const char *t = question_or_err(q, err);
    json_t *opts = t ? options_or_err(q, err) : NULL;
    if (!opts) return NULL;
    sbuf qs = {0};
    sb_str(&qs, "");
    json_t *hint = json_object_get(q, "hint");
    if (option_present(hint)) {
        sb_str(&qs, json_string_value(hint));
        sb_str(&qs, "\n");
    }
    sb_str(&qs, t);
    sb_str(&qs, " Options:");
    if (add_options(&qs, opts, 26, err) < 0) {
        free(qs.s);
        return NULL;
    }
    sb_str(&qs, "\n");
    sb_str(&qs, b->suffix);
    return with_image(q, &qs);
}

/* SEED: q + " Options:" + "\nA. a" ... + "\n" + suffix. AI2D: the same without " Options:" and at
 * most 4 options ("ABCD"[i]). */
static char *prompt_options(const bench_def *b, json_t *q, asvr_error *err, const char *lead, size_t max) {
    const char *t = question_or_err(q, err);
    json_t *opts = t ? options_or_err(q, err) : NULL;
    if (!opts) return NULL;
    sbuf qs = {0};
    sb_str(&qs, t);
    sb_str(&qs, lead);
    if (add_options(&qs, opts, max, err) < 0) {
        free(qs.s);
        return NULL;
    }
    sb_str(&qs, "\n");
    sb_str(&qs, b->suffix);
    return with_image(q, &qs);
}
static char *prompt_seed(const bench_def *b, json_t *q, asvr_error *err) { return prompt_options(b, q, err, " Options:", 26); }
static char *prompt_ai2d(const bench_def *b, json_t *q, asvr_error *err) { return prompt_options(b, q, err, "", 4); }

static int is_mmmu_mc(json_t *q) {
    const char *t = q_str(q, "question_type");
    return t && strcmp(t, "multiple-choice") == 0;
}

/* MMMU: MC as SEED, open with the single-word suffix; "<image>\n" first when an image exists, then
 * every "<image N>" removed and the whole stripped. */
static char *prompt_mmmu(const bench_def *b, json_t *q, asvr_error *err) {
    char *p;
    if (is_mmmu_mc(q)) {
        p = prompt_options(b, q, err, " Options:", 26);
    } else {
        const char *t = question_or_err(q, err);
        if (!t) return NULL;
        sbuf qs = {0};
        sb_str(&qs, t);
        sb_str(&qs, "\n" SUFFIX_WORD);
        p = with_image(q, &qs);
    }
    if (!p) return NULL;
    sbuf out = {0};
    sb_str(&out, "");
    for (const char *s = p; *s;) {
        if (strncmp(s, "<image ", 7) == 0 && s[7] >= '0' && s[7] <= '9') {
            const char *e = s + 7;
            while (*e >= '0' && *e <= '9') e++;
            if (*e == '>') {
                s = e + 1;
                continue;
            }
        }
        sb_add(&out, s, 1);
        s++;
    }
    free(p);
    size_t bgn, end;
    py_strip(out.s, out.n, &bgn, &end);
    out.s[end] = 0;
    char *r = asvr_strdup(out.s + bgn);
    free(out.s);
    return r;
}

/* Replaces every occurrence of a by r in s (malloc'd). */
static char *str_replace(const char *s, const char *a, const char *r) {
    sbuf o = {0};
    sb_str(&o, "");
    size_t al = strlen(a);
    for (const char *p = s, *q; ; p = q + al) {
        q = strstr(p, a);
        if (!q) {
            sb_str(&o, p);
            break;
        }
        sb_add(&o, p, (size_t)(q - p));
        sb_str(&o, r);
    }
    return o.s;
}

/* MMVP: parts = [strip(x) for x in options_raw.split("(b)")], "(a)"→"A.", "(b)"→"B." in each,
 * parts[1] = "B. " + parts[1]; q + " Options:" + "\n" + part ... + "\n" + suffix. */
static char *prompt_mmvp(const bench_def *b, json_t *q, asvr_error *err) {
    const char *t = question_or_err(q, err);
    if (!t) return NULL;
    const char *raw = q_str(q, "options_raw");
    if (!raw) {
        asvr_err_set(err, "no \"options_raw\" string (the CSV's Options cell)");
        return NULL;
    }
    sbuf qs = {0};
    sb_str(&qs, t);
    sb_str(&qs, " Options:");
    int k = 0;
    for (const char *p = raw;; k++) {
        const char *sep = strstr(p, "(b)");
        size_t len = sep ? (size_t)(sep - p) : strlen(p);
        char *part = asvr_malloc(len + 1, "an MMVP option");
        memcpy(part, p, len);
        part[len] = 0;
        char *st = py_strip_dup(part);
        char *r1 = str_replace(st, "(a)", "A.");
        char *r2 = str_replace(r1, "(b)", "B.");
        sb_str(&qs, "\n");
        if (k == 1) sb_str(&qs, "B. ");
        sb_str(&qs, r2);
        free(part);
        free(st);
        free(r1);
        free(r2);
        if (!sep) break;
        p = sep + 3;
    }
    sb_str(&qs, "\n");
    sb_str(&qs, b->suffix);
    return with_image(q, &qs);
}

char *bench_prompt(const bench_def *b, json_t *q, asvr_error *err) { return b->prompt(b, q, err); }

/* ---- scoring helpers ------------------------------------------------------------------------------ */

static double pct(double num, double den) { return den > 0 ? 100.0 * num / den : 0.0; }

static void put_metric(json_t *out, const char *name, double v, const char *label) {
    json_object_set_new(json_object_get(out, "metrics"), name, isfinite(v) ? json_real(v) : json_null());
    json_object_set_new(json_object_get(out, "labels"), name, json_string(label));
}
static void put_scale(json_t *out, const char *name, double max) {
    json_object_set_new(json_object_get(out, "scale"), name, json_real(max));
}

/* The ground-truth list: "answers" (list of strings) or "answer" (one string). *gts is malloc'd. */
static int item_answers(bench_set *s, size_t i, const char ***gts, int *n) {
    json_t *q = s->items[i].q;
    json_t *a = json_object_get(q, "answers");
    if (json_is_array(a)) {
        *n = (int)json_array_size(a);
        *gts = asvr_malloc((size_t)(*n + 1) * sizeof **gts, "ground truths");
        for (int k = 0; k < *n; k++) {
            json_t *v = json_array_get(a, (size_t)k);
            if (!json_is_string(v)) {
                free(*gts);
                bench_row_error(s, i, "answers[%d] is not a string", k);
                return -1;
            }
            (*gts)[k] = json_string_value(v);
        }
        return 0;
    }
    const char *one = q_str(q, "answer");
    if (!one) {
        bench_row_error(s, i, "no ground truth (\"answer\" string or \"answers\" list)");
        return -1;
    }
    *gts = asvr_malloc(sizeof **gts, "ground truths");
    (*gts)[0] = one;
    *n = 1;
    return 0;
}

static const char *item_answer(bench_set *s, size_t i) {
    const char *a = q_str(s->items[i].q, "answer");
    if (!a) bench_row_error(s, i, "no \"answer\" string");
    return a;
}

/* Per-key correct/total counters (small, linear lookup; benchmarks have few categories). */
typedef struct tally {
    char **keys;
    double *num, *den;
    int n;
} tally;
static int tally_slot(tally *t, const char *key) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->keys[i], key) == 0) return i;
    t->keys = asvr_realloc(t->keys, (size_t)(t->n + 1) * sizeof *t->keys, "a tally");
    t->num = asvr_realloc(t->num, (size_t)(t->n + 1) * sizeof *t->num, "a tally");
    t->den = asvr_realloc(t->den, (size_t)(t->n + 1) * sizeof *t->den, "a tally");
    t->keys[t->n] = asvr_strdup(key);
    t->num[t->n] = t->den[t->n] = 0;
    return t->n++;
}
static void tally_add(tally *t, const char *key, double v) {
    int k = tally_slot(t, key);
    t->num[k] += v;
    t->den[k] += 1;
}
static void tally_free(tally *t) {
    for (int i = 0; i < t->n; i++) free(t->keys[i]);
    free(t->keys);
    free(t->num);
    free(t->den);
    memset(t, 0, sizeof *t);
}
/* breakdown[name] = {key: {"accuracy": %, "correct": c, "total": n}} */
static void tally_put(json_t *out, const char *name, const tally *t) {
    if (t->n == 0) return;
    json_t *o = json_object();
    for (int i = 0; i < t->n; i++)
        json_object_set_new(o, t->keys[i],
                            json_pack("{s:f, s:f, s:I}", "accuracy", pct(t->num[i], t->den[i]), "correct", t->num[i],
                                      "total", (json_int_t)t->den[i]));
    json_object_set_new(json_object_get(out, "breakdown"), name, o);
}

/* Groups rows by a key; a group is correct when all its rows are. */
typedef struct grouper {
    tally t; /* num = wrong rows in the group, den = rows */
} grouper;
static void group_add(grouper *g, const char *key, int correct) { tally_add(&g->t, key, correct ? 0 : 1); }
static double group_accuracy(const grouper *g, int *ngroups) {
    int ok = 0;
    for (int i = 0; i < g->t.n; i++) ok += g->t.num[i] == 0;
    *ngroups = g->t.n;
    return pct(ok, g->t.n);
}

/* ---- scorers -------------------------------------------------------------------------------------- */

static void score_textvqa(bench_set *s, json_t *out) {
    double sum = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char **gts;
        int n;
        if (item_answers(s, i, &gts, &n) < 0) continue;
        if (n != 10) bench_row_error(s, i, "%d ground-truth answers; VQA accuracy needs exactly 10", n);
        else sum += vqa_soft_accuracy(s->items[i].pred, gts, n);
        free(gts);
    }
    put_metric(out, "accuracy", pct(sum, (double)s->n),
               "VQA soft accuracy: EvalAI normalisation of the lower-cased answers, min(1, matches/3) "
               "averaged over the 10 leave-one-out subsets (textvqa_test.py / m4c_evaluator.py)");
}

static void score_docvqa(bench_set *s, json_t *out) {
    double a = 0, r = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char **gts;
        int n;
        json_t *has = json_object_get(s->items[i].q, "answers");
        if (!has && !q_str(s->items[i].q, "answer")) {
            bench_row_error(s, i, "no ground truth: the DocVQA test split is scored by the RRC server; "
                                  "score the validation split locally");
            continue;
        }
        if (item_answers(s, i, &gts, &n) < 0) continue;
        a += anls_lmms(s->items[i].pred, gts, n);
        r += anls_rrc(s->items[i].pred, gts, n);
        free(gts);
    }
    put_metric(out, "anls", pct(a, (double)s->n),
               "ANLS x100, lmms-eval form: 1 - min NL with the raw-string length denominator, 0 below 0.5");
    put_metric(out, "anls_rrc", pct(r, (double)s->n),
               "ANLS x100, official RRC form: max over answers of 1 - NL if NL < 0.5, normalised-string denominator");
}

#define OCR_HME "Handwritten Mathematical Expression Recognition"

static void score_ocrbench(bench_set *s, json_t *out) {
    double c = 0, cl = 0;
    tally cat = {0}, catl = {0};
    for (size_t i = 0; i < s->n; i++) {
        const char **gts;
        int n;
        if (item_answers(s, i, &gts, &n) < 0) continue;
        const char *qt = q_str(s->items[i].q, "question_type");
        if (!qt) {
            free(gts);
            bench_row_error(s, i, "no \"question_type\" (OCRBench category)");
            continue;
        }
        const char *ds = q_str(s->items[i].q, "dataset");
        int ok = ocrbench_correct(s->items[i].pred, gts, n, strcmp(qt, OCR_HME) == 0);
        int okl = ocrbench_correct_lmms(s->items[i].pred, gts, n, ds && strcmp(ds, "HME100k") == 0);
        c += ok;
        cl += okl;
        tally_add(&cat, qt, ok);
        tally_add(&catl, qt, okl);
        free(gts);
    }
    put_metric(out, "total_accuracy", pct(c, (double)s->n),
               "100 x correct / questions; correct = some answer is a substring of the prediction (lower, strip; "
               "HME category: spaces removed) (ocrbench_test.py without --extra_penalization)");
    put_metric(out, "score", c, "OCRBench score: number of correct answers (out of 1000 on the full set)");
    put_scale(out, "score", (double)s->n);
    put_metric(out, "lmms_total_accuracy", pct(cl, (double)s->n),
               "lmms-eval variant: fullwidth ASCII folded, HME chosen by dataset == HME100k");
    tally_put(out, "question_type", &cat);
    tally_put(out, "question_type_lmms", &catl);
    tally_free(&cat);
    tally_free(&catl);
}

static void score_chartqa(bench_set *s, json_t *out) {
    double c = 0, cl = 0;
    tally ty = {0}, tyl = {0};
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        if (!gt) continue;
        int ok = chartqa_correct_cambrian(s->items[i].pred, gt);
        int okl = chartqa_correct_lmms(s->items[i].pred, gt);
        c += ok;
        cl += okl;
        const char *t = q_str(s->items[i].q, "type");
        if (t) {
            tally_add(&ty, t, ok);
            tally_add(&tyl, t, okl);
        }
    }
    put_metric(out, "relaxed_accuracy", pct(c, (double)s->n),
               "relaxed accuracy, Cambrian chartqa_test.py: both float() -> |a-g| <= 0.05|g|, else exact (lower-cased)");
    put_metric(out, "lmms_relaxed_accuracy", pct(cl, (double)s->n),
               "relaxed accuracy, lmms-eval: trailing % read as /100, relative check only for a non-zero target");
    tally_put(out, "type", &ty);
    tally_put(out, "type_lmms", &tyl);
    tally_free(&ty);
    tally_free(&tyl);
}

static void score_mmbench(bench_set *s, json_t *out) {
    double c = 0;
    grouper g = {0};
    tally cat = {0};
    grouper *cg = NULL; /* per category circular groups, parallel to catnames */
    tally catnames = {0};
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        if (!gt) continue;
        char *t = mcq_extract(s->items[i].pred), *g_l = py_lower(gt);
        int ok = strcmp(t, g_l) == 0;
        free(t);
        free(g_l);
        c += ok;
        char buf[64];
        const char *key = q_text(s->items[i].q, "circular_group", buf, sizeof buf);
        json_t *idx = json_object_get(s->items[i].q, "index");
        if (!key && json_is_integer(idx)) {
            snprintf(buf, sizeof buf, "index:%lld", (long long)(json_integer_value(idx) % 1000000));
            key = buf;
        }
        if (!key) key = s->items[i].qid;
        group_add(&g, key, ok);
        const char *cn = q_str(s->items[i].q, "category");
        if (cn) {
            tally_add(&cat, cn, ok);
            int before = catnames.n;
            int k = tally_slot(&catnames, cn);
            if (catnames.n != before) {
                cg = asvr_realloc(cg, (size_t)catnames.n * sizeof *cg, "category groups");
                memset(&cg[k], 0, sizeof cg[k]);
            }
            group_add(&cg[k], key, ok);
        }
    }
    int ng;
    put_metric(out, "circular_accuracy", group_accuracy(&g, &ng),
               "circular accuracy: a question counts when the letter (extract_mcq_answer) is right for all its "
               "circular copies (grouped by circular_group, else index % 1e6)");
    put_metric(out, "accuracy", pct(c, (double)s->n), "per-row accuracy of the extracted letter");
    json_object_set_new(out, "groups", json_integer(ng));
    tally_put(out, "category", &cat);
    if (catnames.n) {
        json_t *o = json_object();
        for (int k = 0; k < catnames.n; k++) {
            int n;
            double a = group_accuracy(&cg[k], &n);
            json_object_set_new(o, catnames.keys[k], json_pack("{s:f, s:i}", "circular_accuracy", a, "groups", n));
            tally_free(&cg[k].t);
        }
        json_object_set_new(json_object_get(out, "breakdown"), "category_circular", o);
    }
    free(cg);
    tally_free(&catnames);
    tally_free(&cat);
    tally_free(&g.t);
}

static const char *const MME_PERCEPTION[] = {"existence", "count",    "position", "color",   "posters",
                                             "celebrity", "scene",    "landmark", "artwork", "OCR"};
static const char *const MME_COGNITION[] = {"commonsense_reasoning", "numerical_calculation", "text_translation",
                                            "code_reasoning"};

/* 1 perception, 2 cognition, 0 unknown. */
static int mme_kind(const char *c) {
    for (int i = 0; i < 10; i++)
        if (strcasecmp(c, MME_PERCEPTION[i]) == 0) return 1;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(c, MME_COGNITION[i]) == 0) return 2;
    return 0;
}

/* acc+ with Cambrian's counter over the row index (mme_test.py): per category a counter that
 * ends at 2 x (images with both questions right), provided the two questions of an image are on
 * consecutive rows starting at an even row. */
typedef struct mme_acc {
    tally correct, plus; /* num: correct rows / the acc+ counter; den: rows */
} mme_acc;

static void mme_row(mme_acc *m, const char *cat, size_t idx, int ok) {
    tally_add(&m->correct, cat, ok);
    int k = tally_slot(&m->plus, cat);
    m->plus.den[k] += 1;
    long cnt = (long)m->plus.num[k];
    if (ok) {
        if (!(idx % 2 == 1 && cnt % 2 == 0)) m->plus.num[k] += 1;
    } else if (idx % 2 == 1 && cnt % 2 == 1) {
        m->plus.num[k] -= 1;
    }
}

static void mme_sums(mme_acc *m, json_t *bd, double *perception, double *cognition, double *correct) {
    *perception = *cognition = *correct = 0;
    for (int k = 0; k < m->correct.n; k++) {
        double acc = m->correct.num[k] / m->correct.den[k];
        int kp = tally_slot(&m->plus, m->correct.keys[k]);
        double accp = m->plus.num[kp] / m->plus.den[kp];
        double score = 100.0 * (acc + accp);
        *correct += m->correct.num[k];
        if (mme_kind(m->correct.keys[k]) == 1) *perception += score;
        else *cognition += score;
        if (bd)
            json_object_set_new(bd, m->correct.keys[k],
                                json_pack("{s:f, s:f, s:f, s:I}", "acc", 100.0 * acc, "acc_plus", 100.0 * accp, "score",
                                          score, "questions", (json_int_t)m->correct.den[k]));
    }
}

static void score_mme(bench_set *s, json_t *out) {
    mme_acc cam = {0}, off = {0};
    int pair_warned = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        const char *cat = q_str(s->items[i].q, "category");
        if (!gt) continue;
        if (!cat || !mme_kind(cat)) {
            bench_row_error(s, i, "\"category\" %s%s%s is not one of the 14 MME subtasks", cat ? "'" : "",
                            cat ? cat : "missing", cat ? "'" : "");
            continue;
        }
        if (i % 2 == 1 && !pair_warned) {
            const char *a = q_str(s->items[i - 1].q, "image"), *b = q_str(s->items[i].q, "image");
            const char *ca = q_str(s->items[i - 1].q, "category");
            if (!a || !b || strcmp(a, b) != 0 || !ca || strcmp(ca, cat) != 0) {
                LOG_WARN("%s:%ld: rows %zu and %zu are not the two questions of one image; acc+ pairs rows by "
                         "position (as the reference does) and will be wrong",
                         s->path, s->items[i].line, i, i + 1);
                pair_warned = 1;
            }
        }
        char *g = py_lower(gt);
        mme_row(&cam, cat, i, mme_correct(s->items[i].pred, gt));
        mme_row(&off, cat, i, strcmp(mme_parse_official(s->items[i].pred), g) == 0);
        free(g);
    }
    json_t *bd = json_object(), *bdo = json_object();
    double p, c, corr, po, co, corro;
    mme_sums(&cam, bd, &p, &c, &corr);
    mme_sums(&off, bdo, &po, &co, &corro);
    put_metric(out, "perception", p,
               "MME Perception: sum over the 10 perception subtasks of 100 x (acc + acc+), "
               "answer = pred.lower().rstrip('.') == gt (mme_test.py)");
    put_scale(out, "perception", 2000);
    put_metric(out, "cognition", c, "MME Cognition: the same over the 4 cognition subtasks");
    put_scale(out, "cognition", 800);
    put_metric(out, "total_score", p + c, "Perception + Cognition");
    put_scale(out, "total_score", 2800);
    put_metric(out, "accuracy", pct(corr, (double)s->n), "per-question accuracy");
    put_metric(out, "official_perception", po,
               "Perception with the official parse (Bunny calculation_mme.py: yes/no, else the first 4 characters)");
    put_scale(out, "official_perception", 2000);
    put_metric(out, "official_cognition", co, "Cognition with the official parse");
    put_scale(out, "official_cognition", 800);
    json_object_set_new(json_object_get(out, "breakdown"), "category", bd);
    json_object_set_new(json_object_get(out, "breakdown"), "category_official", bdo);
    tally_free(&cam.correct);
    tally_free(&cam.plus);
    tally_free(&off.correct);
    tally_free(&off.plus);
}

typedef struct confusion {
    double tp, fp, tn, fn;
} confusion;

static json_t *confusion_json(const confusion *c, double *f1_out, double *acc_out) {
    double n = c->tp + c->fp + c->tn + c->fn;
    double prec = (c->tp + c->fp) > 0 ? c->tp / (c->tp + c->fp) : NAN;
    double rec = (c->tp + c->fn) > 0 ? c->tp / (c->tp + c->fn) : NAN;
    double f1 = (isfinite(prec) && isfinite(rec) && prec + rec > 0) ? 2 * prec * rec / (prec + rec) : NAN;
    double acc = n > 0 ? (c->tp + c->tn) / n : NAN;
    double yes = n > 0 ? (c->tp + c->fp) / n : NAN;
    *f1_out = f1;
    *acc_out = acc;
    json_t *o = json_object();
#define PUTF(k, v) json_object_set_new(o, k, isfinite(v) ? json_real(100.0 * (v)) : json_null())
    PUTF("accuracy", acc);
    PUTF("precision", prec);
    PUTF("recall", rec);
    PUTF("f1", f1);
    PUTF("yes_ratio", yes);
#undef PUTF
    json_object_set_new(o, "tp", json_integer((json_int_t)c->tp));
    json_object_set_new(o, "fp", json_integer((json_int_t)c->fp));
    json_object_set_new(o, "tn", json_integer((json_int_t)c->tn));
    json_object_set_new(o, "fn", json_integer((json_int_t)c->fn));
    return o;
}

static void score_pope(bench_set *s, json_t *out) {
    double c = 0, cs = 0;
    tally cat = {0};
    char **names = NULL;
    confusion *cm = NULL;
    int nc = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        if (!gt) continue;
        char *g = py_lower(gt);
        char *p = pope_first_token(s->items[i].pred);
        int ok = p && strcmp(p, g) == 0;
        free(p);
        char *strict = py_lower(s->items[i].pred), *st = py_strip_dup(strict);
        cs += strcmp(st, g) == 0;
        free(strict);
        free(st);
        c += ok;
        const char *cn = q_str(s->items[i].q, "category");
        if (!cn) cn = "all";
        tally_add(&cat, cn, ok);
        int k = 0;
        while (k < nc && strcmp(names[k], cn) != 0) k++;
        if (k == nc) {
            names = asvr_realloc(names, (size_t)(nc + 1) * sizeof *names, "POPE categories");
            cm = asvr_realloc(cm, (size_t)(nc + 1) * sizeof *cm, "POPE categories");
            names[nc] = asvr_strdup(cn);
            memset(&cm[nc], 0, sizeof cm[nc]);
            nc++;
        }
        int label_yes = strcmp(g, "no") != 0; /* LLaVA: label 'no' → 0, anything else → 1 */
        int pred_yes = pope_llava_is_yes(s->items[i].pred);
        if (pred_yes && label_yes) cm[k].tp++;
        else if (pred_yes) cm[k].fp++;
        else if (label_yes) cm[k].fn++;
        else cm[k].tn++;
        free(g);
    }
    put_metric(out, "accuracy", pct(c, (double)s->n),
               "accuracy over all questions, Cambrian pope_test.py: first word, rstrip('.:,'), == gt");
    json_t *llava = json_object();
    double f1sum = 0, accsum = 0;
    int f1n = 0;
    for (int k = 0; k < nc; k++) {
        double f1, acc;
        json_object_set_new(llava, names[k], confusion_json(&cm[k], &f1, &acc));
        f1sum += f1;
        accsum += acc;
        f1n++;
        free(names[k]);
    }
    free(names);
    free(cm);
    put_metric(out, "llava_mean_f1", f1n ? 100.0 * f1sum / f1n : NAN,
               "LLaVA eval_pope.py: F1 (positive = yes; 'no'/'No'/'not' in the first sentence = no) averaged "
               "over the categories (adversarial, popular, random)");
    put_metric(out, "llava_mean_accuracy", f1n ? 100.0 * accsum / f1n : NAN,
               "LLaVA eval_pope.py accuracy averaged over the categories");
    put_metric(out, "lmms_accuracy", pct(cs, (double)s->n), "lmms-eval: pred.lower().strip() == gt");
    tally_put(out, "category", &cat);
    json_object_set_new(json_object_get(out, "breakdown"), "llava", llava);
    tally_free(&cat);
}

typedef char *(*extract_fn)(const char *);

/* Letter benchmarks: extract(pred) == gt.lower(); breakdown by "category" when present. */
static void score_letter(bench_set *s, json_t *out, extract_fn ex, const char *label) {
    double c = 0;
    tally cat = {0};
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        if (!gt) continue;
        char *t = ex(s->items[i].pred), *g = py_lower(gt);
        int ok = t && strcmp(t, g) == 0;
        free(t);
        free(g);
        c += ok;
        char buf[32];
        const char *cn = q_text(s->items[i].q, "category", buf, sizeof buf);
        if (cn) tally_add(&cat, cn, ok);
    }
    put_metric(out, "accuracy", pct(c, (double)s->n), label);
    tally_put(out, "category", &cat);
    tally_free(&cat);
}

static void score_seed(bench_set *s, json_t *out) {
    score_letter(s, out, mcq_extract_seed,
                 "accuracy: extract_mcq_answer with rstrip('.') only, == answer letter (seed_test.py)");
}
static void score_rwqa(bench_set *s, json_t *out) {
    score_letter(s, out, rwqa_extract,
                 "accuracy: lower, strip, answer-keyword split, rstrip('.'), first word == answer (realworldqa_test.py)");
}
static char *gqa_extract(const char *pred) {
    char *l = py_lower(pred), *r = py_rstrip_chars(l, ".");
    free(l);
    return r;
}
static void score_gqa(bench_set *s, json_t *out) {
    score_letter(s, out, gqa_extract, "exact match: pred.lower().rstrip('.') == answer.lower() (gqa_test.py)");
}

static char *ai2d_extract(const char *pred) {
    char *t = mcq_extract(pred);
    if (t[0] >= 'a' && t[0] <= 'd' && t[1] == 0) t[0] = (char)('0' + (t[0] - 'a'));
    return t;
}
static void score_ai2d(bench_set *s, json_t *out) {
    score_letter(s, out, ai2d_extract,
                 "accuracy: extract_mcq_answer, a/b/c/d -> 0/1/2/3 (other text kept), == answer index (ai2d_test.py)");
}

static void score_mmmu(bench_set *s, json_t *out) {
    double c = 0;
    tally cat = {0}, qt = {0};
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        if (!gt) continue;
        int mc = is_mmmu_mc(s->items[i].q);
        char *t = mc ? mcq_extract(s->items[i].pred) : open_extract(s->items[i].pred);
        int ok = mmmu_correct(t, gt);
        free(t);
        c += ok;
        const char *cn = q_str(s->items[i].q, "category");
        if (cn) tally_add(&cat, cn, ok);
        tally_add(&qt, mc ? "multiple-choice" : "open", ok);
    }
    put_metric(out, "accuracy", pct(c, (double)s->n),
               "accuracy (mmmu_test.py): letter extraction for multiple choice, keyword split + rstrip('.') for open; "
               "== answer, or both numbers within 5% of the prediction");
    tally_put(out, "category", &cat);
    tally_put(out, "question_type", &qt);
    tally_free(&cat);
    tally_free(&qt);
}

static void score_mmvp(bench_set *s, json_t *out) {
    double counter = 0, single = 0;
    if (s->n % 2) LOG_WARN("%s: %zu rows, an odd count: the last row has no pair", s->path, s->n);
    for (size_t i = 0; i < s->n; i++) {
        const char *gt = item_answer(s, i);
        const char *raw = q_str(s->items[i].q, "options_raw");
        if (!gt) continue;
        if (!raw) {
            bench_row_error(s, i, "no \"options_raw\" string");
            continue;
        }
        char *gl = py_lower(gt);
        /* gt_answer.lower()[1]: the letter inside "(a)" */
        char letter[8] = {0};
        const unsigned char *p = (const unsigned char *)gl;
        size_t b1 = p[0] ? 1 : 0;
        while (p[b1] && (p[b1] & 0xC0) == 0x80) b1++;
        size_t e1 = b1 + (p[b1] ? 1 : 0);
        while (p[e1] && (p[e1] & 0xC0) == 0x80) e1++;
        if (e1 == b1 || e1 - b1 > 4) {
            free(gl);
            bench_row_error(s, i, "answer '%s' has no letter at position 1 (expected like \"(a)\")", gt);
            continue;
        }
        memcpy(letter, gl + b1, e1 - b1);
        free(gl);
        int nopt;
        char **opts = mmvp_give_options(raw, &nopt);
        int oi = (int)(unsigned char)letter[0] - 'a';
        if (e1 - b1 != 1 || oi < 0 || oi >= nopt) {
            py_strv_free(opts, nopt);
            bench_row_error(s, i, "answer letter '%s' has no option in '%s'", letter, raw);
            continue;
        }
        char *t = mcq_extract_mmvp(s->items[i].pred);
        int ok = strcmp(t, letter) == 0 || strcmp(t, opts[oi]) == 0;
        free(t);
        py_strv_free(opts, nopt);
        single += ok;
        /* mmvp_test.py's counter over the row index: +2 per pair with both rows right */
        if (ok) {
            if (i % 2 == 0 || ((long)counter % 2 == 1)) counter += 1;
        } else if (i % 2 == 1 && (long)counter % 2 == 1) {
            counter -= 1;
        }
        if (i % 2 == 1) {
            char b1s[64], b2s[64];
            const char *pa = q_text(s->items[i - 1].q, "pair_id", b1s, sizeof b1s);
            const char *pb = q_text(s->items[i].q, "pair_id", b2s, sizeof b2s);
            if (pa && pb && strcmp(pa, pb) != 0)
                bench_row_error(s, i, "pair_id %s differs from the previous row's %s: MMVP pairs are rows (1,2), (3,4), ...",
                                pb, pa);
        }
    }
    put_metric(out, "accuracy", pct(counter, (double)s->n),
               "pair accuracy (mmvp_test.py): 100 x 2 x pairs with both questions right / questions; a question is right "
               "when the extracted answer is the letter or the option text");
    put_metric(out, "question_accuracy", pct(single, (double)s->n), "per-question accuracy");
}

static void score_hallusion(bench_set *s, json_t *out) {
    double c = 0, ci = 0;
    grouper fig = {0}, qg = {0}, figi = {0}, qgi = {0};
    for (size_t i = 0; i < s->n; i++) {
        json_t *q = s->items[i].q;
        const char *gt = item_answer(s, i);
        if (!gt) continue;
        char *g = py_lower(gt);
        int gt_yes = strcmp(g, "yes") == 0 || strcmp(g, "1") == 0;
        int gt_no = strcmp(g, "no") == 0 || strcmp(g, "0") == 0;
        free(g);
        char b1[32], b2[32], b3[32];
        const char *cat = q_str(q, "category"), *sub = q_str(q, "subcategory");
        const char *set = q_text(q, "set_id", b1, sizeof b1), *figid = q_text(q, "figure_id", b2, sizeof b2);
        const char *hq = q_text(q, "hb_question_id", b3, sizeof b3);
        if (!(gt_yes || gt_no)) {
            bench_row_error(s, i, "answer '%s' is not yes/no (or 1/0)", gt);
            continue;
        }
        if (!cat || !sub || !set || !figid || !hq) {
            bench_row_error(s, i, "needs category, subcategory, set_id, figure_id and hb_question_id");
            continue;
        }
        int y = yorn_extract(s->items[i].pred);
        int ok = y >= 0 && y == gt_yes;
        int oki = hb_intern_is_yes(s->items[i].pred) == gt_yes;
        c += ok;
        ci += oki;
        size_t kl = strlen(cat) + strlen(sub) + strlen(set) + strlen(figid) + strlen(hq) + 8;
        char *kf = asvr_malloc(kl, "a group key"), *kq = asvr_malloc(kl, "a group key");
        snprintf(kf, kl, "%s_%s_%s_%s", cat, sub, set, figid);
        snprintf(kq, kl, "%s_%s_%s_%s", cat, sub, set, hq);
        group_add(&fig, kf, ok);
        group_add(&qg, kq, ok);
        group_add(&figi, kf, oki);
        group_add(&qgi, kq, oki);
        free(kf);
        free(kq);
    }
    int nf, nq;
    double a = pct(c, (double)s->n), f = group_accuracy(&fig, &nf), qa = group_accuracy(&qg, &nq);
    put_metric(out, "aAcc", a,
               "question accuracy; yes/no by VLMEvalKit's rule (punctuation-processed words: 'yes' without 'no' or "
               "the reverse; anything else wrong)");
    put_metric(out, "fAcc", f, "figure accuracy: figures (category_subcategory_set_figure) with every question right");
    put_metric(out, "qAcc", qa, "question accuracy across figures (category_subcategory_set_question) all right");
    put_metric(out, "overall_mean", (a + f + qa) / 3.0, "VLMEvalKit Overall = mean(aAcc, fAcc, qAcc)");
    int n1, n2;
    put_metric(out, "intern_aAcc", pct(ci, (double)s->n), "lmms-eval 'intern' rule: yes iff 'yes' in pred.lower()");
    put_metric(out, "intern_fAcc", group_accuracy(&figi, &n1), "fAcc with the 'intern' rule");
    put_metric(out, "intern_qAcc", group_accuracy(&qgi, &n2), "qAcc with the 'intern' rule");
    json_object_set_new(out, "figures", json_integer(nf));
    json_object_set_new(out, "question_groups", json_integer(nq));
    tally_free(&fig.t);
    tally_free(&qg.t);
    tally_free(&figi.t);
    tally_free(&qgi.t);
}

/* ---- the table ----------------------------------------------------------------------------------- */

static const bench_def BENCHES[] = {
    {"textvqa", "TextVQA", BENCH_GROUP_OCR, 512, "accuracy", prompt_textvqa, score_textvqa, SUFFIX_WORD},
    {"docvqa", "DocVQA", BENCH_GROUP_OCR, 128, "anls", prompt_suffixed, score_docvqa, SUFFIX_SHORT},
    {"ocrbench", "OCRBench", BENCH_GROUP_OCR, 512, "total_accuracy", prompt_suffixed, score_ocrbench, SUFFIX_SHORT},
    {"chartqa", "ChartQA", BENCH_GROUP_OCR, 128, "relaxed_accuracy", prompt_suffixed, score_chartqa, SUFFIX_NUMBER},
    {"mmbench_en_dev", "MMBench", BENCH_GROUP_GENERAL, 512, "circular_accuracy", prompt_mmbench, score_mmbench,
     SUFFIX_LETTER},
    {"mme", "MME", BENCH_GROUP_GENERAL, 32, "perception", prompt_suffixed, score_mme, SUFFIX_WORD},
    {"seed_image", "SEED-I", BENCH_GROUP_GENERAL, 512, "accuracy", prompt_seed, score_seed, SUFFIX_LETTER},
    {"gqa", "GQA", BENCH_GROUP_GENERAL, 128, "accuracy", prompt_suffixed, score_gqa, SUFFIX_WORD},
    {"mmmu_val", "MMMU", BENCH_GROUP_KNOWLEDGE, 512, "accuracy", prompt_mmmu, score_mmmu, SUFFIX_LETTER},
    {"ai2d", "AI2D", BENCH_GROUP_KNOWLEDGE, 512, "accuracy", prompt_ai2d, score_ai2d, SUFFIX_LETTER},
    {"realworldqa", "RWQA", BENCH_GROUP_VISION, 512, "accuracy", prompt_suffixed, score_rwqa, ""},
    {"mmvp", "MMVP", BENCH_GROUP_VISION, 512, "accuracy", prompt_mmvp, score_mmvp, SUFFIX_LETTER},
    {"hallusionbench", "HallB", BENCH_GROUP_HALLUCINATION, 128, "aAcc", prompt_suffixed, score_hallusion, SUFFIX_WORD},
    {"pope", "POPE", BENCH_GROUP_HALLUCINATION, 128, "accuracy", prompt_suffixed, score_pope, SUFFIX_WORD},
};
#define N_BENCHES ((int)(sizeof BENCHES / sizeof BENCHES[0]))

/* The embedded demo (examples/demo): the question already carries its instruction; yes/no is scored
 * as POPE, multiple choice by the answer letter as SEED, short answers by exact match as GQA. */
static const bench_def DEMO_BENCHES[] = {
    {"demo_yesno", "Yes/No", BENCH_GROUP_DEMO, 16, "accuracy", prompt_suffixed, score_pope, ""},
    {"demo_mc", "MC", BENCH_GROUP_DEMO, 16, "accuracy", prompt_suffixed, score_seed, ""},
    {"demo_short", "Short", BENCH_GROUP_DEMO, 16, "accuracy", prompt_suffixed, score_gqa, ""},
};
#define N_DEMO ((int)(sizeof DEMO_BENCHES / sizeof DEMO_BENCHES[0]))

const bench_def *bench_table(const char *name, int *n) {
    if (!strcmp(name, "paper")) return bench_all(n);
    if (!strcmp(name, "demo")) {
        *n = N_DEMO;
        return DEMO_BENCHES;
    }
    return NULL;
}

int bench_write_scores(const char *path, json_t *scores, asvr_error *err) {
    char *text = json_dumps(scores, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    CHECK(text != NULL, "", "serialising scores");
    size_t len = strlen(text);
    text = asvr_realloc(text, len + 2, "the scores text");
    text[len++] = '\n';
    text[len] = 0;
    char *dir = asvr_path_dirname(path);
    int rc = asvr_mkdir_p(dir, err) < 0 ? -1 : asvr_atomic_write(path, text, len, err);
    free(dir);
    free(text);
    return rc;
}

const bench_def *bench_find(const char *name) {
    for (int i = 0; i < N_DEMO; i++)
        if (!strcmp(DEMO_BENCHES[i].name, name)) return &DEMO_BENCHES[i];
    for (int i = 0; i < N_BENCHES; i++)
        if (strcmp(BENCHES[i].name, name) == 0) return &BENCHES[i];
    return NULL;
}

const bench_def *bench_all(int *n) {
    *n = N_BENCHES;
    return BENCHES;
}

const char *bench_group_name(bench_group g) {
    static const char *const names[] = {"OCR", "General", "Knowledge", "Vision-centric", "Hallucination", "Demo"};
    return g < BENCH_N_GROUPS ? names[g] : "?";
}

const char *bench_names(void) {
    return "textvqa, docvqa, ocrbench, chartqa, mmbench_en_dev, mme, seed_image, gqa, mmmu_val, ai2d, realworldqa, "
           "mmvp, hallusionbench, pope; demo: demo_yesno, demo_mc, demo_short";
}

/* ---- loading ------------------------------------------------------------------------------------- */

static int read_line(FILE *f, char **buf, size_t *cap, size_t *len) {
    ssize_t n = getline(buf, cap, f);
    if (n < 0) return 0;
    *len = (size_t)n;
    return 1;
}

static int blank(const char *s) {
    size_t b, e;
    py_strip(s, strlen(s), &b, &e);
    return b == e;
}

/* Open addressing index of question ids → item position. */
typedef struct qindex {
    char **keys;
    size_t *pos;
    size_t cap;
} qindex;
static uint64_t str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
static void qindex_init(qindex *x, size_t n) {
    x->cap = 16;
    while (x->cap < 2 * n + 1) x->cap *= 2;
    x->keys = asvr_calloc(x->cap, sizeof *x->keys, "a question index");
    x->pos = asvr_calloc(x->cap, sizeof *x->pos, "a question index");
}
/* Returns the slot of key (empty slot when absent). */
static size_t qindex_slot(const qindex *x, const char *key) {
    size_t i = (size_t)str_hash(key) & (x->cap - 1);
    while (x->keys[i] && strcmp(x->keys[i], key) != 0) i = (i + 1) & (x->cap - 1);
    return i;
}
static void qindex_free(qindex *x) {
    free(x->keys);
    free(x->pos);
}

/* The fields a question may carry, each of one JSON type (eval/README.md): a field of another type
 * is a malformed line, not a silently ignored one. Options and hints may be null (a missing one). */
static const char *question_field_error(json_t *o, char *buf, size_t n) {
    static const char *strings[] = {"image", "question", "question_type", "category", "subcategory", "type", "dataset",
                                    "options_raw", "answer_type"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        json_t *v = json_object_get(o, strings[i]);
        if (v && !json_is_string(v) && !json_is_null(v)) {
            snprintf(buf, n, "\"%s\" must be a string", strings[i]);
            return buf;
        }
    }
    json_t *im = json_object_get(o, "image");
    if (json_is_string(im) && strlen(json_string_value(im)) != json_string_length(im)) return "\"image\" holds a NUL character";
    json_t *h = json_object_get(o, "hint");
    if (h && !json_is_string(h) && !json_is_null(h)) return "\"hint\" must be a string or null";
    const char *lists[] = {"options", "answers", "ocr_tokens"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(o, lists[i]);
        if (!v) continue;
        if (!json_is_array(v)) {
            snprintf(buf, n, "\"%s\" must be a list", lists[i]);
            return buf;
        }
        size_t k;
        json_t *x;
        json_array_foreach(v, k, x) {
            if (!json_is_string(x) && !(json_is_null(x) && i == 0)) {
                snprintf(buf, n, "%s[%zu] must be a string%s", lists[i], k, i == 0 ? " or null" : "");
                return buf;
            }
        }
    }
    json_t *a = json_object_get(o, "answer");
    if (a && !json_is_string(a) && !json_is_array(a) && !json_is_null(a)) return "\"answer\" must be a string or a list";
    return NULL;
}

int bench_load_questions(const char *path, const bench_def *b, bench_set *s, asvr_error *err) {
    memset(s, 0, sizeof *s);
    s->path = asvr_strdup(path);
    FILE *f = asvr_fopen_input(path, err);
    if (!f) return asvr_err_prefix(err, "question file");
    char *line = NULL;
    size_t cap = 0, len, capn = 0;
    long lineno = 0;
    int bad = 0;
    while (read_line(f, &line, &cap, &len)) {
        lineno++;
        if (blank(line)) continue;
        json_error_t je;
        json_t *o = json_loadb(line, len, 0, &je);
        char qid[512] = "?";
        if (!o || !json_is_object(o)) {
            LOG_ERROR("%s:%ld: not a JSON object: %s", path, lineno, o ? "another JSON value" : je.text);
            json_decref(o);
            bad++;
            continue;
        }
        if (bench_qid_text(json_object_get(o, "question_id"), qid, sizeof qid) < 0) {
            LOG_ERROR("%s:%ld: no question_id (a non-empty string or an integer)", path, lineno);
            json_decref(o);
            bad++;
            continue;
        }
        char why[128];
        const char *fe = question_field_error(o, why, sizeof why);
        if (fe) {
            LOG_ERROR("%s:%ld (question_id %s): %s", path, lineno, qid, fe);
            json_decref(o);
            bad++;
            continue;
        }
        const char *bn = q_str(o, "benchmark");
        if (bn && strcmp(bn, b->name) != 0) {
            LOG_ERROR("%s:%ld (question_id %s): benchmark '%s' in a file scored as '%s'", path, lineno, qid, bn, b->name);
            json_decref(o);
            bad++;
            continue;
        }
        if (s->n == capn) {
            capn = capn ? capn * 2 : 256;
            s->items = asvr_realloc(s->items, capn * sizeof *s->items, "questions");
        }
        bench_item *it = &s->items[s->n++];
        it->q = o;
        it->qid = asvr_strdup(qid);
        it->pred = "";
        it->answered = 0;
        it->line = lineno;
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (rerr) return asvr_err_set(err, "reading '%s': %s", path, strerror(errno));
    /* repeated ids */
    qindex x;
    qindex_init(&x, s->n);
    for (size_t i = 0; i < s->n; i++) {
        size_t sl = qindex_slot(&x, s->items[i].qid);
        if (x.keys[sl]) {
            LOG_ERROR("%s:%ld: question_id %s repeats line %ld", path, s->items[i].line, s->items[i].qid,
                      s->items[x.pos[sl]].line);
            bad++;
        } else {
            x.keys[sl] = s->items[i].qid;
            x.pos[sl] = i;
        }
    }
    qindex_free(&x);
    if (bad) return asvr_err_set(err, "'%s': %d malformed line(s), listed above", path, bad);
    if (s->n == 0) return asvr_err_set(err, "'%s' holds no questions", path);
    return 0;
}

/* Reads one answer file into s (x indexes s's ids); the missing-answer check is the caller's. */
static int attach_one(bench_set *s, const qindex *x, const char *path, asvr_error *err) {
    FILE *f = asvr_fopen_input(path, err);
    if (!f) return asvr_err_prefix(err, "answer file");
    char *line = NULL;
    size_t cap = 0, len;
    long lineno = 0;
    int bad = 0, unknown = 0, repeated = 0;
    while (read_line(f, &line, &cap, &len)) {
        lineno++;
        if (blank(line)) continue;
        json_error_t je;
        json_t *o = json_loadb(line, len, 0, &je);
        char qid[512];
        if (!o || !json_is_object(o) || bench_qid_text(json_object_get(o, "question_id"), qid, sizeof qid) < 0) {
            LOG_ERROR("%s:%ld: %s", path, lineno, !o ? je.text : "not an object with a question_id");
            json_decref(o);
            bad++;
            continue;
        }
        json_t *a = json_object_get(o, "answer");
        if (!json_is_string(a)) {
            LOG_ERROR("%s:%ld (question_id %s): \"answer\" is not a string", path, lineno, qid);
            json_decref(o);
            bad++;
            continue;
        }
        size_t sl = qindex_slot(x, qid);
        if (!x->keys[sl]) {
            if (unknown++ < 5) LOG_WARN("%s:%ld: question_id %s is not in '%s'; ignored", path, lineno, qid, s->path);
            json_decref(o);
            continue;
        }
        bench_item *it = &s->items[x->pos[sl]];
        if (it->answered) {
            repeated++;
            free((char *)it->pred);
        } else {
            s->answered++;
        }
        it->pred = asvr_strdup(json_string_value(a));
        it->answered = 1;
        json_decref(o);
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (rerr) return asvr_err_set(err, "reading '%s': %s", path, strerror(errno));
    if (unknown > 5) LOG_WARN("%s: %d answers in all for ids not in the question file", path, unknown);
    if (repeated) LOG_WARN("%s: %d question ids answered more than once; the last answer is used", path, repeated);
    if (bad) return asvr_err_set(err, "'%s': %d malformed line(s), listed above", path, bad);
    return 0;
}

int bench_attach_answer_files(bench_set *s, const char *const *paths, int n, int allow_missing, asvr_error *err) {
    qindex x;
    qindex_init(&x, s->n);
    for (size_t i = 0; i < s->n; i++) {
        size_t sl = qindex_slot(&x, s->items[i].qid);
        x.keys[sl] = s->items[i].qid;
        x.pos[sl] = i;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) rc = attach_one(s, &x, paths[i], err);
    qindex_free(&x);
    if (rc < 0) return -1;
    size_t missing = s->n - s->answered;
    if (missing && !allow_missing) {
        for (size_t i = 0, shown = 0; i < s->n && shown < 5; i++)
            if (!s->items[i].answered) {
                LOG_ERROR("no answer for question_id %s (%s:%ld)", s->items[i].qid, s->path, s->items[i].line);
                shown++;
            }
        char where[1024];
        if (n == 1) snprintf(where, sizeof where, "'%s'", paths[0]);
        else snprintf(where, sizeof where, "the %d answer files ('%s', ...)", n, n ? paths[0] : "");
        return asvr_err_set(err, "%zu of %zu questions have no answer in %s (finish the generation, or pass "
                                 "--allow-missing to score them as wrong)",
                            missing, s->n, where);
    }
    return 0;
}

int bench_attach_answers(bench_set *s, const char *path, int allow_missing, asvr_error *err) {
    return bench_attach_answer_files(s, &path, 1, allow_missing, err);
}

/* "<bench>.part-K-of-N.jsonl" (K < N): 1 with k and n set. */
static int part_name(const char *name, const char *bench, int *k, int *n) {
    size_t bl = strlen(bench);
    if (strncmp(name, bench, bl) != 0 || strncmp(name + bl, ".part-", 6) != 0) return 0;
    const char *p = name + bl + 6;
    char *end;
    if (*p < '0' || *p > '9') return 0;
    long kk = strtol(p, &end, 10);
    if (strncmp(end, "-of-", 4) != 0 || end[4] < '0' || end[4] > '9') return 0;
    long nn = strtol(end + 4, &end, 10);
    if (strcmp(end, ".jsonl") != 0 || kk < 0 || kk >= nn || nn > 1000000) return 0;
    *k = (int)kk, *n = (int)nn;
    return 1;
}

int bench_find_answer_files(const char *dir, const char *bench, char ***paths_out, int *n_out, asvr_error *err) {
    *paths_out = NULL, *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return asvr_err_set(err, "cannot open the answers folder '%s': %s", dir, strerror(errno));
    char whole[512];
    snprintf(whole, sizeof whole, "%s.jsonl", bench);
    int have_whole = 0, N = 0, other_n = 0;
    char **part = NULL; /* part[k] = file name */
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL && rc == 0) {
        int k, nn;
        if (strcmp(e->d_name, whole) == 0) {
            have_whole = 1;
        } else if (part_name(e->d_name, bench, &k, &nn)) {
            if (!N) {
                N = nn;
                part = asvr_calloc((size_t)N, sizeof *part, "answer parts");
            }
            if (nn != N) other_n = nn;
            else part[k] = asvr_strdup(e->d_name);
        }
    }
    closedir(d);
    if (other_n) {
        rc = asvr_err_set(err, "'%s' holds answers of %s in parts of %d and of %d (%s.part-K-of-N.jsonl): remove the "
                               "stale set",
                          dir, bench, N, other_n, bench);
    } else if (!have_whole && !N) {
        asvr_err_set(err, "'%s' holds no answers of %s (%s or %s.part-K-of-N.jsonl)", dir, bench, whole, bench);
        rc = 1;
    } else {
        for (int k = 0; k < N; k++)
            if (!part[k]) {
                rc = asvr_err_set(err, "'%s' lacks part %d of %d of the answers of %s (%s.part-%d-of-%d.jsonl): finish "
                                       "that part's run (asvr-eval run --shard %d/%d)",
                                  dir, k, N, bench, bench, k, N, k, N);
                break;
            }
    }
    if (rc == 0) {
        char **paths = asvr_malloc(sizeof(char *) * (size_t)(N + 1), "answer files");
        int n = 0;
        if (have_whole) paths[n++] = asvr_path_join(dir, whole);
        for (int k = 0; k < N; k++) paths[n++] = asvr_path_join(dir, part[k]);
        *paths_out = paths, *n_out = n;
    }
    for (int k = 0; k < N; k++) free(part[k]);
    free(part);
    return rc;
}

json_t *bench_score(const bench_def *b, bench_set *s, asvr_error *err) {
    json_t *out = json_object();
    json_object_set_new(out, "benchmark", json_string(b->name));
    json_object_set_new(out, "title", json_string(b->title));
    json_object_set_new(out, "group", json_string(bench_group_name(b->group)));
    json_object_set_new(out, "questions", json_integer((json_int_t)s->n));
    json_object_set_new(out, "answered", json_integer((json_int_t)s->answered));
    json_object_set_new(out, "missing", json_integer((json_int_t)(s->n - s->answered)));
    json_object_set_new(out, "metrics", json_object());
    json_object_set_new(out, "labels", json_object());
    json_object_set_new(out, "scale", json_object());
    json_object_set_new(out, "breakdown", json_object());
    s->errors = 0;
    b->score(s, out);
    if (s->errors) {
        json_decref(out);
        return asvr_err_set(err, "'%s': %d malformed question(s) for %s, listed above", s->path, s->errors, b->name),
               NULL;
    }
    json_t *v = json_object_get(json_object_get(out, "metrics"), b->reported);
    json_object_set_new(out, "reported", json_pack("{s:s, s:O}", "metric", b->reported, "value", v ? v : json_null()));
    return out;
}

void bench_set_free(bench_set *s) {
    for (size_t i = 0; i < s->n; i++) {
        json_decref(s->items[i].q);
        free(s->items[i].qid);
        if (s->items[i].answered) free((char *)s->items[i].pred);
    }
    free(s->items);
    free(s->path);
    memset(s, 0, sizeof *s);
}
