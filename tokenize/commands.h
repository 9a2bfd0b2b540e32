/* commands.h — the subcommands of asvr-tokenize, one function each (argv[0] is the subcommand name).
 * Each returns the process exit status (0 ok, 1 failure; usage errors exit 2 inside base/cli).
 * Not for: anything another tool needs (that goes to common/). */
#ifndef ASVR_TOKENIZE_COMMANDS_H
#define ASVR_TOKENIZE_COMMANDS_H

int cmd_preprocess(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_fit(int argc, char **argv);

#endif
