/* metrics.c — per-answer scoring rules and the Python string semantics they rely on (metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "text/template.h"

/* ---- code point strings ----------------------------------------------------------------------- */

typedef struct ustr {
    uint32_t *c;
    size_t n, cap;
} ustr;

static void u_push(ustr *u, uint32_t c) {
    if (u->n + 1 > u->cap) {
        u->cap = u->cap ? u->cap * 2 : 32;
        u->c = asvr_realloc(u->c, u->cap * sizeof *u->c, "a code point string");
    }
    u->c[u->n++] = c;
}
static void u_free(ustr *u) {
    free(u->c);
    u->c = NULL;
    u->n = u->cap = 0;
}
static void u_append(ustr *u, const uint32_t *c, size_t n) {
    if (n == 0) return;
    for (size_t i = 0; i < n; i++) u_push(u, c[i]);
}

/* Decodes UTF-8; an invalid byte becomes U+FFFD (JSON input is valid UTF-8 already). */
static ustr u_from(const char *str) {
    ustr u = {0};
    u_push(&u, 0);
    u.n = 0;
    const unsigned char *s = (const unsigned char *)str;
    size_t len = strlen(str), i = 0;
    while (i < len) {
        unsigned c = s[i];
        int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        uint32_t v = 0xFFFD;
        int ok = n > 0 && i + (size_t)n <= len;
        if (ok) {
            v = n == 1 ? c : (c & (0x7Fu >> n));
            for (int k = 1; k < n; k++) {
                if ((s[i + k] & 0xC0) != 0x80) {
                    ok = 0;
                    break;
                }
                v = (v << 6) | (s[i + k] & 0x3Fu);
            }
        }
        if (!ok) {
            u_push(&u, 0xFFFD);
            i++;
        } else {
            u_push(&u, v);
            i += (size_t)n;
        }
    }
    return u;
}

static int utf8_put(uint32_t c, char *b) {
    if (c < 0x80) {
        b[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        b[0] = (char)(0xC0 | (c >> 6));
        b[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        b[0] = (char)(0xE0 | (c >> 12));
        b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    b[0] = (char)(0xF0 | (c >> 18));
    b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    b[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

static char *u_to(const uint32_t *c, size_t n) {
    char *out = asvr_malloc(n * 4 + 1, "a UTF-8 string");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)utf8_put(c[i], out + k);
    out[k] = 0;
    return out;
}

/* Python's str.isspace() for one code point, through py_strip (text/template.h). */
static int u_isspace(uint32_t c) {
    char b[4];
    int n = utf8_put(c, b);
    size_t s, e;
    py_strip(b, (size_t)n, &s, &e);
    return s == e;
}

/* Value of a Unicode decimal digit (str.isdecimal / regex \d) in the blocks covered, else -1. */
static int u_decimal(uint32_t c) {
    static const uint32_t zeros[] = {0x30,   0x660,  0x6F0,  0x7C0,  0x966,  0x9E6,  0xA66,  0xAE6,
                                     0xB66,  0xBE6,  0xC66,  0xCE6,  0xD66,  0xE50,  0xED0,  0xF20,
                                     0x1040, 0x17E0, 0x1810, 0xFF10};
    for (size_t i = 0; i < sizeof zeros / sizeof zeros[0]; i++)
        if (c >= zeros[i] && c <= zeros[i] + 9) return (int)(c - zeros[i]);
    return -1;
}

/* Simple lower-case mapping of one code point (the multi-code-point İ and final sigma are handled
 * by the caller). */
static uint32_t lower_cp(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0xC0) return c;
    if (c <= 0xDE) return c == 0xD7 ? c : c + 32;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130 || c == 0x138 || c == 0x149 || c == 0x17F) return c;
        if (c == 0x178) return 0xFF;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c & 1) ? c + 1 : c;
        return (c & 1) ? c : c + 1;
    }
    if (c >= 0x180 && c <= 0x24F) { /* Latin Extended-B: the regular pairs */
        if (c >= 0x1CD && c <= 0x1DC) return (c & 1) ? c + 1 : c;
        if ((c >= 0x1DE && c <= 0x1EF) || (c >= 0x1F8 && c <= 0x21F) || (c >= 0x222 && c <= 0x233) ||
            (c >= 0x246 && c <= 0x24F))
            return (c & 1) ? c : c + 1;
        if (c == 0x1C4 || c == 0x1C7 || c == 0x1CA || c == 0x1F1) return c + 2;
        if (c == 0x1C5 || c == 0x1C8 || c == 0x1CB || c == 0x1F2) return c + 1;
        return c;
    }
    if (c >= 0x370 && c <= 0x3FF) { /* Greek */
        if (c == 0x386) return 0x3AC;
        if (c >= 0x388 && c <= 0x38A) return c + 37;
        if (c == 0x38C) return 0x3CC;
        if (c == 0x38E || c == 0x38F) return c + 63;
        if ((c >= 0x391 && c <= 0x3A1) || (c >= 0x3A3 && c <= 0x3AB)) return c + 32;
        if (c >= 0x3D8 && c <= 0x3EF) return (c & 1) ? c : c + 1;
        return c;
    }
    if (c >= 0x400 && c <= 0x52F) { /* Cyrillic */
        if (c <= 0x40F) return c + 80;
        if (c <= 0x42F) return c + 32;
        if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F))
            return (c & 1) ? c : c + 1;
        if (c == 0x4C0) return 0x4CF;
        if (c >= 0x4C1 && c <= 0x4CE) return (c & 1) ? c + 1 : c;
        return c;
    }
    if (c >= 0x531 && c <= 0x556) return c + 48; /* Armenian */
    if (c >= 0x1E00 && c <= 0x1EFF) {          /* Latin Extended Additional */
        if (c == 0x1E9E) return 0xDF;
        if (c <= 0x1E95 || c >= 0x1EA0) return (c & 1) ? c : c + 1;
        return c;
    }
    if (c >= 0x2160 && c <= 0x216F) return c + 16;  /* Roman numerals */
    if (c >= 0x24B6 && c <= 0x24CF) return c + 26;  /* circled letters */
    if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;  /* fullwidth */
    return c;
}

