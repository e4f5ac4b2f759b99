/*
 * kv_writer — the group commit: the write queue, the writer thread, and
 * what it does with each group of requests: run transactions against an
 * overlay of the group's earlier writes, encode every record into one
 * buffer, append it in one write ending in a group-commit mark, sync it
 * under the fsync policy, publish it to the key directory, and complete
 * the requests.
 *
 * Owns: the queue (s->q.head/tail), the group buffer, the group's ops
 * and their overlay table, the transactions' batch pool (s->wr.*).
 * Guarantees: requests are written in queue order; a request completes
 * only after its group is acknowledged under the fsync policy (or failed),
 * and its writes are visible to readers only from then on (publish runs
 * after the sync); a transaction sees every write queued before it.
 * Never: splits one request's record across two writes; retries a failed
 * write or sync (kv_active.c enters fail-stop).
 * Locking: writer thread only, except enqueue (any thread; q.mu). The
 * writer takes q.mu to take requests and to publish its statistics, and
 * tab.lock exclusively to publish a group.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"

static int ensure_gbuf(kv_store *s, size_t need)
{
    if (need <= s->wr.gbuf_cap) return 0;
    size_t nc = s->wr.gbuf_cap ? s->wr.gbuf_cap : 65536;
    while (nc < need) nc *= 2;
    uint8_t *nb = realloc(s->wr.gbuf, nc);
    if (!nb) return -ENOMEM;
    s->wr.gbuf = nb;
    s->wr.gbuf_cap = nc;
    return 0;
}

static int ensure_gops(kv_store *s, size_t need)
{
    if (need <= s->wr.gops_cap) return 0;
    size_t nc = s->wr.gops_cap ? s->wr.gops_cap : 256;
    while (nc < need) nc *= 2;
    group_op *ng = realloc(s->wr.gops, nc * sizeof *ng);
    if (!ng) return -ENOMEM;
    s->wr.gops = ng;
    s->wr.gops_cap = nc;
    return 0;
}

/* The group overlay: for each key written in the group being built, the
 * index of its newest op in s->wr.gops. Lets a transaction read what earlier
 * requests of its group wrote, in O(1) per read. */
static uint64_t key_hash(const kv_store *s, const void *key, size_t klen)
{
    return kv_keydir_hash(s->tab.kd, key, klen); /* the same hash publish() reuses */
}

static void ovl_insert(kv_store *s, size_t idx)
{
    const group_op *g = &s->wr.gops[idx];
    size_t mask = s->wr.ovl_cap - 1;
    for (size_t i = (size_t)g->hash & mask;; i = (i + 1) & mask) {
        uint32_t e = s->wr.ovl[i];
        if (e == 0) {
            s->wr.ovl[i] = (uint32_t)idx + 1;
            return;
        }
        const group_op *o = &s->wr.gops[e - 1];
        if (o->hash == g->hash && o->klen == g->klen && keys_equal(o->key, g->key, g->klen)) {
            s->wr.ovl[i] = (uint32_t)idx + 1;
            return;
        }
    }
}

/* Makes room for n ops in the overlay (rebuilding it when it grows).
 * Returns 0 or -ENOMEM. */
static int ovl_reserve(kv_store *s, size_t n)
{
    if (n * 2 <= s->wr.ovl_cap) return 0;
    size_t cap = s->wr.ovl_cap ? s->wr.ovl_cap : 1024;
    while (cap < n * 2) cap *= 2;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return -ENOMEM;
    free(s->wr.ovl);
    s->wr.ovl = t;
    s->wr.ovl_cap = cap;
    return 1; /* rebuilt empty: the caller re-inserts */
}

/* Clears the overlay for a new group. */
static void ovl_clear(kv_store *s)
{
    if (s->wr.ovl_cap > 65536) { /* do not keep a huge table after one big group */
        free(s->wr.ovl);
        s->wr.ovl = NULL;
        s->wr.ovl_cap = 0;
    } else if (s->wr.ovl) {
        memset(s->wr.ovl, 0, s->wr.ovl_cap * sizeof *s->wr.ovl);
    }
}

