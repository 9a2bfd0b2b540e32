#include "nn/cuda/cuda_check.h"
#include "base/log.h"
#include "nn/cuda/ops_cuda.h"

extern "C" const char *asvr_cuda_hint(int e) {
    switch ((cudaError_t)e) {
    case cudaErrorMemoryAllocation: return "out of GPU memory: lower the batch size";
    case cudaErrorNoDevice: return "no CUDA device visible: check nvidia-smi and CUDA_VISIBLE_DEVICES";
    case cudaErrorInsufficientDriver: return "the NVIDIA driver is older than this CUDA build needs";
    case cudaErrorNoKernelImageForDevice:
        return "this build has no kernels for the GPU: rebuild with -DCMAKE_CUDA_ARCHITECTURES=<your sm>";
    default: return "";
    }
}

extern "C" const char *asvr_cublas_hint(int s) {
    switch ((cublasStatus_t)s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLAS could not start: check the driver and free GPU memory";
    case CUBLAS_STATUS_ALLOC_FAILED: return "out of GPU memory in cuBLAS: lower the batch size";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "this GEMM shape or type is not supported on this GPU";
    default: return "";
    }
}

extern "C" void asvr_cuda_print_device(void) {
    int dev = 0;
    CHECK_CUDA(cudaGetDevice(&dev));
    cudaDeviceProp p;
    CHECK_CUDA(cudaGetDeviceProperties(&p, dev));
    LOG_INFO("cuda device %d: %s, sm_%d%d, %d SMs, %.1f GiB", dev, p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
}

extern "C" int nn_cuda_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" void nn_cuda_set_device(int index) {
    int n = nn_cuda_device_count();
    CHECK(index >= 0 && index < n, "set CUDA_VISIBLE_DEVICES or ASVR_LOCAL_DEVICE, or start fewer processes per host",
          "CUDA device %d was asked for, but %d device(s) are visible", index, n);
    CHECK_CUDA(cudaSetDevice(index));
}
