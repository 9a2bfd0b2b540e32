/* cuda_check.h — check macros for the CUDA runtime and cuBLAS/cuBLASLt, and device facts.
 * Included only by code under nn/cuda/ (compiled when the CUDA backend is built).
 */
#ifndef ASVR_NN_CUDA_CHECK_H
#define ASVR_NN_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "base/error.h"

#define CHECK_CUDA(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            asvr_fatal(__FILE__, __LINE__, asvr_cuda_hint((int)e_), "%s: %s (%s)", #call,          \
                       cudaGetErrorString(e_), cudaGetErrorName(e_));                              \
    } while (0)

#define CHECK_CUBLAS(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            asvr_fatal(__FILE__, __LINE__, asvr_cublas_hint((int)s_), "%s: %s", #call,             \
                       cublasGetStatusString(s_));                                                 \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif
const char *asvr_cuda_hint(int cuda_error);
const char *asvr_cublas_hint(int cublas_status);
/* Name, SM count, memory and compute capability of the current device, one line on stderr. */
void asvr_cuda_print_device(void);
#ifdef __cplusplus
}
#endif

#endif
