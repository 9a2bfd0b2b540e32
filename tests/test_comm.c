/* test_comm.c — the communication layer (nn/comm.h) in a single process without a launcher: size 1,
 * no MPI loaded, every collective a copy or nothing (in place too), the host helpers, the counters,
 * the options, and the checks that end the process on misuse or a bad environment (a launcher's
 * variables without a loadable plugin among them). Multi-rank runs are tests/cli_comm.sh's.
 */
#include <stdlib.h>
#include <string.h>

#include "nn/comm.h"
#include "test.h"

static comm *C;

static void clear_launcher_env(void) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("SLURM_STEP_ID");
    unsetenv("PMI_RANK");
    unsetenv("ASVR_COMM_LAUNCHER");
    unsetenv("ASVR_COMM_TIMEOUT");
    unsetenv("ASVR_LOCAL_DEVICE");
    unsetenv("ASVR_COMM_DELAY_US");
    unsetenv("ASVR_COMM_DEVICE");
}

/* ---- what must end the process (each in a child, before this process starts its comm) ---------- */
static void bad_timeout(void) { setenv("ASVR_COMM_TIMEOUT", "soon", 1), comm_init(NULL); }
static void bad_launcher(void) { setenv("ASVR_COMM_LAUNCHER", "ssh", 1), comm_init(NULL); }
static void bad_device_backend(void) { comm_init(&(comm_options){.device = -1, .device_backend = "gloo"}); }
static void launcher_without_plugin(void) {
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    setenv("OMPI_COMM_WORLD_RANK", "0", 1);
    setenv("ASVR_COMM_MPI_PLUGIN", "/nonexistent/libasvr_comm_mpi.so", 1);
    comm_init(NULL);
}
static void twice(void) { comm_init(NULL), comm_init(NULL); }

/* ---- misuse of a started comm ------------------------------------------------------------------ */
static float fa[8], fb[8];
static void rs_wrong_sizes(void) {
    tensor in = tensor_make("in", NN_F32, NN_CPU, 1, (int64_t[]){8}, fa);
    tensor out = tensor_make("out", NN_F32, NN_CPU, 1, (int64_t[]){4}, fb);
    comm_reduce_scatter(C, &out, &in);
}
static void sum_of_bytes(void) {
    tensor t = tensor_make("bytes", NN_U8, NN_CPU, 1, (int64_t[]){8}, fa);
    comm_allreduce(C, &t);
}
static void bcast_bad_root(void) {
    tensor t = tensor_make("t", NN_F32, NN_CPU, 1, (int64_t[]){8}, fa);
    comm_bcast(C, &t, 1);
}
static void gather_overlap(void) { /* in overlaps out but is not piece 0 */
    tensor out = tensor_make("out", NN_F32, NN_CPU, 1, (int64_t[]){4}, fa);
    tensor in = tensor_make("in", NN_F32, NN_CPU, 1, (int64_t[]){4}, fa + 1);
    comm_allgather(C, &out, &in);
}
static void mixed_dtypes(void) {
    tensor in = tensor_make("in", NN_F32, NN_CPU, 1, (int64_t[]){4}, fa);
    tensor out = tensor_make("out", NN_I32, NN_CPU, 1, (int64_t[]){4}, fb);
    comm_allgather(C, &out, &in);
}
#ifndef ASVR_HAVE_CUDA
static void cuda_tensor(void) {
    tensor t = tensor_make("gpu", NN_F32, NN_CUDA, 1, (int64_t[]){8}, fa);
    comm_allreduce(C, &t);
}
#endif

