/* fuzz_file.h — for harnesses whose reader takes a path: the input written to one file per process
 * (in /dev/shm when there is one, so LMDB's syncs and the writes cost little), rewritten each run. */
#ifndef ASVR_FUZZ_FILE_H
#define ASVR_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[256];
    struct stat st;
    const char *dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/asvr-fuzz-%ld-%s", dir, (long)getpid(), name);
    char lock[300];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(lock);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    return path;
}

#endif
