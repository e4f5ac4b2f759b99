/*
 * kv_io_sim — I/O layers for tests and fuzzing: an in-memory filesystem
 * that can show what a power cut would leave, and a wrapper that fails the
 * Nth call. Modelled on SQLite's crash-test VFS (src/test6.c).
 *
 * Owns: the in-memory files, directories and descriptors of a kv_memfs.
 * Guarantees (the power-loss model):
 *  - A file's data is durable up to its last successful fdatasync; each
 *    later write or truncate is a pending operation, kept in order.
 *  - A create, rename or unlink is durable only after fsync_dir of its
 *    directory.
 *  - A crash state (kv_memfs_crash) starts from the durable state and
 *    applies the first `keep_ops` pending operations of every file; the
 *    next one may be torn: its first `tear_units` units of `unit` bytes
 *    (counted from the unit that holds its first byte) survive, the rest
 *    of its range reads as zeros or garbage. Later operations are lost.
 * Never: touches the real filesystem. All calls are thread-safe.
 */
#ifndef KV_IO_SIM_H
#define KV_IO_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "kv_io.h"

typedef struct kv_memfs kv_memfs;

kv_memfs *kv_memfs_new(void);
void kv_memfs_free(kv_memfs *fs);

/* The kv_io table of this filesystem (ctx = fs). Valid while fs lives. */
const kv_io *kv_memfs_io(kv_memfs *fs);

/* Called at the start of every fdatasync and fsync_dir, before it takes
 * effect: `what` is "fdatasync" or "fsync_dir". The hook may call
 * kv_memfs_crash on fs. */
typedef void (*kv_memfs_sync_hook)(void *arg, kv_memfs *fs, const char *what);
void kv_memfs_set_sync_hook(kv_memfs *fs, kv_memfs_sync_hook hook, void *arg);

typedef enum kv_tear {
    KV_TEAR_NONE = 0,    /* operation keep_ops is lost whole */
    KV_TEAR_ZERO,        /* the rest of the torn write reads as zeros */
    KV_TEAR_GARBAGE,     /* the rest reads as pseudo-random bytes */
} kv_tear;

typedef struct kv_crash_spec {
    long keep_ops;       /* pending ops kept whole per file; -1 = all */
    kv_tear tear;        /* what happens to op number keep_ops */
    uint32_t unit;       /* tear unit in bytes (512 or 4096) */
    uint32_t tear_units; /* units of the torn write that survive */
    int keep_dir_ops;    /* 1: unsynced creates/renames/unlinks survive */
    uint64_t seed;       /* for garbage bytes */
} kv_crash_spec;

/* A new filesystem holding what a power cut now could leave under spec:
 * every file's content is durable in it. NULL when out of memory. */
kv_memfs *kv_memfs_crash(kv_memfs *fs, const kv_crash_spec *spec);

/* A new filesystem with every current content made durable (a clean copy). */
kv_memfs *kv_memfs_clone(kv_memfs *fs);

/* Largest number of pending operations on any one file (how many
 * keep_ops values are worth trying). */
long kv_memfs_max_pending(kv_memfs *fs);

/* Direct access for tests: copy out a file's current bytes (malloc'ed;
 * returns 0 or -ENOENT), or replace them (durably, creating the file and
 * its directory entry). */
int kv_memfs_read(kv_memfs *fs, const char *path, uint8_t **buf, size_t *len);
int kv_memfs_write(kv_memfs *fs, const char *path, const uint8_t *buf, size_t len);

/* Sets what free_space reports (default: unlimited). Writes are not
 * limited by it. */
void kv_memfs_set_free_space(kv_memfs *fs, uint64_t bytes);

/* Whether a path exists (current state). */
int kv_memfs_exists(kv_memfs *fs, const char *path);

/* ---- fault injection ---- */

typedef struct kv_faultio kv_faultio;

/* Wraps `base`. Nothing fails until kv_faultio_arm. */
kv_faultio *kv_faultio_new(const kv_io *base);
void kv_faultio_free(kv_faultio *f);
const kv_io *kv_faultio_io(kv_faultio *f);

/* Makes call number n (1-based, counted from now over every kv_io call)
 * fail with -err. A failing pwrite first writes half of its bytes, as a
 * disk that fills up part way does. If sticky, every call after it fails
 * too. n = 0 disarms. */
void kv_faultio_arm(kv_faultio *f, uint64_t n, int err, int sticky);

/* Calls made since the last arm, and whether the fault has fired. */
uint64_t kv_faultio_calls(kv_faultio *f);
int kv_faultio_fired(kv_faultio *f);

#endif
