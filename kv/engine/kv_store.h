/*
 * kv_store — the storage engine: a Bitcask-style log-structured hash table.
 *
 * Owns: a data directory (segments, LOCK), the key directory, the segment
 * descriptors, and the group-commit writer thread.
 * Guarantees:
 *  - kv_open takes an exclusive flock on DIR itself and on DIR/LOCK
 *    (kv_dir_lock_acquire; deleting LOCK does not let a second open in) and runs recovery
 *    (recovery/kvr_recover.h) before anything else touches the files.
 *  - Every write (put, delete, batch) is one record or one batch record,
 *    appended by a single writer thread. Under KV_FSYNC_ALWAYS a write
 *    returns only after its record was fdatasync'ed; writes from many
 *    threads that arrive while a sync runs share the next write() and
 *    fdatasync() (group commit). Under EVERYSEC and NO a write returns
 *    after write(); EVERYSEC fdatasyncs at most about one second after the
 *    previous sync (a monotonic clock), so at most the last second of
 *    acknowledged writes is at risk from a power cut.
 *  - A write is visible to readers only once it would be acknowledged.
 *  - Every value returned was CRC-verified after it was read from disk;
 *    a failed check returns KV_CORRUPT, never the bytes.
 *  - Fail-stop: after a failed write, fdatasync or segment creation (disk
 *    full included) the store refuses every later write with KV_FAILSTOP
 *    (the failing write gets the errno, e.g. EIO or ENOSPC) and never
 *    retries; reads go on. kv_failstop_reason() says why. Restart to
 *    recover from what is on disk.
 *  - Batches are atomic after a crash: all of a batch's entries or none.
 *  - Expiry is durable: a key found expired (on access or by
 *    kv_expire_sweep) gets a tombstone in the log, written by the writer
 *    after the read has returned, so it stays gone after a restart even
 *    if the wall clock went back. A read never waits for it.
 *  - A media error under a record (EIO from the disk, a SIGBUS under the
 *    segment's mapping, a segment file shorter than its records) fails
 *    that read with EIO (or KV_CORRUPT when the file is short), marks the
 *    segment bad (kv_stats.segments_bad) and is logged once per segment
 *    with the kvfsck command to run; the process goes on. An EIO while a
 *    compaction or kv_write_hints reads a segment marks it the same way.
 * Locking: every function here is thread-safe unless it says otherwise.
 * Inside, the key directory and the segment table are under one rwlock
 * that readers share and the writer thread takes briefly to publish a
 * group; kv/engine/kv_store_int.h states every lock and what it guards.
 * Never: forks, or keeps values in memory.
 */
#ifndef KV_STORE_H
#define KV_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kv_io.h"
#include "kv_status.h"
#include "kvr_recover.h"

typedef struct kv_store kv_store;

typedef enum kv_fsync_policy {
    KV_FSYNC_ALWAYS = 0, /* fdatasync before acknowledging (default) */
    KV_FSYNC_EVERYSEC,   /* acknowledge after write(); fdatasync every second */
    KV_FSYNC_NO,         /* acknowledge after write(); the OS decides */
} kv_fsync_policy;

/* "always", "everysec", "no". */
const char *kv_fsync_name(kv_fsync_policy p);
/* Parses a policy name. Returns KV_OK or KV_INVALID. */
kv_status kv_fsync_parse(const char *s, kv_fsync_policy *p);

enum { KV_LOG_DEBUG = 0, KV_LOG_INFO, KV_LOG_WARN, KV_LOG_ERROR };
/* Log sink: level is KV_LOG_*, msg one line without newline. Called from
 * any thread, so it must be thread-safe. */
typedef void (*kv_log_fn)(void *arg, int level, const char *msg);

