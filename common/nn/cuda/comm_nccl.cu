// comm_nccl.cu — the NCCL backend of the communication layer (nn/comm.h): collectives on CUDA
// tensors on a communication stream of their own, ordered against the compute stream with events,
// and a watchdog thread that ends the process when one overstays the timeout or NCCL reports an
// asynchronous error (a collective that waits for a dead rank never ends by itself).
// libnccl.so.2 is loaded with dlopen when the backend starts ($ASVR_NCCL_LIB, the library path, the
// CUDA toolkit this was built with), so a CUDA build starts on a machine without NCCL; nccl.h
// gives the types. Compiled as stubs that exit when the build found no nccl.h (ASVR_HAVE_NCCL unset),
// as in the CPU stand-in of dev/cuda_emu.
// Not for: anything but nn/comm*.c.
#include <stdio.h>
#include <string.h>

#include "nn/comm_internal.h"

#define NO_NCCL_HINT "rebuild where nccl.h is found (it ships with the CUDA toolkit), or use ASVR_COMM_DEVICE=mpi"

#ifdef ASVR_HAVE_NCCL
#include <dlfcn.h>
#include <nccl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "nn/cuda/cuda_common.cuh"

#define RING 256 // collectives in flight before an issue waits for the oldest

struct nccl_fns {
    decltype(&ncclGetVersion) GetVersion;
    decltype(&ncclGetUniqueId) GetUniqueId;
    decltype(&ncclCommInitRank) CommInitRank;
    decltype(&ncclCommDestroy) CommDestroy;
    decltype(&ncclCommAbort) CommAbort;
    decltype(&ncclCommGetAsyncError) CommGetAsyncError;
    decltype(&ncclGetErrorString) GetErrorString;
    decltype(&ncclAllReduce) AllReduce;
    decltype(&ncclReduceScatter) ReduceScatter;
    decltype(&ncclAllGather) AllGather;
    decltype(&ncclBroadcast) Broadcast;
};

struct pending_op {
    comm_ticket t;
    comm_kind kind;
    size_t bytes;
    const char *dtype;
    double issued;
};

struct comm_nccl {
    nccl_fns f;
    void *lib;
    char lib_name[512];
    int version;
    ncclComm_t nc;
    cudaStream_t stream;     // the communication stream
    cudaEvent_t ready;       // recorded on the compute stream before each collective
    cudaEvent_t done[RING];  // recorded on the communication stream after each
    pending_op ops[RING];    // in issue order from head
    int head, count;
    pthread_mutex_t mu;      // ops/head/count/nc, shared with the watchdog
    pthread_t dog;
    int dog_running, stop;
    double init_started;     // > 0 while ncclCommInitRank runs
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// ---- loading -----------------------------------------------------------------------------------
static int try_lib(comm_nccl *n, const char *path, char *why, size_t len) {
    n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    size_t used = strlen(why);
    if (!n->lib) {
        snprintf(why + used, len - used, "  %s: %s\n", path, dlerror());
        return 0;
    }
    snprintf(n->lib_name, sizeof n->lib_name, "%s", path);
    return 1;
}

template <class F> static void load_sym(comm *c, comm_nccl *n, F *out, const char *name) {
    void *p = dlsym(n->lib, name);
    if (!p) comm_die(c, "install NCCL 2.12 or newer", "%s has no %s", n->lib_name, name);
    memcpy(out, &p, sizeof p);
}

static void load_nccl(comm *c, comm_nccl *n) {
    char why[2048] = "";
    const char *env = getenv("ASVR_NCCL_LIB");
    int ok = env && *env ? try_lib(n, env, why, sizeof why) : try_lib(n, "libnccl.so.2", why, sizeof why);
#ifdef ASVR_NCCL_DIR
    if (!ok && !(env && *env)) ok = try_lib(n, ASVR_NCCL_DIR "/libnccl.so.2", why, sizeof why);
#endif
    if (!ok)
        comm_die(c,
                 "NCCL ships with the CUDA toolkit: add its lib folder to LD_LIBRARY_PATH or set ASVR_NCCL_LIB; or "
                 "use ASVR_COMM_DEVICE=mpi (staged through host memory)",
                 "the NCCL backend needs libnccl.so.2, which does not load:\n%s", why);
    load_sym(c, n, &n->f.GetVersion, "ncclGetVersion");
    load_sym(c, n, &n->f.GetUniqueId, "ncclGetUniqueId");
    load_sym(c, n, &n->f.CommInitRank, "ncclCommInitRank");
    load_sym(c, n, &n->f.CommDestroy, "ncclCommDestroy");
    load_sym(c, n, &n->f.CommAbort, "ncclCommAbort");
    load_sym(c, n, &n->f.CommGetAsyncError, "ncclCommGetAsyncError");
    load_sym(c, n, &n->f.GetErrorString, "ncclGetErrorString");
    load_sym(c, n, &n->f.AllReduce, "ncclAllReduce");
    load_sym(c, n, &n->f.ReduceScatter, "ncclReduceScatter");
    load_sym(c, n, &n->f.AllGather, "ncclAllGather");
    load_sym(c, n, &n->f.Broadcast, "ncclBroadcast");
    if (n->f.GetVersion(&n->version) != ncclSuccess) n->version = 0;
}

// ---- failing -----------------------------------------------------------------------------------
static const char *nccl_hint(ncclResult_t r) {
    switch (r) {
    case ncclInvalidUsage:
        return "NCCL refuses this use; two ranks on one GPU need ASVR_COMM_DEVICE=mpi (NCCL_DEBUG=WARN says more)";
    case ncclRemoteError: return "a peer rank failed: read its log (NCCL_DEBUG=WARN says more)";
    case ncclSystemError:
        return "a system call failed (network, or /dev/shm too small in a container; NCCL_DEBUG=WARN says more)";
    case ncclUnhandledCudaError: return "a CUDA error inside NCCL: check the GPU (NCCL_DEBUG=WARN says more)";
    default: return "NCCL_DEBUG=WARN says more";
    }
}

static void nccl_check(comm *c, ncclResult_t r, const char *call) {
    if (r != ncclSuccess) comm_die(c, nccl_hint(r), "%s: %s", call, c->nccl->f.GetErrorString(r));
}

// The watchdog's (and comm_sync's) way out: the message, then the communicator aborted so no kernel
// spins on, then exit 1 (the launcher ends the other ranks). alarm() bounds a hanging abort.
static __attribute__((noreturn)) void nccl_fail(comm *c, const char *fmt, ...) {
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "asvr: fatal: comm: rank %d of %d: %s\n", c->rank, c->size, what);
    fprintf(stderr, "asvr: hint: a rank that died, hangs or runs far behind stops every rank: read the log of the "
                    "other ranks; ASVR_COMM_TIMEOUT raises the limit for legitimately slow steps\n");
    fflush(stderr);
    alarm(10);
    if (c->nccl && c->nccl->nc) c->nccl->f.CommAbort(c->nccl->nc);
    _exit(1);
}

