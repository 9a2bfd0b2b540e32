#include "io/json_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "base/fsutil.h"

#define READ_CHUNK (1 << 20)

struct json_stream {
    FILE *fp;
    char *path;
    int zstd;
    ZSTD_DCtx *zd;
    uint8_t *zin;
    ZSTD_inBuffer zi;
    int file_eof;
    /* decoded bytes: buf[pos..len) not consumed yet */
    char *buf;
    size_t pos, len, cap;
    uint64_t consumed; /* bytes before buf[0] */
    uint64_t file_size, file_pos;
    int started, finished;
    uint64_t index, next_index;
    size_t max_element;
};

/* Appends more decoded bytes to buf; returns 0 at the end of the input, -1 on error. */
static int refill(json_stream *s, asvr_error *err) {
    if (s->pos > 0 && s->pos == s->len) { /* drop consumed bytes */
        s->consumed += s->pos;
        s->pos = s->len = 0;
    } else if (s->pos > (s->cap >> 1)) {
        memmove(s->buf, s->buf + s->pos, s->len - s->pos);
        s->consumed += s->pos;
        s->len -= s->pos;
        s->pos = 0;
    }
    if (s->cap - s->len < READ_CHUNK) {
        s->cap = s->cap ? s->cap * 2 : 2 * READ_CHUNK;
        while (s->cap - s->len < READ_CHUNK) s->cap *= 2;
        s->buf = asvr_realloc(s->buf, s->cap + 1, "the JSON read buffer");
    }
    if (!s->zstd) {
        size_t n = fread(s->buf + s->len, 1, s->cap - s->len, s->fp);
        if (n == 0 && ferror(s->fp)) return asvr_err_set(err, "reading '%s': %s", s->path, strerror(errno));
        s->len += n;
        s->file_pos += n;
        return n > 0;
    }
    for (;;) {
        if (s->zi.pos == s->zi.size && !s->file_eof) {
            size_t n = fread(s->zin, 1, READ_CHUNK, s->fp);
            if (n == 0 && ferror(s->fp)) return asvr_err_set(err, "reading '%s': %s", s->path, strerror(errno));
            if (n == 0) s->file_eof = 1;
            s->zi.src = s->zin, s->zi.size = n, s->zi.pos = 0;
            s->file_pos += n;
        }
        if (s->zi.pos == s->zi.size && s->file_eof) return 0;
        ZSTD_outBuffer zo = {s->buf + s->len, s->cap - s->len, 0};
        size_t r = ZSTD_decompressStream(s->zd, &zo, &s->zi);
        if (ZSTD_isError(r))
            return asvr_err_set(err, "'%s': zstd stream is corrupt: %s", s->path, ZSTD_getErrorName(r));
        s->len += zo.pos;
        if (zo.pos > 0) return 1;
    }
}

int json_stream_open(const char *path, json_stream **out, asvr_error *err) {
    *out = NULL;
    FILE *fp = asvr_fopen_input(path, err); /* a named pipe is read as a stream, never waited on at open */
    if (!fp) return -1;
    json_stream *s = asvr_calloc(1, sizeof *s, "a JSON stream");
    s->fp = fp;
    s->path = asvr_strdup(path);
    s->max_element = JSON_STREAM_MAX_ELEMENT;
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode)) s->file_size = (uint64_t)st.st_size;
    /* the first bytes say whether it is zstd; they are kept (a pipe cannot be rewound) */
    uint8_t magic[4] = {0};
    size_t m = fread(magic, 1, 4, fp);
    if (m < 4 && ferror(fp)) {
        int e = errno;
        json_stream_close(s);
        return asvr_err_set(err, "reading '%s': %s", path, strerror(e));
    }
    s->file_pos = m;
    if (m == 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD) {
        s->zstd = 1;
        s->zd = ZSTD_createDCtx();
        CHECK(s->zd != NULL, "out of memory", "creating a zstd context");
        s->zin = asvr_malloc(READ_CHUNK, "the zstd input buffer");
        memcpy(s->zin, magic, m);
        s->zi.src = s->zin, s->zi.size = m, s->zi.pos = 0;
    } else {
        s->cap = 2 * READ_CHUNK;
        s->buf = asvr_malloc(s->cap + 1, "the JSON read buffer");
        memcpy(s->buf, magic, m);
        s->len = m;
    }
    *out = s;
    return 0;
}

void json_stream_set_max_element(json_stream *s, size_t bytes) { s->max_element = bytes; }

void json_stream_close(json_stream *s) {
    if (!s) return;
    if (s->fp) fclose(s->fp);
    ZSTD_freeDCtx(s->zd);
    free(s->zin);
    free(s->buf);
    free(s->path);
    free(s);
}

