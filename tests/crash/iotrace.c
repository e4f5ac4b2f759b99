/*
 * iotrace — an LD_PRELOAD shim that records, and on request fails, the
 * mutating file-system calls a process makes under one directory. It lets
 * the crash tests (tests/crash/powerloss.py, faults.py) check the REAL kvd
 * binary against power loss and I/O errors, as tests/support/kv_io_sim.c does for the
 * engine in memory.
 *
 * Environment (read once, at load):
 *   KV_IOTRACE_DIR   the directory to watch (kvd's --dir). Only calls on
 *                    paths under it (it included) are traced or failed.
 *                    Unset: the shim does nothing.
 *   KV_IOTRACE_OUT   the trace file (appended). Unset: no trace.
 *   KV_IOTRACE_FAIL  comma-separated faults OP:N[+]:ERRNO[:K]
 *                      OP    write      write/pwrite/pwritev/writev on a file
 *                            fdatasync  fdatasync of a file (not a directory)
 *                            fsync      fsync of a file (not a directory)
 *                            sync       fdatasync or fsync of a file
 *                            dirsync    fsync/fdatasync of a directory
 *                            ftruncate  ftruncate of a file
 *                            create     open(O_CREAT) that creates a file
 *                            rename     rename of a watched name
 *                            unlink     unlink of a watched name
 *                      N     the Nth such call (from 1) fails; N+ : it and
 *                            every later one
 *                      ERRNO EIO, ENOSPC, EDQUOT, EROFS, EFBIG or a number
 *                      K     (write only) the failing write first really
 *                            writes K bytes and returns that short count,
 *                            and the next write to that descriptor fails
 *                            (how a real ENOSPC looks)
 *                    e.g. KV_IOTRACE_FAIL=write:7:EIO or fdatasync:3:ENOSPC
 *   KV_IOTRACE_KILL_AT N: the process sends itself SIGKILL right after
 *                    traced event N (its SEQ below) has taken effect and
 *                    been logged, before the call returns: a kill -9 at
 *                    exactly that step (tests/crash/config_rewrite.py).
 *
 * Trace format: one event per call, each a text line
 *     SEQ T_NS TID OP RET ERRNO INJ FIELDS...\n
 * where SEQ counts events from 1, T_NS is CLOCK_MONOTONIC in nanoseconds
 * (the clock Python's time.monotonic() reads), RET the call's result, ERRNO
 * its errno (0 on success), INJ 1 if the shim injected the failure (2 for
 * the short write of a K fault). FIELDS:
 *     open      INO CREATED TRUNC ISDIR FLAGS_HEX NAME
 *     write     INO OFF LEN           then RET>0 ? RET : 0 data bytes and \n
 *     fdatasync INO ISDIR
 *     fsync     INO ISDIR
 *     ftruncate INO LEN
 *     truncate  LEN NAME
 *     rename    FROM TO
 *     unlink    NAME
 *     mkdir     NAME
 * NAME is relative to the watched directory ("." for the directory itself),
 * or absolute (starting with '/') for the other side of a rename that
 * leaves or enters it; bytes outside '!'..'~' and '%' are written %XX. INO
 * is the inode number from fstat after the open. The first line is
 * "# iotrace pid=P dir=D".
 *
 * Ordering: a traced call runs and is logged under one mutex, so the trace
 * order is the order in which the calls took effect, and an event is in the
 * file before the call returns to the caller (so before kvd can send the
 * reply that depends on it). Calls on other descriptors (sockets, the log)
 * take no lock: they test one atomic flag and go straight through.
 *
 * Robustness: the trace is written with raw syscalls (never through the
 * intercepted functions, so no recursion and no sanitizer interceptors);
 * the descriptor table is static (no malloc, nothing for LeakSanitizer);
 * a descriptor's entry is cleared before the real close, so a concurrent
 * open that reuses the number cannot lose its entry.
 *
 * Not intercepted (kvd uses none of them): dup/dup2/F_DUPFD copies of a
 * descriptor, mmap, fallocate, sendfile/copy_file_range, sync_file_range,
 * syncfs, and calls made inside libc without going through the PLT.
 *
 * Under an ASan kvd: build this file without sanitizers and preload it
 * after libasan (LD_PRELOAD="libasan.so.8 iotrace.so"), or set
 * ASAN_OPTIONS=verify_asan_link_order=0; see tests/crash/README.md.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define IOT_MAX_FD 65536
#define IOT_PATH 4096
#define IOT_MAX_FAULTS 16

enum { F_WRITE, F_FDATASYNC, F_FSYNC, F_SYNC, F_DIRSYNC, F_FTRUNCATE, F_CREATE, F_RENAME, F_UNLINK, F_NOPS };
static const char *const fault_names[F_NOPS] = {"write",     "fdatasync", "fsync",  "sync",  "dirsync",
                                                "ftruncate", "create",    "rename", "unlink"};

typedef struct {
    int op;
    unsigned long n;
    int sticky;
    int err;
    long partial; /* -1: none */
} fault;

