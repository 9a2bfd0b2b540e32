#include "cuda_emu.h" /* tools/cuda_emu: CPU stand-in for the CUDA headers */
