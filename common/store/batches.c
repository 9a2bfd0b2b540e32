#include "store/batches.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/fsutil.h"
#include "io/image.h"
#include "text/template.h"

struct data_loader {
    data_config c;
    packed_store *ps;
    packed_reader *pr;
    code_store *cs, *cs_app;
    int64_t rows;
    uint64_t *perm;
    int64_t epoch, index;
    image_policy policy;
    int exif; /* the code store's: the images are prepared as its codes were */
};

static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void shuffle(data_loader *d) {
    for (int64_t i = 0; i < d->rows; i++) d->perm[i] = (uint64_t)i;
    uint64_t s = d->c.seed ^ (0xA5A5A5A5ULL * (uint64_t)(d->epoch + 1));
    for (int64_t i = d->rows; i > 1; i--) {
        uint64_t j = sm64(&s) % (uint64_t)i, t = d->perm[i - 1];
        d->perm[i - 1] = d->perm[j], d->perm[j] = t;
    }
}

int data_open(const data_config *c, data_loader **out, asvr_error *err) {
    *out = NULL;
    data_loader *d = asvr_calloc(1, sizeof *d, "the data loader");
    d->c = *c;
    if (packed_store_open(c->packed, &d->ps, err) < 0) goto fail;
    if (code_store_open(c->codes, &d->cs, err) < 0) goto fail;
    if (c->codes_app) {
        if (code_store_open(c->codes_app, &d->cs_app, err) < 0) goto fail;
        const code_store_meta *a = code_store_get_meta(d->cs_app), *s0 = code_store_get_meta(d->cs);
        if (a->positions != s0->positions || strcmp(a->policy, s0->policy) != 0 || a->image_size != s0->image_size ||
            a->input_size != s0->input_size || memcmp(a->pad, s0->pad, 3) != 0 || !a->exif != !s0->exif) {
            asvr_err_set(err, "'%s' (%d positions, %s %d,%d,%d, %d px from %d px%s) does not match '%s' (%d positions, %s "
                              "%d,%d,%d, %d px from %d px%s)",
                         c->codes_app, a->positions, a->policy, a->pad[0], a->pad[1], a->pad[2], a->image_size,
                         a->input_size, a->exif ? ", EXIF" : "", c->codes, s0->positions, s0->policy, s0->pad[0], s0->pad[1],
                         s0->pad[2], s0->image_size, s0->input_size, s0->exif ? ", EXIF" : "");
            goto fail;
        }
    }
    const code_store_meta *cm = code_store_get_meta(d->cs);
    if (c->image_size > 0 && cm->input_size != c->image_size) {
        if (cm->input_size != cm->image_size)
            asvr_err_set(err, "'%s' holds the codes of images prepared at %d px (%s to the tokenizer's %d), but the model "
                              "takes %d px images: encode a store at the model's input size", c->codes, cm->input_size,
                         cm->downsample, cm->image_size, c->image_size);
        else
            asvr_err_set(err, "'%s' holds the codes of images prepared at %d px, but the model takes %d px images (S2 "
                              "scales): encode them with --input-size %d --downsample bilinear", c->codes, cm->input_size,
                         c->image_size, c->image_size);
        goto fail;
    }
    const packed_info *I = packed_store_info(d->ps);
    const code_store_meta *m = code_store_get_meta(d->cs);
    if ((int)I->image_positions != m->positions) {
        asvr_err_set(err, "'%s' was packed for %u positions per image but '%s' has %d: pack with --codes %s",
                     c->packed, I->image_positions, c->codes, m->positions, c->codes);
        goto fail;
    }
    if (image_policy_parse(m->policy, &d->policy) < 0) {
        asvr_err_set(err, "'%s': unknown preprocessing policy '%s'", c->codes, m->policy);
        goto fail;
    }
    /* The reference computes the codes from the very pixels the tower gets: the same pad colour. */
    if (d->policy == IMAGE_POLICY_PAD && c->need_pixels && memcmp(m->pad, c->pad, 3) != 0) {
        asvr_err_set(err, "'%s' holds the codes of images padded with %d,%d,%d, but the model pads with %d,%d,%d "
                          "(int(image_mean x 255), as the reference): encode a store with --pad %d,%d,%d",
                     c->codes, m->pad[0], m->pad[1], m->pad[2], c->pad[0], c->pad[1], c->pad[2], c->pad[0], c->pad[1],
                     c->pad[2]);
        goto fail;
    }
    d->exif = m->exif;
    d->pr = packed_reader_new(d->ps);
    d->rows = (int64_t)I->n_rows;
    /* every image needs its codes: check them all now rather than fail mid-run */
    uint64_t missing = 0;
    for (uint64_t i = 0; i < I->n_samples; i++) {
        packed_sample s;
        if (packed_read_sample(d->pr, i, &s, err) < 0) goto fail;
        if (s.image_key && (!code_store_has(d->cs, s.image_key) || (d->cs_app && !code_store_has(d->cs_app, s.image_key)))) {
            if (!missing)
                asvr_err_set(err, "image '%s' of sample %llu (id '%s') has no codes in '%s'", s.image_key,
                             (unsigned long long)s.source_index, s.id,
                             code_store_has(d->cs, s.image_key) ? c->codes_app : c->codes);
            missing++;
        }
    }
    if (missing) {
        asvr_err_prefix(err, "%llu image(s) without codes, e.g.", (unsigned long long)missing);
        goto fail;
    }
    if (d->rows == 0) {
        asvr_err_set(err, "'%s' holds no rows", c->packed);
        goto fail;
    }
    d->perm = asvr_malloc(sizeof(uint64_t) * (size_t)d->rows, "the row order");
    shuffle(d);
    *out = d;
    return 0;
fail:
    data_close(d);
    return -1;
}

