/*
 * server — the start/run/stop shell of kvd_server.h: it opens the store,
 * starts the listener, the I/O threads, the signals, the cron and the
 * scrub, fills in the hooks commands use (hooks.h), and on shutdown takes
 * them down in the order that lets every acknowledged write reach its
 * client.
 *
 * Owns: the kvd_server struct (server_state.h) and the main event loop.
 * Never: runs a command or touches a client; that is the I/O threads'
 *   (worker.c, conn.c).
 */
#define _GNU_SOURCE
#include "kvd_server.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clock.h"
#include "kv_scrub.h"
#include "kvd_log.h"
#include "repl.h"
#include "registry.h"
#include "server_state.h"

static void store_log(void *arg, int level, const char *msg)
{
    (void)arg;
    kvd_log_level l = level >= KV_LOG_WARN ? KVD_LOG_WARNING : level == KV_LOG_INFO ? KVD_LOG_NOTICE : KVD_LOG_DEBUG;
    kvd_log(l, "%s", msg);
}

/* The store's wall clock under KVD_TEST_CLOCK_OFFSET_MS (tests only):
 * CLOCK_REALTIME shifted by srv->test_clock_offset_ms, in ms since the
 * epoch. Lets a test restart kvd "with the clock set back". */
static uint64_t test_clock(void *arg)
{
    const kvd_server *srv = arg;
    return (uint64_t)(kvd_mstime() + srv->test_clock_offset_ms);
}

/* ---- signals and SHUTDOWN ---- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    kvd_server *srv = arg;
    if (sig == SIGUSR1) {
        if (kvd_bg_start_compaction(srv, "SIGUSR1") == 0)
            kvd_log(KVD_LOG_NOTICE, "SIGUSR1: a compaction is already running");
        return;
    }
    kvd_log(KVD_LOG_WARNING, "received %s, scheduling shutdown...", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    event_base_loopbreak(srv->base);
}

static void on_shutdown_request(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_server *srv = arg;
    event_base_loopbreak(srv->base);
}

/* kvd_hooks.request_shutdown: from any thread, through the main loop. */
static void request_shutdown(kvd_server *srv)
{
    event_active(srv->ev_shutdown, EV_READ, 0);
}

/* ---- hooks ---- */

/* kvd_hooks.maxclients_fit: as Redis's updateMaxclients, no more clients
 * than the open-file limit holds beside the reserved descriptors. */
static int maxclients_fit(kvd_server *srv, int wanted)
{
    return kvd_nofile_fit(srv->nofile_limit, srv->fd_reserved, wanted);
}

/* The replication settings from cfg (atomic loads, and the announced
 * address under cfg_mu; masterauth apart). Takes cfg_mu: call without it. */
static void repl_settings(kvd_server *srv, kvrepl_settings *rs)
{
    const kvd_config *c = srv->env.cfg;
    kvrepl_settings_init(rs);
    int announce_port = __atomic_load_n(&c->replica_announce_port, __ATOMIC_RELAXED);
    rs->listening_port = announce_port ? announce_port : srv->port;
    pthread_mutex_lock(&srv->env.cfg_mu);
    snprintf(rs->announce_ip, sizeof rs->announce_ip, "%s", c->replica_announce_ip ? c->replica_announce_ip : "");
    pthread_mutex_unlock(&srv->env.cfg_mu);
    rs->backlog_bytes = __atomic_load_n(&c->repl_backlog_size, __ATOMIC_RELAXED);
    rs->backlog_ttl_ms = 1000LL * __atomic_load_n(&c->repl_backlog_ttl, __ATOMIC_RELAXED);
    rs->timeout_ms = 1000LL * __atomic_load_n(&c->repl_timeout, __ATOMIC_RELAXED);
    rs->ping_period_ms = 1000LL * __atomic_load_n(&c->repl_ping_period, __ATOMIC_RELAXED);
    rs->sync_replicas = __atomic_load_n(&c->sync_replicas, __ATOMIC_RELAXED);
    rs->sync_timeout_ms = __atomic_load_n(&c->sync_replicas_timeout, __ATOMIC_RELAXED);
    rs->serve_stale = __atomic_load_n(&c->replica_serve_stale, __ATOMIC_RELAXED);
    rs->priority = __atomic_load_n(&c->replica_priority, __ATOMIC_RELAXED);
}

