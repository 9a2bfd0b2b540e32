/* safetensors.c — see safetensors.h.
 *
 * Validation follows the checks Python's safetensors (the Rust crate behind it) makes when it
 * deserializes a file, and adds a few of its own:
 *  - header length: the file must hold the 8-byte length, the length must not exceed 100,000,000
 *    (the crate's limit) and 8 + length must fit in the file;
 *  - the header must be UTF-8 JSON holding an object; "__metadata__" an object of string -> string;
 *  - every other entry an object with "dtype" (a known name), "shape" (non-negative integers) and
 *    "data_offsets" ([begin, end], begin <= end <= data size), end - begin = dtype size x numel;
 *  - coverage: like the Python library, the tensors sorted by (begin, end) must tile the data area
 *    exactly: each begins where the previous one ended and the last ends at the end of the file.
 *    Python reports overlaps and holes as "invalid offset" and trailing bytes as "metadata
 *    incomplete buffer"; here each gets its own message.
 *  - stricter than Python: duplicate JSON keys are rejected (Python keeps the last one), and a
 *    tensor may have at most ST_MAX_DIMS dimensions.
 *
 * Writing reproduces Python's serializer: tensors ordered by dtype (largest alignment first, in the
 * crate's dtype order) and then by name (byte order); the same order in the header and the data
 * area; compact JSON ("," and ":" without spaces), "__metadata__" first, each tensor's fields in
 * the order dtype, shape, data_offsets; string escapes as serde_json writes them; the header padded
 * with spaces to a multiple of 8 bytes. Python writes the metadata keys in hash-map order, which
 * changes from run to run; here they are written sorted by key, so files with zero or one
 * metadata key are byte-identical to Python's and files with more keys differ only in that order.
 */
#include "io/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ULL /* the Python library's limit */

/* ---- dtypes ------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
    int rank; /* the Rust crate's dtype order; the writer puts larger ranks first */
} dtype_info[ST_NDTYPES] = {
    [ST_BOOL] = {"BOOL", 1, 0},     [ST_U8] = {"U8", 1, 1},         [ST_I8] = {"I8", 1, 2},
    [ST_F8_E5M2] = {"F8_E5M2", 1, 3}, [ST_F8_E4M3] = {"F8_E4M3", 1, 4}, [ST_I16] = {"I16", 2, 5},
    [ST_U16] = {"U16", 2, 6},       [ST_F16] = {"F16", 2, 7},       [ST_BF16] = {"BF16", 2, 8},
    [ST_I32] = {"I32", 4, 9},       [ST_U32] = {"U32", 4, 10},      [ST_F32] = {"F32", 4, 11},
    [ST_F64] = {"F64", 8, 12},      [ST_I64] = {"I64", 8, 13},      [ST_U64] = {"U64", 8, 14},
};

const char *st_dtype_name(st_dtype t) {
    if ((int)t < 0 || t >= ST_NDTYPES) return "?";
    return dtype_info[t].name;
}

size_t st_dtype_size(st_dtype t) {
    if ((int)t < 0 || t >= ST_NDTYPES) return 0;
    return dtype_info[t].size;
}

int st_dtype_parse(const char *s, st_dtype *out) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, dtype_info[i].name) == 0) {
            *out = (st_dtype)i;
            return 0;
        }
    return -1;
}

/* ---- the handle -------------------------------------------------------------------------------- */

struct safetensors {
    char *file;          /* path (open) or name_for_errors (parse) */
    asvr_mmap map;       /* when opened from a file */
    int n;
    st_tensor *t;        /* sorted by name */
    char **names;        /* owned names (single file) */
    int nmeta;
    char **meta_k, **meta_v;
    int nshards;
    safetensors **shards; /* sharded: the shards own names, mappings and metadata */
};

int safetensors_count(const safetensors *st) { return st ? st->n : 0; }

const st_tensor *safetensors_at(const safetensors *st, int i) {
    if (!st || i < 0 || i >= st->n) return NULL;
    return &st->t[i];
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

const st_tensor *safetensors_find(const safetensors *st, const char *name) {
    if (!st || !name || st->n == 0) return NULL;
    st_tensor key;
    memset(&key, 0, sizeof key);
    key.name = name;
    return bsearch(&key, st->t, (size_t)st->n, sizeof *st->t, cmp_tensor_name);
}

const char *safetensors_metadata(const safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    if (st->nshards > 0) return safetensors_metadata(st->shards[0], key);
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta_k[i], key) == 0) return st->meta_v[i];
    return NULL;
}

