#include "base/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/progress.h"

static int g_level = -1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

int asvr_log_parse_level(const char *s, asvr_log_level *out) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (asvr_log_level)i;
            return 0;
        }
    return -1;
}

void asvr_log_set_level(asvr_log_level level) { g_level = (int)level; }

asvr_log_level asvr_log_get_level(void) {
    if (g_level < 0) {
        asvr_log_level l = ASVR_LOG_INFO;
        const char *env = getenv("ASVR_LOG");
        if (env) asvr_log_parse_level(env, &l);
        g_level = (int)l;
    }
    return (asvr_log_level)g_level;
}

void asvr_log(asvr_log_level level, const char *fmt, ...) {
    if ((int)level > (int)asvr_log_get_level()) return;
    static const char *tags[] = {"error: ", "warn: ", "", "debug: "};
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_lock);
    asvr_progress_clear_line();
    fprintf(stderr, "asvr: %s%s\n", tags[level], line);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}
