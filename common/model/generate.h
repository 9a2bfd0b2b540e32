/* generate.h — greedy generation from an ASVR model (LLaVA-style: image embeddings spliced into the
 * LLaMA prompt), and the text-level pieces of LLaVA's evaluation protocol around it.
 *
 * asvr_generate runs a batch of prompts: each image through the frozen input tower and the
 * mm_projector, its embeddings written at the image placeholder (one IMAGE_TOKEN_INDEX in the ids,
 * expanded to image_positions positions), then a prefill of the prompts (right-padded, each row at
 * positions 0..len-1) and a greedy loop: next token = the first index of the maximal logit (as
 * torch.argmax), per row until EOS (kept as the row's last token) or max_new_tokens. Rows run in one
 * batch and do not see each other, so batched and one-at-a-time results agree. With use_cache = 0
 * every step recomputes the whole forward over prompt + tokens so far (slow; tests compare both).
 * Optionally it records every step's logits and the last prompt token's attention over the image
 * positions per layer, averaged over heads (the paper's attention maps).
 * Device: the model's (m->ps.device): prompts, images and indices are built on the host and uploaded
 * once, the KV cache and all activations stay on the device, and each step downloads the [B, vocab]
 * logits for the greedy argmax (gen_argmax, on the host) and uploads the B new token ids.
 * Text level: gen_prompt_ids builds the `vicuna_v1` (or `plain`) generation prompt for one question
 * and tokenizes it like tokenizer_image_token; gen_load_image decodes, pads or squashes, resizes and
 * normalises an image as the model was trained; gen_decode_answer is
 * decode(ids, skip_special_tokens=True).strip().
 * Not for: sampling, beam search, or multi-image prompts.
 */
#ifndef ASVR_MODEL_GENERATE_H
#define ASVR_MODEL_GENERATE_H

#include <stdint.h>

#include "base/error.h"
#include "base/ivec.h"
#include "io/image.h"
#include "model/asvr.h"
#include "text/sp_tokenizer.h"
#include "text/template.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gen_prompt {
    const int32_t *ids;   /* token ids; at most one IMAGE_TOKEN_INDEX (-200), where the image goes */
    int n;
    const float *pixels;  /* the normalised image [3, S, S], required iff ids hold the placeholder (continuous input) */
    const char *name;     /* names the sample in errors */
    const uint16_t *codes; /* --input discrete models instead: the image's codes [image_positions * depth] from the
                              tokenizer of the model's codebooks (asvr_code_features makes the projector's input) */
} gen_prompt;

typedef struct gen_options {
    int max_new_tokens;   /* >= 1 */
    int eos_id;           /* < 0: no stop token */
    int use_cache;        /* 1: KV cache; 0: recompute the full forward every step */
    float *logits;        /* NULL or [B, max_new_tokens, vocab]: step s's logits of every row, s < steps */
    float *attention;     /* NULL or [n_layers, B, image_positions]: the last prompt token's attention over
                             the image positions, averaged over heads; rows without an image get 0 */
} gen_options;

typedef struct gen_result {
    int B, max_new;
    int32_t *ids;         /* [B * max_new]: row b's new tokens start at b * max_new */
    int *n;               /* [B]: how many (the EOS included when it ended the row) */
    int steps;            /* forward steps run (= the longest row) */
} gen_result;
void gen_result_free(gen_result *r);

/* Greedy generation for B prompts. The model needs its tower (asvr_model_load_tower) when a prompt has
 * an image, or with input_discrete its codebooks (asvr_model_load_codebooks) and each image's codes. Returns -1 with err naming the sample for a bad prompt (two placeholders, an image
 * without a placeholder or the reverse, an id outside the vocabulary). */
int asvr_generate(asvr_model *m, const gen_prompt *p, int B, const gen_options *o, gen_result *r,
                  asvr_error *err);

/* First index of the largest value of row[0..n) (torch.argmax); NaNs are never chosen (0 if all are). */
int32_t gen_argmax(const float *row, int64_t n);

/* The generation prompt for one question: t's prompt with the human turn "<image>\n" + question (the
 * image first, as the evaluation does; question alone without an image), the assistant turn open,
 * tokenized like tokenizer_image_token. Appends to out. */
int gen_prompt_ids(const template_spec *t, const text_encoder *enc, const char *question, int has_image, ivec *out,
                   asvr_error *err);

/* Decodes path and preprocesses it for the model: policy pad (expand2square with opts->pad) or squash,
 * bicubic resize to S x S, normalise with mean/std into pixels [3, S, S]; rgb (optional, 3*S*S) gets
 * the preprocessed 8-bit image. -1 with err naming the file. */
int gen_load_image(const char *path, const image_preprocess_opts *opts, const float mean[3], const float std[3],
                   float *pixels, uint8_t *rgb, asvr_error *err);

/* decode(ids, skip_special_tokens=True).strip(), malloc'd; NULL with err set on a bad id. */
char *gen_decode_answer(const sp_tokenizer *tok, const int32_t *ids, int n, asvr_error *err);

/* The text encoder binding of a SentencePiece tokenizer for the template code. */
text_encoder gen_text_encoder(const sp_tokenizer *tok);

#ifdef __cplusplus
}
#endif
#endif
