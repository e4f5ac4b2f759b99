/*
 * kv_read — reads: kv_get, kv_mget, kv_exists, kv_key_info, kv_scan.
 *
 * Owns: nothing; a read holds a segment reference while it copies.
 * Guarantees: every value returned was read from disk (or its mapping)
 * and CRC-verified as the very record the key directory points at; a
 * failed check returns KV_CORRUPT, a media error EIO, never the bytes. A
 * key found expired answers absent and has its tombstone queued
 * (kv_expiry.c) without the read waiting for it.
 * Never: writes, or holds tab.lock while it copies a record.
 * Locking: tab.lock shared for the lookup and the segment reference only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"

void kv_value_free(kv_value *v)
{
    if (!v) return;
    free(v->buf_);
    v->buf_ = NULL;
    v->data = NULL;
    v->len = 0;
}

/* Reads the record at loc from segment descriptor fd and verifies that it
 * is the put of `key` the key directory expects. */
static kv_status read_verified(kv_store *s, const kv_loc *loc, segment *g, const void *key, size_t klen,
                               kv_value *v)
{
    /* The caller holds a reference on g (so a compaction cannot close or
     * unmap it meanwhile), and records are never rewritten in place, so
     * the read needs no lock. */
    uint8_t *buf = malloc(loc->len);
    int r = 0;
    if (!buf)
        r = -ENOMEM;
    else if (!g)
        r = -EBADF;
    else if (g->map && loc->off + loc->len <= g->map_len)
        r = kv_io_copy_mapped(buf, g->map + loc->off, loc->len);
    else
        r = kv_io_read_full(s->io, g->fd, buf, loc->len, loc->off);
    if (r < 0) {
        free(buf);
        if (g && (r == -EIO || r == -ENODATA)) mark_bad(s, g, loc->off, loc->len, r);
        if (r == -ENODATA) goto corrupt; /* the record is shorter on disk */
        return -r;
    }
    kv_record rec;
    if (kv_record_decode(buf, loc->len, &rec) != KV_OK || rec.type != KV_REC_PUT || rec.len != loc->len ||
        rec.seq != loc->seq || rec.klen != klen || !keys_equal(rec.key, key, klen)) {
        free(buf);
        goto corrupt;
    }
    v->data = rec.val;
    v->len = rec.vlen;
    v->expire_ms = rec.expire_ms;
    v->flags = rec.flags;
    v->seq = rec.seq;
    v->buf_ = buf;
    return KV_OK;
corrupt:
    logf_(s, KV_LOG_ERROR, "corrupt record for a key in segment %u at offset %" PRIu64 " (%u bytes); run kvfsck %s",
          g ? g->file_id : loc->seg, loc->off, loc->len, s->dir);
    return KV_CORRUPT_BKPT;
}

kv_status kv_get(kv_store *s, const void *key, size_t klen, kv_value *v)
{
    memset(v, 0, sizeof *v);
    kv_loc loc;
    uint64_t now = wall_ms(s);
    pthread_rwlock_rdlock(&s->tab.lock);
    int found = kv_keydir_get(s->tab.kd, key, klen, &loc);
    if (!found || !live(loc.expire_ms, now)) {
        pthread_rwlock_unlock(&s->tab.lock);
        if (found) s->on_expired(s, key, klen, loc.seq);
        return KV_NOT_FOUND;
    }
    segment *g = do_seg_acquire(s, loc.seg);
    pthread_rwlock_unlock(&s->tab.lock);
    kv_status st = read_verified(s, &loc, g, key, klen, v);
    seg_release(s, g);
    return st;
}

kv_status kv_mget(kv_store *s, size_t n, const uint8_t *const *keys, const size_t *klens, kv_value *vals,
                  kv_status *sts)
{
    kv_loc *locs = calloc(n ? n : 1, sizeof *locs);
    segment **gs = calloc(n ? n : 1, sizeof *gs);
    if (!locs || !gs) {
        free(locs);
        free(gs);
        return ENOMEM;
    }
    uint64_t now = wall_ms(s);
    /* One lock for every lookup: a group is published under the write
     * lock, so all keys are seen as of one moment between two groups. */
    pthread_rwlock_rdlock(&s->tab.lock);
    for (size_t i = 0; i < n; i++) {
        int found = kv_keydir_get(s->tab.kd, keys[i], klens[i], &locs[i]);
        if (!found) locs[i].seq = 0; /* sequence numbers start at 1: 0 marks "absent" */
        sts[i] = found && live(locs[i].expire_ms, now) ? KV_OK : KV_NOT_FOUND;
        gs[i] = sts[i] == KV_OK && vals ? do_seg_acquire(s, locs[i].seg) : NULL;
    }
    pthread_rwlock_unlock(&s->tab.lock);
    for (size_t i = 0; i < n; i++)
        if (sts[i] == KV_NOT_FOUND && locs[i].seq != 0) s->on_expired(s, keys[i], klens[i], locs[i].seq);
    for (size_t i = 0; i < n; i++) {
        if (!vals) continue;
        memset(&vals[i], 0, sizeof vals[i]);
        if (sts[i] == KV_OK)
            sts[i] = read_verified(s, &locs[i], gs[i], keys[i], klens[i], &vals[i]);
        seg_release(s, gs[i]);
    }
    free(locs);
    free(gs);
    return KV_OK;
}

kv_status kv_exists(kv_store *s, const void *key, size_t klen, uint64_t *expire_ms)
{
    return kv_key_info(s, key, klen, expire_ms, NULL);
}

kv_status kv_key_info(kv_store *s, const void *key, size_t klen, uint64_t *expire_ms, uint64_t *seq)
{
    kv_loc loc;
    uint64_t now = wall_ms(s);
    pthread_rwlock_rdlock(&s->tab.lock);
    int found = kv_keydir_get(s->tab.kd, key, klen, &loc);
    pthread_rwlock_unlock(&s->tab.lock);
    if (found && !live(loc.expire_ms, now)) s->on_expired(s, key, klen, loc.seq);
    if (!found || !live(loc.expire_ms, now)) return KV_NOT_FOUND;
    if (expire_ms) *expire_ms = loc.expire_ms;
    if (seq) *seq = loc.seq;
    return KV_OK;
}

typedef struct scan_ctx {
    kv_scan_fn fn;
    void *arg;
    uint64_t now;
} scan_ctx;

static int scan_one(void *arg, const uint8_t *key, size_t klen, const kv_loc *loc)
{
    scan_ctx *c = arg;
    if (loc->expire_ms == 0 || loc->expire_ms > c->now) c->fn(c->arg, key, klen, loc->expire_ms);
    return 0;
}

kv_status kv_scan(kv_store *s, uint64_t cursor, size_t count, kv_scan_fn fn, void *arg, uint64_t *next)
{
    scan_ctx c = {fn, arg, wall_ms(s)};
    pthread_rwlock_rdlock(&s->tab.lock);
    *next = kv_keydir_scan(s->tab.kd, cursor, count, scan_one, &c);
    pthread_rwlock_unlock(&s->tab.lock);
    return KV_OK;
}
