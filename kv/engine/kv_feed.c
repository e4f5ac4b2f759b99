/*
 * kv_feed — the log as replication sees it: a feed reads the data records
 * (puts, tombstones, batches) from a sequence number on, verbatim, out of
 * the segments, and waits at the end of the log for the writer; a
 * snapshot holds the segment files as they stand at one group boundary.
 * (A replica appends what a feed yields with kv_apply_records, in
 * kv_txn.c beside the other writes.)
 *
 * Owns: each feed's references on the segments it reads, each snapshot's.
 * Guarantees: a feed yields records in log order, each CRC-checked, their
 *   sequence numbers following on with no gap: a gap (history a compaction
 *   or a skip-corrupt recovery removed) ends the feed with KV_NOT_FOUND
 *   rather than skip records. It never reads past the bytes the writer
 *   has published (q.feed_end), which always end at a group boundary.
 * Never: writes; holds tab.lock or q.mu while it reads a file.
 * Locking: q.mu for q.feed_*, tab.lock (shared) to find and hold segments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_store_int.h"

void feed_publish(kv_store *s, uint32_t seg, uint64_t end, uint64_t seq)
{
    pthread_mutex_lock(&s->q.mu);
    s->q.feed_seg = seg;
    s->q.feed_end = end;
    s->q.feed_seq = seq;
    int wake = s->q.feed_waiters > 0;
    pthread_mutex_unlock(&s->q.mu);
    if (wake) pthread_cond_broadcast(&s->q.feed_cv);
}

uint64_t kv_completed_seq(kv_store *s)
{
    return s->q.last_seq; /* writer thread: it alone writes it (under q.mu, for the others) */
}

void kv_set_replica(kv_store *s, int on)
{
    __atomic_store_n(&s->replica, on ? 1 : 0, __ATOMIC_RELEASE);
}

int kv_is_replica(kv_store *s)
{
    return __atomic_load_n(&s->replica, __ATOMIC_ACQUIRE);
}

void kv_set_retention(kv_store *s, uint64_t bytes)
{
    __atomic_store_n(&s->retain_bytes, bytes, __ATOMIC_RELAXED);
}

void kv_repl_position(kv_store *s, kv_repl_pos *p)
{
    pthread_mutex_lock(&s->q.mu);
    p->applied_seq = s->q.last_seq;
    p->written_seq = s->q.feed_seq;
    p->synced_seq = s->q.synced_seq;
    pthread_mutex_unlock(&s->q.mu);
}

/* ---- feeds ---- */

struct kv_feed {
    kv_store *s;
    struct kv_feed *next; /* in s->q.feeds, once open (q.mu) */
    int listed;
    segment *g;       /* the segment read (a reference held) */
    uint32_t file_id; /* its file id (changed under q.mu once listed) */
    uint64_t off;     /* the next record's offset in it */
    uint64_t next_seq;
    /* Read-ahead: bytes [rb_off, rb_off + rb_len) of the segment read, so
     * that a run of small records costs one pread, not two each. */
    uint8_t *rb;
    size_t rb_cap, rb_len;
    uint64_t rb_off;
};

/* Bytes of read-ahead a feed asks for at a time. */
#define FEED_READ_AHEAD (256u << 10)

/* What a feed may read of segment file_id: up to the published end if it
 * is the segment being appended (*active = 1), else to the file's end. */
static kv_status feed_limit(kv_feed *f, uint64_t *limit, int *active)
{
    kv_store *s = f->s;
    pthread_mutex_lock(&s->q.mu);
    *active = s->q.feed_seg == f->file_id;
    *limit = s->q.feed_end;
    pthread_mutex_unlock(&s->q.mu);
    if (*active) return KV_OK;
    int r = s->io->fsize(s->io->ctx, f->g->fd, limit);
    return r < 0 ? -r : KV_OK;
}

uint32_t do_feed_pin(const kv_store *s)
{
    uint32_t pin = UINT32_MAX;
    for (const kv_feed *f = s->q.feeds; f; f = f->next)
        if (f->file_id < pin) pin = f->file_id;
    return pin;
}

/* The segment of the log with file id `file_id`, not a compaction output
 * (its header's replaces field is 0), with a reference; or NULL. */
