/* device.c — see device.h. */
#include "nn/device.h"

#ifdef ASVR_HAVE_CUDA
#include "nn/cuda/cuda_host.h"
#endif

int nn_use_cuda_device(int index, asvr_error *err) {
#ifdef ASVR_HAVE_CUDA
    int n = nn_cuda_device_count();
    if (index < 0 || index >= n)
        return asvr_err_set(err, "CUDA device %d was asked for (the local rank, or $ASVR_LOCAL_DEVICE), but %d device(s) "
                                 "are visible: start at most %d process(es) per host, or set ASVR_LOCAL_DEVICE",
                            index, n, n);
    nn_cuda_set_device(index);
    return 0;
#else
    return asvr_err_set(err, "CUDA device %d: this build has no CUDA backend", index);
#endif
}
