/*
 * kv_open — the store as a whole: options, kv_open (recovery, then the
 * segment table, the active segment and the writer thread), kv_close,
 * statistics, and the accessors other modules beside the store use.
 * The jobs themselves live in the other kv_*.c files of this directory;
 * kv_store_int.h states which lock guards what.
 *
 * Owns: the store's lifetime: its locks, the directory lock, the recovery
 * report.
 * Guarantees: nothing is served before recovery finished and what it read
 * is durable; kv_close drains the queue, then seals the newest segment.
 * Never: starts a second writer; frees the store while the writer runs.
 * Locking: kv_get_stats takes tab.lock shared, then q.mu, then x.mu, one
 * after the other; kv_open and kv_close run alone.
 */
#define _GNU_SOURCE
#include "kv_store_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_keydir.h"
#include "kv_record.h"
#include "kvr_hint.h"

/* ---- the store ---- */

const char *kv_fsync_name(kv_fsync_policy p)
{
    switch (p) {
    case KV_FSYNC_ALWAYS: return "always";
    case KV_FSYNC_EVERYSEC: return "everysec";
    case KV_FSYNC_NO: return "no";
    }
    return "unknown";
}

kv_status kv_fsync_parse(const char *s, kv_fsync_policy *p)
{
    for (int i = KV_FSYNC_ALWAYS; i <= KV_FSYNC_NO; i++)
        if (!strcmp(s, kv_fsync_name((kv_fsync_policy)i))) {
            *p = (kv_fsync_policy)i;
            return KV_OK;
        }
    return KV_INVALID;
}

void kv_options_init(kv_options *o)
{
    memset(o, 0, sizeof *o);
    o->fsync = KV_FSYNC_ALWAYS;
    o->segment_max_bytes = KV_DEFAULT_SEGMENT_MAX;
    o->hint_files = 1;
    o->preallocate = 1;
    o->group_max_bytes = KV_DEFAULT_GROUP_MAX;
    o->recovery_mode = KVR_TOLERATE_TAIL;
}


/* ---- state ---- */

void kv_get_stats(kv_store *s, kv_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_rwlock_rdlock(&s->tab.lock);
    st->keys = kv_keydir_count(s->tab.kd);
    st->live_bytes = s->tab.live_bytes;
    st->dead_bytes = s->tab.dead_bytes;
    st->log_bytes = s->tab.log_bytes;
    st->records = s->tab.records;
    st->segments = (uint32_t)s->tab.nsegs;
    st->active_segment = s->tab.nsegs ? s->tab.segs[s->tab.nsegs - 1]->file_id : 0;
    st->expired_swept = s->tab.expired_swept;
    st->expires = s->tab.expires;
    for (size_t i = 0; i + 1 < s->tab.nsegs; i++) {
        if (s->tab.segs[i]->hinted)
            st->hint_files++;
        else if (s->opt.hint_files)
            st->hints_pending++;
    }
    st->hints_written = s->tab.hints_written;
    pthread_rwlock_unlock(&s->tab.lock);
    pthread_mutex_lock(&s->q.mu);
    st->last_seq = s->q.last_seq;
    st->groups = s->q.st_groups;
    st->group_writes = s->q.st_group_writes;
    st->fdatasyncs = s->q.st_fdatasyncs;
    st->fdatasync_us = s->q.st_fdatasync_us;
    st->fdatasync_max_us = s->q.st_fdatasync_max_us;
    st->synced_writes = s->q.st_synced_writes;
    st->failstop = s->q.failstop;
    st->segments_bad = s->q.segs_bad;
    st->bad_segment = s->q.bad_seg;
    st->bad_offset = s->q.bad_off;
    pthread_mutex_unlock(&s->q.mu);
    pthread_mutex_lock(&s->x.mu);
    st->expired_on_access = s->x.expired_on_access;
    st->expiry_tombstones = s->x.expiry_tombstones;
    st->expiry_pending = s->x.nxpend + s->x.nxtaken;
    pthread_mutex_unlock(&s->x.mu);
    st->fsync = s->opt.fsync;
}

