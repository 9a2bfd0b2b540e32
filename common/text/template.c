#include "text/template.h"

#include "base/hash.h"
#include "base/sbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small containers ------------------------------------------------------------------------- */

void template_result_free(template_result *r) {
    ivec_free(&r->ids);
    ivec_free(&r->labels);
}


/* ---- templates -------------------------------------------------------------------------------- */

static const template_spec TEMPLATES[] = {
    {"plain", TEMPLATE_PLAIN, "", {"", ""}, "\n", NULL, 0},
    {"vicuna_v1", TEMPLATE_TWO,
     "A chat between a curious user and an artificial intelligence assistant. "
     "The assistant gives helpful, detailed, and polite answers to the user's questions.",
     {"USER", "ASSISTANT"}, " ", "</s>", 0},
};
#define N_TEMPLATES (sizeof TEMPLATES / sizeof TEMPLATES[0])

const template_spec *template_find(const char *name) {
    for (size_t i = 0; i < N_TEMPLATES; i++)
        if (strcmp(TEMPLATES[i].name, name) == 0) return &TEMPLATES[i];
    return NULL;
}

const char *template_names(void) { return "plain, vicuna_v1"; }

void template_fingerprint(const template_spec *t, char out[17]) {
    asvr_hasher *h = asvr_hasher_new(0);
    const char *fields[] = {t->name, t->system, t->roles[0], t->roles[1], t->sep, t->sep2 ? t->sep2 : ""};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        asvr_hasher_update(h, fields[i], strlen(fields[i]) + 1); /* the NUL separates fields */
    int32_t nums[2] = {(int32_t)t->style, t->legacy};
    asvr_hasher_update(h, nums, sizeof nums);
    asvr_hash_hex(asvr_hasher_digest(h), out);
    asvr_hasher_free(h);
}

/* ---- Python's str.strip() --------------------------------------------------------------------- */

/* Decodes one UTF-8 code point at s[i] (len bytes total); returns its length, cp = -1 if invalid. */
static int utf8_at(const unsigned char *s, size_t len, size_t i, long *cp) {
    unsigned c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + (size_t)n > len) {
        *cp = -1;
        return 1;
    }
    long v = n == 1 ? (long)c : (long)(c & (0x7F >> n));
    for (int k = 1; k < n; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (s[i + k] & 0x3F);
    }
    *cp = v;
    return n;
}