/* Cased letter (for the final-sigma context): a letter with a case pair in our tables. */
static int is_cased(uint32_t c) {
    return lower_cp(c) != c || (c >= 'a' && c <= 'z') || (c >= 0xDF && c <= 0xFF && c != 0xF7) ||
           (c >= 0x100 && c <= 0x24F) || (c >= 0x3AC && c <= 0x3CE) || (c >= 0x430 && c <= 0x45F) ||
           (c >= 0x561 && c <= 0x587) || (c >= 0x1E00 && c <= 0x1EFF);
}

static ustr u_lower(const ustr *s) {
    ustr o = {0};
    u_push(&o, 0); /* every live ustr owns a buffer, so c + offset is always defined */
    o.n = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t c = s->c[i];
        if (c == 0x130) {
            u_push(&o, 'i');
            u_push(&o, 0x307);
        } else if (c == 0x3A3) {
            /* Final_Sigma: preceded by a cased letter and not followed by one. */
            int before = i > 0 && is_cased(s->c[i - 1]);
            int after = i + 1 < s->n && is_cased(s->c[i + 1]);
            u_push(&o, (before && !after) ? 0x3C2 : 0x3C3);
        } else {
            u_push(&o, lower_cp(c));
        }
    }
    return o;
}

static void u_strip_range(const ustr *s, size_t *b, size_t *e) {
    size_t i = 0, j = s->n;
    while (i < j && u_isspace(s->c[i])) i++;
    while (j > i && u_isspace(s->c[j - 1])) j--;
    *b = i;
    *e = j;
}

static ustr u_sub(const ustr *s, size_t b, size_t e) {
    ustr o = {0};
    u_push(&o, 0);
    o.n = 0;
    u_append(&o, s->c + b, e - b);
    return o;
}

static ustr u_strip(const ustr *s) {
    size_t b, e;
    u_strip_range(s, &b, &e);
    return u_sub(s, b, e);
}

static int in_set(uint32_t c, const char *chars) { return c < 0x80 && c != 0 && strchr(chars, (int)c) != NULL; }

static void u_rstrip_set(ustr *s, const char *chars) {
    while (s->n > 0 && in_set(s->c[s->n - 1], chars)) s->n--;
}
static void u_lstrip_set(ustr *s, const char *chars) {
    size_t k = 0;
    while (k < s->n && in_set(s->c[k], chars)) k++;
    if (k == 0) return;
    memmove(s->c, s->c + k, (s->n - k) * sizeof *s->c);
    s->n -= k;
}

