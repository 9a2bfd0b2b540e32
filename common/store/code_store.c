#include "store/code_store.h"

#include <errno.h>
#include <jansson.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "base/fsutil.h"
#include "base/hash.h"
#include "base/log.h"
#include "store/lmdb_read.h"

#define REC_HEADER 12
#define REC_TRAILER 8

struct code_store {
    MDB_env *env;       /* a writer: LMDB, on a file lmdb_check_file() passed */
    MDB_dbi meta_dbi, codes_dbi;
    lmdb_reader *rd;    /* a reader: every page checked (lmdb_read.h), never LMDB */
    lmdb_db rd_meta, rd_codes;
    int in_place;       /* a writer appending to a finished store (no .partial) */
    code_store_meta meta;
    char *path;         /* final path */
    char *open_path;    /* the file actually open (path or path.partial) */
    int writable;
    size_t map_size;
    int64_t count;
};

/* ---- records ---------------------------------------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

uint8_t *code_record_encode(const uint16_t *codes, int positions, int depth, int compress, size_t *size) {
    size_t n = (size_t)positions * (size_t)depth, raw_bytes = n * 2;
    uint8_t *raw = asvr_malloc(raw_bytes, "a code record");
    for (size_t i = 0; i < n; i++) put_u16(raw + 2 * i, codes[i]);
    size_t cap = REC_HEADER + (compress ? ZSTD_compressBound(raw_bytes) : raw_bytes) + REC_TRAILER;
    uint8_t *rec = asvr_malloc(cap, "a code record");
    size_t stored = raw_bytes;
    if (compress) {
        stored = ZSTD_compress(rec + REC_HEADER, cap - REC_HEADER - REC_TRAILER, raw, raw_bytes, 3);
        CHECK_ZSTD(stored, "compressing a code record");
    } else {
        memcpy(rec + REC_HEADER, raw, raw_bytes);
    }
    free(raw);
    put_u32(rec, CODE_RECORD_MAGIC);
    put_u16(rec + 4, (uint16_t)positions);
    rec[6] = (uint8_t)depth;
    rec[7] = compress ? 1 : 0;
    put_u32(rec + 8, (uint32_t)stored);
    put_u64(rec + REC_HEADER + stored, asvr_xxh64(rec, REC_HEADER + stored, 0));
    *size = REC_HEADER + stored + REC_TRAILER;
    return rec;
}

int code_record_decode(const void *recv, size_t size, const code_store_meta *meta, uint16_t *codes,
                       asvr_error *err) {
    const uint8_t *rec = recv;
    if (size < REC_HEADER + REC_TRAILER) return asvr_err_set(err, "record of %zu bytes is too short", size);
    if (get_u32(rec) != CODE_RECORD_MAGIC) return asvr_err_set(err, "bad record magic");
    int positions = get_u16(rec + 4), depth = rec[6], flags = rec[7];
    uint32_t stored = get_u32(rec + 8);
    if ((size_t)stored + REC_HEADER + REC_TRAILER != size)
        return asvr_err_set(err, "record size %zu does not match its header (%u stored bytes)", size, stored);
    uint64_t want = get_u64(rec + REC_HEADER + stored), got = asvr_xxh64(rec, REC_HEADER + stored, 0);
    if (want != got)
        return asvr_err_set(err, "checksum mismatch (stored %016llx, computed %016llx): the record is corrupt",
                            (unsigned long long)want, (unsigned long long)got);
    if (positions != meta->positions || depth != meta->depth)
        return asvr_err_set(err, "record shape %dx%d differs from the store's %dx%d", positions, depth,
                            meta->positions, meta->depth);
    if (flags & ~1) return asvr_err_set(err, "unknown record flags 0x%02x", flags);
    size_t n = (size_t)positions * (size_t)depth, raw_bytes = n * 2;
    const uint8_t *raw = rec + REC_HEADER;
    uint8_t *tmp = NULL;
    if (flags & 1) {
        tmp = asvr_malloc(raw_bytes, "a decompressed code record");
        size_t r = ZSTD_decompress(tmp, raw_bytes, raw, stored);
        if (ZSTD_isError(r) || r != raw_bytes) {
            free(tmp);
            return asvr_err_set(err, "zstd payload does not decompress to %zu bytes", raw_bytes);
        }
        raw = tmp;
    } else if (stored != raw_bytes) {
        return asvr_err_set(err, "raw payload of %u bytes, expected %zu", stored, raw_bytes);
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t c = get_u16(raw + 2 * i);
        if (c >= meta->codebook_size) bad = 1;
        if (codes) codes[i] = c;
    }
    free(tmp);
    if (bad) return asvr_err_set(err, "a code is >= the codebook size %d", meta->codebook_size);
    return 0;
}

/* ---- meta ------------------------------------------------------------------------------------- */

int code_store_meta_pad_recorded(const code_store_meta *m) {
    return !strcmp(m->policy, "pad") && (m->pad[0] != 127 || m->pad[1] != 127 || m->pad[2] != 127);
}