const kvr_report *kv_recovery_report(kv_store *s)
{
    return &s->rep;
}

/* ---- open / close ---- */

static void free_store(kv_store *s)
{
    for (size_t i = 0; i < s->tab.nsegs; i++) seg_release(s, s->tab.segs[i]);
    pthread_mutex_destroy(&s->cmp.mu);
    kv_dir_lock_release(s->io, &s->dlock);
    xkeys_free(s->x.xpend, &s->x.nxpend);
    xkeys_free(s->x.xtaken, &s->x.nxtaken);
    free(s->x.xpend);
    free(s->x.xtaken);
    free(s->x.xnoted.v);
    pthread_mutex_destroy(&s->x.mu);
    kv_keydir_free(s->tab.kd);
    kvr_report_free(&s->rep);
    pthread_rwlock_destroy(&s->tab.lock);
    pthread_mutex_destroy(&s->q.mu);
    pthread_cond_destroy(&s->q.cv);
    pthread_cond_destroy(&s->q.feed_cv);
    free(s->tab.segs);
    free(s->tab.byid);
    free(s->wr.gbuf);
    free(s->wr.gops);
    free(s->wr.ovl);
    for (size_t i = 0; i < s->wr.tpool_cap; i++) kv_batch_free(s->wr.tpool[i]);
    free(s->wr.tpool);
    free(s->wr.tidx);
    free(s->dir);
    free(s);
}

/* Creates dir if absent, and makes its entry durable in the parent. */
static int make_dir(const kv_io *io, const char *dir)
{
    int r = io->mkdir(io->ctx, dir);
    if (r < 0 && r != -EEXIST) return r;
    /* Also when it existed: an earlier run may have crashed before its
     * entry in the parent was durable. */
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = 0;
    else
        *slash = 0;
    return io->fsync_dir(io->ctx, parent);
}

/* Copies the store's recovery report to the caller's; the list of
 * problems moves to the caller's (kvr_report_free frees it). */
static void copy_report(kvr_report *dst, kvr_report *src)
{
    if (!dst) return;
    *dst = *src;
    dst->segs = NULL;
    dst->nsegs = 0;
    src->found = NULL;
    src->nfound = 0;
}

/* Step 1: a store with its locks and an empty key directory, not yet
 * tied to the directory. NULL when memory runs out. */
