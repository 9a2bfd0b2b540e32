/* code_store.h — the code store: an LMDB file of per-image tokenizer codes (DESIGN.md §5).
 *
 * One file (LMDB with MDB_NOSUBDIR) with two named databases:
 *   "meta":  key "meta" → JSON {format_version, tokenizer_fingerprint, tokenizer, policy, image_size,
 *            positions, depth, codebook_size, dtype, compression, backend, and for codes of images
 *            prepared at another size than the tokenizer's: input_size, downsample}
 *            input_size/downsample: written only when the images were prepared larger and downsampled
 *            (`encode --input-size 1152 --downsample bilinear`); absent, they read as image_size, "none".
 *            backend: what computed the codes ("cpu-f32", "cuda-bf16", "cuda-f32", or "mixed" after a
 *            forced append from another one); stores written before it existed lack the key and read
 *            as "cpu-f32" (the only backend there was).
 *            pad_color [R,G,B] (policy "pad" only) and exif (true): written only when they differ from
 *            127,127,127 and false, which is what stores without them were made with (every tokenizer
 *            file said 127, and EXIF is applied only on request).
 *   "codes": key = image path as written in the input → record:
 *            u32 magic 'ACR1' | u16 positions | u8 depth | u8 flags (bit 0: zstd) | u32 stored bytes |
 *            stored bytes (positions × depth uint16 little-endian, raw or zstd) | u64 xxh64 of all before
 *   "meta" may also hold provenance records beside "meta" (readers of the meta record never look at
 *   them, so such stores open in builds that predate them; the format version stays 1):
 *     "shard":  in a store written by `encode --shard K/N`: JSON {index, count, list_images,
 *               list_fingerprint} (which part of which deduplicated image list it holds)
 *     "merged": in a store written by `asvr-tokenize merge`: JSON {inputs: [{store, records, shard}]}
 * Writers build "<out>.partial" and code_store_finish() renames it to <out>; a killed run resumes from
 * the partial file (committed batches survive). Appending to a finished store writes into it in place,
 * one transaction per batch, so any failure leaves it finished: its old records plus whole batches.
 * The map grows on demand. Readers never use LMDB itself: they read the file through the checked
 * reader of lmdb_read.h (no lock file, so many training processes can share one store), and a damaged
 * store is an error naming it (and the key), never a signal. A writer checks the file's structure
 * (lmdb_check_file) before LMDB maps it.
 * Not for: deciding which images to encode (asvr-tokenize does that).
 */
#ifndef ASVR_STORE_CODE_STORE_H
#define ASVR_STORE_CODE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CODE_STORE_FORMAT_VERSION 1
#define CODE_RECORD_MAGIC 0x31524341u /* "ACR1" little-endian */

typedef struct code_store_meta {
    int format_version;
    char tokenizer_fingerprint[17]; /* xxh64 hex of the tokenizer file's config + tensors */
    char tokenizer[128];            /* a name for people (file name of the tokenizer) */
    char policy[16];                /* "pad" or "squash" */
    int image_size;                 /* S of the S×S input */
    int positions;                  /* 729 for SigLIP-SO400M/14@384 */
    int depth;                      /* D */
    int codebook_size;              /* K */
    int compression;                /* 0 raw, 1 zstd */
    char backend[16];               /* "cpu-f32", "cuda-bf16", "cuda-f32", "mixed" */
    int input_size;                 /* the side the images were prepared at before the tokenizer saw them:
                                       image_size, or larger with a downsampling rule (S2 targets: 1152) */
    char downsample[16];            /* "none" (input_size == image_size) or "bilinear" (torch-style, no
                                       antialias, from input_size to image_size) */
    uint8_t pad[3];                 /* the canvas colour of policy "pad" (127,127,127 with "squash") */
    int exif;                       /* 1: the EXIF orientation was applied before preprocessing */
} code_store_meta;

typedef struct code_store code_store;

/* Opens a finished store read-only (no lock file). Validates the meta record. */
int code_store_open(const char *path, code_store **out, asvr_error *err);
/* Opens (creating if absent) "<path>.partial" for writing. An existing partial or finished store must
 * have the same meta, else the call fails with a message naming the difference (different tokenizer,
 * policy, ...). A finished <path> (without a .partial) is appended to in place: it stays finished. */
int code_store_open_writer(const char *path, const code_store_meta *meta, size_t initial_map_bytes,
                           code_store **out, asvr_error *err);
