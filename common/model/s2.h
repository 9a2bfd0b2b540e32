/* s2.h — the frozen input tower in S2 multi-scale mode ("scaling on scales", the ASVR reference's high-
 * resolution setting): image features of n_scales x the tower's width at the tower's positions.
 *
 * For images [B, 3, S, S] (normalised, S = the largest scale) and scales s_1 < ... < s_n, each a multiple
 * k_i = s_i / t of the tower's image size t:
 *   1. each scale: a torch-style bicubic resize of the images to s_i x s_i (op_interpolate; the identity
 *      at s_i = S), cut row-major into k_i x k_i tiles of t x t (tile (r, c) = rows r·t.., columns c·t..);
 *   2. all tiles of all images and scales in ONE batched forward of the tower (siglip_forward: its tap
 *      layer, forward only; its activations are reused by the next call, nothing is kept for a backward);
 *   3. each tile's g x g feature map (g = t / patch) put back in place: a (k_i·g) x (k_i·g) map per scale;
 *   4. each map area-pooled (adaptive average) to g x g;
 *   5. the scales concatenated on channels, s_1 first: out [B, g², n·C], positions in raster order.
 * Tiles, the reassembly and the concatenation are row gathers (op_gather_rows) with index tables built on
 * the host for the batch's image count; resizes and pooling are op_interpolate. With the tower in bf16
 * the features, maps and pooling are bf16 (fp32 math); the resized images stay f32 (the tower's input).
 * Not for: the plain single-scale forward (siglip_forward), training the tower, or the visual-head
 * targets (asvr-tokenize downsamples the same 1152 image bilinearly, see tokenize/encode.c).
 */
#ifndef ASVR_MODEL_S2_H
#define ASVR_MODEL_S2_H

#include <stdio.h>

#include "model/siglip.h"

#ifdef __cplusplus
extern "C" {
#endif

#define S2_MAX_SCALES 4

/* Checks a scale list against the tower's image size: 1..S2_MAX_SCALES strictly increasing multiples
 * of image_size. -1 with err naming the scale and the size. */
int s2_scales_check(const int *scales, int n, int image_size, asvr_error *err);
/* Tiles per image: the sum over the scales of (s / image_size)². */
int s2_tiles_per_image(const int *scales, int n, int image_size);
/* Bytes of the buffers an s2_acts plans on top of the tower's activations for max_images images
 * (resized images and tiles in f32, features, maps and pooled maps at esize bytes per value, index
 * tables) — what `asvr-train plan` counts without a tower. */
double s2_buffer_bytes(const siglip_config *v, const int *scales, int n, int max_images, double esize);

typedef struct s2_acts s2_acts;
/* Buffers for batches of up to max_images images on the tower's device, and the tower's activations
 * for max_images x s2_tiles_per_image tiles. The scales must pass s2_scales_check. */
s2_acts *s2_acts_new(const siglip *tower, const int *scales, int n_scales, int max_images);
/* Device bytes of everything it planned (the tower's activations included). */
size_t s2_acts_bytes(const s2_acts *a);
void s2_acts_print_plan(const s2_acts *a, FILE *f);
void s2_acts_free(s2_acts *a);

/* images [B, 3, S, S] f32 on the tower's device (B <= max_images, S the largest scale);
 * out [B, g², n_scales·C] in the tower's dtype (every element written). */
void s2_forward(const siglip *tower, s2_acts *a, const tensor *images, tensor *out);

#ifdef __cplusplus
}
#endif
#endif
