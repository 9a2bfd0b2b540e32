/* asvr-eval report — the paper's table (14 benchmarks in 5 groups + AVG) over run folders, each
 * holding RUN/scores/<bench>.json as written by `score --out`; with --compare, every run after the
 * first also shows its difference to the first ("59.5 (+3.5)"). Text on stdout; Markdown and JSON
 * files written atomically. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "bench.h"
#include "commands.h"
#include "io/json_stream.h"

#define DASH "\xE2\x80\x93" /* – */

typedef struct cell {
    int present;
    const char *metric;
    double value;     /* on the metric's own scale (MME: points out of 2000) */
    double avg_value; /* as a percentage, for AVG */
} cell;

typedef struct run_row {
    char *dir, *name;
    cell *cells; /* one per benchmark */
} run_row;

static char *run_name(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    char *r = asvr_malloc(n - b + 1, "a run name");
    memcpy(r, dir + b, n - b);
    r[n - b] = 0;
    return r;
}

/* --pick "bench=metric,bench=metric": the metric to show per benchmark (default: bench_def.reported). */
static int parse_pick(const char *spec, const char **picks, int nb, const bench_def *all, char **store, char *why,
                      size_t whyn) {
    if (!spec) return 0;
    char *s = asvr_strdup(spec);
    *store = s;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1]) {
            snprintf(why, whyn, "--pick expects BENCH=METRIC[,BENCH=METRIC...], got '%s'", tok);
            return -1;
        }
        *eq = 0;
        int k = 0;
        while (k < nb && strcmp(all[k].name, tok) != 0) k++;
        if (k == nb) {
            snprintf(why, whyn, "--pick: unknown benchmark '%s' (known: %s)", tok, bench_names());
            return -1;
        }
        picks[k] = eq + 1;
    }
    return 0;
}

/* Reads RUN/scores/<bench>.json into c. 0 present, 1 absent, -1 error (err set). */
static int load_cell(const char *dir, const bench_def *b, const char *metric, cell *c, json_t **keep,
                     asvr_error *err) {
    char rel[128];
    snprintf(rel, sizeof rel, "scores/%s.json", b->name);
    char *path = asvr_path_join(dir, rel);
    memset(c, 0, sizeof *c);
    if (!asvr_path_exists(path)) {
        free(path);
        return 1;
    }
    json_t *o = json_read_path(path, (size_t)64 << 20, err);
    if (!o) {
        free(path);
        return -1;
    }
    json_t *metrics = json_object_get(o, "metrics");
    const char *bn = json_string_value(json_object_get(o, "benchmark"));
    if (!json_is_object(metrics) || !bn || strcmp(bn, b->name) != 0) {
        asvr_err_set(err, "'%s' is not a scores file of %s (write it with: score --bench %s ... --out %s)", path,
                     b->name, b->name, path);
        json_decref(o);
        free(path);
        return -1;
    }
    json_t *v = json_object_get(metrics, metric);
    if (!v) {
        char names[1024] = "";
        const char *k;
        json_t *x;
        json_object_foreach(metrics, k, x) {
            if (names[0]) strncat(names, ", ", sizeof names - strlen(names) - 1);
            strncat(names, k, sizeof names - strlen(names) - 1);
        }
        asvr_err_set(err, "'%s' has no metric '%s' (it has: %s)", path, metric, names);
        json_decref(o);
        free(path);
        return -1;
    }
    free(path);
    if (!json_is_number(v)) { /* null: undefined (e.g. F1 without positives) → shown as missing */
        json_decref(o);
        return 1;
    }
    c->present = 1;
    c->metric = metric;
    c->value = json_number_value(v);
    json_t *scale = json_object_get(json_object_get(o, "scale"), metric);
    c->avg_value = json_is_number(scale) && json_number_value(scale) > 0
                       ? 100.0 * c->value / json_number_value(scale)
                       : c->value;
    *keep = o; /* metric names point into it */
    return 0;
}

/* A benchmark without scores whose answers are in RUN/answers (one file or the parts of run --shard):
 * say how to score them rather than show a silent dash. */
