// cuda_common.cu — the CUDA backend's runtime helpers (declared in cuda_common.cuh for the .cu files
// and in cuda_host.h for C code): error hints and the device line, device and pinned memory, copies,
// f32 <-> bf16 conversion, synchronisation, the cuBLAS handle and the one GEMM shape every family uses,
// the conversion scratch of mixed-precision GEMMs, the op workspace, the device error record, the
// deterministic double sum, and shared-memory opt-in. No op lives here (those are ops_<family>.cu).
#include <string.h>

#include "base/log.h"
#include "nn/cuda/cuda_common.cuh"

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

// ---- memory, copies, synchronisation -------------------------------------------------------------
__global__ void k_convert(void *dst, int dbf, const void *src, int sbf, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) stv(dst, dbf, i, ldv(src, sbf, i));
}

extern "C" int nn_cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

extern "C" void *nn_cuda_malloc(size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
        asvr_fatal(__FILE__, __LINE__, asvr_cuda_hint((int)e), "cudaMalloc %.1f MiB for %s: %s",
                   (double)bytes / (1 << 20), what, cudaGetErrorString(e));
    return p;
}

extern "C" void nn_cuda_free(void *p) { CHECK_CUDA(cudaFree(p)); }

extern "C" void nn_cuda_mem_used(size_t *used, size_t *total) {
    size_t fr = 0, tot = 0;
    CHECK_CUDA(cudaMemGetInfo(&fr, &tot));
    *used = tot - fr;
    *total = tot;
}

extern "C" void nn_cuda_upload(tensor *dst, const tensor *src) {
    int64_t n = tensor_numel(src);
    CHECK(dst->device == NN_CUDA && src->device == NN_CPU && src->dtype == NN_F32 && tensor_numel(dst) == n &&
              (dst->dtype == NN_F32 || dst->dtype == NN_BF16),
          "", "nn_cuda_upload: '%s' -> '%s' must be cpu f32 -> cuda f32/bf16 of equal size", src->name, dst->name);
    if (dst->dtype == NN_F32) {
        CHECK_CUDA(cudaMemcpy(dst->data, src->data, (size_t)n * 4, cudaMemcpyHostToDevice));
        return;
    }
    float *tmp = (float *)nn_cuda_malloc((size_t)n * 4, "upload staging");
    CHECK_CUDA(cudaMemcpy(tmp, src->data, (size_t)n * 4, cudaMemcpyHostToDevice));
    k_convert<<<blocks(n), NT>>>(dst->data, 1, tmp, 0, n);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaDeviceSynchronize());
    nn_cuda_free(tmp);
}

extern "C" void nn_cuda_download(tensor *dst, const tensor *src) {
    int64_t n = tensor_numel(src);
    CHECK(dst->device == NN_CPU && src->device == NN_CUDA && dst->dtype == NN_F32 && tensor_numel(dst) == n,
          "", "nn_cuda_download: '%s' -> '%s' must be cuda -> cpu f32 of equal size", src->name, dst->name);
    if (src->dtype == NN_F32) {
        CHECK_CUDA(cudaMemcpy(dst->data, src->data, (size_t)n * 4, cudaMemcpyDeviceToHost));
        return;
    }
    CHECK(src->dtype == NN_BF16, "", "nn_cuda_download: '%s' is %s", src->name, nn_dtype_name(src->dtype));
    float *tmp = (float *)nn_cuda_malloc((size_t)n * 4, "download staging");
    k_convert<<<blocks(n), NT>>>(tmp, 0, src->data, 1, n);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaMemcpy(dst->data, tmp, (size_t)n * 4, cudaMemcpyDeviceToHost));
    nn_cuda_free(tmp);
}

void nn_cuda_convert(void *dst, int dbf, const void *src, int sbf, int64_t n) {
    k_convert<<<blocks(n), NT>>>(dst, dbf, src, sbf, n);
    LAUNCH_CHECK();
}

extern "C" void *nn_cuda_host_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess)
        asvr_fatal(__FILE__, __LINE__, "free host memory or lower --batch", "cudaHostAlloc %.1f MiB for %s: %s",
                   (double)bytes / (1 << 20), what, cudaGetErrorString(e));
    return p;
}

extern "C" void nn_cuda_host_free(void *p) {
    if (p) CHECK_CUDA(cudaFreeHost(p));
}

