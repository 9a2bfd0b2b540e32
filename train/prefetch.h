/* prefetch.h — the micro-batches of the next optimizer step, loaded on a background thread while the
 * current step computes (reading the packed and code stores, decoding and resizing the images), so a
 * GPU step does not wait for the CPU's data work.
 *
 * A step is what asvr-train's loop takes: `accum` micro-batches per rank, or (accum 0) micro-batches
 * until `global_batch` samples. With several ranks (data parallelism) every rank reads the same global
 * sequence of micro-batches (one seeded order, whatever the number of ranks) and the step's global
 * micro-batch j belongs to rank j mod world: a rank decodes the images of its own micro-batches only,
 * and reads the others' rows for their counts, so the step's global counts (what the losses are
 * normalised by) are known to every rank without communication. (world ranks, accum k) and (1 rank,
 * accum world·k) take the same micro-batches. Each loaded step carries the loader's cursor after it,
 * which is what a checkpoint of that step must record (the loader itself is already past the step
 * being prefetched). The data order, and so every loss, is the same with and without prefetching.
 * Not for: the data format (store/batches.h) or anything the model does.
 */
#ifndef ASVR_TRAIN_PREFETCH_H
#define ASVR_TRAIN_PREFETCH_H

#include <stdint.h>

#include "base/error.h"
#include "store/batches.h"

typedef struct step_batches {
    train_batch *mb;      /* this rank's micro-batches */
    int n, cap;
    int n_global;         /* the step's micro-batches over all ranks */
    int rounds;           /* micro-batch rounds every rank runs: ceil(n_global / world) (a rank with fewer
                             micro-batches than rounds contributes empty ones) */
    /* the step's global counts (all ranks' micro-batches) */
    int64_t text_targets, image_positions, tokens, samples, text_only;
    int64_t epoch, index; /* the loader's cursor after this step */
} step_batches;

typedef struct prefetcher prefetcher;

/* background = 0 loads each step when it is taken (no thread). This process is rank `rank` of `world`. */
prefetcher *prefetch_new(data_loader *dl, int64_t accum, int64_t global_batch, int background, int rank, int world);
/* The next step's micro-batches: waits for the background load (or loads now), then starts loading
 * the one after when more is wanted (more = 0 for the last step). Valid until the next call. -1 with
 * err naming the sample or image on a data error. */
int prefetch_take(prefetcher *p, int more, step_batches **out, asvr_error *err);
/* Waits for a running load, frees every batch. */
void prefetch_free(prefetcher *p);

#endif
