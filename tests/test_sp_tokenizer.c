/* test_sp_tokenizer.c — SentencePiece BPE tokenizer against golden vectors from sentencepiece and HF
 * transformers' slow LlamaTokenizer(legacy=False) (tests/golden/sp/, made by tools/gen_sp_fixtures.py),
 * the Llama-2 vectors of the data spec, corrupt-model rejection, and the O(n log n) encode cost. */
#include <jansson.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "base/fsutil.h"
#include "test.h"
#include "text/sp_tokenizer.h"

#ifndef ASVR_SHARED_DATA
#define ASVR_SHARED_DATA "../shared/data"
#endif

#define SP_GOLDEN ASVR_GOLDEN "/sp"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_ids(const char *what, const int32_t *v, size_t n) {
    fprintf(stderr, "  %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Compares ids with a JSON array; prints both on mismatch. */
static int ids_equal(const ivec *got, json_t *want) {
    size_t n = json_array_size(want);
    int eq = got->n == n;
    for (size_t i = 0; eq && i < n; i++) eq = got->v[i] == (int32_t)json_integer_value(json_array_get(want, i));
    if (!eq) {
        print_ids("got", got->v, got->n);
        int32_t *w = malloc((n ? n : 1) * sizeof(int32_t));
        for (size_t i = 0; i < n; i++) w[i] = (int32_t)json_integer_value(json_array_get(want, i));
        print_ids("want", w, n);
        free(w);
    }
    return eq;
}

static void json_to_ids(json_t *a, ivec *out) {
    out->n = 0;
    for (size_t i = 0; i < json_array_size(a); i++) ivec_push(out, (int32_t)json_integer_value(json_array_get(a, i)));
}

static int str_equal(const char *got, size_t got_n, json_t *want) {
    size_t n = json_string_length(want);
    return got_n == n && memcmp(got, json_string_value(want), n) == 0;
}

/* legacy: -1 keeps what the load gave (no config: non-legacy), 0/1 sets HF's legacy flag. The
 * tests/golden/mistral/sp_*.json files (tools/gen_mistral_fixtures.py) have no vocabulary summary or
 * plain sentencepiece ids: what a file lacks is not checked. */
static void check_golden_ex(const char *model_path, const char *json_path, int legacy) {
    asvr_error err = {{0}};
    sp_tokenizer *t = sp_tokenizer_load(model_path, &err);
    T_CHECK(t != NULL, "%s", err.msg);
    if (!t) return;
    if (legacy >= 0) sp_tokenizer_set_legacy(t, legacy);
    json_error_t jerr;
    json_t *root = json_load_file(json_path, JSON_ALLOW_NUL, &jerr);
    T_CHECK(root != NULL, "%s: %s (line %d)", json_path, jerr.text, jerr.line);
    if (!root) {
        sp_tokenizer_free(t);
        return;
    }
    if (json_object_get(root, "vocab_size")) {
        T_EQ_INT(sp_tokenizer_vocab_size(t), json_integer_value(json_object_get(root, "vocab_size")));
        T_EQ_INT(sp_tokenizer_bos_id(t), json_integer_value(json_object_get(root, "bos_id")));
        T_EQ_INT(sp_tokenizer_eos_id(t), json_integer_value(json_object_get(root, "eos_id")));
        T_EQ_INT(sp_tokenizer_unk_id(t), json_integer_value(json_object_get(root, "unk_id")));
        T_EQ_INT(sp_tokenizer_pad_id(t), json_integer_value(json_object_get(root, "pad_id")));
    }
    if (json_object_get(root, "legacy")) T_EQ_INT(sp_tokenizer_legacy(t), json_is_true(json_object_get(root, "legacy")));
    json_t *pieces = json_object_get(root, "pieces");
    for (size_t i = 0; i < json_array_size(pieces); i++) {
        json_t *pair = json_array_get(pieces, i);
        int id = (int)json_integer_value(json_array_get(pair, 0));
        json_t *ps = json_array_get(pair, 1);
        size_t pl = 0;
        const char *p = sp_tokenizer_id_to_piece(t, id, &pl);
        T_CHECK(p && str_equal(p, pl, ps), "piece of id %d is not '%s'", id, json_string_value(ps));
        T_EQ_INT(sp_tokenizer_piece_to_id(t, json_string_value(ps), json_string_length(ps)), id);
    }

    json_t *cases = json_object_get(root, "cases");
    int n_fail_before = t_fail;
    ivec got = {0};
    sp_encoder *enc = sp_encoder_new(t); /* the word-caching encoder must give the same ids */
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        json_t *text = json_object_get(c, "text");
        const char *s = json_string_value(text);
        size_t n = json_string_length(text);
        const char *show = n > 60 ? "(long text)" : s;
        got.n = 0;
        T_CHECK(sp_tokenizer_encode(t, s, n, 1, &got, &err) == 0, "%s", err.msg);
        T_CHECK(ids_equal(&got, json_object_get(c, "ids_bos")), "%s case %zu: ids with BOS differ for '%s'", json_path, i, show);
        got.n = 0;
        T_CHECK(sp_tokenizer_encode(t, s, n, 0, &got, &err) == 0, "%s", err.msg);
        T_CHECK(ids_equal(&got, json_object_get(c, "ids")), "%s case %zu: ids without BOS differ for '%s'", json_path, i, show);
        for (int pass = 0; pass < 2; pass++) { /* second pass: words come from the cache */
            got.n = 0;
            T_CHECK(sp_encoder_encode(enc, s, n, 1, &got, &err) == 0, "%s", err.msg);
            T_CHECK(ids_equal(&got, json_object_get(c, "ids_bos")), "%s case %zu: cached encoder (pass %d) differs for '%s'",
                    json_path, i, pass, show);
        }
        if (json_object_get(c, "sp_ids")) {
            got.n = 0;
            T_CHECK(sp_tokenizer_encode_sp(t, s, n, 0, &got, &err) == 0, "%s", err.msg);
            T_CHECK(ids_equal(&got, json_object_get(c, "sp_ids")), "%s case %zu: sentencepiece ids differ for '%s'", json_path,
                    i, show);
        }
        ivec want = {0};
        json_to_ids(json_object_get(c, "ids_bos"), &want);
        for (int skip = 0; skip < 2; skip++) {
            size_t dn = 0;
            char *d = sp_tokenizer_decode(t, want.v, want.n, skip, &dn, &err);
            T_CHECK(d != NULL, "%s", err.msg);
            json_t *wd = json_object_get(c, skip ? "decode_skip" : "decode");
            T_CHECK(d && str_equal(d, dn, wd), "%s case %zu: decode(skip=%d) '%s' != '%s'", json_path, i, skip,
                    d ? d : "", json_string_value(wd));
            free(d);
        }
        ivec_free(&want);
        if (t_fail - n_fail_before > 20) {
            fprintf(stderr, "too many failures in %s, stopping\n", json_path);
            break;
        }
    }
    json_t *decodes = json_object_get(root, "decodes");
    for (size_t i = 0; i < json_array_size(decodes); i++) {
        json_t *c = json_array_get(decodes, i);
        json_to_ids(json_object_get(c, "ids"), &got);
        for (int skip = 0; skip < 2; skip++) {
            size_t dn = 0;
            char *d = sp_tokenizer_decode(t, got.v, got.n, skip, &dn, &err);
            T_CHECK(d != NULL, "%s", err.msg);
            json_t *wd = json_object_get(c, skip ? "decode_skip" : "decode");
            T_CHECK(d && str_equal(d, dn, wd), "%s decode %zu (skip=%d): '%s' != '%s'", json_path, i, skip, d ? d : "",
                    json_string_value(wd));
            if (!(d && str_equal(d, dn, wd))) print_ids("ids", got.v, got.n);
            free(d);
        }
    }
    printf("%s: %zu encode cases, %zu decode cases (legacy %d)\n", json_path, json_array_size(cases),
           json_array_size(decodes), sp_tokenizer_legacy(t));
    ivec_free(&got);
    sp_encoder_free(enc);
    json_decref(root);
    sp_tokenizer_free(t);
}

