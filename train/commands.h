/* commands.h — asvr-train's subcommands (argv[0] is the subcommand name; they return the exit status). */
#ifndef ASVR_TRAIN_COMMANDS_H
#define ASVR_TRAIN_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_plan(int argc, char **argv);

#endif