static kv_store *new_store(const char *dir, const kv_options *o)
{
    kv_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->dir = strdup(dir);
    s->io = o->io;
    s->opt = *o;
    s->on_expired = note_expired;
    s->dlock.dir_fd = s->dlock.file_fd = -1;
    s->wr.active_fd = -1;
    s->tab.next_vid = KV_VIRTUAL_ID_BASE;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->tab.lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&s->q.mu, NULL);
    pthread_mutex_init(&s->cmp.mu, NULL);
    pthread_mutex_init(&s->x.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* everysec must not follow wall-clock steps */
    pthread_cond_init(&s->q.cv, &ca);
    pthread_cond_init(&s->q.feed_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->tab.kd = kv_keydir_new();
    if (!s->dir || !s->tab.kd) {
        free_store(s);
        return NULL;
    }
    return s;
}

/* Step 2: the directory exists, is ours alone (its lock), and recovery
 * has rebuilt the key directory from it; what recovery changed is durable.
 * Returns KV_OK, or the error with s->rep.message set. */
static kv_status lock_and_recover(kv_store *s)
{
    const char *dir = s->dir;
    int r = make_dir(s->io, dir);
    if (r < 0) {
        snprintf(s->rep.message, sizeof s->rep.message, "cannot create data directory %s: %s", dir, kv_strerror(-r));
        return -r;
    }
    r = kv_dir_lock_acquire(s->io, dir, &s->dlock);
    if (r == -EWOULDBLOCK) {
        snprintf(s->rep.message, sizeof s->rep.message,
                 "data directory is in use by another process (it holds the directory's lock): %s", dir);
        return KV_LOCKED;
    }
    if (r < 0) {
        snprintf(s->rep.message, sizeof s->rep.message, "cannot lock data directory %s: %s", dir, kv_strerror(-r));
        return -r;
    }
    kv_status st = kvr_recover(s->io, dir, s->opt.recovery_mode,
                               s->opt.hint_files ? KVR_HINTS_READ | KVR_HINTS_WRITE : 0, wall_ms(s), s->tab.kd,
                               &s->rep);
    if (st != KV_OK) return st;
    /* A crash (or a failed directory fsync) may have left entries that are
     * not durable yet, e.g. a segment created just before: make them so
     * before any write is acknowledged into them. */
    r = s->io->fsync_dir(s->io->ctx, dir);
    if (r < 0) {
        snprintf(s->rep.message, sizeof s->rep.message, "cannot fsync data directory %s: %s", dir, kv_strerror(-r));
        return -r;
    }
    if (s->rep.torn_bytes)
        logf_(s, KV_LOG_WARN, "cut %" PRIu64 " torn bytes at offset %" PRIu64 " of segment %u (saved beside it)",
              s->rep.torn_bytes, s->rep.torn_offset, s->rep.torn_segment);
    if (s->rep.unwritten_bytes)
        logf_(s, KV_LOG_INFO, "cut %" PRIu64 " unwritten zero bytes preallocated at the end of the newest segment",
              s->rep.unwritten_bytes);
    if (s->rep.rotations_completed)
        logf_(s, KV_LOG_WARN, "wrote the trailer of the segment before the newest: a crash interrupted its sealing");
    if (s->rep.compact_leftovers)
        logf_(s, KV_LOG_INFO, "removed %u unfinished compaction output%s (.seg.compact) a crash left",
              s->rep.compact_leftovers, s->rep.compact_leftovers == 1 ? "" : "s");
    return KV_OK;
}

/* Step 3: the segment table from recovery's list: older segments
 * read-only, the newest read-write and active. Returns KV_OK, or the
 * error with s->rep.message set. */
static kv_status open_segments(kv_store *s)
{
    if (s->rep.nsegs > 0 && s->rep.segs[s->rep.nsegs - 1].id >= KV_VIRTUAL_ID_BASE - 1) {
        snprintf(s->rep.message, sizeof s->rep.message,
                 "segment ids in %s reach %u; this build numbers segments below %u", s->dir,
                 s->rep.segs[s->rep.nsegs - 1].id, KV_VIRTUAL_ID_BASE - 1);
        return KV_INVALID;
    }
    kv_path path;
    for (size_t i = 0; i < s->rep.nsegs; i++) {
        int last = i + 1 == s->rep.nsegs;
        file_path(s, KV_FILE_SEG, s->rep.segs[i].id, &path);
        int fd = s->io->open(s->io->ctx, path.s, last ? KV_O_RDWR : KV_O_RDONLY);
        if (fd < 0 || do_seg_add(s, s->rep.segs[i].id, fd) < 0) {
            kv_status st = fd < 0 ? -fd : ENOMEM;
            if (fd >= 0) s->io->close(s->io->ctx, fd);
            snprintf(s->rep.message, sizeof s->rep.message, "cannot open %s: %s", path.s, kv_strerror(st));
            return st;
        }
        s->tab.segs[s->tab.nsegs - 1]->hinted = s->rep.segs[i].hint;
        s->tab.log_bytes += s->rep.segs[i].size;
        s->tab.header_bytes += s->rep.segs[i].size >= KV_SEG_HEADER_SIZE ? KV_SEG_HEADER_SIZE : 0;
        if (last) {
            s->wr.active_fd = fd;
            s->wr.active_id = s->rep.segs[i].id;
            s->wr.active_size = s->rep.segs[i].size;
            s->wr.active_records = s->rep.segs[i].records;
            s->wr.active_version = s->rep.segs[i].version ? s->rep.segs[i].version : KV_FORMAT_VERSION;
        }
    }
    return KV_OK;
}

/* Step 4: an active segment with a header: the first segment of an empty
 * directory, or the header again of a newest segment a crash left empty
 * (recovery cut it to zero bytes). Returns KV_OK, or the error with
 * s->rep.message set. */
static kv_status ensure_active_header(kv_store *s)
{
    if (s->wr.active_fd < 0) {
        int fd = create_segment(s, 1, 0, 0);
        if (fd < 0 || do_seg_add(s, 1, fd) < 0) {
            kv_status st = fd < 0 ? -fd : ENOMEM;
            snprintf(s->rep.message, sizeof s->rep.message, "cannot create the first segment in %s: %s", s->dir,
                     kv_strerror(st));
            return st;
        }
        s->wr.active_fd = fd;
        s->wr.active_id = 1;
    } else if (s->wr.active_size < KV_SEG_HEADER_SIZE) {
        uint8_t hdr[KV_SEG_HEADER_SIZE];
        size_t np = s->rep.nsegs;
        /* Its predecessor's size is recorded only for a segment proven whole
         * (sealed with its trailer, or version 1); 0 says "not recorded"
         * (skip-corrupt opened past a damaged one). */
        const kvr_segment_info *pv = np > 1 ? &s->rep.segs[np - 2] : NULL;
        kv_seg_header h = {KV_FORMAT_VERSION, s->wr.active_id, 0, wall_ms(s), pv ? pv->id : 0,
                           pv && (pv->sealed || pv->version == 1) ? (uint32_t)pv->size : 0};
        kv_seg_header_encode_h(hdr, &h);
        int r = kv_io_write_full(s->io, s->wr.active_fd, hdr, sizeof hdr, 0);
        if (r == 0) r = s->io->fdatasync(s->io->ctx, s->wr.active_fd);
        if (r < 0) {
            snprintf(s->rep.message, sizeof s->rep.message, "cannot rewrite the header of segment %u: %s",
                     s->wr.active_id, kv_strerror(-r));
            return -r;
        }
    } else {
        return KV_OK;
    }
    s->wr.active_size = KV_SEG_HEADER_SIZE;
    s->wr.active_version = KV_FORMAT_VERSION;
    s->tab.log_bytes += KV_SEG_HEADER_SIZE;
    s->tab.header_bytes += KV_SEG_HEADER_SIZE;
    return KV_OK;
}

/* Step 5: whatever recovery read may still be only in the page cache (a
 * previous run that crashed under everysec, or whose fdatasync failed):
 * make it durable before any of it is served, or a power cut could take
 * back what a reader has already seen. That includes the trailer of the
 * segment before the newest, if the sync that sealed it failed (the
 * newest is then still empty): once records follow in the newest, a lost
 * trailer there would be damage. Returns KV_OK, or the error with
 * s->rep.message set. */
static kv_status sync_recovered(kv_store *s)
{
    segment *pv = s->tab.nsegs > 1 ? s->tab.segs[s->tab.nsegs - 2] : NULL;
    int r = pv ? s->io->fdatasync(s->io->ctx, pv->fd) : 0;
    uint32_t id = pv ? pv->file_id : 0;
    if (r == 0) {
        r = s->io->fdatasync(s->io->ctx, s->wr.active_fd);
        id = s->wr.active_id;
    }
    if (r < 0) {
        snprintf(s->rep.message, sizeof s->rep.message, "cannot fdatasync segment %u: %s", id, kv_strerror(-r));
        return -r;
    }
    return KV_OK;
}

/* Step 6a: the counters from recovery's figures. */
static void set_counters(kv_store *s)
{
    s->tab.live_bytes = s->rep.live_bytes;
    s->tab.expires = kv_keydir_expiring(s->tab.kd);
    uint64_t data_bytes = s->tab.log_bytes - s->tab.header_bytes;
    s->tab.dead_bytes = data_bytes >= s->tab.live_bytes ? data_bytes - s->tab.live_bytes : 0;
    s->tab.records = s->rep.records;
    s->q.last_seq = s->rep.max_seq;
    s->q.synced_seq = s->rep.max_seq; /* sync_recovered made it durable */
    s->wr.written_seq = s->rep.max_seq;
    s->q.feed_seg = s->wr.active_id;
    s->q.feed_end = s->wr.active_size;
    s->q.feed_seq = s->rep.max_seq;
    s->tab.hints_written = s->rep.hints_written;
    s->wr.last_sync_ms = mono_us() / 1000u;
    s->wr.active_end = s->wr.active_size; /* recovery cut any zeros past the log end */
}

/* Step 6b: the writer thread. Returns KV_OK, or EAGAIN with
 * s->rep.message set. */
static kv_status start_writer(kv_store *s)
{
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        snprintf(s->rep.message, sizeof s->rep.message, "cannot start the writer thread");
        return EAGAIN;
    }
    return KV_OK;
}