static void warn_unscored(const char *dir, const bench_def *b) {
    char rel[128];
    snprintf(rel, sizeof rel, "scores/%s.json", b->name);
    char *sp = asvr_path_join(dir, rel), *ad = asvr_path_join(dir, "answers");
    if (!asvr_path_exists(sp) && asvr_path_exists(ad)) {
        char **files = NULL;
        int n = 0;
        asvr_error err;
        int r = bench_find_answer_files(ad, b->name, &files, &n, &err);
        if (r == 0)
            LOG_WARN("'%s' has answers of %s (%d file(s)) but no %s: score them with asvr-eval score --bench %s "
                     "--questions Q.jsonl --answers %s --out %s",
                     dir, b->name, n, rel, b->name, ad, sp);
        else if (r < 0)
            LOG_WARN("%s (so %s shows " DASH ")", err.msg, b->name);
        for (int i = 0; i < n; i++) free(files[i]);
        free(files);
    }
    free(sp), free(ad);
}

static double round1(double v) { return round(v * 10.0) / 10.0; }

static char *fmt_cell(const cell *c, const cell *base) {
    char buf[64];
    if (!c->present) return asvr_strdup(DASH);
    if (base && base->present) {
        double d = round1(c->value) - round1(base->value);
        if (fabs(d) < 0.05) d = 0.0; /* no "-0.0" */
        snprintf(buf, sizeof buf, "%.1f (%+.1f)", c->value, d);
    } else {
        snprintf(buf, sizeof buf, "%.1f", c->value);
    }
    return asvr_strdup(buf);
}

/* Display width: code points (the dash is one). */
static int width(const char *s) {
    int w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) w += (*p & 0xC0) != 0x80;
    return w;
}

static void pad(FILE *f, const char *s, int w, int right) {
    int n = w - width(s);
    if (right)
        for (int i = 0; i < n; i++) fputc(' ', f);
    fputs(s, f);
    if (!right)
        for (int i = 0; i < n; i++) fputc(' ', f);
}

