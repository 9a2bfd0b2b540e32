/* test_ops_cuda_fused.c — the fused and batched ops on CUDA against the CPU ops, on the same fresh
 * seeded random inputs: op_add_rmsnorm (also against op_add + op_rmsnorm on CUDA, which it must match
 * to 1e-6: same sums in the same order), op_matmul_batched and its backward, and op_matmul on its
 * cuBLASLt path (bias and/or tanh GELU as the GEMM's epilogue, pre from the GELU aux output) and on
 * the path ASVR_NO_CUBLASLT=1 forces (cuBLAS GemmEx + the epilogue kernel). Relative error
 * ||cuda - cpu|| / ||cpu|| < 2e-6 with f32 storage and < 2e-2 with bf16 storage (inputs rounded to bf16
 * values first, so both backends see the same numbers). Which path each op_matmul took is read from
 * nn_cuda_matmul_lt_count: never cuBLASLt where ops_matmul.cu rules it out (the erf GELU, pre other than
 * the GELU aux output with N % 8 == 0, a bias in another dtype than y, ASVR_NO_CUBLASLT=1); where it is
 * allowed, cuBLASLt may still offer no algorithm (printed as a note), but each pass must run some
 * matmuls on it. Written outputs are pre-filled with NaN; accumulated ones with random values, and their
 * increments are compared. Without a CUDA build or a visible device the test says it was skipped.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"

static uint64_t rng = 0xDA3E39CB94B95BDBULL;
static float frand(void) { return t_frand(&rng); }
static nn_dtype DT; /* storage dtype of the device tensors in this pass */
static const char *dn;
static double TOL;

#define MAXT 256
static void *hown[MAXT], *down[MAXT];
static int n_h, n_d;

static tensor hmake(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t sh[3] = {d0, d1, d2};
    tensor t = tensor_make(name, NN_F32, NN_CPU, ndim, sh, NULL);
    t.data = malloc(tensor_nbytes(&t));
    T_CHECK(t.data != NULL && n_h < MAXT, "host alloc");
    hown[n_h++] = t.data;
    return t;
}
static float *P(const tensor *t) { return (float *)t->data; }
/* Random host tensor (bf16-exact values in the bf16 pass). */
static tensor H(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, float scale) {
    tensor t = hmake(name, ndim, d0, d1, d2);
    for (int64_t i = 0; i < tensor_numel(&t); i++) {
        P(&t)[i] = scale * frand();
        if (DT == NN_BF16) P(&t)[i] = t_bf16_round(P(&t)[i]);
    }
    return t;
}
static tensor Hfill(const char *name, const tensor *like, float v) {
    tensor t = hmake(name, like->ndim, like->shape[0], like->ndim > 1 ? like->shape[1] : 0,
                     like->ndim > 2 ? like->shape[2] : 0);
    for (int64_t i = 0; i < tensor_numel(&t); i++) P(&t)[i] = v;
    return t;
}
static tensor Hcopy(const char *name, const tensor *h) {
    tensor t = Hfill(name, h, 0.0f);
    memcpy(t.data, h->data, tensor_nbytes(h));
    return t;
}
/* Device copy of a host tensor in dtype dt. */
static tensor D(const tensor *h, nn_dtype dt) {
    tensor t = tensor_make(h->name, dt, NN_CUDA, h->ndim, h->shape, NULL);
    t.data = nn_cuda_malloc(tensor_nbytes(&t), h->name);
    T_CHECK(n_d < MAXT, "device alloc");
    down[n_d++] = t.data;
    nn_cuda_upload(&t, h);
    return t;
}
static tensor Dd(const tensor *h) { return D(h, DT); }
static void release(void) {
    for (int i = 0; i < n_h; i++) free(hown[i]);
    for (int i = 0; i < n_d; i++) nn_cuda_free(down[i]);
    n_h = n_d = 0;
}

