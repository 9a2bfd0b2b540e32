/* shard.c — see shard.h. */
#include "base/shard.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A non-negative decimal int without trailing garbage; -1 otherwise. */
static int parse_nonneg(const char *s) {
    if (!s || !*s) return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno || v > INT_MAX) return -1;
    return (int)v;
}

/* Reads variable name into *v (>= lo); absent leaves *v as it is. -1 with why when malformed. */
static int env_int(const char *name, int lo, int *v, char *why, size_t why_n) {
    const char *s = getenv(name);
    if (!s) return 0;
    int x = parse_nonneg(s);
    if (x < lo) {
        snprintf(why, why_n, "--shard auto: the launcher's %s='%s' is not a number >= %d", name, s, lo);
        return -1;
    }
    *v = x;
    return 0;
}

static int from_launcher(asvr_shard *s, char *why, size_t why_n) {
    const char *rank_v, *size_v, *local_v;
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        s->launcher = "mpirun";
        rank_v = "OMPI_COMM_WORLD_RANK", size_v = "OMPI_COMM_WORLD_SIZE", local_v = "OMPI_COMM_WORLD_LOCAL_RANK";
    } else if (getenv("SLURM_STEP_ID") && getenv("SLURM_PROCID")) { /* a task of srun, not the batch script */
        s->launcher = "srun";
        rank_v = "SLURM_PROCID", local_v = "SLURM_LOCALID";
        size_v = getenv("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
    } else if (getenv("PMI_RANK") && getenv("PMI_SIZE")) {
        s->launcher = "pmi";
        rank_v = "PMI_RANK", size_v = "PMI_SIZE", local_v = "MPI_LOCALRANKID";
    } else {
        s->launcher = "none";
        return 0;
    }
    if (env_int(rank_v, 0, &s->index, why, why_n) < 0 || env_int(size_v, 1, &s->count, why, why_n) < 0 ||
        env_int(local_v, 0, &s->local_rank, why, why_n) < 0)
        return -1;
    if (!getenv(size_v)) {
        snprintf(why, why_n, "--shard auto: %s sets %s but not %s", s->launcher, rank_v, size_v);
        return -1;
    }
    if (s->index >= s->count) {
        snprintf(why, why_n, "--shard auto: the launcher's rank %s=%d is not below its size %s=%d", rank_v, s->index,
                 size_v, s->count);
        return -1;
    }
    return 0;
}

int asvr_shard_parse(const char *spec, asvr_shard *s, char *why, size_t why_n) {
    memset(s, 0, sizeof *s);
    s->count = 1;
    s->launcher = "none";
    if (why_n) why[0] = 0;
    if (!spec) return 0;
    if (strcmp(spec, "auto") == 0) {
        if (from_launcher(s, why, why_n) < 0) return -1;
    } else {
        const char *slash = strchr(spec, '/');
        char k[32];
        size_t kl = slash ? (size_t)(slash - spec) : 0;
        int K = -1, N = -1;
        if (slash && kl < sizeof k) {
            memcpy(k, spec, kl);
            k[kl] = 0;
            K = parse_nonneg(k);
            N = parse_nonneg(slash + 1);
        }
        if (K < 0 || N < 1) {
            snprintf(why, why_n, "--shard expects K/N (part K of N, 0 <= K < N) or auto, not '%s'", spec);
            return -1;
        }
        if (K >= N) {
            snprintf(why, why_n, "--shard %s: K must be in 0..%d (parts are numbered from 0)", spec, N - 1);
            return -1;
        }
        s->index = K, s->count = N, s->launcher = "given";
    }
    s->device = s->local_rank;
    if (env_int("ASVR_LOCAL_DEVICE", 0, &s->device, why, why_n) < 0) return -1;
    return 0;
}

int asvr_shard_owns(const asvr_shard *s, size_t i) { return (int)(i % (size_t)s->count) == s->index; }

void asvr_shard_tag(const asvr_shard *s, char *buf, size_t n) { snprintf(buf, n, "%d-of-%d", s->index, s->count); }
