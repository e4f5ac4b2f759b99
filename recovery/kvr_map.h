/*
 * kvr_map — a growing byte array on an anonymous mapping, for the big
 * transient arrays of hint building and compaction (one entry or one key
 * per record of a segment: millions). Memory that malloc hands back to a
 * thread's arena can stay resident after the work is done, whatever the
 * heap's thresholds; an unmapped array goes back to the system at once.
 * It lives in recovery/ because the hint builder here and compaction in
 * kv/engine, above it, both use it.
 *
 * Owns: its mapping (m->p, m->cap bytes).
 * Guarantees: bytes past m->len that were never written are zero (fresh
 * anonymous pages); growing keeps the bytes [0, len) but may move them,
 * so callers keep offsets into the array, not pointers.
 * Never: locks (one kvr_map belongs to one thread at a time), or returns
 * memory to malloc.
 */
#ifndef KVR_MAP_H
#define KVR_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "kv_status.h"

typedef struct kvr_map {
    uint8_t *p; /* NULL until the first kvr_map_grow */
    size_t len; /* bytes in use, which the caller advances */
    size_t cap; /* bytes mapped */
} kvr_map;

/* The smallest mapping kvr_map_grow makes, in bytes. */
#define KVR_MAP_MIN_BYTES (64u << 10)

/* Makes room for `more` bytes past m->len (cap at least len + more),
 * doubling the mapping (mremap, which may move it) from
 * KVR_MAP_MIN_BYTES. Returns KV_OK, or ENOMEM with *m as it was. */
kv_status kvr_map_grow(kvr_map *m, size_t more);

/* Appends src[0, n) at m->len and stores where in *at (a byte offset into
 * m->p; m->p is mapped afterwards even for n = 0). Returns KV_OK, or ENOMEM with *m as it was. */
kv_status kvr_map_append(kvr_map *m, const void *src, size_t n, size_t *at);

/* Unmaps the array and empties *m (also fine on an empty one). */
void kvr_map_free(kvr_map *m);

#endif
