/* commands_metrics.h — the asvr-eval subcommands that define, score and tabulate benchmarks, one
 * function each (argv[0] is the subcommand name). Each returns the exit status (0 ok, 1 failure;
 * usage errors exit 2 inside base/cli).
 *   benchmarks  the 14 benchmarks as JSON (name, title, group, max_new_tokens, reported metric)
 *   prompts     the prompt of every question of a question file, as JSONL
 *   score       score an answer file against a question file (every metric variant, JSON)
 *   report      the paper's table over run folders (RUN/scores/<bench>.json), with deltas
 * Not for: generation (running the model); that has its own commands. */
#ifndef ASVR_EVAL_COMMANDS_METRICS_H
#define ASVR_EVAL_COMMANDS_METRICS_H

int cmd_benchmarks(int argc, char **argv);
int cmd_prompts(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
