/* test_tokenize_appearance.c — the appearance tokenizer against PyTorch
 * (tools/gen_appearance_fixtures.py: HF SiglipVisionModel to the tap, the ProjectResnetBlock written
 * from its definition, torch RVQ):
 *   - asvr-tokenize encode on real images, both policies: every code equal;
 *   - on fixed inputs: tap features and block outputs within 5e-6 relative, codes equal;
 *   - an identity-shortcut block (C_in == C_out) on a non-square grid within 8e-7;
 *   - refusals: a missing block tensor is named, bad appearance configs are rejected. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "io/safetensors.h"
#include "model/proj_block.h"
#include "model/vision_tokenizer.h"
#include "store/code_store.h"
#include "test.h"

#define DIR ASVR_GOLDEN "/tokenize_appearance"

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double relerr(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

/* The named f32 tensor of st with n elements, or NULL (a failed check). */
static const float *get_f32(const safetensors *st, const char *name, int64_t n) {
    const st_tensor *t = safetensors_find(st, name);
    T_CHECK(t != NULL, "fixture tensor %s", name);
    if (!t) return NULL;
    T_CHECK(t->dtype == ST_F32 && (int64_t)(t->nbytes / 4) == n, "fixture tensor %s: F32 with %lld elements",
            name, (long long)n);
    return t->dtype == ST_F32 && (int64_t)(t->nbytes / 4) == n ? (const float *)t->data : NULL;
}

static void test_encode_cli(const char *dir) {
    json_error_t je;
    json_t *exp = json_load_file(DIR "/expected_codes.json", 0, &je);
    T_CHECK(exp != NULL, "expected codes: %s", je.text);
    if (!exp) return;
    const char *policies[] = {"pad", "squash"};
    for (int p = 0; p < 2; p++) {
        char cmd[4096], store[600], stats[600];
        snprintf(store, sizeof store, "%s/%s.lmdb", dir, policies[p]);
        snprintf(stats, sizeof stats, "%s/%s.json", dir, policies[p]);
        snprintf(cmd, sizeof cmd,
                 "%s/bin/asvr-tokenize encode --list %s/tokenize/images.txt --image-root %s/images "
                 "--tokenizer %s/tiny_appearance.safetensors --policy %s --out %s --stats %s --batch 3 --log-level error",
                 ASVR_BIN_DIR, ASVR_GOLDEN, ASVR_GOLDEN, DIR, policies[p], store, stats);
        T_EQ_INT(run(cmd), 0);
        code_store *cs;
        asvr_error err;
        T_EQ_INT(code_store_open(store, &cs, &err), 0);
        if (!cs) continue;
        const code_store_meta *m = code_store_get_meta(cs);
        T_EQ_INT(m->positions, json_integer_value(json_object_get(exp, "positions")));
        T_EQ_INT(m->depth, json_integer_value(json_object_get(exp, "depth")));
        json_t *codes = json_object_get(json_object_get(exp, "codes"), policies[p]);
        const char *key;
        json_t *want;
        int n_keys = 0;
        size_t total = 0, diff_all = 0;
        json_object_foreach(codes, key, want) {
            uint16_t got[4096];
            size_t n = json_array_size(want);
            T_CHECK(n <= 4096, "fixture size");
            for (size_t i = 0; i < n; i++) got[i] = 0xFFFF;
            T_EQ_INT(code_store_get(cs, key, got, &err), 0);
            size_t diff = 0;
            for (size_t i = 0; i < n; i++) diff += got[i] != (uint16_t)json_integer_value(json_array_get(want, i));
            T_CHECK(diff == 0, "%s %s: %zu of %zu codes differ from PyTorch", policies[p], key, diff, n);
            total += n, diff_all += diff;
            n_keys++;
        }
        printf("appearance encode, %s: %d images, %zu of %zu codes differ from PyTorch\n", policies[p], n_keys,
               diff_all, total);
        T_EQ_INT(code_store_count(cs), n_keys);
        code_store_close(cs);
        json_t *st = json_load_file(stats, 0, &je);
        T_EQ_INT(json_integer_value(json_object_get(st, "rejected")), json_array_size(json_object_get(exp, "bad")));
        T_EQ_INT(json_integer_value(json_object_get(st, "encoded")), n_keys);
        json_decref(st);
        unlink(stats), unlink(store);
    }
    json_decref(exp);
}