static segment *hold_original(kv_store *s, uint32_t file_id)
{
    segment *g = NULL;
    pthread_rwlock_rdlock(&s->tab.lock);
    for (size_t i = 0; i < s->tab.nsegs; i++)
        if (s->tab.segs[i]->file_id == file_id) {
            g = s->tab.segs[i];
            __atomic_add_fetch(&g->refs, 1, __ATOMIC_ACQ_REL);
            break;
        }
    pthread_rwlock_unlock(&s->tab.lock);
    if (!g) return NULL;
    uint8_t h[KV_SEG_HEADER_SIZE];
    if (kv_io_read_full(s->io, g->fd, h, sizeof h, 0) < 0 ||
        kv_seg_header_decode(h, file_id, &(uint32_t){0}) != KV_OK || kv_seg_header_replaces(h) != 0) {
        seg_release(s, g);
        return NULL;
    }
    return g;
}

/* Points *p at bytes [off, off + n) of the segment read, all below limit,
 * through the read-ahead buffer (refilled with one pread of up to
 * FEED_READ_AHEAD bytes, or n if more). Returns KV_OK, KV_CORRUPT (the
 * file is shorter), an errno, ENOMEM. */
static kv_status feed_bytes(kv_feed *f, uint64_t off, size_t n, uint64_t limit, const uint8_t **p)
{
    if (off >= f->rb_off && off + n <= f->rb_off + f->rb_len) {
        *p = f->rb + (off - f->rb_off);
        return KV_OK;
    }
    size_t want = n > FEED_READ_AHEAD ? n : FEED_READ_AHEAD;
    if (limit > off && want > limit - off) want = (size_t)(limit - off);
    if (want < n) want = n;
    if (want > f->rb_cap) {
        uint8_t *nb = realloc(f->rb, want);
        if (!nb) return ENOMEM;
        f->rb = nb;
        f->rb_cap = want;
    }
    f->rb_len = 0;
    int e = kv_io_read_full(f->s->io, f->g->fd, f->rb, want, off);
    if (e < 0) return e == -ENODATA ? KV_CORRUPT : -e;
    f->rb_off = off;
    f->rb_len = want;
    *p = f->rb;
    return KV_OK;
}

/* Decodes the record header at f->off (below limit) into r (r->len its
 * length). Returns KV_OK, KV_CORRUPT, or an errno. */
static kv_status read_header(kv_feed *f, uint64_t limit, kv_record *r)
{
    const uint8_t *h;
    kv_status st = feed_bytes(f, f->off, KV_REC_HEADER_SIZE, limit, &h);
    return st != KV_OK ? st : kv_record_decode_header(h, r);
}

/* Moves f to the segment after its own in the log. Returns KV_OK, or
 * KV_NOT_FOUND when that segment is not in the log as written (a
 * compaction replaced it). */
static kv_status feed_next_segment(kv_feed *f)
{
    segment *n = hold_original(f->s, f->file_id + 1);
    if (!n) return KV_NOT_FOUND;
    seg_release(f->s, f->g);
    f->g = n;
    f->rb_len = 0; /* another file */
    pthread_mutex_lock(&f->s->q.mu);
    f->file_id++;
    pthread_mutex_unlock(&f->s->q.mu);
    f->off = KV_SEG_HEADER_SIZE;
    return KV_OK;
}

/* The first sequence number in the held segment g (file id id), or 0 if
 * it holds no data record below `limit`. */
static uint64_t first_seq(kv_store *s, segment *g, uint64_t limit)
{
    kv_feed t = {.s = s, .g = g, .off = KV_SEG_HEADER_SIZE};
    uint64_t seq = 0;
    while (t.off + KV_REC_HEADER_SIZE <= limit) {
        kv_record r;
        if (read_header(&t, limit, &r) != KV_OK || r.type == KV_REC_SEAL) break;
        if (!kv_record_is_mark(&r)) {
            seq = r.seq;
            break;
        }
        t.off += r.len;
    }
    free(t.rb);
    return seq;
}

/* Positions a new feed at from_seq: finds the newest original segment
 * whose first record is at or before it, then the record in it. */
