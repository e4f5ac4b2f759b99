/*
 * kvd_log — kvd's thread-safe, leveled logger. One line per message:
 *   "<pid>:<role> DD Mon YYYY HH:MM:SS.mmm <mark> message"
 * in the style of Redis's log lines (mark: . debug, - verbose, * notice,
 * # warning). Writes go to stderr or an append-only log file, one write(2)
 * per line so lines from different threads never interleave.
 *
 * Owns: the log file descriptor and the level, process-wide (the logger
 * is the one piece of global state outside main(), as a log sink is by
 * nature; it is set up once by main before threads start).
 */
#ifndef KVD_LOG_H
#define KVD_LOG_H

typedef enum kvd_log_level {
    KVD_LOG_DEBUG = 0,
    KVD_LOG_VERBOSE,
    KVD_LOG_NOTICE,
    KVD_LOG_WARNING,
} kvd_log_level;

/* Opens the log: path NULL or "" logs to stderr. Returns 0 or -errno. */
int kvd_log_open(const char *path, kvd_log_level level);
void kvd_log_close(void);
void kvd_log_set_level(kvd_log_level level);
kvd_log_level kvd_log_get_level(void);

/* "debug", "verbose", "notice", "warning". */
const char *kvd_log_level_name(kvd_log_level l);
/* Returns 0 and the level, or -1 for an unknown name. */
int kvd_log_level_parse(const char *s, kvd_log_level *out);

/* Logs one line if level is at or above the configured level. */
void kvd_log(kvd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
