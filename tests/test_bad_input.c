/* test_bad_input.c — hostile inputs to the library's readers and the CLI layer (issue: no crash, no
 * hang, no silent success):
 *  - a named pipe never blocks: asvr_read_file, asvr_mmap_open, the JSON stream reader, json_read_path
 *    (an alarm ends the test if one waits);
 *  - the JSON stream reader skips an element larger than its bound, names it, and goes on;
 *  - a packed store whose block table claims 2^40 bytes (checksums made valid) is refused on open;
 *  - flag values: each option kind's rule gives exit 2 naming the flag (nan, inf, -1, 1e9 ...);
 *  - a model config with image_mean of one value, image_std 0 or an image_size whose patch count
 *    overflows is refused naming the key;
 *  - temp files of killed writers ("<path>.tmp.<pid>", dead pid, a minute old) are reclaimed, live
 *    or fresh ones kept.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <utime.h>

#include "base/cli.h"
#include "base/fsutil.h"
#include "base/hash.h"
#include "io/json_stream.h"
#include "model/asvr.h"
#include "store/packed_store.h"
#include "test.h"

static char dir[] = "/tmp/asvr_badin_XXXXXX";

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL: a reader blocked on a named pipe (alarm)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(2);
}

static void fifo_never_blocks(void) {
    char p[256];
    snprintf(p, sizeof p, "%s/pipe", dir);
    T_CHECK(mkfifo(p, 0600) == 0, "mkfifo");
    signal(SIGALRM, on_alarm);
    alarm(20);
    asvr_error err;
    uint8_t *data;
    size_t n;
    /* a pipe with no writer reads as empty (a stream input), never waits */
    T_CHECK(asvr_read_file(p, &data, &n, &err) == 0 && n == 0, "read_file on a pipe: %s", err.msg);
    if (n == 0) free(data);
    asvr_mmap m;
    T_CHECK(asvr_mmap_open(&m, p, &err) < 0 && strstr(err.msg, "named pipe"), "mmap of a pipe: %s", err.msg);
    json_stream *js;
    json_t *e;
    T_CHECK(json_stream_open(p, &js, &err) == 0, "%s", err.msg);
    if (js) {
        T_CHECK(json_stream_next(js, &e, &err) == -2 && strstr(err.msg, "array"), "stream of a pipe: %s", err.msg);
        json_stream_close(js);
    }
    T_CHECK(json_read_path(p, 1 << 20, &err) == NULL && strstr(err.msg, p), "json_read_path: %s", err.msg);
    FILE *f = asvr_fopen_append(p, &err);
    T_CHECK(f == NULL && strstr(err.msg, p), "append to a pipe: %s", f ? "opened" : err.msg);
    if (f) fclose(f);
    alarm(0);
}

static void json_element_bound(void) {
    char p[256];
    snprintf(p, sizeof p, "%s/big.json", dir);
    FILE *f = fopen(p, "w");
    fprintf(f, "[{\"id\": 1}, {\"id\": 2, \"v\": \"");
    for (int i = 0; i < 3 * 1024 * 1024; i++) fputc('x', f);
    fprintf(f, "\"}, {\"id\": 3}]");
    fclose(f);
    asvr_error err;
    json_stream *js;
    T_CHECK(json_stream_open(p, &js, &err) == 0, "%s", err.msg);
    json_stream_set_max_element(js, 1 << 20);
    json_t *e;
    T_EQ_INT(json_stream_next(js, &e, &err), 1);
    json_decref(e);
    int r = json_stream_next(js, &e, &err);
    T_CHECK(r == -1 && strstr(err.msg, "element 1") && strstr(err.msg, p), "big element: %d %s", r, err.msg);
    T_EQ_INT(json_stream_next(js, &e, &err), 1);
    T_EQ_INT(json_integer_value(json_object_get(e, "id")), 3);
    json_decref(e);
    T_EQ_INT(json_stream_next(js, &e, &err), 0);
    json_stream_close(js);
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void packed_block_claim(void) {
    char p[256];
    snprintf(p, sizeof p, "%s/s.pack", dir);
    asvr_error err;
    packed_writer_opts o = {64, 4, 4, 0, 1, 0, "0123456789abcdef", "plain", "fedcba9876543210", "00112233445566aa"};
    packed_writer *w;
    T_CHECK(packed_writer_open(p, &o, &w, &err) == 0, "%s", err.msg);
    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t mask[8] = {0, 0, 1, 1, 1, 1, 1, 1};
    for (int i = 0; i < 10; i++) T_CHECK(packed_writer_add(w, (uint64_t)i, "x", NULL, ids, mask, 8, 8, 0, &err) == 0, "%s", err.msg);
    packed_info info;
    T_CHECK(packed_writer_finish(w, &info, &err) == 0, "%s", err.msg);
    uint8_t *b;
    size_t n;
    T_CHECK(asvr_read_file(p, &b, &n, &err) == 0, "%s", err.msg);
    /* block 0's raw size := 2^40, then the block table's and the header's checksums made right */
    uint64_t boff = rd64(b + 192 + 24 * 2), bbytes = rd64(b + 200 + 24 * 2);
    wr64(b + boff + 16, (uint64_t)1 << 40);
    wr64(b + 208 + 24 * 2, asvr_xxh64(b + boff, bbytes, 0));
    wr64(b + 504, asvr_xxh64(b, 504, 0));
    char q[256];
    snprintf(q, sizeof q, "%s/claim.pack", dir);
    T_CHECK(asvr_atomic_write(q, b, n, &err) == 0, "%s", err.msg);
    free(b);
    packed_store *ps;
    int r = packed_store_open(q, &ps, &err);
    T_CHECK(r < 0 && strstr(err.msg, "claims") && strstr(err.msg, q), "a block claiming 2^40 bytes: %s",
            r < 0 ? err.msg : "opened");
    if (r == 0) packed_store_close(ps);
}

/* One parse in a child: its exit status and what it wrote to stderr. */
static int parse_status(const asvr_opt *opts, int nopts, const char *flag, const char *value, char *out, size_t outn) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        const asvr_cli cli = {"t", "", "", opts, nopts, 0, 0};
        char *argv[] = {"t", (char *)flag, (char *)value, NULL};
        int npos;
        char **pos;
        asvr_cli_parse(&cli, 3, argv, &npos, &pos);
        _exit(0);
    }
    close(fds[1]);
    ssize_t k = read(fds[0], out, outn - 1);
    out[k > 0 ? k : 0] = 0;
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void flag_rules(void) {
    int64_t i = 0, c = 0;
    double f = 0, p = 0, r = 0;
    const asvr_opt opts[] = {{"int", ASVR_OPT_INT, &i, "N", ""},   {"count", ASVR_OPT_COUNT, &c, "N", ""},
                             {"f64", ASVR_OPT_F64, &f, "X", ""},   {"pos", ASVR_OPT_POS, &p, "X", ""},
                             {"frac", ASVR_OPT_FRAC, &r, "X", ""}};
    struct {
        const char *flag, *value;
        int status;
    } cases[] = {
        {"--int", "-1", 2},       {"--int", "0", 0},          {"--int", "1e9", 2},       {"--int", "99999999999", 2},
        {"--count", "0", 2},      {"--count", "5", 0},        {"--count", "-5", 2},      {"--f64", "nan", 2},
        {"--f64", "inf", 2},      {"--f64", "-1", 2},         {"--f64", "0", 0},         {"--f64", "1e30", 0},
        {"--f64", "1e999", 2},    {"--pos", "0", 2},          {"--pos", "1e-3", 0},      {"--frac", "nan", 2},
        {"--frac", "1.5", 2},     {"--frac", "0.03", 0},      {"--f64", "0x", 2},        {"--count", "", 2},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char out[512];
        int st = parse_status(opts, 5, cases[k].flag, cases[k].value, out, sizeof out);
        T_CHECK(st == cases[k].status, "%s %s: exit %d (%s)", cases[k].flag, cases[k].value, st, out);
        if (cases[k].status == 2) T_CHECK(strstr(out, cases[k].flag) != NULL, "%s %s: '%s'", cases[k].flag, cases[k].value, out);
    }
}

