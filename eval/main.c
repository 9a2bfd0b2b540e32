/* asvr-eval — runs a trained ASVR / LLaVA checkpoint: answers, benchmarks, scores, report, attention maps. */
#include "base/cli.h"
#include "commands.h"

static const asvr_command COMMANDS[] = {
    {"ask", cmd_ask, "answer one question about one image (greedy decoding)"},
    {"attention", cmd_attention, "draw the last prompt token's attention over the image patches into a PNG"},
    {"run", cmd_run, "answer every question of a benchmark file (resumable), then score it"},
    {"codes", cmd_codes, "visual reconstruction: the head's per-depth top-1 code accuracy on held-out images"},
    {"score", cmd_score, "score an answers file against a benchmark's questions (every metric variant)"},
    {"report", cmd_report, "the paper's table over run folders (Markdown/JSON), with --compare deltas"},
    {"prompts", cmd_prompts, "print the prompts a benchmark file produces (JSON lines)"},
    {"benchmarks", cmd_benchmarks, "list the benchmarks, their groups, metrics and token limits (JSON)"},
};

int main(int argc, char **argv) {
    return asvr_cli_dispatch("asvr-eval",
                             "Runs a checkpoint of asvr-train: greedy answers with the LLaVA evaluation prompt\n"
                             "(vicuna_v1, image first), the paper's benchmarks and their metrics, the score table,\n"
                             "and attention maps over the image patches.",
                             COMMANDS, (int)(sizeof COMMANDS / sizeof COMMANDS[0]), argc, argv);
}
