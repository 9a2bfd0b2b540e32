/* fuzz_safetensors.c — libFuzzer harness over safetensors_parse: any input must be accepted or
 * rejected with a message, never crash or read outside the buffer. Accepted inputs are walked
 * (every tensor's bytes read, converted to fp32 where possible) so views outside the buffer show up
 * under AddressSanitizer. Seed corpus: tests/golden/fuzz/safetensors/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy of exactly `size` bytes, so reads past the end are caught. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    safetensors *st = NULL;
    asvr_error err;
    err.msg[0] = 0;
    if (safetensors_parse(buf, size, "fuzz", &st, &err) == 0) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < safetensors_count(st); i++) {
            const st_tensor *t = safetensors_at(st, i);
            const uint8_t *p = t->data;
            for (size_t k = 0; k < t->nbytes; k++) sink ^= p[k];
            if (safetensors_find(st, t->name) != t) abort();
            if (t->numel <= (1 << 20)) {
                float *f = malloc((size_t)t->numel * sizeof *f + 1);
                if (f) {
                    asvr_error e2;
                    (void)st_tensor_to_f32(t, f, &e2);
                    free(f);
                }
            }
        }
        for (int i = 0; i < safetensors_metadata_count(st); i++)
            (void)safetensors_metadata(st, safetensors_metadata_key(st, i));
        (void)sink;
        safetensors_close(st);
    } else if (err.msg[0] == 0) {
        abort(); /* a rejection must say why */
    }
    free(buf);
    return 0;
}
