/* test_template_llama2.c — the LLAMA_2-style templates (mistral_instruct, llama_2, llava_llama_2)
 * and vicuna_v1 with legacy and non-legacy tokenizers, against tests/golden/mistral/tmpl_*.jsonl.zst
 * (tools/gen_mistral_fixtures.py: transformers' slow LlamaTokenizer with LLaVA's preprocess_llama_2 /
 * preprocess_v1 arithmetic, and the answers' tokens found by aligning pieces to the prompt for the
 * corrected masking). The tiny SentencePiece model is committed; the Llama-2 model comes from the
 * shared data folder and its cases report themselves skipped when it is absent. */
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
#define MISTRAL_GOLDEN ASVR_GOLDEN "/mistral"

static int enc_fn(void *ctx, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err) {
    return sp_encoder_encode(ctx, text, len, add_bos, out, err);
}

static int same_ids(json_t *arr, const ivec *got) {
    if (json_array_size(arr) != got->n) return 0;
    for (size_t i = 0; i < got->n; i++)
        if (json_integer_value(json_array_get(arr, i)) != got->v[i]) return 0;
    return 1;
}

/* The conversations as turns (pointers into the JSON, which stays loaded). */
typedef struct sample {
    chat_turn turns[16];
    int n_turns, has_image;
    char id[64];
} sample;

