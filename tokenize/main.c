/* asvr-tokenize — entry point: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "base/cli.h"
#include "commands.h"

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *about;
} subcommand;

static const subcommand SUBCOMMANDS[] = {
    {"preprocess", cmd_preprocess, "decode one image and write the preprocessed S x S input as PPM"},
};
#define NSUB ((int)(sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]))

static void print_usage(FILE *f) {
    fprintf(f, "usage: asvr-tokenize <subcommand> [--flags] ...\n\nsubcommands:\n");
    for (int i = 0; i < NSUB; i++) fprintf(f, "  %-12s %s\n", SUBCOMMANDS[i].name, SUBCOMMANDS[i].about);
    fprintf(f, "\n'asvr-tokenize <subcommand> --help' describes each one.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return ASVR_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_usage(stdout);
        return ASVR_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("asvr-tokenize %s\n", asvr_version());
        return ASVR_EXIT_OK;
    }
    for (int i = 0; i < NSUB; i++)
        if (strcmp(argv[1], SUBCOMMANDS[i].name) == 0) return SUBCOMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "asvr-tokenize: unknown subcommand '%s'\n", argv[1]);
    print_usage(stderr);
    return ASVR_EXIT_USAGE;
}
