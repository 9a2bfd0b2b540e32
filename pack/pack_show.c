/* asvr-pack show / info: look inside a packed store. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "base/log.h"
#include "pack.h"
#include "store/packed_store.h"
#include "text/sp_tokenizer.h"
#include "text/template.h"

/* Writes one piece as text: U+2581 → space, <0xNN> byte pieces as raw bytes. */
static void put_piece(const sp_tokenizer *tok, int32_t id, FILE *f) {
    size_t n;
    const char *p = sp_tokenizer_id_to_piece(tok, id, &n);
    if (!p) {
        fprintf(f, "<id %d>", id);
        return;
    }
    if (sp_tokenizer_piece_type(tok, id) == SP_PIECE_BYTE && n == 6) {
        fputc((int)strtol(p + 3, NULL, 16), f);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && (unsigned char)p[i] == 0xE2 && (unsigned char)p[i + 1] == 0x96 && (unsigned char)p[i + 2] == 0x81) {
            fputc(' ', f);
            i += 2;
        } else {
            fputc(p[i], f);
        }
    }
}

/* A decimal sample or source index; usage error otherwise. */
static uint64_t parse_index(const asvr_cli *cli, const char *s, int source) {
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (*end || end == s || s[0] == '-' || errno)
        asvr_cli_usage_error(cli, "N must be a %s index (a number >= 0), got '%s'", source ? "source" : "sample", s);
    return (uint64_t)n;
}

/* The store's sample whose source index (position in the input JSON) is src. Samples are written in
 * input order, so the source indices increase: binary search. -1 with err set when it is absent. */
static int find_source_index(const packed_store *ps, const char *path, uint64_t src, uint64_t *out, asvr_error *err) {
    uint64_t lo = 0, hi = packed_store_info(ps)->n_samples;
    packed_sample m;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (packed_sample_meta(ps, mid, &m, err) < 0) return -1;
        if (m.source_index < src) lo = mid + 1;
        else hi = mid;
    }
    if (lo < packed_store_info(ps)->n_samples && packed_sample_meta(ps, lo, &m, err) == 0 && m.source_index == src) {
        *out = lo;
        return 0;
    }
    return asvr_err_set(err, "'%s' has no sample from source index %llu (the input has no such record, or it was "
                             "skipped at build time: see asvr-pack build --rejects)", path, (unsigned long long)src);
}

