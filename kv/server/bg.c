/*
 * bg — the server's background work: the cron timer (active expiry,
 * automatic compaction when dead bytes pass the configured share, hint
 * files of newly sealed segments, ops/sec), and the threads it starts:
 * compaction (kvd-compact), hint files (kvd-hints) and the scrub
 * (kvd-scrub, kv/engine/kv_scrub.h), at a lowered CPU and I/O priority.
 *
 * Owns: those threads and the cron event.
 * Guarantees: at most one thread of each kind runs at a time; a failed
 *   hint run is not retried every tick (a damaged segment stays damaged)
 *   until a compaction succeeds.
 * Locking: the cron and start_hints run on the main thread; compaction
 *   can be started from any thread (COMPACT on an I/O thread, SIGUSR1,
 *   the cron) and is serialised by compact_mu; the *ing flags are atomic.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "kv_scrub.h"
#include "kvd_log.h"
#include "server_state.h"

/* The period of the active-expiry timer at hz cycles per second. */
static struct timeval cron_interval(int hz)
{
    long us = 1000000L / (hz > 0 ? hz : 10);
    struct timeval tv = {us / 1000000L, us % 1000000L};
    return tv;
}

/* Nice value and best-effort I/O priority level (0 highest .. 7 lowest)
 * of the background threads (compaction, hint files). */
#define KVD_BACKGROUND_NICE 10
#define KVD_BACKGROUND_IOPRIO_LEVEL 7

/* Lowers the calling thread's CPU and I/O priority, so that compaction
 * and hint writing take what the threads serving clients leave: on a
 * machine with few cores they otherwise compete with the I/O and writer
 * threads for the same CPU and disk queue. Linux keeps both per thread
 * (setpriority(2) with a thread id; ioprio_set(2), class best-effort,
 * lowest level; idle class is not used, it could starve compaction under
 * a constant load and let the log grow without bound). Failure is
 * harmless: the work only runs at normal priority. */
kvd_bg_priority kvd_lower_thread_priority(void)
{
    kvd_bg_priority r = {0, 0};
    pid_t tid = gettid();
    r.nice_ok = setpriority(PRIO_PROCESS, (id_t)tid, KVD_BACKGROUND_NICE) == 0;
    if (!r.nice_ok)
        kvd_log(KVD_LOG_VERBOSE, "background thread %d: cannot lower its CPU priority: %s", (int)tid,
                strerror(errno));
    /* IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE = 2, level), IOPRIO_WHO_PROCESS = 1 */
    r.ioprio_ok = syscall(SYS_ioprio_set, 1, (int)tid, (2 << 13) | KVD_BACKGROUND_IOPRIO_LEVEL) == 0;
    if (!r.ioprio_ok)
        kvd_log(KVD_LOG_VERBOSE, "background thread %d: cannot lower its I/O priority: %s", (int)tid,
                strerror(errno));
    return r;
}

