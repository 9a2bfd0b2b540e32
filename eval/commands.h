/* commands.h — asvr-eval's subcommands (argv[0] is the subcommand name; they return the exit status).
 * Each lives in its own file; main.c lists them in its dispatch table. */
#ifndef ASVR_EVAL_COMMANDS_H
#define ASVR_EVAL_COMMANDS_H

int cmd_ask(int argc, char **argv);
int cmd_attention(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_codes(int argc, char **argv);
int cmd_benchmarks(int argc, char **argv);
int cmd_prompts(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
