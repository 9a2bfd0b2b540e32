/* fuzz_sp_model.c — libFuzzer harness over the SentencePiece model parser (sp_tokenizer_load_bytes):
 * any input is accepted or refused with a message; an accepted model encodes and decodes a few texts
 * (bytes outside the vocabulary, a NUL, long runs) without crashing. Seeds: tests/golden/fuzz/sp_model/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "text/sp_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asvr_log_set_level(ASVR_LOG_ERROR);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    asvr_error err;
    err.msg[0] = 0;
    sp_tokenizer *t = sp_tokenizer_load_bytes(buf, size, "fuzz", &err);
    if (!t) {
        if (!err.msg[0]) abort(); /* a refusal says why */
        free(buf);
        return 0;
    }
    static const char *texts[] = {"Hello world", " a  b\n\tc", "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80", "\xff\xfe\x80",
                                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ivec ids = {0};
        if (sp_tokenizer_encode(t, texts[i], strlen(texts[i]), 1, &ids, &err) == 0) {
            size_t n;
            char *s = sp_tokenizer_decode(t, ids.v, ids.n, 1, &n, &err);
            free(s);
        }
        ivec_free(&ids);
    }
    ivec ids = {0};
    const char nul[] = {'a', 0, 'b'};
    size_t n;
    if (sp_tokenizer_encode(t, nul, 3, 0, &ids, &err) == 0) free(sp_tokenizer_decode(t, ids.v, ids.n, 0, &n, &err));
    ivec_free(&ids);
    (void)sp_tokenizer_vocab_size(t);
    sp_tokenizer_free(t);
    free(buf);
    return 0;
}