/* ||(d - h0) - (h - h0)|| / ||h - h0|| (h0 NULL: 0); d a device tensor, h and h0 host; inf on a NaN. */
static double err_vs(const tensor *d, const tensor *h, const tensor *h0) {
    tensor back = *h;
    back.data = malloc(tensor_nbytes(h));
    nn_cuda_download(&back, d);
    double num = 0, den = 0;
    int bad = 0;
    for (int64_t i = 0; i < tensor_numel(h); i++) {
        double a = P(&back)[i], b = P(h)[i], z = h0 ? P(h0)[i] : 0.0;
        if (!isfinite(a) || !isfinite(b)) bad = 1;
        num += (a - b) * (a - b), den += (b - z) * (b - z);
    }
    free(back.data);
    return bad ? INFINITY : sqrt(num / (den > 0 ? den : 1e-300));
}
/* The same between two device tensors. */
static double err_dd(const tensor *a, const tensor *b) {
    tensor hb = hmake("back", 1, tensor_numel(b), 0, 0);
    nn_cuda_download(&hb, b);
    return err_vs(a, &hb, NULL);
}

#define CMP(what, e, tol)                                                                          \
    do {                                                                                           \
        double e_ = (e);                                                                           \
        printf("  %-4s %-72s %.2e  (< %.0e)\n", dn, (what), e_, (double)(tol));                    \
        T_CHECK(e_ < (tol), "%s %s: relative error %.3g", dn, (what), e_);                          \
    } while (0)

static char lab[256];
#define L(...) (snprintf(lab, sizeof lab, __VA_ARGS__), lab)

/* ---- op_add_rmsnorm ----------------------------------------------------------------------------- */
/* mode 0: separate r and y; 1: r over a; 2: y over b (r separate). */
static void t_add_rmsnorm(int R, int C, int mode) {
    const float eps = 1e-6f;
    tensor a = H("a", 2, R, C, 0, 2.0f), b = H("b", 2, R, C, 0, 1.0f), w = H("w", 1, C, 0, 0, 1.5f);
    tensor r = Hfill("r", &a, NAN), y = Hfill("y", &a, NAN), rs = Hfill("rstd", &(tensor){.ndim = 1, .shape = {R}}, NAN);
    op_add_rmsnorm(&r, &y, &a, &b, &w, eps, &rs);
    tensor ga = Dd(&a), gb = Dd(&b), gw = Dd(&w), gr = Dd(&r), gy = Dd(&y), grs = D(&rs, NN_F32);
    tensor ga2 = Dd(&a), gb2 = Dd(&b), gr2 = Dd(&r), gy2 = Dd(&y), grs2 = D(&rs, NN_F32);
    tensor *pr = mode == 1 ? &ga : &gr, *py = mode == 2 ? &gb : &gy;
    op_add_rmsnorm(pr, py, &ga, &gb, &gw, eps, &grs);
    op_add(&gr2, &ga2, &gb2); /* the unfused ops on CUDA */
    op_rmsnorm(&gy2, &gr2, &gw, eps, &grs2);
    const char *how = mode == 0 ? "separate r, y" : mode == 1 ? "r over a" : "y over b";
    CMP(L("add_rmsnorm %dx%d %s: r vs cpu", R, C, how), err_vs(pr, &r, NULL), TOL);
    CMP(L("add_rmsnorm %dx%d %s: y vs cpu", R, C, how), err_vs(py, &y, NULL), TOL);
    /* rstd is f32 on both, but in the bf16 pass it is the statistic of the bf16-rounded r */
    /* measured on the stand-in: rstd 6.3e-8 (f32) and 2.6e-4 (bf16); the fused against the unfused 0 */
    CMP(L("add_rmsnorm %dx%d %s: rstd vs cpu", R, C, how), err_vs(&grs, &rs, NULL), DT == NN_BF16 ? 1e-3 : 7e-7);
    CMP(L("add_rmsnorm %dx%d %s: r vs cuda op_add", R, C, how), err_dd(pr, &gr2), 1e-6);
    CMP(L("add_rmsnorm %dx%d %s: y vs cuda op_add + op_rmsnorm", R, C, how), err_dd(py, &gy2), 1e-6);
    release();
}

