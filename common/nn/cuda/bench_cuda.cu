// bench_cuda.cu — device measurements for benchmarks: the achievable cuBLAS GEMM throughput on the
// current GPU (the denominator of a measured MFU). Not used by the tools' compute paths.
#include <cuda_bf16.h>

#include "nn/cuda/cuda_common.cuh"

__global__ void k_bench_fill(__nv_bfloat16 *p, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = __float2bfloat16((float)((i * 2654435761u) % 17) / 17.0f - 0.5f);
}

extern "C" double nn_cuda_gemm_peak_tflops(int n, int iters) {
    CHECK(n >= 256 && iters >= 1, "", "gemm peak: size %d, %d iterations", n, iters);
    size_t e = (size_t)n * (size_t)n;
    __nv_bfloat16 *a = (__nv_bfloat16 *)nn_cuda_malloc(e * 2, "gemm peak A");
    __nv_bfloat16 *b = (__nv_bfloat16 *)nn_cuda_malloc(e * 2, "gemm peak B");
    __nv_bfloat16 *c = (__nv_bfloat16 *)nn_cuda_malloc(e * 2, "gemm peak C");
    k_bench_fill<<<(unsigned)((e + 255) / 256), 256>>>(a, e);
    k_bench_fill<<<(unsigned)((e + 255) / 256), 256>>>(b, e);
    CHECK_CUDA(cudaGetLastError());
    cublasHandle_t h;
    CHECK_CUBLAS(cublasCreate(&h));
    const float one = 1.0f, zero = 0.0f;
    cudaEvent_t t0, t1;
    CHECK_CUDA(cudaEventCreate(&t0));
    CHECK_CUDA(cudaEventCreate(&t1));
    for (int it = -2; it < iters; it++) { // two warm-up calls
        if (it == 0) CHECK_CUDA(cudaEventRecord(t0));
        CHECK_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n,
                                  &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    CHECK_CUDA(cudaEventRecord(t1));
    CHECK_CUDA(cudaEventSynchronize(t1));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, t0, t1));
    CHECK_CUDA(cudaEventDestroy(t0));
    CHECK_CUDA(cudaEventDestroy(t1));
    CHECK_CUBLAS(cublasDestroy(h));
    nn_cuda_free(a), nn_cuda_free(b), nn_cuda_free(c);
    double flops = 2.0 * (double)n * (double)n * (double)n * (double)iters;
    return flops / ((double)ms * 1e-3) / 1e12;
}