typedef struct {
    unsigned char traced; /* read without the lock (atomic) */
    unsigned char isdir;
    int fail_next; /* errno for the next write (after a short K write), 0 none */
    uint64_t ino;
} fdent;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int active;   /* KV_IOTRACE_DIR set */
static int trace_fd = -1;
static char dir1[IOT_PATH], dir2[IOT_PATH]; /* the watched dir: as given (normalised), and its realpath */
static size_t dir1_len, dir2_len;
static fdent fds[IOT_MAX_FD];
static fault faults[IOT_MAX_FAULTS];
static int nfaults;
static unsigned long counts[F_NOPS];
static unsigned long long seq;
static unsigned long long kill_at; /* KV_IOTRACE_KILL_AT, 0: none */

/* ---- the real functions ---- */

static void *real(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        static const char msg[] = "iotrace: dlsym(RTLD_NEXT) failed\n";
        syscall(SYS_write, 2, msg, sizeof msg - 1);
        abort();
    }
    return p;
}

#define REAL(type, name)                                                                                         \
    static type real_##name##_p;                                                                                 \
    static type real_##name(void)                                                                                \
    {                                                                                                            \
        type p = __atomic_load_n(&real_##name##_p, __ATOMIC_ACQUIRE);                                            \
        if (!p) {                                                                                                \
            p = (type)real(#name);                                                                               \
            __atomic_store_n(&real_##name##_p, p, __ATOMIC_RELEASE);                                             \
        }                                                                                                        \
        return p;                                                                                                \
    }

typedef int (*open_t)(const char *, int, ...);
typedef int (*openat_t)(int, const char *, int, ...);
typedef ssize_t (*write_t)(int, const void *, size_t);
typedef ssize_t (*pwrite_t)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_t)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_t)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev2_t)(int, const struct iovec *, int, off_t, int);
typedef int (*fdfn_t)(int);
typedef int (*ftruncate_t)(int, off_t);
typedef int (*truncate_t)(const char *, off_t);
typedef int (*rename_t)(const char *, const char *);
typedef int (*renameat_t)(int, const char *, int, const char *);
typedef int (*renameat2_t)(int, const char *, int, const char *, unsigned int);
typedef int (*unlink_t)(const char *);
typedef int (*unlinkat_t)(int, const char *, int);
typedef int (*mkdir_t)(const char *, mode_t);
typedef int (*mkdirat_t)(int, const char *, mode_t);

REAL(open_t, open)
REAL(open_t, open64)
REAL(openat_t, openat)
REAL(openat_t, openat64)
REAL(write_t, write)
REAL(pwrite_t, pwrite)
REAL(pwrite_t, pwrite64)
REAL(writev_t, writev)
REAL(pwritev_t, pwritev)
REAL(pwritev_t, pwritev64)
REAL(pwritev2_t, pwritev2)
REAL(pwritev2_t, pwritev64v2)
REAL(fdfn_t, fsync)
REAL(fdfn_t, fdatasync)
REAL(fdfn_t, close)
REAL(ftruncate_t, ftruncate)
REAL(ftruncate_t, ftruncate64)
REAL(truncate_t, truncate)
REAL(truncate_t, truncate64)
REAL(rename_t, rename)
REAL(renameat_t, renameat)
REAL(renameat2_t, renameat2)
REAL(unlink_t, unlink)
REAL(unlinkat_t, unlinkat)
REAL(mkdir_t, mkdir)
REAL(mkdirat_t, mkdirat)

/* ---- paths ---- */

/* Lexically normalises path (relative to dirfd or the cwd) into out:
 * absolute, no "", "." or ".." components, no trailing slash. */
