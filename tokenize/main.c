/* asvr-tokenize — entry point: dispatches to a subcommand (one file each). */
#include "base/cli.h"
#include "commands.h"

static const asvr_command COMMANDS[] = {
    {"encode", cmd_encode, "encode the images of a LLaVA JSON or a list into a code store"},
    {"merge", cmd_merge, "combine code stores (e.g. the parts of encode --shard) into one new store"},
    {"verify", cmd_verify, "check every record of a code store (checksums, shapes, code range)"},
    {"stats", cmd_stats, "summarise a code store (meta, size, codebook use per depth)"},
    {"dump", cmd_dump, "print records as JSON lines"},
    {"fit", cmd_fit, "make a new tokenizer: residual k-means on an encoder's features over sample images"},
    {"preprocess", cmd_preprocess, "decode one image and write the preprocessed S x S input as PPM"},
};

int main(int argc, char **argv) {
    return asvr_cli_dispatch("asvr-tokenize",
                             "Decodes and preprocesses images and runs a visual tokenizer over them, writing\n"
                             "per-image codes into an LMDB code store.",
                             COMMANDS, (int)(sizeof COMMANDS / sizeof COMMANDS[0]), argc, argv);
}
