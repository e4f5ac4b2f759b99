/*
 * fsck_check — the checks and the salvage behind kvfsck.
 *
 * Owns: the check of a data directory (every segment read with the log
 * reader recovery uses, recovery/kvr_reader.h; every problem classified
 * and every record applied to a key directory by recovery's own rules,
 * recovery/kvr_replay.h).
 *
 * Guarantees:
 *  - fsck_check() only reads: it opens files read-only and never creates,
 *    truncates, renames or removes anything, so it is safe on a directory
 *    kvd is using (it then sees whatever was on disk at that moment).
 *  - Its classification is recovery's (docs/format.md, "Classification"):
 *    sequence going back, then sealed-segment corruption, then mid-log
 *    corruption, then torn tail. kvd in its default mode opens a directory
 *    whose only problems are torn tails and refuses any other.
 *  - Its counts are what skip-corrupt recovery would load: every valid
 *    top-level record in order, whole batches only, a record whose sequence
 *    number does not exceed the highest one applied before it skipped. On a
 *    clean directory that is exactly what every recovery mode loads.
 *  - Every hint file is decoded, checked against its segment as recovery
 *    checks it, and compared byte for byte with a hint rebuilt from the
 *    segment's records; a bad one is a problem of kind FSCK_HINT (at
 *    offset 0, the whole file).
 *  - fsck_salvage() (fsck_salvage.h) never removes a byte: each damaged segment is copied
 *    whole to "<segment>.orig" before a verified rewrite replaces it.
 *
 * Never: takes the LOCK (the caller does before a salvage), or decides
 * what to print.
 */
#ifndef FSCK_CHECK_H
#define FSCK_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "kv_io.h"
#include "kv_status.h"
#include "kvr_reader.h"

/* Problem classes, in recovery's order of precedence. */
typedef enum fsck_kind {
    FSCK_TORN_TAIL = 0, /* newest segment, no valid record after it */
    FSCK_MID_LOG,       /* newest segment, a valid record follows */
    FSCK_SEALED,        /* any damage in a segment that is not the newest */
    FSCK_SEQ_BACK,      /* a valid record whose sequence number goes back */
    FSCK_HINT,          /* a hint file that is damaged, stale, or disagrees
                           with its segment */
    FSCK_MISSING,       /* format 2: a segment missing from the log (a broken
                           chain, a trailer with no successor, a hint file
                           without its segment) or a sealed segment that lost
                           its end (no trailer: truncated or emptied) */
    FSCK_NKINDS
} fsck_kind;

/* "torn tail", "mid-log corruption", "sealed-segment corruption",
 * "sequence going back", "bad hint file", "missing data". */
const char *fsck_kind_name(fsck_kind k);

/* Recovery's classification (kvr_classify) of a problem the reader
 * reported, with the reader's view alone: in the newest segment, a torn
 * tail when nothing valid follows it. */
fsck_kind fsck_classify(const kvr_problem *p, int newest);

typedef struct fsck_problem {
    uint64_t offset;  /* byte offset in the segment file */
    uint64_t length;  /* bytes in the bad region (the record, for sequence going back) */
    kvr_reason reason;
    int valid_after;  /* a valid record follows in this segment */
    fsck_kind kind;
} fsck_problem;

typedef struct fsck_segment {
    uint32_t id;
    char name[16];        /* "NNNNNNNNNN.seg" */
    int newest;
    uint64_t bytes;       /* file size */
    uint64_t unwritten;   /* newest segment only: zero bytes at its end, space
                             zero-filled ahead of the log and never used
                             (KVR_UNWRITTEN; not a problem, kvd cuts it at
                             start) */
    uint64_t records;     /* valid top-level records applied */
    uint64_t entries;     /* puts and tombstones applied, batch entries included */
    uint64_t seq_before;  /* highest sequence number applied before this segment */
    kv_status err;        /* KV_OK, or why the segment could not be read */
    fsck_problem *problems;
    size_t nproblems, cap;
} fsck_segment;

/* What the check found about one hint file (kv/base/kv_hint.h). */
typedef enum fsck_hint_state {
    FSCK_HINT_VALID = 0,    /* decodes, matches its segment, equals a rebuild */
    FSCK_HINT_UNCHECKED,    /* its segment has damage or could not be read */
    FSCK_HINT_SUPERSEDED,   /* of a segment a compaction output replaced: left
                               by a crash during compaction; kvd removes it */
    /* The states from here on are problems (kind FSCK_HINT). */
    FSCK_HINT_DAMAGED,      /* CRC, structure or version check failed */
    FSCK_HINT_STALE,        /* describes other bytes than the segment's */
    FSCK_HINT_DISAGREES,    /* valid and current, but its entries differ from
                               what the segment's records say */
    FSCK_HINT_ORPHAN,       /* its segment is missing: evidence of a lost
                               segment (kind FSCK_MISSING; kvd refuses) */
} fsck_hint_state;

