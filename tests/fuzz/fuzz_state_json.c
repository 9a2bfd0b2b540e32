/* fuzz_state_json.c — libFuzzer harness over a checkpoint's state.json as a resume reads it
 * (train/checkpoint.h checkpoint_state_parse, and the model config it carries): any bytes are refused
 * with a message naming the field, or give a cursor inside the data (0 <= index <= rows). Seeds:
 * tests/golden/fuzz/state_json/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model/asvr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t je;
    json_t *s = json_loadb((const char *)data, size, 0, &je);
    if (!s) return 0;
    checkpoint_state cs;
    asvr_error err;
    err.msg[0] = 0;
    int64_t rows = 48 + (int64_t)(size % 64);
    if (checkpoint_state_parse(s, rows, &cs, &err) < 0) {
        if (!err.msg[0]) abort();
    } else if (cs.step < 0 || cs.epoch < 0 || cs.index < 0 || cs.index > rows || strlen(cs.packed_fp) != 16 ||
               strlen(cs.codes_fp) != 16) {
        abort();
    }
    json_t *mc = json_object_get(s, "model_config");
    if (mc) {
        char *t = json_dumps(mc, JSON_COMPACT | JSON_ENCODE_ANY);
        asvr_config c;
        if (t) (void)asvr_config_from_json(t, &c, &err);
        free(t);
    }
    json_decref(s);
    return 0;
}
