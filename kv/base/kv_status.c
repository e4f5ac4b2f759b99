#include "kv_status.h"

#include <string.h>

static uint64_t corrupt_hits; /* diagnostic counter only; atomically updated */

const char *kv_strerror(kv_status st)
{
    switch (st) {
    case KV_OK: return "ok";
    case KV_NOT_FOUND: return "key not found";
    case KV_CORRUPT: return "data corruption detected (checksum or structure mismatch)";
    case KV_FAILSTOP: return "store refuses writes after an I/O error (restart to recover)";
    case KV_INVALID: return "invalid argument or size over limit";
    case KV_LOCKED: return "data directory is locked by another process";
    case KV_VERSION: return "unsupported on-disk format version";
    case KV_CLOSED: return "store is closed";
    case KV_NEED_MORE: return "input incomplete";
    default: break;
    }
    if (st > 0 && st <= KV_ERRNO_MAX)
        return strerror(st);
    return "unknown error";
}

kv_status kv_corrupt_at(const char *file, int line)
{
    (void)file;
    (void)line;
    __atomic_add_fetch(&corrupt_hits, 1, __ATOMIC_RELAXED);
    return KV_CORRUPT;
}

uint64_t kv_corrupt_count(void)
{
    return __atomic_load_n(&corrupt_hits, __ATOMIC_RELAXED);
}