/* Steps 2 to 6a on a new store for dir: the directory locked, recovered,
 * its segments open, what recovery read durable. */
static kv_status open_contents(kv_store *s)
{
    kv_status st = lock_and_recover(s);
    if (st == KV_OK) st = open_segments(s);
    if (st == KV_OK) st = ensure_active_header(s);
    if (st == KV_OK) st = sync_recovered(s);
    if (st == KV_OK) set_counters(s);
    return st;
}

kv_status kv_open(const char *dir, const kv_options *opt, kv_store **out, kvr_report *report)
{
    *out = NULL;
    if (report) memset(report, 0, sizeof *report);
    kv_options o;
    if (opt)
        o = *opt;
    else
        kv_options_init(&o);
    if (!o.io) o.io = kv_io_posix();
    if (o.segment_max_bytes < KV_MIN_SEGMENT_MAX || o.segment_max_bytes > KV_MAX_SEGMENT_MAX ||
        o.group_max_bytes == 0 || o.fsync > KV_FSYNC_NO ||
        o.recovery_mode > KVR_SKIP_CORRUPT || strlen(dir) > 3900) {
        if (report) snprintf(report->message, sizeof report->message, "invalid options");
        return KV_INVALID;
    }
    kv_store *s = new_store(dir, &o);
    if (!s) return ENOMEM;
    kv_status st = open_contents(s);
    if (st == KV_OK) st = start_writer(s);
    copy_report(report, &s->rep);
    if (st != KV_OK) {
        free_store(s);
        return st;
    }
    kvr_report_free(&s->rep); /* the segment list is now in s->tab.segs */
    *out = s;
    return KV_OK;
}