int main(void) {
    clear_launcher_env();
    t_expect_fatal("bad ASVR_COMM_TIMEOUT", bad_timeout, "ASVR_COMM_TIMEOUT='soon' is not a positive number");
    t_expect_fatal("bad ASVR_COMM_LAUNCHER", bad_launcher, "ASVR_COMM_LAUNCHER='ssh' is not understood");
    t_expect_fatal("bad device backend", bad_device_backend, "device backend 'gloo' is not known");
    t_expect_fatal("launcher, no plugin", launcher_without_plugin, "ASVR_COMM_MPI_PLUGIN does not load");
    t_expect_fatal("launcher, no plugin: the hint", launcher_without_plugin, "openmpi-bin libopenmpi-dev");
    t_expect_fatal("comm_init twice", twice, "comm_init called twice");

    C = comm_init(&(comm_options){.device = 3, .timeout_s = 5.0});
    T_EQ_INT(comm_rank(C), 0);
    T_EQ_INT(comm_size(C), 1);
    T_EQ_INT(comm_local_rank(C), 0);
    T_EQ_INT(comm_local_size(C), 1);
    T_EQ_INT(comm_device(C), 3);
    T_STR_CONTAINS(comm_launcher(C), "none");
    T_CHECK(comm_timeout(C) == 5.0, "timeout %g", comm_timeout(C));
    comm_set_timeout(C, 7.5);
    T_CHECK(comm_timeout(C) == 7.5, "timeout %g", comm_timeout(C));

    /* size 1: all-reduce and broadcast leave the data, reduce-scatter and all-gather copy it */
    float a[6] = {1.5f, -2, 3, 4, 5, 6}, b[6], keep[6];
    memcpy(keep, a, sizeof a);
    tensor ta = tensor_make("a", NN_F32, NN_CPU, 1, (int64_t[]){6}, a);
    tensor tb = tensor_make("b", NN_F32, NN_CPU, 2, (int64_t[]){2, 3}, b);
    comm_ticket t1 = comm_allreduce(C, &ta);
    T_CHECK(memcmp(a, keep, sizeof a) == 0, "all-reduce of one rank changed the data");
    for (int i = 0; i < 6; i++) b[i] = NAN;
    comm_reduce_scatter(C, &tb, &ta);
    T_CHECK(memcmp(b, keep, sizeof b) == 0, "reduce-scatter of one rank is a copy");
    for (int i = 0; i < 6; i++) b[i] = NAN;
    comm_allgather(C, &tb, &ta);
    T_CHECK(memcmp(b, keep, sizeof b) == 0, "all-gather of one rank is a copy");
    comm_reduce_scatter(C, &ta, &ta); /* in place: the whole buffer is piece 0 */
    comm_allgather_inplace(C, &ta);
    comm_bcast(C, &ta, 0);
    comm_barrier(C);
    T_CHECK(memcmp(a, keep, sizeof a) == 0, "in-place forms and broadcast of one rank changed the data");
    T_CHECK(comm_last_ticket(C) == t1 + 6, "tickets: last %llu, first %llu", (unsigned long long)comm_last_ticket(C),
            (unsigned long long)t1);
    comm_wait(C, t1); /* host tensors: nothing in flight */
    comm_sync(C);

    int32_t ints[3] = {7, -8, 9};
    tensor ti = tensor_make("i", NN_I32, NN_CPU, 1, (int64_t[]){3}, ints);
    comm_allreduce(C, &ti);
    T_CHECK(ints[0] == 7 && ints[1] == -8 && ints[2] == 9, "i32 all-reduce of one rank");
    uint16_t h[4] = {0x3F80, 0x4000, 0xC040, 0x0001}, hk[4];
    memcpy(hk, h, sizeof h);
    tensor th = tensor_make("h", NN_BF16, NN_CPU, 1, (int64_t[]){4}, h);
    comm_allreduce(C, &th);
    T_CHECK(memcmp(h, hk, sizeof h) == 0, "bf16 all-reduce of one rank");

    double d[2] = {0.25, -1e300};
    comm_allreduce_f64(C, d, 2);
    T_CHECK(d[0] == 0.25 && d[1] == -1e300, "f64 all-reduce of one rank");
    int64_t k[1] = {(int64_t)1 << 50};
    comm_allreduce_i64(C, k, 1);
    T_CHECK(k[0] == (int64_t)1 << 50, "i64 all-reduce of one rank");
    char all[8] = "", msg[8] = "hashes!";
    comm_allgather_bytes(C, all, msg, 8);
    T_CHECK(memcmp(all, "hashes!", 8) == 0, "all-gather of bytes of one rank");
    comm_bcast_bytes(C, msg, 8, 0);
    T_CHECK(memcmp(msg, "hashes!", 8) == 0, "broadcast of bytes of one rank");

    /* counters: every kind counted at size 1 too, with its bytes */
    comm_counts n;
    comm_get_counts(C, &n);
    T_EQ_INT(n.calls[COMM_ALLREDUCE], 3);
    T_EQ_INT(n.bytes[COMM_ALLREDUCE], 24 + 12 + 8);
    T_EQ_INT(n.calls[COMM_REDUCE_SCATTER], 2);
    T_EQ_INT(n.bytes[COMM_REDUCE_SCATTER], 48);
    T_EQ_INT(n.calls[COMM_ALLGATHER], 2);
    T_EQ_INT(n.calls[COMM_BCAST], 1);
    T_EQ_INT(n.calls[COMM_BARRIER], 1);
    T_EQ_INT(n.calls[COMM_HOST_ALLREDUCE], 2);
    T_EQ_INT(n.bytes[COMM_HOST_ALLREDUCE], 24);
    T_EQ_INT(n.calls[COMM_HOST_ALLGATHER], 1);
    T_EQ_INT(n.calls[COMM_HOST_BCAST], 1);
    T_STR_CONTAINS(comm_kind_name(COMM_REDUCE_SCATTER), "reduce-scatter");
    comm_reset_counts(C);
    comm_get_counts(C, &n);
    T_EQ_INT(n.calls[COMM_ALLREDUCE] + n.calls[COMM_HOST_BCAST], 0);

    t_expect_fatal("reduce-scatter sizes", rs_wrong_sizes, "not size 1 x output");
    t_expect_fatal("sum of u8", sum_of_bytes, "which the layer does not sum");
    t_expect_fatal("broadcast root", bcast_bad_root, "root 1 is not a rank of 1");
    t_expect_fatal("overlap", gather_overlap, "overlaps 'out' but is not this rank's piece");
    t_expect_fatal("dtypes", mixed_dtypes, "differ in dtype or device");
#ifndef ASVR_HAVE_CUDA
    t_expect_fatal("cuda tensor in a CPU build", cuda_tensor, "this build has no CUDA backend");
#endif
    comm_free(C);
    return t_done();
}
