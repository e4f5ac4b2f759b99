/*
 * fsck_salvage — kvfsck --salvage: the rewrite of the damaged segments a
 * check found, keeping every record the check applied.
 *
 * Owns: the rewrite of a damaged segment as a format 2 segment that
 * replaces itself (docs/format.md), the copies of the originals.
 * Guarantees: never removes a byte (every original is kept whole as
 * "<segment>.orig"); a crash at any point leaves each segment either the
 * original or the verified rewrite.
 * Never: takes the LOCK (the caller does), or decides what to print.
 */
#ifndef FSCK_SALVAGE_H
#define FSCK_SALVAGE_H

#include <stddef.h>
#include <stdint.h>

#include "fsck_check.h"

/* What a salvage did to one segment. */
typedef struct fsck_salvaged {
    uint32_t id;          /* the segment's id */
    char name[16];        /* the segment, "NNNNNNNNNN.seg" */
    char orig[64];        /* where the original bytes are now, e.g. "NNNNNNNNNN.seg.orig" */
    uint64_t old_bytes;
    uint64_t new_bytes;
    uint64_t records;     /* records kept */
} fsck_salvaged;

/*
 * Rewrites every segment of rep (a check of dir just made by
 * fsck_check, with rep->err == KV_OK, under the LOCK the caller holds)
 * that has a problem, keeping exactly the records the check applied: all
 * valid top-level records in order, whole batches only, out-of-order
 * records dropped. For each such segment S:
 *   1. writes a new segment header and the kept records, byte for byte, to
 *      "S.salvage" and fdatasyncs it; the new bytes are scanned again and
 *      must be clean;
 *   2. copies the original S whole to "S.orig" (".orig.1", ... if taken:
 *      never overwritten) and fdatasyncs it;
 * then fsyncs the directory, renames every "S.salvage" over S (atomic: S
 * is always either the original or the rewrite, so a crash never leaves a
 * hole in the log) and fsyncs the directory again. Segments without a
 * problem are left alone. On *out (malloc'ed, caller frees) and *nout, one
 * entry per rewritten segment.
 * Returns KV_OK, or an errno with msg naming the file and the state left:
 * before the first rename nothing in the log has changed (the temporary
 * files are removed again); after it, some segments may be rewritten and
 * the others untouched, each one whole. KV_CORRUPT if a segment no longer
 * reads as the check saw it.
 */
kv_status fsck_salvage(const kv_io *io, const char *dir, const fsck_report *rep, uint64_t now_ms,
                       fsck_salvaged **out, size_t *nout, char *msg, size_t msgcap);

#endif