static void check_golden(const char *model_path, const char *json_path) { check_golden_ex(model_path, json_path, -1); }

/* The Llama-2 / Vicuna-v1.5 vectors of reference/data_and_eval.md §A2.9, independent of the fixtures. */
static void check_llama_spec_vectors(sp_tokenizer *t) {
    asvr_error err = {{0}};
    ivec ids = {0};
    static const int32_t system_ids[] = {1, 319, 13563, 1546, 263, 12758, 1404, 322, 385, 23116, 21082, 20255, 29889,
                                         450, 20255, 4076, 8444, 29892, 13173, 29892, 322, 1248, 568, 6089, 304, 278, 1404,
                                         29915, 29879, 5155, 29889, 3148, 1001, 29901, 29871};
    const char *chunk0 = "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                         "helpful, detailed, and polite answers to the user's questions. USER: ";
    T_CHECK(sp_tokenizer_encode(t, chunk0, strlen(chunk0), 1, &ids, &err) == 0, "%s", err.msg);
    T_CHECK(ids.n == sizeof system_ids / sizeof system_ids[0] && memcmp(ids.v, system_ids, sizeof system_ids) == 0,
            "system prompt chunk ids differ from §A2.9");
    if (ids.n != sizeof system_ids / sizeof system_ids[0]) print_ids("got", ids.v, ids.n);
    /* the chunk after <image>: BOS, "▁", "\n"(13), "What"(5618) */
    ids.n = 0;
    const char *chunk1 = "\nWhat is this? ASSISTANT:";
    T_CHECK(sp_tokenizer_encode(t, chunk1, strlen(chunk1), 1, &ids, &err) == 0, "%s", err.msg);
    static const int32_t c1[] = {1, 29871, 13, 5618};
    T_CHECK(ids.n > 4 && memcmp(ids.v, c1, sizeof c1) == 0, "chunk after <image> starts wrong");
    static const int32_t assistant[] = {319, 1799, 9047, 13566, 29901};
    T_CHECK(ids.n >= 5 && memcmp(ids.v + ids.n - 5, assistant, sizeof assistant) == 0, "ASSISTANT: ids differ");
    /* after </s>, no dummy prefix: "USER:" = 11889 29901 */
    ids.n = 0;
    const char *two = "ASSISTANT: 2</s>USER: x";
    T_CHECK(sp_tokenizer_encode(t, two, strlen(two), 0, &ids, &err) == 0, "%s", err.msg);
    static const int32_t two_ids[] = {319, 1799, 9047, 13566, 29901, 29871, 29906, 2, 11889, 29901};
    T_CHECK(ids.n >= 10 && memcmp(ids.v, two_ids, sizeof two_ids) == 0, "'</s>USER:' ids differ from §A2.6/§A2.9");
    if (!(ids.n >= 10 && memcmp(ids.v, two_ids, sizeof two_ids) == 0)) print_ids("got", ids.v, ids.n);
    /* the plain caption ends with "\n" = 13 */
    ids.n = 0;
    const char *cap = "select luxury furniture 3 - inch gel memory foam mattress topper\n";
    T_CHECK(sp_tokenizer_encode(t, cap, strlen(cap), 0, &ids, &err) == 0, "%s", err.msg);
    T_CHECK(ids.n > 3 && ids.v[0] == 1831 && ids.v[1] == 21684 && ids.v[2] == 2857 && ids.v[ids.n - 1] == 13 &&
                ids.v[ids.n - 2] == 2496,
            "plain caption ids differ from §A2.3/§A2.9");
    T_EQ_INT(sp_tokenizer_vocab_size(t), 32000);
    ivec_free(&ids);
}

