/*
 * kv_store_int — the engine's private header: struct kv_store, the types
 * its modules share, and the functions they call in one another. Included
 * only by the engine's own .c files (kv/engine); nothing outside sees it.
 *
 * Lock domains. struct kv_store holds one sub-struct per lock, and a field
 * is read or written only as its sub-struct says:
 *
 *   (top level)  dir, io, opt, dlock, writer, rep: set by kv_open before
 *                the writer thread starts, then only read (kv_close frees
 *                them once the writer has stopped). No lock.
 *   tab          tab.lock (rwlock): the key directory, the segment table
 *                and the byte counters. Readers share it; the writer
 *                thread, the sweep, compaction and hint writing take it
 *                exclusively, briefly. segment.hinted is under it too.
 *   q            q.mu (mutex; q.cv signals the writer): the write queue,
 *                fail-stop, the last sequence number, group-commit and
 *                media-error statistics, compaction progress. Held only
 *                for a few stores or loads, never across I/O.
 *                q.failstop is also stored atomically (release) by
 *                failstop() under q.mu, after the status and reason, so
 *                that any thread may check it with is_failstop() (an
 *                acquire load) without q.mu; q.fail_status and
 *                q.fail_reason are read only under q.mu
 *                (failstop_status, kv_failstop_reason).
 *   x            x.mu (mutex): expired keys waiting for their tombstone
 *                (kv_expiry.c).
 *   cmp          cmp.mu (mutex): no memory; it serialises the work that
 *                replaces files in the directory: one compaction at a
 *                time, hint writing, and reads of hint files by the scrub
 *                (no output is renamed over a file id while its hint is
 *                read). Held for a whole compaction: never taken by a
 *                reader or by the writer thread.
 *   wr           the writer thread only (kv_writer.c, and kv_open before
 *                it starts and kv_close after it stopped): the active
 *                segment and the group being built. Transactions
 *                (kv_txn_*) run on the writer thread and read it.
 *
 * Lock order: cmp.mu, then tab.lock, then x.mu or q.mu. q.mu and x.mu are
 * leaves: nothing is taken while either is held, and neither is held
 * while the other is taken. Segment reference counts (segment.refs) and
 * segment.bad are atomics, not locked.
 *
 * Naming: a function whose name starts with do_ expects its caller to
 * hold the lock of the data it touches (named in its comment); every
 * other function takes what it needs itself. Functions that touch wr say
 * "writer thread" in their comment.
 */
#ifndef KV_STORE_INT_H
#define KV_STORE_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include "kv_dir.h"
#include "kv_keydir.h"
#include "kv_record.h"
#include "kv_store.h"

/* Most requests gathered into one group commit (bounds a group's memory
 * when many small transactions are queued). */
#define KV_GROUP_MAX_REQUESTS 8192
/* Under everysec and no, dirty log bytes handed to the kernel's writeback
 * at a time (start_writeback). */
#define KV_WRITEBACK_BYTES (4u << 20)
/* Ids from here on are never file ids: they number compaction outputs in
 * the key directory while the store runs (segment.id). Segment files
 * numbered this high are refused. */
#define KV_VIRTUAL_ID_BASE 0x80000000u

/* ---- batches (kv_batch.c) ---- */

typedef struct batch_op {
    uint8_t type; /* KV_REC_PUT or KV_REC_TOMBSTONE */
    uint32_t klen, vlen;
    size_t data_off; /* key then value bytes in the batch arena */
    uint64_t expire_ms;
    uint32_t flags;
} batch_op;

struct kv_batch {
    batch_op *ops;
    size_t nops, cap_ops;
    uint8_t *data;
    size_t data_len, data_cap;
    uint64_t enc_bytes; /* encoded size of the entries */
};

/* Encoded size of a batch as one log write. */
static inline uint64_t batch_wire_size(const kv_batch *b)
{
    return b->nops == 1 ? b->enc_bytes : KV_REC_HEADER_SIZE + b->enc_bytes;
}

/* ---- the store's types ---- */

/* A queued write. batch == NULL is a sync barrier (kv_sync). */
typedef struct req {
    struct req *next;
    const kv_batch *batch; /* a batch write, or NULL */
    const uint8_t *raw;    /* records from a primary, appended verbatim
                              (kv_apply_records), or NULL */
    size_t raw_len;
    int raw_checked;       /* the caller verified the raw records' CRCs */
    kv_txn_fn fn;          /* a transaction, or NULL */
    void *fn_arg;
    kv_write_cb cb;
    void *arg;
    int owned; /* allocated by kv_write_async / kv_submit: freed after cb */
    int seal;  /* a barrier that also seals the active segment (kv_seal) */
    /* Runs alone on the writer thread, in a group of its own, between
     * groups (kv_replace_dir); its status goes to cb. */
    kv_status (*excl)(kv_store *s, void *arg);
} req;

