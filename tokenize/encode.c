/* asvr-tokenize encode — images → codes in an LMDB code store.
 *
 * Pipeline: decode threads (read, decode, pad/squash, resize, normalise into a pooled slot) →
 * the compute thread (batches of --batch images through the tokenizer) → the writer thread (one
 * LMDB transaction per batch). Keys already in the store are skipped, so a killed run resumes;
 * the store is built as "<out>.partial" and renamed when every image is done (images added to a
 * finished store go into it in place, a batch per transaction, so it stays finished). A bad or missing
 * image is logged, listed in --rejects and counted; --max-errors N fails the run when there are more than N.
 * --device cuda runs the tokenizer on the GPU (weights in bf16 by default, --dtype f32 for parity):
 * batches are assembled in pinned host memory, uploaded, encoded, and the codes copied back. The
 * store records the backend (cpu-f32, cuda-bf16, cuda-f32) and refuses to mix them without --force.
 * Time per stage (decode/preprocess, waits, upload, model, download, write) goes to the last log
 * line and to --stats, with the stage that bounded the run.
 * --input-size N --downsample bilinear prepares each image at N x N (the S2 setting: 1152) and resizes the
 * normalised image to the tokenizer's size with op_interpolate (torch's bilinear, no antialias), as the
 * reference computes S2 targets; the store records the input size and the rule, and refuses to mix.
 * --shard K/N encodes part K of N of the deduplicated list (image i goes to part i mod N) into
 * "<out>.shard-K-of-N", which records the part (shards.h); `merge` combines the parts. --shard auto
 * takes K and N from mpirun/srun and, with --device cuda, the local rank's GPU (base/shard.h). */
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
#include "base/queue.h"
#include "commands.h"
#include "image_list.h"
#include "io/image.h"
#include "io/json_stream.h"
#include "nn/device.h"
#include "model/vision_tokenizer.h"
#include "nn/ops.h"
#include "shards.h"
#include "store/code_store.h"

/* Host buffers that the GPU copies from or to are page-locked on CUDA (faster, asynchronous-capable
 * copies); plain heap memory otherwise. */
static void *host_alloc(size_t bytes, int pinned, const char *what) {
    return nn_host_alloc(pinned ? NN_CUDA : NN_CPU, bytes, what);
}

static void host_free(void *p, int pinned) { nn_host_free(pinned ? NN_CUDA : NN_CPU, p); }

/* ---- pipeline ----------------------------------------------------------------------------------- */

typedef struct item {
    size_t key;    /* index into the todo list */
    float *pixels; /* a pool slot, NULL when decoding failed */
    char *error;
} item;

typedef struct batch {
    int n;
    const char *keys[1024];
    uint16_t *codes; /* n × N × D */
} batch;

typedef struct pipeline {
    const char *root;
    char **todo;
    size_t n_todo;
    image_decode_opts dopts;
    image_preprocess_opts popts;
    float mean[3], std[3];
    int S;  /* the tokenizer's input size */
    int Si; /* the size images are prepared at (S, or larger: then downsampled bilinearly to S) */
    _Atomic size_t next;
    asvr_queue *ready, *free_slots;
    _Atomic int64_t decode_ns;
    /* writer */
    code_store *cs;
    asvr_queue *to_write, *free_batches;
    double write_s;
    int write_failed;
    asvr_error write_err;
    asvr_progress *bar;
} pipeline;

