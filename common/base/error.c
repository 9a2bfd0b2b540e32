#include "base/error.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <zstd.h>

int asvr_err_set(asvr_error *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int asvr_err_prefix(asvr_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[ASVR_ERR_MSG], old[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t k = strlen(prefix);
    if (k > sizeof err->msg - 3) k = sizeof err->msg - 3;
    memcpy(err->msg, prefix, k);
    err->msg[k] = ':';
    err->msg[k + 1] = ' ';
    size_t room = sizeof err->msg - k - 3, m = strlen(old);
    if (m > room) m = room;
    memcpy(err->msg + k + 2, old, m);
    err->msg[k + 2 + m] = 0;
    return -1;
}

static ASVR_NORETURN void die(const char *file, int line, const char *what, const char *reason,
                          const char *hint) {
    fflush(stdout);
    fprintf(stderr, "asvr: fatal: %s%s%s (%s:%d)\n", what, reason ? ": " : "", reason ? reason : "",
            file, line);
    if (hint && hint[0]) fprintf(stderr, "asvr: hint: %s\n", hint);
    exit(1);
}

void asvr_fatal(const char *file, int line, const char *hint, const char *fmt, ...) {
    char what[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    die(file, line, what, NULL, hint);
}

static const char *errno_hint(int e) {
    switch (e) {
    case ENOENT: return "check the path; relative paths are taken from the current directory";
    case EACCES:
    case EPERM: return "check the file's permissions";
    case ENOSPC: return "the disk is full; free space or write elsewhere";
    case EMFILE:
    case ENFILE: return "too many open files; raise `ulimit -n`";
    case ENOMEM: return "out of memory; lower the batch size or the number of threads";
    case EROFS: return "the file system is read-only; write the output elsewhere";
    default: return "";
    }
}

void asvr_fatal_errno(const char *file, int line, int err, const char *fmt, ...) {
    char what[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    die(file, line, what, strerror(err), errno_hint(err));
}

void *asvr_malloc(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p)
        asvr_fatal(__FILE__, __LINE__, "out of memory; lower the batch size or free memory",
                   "allocating %zu bytes for %s", n, what);
    return p;
}

void *asvr_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        asvr_fatal(__FILE__, __LINE__, "out of memory; lower the batch size or free memory",
                   "allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

void *asvr_realloc(void *p, size_t n, const char *what) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        asvr_fatal(__FILE__, __LINE__, "out of memory; lower the batch size or free memory",
                   "growing %s to %zu bytes", what, n);
    return q;
}

char *asvr_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = asvr_malloc(n, "a string copy");
    memcpy(d, s, n);
    return d;
}

const char *asvr_mdb_hint(int rc) {
    switch (rc) {
    case MDB_MAP_FULL: return "the LMDB map is full; it should have grown, report this with the store";
    case MDB_READERS_FULL: return "too many LMDB readers; close other processes reading the store";
    case MDB_INVALID: return "not an LMDB environment, or a corrupt one; check the path";
    case MDB_VERSION_MISMATCH: return "the store was written by another LMDB version";
    case MDB_CORRUPTED: return "the store is corrupt; rebuild it";
    case ENOENT: return "the store does not exist; check the path";
    case EACCES: return "check the store's permissions";
    case ENOSPC: return "the disk is full; free space or write elsewhere";
    default: return "";
    }
}

void asvr_fatal_mdb(const char *file, int line, int rc, const char *fmt, ...) {
    char what[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    die(file, line, what, mdb_strerror(rc), asvr_mdb_hint(rc));
}

int asvr_zstd_failed(size_t ret) { return ZSTD_isError(ret) ? 1 : 0; }

void asvr_fatal_zstd(const char *file, int line, size_t ret, const char *fmt, ...) {
    char what[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    die(file, line, what, ZSTD_getErrorName(ret), "the compressed data is corrupt or truncated");
}

void asvr_fatal_tj(const char *file, int line, void *handle, const char *fmt, ...) {
    char what[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    die(file, line, what, tjGetErrorStr2((tjhandle)handle), "");
}