static void test_features(void) {
    asvr_error err;
    vision_tokenizer *vt;
    T_EQ_INT(vision_tokenizer_load(DIR "/tiny_appearance.safetensors", &vt, &err), 0);
    if (!vt) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    const vtok_config *c = vision_tokenizer_config(vt);
    T_EQ_INT(c->kind_id, VTOK_APPEARANCE);
    T_EQ_INT(c->enc.tap, 2);
    T_EQ_INT(vision_tokenizer_code_dim(vt), 32);
    T_EQ_INT(c->norm_groups, 32);
    int B = 2, N = vision_tokenizer_positions(vt), C = c->enc.hidden, E = c->embed_dim, D = c->depth, S = c->enc.image_size;
    T_EQ_INT(N, 49);
    safetensors *fx;
    T_EQ_INT(safetensors_open(DIR "/features.safetensors", &fx, &err), 0);
    const float *img = get_f32(fx, "images", (int64_t)B * 3 * S * S), *tap = get_f32(fx, "tap_features", (int64_t)B * N * C),
                *blk = get_f32(fx, "block_output", (int64_t)B * N * E);
    const st_tensor *ct = safetensors_find(fx, "codes");
    T_CHECK(ct && ct->dtype == ST_I32 && ct->nbytes == sizeof(int32_t) * (size_t)(B * N * D), "codes fixture");
    if (img && tap && blk && ct) {
        vtok_work *w = vtok_work_new(vt, B);
        float *got = malloc(sizeof(float) * (size_t)(B * N * C));
        vision_tokenizer_features(vt, w, B, img, got);
        double e_tap = relerr(got, tap, (int64_t)B * N * C);
        vision_tokenizer_quant_input(vt, w, B, img, got);
        double e_blk = relerr(got, blk, (int64_t)B * N * E);
        printf("appearance features vs PyTorch: tap layer %.3g, projection block %.3g (relative)\n", e_tap, e_blk);
        T_CHECK(e_tap < 4e-6, "tap features relative error %.3g", e_tap); /* measured 3.7e-7 (vs the golden) */
        T_CHECK(e_blk < 5e-6, "block output relative error %.3g", e_blk); /* measured 4.8e-7 (vs the golden) */
        uint16_t *codes = malloc(sizeof(uint16_t) * (size_t)(B * N * D));
        vision_tokenizer_encode(vt, w, B, img, codes);
        const int32_t *want = (const int32_t *)ct->data;
        int diff = 0;
        for (int i = 0; i < B * N * D; i++) diff += codes[i] != (uint16_t)want[i];
        T_CHECK(diff == 0, "%d of %d codes differ on the fixed inputs", diff, B * N * D);
        /* one image at a time gives the same codes as the batch (GroupNorm statistics are per image) */
        uint16_t one[49 * 3];
        vision_tokenizer_encode(vt, w, 1, img + 3 * S * S, one);
        T_CHECK(memcmp(one, codes + N * D, sizeof(uint16_t) * (size_t)(N * D)) == 0, "batch-independent codes");
        char buf[8192] = {0};
        FILE *f = fmemopen(buf, sizeof buf - 1, "w");
        vision_tokenizer_print(vt, f);
        fclose(f);
        T_STR_CONTAINS(buf, "appearance");
        T_STR_CONTAINS(buf, "nin_shortcut");
        T_STR_CONTAINS(buf, "RVQ 3 x 64 x 32");
        free(codes);
        free(got);
        vtok_work_free(w);
    }

    /* identity shortcut, 32 -> 32 on a 4 x 6 grid */
    proj_block *pb;
    T_EQ_INT(proj_block_load(fx, "id_block.", 32, 32, 32, 1e-6f, &pb, &err), 0);
    const float *xi = get_f32(fx, "id_block_input", 24 * 32), *yo = get_f32(fx, "id_block_output", 24 * 32);
    if (pb && xi && yo) {
        proj_block_acts *a = proj_block_acts_new(pb, 1, 4, 6);
        float out[24 * 32];
        tensor x = tensor_make("x", NN_F32, NN_CPU, 3, (int64_t[]){1, 24, 32}, (void *)xi);
        tensor y = tensor_make("y", NN_F32, NN_CPU, 3, (int64_t[]){1, 24, 32}, out);
        proj_block_forward(pb, a, &x, &y);
        double e = relerr(out, yo, 24 * 32);
        printf("identity-shortcut block vs PyTorch: %.3g (relative)\n", e);
        T_CHECK(e < 8e-7, "identity block relative error %.3g", e); /* measured 7.5e-8 (vs the golden) */
        proj_block_acts_free(a);
    }
    proj_block_free(pb);
    /* the same tensors as a 32 -> 16 block: no nin_shortcut in the file, and the shapes do not fit */
    T_EQ_INT(proj_block_load(fx, "id_block.", 32, 16, 16, 1e-6f, &pb, &err), -1);
    T_STR_CONTAINS(err.msg, "id_block.");
    T_EQ_INT(proj_block_load(fx, "id_block.", 32, 48, 32, 1e-6f, &pb, &err), -1);
    T_STR_CONTAINS(err.msg, "multiples of 32");
    safetensors_close(fx);
    vision_tokenizer_free(vt);
}