/* The newest write to `key` among the first n ops of this group, or NULL. */
const group_op *overlay_find(const kv_store *s, size_t n, const uint8_t *key, uint32_t klen)
{
    if (n == 0 || !s->wr.ovl) return NULL;
    uint64_t h = key_hash(s, key, klen);
    size_t mask = s->wr.ovl_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint32_t e = s->wr.ovl[i];
        if (e == 0) return NULL;
        const group_op *g = &s->wr.gops[e - 1];
        if (g->hash == h && g->klen == klen && keys_equal(g->key, key, klen)) return e - 1 < n ? g : NULL;
    }
}

/* Does `key` exist as the writer sees it: the earlier ops of this group
 * first (newest wins), then the key directory. */
static int writer_key_exists(kv_store *s, size_t ngops, const uint8_t *key, uint32_t klen, uint64_t now)
{
    const group_op *g = overlay_find(s, ngops, key, klen);
    if (g) return g->type == KV_REC_PUT && live(g->expire_ms, now);
    kv_loc loc;
    pthread_rwlock_rdlock(&s->tab.lock);
    int found = kv_keydir_get(s->tab.kd, key, klen, &loc);
    pthread_rwlock_unlock(&s->tab.lock);
    return found && live(loc.expire_ms, now);
}

static void complete(req *r, kv_status st)
{
    kv_write_cb cb = r->cb;
    void *arg = r->arg;
    int owned = r->owned;
    if (owned) free(r);
    cb(arg, st);
}

static void complete_all(req *head, kv_status st)
{
    while (head) {
        req *n = head->next;
        complete(head, st);
        head = n;
    }
}

/* Publishes a written group to the key directory (and byte counters).
 * Returns the number of records it could not index (out of memory). */
static size_t publish(kv_store *s, size_t ngops, uint64_t nrecords, uint64_t bytes)
{
    pthread_rwlock_wrlock(&s->tab.lock);
    uint64_t entry_bytes = 0;
    size_t failed = 0;
    /* Buckets are prefetched PUBLISH_AHEAD ops ahead and their first
     * entries half as far, as recovery does: the misses overlap, and the
     * write lock is held for less time. */
    enum { PUBLISH_AHEAD = 8 };
    for (size_t i = 0; i < ngops && i < PUBLISH_AHEAD; i++) kv_keydir_prefetch(s->tab.kd, s->wr.gops[i].hash);
    for (size_t i = 0; i < ngops; i++) {
        group_op *g = &s->wr.gops[i];
        if (i + PUBLISH_AHEAD < ngops) kv_keydir_prefetch(s->tab.kd, s->wr.gops[i + PUBLISH_AHEAD].hash);
        if (i + PUBLISH_AHEAD / 2 < ngops) kv_keydir_prefetch_entry(s->tab.kd, s->wr.gops[i + PUBLISH_AHEAD / 2].hash);
        kv_loc old;
        int had = 0;
        entry_bytes += g->len;
        if (g->type == KV_REC_PUT) {
            kv_loc loc = {s->wr.active_id, g->len, g->off, g->seq, g->expire_ms};
            if (kv_keydir_put_hashed(s->tab.kd, g->key, g->klen, g->hash, &loc, &old, &had) != KV_OK) {
                /* Out of memory: the record is durable, but this process
                 * cannot index it. Stop taking writes and do not
                 * acknowledge the group (a restart indexes it). */
                failstop(s, ENOMEM, "indexing a record", s->wr.active_id);
                failed++;
                continue;
            }
            s->tab.live_bytes += g->len;
            if (g->expire_ms) s->tab.expires++;
        } else {
            had = kv_keydir_del_hashed(s->tab.kd, g->key, g->klen, g->hash, &old);
            s->tab.dead_bytes += g->len;
        }
        if (had) {
            s->tab.live_bytes -= old.len;
            s->tab.dead_bytes += old.len;
            if (old.expire_ms) s->tab.expires--;
        }
    }
    s->tab.dead_bytes += bytes - entry_bytes; /* batch record headers */
    s->tab.log_bytes += bytes;
    s->tab.records += nrecords;
    pthread_rwlock_unlock(&s->tab.lock);
    return failed;
}

