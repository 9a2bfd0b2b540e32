/* batches.h — training micro-batches (asvr-train's data; asvr-eval's code-accuracy check reads the
 * same): rows of the packed store expanded to positions (the image placeholder becomes the image's
 * positions), with labels, positions restarting per sample, segment
 * ids, the image positions, the codes from the code store and the images decoded and preprocessed
 * by worker threads with the store's policy. Row order is a seeded permutation per epoch; the
 * cursor (epoch, index) is all the state a checkpoint needs to resume it exactly.
 * Not for: the model (model/asvr.h) or the loss.
 */
#ifndef ASVR_STORE_BATCHES_H
#define ASVR_STORE_BATCHES_H

#include <stdint.h>

#include "base/error.h"
#include "store/code_store.h"
#include "store/packed_store.h"

#define DATA_PAD_ID 0

typedef struct train_batch {
    int B, T;            /* rows × positions (T = the store's max_len) */
    int32_t *ids;        /* [B*T] token id; IMAGE_TOKEN_INDEX at image positions; 0 at padding */
    int32_t *labels;     /* [B*T] HF convention: the id where supervised, else -100 (not shifted) */
    int32_t *pos, *seg;  /* [B*T] positions restart at 0 per sample; segment = sample index in the row, -1 padding */
    int n_images;
    int P, D;            /* positions per image, code depth */
    int32_t *image_pos;  /* [n_images*P] flat row*T+t of each image position; -1 where truncated away */
    uint16_t *codes;     /* [n_images*P*D] */
    uint16_t *codes_app; /* [n_images*P*D_app] from the appearance code store (NULL without one) */
    int D_app;
    float *pixels;       /* [n_images*3*S*S] normalised images (NULL when images are not needed) */
    int S;
    int64_t n_samples, n_tokens, n_text_targets, n_image_positions;
    int n_text_only;     /* samples without an image */
} train_batch;

typedef struct data_config {
    const char *packed, *codes, *image_root;
    const char *codes_app; /* optional second code store (appearance tokenizer) */
    int rows_per_batch;
    uint64_t seed;
    int need_pixels;     /* 0 with --input discrete: only codes are needed */
    int image_size;      /* S of the model's input images (the tower's, or the largest S2 scale); the code
                            store must have been made from images prepared at this size (its input_size) */
    float mean[3], std[3];
    uint8_t pad[3];
    int threads;
} data_config;

typedef struct data_loader data_loader;

int data_open(const data_config *c, data_loader **out, asvr_error *err);
void data_close(data_loader *d);
int64_t data_rows(const data_loader *d);
int64_t data_samples(const data_loader *d);
int data_max_len(const data_loader *d);
/* Next micro-batch at the cursor; advances it (a new epoch reshuffles). -1 with err naming the
 * sample or image on failure (missing code record, bad image). */
int data_next(data_loader *d, train_batch *b, asvr_error *err);
/* Same, with pixels = 0: the images are not decoded (b->pixels stays NULL; everything else, counts
 * included, as data_next gives it): another rank's micro-batch, whose counts this rank needs. */
int data_next_ex(data_loader *d, train_batch *b, int pixels, asvr_error *err);
void data_get_cursor(const data_loader *d, int64_t *epoch, int64_t *index);
void data_set_cursor(data_loader *d, int64_t epoch, int64_t index);
void train_batch_free(train_batch *b);
/* The packed store's source-JSON fingerprint and the code store's tokenizer fingerprint. */
const char *data_packed_fingerprint(const data_loader *d);
const char *data_codes_fingerprint(const data_loader *d);
const char *data_codes_app_fingerprint(const data_loader *d); /* NULL without an appearance store */

#endif
