/* vision_tokenizer.h — a visual tokenizer file and its forward pass: image → D codes per patch.
 *
 * The file is one safetensors file: the SigLIP-shaped encoder's tensors (up to the tap layer), the
 * D codebooks (K × C each) and, in __metadata__["asvr_tokenizer"], a JSON config:
 *   {"format": "asvr-vision-tokenizer", "version": 1, "kind": "semantic",
 *    "image_size": 384, "patch_size": 14, "hidden_size": 1152, "intermediate_size": 4304,
 *    "num_layers": 27, "num_heads": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh",
 *    "tap_layer": 26, "encoder_prefix": "vision_model.", "codebook_prefix": "quantizer.codebooks.",
 *    "depth": 8, "codebook_size": 16384,
 *    "image_mean": [0.5,0.5,0.5], "image_std": [0.5,0.5,0.5], "pad_color": [127,127,127]}
 * Every dimension is read from it: SigLIP-SO400M with 8 × 16384 codebooks is one configuration,
 * a tiny test model another. The fingerprint (xxh64 over the config text and every tensor's name,
 * dtype, shape and bytes) names the tokenizer in the stores it makes. tools/convert_tokenizer.py
 * writes such files from a DualToken checkpoint or an HF SigLIP checkpoint plus codebooks.
 * Two kinds:
 *   "semantic": patch + position embedding, encoder layers 1..tap, greedy RVQ on the raw tap output
 *     (codebooks K × hidden_size). DualToken/ASVR: tap 26.
 *   "appearance": encoder layers 1..tap, then the tap output as a (S/p) × (S/p) grid through the
 *     ResNet projection block of model/proj_block.h (hidden_size -> embed_dim), then greedy RVQ on
 *     that (codebooks K × embed_dim). DualToken: tap 6, block "prequant_visual.", RVQ "quantizer.".
 *     Extra config keys: "embed_dim" (required), "prequant_prefix" (default "prequant_visual."),
 *     "norm_groups" (default 32), "norm_eps" (default 1e-6).
 * Codes are [B, N, D] in raster order for both.
 * Backends: vision_tokenizer_load runs on the CPU in f32. vision_tokenizer_load_ex can place the whole
 * model on a CUDA device, weights in bf16 (the reference's precision, fp32 accumulation) or f32 (for
 * parity tests); the work buffers then live on the device too, and encode / features / quant_input
 * still take host images and return host results (upload and download inside; pinned host buffers
 * make the copies faster). vision_tokenizer_backend() names the combination ("cpu-f32",
 * "cuda-bf16", "cuda-f32"): bf16 codes can differ from f32 ones, so code stores record it.
 * Not for: image decoding (io/image.h), decoding codes back to pixels, or training.
 */
#ifndef ASVR_MODEL_VISION_TOKENIZER_H
#define ASVR_MODEL_VISION_TOKENIZER_H

#include <stdint.h>
#include <stdio.h>

#include "base/error.h"
#include "model/proj_block.h"
#include "model/rvq.h"
#include "model/siglip.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VTOK_META_KEY "asvr_tokenizer"

typedef enum { VTOK_SEMANTIC, VTOK_APPEARANCE } vtok_kind;

typedef struct vtok_config {
    char kind[16];
    vtok_kind kind_id;
    siglip_config enc;
    char encoder_prefix[64], codebook_prefix[64];
    int depth, codebook_size;
    /* appearance only (semantic: embed_dim = hidden, the rest unused) */
    int embed_dim;           /* the projection block's output width = the codebooks' width */
    char prequant_prefix[64];
    int norm_groups;
    float norm_eps;
    float mean[3], std[3];
    uint8_t pad[3];
} vtok_config;

typedef struct vision_tokenizer vision_tokenizer;

/* Where and how a tokenizer runs. */
typedef struct vtok_load_opts {
    nn_device device; /* NN_CPU (default) or NN_CUDA */
    nn_dtype dtype;   /* float storage: NN_F32 (default); NN_BF16 on NN_CUDA only */
    int fused_vq;     /* CUDA: the fused distance + argmin kernel instead of GEMM + pick (default 0) */
} vtok_load_opts;
void vtok_load_opts_default(vtok_load_opts *o); /* CPU, f32, GEMM path */

/* Parses the config JSON (err names the bad field). */
int vtok_config_parse(const char *json, vtok_config *cfg, asvr_error *err);
/* Loads and checks the file; prints nothing. */
int vision_tokenizer_load(const char *path, vision_tokenizer **out, asvr_error *err);
/* The same on the device and dtype of o (NULL: the defaults). */
int vision_tokenizer_load_ex(const char *path, const vtok_load_opts *o, vision_tokenizer **out, asvr_error *err);
void vision_tokenizer_free(vision_tokenizer *vt);
const char *vision_tokenizer_backend(const vision_tokenizer *vt); /* "cpu-f32", "cuda-bf16", "cuda-f32" */
nn_device vision_tokenizer_device(const vision_tokenizer *vt);
const vtok_config *vision_tokenizer_config(const vision_tokenizer *vt);
const char *vision_tokenizer_fingerprint(const vision_tokenizer *vt); /* 16 hex digits */
int vision_tokenizer_positions(const vision_tokenizer *vt);           /* (S/p)^2 */
int vision_tokenizer_code_dim(const vision_tokenizer *vt);            /* codebook width */
/* Fingerprint of a tokenizer file without loading the model (same value as after a load). */
int vision_tokenizer_fingerprint_file(const char *path, char out[17], asvr_error *err);
void vision_tokenizer_print(const vision_tokenizer *vt, FILE *f); /* config and memory plan */

/* Scratch for batches of up to max_batch images. */
typedef struct vtok_work vtok_work;
vtok_work *vtok_work_new(const vision_tokenizer *vt, int max_batch);
void vtok_work_free(vtok_work *w);
void vtok_work_print_plan(const vtok_work *w, FILE *f);
/* Seconds spent by the encode calls of this workspace so far, by part: host -> device copies of the
 * images, the model (on CUDA timed to a device synchronisation), device -> host copies of the codes
 * (0 on the CPU, where everything is compute). */
typedef struct vtok_times {
    double upload_s, compute_s, download_s;
    int64_t batches, images;
} vtok_times;
vtok_times vtok_work_times(const vtok_work *w);
/* images: B normalised CHW images (B*3*S*S floats); codes: B*N*D uint16. */
void vision_tokenizer_encode(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, uint16_t *codes);
/* Tap-layer features for B images into feats (B*N*hidden floats) — for parity checks. */
void vision_tokenizer_features(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *feats);
/* What the RVQ quantises, into out (B*N*code_dim floats): the tap features (semantic) or the
 * projection block's output (appearance) — for parity checks. */
void vision_tokenizer_quant_input(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *out);

#ifdef __cplusplus
}
#endif
#endif
