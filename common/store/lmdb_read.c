#include "store/lmdb_read.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fsutil.h"

/* The on-disk layout of LMDB 0.9 on a 64-bit host (liblmdb's mdb.c: MDB_page, MDB_meta, MDB_db,
 * MDB_node). All fields little-endian. */
#define PAGEHDRSZ 16u
#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define P_META 0x08u
#define P_ADMIN 0xC010u /* P_DIRTY, P_LOOSE, P_KEEP: bookkeeping bits that carry no structure */
#define F_BIGDATA 0x01u
#define F_SUBDATA 0x02u
#define F_DUPDATA 0x04u
#define NODESIZE 8u
#define DBSIZE 48u
#define META_OFF PAGEHDRSZ
#define MDB_MAGIC 0xBEEFC0DEu
#define MDB_DATA_VERSION 1u
#define P_INVALID UINT64_MAX
#define MAX_DEPTH 32   /* LMDB's cursor stack */
#define MAX_KEY 511    /* LMDB's default maximum key size */
#define MAX_REPORTS 100
/* database flags this reader cannot follow: REVERSEKEY, DUPSORT, INTEGERKEY, DUPFIXED, INTEGERDUP, REVERSEDUP */
#define DB_UNSUPPORTED 0x7Eu
#define DB_INTEGERKEY 0x08u

