#include "prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct prefetcher {
    data_loader *dl;
    int64_t accum, global_batch;
    int background;
    step_batches buf[2]; /* the step handed out, and the one being loaded */
    int cur;             /* index of the buffer handed out last (-1: none yet) */
    int loading;         /* a thread is filling buf[1 - cur] (or buf[0] before the first take) */
    pthread_t tid;
    int rc;
    asvr_error err;
};

static void clear_step(step_batches *s) {
    for (int k = 0; k < s->n; k++) train_batch_free(&s->mb[k]);
    s->n = 0;
    s->text_targets = s->image_positions = s->tokens = s->samples = 0;
}

/* One step's micro-batches into s, as the trainer's loop defines a step. */
static int load_step(prefetcher *p, step_batches *s, asvr_error *err) {
    clear_step(s);
    for (int k = 0; p->accum > 0 ? k < p->accum : s->samples < p->global_batch; k++) {
        if (k == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 16;
            s->mb = asvr_realloc(s->mb, sizeof *s->mb * (size_t)s->cap, "micro-batches");
        }
        if (data_next(p->dl, &s->mb[k], err) < 0) return -1;
        s->n = k + 1;
        s->text_targets += s->mb[k].n_text_targets;
        s->image_positions += s->mb[k].n_image_positions;
        s->tokens += s->mb[k].n_tokens;
        s->samples += s->mb[k].n_samples;
    }
    data_get_cursor(p->dl, &s->epoch, &s->index);
    return 0;
}

static void *worker(void *arg) {
    prefetcher *p = arg;
    int slot = p->cur < 0 ? 0 : 1 - p->cur;
    p->rc = load_step(p, &p->buf[slot], &p->err);
    return NULL;
}

prefetcher *prefetch_new(data_loader *dl, int64_t accum, int64_t global_batch, int background) {
    prefetcher *p = asvr_calloc(1, sizeof *p, "the prefetcher");
    p->dl = dl;
    p->accum = accum;
    p->global_batch = global_batch;
    p->background = background != 0;
    p->cur = -1;
    return p;
}

static void start(prefetcher *p) {
    p->rc = 0;
    CHECK(pthread_create(&p->tid, NULL, worker, p) == 0, "", "starting the data prefetch thread");
    p->loading = 1;
}

int prefetch_take(prefetcher *p, int more, step_batches **out, asvr_error *err) {
    int slot = p->cur < 0 ? 0 : 1 - p->cur;
    if (p->loading) {
        pthread_join(p->tid, NULL);
        p->loading = 0;
        if (p->rc < 0) {
            *err = p->err;
            return -1;
        }
    } else if (load_step(p, &p->buf[slot], err) < 0) {
        return -1;
    }
    p->cur = slot;
    *out = &p->buf[slot];
    if (more && p->background) start(p); /* fills the other buffer while this step computes */
    return 0;
}

void prefetch_free(prefetcher *p) {
    if (!p) return;
    if (p->loading) pthread_join(p->tid, NULL);
    for (int i = 0; i < 2; i++) {
        clear_step(&p->buf[i]);
        free(p->buf[i].mb);
    }
    free(p);
}
