/* bench_image.c — times decode + preprocess (single thread) over a list of files and prints JSON:
 *   bench_image [--size S] [--policy pad|squash] [--repeat N] [--dump DIR] FILE...
 * --dump writes each S x S result to DIR/<index>.rgb (outside the timed loop) so tools/bench_preprocess.py
 * can check it against Pillow. Built with the tests, not registered as one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/fsutil.h"
#include "io/image.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    image_preprocess_opts po;
    image_preprocess_opts_default(&po);
    int repeat = 1, first = 1;
    const char *dump = NULL;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first += 2) {
        if (first + 1 >= argc) break;
        if (!strcmp(argv[first], "--size")) po.size = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--repeat")) repeat = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--dump")) dump = argv[first + 1];
        else if (!strcmp(argv[first], "--policy")) {
            if (image_policy_parse(argv[first + 1], &po.policy) < 0) return 2;
        } else {
            fprintf(stderr, "unknown option %s\n", argv[first]);
            return 2;
        }
    }
    if (first >= argc || po.size < 1 || repeat < 1) {
        fprintf(stderr, "usage: bench_image [--size S] [--policy pad|squash] [--repeat N] [--dump DIR] FILE...\n");
        return 2;
    }
    const int nfiles = argc - first;
    const size_t n = (size_t)po.size * po.size * 3;
    uint8_t *out = malloc(n);
    if (!out) return 1;
    asvr_error err;
    double decode_s = 0, prep_s = 0;
    long images = 0;
    for (int r = 0; r < repeat; r++)
        for (int i = 0; i < nfiles; i++) {
            image_rgb img;
            double t0 = now_s();
            if (image_decode_file(argv[first + i], NULL, &img, &err) < 0) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double t1 = now_s();
            if (image_preprocess(&img, &po, out, &err) < 0) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double t2 = now_s();
            image_free(&img);
            decode_s += t1 - t0;
            prep_s += t2 - t1;
            images++;
            if (dump && r == 0) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%d.rgb", dump, i);
                if (asvr_atomic_write(path, out, n, &err) < 0) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
            }
        }
    printf("{\"images\": %ld, \"seconds\": %.6f, \"decode_seconds\": %.6f, \"preprocess_seconds\": %.6f, "
           "\"images_per_s\": %.3f}\n",
           images, decode_s + prep_s, decode_s, prep_s, images / (decode_s + prep_s));
    free(out);
    return 0;
}
