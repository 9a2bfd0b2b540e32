/* sp_tokenizer.c — SentencePiece BPE model loading, encoding and decoding (see sp_tokenizer.h). */
#include "text/sp_tokenizer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/hash.h"

#define SP_SPACE "\xE2\x96\x81" /* U+2581, the escaped space */
#define SP_SPACE_LEN 3
#define SP_MAX_TEXT (INT32_MAX / 8) /* offsets and symbol indices are int32 */

enum { MODEL_UNIGRAM = 1, MODEL_BPE = 2, MODEL_WORD = 3, MODEL_CHAR = 4 };

/* A byte trie over the user-defined pieces, for longest-prefix matching. */
typedef struct ud_node {
    int32_t child; /* first child node, -1 none */
    int32_t next;  /* next sibling, -1 none */
    int32_t piece; /* piece id ending here, -1 none */
    uint8_t byte;
} ud_node;

struct sp_tokenizer {
    int n;            /* vocabulary size */
    char *arena;      /* all piece texts, back to back */
    uint32_t *off;    /* piece i = arena[off[i] .. off[i]+len[i]) */
    uint32_t *len;
    float *score;
    uint8_t *type;
    int32_t *slots;   /* open-addressing hash: piece text -> id, -1 empty */
    size_t mask;
    int max_piece_len;
    int unk_id, bos_id, eos_id, pad_id;
    int byte_fallback, add_dummy_prefix, remove_extra_ws, escape_ws;
    int has_unused;
    int word_split;   /* no piece contains "x▁" with x not "▁": words can be merged independently */
    int32_t byte_id[256];
    ud_node *ud;      /* trie nodes; ud[0] is the root; NULL when no user-defined piece */
    int n_ud;
    char *unk_surface;
    size_t unk_surface_len;
    int unk_prefix_len; /* tokens of the unk piece text encoded alone (HF's unk_token_length) */
    uint64_t fingerprint;
    uint8_t special_first[256]; /* 1 for the first byte of the bos/eos/unk piece texts */
    int legacy;                 /* HF LlamaTokenizer's legacy flag (sp_tokenizer_set_legacy) */
    char *config_path;          /* the tokenizer_config.json read at load, NULL when none */
};

/* ---- ids ---------------------------------------------------------------------------------------- */

/* ---- UTF-8 -------------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 character at s[0..n) (strict: no overlongs, surrogates or > U+10FFFF),
 * 0 when the bytes there are not one. */
static size_t utf8_valid_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        uint32_t cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xF0) == 0xE0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) ? 3 : 0;
    }
    if ((c & 0xF8) == 0xF0) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        uint32_t cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return (cp >= 0x10000 && cp <= 0x10FFFF) ? 4 : 0;
    }
    return 0;
}

static int utf8_all_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_valid_len(s + i, n - i);
        if (!l) return 0;
        i += l;
    }
    return 1;
}

/* Is text[p] (p >= 1, valid UTF-8) the start of a "▁" that follows a character other than "▁"? */
static inline int word_start(const char *text, size_t p) {
    return memcmp(text + p, SP_SPACE, SP_SPACE_LEN) == 0 &&
           !(p >= SP_SPACE_LEN && memcmp(text + p - SP_SPACE_LEN, SP_SPACE, SP_SPACE_LEN) == 0);
}

/* ---- a growable byte buffer --------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void buf_reserve(buf *b, size_t extra) {
    if (b->n + extra + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->n + extra + 1) c *= 2;
        b->p = asvr_realloc(b->p, c, "tokenizer text buffer");
        b->cap = c;
    }
}

static void buf_add(buf *b, const void *s, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* ---- piece hash ----------------------------------------------------------------------------------- */

static uint64_t piece_hash(const char *s, size_t n) { return asvr_xxh64(s, n, 0x5350u); }

static int piece_lookup(const sp_tokenizer *t, const char *s, size_t n) {
    if (n == 0 || n > (size_t)t->max_piece_len) return -1;
    size_t h = (size_t)piece_hash(s, n) & t->mask;
    for (;;) {
        int32_t id = t->slots[h];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(t->arena + t->off[id], s, n) == 0) return id;
        h = (h + 1) & t->mask;
    }
}

/* ---- protobuf wire format --------------------------------------------------------------------- */

typedef struct pb {
    const uint8_t *p, *end;
} pb;

static int pb_varint(pb *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        if (shift == 63 && (b & 0x7E)) return -1; /* more than 64 bits */
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Reads a field key; returns 0, 1 at the end of the message, -1 on a malformed key. */
static int pb_key(pb *r, uint32_t *field, int *wire) {
    if (r->p == r->end) return 1;
    uint64_t k;
    if (pb_varint(r, &k) < 0) return -1;
    if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF) return -1;
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    return 0;
}

static int pb_bytes(pb *r, pb *sub) {
    uint64_t n;
    if (pb_varint(r, &n) < 0) return -1;
    if (n > (uint64_t)(r->end - r->p)) return -1;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

static int pb_fixed32(pb *r, uint32_t *v) {
    if (r->end - r->p < 4) return -1;
    *v = (uint32_t)r->p[0] | ((uint32_t)r->p[1] << 8) | ((uint32_t)r->p[2] << 16) | ((uint32_t)r->p[3] << 24);
    r->p += 4;
    return 0;
}

static int pb_skip(pb *r, int wire) {
    uint64_t v;
    uint32_t v32;
    pb sub;
    switch (wire) {
    case 0: return pb_varint(r, &v);
    case 1:
        if (r->end - r->p < 8) return -1;
        r->p += 8;
        return 0;
    case 2: return pb_bytes(r, &sub);
    case 5: return pb_fixed32(r, &v32);
    default: return -1; /* groups (3, 4) and 6, 7 do not occur in a ModelProto */
    }
}

/* ---- loading -------------------------------------------------------------------------------------- */

typedef struct load_state {
    const char *name;
    asvr_error *err;
    /* pieces as parsed */
    buf arena;
    uint32_t *off, *len;
    float *score;
    uint8_t *type;
    int n, cap;
    /* trainer_spec */
    int model_type;
    int byte_fallback;
    int treat_ws_as_suffix;
    int64_t unk_id, bos_id, eos_id, pad_id;
    buf unk_surface;
    int have_unk_surface;
    /* normalizer_spec */
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    int have_charsmap, have_denorm_charsmap;
    char norm_name[64];
} load_state;

#define LOAD_FAIL(st, ...) asvr_err_set((st)->err, __VA_ARGS__)

static int parse_piece(load_state *st, pb *r, size_t msg_off) {
    const uint8_t *text = NULL;
    size_t text_n = 0;
    int have_text = 0;
    float score = 0.0f;
    uint64_t type = SP_PIECE_NORMAL;
    for (;;) {
        uint32_t f;
        int w, k = pb_key(r, &f, &w);
        if (k == 1) break;
        if (k < 0) goto corrupt;
        if (f == 1 && w == 2) {
            pb s;
            if (pb_bytes(r, &s) < 0) goto corrupt;
            text = s.p;
            text_n = (size_t)(s.end - s.p);
            have_text = 1;
        } else if (f == 2 && w == 5) {
            uint32_t u;
            if (pb_fixed32(r, &u) < 0) goto corrupt;
            memcpy(&score, &u, 4);
        } else if (f == 3 && w == 0) {
            if (pb_varint(r, &type) < 0) goto corrupt;
        } else if (pb_skip(r, w) < 0) {
            goto corrupt;
        }
    }
    int id = st->n;
    if (!have_text || text_n == 0)
        return LOAD_FAIL(st, "piece %d has no text (corrupt model)", id);
    if (text_n > 4096) return LOAD_FAIL(st, "piece %d is %zu bytes long (corrupt model)", id, text_n);
    if (!utf8_all_valid(text, text_n)) return LOAD_FAIL(st, "piece %d is not valid UTF-8 (corrupt model)", id);
    if (type < SP_PIECE_NORMAL || type > SP_PIECE_BYTE)
        return LOAD_FAIL(st, "piece %d has unknown type %llu (corrupt model)", id, (unsigned long long)type);
    if (isnan(score)) return LOAD_FAIL(st, "piece %d has a NaN score (corrupt model)", id);
    if (st->n == INT32_MAX / 2) return LOAD_FAIL(st, "too many pieces (corrupt model)");
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 1024;
        st->off = asvr_realloc(st->off, (size_t)st->cap * sizeof(uint32_t), "tokenizer pieces");
        st->len = asvr_realloc(st->len, (size_t)st->cap * sizeof(uint32_t), "tokenizer pieces");
        st->score = asvr_realloc(st->score, (size_t)st->cap * sizeof(float), "tokenizer pieces");
        st->type = asvr_realloc(st->type, (size_t)st->cap, "tokenizer pieces");
    }
    st->off[id] = (uint32_t)st->arena.n;
    st->len[id] = (uint32_t)text_n;
    st->score[id] = score;
    st->type[id] = (uint8_t)type;
    buf_add(&st->arena, text, text_n);
    st->n++;
    return 0;
corrupt:
    return LOAD_FAIL(st, "piece %d (message at byte %zu) is truncated or malformed", st->n, msg_off);
}

