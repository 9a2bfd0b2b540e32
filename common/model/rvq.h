/* rvq.h — greedy residual vector quantisation (DualToken's RQBottleneck, inference only).
 *
 * D codebooks of K x C rows. For each input vector: residual = x; for d in 0..D-1: code[d] = the
 * codebook-d row nearest to the residual in squared L2 (|r|^2 + |c|^2 - 2 r·c, lowest index on a
 * tie), residual -= that row. Codes come out [M, D] (u16 for K <= 65536, or i32) in input order:
 * for a [B, N, C] feature map that is [B, N, D] in raster order.
 * Codebooks load from safetensors as prefix + "{d}.weight" (DualToken: "quantizer_semantic.codebooks.");
 * a file tensor with K+1 rows (the nn.Embedding padding row) is accepted and the extra row ignored.
 * Not for: codebook training/EMA updates, shared-codebook variants, or decoding codes to features.
 */
#ifndef ASVR_MODEL_RVQ_H
#define ASVR_MODEL_RVQ_H

#include <stdio.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rvq rvq;

int rvq_load(const safetensors *st, const char *prefix, int depth, int codebook_size, int dim,
             rvq **out, asvr_error *err);
void rvq_free(rvq *q);
int rvq_depth(const rvq *q);
int rvq_codebook_size(const rvq *q);
int rvq_dim(const rvq *q);
const tensor *rvq_codebook(const rvq *q, int d); /* [K, C] f32 */
void rvq_print_plan(const rvq *q, FILE *f);

/* Scratch (residual and distance buffers) for up to max_rows vectors per call. */
typedef struct rvq_work rvq_work;
rvq_work *rvq_work_new(const rvq *q, int64_t max_rows);
void rvq_work_free(rvq_work *w);

/* x [..., C] f32 (not modified), rows(x) <= max_rows; codes [rows(x), D] or [..., D] u16/i32,
 * every element written. */
void rvq_encode(const rvq *q, rvq_work *w, const tensor *x, tensor *codes);

#ifdef __cplusplus
}
#endif
#endif
