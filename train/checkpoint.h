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

/* state: a JSON object the caller fills (it is written as state.json; "step" is required). */
int checkpoint_save(const char *out_dir, int64_t step, const param_set *ps, const optim *o, json_t *state,
                    asvr_error *err);
/* Newest "<out>/step-N" with DONE; returns 1 and its path (malloc'd) and step, 0 when none. */
int checkpoint_find_latest(const char *out_dir, char **path, int64_t *step);
/* Loads parameters (all of ps) and, when o is non-NULL, the optimizer moments; *state = state.json. */
int checkpoint_load(const char *dir, param_set *ps, optim *o, json_t **state, asvr_error *err);

#endif