int safetensors_metadata_count(const safetensors *st) {
    if (!st) return 0;
    if (st->nshards > 0) return safetensors_metadata_count(st->shards[0]);
    return st->nmeta;
}

const char *safetensors_metadata_key(const safetensors *st, int i) {
    if (!st) return NULL;
    if (st->nshards > 0) return safetensors_metadata_key(st->shards[0], i);
    if (i < 0 || i >= st->nmeta) return NULL;
    return st->meta_k[i];
}

void safetensors_close(safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->nshards; i++) safetensors_close(st->shards[i]);
    free(st->shards);
    if (st->names)
        for (int i = 0; i < st->n; i++) free(st->names[i]);
    free(st->names);
    for (int i = 0; i < st->nmeta; i++) {
        free(st->meta_k[i]);
        free(st->meta_v[i]);
    }
    free(st->meta_k);
    free(st->meta_v);
    free(st->t);
    asvr_mmap_close(&st->map);
    free(st->file);
    free(st);
}

/* ---- parsing ----------------------------------------------------------------------------------- */

/* Returns the offset of the first byte that breaks UTF-8 (overlong forms, surrogates and code
 * points above U+10FFFF included), or n when the buffer is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

/* A JSON integer >= 0 (jansson rejects integers beyond int64 at parse time). */
static int json_nonneg_int(const json_t *v, int64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0) return -2;
    *out = (int64_t)x;
    return 0;
}

