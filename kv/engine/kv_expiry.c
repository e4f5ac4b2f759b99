/*
 * kv_expiry — durable expiry: tombstones for keys found expired, by
 * readers (note_expired) or by the sweep (kv_expire_sweep), written by one
 * expiry transaction at a time in the group commit.
 *
 * Owns: the expired keys waiting for their tombstone (s->x).
 * Guarantees and design: see the block below.
 * Never: makes a reader wait for a tombstone; writes a tombstone over a
 * record newer than the expired put.
 * Locking: x.mu for s->x (the do_ functions expect it held); the sweep
 * holds tab.lock exclusively, then x.mu. xremoving/xwriting are the
 * writer thread's (s->wr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"

/* ---- durable expiry ----
 *
 * Reads compare a key's expiry with the wall clock, so an expired key is
 * gone for every reader at once; but its put stays in the log, and after a
 * restart with the clock set back it would be live again. So, as Redis
 * logs a DEL to its AOF when it expires a key, the store logs a tombstone
 * for every key it finds expired. Readers (kv_get, kv_mget, kv_exists,
 * kv_key_info) and the sweep note the key and its put's sequence number
 * here and go on without waiting; one expiry transaction at a time
 * (kv_submit, so in the group commit with every other write, under the
 * fsync policy) takes what was noted and writes the tombstones. It writes
 * a key's tombstone only if the writer's own view holds no newer record
 * of it: no write to the key earlier in the group, and in the key
 * directory the noted put (same sequence number: compaction moves
 * records but keeps it), or nothing where the sweep itself dropped the key
 * from memory. A key noted by a reader but no longer in memory was deleted
 * or already tombstoned (a reader's lookup can see the put just before the
 * tombstone is published, and note it just after its transaction ended):
 * it gets no second tombstone. A key written meanwhile keeps its new value.
 * A read storm on one expired key notes it once (xnoted) and costs one
 * tombstone. Readers note at most KV_EXPIRE_NOTED_MAX keys at a time
 * (beyond that the sweep finds them later). The sweep's keys are always
 * queued: it drops a key from memory only together with queueing its
 * tombstone, and leaves keys a reader noted to that reader's tombstone
 * (so each key is counted once, in expired_swept or expired_on_access).
 * In fail-stop nothing is noted (no write could take it), reads still
 * answer absent, and the sweep drops expired keys from memory only.
 * Lock order: tab.lock before x.mu. x.mu is never held while taking tab.lock
 * or q.mu, or queueing.
 */
#define KV_EXPIRE_NOTED_MAX 4096

static size_t seqset_slot(const seqset *t, uint64_t seq)
{
    return (size_t)((seq * 0x9E3779B97F4A7C15ull) >> 17) & (t->cap - 1);
}

static int seqset_has(const seqset *t, uint64_t seq)
{
    if (t->cap == 0) return 0;
    for (size_t i = seqset_slot(t, seq);; i = (i + 1) & (t->cap - 1)) {
        if (t->v[i] == seq) return 1;
        if (t->v[i] == 0) return 0;
    }
}

/* Adds seq (not 0). Returns 0 or -ENOMEM (nothing added). */
static int seqset_add(seqset *t, uint64_t seq)
{
    if ((t->n + 1) * 2 > t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        uint64_t *nv = calloc(nc, sizeof *nv);
        if (!nv) return -ENOMEM;
        seqset old = *t;
        t->v = nv;
        t->cap = nc;
        t->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.v[i]) seqset_add(t, old.v[i]); /* room: cannot fail */
        free(old.v);
    }
    size_t i = seqset_slot(t, seq);
    while (t->v[i] != 0 && t->v[i] != seq) i = (i + 1) & (t->cap - 1);
    if (t->v[i] == 0) {
        t->v[i] = seq;
        t->n++;
    }
    return 0;
}

static void seqset_clear(seqset *t)
{
    if (t->cap > 4 * KV_EXPIRE_NOTED_MAX) { /* do not keep a huge table after one big sweep */
        free(t->v);
        t->v = NULL;
        t->cap = 0;
    } else if (t->v) {
        memset(t->v, 0, t->cap * sizeof *t->v);
    }
    t->n = 0;
}

void xkeys_free(expired_key *v, size_t *n)
{
    for (size_t i = 0; i < *n; i++) free(v[i].key);
    *n = 0;
}

/* Appends an entry to xpend, taking ownership of key (x.mu held); swept
 * says the sweep dropped the key from the key directory. Returns 0 or
 * -ENOMEM (key freed). */
