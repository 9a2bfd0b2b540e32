// selftest.cu — checks that the stand-in (cuda_emu.h) catches what it claims to catch, so a test that
// passes under it is not passing because the stand-in is lenient. Built and run first by run.sh;
// compiled through prep.py like the backend's .cu files (not part of the real build).
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>

static int fails = 0;
#define EXPECT(c, ...)                                                                                     \
    do {                                                                                                   \
        if (!(c)) { fprintf(stderr, "selftest FAILED: " __VA_ARGS__); fprintf(stderr, "\n"); fails++; }    \
    } while (0)

// 1 when f() dies (in a child process) instead of returning
template <class F> static int dies(F f) {
    fflush(stdout), fflush(stderr);
    pid_t p = fork();
    if (p == 0) {
        freopen("/dev/null", "w", stderr);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

__global__ void k_no_barrier(int *out) { // reads a neighbour's shared write without __syncthreads
    __shared__ int sh[256];
    sh[threadIdx.x] = (int)threadIdx.x;
    out[blockIdx.x * 256 + threadIdx.x] = sh[(threadIdx.x + 1) % 256];
}
__global__ void k_barrier(int *out) {
    __shared__ int sh[256];
    sh[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    out[blockIdx.x * 256 + threadIdx.x] = sh[(threadIdx.x + 1) % 256];
}
__global__ void k_uninit_shared(int *out) { // reads shared memory nobody wrote in this block
    __shared__ int sh[4];
    if (blockIdx.x == 0 && threadIdx.x == 0) sh[0] = 7;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}
__global__ void k_warp_sum(float *out) {
    float v = (float)threadIdx.x;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}
__global__ void k_divergent(int *out) {
    if (threadIdx.x < 32) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}
__global__ void k_dyn(float *out) {
    extern __shared__ float dsm[];
    dsm[threadIdx.x] = 1.0f;
    out[threadIdx.x] = dsm[threadIdx.x];
}
__global__ void k_write(float *out, int n) {
    if ((int)threadIdx.x < n) out[threadIdx.x] = 1.0f;
}

int main() {
    int *d = nullptr;
    if (cudaMalloc((void **)&d, 2 * 256 * sizeof(int)) != cudaSuccess) return 1;
    int h[512];
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    EXPECT(h[0] != 0 && h[511] != 0, "fresh device memory reads as zero");

    k_barrier<<<2, 256>>>(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    int ok = 1;
    for (int i = 0; i < 512; i++) ok &= h[i] == (i % 256 + 1) % 256;
    EXPECT(ok, "kernel with a barrier gives wrong results");
    k_no_barrier<<<2, 256>>>(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    ok = 1;
    for (int i = 0; i < 512; i++) ok &= h[i] == (i % 256 + 1) % 256;
    EXPECT(!ok, "a missing __syncthreads goes unnoticed");
    k_uninit_shared<<<2, 32>>>(d);
    cudaMemcpy(h, d, 2 * sizeof(int), cudaMemcpyDeviceToHost);
    EXPECT(h[0] == 7 && h[1] != 7 && h[1] != 0, "shared memory keeps the previous block's values or starts at zero");

    float *f = nullptr, hf[256];
    cudaMalloc((void **)&f, 256 * sizeof(float));
    k_warp_sum<<<1, 64>>>(f);
    cudaMemcpy(hf, f, 64 * sizeof(float), cudaMemcpyDeviceToHost);
    EXPECT(hf[0] == 496.0f && hf[31] == 496.0f && hf[32] == 1520.0f, "warp shuffle sum wrong");

    EXPECT(dies([&] { volatile int x = d[0]; (void)x; }), "host read of device memory not caught");
    EXPECT(dies([&] { d[3] = 1; }), "host write of device memory not caught");
    EXPECT(dies([&] { k_write<<<1, 32>>>(hf, 1); }), "host pointer passed to a kernel not caught");
    EXPECT(dies([&] { k_write<<<1, 256>>>(f + 200, 256); }), "kernel write past the end of an allocation not caught");
    EXPECT(dies([&] { k_divergent<<<1, 64>>>(d); }), "__syncthreads in divergent code not caught");

    cudaGetLastError();
    k_dyn<<<1, 32, 64 << 10>>>(f);
    EXPECT(cudaGetLastError() != cudaSuccess, "64 KiB of dynamic shared memory without cudaFuncSetAttribute accepted");
    cudaFuncSetAttribute(k_dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
    k_dyn<<<1, 32, 64 << 10>>>(f);
    EXPECT(cudaGetLastError() == cudaSuccess, "64 KiB of dynamic shared memory refused after cudaFuncSetAttribute");
    k_dyn<<<dim3(1, 70000), 32>>>(f);
    EXPECT(cudaGetLastError() != cudaSuccess, "grid.y of 70000 accepted");

    EXPECT(cudaMemcpy(hf, f, 16, cudaMemcpyHostToDevice) != cudaSuccess, "cudaMemcpy with the wrong kind accepted");
    EXPECT(cudaMemcpy(hf, f, 257 * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess,
           "cudaMemcpy past the end of an allocation accepted");
    cudaGetLastError();
    cudaFree(d);
    cudaFree(f);
    printf("cuda_emu selftest: %s\n", fails ? "FAILED" : "ok");
    return fails != 0;
}
