/* comm_check.c — the communication layer (nn/comm.h) run as every rank of a job; tests/cli_comm.sh
 * starts it with mpirun -np 1, 2 and 3 and alone, and tools/gpu_check.sh on a GPU.
 *
 *   comm_check check [cpu|cuda]   every collective against a serial reference on fresh random data
 *                                 (f32, bf16, i32; sizes 1 to 2^20; outputs NaN-filled first, so an
 *                                 element left unwritten fails), in-place forms, roots, the host
 *                                 helpers, the counters, and on cuda the deferred ordering
 *   comm_check order [cpu|cuda]   a buffer written by a kernel queued behind a delay spin right before
 *                                 each all-reduce and read by a kernel right after it (or after
 *                                 comm_wait when deferred): the event ordering of the NCCL backend
 *   comm_check info               one line: rank, size, local rank and size, device, launcher, MPI
 *   comm_check delay US COUNT     COUNT all-reduces under ASVR_COMM_DELAY_US=US: each rank must take
 *                                 at least US*COUNT and the sums stay right
 *   comm_check timeout RANK SECS  after one all-reduce, rank RANK sleeps SECS before the next; under a
 *                                 shorter ASVR_COMM_TIMEOUT every rank must end non-zero
 *   comm_check kill RANK          after one all-reduce, rank RANK _exit(3)s; the others must end
 *
 * Sums against the serial sum in rank order, ((0 + g0) + g1) + ...: bitwise with 1 or 2 ranks (two
 * operands commute, so any 2-rank reduction equals it); with 3 or more ranks MPI may associate
 * differently, so within |x - ref| <= 4 eps(f32) * sum|g| (measured with Open MPI 4.1.4, 3 ranks,
 * 2^20 elements: at most 1.2e-7 * sum|g|, i.e. 1 eps). bf16 sums run in f32 and are rounded once:
 * bitwise for 2 ranks, within one bf16 ulp of the reference otherwise. Gathers and broadcasts are
 * bitwise always. Rank 0 prints the job's totals as "N passed, N failed"; every rank exits 1 if any
 * rank failed. COMM_CHECK_SEED changes the data (rank 0's value is broadcast).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "nn/comm.h"
#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"
#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

static comm *C;
static int R, S;            /* rank, size */
static nn_device DEV = NN_CPU;
static uint64_t SEED = 0x5EEDC0337ULL;
static double worst_rel;    /* the largest |x - ref| / sum|g| of f32 sums seen */
static int64_t f32_summed, f32_inexact; /* f32 sum elements checked with tolerance, and those not bitwise */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- data: every rank can make every rank's input ------------------------------------------- */

static uint16_t bf16_bits(float f) {
    f = t_bf16_round(f);
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static float bf16_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Rank r's n values for case `id`, as f32 (bf16-exact when dt is bf16; small integers for i32). */
static void make_values(float *v, int64_t n, int r, int id, nn_dtype dt) {
    uint64_t s = SEED ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(r + 1)) ^ ((uint64_t)id << 32);
    for (int i = 0; i < 4; i++) t_frand(&s);
    for (int64_t i = 0; i < n; i++) {
        float x = t_frand(&s) * (i % 5 == 0 ? 1000.0f : 1.0f); /* mixed magnitudes: sums round */
        v[i] = dt == NN_BF16 ? t_bf16_round(x) : dt == NN_I32 ? (float)(int)(x * 1000.0f) : x;
    }
}

static size_t esize(nn_dtype dt) { return nn_dtype_size(dt); }

/* f32 values -> the dtype's bytes */
static void to_bytes(void *dst, const float *v, int64_t n, nn_dtype dt) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == NN_F32) ((float *)dst)[i] = v[i];
        else if (dt == NN_BF16) ((uint16_t *)dst)[i] = bf16_bits(v[i]);
        else ((int32_t *)dst)[i] = (int32_t)v[i];
    }
}

static void fill_nan(void *dst, int64_t n, nn_dtype dt) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == NN_F32) ((float *)dst)[i] = NAN;
        else if (dt == NN_BF16) ((uint16_t *)dst)[i] = 0x7FC0;
        else ((int32_t *)dst)[i] = INT32_MIN; /* no i32 input is this */
    }
}

/* ---- buffers on the device under test -------------------------------------------------------- */