/* A cleared batch from the group's pool for one transaction. */
static kv_batch *tpool_get(kv_store *s)
{
    if (s->wr.tpool_len == s->wr.tpool_cap) {
        size_t nc = s->wr.tpool_cap ? s->wr.tpool_cap * 2 : 16;
        kv_batch **np = realloc(s->wr.tpool, nc * sizeof *np);
        if (!np) return NULL;
        memset(np + s->wr.tpool_cap, 0, (nc - s->wr.tpool_cap) * sizeof *np);
        s->wr.tpool = np;
        s->wr.tpool_cap = nc;
    }
    kv_batch **slot = &s->wr.tpool[s->wr.tpool_len];
    if (!*slot && !(*slot = kv_batch_new())) return NULL;
    kv_batch_clear(*slot);
    s->wr.tpool_len++;
    return *slot;
}

/* Encodes batch b (one record, or one batch record) at *pos of the group
 * buffer and records its ops for publishing. Returns 0 or -ENOMEM. */
static int encode_batch(kv_store *s, const kv_batch *b, size_t *pos, size_t *ngops, uint64_t *seq)
{
    if (ensure_gbuf(s, *pos + batch_wire_size(b)) < 0 || ensure_gops(s, *ngops + b->nops) < 0) return -ENOMEM;
    int rebuilt = ovl_reserve(s, *ngops + b->nops);
    if (rebuilt < 0) return -ENOMEM;
    if (rebuilt)
        for (size_t i = 0; i < *ngops; i++) ovl_insert(s, i);
    size_t start = *pos, epos = b->nops == 1 ? start : start + KV_REC_HEADER_SIZE;
    uint8_t rflags = b->nops == 1 ? 0 : KV_RF_IN_BATCH;
    uint64_t first = *seq + 1;
    for (size_t k = 0; k < b->nops; k++) {
        const batch_op *op = &b->ops[k];
        const uint8_t *key = b->data + op->data_off;
        size_t len = kv_record_encode(s->wr.gbuf + epos, op->type, rflags, ++*seq, op->expire_ms, op->flags, key,
                                      op->klen, key + op->klen, op->vlen);
        s->wr.gops[*ngops] = (group_op){key_hash(s, key, op->klen), key, op->klen, op->vlen, op->type, (uint32_t)len,
                                     op->flags, s->wr.active_size + epos, *seq, op->expire_ms};
        ovl_insert(s, (*ngops)++);
        epos += len;
    }
    if (b->nops > 1)
        kv_record_finish(s->wr.gbuf + start, KV_REC_BATCH, 0, first, 0, (uint32_t)b->nops, 0,
                         (uint32_t)(epos - start - KV_REC_HEADER_SIZE));
    *pos = epos;
    return 0;
}

/* Checks the record at buf[0, avail) as kv_record_decode does, or, when
 * crc_checked (the caller verified its CRC), everything but the CRC:
 * header, length, and a batch's entries. Fills r. Returns KV_OK or
 * KV_CORRUPT. */
static kv_status raw_check(const uint8_t *buf, size_t avail, int crc_checked, kv_record *r)
{
    if (!crc_checked) return kv_record_decode(buf, avail, r);
    if (avail < KV_REC_HEADER_SIZE || kv_record_decode_header(buf, r) != KV_OK || r->len > avail) return KV_CORRUPT;
    r->key = buf + KV_REC_HEADER_SIZE;
    r->val = r->key + r->klen;
    return r->type == KV_REC_BATCH ? kv_record_batch_verify(r) : KV_OK;
}

/* One op of a verbatim record at segment offset `at`, for publishing. */
static void raw_op(kv_store *s, const kv_record *e, uint64_t at, size_t *ngops)
{
    s->wr.gops[*ngops] = (group_op){key_hash(s, e->key, e->klen), e->key, e->klen, e->vlen, e->type, e->len,
                                   e->flags, at, e->seq, e->expire_ms};
    ovl_insert(s, (*ngops)++);
}

/* Appends records a primary wrote (kv_apply_records) at *pos of the
 * group buffer, verbatim, and records their ops for publishing. Every
 * record is checked first (both CRCs, a data record at the top level,
 * sequence numbers following on from *seq with no gap): a request that
 * fails a check writes nothing. The ops' keys point into buf, which the
 * caller keeps until completion. Returns KV_OK, KV_CORRUPT (a bad record),
 * KV_INVALID (a sequence number out of order), ENOMEM. */
