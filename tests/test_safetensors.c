/* test_safetensors.c — the safetensors reader and writer against files written by Python's
 * safetensors (tests/golden/safetensors/, made by tools/gen_safetensors_fixtures.py):
 * every element of every dtype, sharded lookup, metadata, fp32 conversion against numpy's values,
 * byte-identical writing, write -> read round trips, the corrupt corpus and every truncation.
 * The round-trip files stay in the working directory (st_written_*.safetensors) so that
 * tools/check_safetensors_roundtrip.py can load them with Python.
 */
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "io/safetensors.h"
#include "test.h"

#define GOLD ASVR_GOLDEN "/safetensors"

static json_t *load_json(const char *path) {
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) {
        fprintf(stderr, "cannot load %s: %s\n", path, e.text);
        exit(1);
    }
    return j;
}

static uint8_t *hex_decode(const char *hex, size_t *n) {
    size_t k = strlen(hex) / 2;
    uint8_t *b = malloc(k ? k : 1);
    if (!b) exit(1);
    for (size_t i = 0; i < k; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) exit(1);
        b[i] = (uint8_t)v;
    }
    *n = k;
    return b;
}

/* Checks st against an expected.json document: every tensor, every byte, every fp32 value. */
static void check_expected(const safetensors *st, json_t *doc, const char *what) {
    json_t *ts = json_object_get(doc, "tensors"), *meta = json_object_get(doc, "metadata");
    T_CHECK(safetensors_count(st) == (int)json_array_size(ts), "%s: count %d vs %zu", what,
            safetensors_count(st), json_array_size(ts));
    size_t i;
    json_t *e;
    json_array_foreach(ts, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const st_tensor *t = safetensors_find(st, name);
        T_CHECK(t != NULL, "%s: tensor '%s' not found", what, name);
        if (!t) continue;
        T_CHECK(strcmp(t->name, name) == 0, "%s: name", what);
        T_CHECK(strcmp(st_dtype_name(t->dtype), json_string_value(json_object_get(e, "dtype"))) == 0,
                "%s: '%s' dtype %s", what, name, st_dtype_name(t->dtype));
        json_t *shape = json_object_get(e, "shape");
        T_CHECK(t->ndim == (int)json_array_size(shape), "%s: '%s' ndim %d", what, name, t->ndim);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim && d < (int)json_array_size(shape); d++) {
            int64_t want = json_integer_value(json_array_get(shape, (size_t)d));
            T_CHECK(t->shape[d] == want, "%s: '%s' dim %d: %lld vs %lld", what, name, d,
                    (long long)t->shape[d], (long long)want);
            numel *= want;
        }
        T_CHECK(t->numel == numel, "%s: '%s' numel %lld", what, name, (long long)t->numel);
        size_t nb;
        uint8_t *bytes = hex_decode(json_string_value(json_object_get(e, "hex")), &nb);
        T_CHECK(t->nbytes == nb && (nb == 0 || memcmp(t->data, bytes, nb) == 0),
                "%s: '%s' bytes differ (%zu vs %zu)", what, name, t->nbytes, nb);
        free(bytes);
        const char *shard = json_string_value(json_object_get(e, "shard"));
        if (shard) {
            size_t a = strlen(t->file), b = strlen(shard);
            T_CHECK(a >= b && strcmp(t->file + a - b, shard) == 0, "%s: '%s' in %s, expected %s", what,
                    name, t->file, shard);
        }
        float *f = malloc(((size_t)t->numel + 1) * sizeof *f);
        asvr_error err = {{0}};
        int rc = st_tensor_to_f32(t, f, &err);
        json_t *fh = json_object_get(e, "f32_hex");
        if (fh) {
            uint8_t *want = hex_decode(json_string_value(fh), &nb);
            T_CHECK(rc == 0 && nb == (size_t)t->numel * 4, "%s: '%s' to_f32 rc %d %s", what, name, rc,
                    err.msg);
            if (rc == 0 && nb == (size_t)t->numel * 4)
                for (int64_t k = 0; k < t->numel; k++) {
                    uint32_t got, exp;
                    memcpy(&got, &f[k], 4);
                    memcpy(&exp, want + 4 * k, 4);
                    T_CHECK(got == exp, "%s: '%s'[%lld] as f32: %08x (%g) vs %08x", what, name,
                            (long long)k, got, (double)f[k], exp);
                }
            free(want);
        } else {
            T_CHECK(rc == -1 && strstr(err.msg, name), "%s: '%s' (%s) must not convert", what, name,
                    st_dtype_name(t->dtype));
        }
        free(f);
    }
    /* Sorted by name, and find() agrees with at(). */
    for (int k = 0; k < safetensors_count(st); k++) {
        const st_tensor *t = safetensors_at(st, k);
        T_CHECK(safetensors_find(st, t->name) == t, "%s: find(at(%d))", what, k);
        if (k) T_CHECK(strcmp(safetensors_at(st, k - 1)->name, t->name) < 0, "%s: order at %d", what, k);
    }
    T_CHECK(safetensors_at(st, -1) == NULL && safetensors_at(st, safetensors_count(st)) == NULL,
            "%s: at() out of range", what);
    T_CHECK(safetensors_find(st, "no such tensor") == NULL, "%s: find absent", what);
    T_EQ_INT(safetensors_metadata_count(st), json_object_size(meta));
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        const char *got = safetensors_metadata(st, k);
        T_CHECK(got && strcmp(got, json_string_value(v)) == 0, "%s: metadata '%s' = '%s'", what, k,
                got ? got : "(null)");
    }
    T_CHECK(safetensors_metadata(st, "no such key") == NULL, "%s: absent metadata", what);
}

