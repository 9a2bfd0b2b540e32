/* image_decode.c — JPEG (TurboJPEG) and PNG (libpng) to packed 8-bit RGB, with Pillow's conversion
 * rules, the pixel limit, and the optional Exif orientation. See image.h. */
#include <limits.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/decode.h>

#include "base/fsutil.h"
#include "io/image.h"

void image_decode_opts_default(image_decode_opts *opts) {
    memset(opts, 0, sizeof *opts);
    opts->max_pixels = IMAGE_DEFAULT_MAX_PIXELS;
}

void image_free(image_rgb *img) {
    if (!img) return;
    free(img->pixels);
    img->pixels = NULL;
    img->width = img->height = 0;
}

image_format image_detect_format(const uint8_t *data, size_t n) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return IMAGE_FORMAT_JPEG;
    if (n >= 8 && memcmp(data, png_sig, 8) == 0) return IMAGE_FORMAT_PNG;
    if (n >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0) return IMAGE_FORMAT_WEBP;
    return IMAGE_FORMAT_UNKNOWN;
}

/* Refuses empty and oversized images before anything is allocated. */
static int check_dimensions(const char *name, long long w, long long h, uint64_t max_pixels, asvr_error *err) {
    if (w <= 0 || h <= 0)
        return asvr_err_set(err, "'%s': image has an empty size (%lldx%lld)", name, w, h);
    uint64_t limit = max_pixels ? max_pixels : IMAGE_DEFAULT_MAX_PIXELS;
    uint64_t px = (uint64_t)w * (uint64_t)h;
    if (px > limit)
        return asvr_err_set(err, "'%s': %lldx%lld = %llu pixels exceeds the limit of %llu (--max-pixels)", name, w,
                            h, (unsigned long long)px, (unsigned long long)limit);
    if ((uint64_t)w * 4 > (uint64_t)INT_MAX)
        return asvr_err_set(err, "'%s': image width %lld is too large", name, w);
    return 0;
}

/* ---- Exif orientation ------------------------------------------------------------------------------ */

static unsigned rd16(const uint8_t *p, int le) { return le ? (unsigned)(p[0] | p[1] << 8) : (unsigned)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Orientation tag (0x0112) of IFD0 in a TIFF-structured Exif block; 1 when absent or malformed. */
static int exif_orientation_tiff(const uint8_t *t, size_t n) {
    if (n < 8) return 1;
    int le;
    if (t[0] == 'I' && t[1] == 'I') le = 1;
    else if (t[0] == 'M' && t[1] == 'M') le = 0;
    else return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > n || n - ifd < 2) return 1;
    unsigned count = rd16(t + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) break;
        if (rd16(t + e, le) != 0x0112) continue;
        unsigned type = rd16(t + e + 2, le);
        uint32_t v;
        if (type == 3) v = rd16(t + e + 8, le);       /* SHORT */
        else if (type == 4) v = rd32(t + e + 8, le);  /* LONG */
        else return 1;
        return (v >= 1 && v <= 8) ? (int)v : 1;
    }
    return 1;
}

/* First APP1 "Exif\0\0" segment before the scan data. */
static int exif_orientation_jpeg(const uint8_t *d, size_t n) {
    size_t p = 2;
    while (p + 4 <= n) {
        if (d[p] != 0xFF) return 1;
        uint8_t m = d[p + 1];
        if (m == 0xFF) { p++; continue; }
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) { p += 2; continue; }
        if (m == 0xDA || m == 0xD9) return 1;
        size_t len = (size_t)d[p + 2] << 8 | d[p + 3];
        if (len < 2 || p + 2 + len > n) return 1;
        if (m == 0xE1 && len >= 8 && memcmp(d + p + 4, "Exif\0\0", 6) == 0)
            return exif_orientation_tiff(d + p + 10, len - 8);
        p += 2 + len;
    }
    return 1;
}

/* First eXIf chunk anywhere in the file (Pillow reads it before or after the image data). */
static int exif_orientation_png(const uint8_t *d, size_t n) {
    size_t p = 8;
    while (p + 12 <= n) {
        uint32_t len = rd32(d + p, 0);
        if (len > n - p - 12) return 1;
        if (memcmp(d + p + 4, "eXIf", 4) == 0) {
            const uint8_t *t = d + p + 8;
            if (len >= 6 && memcmp(t, "Exif\0\0", 6) == 0) return exif_orientation_tiff(t + 6, len - 6);
            return exif_orientation_tiff(t, len);
        }
        if (memcmp(d + p + 4, "IEND", 4) == 0) return 1;
        p += 12 + (size_t)len;
    }
    return 1;
}

