#include "store/packed_store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "base/fsutil.h"
#include "base/hash.h"

#define HEADER_BYTES 512
#define N_SECTIONS 6
#define SAMPLE_BYTES 48
#define BLOCK_BYTES 40
#define ROW_BYTES 16
enum { SEC_TOKENS, SEC_SAMPLES, SEC_BLOCKS, SEC_ROWS, SEC_ROW_SAMPLES, SEC_STRINGS };
static const char *SECTION_NAMES[N_SECTIONS] = {"token data", "sample table", "block table",
                                                "row table", "row samples", "strings"};
static const char MAGIC[8] = {'A', 'S', 'V', 'R', 'P', 'A', 'K', '1'};

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | ((uint64_t)get_u32(p + 4) << 32); }

typedef struct section {
    uint64_t off, bytes, hash;
} section;

/* ---- packing plan ----------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct order_item {
    uint32_t size;
    uint64_t rank, index;
} order_item;

static int cmp_order(const void *a, const void *b) {
    const order_item *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

uint64_t packed_plan_rows(const uint32_t *sizes, uint64_t n, uint32_t max_len, uint64_t seed, int packing,
                          uint64_t *row_of) {
    if (!packing) {
        for (uint64_t i = 0; i < n; i++) row_of[i] = i;
        return n;
    }
    /* Seeded shuffle gives each sample a rank; ties in size keep that random order. */
    uint64_t *perm = asvr_malloc(sizeof(uint64_t) * (n ? n : 1), "packing order");
    for (uint64_t i = 0; i < n; i++) perm[i] = i;
    uint64_t s = seed;
    for (uint64_t i = n; i > 1; i--) {
        uint64_t j = splitmix64(&s) % i, t = perm[i - 1];
        perm[i - 1] = perm[j], perm[j] = t;
    }
    order_item *items = asvr_malloc(sizeof(order_item) * (n ? n : 1), "packing order");
    for (uint64_t r = 0; r < n; r++) items[r] = (order_item){sizes[perm[r]], r, perm[r]};
    free(perm);
    qsort(items, n, sizeof *items, cmp_order);

    /* Best fit: each remaining capacity 0..max_len keeps a stack of open rows; a bitmap of the
     * non-empty capacities finds the smallest one >= need in max_len/64 word tests. */
    uint32_t cap = max_len + 1, words = (cap + 63) / 64;
    uint64_t *nonempty = asvr_calloc(words, sizeof(uint64_t), "packing bitmap");
    int64_t *head = asvr_malloc(sizeof(int64_t) * cap, "packing buckets");
    for (uint32_t c = 0; c < cap; c++) head[c] = -1;
    int64_t *next = asvr_malloc(sizeof(int64_t) * (n ? n : 1), "packing buckets");
    uint64_t rows = 0;
    for (uint64_t t = 0; t < n; t++) {
        uint32_t need = items[t].size;
        int64_t found = -1;
        for (uint32_t wd = need / 64; wd < words && found < 0; wd++) {
            uint64_t bits = nonempty[wd];
            if (wd == need / 64) bits &= ~0ULL << (need % 64);
            if (bits) found = (int64_t)wd * 64 + __builtin_ctzll(bits);
        }
        uint64_t row;
        uint32_t left;
        if (found >= 0) {
            row = (uint64_t)head[found];
            head[found] = next[row];
            if (head[found] < 0) nonempty[found / 64] &= ~(1ULL << (found % 64));
            left = (uint32_t)found - need;
        } else {
            row = rows++;
            left = max_len - need;
        }
        next[row] = head[left];
        head[left] = (int64_t)row;
        nonempty[left / 64] |= 1ULL << (left % 64);
        row_of[items[t].index] = row;
    }
    free(nonempty);
    free(head);
    free(next);
    free(items);
    return rows;
}

/* ---- writer ----------------------------------------------------------------------------------- */

struct packed_writer {
    packed_writer_opts o;
    asvr_atomic_file f;
    uint64_t pos; /* file offset of the next byte */
    ZSTD_CCtx *zc;
    uint8_t *block;
    size_t block_n, block_cap;
    uint32_t block_count; /* samples in the current block */
    uint8_t *samples;
    uint64_t n_samples, samples_cap;
    uint8_t *blocks;
    uint64_t n_blocks, blocks_cap;
    char *strings;
    uint64_t strings_n, strings_cap;
    uint64_t n_tokens, n_supervised, n_positions, raw_bytes, stored_bytes;
    char tokenizer_fp[17], template_name[32], template_fp[17], source_fp[17];
};