static void *hints_main(void *arg)
{
    kvd_server *srv = arg;
    kv_io_block_async_signals(); /* as worker_main */
    pthread_setname_np(pthread_self(), "kvd-hints");
    kvd_lower_thread_priority();
    uint32_t n = 0;
    kv_status st = kv_write_hints(srv->env.store, &n);
    if (st != KV_OK) {
        kvd_log(KVD_LOG_WARNING, "writing hint files: %s (%u written)", kv_strerror(st), n);
        /* Do not retry every cron tick: a damaged segment stays damaged. */
        __atomic_store_n(&srv->hints_failed, 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&srv->hinting, 0, __ATOMIC_RELEASE);
    return NULL;
}

/* Starts a thread that writes the hint files of newly sealed segments
 * (from the event loop only). */
static void start_hints(kvd_server *srv)
{
    if (__atomic_load_n(&srv->hints_failed, __ATOMIC_ACQUIRE)) return;
    if (srv->hints_started) pthread_join(srv->hints_thread, NULL); /* the last one has ended */
    srv->hints_started = 0;
    __atomic_store_n(&srv->hinting, 1, __ATOMIC_RELEASE);
    if (pthread_create(&srv->hints_thread, NULL, hints_main, srv) == 0)
        srv->hints_started = 1;
    else
        __atomic_store_n(&srv->hinting, 0, __ATOMIC_RELEASE);
}

static void on_cron(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_server *srv = arg;
    /* Active expiry: remove expired keys a batch at a time so they do
     * not pile up in memory. */
    size_t n = kv_expire_sweep(srv->env.store, 200);
    if (n) __atomic_add_fetch(&srv->env.n.expired_active, n, __ATOMIC_RELAXED);
    long long now = kvd_mstime();
    int pct = __atomic_load_n(&srv->env.cfg->compact_dead_pct, __ATOMIC_RELAXED);
    if (pct > 0 && !__atomic_load_n(&srv->compacting, __ATOMIC_ACQUIRE)) {
        kv_stats st;
        kv_get_stats(srv->env.store, &st);
        if (st.dead_bytes >= __atomic_load_n(&srv->env.cfg->compact_min_dead, __ATOMIC_RELAXED) && st.dead_bytes * 100 > st.log_bytes * (uint64_t)pct &&
            st.segments > 1 && !st.failstop)
            kvd_bg_start_compaction(srv, "dead bytes over the configured share");
    }
    if (!__atomic_load_n(&srv->hinting, __ATOMIC_ACQUIRE) && kv_hints_pending(srv->env.store) > 0)
        start_hints(srv);
    if (now - srv->last_cron_ms >= 1000) {
        uint64_t cmds = counter_get(&srv->env.n.total_commands);
        uint64_t last = __atomic_load_n(&srv->env.n.last_cmds, __ATOMIC_RELAXED);
        __atomic_store_n(&srv->env.n.ops_sec, (cmds - last) * 1000 / (uint64_t)(now - srv->last_cron_ms),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&srv->env.n.last_cmds, cmds, __ATOMIC_RELAXED);
        srv->last_cron_ms = now;
    }
    /* CONFIG SET hz: go on at the new rate. */
    int hz = __atomic_load_n(&srv->env.cfg->expire_hz, __ATOMIC_RELAXED);
    if (hz > 0 && hz != srv->cron_hz) {
        struct timeval tv = cron_interval(hz);
        event_add(srv->ev_cron, &tv);
        srv->cron_hz = hz;
    }
}

/* First thing on the scrub thread (kv_scrub_options.thread_init). */
static void scrub_thread_init(void *arg)
{
    (void)arg;
    kvd_lower_thread_priority();
}

int kvd_bg_start_scrub(kvd_server *srv)
{
    if (!srv->scrub) return -1;
    int r = kv_scrub_request(srv->scrub);
    if (r == 1) kvd_log(KVD_LOG_NOTICE, "background scrub started (SCRUB)");
    return r;
}

typedef struct compact_job {
    kvd_server *srv;
    char why[32];
} compact_job;

static void *compact_main(void *arg)
{
    compact_job *j = arg;
    kvd_server *srv = j->srv;
    kv_io_block_async_signals(); /* as worker_main */
    pthread_setname_np(pthread_self(), "kvd-compact");
    kvd_lower_thread_priority();
    kv_compact_report rep;
    kv_status st = kv_compact(srv->env.store, &rep);
    if (st == KV_OK && rep.segments_in)
        kvd_log(KVD_LOG_NOTICE,
                "compaction (%s) done: %u segments, %" PRIu64 " -> %" PRIu64 " bytes, %" PRIu64
                " records kept, %.1f ms",
                j->why, rep.segments_in, rep.bytes_before, rep.bytes_after, rep.records_copied,
                rep.elapsed_us / 1000.0);
    else if (st == KV_OK)
        kvd_log(KVD_LOG_VERBOSE, "compaction (%s): %s", j->why, rep.message);
    else
        kvd_log(KVD_LOG_WARNING, "compaction (%s) failed: %s", j->why, rep.message);
    if (st == KV_OK) __atomic_store_n(&srv->hints_failed, 0, __ATOMIC_RELEASE); /* try hints again */
    __atomic_store_n(&srv->compacting, 0, __ATOMIC_RELEASE);
    free(j);
    return NULL;
}

int kvd_bg_start_compaction(kvd_server *srv, const char *why)
{
    pthread_mutex_lock(&srv->compact_mu);
    if (__atomic_load_n(&srv->compacting, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&srv->compact_mu);
        return 0;
    }
    if (srv->compact_started) pthread_join(srv->compact_thread, NULL); /* the last one has ended */
    srv->compact_started = 0;
    compact_job *j = calloc(1, sizeof *j);
    int r = -1;
    if (j) {
        j->srv = srv;
        snprintf(j->why, sizeof j->why, "%s", why);
        __atomic_store_n(&srv->compacting, 1, __ATOMIC_RELEASE);
        if (pthread_create(&srv->compact_thread, NULL, compact_main, j) == 0) {
            srv->compact_started = 1;
            r = 1;
            kvd_log(KVD_LOG_NOTICE, "background compaction started (%s)", why);
        } else {
            __atomic_store_n(&srv->compacting, 0, __ATOMIC_RELEASE);
            free(j);
        }
    }
    pthread_mutex_unlock(&srv->compact_mu);
    return r;
}

/* Waits for a running compaction (shutdown). */
static void join_compaction(kvd_server *srv)
{
    pthread_mutex_lock(&srv->compact_mu);
    if (srv->compact_started) pthread_join(srv->compact_thread, NULL);
    srv->compact_started = 0;
    pthread_mutex_unlock(&srv->compact_mu);
}

int kvd_bg_cron_start(kvd_server *srv)
{
    srv->ev_cron = event_new(srv->base, -1, EV_PERSIST, on_cron, srv);
    srv->cron_hz = srv->env.cfg->expire_hz > 0 ? srv->env.cfg->expire_hz : 10;
    struct timeval tv = cron_interval(srv->cron_hz);
    return srv->ev_cron && event_add(srv->ev_cron, &tv) == 0 ? 0 : -1;
}

void kvd_bg_scrub_start(kvd_server *srv)
{
    kv_scrub_options so;
    kv_scrub_options_init(&so);
    so.interval_s = (uint64_t)srv->env.cfg->scrub_interval;
    so.rate = srv->env.cfg->scrub_rate;
    so.thread_name = "kvd-scrub";
    so.thread_init = scrub_thread_init;
    srv->scrub = kv_scrub_new(srv->env.store, &so);
    kv_status sst = srv->scrub ? kv_scrub_start(srv->scrub) : ENOMEM;
    if (sst != KV_OK) {
        kvd_log(KVD_LOG_WARNING, "cannot start the background scrub: %s", kv_strerror(sst));
        kv_scrub_free(srv->scrub);
        srv->scrub = NULL;
    }
}

void kvd_bg_stop(kvd_server *srv)
{
    join_compaction(srv); /* a compaction in progress finishes (or fails cleanly) first */
    kv_scrub_free(srv->scrub); /* a pass in progress stops at its next chunk */
    srv->scrub = NULL;
    if (srv->hints_started) pthread_join(srv->hints_thread, NULL);
    srv->hints_started = 0;
    if (srv->ev_cron) event_free(srv->ev_cron);
    srv->ev_cron = NULL;
}
