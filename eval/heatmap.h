/* heatmap.h — attention maps as pictures: a grid of values over an image's patches drawn as a colour
 * heat map (min-max normalised, a blue-cyan-yellow-red ramp) blended half and half over the image,
 * written as an 8-bit RGB PNG with libpng, atomically (temp file + rename).
 * Not for: reading images or plotting curves.
 */
#ifndef ASVR_EVAL_HEATMAP_H
#define ASVR_EVAL_HEATMAP_H

#include <stdint.h>

#include "base/error.h"

/* rgb: the S x S image (HWC); map: grid x grid values in raster order, cell (r, c) covering pixels
 * [r*patch, (r+1)*patch) x [c*patch, (c+1)*patch) (pixels past grid*patch keep the image); the picture
 * is scaled up by an integer factor to at least 256 px. -1 with err naming path. */
int heatmap_write_png(const char *path, const uint8_t *rgb, int S, const float *map, int grid, int patch,
                      asvr_error *err);

#endif
