/* hash.h — xxh64 hashing (libxxhash) for fingerprints and record checksums.
 * Fingerprints are printed as 16 lowercase hex digits. Not a cryptographic hash.
 */
#ifndef ASVR_BASE_HASH_H
#define ASVR_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t asvr_xxh64(const void *data, size_t n, uint64_t seed);

/* Streaming form, for hashing many pieces (config + tensors) into one fingerprint. */
typedef struct asvr_hasher asvr_hasher;
asvr_hasher *asvr_hasher_new(uint64_t seed);
void asvr_hasher_update(asvr_hasher *h, const void *data, size_t n);
uint64_t asvr_hasher_digest(const asvr_hasher *h);
void asvr_hasher_free(asvr_hasher *h);

/* Writes 16 hex digits and a NUL into out[17]. */
void asvr_hash_hex(uint64_t h, char out[17]);

#ifdef __cplusplus
}
#endif
#endif
