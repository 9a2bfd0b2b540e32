/* asvr.h — the ASVR model assembled from its parts, and one micro-batch through it in three steps
 * (asvr_forward, asvr_loss, asvr_backward) over the state its activations keep.
 *
 *   images → frozen SigLIP input tower (tap layer) ─┐            (--input discrete: Σ_d codebook_d[code])
 *                                                    ├→ mm_projector → spliced at the image positions
 *   token ids → LLM embeddings ──────────────────────┘
 *   → LLaMA (packed rows: block-diagonal causal attention, positions restart per sample)
 *   → final-norm states h ─→ lm_head → text CE (labels shifted within each sample)
 *                         └→ at image positions (no shift) → visual head → D × code CE
 *   loss = text + λ · visual; text-only samples add no visual loss (unless the batch asks for the
 *   reference behaviour: zero states at P positions scored against the zero image's codes).
 * Parameters live in one param_set: "llm.*", "mm_projector.*", "visual_head.*"; the input tower and the
 * codebooks are frozen and loaded apart. An optional second head ("visual_head_appearance", its own
 * codebooks and codes) gives the appearance and dual losses. The configuration is JSON:
 *   {"llm": {HF LlamaConfig keys}, "vision": {image_size, patch_size, hidden_size, intermediate_size,
 *    num_layers, num_heads, layer_norm_eps, tap_layer, image_mean, image_std, optional scales (S2: the
 *    tower runs at each scale in tiles of its size, model/s2.h; hidden_act may say gelu_pytorch_tanh)},
 *    "visual_head": {embed_dim, n_heads, depth, codebook_size, n_layers, ffn_dim, rms_norm_eps},
 *    "image_positions": 729}
 * Device: everything (parameters, frozen tower and codebooks, activations) lives on m->ps.device; set it
 * with param_set_set_device(&m->ps, NN_CUDA) before committing the set. f32 storage, except on CUDA the
 * bf16 frozen tower (tower_bf16) and mixed precision (compute_bf16).
 * Not for: data loading, optimisation or checkpoints (asvr-train), generation (asvr-eval).
 */
#ifndef ASVR_MODEL_ASVR_H
#define ASVR_MODEL_ASVR_H

#include <stdint.h>
#include <stdio.h>

#include "base/error.h"
#include "model/llama.h"
#include "model/mlp.h"
#include "model/params.h"
#include "model/s2.h"
#include "model/siglip.h"
#include "model/visual_head.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ASVR_MAX_RECOMPUTE_LAYERS 512 /* LLM layers a recompute set can name */

typedef struct asvr_config {
    llama_config llm;
    siglip_config vision;
    vhead_config head;
    float image_mean[3], image_std[3];
    uint8_t image_pad[3];      /* the pad colour of policy pad: int(image_mean × 255), the reference's rule
                                  (computed from the config's values in double precision, as Python does) */
    int image_positions;
    int scales[S2_MAX_SCALES]; /* "vision": {"scales": [...]}: the S2 multi-scale input (model/s2.h), */
    int n_scales;              /* 0: the tower's single forward at its image_size */
    int has_head;        /* semantic visual head ("visual_head"); 0 with --visual-loss none (the LLaVA baseline) */
    vhead_config head_app; /* appearance visual head ("visual_head_appearance"), for the App. and Dual rows */
    int has_app_head;
    int input_discrete;  /* 1: the projector reads Σ_d codebook_d[code] instead of the SigLIP tower */
    int flash_attention; /* 1: the LLM's attention keeps only log-sum-exps (llama_acts_new_ex); set by the
                            caller (a run-time choice, not part of the config JSON) */
    unsigned char recompute_mask[ASVR_MAX_RECOMPUTE_LAYERS]; /* LLM layers whose activations are recomputed
                             in the backward (likewise; set with asvr_config_set_recompute) */
    int recompute_layers; /* how many (for printing) */
    int tower_bf16;       /* on CUDA: the frozen input tower's weights and activations in bf16, its
                             features converted to f32 for the projector (likewise; ignored on the CPU) */
    int compute_bf16;     /* mixed precision (CUDA): bf16 copies of the trained matrices for the GEMMs, bf16
                             kept LLM activations and logits, f32 master weights, gradients, AdamW state and
                             residual streams (likewise a run-time choice; needs the set on CUDA) */
    int head_chunk;       /* the visual heads run over chunks of at most this many positions (0: all at once);
                             a run-time choice: the head's activations are planned for one chunk */
    float lambda_visual;
} asvr_config;

