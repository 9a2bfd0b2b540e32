/* asvr-pack build: LLaVA JSON → packed store. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/progress.h"
#include "io/json_stream.h"
#include "io/safetensors.h"
#include "model/vision_tokenizer.h"
#include "pack.h"
#include "store/code_store.h"
#include "store/packed_store.h"
#include "text/sp_tokenizer.h"
#include "text/template.h"

typedef struct build_opts {
    const char *template_name, *tokenizer, *out, *codes, *stats, *rejects, *vision_tokenizer, *masking, *legacy, *no_placeholder,
        *unk_positions;
    int64_t max_len, image_positions, seed, block_samples, compress, max_errors;
    int no_packing, force;
} build_opts;

typedef struct build_counts {
    uint64_t samples, image_samples, text_samples, skipped, truncated, mismatch, no_supervision,
        missing_codes, no_placeholder, unk_samples, unk_dropped, empty;
} build_counts;

/* The packer's rules beyond the template, folded into the store's template fingerprint (0 = the rules
 * of stores made before they were recorded: <unk> kept, an image without <image> rejected). */
enum { RULE_UNK_DROP = 1u << 0, RULE_NP_IGNORE = 1u << 1, RULE_NP_PREPEND = 1u << 2 };

static int encode_adapter(void *ctx, const char *text, size_t len, int add_bos, ivec *out, asvr_error *err) {
    return sp_encoder_encode(ctx, text, len, add_bos, out, err);
}

/* xxh64 of a whole file, read in 1 MiB chunks (a mapping would count the whole file as resident). */
static int file_fingerprint(const char *path, char out[17], asvr_error *err) {
    int fd = asvr_open_input(path, 0, err); /* a regular file: it is read twice (fingerprint, then samples) */
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return asvr_err_set(err, "opening '%s': %s", path, strerror(errno));
    }
    asvr_hasher *h = asvr_hasher_new(0);
    char *buf = asvr_malloc(1 << 20, "a read buffer");
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, f)) > 0) asvr_hasher_update(h, buf, n);
    int bad = ferror(f);
    fclose(f);
    free(buf);
    asvr_hash_hex(asvr_hasher_digest(h), out);
    asvr_hasher_free(h);
    return bad ? asvr_err_set(err, "reading '%s' failed", path) : 0;
}

/* One LLaVA record → turns. Returns -1 with err naming the problem. */
static int parse_sample(json_t *e, char *id, size_t id_n, const char **image, chat_turn **turns, size_t **lens,
                        int *n_turns, asvr_error *err) {
    *turns = NULL;
    *lens = NULL;
    *n_turns = 0;
    *image = NULL;
    id[0] = 0;
    if (!json_is_object(e)) return asvr_err_set(err, "not a JSON object");
    json_t *jid = json_object_get(e, "id");
    if (json_is_string(jid)) snprintf(id, id_n, "%s", json_string_value(jid));
    else if (json_is_integer(jid)) snprintf(id, id_n, "%lld", (long long)json_integer_value(jid));
    else if (jid && !json_is_null(jid)) return asvr_err_set(err, "\"id\" must be a string or an integer");
    json_t *img = json_object_get(e, "image");
    if (img && !json_is_null(img)) {
        if (json_is_array(img) && json_array_size(img) == 1) img = json_array_get(img, 0); /* ["a.jpg"] */
        if (json_is_array(img)) return asvr_err_set(err, "\"image\" is a list of %zu; one image per sample is supported", json_array_size(img));
        if (!json_is_string(img) || json_string_length(img) == 0) return asvr_err_set(err, "\"image\" must be a non-empty string");
        if (strlen(json_string_value(img)) != json_string_length(img))
            return asvr_err_set(err, "\"image\" holds a NUL character; it cannot name a file");
        *image = json_string_value(img);
    }
    json_t *conv = json_object_get(e, "conversations");
    if (!json_is_array(conv)) return asvr_err_set(err, "\"conversations\" is missing or not an array");
    size_t n = json_array_size(conv);
    chat_turn *t = asvr_calloc(n ? n : 1, sizeof *t, "conversation turns");
    *lens = asvr_calloc(n ? n : 1, sizeof **lens, "conversation turn lengths");
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(conv, i);
        const char *from = json_string_value(json_object_get(c, "from"));
        const char *value = json_string_value(json_object_get(c, "value"));
        if (!from || !value) {
            free(t);
            free(*lens), *lens = NULL;
            return asvr_err_set(err, "turn %zu needs string \"from\" and \"value\"", i);
        }
        if (strlen(from) != json_string_length(json_object_get(c, "from"))) from = "(a string with a NUL)";
        if (strcmp(from, "human") == 0) t[i].from_human = 1;
        else if (strcmp(from, "gpt") == 0) t[i].from_human = 0;
        else {
            free(t);
            free(*lens), *lens = NULL;
            return asvr_err_set(err, "turn %zu is from '%s'; expected \"human\" or \"gpt\"", i, from);
        }
        t[i].value = value;
        (*lens)[i] = json_string_length(json_object_get(c, "value")); /* all of it: a \u0000 is text too */
    }
    *turns = t;
    *n_turns = (int)n;
    return 0;
}

