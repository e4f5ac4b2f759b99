/*
 * kvd_internal — the worker and server structs the server core
 * (kvd_server.c) shares with nothing else yet. Command files never
 * include it; they see the server through hooks.h.
 *
 * Locking rules (memcached's thread.c style, stated once):
 *  - A client and its bufferevent belong to one I/O thread (worker) and
 *    are touched only there; jobs carry a client pointer to the writer
 *    thread but only the worker dereferences it when the job comes back.
 *  - worker->ho.mu guards only the hand-over queues (new fds, finished
 *    jobs); everything else of a worker is its own thread's.
 *  - Server counters are updated with __atomic builtins.
 *  - The config is read by any thread; CONFIG SET changes only fields
 *    that are read atomically (ints) or under env.cfg_mu (strings).
 */
#ifndef KVD_INTERNAL_H
#define KVD_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_store.h"
#include "kvd_config.h"
#include "clock.h"
#include "client.h"
#include "cmd.h"
#include "hooks.h"
#include "jobs.h"
#include "multi.h"
#include "kvd_limits.h"
#include "reply.h"
#include "resp.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;

typedef struct kvd_worker {
    struct kvd_server *srv;
    int idx;
    pthread_t thread;
    struct event_base *base;
    kvd_handoff ho;   /* finished jobs; ho.mu also guards newfds */
    int *newfds;
    size_t nnew, cap_new;
    kvd_client *clients;
    int stopping;
    struct event *ev_clients_cron; /* once a second: output-buffer limits */
    uint64_t obuf_peak;       /* largest unsent output seen since the last tick (this thread only) */
    uint64_t obuf_recent_max; /* the largest over the last tick or two (atomic; INFO) */
} kvd_worker;

struct kvd_server {
    kvd_env env; /* store, config, counters, hooks: what commands see */
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sig_term, *sig_int, *sig_usr1, *ev_shutdown, *ev_cron;
    kvd_worker *workers;
    int nworkers;
    unsigned next_worker;
    int port;
    long long start_ms;
    int pidfile_written;
    /* background compaction (COMPACT, SIGUSR1, or dead bytes over the
     * configured share): one thread at a time */
    pthread_mutex_t compact_mu;
    pthread_t compact_thread;
    int compact_started; /* a thread exists that must be joined */
    int compacting;      /* it is running (atomic) */
    pthread_t hints_thread; /* writes hint files of sealed segments */
    int hints_started;   /* a thread exists that must be joined (event loop only) */
    int hinting;         /* it is running (atomic) */
    int hints_failed;    /* a run failed: no more automatic runs (atomic) */
    struct kv_scrub *scrub; /* the background scrub (its own thread), or NULL */
    long long test_clock_offset_ms; /* KVD_TEST_CLOCK_OFFSET_MS: tests only (test_clock) */
    long long last_cron_ms;
    int cron_hz; /* the rate ev_cron runs at now (main thread only) */
    /* resource limits (kvd_limits.h) */
    uint64_t nofile_limit;        /* the soft RLIMIT_NOFILE after start */
    uint64_t fd_reserved;         /* descriptors kept beside maxclients' */
    int spare_fd;                 /* /dev/null, given up to refuse a client at EMFILE; -1 none */
    struct event *ev_accept_resume; /* re-enables the listener after an accept error */
    kvd_ratelimit accept_log;     /* accept errors: one log line a second (main thread) */
};

#endif