char *code_store_meta_to_json(const code_store_meta *m) {
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s:s}", "format_version",
                          m->format_version, "tokenizer_fingerprint", m->tokenizer_fingerprint,
                          "tokenizer", m->tokenizer, "policy", m->policy, "image_size", m->image_size,
                          "positions", m->positions, "depth", m->depth, "codebook_size",
                          m->codebook_size, "dtype", "u16le", "compression",
                          m->compression ? "zstd" : "none", "backend", m->backend);
    CHECK(o != NULL, "", "building the code store meta JSON");
    if (m->input_size > 0 && m->input_size != m->image_size) { /* absent for stores of the tokenizer's size */
        json_object_set_new(o, "input_size", json_integer(m->input_size));
        json_object_set_new(o, "downsample", json_string(m->downsample));
    }
    if (code_store_meta_pad_recorded(m)) /* absent: 127,127,127, what stores without the key used */
        json_object_set_new(o, "pad_color", json_pack("[i,i,i]", m->pad[0], m->pad[1], m->pad[2]));
    if (m->exif) json_object_set_new(o, "exif", json_true());
    char *s = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    CHECK(s != NULL, "", "serialising the code store meta JSON");
    return s;
}

int code_store_meta_from_json(const char *text, size_t n, code_store_meta *m, asvr_error *err) {
    json_error_t je;
    json_t *o = json_loadb(text, n, 0, &je);
    if (!o) return asvr_err_set(err, "meta record is not JSON: %s", je.text);
    const char *fp = NULL, *tok = NULL, *pol = NULL, *dtype = NULL, *comp = NULL, *backend = NULL, *down = NULL;
    json_t *pad = NULL;
    memset(m, 0, sizeof *m);
    if (json_unpack_ex(o, &je, JSON_STRICT, "{s:i, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:s, s:s, s?s, s?i, s?s, s?o, s?b}",
                       "format_version", &m->format_version, "tokenizer_fingerprint", &fp, "tokenizer",
                       &tok, "policy", &pol, "image_size", &m->image_size, "positions", &m->positions,
                       "depth", &m->depth, "codebook_size", &m->codebook_size, "dtype", &dtype,
                       "compression", &comp, "backend", &backend, "input_size", &m->input_size, "downsample",
                       &down, "pad_color", &pad, "exif", &m->exif) != 0) {
        asvr_err_set(err, "meta record: %s", je.text);
        json_decref(o);
        return -1;
    }
    snprintf(m->tokenizer_fingerprint, sizeof m->tokenizer_fingerprint, "%s", fp);
    snprintf(m->tokenizer, sizeof m->tokenizer, "%s", tok);
    snprintf(m->policy, sizeof m->policy, "%s", pol);
    /* Stores from before the backend was recorded were all computed on the CPU in f32. */
    snprintf(m->backend, sizeof m->backend, "%s", backend ? backend : "cpu-f32");
    if (!m->input_size) m->input_size = m->image_size;
    snprintf(m->downsample, sizeof m->downsample, "%s", down ? down : "none");
    m->compression = strcmp(comp, "zstd") == 0;
    m->pad[0] = m->pad[1] = m->pad[2] = 127; /* what stores without the key were made with */
    int rc = 0, bad_pad = 0;
    if (pad) {
        bad_pad = !json_is_array(pad) || json_array_size(pad) != 3;
        for (size_t i = 0; i < 3 && !bad_pad; i++) {
            json_t *x = json_array_get(pad, i);
            bad_pad = !json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 255;
            if (!bad_pad) m->pad[i] = (uint8_t)json_integer_value(x);
        }
    }
    if (bad_pad) rc = asvr_err_set(err, "meta: pad_color must be [R, G, B] with values 0..255");
    else if (pad && strcmp(pol, "pad") != 0) rc = asvr_err_set(err, "meta: pad_color given for policy '%s'", pol);
    if (rc) {
        json_decref(o);
        return rc;
    }
    if (m->format_version != CODE_STORE_FORMAT_VERSION)
        rc = asvr_err_set(err, "format version %d, this build reads version %d", m->format_version,
                          CODE_STORE_FORMAT_VERSION);
    else if (strcmp(dtype, "u16le") != 0) rc = asvr_err_set(err, "unknown code dtype '%s'", dtype);
    else if (!m->compression && strcmp(comp, "none") != 0) rc = asvr_err_set(err, "unknown compression '%s'", comp);
    else if (m->positions <= 0 || m->positions > 65535 || m->depth <= 0 || m->depth > 255 ||
             m->codebook_size <= 0 || m->codebook_size > 65536 || m->image_size <= 0)
        rc = asvr_err_set(err, "meta dimensions out of range (positions %d, depth %d, codebook %d, size %d)",
                          m->positions, m->depth, m->codebook_size, m->image_size);
    else if (m->input_size < m->image_size || (m->input_size == m->image_size) != !strcmp(m->downsample, "none") ||
             (strcmp(m->downsample, "none") && strcmp(m->downsample, "bilinear")))
        rc = asvr_err_set(err, "meta: input size %d with downsampling '%s' to the tokenizer's %d is not a known rule",
                          m->input_size, m->downsample, m->image_size);
    json_decref(o);
    return rc;
}