struct lmdb_reader {
    char *name;
    const uint8_t *base;
    size_t size;
    asvr_mmap map; /* when opened from a file */
    uint32_t psize;
    uint64_t npages; /* last_pg + 1 of the current meta */
    uint64_t txnid;
    lmdb_db free_db, main_db;
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static void read_db(const uint8_t *p, lmdb_db *db) {
    db->flags = rd16(p + 4);
    db->depth = rd16(p + 6);
    db->branch_pages = rd64(p + 8);
    db->leaf_pages = rd64(p + 16);
    db->overflow_pages = rd64(p + 24);
    db->entries = rd64(p + 32);
    db->root = rd64(p + 40);
}

uint64_t lmdb_pages(const lmdb_reader *r) { return r->npages; }
uint32_t lmdb_page_size(const lmdb_reader *r) { return r->psize; }

/* ---- opening: the meta pages ------------------------------------------------------------------ */

/* A database record (in a meta page or the main database) that this reader can follow. */
static int check_db(const lmdb_reader *r, const lmdb_db *db, const char *what, int integer_keys, asvr_error *err) {
    unsigned bad = db->flags & DB_UNSUPPORTED & ~(integer_keys ? DB_INTEGERKEY : 0u);
    if (bad) return asvr_err_set(err, "%s has flags 0x%x this reader does not support", what, (unsigned)db->flags);
    if (db->root == P_INVALID) {
        if (db->entries || db->depth || db->branch_pages || db->leaf_pages || db->overflow_pages)
            return asvr_err_set(err, "%s has no root page but claims %llu records", what,
                                (unsigned long long)db->entries);
        return 0;
    }
    if (db->root < 2 || db->root >= r->npages)
        return asvr_err_set(err, "%s has its root at page %llu, outside pages 2..%llu", what,
                            (unsigned long long)db->root, (unsigned long long)(r->npages - 1));
    if (db->depth < 1 || db->depth > MAX_DEPTH)
        return asvr_err_set(err, "%s claims a tree of depth %u", what, (unsigned)db->depth);
    if (db->entries == 0 || db->leaf_pages == 0 || db->leaf_pages > db->entries ||
        db->entries / db->leaf_pages > (r->psize - PAGEHDRSZ) / (2 + NODESIZE))
        return asvr_err_set(err, "%s claims %llu records in %llu leaf pages", what, (unsigned long long)db->entries,
                            (unsigned long long)db->leaf_pages);
    if ((db->depth == 1) != (db->branch_pages == 0) || db->branch_pages >= r->npages ||
        db->leaf_pages >= r->npages || db->overflow_pages >= r->npages ||
        db->branch_pages + db->leaf_pages + db->overflow_pages > r->npages - 2)
        return asvr_err_set(err, "%s claims %llu branch, %llu leaf and %llu overflow pages in a tree of depth %u, "
                                 "in a file of %llu pages",
                            what, (unsigned long long)db->branch_pages, (unsigned long long)db->leaf_pages,
                            (unsigned long long)db->overflow_pages, (unsigned)db->depth,
                            (unsigned long long)r->npages);
    return 0;
}

static int open_common(lmdb_reader *r, asvr_error *err) {
    const uint8_t *b = r->base;
    if (r->size == 0) return asvr_err_set(err, "'%s' is empty: not an LMDB file", r->name);
    if (r->size < META_OFF + 152)
        return asvr_err_set(err, "'%s' is %zu bytes, too short for an LMDB file (truncated?)", r->name, r->size);
    uint32_t magic0 = rd32(b + META_OFF);
    if (!(rd16(b + 10) & P_META) || magic0 != MDB_MAGIC)
        return asvr_err_set(err, "'%s' is not an LMDB file (no LMDB meta page at its start), or its first page is damaged",
                            r->name);
    uint32_t psize = rd32(b + META_OFF + 24); /* mm_dbs[FREE_DBI].md_pad */
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)))
        return asvr_err_set(err, "'%s': the meta page gives a page size of %u bytes: the file is damaged", r->name, psize);
    r->psize = psize;
    if (r->size < 2 * (size_t)psize)
        return asvr_err_set(err, "'%s' is %zu bytes, shorter than its two %u-byte meta pages: truncated", r->name,
                            r->size, psize);
    const uint8_t *m[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *pg = b + (size_t)i * psize;
        m[i] = pg + META_OFF;
        if (rd64(pg) != (uint64_t)i || !(rd16(pg + 10) & P_META) || rd32(m[i]) != MDB_MAGIC)
            return asvr_err_set(err, "'%s': meta page %d is damaged (page number, type or magic)", r->name, i);
        if (rd32(m[i] + 4) != MDB_DATA_VERSION)
            return asvr_err_set(err, "'%s': meta page %d has LMDB data version %u, this reader knows version %u", r->name,
                                i, rd32(m[i] + 4), MDB_DATA_VERSION);
        if (rd32(m[i] + 24) != psize)
            return asvr_err_set(err, "'%s': the two meta pages disagree on the page size (%u, %u)", r->name, psize,
                                rd32(m[i] + 24));
        /* LMDB writes transaction t's meta into slot t & 1, and its writer takes the slot from the id */
        uint64_t t = rd64(m[i] + 128);
        if (t != 0 && (int)(t & 1) != i)
            return asvr_err_set(err, "'%s': meta page %d holds transaction %llu, which belongs in the other slot: the file "
                                     "is damaged", r->name, i, (unsigned long long)t);
    }
    /* LMDB uses the meta page with the larger transaction id (mdb_env_pick_meta) */
    int cur = rd64(m[0] + 128) < rd64(m[1] + 128) ? 1 : 0;
    const uint8_t *mm = m[cur];
    uint64_t last = rd64(mm + 120);
    r->txnid = rd64(mm + 128);
    if (last < 1 || last >= (uint64_t)(SIZE_MAX / psize))
        return asvr_err_set(err, "'%s': meta page %d gives %llu as the last page: the file is damaged", r->name, cur,
                            (unsigned long long)last);
    r->npages = last + 1;
    if ((uint64_t)r->size / psize < r->npages)
        return asvr_err_set(err,
                            "'%s' is truncated: it is %zu bytes, but its meta page says it uses %llu pages of %u bytes "
                            "(%llu bytes)",
                            r->name, r->size, (unsigned long long)r->npages, psize,
                            (unsigned long long)(r->npages * psize));
    read_db(mm + 24, &r->free_db);
    read_db(mm + 72, &r->main_db);
    char what[96];
    snprintf(what, sizeof what, "the free list of meta page %d", cur);
    if (check_db(r, &r->free_db, what, 1, err) < 0) return asvr_err_prefix(err, "'%s'", r->name);
    snprintf(what, sizeof what, "the main database of meta page %d", cur);
    if (check_db(r, &r->main_db, what, 0, err) < 0) return asvr_err_prefix(err, "'%s'", r->name);
    return 0;
}

