/* asvr-tokenize preprocess — decode one image, pad/squash and resize it exactly as the reference
 * pipeline does, and write the uint8 S x S result as a binary PPM (P6), atomically. For inspection and
 * for comparing against Pillow; the tokenize pipeline calls the same library functions. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/log.h"
#include "commands.h"
#include "io/image.h"

static int parse_pad(const char *s, uint8_t pad[3]) {
    int v[3];
    char tail;
    if (sscanf(s, "%d,%d,%d%c", &v[0], &v[1], &v[2], &tail) != 3) return -1;
    for (int i = 0; i < 3; i++) {
        if (v[i] < 0 || v[i] > 255) return -1;
        pad[i] = (uint8_t)v[i];
    }
    return 0;
}

int cmd_preprocess(int argc, char **argv) {
    const char *policy = "pad", *pad = "127,127,127";
    int64_t size = 384, max_pixels = (int64_t)IMAGE_DEFAULT_MAX_PIXELS;
    int accept = 0, exif = 0;
    const asvr_opt opts[] = {
        {"policy", ASVR_OPT_STR, &policy, "pad|squash", "pad to a square with --pad, or squash (default pad)"},
        {"size", ASVR_OPT_COUNT, &size, "S", "output side in pixels (default 384)"},
        {"pad", ASVR_OPT_STR, &pad, "R,G,B", "pad colour (default 127,127,127, SigLIP's mean)"},
        {"max-pixels", ASVR_OPT_COUNT, &max_pixels, "N", "refuse larger images (default 89478485, Pillow's)"},
        {"accept-warnings", ASVR_OPT_FLAG, &accept, NULL, "decode truncated/corrupt JPEG data anyway"},
        {"exif", ASVR_OPT_FLAG, &exif, NULL, "apply the EXIF orientation (the reference does not)"},
    };
    const asvr_cli cli = {
        "asvr-tokenize preprocess", "[--policy pad|squash] [--size S] [--pad R,G,B] [--max-pixels N] "
                                    "[--accept-warnings] [--exif] IN OUT.ppm",
        "Decodes IN (JPEG or PNG), pads or squashes it to a square, resizes it to S x S with Pillow's\n"
        "bicubic filter, and writes the result as a binary PPM. Bit-exact with Pillow.",
        opts, (int)(sizeof opts / sizeof opts[0]), 2, 2};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);

    image_preprocess_opts po;
    image_preprocess_opts_default(&po);
    if (image_policy_parse(policy, &po.policy) < 0)
        asvr_cli_usage_error(&cli, "--policy expects pad or squash, got '%s'", policy);
    if (size < 1 || size > 16384) asvr_cli_usage_error(&cli, "--size expects 1..16384, got %lld", (long long)size);
    po.size = (int)size;
    if (parse_pad(pad, po.pad) < 0) asvr_cli_usage_error(&cli, "--pad expects R,G,B in 0..255, got '%s'", pad);
    if (max_pixels < 1) asvr_cli_usage_error(&cli, "--max-pixels expects a positive number");
    image_decode_opts dopts;
    image_decode_opts_default(&dopts);
    dopts.max_pixels = (uint64_t)max_pixels;
    dopts.accept_jpeg_warnings = accept;
    dopts.apply_exif_orientation = exif;

    const char *in = pos[0], *out_path = pos[1];
    free(pos);
    asvr_error err = {{0}};
    image_rgb img;
    if (image_decode_file(in, &dopts, &img, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        return ASVR_EXIT_FAIL;
    }
    const size_t n = (size_t)po.size * po.size * 3;
    uint8_t *px = asvr_malloc(n, "preprocessed image");
    int rc = image_preprocess(&img, &po, px, &err);
    image_free(&img);
    if (rc < 0) {
        LOG_ERROR("'%s': %s", in, err.msg);
        free(px);
        return ASVR_EXIT_FAIL;
    }
    asvr_atomic_file f;
    if (asvr_atomic_open(&f, out_path, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        free(px);
        return ASVR_EXIT_FAIL;
    }
    int ok = fprintf(f.fp, "P6\n%d %d\n255\n", po.size, po.size) > 0 && fwrite(px, 1, n, f.fp) == n;
    free(px);
    if (!ok) {
        LOG_ERROR("writing '%s' failed", out_path);
        asvr_atomic_abort(&f);
        return ASVR_EXIT_FAIL;
    }
    if (asvr_atomic_commit(&f, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        return ASVR_EXIT_FAIL;
    }
    LOG_INFO("%s -> %s (%s, %dx%d)", in, out_path, image_policy_name(po.policy), po.size, po.size);
    return ASVR_EXIT_OK;
}