int code_store_meta_diff(const code_store_meta *a, const code_store_meta *b, char *why, size_t n) {
#define DIFF_S(f, what)                                                                            \
    if (strcmp(a->f, b->f) != 0) return snprintf(why, n, "%s: store has '%s', this run '%s'", what, a->f, b->f), 1
#define DIFF_I(f, what)                                                                            \
    if (a->f != b->f) return snprintf(why, n, "%s: store has %d, this run %d", what, a->f, b->f), 1
    DIFF_S(tokenizer_fingerprint, "tokenizer fingerprint (a different tokenizer made this store)");
    DIFF_S(policy, "preprocessing policy");
    DIFF_I(image_size, "image size");
    int ia = a->input_size ? a->input_size : a->image_size, ib = b->input_size ? b->input_size : b->image_size;
    if (ia != ib)
        return snprintf(why, n, "input size (images prepared at, before the tokenizer's %d): store has %d, this run %d",
                        a->image_size, ia, ib), 1;
    const char *da = a->downsample[0] ? a->downsample : "none", *db = b->downsample[0] ? b->downsample : "none";
    if (strcmp(da, db) != 0) return snprintf(why, n, "downsampling rule: store has '%s', this run '%s'", da, db), 1;
    DIFF_I(positions, "positions per image");
    DIFF_I(depth, "depth");
    DIFF_I(codebook_size, "codebook size");
    DIFF_I(compression, "compression");
    if (!strcmp(a->policy, "pad") && memcmp(a->pad, b->pad, 3) != 0)
        return snprintf(why, n, "pad colour: store has %d,%d,%d, this run %d,%d,%d", a->pad[0], a->pad[1], a->pad[2],
                        b->pad[0], b->pad[1], b->pad[2]), 1;
    if (!a->exif != !b->exif)
        return snprintf(why, n, "EXIF orientation: store %s, this run %s", a->exif ? "applied it" : "did not apply it",
                        b->exif ? "applies it (--exif)" : "does not"), 1;
    DIFF_S(backend, "compute backend (bf16 and f32 codes can differ; --force appends anyway and marks the store 'mixed')");
#undef DIFF_S
#undef DIFF_I
    if (n) why[0] = 0;
    return 0;
}

/* ---- environment ------------------------------------------------------------------------------ */

static int mdb_fail(asvr_error *err, int rc, const char *path, const char *what) {
    const char *hint = asvr_mdb_hint(rc);
    return asvr_err_set(err, "'%s': %s: %s%s%s", path, what, mdb_strerror(rc), hint[0] ? "; " : "", hint);
}

static int env_open(code_store *cs, const char *file, int writable, size_t map, asvr_error *err) {
    /* LMDB trusts the file: a truncated or damaged one would crash it, so it is checked first */
    if (lmdb_check_file(file, err) < 0) return asvr_err_prefix(err, "code store");
    int rc = mdb_env_create(&cs->env);
    if (rc) return mdb_fail(err, rc, file, "creating the LMDB environment");
    mdb_env_set_maxdbs(cs->env, 4);
    if (writable) {
        rc = mdb_env_set_mapsize(cs->env, map);
        if (rc) return mdb_fail(err, rc, file, "setting the map size");
    }
    unsigned flags = MDB_NOSUBDIR | (writable ? 0 : (MDB_RDONLY | MDB_NOLOCK));
    rc = mdb_env_open(cs->env, file, flags, 0664);
    if (rc) {
        mdb_env_close(cs->env);
        cs->env = NULL;
        return mdb_fail(err, rc, file, "opening the store");
    }
    MDB_envinfo info;
    mdb_env_info(cs->env, &info);
    cs->map_size = info.me_mapsize;
    return 0;
}

static int read_meta(code_store *cs, const char *file, int *found, asvr_error *err) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(cs->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(err, rc, file, "starting a read transaction");
    *found = 0;
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn, "meta", 0, &dbi);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return 0;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_fail(err, rc, file, "opening the meta database");
    }
    MDB_val k = {4, "meta"}, v;
    rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0) {
        if (code_store_meta_from_json(v.mv_data, v.mv_size, &cs->meta, err) < 0) {
            mdb_txn_abort(txn);
            return asvr_err_prefix(err, "'%s'", file);
        }
        *found = 1;
        MDB_dbi cdbi;
        if (mdb_dbi_open(txn, "codes", 0, &cdbi) == 0) {
            MDB_stat st;
            mdb_stat(txn, cdbi, &st);
            cs->count = (int64_t)st.ms_entries;
        }
    }
    mdb_txn_abort(txn);
    return 0;
}

