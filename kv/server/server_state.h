/*
 * server_state — the server struct, shared by the server shell
 * (server.c) and its server-level parts: the listener (listener.c), the
 * background threads and cron (bg.c) and INFO (info.c). Command files and
 * the connection code never include it: they see the server through
 * hooks.h.
 *
 * Locking rules (memcached's thread.c style, stated once):
 *  - A client and its bufferevent belong to one I/O thread (worker) and
 *    are touched only there; jobs carry a client pointer to the writer
 *    thread but only the worker dereferences it when the job comes back.
 *  - worker->io.ho.mu guards only the hand-over queues (new fds, finished
 *    jobs); everything else of a worker is its own thread's.
 *  - Server counters (env.n) are updated with __atomic builtins.
 *  - The config is read by any thread; CONFIG SET changes only fields
 *    that are read atomically (ints) or under env.cfg_mu (strings).
 *  - The listener, signals and cron run on the main thread's event loop;
 *    compact_mu serialises starting and joining the compaction thread.
 */
#ifndef KVD_SERVER_STATE_H
#define KVD_SERVER_STATE_H

#include <pthread.h>
#include <stdint.h>

#include "hooks.h"
#include "kvd_limits.h"
#include "kvd_server.h"
#include "reply.h"
#include "worker.h"

struct event_base;
struct event;
struct evconnlistener;
struct kv_scrub;

struct kvd_server {
    kvd_env env; /* store, config, counters, hooks: what commands see */
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sig_term, *sig_int, *sig_usr1, *ev_shutdown, *ev_cron;
    kvd_worker *workers; /* the I/O threads */
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

/* ---- listener.c ---- */

/* Binds cfg->bind:cfg->port and starts accepting on srv->base (connections
 * go to the workers round robin); sets srv->port. Returns 0, or -1 with
 * err filled. */
int kvd_listener_open(kvd_server *srv, char *err, size_t errcap);
/* Stops accepting: frees the listener (the other listener state stays
 * until kvd_listener_free). */
void kvd_listener_close(kvd_server *srv);
/* Frees what kvd_listener_open created. */
void kvd_listener_free(kvd_server *srv);

/* ---- bg.c ---- */

/* Starts the cron timer (active expiry, automatic compaction, hint files,
 * ops/sec, at cfg->expire_hz) on srv->base. Returns 0 or -1. */
int kvd_bg_cron_start(kvd_server *srv);
/* Starts the background scrub thread; logs and goes on without it when
 * it cannot start. */
void kvd_bg_scrub_start(kvd_server *srv);
/* Starts a background compaction (kvd_hooks.start_compaction). */
int kvd_bg_start_compaction(kvd_server *srv, const char *why);
/* Starts a scrub pass now (kvd_hooks.start_scrub). */
int kvd_bg_start_scrub(kvd_server *srv);
/* Shutdown: waits for a running compaction and the hint writer, stops the
 * scrub (at its next chunk), frees the cron timer. */
void kvd_bg_stop(kvd_server *srv);

/* ---- info.c ---- */

/* Appends INFO's text for `section` (NULL: default) to o
 * (kvd_hooks.info). */
void kvd_info(kvd_server *srv, const char *section, sbuf *o);

#endif
