/*
 * kv_compact — online compaction (merge) of the sealed segments, in the
 * order docs/format.md ("Compaction") gives: write the output beside the
 * inputs, make it durable, rename it over the newest input, switch the key
 * directory over in small steps, retire the inputs, write the output's
 * hint file.
 *
 * Owns: the compaction in progress (struct compaction), its output file
 * until it is installed, and the progress shown in INFO (s->q.cprog).
 * Guarantees: a crash at any point leaves a directory that recovers to the
 * same keys; a failure leaves the inputs in place and the store serving
 * (only running out of memory after the rename enters fail-stop);
 * readers and writers wait at most one switch step (KV_SWITCH_STEP keys).
 * Never: compacts the active segment, or a segment marked bad; holds
 * tab.lock while it reads or writes a file.
 * Locking: cmp.mu for the whole run (one compaction at a time, and no
 * hint written meanwhile); tab.lock briefly for lookups and each switch
 * step; q.mu for the progress.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"
#include "kvr_hint.h"
#include "kv_map.h"

/* Keys a compaction moves to its output per hold of the write lock. */
#define KV_SWITCH_STEP 2048
/* Compaction output is written in pieces of this many bytes, and made
 * durable every KV_COMPACT_SYNC_BYTES. */
#define KV_COMPACT_WRITE_BYTES (1u << 20)
#define KV_COMPACT_SYNC_BYTES (16u << 20)

/* A live record copied by a compaction: where it was and where it is. Its
 * key is at key_at in the compaction's key arena. */
typedef struct moved {
    uint64_t key_at;
    uint32_t klen;
    uint32_t len;     /* record bytes (unchanged by the copy) */
    uint32_t old_seg;
    uint64_t old_off, new_off;
    uint64_t seq;
    int expired;      /* dropped: to remove from the key directory */
} moved;

typedef struct compaction {
    kv_store *s;
    kv_compact_report *rep;
    int out_fd;
    uint64_t out_off;  /* bytes of output so far, those in buf included */
    uint64_t max_seq;  /* highest sequence number of the records read */
    uint8_t *buf;      /* output not written yet: the last `pend` bytes */
    size_t buf_cap, pend;
    uint64_t synced;   /* output bytes made durable so far */
    /* The moved records and their keys, one per live record of the inputs
     * (millions): anonymous mappings (kv_map.h), so that their memory
     * goes back to the system when the compaction ends. */
    kv_map mv;   /* moved[nmv] */
    kv_map keys; /* the moved records' key bytes, back to back */
    size_t nmv;
    uint64_t now;
    uint64_t records_in;
    int damaged;
    kv_status err;
    uint32_t cur_id; /* key-directory id of the input being copied */
    /* The run: its inputs (a reference held on each), oldest first. */
    segment **in;
    uint64_t *sizes;   /* each input's size when chosen */
    size_t k;          /* inputs */
    uint64_t total;    /* their bytes */
    uint32_t lo, hi;   /* first and last input file id */
    uint32_t vid;      /* the output's id in the key directory */
    kv_path path;      /* hi.seg, which the output replaces */
    kv_path tmp;       /* hi.seg.compact, the output while it is written */
} compaction;

/* Writes the buffered output, and every KV_COMPACT_SYNC_BYTES makes it
 * durable: syncing as it goes keeps the final fdatasync short, which
 * would otherwise hold up the writer's own syncs of the active segment
 * behind hundreds of megabytes of writeback. Returns KV_OK or an errno. */
static kv_status compact_flush(compaction *c)
{
    if (c->pend > 0) {
        int w = kv_io_write_full(c->s->io, c->out_fd, c->buf, c->pend, c->out_off - c->pend);
        if (w < 0) return -w;
        c->pend = 0;
    }
    if (c->out_off - c->synced >= KV_COMPACT_SYNC_BYTES) {
        int r = c->s->io->fdatasync(c->s->io->ctx, c->out_fd);
        if (r < 0) return -r;
        c->synced = c->out_off;
    }
    return KV_OK;
}

static void compact_problem(void *arg, const kvr_problem *p)
{
    (void)p;
    ((compaction *)arg)->damaged = 1;
}