static int open_dbis(code_store *cs, const char *file, asvr_error *err) {
    MDB_txn *txn;
    unsigned flags = cs->writable ? MDB_CREATE : 0;
    int rc = mdb_txn_begin(cs->env, NULL, cs->writable ? 0 : MDB_RDONLY, &txn);
    if (rc) return mdb_fail(err, rc, file, "starting a transaction");
    if ((rc = mdb_dbi_open(txn, "meta", flags, &cs->meta_dbi)) ||
        (rc = mdb_dbi_open(txn, "codes", flags, &cs->codes_dbi))) {
        mdb_txn_abort(txn);
        return mdb_fail(err, rc, file, "opening the databases");
    }
    rc = mdb_txn_commit(txn);
    if (rc) return mdb_fail(err, rc, file, "committing");
    return 0;
}

static char *partial_path(const char *path) {
    size_t n = strlen(path) + 16;
    char *p = asvr_malloc(n, "a path");
    snprintf(p, n, "%s.partial", path);
    return p;
}

static void lock_path(char *buf, size_t n, const char *file) { snprintf(buf, n, "%s-lock", file); }

/* The meta record and the record count of a reader, checked against each other and the file. */
static int reader_open(code_store *cs, const char *path, asvr_error *err) {
    if (lmdb_open(path, &cs->rd, err) < 0) return asvr_err_prefix(err, "code store");
    int r = lmdb_find_db(cs->rd, "meta", &cs->rd_meta, err);
    if (r < 0) return -1;
    if (r == 1) return asvr_err_set(err, "'%s' has no meta database: not a code store", path);
    const void *v;
    size_t vl;
    r = lmdb_get(cs->rd, &cs->rd_meta, "meta", 4, &v, &vl, err);
    if (r < 0) return -1;
    if (r == 1) return asvr_err_set(err, "'%s' has no meta record: not a code store", path);
    if (vl > 65536) return asvr_err_set(err, "'%s': the meta record is %zu bytes: damaged", path, vl);
    if (code_store_meta_from_json(v, vl, &cs->meta, err) < 0) return asvr_err_prefix(err, "'%s'", path);
    r = lmdb_find_db(cs->rd, "codes", &cs->rd_codes, err);
    if (r < 0) return -1;
    if (r == 1) memset(&cs->rd_codes, 0, sizeof cs->rd_codes), cs->rd_codes.root = UINT64_MAX;
    cs->count = (int64_t)cs->rd_codes.entries;
    /* every record has the same size uncompressed: its overflow pages follow from the count */
    uint64_t psize = lmdb_page_size(cs->rd), rec = REC_HEADER + REC_TRAILER + 2ull * (uint64_t)cs->meta.positions *
                                                                             (uint64_t)cs->meta.depth;
    uint64_t per = (15 + rec) / psize + 1; /* OVPAGES: what a record takes when it does not fit a leaf */
    if (!cs->meta.compression && cs->rd_codes.overflow_pages > cs->rd_codes.entries * per)
        return asvr_err_set(err, "'%s': %llu records cannot fill %llu overflow pages: the store is damaged", path,
                            (unsigned long long)cs->rd_codes.entries,
                            (unsigned long long)cs->rd_codes.overflow_pages);
    return 0;
}

int code_store_open(const char *path, code_store **out, asvr_error *err) {
    *out = NULL;
    if (!asvr_path_exists(path)) {
        char *pp = partial_path(path);
        int partial = asvr_path_exists(pp);
        free(pp);
        if (partial)
            return asvr_err_set(err, "'%s' is not finished ('%s.partial' exists): rerun asvr-tokenize encode to complete it", path, path);
        return asvr_err_set(err, "code store '%s' does not exist", path);
    }
    code_store *cs = asvr_calloc(1, sizeof *cs, "a code store");
    cs->path = asvr_strdup(path);
    cs->open_path = asvr_strdup(path);
    if (reader_open(cs, path, err) < 0) {
        code_store_close(cs);
        return -1;
    }
    *out = cs;
    return 0;
}

/* meta_diff, but with allow_mix a backend difference alone does not count. */
static int diff_mix(const code_store_meta *store, const code_store_meta *run, int allow_mix, char *why, size_t n) {
    code_store_meta r = *run;
    if (allow_mix) snprintf(r.backend, sizeof r.backend, "%s", store->backend);
    return code_store_meta_diff(store, &r, why, n);
}

int code_store_open_writer(const char *path, const code_store_meta *meta, size_t initial_map_bytes,
                           code_store **out, asvr_error *err) {
    return code_store_open_writer_ex(path, meta, initial_map_bytes, 0, out, err);
}

