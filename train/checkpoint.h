/* checkpoint.h — training checkpoints: a folder "<out>/step-<N>/" holding model.safetensors (every
 * parameter), optimizer.safetensors (AdamW m and v of the trainable ones), state.json (step, data
 * cursor, seed, settings, store fingerprints, the model config) and, written last, DONE. The folder
 * is built as "step-<N>.tmp" and renamed, so a crash leaves no half checkpoint under a real name.
 * Resume picks the newest folder with DONE.
 * Not for: HF-style exports (train's --export).
 */
#ifndef ASVR_TRAIN_CHECKPOINT_H
#define ASVR_TRAIN_CHECKPOINT_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"
#include "model/params.h"
#include "optim.h"

/* Several ranks saving one checkpoint (data parallelism): every rank calls checkpoint_save with the
 * same arguments; the writer writes the files. A tensor's optimizer state is completed on the writer
 * by gather(ctx, full, n): every rank passes n floats holding its own segments and -0.0 elsewhere,
 * and the writer gets the elementwise sum, which is exact (x + -0.0 = x for every x) — the state
 * streams through the writer one tensor at a time. agree(ctx, rc) returns the worst rc of all ranks
 * (a failure on the writer fails every rank). NULL: one process. */
typedef struct checkpoint_ranks {
    int writer;
    void (*gather)(void *ctx, float *full, int64_t n);
    int (*agree)(void *ctx, int rc);
    void *ctx;
} checkpoint_ranks;

/* state: a JSON object the caller fills (it is written as state.json; "step" is required). The files
 * hold every parameter and the full optimizer state whatever the ranks, so a run saved with N ranks
 * resumes with any number. */
int checkpoint_save(const char *out_dir, int64_t step, const param_set *ps, const optim *o, json_t *state,
                    const checkpoint_ranks *ranks, asvr_error *err);
/* Newest "<out>/step-N" with DONE; returns 1 and its path (malloc'd) and step, 0 when none. */
int checkpoint_find_latest(const char *out_dir, char **path, int64_t *step);
/* Loads parameters (all of ps) and, when o is non-NULL, the optimizer moments (this rank's segments
 * of them); *state = state.json. */
int checkpoint_load(const char *dir, param_set *ps, optim *o, json_t **state, asvr_error *err);

/* What a resume takes from state.json, every field checked: step and epoch whole numbers >= 0, the
 * cursor index within 0..rows (the packed store's), the two data fingerprints 16 hex digits,
 * blas_threads (-1 when absent, as in checkpoints from before it was recorded). -1 with err naming
 * the field. */
typedef struct checkpoint_state {
    int64_t step, epoch, index, blas_threads;
    const char *packed_fp, *codes_fp; /* point into the JSON */
} checkpoint_state;
int checkpoint_state_parse(const json_t *state, int64_t rows, checkpoint_state *out, asvr_error *err);

#endif
