/* pack.h — asvr-pack's subcommands: build (LLaVA JSON → packed store), show, info, dump. */
#ifndef ASVR_PACK_PACK_H
#define ASVR_PACK_PACK_H

int pack_build_main(int argc, char **argv);
int pack_show_main(int argc, char **argv);
int pack_info_main(int argc, char **argv);
int pack_dump_main(int argc, char **argv);

#endif
