/* progress.h — a progress bar with count, rate and ETA on stderr, drawn only when stderr is a TTY.
 * Thread-safe: workers call asvr_progress_add(); redraws are throttled to ~10 per second.
 * Logging clears the bar's line first, so messages and the bar do not interleave.
 */
#ifndef ASVR_BASE_PROGRESS_H
#define ASVR_BASE_PROGRESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct asvr_progress asvr_progress;

/* total = 0 when unknown (no ETA). unit names the items ("img", "samples"). */
asvr_progress *asvr_progress_begin(const char *label, uint64_t total, const char *unit);
void asvr_progress_add(asvr_progress *p, uint64_t n);
/* Draws the final state and a newline (TTY only); frees p. */
void asvr_progress_end(asvr_progress *p);
/* Clears the current bar line if one is drawn (used by the logger). */
void asvr_progress_clear_line(void);
/* Forces drawing on or off (tests); default follows isatty(stderr). */
void asvr_progress_force(int enabled);

/* Monotonic seconds. */
double asvr_now(void);

#ifdef __cplusplus
}
#endif
#endif
