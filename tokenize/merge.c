/* asvr-tokenize merge — several code stores into one new store.
 *
 * The inputs must agree on everything their meta records say (tokenizer fingerprint, policy, input
 * size, positions, depth, codebook size, compression, backend); the output gets the same meta record,
 * so asvr-pack and asvr-train take it like a store made in one run. A key in several inputs must have
 * the same codes everywhere (then it is stored once); different codes fail naming both stores and the
 * key. Parts written by `encode --shard` are checked for completeness: for each list (fingerprint)
 * and part count, every part 0..N-1 exactly once (--allow-missing accepts gaps). The output is built
 * as OUT.partial (a "merged" record lists the inputs, so a killed merge resumes only with the same
 * inputs) and renamed when complete; a rerun on a finished OUT that holds every input record does
 * nothing. --shards takes OUT's finished parts OUT.shard-K-of-N as the inputs. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "commands.h"
#include "shards.h"
#include "store/code_store.h"

typedef struct input {
    const char *path;
    code_store *cs;
    int has_shard;
    shard_record shard;
} input;

/* "<base>.shard-K-of-N" with decimal K < N, nothing after. */
static int is_part_name(const char *name, const char *base) {
    size_t bl = strlen(base);
    if (strncmp(name, base, bl) != 0 || strncmp(name + bl, ".shard-", 7) != 0) return 0;
    const char *p = name + bl + 7;
    char *end;
    if (*p < '0' || *p > '9') return 0;
    long k = strtol(p, &end, 10);
    if (strncmp(end, "-of-", 4) != 0) return 0;
    p = end + 4;
    if (*p < '0' || *p > '9') return 0;
    long n = strtol(p, &end, 10);
    return *end == 0 && k >= 0 && k < n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The finished stores "<out>.shard-K-of-N" next to out (malloc'd paths, sorted). */
static char **find_parts(const char *out, int *n) {
    char *dir = asvr_path_dirname(out);
    const char *slash = strrchr(out, '/');
    const char *base = slash ? slash + 1 : out;
    DIR *d = opendir(dir);
    if (!d) ASVR_FATAL("check the path of OUT", "cannot list '%s' to find the parts of '%s'", dir, out);
    char **paths = NULL;
    int cnt = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!is_part_name(e->d_name, base)) continue;
        paths = asvr_realloc(paths, sizeof(char *) * (size_t)(cnt + 1), "the list of parts");
        paths[cnt++] = slash ? asvr_path_join(dir, e->d_name) : asvr_strdup(e->d_name);
    }
    closedir(d);
    free(dir);
    if (cnt) qsort(paths, (size_t)cnt, sizeof *paths, cmp_str);
    *n = cnt;
    return paths;
}

static size_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Compares the meta records of a and b key by key (all but "tokenizer", the file's name for people);
 * 1 with why naming the first difference. */
static int meta_differs(const code_store_meta *a, const char *pa, const code_store_meta *b, const char *pb, char *why,
                        size_t n) {
    char *sa = code_store_meta_to_json(a), *sb = code_store_meta_to_json(b);
    json_t *ja = json_loads(sa, 0, NULL), *jb = json_loads(sb, 0, NULL);
    free(sa), free(sb);
    int differs = 0;
    const char *k;
    json_t *va;
    json_object_foreach(ja, k, va) {
        if (strcmp(k, "tokenizer") == 0) continue;
        json_t *vb = json_object_get(jb, k);
        if (vb && json_equal(va, vb)) continue;
        char *ta = json_dumps(va, JSON_ENCODE_ANY), *tb = vb ? json_dumps(vb, JSON_ENCODE_ANY) : asvr_strdup("(none)");
        const char *what = strcmp(k, "tokenizer_fingerprint") == 0 ? " (different tokenizers made them)"
                           : strcmp(k, "backend") == 0          ? " (bf16 and f32 codes can differ)"
                                                                 : "";
        snprintf(why, n, "%s%s: '%s' has %s, '%s' has %s", k, what, pa, ta, pb, tb);
        free(ta), free(tb);
        differs = 1;
        break;
    }
    json_decref(ja), json_decref(jb);
    if (!differs) { /* keys written only when not the default (pad_color, exif, input_size) may be absent from a */
        char w[512];
        if (code_store_meta_diff(a, b, w, sizeof w)) {
            snprintf(why, n, "'%s' and '%s' differ: %s", pa, pb, w);
            differs = 1;
        }
    }
    return differs;
}

static json_t *merged_record(const input *in, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s, s:I}", "store", in[i].path, "records", (json_int_t)code_store_count(in[i].cs));
        if (in[i].has_shard) {
            char *s = shard_record_json(&in[i].shard);
            json_object_set_new(o, "shard", json_loads(s, 0, NULL));
            free(s);
        } else {
            json_object_set_new(o, "shard", json_null());
        }
        json_array_append_new(arr, o);
    }
    return json_pack("{s:o}", "inputs", arr);
}

