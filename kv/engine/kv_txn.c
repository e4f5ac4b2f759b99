/*
 * kv_txn — the write API: kv_write, kv_put, kv_delete, kv_sync, kv_seal
 * (a request queued for the writer, waited for), kv_write_async and
 * kv_submit (queued, completed by callback), and the kv_txn_* calls a
 * transaction makes on the writer thread.
 *
 * Owns: nothing beyond the request of each call.
 * Guarantees: a transaction reads, in order of precedence, its own writes,
 * the earlier writes of its group (the writer's overlay), then the key
 * directory, so it sees every write queued before it.
 * Never: waits on the writer thread from the writer thread (the kv_txn_*
 * calls never queue).
 * Locking: queuing takes q.mu (enqueue); kv_txn_* run on the writer thread
 * and take tab.lock shared for key-directory reads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"

kv_status kv_submit(kv_store *s, kv_txn_fn fn, void *fn_arg, kv_write_cb cb, void *arg)
{
    req *r = calloc(1, sizeof *r);
    if (!r) return ENOMEM;
    r->fn = fn;
    r->fn_arg = fn_arg;
    r->cb = cb;
    r->arg = arg;
    r->owned = 1;
    kv_status st = enqueue(s, r);
    if (st != KV_OK) free(r);
    return st;
}

uint64_t kv_txn_now_ms(const kv_txn *t)
{
    return t->now;
}

/* Own writes up to this many are found by a scan; past it, through an
 * index, or a transaction that writes n keys (DEL or MSET of thousands)
 * would compare n * n / 2 keys. */
#define TXN_SCAN_OPS 16

static const batch_op *own_scan(const kv_txn *t, const void *key, size_t klen)
{
    for (size_t i = t->b->nops; i-- > 0;) {
        const batch_op *op = &t->b->ops[i];
        if (op->klen == klen && keys_equal(t->b->data + op->data_off, key, klen)) return op;
    }
    return NULL;
}

/* The slot of key in s->wr.tidx: the one holding its newest op, or the
 * empty one where it goes. Writer thread. */
static size_t own_slot(const kv_txn *t, const void *key, size_t klen)
{
    kv_store *s = t->s;
    size_t mask = s->wr.tidx_cap - 1;
    for (size_t i = (size_t)kv_keydir_hash(s->tab.kd, key, klen) & mask;; i = (i + 1) & mask) {
        uint32_t v = s->wr.tidx[i];
        if (!v) return i;
        const batch_op *op = &t->b->ops[v - 1];
        if (op->klen == klen && keys_equal(t->b->data + op->data_off, key, klen)) return i;
    }
}

/* Brings s->wr.tidx up to date with the transaction's ops: built anew for
 * a transaction's first indexed lookup, or when it must grow, then
 * extended with the ops written since. Returns 0, or -1 without memory
 * (the caller scans). Writer thread. */
static int own_index(kv_txn *t)
{
    kv_store *s = t->s;
    size_t n = t->b->nops;
    if (t->indexed == 0 || n * 2 > s->wr.tidx_cap) {
        size_t cap = s->wr.tidx_cap ? s->wr.tidx_cap : 64;
        while (cap < n * 2) cap *= 2;
        if (cap != s->wr.tidx_cap) {
            uint32_t *ni = realloc(s->wr.tidx, cap * sizeof *ni);
            if (!ni) return -1;
            s->wr.tidx = ni;
            s->wr.tidx_cap = cap;
        }
        memset(s->wr.tidx, 0, s->wr.tidx_cap * sizeof *s->wr.tidx);
        t->indexed = 0;
    }
    for (; t->indexed < n; t->indexed++) {
        const batch_op *op = &t->b->ops[t->indexed];
        s->wr.tidx[own_slot(t, t->b->data + op->data_off, op->klen)] = (uint32_t)t->indexed + 1;
    }
    return 0;
}

