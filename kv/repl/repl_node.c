/*
 * repl_node — the node's replication state (repl.h): start and stop, its
 * ids, REPLICAOF, the cron, and INFO's figures.
 */
#define _GNU_SOURCE
#include "repl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "repl_int.h"

void kvrepl_settings_init(kvrepl_settings *s)
{
    memset(s, 0, sizeof *s);
    s->listening_port = 6379;
    s->backlog_bytes = 64ull << 20;
    s->backlog_ttl_ms = 3600 * 1000;
    s->timeout_ms = 60 * 1000;
    s->ping_period_ms = 10 * 1000;
    s->sync_replicas = 0;
    s->sync_timeout_ms = 10 * 1000;
    s->serve_stale = 1;
    s->priority = 100;
}

/* This run's ids (see kvrepl_new). */
static void choose_ids(kvrepl *r, int loaded)
{
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    if (!loaded) {
        kvrepl_state_init(&r->st);
        return;
    }
    if (r->st.master_host[0]) return; /* a replica's log is a prefix of its primary's: PSYNC from its end */
    if (r->st.clean && r->st.clean_seq == p.applied_seq) return; /* the history replicas saw is all here */
    /* A crash: the log may have lost a tail replicas received. Its history
     * up to its end stays valid under the old id, as replid2. */
    memcpy(r->st.replid2, r->st.replid, sizeof r->st.replid2);
    r->st.second_off = p.applied_seq + 1;
    kvrepl_new_id(r->st.replid);
    rlog(r, KV_LOG_INFO, "replication: not a clean shutdown; new replication id %s, the old one valid up to offset %" PRIu64,
         r->st.replid, p.applied_seq);
}

kvrepl *kvrepl_new(kv_store *s, const char *dir, const kvrepl_settings *set, kv_log_fn log, void *log_arg,
                   char *err, size_t errcap)
{
    kvrepl *r = calloc(1, sizeof *r);
    if (!r || !(r->dir = strdup(dir))) {
        free(r);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    r->s = s;
    r->log = log;
    r->log_arg = log_arg;
    r->set = *set;
    r->link_fd = -1;
    r->link_state = "connect";
    r->no_replica_since_ms = 0; /* no replica yet: no history kept (Redis creates its backlog with the first) */
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    char lerr[256] = "";
    int e = kvrepl_state_load(dir, &r->st, lerr, sizeof lerr);
    if (e < 0 && e != -ENOENT)
        rlog(r, KV_LOG_WARN, "replication: %s; starting as a primary with a new replication id",
             e == -EBADMSG ? lerr : strerror(-e));
    choose_ids(r, e == 0);
    r->st.clean = 0;
    r->st.clean_seq = 0;
    /* A node that never replicated has no state file, and gets none until
     * it does (REPLICAOF, or a replica's PSYNC): its start and stop write
     * nothing more than before. One that did marks the file "running". */
    if (e != -ENOENT && do_state_save(r) < 0) {
        snprintf(err, errcap, "cannot write the replication state in %s", dir);
        kvrepl_free(r);
        return NULL;
    }
    kv_set_replica(s, r->st.master_host[0] != 0);
    return r;
}

static void *cron_main(void *arg);

int kvrepl_start(kvrepl *r, char *err, size_t errcap)
{
    if (pthread_create(&r->cron_thread, NULL, cron_main, r) != 0) {
        snprintf(err, errcap, "cannot start the replication cron thread");
        return -1;
    }
    r->cron_started = 1;
    if (pthread_create(&r->link_thread, NULL, link_main, r) != 0) {
        snprintf(err, errcap, "cannot start the replication link thread");
        return -1;
    }
    r->link_started = 1;
    return 0;
}

void kvrepl_stop(kvrepl *r)
{
    pthread_mutex_lock(&r->mu);
    __atomic_store_n(&r->stopping, 1, __ATOMIC_RELEASE); /* senders look without r->mu */
    if (r->link_fd >= 0) shutdown(r->link_fd, SHUT_RDWR);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->link_started) pthread_join(r->link_thread, NULL);
    if (r->cron_started) pthread_join(r->cron_thread, NULL);
    r->link_started = r->cron_started = 0;
    feed_drop_all(r, 1);
    /* Waits still pending end now: the node is going away. */
    repl_check_waiters(r, -1);
}

void kvrepl_mark_clean(kvrepl *r, uint64_t last_seq)
{
    pthread_mutex_lock(&r->mu);
    r->st.clean = 1;
    r->st.clean_seq = last_seq;
    if (r->state_exists) do_state_save(r);
    pthread_mutex_unlock(&r->mu);
}

void kvrepl_free(kvrepl *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->masterauth);
    free(r->dir);
    free(r);
}

void kvrepl_set(kvrepl *r, const kvrepl_settings *set)
{
    pthread_mutex_lock(&r->mu);
    r->set = *set;
    pthread_mutex_unlock(&r->mu);
}

void kvrepl_set_masterauth(kvrepl *r, const char *pass)
{
    char *p = pass && *pass ? strdup(pass) : NULL;
    pthread_mutex_lock(&r->mu);
    free(r->masterauth);
    r->masterauth = p;
    pthread_mutex_unlock(&r->mu);
}

