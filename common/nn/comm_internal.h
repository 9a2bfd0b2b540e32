/* comm_internal.h — what the files of the communication layer share: the state behind the opaque
 * `comm` of nn/comm.h, the MPI plugin's loading and polling (comm_mpi.c), and the CUDA side
 * (nn/cuda/comm_cuda.cu: device choice, staging, copies, the delay kernel; nn/cuda/comm_nccl.cu:
 * the NCCL backend and its watchdog).
 * Not for: code outside nn/comm*.c and those two .cu files (use nn/comm.h).
 */
#ifndef ASVR_NN_COMM_INTERNAL_H
#define ASVR_NN_COMM_INTERNAL_H

#include "nn/comm.h"
#include "nn/comm_mpi_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How collectives on CUDA tensors run. */
typedef enum {
    COMM_DEV_LOCAL,  /* size 1: device copies, nothing else */
    COMM_DEV_NCCL,   /* NCCL on the communication stream */
    COMM_DEV_STAGED, /* copied to pinned host memory, MPI there, copied back */
} comm_dev_backend;

struct comm_cuda;
struct comm_nccl;

struct comm {
    int rank, size, local_rank, local_size, device;
    const char *launcher;
    double timeout_s;
    int64_t delay_us;
    comm_dev_backend dev_backend;
    int deferred;
    comm_ticket seq;        /* collectives issued, the layer's own included */
    comm_counts counts;
    /* the collective in progress, for the timeout message */
    comm_kind cur_kind;
    size_t cur_bytes;
    const char *cur_dtype;
    /* MPI (NULL handle: a single process without a launcher) */
    void *plugin;
    comm_mpi_api mpi;
    char plugin_path[1024];
    char mpi_version[160];
    /* CUDA */
    void *stream; /* compute stream (cudaStream_t), NULL: the legacy default stream */
    struct comm_cuda *cuda;
    struct comm_nccl *nccl;
    /* host scratch: bf16 sums widened to f32 */
    float *wide;
    size_t wide_n;
};

/* ---- comm.c --------------------------------------------------------------------------------- */
/* comm_allgather_bytes / comm_bcast_bytes; counted = 0 for the layer's own exchanges (NCCL's id). */
void comm_allgather_bytes_ex(comm *c, void *all, const void *mine, size_t n, int counted);
void comm_bcast_bytes_ex(comm *c, void *buf, size_t n, int root, int counted);

/* ---- comm_mpi.c --------------------------------------------------------------------------------- */
/* Finds and loads the plugin (see nn/comm.h for the search order) into c->mpi; exits naming every
 * place tried and the loader's reason when it cannot. */
void comm_mpi_load(comm *c);
/* Polls the started collective (c->seq, c->cur_*) until it completes; past the timeout, asks the
 * other ranks where they are, prints what it learnt and aborts the job. */
void comm_mpi_wait(comm *c);
/* rc of a plugin call: 0 returns, anything else ends the job with MPI's reason. */
void comm_mpi_check(comm *c, int rc, const char *call);
/* Prints "asvr: fatal: comm: rank r of n: <message>" and the hint, then ends the whole job: MPI_Abort
 * when MPI is loaded (every rank goes), exit(1) otherwise. */
__attribute__((noreturn, format(printf, 3, 4))) void comm_die(comm *c, const char *hint, const char *fmt, ...);
/* "4.0 MiB" into buf. */
const char *comm_fmt_bytes(size_t bytes, char *buf, size_t n);

/* ---- nn/cuda/comm_cuda.cu (in a build without CUDA: stubs at the end of comm.c that exit) ------ */
int comm_cuda_device_count(void);
/* Makes the device current and returns the CUDA side's state. */
struct comm_cuda *comm_cuda_open(comm *c);
void comm_cuda_close(struct comm_cuda *d);
/* Spins a kernel for `us` microseconds on the compute stream. */
void comm_cuda_delay(comm *c, int64_t us);
/* Device-to-device copy on the compute stream (asynchronous). */
void comm_cuda_copy(comm *c, void *dst, const void *src, size_t bytes);
/* Device -> host after the compute stream's queued work, and host -> device; both wait for the copy. */
void comm_cuda_download(comm *c, void *host, const void *dev, size_t bytes);
void comm_cuda_upload(comm *c, void *dev, const void *host, size_t bytes);
/* A grow-only pinned host buffer per slot (0 or 1). */
void *comm_cuda_pinned(comm *c, int slot, size_t bytes);

/* ---- nn/cuda/comm_nccl.cu (stubs that exit when the build has no NCCL) ------------------------- */
int comm_nccl_compiled(void);
/* Loads libnccl, creates the communication stream and the communicator (collective: rank 0's id
 * goes to the others with comm_bcast_bytes) and starts the watchdog. */
struct comm_nccl *comm_nccl_open(comm *c);
void comm_nccl_close(comm *c);
/* "NCCL 2.28.9 (libnccl.so.2)" */
void comm_nccl_version(const comm *c, char *buf, size_t n);
/* Enqueues collective `kind` (ticket t) after the compute stream's work: count elements of dtype
 * for every rank (n of reduce-scatter's output and all-gather's input). In place as nn/comm.h says. */
void comm_nccl_run(comm *c, comm_kind kind, const void *in, void *out, size_t count, nn_dtype dtype, int root,
                   comm_ticket t);
void comm_nccl_wait(comm *c, comm_ticket t);
void comm_nccl_sync(comm *c);

#ifdef __cplusplus
}
#endif
#endif