/* ---- op_matmul_batched -------------------------------------------------------------------------- */
static void t_matmul_batched(int G, int M, int K, int N, nn_act act, int with_pre, nn_dtype ydt) {
    tensor x = H("x", 3, G, M, K, 1.0f), w = H("w", 3, G, N, K, 0.4f);
    tensor y = hmake("y", 3, G, M, N), pre = Hfill("pre", &y, NAN);
    for (int64_t i = 0; i < tensor_numel(&y); i++) P(&y)[i] = NAN;
    tensor gx = Dd(&x), gw = Dd(&w), gy = D(&y, ydt), gpre = D(&pre, ydt);
    op_matmul_batched(&y, &x, &w, act, with_pre ? &pre : NULL);
    op_matmul_batched(&gy, &gx, &gw, act, with_pre ? &gpre : NULL);
    CMP(L("matmul_batched G%d %dx%dx%d act %d -> %s: y", G, M, K, N, (int)act, nn_dtype_name(ydt)), err_vs(&gy, &y, NULL),
        TOL);
    if (with_pre) CMP(L("matmul_batched G%d act %d: pre", G, (int)act), err_vs(&gpre, &pre, NULL), TOL);
    release();
}

static void t_matmul_batched_backward(int G, int M, int K, int N, nn_act act, int acc, int with_dx, int with_dw) {
    tensor x = H("x", 3, G, M, K, 1.0f), w = H("w", 3, G, N, K, 0.4f), pre = H("pre", 3, G, M, N, 2.0f);
    tensor dy = H("dy", 3, G, M, N, 1.0f), dx0 = acc ? H("dx0", 3, G, M, K, 1.0f) : Hfill("dx0", &x, NAN);
    tensor dw0 = H("dw0", 3, G, N, K, 1.0f), dx = Hcopy("dx", &dx0), dw = Hcopy("dw", &dw0);
    nn_dtype wdt = DT == NN_BF16 && acc ? NN_F32 : DT; /* bf16 inputs with f32 master gradients too */
    tensor gx = Dd(&x), gw = Dd(&w), gpre = Dd(&pre), gdy = Dd(&dy), gdx = Dd(&dx0), gdw = D(&dw0, wdt);
    const tensor *ppre = act != NN_ACT_NONE ? &pre : NULL, *gppre = act != NN_ACT_NONE ? &gpre : NULL;
    op_matmul_batched_backward(with_dx ? &dx : NULL, with_dw ? &dw : NULL, &dy, &x, &w, act, ppre, acc);
    op_matmul_batched_backward(with_dx ? &gdx : NULL, with_dw ? &gdw : NULL, &gdy, &gx, &gw, act, gppre, acc);
    char t[96];
    snprintf(t, sizeof t, "G%d %dx%dx%d act %d acc %d dx %d dw %d", G, M, K, N, (int)act, acc, with_dx, with_dw);
    CMP(L("matmul_batched_backward %s: dy after act'", t), err_vs(&gdy, &dy, NULL), TOL);
    if (with_dx) CMP(L("matmul_batched_backward %s: dx", t), err_vs(&gdx, &dx, acc ? &dx0 : NULL), TOL);
    if (with_dw)
        CMP(L("matmul_batched_backward %s: dw (+=, %s)", t, nn_dtype_name(wdt)), err_vs(&gdw, &dw, &dw0), TOL);
    else CMP(L("matmul_batched_backward %s: dw untouched", t), err_vs(&gdw, &dw0, NULL), 1e-30);
    release();
}

