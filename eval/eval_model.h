/* eval_model.h — what every asvr-eval command loads: a trained model (a checkpoint folder of asvr-train,
 * or model.safetensors + a model config JSON), the frozen input tower, the SentencePiece tokenizer,
 * the image preprocessing policy and the prompt template; plus the shared command-line options.
 * The image policy defaults to what the checkpoint's stage trained with (pt: squash, it: pad); a
 * config without a checkpoint defaults to pad (LLaVA-1.5's evaluation). The visual head is loaded only
 * for `codes` (generation does not use it).
 * A model trained with `--input discrete` (state.json's "input", an export's asvr_export.input) reads
 * codes, not the tower's features: --codebooks names the vision tokenizer file, which encodes each
 * image (its own image size, normalisation and pad colour; on the eval device, bf16 on cuda as
 * `asvr-tokenize encode` does) and whose codebooks make the projector's input; --vision is then not
 * needed. The tokenizer's fingerprint must be the one the training's code store recorded.
 * Not for: training state (optimizer, data cursor), or benchmark data.
 */
#ifndef ASVR_EVAL_MODEL_H
#define ASVR_EVAL_MODEL_H

#include "base/cli.h"
#include "base/error.h"
#include "io/image.h"
#include "model/asvr.h"
#include "model/generate.h"
#include "model/vision_tokenizer.h"
#include "text/sp_tokenizer.h"
#include "text/template.h"

typedef struct eval_model_opts {
    const char *checkpoint, *model, *config, *vision, *vision_prefix, *tokenizer, *policy, *template_name;
    const char *codebooks; /* the vision tokenizer file (discrete input; the codes command's head) */
    const char *input;     /* NULL (the checkpoint's), "continuous" or "discrete" */
    const char *device; /* "cpu" (default) or "cuda": where the model, its activations and the KV cache live */
    int with_head; /* also load the visual head (the code-accuracy check); generation never needs it */
} eval_model_opts;

/* Defaults (vision prefix "vision_model.", template vicuna_v1); EVAL_MODEL_OPTS lists the options. */
void eval_model_opts_default(eval_model_opts *o);
#define EVAL_MODEL_NOPTS 11
/* Fills out[0..EVAL_MODEL_NOPTS) with the options that set o. */
void eval_model_opts_table(eval_model_opts *o, asvr_opt *out);

typedef struct eval_model {
    asvr_model m;
    sp_tokenizer *tok;
    text_encoder enc;
    const template_spec *tmpl;
    image_preprocess_opts pre;
    float mean[3], std[3]; /* the image normalisation: the tower's, or the discrete input's tokenizer's */
    vision_tokenizer *vt;  /* discrete input: encodes each image (NULL otherwise) */
    vtok_work *vw;
    char *source;     /* the weights file, for messages */
} eval_model;

/* Usage problems (missing or conflicting options) end in asvr_cli_usage_error (exit 2); file problems
 * return -1 with err naming the file. */
int eval_model_load(const asvr_cli *cli, const eval_model_opts *o, eval_model *em, asvr_error *err);
/* The model's input for one image file, preprocessed as it trained: pixels [3, S, S] (S = em->pre.size)
 * always, and with discrete input codes [image_positions * depth] (the image through em->vt; NULL
 * otherwise). rgb (optional, 3*S*S) gets the preprocessed 8-bit image. -1 with err naming the file. */
int eval_model_image(eval_model *em, const char *path, float *pixels, uint16_t *codes, uint8_t *rgb, asvr_error *err);
/* Codes per image (0 with continuous input): the size of eval_model_image's codes. */
int64_t eval_model_codes_per_image(const eval_model *em);
void eval_model_free(eval_model *em);

#endif