/* REPLICAOF from the configuration ("HOST PORT" or "no one"), at start. */
static int repl_apply_replicaof(kvd_server *srv, const char *value, char *err, size_t errcap)
{
    char host[256];
    int port = 0, already;
    if (value && kvd_parse_host_port(value, host, sizeof host, &port) < 0) {
        snprintf(err, errcap, "replicaof: expected \"HOST PORT\", got '%s'", value);
        return -1;
    }
    return kvrepl_replicaof(srv->env.repl, value ? host : NULL, port, &already, err, errcap);
}

/* kvd_hooks.config_changed: settings that live outside cfg once applied. */
static void config_changed(kvd_server *srv, const char *name)
{
    if (srv->env.repl && (!strncasecmp(name, "repl-", 5) || !strncasecmp(name, "sync-replicas", 13) ||
                          !strncasecmp(name, "replica-", 8) || !strncasecmp(name, "slave-", 6))) {
        kvrepl_settings rs;
        repl_settings(srv, &rs);
        kvrepl_set(srv->env.repl, &rs);
    }
    if (srv->env.repl && !strcasecmp(name, "masterauth")) {
        pthread_mutex_lock(&srv->env.cfg_mu);
        kvrepl_set_masterauth(srv->env.repl, srv->env.cfg->masterauth);
        pthread_mutex_unlock(&srv->env.cfg_mu);
    }
    if (srv->env.repl && !strcasecmp(name, "replicaof")) {
        char err[256], value[300] = "";
        pthread_mutex_lock(&srv->env.cfg_mu);
        int has = srv->env.cfg->replicaof != NULL;
        if (has) snprintf(value, sizeof value, "%s", srv->env.cfg->replicaof);
        pthread_mutex_unlock(&srv->env.cfg_mu);
        if (repl_apply_replicaof(srv, has ? value : NULL, err, sizeof err) < 0)
            kvd_log(KVD_LOG_WARNING, "CONFIG SET replicaof: %s", err);
    }
    if (!strcasecmp(name, "loglevel")) kvd_log_set_level(__atomic_load_n(&srv->env.cfg->log_level, __ATOMIC_RELAXED));
    if (srv->scrub && (!strcasecmp(name, "scrub-interval") || !strcasecmp(name, "scrub-rate"))) {
        pthread_mutex_lock(&srv->env.cfg_mu);
        uint64_t interval = (uint64_t)srv->env.cfg->scrub_interval, rate = srv->env.cfg->scrub_rate;
        pthread_mutex_unlock(&srv->env.cfg_mu);
        kv_scrub_set_schedule(srv->scrub, interval, rate);
    }
}


/* ---- start, step by step ---- */

/* libevent's locking, once per process (before any event base). */
static int use_threads(char *err, size_t errcap)
{
    static int threads_ready;
    if (!threads_ready) {
        if (evthread_use_pthreads() != 0) {
            snprintf(err, errcap, "libevent has no pthreads support");
            return -1;
        }
        threads_ready = 1;
    }
    return 0;
}

/* A server with its settings, hooks and locks; nothing opened yet. */
static kvd_server *server_new(kvd_config *cfg)
{
    kvd_server *srv = calloc(1, sizeof *srv);
    if (!srv) return NULL;
    srv->env.cfg = cfg;
    srv->env.hooks = (kvd_hooks){
        .srv = srv,
        .request_shutdown = request_shutdown,
        .start_compaction = kvd_bg_start_compaction,
        .start_scrub = kvd_bg_start_scrub,
        .info = kvd_info,
        .maxclients_fit = maxclients_fit,
        .config_changed = config_changed,
    };
    pthread_mutex_init(&srv->env.cfg_mu, NULL);
    pthread_mutex_init(&srv->compact_mu, NULL);
    resp_limits_default(&srv->env.limits);
    srv->env.limits.max_bulk_len = cfg->max_bulk_len;
    srv->env.limits.max_args = cfg->max_args;
    srv->start_ms = srv->last_cron_ms = kvd_mstime();
    srv->spare_fd = -1;
    return srv;
}