uint64_t json_stream_index(const json_stream *s) { return s->index; }
uint64_t json_stream_bytes_read(const json_stream *s) { return s->consumed + s->pos; }
uint64_t json_stream_file_size(const json_stream *s) { return s->file_size; }
uint64_t json_stream_file_pos(const json_stream *s) { return s->file_pos; }

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Next non-whitespace byte (not consumed); -1 at end, -2 on error. */
static int peek(json_stream *s, asvr_error *err) {
    for (;;) {
        while (s->pos < s->len && is_ws(s->buf[s->pos])) s->pos++;
        if (s->pos < s->len) return (unsigned char)s->buf[s->pos];
        int r = refill(s, err);
        if (r < 0) return -2;
        if (r == 0) return -1;
    }
}

int json_stream_next(json_stream *s, json_t **elem, asvr_error *err) {
    *elem = NULL;
    if (s->finished) return 0;
    int c = peek(s, err);
    if (c == -2) return -2;
    if (!s->started) {
        if (c != '[') {
            s->finished = 1;
            asvr_err_set(err, "'%s': expected a JSON array at the top level (starts with '%c')", s->path,
                         c < 0 ? ' ' : c);
            return -2;
        }
        s->pos++;
        s->started = 1;
        c = peek(s, err);
        if (c == -2) return -2;
        if (c == ']') {
            s->finished = 1;
            return 0;
        }
    } else {
        if (c == ']') {
            s->finished = 1;
            return 0;
        }
        if (c != ',') {
            s->finished = 1;
            asvr_err_set(err, "'%s': expected ',' or ']' after element %llu (byte %llu)", s->path,
                         (unsigned long long)s->index, (unsigned long long)json_stream_bytes_read(s));
            return -2;
        }
        s->pos++;
        c = peek(s, err);
        if (c == -2) return -2;
    }
    if (c < 0) {
        s->finished = 1;
        asvr_err_set(err, "'%s': the array ends without ']' (truncated file?)", s->path);
        return -2;
    }
    /* Scan one element: track nesting and strings until depth returns to 0 at a delimiter. */
    size_t start = s->pos, i = s->pos;
    int depth = 0, in_str = 0, esc = 0, skipping = 0;
    uint64_t offset = json_stream_bytes_read(s);
    for (;;) {
        if (i == s->len) {
            if (!skipping && i - start > s->max_element) skipping = 1;
            if (skipping) start = i; /* an element too large to keep: scanned to its end, not kept */
            size_t rel = i - start;
            s->pos = start;
            int r = refill(s, err);
            if (r < 0) return -2;
            start = s->pos;
            i = start + rel;
            if (r == 0) {
                s->finished = 1;
                asvr_err_set(err, "'%s': element %llu at byte %llu is cut off by the end of the file", s->path,
                             (unsigned long long)s->next_index, (unsigned long long)offset);
                return -2;
            }
            continue;
        }
        char ch = s->buf[i];
        if (in_str) {
            if (esc) esc = 0;
            else if (ch == '\\') esc = 1;
            else if (ch == '"') in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0) break; /* the closing ']' of the top-level array */
            depth--;
        } else if (ch == ',' && depth == 0) {
            break;
        }
        i++;
        if (depth == 0 && !in_str && (s->buf[i - 1] == '}' || s->buf[i - 1] == ']')) break;
    }
    s->index = s->next_index++;
    if (skipping || i - start > s->max_element) {
        s->pos = i;
        return asvr_err_set(err, "'%s': element %llu at byte %llu is larger than %zu MiB; skipped (a damaged file, or "
                                 "not one sample per element?)",
                            s->path, (unsigned long long)s->index, (unsigned long long)offset, s->max_element >> 20);
    }
    json_error_t je;
    json_t *j = json_loadb(s->buf + start, i - start, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    s->pos = i;
    if (!j)
        return asvr_err_set(err, "'%s': element %llu at byte %llu is not valid JSON: %s (line %d col %d of the element)",
                            s->path, (unsigned long long)s->index, (unsigned long long)offset, je.text, je.line, je.column);
    *elem = j;
    return 1;
}

json_t *json_read_path(const char *path, size_t max_bytes, asvr_error *err) {
    uint8_t *data;
    size_t n;
    if (asvr_read_file_max(path, max_bytes, &data, &n, err) < 0) return NULL;
    json_error_t je;
    json_t *j = json_loadb((const char *)data, n, 0, &je);
    free(data);
    if (!j) asvr_err_set(err, "'%s' is not valid JSON: %s (line %d, column %d)", path, je.text, je.line, je.column);
    return j;
}