/* One put or tombstone at (seg, off) of an input. */
static void compact_entry(compaction *c, uint32_t seg, uint64_t off, const kv_record *r)
{
    kv_compact_report *rep = c->rep;
    if (r->type == KV_REC_TOMBSTONE) {
        rep->tombstones_dropped++;
        return;
    }
    kv_loc loc;
    pthread_rwlock_rdlock(&c->s->tab.lock);
    int found = kv_keydir_get(c->s->tab.kd, r->key, r->klen, &loc);
    pthread_rwlock_unlock(&c->s->tab.lock);
    (void)seg; /* the file's id; the key directory knows the input by cur_id */
    if (!found || loc.seg != c->cur_id || loc.off != off || loc.seq != r->seq) {
        rep->dead_dropped++;
        return;
    }
    int expired = kv_expired(r->expire_ms, c->now);
    size_t len = kv_record_size(r->klen, r->vlen);
    if (!expired) {
        if (c->pend > 0 && c->pend + len > KV_COMPACT_WRITE_BYTES && (c->err = compact_flush(c)) != KV_OK) return;
        if (c->pend + len > c->buf_cap) {
            size_t nc = c->pend + len > KV_COMPACT_WRITE_BYTES ? c->pend + len : KV_COMPACT_WRITE_BYTES;
            uint8_t *nb = realloc(c->buf, nc);
            if (!nb) {
                c->err = ENOMEM;
                return;
            }
            c->buf = nb;
            c->buf_cap = nc;
        }
        /* A batch entry becomes a record of its own: its batch was applied
         * whole, and the output appears whole or not at all. */
        kv_record_encode(c->buf + c->pend, KV_REC_PUT, 0, r->seq, r->expire_ms, r->flags, r->key, r->klen, r->val,
                         r->vlen);
        c->pend += len;
    }
    size_t key_at;
    if (kv_map_grow(&c->mv, sizeof(moved)) != KV_OK || kv_map_append(&c->keys, r->key, r->klen, &key_at) != KV_OK) {
        c->err = ENOMEM;
        return;
    }
    moved *m = (moved *)c->mv.p + c->nmv;
    c->mv.len += sizeof *m;
    m->key_at = key_at;
    m->klen = r->klen;
    m->len = (uint32_t)len;
    m->old_seg = c->cur_id;
    m->old_off = off;
    m->new_off = c->out_off;
    m->seq = r->seq;
    m->expired = expired;
    c->nmv++;
    if (expired) {
        rep->expired_dropped++;
    } else {
        rep->records_copied++;
        c->out_off += len;
    }
}

static int compact_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    compaction *c = arg;
    if (kv_record_is_mark(r)) return 0; /* the output gets marks of its own */
    c->records_in++;
    uint64_t last = kv_record_last_seq(r);
    if (last > c->max_seq) c->max_seq = last;
    if (r->type == KV_REC_BATCH) {
        size_t pos = 0, before = 0;
        kv_record e;
        while (c->err == KV_OK && kv_record_batch_next(r, &pos, &e) == KV_OK) {
            compact_entry(c, seg, kv_batch_entry_off(off, before), &e);
            before = pos;
        }
    } else {
        compact_entry(c, seg, off, r);
    }
    return c->err != KV_OK;
}

void kv_compact_progress_get(kv_store *s, kv_compact_progress *p)
{
    pthread_mutex_lock(&s->q.mu);
    *p = s->q.cprog;
    pthread_mutex_unlock(&s->q.mu);
}

/* Chooses the inputs: every sealed segment (all but the newest, which
 * the writer appends to) outside the replication history the store
 * retains and before the segments open feeds read, oldest first, at most KV_MAX_SEGMENT_MAX bytes, stopping at a
 * segment marked bad. Takes a reference on each. Returns
 * KV_OK (c->k may be 0) or ENOMEM. */