typedef struct kv_options {
    const kv_io *io;            /* NULL: POSIX */
    kv_fsync_policy fsync;      /* default KV_FSYNC_ALWAYS */
    uint64_t segment_max_bytes; /* rotate once the active segment reaches this
                                   many bytes (default 64 MiB, 4 KiB..2 GiB);
                                   a segment may pass it by one group */
    size_t group_max_bytes;     /* most bytes gathered into one group commit
                                   (default 4 MiB; one write is never split) */
    kvr_mode recovery_mode;     /* default KVR_TOLERATE_TAIL */
    kv_log_fn log;              /* NULL: silent */
    void *log_arg;
    uint64_t (*clock_ms)(void *arg); /* wall clock for expiry, ms since the
                                        epoch; NULL: CLOCK_REALTIME */
    void *clock_arg;
    int hint_files;             /* 1 (default): read hint files at open and
                                   write one for every sealed segment
                                   (recovery/kvr_hint.h); 0: neither */
    int preallocate;            /* 1 (default): zero-fill the active segment
                                   1 MiB ahead of the log end, so that a
                                   group's fdatasync does not also write the
                                   file's new length; the zeros past the last
                                   record are cut when the segment is sealed,
                                   at close, and by recovery after a crash
                                   (KVR_UNWRITTEN). 0: plain appends */
} kv_options;

#define KV_DEFAULT_SEGMENT_MAX (64ull << 20)
#define KV_MIN_SEGMENT_MAX 4096ull
/* Largest segment_max_bytes: a segment may pass it by one group (one
 * write of at most a batch, 1 GiB) and must stay under the 4 GiB the
 * reader loads. */
#define KV_MAX_SEGMENT_MAX (2ull << 30)
#define KV_DEFAULT_GROUP_MAX (4u << 20)

/* Fills *o with the defaults above. */
void kv_options_init(kv_options *o);

/*
 * Opens (creating if absent) the data directory dir: takes its lock
 * (kv_dir_lock_acquire: the directory itself and DIR/LOCK), runs
 * recovery, opens or creates the active segment and starts the writer.
 * report (may be NULL) receives the recovery report; free it with
 * kvr_report_free() whether or not the open succeeded. On failure *out is
 * NULL and, when report is given, report->message says why.
 * Errors: KV_LOCKED (another process holds the directory), KV_CORRUPT
 * (recovery refused: mid-log corruption), KV_VERSION, KV_INVALID (bad
 * options), an errno from the I/O layer, ENOMEM.
 */
kv_status kv_open(const char *dir, const kv_options *opt, kv_store **out, kvr_report *report);

/*
 * Stops the writer after it has finished every queued write, fdatasyncs
 * the active segment (unless in fail-stop), closes the files and releases
 * the lock. Returns KV_OK or the errno of the final sync. The store is
 * freed either way. Must not race with other calls on the same store.
 */
kv_status kv_close(kv_store *s);

/* ---- writes ---- */

/* A batch of puts and deletes, applied atomically by kv_write. Not
 * thread-safe; each thread builds its own. */
typedef struct kv_batch kv_batch;

kv_batch *kv_batch_new(void);
void kv_batch_free(kv_batch *b);
void kv_batch_clear(kv_batch *b);
size_t kv_batch_count(const kv_batch *b);

/* Adds a put (key and value are copied). expire_ms: absolute expiry in ms
 * since the epoch, 0 for none. flags: 32 client flag bits stored with the
 * value. Returns KV_OK, KV_INVALID (key over KV_MAX_KEY_LEN, value over
 * KV_MAX_VALUE_LEN, or the batch over KV_MAX_BATCH_LEN bytes), ENOMEM. */
kv_status kv_batch_put(kv_batch *b, const void *key, size_t klen, const void *val, size_t vlen,
                       uint64_t expire_ms, uint32_t flags);

/* Adds a delete (a tombstone). Same errors as kv_batch_put. */
kv_status kv_batch_delete(kv_batch *b, const void *key, size_t klen);

/*
 * Writes a batch atomically and waits until it is acknowledged under the
 * store's fsync policy. A batch of one delete of an absent or expired key
 * writes nothing and returns KV_NOT_FOUND. The batch is not changed.
 * Errors: KV_INVALID (empty batch), KV_FAILSTOP, EIO / ENOSPC / another
 * errno (the write that failed and put the store in fail-stop), KV_CLOSED.
 */
kv_status kv_write(kv_store *s, const kv_batch *b);

/* Completion of an asynchronous write: st as kv_write would return it.
 * Called on the writer thread; it must be quick and must not call
 * kv_write or kv_close. */
typedef void (*kv_write_cb)(void *arg, kv_status st);

/*
 * Queues a batch and returns at once; cb runs when the write is
 * acknowledged or failed. The batch must stay unchanged until then.
 * Returns KV_OK (cb will run exactly once) or KV_INVALID / KV_CLOSED /
 * ENOMEM (cb will not run).
 */
kv_status kv_write_async(kv_store *s, const kv_batch *b, kv_write_cb cb, void *arg);

