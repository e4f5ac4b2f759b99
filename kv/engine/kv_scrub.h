/*
 * kv_scrub — the background scrub: finds damage inside sealed segments and
 * their hint files before a client reads it.
 *
 * Why: a sealed segment is loaded at start from its hint file, without its
 * records being read, and a record's CRC is checked only when that record
 * is read (docs/format.md, "What a hint does not check"). Bit rot in a
 * value nobody reads would go unnoticed until the day someone does, maybe
 * after the last good copy is gone. The scrub reads every sealed segment
 * now and then and says so at once.
 *
 * Owns: one scrub thread (kv_scrub_start), its schedule (a pass after
 * start and then every interval_s seconds, or on request), its read rate,
 * its counters for INFO, and the set of problems it has already logged.
 *
 * A pass, for each sealed segment of the log in order (kv_sealed_list):
 *  1. holds the segment (kv_sealed_hold: a reference on its descriptor, so
 *     a compaction may retire it but cannot close or unmap it meanwhile);
 *  2. copies it, a chunk at a time, into a private buffer, from its
 *     mapping (kv_io_copy_mapped: a disk read error is an error, not a
 *     SIGBUS) or with pread, sleeping between chunks so that the pass
 *     reads at most `rate` bytes per second;
 *  3. runs the log reader over the copy (kvr_scan_buffer), which reports
 *     every bad region: any region in a sealed segment is damage;
 *  4. checks its hint file, if it has one, as kvfsck does: decoded
 *     (kvh_decode), compared with the segment (kvh_matches) and, when the
 *     segment is clean, compared byte for byte with a hint rebuilt from
 *     its records. A difference is reported at its first differing byte.
 *
 * Guarantees:
 *  - Every problem found is returned in the pass's result and counted; it
 *    is logged (KV_LOG_ERROR) once per problem for the life of the
 *    kv_scrub, with the file, the byte offset, the reason and the command
 *    to run ("kvfsck <dir>"); a later pass finding the same problem again
 *    neither logs nor counts it again.
 *  - A pass reads at most `rate` bytes a second averaged over the pass
 *    (it sleeps after each chunk until the bytes so far are due), so it
 *    takes at least bytes / rate seconds.
 *  - A segment a compaction retires during a pass is dropped from the
 *    pass at the next chunk (the compaction checked its records).
 * Never: writes, renames, truncates or removes any file; changes the key
 * directory; holds the store's lock longer than taking a reference, or
 * compaction's lock longer than reading one hint file.
 * Thread-safe: every function may be called from any thread, except that
 * kv_scrub_free must not race with the others. The store must outlive the
 * scrub: call kv_scrub_free before kv_close.
 */
#ifndef KV_SCRUB_H
#define KV_SCRUB_H

#include <stddef.h>
#include <stdint.h>

#include "kv_status.h"
#include "kv_store.h"

typedef struct kv_scrub kv_scrub;

#define KV_SCRUB_DEFAULT_INTERVAL_S 86400u     /* a pass a day */
#define KV_SCRUB_DEFAULT_RATE (16ull << 20)     /* 16 MiB/s */

typedef struct kv_scrub_options {
    uint64_t interval_s;      /* seconds from the end of one scheduled pass to
                                 the start of the next; the first starts at
                                 kv_scrub_start. 0: no scheduled passes, only
                                 requested ones */
    uint64_t rate;            /* bytes read per second at most; 0: no limit */
    const char *thread_name;  /* the scrub thread's name (at most 15
                                 characters); NULL: "kv-scrub" */
    void (*thread_init)(void *arg); /* called first on the scrub thread
                                       (e.g. to lower its priority); may be
                                       NULL */
    void *thread_arg;
} kv_scrub_options;

/* Fills *o with the defaults: daily, 16 MiB/s, no hook. */
void kv_scrub_options_init(kv_scrub_options *o);

/* One problem a pass found. */
typedef struct kv_scrub_problem {
    char file[32];       /* file name in the data directory:
                            "NNNNNNNNNN.seg" or "NNNNNNNNNN.hint" */
    uint32_t seg;        /* the segment's file id */
    int hint;            /* 1: in the hint file, 0: in the segment */
    uint64_t offset;     /* byte offset in that file where it starts */
    uint64_t length;     /* bytes of the bad region (0 when unknown, e.g.
                            a hint file's difference) */
    char reason[96];     /* e.g. "record checksum mismatch" */
} kv_scrub_problem;

#define KV_SCRUB_LIST_MAX 16

/* What one pass did. */
typedef struct kv_scrub_result {
    uint32_t segments;   /* sealed segments read whole */
    uint32_t hints;      /* hint files checked */
    uint64_t bytes;      /* bytes read (segments and hint files) */
    uint64_t problems;   /* problems found in this pass (known ones too) */
    size_t nlist;        /* the first min(problems, KV_SCRUB_LIST_MAX) */
    kv_scrub_problem list[KV_SCRUB_LIST_MAX];
    int stopped;         /* the pass ended early: kv_scrub_free */
} kv_scrub_result;

/* Scrub state for INFO. */
typedef struct kv_scrub_stats {
    int in_progress;          /* a pass runs, or was requested and starts now */
    uint64_t bytes_checked;   /* bytes read by the running pass, or by the
                                 last one when none runs */
    uint64_t last_completed;  /* when the last pass ended, seconds since the
                                 epoch; 0: none yet */
    uint64_t passes;          /* passes completed */
    uint64_t errors;          /* distinct problems found since start */
    char last_error[160];     /* the newest of them: "<file> offset <N>:
                                 <reason>", or "" */
    uint64_t interval_s, rate; /* the schedule in force */
} kv_scrub_stats;

/* Creates a scrub of store s (which must outlive it), without a thread.
 * Returns NULL when out of memory. */
kv_scrub *kv_scrub_new(kv_store *s, const kv_scrub_options *o);

/* Starts the scrub thread: a pass now (if interval_s > 0) and then one
 * every interval_s seconds, and one on each kv_scrub_request. Returns
 * KV_OK, KV_INVALID (already started) or the errno of pthread_create. */
kv_status kv_scrub_start(kv_scrub *sc);

/* Stops the thread (a pass in progress ends at its next chunk or sleep),
 * joins it and frees the scrub. NULL is a no-op. */
void kv_scrub_free(kv_scrub *sc);

/*
 * Runs one pass on the calling thread and fills *out (may be NULL). Waits
 * for a pass in progress on the thread to end first (one pass at a time).
 * Returns KV_OK when the pass ran, whether or not it found problems (see
 * out->problems), or ENOMEM.
 */
kv_status kv_scrub_run(kv_scrub *sc, kv_scrub_result *out);

/* Asks the thread for a pass now. Returns 1 (it starts at once), 0 (a
 * pass is already running or requested), or -1 (no thread: kv_scrub_start
 * was not called). */
int kv_scrub_request(kv_scrub *sc);

/* Changes the schedule: the next scheduled pass starts interval_s seconds
 * after the end of the last one (or of kv_scrub_start); 0 stops scheduled
 * passes. A pass in progress goes on at the new rate (bytes per second,
 * 0: no limit). */
void kv_scrub_set_schedule(kv_scrub *sc, uint64_t interval_s, uint64_t rate);

/* Copies the state into *st. */
void kv_scrub_get_stats(kv_scrub *sc, kv_scrub_stats *st);

#endif