static kv_status feed_seek(kv_feed *f, uint64_t from_seq)
{
    kv_store *s = f->s;
    pthread_mutex_lock(&s->q.mu);
    uint32_t active = s->q.feed_seg;
    uint64_t end = s->q.feed_end, last = s->q.feed_seq;
    pthread_mutex_unlock(&s->q.mu);
    if (from_seq == 0 || from_seq > last + 1) return KV_NOT_FOUND;
    /* Walk back from the segment being appended while segments are the
     * log as written and start after from_seq. */
    for (uint32_t id = active; id > 0; id--) {
        segment *g = hold_original(s, id);
        if (!g) return KV_NOT_FOUND;
        uint64_t limit = end;
        if (id != active && s->io->fsize(s->io->ctx, g->fd, &limit) < 0) limit = 0;
        uint64_t first = first_seq(s, g, limit);
        if (first == 0 || first > from_seq) {
            if (from_seq == last + 1 && id == active) {
                /* Nothing to send yet: wait at the end of the log. */
                f->g = g;
                f->file_id = id;
                f->off = end;
                f->next_seq = from_seq;
                return KV_OK;
            }
            seg_release(s, g);
            if (first == 0 && id != active) return KV_NOT_FOUND; /* a sealed segment with no record */
            continue;
        }
        f->g = g;
        f->file_id = id;
        f->off = KV_SEG_HEADER_SIZE;
        f->next_seq = first;
        /* Skip the records before from_seq (they must end right before it). */
        for (;;) {
            if (f->next_seq == from_seq) return KV_OK;
            if (f->next_seq > from_seq) return KV_NOT_FOUND; /* inside a batch */
            uint64_t lim;
            int act;
            kv_status st = feed_limit(f, &lim, &act);
            if (st != KV_OK) return st;
            if (f->off + KV_REC_HEADER_SIZE > lim) {
                if (act) return KV_NOT_FOUND;
                if ((st = feed_next_segment(f)) != KV_OK) return st;
                continue;
            }
            kv_record r;
            if ((st = read_header(f, lim, &r)) != KV_OK) return st;
            if (r.type == KV_REC_SEAL) {
                if ((st = feed_next_segment(f)) != KV_OK) return st;
                continue;
            }
            f->off += r.len;
            if (!kv_record_is_mark(&r)) f->next_seq = kv_record_last_seq(&r) + 1;
        }
    }
    return KV_NOT_FOUND;
}

kv_status kv_feed_open(kv_store *s, uint64_t from_seq, kv_feed **out)
{
    *out = NULL;
    kv_feed *f = calloc(1, sizeof *f);
    if (!f) return ENOMEM;
    f->s = s;
    kv_status st = feed_seek(f, from_seq);
    if (st != KV_OK) {
        kv_feed_close(f);
        return st;
    }
    /* Listed, so compaction leaves its segments alone. A compaction that
     * chose its inputs before this may still take them: the feed then
     * ends with KV_NOT_FOUND at the gap, as it would without a pin. */
    pthread_mutex_lock(&s->q.mu);
    f->next = s->q.feeds;
    s->q.feeds = f;
    f->listed = 1;
    pthread_mutex_unlock(&s->q.mu);
    *out = f;
    return KV_OK;
}

uint64_t kv_feed_next_seq(const kv_feed *f)
{
    return f->next_seq;
}

void kv_feed_close(kv_feed *f)
{
    if (!f) return;
    if (f->listed) {
        pthread_mutex_lock(&f->s->q.mu);
        for (kv_feed **p = &f->s->q.feeds; *p; p = &(*p)->next)
            if (*p == f) {
                *p = f->next;
                break;
            }
        pthread_mutex_unlock(&f->s->q.mu);
    }
    if (f->g) seg_release(f->s, f->g);
    free(f->rb);
    free(f);
}

/* Waits up to wait_ms for the writer to publish past (file_id, off).
 * Returns 1 if it did (or the wait ended early), 0 on timeout, -1 if the
 * store is closing. */
static int feed_wait(kv_feed *f, int wait_ms)
{
    kv_store *s = f->s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int moved = 0, closing = 0;
    pthread_mutex_lock(&s->q.mu);
    s->q.feed_waiters++;
    for (;;) {
        moved = s->q.feed_seg != f->file_id || s->q.feed_end > f->off;
        closing = s->q.closing;
        if (moved || closing) break;
        if (pthread_cond_timedwait(&s->q.feed_cv, &s->q.mu, &ts) == ETIMEDOUT) break;
    }
    s->q.feed_waiters--;
    pthread_mutex_unlock(&s->q.mu);
    return moved ? 1 : closing ? -1 : 0;
}