static int parse_trainer_spec(load_state *st, pb *r) {
    for (;;) {
        uint32_t f;
        int w, k = pb_key(r, &f, &w);
        if (k == 1) return 0;
        if (k < 0) break;
        uint64_t v;
        if (w == 0 && (f == 3 || f == 35 || f == 24 || (f >= 40 && f <= 43))) {
            if (pb_varint(r, &v) < 0) break;
            int64_t sv = (int64_t)(int32_t)(uint32_t)v; /* int32 fields: negative values use 10 bytes */
            switch (f) {
            case 3: st->model_type = (int)(v > 100 ? 100 : v); break;
            case 35: st->byte_fallback = v != 0; break;
            case 24: st->treat_ws_as_suffix = v != 0; break;
            case 40: st->unk_id = sv; break;
            case 41: st->bos_id = sv; break;
            case 42: st->eos_id = sv; break;
            case 43: st->pad_id = sv; break;
            }
        } else if (f == 44 && w == 2) {
            pb s;
            if (pb_bytes(r, &s) < 0) break;
            st->unk_surface.n = 0;
            buf_add(&st->unk_surface, s.p, (size_t)(s.end - s.p));
            st->have_unk_surface = 1;
        } else if (pb_skip(r, w) < 0) {
            break;
        }
    }
    return LOAD_FAIL(st, "trainer_spec is truncated or malformed");
}

static int parse_normalizer_spec(load_state *st, pb *r, int denorm) {
    for (;;) {
        uint32_t f;
        int w, k = pb_key(r, &f, &w);
        if (k == 1) return 0;
        if (k < 0) break;
        if (w == 2 && (f == 1 || f == 2)) {
            pb s;
            if (pb_bytes(r, &s) < 0) break;
            size_t n = (size_t)(s.end - s.p);
            if (f == 2 && n > 0) {
                if (denorm) st->have_denorm_charsmap = 1;
                else st->have_charsmap = 1;
            }
            if (f == 1 && !denorm) {
                if (n >= sizeof st->norm_name) n = sizeof st->norm_name - 1;
                memcpy(st->norm_name, s.p, n);
                st->norm_name[n] = '\0';
            }
        } else if (w == 0 && !denorm && f >= 3 && f <= 5) {
            uint64_t v;
            if (pb_varint(r, &v) < 0) break;
            if (f == 3) st->add_dummy_prefix = v != 0;
            if (f == 4) st->remove_extra_ws = v != 0;
            if (f == 5) st->escape_ws = v != 0;
        } else if (pb_skip(r, w) < 0) {
            break;
        }
    }
    return LOAD_FAIL(st, "%s is truncated or malformed", denorm ? "denormalizer_spec" : "normalizer_spec");
}

static int parse_model(load_state *st, const uint8_t *data, size_t n) {
    pb r = {data, data + n};
    int have_trainer = 0, have_normalizer = 0;
    for (;;) {
        uint32_t f;
        int w;
        size_t at = (size_t)(r.p - data);
        int k = pb_key(&r, &f, &w);
        if (k == 1) break;
        if (k < 0) return LOAD_FAIL(st, "malformed protobuf field key at byte %zu (not a SentencePiece model, or corrupt)", at);
        if (w == 2 && (f == 1 || f == 2 || f == 3 || f == 5)) {
            pb sub;
            if (pb_bytes(&r, &sub) < 0)
                return LOAD_FAIL(st, "field %u at byte %zu runs past the end of the file (truncated?)", f, at);
            int rc = f == 1 ? parse_piece(st, &sub, at)
                   : f == 2 ? (have_trainer = 1, parse_trainer_spec(st, &sub))
                   : (have_normalizer |= f == 3, parse_normalizer_spec(st, &sub, f == 5));
            if (rc < 0) return -1;
        } else if (f <= 5 && f != 4) {
            return LOAD_FAIL(st, "field %u at byte %zu has wire type %d (not a SentencePiece model, or corrupt)", f, at, w);
        } else if (pb_skip(&r, w) < 0) {
            return LOAD_FAIL(st, "field %u at byte %zu is truncated or malformed", f, at);
        }
    }
    if (st->n == 0) return LOAD_FAIL(st, "no pieces (not a SentencePiece model, or truncated)");
    if (!have_trainer) return LOAD_FAIL(st, "no trainer_spec (not a SentencePiece model, or truncated)");
    if (!have_normalizer) return LOAD_FAIL(st, "no normalizer_spec (not a SentencePiece model, or truncated)");
    return 0;
}

static int parse_byte_piece(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int ud_insert(sp_tokenizer *t, int *cap, const char *s, size_t n, int id) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t c = t->ud[node].child;
        while (c >= 0 && t->ud[c].byte != b) c = t->ud[c].next;
        if (c < 0) {
            if (t->n_ud == *cap) {
                *cap *= 2;
                t->ud = asvr_realloc(t->ud, (size_t)*cap * sizeof(ud_node), "user-defined piece trie");
            }
            c = t->n_ud++;
            t->ud[c] = (ud_node){.child = -1, .next = t->ud[node].child, .piece = -1, .byte = b};
            t->ud[node].child = c;
        }
        node = c;
    }
    t->ud[node].piece = id;
    return 0;
}