int lmdb_open_mem(const void *data, size_t size, const char *name, lmdb_reader **out, asvr_error *err) {
    *out = NULL;
    lmdb_reader *r = asvr_calloc(1, sizeof *r, "an LMDB reader");
    r->name = asvr_strdup(name);
    r->base = data;
    r->size = size;
    if (open_common(r, err) < 0) {
        lmdb_close(r);
        return -1;
    }
    *out = r;
    return 0;
}

int lmdb_open(const char *path, lmdb_reader **out, asvr_error *err) {
    *out = NULL;
    lmdb_reader *r = asvr_calloc(1, sizeof *r, "an LMDB reader");
    r->name = asvr_strdup(path);
    if (asvr_mmap_open(&r->map, path, err) < 0) {
        lmdb_close(r);
        return -1;
    }
    r->base = r->map.data;
    r->size = r->map.size;
    if (open_common(r, err) < 0) {
        lmdb_close(r);
        return -1;
    }
    *out = r;
    return 0;
}

void lmdb_close(lmdb_reader *r) {
    if (!r) return;
    asvr_mmap_close(&r->map);
    free(r->name);
    free(r);
}

/* ---- pages and nodes -------------------------------------------------------------------------- */

typedef struct node {
    const uint8_t *key;
    size_t klen;
    unsigned flags;
    uint64_t child; /* branch: the child page */
    uint64_t dsize; /* leaf: the value's size */
    const uint8_t *data; /* leaf: the value (inline) or the overflow page number (F_BIGDATA) */
} node;

/* Validates page pgno as a branch or leaf page of a tree and its node table. */
static int tree_page(const lmdb_reader *r, uint64_t pgno, const uint8_t **page, unsigned *kind, int *nkeys,
                     asvr_error *err) {
    if (pgno < 2 || pgno >= r->npages)
        return asvr_err_set(err, "page number %llu is outside pages 2..%llu", (unsigned long long)pgno,
                            (unsigned long long)(r->npages - 1));
    const uint8_t *p = r->base + pgno * r->psize;
    if (rd64(p) != pgno)
        return asvr_err_set(err, "page %llu says it is page %llu", (unsigned long long)pgno, (unsigned long long)rd64(p));
    unsigned flags = rd16(p + 10) & ~P_ADMIN;
    if (flags != P_BRANCH && flags != P_LEAF)
        return asvr_err_set(err, "page %llu has type 0x%x, expected a branch or leaf page", (unsigned long long)pgno,
                            flags);
    unsigned lower = rd16(p + 12), upper = rd16(p + 14);
    if (lower < PAGEHDRSZ || (lower - PAGEHDRSZ) % 2 || lower > upper || upper > r->psize)
        return asvr_err_set(err, "page %llu has a bad node table (lower %u, upper %u)", (unsigned long long)pgno, lower,
                            upper);
    int n = (int)((lower - PAGEHDRSZ) / 2);
    if (n < 1) return asvr_err_set(err, "page %llu has no nodes", (unsigned long long)pgno);
    *page = p;
    *kind = flags;
    *nkeys = n;
    return 0;
}

static int page_node(const lmdb_reader *r, uint64_t pgno, const uint8_t *p, unsigned kind, int i, node *nd,
                     asvr_error *err) {
    unsigned upper = rd16(p + 14), off = rd16(p + PAGEHDRSZ + 2 * (unsigned)i);
    if (off < upper || (size_t)off + NODESIZE > r->psize)
        return asvr_err_set(err, "page %llu: node %d at offset %u is outside the page's node area",
                            (unsigned long long)pgno, i, off);
    const uint8_t *n = p + off;
    unsigned lo = rd16(n), hi = rd16(n + 2), flags = rd16(n + 4), ks = rd16(n + 6);
    size_t end = (size_t)off + NODESIZE + ks;
    if (ks > MAX_KEY || end > r->psize)
        return asvr_err_set(err, "page %llu: node %d has a %u-byte key running past the page", (unsigned long long)pgno,
                            i, ks);
    nd->key = n + NODESIZE;
    nd->klen = ks;
    if (kind == P_BRANCH) {
        nd->flags = 0;
        nd->child = (uint64_t)lo | ((uint64_t)hi << 16) | ((uint64_t)flags << 32);
        nd->dsize = 0;
        nd->data = NULL;
        return 0;
    }
    nd->flags = flags;
    nd->child = 0;
    nd->dsize = (uint64_t)lo | ((uint64_t)hi << 16);
    nd->data = n + NODESIZE + ks;
    if (flags & ~(F_BIGDATA | F_SUBDATA))
        return asvr_err_set(err, "page %llu: node %d has flags 0x%x (duplicate keys are not used by this store)",
                            (unsigned long long)pgno, i, flags);
    if ((flags & F_BIGDATA) ? end + 8 > r->psize : end + nd->dsize > r->psize)
        return asvr_err_set(err, "page %llu: node %d's value runs past the page", (unsigned long long)pgno, i);
    return 0;
}

