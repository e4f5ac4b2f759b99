#include "kv_keydir.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    uint32_t klen;
    kv_loc loc;
    uint8_t key[];
} entry;

struct kv_keydir {
    entry **buckets;
    uint64_t mask; /* buckets - 1; bucket count is a power of two */
    size_t count;
    size_t key_bytes;
    uint64_t loc_bytes; /* sum of loc.len over all keys */
    uint64_t expiring;  /* keys whose loc.expire_ms != 0 */
    uint64_t seed;
};

#define INITIAL_BUCKETS 1024u

static uint64_t hash_key(const kv_keydir *kd, const void *key, size_t klen)
{
    return XXH3_64bits_withSeed(key, klen, kd->seed);
}

kv_keydir *kv_keydir_new(void)
{
    kv_keydir *kd = calloc(1, sizeof *kd);
    if (!kd) return NULL;
    kd->buckets = calloc(INITIAL_BUCKETS, sizeof(entry *));
    if (!kd->buckets) {
        free(kd);
        return NULL;
    }
    kd->mask = INITIAL_BUCKETS - 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    kd->seed = XXH3_64bits(&ts, sizeof ts) ^ (uint64_t)(uintptr_t)kd;
    return kd;
}

void kv_keydir_free(kv_keydir *kd)
{
    if (!kd) return;
    for (uint64_t i = 0; i <= kd->mask; i++) {
        entry *e = kd->buckets[i];
        while (e) {
            entry *n = e->next;
            free(e);
            e = n;
        }
    }
    free(kd->buckets);
    free(kd);
}

static entry **find_slot(const kv_keydir *kd, const void *key, size_t klen, uint64_t h)
{
    entry **pp = &kd->buckets[h & kd->mask];
    while (*pp) {
        entry *e = *pp;
        if (e->hash == h && e->klen == klen && keys_equal(e->key, key, klen)) return pp;
        pp = &e->next;
    }
    return pp;
}

uint64_t kv_keydir_hash(const kv_keydir *kd, const void *key, size_t klen)
{
    return hash_key(kd, key, klen);
}

void kv_keydir_prefetch(const kv_keydir *kd, uint64_t hash)
{
    __builtin_prefetch(&kd->buckets[hash & kd->mask]);
}

void kv_keydir_prefetch_entry(const kv_keydir *kd, uint64_t hash)
{
    const entry *e = kd->buckets[hash & kd->mask];
    if (e) __builtin_prefetch(e);
}

int kv_keydir_get(const kv_keydir *kd, const void *key, size_t klen, kv_loc *loc)
{
    entry *e = *find_slot(kd, key, klen, hash_key(kd, key, klen));
    if (!e) return 0;
    if (loc) *loc = e->loc;
    return 1;
}

/* Resizes the bucket array to n (a power of two, larger than now); on
 * allocation failure the table stays as it is (only slower). */
