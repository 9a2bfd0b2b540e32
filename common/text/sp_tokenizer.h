/* sp_tokenizer.h — SentencePiece BPE tokenizer: loads a `tokenizer.model` (protobuf ModelProto, parsed
 * here), encodes UTF-8 text to ids and decodes ids to text, matching HF transformers' *slow*
 * `LlamaTokenizer(model, legacy=False)` (the tokenizer of Vicuna-7B-v1.5 / LLaVA-1.5), or with
 * `legacy=True` (Mistral-7B's) when the tokenizer_config.json beside the model says so:
 *   - sp_tokenizer_encode(.., add_bos=1)  == tok(text).input_ids
 *   - sp_tokenizer_encode(.., add_bos=0)  == tok(text, add_special_tokens=False).input_ids
 *   - sp_tokenizer_decode(.., skip)       == tok.decode(ids, skip_special_tokens=skip)
 * and plain SentencePiece (`SentencePieceProcessor.encode(text)` with the model's own normalizer
 * settings) through sp_tokenizer_encode_sp().
 *
 * The HF rules it reproduces: "▁" in the text is read as a space; one "▁" is prepended to the whole
 * text (not to each piece between special tokens); the strings of the BOS/EOS/UNK pieces ("<s>",
 * "</s>", "<unk>") written in the text become those ids, with no whitespace stripped around them; the
 * text after a special token gets no dummy prefix. Encoding is SentencePiece BPE: highest-score merge
 * of adjacent symbols first (leftmost on ties), user-defined pieces kept whole, characters outside
 * the vocabulary become byte pieces <0xNN> (byte fallback) or one <unk> per run. Cost O(n log n).
 *
 * Supported models: model_type BPE with the "identity" normalizer (no precompiled charsmap), which is
 * what Llama/Llama-2/Vicuna/Mistral use; anything else is refused at load with a message. The special
 * token strings are the model's own bos/eos/unk pieces (HF uses the literal "<s>", "</s>", "<unk>";
 * identical for these models).
 * With legacy=True (HF's LlamaTokenizer default when a tokenizer_config.json has no "legacy" key)
 * the text is split at the same special pieces and every chunk between them is encoded by plain
 * SentencePiece with the model's own dummy prefix, so text after "</s>" gets a "▁" again; decoding
 * then puts a space before a special token that follows text, as HF does.
 * Not for: Unigram models, NFKC-normalizing models, HF fast-tokenizer (tokenizer.json) semantics,
 * added tokens beyond the model's <unk>/<s>/</s>, or chat templating (<image> splitting and label
 * masks live in the template code, which calls this per chunk).
 * Thread safety: a loaded tokenizer is read-only; encode/decode may run concurrently on it.
 */
#ifndef ASVR_TEXT_SP_TOKENIZER_H
#define ASVR_TEXT_SP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/ivec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sp_tokenizer sp_tokenizer;

/* Piece types, numbered as in sentencepiece_model.proto. */
typedef enum {
    SP_PIECE_NORMAL = 1,
    SP_PIECE_UNKNOWN = 2,
    SP_PIECE_CONTROL = 3,
    SP_PIECE_USER_DEFINED = 4,
    SP_PIECE_UNUSED = 5,
    SP_PIECE_BYTE = 6,
} sp_piece_type;

/* Token ids are appended to an ivec (base/ivec.h). */

/* Loads and validates a model file. Returns NULL with err set (naming the file and the problem) on a
 * missing, truncated, corrupt or unsupported model; never crashes on bad bytes.
 * When a tokenizer_config.json lies beside the model (an HF model folder), its "legacy" flag is
 * taken (absent key: true, HF's default) and what else it says is checked against what this
 * tokenizer implements (add_bos_token true, add_eos_token false, add_prefix_space true, the special
 * tokens being the model's own pieces, no other added tokens, tokenizer_class LlamaTokenizer[Fast]);
 * anything else is an error naming the config file and the key. Without one, legacy is false. */