kv_status kv_close(kv_store *s)
{
    if (!s) return KV_OK;
    kv_expire_flush(s); /* the tombstones of keys found expired so far */
    pthread_mutex_lock(&s->q.mu);
    s->q.closing = 1;
    pthread_cond_signal(&s->q.cv);
    pthread_mutex_unlock(&s->q.mu);
    pthread_join(s->writer, NULL);
    kv_status st = KV_OK;
    if (!is_failstop(s) && s->wr.unsynced_writes > 0 && sync_active(s) < 0) st = failstop_status(s);
    if (!is_failstop(s) && st == KV_OK && s->wr.active_version >= 2 && s->wr.active_size > KV_SEG_HEADER_SIZE) {
        /* A clean shutdown seals the newest segment and leaves an empty
         * one after it, so that every record written is in a sealed
         * segment, proven whole by its trailer: after it, no damage can
         * pass for a write a crash cut short. If this fails, the next
         * recovery finds the directory as a crash left it. */
        if (rotate(s) < 0)
            logf_(s, KV_LOG_WARN, "sealing segment %u at shutdown failed; the next start recovers it as after a crash",
                  s->wr.active_id);
        else if (s->opt.hint_files)
            (void)kv_write_hints(s, NULL); /* the next start then reads hints only; failures are logged */
    } else if (!is_failstop(s)) {
        int r = cut_prealloc(s);
        if (r < 0)
            logf_(s, KV_LOG_WARN, "cutting the preallocated space of segment %u: %s", s->wr.active_id,
                  kv_strerror(-r));
    }
    free_store(s);
    return st;
}

/* ---- replacing the contents (a replica's full sync) ---- */