typedef struct {
    int idx;            /* index into the tensor array */
    uint64_t begin, end;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Validates one tensor entry into *t (name and data set by the caller's loop). */
static int parse_entry(const char *file, const char *name, json_t *v, uint64_t data_size,
                       st_tensor *t, uint64_t *begin, uint64_t *end, asvr_error *err) {
    if (!json_is_object(v))
        return asvr_err_set(err, "'%s': tensor '%s': entry must be a JSON object", file, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!jd) return asvr_err_set(err, "'%s': tensor '%s': missing 'dtype'", file, name);
    if (!js) return asvr_err_set(err, "'%s': tensor '%s': missing 'shape'", file, name);
    if (!jo) return asvr_err_set(err, "'%s': tensor '%s': missing 'data_offsets'", file, name);
    if (!json_is_string(jd))
        return asvr_err_set(err, "'%s': tensor '%s': 'dtype' must be a string", file, name);
    if (st_dtype_parse(json_string_value(jd), &t->dtype) < 0)
        return asvr_err_set(err, "'%s': tensor '%s': unknown dtype '%.64s'", file, name,
                            json_string_value(jd));
    if (!json_is_array(js))
        return asvr_err_set(err, "'%s': tensor '%s': 'shape' must be an array of integers", file,
                            name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return asvr_err_set(err, "'%s': tensor '%s': %zu dimensions, at most %d are supported", file,
                            name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    int64_t numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < nd; d++) {
        int64_t x;
        int rc = json_nonneg_int(json_array_get(js, d), &x);
        if (rc == -1)
            return asvr_err_set(err, "'%s': tensor '%s': 'shape' must be an array of integers", file,
                                name);
        if (rc == -2)
            return asvr_err_set(err, "'%s': tensor '%s': negative dimension %lld in 'shape'", file,
                                name, (long long)json_integer_value(json_array_get(js, d)));
        t->shape[d] = x;
        if (!overflow && __builtin_mul_overflow(numel, x, &numel)) overflow = 1;
    }
    /* A zero dimension makes any product zero, but an overflowing product of the others still
     * names an absurd shape; reject it like Python does (it multiplies in order and checks). */
    uint64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow((uint64_t)numel, (uint64_t)dtype_info[t->dtype].size,
                                           &nbytes))
        return asvr_err_set(err, "'%s': tensor '%s': numel overflow: the shape's product does not fit "
                            "in 64 bits", file, name);
    t->numel = numel;
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return asvr_err_set(err, "'%s': tensor '%s': 'data_offsets' must be [begin, end], two integers",
                            file, name);
    int64_t b = 0, e = 0;
    if (json_nonneg_int(json_array_get(jo, 0), &b) < 0 || json_nonneg_int(json_array_get(jo, 1), &e) < 0)
        return asvr_err_set(err, "'%s': tensor '%s': 'data_offsets' must be [begin, end], two "
                            "non-negative integers", file, name);
    if (b > e)
        return asvr_err_set(err, "'%s': tensor '%s': data_offsets begin %lld > end %lld", file, name,
                            (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return asvr_err_set(err, "'%s': tensor '%s': data_offsets end %lld is beyond the data area "
                            "(%llu bytes)", file, name, (long long)e, (unsigned long long)data_size);
    if ((uint64_t)(e - b) != nbytes)
        return asvr_err_set(err, "'%s': tensor '%s': byte size %lld does not match %s x %lld elements "
                            "= %llu bytes", file, name, (long long)(e - b), dtype_info[t->dtype].name,
                            (long long)numel, (unsigned long long)nbytes);
    t->nbytes = (size_t)nbytes;
    *begin = (uint64_t)b;
    *end = (uint64_t)e;
    return 0;
}

static int parse_metadata(safetensors *st, json_t *m, asvr_error *err) {
    if (!json_is_object(m))
        return asvr_err_set(err, "'%s': '__metadata__' must be an object of string -> string",
                            st->file);
    size_t k = json_object_size(m);
    st->meta_k = asvr_calloc(k, sizeof(char *), "metadata keys");
    st->meta_v = asvr_calloc(k, sizeof(char *), "metadata values");
    const char *key;
    json_t *val;
    json_object_foreach(m, key, val) {
        if (!json_is_string(val))
            return asvr_err_set(err, "'%s': '__metadata__' value of '%s' must be a string", st->file,
                                key);
        st->meta_k[st->nmeta] = asvr_strdup(key);
        st->meta_v[st->nmeta] = asvr_strdup(json_string_value(val));
        st->nmeta++;
    }
    return 0;
}

static int parse_into(safetensors *st, const uint8_t *buf, size_t n, asvr_error *err) {
    const char *file = st->file;
    if (n < 8)
        return asvr_err_set(err, "'%s': file is %zu bytes, shorter than the 8-byte header length",
                            file, n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER)
        return asvr_err_set(err, "'%s': header length %llu is absurd (the limit is %llu); not a "
                            "safetensors file?", file, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > n - 8)
        return asvr_err_set(err, "'%s': header length %llu goes beyond the end of the file (%zu bytes); "
                            "truncated?", file, (unsigned long long)hlen, n);
    const uint8_t *h = buf + 8;
    size_t bad = utf8_invalid_at(h, (size_t)hlen);
    if (bad != hlen)
        return asvr_err_set(err, "'%s': header is not valid UTF-8 (byte %zu of the header)", file, bad);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)h, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return asvr_err_set(err, "'%s': header is not valid JSON: %s (line %d, column %d)", file,
                            jerr.text, jerr.line, jerr.column);
    int rc = -1;
    span *sp = NULL;
    if (!json_is_object(root)) {
        asvr_err_set(err, "'%s': header is not a JSON object", file);
        goto out;
    }
    uint64_t data_size = (uint64_t)n - 8 - hlen;
    const uint8_t *data = h + hlen;
    size_t cap = json_object_size(root);
    st->t = asvr_calloc(cap, sizeof *st->t, "tensor views");
    st->names = asvr_calloc(cap, sizeof(char *), "tensor names");
    sp = asvr_calloc(cap, sizeof *sp, "tensor spans");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(st, val, err) < 0) goto out;
            continue;
        }
        st_tensor *t = &st->t[st->n];
        uint64_t b = 0, e = 0;
        if (parse_entry(file, key, val, data_size, t, &b, &e, err) < 0) goto out;
        st->names[st->n] = asvr_strdup(key);
        t->name = st->names[st->n];
        t->data = data + b;
        t->file = st->file;
        sp[st->n] = (span){st->n, b, e};
        st->n++;
    }
    /* Coverage, as the Python library checks it: sorted by (begin, end), the tensors must tile
     * [0, data size) with neither overlaps nor holes nor trailing bytes. */
    qsort(sp, (size_t)st->n, sizeof *sp, cmp_span);
    uint64_t at = 0;
    for (int i = 0; i < st->n; i++) {
        if (sp[i].begin < at) {
            asvr_err_set(err, "'%s': tensor '%s' [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", file,
                         st->t[sp[i].idx].name, (unsigned long long)sp[i].begin,
                         (unsigned long long)sp[i].end, st->t[sp[i - 1].idx].name,
                         (unsigned long long)sp[i - 1].begin, (unsigned long long)sp[i - 1].end);
            goto out;
        }
        if (sp[i].begin > at) {
            asvr_err_set(err, "'%s': data bytes [%llu, %llu) before tensor '%s' belong to no tensor "
                         "(a hole in the data area)", file, (unsigned long long)at,
                         (unsigned long long)sp[i].begin, st->t[sp[i].idx].name);
            goto out;
        }
        at = sp[i].end;
    }
    if (at != data_size) {
        asvr_err_set(err, "'%s': trailing data bytes [%llu, %llu) belong to no tensor", file,
                     (unsigned long long)at, (unsigned long long)data_size);
        goto out;
    }
    qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_tensor_name);
    /* names[] stays in insertion order; it only owns the strings. */
    rc = 0;
