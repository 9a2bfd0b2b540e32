/* device.h — which CUDA device a process uses, for tools that run one process per GPU (asvr-tokenize
 * encode and asvr-eval run under mpirun/srun with --shard auto: each takes its local rank's device).
 * Without a call, CUDA work runs on device 0 (the CUDA runtime's default).
 * Not for: the training ranks (nn/comm.h chooses theirs) or picking a backend (cpu or cuda).
 */
#ifndef ASVR_NN_DEVICE_H
#define ASVR_NN_DEVICE_H

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Makes CUDA device `index` current for this process; call it before any CUDA allocation. -1 with err
 * when this build has no CUDA backend or the index is not a visible device (err says how many are). */
int nn_use_cuda_device(int index, asvr_error *err);

#ifdef __cplusplus
}
#endif
#endif