/* A copy of the tokenizer without one tensor, or with another config: load must fail naming it. */
static void test_refusals(const char *dir) {
    asvr_error err;
    safetensors *st;
    T_EQ_INT(safetensors_open(DIR "/tiny_appearance.safetensors", &st, &err), 0);
    if (!st) return;
    const char *cfg = safetensors_metadata(st, VTOK_META_KEY);
    char path[600];
    snprintf(path, sizeof path, "%s/broken.safetensors", dir);
    st_writer *w = st_writer_new();
    for (int i = 0; i < safetensors_count(st); i++) {
        const st_tensor *t = safetensors_at(st, i);
        if (strcmp(t->name, "prequant_visual.conv2.bias") == 0) continue;
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    st_writer_set_metadata(w, VTOK_META_KEY, cfg);
    T_EQ_INT(st_writer_write(w, path, &err), 0);
    st_writer_free(w);
    vision_tokenizer *vt;
    T_EQ_INT(vision_tokenizer_load(path, &vt, &err), -1);
    T_STR_CONTAINS(err.msg, "prequant_visual.conv2.bias");
    unlink(path);

    vtok_config c;
    json_t *o = json_loads(cfg, 0, NULL);
    json_object_set_new(o, "embed_dim", json_integer(48));
    char *s = json_dumps(o, JSON_SORT_KEYS);
    T_EQ_INT(vtok_config_parse(s, &c, &err), -1);
    T_STR_CONTAINS(err.msg, "norm_groups");
    free(s);
    json_object_del(o, "embed_dim");
    s = json_dumps(o, JSON_SORT_KEYS);
    T_EQ_INT(vtok_config_parse(s, &c, &err), -1);
    T_STR_CONTAINS(err.msg, "embed_dim");
    free(s);
    json_object_set_new(o, "embed_dim", json_integer(32));
    json_object_set_new(o, "kind", json_string("pixel"));
    s = json_dumps(o, JSON_SORT_KEYS);
    T_EQ_INT(vtok_config_parse(s, &c, &err), -1);
    T_STR_CONTAINS(err.msg, "'pixel'");
    free(s);
    json_object_set_new(o, "kind", json_string("appearance"));
    json_object_del(o, "norm_groups");
    json_object_del(o, "norm_eps");
    json_object_del(o, "prequant_prefix");
    s = json_dumps(o, JSON_SORT_KEYS);
    T_EQ_INT(vtok_config_parse(s, &c, &err), 0); /* the DualToken defaults */
    T_EQ_INT(c.norm_groups, 32);
    T_CHECK(c.norm_eps == 1e-6f && strcmp(c.prequant_prefix, "prequant_visual.") == 0, "defaults");
    free(s);
    json_decref(o);
    safetensors_close(st);

    /* fit makes codebooks for raw tap features: it refuses an appearance source */
    char cmd[2048], out[600], log[600];
    snprintf(out, sizeof out, "%s/fit.safetensors", dir);
    snprintf(log, sizeof log, "%s/fit.log", dir);
    snprintf(cmd, sizeof cmd,
             "%s/bin/asvr-tokenize fit --encoder %s/tiny_appearance.safetensors --list %s/tokenize/images.txt "
             "--image-root %s/images --policy squash --depth 1 --codebook-size 4 --out %s 2>%s",
             ASVR_BIN_DIR, DIR, ASVR_GOLDEN, ASVR_GOLDEN, out, log);
    T_EQ_INT(run(cmd), 1);
    T_CHECK(access(out, F_OK) != 0, "fit from an appearance tokenizer writes nothing");
    uint8_t *text;
    size_t n;
    if (asvr_read_file(log, &text, &n, &err) == 0) {
        T_STR_CONTAINS((char *)text, "'appearance' tokenizer");
        free(text);
    }
    unlink(log);
}

int main(void) {
    char dir[] = "/tmp/asvr_test_appearance_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_encode_cli(dir);
    test_features();
    test_refusals(dir);
    rmdir(dir);
    return t_done();
}
