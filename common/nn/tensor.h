/* tensor.h — the small tensor every op takes, and the arena that holds a run's tensors.
 *
 * A tensor is a view: dtype, up to 4 dims (row-major, contiguous), the device its bytes live on,
 * and a data pointer it does not own. Memory is planned up front: a model declares every tensor it
 * needs in an arena (name, dtype, shape), the arena makes one allocation for all of them, and its
 * plan (name, shape, bytes) can be printed before the run starts. Nothing is allocated per step.
 * Not for: owning or resizing data piecemeal (make a new arena), strided or non-contiguous views,
 * or host<->device copies (the backends provide those).
 */
#ifndef ASVR_NN_TENSOR_H
#define ASVR_NN_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { NN_F32, NN_BF16, NN_F16, NN_U16, NN_I32, NN_U8, NN_NDTYPES } nn_dtype;
typedef enum { NN_CPU, NN_CUDA } nn_device;

#define NN_MAX_DIMS 4
#define NN_NAME_MAX 96

typedef struct tensor {
    nn_dtype dtype;
    nn_device device;
    int ndim;
    int64_t shape[NN_MAX_DIMS];
    void *data;               /* not owned; NULL until the arena is committed */
    char name[NN_NAME_MAX];   /* for error messages and the arena plan */
} tensor;

size_t nn_dtype_size(nn_dtype t);
const char *nn_dtype_name(nn_dtype t);
const char *nn_device_name(nn_device d);

/* A view over caller memory. ndim in 1..4; exits on a bad shape (programming error). */
tensor tensor_make(const char *name, nn_dtype dtype, nn_device dev, int ndim, const int64_t *shape,
                   void *data);
int64_t tensor_numel(const tensor *t);
size_t tensor_nbytes(const tensor *t);
/* Product of all dims but the last (the "rows" of a row-major matrix view), and the last dim. */
int64_t tensor_rows(const tensor *t);
int64_t tensor_cols(const tensor *t);
/* "[2, 729, 1152]" into buf; returns buf. */
char *tensor_shape_str(const tensor *t, char *buf, size_t n);
/* Same shape (dims equal after dropping nothing); used by the op argument checks. */
int tensor_same_shape(const tensor *a, const tensor *b);

/* Views sharing t's data: t[i] along dim 0 (one fewer dim; t must have >= 2 dims), and the first
 * n entries along dim 0 (same dims, shape[0] = n <= t->shape[0]). */
tensor tensor_index0(const tensor *t, int64_t i);
tensor tensor_head0(const tensor *t, int64_t n);

/* ---- arena ---------------------------------------------------------------------------------- */
typedef struct nn_arena nn_arena;

/* label names the arena in the plan and in out-of-memory errors ("siglip weights"). */
nn_arena *nn_arena_new(const char *label, nn_device dev);
/* Declares a tensor; the returned pointer is stable for the arena's life, its data is set by
 * nn_arena_commit. Adding after commit is a programming error (exits). */
tensor *nn_arena_add(nn_arena *a, const char *name, nn_dtype dtype, int ndim, const int64_t *shape);
/* Makes the single allocation (each tensor aligned to 256 bytes), zeroes it (on every device), and
 * points every tensor into it. */
void nn_arena_commit(nn_arena *a);
size_t nn_arena_bytes(const nn_arena *a);  /* planned total, valid before commit too */
int nn_arena_count(const nn_arena *a);
tensor *nn_arena_at(nn_arena *a, int i);
tensor *nn_arena_find(nn_arena *a, const char *name); /* NULL when absent */
/* Moves a committed CPU arena to `dev`, storing its f32 tensors as float_dtype (NN_F32, or NN_BF16 on
 * CUDA; other dtypes are copied as they are): one new allocation with the plan recomputed, every
 * tensor converted and copied, the old memory freed. The tensor pointers stay valid; their dtype,
 * device and data change in place. Moving to CPU f32 does nothing. Used to load weights onto a GPU. */
void nn_arena_move(nn_arena *a, nn_device dev, nn_dtype float_dtype);
nn_device nn_arena_device(const nn_arena *a);
/* One line per tensor: name, dtype, shape, bytes, then the total. */
void nn_arena_print_plan(const nn_arena *a, FILE *f);
/* Plan-only mode (process-wide, off by default): nn_arena_commit then allocates nothing and leaves
 * every tensor's data NULL, so a model's memory plan can be built and printed for sizes this machine
 * could not hold (asvr-train plan). Nothing may read or write such tensors. */
void nn_arena_set_plan_only(int on);
int nn_arena_plan_only(void); /* whether plan-only mode is on */
void nn_arena_free(nn_arena *a);

#ifdef __cplusplus
}
#endif
#endif
