/* comm.c — the communication layer's front (nn/comm.h): launcher detection, options, argument
 * checks, counters, and the dispatch of each collective to the size-1 path, MPI on host memory
 * (comm_mpi.c), NCCL (nn/cuda/comm_nccl.cu) or MPI staged through pinned host memory.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "nn/comm_internal.h"

#define DEFAULT_TIMEOUT_S 600.0
#define BUG_HINT "a bug in the calling code: every rank must pass matching tensors"

static int comm_live; /* one comm per process: MPI can be started once */

/* ---- environment ---------------------------------------------------------------------------- */

/* The integer in environment variable `name`, or `dflt` when unset or empty; exits when malformed. */
static long env_long(const char *name, long dflt, long lo, long hi) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    CHECK(errno == 0 && end && *end == 0 && v >= lo && v <= hi, "unset it or give a whole number in range",
          "%s='%s' is not a whole number in [%ld, %ld]", name, s, lo, hi);
    return v;
}

static double env_seconds(const char *name, double dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end = NULL;
    double v = strtod(s, &end);
    CHECK(end && *end == 0 && v > 0 && v < 1e9, "unset it or give a positive number of seconds",
          "%s='%s' is not a positive number of seconds", name, s);
    return v;
}

typedef struct {
    const char *name;
    int rank, size;
} launch_info;

/* Whether a launcher started this process, and the rank and size it gave. */
static int detect_launcher(launch_info *li) {
    const char *force = getenv("ASVR_COMM_LAUNCHER");
    if (force && *force) {
        CHECK(strcmp(force, "none") == 0, "ASVR_COMM_LAUNCHER=none ignores the launcher; leave it unset otherwise",
              "ASVR_COMM_LAUNCHER='%s' is not understood", force);
        return 0;
    }
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        li->name = "mpirun";
        li->size = (int)env_long("OMPI_COMM_WORLD_SIZE", 1, 1, INT_MAX);
        li->rank = (int)env_long("OMPI_COMM_WORLD_RANK", 0, 0, INT_MAX);
        return 1;
    }
    if (getenv("SLURM_STEP_ID") && getenv("SLURM_PROCID")) { /* a task of srun, not the batch script */
        li->name = "srun";
        long n = env_long("SLURM_NTASKS", 1, 1, INT_MAX);
        li->size = (int)env_long("SLURM_STEP_NUM_TASKS", n, 1, INT_MAX);
        li->rank = (int)env_long("SLURM_PROCID", 0, 0, INT_MAX);
        return 1;
    }
    if (getenv("PMI_RANK") && getenv("PMI_SIZE")) {
        li->name = "pmi";
        li->size = (int)env_long("PMI_SIZE", 1, 1, INT_MAX);
        li->rank = (int)env_long("PMI_RANK", 0, 0, INT_MAX);
        return 1;
    }
    return 0;
}

static void start_mpi(comm *c, const launch_info *li) {
    c->launcher = li->name;
    comm_mpi_load(c);
    int r = 0, s = 1, lr = 0, ls = 1;
    int rc = c->mpi.init(&r, &s, &lr, &ls);
    if (rc != 0) {
        char why[256];
        c->mpi.error_string(rc, why, sizeof why);
        ASVR_FATAL("check that the launcher and the MPI the plugin was built with are the same (Open MPI's mpirun)",
                   "comm: MPI_Init failed under %s (rank %d of %d): %s", li->name, li->rank, li->size, why);
    }
    c->mpi.version(c->mpi_version, sizeof c->mpi_version);
    CHECK(r == li->rank && s == li->size,
          "launch with the mpirun of the MPI the plugin was built with (or srun --mpi=pmix)",
          "comm: the launcher (%s) started rank %d of %d, but MPI (%s) sees rank %d of %d", li->name, li->rank,
          li->size, c->mpi_version, r, s);
    c->rank = r, c->size = s, c->local_rank = lr, c->local_size = ls;
}

static comm_dev_backend choose_dev_backend(const comm *c, const comm_options *opt) {
    const char *s = opt && opt->device_backend ? opt->device_backend : getenv("ASVR_COMM_DEVICE");
    if (!s || !*s || strcmp(s, "auto") == 0) return c->size > 1 ? COMM_DEV_NCCL : COMM_DEV_LOCAL;
    if (strcmp(s, "nccl") == 0) return COMM_DEV_NCCL;
    CHECK(strcmp(s, "mpi") == 0, "use nccl, mpi (staged through host memory) or auto",
          "comm: device backend '%s' is not known", s);
    return c->plugin ? COMM_DEV_STAGED : COMM_DEV_LOCAL; /* one process alone has nothing to stage */
}

