/* comm.h — the communication layer of data-parallel training: which rank this process is, and the
 * collectives (sum all-reduce, reduce-scatter, all-gather, broadcast, barrier) on tensors and on a
 * few host values, with timeouts that end every rank instead of hanging.
 *
 * Ranks. comm_init() looks for a launcher's variables: Open MPI's mpirun (OMPI_COMM_WORLD_SIZE,
 * _RANK, _LOCAL_RANK), Slurm's srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID inside a job step) or a
 * PMI launcher (PMI_RANK, PMI_SIZE). Without one the process is rank 0 of 1 and needs no MPI at all:
 * every collective is a copy or nothing, and no MPI library is loaded. With one, comm_init loads the
 * MPI plugin (libasvr_comm_mpi.so, built when the build found MPI) with dlopen, from
 * $ASVR_COMM_MPI_PLUGIN, from the executable's folder or its ../lib, or from the library path, in
 * that order; libasvr itself never links libmpi. ASVR_COMM_LAUNCHER=none ignores a launcher's
 * variables (a plain run inside a Slurm allocation).
 * The CUDA device of a rank is its local rank (its index among the ranks of its host), or
 * comm_options.device, or $ASVR_LOCAL_DEVICE, in that order of precedence (option first).
 *
 * Backends. Host (CPU) tensors: MPI (non-blocking collectives polled under a deadline). CUDA tensors:
 * NCCL on its own stream (the default at size > 1; libnccl.so.2 is loaded with dlopen on first use,
 * so a CUDA build runs without NCCL at size 1), or MPI staged through pinned host memory
 * (ASVR_COMM_DEVICE=mpi or comm_options.device_backend = "mpi": ranks may then share one GPU, which
 * NCCL refuses). At size 1 device collectives are device copies, unless ASVR_COMM_DEVICE=nccl asks
 * for a one-rank NCCL communicator (a check of the NCCL path on one GPU).
 *
 * Ordering on CUDA (NCCL). A collective waits on an event recorded on the compute stream (the
 * legacy default stream unless comm_set_stream says otherwise), runs on the communication stream,
 * and by default the compute stream then waits for it: work queued after the call sees the result.
 * comm_set_deferred(c, 1) drops that last wait so communication overlaps compute; the caller then
 * orders with comm_wait(ticket) (device-side) before it touches the buffers again, and calls
 * comm_sync() (host-side, under the timeout) once per step. Host collectives, the staged backend
 * and size 1 complete (or are stream-ordered) before the call returns.
 *
 * Faults. A collective that does not complete within the timeout (comm_set_timeout,
 * comm_options.timeout_s, $ASVR_COMM_TIMEOUT; default 600 s) ends the job: with MPI the waiting rank
 * asks every other rank where it is, prints which ranks are not in the collective, and aborts the
 * job (mpirun then ends every rank); with NCCL a watchdog thread sees the collective overstay (or
 * NCCL report an asynchronous error), aborts the communicator and exits 1, and the launcher ends
 * the other ranks. A rank that dies is seen by the launcher, which ends the others.
 *
 * Determinism (measured with Open MPI 4.1 on fp32): with 2 ranks, all-reduce and reduce-scatter are
 * bitwise equal to summing the ranks' values in rank order (two-operand addition commutes); with 3
 * or more ranks the association order changes with the algorithm, so results differ from a serial
 * sum in the last bits (tests/comm_check.c states the measured size). bf16 sums are done in fp32
 * and rounded once on the staged backend; NCCL rounds as it reduces.
 *
 * Testing aids: $ASVR_COMM_DELAY_US sleeps (host) or spins a kernel on the compute stream (device)
 * for that long before every collective, to expose missing synchronisation; comm_inject_delay() does
 * the same where the caller wants it. Counters give the calls and bytes per kind of collective.
 *
 * Threads: call from one thread at a time (the thread that called comm_init).
 * Not for: point-to-point messages, sub-communicators, reductions other than sum, or strided views.
 */
#ifndef ASVR_NN_COMM_H
#define ASVR_NN_COMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct comm comm;

/* The sequence number of a collective (1 for the first of the process); comm_wait takes it. */
typedef uint64_t comm_ticket;

typedef struct comm_options {
    int device;                 /* CUDA device of this rank; -1: $ASVR_LOCAL_DEVICE, else the local rank */
    double timeout_s;           /* <= 0: $ASVR_COMM_TIMEOUT, else 600 */
    const char *device_backend; /* "nccl" or "mpi" (staged); NULL: $ASVR_COMM_DEVICE, else "nccl" */
} comm_options;

/* Starts the layer (see the top comment); opt may be NULL (all defaults). One per process. Exits
 * with a message when a launcher is detected but the MPI plugin or libmpi cannot be loaded, or when
 * MPI's view of the job disagrees with the launcher's. */
