/* backend.h — the per-backend entry points behind ops.h (cpu_* in nn/cpu/, cuda_* in nn/cuda/), declared
 * from the one list in nn/ops_list.h, and the argument-check helpers the front ends share.
 * ops.c validates arguments and dispatches on the tensors' device; the implementations here may
 * assume valid shapes, matching devices and the dtypes their backend accepts.
 * Not for: model code (call the op_* functions of ops.h).
 */
#ifndef ASVR_NN_BACKEND_H
#define ASVR_NN_BACKEND_H

#include "nn/ops.h"
#include "nn/ops_list.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The device of an op's tensors (ops.c): every non-NULL tensor has data and they all live on one
 * device the build supports; otherwise exits naming the op and the tensors. */
nn_device nn_ops_same_device(const char *op, int n, const tensor *const *ts);
/* Exits naming op and the printf-formatted message when cond is false (a bug in the calling code). */
void nn_ops_need(int cond, const char *op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define NN_DECLARE_CPU(name, params, args) void cpu_##name params;
NN_BACKEND_OPS(NN_DECLARE_CPU)
#undef NN_DECLARE_CPU

#ifdef ASVR_HAVE_CUDA
#define NN_DECLARE_CUDA(name, params, args) void cuda_##name params;
NN_BACKEND_OPS(NN_DECLARE_CUDA)
#undef NN_DECLARE_CUDA
#endif

#ifdef __cplusplus
}
#endif
#endif
