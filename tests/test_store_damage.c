/* test_store_damage.c — a damaged code store is an error, never a signal (store/lmdb_read.h).
 *
 * A store of real-sized records (729 x 8 codes: every value on overflow pages; raw and zstd) is
 * truncated at many lengths and has single bytes changed at 200 seeded places (and 400 in the pages
 * that hold its structure). Every reader entry point (open, get of every key, foreach, verify) and
 * the writer (an in-place append) must return normally: an error naming the file, or, where the damage is in bytes nothing reads, success.
 * Targeted damage must be found: truncation (named as such), a damaged meta page, a meta page holding
 * a transaction of the other slot (LMDB's writer would follow the other one), a page of the
 * codes tree with a bad type (the lookup names the key), a payload byte (verify names the key), two
 * keys swapped in a leaf and a page reached twice (verify reports both).
 * A finished store stays finished through a failed append: in place, whole batches only.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "store/code_store.h"
#include "store/lmdb_read.h"
#include "test.h"

#define P 729
#define D 8
#define K 16384
#define N 200

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static uint32_t next_u32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static code_store_meta make_meta(int compress) {
    code_store_meta m = {0};
    snprintf(m.tokenizer_fingerprint, sizeof m.tokenizer_fingerprint, "0123456789abcdef");
    snprintf(m.tokenizer, sizeof m.tokenizer, "test-tokenizer");
    snprintf(m.policy, sizeof m.policy, "pad");
    snprintf(m.backend, sizeof m.backend, "cpu-f32");
    m.image_size = 384, m.positions = P, m.depth = D, m.codebook_size = K, m.compression = compress;
    return m;
}

static uint16_t codes[N][P * D];
static char keys[N][32];

static int put_range(code_store *cs, int from, int to) {
    const char *k[16];
    const uint16_t *c[16];
    asvr_error err;
    for (int i = from; i < to; i += 16) {
        int n = to - i < 16 ? to - i : 16;
        for (int j = 0; j < n; j++) k[j] = keys[i + j], c[j] = codes[i + j];
        if (code_store_put_batch(cs, n, k, c, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

static void make_store(const char *path, int compress) {
    code_store *cs;
    asvr_error err;
    code_store_meta m = make_meta(compress);
    T_CHECK(code_store_open_writer(path, &m, 1 << 20, &cs, &err) == 0, "%s", err.msg);
    T_CHECK(put_range(cs, 0, N) == 0, "writing");
    T_CHECK(code_store_finish(cs, &err) == 0, "%s", err.msg);
}

static void write_bytes(const char *path, const uint8_t *b, size_t n) {
    unlink(path);
    asvr_error err;
    char lock[600];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(lock);
    T_CHECK(asvr_atomic_write(path, b, n, &err) == 0, "%s", err.msg);
}

typedef struct count_ctx {
    int64_t n;
    int keyed;
    char last[1024];
} count_ctx;

static void count_problem(void *ctx, const void *key, size_t klen, const char *what) {
    count_ctx *c = ctx;
    c->n++;
    if (key) c->keyed++;
    snprintf(c->last, sizeof c->last, "%.*s: %s", key ? (int)klen : 1, key ? (const char *)key : "-", what);
}

static int visit_count(void *ctx, const char *key, size_t kl, const void *v, size_t n) {
    (*(int *)ctx)++;
    return 0;
}

/* Every reader entry point, then the writer; returns 1 when the store opened. Messages name path. */
static int exercise(const char *path, int compress, int *errors) {
    code_store *cs;
    asvr_error err;
    err.msg[0] = 0;
    if (code_store_open(path, &cs, &err) < 0) {
        T_CHECK(strstr(err.msg, path) != NULL, "open error does not name the file: %s", err.msg);
        (*errors)++;
    } else {
        static uint16_t buf[P * D];
        for (int i = 0; i < N; i++) {
            int r = code_store_get(cs, keys[i], buf, &err);
            if (r < 0) {
                T_CHECK(strstr(err.msg, path) != NULL, "get error does not name the file: %s", err.msg);
                (*errors)++;
            }
        }
        int seen = 0;
        if (code_store_foreach(cs, visit_count, &seen, &err) < 0) {
            T_CHECK(strstr(err.msg, path) != NULL, "foreach error does not name the file: %s", err.msg);
            (*errors)++;
        }
        count_ctx c = {0, 0, {0}};
        int64_t ok = 0;
        code_store_verify(cs, count_problem, &c, &ok);
        char *js = NULL;
        if (code_store_get_info(cs, "merged", &js, &err) == 0) free(js);
        code_store_close(cs);
    }
    /* the writer: an in-place append (or a refusal naming the file) */
    code_store_meta m = make_meta(compress);
    code_store *w;
    int opened = 0;
    if (code_store_open_writer(path, &m, 1 << 20, &w, &err) == 0) {
        const char *k[1] = {"appended.jpg"};
        const uint16_t *c[1] = {codes[0]};
        (void)code_store_put_batch(w, 1, k, c, &err);
        (void)code_store_finish(w, &err);
        opened = 1;
    } else {
        T_CHECK(strstr(err.msg, path) != NULL, "writer error does not name the file: %s", err.msg);
    }
    return opened;
}

