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

#include <xxhash.h>

#include "kv_keydir.h"
#include "kv_record.h"
#include "kvr_hint.h"

/* Keys a compaction moves to its output per hold of the write lock. */
#define KV_SWITCH_STEP 2048
/* Compaction output is written in pieces of this many bytes, and made
 * durable every KV_COMPACT_SYNC_BYTES. */
#define KV_COMPACT_WRITE_BYTES (1u << 20)
#define KV_COMPACT_SYNC_BYTES (16u << 20)

/* ---- the store ---- */

static void vlogf_(kv_store *s, int level, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
static void vlogf_(kv_store *s, int level, const char *fmt, va_list ap)
{
    if (!s->opt.log) return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    s->opt.log(s->opt.log_arg, level, msg);
}

void logf_(kv_store *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf_(s, level, fmt, ap);
    va_end(ap);
}

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


/* ---- compaction ---- */

/* A live record copied by a compaction: where it was and where it is. */
typedef struct moved {
    uint8_t *key;
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
    moved *mv;
    size_t nmv, cap_mv;
    uint64_t now;
    uint64_t records_in;
    int damaged;
    kv_status err;
    uint32_t cur_id; /* key-directory id of the input being copied */
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
    int expired = r->expire_ms != 0 && r->expire_ms <= c->now;
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
    if (c->nmv == c->cap_mv) {
        size_t nc = c->cap_mv ? c->cap_mv * 2 : 1024;
        moved *nm = realloc(c->mv, nc * sizeof *nm);
        if (!nm) {
            c->err = ENOMEM;
            return;
        }
        c->mv = nm;
        c->cap_mv = nc;
    }
    moved *m = &c->mv[c->nmv];
    m->key = malloc(r->klen ? r->klen : 1);
    if (!m->key) {
        c->err = ENOMEM;
        return;
    }
    if (r->klen) memcpy(m->key, r->key, r->klen);
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
    uint64_t last = r->type == KV_REC_BATCH ? r->seq + r->flags - 1 : r->seq;
    if (last > c->max_seq) c->max_seq = last;
    if (r->type == KV_REC_BATCH) {
        size_t pos = 0, before = 0;
        kv_record e;
        while (c->err == KV_OK && kv_batch_next(r, &pos, &e) == KV_OK) {
            compact_entry(c, seg, off + KV_REC_HEADER_SIZE + before, &e);
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

static kv_status write_segment_hint(kv_store *s, segment *g);

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

    /* The inputs: every sealed segment (all but the newest, which the
     * writer appends to), oldest first, at most KV_MAX_SEGMENT_MAX bytes. */
    pthread_rwlock_rdlock(&s->tab.lock);
    size_t n = s->tab.nsegs > 0 ? s->tab.nsegs - 1 : 0;
    segment **in = calloc(n ? n : 1, sizeof *in);
    uint64_t *sizes = calloc(n ? n : 1, sizeof *sizes);
    size_t k = 0;
    uint64_t total = 0;
    for (size_t i = 0; in && sizes && i < n; i++) {
        uint64_t sz = 0;
        /* A segment with a media error is left alone: what it lost would
         * look like dead records. kvfsck deals with it. */
        if (__atomic_load_n(&s->tab.segs[i]->bad, __ATOMIC_ACQUIRE)) break;
        if (s->io->fsize(s->io->ctx, s->tab.segs[i]->fd, &sz) < 0) break;
        if (k > 0 && total + sz > KV_MAX_SEGMENT_MAX) break;
        __atomic_add_fetch(&s->tab.segs[i]->refs, 1, __ATOMIC_ACQ_REL);
        in[k] = s->tab.segs[i];
        sizes[k++] = sz;
        total += sz;
    }
    pthread_rwlock_unlock(&s->tab.lock);
    kv_status st = KV_OK;
    int r;
    compaction c = {.s = s, .rep = rep, .out_fd = -1, .now = wall_ms(s)};
    char tmp[4200], path[4096];
    uint32_t lo = k ? in[0]->file_id : 0, hi = k ? in[k - 1]->file_id : 0;
    if (!in || !sizes) {
        st = ENOMEM;
        goto out;
    }
    if (k == 0) {
        snprintf(rep->message, sizeof rep->message, "nothing to compact: no sealed segment");
        goto out;
    }
    pthread_mutex_lock(&s->q.mu);
    s->q.cprog.running = 1;
    s->q.cprog.bytes_total = total;
    s->q.cprog.bytes_done = 0;
    pthread_mutex_unlock(&s->q.mu);
    logf_(s, KV_LOG_INFO, "compaction started: segments %u..%u (%zu segments, %" PRIu64 " bytes)", lo, hi, k, total);

    /* Disk-full safety: the output can be as large as the live bytes of
     * the inputs (at most all live bytes); refuse to start without room. */
    if (s->io->free_space) {
        uint64_t free_b = 0;
        pthread_rwlock_rdlock(&s->tab.lock);
        uint64_t need = (s->tab.live_bytes < total ? s->tab.live_bytes : total) + KV_SEG_HEADER_SIZE;
        pthread_rwlock_unlock(&s->tab.lock);
        r = s->io->free_space(s->io->ctx, s->dir, &free_b);
        if (r == 0 && free_b < need) {
            st = ENOSPC;
            snprintf(rep->message, sizeof rep->message,
                     "not enough free space to compact: need up to %" PRIu64 " bytes, %" PRIu64 " free", need, free_b);
            goto out;
        }
    }
    /* Write the output beside the inputs. */
    seg_path(s, hi, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.compact", path);
    c.out_fd = s->io->open(s->io->ctx, tmp, KV_O_RDWR | KV_O_CREAT | KV_O_TRUNC);
    if (c.out_fd < 0) {
        st = -c.out_fd;
        snprintf(rep->message, sizeof rep->message, "cannot create %s: %s", tmp, kv_strerror(st));
        goto out;
    }
    uint8_t hdr[KV_SEG_HEADER_SIZE];
    /* The inputs are the oldest segments: nothing precedes the output. */
    kv_seg_header ch = {KV_FORMAT_VERSION, hi, lo, wall_ms(s), 0, 0};
    kv_seg_header_encode_h(hdr, &ch);
    r = kv_io_write_full(s->io, c.out_fd, hdr, sizeof hdr, 0);
    if (r < 0) {
        st = -r;
        snprintf(rep->message, sizeof rep->message, "cannot write %s: %s", tmp, kv_strerror(st));
        goto out;
    }
    c.out_off = KV_SEG_HEADER_SIZE;
    for (size_t i = 0; i < k && st == KV_OK; i++) {
        char ip[4096];
        seg_path(s, in[i]->file_id, ip, sizeof ip);
        c.cur_id = in[i]->id;
        uint8_t *buf = malloc(sizes[i] ? sizes[i] : 1);
        r = buf ? kv_io_read_full(s->io, in[i]->fd, buf, sizes[i], 0) : -ENOMEM;
        if (r == -EIO) mark_bad(s, in[i], 0, sizes[i] > UINT32_MAX ? UINT32_MAX : (uint32_t)sizes[i], r);
        if (r < 0) {
            st = -r;
            snprintf(rep->message, sizeof rep->message, "cannot read %s: %s", ip, kv_strerror(st));
        } else {
            st = kvr_scan_buffer(buf, sizes[i], in[i]->file_id, ip, compact_record, compact_problem, &c, NULL);
            if (st == KV_OK && c.err != KV_OK) {
                st = c.err;
                snprintf(rep->message, sizeof rep->message, "compaction failed while copying %s: %s", ip,
                         kv_strerror(st));
            }
            if (st == KV_OK && c.damaged) {
                st = KV_CORRUPT;
                snprintf(rep->message, sizeof rep->message,
                         "%s has damage; not compacting it. Inspect with: kvfsck %s", ip, s->dir);
            }
        }
        free(buf);
        pthread_mutex_lock(&s->q.mu);
        s->q.cprog.bytes_done += sizes[i];
        pthread_mutex_unlock(&s->q.mu);
    }
    if (st == KV_OK) {
        /* The output is sealed like any segment: its trailer counts its
         * records and carries the last sequence number of its inputs. */
        if (c.pend + KV_MARK_SIZE > c.buf_cap) {
            uint8_t *nb = realloc(c.buf, c.pend + KV_MARK_SIZE);
            if (!nb) st = ENOMEM;
            else {
                c.buf = nb;
                c.buf_cap = c.pend + KV_MARK_SIZE;
            }
        }
        if (st == KV_OK) {
            kv_mark_encode(c.buf + c.pend, KV_REC_SEAL, c.max_seq, c.out_off, (uint32_t)rep->records_copied);
            c.pend += KV_MARK_SIZE;
            c.out_off += KV_MARK_SIZE;
            st = compact_flush(&c);
        }
        if (st != KV_OK)
            snprintf(rep->message, sizeof rep->message, "cannot write %s: %s", tmp, kv_strerror(st));
    }
    if (st == KV_OK) {
        r = s->io->fdatasync(s->io->ctx, c.out_fd);
        if (r < 0) {
            st = -r;
            snprintf(rep->message, sizeof rep->message, "cannot fdatasync %s: %s", tmp, kv_strerror(st));
        }
    }
    s->io->close(s->io->ctx, c.out_fd);
    c.out_fd = -1;
    if (st != KV_OK) {
        s->io->unlink(s->io->ctx, tmp); /* the inputs are untouched */
        goto out;
    }

    /* The switch: from the rename on, the output is the log. */
    r = s->io->rename(s->io->ctx, tmp, path);
    if (r == 0) {
        /* The hint of the old segment `hi` no longer describes that name
         * (it would be rejected as stale anyway: the header differs). Only
         * now: if the rename failed, `hi` and its hint stay as they were. */
        char hname[32], hpath[4200];
        kvh_name(hname, sizeof hname, hi);
        snprintf(hpath, sizeof hpath, "%s/%s", s->dir, hname);
        s->io->unlink(s->io->ctx, hpath);
        r = s->io->fsync_dir(s->io->ctx, s->dir);
    }
    int nfd = r == 0 ? s->io->open(s->io->ctx, path, KV_O_RDONLY) : r;
    if (nfd < 0) {
        /* The rename may or may not be durable: either way the directory
         * recovers to the same keys. This process keeps reading the
         * inputs through their open descriptors. */
        st = -nfd;
        snprintf(rep->message, sizeof rep->message, "cannot install %s: %s", path, kv_strerror(st));
        goto out;
    }
    /* The output joins the table under a fresh id, beside its inputs;
     * then the keys move over in steps of KV_SWITCH_STEP, each under the
     * write lock, so readers and writers wait for one step at a time, not
     * for the whole key set. Between steps a key is found either at its
     * old place or at its new one, both readable; a key written meanwhile
     * keeps its newer record. Last, the inputs leave the table. */
    pthread_rwlock_wrlock(&s->tab.lock);
    uint32_t vid = s->tab.next_vid++;
    segment *out_g = do_seg_insert(s, 1, vid, hi, nfd);
    pthread_rwlock_unlock(&s->tab.lock);
    if (!out_g) {
        /* The output is the log on disk now, but this process cannot
         * serve it: stop taking writes rather than diverge from it. */
        s->io->close(s->io->ctx, nfd);
        failstop(s, ENOMEM, "installing compaction output", hi);
        st = ENOMEM;
        goto out;
    }
    uint64_t longest = 0;
    for (size_t i0 = 0; i0 < c.nmv; i0 += KV_SWITCH_STEP) {
        size_t i1 = i0 + KV_SWITCH_STEP < c.nmv ? i0 + KV_SWITCH_STEP : c.nmv;
        uint64_t step0 = mono_us();
        pthread_rwlock_wrlock(&s->tab.lock);
        for (size_t i = i0; i < i1; i++) {
            moved *m = &c.mv[i];
            kv_loc loc;
            if (!kv_keydir_get(s->tab.kd, m->key, m->klen, &loc) || loc.seg != m->old_seg || loc.off != m->old_off ||
                loc.seq != m->seq)
                continue; /* written again meanwhile: the newer record stays */
            if (m->expired) {
                kv_keydir_del(s->tab.kd, m->key, m->klen, NULL);
                s->tab.live_bytes -= loc.len;
                if (loc.expire_ms) s->tab.expires--;
                continue;
            }
            loc.seg = vid;
            loc.off = m->new_off;
            kv_keydir_put(s->tab.kd, m->key, m->klen, &loc, NULL, NULL); /* key present: no allocation */
        }
        pthread_rwlock_unlock(&s->tab.lock);
        uint64_t t = mono_us() - step0;
        if (t > longest) longest = t;
    }
    uint64_t last0 = mono_us();
    pthread_rwlock_wrlock(&s->tab.lock);
    for (size_t i = 0; i < k; i++) do_seg_remove(s, in[i]); /* readers keep their references */
    s->tab.log_bytes = s->tab.log_bytes - total + c.out_off;
    s->tab.header_bytes -= (uint64_t)KV_SEG_HEADER_SIZE * (k - 1);
    s->tab.records = s->tab.records - c.records_in + rep->records_copied;
    s->tab.dead_bytes = s->tab.log_bytes - s->tab.header_bytes - s->tab.live_bytes;
    pthread_rwlock_unlock(&s->tab.lock);
    if (mono_us() - last0 > longest) longest = mono_us() - last0;
    rep->switch_us = longest;

    /* The other inputs are superseded: remove them. */
    for (size_t i = 0; i + 1 < k; i++) {
        char ip[4096], hname[32], hpath[4200];
        seg_path(s, in[i]->file_id, ip, sizeof ip);
        s->io->unlink(s->io->ctx, ip);
        kvh_name(hname, sizeof hname, in[i]->file_id);
        snprintf(hpath, sizeof hpath, "%s/%s", s->dir, hname);
        s->io->unlink(s->io->ctx, hpath);
    }
    /* The output gets its hint file now (a failure only means the next
     * start scans it; kv_write_hints tries again). */
    if (s->opt.hint_files) {
        pthread_rwlock_rdlock(&s->tab.lock);
        segment *g = do_seg_acquire(s, vid);
        pthread_rwlock_unlock(&s->tab.lock);
        kv_status hs = g ? write_segment_hint(s, g) : KV_OK;
        if (g && hs == KV_OK) {
            pthread_rwlock_wrlock(&s->tab.lock);
            g->hinted = 1;
            s->tab.hints_written++;
            pthread_rwlock_unlock(&s->tab.lock);
        } else if (g) {
            logf_(s, KV_LOG_WARN, "no hint file for compaction output %u: %s", hi, kv_strerror(hs));
        }
        seg_release(s, g);
    }
    s->io->fsync_dir(s->io->ctx, s->dir); /* if this fails, recovery removes the inputs */
    rep->segments_in = (uint32_t)k;
    rep->output_segment = hi;
    rep->bytes_before = total;
    rep->bytes_after = c.out_off;
    logf_(s, KV_LOG_INFO,
          "compaction done: segments %u..%u -> %u, %" PRIu64 " -> %" PRIu64 " bytes, %" PRIu64
          " records kept, key directory switched in %.1f ms",
          lo, hi, hi, total, c.out_off, rep->records_copied, rep->switch_us / 1000.0);
out:
    if (c.out_fd >= 0) s->io->close(s->io->ctx, c.out_fd);
    for (size_t i = 0; i < k; i++) seg_release(s, in[i]);
    for (size_t i = 0; i < c.nmv; i++) free(c.mv[i].key);
    free(c.mv);
    free(c.buf);
    free(in);
    free(sizes);
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
    pthread_mutex_unlock(&s->cmp.mu);
    return st;
}

/* ---- hint files ---- */

/* Builds and writes the hint file of sealed segment g (a reference held by
 * the caller, who also holds cmp.mu) without a directory fsync.
 * Returns KV_OK, KV_CORRUPT (damage: no hint), an errno, ENOMEM. */
static kv_status write_segment_hint(kv_store *s, segment *g)
{
    uint64_t size = 0;
    int r = s->io->fsize(s->io->ctx, g->fd, &size);
    if (r < 0) return -r;
    if (size > KVR_MAX_SEGMENT_BYTES) return EFBIG;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return ENOMEM;
    r = kv_io_read_full(s->io, g->fd, buf, size, 0);
    if (r < 0) {
        free(buf);
        if (r == -EIO) mark_bad(s, g, 0, size > UINT32_MAX ? UINT32_MAX : (uint32_t)size, r);
        return -r;
    }
    uint8_t *hint = NULL;
    size_t hlen = 0;
    kv_status st = kvh_build(buf, size, g->file_id, &hint, &hlen);
    free(buf);
    if (st != KV_OK) return st;
    r = kvh_write_file(s->io, s->dir, g->file_id, hint, hlen);
    free(hint);
    return r < 0 ? -r : KV_OK;
}

kv_status kv_write_hints(kv_store *s, uint32_t *written)
{
    if (written) *written = 0;
    if (!s->opt.hint_files) return KV_OK;
    pthread_mutex_lock(&s->cmp.mu);
    pthread_rwlock_rdlock(&s->tab.lock);
    size_t n = 0, cap = s->tab.nsegs;
    segment **todo = calloc(cap ? cap : 1, sizeof *todo);
    for (size_t i = 0; todo && i + 1 < s->tab.nsegs; i++) {
        if (s->tab.segs[i]->hinted) continue;
        __atomic_add_fetch(&s->tab.segs[i]->refs, 1, __ATOMIC_ACQ_REL);
        todo[n++] = s->tab.segs[i];
    }
    pthread_rwlock_unlock(&s->tab.lock);
    if (!todo) {
        pthread_mutex_unlock(&s->cmp.mu);
        return ENOMEM;
    }
    kv_status first = KV_OK;
    uint32_t done = 0;
    for (size_t i = 0; i < n; i++) {
        kv_status st = write_segment_hint(s, todo[i]);
        if (st == KV_OK) {
            done++;
            pthread_rwlock_wrlock(&s->tab.lock);
            todo[i]->hinted = 1;
            s->tab.hints_written++;
            pthread_rwlock_unlock(&s->tab.lock);
        } else {
            if (first == KV_OK) first = st;
            logf_(s, KV_LOG_WARN, "no hint file for segment %u: %s", todo[i]->file_id,
                  st == KV_CORRUPT ? "the segment has damage (run kvfsck)" : kv_strerror(st));
        }
    }
    if (done > 0) {
        int r = s->io->fsync_dir(s->io->ctx, s->dir);
        if (r < 0) {
            /* The hints may not survive a power cut; the next start then
             * scans those segments and writes them again. */
            if (first == KV_OK) first = -r;
            logf_(s, KV_LOG_WARN, "cannot fsync %s after writing hint files: %s", s->dir, kv_strerror(-r));
        }
        logf_(s, KV_LOG_INFO, "wrote %u hint file%s", done, done == 1 ? "" : "s");
    }
    for (size_t i = 0; i < n; i++) seg_release(s, todo[i]);
    free(todo);
    pthread_mutex_unlock(&s->cmp.mu);
    if (written) *written = done;
    return first;
}

uint32_t kv_hints_pending(kv_store *s)
{
    if (!s->opt.hint_files) return 0;
    uint32_t n = 0;
    pthread_rwlock_rdlock(&s->tab.lock);
    for (size_t i = 0; i + 1 < s->tab.nsegs; i++)
        if (!s->tab.segs[i]->hinted) n++;
    pthread_rwlock_unlock(&s->tab.lock);
    return n;
}

/* ---- sealed segments, for the scrub ---- */

size_t kv_sealed_list(kv_store *s, uint32_t *ids, size_t cap)
{
    pthread_rwlock_rdlock(&s->tab.lock);
    size_t n = s->tab.nsegs > 0 ? s->tab.nsegs - 1 : 0;
    for (size_t i = 0; i < n && i < cap; i++) ids[i] = s->tab.segs[i]->id;
    pthread_rwlock_unlock(&s->tab.lock);
    return n;
}

kv_status kv_sealed_hold(kv_store *s, uint32_t id, kv_sealed *h)
{
    memset(h, 0, sizeof *h);
    pthread_rwlock_rdlock(&s->tab.lock);
    segment *g = NULL;
    long i = do_seg_index(s, id);
    if (i >= 0 && s->tab.byid[i] != s->tab.segs[s->tab.nsegs - 1]) g = do_seg_acquire(s, id);
    pthread_rwlock_unlock(&s->tab.lock);
    if (!g) return KV_NOT_FOUND;
    uint64_t size = 0;
    int r = s->io->fsize(s->io->ctx, g->fd, &size);
    if (r < 0) {
        seg_release(s, g);
        return -r;
    }
    h->id = g->id;
    h->file_id = g->file_id;
    h->fd = g->fd;
    h->map = g->map && g->map_len >= size ? g->map : NULL;
    h->size = size;
    h->ref_ = g;
    return KV_OK;
}

void kv_sealed_media_error(kv_store *s, const kv_sealed *h, uint64_t off, uint64_t len, int err)
{
    if (h->ref_) mark_bad(s, h->ref_, off, len > UINT32_MAX ? UINT32_MAX : (uint32_t)len, err);
}

void kv_sealed_release(kv_store *s, kv_sealed *h)
{
    if (h->ref_) seg_release(s, h->ref_);
    memset(h, 0, sizeof *h);
}

int kv_sealed_retired(kv_store *s, const kv_sealed *h)
{
    pthread_rwlock_rdlock(&s->tab.lock);
    int in = do_seg_in_log(s, h->ref_);
    pthread_rwlock_unlock(&s->tab.lock);
    return !in;
}

kv_status kv_sealed_read_hint(kv_store *s, const kv_sealed *h, uint8_t **buf, uint64_t *len)
{
    *buf = NULL;
    *len = 0;
    if (!s->opt.hint_files) return KV_NOT_FOUND;
    /* cmp.mu: no compaction renames an output over this file id, and
     * no hint is written, while the file is read. */
    pthread_mutex_lock(&s->cmp.mu);
    kv_status st = KV_NOT_FOUND;
    if (!kv_sealed_retired(s, h)) {
        char name[32], path[4200];
        kvh_name(name, sizeof name, h->file_id);
        snprintf(path, sizeof path, "%s/%s", s->dir, name);
        int r = kv_io_read_file(s->io, path, KVH_MAX_FILE_BYTES, buf, len);
        st = r == 0 ? KV_OK : r == -ENOENT ? KV_NOT_FOUND : -r;
    }
    pthread_mutex_unlock(&s->cmp.mu);
    return st;
}

const char *kv_store_dir(const kv_store *s)
{
    return s->dir;
}

const kv_io *kv_store_io(const kv_store *s)
{
    return s->io;
}

void kv_store_log(kv_store *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf_(s, level, fmt, ap);
    va_end(ap);
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
    kv_io_unlock_dir(s->io, &s->dlock);
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
    free(s->tab.segs);
    free(s->tab.byid);
    free(s->wr.gbuf);
    free(s->wr.gops);
    free(s->wr.ovl);
    for (size_t i = 0; i < s->wr.tpool_cap; i++) kv_batch_free(s->wr.tpool[i]);
    free(s->wr.tpool);
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
    kv_store *s = calloc(1, sizeof *s);
    if (!s) return ENOMEM;
    s->dir = strdup(dir);
    s->io = o.io;
    s->opt = o;
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
    pthread_condattr_destroy(&ca);
    s->tab.kd = kv_keydir_new();
    kv_status st = KV_OK;
    char path[4096];
    if (!s->dir || !s->tab.kd) {
        st = ENOMEM;
        goto fail;
    }

    int r = make_dir(s->io, dir);
    if (r < 0) {
        st = -r;
        snprintf(s->rep.message, sizeof s->rep.message, "cannot create data directory %s: %s", dir, kv_strerror(st));
        goto fail;
    }
    r = kv_io_lock_dir(s->io, dir, &s->dlock);
    if (r < 0) {
        st = r == -EWOULDBLOCK ? KV_LOCKED : -r;
        if (st == KV_LOCKED)
            snprintf(s->rep.message, sizeof s->rep.message,
                     "data directory is in use by another process (it holds the directory's lock): %s", dir);
        else
            snprintf(s->rep.message, sizeof s->rep.message, "cannot lock data directory %s: %s", dir,
                     kv_strerror(st));
        goto fail;
    }

    st = kvr_recover(s->io, dir, o.recovery_mode, o.hint_files ? KVR_HINTS_READ | KVR_HINTS_WRITE : 0, wall_ms(s),
                     s->tab.kd, &s->rep);
    if (st != KV_OK) goto fail;
    /* A crash (or a failed directory fsync) may have left entries that are
     * not durable yet, e.g. a segment created just before: make them so
     * before any write is acknowledged into them. */
    r = s->io->fsync_dir(s->io->ctx, dir);
    if (r < 0) {
        st = -r;
        snprintf(s->rep.message, sizeof s->rep.message, "cannot fsync data directory %s: %s", dir, kv_strerror(st));
        goto fail;
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

    /* Open the segments: older ones read-only, the newest read-write. */
    if (s->rep.nsegs > 0 && s->rep.segs[s->rep.nsegs - 1].id >= KV_VIRTUAL_ID_BASE - 1) {
        st = KV_INVALID;
        snprintf(s->rep.message, sizeof s->rep.message,
                 "segment ids in %s reach %u; this build numbers segments below %u", dir,
                 s->rep.segs[s->rep.nsegs - 1].id, KV_VIRTUAL_ID_BASE - 1);
        goto fail;
    }
    for (size_t i = 0; i < s->rep.nsegs; i++) {
        int last = i + 1 == s->rep.nsegs;
        seg_path(s, s->rep.segs[i].id, path, sizeof path);
        int fd = s->io->open(s->io->ctx, path, last ? KV_O_RDWR : KV_O_RDONLY);
        if (fd < 0 || do_seg_add(s, s->rep.segs[i].id, fd) < 0) {
            st = fd < 0 ? -fd : ENOMEM;
            if (fd >= 0) s->io->close(s->io->ctx, fd);
            snprintf(s->rep.message, sizeof s->rep.message, "cannot open %s: %s", path, kv_strerror(st));
            goto fail;
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
    if (s->wr.active_fd < 0) {
        /* Empty directory: the first segment. */
        int fd = create_segment(s, 1, 0, 0);
        if (fd < 0 || do_seg_add(s, 1, fd) < 0) {
            st = fd < 0 ? -fd : ENOMEM;
            snprintf(s->rep.message, sizeof s->rep.message, "cannot create the first segment in %s: %s", dir,
                     kv_strerror(st));
            goto fail;
        }
        s->wr.active_fd = fd;
        s->wr.active_id = 1;
        s->wr.active_size = KV_SEG_HEADER_SIZE;
        s->wr.active_version = KV_FORMAT_VERSION;
        s->tab.log_bytes += KV_SEG_HEADER_SIZE;
        s->tab.header_bytes += KV_SEG_HEADER_SIZE;
    } else if (s->wr.active_size < KV_SEG_HEADER_SIZE) {
        /* The newest segment lost its header in a crash (recovery cut it
         * to zero bytes): write it again. */
        uint8_t hdr[KV_SEG_HEADER_SIZE];
        size_t np = s->rep.nsegs;
        /* Its predecessor's size is recorded only for a segment proven whole
         * (sealed with its trailer, or version 1); 0 says "not recorded"
         * (skip-corrupt opened past a damaged one). */
        const kvr_segment_info *pv = np > 1 ? &s->rep.segs[np - 2] : NULL;
        kv_seg_header h = {KV_FORMAT_VERSION, s->wr.active_id, 0, wall_ms(s), pv ? pv->id : 0,
                           pv && (pv->sealed || pv->version == 1) ? (uint32_t)pv->size : 0};
        kv_seg_header_encode_h(hdr, &h);
        r = kv_io_write_full(s->io, s->wr.active_fd, hdr, sizeof hdr, 0);
        if (r == 0) r = s->io->fdatasync(s->io->ctx, s->wr.active_fd);
        if (r < 0) {
            st = -r;
            snprintf(s->rep.message, sizeof s->rep.message, "cannot rewrite the header of segment %u: %s",
                     s->wr.active_id, kv_strerror(st));
            goto fail;
        }
        s->wr.active_size = KV_SEG_HEADER_SIZE;
        s->tab.log_bytes += KV_SEG_HEADER_SIZE;
        s->tab.header_bytes += KV_SEG_HEADER_SIZE;
        s->wr.active_version = KV_FORMAT_VERSION;
    }
    /* Whatever recovery read may still be only in the page cache (a
     * previous run that crashed under everysec, or whose fdatasync failed):
     * make it durable before any of it is served, or a power cut could
     * take back what a reader has already seen. That includes the trailer
     * of the segment before the newest, if the sync that sealed it failed
     * (the newest is then still empty): once records follow in the newest,
     * a lost trailer there would be damage. */
    if (s->tab.nsegs > 1) {
        segment *pv = s->tab.segs[s->tab.nsegs - 2];
        r = s->io->fdatasync(s->io->ctx, pv->fd);
        if (r < 0) {
            st = -r;
            snprintf(s->rep.message, sizeof s->rep.message, "cannot fdatasync segment %u: %s", pv->file_id,
                     kv_strerror(st));
            goto fail;
        }
    }
    r = s->io->fdatasync(s->io->ctx, s->wr.active_fd);
    if (r < 0) {
        st = -r;
        snprintf(s->rep.message, sizeof s->rep.message, "cannot fdatasync segment %u: %s", s->wr.active_id,
                 kv_strerror(st));
        goto fail;
    }
    s->tab.live_bytes = s->rep.live_bytes;
    s->tab.expires = kv_keydir_expiring(s->tab.kd);
    s->tab.dead_bytes = s->tab.log_bytes - s->tab.header_bytes >= s->tab.live_bytes ? s->tab.log_bytes - s->tab.header_bytes - s->tab.live_bytes : 0;
    s->tab.records = s->rep.records;
    s->q.last_seq = s->rep.max_seq;
    s->tab.hints_written = s->rep.hints_written;
    s->wr.last_sync_ms = mono_us() / 1000u;
    s->wr.active_end = s->wr.active_size; /* recovery cut any zeros past the log end */
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        st = EAGAIN;
        snprintf(s->rep.message, sizeof s->rep.message, "cannot start the writer thread");
        goto fail;
    }
    copy_report(report, &s->rep);
    kvr_report_free(&s->rep); /* the segment list is now in s->tab.segs */
    *out = s;
    return KV_OK;
fail:
    copy_report(report, &s->rep);
    free_store(s);
    return st;
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
    if (!s->q.failstop && s->wr.unsynced_writes > 0 && sync_active(s) < 0) st = s->q.fail_status;
    if (!s->q.failstop && st == KV_OK && s->wr.active_version >= 2 && s->wr.active_size > KV_SEG_HEADER_SIZE) {
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
    } else if (!s->q.failstop) {
        int r = cut_prealloc(s);
        if (r < 0)
            logf_(s, KV_LOG_WARN, "cutting the preallocated space of segment %u: %s", s->wr.active_id,
                  kv_strerror(-r));
    }
    free_store(s);
    return st;
}
