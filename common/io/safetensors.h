/* safetensors.h — read (mmap) and write HF safetensors files, single or sharded (*.index.json).
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
 * "__metadata__": {str: str}}, then the tensor bytes. Opening validates strictly: header length
 * inside the file, valid JSON, known dtypes, offsets inside the data area and non-overlapping,
 * byte size = dtype size x product(shape). A bad file gives an error naming the file and the tensor.
 * Writing is atomic (temp + fsync + rename) and byte-identical to Python's safetensors for the same
 * tensors and metadata.
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
/* __metadata__ value (of the first shard for sharded files), NULL when absent. */
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

/* Converts any float or integer tensor to fp32 (dst holds t->numel floats). -1 for BOOL/F8 etc. */
int st_tensor_to_f32(const st_tensor *t, float *dst, asvr_error *err);

/* Writing: collect tensors (data is referenced, not copied, until safetensors_writer_write). */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
/* shape has ndim entries; nbytes is derived. The name must be unique. */
void st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                   const void *data);
void st_writer_set_metadata(st_writer *w, const char *key, const char *value);
int st_writer_write(st_writer *w, const char *path, asvr_error *err); /* atomic */
void st_writer_free(st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
