/* eval_model.h — what every asvr-eval command loads: a trained model (a checkpoint folder of asvr-train,
 * or model.safetensors + a model config JSON), the frozen input tower, the SentencePiece tokenizer,
 * the image preprocessing policy and the prompt template; plus the shared command-line options.
 * The image policy defaults to what the checkpoint's stage trained with (pt: squash, it: pad); a
 * config without a checkpoint defaults to pad (LLaVA-1.5's evaluation). The visual head is never
 * loaded (generation does not use it).
 * Not for: training state (optimizer, data cursor), or benchmark data.
 */
#ifndef ASVR_EVAL_MODEL_H
#define ASVR_EVAL_MODEL_H

#include "base/cli.h"
#include "base/error.h"
#include "io/image.h"
#include "model/asvr.h"
#include "model/generate.h"
#include "text/sp_tokenizer.h"
#include "text/template.h"

typedef struct eval_model_opts {
    const char *checkpoint, *model, *config, *vision, *vision_prefix, *tokenizer, *policy, *template_name;
    const char *device; /* "cpu" (default) or "cuda": where the model, its activations and the KV cache live */
    int with_head; /* also load the visual head (the code-accuracy check); generation never needs it */
} eval_model_opts;

/* Defaults (vision prefix "vision_model.", template vicuna_v1); EVAL_MODEL_OPTS lists the options. */
void eval_model_opts_default(eval_model_opts *o);
#define EVAL_MODEL_NOPTS 9
/* Fills out[0..EVAL_MODEL_NOPTS) with the options that set o. */
void eval_model_opts_table(eval_model_opts *o, asvr_opt *out);

typedef struct eval_model {
    asvr_model m;
    sp_tokenizer *tok;
    text_encoder enc;
    const template_spec *tmpl;
    image_preprocess_opts pre;
    char *source;     /* the weights file, for messages */
} eval_model;

/* Usage problems (missing or conflicting options) end in asvr_cli_usage_error (exit 2); file problems
 * return -1 with err naming the file. */
int eval_model_load(const asvr_cli *cli, const eval_model_opts *o, eval_model *em, asvr_error *err);
void eval_model_free(eval_model *em);

#endif
