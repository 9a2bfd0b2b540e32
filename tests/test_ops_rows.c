/* test_ops_rows.c — the row ops of nn/ops.h: op_gather_rows, op_scatter_add_rows and the fused VQ step
 * (op_vq_fused). On the CPU against hand-computed references (every gathered element exact, the
 * scatter-add in row order exact, the fused step's codes equal to op_vq_step's), and the refusals; then,
 * with a CUDA build and a visible device, each op on CUDA against the CPU on fresh random inputs in f32
 * and bf16 storage: outputs start NaN (or codes -1) so an element left unwritten fails, the scatter-add
 * is bit-identical run to run, and an index outside the rows is reported by the op. Without a device the
 * CUDA part prints "skipped: no CUDA device" and the test passes.
 */
#include <math.h>
#include <stdint.h>

#include "nn/ops.h"
#include "test.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float frand(void) { return t_frand(&rng); }
static int irand(int n) { return (int)((frand() + 1.0f) * 0.5f * (float)n) % n; }

static tensor host_f32(const char *name, int64_t rows, int64_t cols, float *data, int bf16_exact) {
    for (int64_t i = 0; i < rows * cols; i++) data[i] = bf16_exact ? t_bf16_round(frand()) : frand();
    return tensor_make(name, NN_F32, NN_CPU, 2, (int64_t[]){rows, cols}, data);
}

static tensor host_idx(const char *name, int64_t n, int32_t *data, int rows) {
    for (int64_t i = 0; i < n; i++) data[i] = irand(rows);
    return tensor_make(name, NN_I32, NN_CPU, 1, (int64_t[]){n}, data);
}

#define R 9
#define N 23
#define C 13

static void cpu_gather_scatter(void) {
    float x[R * C], y[N * C], ys[R * C], ref[R * C];
    int32_t idx[N];
    tensor tx = host_f32("x", R, C, x, 0), ti = host_idx("idx", N, idx, R);
    tensor ty = tensor_make("y", NN_F32, NN_CPU, 2, (int64_t[]){N, C}, y);
    op_fill(&ty, NAN);
    op_gather_rows(&ty, &tx, &ti);
    int bad = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) bad += y[n * C + c] != x[idx[n] * C + c];
    T_EQ_INT(bad, 0);

    /* x read as a matrix: a [3, 3, C] tensor holds R = 9 rows */
    tensor tx3 = tensor_make("x3", NN_F32, NN_CPU, 3, (int64_t[]){3, 3, C}, x);
    op_fill(&ty, NAN);
    op_gather_rows(&ty, &tx3, &ti);
    bad = 0;
    for (int n = 0; n < N * C; n++) bad += y[n] != x[idx[n / C] * C + n % C];
    T_EQ_INT(bad, 0);

    /* scatter-add: every y[idx[n]] += x[n] in row order, rows no index names unchanged */
    tensor tys = host_f32("ys", R, C, ys, 0);
    memcpy(ref, ys, sizeof ref);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) ref[idx[n] * C + c] += y[n * C + c];
    op_scatter_add_rows(&tys, &ty, &ti);
    bad = 0;
    for (int i = 0; i < R * C; i++) bad += ys[i] != ref[i];
    T_EQ_INT(bad, 0);
}

/* The fused step against the GEMM step: equal codes, residuals within rounding. */
static void cpu_vq_fused(void) {
    enum { NV = 29, CV = 12, K = 40, D = 3 };
    float x[NV * CV], x2[NV * CV], cb[K * CV], cn[K], dist[8 * K];
    uint16_t c1[NV * D], c2[NV * D];
    tensor tx = host_f32("x", NV, CV, x, 0), tcb = host_f32("codebook", K, CV, cb, 0);
    memcpy(x2, x, sizeof x);
    tensor tx2 = tensor_make("x2", NN_F32, NN_CPU, 2, (int64_t[]){NV, CV}, x2);
    tensor tcn = tensor_make("cnorm", NN_F32, NN_CPU, 1, (int64_t[]){K}, cn);
    tensor td = tensor_make("dist", NN_F32, NN_CPU, 2, (int64_t[]){8, K}, dist);
    tensor tc1 = tensor_make("codes", NN_U16, NN_CPU, 2, (int64_t[]){NV, D}, c1);
    tensor tc2 = tensor_make("codes", NN_U16, NN_CPU, 2, (int64_t[]){NV, D}, c2);
    op_row_sqnorm(&tcn, &tcb);
    for (int d = 0; d < D; d++) {
        op_vq_step(&tx, &tcb, &tcn, &tc1, d, &td);
        op_vq_fused(&tx2, &tcb, &tcn, &tc2, d);
    }
    int bad = 0;
    for (int i = 0; i < NV * D; i++) bad += c1[i] != c2[i];
    T_EQ_INT(bad, 0);
    double worst = 0;
    for (int i = 0; i < NV * CV; i++) worst = fmax(worst, fabs((double)x[i] - x2[i]));
    T_CHECK(worst < 1e-5, "fused vs gemm residuals differ by %.3g", worst);
}

