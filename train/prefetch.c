#include "prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct prefetcher {
    data_loader *dl;
    int64_t accum, global_batch;
    int rank, world;
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
    s->n = s->n_global = s->rounds = 0;
    s->text_targets = s->image_positions = s->tokens = s->samples = s->text_only = 0;
}

/* One step's micro-batches into s, as the trainer's loop defines a step: this rank's in full, the
 * others' counted only. */
static int load_step(prefetcher *p, step_batches *s, asvr_error *err) {
    clear_step(s);
    for (int k = 0; p->accum > 0 ? k < p->accum * p->world : s->samples < p->global_batch; k++) {
        int mine = k % p->world == p->rank;
        if (mine && s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 16;
            s->mb = asvr_realloc(s->mb, sizeof *s->mb * (size_t)s->cap, "micro-batches");
        }
        train_batch other, *b = mine ? &s->mb[s->n] : &other;
        if (data_next_ex(p->dl, b, mine, err) < 0) return -1;
        s->n += mine;
        s->n_global = k + 1;
        s->text_targets += b->n_text_targets;
        s->image_positions += b->n_image_positions;
        s->tokens += b->n_tokens;
        s->samples += b->n_samples;
        s->text_only += b->n_text_only;
        if (!mine) train_batch_free(&other);
    }
    s->rounds = (s->n_global + p->world - 1) / p->world;
    data_get_cursor(p->dl, &s->epoch, &s->index);
    return 0;
}

static void *worker(void *arg) {
    prefetcher *p = arg;
    int slot = p->cur < 0 ? 0 : 1 - p->cur;
    p->rc = load_step(p, &p->buf[slot], &p->err);
    return NULL;
}

prefetcher *prefetch_new(data_loader *dl, int64_t accum, int64_t global_batch, int background, int rank, int world) {
    CHECK(world >= 1 && rank >= 0 && rank < world, "", "prefetch_new: rank %d of %d", rank, world);
    prefetcher *p = asvr_calloc(1, sizeof *p, "the prefetcher");
    p->dl = dl;
    p->rank = rank;
    p->world = world;
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
