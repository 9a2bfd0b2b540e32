/* log.h — leveled logging to stderr ("asvr: warn: ..."), shared by every tool.
 * stdout is reserved for data and JSON; everything a person reads goes through here.
 * Level from asvr_log_set_level() or the ASVR_LOG environment variable (error|warn|info|debug).
 */
#ifndef ASVR_BASE_LOG_H
#define ASVR_BASE_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { ASVR_LOG_ERROR = 0, ASVR_LOG_WARN = 1, ASVR_LOG_INFO = 2, ASVR_LOG_DEBUG = 3 } asvr_log_level;

void asvr_log_set_level(asvr_log_level level);
asvr_log_level asvr_log_get_level(void);
/* Parses "error|warn|info|debug"; returns -1 when unknown. */
int asvr_log_parse_level(const char *s, asvr_log_level *out);
void asvr_log(asvr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_ERROR(...) asvr_log(ASVR_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...) asvr_log(ASVR_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...) asvr_log(ASVR_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) asvr_log(ASVR_LOG_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif
#endif