/* An open segment. refs counts the table's reference plus every read in
 * progress; whoever drops it to zero closes the descriptor, so a
 * compaction can retire a segment while readers still use it. */
typedef struct segment {
    uint32_t id;      /* the key directory's number for it (kv_loc.seg) */
    uint32_t file_id; /* the id in its file name: equals id, except for a
                         compaction output while this store runs, which
                         gets a fresh id >= KV_VIRTUAL_ID_BASE so that it
                         and the segments it replaces can be in the table
                         at once while keys move over in small steps */
    int fd;
    int refs;
    int hinted; /* a valid hint file describes it (under tab.lock) */
    int bad;    /* a read hit a media error (atomic; mark_bad) */
    const uint8_t *map; /* read-only mapping of [0, map_len), or NULL */
    uint64_t map_len;
} segment;

/* One put or tombstone of the current group, to publish after the sync. */
typedef struct group_op {
    uint64_t hash;      /* of the key (the key directory's hash): for the
                           group's overlay table and for publishing */
    const uint8_t *key; /* key bytes, then the value's, in the batch arena */
    uint32_t klen, vlen;
    uint8_t type;
    uint32_t len; /* record bytes */
    uint32_t flags;
    uint64_t off; /* offset in the segment */
    uint64_t seq;
    uint64_t expire_ms;
} group_op;

/* A transaction running on the writer thread (kv_submit). */
struct kv_txn {
    kv_store *s;
    kv_batch *b;   /* the transaction's own writes */
    size_t ngops;  /* earlier writes of this group visible to it */
    uint64_t now;
    size_t indexed; /* ops of b in s->wr.tidx (0: the index is not built) */
};

/* An expired key waiting for its tombstone (durable expiry, kv_expiry.c). */
typedef struct expired_key {
    uint64_t seq;  /* of the expired put */
    uint32_t klen;
    uint8_t swept; /* 1: the sweep dropped the key from the key directory */
    uint8_t *key;  /* malloc'ed */
} expired_key;

/* A set of sequence numbers (open addressing, 0 = empty slot: sequence
 * numbers start at 1). */
typedef struct seqset {
    uint64_t *v;
    size_t cap, n; /* cap: 0 or a power of two */
} seqset;

struct kv_store {
    /* Set by kv_open, then read-only (see the top of this file). */
    char *dir;
    const kv_io *io;
    kv_options opt;
    kv_dir_lock dlock; /* the directory and DIR/LOCK (kv_dir_lock_acquire) */
    pthread_t writer;
    kvr_report rep;
    /* Where a read reports a key it found expired: note_expired
     * (kv_expiry.c), set by kv_open. A pointer, not a call, because the
     * read path sits below expiry, which writes the tombstone through a
     * transaction, and a transaction reads through the read path. */
    void (*on_expired)(kv_store *s, const void *key, size_t klen, uint64_t seq);
    /* Atomics, any thread (kv_set_replica, kv_set_retention). */
    int replica;           /* 1: a replica's store: expiry writes nothing */
    uint64_t retain_bytes; /* compaction leaves the newest this many log bytes */

    /* Under tab.lock: key directory, segment table, byte counters. */
    struct {
        pthread_rwlock_t lock;
        kv_keydir *kd;
        segment **segs; /* in log order: oldest first, the active one last */
        segment **byid; /* the same, sorted by id, for lookups */
        size_t nsegs, cap_segs;
        uint32_t next_vid; /* next id for a compaction output */
        uint64_t live_bytes, dead_bytes, log_bytes, header_bytes, records;
        uint64_t sweep_cursor, expired_swept;
        uint64_t expires;       /* keys in the key directory with an expiry */
        uint64_t hints_written; /* hint files written since open (recovery's included) */
    } tab;

