/* test_packed_store.c — packed store round trip, packing plan invariants and determinism,
 * truncated / corrupted files refused with a clear message. */
#include <stdint.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "store/packed_store.h"
#include "test.h"

#define N 1500
#define MAXLEN 2048
#define IMG 729

static uint64_t rng;
static uint32_t rnd(uint32_t n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)((rng >> 11) % n);
}

typedef struct {
    int32_t ids[1200];
    uint8_t mask[1200];
    uint32_t n, positions;
    int image;
    char id[32], key[64];
} sample;
static sample S[N];

static void make_samples(void) {
    rng = 0x1234567887654321ULL;
    for (int i = 0; i < N; i++) {
        sample *s = &S[i];
        s->image = rnd(4) != 0;
        s->n = 5 + rnd(s->image ? 1000 : 1195);
        for (uint32_t k = 0; k < s->n; k++) {
            s->ids[k] = 1 + (int32_t)rnd(31999);
            s->mask[k] = (uint8_t)(rnd(3) == 0);
        }
        if (s->image) s->ids[1] = -200;
        uint32_t pos = s->n + (s->image ? IMG - 1 : 0);
        s->positions = pos > MAXLEN ? MAXLEN : pos;
        snprintf(s->id, sizeof s->id, "%d", 1000 + i);
        snprintf(s->key, sizeof s->key, "coco/train2017/%012d.jpg", i * 7);
    }
}

static int write_store(const char *path, int compress, int packing, uint64_t seed, packed_info *info) {
    asvr_error err;
    packed_writer_opts o = {MAXLEN, IMG, 64, compress, packing, seed, "0123456789abcdef", "vicuna_v1", "fedcba9876543210", "00112233445566aa"};
    packed_writer *w;
    if (packed_writer_open(path, &o, &w, &err) < 0) return -1;
    for (int i = 0; i < N; i++) {
        sample *s = &S[i];
        if (packed_writer_add(w, (uint64_t)i, s->id, s->image ? s->key : NULL, s->ids, s->mask, s->n,
                              s->positions, 0, &err) < 0) {
            packed_writer_abort(w);
            return -1;
        }
    }
    return packed_writer_finish(w, info, &err);
}

static void check_store(const char *path, int packing) {
    asvr_error err;
    packed_store *ps;
    T_EQ_INT(packed_store_open(path, &ps, &err), 0);
    if (!ps) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    const packed_info *I = packed_store_info(ps);
    T_EQ_INT(I->n_samples, N);
    T_CHECK(strcmp(I->template_name, "vicuna_v1") == 0 && strcmp(I->tokenizer_fp, "0123456789abcdef") == 0 &&
                strcmp(I->source_fp, "00112233445566aa") == 0 && strcmp(I->template_fp, "fedcba9876543210") == 0, "meta");
    packed_reader *r = packed_reader_new(ps);
    int ok = 1;
    /* random access order */
    for (int t = 0; t < N; t++) {
        int i = (int)((t * 7919u) % N);
        packed_sample s;
        if (packed_read_sample(r, (uint64_t)i, &s, &err) < 0) {
            ok = 0;
            break;
        }
        sample *e = &S[i];
        if (s.n_ids != e->n || s.positions != e->positions || s.source_index != (uint64_t)i ||
            memcmp(s.ids, e->ids, 4 * e->n) != 0 || memcmp(s.label_mask, e->mask, e->n) != 0 ||
            strcmp(s.id, e->id) != 0 || (e->image ? !s.image_key || strcmp(s.image_key, e->key) : s.image_key != NULL) ||
            ((s.flags & PACKED_HAS_IMAGE) != 0) != e->image)
            ok = 0;
    }
    T_CHECK(ok, "every sample reads back exactly");
    /* plan: each sample exactly once, rows within max_len, positions add up */
    static int seen[N];
    memset(seen, 0, sizeof seen);
    int plan_ok = 1;
    uint64_t used = 0;
    for (uint64_t ri = 0; ri < I->n_rows; ri++) {
        packed_row row;
        T_EQ_INT(packed_read_row(ps, ri, &row, &err), 0);
        uint32_t sum = 0;
        for (uint32_t k = 0; k < row.n_samples; k++) {
            seen[row.samples[k]]++;
            sum += S[row.samples[k]].positions;
        }
        if (sum != row.positions || sum > MAXLEN || row.n_samples == 0) plan_ok = 0;
        if (!packing && row.n_samples != 1) plan_ok = 0;
        used += sum;
    }
    for (int i = 0; i < N; i++)
        if (seen[i] != 1) plan_ok = 0;
    T_CHECK(plan_ok, "the plan holds every sample once, rows <= max_len");
    if (packing) {
        /* Lower bound on rows: total positions / max_len, and one row per sample longer than half. */
        uint64_t big = 0;
        for (int i = 0; i < N; i++) big += S[i].positions > MAXLEN / 2;
        uint64_t bound = (used + MAXLEN - 1) / MAXLEN;
        if (big > bound) bound = big;
        T_CHECK(I->n_rows <= bound + bound / 10, "packing within 10%% of the lower bound (%llu rows, bound %llu)",
                (unsigned long long)I->n_rows, (unsigned long long)bound);
    }
    T_EQ_INT(packed_read_sample(r, N, &(packed_sample){0}, &err), -1);
    T_STR_CONTAINS(err.msg, "out of range");
    packed_reader_free(r);
    packed_store_close(ps);
}