static kv_status encode_raw(kv_store *s, const uint8_t *buf, size_t len, int crc_checked, size_t *pos,
                            size_t *ngops, uint64_t *seq, uint64_t *nrecords)
{
    size_t off = 0, nops = 0;
    uint64_t expect = *seq + 1, nrec = 0;
    while (off < len) {
        kv_record r;
        if (raw_check(buf + off, len - off, crc_checked, &r) != KV_OK || kv_record_is_mark(&r) || r.rflags != 0)
            return KV_CORRUPT;
        if (r.seq != expect || kv_record_last_seq(&r) == UINT64_MAX) return KV_INVALID;
        nops += r.type == KV_REC_BATCH ? r.flags : 1;
        expect = kv_record_last_seq(&r) + 1;
        off += r.len;
        nrec++;
    }
    if (ensure_gbuf(s, *pos + len) < 0 || ensure_gops(s, *ngops + nops) < 0) return ENOMEM;
    int rebuilt = ovl_reserve(s, *ngops + nops);
    if (rebuilt < 0) return ENOMEM;
    if (rebuilt)
        for (size_t i = 0; i < *ngops; i++) ovl_insert(s, i);
    memcpy(s->wr.gbuf + *pos, buf, len);
    for (off = 0; off < len;) {
        kv_record r, e;
        (void)kv_record_decode_header(buf + off, &r); /* the whole record was checked above */
        r.key = buf + off + KV_REC_HEADER_SIZE;
        r.val = r.key + r.klen;
        uint64_t at = s->wr.active_size + *pos + off;
        if (r.type != KV_REC_BATCH) {
            raw_op(s, &r, at, ngops);
        } else {
            size_t bpos = 0, epos = 0;
            while (epos = bpos, kv_record_batch_next(&r, &bpos, &e) == KV_OK)
                raw_op(s, &e, kv_batch_entry_off(at, epos), ngops);
        }
        off += r.len;
    }
    *pos += len;
    *seq = expect - 1;
    *nrecords += nrec;
    return KV_OK;
}

/* Under everysec and no: once KV_WRITEBACK_BYTES of the active segment
 * have been written since the last hand-over, asks the kernel to start
 * writing them out (kv_io.writeback), without waiting. The once-a-second
 * sync and the sync that seals a segment then find little left to write;
 * without it they wait for up to a second's (or a whole segment's) worth
 * of dirty pages while every write waits behind them. Under always each
 * group is synced anyway. Failures are ignored: it is a hint, and the
 * next fdatasync reports any error. */
static void start_writeback(kv_store *s)
{
    if (s->opt.fsync == KV_FSYNC_ALWAYS || !s->io->writeback) return;
    if (s->wr.active_size - s->wr.writeback_off < KV_WRITEBACK_BYTES) return;
    (void)s->io->writeback(s->io->ctx, s->wr.active_fd, s->wr.writeback_off, s->wr.active_size - s->wr.writeback_off);
    s->wr.writeback_off = s->wr.active_size;
}

/* What one group encoded: gbuf[0, pos) holds its records (and its commit
 * mark), ngops overlay entries, seq its last sequence number. */
typedef struct group_enc {
    size_t pos, ngops;
    uint64_t nrecords, nwrites, seq;
} group_enc;

/* Writer thread: runs the transactions and encodes the batches of the
 * requests from head into gbuf, in queue order, each seeing the writes of
 * the requests before it. res[i] stays KV_OK unless request i is a delete
 * of an absent key, a transaction that returned an error, or ran out of
 * memory. */