static float mx[R * C], my[N * C];
static int32_t midx[N];
static void misuse_index(void) {
    tensor tx = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){R, C}, mx);
    tensor ty = tensor_make("y", NN_F32, NN_CPU, 2, (int64_t[]){N, C}, my);
    for (int i = 0; i < N; i++) midx[i] = i % R;
    midx[5] = R;
    tensor ti = tensor_make("idx", NN_I32, NN_CPU, 1, (int64_t[]){N}, midx);
    op_gather_rows(&ty, &tx, &ti);
}
static void misuse_width(void) {
    tensor tx = tensor_make("x", NN_F32, NN_CPU, 2, (int64_t[]){R, C}, mx);
    tensor ty = tensor_make("y", NN_F32, NN_CPU, 2, (int64_t[]){N, C - 1}, my);
    tensor ti = tensor_make("idx", NN_I32, NN_CPU, 1, (int64_t[]){N}, midx);
    op_scatter_add_rows(&tx, &ty, &ti);
}

#ifdef ASVR_HAVE_CUDA
/* a device copy of a host tensor in dtype dt (f32 host data; bf16 converts) */
static tensor dcopy(const tensor *h, nn_dtype dt) {
    tensor t = tensor_make(h->name, dt, NN_CUDA, h->ndim, h->shape, NULL);
    t.data = nn_cuda_malloc(tensor_nbytes(&t), h->name);
    op_transfer(&t, h);
    return t;
}

static int count_differences(const tensor *d, const float *want, int64_t n) {
    float *got = malloc(sizeof(float) * (size_t)n);
    op_read_f32(d, got);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += !(got[i] == want[i]); /* NaN (unwritten) counts */
    free(got);
    return bad;
}

static double rel_err(const tensor *d, const float *want, int64_t n) {
    float *got = malloc(sizeof(float) * (size_t)n);
    op_read_f32(d, got);
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]), den += (double)want[i] * want[i];
    free(got);
    return isfinite(num) ? sqrt(num / den) : INFINITY;
}

