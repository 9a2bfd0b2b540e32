/* asvr-pack show / info: look inside a packed store. */
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

int pack_show_main(int argc, char **argv) {
    const char *tokenizer = NULL;
    int ids = 0;
    const asvr_opt opts[] = {
        {"tokenizer", ASVR_OPT_STR, &tokenizer, "MODEL", "the tokenizer.model the store was built with"},
        {"ids", ASVR_OPT_FLAG, &ids, NULL, "also print the ids and the label mask, one token a line"},
    };
    const asvr_cli cli = {"asvr-pack show", "--tokenizer MODEL STORE N",
                          "Prints sample N as text. Supervised spans (what the model learns to produce) are\n"
                          "wrapped in [[ ]] (green on a terminal); the image is shown as <image x P>.",
                          opts, 2, 2, 2};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    if (!tokenizer) asvr_cli_usage_error(&cli, "--tokenizer is required");
    char *end;
    unsigned long long n = strtoull(pos[1], &end, 10);
    if (*end || end == pos[1]) asvr_cli_usage_error(&cli, "N must be a sample index, got '%s'", pos[1]);
    asvr_error err;
    packed_store *ps;
    if (packed_store_open(pos[0], &ps, &err) < 0) ASVR_FATAL("", "%s", err.msg);
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
    printf("sample %llu (source index %llu, id '%s'), image %s, %u ids, %u positions%s%s\n", n,
           (unsigned long long)s.source_index, s.id, s.image_key ? s.image_key : "(none)", s.n_ids, s.positions,
           (s.flags & PACKED_TRUNCATED) ? ", truncated" : "", (s.flags & PACKED_MISMATCH) ? ", masked out by the length check" : "");
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