/* Longest user-defined piece at s[0..n): its length, 0 when none. */
static size_t ud_match(const sp_tokenizer *t, const char *s, size_t n) {
    if (!t->ud) return 0;
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = t->ud[node].child;
        while (c >= 0 && t->ud[c].byte != (uint8_t)s[i]) c = t->ud[c].next;
        if (c < 0) break;
        node = c;
        if (t->ud[node].piece >= 0) best = i + 1;
    }
    return best;
}

static int check_special(load_state *st, const char *what, int64_t id, int n) {
    if (id < -1 || id >= n)
        return LOAD_FAIL(st, "trainer_spec.%s = %lld is outside the vocabulary of %d pieces", what, (long long)id, n);
    return 0;
}

sp_tokenizer *sp_tokenizer_load_bytes(const uint8_t *data, size_t n, const char *name, asvr_error *err) {
    load_state st;
    memset(&st, 0, sizeof st);
    st.name = name;
    st.err = err;
    st.model_type = MODEL_UNIGRAM; /* proto defaults */
    st.unk_id = 0;
    st.bos_id = 1;
    st.eos_id = 2;
    st.pad_id = -1;
    st.add_dummy_prefix = st.remove_extra_ws = st.escape_ws = 1;
    strcpy(st.norm_name, "(unnamed)");
    sp_tokenizer *t = NULL;

    if (parse_model(&st, data, n) < 0) goto fail;
    if (st.model_type != MODEL_BPE) {
        const char *names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        LOAD_FAIL(&st, "model_type is %s; only BPE models are supported",
                  st.model_type >= 1 && st.model_type <= 4 ? names[st.model_type] : "unknown");
        goto fail;
    }
    if (st.have_charsmap || st.have_denorm_charsmap) {
        LOAD_FAIL(&st, "the normalizer '%s' uses a precompiled character map (e.g. NFKC); only the 'identity' normalizer is supported",
                  st.norm_name);
        goto fail;
    }
    if (st.treat_ws_as_suffix) {
        LOAD_FAIL(&st, "treat_whitespace_as_suffix is set; not supported");
        goto fail;
    }
    if (check_special(&st, "unk_id", st.unk_id, st.n) < 0 || check_special(&st, "bos_id", st.bos_id, st.n) < 0 ||
        check_special(&st, "eos_id", st.eos_id, st.n) < 0 || check_special(&st, "pad_id", st.pad_id, st.n) < 0)
        goto fail;
    if (st.unk_id < 0) {
        LOAD_FAIL(&st, "the model defines no unknown piece (unk_id = -1)");
        goto fail;
    }

    t = asvr_calloc(1, sizeof *t, "tokenizer");
    t->n = st.n;
    t->arena = st.arena.p;
    t->off = st.off;
    t->len = st.len;
    t->score = st.score;
    t->type = st.type;
    st.arena.p = NULL;
    st.off = st.len = NULL;
    st.score = NULL;
    st.type = NULL;
    t->unk_id = (int)st.unk_id;
    t->bos_id = (int)st.bos_id;
    t->eos_id = (int)st.eos_id;
    t->pad_id = (int)st.pad_id;
    t->byte_fallback = st.byte_fallback;
    t->add_dummy_prefix = st.add_dummy_prefix;
    t->remove_extra_ws = st.remove_extra_ws;
    t->escape_ws = st.escape_ws;
    if (st.have_unk_surface) {
        t->unk_surface = st.unk_surface.p ? st.unk_surface.p : asvr_strdup("");
        t->unk_surface_len = st.unk_surface.n;
        st.unk_surface.p = NULL;
    } else {
        t->unk_surface = asvr_strdup(" \xE2\x81\x87 ");
        t->unk_surface_len = strlen(t->unk_surface);
    }
    t->fingerprint = asvr_xxh64(data, n, 0);

    size_t nslots = 16;
    while (nslots < (size_t)t->n * 2) nslots *= 2;
    t->slots = asvr_malloc(nslots * sizeof(int32_t), "tokenizer piece index");
    memset(t->slots, 0xFF, nslots * sizeof(int32_t));
    t->mask = nslots - 1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    int n_unk = 0, ud_cap = 64;
    for (int i = 0; i < t->n; i++) {
        const char *s = t->arena + t->off[i];
        size_t l = t->len[i];
        if ((int)l > t->max_piece_len) t->max_piece_len = (int)l;
        size_t h = (size_t)piece_hash(s, l) & t->mask;
        while (t->slots[h] >= 0) {
            int32_t o = t->slots[h];
            if (t->len[o] == l && memcmp(t->arena + t->off[o], s, l) == 0) {
                LOAD_FAIL(&st, "piece %d '%.*s' duplicates piece %d (corrupt model)", i, (int)l, s, o);
                goto fail;
            }
            h = (h + 1) & t->mask;
        }
        t->slots[h] = i;
        switch (t->type[i]) {
        case SP_PIECE_UNKNOWN: n_unk++; break;
        case SP_PIECE_UNUSED: t->has_unused = 1; break;
        case SP_PIECE_BYTE: {
            int b = parse_byte_piece(s, l);
            if (b < 0) {
                LOAD_FAIL(&st, "byte piece %d is '%.*s', not <0xNN> (corrupt model)", i, (int)l, s);
                goto fail;
            }
            t->byte_id[b] = i;
            break;
        }
        case SP_PIECE_USER_DEFINED:
            if (!t->ud) {
                t->ud = asvr_malloc((size_t)ud_cap * sizeof(ud_node), "user-defined piece trie");
                t->ud[0] = (ud_node){.child = -1, .next = -1, .piece = -1, .byte = 0};
                t->n_ud = 1;
            }
            ud_insert(t, &ud_cap, s, l, i);
            break;
        default: break;
        }
    }
    t->word_split = !t->has_unused;
    for (int i = 0; i < t->n && t->word_split; i++) {
        const char *s = t->arena + t->off[i];
        for (size_t p = 1; p + SP_SPACE_LEN <= t->len[i]; p++)
            if (word_start(s, p)) {
                t->word_split = 0;
                break;
            }
    }
    if (n_unk != 1 || t->type[t->unk_id] != SP_PIECE_UNKNOWN) {
        LOAD_FAIL(&st, "expected exactly one UNKNOWN piece, at unk_id %d; found %d", t->unk_id, n_unk);
        goto fail;
    }
    if (t->byte_fallback) {
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0) {
                LOAD_FAIL(&st, "byte_fallback is set but the byte piece <0x%02X> is missing (corrupt model)", b);
                goto fail;
            }
    }
    {
        int sp_ids[3] = {t->bos_id, t->eos_id, t->unk_id};
        for (int k = 0; k < 3; k++)
            if (sp_ids[k] >= 0 && t->len[sp_ids[k]] > 0) t->special_first[(uint8_t)t->arena[t->off[sp_ids[k]]]] = 1;
    }
    /* HF strips the tokens of its unk string from "<unk>" + text (non-legacy _tokenize). */
    {
        ivec tmp = {0};
        if (sp_tokenizer_encode_sp(t, t->arena + t->off[t->unk_id], t->len[t->unk_id], 1, &tmp, err) < 0) {
            ivec_free(&tmp);
            goto fail;
        }
        t->unk_prefix_len = (int)tmp.n;
        ivec_free(&tmp);
    }
    free(st.unk_surface.p);
    return t;

