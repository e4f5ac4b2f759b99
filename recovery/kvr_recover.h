/*
 * kvr_recover — the recovery policy. Runs at every start of the store (and
 * is what kvfsck checks against): scans the data directory's segments in
 * id order with the log reader, rebuilds the key directory, and decides
 * what each problem the reader reports means.
 *
 * Classification (see docs/format.md, "Recovery"):
 *  - torn tail: a problem in the newest segment with no valid record after
 *    it (an incomplete record, a record running past end of file, a
 *    zero-filled or garbage tail). The writer crashed mid-append; nothing
 *    acknowledged is in it under fsync=always. Cut: the bytes are saved in
 *    "<segment>.<offset>.torn" beside the segment (".N" appended if that
 *    name is taken: saved bytes are never overwritten), fdatasync'ed and
 *    the directory fsync'ed, and only then is the segment truncated.
 *  - mid-log corruption: a bad region followed by a valid record, any
 *    problem in a sealed segment, or a sequence number that goes back.
 *
 * Modes follow RocksDB's WAL recovery modes:
 *  tolerate-tail (default, kTolerateCorruptedTailRecords): cut a torn
 *      tail; refuse to open on mid-log corruption.
 *  absolute (kAbsoluteConsistency): refuse on any problem, torn tail too.
 *  point-in-time (kPointInTimeRecovery): stop at the first problem; later
 *      segments are first renamed "<segment>.discarded" (newest first,
 *      then a directory fsync), then the rest of that segment is cut and
 *      saved as for a torn tail. Nothing is deleted, and a crash part way
 *      never leaves a log with a hole in it.
 *  skip-corrupt (kSkipAnyCorruptedRecords): load every valid record, pass
 *      over bad regions (left in place, reported), cut a torn tail.
 *
 * The rules it applies are written once in kvr_replay.h (the apply rule,
 * the torn-vs-corrupt classification), shared with kvfsck; the changes it
 * makes to the directory are kvr_dirops.h's. This module is the policy:
 * what each mode does with each problem, and the order of the steps.
 *
 * Never: deletes bytes without saving them, or applies part of a batch.
 */
#ifndef KVR_RECOVER_H
#define KVR_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_io.h"
#include "kv_keydir.h"
#include "kv_status.h"
#include "kvr_dirops.h" /* kvr_list_segments, kvr_list_superseded */
#include "kvr_reader.h"
#include "kvr_replay.h" /* kvr_is_unwritten_space, for the callers of old */

typedef enum kvr_mode {
    KVR_TOLERATE_TAIL = 0,
    KVR_ABSOLUTE,
    KVR_POINT_IN_TIME,
    KVR_SKIP_CORRUPT,
} kvr_mode;

/* "tolerate-tail", "absolute", "point-in-time", "skip-corrupt". */
const char *kvr_mode_name(kvr_mode m);

/* Parses a mode name. Returns KV_OK or KV_INVALID. */
kv_status kvr_mode_parse(const char *s, kvr_mode *m);

typedef struct kvr_segment_info {
    uint32_t id;
    uint64_t size;    /* bytes, after any cut */
    int hint;         /* a valid hint file describes it (read or written) */
    uint16_t version; /* its format version (0: no valid header) */
    uint32_t replaces; /* its header's replaces field (0: not a compaction output, or no valid header) */
    int sealed;       /* it ends with a valid trailer (version 2) */
    uint64_t records; /* top-level data records in it (marks not counted) */
} kvr_segment_info;

/* One problem recovery met, for kvfsck's listing (kvr_report.found). */
typedef struct kvr_found {
    kvr_problem p; /* p.path is NULL: the segment is p.seg (a hint file's id
                      for KVR_ORPHAN_HINT) */
    int newest;    /* in the newest segment */
    int torn;      /* classified as a torn tail (cut), not corruption */
} kvr_found;