/* Index of the first (from) / last occurrence of needle, or -1. */
static long u_find(const ustr *s, const ustr *nd, size_t from) {
    if (nd->n == 0) return from <= s->n ? (long)from : -1;
    for (size_t i = from; i + nd->n <= s->n; i++)
        if (memcmp(s->c + i, nd->c, nd->n * sizeof *nd->c) == 0) return (long)i;
    return -1;
}
static long u_rfind(const ustr *s, const ustr *nd) {
    if (nd->n > s->n) return -1;
    for (size_t i = s->n - nd->n + 1; i-- > 0;)
        if (memcmp(s->c + i, nd->c, nd->n * sizeof *nd->c) == 0) return (long)i;
    return -1;
}
static int u_contains(const ustr *s, const ustr *nd) { return u_find(s, nd, 0) >= 0; }
static int u_eq(const ustr *a, const ustr *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->c, b->c, a->n * sizeof *a->c) == 0);
}
static int u_eq_str(const ustr *a, const char *ascii) {
    size_t n = strlen(ascii);
    if (a->n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (a->c[i] != (unsigned char)ascii[i]) return 0;
    return 1;
}

/* str.replace(old, new) for non-empty old. */
static ustr u_replace(const ustr *s, const ustr *old, const ustr *new_) {
    ustr o = {0};
    u_push(&o, 0);
    o.n = 0;
    size_t i = 0;
    for (long k; (k = u_find(s, old, i)) >= 0; i = (size_t)k + old->n) {
        u_append(&o, s->c + i, (size_t)k - i);
        u_append(&o, new_->c, new_->n);
    }
    u_append(&o, s->c + i, s->n - i);
    return o;
}
static ustr u_lit(const char *ascii) { return u_from(ascii); }
static void u_replace_inplace(ustr *s, const char *old, const char *new_) {
    ustr a = u_lit(old), b = u_lit(new_);
    ustr r = u_replace(s, &a, &b);
    u_free(&a);
    u_free(&b);
    u_free(s);
    *s = r;
}

/* str.split() into a vector of ustr. */
typedef struct uvec {
    ustr *v;
    int n;
} uvec;
static uvec u_split(const ustr *s) {
    uvec out = {0};
    size_t i = 0;
    while (i < s->n) {
        while (i < s->n && u_isspace(s->c[i])) i++;
        if (i >= s->n) break;
        size_t j = i;
        while (j < s->n && !u_isspace(s->c[j])) j++;
        out.v = asvr_realloc(out.v, (size_t)(out.n + 1) * sizeof *out.v, "split words");
        out.v[out.n++] = u_sub(s, i, j);
        i = j;
    }
    return out;
}
static void uvec_free(uvec *v) {
    for (int i = 0; i < v->n; i++) u_free(&v->v[i]);
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

/* ---- public Python helpers -------------------------------------------------------------------- */

char *py_lower(const char *s) {
    ustr u = u_from(s), l = u_lower(&u);
    char *r = u_to(l.c, l.n);
    u_free(&u);
    u_free(&l);
    return r;
}

char *py_strip_dup(const char *s) {
    size_t b, e;
    py_strip(s, strlen(s), &b, &e);
    char *r = asvr_malloc(e - b + 1, "a stripped string");
    memcpy(r, s + b, e - b);
    r[e - b] = 0;
    return r;
}

char **py_split(const char *s, int *n) {
    ustr u = u_from(s);
    uvec w = u_split(&u);
    char **v = asvr_malloc((size_t)(w.n + 1) * sizeof *v, "split words");
    for (int i = 0; i < w.n; i++) v[i] = u_to(w.v[i].c, w.v[i].n);
    v[w.n] = NULL;
    *n = w.n;
    uvec_free(&w);
    u_free(&u);
    return v;
}

void py_strv_free(char **v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

char *py_rstrip_chars(const char *s, const char *chars) {
    size_t n = strlen(s);
    while (n > 0 && strchr(chars, s[n - 1]) && (unsigned char)s[n - 1] < 0x80) n--;
    char *r = asvr_malloc(n + 1, "a stripped string");
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

char *py_lstrip_chars(const char *s, const char *chars) {
    size_t k = 0;
    while (s[k] && (unsigned char)s[k] < 0x80 && strchr(chars, s[k])) k++;
    return asvr_strdup(s + k);
}

size_t py_len(const char *s) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xC0) != 0x80;
    return n;
}

/* How many code points c.upper() has (1 for all but the expanding ones). */
static size_t upper_len_cp(uint32_t c) {
    if (c == 0xDF || c == 0x149 || c == 0x1F0 || c == 0x587) return 2;
    if (c == 0x390 || c == 0x3B0) return 3;
    if (c >= 0x1E96 && c <= 0x1E9A) return 2;
    if (c >= 0xFB00 && c <= 0xFB06) return (c == 0xFB03 || c == 0xFB04) ? 3 : 2;
    if (c >= 0xFB13 && c <= 0xFB17) return 2;
    return 1;
}

size_t py_upper_len(const char *s) {
    ustr u = u_from(s);
    size_t n = 0;
    for (size_t i = 0; i < u.n; i++) n += upper_len_cp(u.c[i]);
    u_free(&u);
    return n;
}

/* Python float(): validates the literal grammar, then strtod on the ASCII form. */
int py_float(const char *s, double *out) {
    ustr raw = u_from(s);
    ustr u = u_strip(&raw);
    u_free(&raw);
    char *a = asvr_malloc(u.n + 2, "a number");
    size_t k = 0;
    int ok = 1;
    for (size_t i = 0; i < u.n; i++) {
        int d = u_decimal(u.c[i]);
        if (d >= 0) a[k++] = (char)('0' + d);
        else if (u.c[i] < 0x80) a[k++] = (char)u.c[i];
        else ok = 0;
    }
    a[k] = 0;
    u_free(&u);
    if (!ok || k == 0) {
        free(a);
        return -1;
    }
    const char *p = a;
    int neg = 0;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    /* inf, infinity, nan */
    if (strcasecmp(p, "inf") == 0 || strcasecmp(p, "infinity") == 0) {
        *out = neg ? -INFINITY : INFINITY;
        free(a);
        return 0;
    }
    if (strcasecmp(p, "nan") == 0) {
        *out = neg ? -NAN : NAN;
        free(a);
        return 0;
    }
    /* digitpart: digit (["_"] digit)*; number: digitpart ["." [digitpart]] | "." digitpart */
    char *clean = asvr_malloc(k + 2, "a number");
    size_t m = 0;
    if (neg) clean[m++] = '-';
    int digits = 0;
#define DIGITPART(counter)                                                                         \
    do {                                                                                           \
        while (*p >= '0' && *p <= '9') {                                                           \
            clean[m++] = *p++;                                                                     \
            (counter)++;                                                                           \
            if (*p == '_') {                                                                       \
                if (!(p[1] >= '0' && p[1] <= '9')) goto bad;                                       \
                p++;                                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    DIGITPART(digits);
    if (*p == '.') {
        clean[m++] = *p++;
        DIGITPART(digits);
    }
    if (digits == 0) goto bad;
    if (*p == 'e' || *p == 'E') {
        clean[m++] = *p++;
        if (*p == '+' || *p == '-') clean[m++] = *p++;
        int ed = 0;
        DIGITPART(ed);
        if (ed == 0) goto bad;
    }
#undef DIGITPART
    if (*p != 0) goto bad;
    clean[m] = 0;
    *out = strtod(clean, NULL);
    free(clean);
    free(a);
    return 0;
bad:
    free(clean);
    free(a);
    return -1;
}

size_t levenshtein(const char *a, const char *b) {
    ustr x = u_from(a), y = u_from(b);
    size_t *row = asvr_malloc((y.n + 1) * sizeof *row, "a Levenshtein row");
    for (size_t j = 0; j <= y.n; j++) row[j] = j;
    for (size_t i = 1; i <= x.n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= y.n; j++) {
            size_t up = row[j];
            size_t best = diag + (x.c[i - 1] != y.c[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[y.n];
    free(row);
    u_free(&x);
    u_free(&y);
    return d;
}

/* ---- VQA normalisation ------------------------------------------------------------------------ */

static const char PUNCT[] = ";/[]\"{}()=+\\_-><@`,?!"; /* the 21 characters, in the reference order */

static const char *const NUMBER_MAP[][2] = {{"none", "0"}, {"zero", "0"}, {"one", "1"},  {"two", "2"},
                                            {"three", "3"}, {"four", "4"}, {"five", "5"}, {"six", "6"},
                                            {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
static const char *const ARTICLES[] = {"a", "an", "the"};

/* The 120 keys of the reference's contractions table, in its order (keys with upper-case letters
 * can never match after lower-casing; "somebody'd" → "somebodyd" is the reference's own value). */
static const char *const CONTRACTIONS[][2] = {
    {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"},
    {"couldnt", "couldn't"}, {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"},
    {"didnt", "didn't"}, {"doesnt", "doesn't"}, {"dont", "don't"}, {"hadnt", "hadn't"},
    {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"}, {"havent", "haven't"},
    {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"}, {"hes", "he's"}, {"howd", "how'd"},
    {"howll", "how'll"}, {"hows", "how's"}, {"Id've", "I'd've"}, {"I'dve", "I'd've"}, {"Im", "I'm"},
    {"Ive", "I've"}, {"isnt", "isn't"}, {"itd", "it'd"}, {"itd've", "it'd've"}, {"it'dve", "it'd've"},
    {"itll", "it'll"}, {"let's", "let's"}, {"maam", "ma'am"}, {"mightnt", "mightn't"},
    {"mightnt've", "mightn't've"}, {"mightn'tve", "mightn't've"}, {"mightve", "might've"},
    {"mustnt", "mustn't"}, {"mustve", "must've"}, {"neednt", "needn't"}, {"notve", "not've"},
    {"oclock", "o'clock"}, {"oughtnt", "oughtn't"}, {"ow's'at", "'ow's'at"}, {"'ows'at", "'ow's'at"},
    {"'ow'sat", "'ow's'at"}, {"shant", "shan't"}, {"shed've", "she'd've"}, {"she'dve", "she'd've"},
    {"she's", "she's"}, {"shouldve", "should've"}, {"shouldnt", "shouldn't"},
    {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"}, {"somebody'd", "somebodyd"},
    {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"}, {"somebodyll", "somebody'll"},
    {"somebodys", "somebody's"}, {"someoned", "someone'd"}, {"someoned've", "someone'd've"},
    {"someone'dve", "someone'd've"}, {"someonell", "someone'll"}, {"someones", "someone's"},
    {"somethingd", "something'd"}, {"somethingd've", "something'd've"},
    {"something'dve", "something'd've"}, {"somethingll", "something'll"}, {"thats", "that's"},
    {"thered", "there'd"}, {"thered've", "there'd've"}, {"there'dve", "there'd've"},
    {"therere", "there're"}, {"theres", "there's"}, {"theyd", "they'd"}, {"theyd've", "they'd've"},
    {"they'dve", "they'd've"}, {"theyll", "they'll"}, {"theyre", "they're"}, {"theyve", "they've"},
    {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"}, {"we'dve", "we'd've"},
    {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"}, {"whatre", "what're"},
    {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"}, {"whered", "where'd"},
    {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"}, {"whod've", "who'd've"},
    {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"}, {"whove", "who've"},
    {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"}, {"wont", "won't"},
    {"wouldve", "would've"}, {"wouldnt", "wouldn't"}, {"wouldnt've", "wouldn't've"},
    {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"}, {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"},
    {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"},
    {"youd", "you'd"}, {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"},
    {"youre", "you're"}, {"youve", "you've"}};

size_t vqa_contractions_count(void); /* for the tests: the table must hold 120 keys */
size_t vqa_contractions_count(void) { return sizeof CONTRACTIONS / sizeof CONTRACTIONS[0]; }

/* process_punctuation: every test looks at in_text; edits go to out. */
static ustr process_punctuation(const ustr *in) {
    ustr out = u_sub(in, 0, in->n);
    /* comma_digit: re.search(r"(?<=\d)(\,)+(?=\d)", in_text) */
    int comma_digit = 0;
    for (size_t i = 1; i < in->n && !comma_digit; i++) {
        if (in->c[i] != ',' || u_decimal(in->c[i - 1]) < 0) continue;
        size_t j = i;
        while (j < in->n && in->c[j] == ',') j++;
        if (j < in->n && u_decimal(in->c[j]) >= 0) comma_digit = 1;
    }
    for (const char *p = PUNCT; *p; p++) {
        uint32_t pc = (unsigned char)*p;
        int spaced = 0;
        for (size_t i = 0; i + 1 < in->n && !spaced; i++)
            spaced = (in->c[i] == pc && in->c[i + 1] == ' ') || (in->c[i] == ' ' && in->c[i + 1] == pc);
        uint32_t rep = ' ';
        size_t k = 0;
        for (size_t i = 0; i < out.n; i++) {
            if (out.c[i] != pc) out.c[k++] = out.c[i];
            else if (!(spaced || comma_digit)) out.c[k++] = rep;
        }
        out.n = k;
    }
    /* PERIOD_STRIP.sub("", out, re.UNICODE): count=32 leftmost '.' not followed by a digit. */
    size_t k = 0, removed = 0;
    for (size_t i = 0; i < out.n; i++) {
        if (out.c[i] == '.' && removed < 32 && !(i + 1 < out.n && u_decimal(out.c[i + 1]) >= 0)) {
            removed++;
            continue;
        }
        out.c[k++] = out.c[i];
    }
    out.n = k;
    return out;
}

static ustr process_digit_article(const ustr *in) {
    ustr low = u_lower(in);
    uvec w = u_split(&low);
    u_free(&low);
    ustr out = {0};
    u_push(&out, 0);
    out.n = 0;
    int first = 1;
    for (int i = 0; i < w.n; i++) {
        const ustr *word = &w.v[i];
        ustr mapped = {0};
        int is_mapped = 0;
        for (size_t m = 0; m < sizeof NUMBER_MAP / sizeof NUMBER_MAP[0]; m++)
            if (u_eq_str(word, NUMBER_MAP[m][0])) {
                mapped = u_lit(NUMBER_MAP[m][1]);
                is_mapped = 1;
                break;
            }
        const ustr *cur = is_mapped ? &mapped : word;
        int article = 0;
        for (size_t a = 0; a < 3; a++) article |= u_eq_str(cur, ARTICLES[a]);
        if (!article) {
            ustr fin = {0};
            int contracted = 0;
            char *s = u_to(cur->c, cur->n);
            for (size_t c = 0; c < sizeof CONTRACTIONS / sizeof CONTRACTIONS[0]; c++)
                if (strcmp(s, CONTRACTIONS[c][0]) == 0) {
                    fin = u_from(CONTRACTIONS[c][1]);
                    contracted = 1;
                    break;
                }
            free(s);
            if (!first) u_push(&out, ' ');
            first = 0;
            if (contracted) {
                u_append(&out, fin.c, fin.n);
                u_free(&fin);
            } else {
                u_append(&out, cur->c, cur->n);
            }
        }
        if (is_mapped) u_free(&mapped);
    }
    uvec_free(&w);
    return out;
}

static ustr vqa_normalize_u(const char *s) {
    ustr u = u_from(s);
    /* word_tokenize */
    ustr l = u_lower(&u);
    u_free(&u);
    u_replace_inplace(&l, ",", "");
    u_replace_inplace(&l, "?", "");
    u_replace_inplace(&l, "'s", " 's");
    ustr t = u_strip(&l);
    u_free(&l);
    /* \n, \t → space; strip */
    for (size_t i = 0; i < t.n; i++)
        if (t.c[i] == '\n' || t.c[i] == '\t') t.c[i] = ' ';
    ustr t2 = u_strip(&t);
    u_free(&t);
    ustr p = process_punctuation(&t2);
    u_free(&t2);
    ustr d = process_digit_article(&p);
    u_free(&p);
    return d;
}

char *vqa_normalize(const char *s) {
    ustr d = vqa_normalize_u(s);
    char *r = u_to(d.c, d.n);
    u_free(&d);
    return r;
}

double vqa_soft_accuracy(const char *pred, const char *const *gts, int n) {
    if (n <= 0) return 0.0;
    char *pl = py_lower(pred);
    ustr p = vqa_normalize_u(pl);
    free(pl);
    int k = 0;
    for (int i = 0; i < n; i++) {
        char *gl = py_lower(gts[i]);
        ustr g = vqa_normalize_u(gl);
        free(gl);
        k += u_eq(&g, &p);
        u_free(&g);
    }
    u_free(&p);
    if (k == 0) return 0.0;
    /* mean over i of min(1, matches among the other n-1 / 3): the k matching GTs see k-1 matches,
     * the n-k others see k. */
    double a_in = fmin(1.0, (double)(k - 1) / 3.0), a_out = fmin(1.0, (double)k / 3.0);
    return (k * a_in + (n - k) * a_out) / n;
}

/* ---- ANLS --------------------------------------------------------------------------------------- */

/* " ".join(s.strip().lower().split()) */
static char *anls_norm(const char *s) {
    ustr u = u_from(s);
    ustr st = u_strip(&u);
    ustr l = u_lower(&st);
    uvec w = u_split(&l);
    ustr o = {0};
    u_push(&o, 0);
    o.n = 0;
    for (int i = 0; i < w.n; i++) {
        if (i) u_push(&o, ' ');
        u_append(&o, w.v[i].c, w.v[i].n);
    }
    char *r = u_to(o.c, o.n);
    u_free(&u);
    u_free(&st);
    u_free(&l);
    u_free(&o);
    uvec_free(&w);
    return r;
}

double anls_lmms(const char *pred, const char *const *gts, int n) {
    if (n <= 0) return 0.0;
    char *pn = anls_norm(pred);
    double min_nl = INFINITY;
    for (int i = 0; i < n; i++) {
        char *gn = anls_norm(gts[i]);
        size_t d = levenshtein(gn, pn);
        size_t lg = py_upper_len(gts[i]), lp = py_upper_len(pred);
        size_t len = lg > lp ? lg : lp;
        double nl = len == 0 ? 0.0 : (double)d / (double)len;
        if (nl < min_nl) min_nl = nl;
        free(gn);
    }
    free(pn);
    double q = 1.0 - min_nl;
    return q < 0.5 ? 0.0 : q;
}

double anls_rrc(const char *pred, const char *const *gts, int n) {
    char *pn = anls_norm(pred);
    double best = 0.0;
    for (int i = 0; i < n; i++) {
        char *gn = anls_norm(gts[i]);
        size_t d = levenshtein(gn, pn);
        size_t lg = py_len(gn), lp = py_len(pn);
        size_t len = lg > lp ? lg : lp;
        double nl = len == 0 ? 0.0 : (double)d / (double)len;
        double s = nl < 0.5 ? 1.0 - nl : 0.0;
        if (s > best) best = s;
        free(gn);
    }
    free(pn);
    return best;
}

/* ---- ChartQA ------------------------------------------------------------------------------------ */

int chartqa_correct_cambrian(const char *pred, const char *gt) {
    char *a = py_lower(pred), *g = py_lower(gt);
    double fa, fg;
    int r;
    if (py_float(a, &fa) == 0 && py_float(g, &fg) == 0) r = fabs(fa - fg) <= 0.05 * fabs(fg);
    else r = strcmp(a, g) == 0;
    free(a);
    free(g);
    return r;
}

static int lmms_to_float(const char *s, double *out) {
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '%') {
        char *t = py_rstrip_chars(s, "%");
        int r = py_float(t, out);
        free(t);
        if (r == 0) *out /= 100.0;
        return r;
    }
    return py_float(s, out);
}

int chartqa_correct_lmms(const char *pred, const char *gt) {
    double fp, ft;
    int hp = lmms_to_float(pred, &fp) == 0, ht = lmms_to_float(gt, &ft) == 0;
    if (hp && ht && ft != 0.0) return fabs(fp - ft) / fabs(ft) <= 0.05;
    char *a = py_lower(pred), *g = py_lower(gt);
    int r = strcmp(a, g) == 0;
    free(a);
    free(g);
    return r;
}

/* ---- OCRBench ----------------------------------------------------------------------------------- */

static ustr ocr_norm(const char *s, int hme, int fold_fullwidth) {
    ustr u = u_from(s);
    if (fold_fullwidth)
        for (size_t i = 0; i < u.n; i++) {
            if (u.c[i] >= 0xFF01 && u.c[i] <= 0xFF5E) u.c[i] -= 0xFEE0;
            else if (u.c[i] == 0x3000) u.c[i] = ' ';
        }
    ustr t;
    if (hme) {
        t = u_strip(&u);
    } else {
        ustr l = u_lower(&u);
        t = u_strip(&l);
        u_free(&l);
    }
    u_free(&u);
    size_t k = 0;
    for (size_t i = 0; i < t.n; i++) {
        uint32_t c = t.c[i] == '\n' ? ' ' : t.c[i];
        if (hme && c == ' ') continue;
        t.c[k++] = c;
    }
    t.n = k;
    return t;
}

static int ocr_any(const char *pred, const char *const *gts, int n, int hme, int fold) {
    ustr p = ocr_norm(pred, hme, fold);
    int hit = 0;
    for (int i = 0; i < n && !hit; i++) {
        ustr g = ocr_norm(gts[i], hme, fold);
        hit = u_contains(&p, &g);
        u_free(&g);
    }
    u_free(&p);
    return hit;
}

int ocrbench_correct(const char *pred, const char *const *gts, int n, int hme) {
    return ocr_any(pred, gts, n, hme, 0);
}
int ocrbench_correct_lmms(const char *pred, const char *const *gts, int n, int hme) {
    return ocr_any(pred, gts, n, hme, 1);
}

/* ---- yes/no ------------------------------------------------------------------------------------- */

int mme_correct(const char *pred, const char *gt) {
    char *p = py_lower(pred), *g = py_lower(gt);
    char *pr = py_rstrip_chars(p, ".");
    int r = strcmp(pr, g) == 0;
    free(p);
    free(g);
    free(pr);
    return r;
}

const char *mme_parse_official(const char *pred) {
    ustr u = u_from(pred), l = u_lower(&u);
    u_free(&u);
    const char *r;
    if (u_eq_str(&l, "yes")) r = "yes";
    else if (u_eq_str(&l, "no")) r = "no";
    else {
        ustr yes = u_lit("yes"), no = u_lit("no");
        ustr pre = u_sub(&l, 0, l.n < 4 ? l.n : 4);
        r = u_contains(&pre, &yes) ? "yes" : u_contains(&pre, &no) ? "no" : "other";
        u_free(&pre);
        u_free(&yes);
        u_free(&no);
    }
    u_free(&l);
    return r;
}

char *pope_first_token(const char *pred) {
    ustr u = u_from(pred), l = u_lower(&u);
    u_free(&u);
    uvec w = u_split(&l);
    u_free(&l);
    if (w.n == 0) {
        uvec_free(&w);
        return NULL;
    }
    u_rstrip_set(&w.v[0], ".:,");
    char *r = u_to(w.v[0].c, w.v[0].n);
    uvec_free(&w);
    return r;
}

int pope_llava_is_yes(const char *pred) {
    const char *dot = strchr(pred, '.');
    size_t n = dot ? (size_t)(dot - pred) : strlen(pred);
    char *t = asvr_malloc(n + 1, "a POPE answer");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (pred[i] != ',') t[k++] = pred[i];
    t[k] = 0;
    int no = 0;
    for (char *w = t;;) { /* split(' '): single spaces, empty words kept */
        char *sp = strchr(w, ' ');
        size_t wl = sp ? (size_t)(sp - w) : strlen(w);
        if ((wl == 2 && (strncmp(w, "No", 2) == 0 || strncmp(w, "no", 2) == 0)) || (wl == 3 && strncmp(w, "not", 3) == 0))
            no = 1;
        if (!sp) break;
        w = sp + 1;
    }
    free(t);
    return !no;
}

int yorn_extract(const char *pred) {
    ustr u = u_from(pred), l = u_lower(&u);
    u_free(&u);
    ustr p = process_punctuation(&l);
    u_free(&l);
    uvec w = u_split(&p);
    u_free(&p);
    int yes = 0, no = 0;
    for (int i = 0; i < w.n; i++) {
        yes |= u_eq_str(&w.v[i], "yes");
        no |= u_eq_str(&w.v[i], "no");
    }
    uvec_free(&w);
    return (yes && !no) ? 1 : (no && !yes) ? 0 : -1;
}

int hb_intern_is_yes(const char *pred) {
    char *l = py_lower(pred);
    int r = strstr(l, "yes") != NULL;
    free(l);
    return r;
}

/* ---- multiple choice ---------------------------------------------------------------------------- */

/* t = pred.lower().strip(); keyword splits in turn; t.strip() */
static ustr kw_split(const char *pred) {
    ustr u = u_from(pred), l = u_lower(&u);
    u_free(&u);
    ustr t = u_strip(&l);
    u_free(&l);
    static const char *const kws[] = {"answer is", "answer is:", "answer:"};
    for (int i = 0; i < 3; i++) {
        ustr kw = u_lit(kws[i]);
        long at = u_rfind(&t, &kw);
        if (at >= 0) {
            ustr rest = u_sub(&t, (size_t)at + kw.n, t.n);
            u_free(&t);
            t = rest;
        }
        u_free(&kw);
    }
    ustr s = u_strip(&t);
    u_free(&t);
    return s;
}

static char *mcq_common(const char *pred, const char *rstrip_set, int parens, int truncate) {
    ustr t = kw_split(pred);
    u_rstrip_set(&t, rstrip_set);
    if (parens) {
        u_lstrip_set(&t, "(");
        u_rstrip_set(&t, ")");
    }
    if (truncate && t.n > 1) t.n = 1;
    char *r = u_to(t.c, t.n);
    u_free(&t);
    return r;
}

char *mcq_extract(const char *pred) { return mcq_common(pred, ".:,", 1, 1); }
char *mcq_extract_seed(const char *pred) { return mcq_common(pred, ".", 1, 1); }
char *mcq_extract_mmvp(const char *pred) { return mcq_common(pred, ".:,", 1, 0); }
char *open_extract(const char *pred) { return mcq_common(pred, ".", 0, 0); }

char *rwqa_extract(const char *pred) {
    ustr t = kw_split(pred);
    u_rstrip_set(&t, ".");
    uvec w = u_split(&t);
    u_free(&t);
    char *r = w.n ? u_to(w.v[0].c, w.v[0].n) : NULL;
    uvec_free(&w);
    return r;
}

int gqa_correct(const char *pred, const char *gt) { return mme_correct(pred, gt); }

int mmmu_correct(const char *t, const char *gt) {
    char *g = py_lower(gt);
    int r = strcmp(t, g) == 0;
    free(g);
    double ft, fg;
    if (!r && py_float(t, &ft) == 0 && py_float(gt, &fg) == 0) r = fabs(fg - ft) <= 0.05 * fabs(ft);
    return r;
}

char **mmvp_give_options(const char *options, int *n) {
    /* [part.split(")")[1].strip() for part in options.split("(")[1:]] */
    int cap = 4, k = 0;
    char **v = asvr_malloc((size_t)cap * sizeof *v, "MMVP options");
    const char *p = strchr(options, '(');
    while (p) {
        const char *start = p + 1;
        const char *next = strchr(start, '(');
        const char *end = next ? next : start + strlen(start);
        const char *close = memchr(start, ')', (size_t)(end - start));
        if (k + 1 >= cap) v = asvr_realloc(v, (size_t)(cap *= 2) * sizeof *v, "MMVP options");
        if (!close) {
            v[k++] = asvr_strdup(""); /* the reference raises IndexError here */
        } else {
            const char *c2 = memchr(close + 1, ')', (size_t)(end - close - 1));
            const char *seg_end = c2 ? c2 : end;
            char *seg = asvr_malloc((size_t)(seg_end - close), "an MMVP option");
            memcpy(seg, close + 1, (size_t)(seg_end - close - 1));
            seg[seg_end - close - 1] = 0;
            char *st = py_strip_dup(seg), *lo = py_lower(st);
            free(seg);
            free(st);
            v[k++] = lo;
        }
        p = next;
    }
    v[k] = NULL;
    *n = k;
    return v;
}
