/* asvr-train — trains ASVR (LLaVA + the visual reconstruction loss) from prepacked stores. */
#include "base/cli.h"
#include "commands.h"

static const asvr_command COMMANDS[] = {
    {"train", cmd_train, "train (or resume) a run from a packed store and a code store"},
    {"export", cmd_export, "write a checkpoint as an HF/LLaVA-style model folder (model.safetensors + config.json)"},
    {"plan", cmd_plan, "print the memory plan of a training run without allocating it (does the 7B recipe fit?)"},
    {"plot", cmd_plot, "draw the loss curves of a run's log.jsonl into a PNG"},
};

int main(int argc, char **argv) {
    return asvr_cli_dispatch("asvr-train",
                             "Trains the ASVR model (text loss + visual code loss) or the LLaVA baseline from a packed\n"
                             "store (asvr-pack) and a code store (asvr-tokenize), with checkpoints and exact resume.",
                             COMMANDS, (int)(sizeof COMMANDS / sizeof COMMANDS[0]), argc, argv);
}