static int do_xpend_add(kv_store *s, uint8_t *key, size_t klen, uint64_t seq, int swept)
{
    if (s->x.nxpend == s->x.cap_xpend) {
        size_t nc = s->x.cap_xpend ? s->x.cap_xpend * 2 : 64;
        expired_key *nv = realloc(s->x.xpend, nc * sizeof *nv);
        if (!nv) {
            free(key);
            return -ENOMEM;
        }
        s->x.xpend = nv;
        s->x.cap_xpend = nc;
    }
    if (seqset_add(&s->x.xnoted, seq) < 0) {
        free(key);
        return -ENOMEM;
    }
    s->x.xpend[s->x.nxpend++] = (expired_key){seq, (uint32_t)klen, (uint8_t)swept, key};
    return 0;
}

/* Rebuilds xnoted from xpend and xtaken (x.mu held). */
static void do_xnoted_rebuild(kv_store *s)
{
    seqset_clear(&s->x.xnoted);
    for (size_t i = 0; i < s->x.nxpend; i++) seqset_add(&s->x.xnoted, s->x.xpend[i].seq);
    for (size_t i = 0; i < s->x.nxtaken; i++) seqset_add(&s->x.xnoted, s->x.xtaken[i].seq);
}

static kv_status expiry_txn(kv_txn *t, void *arg);
static void expiry_done(void *arg, kv_status st);

/* Queues the expiry transaction if keys are waiting and none is queued
 * (called without x.mu). */
static void expiry_kick(kv_store *s)
{
    pthread_mutex_lock(&s->x.mu);
    int go = s->x.nxpend > 0 && !s->x.xqueued;
    if (go) s->x.xqueued = 1;
    pthread_mutex_unlock(&s->x.mu);
    if (go && kv_submit(s, expiry_txn, s, expiry_done, s) != KV_OK) {
        /* Closing, or out of memory: these tombstones are not written.
         * The keys read as absent all the same, and the next open drops
         * them unless the clock went back. */
        pthread_mutex_lock(&s->x.mu);
        s->x.xqueued = 0;
        xkeys_free(s->x.xpend, &s->x.nxpend);
        do_xnoted_rebuild(s);
        pthread_mutex_unlock(&s->x.mu);
    }
}

/* A reader found the put `seq` of key expired: hands its tombstone to the
 * writer, without waiting. */
void note_expired(kv_store *s, const void *key, size_t klen, uint64_t seq)
{
    /* The common case in a read storm: noted already, its tombstone queued. */
    pthread_mutex_lock(&s->x.mu);
    int noted = seqset_has(&s->x.xnoted, seq);
    pthread_mutex_unlock(&s->x.mu);
    if (noted || is_failstop(s) || kv_is_replica(s)) return; /* a replica logs only its primary's tombstones */
    pthread_mutex_lock(&s->x.mu);
    if (!seqset_has(&s->x.xnoted, seq) && s->x.nxpend + s->x.nxtaken < KV_EXPIRE_NOTED_MAX) {
        uint8_t *k = malloc(klen ? klen : 1);
        if (k) {
            if (klen) memcpy(k, key, klen);
            do_xpend_add(s, k, klen, seq, 0);
        }
    }
    pthread_mutex_unlock(&s->x.mu);
    expiry_kick(s);
}

/* The expiry transaction (writer thread): a tombstone for every noted key
 * whose put is still the writer's newest record of it. */
static kv_status expiry_txn(kv_txn *t, void *arg)
{
    kv_store *s = arg;
    pthread_mutex_lock(&s->x.mu);
    /* xtaken is empty: one transaction at a time. */
    expired_key *tv = s->x.xtaken;
    size_t tcap = s->x.cap_xtaken;
    s->x.xtaken = s->x.xpend;
    s->x.cap_xtaken = s->x.cap_xpend;
    s->x.nxtaken = s->x.nxpend;
    s->x.xpend = tv;
    s->x.cap_xpend = tcap;
    s->x.nxpend = 0;
    size_t n = s->x.nxtaken;
    pthread_mutex_unlock(&s->x.mu);

    /* Only this thread changes xtaken until expiry_done; readers of
     * xnoted do not look at it. */
    size_t removing = 0, i;
    pthread_rwlock_rdlock(&s->tab.lock);
    for (i = 0; i < n; i++) {
        const expired_key *x = &s->x.xtaken[i];
        if (overlay_find(s, t->ngops, x->key, x->klen)) continue; /* written earlier in this group */
        kv_loc loc;
        int found = kv_keydir_get(s->tab.kd, x->key, x->klen, &loc);
        if (found && loc.seq != x->seq) continue; /* written since it expired */
        /* A reader's note for a key no longer in memory: deleted, or
         * tombstoned by an earlier expiry transaction whose completion
         * this note (from a lookup before that tombstone) came after. */
        if (!found && !x->swept) continue;
        if (kv_batch_delete(t->b, x->key, x->klen) != KV_OK) break; /* the batch is full */
        if (found) removing++;
    }
    pthread_rwlock_unlock(&s->tab.lock);
    s->wr.xremoving = removing;
    s->wr.xwriting = t->b->nops;
    if (i < n) {
        /* The rest waits for the next transaction. */
        pthread_mutex_lock(&s->x.mu);
        for (size_t j = i; j < n; j++) {
            const expired_key *x = &s->x.xtaken[j];
            if (do_xpend_add(s, x->key, x->klen, x->seq, x->swept) < 0) continue; /* key freed: dropped */
        }
        s->x.nxtaken = i;
        pthread_mutex_unlock(&s->x.mu);
    }
    return KV_OK;
}