// ---- the ring of collectives in flight ---------------------------------------------------------
static int slot_at(const comm_nccl *n, int i) { return (n->head + i) % RING; }

// Drops the completed collectives from the front; returns cudaSuccess or the CUDA error seen.
static cudaError_t reap(comm_nccl *n) {
    while (n->count > 0) {
        cudaError_t e = cudaEventQuery(n->done[n->head]);
        if (e == cudaErrorNotReady) return cudaSuccess;
        if (e != cudaSuccess) return e;
        n->head = slot_at(n, 1);
        n->count--;
    }
    return cudaSuccess;
}

static void describe_op(const pending_op *op, char *buf, size_t len) {
    char b[32];
    snprintf(buf, len, "NCCL %s #%llu (%s %s)", comm_kind_name(op->kind), (unsigned long long)op->t,
             comm_fmt_bytes(op->bytes, b, sizeof b), op->dtype);
}

// With n->mu held: ends the process when the oldest collective overstays or NCCL reports an error.
static void check_health(comm *c, comm_nccl *n) {
    double now = now_s();
    if (n->init_started > 0 && now - n->init_started > c->timeout_s)
        nccl_fail(c, "the NCCL communicator's setup did not complete within %.1f s (device %d)", c->timeout_s, c->device);
    cudaError_t e = reap(n);
    if (e != cudaSuccess) nccl_fail(c, "CUDA error while NCCL ran: %s", cudaGetErrorString(e));
    if (n->count > 0 && now - n->ops[n->head].issued > c->timeout_s) {
        char what[160];
        describe_op(&n->ops[n->head], what, sizeof what);
        nccl_fail(c, "%s did not complete within %.1f s (device %d)", what, now - n->ops[n->head].issued, c->device);
    }
    ncclResult_t ae = ncclSuccess;
    if (n->nc && n->f.CommGetAsyncError(n->nc, &ae) == ncclSuccess && ae != ncclSuccess && ae != ncclInProgress)
        nccl_fail(c, "NCCL reports an asynchronous error: %s (%s)", n->f.GetErrorString(ae), nccl_hint(ae));
}

