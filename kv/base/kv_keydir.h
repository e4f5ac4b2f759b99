/*
 * kv_keydir — the key directory: an in-memory hash table from key to the
 * location of its newest live record (Bitcask's "keydir").
 *
 * Owns: the table and a copy of every key. Values stay on disk.
 * Guarantees: binary-safe keys (any bytes, NUL included); a hash seed
 * chosen per table (XXH3 from libxxhash) so clients cannot aim collisions
 * at a known function; kv_keydir_scan() returns every key present for the
 * whole scan at least once, even when the table grows between calls (the
 * reverse-binary cursor of Redis's dictScan).
 * Never: locks. The caller serialises access (kv_store holds a rwlock).
 */
#ifndef KV_KEYDIR_H
#define KV_KEYDIR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kv_status.h"

/* Where a key's newest record lives. */
typedef struct kv_loc {
    uint32_t seg;       /* segment id */
    uint32_t len;       /* record length, bytes (header + key + value) */
    uint64_t off;       /* byte offset of the record in the segment */
    uint64_t seq;       /* sequence number of the record */
    uint64_t expire_ms; /* absolute expiry, ms since the epoch; 0 = none */
} kv_loc;

typedef struct kv_keydir kv_keydir;

/* Key comparison that allows NULL pointers for empty keys (memcmp does
 * not). */
static inline int keys_equal(const void *a, const void *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

/* Creates an empty table. Returns NULL when out of memory. */
kv_keydir *kv_keydir_new(void);
void kv_keydir_free(kv_keydir *kd);

/* Looks a key up. Returns 1 and copies its location to *loc, or 0. */
int kv_keydir_get(const kv_keydir *kd, const void *key, size_t klen, kv_loc *loc);

/* Inserts or replaces a key's location. When the key was present, sets
 * *had_old to 1 and copies the replaced location to *old (either may be
 * NULL). Returns KV_OK or ENOMEM (table unchanged). */
kv_status kv_keydir_put(kv_keydir *kd, const void *key, size_t klen, const kv_loc *loc, kv_loc *old,
                        int *had_old);

/* Removes a key. Returns 1 and copies its last location to *old (may be
 * NULL), or 0 if it was absent. */
int kv_keydir_del(kv_keydir *kd, const void *key, size_t klen, kv_loc *old);

/* Bulk loading (recovery): the hash of a key under this table's seed,
 * a prefetch of the bucket that hash lands in (issue it several keys
 * ahead, so the cache misses of a large table overlap), and put/del with
 * the hash computed before. The hash must come from kv_keydir_hash of
 * the same table; results are those of kv_keydir_put and kv_keydir_del. */
uint64_t kv_keydir_hash(const kv_keydir *kd, const void *key, size_t klen);
void kv_keydir_prefetch(const kv_keydir *kd, uint64_t hash);
/* The second step, a few keys later: prefetch the first entry of the
 * (by then cached) bucket, which the put or del compares first. */
void kv_keydir_prefetch_entry(const kv_keydir *kd, uint64_t hash);
kv_status kv_keydir_put_hashed(kv_keydir *kd, const void *key, size_t klen, uint64_t hash, const kv_loc *loc,
                               kv_loc *old, int *had_old);
int kv_keydir_del_hashed(kv_keydir *kd, const void *key, size_t klen, uint64_t hash, kv_loc *old);

/* Number of keys. */
size_t kv_keydir_count(const kv_keydir *kd);

/* Sum of loc.len over all keys, bytes (the live record bytes), and the
 * number of keys with an expiry; both kept up to date by put and del, so
 * they cost no pass over the table. */
uint64_t kv_keydir_loc_bytes(const kv_keydir *kd);
uint64_t kv_keydir_expiring(const kv_keydir *kd);

/* Sizes the bucket array for at least n keys at once, sparing the
 * rehashes of growing one doubling at a time while n keys are inserted
 * (recovery knows the count from its hint files). Best effort: on
 * allocation failure the table stays as it is. */
void kv_keydir_reserve(kv_keydir *kd, size_t n);

/* Approximate bytes of memory the table holds (entries, keys, buckets). */
size_t kv_keydir_memory(const kv_keydir *kd);

/* Called for each key. kv_keydir_foreach stops at a non-zero return;
 * kv_keydir_scan ignores the return value. */
typedef int (*kv_keydir_fn)(void *arg, const uint8_t *key, size_t klen, const kv_loc *loc);

/* Visits the keys of the bucket(s) at `cursor` until at least `count` keys
 * were passed to fn or the scan wrapped. Returns the next cursor; 0 means
 * the scan is complete. Start with cursor 0. The table must not change
 * during one call (it may between calls). */
uint64_t kv_keydir_scan(const kv_keydir *kd, uint64_t cursor, size_t count, kv_keydir_fn fn, void *arg);

/* Visits every key once (table must not change meanwhile). Stops early and
 * returns fn's non-zero value if fn returns one; else returns 0. */
int kv_keydir_foreach(const kv_keydir *kd, kv_keydir_fn fn, void *arg);

#endif
