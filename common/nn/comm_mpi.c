/* comm_mpi.c — the MPI plugin seen from libasvr (nn/comm_internal.h): finding and loading
 * libasvr_comm_mpi.so, polling a collective under the deadline, and, when it overstays, finding out
 * which ranks are not in it before the job is aborted.
 *
 * The timeout diagnosis: a rank whose collective overstays sends a query to every other rank on the
 * plugin's status communicator. A rank that is itself waiting in a collective answers from its
 * polling loop with the number and kind of that collective; a rank that is computing, sleeping,
 * hung or dead does not answer. After a short grace period the rank prints both lists and aborts.
 */
#include <dlfcn.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "nn/comm_internal.h"

#define TAG_QUERY 7301
#define TAG_REPLY 7302
#define STATUS_MAGIC 0x61737672636f6d6dLL /* "asvrcomm" */
#define INSTALL_HINT                                                                               \
    "install Open MPI (apt-get install openmpi-bin libopenmpi-dev) and rebuild so that lib/" COMM_MPI_PLUGIN_FILE \
    " is built next to bin/, or point ASVR_COMM_MPI_PLUGIN at the plugin; ASVR_COMM_LAUNCHER=none runs the process alone"

/* ---- loading -------------------------------------------------------------------------------- */

/* The folder of the running executable, "" when /proc cannot tell. */
static void exe_dir(char *buf, size_t n) {
    ssize_t k = readlink("/proc/self/exe", buf, n - 1);
    if (k <= 0) {
        buf[0] = 0;
        return;
    }
    buf[k] = 0;
    char *slash = strrchr(buf, '/');
    if (slash) *slash = 0;
}

/* Loads one candidate; on failure appends "  <path>: <reason>\n" to why. */
static int try_plugin(comm *c, const char *path, char *why, size_t n) {
    size_t used = strlen(why);
    if (strchr(path, '/') && access(path, F_OK) != 0) {
        snprintf(why + used, n - used, "  %s: no such file\n", path);
        return 0;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL); /* GLOBAL: MPI's own components resolve against libmpi */
    if (!h) {
        snprintf(why + used, n - used, "  %s: %s\n", path, dlerror());
        return 0;
    }
    comm_mpi_entry_fn entry;
    void *sym = dlsym(h, COMM_MPI_ENTRY);
    memcpy(&entry, &sym, sizeof entry);
    if (!sym || entry(&c->mpi) != COMM_MPI_ABI || c->mpi.abi != COMM_MPI_ABI) {
        snprintf(why + used, n - used, "  %s: not a plugin of this version of asvr (rebuild it)\n", path);
        dlclose(h);
        memset(&c->mpi, 0, sizeof c->mpi);
        return 0;
    }
    c->plugin = h;
    snprintf(c->plugin_path, sizeof c->plugin_path, "%s", path);
    return 1;
}

void comm_mpi_load(comm *c) {
    char why[4096] = "", dir[PATH_MAX], path[PATH_MAX + 64];
    const char *env = getenv("ASVR_COMM_MPI_PLUGIN");
    if (env && *env) {
        if (try_plugin(c, env, why, sizeof why)) return;
        ASVR_FATAL(INSTALL_HINT, "comm: started by %s, and ASVR_COMM_MPI_PLUGIN does not load:\n%s", c->launcher, why);
    }
    exe_dir(dir, sizeof dir);
    if (dir[0]) {
        snprintf(path, sizeof path, "%s/%s", dir, COMM_MPI_PLUGIN_FILE);
        if (try_plugin(c, path, why, sizeof why)) return;
        snprintf(path, sizeof path, "%s/../lib/%s", dir, COMM_MPI_PLUGIN_FILE);
        if (try_plugin(c, path, why, sizeof why)) return;
    }
    if (try_plugin(c, COMM_MPI_PLUGIN_FILE, why, sizeof why)) return;
    ASVR_FATAL(INSTALL_HINT, "comm: started by %s, so MPI is needed, but the MPI plugin does not load; tried:\n%s",
               c->launcher, why);
}

/* ---- failing -------------------------------------------------------------------------------- */

const char *comm_fmt_bytes(size_t bytes, char *buf, size_t n) {
    if (bytes >= (1u << 20)) snprintf(buf, n, "%.1f MiB", (double)bytes / (1 << 20));
    else if (bytes >= 1024) snprintf(buf, n, "%.1f KiB", (double)bytes / 1024);
    else snprintf(buf, n, "%zu B", bytes);
    return buf;
}

void comm_die(comm *c, const char *hint, const char *fmt, ...) {
    char what[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "asvr: fatal: comm: rank %d of %d: %s\n", c->rank, c->size, what);
    if (hint && *hint) fprintf(stderr, "asvr: hint: %s\n", hint);
    fflush(stderr);
    if (c->plugin && c->mpi.abort) c->mpi.abort(1);
    exit(1);
}