int code_store_open_writer_ex(const char *path, const code_store_meta *meta, size_t initial_map_bytes,
                              int allow_mix, code_store **out, asvr_error *err) {
    *out = NULL;
    char *pp = partial_path(path);
    int in_place = 0;
    if (asvr_path_exists(path) && !asvr_path_exists(pp)) {
        /* A finished store: check it is compatible, then append to it in place. Each batch is one
         * LMDB transaction, so whatever happens to this run the store stays finished and readable:
         * its old records plus every batch committed before the failure. */
        code_store *fin;
        if (code_store_open(path, &fin, err) < 0) {
            free(pp);
            return -1;
        }
        char why[512];
        if (diff_mix(&fin->meta, meta, allow_mix, why, sizeof why)) {
            code_store_close(fin);
            free(pp);
            return asvr_err_set(err, "'%s' was made differently, refusing to mix: %s. Write to a new store", path, why);
        }
        code_store_close(fin);
        free(pp);
        pp = asvr_strdup(path);
        in_place = 1;
    }
    code_store *cs = asvr_calloc(1, sizeof *cs, "a code store");
    cs->path = asvr_strdup(path);
    cs->open_path = pp;
    cs->writable = 1;
    cs->in_place = in_place;
    int found = 0, rewrite = 0;
    if (env_open(cs, pp, 1, initial_map_bytes ? initial_map_bytes : ((size_t)1 << 30), err) < 0 ||
        read_meta(cs, pp, &found, err) < 0) {
        code_store_close(cs);
        return -1;
    }
    if (found) {
        char why[512];
        if (diff_mix(&cs->meta, meta, allow_mix, why, sizeof why)) {
            code_store_close(cs);
            if (in_place) return asvr_err_set(err, "'%s' was made differently, refusing to mix: %s. Write to a new store", path, why);
            return asvr_err_set(err, "'%s.partial' was started differently, refusing to mix: %s. Delete it or write to a new store", path, why);
        }
        if (strcmp(cs->meta.backend, meta->backend) != 0) { /* allowed: the store is mixed from now on */
            snprintf(cs->meta.backend, sizeof cs->meta.backend, "mixed");
            rewrite = 1;
        }
    } else {
        cs->meta = *meta;
        cs->meta.format_version = CODE_STORE_FORMAT_VERSION;
        if (!cs->meta.input_size) cs->meta.input_size = cs->meta.image_size; /* what a reader of it sees */
        if (!cs->meta.downsample[0]) snprintf(cs->meta.downsample, sizeof cs->meta.downsample, "none");
    }
    if (open_dbis(cs, pp, err) < 0) {
        code_store_close(cs);
        return -1;
    }
    if (!found || rewrite) {
        char *js = code_store_meta_to_json(&cs->meta);
        MDB_txn *txn;
        int rc = mdb_txn_begin(cs->env, NULL, 0, &txn);
        if (!rc) {
            MDB_val k = {4, "meta"}, v = {strlen(js), js};
            rc = mdb_put(txn, cs->meta_dbi, &k, &v, 0);
            if (rc) mdb_txn_abort(txn);
            else rc = mdb_txn_commit(txn);
        }
        free(js);
        if (rc) {
            mdb_fail(err, rc, pp, "writing the meta record");
            code_store_close(cs);
            return -1;
        }
    }
    *out = cs;
    return 0;
}

void code_store_close(code_store *cs) {
    if (!cs) return;
    if (cs->env) mdb_env_close(cs->env);
    lmdb_close(cs->rd);
    free(cs->path);
    free(cs->open_path);
    free(cs);
}

int code_store_finish(code_store *cs, asvr_error *err) {
    int rc = mdb_env_sync(cs->env, 1);
    if (rc) {
        mdb_fail(err, rc, cs->open_path, "syncing");
        code_store_close(cs);
        return -1;
    }
    mdb_env_close(cs->env);
    cs->env = NULL;
    char lock[4096];
    lock_path(lock, sizeof lock, cs->open_path);
    int ret = 0;
    if (cs->in_place) {
        unlink(lock);
    } else if (rename(cs->open_path, cs->path) != 0) {
        ret = asvr_err_set(err, "renaming '%s' to '%s': %s", cs->open_path, cs->path, strerror(errno));
    } else {
        unlink(lock);
        char *dir = asvr_path_dirname(cs->path);
        ret = asvr_fsync_dir(dir, err);
        free(dir);
    }
    code_store_close(cs);
    return ret;
}

void code_store_discard(code_store *cs) {
    if (!cs) return;
    if (cs->env) mdb_env_close(cs->env);
    cs->env = NULL;
    if (cs->writable) {
        char lock[4096];
        lock_path(lock, sizeof lock, cs->open_path);
        if (!cs->in_place) unlink(cs->open_path); /* a finished store is never deleted */
        unlink(lock);
    }
    code_store_close(cs);
}

const code_store_meta *code_store_get_meta(const code_store *cs) { return &cs->meta; }
int64_t code_store_count(const code_store *cs) { return cs->count; }

int code_store_has(code_store *cs, const char *key) {
    if (cs->rd) {
        const void *v;
        size_t vl;
        asvr_error err;
        int rc = lmdb_get(cs->rd, &cs->rd_codes, key, strlen(key), &v, &vl, &err);
        if (rc < 0)
            ASVR_FATAL("the store is damaged: `asvr-tokenize verify` lists what is wrong; rebuild it", "looking up '%s' in the code store: %s",
                       key, err.msg);
        return rc == 0;
    }
    MDB_txn *txn;
    if (mdb_txn_begin(cs->env, NULL, MDB_RDONLY, &txn)) return 0;
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, cs->codes_dbi, &k, &v);
    mdb_txn_abort(txn);
    return rc == 0;
}