out:
    free(sp);
    json_decref(root);
    return rc;
}

int safetensors_parse(const uint8_t *buf, size_t n, const char *name_for_errors, safetensors **out,
                      asvr_error *err) {
    *out = NULL;
    safetensors *st = asvr_calloc(1, sizeof *st, "a safetensors handle");
    st->file = asvr_strdup(name_for_errors ? name_for_errors : "<memory>");
    if (parse_into(st, buf, n, err) < 0) {
        safetensors_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

static int open_single(const char *path, safetensors **out, asvr_error *err) {
    *out = NULL;
    safetensors *st = asvr_calloc(1, sizeof *st, "a safetensors handle");
    st->file = asvr_strdup(path);
    if (asvr_mmap_open(&st->map, path, err) < 0 || parse_into(st, st->map.data, st->map.size, err) < 0) {
        safetensors_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sharded checkpoint: {"metadata": {...}, "weight_map": {tensor: shard file}}. */
static int open_index(const char *path, safetensors **out, asvr_error *err) {
    *out = NULL;
    uint8_t *text;
    size_t n;
    if (asvr_read_file(path, &text, &n, err) < 0) return -1;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)text, n, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return asvr_err_set(err, "'%s': index is not valid JSON: %s (line %d, column %d)", path,
                            jerr.text, jerr.line, jerr.column);
    int rc = -1;
    safetensors *st = asvr_calloc(1, sizeof *st, "a safetensors handle");
    st->file = asvr_strdup(path);
    char *dir = asvr_path_dirname(path);
    const char **files = NULL;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        asvr_err_set(err, "'%s': index has no \"weight_map\" object", path);
        goto out;
    }
    /* The distinct shard files, sorted (HF names them model-0000i-of-0000n.safetensors). */
    size_t nw = json_object_size(wm), nf = 0;
    files = asvr_calloc(nw, sizeof *files, "shard names");
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val) || json_string_length(val) == 0) {
            asvr_err_set(err, "'%s': weight_map entry '%s' must be a shard file name", path, key);
            goto out;
        }
        const char *f = json_string_value(val);
        if (f[0] == '/') {
            asvr_err_set(err, "'%s': weight_map entry '%s': shard '%s' must be relative to the index's "
                         "folder", path, key, f);
            goto out;
        }
        files[nf++] = f;
    }
    qsort(files, nf, sizeof *files, cmp_str_ptr);
    size_t nu = 0;
    for (size_t i = 0; i < nf; i++)
        if (nu == 0 || strcmp(files[nu - 1], files[i]) != 0) files[nu++] = files[i];
    st->shards = asvr_calloc(nu, sizeof *st->shards, "shards");
    int total = 0;
    for (size_t i = 0; i < nu; i++) {
        char *sp = asvr_path_join(dir, files[i]);
        int r = open_single(sp, &st->shards[i], err);
        free(sp);
        if (r < 0) {
            asvr_err_prefix(err, "'%s': shard '%s'", path, files[i]);
            goto out;
        }
        st->nshards++;
        total += st->shards[i]->n;
    }
    /* Every tensor of every shard, sorted by name: a name twice means a tensor in two shards. */
    st->t = asvr_calloc((size_t)total, sizeof *st->t, "tensor views");
    for (int i = 0; i < st->nshards; i++)
        for (int k = 0; k < st->shards[i]->n; k++) st->t[st->n++] = st->shards[i]->t[k];
    qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_tensor_name);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->t[i].name, st->t[i - 1].name) == 0) {
            asvr_err_set(err, "'%s': tensor '%s' is in two shards: '%s' and '%s'", path, st->t[i].name,
                         st->t[i - 1].file, st->t[i].file);
            goto out;
        }
    json_object_foreach(wm, key, val) {
        const st_tensor *t = safetensors_find(st, key);
        const char *want = json_string_value(val);
        char *wp = asvr_path_join(dir, want);
        int ok = t && strcmp(t->file, wp) == 0;
        free(wp);
        if (!ok) {
            asvr_err_set(err, "'%s': tensor '%s' is listed in shard '%s' but that shard does not hold it",
                         path, key, want);
            goto out;
        }
    }
    for (int i = 0; i < st->n; i++)
        if (!json_object_get(wm, st->t[i].name)) {
            asvr_err_set(err, "'%s': tensor '%s' in shard '%s' is not listed in the index's weight_map",
                         path, st->t[i].name, st->t[i].file);
            goto out;
        }
    rc = 0;