static int norm_path(int dirfd, const char *path, char *out, size_t cap)
{
    char buf[2 * IOT_PATH];
    size_t n = 0;
    if (!path) return -1;
    if (path[0] != '/') {
        if (dirfd == AT_FDCWD) {
            long r = syscall(SYS_getcwd, buf, sizeof buf / 2);
            if (r <= 0) return -1;
        } else {
            char proc[64];
            snprintf(proc, sizeof proc, "/proc/self/fd/%d", dirfd);
            long r = syscall(SYS_readlinkat, AT_FDCWD, proc, buf, sizeof buf / 2 - 1);
            if (r <= 0) return -1;
            buf[r] = 0;
        }
        n = strlen(buf);
        if (n + 1 + strlen(path) + 1 > sizeof buf) return -1;
        buf[n++] = '/';
        memcpy(buf + n, path, strlen(path) + 1);
    } else {
        if (strlen(path) + 1 > sizeof buf) return -1;
        memcpy(buf, path, strlen(path) + 1);
    }
    /* Walk the components. */
    size_t o = 0;
    const char *p = buf;
    while (*p) {
        while (*p == '/') p++;
        if (!*p) break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 1 && p[0] == '.') {
            /* skip */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (o > 0 && out[o - 1] != '/') o--;
            if (o > 0) o--; /* drop the slash */
        } else {
            if (o + 1 + len + 1 > cap) return -1;
            out[o++] = '/';
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
    }
    if (o == 0) {
        if (cap < 2) return -1;
        out[o++] = '/';
    }
    out[o] = 0;
    return 0;
}

/* The name of an absolute normalised path relative to the watched
 * directory ("." for the directory), or NULL if it is not under it. */
static const char *rel_name(const char *abs)
{
    const char *ds[2] = {dir1, dir2};
    size_t ls[2] = {dir1_len, dir2_len};
    for (int i = 0; i < 2; i++) {
        if (!ls[i]) continue;
        if (strncmp(abs, ds[i], ls[i]) != 0) continue;
        if (abs[ls[i]] == 0) return ".";
        if (abs[ls[i]] == '/') return abs + ls[i] + 1;
    }
    return NULL;
}

/* Writes name escaped into out (always NUL-terminated). */
static void escape(const char *name, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && o + 4 < cap; p++) {
        if (*p <= ' ' || *p > '~' || *p == '%') {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = 0;
}

/* ---- set-up ---- */

static int parse_errno(const char *s)
{
    static const struct {
        const char *n;
        int e;
    } tab[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS}, {"EFBIG", EFBIG}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].n)) return tab[i].e;
    char *end;
    long v = strtol(s, &end, 10);
    return (*s && !*end && v > 0 && v < 4096) ? (int)v : 0;
}

static void die(const char *what, const char *spec)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "iotrace: %s: '%s'\n", what, spec);
    if (n > 0) syscall(SYS_write, 2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(97);
}

static void parse_faults(const char *env)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!*tok) continue;
        if (nfaults >= IOT_MAX_FAULTS) die("too many faults in KV_IOTRACE_FAIL", env);
        char *parts[4] = {0};
        int np = 0;
        char *s2 = NULL;
        for (char *p = strtok_r(tok, ":", &s2); p && np < 4; p = strtok_r(NULL, ":", &s2)) parts[np++] = p;
        if (np < 3) die("bad fault (want OP:N[+]:ERRNO[:K])", tok);
        fault f = {-1, 0, 0, 0, -1};
        for (int i = 0; i < F_NOPS; i++)
            if (!strcmp(parts[0], fault_names[i])) f.op = i;
        if (f.op < 0) die("unknown fault operation", parts[0]);
        char *end;
        f.n = strtoul(parts[1], &end, 10);
        if (*end == '+') {
            f.sticky = 1;
            end++;
        }
        if (*end || f.n == 0) die("bad fault count", parts[1]);
        f.err = parse_errno(parts[2]);
        if (!f.err) die("bad fault errno", parts[2]);
        if (np == 4) {
            if (f.op != F_WRITE) die("a byte count K is only for write faults", parts[3]);
            f.partial = strtol(parts[3], &end, 10);
            if (*end || f.partial < 0) die("bad fault byte count", parts[3]);
        }
        faults[nfaults++] = f;
    }
}

