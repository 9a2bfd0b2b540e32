/* fuzz_packed_store.c — libFuzzer harness over the packed store (store/packed_store.h): a file is
 * refused on open with a message, or every sample and row of it reads (or is refused) without reading
 * outside the file or allocating what it claims unchecked. Seeds: tests/golden/fuzz/packed_store/. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "store/packed_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("s.pack", data, size);
    asvr_error err;
    err.msg[0] = 0;
    packed_store *ps;
    if (packed_store_open(path, &ps, &err) < 0) {
        if (!err.msg[0]) abort();
        return 0;
    }
    const packed_info *I = packed_store_info(ps);
    packed_reader *r = packed_reader_new(ps);
    uint64_t n = I->n_samples < 4096 ? I->n_samples : 4096;
    for (uint64_t i = 0; i < n; i++) {
        packed_sample s;
        if (packed_read_sample(r, i, &s, &err) == 0) {
            volatile int32_t sink = 0;
            for (uint32_t k = 0; k < s.n_ids; k++) sink ^= s.ids[k] ^ s.label_mask[k];
            (void)sink;
        }
    }
    uint64_t nr = I->n_rows < 4096 ? I->n_rows : 4096;
    for (uint64_t i = 0; i < nr; i++) {
        packed_row row;
        (void)packed_read_row(ps, i, &row, &err);
    }
    packed_reader_free(r);
    packed_store_close(ps);
    return 0;
}
