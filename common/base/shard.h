/* shard.h — one part of a job split over processes: the --shard K/N | auto option of asvr-tokenize
 * encode and asvr-eval run, the rule that deals items to parts, and the launcher's rank variables.
 *
 * Split rule: item i (0-based, in the order of the input list) belongs to part i mod N. It depends
 * on nothing but the list, so every process computes the same parts and together they cover the
 * list exactly once.
 * "auto" takes K and N from the launcher that started the process, checked in this order:
 *   Open MPI's mpirun:  OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE (local rank OMPI_COMM_WORLD_LOCAL_RANK)
 *   Slurm's srun:       SLURM_PROCID / SLURM_STEP_NUM_TASKS or SLURM_NTASKS (local rank SLURM_LOCALID);
 *                       only inside a job step (SLURM_STEP_ID set), not in the batch script itself
 *   a PMI launcher (MPICH/Intel MPI hydra): PMI_RANK / PMI_SIZE (local rank MPI_LOCALRANKID)
 * and, with none of them, part 0 of 1. The CUDA device of a part is its local rank (its index among
 * the processes of its host), or $ASVR_LOCAL_DEVICE when set.
 * Not for: collectives or anything that needs the processes to talk (nn/comm.h does that).
 */
#ifndef ASVR_BASE_SHARD_H
#define ASVR_BASE_SHARD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct asvr_shard {
    int index, count;     /* K of N; 0 of 1 = the whole list */
    int local_rank;       /* the process's index on its host (0 without a launcher or for K/N) */
    int device;           /* the CUDA device this part should use: $ASVR_LOCAL_DEVICE, else local_rank */
    const char *launcher; /* "given" (K/N), "mpirun", "srun", "pmi" or "none" */
} asvr_shard;

/* Parses "K/N" (0 <= K < N) or "auto". 0 ok; -1 with a sentence in why (a usage error: bad syntax,
 * K out of range, a launcher variable that is not a number or a rank outside its size). */
int asvr_shard_parse(const char *spec, asvr_shard *s, char *why, size_t why_n);
/* 1 when item i belongs to part s (i mod N == K). */
int asvr_shard_owns(const asvr_shard *s, size_t i);
/* "K-of-N", the name of a part in file names: "<name>.shard-K-of-N", "<bench>.part-K-of-N.jsonl". */
void asvr_shard_tag(const asvr_shard *s, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
