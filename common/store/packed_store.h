/* packed_store.h — the packed store: tokenised samples and the packing plan (DESIGN.md §5).
 *
 * One file, little-endian, 64-bit offsets, validated on open:
 *   header (512 bytes): magic "ASVRPAK1", version, file size, counts, max_len, image positions,
 *     tokenizer, template and source-JSON fingerprints, template name, packing seed, six section descriptors
 *     {offset, bytes, xxh64}, and an xxh64 of the header itself;
 *   token data: blocks of `block_samples` samples, each block zstd-compressed when that pays
 *     (per sample: n_ids int32 ids, then n_ids label-mask bytes (1 = supervised));
 *   sample table: per sample {source index, id string, image key string, block, byte offset in the
 *     block, n_ids, positions, flags};
 *   block table: per block {file offset, stored bytes, raw bytes, xxh64 of the stored bytes, codec};
 *   row table + row samples: the packing plan, rows of <= max_len positions holding whole samples;
 *   strings: NUL-terminated ids and image keys.
 * Every table starts on an 8-byte boundary (zero padding between sections).
 * positions = the sample's length once its image placeholder becomes image_positions positions,
 * truncated to max_len. Reading a sample decompresses one block (kept in the reader's cache).
 * Not for: tokenising (text/) or deciding the order of rows in training (the trainer shuffles).
 */
#ifndef ASVR_STORE_PACKED_STORE_H
#define ASVR_STORE_PACKED_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PACKED_VERSION 1
#define PACKED_NO_STRING UINT64_MAX

enum {
    PACKED_HAS_IMAGE = 1u << 0,
    PACKED_MISMATCH = 1u << 1,  /* the reference's length check failed: all labels masked */
    PACKED_TRUNCATED = 1u << 2, /* cut to max_len */
    PACKED_IMAGE_IGNORED = 1u << 3, /* it had an image but no <image>: trained as text (the reference) */
    PACKED_UNK_DROPPED = 1u << 4,   /* ids equal to the pad id (<unk>) were dropped (LLaVA's collator) */
};

typedef struct packed_info {
    uint64_t n_samples, n_rows, n_blocks, n_tokens, n_supervised, n_positions;
    uint32_t max_len, image_positions, block_samples;
    int packed;                 /* 0: one sample per row (--no-packing) */
    uint64_t seed;
    char tokenizer_fp[17];
    char template_name[32];
    char template_fp[17];
    char source_fp[17];         /* xxh64 of the input JSON file's bytes */
    uint64_t file_bytes, token_raw_bytes, token_stored_bytes;
} packed_info;

typedef struct packed_sample {
    uint64_t source_index;      /* index in the input JSON array */
    const char *id;             /* the JSON "id" as text */
    const char *image_key;      /* NULL for text-only */
    uint32_t n_ids, positions, flags;
    const int32_t *ids;         /* valid until the next read with the same reader */
    const uint8_t *label_mask;  /* 1 = supervised */
} packed_sample;

typedef struct packed_row {
    uint32_t n_samples, positions;
    const uint32_t *samples;    /* sample indices, in row order */
} packed_row;

/* ---- writing ---- */
typedef struct packed_writer packed_writer;
typedef struct packed_writer_opts {
    uint32_t max_len, image_positions;
    uint32_t block_samples;     /* samples per block (default 64) */
    int compress;               /* zstd level > 0 compresses blocks (kept raw when it does not pay) */
    int packing;                /* 1 packs rows, 0 one sample per row */
    uint64_t seed;
    const char *tokenizer_fp, *template_name, *template_fp, *source_fp;
} packed_writer_opts;

/* Writes to "<path>.tmp.<pid>"; packed_writer_finish renames it to path. */
int packed_writer_open(const char *path, const packed_writer_opts *opts, packed_writer **out, asvr_error *err);
/* ids and mask have n_ids entries; image_key NULL for text-only. positions as defined above. */
int packed_writer_add(packed_writer *w, uint64_t source_index, const char *id, const char *image_key,
                      const int32_t *ids, const uint8_t *mask, uint32_t n_ids, uint32_t positions,
                      uint32_t flags, asvr_error *err);
/* Plans rows, writes the tables and the header, fsyncs and renames. Frees w. */
int packed_writer_finish(packed_writer *w, packed_info *info, asvr_error *err);
void packed_writer_abort(packed_writer *w);

/* The packing plan alone (exposed for tests): sizes[n] <= max_len; writes row_of[n] and returns the
 * number of rows. Best fit over samples in a seeded shuffled order, largest first. */
uint64_t packed_plan_rows(const uint32_t *sizes, uint64_t n, uint32_t max_len, uint64_t seed, int packing,
                          uint64_t *row_of);

/* ---- reading ---- */
typedef struct packed_store packed_store;
typedef struct packed_reader packed_reader; /* one per thread */

int packed_store_open(const char *path, packed_store **out, asvr_error *err);
void packed_store_close(packed_store *ps);
const packed_info *packed_store_info(const packed_store *ps);
packed_reader *packed_reader_new(const packed_store *ps);
void packed_reader_free(packed_reader *r);
int packed_read_sample(packed_reader *r, uint64_t i, packed_sample *out, asvr_error *err);
/* Sample i's table entry (index, id, image key, sizes, flags) without reading its block: ids and
 * label_mask are NULL. */
int packed_sample_meta(const packed_store *ps, uint64_t i, packed_sample *out, asvr_error *err);
int packed_read_row(const packed_store *ps, uint64_t i, packed_row *out, asvr_error *err);

#ifdef __cplusplus
}
#endif
#endif
