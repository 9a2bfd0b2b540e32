/* asvr-eval benchmarks — the benchmark table (bench.h) as JSON on stdout. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/cli.h"
#include "bench.h"
#include "commands.h"

int cmd_benchmarks(int argc, char **argv) {
    const asvr_cli cli = {"asvr-eval benchmarks", "",
                          "Prints the 14 benchmarks in the paper's column order as a JSON array: name (for\n"
                          "--bench), title, group, max_new_tokens, the reported metric and the prompt suffix.",
                          NULL, 0, 0, 0};
    int npos;
    char **pos;
    asvr_cli_parse(&cli, argc, argv, &npos, &pos);
    free(pos);
    int n;
    const bench_def *all = bench_all(&n);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:s, s:s}", "name", all[i].name, "title",
                                             all[i].title, "group", bench_group_name(all[i].group), "max_new_tokens",
                                             all[i].max_new_tokens, "reported", all[i].reported, "suffix",
                                             all[i].suffix));
    char *text = json_dumps(arr, JSON_INDENT(2));
    CHECK(text != NULL, "", "serialising the benchmark table");
    puts(text);
    free(text);
    json_decref(arr);
    return ASVR_EXIT_OK;
}
