/* image_list.c — see image_list.h. */
#include "image_list.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "base/hash.h"
#include "base/log.h"
#include "io/json_stream.h"

static void image_list_add(image_list *k, const char *s) {
    if ((k->n + 1) * 2 > k->nslots) {
        size_t ns = k->nslots ? k->nslots * 2 : 1024;
        size_t *sl = asvr_calloc(ns, sizeof *sl, "the image key set");
        for (size_t i = 0; i < k->n; i++) {
            size_t h = (size_t)asvr_xxh64(k->keys[i], strlen(k->keys[i]), 0) & (ns - 1);
            while (sl[h]) h = (h + 1) & (ns - 1);
            sl[h] = i + 1;
        }
        free(k->slots);
        k->slots = sl;
        k->nslots = ns;
    }
    size_t h = (size_t)asvr_xxh64(s, strlen(s), 0) & (k->nslots - 1);
    while (k->slots[h]) {
        if (strcmp(k->keys[k->slots[h] - 1], s) == 0) return;
        h = (h + 1) & (k->nslots - 1);
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 1024;
        k->keys = asvr_realloc(k->keys, k->cap * sizeof *k->keys, "the image key list");
    }
    k->keys[k->n] = asvr_strdup(s);
    k->slots[h] = ++k->n;
}

void image_list_free(image_list *k) {
    for (size_t i = 0; i < k->n; i++) free(k->keys[i]);
    free(k->keys);
    free(k->slots);
}

int image_list_read_json(const char *path, image_list *k, asvr_error *err) {
    json_stream *js;
    if (json_stream_open(path, &js, err) < 0) return -1;
    json_t *e;
    int r;
    uint64_t bad = 0;
    while ((r = json_stream_next(js, &e, err)) != 0) {
        if (r == -2) {
            json_stream_close(js);
            return -1;
        }
        if (r < 0) {
            LOG_WARN("%s", err->msg);
            bad++;
            continue;
        }
        json_t *img = json_object_get(e, "image");
        if (json_is_array(img) && json_array_size(img) == 1) img = json_array_get(img, 0); /* ["a.jpg"], as asvr-pack */
        if (json_is_string(img) && json_string_length(img) > 0) image_list_add(k, json_string_value(img));
        json_decref(e);
    }
    json_stream_close(js);
    if (bad) LOG_WARN("'%s': %llu malformed samples were skipped while collecting images", path, (unsigned long long)bad);
    return 0;
}

int image_list_read_file(const char *path, image_list *k, asvr_error *err) {
    uint8_t *data;
    size_t n;
    if (asvr_read_file(path, &data, &n, err) < 0) return -1;
    char *save = NULL;
    for (char *line = strtok_r((char *)data, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ' || *line == '\t') line++;
        size_t len = strlen(line);
        while (len && (line[len - 1] == ' ' || line[len - 1] == '\t')) line[--len] = 0;
        if (len && line[0] != '#') image_list_add(k, line);
    }
    free(data);
    return 0;
}

int image_list_parse_rgb(const char *s, uint8_t out[3]) {
    int v[3];
    char tail;
    if (sscanf(s, "%d,%d,%d%c", &v[0], &v[1], &v[2], &tail) != 3) return -1;
    for (int i = 0; i < 3; i++) {
        if (v[i] < 0 || v[i] > 255) return -1;
        out[i] = (uint8_t)v[i];
    }
    return 0;
}

