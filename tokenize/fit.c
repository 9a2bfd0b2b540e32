/* asvr-tokenize fit — a new tokenizer from an existing encoder: residual k-means on its tap-layer
 * features over a seeded sample of images.
 *
 * Steps: read the image list; pick --sample images (seeded, kept in list order); decode and
 * preprocess them exactly as encode does and run the encoder to --tap-layer on --batch images at a
 * time (--threads workers, each with a single-threaded BLAS), keeping every position's feature as a
 * training vector;
 * fit D codebooks by residual k-means (model/kmeans.h); write the source file's tensors unchanged
 * except the codebooks, with the config's depth / codebook_size / tap_layer replaced and a "fit"
 * record added. The result is deterministic for the same inputs and seed, whatever --threads is. */
#include <cblas.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/progress.h"
#include "commands.h"
#include "image_list.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "model/kmeans.h"
#include "model/siglip.h"
#include "model/vision_tokenizer.h"

/* ---- features: worker threads, each running whole batches ------------------------------------ */

typedef struct feat_job {
    const char *root;
    char **keys;   /* the sample, in order */
    size_t n;      /* images in the sample */
    int B, S, P, C;
    const siglip *enc;
    image_decode_opts dopts;
    image_preprocess_opts popts;
    float mean[3], std[3];
    float *feats;  /* n x P x C: image i's rows at i*P, compacted afterwards */
    char **errors; /* per image: NULL or a malloc'd reason */
    asvr_progress *bar;
    _Atomic size_t next_batch;
} feat_job;

/* Batch b is always images [b*B, (b+1)*B) minus the bad ones, run in one forward pass with a
 * single-threaded BLAS, so its features do not depend on which worker runs it or how many there are. */
static void *feat_worker(void *arg) {
    feat_job *j = arg;
    size_t img_floats = (size_t)3 * j->S * j->S, row = (size_t)j->P * (size_t)j->C;
    uint8_t *u8 = asvr_malloc((size_t)j->S * (size_t)j->S * 3, "a preprocessed image");
    float *px = asvr_malloc(sizeof(float) * img_floats * (size_t)j->B, "a batch of images");
    float *out = asvr_malloc(sizeof(float) * row * (size_t)j->B, "a batch of features");
    size_t *where = asvr_malloc(sizeof(size_t) * (size_t)j->B, "a batch's image indices");
    siglip_acts *acts = siglip_acts_new(j->enc, j->B);
    for (;;) {
        size_t b0 = atomic_fetch_add(&j->next_batch, 1) * (size_t)j->B;
        if (b0 >= j->n) break;
        size_t n = j->n - b0 < (size_t)j->B ? j->n - b0 : (size_t)j->B;
        int ok = 0;
        for (size_t i = b0; i < b0 + n; i++) {
            char *path = asvr_path_join(j->root, j->keys[i]);
            image_rgb img = {0};
            asvr_error err;
            if (image_decode_file(path, &j->dopts, &img, &err) < 0 || image_preprocess(&img, &j->popts, u8, &err) < 0) {
                j->errors[i] = asvr_strdup(err.msg);
            } else {
                image_normalize_chw(u8, j->S, j->S, j->mean, j->std, px + img_floats * (size_t)ok);
                where[ok++] = i;
            }
            image_free(&img);
            free(path);
        }
        if (ok) {
            tensor img = tensor_make("images", NN_F32, NN_CPU, 4, (int64_t[]){ok, 3, j->S, j->S}, px);
            tensor fo = tensor_make("features", NN_F32, NN_CPU, 3, (int64_t[]){ok, j->P, j->C}, out);
            siglip_forward(j->enc, acts, &img, &fo);
            for (int k = 0; k < ok; k++) memcpy(j->feats + row * where[k], out + row * (size_t)k, sizeof(float) * row);
        }
        asvr_progress_add(j->bar, (uint64_t)n);
    }
    siglip_acts_free(acts);
    free(where);
    free(out);
    free(px);
    free(u8);
    return NULL;
}