/* The newest write to key in the transaction's own batch, or NULL. */
static const batch_op *own_find(kv_txn *t, const void *key, size_t klen)
{
    if (t->b->nops <= TXN_SCAN_OPS || own_index(t) < 0) return own_scan(t, key, klen);
    uint32_t v = t->s->wr.tidx[own_slot(t, key, klen)];
    return v ? &t->b->ops[v - 1] : NULL;
}

static kv_status copy_value(kv_value *v, const uint8_t *val, size_t vlen, uint64_t expire_ms, uint32_t flags,
                            uint64_t seq)
{
    uint8_t *buf = malloc(vlen ? vlen : 1);
    if (!buf) return ENOMEM;
    if (vlen) memcpy(buf, val, vlen);
    v->data = buf;
    v->len = vlen;
    v->expire_ms = expire_ms;
    v->flags = flags;
    v->seq = seq;
    v->buf_ = buf;
    return KV_OK;
}

kv_status kv_txn_get(kv_txn *t, const void *key, size_t klen, kv_value *v)
{
    memset(v, 0, sizeof *v);
    const batch_op *op = own_find(t, key, klen);
    if (op) {
        if (op->type != KV_REC_PUT || !live(op->expire_ms, t->now)) return KV_NOT_FOUND;
        return copy_value(v, t->b->data + op->data_off + op->klen, op->vlen, op->expire_ms, op->flags, 0);
    }
    const group_op *g = overlay_find(t->s, t->ngops, key, (uint32_t)klen);
    if (g) {
        if (g->type != KV_REC_PUT || !live(g->expire_ms, t->now)) return KV_NOT_FOUND;
        return copy_value(v, g->key + g->klen, g->vlen, g->expire_ms, g->flags, g->seq);
    }
    return kv_get(t->s, key, klen, v);
}

kv_status kv_txn_key_info(kv_txn *t, const void *key, size_t klen, uint64_t *expire_ms, uint64_t *seq)
{
    uint64_t e = 0, q = 0;
    const batch_op *op = own_find(t, key, klen);
    if (op) {
        if (op->type != KV_REC_PUT || !live(op->expire_ms, t->now)) return KV_NOT_FOUND;
        e = op->expire_ms;
        q = UINT64_MAX; /* written by this transaction: newer than any sequence number */
    } else {
        const group_op *g = overlay_find(t->s, t->ngops, key, (uint32_t)klen);
        if (g) {
            if (g->type != KV_REC_PUT || !live(g->expire_ms, t->now)) return KV_NOT_FOUND;
            e = g->expire_ms;
            q = g->seq;
        } else {
            kv_status st = kv_key_info(t->s, key, klen, &e, &q);
            if (st != KV_OK) return st;
        }
    }
    if (expire_ms) *expire_ms = e;
    if (seq) *seq = q;
    return KV_OK;
}

kv_status kv_txn_put(kv_txn *t, const void *key, size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
                     uint32_t flags)
{
    return kv_batch_put(t->b, key, klen, val, vlen, expire_ms, flags);
}

kv_status kv_txn_delete(kv_txn *t, const void *key, size_t klen)
{
    if (kv_txn_key_info(t, key, klen, NULL, NULL) != KV_OK) return KV_NOT_FOUND;
    kv_status st = kv_batch_delete(t->b, key, klen);
    return st;
}

typedef struct keylist {
    kv_batch *b;
    kv_status st;
    size_t n;
} keylist;

static int add_tombstone(void *arg, const uint8_t *key, size_t klen, const kv_loc *loc)
{
    (void)loc;
    keylist *l = arg;
    if (l->st == KV_OK) l->st = kv_batch_delete(l->b, key, klen);
    l->n++;
    return 0;
}