fail:
    asvr_err_prefix(err, "tokenizer model '%s'", name);
    free(st.arena.p);
    free(st.off);
    free(st.len);
    free(st.score);
    free(st.type);
    free(st.unk_surface.p);
    sp_tokenizer_free(t);
    return NULL;
}

/* ---- tokenizer_config.json ---------------------------------------------------------------------- */

/* A special token given as a string or as an AddedToken object {"content": ..., "lstrip": ...}: its
 * text must be the model's piece `id`, with no stripping or normalization asked for. */
static int check_config_token(const sp_tokenizer *t, const char *key, json_t *v, int id, asvr_error *err) {
    if (!v || json_is_null(v)) return 0;
    json_t *content = json_is_object(v) ? json_object_get(v, "content") : v;
    if (!json_is_string(content)) return asvr_err_set(err, "\"%s\" must be a string or an object with a string \"content\"", key);
    if (json_is_object(v)) {
        const char *flags[] = {"lstrip", "rstrip", "single_word"};
        for (int k = 0; k < 3; k++)
            if (json_is_true(json_object_get(v, flags[k])))
                return asvr_err_set(err, "\"%s\" sets \"%s\"; only special tokens without stripping are supported", key, flags[k]);
    }
    const char *c = json_string_value(content);
    size_t cl = json_string_length(content);
    if (id < 0 || t->len[id] != cl || memcmp(t->arena + t->off[id], c, cl) != 0)
        return asvr_err_set(err, "\"%s\" is '%s' but the model's piece %d is '%.*s'; a config for another model?", key, c, id,
                            id >= 0 ? (int)t->len[id] : 0, id >= 0 ? t->arena + t->off[id] : "");
    return 0;
}

static int bool_key(json_t *o, const char *key, int dflt, int *v, asvr_error *err) {
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) {
        *v = dflt;
        return 0;
    }
    if (!json_is_boolean(j)) return asvr_err_set(err, "\"%s\" must be true or false", key);
    *v = json_is_true(j);
    return 0;
}

/* HF's LlamaTokenizer settings from a tokenizer_config.json: legacy (HF's default when the key is
 * absent: true), and checks that nothing else it sets changes the ids (add_bos_token true,
 * add_eos_token false, add_prefix_space true, added tokens = the model's own <unk>/<s>/</s>). */
static int apply_config(sp_tokenizer *t, const char *cfg_path, asvr_error *err) {
    json_error_t je;
    json_t *o = json_load_file(cfg_path, JSON_DECODE_INT_AS_REAL, &je); /* model_max_length can be 1e30 */
    if (!o) return asvr_err_set(err, "'%s': JSON error at line %d: %s", cfg_path, je.line, je.text);
    int rc = -1, legacy = 1, bos = 1, eos = 0, prefix = 1;
    if (!json_is_object(o)) {
        asvr_err_set(err, "not a JSON object");
        goto done;
    }
    if (bool_key(o, "legacy", 1, &legacy, err) < 0 || bool_key(o, "add_bos_token", 1, &bos, err) < 0 ||
        bool_key(o, "add_eos_token", 0, &eos, err) < 0 || bool_key(o, "add_prefix_space", 1, &prefix, err) < 0)
        goto done;
    if (!bos || eos || !prefix) {
        asvr_err_set(err, "\"%s\": %s is not supported (LLaVA's preprocessing expects BOS only and the prefix space)",
                     !bos ? "add_bos_token" : eos ? "add_eos_token" : "add_prefix_space", !bos || !prefix ? "false" : "true");
        goto done;
    }
    json_t *cls = json_object_get(o, "tokenizer_class");
    if (cls && !json_is_null(cls) &&
        !(json_is_string(cls) && (strcmp(json_string_value(cls), "LlamaTokenizer") == 0 ||
                                  strcmp(json_string_value(cls), "LlamaTokenizerFast") == 0))) {
        asvr_err_set(err, "\"tokenizer_class\" is %s; only LlamaTokenizer(Fast) semantics are implemented",
                     json_is_string(cls) ? json_string_value(cls) : "not a string");
        goto done;
    }
    if (check_config_token(t, "bos_token", json_object_get(o, "bos_token"), t->bos_id, err) < 0 ||
        check_config_token(t, "eos_token", json_object_get(o, "eos_token"), t->eos_id, err) < 0 ||
        check_config_token(t, "unk_token", json_object_get(o, "unk_token"), t->unk_id, err) < 0)
        goto done;
    json_t *added = json_object_get(o, "added_tokens_decoder");
    if (added && !json_is_null(added)) {
        if (!json_is_object(added)) {
            asvr_err_set(err, "\"added_tokens_decoder\" must be an object");
            goto done;
        }
        const char *key;
        json_t *v;
        json_object_foreach(added, key, v) {
            char *end = NULL;
            long id = strtol(key, &end, 10);
            char what[96];
            snprintf(what, sizeof what, "added_tokens_decoder[%s]", key);
            if (!end || *end || end == key || (id != t->bos_id && id != t->eos_id && id != t->unk_id)) {
                json_t *c = json_is_object(v) ? json_object_get(v, "content") : NULL;
                asvr_err_set(err, "%s ('%s'): added tokens other than the model's <unk>, <s> and </s> are not supported", what,
                             json_is_string(c) ? json_string_value(c) : "?");
                goto done;
            }
            if (check_config_token(t, what, v, (int)id, err) < 0) goto done;
        }
    }
    t->legacy = legacy;
    rc = 0;
done:
    json_decref(o);
    if (rc < 0) asvr_err_prefix(err, "tokenizer config '%s'", cfg_path);
    return rc;
}

sp_tokenizer *sp_tokenizer_load(const char *path, asvr_error *err) {
    uint8_t *data = NULL;
    size_t n = 0;
    if (asvr_read_file(path, &data, &n, err) < 0) {
        asvr_err_prefix(err, "tokenizer model '%s'", path);
        return NULL;
    }
    sp_tokenizer *t = sp_tokenizer_load_bytes(data, n, path, err);
    free(data);
    if (!t) return NULL;
    char *dir = asvr_path_dirname(path);
    char *cfg = asvr_path_join(dir, "tokenizer_config.json");
    free(dir);
    if (asvr_path_exists(cfg)) {
        if (apply_config(t, cfg, err) < 0) {
            free(cfg);
            sp_tokenizer_free(t);
            return NULL;
        }
        t->config_path = cfg;
    } else {
        free(cfg);
    }
    return t;
}

int sp_tokenizer_legacy(const sp_tokenizer *t) { return t->legacy; }
void sp_tokenizer_set_legacy(sp_tokenizer *t, int legacy) { t->legacy = legacy != 0; }
const char *sp_tokenizer_config_path(const sp_tokenizer *t) { return t->config_path; }

void sp_tokenizer_free(sp_tokenizer *t) {
    if (!t) return;
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->slots);
    free(t->ud);
    free(t->unk_surface);
    free(t->config_path);
    free(t);
}

