/* bench_packed_read STORE... — read cost of a packed store: every sample once in sequential and in
 * shuffled order through one reader; prints JSON (µs per sample, MB/s of token data). */
#include <stdio.h>
#include <stdlib.h>

#include "base/progress.h"
#include "store/packed_store.h"

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        asvr_error err;
        packed_store *ps;
        if (packed_store_open(argv[a], &ps, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        const packed_info *I = packed_store_info(ps);
        uint64_t n = I->n_samples, *order = malloc(sizeof(uint64_t) * n), s = 12345, sum = 0;
        for (uint64_t i = 0; i < n; i++) order[i] = i;
        for (uint64_t i = n; i > 1; i--) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            uint64_t j = (s >> 33) % i, t = order[i - 1];
            order[i - 1] = order[j], order[j] = t;
        }
        double us[2];
        for (int mode = 0; mode < 2; mode++) {
            packed_reader *r = packed_reader_new(ps);
            double t0 = asvr_now();
            for (uint64_t i = 0; i < n; i++) {
                packed_sample smp;
                if (packed_read_sample(r, mode ? order[i] : i, &smp, &err) < 0) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                sum += (uint64_t)smp.ids[smp.n_ids - 1];
            }
            us[mode] = (asvr_now() - t0) * 1e6 / (double)n;
            packed_reader_free(r);
        }
        printf("{\"store\": \"%s\", \"samples\": %llu, \"raw_bytes\": %llu, \"stored_bytes\": %llu, \"ratio\": %.2f, "
               "\"sequential_us_per_sample\": %.2f, \"random_us_per_sample\": %.2f, \"checksum\": %llu}\n",
               argv[a], (unsigned long long)n, (unsigned long long)I->token_raw_bytes,
               (unsigned long long)I->token_stored_bytes, (double)I->token_raw_bytes / (double)I->token_stored_bytes,
               us[0], us[1], (unsigned long long)sum);
        free(order);
        packed_store_close(ps);
    }
    return 0;
}
