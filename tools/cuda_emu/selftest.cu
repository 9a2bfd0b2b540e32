// selftest.cu — checks that the stand-in (cuda_emu.h) catches what it claims to catch, so a test that
// passes under it is not passing because the stand-in is lenient. Built and run first by run.sh;
// compiled through prep.py like the backend's .cu files (not part of the real build).
#include <cuda_runtime.h>
#include <mma.h>
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

// wmma: D = A B + C for A row-major, B given column-major (mode 0), or A^T read column-major, D stored
// column-major (mode 1); mode 2 calls from half the warp only, mode 3 loads through a misaligned pointer.
using namespace nvcuda;
__global__ void k_wmma(float *out, const __nv_bfloat16 *a, const __nv_bfloat16 *b, const float *c, int mode) {
    extern __shared__ float wsm[];
    __nv_bfloat16 *as = (__nv_bfloat16 *)wsm;
    for (int e = threadIdx.x; e < 16 * 16 + 16; e += blockDim.x) as[e] = a[e % 256];
    __syncthreads();
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
    if (mode == 2 && threadIdx.x >= 16) return;
    if (mode == 1) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, as, 16);
        wmma::load_matrix_sync(fb, b, 16);
        wmma::mma_sync(acc, fa, fb, acc);
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] *= 2.0f;
        wmma::store_matrix_sync(out, acc, 16, wmma::mem_col_major);
        return;
    }
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::load_matrix_sync(fa, as + (mode == 3 ? 8 : 0), 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}
static int wmma_ok(float *dout, __nv_bfloat16 *da, __nv_bfloat16 *db, float *dc, int mode) {
    __nv_bfloat16 ha[256], hb[256];
    float hc[256], hd[256];
    for (int i = 0; i < 256; i++) { // small integers: every product and sum is exact in fp32
        ha[i] = __float2bfloat16((float)(i % 7 - 3));
        hb[i] = __float2bfloat16((float)(i % 5 - 2));
        hc[i] = (float)(i % 3);
    }
    cudaMemcpy(da, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(db, hb, sizeof hb, cudaMemcpyHostToDevice);
    cudaMemcpy(dc, hc, sizeof hc, cudaMemcpyHostToDevice);
    k_wmma<<<1, 32, 1024>>>(dout, da, db, dc, mode);
    cudaMemcpy(hd, dout, sizeof hd, cudaMemcpyDeviceToHost);
    int ok = 1;
    for (int r = 0; r < 16; r++)
        for (int col = 0; col < 16; col++) {
            float s = hc[r * 16 + col];
            for (int k = 0; k < 16; k++) {
                float x = mode == 1 ? __bfloat162float(ha[k * 16 + r]) : __bfloat162float(ha[r * 16 + k]);
                float y = mode == 1 ? __bfloat162float(hb[k * 16 + col]) : __bfloat162float(hb[col * 16 + k]);
                s += x * y;
            }
            ok &= mode == 1 ? hd[col * 16 + r] == 2.0f * s : hd[r * 16 + col] == s;
        }
    return ok;
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

    {
        float *wo, *wc;
        __nv_bfloat16 *wa, *wb;
        cudaMalloc((void **)&wo, 256 * sizeof(float)), cudaMalloc((void **)&wc, 256 * sizeof(float));
        cudaMalloc((void **)&wa, 256 * 2), cudaMalloc((void **)&wb, 256 * 2);
        EXPECT(wmma_ok(wo, wa, wb, wc, 0), "wmma product (A row-major, B column-major) wrong");
        EXPECT(wmma_ok(wo, wa, wb, wc, 1), "wmma product (A^T column-major, x[] scaling, column-major store) wrong");
        EXPECT(dies([&] { wmma_ok(wo, wa, wb, wc, 2); }), "wmma call from part of a warp not caught");
        EXPECT(dies([&] { wmma_ok(wo, wa, wb, wc, 3); }), "misaligned wmma pointer not caught");
        cudaFree(wo), cudaFree(wc), cudaFree(wa), cudaFree(wb);
    }
    EXPECT(cudaMemcpy(hf, f, 16, cudaMemcpyHostToDevice) != cudaSuccess, "cudaMemcpy with the wrong kind accepted");
    EXPECT(cudaMemcpy(hf, f, 257 * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess,
           "cudaMemcpy past the end of an allocation accepted");
    cudaGetLastError();
    cudaFree(d);
    cudaFree(f);
    printf("cuda_emu selftest: %s\n", fails ? "FAILED" : "ok");
    return fails != 0;
}
