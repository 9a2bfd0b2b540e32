/* test_code_store.c — the LMDB code store: round trips (raw and zstd), finish/rename, resume,
 * refusing a different tokenizer, map growth from a tiny map, corruption detected by the checksum;
 * the recorded compute backend: another one refused, a forced append marks the store "mixed", and a
 * meta record from before the backend was recorded reads as cpu-f32. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "store/code_store.h"
#include "test.h"

#define P 729
#define D 8
#define K 16384

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint32_t next_u32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static code_store_meta make_meta(const char *fp, int compress) {
    code_store_meta m = {0};
    snprintf(m.tokenizer_fingerprint, sizeof m.tokenizer_fingerprint, "%s", fp);
    snprintf(m.tokenizer, sizeof m.tokenizer, "test-tokenizer");
    snprintf(m.policy, sizeof m.policy, "pad");
    snprintf(m.backend, sizeof m.backend, "cpu-f32");
    m.image_size = 384, m.positions = P, m.depth = D, m.codebook_size = K, m.compression = compress;
    m.pad[0] = m.pad[1] = m.pad[2] = 127;
    return m;
}

typedef struct {
    const code_store_meta *meta;
    int records, corrupt;
    char bad_key[256];
} verify_ctx;

static int verify_visit(void *vctx, const char *key, size_t kl, const void *v, size_t n) {
    verify_ctx *c = vctx;
    asvr_error err;
    c->records++;
    if (code_record_decode(v, n, c->meta, NULL, &err) < 0) {
        c->corrupt++;
        snprintf(c->bad_key, sizeof c->bad_key, "%.*s", (int)kl, key);
    }
    return 0;
}

static void run(const char *dir, int compress) {
    asvr_error err;
    char path[512];
    snprintf(path, sizeof path, "%s/codes%d.lmdb", dir, compress);
    code_store_meta meta = make_meta("0123456789abcdef", compress);
    enum { N = 300 };
    static uint16_t codes[N][P * D];
    char keys[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "images/%05d.jpg", i);
        for (int j = 0; j < P * D; j++) codes[i][j] = (uint16_t)(i % 3 == 0 ? next_u32() % 7 : next_u32() % K);
    }
    /* Tiny initial map: the store must grow it. Write in two sessions to exercise resume. */
    code_store *cs;
    T_EQ_INT(code_store_open_writer(path, &meta, 64 * 1024, &cs, &err), 0);
    const char *kp[N];
    const uint16_t *cp[N];
    for (int i = 0; i < N; i++) kp[i] = keys[i], cp[i] = codes[i];
    T_EQ_INT(code_store_put_batch(cs, 100, kp, cp, &err), 0);
    code_store_close(cs); /* "killed": the partial remains */
    char partial[600];
    snprintf(partial, sizeof partial, "%s.partial", path);
    T_CHECK(asvr_path_exists(partial) && !asvr_path_exists(path), "partial only");
    code_store *rd;
    T_EQ_INT(code_store_open(path, &rd, &err), -1);
    T_STR_CONTAINS(err.msg, "not finished");

    code_store_meta other = make_meta("fedcba9876543210", compress);
    T_EQ_INT(code_store_open_writer(path, &other, 0, &cs, &err), -1);
    T_STR_CONTAINS(err.msg, "tokenizer fingerprint");

    T_EQ_INT(code_store_open_writer(path, &meta, 64 * 1024, &cs, &err), 0);
    T_EQ_INT(code_store_count(cs), 100);
    T_CHECK(code_store_has(cs, keys[99]) && !code_store_has(cs, keys[100]), "resume sees the first batch");
    T_EQ_INT(code_store_put_batch(cs, N - 50, kp + 50, cp + 50, &err), 0); /* overlaps 50 existing */
    T_EQ_INT(code_store_count(cs), N);
    T_EQ_INT(code_store_finish(cs, &err), 0);
    T_CHECK(asvr_path_exists(path) && !asvr_path_exists(partial), "renamed to the final path");
    char lock[600];
    snprintf(lock, sizeof lock, "%s-lock", path);
    T_CHECK(!asvr_path_exists(lock), "no lock file left");

    T_EQ_INT(code_store_open(path, &rd, &err), 0);
    T_EQ_INT(code_store_count(rd), N);
    T_CHECK(strcmp(code_store_get_meta(rd)->tokenizer_fingerprint, "0123456789abcdef") == 0, "meta kept");
    static uint16_t got[P * D];
    int all_equal = 1;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < P * D; j++) got[j] = 0xFFFF;
        if (code_store_get(rd, keys[i], got, &err) != 0 || memcmp(got, codes[i], sizeof got) != 0) all_equal = 0;
    }
    T_CHECK(all_equal, "every record reads back exactly");
    T_EQ_INT(code_store_get(rd, "missing.jpg", got, &err), 1);
    code_store_close(rd);

    /* Appending to a finished store with another tokenizer is refused; the store stays finished. */
    T_EQ_INT(code_store_open_writer(path, &other, 0, &cs, &err), -1);
    T_STR_CONTAINS(err.msg, "refusing to mix");
    T_CHECK(asvr_path_exists(path), "finished store untouched");

    /* Corrupt one record's payload byte: LMDB has no checksums, ours must catch it. */
    if (!compress) {
        uint8_t *data;
        size_t n;
        T_EQ_INT(asvr_read_file(path, &data, &n, &err), 0);
        size_t hit = 0;
        for (size_t i = 0; i + 4 <= n; i++)
            if (memcmp(data + i, "ACR1", 4) == 0) {
                hit = i;
                break;
            }
        T_CHECK(hit > 0, "found a record in the file");
        data[hit + 12 + 100] ^= 0x01;
        T_EQ_INT(asvr_atomic_write(path, data, n, &err), 0);
        free(data);
        T_EQ_INT(code_store_open(path, &rd, &err), 0);
        verify_ctx vc = {code_store_get_meta(rd), 0, 0, ""};
        T_EQ_INT(code_store_foreach(rd, verify_visit, &vc, &err), 0);
        T_EQ_INT(vc.records, N);
        T_EQ_INT(vc.corrupt, 1);
        T_EQ_INT(code_store_get(rd, vc.bad_key, got, &err), -1);
        T_STR_CONTAINS(err.msg, "checksum mismatch");
        T_STR_CONTAINS(err.msg, vc.bad_key);
        code_store_close(rd);
    }
}

