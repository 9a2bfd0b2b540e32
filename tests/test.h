/* test.h — the tiny assertion layer of the ctest executables.
 * Each test binary counts its checks, prints "N passed, N failed" and exits non-zero on any failure.
 */
#ifndef ASVR_TESTS_TEST_H
#define ASVR_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_pass, t_fail;

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

static inline int t_done(void) {
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

/* Directory of committed fixtures, from the ASVR_GOLDEN compile definition. */
#ifndef ASVR_GOLDEN
#define ASVR_GOLDEN "tests/golden"
#endif

#endif