/* ---- op_matmul: the cuBLASLt epilogues and the ASVR_NO_CUBLASLT path ---------------------------- */
static int lt_expected(int bias, nn_act act, int with_pre, int64_t N, nn_dtype ydt, nn_dtype bdt) {
    int gelu = act == NN_ACT_GELU_TANH;
    if (act == NN_ACT_GELU_ERF || (!bias && !gelu)) return 0;
    if (bias && bdt != ydt) return 0;
    if (with_pre && (!gelu || N % 8 != 0)) return 0;
    return 1;
}

static int lt_ran, lt_declined;

/* y [M,N] = act(x·w^T + b) with the inputs in DT, y and pre in ydt, the bias in bdt; run with cuBLASLt
 * allowed and with ASVR_NO_CUBLASLT=1; both against the CPU, and the path taken as documented. */
static void t_matmul_paths(int M, int K, int N, int bias, nn_act act, int with_pre, nn_dtype ydt, nn_dtype bdt) {
    tensor x = H("x", 2, M, K, 0, 1.0f), w = H("w", 2, N, K, 0, 0.3f), b = H("b", 1, N, 0, 0, 0.5f);
    tensor y = hmake("y", 2, M, N, 0), pre = Hfill("pre", &y, NAN);
    for (int64_t i = 0; i < tensor_numel(&y); i++) P(&y)[i] = NAN;
    op_matmul(&y, &x, &w, bias ? &b : NULL, act, with_pre ? &pre : NULL);
    tensor gx = Dd(&x), gw = Dd(&w), gb = D(&b, bdt);
    char t[128];
    snprintf(t, sizeof t, "%dx%dx%d bias %d (%s) act %d pre %d -> %s", M, K, N, bias, nn_dtype_name(bdt), (int)act,
             with_pre, nn_dtype_name(ydt));
    for (int forced = 0; forced < 2; forced++) {
        tensor gy = D(&y, ydt), gpre = D(&pre, ydt); /* NaN-filled */
        if (forced) setenv("ASVR_NO_CUBLASLT", "1", 1);
        else unsetenv("ASVR_NO_CUBLASLT");
        long long before = nn_cuda_matmul_lt_count();
        op_matmul(&gy, &gx, &gw, bias ? &gb : NULL, act, with_pre ? &gpre : NULL);
        int used = (int)(nn_cuda_matmul_lt_count() - before);
        int want = forced ? 0 : lt_expected(bias, act, with_pre, N, ydt, bdt);
        const char *path = used ? "cuBLASLt" : "GemmEx+kernel";
        T_CHECK(used <= want, "%s: ran on cuBLASLt where it must not", t);
        if (used < want) { /* a performance matter, not an error: this cuBLASLt offered no algorithm */
            printf("  note: cuBLASLt declined %s\n", t);
            lt_declined++;
        }
        lt_ran += used;
        CMP(L("matmul %s [%s]: y", t, path), err_vs(&gy, &y, NULL), TOL);
        if (with_pre) CMP(L("matmul %s [%s]: pre", t, path), err_vs(&gpre, &pre, NULL), TOL);
    }
    unsetenv("ASVR_NO_CUBLASLT");
    release();
}

/* The same through views that start one row into their buffers (K and N odd: x and y only 4- or
 * 2-byte aligned, as views into the middle of an arena tensor can be): cuBLASLt must be told the
 * actual alignment (the stand-in refuses an operand aligned less than its algorithm may assume). */