int asvr_config_from_json(const char *json, asvr_config *c, asvr_error *err);
/* The side of the square images the model takes (the largest S2 scale, else the tower's image_size), and
 * the width of the image features the projector reads (the tower's width times the scales). */
static inline int asvr_input_size(const asvr_config *c) {
    return c->n_scales > 0 ? c->scales[c->n_scales - 1] : c->vision.image_size;
}
static inline int asvr_feature_width(const asvr_config *c) {
    return c->vision.hidden * (c->n_scales > 0 ? c->n_scales : 1);
}
/* Which LLM layers recompute their activations in the backward: list NULL or "" = the first `first_n`
 * (0 .. n_layers); else a comma-separated list of layers and ranges ("0-15,20"). Sets recompute_layers
 * (the count) and recompute_mask. -1 with err naming the bad part. */
int asvr_config_set_recompute(asvr_config *c, int first_n, const char *list, asvr_error *err);

typedef struct asvr_model {
    asvr_config c;
    param_set ps;
    llama *llm;
    mlp2 proj;
    vhead *head;       /* NULL without a head */
    vhead *head_app;   /* NULL without an appearance head */
    siglip *tower;     /* NULL until loaded (not needed with input_discrete) */
    nn_arena *frozen, *frozen_app;  /* the codebooks [D, K, C] of each tokenizer */
    tensor *codebooks, *codebooks_app;
} asvr_model;

/* Declares the parameters (call param_set_trainable / param_set_commit on m->ps afterwards), with the
 * slot order of the flat buffers following the step's backward (params.h). */
void asvr_model_init(asvr_model *m, const asvr_config *c);
/* Images a micro-batch of `rows` packed rows of T positions can hold at most (each image takes
 * image_positions of a row; a truncated one may start in the last positions). */
int asvr_max_images(const asvr_config *c, int rows, int T);
/* Frozen parts, on the parameters' device (load them after param_set_commit): the input tower from st under prefix (HF: "vision_model."), the codebooks from a
 * tensor [D,K,C] or from D tensors "<prefix>{d}.weight" [K or K+1, C]. */
int asvr_model_load_tower(asvr_model *m, const safetensors *st, const char *prefix, asvr_error *err);
int asvr_model_load_codebooks(asvr_model *m, const safetensors *st, const char *name_or_prefix, asvr_error *err);
int asvr_model_load_app_codebooks(asvr_model *m, const safetensors *st, const char *name_or_prefix, asvr_error *err);
void asvr_model_free(asvr_model *m);
void asvr_model_print(const asvr_model *m, FILE *f);

/* --input discrete: the projector's input for n image positions, feats[i] = Σ_d codebooks[d][codes[i*D+d]]
 * (codes on the host, D per position; the sum in depth order). rows [>= n, C] f32 and ids [>= n] i32 on
 * the model's device, h_ids [>= n] i32 on the host, are scratch. Stops with a message on a code >= K. */
void asvr_code_features(const asvr_model *m, const uint16_t *codes, int64_t n, tensor *feats, tensor *rows, tensor *ids,
                        tensor *h_ids);

/* One micro-batch, laid out as the trainer's data loader makes it. */
typedef struct asvr_batch {
    int B, T;
    const int32_t *ids, *labels, *pos, *seg; /* [B*T] */
    int n_images;
    const int32_t *image_pos;                /* [n_images*P], -1 where truncated away */
    const uint16_t *codes;                   /* [n_images*P*D] semantic codes */
    const uint16_t *codes_app;               /* [n_images*P*D_app] appearance codes (NULL without that head) */
    const float *pixels;                     /* [n_images*3*S*S] (NULL with input_discrete) */
    /* The reference's treatment of text-only samples (off unless zero_codes is set): each of the
     * n_text_only samples adds P visual positions whose LLM state is zero, scored against the codes
     * the tokenizer gives a zero image (zero_codes [P*D]). */
    int n_text_only;
    const uint16_t *zero_codes;
} asvr_batch;

