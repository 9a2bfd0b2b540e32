#include "heatmap.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"

/* t in [0, 1] -> blue, cyan, yellow, red. */
static void ramp(float t, uint8_t out[3]) {
    static const float stops[4][3] = {{0, 0, 255}, {0, 255, 255}, {255, 255, 0}, {255, 0, 0}};
    if (!(t > 0)) t = 0;
    if (t > 1) t = 1;
    float x = t * 3;
    int i = x >= 3 ? 2 : (int)x;
    float f = x - (float)i;
    for (int c = 0; c < 3; c++) out[c] = (uint8_t)(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * f + 0.5f);
}

int heatmap_write_png(const char *path, const uint8_t *rgb, int S, const float *map, int grid, int patch,
                      asvr_error *err) {
    if (S < 1 || grid < 1 || patch < 1 || grid * patch > S)
        return asvr_err_set(err, "'%s': a %dx%d grid of %d px patches does not fit a %d px image", path, grid, grid, patch, S);
    float lo = map[0], hi = map[0];
    for (int i = 1; i < grid * grid; i++) lo = map[i] < lo ? map[i] : lo, hi = map[i] > hi ? map[i] : hi;
    int k = (256 + S - 1) / S;
    if (k < 1) k = 1;
    int W = S * k;
    uint8_t *img = malloc((size_t)W * W * 3);
    if (!img) return asvr_err_set(err, "'%s': out of memory for a %d px picture", path, W);
    for (int y = 0; y < W; y++)
        for (int x = 0; x < W; x++) {
            int sy = y / k, sx = x / k, r = sy / patch, c = sx / patch;
            const uint8_t *src = rgb + ((size_t)sy * S + sx) * 3;
            uint8_t *dst = img + ((size_t)y * W + x) * 3;
            if (r >= grid || c >= grid) {
                memcpy(dst, src, 3);
                continue;
            }
            uint8_t col[3];
            ramp(hi > lo ? (map[r * grid + c] - lo) / (hi - lo) : 0.0f, col);
            for (int ch = 0; ch < 3; ch++) dst[ch] = (uint8_t)((src[ch] + col[ch] + 1) / 2);
        }
    asvr_atomic_file f;
    if (asvr_atomic_open(&f, path, err) < 0) {
        free(img);
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        asvr_atomic_abort(&f);
        free(img);
        return asvr_err_set(err, "'%s': libpng failed to write the picture", path);
    }
    png_init_io(png, f.fp);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)W, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < W; y++) png_write_row(png, img + (size_t)y * W * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(img);
    return asvr_atomic_commit(&f, err);
}
