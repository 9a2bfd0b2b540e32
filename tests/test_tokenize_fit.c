/* test_tokenize_fit.c — asvr-tokenize fit end to end: the file it writes loads with
 * vision_tokenizer_load with the requested D, K and tap layer, keeps every encoder tensor of the
 * source byte for byte, has a new fingerprint, records the fit, and its residual MSE strictly
 * decreases across depths. */
#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "model/vision_tokenizer.h"
#include "test.h"

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void) {
    char dir[] = "/tmp/asvr_test_fit_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    const char *src = ASVR_GOLDEN "/tokenize/tiny_tokenizer.safetensors";
    char out[600], stats[600], cmd[4096];
    snprintf(out, sizeof out, "%s/fit.safetensors", dir);
    snprintf(stats, sizeof stats, "%s/fit.json", dir);
    snprintf(cmd, sizeof cmd,
             "%s/bin/asvr-tokenize fit --encoder %s --list %s/tokenize/images.txt --image-root %s/images --policy squash "
             "--depth 3 --codebook-size 16 --iters 30 --seed 5 --out %s --stats %s --log-level error",
             ASVR_BIN_DIR, src, ASVR_GOLDEN, ASVR_GOLDEN, out, stats);
    T_EQ_INT(run(cmd), 0);

    asvr_error err;
    vision_tokenizer *vt = NULL, *vs = NULL;
    T_EQ_INT(vision_tokenizer_load(out, &vt, &err), 0);
    T_EQ_INT(vision_tokenizer_load(src, &vs, &err), 0);
    if (vt && vs) {
        const vtok_config *c = vision_tokenizer_config(vt), *s = vision_tokenizer_config(vs);
        T_EQ_INT(c->depth, 3);
        T_EQ_INT(c->codebook_size, 16);
        T_EQ_INT(c->enc.tap, s->enc.tap);
        T_EQ_INT(c->enc.hidden, s->enc.hidden);
        T_CHECK(strcmp(vision_tokenizer_fingerprint(vt), vision_tokenizer_fingerprint(vs)) != 0, "new fingerprint");
        /* It encodes: codes in range for a batch of one grey image. */
        int S = c->enc.image_size, N = vision_tokenizer_positions(vt);
        float *img = calloc((size_t)3 * S * S, sizeof(float));
        uint16_t *codes = calloc((size_t)N * 3, sizeof(uint16_t));
        vtok_work *w = vtok_work_new(vt, 1);
        vision_tokenizer_encode(vt, w, 1, img, codes);
        int in_range = 1;
        for (int i = 0; i < N * 3; i++) in_range &= codes[i] < 16;
        T_CHECK(in_range, "codes below K");
        vtok_work_free(w);
        free(img);
        free(codes);
    }
    vision_tokenizer_free(vt);
    vision_tokenizer_free(vs);

    /* Encoder tensors byte for byte; only the codebooks differ; the fit record is there. */
    safetensors *a = NULL, *b = NULL;
    T_EQ_INT(safetensors_open(src, &a, &err), 0);
    T_EQ_INT(safetensors_open(out, &b, &err), 0);
    if (a && b) {
        int enc = 0, same = 0, books = 0;
        for (int i = 0; i < safetensors_count(a); i++) {
            const st_tensor *t = safetensors_at(a, i);
            if (strncmp(t->name, "quantizer.codebooks.", 20) == 0) continue;
            enc++;
            const st_tensor *u = safetensors_find(b, t->name);
            same += u && u->dtype == t->dtype && u->nbytes == t->nbytes && memcmp(u->data, t->data, t->nbytes) == 0;
        }
        T_CHECK(enc > 0 && same == enc, "%d of %d encoder tensors identical", same, enc);
        for (int i = 0; i < safetensors_count(b); i++) books += strncmp(safetensors_at(b, i)->name, "quantizer.codebooks.", 20) == 0;
        T_EQ_INT(books, 3);
        T_EQ_INT(safetensors_count(b), enc + 3);
        json_t *cfg = json_loads(safetensors_metadata(b, VTOK_META_KEY), 0, NULL);
        json_t *fit = json_object_get(cfg, "fit");
        T_CHECK(json_is_object(fit), "config has a fit record");
        char fp[17];
        T_EQ_INT(vision_tokenizer_fingerprint_file(src, fp, &err), 0);
        T_CHECK(json_is_string(json_object_get(fit, "source_fingerprint")) &&
                    strcmp(json_string_value(json_object_get(fit, "source_fingerprint")), fp) == 0,
                "fit names the source fingerprint");
        T_EQ_INT(json_integer_value(json_object_get(fit, "images_used")), 14);
        T_EQ_INT(json_integer_value(json_object_get(fit, "seed")), 5);
        json_t *mse = json_object_get(fit, "mse");
        T_EQ_INT(json_array_size(mse), 3);
        double prev = json_number_value(json_object_get(fit, "input_mse"));
        for (size_t d = 0; d < json_array_size(mse); d++) {
            double m = json_number_value(json_array_get(mse, d));
            T_CHECK(m < prev && m >= 0, "depth %zu: residual mse %g, before %g", d, m, prev);
            prev = m;
        }
        json_decref(cfg);
    }
    safetensors_close(a);
    safetensors_close(b);
    json_error_t je;
    json_t *s = json_load_file(stats, 0, &je);
    T_CHECK(s && json_integer_value(json_object_get(s, "vectors")) == 126, "stats: 126 vectors");
    json_decref(s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_EQ_INT(run(cmd), 0);
    return t_done();
}