/* Completion of the expiry transaction (writer thread). */
static void expiry_done(void *arg, kv_status st)
{
    kv_store *s = arg;
    pthread_mutex_lock(&s->x.mu);
    xkeys_free(s->x.xtaken, &s->x.nxtaken);
    if (st == KV_OK) {
        s->x.expired_on_access += s->wr.xremoving;
        s->x.expiry_tombstones += s->wr.xwriting;
    } else {
        /* Fail-stop (or out of memory): nothing more can be logged. */
        xkeys_free(s->x.xpend, &s->x.nxpend);
    }
    s->wr.xremoving = s->wr.xwriting = 0;
    do_xnoted_rebuild(s);
    s->x.xqueued = 0;
    pthread_mutex_unlock(&s->x.mu);
    if (st == KV_OK) expiry_kick(s);
}

void kv_expire_flush(kv_store *s)
{
    expiry_kick(s);
    for (;;) {
        pthread_mutex_lock(&s->x.mu);
        int busy = s->x.nxpend > 0 || s->x.xqueued;
        pthread_mutex_unlock(&s->x.mu);
        /* The barrier queues behind the transaction in flight; its
         * completion queues the next one first if more keys wait. */
        if (!busy || kv_sync(s) == KV_CLOSED) return;
    }
}

typedef struct sweep_ctx {
    uint64_t now;
    uint8_t **keys;
    size_t *klens;
    uint64_t *seqs;
    size_t n, cap;
} sweep_ctx;

static int sweep_collect(void *arg, const uint8_t *key, size_t klen, const kv_loc *loc)
{
    sweep_ctx *c = arg;
    if (live(loc->expire_ms, c->now) || c->n == c->cap) return 0;
    uint8_t *k = malloc(klen ? klen : 1);
    if (!k) return 0;
    memcpy(k, key, klen);
    c->keys[c->n] = k;
    c->klens[c->n] = klen;
    c->seqs[c->n] = loc->seq;
    c->n++;
    return 0;
}

size_t kv_expire_sweep(kv_store *s, size_t max_keys)
{
    if (max_keys == 0 || kv_is_replica(s)) return 0; /* the primary's tombstones remove them */
    sweep_ctx c = {wall_ms(s), calloc(max_keys, sizeof(uint8_t *)), calloc(max_keys, sizeof(size_t)),
                   calloc(max_keys, sizeof(uint64_t)), 0, max_keys};
    size_t removed = 0;
    if (!c.keys || !c.klens || !c.seqs) goto out;
    int fs = is_failstop(s);
    pthread_rwlock_wrlock(&s->tab.lock);
    /* Look at up to 8x as many keys as may be removed, then stop. */
    uint64_t cur = s->tab.sweep_cursor;
    size_t budget = max_keys * 8;
    do {
        cur = kv_keydir_scan(s->tab.kd, cur, 16, sweep_collect, &c);
        budget = budget > 16 ? budget - 16 : 0;
    } while (cur != 0 && c.n < c.cap && budget > 0);
    s->tab.sweep_cursor = cur;
    /* A key leaves memory only once its tombstone is queued (in
     * fail-stop, where none can be written, at once). Keys noted by a
     * reader are left to that reader's tombstone, which removes them. */
    pthread_mutex_lock(&s->x.mu);
    for (size_t i = 0; i < c.n; i++) {
        if (!fs && seqset_has(&s->x.xnoted, c.seqs[i])) continue;
        if (!fs) {
            if (do_xpend_add(s, c.keys[i], c.klens[i], c.seqs[i], 1) < 0) {
                c.keys[i] = NULL; /* freed */
                continue;
            }
            /* xpend owns the key bytes now; the lookup below copies nothing. */
        }
        kv_loc old;
        if (kv_keydir_del(s->tab.kd, c.keys[i], c.klens[i], &old)) {
            s->tab.live_bytes -= old.len;
            s->tab.dead_bytes += old.len;
            if (old.expire_ms) s->tab.expires--;
            removed++;
        }
        if (!fs) c.keys[i] = NULL;
    }
    pthread_mutex_unlock(&s->x.mu);
    s->tab.expired_swept += removed;
    pthread_rwlock_unlock(&s->tab.lock);
    if (!fs) expiry_kick(s);
out:
    for (size_t i = 0; i < c.n; i++) free(c.keys[i]);
    free(c.keys);
    free(c.klens);
    free(c.seqs);
    return removed;
}