/* ---- progress ------------------------------------------------------------------------------------ */

typedef struct fit_progress {
    asvr_progress *bar;
    int K, iters;
} fit_progress;

static void end_bar(fit_progress *p) {
    if (p->bar) asvr_progress_end(p->bar);
    p->bar = NULL;
}

static void on_seeded(void *ctx, int depth, int k) {
    fit_progress *p = ctx;
    if (k == 1) {
        end_bar(p);
        char label[64];
        snprintf(label, sizeof label, "depth %d: k-means++", depth);
        p->bar = asvr_progress_begin(label, (uint64_t)p->K, "centroids");
    }
    asvr_progress_add(p->bar, 1);
}

static void on_iter(void *ctx, int depth, int iter, double mse, int64_t changed) {
    fit_progress *p = ctx;
    if (iter == 1) {
        end_bar(p);
        char label[64];
        snprintf(label, sizeof label, "depth %d: Lloyd", depth);
        p->bar = asvr_progress_begin(label, (uint64_t)p->iters + 1, "steps");
    }
    asvr_progress_add(p->bar, 1);
    LOG_DEBUG("depth %d, assignment %d: mse %.6g, %lld vectors changed cluster", depth, iter, mse, (long long)changed);
}

static void on_depth(void *ctx, int depth, double before, double after, const kmeans_stats *st) {
    fit_progress *p = ctx;
    end_bar(p);
    LOG_INFO("depth %d: residual mean square %.6g -> %.6g (%.1f%% of it removed); %d Lloyd updates%s, %lld empty "
             "clusters re-seeded",
             depth, before, after, before > 0 ? 100.0 * (before - after) / before : 0.0, st->iters,
             st->converged ? " (converged)" : "", (long long)st->reseeded);
    if (before > 0 && !(after < before)) LOG_WARN("depth %d did not reduce the residual (%.6g -> %.6g)", depth, before, after);
}

/* ---- the command --------------------------------------------------------------------------------- */

static int starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