typedef struct {
    tensor t;    /* on DEV */
    void *host;  /* numel bytes of the dtype */
} buf;

static buf buf_new(const char *name, nn_dtype dt, int64_t n) {
    buf b;
    b.host = asvr_malloc((size_t)n * esize(dt), name);
    b.t = tensor_make(name, dt, DEV, 1, (int64_t[]){n}, b.host);
#ifdef ASVR_HAVE_CUDA
    if (DEV == NN_CUDA) b.t.data = nn_cuda_malloc((size_t)n * esize(dt), name);
#endif
    return b;
}
static void buf_free(buf *b) {
#ifdef ASVR_HAVE_CUDA
    if (DEV == NN_CUDA) nn_cuda_free(b->t.data);
#endif
    free(b->host);
}
static tensor host_view(buf *b) {
    tensor h = b->t;
    h.device = NN_CPU, h.data = b->host;
    return h;
}
static void buf_push(buf *b) { /* host -> tensor */
    if (DEV == NN_CPU) return;
    tensor h = host_view(b);
    op_transfer(&b->t, &h);
}
static void buf_pull(buf *b) { /* tensor -> host (NaN first: a transfer that writes nothing shows) */
    if (DEV == NN_CPU) return;
    fill_nan(b->host, tensor_numel(&b->t), b->t.dtype);
    tensor h = host_view(b);
    op_transfer(&h, &b->t);
}
/* A view of elements [off, off+n) of b's tensor. */
static tensor piece_of(const buf *b, int64_t off, int64_t n) {
    tensor p = b->t;
    p.shape[0] = n;
    p.data = (char *)b->t.data + (size_t)off * esize(b->t.dtype);
    return p;
}

/* ---- comparisons ----------------------------------------------------------------------------- */

/* The serial sum in rank order of element range [off, off+n) of every rank's case-`id` input of
 * total length len, as f32 (bf16: rounded once), and sum|g| per element. */
static void serial_sum(float *ref, float *mag, int64_t off, int64_t n, int64_t len, int id, nn_dtype dt) {
    float *v = asvr_malloc((size_t)len * sizeof(float), "inputs");
    for (int64_t i = 0; i < n; i++) ref[i] = 0.0f, mag[i] = 0.0f;
    for (int r = 0; r < S; r++) {
        make_values(v, len, r, id, dt);
        for (int64_t i = 0; i < n; i++) ref[i] += v[off + i], mag[i] += fabsf(v[off + i]);
    }
    if (dt == NN_BF16)
        for (int64_t i = 0; i < n; i++) ref[i] = t_bf16_round(ref[i]);
    free(v);
}

/* got (host bytes of dt) against ref: bitwise at size <= 2 or for i32, else within tolerance. */
static void check_sum(const char *what, const void *got, const float *ref, const float *mag, int64_t n, nn_dtype dt) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        float x = dt == NN_F32 ? ((const float *)got)[i]
                  : dt == NN_BF16 ? bf16_float(((const uint16_t *)got)[i])
                                  : (float)((const int32_t *)got)[i];
        int ok;
        if (dt == NN_I32 || S <= 2) ok = memcmp(&x, &ref[i], 4) == 0;
        else {
            double d = fabs((double)x - ref[i]);
            double tol = dt == NN_BF16 ? fabs(ref[i]) / 128.0 + 4.0 * FLT_EPSILON * mag[i] : 4.0 * FLT_EPSILON * mag[i];
            ok = d <= tol;
            if (dt == NN_F32) {
                f32_summed++, f32_inexact += d != 0;
                if (mag[i] > 0 && d / mag[i] > worst_rel) worst_rel = d / mag[i];
            }
        }
        if (!ok && bad++ == 0) first = i;
    }
    T_CHECK(bad == 0, "rank %d: %s: %lld of %lld elements differ from the serial sum (first %lld)", R, what,
            (long long)bad, (long long)n, (long long)first);
}

/* got against rank src's case-`id` values [off, off+n) of an input of length len, bitwise. */
static void check_copy(const char *what, const void *got, int src, int64_t off, int64_t n, int64_t len, int id,
                       nn_dtype dt) {
    float *v = asvr_malloc((size_t)len * sizeof(float), "inputs");
    void *want = asvr_malloc((size_t)len * esize(dt), "expected");
    make_values(v, len, src, id, dt);
    to_bytes(want, v, len, dt);
    int ok = memcmp(got, (char *)want + (size_t)off * esize(dt), (size_t)n * esize(dt)) == 0;
    T_CHECK(ok, "rank %d: %s: piece of rank %d differs", R, what, src);
    free(v);
    free(want);
}