/* Every group of parts (same list and part count) complete, no part twice; *summary says what the
 * inputs are. -1 with err otherwise (missing parts only when !allow_missing). */
static int check_parts(const input *in, int n, int allow_missing, char *summary, size_t sn, asvr_error *err) {
    int *done = asvr_calloc((size_t)n, sizeof(int), "part groups");
    size_t used = 0;
    summary[0] = 0;
    int plain = 0, rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (!in[i].has_shard) {
            plain++;
            continue;
        }
        if (done[i]) continue;
        const shard_record *g = &in[i].shard;
        int N = g->count;
        int *who = asvr_malloc(sizeof(int) * (size_t)N, "parts");
        for (int k = 0; k < N; k++) who[k] = -1;
        for (int j = i; j < n; j++) {
            const shard_record *r = &in[j].shard;
            if (!in[j].has_shard || r->count != N || strcmp(r->list_fingerprint, g->list_fingerprint) != 0) continue;
            done[j] = 1;
            if (who[r->index] >= 0) {
                rc = asvr_err_set(err, "part %d of %d (list %s) is given twice: '%s' and '%s'", r->index, N,
                                  r->list_fingerprint, in[who[r->index]].path, in[j].path);
                break;
            }
            who[r->index] = j;
        }
        int missing = 0;
        char list[256] = "";
        for (int k = 0; k < N && rc == 0; k++)
            if (who[k] < 0) {
                if (missing++ < 8)
                    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", missing > 1 ? ", " : "", k);
            }
        if (rc == 0 && missing && !allow_missing)
            rc = asvr_err_set(err, "part(s) %s%s of %d of the list %s (%lld images) are missing (e.g. '%s' has part %d): "
                                   "give every part, or pass --allow-missing",
                              list, missing > 8 ? ", ..." : "", N, g->list_fingerprint, g->list_images, in[i].path,
                              g->index);
        if (rc == 0 && used < sn)
            used += (size_t)snprintf(summary + used, sn - used, "%s%d of %d parts of a list of %lld images (%s)",
                                     used ? "; " : "", N - missing, N, g->list_images, g->list_fingerprint);
        free(who);
    }
    if (rc == 0 && plain && used < sn)
        snprintf(summary + used, sn - used, "%s%d store(s) without a part record", used ? "; " : "", plain);
    free(done);
    return rc;
}

typedef struct has_all_ctx {
    code_store *out;
    int64_t missing;
} has_all_ctx;

static int has_all_visit(void *vctx, const char *key, size_t kl, const void *v, size_t n) {
    (void)v, (void)n;
    has_all_ctx *c = vctx;
    char buf[512];
    if (kl >= sizeof buf) return c->missing++, 1;
    memcpy(buf, key, kl);
    buf[kl] = 0;
    if (!code_store_has(c->out, buf)) return c->missing++, 1;
    return 0;
}