int cmd_fit(int argc, char **argv) {
    const char *enc_path = NULL, *json = NULL, *list = NULL, *root = "", *policy_s = NULL, *out = NULL, *stats = NULL,
               *pad_s = NULL;
    int64_t depth = 0, ksize = 0, tap = 0, sample = 0, iters = 20, seed = 0, threads = 0, batch_size = 8,
            max_mib = 8192, max_errors = -1, max_pixels = (int64_t)IMAGE_DEFAULT_MAX_PIXELS;
    int accept = 0, exif = 0;
    const asvr_opt opts[] = {
        {"encoder", ASVR_OPT_STR, &enc_path, "FILE", "tokenizer file whose encoder is reused (its codebooks are ignored)"},
        {"json", ASVR_OPT_STR, &json, "FILE", "LLaVA JSON (.json/.json.zst): its \"image\" keys, deduplicated"},
        {"list", ASVR_OPT_STR, &list, "FILE", "or a list file: one image path per line ('#' comments)"},
        {"image-root", ASVR_OPT_STR, &root, "DIR", "folder the image paths are relative to"},
        {"policy", ASVR_OPT_STR, &policy_s, "pad|squash", "preprocessing, as for encode; required"},
        {"depth", ASVR_OPT_COUNT, &depth, "D", "codebooks (residual depths) to fit, 1..255; required"},
        {"codebook-size", ASVR_OPT_COUNT, &ksize, "K", "rows per codebook, 1..65536, at most the training vectors; required"},
        {"tap-layer", ASVR_OPT_COUNT, &tap, "L", "encoder layer whose output is quantised (default: the source's)"},
        {"sample", ASVR_OPT_COUNT, &sample, "N", "train on a seeded random sample of N images (default: all)"},
        {"iters", ASVR_OPT_COUNT, &iters, "I", "Lloyd iterations per depth at most (default 20; stops early when stable)"},
        {"seed", ASVR_OPT_INT, &seed, "S", "seed of the image sample and of k-means++ (default 0)"},
        {"threads", ASVR_OPT_COUNT, &threads, "T", "worker threads (default: the number of cores; results do not depend on it)"},
        {"batch", ASVR_OPT_COUNT, &batch_size, "B", "images per encoder forward pass (default 8; part of the request: float rounding depends on it)"},
        {"max-memory", ASVR_OPT_COUNT, &max_mib, "MIB", "refuse a training set + k-means scratch larger than this (default 8192)"},
        {"out", ASVR_OPT_STR, &out, "FILE", "the new tokenizer (.safetensors, written atomically); required"},
        {"stats", ASVR_OPT_STR, &stats, "FILE", "write a JSON summary (counts, MSE per depth, times)"},
        {"pad", ASVR_OPT_STR, &pad_s, "R,G,B", "pad colour (default: the encoder's)"},
        {"max-errors", ASVR_OPT_INT, &max_errors, "N", "fail after more than N bad or missing images (default: never)"},
        {"max-pixels", ASVR_OPT_COUNT, &max_pixels, "N", "refuse larger images (default 89478485, Pillow's)"},
        {"accept-warnings", ASVR_OPT_FLAG, &accept, NULL, "decode truncated/corrupt JPEG data anyway"},
        {"exif", ASVR_OPT_FLAG, &exif, NULL, "apply EXIF orientation (the reference does not)"},
    };
    const asvr_cli cli = {
        "asvr-tokenize fit",
        "--encoder FILE (--json FILE | --list FILE) [--image-root DIR] --policy pad|squash --depth D --codebook-size K "
        "--out NEW.safetensors [--tap-layer L] [--sample N] [--iters I] [--seed S] [--threads T] [--batch B] [--stats FILE]",
        "Makes a new tokenizer from any SigLIP-shaped encoder: computes the tap-layer features of a sample of\n"
        "images (every position is a training vector) and fits D codebooks of K rows by residual k-means\n"
        "(k-means++ seeding, Lloyd iterations; residual -= nearest row, as encoding does). The output holds the\n"
        "source's encoder tensors unchanged, the new codebooks, and the config with a \"fit\" record; its\n"
        "fingerprint differs from the source's, so code stores made with it are kept apart. The same inputs\n"
        "and seed give a byte-identical file. A rerun whose output records the same request does nothing.",
        opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!!json == !!list) asvr_cli_usage_error(&cli, "give exactly one of --json and --list");
    if (!enc_path || !out || !policy_s || !depth || !ksize)
        asvr_cli_usage_error(&cli, "--encoder, --policy, --depth, --codebook-size and --out are required");
    image_policy policy;
    if (image_policy_parse(policy_s, &policy) < 0) asvr_cli_usage_error(&cli, "--policy must be pad or squash");
    if (depth < 1 || depth > 255) asvr_cli_usage_error(&cli, "--depth must be in 1..255");
    if (ksize < 1 || ksize > 65536) asvr_cli_usage_error(&cli, "--codebook-size must be in 1..65536");
    if (tap < 0) asvr_cli_usage_error(&cli, "--tap-layer must be >= 1");
    if (sample < 0) asvr_cli_usage_error(&cli, "--sample must be >= 1");
    if (iters < 0 || iters > 100000) asvr_cli_usage_error(&cli, "--iters must be in 0..100000");
    if (seed < 0) asvr_cli_usage_error(&cli, "--seed must be >= 0");
    if (batch_size < 1 || batch_size > 1024) asvr_cli_usage_error(&cli, "--batch must be in 1..1024");
    if (max_mib < 1) asvr_cli_usage_error(&cli, "--max-memory must be >= 1");
    if (threads <= 0) threads = asvr_num_cores();
    if (threads > asvr_max_threads())
        asvr_cli_usage_error(&cli, "--threads %lld: at most %d on this machine (%d cores)", (long long)threads,
                             asvr_max_threads(), asvr_num_cores());
    uint8_t pad[3];
    if (pad_s && image_list_parse_rgb(pad_s, pad) < 0) asvr_cli_usage_error(&cli, "--pad expects R,G,B with values 0..255");

    asvr_error err;
    double t_start = asvr_now();
    /* The source: a tokenizer file (config + encoder); its codebooks are not needed. */
    safetensors *st;
    if (safetensors_open(enc_path, &st, &err) < 0) ASVR_FATAL("check --encoder", "%s", err.msg);
    const char *src_cfg_text = safetensors_metadata(st, VTOK_META_KEY);
    if (!src_cfg_text)
        ASVR_FATAL("--encoder takes a tokenizer file (tools/convert_tokenizer.py makes one)",
                   "'%s' has no \"%s\" entry in its __metadata__: not an asvr tokenizer file", enc_path, VTOK_META_KEY);
    vtok_config vc;
    if (vtok_config_parse(src_cfg_text, &vc, &err) < 0) ASVR_FATAL("check --encoder", "'%s': %s", enc_path, err.msg);
    if (vc.kind_id != VTOK_SEMANTIC)
        ASVR_FATAL("fit from a semantic tokenizer file (the same encoder, converted with --kind semantic)",
                   "'%s' is a '%s' tokenizer: fit makes codebooks for the raw tap features and cannot fit the "
                   "appearance projection's", enc_path, vc.kind);
    char src_fp[17];
    if (vision_tokenizer_fingerprint_file(enc_path, src_fp, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    if (tap) vc.enc.tap = (int)tap;
    if (siglip_config_check(&vc.enc, &err) < 0) ASVR_FATAL("choose --tap-layer within the encoder's layers", "%s", err.msg);
    if (!pad_s) memcpy(pad, vc.pad, 3);
    int S = vc.enc.image_size, P = siglip_num_patches(&vc.enc), C = vc.enc.hidden, K = (int)ksize, D = (int)depth;

    image_list keys = {0};
    if ((json ? image_list_read_json(json, &keys, &err) : image_list_read_file(list, &keys, &err)) < 0)
        ASVR_FATAL("check the input path", "%s", err.msg);
    if (!keys.n) ASVR_FATAL("give a list with images", "'%s' names no images", json ? json : list);
    size_t n_sample = (sample && (size_t)sample < keys.n) ? (size_t)sample : keys.n;
    int64_t *pick = asvr_malloc(sizeof(int64_t) * n_sample, "the image sample");
    kmeans_sample_indices((uint64_t)seed ^ 0x5851f42d4c957f2dull, (int64_t)keys.n, (int64_t)n_sample, pick);
    /* Fingerprint of the request: a rerun that asks for the same thing is a no-op. */
    asvr_hasher *hs = asvr_hasher_new(0);
    for (size_t i = 0; i < n_sample; i++) asvr_hasher_update(hs, keys.keys[pick[i]], strlen(keys.keys[pick[i]]) + 1);
    char sample_fp[17];
    asvr_hash_hex(asvr_hasher_digest(hs), sample_fp);
    asvr_hasher_free(hs);
    char pad_str[16];
    snprintf(pad_str, sizeof pad_str, "%d,%d,%d", pad[0], pad[1], pad[2]);
    json_t *request = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:b, s:I}", "source_fingerprint", src_fp,
                                "images_fingerprint", sample_fp, "policy", image_policy_name(policy), "depth", D,
                                "codebook_size", K, "tap_layer", vc.enc.tap, "iterations", (json_int_t)iters, "seed",
                                (json_int_t)seed, "images_sampled", (json_int_t)n_sample, "exif", exif, "max_errors",
                                (json_int_t)max_errors);
    CHECK(request != NULL, "", "building the fit request record");
    json_object_set_new(request, "pad_color", json_string(pad_str));
    json_object_set_new(request, "batch", json_integer(batch_size));
    json_object_set_new(request, "accept_warnings", json_boolean(accept));
    if (asvr_path_exists(out)) {
        safetensors *prev;
        if (safetensors_open(out, &prev, &err) == 0) {
            const char *pc = safetensors_metadata(prev, VTOK_META_KEY);
            json_t *pj = pc ? json_loads(pc, 0, NULL) : NULL;
            int same = pj && json_equal(json_object_get(json_object_get(pj, "fit"), "request"), request);
            json_decref(pj);
            safetensors_close(prev);
            if (same) {
                LOG_INFO("'%s' was fitted with the same request (source, images, policy, D, K, tap, seed, iterations); "
                         "nothing to do", out);
                json_decref(request);
                free(pick);
                image_list_free(&keys);
                safetensors_close(st);
                return ASVR_EXIT_OK;
            }
        }
        LOG_INFO("'%s' exists and was made differently; it will be replaced", out);
    }

    /* Memory: the training matrix plus the k-means scratch, checked before anything is decoded. */
    int64_t max_rows = (int64_t)n_sample * P;
    uint64_t need = (uint64_t)max_rows * (uint64_t)C * 4 + kmeans_scratch_bytes(max_rows, C, K, (int)threads);
    if (need > (uint64_t)max_mib << 20)
        ASVR_FATAL("lower --sample (or raise --max-memory)",
                   "%zu images x %d positions x %d floats need %.1f MiB with the k-means scratch, more than "
                   "--max-memory %lld MiB",
                   n_sample, P, C, (double)need / 1048576.0, (long long)max_mib);
    if ((int64_t)K > max_rows)
        ASVR_FATAL("use more images (--sample) or a smaller --codebook-size",
                   "--codebook-size %d is larger than the %lld training vectors (%zu images x %d positions)", K,
                   (long long)max_rows, n_sample, P);

    siglip *enc;
    if (siglip_load(&vc.enc, st, vc.encoder_prefix, &enc, &err) < 0)
        ASVR_FATAL("check --encoder and --tap-layer", "encoder of '%s': %s", enc_path, err.msg);
    LOG_INFO("fit: %zu of %zu images (seed %lld), policy %s, %dx%d; encoder %s (fingerprint %s) to layer %d: %d "
             "positions x %d; RVQ %d x %d; training set up to %.1f MiB",
             n_sample, keys.n, (long long)seed, image_policy_name(policy), S, S, enc_path, src_fp, vc.enc.tap, P, C, D,
             K, (double)max_rows * C * 4 / 1048576.0);

    /* Features. */
    openblas_set_num_threads(1); /* each worker's GEMMs single-threaded: results independent of --threads */
    float *feats = asvr_malloc(sizeof(float) * (size_t)max_rows * (size_t)C, "the training vectors");
    feat_job job = {0};
    job.root = root;
    job.keys = asvr_malloc(sizeof(char *) * n_sample, "the sampled keys");
    for (size_t i = 0; i < n_sample; i++) job.keys[i] = keys.keys[pick[i]];
    job.n = n_sample;
    job.B = (int)batch_size, job.S = S, job.P = P, job.C = C;
    job.enc = enc;
    image_decode_opts_default(&job.dopts);
    job.dopts.max_pixels = (uint64_t)max_pixels;
    job.dopts.accept_jpeg_warnings = accept;
    job.dopts.apply_exif_orientation = exif;
    image_preprocess_opts_default(&job.popts);
    job.popts.policy = policy;
    job.popts.size = S;
    memcpy(job.popts.pad, pad, 3);
    memcpy(job.mean, vc.mean, sizeof job.mean);
    memcpy(job.std, vc.std, sizeof job.std);
    job.feats = feats;
    job.errors = asvr_calloc(n_sample, sizeof(char *), "per-image errors");
    size_t n_batches = (n_sample + (size_t)batch_size - 1) / (size_t)batch_size;
    int nt = (size_t)threads < n_batches ? (int)threads : (int)n_batches;
    job.bar = asvr_progress_begin("features", n_sample, "img");
    double t_feat = asvr_now();
    pthread_t *tids = asvr_malloc(sizeof(pthread_t) * (size_t)nt, "feature threads");
    for (int t = 0; t < nt; t++) CHECK(pthread_create(&tids[t], NULL, feat_worker, &job) == 0, "", "starting a feature thread");
    for (int t = 0; t < nt; t++) pthread_join(tids[t], NULL);
    asvr_progress_end(job.bar);
    t_feat = asvr_now() - t_feat;
    free(tids);
    size_t n_used = 0, n_bad = 0, row = (size_t)P * (size_t)C;
    for (size_t i = 0; i < n_sample; i++) { /* log in sample order; compact the good rows */
        if (job.errors[i]) {
            LOG_WARN("image '%s': %s", job.keys[i], job.errors[i]);
            free(job.errors[i]);
            n_bad++;
            continue;
        }
        if (n_used != i) memmove(feats + row * n_used, feats + row * i, sizeof(float) * row);
        n_used++;
    }
    free(job.errors);
    free(job.keys);
    siglip_free(enc);
    if (max_errors >= 0 && n_bad > (size_t)max_errors)
        ASVR_FATAL("fix or drop the bad images, or raise --max-errors", "%zu bad or missing images, more than --max-errors %lld",
                   n_bad, (long long)max_errors);
    int64_t M = (int64_t)n_used * P;
    LOG_INFO("features: %zu images used, %zu rejected; %lld training vectors of %d; %.1f s", n_used, n_bad, (long long)M, C, t_feat);
    if (M < K)
        ASVR_FATAL("use more images (--sample) or a smaller --codebook-size",
                   "--codebook-size %d is larger than the %lld training vectors (%zu usable images x %d positions)", K,
                   (long long)M, n_used, P);

    /* Residual k-means. */
    float *books = asvr_malloc(sizeof(float) * (size_t)D * (size_t)K * (size_t)C, "the new codebooks");
    tensor *tb = asvr_malloc(sizeof(tensor) * (size_t)D, "codebook views");
    tensor **pb = asvr_malloc(sizeof(tensor *) * (size_t)D, "codebook views");
    for (int d = 0; d < D; d++) {
        tb[d] = tensor_make("codebook", NN_F32, NN_CPU, 2, (int64_t[]){K, C}, books + (size_t)d * (size_t)K * (size_t)C);
        pb[d] = &tb[d];
    }
    tensor x = tensor_make("training vectors", NN_F32, NN_CPU, 2, (int64_t[]){M, C}, feats);
    fit_progress fp = {NULL, K, (int)iters};
    kmeans_opts ko = {.k = K, .max_iters = (int)iters, .seed = (uint64_t)seed, .threads = (int)threads,
                      .cb = {.on_iter = on_iter, .on_seeded = on_seeded, .on_depth = on_depth, .ctx = &fp}};
    double *mse = asvr_malloc(sizeof(double) * (size_t)(D + 1), "per-depth MSE");
    kmeans_stats *kst = asvr_malloc(sizeof(kmeans_stats) * (size_t)D, "per-depth k-means statistics");
    double t_km = asvr_now();
    if (kmeans_residual_fit(&x, D, pb, &ko, mse, kst, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    end_bar(&fp);
    t_km = asvr_now() - t_km;
    free(feats);

    /* The new config: the source's with D, K and the tap replaced, plus the fit record. */
    json_t *cfg = json_loads(src_cfg_text, 0, NULL);
    CHECK(json_is_object(cfg), "", "re-reading the config of '%s'", enc_path);
    json_object_set_new(cfg, "depth", json_integer(D));
    json_object_set_new(cfg, "codebook_size", json_integer(K));
    json_object_set_new(cfg, "tap_layer", json_integer(vc.enc.tap));
    json_t *jmse = json_array(), *jit = json_array(), *jconv = json_array();
    for (int d = 0; d < D; d++) {
        json_array_append_new(jmse, json_real(mse[d + 1]));
        json_array_append_new(jit, json_integer(kst[d].iters));
        json_array_append_new(jconv, json_boolean(kst[d].converged));
    }
    json_t *fit = json_pack("{s:O, s:s, s:I, s:I, s:I, s:I, s:f, s:o, s:o, s:o}", "request", request, "source_fingerprint",
                            src_fp, "images_used", (json_int_t)n_used, "images_rejected", (json_int_t)n_bad, "vectors",
                            (json_int_t)M, "seed", (json_int_t)seed, "input_mse", mse[0], "mse", jmse, "iterations", jit,
                            "converged", jconv);
    CHECK(fit != NULL, "", "building the fit record");
    json_object_set_new(cfg, "fit", fit);
    char *cfg_text = json_dumps(cfg, JSON_SORT_KEYS);
    CHECK(cfg_text != NULL, "", "writing the tokenizer config");
    vtok_config check;
    if (vtok_config_parse(cfg_text, &check, &err) < 0) ASVR_FATAL("this is a bug", "the new config does not parse: %s", err.msg);

    /* The file: every source tensor but the old codebooks, byte for byte, then the new codebooks. */
    st_writer *w = st_writer_new();
    int copied = 0;
    for (int i = 0; i < safetensors_count(st); i++) {
        const st_tensor *t = safetensors_at(st, i);
        if (starts_with(t->name, vc.codebook_prefix)) continue;
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        copied++;
    }
    for (int d = 0; d < D; d++) {
        char name[160];
        snprintf(name, sizeof name, "%s%d.weight", vc.codebook_prefix, d);
        st_writer_add(w, name, ST_F32, 2, (int64_t[]){K, C}, books + (size_t)d * (size_t)K * (size_t)C);
    }
    for (int i = 0; i < safetensors_metadata_count(st); i++) {
        const char *k = safetensors_metadata_key(st, i);
        if (strcmp(k, VTOK_META_KEY) != 0) st_writer_set_metadata(w, k, safetensors_metadata(st, k));
    }
    st_writer_set_metadata(w, VTOK_META_KEY, cfg_text);
    if (st_writer_write(w, out, &err) < 0) ASVR_FATAL("check the --out folder", "%s", err.msg);
    st_writer_free(w);
    char new_fp[17];
    if (vision_tokenizer_fingerprint_file(out, new_fp, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    double elapsed = asvr_now() - t_start;
    LOG_INFO("wrote '%s' (fingerprint %s): %d encoder tensors copied, %d codebooks of %d x %d; residual mean square "
             "%.6g -> %.6g; %.1f s (features %.1f s, k-means %.1f s)",
             out, new_fp, copied, D, K, C, mse[0], mse[D], elapsed, t_feat, t_km);

    if (stats) {
        json_t *s = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:f, s:O, s:O, s:f, s:f, s:f}",
                              "out", out, "fingerprint", new_fp, "encoder", enc_path, "source_fingerprint", src_fp,
                              "policy", image_policy_name(policy), "images_listed", (json_int_t)keys.n, "images_sampled",
                              (json_int_t)n_sample, "images_used", (json_int_t)n_used, "images_rejected", (json_int_t)n_bad,
                              "vectors", (json_int_t)M, "depth", D, "codebook_size", K, "tap_layer", vc.enc.tap,
                              "input_mse", mse[0], "mse", jmse, "iterations", jit, "seconds", elapsed, "features_s", t_feat,
                              "kmeans_s", t_km);
        CHECK(s != NULL, "", "building the --stats summary");
        asvr_stats_write(stats, s);
        json_decref(s);
    }
    free(cfg_text);
    json_decref(cfg);
    json_decref(request);
    free(mse);
    free(kst);
    free(books);
    free(tb);
    free(pb);
    free(pick);
    image_list_free(&keys);
    safetensors_close(st);
    return ASVR_EXIT_OK;
}
