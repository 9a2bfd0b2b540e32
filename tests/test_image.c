/* test_image.c — the image input path against Pillow fixtures (tests/golden/images/, made by
 * tools/gen_image_fixtures.py): decoded RGB, pad/squash + bicubic resize, the float tensor, the corrupt
 * inputs, accepted JPEG warnings, and EXIF orientation. */
#include <jansson.h>
#include <stdint.h>
#include <time.h>
#include <zstd.h>

#include "base/fsutil.h"
#include "base/hash.h"
#include "io/image.h"
#include "test.h"

#define IMG_DIR ASVR_GOLDEN "/images"

/* Expected bytes of a manifest entry {bytes, xxh64, file?}: *data is NULL when only the hash is stored. */
static int load_expected(json_t *e, uint8_t **data, size_t *n, uint64_t *hash) {
    *data = NULL;
    *n = (size_t)json_integer_value(json_object_get(e, "bytes"));
    *hash = strtoull(json_string_value(json_object_get(e, "xxh64")), NULL, 16);
    const char *fn = json_string_value(json_object_get(e, "file"));
    if (!fn) return 0;
    char *path = asvr_path_join(IMG_DIR, fn);
    uint8_t *z;
    size_t zn;
    asvr_error err;
    if (asvr_read_file(path, &z, &zn, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        free(path);
        return -1;
    }
    *data = malloc(*n ? *n : 1);
    size_t got = ZSTD_decompress(*data, *n, z, zn);
    free(z);
    free(path);
    if (ZSTD_isError(got) || got != *n) {
        fprintf(stderr, "bad zstd fixture %s\n", fn);
        free(*data);
        *data = NULL;
        return -1;
    }
    return 0;
}

/* Compares an RGB/byte buffer with the expectation; reports the first mismatching pixel. */
static void check_bytes(const char *what, const uint8_t *got, size_t n, int width, json_t *e) {
    uint8_t *want;
    size_t wn;
    uint64_t hash;
    if (load_expected(e, &want, &wn, &hash) < 0) {
        T_CHECK(0, "%s: cannot load the expected data", what);
        return;
    }
    T_CHECK(n == wn, "%s: %zu bytes, expected %zu", what, n, wn);
    if (n != wn) {
        free(want);
        return;
    }
    if (want) {
        size_t i = 0;
        while (i < n && got[i] == want[i]) i++;
        if (i < n) {
            size_t px = i / 3;
            T_CHECK(0, "%s: first mismatch at x=%zu y=%zu channel %zu: got %u, Pillow %u", what,
                    px % (size_t)width, px / (size_t)width, i % 3, got[i], want[i]);
        } else {
            t_pass++;
        }
        free(want);
    } else {
        T_CHECK(asvr_xxh64(got, n, 0) == hash, "%s: xxh64 %016llx, Pillow %016llx", what,
                (unsigned long long)asvr_xxh64(got, n, 0), (unsigned long long)hash);
    }
}

static void check_floats(const char *what, const float *got, size_t count, json_t *e) {
    uint8_t *want;
    size_t wn;
    uint64_t hash;
    if (load_expected(e, &want, &wn, &hash) < 0 || !want) {
        T_CHECK(0, "%s: cannot load the expected floats", what);
        free(want);
        return;
    }
    T_CHECK(wn == count * 4, "%s: %zu floats, expected %zu", what, count, wn / 4);
    if (wn == count * 4) {
        size_t i = 0;
        while (i < count && memcmp(got + i, want + 4 * i, 4) == 0) i++;
        if (i < count) {
            float w;
            memcpy(&w, want + 4 * i, 4);
            T_CHECK(0, "%s: first mismatch at element %zu: got %.9g, expected %.9g", what, i, got[i], w);
        } else {
            t_pass++;
        }
    }
    free(want);
}

static void run_case(json_t *c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    const char *input = json_string_value(json_object_get(c, "input"));
    char *path = asvr_path_join(IMG_DIR, input);
    image_decode_opts o;
    image_decode_opts_default(&o);
    o.apply_exif_orientation = json_is_true(json_object_get(c, "exif"));
    o.accept_jpeg_warnings = json_is_true(json_object_get(c, "accept_warnings"));
    image_rgb img;
    asvr_error err = {{0}};
    int rc = image_decode_file(path, &o, &img, &err);
    T_CHECK(rc == 0, "%s: decode failed: %s", name, err.msg);
    free(path);
    if (rc != 0) return;
    T_CHECK(img.width == json_integer_value(json_object_get(c, "width")) &&
                img.height == json_integer_value(json_object_get(c, "height")),
            "%s: size %dx%d, Pillow %lldx%lld", name, img.width, img.height,
            json_integer_value(json_object_get(c, "width")), json_integer_value(json_object_get(c, "height")));
    char what[256];
    snprintf(what, sizeof what, "%s decode", name);
    check_bytes(what, img.pixels, (size_t)img.width * img.height * 3, img.width, json_object_get(c, "rgb"));

    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(c, "preprocess"), i, p) {
        image_preprocess_opts po;
        image_preprocess_opts_default(&po);
        T_EQ_INT(image_policy_parse(json_string_value(json_object_get(p, "policy")), &po.policy), 0);
        po.size = (int)json_integer_value(json_object_get(p, "size"));
        json_t *pad = json_object_get(p, "pad");
        for (int k = 0; k < 3; k++) po.pad[k] = (uint8_t)json_integer_value(json_array_get(pad, (size_t)k));
        const size_t n = (size_t)po.size * po.size * 3;
        uint8_t *out = malloc(n);
        snprintf(what, sizeof what, "%s %s S=%d", name, image_policy_name(po.policy), po.size);
        /* Two sentinels: a byte left unwritten cannot match Pillow under both. */
        for (int s = 0; s < 2; s++) {
            memset(out, s ? 0xA5 : 0x5A, n);
            rc = image_preprocess(&img, &po, out, &err);
            T_CHECK(rc == 0, "%s: %s", what, err.msg);
            if (rc == 0) check_bytes(what, out, n, po.size, json_object_get(p, "expected"));
        }
        json_t *nz = json_object_get(p, "normalized");
        if (nz) {
            float mean[3], std[3];
            for (int k = 0; k < 3; k++) {
                mean[k] = (float)json_real_value(json_array_get(json_object_get(nz, "mean"), (size_t)k));
                std[k] = (float)json_real_value(json_array_get(json_object_get(nz, "std"), (size_t)k));
            }
            float *t = malloc(n * sizeof(float));
            for (size_t k = 0; k < n; k++) t[k] = NAN;
            image_normalize_chw(out, po.size, po.size, mean, std, t);
            snprintf(what, sizeof what, "%s %s S=%d normalized", name, image_policy_name(po.policy), po.size);
            check_floats(what, t, n, json_object_get(nz, "expected"));
            free(t);
        }
        free(out);
    }
    image_free(&img);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_corrupt(json_t *c) {
    const char *input = json_string_value(json_object_get(c, "input"));
    char *path = asvr_path_join(IMG_DIR, input);
    image_decode_opts o;
    image_decode_opts_default(&o);
    image_rgb img = {7, 7, (uint8_t *)&img};
    asvr_error err = {{0}};
    double t0 = now_s();
    int rc = image_decode_file(path, &o, &img, &err);
    double dt = now_s() - t0;
    T_CHECK(rc == -1, "%s: decoded, expected an error", input);
    T_CHECK(img.pixels == NULL && img.width == 0 && img.height == 0, "%s: output not cleared", input);
    T_CHECK(dt < 0.25, "%s: took %.3f s to fail", input, dt);
    size_t i;
    json_t *needle;
    json_array_foreach(json_object_get(c, "error_contains"), i, needle) T_STR_CONTAINS(err.msg, json_string_value(needle));
    printf("  %-28s -> %s\n", input, err.msg);
    if (rc == 0) image_free(&img);
    free(path);
}

/* The truncated JPEG decodes with accept_jpeg_warnings, as Pillow does with LOAD_TRUNCATED_IMAGES. */
static void run_truncated_accept(json_t *t) {
    char *path = asvr_path_join(IMG_DIR, json_string_value(json_object_get(t, "input")));
    image_decode_opts o;
    image_decode_opts_default(&o);
    o.accept_jpeg_warnings = 1;
    image_rgb img;
    asvr_error err = {{0}};
    int rc = image_decode_file(path, &o, &img, &err);
    T_CHECK(rc == 0, "truncated JPEG with accepted warnings: %s", err.msg);
    if (rc == 0) {
        T_EQ_INT(img.width, json_integer_value(json_object_get(t, "width")));
        T_EQ_INT(img.height, json_integer_value(json_object_get(t, "height")));
        size_t rows = (size_t)json_integer_value(json_object_get(t, "compare_rows"));
        if (rows > (size_t)img.height) rows = (size_t)img.height;
        check_bytes("truncated JPEG, accepted warnings", img.pixels, rows * (size_t)img.width * 3, img.width,
                    json_object_get(t, "expected"));
        image_free(&img);
    }
    free(path);
}

static void test_api_edges(void) {
    asvr_error err = {{0}};
    image_rgb img;
    image_decode_opts o;
    image_decode_opts_default(&o);
    T_CHECK(o.max_pixels == 89478485ULL && !o.accept_jpeg_warnings && !o.apply_exif_orientation, "defaults");
    /* The limit applies from the header: a small max_pixels refuses a 53x37 JPEG. */
    o.max_pixels = 100;
    T_EQ_INT(image_decode_file(IMG_DIR "/j420.jpg", &o, &img, &err), -1);
    T_STR_CONTAINS(err.msg, "53x37 = 1961 pixels exceeds the limit of 100");
    T_EQ_INT(image_decode_file(IMG_DIR "/prgb.png", &o, &img, &err), -1);
    T_STR_CONTAINS(err.msg, "exceeds the limit of 100");
    T_EQ_INT(image_decode_file(IMG_DIR "/does-not-exist.png", NULL, &img, &err), -1);
    T_STR_CONTAINS(err.msg, "does-not-exist.png");
    T_EQ_INT(image_decode((const uint8_t *)"GIF89a", 6, NULL, NULL, &img, &err), -1);
    T_STR_CONTAINS(err.msg, "starts with 'GIF8'");
    T_EQ_INT(image_detect_format((const uint8_t *)"\xff\xd8\xff", 3), IMAGE_FORMAT_JPEG);
    image_policy p;
    T_EQ_INT(image_policy_parse("crop", &p), -1);
    image_preprocess_opts po;
    image_preprocess_opts_default(&po);
    T_CHECK(po.policy == IMAGE_POLICY_PAD && po.size == 384 && po.pad[0] == 127, "preprocess defaults");
    uint8_t px[3] = {1, 2, 3}, out[3];
    image_rgb one = {1, 1, px};
    po.size = 0;
    T_EQ_INT(image_preprocess(&one, &po, out, &err), -1);
    T_STR_CONTAINS(err.msg, "size 0");
    po.size = 1;
    T_EQ_INT(image_preprocess(&one, &po, out, &err), 0);
    T_CHECK(memcmp(out, px, 3) == 0, "1x1 -> 1x1 is a copy");
    /* Pillow 13's pass order rule */
    T_EQ_INT(image_resize_vertical_first(100, 120, 50, 19), 1);
    T_EQ_INT(image_resize_vertical_first(100, 120, 50, 20), 0);
    T_EQ_INT(image_resize_vertical_first(100, 120, 200, 119), 1);
    T_EQ_INT(image_resize_vertical_first(100, 100, 384, 384), 0);
}

int main(void) {
    json_error_t jerr;
    json_t *m = json_load_file(IMG_DIR "/manifest.json", 0, &jerr);
    T_CHECK(m != NULL, "manifest: %s (line %d)", jerr.text, jerr.line);
    if (!m) return t_done();
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(m, "cases"), i, c) run_case(c);
    printf("%zu fixture cases\n", json_array_size(json_object_get(m, "cases")));
    json_array_foreach(json_object_get(m, "corrupt"), i, c) run_corrupt(c);
    run_truncated_accept(json_object_get(m, "truncated_accept"));
    test_api_edges();
    json_decref(m);
    return t_done();
}