static int has_placeholder(const chat_turn *turns, const size_t *lens, int n) {
    for (int i = 0; i < n; i++)
        if (lens[i] >= 7 && memmem(turns[i].value, lens[i], "<image>", 7)) return 1;
    return 0;
}

/* Cuts ids so that, with the image placeholder expanded, at most max_len positions remain (the
 * reference truncates the expanded embeddings and labels). Returns the kept positions. */
static uint32_t truncate_expanded(template_result *r, uint32_t image_positions, uint32_t max_len, int *truncated) {
    uint64_t pos = 0;
    size_t k = 0;
    for (; k < r->ids.n; k++) {
        uint64_t w = r->ids.v[k] == IMAGE_TOKEN_INDEX ? image_positions : 1;
        if (pos + w > max_len) {
            if (r->ids.v[k] == IMAGE_TOKEN_INDEX && pos < max_len) { /* a partial image stays */
                pos = max_len;
                k++;
            }
            break;
        }
        pos += w;
    }
    *truncated = k < r->ids.n;
    r->ids.n = r->labels.n = k;
    return (uint32_t)pos;
}

static void reject(FILE *rej, uint64_t index, const char *id, const char *reason) {
    LOG_WARN("sample %llu (id '%s'): %s", (unsigned long long)index, id, reason);
    if (!rej) return;
    json_t *o = json_pack("{s:I, s:s, s:s}", "index", (json_int_t)index, "id", id, "reason", reason);
    char *s = json_dumps(o, JSON_COMPACT);
    fprintf(rej, "%s\n", s);
    free(s);
    json_decref(o);
}

/* Same settings and inputs as an existing output? Then there is nothing to do. */
static int up_to_date(const char *out, const packed_info *want, int *differs, char *why, size_t n) {
    *differs = 0;
    if (!asvr_path_exists(out)) return 0;
    packed_store *ps;
    asvr_error err;
    if (packed_store_open(out, &ps, &err) < 0) {
        *differs = 1;
        snprintf(why, n, "it cannot be read (%s)", err.msg);
        return 0;
    }
    const packed_info *h = packed_store_info(ps);
    const char *d = NULL;
    if (strcmp(h->source_fp, want->source_fp)) d = "another input JSON";
    else if (strcmp(h->tokenizer_fp, want->tokenizer_fp)) d = "another tokenizer";
    else if (strcmp(h->template_fp, want->template_fp))
        d = "another template, tokenizer legacy flag, --masking, --unk-positions or --image-without-placeholder";
    else if (h->max_len != want->max_len) d = "another --max-len";
    else if (h->image_positions != want->image_positions) d = "another number of image positions";
    else if (h->packed != want->packed) d = h->packed ? "packing (now --no-packing)" : "--no-packing";
    else if (h->packed && h->seed != want->seed) d = "another --seed";
    packed_store_close(ps);
    if (d) {
        *differs = 1;
        snprintf(why, n, "it was made with %s", d);
        return 0;
    }
    return 1;
}

