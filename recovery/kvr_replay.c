#include "kvr_replay.h"

#include <errno.h>
#include <string.h>

/* ---- the apply rule ---- */

void kvr_replay_init(kvr_replay *rp, kv_keydir *kd, uint64_t now_ms)
{
    memset(rp, 0, sizeof *rp);
    rp->kd = kd;
    rp->now_ms = now_ms;
}

static void apply_op(kvr_replay *rp, const struct kvr_pending_op *p)
{
    if (p->del)
        kv_keydir_del_hashed(rp->kd, p->key, p->klen, p->hash, NULL);
    else if (kv_keydir_put_hashed(rp->kd, p->key, p->klen, p->hash, &p->loc, NULL, NULL) != KV_OK)
        rp->err = ENOMEM;
}

/* Queues a put (del == 0) or delete; applies the oldest queued one when
 * the ring is full. Order is kept. */
static void queue_op(kvr_replay *rp, const uint8_t *key, uint32_t klen, int del, const kv_loc *loc)
{
    if (!rp->kd) return;
    struct kvr_pending_op p = {key, klen, del, {0}, kv_keydir_hash(rp->kd, key, klen)};
    if (loc) p.loc = *loc;
    kv_keydir_prefetch(rp->kd, p.hash);
    if (rp->ring_n < KVR_APPLY_AHEAD) {
        rp->ring[(rp->ring_head + rp->ring_n++) % KVR_APPLY_AHEAD] = p;
        return;
    }
    apply_op(rp, &rp->ring[rp->ring_head]);
    rp->ring[rp->ring_head] = p;
    rp->ring_head = (rp->ring_head + 1) % KVR_APPLY_AHEAD;
    kv_keydir_prefetch_entry(rp->kd, rp->ring[(rp->ring_head + KVR_APPLY_AHEAD / 2) % KVR_APPLY_AHEAD].hash);
}

void kvr_replay_flush(kvr_replay *rp)
{
    for (; rp->ring_n > 0; rp->ring_n--) {
        apply_op(rp, &rp->ring[rp->ring_head]);
        rp->ring_head = (rp->ring_head + 1) % KVR_APPLY_AHEAD;
    }
    rp->ring_head = 0;
}

/* One put or tombstone, from a scanned record or a hint entry: a
 * tombstone or an expired put removes the key (an expired put still
 * shadows any older value of it); any other put points the key at loc. */
static void apply_kv(kvr_replay *rp, uint8_t type, const uint8_t *key, uint32_t klen, const kv_loc *loc)
{
    if (type == KV_REC_TOMBSTONE) {
        queue_op(rp, key, klen, 1, NULL);
    } else if (kv_expired(loc->expire_ms, rp->now_ms)) {
        rp->expired++;
        queue_op(rp, key, klen, 1, NULL);
    } else {
        queue_op(rp, key, klen, 0, loc);
    }
}

static void apply_entry(kvr_replay *rp, uint32_t seg, uint64_t off, const kv_record *r)
{
    rp->entries++;
    if (r->type == KV_REC_TOMBSTONE) rp->tombstones++;
    kv_loc loc = {seg, r->len, off, r->seq, r->expire_ms};
    apply_kv(rp, r->type, r->key, r->klen, &loc);
}

kv_status kvr_replay_record(kvr_replay *rp, uint32_t seg, uint64_t off, const kv_record *r)
{
    if (rp->err) return rp->err;
    if (kv_record_is_mark(r)) return KV_OK;
    /* The reader checks order within a segment; this catches a segment
     * whose records go back behind an earlier segment's. */
    if (rp->max_seq != 0 && r->seq <= rp->max_seq) return KV_CORRUPT;
    rp->max_seq = kv_record_last_seq(r);
    rp->records++;
    if (r->type == KV_REC_BATCH) {
        rp->batches++;
        size_t pos = 0, before = 0;
        kv_record e;
        while (kv_record_batch_next(r, &pos, &e) == KV_OK) {
            apply_entry(rp, seg, kv_batch_entry_off(off, before), &e);
            before = pos;
        }
    } else {
        apply_entry(rp, seg, off, r);
    }
    return rp->err;
}