int cmd_merge(int argc, char **argv) {
    int shards = 0, allow_missing = 0;
    int64_t map_mib = 0;
    const char *stats = NULL;
    const asvr_opt opts[] = {
        {"shards", ASVR_OPT_FLAG, &shards, NULL, "the inputs are OUT's finished parts OUT.shard-K-of-N (encode --shard)"},
        {"allow-missing", ASVR_OPT_FLAG, &allow_missing, NULL, "merge parts of a list even when some are missing"},
        {"map-size", ASVR_OPT_COUNT, &map_mib, "MIB", "initial LMDB map size (default: the inputs' total); it grows as needed"},
        {"stats", ASVR_OPT_STR, &stats, "FILE", "write a JSON summary (inputs, records, duplicates)"},
    };
    const asvr_cli cli = {
        "asvr-tokenize merge", "[options] OUT STORE... | --shards OUT",
        "Combines code stores into the new store OUT (built as OUT.partial, renamed when complete). The inputs\n"
        "must come from the same tokenizer, policy, input size and backend; OUT gets their meta record, so it\n"
        "is used exactly like a store made in one run. A key in several inputs must have the same codes (it is\n"
        "then stored once); different codes fail naming both stores and the key. Parts written by encode --shard\n"
        "must all be there (every K of N, once). A rerun on a finished OUT holding every record does nothing.",
        opts, (int)(sizeof opts / sizeof opts[0]), 1, -1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    const char *out = pos[0];
    if (shards && npos > 1) asvr_cli_usage_error(&cli, "--shards finds the inputs itself: give only OUT");
    if (!shards && npos < 2) asvr_cli_usage_error(&cli, "give OUT and at least one input STORE (or --shards OUT)");
    if (map_mib > ((int64_t)1 << 26)) asvr_cli_usage_error(&cli, "--map-size must be at most 67108864 MiB (64 TiB)");

    char **owned = NULL;
    int n = npos - 1;
    const char **paths = (const char **)pos + 1;
    if (shards) {
        owned = find_parts(out, &n);
        if (n == 0)
            ASVR_FATAL("run asvr-tokenize encode --shard first (or name the inputs)",
                       "no finished parts '%s.shard-K-of-N' were found", out);
        paths = (const char **)owned;
    }
    asvr_error err;
    input *in = asvr_calloc((size_t)n, sizeof *in, "the inputs");
    size_t total_bytes = 0;
    for (int i = 0; i < n; i++) {
        in[i].path = paths[i];
        if (same_file(paths[i], out))
            asvr_cli_usage_error(&cli, "the input '%s' is OUT itself: merge into a new store", paths[i]);
        for (int j = 0; j < i; j++)
            if (same_file(paths[i], paths[j])) asvr_cli_usage_error(&cli, "'%s' is given twice", paths[i]);
        if (code_store_open(paths[i], &in[i].cs, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        total_bytes += file_size(paths[i]);
        char *js = NULL;
        int r = code_store_get_info(in[i].cs, "shard", &js, &err);
        if (r < 0) ASVR_FATAL("", "%s", err.msg);
        if (r == 0) {
            if (shard_record_parse(js, &in[i].shard, &err) < 0) ASVR_FATAL("", "'%s': %s", paths[i], err.msg);
            in[i].has_shard = 1;
        }
        free(js);
        char why[1024];
        if (i > 0 && meta_differs(code_store_get_meta(in[0].cs), in[0].path, code_store_get_meta(in[i].cs), paths[i], why,
                                  sizeof why))
            ASVR_FATAL("merge only stores made with the same tokenizer, policy, size and backend",
                       "refusing to merge '%s' with '%s': %s", paths[i], in[0].path, why);
    }
    char summary[1024];
    if (check_parts(in, n, allow_missing, summary, sizeof summary, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    const code_store_meta *meta = code_store_get_meta(in[0].cs);
    LOG_INFO("merge: %d store(s) into '%s': %s", n, out, summary);

    json_t *rec = merged_record(in, n);
    char *rec_s = json_dumps(rec, JSON_SORT_KEYS | JSON_COMPACT);
    int rc = ASVR_EXIT_OK;
    int64_t added = 0, skipped = 0, records = 0;
    char *pp = asvr_malloc(strlen(out) + 16, "a path");
    sprintf(pp, "%s.partial", out);
    if (asvr_path_exists(out) && !asvr_path_exists(pp)) {
        /* A finished OUT: nothing to do when it is of the same kind and holds every input record. */
        code_store *fin;
        if (code_store_open(out, &fin, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        char why[1024];
        if (meta_differs(code_store_get_meta(fin), out, meta, in[0].path, why, sizeof why))
            ASVR_FATAL("merge into a new store", "'%s' exists and was made differently, refusing to mix: %s", out, why);
        has_all_ctx c = {fin, 0};
        for (int i = 0; i < n && !c.missing; i++)
            if (code_store_foreach(in[i].cs, has_all_visit, &c, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        records = code_store_count(fin);
        code_store_close(fin);
        if (c.missing)
            ASVR_FATAL("delete it to merge again, or merge into a new store",
                       "'%s' exists but lacks records of the inputs", out);
        LOG_INFO("'%s' is complete: it holds every record of the %d input(s); nothing to do", out, n);
        skipped = -1;
    } else {
        size_t map = map_mib > 0 ? (size_t)map_mib << 20 : total_bytes + ((size_t)64 << 20);
        code_store *cs;
        if (code_store_open_writer(out, meta, map, &cs, &err) < 0)
            ASVR_FATAL("delete it or merge into a new store", "%s", err.msg);
        char *have = NULL;
        int r = code_store_get_info(cs, "merged", &have, &err);
        if (r < 0) ASVR_FATAL("", "%s", err.msg);
        if (r == 1 && code_store_count(cs) > 0) {
            code_store_close(cs);
            ASVR_FATAL("delete it or merge into a new store", "'%s' holds records that were not merged into it", pp);
        }
        if (r == 0 && strcmp(have, rec_s) != 0) {
            code_store_close(cs);
            ASVR_FATAL("delete it to start over, or give the same inputs",
                       "'%s' is a merge of other inputs (it records %s), refusing to mix", pp, have);
        }
        if (r == 0) LOG_INFO("resuming '%s' (%lld records so far)", pp, (long long)code_store_count(cs));
        free(have);
        if (r == 1 && code_store_put_info(cs, "merged", rec_s, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        for (int i = 0; i < n && rc == ASVR_EXIT_OK; i++) {
            char *conflict = NULL;
            int64_t a0 = added, s0 = skipped;
            if (code_store_add_from(cs, in[i].cs, &added, &skipped, &conflict, &err) < 0) {
                if (conflict) {
                    const char *first = NULL;
                    for (int j = 0; j < i && !first; j++)
                        if (code_store_has(in[j].cs, conflict)) first = in[j].path;
                    if (first)
                        LOG_ERROR("key '%s' has different codes in '%s' and in '%s': refusing to merge (the same image "
                                  "encoded differently; re-encode one of them)",
                                  conflict, first, in[i].path);
                    else /* only a resumed partial holds it */
                        LOG_ERROR("%s", err.msg);
                    free(conflict);
                } else {
                    LOG_ERROR("%s", err.msg);
                }
                code_store_discard(cs);
                LOG_ERROR("nothing written: '%s' was removed", pp);
                rc = ASVR_EXIT_FAIL;
                break;
            }
            LOG_DEBUG("'%s': %lld added, %lld already there", in[i].path, (long long)(added - a0), (long long)(skipped - s0));
        }
        if (rc == ASVR_EXIT_OK) {
            records = code_store_count(cs);
            if (code_store_finish(cs, &err) < 0) {
                LOG_ERROR("%s", err.msg);
                rc = ASVR_EXIT_FAIL;
            } else {
                LOG_INFO("merged %d store(s) into '%s': %lld records (%lld added, %lld duplicates with the same codes "
                         "stored once)",
                         n, out, (long long)records, (long long)added, (long long)skipped);
            }
        }
    }
    if (stats && rc == ASVR_EXIT_OK) {
        json_t *s = json_pack("{s:s, s:O, s:I, s:I, s:I, s:b}", "store", out, "inputs", json_object_get(rec, "inputs"),
                              "records", (json_int_t)records, "added", (json_int_t)added, "duplicates_skipped",
                              (json_int_t)(skipped < 0 ? 0 : skipped), "nothing_to_do", skipped < 0);
        asvr_stats_write(stats, s);
        json_decref(s);
    }
    free(pp);
    free(rec_s);
    json_decref(rec);
    for (int i = 0; i < n; i++) code_store_close(in[i].cs);
    free(in);
    if (owned) {
        for (int i = 0; i < n; i++) free(owned[i]);
        free(owned);
    }
    free(pos);
    return rc;
}
