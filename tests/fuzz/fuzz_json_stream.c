/* fuzz_json_stream.c — libFuzzer harness over the streaming JSON array reader (io/json_stream.h), plain
 * and zstd (the input decides by its magic): every element is returned, refused (-1, and the stream
 * goes on) or the stream stops (-2), always with a message; a small element bound is set on every
 * other input so the skipping path runs. Also json_read_path over the same bytes. Seeds:
 * tests/golden/fuzz/json_stream/. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "io/json_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file("stream.json", data, size);
    asvr_error err;
    json_stream *s;
    if (json_stream_open(path, &s, &err) < 0) return 0;
    if (size & 1) json_stream_set_max_element(s, 64);
    for (int i = 0; i < 100000; i++) {
        json_t *e = NULL;
        err.msg[0] = 0;
        int r = json_stream_next(s, &e, &err);
        if (r == 1) {
            if (!e) abort();
            json_decref(e);
            (void)json_stream_index(s);
            continue;
        }
        if (r < 0 && !err.msg[0]) abort(); /* a refusal says why */
        if (r == 0 || r == -2) break;
    }
    json_stream_close(s);
    json_t *j = json_read_path(path, 1 << 20, &err);
    json_decref(j);
    return 0;
}
