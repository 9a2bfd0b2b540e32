/* ops_extra_cuda.h — the CUDA entry points behind nn/ops_extra.h (implemented in ops_extra_cuda.cu).
 * ops_extra.c validates the arguments and calls these for CUDA tensors; they may assume valid shapes,
 * f32 storage for floats and i32 indices.
 * Not for: model code (call the op_* functions of nn/ops_extra.h).
 */
#ifndef ASVR_NN_CUDA_OPS_EXTRA_CUDA_H
#define ASVR_NN_CUDA_OPS_EXTRA_CUDA_H

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Byte copy of equal-dtype tensors where at least one side is on the device. */
void cuda_extra_transfer(tensor *dst, const tensor *src);
void cuda_extra_embedding_skip(tensor *y, const tensor *ids, const tensor *table);
void cuda_extra_embedding_skip_backward(tensor *dtable, const tensor *dy, const tensor *ids);
void cuda_extra_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens,
                                 int n_heads, int n_kv_heads, float scale, tensor *scores);
void cuda_extra_argmax_rows(tensor *idx, const tensor *x);

#ifdef __cplusplus
}
#endif
#endif