    /* Under q.mu: the write queue, fail-stop and the writer's statistics. */
    struct {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        req *head, *tail;
        int closing;
        int writer_idle; /* the writer waits on cv; the next enqueue wakes it (and clears this) */
        int failstop;    /* 1 once writes are refused; see the top of this file */
        kv_status fail_status;
        char fail_reason[512];
        uint64_t st_groups, st_group_writes, st_fdatasyncs, st_fdatasync_us, st_fdatasync_max_us, st_synced_writes;
        uint64_t last_seq;
        /* Replication (kv_feed.c): the log as far as it is written. The
         * writer sets these right after a group's write(2), before its
         * fdatasync, so that replicas receive a group while it syncs. */
        uint32_t feed_seg;   /* file id of the segment being appended */
        uint64_t feed_end;   /* its bytes written: a group boundary */
        uint64_t feed_seq;   /* the last sequence number written */
        uint64_t synced_seq; /* the last sequence number made durable */
        pthread_cond_t feed_cv; /* broadcast when feed_* move, if feed_waiters */
        int feed_waiters;
        struct kv_feed *feeds;  /* open feeds (their file_id pins history from compaction) */
        uint32_t segs_bad;       /* segments marked bad (mark_bad) */
        uint32_t bad_seg;        /* file id of the last one, and where */
        uint64_t bad_off;
        kv_compact_progress cprog;
    } q;

    /* Under x.mu: expired keys waiting for their tombstone. */
    struct {
        pthread_mutex_t mu;
        expired_key *xpend;      /* noted, not yet taken by the writer */
        size_t nxpend, cap_xpend;
        expired_key *xtaken;     /* taken by the expiry transaction in flight */
        size_t nxtaken, cap_xtaken;
        seqset xnoted;           /* seq of every entry of xpend and xtaken */
        int xqueued;             /* an expiry transaction is queued or running */
        uint64_t expired_on_access, expiry_tombstones;
    } x;

    /* cmp.mu: one compaction or hint writer at a time (no fields). */
    struct {
        pthread_mutex_t mu;
    } cmp;

    /* Writer thread only. */
    struct {
        int active_fd;
        uint32_t active_id;
        uint64_t active_size;
        uint16_t active_version; /* format version of the active segment (1: an old
                                    directory's, appended to until it is sealed) */
        uint64_t active_records; /* top-level data records in the active segment (its trailer counts them) */
        uint64_t unsynced_writes; /* writes appended since the last fdatasync */
        uint64_t written_seq;     /* the last sequence number written (not yet synced, maybe) */
        uint64_t last_sync_ms;
        uint64_t writeback_off; /* the active segment's bytes before this were handed to writeback */
        uint64_t active_end;    /* the active segment's file length when zeros were written
                                   past active_size (prealloc_ahead), else active_size;
                                   UINT64_MAX after a failed zero-fill (length unknown) */
        uint8_t *gbuf;
        size_t gbuf_cap;
        group_op *gops;
        size_t gops_cap;
        uint32_t *ovl;    /* overlay: open-addressing table of gops index + 1, by key */
        size_t ovl_cap;   /* a power of two, at least twice the group's ops */
        kv_batch **tpool; /* batches for the transactions of one group */
        size_t tpool_len, tpool_cap;
        uint32_t *tidx;   /* the running transaction's own writes: open-addressing
                             table of its batch's op index + 1, by key (kv_txn.c) */
        size_t tidx_cap;  /* 0 or a power of two, at least twice the ops indexed */
        size_t xremoving, xwriting; /* what the expiry transaction in flight does */
    } wr;
};

/* ---- shared between the engine's modules ---- */