int main(void) {
    make_samples();
    char dir[] = "/tmp/asvr_test_packed_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char a[600], b[600], c[600], d[600];
    snprintf(a, sizeof a, "%s/a.pack", dir);
    snprintf(b, sizeof b, "%s/b.pack", dir);
    snprintf(c, sizeof c, "%s/c.pack", dir);
    snprintf(d, sizeof d, "%s/d.pack", dir);
    packed_info ia, ib;
    T_EQ_INT(write_store(a, 3, 1, 42, &ia), 0);
    T_EQ_INT(write_store(b, 3, 1, 42, &ib), 0);
    T_EQ_INT(write_store(c, 0, 0, 42, NULL), 0);
    T_EQ_INT(write_store(d, 3, 1, 43, NULL), 0);
    check_store(a, 1);
    check_store(c, 0);
    check_store(d, 1);
    T_CHECK(ia.token_stored_bytes < ia.token_raw_bytes, "zstd blocks are smaller (%llu < %llu)",
            (unsigned long long)ia.token_stored_bytes, (unsigned long long)ia.token_raw_bytes);
    uint8_t *fa, *fb, *fd;
    size_t na, nb, nd;
    asvr_error err;
    T_EQ_INT(asvr_read_file(a, &fa, &na, &err), 0);
    T_EQ_INT(asvr_read_file(b, &fb, &nb, &err), 0);
    T_EQ_INT(asvr_read_file(d, &fd, &nd, &err), 0);
    T_CHECK(na == nb && memcmp(fa, fb, na) == 0, "same seed, same bytes");
    T_CHECK(na != nd || memcmp(fa, fd, na) != 0, "another seed, another plan");

    /* Truncated copies are refused on open, whatever the length. */
    char t[600];
    snprintf(t, sizeof t, "%s/t.pack", dir);
    int refused = 1;
    size_t cuts[] = {0, 7, 100, 511, 512, 513, na / 2, na - 100, na - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        T_EQ_INT(asvr_atomic_write(t, fa, cuts[k], &err), 0);
        packed_store *ps;
        if (packed_store_open(t, &ps, &err) == 0) {
            refused = 0;
            packed_store_close(ps);
        } else if (!strstr(err.msg, t)) {
            refused = 0;
        }
    }
    T_CHECK(refused, "truncated files refused, naming the file");
    T_EQ_INT(asvr_atomic_write(t, fa, na - 1, &err), 0);
    packed_store *ps;
    T_EQ_INT(packed_store_open(t, &ps, &err), -1);
    T_STR_CONTAINS(err.msg, "truncated or corrupt");

    /* A flipped byte in a table is caught by its checksum on open; in a block, on read. */
    uint8_t *m = malloc(na);
    memcpy(m, fa, na);
    m[na - 200] ^= 0x40; /* strings / row tables sit at the end */
    T_EQ_INT(asvr_atomic_write(t, m, na, &err), 0);
    T_EQ_INT(packed_store_open(t, &ps, &err), -1);
    T_STR_CONTAINS(err.msg, "checksum mismatch");
    memcpy(m, fa, na);
    m[600] ^= 0x01; /* first token block */
    T_EQ_INT(asvr_atomic_write(t, m, na, &err), 0);
    T_EQ_INT(packed_store_open(t, &ps, &err), 0);
    if (ps) {
        packed_reader *r = packed_reader_new(ps);
        packed_sample s;
        T_EQ_INT(packed_read_sample(r, 0, &s, &err), -1);
        T_STR_CONTAINS(err.msg, "block 0 checksum mismatch");
        packed_reader_free(r);
        packed_store_close(ps);
    }
    memcpy(m, fa, 8);
    memcpy(m, "NOTAPACK", 8);
    T_EQ_INT(asvr_atomic_write(t, m, na, &err), 0);
    T_EQ_INT(packed_store_open(t, &ps, &err), -1);
    T_STR_CONTAINS(err.msg, "not a packed store");
    free(m), free(fa), free(fb), free(fd);
    unlink(a), unlink(b), unlink(c), unlink(d), unlink(t), rmdir(dir);
    printf("fill %.4f rows %llu, token bytes raw %llu stored %llu\n",
           (double)ia.n_positions / ((double)ia.n_rows * MAXLEN), (unsigned long long)ia.n_rows,
           (unsigned long long)ia.token_raw_bytes, (unsigned long long)ia.token_stored_bytes);
    return t_done();
}