static void config_values(void) {
    const char *base = "{\"llm\": {\"hidden_size\": 32, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                       "\"intermediate_size\": 64, \"vocab_size\": 100}, \"vision\": {\"image_size\": 28, "
                       "\"patch_size\": 14, \"hidden_size\": 16, \"intermediate_size\": 32, \"num_layers\": 2, "
                       "\"num_heads\": 2, \"layer_norm_eps\": 1e-6, \"tap_layer\": 1%s}}";
    struct {
        const char *extra, *needle;
    } cases[] = {{"", NULL},
                 {", \"image_mean\": [0.5]", "image_mean"},
                 {", \"image_std\": [0.5, 0, 0.5]", "image_std[1]"},
                 {", \"image_std\": [0.5, 0.5, \"x\"]", "image_std[2]"},
                 {", \"image_mean\": \"0.5\"", "image_mean"}};
    /* found by fuzz_model_config: (image_size / patch_size)^2 overflowed an int */
    asvr_config big;
    asvr_error e2 = {{0}};
    char bigtext[1024];
    snprintf(bigtext, sizeof bigtext, base, "");
    char *at = strstr(bigtext, "\"image_size\": 28");
    if (at) {
        char fixed[1100];
        snprintf(fixed, sizeof fixed, "%.*s\"image_size\": 43333336%s", (int)(at - bigtext), bigtext, at + strlen("\"image_size\": 28"));
        T_CHECK(asvr_config_from_json(fixed, &big, &e2) < 0 && strstr(e2.msg, "patches"), "a huge image_size: %s", e2.msg);
    }
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char text[1024];
        snprintf(text, sizeof text, base, cases[k].extra);
        asvr_config c;
        asvr_error err = {{0}};
        int r = asvr_config_from_json(text, &c, &err);
        if (!cases[k].needle) T_CHECK(r == 0, "a good config refused: %s", err.msg);
        else T_CHECK(r < 0 && strstr(err.msg, cases[k].needle), "%s: %s", cases[k].extra, r < 0 ? err.msg : "accepted");
    }
}

static void temp_reclaim(void) {
    char out[256], dead[300], live[300], fresh[300];
    snprintf(out, sizeof out, "%s/out.pack", dir);
    snprintf(dead, sizeof dead, "%s.tmp.%d", out, 999999999);
    snprintf(live, sizeof live, "%s.tmp.%d", out, (int)getppid());
    snprintf(fresh, sizeof fresh, "%s.tmp.%d", out, 999999998);
    const char *all[3] = {dead, live, fresh};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(all[i], "w");
        fputs("partial", f);
        fclose(f);
    }
    struct utimbuf old = {time(NULL) - 600, time(NULL) - 600};
    utime(dead, &old);
    utime(live, &old);
    asvr_atomic_reclaim(out);
    T_CHECK(!asvr_path_exists(dead), "a dead writer's temp file was kept");
    T_CHECK(asvr_path_exists(live), "a live writer's temp file was removed");
    T_CHECK(asvr_path_exists(fresh), "a fresh temp file was removed");
}

int main(void) {
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    fifo_never_blocks();
    json_element_bound();
    packed_block_claim();
    flag_rules();
    config_values();
    temp_reclaim();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_done();
}
