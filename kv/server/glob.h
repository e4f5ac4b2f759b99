/*
 * glob — the glob patterns of KEYS, SCAN MATCH, PSUBSCRIBE and PUBSUB
 * CHANNELS: `*`, `?`, `[...]` (with `^` or `!` to negate, and ranges) and
 * `\` to escape, as Redis's stringmatchlen, through fnmatch(3).
 *
 * Never: keeps state; any thread.
 */
#ifndef KVD_GLOB_H
#define KVD_GLOB_H

#include <stddef.h>
#include <stdint.h>

/* 1 if the s of sl bytes matches pattern pat of pl bytes, else 0 (also
 * when out of memory). Both are compared as NUL-terminated copies: a
 * string holding a NUL byte matches only on the part before it. */
int kvd_glob_match(const uint8_t *pat, size_t pl, const uint8_t *s, size_t sl);

#endif
