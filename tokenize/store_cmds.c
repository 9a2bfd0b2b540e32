/* asvr-tokenize verify / stats / dump — read a finished code store. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/log.h"
#include "commands.h"
#include "store/code_store.h"

static code_store *open_or_die(const char *path) {
    code_store *cs;
    asvr_error err;
    if (code_store_open(path, &cs, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    return cs;
}

static json_t *meta_json(const code_store *cs) {
    char *s = code_store_meta_to_json(code_store_get_meta(cs));
    json_t *o = json_loads(s, 0, NULL);
    free(s);
    return o;
}

/* ---- verify ---- */

static void verify_problem(void *ctx, const void *key, size_t kl, const char *what) {
    (void)ctx;
    /* KEY<TAB>REASON; a problem of the file's structure, not of one record, has no key: "-" */
    if (key) printf("%.*s\t%s\n", (int)kl, (const char *)key, what);
    else printf("-\t%s\n", what);
}

int cmd_verify(int argc, char **argv) {
    const asvr_cli cli = {"asvr-tokenize verify", "STORE",
                          "Checks the whole store: every page of the LMDB file (the B-trees, the free list, overflow\n"
                          "pages, the counts) and every record (magic, shape, checksum, codes < K). Prints each problem\n"
                          "on stdout as KEY<TAB>REASON (KEY is '-' for damage not tied to one record); exits 1 when\n"
                          "there is any.",
                          NULL, 0, 1, 1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    code_store *cs = open_or_die(pos[0]);
    int64_t ok = 0, bad = code_store_verify(cs, verify_problem, NULL, &ok);
    fflush(stdout);
    LOG_INFO("'%s': %lld of %lld records ok, %lld problem(s)", pos[0], (long long)ok, (long long)code_store_count(cs),
             (long long)bad);
    if (bad) LOG_ERROR("'%s' is damaged: rebuild it (asvr-tokenize encode resumes into a new store)", pos[0]);
    code_store_close(cs);
    free(pos);
    return bad ? ASVR_EXIT_FAIL : ASVR_EXIT_OK;
}

/* ---- stats ---- */

typedef struct stats_ctx {
    const code_store_meta *meta;
    uint64_t records, bytes, bad;
    uint64_t *hist; /* depth × K */
    uint16_t *codes;
} stats_ctx;

static int stats_visit(void *vctx, const char *key, size_t kl, const void *v, size_t n) {
    stats_ctx *c = vctx;
    asvr_error err;
    c->records++;
    c->bytes += n + kl;
    if (code_record_decode(v, n, c->meta, c->codes, &err) < 0) {
        c->bad++;
        return 0;
    }
    int P = c->meta->positions, D = c->meta->depth, K = c->meta->codebook_size;
    for (int p = 0; p < P; p++)
        for (int d = 0; d < D; d++) c->hist[(size_t)d * K + c->codes[p * D + d]]++;
    return 0;
}

int cmd_stats(int argc, char **argv) {
    int as_json = 0;
    const asvr_opt opts[] = {{"json", ASVR_OPT_FLAG, &as_json, NULL, "print JSON on stdout"}};
    const asvr_cli cli = {"asvr-tokenize stats", "[--json] STORE",
                          "Summarises a code store: its meta record, record count and size, per depth the number of\n"
                          "codebook rows used and the code perplexity (exp of the entropy), and where it came from\n"
                          "(the part of a list that encode --shard wrote, or the inputs of a merge).",
                          opts, 1, 1, 1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    code_store *cs = open_or_die(pos[0]);
    char pos_name[1024];
    snprintf(pos_name, sizeof pos_name, "%s", pos[0]);
    const code_store_meta *m = code_store_get_meta(cs);
    stats_ctx c = {m, 0, 0, 0, NULL, NULL};
    c.hist = asvr_calloc((size_t)m->depth * (size_t)m->codebook_size, sizeof(uint64_t), "code histograms");
    c.codes = asvr_malloc(sizeof(uint16_t) * (size_t)m->positions * (size_t)m->depth, "a record");
    asvr_error err;
    if (code_store_foreach(cs, stats_visit, &c, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    json_t *o = meta_json(cs);
    /* what a reader takes the preprocessing to be, recorded or not (absent keys: the old defaults) */
    if (!strcmp(m->policy, "pad")) json_object_set_new(o, "pad_color", json_pack("[i,i,i]", m->pad[0], m->pad[1], m->pad[2]));
    json_object_set_new(o, "exif", json_boolean(m->exif));
    json_object_set_new(o, "records", json_integer((json_int_t)c.records));
    json_object_set_new(o, "corrupt_records", json_integer((json_int_t)c.bad));
    json_object_set_new(o, "bytes", json_integer((json_int_t)c.bytes));
    json_t *depths = json_array();
    for (int d = 0; d < m->depth; d++) {
        uint64_t total = 0, used = 0;
        for (int k = 0; k < m->codebook_size; k++) total += c.hist[(size_t)d * m->codebook_size + k];
        double h = 0;
        for (int k = 0; k < m->codebook_size; k++) {
            uint64_t x = c.hist[(size_t)d * m->codebook_size + k];
            if (!x) continue;
            used++;
            double p = (double)x / (double)total;
            h -= p * log(p);
        }
        json_array_append_new(depths, json_pack("{s:i, s:I, s:f}", "depth", d, "codes_used", (json_int_t)used,
                                                "perplexity", exp(h)));
    }
    json_object_set_new(o, "per_depth", depths);
    /* provenance: the part of a list (encode --shard) or the inputs of a merge */
    const char *info_names[2] = {"shard", "merged"};
    for (int i = 0; i < 2; i++) {
        char *js = NULL;
        int r = code_store_get_info(cs, info_names[i], &js, &err);
        if (r < 0) ASVR_FATAL("", "%s", err.msg);
        json_t *x = r == 0 ? json_loads(js, 0, NULL) : NULL;
        if (r == 0 && !x) LOG_WARN("'%s': the %s record is not JSON", pos[0], info_names[i]);
        if (x) json_object_set_new(o, info_names[i], x);
        free(js);
    }
    if (as_json) {
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", s);
        free(s);
    } else {
        printf("%s: %llu records (%llu corrupt), %.1f MiB\n", pos[0], (unsigned long long)c.records,
               (unsigned long long)c.bad, (double)c.bytes / 1048576.0);
        printf("tokenizer %s (%s), policy %s, %dx%d input, %d positions x %d depths, K = %d, compression %s\n",
               m->tokenizer, m->tokenizer_fingerprint, m->policy, m->image_size, m->image_size, m->positions, m->depth,
               m->codebook_size, m->compression ? "zstd" : "none");
        if (!strcmp(m->policy, "pad")) printf("pad colour %d,%d,%d, ", m->pad[0], m->pad[1], m->pad[2]);
        printf("EXIF orientation %s\n", m->exif ? "applied" : "not applied (as the reference)");
        json_t *sh = json_object_get(o, "shard"), *mg = json_object_get(o, "merged");
        if (sh)
            printf("part %lld of %lld (encode --shard) of a list of %lld images (list %s)\n",
                   (long long)json_integer_value(json_object_get(sh, "index")),
                   (long long)json_integer_value(json_object_get(sh, "count")),
                   (long long)json_integer_value(json_object_get(sh, "list_images")),
                   json_string_value(json_object_get(sh, "list_fingerprint")));
        if (mg) {
            json_t *ins = json_object_get(mg, "inputs");
            printf("merged from %zu store(s):", json_array_size(ins));
            for (size_t i = 0; i < json_array_size(ins); i++)
                printf(" %s", json_string_value(json_object_get(json_array_get(ins, i), "store")));
            printf("\n");
        }
        for (size_t d = 0; d < json_array_size(depths); d++) {
            json_t *x = json_array_get(depths, d);
            printf("  depth %zu: %lld of %d codes used, perplexity %.1f\n", d,
                   (long long)json_integer_value(json_object_get(x, "codes_used")), m->codebook_size,
                   json_real_value(json_object_get(x, "perplexity")));
        }
    }
    json_decref(o);
    free(c.hist);
    free(c.codes);
    code_store_close(cs);
    free(pos);
    if (c.bad) {
        LOG_ERROR("'%s': %llu corrupt record(s); `asvr-tokenize verify` lists them", pos_name, (unsigned long long)c.bad);
        return ASVR_EXIT_FAIL;
    }
    return ASVR_EXIT_OK;
}

/* ---- dump ---- */

static void print_record(const char *key, size_t kl, const uint16_t *codes, size_t n) {
    json_t *o = json_object();
    json_object_set_new(o, "key", json_stringn(key, kl));
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(codes[i]));
    json_object_set_new(o, "codes", a);
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(o);
}

typedef struct dump_ctx {
    const code_store_meta *meta;
    uint16_t *codes;
    int bad;
} dump_ctx;

static int dump_visit(void *vctx, const char *key, size_t kl, const void *v, size_t n) {
    dump_ctx *c = vctx;
    asvr_error err;
    if (code_record_decode(v, n, c->meta, c->codes, &err) < 0) {
        LOG_ERROR("record '%.*s': %s", (int)kl, key, err.msg);
        c->bad = 1;
        return 0;
    }
    print_record(key, kl, c->codes, (size_t)c->meta->positions * (size_t)c->meta->depth);
    return 0;
}

int cmd_dump(int argc, char **argv) {
    int meta_only = 0;
    const asvr_opt opts[] = {{"meta", ASVR_OPT_FLAG, &meta_only, NULL, "print only the meta record (JSON)"}};
    const asvr_cli cli = {"asvr-tokenize dump", "[--meta] STORE [KEY...]",
                          "Prints records as JSON lines {\"key\", \"codes\"} (positions x depth, row-major), for\n"
                          "the given keys or, without keys, for every record in key order.",
                          opts, 1, 1, -1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    code_store *cs = open_or_die(pos[0]);
    const code_store_meta *m = code_store_get_meta(cs);
    int rc = ASVR_EXIT_OK;
    if (meta_only) {
        char *s = code_store_meta_to_json(m);
        printf("%s\n", s);
        free(s);
    } else if (npos == 1) {
        dump_ctx c = {m, asvr_malloc(sizeof(uint16_t) * (size_t)m->positions * (size_t)m->depth, "a record"), 0};
        asvr_error err;
        if (code_store_foreach(cs, dump_visit, &c, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        free(c.codes);
        if (c.bad) rc = ASVR_EXIT_FAIL;
    } else {
        uint16_t *codes = asvr_malloc(sizeof(uint16_t) * (size_t)m->positions * (size_t)m->depth, "a record");
        for (int i = 1; i < npos; i++) {
            asvr_error err;
            int r = code_store_get(cs, pos[i], codes, &err);
            if (r == 1) {
                LOG_ERROR("'%s' has no record '%s'", pos[0], pos[i]);
                rc = ASVR_EXIT_FAIL;
            } else if (r < 0) {
                LOG_ERROR("%s", err.msg);
                rc = ASVR_EXIT_FAIL;
            } else {
                print_record(pos[i], strlen(pos[i]), codes, (size_t)m->positions * (size_t)m->depth);
            }
        }
        free(codes);
    }
    code_store_close(cs);
    free(pos);
    return rc;
}