static kv_status compact_choose_inputs(compaction *c)
{
    kv_store *s = c->s;
    pthread_rwlock_rdlock(&s->tab.lock);
    size_t n = s->tab.nsegs > 0 ? s->tab.nsegs - 1 : 0;
    /* Replication history (kv_set_retention): the segments that hold the
     * newest retain bytes of the log stay as written. */
    uint64_t retain = __atomic_load_n(&s->retain_bytes, __ATOMIC_RELAXED), after = 0;
    if (retain && s->tab.nsegs > 0 && s->io->fsize(s->io->ctx, s->tab.segs[n]->fd, &after) < 0) n = 0;
    while (retain && n > 0 && after < retain) {
        uint64_t sz = 0;
        if (s->io->fsize(s->io->ctx, s->tab.segs[n - 1]->fd, &sz) < 0) {
            n = 0;
            break;
        }
        after += sz;
        n--;
    }
    /* ... and so do the segments an open feed (a connected replica) has
     * yet to read. */
    pthread_mutex_lock(&s->q.mu);
    uint32_t pin = do_feed_pin(s);
    pthread_mutex_unlock(&s->q.mu);
    while (n > 0 && s->tab.segs[n - 1]->file_id >= pin) n--;
    c->in = calloc(n ? n : 1, sizeof *c->in);
    c->sizes = calloc(n ? n : 1, sizeof *c->sizes);
    for (size_t i = 0; c->in && c->sizes && i < n; i++) {
        uint64_t sz = 0;
        /* A segment with a media error is left alone: what it lost would
         * look like dead records. kvfsck deals with it. */
        if (__atomic_load_n(&s->tab.segs[i]->bad, __ATOMIC_ACQUIRE)) break;
        if (s->io->fsize(s->io->ctx, s->tab.segs[i]->fd, &sz) < 0) break;
        if (c->k > 0 && c->total + sz > KV_MAX_SEGMENT_MAX) break;
        __atomic_add_fetch(&s->tab.segs[i]->refs, 1, __ATOMIC_ACQ_REL);
        c->in[c->k] = s->tab.segs[i];
        c->sizes[c->k++] = sz;
        c->total += sz;
    }
    pthread_rwlock_unlock(&s->tab.lock);
    c->lo = c->k ? c->in[0]->file_id : 0;
    c->hi = c->k ? c->in[c->k - 1]->file_id : 0;
    return c->in && c->sizes ? KV_OK : ENOMEM;
}

/* Disk-full safety: the output can be as large as the live bytes of the
 * inputs (at most all live bytes); refuses to start without room. */
static kv_status compact_check_space(compaction *c)
{
    kv_store *s = c->s;
    if (!s->io->free_space) return KV_OK;
    uint64_t free_b = 0;
    pthread_rwlock_rdlock(&s->tab.lock);
    uint64_t need = (s->tab.live_bytes < c->total ? s->tab.live_bytes : c->total) + KV_SEG_HEADER_SIZE;
    pthread_rwlock_unlock(&s->tab.lock);
    int r = s->io->free_space(s->io->ctx, s->dir, &free_b);
    if (r == 0 && free_b < need) {
        snprintf(c->rep->message, sizeof c->rep->message,
                 "not enough free space to compact: need up to %" PRIu64 " bytes, %" PRIu64 " free", need, free_b);
        return ENOSPC;
    }
    return KV_OK;
}

/* Copies the live records of input i into the output. */
static kv_status compact_copy_input(compaction *c, size_t i)
{
    kv_store *s = c->s;
    kv_compact_report *rep = c->rep;
    kv_status st;
    kv_path ip;
    file_path(s, KV_FILE_SEG, c->in[i]->file_id, &ip);
    c->cur_id = c->in[i]->id;
    /* Through the reader's window: compact_entry copies what it keeps (the
     * record into the output buffer, the key into the arena) at once. */
    kvr_scan_hooks h = {compact_record, compact_problem, NULL, c};
    st = kvr_scan_fd(s->io, c->in[i]->fd, c->sizes[i], c->in[i]->file_id, ip.s, 0, &h, NULL);
    if (st == EIO) mark_bad(s, c->in[i], 0, c->sizes[i] > UINT32_MAX ? UINT32_MAX : (uint32_t)c->sizes[i], -EIO);
    if (st != KV_OK && st != KV_VERSION) {
        snprintf(rep->message, sizeof rep->message, "cannot read %s: %s", ip.s, kv_strerror(st));
    } else if (st == KV_OK) {
        if (c->err != KV_OK) {
            st = c->err;
            snprintf(rep->message, sizeof rep->message, "compaction failed while copying %s: %s", ip.s,
                     kv_strerror(st));
        }
        if (st == KV_OK && c->damaged) {
            st = KV_CORRUPT;
            snprintf(rep->message, sizeof rep->message, "%s has damage; not compacting it. Inspect with: kvfsck %s",
                     ip.s, s->dir);
        }
    }
    pthread_mutex_lock(&s->q.mu);
    s->q.cprog.bytes_done += c->sizes[i];
    pthread_mutex_unlock(&s->q.mu);
    return st;
}

/* Ends the output like any sealed segment: its trailer counts its records
 * and carries the last sequence number of its inputs. */
