// selftest.cu — checks that the stand-in (cuda_emu.h) catches what it claims to catch, so a test that
// passes under it is not passing because the stand-in is lenient. Built and run first by run.sh;
// compiled through prep.py like the backend's .cu files (not part of the real build).
#include <cublasLt.h>
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
// A 2-D block (32 x 8): each thread reads the value of the thread one row of y below after a barrier,
// and sums its warp (one row of x) with shuffles.
__global__ void k_2d(int *out) {
    __shared__ int sh[8][32];
    sh[threadIdx.y][threadIdx.x] = (int)(threadIdx.y * 100 + threadIdx.x);
    __syncthreads();
    int v = sh[(threadIdx.y + 1) % 8][threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.y * 32 + threadIdx.x] = v + 1000000 * (int)(blockDim.x * blockDim.y);
}
// opt may be NULL: a launch passes it as a null pointer of the parameter's type.
__global__ void k_opt(float *out, const float *opt) { out[threadIdx.x] = opt ? opt[threadIdx.x] : 2.0f; }
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

// cuBLASLt (cublasLt.h): D [m, n] = gelu(A^T B + bias) with aux = its input, against a host loop; and
// what it must refuse. Returns the number of failed expectations.
static int lt_selftest() {
    const int m = 8, n = 3, k = 5, ald = 16;
    float hA[k * m], hB[k * n], hb[m], hD[m * n], haux[ald * n];
    for (int i = 0; i < k * m; i++) hA[i] = 0.25f * (float)(i % 7) - 0.6f;
    for (int i = 0; i < k * n; i++) hB[i] = 0.5f * (float)(i % 5) - 1.0f;
    for (int i = 0; i < m; i++) hb[i] = 0.1f * (float)i - 0.3f;
    for (int i = 0; i < ald * n; i++) haux[i] = -7.0f;
    float *A, *B, *b, *D, *aux, *ws;
    cudaMalloc((void **)&A, sizeof hA), cudaMalloc((void **)&B, sizeof hB), cudaMalloc((void **)&b, sizeof hb);
    cudaMalloc((void **)&D, sizeof hD), cudaMalloc((void **)&aux, sizeof haux), cudaMalloc((void **)&ws, 1 << 16);
    cudaMemcpy(A, hA, sizeof hA, cudaMemcpyHostToDevice), cudaMemcpy(B, hB, sizeof hB, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice), cudaMemcpy(aux, haux, sizeof haux, cudaMemcpyHostToDevice);
    cublasLtHandle_t h;
    cublasLtMatmulDesc_t d;
    cublasLtMatrixLayout_t la, lb, lbad, lc;
    cublasLtMatmulPreference_t pref;
    cublasLtCreate(&h);
    cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    int32_t ta = CUBLAS_OP_T;
    uint32_t epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS, relu = CUBLASLT_EPILOGUE_RELU;
    int64_t ld64 = ald, bad_ld = 12;
    int32_t bias_type = CUDA_R_32F;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld64, sizeof ld64);
    cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, k, m, k);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k);
    cublasLtMatrixLayoutCreate(&lbad, CUDA_R_32F, k + 1, n, k + 1);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m);
    cublasLtMatmulPreferenceCreate(&pref);
    uint64_t wsb = 1 << 16;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    cublasLtMatmulHeuristicResult_t r;
    int got = 0, f = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, d, la, lb, lc, lc, pref, 1, &r, &got);
    float one = 1.0f, zero = 0.0f;
    if (st == CUBLAS_STATUS_SUCCESS && got == 1)
        st = cublasLtMatmul(h, d, &one, A, la, B, lb, &zero, D, lc, D, lc, &r.algo, ws, wsb, nullptr);
    if (st != CUBLAS_STATUS_SUCCESS || got != 1) { fprintf(stderr, "selftest FAILED: cuBLASLt GELU_AUX_BIAS refused\n"); f++; }
    cudaMemcpy(hD, D, sizeof hD, cudaMemcpyDeviceToHost), cudaMemcpy(haux, aux, sizeof haux, cudaMemcpyDeviceToHost);
    double worst = 0.0;
    int untouched = 1;
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            double v = hb[i];
            for (int l = 0; l < k; l++) v += (double)hA[i * k + l] * hB[j * k + l];
            double g = 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            worst = fmax(worst, fmax(fabs(haux[j * ald + i] - v), fabs(hD[j * m + i] - g)));
        }
        for (int i = m; i < ald; i++) untouched &= haux[j * ald + i] == -7.0f;
    }
    if (worst > 1e-5) { fprintf(stderr, "selftest FAILED: cuBLASLt GELU_AUX_BIAS off by %g\n", worst); f++; }
    if (!untouched) { fprintf(stderr, "selftest FAILED: cuBLASLt aux rows past m were written\n"); f++; }
    // Refusals: a host bias, an unknown attribute or epilogue, a bad aux ld, layouts that do not fit.
    float *host_b = hb;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &host_b, sizeof host_b);
    if (cublasLtMatmul(h, d, &one, A, la, B, lb, &zero, D, lc, D, lc, &r.algo, ws, wsb, nullptr) == CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "selftest FAILED: cuBLASLt took a host bias pointer\n"); f++;
    }
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b);
    if (cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type) !=
        CUBLAS_STATUS_NOT_SUPPORTED) { fprintf(stderr, "selftest FAILED: cuBLASLt took an attribute it does not emulate\n"); f++; }
    if (cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &relu, sizeof relu) != CUBLAS_STATUS_NOT_SUPPORTED) {
        fprintf(stderr, "selftest FAILED: cuBLASLt took an epilogue it does not emulate\n"); f++;
    }
    if (cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &ta, 2) == CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "selftest FAILED: cuBLASLt took an attribute of the wrong size\n"); f++;
    }
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &bad_ld, sizeof bad_ld);
    if (cublasLtMatmulAlgoGetHeuristic(h, d, la, lb, lc, lc, pref, 1, &r, &got) == CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "selftest FAILED: cuBLASLt took an aux leading dimension that is not a multiple of 8\n"); f++;
    }
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld64, sizeof ld64);
    if (cublasLtMatmulAlgoGetHeuristic(h, d, la, lbad, lc, lc, pref, 1, &r, &got) == CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "selftest FAILED: cuBLASLt took layouts whose inner dimensions differ\n"); f++;
    }
    // Alignment: B one float past its allocation's start (4-byte aligned) is refused under the default
    // 256-byte assumption and taken once the preference says 4.
    cublasLtMatrixLayout_t lb2, lc2;
    cublasLtMatrixLayoutCreate(&lb2, CUDA_R_32F, k, n - 1, k);
    cublasLtMatrixLayoutCreate(&lc2, CUDA_R_32F, m, n - 1, m);
    got = 0;
    if (cublasLtMatmulAlgoGetHeuristic(h, d, la, lb2, lc2, lc2, pref, 1, &r, &got) != CUBLAS_STATUS_SUCCESS || got != 1 ||
        cublasLtMatmul(h, d, &one, A, la, B + 1, lb2, &zero, D, lc2, D, lc2, &r.algo, ws, wsb, nullptr) ==
            CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "selftest FAILED: cuBLASLt took a B less aligned than its algorithm assumes\n"); f++;
    }
    uint32_t al4 = 4;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al4, sizeof al4);
    if (cublasLtMatmulAlgoGetHeuristic(h, d, la, lb2, lc2, lc2, pref, 1, &r, &got) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmul(h, d, &one, A, la, B + 1, lb2, &zero, D, lc2, D, lc2, &r.algo, ws, wsb, nullptr) !=
            CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "selftest FAILED: cuBLASLt refused a 4-byte aligned B its preference allowed\n"); f++;
    }
    cublasLtMatrixLayoutDestroy(lb2), cublasLtMatrixLayoutDestroy(lc2);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lbad);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(d);
    cublasLtDestroy(h);
    cudaFree(A), cudaFree(B), cudaFree(b), cudaFree(D), cudaFree(aux), cudaFree(ws);
    return f;
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

    k_2d<<<1, dim3(32, 8)>>>(d);
    cudaMemcpy(h, d, 256 * sizeof(int), cudaMemcpyDeviceToHost);
    ok = 1;
    for (int i = 0; i < 256; i++) ok &= h[i] == 256000000 + ((i / 32 + 1) % 8) * 3200 + 496;
    EXPECT(ok, "2-D block (threadIdx.y, warps along x) gives wrong results");
    k_opt<<<1, 32>>>(f, NULL);
    cudaMemcpy(hf, f, 32 * sizeof(float), cudaMemcpyDeviceToHost);
    EXPECT(hf[0] == 2.0f && hf[31] == 2.0f, "a NULL kernel argument is not a null pointer");

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
    fails += lt_selftest();
    printf("cuda_emu selftest: %s\n", fails ? "FAILED" : "ok");
    return fails != 0;
}