static void cuda_gather_scatter(nn_dtype dt) {
    int bf = dt == NN_BF16;
    const char *dn = nn_dtype_name(dt);
    float x[R * C], y[N * C], ys[R * C];
    int32_t idx[N];
    tensor tx = host_f32("x", R, C, x, bf), ti = host_idx("idx", N, idx, R);
    tensor ty = tensor_make("y", NN_F32, NN_CPU, 2, (int64_t[]){N, C}, y);
    tensor dx = dcopy(&tx, dt), di = dcopy(&ti, NN_I32), dy = dcopy(&ty, dt);
    op_fill(&dy, NAN);
    op_gather_rows(&ty, &tx, &ti);
    op_gather_rows(&dy, &dx, &di);
    T_CHECK(count_differences(&dy, y, N * C) == 0, "%s cuda gather_rows differs from the cpu", dn);

    /* scatter-add of the gathered rows into fresh rows; twice on the device from the same start */
    tensor tys = host_f32("ys", R, C, ys, bf);
    tensor dys = dcopy(&tys, dt), dys2 = dcopy(&tys, dt);
    op_scatter_add_rows(&tys, &ty, &ti);
    op_scatter_add_rows(&dys, &dy, &di);
    op_scatter_add_rows(&dys2, &dy, &di);
    double e = rel_err(&dys, ys, R * C);
    T_CHECK(e < (bf ? 1e-2 : 1e-6), "%s cuda scatter_add_rows off by %.3g", dn, e);
    float *a = malloc(sizeof ys), *b = malloc(sizeof ys);
    op_read_f32(&dys, a), op_read_f32(&dys2, b);
    T_CHECK(memcmp(a, b, sizeof ys) == 0, "%s cuda scatter_add_rows differs run to run", dn);
    free(a), free(b);
    tensor all[] = {dx, di, dy, dys, dys2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nn_cuda_free(all[i].data);
}

static void cuda_vq_fused(nn_dtype dt) {
    enum { NV = 37, CV = 40, K = 700, D = 3 }; /* rows not a multiple of the kernel's row tile */
    int bf = dt == NN_BF16;
    const char *dn = nn_dtype_name(dt);
    static float x[NV * CV], cb[K * CV], cn[K];
    int32_t hc[NV * D], neg[NV * D];
    tensor tx = host_f32("x", NV, CV, x, bf), tcb = host_f32("codebook", K, CV, cb, bf);
    tensor tcn = tensor_make("cnorm", NN_F32, NN_CPU, 1, (int64_t[]){K}, cn);
    tensor tc = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){NV, D}, hc);
    for (int i = 0; i < NV * D; i++) neg[i] = -1;
    tensor tneg = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){NV, D}, neg);
    tensor dx = dcopy(&tx, dt), dcb = dcopy(&tcb, dt), dcn = dcopy(&tcn, NN_F32), dc = dcopy(&tneg, NN_I32);
    op_row_sqnorm(&tcn, &tcb), op_row_sqnorm(&dcn, &dcb);
    for (int d = 0; d < D; d++) {
        op_vq_fused(&tx, &tcb, &tcn, &tc, d);
        op_vq_fused(&dx, &dcb, &dcn, &dc, d);
    }
    int32_t got[NV * D];
    tensor tg = tensor_make("codes", NN_I32, NN_CPU, 2, (int64_t[]){NV, D}, got);
    op_transfer(&tg, &dc);
    int bad = 0, unset = 0;
    for (int i = 0; i < NV * D; i++) bad += got[i] != hc[i], unset += got[i] < 0;
    T_EQ_INT(unset, 0);
    /* bf16 storage rounds every residual update: later depths may pick another near-tie */
    T_CHECK(bad <= (bf ? NV * D / 10 : 0), "%s cuda vq_fused: %d of %d codes differ from the cpu's", dn, bad, NV * D);
    if (!bf) {
        double e = rel_err(&dx, x, NV * CV);
        T_CHECK(e < 1e-5, "%s cuda vq_fused residual off by %.3g", dn, e);
    }
    tensor all[] = {dx, dcb, dcn, dc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nn_cuda_free(all[i].data);
}

static void cuda_bad_index(void) {
    float x[R * C], y[N * C];
    int32_t idx[N];
    tensor tx = host_f32("x", R, C, x, 0), ti = host_idx("idx", N, idx, R);
    idx[7] = R + 3;
    tensor ty = tensor_make("y", NN_F32, NN_CPU, 2, (int64_t[]){N, C}, y);
    tensor dx = dcopy(&tx, NN_F32), di = dcopy(&ti, NN_I32), dy = dcopy(&ty, NN_F32);
    op_gather_rows(&dy, &dx, &di);
}
#endif

int main(void) {
    cpu_gather_scatter();
    cpu_vq_fused();
    t_expect_fatal("index out of range", misuse_index, "op_gather_rows: id 9 at 5 of 'idx' is outside [0, 9)");
    t_expect_fatal("widths differ", misuse_width, "op_scatter_add_rows: 'y' [23, 12], want [23, 13]");
#ifdef ASVR_HAVE_CUDA
    if (nn_cuda_available()) {
        cuda_gather_scatter(NN_F32);
        cuda_gather_scatter(NN_BF16);
        cuda_vq_fused(NN_F32);
        cuda_vq_fused(NN_BF16);
        t_expect_fatal("cuda index out of range", cuda_bad_index, "op_gather_rows: id 12 at 7 is outside [0, 9) (found on the device)");
        printf("cuda: row ops match the CPU\n");
    } else {
        printf("skipped: no CUDA device\n");
    }
#else
    printf("skipped: built without the CUDA backend\n");
#endif
    return t_done();
}
