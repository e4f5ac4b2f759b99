/*
 * kvd_limits — see kvd_limits.h.
 */
#define _GNU_SOURCE
#include "kvd_limits.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

kvd_obuf_limit kvd_obuf_limit_load(const kvd_obuf_limit *l)
{
    kvd_obuf_limit v;
    v.hard = __atomic_load_n(&l->hard, __ATOMIC_RELAXED);
    v.soft = __atomic_load_n(&l->soft, __ATOMIC_RELAXED);
    v.soft_secs = __atomic_load_n(&l->soft_secs, __ATOMIC_RELAXED);
    return v;
}

kvd_obuf_verdict kvd_obuf_check(const kvd_obuf_limit *l, uint64_t used, long long now_ms, long long *soft_since_ms)
{
    if (l->hard && used >= l->hard) return KVD_OBUF_HARD;
    if (!l->soft || used < l->soft) {
        *soft_since_ms = 0; /* the soft limit must be passed continuously */
        return KVD_OBUF_OK;
    }
    if (*soft_since_ms == 0) {
        *soft_since_ms = now_ms ? now_ms : 1; /* first sighting starts the clock */
        return KVD_OBUF_OK;
    }
    /* Redis: closed once more than soft_limit_seconds have elapsed. */
    if (now_ms - *soft_since_ms > (long long)l->soft_secs * 1000) return KVD_OBUF_SOFT;
    return KVD_OBUF_OK;
}

uint64_t kvd_reserved_fds(int io_threads, uint64_t segment_files)
{
    return KVD_MIN_RESERVED_FDS + 2 * (uint64_t)(io_threads > 0 ? io_threads : 1) + segment_files;
}

uint64_t kvd_count_segment_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len == 14 && !strcmp(e->d_name + 10, ".seg")) n++;
    }
    closedir(d);
    return n;
}

int kvd_nofile_fit(uint64_t limit, uint64_t reserved, int wanted)
{
    if (limit <= reserved) return 0;
    uint64_t room = limit - reserved;
    return room >= (uint64_t)wanted ? wanted : (int)room;
}

void kvd_nofile_adjust(int maxclients, uint64_t reserved, kvd_nofile_result *r)
{
    memset(r, 0, sizeof *r);
    r->wanted = (uint64_t)maxclients + reserved;
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        r->set_errno = errno;
        r->old_limit = r->limit = 1024;
        r->maxclients = kvd_nofile_fit(r->limit, reserved, maxclients);
        return;
    }
    r->old_limit = r->limit = lim.rlim_cur;
    if (lim.rlim_max != RLIM_INFINITY && r->wanted > lim.rlim_max) {
        /* Above the hard limit: only a privileged process may go there. */
        struct rlimit up = {r->wanted, r->wanted};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            r->limit = r->wanted;
            lim = up;
        } else {
            r->set_errno = errno;
        }
    }
    /* Soft up to hard: what is not needed for clients is headroom for
     * segments the log adds while kvd runs. */
    rlim_t target = lim.rlim_max != RLIM_INFINITY ? lim.rlim_max : (rlim_t)r->wanted;
    if (target > lim.rlim_cur) {
        struct rlimit up = {target, lim.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            r->limit = target;
        else if (!r->set_errno)
            r->set_errno = errno;
    }
    if (r->limit < r->wanted && !r->set_errno) r->set_errno = EPERM;
    r->maxclients = kvd_nofile_fit(r->limit, reserved, maxclients);
}

int kvd_ratelimit_allow(kvd_ratelimit *rl, long long now_ms, long long period_ms, uint64_t *suppressed)
{
    if (rl->last_ms != 0 && now_ms - rl->last_ms < period_ms) {
        rl->suppressed++;
        return 0;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->last_ms = now_ms ? now_ms : 1;
    return 1;
}
