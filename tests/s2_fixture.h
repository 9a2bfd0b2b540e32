/* s2_fixture.h — the S2 golden fixture of tests/golden/s2/ (tools/gen_s2_fixtures.py) over the tiny
 * training fixture (train_fixture.h): the same model with vision scales 46/92/138 (its projector reading
 * 3 x 48 features, its first weight from s2_init.safetensors), the same batch with the two images at
 * 138 x 138. For test_train_s2 (CPU against PyTorch) and test_train_s2_cuda (CUDA against the CPU).
 * Static functions: include it from one test file each.
 */
#ifndef ASVR_TESTS_S2_FIXTURE_H
#define ASVR_TESTS_S2_FIXTURE_H

#include "train_fixture.h"

#define G2 ASVR_GOLDEN "/s2/"
#define S2_IN 138

static safetensors *s2_init_st;
static float s2_pixels[2 * 3 * S2_IN * S2_IN];

FIXTURE_FN int s2_fixture_open(void) {
    if (fixture_open() < 0) return -1;
    asvr_error err;
    T_CHECK(safetensors_open(G2 "s2_init.safetensors", &s2_init_st, &err) == 0, "%s", err.msg);
    if (!s2_init_st) return -1;
    const st_tensor *px = safetensors_find(s2_init_st, "images");
    T_CHECK(px && px->dtype == ST_F32 && px->numel == 2 * 3 * S2_IN * S2_IN, "s2 images");
    if (!px) return -1;
    memcpy(s2_pixels, px->data, sizeof s2_pixels);
    return 0;
}

FIXTURE_FN void s2_fixture_close(void) {
    safetensors_close(s2_init_st);
    fixture_close();
}

/* The fixture's model config with the given vision "scales" (a JSON list, "" for none). */
FIXTURE_FN char *s2_config_json(const char *scales) {
    char *base = model_config_json(1);
    json_error_t je;
    json_t *o = json_loads(base, 0, &je);
    free(base);
    if (scales[0]) json_object_set_new(json_object_get(o, "vision"), "scales", json_loads(scales, JSON_DECODE_ANY, &je));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The S2 model of stage it with the visual head on dev (tower_bf16 / compute_bf16 as asvr_config's),
 * its activations and the batch. */
FIXTURE_FN void s2_build(ctx *c, nn_device dev, int tower_bf16, int compute_bf16) {
    memset(c, 0, sizeof *c);
    asvr_error err;
    asvr_config cfg;
    char *js = s2_config_json("[46, 92, 138]");
    T_EQ_INT(asvr_config_from_json(js, &cfg, &err), 0);
    free(js);
    cfg.tower_bf16 = tower_bf16;
    cfg.compute_bf16 = compute_bf16 && dev == NN_CUDA;
    asvr_model_init(&c->m, &cfg);
    param_set_trainable(&c->m.ps, "", 1);
    param_set_set_device(&c->m.ps, dev);
    param_set_commit(&c->m.ps);
    for (int i = 0; i < c->m.ps.n; i++) { /* the training fixture's values, the S2 projector's first weight */
        param *p = c->m.ps.v[i];
        const st_tensor *t = safetensors_find(s2_init_st, p->name);
        if (!t) t = safetensors_find(init_st, p->name);
        T_CHECK(t && t->numel == p->numel, "initial value of %s", p->name);
        if (t) T_CHECK(param_tensor_load(p->w, t, &err) == 0, "%s", err.msg);
    }
    param_set_sync_compute(&c->m.ps);
    T_CHECK(asvr_model_load_tower(&c->m, init_st, "vision_tower.", &err) == 0, "%s", err.msg);
    T_CHECK(asvr_model_load_codebooks(&c->m, init_st, "codebooks", &err) == 0, "%s", err.msg);
    to_i32("input_ids", c->ids, 56);
    to_i32("labels", c->labels, 56);
    to_i32("position_ids", c->pos, 56);
    to_i32("segment_ids", c->seg, 56);
    to_i32("image_flat_pos", c->image_pos, 18);
    int32_t codes[54];
    to_i32("codes", codes, 54);
    for (int i = 0; i < 54; i++) c->codes[i] = (uint16_t)codes[i];
    c->b = (asvr_batch){2, 28, c->ids, c->labels, c->pos, c->seg, 2, c->image_pos, c->codes, NULL, s2_pixels, 0, NULL};
    c->a = asvr_acts_new(&c->m, 2, 28, 2);
}

FIXTURE_FN void s2_destroy(ctx *c) {
    asvr_acts_free(c->a);
    asvr_model_free(&c->m);
}

/* forward + backward of stage it with the fixture's global means; the losses in *L, returns the total */
FIXTURE_FN double s2_step(ctx *c, asvr_losses *L) {
    memset(L, 0, sizeof *L);
    param_set_zero_grads(&c->m.ps);
    int D = c->m.c.head.depth;
    asvr_forward_backward(&c->m, c->a, &c->b, &(asvr_scales){1.0 / 18, 1.0 / (D * 18.0), 0.0}, L);
    double vis = 0;
    for (int d = 0; d < D; d++) vis += L->vis_sum[d] / (double)L->vis_count / D;
    return L->text_sum / (double)L->text_count + vis;
}

/* The S2 features of the two images on the model's tower: out [2, 9, 144] (host f32). */
FIXTURE_FN void s2_features(ctx *c, float *out) {
    nn_device dev = c->m.ps.device;
    nn_dtype dt = siglip_dtype(c->m.tower);
    nn_arena *ar = nn_arena_new("s2 test", dev);
    tensor *img = nn_arena_add(ar, "images", NN_F32, 4, (int64_t[]){2, 3, S2_IN, S2_IN});
    tensor *f = nn_arena_add(ar, "features", dt, 3, (int64_t[]){2, 9, 144});
    nn_arena_commit(ar);
    op_write_f32(img, s2_pixels);
    s2_acts *a = s2_acts_new(c->m.tower, c->m.c.scales, c->m.c.n_scales, 2);
    s2_forward(c->m.tower, a, img, f);
    op_read_f32(f, out);
    s2_acts_free(a);
    nn_arena_free(ar);
}

#endif