/* Applies Pillow's transpose for orientation o (2..8) into a new buffer. */
static int apply_orientation(image_rgb *img, int o, const char *name, asvr_error *err) {
    if (o <= 1 || o > 8) return 0;
    const int W = img->width, H = img->height;
    const int swap = o >= 5;
    const int ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *dst = malloc((size_t)ow * oh * 3);
    if (!dst) return asvr_err_set(err, "'%s': out of memory rotating a %dx%d image", name, W, H);
    const uint8_t *src = img->pixels;
    for (int y = 0; y < oh; y++) {
        uint8_t *d = dst + (size_t)y * ow * 3;
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = W - 1 - x; sy = y; break;               /* flip left-right */
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;       /* rotate 180 */
            case 4: sx = x; sy = H - 1 - y; break;               /* flip top-bottom */
            case 5: sx = y; sy = x; break;                       /* transpose */
            case 6: sx = y; sy = H - 1 - x; break;               /* rotate 270 (clockwise 90) */
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;       /* transverse */
            default: sx = W - 1 - y; sy = x; break;              /* 8: rotate 90 (counter-clockwise) */
            }
            const uint8_t *s = src + ((size_t)sy * W + sx) * 3;
            d[3 * x] = s[0];
            d[3 * x + 1] = s[1];
            d[3 * x + 2] = s[2];
        }
    }
    free(img->pixels);
    img->pixels = dst;
    img->width = ow;
    img->height = oh;
    return 0;
}

/* ---- JPEG ------------------------------------------------------------------------------------------ */

/* Pillow's CMYK -> RGB: channel = (255 - c) * (255 - k) / 255, rounded as (t + (t >> 8)) >> 8, t = a*b+128. */
static inline uint8_t mul_div255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)((t + (t >> 8)) >> 8);
}

static int decode_jpeg(const uint8_t *data, size_t n, const char *name, const image_decode_opts *opts,
                       image_rgb *out, asvr_error *err) {
    if (n > ULONG_MAX) return asvr_err_set(err, "'%s': JPEG file is too large", name);
    tjhandle tj = tjInitDecompress();
    if (!tj) return asvr_err_set(err, "'%s': cannot start the JPEG decoder: %s", name, tjGetErrorStr2(NULL));
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (tjDecompressHeader3(tj, data, (unsigned long)n, &w, &h, &subsamp, &cs) != 0) {
        asvr_err_set(err, "'%s': bad JPEG header: %s", name, tjGetErrorStr2(tj));
        tjDestroy(tj);
        return -1;
    }
    if (check_dimensions(name, w, h, opts->max_pixels, err) < 0) {
        tjDestroy(tj);
        return -1;
    }
    const int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    const int pf = cmyk ? TJPF_CMYK : TJPF_RGB;
    const size_t bpp = cmyk ? 4 : 3;
    uint8_t *buf = malloc((size_t)w * h * bpp);
    if (!buf) {
        tjDestroy(tj);
        return asvr_err_set(err, "'%s': out of memory for a %dx%d image", name, w, h);
    }
    if (tjDecompress2(tj, data, (unsigned long)n, buf, w, 0, h, pf, 0) != 0) {
        const int warning = tjGetErrorCode(tj) == TJERR_WARNING;
        const char *why = tjGetErrorStr2(tj);
        if (!warning || !opts->accept_jpeg_warnings) {
            if (strstr(why, "Premature end of JPEG file"))
                asvr_err_set(err, "'%s': JPEG data is truncated (%s)%s", name, why,
                             warning ? "; --accept-warnings decodes it anyway" : "");
            else
                asvr_err_set(err, "'%s': JPEG data is corrupt (%s)%s", name, why,
                             warning ? "; --accept-warnings decodes it anyway" : "");
            free(buf);
            tjDestroy(tj);
            return -1;
        }
    }
    tjDestroy(tj);
    if (cmyk) { /* Adobe-inverted CMYK, as Pillow assumes for every 4-channel JPEG */
        const size_t np = (size_t)w * h;
        for (size_t i = 0; i < np; i++) {
            const uint8_t *s = buf + 4 * i;
            const unsigned c = s[0], m = s[1], y = s[2], k = s[3]; /* stored inverted: 255 - value */
            buf[3 * i] = mul_div255(c, k);
            buf[3 * i + 1] = mul_div255(m, k);
            buf[3 * i + 2] = mul_div255(y, k);
        }
        uint8_t *shrunk = realloc(buf, np * 3);
        if (shrunk) buf = shrunk;
    }
    out->width = w;
    out->height = h;
    out->pixels = buf;
    return 0;
}

