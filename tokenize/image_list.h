/* image_list.h — the images an asvr-tokenize command works on: the "image" keys of a LLaVA JSON or
 * the lines of a list file, deduplicated in first-occurrence order; and the --pad R,G,B parser.
 * Not for: reading or decoding the images (io/image.h), or anything another tool needs. */
#ifndef ASVR_TOKENIZE_IMAGE_LIST_H
#define ASVR_TOKENIZE_IMAGE_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct image_list {
    char **keys;
    size_t n, cap;
    size_t *slots; /* open addressing: index+1, 0 = empty */
    size_t nslots;
} image_list;

/* Appends the keys of a LLaVA JSON (.json/.json.zst; malformed samples are skipped with a warning)
 * or of a list file (one path per line, blank lines and '#' comments ignored). -1 with err when the
 * file cannot be read. */
int image_list_read_json(const char *path, image_list *k, asvr_error *err);
int image_list_read_file(const char *path, image_list *k, asvr_error *err);
void image_list_free(image_list *k);

/* "R,G,B" with values 0..255; -1 when malformed. */
int image_list_parse_rgb(const char *s, uint8_t out[3]);

#endif