static uint64_t add_string(packed_writer *w, const char *s) {
    if (!s) return PACKED_NO_STRING;
    size_t n = strlen(s) + 1;
    if (w->strings_n + n > w->strings_cap) {
        while (w->strings_n + n > w->strings_cap) w->strings_cap = w->strings_cap ? w->strings_cap * 2 : 4096;
        w->strings = asvr_realloc(w->strings, w->strings_cap, "packed store strings");
    }
    memcpy(w->strings + w->strings_n, s, n);
    uint64_t off = w->strings_n;
    w->strings_n += n;
    return off;
}

static int write_bytes(packed_writer *w, const void *p, size_t n, asvr_error *err) {
    if (n && fwrite(p, 1, n, w->f.fp) != n)
        return asvr_err_set(err, "writing '%s': %s", w->f.path, strerror(errno));
    w->pos += n;
    return 0;
}

static int flush_block(packed_writer *w, asvr_error *err) {
    if (w->block_count == 0) return 0;
    const void *out = w->block;
    size_t stored = w->block_n;
    uint32_t codec = 0;
    uint8_t *z = NULL;
    if (w->o.compress > 0) {
        size_t bound = ZSTD_compressBound(w->block_n);
        z = asvr_malloc(bound, "a compressed block");
        size_t r = ZSTD_compressCCtx(w->zc, z, bound, w->block, w->block_n, w->o.compress);
        CHECK_ZSTD(r, "compressing a packed store block");
        if (r < w->block_n) out = z, stored = r, codec = 1; /* keep it raw when zstd does not pay */
    }
    if (w->n_blocks == w->blocks_cap) {
        w->blocks_cap = w->blocks_cap ? w->blocks_cap * 2 : 256;
        w->blocks = asvr_realloc(w->blocks, w->blocks_cap * BLOCK_BYTES, "packed store block table");
    }
    uint8_t *b = w->blocks + w->n_blocks * BLOCK_BYTES;
    put_u64(b, w->pos);
    put_u64(b + 8, stored);
    put_u64(b + 16, w->block_n);
    put_u64(b + 24, asvr_xxh64(out, stored, 0));
    put_u32(b + 32, codec);
    put_u32(b + 36, w->block_count);
    int rc = write_bytes(w, out, stored, err);
    free(z);
    w->raw_bytes += w->block_n;
    w->stored_bytes += stored;
    w->n_blocks++;
    w->block_n = 0;
    w->block_count = 0;
    return rc;
}

int packed_writer_open(const char *path, const packed_writer_opts *opts, packed_writer **out, asvr_error *err) {
    *out = NULL;
    if (opts->max_len == 0 || opts->image_positions == 0)
        return asvr_err_set(err, "packed store '%s': max_len and image_positions must be > 0", path);
    packed_writer *w = asvr_calloc(1, sizeof *w, "a packed store writer");
    w->o = *opts;
    if (w->o.block_samples == 0) w->o.block_samples = 64;
    snprintf(w->tokenizer_fp, sizeof w->tokenizer_fp, "%s", opts->tokenizer_fp ? opts->tokenizer_fp : "");
    snprintf(w->template_name, sizeof w->template_name, "%s", opts->template_name ? opts->template_name : "");
    snprintf(w->template_fp, sizeof w->template_fp, "%s", opts->template_fp ? opts->template_fp : "");
    snprintf(w->source_fp, sizeof w->source_fp, "%s", opts->source_fp ? opts->source_fp : "");
    if (asvr_atomic_open(&w->f, path, err) < 0) {
        free(w);
        return -1;
    }
    w->zc = ZSTD_createCCtx();
    CHECK(w->zc != NULL, "out of memory", "creating a zstd context");
    uint8_t zero[HEADER_BYTES] = {0};
    if (write_bytes(w, zero, sizeof zero, err) < 0) {
        packed_writer_abort(w);
        return -1;
    }
    *out = w;
    return 0;
}