/* ---- PNG ------------------------------------------------------------------------------------------- */

typedef struct png_source {
    const uint8_t *data;
    size_t n, pos;
    char msg[256];
} png_source;

static void png_read_from_memory(png_structp png, png_bytep dst, size_t len) {
    png_source *s = png_get_io_ptr(png);
    if (len > s->n - s->pos) png_error(png, "PNG data is truncated");
    memcpy(dst, s->data + s->pos, len);
    s->pos += len;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    png_source *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Converts one decoded row (after png_set_packing: one byte per sample below 8 bits, big-endian 16-bit)
 * to RGB with Pillow's rules. */
static void png_row_to_rgb(const uint8_t *src, uint8_t *dst, int w, int color_type, int depth,
                           const uint8_t pal[256][3]) {
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
        if (depth == 16) {
            for (int x = 0; x < w; x++) { /* mode I;16 -> RGB clips at 255 */
                unsigned v = (unsigned)src[2 * x] << 8 | src[2 * x + 1];
                uint8_t g = v > 255 ? 255 : (uint8_t)v;
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g;
            }
        } else {
            const unsigned mul = depth == 1 ? 255 : depth == 2 ? 85 : depth == 4 ? 17 : 1;
            for (int x = 0; x < w; x++) {
                uint8_t g = (uint8_t)(src[x] * mul);
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g;
            }
        }
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
        const int step = depth == 16 ? 4 : 2;
        for (int x = 0; x < w; x++) {
            uint8_t g = src[step * x];
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = g;
        }
        break;
    }
    case PNG_COLOR_TYPE_PALETTE:
        for (int x = 0; x < w; x++) {
            const uint8_t *c = pal[src[x]];
            dst[3 * x] = c[0];
            dst[3 * x + 1] = c[1];
            dst[3 * x + 2] = c[2];
        }
        break;
    case PNG_COLOR_TYPE_RGB:
        if (depth == 16)
            for (int x = 0; x < w; x++) {
                dst[3 * x] = src[6 * x];
                dst[3 * x + 1] = src[6 * x + 2];
                dst[3 * x + 2] = src[6 * x + 4];
            }
        else
            memcpy(dst, src, (size_t)w * 3);
        break;
    default: { /* RGBA */
        const int step = depth == 16 ? 8 : 4, b = depth == 16 ? 2 : 1;
        for (int x = 0; x < w; x++) {
            dst[3 * x] = src[step * x];
            dst[3 * x + 1] = src[step * x + b];
            dst[3 * x + 2] = src[step * x + 2 * b];
        }
        break;
    }
    }
}

static int decode_png(const uint8_t *data, size_t n, const char *name, const image_decode_opts *opts,
                      image_rgb *out, asvr_error *err) {
    png_source src = {data, n, 0, {0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!png) return asvr_err_set(err, "'%s': cannot start the PNG decoder", name);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return asvr_err_set(err, "'%s': cannot start the PNG decoder", name);
    }
    uint8_t *volatile raw = NULL;
    png_bytep *volatile rows = NULL;
    uint8_t *volatile rgb = NULL;
    volatile int stage = 0; /* 0: header, 1: pixels */
    if (setjmp(png_jmpbuf(png))) {
        free(raw);
        free(rows);
        free(rgb);
        png_destroy_read_struct(&png, &info, NULL);
        return asvr_err_set(err, "'%s': %s%s", name, stage ? "bad PNG data: " : "bad PNG header: ", src.msg);
    }
    png_set_read_fn(png, &src, png_read_from_memory);
    /* A CRC error in any chunk is an error (Pillow refuses broken chunks too). */
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color_type, &interlace, NULL, NULL);
    if (check_dimensions(name, (long long)w, (long long)h, opts->max_pixels, err) < 0) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    uint8_t pal[256][3];
    memset(pal, 0, sizeof pal);
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int npal = 0;
        if (!png_get_PLTE(png, info, &plte, &npal) || !plte) png_error(png, "palette image without a PLTE chunk");
        /* Pillow: entries past the PLTE chunk stay 0 */
        for (int i = 0; i < npal && i < 256; i++) {
            pal[i][0] = plte[i].red;
            pal[i][1] = plte[i].green;
            pal[i][2] = plte[i].blue;
        }
    }
    stage = 1;
    if (depth < 8) png_set_packing(png);
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);
    const size_t rgb_row = (size_t)w * 3;
    rgb = malloc(rgb_row * h);
    if (!rgb) png_error(png, "out of memory");
    const int direct = color_type == PNG_COLOR_TYPE_RGB && depth == 8 && rowbytes == rgb_row;
    if (interlace == PNG_INTERLACE_NONE) {
        if (!direct) {
            raw = malloc(rowbytes);
            if (!raw) png_error(png, "out of memory");
        }
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *dst = rgb + rgb_row * y;
            if (direct) {
                png_read_row(png, dst, NULL);
            } else {
                png_read_row(png, raw, NULL);
                png_row_to_rgb(raw, dst, (int)w, color_type, depth, (const uint8_t(*)[3])pal);
            }
        }
    } else {
        raw = malloc(rowbytes * h);
        rows = malloc(sizeof(png_bytep) * h);
        if (!raw || !rows) png_error(png, "out of memory");
        for (png_uint_32 y = 0; y < h; y++) rows[y] = raw + rowbytes * y;
        png_read_image(png, rows);
        for (png_uint_32 y = 0; y < h; y++)
            png_row_to_rgb(rows[y], rgb + rgb_row * y, (int)w, color_type, depth, (const uint8_t(*)[3])pal);
    }
    free(raw);
    free(rows);
    out->width = (int)w;
    out->height = (int)h;
    out->pixels = rgb;
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