/* The same; with allow_backend_mix, a store whose meta differs only in the backend is opened anyway
 * and its meta record says backend "mixed" from then on (asvr-tokenize encode --force). */
int code_store_open_writer_ex(const char *path, const code_store_meta *meta, size_t initial_map_bytes,
                              int allow_backend_mix, code_store **out, asvr_error *err);
/* Writer: syncs, closes, and renames "<path>.partial" to <path> (then removes the lock file; an
 * in-place append only syncs and closes).
 * cs is freed whatever the outcome. */
int code_store_finish(code_store *cs, asvr_error *err);
/* Writer: closes and deletes "<path>.partial" and its lock file (a merge that cannot succeed); a
 * finished store appended to in place is only closed. */
void code_store_discard(code_store *cs);
void code_store_close(code_store *cs);

const code_store_meta *code_store_get_meta(const code_store *cs);
int64_t code_store_count(const code_store *cs);
/* 1 when key is present, 0 when absent (a damaged store is a fatal error naming it and the key). */
int code_store_has(code_store *cs, const char *key);
/* Writes n records in one transaction (growing the map as needed). codes[i] has positions×depth. */
int code_store_put_batch(code_store *cs, int n, const char *const *keys, const uint16_t *const *codes,
                         asvr_error *err);
/* Reads and checks one record (magic, sizes, checksum, codes < K). 0 ok, 1 absent, -1 corrupt. */
int code_store_get(code_store *cs, const char *key, uint16_t *codes, asvr_error *err);

/* A provenance record of the meta database (see the top: "shard", "merged"): get puts its JSON text
 * (malloc'd, NUL-terminated) in *json and returns 0, or 1 when absent, -1 on a read error; put (a
 * writer only) stores or replaces it. */
int code_store_get_info(code_store *cs, const char *name, char **json, asvr_error *err);
int code_store_put_info(code_store *cs, const char *name, const char *json, asvr_error *err);

/* Merging: adds every record of src to the writer cs (the caller has checked that their meta agree),
 * a batch of records per transaction, growing the map as needed. Each record of src is checked with
 * code_record_decode first (a corrupt one fails naming src and the key). A key cs already holds with
 * the same codes is skipped and counted in *skipped; with different codes the call fails with
 * *conflict set to the key (malloc'd) and err saying so. *added counts the new records. */
int code_store_add_from(code_store *cs, code_store *src, int64_t *added, int64_t *skipped, char **conflict,
                        asvr_error *err);
/* The file a store is open from (the final path, or "<path>.partial" for a writer of a new store). */
const char *code_store_path(const code_store *cs);

/* Calls fn for every record in key order; stops at the first non-zero return and returns it.
 * value/size are the raw stored record (check it with code_record_decode). */
typedef int (*code_store_visit_fn)(void *ctx, const char *key, size_t key_len, const void *value,
                                   size_t size);
int code_store_foreach(code_store *cs, code_store_visit_fn fn, void *ctx, asvr_error *err);

/* The full check (asvr-tokenize verify): every page of the file (lmdb_read.h: lmdb_check, overflow
 * pages included) and every record (code_record_decode). Each problem goes to fn (key = the record's
 * key where one is concerned, else NULL). Returns the number of problems; *ok_records counts the
 * records that decoded. */
typedef void (*code_store_problem_fn)(void *ctx, const void *key, size_t klen, const char *problem);
int64_t code_store_verify(code_store *cs, code_store_problem_fn fn, void *ctx, int64_t *ok_records);

/* Record encoding, shared by the store and its tests. encode returns a malloc'd record. */
uint8_t *code_record_encode(const uint16_t *codes, int positions, int depth, int compress,
                            size_t *size);
int code_record_decode(const void *rec, size_t size, const code_store_meta *meta, uint16_t *codes,
                       asvr_error *err);

/* Meta <-> JSON text; meta_diff explains the first difference ("" when equal). */
char *code_store_meta_to_json(const code_store_meta *m);
int code_store_meta_from_json(const char *json, size_t n, code_store_meta *m, asvr_error *err);
int code_store_meta_diff(const code_store_meta *a, const code_store_meta *b, char *why, size_t n);
/* 1 when the meta record carries pad_color (policy pad with another colour than 127,127,127). */
int code_store_meta_pad_recorded(const code_store_meta *m);

#ifdef __cplusplus
}
#endif
#endif
