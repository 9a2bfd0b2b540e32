/* asvr-demo-gen — writes the embedded demo's data: a small synthetic visual-instruction dataset of
 * procedurally drawn shapes, seeded and byte-for-byte reproducible.
 *
 *   DIR/images/train/NNNNNN.{jpg,png}   training images (about half JPEG, half PNG)
 *   DIR/images/eval/NNNNNN.{jpg,png}    held-out images, used only by eval.jsonl
 *   DIR/pt.json                         stage pt: one caption sample per training image (LLaVA JSON)
 *   DIR/it.json                         stage it: 1-3 question rounds per training image, plus ~5%
 *                                       text-only samples (LLaVA JSON)
 *   DIR/eval.jsonl                      benchmark questions on the held-out images (demo_yesno,
 *                                       demo_mc, demo_short), one JSON object per line
 *   DIR/manifest.json                   the request (seed, sizes), counts, and a hash of every text file;
 *                                       written last: a directory without it is incomplete
 *
 * Image keys in the JSON files are relative to DIR/images (use --image-root DIR/images).
 * The question text of eval.jsonl is the whole prompt (instruction included) and is worded exactly
 * like the training questions, so a tiny model can learn it. Every file is written atomically; a
 * rerun with the same request on a finished DIR does nothing. Drawing is integer-only (4x4
 * supersampled coverage), so the pixels do not depend on the compiler's floating point.
 */
#include <dirent.h>
#include <jansson.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "base/cli.h"
#include "base/error.h"
#include "base/fsutil.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/progress.h"

#define GEN_FORMAT_VERSION 1
#define MAX_SHAPES 3
#define MAX_SIZES 16
#define JPEG_QUALITY 92

/* ---- random numbers: xoshiro256** seeded by splitmix64, one stream per image ------------------ */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull ^ (stream << 48) ^ index;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, n), n >= 1 (rejection: no modulo bias). */
static int rng_below(rng *r, int n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % (uint64_t)n;
    uint64_t v;
    do v = rng_next(r);
    while (v >= lim);
    return (int)(v % (uint64_t)n);
}

/* Uniform in [lo, hi]. */
static int rng_range(rng *r, int lo, int hi) { return lo + rng_below(r, hi - lo + 1); }

/* ---- the world: shapes, colours, scenes ------------------------------------------------------- */

enum { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, N_SHAPE_KINDS };
static const char *const SHAPE_NAME[N_SHAPE_KINDS] = {"circle", "square", "triangle"};
static const char *const SHAPE_PLURAL[N_SHAPE_KINDS] = {"circles", "squares", "triangles"};

enum { N_COLOURS = 5 };
static const char *const COLOUR_NAME[N_COLOURS] = {"red", "green", "blue", "yellow", "purple"};
static const uint8_t COLOUR_RGB[N_COLOURS][3] = {
    {215, 40, 40}, {40, 165, 60}, {40, 80, 215}, {235, 200, 30}, {140, 60, 180}};
/* Light, unsaturated backgrounds: never mistaken for a shape colour. */
enum { N_BACKGROUNDS = 4 };
static const uint8_t BACKGROUND_RGB[N_BACKGROUNDS][3] = {{245, 245, 245}, {232, 232, 232}, {244, 238, 226}, {222, 228, 234}};

static const char *const COUNT_WORD[] = {"zero", "one", "two", "three"};
static const char *const ARTICLE_COUNT[] = {"no", "a", "two", "three"};

typedef struct shape {
    int kind, colour;
    int cx, cy, r; /* centre and half-extent in pixels */
    uint8_t rgb[3];
} shape;

typedef struct scene {
    int w, h;
    int n;
    shape s[MAX_SHAPES];
    int leftmost;   /* index of the shape with the smallest cx (unique: centres are >= 4 px apart in x) */
    int largest;    /* index of the clearly largest shape (r >= 1.35 x every other), -1 when none */
    int noisy;
    uint8_t bg[3];
} scene;

typedef struct img_size {
    int w, h;
} img_size;

static int overlaps(const shape *a, const shape *b) {
    int dx = a->cx - b->cx, dy = a->cy - b->cy, m = a->r + b->r + 3;
    return dx * dx + dy * dy < m * m;
}

