/* test_tokenize_encode.c — asvr-tokenize encode end to end against PyTorch: real images through
 * decode + preprocessing + the tiny tokenizer, codes equal to tools/gen_tokenize_fixtures.py's
 * (HF SiglipVisionModel + torch RVQ) for both policies; the bad images rejected and counted. */
#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "store/code_store.h"
#include "test.h"

static int run(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void) {
    char dir[] = "/tmp/asvr_test_encode_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    json_error_t je;
    json_t *exp = json_load_file(ASVR_GOLDEN "/tokenize/expected_codes.json", 0, &je);
    T_CHECK(exp != NULL, "expected codes: %s", je.text);
    if (!exp) return t_done();
    const char *policies[] = {"pad", "squash"};
    for (int p = 0; p < 2; p++) {
        char cmd[4096], store[600], stats[600], rej[600];
        snprintf(store, sizeof store, "%s/%s.lmdb", dir, policies[p]);
        snprintf(stats, sizeof stats, "%s/%s.json", dir, policies[p]);
        snprintf(rej, sizeof rej, "%s/%s.rejects", dir, policies[p]);
        snprintf(cmd, sizeof cmd,
                 "%s/bin/asvr-tokenize encode --list %s/tokenize/images.txt --image-root %s/images "
                 "--tokenizer %s/tokenize/tiny_tokenizer.safetensors --policy %s --out %s --stats %s --rejects %s "
                 "--batch 4 --log-level error %s",
                 ASVR_BIN_DIR, ASVR_GOLDEN, ASVR_GOLDEN, ASVR_GOLDEN, policies[p], store, stats, rej, p ? "--compress" : "");
        T_EQ_INT(run(cmd), 0);
        code_store *cs;
        asvr_error err;
        T_EQ_INT(code_store_open(store, &cs, &err), 0);
        if (!cs) continue;
        const code_store_meta *m = code_store_get_meta(cs);
        T_EQ_INT(m->positions, json_integer_value(json_object_get(exp, "positions")));
        T_EQ_INT(m->depth, json_integer_value(json_object_get(exp, "depth")));
        T_CHECK(strcmp(m->policy, policies[p]) == 0, "policy recorded");
        json_t *codes = json_object_get(json_object_get(exp, "codes"), policies[p]);
        const char *key;
        json_t *want;
        int n_keys = 0;
        json_object_foreach(codes, key, want) {
            uint16_t got[4096];
            size_t n = json_array_size(want);
            for (size_t i = 0; i < n; i++) got[i] = 0xFFFF;
            T_EQ_INT(code_store_get(cs, key, got, &err), 0);
            size_t diff = 0;
            for (size_t i = 0; i < n; i++) diff += got[i] != (uint16_t)json_integer_value(json_array_get(want, i));
            T_CHECK(diff == 0, "%s %s: %zu of %zu codes differ from PyTorch", policies[p], key, diff, n);
            n_keys++;
        }
        T_EQ_INT(code_store_count(cs), n_keys);
        code_store_close(cs);
        json_t *st = json_load_file(stats, 0, &je);
        T_EQ_INT(json_integer_value(json_object_get(st, "rejected")), json_array_size(json_object_get(exp, "bad")));
        T_EQ_INT(json_integer_value(json_object_get(st, "encoded")), n_keys);
        json_decref(st);
        uint8_t *r;
        size_t rn;
        T_EQ_INT(asvr_read_file(rej, &r, &rn, &err), 0);
        T_STR_CONTAINS((char *)r, "corrupt/truncated.jpg");
        T_STR_CONTAINS((char *)r, "missing/nothing_here.jpg");
        T_STR_CONTAINS((char *)r, "No such file");
        free(r);
        unlink(stats), unlink(rej), unlink(store);
    }
    json_decref(exp);
    rmdir(dir);
    return t_done();
}
