#include "cuda_emu.h" /* dev/cuda_emu: CPU stand-in for the CUDA headers */