/* The default LMDB order: memcmp over the shorter length, then the shorter key first. */
static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}
static int int_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    uint64_t x = al == 8 ? rd64(a) : 0, y = bl == 8 ? rd64(b) : 0;
    return x < y ? -1 : x > y;
}

static uint64_t ov_pages(uint64_t dsize, uint32_t psize) { return (PAGEHDRSZ - 1 + dsize) / psize + 1; }

/* A leaf node's value: inline, or the overflow run it names (checked: its page, type and length). */
static int node_value(const lmdb_reader *r, const node *nd, const void **val, size_t *vlen, asvr_error *err) {
    if (!(nd->flags & F_BIGDATA)) {
        *val = nd->data;
        *vlen = (size_t)nd->dsize;
        return 0;
    }
    uint64_t ov = rd64(nd->data), want = ov_pages(nd->dsize, r->psize);
    if (ov < 2 || ov >= r->npages || want > r->npages - ov)
        return asvr_err_set(err, "its value (%llu bytes) is said to be at page %llu, outside the file's %llu pages",
                            (unsigned long long)nd->dsize, (unsigned long long)ov, (unsigned long long)r->npages);
    const uint8_t *p = r->base + ov * r->psize;
    unsigned flags = rd16(p + 10) & ~P_ADMIN;
    if (rd64(p) != ov || flags != P_OVERFLOW || rd32(p + 12) != want)
        return asvr_err_set(err, "overflow page %llu of its value is damaged (number %llu, type 0x%x, %u pages for "
                                 "%llu bytes)",
                            (unsigned long long)ov, (unsigned long long)rd64(p), flags, rd32(p + 12),
                            (unsigned long long)nd->dsize);
    *val = p + PAGEHDRSZ;
    *vlen = (size_t)nd->dsize;
    return 0;
}

static void name_key(char *buf, size_t n, const uint8_t *key, size_t klen) {
    size_t k = 0;
    for (size_t i = 0; i < klen && k + 5 < n; i++) {
        unsigned char c = key[i];
        if (c >= 0x20 && c < 0x7f && c != '\'') buf[k++] = (char)c;
        else k += (size_t)snprintf(buf + k, n - k, "\\x%02x", c);
    }
    buf[k < n ? k : n - 1] = 0;
}

/* ---- lookups ---------------------------------------------------------------------------------- */