comm *comm_init(const comm_options *opt);
/* Completes outstanding device work, passes a final barrier (under the timeout) and shuts MPI and
 * NCCL down. Every rank calls it. NULL is ignored. */
void comm_free(comm *c);

int comm_rank(const comm *c);
int comm_size(const comm *c);
int comm_local_rank(const comm *c);
int comm_local_size(const comm *c);
int comm_device(const comm *c);            /* the CUDA device index this rank uses */
const char *comm_launcher(const comm *c);  /* "none", "mpirun", "srun" or "pmi" */
void comm_set_timeout(comm *c, double seconds);
double comm_timeout(const comm *c);
/* One line on f: rank/size, local rank/size, launcher, backends (with the MPI and NCCL versions),
 * device, timeout, delay. */
void comm_print(const comm *c, FILE *f);

/* ---- CUDA ----------------------------------------------------------------------------------- */
/* Makes comm_device() the current CUDA device and sets up the device backend (a NCCL communicator:
 * collective, every rank calls it). Call it before allocating device memory; the first collective
 * on a CUDA tensor calls it otherwise. Exits in a build without CUDA. */
void comm_cuda_setup(comm *c);
/* The stream the model's ops run on (a cudaStream_t; NULL: the legacy default stream). */
void comm_set_stream(comm *c, void *cuda_stream);
/* 1: NCCL collectives return without making the compute stream wait for them (see the top). */
void comm_set_deferred(comm *c, int on);
comm_ticket comm_last_ticket(const comm *c);
/* The compute stream waits (on the device) for collective t and every one before it. */
void comm_wait(comm *c, comm_ticket t);
/* The host waits for every collective issued so far, under the timeout. */
void comm_sync(comm *c);
/* Sleeps $ASVR_COMM_DELAY_US on the host (dev NN_CPU) or spins that long on the compute stream. */
void comm_inject_delay(comm *c, nn_device dev);

/* ---- collectives on tensors (every rank calls them in the same order with the same shapes) ---- */
/* Sums support f32, bf16 and i32; the others move any dtype. The tensors of one call share a device
 * and a dtype. */
/* t = sum over ranks of t, in place. */
comm_ticket comm_allreduce(comm *c, tensor *t);
/* in holds size*n elements; out (n elements) gets piece r of the sum on rank r. out may be piece r
 * of in itself (in place; in's other pieces are then left undefined), else they must not overlap. */
comm_ticket comm_reduce_scatter(comm *c, tensor *out, const tensor *in);
/* in holds n elements; out (size*n elements) gets every rank's in, in rank order. in may be piece
 * r of out (in place), else they must not overlap. */
comm_ticket comm_allgather(comm *c, tensor *out, const tensor *in);
/* comm_allgather with this rank's piece already at offset r*n of full. */
comm_ticket comm_allgather_inplace(comm *c, tensor *full);
/* t = root's t on every rank. */
comm_ticket comm_bcast(comm *c, tensor *t, int root);
void comm_barrier(comm *c);

/* ---- host values ---------------------------------------------------------------------------- */
void comm_allreduce_f64(comm *c, double *v, int n);   /* v[i] = sum over ranks, in place */
void comm_allreduce_i64(comm *c, int64_t *v, int n);
/* all (size*n bytes) gets every rank's n bytes of mine, in rank order. */
void comm_allgather_bytes(comm *c, void *all, const void *mine, size_t n);
void comm_bcast_bytes(comm *c, void *buf, size_t n, int root);

/* ---- counters ------------------------------------------------------------------------------- */
typedef enum {
    COMM_ALLREDUCE,
    COMM_REDUCE_SCATTER,
    COMM_ALLGATHER,
    COMM_BCAST,
    COMM_BARRIER,
    COMM_HOST_ALLREDUCE, /* comm_allreduce_f64 / _i64 */
    COMM_HOST_ALLGATHER, /* comm_allgather_bytes */
    COMM_HOST_BCAST,     /* comm_bcast_bytes */
    COMM_NKINDS
} comm_kind;

/* Calls and bytes per kind since comm_init or the last reset, at every size (size 1 counts too).
 * Bytes: the summed buffer for all-reduce, the full input of a reduce-scatter, the full output of
 * an all-gather, the broadcast buffer. The layer's own bootstrap traffic is not counted. */
typedef struct comm_counts {
    int64_t calls[COMM_NKINDS];
    int64_t bytes[COMM_NKINDS];
} comm_counts;

void comm_get_counts(const comm *c, comm_counts *out);
void comm_reset_counts(comm *c);
const char *comm_kind_name(comm_kind k); /* "all-reduce", "reduce-scatter", ... */

#ifdef __cplusplus
}
#endif
#endif
