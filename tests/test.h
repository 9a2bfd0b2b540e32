/* test.h — the tiny assertion layer of the ctest executables.
 * Each test binary counts its checks, prints "N passed, N failed" and exits non-zero on any failure;
 * a test that could not run (all or part of it) exits T_SKIP_EXIT, which ctest reports as skipped.
 */
#ifndef ASVR_TESTS_TEST_H
#define ASVR_TESTS_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int t_pass, t_fail, t_skips;

/* The exit status of a skipped test: tests/CMakeLists.txt gives every test SKIP_RETURN_CODE 77. */
#define T_SKIP_EXIT 77

#define T_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        if (cond) t_pass++;                                                                        \
        else {                                                                                     \
            t_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define T_EQ_INT(a, b)                                                                             \
    T_CHECK((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))

#define T_STR_CONTAINS(hay, needle)                                                                \
    T_CHECK(strstr((hay), (needle)) != NULL, "'%s' does not contain '%s'", (hay), (needle))

/* What cannot run here (a build without CUDA, no device, absent optional data): says why, and t_done
 * then reports the test as skipped, not passed (a failed check still fails it). */
static inline void t_skip(const char *why) {
    printf("SKIPPED: %s\n", why);
    t_skips++;
}

static inline int t_done(void) {
    printf("%d passed, %d failed%s\n", t_pass, t_fail, t_skips ? ", the rest skipped" : "");
    return t_fail ? 1 : t_skips ? T_SKIP_EXIT : 0;
}

/* The tests' random inputs: xorshift64 over a state each test file seeds, uniform in [-1, 1) and never
 * exactly 0 (a zero would hide an element that was not written). */
static inline float t_frand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return 2.0f * ((float)((*s >> 40) + 0.5) / (float)(1 << 24)) - 1.0f;
}

/* f rounded to the nearest bf16 (ties to even), kept as f32: inputs both backends see exactly. */
static inline float t_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u) return f;
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* Runs fn in a child process and checks that it exits 1 with `needle` in what it writes to stderr:
 * the argument checks of an op, which end the process on misuse. */
typedef void (*t_misuse_fn)(void);
static inline void t_expect_fatal(const char *what, t_misuse_fn fn, const char *needle) {
    int fds[2];
    T_CHECK(pipe(fds) == 0, "pipe");
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    T_CHECK(pid >= 0, "fork");
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0); /* not reached when the op refuses */
    }
    close(fds[1]);
    char buf[2048] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)r;
    close(fds[0]);
    int st = 0;
    T_CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
    T_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: exit status %d", what, st);
    T_CHECK(strstr(buf, needle) != NULL, "%s: message '%s' lacks '%s'", what, buf, needle);
}

/* Directory of committed fixtures, from the ASVR_GOLDEN compile definition. */
#ifndef ASVR_GOLDEN
#define ASVR_GOLDEN "tests/golden"
#endif

#endif
