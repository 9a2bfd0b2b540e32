/* ivec.h — a growable int32 array (token ids, labels). Zero-initialise, push, free.
 * Not for: large numeric buffers (use the nn arena).
 */
#ifndef ASVR_BASE_IVEC_H
#define ASVR_BASE_IVEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
} ivec;

void ivec_push(ivec *a, int32_t x);
void ivec_append(ivec *a, const int32_t *x, size_t n);
void ivec_free(ivec *a);

#ifdef __cplusplus
}
#endif
#endif