static void test_read(const char *file, const char *expected, const char *what) {
    asvr_error err = {{0}};
    safetensors *st = NULL;
    int rc = safetensors_open(file, &st, &err);
    T_CHECK(rc == 0, "%s: open %s: %s", what, file, err.msg);
    if (rc < 0) return;
    json_t *doc = load_json(expected);
    check_expected(st, doc, what);
    json_decref(doc);
    safetensors_close(st);
}

/* Builds a writer holding the tensors of an expected.json document (in the document's order,
 * which is not the file's order). The returned buffers must outlive the write. */
static st_writer *writer_from(json_t *doc, uint8_t ***bufs) {
    st_writer *w = st_writer_new();
    json_t *ts = json_object_get(doc, "tensors");
    *bufs = calloc(json_array_size(ts) + 1, sizeof **bufs);
    size_t i;
    json_t *e;
    json_array_foreach(ts, i, e) {
        st_dtype dt;
        if (st_dtype_parse(json_string_value(json_object_get(e, "dtype")), &dt) < 0) exit(1);
        json_t *shape = json_object_get(e, "shape");
        int64_t dims[ST_MAX_DIMS];
        int nd = (int)json_array_size(shape);
        for (int d = 0; d < nd; d++) dims[d] = json_integer_value(json_array_get(shape, (size_t)d));
        size_t nb;
        (*bufs)[i] = hex_decode(json_string_value(json_object_get(e, "hex")), &nb);
        st_writer_add(w, json_string_value(json_object_get(e, "name")), dt, nd, dims, (*bufs)[i]);
    }
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(doc, "metadata"), k, v) st_writer_set_metadata(w, k, json_string_value(v));
    return w;
}

static void free_bufs(uint8_t **bufs) {
    for (size_t i = 0; bufs[i]; i++) free(bufs[i]);
    free(bufs);
}

/* Writes the document's tensors to out and compares with Python's file: byte for byte when
 * exact, else (several metadata keys, whose order Python does not fix) same length, same data
 * area, equal header JSON. Then reads the written file back. */