/* ---- corrupt and unsupported models ------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void check_rejects(const uint8_t *data, size_t n, const char *name, const char *must_contain) {
    asvr_error err = {{0}};
    sp_tokenizer *t = sp_tokenizer_load_bytes(data, n, name, &err);
    T_CHECK(t == NULL, "%s loaded but should be rejected", name);
    if (t) {
        sp_tokenizer_free(t);
        return;
    }
    T_STR_CONTAINS(err.msg, name);
    if (must_contain) T_STR_CONTAINS(err.msg, must_contain);
}

/* A tiny protobuf writer for hand-made models. */
typedef struct pbw {
    uint8_t b[4096];
    size_t n;
} pbw;
static void w_varint(pbw *w, uint64_t v) {
    do {
        uint8_t c = v & 0x7F;
        v >>= 7;
        w->b[w->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void w_bytes(pbw *w, int field, const void *s, size_t n) {
    w_varint(w, (uint64_t)field << 3 | 2);
    w_varint(w, n);
    memcpy(w->b + w->n, s, n);
    w->n += n;
}
static void w_uint(pbw *w, int field, uint64_t v) {
    w_varint(w, (uint64_t)field << 3);
    w_varint(w, v);
}
static void w_piece(pbw *w, const char *text, float score, int type) {
    pbw p = {.n = 0};
    w_bytes(&p, 1, text, strlen(text));
    w_varint(&p, 2 << 3 | 5);
    memcpy(p.b + p.n, &score, 4);
    p.n += 4;
    w_uint(&p, 3, (uint64_t)type);
    w_bytes(w, 1, p.b, p.n);
}
/* unk/bos/eos + "a", "b", "ab"; model_type, charsmap and an extra piece vary */
static void make_model(pbw *w, int model_type, const char *charsmap, const char *extra_piece, int extra_type,
                       int byte_fallback) {
    w->n = 0;
    w_piece(w, "<unk>", 0, SP_PIECE_UNKNOWN);
    w_piece(w, "<s>", 0, SP_PIECE_CONTROL);
    w_piece(w, "</s>", 0, SP_PIECE_CONTROL);
    w_piece(w, "\xE2\x96\x81", -1, SP_PIECE_NORMAL);
    w_piece(w, "a", -2, SP_PIECE_NORMAL);
    w_piece(w, "b", -3, SP_PIECE_NORMAL);
    w_piece(w, "ab", -4, SP_PIECE_NORMAL);
    if (extra_piece) w_piece(w, extra_piece, -5, extra_type);
    pbw ts = {.n = 0};
    w_uint(&ts, 3, (uint64_t)model_type);
    if (byte_fallback) w_uint(&ts, 35, 1);
    w_uint(&ts, 43, (uint64_t)-1); /* pad_id = -1, a 10-byte varint */
    w_bytes(w, 2, ts.b, ts.n);
    pbw ns = {.n = 0};
    w_bytes(&ns, 1, "identity", 8);
    if (charsmap) w_bytes(&ns, 2, charsmap, strlen(charsmap));
    w_uint(&ns, 4, 0);
    w_bytes(w, 3, ns.b, ns.n);
}

static void check_corrupt(const char *tiny_path) {
    asvr_error err = {{0}};
    uint8_t *data = NULL;
    size_t n = 0;
    T_CHECK(asvr_read_file(tiny_path, &data, &n, &err) == 0, "%s", err.msg);
    if (!data) return;

    /* a missing file */
    sp_tokenizer *t = sp_tokenizer_load("no-such-dir/tokenizer.model", &err);
    T_CHECK(t == NULL, "missing file loaded");
    T_STR_CONTAINS(err.msg, "no-such-dir/tokenizer.model");

    /* every truncation of the file is rejected */
    int all_rejected = 1;
    for (size_t l = 0; l < n; l++) {
        memset(&err, 0, sizeof err);
        t = sp_tokenizer_load_bytes(data, l, "truncated.model", &err);
        if (t || !strstr(err.msg, "truncated.model")) {
            all_rejected = 0;
            fprintf(stderr, "truncation to %zu bytes: %s\n", l, t ? "loaded" : err.msg);
            sp_tokenizer_free(t);
            break;
        }
    }
    T_CHECK(all_rejected, "a truncated model was accepted");
    check_rejects(data, n / 2, "half.model", "truncated");
    /* and through a file */
    {
        char path[] = "sp_truncated_XXXXXX";
        int fd = mkstemp(path);
        T_CHECK(fd >= 0, "mkstemp");
        if (fd >= 0) {
            T_CHECK(write(fd, data, n - 7) == (ssize_t)(n - 7), "write");
            close(fd);
            t = sp_tokenizer_load(path, &err);
            T_CHECK(t == NULL, "truncated file loaded");
            T_STR_CONTAINS(err.msg, path);
            printf("truncated model error: %s\n", err.msg);
            sp_tokenizer_free(t);
            unlink(path);
        }
    }

    /* random bytes */
    uint8_t *junk = malloc(n);
    for (int k = 0; k < 300; k++) {
        size_t l = 1 + rnd() % (k < 150 ? 64 : n);
        for (size_t i = 0; i < l; i++) junk[i] = (uint8_t)rnd();
        check_rejects(junk, l, "random.model", NULL);
    }
    /* random byte flips: may load (a changed score is still a model) but must never crash */
    int loaded = 0;
    for (int k = 0; k < 2000; k++) {
        memcpy(junk, data, n);
        int flips = 1 + (int)(rnd() % 4);
        for (int f = 0; f < flips; f++) junk[rnd() % n] = (uint8_t)rnd();
        t = sp_tokenizer_load_bytes(junk, n, "flipped.model", &err);
        if (t) {
            loaded++;
            ivec ids = {0};
            const char *s = "Hello  world\n東京 😀 <s> </s> x";
            T_CHECK(sp_tokenizer_encode(t, s, strlen(s), 1, &ids, &err) == 0, "%s", err.msg);
            size_t dn;
            char *d = sp_tokenizer_decode(t, ids.v, ids.n, 0, &dn, &err);
            free(d);
            ivec_free(&ids);
            sp_tokenizer_free(t);
        } else {
            T_STR_CONTAINS(err.msg, "flipped.model");
        }
    }
    printf("byte flips: %d of 2000 still load (ok), none crashed\n", loaded);
    free(junk);
    free(data);

    /* hand-made models: one valid, the rest unsupported or inconsistent */
    pbw w;
    make_model(&w, 2, NULL, NULL, 0, 0);
    t = sp_tokenizer_load_bytes(w.b, w.n, "hand.model", &err);
    T_CHECK(t != NULL, "%s", err.msg);
    if (t) {
        T_EQ_INT(sp_tokenizer_vocab_size(t), 7);
        T_EQ_INT(sp_tokenizer_pad_id(t), -1);
        ivec ids = {0};
        T_CHECK(sp_tokenizer_encode_sp(t, "ab", 2, 0, &ids, &err) == 0, "%s", err.msg);
        /* "▁ab": "▁" + "a" is not a piece, "ab" is */
        T_CHECK(ids.n == 2 && ids.v[0] == 3 && ids.v[1] == 6, "hand-made model encodes 'ab' wrong");
        ids.n = 0;
        T_CHECK(sp_tokenizer_encode_sp(t, "abc", 3, 1, &ids, &err) == 0, "%s", err.msg);
        T_CHECK(ids.n == 2 && ids.v[0] == 6 && ids.v[1] == 0, "unknown 'c' without byte fallback is not <unk>");
        ivec_free(&ids);
        sp_tokenizer_free(t);
    }
    make_model(&w, 1, NULL, NULL, 0, 0);
    check_rejects(w.b, w.n, "unigram.model", "only BPE");
    make_model(&w, 2, "\x01\x02", NULL, 0, 0);
    check_rejects(w.b, w.n, "nfkc.model", "identity");
    make_model(&w, 2, NULL, "ab", SP_PIECE_NORMAL, 0);
    check_rejects(w.b, w.n, "dup.model", "duplicates");
    make_model(&w, 2, NULL, "<0x4G>", SP_PIECE_BYTE, 0);
    check_rejects(w.b, w.n, "badbyte.model", "<0xNN>");
    make_model(&w, 2, NULL, "<0x41>", SP_PIECE_BYTE, 1);
    check_rejects(w.b, w.n, "nobytes.model", "byte_fallback");
    make_model(&w, 2, NULL, "<unk2>", SP_PIECE_UNKNOWN, 0);
    check_rejects(w.b, w.n, "twounk.model", "UNKNOWN");
    make_model(&w, 2, NULL, "\xC0\x80", SP_PIECE_NORMAL, 0);
    check_rejects(w.b, w.n, "badutf8.model", "UTF-8");
    make_model(&w, 2, NULL, "x", 9, 0);
    check_rejects(w.b, w.n, "badtype.model", "type");
}

/* ---- round trips and cost ------------------------------------------------------------------------ */

static const char *const MIX[] = {"the", "image", "shows", "a", "red", "bus", "東京", "😀", "café", "42", " ", "  ",
                                  "\n", "\t", ",", ".", "naïve", "Привет", "x²", "ASSISTANT:", "\xE2\x82\xAC", "ø"};

static char *make_text(size_t n, uint64_t seed, size_t *out_n) {
    rng_state = seed;
    char *s = malloc(n + 32);
    size_t k = 0;
    while (k < n) {
        const char *w = MIX[rnd() % (sizeof MIX / sizeof MIX[0])];
        size_t l = strlen(w);
        memcpy(s + k, w, l);
        k += l;
        if (rnd() % 3) s[k++] = ' ';
    }
    s[k] = '\0';
    *out_n = k;
    return s;
}

static void check_round_trip(sp_tokenizer *t, const char *name) {
    asvr_error err = {{0}};
    int ok = 1;
    for (int k = 0; k < 200 && ok; k++) {
        size_t n;
        char *s = make_text(1 + rnd() % 200, 1000 + (uint64_t)k, &n);
        ivec ids = {0};
        T_CHECK(sp_tokenizer_encode(t, s, n, 0, &ids, &err) == 0, "%s", err.msg);
        size_t dn;
        char *d = sp_tokenizer_decode(t, ids.v, ids.n, 0, &dn, &err);
        ok = d && dn == n && memcmp(d, s, n) == 0;
        T_CHECK(ok, "%s: decode(encode(text)) != text for '%s' -> '%s'", name, s, d ? d : "");
        free(d);
        ivec_free(&ids);
        free(s);
    }
}

/* Invalid UTF-8 is read as U+FFFD per bad byte (SentencePiece's normalizer). */
static void check_invalid_utf8(sp_tokenizer *t) {
    asvr_error err = {{0}};
    ivec a = {0}, b = {0};
    const char bad[] = "caf\xC3 \xFF\xFEx \xE6\x9D end\xF0\x9F";
    const char fixed[] = "caf\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBDx \xEF\xBF\xBD\xEF\xBF\xBD end\xEF\xBF\xBD\xEF\xBF\xBD";
    T_CHECK(sp_tokenizer_encode(t, bad, sizeof bad - 1, 1, &a, &err) == 0, "%s", err.msg);
    T_CHECK(sp_tokenizer_encode(t, fixed, sizeof fixed - 1, 1, &b, &err) == 0, "%s", err.msg);
    T_CHECK(a.n == b.n && memcmp(a.v, b.v, a.n * sizeof(int32_t)) == 0, "invalid UTF-8 not read as U+FFFD");
    int32_t out_of_range[] = {5, 1 << 30};
    size_t dn;
    char *d = sp_tokenizer_decode(t, out_of_range, 2, 0, &dn, &err);
    T_CHECK(d == NULL, "decode accepted an id outside the vocabulary");
    T_STR_CONTAINS(err.msg, "outside the vocabulary");
    free(d);
    ivec_free(&a);
    ivec_free(&b);
}

static double time_encode(sp_tokenizer *t, const char *s, size_t n, size_t *n_ids) {
    asvr_error err = {{0}};
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        ivec ids = {0};
        double t0 = now_s();
        int rc = sp_tokenizer_encode(t, s, n, 1, &ids, &err);
        double dt = now_s() - t0;
        T_CHECK(rc == 0, "%s", err.msg);
        if (dt < best) best = dt;
        *n_ids = ids.n;
        ivec_free(&ids);
    }
    return best;
}

static void check_cost(sp_tokenizer *t, const char *name) {
    size_t n_small, n_big, ids_small, ids_big;
    char *small = make_text(100 * 1000, 42, &n_small);
    char *big = make_text(1000 * 1000, 42, &n_big);
    double ts = time_encode(t, small, n_small, &ids_small);
    double tb = time_encode(t, big, n_big, &ids_big);
    printf("%s: encode %zu bytes in %.4f s (%zu ids), %zu bytes in %.4f s (%zu ids), ratio %.1f\n", name, n_small, ts,
           ids_small, n_big, tb, ids_big, tb / (ts > 0 ? ts : 1e-9));
    /* 10x the text: ~10x the time for n log n; a per-merge rescan would be ~100x */
    T_CHECK(tb < 30.0 * ts + 0.05, "%s: 1 MB took %.3f s vs %.3f s for 100 KB: not ~linear", name, tb, ts);
    T_CHECK(tb < 5.0, "%s: 1 MB took %.3f s", name, tb);
    free(small);
    free(big);
    /* one long run of one character and of spaces: the worst case for tie-breaking */
    size_t n = 1000 * 1000;
    char *same = malloc(n + 1);
    memset(same, 'a', n);
    size_t nid;
    double ta = time_encode(t, same, n, &nid);
    memset(same, ' ', n);
    double tsp = time_encode(t, same, n, &nid);
    printf("%s: 1 MB of 'a' in %.4f s, 1 MB of spaces in %.4f s\n", name, ta, tsp);
    T_CHECK(ta < 5.0 && tsp < 5.0, "%s: repeated-character input too slow", name);
    free(same);
}

/* ---- tokenizer_config.json beside the model ----------------------------------------------------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    T_CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Loads dir/tokenizer.model with `config` as its tokenizer_config.json: the legacy flag it gives
 * (want_legacy), or an error naming the config file and containing must_contain. */
static void check_config(const char *dir, const char *config, int want_legacy, const char *must_contain) {
    char model[1024], cfg[1024];
    snprintf(model, sizeof model, "%s/tokenizer.model", dir);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    write_text(cfg, config);
    asvr_error err = {{0}};
    sp_tokenizer *t = sp_tokenizer_load(model, &err);
    if (must_contain) {
        T_CHECK(t == NULL, "config %s was accepted", config);
        if (!t) {
            T_STR_CONTAINS(err.msg, cfg);
            T_STR_CONTAINS(err.msg, must_contain);
        }
    } else {
        T_CHECK(t != NULL, "config %s: %s", config, err.msg);
        if (t) {
            T_EQ_INT(sp_tokenizer_legacy(t), want_legacy);
            T_CHECK(sp_tokenizer_config_path(t) && strcmp(sp_tokenizer_config_path(t), cfg) == 0, "config path recorded");
        }
    }
    sp_tokenizer_free(t);
}

static void check_tokenizer_configs(void) {
    /* the HF-style folder of the fixtures: Mistral's config says legacy: true */
    asvr_error err = {{0}};
    sp_tokenizer *t = sp_tokenizer_load(ASVR_GOLDEN "/mistral/tiny_mistral/tokenizer.model", &err);
    T_CHECK(t != NULL, "%s", err.msg);
    if (t) {
        T_EQ_INT(sp_tokenizer_legacy(t), 1);
        T_CHECK(sp_tokenizer_config_path(t) != NULL, "the folder's tokenizer_config.json was read");
        sp_tokenizer_free(t);
    }
    check_golden_ex(ASVR_GOLDEN "/mistral/tiny_mistral/tokenizer.model", ASVR_GOLDEN "/mistral/sp_tiny_mistral_legacy.json", -1);
    /* a bare model file: non-legacy, no config */
    t = sp_tokenizer_load(ASVR_GOLDEN "/mistral/tiny_mistral.model", &err);
    T_CHECK(t && !sp_tokenizer_legacy(t) && !sp_tokenizer_config_path(t), "a model without a config beside it is non-legacy");
    sp_tokenizer_free(t);

    char dir[] = "/tmp/asvr_test_spcfg_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char model[1024];
    snprintf(model, sizeof model, "%s/tokenizer.model", dir);
    uint8_t *data = NULL;
    size_t n = 0;
    T_CHECK(asvr_read_file(ASVR_GOLDEN "/mistral/tiny_mistral.model", &data, &n, &err) == 0, "%s", err.msg);
    FILE *f = fopen(model, "wb");
    T_CHECK(f && fwrite(data, 1, n, f) == n, "copy of the model");
    if (f) fclose(f);
    free(data);
    check_config(dir, "{}", 1, NULL); /* HF's default when the key is absent */
    check_config(dir, "{\"legacy\": false, \"add_bos_token\": true, \"add_eos_token\": false}", 0, NULL);
    check_config(dir, "{\"legacy\": null, \"tokenizer_class\": \"LlamaTokenizerFast\", \"bos_token\": \"<s>\", "
                      "\"eos_token\": {\"content\": \"</s>\", \"lstrip\": false}, \"pad_token\": null}", 1, NULL);
    check_config(dir, "{\"legacy\": \"yes\"}", 0, "\"legacy\" must be true or false");
    check_config(dir, "{\"add_eos_token\": true}", 0, "add_eos_token");
    check_config(dir, "{\"add_bos_token\": false}", 0, "add_bos_token");
    check_config(dir, "{\"add_prefix_space\": false}", 0, "add_prefix_space");
    check_config(dir, "{\"tokenizer_class\": \"GemmaTokenizer\"}", 0, "GemmaTokenizer");
    check_config(dir, "{\"bos_token\": \"<|begin|>\"}", 0, "bos_token");
    check_config(dir, "{\"unk_token\": {\"content\": \"<unk>\", \"lstrip\": true}}", 0, "lstrip");
    check_config(dir, "{\"added_tokens_decoder\": {\"2\": {\"content\": \"</s>\", \"special\": true}, "
                      "\"800\": {\"content\": \"<pad>\", \"special\": true}}}", 0, "added_tokens_decoder[800] ('<pad>')");
    check_config(dir, "{\"added_tokens_decoder\": {\"1\": {\"content\": \"</s>\"}}}", 0, "added_tokens_decoder[1]");
    check_config(dir, "{\"legacy\": tru", 0, "JSON error");
    check_config(dir, "[1, 2]", 0, "not a JSON object");
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
    unlink(model);
    rmdir(dir);
}

int main(void) {
    char model[1024], json[1024];
    const char *tiny[] = {"tiny_bpe", "tiny_bpe_nobf", "tiny_bpe_rmws", "tiny_bpe_xws", "tiny_bpe_unused"};
    for (int k = 0; k < 5; k++) {
        snprintf(model, sizeof model, "%s/%s.model", SP_GOLDEN, tiny[k]);
        snprintf(json, sizeof json, "%s/%s.json", SP_GOLDEN, tiny[k]);
        check_golden(model, json);
    }
    snprintf(model, sizeof model, "%s/tiny_bpe.model", SP_GOLDEN);
    check_corrupt(model);
    /* legacy and non-legacy on a model with byte fallback and user-defined pieces like "[INST]" */
    check_golden_ex(ASVR_GOLDEN "/mistral/tiny_mistral.model", ASVR_GOLDEN "/mistral/sp_tiny_mistral_nonlegacy.json", 0);
    check_golden_ex(ASVR_GOLDEN "/mistral/tiny_mistral.model", ASVR_GOLDEN "/mistral/sp_tiny_mistral_legacy.json", 1);
    check_tokenizer_configs();

    asvr_error err = {{0}};
    sp_tokenizer *t = sp_tokenizer_load(model, &err);
    T_CHECK(t != NULL, "%s", err.msg);
    if (t) {
        char hex[17];
        sp_tokenizer_fingerprint_hex(t, hex);
        printf("tiny_bpe.model: %d pieces, fingerprint %s\n", sp_tokenizer_vocab_size(t), hex);
        check_round_trip(t, "tiny_bpe");
        check_invalid_utf8(t);
        check_cost(t, "tiny_bpe");
        sp_tokenizer_free(t);
    }

    const char *llama = ASVR_SHARED_DATA "/llama2-tokenizer.model";
    if (!asvr_path_exists(llama)) {
        printf("%s is absent\n", llama);
        t_skip("the Llama-2 cases need the Llama-2 tokenizer (see shared/data/README.md)");
    } else {
        snprintf(json, sizeof json, "%s/llama2.json", SP_GOLDEN);
        check_golden(llama, json);
        check_golden_ex(llama, ASVR_GOLDEN "/mistral/sp_llama2_legacy.json", 1);
        t = sp_tokenizer_load(llama, &err);
        T_CHECK(t != NULL, "%s", err.msg);
        if (t) {
            char hex[17];
            sp_tokenizer_fingerprint_hex(t, hex);
            printf("llama2-tokenizer.model: %d pieces, fingerprint %s\n", sp_tokenizer_vocab_size(t), hex);
            check_llama_spec_vectors(t);
            check_round_trip(t, "llama2");
            check_invalid_utf8(t);
            check_cost(t, "llama2");
            sp_tokenizer_free(t);
        }
    }
    return t_done();
}