void kvrepl_psync(kvrepl *r, int fd, const char *replid, const char *offset, const kvrepl_peer *peer)
{
    feed_start(r, fd, replid, offset, peer);
}

/* ---- the cron ---- */

/* Replicas silent for longer than the timeout are dropped; the history
 * kept for partial resyncs follows repl-backlog-size and -ttl. */
static void cron_tick(kvrepl *r, long long now)
{
    pthread_mutex_lock(&r->mu);
    long long timeout = r->set.timeout_ms;
    for (kvrepl_replica *rp = r->replicas; rp; rp = rp->next) {
        long long last = __atomic_load_n(&rp->last_ack_ms, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&rp->state, __ATOMIC_ACQUIRE) == RSTATE_ONLINE && timeout > 0 && now - last > timeout &&
            !__atomic_exchange_n(&rp->closing, 1, __ATOMIC_ACQ_REL)) {
            rlog(r, KV_LOG_WARN, "Disconnecting timedout replica (streaming sync): %s:%d", rp->peer.ip, rp->peer.port);
            shutdown(rp->fd, SHUT_RDWR);
        }
    }
    int keep = r->st.master_host[0] || r->nreplicas > 0 ||
               (r->no_replica_since_ms && (r->set.backlog_ttl_ms == 0 || now - r->no_replica_since_ms < r->set.backlog_ttl_ms));
    uint64_t bytes = keep ? r->set.backlog_bytes : 0;
    pthread_mutex_unlock(&r->mu);
    kv_set_retention(r->s, bytes);
}

static void *cron_main(void *arg)
{
    kvrepl *r = arg;
    pthread_setname_np(pthread_self(), "kvd-repl-cron");
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += KVREPL_CRON_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (r->stopping) break;
        pthread_mutex_unlock(&r->mu);
        long long now = repl_mono_ms();
        repl_check_waiters(r, now);
        cron_tick(r, now);
        failover_tick(r, now);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- INFO and ROLE ---- */

static const char *state_word(int st)
{
    return st == RSTATE_ONLINE ? "online" : st == RSTATE_SEND_BULK ? "send_bulk" : "wait_bgsave";
}

void kvrepl_info_get(kvrepl *r, kvrepl_info *in)
{
    memset(in, 0, sizeof *in);
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    long long mono = repl_mono_ms(), wall = repl_wall_ms();
    pthread_mutex_lock(&r->mu);
    in->replica = r->st.master_host[0] != 0;
    memcpy(in->replid, r->st.replid, sizeof in->replid);
    memcpy(in->replid2, r->st.replid2, sizeof in->replid2);
    in->has_second = r->st.second_off > 0;
    in->second_off = r->st.second_off;
    in->offset = in->replica ? p.applied_seq : p.written_seq;
    memcpy(in->master_host, r->st.master_host, sizeof in->master_host);
    in->master_port = r->st.master_port;
    in->link_status = r->link_up ? "up" : "down";
    in->link_state = r->link_state;
    in->last_io_s = r->link_up ? (mono - r->last_io_ms) / 1000 : -1;
    in->sync_in_progress = r->sync_in_progress;
    in->link_down_s = r->link_up ? -1 : r->link_down_since_ms ? (wall - r->link_down_since_ms) / 1000 : -1;
    in->applied = p.applied_seq;
    in->synced = p.synced_seq;
    in->priority = r->set.priority;
    in->read_only = 1;
    in->replicas = calloc(r->nreplicas ? (size_t)r->nreplicas : 1, sizeof *in->replicas);
    for (kvrepl_replica *rp = r->replicas; rp && in->replicas; rp = rp->next) {
        kvrepl_replica_info *ri = &in->replicas[in->nreplicas++];
        snprintf(ri->ip, sizeof ri->ip, "%s", rp->peer.ip);
        ri->port = rp->peer.port;
        ri->state = state_word(__atomic_load_n(&rp->state, __ATOMIC_ACQUIRE));
        ri->ack = ld64(&rp->ack);
        ri->fack = ld64(&rp->fack);
        ri->lag_s = (mono - __atomic_load_n(&rp->last_ack_ms, __ATOMIC_ACQUIRE)) / 1000;
    }
    pthread_mutex_unlock(&r->mu);
    in->sync_full = ld64(&r->sync_full);
    in->sync_partial_ok = ld64(&r->sync_partial_ok);
    in->sync_partial_err = ld64(&r->sync_partial_err);
    in->bytes_sent = ld64(&r->bytes_sent);
    in->records_sent = ld64(&r->records_sent);
    in->bytes_received = ld64(&r->bytes_received);
    in->records_received = ld64(&r->records_received);
    in->stream_errors = ld64(&r->stream_errors);
    in->divergent_records = ld64(&r->divergent_records);
    in->sync_timeouts = ld64(&r->sync_timeouts);
}

void kvrepl_info_free(kvrepl_info *in)
{
    free(in->replicas);
    in->replicas = NULL;
    in->nreplicas = 0;
}