/* ---- the collectives ------------------------------------------------------------------------- */

static void set_input(buf *b, int64_t len, int id, nn_dtype dt) {
    float *v = asvr_malloc((size_t)len * sizeof(float), "inputs");
    make_values(v, len, R, id, dt);
    to_bytes(b->host, v, len, dt);
    free(v);
    buf_push(b);
}

static void case_allreduce(int64_t n, nn_dtype dt, int id) {
    char what[96];
    snprintf(what, sizeof what, "all-reduce %s n=%lld", nn_dtype_name(dt), (long long)n);
    buf b = buf_new("allreduce", dt, n);
    set_input(&b, n, id, dt);
    comm_allreduce(C, &b.t);
    buf_pull(&b);
    float *ref = asvr_malloc((size_t)n * 8, "ref"), *mag = ref + n;
    serial_sum(ref, mag, 0, n, n, id, dt);
    check_sum(what, b.host, ref, mag, n, dt);
    free(ref);
    buf_free(&b);
}

static void case_reduce_scatter(int64_t n, nn_dtype dt, int id, int inplace) {
    char what[96];
    snprintf(what, sizeof what, "reduce-scatter%s %s n=%lld", inplace ? " in place" : "", nn_dtype_name(dt),
             (long long)n);
    buf in = buf_new("rs_in", dt, n * S), out = buf_new("rs_out", dt, n);
    set_input(&in, n * S, id, dt);
    fill_nan(out.host, n, dt);
    buf_push(&out);
    tensor mine = piece_of(&in, (int64_t)R * n, n);
    comm_reduce_scatter(C, inplace ? &mine : &out.t, &in.t);
    buf_pull(&in);
    buf_pull(&out);
    float *ref = asvr_malloc((size_t)n * 8, "ref"), *mag = ref + n;
    serial_sum(ref, mag, (int64_t)R * n, n, n * S, id, dt);
    check_sum(what, inplace ? (char *)in.host + (size_t)R * (size_t)n * esize(dt) : out.host, ref, mag, n, dt);
    free(ref);
    buf_free(&in);
    buf_free(&out);
}

static void case_allgather(int64_t n, nn_dtype dt, int id, int inplace) {
    char what[96];
    snprintf(what, sizeof what, "all-gather%s %s n=%lld", inplace ? " in place" : "", nn_dtype_name(dt), (long long)n);
    buf in = buf_new("ag_in", dt, n), out = buf_new("ag_out", dt, n * S);
    set_input(&in, n, id, dt);
    fill_nan(out.host, n * S, dt);
    if (inplace) memcpy((char *)out.host + (size_t)R * (size_t)n * esize(dt), in.host, (size_t)n * esize(dt));
    buf_push(&out);
    if (inplace) comm_allgather_inplace(C, &out.t);
    else comm_allgather(C, &out.t, &in.t);
    buf_pull(&out);
    for (int r = 0; r < S; r++) check_copy(what, (char *)out.host + (size_t)r * (size_t)n * esize(dt), r, 0, n, n, id, dt);
    buf_free(&in);
    buf_free(&out);
}

static void case_bcast(int64_t n, nn_dtype dt, int id, int root) {
    char what[96];
    snprintf(what, sizeof what, "broadcast %s n=%lld root %d", nn_dtype_name(dt), (long long)n, root);
    buf b = buf_new("bcast", dt, n);
    if (R == root) set_input(&b, n, id, dt);
    else fill_nan(b.host, n, dt), buf_push(&b);
    comm_bcast(C, &b.t, root);
    buf_pull(&b);
    check_copy(what, b.host, root, 0, n, n, id, dt);
    buf_free(&b);
}

