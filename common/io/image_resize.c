/* image_resize.c — pad/squash, Pillow-exact bicubic resize, and CHW normalization. See image.h.
 *
 * The resize follows the published algorithm of Pillow's two-pass resampler: a separable bicubic
 * filter (a = -0.5, support 2 scaled by max(in/out, 1)), per-output weights normalized by their sum
 * and rounded to 22-bit fixed point, an int32 accumulator started at 2^21, and each pass rounded and
 * clipped to uint8 — horizontal first, then vertical (vertical first when the height shrinks much more
 * than the width, see image_resize_vertical_first), each skipped when its axis keeps its size.
 * Padding is never materialized: the rows of the square canvas that are all pad colour are resampled
 * once and shared, and padded columns are filled into one scratch row at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"

#if defined(__GNUC__) && !defined(__clang__)
#define HOT_LOOP __attribute__((optimize("O3")))
#else
#define HOT_LOOP
#endif

enum { PRECISION_BITS = 22 };

void image_preprocess_opts_default(image_preprocess_opts *opts) {
    opts->policy = IMAGE_POLICY_PAD;
    opts->size = 384;
    opts->pad[0] = opts->pad[1] = opts->pad[2] = 127;
}

int image_policy_parse(const char *s, image_policy *out) {
    if (strcmp(s, "pad") == 0) *out = IMAGE_POLICY_PAD;
    else if (strcmp(s, "squash") == 0) *out = IMAGE_POLICY_SQUASH;
    else return -1;
    return 0;
}

const char *image_policy_name(image_policy p) { return p == IMAGE_POLICY_PAD ? "pad" : "squash"; }

/* ---- coefficients ---------------------------------------------------------------------------------- */

typedef struct resample_axis {
    int out_size, ksize;
    int *first;      /* first input index of each output */
    int *count;      /* number of taps of each output */
    int32_t *k;      /* out_size x ksize fixed-point weights */
    int32_t *ksum;   /* sum of each output's weights (for runs of constant pad colour) */
} resample_axis;

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static void axis_free(resample_axis *a) {
    free(a->first);
    free(a->count);
    free(a->k);
    free(a->ksum);
    memset(a, 0, sizeof *a);
}

static int axis_compute(resample_axis *a, int in_size, int out_size, asvr_error *err) {
    memset(a, 0, sizeof *a);
    const double scale = (double)in_size / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * filterscale;
    const double inv = 1.0 / filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    a->out_size = out_size;
    a->ksize = ksize;
    a->first = malloc(sizeof(int) * (size_t)out_size);
    a->count = malloc(sizeof(int) * (size_t)out_size);
    a->k = malloc(sizeof(int32_t) * (size_t)out_size * ksize);
    a->ksum = malloc(sizeof(int32_t) * (size_t)out_size);
    double *w = malloc(sizeof(double) * (size_t)ksize);
    if (!a->first || !a->count || !a->k || !a->ksum || !w) {
        free(w);
        axis_free(a);
        return asvr_err_set(err, "out of memory for resize coefficients (%d -> %d)", in_size, out_size);
    }
    for (int o = 0; o < out_size; o++) {
        const double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        if (n > ksize) n = ksize;
        if (n < 0) n = 0;
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            w[i] = bicubic_filter((i + lo - center + 0.5) * inv);
            sum += w[i];
        }
        int32_t *k = a->k + (size_t)o * ksize;
        for (int i = 0; i < n; i++) {
            double v = sum != 0.0 ? w[i] / sum : w[i];
            k[i] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        for (int i = n; i < ksize; i++) k[i] = 0;
        int64_t ks = 0;
        for (int i = 0; i < n; i++) ks += k[i];
        a->ksum[o] = (int32_t)ks;
        a->first[o] = lo;
        a->count[o] = n;
    }
    free(w);
    return 0;
}

static inline uint8_t clip_fixed(int32_t ss) {
    int32_t v = ss >> PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* One row: in (RGB, any width) -> out (RGB, a->out_size wide). */
HOT_LOOP static void resample_row_h(const uint8_t *restrict in, uint8_t *restrict out, const resample_axis *a) {
    const int ksize = a->ksize;
    for (int o = 0; o < a->out_size; o++) {
        const uint8_t *p = in + (size_t)a->first[o] * 3;
        const int32_t *k = a->k + (size_t)o * ksize;
        const int n = a->count[o];
        int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int i = 0; i < n; i++) {
            const int32_t c = k[i];
            s0 += p[3 * i] * c;
            s1 += p[3 * i + 1] * c;
            s2 += p[3 * i + 2] * c;
        }
        out[3 * o] = clip_fixed(s0);
        out[3 * o + 1] = clip_fixed(s1);
        out[3 * o + 2] = clip_fixed(s2);
    }
}

