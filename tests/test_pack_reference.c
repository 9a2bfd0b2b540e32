/* test_pack_reference.c — asvr-pack build + dump end to end against what the reference model trains on
 * (tools/gen_pack_fixtures.py: LLaVA's preprocessing with transformers' slow LlamaTokenizer, then its
 * collator and prepare_inputs_labels_for_multimodal) on the edge cases of tests/golden/pack/edge_*.json:
 * literal <unk> (the pad id) in the text with both templates, an image without <image>, an empty
 * conversation, long samples, a leading gpt turn. Each sample's positions (the image as 729 rows) and
 * labels must equal the reference's; the samples the reference cannot preprocess must be rejected.
 * Also: --unk-positions keep and --image-without-placeholder reject give the other behaviours, and
 * dump/show by source index. Needs the Llama-2 tokenizer from the shared data folder (skipped without). */
#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include "base/fsutil.h"
#include "test.h"

#ifndef ASVR_SHARED_DATA
#define ASVR_SHARED_DATA "../shared/data"
#endif
#define POSITIONS 729

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *load_lines(const char *path, int zst, size_t *n) {
    uint8_t *z;
    size_t zn;
    asvr_error err;
    *n = 0;
    if (asvr_read_file(path, &z, &zn, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    char *s;
    if (zst) {
        unsigned long long raw = ZSTD_getFrameContentSize(z, zn);
        s = malloc(raw + 1);
        size_t got = ZSTD_decompress(s, raw, z, zn);
        free(z);
        if (ZSTD_isError(got)) return NULL;
        s[got] = 0;
    } else {
        s = realloc(z, zn + 1);
        s[zn] = 0;
    }
    json_t *arr = json_array();
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, NULL);
        if (o) json_array_append_new(arr, o);
    }
    free(s);
    *n = json_array_size(arr);
    return arr;
}

/* The dumped sample as the model sees it: each -200 becomes POSITIONS rows (label -100), cut to positions. */
static void expand(json_t *d, json_t **ids, json_t **labels) {
    *ids = json_array();
    *labels = json_array();
    json_t *di = json_object_get(d, "ids"), *dl = json_object_get(d, "labels");
    size_t limit = (size_t)json_integer_value(json_object_get(d, "positions"));
    for (size_t k = 0; k < json_array_size(di) && json_array_size(*ids) < limit; k++) {
        json_int_t x = json_integer_value(json_array_get(di, k));
        if (x == -200)
            for (int p = 0; p < POSITIONS && json_array_size(*ids) < limit; p++) {
                json_array_append_new(*ids, json_integer(-200));
                json_array_append_new(*labels, json_integer(-100));
            }
        else {
            json_array_append_new(*ids, json_integer(x));
            json_array_append(*labels, json_array_get(dl, k));
        }
    }
}

static json_t *find_dumped(json_t *dump, json_int_t src) {
    size_t i;
    json_t *d;
    json_array_foreach(dump, i, d) if (json_integer_value(json_object_get(d, "source_index")) == src) return d;
    return NULL;
}

static int has_flag(json_t *d, const char *name) {
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(d, "flags"), i, f) if (strcmp(json_string_value(f), name) == 0) return 1;
    return 0;
}

static json_int_t stat_int(const char *path, const char *key) {
    json_t *s = json_load_file(path, 0, NULL);
    json_int_t v = s ? json_integer_value(json_object_get(s, key)) : -1;
    json_decref(s);
    return v;
}

