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

/* Keys a compaction moves to its output per hold of the write lock. */
#define KV_SWITCH_STEP 2048
/* Compaction output is written in pieces of this many bytes, and made
 * durable every KV_COMPACT_SYNC_BYTES. */
#define KV_COMPACT_WRITE_BYTES (1u << 20)
#define KV_COMPACT_SYNC_BYTES (16u << 20)

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