int sp_tokenizer_vocab_size(const sp_tokenizer *t) { return t->n; }
uint64_t sp_tokenizer_fingerprint(const sp_tokenizer *t) { return t->fingerprint; }
void sp_tokenizer_fingerprint_hex(const sp_tokenizer *t, char out[17]) { asvr_hash_hex(t->fingerprint, out); }
int sp_tokenizer_bos_id(const sp_tokenizer *t) { return t->bos_id; }
int sp_tokenizer_eos_id(const sp_tokenizer *t) { return t->eos_id; }
int sp_tokenizer_unk_id(const sp_tokenizer *t) { return t->unk_id; }
int sp_tokenizer_pad_id(const sp_tokenizer *t) { return t->pad_id; }
int sp_tokenizer_byte_fallback(const sp_tokenizer *t) { return t->byte_fallback; }

const char *sp_tokenizer_id_to_piece(const sp_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    if (len) *len = t->len[id];
    return t->arena + t->off[id];
}

int sp_tokenizer_piece_to_id(const sp_tokenizer *t, const char *piece, size_t len) {
    return piece_lookup(t, piece, len);
}

sp_piece_type sp_tokenizer_piece_type(const sp_tokenizer *t, int id) {
    return (id < 0 || id >= t->n) ? SP_PIECE_UNKNOWN : (sp_piece_type)t->type[id];
}

float sp_tokenizer_piece_score(const sp_tokenizer *t, int id) {
    return (id < 0 || id >= t->n) ? 0.0f : t->score[id];
}

/* ---- normalization ------------------------------------------------------------------------------ */

/* One normalization unit at s[0..n): a user-defined piece, one valid UTF-8 character, or one invalid
 * byte (read as U+FFFD). Sets *out and *out_n to the unit's normalized text, returns bytes consumed. */
static size_t norm_unit(const sp_tokenizer *t, const char *s, size_t n, const char **out, size_t *out_n) {
    size_t l = ud_match(t, s, n);
    if (!l) l = utf8_valid_len((const uint8_t *)s, n);
    if (!l) {
        *out = "\xEF\xBF\xBD";
        *out_n = 3;
        return 1;
    }
    *out = s;
    *out_n = l;
    return l;
}

/* SentencePiece's identity normalizer: optional leading/trailing/repeated space removal, dummy
 * prefix, spaces escaped to U+2581. */
static void normalize(const sp_tokenizer *t, const char *s, size_t n, int dummy_prefix, buf *out) {
    out->n = 0;
    buf_reserve(out, n + n / 2 + 8);
    size_t i = 0;
    const char *u;
    size_t un;
    if (t->remove_extra_ws) {
        while (i < n) {
            size_t c = norm_unit(t, s + i, n - i, &u, &un);
            if (!(un == 1 && u[0] == ' ')) break;
            i += c;
        }
    }
    if (i == n) {
        out->p[0] = '\0';
        return;
    }
    if (dummy_prefix) {
        if (t->escape_ws) buf_add(out, SP_SPACE, SP_SPACE_LEN);
        else buf_add(out, " ", 1);
    }
    int prev_space = t->remove_extra_ws;
    while (i < n) {
        size_t c = norm_unit(t, s + i, n - i, &u, &un);
        while (prev_space && un > 0 && u[0] == ' ') {
            u++;
            un--;
        }
        if (un > 0) {
            size_t k = 0;
            while (k < un) { /* runs without spaces are copied at once */
                size_t r = k;
                while (r < un && !(t->escape_ws && u[r] == ' ')) r++;
                if (r > k) buf_add(out, u + k, r - k);
                if (r < un) buf_add(out, SP_SPACE, SP_SPACE_LEN), r++;
                k = r;
            }
            prev_space = u[un - 1] == ' ';
        }
        i += c;
        if (!t->remove_extra_ws) prev_space = 0;
    }
    if (t->remove_extra_ws) {
        const char *sp = t->escape_ws ? SP_SPACE : " ";
        size_t spn = t->escape_ws ? SP_SPACE_LEN : 1;
        while (out->n >= spn && memcmp(out->p + out->n - spn, sp, spn) == 0) out->n -= spn;
        out->p[out->n] = '\0';
    }
}

/* ---- BPE ------------------------------------------------------------------------------------------- */

typedef struct symbol {
    int32_t start, len; /* bytes of the normalized text; len 0 once merged away */
    int32_t prev, next;
    int32_t frozen;     /* user-defined pieces never merge */
} symbol;

typedef struct cand {
    float score;
    int32_t left, right;
    int32_t len; /* len of left + right when pushed; stale when that changed */
} cand;

typedef struct heap {
    cand *v;
    size_t n, cap;
} heap;

static inline int cand_before(const cand *a, const cand *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(heap *h, cand c) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->v = asvr_realloc(h->v, h->cap * sizeof(cand), "tokenizer merge queue");
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = c;
}

static cand heap_pop(heap *h) {
    cand top = h->v[0];
    cand last = h->v[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t m = (l + 1 < n && cand_before(&h->v[l + 1], &h->v[l])) ? l + 1 : l;
        if (!cand_before(&h->v[m], &last)) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (n) h->v[i] = last;
    return top;
}

/* Pieces that adjacent symbols may merge into (SentencePiece: NORMAL, USER_DEFINED, UNUSED). */
static int merge_lookup(const sp_tokenizer *t, const char *s, size_t n) {
    int id = piece_lookup(t, s, n);
    if (id < 0) return -1;
    uint8_t ty = t->type[id];
    return (ty == SP_PIECE_NORMAL || ty == SP_PIECE_USER_DEFINED || ty == SP_PIECE_UNUSED) ? id : -1;
}

typedef struct bpe_ctx {
    const sp_tokenizer *t;
    const char *text;
    symbol *sym;
    heap h;
    int32_t *rev_left; /* UNUSED piece id -> byte length of the left part it was last queued from */
} bpe_ctx;

static void maybe_push(bpe_ctx *c, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const symbol *a = &c->sym[l], *b = &c->sym[r];
    if (a->frozen || b->frozen) return;
    int32_t n = a->len + b->len;
    int id = merge_lookup(c->t, c->text + a->start, (size_t)n);
    if (id < 0) return;
    heap_push(&c->h, (cand){.score = c->t->score[id], .left = l, .right = r, .len = n});
    if (c->rev_left && c->t->type[id] == SP_PIECE_UNUSED) c->rev_left[id] = a->len;
}

/* A final piece: its id (-1 when the text is not a piece) and its span of the normalized text. */
typedef struct piece_out {
    int32_t id, start, len;
} piece_out;

typedef struct piece_list {
    piece_out *v;
    size_t n, cap;
} piece_list;

static void piece_list_push(piece_list *l, piece_out p) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = asvr_realloc(l->v, l->cap * sizeof(piece_out), "tokenizer pieces");
    }
    l->v[l->n++] = p;
}