/* One row of a padded canvas: `w` image pixels at column ox, pad colour elsewhere (w = 0: all pad).
 * The sum over the window is split exactly (integer arithmetic) into pad * sum(k) plus the image
 * pixels' difference from the pad colour, so pad columns cost nothing. */
static void resample_row_h_padded(const uint8_t *img, int ox, int w, const uint8_t pad[3], uint8_t *out,
                                  const resample_axis *a) {
    const int ksize = a->ksize;
    for (int o = 0; o < a->out_size; o++) {
        const int lo = a->first[o], hi = lo + a->count[o];
        const int32_t *k = a->k + (size_t)o * ksize;
        const int64_t ks = a->ksum[o];
        int64_t s0 = (1 << (PRECISION_BITS - 1)) + ks * pad[0], s1 = (1 << (PRECISION_BITS - 1)) + ks * pad[1],
                s2 = (1 << (PRECISION_BITS - 1)) + ks * pad[2];
        const int a0 = lo > ox ? lo : ox, a1 = hi < ox + w ? hi : ox + w;
        for (int i = a0; i < a1; i++) {
            const uint8_t *p = img + (size_t)(i - ox) * 3;
            const int64_t c = k[i - lo];
            s0 += c * (p[0] - pad[0]);
            s1 += c * (p[1] - pad[1]);
            s2 += c * (p[2] - pad[2]);
        }
        out[3 * o] = clip_fixed((int32_t)s0);
        out[3 * o + 1] = clip_fixed((int32_t)s1);
        out[3 * o + 2] = clip_fixed((int32_t)s2);
    }
}

/* Vertical pass where rows equal to `pad_row` are the (shared) resampled pad row: their weights are
 * summed once and applied to it, so all-pad rows cost nothing. */
HOT_LOOP static void resample_row_v_padded(const uint8_t *const *rows, const uint8_t *pad_row, const int32_t *k,
                                           int n, int len, int32_t *restrict acc, uint8_t *restrict out) {
    int32_t kpad = 0;
    for (int i = 0; i < n; i++)
        if (rows[i] == pad_row) kpad += k[i];
    for (int x = 0; x < len; x++) acc[x] = (1 << (PRECISION_BITS - 1)) + kpad * pad_row[x];
    for (int i = 0; i < n; i++) {
        if (rows[i] == pad_row) continue;
        const uint8_t *restrict r = rows[i];
        const int32_t c = k[i];
        for (int x = 0; x < len; x++) acc[x] += r[x] * c;
    }
    for (int x = 0; x < len; x++) out[x] = clip_fixed(acc[x]);
}

/* One output row of the vertical pass: rows[first..first+n) weighted by k, `len` bytes wide. */
HOT_LOOP static void resample_row_v(const uint8_t *const *rows, const int32_t *k, int n, int len,
                                    int32_t *restrict acc, uint8_t *restrict out) {
    for (int x = 0; x < len; x++) acc[x] = 1 << (PRECISION_BITS - 1);
    for (int i = 0; i < n; i++) {
        const uint8_t *restrict r = rows[i];
        const int32_t c = k[i];
        for (int x = 0; x < len; x++) acc[x] += r[x] * c;
    }
    for (int x = 0; x < len; x++) out[x] = clip_fixed(acc[x]);
}

/* A virtual canvas: the image placed at (ox, oy) on a cw x ch field of pad colour. */
typedef struct canvas {
    const uint8_t *img;
    int w, h, cw, ch, ox, oy;
    const uint8_t *pad_row;  /* cw*3 bytes of pad colour */
    uint8_t pad[3];
    uint8_t *scratch;        /* cw*3 bytes, pad colour outside the image columns */
} canvas;

/* Row y of the canvas; may point into scratch (valid until the next call). */
static const uint8_t *canvas_row(const canvas *c, int y) {
    if (y < c->oy || y >= c->oy + c->h) return c->pad_row;
    const uint8_t *r = c->img + (size_t)(y - c->oy) * c->w * 3;
    if (c->cw == c->w) return r;
    memcpy(c->scratch + (size_t)c->ox * 3, r, (size_t)c->w * 3);
    return c->scratch;
}

