/* safetensors.h — read (mmap) and write HF safetensors files, single or sharded (*.index.json).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
 * "__metadata__": {str: str}}, then the tensor bytes. Opening validates strictly, as Python's
 * safetensors does: header length inside the file (and at most 100 MB), UTF-8 JSON object, known
 * dtypes, non-negative dims without numel overflow, offsets inside the data area, byte size = dtype
 * size x product(shape), and the tensors tiling the data area exactly (no overlap, hole or trailing
 * bytes). Also rejected: duplicate JSON keys, more than ST_MAX_DIMS dims. A bad file gives an error
 * naming the file and the tensor. A sharded checkpoint's index maps every tensor to its shard (paths
 * relative to the index's folder); each must be there, in no other shard, and no shard may hold an
 * unlisted tensor.
 * Writing is atomic (temp + fsync + rename) and byte-identical to Python's safetensors for the same
 * tensors and metadata; with two or more metadata keys Python's key order varies from run to run,
 * ours is sorted by key (the files then differ only in that order).
 * Not for: loading into a model (model/ does that over these views).
 */
#ifndef ASVR_IO_SAFETENSORS_H
#define ASVR_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_I32, ST_U32, ST_I64, ST_U64,
    ST_F16, ST_BF16, ST_F32, ST_F64, ST_F8_E4M3, ST_F8_E5M2,
    ST_NDTYPES
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;  /* inside the mapping (read) or caller memory (write) */
    size_t nbytes;
    const char *file;  /* the shard it lives in (read) */
} st_tensor;

typedef struct safetensors safetensors;

/* path: a .safetensors file or a sharded checkpoint's *.index.json ({"weight_map": {name: file}}).
 * Returns -1 with err naming the file and the tensor on any validation failure. */
int safetensors_open(const char *path, safetensors **out, asvr_error *err);
void safetensors_close(safetensors *st);

int safetensors_count(const safetensors *st);
const st_tensor *safetensors_at(const safetensors *st, int i); /* sorted by name */
const st_tensor *safetensors_find(const safetensors *st, const char *name); /* NULL when absent */
/* __metadata__ value (for sharded checkpoints: of the shard whose file name sorts first, e.g.
 * model-00001-of-0000n.safetensors; the index's own "metadata" is not kept), NULL when absent. */
const char *safetensors_metadata(const safetensors *st, const char *key);
/* The __metadata__ keys (same source as safetensors_metadata), i in [0, count). */
int safetensors_metadata_count(const safetensors *st);
const char *safetensors_metadata_key(const safetensors *st, int i);

/* Parses and validates a header held in memory (the whole file image: 8 bytes + JSON + data).
 * Used by safetensors_open and the fuzzer. On success *out holds views into buf. */
int safetensors_parse(const uint8_t *buf, size_t n, const char *name_for_errors, safetensors **out,
                      asvr_error *err);

const char *st_dtype_name(st_dtype t);   /* "F32", "BF16", ... */
size_t st_dtype_size(st_dtype t);
int st_dtype_parse(const char *s, st_dtype *out); /* -1 when unknown */

/* Converts any float or integer tensor to fp32 (dst holds t->numel floats): F16 exactly (subnormals,
 * inf, nan payloads), BF16 by a 16-bit shift, F64 and integers rounded to nearest. -1 for BOOL/F8. */
int st_tensor_to_f32(const st_tensor *t, float *dst, asvr_error *err);

/* Writing: collect tensors (data is referenced, not copied, until safetensors_writer_write). */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* shape has ndim entries; nbytes is derived. The name must be unique and valid UTF-8. A bad call
 * (negative dim, ndim > ST_MAX_DIMS, ...) is remembered and reported by st_writer_write. */
void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
/* A tensor whose bytes are produced when the file is written: fill(ctx, dst) writes its nbytes into
 * dst (a scratch buffer of the writer, reused from tensor to tensor, so writing a file holds one
 * tensor's bytes at a time, e.g. downloaded from a device); it returns 0, or -1 with err set, which
 * fails the write. Tensors are filled in file order (by dtype, then name). */
typedef int (*st_fill_fn)(void *ctx, void *dst, asvr_error *err);
void st_writer_add_source(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                          st_fill_fn fill, void *ctx);
/* Calls the fill functions in file order, as st_writer_write would, without writing anything: for a
 * process that takes part in collective fills while another one writes the file. Fills that have run
 * already (a write that failed part way) are not run again. */
int st_writer_run_fills(st_writer *w, asvr_error *err);
/* Setting a key again replaces its value. "__metadata__" is written only when a key is set. */
void st_writer_set_metadata(st_writer *w, const char *key, const char *value);
int st_writer_write(st_writer *w, const char *path, asvr_error *err); /* atomic */
void st_writer_free(st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
