/* shards.h — the part of the image list an `encode --shard K/N` works on, and the "shard" record that
 * names it in the store (store/code_store.h), read back by `merge`.
 *
 * Split rule (base/shard.h): image i of the deduplicated list (first-occurrence order of the JSON's
 * "image" keys or of the list file's lines, as encode reads it) belongs to part i mod N. The record:
 *   {"count": N, "index": K, "list_fingerprint": "<xxh64 hex of the list: each key + NUL, in order>",
 *    "list_images": <images in the whole list>}
 * A part's store is "<out>.shard-K-of-N" (encode_part_out).
 * Not for: deciding what a store's codes are (the meta record does that).
 */
#ifndef ASVR_TOKENIZE_SHARDS_H
#define ASVR_TOKENIZE_SHARDS_H

#include <stddef.h>

#include "base/error.h"
#include "base/shard.h"
#include "image_list.h"
#include "store/code_store.h"

typedef struct shard_record {
    int index, count;
    long long list_images;
    char list_fingerprint[17];
} shard_record;

typedef struct encode_part {
    int sharded;      /* 0: the whole list, no record */
    shard_record rec; /* when sharded */
    char **keys;      /* the part's keys, in list order (pointers into the image list) */
    size_t n;
} encode_part;

/* The part of list that s selects (s NULL: all of it). Free with encode_part_free. */
void encode_part_select(encode_part *p, const image_list *list, const asvr_shard *s);
void encode_part_free(encode_part *p);
/* "<out>.shard-K-of-N" (malloc'd). */
char *encode_part_out(const char *out, const asvr_shard *s);

/* Checks that the store cs (at path, for messages) holds this part: its "shard" record equals the part's
 * (or both have none). A writer's store with no records and no record gets it written. 0 ok, -1 with
 * err ("refusing to mix" and what differs). */
int encode_part_check(code_store *cs, const char *path, const encode_part *p, int writable, asvr_error *err);

char *shard_record_json(const shard_record *r);
/* Parses a "shard" record; -1 with err when malformed. */
int shard_record_parse(const char *json, shard_record *r, asvr_error *err);
/* "part K of N of a list of M images (list xxxxxxxx)" into buf. */
void shard_record_describe(const shard_record *r, char *buf, size_t n);

#endif