#define SWAP(a, b)                                                                                                     \
    do {                                                                                                               \
        __typeof__(a) swap_tmp_ = (a);                                                                                 \
        (a) = (b);                                                                                                     \
        (b) = swap_tmp_;                                                                                               \
    } while (0)

typedef struct replace_ctx {
    kv_store *t; /* the new contents, opened; the old ones after the swap */
    const char *newdir;
} replace_ctx;

/* Writer thread, alone (req.excl): exchanges the directories, then every
 * piece of state that describes the contents, under tab.lock and q.mu. */
static kv_status replace_on_writer(kv_store *s, void *arg)
{
    replace_ctx *rc = arg;
    kv_store *t = rc->t;
    if (is_failstop(s)) return KV_FAILSTOP;
    int r = s->io->exchange ? s->io->exchange(s->io->ctx, s->dir, rc->newdir) : -ENOSYS;
    if (r < 0) return -r;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", s->dir);
    char *slash = strrchr(parent, '/');
    if (slash == parent) slash[1] = 0;
    else if (slash) *slash = 0;
    else snprintf(parent, sizeof parent, ".");
    (void)s->io->fsync_dir(s->io->ctx, parent); /* a crash before it leaves either whole directory */
    pthread_rwlock_wrlock(&s->tab.lock);
    SWAP(s->dlock, t->dlock);
    SWAP(s->tab.kd, t->tab.kd);
    SWAP(s->tab.segs, t->tab.segs);
    SWAP(s->tab.byid, t->tab.byid);
    SWAP(s->tab.nsegs, t->tab.nsegs);
    SWAP(s->tab.cap_segs, t->tab.cap_segs);
    SWAP(s->tab.live_bytes, t->tab.live_bytes);
    SWAP(s->tab.dead_bytes, t->tab.dead_bytes);
    SWAP(s->tab.log_bytes, t->tab.log_bytes);
    SWAP(s->tab.header_bytes, t->tab.header_bytes);
    SWAP(s->tab.records, t->tab.records);
    SWAP(s->tab.expires, t->tab.expires);
    s->tab.sweep_cursor = 0; /* s->rep stays: INFO reads it unlocked, and it reports the start's recovery */
    pthread_mutex_lock(&s->q.mu);
    SWAP(s->q.last_seq, t->q.last_seq);
    SWAP(s->q.synced_seq, t->q.synced_seq);
    SWAP(s->q.feed_seg, t->q.feed_seg);
    SWAP(s->q.feed_end, t->q.feed_end);
    SWAP(s->q.feed_seq, t->q.feed_seq);
    pthread_mutex_unlock(&s->q.mu);
    pthread_rwlock_unlock(&s->tab.lock);
    SWAP(s->wr, t->wr); /* the active segment and the writer's buffers */
    s->wr.unsynced_writes = 0;
    pthread_cond_broadcast(&s->q.feed_cv);
    return KV_OK;
}

kv_status kv_replace_dir(kv_store *s, const char *newdir, uint64_t expect_seq, kvr_report *report)
{
    if (report) memset(report, 0, sizeof *report);
    if (strlen(newdir) > 3900) return KV_INVALID;
    kv_store *t = new_store(newdir, &s->opt);
    if (!t) return ENOMEM;
    kv_status st = open_contents(t);
    if (st == KV_OK && expect_seq && t->q.last_seq != expect_seq) {
        snprintf(t->rep.message, sizeof t->rep.message,
                 "%s holds the log up to sequence number %" PRIu64 ", not %" PRIu64, newdir, t->q.last_seq,
                 expect_seq);
        st = KV_CORRUPT;
    }
    copy_report(report, &t->rep);
    if (st != KV_OK) {
        free_store(t);
        return st;
    }
    /* No compaction or hint writing while the files change under them. */
    pthread_mutex_lock(&s->cmp.mu);
    replace_ctx rc = {t, newdir};
    req r = {.excl = replace_on_writer, .fn_arg = &rc};
    st = enqueue_wait(s, &r);
    pthread_mutex_unlock(&s->cmp.mu);
    /* On success t holds the old contents (at newdir now): their segments
     * close as the last reads of them finish. */
    free_store(t);
    return st;
}