static void grow_to(kv_keydir *kd, uint64_t n)
{
    entry **nb = calloc(n, sizeof(entry *));
    if (!nb) return;
    for (uint64_t i = 0; i <= kd->mask; i++) {
        entry *e = kd->buckets[i];
        while (e) {
            entry *next = e->next;
            entry **slot = &nb[e->hash & (n - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    free(kd->buckets);
    kd->buckets = nb;
    kd->mask = n - 1;
}

static void grow(kv_keydir *kd)
{
    grow_to(kd, (kd->mask + 1) * 2);
}

kv_status kv_keydir_put(kv_keydir *kd, const void *key, size_t klen, const kv_loc *loc, kv_loc *old,
                        int *had_old)
{
    return kv_keydir_put_hashed(kd, key, klen, hash_key(kd, key, klen), loc, old, had_old);
}

kv_status kv_keydir_put_hashed(kv_keydir *kd, const void *key, size_t klen, uint64_t h, const kv_loc *loc,
                               kv_loc *old, int *had_old)
{
    entry **pp = find_slot(kd, key, klen, h);
    if (*pp) {
        kv_loc *cur = &(*pp)->loc;
        kd->loc_bytes += (uint64_t)loc->len - cur->len;
        kd->expiring += (uint64_t)(loc->expire_ms != 0) - (cur->expire_ms != 0);
        if (old) *old = *cur;
        if (had_old) *had_old = 1;
        *cur = *loc;
        return KV_OK;
    }
    if (had_old) *had_old = 0;
    entry *e = malloc(sizeof *e + klen);
    if (!e) return ENOMEM;
    e->next = NULL;
    e->hash = h;
    e->klen = (uint32_t)klen;
    e->loc = *loc;
    if (klen) memcpy(e->key, key, klen);
    *pp = e;
    kd->count++;
    kd->key_bytes += klen;
    kd->loc_bytes += loc->len;
    kd->expiring += loc->expire_ms != 0;
    if (kd->count > kd->mask + 1) grow(kd);
    return KV_OK;
}

int kv_keydir_del(kv_keydir *kd, const void *key, size_t klen, kv_loc *old)
{
    return kv_keydir_del_hashed(kd, key, klen, hash_key(kd, key, klen), old);
}

int kv_keydir_del_hashed(kv_keydir *kd, const void *key, size_t klen, uint64_t hash, kv_loc *old)
{
    entry **pp = find_slot(kd, key, klen, hash);
    entry *e = *pp;
    if (!e) return 0;
    if (old) *old = e->loc;
    *pp = e->next;
    kd->count--;
    kd->key_bytes -= e->klen;
    kd->loc_bytes -= e->loc.len;
    kd->expiring -= e->loc.expire_ms != 0;
    free(e);
    return 1;
}

size_t kv_keydir_count(const kv_keydir *kd)
{
    return kd->count;
}

uint64_t kv_keydir_loc_bytes(const kv_keydir *kd)
{
    return kd->loc_bytes;
}

uint64_t kv_keydir_expiring(const kv_keydir *kd)
{
    return kd->expiring;
}

void kv_keydir_reserve(kv_keydir *kd, size_t n)
{
    /* put keeps count <= buckets: one rehash to the power of two that
     * holds n keys. */
    uint64_t b = kd->mask + 1;
    while (b < n && b < (1ull << 40)) b *= 2;
    if (b > kd->mask + 1) grow_to(kd, b);
}

size_t kv_keydir_memory(const kv_keydir *kd)
{
    /* 16 bytes of allocator overhead per entry is glibc's usual figure. */
    return sizeof *kd + (kd->mask + 1) * sizeof(entry *) + kd->count * (sizeof(entry) + 16) + kd->key_bytes;
}

/* Reverse-binary cursor increment, as in Redis's dictScan: set the bits
 * above the mask, reverse, add one, reverse back. */
static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((v & 0x0F0F0F0F0F0F0F0Full) << 4);
    v = ((v >> 8) & 0x00FF00FF00FF00FFull) | ((v & 0x00FF00FF00FF00FFull) << 8);
    v = ((v >> 16) & 0x0000FFFF0000FFFFull) | ((v & 0x0000FFFF0000FFFFull) << 16);
    return (v >> 32) | (v << 32);
}

uint64_t kv_keydir_scan(const kv_keydir *kd, uint64_t cursor, size_t count, kv_keydir_fn fn, void *arg)
{
    size_t seen = 0;
    if (count == 0) count = 1;
    do {
        for (entry *e = kd->buckets[cursor & kd->mask]; e; e = e->next) {
            seen++;
            (void)fn(arg, e->key, e->klen, &e->loc);
        }
        cursor |= ~kd->mask;
        cursor = rev64(cursor);
        cursor++;
        cursor = rev64(cursor);
    } while (cursor != 0 && seen < count);
    return cursor;
}

int kv_keydir_foreach(const kv_keydir *kd, kv_keydir_fn fn, void *arg)
{
    for (uint64_t i = 0; i <= kd->mask; i++)
        for (entry *e = kd->buckets[i]; e; e = e->next) {
            int r = fn(arg, e->key, e->klen, &e->loc);
            if (r) return r;
        }
    return 0;
}