void data_close(data_loader *d) {
    if (!d) return;
    packed_reader_free(d->pr);
    packed_store_close(d->ps);
    code_store_close(d->cs);
    code_store_close(d->cs_app);
    free(d->perm);
    free(d);
}

int64_t data_rows(const data_loader *d) { return d->rows; }
int64_t data_samples(const data_loader *d) { return (int64_t)packed_store_info(d->ps)->n_samples; }
const char *data_packed_fingerprint(const data_loader *d) { return packed_store_info(d->ps)->source_fp; }
const char *data_codes_fingerprint(const data_loader *d) { return code_store_get_meta(d->cs)->tokenizer_fingerprint; }
const char *data_codes_app_fingerprint(const data_loader *d) {
    return d->cs_app ? code_store_get_meta(d->cs_app)->tokenizer_fingerprint : NULL;
}
int data_max_len(const data_loader *d) { return (int)packed_store_info(d->ps)->max_len; }
void data_get_cursor(const data_loader *d, int64_t *epoch, int64_t *index) { *epoch = d->epoch, *index = d->index; }

void data_set_cursor(data_loader *d, int64_t epoch, int64_t index) {
    d->epoch = epoch;
    d->index = index;
    shuffle(d);
}

void train_batch_free(train_batch *b) {
    free(b->ids), free(b->labels), free(b->pos), free(b->seg), free(b->image_pos), free(b->codes), free(b->pixels);
    free(b->codes_app);
    memset(b, 0, sizeof *b);
}

/* ---- images, decoded by a few threads ---- */

typedef struct img_job {
    data_loader *d;
    char **keys;
    int n;
    _Atomic int next;
    _Atomic int failed;
    asvr_error err;
    pthread_mutex_t mu;
    float *pixels;
} img_job;

static void *img_worker(void *arg) {
    img_job *j = arg;
    const data_config *c = &j->d->c;
    int S = c->image_size;
    uint8_t *u8 = asvr_malloc((size_t)S * S * 3, "a preprocessed image");
    image_decode_opts dopts;
    image_decode_opts_default(&dopts);
    dopts.apply_exif_orientation = j->d->exif;
    image_preprocess_opts popts;
    image_preprocess_opts_default(&popts);
    popts.policy = j->d->policy;
    popts.size = S;
    memcpy(popts.pad, c->pad, 3);
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n || atomic_load(&j->failed)) break;
        char *path = asvr_path_join(c->image_root, j->keys[i]);
        image_rgb img = {0};
        asvr_error err;
        if (image_decode_file(path, &dopts, &img, &err) < 0 || image_preprocess(&img, &popts, u8, &err) < 0) {
            pthread_mutex_lock(&j->mu);
            if (!atomic_exchange(&j->failed, 1)) j->err = err;
            pthread_mutex_unlock(&j->mu);
        } else {
            image_normalize_chw(u8, S, S, c->mean, c->std, j->pixels + (size_t)i * 3 * S * S);
        }
        image_free(&img);
        free(path);
    }
    free(u8);
    return NULL;
}

static int load_images(data_loader *d, char **keys, int n, float *pixels, asvr_error *err) {
    img_job j = {.d = d, .keys = keys, .n = n, .pixels = pixels};
    pthread_mutex_init(&j.mu, NULL);
    int T = d->c.threads > 0 ? d->c.threads : 1;
    if (T > n) T = n;
    pthread_t tid[64];
    if (T > 64) T = 64;
    for (int t = 0; t < T; t++) CHECK(pthread_create(&tid[t], NULL, img_worker, &j) == 0, "", "starting an image thread");
    for (int t = 0; t < T; t++) pthread_join(tid[t], NULL);
    pthread_mutex_destroy(&j.mu);
    if (j.failed) {
        *err = j.err;
        return -1;
    }
    return 0;
}

/* ---- batches ---- */

int data_next(data_loader *d, train_batch *b, asvr_error *err) { return data_next_ex(d, b, 1, err); }