static void *watchdog(void *arg) {
    comm *c = (comm *)arg;
    comm_nccl *n = c->nccl;
    if (cudaSetDevice(c->device) != cudaSuccess) return NULL;
    double period = c->timeout_s / 20;
    period = period < 0.01 ? 0.01 : period > 0.2 ? 0.2 : period;
    while (!__atomic_load_n(&n->stop, __ATOMIC_ACQUIRE)) {
        usleep((useconds_t)(period * 1e6));
        pthread_mutex_lock(&n->mu);
        check_health(c, n);
        pthread_mutex_unlock(&n->mu);
    }
    return NULL;
}

// Records the done event of collective t on the communication stream; returns its slot.
static int push(comm *c, comm_nccl *n, comm_ticket t) {
    pthread_mutex_lock(&n->mu);
    for (;;) {
        check_health(c, n);
        if (n->count < RING) break;
        pthread_mutex_unlock(&n->mu); // full: let the oldest finish
        usleep(50);
        pthread_mutex_lock(&n->mu);
    }
    int s = slot_at(n, n->count);
    CHECK_CUDA(cudaEventRecord(n->done[s], n->stream));
    n->ops[s] = pending_op{t, c->cur_kind, c->cur_bytes, c->cur_dtype, now_s()};
    n->count++;
    pthread_mutex_unlock(&n->mu);
    return s;
}

// ---- setup -------------------------------------------------------------------------------------
struct rank_place {
    uint64_t host;
    char bus[32];
};

static uint64_t host_hash(void) {
    char name[256] = "";
    gethostname(name, sizeof name - 1);
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h;
}

// NCCL refuses two ranks on one GPU deep inside its setup; say so first, naming both ranks.
static void check_one_gpu_per_rank(comm *c) {
    rank_place me;
    memset(&me, 0, sizeof me);
    me.host = host_hash();
    CHECK_CUDA(cudaDeviceGetPCIBusId(me.bus, (int)sizeof me.bus, c->device));
    rank_place *all = (rank_place *)asvr_calloc((size_t)c->size, sizeof *all, "comm: rank places");
    comm_allgather_bytes_ex(c, all, &me, sizeof me, 0);
    for (int i = 0; i < c->size; i++)
        for (int j = i + 1; j < c->size; j++)
            if (all[i].host == all[j].host && strcmp(all[i].bus, all[j].bus) == 0)
                comm_die(c,
                         "give each rank its own GPU (ASVR_LOCAL_DEVICE, CUDA_VISIBLE_DEVICES), or let ranks share "
                         "one with ASVR_COMM_DEVICE=mpi (staged through host memory)",
                         "ranks %d and %d both use GPU %s on one host, and NCCL needs one GPU per rank", i, j,
                         all[i].bus);
    free(all);
}

extern "C" int comm_nccl_compiled(void) { return 1; }

extern "C" struct comm_nccl *comm_nccl_open(comm *c) {
    comm_nccl *n = (comm_nccl *)asvr_calloc(1, sizeof *n, "comm: NCCL state");
    c->nccl = n;
    load_nccl(c, n);
    if (c->size > 1) check_one_gpu_per_rank(c);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0) nccl_check(c, n->f.GetUniqueId(&id), "ncclGetUniqueId");
    comm_bcast_bytes_ex(c, &id, sizeof id, 0, 0);
    CHECK_CUDA(cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
    CHECK_CUDA(cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming));
    for (int i = 0; i < RING; i++) CHECK_CUDA(cudaEventCreateWithFlags(&n->done[i], cudaEventDisableTiming));
    CHECK(pthread_mutex_init(&n->mu, NULL) == 0, "", "comm: pthread_mutex_init failed");
    n->init_started = now_s();
    CHECK(pthread_create(&n->dog, NULL, watchdog, c) == 0, "raise the process's thread limit",
          "comm: cannot start the NCCL watchdog thread");
    n->dog_running = 1;
    ncclComm_t nc = NULL;
    nccl_check(c, n->f.CommInitRank(&nc, c->size, id, c->rank), "ncclCommInitRank");
    pthread_mutex_lock(&n->mu);
    n->nc = nc;
    n->init_started = 0;
    pthread_mutex_unlock(&n->mu);
    return n;
}

