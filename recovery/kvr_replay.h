/*
 * kvr_replay — recovery's rules, written once: how the log's records are
 * applied to a key directory, and whether a problem the log reader reports
 * is a torn tail or corruption. Recovery (kvr_recover.c), kvfsck's check
 * (fsck/fsck_check.c) and its salvage (fsck/fsck_salvage.c) all use it, so
 * what kvfsck counts and keeps is what kvd loads.
 *
 * The apply rule (docs/format.md, "Record types" and "Sequence numbers"):
 *  - top-level records are applied in file order, segments in id order;
 *    a record whose sequence number is not above the highest one applied
 *    before it (in any earlier segment too) goes back: it is not applied,
 *    and the caller reports it (KVR_SEQ_ORDER);
 *  - a batch is expanded into its entries, applied in payload order, all
 *    of them (the reader yields only whole, verified batches);
 *  - a tombstone removes its key; a put whose expiry is not later than
 *    now_ms removes its key too (it still hides any older value) and is
 *    counted as expired; any other put points the key at its record.
 *
 * The classification (docs/format.md, "Evidence before a cut" and
 * "Classification"): a problem is a torn tail only in the newest segment
 * (or in the trailer's place of the segment before an empty newest one,
 * a rotation a crash interrupted), and then only where the bytes prove an
 * interrupted write: after the last valid commit mark (version 2), or with
 * nothing valid after it (version 1). Everything else is corruption, in
 * this precedence: sequence going back, missing data, sealed-segment
 * corruption, mid-log corruption.
 *
 * Owns: the apply rule, the counts it keeps, the classification.
 * Guarantees: the key directory after kvr_replay_flush is the same
 * whatever the order of hashing and prefetching inside (puts and deletes
 * are applied in order); nothing of a batch or of a hint is applied when
 * its order check fails.
 * Never: writes files, reads one other than through kvr_tail_find (the
 * newest segment, which it is given open), decides what a problem makes recovery do
 * (refuse, cut, skip: that is kvr_recover's policy), or locks (one
 * kvr_replay belongs to one thread).
 */
#ifndef KVR_REPLAY_H
#define KVR_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "kv_hint.h"
#include "kv_keydir.h"
#include "kv_record.h"
#include "kv_status.h"
#include "kvr_reader.h"

/* ---- the apply rule ---- */

/* Puts and deletes queued ahead of their application (kvr_replay.ring). */
enum { KVR_APPLY_AHEAD = 16 };

/* The state of one replay of a log into a key directory. Fields up to err
 * are for reading; the ring is internal. */
typedef struct kvr_replay {
    kv_keydir *kd;       /* the key directory applied to; NULL: order and counts only */
    uint64_t now_ms;     /* wall clock, ms since the epoch, for expiry */
    uint64_t max_seq;    /* highest sequence number applied (0: none yet) */
    uint64_t records;    /* top-level data records applied */
    uint64_t batches;
    uint64_t entries;    /* puts and tombstones applied, batch entries included */
    uint64_t tombstones;
    uint64_t expired;    /* puts already expired at now_ms, applied as deletes */
    kv_status err;       /* KV_OK, or ENOMEM once the key directory could not grow
                            (sticky: nothing more is applied) */
    /* Puts and deletes waiting to be applied, oldest at ring_head: each is
     * hashed and its bucket prefetched KVR_APPLY_AHEAD entries before it
     * is applied, and the bucket's first entry half way there. A key
     * directory of millions of keys misses the cache on almost every
     * bucket; this lets those misses overlap. */
    struct kvr_pending_op {
        const uint8_t *key; /* into the caller's buffer (segment or hint file) */
        uint32_t klen;
        int del;
        kv_loc loc;
        uint64_t hash;
    } ring[KVR_APPLY_AHEAD];
    size_t ring_head, ring_n;
} kvr_replay;

/* Starts a replay into kd (may be NULL: then only the order is checked and
 * records counted, as kvfsck's salvage needs) at wall clock now_ms. */
void kvr_replay_init(kvr_replay *rp, kv_keydir *kd, uint64_t now_ms);

/*
 * Applies one valid top-level record of segment seg found at byte offset
 * off, as the reader yielded it (for a batch, r->val holds its verified
 * entries). Queued puts and deletes point into the record's buffer:
 * call kvr_replay_flush before that buffer is freed.
 * Returns KV_OK (applied and counted; a mark, kv_record_is_mark, is
 * neither), KV_CORRUPT when r's sequence number goes back (not above
 * max_seq: nothing applied; the caller reports KVR_SEQ_ORDER), or ENOMEM
 * (rp->err is set).
 */
