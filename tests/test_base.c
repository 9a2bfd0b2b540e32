/* test_base.c — errors, atomic files, hashing, mkdir -p. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/fsutil.h"
#include "base/hash.h"
#include "test.h"

int main(void) {
    asvr_error err = {{0}};
    T_EQ_INT(asvr_err_set(&err, "reading '%s'", "x.png"), -1);
    asvr_err_prefix(&err, "sample %d", 7);
    T_CHECK(strcmp(err.msg, "sample 7: reading 'x.png'") == 0, "got '%s'", err.msg);

    /* xxh64 known answers (the xxHash reference vectors). */
    T_CHECK(asvr_xxh64("", 0, 0) == 0xEF46DB3751D8E999ULL, "empty");
    T_CHECK(asvr_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ULL, "abc");
    asvr_hasher *h = asvr_hasher_new(0);
    asvr_hasher_update(h, "a", 1);
    asvr_hasher_update(h, "bc", 2);
    T_CHECK(asvr_hasher_digest(h) == asvr_xxh64("abc", 3, 0), "streaming == one-shot");
    asvr_hasher_free(h);
    char hex[17];
    asvr_hash_hex(0x44BC2CF5AD770999ULL, hex);
    T_CHECK(strcmp(hex, "44bc2cf5ad770999") == 0, "hex %s", hex);

    /* Atomic write: content lands, no temp left behind; abort leaves the old file. */
    char dir[] = "/tmp/asvr_test_base_XXXXXX";
    T_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char *sub = asvr_path_join(dir, "a/b/c");
    T_EQ_INT(asvr_mkdir_p(sub, &err), 0);
    struct stat st;
    T_CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode), "mkdir -p made %s", sub);
    char *path = asvr_path_join(sub, "out.bin");
    T_EQ_INT(asvr_atomic_write(path, "hello", 5, &err), 0);
    uint8_t *data;
    size_t n;
    T_EQ_INT(asvr_read_file(path, &data, &n, &err), 0);
    T_CHECK(n == 5 && memcmp(data, "hello", 5) == 0, "read back");
    free(data);
    asvr_atomic_file f;
    T_EQ_INT(asvr_atomic_open(&f, path, &err), 0);
    fputs("partial", f.fp);
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", f.tmp_path);
    asvr_atomic_abort(&f);
    T_CHECK(access(tmp, F_OK) != 0, "temp removed");
    T_EQ_INT(asvr_read_file(path, &data, &n, &err), 0);
    T_CHECK(n == 5 && memcmp(data, "hello", 5) == 0, "old content kept after abort");
    free(data);
    T_EQ_INT(asvr_read_file("/nonexistent/asvr", &data, &n, &err), -1);
    T_STR_CONTAINS(err.msg, "/nonexistent/asvr");
    char *d = asvr_path_dirname(path);
    T_CHECK(strcmp(d, sub) == 0, "dirname %s", d);
    free(d);
    asvr_error e2;
    T_EQ_INT(asvr_atomic_write("/nonexistent-dir/x", "a", 1, &e2), -1);
    T_STR_CONTAINS(e2.msg, "/nonexistent-dir/x");
    unlink(path);
    free(path);
    free(sub);
    return t_done();
}