int pack_show_main(int argc, char **argv) {
    const char *tokenizer = NULL;
    int ids = 0, by_source = 0;
    const asvr_opt opts[] = {
        {"tokenizer", ASVR_OPT_STR, &tokenizer, "MODEL", "the tokenizer.model the store was built with"},
        {"ids", ASVR_OPT_FLAG, &ids, NULL, "also print the ids and the label mask, one token a line"},
        {"source-index", ASVR_OPT_FLAG, &by_source, NULL, "N is the sample's index in the input JSON, not in the store"},
    };
    const asvr_cli cli = {"asvr-pack show", "--tokenizer MODEL [--source-index] STORE N",
                          "Prints sample N as text. Supervised spans (what the model learns to produce) are\n"
                          "wrapped in [[ ]] (green on a terminal); the image is shown as <image x P>.",
                          opts, 3, 2, 2};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    if (!tokenizer) asvr_cli_usage_error(&cli, "--tokenizer is required");
    uint64_t n = parse_index(&cli, pos[1], by_source);
    asvr_error err;
    packed_store *ps;
    if (packed_store_open(pos[0], &ps, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    if (by_source && find_source_index(ps, pos[0], n, &n, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    sp_tokenizer *tok = sp_tokenizer_load(tokenizer, &err);
    if (!tok) ASVR_FATAL("", "%s", err.msg);
    char fp[17];
    sp_tokenizer_fingerprint_hex(tok, fp);
    if (strcmp(fp, packed_store_info(ps)->tokenizer_fp) != 0)
        LOG_WARN("'%s' was built with tokenizer %s, not %s (%s): the text may be wrong", pos[0],
                 packed_store_info(ps)->tokenizer_fp, tokenizer, fp);
    packed_reader *r = packed_reader_new(ps);
    packed_sample s;
    if (packed_read_sample(r, n, &s, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    int tty = isatty(STDOUT_FILENO);
    const char *on = tty ? "\033[32m" : "[[", *off = tty ? "\033[0m" : "]]";
    printf("sample %llu (source index %llu, id '%s'), image %s, %u ids, %u positions%s%s%s%s\n", (unsigned long long)n,
           (unsigned long long)s.source_index, s.id, s.image_key ? s.image_key : "(none)", s.n_ids, s.positions,
           (s.flags & PACKED_TRUNCATED) ? ", truncated" : "", (s.flags & PACKED_MISMATCH) ? ", masked out by the length check" : "",
           (s.flags & PACKED_IMAGE_IGNORED) ? ", its image ignored (no <image> in its turns)" : "",
           (s.flags & PACKED_UNK_DROPPED) ? ", <unk> positions dropped" : "");
    int in = 0;
    for (uint32_t k = 0; k < s.n_ids; k++) {
        if (s.label_mask[k] && !in) fputs(on, stdout), in = 1;
        if (!s.label_mask[k] && in) fputs(off, stdout), in = 0;
        if (s.ids[k] == IMAGE_TOKEN_INDEX) printf("<image x %u>", packed_store_info(ps)->image_positions);
        else put_piece(tok, s.ids[k], stdout);
    }
    if (in) fputs(off, stdout);
    fputc('\n', stdout);
    if (ids)
        for (uint32_t k = 0; k < s.n_ids; k++) {
            size_t pl = 0;
            const char *p = s.ids[k] >= 0 ? sp_tokenizer_id_to_piece(tok, s.ids[k], &pl) : "<image>";
            printf("%6u %6d %d %.*s\n", k, s.ids[k], s.label_mask[k], (int)(p ? (pl ? pl : strlen(p)) : 0), p ? p : "");
        }
    packed_reader_free(r);
    packed_store_close(ps);
    sp_tokenizer_free(tok);
    free(pos);
    return ASVR_EXIT_OK;
}

/* One sample as a JSON line: index, source_index, id, image, positions, flags, ids, labels. */
static void dump_sample(uint64_t i, const packed_sample *s) {
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer((json_int_t)i));
    json_object_set_new(o, "source_index", json_integer((json_int_t)s->source_index));
    json_object_set_new(o, "id", json_string(s->id));
    json_object_set_new(o, "image", s->image_key ? json_string(s->image_key) : json_null());
    json_object_set_new(o, "positions", json_integer(s->positions));
    json_t *fl = json_array();
    static const struct {
        uint32_t bit;
        const char *name;
    } FLAGS[] = {{PACKED_TRUNCATED, "truncated"}, {PACKED_MISMATCH, "masked_out"},
                 {PACKED_IMAGE_IGNORED, "image_ignored"}, {PACKED_UNK_DROPPED, "unk_dropped"}};
    for (size_t k = 0; k < sizeof FLAGS / sizeof FLAGS[0]; k++)
        if (s->flags & FLAGS[k].bit) json_array_append_new(fl, json_string(FLAGS[k].name));
    json_object_set_new(o, "flags", fl);
    json_t *jids = json_array(), *jlab = json_array();
    for (uint32_t k = 0; k < s->n_ids; k++) {
        json_array_append_new(jids, json_integer(s->ids[k]));
        json_array_append_new(jlab, json_integer(s->label_mask[k] ? s->ids[k] : IGNORE_INDEX));
    }
    json_object_set_new(o, "ids", jids);
    json_object_set_new(o, "labels", jlab);
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    fputs(txt, stdout);
    fputc('\n', stdout);
    free(txt);
    json_decref(o);
}

int pack_dump_main(int argc, char **argv) {
    int by_source = 0;
    const asvr_opt opts[] = {
        {"source-index", ASVR_OPT_FLAG, &by_source, NULL, "the N are indices in the input JSON, not in the store"},
    };
    const asvr_cli cli = {"asvr-pack dump", "[--source-index] STORE [N...]",
                          "Writes samples as JSON lines on stdout: {\"index\", \"source_index\", \"id\", \"image\",\n"
                          "\"positions\", \"flags\", \"ids\", \"labels\"}; labels are the ids where supervised, else -100,\n"
                          "and the image is one id -200 (it becomes the image's positions). Every sample, or the N given.",
                          opts, 1, 1, -1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    uint64_t *want = asvr_malloc(sizeof(uint64_t) * (size_t)(npos > 1 ? npos - 1 : 1), "sample indices");
    for (int k = 1; k < npos; k++) want[k - 1] = parse_index(&cli, pos[k], by_source);
    asvr_error err;
    packed_store *ps;
    if (packed_store_open(pos[0], &ps, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    uint64_t n = npos > 1 ? (uint64_t)(npos - 1) : packed_store_info(ps)->n_samples;
    packed_reader *r = packed_reader_new(ps);
    int rc = ASVR_EXIT_OK;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t i = npos > 1 ? want[k] : k;
        packed_sample s;
        if ((by_source && npos > 1 && find_source_index(ps, pos[0], i, &i, &err) < 0) || packed_read_sample(r, i, &s, &err) < 0) {
            LOG_ERROR("%s", err.msg);
            rc = ASVR_EXIT_FAIL;
            break;
        }
        dump_sample(i, &s);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        LOG_ERROR("writing to stdout failed");
        rc = ASVR_EXIT_FAIL;
    }
    packed_reader_free(r);
    packed_store_close(ps);
    free(want);
    free(pos);
    return rc;
}

int pack_info_main(int argc, char **argv) {
    const asvr_cli cli = {"asvr-pack info", "STORE", "Prints the store's header and counts as JSON on stdout.", NULL, 0, 1, 1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    asvr_error err;
    packed_store *ps;
    if (packed_store_open(pos[0], &ps, &err) < 0) ASVR_FATAL("", "%s", err.msg);
    const packed_info *I = packed_store_info(ps);
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:b, s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:f}",
                          "samples", (json_int_t)I->n_samples, "rows", (json_int_t)I->n_rows, "blocks", (json_int_t)I->n_blocks,
                          "tokens", (json_int_t)I->n_tokens, "supervised_tokens", (json_int_t)I->n_supervised,
                          "positions", (json_int_t)I->n_positions, "max_len", (int)I->max_len,
                          "image_positions", (int)I->image_positions, "block_samples", (int)I->block_samples,
                          "packed", I->packed, "seed", (json_int_t)I->seed, "tokenizer_fingerprint", I->tokenizer_fp,
                          "template", I->template_name, "template_fingerprint", I->template_fp,
                          "source_fingerprint", I->source_fp, "file_bytes", (json_int_t)I->file_bytes,
                          "token_raw_bytes", (json_int_t)I->token_raw_bytes, "token_stored_bytes", (json_int_t)I->token_stored_bytes,
                          "fill", I->n_rows ? (double)I->n_positions / ((double)I->n_rows * I->max_len) : 0.0);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("%s\n", s);
    free(s);
    json_decref(o);
    packed_store_close(ps);
    free(pos);
    return ASVR_EXIT_OK;
}