/* kv_log.c: logs one line through kv_options.log (level KV_LOG_*). */
void logf_(kv_store *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* kv_segtab.c: the segment table. */
/* The path of the store's file of `kind` for file id `id` (kv_dir.h), e.g.
 * "DIR/NNNNNNNNNN.seg". Never fails: kv_open refuses a directory name too
 * long for any of them. */
void file_path(const kv_store *s, kv_file_kind kind, uint32_t id, kv_path *p);
/* Index of segment `id` in tab.byid, or -1 (tab.lock held). */
long do_seg_index(const kv_store *s, uint32_t id);
/* Takes a reference on segment `id` for a read, or NULL (tab.lock held). */
segment *do_seg_acquire(const kv_store *s, uint32_t id);
/* Drops a reference (g may be NULL); the last one closes the segment. */
void seg_release(kv_store *s, segment *g);
/* Adds a segment at the end of the log order, or at its front (front = 1:
 * a compaction output). Returns it, or NULL when out of memory (tab.lock
 * held exclusively, or kv_open). */
segment *do_seg_insert(kv_store *s, int front, uint32_t id, uint32_t file_id, int fd);
/* A segment numbered as its file, at the end. Returns 0 or -ENOMEM. */
int do_seg_add(kv_store *s, uint32_t id, int fd);
/* Takes g out of the table and drops the table's reference (tab.lock held
 * exclusively); readers keep theirs. */
void do_seg_remove(kv_store *s, segment *g);
/* 1 if g is in the table (tab.lock held). */
int do_seg_in_log(const kv_store *s, const segment *g);
/* A read of [off, off + len) of g failed with -EIO or -ENODATA: marks it
 * bad, once, and logs it. Any thread; takes q.mu. */
void mark_bad(kv_store *s, segment *g, uint64_t off, uint32_t len, int err);

/* kv_active.c: the active segment and fail-stop. */
/* Enters fail-stop with status st ("<what> on <segment seg> failed").
 * Keeps the first reason. Any thread; takes q.mu. */
void failstop(kv_store *s, kv_status st, const char *what, uint32_t seg);
/* 1 once the store is in fail-stop. Any thread, no lock (an acquire load). */
int is_failstop(kv_store *s);
/* The status that put the store in fail-stop (the first failure), or
 * KV_OK. Any thread; takes q.mu. */
kv_status failstop_status(kv_store *s);
/* Creates segment `id` durably. Returns its fd or -errno. */
int create_segment(kv_store *s, uint32_t id, uint32_t prev_id, uint64_t prev_end);
/* Writer thread: fdatasync of the active segment, counted in the
 * statistics; a failure enters fail-stop. Returns 0 or -errno. */
int sync_active(kv_store *s);
/* Writer thread: zero-fills ahead of a group of n bytes just written. */
void prealloc_ahead(kv_store *s, size_t n);
/* Writer thread: cuts the zeros past the log end. Returns 0 or -errno. */
int cut_prealloc(kv_store *s);
/* Writer thread: seals the active segment and starts the next. Returns 0,
 * or -1 in fail-stop. */
int rotate(kv_store *s);

/* kv_writer.c: the queue and the writer thread. */
/* Queues r for the writer. Returns KV_OK, or KV_CLOSED (r not queued).
 * Any thread; takes q.mu. */
kv_status enqueue(kv_store *s, req *r);
/* kv_txn.c: queues r (on the caller's stack: not owned; its cb and arg
 * are set here) and waits until the writer completes it. Returns its
 * status, or KV_CLOSED (not queued). Not on the writer thread. */
kv_status enqueue_wait(kv_store *s, req *r);
/* The writer thread's body (pthread_create argument: the store). */
void *writer_main(void *arg);
/* Writer thread: the newest write to `key` among the first n ops of the
 * group being built, or NULL. */
const group_op *overlay_find(const kv_store *s, size_t n, const uint8_t *key, uint32_t klen);

/* kv_expiry.c: durable expiry. */
/* A reader found the put `seq` of key expired: queues its tombstone,
 * without waiting. Any thread; takes x.mu and q.mu (not nested). */
void note_expired(kv_store *s, const void *key, size_t klen, uint64_t seq);
/* Frees the keys of v[0, *n) and sets *n to 0. */
void xkeys_free(expired_key *v, size_t *n);

/* kv_feed.c: replication's view of the log. */
/* Writer thread (and kv_open): segment `seg` now holds `end` bytes written,
 * the last sequence number `seq`; wakes the feeds waiting for more. Takes
 * q.mu. */
void feed_publish(kv_store *s, uint32_t seg, uint64_t end, uint64_t seq);
/* The lowest file id an open feed reads, or UINT32_MAX: compaction leaves
 * that segment and every later one alone (q.mu held). */
uint32_t do_feed_pin(const kv_store *s);

/* kv_hints.c: builds and writes the hint file of sealed segment g (a
 * reference held; the caller holds cmp.mu), without a directory fsync.
 * Returns KV_OK, KV_CORRUPT (damage: no hint), an errno, ENOMEM. */
kv_status write_segment_hint(kv_store *s, segment *g);

/* ---- small helpers ---- */

static inline uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The wall clock for expiry, ms since the epoch (kv_options.clock_ms). */
static inline uint64_t wall_ms(kv_store *s)
{
    if (s->opt.clock_ms) return s->opt.clock_ms(s->opt.clock_arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* 1 if a record expiring at expire_ms (0 = never) is live at now: the
 * negation of kv_expired (kv_record.h), the one expiry rule. */
static inline int live(uint64_t expire_ms, uint64_t now)
{
    return !kv_expired(expire_ms, now);
}

#endif
