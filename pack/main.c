/* asvr-pack — tokenize LLaVA instruction data with a chat template and pack it for training. */
#include "base/cli.h"
#include "pack.h"

static const asvr_command COMMANDS[] = {
    {"build", pack_build_main, "tokenize a LLaVA JSON (.json or .json.zst) into a packed store"},
    {"show", pack_show_main, "print one sample as text with its supervised spans marked"},
    {"info", pack_info_main, "print a packed store's header and counts as JSON"},
    {"dump", pack_dump_main, "write samples as JSON lines (ids, labels, image key, source index)"},
};

int main(int argc, char **argv) {
    return asvr_cli_dispatch("asvr-pack",
                             "Tokenizes LLaVA conversations with the reference templates and label masking,\n"
                             "and packs them into rows of at most --max-len positions for asvr-train.",
                             COMMANDS, (int)(sizeof COMMANDS / sizeof COMMANDS[0]), argc, argv);
}
