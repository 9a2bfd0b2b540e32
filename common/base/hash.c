#include "base/hash.h"

#include <stdio.h>
#include <xxhash.h>

#include "base/error.h"

uint64_t asvr_xxh64(const void *data, size_t n, uint64_t seed) { return XXH64(data, n, seed); }

asvr_hasher *asvr_hasher_new(uint64_t seed) {
    XXH64_state_t *s = XXH64_createState();
    CHECK(s != NULL, "out of memory", "creating an xxh64 state");
    XXH64_reset(s, seed);
    return (asvr_hasher *)s;
}

void asvr_hasher_update(asvr_hasher *h, const void *data, size_t n) {
    XXH64_update((XXH64_state_t *)h, data, n);
}

uint64_t asvr_hasher_digest(const asvr_hasher *h) { return XXH64_digest((const XXH64_state_t *)h); }

void asvr_hasher_free(asvr_hasher *h) { XXH64_freeState((XXH64_state_t *)h); }

void asvr_hash_hex(uint64_t h, char out[17]) { snprintf(out, 17, "%016llx", (unsigned long long)h); }
