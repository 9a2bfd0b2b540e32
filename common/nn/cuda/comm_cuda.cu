// comm_cuda.cu — the CUDA side of the communication layer (nn/comm.h) that needs no NCCL: the
// rank's device, copies ordered on the compute stream (the size-1 path and the staged backend),
// the pinned staging buffers, and the delay kernel of ASVR_COMM_DELAY_US. Declared in
// nn/comm_internal.h; the NCCL backend is nn/cuda/comm_nccl.cu.
// Not for: anything but nn/comm*.c.
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "nn/comm_internal.h"
#include "nn/cuda/cuda_common.cuh"

struct comm_cuda {
    void *pinned[2];
    size_t pinned_bytes[2];
};

static cudaStream_t compute_stream(const comm *c) { return (cudaStream_t)c->stream; }

extern "C" int comm_cuda_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

extern "C" struct comm_cuda *comm_cuda_open(comm *c) {
    int n = comm_cuda_device_count();
    CHECK(n > 0, "check nvidia-smi and CUDA_VISIBLE_DEVICES", "comm: rank %d: no CUDA device is visible", c->rank);
    CHECK(c->device >= 0 && c->device < n,
          "set ASVR_LOCAL_DEVICE to a visible device or start fewer ranks per host (ranks may share one GPU with "
          "ASVR_COMM_DEVICE=mpi and ASVR_LOCAL_DEVICE=0)",
          "comm: rank %d (local rank %d of %d) is given CUDA device %d, but %d device(s) are visible", c->rank,
          c->local_rank, c->local_size, c->device, n);
    CHECK_CUDA(cudaSetDevice(c->device));
    return (struct comm_cuda *)asvr_calloc(1, sizeof(struct comm_cuda), "comm: CUDA state");
}

extern "C" void comm_cuda_close(struct comm_cuda *d) {
    if (!d) return;
    for (int i = 0; i < 2; i++)
        if (d->pinned[i]) CHECK_CUDA(cudaFreeHost(d->pinned[i]));
    free(d);
}

// ---- the delay kernel --------------------------------------------------------------------------
static __device__ uint64_t comm_now_ns(void) {
#if defined(__CUDA_ARCH__)
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#elif defined(__CUDACC__)
    return 0; // nvcc's host pass: never called there
#else
    struct timespec t; // the CPU stand-in (dev/cuda_emu) runs kernels on the host
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
#endif
}

__global__ void k_comm_spin(uint64_t ns) {
    if (threadIdx.x != 0) return;
    uint64_t t0 = comm_now_ns();
    while (comm_now_ns() - t0 < ns) {
    }
}

extern "C" void comm_cuda_delay(comm *c, int64_t us) {
    if (us <= 0) return;
#if defined(__CUDACC__)
    k_comm_spin<<<1, 32, 0, compute_stream(c)>>>((uint64_t)us * 1000ull);
#else
    k_comm_spin<<<1, 32>>>((uint64_t)us * 1000ull); // the CPU stand-in: one synchronous stream
#endif
    CHECK_CUDA(cudaGetLastError());
}

// ---- copies ------------------------------------------------------------------------------------
extern "C" void comm_cuda_copy(comm *c, void *dst, const void *src, size_t bytes) {
    if (bytes == 0 || dst == src) return;
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_stream(c)));
}

extern "C" void comm_cuda_download(comm *c, void *host, const void *dev, size_t bytes) {
    if (bytes) CHECK_CUDA(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, compute_stream(c)));
    CHECK_CUDA(cudaStreamSynchronize(compute_stream(c)));
}

extern "C" void comm_cuda_upload(comm *c, void *dev, const void *host, size_t bytes) {
    if (bytes) CHECK_CUDA(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, compute_stream(c)));
    CHECK_CUDA(cudaStreamSynchronize(compute_stream(c)));
}

extern "C" void *comm_cuda_pinned(comm *c, int slot, size_t bytes) {
    struct comm_cuda *d = c->cuda;
    if (bytes > d->pinned_bytes[slot]) {
        if (d->pinned[slot]) CHECK_CUDA(cudaFreeHost(d->pinned[slot]));
        d->pinned[slot] = NULL;
        cudaError_t e = cudaHostAlloc(&d->pinned[slot], bytes, cudaHostAllocDefault);
        if (e != cudaSuccess)
            asvr_fatal(__FILE__, __LINE__, "pinned host memory is short: lower the bucket size",
                       "comm: cudaHostAlloc of %zu bytes for staging: %s", bytes, cudaGetErrorString(e));
        d->pinned_bytes[slot] = bytes;
    }
    return d->pinned[slot];
}
