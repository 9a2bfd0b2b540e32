/* prefetch.h — the micro-batches of the next optimizer step, loaded on a background thread while the
 * current step computes (reading the packed and code stores, decoding and resizing the images), so a
 * GPU step does not wait for the CPU's data work.
 *
 * A step is what asvr-train's loop takes: `accum` micro-batches, or (accum 0) micro-batches until
 * `global_batch` samples. Each loaded step carries the loader's cursor after it, which is what a
 * checkpoint of that step must record (the loader itself is already past the step being prefetched).
 * The data order, and so every loss, is the same with and without prefetching.
 * Not for: the data format (store/batches.h) or anything the model does.
 */
#ifndef ASVR_TRAIN_PREFETCH_H
#define ASVR_TRAIN_PREFETCH_H

#include <stdint.h>

#include "base/error.h"
#include "store/batches.h"

typedef struct step_batches {
    train_batch *mb;
    int n, cap;
    int64_t text_targets, image_positions, tokens, samples;
    int64_t epoch, index; /* the loader's cursor after this step */
} step_batches;

typedef struct prefetcher prefetcher;

/* background = 0 loads each step when it is taken (no thread). */
prefetcher *prefetch_new(data_loader *dl, int64_t accum, int64_t global_batch, int background);
/* The next step's micro-batches: waits for the background load (or loads now), then starts loading
 * the one after when more is wanted (more = 0 for the last step). Valid until the next call. -1 with
 * err naming the sample or image on a data error. */
int prefetch_take(prefetcher *p, int more, step_batches **out, asvr_error *err);
/* Waits for a running load, frees every batch. */
void prefetch_free(prefetcher *p);

#endif