/* The padded canvas is square, so Pillow's order rule always picks horizontal first here. */
static int resize_canvas(const canvas *c, uint8_t *out, int S, asvr_error *err) {
    const size_t out_row = (size_t)S * 3;
    if (c->cw == S && c->ch == S) {
        for (int y = 0; y < S; y++) memcpy(out + out_row * y, canvas_row(c, y), out_row);
        return 0;
    }
    const int need_h = c->cw != S, need_v = c->ch != S;
    resample_axis ax = {0}, ay = {0};
    if (need_h && axis_compute(&ax, c->cw, S, err) < 0) return -1;
    if (need_v && axis_compute(&ay, c->ch, S, err) < 0) {
        axis_free(&ax);
        return -1;
    }
    if (!need_v) { /* horizontal only */
        for (int y = 0; y < S; y++) resample_row_h(canvas_row(c, y), out + out_row * y, &ax);
        axis_free(&ax);
        return 0;
    }
    /* Rows the vertical pass reads. */
    const int y0 = ay.first[0];
    const int y1 = ay.first[S - 1] + ay.count[S - 1];
    const int nrows = y1 > y0 ? y1 - y0 : 0;
    const uint8_t **rows = malloc(sizeof(*rows) * (size_t)(nrows + 1));
    int32_t *acc = malloc(sizeof(int32_t) * out_row);
    uint8_t *tmp = NULL, *pad_h = NULL;
    int rc = 0;
    if (!rows || !acc) {
        rc = asvr_err_set(err, "out of memory resizing to %d", S);
        goto done;
    }
    if (need_h) {
        tmp = malloc(out_row * (size_t)(nrows ? nrows : 1));
        pad_h = malloc(out_row);
        if (!tmp || !pad_h) {
            rc = asvr_err_set(err, "out of memory resizing to %d", S);
            goto done;
        }
        resample_row_h_padded(NULL, 0, 0, c->pad, pad_h, &ax); /* an all-pad row, shared */
        for (int i = 0; i < nrows; i++) {
            const int y = y0 + i;
            if (y < c->oy || y >= c->oy + c->h) {
                rows[i] = pad_h;
                continue;
            }
            const uint8_t *src = c->img + (size_t)(y - c->oy) * c->w * 3;
            if (c->cw == c->w) resample_row_h(src, tmp + out_row * i, &ax);
            else resample_row_h_padded(src, c->ox, c->w, c->pad, tmp + out_row * i, &ax);
            rows[i] = tmp + out_row * i;
        }
    } else {
        if (c->cw != c->w) { /* padded columns without a horizontal pass: cannot happen for pad/squash */
            rc = asvr_err_set(err, "internal: vertical-only resize of a column-padded canvas");
            goto done;
        }
        for (int i = 0; i < nrows; i++) rows[i] = canvas_row(c, y0 + i);
    }
    for (int o = 0; o < S; o++)
        resample_row_v_padded(rows + (ay.first[o] - y0), pad_h, ay.k + (size_t)o * ay.ksize, ay.count[o],
                              (int)out_row, acc, out + out_row * o);
done:
    free(rows);
    free(acc);
    free(tmp);
    free(pad_h);
    axis_free(&ax);
    axis_free(&ay);
    return rc;
}

/* Pillow 13 runs the vertical pass first when the height shrinks by more than twice the pixels the
 * width shrinks by (the intermediate rounding makes the order visible in the output). */
int image_resize_vertical_first(int w, int h, int ow, int oh) {
    const long long dw = w > ow ? (long long)w - ow : 0;
    return oh < h && (long long)h - oh > 2 * dw;
}