comm *comm_init(const comm_options *opt) {
    CHECK(!comm_live, "create one comm at the start and pass it around", "comm_init called twice in one process");
    comm *c = asvr_calloc(1, sizeof *c, "the communication layer");
    c->size = c->local_size = 1;
    c->launcher = "none";
    launch_info li;
    if (detect_launcher(&li)) start_mpi(c, &li);
    c->timeout_s = opt && opt->timeout_s > 0 ? opt->timeout_s : env_seconds("ASVR_COMM_TIMEOUT", DEFAULT_TIMEOUT_S);
    c->delay_us = env_long("ASVR_COMM_DELAY_US", 0, 0, 600000000L);
    c->device = opt && opt->device >= 0 ? opt->device : (int)env_long("ASVR_LOCAL_DEVICE", c->local_rank, 0, 1 << 20);
    c->dev_backend = choose_dev_backend(c, opt);
    comm_live = 1;
    return c;
}

void comm_free(comm *c) {
    if (!c) return;
    if (c->nccl) comm_nccl_sync(c), comm_nccl_close(c);
    if (c->cuda) comm_cuda_close(c->cuda);
    if (c->plugin) {
        comm_barrier(c);
        comm_mpi_check(c, c->mpi.finalize(), "MPI_Finalize");
    }
    free(c->wide);
    free(c);
    comm_live = 0;
}

int comm_rank(const comm *c) { return c->rank; }
int comm_size(const comm *c) { return c->size; }
int comm_local_rank(const comm *c) { return c->local_rank; }
int comm_local_size(const comm *c) { return c->local_size; }
int comm_device(const comm *c) { return c->device; }
const char *comm_launcher(const comm *c) { return c->launcher; }
double comm_timeout(const comm *c) { return c->timeout_s; }

void comm_set_timeout(comm *c, double seconds) {
    CHECK(seconds > 0, BUG_HINT, "comm_set_timeout(%g): the timeout must be positive", seconds);
    c->timeout_s = seconds;
}

static const char *dev_backend_name(const comm *c) {
#ifndef ASVR_HAVE_CUDA
    return "none (a CPU build)";
#endif
    switch (c->dev_backend) {
    case COMM_DEV_LOCAL: return "device copies (one rank)";
    case COMM_DEV_NCCL: return "nccl";
    case COMM_DEV_STAGED: return "mpi staged through host memory";
    }
    return "?";
}

void comm_print(const comm *c, FILE *f) {
    char nccl[160] = "";
    if (c->nccl) {
        char v[128];
        comm_nccl_version(c, v, sizeof v);
        snprintf(nccl, sizeof nccl, " (%s)", v);
    }
    if (c->plugin)
        fprintf(f, "comm: rank %d of %d (local %d of %d), launcher %s, host backend mpi (%s, plugin %s)", c->rank,
                c->size, c->local_rank, c->local_size, c->launcher, c->mpi_version, c->plugin_path);
    else
        fprintf(f, "comm: rank 0 of 1, no launcher (single process, no MPI)");
    fprintf(f, ", device backend %s%s, device %d, timeout %g s, delay %lld us\n", dev_backend_name(c), nccl,
            c->device, c->timeout_s, (long long)c->delay_us);
}

/* ---- counters ------------------------------------------------------------------------------- */

void comm_get_counts(const comm *c, comm_counts *out) { *out = c->counts; }
void comm_reset_counts(comm *c) { memset(&c->counts, 0, sizeof c->counts); }

const char *comm_kind_name(comm_kind k) {
    static const char *names[COMM_NKINDS] = {"all-reduce",      "reduce-scatter",  "all-gather",
                                             "broadcast",       "barrier",         "host all-reduce",
                                             "host all-gather", "host broadcast"};
    return k >= 0 && k < COMM_NKINDS ? names[k] : "?";
}

/* Numbers the collective, counts it (unless it is the layer's own), notes it for a timeout message
 * and applies the test delay. */