out:
    free(files);
    free(dir);
    json_decref(root);
    if (rc < 0) safetensors_close(st);
    else *out = st;
    return rc;
}

int safetensors_open(const char *path, safetensors **out, asvr_error *err) {
    if (ends_with(path, ".json")) return open_index(path, out, err);
    return open_single(path, out, err);
}

/* ---- conversion -------------------------------------------------------------------------------- */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13); /* inf, nan (payload kept) */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: man x 2^-24, normalized */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int st_tensor_to_f32(const st_tensor *t, float *dst, asvr_error *err) {
    const uint8_t *p = t->data;
    int64_t n = t->numel;
    size_t es = st_dtype_size(t->dtype);
    if (n < 0 || (size_t)n * es != t->nbytes)
        return asvr_err_set(err, "tensor '%s': %zu bytes for %lld elements of %s", t->name, t->nbytes,
                            (long long)n, st_dtype_name(t->dtype));
#define CONVERT(type)                                                                              \
    for (int64_t i = 0; i < n; i++) {                                                              \
        type v;                                                                                    \
        memcpy(&v, p + (size_t)i * sizeof v, sizeof v);                                            \
        dst[i] = (float)v;                                                                         \
    }                                                                                              \
    return 0
    switch (t->dtype) {
    case ST_F32: CONVERT(float);
    case ST_F64: CONVERT(double);
    case ST_U8: CONVERT(uint8_t);
    case ST_I8: CONVERT(int8_t);
    case ST_I16: CONVERT(int16_t);
    case ST_U16: CONVERT(uint16_t);
    case ST_I32: CONVERT(int32_t);
    case ST_U32: CONVERT(uint32_t);
    case ST_I64: CONVERT(int64_t);
    case ST_U64: CONVERT(uint64_t);
    case ST_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + (size_t)i * 2, 2);
            dst[i] = f16_to_f32(h);
        }
        return 0;
    case ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + (size_t)i * 2, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return 0;
    default:
        return asvr_err_set(err, "tensor '%s': dtype %s has no conversion to F32", t->name,
                            st_dtype_name(t->dtype));
    }
#undef CONVERT
}

/* ---- writing ----------------------------------------------------------------------------------- */

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    st_fill_fn fill; /* or the bytes come from fill(fill_ctx, ...) at write time */
    void *fill_ctx;
    int filled;      /* the fill has run (st_writer_write or st_writer_run_fills) */
    size_t nbytes;
} wtensor;

struct st_writer {
    int n, cap;
    wtensor *t;
    int nmeta, mcap;
    char **meta_k, **meta_v;
    char *error; /* the first problem found while adding; reported by st_writer_write */
    int adding_source;
};

st_writer *st_writer_new(void) { return asvr_calloc(1, sizeof(st_writer), "a safetensors writer"); }

static void writer_fail(st_writer *w, const char *fmt, const char *name) {
    if (w->error) return;
    size_t k = strlen(fmt) + strlen(name) + 1;
    w->error = asvr_malloc(k, "a writer error");
    snprintf(w->error, k, fmt, name);
}

void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    if (!name) name = "";
    if ((int)dtype < 0 || dtype >= ST_NDTYPES) return writer_fail(w, "tensor '%s': invalid dtype", name);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return writer_fail(w, "tensor '%s': ndim must be 0..8", name);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return writer_fail(w, "tensor '%s': negative dimension", name);
        if (__builtin_mul_overflow(numel, (uint64_t)shape[d], &numel))
            return writer_fail(w, "tensor '%s': numel overflow", name);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)dtype_info[dtype].size, &nbytes) || nbytes > SIZE_MAX)
        return writer_fail(w, "tensor '%s': byte size overflow", name);
    if (nbytes > 0 && !data && !w->adding_source) return writer_fail(w, "tensor '%s': no data", name);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = asvr_realloc(w->t, (size_t)w->cap * sizeof *w->t, "writer tensors");
    }
    wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = asvr_strdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->data = data;
    t->nbytes = (size_t)nbytes;
}

