// cuda_emu.h — a CPU stand-in for the small part of CUDA + cuBLAS that the kernels of
// common/nn/cuda/ use, so their logic can be run on a machine without a GPU (tools/cuda_emu/run.sh).
// Blocks run one after another; the threads of a block are real threads of a pool (block size up to
// 256), so __syncthreads, __syncthreads_or, warp shuffles, atomics and shared memory (static arrays
// and the dynamic extern one) behave as on a device, including races. cublasGemmEx is a naive loop.
// Not for: timing, anything the device does differently (ulp-level math, memory model details,
// shared-memory and launch limits), or the build (the real build uses nvcc and the real headers).
#pragma once
#include <atomic>
#include <barrier>
#include <cassert>
#include <cfloat>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;

struct __nv_bfloat16 { uint16_t b; };
inline float __bfloat162float(__nv_bfloat16 h) { uint32_t u = (uint32_t)h.b << 16; float f; memcpy(&f, &u, 4); return f; }
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    __nv_bfloat16 h;
    if ((u & 0x7F800000u) == 0x7F800000u) { h.b = (uint16_t)((u >> 16) | ((u & 0xFFFF) ? 0x40 : 0)); return h; }
    u += 0x7FFFu + ((u >> 16) & 1u);
    h.b = (uint16_t)(u >> 16);
    return h;
}
inline float __expf(float x) { return expf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }

namespace emu {
struct block_ctx {
    std::barrier<> *bar;
    std::barrier<> *wbar[32];
    double wslot[1024];
    std::atomic<int> orflag[2];
};
inline block_ctx *cur;
inline thread_local int sync_or_calls;
inline std::vector<char> dyn;

struct pool {
    std::vector<std::thread> th;
    std::mutex mu;
    std::condition_variable cv, cv_done;
    long gen = 0;
    int n = 0, done = 0;
    std::function<void(int)> job;
    pool(int N) {
        for (int i = 0; i < N; i++)
            th.emplace_back([this, i] {
                long seen = 0;
                for (;;) {
                    std::function<void(int)> j;
                    int nn;
                    {
                        std::unique_lock<std::mutex> l(mu);
                        cv.wait(l, [&] { return gen != seen; });
                        seen = gen;
                        j = job;
                        nn = n;
                    }
                    if (i < nn) j(i);
                    {
                        std::lock_guard<std::mutex> l(mu);
                        if (++done == (int)th.size()) cv_done.notify_all();
                    }
                }
            });
    }
    void run(int nthreads, std::function<void(int)> f) {
        std::unique_lock<std::mutex> l(mu);
        job = f, n = nthreads, done = 0, gen++;
        cv.notify_all();
        cv_done.wait(l, [&] { return done == (int)th.size(); });
    }
};
inline pool &the_pool() { static pool *p = new pool(256); return *p; }

template <class K> struct launcher {
    K k;
    dim3 g, b;
    size_t shm;
    launcher(K kk, dim3 gg, dim3 bb, size_t s = 0) : k(kk), g(gg), b(bb), shm(s) {}
    template <class... A> void operator()(A... args) {
        assert(b.y == 1 && b.z == 1 && b.x % 32 == 0 && b.x <= 256);
        int nt = (int)b.x;
        dyn.assign(shm + 16, 0x7f); // garbage-ish content, like real shared memory
        gridDim = g, blockDim = b;
        for (unsigned z = 0; z < g.z; z++)
            for (unsigned y = 0; y < g.y; y++)
                for (unsigned x = 0; x < g.x; x++) {
                    blockIdx = dim3(x, y, z);
                    block_ctx c;
                    c.bar = new std::barrier<>(nt);
                    for (int w = 0; w < nt / 32; w++) c.wbar[w] = new std::barrier<>(32);
                    c.orflag[0] = 0, c.orflag[1] = 0;
                    cur = &c;
                    the_pool().run(nt, [&](int tid) {
                        threadIdx = dim3((unsigned)tid);
                        sync_or_calls = 0;
                        k(args...);
                        c.bar->arrive_and_drop();
                        c.wbar[tid / 32]->arrive_and_drop();
                    });
                    delete c.bar;
                    for (int w = 0; w < nt / 32; w++) delete c.wbar[w];
                }
    }
};
} // namespace emu