/* One put, as a batch of one. */
kv_status kv_put(kv_store *s, const void *key, size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
                 uint32_t flags);

/* One delete. Returns KV_OK if the key existed (a tombstone was written),
 * KV_NOT_FOUND if it did not (nothing written), or a write error. */
kv_status kv_delete(kv_store *s, const void *key, size_t klen);

/* Syncs and seals the active segment, if it holds any record, and starts
 * a new one, so that a compaction can include everything written so far
 * (kvcompact). Returns KV_OK or a write error. */
kv_status kv_seal(kv_store *s);

/* ---- transactions: read-modify-write on the writer thread ---- */

/* A transaction in progress. Valid only inside its kv_txn_fn. */
typedef struct kv_txn kv_txn;
typedef struct kv_value kv_value; /* defined with the reads below */

/*
 * Runs on the writer thread, in queue order with every other write, so it
 * is serialised against all writes: what it reads cannot change before
 * its own writes land (INCR, SETNX, WATCH/EXEC are built on this). Its
 * reads see every earlier write, including those of its own group that
 * are not yet synced; it must not reveal them before its completion
 * callback runs, which happens only once its group is acknowledged.
 * Its writes form one record (or one batch record): all or nothing.
 * Return KV_OK to commit its writes (there may be none); any other status
 * discards them and is passed to the completion callback. It must not
 * block on other writes (no kv_write / kv_sync / kv_close inside).
 */
typedef kv_status (*kv_txn_fn)(kv_txn *t, void *arg);

/*
 * Queues a transaction and returns at once. cb(arg, st) runs on the writer
 * thread after fn ran and its writes were acknowledged under the fsync
 * policy (st KV_OK or fn's status), or failed (EIO, ENOSPC, KV_FAILSTOP:
 * then fn's writes are not applied; fn may not have run at all).
 * Returns KV_OK (cb will run exactly once), KV_CLOSED or ENOMEM.
 */
kv_status kv_submit(kv_store *s, kv_txn_fn fn, void *fn_arg, kv_write_cb cb, void *arg);

/* Inside a transaction: read a value (as kv_get, also seeing unsynced
 * writes of earlier requests and of this transaction). */
kv_status kv_txn_get(kv_txn *t, const void *key, size_t klen, kv_value *v);

/* Inside a transaction: expiry (0 = none) and sequence number of a live
 * key (UINT64_MAX if this transaction wrote it), or KV_NOT_FOUND. */
kv_status kv_txn_key_info(kv_txn *t, const void *key, size_t klen, uint64_t *expire_ms, uint64_t *seq);

/* Inside a transaction: add a put (copied). Errors as kv_batch_put. */
kv_status kv_txn_put(kv_txn *t, const void *key, size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
                     uint32_t flags);

/* Inside a transaction: delete a live key. Returns KV_OK (tombstone
 * added) or KV_NOT_FOUND (nothing to delete; nothing added). */
kv_status kv_txn_delete(kv_txn *t, const void *key, size_t klen);

/* Inside a transaction: delete every key (FLUSHALL). *deleted (may be
 * NULL) receives the number of keys. Returns KV_OK or ENOMEM / KV_INVALID
 * (more keys than one batch can hold). */
kv_status kv_txn_delete_all(kv_txn *t, size_t *deleted);

/* The wall clock the transaction uses for expiry, ms since the epoch. */
uint64_t kv_txn_now_ms(const kv_txn *t);

/* Waits until everything acknowledged so far is fdatasync'ed (whatever the
 * policy). Returns KV_OK, KV_FAILSTOP or the errno of a failed sync. */
kv_status kv_sync(kv_store *s);

/* ---- reads ---- */

/* A value read from the log. data/len is the value; free with
 * kv_value_free. */
typedef struct kv_value {
    const uint8_t *data;
    size_t len;
    uint64_t expire_ms; /* 0 = none */
    uint32_t flags;
    uint64_t seq;
    void *buf_;         /* private: the record buffer */
} kv_value;

void kv_value_free(kv_value *v);

/*
 * Reads a key's value with one pread, verifies the record's CRCs and that
 * it is the record the key directory expects, and returns it in *v.
 * Errors: KV_NOT_FOUND (absent, deleted or expired), KV_CORRUPT (the
 * record failed verification; nothing is returned), an errno from pread,
 * ENOMEM.
 */
