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

/* LLaVA's conversation.py as the reference spec quotes it (conv_vicuna_v1, conv_llava_plain,
 * conv_mistral_instruct, conv_llama_2, conv_llava_llama_2). */
static const template_spec TEMPLATES[] = {
    {"plain", TEMPLATE_PLAIN, "", {"", ""}, "\n", NULL},
    {"vicuna_v1", TEMPLATE_TWO,
     "A chat between a curious user and an artificial intelligence assistant. "
     "The assistant gives helpful, detailed, and polite answers to the user's questions.",
     {"USER", "ASSISTANT"}, " ", "</s>"},
    {"mistral_instruct", TEMPLATE_LLAMA_2, "", {"USER", "ASSISTANT"}, "", "</s>"},
    {"llama_2", TEMPLATE_LLAMA_2,
     "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
     "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
     "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
     "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
     "something not correct. If you don't know the answer to a question, please don't share false information.",
     {"USER", "ASSISTANT"}, "<s>", "</s>"},
    {"llava_llama_2", TEMPLATE_LLAMA_2,
     "You are a helpful language and vision assistant. You are able to understand the visual content that the "
     "user provides, and assist the user with a variety of tasks using natural language.",
     {"USER", "ASSISTANT"}, "<s>", "</s>"},
};
#define N_TEMPLATES (sizeof TEMPLATES / sizeof TEMPLATES[0])

const template_spec *template_find(const char *name) {
    for (size_t i = 0; i < N_TEMPLATES; i++)
        if (strcmp(TEMPLATES[i].name, name) == 0) return &TEMPLATES[i];
    return NULL;
}

const char *template_names(void) { return "plain, vicuna_v1, mistral_instruct, llama_2, llava_llama_2"; }

void template_fingerprint_ex(const template_spec *t, int legacy, template_masking masking, char out[17]) {
    asvr_hasher *h = asvr_hasher_new(0);
    const char *fields[] = {t->name, t->system, t->roles[0], t->roles[1], t->sep, t->sep2 ? t->sep2 : ""};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        asvr_hasher_update(h, fields[i], strlen(fields[i]) + 1); /* the NUL separates fields */
    int32_t nums[2] = {(int32_t)t->style, legacy != 0};
    asvr_hasher_update(h, nums, sizeof nums);
    if (masking != MASKING_REFERENCE) { /* stores made with the reference masking keep their fingerprint */
        int32_t m = (int32_t)masking;
        asvr_hasher_update(h, &m, sizeof m);
    }
    asvr_hash_hex(asvr_hasher_digest(h), out);
    asvr_hasher_free(h);
}

void template_fingerprint_rules(const template_spec *t, int legacy, template_masking masking, uint32_t rules, char out[17]) {
    if (rules == 0) {
        template_fingerprint_ex(t, legacy, masking, out);
        return;
    }
    asvr_hasher *h = asvr_hasher_new(0);
    char base[17];
    template_fingerprint_ex(t, legacy, masking, base);
    asvr_hasher_update(h, base, 16);
    asvr_hasher_update(h, &rules, sizeof rules);
    asvr_hash_hex(asvr_hasher_digest(h), out);
    asvr_hasher_free(h);
}

void template_fingerprint(const template_spec *t, char out[17]) { template_fingerprint_ex(t, 0, MASKING_REFERENCE, out); }

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

/* Turn i as the prompt holds it (normalised when the sample has an image and the turn "<image>"),
 * into v (emptied first; v->n its length, a NUL inside kept). */
static void turn_text(sbuf *v, const chat_turn *turns, const size_t *lens, int i, int has_image) {
    size_t n = turn_len(turns, lens, i);
    v->n = 0;
    sb_add(v, "", 0);
    if (has_image && find(turns[i].value, n, "<image>")) normalise_image_turn(v, turns[i].value, n);
    else sb_add(v, turns[i].value, n);
}

/* ---- prompt ----------------------------------------------------------------------------------- */

