/*
 * kv_status — the one status type of the kvd engine and its tools.
 *
 * Owns: the status codes every engine, recovery and tool function returns,
 * their text (kv_strerror) and the corruption breakpoint.
 * Guarantees: engine codes live in a range that cannot collide with errno
 * values (in the spirit of LMDB's MDB_* codes), so a function can return
 * either an errno (EIO, ENOSPC, ...) or a KV_* code in one int, and one
 * kv_strerror() describes both.
 * Never: allocates, logs or keeps state other than the breakpoint counter.
 */
#ifndef KV_STATUS_H
#define KV_STATUS_H

#include <stdint.h>

/* Status codes. 0 is success; 1..KV_ERRNO_MAX are errno values passed
 * through from the operating system; the codes below are kvd's own. */
enum {
    KV_OK = 0,
    KV_ERRNO_MAX = 4095,
    KV_NOT_FOUND = 30001,  /* key absent, deleted or expired */
    KV_CORRUPT = 30002,    /* a checksum or structural check failed */
    KV_FAILSTOP = 30003,   /* store refuses writes after an earlier I/O error */
    KV_INVALID = 30004,    /* bad argument (size over a limit, bad option) */
    KV_LOCKED = 30005,     /* data directory held by another process */
    KV_VERSION = 30006,    /* on-disk format version not supported */
    KV_CLOSED = 30007,     /* store is closing */
    KV_NEED_MORE = 30008,  /* input incomplete: more bytes are needed */
};

typedef int kv_status;

/* Text for a status: a KV_* code or an errno value. Never NULL; the string
 * is static and must not be freed. */
const char *kv_strerror(kv_status st);

/* Called by KV_CORRUPT_BKPT at every place corruption is detected (the idea
 * of SQLite's SQLITE_CORRUPT_BKPT): one breakpoint in a debugger catches
 * every corruption path. Returns KV_CORRUPT. Thread-safe. */
kv_status kv_corrupt_at(const char *file, int line);

/* Number of kv_corrupt_at() calls in this process (for tests). */
uint64_t kv_corrupt_count(void);

#define KV_CORRUPT_BKPT kv_corrupt_at(__FILE__, __LINE__)

#endif