int packed_writer_add(packed_writer *w, uint64_t source_index, const char *id, const char *image_key,
                      const int32_t *ids, const uint8_t *mask, uint32_t n_ids, uint32_t positions,
                      uint32_t flags, asvr_error *err) {
    if (positions == 0 || positions > w->o.max_len)
        return asvr_err_set(err, "sample %llu: %u positions, outside 1..%u", (unsigned long long)source_index,
                            positions, w->o.max_len);
    size_t need = (size_t)n_ids * 5;
    if (w->block_n + need > w->block_cap) {
        while (w->block_n + need > w->block_cap) w->block_cap = w->block_cap ? w->block_cap * 2 : 1 << 16;
        w->block = asvr_realloc(w->block, w->block_cap, "a packed store block");
    }
    uint32_t offset = (uint32_t)w->block_n;
    uint8_t *p = w->block + w->block_n;
    for (uint32_t i = 0; i < n_ids; i++) put_u32(p + 4 * (size_t)i, (uint32_t)ids[i]);
    uint32_t sup = 0;
    for (uint32_t i = 0; i < n_ids; i++) {
        p[4 * (size_t)n_ids + i] = mask[i] ? 1 : 0;
        sup += mask[i] ? 1 : 0;
    }
    w->block_n += need;
    if (w->n_samples == w->samples_cap) {
        w->samples_cap = w->samples_cap ? w->samples_cap * 2 : 1024;
        w->samples = asvr_realloc(w->samples, w->samples_cap * SAMPLE_BYTES, "packed store sample table");
    }
    uint8_t *s = w->samples + w->n_samples * SAMPLE_BYTES;
    put_u64(s, source_index);
    put_u64(s + 8, add_string(w, id ? id : ""));
    put_u64(s + 16, add_string(w, image_key));
    put_u32(s + 24, (uint32_t)w->n_blocks);
    put_u32(s + 28, offset);
    put_u32(s + 32, n_ids);
    put_u32(s + 36, positions);
    put_u32(s + 40, flags | (image_key ? PACKED_HAS_IMAGE : 0));
    put_u32(s + 44, sup);
    w->n_samples++;
    w->n_tokens += n_ids;
    w->n_supervised += sup;
    w->n_positions += positions;
    if (++w->block_count >= w->o.block_samples) return flush_block(w, err);
    return 0;
}

void packed_writer_abort(packed_writer *w) {
    if (!w) return;
    asvr_atomic_abort(&w->f);
    ZSTD_freeCCtx(w->zc);
    free(w->block);
    free(w->samples);
    free(w->blocks);
    free(w->strings);
    free(w);
}

static int write_section(packed_writer *w, section *sec, const void *p, uint64_t n, asvr_error *err) {
    static const uint8_t zero[8] = {0};
    if (w->pos % 8 && write_bytes(w, zero, 8 - w->pos % 8, err) < 0) return -1; /* 8-byte aligned tables */
    sec->off = w->pos;
    sec->bytes = n;
    sec->hash = asvr_xxh64(p, n, 0);
    return write_bytes(w, p, n, err);
}