/* "all-reduce #12 (4.0 MiB f32)" */
static const char *describe(const comm *c, char *buf, size_t n) {
    char b[32];
    if (c->cur_kind == COMM_BARRIER) snprintf(buf, n, "barrier #%llu", (unsigned long long)c->seq);
    else
        snprintf(buf, n, "%s #%llu (%s %s)", comm_kind_name(c->cur_kind), (unsigned long long)c->seq,
                 comm_fmt_bytes(c->cur_bytes, b, sizeof b), c->cur_dtype);
    return buf;
}

void comm_mpi_check(comm *c, int rc, const char *call) {
    if (rc == 0) return;
    char why[512], what[160];
    c->mpi.error_string(rc, why, sizeof why);
    comm_die(c, "another rank probably died or was killed: read the first error of the job above", "%s: %s failed: %s",
             describe(c, what, sizeof what), call, why);
}

/* ---- polling and the timeout diagnosis ------------------------------------------------------ */

typedef struct {
    int64_t magic, rank, seq, kind;
} status_msg;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void nap_us(long us) {
    struct timespec t = {0, us * 1000L};
    nanosleep(&t, NULL);
}

/* Answers every pending query with the collective this rank waits in. */
static void answer_queries(comm *c) {
    status_msg q;
    int src = -1;
    while (c->mpi.poll_small(&q, (int)sizeof q, TAG_QUERY, &src)) {
        if (q.magic != STATUS_MAGIC) continue;
        status_msg r = {STATUS_MAGIC, c->rank, (int64_t)c->seq, c->cur_kind};
        c->mpi.send_small(&r, (int)sizeof r, src, TAG_REPLY);
    }
}

/* Appends " r" to a list. */
static void list_add(char *list, size_t n, int r) {
    size_t k = strlen(list);
    if (k + 16 < n) snprintf(list + k, n - k, " %d", r);
}

static ASVR_NORETURN void diagnose_and_die(comm *c, double waited) {
    int n = c->size;
    status_msg q = {STATUS_MAGIC, c->rank, (int64_t)c->seq, c->cur_kind};
    for (int r = 0; r < n; r++)
        if (r != c->rank) c->mpi.send_small(&q, (int)sizeof q, r, TAG_QUERY);
    status_msg *seen = calloc((size_t)n, sizeof *seen); /* magic 0: no answer */
    if (seen) seen[c->rank] = q;
    double grace = c->timeout_s / 4;
    grace = grace < 0.2 ? 0.2 : grace > 2.0 ? 2.0 : grace;
    int answers = 1;
    for (double end = now_s() + grace; seen && answers < n && now_s() < end; nap_us(1000)) {
        answer_queries(c);
        status_msg m;
        int src = -1;
        while (c->mpi.poll_small(&m, (int)sizeof m, TAG_REPLY, &src))
            if (m.magic == STATUS_MAGIC && src >= 0 && src < n && !seen[src].magic) seen[src] = m, answers++;
    }
    char missing[1024] = "", in_it[1024] = "", elsewhere[1024] = "";
    for (int r = 0; seen && r < n; r++) {
        if (!seen[r].magic) list_add(missing, sizeof missing, r);
        else if (seen[r].seq == (int64_t)c->seq) list_add(in_it, sizeof in_it, r);
        else {
            size_t k = strlen(elsewhere);
            snprintf(elsewhere + k, sizeof elsewhere - k, "; rank %d waits in %s #%lld instead", r,
                     comm_kind_name((comm_kind)seen[r].kind), (long long)seen[r].seq);
        }
    }
    char what[160];
    comm_die(c,
             "a rank that died, hangs or runs far behind stops every rank: read the log of the ranks named "
             "here; ASVR_COMM_TIMEOUT raises the limit for legitimately slow steps",
             "%s did not complete within %.1f s; ranks missing from it (no answer within %.1f s):%s; ranks "
             "waiting in it:%s%s",
             describe(c, what, sizeof what), waited, grace, missing[0] ? missing : " none", in_it, elsewhere);
}

void comm_mpi_wait(comm *c) {
    double t0 = now_s(), deadline = t0 + c->timeout_s;
    for (long polls = 1;; polls++) {
        int done = 0;
        comm_mpi_check(c, c->mpi.test(&done), "MPI_Test");
        if (done) return;
        if (polls % 64 == 0) {
            answer_queries(c);
            double t = now_s();
            if (t > deadline) diagnose_and_die(c, t - t0);
        }
        if (polls < 2000) sched_yield(); /* a short spin, then naps that leave the core to others */
        else nap_us(50);
    }
}
