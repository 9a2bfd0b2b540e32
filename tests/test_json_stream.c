/* test_json_stream.c — streaming a top-level JSON array, plain and zstd, with tricky strings,
 * a malformed element in the middle (reported, then skipped), truncation, wrong top level. */
#include <unistd.h>
#include <zstd.h>

#include "base/fsutil.h"
#include "io/json_stream.h"
#include "test.h"

static char *make_json(int n, size_t *len) {
    size_t cap = (size_t)n * 200 + 64, k = 0;
    char *s = malloc(cap);
    k += (size_t)sprintf(s + k, " [\n");
    for (int i = 0; i < n; i++)
        k += (size_t)sprintf(s + k, "%s{\"id\": %d, \"conversations\": [{\"from\": \"human\", \"value\": \"q]}{,\\\"%d\\\\\"}], \"x\": [1, [2, {\"a\": \"]\"}]]}\n",
                             i ? "," : "", i, i);
    k += (size_t)sprintf(s + k, "]\n");
    *len = k;
    return s;
}

static int read_all(const char *path, int *count, int *errors, char *last_err, size_t n) {
    json_stream *js;
    asvr_error err;
    if (json_stream_open(path, &js, &err) < 0) return -1;
    *count = *errors = 0;
    for (;;) {
        json_t *e;
        int r = json_stream_next(js, &e, &err);
        if (r == 0) break;
        if (r < 0) {
            (*errors)++;
            snprintf(last_err, n, "%s", err.msg);
            if (r == -2 || *errors > 5) break;
            continue;
        }
        json_t *id = json_object_get(e, "id");
        json_t *conv = json_object_get(e, "conversations");
        const char *v = json_string_value(json_object_get(json_array_get(conv, 0), "value"));
        char want[64];
        snprintf(want, sizeof want, "q]}{,\"%d\\", (int)json_integer_value(id));
        if ((int)json_integer_value(id) != *count + (*errors ? 1 : 0) && !*errors) (*errors) += 100;
        if (!v || strcmp(v, want) != 0) (*errors) += 1000;
        (*count)++;
        json_decref(e);
    }
    json_stream_close(js);
    return 0;
}

int main(void) {
    char dir[] = "/tmp/asvr_test_json_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char p[600], z[600];
    snprintf(p, sizeof p, "%s/a.json", dir);
    snprintf(z, sizeof z, "%s/a.json.zst", dir);
    asvr_error err;
    size_t n;
    int N = 20000; /* > the 1 MiB read chunk, so elements straddle refills */
    char *s = make_json(N, &n);
    T_EQ_INT(asvr_atomic_write(p, s, n, &err), 0);
    size_t bound = ZSTD_compressBound(n);
    char *c = malloc(bound);
    size_t cn = ZSTD_compress(c, bound, s, n, 3);
    T_CHECK(!ZSTD_isError(cn), "compress");
    T_EQ_INT(asvr_atomic_write(z, c, cn, &err), 0);
    int count, errors;
    char last[1024] = "";
    T_EQ_INT(read_all(p, &count, &errors, last, sizeof last), 0);
    T_EQ_INT(count, N);
    T_EQ_INT(errors, 0);
    T_EQ_INT(read_all(z, &count, &errors, last, sizeof last), 0);
    T_EQ_INT(count, N);
    T_EQ_INT(errors, 0);

    /* A malformed element in the middle: reported with its index, the rest still read. */
    const char *bad = "[{\"id\": 0, \"conversations\": [{\"value\": \"q]}{,\\\"0\\\\\"}]},\n {\"id\": 1, \"oops\" 3},\n"
                      " {\"id\": 2, \"conversations\": [{\"value\": \"q]}{,\\\"2\\\\\"}]}]";
    T_EQ_INT(asvr_atomic_write(p, bad, strlen(bad), &err), 0);
    T_EQ_INT(read_all(p, &count, &errors, last, sizeof last), 0);
    T_EQ_INT(count, 2);
    T_EQ_INT(errors, 1);
    T_STR_CONTAINS(last, "element 1");
    T_STR_CONTAINS(last, p);

    /* Truncated inside an element; top level not an array. */
    T_EQ_INT(asvr_atomic_write(p, s, n / 2, &err), 0);
    T_EQ_INT(read_all(p, &count, &errors, last, sizeof last), 0);
    T_EQ_INT(errors, 1);
    T_STR_CONTAINS(last, "cut off");
    T_EQ_INT(asvr_atomic_write(p, "{\"a\": 1}", 8, &err), 0);
    T_EQ_INT(read_all(p, &count, &errors, last, sizeof last), 0);
    T_EQ_INT(count, 0);
    T_STR_CONTAINS(last, "array");
    T_EQ_INT(asvr_atomic_write(p, "[]", 2, &err), 0);
    T_EQ_INT(read_all(p, &count, &errors, last, sizeof last), 0);
    T_CHECK(count == 0 && errors == 0, "empty array");
    free(s), free(c);
    unlink(p), unlink(z), rmdir(dir);
    return t_done();
}
