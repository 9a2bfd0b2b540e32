#include "base/cli.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/log.h"

#ifndef ASVR_VERSION
#define ASVR_VERSION "0.0.0"
#endif

const char *asvr_version(void) { return ASVR_VERSION; }

int asvr_num_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int asvr_max_threads(void) {
    int n = 8 * asvr_num_cores();
    return n < 64 ? 64 : n;
}

void asvr_cli_print_help(const asvr_cli *cli) {
    printf("usage: %s %s\n", cli->prog, cli->usage ? cli->usage : "");
    if (cli->about) printf("\n%s\n", cli->about);
    printf("\noptions:\n");
    for (int i = 0; i < cli->nopts; i++) {
        const asvr_opt *o = &cli->opts[i];
        char lhs[96];
        if (o->kind == ASVR_OPT_FLAG) snprintf(lhs, sizeof lhs, "--%s", o->name);
        else snprintf(lhs, sizeof lhs, "--%s %s", o->name, o->metavar ? o->metavar : "X");
        printf("  %-28s %s\n", lhs, o->help ? o->help : "");
    }
    printf("  %-28s %s\n", "--log-level LEVEL", "error|warn|info|debug (default info, or $ASVR_LOG)");
    printf("  %-28s %s\n", "--help", "print this help and exit");
    printf("  %-28s %s\n", "--version", "print the version and exit");
}

void asvr_cli_usage_error(const asvr_cli *cli, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\ntry '%s --help'\n", cli->prog, msg, cli->prog);
    exit(ASVR_EXIT_USAGE);
}

static void set_value(const asvr_cli *cli, const asvr_opt *o, const char *v) {
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case ASVR_OPT_STR: *(const char **)o->dst = v; break;
    case ASVR_OPT_INT:
    case ASVR_OPT_COUNT: {
        long long x = strtoll(v, &end, 10);
        long long lo = o->kind == ASVR_OPT_COUNT ? 1 : 0;
        if (end == v || *end) asvr_cli_usage_error(cli, "--%s expects a whole number, got '%s'", o->name, v);
        if (errno || x < lo || x > INT32_MAX)
            asvr_cli_usage_error(cli, "--%s must be %s and at most %d, got '%s'", o->name, lo ? "at least 1" : "0 or more",
                                 INT32_MAX, v);
        *(int64_t *)o->dst = (int64_t)x;
        break;
    }
    case ASVR_OPT_F64:
    case ASVR_OPT_POS:
    case ASVR_OPT_FRAC: {
        double x = strtod(v, &end);
        if (end == v || *end) asvr_cli_usage_error(cli, "--%s expects a number, got '%s'", o->name, v);
        if (!isfinite(x))
            asvr_cli_usage_error(cli, "--%s must be a finite number, got '%s'", o->name, v);
        if (o->kind == ASVR_OPT_F64 && !(x >= 0)) asvr_cli_usage_error(cli, "--%s must be >= 0, got '%s'", o->name, v);
        if (o->kind == ASVR_OPT_POS && !(x > 0)) asvr_cli_usage_error(cli, "--%s must be > 0, got '%s'", o->name, v);
        if (o->kind == ASVR_OPT_FRAC && !(x >= 0 && x <= 1))
            asvr_cli_usage_error(cli, "--%s must be in [0, 1], got '%s'", o->name, v);
        *(double *)o->dst = x;
        break;
    }
    case ASVR_OPT_FLAG: break;
    }
}

void asvr_cli_parse(const asvr_cli *cli, int argc, char **argv, int *npos, char ***pos) {
    char **p = asvr_calloc((size_t)argc + 1, sizeof *p, "argument list");
    int n = 0, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] != '-' ) {
            if (!only_pos && a[0] == '-' && a[1] && a[1] != '-')
                asvr_cli_usage_error(cli, "unknown option '%s' (options are spelled --name)", a);
            p[n++] = argv[i];
            continue;
        }
        if (a[2] == 0) {
            only_pos = 1;
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 4 && strncmp(name, "help", 4) == 0) {
            asvr_cli_print_help(cli);
            exit(ASVR_EXIT_OK);
        }
        if (len == 7 && strncmp(name, "version", 7) == 0) {
            printf("%s %s\n", cli->prog, asvr_version());
            exit(ASVR_EXIT_OK);
        }
        if (len == 9 && strncmp(name, "log-level", 9) == 0) {
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            asvr_log_level l;
            if (!v || asvr_log_parse_level(v, &l) < 0)
                asvr_cli_usage_error(cli, "--log-level expects error|warn|info|debug");
            asvr_log_set_level(l);
            continue;
        }
        const asvr_opt *o = NULL;
        for (int k = 0; k < cli->nopts; k++)
            if (strlen(cli->opts[k].name) == len && strncmp(cli->opts[k].name, name, len) == 0) o = &cli->opts[k];
        if (!o) asvr_cli_usage_error(cli, "unknown option '--%.*s'", (int)len, name);
        if (o->kind == ASVR_OPT_FLAG) {
            if (eq) asvr_cli_usage_error(cli, "--%s takes no value", o->name);
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) asvr_cli_usage_error(cli, "--%s needs a value", o->name);
        set_value(cli, o, v);
    }
    if (n < cli->min_pos) asvr_cli_usage_error(cli, "expected at least %d argument(s), got %d", cli->min_pos, n);
    if (cli->max_pos >= 0 && n > cli->max_pos)
        asvr_cli_usage_error(cli, "expected at most %d argument(s), got %d", cli->max_pos, n);
    *npos = n;
    *pos = p;
}

void asvr_stats_write(const char *path, json_t *obj) {
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_SORT_KEYS);
    CHECK(s != NULL, "", "serialising the --stats JSON");
    size_t n = strlen(s);
    char *buf = asvr_malloc(n + 2, "stats JSON");
    memcpy(buf, s, n);
    buf[n] = '\n';
    free(s);
    asvr_error err;
    if (asvr_atomic_write(path, buf, n + 1, &err) < 0)
        ASVR_FATAL("check that the --stats directory exists and is writable", "%s", err.msg);
    free(buf);
}

static void dispatch_usage(FILE *f, const char *prog, const char *about, const asvr_command *cmds, int n) {
    fprintf(f, "usage: %s <command> [--help] ...\n", prog);
    if (about) fprintf(f, "\n%s\n", about);
    fprintf(f, "\ncommands:\n");
    for (int i = 0; i < n; i++) fprintf(f, "  %-12s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n'%s <command> --help' describes a command's options.\n", prog);
}

int asvr_cli_dispatch(const char *prog, const char *about, const asvr_command *cmds, int n, int argc, char **argv) {
    if (argc < 2) {
        dispatch_usage(stderr, prog, about, cmds, n);
        return ASVR_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        dispatch_usage(stdout, prog, about, cmds, n);
        return ASVR_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("%s %s\n", prog, asvr_version());
        return ASVR_EXIT_OK;
    }
    for (int i = 0; i < n; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) return cmds[i].main(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    dispatch_usage(stderr, prog, about, cmds, n);
    return ASVR_EXIT_USAGE;
}