/*
 * Raises the open-file limit and lowers maxclients to what fits beside
 * the reserved descriptors, logging both as Redis's adjustOpenFilesLimit
 * does; runs before recovery, which opens every segment. Returns 0, or -1
 * with err filled when not even one client fits (the start is refused).
 */
static int fit_open_files(kvd_server *srv, char *err, size_t errcap)
{
    kvd_config *cfg = srv->env.cfg;
    srv->fd_reserved = kvd_reserved_fds(cfg->io_threads, kvd_count_segment_files(cfg->dir));
    kvd_nofile_result nf;
    kvd_nofile_adjust(cfg->maxclients, srv->fd_reserved, &nf);
    srv->nofile_limit = nf.limit;
    if (nf.maxclients < 1) {
        snprintf(err, errcap,
                 "Your current 'ulimit -n' of %" PRIu64 " is not enough for the server to start. Please increase "
                 "your open file limit to at least %" PRIu64 ". Exiting.",
                 nf.limit, srv->fd_reserved + 1);
        return -1;
    }
    if (nf.maxclients < cfg->maxclients) {
        kvd_log(KVD_LOG_WARNING, "You requested maxclients of %d requiring at least %" PRIu64 " max file descriptors.",
                cfg->maxclients, nf.wanted);
        kvd_log(KVD_LOG_WARNING, "Server can't set maximum open files to %" PRIu64 " because of OS error: %s.",
                nf.wanted, strerror(nf.set_errno));
        kvd_log(KVD_LOG_WARNING,
                "Current maximum open files is %" PRIu64 ". maxclients has been reduced to %d to compensate for "
                "low ulimit. If you need higher maxclients increase 'ulimit -n'.",
                nf.limit, nf.maxclients);
        __atomic_store_n(&cfg->maxclients, nf.maxclients, __ATOMIC_RELAXED);
    } else if (nf.limit > nf.old_limit) {
        kvd_log(KVD_LOG_NOTICE, "Increased maximum number of open files to %" PRIu64 " (it was originally set to %" PRIu64
                ").", nf.limit, nf.old_limit);
    }
    return 0;
}

/* Opens the data directory: recovery runs and decides whether kvd may
 * serve at all. Returns 0, or -1 with err filled. */
static int open_store(kvd_server *srv, char *err, size_t errcap)
{
    const kvd_config *cfg = srv->env.cfg;
    /* The store first: recovery decides whether we may serve at all. */
    kv_options o;
    kv_options_init(&o);
    o.fsync = cfg->fsync;
    o.segment_max_bytes = cfg->segment_size;
    o.recovery_mode = cfg->recovery;
    o.hint_files = cfg->hint_files;
    o.preallocate = cfg->preallocate;
    o.log = store_log;
    const char *off = getenv("KVD_TEST_CLOCK_OFFSET_MS");
    if (off && *off) {
        char *end;
        errno = 0;
        long long v = strtoll(off, &end, 10);
        if (errno || *end || v < -(1LL << 40) || v > (1LL << 40)) {
            snprintf(err, errcap, "KVD_TEST_CLOCK_OFFSET_MS: not a number of milliseconds: '%s'", off);
            return -1;
        }
        srv->test_clock_offset_ms = v;
        o.clock_ms = test_clock;
        o.clock_arg = srv;
        kvd_log(KVD_LOG_WARNING, "KVD_TEST_CLOCK_OFFSET_MS=%lld: the store's expiry clock is shifted (for tests only)",
                v);
    }
    kvr_report rep;
    kv_status st = kv_open(cfg->dir, &o, &srv->env.store, &rep);
    if (st != KV_OK) {
        snprintf(err, errcap, "cannot open data directory %s: %s", cfg->dir, rep.message[0] ? rep.message : kv_strerror(st));
        kvr_report_free(&rep);
        return -1;
    }
    char line[1024];
    kvr_report_format(&rep, line, sizeof line);
    kvd_log(KVD_LOG_NOTICE, "%s", line);
    kvr_report_free(&rep);
    return 0;
}

