/* proj_block.h — DualToken's ProjectResnetBlock (the appearance tokenizer's pre-quantisation
 * projection), forward only, over a channels-last feature grid.
 *
 * With x [B, H*W, Cin] (the NCHW map of PyTorch, permuted; position p = h*W + w):
 *   h = Conv1x1(SiLU(GroupNorm1(x)))            Cin -> Cout
 *   h = Conv3x3(SiLU(GroupNorm2(h)))            Cout -> Cout, zero padding 1 (Dropout(0) = identity)
 *   y = shortcut(x) + h,  shortcut = the 1x1 conv "nin_shortcut" (Cin -> Cout) when Cin != Cout,
 *                         the identity when Cin == Cout.
 * GroupNorm: `groups` groups (32 in DualToken), eps 1e-6, affine. Every conv has a bias.
 * Weights load under a prefix with the PyTorch module names (DualToken: "prequant_visual."):
 *   norm1.{weight,bias} [Cin], conv1.{weight [Cout,Cin,1,1], bias}, norm2.{weight,bias} [Cout],
 *   conv2.{weight [Cout,Cout,3,3], bias}, nin_shortcut.{weight [Cout,Cin,1,1], bias} (Cin != Cout only).
 * proj_block_load_ex places it on a device (CPU f32, CUDA f32 or CUDA bf16); its activations follow.
 * Not for: the 3x3 "conv_shortcut" variant (DualToken does not use it; its key is refused), the
 * decoder-side blocks with a time embedding, or training.
 */
#ifndef ASVR_MODEL_PROJ_BLOCK_H
#define ASVR_MODEL_PROJ_BLOCK_H

#include <stdio.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "nn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct proj_block proj_block;

/* Loads the block from st under prefix; -1 with err naming the missing or mis-shaped tensor. */
int proj_block_load(const safetensors *st, const char *prefix, int in_channels, int out_channels,
                    int groups, float eps, proj_block **out, asvr_error *err);
/* The same on dev with float weights stored as dtype (NN_F32; NN_BF16 on NN_CUDA only). */
int proj_block_load_ex(const safetensors *st, const char *prefix, int in_channels, int out_channels,
                       int groups, float eps, nn_device dev, nn_dtype dtype, proj_block **out,
                       asvr_error *err);
void proj_block_free(proj_block *m);
int proj_block_in(const proj_block *m);
int proj_block_out(const proj_block *m);
void proj_block_print_plan(const proj_block *m, FILE *f);

/* Activations for up to max_batch grids of H x W positions, planned in one arena. */
typedef struct proj_block_acts proj_block_acts;
proj_block_acts *proj_block_acts_new(const proj_block *m, int max_batch, int H, int W);
void proj_block_acts_print_plan(const proj_block_acts *a, FILE *f);
void proj_block_acts_free(proj_block_acts *a);

/* x [B, H*W, Cin] (not modified), y [B, H*W, Cout], B <= max_batch, both in the block's dtype on its
 * device; every element of y written. */
void proj_block_forward(const proj_block *m, proj_block_acts *a, const tensor *x, tensor *y);

#ifdef __cplusplus
}
#endif
#endif