static void init(void)
{
    const char *d = getenv("KV_IOTRACE_DIR");
    if (!d || !*d) return;
    if (norm_path(AT_FDCWD, d, dir1, sizeof dir1) < 0) die("KV_IOTRACE_DIR too long", d);
    dir1_len = strlen(dir1);
    char rp[PATH_MAX];
    if (realpath(d, rp) && strcmp(rp, dir1) != 0 && strlen(rp) < sizeof dir2) {
        memcpy(dir2, rp, strlen(rp) + 1);
        dir2_len = strlen(dir2);
    }
    const char *f = getenv("KV_IOTRACE_FAIL");
    if (f && *f) parse_faults(f);
    const char *k = getenv("KV_IOTRACE_KILL_AT");
    if (k && *k) {
        char *end;
        kill_at = strtoull(k, &end, 10);
        if (*end || kill_at == 0) die("bad KV_IOTRACE_KILL_AT (want an event number from 1)", k);
    }
    const char *out = getenv("KV_IOTRACE_OUT");
    if (out && *out) {
        long fd = syscall(SYS_openat, AT_FDCWD, out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) die("cannot open KV_IOTRACE_OUT", out);
        trace_fd = (int)fd;
        char hdr[IOT_PATH + 64], esc[IOT_PATH];
        escape(dir1, esc, sizeof esc);
        int n = snprintf(hdr, sizeof hdr, "# iotrace pid=%d dir=%s\n", (int)getpid(), esc);
        if (n > 0) syscall(SYS_write, trace_fd, hdr, (size_t)n);
    }
    active = 1;
}

__attribute__((constructor)) static void iotrace_ctor(void)
{
    pthread_once(&once, init);
}

static int on(void)
{
    pthread_once(&once, init);
    return active;
}

/* ---- the trace ---- */

static void write_all(const struct iovec *iov, int cnt)
{
    struct iovec v[8];
    if (cnt > 8) return;
    memcpy(v, iov, (size_t)cnt * sizeof *v);
    int i = 0;
    while (i < cnt) {
        long r = syscall(SYS_writev, trace_fd, &v[i], cnt - i);
        if (r < 0) {
            if (errno == EINTR) continue;
            return; /* nothing sensible to do */
        }
        size_t left = (size_t)r;
        while (i < cnt && left >= v[i].iov_len) left -= v[i++].iov_len;
        if (i < cnt) {
            v[i].iov_base = (char *)v[i].iov_base + left;
            v[i].iov_len -= left;
        }
    }
}

/* Logs one event (mu held). data/ndata: the bytes a write wrote (at most 6
 * iovecs), followed in the trace by a newline; NULL for none. */
static void emit(const char *op, long ret, int err, int inj, const struct iovec *data, int ndata,
                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void emit(const char *op, long ret, int err, int inj, const struct iovec *data, int ndata,
                 const char *fmt, ...)
{
    unsigned long long me = ++seq;
    if (trace_fd < 0) goto kill_point;
    char line[3 * IOT_PATH + 256];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(line, sizeof line, "%llu %lld %ld %s %ld %d %d ", me,
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, (long)syscall(SYS_gettid), op, ret,
                     ret < 0 ? err : 0, inj);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    struct iovec v[8];
    int c = 0;
    v[c].iov_base = line;
    v[c++].iov_len = (size_t)n;
    if (data) {
        for (int i = 0; i < ndata && c < 7; i++) v[c++] = data[i];
        v[c].iov_base = (void *)"\n";
        v[c++].iov_len = 1;
    }
    write_all(v, c);
kill_point:
    /* KV_IOTRACE_KILL_AT: the call has taken effect and is in the trace;
     * the process dies before it returns, as a kill -9 right after that
     * step would leave things. */
    if (kill_at && me == kill_at) syscall(SYS_kill, (long)getpid(), (long)SIGKILL);
}

/* Does the next call of kind op fail? Counts it (mu held). Returns the
 * fault or NULL. */
static const fault *hit(int op)
{
    counts[op]++;
    for (int i = 0; i < nfaults; i++) {
        const fault *f = &faults[i];
        if (f->op != op) continue;
        if (counts[op] == f->n || (f->sticky && counts[op] > f->n)) return f;
    }
    return NULL;
}

static const fault *hit_sync(int isdir, int is_fdatasync)
{
    if (isdir) return hit(F_DIRSYNC);
    const fault *a = hit(is_fdatasync ? F_FDATASYNC : F_FSYNC);
    const fault *b = hit(F_SYNC);
    return a ? a : b;
}

static int traced_fd(int fd)
{
    return fd >= 0 && fd < IOT_MAX_FD && __atomic_load_n(&fds[fd].traced, __ATOMIC_ACQUIRE);
}

/* (mu held) Is fd still the file its entry was made for? A close the shim
 * did not see (e.g. one inside libc) may have freed the number for a
 * socket or another file: then the entry is dropped. */
static int entry_valid(int fd)
{
    if (!fds[fd].traced) return 0;
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) != 0 || (uint64_t)st.st_ino != fds[fd].ino) {
        __atomic_store_n(&fds[fd].traced, 0, __ATOMIC_RELEASE);
        return 0;
    }
    return 1;
}