/* FAILOVER changed the role or ended (a replication thread): the
 * replicaof setting follows, and writes paused for it resume. */
static void on_failover(void *arg, const char *host, int port)
{
    kvd_server *srv = arg;
    kvd_note_role(&srv->env, host, port);
    if (!kvrepl_writes_paused(srv->env.repl)) reg_resume_paused(srv->env.reg);
}

/* Replication (kv/repl/repl.h): the node's ids and role from the data
 * directory's state file, the settings, and replicaof from the
 * configuration (which wins over the file). Its threads start later. */
static int open_repl(kvd_server *srv, char *err, size_t errcap)
{
    kvd_config *cfg = srv->env.cfg;
    kvrepl_settings rs;
    repl_settings(srv, &rs);
    kvrepl_new_id(srv->env.run_id);
    srv->env.repl = kvrepl_new(srv->env.store, cfg->dir, &rs, store_log, NULL, err, errcap);
    if (!srv->env.repl) return -1;
    kvrepl_set_masterauth(srv->env.repl, cfg->masterauth);
    kvrepl_set_failover_cb(srv->env.repl, on_failover, srv);
    if (cfg->replicaof && repl_apply_replicaof(srv, cfg->replicaof, err, errcap) < 0) return -1;
    /* A role the state file kept (a REPLICAOF before the restart) shows in
     * the replicaof setting too, which follows the live role from here on
     * (cmd_replicaof): CONFIG GET and CONFIG REWRITE see it. */
    kvrepl_info in;
    kvrepl_info_get(srv->env.repl, &in);
    if (!cfg->replicaof && in.replica) {
        char value[KVRSTATE_HOST_MAX + 16];
        snprintf(value, sizeof value, "%s %d", in.master_host, in.master_port);
        if (kvd_config_set(cfg, "replicaof", value, err, errcap) < 0) {
            kvrepl_info_free(&in);
            return -1;
        }
    }
    kvrepl_info_free(&in);
    return 0;
}

/* SIGTERM, SIGINT, SIGUSR1 and SHUTDOWN's wake-up on the main loop. */
static void add_signals(kvd_server *srv)
{
    srv->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, on_signal, srv);
    srv->sig_usr1 = evsignal_new(srv->base, SIGUSR1, on_signal, srv);
    srv->ev_shutdown = event_new(srv->base, -1, EV_PERSIST, on_shutdown_request, srv);
    event_add(srv->sig_term, NULL);
    event_add(srv->sig_int, NULL);
    event_add(srv->sig_usr1, NULL);
    event_add(srv->ev_shutdown, NULL);
}

/* A failed pidfile is logged, not fatal (as Redis). */
static void write_pidfile(kvd_server *srv)
{
    const char *path = srv->env.cfg->pidfile;
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) {
        kvd_log(KVD_LOG_WARNING, "cannot write pidfile %s: %s", path, strerror(errno));
        return;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    srv->pidfile_written = 1;
}