void st_writer_add_source(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                          st_fill_fn fill, void *ctx) {
    int n = w->n;
    w->adding_source = 1;
    st_writer_add(w, name, dtype, ndim, shape, NULL);
    w->adding_source = 0;
    if (w->n == n) return; /* refused: the error is remembered */
    if (!fill) return writer_fail(w, "tensor '%s': no fill function", name ? name : "");
    w->t[n].fill = fill;
    w->t[n].fill_ctx = ctx;
}

void st_writer_set_metadata(st_writer *w, const char *key, const char *value) {
    if (!key || !value) return writer_fail(w, "metadata '%s': key and value must not be NULL", key ? key : "");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta_k[i], key) == 0) {
            free(w->meta_v[i]);
            w->meta_v[i] = asvr_strdup(value);
            return;
        }
    if (w->nmeta == w->mcap) {
        w->mcap = w->mcap ? 2 * w->mcap : 8;
        w->meta_k = asvr_realloc(w->meta_k, (size_t)w->mcap * sizeof(char *), "metadata keys");
        w->meta_v = asvr_realloc(w->meta_v, (size_t)w->mcap * sizeof(char *), "metadata values");
    }
    w->meta_k[w->nmeta] = asvr_strdup(key);
    w->meta_v[w->nmeta] = asvr_strdup(value);
    w->nmeta++;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta_k[i]);
        free(w->meta_v[i]);
    }
    free(w->meta_k);
    free(w->meta_v);
    free(w->error);
    free(w);
}

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t k) {
    if (b->n + k + 1 > b->cap) {
        while (b->n + k + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 1024;
        b->p = asvr_realloc(b->p, b->cap, "a safetensors header");
    }
    memcpy(b->p + b->n, s, k);
    b->n += k;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* A JSON string as serde_json writes it: '"' and '\\' escaped, \b \t \n \f \r short forms, other
 * control characters as \u00xx (lowercase hex), everything else (UTF-8 included) verbatim. */
static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        switch (*c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        default:
            if (*c < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *c);
                sb_put(b, esc, 6);
            } else {
                sb_put(b, (const char *)c, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

static int cmp_wtensor(const void *a, const void *b) {
    const wtensor *x = *(const wtensor *const *)a, *y = *(const wtensor *const *)b;
    int rx = dtype_info[x->dtype].rank, ry = dtype_info[y->dtype].rank;
    if (rx != ry) return rx > ry ? -1 : 1; /* larger alignment first */
    return strcmp(x->name, y->name);
}

static int cmp_meta_idx(const void *a, const void *b, void *keys) {
    char **k = keys;
    return strcmp(k[*(const int *)a], k[*(const int *)b]);
}

static int valid_utf8_str(const char *s) {
    size_t n = strlen(s);
    return utf8_invalid_at((const uint8_t *)s, n) == n;
}

int st_writer_run_fills(st_writer *w, asvr_error *err) {
    if (w->error) return asvr_err_set(err, "%s", w->error);
    wtensor **order = asvr_calloc((size_t)(w->n ? w->n : 1), sizeof *order, "writer order");
    for (int i = 0; i < w->n; i++) order[i] = &w->t[i];
    qsort(order, (size_t)w->n, sizeof *order, cmp_wtensor);
    size_t scratch_n = 0;
    for (int i = 0; i < w->n; i++)
        if (order[i]->fill && order[i]->nbytes > scratch_n) scratch_n = order[i]->nbytes;
    void *scratch = scratch_n ? asvr_malloc(scratch_n, "a safetensors fill buffer (one tensor)") : NULL;
    int rc = 0;
    for (int i = 0; i < w->n && rc == 0; i++)
        if (order[i]->fill && !order[i]->filled) {
            order[i]->filled = 1;
            rc = order[i]->fill(order[i]->fill_ctx, scratch, err);
        }
    free(scratch);
    free(order);
    return rc;
}

int st_writer_write(st_writer *w, const char *path, asvr_error *err) {
    if (w->error) return asvr_err_set(err, "writing '%s': %s", path, w->error);
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->t[i].name, "__metadata__") == 0)
            return asvr_err_set(err, "writing '%s': '__metadata__' cannot be a tensor name", path);
        if (!valid_utf8_str(w->t[i].name))
            return asvr_err_set(err, "writing '%s': tensor name '%s' is not valid UTF-8", path,
                                w->t[i].name);
    }
    for (int i = 0; i < w->nmeta; i++)
        if (!valid_utf8_str(w->meta_k[i]) || !valid_utf8_str(w->meta_v[i]))
            return asvr_err_set(err, "writing '%s': metadata '%s' is not valid UTF-8", path,
                                w->meta_k[i]);
    wtensor **order = asvr_calloc((size_t)w->n, sizeof *order, "writer order");
    for (int i = 0; i < w->n; i++) order[i] = &w->t[i];
    qsort(order, (size_t)w->n, sizeof *order, cmp_wtensor);
    for (int i = 1; i < w->n; i++)
        if (strcmp(order[i]->name, order[i - 1]->name) == 0 && order[i]->dtype == order[i - 1]->dtype) {
            asvr_err_set(err, "writing '%s': tensor '%s' added twice", path, order[i]->name);
            free(order);
            return -1;
        }
    /* Same name under two dtypes sorts apart; check names alone too. */
    {
        const char **names = asvr_calloc((size_t)w->n, sizeof *names, "writer names");
        for (int i = 0; i < w->n; i++) names[i] = w->t[i].name;
        qsort(names, (size_t)w->n, sizeof *names, cmp_str_ptr);
        for (int i = 1; i < w->n; i++)
            if (strcmp(names[i], names[i - 1]) == 0) {
                asvr_err_set(err, "writing '%s': tensor '%s' added twice", path, names[i]);
                free(names);
                free(order);
                return -1;
            }
        free(names);
    }

    sbuf h = {0};
    char num[64];
    sb_puts(&h, "{");
    int first = 1;
    if (w->nmeta > 0) {
        int *mi = asvr_calloc((size_t)w->nmeta, sizeof *mi, "metadata order");
        for (int i = 0; i < w->nmeta; i++) mi[i] = i;
        qsort_r(mi, (size_t)w->nmeta, sizeof *mi, cmp_meta_idx, w->meta_k);
        sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_string(&h, w->meta_k[mi[i]]);
            sb_puts(&h, ":");
            sb_json_string(&h, w->meta_v[mi[i]]);
        }
        sb_puts(&h, "}");
        free(mi);
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const wtensor *t = order[i];
        if (!first) sb_puts(&h, ",");
        first = 0;
        sb_json_string(&h, t->name);
        sb_puts(&h, ":{\"dtype\":\"");
        sb_puts(&h, dtype_info[t->dtype].name);
        sb_puts(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            sb_puts(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + t->nbytes));
        sb_puts(&h, num);
        off += t->nbytes;
    }
    sb_puts(&h, "}");
    while (h.n % 8) sb_puts(&h, " ");

    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    asvr_atomic_file f;
    int rc = -1;
    size_t scratch_n = 0;
    void *scratch = NULL;
    for (int i = 0; i < w->n; i++)
        if (order[i]->fill && order[i]->nbytes > scratch_n) scratch_n = order[i]->nbytes;
    if (scratch_n) scratch = asvr_malloc(scratch_n, "a safetensors write buffer (one tensor)");
    if (asvr_atomic_open(&f, path, err) < 0) goto out;
    if (fwrite(len8, 1, 8, f.fp) != 8 || fwrite(h.p, 1, h.n, f.fp) != h.n) goto write_error;
    for (int i = 0; i < w->n; i++) {
        const void *src = order[i]->data;
        if (order[i]->fill) {
            order[i]->filled = 1;
            if (order[i]->fill(order[i]->fill_ctx, scratch, err) < 0) {
                asvr_err_prefix(err, "writing '%s', tensor '%s'", path, order[i]->name);
                asvr_atomic_abort(&f);
                goto out;
            }
            src = scratch;
        }
        if (order[i]->nbytes && fwrite(src, 1, order[i]->nbytes, f.fp) != order[i]->nbytes) goto write_error;
    }
    rc = asvr_atomic_commit(&f, err);
    goto out;
write_error:
    asvr_err_set(err, "writing '%s': %s", path, strerror(errno));
    asvr_atomic_abort(&f);
out:
    free(scratch);
    free(h.p);
    free(order);
    return rc;
}
