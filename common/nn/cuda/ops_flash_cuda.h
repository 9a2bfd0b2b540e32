/* ops_flash_cuda.h — the tensor-core flash attention of ops_flash_cuda.cu, called by
 * cuda_flash_attention / cuda_flash_attention_backward (ops_train_cuda.cu) for the inputs it takes.
 * Arguments were validated by ops.c (the contracts of op_flash_attention(_backward) in nn/ops.h).
 * Not for: model code (call the op_* functions of nn/ops.h).
 */
#ifndef ASVR_NN_CUDA_OPS_FLASH_CUDA_H
#define ASVR_NN_CUDA_OPS_FLASH_CUDA_H

#include "nn/tensor.h"

#define FA_MAX_DH 128 /* largest head dim of the tensor-core path */

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the tensor-core path takes these inputs: q, k, v (and dout, when not NULL) stored as bf16,
 * head dim Dh = q->shape[2] / n_heads a multiple of 16 in [16, FA_MAX_DH]. Outputs may be f32 or bf16. */
int cuda_flash_tc_ok(const tensor *q, const tensor *k, const tensor *v, const tensor *dout, int n_heads);
void cuda_flash_tc_forward(tensor *out, tensor *lse, const tensor *q, const tensor *k, const tensor *v, int n_heads,
                           int n_kv_heads, float scale, int causal, const tensor *seg);
/* delta: device f32 scratch of B * n_heads * T elements (rowsum(dout ⊙ out), overwritten). */
void cuda_flash_tc_backward(tensor *dq, tensor *dk, tensor *dv, const tensor *dout, const tensor *q, const tensor *k,
                            const tensor *v, const tensor *out, const tensor *lse, int n_heads, int n_kv_heads,
                            float scale, int causal, const tensor *seg, float *delta);

#ifdef __cplusplus
}
#endif

#endif