static comm_ticket begin(comm *c, comm_kind kind, size_t bytes, const char *dtype, nn_device dev, int counted) {
    c->seq++;
    if (counted) c->counts.calls[kind]++, c->counts.bytes[kind] += (int64_t)bytes;
    c->cur_kind = kind, c->cur_bytes = bytes, c->cur_dtype = dtype;
    if (c->delay_us > 0) comm_inject_delay(c, dev);
    return c->seq;
}

void comm_inject_delay(comm *c, nn_device dev) {
    if (c->delay_us <= 0) return;
    if (dev == NN_CUDA) {
        if (!c->cuda) comm_cuda_setup(c);
        comm_cuda_delay(c, c->delay_us);
    } else {
        usleep((useconds_t)c->delay_us);
    }
}

/* ---- host memory ---------------------------------------------------------------------------- */

static size_t cm_size(cm_type t) {
    switch (t) {
    case CM_U8: return 1;
    case CM_U16: return 2;
    case CM_I32:
    case CM_F32: return 4;
    case CM_I64:
    case CM_F64: return 8;
    }
    return 1;
}

/* One collective on host memory, already numbered: n elements per rank (the output of a
 * reduce-scatter, the input of an all-gather), the whole buffer otherwise. in == NULL: in place. */
static void host_run(comm *c, comm_kind kind, const void *in, void *out, int64_t n, cm_type t, int root) {
    size_t es = cm_size(t);
    if (c->size == 1) {
        if (in && in != out && (kind == COMM_REDUCE_SCATTER || kind == COMM_ALLGATHER || kind == COMM_HOST_ALLGATHER))
            memmove(out, in, (size_t)n * es);
        return;
    }
    CHECK(n <= INT_MAX, "split the buffer into pieces below 2^31 elements",
          "comm: %s of %lld elements: MPI counts stop at 2^31 - 1", comm_kind_name(kind), (long long)n);
    int rc = 0;
    switch (kind) {
    case COMM_ALLREDUCE:
    case COMM_HOST_ALLREDUCE: rc = c->mpi.start_allreduce(out, (int)n, t); break;
    case COMM_REDUCE_SCATTER: rc = c->mpi.start_reduce_scatter(in, out, (int)n, t); break;
    case COMM_ALLGATHER:
    case COMM_HOST_ALLGATHER: rc = c->mpi.start_allgather(in, out, (int)n, t); break;
    case COMM_BCAST:
    case COMM_HOST_BCAST: rc = c->mpi.start_bcast(out, (int)n, t, root); break;
    case COMM_BARRIER: rc = c->mpi.start_barrier(); break;
    case COMM_NKINDS: break;
    }
    comm_mpi_check(c, rc, "starting the collective");
    comm_mpi_wait(c);
}

static float *wide_buffer(comm *c, size_t n) {
    if (n > c->wide_n) {
        c->wide = asvr_realloc(c->wide, n * sizeof(float), "comm: bf16 sums widened to f32");
        c->wide_n = n;
    }
    return c->wide;
}

static void bf16_widen(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

static void bf16_narrow(uint16_t *dst, const float *src, size_t n) { /* round to nearest even */
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        if ((u & 0x7F800000u) == 0x7F800000u) dst[i] = (uint16_t)((u >> 16) | ((u & 0xFFFFu) ? 0x40u : 0u));
        else dst[i] = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }
}

static cm_type host_type(nn_dtype d) {
    switch (d) {
    case NN_F32: return CM_F32;
    case NN_I32: return CM_I32;
    case NN_U8: return CM_U8;
    default: return CM_U16; /* bf16, f16, u16: moved as 16-bit words; bf16 sums are widened */
    }
}

/* A tensor collective on host memory (the staged backend's too). Sums of bf16 run in f32. */
static void host_tensor(comm *c, comm_kind kind, const void *in, void *out, int64_t n, nn_dtype dt, int root) {
    int is_sum = kind == COMM_ALLREDUCE || kind == COMM_REDUCE_SCATTER;
    if (!(is_sum && dt == NN_BF16 && c->size > 1)) {
        host_run(c, kind, in, out, n, host_type(dt), root);
        return;
    }
    size_t full = kind == COMM_REDUCE_SCATTER ? (size_t)n * (size_t)c->size : (size_t)n;
    float *w = wide_buffer(c, full);
    bf16_widen(w, in ? in : out, full);
    host_run(c, kind, NULL, w, n, CM_F32, root); /* in place: a reduce-scatter's piece lands at w[0..n) */
    bf16_narrow(out, w, (size_t)n);
}

