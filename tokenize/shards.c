/* shards.c — see shards.h. */
#include "shards.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"

void encode_part_select(encode_part *p, const image_list *list, const asvr_shard *s) {
    memset(p, 0, sizeof *p);
    p->keys = asvr_malloc(sizeof(char *) * (list->n ? list->n : 1), "the part's image list");
    if (!s) {
        memcpy(p->keys, list->keys, sizeof(char *) * list->n);
        p->n = list->n;
        return;
    }
    p->sharded = 1;
    p->rec.index = s->index;
    p->rec.count = s->count;
    p->rec.list_images = (long long)list->n;
    asvr_hasher *h = asvr_hasher_new(0);
    for (size_t i = 0; i < list->n; i++) {
        asvr_hasher_update(h, list->keys[i], strlen(list->keys[i]) + 1); /* the key and its NUL */
        if (asvr_shard_owns(s, i)) p->keys[p->n++] = list->keys[i];
    }
    asvr_hash_hex(asvr_hasher_digest(h), p->rec.list_fingerprint);
    asvr_hasher_free(h);
}

void encode_part_free(encode_part *p) {
    free(p->keys);
    memset(p, 0, sizeof *p);
}

char *encode_part_out(const char *out, const asvr_shard *s) {
    char tag[64];
    asvr_shard_tag(s, tag, sizeof tag);
    size_t n = strlen(out) + strlen(tag) + 16;
    char *path = asvr_malloc(n, "a path");
    snprintf(path, n, "%s.shard-%s", out, tag);
    return path;
}

char *shard_record_json(const shard_record *r) {
    json_t *o = json_pack("{s:i, s:i, s:s, s:I}", "count", r->count, "index", r->index, "list_fingerprint",
                          r->list_fingerprint, "list_images", (json_int_t)r->list_images);
    CHECK(o != NULL, "", "building the shard record");
    char *s = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    CHECK(s != NULL, "", "serialising the shard record");
    return s;
}

int shard_record_parse(const char *json, shard_record *r, asvr_error *err) {
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    if (!o) return asvr_err_set(err, "shard record is not JSON: %s", je.text);
    const char *fp = NULL;
    json_int_t images = 0;
    memset(r, 0, sizeof *r);
    int rc = json_unpack_ex(o, &je, 0, "{s:i, s:i, s:s, s:I}", "count", &r->count, "index", &r->index,
                            "list_fingerprint", &fp, "list_images", &images);
    if (rc == 0) {
        snprintf(r->list_fingerprint, sizeof r->list_fingerprint, "%s", fp);
        r->list_images = (long long)images;
    }
    json_decref(o);
    if (rc != 0) return asvr_err_set(err, "shard record: %s", je.text);
    if (r->count < 1 || r->index < 0 || r->index >= r->count || r->list_images < 0)
        return asvr_err_set(err, "shard record: part %d of %d is out of range", r->index, r->count);
    return 0;
}

void shard_record_describe(const shard_record *r, char *buf, size_t n) {
    snprintf(buf, n, "part %d of %d of a list of %lld images (list %s)", r->index, r->count, r->list_images,
             r->list_fingerprint);
}

int encode_part_check(code_store *cs, const char *path, const encode_part *p, int writable, asvr_error *err) {
    char *have = NULL;
    int r = code_store_get_info(cs, "shard", &have, err);
    if (r < 0) return -1;
    char want_s[256], have_s[256];
    if (p->sharded) shard_record_describe(&p->rec, want_s, sizeof want_s);
    if (r == 1) {
        if (!p->sharded) return 0;
        if (code_store_count(cs) == 0 && writable) {
            char *js = shard_record_json(&p->rec);
            int w = code_store_put_info(cs, "shard", js, err);
            free(js);
            return w;
        }
        return asvr_err_set(err, "'%s' was written without --shard, refusing to mix: this run encodes %s. Write each "
                                 "part to its own store",
                            path, want_s);
    }
    shard_record rec;
    int pr = shard_record_parse(have, &rec, err);
    free(have);
    if (pr < 0) return asvr_err_prefix(err, "'%s'", path);
    shard_record_describe(&rec, have_s, sizeof have_s);
    if (!p->sharded)
        return asvr_err_set(err, "'%s' holds %s, refusing to mix: this run encodes the whole list. Write it to its own "
                                 "store (or use the same --shard)",
                            path, have_s);
    if (rec.index != p->rec.index || rec.count != p->rec.count || rec.list_images != p->rec.list_images ||
        strcmp(rec.list_fingerprint, p->rec.list_fingerprint) != 0)
        return asvr_err_set(err, "'%s' holds %s, refusing to mix: this run encodes %s. Write it to a new store", path,
                            have_s, want_s);
    return 0;
}
