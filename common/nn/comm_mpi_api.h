/* comm_mpi_api.h — the table of functions the MPI plugin (libasvr_comm_mpi.so, nn/mpi/) gives the
 * communication layer (nn/comm.c). Plain C types only, so libasvr needs no MPI header or library:
 * the plugin is the only code that includes mpi.h, and comm.c loads it with dlopen when a launcher
 * started the process.
 * The plugin exports one function, COMM_MPI_ENTRY, that fills the table; abi must equal
 * COMM_MPI_ABI (a plugin from another build of asvr is refused).
 * Collectives are non-blocking: a start_* call begins one (at most one at a time) and test() says
 * when it completed; the caller polls under its deadline. Calls return 0 or an MPI error code
 * (error_string() turns it into text); the plugin sets MPI_ERRORS_RETURN, so MPI never aborts on
 * its own.
 * Not for: anything but nn/comm*.c and the plugin.
 */
#ifndef ASVR_NN_COMM_MPI_API_H
#define ASVR_NN_COMM_MPI_API_H

#include <stddef.h>

#define COMM_MPI_ABI 1
#define COMM_MPI_ENTRY "asvr_comm_mpi_plugin"
#define COMM_MPI_PLUGIN_FILE "libasvr_comm_mpi.so"

/* Element types the plugin moves; sums take F32, F64, I32 and I64. */
typedef enum { CM_U8, CM_U16, CM_I32, CM_F32, CM_I64, CM_F64 } cm_type;

typedef struct comm_mpi_api {
    int abi;
    /* MPI_Init_thread (serialized), a private duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN,
     * a second duplicate for the status messages below; rank and size of the world, and of the
     * ranks sharing this host (MPI_COMM_TYPE_SHARED). */
    int (*init)(int *rank, int *size, int *local_rank, int *local_size);
    /* "Open MPI v4.1.4, ..." (MPI_Get_library_version), first line. */
    void (*version)(char *buf, size_t n);
    void (*error_string)(int rc, char *buf, size_t n);

    int (*start_allreduce)(void *buf, int count, cm_type t);                  /* sum, in place */
    /* sum of in (size*count) -> out (count); in == NULL: in place, the input is out (size*count)
     * and the result lands at its start (MPI_IN_PLACE semantics). */
    int (*start_reduce_scatter)(const void *in, void *out, int count, cm_type t);
    /* in (count) -> out (size*count) in rank order; in == NULL: in place (own piece in out). */
    int (*start_allgather)(const void *in, void *out, int count, cm_type t);
    int (*start_bcast)(void *buf, int count, cm_type t, int root);
    int (*start_barrier)(void);
    /* *done = 1 once the started collective completed (its request is then freed). */
    int (*test)(int *done);

    /* Small status messages on their own communicator (the timeout diagnosis): send copies buf and
     * does not wait (a message that cannot be queued is dropped); poll returns 1 and the sender's
     * rank in *src when a message with this tag arrived, 0 when none. */
    int (*send_small)(const void *buf, int bytes, int dest, int tag);
    int (*poll_small)(void *buf, int bytes, int tag, int *src);

    void (*abort)(int code); /* MPI_Abort of the whole job; does not return */
    int (*finalize)(void);
} comm_mpi_api;

typedef int (*comm_mpi_entry_fn)(comm_mpi_api *api);

#endif
