#define _GNU_SOURCE
#include "kv_io.h"

#include <dirent.h>
#include <errno.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int px_open(void *ctx, const char *path, int flags)
{
    (void)ctx;
    int f = O_CLOEXEC;
    f |= (flags & KV_O_RDWR) ? O_RDWR : O_RDONLY;
    if (flags & KV_O_CREAT) f |= O_CREAT;
    if (flags & KV_O_EXCL) f |= O_EXCL;
    if (flags & KV_O_TRUNC) f |= O_TRUNC;
    int fd;
    do fd = open(path, f, 0644); while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int px_close(void *ctx, int fd)
{
    (void)ctx;
    /* close(2) must not be retried on EINTR (Linux frees the descriptor). */
    return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    (void)ctx;
    ssize_t r;
    do r = pread(fd, buf, n, (off_t)off); while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    (void)ctx;
    ssize_t r;
    do r = pwrite(fd, buf, n, (off_t)off); while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int px_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    /* Not retried on failure: after a failed fdatasync the kernel may have
     * dropped the dirty pages, so a second call could report success for
     * data that never reached the disk. */
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int px_ftruncate(void *ctx, int fd, uint64_t len)
{
    (void)ctx;
    int r;
    do r = ftruncate(fd, (off_t)len); while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int px_fsize(void *ctx, int fd, uint64_t *size)
{
    (void)ctx;
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    (void)ctx;
    return rename(from, to) < 0 ? -errno : 0;
}

static int px_unlink(void *ctx, const char *path)
{
    (void)ctx;
    return unlink(path) < 0 ? -errno : 0;
}

static int px_mkdir(void *ctx, const char *path)
{
    (void)ctx;
    return mkdir(path, 0755) < 0 ? -errno : 0;
}

static int px_fsync_dir(void *ctx, const char *path)
{
    (void)ctx;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int px_list_dir(void *ctx, const char *path, kv_io_dirent_fn fn, void *arg)
{
    (void)ctx;
    DIR *d = opendir(path);
    if (!d) return -errno;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (fn(arg, e->d_name)) break;
        errno = 0;
    }
    int r = errno ? -errno : 0;
    closedir(d);
    return r;
}

static int px_lock(void *ctx, const char *path)
{
    (void)ctx;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    /* A directory: lock the directory itself (flock works on any open
     * descriptor of it; it cannot be opened for writing). */
    if (fd < 0 && errno == EISDIR) fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? -EWOULDBLOCK : -e;
    }
    return fd;
}

static int px_free_space(void *ctx, const char *path, uint64_t *bytes)
{
    (void)ctx;
    struct statvfs v;
    if (statvfs(path, &v) < 0) return -errno;
    *bytes = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    return 0;
}

static int px_map(void *ctx, int fd, uint64_t len, const void **addr)
{
    (void)ctx;
    if (len == 0 || len > SIZE_MAX) return -EINVAL;
    void *p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -errno;
    *addr = p;
    return 0;
}

static void px_unmap(void *ctx, const void *addr, uint64_t len)
{
    (void)ctx;
    munmap((void *)(uintptr_t)addr, (size_t)len);
}

static int px_writeback(void *ctx, int fd, uint64_t off, uint64_t len)
{
    (void)ctx;
    if (sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) < 0) return -errno;
    return 0;
}

static int px_exchange(void *ctx, const char *a, const char *b)
{
    (void)ctx;
    if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) < 0) return -errno;
    return 0;
}

/* ---- copying out of a mapping ---- */

/* Where the current thread's kv_io_copy_mapped resumes on SIGBUS, or NULL
 * outside one. */
static __thread sigjmp_buf *copy_resume;
static struct sigaction prev_sigbus;
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;
/* SIGBUS has been unblocked in this thread (kv_io_copy_mapped). */
static __thread int sigbus_unblocked;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    sigjmp_buf *resume = copy_resume;
    if (resume) siglongjmp(*resume, 1);
    /* Not raised by a copy: whatever handled SIGBUS before, else the
     * default action (the process ends, as without this handler). */
    if ((prev_sigbus.sa_flags & SA_SIGINFO) && prev_sigbus.sa_sigaction) {
        prev_sigbus.sa_sigaction(sig, si, uc);
    } else if (!(prev_sigbus.sa_flags & SA_SIGINFO) && prev_sigbus.sa_handler != SIG_DFL &&
               prev_sigbus.sa_handler != SIG_IGN) {
        prev_sigbus.sa_handler(sig);
    } else {
        signal(SIGBUS, SIG_DFL);
        raise(SIGBUS);
    }
}

static void install_sigbus(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* NODEFER: nothing stays blocked after the jump */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &prev_sigbus);
}

int kv_io_copy_mapped(void *dst, const void *src, size_t n)
{
    pthread_once(&sigbus_once, install_sigbus);
    if (!sigbus_unblocked) {
        /* A blocked SIGBUS raised by a fault is not queued: the kernel
         * forces the default action and the process dies. */
        sigset_t bus;
        sigemptyset(&bus);
        sigaddset(&bus, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
        sigbus_unblocked = 1;
    }
    sigjmp_buf resume;
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer runs the handler with SIGBUS blocked whatever
     * SA_NODEFER says; restore the mask on the jump (a system call per
     * copy, so only in that build). */
    if (sigsetjmp(resume, 1)) {
#else
    if (sigsetjmp(resume, 0)) {
#endif
        copy_resume = NULL;
        return -EIO;
    }
    copy_resume = &resume;
    memcpy(dst, src, n);
    copy_resume = NULL;
    return 0;
}

int kv_io_block_async_signals(void)
{
    static const int sync_signals[] = {SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
    sigset_t set;
    sigfillset(&set);
    for (size_t i = 0; i < sizeof sync_signals / sizeof sync_signals[0]; i++) sigdelset(&set, sync_signals[i]);
    return pthread_sigmask(SIG_SETMASK, &set, NULL);
}

static const kv_io posix_io = {
    .ctx = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fdatasync = px_fdatasync,
    .ftruncate = px_ftruncate,
    .fsize = px_fsize,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .fsync_dir = px_fsync_dir,
    .list_dir = px_list_dir,
    .lock = px_lock,
    .free_space = px_free_space,
    .map = px_map,
    .unmap = px_unmap,
    .writeback = px_writeback,
    .exchange = px_exchange,
};

const kv_io *kv_io_posix(void)
{
    return &posix_io;
}

int kv_io_read_full(const kv_io *io, int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = io->pread(io->ctx, fd, p, n, off);
        if (r < 0) return (int)r;
        if (r == 0) return -ENODATA;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int kv_io_write_full(const kv_io *io, int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = io->pwrite(io->ctx, fd, p, n, off);
        if (r < 0) return (int)r;
        if (r == 0) return -EIO;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int kv_io_read_file(const kv_io *io, const char *path, uint64_t max_len, uint8_t **buf, uint64_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = io->open(io->ctx, path, KV_O_RDONLY);
    if (fd < 0) return fd;
    uint64_t size;
    int r = io->fsize(io->ctx, fd, &size);
    if (r == 0 && size > max_len) r = -EFBIG;
    uint8_t *b = NULL;
    if (r == 0) {
        b = malloc(size ? size : 1);
        if (!b) r = -ENOMEM;
    }
    if (r == 0) r = kv_io_read_full(io, fd, b, size, 0);
    io->close(io->ctx, fd);
    if (r < 0) {
        free(b);
        return r;
    }
    *buf = b;
    *len = size;
    return 0;
}
