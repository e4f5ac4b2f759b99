/*
 * kv_map — a growing byte array on an anonymous mapping, for the big
 * transient arrays of hint building and compaction (one entry or one key
 * per record of a segment: millions). Memory that malloc hands back to a
 * thread's arena can stay resident after the work is done, whatever the
 * heap's thresholds; an unmapped array goes back to the system at once.
 *
 * Owns: its mapping (m->p, m->cap bytes).
 * Guarantees: bytes past m->len that were never written are zero (fresh
 * anonymous pages); growing keeps the bytes [0, len) but may move them,
 * so callers keep offsets into the array, not pointers.
 * Never: locks (one kv_map belongs to one thread at a time), or returns
 * memory to malloc.
 */
#ifndef KV_MAP_H
#define KV_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "kv_status.h"

typedef struct kv_map {
    uint8_t *p; /* NULL until the first kv_map_grow */
    size_t len; /* bytes in use, which the caller advances */
    size_t cap; /* bytes mapped */
} kv_map;

/* The smallest mapping kv_map_grow makes, in bytes. */
#define KVR_MAP_MIN_BYTES (64u << 10)

/* Makes room for `more` bytes past m->len (cap at least len + more),
 * doubling the mapping (mremap, which may move it) from
 * KVR_MAP_MIN_BYTES. Returns KV_OK, or ENOMEM with *m as it was. */
kv_status kv_map_grow(kv_map *m, size_t more);

/* Appends src[0, n) at m->len and stores where in *at (a byte offset into
 * m->p; m->p is mapped afterwards even for n = 0). Returns KV_OK, or ENOMEM with *m as it was. */
kv_status kv_map_append(kv_map *m, const void *src, size_t n, size_t *at);

/* Unmaps the array and empties *m (also fine on an empty one). */
void kv_map_free(kv_map *m);

#endif
