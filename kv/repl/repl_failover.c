/*
 * repl_failover — FAILOVER, a coordinated switchover as Redis 6.2 defines
 * it (src/replication.c: failoverCommand, updateFailoverStatus,
 * abortFailover), on kvd's log (repl.h):
 *
 *   1. waiting-for-sync: the server pauses writes (kvrepl_writes_paused);
 *      the cron waits until every group written is applied here and the
 *      target replica (the one named, or the first that qualifies) has
 *      acknowledged the log's end: applied it, or, with sync-replicas set,
 *      fsynced it;
 *   2. failover-in-progress: this node becomes a replica of the target,
 *      and its handshake sends PSYNC <replid> <offset> FAILOVER; the
 *      target checks the id is its own, promotes itself, and answers
 *      +CONTINUE;
 *   3. the answer ends the failover (writes resume, and are refused with
 *      -READONLY); an error answer aborts it back to primary.
 *
 * A timeout in step 1 aborts (FORCE: goes on to step 2 anyway); ABORT in
 * step 2 makes the node primary again. No acknowledged write is lost:
 * writes are paused before the wait, and the target holds every one
 * before it is promoted.
 *
 * Locking: the state is under r->mu; fo_state is also read atomically by
 * kvrepl_writes_paused (every write command asks). The server's callback
 * runs without r->mu.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl_int.h"

static const char *const state_names[] = {"no-failover", "waiting-for-sync", "failover-in-progress"};

int kvrepl_writes_paused(kvrepl *r)
{
    return __atomic_load_n(&r->fo_state, __ATOMIC_SEQ_CST) != FO_NONE;
}

const char *kvrepl_failover_state(kvrepl *r)
{
    return state_names[__atomic_load_n(&r->fo_state, __ATOMIC_ACQUIRE)];
}

void kvrepl_set_failover_cb(kvrepl *r, kvrepl_failover_cb cb, void *arg)
{
    pthread_mutex_lock(&r->mu);
    r->fo_cb = cb;
    r->fo_cb_arg = arg;
    pthread_mutex_unlock(&r->mu);
}

/* The replica named host:port, or NULL. r->mu held. */
static kvrepl_replica *do_find(kvrepl *r, const char *host, int port)
{
    for (kvrepl_replica *rp = r->replicas; rp; rp = rp->next)
        if (!strcmp(rp->peer.ip, host) && rp->peer.port == port) return rp;
    return NULL;
}