kv_status kv_txn_delete_all(kv_txn *t, size_t *deleted)
{
    /* Tombstones for every key in the key directory and every key this
     * group or transaction has put; a key may get two, which is harmless. */
    keylist l = {t->b, KV_OK, 0};
    size_t own = t->b->nops;
    for (size_t i = 0; i < t->ngops && l.st == KV_OK; i++)
        if (t->s->wr.gops[i].type == KV_REC_PUT) l.st = kv_batch_delete(t->b, t->s->wr.gops[i].key, t->s->wr.gops[i].klen);
    for (size_t i = 0; i < own && l.st == KV_OK; i++)
        if (t->b->ops[i].type == KV_REC_PUT)
            l.st = kv_batch_delete(t->b, t->b->data + t->b->ops[i].data_off, t->b->ops[i].klen);
    pthread_rwlock_rdlock(&t->s->tab.lock);
    if (l.st == KV_OK) kv_keydir_foreach(t->s->tab.kd, add_tombstone, &l);
    pthread_rwlock_unlock(&t->s->tab.lock);
    if (deleted) *deleted = l.n;
    return l.st;
}

kv_status kv_write_async(kv_store *s, const kv_batch *b, kv_write_cb cb, void *arg)
{
    if (!b || b->nops == 0) return KV_INVALID;
    req *r = calloc(1, sizeof *r);
    if (!r) return ENOMEM;
    r->batch = b;
    r->cb = cb;
    r->arg = arg;
    r->owned = 1;
    kv_status st = enqueue(s, r);
    if (st != KV_OK) free(r);
    return st;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    kv_status st;
} waiter;

static void wake(void *arg, kv_status st)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

kv_status enqueue_wait(kv_store *s, req *r)
{
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, KV_OK};
    r->cb = wake;
    r->arg = &w;
    r->owned = 0;
    kv_status st = enqueue(s, r);
    if (st != KV_OK) return st;
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return w.st;
}

kv_status kv_apply_records(kv_store *s, const uint8_t *buf, size_t len, int crc_checked)
{
    if (!buf || len == 0 || len > KV_MAX_RECORD_LEN * 2ull) return KV_INVALID;
    req r = {.raw = buf, .raw_len = len, .raw_checked = crc_checked != 0};
    return enqueue_wait(s, &r);
}

/* Queues a batch (a sync when b is NULL, a seal when seal is set) and
 * waits for its completion. */
static kv_status submit_wait(kv_store *s, const kv_batch *b, int seal)
{
    req r = {.batch = b, .seal = seal};
    return enqueue_wait(s, &r);
}

kv_status kv_write(kv_store *s, const kv_batch *b)
{
    if (!b || b->nops == 0) return KV_INVALID;
    return submit_wait(s, b, 0);
}

kv_status kv_sync(kv_store *s)
{
    return submit_wait(s, NULL, 0);
}

kv_status kv_seal(kv_store *s)
{
    return submit_wait(s, NULL, 1);
}

/* One-op batch on the stack for kv_put / kv_delete, without copying. */
static kv_status write_one(kv_store *s, uint8_t type, const void *key, size_t klen, const void *val, size_t vlen,
                           uint64_t expire_ms, uint32_t flags)
{
    if (kv_record_check_sizes(klen, vlen) != KV_OK) return KV_INVALID;
    kv_batch b;
    batch_op op;
    kv_status st;
    uint8_t small[256];
    uint8_t *data = klen + vlen <= sizeof small ? small : malloc(klen + vlen);
    if (!data) return ENOMEM;
    if (klen) memcpy(data, key, klen);
    if (vlen) memcpy(data + klen, val, vlen);
    op = (batch_op){type, (uint32_t)klen, (uint32_t)vlen, 0, expire_ms, flags};
    b = (kv_batch){&op, 1, 1, data, klen + vlen, klen + vlen, kv_record_size(klen, vlen)};
    st = submit_wait(s, &b, 0);
    if (data != small) free(data);
    return st;
}

kv_status kv_put(kv_store *s, const void *key, size_t klen, const void *val, size_t vlen, uint64_t expire_ms,
                 uint32_t flags)
{
    return write_one(s, KV_REC_PUT, key, klen, val, vlen, expire_ms, flags);
}

kv_status kv_delete(kv_store *s, const void *key, size_t klen)
{
    return write_one(s, KV_REC_TOMBSTONE, key, klen, NULL, 0, 0, 0);
}