int code_store_put_batch(code_store *cs, int n, const char *const *keys, const uint16_t *const *codes,
                         asvr_error *err) {
    if (!cs->writable) return asvr_err_set(err, "'%s' is open read-only", cs->open_path);
    size_t *sizes = asvr_malloc(sizeof(size_t) * (size_t)(n ? n : 1), "record sizes");
    uint8_t **recs = asvr_malloc(sizeof(uint8_t *) * (size_t)(n ? n : 1), "records");
    for (int i = 0; i < n; i++)
        recs[i] = code_record_encode(codes[i], cs->meta.positions, cs->meta.depth, cs->meta.compression, &sizes[i]);
    int ret = 0;
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(cs->env, NULL, 0, &txn);
        if (rc) {
            ret = mdb_fail(err, rc, cs->open_path, "starting a write transaction");
            break;
        }
        int64_t added = 0;
        for (int i = 0; i < n && !rc; i++) {
            size_t kl = strlen(keys[i]);
            if (kl == 0 || kl > 511) {
                mdb_txn_abort(txn);
                ret = asvr_err_set(err, "key '%.80s' has length %zu; keys must be 1..511 bytes", keys[i], kl);
                goto done;
            }
            MDB_val k = {kl, (void *)keys[i]}, v = {sizes[i], recs[i]};
            rc = mdb_put(txn, cs->codes_dbi, &k, &v, MDB_NOOVERWRITE);
            if (rc == MDB_KEYEXIST) rc = 0; /* same key, same tokenizer: the stored codes stand */
            else if (rc == 0) added++;
        }
        if (!rc) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
        if (rc == MDB_MAP_FULL) {
            size_t grow = cs->map_size * 2;
            LOG_DEBUG("code store '%s': map full at %zu MiB, growing to %zu MiB", cs->open_path,
                      cs->map_size >> 20, grow >> 20);
            rc = mdb_env_set_mapsize(cs->env, grow);
            if (rc) {
                ret = mdb_fail(err, rc, cs->open_path, "growing the map");
                break;
            }
            cs->map_size = grow;
            continue;
        }
        if (rc) {
            ret = mdb_fail(err, rc, cs->open_path, "writing a batch of records");
            break;
        }
        cs->count += added;
        break;
    }
done:
    for (int i = 0; i < n; i++) free(recs[i]);
    free(recs);
    free(sizes);
    return ret;
}

