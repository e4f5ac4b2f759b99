/*
 * store_digest — what an open store holds, as a digest that does not
 * depend on the order keys are visited in; shared by the fuzz targets
 * that compare two recoveries of the same bytes (fuzz_log_reader,
 * fuzz_hint).
 *
 * The digest counts the distinct keys (kv_scan may visit a key twice) and
 * sums a hash of key, value, expiry and flags over them; a read that
 * failed with KV_CORRUPT (allowed only where the caller says so) adds a
 * hash of the key and the failure instead, and is counted in `corrupt`.
 *
 * Header-only: static inline functions. The including file defines
 * CHECK(cond) (abort with a message when cond is false) and
 * void *xmalloc(size_t) before including it.
 */
#ifndef FUZZ_STORE_DIGEST_H
#define FUZZ_STORE_DIGEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"
#include "kv_store.h"

typedef struct sd_key_list {
    uint8_t **keys;
    size_t *klens;
    size_t n, cap;
} sd_key_list;

/* kv_scan callback: appends a copy of the key. */
static inline void sd_collect_key(void *arg, const uint8_t *key, size_t klen, uint64_t expire_ms)
{
    sd_key_list *l = arg;
    (void)expire_ms;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        uint8_t **nk = realloc(l->keys, nc * sizeof *nk);
        CHECK(nk != NULL);
        l->keys = nk;
        size_t *nl = realloc(l->klens, nc * sizeof *nl);
        CHECK(nl != NULL);
        l->klens = nl;
        l->cap = nc;
    }
    l->keys[l->n] = xmalloc(klen);
    if (klen) memcpy(l->keys[l->n], key, klen);
    l->klens[l->n] = klen;
    l->n++;
}

static inline void sd_key_list_free(sd_key_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->keys[i]);
    free(l->keys);
    free(l->klens);
}

static inline uint64_t sd_mix64(uint64_t x)
{
    /* splitmix64's finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

typedef struct sd_digest {
    uint64_t keys;    /* distinct keys */
    uint64_t sum;     /* of a hash per key */
    uint64_t corrupt; /* reads that failed with KV_CORRUPT */
} sd_digest;

static inline int sd_same(sd_digest a, sd_digest b)
{
    return a.keys == b.keys && a.sum == b.sum && a.corrupt == b.corrupt;
}

/* Walks every key with kv_scan (at most max_scan_calls calls: the scan
 * must terminate) and reads each distinct one with kv_get, which must
 * return KV_OK, or KV_CORRUPT when allow_corrupt. `who` prefixes the
 * message printed before a failed CHECK. Quadratic in the keys, which is
 * fine for what a fuzz input of a megabyte or less can name. */
static inline sd_digest sd_read_all(kv_store *s, int allow_corrupt, size_t max_scan_calls, const char *who)
{
    sd_key_list l = {0};
    uint64_t cur = 0;
    size_t calls = 0;
    do {
        CHECK(kv_scan(s, cur, 64, sd_collect_key, &l, &cur) == KV_OK);
        CHECK(++calls <= max_scan_calls);
    } while (cur != 0);

    sd_digest d = {0, 0, 0};
    for (size_t i = 0; i < l.n; i++) {
        int dup = 0;
        for (size_t j = 0; j < i && !dup; j++)
            dup = l.klens[j] == l.klens[i] && (l.klens[i] == 0 || !memcmp(l.keys[j], l.keys[i], l.klens[i]));
        if (dup) continue;
        kv_value v;
        kv_status st = kv_get(s, l.keys[i], l.klens[i], &v);
        int ok = st == KV_OK || (allow_corrupt && st == KV_CORRUPT);
        if (!ok) fprintf(stderr, "%s: kv_get: %s\n", who, kv_strerror(st));
        CHECK(ok);
        uint64_t h = kv_crc32(0, l.keys[i], l.klens[i]);
        if (st == KV_OK) {
            h = (h << 32) | kv_crc32(0, v.data, v.len);
            h ^= sd_mix64(v.expire_ms) ^ sd_mix64((uint64_t)v.flags << 1 | 1) ^
                 sd_mix64(l.klens[i] + ((uint64_t)v.len << 32));
            kv_value_free(&v);
        } else {
            h = sd_mix64(h ^ 0xc0dec0deull);
            d.corrupt++;
        }
        d.sum += sd_mix64(h);
        d.keys++;
    }
    sd_key_list_free(&l);
    return d;
}

#endif