static void test_write(const char *stem, int exact, const char *out) {
    char py[512], exp[512];
    snprintf(py, sizeof py, GOLD "/%s.safetensors", stem);
    snprintf(exp, sizeof exp, GOLD "/%s.expected.json", stem);
    json_t *doc = load_json(exp);
    uint8_t **bufs;
    st_writer *w = writer_from(doc, &bufs);
    asvr_error err = {{0}};
    int rc = st_writer_write(w, out, &err);
    T_CHECK(rc == 0, "%s: write: %s", stem, err.msg);
    st_writer_free(w);
    free_bufs(bufs);
    uint8_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    T_EQ_INT(asvr_read_file(out, &a, &na, &err), 0);
    T_EQ_INT(asvr_read_file(py, &b, &nb, &err), 0);
    T_CHECK(na == nb, "%s: %zu bytes written, Python wrote %zu", stem, na, nb);
    if (exact) {
        size_t first = 0;
        while (first < na && first < nb && a[first] == b[first]) first++;
        T_CHECK(na == nb && first == na, "%s: differs from Python's file at byte %zu", stem, first);
        if (first != na && na > 8)
            fprintf(stderr, "ours:   %.*s\npython: %.*s\n", (int)(na < 600 ? na - 8 : 600), a + 8,
                    (int)(nb < 600 ? nb - 8 : 600), b + 8);
    } else if (na == nb && na >= 8) {
        uint64_t ha = 0, hb = 0;
        memcpy(&ha, a, 8);
        memcpy(&hb, b, 8);
        T_CHECK(ha == hb && ha <= na - 8, "%s: header lengths %llu vs %llu", stem,
                (unsigned long long)ha, (unsigned long long)hb);
        if (ha == hb && ha <= na - 8) {
            T_CHECK(memcmp(a + 8 + ha, b + 8 + hb, na - 8 - ha) == 0, "%s: data areas differ", stem);
            json_error_t je;
            json_t *ja = json_loadb((const char *)a + 8, ha, 0, &je), *jb = json_loadb((const char *)b + 8, hb, 0, &je);
            T_CHECK(ja && jb && json_equal(ja, jb), "%s: headers differ as JSON", stem);
            json_decref(ja);
            json_decref(jb);
        }
    }
    free(a);
    free(b);
    safetensors *st = NULL;
    rc = safetensors_open(out, &st, &err);
    T_CHECK(rc == 0, "%s: reopen: %s", stem, err.msg);
    if (rc == 0) check_expected(st, doc, stem);
    safetensors_close(st);
    json_decref(doc);
}

static void test_corrupt(void) {
    json_t *man = load_json(GOLD "/corrupt/manifest.json");
    size_t i;
    json_t *e;
    json_array_foreach(man, i, e) {
        const char *file = json_string_value(json_object_get(e, "file"));
        const char *expect = json_string_value(json_object_get(e, "expect"));
        char path[512];
        snprintf(path, sizeof path, GOLD "/corrupt/%s", file);
        asvr_error err = {{0}};
        safetensors *st = (safetensors *)1;
        T_CHECK(safetensors_open(path, &st, &err) == -1, "%s: accepted", file);
        T_CHECK(st == NULL, "%s: out not cleared", file);
        T_CHECK(strstr(err.msg, expect) != NULL, "%s: '%s' lacks '%s'", file, err.msg, expect);
        T_CHECK(strstr(err.msg, path) != NULL, "%s: '%s' does not name the file", file, err.msg);
        if (strstr(file, ".json")) continue;
        /* The same bytes through safetensors_parse, in a buffer of exactly their size. */
        uint8_t *buf;
        size_t n;
        T_EQ_INT(asvr_read_file(path, &buf, &n, &err), 0);
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, buf, n);
        free(buf);
        asvr_error e2 = {{0}};
        T_CHECK(safetensors_parse(exact, n, file, &st, &e2) == -1 && strstr(e2.msg, expect),
                "%s: parse: '%s'", file, e2.msg);
        free(exact);
    }
    json_decref(man);
}

/* Every proper prefix of a valid file is rejected; the whole file is accepted. */
static void test_truncations(const char *path) {
    uint8_t *buf;
    size_t n;
    asvr_error err = {{0}};
    T_EQ_INT(asvr_read_file(path, &buf, &n, &err), 0);
    int accepted = 0, unnamed = 0;
    for (size_t k = 0; k <= n; k++) {
        uint8_t *p = malloc(k ? k : 1);
        memcpy(p, buf, k);
        safetensors *st = NULL;
        int rc = safetensors_parse(p, k, "trunc.safetensors", &st, &err);
        if (k < n) {
            if (rc == 0) accepted++;
            else if (!strstr(err.msg, "trunc.safetensors")) unnamed++;
        } else {
            T_CHECK(rc == 0, "whole file rejected: %s", err.msg);
        }
        safetensors_close(st);
        free(p);
    }
    T_CHECK(accepted == 0, "%d truncated prefixes of %s accepted", accepted, path);
    T_CHECK(unnamed == 0, "%d errors without the file name", unnamed);
    free(buf);
}