inline void *emu_dyn_shared() { return emu::dyn.data(); }
inline void __syncthreads() { emu::cur->bar->arrive_and_wait(); }
inline int __syncthreads_or(int p) {
    int k = emu::sync_or_calls++ & 1;
    if (p) emu::cur->orflag[k] = 1;
    emu::cur->bar->arrive_and_wait();
    int r = emu::cur->orflag[k].load();
    if (threadIdx.x == 0) emu::cur->orflag[k ^ 1] = 0;
    emu::cur->bar->arrive_and_wait();
    return r;
}
template <class T> inline T __shfl_xor_sync(unsigned, T v, int o) {
    int t = (int)threadIdx.x, w = t / 32;
    static_assert(sizeof(T) <= 8, "");
    memcpy(&emu::cur->wslot[t], &v, sizeof v);
    emu::cur->wbar[w]->arrive_and_wait();
    T r;
    memcpy(&r, &emu::cur->wslot[w * 32 + ((t % 32) ^ o)], sizeof r);
    emu::cur->wbar[w]->arrive_and_wait();
    return r;
}
inline int atomicCAS(int *p, int cmp, int val) {
    __atomic_compare_exchange_n(p, &cmp, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return cmp;
}
inline int atomicMin(int *p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}

// ---- runtime ----
typedef enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInsufficientDriver = 35, cudaErrorNoDevice = 100,
               cudaErrorNoKernelImageForDevice = 209 } cudaError_t;
typedef enum { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice } cudaMemcpyKind;
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; size_t totalGlobalMem; };
inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) { memset(p, 0, sizeof *p); strcpy(p->name, "emu"); p->major = 9; p->totalGlobalMem = 1ull << 34; p->multiProcessorCount = 1; return cudaSuccess; }
inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = aligned_alloc(256, (n + 255) / 256 * 256);
    if (*p) memset(*p, 0xA5, n); // not zero, like fresh device memory may be
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memmove(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline const char *cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
template <class F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
template <class T> cudaError_t cudaMemcpyFromSymbol(void *dst, const T &sym, size_t n) { memcpy(dst, &sym, n); return cudaSuccess; }
template <class T> cudaError_t cudaMemcpyToSymbol(T &sym, const void *src, size_t n) { memcpy(&sym, src, n); return cudaSuccess; }

// ---- cuBLAS (column-major GEMM, f32 / bf16) ----
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1, CUBLAS_STATUS_ALLOC_FAILED = 3,
               CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 } cublasStatus_t;
typedef enum { CUBLAS_OP_N, CUBLAS_OP_T } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType_t;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef struct emu_blas *cublasHandle_t;
inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)1; return CUBLAS_STATUS_SUCCESS; }
inline const char *cublasGetStatusString(cublasStatus_t) { return "emulated cublas error"; }
inline float emu_ld(const void *p, cudaDataType_t t, int64_t i) {
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                                   cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                                   cublasComputeType_t, cublasGemmAlgo_t) {
    if (at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (at == CUDA_R_32F && ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0.0f;
            for (int l = 0; l < k; l++) {
                float a = ta == CUBLAS_OP_N ? emu_ld(A, at, i + (int64_t)l * lda) : emu_ld(A, at, l + (int64_t)i * lda);
                float b = tb == CUBLAS_OP_N ? emu_ld(B, bt, l + (int64_t)j * ldb) : emu_ld(B, bt, j + (int64_t)l * ldb);
                s += a * b;
            }
            int64_t ci = i + (int64_t)j * ldc;
            float v = al * s + (be != 0.0f ? be * emu_ld(C, ct, ci) : 0.0f);
            if (ct == CUDA_R_16BF) ((__nv_bfloat16 *)C)[ci] = __float2bfloat16(v);
            else ((float *)C)[ci] = v;
        }
    return CUBLAS_STATUS_SUCCESS;
}