kv_status kv_feed_read(kv_feed *f, uint8_t **buf, size_t *cap, size_t *len, size_t max_bytes, int wait_ms)
{
    *len = 0;
    for (;;) {
        uint64_t limit;
        int active;
        kv_status st = feed_limit(f, &limit, &active);
        if (st != KV_OK) return st;
        if (f->off + KV_REC_HEADER_SIZE > limit) {
            if (!active) {
                if (f->off != limit) return KV_CORRUPT; /* a sealed segment ends inside a record */
                if ((st = feed_next_segment(f)) != KV_OK) return st;
                continue;
            }
            if (*len > 0) return KV_OK;
            int w = feed_wait(f, wait_ms);
            if (w < 0) return KV_CLOSED;
            if (w == 0) return KV_OK;
            continue;
        }
        kv_record r;
        if ((st = read_header(f, limit, &r)) != KV_OK) return st;
        if (r.type == KV_REC_SEAL) {
            if ((st = feed_next_segment(f)) != KV_OK) return st;
            continue;
        }
        if (r.type == KV_REC_COMMIT) {
            f->off += r.len;
            continue;
        }
        if (r.rflags != 0 || f->off + r.len > limit) return KV_CORRUPT;
        if (r.seq != f->next_seq) return KV_NOT_FOUND; /* a gap: history the log no longer holds */
        if (*len > 0 && *len + r.len > max_bytes) return KV_OK;
        if (*len + r.len > *cap) {
            size_t nc = *cap ? *cap : 65536;
            while (nc < *len + r.len) nc *= 2;
            uint8_t *nb = realloc(*buf, nc);
            if (!nb) return ENOMEM;
            *buf = nb;
            *cap = nc;
        }
        const uint8_t *src;
        if ((st = feed_bytes(f, f->off, r.len, limit, &src)) != KV_OK) return st;
        memcpy(*buf + *len, src, r.len);
        kv_record full;
        if (kv_record_decode(*buf + *len, r.len, &full) != KV_OK) return KV_CORRUPT;
        *len += r.len;
        f->off += r.len;
        f->next_seq = kv_record_last_seq(&full) + 1;
    }
}

/* ---- snapshots ---- */

kv_status kv_snapshot_hold(kv_store *s, kv_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    /* cmp.mu: no compaction is between renaming its output over a file id
     * and retiring its inputs, when two segments of the table share one. */
    pthread_mutex_lock(&s->cmp.mu);
    pthread_rwlock_rdlock(&s->tab.lock);
    pthread_mutex_lock(&s->q.mu);
    uint32_t active = s->q.feed_seg;
    uint64_t end = s->q.feed_end;
    snap->seq = s->q.feed_seq;
    pthread_mutex_unlock(&s->q.mu);
    kv_status st = KV_OK;
    snap->files = calloc(s->tab.nsegs ? s->tab.nsegs : 1, sizeof *snap->files);
    if (!snap->files) st = ENOMEM;
    for (size_t i = 0; st == KV_OK && i < s->tab.nsegs; i++) {
        segment *g = s->tab.segs[i];
        if (g->file_id > active) continue; /* created by a rotation not yet published */
        kv_snapshot_file *fl = &snap->files[snap->n];
        fl->file_id = g->file_id;
        fl->fd = g->fd;
        fl->size = end;
        if (g->file_id != active) {
            int r = s->io->fsize(s->io->ctx, g->fd, &fl->size);
            if (r < 0) {
                st = -r;
                break;
            }
        }
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_ACQ_REL);
        fl->ref_ = g;
        snap->n++;
    }
    pthread_rwlock_unlock(&s->tab.lock);
    pthread_mutex_unlock(&s->cmp.mu);
    if (st != KV_OK) kv_snapshot_release(s, snap);
    return st;
}

void kv_snapshot_release(kv_store *s, kv_snapshot *snap)
{
    for (size_t i = 0; i < snap->n; i++) seg_release(s, snap->files[i].ref_);
    free(snap->files);
    memset(snap, 0, sizeof *snap);
}
