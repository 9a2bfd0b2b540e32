/* llama.h — the LLaMA decoder (HF LlamaForCausalLM) as a trainable model: forward and backward.
 *
 * Pre-norm decoder layers over a residual stream h [B,T,dim] fed with inputs_embeds:
 *   h += o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = RMSNorm_in(h)
 *   h += down_proj(silu(gate_proj(n)) * up_proj(n)),                     n = RMSNorm_post(h)
 * then the final RMSNorm; the untied lm_head is a separate call on the rows the caller scores.
 * Attention is causal inside a segment (packed rows: per-token segment ids, block-diagonal mask),
 * with grouped-query heads (n_kv_heads divides n_heads), RoPE (rotate_half, per-token positions
 * that restart per sample), scale 1/sqrt(head_dim); no biases anywhere.
 * Parameters are declared in a caller-owned param_set under HF names with a prefix ("llm." +
 * "model.embed_tokens.weight", "model.layers.{i}.self_attn.q_proj.weight", ..., "lm_head.weight"),
 * so loading, freezing, saving and the optimiser work on the set. A frozen parameter (g == NULL)
 * gets no gradient, but input gradients still flow through it.
 * Activations for B rows of T positions live in one arena planned by llama_acts_new; the forward
 * keeps everything the backward reads: by default the full attention probabilities [B,H,T,T] per
 * layer (fine at test and CPU sizes), or with llama_acts_new_ex(..., flash = 1) only their
 * log-sum-exp, the backward recomputing them (what training at 7B scale needs).
 * Inference (forward only, nothing kept for backward): a KV cache (llama_cache) holds the post-RoPE
 * keys and values of every layer for B rows of up to T_max positions; llama_prefill runs a prompt per
 * row and fills it, llama_decode_step runs one new position per row against the cached prefix.
 * Device: activations and the cache live where the parameters do (param_set_set_device); ids,
 * positions, segments and att_last passed in must be on that device too. The cache's bookkeeping
 * (positions, segments, lengths) is built on the host and uploaded per call. Written against ops.h
 * only; the CUDA path compiles but has not yet run on a GPU.
 * Not for: sliding-window or beam-search caches, tied embeddings, rope scaling variants, biased projections
 * (attention_bias / mlp_bias), or the loss itself (model/text_loss.h builds the shifted targets).
 */
#ifndef ASVR_MODEL_LLAMA_H
#define ASVR_MODEL_LLAMA_H

#include <stdio.h>

#include "base/error.h"
#include "model/params.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llama_config {
    int dim;        /* hidden_size */
    int n_layers;   /* num_hidden_layers */
    int n_heads;    /* num_attention_heads */
    int n_kv_heads; /* num_key_value_heads (GQA); = n_heads for plain multi-head attention */
    int head_dim;   /* head_dim; 0 means dim / n_heads */
    int ffn_dim;    /* intermediate_size */
    int vocab;      /* vocab_size */
    float rms_eps;  /* rms_norm_eps */
    float rope_theta;
    int sliding_window; /* Mistral's attention window; 0 = none. Rows longer than it are refused
                           (llama_acts_new), since the window is not supported and changes nothing below it */
    int max_positions;  /* max_position_embeddings: the context generation is bounded by; 0 = not given */
} llama_config;

/* Reads an HF config.json text (LlamaConfig / MistralConfig keys): hidden_size, num_hidden_layers,
 * num_attention_heads, intermediate_size, vocab_size (required); num_key_value_heads (default:
 * num_attention_heads), head_dim (default hidden_size / heads), rms_norm_eps (default 1e-6),
 * rope_theta (default 1e4; also read from "rope_parameters"), sliding_window (default none). Refuses what this model does not
 * implement: hidden_act other than silu, tied embeddings, rope scaling, attention or MLP biases.
 * -1 with err naming the key. */
int llama_config_from_json(const char *json_text, llama_config *c, asvr_error *err);
/* Consistency (positive sizes, heads divisible, even head_dim, eps and theta > 0); -1 naming the field. */
int llama_config_check(const llama_config *c, asvr_error *err);
static inline int llama_head_dim(const llama_config *c) {
    return c->head_dim > 0 ? c->head_dim : c->dim / c->n_heads;
}

typedef struct llama llama;
typedef struct llama_acts llama_acts;

/* Declares the parameters into ps (not yet committed) under prefix (e.g. "llm."); exits on a bad
 * config (check it first with llama_config_check). Weight decay on matrices and the embedding, not
 * on norms. Random init (param_set_init_random): N(0, 0.02) for matrices and the embedding, 1 for
 * norms, as HF initialises LLaMA. The tensors are read after the caller commits ps. */
llama *llama_new(const llama_config *c, param_set *ps, const char *prefix);
const llama_config *llama_cfg(const llama *m);
/* The parameters' name prefixes in the order the backward finishes their gradients (lm_head, final
 * norm, the layers from last to first, the embedding: for param_set_set_order); the backward reports
 * each as finished (param_set_grads_done). Caller frees the strings and the array. */
void llama_slot_order(const llama *m, int *n, char ***prefixes);
/* Config and parameter count. */
void llama_print(const llama *m, FILE *f);
void llama_free(llama *m);

/* Activations for up to B rows of exactly T positions, in one arena (after ps is committed).
 * Exits when T exceeds a configured sliding window. */