int image_resize_bicubic(const uint8_t *in, int w, int h, uint8_t *out, int ow, int oh, asvr_error *err) {
    if (w <= 0 || h <= 0 || ow <= 0 || oh <= 0)
        return asvr_err_set(err, "resize %dx%d -> %dx%d: sizes must be positive", w, h, ow, oh);
    /* General (non-square) form: a squash canvas with separate output width and height. */
    const size_t out_row = (size_t)ow * 3;
    if (w == ow && h == oh) {
        memcpy(out, in, out_row * oh);
        return 0;
    }
    const int need_h = w != ow, need_v = h != oh;
    resample_axis ax = {0}, ay = {0};
    uint8_t *tmp = NULL;
    const uint8_t **rows = NULL;
    int32_t *acc = NULL;
    int rc = 0;
    if (need_h && axis_compute(&ax, w, ow, err) < 0) return -1;
    if (need_v && axis_compute(&ay, h, oh, err) < 0) {
        axis_free(&ax);
        return -1;
    }
    if (!need_v) {
        for (int y = 0; y < h; y++) resample_row_h(in + (size_t)y * w * 3, out + out_row * y, &ax);
        goto done;
    }
    if (need_h && image_resize_vertical_first(w, h, ow, oh)) {
        /* vertical pass over the full width into oh rows, then the horizontal pass */
        const size_t in_row = (size_t)w * 3;
        rows = malloc(sizeof(*rows) * (size_t)h);
        acc = malloc(sizeof(int32_t) * in_row);
        tmp = malloc(in_row * (size_t)oh);
        if (!rows || !acc || !tmp) {
            rc = asvr_err_set(err, "out of memory resizing %dx%d -> %dx%d", w, h, ow, oh);
            goto done;
        }
        for (int y = 0; y < h; y++) rows[y] = in + in_row * y;
        for (int o = 0; o < oh; o++) {
            resample_row_v(rows + ay.first[o], ay.k + (size_t)o * ay.ksize, ay.count[o], (int)in_row, acc,
                           tmp + in_row * o);
            resample_row_h(tmp + in_row * o, out + out_row * o, &ax);
        }
        goto done;
    }
    const int y0 = ay.first[0], y1 = ay.first[oh - 1] + ay.count[oh - 1];
    const int nrows = y1 > y0 ? y1 - y0 : 0;
    rows = malloc(sizeof(*rows) * (size_t)(nrows + 1));
    acc = malloc(sizeof(int32_t) * out_row);
    if (need_h) tmp = malloc(out_row * (size_t)(nrows ? nrows : 1));
    if (!rows || !acc || (need_h && !tmp)) {
        rc = asvr_err_set(err, "out of memory resizing %dx%d -> %dx%d", w, h, ow, oh);
        goto done;
    }
    for (int i = 0; i < nrows; i++) {
        const uint8_t *src = in + (size_t)(y0 + i) * w * 3;
        if (need_h) {
            resample_row_h(src, tmp + out_row * i, &ax);
            rows[i] = tmp + out_row * i;
        } else {
            rows[i] = src;
        }
    }
    for (int o = 0; o < oh; o++)
        resample_row_v(rows + (ay.first[o] - y0), ay.k + (size_t)o * ay.ksize, ay.count[o], (int)out_row, acc,
                       out + out_row * o);
done:
    free(rows);
    free(acc);
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return rc;
}

int image_preprocess(const image_rgb *in, const image_preprocess_opts *opts, uint8_t *out, asvr_error *err) {
    const int S = opts->size;
    if (S <= 0 || S > 65536) return asvr_err_set(err, "preprocess: size %d is out of range (1..65536)", S);
    if (!in || !in->pixels || in->width <= 0 || in->height <= 0)
        return asvr_err_set(err, "preprocess: empty input image");
    canvas c = {in->pixels, in->width, in->height, in->width, in->height, 0, 0, NULL, {0, 0, 0}, NULL};
    memcpy(c.pad, opts->pad, 3);
    if (opts->policy == IMAGE_POLICY_PAD && in->width != in->height) {
        if (in->width > in->height) {
            c.cw = c.ch = in->width;
            c.oy = (in->width - in->height) / 2;
        } else {
            c.cw = c.ch = in->height;
            c.ox = (in->height - in->width) / 2;
        }
    } else if (opts->policy != IMAGE_POLICY_PAD && opts->policy != IMAGE_POLICY_SQUASH) {
        return asvr_err_set(err, "preprocess: unknown policy %d", (int)opts->policy);
    }
    if (c.cw == c.w && c.ch == c.h) return image_resize_bicubic(in->pixels, c.w, c.h, out, S, S, err);
    uint8_t *pad_row = NULL, *scratch = NULL;
    {
        pad_row = malloc((size_t)c.cw * 3);
        scratch = malloc((size_t)c.cw * 3);
        if (!pad_row || !scratch) {
            free(pad_row);
            free(scratch);
            return asvr_err_set(err, "preprocess: out of memory for a %d-wide canvas", c.cw);
        }
        for (int x = 0; x < c.cw; x++) memcpy(pad_row + 3 * x, opts->pad, 3);
        memcpy(scratch, pad_row, (size_t)c.cw * 3);
        c.pad_row = pad_row;
        c.scratch = scratch;
    }
    int rc = resize_canvas(&c, out, S, err);
    free(pad_row);
    free(scratch);
    return rc;
}

void image_normalize_chw(const uint8_t *rgb, int w, int h, const float mean[3], const float std[3], float *out) {
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            const float x = (float)(v * (1.0 / 255.0));
            lut[c][v] = (x - mean[c]) / std[c];
        }
    const size_t np = (size_t)w * h;
    for (int c = 0; c < 3; c++) {
        float *o = out + np * c;
        const float *l = lut[c];
        for (size_t i = 0; i < np; i++) o[i] = l[rgb[3 * i + c]];
    }
}