/* ---- entry points ---------------------------------------------------------------------------------- */

/* WebP (RealWorldQA's images) through libwebp: RGB with the alpha dropped, as Pillow's convert('RGB'). */
static int decode_webp(const uint8_t *data, size_t n, const char *name, const image_decode_opts *opts, image_rgb *out,
                       asvr_error *err) {
    int w = 0, h = 0;
    if (!WebPGetInfo(data, n, &w, &h)) return asvr_err_set(err, "'%s': not a valid WebP file (bad header)", name);
    if (check_dimensions(name, w, h, opts->max_pixels, err) < 0) return -1;
    size_t bytes = (size_t)w * (size_t)h * 3;
    uint8_t *px = asvr_malloc(bytes, "decoded WebP pixels");
    if (!WebPDecodeRGBInto(data, n, px, bytes, w * 3)) {
        free(px);
        return asvr_err_set(err, "'%s': WebP data is corrupt or truncated", name);
    }
    out->width = w;
    out->height = h;
    out->pixels = px;
    return 0;
}

int image_decode(const uint8_t *data, size_t n, const char *name, const image_decode_opts *opts,
                 image_rgb *out, asvr_error *err) {
    image_decode_opts defaults;
    if (!opts) {
        image_decode_opts_default(&defaults);
        opts = &defaults;
    }
    if (!name) name = "<memory>";
    memset(out, 0, sizeof *out);
    if (n == 0) return asvr_err_set(err, "'%s': empty file", name);
    int rc;
    image_format f = image_detect_format(data, n);
    if (f == IMAGE_FORMAT_JPEG) {
        rc = decode_jpeg(data, n, name, opts, out, err);
    } else if (f == IMAGE_FORMAT_PNG) {
        rc = decode_png(data, n, name, opts, out, err);
    } else if (f == IMAGE_FORMAT_WEBP) {
        rc = decode_webp(data, n, name, opts, out, err);
    } else {
        char shown[4 * 4 + 1];
        size_t k = 0;
        for (size_t i = 0; i < n && i < 4; i++) {
            uint8_t c = data[i];
            if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') shown[k++] = (char)c;
            else k += (size_t)snprintf(shown + k, sizeof shown - k, "\\x%02x", c);
        }
        shown[k] = 0;
        return asvr_err_set(err, "'%s': not a JPEG, PNG or WebP file (starts with '%s')", name, shown);
    }
    if (rc < 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    if (opts->apply_exif_orientation) {
        int o = f == IMAGE_FORMAT_JPEG ? exif_orientation_jpeg(data, n) : f == IMAGE_FORMAT_PNG ? exif_orientation_png(data, n) : 1;
        if (apply_orientation(out, o, name, err) < 0) {
            image_free(out);
            return -1;
        }
    }
    return 0;
}

int image_decode_file(const char *path, const image_decode_opts *opts, image_rgb *out, asvr_error *err) {
    memset(out, 0, sizeof *out);
    asvr_mmap m;
    if (asvr_mmap_open(&m, path, err) < 0) return -1;
    int rc = image_decode(m.data, m.size, path, opts, out, err);
    asvr_mmap_close(&m);
    return rc;
}
