/* error.h — errors and check macros for all of libasvr.
 *
 * Two kinds of failure:
 *  - fatal: a resource the run cannot do without (memory, a syscall on an output, a library call
 *    that must not fail). The CHECK_* macros print what failed, where, and a hint, then exit(1).
 *  - recoverable: bad input for one record (an image, a sample, a tensor). Functions that read user
 *    data take an `asvr_error *` and return -1 after asvr_err_set(), so the caller can log the record
 *    and keep going. Never exit from code that handles one record.
 * Not for: CUDA/cuBLAS checks, which live in nn/cuda/cuda_common.cuh so host code needs no CUDA headers.
 */
#ifndef ASVR_BASE_ERROR_H
#define ASVR_BASE_ERROR_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASVR_NORETURN __attribute__((noreturn))
#define ASVR_ERR_MSG 1024

typedef struct asvr_error {
    char msg[ASVR_ERR_MSG];
} asvr_error;

/* Sets err->msg (printf-style) when err is non-NULL; returns -1 so callers can `return asvr_err_set(...)`. */
int asvr_err_set(asvr_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes err->msg with printf-style context ("reading 'x.png': <old message>"); returns -1. */
int asvr_err_prefix(asvr_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "asvr: fatal: <what> (<file>:<line>)" and the hint, then exits with status 1. */
ASVR_NORETURN void asvr_fatal(const char *file, int line, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define ASVR_FATAL(hint, ...) asvr_fatal(__FILE__, __LINE__, (hint), __VA_ARGS__)

/* A condition that must hold; msg explains what it means for the user. */
#define CHECK(cond, hint, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) ASVR_FATAL((hint), __VA_ARGS__);                                              \
    } while (0)

/* A syscall-style call returning <0 (or NULL via CHECK_PTR) with errno set. */
#define CHECK_SYS(expr, ...)                                                                       \
    do {                                                                                           \
        if ((expr) < 0) {                                                                          \
            int e_ = errno;                                                                        \
            asvr_fatal_errno(__FILE__, __LINE__, e_, __VA_ARGS__);                                 \
        }                                                                                          \
    } while (0)

#define CHECK_PTR(ptr, ...)                                                                        \
    do {                                                                                           \
        if ((ptr) == NULL) {                                                                       \
            int e_ = errno;                                                                        \
            asvr_fatal_errno(__FILE__, __LINE__, e_, __VA_ARGS__);                                 \
        }                                                                                          \
    } while (0)

ASVR_NORETURN void asvr_fatal_errno(const char *file, int line, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Allocation that cannot fail: exits naming the size and the purpose. */
void *asvr_malloc(size_t n, const char *what);
void *asvr_calloc(size_t count, size_t size, const char *what);
void *asvr_realloc(void *p, size_t n, const char *what);
char *asvr_strdup(const char *s);

/* LMDB: rc from an mdb_* call; names the call and, for the usual codes, how to fix it. */
#define CHECK_MDB(rc, ...)                                                                         \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != 0) asvr_fatal_mdb(__FILE__, __LINE__, rc_, __VA_ARGS__);                        \
    } while (0)
ASVR_NORETURN void asvr_fatal_mdb(const char *file, int line, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Hint for an LMDB return code (MDB_MAP_FULL, MDB_READERS_FULL, ...), "" when none. */
const char *asvr_mdb_hint(int rc);

/* zstd: a size_t result of a ZSTD_* call. */
#define CHECK_ZSTD(ret, ...)                                                                       \
    do {                                                                                           \
        size_t zr_ = (ret);                                                                        \
        if (asvr_zstd_failed(zr_)) asvr_fatal_zstd(__FILE__, __LINE__, zr_, __VA_ARGS__);          \
    } while (0)
int asvr_zstd_failed(size_t ret);
ASVR_NORETURN void asvr_fatal_zstd(const char *file, int line, size_t ret, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* TurboJPEG: rc of a tj* call and its handle (tjGetErrorStr2 names the reason). */
#define CHECK_TJ(rc, handle, ...)                                                                  \
    do {                                                                                           \
        if ((rc) != 0) asvr_fatal_tj(__FILE__, __LINE__, (handle), __VA_ARGS__);                   \
    } while (0)
ASVR_NORETURN void asvr_fatal_tj(const char *file, int line, void *handle, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
