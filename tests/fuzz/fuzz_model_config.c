/* fuzz_model_config.c — libFuzzer harness over model configs (model/asvr.h asvr_config_from_json, with
 * the LLaMA config inside): any text is accepted or refused with a message; an accepted config has
 * sane dimensions (positive, image_std > 0, finite) and declares its parameters without allocating
 * them when it is small. Seeds: tests/golden/fuzz/model_config/. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/asvr.h"
#include "nn/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    text[size] = 0;
    asvr_config c;
    asvr_error err;
    err.msg[0] = 0;
    if (asvr_config_from_json(text, &c, &err) < 0) {
        if (!err.msg[0]) abort();
        free(text);
        return 0;
    }
    if (c.llm.dim <= 0 || c.llm.n_layers <= 0 || c.llm.vocab <= 0 || c.image_positions <= 0) abort();
    for (int i = 0; i < 3; i++)
        if (!(c.image_std[i] > 0) || !isfinite(c.image_mean[i]) || !isfinite(c.image_std[i])) abort();
    /* declare the model (plan only: nothing is allocated) when the parameter count stays small */
    double params = (double)c.llm.dim * c.llm.vocab * 2 + (double)c.llm.n_layers * c.llm.dim * (4.0 * c.llm.dim + 3.0 * c.llm.ffn_dim);
    if (params < 1e7 && c.llm.n_layers < 64) {
        nn_arena_set_plan_only(1);
        asvr_model m;
        asvr_model_init(&m, &c);
        asvr_model_free(&m);
        nn_arena_set_plan_only(0);
    }
    free(text);
    return 0;
}
