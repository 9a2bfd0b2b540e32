/* ops_extra.h — the few ops the device-agnostic model code needs beyond ops.h: moving a tensor
 * between host and device, the embedding lookup (and its backward) that skips negative ids, one
 * query per row attending over a KV cache, and the argmax of logits rows.
 *
 * Same rules as ops.h: each op_* checks its arguments and runs the implementation of the tensors'
 * device, the CPU one here in ops_extra.c, the CUDA one in nn/cuda/ops_extra_cuda.cu (built with
 * nvcc). The CPU implementations are the loops the model code used to run inline, unchanged, so CPU
 * results are bit-identical to before. These ops take f32 storage only (index tensors i32); a bf16
 * activation option would widen the CUDA kernels, not the interface.
 * Checks that need the values of an index tensor (an id outside the table) run on CPU tensors only:
 * on CUDA the model code validates ids on its host copies before uploading them, and the kernels
 * skip an out-of-range id instead of reading past the table.
 * Not for: general strided copies, sampling (top-k / top-p), or attention with more than one query
 * per row over a cache (llama_prefill runs op_attention_seg for the prompt).
 */
#ifndef ASVR_NN_OPS_EXTRA_H
#define ASVR_NN_OPS_EXTRA_H

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst = src for tensors of equal numel on any devices (cpu/cpu, cpu->cuda, cuda->cpu, cuda/cuda):
 * equal dtypes copy the bytes; a cpu f32 <-> cuda bf16 pair converts (nn_cuda_upload/download).
 * Synchronous. The one way model code moves host-prepared inputs to the device and results back. */
void op_transfer(tensor *dst, const tensor *src);
/* "cpu" or "cuda" -> *dev, when this build and machine can run it; -1 with *why set (a sentence for
 * a usage error: no CUDA backend in this build, or no visible device) otherwise. */
int nn_device_from_name(const char *name, nn_device *dev, const char **why);
/* Waits until all work queued on dev has finished (nothing to wait for on the CPU): for timing. */
void nn_device_sync(nn_device dev);
/* The device's memory in use (everything: this process's arenas, scratch and context, other processes)
 * and its total, in bytes; returns 1, or 0 with both 0 on the CPU (nothing to measure). */
int nn_device_mem_used(nn_device dev, size_t *used, size_t *total);

/* Conveniences over op_transfer for f32 host buffers of numel(t) floats: t (f32 or bf16, any device)
 * read into host, or written from host. */
void op_read_f32(const tensor *t, float *host);
void op_write_f32(tensor *t, const float *host);

/* y [N,C] rows n with ids[n] >= 0 = table[ids[n]]; rows with ids[n] < 0 are left untouched (image
 * placeholders and padding the caller fills). ids i32 with N elements (any shape), table [V,C]. */
void op_embedding_skip(tensor *y, const tensor *ids, const tensor *table);
/* dtable[ids[n]] += dy[n] for ids[n] >= 0 (scatter-add in row order on the CPU; on CUDA the repeats of
 * an id are summed in row order by one block, then added: bit-identical run to run). */
void op_embedding_skip_backward(tensor *dtable, const tensor *dy, const tensor *ids);

/* One new query per row over its cached keys and values (a decode step):
 *   q, out [B,1,H*Dh] or [B,H*Dh]; k, v [B,T_max,Hkv*Dh]; lens i32 [B], 1 <= lens[b] <= T_max;
 *   out[b,h] = softmax(scale · q[b,h] · K[b,0..lens[b])^T) · V[b,0..lens[b]) with kv head
 *   h / (H/Hkv); max-subtracted exponentials in fp32, summed in double on the CPU (as op_attention's
 *   CPU softmax) and in fp32 on CUDA.
 * scores: f32 scratch with at least B*H*T_max elements. out must not alias q, k or v. */
void op_attention_decode(tensor *out, const tensor *q, const tensor *k, const tensor *v, const tensor *lens,
                         int n_heads, int n_kv_heads, float scale, tensor *scores);

/* idx[m] = the first index of the largest value of row m of x [M,N] (torch.argmax); NaNs are never
 * chosen (0 when a row is all NaN). idx i32 with M elements; x f32 (CUDA: f32 or bf16). */
void op_argmax_rows(tensor *idx, const tensor *x);

#ifdef __cplusplus
}
#endif
#endif