static kv_status compact_seal_output(compaction *c)
{
    kv_status st = KV_OK;
    if (c->pend + KV_MARK_SIZE > c->buf_cap) {
        uint8_t *nb = realloc(c->buf, c->pend + KV_MARK_SIZE);
        if (!nb) st = ENOMEM;
        else {
            c->buf = nb;
            c->buf_cap = c->pend + KV_MARK_SIZE;
        }
    }
    if (st == KV_OK) {
        kv_mark_encode(c->buf + c->pend, KV_REC_SEAL, c->max_seq, c->out_off, (uint32_t)c->rep->records_copied);
        c->pend += KV_MARK_SIZE;
        c->out_off += KV_MARK_SIZE;
        st = compact_flush(c);
    }
    if (st != KV_OK)
        snprintf(c->rep->message, sizeof c->rep->message, "cannot write %s: %s", c->tmp.s, kv_strerror(st));
    return st;
}

/* Step 1, first part: creates hi.seg.compact beside the inputs and writes
 * its header, naming the replaced range lo..hi. A failure here leaves the
 * file (if created) for recovery to remove, as it always has. */
static kv_status compact_create_output(compaction *c)
{
    kv_store *s = c->s;
    kv_compact_report *rep = c->rep;
    file_path(s, KV_FILE_SEG, c->hi, &c->path);
    file_path(s, KV_FILE_SEG_COMPACT, c->hi, &c->tmp);
    c->out_fd = s->io->open(s->io->ctx, c->tmp.s, KV_O_RDWR | KV_O_CREAT | KV_O_TRUNC);
    if (c->out_fd < 0) {
        kv_status st = -c->out_fd;
        snprintf(rep->message, sizeof rep->message, "cannot create %s: %s", c->tmp.s, kv_strerror(st));
        return st;
    }
    uint8_t hdr[KV_SEG_HEADER_SIZE];
    /* The inputs are the oldest segments: nothing precedes the output. */
    kv_seg_header ch = {KV_FORMAT_VERSION, c->hi, c->lo, wall_ms(s), 0, 0};
    kv_seg_header_encode_h(hdr, &ch);
    int r = kv_io_write_full(s->io, c->out_fd, hdr, sizeof hdr, 0);
    if (r < 0) {
        snprintf(rep->message, sizeof rep->message, "cannot write %s: %s", c->tmp.s, kv_strerror(-r));
        return -r;
    }
    c->out_off = KV_SEG_HEADER_SIZE;
    return KV_OK;
}

/* Step 1, the rest: the inputs' live records, then the trailer. */
static kv_status compact_write_output(compaction *c)
{
    kv_status st = KV_OK;
    for (size_t i = 0; i < c->k && st == KV_OK; i++) st = compact_copy_input(c, i);
    if (st == KV_OK) st = compact_seal_output(c);
    return st;
}

/* Step 2: fdatasyncs the output and closes it. On a failure of the copy
 * or of this sync the output is removed: the inputs are untouched. */
static kv_status compact_sync_output(compaction *c, kv_status st)
{
    kv_store *s = c->s;
    if (st == KV_OK) {
        int r = s->io->fdatasync(s->io->ctx, c->out_fd);
        if (r < 0) {
            st = -r;
            snprintf(c->rep->message, sizeof c->rep->message, "cannot fdatasync %s: %s", c->tmp.s, kv_strerror(st));
        }
    }
    s->io->close(s->io->ctx, c->out_fd);
    c->out_fd = -1;
    if (st != KV_OK) s->io->unlink(s->io->ctx, c->tmp.s);
    return st;
}

/* Steps 3 to 5, the switch on disk: from the rename on, the output is the
 * log. Renames hi.seg.compact over hi.seg, then unlinks hi.hint (it
 * describes the old hi.seg; only once the rename succeeded, so that a
 * failed rename leaves hi and its hint as they were), fsyncs the
 * directory, and opens the output for reading. Returns its fd or -errno. */
static int compact_rename_output(compaction *c)
{
    kv_store *s = c->s;
    int r = s->io->rename(s->io->ctx, c->tmp.s, c->path.s);
    if (r == 0) {
        kv_path hpath;
        file_path(s, KV_FILE_HINT, c->hi, &hpath);
        s->io->unlink(s->io->ctx, hpath.s);
        r = s->io->fsync_dir(s->io->ctx, s->dir);
    }
    int nfd = r == 0 ? s->io->open(s->io->ctx, c->path.s, KV_O_RDONLY) : r;
    if (nfd < 0) {
        /* The rename may or may not be durable: either way the directory
         * recovers to the same keys. This process keeps reading the
         * inputs through their open descriptors. */
        snprintf(c->rep->message, sizeof c->rep->message, "cannot install %s: %s", c->path.s, kv_strerror(-nfd));
    }
    return nfd;
}

