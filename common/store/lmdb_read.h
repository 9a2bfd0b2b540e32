/* lmdb_read.h — a checked, read-only reader of the LMDB files the code store is made of, and a full
 * structural check of such a file.
 *
 * LMDB trusts its file: a truncated store or one damaged byte in a page makes it read outside its
 * map (SIGBUS, SIGSEGV). This reader validates everything it touches before using it: the two meta
 * pages (magic, version, page size, which one is current), the file size against the current meta's
 * last page, each page's number, type and node bounds, overflow runs inside the file, the tree depth
 * (so no cycle is followed) and the number of pages a walk visits. Damage is an error naming the file
 * and the page (and the key where known), never a signal.
 *
 * It reads what the code store writes: 64-bit LMDB 0.9 files (MDB_NOSUBDIR), named databases with
 * the default key order, no MDB_DUPSORT/MDB_DUPFIXED/MDB_INTEGERKEY in named databases. The file is
 * mapped read-only once at open; pages a writer adds later are not seen (a reader of a store being
 * appended to at the same time may see an error, never a crash, as long as the file does not shrink).
 * Not for: writing (LMDB does that; lmdb_check() first makes sure LMDB may open the file).
 */
#ifndef ASVR_STORE_LMDB_READ_H
#define ASVR_STORE_LMDB_READ_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmdb_db {
    uint16_t flags, depth;
    uint64_t branch_pages, leaf_pages, overflow_pages, entries, root;
} lmdb_db;

typedef struct lmdb_reader lmdb_reader;

/* Opens path (a regular file; a named pipe or device is refused without blocking) and validates the
 * meta pages and the file size. Errors name the file. */
int lmdb_open(const char *path, lmdb_reader **out, asvr_error *err);
/* The same over bytes in memory (not copied; they must outlive the reader); name is used in errors. */
int lmdb_open_mem(const void *data, size_t size, const char *name, lmdb_reader **out, asvr_error *err);
void lmdb_close(lmdb_reader *r);

/* Pages in use according to the current meta page, and its page size. */
uint64_t lmdb_pages(const lmdb_reader *r);
uint32_t lmdb_page_size(const lmdb_reader *r);

/* A named database's record in the main database: 0 found, 1 absent, -1 damaged (err says where). */
int lmdb_find_db(lmdb_reader *r, const char *name, lmdb_db *db, asvr_error *err);
/* A key's value (pointer into the mapping, valid until lmdb_close): 0 found, 1 absent, -1 damaged. */
int lmdb_get(lmdb_reader *r, const lmdb_db *db, const void *key, size_t klen, const void **val, size_t *vlen,
             asvr_error *err);

/* Visits every key of db in key order; stops at the first non-zero return of fn and returns it, or
 * -1 with err at the first damaged page (the records before it were visited). */
typedef int (*lmdb_visit_fn)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen);
int lmdb_foreach(lmdb_reader *r, const lmdb_db *db, lmdb_visit_fn fn, void *ctx, asvr_error *err);

/* The full check: walks the free list, the main database and every named database. Each page must be
 * used once (trees and free list disjoint), keys in order within their parent's bounds, the counts
 * of each database's record equal to what the walk finds. deep also reads the first page of every
 * overflow run (where record values live); without it the walk reads only branch and leaf pages.
 * Each problem goes to report (key = the record's key where one is concerned, else NULL); visit,
 * when given, gets every readable record of the named database visit_db (for record-level checks).
 * Returns the number of problems (0: LMDB may open the file). */
typedef void (*lmdb_report_fn)(void *ctx, const void *key, size_t klen, const char *problem);
typedef struct lmdb_check_opts {
    int deep;
    lmdb_report_fn report;
    void *report_ctx;
    const char *visit_db;
    lmdb_visit_fn visit;
    void *visit_ctx;
} lmdb_check_opts;
int64_t lmdb_check(lmdb_reader *r, const lmdb_check_opts *opts);

/* lmdb_check without deep, stopping at the first problem: 0 when LMDB may open path for writing,
 * -1 with err naming the file and the problem. A missing or empty file passes (LMDB creates it). */
int lmdb_check_file(const char *path, asvr_error *err);

#ifdef __cplusplus
}
#endif
#endif