extern "C" void comm_nccl_close(comm *c) {
    comm_nccl *n = c->nccl;
    if (!n) return;
    if (n->dog_running) {
        __atomic_store_n(&n->stop, 1, __ATOMIC_RELEASE);
        pthread_join(n->dog, NULL);
    }
    if (n->nc) nccl_check(c, n->f.CommDestroy(n->nc), "ncclCommDestroy");
    for (int i = 0; i < RING; i++) CHECK_CUDA(cudaEventDestroy(n->done[i]));
    CHECK_CUDA(cudaEventDestroy(n->ready));
    CHECK_CUDA(cudaStreamDestroy(n->stream));
    pthread_mutex_destroy(&n->mu);
    free(n); // the library stays loaded: NCCL's threads may still be unwinding
    c->nccl = NULL;
}

extern "C" void comm_nccl_version(const comm *c, char *buf, size_t len) {
    const comm_nccl *n = c->nccl;
    int v = n->version;
    snprintf(buf, len, "NCCL %d.%d.%d, %s", v / 10000, v / 100 % 100, v % 100, n->lib_name);
}

// ---- collectives -------------------------------------------------------------------------------
static ncclDataType_t sum_type(nn_dtype d) {
    return d == NN_BF16 ? ncclBfloat16 : d == NN_I32 ? ncclInt32 : ncclFloat32; // comm.c allows no others
}

extern "C" void comm_nccl_run(comm *c, comm_kind kind, const void *in, void *out, size_t count, nn_dtype dtype,
                              int root, comm_ticket t) {
    comm_nccl *n = c->nccl;
    cudaStream_t cs = (cudaStream_t)c->stream;
    CHECK_CUDA(cudaEventRecord(n->ready, cs));
    CHECK_CUDA(cudaStreamWaitEvent(n->stream, n->ready, 0));
    int sum = kind == COMM_ALLREDUCE || kind == COMM_REDUCE_SCATTER;
    ncclDataType_t ty = sum ? sum_type(dtype) : ncclUint8; // moves count bytes-wise
    size_t k = sum ? count : count * nn_dtype_size(dtype);
    switch (kind) {
    case COMM_ALLREDUCE: nccl_check(c, n->f.AllReduce(in, out, k, ty, ncclSum, n->nc, n->stream), "ncclAllReduce"); break;
    case COMM_REDUCE_SCATTER:
        nccl_check(c, n->f.ReduceScatter(in, out, k, ty, ncclSum, n->nc, n->stream), "ncclReduceScatter");
        break;
    case COMM_ALLGATHER: nccl_check(c, n->f.AllGather(in, out, k, ty, n->nc, n->stream), "ncclAllGather"); break;
    case COMM_BCAST: nccl_check(c, n->f.Broadcast(in, out, k, ty, root, n->nc, n->stream), "ncclBroadcast"); break;
    default: comm_die(c, "a bug in nn/comm.c", "%s does not run on NCCL", comm_kind_name(kind));
    }
    int s = push(c, n, t);
    if (!c->deferred) CHECK_CUDA(cudaStreamWaitEvent(cs, n->done[s], 0));
}

extern "C" void comm_nccl_wait(comm *c, comm_ticket t) {
    comm_nccl *n = c->nccl;
    pthread_mutex_lock(&n->mu);
    check_health(c, n);
    int pick = -1; // the latest collective in flight issued at or before t: the stream covers the earlier ones
    for (int i = 0; i < n->count && n->ops[slot_at(n, i)].t <= t; i++) pick = slot_at(n, i);
    if (pick >= 0) CHECK_CUDA(cudaStreamWaitEvent((cudaStream_t)c->stream, n->done[pick], 0));
    pthread_mutex_unlock(&n->mu);
}

extern "C" void comm_nccl_sync(comm *c) {
    comm_nccl *n = c->nccl;
    for (;;) {
        pthread_mutex_lock(&n->mu);
        check_health(c, n);
        int left = n->count;
        pthread_mutex_unlock(&n->mu);
        if (!left) return;
        usleep(50);
    }
}

#else // ---- a build without nccl.h ------------------------------------------------------------------
extern "C" int comm_nccl_compiled(void) { return 0; }
extern "C" struct comm_nccl *comm_nccl_open(comm *c) {
    comm_die(c, NO_NCCL_HINT, "this build of asvr has no NCCL backend");
}
extern "C" void comm_nccl_close(comm *c) { (void)c; }
extern "C" void comm_nccl_version(const comm *c, char *buf, size_t len) { snprintf(buf, len, "no NCCL"); }
extern "C" void comm_nccl_run(comm *c, comm_kind kind, const void *in, void *out, size_t count, nn_dtype dtype,
                              int root, comm_ticket t) {
    comm_die(c, NO_NCCL_HINT, "this build of asvr has no NCCL backend");
}
extern "C" void comm_nccl_wait(comm *c, comm_ticket t) { (void)c; }
extern "C" void comm_nccl_sync(comm *c) { (void)c; }
#endif