static void *decode_worker(void *arg) {
    pipeline *p = arg;
    uint8_t *u8 = asvr_malloc((size_t)p->Si * p->Si * 3, "a preprocessed image");
    /* --input-size: the normalised image at that size, resized into the slot by op_interpolate */
    float *big = p->Si != p->S ? asvr_malloc(sizeof(float) * 3 * (size_t)p->Si * p->Si, "a prepared image") : NULL;
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n_todo) break;
        double t0 = asvr_now();
        item *it = asvr_calloc(1, sizeof *it, "a pipeline item");
        it->key = i;
        char *path = asvr_path_join(p->root, p->todo[i]);
        image_rgb img = {0};
        asvr_error err;
        if (image_decode_file(path, &p->dopts, &img, &err) < 0 || image_preprocess(&img, &p->popts, u8, &err) < 0) {
            it->error = asvr_strdup(err.msg);
        } else {
            it->pixels = asvr_queue_pop(p->free_slots);
            if (big) { /* normalised at the input size, then bilinear (no antialias) to the tokenizer's size */
                image_normalize_chw(u8, p->Si, p->Si, p->mean, p->std, big);
                tensor x = tensor_make("prepared image", NN_F32, NN_CPU, 4, (int64_t[]){1, 3, p->Si, p->Si}, big);
                tensor y = tensor_make("tokenizer input", NN_F32, NN_CPU, 4, (int64_t[]){1, 3, p->S, p->S}, it->pixels);
                op_interpolate(&y, &x, NN_RESIZE_BILINEAR, 0);
            } else {
                image_normalize_chw(u8, p->S, p->S, p->mean, p->std, it->pixels);
            }
        }
        image_free(&img);
        free(path);
        atomic_fetch_add(&p->decode_ns, (int64_t)((asvr_now() - t0) * 1e9));
        if (asvr_queue_push(p->ready, it) < 0) { /* the run stopped early: the item is this thread's to free */
            if (it->pixels) asvr_queue_push(p->free_slots, it->pixels);
            free(it->error);
            free(it);
            break;
        }
    }
    free(u8);
    free(big);
    return NULL;
}

static void *writer_thread(void *arg) {
    pipeline *p = arg;
    batch *b;
    while ((b = asvr_queue_pop(p->to_write)) != NULL) {
        if (!p->write_failed) {
            double t0 = asvr_now();
            const uint16_t *cp[1024];
            size_t per = 0;
            const vtok_config *unused = NULL;
            (void)unused;
            per = (size_t)code_store_get_meta(p->cs)->positions * (size_t)code_store_get_meta(p->cs)->depth;
            for (int i = 0; i < b->n; i++) cp[i] = b->codes + per * (size_t)i;
            if (code_store_put_batch(p->cs, b->n, b->keys, cp, &p->write_err) < 0) p->write_failed = 1;
            p->write_s += asvr_now() - t0;
            asvr_progress_add(p->bar, (uint64_t)b->n);
        }
        asvr_queue_push(p->free_batches, b);
    }
    return NULL;
}