/* Emits a final symbol; UNUSED pieces are split back into the pieces they were last queued from. */
static void emit_piece(bpe_ctx *c, int32_t start, int32_t len, piece_list *out, int depth) {
    const sp_tokenizer *t = c->t;
    int id = piece_lookup(t, c->text + start, (size_t)len);
    if (id >= 0 && t->type[id] == SP_PIECE_UNUSED && c->rev_left && c->rev_left[id] > 0 &&
        c->rev_left[id] < len && depth < 64) {
        int32_t ll = c->rev_left[id];
        emit_piece(c, start, ll, out, depth + 1);
        emit_piece(c, start + ll, len - ll, out, depth + 1);
        return;
    }
    piece_list_push(out, (piece_out){.id = id, .start = start, .len = len});
}

/* BPE merges over symbols text[from..to) (valid UTF-8), appending the final pieces to pl. */
static void bpe_segment(bpe_ctx *c, size_t from, size_t to, piece_list *pl) {
    const sp_tokenizer *t = c->t;
    const char *text = c->text;
    int32_t base = (int32_t)from; /* symbol k covers bytes starting at or after text[base + k] */
    int32_t ns = 0;
    size_t i = from;
    while (i < to) {
        size_t l = ud_match(t, text + i, to - i);
        int frozen = l > 0;
        if (!l) l = utf8_valid_len((const uint8_t *)text + i, to - i);
        if (!l) l = 1; /* not reached: normalized text is valid UTF-8 */
        int32_t k = base + ns;
        c->sym[k] = (symbol){.start = (int32_t)i, .len = (int32_t)l, .prev = k - 1, .next = k + 1, .frozen = frozen};
        ns++;
        i += l;
    }
    c->sym[base].prev = -1;
    c->sym[base + ns - 1].next = -1;
    c->h.n = 0;
    for (int32_t k = base + 1; k < base + ns; k++) maybe_push(c, k - 1, k);
    while (c->h.n) {
        cand top = heap_pop(&c->h);
        symbol *a = &c->sym[top.left], *b = &c->sym[top.right];
        if (a->len == 0 || b->len == 0 || a->len + b->len != top.len) continue; /* stale */
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0) c->sym[b->next].prev = top.left;
        maybe_push(c, a->prev, top.left);
        maybe_push(c, top.left, a->next);
    }
    for (int32_t k = base; k >= 0; k = c->sym[k].next) emit_piece(c, c->sym[k].start, c->sym[k].len, pl, 0);
}

/* ---- word cache (per sp_encoder, so per thread) ------------------------------------------------ */

/* Normalized word bytes -> ids. Only used when words merge independently and unknown pieces fall
 * back to bytes (no state crosses a word boundary), so a cached word's ids are exactly what BPE
 * would produce. Cleared when it grows past its budget. */
typedef struct wc_entry {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, ids_n;
} wc_entry;

typedef struct word_cache {
    wc_entry *tab; /* key_len == 0: empty */
    size_t cap, used;
    char *keys;
    size_t keys_n, keys_cap;
    int32_t *ids;
    size_t ids_n, ids_cap;
} word_cache;

#define WC_MAX_ENTRIES (1u << 18)
#define WC_MAX_WORD 256

static void wc_clear(word_cache *wc) {
    if (wc->tab) memset(wc->tab, 0, wc->cap * sizeof *wc->tab);
    wc->used = wc->keys_n = wc->ids_n = 0;
}

static const wc_entry *wc_find(const word_cache *wc, const char *w, size_t n, uint64_t h) {
    if (!wc->cap) return NULL;
    for (size_t i = (size_t)h & (wc->cap - 1);; i = (i + 1) & (wc->cap - 1)) {
        const wc_entry *e = &wc->tab[i];
        if (e->key_len == 0) return NULL;
        if (e->hash == h && e->key_len == n && memcmp(wc->keys + e->key_off, w, n) == 0) return e;
    }
}

static void wc_insert(word_cache *wc, const char *w, size_t n, uint64_t h, const int32_t *ids, size_t k) {
    if (wc->used + 1 > WC_MAX_ENTRIES) wc_clear(wc);
    if ((wc->used + 1) * 2 > wc->cap) {
        size_t ncap = wc->cap ? wc->cap * 2 : 4096;
        wc_entry *nt = asvr_calloc(ncap, sizeof *nt, "the tokenizer word cache");
        for (size_t i = 0; i < wc->cap; i++) {
            if (!wc->tab[i].key_len) continue;
            size_t j = (size_t)wc->tab[i].hash & (ncap - 1);
            while (nt[j].key_len) j = (j + 1) & (ncap - 1);
            nt[j] = wc->tab[i];
        }
        free(wc->tab);
        wc->tab = nt;
        wc->cap = ncap;
    }
    if (wc->keys_n + n > wc->keys_cap) {
        while (wc->keys_n + n > wc->keys_cap) wc->keys_cap = wc->keys_cap ? wc->keys_cap * 2 : 1 << 16;
        wc->keys = asvr_realloc(wc->keys, wc->keys_cap, "the tokenizer word cache");
    }
    if (wc->ids_n + k > wc->ids_cap) {
        while (wc->ids_n + k > wc->ids_cap) wc->ids_cap = wc->ids_cap ? wc->ids_cap * 2 : 1 << 14;
        wc->ids = asvr_realloc(wc->ids, wc->ids_cap * sizeof(int32_t), "the tokenizer word cache");
    }
    size_t i = (size_t)h & (wc->cap - 1);
    while (wc->tab[i].key_len) i = (i + 1) & (wc->cap - 1);
    wc->tab[i] = (wc_entry){h, (uint32_t)wc->keys_n, (uint32_t)n, (uint32_t)wc->ids_n, (uint32_t)k};
    memcpy(wc->keys + wc->keys_n, w, n);
    wc->keys_n += n;
    if (k) memcpy(wc->ids + wc->ids_n, ids, k * sizeof(int32_t));
    wc->ids_n += k;
    wc->used++;
}

static void wc_free(word_cache *wc) {
    free(wc->tab);
    free(wc->keys);
    free(wc->ids);
    memset(wc, 0, sizeof *wc);
}

/* BPE over normalized text (valid UTF-8), appending ids; unknown pieces become byte pieces (byte
 * fallback) or one unk id per run. When no piece contains "x▁" (x not "▁"), no merge can cross such
 * a place, so the text is cut there and each word is merged alone: the same result, with a small,
 * cache-resident queue. Merge order only matters within a word, and there it is unchanged. */
/* Final pieces -> ids: unknown pieces become byte pieces (byte fallback) or one unk id per run. */
static void pieces_to_ids(const sp_tokenizer *t, const char *text, const piece_list *pl, size_t from, ivec *out) {
    int prev_unk = 0;
    for (size_t j = from; j < pl->n; j++) {
        const piece_out *p = &pl->v[j];
        int is_unk = p->id < 0 || t->type[p->id] == SP_PIECE_UNKNOWN;
        if (is_unk && t->byte_fallback) {
            for (int32_t b = 0; b < p->len; b++) ivec_push(out, t->byte_id[(uint8_t)text[p->start + b]]);
        } else if (is_unk) {
            if (!prev_unk) ivec_push(out, t->unk_id);
        } else {
            ivec_push(out, p->id);
        }
        prev_unk = is_unk;
    }
}