static void fd_set_entry(int fd, uint64_t ino, int isdir)
{
    if (fd < 0 || fd >= IOT_MAX_FD) return;
    fds[fd].ino = ino;
    fds[fd].isdir = (unsigned char)isdir;
    fds[fd].fail_next = 0;
    __atomic_store_n(&fds[fd].traced, 1, __ATOMIC_RELEASE);
}

/* ---- open ---- */

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int kind)
{
    char abs[IOT_PATH];
    const char *name = NULL;
    if (on() && norm_path(dirfd, path, abs, sizeof abs) == 0) name = rel_name(abs);
#define CALL_REAL_OPEN()                                                                                           \
    (kind == 0   ? real_open()(path, flags, mode)                                                                 \
     : kind == 1 ? real_open64()(path, flags, mode)                                                               \
     : kind == 2 ? real_openat()(dirfd, path, flags, mode)                                                        \
                 : real_openat64()(dirfd, path, flags, mode))
    if (!name) return CALL_REAL_OPEN();
    pthread_mutex_lock(&mu);
    int existed = 1;
    if (flags & O_CREAT) {
        struct stat st;
        existed = syscall(SYS_newfstatat, AT_FDCWD, abs, &st, 0) == 0;
    }
    int created = (flags & O_CREAT) && !existed;
    const fault *f = created ? hit(F_CREATE) : NULL;
    int fd, err = 0, inj = 0;
    if (f) {
        fd = -1;
        err = f->err;
        inj = 1;
    } else {
        fd = CALL_REAL_OPEN();
        err = errno;
    }
#undef CALL_REAL_OPEN
    uint64_t ino = 0;
    int isdir = 0;
    if (fd >= 0) {
        struct stat st;
        if (syscall(SYS_fstat, fd, &st) == 0) {
            ino = (uint64_t)st.st_ino;
            isdir = S_ISDIR(st.st_mode);
        }
        fd_set_entry(fd, ino, isdir);
    }
    char esc[3 * IOT_PATH];
    escape(name, esc, sizeof esc);
    emit("open", fd, err, inj, NULL, 0, "%llu %d %d %d %x %s", (unsigned long long)ino, created,
         fd >= 0 && (flags & O_TRUNC) ? 1 : 0, isdir, (unsigned)flags, esc);
    pthread_mutex_unlock(&mu);
    errno = err;
    return fd;
}

static mode_t va_mode(int flags, va_list ap)
{
    return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, m, 0);
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, m, 1);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, m, 2);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, m, 3);
}

/* Fortified variants (_FORTIFY_SOURCE, no mode argument). */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
int __open_2(const char *path, int flags)
{
    return do_open(AT_FDCWD, path, flags, 0, 0);
}
int __open64_2(const char *path, int flags)
{
    return do_open(AT_FDCWD, path, flags, 0, 1);
}
int __openat_2(int dirfd, const char *path, int flags)
{
    return do_open(dirfd, path, flags, 0, 2);
}
int __openat64_2(int dirfd, const char *path, int flags)
{
    return do_open(dirfd, path, flags, 0, 3);
}

int creat(const char *path, mode_t mode)
{
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0);
}

int creat64(const char *path, mode_t mode)
{
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 1);
}

/* ---- close ---- */

int close(int fd)
{
    if (fd >= 0 && fd < IOT_MAX_FD && __atomic_load_n(&fds[fd].traced, __ATOMIC_ACQUIRE)) {
        /* Cleared before the real close: once the number is free again a
         * concurrent open may reuse it and set its own entry. */
        pthread_mutex_lock(&mu);
        __atomic_store_n(&fds[fd].traced, 0, __ATOMIC_RELEASE);
        fds[fd].fail_next = 0;
        pthread_mutex_unlock(&mu);
    }
    return real_close()(fd);
}

