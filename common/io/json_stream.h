/* json_stream.h — reads the elements of a top-level JSON array one at a time, in bounded memory,
 * from a plain file or a zstd-compressed one (".zst", detected by magic), so a 1 GB LLaVA JSON
 * never has to be loaded whole. Each element comes back as parsed jansson JSON together with its
 * byte offset; a syntax error names the file, the element index and the offset. An element larger
 * than a bound (JSON_STREAM_MAX_ELEMENT unless set) is scanned past without being kept, and reported
 * as a malformed element. A named pipe is read as a stream.
 * json_read_path reads a small JSON file (a config, state.json) the same safe way: size-bounded,
 * never blocking on a pipe, errors naming the file, line and column.
 * Not for: general JSON streams of other shapes.
 */
#ifndef ASVR_IO_JSON_STREAM_H
#define ASVR_IO_JSON_STREAM_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct json_stream json_stream;

#define JSON_STREAM_MAX_ELEMENT ((size_t)64 << 20)

int json_stream_open(const char *path, json_stream **out, asvr_error *err);
/* The largest element kept (bytes); a larger one is skipped and returned as -1 by json_stream_next. */
void json_stream_set_max_element(json_stream *s, size_t bytes);
/* 1 with *elem (caller json_decref's it), 0 at the end of the array.
 * -1: a malformed element inside a well-delimited array; the stream stays usable and the next call
 *     continues with the following element.
 * -2: the stream itself is broken (I/O error, truncated file, corrupt zstd, not an array); stop. */
int json_stream_next(json_stream *s, json_t **elem, asvr_error *err);
uint64_t json_stream_index(const json_stream *s);     /* index of the element last returned */
uint64_t json_stream_bytes_read(const json_stream *s); /* uncompressed bytes consumed so far */
uint64_t json_stream_file_size(const json_stream *s);  /* on-disk size (for progress) */
uint64_t json_stream_file_pos(const json_stream *s);   /* on-disk bytes consumed (for progress) */
void json_stream_close(json_stream *s);

/* A whole JSON file of at most max_bytes: NULL with err (naming the file, line and column). */
json_t *json_read_path(const char *path, size_t max_bytes, asvr_error *err);

#ifdef __cplusplus
}
#endif
#endif
