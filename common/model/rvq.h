/* rvq.h — greedy residual vector quantisation (DualToken's RQBottleneck, inference only).
 *
 * D codebooks of K x C rows. For each input vector: residual = x; for d in 0..D-1: code[d] = the
 * codebook-d row nearest to the residual in squared L2 (|r|^2 + |c|^2 - 2 r·c, lowest index on a
 * tie), residual -= that row. Codes come out [M, D] (u16 for K <= 65536, or i32) in input order:
 * for a [B, N, C] feature map that is [B, N, D] in raster order.
 * Codebooks load from safetensors as prefix + "{d}.weight" (DualToken: "quantizer_semantic.codebooks.");
 * a file tensor with K+1 rows (the nn.Embedding padding row) is accepted and the extra row ignored.
 * rvq_load_ex places the codebooks on a device (CPU f32, CUDA f32 or CUDA bf16); their squared norms
 * are computed once at load, in f32, on that device. On CUDA a workspace can select the fused
 * distance + argmin kernel (rvq_work_set_fused) instead of the GEMM + pick path.
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
/* The same on dev with the codebooks stored as dtype (NN_F32; NN_BF16 on NN_CUDA only). */
int rvq_load_ex(const safetensors *st, const char *prefix, int depth, int codebook_size, int dim,
                nn_device dev, nn_dtype dtype, rvq **out, asvr_error *err);
void rvq_free(rvq *q);
int rvq_depth(const rvq *q);
int rvq_codebook_size(const rvq *q);
int rvq_dim(const rvq *q);
const tensor *rvq_codebook(const rvq *q, int d); /* [K, C], in the load dtype on the load device */
void rvq_print_plan(const rvq *q, FILE *f);

/* Scratch (residual and distance buffers) for up to max_rows vectors per call. */
typedef struct rvq_work rvq_work;
rvq_work *rvq_work_new(const rvq *q, int64_t max_rows);
void rvq_work_free(rvq_work *w);
/* CUDA only: 1 = the fused distance + argmin kernel, 0 = GEMM + pick (the default). */
void rvq_work_set_fused(rvq_work *w, int fused);

/* x [..., C] (not modified), rows(x) <= max_rows; codes [rows(x), D] or [..., D] u16/i32, every
 * element written. x and codes on the codebooks' device, x in their dtype. */
void rvq_encode(const rvq *q, rvq_work *w, const tensor *x, tensor *codes);

#ifdef __cplusplus
}
#endif
#endif
