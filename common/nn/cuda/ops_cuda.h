/* ops_cuda.h — host-callable pieces of the CUDA backend that C code needs without CUDA headers:
 * device memory for arenas, host<->device copies, and whether a device is usable.
 * The op implementations themselves are declared in nn/backend.h (cuda_*).
 * Not for: kernels or cuBLAS handles (those stay inside the .cu files of nn/cuda/).
 */
#ifndef ASVR_NN_CUDA_OPS_CUDA_H
#define ASVR_NN_CUDA_OPS_CUDA_H

#include <stddef.h>

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

int nn_cuda_available(void);                    /* 1 when a CUDA device can be used */
void *nn_cuda_malloc(size_t bytes, const char *what); /* exits naming `what` on failure */
void nn_cuda_free(void *p);
/* dst (cuda, f32 or bf16) <- src (cpu, f32), and dst (cpu, f32) <- src (cuda, f32 or bf16);
 * same numel. Synchronous. */
void nn_cuda_upload(tensor *dst, const tensor *src);
void nn_cuda_download(tensor *dst, const tensor *src);

#ifdef __cplusplus
}
#endif
#endif
