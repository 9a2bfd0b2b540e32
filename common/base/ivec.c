#include "base/ivec.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"

void ivec_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = asvr_realloc(a->v, a->cap * sizeof *a->v, "an int32 array");
    }
    a->v[a->n++] = x;
}

void ivec_append(ivec *a, const int32_t *x, size_t n) {
    if (a->n + n > a->cap) {
        while (a->n + n > a->cap) a->cap = a->cap ? a->cap * 2 : 64;
        a->v = asvr_realloc(a->v, a->cap * sizeof *a->v, "an int32 array");
    }
    if (n) memcpy(a->v + a->n, x, n * sizeof *x);
    a->n += n;
}

void ivec_free(ivec *a) {
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}