int code_store_get(code_store *cs, const char *key, uint16_t *codes, asvr_error *err) {
    if (cs->rd) {
        const void *v;
        size_t vl;
        int rc = lmdb_get(cs->rd, &cs->rd_codes, key, strlen(key), &v, &vl, err);
        if (rc) return rc;
        if (code_record_decode(v, vl, &cs->meta, codes, err) < 0)
            return asvr_err_prefix(err, "'%s': record '%s'", cs->open_path, key);
        return 0;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(cs->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(err, rc, cs->open_path, "starting a read transaction");
    MDB_val k = {strlen(key), (void *)key}, v;
    rc = mdb_get(txn, cs->codes_dbi, &k, &v);
    int ret;
    if (rc == MDB_NOTFOUND) ret = 1;
    else if (rc) ret = mdb_fail(err, rc, cs->open_path, "reading a record");
    else {
        ret = code_record_decode(v.mv_data, v.mv_size, &cs->meta, codes, err);
        if (ret < 0) asvr_err_prefix(err, "'%s': record '%s'", cs->open_path, key);
    }
    mdb_txn_abort(txn);
    return ret;
}

typedef struct visit_adapter {
    code_store_visit_fn fn;
    void *ctx;
} visit_adapter;

static int adapt_visit(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    visit_adapter *a = ctx;
    return a->fn(a->ctx, key, klen, val, vlen);
}

int code_store_foreach(code_store *cs, code_store_visit_fn fn, void *ctx, asvr_error *err) {
    if (cs->rd) {
        visit_adapter a = {fn, ctx};
        return lmdb_foreach(cs->rd, &cs->rd_codes, adapt_visit, &a, err);
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(cs->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(err, rc, cs->open_path, "starting a read transaction");
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, cs->codes_dbi, &cur);
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_fail(err, rc, cs->open_path, "opening a cursor");
    }
    MDB_val k, v;
    int ret = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ret = fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        if (ret) break;
    }
    if (rc && rc != MDB_NOTFOUND) ret = mdb_fail(err, rc, cs->open_path, "iterating");
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return ret;
}

/* The structural check of the whole file and every record (asvr-tokenize verify). */
typedef struct verify_adapter {
    code_store *cs;
    code_store_problem_fn fn;
    void *ctx;
    int64_t bad_records, ok_records;
} verify_adapter;

static void verify_report(void *ctx, const void *key, size_t klen, const char *what) {
    verify_adapter *a = ctx;
    a->fn(a->ctx, key, klen, what);
}

static int verify_record(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    verify_adapter *a = ctx;
    asvr_error e;
    if (code_record_decode(val, vlen, &a->cs->meta, NULL, &e) < 0) {
        a->bad_records++;
        a->fn(a->ctx, key, klen, e.msg);
    } else {
        a->ok_records++;
    }
    return 0;
}

static int verify_record_c(void *ctx, const char *key, size_t klen, const void *val, size_t vlen) {
    return verify_record(ctx, key, klen, val, vlen);
}

int64_t code_store_verify(code_store *cs, code_store_problem_fn fn, void *ctx, int64_t *ok_records) {
    verify_adapter a = {cs, fn, ctx, 0, 0};
    int64_t n;
    if (cs->rd) {
        lmdb_check_opts o = {1, verify_report, &a, "codes", verify_record, &a};
        n = lmdb_check(cs->rd, &o) + a.bad_records;
    } else {
        asvr_error err;
        n = code_store_foreach(cs, verify_record_c, &a, &err) < 0 ? (fn(ctx, NULL, 0, err.msg), 1) : 0;
        n += a.bad_records;
    }
    if (ok_records) *ok_records = a.ok_records;
    return n;
}

/* ---- provenance records and merging ----------------------------------------------------------- */

const char *code_store_path(const code_store *cs) { return cs->open_path; }

int code_store_get_info(code_store *cs, const char *name, char **json, asvr_error *err) {
    *json = NULL;
    if (strcmp(name, "meta") == 0) return asvr_err_set(err, "'meta' is the meta record, not a provenance record");
    if (cs->rd) {
        const void *v;
        size_t vl;
        int r = lmdb_get(cs->rd, &cs->rd_meta, name, strlen(name), &v, &vl, err);
        if (r) return r;
        char *s = asvr_malloc(vl + 1, "a provenance record");
        memcpy(s, v, vl);
        s[vl] = 0;
        *json = s;
        return 0;
    }
    MDB_txn *txn;
    int rc = mdb_txn_begin(cs->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(err, rc, cs->open_path, "starting a read transaction");
    MDB_val k = {strlen(name), (void *)name}, v;
    rc = mdb_get(txn, cs->meta_dbi, &k, &v);
    int ret = 1;
    if (rc == 0) {
        char *s = asvr_malloc(v.mv_size + 1, "a provenance record");
        memcpy(s, v.mv_data, v.mv_size);
        s[v.mv_size] = 0;
        *json = s;
        ret = 0;
    } else if (rc != MDB_NOTFOUND) {
        ret = mdb_fail(err, rc, cs->open_path, "reading a provenance record");
    }
    mdb_txn_abort(txn);
    return ret;
}

int code_store_put_info(code_store *cs, const char *name, const char *json, asvr_error *err) {
    if (!cs->writable) return asvr_err_set(err, "'%s' is open read-only", cs->open_path);
    if (strcmp(name, "meta") == 0) return asvr_err_set(err, "'meta' is the meta record, not a provenance record");
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(cs->env, NULL, 0, &txn);
        if (rc) return mdb_fail(err, rc, cs->open_path, "starting a write transaction");
        MDB_val k = {strlen(name), (void *)name}, v = {strlen(json), (void *)json};
        rc = mdb_put(txn, cs->meta_dbi, &k, &v, 0);
        if (rc) mdb_txn_abort(txn);
        else rc = mdb_txn_commit(txn);
        if (rc == MDB_MAP_FULL) {
            if ((rc = mdb_env_set_mapsize(cs->env, cs->map_size * 2))) return mdb_fail(err, rc, cs->open_path, "growing the map");
            cs->map_size *= 2;
            continue;
        }
        if (rc) return mdb_fail(err, rc, cs->open_path, "writing a provenance record");
        return 0;
    }
}

#define ADD_BATCH 256

/* One transaction: the n records (key/value pointers into src's open read transaction) into cs.
 * 0 ok, MDB_MAP_FULL to grow and retry, -1 with err (and *conflict on different codes). */
static int add_batch(code_store *cs, code_store *src, const MDB_val *keys, const MDB_val *vals, int n, uint16_t *a,
                     uint16_t *b, int64_t *added, int64_t *skipped, char **conflict, asvr_error *err) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(cs->env, NULL, 0, &txn);
    if (rc) return mdb_fail(err, rc, cs->open_path, "starting a write transaction");
    int64_t add = 0, skip = 0;
    for (int i = 0; i < n; i++) {
        MDB_val k = keys[i], have;
        rc = mdb_get(txn, cs->codes_dbi, &k, &have);
        if (rc == 0) {
            asvr_error e2;
            if (code_record_decode(have.mv_data, have.mv_size, &cs->meta, a, &e2) < 0) {
                mdb_txn_abort(txn);
                return asvr_err_set(err, "'%s': record '%.*s': %s", cs->open_path, (int)k.mv_size, (const char *)k.mv_data,
                                    e2.msg);
            }
            code_record_decode(vals[i].mv_data, vals[i].mv_size, &src->meta, b, &e2); /* checked by the caller */
            size_t per = (size_t)cs->meta.positions * (size_t)cs->meta.depth;
            if (memcmp(a, b, per * sizeof *a) != 0) {
                size_t diff = 0;
                while (diff < per && a[diff] == b[diff]) diff++;
                mdb_txn_abort(txn);
                char *key = asvr_malloc(k.mv_size + 1, "a key");
                memcpy(key, k.mv_data, k.mv_size);
                key[k.mv_size] = 0;
                *conflict = key;
                return asvr_err_set(err, "key '%s' is in '%s' with other codes than already merged (first at position "
                                         "%zu, depth %zu: %u vs %u)",
                                    key, src->open_path, diff / (size_t)cs->meta.depth, diff % (size_t)cs->meta.depth,
                                    (unsigned)b[diff], (unsigned)a[diff]);
            }
            skip++;
            continue;
        }
        if (rc != MDB_NOTFOUND) break;
        MDB_val v = vals[i];
        rc = mdb_put(txn, cs->codes_dbi, &k, &v, MDB_NOOVERWRITE);
        if (rc) break;
        add++;
    }
    if (rc && rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
    } else {
        rc = mdb_txn_commit(txn);
    }
    if (rc == MDB_MAP_FULL) return MDB_MAP_FULL;
    if (rc) return mdb_fail(err, rc, cs->open_path, "writing merged records");
    *added += add;
    *skipped += skip;
    cs->count += add;
    return 0;
}