kv_status kvr_replay_hint(kvr_replay *rp, uint32_t seg, const uint8_t *buf, size_t len, const kvh_header *h)
{
    if (rp->err) return rp->err;
    if (h->records && rp->max_seq != 0 && h->min_seq <= rp->max_seq) return KV_CORRUPT;
    /* Applied in order, as the scan applies records (hashed and prefetched
     * a few entries ahead); flushed before buf, which the keys point into,
     * goes back to the caller. */
    size_t pos = 0;
    kvh_entry e;
    while (!rp->err && kvh_next(buf, len, &pos, &e)) {
        kv_loc loc = {seg, e.len, e.off, e.seq, e.expire_ms};
        apply_kv(rp, e.type, e.key, e.klen, &loc);
    }
    kvr_replay_flush(rp);
    rp->records += h->records;
    rp->batches += h->batches;
    rp->entries += h->entries;
    rp->tombstones += h->tombstones;
    if (h->records) rp->max_seq = h->max_seq;
    return rp->err;
}

/* ---- the classification ---- */

kvr_kind kvr_classify(const kvr_problem *p, int newest, int torn)
{
    if (p->reason == KVR_SEQ_ORDER) return KVR_KIND_SEQ_BACK;
    if (kvr_reason_is_missing_data(p->reason)) return KVR_KIND_MISSING;
    if (torn) return KVR_KIND_TORN_TAIL;
    return newest ? KVR_KIND_MID_LOG : KVR_KIND_SEALED;
}

int kvr_is_unwritten_space(const kvr_problem *p, int newest)
{
    return p->reason == KVR_UNWRITTEN && newest;
}

int kvr_is_torn(const kvr_tail *t, const kvr_problem *p)
{
    if ((!t->newest && !t->window) || p->reason == KVR_SEQ_ORDER || kvr_reason_is_missing_data(p->reason))
        return 0;
    if (t->window) return p->offset >= t->torn_from;
    return t->marked ? p->offset >= t->torn_from : !p->valid_after;
}

int kvr_tail_unwritten(const kvr_tail *t, const kvr_problem *p)
{
    return kvr_is_unwritten_space(p, t->newest || (t->window && p->offset >= t->torn_from));
}

/* While kvr_tail_find scans: the problems before each mark. */
typedef struct tail_scan {
    int pending;         /* problems reported since the last mark */
    int pending_zero;    /* ... all of them KVR_ZERO_FILL */
    uint64_t pending_lo; /* ... the first one's offset */
    int all_zero_fill;   /* every problem before the last mark is KVR_ZERO_FILL */
    uint64_t lo;         /* the first problem before the last mark, UINT64_MAX if none */
} tail_scan;

/* The reader reports a problem before it yields the record that follows
 * it, so the problems pending when a mark arrives lie before that mark. */
static void tail_problem(void *arg, const kvr_problem *p)
{
    tail_scan *t = arg;
    if (p->reason == KVR_UNWRITTEN) return;
    if (!t->pending) {
        t->pending = t->pending_zero = 1;
        t->pending_lo = p->offset;
    }
    if (p->reason != KVR_ZERO_FILL) t->pending_zero = 0;
}

static int tail_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    (void)seg;
    (void)off;
    tail_scan *t = arg;
    if (kv_record_is_mark(r) && t->pending) {
        if (t->lo == UINT64_MAX) t->lo = t->pending_lo;
        if (!t->pending_zero) t->all_zero_fill = 0;
        t->pending = 0;
    }
    return 0;
}

int kvr_tail_find(kvr_tail *t, const kv_io *io, int fd, uint64_t len, uint32_t id)
{
    kvr_scan_result res;
    tail_scan ts = {0, 0, 0, 1, UINT64_MAX};
    t->marked = 1;
    kvr_scan_hooks h = {tail_record, tail_problem, NULL, &ts}; /* keeps no pointer into the window */
    if (kvr_scan_fd(io, fd, len, id, NULL, 0, &h, &res) != KV_OK) return 0;
    t->torn_from = res.mark_end ? res.mark_end : KV_SEG_HEADER_SIZE;
    if (res.mark_end && res.group_start && ts.lo != UINT64_MAX && ts.all_zero_fill && ts.lo >= res.group_start) {
        t->torn_from = res.group_start;
        return 1;
    }
    return 0;
}