/* Byte offsets of one assistant answer in the prompt: from the text after "ASSISTANT:" / "[/INST]"
 * (the space before the answer) to the end of its sep2 ("</s>"). */
typedef struct answer_span {
    size_t start, end;
} answer_span;

typedef struct span_list {
    answer_span *v;
    size_t n, cap;
} span_list;

static void span_push(span_list *l, size_t start, size_t end) {
    if (!l) return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = asvr_realloc(l->v, l->cap * sizeof *l->v, "answer spans");
    }
    l->v[l->n++] = (answer_span){start, end};
}

/* conv.get_prompt() for the TWO style (the generation prompt ends with "ASSISTANT:"). */
static void prompt_two(const template_spec *t, const chat_turn *turns, const size_t *lens, int n_turns, int has_image,
                       int add_gen, sbuf *b, span_list *spans) {
    sb_str(b, t->system);
    sb_str(b, t->sep);
    sbuf v = {0};
    for (int i = 0; i < n_turns; i++) {
        turn_text(&v, turns, lens, i, has_image);
        sb_str(b, t->roles[i % 2]);
        if (v.n) {
            sb_str(b, ":");
            size_t start = b->n;
            sb_str(b, " ");
            sb_add(b, v.s, v.n);
            sb_str(b, (i % 2) ? t->sep2 : t->sep);
            if (i % 2) span_push(spans, start, b->n);
        } else {
            sb_str(b, ":");
        }
    }
    free(v.s);
    if (add_gen) {
        sb_str(b, t->roles[n_turns % 2]);
        sb_str(b, ":");
    }
}

/* conv.get_prompt() for the LLAMA_2 style: "[INST] q [/INST]" per human turn (the first one with the
 * system prompt in a <<SYS>> block when there is one), " a </s>" per answer, sep before every
 * [INST], empty messages adding nothing, then Python's ret.lstrip(sep) (a character set). The
 * generation prompt ends with "[/INST]". */
static void prompt_llama_2(const template_spec *t, const chat_turn *turns, const size_t *lens, int n_turns,
                           int has_image, sbuf *b, span_list *spans) {
    size_t base = b->n;
    sbuf v = {0};
    for (int i = 0; i < n_turns; i++) {
        turn_text(&v, turns, lens, i, has_image);
        if (v.n) {
            if (i % 2 == 0) {
                sb_str(b, t->sep);
                sb_str(b, "[INST] ");
                if (i == 0 && t->system[0]) {
                    sb_str(b, "<<SYS>>\n");
                    sb_str(b, t->system);
                    sb_str(b, "\n<</SYS>>\n\n");
                }
                sb_add(b, v.s, v.n);
                sb_str(b, " [/INST]");
            } else {
                size_t start = b->n;
                sb_str(b, " ");
                sb_add(b, v.s, v.n);
                sb_str(b, " ");
                sb_str(b, t->sep2);
                span_push(spans, start, b->n);
            }
        }
    }
    free(v.s);
    size_t k = base; /* lstrip(sep): a NUL is text, never one of sep's characters */
    while (k < b->n && t->sep[0] && b->s[k] && strchr(t->sep, b->s[k])) k++;
    if (k > base) {
        memmove(b->s + base, b->s + k, b->n - k + 1);
        b->n -= k - base;
        if (spans)
            for (size_t j = 0; j < spans->n; j++) spans->v[j].start -= k - base, spans->v[j].end -= k - base;
    }
}

/* The prompt (its length in *len: a NUL inside a turn is kept) and, when spans, the answers' spans. */
static char *build_prompt(const template_spec *t, const chat_turn *turns, const size_t *lens, int n_turns,
                          int has_image, int add_gen, span_list *spans, size_t *len) {
    sbuf b = {0};
    sb_add(&b, "", 0);
    if (t->style == TEMPLATE_PLAIN) {
        sb_str(&b, "<image>");
        if (n_turns >= 2 && !add_gen) {
            sb_add(&b, turns[1].value, turn_len(turns, lens, 1));
            sb_str(&b, t->sep);
        }
    } else if (t->style == TEMPLATE_TWO) {
        prompt_two(t, turns, lens, n_turns, has_image, add_gen, &b, spans);
    } else {
        prompt_llama_2(t, turns, lens, n_turns, has_image, &b, spans);
    }
    if (len) *len = b.n;
    return b.s;
}

