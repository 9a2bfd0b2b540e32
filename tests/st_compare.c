/* st_compare A B TOL [SKIP...] — compares two safetensors files tensor by tensor (the same names and
 * shapes, values as f32): prints the worst relative error ‖a−b‖/‖b‖ over the tensors and the tensor
 * it is in, and exits 0 when it is <= TOL (TOL 0: every byte equal), 1 when not, 2 on a usage or read
 * error. Tensors whose name contains one of SKIP are left out (e.g. a parameter whose exact gradient is
 * zero, where summation noise becomes AdamW steps). For the shell tests of the trainer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: st_compare A B TOL [SKIP...]\n");
        return 2;
    }
    asvr_error err;
    safetensors *a, *b;
    if (safetensors_open(argv[1], &a, &err) < 0 || safetensors_open(argv[2], &b, &err) < 0) {
        fprintf(stderr, "st_compare: %s\n", err.msg);
        return 2;
    }
    double tol = atof(argv[3]), worst = 0;
    const char *worst_name = "";
    int n = safetensors_count(a), compared = 0;
    if (n != safetensors_count(b)) {
        fprintf(stderr, "st_compare: %d tensors vs %d\n", n, safetensors_count(b));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        const st_tensor *ta = safetensors_at(a, i), *tb = safetensors_find(b, ta->name);
        int skip = 0;
        for (int k = 4; k < argc; k++) skip |= strstr(ta->name, argv[k]) != NULL;
        if (!tb || tb->numel != ta->numel) {
            fprintf(stderr, "st_compare: '%s' is missing or mis-shaped in %s\n", ta->name, argv[2]);
            return 1;
        }
        if (skip) continue;
        float *x = malloc(sizeof(float) * (size_t)(ta->numel + 1)), *y = malloc(sizeof(float) * (size_t)(ta->numel + 1));
        if (!x || !y || st_tensor_to_f32(ta, x, &err) < 0 || st_tensor_to_f32(tb, y, &err) < 0) {
            fprintf(stderr, "st_compare: reading '%s'\n", ta->name);
            return 2;
        }
        double d = 0, r = 0;
        int bytes_equal = memcmp(x, y, sizeof(float) * (size_t)ta->numel) == 0;
        for (int64_t k = 0; k < ta->numel; k++) d += ((double)x[k] - y[k]) * ((double)x[k] - y[k]), r += (double)y[k] * y[k];
        double e = bytes_equal ? 0 : r > 0 ? sqrt(d / r) : sqrt(d) + 1e-300;
        if (tol == 0 && !bytes_equal) e = e > 0 ? e : 1e-300;
        if (e > worst) worst = e, worst_name = ta->name;
        compared++;
        free(x);
        free(y);
    }
    printf("st_compare: %d tensors, worst relative error %.3g (%s)\n", compared, worst, worst_name);
    safetensors_close(a);
    safetensors_close(b);
    return worst <= tol ? 0 : 1;
}