kv_status kv_get(kv_store *s, const void *key, size_t klen, kv_value *v);

/*
 * Reads n keys as of one moment (no write is published between the
 * lookups): sts[i] is kv_get's status for keys[i], and vals[i] its value
 * when KV_OK (free each with kv_value_free). vals may be NULL to check
 * existence only (no disk read). Returns KV_OK, or ENOMEM (nothing
 * filled).
 */
kv_status kv_mget(kv_store *s, size_t n, const uint8_t *const *keys, const size_t *klens, kv_value *vals,
                  kv_status *sts);

/* Looks a key up in memory only (no disk read). Returns KV_OK and its
 * expiry (0 = none) in *expire_ms (may be NULL), or KV_NOT_FOUND. */
kv_status kv_exists(kv_store *s, const void *key, size_t klen, uint64_t *expire_ms);

/* Like kv_exists, also returning the sequence number of the key's record
 * (for WATCH: it changes whenever the key is written). */
kv_status kv_key_info(kv_store *s, const void *key, size_t klen, uint64_t *expire_ms, uint64_t *seq);

/* Called by kv_scan for each live key. Runs under the store's read lock:
 * it must not call into the store. */
typedef void (*kv_scan_fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expire_ms);

/*
 * Iterates keys in the style of Redis's SCAN: call with cursor 0, then
 * with each returned *next until it is 0. Visits about `count` keys per
 * call. Every key present for the whole iteration is visited at least
 * once; expired keys are skipped. Returns KV_OK.
 */
kv_status kv_scan(kv_store *s, uint64_t cursor, size_t count, kv_scan_fn fn, void *arg, uint64_t *next);

/*
 * Removes up to max_keys expired keys from the key directory, resuming
 * where the previous sweep stopped, and queues a tombstone for each (one
 * expiry transaction writes them in the group commit: the sweep does not
 * wait for it). Keys already found expired by a reader are left to that
 * reader's tombstone. In fail-stop the keys only leave memory. Returns the
 * number removed (kv_stats.expired_swept adds them up).
 */
size_t kv_expire_sweep(kv_store *s, size_t max_keys);

/* Waits until every expired key noted so far (by readers or the sweep)
 * has its tombstone written, or dropped because the store is in
 * fail-stop or closing. kv_close calls it; tests use it to wait for the
 * keys' removal. Must not be called on the writer thread. */
void kv_expire_flush(kv_store *s);

/* ---- compaction ---- */

/* What one compaction did. */
typedef struct kv_compact_report {
    uint32_t segments_in;       /* sealed segments compacted (0: nothing to do) */
    uint32_t output_segment;    /* id of the segment that replaces them */
    uint64_t bytes_before;      /* bytes of the compacted segments */
    uint64_t bytes_after;       /* bytes of the output */
    uint64_t records_copied;    /* live records copied */
    uint64_t dead_dropped;      /* overwritten or deleted records dropped */
    uint64_t tombstones_dropped;
    uint64_t expired_dropped;
    uint64_t elapsed_us;
    uint64_t switch_us;         /* longest single hold of the key
                                   directory's write lock while switching
                                   keys to the output, microseconds */
    char message[512];          /* on failure: why */
} kv_compact_report;

/* Compaction state for INFO. */
typedef struct kv_compact_progress {
    int running;
    uint64_t runs;              /* compactions completed */
    uint64_t bytes_total;       /* of the running one's inputs */
    uint64_t bytes_done;        /* read so far */
    uint64_t bytes_reclaimed;   /* by all completed runs */
    kv_status last_status;      /* of the last run */
    uint64_t last_switch_us;    /* the last run's switch_us */
} kv_compact_progress;

/*
 * Compacts the sealed segments, oldest first (at most 2 GiB of them per
 * run), into one new segment holding only their live records, while
 * readers and writers go on. The output replaces the newest input's id;
 * its header names the first input id, so a crash at any point leaves a
 * directory that recovers to the same keys: before the output's rename
 * the inputs are the log, after it the output is (recovery removes inputs
 * it supersedes). Sequence: write the output as "<id>.seg.compact",
 * fdatasync, rename over "<id>.seg", fsync the directory, switch the key
 * directory to the output 2048 keys per hold of the write lock (the
 * output is in the segment table under a fresh id beside its inputs
 * meanwhile, so every key stays readable; a key written meanwhile keeps
 * its newer record), drop the inputs from the table, write the output's
 * hint file, unlink the other inputs and their hints, fsync the
 * directory.
 * Tombstones and expired records are dropped: nothing older than the
 * compacted range remains for them to shadow. A failure (ENOSPC, EIO,
 * damage found in an input) leaves the inputs in place and the store
 * serving; it never puts the store in fail-stop.
 * Returns KV_OK (rep->segments_in may be 0: nothing to compact),
 * KV_FAILSTOP, KV_CORRUPT (an input has damage: run kvfsck), an errno.
 * Blocks the caller for the whole run; one compaction runs at a time.
 */