typedef struct add_ctx {
    code_store *cs, *src;
    MDB_val keys[ADD_BATCH], vals[ADD_BATCH];
    int n;
    uint16_t *a, *b;
    int64_t *added, *skipped;
    char **conflict;
    asvr_error *err;
    int failed;
} add_ctx;

/* Writes the collected batch (growing the map as needed). */
static int add_flush(add_ctx *c) {
    code_store *cs = c->cs;
    for (;;) {
        int r = add_batch(cs, c->src, c->keys, c->vals, c->n, c->a, c->b, c->added, c->skipped, c->conflict, c->err);
        if (r != MDB_MAP_FULL) {
            c->n = 0;
            return r < 0 ? -1 : 0;
        }
        size_t grow = cs->map_size * 2;
        LOG_DEBUG("code store '%s': map full at %zu MiB, growing to %zu MiB", cs->open_path, cs->map_size >> 20,
                  grow >> 20);
        if ((r = mdb_env_set_mapsize(cs->env, grow))) return mdb_fail(c->err, r, cs->open_path, "growing the map");
        cs->map_size = grow;
    }
}

/* The records stay valid while src is open (they point into its mapping), so a batch is only pointers. */
static int add_visit(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    add_ctx *c = ctx;
    asvr_error e2;
    if (code_record_decode(val, vlen, &c->src->meta, NULL, &e2) < 0) {
        asvr_err_set(c->err, "'%s': record '%.*s': %s (asvr-tokenize verify lists every corrupt record)",
                     c->src->open_path, (int)klen, (const char *)key, e2.msg);
        c->failed = 1;
        return -2;
    }
    c->keys[c->n] = (MDB_val){klen, (void *)key};
    c->vals[c->n] = (MDB_val){vlen, (void *)val};
    if (++c->n == ADD_BATCH && add_flush(c) < 0) {
        c->failed = 1;
        return -2;
    }
    return 0;
}

int code_store_add_from(code_store *cs, code_store *src, int64_t *added, int64_t *skipped, char **conflict,
                        asvr_error *err) {
    *conflict = NULL;
    if (!cs->writable) return asvr_err_set(err, "'%s' is open read-only", cs->open_path);
    if (!src->rd) return asvr_err_set(err, "'%s' must be open read-only to merge from it", src->open_path);
    if (src->meta.positions != cs->meta.positions || src->meta.depth != cs->meta.depth)
        return asvr_err_set(err, "'%s' holds %dx%d codes, '%s' %dx%d", src->open_path, src->meta.positions,
                            src->meta.depth, cs->open_path, cs->meta.positions, cs->meta.depth);
    size_t per = (size_t)cs->meta.positions * (size_t)cs->meta.depth;
    add_ctx *c = asvr_calloc(1, sizeof *c, "a merge batch");
    c->cs = cs, c->src = src, c->added = added, c->skipped = skipped, c->conflict = conflict, c->err = err;
    c->a = asvr_malloc(per * sizeof *c->a, "a code record");
    c->b = asvr_malloc(per * sizeof *c->b, "a code record");
    int rc = lmdb_foreach(src->rd, &src->rd_codes, add_visit, c, err);
    int ret = 0;
    if (rc == -1 || c->failed) ret = -1;
    else if (c->n > 0 && add_flush(c) < 0) ret = -1;
    free(c->a);
    free(c->b);
    free(c);
    return ret;
}