static sample *load_samples(size_t *n) {
    json_stream *js;
    asvr_error err;
    if (json_stream_open(MISTRAL_GOLDEN "/conversations.json.zst", &js, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    size_t cap = 256, k = 0;
    sample *v = calloc(cap, sizeof *v);
    json_t *s;
    while (json_stream_next(js, &s, &err) == 1) {
        if (k == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        sample *x = &v[k++];
        memset(x, 0, sizeof *x);
        json_t *conv = json_object_get(s, "conversations");
        x->n_turns = (int)json_array_size(conv);
        for (int i = 0; i < x->n_turns && i < 16; i++) {
            json_t *c = json_array_get(conv, (size_t)i);
            x->turns[i].from_human = strcmp(json_string_value(json_object_get(c, "from")), "human") == 0;
            x->turns[i].value = strdup(json_string_value(json_object_get(c, "value")));
        }
        x->has_image = json_object_get(s, "image") != NULL;
        json_t *id = json_object_get(s, "id");
        if (json_is_string(id)) snprintf(x->id, sizeof x->id, "%s", json_string_value(id));
        else snprintf(x->id, sizeof x->id, "%lld", (long long)json_integer_value(id));
        json_decref(s);
    }
    json_stream_close(js);
    *n = k;
    return v;
}

static char *read_zst(const char *path) {
    uint8_t *z;
    size_t zn;
    asvr_error err;
    if (asvr_read_file(path, &z, &zn, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    unsigned long long raw = ZSTD_getFrameContentSize(z, zn);
    char *s = malloc(raw + 1);
    size_t got = ZSTD_decompress(s, raw, z, zn);
    free(z);
    if (ZSTD_isError(got)) {
        free(s);
        return NULL;
    }
    s[got] = 0;
    return s;
}

/* One golden file: every template and sample, both maskings. Returns the number of samples the
 * reference masked out in mistral_instruct (for the summary). */
static void check_file(const char *model, int legacy, const char *golden, const sample *smp, size_t n_smp) {
    asvr_error err;
    sp_tokenizer *tok = sp_tokenizer_load(model, &err);
    T_CHECK(tok != NULL, "%s", err.msg);
    if (!tok) return;
    sp_tokenizer_set_legacy(tok, legacy);
    sp_encoder *spe = sp_encoder_new(tok);
    text_encoder enc = {spe, enc_fn, sp_tokenizer_bos_id(tok), sp_tokenizer_eos_id(tok), sp_tokenizer_unk_id(tok), legacy};
    char *text = read_zst(golden);
    T_CHECK(text != NULL, "golden %s", golden);
    size_t checked = 0, masked_ref[8] = {0}, masked_corr = 0, differ = 0;
    const char *names[] = {"mistral_instruct", "llama_2", "llava_llama_2", "vicuna_v1"};
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *x = json_loads(line, 0, NULL);
        const char *name = json_string_value(json_object_get(x, "template"));
        size_t idx = (size_t)json_integer_value(json_object_get(x, "index"));
        const template_spec *tpl = template_find(name);
        T_CHECK(tpl != NULL && idx < n_smp, "template %s, sample %zu", name ? name : "?", idx);
        if (!tpl || idx >= n_smp) {
            json_decref(x);
            continue;
        }
        const sample *s = &smp[idx];
        for (int m = 0; m < 2; m++) {
            template_result r;
            int rc = template_apply_ex(tpl, &enc, s->turns, s->n_turns, s->has_image, 2048,
                                       m ? MASKING_CORRECTED : MASKING_REFERENCE, &r, &err);
            T_CHECK(rc == 0, "%s sample %s: %s", name, s->id, err.msg);
            if (rc < 0) continue;
            int ok_ids = same_ids(json_object_get(x, "ids"), &r.ids);
            int ok_lab = same_ids(json_object_get(x, m ? "labels_corrected" : "labels"), &r.labels);
            int ok_mis = m ? r.mismatch == 0 : r.mismatch == json_is_true(json_object_get(x, "mismatch"));
            T_CHECK(ok_ids && ok_lab && ok_mis, "%s legacy %d, %s sample %zu (id %s), %s masking: ids %s, labels %s, mismatch %d",
                    model, legacy, name, idx, s->id, m ? "corrected" : "reference", ok_ids ? "equal" : "DIFFER",
                    ok_lab ? "equal" : "DIFFER", r.mismatch);
            if (m == 0) {
                for (int k = 0; k < 4; k++) masked_ref[k] += r.mismatch && strcmp(name, names[k]) == 0;
                differ += !r.mismatch && !same_ids(json_object_get(x, "labels_corrected"), &r.labels);
            } else {
                masked_corr += r.mismatch;
            }
            template_result_free(&r);
        }
        checked++;
        json_decref(x);
    }
    T_CHECK(checked >= 4 * 160, "%s: %zu samples checked", golden, checked);
    printf("%s (legacy %d): %zu samples x 2 maskings; masked out by the reference: mistral_instruct %zu, llama_2 %zu, "
           "llava_llama_2 %zu, vicuna_v1 %zu; by the corrected masking: %zu; reference labels differing otherwise: %zu\n",
           golden, legacy, checked, masked_ref[0], masked_ref[1], masked_ref[2], masked_ref[3], masked_corr, differ);
    free(text);
    sp_encoder_free(spe);
    sp_tokenizer_free(tok);
}

/* Prompt strings (reference/scaleout_highres.md §1.6) and fingerprints, model-independent. */
static void check_prompts(void) {
    const template_spec *mi = template_find("mistral_instruct"), *l2 = template_find("llama_2");
    T_CHECK(mi && l2 && template_find("llava_llama_2"), "the LLAMA_2 templates are known");
    if (!mi || !l2) return;
    chat_turn conv[4] = {{1, "What are the colors of the bus?\n<image>"}, {0, "White and red."},
                         {1, "And the back?"}, {0, "An advertisement."}};
    char *p = template_prompt(mi, conv, 4, 1, 0);
    T_CHECK(strcmp(p, "[INST] <image>\nWhat are the colors of the bus? [/INST] White and red. </s>"
                      "[INST] And the back? [/INST] An advertisement. </s>") == 0,
            "mistral_instruct prompt: '%s'", p);
    free(p);
    p = template_prompt(mi, conv, 1, 1, 1);
    T_CHECK(strcmp(p, "[INST] <image>\nWhat are the colors of the bus? [/INST]") == 0, "generation prompt: '%s'", p);
    free(p);
    p = template_prompt(l2, conv, 4, 0, 0);
    T_CHECK(strncmp(p, "[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.", 66) == 0 &&
                strstr(p, "share false information.\n<</SYS>>\n\nWhat are the colors of the bus?\n<image> [/INST] "
                          "White and red. </s><s>[INST] And the back? [/INST] An advertisement. </s>") != NULL,
            "llama_2 prompt: '%s'", p);
    free(p);
    /* fingerprints: the reference masking with a non-legacy tokenizer keeps the old one */
    char a[17], b[17], c[17], d[17];
    const template_spec *v1 = template_find("vicuna_v1");
    template_fingerprint(v1, a);
    template_fingerprint_ex(v1, 0, MASKING_REFERENCE, b);
    template_fingerprint_ex(v1, 1, MASKING_REFERENCE, c);
    template_fingerprint_ex(v1, 0, MASKING_CORRECTED, d);
    T_CHECK(strcmp(a, b) == 0 && strcmp(a, c) != 0 && strcmp(a, d) != 0 && strcmp(c, d) != 0, "fingerprints %s %s %s %s", a,
            b, c, d);
    template_fingerprint(mi, b);
    template_fingerprint(l2, c);
    T_CHECK(strcmp(a, b) != 0 && strcmp(b, c) != 0, "templates have their own fingerprints");
    /* malformed samples */
    asvr_error err;
    template_result r;
    sp_tokenizer *tok = sp_tokenizer_load(MISTRAL_GOLDEN "/tiny_mistral.model", &err);
    T_CHECK(tok != NULL, "%s", err.msg);
    if (!tok) return;
    sp_encoder *spe = sp_encoder_new(tok);
    text_encoder enc = {spe, enc_fn, 1, 2, 0, 0};
    chat_turn empty_first[2] = {{1, ""}, {0, "A"}};
    T_EQ_INT(template_apply(mi, &enc, empty_first, 2, 0, 2048, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "first human turn");
    chat_turn bad_order[2] = {{1, "Q"}, {1, "again"}};
    T_EQ_INT(template_apply_ex(mi, &enc, bad_order, 2, 0, 2048, MASKING_CORRECTED, &r, &err), -1);
    T_STR_CONTAINS(err.msg, "alternate");
    /* corrected masking: the answer and its "</s>" are supervised, nothing else */
    chat_turn qa[2] = {{1, "hi"}, {0, "ok"}};
    T_EQ_INT(template_apply_ex(mi, &enc, qa, 2, 0, 2048, MASKING_CORRECTED, &r, &err), 0);
    size_t sup = 0, first = r.labels.n;
    for (size_t i = 0; i < r.labels.n; i++)
        if (r.labels.v[i] != IGNORE_INDEX) sup++, first = first < i ? first : i;
    T_CHECK(sup >= 2 && r.ids.v[r.ids.n - 1] == 2 && r.labels.v[r.labels.n - 1] == 2 && first > 3,
            "supervised %zu tokens from %zu of %zu", sup, first, r.labels.n);
    template_result_free(&r);
    sp_encoder_free(spe);
    sp_tokenizer_free(tok);
}

/* A NUL inside a turn is text (a JSON "\u0000", as Python keeps it): template_apply_n and
 * template_prompt_n take each turn's length, for every style and both maskings; with the turns'
 * strlen as lengths they equal template_apply_ex. */
static void check_nul(void) {
    asvr_error err;
    sp_tokenizer *tok = sp_tokenizer_load(MISTRAL_GOLDEN "/tiny_mistral.model", &err);
    T_CHECK(tok != NULL, "%s", err.msg);
    if (!tok) return;
    sp_encoder *spe = sp_encoder_new(tok);
    text_encoder enc = {spe, enc_fn, 1, 2, 0, 0};
    const char *names[] = {"vicuna_v1", "mistral_instruct", "llama_2", "llava_llama_2"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const template_spec *t = template_find(names[k]);
        for (int has_image = 0; has_image < 2; has_image++) {
            const char *q = has_image ? "<image>\nhi\0there" : "hi\0there";
            chat_turn conv[2] = {{1, q}, {0, "ok\0go on"}};
            size_t lens[2] = {has_image ? 16u : 8u, 8}, plain_lens[2] = {strlen(conv[0].value), strlen(conv[1].value)};
            size_t plen;
            char *p = template_prompt_n(t, conv, lens, 2, has_image, 0, &plen);
            T_CHECK(memmem(p, plen, "hi\0there", 8) && memmem(p, plen, "ok\0go on", 8), "%s: the prompt keeps both NULs",
                    names[k]);
            free(p);
            for (int m = 0; m < 2; m++) {
                template_masking masking = m ? MASKING_CORRECTED : MASKING_REFERENCE;
                template_result a, b, c;
                T_EQ_INT(template_apply_n(t, &enc, conv, lens, 2, has_image, 2048, masking, &a, &err), 0);
                T_EQ_INT(template_apply_ex(t, &enc, conv, 2, has_image, 2048, masking, &b, &err), 0);
                T_EQ_INT(template_apply_n(t, &enc, conv, plain_lens, 2, has_image, 2048, masking, &c, &err), 0);
                size_t sup = 0;
                for (size_t i = 0; i < a.labels.n; i++) sup += a.labels.v[i] != IGNORE_INDEX;
                T_CHECK(a.ids.n > b.ids.n && a.n_images == has_image && (m == 0 || (!a.mismatch && sup > 0)),
                        "%s image %d masking %d: %zu ids with the NULs' text, %zu without; %zu supervised", names[k],
                        has_image, m, a.ids.n, b.ids.n, sup);
                int same = b.ids.n == c.ids.n && b.labels.n == c.labels.n &&
                           !memcmp(b.ids.v, c.ids.v, b.ids.n * sizeof(int32_t)) &&
                           !memcmp(b.labels.v, c.labels.v, b.labels.n * sizeof(int32_t));
                T_CHECK(same, "%s image %d masking %d: strlen lengths give template_apply_ex's ids and labels", names[k],
                        has_image, m);
                template_result_free(&a), template_result_free(&b), template_result_free(&c);
            }
        }
    }
    sp_encoder_free(spe);
    sp_tokenizer_free(tok);
}

int main(void) {
    check_prompts();
    check_nul();
    size_t n = 0;
    sample *smp = load_samples(&n);
    T_CHECK(smp && n >= 160, "conversations loaded (%zu)", n);
    if (!smp) return t_done();
    for (int legacy = 0; legacy < 2; legacy++) {
        char golden[512];
        snprintf(golden, sizeof golden, MISTRAL_GOLDEN "/tmpl_tiny_mistral_%s.jsonl.zst", legacy ? "legacy" : "nonlegacy");
        check_file(MISTRAL_GOLDEN "/tiny_mistral.model", legacy, golden, smp, n);
    }
    const char *llama = ASVR_SHARED_DATA "/llama2-tokenizer.model";
    if (!asvr_path_exists(llama)) {
        printf("%s is absent\n", llama);
        t_skip("the Llama-2 cases need the Llama-2 tokenizer (see shared/data/README.md)");
    } else {
        for (int legacy = 0; legacy < 2; legacy++) {
            char golden[512];
            snprintf(golden, sizeof golden, MISTRAL_GOLDEN "/tmpl_llama2_%s.jsonl.zst", legacy ? "legacy" : "nonlegacy");
            check_file(llama, legacy, golden, smp, n);
        }
    }
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < smp[i].n_turns && k < 16; k++) free((char *)smp[i].turns[k].value);
    free(smp);
    return t_done();
}