kv_status kv_compact(kv_store *s, kv_compact_report *rep);

/* Copies the compaction state. */
void kv_compact_progress_get(kv_store *s, kv_compact_progress *p);

/* ---- hint files ---- */

/*
 * Writes a hint file (recovery/kvr_hint.h) for every sealed segment that
 * has none yet: reads the segment through its open descriptor, builds the
 * hint from a clean scan, writes it durably (temporary file, fdatasync,
 * rename, then one directory fsync). Runs beside readers and the writer
 * (it holds no store lock while reading or writing) and never at the same
 * time as a compaction. A segment with damage gets no hint. *written (may
 * be NULL) receives the number written. Returns KV_OK (also when hint
 * files are disabled: nothing to do), KV_CORRUPT if a sealed segment had
 * damage (the others still got theirs), an errno of the first failed
 * write (the store is unaffected: a missing hint only slows the next
 * start), or ENOMEM.
 */
kv_status kv_write_hints(kv_store *s, uint32_t *written);

/* Sealed segments without a hint file (0 when hint files are disabled). */
uint32_t kv_hints_pending(kv_store *s);

/* ---- sealed segments, for a reader outside the store (kv/engine/kv_scrub.h) ---- */

/* A sealed segment held for reading. While held, its descriptor and
 * mapping stay open even if a compaction retires it meanwhile (the
 * segment's reference count, as a read holds it). Read only: sealed
 * segments are never written again. */
typedef struct kv_sealed {
    uint32_t id;        /* the store's number for it (kv_sealed_list) */
    uint32_t file_id;   /* the id in its file name, NNNNNNNNNN.seg */
    int fd;             /* its descriptor, for the store's kv_io (kv_store_io) */
    const uint8_t *map; /* read-only mapping covering [0, size), or NULL:
                           then read through fd */
    uint64_t size;      /* file length in bytes when it was held */
    void *ref_;         /* private: the segment descriptor */
} kv_sealed;

/* Stores the ids of the sealed segments (every segment but the one being
 * appended), oldest first, in ids[0, min(cap, n)). Returns n, the number
 * of sealed segments. */
size_t kv_sealed_list(kv_store *s, uint32_t *ids, size_t cap);

/* Takes a reference on sealed segment `id` and fills *h. Returns KV_OK,
 * KV_NOT_FOUND (no longer in the log: a compaction replaced it; or it is
 * the segment being appended), or an errno of fsize (nothing held). */
kv_status kv_sealed_hold(kv_store *s, uint32_t id, kv_sealed *h);

/* A read of [off, off + len) of held segment h, outside the store (the
 * scrub), failed with a media error: err is -EIO (from pread, or a SIGBUS
 * under h->map) or -ENODATA (the file is shorter). Marks the segment bad
 * as a failed read of a value does: kv_stats.segments_bad, bad_segment
 * and bad_offset, and one log line per segment with the kvfsck command. */
void kv_sealed_media_error(kv_store *s, const kv_sealed *h, uint64_t off, uint64_t len, int err);

/* Drops the reference kv_sealed_hold took (h may be zeroed: no-op). */
void kv_sealed_release(kv_store *s, kv_sealed *h);

/* 1 once the held segment has left the log (a compaction replaced it),
 * else 0. */
int kv_sealed_retired(kv_store *s, const kv_sealed *h);

/*
 * Reads the hint file of the held segment as it stands beside it: under
 * the lock that compaction and hint writing hold, so the file read is the
 * one that describes this segment, not one written for a compaction's
 * output of the same file id. On KV_OK *buf (malloc'ed, caller frees)
 * holds *len bytes. Returns KV_OK, KV_NOT_FOUND (no hint file, hint files
 * disabled, or the segment has left the log), EFBIG (larger than
 * KVH_MAX_FILE_BYTES), another errno, or ENOMEM. May wait for a
 * compaction in progress to finish.
 */