kvd_server *kvd_server_start(kvd_config *cfg, char *err, size_t errcap)
{
    if (use_threads(err, errcap) != 0) return NULL;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* as Redis: a closed terminal does not stop the server */
    kvd_server *srv = server_new(cfg);
    if (!srv) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    srv->env.reg = reg_new();
    if (!srv->env.reg || fit_open_files(srv, err, errcap) < 0 || open_store(srv, err, errcap) < 0) {
        if (!srv->env.reg) snprintf(err, errcap, "out of memory");
        reg_free(srv->env.reg);
        free(srv);
        return NULL;
    }
    srv->base = event_base_new();
    if (!srv->base) {
        snprintf(err, errcap, "cannot create the event loop");
        goto fail;
    }
    if (kvd_listener_open(srv, err, errcap) != 0) goto fail;
    if (open_repl(srv, err, errcap) != 0) goto fail;
    srv->nworkers = cfg->io_threads;
    srv->workers = kvd_workers_new(srv->nworkers, &srv->env, err, errcap);
    if (!srv->workers) goto fail;
    if (kvd_workers_start(srv->workers, srv->nworkers, err, errcap) != 0) {
        srv->nworkers = 0; /* as before: the stopped threads' loops are not freed */
        goto fail;
    }
    if (kvrepl_start(srv->env.repl, err, errcap) != 0) goto fail;
    add_signals(srv);
    kvd_bg_cron_start(srv);
    kvd_bg_scrub_start(srv); /* the scrub last: nothing after it can fail */
    write_pidfile(srv);
    kvd_log(KVD_LOG_NOTICE, "kvd %s ready to accept connections on %s:%d (data directory %s, fsync %s, %d I/O thread%s)",
            KVD_VERSION, cfg->bind, srv->port, cfg->dir, kv_fsync_name(cfg->fsync), srv->nworkers,
            srv->nworkers == 1 ? "" : "s");
    return srv;
fail:
    if (srv->env.repl) kvrepl_stop(srv->env.repl);
    kvd_listener_free(srv);
    kvd_workers_free(srv->workers, srv->nworkers);
    if (srv->base) event_base_free(srv->base);
    kv_close(srv->env.store);
    kvrepl_free(srv->env.repl);
    reg_free(srv->env.reg);
    free(srv);
    return NULL;
}

/* ---- run and stop ---- */

int kvd_server_port(const kvd_server *srv)
{
    return srv->port;
}

static void remove_pidfile(kvd_server *srv)
{
    if (srv->pidfile_written && srv->env.cfg->pidfile) unlink(srv->env.cfg->pidfile);
}

/* At shutdown, as Redis's shutdown-timeout: gives connected replicas up
 * to 10 seconds to acknowledge everything written, so a clean stop loses
 * nothing they have not got. */
static void repl_drain(kvd_server *srv)
{
    kv_repl_pos p;
    kv_repl_position(srv->env.store, &p);
    if (kvrepl_is_replica(srv->env.repl)) return;
    long long deadline = kvd_mstime() + 10000;
    /* Counted again each time: a replica that leaves meanwhile (its link
     * closed) is not waited for. */
    while (kvrepl_count_acked(srv->env.repl, p.applied_seq, 0) < kvrepl_online_count(srv->env.repl) &&
           kvd_mstime() < deadline) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int kvd_server_run(kvd_server *srv)
{
    event_base_dispatch(srv->base);
    kvd_log(KVD_LOG_WARNING, "shutting down: no new connections or requests; finishing writes in flight");
    kvd_listener_close(srv);
    kvd_workers_stop_reading(srv->workers, srv->nworkers);
    /* Every write sent so far is queued before this barrier. */
    kv_status sync_st = kv_sync(srv->env.store);
    repl_drain(srv);
    kvrepl_stop(srv->env.repl); /* ends WAITs and synchronous writes still waiting */
    kvd_workers_finish(srv->workers, srv->nworkers);
    srv->workers = NULL;
    kvd_bg_stop(srv);
    kv_repl_pos last;
    kv_repl_position(srv->env.store, &last);
    kv_status close_st = kv_close(srv->env.store);
    if (close_st == KV_OK && (sync_st == KV_OK || sync_st == KV_FAILSTOP)) kvrepl_mark_clean(srv->env.repl, last.applied_seq);
    kvrepl_free(srv->env.repl);
    event_free(srv->sig_term);
    event_free(srv->sig_int);
    event_free(srv->sig_usr1);
    event_free(srv->ev_shutdown);
    kvd_listener_free(srv);
    event_base_free(srv->base);
    remove_pidfile(srv);
    int rc = 0;
    if ((sync_st != KV_OK && sync_st != KV_FAILSTOP) || close_st != KV_OK) {
        kvd_log(KVD_LOG_WARNING, "final sync failed: %s", kv_strerror(sync_st != KV_OK ? sync_st : close_st));
        rc = 1;
    }
    pthread_mutex_destroy(&srv->env.cfg_mu);
    reg_free(srv->env.reg);
    free(srv);
    kvd_log(KVD_LOG_NOTICE, "kvd is now ready to exit, bye bye...");
    return rc;
}