static void encode_group(kv_store *s, req *head, kv_status *res, size_t nreqs, group_enc *g)
{
    s->wr.tpool_len = 0;
    ovl_clear(s);
    uint64_t now = wall_ms(s);
    size_t i = 0;
    for (req *r = head; r; r = r->next, i++) {
        const kv_batch *b = r->batch;
        if (r->raw) {
            res[i] = encode_raw(s, r->raw, r->raw_len, r->raw_checked, &g->pos, &g->ngops, &g->seq, &g->nrecords);
            if (res[i] == KV_OK) g->nwrites++;
            continue;
        }
        if (r->fn) {
            kv_batch *tb = tpool_get(s);
            if (!tb) {
                res[i] = ENOMEM;
                continue;
            }
            kv_txn t = {s, tb, g->ngops, now, 0};
            res[i] = r->fn(&t, r->fn_arg);
            if (res[i] != KV_OK || tb->nops == 0) continue;
            b = tb;
        } else if (!b) {
            continue;
        } else if (b->nops == 1 && b->ops[0].type == KV_REC_TOMBSTONE &&
                   !writer_key_exists(s, g->ngops, b->data + b->ops[0].data_off, b->ops[0].klen, now)) {
            res[i] = KV_NOT_FOUND;
            continue;
        }
        if (encode_batch(s, b, &g->pos, &g->ngops, &g->seq) < 0) {
            res[i] = ENOMEM;
            continue;
        }
        g->nrecords++;
        g->nwrites++;
    }
    if (g->pos > 0 && s->wr.active_version >= 2) {
        /* The group-commit mark ends the group, in the same write: recovery
         * knows every group before the last valid mark is complete. (A
         * version 1 segment, appended to until it is sealed, gets none: it
         * stays readable by the builds that wrote it.) */
        if (ensure_gbuf(s, g->pos + KV_MARK_SIZE) < 0) {
            for (i = 0; i < nreqs; i++)
                if (res[i] == KV_OK) res[i] = ENOMEM;
            g->ngops = g->nrecords = g->nwrites = g->pos = 0;
        } else {
            g->pos += kv_mark_encode(s->wr.gbuf + g->pos, KV_REC_COMMIT, g->seq, s->wr.active_size,
                                     (uint32_t)g->nrecords);
        }
    }
}

/* Writer thread: writes the encoded group, syncs it as the fsync policy
 * (or a kv_sync request) asks, and publishes it to readers. Returns
 * KV_OK, or the status every request of the group gets (fail-stop set). */
static kv_status commit_group(kv_store *s, const group_enc *g, int want_sync)
{
    kv_status st = KV_OK;
    if (g->pos > 0) {
        int w = kv_io_write_full(s->io, s->wr.active_fd, s->wr.gbuf, g->pos, s->wr.active_size);
        if (w < 0) {
            failstop(s, -w, "write", s->wr.active_id);
            return -w;
        }
        prealloc_ahead(s, g->pos); /* after the group: its failure cannot take the group's space */
        s->wr.unsynced_writes += g->nwrites;
        s->wr.written_seq = g->seq;
        feed_publish(s, s->wr.active_id, s->wr.active_size + g->pos, g->seq);
        if (s->opt.fsync == KV_FSYNC_ALWAYS && sync_active(s) < 0) return failstop_status(s);
    }
    if (want_sync && s->wr.unsynced_writes > 0 && sync_active(s) < 0) return failstop_status(s);
    if (g->pos > 0) {
        s->wr.active_size += g->pos;
        s->wr.active_records += g->nrecords;
        pthread_mutex_lock(&s->q.mu);
        s->q.last_seq = g->seq;
        s->q.st_groups++;
        s->q.st_group_writes += g->nwrites;
        pthread_mutex_unlock(&s->q.mu);
        if (publish(s, g->ngops, g->nrecords, g->pos)) st = ENOMEM;
        start_writeback(s);
    }
    return st;
}

/* Encodes, writes, syncs and publishes one group of requests, then
 * completes them. */
static void write_group(kv_store *s, req *head)
{
    size_t nreqs = 0;
    int want_sync = 0, want_seal = 0;
    if (head->excl) { /* alone in its group (writer_main) */
        complete(head, head->excl(s, head->fn_arg));
        return;
    }
    for (req *r = head; r; r = r->next) {
        nreqs++;
        if (!r->batch && !r->fn && !r->raw) want_sync = 1;
        if (r->seal) want_seal = 1;
    }
    pthread_mutex_lock(&s->q.mu);
    int fs = s->q.failstop;
    group_enc g = {.seq = s->q.last_seq};
    pthread_mutex_unlock(&s->q.mu);
    if (fs) {
        complete_all(head, KV_FAILSTOP);
        return;
    }
    if (s->wr.active_size >= s->opt.segment_max_bytes && rotate(s) < 0) {
        complete_all(head, failstop_status(s)); /* the errno that failed the rotation */
        return;
    }
    kv_status *res = calloc(nreqs ? nreqs : 1, sizeof *res);
    if (!res) {
        complete_all(head, ENOMEM);
        return;
    }
    encode_group(s, head, res, nreqs, &g);
    kv_status st = commit_group(s, &g, want_sync);
    if (st == KV_OK && want_seal && s->wr.active_size > KV_SEG_HEADER_SIZE && rotate(s) < 0) st = failstop_status(s);
    for (size_t i = 0; head; i++) {
        req *n = head->next;
        kv_status rs = st;
        if (rs == KV_OK && !head->batch && !head->fn && !head->raw && is_failstop(s)) rs = KV_FAILSTOP;
        if (rs == KV_OK) rs = res[i];
        complete(head, rs);
        head = n;
    }
    free(res);
}