typedef struct asvr_losses {
    double text_sum;     /* summed CE over scored text targets */
    int64_t text_count;
    double vis_sum[256]; /* per depth, summed over image positions */
    int64_t vis_count;   /* image positions scored */
    int64_t vis_correct[256];
    double app_sum[256]; /* the appearance head's, likewise */
    int64_t app_count;
    int64_t app_correct[256];
} asvr_losses;

/* Activations for micro-batches of up to B rows of exactly T positions and up to max_images images,
 * on the model's device; the micro-batch's host arrays are turned into ids / targets / indices / codes
 * on the host and uploaded once per micro-batch. A shorter micro-batch (fewer rows, e.g. the last of
 * an epoch) runs on the same activations. */
typedef struct asvr_acts asvr_acts;
asvr_acts *asvr_acts_new(const asvr_model *m, int B, int T, int max_images);
/* The step arena's plan, the host inputs' plan, and one line of totals per part (LLM, heads, tower). */
void asvr_acts_print_plan(const asvr_acts *a, FILE *f);
size_t asvr_acts_bytes(const asvr_acts *a); /* device (or CPU) bytes of all activation arenas */
void asvr_acts_free(asvr_acts *a);

/* Time per phase of the step, accumulated over calls while timing is on (off by default: each phase
 * boundary waits for the device, which costs a little overlap). */
typedef enum {
    ASVR_PHASE_VISION,        /* input tower (or the discrete codebook sum) and the projector forward */
    ASVR_PHASE_LLM_FORWARD,   /* embeddings and the LLaMA forward */
    ASVR_PHASE_TEXT_HEAD,     /* lm_head, text cross-entropy and their backward */
    ASVR_PHASE_VISUAL_HEAD,   /* the visual head(s) forward, losses and backward */
    ASVR_PHASE_LLM_BACKWARD,  /* the LLaMA backward and the embedding gradients */
    ASVR_PHASE_PROJ_BACKWARD, /* the projector backward */
    ASVR_NPHASES
} asvr_phase;
const char *asvr_phase_name(asvr_phase p);
void asvr_acts_set_timing(asvr_acts *a, int on);
/* Seconds spent in each phase since timing was switched on (ASVR_NPHASES values). */
const double *asvr_acts_phase_seconds(const asvr_acts *a);

/* What each loss is multiplied by in the gradient: the global means of the whole optimizer step
 * folded in (1 / scored text targets of the step; λ / (D · image positions of the step) per head). */
typedef struct asvr_scales {
    double text, visual, appearance;
} asvr_scales;

/* Step 1: uploads b's inputs, runs the tower (or the discrete codebook sum) and the projector, splices
 * the image embeddings into the token embeddings and runs the LLM to the final-norm states. b must
 * stay valid until asvr_backward. */
void asvr_forward(asvr_model *m, asvr_acts *a, const asvr_batch *b);
/* Step 2: the text loss (lm_head, cross-entropy; dlogits kept in place of the logits) and the visual
 * losses at the image positions (per head, over chunks of positions); adds the sums and counts to *l.
 * for_backward = 1 (training): the visual heads' backward runs here too, chunk by chunk (their
 * activations do not outlive a chunk), their parameter gradients accumulate and their gradient of the
 * LLM states is kept for asvr_backward; 0 (evaluation): losses and accuracies only. */
void asvr_loss(asvr_model *m, asvr_acts *a, const asvr_scales *s, asvr_losses *l, int for_backward);
/* Step 3: back from the kept dlogits and the heads' state gradients through the LLM, the token
 * embeddings and the projector; gradients accumulate into m->ps (+=), and the backward reports its
 * progress to the set (param_set_grads_done). */
void asvr_backward(asvr_model *m, asvr_acts *a);
/* The three steps in turn (training). */
void asvr_forward_backward(asvr_model *m, asvr_acts *a, const asvr_batch *b, const asvr_scales *s, asvr_losses *l);

#ifdef __cplusplus
}
#endif
#endif
