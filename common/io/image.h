/* image.h — the image input path: decode JPEG/PNG to 8-bit RGB, pad or squash to a square, resize with
 * bicubic filtering, and normalize to a CHW float tensor, bit-exact with the Python reference
 * (Pillow 13: `Image.open(p).convert('RGB')`, LLaVA's `expand2square`, `Image.resize((S, S), BICUBIC,
 * reducing_gap=None)`, and the HF image processor's rescale + normalize).
 *
 * Decoding: the format comes from the magic bytes (never the file name). JPEG goes through TurboJPEG
 * (ISLOW IDCT, fancy upsampling); grayscale is replicated, CMYK/YCCK is read as Adobe-inverted CMYK and
 * converted with Pillow's CMYK->RGB rule. PNG goes through libpng: palette and transparency expanded
 * (transparency ignored), alpha dropped without compositing, 1/2/4-bit gray scaled to 0..255, 16-bit
 * colour takes the high byte, 16-bit gray clips to 255 (Pillow's I;16 -> RGB), interlacing undone.
 * The pixel limit is checked from the header before any pixel buffer is allocated.
 * Every failure returns -1 with an asvr_error naming the file and the reason; nothing here exits.
 *
 * Not for: writing images, other formats (GIF, WebP, TIFF...), colour management (ICC profiles and
 * gamma are ignored, as Pillow's convert('RGB') ignores them), or images with more than 2^31 bytes
 * per row. Multi-threaded callers use one call per image; the functions share no state.
 */
#ifndef ASVR_IO_IMAGE_H
#define ASVR_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Pillow's Image.MAX_IMAGE_PIXELS. */
#define IMAGE_DEFAULT_MAX_PIXELS 89478485ULL

typedef enum { IMAGE_FORMAT_UNKNOWN = 0, IMAGE_FORMAT_JPEG, IMAGE_FORMAT_PNG, IMAGE_FORMAT_WEBP } image_format;

/* An 8-bit interleaved RGB image, rows packed (stride = 3 * width). */
typedef struct image_rgb {
    int width, height;
    uint8_t *pixels;
} image_rgb;

typedef struct image_decode_opts {
    uint64_t max_pixels;       /* width*height above this is refused; 0 means IMAGE_DEFAULT_MAX_PIXELS */
    int accept_jpeg_warnings;  /* 1: truncated/corrupt JPEG data decodes anyway (libjpeg fills the gap) */
    int apply_exif_orientation;/* 1: rotate/flip by the Exif Orientation tag (Pillow's exif_transpose) */
} image_decode_opts;

/* Defaults: the reference behaviour (Pillow limit, warnings are errors, EXIF ignored). */
void image_decode_opts_default(image_decode_opts *opts);

/* Format from the first bytes of a file. */
image_format image_detect_format(const uint8_t *data, size_t n);

/* Decodes an in-memory JPEG or PNG. `name` is used in error messages only (e.g. the path).
 * On success out->pixels is malloc'd (free with image_free); on failure out is zeroed and -1 returned. */
int image_decode(const uint8_t *data, size_t n, const char *name, const image_decode_opts *opts,
                 image_rgb *out, asvr_error *err);
/* Reads path and decodes it. */
int image_decode_file(const char *path, const image_decode_opts *opts, image_rgb *out, asvr_error *err);
void image_free(image_rgb *img);

typedef enum { IMAGE_POLICY_PAD = 0, IMAGE_POLICY_SQUASH = 1 } image_policy;

/* "pad" | "squash" -> policy; -1 when unknown. */
int image_policy_parse(const char *s, image_policy *out);
const char *image_policy_name(image_policy p);

typedef struct image_preprocess_opts {
    image_policy policy;
    int size;          /* S: output is S x S */
    uint8_t pad[3];    /* canvas colour for IMAGE_POLICY_PAD (SigLIP: 127,127,127) */
} image_preprocess_opts;

/* SigLIP defaults: pad, 384, (127,127,127). */
void image_preprocess_opts_default(image_preprocess_opts *opts);

/* pad (expand2square) or squash, then bicubic resize to S x S. out holds 3*S*S bytes (RGB, HWC).
 * Returns -1 with err set when S or the input is invalid. */
int image_preprocess(const image_rgb *in, const image_preprocess_opts *opts, uint8_t *out, asvr_error *err);

/* Pillow-exact bicubic resize of a packed RGB image (w x h) to (ow x oh); out holds 3*ow*oh bytes.
 * Returns -1 with err set for non-positive sizes. */
int image_resize_bicubic(const uint8_t *in, int w, int h, uint8_t *out, int ow, int oh, asvr_error *err);

/* Whether the resize above runs its vertical pass before the horizontal one (Pillow 13's rule:
 * oh < h and h - oh > 2 * max(w - ow, 0)). Exposed for tests. */
int image_resize_vertical_first(int w, int h, int ow, int oh);

/* HWC uint8 RGB (w x h) -> CHW float32: (float)(u8 * (1/255.0)) then (x - mean[c]) / std[c] in float. */
void image_normalize_chw(const uint8_t *rgb, int w, int h, const float mean[3], const float std[3], float *out);

#ifdef __cplusplus
}
#endif
#endif
