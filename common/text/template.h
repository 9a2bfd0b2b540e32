/* template.h — LLaVA conversation templates: prompt building, <image> handling, token ids and the
 * label mask, reproducing LLaVA's preprocess_plain / preprocess_v1 / tokenizer_image_token
 * (reference/data_and_eval.md §A2), including their quirks:
 *   - <image> normalisation (all occurrences removed, strip, "<image>\n" prepended, strip);
 *   - each text chunk around <image> tokenised on its own (own BOS, stripped; own dummy prefix);
 *   - the per-round length arithmetic of preprocess_v1 (with the non-legacy "-1" for rounds >= 1),
 *     and the whole sample masked when that arithmetic disagrees with the ids ("mismatch");
 *   - text-only samples truncated to max_len by the tokenizer call, image samples not.
 * A template is data (a template_spec): system prompt, role names, separators and a style; adding
 * one with the same structure is a new table entry.
 * Not for: image positions expansion or packing (the packer does that) or tokenisation itself
 * (a text_encoder supplies it).
 */
#ifndef ASVR_TEXT_TEMPLATE_H
#define ASVR_TEXT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/ivec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IGNORE_INDEX (-100)
#define IMAGE_TOKEN_INDEX (-200)

/* Tokeniser binding: encode UTF-8 text (HF slow LlamaTokenizer semantics, legacy=False) appending
 * ids to out, with BOS first when add_bos. Returns -1 with err set on failure. */
typedef struct text_encoder {
    void *ctx;
    int (*encode)(void *ctx, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err);
    int32_t bos_id, eos_id, pad_id; /* pad = unk = 0 for Llama */
} text_encoder;

typedef enum { TEMPLATE_PLAIN, TEMPLATE_TWO } template_style;

typedef struct template_spec {
    const char *name;     /* "plain", "vicuna_v1" */
    template_style style;
    const char *system;
    const char *roles[2]; /* human, assistant */
    const char *sep, *sep2;
    int legacy;           /* the tokenizer's legacy flag; 0 applies the -1 adjustment for rounds >= 1 */
} template_spec;

/* NULL when unknown; template_names lists the known ones ("plain, vicuna_v1"). */
const template_spec *template_find(const char *name);
const char *template_names(void);
/* xxh64 over every field of the spec, as 16 hex digits: stores record which template made them. */
void template_fingerprint(const template_spec *t, char out[17]);

typedef struct chat_turn {
    int from_human;     /* "human" → 1, "gpt" → 0 */
    const char *value;  /* UTF-8, NUL-terminated (the _n functions take lengths: a NUL inside is text) */
} chat_turn;

typedef struct template_result {
    ivec ids;           /* token ids; IMAGE_TOKEN_INDEX marks the image */
    ivec labels;        /* same length; IGNORE_INDEX where masked, else the id */
    int mismatch;       /* 1 when the reference length check failed and everything was masked */
    int truncated;      /* 1 when the tokenizer call truncated a text-only sample */
    int n_images;       /* IMAGE_TOKEN_INDEX count in ids */
} template_result;
void template_result_free(template_result *r);

/* Builds ids and labels for one sample. has_image says whether the sample has an image file; its
 * turns must then carry "<image>". max_len is the tokenizer's model_max_length (2048).
 * Returns -1 with err set for a malformed sample (bad turn order, missing <image>, ...). */
int template_apply(const template_spec *t, const text_encoder *enc, const chat_turn *turns, int n_turns,
                   int has_image, int max_len, template_result *out, asvr_error *err);
/* The same with each turn's length in lens[i] (see template_prompt_n). */
int template_apply_n(const template_spec *t, const text_encoder *enc, const chat_turn *turns, const size_t *lens,
                     int n_turns, int has_image, int max_len, template_result *out, asvr_error *err);

/* The prompt string the template builds (after <image> normalisation); malloc'd. Exposed for tests
 * and for generation (with add_generation_prompt the last assistant turn is left open). */
char *template_prompt(const template_spec *t, const chat_turn *turns, int n_turns, int has_image,
                      int add_generation_prompt);
/* The same with each turn's length in lens[i] (NULL: up to its NUL) and the prompt's in *len: a NUL
 * inside a value is text, as in Python (the tokenizer gives it a byte token). */
char *template_prompt_n(const template_spec *t, const chat_turn *turns, const size_t *lens, int n_turns, int has_image,
                        int add_generation_prompt, size_t *len);

/* LLaVA's tokenizer_image_token(text): each chunk around "<image>" encoded on its own with BOS, the
 * first BOS kept and the others dropped, IMAGE_TOKEN_INDEX between chunks; appended to out (for
 * generation prompts: template_prompt(..., add_generation_prompt = 1) then this). -1 with err set. */
int template_tokenize_image(const text_encoder *enc, const char *text, size_t len, ivec *out, asvr_error *err);

/* Python's str.strip() (Unicode whitespace) as [begin, end) byte offsets. */
void py_strip(const char *s, size_t len, size_t *begin, size_t *end);

#ifdef __cplusplus
}
#endif
#endif