static void bpe_encode(const sp_tokenizer *t, const char *text, size_t n, ivec *out, word_cache *wc) {
    if (n == 0) return;
    bpe_ctx c = {.t = t, .text = text};
    c.sym = asvr_malloc(n * sizeof(symbol), "tokenizer symbols");
    if (t->has_unused) {
        c.rev_left = asvr_malloc((size_t)t->n * sizeof(int32_t), "tokenizer unused-piece map");
        memset(c.rev_left, 0, (size_t)t->n * sizeof(int32_t));
    }
    piece_list pl = {0};
    if (t->word_split && wc && t->byte_fallback && !t->has_unused) {
        /* word by word through the cache */
        size_t from = 0;
        for (size_t p = 1; p <= n; p++) {
            if (p < n && !((uint8_t)text[p] == 0xE2 && p + SP_SPACE_LEN <= n && word_start(text, p))) continue;
            size_t wn = p - from;
            uint64_t h = wn <= WC_MAX_WORD ? asvr_xxh64(text + from, wn, 0x5743u) : 0;
            const wc_entry *e = wn <= WC_MAX_WORD ? wc_find(wc, text + from, wn, h) : NULL;
            if (e) {
                ivec_append(out, wc->ids + e->ids_off, e->ids_n);
            } else {
                pl.n = 0;
                bpe_segment(&c, from, p, &pl);
                size_t before = out->n;
                pieces_to_ids(t, text, &pl, 0, out);
                if (wn <= WC_MAX_WORD) wc_insert(wc, text + from, wn, h, out->v + before, out->n - before);
            }
            from = p;
        }
    } else {
        if (t->word_split) {
            size_t from = 0;
            for (size_t p = 1; p < n; p++) {
                if ((uint8_t)text[p] == 0xE2 && p + SP_SPACE_LEN <= n && word_start(text, p)) {
                    bpe_segment(&c, from, p, &pl);
                    from = p;
                }
            }
            bpe_segment(&c, from, n, &pl);
        } else {
            bpe_segment(&c, 0, n, &pl);
        }
        pieces_to_ids(t, text, &pl, 0, out);
    }
    free(c.h.v);
    free(pl.v);
    free(c.rev_left);
    free(c.sym);
}

int sp_tokenizer_encode_sp(const sp_tokenizer *t, const char *text, size_t len, int no_dummy_prefix,
                           ivec *out, asvr_error *err) {
    if (len > SP_MAX_TEXT) return asvr_err_set(err, "text of %zu bytes is too long to tokenize (limit %d)", len, SP_MAX_TEXT);
    buf norm = {0};
    normalize(t, text, len, t->add_dummy_prefix && !no_dummy_prefix, &norm);
    bpe_encode(t, norm.p, norm.n, out, NULL);
    free(norm.p);
    return 0;
}

/* ---- HF LlamaTokenizer(legacy=False) ----------------------------------------------------------- */

/* Special id whose piece text starts at s[0..n), longest first; -1 when none. */
static int special_at(const sp_tokenizer *t, const char *s, size_t n) {
    if (!t->special_first[(uint8_t)s[0]]) return -1; /* no special piece starts with this byte */
    int ids[3] = {t->bos_id, t->eos_id, t->unk_id};
    int best = -1;
    size_t best_len = 0;
    for (int k = 0; k < 3; k++) {
        int id = ids[k];
        if (id < 0) continue;
        size_t l = t->len[id];
        if (l <= n && l > best_len && memcmp(s, t->arena + t->off[id], l) == 0) {
            best = id;
            best_len = l;
        }
    }
    return best;
}

static int is_special_id(const sp_tokenizer *t, int32_t id) {
    return id >= 0 && (id == t->bos_id || id == t->eos_id || id == t->unk_id);
}

/* One chunk of text between special tokens (non-empty). */
static void encode_chunk(const sp_tokenizer *t, const char *s, size_t n, buf *scratch, ivec *tmp, ivec *out,
                         word_cache *wc) {
    tmp->n = 0;
    buf norm = {0};
    int with_prefix = (n >= SP_SPACE_LEN && memcmp(s, SP_SPACE, SP_SPACE_LEN) == 0) || s[0] == ' ';
    if (with_prefix) {
        /* HF encodes unk_text + chunk and drops the unk text's tokens, so that SentencePiece does not
         * treat the leading space as removable. */
        scratch->n = 0;
        buf_add(scratch, t->arena + t->off[t->unk_id], t->len[t->unk_id]);
        buf_add(scratch, s, n);
        normalize(t, scratch->p, scratch->n, 0, &norm);
    } else {
        normalize(t, s, n, 0, &norm);
    }
    bpe_encode(t, norm.p, norm.n, tmp, wc);
    free(norm.p);
    size_t skip = (with_prefix && tmp->n >= (size_t)t->unk_prefix_len) ? (size_t)t->unk_prefix_len : 0;
    for (size_t k = skip; k < tmp->n; k++) ivec_push(out, tmp->v[k]);
}

/* legacy=True: the text is split at the special pieces' texts (leftmost, longest first) and every
 * chunk between them is encoded by plain SentencePiece with the model's own normalizer settings
 * (dummy prefix included); "▁" in the text stays what it is. */
static int encode_legacy(const sp_tokenizer *t, word_cache *wc, const char *text, size_t len, ivec *out) {
    buf norm = {0};
    size_t i = 0;
    for (;;) {
        int sid = -1;
        size_t j = i;
        while (j < len && (sid = special_at(t, text + j, len - j)) < 0) j++;
        if (j > i) {
            normalize(t, text + i, j - i, t->add_dummy_prefix, &norm);
            bpe_encode(t, norm.p, norm.n, out, wc);
        }
        if (sid < 0) break;
        ivec_push(out, sid);
        i = j + t->len[sid];
    }
    free(norm.p);
    return 0;
}

static int encode_impl(const sp_tokenizer *t, word_cache *wc, const char *text, size_t len, int add_bos, ivec *out,
                       asvr_error *err) {
    if (len > SP_MAX_TEXT) return asvr_err_set(err, "text of %zu bytes is too long to tokenize (limit %d)", len, SP_MAX_TEXT);
    if (add_bos && t->bos_id < 0) return asvr_err_set(err, "the tokenizer model defines no BOS piece (bos_id = -1)");
    if (add_bos) ivec_push(out, t->bos_id);
    if (len == 0) return 0;
    if (t->legacy) return encode_legacy(t, wc, text, len, out);
    /* "▁" + text, with every "▁" of the text read as a space */
    buf s = {0};
    buf_reserve(&s, len + SP_SPACE_LEN);
    buf_add(&s, SP_SPACE, SP_SPACE_LEN);
    for (size_t i = 0; i < len;) {
        if (i + SP_SPACE_LEN <= len && memcmp(text + i, SP_SPACE, SP_SPACE_LEN) == 0) {
            buf_add(&s, " ", 1);
            i += SP_SPACE_LEN;
        } else {
            size_t j = i + 1;
            while (j < len && (uint8_t)text[j] != 0xE2) j++;
            buf_add(&s, text + i, j - i);
            i = j;
        }
    }
    /* split at the special pieces' texts, leftmost first; chunks between them are encoded alone */
    size_t first = out->n;
    int seen_special = 0;
    buf scratch = {0};
    ivec tmp = {0};
    size_t i = 0;
    for (;;) {
        int sid = -1;
        size_t j = i;
        while (j < s.n && (sid = special_at(t, s.p + j, s.n - j)) < 0) j++;
        if (j > i) encode_chunk(t, s.p + i, j - i, &scratch, &tmp, out, wc);
        if (sid < 0) break;
        if (!seen_special && out->n == first + 1) {
            /* tokens == ["▁", special, ...]: HF drops the lone "▁" */
            size_t pl = 0;
            const char *p = sp_tokenizer_id_to_piece(t, out->v[first], &pl);
            if (p && pl == SP_SPACE_LEN && memcmp(p, SP_SPACE, SP_SPACE_LEN) == 0) out->n = first;
        }
        seen_special = 1;
        ivec_push(out, sid);
        i = j + t->len[sid];
    }
    ivec_free(&tmp);
    free(scratch.p);
    free(s.p);
    return 0;
}