/* Log bytes a request adds, as far as known before it runs. */
static uint64_t req_bytes(const req *r)
{
    return r->batch ? batch_wire_size(r->batch) : r->raw ? r->raw_len : 0;
}

void *writer_main(void *arg)
{
    kv_store *s = arg;
    pthread_setname_np(pthread_self(), "kv-writer");
    pthread_mutex_lock(&s->q.mu);
    for (;;) {
        while (!s->q.head && !s->q.closing) {
            if (s->opt.fsync == KV_FSYNC_EVERYSEC && s->wr.unsynced_writes > 0 && !s->q.failstop) {
                /* Sleep until one second after the last sync, not after
                 * the last write. */
                uint64_t due_ms = s->wr.last_sync_ms + 1000u;
                struct timespec ts = {(time_t)(due_ms / 1000u), (long)(due_ms % 1000u) * 1000000L};
                if (mono_us() / 1000u >= due_ms) break;
                s->q.writer_idle = 1;
                int r = pthread_cond_timedwait(&s->q.cv, &s->q.mu, &ts);
                s->q.writer_idle = 0;
                if (r == ETIMEDOUT) break;
            } else {
                s->q.writer_idle = 1;
                pthread_cond_wait(&s->q.cv, &s->q.mu);
                s->q.writer_idle = 0;
            }
        }
        if (!s->q.head && s->q.closing) break;
        /* Take up to group_max_bytes of requests (always at least one). */
        req *head = s->q.head, *tail = head;
        uint64_t bytes = head ? req_bytes(head) : 0;
        size_t nreq = 1;
        while (tail && tail->next && !head->excl) {
            if (tail->next->excl) break; /* it runs alone, after this group */
            uint64_t nb = req_bytes(tail->next);
            if (bytes + nb > s->opt.group_max_bytes || nreq >= KV_GROUP_MAX_REQUESTS) break;
            nreq++;
            bytes += nb;
            tail = tail->next;
        }
        if (tail) {
            s->q.head = tail->next;
            if (!s->q.head) s->q.tail = NULL;
            tail->next = NULL;
        }
        pthread_mutex_unlock(&s->q.mu);
        if (head) write_group(s, head);
        if (s->opt.fsync == KV_FSYNC_EVERYSEC && s->wr.unsynced_writes > 0 && !is_failstop(s) &&
            mono_us() / 1000u - s->wr.last_sync_ms >= 1000u)
            sync_active(s);
        pthread_mutex_lock(&s->q.mu);
    }
    pthread_mutex_unlock(&s->q.mu);
    return NULL;
}

kv_status enqueue(kv_store *s, req *r)
{
    pthread_mutex_lock(&s->q.mu);
    if (s->q.closing) {
        pthread_mutex_unlock(&s->q.mu);
        return KV_CLOSED;
    }
    r->next = NULL;
    if (s->q.tail)
        s->q.tail->next = r;
    else
        s->q.head = r;
    s->q.tail = r;
    /* Wake the writer only if it sleeps, once, and after the unlock: a
     * signal under the mutex wakes it straight into that mutex, and one
     * per request while it is busy writing a group only costs system
     * calls. The writer looks at the queue under the mutex before it
     * sleeps again, so no request waits for a wake-up that was skipped. */
    int wake = s->q.writer_idle;
    s->q.writer_idle = 0;
    pthread_mutex_unlock(&s->q.mu);
    if (wake) pthread_cond_signal(&s->q.cv);
    return KV_OK;
}