static void case_host_helpers(void) {
    double d[3] = {R + 0.5, 1e-3 * R, -1.0};
    comm_allreduce_f64(C, d, 3);
    T_CHECK(d[0] == S * S / 2.0 && d[2] == -S, "rank %d: host all-reduce f64: %g %g", R, d[0], d[2]);
    double want1 = 0;
    for (int r = 0; r < S; r++) want1 += 1e-3 * r;
    T_CHECK(fabs(d[1] - want1) < 1e-15, "rank %d: host all-reduce f64: %.17g vs %.17g", R, d[1], want1);
    int64_t k[2] = {R, (int64_t)1 << 40};
    comm_allreduce_i64(C, k, 2);
    T_CHECK(k[0] == (int64_t)S * (S - 1) / 2 && k[1] == (int64_t)S << 40, "rank %d: host all-reduce i64", R);
    enum { P = 32 }; /* bytes per rank */
    char mine[P] = {0}, *all = asvr_malloc((size_t)S * P, "hashes");
    snprintf(mine, sizeof mine, "rank-%d-hash", R);
    memset(all, '?', (size_t)S * P);
    comm_allgather_bytes(C, all, mine, P);
    int ok = 1;
    for (int r = 0; r < S; r++) {
        char want[P] = {0};
        snprintf(want, sizeof want, "rank-%d-hash", r);
        ok &= memcmp(all + P * r, want, P) == 0;
    }
    T_CHECK(ok, "rank %d: host all-gather of bytes", R);
    memset(all, '?', (size_t)S * P);
    snprintf(all + P * R, P, "in-place piece %d", R); /* mine already at offset r*P */
    comm_allgather_bytes(C, all, all + P * R, P);
    ok = 1;
    for (int r = 0; r < S; r++) {
        char want[P] = {0};
        snprintf(want, sizeof want, "in-place piece %d", r);
        ok &= strcmp(all + P * r, want) == 0;
    }
    T_CHECK(ok, "rank %d: host all-gather of bytes in place", R);
    char msg[24] = "";
    if (R == S - 1) snprintf(msg, sizeof msg, "from the last rank");
    comm_bcast_bytes(C, msg, sizeof msg, S - 1);
    T_CHECK(strcmp(msg, "from the last rank") == 0, "rank %d: host broadcast of bytes: '%s'", R, msg);
    free(all);
}

/* A known sequence and the counters it must leave. */
static void case_counts(void) {
    comm_reset_counts(C);
    buf a = buf_new("cnt_a", NN_F32, 10 * S), p = buf_new("cnt_p", NN_F32, 10);
    set_input(&a, 10 * S, 900, NN_F32);
    set_input(&p, 10, 901, NN_F32);
    comm_allreduce(C, &a.t);
    comm_allreduce(C, &p.t);
    comm_reduce_scatter(C, &p.t, &a.t);
    comm_allgather(C, &a.t, &p.t);
    comm_bcast(C, &p.t, 0);
    comm_barrier(C);
    double d[3] = {0};
    comm_allreduce_f64(C, d, 3);
    char bytes[16] = {0}, all[64 * 16];
    if (S <= 64) comm_allgather_bytes(C, all, bytes, 16);
    comm_bcast_bytes(C, bytes, 8, 0);
    comm_counts k;
    comm_get_counts(C, &k);
    int64_t want_calls[COMM_NKINDS] = {2, 1, 1, 1, 1, 1, S <= 64, 1};
    int64_t want_bytes[COMM_NKINDS] = {40 * S + 40, 40 * S, 40 * S, 40, 0, 24, S <= 64 ? 16 * S : 0, 8};
    for (int i = 0; i < COMM_NKINDS; i++) {
        T_CHECK(k.calls[i] == want_calls[i], "rank %d: %s calls %lld, expected %lld", R, comm_kind_name((comm_kind)i),
                (long long)k.calls[i], (long long)want_calls[i]);
        T_CHECK(k.bytes[i] == want_bytes[i], "rank %d: %s bytes %lld, expected %lld", R, comm_kind_name((comm_kind)i),
                (long long)k.bytes[i], (long long)want_bytes[i]);
    }
    buf_free(&a);
    buf_free(&p);
}

/* Deferred ordering: several collectives in flight, then comm_wait on the last ticket before the
 * results are read, and comm_sync; the results are the same as in order. */