int packed_writer_finish(packed_writer *w, packed_info *info, asvr_error *err) {
    section sec[N_SECTIONS] = {{0}};
    if (flush_block(w, err) < 0) goto fail;
    sec[SEC_TOKENS].off = HEADER_BYTES;
    sec[SEC_TOKENS].bytes = w->pos - HEADER_BYTES;
    if (write_section(w, &sec[SEC_SAMPLES], w->samples, w->n_samples * SAMPLE_BYTES, err) < 0 ||
        write_section(w, &sec[SEC_BLOCKS], w->blocks, w->n_blocks * BLOCK_BYTES, err) < 0)
        goto fail;

    /* Packing plan. */
    uint64_t n = w->n_samples;
    uint32_t *sizes = asvr_malloc(sizeof(uint32_t) * (n ? n : 1), "sample sizes");
    for (uint64_t i = 0; i < n; i++) sizes[i] = get_u32(w->samples + i * SAMPLE_BYTES + 36);
    uint64_t *row_of = asvr_malloc(sizeof(uint64_t) * (n ? n : 1), "row assignment");
    uint64_t rows = packed_plan_rows(sizes, n, w->o.max_len, w->o.seed, w->o.packing, row_of);
    uint64_t *count = asvr_calloc(rows + 1, sizeof(uint64_t), "row counts");
    for (uint64_t i = 0; i < n; i++) count[row_of[i] + 1]++;
    for (uint64_t r = 0; r < rows; r++) count[r + 1] += count[r]; /* count[r] = first slot of row r */
    uint8_t *row_tab = asvr_calloc(rows ? rows : 1, ROW_BYTES, "row table");
    uint8_t *row_samples = asvr_malloc(4 * (n ? n : 1), "row samples");
    uint64_t *fill = asvr_calloc(rows ? rows : 1, sizeof(uint64_t), "row fill");
    uint32_t *row_pos = asvr_calloc(rows ? rows : 1, sizeof(uint32_t), "row positions");
    for (uint64_t i = 0; i < n; i++) { /* samples within a row in index order */
        uint64_t r = row_of[i];
        put_u32(row_samples + 4 * (count[r] + fill[r]++), (uint32_t)i);
        row_pos[r] += sizes[i];
    }
    for (uint64_t r = 0; r < rows; r++) {
        put_u64(row_tab + r * ROW_BYTES, count[r]);
        put_u32(row_tab + r * ROW_BYTES + 8, (uint32_t)fill[r]);
        put_u32(row_tab + r * ROW_BYTES + 12, row_pos[r]);
    }
    int rc = write_section(w, &sec[SEC_ROWS], row_tab, rows * ROW_BYTES, err);
    if (rc == 0) rc = write_section(w, &sec[SEC_ROW_SAMPLES], row_samples, n * 4, err);
    if (rc == 0) rc = write_section(w, &sec[SEC_STRINGS], w->strings ? w->strings : "", w->strings_n, err);
    free(sizes), free(row_of), free(count), free(row_tab), free(row_samples), free(fill), free(row_pos);
    if (rc < 0) goto fail;

    uint8_t h[HEADER_BYTES] = {0};
    memcpy(h, MAGIC, 8);
    put_u32(h + 8, PACKED_VERSION);
    put_u32(h + 12, HEADER_BYTES);
    put_u64(h + 16, w->pos);
    put_u64(h + 24, n);
    put_u64(h + 32, rows);
    put_u64(h + 40, w->n_blocks);
    put_u64(h + 48, w->n_tokens);
    put_u64(h + 56, w->n_supervised);
    put_u64(h + 64, w->n_positions);
    put_u32(h + 72, w->o.max_len);
    put_u32(h + 76, w->o.image_positions);
    put_u32(h + 80, w->o.block_samples);
    put_u32(h + 84, w->o.packing ? 1 : 0);
    put_u64(h + 88, w->o.seed);
    memcpy(h + 96, w->tokenizer_fp, 17);
    memcpy(h + 120, w->template_name, 32);
    memcpy(h + 152, w->template_fp, 17);
    put_u64(h + 176, w->raw_bytes);
    put_u64(h + 184, w->stored_bytes);
    for (int s = 0; s < N_SECTIONS; s++) {
        put_u64(h + 192 + 24 * s, sec[s].off);
        put_u64(h + 200 + 24 * s, sec[s].bytes);
        put_u64(h + 208 + 24 * s, sec[s].hash);
    }
    memcpy(h + 336, w->source_fp, 17);
    put_u64(h + 504, asvr_xxh64(h, 504, 0));
    if (fflush(w->f.fp) != 0 || fseek(w->f.fp, 0, SEEK_SET) != 0 || fwrite(h, 1, HEADER_BYTES, w->f.fp) != HEADER_BYTES) {
        asvr_err_set(err, "writing the header of '%s': %s", w->f.path, strerror(errno));
        goto fail;
    }
    if (info) {
        memset(info, 0, sizeof *info);
        info->n_samples = n, info->n_rows = rows, info->n_blocks = w->n_blocks;
        info->n_tokens = w->n_tokens, info->n_supervised = w->n_supervised, info->n_positions = w->n_positions;
        info->max_len = w->o.max_len, info->image_positions = w->o.image_positions;
        info->block_samples = w->o.block_samples, info->packed = w->o.packing ? 1 : 0, info->seed = w->o.seed;
        snprintf(info->tokenizer_fp, sizeof info->tokenizer_fp, "%s", w->tokenizer_fp);
        snprintf(info->template_name, sizeof info->template_name, "%s", w->template_name);
        snprintf(info->template_fp, sizeof info->template_fp, "%s", w->template_fp);
        snprintf(info->source_fp, sizeof info->source_fp, "%s", w->source_fp);
        info->file_bytes = w->pos, info->token_raw_bytes = w->raw_bytes, info->token_stored_bytes = w->stored_bytes;
    }
    rc = asvr_atomic_commit(&w->f, err);
    w->f.fp = NULL;
    ZSTD_freeCCtx(w->zc);
    free(w->block), free(w->samples), free(w->blocks), free(w->strings), free(w);
    return rc;
fail:
    packed_writer_abort(w);
    return -1;
}

