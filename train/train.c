/* train.c — `asvr-train train`: the outline of a run over its parts (trainer.h): set up, then step,
 * log and checkpoint until done, with exact resume. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/log.h"
#include "commands.h"
#include "trainer.h"

int run_choices_options(run_choices *c, asvr_opt *out) {
    const asvr_opt opts[] = {
        {"stage", ASVR_OPT_STR, &c->stage, "pt|it", "pt trains mm_projector + visual head; it also the LLM"},
        {"visual-loss", ASVR_OPT_STR, &c->visual_loss, "none|semantic|appearance|both",
         "none = the LLaVA baseline; semantic (default) = ASVR; appearance / both = Table 1's App. and Dual rows"},
        {"input", ASVR_OPT_STR, &c->input, "continuous|discrete", "projector input: SigLIP features or summed codebook rows"},
        {"attention", ASVR_OPT_STR, &c->attention, "auto|kept|flash",
         "LLM attention: kept stores the [rows, heads, T, T] probabilities for the backward, flash only their "
         "log-sum-exp and recomputes them (auto: flash on cuda, kept on cpu)"},
        {"tower-dtype", ASVR_OPT_STR, &c->tower_dtype, "auto|f32|bf16",
         "the frozen input tower's storage on cuda (auto: bf16, as the reference runs it; the cpu is always f32)"},
        {"precision", ASVR_OPT_STR, &c->precision, "auto|f32|bf16",
         "the trained model's compute on cuda: bf16 = bf16 weight copies for the GEMMs, bf16 kept LLM activations "
         "and logits, f32 master weights, gradients and AdamW state; f32 = f32 everywhere (auto: bf16 on cuda; "
         "the cpu is always f32)"},
        {"recompute", ASVR_OPT_INT, &c->recompute, "N",
         "recompute the activations of the first N LLM layers in the backward instead of keeping them (default 0)"},
        {"recompute-layers", ASVR_OPT_STR, &c->recompute_list, "LIST",
         "recompute these LLM layers instead (a comma-separated list of layers and ranges, e.g. 0-15,20)"},
        {"head-chunk", ASVR_OPT_INT, &c->head_chunk, "N",
         "run the visual head over chunks of N image positions (its activations are planned for one chunk; "
         "default 0: all of a micro-batch's positions at once)"},
    };
    int n = (int)(sizeof opts / sizeof opts[0]);
    memcpy(out, opts, sizeof opts);
    return n;
}

int cmd_train(int argc, char **argv) {
    train_opts o = {.text_only_visual = "none", .vision_prefix = "vision_model.", .rows = 1, .accum = 0,
                    .global_batch = 0, .epochs = 1, .save_every = 0, .seed = 0, .max_images = 0, .lr = -1,
                    .warmup_ratio = 0.03, .weight_decay = 0, .clip_norm = 0, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                    .device = "cpu", .peak_tflops = 989, .zero = -1, .bucket_elems = DP_BUCKET_DEFAULT};
    run_choices_default(&o.rc);
    asvr_opt opts[64];
    int n = run_choices_options(&o.rc, opts);
    const asvr_opt own[] = {
        {"zero", ASVR_OPT_INT, &o.zero, "0|1|2",
         "with several ranks (mpirun/srun): 0 = every rank keeps the whole optimizer state (all-reduce), 1 = AdamW "
         "state sharded, gradients reduce-scattered once per step, 2 = AdamW state and gradients sharded, buckets "
         "reduce-scattered during every backward (default 2 with several ranks, 0 with one)"},
        {"bucket-elems", ASVR_OPT_COUNT, &o.bucket_elems, "N",
         "gradient bucket size in elements for the reductions between ranks (default 16777216)"},
        {"comm-timeout", ASVR_OPT_F64, &o.comm_timeout, "SECONDS",
         "a collective that waits longer ends every rank with an error naming the missing ranks (default 600)"},
        {"check-replicas", ASVR_OPT_INT, &o.check_replicas, "N",
         "every N steps, check that every rank holds the same parameters (a hash compared across ranks)"},
        {"config", ASVR_OPT_STR, &o.config, "FILE", "model config JSON (llm, vision, visual_head); default: the checkpoint's"},
        {"packed", ASVR_OPT_STR, &o.packed, "FILE", "packed store (asvr-pack build)"},
        {"codes", ASVR_OPT_STR, &o.codes, "STORE", "code store of the same images and policy (asvr-tokenize encode)"},
        {"codes-app", ASVR_OPT_STR, &o.codes_app, "STORE", "appearance tokenizer's code store (--visual-loss appearance|both)"},
        {"codebooks-app", ASVR_OPT_STR, &o.codebooks_app, "FILE", "the appearance tokenizer file (its codebooks)"},
        {"image-root", ASVR_OPT_STR, &o.image_root, "DIR", "folder the image keys are relative to"},
        {"vision", ASVR_OPT_STR, &o.vision, "FILE", "frozen SigLIP input tower (safetensors, HF names)"},
        {"vision-prefix", ASVR_OPT_STR, &o.vision_prefix, "P", "name prefix of the tower's tensors (default vision_model.)"},
        {"codebooks", ASVR_OPT_STR, &o.codebooks, "FILE", "vision tokenizer file whose codebooks feed the visual head"},
        {"llm", ASVR_OPT_STR, &o.llm, "FILE", "HF LLaMA weights (.safetensors or .index.json) for llm.*"},
        {"init", ASVR_OPT_STR, &o.init, "FILE", "parameters to start from (e.g. a stage-pt checkpoint's model.safetensors)"},
        {"out", ASVR_OPT_STR, &o.out, "DIR", "run folder: checkpoints, log.jsonl (resumes from its newest checkpoint)"},
        {"text-only-visual", ASVR_OPT_STR, &o.text_only_visual, "none|reference",
         "text-only samples add no visual loss (none, default) or, as the reference, score zero states against a zero image's codes"},
        {"rows", ASVR_OPT_COUNT, &o.rows, "N", "packed rows per micro-batch (default 1)"},
        {"global-batch", ASVR_OPT_COUNT, &o.global_batch, "N",
         "samples per optimizer step: micro-batches accumulate until N samples (default 256 for pt, 128 for it)"},
        {"accum", ASVR_OPT_COUNT, &o.accum, "N", "or a fixed number of micro-batches per step (overrides --global-batch)"},
        {"steps", ASVR_OPT_COUNT, &o.steps, "N", "optimizer steps (default: --epochs over the packed rows)"},
        {"epochs", ASVR_OPT_COUNT, &o.epochs, "N", "epochs when --steps is not given (default 1)"},
        {"lr", ASVR_OPT_F64, &o.lr, "X", "peak learning rate (default 1e-3 for pt, 2e-5 for it)"},
        {"warmup-ratio", ASVR_OPT_FRAC, &o.warmup_ratio, "X", "linear warmup share of the steps (default 0.03)"},
        {"weight-decay", ASVR_OPT_F64, &o.weight_decay, "X", "decoupled weight decay on matrices (default 0)"},
        {"clip-norm", ASVR_OPT_F64, &o.clip_norm, "X", "clip the global gradient norm (default off)"},
        {"save-every", ASVR_OPT_INT, &o.save_every, "N", "checkpoint every N steps (and always at the end)"},
        {"stop-after", ASVR_OPT_INT, &o.stop_after, "N", "stop (with a checkpoint) after N steps of this invocation; rerun to go on"},
        {"no-prefetch", ASVR_OPT_FLAG, &o.no_prefetch, NULL,
         "read and decode each step's data when it is needed instead of during the step before (same losses)"},
        {"seed", ASVR_OPT_INT, &o.seed, "N", "seed of the data order and of random initialisation (default 0)"},
        {"threads", ASVR_OPT_COUNT, &o.threads, "N", "image decode threads (default: cores)"},
        {"max-images", ASVR_OPT_COUNT, &o.max_images, "N", "images per micro-batch to plan for (default: from the store)"},
        {"device", ASVR_OPT_STR, &o.device, "cpu|cuda", "where parameters, optimizer state and activations live (default cpu)"},
        {"peak-tflops", ASVR_OPT_POS, &o.peak_tflops, "X",
         "peak TFLOP/s of the GPU for the MFU column (default 989: H100/H200 dense bf16)"},

    };
    memcpy(opts + n, own, sizeof own);
    n += (int)(sizeof own / sizeof own[0]);
    const asvr_cli cli = {"asvr-train train", "--packed FILE --codes STORE --out DIR [options]",
                          "Trains ASVR (or the text-only baseline) from a packed store and a code store. Each step\n"
                          "prints one line; log.jsonl keeps every step; checkpoints make a rerun resume exactly.",
                          opts, n, 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!o.packed || !o.codes || !o.out) asvr_cli_usage_error(&cli, "--packed, --codes and --out are required");
    if (o.rows < 1 || o.accum < 0 || o.global_batch < 0) asvr_cli_usage_error(&cli, "--rows must be >= 1, --accum and --global-batch >= 0");
    int want_app = !strcmp(o.rc.visual_loss, "appearance") || !strcmp(o.rc.visual_loss, "both");
    if (want_app && (!o.codes_app || !o.codebooks_app))
        asvr_cli_usage_error(&cli, "--visual-loss %s needs --codes-app and --codebooks-app", o.rc.visual_loss);
    int stage_it = !strcmp(o.rc.stage, "it");
    if (o.global_batch == 0) o.global_batch = stage_it ? 128 : 256;
    if (o.lr < 0) o.lr = stage_it ? 2e-5 : 1e-3;
    if (o.threads <= 0) o.threads = asvr_num_cores();
    if (!(o.peak_tflops > 0)) asvr_cli_usage_error(&cli, "--peak-tflops must be > 0");
    if (o.zero < -1 || o.zero > 2) asvr_cli_usage_error(&cli, "--zero must be 0, 1 or 2");
    if (o.bucket_elems < 1) asvr_cli_usage_error(&cli, "--bucket-elems must be >= 1");
    if (o.comm_timeout < 0 || o.comm_timeout != o.comm_timeout) asvr_cli_usage_error(&cli, "--comm-timeout must be >= 0");
    if (o.check_replicas < 0) asvr_cli_usage_error(&cli, "--check-replicas must be >= 0");

    trainer t;
    trainer_setup(&t, &o, &cli);
    train_log_open(&t);
    /* the next step's data is read and its images decoded on a background thread while this one computes */
    prefetcher *pf = prefetch_new(t.dl, o.accum, o.global_batch, !o.no_prefetch, t.rank, t.world);
    int rc = ASVR_EXIT_OK;
    int64_t first_step = t.step;
    asvr_error err;
    while (t.step < t.total) {
        int stop_now = o.stop_after > 0 && t.step + 1 - first_step >= o.stop_after;
        int last = t.step + 1 >= t.total || stop_now;
        step_batches *sb;
        if (prefetch_take(pf, !last, &sb, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        step_stats st;
        trainer_step(&t, sb, &st);
        if (trainer_step_check(&t, &st, &err) < 0) {
            LOG_ERROR("%s", err.msg);
            rc = ASVR_EXIT_FAIL;
            break;
        }
        st.first = t.step == first_step + 1;
        train_log_step(&t, &st);
        if ((o.save_every > 0 && t.step % o.save_every == 0) || t.step == t.total || stop_now) {
            if (trainer_save(&t, sb, &err) < 0) {
                LOG_ERROR("%s", err.msg);
                rc = ASVR_EXIT_FAIL;
                break;
            }
            LOG_INFO("checkpoint: step %lld", (long long)t.step);
        }
        if (stop_now) {
            LOG_INFO("stopping after %lld steps (--stop-after); rerun to continue from step %lld", (long long)o.stop_after,
                     (long long)t.step);
            break;
        }
    }
    prefetch_free(pf);
    train_log_close(&t);
    trainer_free(&t);
    return rc;
}
