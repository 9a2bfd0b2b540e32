/* cli.h — command-line conventions shared by the four tools.
 *
 *   asvr-<tool> [subcommand] [--flags] [positional...]
 * --help prints usage to stdout and exits 0; --version prints the version and exits 0;
 * a usage error prints a one-line reason plus "try --help" to stderr and exits 2;
 * a failure exits 1. --log-level LEVEL is accepted everywhere. Flags take "--x v" or "--x=v".
 * --stats FILE summaries are written with asvr_stats_write (atomic JSON).
 */
#ifndef ASVR_BASE_CLI_H
#define ASVR_BASE_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "base/error.h"

#define ASVR_EXIT_OK 0
#define ASVR_EXIT_FAIL 1
#define ASVR_EXIT_USAGE 2

#ifdef __cplusplus
extern "C" {
#endif

const char *asvr_version(void);
/* Online CPU cores (the default for --threads). */
int asvr_num_cores(void);
/* The most threads a --threads flag may ask for: 8 per core, at least 64 (more only costs memory). */
int asvr_max_threads(void);

/* Each kind of value has one rule, checked by the parser (a value that breaks it is a usage error,
 * exit 2, naming the flag), so no command can forget it:
 *   FLAG   no value                         STR    any string
 *   INT    a whole number in 0..2^31-1      COUNT  a whole number in 1..2^31-1
 *   F64    a finite number >= 0             POS    a finite number > 0
 *   FRAC   a finite number in [0, 1]
 * Bounds that depend on the run (memory, the model's context, the data) are the command's to check,
 * before it allocates, naming the flag. */
typedef enum {
    ASVR_OPT_FLAG,
    ASVR_OPT_STR,
    ASVR_OPT_INT,
    ASVR_OPT_COUNT,
    ASVR_OPT_F64,
    ASVR_OPT_POS,
    ASVR_OPT_FRAC
} asvr_opt_kind;

typedef struct asvr_opt {
    const char *name;    /* without the leading "--" */
    asvr_opt_kind kind;
    void *dst;           /* int* for FLAG, const char** for STR, int64_t* for INT and COUNT, double* for
                            F64, POS and FRAC */
    const char *metavar; /* shown in help, e.g. "N"; NULL for flags */
    const char *help;    /* one line; the default is appended by the caller in the text */
} asvr_opt;

typedef struct asvr_cli {
    const char *prog;    /* "asvr-tokenize preprocess" */
    const char *usage;   /* "[--policy pad|squash] IN OUT.ppm" */
    const char *about;   /* a paragraph on what the command does */
    const asvr_opt *opts;
    int nopts;
    int min_pos, max_pos; /* allowed positional counts; max_pos < 0 means unbounded */
} asvr_cli;

/* Parses argv[1..argc) (argv[0] is the command's name). Positionals are stored in *pos (pointers
 * into argv, malloc'd array). Exits 0 for --help/--version and 2 on usage errors. */
void asvr_cli_parse(const asvr_cli *cli, int argc, char **argv, int *npos, char ***pos);
/* Prints a usage error for cli and exits 2. */
ASVR_NORETURN void asvr_cli_usage_error(const asvr_cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void asvr_cli_print_help(const asvr_cli *cli);

/* Subcommand dispatch for "asvr-<tool> <command> ...": --help/--version/usage errors handled here,
 * the command gets argv starting at its own name. */
typedef struct asvr_command {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *help;
} asvr_command;
int asvr_cli_dispatch(const char *prog, const char *about, const asvr_command *cmds, int n, int argc, char **argv);

/* Writes a JSON object to path atomically (pretty-printed, trailing newline). Exits 1 on failure. */
void asvr_stats_write(const char *path, json_t *obj);

#ifdef __cplusplus
}
#endif
#endif