extern "C" void nn_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes) {
    CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

extern "C" void nn_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes) {
    CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

extern "C" void nn_cuda_zero(void *dst, size_t bytes) { CHECK_CUDA(cudaMemset(dst, 0, bytes)); }

extern "C" void nn_cuda_sync(void) { CHECK_CUDA(cudaDeviceSynchronize()); }

// ---- cuBLAS --------------------------------------------------------------------------------------
cublasHandle_t nn_cuda_blas(void) {
    static cublasHandle_t h = NULL;
    if (!h) CHECK_CUBLAS(cublasCreate(&h));
    return h;
}

// Row-major y[M,N] = x[M,K] · w[N,K]^T  ==  column-major y^T = (w^T)^T x^T.
void nn_cuda_gemm_xwt(void *y, cudaDataType_t ty, const void *x, const void *w, cudaDataType_t tin, int64_t M,
                      int64_t N, int64_t K, float alpha, float beta) {
    CHECK_CUBLAS(cublasGemmEx(nn_cuda_blas(), CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, w, tin, (int)K,
                              x, tin, (int)K, &beta, y, ty, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ---- conversion scratch and op workspace ---------------------------------------------------------
static size_t scratch_cap[NN_CUDA_SCRATCH_SLOTS];
static void *scratch_ptr[NN_CUDA_SCRATCH_SLOTS];

void *nn_cuda_scratch(int slot, size_t bytes) {
    CHECK(slot >= 0 && slot < NN_CUDA_SCRATCH_SLOTS, "", "nn_cuda_scratch: slot %d", slot);
    if (bytes > scratch_cap[slot]) {
        if (scratch_ptr[slot]) nn_cuda_free(scratch_ptr[slot]);
        scratch_cap[slot] = bytes;
        scratch_ptr[slot] = nn_cuda_malloc(bytes, "operand conversion scratch");
    }
    return scratch_ptr[slot];
}

extern "C" size_t nn_cuda_scratch_bytes(void) {
    size_t n = 0;
    for (int i = 0; i < NN_CUDA_SCRATCH_SLOTS; i++) n += scratch_cap[i];
    return n;
}

// t's data in the storage type want_bf (1: bf16, 0: f32): t itself when it already is, else a copy
// converted into scratch slot `slot`.
const void *nn_cuda_as_type(const tensor *t, int want_bf, int slot) {
    if (isbf(t) == want_bf) return t->data;
    int64_t n = tensor_numel(t);
    void *s = nn_cuda_scratch(slot, (size_t)n * (want_bf ? 2 : 4));
    k_convert<<<blocks(n), NT>>>(s, want_bf, t->data, isbf(t), n);
    CHECK_CUDA(cudaGetLastError());
    return s;
}

void *nn_cuda_workspace(size_t bytes) {
    static void *p = NULL;
    static size_t cap = 0;
    if (bytes > cap) {
        if (p) nn_cuda_free(p);
        cap = (bytes + 4095) / 4096 * 4096;
        p = nn_cuda_malloc(cap, "training-op workspace");
    }
    return p;
}

__global__ void k_sum_d(double *out, const double *a, int64_t n) {
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += NT) s += a[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) out[0] = s;
}

void nn_cuda_sum_d(double *out, const double *a, int64_t n) {
    k_sum_d<<<1, NT>>>(out, a, n);
    LAUNCH_CHECK();
}

void nn_cuda_allow_shmem(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// ---- device error record -------------------------------------------------------------------------
#define BUG "this is a bug in the calling model code"

nn_dev_err *nn_cuda_err_record(void) {
    static nn_dev_err *rec = NULL;
    if (!rec) {
        rec = (nn_dev_err *)nn_cuda_malloc(sizeof *rec, "device error record");
        CHECK_CUDA(cudaMemset(rec, 0, sizeof *rec));
    }
    return rec;
}

extern "C" void nn_cuda_check_errors(const char *op) {
    nn_dev_err e, *rec = nn_cuda_err_record();
    CHECK_CUDA(cudaMemcpy(&e, rec, sizeof e, cudaMemcpyDeviceToHost));
    if (e.code == NN_ERR_NONE) return;
    CHECK_CUDA(cudaMemset(rec, 0, sizeof *rec));
    if (e.code == NN_ERR_ID)
        ASVR_FATAL(BUG, "%s: id %lld at %lld is outside [0, %lld) (found on the device)", op, e.value, e.index,
                   e.bound);
    if (e.code == NN_ERR_TARGET)
        ASVR_FATAL(BUG, "%s: target %lld of row %lld is outside [0, %lld) and not the ignore index %d (found on the device)",
                   op, e.value, e.index, e.bound, NN_IGNORE_INDEX);
    ASVR_FATAL(BUG, "%s: position %lld is %lld; positions are >= 0 (found on the device by an earlier op_rope)", op,
               e.index, e.value);
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