/* ---- tensors -------------------------------------------------------------------------------- */

static void check_tensor(const char *fn, const tensor *t, const char *role) {
    CHECK(t && t->data, BUG_HINT, "comm_%s: %s '%s' has no data", fn, role, t ? t->name : "(null)");
    CHECK(t->dtype >= 0 && t->dtype < NN_NDTYPES, BUG_HINT, "comm_%s: %s '%s' has a bad dtype", fn, role, t->name);
#ifndef ASVR_HAVE_CUDA
    CHECK(t->device == NN_CPU, "build with the CUDA backend (nvcc on PATH) for device tensors",
          "comm_%s: %s '%s' lives on cuda, and this build has no CUDA backend", fn, role, t->name);
#endif
}

static void check_pair(const char *fn, const tensor *out, const tensor *in) {
    check_tensor(fn, out, "output");
    check_tensor(fn, in, "input");
    CHECK(out->dtype == in->dtype && out->device == in->device, BUG_HINT,
          "comm_%s: '%s' (%s on %s) and '%s' (%s on %s) differ in dtype or device", fn, out->name,
          nn_dtype_name(out->dtype), nn_device_name(out->device), in->name, nn_dtype_name(in->dtype),
          nn_device_name(in->device));
}

static void check_sum_dtype(const char *fn, const tensor *t) {
    CHECK(t->dtype == NN_F32 || t->dtype == NN_BF16 || t->dtype == NN_I32,
          "sum f32, bf16 or i32 tensors", "comm_%s: '%s' is %s, which the layer does not sum", fn, t->name,
          nn_dtype_name(t->dtype));
}

/* Whether piece's bytes overlap full's; if they do, piece must be exactly piece `rank` of full. */
static int check_overlap(const char *fn, const tensor *piece, const tensor *full, int rank) {
    uintptr_t p = (uintptr_t)piece->data, f = (uintptr_t)full->data;
    size_t pn = tensor_nbytes(piece), fn_bytes = tensor_nbytes(full);
    if (p + pn <= f || f + fn_bytes <= p) return 0;
    CHECK(p == f + (size_t)rank * pn, BUG_HINT,
          "comm_%s: '%s' overlaps '%s' but is not this rank's piece (offset %lld bytes, expected %zu)", fn,
          piece->name, full->name, (long long)((intptr_t)p - (intptr_t)f), (size_t)rank * pn);
    return 1;
}

static void ensure_cuda(comm *c) {
    if (!c->cuda) comm_cuda_setup(c);
}

/* A validated tensor collective: numbered, counted, then run by the tensors' backend. */
static comm_ticket run(comm *c, comm_kind kind, const tensor *ref, const void *in, void *out, int64_t n, int root,
                       size_t bytes) {
    nn_dtype dt = ref->dtype;
    size_t es = nn_dtype_size(dt), pieces = kind == COMM_REDUCE_SCATTER || kind == COMM_ALLGATHER ? (size_t)c->size : 1;
    if (ref->device == NN_CUDA) ensure_cuda(c);
    comm_ticket t = begin(c, kind, bytes, nn_dtype_name(dt), ref->device, 1);
    if (ref->device == NN_CPU) {
        host_tensor(c, kind, in, out, n, dt, root);
        return t;
    }
    switch (c->dev_backend) {
    case COMM_DEV_LOCAL:
        if (in && in != out) comm_cuda_copy(c, out, in, (size_t)n * es);
        break;
    case COMM_DEV_NCCL:
        comm_nccl_run(c, kind, in ? in : out, out, (size_t)n, dt, root, t);
        break;
    case COMM_DEV_STAGED: {
        size_t in_bytes = kind == COMM_REDUCE_SCATTER ? (size_t)n * es * pieces : (size_t)n * es;
        size_t out_bytes = kind == COMM_ALLGATHER ? (size_t)n * es * pieces : (size_t)n * es;
        void *hin = comm_cuda_pinned(c, 0, in_bytes), *hout = comm_cuda_pinned(c, 1, out_bytes);
        int receives_only = kind == COMM_BCAST && c->rank != root;
        if (!receives_only) comm_cuda_download(c, hin, in ? in : out, in_bytes);
        if (kind == COMM_ALLREDUCE || kind == COMM_BCAST) hout = hin;
        host_tensor(c, kind, hin, hout, n, dt, root);
        if (!(kind == COMM_BCAST && c->rank == root)) comm_cuda_upload(c, out, hout, out_bytes);
        break;
    }
    }
    return t;
}