int cmd_report(int argc, char **argv) {
    const char *markdown = NULL, *json_out = NULL, *pick = NULL, *table = "paper";
    int compare = 0;
    const asvr_opt opts[] = {
        {"compare", ASVR_OPT_FLAG, &compare, NULL,
         "the first run is the baseline: every other run shows its difference to it, \"59.5 (+3.5)\""},
        {"markdown", ASVR_OPT_STR, &markdown, "FILE", "also write the table as Markdown (atomically)"},
        {"json", ASVR_OPT_STR, &json_out, "FILE", "also write the table as JSON (atomically)"},
        {"table", ASVR_OPT_STR, &table, "paper|demo", "which benchmarks make the columns (default paper)"},
        {"pick", ASVR_OPT_STR, &pick, "BENCH=METRIC,...",
         "show another metric of a benchmark, e.g. pope=llava_mean_f1,hallusionbench=qAcc"},
    };
    const asvr_cli cli = {
        "asvr-eval report", "[--compare] [--pick B=M,...] [--markdown FILE] [--json FILE] RUN_DIR...",
        "Prints the paper's table for one or more runs: TextVQA DocVQA OCRBench ChartQA (OCR) |\n"
        "MMBench MME SEED-I GQA (General) | MMMU AI2D (Knowledge) | RWQA MMVP (Vision-centric) |\n"
        "HallB POPE (Hallucination) | AVG. Each cell is the \"reported\" metric of RUN_DIR/scores/<bench>.json\n"
        "(Cambrian's choice: MME Perception, MMBench circular accuracy, OCRBench total accuracy, POPE\n"
        "accuracy; HallusionBench aAcc), one decimal. AVG is the mean over the benchmarks present, with MME\n"
        "Perception as a percentage of its 2000 maximum (and any other point score over its maximum);\n"
        "a missing benchmark shows " DASH " and is left out of AVG. With --compare, AVG is taken over the\n"
        "benchmarks every run has, and deltas are differences of the displayed (rounded) numbers.",
        opts, (int)(sizeof opts / sizeof opts[0]), 1, -1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    if (compare && npos < 2) asvr_cli_usage_error(&cli, "--compare needs a baseline run and at least one other");
    int nb;
    const bench_def *all = bench_table(table, &nb);
    if (!all) asvr_cli_usage_error(&cli, "--table must be paper or demo");
    const char **picks = asvr_calloc((size_t)nb, sizeof *picks, "metric picks");
    for (int k = 0; k < nb; k++) picks[k] = all[k].reported;
    char *pick_store = NULL, why[512];
    if (parse_pick(pick, picks, nb, all, &pick_store, why, sizeof why) < 0) asvr_cli_usage_error(&cli, "%s", why);

    asvr_error err;
    int rc = ASVR_EXIT_OK;
    run_row *rows = asvr_calloc((size_t)npos, sizeof *rows, "report rows");
    json_t *kept = json_array();
    for (int r = 0; r < npos && rc == ASVR_EXIT_OK; r++) {
        rows[r].dir = pos[r];
        rows[r].name = run_name(pos[r]);
        rows[r].cells = asvr_calloc((size_t)nb, sizeof *rows[r].cells, "report cells");
        char *sd = asvr_path_join(pos[r], "scores");
        if (!asvr_path_exists(pos[r])) {
            LOG_ERROR("run folder '%s' does not exist", pos[r]);
            rc = ASVR_EXIT_FAIL;
        } else if (!asvr_path_exists(sd)) {
            LOG_WARN("'%s' has no scores/ folder: every benchmark shows " DASH, pos[r]);
        }
        free(sd);
        for (int k = 0; k < nb && rc == ASVR_EXIT_OK; k++) {
            json_t *o = NULL;
            int lc = load_cell(pos[r], &all[k], picks[k], &rows[r].cells[k], &o, &err);
            if (lc < 0) {
                LOG_ERROR("%s", err.msg);
                rc = ASVR_EXIT_FAIL;
            } else if (lc == 1) {
                warn_unscored(pos[r], &all[k]);
            }
            if (o) json_array_append_new(kept, o);
        }
    }
    if (rc != ASVR_EXIT_OK) goto done;

    /* AVG: per run over its own benchmarks, or with --compare over those present in every run. */
    int *in_avg = asvr_calloc((size_t)nb, sizeof *in_avg, "AVG columns");
    for (int k = 0; k < nb; k++) {
        in_avg[k] = 1;
        if (compare)
            for (int r = 0; r < npos; r++) in_avg[k] &= rows[r].cells[k].present;
    }
    double *avg = asvr_calloc((size_t)npos, sizeof *avg, "AVG");
    int *avg_n = asvr_calloc((size_t)npos, sizeof *avg_n, "AVG");
    for (int r = 0; r < npos; r++) {
        for (int k = 0; k < nb; k++)
            if (in_avg[k] && rows[r].cells[k].present) {
                avg[r] += rows[r].cells[k].avg_value;
                avg_n[r]++;
            }
        avg[r] = avg_n[r] ? avg[r] / avg_n[r] : NAN;
    }
    cell *avg_cells = asvr_calloc((size_t)npos, sizeof *avg_cells, "AVG cells");
    for (int r = 0; r < npos; r++) {
        avg_cells[r].present = avg_n[r] > 0;
        avg_cells[r].value = avg[r];
    }

    /* cell strings */
    int ncol = nb + 2; /* run, benchmarks, AVG */
    char ***txt = asvr_calloc((size_t)npos, sizeof *txt, "report text");
    for (int r = 0; r < npos; r++) {
        txt[r] = asvr_calloc((size_t)ncol, sizeof **txt, "report text");
        txt[r][0] = asvr_strdup(rows[r].name);
        for (int k = 0; k < nb; k++)
            txt[r][k + 1] = fmt_cell(&rows[r].cells[k], (compare && r > 0) ? &rows[0].cells[k] : NULL);
        txt[r][nb + 1] = fmt_cell(&avg_cells[r], (compare && r > 0) ? &avg_cells[0] : NULL);
    }

    /* footnotes */
    char **notes = NULL;
    int nnotes = 0;
#define NOTE(...)                                                                                                    \
    do {                                                                                                           \
        char nb_[2048];                                                                                            \
        snprintf(nb_, sizeof nb_, __VA_ARGS__);                                                                    \
        notes = asvr_realloc(notes, (size_t)(nnotes + 1) * sizeof *notes, "footnotes");                           \
        notes[nnotes++] = asvr_strdup(nb_);                                                                        \
    } while (0)
    {
        char picked[1024] = "";
        for (int k = 0; k < nb; k++)
            if (strcmp(picks[k], all[k].reported) != 0) {
                char one[160];
                snprintf(one, sizeof one, "%s%s = %s", picked[0] ? ", " : "", all[k].title, picks[k]);
                strncat(picked, one, sizeof picked - strlen(picked) - 1);
            }
        if (picked[0]) NOTE("Metrics other than the default: %s.", picked);
    }
    for (int k = 0; k < nb; k++)
        if (strstr(picks[k], "perception") || strcmp(picks[k], "cognition") == 0 || strcmp(picks[k], "total_score") == 0 ||
            strcmp(picks[k], "score") == 0 || strstr(picks[k], "_cognition")) {
            int any = 0;
            for (int r = 0; r < npos; r++) any |= rows[r].cells[k].present;
            if (any) NOTE("%s is a point score; AVG uses it as a percentage of its maximum.", all[k].title);
        }
    for (int r = 0; r < npos; r++) {
        char miss[1024] = "";
        int nm = 0;
        for (int k = 0; k < nb; k++)
            if (!rows[r].cells[k].present) {
                char one[64];
                snprintf(one, sizeof one, "%s%s", nm ? ", " : "", all[k].title);
                strncat(miss, one, sizeof miss - strlen(miss) - 1);
                nm++;
            }
        if (nm) NOTE(DASH " %s: not evaluated: %s; AVG over the %d benchmark(s) present.", rows[r].name, miss, avg_n[r]);
    }
    if (compare) {
        int ni = 0;
        for (int k = 0; k < nb; k++) ni += in_avg[k];
        if (ni < nb) NOTE("--compare: AVG over the %d benchmark(s) every run has.", ni);
    }

    /* widths */
    int *w = asvr_calloc((size_t)ncol, sizeof *w, "column widths");
    const char *head[64];
    head[0] = "Run";
    for (int k = 0; k < nb; k++) head[k + 1] = all[k].title;
    head[nb + 1] = "AVG";
    for (int c = 0; c < ncol; c++) {
        w[c] = width(head[c]);
        for (int r = 0; r < npos; r++)
            if (width(txt[r][c]) > w[c]) w[c] = width(txt[r][c]);
    }

    /* text table on stdout: a group line, a title line, a rule, the runs, the footnotes */
    {
        FILE *f = stdout;
        pad(f, "", w[0], 0);
        int k = 0;
        while (k < nb) {
            int g = all[k].group, span = 0, e = k;
            while (e < nb && (int)all[e].group == g) span += w[++e] + 2;
            fputs(" | ", f);
            pad(f, bench_group_name((bench_group)g), span - 2, 0);
            k = e;
        }
        fputs(" |\n", f);
        for (int c = 0; c < ncol; c++) {
            if (c == 1 || (c > 1 && c <= nb && all[c - 1].group != all[c - 2].group) || c == nb + 1) fputs(" | ", f);
            else if (c > 0) fputs("  ", f);
            pad(f, head[c], w[c], c > 0);
        }
        fputc('\n', f);
        int total = 0;
        for (int c = 0; c < ncol; c++) total += w[c] + 2;
        for (int i = 0; i < total + 2 * BENCH_N_GROUPS; i++) fputc('-', f);
        fputc('\n', f);
        for (int r = 0; r < npos; r++) {
            for (int c = 0; c < ncol; c++) {
                if (c == 1 || (c > 1 && c <= nb && all[c - 1].group != all[c - 2].group) || c == nb + 1) fputs(" | ", f);
                else if (c > 0) fputs("  ", f);
                pad(f, txt[r][c], w[c], c > 0);
            }
            fputc('\n', f);
        }
        for (int i = 0; i < nnotes; i++) printf("%s\n", notes[i]);
        if (fflush(f) != 0) {
            LOG_ERROR("writing stdout failed");
            rc = ASVR_EXIT_FAIL;
        }
    }

    if (markdown && rc == ASVR_EXIT_OK) {
        asvr_atomic_file af;
        if (asvr_atomic_open(&af, markdown, &err) < 0) {
            LOG_ERROR("%s", err.msg);
            rc = ASVR_EXIT_FAIL;
        } else {
            FILE *f = af.fp;
            fputs("| Run |", f);
            for (int c = 1; c < ncol; c++) fprintf(f, " %s |", head[c]);
            fputs("\n|---|", f);
            for (int c = 1; c < ncol; c++) fputs("---:|", f);
            fputs("\n|  |", f);
            for (int k = 0; k < nb; k++)
                fprintf(f, " %s%s%s |", (k == 0 || all[k].group != all[k - 1].group) ? "*" : "",
                        (k == 0 || all[k].group != all[k - 1].group) ? bench_group_name(all[k].group) : "",
                        (k == 0 || all[k].group != all[k - 1].group) ? "*" : "");
            fputs("  |\n", f);
            for (int r = 0; r < npos; r++) {
                fputs("|", f);
                for (int c = 0; c < ncol; c++) fprintf(f, " %s |", txt[r][c]);
                fputc('\n', f);
            }
            if (nnotes) fputc('\n', f);
            for (int i = 0; i < nnotes; i++) fprintf(f, "%s%s\n", notes[i], i + 1 < nnotes ? "  " : "");
            if (asvr_atomic_commit(&af, &err) < 0) {
                LOG_ERROR("%s", err.msg);
                rc = ASVR_EXIT_FAIL;
            }
        }
    }

    if (json_out && rc == ASVR_EXIT_OK) {
        json_t *o = json_object(), *cols = json_array(), *runs = json_array(), *fn = json_array();
        for (int k = 0; k < nb; k++)
            json_array_append_new(cols, json_pack("{s:s, s:s, s:s, s:s}", "benchmark", all[k].name, "title",
                                                  all[k].title, "group", bench_group_name(all[k].group), "metric",
                                                  picks[k]));
        for (int r = 0; r < npos; r++) {
            json_t *vals = json_object(), *deltas = json_object();
            for (int k = 0; k < nb; k++) {
                const cell *c = &rows[r].cells[k];
                json_object_set_new(vals, all[k].name,
                                    c->present ? json_pack("{s:f, s:f}", "value", c->value, "avg_value", c->avg_value)
                                               : json_null());
                if (compare && r > 0)
                    json_object_set_new(deltas, all[k].name,
                                        (c->present && rows[0].cells[k].present)
                                            ? json_real(round1(c->value) - round1(rows[0].cells[k].value))
                                            : json_null());
            }
            json_t *row = json_pack("{s:s, s:s, s:o, s:o, s:i}", "run", rows[r].name, "dir", rows[r].dir, "values",
                                    vals, "avg", avg_n[r] ? json_real(avg[r]) : json_null(), "avg_benchmarks", avg_n[r]);
            if (compare && r > 0) {
                json_object_set_new(deltas, "avg", (avg_n[r] && avg_n[0]) ? json_real(round1(avg[r]) - round1(avg[0]))
                                                                           : json_null());
                json_object_set_new(row, "deltas", deltas);
            } else {
                json_decref(deltas);
            }
            json_array_append_new(runs, row);
        }
        for (int i = 0; i < nnotes; i++) json_array_append_new(fn, json_string(notes[i]));
        json_object_set_new(o, "columns", cols);
        json_object_set_new(o, "runs", runs);
        json_object_set_new(o, "baseline", compare ? json_string(rows[0].name) : json_null());
        json_object_set_new(o, "footnotes", fn);
        char *text = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
        CHECK(text != NULL, "", "serialising the report");
        size_t len = strlen(text);
        text = asvr_realloc(text, len + 2, "the report text");
        text[len++] = '\n';
        text[len] = 0;
        if (asvr_atomic_write(json_out, text, len, &err) < 0) {
            LOG_ERROR("%s", err.msg);
            rc = ASVR_EXIT_FAIL;
        }
        free(text);
        json_decref(o);
    }

    for (int r = 0; r < npos; r++) {
        for (int c = 0; c < ncol; c++) free(txt[r][c]);
        free(txt[r]);
    }
    free(txt);
    for (int i = 0; i < nnotes; i++) free(notes[i]);
    free(notes);
    free(w);
    free(avg_cells);
    free(avg);
    free(avg_n);
    free(in_avg);
done:
    for (int r = 0; r < npos; r++) {
        free(rows[r].name);
        free(rows[r].cells);
    }
    free(rows);
    json_decref(kept);
    free(picks);
    free(pick_store);
    free(pos);
    return rc;
}
