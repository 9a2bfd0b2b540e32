/* weights.h — loading a model's parameters from safetensors into one planned arena.
 *
 * A model declares each tensor it expects (name after a prefix, shape); weights_load then checks
 * that every one exists with exactly that shape (naming the first missing or mis-shaped key and its
 * file), makes the single allocation, and converts each tensor to fp32 (st_tensor_to_f32). With a
 * target set (weights_loader_target), the arena then moves to that device and dtype (CUDA bf16 or
 * f32, via nn_arena_move); the tensor pointers stay valid.
 * Tensors in the file that nobody asked for are ignored (later layers, heads, other towers).
 * Not for: writing checkpoints or sharding decisions.
 */
#ifndef ASVR_MODEL_WEIGHTS_H
#define ASVR_MODEL_WEIGHTS_H

#include <stdint.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "nn/tensor.h"

typedef struct weights_want_entry {
    char key[256];   /* full safetensors name */
    tensor *t;       /* in the arena */
    int pad_rows;    /* the file may hold this many extra trailing rows (ignored) */
} weights_want_entry;

typedef struct weights_loader {
    const safetensors *st;
    char prefix[128];
    nn_arena *arena;              /* handed to the model; it owns it after weights_load */
    weights_want_entry *want;
    int n, cap;
    nn_device device;             /* where the weights end up (default NN_CPU) */
    nn_dtype dtype;               /* their float dtype there (default NN_F32) */
} weights_loader;

void weights_loader_init(weights_loader *wl, const char *arena_label, const safetensors *st,
                         const char *prefix);
/* Where weights_load puts the weights: CPU f32 (the default), CUDA f32 or CUDA bf16. */
void weights_loader_target(weights_loader *wl, nn_device dev, nn_dtype dtype);
/* weights_loader_init then weights_loader_target(dev, NN_F32): the trainer's f32 towers. */
void weights_loader_init_on(weights_loader *wl, const char *arena_label, const safetensors *st,
                            const char *prefix, nn_device dev);
/* Declares prefix + printf(fmt, ...) with the given shape; returns the (not yet filled) tensor. */
tensor *weights_want(weights_loader *wl, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same, but the file's tensor may have up to pad_rows more rows in dim 0; only the first
 * shape[0] rows are loaded (an nn.Embedding padding row, for example). */
tensor *weights_want_padded(weights_loader *wl, int ndim, const int64_t *shape, int pad_rows,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Checks, allocates, converts. On -1 err names the key; the arena stays in wl->arena (free it).
 * The entry list is freed either way. */
int weights_load(weights_loader *wl, asvr_error *err);

#endif
