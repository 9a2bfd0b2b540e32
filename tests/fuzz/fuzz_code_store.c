/* fuzz_code_store.c — libFuzzer harness over the code store's LMDB file (store/lmdb_read.h and
 * store/code_store.h): any bytes are refused on open with a message naming the file, or every reader
 * entry point runs (lookups, the in-order walk, the full check with every record decoded) without a
 * signal; when the structural check passes, LMDB itself is let open the file as a writer and append a
 * record (the check must be enough to keep LMDB safe). Seeds: tests/golden/fuzz/code_store/ (small
 * stores of the tiny test tokenizer). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "fuzz_file.h"
#include "store/code_store.h"
#include "store/lmdb_read.h"

static int count_visit(void *ctx, const char *key, size_t kl, const void *v, size_t n) {
    (*(int *)ctx)++;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < kl; i++) sink ^= (uint8_t)key[i];
    for (size_t i = 0; i < n; i++) sink ^= ((const uint8_t *)v)[i];
    (void)sink;
    return 0;
}

static void on_problem(void *ctx, const void *key, size_t klen, const char *what) {
    (void)key, (void)klen;
    if (!what || !what[0]) abort();
    (*(int *)ctx)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asvr_log_set_level(ASVR_LOG_ERROR);
    /* the reader over memory, exactly `size` bytes */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    asvr_error err;
    lmdb_reader *r;
    if (lmdb_open_mem(buf, size, "fuzz", &r, &err) == 0) {
        int n = 0;
        lmdb_check_opts o = {1, on_problem, &n, NULL, NULL, NULL};
        (void)lmdb_check(r, &o);
        lmdb_db db;
        if (lmdb_find_db(r, "codes", &db, &err) == 0) {
            const void *v;
            size_t vl;
            (void)lmdb_get(r, &db, "photo0.jpg", 10, &v, &vl, &err);
        }
        lmdb_close(r);
    }
    free(buf);

    /* the code store over a file: readers, then (when the structure is sound) the LMDB writer */
    const char *path = fuzz_file("codes.lmdb", data, size);
    code_store *cs;
    err.msg[0] = 0;
    if (code_store_open(path, &cs, &err) < 0) {
        if (!strstr(err.msg, path)) abort(); /* the error names the store */
        return 0;
    }
    const code_store_meta *m = code_store_get_meta(cs);
    size_t per = (size_t)m->positions * (size_t)m->depth;
    uint16_t *codes = calloc(per ? per : 1, sizeof *codes);
    static const char *keys[] = {"photo0.jpg", "photo1.jpg", "jgray.jpg", "x"};
    for (int i = 0; i < 4; i++) {
        (void)code_store_get(cs, keys[i], codes, &err);
    }
    int seen = 0, problems = 0;
    (void)code_store_foreach(cs, count_visit, &seen, &err);
    int64_t ok = 0;
    int64_t bad = code_store_verify(cs, on_problem, &problems, &ok);
    char *js = NULL;
    if (code_store_get_info(cs, "shard", &js, &err) == 0) free(js);
    code_store_meta meta = *m;
    code_store_close(cs);
    if (bad == 0 && per <= 65536) {
        code_store *w;
        if (code_store_open_writer(path, &meta, 1 << 20, &w, &err) == 0) {
            for (size_t i = 0; i < per; i++) codes[i] = (uint16_t)(i % (size_t)meta.codebook_size);
            const char *k[1] = {"fuzz-appended.jpg"};
            const uint16_t *c[1] = {codes};
            (void)code_store_put_batch(w, 1, k, c, &err);
            (void)code_store_has(w, "photo0.jpg");
            (void)code_store_finish(w, &err);
        }
    }
    free(codes);
    return 0;
}