static void case_deferred(void) {
    comm_set_deferred(C, 1);
    enum { K = 4 };
    int64_t n = 4096;
    buf b[K];
    comm_ticket t = 0;
    for (int i = 0; i < K; i++) {
        b[i] = buf_new("deferred", NN_F32, n);
        set_input(&b[i], n, 700 + i, NN_F32);
        t = comm_allreduce(C, &b[i].t);
    }
    T_CHECK(t == comm_last_ticket(C), "rank %d: the last ticket", R);
    comm_wait(C, t);
    comm_sync(C);
    comm_set_deferred(C, 0);
    float *ref = asvr_malloc((size_t)n * 8, "ref"), *mag = ref + n;
    for (int i = 0; i < K; i++) {
        buf_pull(&b[i]);
        serial_sum(ref, mag, 0, n, n, 700 + i, NN_F32);
        check_sum("deferred all-reduce", b[i].host, ref, mag, n, NN_F32);
        buf_free(&b[i]);
    }
    free(ref);
}

static void run_checks(void) {
    const int64_t sizes[] = {1, 7, 1000, 65537, (int64_t)1 << 20};
    const nn_dtype sums[] = {NN_F32, NN_BF16, NN_I32};
    int id = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        int64_t n = sizes[si];
        for (size_t di = 0; di < 3; di++) {
            nn_dtype dt = sums[di];
            if (dt != NN_F32 && n > 65537) continue;
            case_allreduce(n, dt, ++id);
            int64_t piece = n >= 65537 ? n / S : n; /* reduce-scatter input: S pieces */
            case_reduce_scatter(piece, dt, ++id, 0);
            case_reduce_scatter(piece, dt, ++id, 1);
        }
        for (size_t di = 0; di < 2; di++) { /* moves: any dtype, bitwise */
            nn_dtype dt = di ? NN_BF16 : NN_F32;
            case_allgather(n >= 65537 ? n / S : n, dt, ++id, 0);
            case_allgather(n >= 65537 ? n / S : n, dt, ++id, 1);
            case_bcast(n, dt, ++id, 0);
            case_bcast(n, dt, ++id, S - 1);
        }
    }
    comm_barrier(C);
    case_host_helpers();
    case_counts();
    case_deferred();
}

/* ---- ordering against the compute stream ----------------------------------------------------- */

/* The buffer is written by a kernel queued behind a spin of ASVR_COMM_DELAY_US (comm_inject_delay)
 * just before each all-reduce, and read by a kernel right after it (in order), or after comm_wait
 * (deferred): a collective that did not wait for the compute stream would sum the old contents, and a
 * read that did not wait for the collective would copy the unsummed ones. */
static int mode_order(int rounds) {
    int64_t n = 1 << 16;
    buf a = buf_new("order_a", NN_F32, n), b = buf_new("order_b", NN_F32, n);
    for (int i = 0; i < rounds; i++) {
        int deferred = i % 2;
        comm_set_deferred(C, deferred);
        memset(a.host, 0, (size_t)n * 4);
        buf_push(&a);
        comm_inject_delay(C, DEV);
        op_fill(&a.t, (float)(i + 1));
        comm_ticket t = comm_allreduce(C, &a.t);
        if (deferred) comm_wait(C, t);
        op_copy(&b.t, &a.t);
        comm_sync(C);
        buf_pull(&b);
        int64_t bad = 0;
        for (int64_t k = 0; k < n; k++) bad += ((float *)b.host)[k] != (float)(S * (i + 1));
        T_CHECK(bad == 0, "rank %d: round %d (%s): %lld of %lld elements are not %d", R, i,
                deferred ? "deferred" : "in order", (long long)bad, (long long)n, S * (i + 1));
    }
    comm_set_deferred(C, 0);
    buf_free(&a);
    buf_free(&b);
    int64_t tally[2] = {t_pass, t_fail};
    comm_allreduce_i64(C, tally, 2);
    if (R == 0) printf("order: %lld passed, %lld failed\n", (long long)tally[0], (long long)tally[1]);
    return tally[1] > 0;
}

/* ---- fault and delay modes ------------------------------------------------------------------ */

static float one_allreduce(void) {
    buf b = buf_new("x", NN_F32, 1);
    ((float *)b.host)[0] = 1.0f;
    buf_push(&b);
    comm_allreduce(C, &b.t);
    buf_pull(&b);
    float v = ((float *)b.host)[0];
    buf_free(&b);
    return v;
}

