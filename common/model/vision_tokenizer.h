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
 * Forward (semantic kind): patch + position embedding, encoder layers 1..tap, greedy RVQ on the raw
 * tap output; codes [B, N, D] in raster order.
 * Not for: the appearance tokenizer (layer-6 ResNet projection; not supported yet: refused on load),
 * image decoding (io/image.h), or training.
 */
#ifndef ASVR_MODEL_VISION_TOKENIZER_H
#define ASVR_MODEL_VISION_TOKENIZER_H

#include <stdint.h>
#include <stdio.h>

#include "base/error.h"
#include "model/rvq.h"
#include "model/siglip.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VTOK_META_KEY "asvr_tokenizer"

typedef struct vtok_config {
    char kind[16];
    siglip_config enc;
    char encoder_prefix[64], codebook_prefix[64];
    int depth, codebook_size;
    float mean[3], std[3];
    uint8_t pad[3];
} vtok_config;

typedef struct vision_tokenizer vision_tokenizer;

/* Parses the config JSON (err names the bad field). */
int vtok_config_parse(const char *json, vtok_config *cfg, asvr_error *err);
/* Loads and checks the file; prints nothing. */
int vision_tokenizer_load(const char *path, vision_tokenizer **out, asvr_error *err);
void vision_tokenizer_free(vision_tokenizer *vt);
const vtok_config *vision_tokenizer_config(const vision_tokenizer *vt);
const char *vision_tokenizer_fingerprint(const vision_tokenizer *vt); /* 16 hex digits */
int vision_tokenizer_positions(const vision_tokenizer *vt);           /* (S/p)^2 */
/* Fingerprint of a tokenizer file without loading the model (same value as after a load). */
int vision_tokenizer_fingerprint_file(const char *path, char out[17], asvr_error *err);
void vision_tokenizer_print(const vision_tokenizer *vt, FILE *f); /* config and memory plan */

/* Scratch for batches of up to max_batch images. */
typedef struct vtok_work vtok_work;
vtok_work *vtok_work_new(const vision_tokenizer *vt, int max_batch);
void vtok_work_free(vtok_work *w);
void vtok_work_print_plan(const vtok_work *w, FILE *f);
/* images: B normalised CHW images (B*3*S*S floats); codes: B*N*D uint16. */
void vision_tokenizer_encode(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, uint16_t *codes);
/* Tap-layer features for B images into feats (B*N*C floats) — for parity checks. */
void vision_tokenizer_features(const vision_tokenizer *vt, vtok_work *w, int B, const float *images, float *feats);

#ifdef __cplusplus
}
#endif
#endif