int data_next_ex(data_loader *d, train_batch *b, int pixels, asvr_error *err) {
    memset(b, 0, sizeof *b);
    const packed_info *I = packed_store_info(d->ps);
    const code_store_meta *m = code_store_get_meta(d->cs);
    if (d->index >= d->rows) {
        d->epoch++;
        d->index = 0;
        shuffle(d);
    }
    int B = d->c.rows_per_batch;
    if (B > d->rows - d->index) B = (int)(d->rows - d->index);
    int T = (int)I->max_len, P = m->positions, D = m->depth, Da = d->cs_app ? code_store_get_meta(d->cs_app)->depth : 0;
    b->B = B, b->T = T, b->P = P, b->D = D, b->D_app = Da, b->S = d->c.image_size;
    size_t n = (size_t)B * T;
    b->ids = asvr_malloc(n * 4, "batch ids"), b->labels = asvr_malloc(n * 4, "batch labels");
    b->pos = asvr_malloc(n * 4, "batch positions"), b->seg = asvr_malloc(n * 4, "batch segments");
    for (size_t i = 0; i < n; i++) b->ids[i] = DATA_PAD_ID, b->labels[i] = IGNORE_INDEX, b->pos[i] = 0, b->seg[i] = -1;
    int cap_img = 0;
    char **keys = NULL;
    for (int r = 0; r < B; r++) {
        packed_row row;
        if (packed_read_row(d->ps, d->perm[d->index + r], &row, err) < 0) goto fail;
        int t = 0;
        for (uint32_t k = 0; k < row.n_samples; k++) {
            packed_sample s;
            if (packed_read_sample(d->pr, row.samples[k], &s, err) < 0) goto fail;
            int start = t;
            for (uint32_t q = 0; q < s.n_ids && t < T; q++) {
                if (s.ids[q] == IMAGE_TOKEN_INDEX) {
                    if (!s.image_key) {
                        asvr_err_set(err, "sample %llu (id '%s') has an image placeholder but no image",
                                     (unsigned long long)s.source_index, s.id);
                        goto fail;
                    }
                    if (b->n_images == cap_img) {
                        cap_img = cap_img ? cap_img * 2 : 16;
                        keys = asvr_realloc(keys, sizeof(char *) * (size_t)cap_img, "batch image keys");
                        b->image_pos = asvr_realloc(b->image_pos, sizeof(int32_t) * (size_t)cap_img * P, "batch image positions");
                        b->codes = asvr_realloc(b->codes, sizeof(uint16_t) * (size_t)cap_img * P * D, "batch codes");
                        if (Da) b->codes_app = asvr_realloc(b->codes_app, sizeof(uint16_t) * (size_t)cap_img * P * Da, "batch codes");
                    }
                    int im = b->n_images++;
                    keys[im] = asvr_strdup(s.image_key);
                    int rc = code_store_get(d->cs, s.image_key, b->codes + (size_t)im * P * D, err);
                    if (rc == 0 && Da) rc = code_store_get(d->cs_app, s.image_key, b->codes_app + (size_t)im * P * Da, err);
                    if (rc != 0) {
                        if (rc == 1) asvr_err_set(err, "image '%s' of sample %llu (id '%s') has no codes in '%s'",
                                                  s.image_key, (unsigned long long)s.source_index, s.id, d->c.codes);
                        goto fail;
                    }
                    for (int p = 0; p < P; p++) {
                        int ok = t < T;
                        b->image_pos[(size_t)im * P + p] = ok ? r * T + t : -1;
                        if (ok) {
                            b->ids[r * T + t] = IMAGE_TOKEN_INDEX;
                            b->pos[r * T + t] = t - start;
                            b->seg[r * T + t] = (int32_t)k;
                            t++;
                            b->n_image_positions++;
                        }
                    }
                } else {
                    b->ids[r * T + t] = s.ids[q];
                    b->labels[r * T + t] = s.label_mask[q] ? s.ids[q] : IGNORE_INDEX;
                    b->pos[r * T + t] = t - start;
                    b->seg[r * T + t] = (int32_t)k;
                    t++;
                }
            }
            b->n_samples++;
            b->n_text_only += s.image_key == NULL;
            b->n_tokens += t - start;
            for (int q = start + 1; q < t; q++) b->n_text_targets += b->labels[r * T + q] != IGNORE_INDEX;
        }
    }
    d->index += B;
    if (pixels && d->c.need_pixels && b->n_images) {
        size_t per = (size_t)3 * b->S * b->S;
        b->pixels = asvr_malloc(sizeof(float) * per * (size_t)b->n_images, "batch images");
        if (load_images(d, keys, b->n_images, b->pixels, err) < 0) goto fail;
    }
    for (int i = 0; i < b->n_images; i++) free(keys[i]);
    free(keys);
    return 0;
fail:
    for (int i = 0; i < b->n_images; i++) free(keys[i]);
    free(keys);
    train_batch_free(b);
    return -1;
}