/* Step 6: switches the key directory to the output. The output joins the
 * table under a fresh id, beside its inputs; then the keys move over in
 * steps of KV_SWITCH_STEP, each under the write lock, so readers and
 * writers wait for one step at a time, not for the whole key set.
 * Between steps a key is found either at its old place or at its new
 * one, both readable; a key written meanwhile keeps its newer record.
 * Last, the inputs leave the table. Returns KV_OK, or ENOMEM (fail-stop:
 * the output is the log on disk but this process cannot serve it). */
static kv_status compact_switch_keys(compaction *c, int nfd)
{
    kv_store *s = c->s;
    pthread_rwlock_wrlock(&s->tab.lock);
    c->vid = s->tab.next_vid++;
    segment *out_g = do_seg_insert(s, 1, c->vid, c->hi, nfd);
    pthread_rwlock_unlock(&s->tab.lock);
    if (!out_g) {
        /* Stop taking writes rather than diverge from the log on disk. */
        s->io->close(s->io->ctx, nfd);
        failstop(s, ENOMEM, "installing compaction output", c->hi);
        return ENOMEM;
    }
    uint64_t longest = 0;
    for (size_t i0 = 0; i0 < c->nmv; i0 += KV_SWITCH_STEP) {
        size_t i1 = i0 + KV_SWITCH_STEP < c->nmv ? i0 + KV_SWITCH_STEP : c->nmv;
        uint64_t step0 = mono_us();
        pthread_rwlock_wrlock(&s->tab.lock);
        for (size_t i = i0; i < i1; i++) {
            const moved *m = (const moved *)c->mv.p + i;
            const uint8_t *key = c->keys.p + m->key_at;
            kv_loc loc;
            if (!kv_keydir_get(s->tab.kd, key, m->klen, &loc) || loc.seg != m->old_seg ||
                loc.off != m->old_off || loc.seq != m->seq)
                continue; /* written again meanwhile: the newer record stays */
            if (m->expired) {
                kv_keydir_del(s->tab.kd, key, m->klen, NULL);
                s->tab.live_bytes -= loc.len;
                if (loc.expire_ms) s->tab.expires--;
                continue;
            }
            loc.seg = c->vid;
            loc.off = m->new_off;
            kv_keydir_put(s->tab.kd, key, m->klen, &loc, NULL, NULL); /* key present: no allocation */
        }
        pthread_rwlock_unlock(&s->tab.lock);
        uint64_t t = mono_us() - step0;
        if (t > longest) longest = t;
    }
    uint64_t last0 = mono_us();
    pthread_rwlock_wrlock(&s->tab.lock);
    for (size_t i = 0; i < c->k; i++) do_seg_remove(s, c->in[i]); /* readers keep their references */
    s->tab.log_bytes = s->tab.log_bytes - c->total + c->out_off;
    s->tab.header_bytes -= (uint64_t)KV_SEG_HEADER_SIZE * (c->k - 1);
    s->tab.records = s->tab.records - c->records_in + c->rep->records_copied;
    s->tab.dead_bytes = s->tab.log_bytes - s->tab.header_bytes - s->tab.live_bytes;
    pthread_rwlock_unlock(&s->tab.lock);
    if (mono_us() - last0 > longest) longest = mono_us() - last0;
    c->rep->switch_us = longest;
    return KV_OK;
}

/* Step 7: the other inputs are superseded: removes them and their hints. */
static void compact_unlink_inputs(compaction *c)
{
    kv_store *s = c->s;
    for (size_t i = 0; i + 1 < c->k; i++) {
        kv_path ip, hpath;
        file_path(s, KV_FILE_SEG, c->in[i]->file_id, &ip);
        s->io->unlink(s->io->ctx, ip.s);
        file_path(s, KV_FILE_HINT, c->in[i]->file_id, &hpath);
        s->io->unlink(s->io->ctx, hpath.s);
    }
}

/* Step 8: writes the output's hint file (a failure only means the next
 * start scans it; kv_write_hints tries again). */