int kvrepl_failover_start(kvrepl *r, const char *host, int port, long long timeout_ms, int force, char *err,
                          size_t errcap)
{
    pthread_mutex_lock(&r->mu);
    const char *e = NULL;
    kvrepl_replica *rp = host ? do_find(r, host, port) : NULL;
    if (r->fo_state != FO_NONE)
        e = "FAILOVER already in progress.";
    else if (r->st.master_host[0])
        e = "FAILOVER is not valid when server is a replica.";
    else if (!r->replicas)
        e = "FAILOVER requires connected replicas.";
    else if (force && (timeout_ms <= 0 || !host))
        e = "FAILOVER with force option requires both a timeout and target HOST and IP.";
    else if (host && !rp)
        e = "FAILOVER target HOST and PORT is not a replica.";
    else if (rp && __atomic_load_n(&rp->state, __ATOMIC_ACQUIRE) != RSTATE_ONLINE)
        e = "FAILOVER target replica is not online.";
    if (e) {
        pthread_mutex_unlock(&r->mu);
        snprintf(err, errcap, "%s", e);
        return -1;
    }
    snprintf(r->fo_host, sizeof r->fo_host, "%s", host ? host : "");
    r->fo_port = host ? port : 0;
    r->fo_force = force;
    r->fo_deadline_ms = timeout_ms > 0 ? repl_mono_ms() + timeout_ms : 0;
    __atomic_store_n(&r->fo_state, FO_WAIT_SYNC, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (host)
        rlog(r, KV_LOG_INFO, "FAILOVER requested to %s:%d.", host, port);
    else
        rlog(r, KV_LOG_INFO, "FAILOVER requested to any replica.");
    return 0;
}

/* Ends the failover in this node's present role: writes resume. Called
 * without r->mu; the callback is told the role. */
static void end_failover(kvrepl *r, const char *why)
{
    pthread_mutex_lock(&r->mu);
    __atomic_store_n(&r->fo_state, FO_NONE, __ATOMIC_SEQ_CST);
    r->fo_psync = 0;
    kvrepl_failover_cb cb = r->fo_cb;
    void *arg = r->fo_cb_arg;
    char host[sizeof r->st.master_host];
    memcpy(host, r->st.master_host, sizeof host);
    int port = r->st.master_port;
    char target[sizeof r->fo_host + 16];
    if (r->fo_host[0])
        snprintf(target, sizeof target, "%s:%d", r->fo_host, r->fo_port);
    else
        snprintf(target, sizeof target, "any replica");
    pthread_mutex_unlock(&r->mu);
    if (why) rlog(r, KV_LOG_WARN, "FAILOVER to %s aborted: %s", target, why);
    if (cb) cb(arg, host[0] ? host : NULL, port);
}

/* Back to primary after step 2 began (ABORT, or the target refused). */
static void back_to_primary(kvrepl *r, const char *why)
{
    int already;
    char err[128];
    if (kvrepl_replicaof(r, NULL, 0, &already, err, sizeof err) < 0)
        rlog(r, KV_LOG_WARN, "FAILOVER: cannot become primary again: %s", err);
    end_failover(r, why);
}

int kvrepl_failover_abort(kvrepl *r, char *err, size_t errcap)
{
    int st = __atomic_load_n(&r->fo_state, __ATOMIC_ACQUIRE);
    if (st == FO_NONE) {
        snprintf(err, errcap, "No failover in progress.");
        return -1;
    }
    if (st == FO_IN_PROGRESS)
        back_to_primary(r, "Failover manually aborted");
    else
        end_failover(r, "Failover manually aborted");
    return 0;
}

/* Step 2: become a replica of host:port; the next handshake carries
 * FAILOVER. */
static void switch_to(kvrepl *r, const char *host, int port, int forced)
{
    pthread_mutex_lock(&r->mu);
    r->fo_psync = 1;
    __atomic_store_n(&r->fo_state, FO_IN_PROGRESS, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&r->mu);
    if (forced)
        rlog(r, KV_LOG_WARN, "FAILOVER to %s:%d time out exceeded, failing over.", host, port);
    else
        rlog(r, KV_LOG_INFO, "Failover target %s:%d is synced, failing over.", host, port);
    int already;
    char err[128];
    if (kvrepl_replicaof(r, host, port, &already, err, sizeof err) < 0) {
        end_failover(r, err);
        return;
    }
    pthread_mutex_lock(&r->mu);
    kvrepl_failover_cb cb = r->fo_cb;
    void *arg = r->fo_cb_arg;
    pthread_mutex_unlock(&r->mu);
    if (cb) cb(arg, host, port); /* the role changed; writes stay paused */
}

/* The cron, in step 1: picks the target once it holds the log's end. */
void failover_tick(kvrepl *r, long long now)
{
    if (__atomic_load_n(&r->fo_state, __ATOMIC_ACQUIRE) != FO_WAIT_SYNC) return;
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    char host[sizeof r->fo_host];
    int port = 0, found = 0, timed_out;
    pthread_mutex_lock(&r->mu);
    int fsynced = r->set.sync_replicas > 0;
    for (kvrepl_replica *rp = r->replicas; rp && !found && p.applied_seq == p.written_seq; rp = rp->next) {
        if (r->fo_host[0] && (strcmp(rp->peer.ip, r->fo_host) || rp->peer.port != r->fo_port)) continue;
        if (__atomic_load_n(&rp->state, __ATOMIC_ACQUIRE) != RSTATE_ONLINE) continue;
        if (ld64(fsynced ? &rp->fack : &rp->ack) < p.applied_seq) continue;
        snprintf(host, sizeof host, "%s", rp->peer.ip);
        port = rp->peer.port;
        found = 1;
    }
    timed_out = !found && r->fo_deadline_ms && now >= r->fo_deadline_ms;
    int force = r->fo_force;
    if (timed_out && force) {
        snprintf(host, sizeof host, "%s", r->fo_host);
        port = r->fo_port;
    }
    pthread_mutex_unlock(&r->mu);
    if (found || (timed_out && force))
        switch_to(r, host, port, !found);
    else if (timed_out)
        end_failover(r, "Replica never caught up before timeout");
}

int failover_psync_flag(kvrepl *r)
{
    pthread_mutex_lock(&r->mu);
    int v = r->fo_psync && r->fo_state == FO_IN_PROGRESS;
    pthread_mutex_unlock(&r->mu);
    return v;
}

void failover_psync_answered(kvrepl *r, int accepted)
{
    if (__atomic_load_n(&r->fo_state, __ATOMIC_ACQUIRE) != FO_IN_PROGRESS) return;
    if (accepted) {
        rlog(r, KV_LOG_INFO, "Failover target accepted the PSYNC FAILOVER request: failover complete.");
        end_failover(r, NULL);
    } else {
        back_to_primary(r, "Failover target rejected psync request");
    }
}

int kvrepl_failover_promote(kvrepl *r, const char *replid, char *err, size_t errcap)
{
    pthread_mutex_lock(&r->mu);
    int replica = r->st.master_host[0] != 0;
    int same = !strcmp(replid, r->st.replid);
    pthread_mutex_unlock(&r->mu);
    if (!replica) {
        snprintf(err, errcap, "PSYNC FAILOVER can't be sent to a master.");
        return -1;
    }
    if (!same) {
        snprintf(err, errcap, "PSYNC FAILOVER replid must match my replid.");
        return -1;
    }
    int already;
    return kvrepl_replicaof(r, NULL, 0, &already, err, errcap);
}