/* Flags for kvr_recover. */
enum {
    KVR_HINTS_READ = 1 << 0,  /* load sealed segments from valid hint files */
    KVR_HINTS_WRITE = 1 << 1, /* write a hint file for each sealed segment scanned cleanly */
    KVR_DRY_RUN = 1 << 2,     /* decide as recovery would, change nothing on disk: no
                                 cut, trim, unlink, rename, trailer or hint file is
                                 written (kvfsck's prediction of what kvd will do) */
};

/* What recovery did. Counts are of what was applied. */
typedef struct kvr_report {
    kvr_mode mode;
    uint32_t segments;       /* segments loaded */
    uint64_t records;        /* valid top-level records applied */
    uint64_t entries;        /* puts and tombstones applied, batch entries included */
    uint64_t batches;
    uint64_t tombstones;
    uint64_t expired;        /* puts already expired at recovery, dropped */
    uint64_t keys;           /* keys in the key directory afterwards */
    uint64_t log_bytes;      /* segment bytes after any cut */
    uint64_t live_bytes;     /* bytes of records the key directory points at */
    uint64_t max_seq;        /* highest sequence number seen (0 if none) */
    uint32_t problems;       /* problems the reader reported */
    uint64_t torn_bytes;     /* bytes cut from torn tails (and point-in-time cuts),
                                each saved beside its segment; trailing zeros
                                are not among them (unwritten_bytes) */
    uint32_t torn_segment;   /* segment of the last cut, 0 if none */
    uint64_t torn_offset;    /* offset of the last cut */
    uint64_t unwritten_bytes; /* zero bytes that ended the newest segment
                                 (KVR_UNWRITTEN: preallocated space the writer
                                 never used), cut without being saved */
    uint64_t skipped_bytes;  /* skip-corrupt: bytes of bad regions passed over */
    uint32_t discarded_segments; /* point-in-time: later segments set aside */
    uint32_t hints_used;     /* sealed segments loaded from their hint file */
    uint32_t hints_rejected; /* hint files found damaged or stale (segment scanned) */
    uint32_t hints_written;  /* hint files written after a scan */
    uint32_t hints_failed;   /* hint files that could not be written (not an error) */
    uint32_t rotations_completed; /* sealed segments whose trailer a crash in the middle
                                     of a rotation left unwritten, sealed now */
    uint32_t compact_leftovers;   /* unfinished compaction outputs (.seg.compact) removed */
    kvr_found *found;        /* every problem met, in order (owned) */
    size_t nfound;
    uint64_t elapsed_us;     /* wall time of the recovery, microseconds */
    char message[1024];      /* on refusal or error: what, where, what to do */
    kvr_segment_info *segs;  /* segments in id order after recovery (owned) */
    size_t nsegs;
} kvr_report;

/*
 * Recovers the data directory `dir` into the empty key directory kd.
 * now_ms is the wall clock in ms since the epoch, for dropping expired
 * records. flags: KVR_HINTS_READ and/or KVR_HINTS_WRITE (see
 * recovery/kvr_hint.h). A sealed segment (any but the newest) whose hint
 * file is valid and matches it is loaded from the hint without reading its
 * records; the newest segment is always scanned. With KVR_HINTS_WRITE a
 * hint file is written for every sealed segment scanned without a problem
 * (a failure to write one is counted, not an error), and hint files of
 * segments that no longer exist and unfinished ".hint.tmp" files are
 * removed. The caller fsyncs the directory afterwards.
 * Fills *rep (free with kvr_report_free, also after failure).
 * Returns:
 *  KV_OK       recovered (torn tails cut as the mode allows);
 *  KV_CORRUPT  refused: rep->message names the file, offset and the
 *              kvfsck command to run; nothing on disk was changed by the
 *              refused segment;
 *  KV_VERSION  a segment of an unsupported format version;
 *  an errno    an I/O error (message says on which file);
 *  ENOMEM.
 */
kv_status kvr_recover(const kv_io *io, const char *dir, kvr_mode mode, unsigned flags, uint64_t now_ms,
                      kv_keydir *kd, kvr_report *rep);

void kvr_report_free(kvr_report *rep);

/* One human-readable line summarising a report (no newline). Returns the
 * length snprintf would have written. */
int kvr_report_format(const kvr_report *rep, char *buf, size_t cap);

#endif