int sp_tokenizer_encode(const sp_tokenizer *t, const char *text, size_t len, int add_bos, ivec *out,
                        asvr_error *err) {
    return encode_impl(t, NULL, text, len, add_bos, out, err);
}

struct sp_encoder {
    const sp_tokenizer *t;
    word_cache wc;
};

sp_encoder *sp_encoder_new(const sp_tokenizer *t) {
    sp_encoder *e = asvr_calloc(1, sizeof *e, "a tokenizer encoder");
    e->t = t;
    return e;
}

void sp_encoder_free(sp_encoder *e) {
    if (!e) return;
    wc_free(&e->wc);
    free(e);
}

int sp_encoder_encode(sp_encoder *e, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err) {
    return encode_impl(e->t, &e->wc, text, len, add_bos, out, err);
}

/* ---- decoding ---------------------------------------------------------------------------------------- */

/* Appends bytes collected from byte pieces: valid UTF-8 as is, each invalid byte as U+FFFD. */
static void flush_bytes(buf *out, buf *bytes) {
    size_t i = 0;
    while (i < bytes->n) {
        size_t l = utf8_valid_len((const uint8_t *)bytes->p + i, bytes->n - i);
        if (l) {
            buf_add(out, bytes->p + i, l);
            i += l;
        } else {
            buf_add(out, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    bytes->n = 0;
}

/* SentencePiece decode (no dummy prefix to strip, as HF's non-legacy model) of one run of pieces.
 * Each item: an id, or -1 with literal text (a piece string that is not in the vocabulary). */
typedef struct dec_item {
    int32_t id;
    const char *lit;
    size_t lit_n;
} dec_item;

static void sp_decode_run(const sp_tokenizer *t, const dec_item *items, size_t n, buf *out, buf *bytes) {
    /* SentencePiece drops the "▁" that starts a piece while no text is out yet, when the model has
     * remove_extra_whitespaces or a dummy prefix (which HF's non-legacy tokenizer turns off in its copy
     * of the model); with the dummy prefix alone only once: a piece that lost its "▁" ends it. */
    int bos_ws = t->remove_extra_ws || (t->legacy && t->add_dummy_prefix);
    int seen = 0;
    size_t start = out->n;
    for (size_t k = 0; k < n; k++) {
        int32_t id = items[k].id;
        if (id >= 0 && t->type[id] == SP_PIECE_BYTE) {
            char b = (char)parse_byte_piece(t->arena + t->off[id], t->len[id]);
            buf_add(bytes, &b, 1);
            continue;
        }
        flush_bytes(out, bytes);
        if (seen || out->n > start) bos_ws = 0;
        seen = 0;
        if (id < 0) { /* not a piece: SentencePiece returns the text as is */
            buf_add(out, items[k].lit, items[k].lit_n);
            continue;
        }
        uint8_t ty = t->type[id];
        if (ty == SP_PIECE_CONTROL) continue;
        if (ty == SP_PIECE_UNKNOWN) {
            buf_add(out, t->unk_surface, t->unk_surface_len);
            continue;
        }
        const char *p = t->arena + t->off[id];
        size_t pl = t->len[id];
        if (bos_ws && pl >= SP_SPACE_LEN && memcmp(p, SP_SPACE, SP_SPACE_LEN) == 0) {
            p += SP_SPACE_LEN;
            pl -= SP_SPACE_LEN;
            seen = !t->remove_extra_ws;
        }
        for (size_t i = 0; i < pl;) {
            if (i + SP_SPACE_LEN <= pl && memcmp(p + i, SP_SPACE, SP_SPACE_LEN) == 0) {
                buf_add(out, " ", 1);
                i += SP_SPACE_LEN;
            } else {
                buf_add(out, p + i, 1);
                i++;
            }
        }
    }
    flush_bytes(out, bytes);
}

char *sp_tokenizer_decode(const sp_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                          size_t *out_len, asvr_error *err) {
    for (size_t k = 0; k < n; k++)
        if (ids[k] < 0 || ids[k] >= t->n) {
            asvr_err_set(err, "token id %d at position %zu is outside the vocabulary of %d pieces", ids[k], k, t->n);
            return NULL;
        }
    dec_item *items = asvr_malloc((n ? n : 1) * sizeof(dec_item), "decode items");
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (skip_special && is_special_id(t, ids[k])) continue;
        items[m++] = (dec_item){.id = ids[k], .lit = NULL, .lit_n = 0};
    }
    buf out = {0}, bytes = {0};
    buf_reserve(&out, 16);
    out.p[0] = '\0';
    if (m > 0) {
        /* HF removes the prefix "▁" of the first token, then decodes the remaining text as a piece
         * string: the piece it names, or the text itself when it names none. */
        int32_t id0 = items[0].id;
        const char *p0 = t->arena + t->off[id0];
        size_t l0 = t->len[id0];
        if (!is_special_id(t, id0) && l0 >= SP_SPACE_LEN && memcmp(p0, SP_SPACE, SP_SPACE_LEN) == 0) {
            const char *rest = p0 + SP_SPACE_LEN;
            size_t rl = l0 - SP_SPACE_LEN;
            int rid = piece_lookup(t, rest, rl);
            items[0] = (dec_item){.id = rid, .lit = rest, .lit_n = rl};
            if (rl == 0) items[0].id = -1;
        }
        size_t run = 0;
        int prev_special = 0;
        for (size_t k = 0; k < m; k++) {
            int32_t id = items[k].id;
            if (is_special_id(t, id)) {
                if (t->legacy && !prev_special && k != 0) buf_add(&out, " ", 1); /* before the run's text */
                sp_decode_run(t, items + run, k - run, &out, &bytes);
                buf_add(&out, t->arena + t->off[id], t->len[id]);
                run = k + 1;
                prev_special = 1;
            } else {
                if (prev_special && k == 1 && id >= 0) {
                    const char *p = t->arena + t->off[id];
                    if (!(t->len[id] >= SP_SPACE_LEN && memcmp(p, SP_SPACE, SP_SPACE_LEN) == 0)) buf_add(&out, " ", 1);
                }
                prev_special = 0;
            }
        }
        sp_decode_run(t, items + run, m - run, &out, &bytes);
    }
    free(bytes.p);
    free(items);
    if (out_len) *out_len = out.n;
    return out.p;
}
