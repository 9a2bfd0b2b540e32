#include "base/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *asvr_path_join(const char *dir, const char *name) {
    if (name[0] == '/' || !dir || !dir[0]) return asvr_strdup(name);
    size_t a = strlen(dir), b = strlen(name);
    char *p = asvr_malloc(a + b + 2, "a path");
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

char *asvr_path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return asvr_strdup(".");
    if (slash == path) return asvr_strdup("/");
    size_t n = (size_t)(slash - path);
    char *d = asvr_malloc(n + 1, "a path");
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

int asvr_fsync_dir(const char *dir, asvr_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return asvr_err_set(err, "opening directory '%s': %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0 && e != EINVAL) return asvr_err_set(err, "fsync of directory '%s': %s", dir, strerror(e));
    return 0;
}

/* Temp files of path that a killed run left: "<path>.tmp.<pid>" whose process is gone (not alive
 * here) and that nobody has written for a minute (a writer on another machine sharing the folder
 * keeps its file fresh). Removed before a new temp file is made. */
void asvr_atomic_reclaim(const char *path) {
    char *dir = asvr_path_dirname(path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d) {
        free(dir);
        return;
    }
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, base, bl) != 0 || strncmp(e->d_name + bl, ".tmp.", 5) != 0) continue;
        char *end;
        long pid = strtol(e->d_name + bl + 5, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char *p = asvr_path_join(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime > 60) unlink(p);
        free(p);
    }
    closedir(d);
    free(dir);
}

int asvr_atomic_open(asvr_atomic_file *f, const char *path, asvr_error *err) {
    memset(f, 0, sizeof *f);
    asvr_atomic_reclaim(path);
    size_t n = strlen(path) + 32;
    f->tmp_path = asvr_malloc(n, "a temp path");
    snprintf(f->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        return asvr_err_set(err, "creating '%s.tmp.*' for '%s': %s", path, path, strerror(e));
    }
    f->path = asvr_strdup(path);
    return 0;
}

static void atomic_free(asvr_atomic_file *f) {
    free(f->path);
    free(f->tmp_path);
    f->path = f->tmp_path = NULL;
    f->fp = NULL;
}

void asvr_atomic_abort(asvr_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    atomic_free(f);
}

int asvr_atomic_commit(asvr_atomic_file *f, asvr_error *err) {
    int bad = ferror(f->fp);
    if (fflush(f->fp) != 0) bad = 1;
    int e = errno;
    if (!bad && fsync(fileno(f->fp)) != 0) bad = 1, e = errno;
    if (fclose(f->fp) != 0 && !bad) bad = 1, e = errno;
    f->fp = NULL;
    if (bad) {
        asvr_err_set(err, "writing '%s': %s", f->path, strerror(e));
        asvr_atomic_abort(f);
        return -1;
    }
    if (rename(f->tmp_path, f->path) != 0) {
        asvr_err_set(err, "renaming '%s' to '%s': %s", f->tmp_path, f->path, strerror(errno));
        asvr_atomic_abort(f);
        return -1;
    }
    char *dir = asvr_path_dirname(f->path);
    int rc = asvr_fsync_dir(dir, err);
    free(dir);
    atomic_free(f);
    return rc;
}

int asvr_atomic_write(const char *path, const void *data, size_t n, asvr_error *err) {
    asvr_atomic_file f;
    if (asvr_atomic_open(&f, path, err) < 0) return -1;
    if (n && fwrite(data, 1, n, f.fp) != n) {
        asvr_err_set(err, "writing '%s': %s", path, strerror(errno));
        asvr_atomic_abort(&f);
        return -1;
    }
    return asvr_atomic_commit(&f, err);
}

static const char *file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a named pipe";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

int asvr_open_input(const char *path, int allow_stream, asvr_error *err) {
    /* O_NONBLOCK: opening a named pipe with no writer would otherwise wait forever */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return asvr_err_set(err, "opening '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return asvr_err_set(err, "'%s': %s", path, strerror(e));
    }
    int stream = S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode);
    if (!S_ISREG(st.st_mode) && !(allow_stream && stream)) {
        close(fd);
        return asvr_err_set(err, "'%s' is %s; give a regular file", path, file_kind(st.st_mode));
    }
    /* reads block as usual from here on: a pipe without a writer reads as end of file */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return asvr_err_set(err, "'%s': %s", path, strerror(e));
    }
    return fd;
}

FILE *asvr_fopen_input(const char *path, asvr_error *err) {
    int fd = asvr_open_input(path, 1, err);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        asvr_err_set(err, "opening '%s': %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

FILE *asvr_fopen_append(const char *path, asvr_error *err) {
    /* O_NONBLOCK: a named pipe without a reader fails at once (ENXIO) instead of waiting */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0666);
    if (fd < 0) {
        asvr_err_set(err, "opening '%s' to append: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        asvr_err_set(err, "'%s': %s", path, strerror(e));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        asvr_err_set(err, "'%s' is %s; give a regular file", path, file_kind(st.st_mode));
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "a");
    if (!f) {
        asvr_err_set(err, "opening '%s' to append: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

int asvr_read_file(const char *path, uint8_t **data, size_t *n, asvr_error *err) {
    return asvr_read_file_max(path, SIZE_MAX / 2, data, n, err);
}

int asvr_read_file_max(const char *path, size_t max_bytes, uint8_t **data, size_t *n, asvr_error *err) {
    *data = NULL;
    *n = 0;
    int fd = asvr_open_input(path, 1, err);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return asvr_err_set(err, "'%s': %s", path, strerror(e));
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > (uint64_t)max_bytes) {
        close(fd);
        return asvr_err_set(err, "'%s' is %lld bytes, more than the %zu this file can be", path, (long long)st.st_size,
                            max_bytes);
    }
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size : 0, len = 0;
    uint8_t *buf = asvr_malloc(cap + 1, "a file's bytes");
    for (;;) {
        if (len == cap) {
            if (cap >= max_bytes) {
                free(buf);
                close(fd);
                return asvr_err_set(err, "'%s' holds more than the %zu bytes this file can be", path, max_bytes);
            }
            cap = cap ? cap * 2 : 4096;
            if (cap > max_bytes) cap = max_bytes;
            buf = asvr_realloc(buf, cap + 1, "a file's bytes");
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return asvr_err_set(err, "reading '%s': %s", path, strerror(e));
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    *data = buf;
    *n = len;
    return 0;
}

int asvr_mmap_open(asvr_mmap *m, const char *path, asvr_error *err) {
    m->data = NULL;
    m->size = 0;
    int fd = asvr_open_input(path, 0, err);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return asvr_err_set(err, "'%s': %s", path, strerror(e));
    }
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return asvr_err_set(err, "mapping '%s': %s", path, strerror(e));
    m->data = p;
    m->size = (size_t)st.st_size;
    return 0;
}

void asvr_mmap_close(asvr_mmap *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

int asvr_mkdir_p(const char *path, asvr_error *err) {
    char *p = asvr_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            int e = errno;
            asvr_err_set(err, "creating directory '%s': %s", p, strerror(e));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = 0;
    if (mkdir(p, 0777) < 0 && errno != EEXIST) rc = asvr_err_set(err, "creating directory '%s': %s", p, strerror(errno));
    free(p);
    return rc;
}

int asvr_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
