/*
 * kvd_limits — the decisions behind kvd's resource limits, kept apart
 * from the event loop so that unit tests can drive them:
 *  - output-buffer limits (Redis's client-output-buffer-limit): when a
 *    client's unsent replies get it closed, and when kvd stops reading it
 *    (backpressure);
 *  - the open-file limit: raising RLIMIT_NOFILE at start and the
 *    maxclients that fits it (Redis's adjustOpenFilesLimit);
 *  - a once-a-second limiter for repeated log lines.
 *
 * Owns: nothing but the rate limiter's state.
 * Never: touches a socket or a client; the only system calls are
 * getrlimit/setrlimit (kvd_nofile_adjust) and opendir (kvd_count_segment_files).
 */
#ifndef KVD_LIMITS_H
#define KVD_LIMITS_H

#include <stdint.h>

#include "kvd_config.h"

/* Backpressure: kvd stops reading a client's requests once its unsent
 * replies reach KVD_OUTPUT_PAUSE_BYTES, and reads again once they drain to
 * KVD_OUTPUT_RESUME_BYTES or less. So a client that pipelines requests and
 * does not read the replies holds at most about 1 MiB plus one reply in
 * kvd, whatever the output-buffer limits are. */
#define KVD_OUTPUT_PAUSE_BYTES (1024u * 1024u)
#define KVD_OUTPUT_RESUME_BYTES (256u * 1024u)

/* What kvd_obuf_check decided. */
typedef enum kvd_obuf_verdict {
    KVD_OBUF_OK = 0,   /* within the limits (or over soft for not long enough yet) */
    KVD_OBUF_SOFT,     /* at or over the soft limit for more than its seconds */
    KVD_OBUF_HARD,     /* at or over the hard limit */
} kvd_obuf_verdict;

/*
 * Checks `used` unsent reply bytes of one client against limit l, as
 * Redis's checkClientOutputBufferLimits does, in milliseconds instead of
 * whole seconds. *soft_since_ms is the client's state: the time (now_ms
 * clock) it was first seen at or over the soft limit, 0 when it is not;
 * the first sighting only starts the clock. now_ms is only read when used
 * is at or over the soft limit. A limit of 0 is off.
 */
kvd_obuf_verdict kvd_obuf_check(const kvd_obuf_limit *l, uint64_t used, long long now_ms, long long *soft_since_ms);

/* Reads one class's limit with atomic loads (CONFIG SET may change it). */
kvd_obuf_limit kvd_obuf_limit_load(const kvd_obuf_limit *l);

/* File descriptors kvd keeps for itself whatever maxclients is (Redis's
 * CONFIG_MIN_RESERVED_FDS): stdio, the log file, the LOCK file, the
 * listener, the main event loop, the spare descriptor used to refuse
 * connections at the limit, hint and compaction files, new segments. */
#define KVD_MIN_RESERVED_FDS 32

/*
 * The descriptors kvd reserves beside its clients: KVD_MIN_RESERVED_FDS,
 * 2 per I/O thread (its epoll instance and its wake-up descriptor) and one
 * per segment file (the store keeps every segment open).
 */
uint64_t kvd_reserved_fds(int io_threads, uint64_t segment_files);

/* Counts the segment files ("NNNNNNNNNN.seg") in dir; 0 when dir cannot
 * be read (kv_open will create it, or report why it cannot). */
uint64_t kvd_count_segment_files(const char *dir);

/* What kvd_nofile_adjust found and did. */
typedef struct kvd_nofile_result {
    uint64_t old_limit;  /* the soft RLIMIT_NOFILE found at start */
    uint64_t limit;      /* the soft limit now */
    uint64_t wanted;     /* maxclients + reserved */
    int maxclients;      /* the maxclients that fits `limit` (the one asked for if it fits); 0: none fits */
    int set_errno;       /* errno of the setrlimit that could not reach `wanted`, 0 if none failed */
} kvd_nofile_result;

/*
 * Raises the soft RLIMIT_NOFILE as far as allowed: to the hard limit, and
 * when maxclients + reserved is above the hard limit, first tries to
 * raise both to it (possible with CAP_SYS_RESOURCE only). Then computes
 * the maxclients that fits (kvd_nofile_fit). Never lowers a limit. When
 * getrlimit fails, assumes 1024 as Redis does. Logs nothing.
 */
void kvd_nofile_adjust(int maxclients, uint64_t reserved, kvd_nofile_result *r);

/* The largest maxclients <= wanted that leaves `reserved` descriptors of
 * `limit` free; 0 when not even one client fits. */
int kvd_nofile_fit(uint64_t limit, uint64_t reserved, int wanted);

/* Lets a repeated event be logged at most once per period, counting the
 * ones not logged. Zero-initialise it. Not thread-safe: one thread only. */
typedef struct kvd_ratelimit {
    long long last_ms;   /* when the last one was let through; 0 never */
    uint64_t suppressed; /* events held back since then */
} kvd_ratelimit;

/*
 * Records one event at now_ms. Returns 1 if it should be logged (the last
 * one let through was period_ms or more ago, or there was none), with
 * *suppressed set to how many were held back since the last one logged;
 * returns 0 and counts the event otherwise.
 */
int kvd_ratelimit_allow(kvd_ratelimit *rl, long long now_ms, long long period_ms, uint64_t *suppressed);

#endif
