/* test_tokenize_s2.c — asvr-tokenize encode --input-size 138 --downsample bilinear (the S2 visual-head
 * targets) end to end against PyTorch (tools/gen_s2_fixtures.py: Pillow at 138, torch bilinear without
 * antialias to the tiny tokenizer's 46, HF SigLIP, torch RVQ): codes identical on real photos for both
 * policies; Pillow's 8-bit images at 1152 (upsampling) bit-exact, by checksum; the store's meta records the input size and the rule; a store of the other kind is refused
 * (either way round); the option combinations that make no sense are usage errors. Control: the plain
 * 46 px store's codes differ from the S2 ones on most images (so equality is not a given).
 */
#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/image.h"
#include "store/code_store.h"
#include "test.h"

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define ENC ASVR_BIN_DIR "/bin/asvr-tokenize encode --list " ASVR_GOLDEN "/s2/images.txt --image-root " ASVR_GOLDEN \
            "/images --tokenizer " ASVR_GOLDEN "/tokenize/tiny_tokenizer.safetensors --log-level error "

/* Pillow's 8-bit 1152 x 1152 images (upsampled: every photo is smaller) against the generator's checksum:
 * sum over bytes i of x[i] * (i * 2654435761 + 1) modulo 2^64. */
static void pillow_1152(json_t *exp) {
    json_t *all = json_object_get(exp, "pillow_1152_checksum");
    T_CHECK(json_is_object(all), "pillow_1152_checksum");
    const char *policy;
    json_t *keys;
    uint8_t *u8 = malloc((size_t)1152 * 1152 * 3);
    int n = 0;
    json_object_foreach(all, policy, keys) {
        const char *key;
        json_t *want;
        json_object_foreach(keys, key, want) {
            char path[1024];
            snprintf(path, sizeof path, "%s/images/%s", ASVR_GOLDEN, key);
            image_decode_opts dopts;
            image_decode_opts_default(&dopts);
            image_preprocess_opts popts;
            image_preprocess_opts_default(&popts);
            T_EQ_INT(image_policy_parse(policy, &popts.policy), 0);
            popts.size = 1152;
            image_rgb img = {0};
            asvr_error err;
            T_CHECK(image_decode_file(path, &dopts, &img, &err) == 0 && image_preprocess(&img, &popts, u8, &err) == 0,
                    "%s: %s", key, err.msg);
            uint64_t sum = 0;
            for (uint64_t i = 0; i < (uint64_t)1152 * 1152 * 3; i++) sum += (uint64_t)u8[i] * (i * 2654435761ULL + 1);
            char hex[17];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
            T_CHECK(!strcmp(hex, json_string_value(want)), "%s %s at 1152: checksum %s, Pillow's %s", policy, key, hex,
                    json_string_value(want));
            image_free(&img);
            n++;
        }
    }
    printf("Pillow at 1152 (upsampling): %d images x policies bit-exact\n", n);
    free(u8);
}

int main(void) {
    char dir[] = "/tmp/asvr_test_tokenize_s2_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    json_error_t je;
    json_t *exp = json_load_file(ASVR_GOLDEN "/s2/expected_codes.json", 0, &je);
    T_CHECK(exp != NULL, "expected codes: %s", je.text);
    if (!exp) return t_done();
    pillow_1152(exp);
    int P = (int)json_integer_value(json_object_get(exp, "positions")), D = (int)json_integer_value(json_object_get(exp, "depth"));
    const char *policies[] = {"pad", "squash"};
    char cmd[4096];
    for (int p = 0; p < 2; p++) {
        char store[600], plain[600];
        snprintf(store, sizeof store, "%s/%s_s2.lmdb", dir, policies[p]);
        snprintf(plain, sizeof plain, "%s/%s_46.lmdb", dir, policies[p]);
        snprintf(cmd, sizeof cmd, ENC "--policy %s --input-size 138 --downsample bilinear --batch 3 --out %s", policies[p], store);
        T_EQ_INT(run(cmd), 0);
        snprintf(cmd, sizeof cmd, ENC "--policy %s --out %s", policies[p], plain);
        T_EQ_INT(run(cmd), 0);
        code_store *cs, *cp;
        asvr_error err;
        T_EQ_INT(code_store_open(store, &cs, &err), 0);
        T_EQ_INT(code_store_open(plain, &cp, &err), 0);
        if (!cs || !cp) continue;
        const code_store_meta *m = code_store_get_meta(cs);
        T_EQ_INT(m->input_size, 138);
        T_EQ_INT(m->image_size, 46);
        T_CHECK(!strcmp(m->downsample, "bilinear"), "meta downsample '%s'", m->downsample);
        T_EQ_INT(code_store_get_meta(cp)->input_size, 46);
        T_CHECK(!strcmp(code_store_get_meta(cp)->downsample, "none"), "plain meta downsample");
        json_t *codes = json_object_get(json_object_get(exp, "codes"), policies[p]);
        const char *key;
        json_t *want;
        int n_img = 0, n_diff_plain = 0;
        json_object_foreach(codes, key, want) {
            uint16_t got[4096], got46[4096];
            T_EQ_INT(code_store_get(cs, key, got, &err), 0);
            T_EQ_INT(code_store_get(cp, key, got46, &err), 0);
            int bad = 0, diff = 0;
            for (int i = 0; i < P * D; i++) {
                bad += got[i] != (uint16_t)json_integer_value(json_array_get(want, (size_t)i));
                diff += got[i] != got46[i];
            }
            T_CHECK(bad == 0, "%s %s: %d of %d codes differ from PyTorch's", policies[p], key, bad, P * D);
            n_diff_plain += diff > 0;
            n_img++;
        }
        T_EQ_INT(n_img, 8);
        T_CHECK(n_diff_plain >= n_img / 2, "%s: only %d of %d images get other codes at 138 -> 46 than at 46", policies[p],
                n_diff_plain, n_img);
        printf("%s: %d images, codes equal to PyTorch's; %d of them differ from the plain 46 px store's\n", policies[p],
               n_img, n_diff_plain);
        code_store_close(cs);
        code_store_close(cp);
        /* refusals: appending plain codes to the S2 store, S2 codes to the plain store */
        snprintf(cmd, sizeof cmd, ENC "--policy %s --out %s 2> %s/err.txt", policies[p], store, dir);
        T_EQ_INT(run(cmd), 1);
        snprintf(cmd, sizeof cmd, "grep -q 'input size' %s/err.txt", dir);
        T_EQ_INT(run(cmd), 0);
        snprintf(cmd, sizeof cmd, ENC "--policy %s --input-size 138 --downsample bilinear --out %s 2> %s/err.txt", policies[p],
                 plain, dir);
        T_EQ_INT(run(cmd), 1);
        snprintf(cmd, sizeof cmd, "grep -q '138' %s/err.txt && grep -q '46' %s/err.txt", dir, dir);
        T_EQ_INT(run(cmd), 0);
        /* a rerun of the finished S2 store is a no-op */
        snprintf(cmd, sizeof cmd, ENC "--policy %s --input-size 138 --downsample bilinear --out %s", policies[p], store);
        T_EQ_INT(run(cmd), 0);
    }
    /* usage errors */
    const char *usage[] = {"--input-size 138", "--downsample bilinear", "--input-size 40 --downsample bilinear",
                           "--input-size 138 --downsample bicubic"};
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, ENC "--policy pad %s --out %s/u.lmdb 2> /dev/null", usage[i], dir);
        T_CHECK(run(cmd) == 2, "'%s' is not a usage error", usage[i]);
    }
    json_decref(exp);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_EQ_INT(run(cmd), 0);
    return t_done();
}
