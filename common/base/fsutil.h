/* fsutil.h — files: atomic writes (temp file, fsync, rename, fsync of the directory), whole-file
 * reads, read-only mmaps, mkdir -p, and "does this exist".
 * An output written through asvr_atomic_* either appears complete or not at all; a crash leaves
 * only a "<path>.tmp.<pid>" file, never a half-written <path>, and the next asvr_atomic_open of the
 * same path removes such leftovers (their process gone, untouched for a minute).
 */
#ifndef ASVR_BASE_FSUTIL_H
#define ASVR_BASE_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct asvr_atomic_file {
    FILE *fp;          /* write through this */
    char *path;        /* final path */
    char *tmp_path;    /* where the bytes go until commit */
} asvr_atomic_file;

/* Removes what killed runs left of path: "<path>.tmp.<pid>" files of processes that are gone,
 * untouched for a minute (asvr_atomic_open does it first; a no-op rerun calls it itself). */
void asvr_atomic_reclaim(const char *path);
/* Opens "<path>.tmp.<pid>" for writing. Returns -1 with err set on failure. */
int asvr_atomic_open(asvr_atomic_file *f, const char *path, asvr_error *err);
/* Flushes, fsyncs, renames over path, fsyncs the directory. Returns -1 (and removes the temp). */
int asvr_atomic_commit(asvr_atomic_file *f, asvr_error *err);
/* Removes the temp file; the final path is untouched. Safe after a failed commit. */
void asvr_atomic_abort(asvr_atomic_file *f);
/* One-shot: writes n bytes to path atomically. */
int asvr_atomic_write(const char *path, const void *data, size_t n, asvr_error *err);

/* Opens an input for reading without ever blocking at open: a regular file, or with allow_stream
 * also a named pipe or character device (a pipe with no writer then reads as empty). Directories,
 * sockets and (without allow_stream) pipes are refused naming what the path is. Returns the fd. */
int asvr_open_input(const char *path, int allow_stream, asvr_error *err);
/* asvr_open_input(path, 1) as a FILE* (NULL with err set). */
FILE *asvr_fopen_input(const char *path, asvr_error *err);
/* Opens a regular file for appending (created if absent); a named pipe or other non-regular file is
 * refused at once, never waited on. */
FILE *asvr_fopen_append(const char *path, asvr_error *err);

/* Reads a whole file (or pipe) into a malloc'd buffer (NUL-terminated past *n). */
int asvr_read_file(const char *path, uint8_t **data, size_t *n, asvr_error *err);
/* The same, refusing a file of more than max_bytes (checked before reading it, naming the file). */
int asvr_read_file_max(const char *path, size_t max_bytes, uint8_t **data, size_t *n, asvr_error *err);

/* Read-only mapping of a whole regular file (anything else is refused without blocking); an empty
 * file maps to data=NULL, size 0. */
typedef struct asvr_mmap {
    const uint8_t *data;
    size_t size;
} asvr_mmap;
int asvr_mmap_open(asvr_mmap *m, const char *path, asvr_error *err);
void asvr_mmap_close(asvr_mmap *m);

int asvr_mkdir_p(const char *path, asvr_error *err);
int asvr_path_exists(const char *path);
/* fsync a directory so a rename inside it is durable. */
int asvr_fsync_dir(const char *dir, asvr_error *err);
/* Joins dir and name with one '/' (malloc'd); name absolute → copy of name. */
char *asvr_path_join(const char *dir, const char *name);
/* Directory part of path (malloc'd), "." when none. */
char *asvr_path_dirname(const char *path);

#ifdef __cplusplus
}
#endif
#endif
