/* fuzz_bench_jsonl.c — libFuzzer harness over the benchmark JSONL readers (eval/bench.h): the first
 * byte picks one of the 14 benchmarks, the rest is its question file; it is loaded (malformed lines
 * refused with a message), every question's prompt built, the same file attached as answers and the
 * benchmark scored. Never a crash, whatever the fields hold. Seeds: tests/golden/fuzz/bench_jsonl/. */
#include <stdint.h>
#include <stdlib.h>

#include "base/log.h"
#include "bench.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    asvr_log_set_level(ASVR_LOG_ERROR + 0);
    int n;
    const bench_def *all = bench_all(&n);
    const bench_def *b = &all[data[0] % n];
    const char *path = fuzz_file("q.jsonl", data + 1, size - 1);
    bench_set s;
    asvr_error err;
    err.msg[0] = 0;
    if (bench_load_questions(path, b, &s, &err) < 0) {
        if (!err.msg[0]) abort();
        bench_set_free(&s);
        return 0;
    }
    for (size_t i = 0; i < s.n; i++) free(bench_prompt(b, s.items[i].q, &err));
    if (bench_attach_answers(&s, path, 1, &err) == 0) {
        json_t *sc = bench_score(b, &s, &err);
        json_decref(sc);
    }
    bench_set_free(&s);
    return 0;
}