static int mode_delay(long us, int count) {
    double t0 = now_s();
    for (int i = 0; i < count; i++) T_CHECK(one_allreduce() == (float)S, "rank %d: sum under delay", R);
    double took = now_s() - t0;
    T_CHECK(took >= 1e-6 * (double)us * count, "rank %d: %d collectives took %.3f s, under the delay of %ld us each",
            R, count, took, us);
    if (R == 0) printf("delay: %d all-reduces in %.3f s (%ld us each injected)\n", count, took, us);
    return 0;
}

static int mode_timeout(int slow, int secs) {
    one_allreduce();
    if (R == slow) sleep((unsigned)secs);
    one_allreduce();
    fprintf(stderr, "rank %d: the all-reduce completed although rank %d slept %d s\n", R, slow, secs);
    return 0;
}

static int mode_kill(int dead) {
    one_allreduce();
    if (R == dead) {
        fprintf(stderr, "rank %d: exiting on purpose\n", R);
        _exit(3);
    }
    for (int i = 0; i < 3; i++) one_allreduce();
    fprintf(stderr, "rank %d: all-reduces completed although rank %d exited\n", R, dead);
    return 0;
}

/* ---- main ------------------------------------------------------------------------------------ */

static int usage(void) {
    fprintf(stderr, "usage: comm_check check|order [cpu|cuda] | info | delay US COUNT | timeout RANK SECS | kill RANK\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *mode = argv[1];
    if ((strcmp(mode, "check") == 0 || strcmp(mode, "order") == 0) && argc > 2 && strcmp(argv[2], "cuda") == 0) {
#ifdef ASVR_HAVE_CUDA
        if (!nn_cuda_available()) {
            printf("skipped: no CUDA device\n");
            return 0;
        }
        DEV = NN_CUDA;
#else
        printf("skipped: built without the CUDA backend\n");
        return 0;
#endif
    }
    C = comm_init(NULL);
    R = comm_rank(C), S = comm_size(C);
    if (DEV == NN_CUDA) comm_cuda_setup(C);
    int rc = 0;
    if (strcmp(mode, "info") == 0) {
        printf("rank %d size %d local %d/%d device %d launcher %s\n", R, S, comm_local_rank(C), comm_local_size(C),
               comm_device(C), comm_launcher(C));
        comm_print(C, stdout);
    } else if (strcmp(mode, "check") == 0) {
        const char *env = getenv("COMM_CHECK_SEED");
        if (env && *env) SEED = strtoull(env, NULL, 0);
        comm_bcast_bytes(C, &SEED, sizeof SEED, 0);
        if (R == 0) comm_print(C, stderr);
        run_checks();
        int64_t tally[4] = {t_pass, t_fail, f32_summed, f32_inexact};
        double worst = worst_rel;
        comm_allreduce_i64(C, tally, 4);
        double *all = asvr_malloc((size_t)S * sizeof(double), "worst");
        comm_allgather_bytes(C, all, &worst, sizeof worst);
        for (int r = 0; r < S; r++) worst = all[r] > worst ? all[r] : worst;
        free(all);
        if (R == 0) {
            if (S > 2)
                printf("comm_check: f32 sums differing from the serial sum: %lld of %lld elements, worst by %.3g x "
                       "sum|g|\n", (long long)tally[3], (long long)tally[2], worst);
            printf("comm_check %s, %d rank(s), seed 0x%llx\n", nn_device_name(DEV), S, (unsigned long long)SEED);
            printf("%lld passed, %lld failed\n", (long long)tally[0], (long long)tally[1]);
        }
        rc = tally[1] > 0;
    } else if (strcmp(mode, "order") == 0) {
        rc = mode_order(6);
    } else if (strcmp(mode, "delay") == 0 && argc == 4) {
        rc = mode_delay(atol(argv[2]), atoi(argv[3]));
        int64_t f = t_fail;
        comm_allreduce_i64(C, &f, 1);
        rc = f > 0;
    } else if (strcmp(mode, "timeout") == 0 && argc == 4) {
        rc = mode_timeout(atoi(argv[2]), atoi(argv[3]));
    } else if (strcmp(mode, "kill") == 0 && argc == 3) {
        rc = mode_kill(atoi(argv[2]));
    } else {
        rc = usage();
    }
    comm_free(C);
    return rc;
}
