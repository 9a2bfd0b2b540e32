/* test_template.c — LLaVA templates and label masking against the reference preprocessing
 * (tools/gen_pack_fixtures.py: transformers' slow LlamaTokenizer + the reference's arithmetic),
 * over >= 1000 varied samples, plus the token vectors of reference §A2.9. Needs the Llama-2
 * tokenizer from the shared data folder; reports itself skipped when it is absent. */
#include <jansson.h>
#include <zstd.h>

#include "base/fsutil.h"
#include "io/json_stream.h"
#include "test.h"
#include "text/sp_tokenizer.h"
#include "text/template.h"

#ifndef ASVR_SHARED_DATA
#define ASVR_SHARED_DATA "../shared/data"
#endif

static int enc_fn(void *ctx, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err) {
    return sp_encoder_encode(ctx, text, len, add_bos, out, err);
}

static json_t **load_expected(size_t *n) {
    uint8_t *z;
    size_t zn;
    asvr_error err;
    if (asvr_read_file(ASVR_GOLDEN "/pack/expected_llama2.jsonl.zst", &z, &zn, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    unsigned long long raw = ZSTD_getFrameContentSize(z, zn);
    char *s = malloc(raw + 1);
    size_t got = ZSTD_decompress(s, raw, z, zn);
    free(z);
    if (ZSTD_isError(got)) return NULL;
    s[got] = 0;
    size_t cap = 2048, k = 0;
    json_t **v = malloc(cap * sizeof *v);
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        if (k == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[k++] = json_loads(line, 0, NULL);
    }
    free(s);
    *n = k;
    return v;
}

static int same_ids(json_t *arr, const ivec *got) {
    if (json_array_size(arr) != got->n) return 0;
    for (size_t i = 0; i < got->n; i++)
        if (json_integer_value(json_array_get(arr, i)) != got->v[i]) return 0;
    return 1;
}

int main(void) {
    const char *model = ASVR_SHARED_DATA "/llama2-tokenizer.model";
    if (!asvr_path_exists(model)) {
        printf("%s is absent\n", model);
        t_skip("the template parity test needs the Llama-2 tokenizer (see shared/data/README.md)");
        return t_done();
    }
    asvr_error err;
    sp_tokenizer *tok = sp_tokenizer_load(model, &err);
    T_CHECK(tok != NULL, "%s", err.msg);
    if (!tok) return t_done();
    sp_encoder *spe = sp_encoder_new(tok); /* the caching encoder asvr-pack uses */
    text_encoder enc = {spe, enc_fn, 1, 2, 0, 0};
    size_t n_exp = 0;
    json_t **exp = load_expected(&n_exp);
    T_CHECK(exp && n_exp >= 1000, "expected vectors loaded (%zu)", n_exp);
    if (!exp) return t_done();
    size_t e = 0, checked = 0, mismatches = 0;
    const char *names[] = {"plain", "vicuna_v1"};
    for (int t = 0; t < 2; t++) {
        char path[512];
        snprintf(path, sizeof path, ASVR_GOLDEN "/pack/%s.json.zst", names[t]);
        const template_spec *tpl = template_find(names[t]);
        json_stream *js;
        T_EQ_INT(json_stream_open(path, &js, &err), 0);
        json_t *s;
        while (json_stream_next(js, &s, &err) == 1) {
            json_t *conv = json_object_get(s, "conversations");
            size_t nt = json_array_size(conv);
            chat_turn turns[64];
            for (size_t i = 0; i < nt && i < 64; i++) {
                json_t *c = json_array_get(conv, i);
                turns[i].from_human = strcmp(json_string_value(json_object_get(c, "from")), "human") == 0;
                turns[i].value = json_string_value(json_object_get(c, "value"));
            }
            int has_image = json_object_get(s, "image") != NULL;
            template_result r;
            json_t *x = exp[e++];
            int rc = template_apply(tpl, &enc, turns, (int)nt, has_image, 2048, &r, &err);
            T_CHECK(rc == 0, "sample %s: %s", json_string_value(json_object_get(s, "id")), err.msg);
            if (rc == 0) {
                int ok_ids = same_ids(json_object_get(x, "ids"), &r.ids);
                int ok_lab = same_ids(json_object_get(x, "labels"), &r.labels);
                int ok_mis = r.mismatch == json_is_true(json_object_get(x, "mismatch"));
                T_CHECK(ok_ids && ok_lab && ok_mis, "%s sample %lld (id %s): ids %s, labels %s, mismatch %d",
                        names[t], (long long)json_integer_value(json_object_get(x, "index")),
                        json_is_string(json_object_get(s, "id")) ? json_string_value(json_object_get(s, "id")) : "(int)",
                        ok_ids ? "equal" : "DIFFER", ok_lab ? "equal" : "DIFFER", r.mismatch);
                mismatches += r.mismatch;
                checked++;
                /* Reference §A2.9 vectors on the bus example. */
                json_t *jid = json_object_get(s, "id");
                if (json_is_string(jid) && strcmp(json_string_value(jid), "000000033471") == 0) {
                    T_EQ_INT(r.ids.n, 96);
                    const int32_t head[] = {1, 319, 13563, 1546, 263, 12758, 1404, 322, 385, 23116, 21082, 20255, 29889,
                                            450, 20255, 4076, 8444, 29892, 13173, 29892, 322, 1248, 568, 6089, 304, 278,
                                            1404, 29915, 29879, 5155, 29889, 3148, 1001, 29901, 29871, -200, 29871, 13, 5618};
                    T_CHECK(r.ids.n >= 39 && memcmp(r.ids.v, head, sizeof head) == 0, "system prompt + image boundary ids");
                    int found_user = 0;
                    for (size_t k = 0; k + 2 < r.ids.n; k++)
                        if (r.ids.v[k] == 2 && r.ids.v[k + 1] == 11889 && r.ids.v[k + 2] == 29901) found_user = 1;
                    T_CHECK(found_user, "after </s>, USER: is 11889 29901 (non-legacy)");
                }
                template_result_free(&r);
            }
            json_decref(s);
        }
        json_stream_close(js);
    }
    T_EQ_INT(checked, n_exp);
    T_CHECK(mismatches >= 3, "the fixture exercises the masked-out case (%zu)", mismatches);
    for (size_t i = 0; i < n_exp; i++) json_decref(exp[i]);
    free(exp);

    /* Malformed samples are errors, not crashes. */
    template_result r;
    chat_turn bad_order[2] = {{1, "<image>\nQ"}, {1, "again"}};
    T_EQ_INT(template_apply(template_find("vicuna_v1"), &enc, bad_order, 2, 1, 2048, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "alternate");
    chat_turn no_image[2] = {{1, "Q"}, {0, "A"}};
    T_EQ_INT(template_apply(template_find("plain"), &enc, no_image, 2, 1, 2048, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "<image>");
    chat_turn two_images[2] = {{1, "<image>\nQ"}, {0, "A <image>"}};
    T_EQ_INT(template_apply(template_find("vicuna_v1"), &enc, two_images, 2, 1, 2048, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "placeholders");
    /* No turns: the reference raises (IndexError / assert); so does asvr, with both templates. */
    T_EQ_INT(template_apply(template_find("vicuna_v1"), &enc, NULL, 0, 0, 2048, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "empty");
    T_EQ_INT(template_apply(template_find("plain"), &enc, NULL, 0, 1, 2048, &r, &err), -1);
    /* An image sample without <image>: tokenized as an image sample, n_images 0 (the caller decides). */
    T_EQ_INT(template_apply(template_find("vicuna_v1"), &enc, no_image, 2, 1, 2048, &r, &err), 0);
    T_EQ_INT(r.n_images, 0);
    template_result_free(&r);
    /* template_collate: cut to max_len, then the pad id's positions removed, ids and labels both. */
    chat_turn unk[2] = {{1, "<image>\nSay <unk>"}, {0, "<unk> x<unk>"}};
    T_EQ_INT(template_apply(template_find("plain"), &enc, unk, 2, 1, 2048, &r, &err), 0);
    size_t n0 = r.ids.n, zeros = 0;
    for (size_t k = 0; k < r.ids.n; k++) zeros += r.ids.v[k] == 0 && r.labels.v[k] == 0; /* supervised by plain */
    T_EQ_INT(zeros, 2);
    T_EQ_INT(template_collate(&r, 0, 2048, 0), 2); /* kept */
    T_EQ_INT(r.ids.n, n0);
    T_EQ_INT(template_collate(&r, 0, 2048, 1), 2);
    T_EQ_INT(r.ids.n, n0 - 2);
    for (size_t k = 0; k < r.ids.n; k++) T_CHECK(r.ids.v[k] != 0 && r.labels.v[k] != 0, "position %zu", k);
    T_EQ_INT(template_collate(&r, 0, 3, 1), 0);
    T_CHECK(r.ids.n == 3 && r.labels.n == 3 && r.truncated, "cut to max_len first");
    template_result_free(&r);
    /* py_strip: Unicode whitespace as Python's str.strip(). */
    const char *s = "\xe3\x80\x80\t x \xc2\xa0\n";
    size_t b, en;
    py_strip(s, strlen(s), &b, &en);
    T_CHECK(b == 5 && en == 6, "strip %zu %zu", b, en);
    sp_encoder_free(spe);
    sp_tokenizer_free(tok);
    return t_done();
}