/* ---- reader ----------------------------------------------------------------------------------- */

struct packed_store {
    asvr_mmap m;
    char *path;
    packed_info info;
    section sec[N_SECTIONS];
    const uint8_t *samples, *blocks, *rows, *row_samples;
    const char *strings;
};

struct packed_reader {
    const packed_store *ps;
    ZSTD_DCtx *zd;
    int64_t cached;
    uint8_t *buf;
    size_t cap;
    int32_t *ids;
    size_t ids_cap;
};

static int bad(packed_store *ps, asvr_error *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(packed_store *ps, asvr_error *err, const char *fmt, ...) {
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return asvr_err_set(err, "packed store '%s': %s; the file is truncated or corrupt, rebuild it with asvr-pack",
                        ps->path, m);
}

static int validate(packed_store *ps, asvr_error *err) {
    const uint8_t *h = ps->m.data;
    size_t size = ps->m.size;
    if (size < HEADER_BYTES) return bad(ps, err, "the file has %zu bytes, a header needs %d", size, HEADER_BYTES);
    if (memcmp(h, MAGIC, 8) != 0) return asvr_err_set(err, "'%s' is not a packed store (bad magic)", ps->path);
    if (get_u32(h + 8) != PACKED_VERSION)
        return asvr_err_set(err, "packed store '%s' has version %u; this build reads version %d", ps->path,
                            get_u32(h + 8), PACKED_VERSION);
    if (get_u64(h + 504) != asvr_xxh64(h, 504, 0)) return bad(ps, err, "header checksum mismatch");
    if (get_u64(h + 16) != size)
        return bad(ps, err, "the header says %llu bytes, the file has %zu", (unsigned long long)get_u64(h + 16), size);
    packed_info *I = &ps->info;
    I->n_samples = get_u64(h + 24), I->n_rows = get_u64(h + 32), I->n_blocks = get_u64(h + 40);
    I->n_tokens = get_u64(h + 48), I->n_supervised = get_u64(h + 56), I->n_positions = get_u64(h + 64);
    I->max_len = get_u32(h + 72), I->image_positions = get_u32(h + 76), I->block_samples = get_u32(h + 80);
    I->packed = (int)get_u32(h + 84), I->seed = get_u64(h + 88);
    memcpy(I->tokenizer_fp, h + 96, 16);
    memcpy(I->template_name, h + 120, 31);
    memcpy(I->template_fp, h + 152, 16);
    memcpy(I->source_fp, h + 336, 16);
    I->file_bytes = size, I->token_raw_bytes = get_u64(h + 176), I->token_stored_bytes = get_u64(h + 184);
    uint64_t want[N_SECTIONS] = {I->token_stored_bytes, I->n_samples * SAMPLE_BYTES, I->n_blocks * BLOCK_BYTES,
                                 I->n_rows * ROW_BYTES, I->n_samples * 4, 0};
    uint64_t prev_end = HEADER_BYTES;
    for (int s = 0; s < N_SECTIONS; s++) {
        section *c = &ps->sec[s];
        c->off = get_u64(h + 192 + 24 * s), c->bytes = get_u64(h + 200 + 24 * s), c->hash = get_u64(h + 208 + 24 * s);
        if (c->off < prev_end || c->off > size || c->bytes > size - c->off || (s != SEC_TOKENS && c->off % 8))
            return bad(ps, err, "%s at %llu+%llu lies outside the file or overlaps", SECTION_NAMES[s], (unsigned long long)c->off, (unsigned long long)c->bytes);
        if (s != SEC_STRINGS && c->bytes != want[s])
            return bad(ps, err, "%s has %llu bytes, the counts need %llu", SECTION_NAMES[s], (unsigned long long)c->bytes, (unsigned long long)want[s]);
        if (s != SEC_TOKENS && asvr_xxh64(h + c->off, c->bytes, 0) != c->hash)
            return bad(ps, err, "%s checksum mismatch", SECTION_NAMES[s]);
        prev_end = c->off + c->bytes;
    }
    ps->samples = h + ps->sec[SEC_SAMPLES].off;
    ps->blocks = h + ps->sec[SEC_BLOCKS].off;
    ps->rows = h + ps->sec[SEC_ROWS].off;
    ps->row_samples = h + ps->sec[SEC_ROW_SAMPLES].off;
    ps->strings = (const char *)h + ps->sec[SEC_STRINGS].off;
    uint64_t nstr = ps->sec[SEC_STRINGS].bytes;
    if (nstr && ps->strings[nstr - 1] != 0) return bad(ps, err, "strings are not NUL-terminated");
    for (uint64_t b = 0; b < I->n_blocks; b++) {
        const uint8_t *e = ps->blocks + b * BLOCK_BYTES;
        uint64_t off = get_u64(e), st = get_u64(e + 8), raw = get_u64(e + 16);
        if (off < ps->sec[SEC_TOKENS].off || st > ps->sec[SEC_TOKENS].off + ps->sec[SEC_TOKENS].bytes - off ||
            get_u32(e + 32) > 1)
            return bad(ps, err, "block table entry %llu is out of range", (unsigned long long)b);
        /* what a block decompresses to is allocated when it is read: bounded by what it can hold (5 bytes
         * per token of at most block_samples samples of max_len), and never over 1 GiB */
        uint64_t most = (uint64_t)I->block_samples * I->max_len * 5;
        if (raw > most || raw > ((uint64_t)1 << 30) || (get_u32(e + 32) == 0 && raw != st))
            return bad(ps, err, "block table entry %llu claims %llu bytes of tokens, more than a block of %u samples of "
                                "at most %u positions holds", (unsigned long long)b, (unsigned long long)raw,
                       I->block_samples, I->max_len);
    }
    for (uint64_t i = 0; i < I->n_samples; i++) {
        const uint8_t *e = ps->samples + i * SAMPLE_BYTES;
        uint64_t id = get_u64(e + 8), key = get_u64(e + 16);
        uint32_t blk = get_u32(e + 24), off = get_u32(e + 28), n = get_u32(e + 32), pos = get_u32(e + 36);
        if (id >= nstr || (key != PACKED_NO_STRING && key >= nstr) || blk >= I->n_blocks ||
            (uint64_t)off + (uint64_t)n * 5 > get_u64(ps->blocks + (uint64_t)blk * BLOCK_BYTES + 16) ||
            pos == 0 || pos > I->max_len)
            return bad(ps, err, "sample table entry %llu is out of range", (unsigned long long)i);
    }
    uint64_t total = 0;
    for (uint64_t r = 0; r < I->n_rows; r++) {
        const uint8_t *e = ps->rows + r * ROW_BYTES;
        uint64_t first = get_u64(e);
        uint32_t cnt = get_u32(e + 8), pos = get_u32(e + 12);
        if (first > I->n_samples || cnt > I->n_samples - first || pos > I->max_len)
            return bad(ps, err, "row table entry %llu is out of range", (unsigned long long)r);
        for (uint32_t k = 0; k < cnt; k++)
            if (get_u32(ps->row_samples + 4 * (first + k)) >= I->n_samples)
                return bad(ps, err, "row samples entry %llu names a missing sample", (unsigned long long)(first + k));
        total += cnt;
    }
    if (total != I->n_samples) return bad(ps, err, "rows hold %llu samples, the store has %llu", (unsigned long long)total, (unsigned long long)I->n_samples);
    return 0;
}

int packed_store_open(const char *path, packed_store **out, asvr_error *err) {
    *out = NULL;
    packed_store *ps = asvr_calloc(1, sizeof *ps, "a packed store");
    ps->path = asvr_strdup(path);
    if (asvr_mmap_open(&ps->m, path, err) < 0 || validate(ps, err) < 0) {
        packed_store_close(ps);
        return -1;
    }
    *out = ps;
    return 0;
}

void packed_store_close(packed_store *ps) {
    if (!ps) return;
    asvr_mmap_close(&ps->m);
    free(ps->path);
    free(ps);
}

const packed_info *packed_store_info(const packed_store *ps) { return &ps->info; }

packed_reader *packed_reader_new(const packed_store *ps) {
    packed_reader *r = asvr_calloc(1, sizeof *r, "a packed store reader");
    r->ps = ps;
    r->cached = -1;
    r->zd = ZSTD_createDCtx();
    CHECK(r->zd != NULL, "out of memory", "creating a zstd context");
    return r;
}

void packed_reader_free(packed_reader *r) {
    if (!r) return;
    ZSTD_freeDCtx(r->zd);
    free(r->buf);
    free(r->ids);
    free(r);
}

static int load_block(packed_reader *r, uint32_t b, asvr_error *err) {
    if (r->cached == (int64_t)b) return 0;
    const packed_store *ps = r->ps;
    const uint8_t *e = ps->blocks + (uint64_t)b * BLOCK_BYTES;
    uint64_t off = get_u64(e), stored = get_u64(e + 8), raw = get_u64(e + 16), hash = get_u64(e + 24);
    uint32_t codec = get_u32(e + 32);
    const uint8_t *src = ps->m.data + off;
    if (asvr_xxh64(src, stored, 0) != hash)
        return asvr_err_set(err, "packed store '%s': block %u checksum mismatch; the file is corrupt, rebuild it", ps->path, b);
    if (raw > r->cap) {
        r->buf = asvr_realloc(r->buf, raw, "a packed store block");
        r->cap = raw;
    }
    if (codec == 1) {
        size_t got = ZSTD_decompressDCtx(r->zd, r->buf, raw, src, stored);
        if (ZSTD_isError(got) || got != raw)
            return asvr_err_set(err, "packed store '%s': block %u does not decompress; the file is corrupt", ps->path, b);
    } else {
        if (stored != raw) return asvr_err_set(err, "packed store '%s': raw block %u has a wrong size", ps->path, b);
        memcpy(r->buf, src, raw);
    }
    r->cached = b;
    return 0;
}

int packed_read_sample(packed_reader *r, uint64_t i, packed_sample *out, asvr_error *err) {
    const packed_store *ps = r->ps;
    if (i >= ps->info.n_samples)
        return asvr_err_set(err, "packed store '%s': sample %llu out of range (it has %llu)", ps->path,
                            (unsigned long long)i, (unsigned long long)ps->info.n_samples);
    const uint8_t *e = ps->samples + i * SAMPLE_BYTES;
    uint32_t blk = get_u32(e + 24), off = get_u32(e + 28), n = get_u32(e + 32);
    if (load_block(r, blk, err) < 0) return -1;
    if (n > r->ids_cap) {
        r->ids = asvr_realloc(r->ids, sizeof(int32_t) * n, "sample ids");
        r->ids_cap = n;
    }
    const uint8_t *p = r->buf + off;
    for (uint32_t k = 0; k < n; k++) r->ids[k] = (int32_t)get_u32(p + 4 * (size_t)k);
    uint64_t key = get_u64(e + 16);
    out->source_index = get_u64(e);
    out->id = ps->strings + get_u64(e + 8);
    out->image_key = key == PACKED_NO_STRING ? NULL : ps->strings + key;
    out->n_ids = n;
    out->positions = get_u32(e + 36);
    out->flags = get_u32(e + 40);
    out->ids = r->ids;
    out->label_mask = p + 4 * (size_t)n;
    return 0;
}

int packed_sample_meta(const packed_store *ps, uint64_t i, packed_sample *out, asvr_error *err) {
    if (i >= ps->info.n_samples)
        return asvr_err_set(err, "packed store '%s': sample %llu out of range (it has %llu)", ps->path,
                            (unsigned long long)i, (unsigned long long)ps->info.n_samples);
    const uint8_t *e = ps->samples + i * SAMPLE_BYTES;
    uint64_t key = get_u64(e + 16);
    out->source_index = get_u64(e);
    out->id = ps->strings + get_u64(e + 8);
    out->image_key = key == PACKED_NO_STRING ? NULL : ps->strings + key;
    out->n_ids = get_u32(e + 32);
    out->positions = get_u32(e + 36);
    out->flags = get_u32(e + 40);
    out->ids = NULL;
    out->label_mask = NULL;
    return 0;
}

int packed_read_row(const packed_store *ps, uint64_t i, packed_row *out, asvr_error *err) {
    if (i >= ps->info.n_rows)
        return asvr_err_set(err, "packed store '%s': row %llu out of range (it has %llu)", ps->path,
                            (unsigned long long)i, (unsigned long long)ps->info.n_rows);
    const uint8_t *e = ps->rows + i * ROW_BYTES;
    out->n_samples = get_u32(e + 8);
    out->positions = get_u32(e + 12);
    out->samples = (const uint32_t *)(ps->row_samples + 4 * get_u64(e)); /* LE host assumed */
    return 0;
}