static int tree_get(lmdb_reader *r, const lmdb_db *db, const char *what, const void *keyv, size_t klen,
                    int integer_keys, node *out, asvr_error *err) {
    const uint8_t *key = keyv;
    if (db->root == P_INVALID) return 1;
    uint64_t pgno = db->root;
    for (int level = 1;; level++) {
        const uint8_t *p = NULL;
        unsigned kind = 0;
        int n = 0;
        if (tree_page(r, pgno, &p, &kind, &n, err) < 0) goto bad;
        if ((kind == P_LEAF) != (level == db->depth)) {
            asvr_err_set(err, "page %llu is a %s page at level %d of a tree of depth %u", (unsigned long long)pgno,
                         kind == P_LEAF ? "leaf" : "branch", level, (unsigned)db->depth);
            goto bad;
        }
        /* binary search: the last node whose key is <= key (a branch's node 0 has no key) */
        int lo = kind == P_BRANCH ? 1 : 0, hi = n - 1, found = kind == P_BRANCH ? 0 : -1;
        node nd = {0};
        while (lo <= hi) {
            int mid = lo + (hi - lo) / 2;
            if (page_node(r, pgno, p, kind, mid, &nd, err) < 0) goto bad;
            int c = integer_keys ? int_key_cmp(nd.key, nd.klen, key, klen) : key_cmp(nd.key, nd.klen, key, klen);
            if (c <= 0) {
                found = mid;
                if (c == 0 && kind == P_LEAF) break;
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        if (kind == P_LEAF) {
            if (found < 0) return 1;
            if (page_node(r, pgno, p, kind, found, out, err) < 0) goto bad;
            int c = integer_keys ? int_key_cmp(out->key, out->klen, key, klen) : key_cmp(out->key, out->klen, key, klen);
            return c == 0 ? 0 : 1;
        }
        if (page_node(r, pgno, p, kind, found, &nd, err) < 0) goto bad;
        pgno = nd.child;
    }
bad:
    return asvr_err_prefix(err, "'%s': %s", r->name, what);
}

int lmdb_find_db(lmdb_reader *r, const char *name, lmdb_db *db, asvr_error *err) {
    node nd;
    char what0[600];
    snprintf(what0, sizeof what0, "looking up database '%.500s'", name);
    int rc = tree_get(r, &r->main_db, what0, name, strlen(name), 0, &nd, err);
    if (rc) return rc;
    if (!(nd.flags & F_SUBDATA) || (nd.flags & F_BIGDATA) || nd.dsize != DBSIZE)
        return asvr_err_set(err, "'%s': the main database's record '%s' is not a database record (flags 0x%x, %llu bytes)",
                            r->name, name, nd.flags, (unsigned long long)nd.dsize);
    read_db(nd.data, db);
    char what[600];
    snprintf(what, sizeof what, "database '%s'", name);
    if (check_db(r, db, what, 0, err) < 0) return asvr_err_prefix(err, "'%s'", r->name);
    return 0;
}

int lmdb_get(lmdb_reader *r, const lmdb_db *db, const void *key, size_t klen, const void **val, size_t *vlen,
             asvr_error *err) {
    node nd;
    char k[600], what[640];
    name_key(k, sizeof k, key, klen);
    snprintf(what, sizeof what, "looking up key '%s'", k);
    int rc = tree_get(r, db, what, key, klen, 0, &nd, err);
    if (rc) return rc;
    if (nd.flags & F_SUBDATA) {
        return asvr_err_set(err, "'%s': key '%s' holds a database record, not a value", r->name, k);
    }
    if (node_value(r, &nd, val, vlen, err) < 0) return asvr_err_prefix(err, "'%s': key '%s'", r->name, k);
    return 0;
}

/* ---- the in-order walk ------------------------------------------------------------------------ */

typedef struct walk {
    lmdb_reader *r;
    const lmdb_db *db;
    lmdb_visit_fn fn;
    void *ctx;
    uint64_t visited; /* tree pages; more than the file has means a page is reached twice */
    asvr_error *err;
} walk;

static int walk_page(walk *w, uint64_t pgno, int level) {
    lmdb_reader *r = w->r;
    const uint8_t *p = NULL;
    unsigned kind = 0;
    int n = 0;
    if (++w->visited > r->npages)
        return asvr_err_set(w->err, "the tree reaches more pages than the file holds (a page is reached twice)");
    if (tree_page(r, pgno, &p, &kind, &n, w->err) < 0) return -1;
    if ((kind == P_LEAF) != (level == w->db->depth))
        return asvr_err_set(w->err, "page %llu is a %s page at level %d of a tree of depth %u", (unsigned long long)pgno,
                            kind == P_LEAF ? "leaf" : "branch", level, (unsigned)w->db->depth);
    for (int i = 0; i < n; i++) {
        node nd = {0};
        if (page_node(r, pgno, p, kind, i, &nd, w->err) < 0) return -1;
        if (kind == P_BRANCH) {
            int rc = walk_page(w, nd.child, level + 1);
            if (rc) return rc;
            continue;
        }
        if (nd.flags & F_SUBDATA)
            return asvr_err_set(w->err, "page %llu: node %d holds a database record, not a value",
                                (unsigned long long)pgno, i);
        const void *v;
        size_t vl;
        if (node_value(r, &nd, &v, &vl, w->err) < 0) {
            char k[600];
            name_key(k, sizeof k, nd.key, nd.klen);
            return asvr_err_prefix(w->err, "key '%s' (page %llu)", k, (unsigned long long)pgno);
        }
        int rc = w->fn(w->ctx, nd.key, nd.klen, v, vl);
        if (rc) return rc;
    }
    return 0;
}

int lmdb_foreach(lmdb_reader *r, const lmdb_db *db, lmdb_visit_fn fn, void *ctx, asvr_error *err) {
    if (db->root == P_INVALID) return 0;
    walk w = {r, db, fn, ctx, 0, err};
    int rc = walk_page(&w, db->root, 1);
    if (rc == -1) asvr_err_prefix(err, "'%s'", r->name);
    return rc;
}

/* ---- the full check --------------------------------------------------------------------------- */

enum { TREE_FREE, TREE_MAIN, TREE_NAMED };

typedef struct checker {
    lmdb_reader *r;
    const lmdb_check_opts *o;
    uint8_t *used; /* one bit per page */
    int64_t problems;
    uint64_t branch, leaf, overflow, entries;
    int mode; /* TREE_* */
    const char *tree; /* which tree, for messages */
    lmdb_visit_fn visit;
    lmdb_db subs[64];
    char sub_names[64][64];
    int nsubs;
} checker;

static void problem(checker *c, const void *key, size_t klen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void problem(checker *c, const void *key, size_t klen, const char *fmt, ...) {
    c->problems++;
    if (!c->o->report) return;
    if (c->problems > MAX_REPORTS) {
        if (c->problems == MAX_REPORTS + 1)
            c->o->report(c->o->report_ctx, NULL, 0, "more problems follow; only the first 100 are listed");
        return;
    }
    char msg[ASVR_ERR_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->o->report(c->o->report_ctx, key, klen, msg);
}

static int is_marked(const checker *c, uint64_t q) { return (c->used[q >> 3] >> (q & 7)) & 1; }

/* Marks pages [pgno, pgno+n) used; 0 when all were free, else reports the first one used twice. */
static int mark(checker *c, uint64_t pgno, uint64_t n, const char *what) {
    for (uint64_t i = 0; i < n; i++) {
        uint64_t q = pgno + i;
        if (is_marked(c, q)) {
            problem(c, NULL, 0, "%s: page %llu is used twice", what, (unsigned long long)q);
            return -1;
        }
        c->used[q >> 3] |= (uint8_t)(1u << (q & 7));
    }
    return 0;
}

static void leaf_node(checker *c, uint64_t pgno, int i, const node *nd) {
    lmdb_reader *r = c->r;
    char k[600];
    if (c->mode == TREE_MAIN) {
        if (!(nd->flags & F_SUBDATA) || (nd->flags & F_BIGDATA) || nd->dsize != DBSIZE) {
            problem(c, nd->key, nd->klen, "%s: page %llu: node %d is not a database record", c->tree,
                    (unsigned long long)pgno, i);
        } else if (c->nsubs < 64 && nd->klen < sizeof c->sub_names[0]) {
            read_db(nd->data, &c->subs[c->nsubs]);
            memcpy(c->sub_names[c->nsubs], nd->key, nd->klen);
            c->sub_names[c->nsubs][nd->klen] = 0;
            c->nsubs++;
        } else {
            problem(c, nd->key, nd->klen, "%s: too many or too long database names", c->tree);
        }
        return;
    }
    if (nd->flags & F_SUBDATA) {
        problem(c, nd->key, nd->klen, "%s: page %llu: node %d is a database record inside a database", c->tree,
                (unsigned long long)pgno, i);
        return;
    }
    const void *v = nd->data;
    size_t vl = (size_t)nd->dsize;
    if (nd->flags & F_BIGDATA) {
        uint64_t ov = rd64(nd->data), np = ov_pages(nd->dsize, r->psize);
        if (ov < 2 || ov >= r->npages || np > r->npages - ov) {
            name_key(k, sizeof k, nd->key, nd->klen);
            problem(c, nd->key, nd->klen, "%s: key '%s': its value (%llu bytes) is said to be at page %llu, outside the "
                    "file", c->tree, k, (unsigned long long)nd->dsize, (unsigned long long)ov);
            return;
        }
        asvr_error e;
        if ((c->o->deep || c->visit || c->mode == TREE_FREE) && node_value(r, nd, &v, &vl, &e) < 0) {
            name_key(k, sizeof k, nd->key, nd->klen);
            problem(c, nd->key, nd->klen, "%s: key '%s': %s", c->tree, k, e.msg);
            return;
        }
        if (mark(c, ov, np, c->tree) < 0) return;
        c->overflow += np;
    }
    if (c->mode == TREE_FREE) {
        /* an IDL: a count, then that many page numbers */
        const uint8_t *b = v;
        uint64_t cnt = vl >= 8 ? rd64(b) : 0;
        if (nd->klen != 8 || vl < 8 || vl % 8 || cnt != vl / 8 - 1)
            problem(c, NULL, 0, "%s: page %llu: node %d is not a list of free pages", c->tree, (unsigned long long)pgno,
                    i);
        return;
    }
    if (c->visit) c->visit(c->o->visit_ctx, nd->key, nd->klen, v, vl);
}

/* lo/hi: bounds of this page's keys from its parent (NULL: none) */
static void check_page(checker *c, uint64_t pgno, int level, int depth, const uint8_t *lo, size_t lol,
                       const uint8_t *hi, size_t hil) {
    lmdb_reader *r = c->r;
    asvr_error e;
    const uint8_t *p;
    unsigned kind;
    int n;
    if (tree_page(r, pgno, &p, &kind, &n, &e) < 0) {
        problem(c, NULL, 0, "%s: %s", c->tree, e.msg);
        return;
    }
    if (mark(c, pgno, 1, c->tree) < 0) return;
    if ((kind == P_LEAF) != (level == depth)) {
        problem(c, NULL, 0, "%s: page %llu is a %s page at level %d of a tree of depth %d", c->tree,
                (unsigned long long)pgno, kind == P_LEAF ? "leaf" : "branch", level, depth);
        return;
    }
    if (kind == P_BRANCH) c->branch++;
    else c->leaf++;
    int (*cmp)(const uint8_t *, size_t, const uint8_t *, size_t) = c->mode == TREE_FREE ? int_key_cmp : key_cmp;
    node prev = {0}, nd, nx;
    int have_prev = 0;
    for (int i = 0; i < n; i++) {
        if (page_node(r, pgno, p, kind, i, &nd, &e) < 0) {
            problem(c, NULL, 0, "%s: %s", c->tree, e.msg);
            return;
        }
        if (kind == P_LEAF || i > 0) {
            if ((have_prev && cmp(prev.key, prev.klen, nd.key, nd.klen) >= 0) ||
                (lo && cmp(nd.key, nd.klen, lo, lol) < 0) || (hi && cmp(nd.key, nd.klen, hi, hil) >= 0)) {
                char k[600];
                name_key(k, sizeof k, nd.key, nd.klen);
                problem(c, nd.key, nd.klen, "%s: page %llu: key '%s' is out of order", c->tree,
                        (unsigned long long)pgno, k);
                return;
            }
            prev = nd;
            have_prev = 1;
        }
        if (kind == P_LEAF) {
            c->entries++;
            leaf_node(c, pgno, i, &nd);
            continue;
        }
        const uint8_t *chi = hi;
        size_t chil = hil;
        if (i + 1 < n) {
            if (page_node(r, pgno, p, kind, i + 1, &nx, &e) < 0) {
                problem(c, NULL, 0, "%s: %s", c->tree, e.msg);
                return;
            }
            chi = nx.key, chil = nx.klen;
        }
        check_page(c, nd.child, level + 1, depth, i > 0 ? nd.key : lo, i > 0 ? nd.klen : lol, chi, chil);
    }
}

/* Checks one tree against its database record. */
static void check_tree(checker *c, const lmdb_db *db, const char *name, int mode) {
    c->branch = c->leaf = c->overflow = c->entries = 0;
    c->mode = mode;
    c->tree = name;
    int64_t before = c->problems;
    if (db->root != P_INVALID) check_page(c, db->root, 1, db->depth, NULL, 0, NULL, 0);
    if (c->problems == before &&
        (c->branch != db->branch_pages || c->leaf != db->leaf_pages || c->overflow != db->overflow_pages ||
         c->entries != db->entries))
        problem(c, NULL, 0,
                "%s: its record says %llu records in %llu branch, %llu leaf and %llu overflow pages; the walk found "
                "%llu records in %llu, %llu and %llu",
                name, (unsigned long long)db->entries, (unsigned long long)db->branch_pages,
                (unsigned long long)db->leaf_pages, (unsigned long long)db->overflow_pages,
                (unsigned long long)c->entries, (unsigned long long)c->branch, (unsigned long long)c->leaf,
                (unsigned long long)c->overflow);
}

/* The free pages (read once every tree is marked): none may be in use, none listed twice. */
static int free_visit(void *ctx, const void *key, size_t klen, const void *val, size_t vlen) {
    checker *c = ctx;
    const uint8_t *b = val;
    if (vlen < 8 || vlen % 8) return 0; /* reported by the tree check */
    for (size_t i = 8; i + 8 <= vlen; i += 8) {
        uint64_t q = rd64(b + i);
        if (q < 2 || q >= c->r->npages) {
            problem(c, NULL, 0, "the free list names page %llu, outside pages 2..%llu", (unsigned long long)q,
                    (unsigned long long)(c->r->npages - 1));
            continue;
        }
        if (is_marked(c, q)) {
            problem(c, NULL, 0, "the free list names page %llu, which is in use", (unsigned long long)q);
            continue;
        }
        c->used[q >> 3] |= (uint8_t)(1u << (q & 7));
    }
    return 0;
}

int64_t lmdb_check(lmdb_reader *r, const lmdb_check_opts *opts) {
    checker c;
    memset(&c, 0, sizeof c);
    c.r = r;
    c.o = opts;
    c.used = asvr_calloc((size_t)(r->npages / 8 + 1), 1, "an LMDB page map");
    mark(&c, 0, 2, "the meta pages");
    check_tree(&c, &r->free_db, "the free list", TREE_FREE);
    check_tree(&c, &r->main_db, "the main database", TREE_MAIN);
    for (int i = 0; i < c.nsubs; i++) {
        char what[96];
        snprintf(what, sizeof what, "database '%s'", c.sub_names[i]);
        asvr_error e;
        if (check_db(r, &c.subs[i], what, 0, &e) < 0) {
            problem(&c, NULL, 0, "%s", e.msg);
            continue;
        }
        c.visit = opts->visit_db && strcmp(opts->visit_db, c.sub_names[i]) == 0 ? opts->visit : NULL;
        check_tree(&c, &c.subs[i], what, TREE_NAMED);
        c.visit = NULL;
    }
    if (c.problems == 0 && r->free_db.root != P_INVALID) {
        asvr_error e;
        if (lmdb_foreach(r, &r->free_db, free_visit, &c, &e) < 0) problem(&c, NULL, 0, "%s", e.msg);
    }
    free(c.used);
    return c.problems;
}

typedef struct first_problem {
    char msg[ASVR_ERR_MSG];
    int have;
} first_problem;

static void keep_first(void *ctx, const void *key, size_t klen, const char *what) {
    first_problem *f = ctx;
    if (f->have++) return;
    snprintf(f->msg, sizeof f->msg, "%s", what);
}

int lmdb_check_file(const char *path, asvr_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        return asvr_err_set(err, "'%s': %s", path, strerror(errno));
    }
    if (S_ISREG(st.st_mode) && st.st_size == 0) return 0;
    lmdb_reader *r;
    if (lmdb_open(path, &r, err) < 0) return -1;
    first_problem f = {{0}, 0};
    lmdb_check_opts o = {0, keep_first, &f, NULL, NULL, NULL};
    int64_t n = lmdb_check(r, &o);
    lmdb_close(r);
    if (n)
        return asvr_err_set(err, "'%s' is damaged: %s%s (asvr-tokenize verify lists every problem)", path, f.msg,
                            n > 1 ? ", and more" : "");
    return 0;
}