static void scene_make(rng *r, const img_size *sizes, int nsizes, int max_shapes, scene *sc) {
    memset(sc, 0, sizeof *sc);
    const img_size *z = &sizes[rng_below(r, nsizes)];
    sc->w = z->w;
    sc->h = z->h;
    int m = sc->w < sc->h ? sc->w : sc->h;
    /* one shape per image draws it larger (a fifth to a third of the short side as radius) */
    int lo = max_shapes == 1 ? 20 : 10, hi = max_shapes == 1 ? 33 : 22;
    int rmin = m * lo / 100 > 4 ? m * lo / 100 : 4, rmax = m * hi / 100 > rmin ? m * hi / 100 : rmin;
    int want = rng_range(r, 1, max_shapes);
    for (int attempt = 0; attempt < 400 && sc->n < want; attempt++) {
        shape s;
        s.kind = rng_below(r, N_SHAPE_KINDS);
        s.colour = rng_below(r, N_COLOURS);
        s.r = rng_range(r, rmin, rmax);
        if (sc->w - 2 * s.r - 4 < 2 || sc->h - 2 * s.r - 4 < 2) continue;
        s.cx = rng_range(r, s.r + 2, sc->w - s.r - 3);
        s.cy = rng_range(r, s.r + 2, sc->h - s.r - 3);
        for (int c = 0; c < 3; c++) {
            int v = COLOUR_RGB[s.colour][c] + rng_range(r, -12, 12);
            s.rgb[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        int ok = 1;
        for (int i = 0; i < sc->n && ok; i++) {
            int dx = s.cx - sc->s[i].cx;
            if (overlaps(&s, &sc->s[i]) || (dx < 4 && dx > -4)) ok = 0;
        }
        if (ok) sc->s[sc->n++] = s;
    }
    /* rmin is small enough that the first shape always fits */
    sc->leftmost = 0;
    for (int i = 1; i < sc->n; i++)
        if (sc->s[i].cx < sc->s[sc->leftmost].cx) sc->leftmost = i;
    sc->largest = -1;
    if (sc->n >= 2) {
        int big = 0;
        for (int i = 1; i < sc->n; i++)
            if (sc->s[i].r > sc->s[big].r) big = i;
        int clear = 1;
        for (int i = 0; i < sc->n; i++)
            if (i != big && sc->s[big].r * 100 < sc->s[i].r * 135) clear = 0;
        if (clear) sc->largest = big;
    }
    memcpy(sc->bg, BACKGROUND_RGB[rng_below(r, N_BACKGROUNDS)], 3);
    sc->noisy = rng_below(r, 2);
}

/* ---- drawing (integer geometry in 1/8 pixel units, 4x4 samples per pixel) --------------------- */

static int64_t edge(int64_t ax, int64_t ay, int64_t bx, int64_t by, int64_t px, int64_t py) {
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

/* Whether the sample point (px, py), in 1/8 px, is inside shape s. */
static int inside(const shape *s, int64_t px, int64_t py) {
    int64_t cx = 8 * (int64_t)s->cx, cy = 8 * (int64_t)s->cy, R = 8 * (int64_t)s->r;
    int64_t dx = px - cx, dy = py - cy;
    switch (s->kind) {
    case SHAPE_CIRCLE: return dx * dx + dy * dy <= R * R;
    case SHAPE_SQUARE: {
        int64_t h = R * 7 / 8; /* about the circle's area */
        return dx >= -h && dx <= h && dy >= -h && dy <= h;
    }
    default: { /* upward triangle: apex at the top of the box, base at 3/4 below the centre */
        int64_t ax = cx, ay = cy - R, bx = cx + R, by = cy + R * 3 / 4, qx = cx - R, qy = by;
        int64_t e0 = edge(ax, ay, bx, by, px, py), e1 = edge(bx, by, qx, qy, px, py), e2 = edge(qx, qy, ax, ay, px, py);
        return (e0 >= 0 && e1 >= 0 && e2 >= 0) || (e0 <= 0 && e1 <= 0 && e2 <= 0);
    }
    }
}

static void scene_draw(const scene *sc, rng *r, uint8_t *px) {
    for (int y = 0; y < sc->h; y++)
        for (int x = 0; x < sc->w; x++) {
            int noise = sc->noisy ? rng_range(r, -7, 7) : 0;
            for (int c = 0; c < 3; c++) {
                int v = sc->bg[c] + noise;
                px[3 * ((size_t)y * sc->w + x) + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    for (int i = 0; i < sc->n; i++) {
        const shape *s = &sc->s[i];
        int x0 = s->cx - s->r - 1, x1 = s->cx + s->r + 1, y0 = s->cy - s->r - 1, y1 = s->cy + s->r + 1;
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < sc->h; y++)
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < sc->w; x++) {
                int cover = 0; /* of 16 */
                for (int sy = 0; sy < 4; sy++)
                    for (int sx = 0; sx < 4; sx++)
                        cover += inside(s, 8 * (int64_t)x + 2 * sx + 1 - 4, 8 * (int64_t)y + 2 * sy + 1 - 4);
                if (!cover) continue;
                uint8_t *p = &px[3 * ((size_t)y * sc->w + x)];
                for (int c = 0; c < 3; c++) p[c] = (uint8_t)((p[c] * (16 - cover) + s->rgb[c] * cover + 8) / 16);
            }
    }
}

/* ---- encoding to memory ------------------------------------------------------------------------ */

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void png_mem_write(png_structp png, png_bytep data, png_size_t len) {
    membuf *m = png_get_io_ptr(png);
    if (m->n + len > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->n + len) cap *= 2;
        m->p = asvr_realloc(m->p, cap, "a PNG being encoded");
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, len);
    m->n += len;
}

static void png_mem_flush(png_structp png) { (void)png; }

static void encode_png(const uint8_t *px, int w, int h, membuf *out) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    CHECK(png != NULL, "", "libpng: png_create_write_struct failed");
    png_infop info = png_create_info_struct(png);
    CHECK(info != NULL, "", "libpng: png_create_info_struct failed");
    if (setjmp(png_jmpbuf(png))) ASVR_FATAL("", "libpng failed encoding a %dx%d image", w, h);
    png_set_write_fn(png, out, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(px + 3 * (size_t)y * w));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
}

/* ---- questions: the one place their wording lives (training and eval share it) --------------- */

#define SUFFIX_WORD "\nAnswer the question using a single word or phrase."
#define SUFFIX_MC "\nAnswer with the option's letter from the given choices directly."
#define MC_OPTIONS "\nA. circle\nB. square\nC. triangle"

enum {
    Q_YESNO_SHAPE,   /* Is there a <shape> in the image? */
    Q_YESNO_COLOUR,  /* Is there a <colour> shape in the image? */
    Q_COLOUR_ONLY,   /* What colour is the shape?  (one shape) */
    Q_COLOUR_LEFT,   /* What colour is the left-most shape?  (two or more) */
    Q_COLOUR_LARGEST,/* What colour is the largest shape?  (a clear largest) */
    Q_COUNT,         /* How many shapes are there? */
    Q_WHICH_SHAPE,   /* Which shape is <colour>?  (exactly one shape of that colour), word answer */
    Q_MC_WHICH,      /* the same as multiple choice */
    Q_MC_LEFT,       /* What shape is the left-most shape? as multiple choice */
    N_QKINDS
};
static const char *const QKIND_NAME[N_QKINDS] = {"shape_exists", "colour_exists", "colour_only", "colour_leftmost",
                                                 "colour_largest", "count", "which_shape", "which_shape",
                                                 "leftmost_shape"};

typedef struct qa {
    int kind;
    char q[320];
    char a[32];
} qa;

static int colour_count(const scene *sc, int colour) {
    int k = 0;
    for (int i = 0; i < sc->n; i++) k += sc->s[i].colour == colour;
    return k;
}

static int shape_count(const scene *sc, int kind) {
    int k = 0;
    for (int i = 0; i < sc->n; i++) k += sc->s[i].kind == kind;
    return k;
}

/* Fills *out with a question of the given kind; yes < 0: either answer, else 1 = "yes", 0 = "no".
 * Returns 0, or -1 when the scene cannot support it. */
static int make_question(const scene *sc, int kind, int yes, rng *r, qa *out) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    switch (kind) {
    case Q_YESNO_SHAPE:
    case Q_YESNO_COLOUR: {
        int nopt = kind == Q_YESNO_SHAPE ? N_SHAPE_KINDS : N_COLOURS, cand[N_COLOURS], nc = 0;
        for (int v = 0; v < nopt; v++) {
            int present = kind == Q_YESNO_SHAPE ? shape_count(sc, v) > 0 : colour_count(sc, v) > 0;
            if (yes < 0 || present == yes) cand[nc++] = v;
        }
        if (!nc) return -1;
        int v = cand[rng_below(r, nc)];
        int present = kind == Q_YESNO_SHAPE ? shape_count(sc, v) > 0 : colour_count(sc, v) > 0;
        if (kind == Q_YESNO_SHAPE) snprintf(out->q, sizeof out->q, "Is there a %s in the image?" SUFFIX_WORD, SHAPE_NAME[v]);
        else snprintf(out->q, sizeof out->q, "Is there a %s shape in the image?" SUFFIX_WORD, COLOUR_NAME[v]);
        snprintf(out->a, sizeof out->a, "%s", present ? "yes" : "no");
        return 0;
    }
    case Q_COLOUR_ONLY:
        if (sc->n != 1) return -1;
        snprintf(out->q, sizeof out->q, "What colour is the shape?" SUFFIX_WORD);
        snprintf(out->a, sizeof out->a, "%s", COLOUR_NAME[sc->s[0].colour]);
        return 0;
    case Q_COLOUR_LEFT:
        if (sc->n < 2) return -1;
        snprintf(out->q, sizeof out->q, "What colour is the left-most shape?" SUFFIX_WORD);
        snprintf(out->a, sizeof out->a, "%s", COLOUR_NAME[sc->s[sc->leftmost].colour]);
        return 0;
    case Q_COLOUR_LARGEST:
        if (sc->largest < 0) return -1;
        snprintf(out->q, sizeof out->q, "What colour is the largest shape?" SUFFIX_WORD);
        snprintf(out->a, sizeof out->a, "%s", COLOUR_NAME[sc->s[sc->largest].colour]);
        return 0;
    case Q_COUNT:
        snprintf(out->q, sizeof out->q, "How many shapes are there?" SUFFIX_WORD);
        snprintf(out->a, sizeof out->a, "%s", COUNT_WORD[sc->n]);
        return 0;
    case Q_WHICH_SHAPE:
    case Q_MC_WHICH: {
        int cand[MAX_SHAPES], nc = 0;
        for (int i = 0; i < sc->n; i++)
            if (colour_count(sc, sc->s[i].colour) == 1) cand[nc++] = i;
        if (!nc) return -1;
        const shape *s = &sc->s[cand[rng_below(r, nc)]];
        if (kind == Q_WHICH_SHAPE) {
            snprintf(out->q, sizeof out->q, "Which shape is %s?" SUFFIX_WORD, COLOUR_NAME[s->colour]);
            snprintf(out->a, sizeof out->a, "%s", SHAPE_NAME[s->kind]);
        } else {
            snprintf(out->q, sizeof out->q, "Which shape is %s?" MC_OPTIONS SUFFIX_MC, COLOUR_NAME[s->colour]);
            snprintf(out->a, sizeof out->a, "%c", 'A' + s->kind);
        }
        return 0;
    }
    case Q_MC_LEFT:
        snprintf(out->q, sizeof out->q, "What shape is the left-most shape?" MC_OPTIONS SUFFIX_MC);
        snprintf(out->a, sizeof out->a, "%c", 'A' + sc->s[sc->leftmost].kind);
        return 0;
    }
    return -1;
}

/* Picks a question among kinds[] (uniformly over those the scene supports). */
static int pick_question(const scene *sc, const int *kinds, int nk, int yes, rng *r, qa *out) {
    int order[N_QKINDS];
    for (int i = 0; i < nk; i++) order[i] = kinds[i];
    for (int i = nk - 1; i > 0; i--) { /* shuffle, then take the first that works */
        int j = rng_below(r, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < nk; i++)
        if (make_question(sc, order[i], yes, r, out) == 0) return 0;
    return -1;
}

/* "two red circles and a blue square": groups of equal (colour, shape), ordered left to right. */
static void caption(const scene *sc, char *buf, size_t n) {
    int idx[MAX_SHAPES];
    for (int i = 0; i < sc->n; i++) idx[i] = i;
    for (int i = 1; i < sc->n; i++) /* sort by x */
        for (int j = i; j > 0 && sc->s[idx[j]].cx < sc->s[idx[j - 1]].cx; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    int gk[MAX_SHAPES], gc[MAX_SHAPES], gn[MAX_SHAPES], ng = 0;
    for (int i = 0; i < sc->n; i++) {
        const shape *s = &sc->s[idx[i]];
        int g = 0;
        while (g < ng && !(gk[g] == s->kind && gc[g] == s->colour)) g++;
        if (g == ng) {
            gk[ng] = s->kind;
            gc[ng] = s->colour;
            gn[ng++] = 0;
        }
        gn[g]++;
    }
    size_t len = 0;
    buf[0] = 0;
    for (int g = 0; g < ng; g++) {
        const char *sep = g == 0 ? "" : g == ng - 1 ? " and " : ", ";
        len += (size_t)snprintf(buf + len, len < n ? n - len : 0, "%s%s %s %s", sep, ARTICLE_COUNT[gn[g]],
                                COLOUR_NAME[gc[g]], gn[g] == 1 ? SHAPE_NAME[gk[g]] : SHAPE_PLURAL[gk[g]]);
    }
}

static const char *const PT_INSTRUCTIONS[] = {
    "Describe the image briefly.", "What is in this picture?", "Give a short caption for the image.",
    "Summarize the picture in a few words.", "Write a brief description of the image.", "What do you see?"};

/* Text-only conversations: general questions whose answers do not need an image. */
static const char *const TEXT_QA[][2] = {
    {"How many sides does a triangle have?", "three"},
    {"How many sides does a square have?", "four"},
    {"How many corners does a circle have?", "zero"},
    {"What colour do you get when you mix blue and yellow?", "green"},
    {"What colour do you get when you mix red and blue?", "purple"},
    {"What colour is a ripe banana?", "yellow"},
    {"What colour is fresh grass?", "green"},
    {"What colour is the sky on a clear day?", "blue"},
    {"What colour is a ripe tomato?", "red"},
    {"What is one plus two?", "three"},
    {"What is one plus one?", "two"},
    {"Which shape has no corners?", "circle"},
    {"Which shape has three corners?", "triangle"},
    {"Which shape has four equal sides?", "square"},
};
#define N_TEXT_QA ((int)(sizeof TEXT_QA / sizeof TEXT_QA[0]))

/* ---- JSON output ---------------------------------------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static void sb_add(strbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 16;
        while (cap < b->n + k + 1) cap *= 2;
        b->p = asvr_realloc(b->p, cap, "a JSON file being written");
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

/* Appends obj as one compact line (keys in insertion order) and takes the reference. */
static void sb_add_json(strbuf *b, json_t *obj) {
    CHECK(obj != NULL, "", "building a JSON record");
    char *s = json_dumps(obj, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_ENSURE_ASCII);
    CHECK(s != NULL, "", "serialising a JSON record");
    sb_add(b, s);
    free(s);
    json_decref(obj);
}

static json_t *turn(const char *from, const char *value) {
    json_t *t = json_object();
    CHECK(t != NULL, "", "allocating a JSON object");
    json_object_set_new(t, "from", json_string(from));
    json_object_set_new(t, "value", json_string(value));
    return t;
}

static json_t *sample(const char *id, const char *image) {
    json_t *o = json_object();
    CHECK(o != NULL, "", "allocating a JSON object");
    json_object_set_new(o, "id", json_string(id));
    if (image) json_object_set_new(o, "image", json_string(image));
    json_object_set_new(o, "conversations", json_array());
    return o;
}

static void add_turn(json_t *s, const char *from, const char *value) {
    CHECK(json_array_append_new(json_object_get(s, "conversations"), turn(from, value)) == 0, "", "appending a turn");
}

static void write_text(const char *dir, const char *name, const strbuf *b, json_t *files) {
    char *path = asvr_path_join(dir, name);
    asvr_error err;
    if (asvr_atomic_write(path, b->p, b->n, &err) < 0) ASVR_FATAL("check that the output folder is writable", "%s", err.msg);
    char hex[17];
    asvr_hash_hex(asvr_xxh64(b->p, b->n, 0), hex);
    json_object_set_new(files, name, json_pack("{s:I, s:s}", "bytes", (json_int_t)b->n, "xxh64", hex));
    free(path);
}

/* ---- the command ------------------------------------------------------------------------------ */

static int parse_sizes(const char *s, img_size *out, int max) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long w = strtol(p, &end, 10), h = w;
        if (end == p) return -1;
        if (*end == 'x' || *end == 'X') {
            p = end + 1;
            h = strtol(p, &end, 10);
            if (end == p) return -1;
        }
        if (w < 16 || h < 16 || w > 4096 || h > 4096 || n >= max) return -1;
        out[n].w = (int)w;
        out[n].h = (int)h;
        n++;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return n;
}

/* Removes the files a previous run of another request left in dir (names NNNNNN.jpg / NNNNNN.png
 * only), so the folder holds exactly the images its JSON files name. A missing dir is fine. */
static void remove_old_images(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    int64_t removed = 0;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t k = strspn(n, "0123456789");
        if (k != 6 || (strcmp(n + k, ".jpg") != 0 && strcmp(n + k, ".png") != 0)) continue;
        char *path = asvr_path_join(dir, n);
        CHECK_SYS(remove(path), "removing the old image '%s'", path);
        free(path);
        removed++;
    }
    CHECK_SYS(closedir(d), "closing '%s'", dir);
    if (removed) LOG_INFO("removed %lld images of an earlier request from '%s'", (long long)removed, dir);
}

static void image_key(char *buf, size_t n, const char *split, int64_t i, int jpeg) {
    snprintf(buf, n, "%s/%06lld.%s", split, (long long)i, jpeg ? "jpg" : "png");
}

/* Draws the scene, encodes it, writes DIR/images/<key> atomically; returns the file size. */
static size_t write_image(const char *img_root, const char *key, const scene *sc, rng *r, int jpeg, tjhandle tj) {
    uint8_t *px = asvr_malloc((size_t)3 * sc->w * sc->h, "an image");
    scene_draw(sc, r, px);
    membuf m = {0};
    unsigned char *jbuf = NULL;
    unsigned long jsize = 0;
    const void *data;
    size_t size;
    if (jpeg) {
        CHECK_TJ(tjCompress2(tj, px, sc->w, 0, sc->h, TJPF_RGB, &jbuf, &jsize, TJSAMP_444, JPEG_QUALITY, TJFLAG_ACCURATEDCT),
                 tj, "compressing '%s'", key);
        data = jbuf;
        size = jsize;
    } else {
        encode_png(px, sc->w, sc->h, &m);
        data = m.p;
        size = m.n;
    }
    char *path = asvr_path_join(img_root, key);
    asvr_error err;
    if (asvr_atomic_write(path, data, size, &err) < 0) ASVR_FATAL("check that the output folder is writable", "%s", err.msg);
    free(path);
    if (jbuf) tjFree(jbuf);
    free(m.p);
    free(px);
    return size;
}

int main(int argc, char **argv) {
    const char *out = NULL, *sizes_s = "64x64,96x64,64x96,80x80";
    int64_t seed = 0, n_train = 1500, n_eval = 100, text_pct = 5, max_shapes = MAX_SHAPES;
    const asvr_opt opts[] = {
        {"out", ASVR_OPT_STR, &out, "DIR", "output folder (created); required"},
        {"seed", ASVR_OPT_INT, &seed, "N", "seed of everything drawn (default 0); the same seed gives byte-identical files"},
        {"train", ASVR_OPT_COUNT, &n_train, "N", "training images: one pt caption and one it conversation each (default 1500)"},
        {"eval", ASVR_OPT_COUNT, &n_eval, "N", "held-out images, three eval questions each: yes/no, multiple choice, short (default 100)"},
        {"size", ASVR_OPT_STR, &sizes_s, "WxH,...", "image sizes drawn from (default 64x64,96x64,64x96,80x80; S means SxS)"},
        {"text-only", ASVR_OPT_INT, &text_pct, "PCT", "text-only it samples, percent of the training images (default 5)"},
        {"max-shapes", ASVR_OPT_COUNT, &max_shapes, "N", "shapes per image, 1..3 (default 3); with 1 they are drawn larger"},
    };
    const asvr_cli cli = {
        "asvr-demo-gen",
        "--out DIR [--seed N] [--train N] [--eval N] [--size WxH,...] [--text-only PCT]",
        "Writes the demo's synthetic visual-instruction data: images of 1-3 coloured shapes (circle, square,\n"
        "triangle) on a plain or lightly noisy background, half JPEG and half PNG, under DIR/images/; stage-pt\n"
        "captions (DIR/pt.json) and stage-it conversations (DIR/it.json) in LLaVA format; held-out benchmark\n"
        "questions (DIR/eval.jsonl: demo_yesno, demo_mc, demo_short); and DIR/manifest.json (request, counts,\n"
        "hashes), written last. Image keys are relative to DIR/images. Deterministic for a seed; a rerun of\n"
        "the same request on a finished folder does nothing.",
        opts, (int)(sizeof opts / sizeof opts[0]), 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    if (!out) asvr_cli_usage_error(&cli, "--out is required");
    if (seed < 0) asvr_cli_usage_error(&cli, "--seed must be >= 0");
    if (n_train < 1 || n_train > 1000000) asvr_cli_usage_error(&cli, "--train must be in 1..1000000");
    if (n_eval < 1 || n_eval > 1000000) asvr_cli_usage_error(&cli, "--eval must be in 1..1000000");
    if (text_pct < 0 || text_pct > 100) asvr_cli_usage_error(&cli, "--text-only must be in 0..100");
    if (max_shapes < 1 || max_shapes > MAX_SHAPES) asvr_cli_usage_error(&cli, "--max-shapes must be in 1..%d", MAX_SHAPES);
    img_size sizes[MAX_SIZES];
    int nsizes = parse_sizes(sizes_s, sizes, MAX_SIZES);
    if (nsizes <= 0) asvr_cli_usage_error(&cli, "--size expects WxH[,WxH...] (16..4096 each, at most %d sizes)", MAX_SIZES);

    /* The request: a finished folder with the same one is left as it is. */
    json_t *request = json_pack("{s:i, s:I, s:I, s:I, s:I, s:[]}", "format_version", GEN_FORMAT_VERSION, "seed",
                                (json_int_t)seed, "train", (json_int_t)n_train, "eval", (json_int_t)n_eval, "text_only_percent",
                                (json_int_t)text_pct, "sizes");
    if (max_shapes != MAX_SHAPES) json_object_set_new(request, "max_shapes", json_integer(max_shapes)); /* older requests stay equal */
    CHECK(request != NULL, "", "building the request record");
    for (int i = 0; i < nsizes; i++) {
        char s[32];
        snprintf(s, sizeof s, "%dx%d", sizes[i].w, sizes[i].h);
        json_array_append_new(json_object_get(request, "sizes"), json_string(s));
    }
    asvr_error err;
    char *manifest_path = asvr_path_join(out, "manifest.json");
    if (asvr_path_exists(manifest_path)) {
        json_error_t jerr;
        json_t *prev = json_load_file(manifest_path, 0, &jerr);
        int same = prev && json_equal(json_object_get(prev, "request"), request);
        json_decref(prev);
        if (same) {
            LOG_INFO("'%s' holds the data of the same request; nothing to do", out);
            json_decref(request);
            free(manifest_path);
            return ASVR_EXIT_OK;
        }
        LOG_INFO("'%s' holds data of another request; regenerating", out);
        CHECK_SYS(remove(manifest_path), "removing the old '%s'", manifest_path);
    }
    char *img_root = asvr_path_join(out, "images");
    char *train_dir = asvr_path_join(img_root, "train"), *eval_dir = asvr_path_join(img_root, "eval");
    remove_old_images(train_dir);
    remove_old_images(eval_dir);
    if (asvr_mkdir_p(train_dir, &err) < 0 || asvr_mkdir_p(eval_dir, &err) < 0)
        ASVR_FATAL("check the --out path", "%s", err.msg);
    tjhandle tj = tjInitCompress();
    CHECK(tj != NULL, "", "TurboJPEG: tjInitCompress failed");

    double t0 = asvr_now();
    strbuf pt = {0}, it = {0}, ev = {0};
    sb_add(&pt, "[\n");
    sb_add(&it, "[\n");
    int64_t n_jpeg = 0, n_png = 0, image_bytes = 0, it_rounds = 0, it_image_samples = 0, qcount[N_QKINDS] = {0};
    int64_t shapes_hist[MAX_SHAPES + 1] = {0};
    int64_t n_text = (n_train * text_pct + 50) / 100;
    /* Text-only samples are spread evenly through it.json. */
    int64_t next_text = 0;
    int64_t it_samples = 0;

    /* Training images: a pt caption and an it conversation each. */
    static const int TRAIN_KINDS[] = {Q_YESNO_SHAPE, Q_YESNO_COLOUR, Q_COLOUR_ONLY, Q_COLOUR_LEFT, Q_COLOUR_LARGEST,
                                      Q_COUNT, Q_WHICH_SHAPE, Q_MC_WHICH, Q_MC_LEFT};
    for (int64_t i = 0; i < n_train; i++) {
        rng r;
        rng_seed(&r, (uint64_t)seed, 1, (uint64_t)i);
        scene sc;
        scene_make(&r, sizes, nsizes, (int)max_shapes, &sc);
        shapes_hist[sc.n]++;
        int jpeg = rng_below(&r, 2);
        char key[64], id[64], text[512];
        image_key(key, sizeof key, "train", i, jpeg);
        if (jpeg) n_jpeg++;
        else n_png++;
        rng rd;
        rng_seed(&rd, (uint64_t)seed, 2, (uint64_t)i);
        image_bytes += (int64_t)write_image(img_root, key, &sc, &rd, jpeg, tj);

        /* pt: the instruction is dropped by the plain template; <image> before or after it. */
        char cap[256];
        caption(&sc, cap, sizeof cap);
        const char *instr = PT_INSTRUCTIONS[rng_below(&r, (int)(sizeof PT_INSTRUCTIONS / sizeof PT_INSTRUCTIONS[0]))];
        if (rng_below(&r, 2)) snprintf(text, sizeof text, "<image>\n%s", instr);
        else snprintf(text, sizeof text, "%s\n<image>", instr);
        snprintf(id, sizeof id, "pt-%06lld", (long long)i);
        json_t *s = sample(id, key);
        add_turn(s, "human", text);
        add_turn(s, "gpt", cap);
        if (i) sb_add(&pt, ",\n");
        sb_add_json(&pt, s);

        /* it: 1-3 different questions; yes/no answers balanced by a coin per question. */
        int rounds = rng_range(&r, 1, 3), used[N_QKINDS] = {0}, nr = 0;
        snprintf(id, sizeof id, "it-%06lld", (long long)i);
        s = sample(id, key);
        for (int k = 0; k < rounds; k++) {
            int kinds[N_QKINDS], nk = 0;
            for (int q = 0; q < (int)(sizeof TRAIN_KINDS / sizeof TRAIN_KINDS[0]); q++)
                if (!used[TRAIN_KINDS[q]]) kinds[nk++] = TRAIN_KINDS[q];
            qa x;
            if (!nk || pick_question(&sc, kinds, nk, rng_below(&r, 2), &r, &x) < 0) break;
            used[x.kind] = 1;
            if (x.kind == Q_WHICH_SHAPE || x.kind == Q_MC_WHICH) used[Q_WHICH_SHAPE] = used[Q_MC_WHICH] = 1;
            qcount[x.kind]++;
            if (nr == 0) {
                if (rng_below(&r, 2)) snprintf(text, sizeof text, "<image>\n%s", x.q);
                else snprintf(text, sizeof text, "%s\n<image>", x.q);
                add_turn(s, "human", text);
            } else {
                add_turn(s, "human", x.q);
            }
            add_turn(s, "gpt", x.a);
            nr++;
        }
        CHECK(nr > 0, "", "image %lld supports no question (a bug)", (long long)i);
        it_rounds += nr;
        it_image_samples++;
        if (it_samples++) sb_add(&it, ",\n");
        sb_add_json(&it, s);
        /* a text-only sample after every (n_train / n_text)-th image */
        while (next_text < n_text && (i + 1) * n_text >= (next_text + 1) * n_train) {
            rng rt;
            rng_seed(&rt, (uint64_t)seed, 3, (uint64_t)next_text);
            snprintf(id, sizeof id, "text-%06lld", (long long)next_text);
            s = sample(id, NULL);
            int tr = rng_range(&rt, 1, 2), a = rng_below(&rt, N_TEXT_QA);
            for (int k = 0; k < tr; k++) {
                int q = (a + k * (1 + rng_below(&rt, N_TEXT_QA - 1))) % N_TEXT_QA;
                snprintf(text, sizeof text, "%s" SUFFIX_WORD, TEXT_QA[q][0]);
                add_turn(s, "human", text);
                add_turn(s, "gpt", TEXT_QA[q][1]);
            }
            sb_add(&it, ",\n");
            sb_add_json(&it, s);
            it_samples++;
            next_text++;
        }
    }
    sb_add(&pt, "\n]\n");
    sb_add(&it, "\n]\n");

    /* Held-out images: three questions each. The yes/no answer alternates, so the kinds are balanced. */
    static const int MC_KINDS[] = {Q_MC_WHICH, Q_MC_LEFT};
    static const int SHORT_KINDS[] = {Q_COLOUR_ONLY, Q_COLOUR_LEFT, Q_COLOUR_LARGEST, Q_COUNT};
    static const int YESNO_KINDS[] = {Q_YESNO_SHAPE, Q_YESNO_COLOUR};
    int64_t n_yes = 0, n_no = 0, qid = 0, eval_counts[3] = {0};
    for (int64_t i = 0; i < n_eval; i++) {
        rng r;
        rng_seed(&r, (uint64_t)seed, 4, (uint64_t)i);
        scene sc;
        scene_make(&r, sizes, nsizes, (int)max_shapes, &sc);
        int jpeg = rng_below(&r, 2);
        char key[64];
        image_key(key, sizeof key, "eval", i, jpeg);
        if (jpeg) n_jpeg++;
        else n_png++;
        rng rd;
        rng_seed(&rd, (uint64_t)seed, 5, (uint64_t)i);
        image_bytes += (int64_t)write_image(img_root, key, &sc, &rd, jpeg, tj);
        for (int b = 0; b < 3; b++) {
            qa x;
            const char *bench;
            int rc;
            if (b == 0) {
                bench = "demo_yesno";
                rc = pick_question(&sc, YESNO_KINDS, 2, (int)(i % 2 == 0), &r, &x);
            } else if (b == 1) {
                bench = "demo_mc";
                rc = pick_question(&sc, MC_KINDS, 2, -1, &r, &x);
            } else {
                bench = "demo_short";
                rc = pick_question(&sc, SHORT_KINDS, 4, -1, &r, &x);
            }
            CHECK(rc == 0, "", "eval image %lld supports no %s question (a bug)", (long long)i, bench);
            if (b == 0 && strcmp(x.a, "yes") == 0) n_yes++;
            else if (b == 0) n_no++;
            eval_counts[b]++;
            json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "question_id", (json_int_t)qid++, "benchmark", bench,
                                  "image", key, "question", x.q, "answer", x.a, "category", QKIND_NAME[x.kind]);
            if (b == 1) json_object_set_new(o, "options", json_pack("[s,s,s]", "circle", "square", "triangle"));
            sb_add_json(&ev, o);
            sb_add(&ev, "\n");
        }
    }
    tjDestroy(tj);

    json_t *files = json_object();
    write_text(out, "pt.json", &pt, files);
    write_text(out, "it.json", &it, files);
    write_text(out, "eval.jsonl", &ev, files);
    json_t *qk = json_object();
    for (int k = 0; k < N_QKINDS; k++) {
        const char *name = k == Q_MC_WHICH ? "which_shape_mc" : k == Q_MC_LEFT ? "leftmost_shape_mc" : QKIND_NAME[k];
        json_object_set_new(qk, name, json_integer(qcount[k]));
    }
    json_t *manifest = json_object();
    CHECK(manifest != NULL, "", "building the manifest");
    json_object_set_new(manifest, "format", json_string("asvr-demo-data"));
    json_object_set_new(manifest, "request", request);
    json_object_set_new(manifest, "seed", json_integer(seed));
    json_object_set_new(manifest, "image_root", json_string("images"));
    json_object_set_new(manifest, "images",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:[I,I,I]}", "train", (json_int_t)n_train, "eval",
                                  (json_int_t)n_eval, "jpeg", (json_int_t)n_jpeg, "png", (json_int_t)n_png, "bytes",
                                  (json_int_t)image_bytes, "train_with_1_2_3_shapes", (json_int_t)shapes_hist[1],
                                  (json_int_t)shapes_hist[2], (json_int_t)shapes_hist[3]));
    json_object_set_new(manifest, "pt", json_pack("{s:I}", "samples", (json_int_t)n_train));
    json_object_set_new(manifest, "it",
                        json_pack("{s:I, s:I, s:I, s:I, s:o}", "samples", (json_int_t)it_samples, "image_samples",
                                  (json_int_t)it_image_samples, "text_only", (json_int_t)n_text, "image_rounds",
                                  (json_int_t)it_rounds, "questions_by_kind", qk));
    json_object_set_new(manifest, "eval",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "questions", (json_int_t)qid, "demo_yesno",
                                  (json_int_t)eval_counts[0], "demo_mc", (json_int_t)eval_counts[1], "demo_short",
                                  (json_int_t)eval_counts[2], "yes", (json_int_t)n_yes, "no", (json_int_t)n_no));
    json_object_set_new(manifest, "files", files);
    char *ms = json_dumps(manifest, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    CHECK(ms != NULL, "", "serialising the manifest");
    size_t mlen = strlen(ms);
    char *mtext = asvr_malloc(mlen + 2, "the manifest");
    memcpy(mtext, ms, mlen);
    mtext[mlen] = '\n';
    if (asvr_atomic_write(manifest_path, mtext, mlen + 1, &err) < 0) ASVR_FATAL("check that the output folder is writable", "%s", err.msg);
    LOG_INFO("wrote %lld training and %lld eval images (%lld JPEG, %lld PNG, %.1f MB), %lld pt samples, %lld it samples "
             "(%lld text-only), %lld eval questions into '%s' in %.2f s",
             (long long)n_train, (long long)n_eval, (long long)n_jpeg, (long long)n_png, image_bytes / 1e6, (long long)n_train,
             (long long)it_samples, (long long)n_text, (long long)qid, out, asvr_now() - t0);
    free(mtext);
    free(ms);
    json_decref(manifest);
    free(pt.p);
    free(it.p);
    free(ev.p);
    free(train_dir);
    free(eval_dir);
    free(img_root);
    free(manifest_path);
    return ASVR_EXIT_OK;
}