/* str.isspace() for one code point. */
static int py_isspace(long c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

void py_strip(const char *str, size_t len, size_t *begin, size_t *end) {
    const unsigned char *s = (const unsigned char *)str;
    size_t b = 0;
    while (b < len) {
        long cp;
        int n = utf8_at(s, len, b, &cp);
        if (!py_isspace(cp)) break;
        b += (size_t)n;
    }
    size_t e = len;
    while (e > b) {
        size_t start = e - 1; /* walk back to the start of the last code point */
        while (start > b && (s[start] & 0xC0) == 0x80 && e - start < 4) start--;
        long cp;
        int n = utf8_at(s, len, start, &cp);
        if (start + (size_t)n != e || !py_isspace(cp)) break;
        e = start;
    }
    *begin = b;
    *end = e;
}

/* Turn i's bytes: its length, or up to its NUL when none is given. */
static size_t turn_len(const chat_turn *t, const size_t *lens, int i) { return lens ? lens[i] : strlen(t[i].value); }

/* Where needle first occurs in s[0, n), or NULL. */
static const char *find(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    return k <= n ? memmem(s, n, needle, k) : NULL;
}

/* preprocess_multimodal on one turn: remove every "<image>", strip, prepend "<image>\n", strip. */
static void normalise_image_turn(sbuf *dst, const char *v, size_t n) {
    sbuf without = {0};
    sb_add(&without, "", 0);
    const char *p = v, *end = v + n;
    for (const char *q; (q = find(p, (size_t)(end - p), "<image>")) != NULL; p = q + 7) sb_add(&without, p, (size_t)(q - p));
    sb_add(&without, p, (size_t)(end - p));
    size_t b, e;
    py_strip(without.s, without.n, &b, &e);
    sbuf out = {0};
    sb_str(&out, "<image>\n");
    sb_add(&out, without.s + b, e - b);
    free(without.s);
    py_strip(out.s, out.n, &b, &e); /* "<image>\n" + "" strips the newline */
    sb_add(dst, out.s + b, e - b);
    free(out.s);
}

/* ---- prompt ----------------------------------------------------------------------------------- */

char *template_prompt_n(const template_spec *t, const chat_turn *turns, const size_t *lens, int n_turns, int has_image,
                        int add_generation_prompt, size_t *len) {
    sbuf b = {0};
    sb_add(&b, "", 0);
    if (t->style == TEMPLATE_PLAIN) {
        sb_str(&b, "<image>");
        if (n_turns >= 2 && !add_generation_prompt) {
            sb_add(&b, turns[1].value, turn_len(turns, lens, 1));
            sb_str(&b, t->sep);
        }
        if (len) *len = b.n;
        return b.s;
    }
    sb_str(&b, t->system);
    sb_str(&b, t->sep);
    sbuf v = {0};
    for (int i = 0; i < n_turns; i++) {
        size_t n = turn_len(turns, lens, i);
        v.n = 0;
        sb_add(&v, "", 0);
        if (has_image && find(turns[i].value, n, "<image>")) normalise_image_turn(&v, turns[i].value, n);
        else sb_add(&v, turns[i].value, n);
        sb_str(&b, t->roles[i % 2]);
        if (v.n) {
            sb_str(&b, ": ");
            sb_add(&b, v.s, v.n);
            sb_str(&b, (i % 2) ? t->sep2 : t->sep);
        } else {
            sb_str(&b, ":");
        }
    }
    free(v.s);
    if (add_generation_prompt) {
        sb_str(&b, t->roles[n_turns % 2]);
        sb_str(&b, ":");
    }
    if (len) *len = b.n;
    return b.s;
}

char *template_prompt(const template_spec *t, const chat_turn *turns, int n_turns, int has_image,
                      int add_generation_prompt) {
    return template_prompt_n(t, turns, NULL, n_turns, has_image, add_generation_prompt, NULL);
}

/* ---- tokenisation ----------------------------------------------------------------------------- */

/* tokenizer_image_token: each chunk around "<image>" tokenised on its own with BOS; the first BOS
 * kept, the others dropped, one IMAGE_TOKEN_INDEX between chunks. */
static int tokenize_image_text(const text_encoder *enc, const char *s, size_t len, ivec *out, asvr_error *err) {
    ivec chunk = {0};
    size_t pos = 0;
    int first = 1, off = 0;
    for (;;) {
        const char *hit = NULL;
        for (size_t i = pos; i + 7 <= len; i++)
            if (memcmp(s + i, "<image>", 7) == 0) {
                hit = s + i;
                break;
            }
        size_t end = hit ? (size_t)(hit - s) : len;
        chunk.n = 0;
        if (enc->encode(enc->ctx, s + pos, end - pos, 1, &chunk, err) < 0) {
            ivec_free(&chunk);
            return -1;
        }
        if (first) {
            off = (chunk.n > 0 && chunk.v[0] == enc->bos_id) ? 1 : 0;
            if (off) ivec_push(out, enc->bos_id);
            first = 0;
        }
        if (chunk.n > (size_t)off) ivec_append(out, chunk.v + off, chunk.n - (size_t)off);
        if (!hit) break;
        ivec_push(out, IMAGE_TOKEN_INDEX);
        pos = end + 7;
    }
    ivec_free(&chunk);
    return 0;
}

int template_tokenize_image(const text_encoder *enc, const char *text, size_t len, ivec *out, asvr_error *err) {
    return tokenize_image_text(enc, text, len, out, err);
}

/* T(s): tokenizer_image_token(s) with an image, tokenizer(s).input_ids without. */
static int tokenize_T(const text_encoder *enc, int has_image, const char *s, size_t len, ivec *out, asvr_error *err) {
    out->n = 0;
    if (has_image) return tokenize_image_text(enc, s, len, out, err);
    return enc->encode(enc->ctx, s, len, 1, out, err);
}

static void mask_range(ivec *labels, long a, long b) {
    if (a < 0) a = 0;
    if (b > (long)labels->n) b = (long)labels->n;
    for (long i = a; i < b; i++) labels->v[i] = IGNORE_INDEX;
}

static int apply_plain(const template_spec *t, const text_encoder *enc, const chat_turn *turns, const size_t *lens,
                       int n_turns, int has_image, template_result *out, asvr_error *err) {
    if (n_turns != 2) return asvr_err_set(err, "the plain template needs exactly 2 turns, got %d", n_turns);
    if (!has_image || !find(turns[0].value, turn_len(turns, lens, 0), "<image>"))
        return asvr_err_set(err, "the plain template needs an image and <image> in the first turn");
    size_t plen;
    char *p = template_prompt_n(t, turns, lens, n_turns, has_image, 0, &plen);
    int rc = tokenize_image_text(enc, p, plen, &out->ids, err);
    free(p);
    if (rc < 0) return -1;
    ivec head = {0};
    if (tokenize_image_text(enc, "<image>", 7, &head, err) < 0) return -1;
    ivec_append(&out->labels, out->ids.v, out->ids.n);
    mask_range(&out->labels, 0, (long)head.n);
    ivec_free(&head);
    return 0;
}

static int apply_two(const template_spec *t, const text_encoder *enc, const chat_turn *turns, const size_t *lens,
                     int n_turns, int has_image, int max_len, template_result *out, asvr_error *err) {
    if (n_turns > 0 && !turns[0].from_human) turns++, n_turns--, lens = lens ? lens + 1 : NULL; /* a leading gpt turn is dropped */
    for (int j = 0; j < n_turns; j++)
        if (turns[j].from_human != (j % 2 == 0))
            return asvr_err_set(err, "turn %d is from %s; turns must alternate human, gpt", j,
                                turns[j].from_human ? "human" : "gpt");
    size_t plen;
    char *p = template_prompt_n(t, turns, lens, n_turns, has_image, 0, &plen);
    const char *p_end = p + plen;
    int rc = has_image ? tokenize_image_text(enc, p, plen, &out->ids, err) : enc->encode(enc->ctx, p, plen, 1, &out->ids, err);
    if (rc < 0) {
        free(p);
        return -1;
    }
    if (!has_image && max_len > 0 && out->ids.n > (size_t)max_len) {
        out->ids.n = (size_t)max_len;
        out->truncated = 1;
    }
    ivec_append(&out->labels, out->ids.v, out->ids.n);
    long total = 0;
    for (size_t i = 0; i < out->ids.n; i++) total += out->ids.v[i] != enc->pad_id;

    /* The reference's round arithmetic, literally. */
    char sep[64];
    snprintf(sep, sizeof sep, "%s%s: ", t->sep, t->roles[1]);
    size_t seplen = strlen(sep), sep2len = strlen(t->sep2);
    long cur = 1;
    mask_range(&out->labels, 0, 1);
    ivec tmp = {0};
    const char *r = p;
    for (int i = 0;; i++) {
        const char *r_end = find(r, (size_t)(p_end - r), t->sep2);
        size_t rlen = r_end ? (size_t)(r_end - r) : (size_t)(p_end - r);
        if (rlen == 0) break;
        /* parts = r.split(sep): exactly one occurrence of sep within the round. */
        const char *s1 = NULL;
        int count = 0;
        for (size_t k = 0; k + seplen <= rlen; k++)
            if (memcmp(r + k, sep, seplen) == 0) {
                if (!count) s1 = r + k;
                count++;
                k += seplen - 1;
            }
        if (count != 1) break;
        if (tokenize_T(enc, has_image, r, rlen, &tmp, err) < 0) goto fail;
        long round_len = (long)tmp.n;
        if (tokenize_T(enc, has_image, r, (size_t)(s1 - r) + seplen, &tmp, err) < 0) goto fail;
        long inst_len = (long)tmp.n - 2;
        if (i > 0 && !t->legacy) round_len -= 1, inst_len -= 1;
        mask_range(&out->labels, cur, cur + inst_len);
        cur += round_len;
        if (!r_end) break;
        r = r_end + sep2len;
    }
    mask_range(&out->labels, cur, (long)out->labels.n);
    if (cur < max_len && cur != total) {
        mask_range(&out->labels, 0, (long)out->labels.n);
        out->mismatch = 1;
    }
    ivec_free(&tmp);
    free(p);
    return 0;
fail:
    ivec_free(&tmp);
    free(p);
    return -1;
}

int template_apply(const template_spec *t, const text_encoder *enc, const chat_turn *turns, int n_turns,
                   int has_image, int max_len, template_result *out, asvr_error *err) {
    return template_apply_n(t, enc, turns, NULL, n_turns, has_image, max_len, out, err);
}

int template_apply_n(const template_spec *t, const text_encoder *enc, const chat_turn *turns, const size_t *lens,
                     int n_turns, int has_image, int max_len, template_result *out, asvr_error *err) {
    memset(out, 0, sizeof *out);
    int rc = t->style == TEMPLATE_PLAIN ? apply_plain(t, enc, turns, lens, n_turns, has_image, out, err)
                                        : apply_two(t, enc, turns, lens, n_turns, has_image, max_len, out, err);
    if (rc < 0) {
        template_result_free(out);
        return -1;
    }
    for (size_t i = 0; i < out->ids.n; i++) out->n_images += out->ids.v[i] == IMAGE_TOKEN_INDEX;
    if (has_image && out->n_images != 1) {
        asvr_err_set(err, "the sample has %d <image> placeholders; one image needs exactly one", out->n_images);
        template_result_free(out);
        return -1;
    }
    return 0;
}