int main(void) {
    const char *model = ASVR_SHARED_DATA "/llama2-tokenizer.model";
    if (!asvr_path_exists(model)) {
        printf("%s is absent\n", model);
        t_skip("the pack parity test needs the Llama-2 tokenizer (see shared/data/README.md)");
        return t_done();
    }
    char dir[] = "/tmp/asvr_test_pack_ref_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    size_t n_exp;
    json_t *exp = load_lines(ASVR_GOLDEN "/pack/expected_edge_llama2.jsonl.zst", 1, &n_exp);
    T_CHECK(exp && n_exp >= 15, "expected edge cases loaded (%zu)", n_exp);
    if (!exp) return t_done();
    const char *names[] = {"plain", "vicuna_v1"};
    char cmd[4096], path[1024];
    size_t compared = 0, errors = 0;
    for (int t = 0; t < 2; t++) {
        snprintf(cmd, sizeof cmd,
                 "%s/bin/asvr-pack build --template %s --tokenizer %s --image-positions %d --out %s/%s.pack "
                 "--rejects %s/%s.rej --stats %s/%s.stats --log-level error %s/pack/edge_%s.json",
                 ASVR_BIN_DIR, names[t], model, POSITIONS, dir, names[t], dir, names[t], dir, names[t], ASVR_GOLDEN, names[t]);
        T_EQ_INT(run(cmd), 0);
        snprintf(cmd, sizeof cmd, "%s/bin/asvr-pack dump %s/%s.pack > %s/%s.dump", ASVR_BIN_DIR, dir, names[t], dir, names[t]);
        T_EQ_INT(run(cmd), 0);
        size_t n_dump, n_rej;
        snprintf(path, sizeof path, "%s/%s.dump", dir, names[t]);
        json_t *dump = load_lines(path, 0, &n_dump);
        snprintf(path, sizeof path, "%s/%s.rej", dir, names[t]);
        json_t *rej = load_lines(path, 0, &n_rej);
        if (!dump || !rej) {
            T_CHECK(0, "%s: no dump or rejects", names[t]);
            continue;
        }
        size_t i, want_rejects = 0;
        json_t *e;
        json_array_foreach(exp, i, e) {
            if (strcmp(json_string_value(json_object_get(e, "template")), names[t]) != 0) continue;
            json_int_t idx = json_integer_value(json_object_get(e, "index"));
            const char *id = json_string_value(json_object_get(e, "id"));
            json_t *d = find_dumped(dump, idx);
            if (json_object_get(e, "error")) {
                want_rejects++, errors++;
                T_CHECK(d == NULL, "%s sample %s: the reference raises %s, asvr-pack packed it", names[t], id,
                        json_string_value(json_object_get(e, "error")));
                continue;
            }
            T_CHECK(d != NULL, "%s sample %s: not packed", names[t], id);
            if (!d) continue;
            T_CHECK(strcmp(json_string_value(json_object_get(d, "id")), id) == 0, "%s sample %lld: id", names[t], (long long)idx);
            json_t *ids, *labels;
            expand(d, &ids, &labels);
            T_CHECK(json_equal(ids, json_object_get(e, "model_ids")), "%s sample %s: positions differ from the reference's "
                    "(%zu vs %zu)", names[t], id, json_array_size(ids), json_array_size(json_object_get(e, "model_ids")));
            T_CHECK(json_equal(labels, json_object_get(e, "model_labels")), "%s sample %s: labels differ from the reference's",
                    names[t], id);
            /* an image without <image> is trained as text: no image key, flagged */
            int ignored = json_object_get(e, "image_rows") && json_integer_value(json_object_get(e, "image_rows")) == 0 &&
                          strstr(id, "placeholder") != NULL;
            if (ignored)
                T_CHECK(json_is_null(json_object_get(d, "image")) && has_flag(d, "image_ignored"), "%s sample %s: image ignored",
                        names[t], id);
            compared++;
            json_decref(ids);
            json_decref(labels);
        }
        T_EQ_INT(n_rej, want_rejects);
        snprintf(path, sizeof path, "%s/%s.stats", dir, names[t]);
        T_EQ_INT(stat_int(path, "skipped"), want_rejects);
        if (t == 1) {
            T_EQ_INT(stat_int(path, "image_without_placeholder"), 4); /* 2 without, 1 leading gpt turn, 1 with <unk> */
            T_EQ_INT(stat_int(path, "empty_conversations"), 2);
            T_EQ_INT(stat_int(path, "unk_samples"), 4);
        } else {
            T_EQ_INT(stat_int(path, "unk_samples"), 1);
            T_EQ_INT(stat_int(path, "unk_dropped"), 2);
        }
        json_decref(dump);
        json_decref(rej);
    }
    T_CHECK(compared >= 11 && errors == 4, "compared %zu samples, %zu reference errors", compared, errors);

    /* --unk-positions keep: the pad id stays a token (supervised with plain); --image-without-placeholder
     * reject: refused and counted; the store fingerprints differ, so a rerun with another rule is refused. */
    snprintf(cmd, sizeof cmd,
             "%s/bin/asvr-pack build --template plain --tokenizer %s --image-positions %d --unk-positions keep --out %s/keep.pack "
             "--stats %s/keep.stats --log-level error %s/pack/edge_plain.json && %s/bin/asvr-pack dump --source-index %s/keep.pack 0 > %s/keep.dump",
             ASVR_BIN_DIR, model, POSITIONS, dir, dir, ASVR_GOLDEN, ASVR_BIN_DIR, dir, dir);
    T_EQ_INT(run(cmd), 0);
    size_t nk;
    snprintf(path, sizeof path, "%s/keep.dump", dir);
    json_t *keep = load_lines(path, 0, &nk);
    T_EQ_INT(nk, 1);
    if (keep && nk == 1) {
        json_t *d = json_array_get(keep, 0), *l = json_object_get(d, "labels");
        size_t k, zeros = 0;
        json_t *x;
        json_array_foreach(l, k, x) zeros += json_integer_value(x) == 0;
        T_CHECK(zeros == 2 && !has_flag(d, "unk_dropped"), "--unk-positions keep supervises the two <unk> ids (%zu)", zeros);
    }
    json_decref(keep);
    snprintf(path, sizeof path, "%s/keep.stats", dir);
    T_EQ_INT(stat_int(path, "unk_kept"), 2);
    snprintf(cmd, sizeof cmd,
             "%s/bin/asvr-pack build --template plain --tokenizer %s --image-positions %d --out %s/keep.pack "
             "--log-level error %s/pack/edge_plain.json 2> %s/rerun.err",
             ASVR_BIN_DIR, model, POSITIONS, dir, ASVR_GOLDEN, dir);
    T_EQ_INT(run(cmd), 1);
    snprintf(path, sizeof path, "%s/rerun.err", dir);
    char *txt;
    size_t tn;
    asvr_error err;
    if (asvr_read_file(path, (uint8_t **)&txt, &tn, &err) == 0) {
        txt = realloc(txt, tn + 1);
        txt[tn] = 0;
        T_STR_CONTAINS(txt, "--unk-positions");
        free(txt);
    }
    snprintf(cmd, sizeof cmd,
             "%s/bin/asvr-pack build --template vicuna_v1 --tokenizer %s --image-positions %d --image-without-placeholder reject "
             "--out %s/rej.pack --stats %s/rej.stats --log-level error %s/pack/edge_vicuna_v1.json",
             ASVR_BIN_DIR, model, POSITIONS, dir, dir, ASVR_GOLDEN);
    T_EQ_INT(run(cmd), 0);
    snprintf(path, sizeof path, "%s/rej.stats", dir);
    T_EQ_INT(stat_int(path, "skipped"), 2 + 4);
    /* dump/show by source index; an index that was rejected is an error naming it */
    snprintf(cmd, sizeof cmd, "%s/bin/asvr-pack dump --source-index %s/vicuna_v1.pack 2 2> %s/src.err", ASVR_BIN_DIR, dir, dir);
    T_EQ_INT(run(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s/bin/asvr-pack show --tokenizer %s --source-index %s/vicuna_v1.pack 4 > %s/show.txt", ASVR_BIN_DIR,
             model, dir, dir);
    T_EQ_INT(run(cmd), 0);
    snprintf(path, sizeof path, "%s/show.txt", dir);
    if (asvr_read_file(path, (uint8_t **)&txt, &tn, &err) == 0) {
        txt = realloc(txt, tn + 1);
        txt[tn] = 0;
        T_STR_CONTAINS(txt, "id 'image-no-placeholder'");
        T_STR_CONTAINS(txt, "image ignored");
        free(txt);
    }
    snprintf(cmd, sizeof cmd, "%s/bin/asvr-pack dump %s/vicuna_v1.pack x 2> /dev/null", ASVR_BIN_DIR, dir);
    T_EQ_INT(run(cmd), 2);
    json_decref(exp);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    run(cmd);
    return t_done();
}