kv_status kv_sealed_read_hint(kv_store *s, const kv_sealed *h, uint8_t **buf, uint64_t *len);

/* The data directory and I/O layer the store was opened with. */
const char *kv_store_dir(const kv_store *s);
const kv_io *kv_store_io(const kv_store *s);

/* Logs one line through the store's kv_options.log (level KV_LOG_*), so
 * that a module beside the store logs where the store does. */
void kv_store_log(kv_store *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- replication: the log as a stream (kv/engine/kv_feed.c) ---- */

/* Where a store's log stands, as sequence numbers (docs/replication.md:
 * the replication offset is the last sequence number). */
typedef struct kv_repl_pos {
    uint64_t applied_seq; /* the last one acknowledged and visible to readers */
    uint64_t written_seq; /* the last one written to the log (maybe not yet synced) */
    uint64_t synced_seq;  /* the last one made durable by fdatasync */
} kv_repl_pos;
void kv_repl_position(kv_store *s, kv_repl_pos *p);
/* kv_repl_pos.applied_seq, for a write's completion callback (kv_write_cb,
 * kv_submit's cb): those run on the writer thread, the one thread that
 * changes it, so no lock is taken. Elsewhere: kv_repl_position. */
uint64_t kv_completed_seq(kv_store *s);

/* A replica's store: readers still answer "absent" for expired keys, but
 * no expiry tombstone is noted or written (the primary's arrive in the
 * stream), and kv_expire_sweep removes nothing. Any thread. */
void kv_set_replica(kv_store *s, int on);
int kv_is_replica(kv_store *s);

/* Replication history: compaction leaves alone every sealed segment that
 * holds any of the newest `bytes` bytes of the log (0: no bound), so that
 * a replica that falls that far behind can still resume from the log
 * (kv_feed_open). Any thread. */
void kv_set_retention(kv_store *s, uint64_t bytes);

/*
 * A replica appends records its primary wrote: buf[0, len) holds whole
 * top-level data records (put, tombstone, batch) as the primary's log has
 * them, back to back, the first with sequence number last_seq + 1 and
 * each following on from the one before. They are appended verbatim, with
 * their sequence numbers, in the group commit, and the call returns when
 * they are acknowledged under the fsync policy. The writer checks every
 * record again before anything is written (its header CRC and fields,
 * lengths, batch entries, the order; and, unless crc_checked says the
 * caller has just verified every record's CRC, that too) and refuses the
 * whole request, writing nothing, if one fails. Not on the writer thread.
 * Returns KV_OK, KV_CORRUPT (a bad record), KV_INVALID (empty, or a
 * sequence number out of order), KV_CLOSED, a write error.
 */
kv_status kv_apply_records(kv_store *s, const uint8_t *buf, size_t len, int crc_checked);

/*
 * A replica's full sync: replaces the store's whole contents with the data
 * directory newdir, which holds a snapshot of its primary's log. newdir is
 * opened and recovered first, as kv_open would (every record's CRC checked
 * where no hint covers it), and must end at sequence number expect_seq
 * (0: any). Then, on the writer thread between two groups, the two
 * directories are exchanged in one atomic rename (kv_io.exchange:
 * renameat2 RENAME_EXCHANGE), so the store's own path holds the new
 * contents and newdir the old ones (the caller removes them), and every
 * reader and the writer switch over at once. A crash at any point leaves
 * one whole directory or the other at the store's path.
 * Waits for a running compaction first. Feeds open on the old contents
 * must be closed by the caller (their history ends). report (may be NULL)
 * receives newdir's recovery report (free it with kvr_report_free).
 * Returns KV_OK; or, with the old contents still in place and in use,
 * KV_CORRUPT (newdir has damage, or ends elsewhere than expect_seq), an
 * error of recovering newdir, ENOSYS (the I/O layer cannot exchange),
 * KV_FAILSTOP, an errno, ENOMEM.
 */
kv_status kv_replace_dir(kv_store *s, const char *newdir, uint64_t expect_seq, kvr_report *report);

/* A reader of the log's data records from a sequence number on. */
typedef struct kv_feed kv_feed;
/*
 * Opens a feed at from_seq: the first record it yields has that sequence
 * number (from_seq = last_seq + 1: the feed waits for the next write).
 * Returns KV_OK, KV_NOT_FOUND (the log no longer holds the records from
 * from_seq on as they were written: a compaction replaced them, they are
 * past the log's end, or from_seq falls inside a batch), an errno, ENOMEM.
 */
kv_status kv_feed_open(kv_store *s, uint64_t from_seq, kv_feed **out);
/*
 * Appends the next whole records, verbatim and CRC-checked, to *buf
 * (grown with realloc: *cap bytes), setting *len to the bytes appended:
 * records up to max_bytes (at least one), or, when none is written yet,
 * waits up to wait_ms milliseconds for one (then *len may be 0).
 * Returns KV_OK, KV_NOT_FOUND (a gap: the next records left the log, the
 * feed cannot go on), KV_CORRUPT (a record failed its check), KV_CLOSED
 * (the store is closing), an errno, ENOMEM.
 */
kv_status kv_feed_read(kv_feed *f, uint8_t **buf, size_t *cap, size_t *len, size_t max_bytes, int wait_ms);
/* The sequence number of the next record the feed yields. */
uint64_t kv_feed_next_seq(const kv_feed *f);
void kv_feed_close(kv_feed *f);

/* One segment file of a snapshot. */
typedef struct kv_snapshot_file {
    uint32_t file_id; /* NNNNNNNNNN.seg */
    int fd;           /* read through kv_store_io(); held open */
    uint64_t size;    /* bytes of it in the snapshot */
    void *ref_;
} kv_snapshot_file;
/* The log at one group boundary: every segment in log order, the one
 * being appended cut at the last group written. */
typedef struct kv_snapshot {
    kv_snapshot_file *files;
    size_t n;
    uint64_t seq; /* the last sequence number in it */
} kv_snapshot;
/* Holds a snapshot: the files stay readable, at those sizes, until
 * released, whatever compaction and the writer do meanwhile (may wait
 * for a running compaction to finish). Returns KV_OK, an errno, ENOMEM. */
kv_status kv_snapshot_hold(kv_store *s, kv_snapshot *snap);
void kv_snapshot_release(kv_store *s, kv_snapshot *snap);

/* ---- state ---- */

typedef struct kv_stats {
    uint64_t keys;            /* keys in the key directory (incl. expired not yet swept) */
    uint64_t live_bytes;      /* bytes of records the key directory points at */
    uint64_t dead_bytes;      /* other record bytes: overwritten, deleted, tombstones, batch headers */
    uint64_t log_bytes;       /* all segment bytes, headers included */
    uint64_t records;         /* top-level records in the log (recovered + written) */
    uint32_t segments;
    uint32_t active_segment;  /* id of the segment being appended */
    uint64_t last_seq;        /* newest sequence number */
    uint64_t groups;          /* group commits written */
    uint64_t group_writes;    /* writes (batches) in those groups */
    uint64_t fdatasyncs;      /* fdatasync calls on segments */
    uint64_t fdatasync_us;    /* total time in them, microseconds */
    uint64_t fdatasync_max_us;
    uint64_t synced_writes;   /* writes covered by an fdatasync */
    uint64_t expired_swept;   /* expired keys removed by kv_expire_sweep */
    uint64_t expired_on_access; /* expired keys removed by the tombstone of a
                                   read that found them expired */
    uint64_t expiry_tombstones; /* tombstones written for expired keys */
    uint64_t expiry_pending;  /* expired keys whose tombstone is not written yet */
    uint64_t expires;         /* keys with an expiry */
    kv_fsync_policy fsync;
    int failstop;             /* 1 once writes are refused */
    uint32_t hint_files;      /* sealed segments with a hint file */
    uint32_t hints_pending;   /* sealed segments still without one */
    uint64_t hints_written;   /* hint files written since open (recovery's included) */
    uint32_t segments_bad;    /* segments a read found a media error in */
    uint32_t bad_segment;     /* the id of the last such segment (0: none) */
    uint64_t bad_offset;      /* and the offset of the record read there */
} kv_stats;

void kv_get_stats(kv_store *s, kv_stats *st);

/* Copies the fail-stop reason (empty string if not in fail-stop) into buf.
 * Returns 1 if the store is in fail-stop. */
int kv_failstop_reason(kv_store *s, char *buf, size_t cap);

/* The recovery report of this open (valid until kv_close). */
const kvr_report *kv_recovery_report(kv_store *s);

#endif