static void test_writer_errors(const char *dir) {
    char out[512];
    snprintf(out, sizeof out, "%s/bad.safetensors", dir);
    float x[2] = {1, 2};
    int64_t shape[1] = {2};
    asvr_error err = {{0}};

    st_writer *w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, shape, x);
    st_writer_add(w, "a", ST_F16, 1, shape, x);
    T_EQ_INT(st_writer_write(w, out, &err), -1);
    T_STR_CONTAINS(err.msg, "'a' added twice");
    st_writer_free(w);
    T_CHECK(!asvr_path_exists(out), "no file after a failed write");

    w = st_writer_new();
    st_writer_add(w, "__metadata__", ST_F32, 1, shape, x);
    T_EQ_INT(st_writer_write(w, out, &err), -1);
    T_STR_CONTAINS(err.msg, "__metadata__");
    st_writer_free(w);

    w = st_writer_new();
    int64_t neg[1] = {-1};
    st_writer_add(w, "n", ST_F32, 1, neg, x);
    T_EQ_INT(st_writer_write(w, out, &err), -1);
    T_STR_CONTAINS(err.msg, "'n': negative dimension");
    st_writer_free(w);

    w = st_writer_new();
    st_writer_add(w, "bad\xff", ST_F32, 1, shape, x);
    T_EQ_INT(st_writer_write(w, out, &err), -1);
    T_STR_CONTAINS(err.msg, "not valid UTF-8");
    st_writer_free(w);

    /* Writing into a missing directory fails cleanly. */
    w = st_writer_new();
    st_writer_add(w, "a", ST_F32, 1, shape, x);
    T_EQ_INT(st_writer_write(w, "/nonexistent-dir/x.safetensors", &err), -1);
    T_STR_CONTAINS(err.msg, "/nonexistent-dir/x.safetensors");
    /* A later metadata key replaces the value; empty files read back. */
    st_writer_set_metadata(w, "k", "1");
    st_writer_set_metadata(w, "k", "2");
    T_EQ_INT(st_writer_write(w, out, &err), 0);
    st_writer_free(w);
    safetensors *st = NULL;
    T_EQ_INT(safetensors_open(out, &st, &err), 0);
    T_CHECK(st && safetensors_metadata(st, "k") && strcmp(safetensors_metadata(st, "k"), "2") == 0,
            "metadata replaced");
    safetensors_close(st);

    w = st_writer_new();
    T_EQ_INT(st_writer_write(w, out, &err), 0);
    st_writer_free(w);
    T_EQ_INT(safetensors_open(out, &st, &err), 0);
    T_EQ_INT(safetensors_count(st), 0);
    safetensors_close(st);
    unlink(out);
}

static void test_dtypes(void) {
    for (int i = 0; i < ST_NDTYPES; i++) {
        st_dtype d;
        T_CHECK(st_dtype_parse(st_dtype_name((st_dtype)i), &d) == 0 && d == (st_dtype)i, "dtype %d", i);
    }
    st_dtype d;
    T_EQ_INT(st_dtype_parse("F17", &d), -1);
    T_EQ_INT(st_dtype_size(ST_BF16), 2);
    T_EQ_INT(st_dtype_size(ST_U64), 8);
    T_EQ_INT(st_dtype_size(ST_F8_E4M3), 1);
}

int main(void) {
    test_dtypes();
    test_read(GOLD "/all_dtypes.safetensors", GOLD "/all_dtypes.expected.json", "all_dtypes");
    test_read(GOLD "/sharded/model.safetensors.index.json", GOLD "/sharded/sharded.expected.json",
              "sharded");

    char dir[] = "/tmp/asvr_test_st_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char out[512];
    snprintf(out, sizeof out, "%s/p.safetensors", dir);
    test_write("parity_single", 1, out);
    test_write("parity_nometa", 1, out);
    test_write("parity_multimeta", 0, out);
    unlink(out);
    /* Round trips kept for tools/check_safetensors_roundtrip.py. */
    test_write("all_dtypes", 0, "st_written_all_dtypes.safetensors");
    test_write("parity_single", 1, "st_written_parity_single.safetensors");

    test_corrupt();
    test_truncations(GOLD "/all_dtypes.safetensors");
    test_truncations(GOLD "/parity_single.safetensors");
    test_writer_errors(dir);
    rmdir(dir);
    return t_done();
}