/* ---- writes ---- */

/* Where a write() at the current file position lands. */
static long long cur_offset(int fd)
{
    long fl = syscall(SYS_fcntl, fd, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND)) {
        struct stat st;
        if (syscall(SYS_fstat, fd, &st) == 0) return (long long)st.st_size;
    }
    return (long long)syscall(SYS_lseek, fd, 0L, SEEK_CUR);
}

/* The first n bytes of iov as at most 6 iovecs in out (a longer vector is
 * copied into one heap buffer, returned in *heap for the caller to free).
 * Returns the number of iovecs. */
static int take_prefix(const struct iovec *iov, int cnt, size_t n, struct iovec *out, void **heap)
{
    *heap = NULL;
    int need = 0;
    size_t t = 0;
    for (int i = 0; i < cnt && t < n; i++, need++) t += iov[i].iov_len;
    if (need <= 6) {
        int c = 0;
        size_t left = n;
        for (int i = 0; i < cnt && left > 0; i++) {
            size_t l = iov[i].iov_len < left ? iov[i].iov_len : left;
            out[c].iov_base = iov[i].iov_base;
            out[c++].iov_len = l;
            left -= l;
        }
        return c;
    }
    char *b = malloc(n);
    if (!b) {
        static const char msg[] = "iotrace: out of memory copying a write for the trace\n";
        syscall(SYS_write, 2, msg, sizeof msg - 1);
        abort();
    }
    size_t o = 0;
    for (int i = 0; i < cnt && o < n; i++) {
        size_t l = iov[i].iov_len < n - o ? iov[i].iov_len : n - o;
        memcpy(b + o, iov[i].iov_base, l);
        o += l;
    }
    *heap = b;
    out[0].iov_base = b;
    out[0].iov_len = n;
    return 1;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t t = 0;
    for (int i = 0; i < cnt; i++) t += iov[i].iov_len;
    return t;
}

/* kind: 0 write, 1 pwrite, 2 pwrite64, 3 writev, 4 pwritev, 5 pwritev64,
 * 6 pwritev2, 7 pwritev64v2 */
static ssize_t call_real_write(int kind, int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    switch (kind) {
    case 0: return real_write()(fd, iov[0].iov_base, iov[0].iov_len);
    case 1: return real_pwrite()(fd, iov[0].iov_base, iov[0].iov_len, off);
    case 2: return real_pwrite64()(fd, iov[0].iov_base, iov[0].iov_len, off);
    case 3: return real_writev()(fd, iov, cnt);
    case 4: return real_pwritev()(fd, iov, cnt, off);
    case 5: return real_pwritev64()(fd, iov, cnt, off);
    case 6: return real_pwritev2()(fd, iov, cnt, off, flags);
    default: return real_pwritev64v2()(fd, iov, cnt, off, flags);
    }
}

/* Cuts iov to its first n bytes into out (at most cnt entries). */
static int cut_iov(const struct iovec *iov, int cnt, size_t n, struct iovec *out)
{
    int c = 0;
    for (int i = 0; i < cnt && n > 0; i++) {
        size_t l = iov[i].iov_len < n ? iov[i].iov_len : n;
        out[c].iov_base = iov[i].iov_base;
        out[c++].iov_len = l;
        n -= l;
    }
    return c;
}