static void backend_checks(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/backend.lmdb", dir);
    code_store_meta cpu = make_meta("0123456789abcdef", 0), gpu = cpu;
    snprintf(gpu.backend, sizeof gpu.backend, "cuda-bf16");
    static uint16_t codes[P * D];
    const char *k1[] = {"a.jpg"}, *k2[] = {"b.jpg"};
    const uint16_t *cp[] = {codes};
    code_store *cs;
    asvr_error err;
    T_EQ_INT(code_store_open_writer(path, &cpu, 64 * 1024, &cs, &err), 0);
    T_EQ_INT(code_store_put_batch(cs, 1, k1, cp, &err), 0);
    T_EQ_INT(code_store_finish(cs, &err), 0);
    /* another backend: refused, for the finished store and for a partial one */
    T_EQ_INT(code_store_open_writer(path, &gpu, 0, &cs, &err), -1);
    T_STR_CONTAINS(err.msg, "compute backend");
    T_STR_CONTAINS(err.msg, "cuda-bf16");
    /* forced: opened, and the store says "mixed" from then on */
    T_EQ_INT(code_store_open_writer_ex(path, &gpu, 0, 1, &cs, &err), 0);
    T_EQ_INT(code_store_put_batch(cs, 1, k2, cp, &err), 0);
    T_CHECK(strcmp(code_store_get_meta(cs)->backend, "mixed") == 0, "forced append marks the store mixed");
    T_EQ_INT(code_store_finish(cs, &err), 0);
    code_store *rd;
    T_EQ_INT(code_store_open(path, &rd, &err), 0);
    if (rd) {
        T_CHECK(strcmp(code_store_get_meta(rd)->backend, "mixed") == 0, "mixed persisted: %s",
                code_store_get_meta(rd)->backend);
        T_EQ_INT(code_store_count(rd), 2);
        code_store_close(rd);
    }
    T_EQ_INT(code_store_open_writer(path, &cpu, 0, &cs, &err), -1); /* mixed is not cpu-f32 either */
    T_STR_CONTAINS(err.msg, "mixed");
    /* a meta record without "backend" (written before it existed) */
    const char *old_meta = "{\"codebook_size\":16384,\"compression\":\"none\",\"depth\":8,\"dtype\":\"u16le\","
                           "\"format_version\":1,\"image_size\":384,\"policy\":\"pad\",\"positions\":729,"
                           "\"tokenizer\":\"t\",\"tokenizer_fingerprint\":\"0123456789abcdef\"}";
    code_store_meta m;
    T_EQ_INT(code_store_meta_from_json(old_meta, strlen(old_meta), &m, &err), 0);
    T_CHECK(strcmp(m.backend, "cpu-f32") == 0, "an older store reads as cpu-f32: '%s'", m.backend);
    gpu.format_version = CODE_STORE_FORMAT_VERSION;
    char *js = code_store_meta_to_json(&gpu);
    T_STR_CONTAINS(js, "\"backend\":\"cuda-bf16\"");
    T_EQ_INT(code_store_meta_from_json(js, strlen(js), &m, &err), 0);
    T_CHECK(strcmp(m.backend, "cuda-bf16") == 0, "backend round trip");
    free(js);
    /* pad colour and EXIF: absent, they read as what older stores were made with; recorded only when
     * they differ from it; round trip; another colour or EXIF rule is a difference. */
    T_EQ_INT(code_store_meta_from_json(old_meta, strlen(old_meta), &m, &err), 0);
    T_CHECK(m.pad[0] == 127 && m.pad[1] == 127 && m.pad[2] == 127 && m.exif == 0, "an older store reads as 127, no EXIF");
    js = code_store_meta_to_json(&m);
    T_CHECK(!strstr(js, "pad_color") && !strstr(js, "exif"), "defaults are not written: %s", js);
    free(js);
    code_store_meta clip = m;
    clip.pad[0] = 122, clip.pad[1] = 116, clip.pad[2] = 104, clip.exif = 1;
    js = code_store_meta_to_json(&clip);
    T_STR_CONTAINS(js, "\"pad_color\":[122,116,104]");
    T_STR_CONTAINS(js, "\"exif\":true");
    code_store_meta back;
    T_EQ_INT(code_store_meta_from_json(js, strlen(js), &back, &err), 0);
    T_CHECK(back.pad[0] == 122 && back.pad[1] == 116 && back.pad[2] == 104 && back.exif == 1, "pad/EXIF round trip");
    free(js);
    char why[256];
    T_EQ_INT(code_store_meta_diff(&m, &clip, why, sizeof why), 1);
    T_STR_CONTAINS(why, "pad colour");
    clip.pad[0] = 127, clip.pad[1] = 127, clip.pad[2] = 127;
    T_EQ_INT(code_store_meta_diff(&m, &clip, why, sizeof why), 1);
    T_STR_CONTAINS(why, "EXIF");
    const char *bad_pad = "{\"codebook_size\":16384,\"compression\":\"none\",\"depth\":8,\"dtype\":\"u16le\","
                          "\"format_version\":1,\"image_size\":384,\"policy\":\"squash\",\"positions\":729,"
                          "\"tokenizer\":\"t\",\"tokenizer_fingerprint\":\"0123456789abcdef\",\"pad_color\":[1,2,300]}";
    T_EQ_INT(code_store_meta_from_json(bad_pad, strlen(bad_pad), &m, &err), -1);
    T_STR_CONTAINS(err.msg, "pad_color");
    unlink(path);
}

int main(void) {
    char dir[] = "/tmp/asvr_test_store_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    run(dir, 0);
    run(dir, 1);
    backend_checks(dir);
    /* Record encoding: a code >= K is caught, a truncated record too. */
    code_store_meta m = make_meta("0123456789abcdef", 0);
    m.positions = 2, m.depth = 2, m.codebook_size = 10;
    uint16_t c[4] = {1, 2, 3, 10};
    size_t n;
    uint8_t *rec = code_record_encode(c, 2, 2, 0, &n);
    asvr_error err;
    T_EQ_INT(code_record_decode(rec, n, &m, NULL, &err), -1);
    T_STR_CONTAINS(err.msg, "codebook size");
    T_EQ_INT(code_record_decode(rec, n - 1, &m, NULL, &err), -1);
    free(rec);
    for (int z = 0; z < 2; z++) {
        char f[600];
        snprintf(f, sizeof f, "%s/codes%d.lmdb", dir, z);
        unlink(f);
    }
    rmdir(dir);
    return t_done();
}