char *template_prompt_n(const template_spec *t, const chat_turn *turns, const size_t *lens, int n_turns, int has_image,
                        int add_generation_prompt, size_t *len) {
    return build_prompt(t, turns, lens, n_turns, has_image, add_generation_prompt, NULL, len);
}

char *template_prompt(const template_spec *t, const chat_turn *turns, int n_turns, int has_image,
                      int add_generation_prompt) {
    return build_prompt(t, turns, NULL, n_turns, has_image, add_generation_prompt, NULL, NULL);
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
    char *p = build_prompt(t, turns, lens, n_turns, has_image, 0, NULL, &plen);
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

/* MASKING_CORRECTED: labels from the answers' positions. T(prompt[:offset]) must be a prefix of the
 * ids at every answer start and end; a sample where it is not is masked out (mismatch). */
static int corrected_labels(const text_encoder *enc, int has_image, const char *p, const span_list *spans,
                            template_result *out, asvr_error *err) {
    ivec tmp = {0};
    size_t n = out->ids.n, cur = 0;
    for (size_t j = 0; j < spans->n && !out->mismatch; j++) {
        size_t at[2] = {spans->v[j].start, spans->v[j].end}, k[2];
        for (int e = 0; e < 2; e++) {
            if (tokenize_T(enc, has_image, p, at[e], &tmp, err) < 0) {
                ivec_free(&tmp);
                return -1;
            }
            size_t m = tmp.n < n ? tmp.n : n;
            if (memcmp(tmp.v, out->ids.v, m * sizeof(int32_t)) != 0) out->mismatch = 1;
            k[e] = m;
        }
        mask_range(&out->labels, (long)cur, (long)k[0]);
        cur = k[1];
    }
    mask_range(&out->labels, (long)cur, (long)n);
    if (out->mismatch) mask_range(&out->labels, 0, (long)n);
    ivec_free(&tmp);
    return 0;
}

/* TWO and LLAMA_2 styles: preprocess_v1 / preprocess_llama_2. */
static int apply_rounds(const template_spec *t, const text_encoder *enc, const chat_turn *turns, const size_t *lens,
                        int n_turns, int has_image, int max_len, template_masking masking, template_result *out,
                        asvr_error *err) {
    if (n_turns > 0 && !turns[0].from_human) /* a leading gpt turn is dropped */
        turns++, n_turns--, lens = lens ? lens + 1 : NULL;
    for (int j = 0; j < n_turns; j++)
        if (turns[j].from_human != (j % 2 == 0))
            return asvr_err_set(err, "turn %d is from %s; turns must alternate human, gpt", j,
                                turns[j].from_human ? "human" : "gpt");
    if (t->style == TEMPLATE_LLAMA_2 && (n_turns == 0 || turn_len(turns, lens, 0) == 0))
        return asvr_err_set(err, "the %s template needs a first human turn that is not empty", t->name);
    span_list spans = {0};
    size_t plen;
    char *p = build_prompt(t, turns, lens, n_turns, has_image, 0, &spans, &plen);
    const char *p_end = p + plen;
    int rc = has_image ? tokenize_image_text(enc, p, plen, &out->ids, err) : enc->encode(enc->ctx, p, plen, 1, &out->ids, err);
    if (rc < 0) goto fail;
    if (!has_image && max_len > 0 && out->ids.n > (size_t)max_len) {
        out->ids.n = (size_t)max_len;
        out->truncated = 1;
    }
    ivec_append(&out->labels, out->ids.v, out->ids.n);
    if (masking == MASKING_CORRECTED) {
        rc = corrected_labels(enc, has_image, p, &spans, out, err);
        free(spans.v);
        free(p);
        return rc;
    }
    long total = 0;
    for (size_t i = 0; i < out->ids.n; i++) total += out->ids.v[i] != enc->pad_id;

    /* The reference's round arithmetic, literally. */
    char sep[64];
    if (t->style == TEMPLATE_TWO) snprintf(sep, sizeof sep, "%s%s: ", t->sep, t->roles[1]);
    else snprintf(sep, sizeof sep, "[/INST] ");
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
        if (tokenize_T(enc, has_image, r, rlen, &tmp, err) < 0) goto fail_tmp;
        long round_len = (long)tmp.n;
        if (tokenize_T(enc, has_image, r, (size_t)(s1 - r) + seplen, &tmp, err) < 0) goto fail_tmp;
        long inst_len = (long)tmp.n - 2;
        /* preprocess_v1 only; preprocess_llama_2 has no such correction */
        if (t->style == TEMPLATE_TWO && i > 0 && !enc->legacy) round_len -= 1, inst_len -= 1;
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
    free(spans.v);
    free(p);
    return 0;
fail_tmp:
    ivec_free(&tmp);
fail:
    free(spans.v);
    free(p);
    return -1;
}

int template_apply(const template_spec *t, const text_encoder *enc, const chat_turn *turns, int n_turns,
                   int has_image, int max_len, template_result *out, asvr_error *err) {
    return template_apply_n(t, enc, turns, NULL, n_turns, has_image, max_len, MASKING_REFERENCE, out, err);
}

int template_apply_ex(const template_spec *t, const text_encoder *enc, const chat_turn *turns, int n_turns,
                      int has_image, int max_len, template_masking masking, template_result *out, asvr_error *err) {
    return template_apply_n(t, enc, turns, NULL, n_turns, has_image, max_len, masking, out, err);
}

int template_apply_n(const template_spec *t, const text_encoder *enc, const chat_turn *turns, const size_t *lens,
                     int n_turns, int has_image, int max_len, template_masking masking, template_result *out,
                     asvr_error *err) {
    memset(out, 0, sizeof *out);
    if (n_turns == 0) /* the reference reads source[0] (an IndexError) or asserts two turns */
        return asvr_err_set(err, "\"conversations\" is empty; the reference cannot train such a sample");
    int rc = t->style == TEMPLATE_PLAIN
                 ? apply_plain(t, enc, turns, lens, n_turns, has_image, out, err)
                 : apply_rounds(t, enc, turns, lens, n_turns, has_image, max_len, masking, out, err);
    if (rc < 0) {
        template_result_free(out);
        return -1;
    }
    for (size_t i = 0; i < out->ids.n; i++) out->n_images += out->ids.v[i] == IMAGE_TOKEN_INDEX;
    if (has_image && out->n_images > 1) {
        asvr_err_set(err, "the sample has %d <image> placeholders; one image needs exactly one", out->n_images);
        template_result_free(out);
        return -1;
    }
    return 0;
}

/* The collator and the model's input preparation on one sample: ids and labels cut to max_len, then
 * (drop_pad) every position whose id is the pad id removed, ids and labels both, as
 * attention_mask = ids != pad_id and input_ids[attention_mask] do. */
size_t template_collate(template_result *r, int32_t pad_id, int max_len, int drop_pad) {
    if (max_len > 0 && r->ids.n > (size_t)max_len) {
        r->ids.n = r->labels.n = (size_t)max_len;
        r->truncated = 1;
    }
    size_t k = 0, found = 0;
    for (size_t i = 0; i < r->ids.n; i++) found += r->ids.v[i] == pad_id;
    if (!drop_pad || !found) return found;
    for (size_t i = 0; i < r->ids.n; i++) {
        if (r->ids.v[i] == pad_id) continue;
        r->ids.v[k] = r->ids.v[i];
        r->labels.v[k] = r->labels.v[i];
        k++;
    }
    r->ids.n = r->labels.n = k;
    return found;
}
