/*
 * kvd_log — see kvd_log.h. Line format after Redis's serverLogRaw()
 * (src/server.c): "<pid>:<role> <date> <time>.<ms> <mark> <message>",
 * role 'M' (kvd has no replicas or children).
 *
 * Why one write(2) per line and no lock: the whole line is formatted into
 * a stack buffer first, and a write to an O_APPEND file (or a pipe, for
 * lines up to PIPE_BUF) lands in one piece, so threads never see each
 * other's half lines and a slow disk never holds a mutex other threads
 * wait for.
 *
 * Global state: the sink and the level (see the header). The level is read
 * on every call and may be changed at run time (CONFIG SET loglevel), so
 * it is accessed with __atomic builtins; the sink is set up by main before
 * threads start and only read afterwards.
 */
#define _GNU_SOURCE
#include "kvd_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Longest line written, newline included; longer messages are cut and end
 * in "...". Large enough for a recovery report message (1 KiB) with room
 * to spare, small enough for a thread's stack. */
#define KVD_LOG_LINE_MAX 4096

static int g_level = KVD_LOG_NOTICE;
static int g_fd = STDERR_FILENO;
static int g_fd_owned; /* g_fd is a log file we opened (and must close) */

static const char *const level_names[] = {"debug", "verbose", "notice", "warning"};
static const char level_marks[] = {'.', '-', '*', '#'};

static kvd_log_level clamp_level(int l)
{
    if (l < KVD_LOG_DEBUG) return KVD_LOG_DEBUG;
    if (l > KVD_LOG_WARNING) return KVD_LOG_WARNING;
    return (kvd_log_level)l;
}

int kvd_log_open(const char *path, kvd_log_level level)
{
    int fd = STDERR_FILENO, owned = 0;
    if (path && *path) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return -errno;
        owned = 1;
    }
    int old_fd = __atomic_exchange_n(&g_fd, fd, __ATOMIC_ACQ_REL);
    int old_owned = g_fd_owned;
    g_fd_owned = owned;
    if (old_owned) close(old_fd);
    kvd_log_set_level(level);
    return 0;
}

void kvd_log_close(void)
{
    int old_fd = __atomic_exchange_n(&g_fd, STDERR_FILENO, __ATOMIC_ACQ_REL);
    if (g_fd_owned) close(old_fd);
    g_fd_owned = 0;
}

void kvd_log_set_level(kvd_log_level level)
{
    __atomic_store_n(&g_level, (int)clamp_level((int)level), __ATOMIC_RELAXED);
}

kvd_log_level kvd_log_get_level(void)
{
    return (kvd_log_level)__atomic_load_n(&g_level, __ATOMIC_RELAXED);
}

const char *kvd_log_level_name(kvd_log_level l)
{
    if ((int)l < KVD_LOG_DEBUG || (int)l > KVD_LOG_WARNING) return "unknown";
    return level_names[l];
}

int kvd_log_level_parse(const char *s, kvd_log_level *out)
{
    for (int i = KVD_LOG_DEBUG; i <= KVD_LOG_WARNING; i++)
        if (!strcasecmp(s, level_names[i])) {
            *out = (kvd_log_level)i;
            return 0;
        }
    return -1;
}

/* Writes all of buf, retrying on EINTR and short writes. Errors are
 * dropped: a logger has nowhere left to report its own failure. */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void kvd_log(kvd_log_level level, const char *fmt, ...)
{
    if ((int)level < __atomic_load_n(&g_level, __ATOMIC_RELAXED)) return;
    int saved_errno = errno; /* callers log and then look at errno */
    level = clamp_level((int)level);

    char line[KVD_LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    char date[64];
    size_t dl = strftime(date, sizeof date, "%d %b %Y %H:%M:%S", &tm);
    date[dl] = '\0';
    int off = snprintf(line, sizeof line, "%d:M %s.%03d %c ", (int)getpid(), date, (int)(ts.tv_nsec / 1000000),
                       level_marks[level]);
    if (off < 0 || (size_t)off >= sizeof line) off = 0;

    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
    va_end(ap);
    if (n < 0) n = snprintf(line + off, sizeof line - (size_t)off, "(unformattable log message: %s)", fmt);
    if (n < 0) n = 0;

    size_t room = sizeof line - (size_t)off - 1; /* chars vsnprintf could keep */
    size_t len;
    if ((size_t)n > room) {
        /* Cut: the buffer holds sizeof line - 1 chars; the last three
         * become "..." and the NUL becomes the newline. */
        len = sizeof line - 1;
        memcpy(line + len - 3, "...", 3);
    } else {
        len = (size_t)off + (size_t)n;
    }
    /* One message, one line: a newline inside a message (a client's key,
     * say) would forge a line of its own. */
    for (size_t i = (size_t)off; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[len++] = '\n';

    write_all(__atomic_load_n(&g_fd, __ATOMIC_ACQUIRE), line, len);
    errno = saved_errno;
}