static void compact_write_output_hint(compaction *c)
{
    kv_store *s = c->s;
    if (!s->opt.hint_files) return;
    pthread_rwlock_rdlock(&s->tab.lock);
    segment *g = do_seg_acquire(s, c->vid);
    pthread_rwlock_unlock(&s->tab.lock);
    kv_status hs = g ? write_segment_hint(s, g) : KV_OK;
    if (g && hs == KV_OK) {
        pthread_rwlock_wrlock(&s->tab.lock);
        g->hinted = 1;
        s->tab.hints_written++;
        pthread_rwlock_unlock(&s->tab.lock);
    } else if (g) {
        logf_(s, KV_LOG_WARN, "no hint file for compaction output %u: %s", c->hi, kv_strerror(hs));
    }
    seg_release(s, g);
}

/* Steps 1 to 9 of docs/format.md, "Compaction", on inputs already chosen.
 * Any failure before the rename leaves the inputs as the log. */
static kv_status compact_run(compaction *c)
{
    kv_store *s = c->s;
    kv_compact_report *rep = c->rep;
    kv_status st = compact_check_space(c);
    if (st == KV_OK) st = compact_create_output(c);
    if (st != KV_OK) return st; /* compact_finish closes the output */
    st = compact_sync_output(c, compact_write_output(c));
    if (st != KV_OK) return st;
    int nfd = compact_rename_output(c);
    if (nfd < 0) return -nfd;
    st = compact_switch_keys(c, nfd);
    if (st != KV_OK) return st;
    compact_unlink_inputs(c);
    compact_write_output_hint(c);
    s->io->fsync_dir(s->io->ctx, s->dir); /* step 9; if this fails, recovery removes the inputs */
    rep->segments_in = (uint32_t)c->k;
    rep->output_segment = c->hi;
    rep->bytes_before = c->total;
    rep->bytes_after = c->out_off;
    logf_(s, KV_LOG_INFO,
          "compaction done: segments %u..%u -> %u, %" PRIu64 " -> %" PRIu64 " bytes, %" PRIu64
          " records kept, key directory switched in %.1f ms",
          c->lo, c->hi, c->hi, c->total, c->out_off, rep->records_copied, rep->switch_us / 1000.0);
    return KV_OK;
}

/* Releases what the run held and records its outcome for INFO. */
static void compact_finish(compaction *c, kv_status st, uint64_t t0)
{
    kv_store *s = c->s;
    kv_compact_report *rep = c->rep;
    if (c->out_fd >= 0) s->io->close(s->io->ctx, c->out_fd);
    for (size_t i = 0; i < c->k; i++) seg_release(s, c->in[i]);
    kv_map_free(&c->mv);
    kv_map_free(&c->keys);
    free(c->buf);
    free(c->in);
    free(c->sizes);
    rep->elapsed_us = mono_us() - t0;
    pthread_mutex_lock(&s->q.mu);
    s->q.cprog.running = 0;
    s->q.cprog.last_status = st;
    if (st == KV_OK && rep->segments_in) {
        s->q.cprog.last_switch_us = rep->switch_us;
        s->q.cprog.runs++;
        s->q.cprog.bytes_reclaimed += rep->bytes_before - rep->bytes_after;
    }
    pthread_mutex_unlock(&s->q.mu);
    if (st != KV_OK) logf_(s, KV_LOG_WARN, "compaction failed: %s", rep->message);
}

kv_status kv_compact(kv_store *s, kv_compact_report *rep)
{
    memset(rep, 0, sizeof *rep);
    uint64_t t0 = mono_us();
    pthread_mutex_lock(&s->cmp.mu);
    char why[512];
    if (kv_failstop_reason(s, why, sizeof why)) {
        snprintf(rep->message, sizeof rep->message, "not compacting: %s", why);
        pthread_mutex_unlock(&s->cmp.mu);
        return KV_FAILSTOP;
    }
    compaction c = {.s = s, .rep = rep, .out_fd = -1, .now = wall_ms(s)};
    kv_status st = compact_choose_inputs(&c);
    if (st == KV_OK && c.k == 0)
        snprintf(rep->message, sizeof rep->message, "nothing to compact: no sealed segment");
    if (st == KV_OK && c.k > 0) {
        pthread_mutex_lock(&s->q.mu);
        s->q.cprog.running = 1;
        s->q.cprog.bytes_total = c.total;
        s->q.cprog.bytes_done = 0;
        pthread_mutex_unlock(&s->q.mu);
        logf_(s, KV_LOG_INFO, "compaction started: segments %u..%u (%zu segments, %" PRIu64 " bytes)", c.lo, c.hi,
              c.k, c.total);
        st = compact_run(&c);
    }
    compact_finish(&c, st, t0);
    pthread_mutex_unlock(&s->cmp.mu);
    return st;
}