static void damage_runs(const char *dir, int compress) {
    char path[512], work[512];
    snprintf(path, sizeof path, "%s/store%d.lmdb", dir, compress);
    snprintf(work, sizeof work, "%s/work%d.lmdb", dir, compress);
    make_store(path, compress);
    uint8_t *orig;
    size_t size;
    asvr_error err;
    T_CHECK(asvr_read_file(path, &orig, &size, &err) == 0, "%s", err.msg);

    /* the intact store: verify finds nothing, every record reads */
    code_store *cs;
    T_CHECK(code_store_open(path, &cs, &err) == 0, "%s", err.msg);
    count_ctx c = {0, 0, {0}};
    int64_t ok = 0;
    T_EQ_INT(code_store_verify(cs, count_problem, &c, &ok), 0);
    T_EQ_INT(ok, N);
    T_CHECK(c.n == 0, "intact store: %s", c.last);
    code_store_close(cs);

    /* truncation at many lengths: open fails naming the file and saying so */
    size_t cuts[] = {0, 1, 100, 4095, 4096, 8191, 8192, 12288, size / 8, size / 4, size / 2, 3 * size / 4,
                     size - 4096, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(work, orig, cuts[i]);
        int r = code_store_open(work, &cs, &err);
        T_CHECK(r < 0, "a store cut to %zu of %zu bytes opened", cuts[i], size);
        if (r == 0) code_store_close(cs);
        else
            T_CHECK(strstr(err.msg, work) && (strstr(err.msg, "truncated") || strstr(err.msg, "empty") ||
                                              strstr(err.msg, "too short")),
                    "cut to %zu: %s", cuts[i], err.msg);
        int e = 0;
        exercise(work, compress, &e);
    }

    /* single changed bytes anywhere in the file: never a signal */
    int errors = 0, writer_ok = 0;
    uint8_t *b = asvr_malloc(size, "a damaged copy");
    for (int t = 0; t < 200; t++) {
        memcpy(b, orig, size);
        size_t off = next_u32() % size;
        uint8_t v = (uint8_t)(next_u32() & 0xff);
        if (v == b[off]) v ^= 0x80;
        b[off] = v;
        write_bytes(work, b, size);
        writer_ok += exercise(work, compress, &errors);
    }
    printf("store %s: 200 single-byte changes, %d reader errors, %d appends accepted\n", compress ? "zstd" : "raw",
           errors, writer_ok);
    T_CHECK(errors > 0, "no damage was found at all");
    /* the same in the pages that hold structure (meta, branch, leaf, free list), not record values */
    size_t *meta_pages = asvr_malloc(sizeof(size_t) * (size / 4096 + 1), "page list");
    size_t nmp = 0;
    for (size_t pg = 0; pg < size / 4096; pg++) {
        unsigned fl = orig[pg * 4096 + 10];
        if (fl & 0x04) pg += (size_t)(orig[pg * 4096 + 12] | orig[pg * 4096 + 13] << 8) - 1; /* an overflow run */
        else meta_pages[nmp++] = pg;
    }
    errors = 0, writer_ok = 0;
    for (int t = 0; t < 400; t++) {
        memcpy(b, orig, size);
        size_t off = meta_pages[next_u32() % nmp] * 4096 + next_u32() % 4096;
        uint8_t v = (uint8_t)(next_u32() & 0xff);
        if (v == b[off]) v ^= 0x80;
        b[off] = v;
        write_bytes(work, b, size);
        writer_ok += exercise(work, compress, &errors);
    }
    printf("store %s: 400 single-byte changes in its %zu structure pages, %d reader errors, %d appends accepted\n",
           compress ? "zstd" : "raw", nmp, errors, writer_ok);
    T_CHECK(errors > 0, "no damage was found at all");
    free(meta_pages);

    /* targeted: meta page 0's magic */
    memcpy(b, orig, size);
    b[16] ^= 0xff;
    write_bytes(work, b, size);
    T_CHECK(code_store_open(work, &cs, &err) < 0 && strstr(err.msg, "meta page"), "damaged meta page: %s", err.msg);

    /* targeted: meta page 0 holding an odd (newest) transaction id: LMDB's writer would take slot 1 */
    memcpy(b, orig, size);
    for (int i = 0; i < 8; i++) b[144 + i] = i == 0 ? 0xff : i < 3 ? 0xff : 0;
    write_bytes(work, b, size);
    T_CHECK(code_store_open(work, &cs, &err) < 0 && strstr(err.msg, "slot"), "meta in the wrong slot: %s", err.msg);
    T_CHECK(lmdb_check_file(work, &err) < 0, "the writer's check let a meta in the wrong slot through");

    /* targeted: the codes tree's pages */
    lmdb_reader *r;
    T_CHECK(lmdb_open(path, &r, &err) == 0, "%s", err.msg);
    lmdb_db db;
    T_CHECK(lmdb_find_db(r, "codes", &db, &err) == 0, "%s", err.msg);
    uint32_t ps = lmdb_page_size(r);
    lmdb_close(r);
    T_CHECK(db.depth == 2, "expected a two-level codes tree, got depth %u", (unsigned)db.depth);
    /* the root (a branch page) given an overflow page's type: lookups name the key */
    memcpy(b, orig, size);
    b[db.root * ps + 10] = 0x04;
    write_bytes(work, b, size);
    T_CHECK(code_store_open(work, &cs, &err) == 0, "%s", err.msg);
    static uint16_t buf[P * D];
    T_CHECK(code_store_get(cs, keys[7], buf, &err) < 0 && strstr(err.msg, keys[7]) && strstr(err.msg, work),
            "bad root page: %s", err.msg);
    c = (count_ctx){0, 0, {0}};
    T_CHECK(code_store_verify(cs, count_problem, &c, &ok) > 0, "verify missed a bad root page");
    code_store_close(cs);
    T_CHECK(lmdb_check_file(work, &err) < 0 && strstr(err.msg, "damaged"), "writer check: %s", err.msg);

    if (db.depth == 2) {
        const uint8_t *root = orig + db.root * ps;
        unsigned lower = (unsigned)(root[12] | root[13] << 8);
        int nchild = (int)(lower - 16) / 2;
        unsigned off0 = (unsigned)(root[16] | root[17] << 8), off1 = (unsigned)(root[18] | root[19] << 8);
        T_CHECK(nchild >= 2, "root with %d children", nchild);
        /* child 1 pointed at child 0's page: a page reached twice, keys out of their bounds */
        memcpy(b, orig, size);
        memcpy(b + db.root * ps + off1, b + db.root * ps + off0, 6);
        write_bytes(work, b, size);
        T_CHECK(code_store_open(work, &cs, &err) == 0, "%s", err.msg);
        c = (count_ctx){0, 0, {0}};
        T_CHECK(code_store_verify(cs, count_problem, &c, &ok) > 0, "verify missed a page reached twice");
        code_store_close(cs);
        /* two node pointers of the first leaf swapped: keys out of order */
        uint64_t leaf = (uint64_t)root[off0] | (uint64_t)root[off0 + 1] << 8 | (uint64_t)root[off0 + 2] << 16;
        memcpy(b, orig, size);
        uint8_t *lp = b + leaf * ps, tmp[2];
        memcpy(tmp, lp + 16, 2), memcpy(lp + 16, lp + 18, 2), memcpy(lp + 18, tmp, 2);
        write_bytes(work, b, size);
        T_CHECK(code_store_open(work, &cs, &err) == 0, "%s", err.msg);
        c = (count_ctx){0, 0, {0}};
        T_CHECK(code_store_verify(cs, count_problem, &c, &ok) > 0 && strstr(c.last, "out of order"),
                "verify missed keys out of order: %s", c.last);
        code_store_close(cs);
    }

    /* a payload byte of record 5: verify names the key */
    {
        const uint8_t *v;
        size_t vl;
        lmdb_reader *r2;
        lmdb_db cdb;
        T_CHECK(lmdb_open(path, &r2, &err) == 0 && lmdb_find_db(r2, "codes", &cdb, &err) == 0, "%s", err.msg);
        T_CHECK(lmdb_get(r2, &cdb, keys[5], strlen(keys[5]), (const void **)&v, &vl, &err) == 0, "%s", err.msg);
        /* offset of the value inside the file: search for its first 64 bytes */
        size_t pos = SIZE_MAX;
        for (size_t o = 0; o + 64 <= size; o += 16)
            if (memcmp(orig + o, v, 64) == 0) { pos = o; break; }
        lmdb_close(r2);
        T_CHECK(pos != SIZE_MAX, "record 5 not found in the file");
        if (pos != SIZE_MAX) {
            memcpy(b, orig, size);
            b[pos + 40] ^= 0x01;
            write_bytes(work, b, size);
            T_CHECK(code_store_open(work, &cs, &err) == 0, "%s", err.msg);
            c = (count_ctx){0, 0, {0}};
            T_CHECK(code_store_verify(cs, count_problem, &c, &ok) == 1 && c.keyed == 1 && strstr(c.last, keys[5]),
                    "verify: %s", c.last);
            T_EQ_INT(ok, N - 1);
            T_CHECK(code_store_get(cs, keys[5], buf, &err) < 0 && strstr(err.msg, keys[5]), "get: %s", err.msg);
            code_store_close(cs);
        }
    }
    free(b);
    free(orig);
}

