/* siglip.h — the SigLIP vision encoder (HF SiglipVisionModel), forward up to a tap layer.
 *
 * Conv patch embedding (k = s = patch, with bias) + learned position embedding, then pre-LN encoder
 * layers: h += out_proj(MHA(LN1(h))); h += fc2(gelu_tanh(fc1(LN2(h)))). The output is the hidden
 * state after encoder layer `tap` (counting from 1, = HF hidden_states[tap]), with no post-LN and
 * no head; layers after the tap are neither loaded nor run. Weights come from a safetensors file
 * under HF names (prefix + "embeddings.patch_embedding.weight", ...), converted to fp32; every
 * expected tensor is checked for presence and shape before anything is allocated.
 * siglip_load_ex places the model on a device: CPU f32 (what siglip_load does), CUDA f32 or CUDA
 * bf16 (weights and activations in bf16, fp32 accumulation); the activations arena follows it.
 * Input: normalised CHW fp32 images [B,3,S,S] (on the model's device; f32 even for a bf16 model);
 * output [B,(S/p)^2,C] in raster patch order, in the model's dtype.
 * Not for: the post-LN / MAP head / text tower, image decoding or normalisation (io/ does that),
 * or training the encoder (forward only; it is frozen in ASVR).
 */
#ifndef ASVR_MODEL_SIGLIP_H
#define ASVR_MODEL_SIGLIP_H

#include <stdio.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "nn/ops.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct siglip_config {
    int image_size;   /* S: input is S x S */
    int patch_size;   /* p; (S/p)^2 patches, the last S%p pixel rows/columns unused (384/14 -> 27) */
    int hidden;       /* C */
    int intermediate; /* MLP width */
    int layers;       /* layers in the checkpoint (informational; tap <= layers) */
    int heads;
    float ln_eps;
    int tap;          /* 1..layers: output of this encoder layer */
    nn_act act;       /* NN_ACT_GELU_TANH for SigLIP (gelu_pytorch_tanh) */
} siglip_config;

/* google/siglip-so400m-patch14-384 as LLaVA/ASVR use it: tap 26 of 27 layers. */
siglip_config siglip_config_so400m(void);
/* Checks the numbers are consistent (divisibility, tap range); -1 with err naming the field. */
int siglip_config_check(const siglip_config *cfg, asvr_error *err);
static inline int siglip_num_patches(const siglip_config *c) {
    return (c->image_size / c->patch_size) * (c->image_size / c->patch_size);
}

typedef struct siglip siglip;

/* Loads layers 1..tap from st under `prefix` (HF checkpoints: "vision_model."). Returns -1 with err
 * naming the missing or mis-shaped tensor (and its file) when the file does not fit cfg. */
int siglip_load(const siglip_config *cfg, const safetensors *st, const char *prefix, siglip **out,
                asvr_error *err);
/* The same on dev with float weights stored as dtype (NN_F32; NN_BF16 on NN_CUDA only). */
int siglip_load_ex(const siglip_config *cfg, const safetensors *st, const char *prefix, nn_device dev,
                   nn_dtype dtype, siglip **out, asvr_error *err);
/* siglip_load_ex with f32 storage on dev (the trainer's frozen tower). */
int siglip_load_on(const siglip_config *cfg, const safetensors *st, const char *prefix, nn_device dev, siglip **out,
                   asvr_error *err);
const siglip_config *siglip_cfg(const siglip *m);
nn_device siglip_device(const siglip *m);
nn_dtype siglip_dtype(const siglip *m); /* the float dtype of weights and activations */
void siglip_print_plan(const siglip *m, FILE *f); /* weights arena plan */
void siglip_free(siglip *m);

/* Activations for batches of up to max_batch images, planned in one arena. */
typedef struct siglip_acts siglip_acts;
siglip_acts *siglip_acts_new(const siglip *m, int max_batch);
void siglip_acts_print_plan(const siglip_acts *a, FILE *f);
size_t siglip_acts_bytes(const siglip_acts *a);
void siglip_acts_free(siglip_acts *a);

/* images [B,3,S,S] f32 with B <= max_batch; out [B,N,C] in the model's dtype, on its device (every
 * element written). */
void siglip_forward(const siglip *m, siglip_acts *a, const tensor *images, tensor *out);

#ifdef __cplusplus
}
#endif
#endif
