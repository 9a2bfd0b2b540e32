/* comm_mpi_plugin.c — libasvr_comm_mpi.so: the MPI side of the communication layer (nn/comm.h),
 * built as a separate shared object linked against the system's MPI, and loaded by nn/comm.c with
 * dlopen only when a launcher started the process. It fills the table of nn/comm_mpi_api.h.
 * Everything here is thin: the deadlines, the checks and the messages live in nn/comm*.c.
 * Not for: linking into libasvr or the tools (they must start without libmpi).
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/comm_mpi_api.h"

#define EXPORT __attribute__((visibility("default")))
#define SMALL_SLOTS 256
#define SMALL_MAX 64

static MPI_Comm world = MPI_COMM_NULL;  /* the collectives */
static MPI_Comm status = MPI_COMM_NULL; /* the timeout diagnosis */
static MPI_Request pending = MPI_REQUEST_NULL;

/* Send buffers of the status messages: a slot is reused once its send completed. */
static struct {
    MPI_Request req;
    char buf[SMALL_MAX];
} small[SMALL_SLOTS];

static MPI_Datatype mpi_type(cm_type t) {
    switch (t) {
    case CM_U8: return MPI_UINT8_T;
    case CM_U16: return MPI_UINT16_T;
    case CM_I32: return MPI_INT32_T;
    case CM_F32: return MPI_FLOAT;
    case CM_I64: return MPI_INT64_T;
    case CM_F64: return MPI_DOUBLE;
    }
    return MPI_DATATYPE_NULL;
}

static int p_init(int *rank, int *size, int *local_rank, int *local_size) {
    int provided = 0, rc;
    if ((rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided)) != MPI_SUCCESS) return rc;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &world)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &status)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_set_errhandler(status, MPI_ERRORS_RETURN)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_rank(world, rank)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_size(world, size)) != MPI_SUCCESS) return rc;
    MPI_Comm local;
    if ((rc = MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &local)) != MPI_SUCCESS)
        return rc;
    if ((rc = MPI_Comm_rank(local, local_rank)) != MPI_SUCCESS) return rc;
    if ((rc = MPI_Comm_size(local, local_size)) != MPI_SUCCESS) return rc;
    return MPI_Comm_free(&local);
}

static void p_version(char *buf, size_t n) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(v, &len) != MPI_SUCCESS) snprintf(v, sizeof v, "unknown MPI");
    v[strcspn(v, ",\n")] = 0;
    snprintf(buf, n, "%s", v);
}

static void p_error_string(int rc, char *buf, size_t n) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", rc);
    snprintf(buf, n, "%s", s);
}

static int p_allreduce(void *buf, int count, cm_type t) {
    return MPI_Iallreduce(MPI_IN_PLACE, buf, count, mpi_type(t), MPI_SUM, world, &pending);
}

static int p_reduce_scatter(const void *in, void *out, int count, cm_type t) {
    return MPI_Ireduce_scatter_block(in ? in : MPI_IN_PLACE, out, count, mpi_type(t), MPI_SUM, world, &pending);
}

static int p_allgather(const void *in, void *out, int count, cm_type t) {
    if (!in) return MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, count, mpi_type(t), world, &pending);
    return MPI_Iallgather(in, count, mpi_type(t), out, count, mpi_type(t), world, &pending);
}

static int p_bcast(void *buf, int count, cm_type t, int root) {
    return MPI_Ibcast(buf, count, mpi_type(t), root, world, &pending);
}

static int p_barrier(void) { return MPI_Ibarrier(world, &pending); }

static int p_test(int *done) {
    *done = 0;
    if (pending == MPI_REQUEST_NULL) {
        *done = 1;
        return MPI_SUCCESS;
    }
    return MPI_Test(&pending, done, MPI_STATUS_IGNORE);
}

static int p_send_small(const void *buf, int bytes, int dest, int tag) {
    if (bytes > SMALL_MAX) return MPI_ERR_COUNT;
    for (int i = 0; i < SMALL_SLOTS; i++) {
        int done = 1;
        if (small[i].req != MPI_REQUEST_NULL && MPI_Test(&small[i].req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            continue;
        if (!done) continue;
        memcpy(small[i].buf, buf, (size_t)bytes);
        return MPI_Isend(small[i].buf, bytes, MPI_BYTE, dest, tag, status, &small[i].req);
    }
    return MPI_SUCCESS; /* every slot busy: the message is dropped (diagnosis only) */
}

static int p_poll_small(void *buf, int bytes, int tag, int *src) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, tag, status, &flag, &st) != MPI_SUCCESS || !flag) return 0;
    if (MPI_Recv(buf, bytes, MPI_BYTE, st.MPI_SOURCE, tag, status, MPI_STATUS_IGNORE) != MPI_SUCCESS) return 0;
    *src = st.MPI_SOURCE;
    return 1;
}

static void p_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    _Exit(code); /* not reached: MPI_Abort does not return */
}

static int p_finalize(void) {
    for (int i = 0; i < SMALL_SLOTS; i++)
        if (small[i].req != MPI_REQUEST_NULL) MPI_Request_free(&small[i].req);
    if (status != MPI_COMM_NULL) MPI_Comm_free(&status);
    if (world != MPI_COMM_NULL) MPI_Comm_free(&world);
    return MPI_Finalize();
}

EXPORT int asvr_comm_mpi_plugin(comm_mpi_api *api) {
    for (int i = 0; i < SMALL_SLOTS; i++) small[i].req = MPI_REQUEST_NULL;
    memset(api, 0, sizeof *api);
    api->abi = COMM_MPI_ABI;
    api->init = p_init;
    api->version = p_version;
    api->error_string = p_error_string;
    api->start_allreduce = p_allreduce;
    api->start_reduce_scatter = p_reduce_scatter;
    api->start_allgather = p_allgather;
    api->start_bcast = p_bcast;
    api->start_barrier = p_barrier;
    api->test = p_test;
    api->send_small = p_send_small;
    api->poll_small = p_poll_small;
    api->abort = p_abort;
    api->finalize = p_finalize;
    return COMM_MPI_ABI;
}