comm_ticket comm_allreduce(comm *c, tensor *t) {
    check_tensor("allreduce", t, "tensor");
    check_sum_dtype("allreduce", t);
    return run(c, COMM_ALLREDUCE, t, NULL, t->data, tensor_numel(t), 0, tensor_nbytes(t));
}

comm_ticket comm_reduce_scatter(comm *c, tensor *out, const tensor *in) {
    check_pair("reduce_scatter", out, in);
    check_sum_dtype("reduce_scatter", in);
    int64_t n = tensor_numel(out);
    CHECK(tensor_numel(in) == n * c->size, BUG_HINT,
          "comm_reduce_scatter: input '%s' has %lld elements, not size %d x output '%s' %lld", in->name,
          (long long)tensor_numel(in), c->size, out->name, (long long)n);
    int inplace = check_overlap("reduce_scatter", out, in, c->rank);
    if (inplace && c->size == 1) return run(c, COMM_REDUCE_SCATTER, in, NULL, out->data, n, 0, tensor_nbytes(in));
    if (inplace && in->device == NN_CPU) { /* MPI's in place leaves the piece at the start: move it */
        comm_ticket t = run(c, COMM_REDUCE_SCATTER, in, NULL, in->data, n, 0, tensor_nbytes(in));
        if (c->rank) memmove(out->data, in->data, tensor_nbytes(out));
        return t;
    }
    return run(c, COMM_REDUCE_SCATTER, in, in->data, out->data, n, 0, tensor_nbytes(in));
}

comm_ticket comm_allgather(comm *c, tensor *out, const tensor *in) {
    check_pair("allgather", out, in);
    int64_t n = tensor_numel(in);
    CHECK(tensor_numel(out) == n * c->size, BUG_HINT,
          "comm_allgather: output '%s' has %lld elements, not size %d x input '%s' %lld", out->name,
          (long long)tensor_numel(out), c->size, in->name, (long long)n);
    int inplace = check_overlap("allgather", in, out, c->rank);
    /* MPI takes in place as MPI_IN_PLACE; NCCL and the staged copies see it from the pointers */
    const void *src = inplace && in->device == NN_CPU ? NULL : in->data;
    return run(c, COMM_ALLGATHER, in, src, out->data, n, 0, tensor_nbytes(out));
}

comm_ticket comm_allgather_inplace(comm *c, tensor *full) {
    check_tensor("allgather_inplace", full, "tensor");
    int64_t total = tensor_numel(full);
    CHECK(total % c->size == 0, BUG_HINT, "comm_allgather_inplace: '%s' has %lld elements, not a multiple of size %d",
          full->name, (long long)total, c->size);
    int64_t n = total / c->size;
    tensor piece = *full;
    piece.ndim = 1, piece.shape[0] = n;
    piece.data = (char *)full->data + (size_t)c->rank * (size_t)n * nn_dtype_size(full->dtype);
    return comm_allgather(c, full, &piece);
}

comm_ticket comm_bcast(comm *c, tensor *t, int root) {
    check_tensor("bcast", t, "tensor");
    CHECK(root >= 0 && root < c->size, BUG_HINT, "comm_bcast: root %d is not a rank of %d", root, c->size);
    return run(c, COMM_BCAST, t, NULL, t->data, tensor_numel(t), root, tensor_nbytes(t));
}

void comm_barrier(comm *c) {
    begin(c, COMM_BARRIER, 0, "-", NN_CPU, 1);
    host_run(c, COMM_BARRIER, NULL, NULL, 0, CM_U8, 0);
}

/* ---- host values ---------------------------------------------------------------------------- */

void comm_allreduce_f64(comm *c, double *v, int n) {
    CHECK(n >= 0 && (v || n == 0), BUG_HINT, "comm_allreduce_f64: bad buffer (%d values)", n);
    begin(c, COMM_HOST_ALLREDUCE, (size_t)n * 8, "f64", NN_CPU, 1);
    host_run(c, COMM_HOST_ALLREDUCE, NULL, v, n, CM_F64, 0);
}

