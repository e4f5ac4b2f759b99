#define _GNU_SOURCE /* mremap */
#include "kv_map.h"

#include <errno.h>
#include <string.h>

#include <sys/mman.h>

kv_status kv_map_grow(kv_map *m, size_t more)
{
    if (more > SIZE_MAX - m->len) return ENOMEM;
    size_t need = m->len + more;
    if (need <= m->cap) return KV_OK;
    size_t nc = m->cap ? m->cap : KVR_MAP_MIN_BYTES;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) return ENOMEM;
        nc *= 2;
    }
    void *np = m->p ? mremap(m->p, m->cap, nc, MREMAP_MAYMOVE)
                    : mmap(NULL, nc, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (np == MAP_FAILED) return ENOMEM;
    m->p = np;
    m->cap = nc;
    return KV_OK;
}

kv_status kv_map_append(kv_map *m, const void *src, size_t n, size_t *at)
{
    kv_status st = kv_map_grow(m, n ? n : 1); /* m->p is never NULL after: an empty key has an address */
    if (st != KV_OK) return st;
    if (n) memcpy(m->p + m->len, src, n);
    *at = m->len;
    m->len += n;
    return KV_OK;
}

void kv_map_free(kv_map *m)
{
    if (m->p) munmap(m->p, m->cap);
    memset(m, 0, sizeof *m);
}