int cmd_encode(int argc, char **argv) {
    const char *json = NULL, *list = NULL, *root = "", *tok_path = NULL, *out = NULL, *policy_s = NULL,
               *pad_s = NULL, *rejects = NULL, *stats = NULL, *device = "cpu", *dtype_s = NULL, *vq_s = "gemm",
               *shard_s = NULL, *downsample_s = NULL;
    int64_t input_size = 0;
    int64_t batch_size = 8, threads = 0, max_errors = -1, map_mib = 1024, max_pixels = (int64_t)IMAGE_DEFAULT_MAX_PIXELS;
    int compress = 0, accept = 0, exif = 0, force = 0;
    const asvr_opt opts[] = {
        {"json", ASVR_OPT_STR, &json, "FILE", "LLaVA JSON (.json/.json.zst): every \"image\" of it, deduplicated"},
        {"list", ASVR_OPT_STR, &list, "FILE", "or a list file: one image path per line ('#' comments)"},
        {"image-root", ASVR_OPT_STR, &root, "DIR", "folder the image paths are relative to (keys stay as written)"},
        {"tokenizer", ASVR_OPT_STR, &tok_path, "FILE", "tokenizer file (tools/convert_tokenizer.py makes one)"},
        {"policy", ASVR_OPT_STR, &policy_s, "pad|squash", "pad to square (stage it) or squash (stage pt); required"},
        {"out", ASVR_OPT_STR, &out, "STORE", "the code store (built as STORE.partial, renamed when complete)"},
        {"shard", ASVR_OPT_STR, &shard_s, "K/N|auto", "encode part K of N (image i of the list goes to part i mod N) into "
                                                     "STORE.shard-K-of-N; auto: K, N and the GPU from mpirun/srun"},
        {"pad", ASVR_OPT_STR, &pad_s, "R,G,B", "pad colour (default: the tokenizer's, 127,127,127 for SigLIP)"},
        {"input-size", ASVR_OPT_COUNT, &input_size, "N", "prepare images at N x N (pad or squash, bicubic, normalise), then "
                                                        "downsample to the tokenizer's size (S2 targets: 1152; default: its size)"},
        {"downsample", ASVR_OPT_STR, &downsample_s, "bilinear", "how --input-size images reach the tokenizer's size: torch-style "
                                                                "bilinear, no antialias (the reference's S2 targets)"},
        {"batch", ASVR_OPT_COUNT, &batch_size, "N", "images per forward pass and per LMDB transaction (default 8)"},
        {"threads", ASVR_OPT_COUNT, &threads, "N", "decode threads (default: the number of cores)"},
        {"device", ASVR_OPT_STR, &device, "cpu|cuda", "compute backend (default cpu); cuda needs a CUDA build and a GPU"},
        {"dtype", ASVR_OPT_STR, &dtype_s, "bf16|f32", "cuda: weights and activations in bf16 (default, as the reference) or f32"},
        {"vq-kernel", ASVR_OPT_STR, &vq_s, "gemm|fused", "cuda: RVQ distances as GEMM + argmin (default) or one fused kernel"},
        {"force", ASVR_OPT_FLAG, &force, NULL, "append to a store computed by another backend (it is then marked 'mixed')"},
        {"compress", ASVR_OPT_FLAG, &compress, NULL, "zstd-compress each record (see README for the measured ratio)"},
        {"max-errors", ASVR_OPT_INT, &max_errors, "N", "fail after more than N bad or missing images (default: never)"},
        {"rejects", ASVR_OPT_STR, &rejects, "FILE", "write each rejected image as a JSON line {key, reason}"},
        {"stats", ASVR_OPT_STR, &stats, "FILE", "write a JSON summary (counts, time per stage)"},
        {"map-size", ASVR_OPT_COUNT, &map_mib, "MIB", "initial LMDB map size; it grows as needed (default 1024)"},
        {"max-pixels", ASVR_OPT_COUNT, &max_pixels, "N", "refuse larger images (default 89478485, Pillow's)"},
        {"accept-warnings", ASVR_OPT_FLAG, &accept, NULL, "decode truncated/corrupt JPEG data anyway"},
        {"exif", ASVR_OPT_FLAG, &exif, NULL, "apply EXIF orientation (the reference does not)"},
    };
    const asvr_cli cli = {"asvr-tokenize encode",
                          "(--json FILE | --list FILE) [--image-root DIR] --tokenizer FILE --policy pad|squash --out STORE [options]",
                          "Encodes every image into D codes per position with the tokenizer and stores them under the\n"
                          "image path as written in the input. Resumes a killed run; a rerun on a finished store whose\n"
                          "images are all present does nothing. With --shard, each process encodes its part of the\n"
                          "deduplicated list into STORE.shard-K-of-N; `asvr-tokenize merge STORE --shards` combines them.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!!json == !!list) asvr_cli_usage_error(&cli, "give exactly one of --json and --list");
    if (!tok_path || !out || !policy_s) asvr_cli_usage_error(&cli, "--tokenizer, --policy and --out are required");
    image_policy policy;
    if (image_policy_parse(policy_s, &policy) < 0) asvr_cli_usage_error(&cli, "--policy must be pad or squash");
    if (batch_size < 1 || batch_size > 1024) asvr_cli_usage_error(&cli, "--batch must be in 1..1024");
    int use_cuda = strcmp(device, "cuda") == 0;
    if (!use_cuda && strcmp(device, "cpu") != 0) asvr_cli_usage_error(&cli, "--device must be cpu or cuda, not '%s'", device);
    if (!dtype_s) dtype_s = use_cuda ? "bf16" : "f32";
    if (strcmp(dtype_s, "bf16") != 0 && strcmp(dtype_s, "f32") != 0)
        asvr_cli_usage_error(&cli, "--dtype must be bf16 or f32, not '%s'", dtype_s);
    if (!use_cuda && strcmp(dtype_s, "f32") != 0)
        asvr_cli_usage_error(&cli, "--dtype %s needs --device cuda; the CPU backend computes in f32", dtype_s);
    if (strcmp(vq_s, "gemm") != 0 && strcmp(vq_s, "fused") != 0)
        asvr_cli_usage_error(&cli, "--vq-kernel must be gemm or fused, not '%s'", vq_s);
    if (!use_cuda && strcmp(vq_s, "gemm") != 0) asvr_cli_usage_error(&cli, "--vq-kernel fused needs --device cuda");
#ifndef ASVR_HAVE_CUDA
    if (use_cuda)
        asvr_cli_usage_error(&cli, "--device cuda: this build has no CUDA backend (nvcc was not found when it was "
                                   "configured); rebuild with nvcc on PATH or -DASVR_CUDA=ON, or use --device cpu");
#else
    if (use_cuda && !nn_device_available(NN_CUDA))
        asvr_cli_usage_error(&cli, "--device cuda: no CUDA device is visible (check nvidia-smi and "
                                   "CUDA_VISIBLE_DEVICES), or use --device cpu");
#endif
    asvr_shard shard;
    char shard_why[256];
    if (asvr_shard_parse(shard_s, &shard, shard_why, sizeof shard_why) < 0) asvr_cli_usage_error(&cli, "%s", shard_why);
    char *out_path = shard_s ? encode_part_out(out, &shard) : asvr_strdup(out);
    out = out_path;
    if (shard_s && use_cuda) {
        asvr_error derr;
        if (nn_use_cuda_device(shard.device, &derr) < 0) asvr_cli_usage_error(&cli, "--shard %s: %s", shard_s, derr.msg);
    }
    if (threads <= 0) threads = asvr_num_cores();
    if (threads > asvr_max_threads())
        asvr_cli_usage_error(&cli, "--threads %lld: at most %d on this machine (%d cores; each decode thread holds images)",
                             (long long)threads, asvr_max_threads(), asvr_num_cores());
    if (map_mib > ((int64_t)1 << 26)) asvr_cli_usage_error(&cli, "--map-size must be at most 67108864 MiB (64 TiB)");
    uint8_t pad[3];
    if (pad_s && image_list_parse_rgb(pad_s, pad) < 0) asvr_cli_usage_error(&cli, "--pad expects R,G,B with values 0..255");
    if (downsample_s && strcmp(downsample_s, "bilinear") != 0)
        asvr_cli_usage_error(&cli, "--downsample must be bilinear, not '%s'", downsample_s);
    if (input_size > 16384) asvr_cli_usage_error(&cli, "--input-size must be 1 .. 16384");

    asvr_error err;
    double t_start = asvr_now();
    image_list keys = {0};
    if ((json ? image_list_read_json(json, &keys, &err) : image_list_read_file(list, &keys, &err)) < 0)
        ASVR_FATAL("check the input path", "%s", err.msg);
    if (keys.n == 0)
        ASVR_FATAL("check the input: an empty list encodes nothing", "'%s' names no images", json ? json : list);
    LOG_INFO("encode: %zu distinct images from %s", keys.n, json ? json : list);
    encode_part part;
    encode_part_select(&part, &keys, shard_s ? &shard : NULL);
    if (shard_s)
        LOG_INFO("--shard %s: part %d of %d (launcher %s%s), %zu of the images -> '%s'", shard_s, shard.index,
                 shard.count, shard.launcher, use_cuda ? ", its local rank's GPU" : "", part.n, out);

    /* Cheap checks first: the tokenizer's fingerprint and an up-to-date store need no model. */
    code_store_meta meta = {0};
    if (vision_tokenizer_fingerprint_file(tok_path, meta.tokenizer_fingerprint, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    vtok_load_opts lo;
    vtok_load_opts_default(&lo);
    lo.device = use_cuda ? NN_CUDA : NN_CPU;
    lo.dtype = strcmp(dtype_s, "bf16") == 0 ? NN_BF16 : NN_F32;
    lo.fused_vq = strcmp(vq_s, "fused") == 0;
    vision_tokenizer *vt;
    if (vision_tokenizer_load_ex(tok_path, &lo, &vt, &err) < 0) ASVR_FATAL("check the tokenizer file", "%s", err.msg);
    const vtok_config *vc = vision_tokenizer_config(vt);
    const char *base = strrchr(tok_path, '/');
    snprintf(meta.tokenizer, sizeof meta.tokenizer, "%s", base ? base + 1 : tok_path);
    snprintf(meta.policy, sizeof meta.policy, "%s", image_policy_name(policy));
    meta.image_size = vc->enc.image_size;
    if (!input_size) input_size = vc->enc.image_size;
    if (input_size < vc->enc.image_size)
        asvr_cli_usage_error(&cli, "--input-size %lld is smaller than the tokenizer's image size %d", (long long)input_size,
                             vc->enc.image_size);
    if (input_size > vc->enc.image_size && !downsample_s)
        asvr_cli_usage_error(&cli, "--input-size %lld needs --downsample bilinear (the rule that takes it to the tokenizer's %d)",
                             (long long)input_size, vc->enc.image_size);
    if (input_size == vc->enc.image_size && downsample_s)
        asvr_cli_usage_error(&cli, "--downsample needs an --input-size larger than the tokenizer's image size %d",
                             vc->enc.image_size);
    meta.input_size = (int)input_size;
    snprintf(meta.downsample, sizeof meta.downsample, "%s", downsample_s ? downsample_s : "none");
    meta.positions = vision_tokenizer_positions(vt);
    meta.depth = vc->depth;
    meta.codebook_size = vc->codebook_size;
    meta.compression = compress;
    snprintf(meta.backend, sizeof meta.backend, "%s", vision_tokenizer_backend(vt));
    if (!pad_s) memcpy(pad, vc->pad, 3);
    /* the store records the preprocessing that made its codes: another pad colour or EXIF rule is refused */
    if (policy == IMAGE_POLICY_PAD) memcpy(meta.pad, pad, 3);
    else meta.pad[0] = meta.pad[1] = meta.pad[2] = 127; /* unused by squash */
    meta.exif = exif;

    if (asvr_path_exists(out)) {
        code_store *fin;
        if (code_store_open(out, &fin, &err) == 0) {
            char why[512];
            code_store_meta want = meta;
            if (force) memcpy(want.backend, code_store_get_meta(fin)->backend, sizeof want.backend);
            if (code_store_meta_diff(code_store_get_meta(fin), &want, why, sizeof why))
                ASVR_FATAL("write to a new store (one store per tokenizer, preprocessing and backend)", "'%s' was made differently, refusing to mix: %s", out, why);
            if (encode_part_check(fin, out, &part, 0, &err) < 0)
                ASVR_FATAL("write each part to its own store (--shard names it STORE.shard-K-of-N)", "%s", err.msg);
            size_t missing = 0;
            for (size_t i = 0; i < part.n && !missing; i++) missing += !code_store_has(fin, part.keys[i]);
            code_store_close(fin);
            if (!missing) {
                LOG_INFO("'%s' is complete: all %zu images are in it; nothing to do", out, part.n);
                vision_tokenizer_free(vt);
                encode_part_free(&part);
                image_list_free(&keys);
                free(out_path);
                return ASVR_EXIT_OK;
            }
        }
    }
    code_store *cs;
    if (code_store_open_writer_ex(out, &meta, (size_t)map_mib << 20, force, &cs, &err) < 0)
        ASVR_FATAL("write to a new store, or pass --force to append codes from another backend", "%s", err.msg);
    if (encode_part_check(cs, out, &part, 1, &err) < 0) {
        code_store_close(cs);
        ASVR_FATAL("write each part to its own store (--shard names it STORE.shard-K-of-N)", "%s", err.msg);
    }
    if (strcmp(code_store_get_meta(cs)->backend, meta.backend) != 0)
        LOG_WARN("--force: appending %s codes to '%s', which now records backend '%s'", meta.backend, out,
                 code_store_get_meta(cs)->backend);
    char **todo = asvr_malloc(sizeof(char *) * (part.n ? part.n : 1), "the work list");
    size_t n_todo = 0;
    for (size_t i = 0; i < part.n; i++)
        if (!code_store_has(cs, part.keys[i])) todo[n_todo++] = part.keys[i];
    char sizes[96];
    if (meta.input_size != meta.image_size)
        snprintf(sizes, sizeof sizes, "%dx%d, %s to %dx%d", meta.input_size, meta.input_size, meta.downsample,
                 meta.image_size, meta.image_size);
    else
        snprintf(sizes, sizeof sizes, "%dx%d", meta.image_size, meta.image_size);
    LOG_INFO("%zu already in '%s', %zu to encode; policy %s, %s, batch %lld, %lld decode threads, backend %s%s",
             part.n - n_todo, code_store_path(cs), n_todo, meta.policy, sizes, (long long)batch_size,
             (long long)threads, meta.backend, lo.fused_vq ? " (fused VQ kernel)" : "");
    if (asvr_log_get_level() >= ASVR_LOG_INFO) vision_tokenizer_print(vt, stderr);

    pipeline p = {0};
    p.root = root;
    p.todo = todo;
    p.n_todo = n_todo;
    image_decode_opts_default(&p.dopts);
    p.dopts.max_pixels = (uint64_t)max_pixels;
    p.dopts.accept_jpeg_warnings = accept;
    p.dopts.apply_exif_orientation = exif;
    image_preprocess_opts_default(&p.popts);
    p.popts.policy = policy;
    p.popts.size = (int)input_size;
    memcpy(p.popts.pad, pad, 3);
    memcpy(p.mean, vc->mean, sizeof p.mean);
    memcpy(p.std, vc->std, sizeof p.std);
    p.S = vc->enc.image_size;
    p.Si = (int)input_size;
    p.cs = cs;
    int B = (int)batch_size;
    int n_slots = 2 * B + (int)threads;
    size_t img_floats = (size_t)3 * p.S * p.S, per = (size_t)meta.positions * (size_t)meta.depth;
    float *slot_mem = asvr_malloc(sizeof(float) * img_floats * (size_t)n_slots, "image slots");
    p.free_slots = asvr_queue_new(n_slots);
    for (int i = 0; i < n_slots; i++) asvr_queue_push(p.free_slots, slot_mem + img_floats * (size_t)i);
    p.ready = asvr_queue_new(n_slots + (int)threads);
    batch batches[3];
    p.free_batches = asvr_queue_new(3);
    p.to_write = asvr_queue_new(3);
    for (int i = 0; i < 3; i++) {
        batches[i].codes = host_alloc(sizeof(uint16_t) * per * (size_t)B, use_cuda, "a batch of codes");
        asvr_queue_push(p.free_batches, &batches[i]);
    }
    vtok_work *work = vtok_work_new(vt, B);
    float *batch_px = host_alloc(sizeof(float) * img_floats * (size_t)B, use_cuda, "a batch of images");
    LOG_INFO("memory: image slots %.1f MiB, batch %.1f MiB", (double)(sizeof(float) * img_floats * (size_t)n_slots) / 1048576.0,
             (double)(sizeof(float) * img_floats * (size_t)B) / 1048576.0);

    p.bar = asvr_progress_begin("encode", n_todo, "img");
    pthread_t *tids = asvr_malloc(sizeof(pthread_t) * (size_t)threads, "decode threads");
    for (int t = 0; t < threads; t++) CHECK(pthread_create(&tids[t], NULL, decode_worker, &p) == 0, "", "starting a decode thread");
    pthread_t wtid;
    CHECK(pthread_create(&wtid, NULL, writer_thread, &p) == 0, "", "starting the writer thread");

    json_t *rej = json_array();
    size_t done = 0, n_err = 0, n_ok = 0;
    double compute_s = 0, wait_s = 0, write_wait_s = 0, assemble_s = 0;
    int over = 0;
    batch *cur = NULL;
    while (done < n_todo && !p.write_failed) {
        double tw = asvr_now();
        item *it = asvr_queue_pop(p.ready);
        wait_s += asvr_now() - tw;
        done++;
        if (it->error) {
            n_err++;
            LOG_WARN("image '%s': %s", todo[it->key], it->error);
            json_array_append_new(rej, json_pack("{s:s, s:s}", "key", todo[it->key], "reason", it->error));
            asvr_progress_add(p.bar, 1);
            free(it->error);
            free(it);
            if (max_errors >= 0 && n_err > (size_t)max_errors) {
                LOG_ERROR("%zu bad or missing images, more than --max-errors %lld; stopping", n_err, (long long)max_errors);
                over = 1;
                break;
            }
        } else {
            if (!cur) {
                double tb = asvr_now();
                cur = asvr_queue_pop(p.free_batches); /* blocks while the writer is behind */
                write_wait_s += asvr_now() - tb;
                cur->n = 0;
            }
            double ta = asvr_now();
            memcpy(batch_px + img_floats * (size_t)cur->n, it->pixels, sizeof(float) * img_floats);
            assemble_s += asvr_now() - ta;
            asvr_queue_push(p.free_slots, it->pixels);
            cur->keys[cur->n++] = todo[it->key];
            free(it);
        }
        if (cur && (cur->n == B || done == n_todo)) {
            double tc = asvr_now();
            vision_tokenizer_encode(vt, work, cur->n, batch_px, cur->codes);
            compute_s += asvr_now() - tc;
            n_ok += (size_t)cur->n;
            asvr_queue_push(p.to_write, cur);
            cur = NULL;
        }
    }
    /* Stop the decoders (a failed run stops early), drain, then the writer. */
    atomic_store(&p.next, n_todo);
    for (;;) { /* release workers blocked on a full ready queue or an empty slot pool */
        int alive = 0;
        item *it;
        asvr_queue_close(p.ready);
        while ((it = asvr_queue_pop(p.ready)) != NULL) {
            if (it->pixels) asvr_queue_push(p.free_slots, it->pixels);
            free(it->error);
            free(it);
        }
        (void)alive;
        break;
    }
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    asvr_queue_close(p.to_write);
    pthread_join(wtid, NULL);
    asvr_progress_end(p.bar);

    int failed = over || p.write_failed;
    if (p.write_failed) LOG_ERROR("%s", p.write_err.msg);
    if (rejects) {
        char *s = NULL;
        size_t cap = 0, len = 0;
        for (size_t i = 0; i < json_array_size(rej); i++) {
            char *line = json_dumps(json_array_get(rej, i), JSON_COMPACT);
            size_t l = strlen(line);
            if (len + l + 2 > cap) s = asvr_realloc(s, cap = (len + l + 2) * 2, "the rejects list");
            memcpy(s + len, line, l);
            len += l;
            s[len++] = '\n';
            free(line);
        }
        if (asvr_atomic_write(rejects, s ? s : "", len, &err) < 0) LOG_ERROR("%s", err.msg), failed = 1;
        free(s);
    }
    int64_t total = code_store_count(cs);
    if (failed) {
        LOG_ERROR("'%s' keeps the %lld finished images; rerun to resume", code_store_path(cs), (long long)total);
        code_store_close(cs);
    } else if (code_store_finish(cs, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        failed = 1;
    }
    double elapsed = asvr_now() - t_start, decode_s = (double)atomic_load(&p.decode_ns) * 1e-9;
    vtok_times vt_t = vtok_work_times(work);
    /* The compute thread drives the pipeline: its time splits into waiting for decoded images,
     * encoding (upload + model + download) and waiting for the writer to free a batch; the largest
     * of the three names the stage that bounded the run. */
    const char *bottleneck = "encode";
    if (wait_s > compute_s && wait_s >= write_wait_s) bottleneck = "decode/preprocess";
    else if (write_wait_s > compute_s && write_wait_s > wait_s) bottleneck = "write";
    LOG_INFO("encoded %zu images, %zu rejected, store has %lld; %.1f s, %.1f img/s, backend %s | stages: "
             "decode+preprocess %.1f s over %lld threads (encoder waited %.1f s for input), encode %.1f s "
             "(upload %.2f, model %.2f, download %.2f), write %.1f s (encoder waited %.1f s for the writer); "
             "bottleneck: %s",
             n_ok, n_err, (long long)total, elapsed, elapsed > 0 ? (double)n_ok / elapsed : 0, meta.backend, decode_s,
             (long long)threads, wait_s, compute_s, vt_t.upload_s, vt_t.compute_s, vt_t.download_s, p.write_s,
             write_wait_s, bottleneck);
    if (stats) {
        json_t *s = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:b}",
                              "store", out, "tokenizer", tok_path, "policy", meta.policy, "images", (json_int_t)part.n,
                              "encoded", (json_int_t)n_ok, "already_present", (json_int_t)(part.n - n_todo),
                              "rejected", (json_int_t)n_err, "store_records", (json_int_t)total, "seconds", elapsed,
                              "images_per_s", elapsed > 0 ? (double)n_ok / elapsed : 0.0, "compute_s", compute_s,
                              "decode_s", decode_s, "write_s", p.write_s, "compute_wait_s", wait_s,
                              "decode_threads", (json_int_t)threads, "finished", !failed);
        json_object_set_new(s, "device", json_string(device));
        json_object_set_new(s, "input_size", json_integer(meta.input_size));
        json_object_set_new(s, "downsample", json_string(meta.downsample));
        json_object_set_new(s, "dtype", json_string(dtype_s));
        json_object_set_new(s, "backend", json_string(meta.backend));
        json_object_set_new(s, "vq_kernel", json_string(vq_s));
        if (shard_s) {
            json_object_set_new(s, "shard", json_pack("{s:i, s:i, s:I}", "index", shard.index, "count", shard.count,
                                                      "list_images", (json_int_t)keys.n));
        }
        json_object_set_new(s, "batch", json_integer((json_int_t)B));
        /* seconds per stage; decode_preprocess_s is summed over the decode threads */
        json_t *st = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "decode_preprocess_s", decode_s,
                               "decode_preprocess_per_thread_s", threads > 0 ? decode_s / (double)threads : 0.0,
                               "input_wait_s", wait_s, "batch_assembly_s", assemble_s, "encode_s", compute_s,
                               "upload_s", vt_t.upload_s, "model_s", vt_t.compute_s, "download_s", vt_t.download_s,
                               "write_s", p.write_s);
        json_object_set_new(st, "write_wait_s", json_real(write_wait_s));
        json_object_set_new(s, "stages", st);
        json_object_set_new(s, "bottleneck", json_string(bottleneck));
        asvr_stats_write(stats, s);
        json_decref(s);
    }
    json_decref(rej);
    for (int i = 0; i < 3; i++) host_free(batches[i].codes, use_cuda);
    asvr_queue_free(p.ready);
    asvr_queue_free(p.free_slots);
    asvr_queue_free(p.to_write);
    asvr_queue_free(p.free_batches);
    free(slot_mem);
    host_free(batch_px, use_cuda);
    free(tids);
    free(todo);
    vtok_work_free(work);
    vision_tokenizer_free(vt);
    encode_part_free(&part);
    image_list_free(&keys);
    free(out_path);
    return failed ? ASVR_EXIT_FAIL : ASVR_EXIT_OK;
}