int pack_build_main(int argc, char **argv) {
    build_opts o = {.max_len = 2048, .seed = 0, .block_samples = 64, .compress = 3, .max_errors = -1};
    const asvr_opt opts[] = {
        {"template", ASVR_OPT_STR, &o.template_name, "NAME",
         "conversation template: plain (stage pt), vicuna_v1 (stage it), mistral_instruct, llama_2, llava_llama_2"},
        {"tokenizer", ASVR_OPT_STR, &o.tokenizer, "MODEL",
         "SentencePiece tokenizer.model of the LLM (a tokenizer_config.json beside it gives HF's legacy flag)"},
        {"legacy", ASVR_OPT_STR, &o.legacy, "auto|true|false",
         "HF LlamaTokenizer's legacy flag; auto (default): the tokenizer_config.json beside the model, else false"},
        {"masking", ASVR_OPT_STR, &o.masking, "reference|corrected",
         "labels by the reference's round arithmetic (default) or from the answers' own positions"},
        {"image-without-placeholder", ASVR_OPT_STR, &o.no_placeholder, "ignore|reject|prepend",
         "a sample with an image but no <image> in its turns: trained as text without image positions (default, "
         "what the reference does), rejected, or given \"<image>\\n\" before its first turn"},
        {"unk-positions", ASVR_OPT_STR, &o.unk_positions, "drop|keep",
         "ids equal to the pad id (<unk>, 0) in the text: dropped with their labels (default, what LLaVA's collator "
         "and model do), or kept as tokens"},
        {"out", ASVR_OPT_STR, &o.out, "FILE", "the packed store to write (atomically)"},
        {"vision-tokenizer", ASVR_OPT_STR, &o.vision_tokenizer, "FILE", "take the positions per image from this tokenizer file's config"},
        {"image-positions", ASVR_OPT_COUNT, &o.image_positions, "N", "or give them directly (taken from --codes when given)"},
        {"codes", ASVR_OPT_STR, &o.codes, "STORE", "code store: every image key must be in it (missing ones are listed)"},
        {"max-len", ASVR_OPT_COUNT, &o.max_len, "N", "positions per row, image positions included (default 2048)"},
        {"no-packing", ASVR_OPT_FLAG, &o.no_packing, NULL, "one sample per row, as the reference trains"},
        {"seed", ASVR_OPT_INT, &o.seed, "N", "seed of the packing plan (default 0)"},
        {"block-samples", ASVR_OPT_COUNT, &o.block_samples, "N", "samples per compressed block (default 64)"},
        {"compress", ASVR_OPT_INT, &o.compress, "LEVEL", "zstd level for token blocks, 0 = raw (default 3)"},
        {"max-errors", ASVR_OPT_INT, &o.max_errors, "N", "fail after more than N malformed samples (default: never; all are reported)"},
        {"rejects", ASVR_OPT_STR, &o.rejects, "FILE", "write each skipped sample as a JSON line {index, id, reason}"},
        {"stats", ASVR_OPT_STR, &o.stats, "FILE", "write a JSON summary"},
        {"force", ASVR_OPT_FLAG, &o.force, NULL, "rebuild even when --out is up to date or was made differently"},
    };
    const asvr_cli cli = {"asvr-pack build", "--template NAME --tokenizer MODEL --out FILE [options] INPUT.json[.zst]",
                          "Tokenizes every sample of a LLaVA JSON array with the template's label masking and\n"
                          "writes a packed store. A rerun with the same inputs and settings does nothing.",
                          opts, (int)(sizeof opts / sizeof opts[0]), 1, 1};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    const char *input = pos[0];
    free(pos);
    if (!o.template_name || !o.tokenizer || !o.out) asvr_cli_usage_error(&cli, "--template, --tokenizer and --out are required");
    const template_spec *tpl = template_find(o.template_name);
    if (!tpl) asvr_cli_usage_error(&cli, "unknown template '%s' (known: %s)", o.template_name, template_names());
    if (o.max_len < 8 || o.max_len > (1 << 20)) asvr_cli_usage_error(&cli, "--max-len must be in 8..1048576");
    if (o.block_samples < 1 || o.compress < 0 || o.compress > 19) asvr_cli_usage_error(&cli, "bad --block-samples or --compress");
    template_masking masking = MASKING_REFERENCE;
    if (o.masking && strcmp(o.masking, "corrected") == 0) masking = MASKING_CORRECTED;
    else if (o.masking && strcmp(o.masking, "reference") != 0)
        asvr_cli_usage_error(&cli, "--masking must be reference or corrected, not '%s'", o.masking);
    int np_mode = 1; /* 0 reject, 1 ignore the image (the reference), 2 prepend <image> */
    if (o.no_placeholder && strcmp(o.no_placeholder, "reject") == 0) np_mode = 0;
    else if (o.no_placeholder && strcmp(o.no_placeholder, "prepend") == 0) np_mode = 2;
    else if (o.no_placeholder && strcmp(o.no_placeholder, "ignore") != 0)
        asvr_cli_usage_error(&cli, "--image-without-placeholder must be ignore, reject or prepend, not '%s'", o.no_placeholder);
    int unk_drop = 1;
    if (o.unk_positions && strcmp(o.unk_positions, "keep") == 0) unk_drop = 0;
    else if (o.unk_positions && strcmp(o.unk_positions, "drop") != 0)
        asvr_cli_usage_error(&cli, "--unk-positions must be drop or keep, not '%s'", o.unk_positions);
    uint32_t rules = (unk_drop ? RULE_UNK_DROP : 0) | (np_mode == 1 ? RULE_NP_IGNORE : np_mode == 2 ? RULE_NP_PREPEND : 0);
    if (o.legacy && strcmp(o.legacy, "auto") && strcmp(o.legacy, "true") && strcmp(o.legacy, "false"))
        asvr_cli_usage_error(&cli, "--legacy must be auto, true or false, not '%s'", o.legacy);

    asvr_error err;
    code_store *codes = NULL;
    if (o.codes) {
        if (code_store_open(o.codes, &codes, &err) < 0) ASVR_FATAL("build the code store with asvr-tokenize encode first", "%s", err.msg);
        int64_t p = code_store_get_meta(codes)->positions;
        if (o.image_positions && o.image_positions != p)
            ASVR_FATAL("drop --image-positions or use a matching code store", "--image-positions %lld but '%s' has %lld positions per image",
                       (long long)o.image_positions, o.codes, (long long)p);
        o.image_positions = p;
    }
    if (o.vision_tokenizer) {
        safetensors *st;
        vtok_config vc;
        if (safetensors_open(o.vision_tokenizer, &st, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        const char *cfg = safetensors_metadata(st, VTOK_META_KEY);
        if (!cfg || vtok_config_parse(cfg, &vc, &err) < 0)
            ASVR_FATAL("pass a tokenizer file made by tools/convert_tokenizer.py", "'%s': %s", o.vision_tokenizer,
                       cfg ? err.msg : "no tokenizer config in its metadata");
        safetensors_close(st);
        int64_t p = siglip_num_patches(&vc.enc);
        if (o.image_positions && o.image_positions != p)
            ASVR_FATAL("give only one source of the image positions", "'%s' gives %lld positions per image, not %lld",
                       o.vision_tokenizer, (long long)p, (long long)o.image_positions);
        o.image_positions = p;
    }
    if (o.image_positions <= 0) asvr_cli_usage_error(&cli, "give --codes STORE, --vision-tokenizer FILE or --image-positions N");
    if (o.image_positions > 65535 || o.image_positions >= o.max_len)
        asvr_cli_usage_error(&cli, "--image-positions %lld: an image takes at most 65535 positions and fewer than --max-len (%lld)",
                             (long long)o.image_positions, (long long)o.max_len);

    sp_tokenizer *tok = sp_tokenizer_load(o.tokenizer, &err);
    if (!tok) ASVR_FATAL("pass the LLM's tokenizer.model", "%s", err.msg);
    if (o.legacy && strcmp(o.legacy, "auto")) sp_tokenizer_set_legacy(tok, strcmp(o.legacy, "true") == 0);
    LOG_INFO("tokenizer legacy=%s (%s)", sp_tokenizer_legacy(tok) ? "true" : "false",
             o.legacy && strcmp(o.legacy, "auto") ? "--legacy"
             : sp_tokenizer_config_path(tok)      ? sp_tokenizer_config_path(tok)
                                                  : "no tokenizer_config.json beside the model: HF's non-legacy mode");
    packed_info want = {0};
    want.max_len = (uint32_t)o.max_len, want.image_positions = (uint32_t)o.image_positions;
    want.packed = !o.no_packing, want.seed = (uint64_t)o.seed;
    sp_tokenizer_fingerprint_hex(tok, want.tokenizer_fp);
    template_fingerprint_rules(tpl, sp_tokenizer_legacy(tok), masking, rules, want.template_fp);
    if (file_fingerprint(input, want.source_fp, &err) < 0) ASVR_FATAL("check the input path", "%s", err.msg);
    int differs;
    char why[1200];
    if (!o.force && up_to_date(o.out, &want, &differs, why, sizeof why)) {
        LOG_INFO("'%s' is up to date (same input, tokenizer, template and settings); nothing to do", o.out);
        asvr_atomic_reclaim(o.out);
        if (o.rejects) asvr_atomic_reclaim(o.rejects);
        sp_tokenizer_free(tok);
        code_store_close(codes);
        return ASVR_EXIT_OK;
    }
    if (!o.force && differs)
        ASVR_FATAL("remove it, write elsewhere, or pass --force to rebuild", "'%s' exists and %s", o.out, why);

    LOG_INFO("pack: %s → %s | template %s | tokenizer %s (%d pieces, %s) | max_len %lld, image positions %lld, %s",
             input, o.out, tpl->name, o.tokenizer, sp_tokenizer_vocab_size(tok), want.tokenizer_fp,
             (long long)o.max_len, (long long)o.image_positions,
             o.no_packing ? "one sample per row" : "packed rows");

    json_stream *js;
    if (json_stream_open(input, &js, &err) < 0) ASVR_FATAL("check the input path", "%s", err.msg);
    packed_writer_opts wo = {(uint32_t)o.max_len, (uint32_t)o.image_positions, (uint32_t)o.block_samples,
                             (int)o.compress, !o.no_packing, (uint64_t)o.seed, want.tokenizer_fp, tpl->name,
                             want.template_fp, want.source_fp};
    packed_writer *w;
    if (packed_writer_open(o.out, &wo, &w, &err) < 0) ASVR_FATAL("check that the output folder exists and is writable", "%s", err.msg);
    FILE *rej = NULL;
    asvr_atomic_file rej_file;
    if (o.rejects) {
        if (asvr_atomic_open(&rej_file, o.rejects, &err) < 0) ASVR_FATAL("", "%s", err.msg);
        rej = rej_file.fp;
    }
    sp_encoder *spe = sp_encoder_new(tok);
    text_encoder enc = {spe, encode_adapter, sp_tokenizer_bos_id(tok), sp_tokenizer_eos_id(tok), 0, sp_tokenizer_legacy(tok)};
    enc.pad_id = sp_tokenizer_unk_id(tok) >= 0 ? sp_tokenizer_unk_id(tok) : 0; /* LLaVA: pad = unk */

    build_counts c = {0};
    uint8_t *mask = NULL;
    size_t mask_cap = 0;
    asvr_progress *bar = asvr_progress_begin("pack", json_stream_file_size(js), "B");
    uint64_t last_pos = 0;
    double t0 = asvr_now();
    int failed = 0;
    for (;;) {
        json_t *e;
        int r = json_stream_next(js, &e, &err);
        uint64_t fp = json_stream_file_pos(js);
        asvr_progress_add(bar, fp - last_pos);
        last_pos = fp;
        if (r == 0) break;
        uint64_t index = json_stream_index(js);
        char id[256];
        if (r < 0) {
            c.skipped++;
            reject(rej, index, "", err.msg);
            if (r == -2) {
                failed = 1; /* the array itself is broken: nothing after this point can be trusted */
                LOG_ERROR("%s", err.msg);
                break;
            }
        } else {
            const char *image;
            chat_turn *turns;
            size_t *lens;
            int n_turns;
            template_result tr;
            char *prepended = NULL;
            int bad = parse_sample(e, id, sizeof id, &image, &turns, &lens, &n_turns, &err) < 0;
            if (!bad && image && np_mode == 2 && !has_placeholder(turns, lens, n_turns)) {
                c.no_placeholder++;
                if (n_turns > 0) {
                    int k = turns[0].from_human ? 0 : (n_turns > 1 ? 1 : 0);
                    size_t vl = lens[k]; /* all of the value: a NUL inside is text */
                    prepended = asvr_malloc(vl + 9, "a turn");
                    memcpy(prepended, "<image>\n", 8);
                    memcpy(prepended + 8, turns[k].value, vl);
                    prepended[8 + vl] = 0;
                    turns[k].value = prepended;
                    lens[k] = vl + 8;
                }
            }
            if (!bad && n_turns == 0) c.empty++;
            if (!bad && template_apply_n(tpl, &enc, turns, lens, n_turns, image != NULL, (int)o.max_len, masking, &tr,
                                         &err) < 0)
                bad = 1;
            uint32_t extra_flags = 0;
            if (!bad && image && tr.n_images == 0) {
                /* the reference tokenizes it as an image sample and trains it as text: no image positions */
                if (np_mode != 2) c.no_placeholder++;
                if (np_mode == 1) {
                    image = NULL;
                    extra_flags |= PACKED_IMAGE_IGNORED;
                } else {
                    bad = 1;
                    asvr_err_set(&err, "it has an image ('%s') but no <image> in its turns (--image-without-placeholder "
                                       "ignore trains it as text, as the reference does; prepend adds one)", image);
                    template_result_free(&tr);
                }
            }
            if (bad) {
                c.skipped++;
                reject(rej, index, id, err.msg);
            } else {
                size_t dropped = template_collate(&tr, enc.pad_id, (int)o.max_len, unk_drop);
                if (dropped && unk_drop) extra_flags |= PACKED_UNK_DROPPED;
                c.unk_samples += dropped > 0;
                c.unk_dropped += dropped;
                int cut;
                uint32_t positions = truncate_expanded(&tr, (uint32_t)o.image_positions, (uint32_t)o.max_len, &cut);
                if (tr.ids.n > mask_cap) {
                    mask_cap = tr.ids.n * 2;
                    mask = asvr_realloc(mask, mask_cap, "a label mask");
                }
                uint32_t sup = 0;
                for (size_t k = 0; k < tr.ids.n; k++) sup += mask[k] = tr.labels.v[k] != IGNORE_INDEX;
                uint32_t flags = extra_flags | (tr.mismatch ? PACKED_MISMATCH : 0) | ((cut || tr.truncated) ? PACKED_TRUNCATED : 0);
                if (packed_writer_add(w, index, id, image, tr.ids.v, mask, (uint32_t)tr.ids.n, positions, flags, &err) < 0) {
                    LOG_ERROR("%s", err.msg);
                    failed = 1;
                }
                c.samples++;
                c.image_samples += image != NULL;
                c.text_samples += image == NULL;
                c.truncated += (cut || tr.truncated);
                c.mismatch += tr.mismatch;
                c.no_supervision += sup == 0;
                if (image && codes && !code_store_has(codes, image)) {
                    if (c.missing_codes < 20) LOG_WARN("sample %llu (id '%s'): image '%s' has no codes in '%s'",
                                                       (unsigned long long)index, id, image, o.codes);
                    c.missing_codes++;
                }
                template_result_free(&tr);
            }
            free(prepended);
            free(turns);
            free(lens);
            json_decref(e);
        }
        if (o.max_errors >= 0 && c.skipped > (uint64_t)o.max_errors) {
            LOG_ERROR("%llu malformed samples, more than --max-errors %lld", (unsigned long long)c.skipped, (long long)o.max_errors);
            failed = 1;
        }
        if (failed) break;
    }
    asvr_progress_end(bar);
    json_stream_close(js);
    free(mask);
    if (codes && c.missing_codes) {
        LOG_ERROR("%llu image(s) have no codes in '%s'%s", (unsigned long long)c.missing_codes, o.codes,
                  c.missing_codes > 20 ? " (first 20 listed)" : "");
        failed = 1;
    }
    if (rej) {
        if (failed) asvr_atomic_abort(&rej_file);
        else if (asvr_atomic_commit(&rej_file, &err) < 0) LOG_ERROR("%s", err.msg), failed = 1;
    }
    packed_info info;
    if (failed) {
        packed_writer_abort(w);
        LOG_ERROR("no output written; '%s' is unchanged", o.out);
    } else if (packed_writer_finish(w, &info, &err) < 0) {
        LOG_ERROR("%s", err.msg);
        failed = 1;
    }
    double secs = asvr_now() - t0;
    if (!failed) {
        double fill = info.n_rows ? (double)info.n_positions / ((double)info.n_rows * (double)info.max_len) : 0;
        LOG_INFO("packed %llu samples (%llu with an image, %llu text-only) into %llu rows, fill %.3f; %llu tokens, "
                 "%llu supervised; %llu truncated, %llu masked out by the length check, %llu skipped; %.1f s (%.0f samples/s)",
                 (unsigned long long)c.samples, (unsigned long long)c.image_samples, (unsigned long long)c.text_samples,
                 (unsigned long long)info.n_rows, fill, (unsigned long long)info.n_tokens,
                 (unsigned long long)info.n_supervised, (unsigned long long)c.truncated,
                 (unsigned long long)c.mismatch, (unsigned long long)c.skipped, secs, secs > 0 ? (double)c.samples / secs : 0);
        if (c.no_placeholder)
            LOG_INFO("%llu samples had an image but no <image> (--image-without-placeholder %s)",
                     (unsigned long long)c.no_placeholder, o.no_placeholder ? o.no_placeholder : "ignore");
        if (c.unk_samples)
            LOG_INFO("%llu samples had the pad id (<unk>) in their text: %llu positions %s (--unk-positions %s)",
                     (unsigned long long)c.unk_samples, (unsigned long long)c.unk_dropped, unk_drop ? "dropped" : "kept",
                     unk_drop ? "drop" : "keep");
        LOG_INFO("token data: %.1f MiB raw, %.1f MiB stored (ratio %.2f)", (double)info.token_raw_bytes / 1048576.0,
                 (double)info.token_stored_bytes / 1048576.0,
                 info.token_stored_bytes ? (double)info.token_raw_bytes / (double)info.token_stored_bytes : 0);
        if (o.stats) {
            json_t *s = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                                  "input", input, "output", o.out, "samples", (json_int_t)c.samples,
                                  "image_samples", (json_int_t)c.image_samples, "text_samples", (json_int_t)c.text_samples,
                                  "rows", (json_int_t)info.n_rows, "positions", (json_int_t)info.n_positions, "fill", fill,
                                  "tokens", (json_int_t)info.n_tokens, "supervised_tokens", (json_int_t)info.n_supervised,
                                  "truncated", (json_int_t)c.truncated, "masked_out", (json_int_t)c.mismatch,
                                  "no_supervision", (json_int_t)c.no_supervision, "skipped", (json_int_t)c.skipped,
                                  "token_raw_bytes", (json_int_t)info.token_raw_bytes,
                                  "token_stored_bytes", (json_int_t)info.token_stored_bytes, "seconds", secs);
            json_object_set_new(s, "image_without_placeholder", json_integer((json_int_t)c.no_placeholder));
            json_object_set_new(s, "image_without_placeholder_mode",
                                json_string(np_mode == 0 ? "reject" : np_mode == 1 ? "ignore" : "prepend"));
            json_object_set_new(s, "unk_samples", json_integer((json_int_t)c.unk_samples));
            json_object_set_new(s, "unk_positions", json_string(unk_drop ? "drop" : "keep"));
            json_object_set_new(s, unk_drop ? "unk_dropped" : "unk_kept", json_integer((json_int_t)c.unk_dropped));
            json_object_set_new(s, "empty_conversations", json_integer((json_int_t)c.empty));
            json_object_set_new(s, "masking", json_string(masking == MASKING_CORRECTED ? "corrected" : "reference"));
            json_object_set_new(s, "tokenizer_legacy", json_boolean(sp_tokenizer_legacy(tok)));
            asvr_stats_write(o.stats, s);
            json_decref(s);
        }
    }
    sp_encoder_free(spe);
    sp_tokenizer_free(tok);
    code_store_close(codes);
    return failed ? ASVR_EXIT_FAIL : ASVR_EXIT_OK;
}