/* "valid", "not checked (segment damaged)", "damaged", "stale",
 * "disagrees with its segment", "no such segment". */
const char *fsck_hint_state_name(fsck_hint_state s);

typedef struct fsck_hint {
    char name[32];        /* "NNNNNNNNNN.hint" */
    uint32_t seg;
    uint64_t bytes;       /* file size */
    fsck_hint_state state;
} fsck_hint;

typedef struct fsck_names {
    char **v;
    size_t n, cap;
} fsck_names;

typedef struct fsck_report {
    fsck_segment *segs;  /* in ascending id order */
    size_t nsegs;
    uint64_t log_bytes;  /* bytes of all segment files */
    uint64_t records;    /* valid top-level records applied */
    uint64_t batches;
    uint64_t entries;    /* puts and tombstones, batch entries included */
    uint64_t tombstones; /* tombstone entries applied */
    uint64_t expired;    /* puts already expired at now_ms */
    uint64_t live_keys;
    uint64_t live_bytes; /* record bytes the key directory points at */
    uint64_t dead_bytes; /* log_bytes - live_bytes - segment headers - unwritten */
    uint64_t unwritten;  /* the newest segment's unwritten zero bytes */
    uint64_t max_seq;
    uint64_t problems;
    uint64_t by_kind[FSCK_NKINDS];
    fsck_names torn_files;      /* "<segment>.<offset>.torn[.N]" */
    fsck_names discarded_files; /* "<segment>.discarded[.N]", "<hint>.discarded[.N]" */
    fsck_names orig_files;      /* "<segment>.orig[.N]": originals kept by a salvage */
    fsck_names salvage_files;   /* "<segment>.salvage": a salvage that did not finish */
    fsck_names compact_files;   /* "<segment>.compact": a compaction that did not finish
                                   (kvd removes it at start) */
    fsck_names orphan_files;    /* "<hint>.orphan[.N]": hints of missing segments that a
                                   repair set aside */
    fsck_names repl_files;      /* replication's: "replication.state" (the node's ids and
                                   primary) and "diverged.<first>-<last>" (records set aside
                                   as not in the primary's history; docs/replication.md) */
    fsck_names other_files;     /* anything else but LOCK (kv_dir.h's KV_FILE_OTHER, an
                                   unfinished ".hint.tmp", a superseded segment) */
    fsck_hint *hints;           /* every NNNNNNNNNN.hint file, by name */
    size_t nhints;
    uint32_t sealed_without_hint; /* sealed segments recovery must scan */
    int lock_file;              /* a LOCK file exists */
    /* What kvd will do with this directory, by running its recovery
     * without changing anything (KVR_DRY_RUN) in the default mode
     * (tolerate-tail) with hint files read, as kvd starts by default. */
    kv_status kvd_verdict;      /* KV_OK: kvd starts; KV_CORRUPT: it refuses */
    char kvd_message[1024];     /* its refusal, naming file, offset and kvfsck */
    uint64_t kvd_torn_bytes;    /* bytes it would cut (and save) */
    uint32_t kvd_hinted;        /* sealed segments it would load from hint files
                                   without reading their records */
    uint32_t kvd_rotations;     /* interrupted rotations it would complete */
    int listed;                 /* the directory could be listed */
    kv_status err;              /* first operational error (KV_OK if none) */
    char message[1024];         /* what that error was, naming the file */
} fsck_report;

/* Progress: called now and then during a check, with the index of the
 * segment being read (0-based), the segment count, and bytes done/total. */
typedef void (*fsck_progress_fn)(void *arg, size_t seg, size_t nsegs, uint64_t done, uint64_t total);

/*
 * Checks the data directory dir through io (read-only). now_ms is the wall
 * clock in ms since the epoch, for expiry. progress may be NULL. Fills
 * *rep (free with fsck_report_free, also after an error).
 * Returns KV_OK (problems are in the report, not the return value), or an
 * operational error also stored in rep->err with rep->message: an errno
 * when the directory or a segment cannot be read, KV_VERSION for a segment
 * of a format version this build cannot read, ENOMEM. On a segment error
 * the other segments are still checked.
 */
kv_status fsck_check(const kv_io *io, const char *dir, uint64_t now_ms, fsck_progress_fn progress, void *parg,
                     fsck_report *rep);

void fsck_report_free(fsck_report *rep);

#endif