void comm_allreduce_i64(comm *c, int64_t *v, int n) {
    CHECK(n >= 0 && (v || n == 0), BUG_HINT, "comm_allreduce_i64: bad buffer (%d values)", n);
    begin(c, COMM_HOST_ALLREDUCE, (size_t)n * 8, "i64", NN_CPU, 1);
    host_run(c, COMM_HOST_ALLREDUCE, NULL, v, n, CM_I64, 0);
}

/* The layer's own exchanges (NCCL's id, the device check) pass counted = 0. */
void comm_allgather_bytes_ex(comm *c, void *all, const void *mine, size_t n, int counted) {
    CHECK(all && (mine || n == 0), BUG_HINT, "comm_allgather_bytes: NULL buffer");
    begin(c, COMM_HOST_ALLGATHER, n * (size_t)c->size, "bytes", NN_CPU, counted);
    const char *m = mine;
    int inplace = m == (char *)all + (size_t)c->rank * n;
    host_run(c, COMM_HOST_ALLGATHER, inplace ? NULL : mine, all, (int64_t)n, CM_U8, 0);
}

void comm_bcast_bytes_ex(comm *c, void *buf, size_t n, int root, int counted) {
    CHECK(buf || n == 0, BUG_HINT, "comm_bcast_bytes: NULL buffer");
    CHECK(root >= 0 && root < c->size, BUG_HINT, "comm_bcast_bytes: root %d is not a rank of %d", root, c->size);
    begin(c, COMM_HOST_BCAST, n, "bytes", NN_CPU, counted);
    host_run(c, COMM_HOST_BCAST, NULL, buf, (int64_t)n, CM_U8, root);
}

void comm_allgather_bytes(comm *c, void *all, const void *mine, size_t n) { comm_allgather_bytes_ex(c, all, mine, n, 1); }
void comm_bcast_bytes(comm *c, void *buf, size_t n, int root) { comm_bcast_bytes_ex(c, buf, n, root, 1); }

/* ---- CUDA ordering -------------------------------------------------------------------------- */

void comm_cuda_setup(comm *c) {
    if (c->cuda) return;
    c->cuda = comm_cuda_open(c);
    if (c->dev_backend == COMM_DEV_NCCL) c->nccl = comm_nccl_open(c);
}

void comm_set_stream(comm *c, void *cuda_stream) {
    if (c->nccl) comm_nccl_sync(c); /* nothing in flight against the old stream */
    c->stream = cuda_stream;
}

void comm_set_deferred(comm *c, int on) { c->deferred = on != 0; }
comm_ticket comm_last_ticket(const comm *c) { return c->seq; }

void comm_wait(comm *c, comm_ticket t) {
    if (c->nccl) comm_nccl_wait(c, t);
}

void comm_sync(comm *c) {
    if (c->nccl) comm_nccl_sync(c);
}

/* ---- a build without CUDA ------------------------------------------------------------------- */
#ifndef ASVR_HAVE_CUDA
static ASVR_NORETURN void no_cuda(const comm *c) {
    ASVR_FATAL("build with the CUDA backend (nvcc on PATH) to use GPUs", "comm: rank %d: this build has no CUDA backend",
               c->rank);
}
int comm_cuda_device_count(void) { return 0; }
struct comm_cuda *comm_cuda_open(comm *c) { no_cuda(c); }
void comm_cuda_close(struct comm_cuda *d) { (void)d; }
void comm_cuda_delay(comm *c, int64_t us) { no_cuda(c); }
void comm_cuda_copy(comm *c, void *dst, const void *src, size_t bytes) { no_cuda(c); }
void comm_cuda_download(comm *c, void *host, const void *dev, size_t bytes) { no_cuda(c); }
void comm_cuda_upload(comm *c, void *dev, const void *host, size_t bytes) { no_cuda(c); }
void *comm_cuda_pinned(comm *c, int slot, size_t bytes) { no_cuda(c); }
int comm_nccl_compiled(void) { return 0; }
struct comm_nccl *comm_nccl_open(comm *c) { no_cuda(c); }
void comm_nccl_close(comm *c) { (void)c; }
void comm_nccl_version(const comm *c, char *buf, size_t n) { snprintf(buf, n, "no NCCL"); }
void comm_nccl_run(comm *c, comm_kind kind, const void *in, void *out, size_t count, nn_dtype dtype, int root,
                   comm_ticket t) {
    no_cuda(c);
}
void comm_nccl_wait(comm *c, comm_ticket t) { (void)c; }
void comm_nccl_sync(comm *c) { (void)c; }
#endif
