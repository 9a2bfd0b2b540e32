/* asvr-eval — runs a trained ASVR / LLaVA checkpoint: answers, attention maps (benchmarks to come). */
#include "base/cli.h"
#include "commands.h"

static const asvr_command COMMANDS[] = {
    {"ask", cmd_ask, "answer one question about one image (greedy decoding)"},
    {"attention", cmd_attention, "draw the last prompt token's attention over the image patches into a PNG"},
};

int main(int argc, char **argv) {
    return asvr_cli_dispatch("asvr-eval",
                             "Runs a checkpoint of asvr-train: greedy answers with the LLaVA evaluation prompt\n"
                             "(vicuna_v1, image first) and attention maps over the image patches.",
                             COMMANDS, (int)(sizeof COMMANDS / sizeof COMMANDS[0]), argc, argv);
}