llama_acts *llama_acts_new(const llama *m, int B, int T);
/* Same, with two memory options:
 *  flash = 1 runs the attention as op_flash_attention, which keeps only the log-sum-exp [B, H, T] per
 *    layer and recomputes the probabilities in the backward (memory O(B·H·T) instead of the
 *    [B, H, T, T] probabilities per layer: 16 GiB in f32 at 8 layers, B 4, H 32, T 2048);
 *  recompute = R (0 .. n_layers): layers 0..R-1 keep only their input residual; their other
 *    activations live in one shared set, rebuilt by running the layer's forward again in the backward
 *    (the same ops on the same inputs, so the gradients are unchanged) — about one layer's forward
 *    more work per recomputed layer for (R - 1) layers' activations less. */
llama_acts *llama_acts_new_ex(const llama *m, int B, int T, int flash, int recompute);
/* Same, with any set of recomputed layers: recompute_mask [n_layers], nonzero = recomputed (NULL: none).
 * The set is shared by all of them, whichever they are. */
llama_acts *llama_acts_new_sel(const llama *m, int B, int T, int flash, const unsigned char *recompute_mask);
void llama_acts_print_plan(const llama_acts *a, FILE *f);
size_t llama_acts_bytes(const llama_acts *a);
void llama_acts_free(llama_acts *a);

/* Token embeddings: x [B,T,dim] row (b,t) = embed_tokens[ids[b,t]] for ids >= 0; positions with
 * ids < 0 (image placeholders, padding the caller marked) are left untouched for the caller to fill.
 * ids: i32 [B,T] on x's device (op_embedding_skip; on the CPU ids >= vocab exit, naming the op). */
void llama_embed(const llama *m, const tensor *ids, tensor *x);
/* embed_tokens grad += dx rows at the positions with ids >= 0 (nothing when the embedding is frozen). */
void llama_embed_backward(const llama *m, const tensor *ids, const tensor *dx);

/* x [B',T,dim] = inputs_embeds (B' <= the planned B); pos, seg: i32 [B',T] (positions >= 0;
 * segment ids: a query sees keys of its own segment only, causally; use any id, e.g. -1, for
 * padding, whose outputs are then meaningless). Writes h_final [B',T,dim] (after the final norm)
 * and keeps what llama_backward needs (pos and seg are copied). */
void llama_forward(const llama *m, llama_acts *a, const tensor *x, const tensor *pos, const tensor *seg,
                   tensor *h_final);
/* Backward of the last llama_forward on a: dh [B',T,dim] = d loss / d h_final. Accumulates (+=)
 * the gradients of the trainable parameters (embedding excluded: see llama_embed_backward) and
 * writes dx [B',T,dim] = d loss / d inputs_embeds (NULL to skip). */
void llama_backward(const llama *m, llama_acts *a, const tensor *dh, tensor *dx);

/* The dtype lm_head computes in: f32, or bf16 when the parameter set has bf16 compute copies (the
 * logits buffer may be either; bf16 saves half of the largest activation). */
nn_dtype llama_head_dtype(const llama *m);
/* logits [M,vocab] = h [M,dim] · lm_head^T (h may be any [..., dim] view, e.g. selected rows). */
void llama_lm_head(const llama *m, const tensor *h, tensor *logits);
/* From dlogits [M,vocab] (only read): dh [M,dim] written (accumulate_dh = 0) or added (1),
 * dh may be NULL; lm_head grad += dlogits^T · h when trainable. */
void llama_lm_head_backward(const llama *m, const tensor *dlogits, const tensor *h, tensor *dh,
                            int accumulate_dh);

/* ---- inference with a KV cache -------------------------------------------------------------- */

/* The cache: K and V [n_layers, B, T_max, n_kv_heads * head_dim] (post-RoPE keys) in one arena, with
 * the per-row lengths, plus forward scratch for prefills of up to T_prefill positions (reused by the
 * decode steps). keep_attention: also plan [B, H, T_prefill, T_prefill] so llama_prefill can report
 * the last prompt token's attention (otherwise one T_prefill² scratch). Exits on bad sizes or a
 * T_max beyond a configured sliding window. */
typedef struct llama_cache llama_cache;
llama_cache *llama_cache_new(const llama *m, int B, int T_max, int T_prefill, int keep_attention);
void llama_cache_print_plan(const llama_cache *c, FILE *f);
void llama_cache_free(llama_cache *c);
/* Positions cached for row b (0 before a prefill). */
int llama_cache_len(const llama_cache *c, int b);

/* Prompts, right-padded: x [B',T,dim] (B' <= B, T <= T_prefill), row b's prompt is x[b, 0..lens[b])
 * (1 <= lens[b] <= T) at positions 0..lens[b]-1; what follows is ignored (attended by no real
 * token) and later overwritten. Resets the cache to those rows and lengths. Writes h_last [B',dim]
 * = the final-norm state of each row's last prompt token. att_last (NULL, or [n_layers, B', H, T]
 * f32, needs keep_attention): that token's attention probabilities per layer and head over the T
 * positions (0 beyond lens[b]). */
void llama_prefill(const llama *m, llama_cache *c, const tensor *x, const int32_t *lens, tensor *h_last,
                   tensor *att_last);
/* One new position per row of the last prefill: x [B',dim] (or [B',1,dim]) with the same B'; row b
 * runs at position llama_cache_len(c, b) with RoPE there, attends over its cached prefix and itself,
 * and is appended. h [B',dim] = final-norm states. Exits when a row would pass T_max.
 * The attention of one query over the cache is op_attention_decode (nn/ops.h): scale·q·k, a
 * max-subtracted softmax in fp32 and the weighted sum of V, as op_attention does. */
void llama_decode_step(const llama *m, llama_cache *c, const tensor *x, tensor *h);

#ifdef __cplusplus
}
#endif
#endif