kv_status kvr_replay_record(kvr_replay *rp, uint32_t seg, uint64_t off, const kv_record *r);

/*
 * Applies the hint file of sealed segment seg, buf[0, len), which
 * kvh_decode accepted into *h (and the caller checked against the
 * segment), as scanning the segment would: every entry in order, the
 * counts of the hint's header, max_seq its last sequence number. Flushes
 * before it returns, so buf may be freed at once.
 * Returns KV_OK, KV_CORRUPT when the hint's first sequence number goes
 * back (nothing applied: the caller scans the segment, which reports where
 * the order breaks), or ENOMEM (rp->err).
 */
kv_status kvr_replay_hint(kvr_replay *rp, uint32_t seg, const uint8_t *buf, size_t len, const kvh_header *h);

/* Applies every queued put and delete. Call it before the buffer that the
 * queued keys point into is freed, and before reading the key directory. */
void kvr_replay_flush(kvr_replay *rp);

/* ---- the classification ---- */

/* Kinds of problem, in order of precedence (as kvfsck names them). */
typedef enum kvr_kind {
    KVR_KIND_TORN_TAIL = 0, /* an interrupted write at the end of the log: cut */
    KVR_KIND_MID_LOG,       /* damage in the newest segment, not a torn tail */
    KVR_KIND_SEALED,        /* damage in a segment that is not the newest */
    KVR_KIND_SEQ_BACK,      /* a valid record whose sequence number goes back */
    KVR_KIND_MISSING,       /* a missing piece of the log (kvr_reason_is_missing_data) */
} kvr_kind;

/* The kind of problem p in a segment that is (newest = 1) or is not the
 * newest, given whether the evidence makes it a torn tail (torn: from
 * kvr_is_torn, which allows one in the segment before an empty newest
 * one; with the reader's view alone, newest && !p->valid_after).
 * SEQ_BACK and MISSING go by p's reason whatever torn says; otherwise a
 * torn tail is TORN_TAIL, other damage MID_LOG in the newest segment and
 * SEALED elsewhere. */
kvr_kind kvr_classify(const kvr_problem *p, int newest, int torn);

/* 1 if problem p, in a segment that is (newest = 1) or is not the newest,
 * is unwritten space rather than a problem: zeros ending the newest
 * segment (KVR_UNWRITTEN), which recovery cuts without saving and kvfsck
 * does not count. At the end of a sealed segment they are damage. */
int kvr_is_unwritten_space(const kvr_problem *p, int newest);

/* What recovery knows about the segment it scans, that decides whether a
 * problem in it can be a torn tail. */
typedef struct kvr_tail {
    int newest;         /* the newest segment */
    int marked;         /* the newest segment is of version 2: its torn tail starts
                           at or after torn_from, whatever follows it */
    int window;         /* the segment before an empty newest one whose header
                           names it: a rotation a crash interrupted may have left
                           its trailer missing or torn, at torn_from */
    uint64_t torn_from; /* byte offset: the end of the last complete group
                           (kvr_tail_find), or where the window's trailer belongs */
} kvr_tail;

/* 1 if problem p is a torn tail of the segment t describes: never a
 * sequence going back or missing data, never in a sealed segment but the
 * window; in the window or a version 2 newest segment, at or after
 * t->torn_from; in a version 1 newest segment, with nothing valid after. */
int kvr_is_torn(const kvr_tail *t, const kvr_problem *p);

/* 1 if problem p is unwritten space of the segment t describes: the
 * newest segment's trailing zeros, or the window's after torn_from. */
int kvr_tail_unwritten(const kvr_tail *t, const kvr_problem *p);

/*
 * For the newest segment of version 2, the first len bytes of the open
 * file fd, read through io and the reader's window (kvr_scan_fd): where its
 * torn tail may start. A group the writer completed ends with a commit
 * mark, so the bytes after the last valid mark are the only ones a crash
 * can have left incomplete (t->torn_from = the end of that mark, or the
 * segment header's end). One exception the pages of the last group prove:
 * if every bad region before the last mark is zero-filled and inside the
 * group that mark closes, the disk persisted that unsynced group's pages
 * out of order, and the whole group is torn: t->torn_from is then the
 * group's start and 1 is returned (the caller cuts there). Sets
 * t->marked. Returns 0 otherwise (also when the header is unreadable or
 * a read fails, which the caller's own scan then meets: torn_from is
 * left as it was). docs/format.md, "Evidence before a
 * cut", points 1 and 2.
 */
int kvr_tail_find(kvr_tail *t, const kv_io *io, int fd, uint64_t len, uint32_t id);

#endif
