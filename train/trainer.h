/* trainer.h — one training run in parts, so that `asvr-train train` reads as the outline of a run:
 *   setup (setup.c)   the model config with this run's choices, the model, its frozen parts, the
 *                     initial weights, the data, the optimizer, the activations and the memory plan;
 *                     `asvr-train plan` builds the same model, optimizer and activations (plan-only);
 *   step (step.c)     one optimizer step over its micro-batches: losses normalised over the whole
 *                     step, forward / loss / backward per micro-batch, the AdamW update;
 *   log (log.c)       log.jsonl (one JSON object per step, kept consistent with the checkpoint on
 *                     resume) and the step line on stderr;
 *   checkpoint        checkpoint.h, with the run's state (trainer_save in step.c).
 * Not for: the model (common/model), the data format (common/store) or the optimizer's maths (optim.h).
 */
#ifndef ASVR_TRAIN_TRAINER_H
#define ASVR_TRAIN_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "base/cli.h"
#include "base/error.h"
#include "dp.h"
#include "model/asvr.h"
#include "nn/comm.h"
#include "optim.h"
#include "prefetch.h"
#include "store/batches.h"

/* The choices of a run that shape the model and its memory (asvr-train train and plan share them). */
typedef struct run_choices {
    const char *stage;          /* pt | it */
    const char *visual_loss;    /* none | semantic | appearance | both */
    const char *input;          /* continuous | discrete */
    const char *attention;      /* auto | kept | flash */
    const char *precision;      /* auto | f32 | bf16 */
    const char *tower_dtype;    /* auto | f32 | bf16 */
    const char *recompute_list; /* NULL, or layers and ranges */
    int64_t recompute;          /* the first N layers */
    int64_t head_chunk;         /* visual head positions per chunk (0: all) */
} run_choices;

void run_choices_default(run_choices *c);
/* The command-line options of the choices (train and plan take the same ones), written to out (room
 * for 16); returns how many. */
int run_choices_options(run_choices *c, asvr_opt *out);
/* Parses the model config JSON into mc and applies the choices for a run on dev. 0; -2 with err for a
 * bad choice (a usage error); -1 with err for a config that cannot do what was asked. */
int run_choices_apply(const run_choices *c, const char *config_json, nn_device dev, asvr_config *mc, asvr_error *err);
/* The model config a run trains: config_json as it is, except that for --visual-loss appearance|both a
 * config without "visual_head_appearance" gets one made from its "visual_head" (embed_dim, n_heads,
 * n_layers, ffn_dim, rms_norm_eps) with the depth, codebook size and code width (code_dim) of the
 * appearance tokenizer file app_tokenizer (when it is one), so one model.json serves every row of
 * Table 1. A new string (free it); NULL with err when app_tokenizer cannot be read. */
char *run_config_with_app_head(const char *config_json, const char *visual_loss, const char *app_tokenizer, asvr_error *err);
/* Declares the model of mc, marks what trains in the stage (pt: all but the LLM; it: all), puts it on
 * dev with the flat layout of `world` ranks at ZeRO stage `zero` (dp.h), and commits it. */
void run_build_model(asvr_model *m, const asvr_config *mc, int stage_it, nn_device dev, int rank, int world, int zero,
                     int64_t bucket_elems);

/* A run's memory: what the trainer allocates (from its arenas' plans) plus the frozen input tower's
 * weights and activations and the codebooks, estimated from the config. Bytes. */
typedef struct run_memory {
    double values, compute, grads, optimizer, step_grad, activations, tower_weights, tower_acts, codebooks, total;
} run_memory;
void run_memory_of(const asvr_model *m, const optim *o, const dp *d, const asvr_acts *a, int max_images,
                   int tower_bf16, run_memory *r);

typedef struct train_opts {
    run_choices rc;
    const char *config, *packed, *codes, *codes_app, *codebooks_app, *image_root, *vision, *vision_prefix,
        *codebooks, *llm, *init, *out, *log_path, *text_only_visual, *device;
    int64_t rows, accum, global_batch, steps, epochs, save_every, threads, seed, max_images, stop_after;
    int64_t zero, bucket_elems, check_replicas; /* data parallelism: ZeRO stage (-1: 2 with several ranks, else
                                                   0), gradient bucket size, replica check period */
    double comm_timeout;
    double lr, warmup_ratio, weight_decay, clip_norm, beta1, beta2, eps, peak_tflops;
    int no_prefetch;
} train_opts;

/* Everything a run holds. */
typedef struct trainer {
    train_opts o;
    nn_device dev;
    comm *comm;               /* the ranks (one, without a launcher) */
    int rank, world, zero;
    dp dp;
    char *config_text;        /* the model config JSON (recorded in every checkpoint) */
    asvr_config mc;
    asvr_model m;
    optim opt;
    asvr_acts *acts;
    int T, max_images;        /* positions per row, images per micro-batch */
    data_loader *dl;
    uint16_t *zero_codes;     /* --text-only-visual reference: the zero image's codes [P, D] */
    int64_t total, step;      /* optimizer steps of the run, and taken */
    char *ckpt;               /* the checkpoint resumed from (NULL: a new run) */
    double flops_per_token;   /* model FLOPs per token, for the MFU column */
    run_memory mem;
    FILE *log;
    char *log_path;
} trainer;

/* Sets up the run (exits with a usage error or a fatal naming the file on bad input). */
void trainer_setup(trainer *t, const train_opts *o, const asvr_cli *cli);
void trainer_free(trainer *t);

/* What one step did. */
typedef struct step_stats {
    asvr_losses L;
    double lr, grad_norm, clip_coef, seconds;
    int64_t tokens, samples;
    int rounds; /* micro-batch rounds of every rank */
    int first; /* the first step of this invocation */
    int64_t collectives[COMM_NKINDS]; /* this rank's collectives during the step, by kind */
} step_stats;
/* One optimizer step over the micro-batches of sb; t->step += 1. */
void trainer_step(trainer *t, step_batches *sb, step_stats *st);
/* -1 with err naming the step when its loss or gradient norm is not finite (the run must stop
 * without logging or saving it: the parameters are no longer finite either). */
int trainer_step_check(const trainer *t, const step_stats *st, asvr_error *err);
/* The CPU backend's BLAS threads (OPENBLAS_NUM_THREADS, else the cores): CPU results depend on it,
 * so state.json and every log.jsonl line record it. */
int trainer_blas_threads(void);
/* Writes the checkpoint of the current step (the data cursor after sb); -1 with err. */
int trainer_save(trainer *t, const step_batches *sb, asvr_error *err);

/* log.jsonl in the run folder, cut back to the lines the resumed checkpoint covers. */
void train_log_open(trainer *t);
/* One JSON line and the step line on stderr. */
void train_log_step(trainer *t, const step_stats *st);
void train_log_close(trainer *t);

#endif
