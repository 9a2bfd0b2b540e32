/* sbuf.h — a growable NUL-terminated string (prompts, messages, JSON pieces). Zero-initialise, add,
 * free(b.s). Not for: binary buffers or hot inner loops.
 */
#ifndef ASVR_BASE_SBUF_H
#define ASVR_BASE_SBUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

void sb_add(sbuf *b, const char *s, size_t n);
void sb_str(sbuf *b, const char *s);

#ifdef __cplusplus
}
#endif
#endif