static void t_matmul_lt_misaligned(int M, int K, int N) {
    tensor xf = H("x", 2, M + 1, K, 0, 1.0f), w = H("w", 2, N, K, 0, 0.3f), b = H("b", 1, N, 0, 0, 0.5f);
    tensor x = tensor_make("x rows 1..", NN_F32, NN_CPU, 2, (int64_t[]){M, K}, P(&xf) + K);
    tensor y = hmake("y", 2, M, N, 0);
    op_matmul(&y, &x, &w, &b, NN_ACT_GELU_TANH, NULL);
    tensor gxf = Dd(&xf), gw = Dd(&w), gb = Dd(&b), hyf = hmake("yf", 2, M + 1, N, 0);
    for (int64_t i = 0; i < tensor_numel(&hyf); i++) P(&hyf)[i] = NAN;
    tensor gyf = Dd(&hyf);
    size_t es = nn_dtype_size(DT);
    tensor gx = tensor_make("x rows 1..", DT, NN_CUDA, 2, (int64_t[]){M, K}, (char *)gxf.data + (size_t)K * es);
    tensor gy = tensor_make("y rows 1..", DT, NN_CUDA, 2, (int64_t[]){M, N}, (char *)gyf.data + (size_t)N * es);
    unsetenv("ASVR_NO_CUBLASLT");
    long long before = nn_cuda_matmul_lt_count();
    op_matmul(&gy, &gx, &gw, &gb, NN_ACT_GELU_TANH, NULL);
    lt_ran += (int)(nn_cuda_matmul_lt_count() - before);
    CMP(L("matmul %dx%dx%d bias, tanh GELU, x and y one row into their buffers: y", M, K, N), err_vs(&gy, &y, NULL), TOL);
    release();
}

static void run(nn_dtype dt) {
    DT = dt;
    dn = nn_dtype_name(dt);
    /* measured on the stand-in: f32 1.5e-7, bf16 3.6e-3 (bf16: ~10x would pass 3.6e-2; the bound stays) */
    TOL = dt == NN_BF16 ? 2e-2 : 2e-6;
    printf("%s storage\n", dn);
    for (int mode = 0; mode < 3; mode++) t_add_rmsnorm(6, 300, mode);
    t_add_rmsnorm(3, 2048, 0);
    nn_act acts[3] = {NN_ACT_NONE, NN_ACT_GELU_TANH, NN_ACT_GELU_ERF};
    for (int a = 0; a < 3; a++) {
        t_matmul_batched(3, 9, 20, 13, acts[a], 1, DT);
        t_matmul_batched_backward(3, 9, 20, 13, acts[a], 0, 1, 1);
        t_matmul_batched_backward(3, 9, 20, 13, acts[a], 1, 1, 1);
    }
    if (dt == NN_BF16) t_matmul_batched(2, 7, 16, 8, NN_ACT_GELU_ERF, 1, NN_F32); /* bf16 in, f32 out */
    t_matmul_batched_backward(4, 6, 8, 5, NN_ACT_NONE, 0, 0, 1);
    t_matmul_batched_backward(4, 6, 8, 5, NN_ACT_GELU_TANH, 0, 1, 0);
    for (int bias = 0; bias < 2; bias++)
        for (int a = 0; a < 3; a++)
            for (int with_pre = 0; with_pre < 2; with_pre++) {
                t_matmul_paths(11, 24, 48, bias, acts[a], with_pre, DT, DT);
                if (with_pre) t_matmul_paths(11, 24, 45, bias, acts[a], with_pre, DT, DT); /* N % 8 != 0 */
            }
    if (dt == NN_BF16) {
        t_matmul_paths(9, 32, 40, 1, NN_ACT_GELU_TANH, 1, NN_F32, NN_F32); /* bf16 in, f32 out and bias */
        t_matmul_paths(9, 32, 40, 1, NN_ACT_GELU_TANH, 0, NN_BF16, NN_F32); /* f32 bias on a bf16 y */
    }
    t_matmul_lt_misaligned(9, 23, 41);
    printf("  %s: %d matmuls on cuBLASLt, %d declined by it\n", dn, lt_ran, lt_declined);
    T_CHECK(lt_ran > 0, "%s: no op_matmul ran on cuBLASLt", dn);
    lt_ran = lt_declined = 0;
}
#endif

int main(void) {
#ifdef ASVR_HAVE_CUDA
    if (!nn_cuda_available()) {
        t_skip("no CUDA device visible");
        return t_done();
    }
    run(NN_F32);
    run(NN_BF16);
#else
    t_skip("built without the CUDA backend");
#endif
    return t_done();
}
