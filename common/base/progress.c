#include "base/progress.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"

struct asvr_progress {
    char label[64];
    char unit[16];
    uint64_t total;
    _Atomic uint64_t done;
    double t0;
    _Atomic double last_draw;
    pthread_mutex_t lock;
};

static int g_force = -1;
static _Atomic int g_drawn; /* a bar line is on screen */

void asvr_progress_force(int enabled) { g_force = enabled; }

static int enabled(void) { return g_force >= 0 ? g_force : isatty(STDERR_FILENO); }

double asvr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void asvr_progress_clear_line(void) {
    if (atomic_exchange(&g_drawn, 0)) fputs("\r\033[2K", stderr);
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(asvr_progress *p, int final) {
    uint64_t done = atomic_load(&p->done);
    double el = asvr_now() - p->t0;
    double rate = el > 0 ? (double)done / el : 0;
    char eta[32], elapsed[32], bar[32];
    fmt_duration(elapsed, sizeof elapsed, el);
    if (p->total) {
        double frac = (double)done / (double)p->total;
        if (frac > 1) frac = 1;
        int fill = (int)(frac * 24);
        for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '.';
        bar[24] = 0;
        fmt_duration(eta, sizeof eta, rate > 0 ? (double)(p->total - (done < p->total ? done : p->total)) / rate : -1);
        fprintf(stderr, "\r\033[2K%s [%s] %llu/%llu %s  %.1f %s/s  %s<%s", p->label, bar,
                (unsigned long long)done, (unsigned long long)p->total, p->unit, rate, p->unit,
                elapsed, eta);
    } else {
        fprintf(stderr, "\r\033[2K%s %llu %s  %.1f %s/s  %s", p->label, (unsigned long long)done,
                p->unit, rate, p->unit, elapsed);
    }
    if (final) {
        fputc('\n', stderr);
        atomic_store(&g_drawn, 0);
    } else {
        atomic_store(&g_drawn, 1);
    }
    fflush(stderr);
}

asvr_progress *asvr_progress_begin(const char *label, uint64_t total, const char *unit) {
    asvr_progress *p = asvr_calloc(1, sizeof *p, "progress bar");
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->t0 = asvr_now();
    pthread_mutex_init(&p->lock, NULL);
    return p;
}

void asvr_progress_add(asvr_progress *p, uint64_t n) {
    if (!p) return;
    atomic_fetch_add(&p->done, n);
    if (!enabled()) return;
    double now = asvr_now();
    if (now - atomic_load(&p->last_draw) < 0.1) return;
    if (pthread_mutex_trylock(&p->lock) != 0) return;
    atomic_store(&p->last_draw, now);
    draw(p, 0);
    pthread_mutex_unlock(&p->lock);
}

void asvr_progress_end(asvr_progress *p) {
    if (!p) return;
    if (enabled()) {
        pthread_mutex_lock(&p->lock);
        draw(p, 1);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}
