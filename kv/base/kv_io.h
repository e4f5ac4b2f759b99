/*
 * kv_io — the file-I/O layer. Every file operation of the engine, recovery
 * and the offline tools goes through a kv_io table, so tests can swap in an
 * implementation that fails the Nth call or simulates power loss (the idea
 * of SQLite's VFS and its crash-test VFS, src/test6.c).
 *
 * Owns: the kv_io table, the POSIX implementation (kv_io_posix()), and small
 * helpers that loop over short reads and writes.
 * Guarantees: every function returns 0 (or a byte count) on success and a
 * negative errno on failure (-EIO, -ENOSPC, ...); never sets errno as its
 * only error report.
 * Never: buffers data or retries a failed write or sync.
 */
#ifndef KV_IO_H
#define KV_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Flags for kv_io.open (a subset of open(2) flags, mapped by each backend). */
enum {
    KV_O_RDONLY = 1 << 0,
    KV_O_RDWR = 1 << 1,
    KV_O_CREAT = 1 << 2,
    KV_O_EXCL = 1 << 3,
    KV_O_TRUNC = 1 << 4,
};

/* Called once per directory entry name by kv_io.list_dir ("." and ".."
 * are not passed). Return 0 to go on, non-zero to stop. */
typedef int (*kv_io_dirent_fn)(void *arg, const char *name);

/*
 * The table. `ctx` is passed as the first argument to every call. Paths are
 * NUL-terminated; offsets and lengths are in bytes.
 *
 *  open        returns a descriptor >= 0, or -errno.
 *  close       returns 0 or -errno.
 *  pread       reads up to n bytes at off; returns bytes read (0 at end of
 *              file) or -errno.
 *  pwrite      writes up to n bytes at off; returns bytes written (may be
 *              short) or -errno.
 *  fdatasync   returns 0 or -errno; on failure the data written since the
 *              last successful sync is of unknown state.
 *  ftruncate   sets the file length; returns 0 or -errno.
 *  fsize       stores the file length in *size; returns 0 or -errno.
 *  rename      atomically replaces `to`; durable only after fsync_dir.
 *  unlink      removes a name; durable only after fsync_dir.
 *  mkdir       creates a directory (mode 0755); -EEXIST if present.
 *  fsync_dir   makes the creates, renames and unlinks in a directory
 *              durable; returns 0 or -errno.
 *  list_dir    calls fn for every name in a directory; returns 0 or -errno.
 *  lock        takes an exclusive, non-blocking lock on a file (created if
 *              absent), e.g. flock(2) on the data directory's LOCK file,
 *              or on a directory when path names one (the directory
 *              itself, opened read-only); returns a descriptor >= 0 that
 *              holds the lock until closed with close, -EWOULDBLOCK if
 *              another holder has it, or -errno. The lock belongs to the
 *              file, not its name: unlinking the name and locking it again
 *              locks a new file. kv_dir_lock_acquire (kv_dir.h) builds
 *              on this.
 */
typedef struct kv_io {
    void *ctx;
    int (*open)(void *ctx, const char *path, int flags);
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, uint64_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, uint64_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, uint64_t len);
    int (*fsize)(void *ctx, int fd, uint64_t *size);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path);
    int (*fsync_dir)(void *ctx, const char *path);
    int (*list_dir)(void *ctx, const char *path, kv_io_dirent_fn fn, void *arg);
    int (*lock)(void *ctx, const char *path);
    /* Optional (NULL: unknown): bytes an unprivileged writer may still
     * use on the filesystem holding path (statvfs f_bavail * f_frsize).
     * Returns 0 or -errno. */
    int (*free_space)(void *ctx, const char *path, uint64_t *bytes);
    /* Optional (NULL: reads use pread): maps the first len bytes of fd
     * read-only and shared (mmap(2) PROT_READ, MAP_SHARED); len may pass
     * the end of the file, whose later bytes the caller must not touch
     * until written. Stores the address in *addr; returns 0 or -errno.
     * unmap releases such a mapping. */
    int (*map)(void *ctx, int fd, uint64_t len, const void **addr);
    void (*unmap)(void *ctx, const void *addr, uint64_t len);
    /* Optional (NULL: nothing is done): starts writing the dirty pages of
     * [off, off + len) of fd to the device without waiting for them
     * (sync_file_range(2), SYNC_FILE_RANGE_WRITE). A hint: it makes
     * nothing durable, only leaves less for the next fdatasync to do.
     * Returns 0 or -errno. */
    int (*writeback)(void *ctx, int fd, uint64_t off, uint64_t len);
    /* Optional (NULL: not supported): swaps the two paths a and b (both
     * exist; directories included) in one atomic step (renameat2(2),
     * RENAME_EXCHANGE). Durable once the parent directory is synced.
     * Returns 0 or -errno. */
    int (*exchange)(void *ctx, const char *a, const char *b);
} kv_io;

/* The POSIX implementation (open(2), pread(2), fdatasync(2), flock(2), ...).
 * The returned table is static and shared; its ctx is unused. */
const kv_io *kv_io_posix(void);

/* Reads exactly n bytes at off, looping over short reads. Returns 0, -EIO
 * style errors from the backend, or -ENODATA if end of file comes first. */
int kv_io_read_full(const kv_io *io, int fd, void *buf, size_t n, uint64_t off);

/* Copies n bytes out of a mapping made by kv_io.map. A page the kernel
 * cannot provide (a disk read error, or a file cut shorter underneath)
 * raises SIGBUS on access; here that ends the copy and returns -EIO, as
 * pread would, instead of killing the process. Returns 0 or -EIO. Installs
 * a process-wide SIGBUS handler on first use that passes every other
 * SIGBUS on to the handler installed before it (or the default action).
 * A fault's SIGBUS is delivered to the faulting thread, and if that thread
 * blocks SIGBUS, Linux resets the handler to the default and the process
 * dies: so on its first call in each thread this unblocks SIGBUS for that
 * thread (one system call per thread, none per copy). A thread must not
 * block SIGBUS again afterwards; threads that want signals elsewhere use
 * kv_io_block_async_signals. */
int kv_io_copy_mapped(void *dst, const void *src, size_t n);

/* Blocks, in the calling thread, every signal except the synchronous
 * fault signals (SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGSYS): the
 * kernel sends those to the thread whose instruction faulted, and a
 * blocked one kills the process instead of reaching its handler (so a
 * media error under a mapping, which kv_io_copy_mapped turns into EIO,
 * would end the server). For threads that leave SIGTERM and the like to
 * one signal-handling thread. Returns 0 or an errno value. */
int kv_io_block_async_signals(void);

/* Writes exactly n bytes at off, looping over short writes. Returns 0 or
 * -errno (a backend that writes 0 bytes yields -EIO). On failure some prefix
 * may have been written. */
int kv_io_write_full(const kv_io *io, int fd, const void *buf, size_t n, uint64_t off);

/* Reads a whole file into a malloc'ed buffer (*buf, *len), refusing files
 * larger than max_len bytes (-EFBIG). Returns 0 or -errno; *buf is NULL on
 * failure and must be freed by the caller on success. */
int kv_io_read_file(const kv_io *io, const char *path, uint64_t max_len, uint8_t **buf, uint64_t *len);

#endif