sp_tokenizer *sp_tokenizer_load(const char *path, asvr_error *err);
/* Same from bytes already in memory; `name` is used in error messages. The bytes are not retained. */
sp_tokenizer *sp_tokenizer_load_bytes(const uint8_t *data, size_t n, const char *name, asvr_error *err);
void sp_tokenizer_free(sp_tokenizer *t);

/* HF's legacy flag in force (from the config, or set); set it before sharing the tokenizer between
 * threads. sp_tokenizer_config_path: the tokenizer_config.json read at load, NULL when none. */
int sp_tokenizer_legacy(const sp_tokenizer *t);
void sp_tokenizer_set_legacy(sp_tokenizer *t, int legacy);
const char *sp_tokenizer_config_path(const sp_tokenizer *t);

int sp_tokenizer_vocab_size(const sp_tokenizer *t);
/* xxh64 (seed 0) of the model file's bytes; sp_tokenizer_fingerprint_hex gives 16 hex digits. */
uint64_t sp_tokenizer_fingerprint(const sp_tokenizer *t);
void sp_tokenizer_fingerprint_hex(const sp_tokenizer *t, char out[17]);
/* Special ids from the model's trainer_spec; -1 when the model disables one. */
int sp_tokenizer_bos_id(const sp_tokenizer *t);
int sp_tokenizer_eos_id(const sp_tokenizer *t);
int sp_tokenizer_unk_id(const sp_tokenizer *t);
int sp_tokenizer_pad_id(const sp_tokenizer *t);
int sp_tokenizer_byte_fallback(const sp_tokenizer *t);

/* Piece text of an id (not NUL-terminated; *len set), NULL when id is out of range. */
const char *sp_tokenizer_id_to_piece(const sp_tokenizer *t, int id, size_t *len);
/* Id of a piece (any type), -1 when the vocabulary has no such piece. */
int sp_tokenizer_piece_to_id(const sp_tokenizer *t, const char *piece, size_t len);
sp_piece_type sp_tokenizer_piece_type(const sp_tokenizer *t, int id);
float sp_tokenizer_piece_score(const sp_tokenizer *t, int id);

/* HF slow LlamaTokenizer(legacy=False, or True: sp_tokenizer_legacy) encoding of len bytes of UTF-8 text, appended to out.
 * add_bos: prepend the BOS id (tok(text).input_ids) or not (add_special_tokens=False).
 * Invalid UTF-8 bytes are read as U+FFFD, as SentencePiece does. Returns 0, or -1 with err set
 * (text too long for 32-bit offsets, add_bos on a model without BOS). */
int sp_tokenizer_encode(const sp_tokenizer *t, const char *text, size_t len, int add_bos, ivec *out,
                        asvr_error *err);

/* The same encoding through a per-thread encoder that caches the ids of each word it has seen
 * (LLaVA text repeats words heavily). Results are identical to sp_tokenizer_encode; one encoder
 * must not be used by two threads at once. */
typedef struct sp_encoder sp_encoder;
sp_encoder *sp_encoder_new(const sp_tokenizer *t);
void sp_encoder_free(sp_encoder *e);
int sp_encoder_encode(sp_encoder *e, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err);

/* Plain SentencePiece encoding (SentencePieceProcessor.encode) with the model's normalizer settings,
 * or with add_dummy_prefix forced off when no_dummy_prefix is set. Special-token strings in the
 * text are ordinary characters here. Appends to out; returns 0 or -1 with err set. */
int sp_tokenizer_encode_sp(const sp_tokenizer *t, const char *text, size_t len, int no_dummy_prefix,
                           ivec *out, asvr_error *err);

/* HF slow LlamaTokenizer(legacy as set).decode(ids, skip_special_tokens=skip_special): returns a
 * malloc'd NUL-terminated UTF-8 string (*out_len bytes, may contain NUL bytes), or NULL with err set
 * when an id is out of range. Byte pieces are reassembled; invalid UTF-8 becomes U+FFFD per byte. */
char *sp_tokenizer_decode(const sp_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                          size_t *out_len, asvr_error *err);

#ifdef __cplusplus
}
#endif
#endif
