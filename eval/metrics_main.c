/* asvr-eval-metrics — a driver for the benchmark, scoring and report commands until they join
 * asvr-eval's command table. */
#include "base/cli.h"
#include "commands_metrics.h"

static const asvr_command COMMANDS[] = {
    {"benchmarks", cmd_benchmarks, "list the 14 benchmarks (name, group, max_new_tokens, reported metric)"},
    {"prompts", cmd_prompts, "print the prompt of every question of a question file (JSONL)"},
    {"score", cmd_score, "score an answer file against a question file (every metric variant, JSON)"},
    {"report", cmd_report, "the paper's table over run folders, with deltas against a baseline"},
};

int main(int argc, char **argv) {
    return asvr_cli_dispatch("asvr-eval-metrics",
                             "Benchmark definitions, answer scoring and the score report of asvr-eval.",
                             COMMANDS, (int)(sizeof COMMANDS / sizeof COMMANDS[0]), argc, argv);
}