static ssize_t do_write(int kind, int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    if (!traced_fd(fd) || fds[fd].isdir) return call_real_write(kind, fd, iov, cnt, off, flags);
    pthread_mutex_lock(&mu);
    if (!entry_valid(fd)) { /* closed meanwhile */
        pthread_mutex_unlock(&mu);
        return call_real_write(kind, fd, iov, cnt, off, flags);
    }
    int positional = kind == 1 || kind == 2 || kind == 4 || kind == 5 ||
                     ((kind == 6 || kind == 7) && off != (off_t)-1);
    long long where = positional ? (long long)off : cur_offset(fd);
    size_t len = iov_total(iov, cnt);
    ssize_t r;
    int err = 0, inj = 0;
    if (fds[fd].fail_next) {
        r = -1;
        err = fds[fd].fail_next;
        inj = 1;
        fds[fd].fail_next = 0;
        counts[F_WRITE]++;
    } else {
        const fault *f = hit(F_WRITE);
        if (f && f->partial >= 0 && (size_t)f->partial < len && f->partial > 0) {
            /* Write the first K bytes for real, with the vector form of
             * the same call (write -> writev, pwrite -> pwritev). */
            static const int vec_kind[8] = {3, 4, 5, 3, 4, 5, 6, 7};
            struct iovec cut[64];
            int c = cut_iov(iov, cnt < 64 ? cnt : 64, (size_t)f->partial, cut);
            r = call_real_write(vec_kind[kind], fd, cut, c, off, flags);
            err = errno;
            if (r >= 0) {
                inj = 2;
                fds[fd].fail_next = f->err;
            }
        } else if (f) {
            r = -1;
            err = f->err;
            inj = 1;
        } else {
            r = call_real_write(kind, fd, iov, cnt, off, flags);
            err = errno;
        }
    }
    struct iovec data[6];
    void *heap = NULL;
    int nd = r > 0 ? take_prefix(iov, cnt, (size_t)r, data, &heap) : 0;
    emit("write", (long)r, err, inj, nd ? data : NULL, nd, "%llu %lld %zu", (unsigned long long)fds[fd].ino, where,
         len);
    free(heap);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    return do_write(0, fd, &v, 1, 0, 0);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    struct iovec v = {(void *)buf, n};
    return do_write(1, fd, &v, 1, off, 0);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    struct iovec v = {(void *)buf, n};
    return do_write(2, fd, &v, 1, off, 0);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    return do_write(3, fd, iov, cnt, 0, 0);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return do_write(4, fd, iov, cnt, off, 0);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    return do_write(5, fd, iov, cnt, off, 0);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return do_write(6, fd, iov, cnt, off, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    return do_write(7, fd, iov, cnt, off, flags);
}

/* ---- syncs and truncation ---- */

static int do_sync(int fd, int is_fdatasync)
{
    fdfn_t fn = is_fdatasync ? real_fdatasync() : real_fsync();
    if (!traced_fd(fd)) return fn(fd);
    pthread_mutex_lock(&mu);
    if (!entry_valid(fd)) {
        pthread_mutex_unlock(&mu);
        return fn(fd);
    }
    const fault *f = hit_sync(fds[fd].isdir, is_fdatasync);
    int r, err = 0, inj = 0;
    if (f) {
        r = -1;
        err = f->err;
        inj = 1;
    } else {
        r = fn(fd);
        err = errno;
    }
    emit(is_fdatasync ? "fdatasync" : "fsync", r, err, inj, NULL, 0, "%llu %d", (unsigned long long)fds[fd].ino,
         fds[fd].isdir);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

int fsync(int fd)
{
    return do_sync(fd, 0);
}

int fdatasync(int fd)
{
    return do_sync(fd, 1);
}

static int do_ftruncate(int fd, off_t len, int is64)
{
    ftruncate_t fn = is64 ? real_ftruncate64() : real_ftruncate();
    if (!traced_fd(fd)) return fn(fd, len);
    pthread_mutex_lock(&mu);
    if (!entry_valid(fd)) {
        pthread_mutex_unlock(&mu);
        return fn(fd, len);
    }
    const fault *f = hit(F_FTRUNCATE);
    int r, err = 0, inj = 0;
    if (f) {
        r = -1;
        err = f->err;
        inj = 1;
    } else {
        r = fn(fd, len);
        err = errno;
    }
    emit("ftruncate", r, err, inj, NULL, 0, "%llu %lld", (unsigned long long)fds[fd].ino, (long long)len);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

int ftruncate(int fd, off_t len)
{
    return do_ftruncate(fd, len, 0);
}

int ftruncate64(int fd, off_t len)
{
    return do_ftruncate(fd, len, 1);
}

static int do_truncate(const char *path, off_t len, int is64)
{
    truncate_t fn = is64 ? real_truncate64() : real_truncate();
    char abs[IOT_PATH];
    const char *name = NULL;
    if (on() && norm_path(AT_FDCWD, path, abs, sizeof abs) == 0) name = rel_name(abs);
    if (!name) return fn(path, len);
    pthread_mutex_lock(&mu);
    const fault *f = hit(F_FTRUNCATE);
    int r, err = 0, inj = 0;
    if (f) {
        r = -1;
        err = f->err;
        inj = 1;
    } else {
        r = fn(path, len);
        err = errno;
    }
    char esc[3 * IOT_PATH];
    escape(name, esc, sizeof esc);
    emit("truncate", r, err, inj, NULL, 0, "%lld %s", (long long)len, esc);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

int truncate(const char *path, off_t len)
{
    return do_truncate(path, len, 0);
}

int truncate64(const char *path, off_t len)
{
    return do_truncate(path, len, 1);
}

/* ---- names ---- */

/* kind: 0 rename, 1 renameat, 2 renameat2 */
static int do_rename(int kind, int fd1, const char *from, int fd2, const char *to, unsigned int flags)
{
#define CALL_REAL_RENAME()                                                                                         \
    (kind == 0   ? real_rename()(from, to)                                                                        \
     : kind == 1 ? real_renameat()(fd1, from, fd2, to)                                                            \
                 : real_renameat2()(fd1, from, fd2, to, flags))
    char a1[IOT_PATH], a2[IOT_PATH];
    const char *n1 = NULL, *n2 = NULL;
    if (on()) {
        if (norm_path(fd1, from, a1, sizeof a1) == 0) n1 = rel_name(a1);
        if (norm_path(fd2, to, a2, sizeof a2) == 0) n2 = rel_name(a2);
    }
    if (!n1 && !n2) return CALL_REAL_RENAME();
    pthread_mutex_lock(&mu);
    const fault *f = hit(F_RENAME);
    int r, err = 0, inj = 0;
    if (f) {
        r = -1;
        err = f->err;
        inj = 1;
    } else {
        r = CALL_REAL_RENAME();
        err = errno;
    }
#undef CALL_REAL_RENAME
    char e1[3 * IOT_PATH], e2[3 * IOT_PATH];
    escape(n1 ? n1 : a1, e1, sizeof e1);
    escape(n2 ? n2 : a2, e2, sizeof e2);
    emit("rename", r, err, inj, NULL, 0, "%s %s", e1, e2);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

int rename(const char *from, const char *to)
{
    return do_rename(0, AT_FDCWD, from, AT_FDCWD, to, 0);
}

int renameat(int fd1, const char *from, int fd2, const char *to)
{
    return do_rename(1, fd1, from, fd2, to, 0);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned int flags)
{
    return do_rename(2, fd1, from, fd2, to, flags);
}

/* kind: 0 unlink, 1 unlinkat */
static int do_unlink(int kind, int dirfd, const char *path, int flags)
{
    char abs[IOT_PATH];
    const char *name = NULL;
    if (on() && norm_path(dirfd, path, abs, sizeof abs) == 0) name = rel_name(abs);
    if (!name) return kind == 0 ? real_unlink()(path) : real_unlinkat()(dirfd, path, flags);
    pthread_mutex_lock(&mu);
    const fault *f = hit(F_UNLINK);
    int r, err = 0, inj = 0;
    if (f) {
        r = -1;
        err = f->err;
        inj = 1;
    } else {
        r = kind == 0 ? real_unlink()(path) : real_unlinkat()(dirfd, path, flags);
        err = errno;
    }
    char esc[3 * IOT_PATH];
    escape(name, esc, sizeof esc);
    emit((flags & AT_REMOVEDIR) ? "rmdir" : "unlink", r, err, inj, NULL, 0, "%s", esc);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

int unlink(const char *path)
{
    return do_unlink(0, AT_FDCWD, path, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    return do_unlink(1, dirfd, path, flags);
}

static int do_mkdir(int kind, int dirfd, const char *path, mode_t mode)
{
    char abs[IOT_PATH];
    const char *name = NULL;
    if (on() && norm_path(dirfd, path, abs, sizeof abs) == 0) name = rel_name(abs);
    if (!name) return kind == 0 ? real_mkdir()(path, mode) : real_mkdirat()(dirfd, path, mode);
    pthread_mutex_lock(&mu);
    int r = kind == 0 ? real_mkdir()(path, mode) : real_mkdirat()(dirfd, path, mode);
    int err = errno;
    char esc[3 * IOT_PATH];
    escape(name, esc, sizeof esc);
    emit("mkdir", r, err, 0, NULL, 0, "%s", esc);
    pthread_mutex_unlock(&mu);
    errno = err;
    return r;
}

int mkdir(const char *path, mode_t mode)
{
    return do_mkdir(0, AT_FDCWD, path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    return do_mkdir(1, dirfd, path, mode);
}