/* A failed append never costs the finished store: it is appended to in place, whole batches only. */
static void append_keeps_store(const char *dir) {
    char path[512], pp[600];
    snprintf(path, sizeof path, "%s/append.lmdb", dir);
    snprintf(pp, sizeof pp, "%s.partial", path);
    code_store *cs;
    asvr_error err;
    code_store_meta m = make_meta(0);
    T_CHECK(code_store_open_writer(path, &m, 1 << 20, &cs, &err) == 0, "%s", err.msg);
    T_CHECK(put_range(cs, 0, 50) == 0, "writing");
    T_CHECK(code_store_finish(cs, &err) == 0, "%s", err.msg);
    /* an append that fails after two batches (a key too long for LMDB ends it): closed, not finished */
    T_CHECK(code_store_open_writer(path, &m, 1 << 20, &cs, &err) == 0, "%s", err.msg);
    T_CHECK(put_range(cs, 50, 82) == 0, "writing");
    char longkey[600];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    const char *k[2] = {keys[90], longkey};
    const uint16_t *c[2] = {codes[90], codes[91]};
    T_CHECK(code_store_put_batch(cs, 2, k, c, &err) < 0, "a 599-byte key was accepted");
    code_store_close(cs);
    T_CHECK(!asvr_path_exists(pp), "the failed append left '%s'", pp);
    T_CHECK(code_store_open(path, &cs, &err) == 0, "the store is no longer finished: %s", err.msg);
    if (cs) {
        T_EQ_INT(code_store_count(cs), 82);
        T_CHECK(!code_store_has(cs, keys[90]), "a record of the failed batch is in the store");
        count_ctx cc = {0, 0, {0}};
        int64_t ok = 0;
        T_EQ_INT(code_store_verify(cs, count_problem, &cc, &ok), 0);
        code_store_close(cs);
    }
    /* a killed append: a child appends batches until killed */
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        code_store *w;
        asvr_error e;
        if (code_store_open_writer(path, &m, 1 << 20, &w, &e) < 0) _exit(3);
        for (int i = 82; i < N; i += 2) {
            const char *kk[2] = {keys[i], keys[i + 1]};
            const uint16_t *cc[2] = {codes[i], codes[i + 1]};
            if (code_store_put_batch(w, 2, kk, cc, &e) < 0) _exit(4);
            if (i == 120) kill(getpid(), SIGKILL);
        }
        _exit(5);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    T_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the appending child was not killed (status %d)", st);
    T_CHECK(code_store_open(path, &cs, &err) == 0, "after a killed append: %s", err.msg);
    if (cs) {
        T_EQ_INT(code_store_count(cs), 122);
        static uint16_t buf[P * D];
        T_CHECK(code_store_get(cs, keys[121], buf, &err) == 0 && memcmp(buf, codes[121], sizeof buf) == 0,
                "the last committed batch: %s", err.msg);
        count_ctx cc = {0, 0, {0}};
        int64_t ok = 0;
        T_EQ_INT(code_store_verify(cs, count_problem, &cc, &ok), 0);
        code_store_close(cs);
    }
}

int main(void) {
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "img/%05d.jpg", i);
        for (int j = 0; j < P * D; j++) codes[i][j] = (uint16_t)(i % 3 == 0 ? next_u32() % 5 : next_u32() % K);
    }
    char dir[] = "/tmp/asvr_damage_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    damage_runs(dir, 0);
    damage_runs(dir, 1);
    append_keeps_store(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_done();
}
