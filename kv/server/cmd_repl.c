/*
 * cmd_repl — the replication commands: REPLICAOF (SLAVEOF), REPLCONF,
 * PSYNC, WAIT, WAITAOF and ROLE, with Redis 7's replies and error texts
 * (src/replication.c: replicaofCommand, replconfCommand, syncCommand,
 * waitCommand, waitaofCommand, roleCommand). What they do is kv/repl's
 * (repl.h); these handlers parse, check and reply.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "jobs.h"
#include "kvd_log.h"
#include "repl.h"

void kvd_note_role(kvd_env *env, const char *host, int port)
{
    char err[256], value[300];
    if (host)
        snprintf(value, sizeof value, "%s %d", host, port);
    else
        snprintf(value, sizeof value, "no one");
    pthread_mutex_lock(&env->cfg_mu);
    int r = kvd_config_set(env->cfg, "replicaof", value, err, sizeof err);
    pthread_mutex_unlock(&env->cfg_mu);
    if (r < 0) kvd_log(KVD_LOG_WARNING, "replicaof setting not updated: %s", err);
}

/* REPLICAOF host port | REPLICAOF NO ONE (also SLAVEOF). Runs on the
 * client's I/O thread (inside MULTI: after the transaction, multi.c). */
void cmd_replicaof(cmdctx *x)
{
    kvrepl *r = x->env->repl;
    int already = 0;
    char err[256];
    if (kvrepl_writes_paused(r)) {
        rp_error(x->out, "ERR REPLICAOF not allowed while failing over.");
        return;
    }
    if (arg_is(x, 1, "no") && arg_is(x, 2, "one")) {
        if (kvrepl_replicaof(r, NULL, 0, &already, err, sizeof err) < 0) {
            rp_error(x->out, "ERR %s", err);
            return;
        }
        if (!already) kvd_log(KVD_LOG_NOTICE, "MASTER MODE enabled (user request)");
        kvd_note_role(x->env, NULL, 0);
        rp_ok(x->out);
        return;
    }
    long long port;
    if (!str2ll(x->argv[2], x->argvlen[2], &port) || port < 0 || port > 65535) {
        rp_error(x->out, "ERR Invalid master port");
        return;
    }
    if (x->argvlen[1] == 0 || x->argvlen[1] > 255 || memchr(x->argv[1], 0, x->argvlen[1])) {
        rp_error(x->out, "ERR Invalid master host");
        return;
    }
    char host[256];
    memcpy(host, x->argv[1], x->argvlen[1]);
    host[x->argvlen[1]] = 0;
    if (kvrepl_replicaof(r, host, (int)port, &already, err, sizeof err) < 0) {
        rp_error(x->out, "ERR %s", err);
        return;
    }
    if (already) { /* as Redis: nothing to do */
        kvd_log(KVD_LOG_NOTICE, "REPLICAOF would result into synchronization with the master we are already "
                                "connected with. No operation performed.");
        rp_status(x->out, "OK Already connected to specified master");
        return;
    }
    kvd_log(KVD_LOG_NOTICE, "REPLICAOF %s:%lld enabled (user request)", host, port);
    kvd_note_role(x->env, host, (int)port);
    rp_ok(x->out);
}

/* REPLCONF option value ...: what a replica says of itself before PSYNC. */
void cmd_replconf(cmdctx *x)
{
    kvd_client *c = x->c;
    if (x->argc % 2 == 0) {
        rp_error(x->out, ERR_SYNTAX);
        return;
    }
    for (size_t j = 1; j < x->argc; j += 2) {
        if (arg_is(x, j, "listening-port")) {
            long long port;
            if (!arg_ll(x, j + 1, &port)) return;
            c->repl_port = (int)port;
        } else if (arg_is(x, j, "ip-address")) {
            if (x->argvlen[j + 1] >= sizeof c->repl_ip) {
                rp_error(x->out, "ERR REPLCONF ip-address provided by replica instance is too long: %zu bytes",
                         x->argvlen[j + 1]);
                return;
            }
            memcpy(c->repl_ip, x->argv[j + 1], x->argvlen[j + 1]);
            c->repl_ip[x->argvlen[j + 1]] = 0;
        } else if (arg_is(x, j, "capa")) {
            if (x->argvlen[j + 1] == 3 && !strncasecmp((const char *)x->argv[j + 1], "kvd", 3)) c->repl_capa_kvd = 1;
        } else if (arg_is(x, j, "ack") || arg_is(x, j, "getack")) {
            return; /* from a replica on its stream (kv/repl reads those); no reply, as Redis */
        } else {
            rp_error(x->out, "ERR Unrecognized REPLCONF option: %.*s", (int)x->argvlen[j], (const char *)x->argv[j]);
            return;
        }
    }
    rp_ok(x->out);
}

/* PSYNC replid offset: the connection becomes a replica's stream; kv/repl
 * takes the socket over and answers on it. */
void cmd_psync(cmdctx *x)
{
    kvd_client *c = x->c;
    kvrepl *r = x->env->repl;
    if (x->argvlen[1] > 40 || x->argvlen[2] > 30) {
        rp_error(x->out, "ERR invalid PSYNC arguments");
        return;
    }
    char replid[41], offset[32], err[128];
    memcpy(replid, x->argv[1], x->argvlen[1]);
    replid[x->argvlen[1]] = 0;
    memcpy(offset, x->argv[2], x->argvlen[2]);
    offset[x->argvlen[2]] = 0;
    if (x->argc > 3) { /* PSYNC <replid> <offset> FAILOVER: the old primary hands over */
        if (x->argc != 4 || !arg_is(x, 3, "failover")) {
            rp_error(x->out, "ERR Unknown PSYNC option");
            return;
        }
        if (kvrepl_failover_promote(r, replid, err, sizeof err) < 0) {
            rp_error(x->out, "ERR %s", err);
            return;
        }
        kvd_log(KVD_LOG_NOTICE, "MASTER MODE enabled (failover request from '%s')", c->addr);
        kvd_note_role(x->env, NULL, 0);
    }
    if (kvrepl_writes_paused(r)) {
        rp_error(x->out, "NOMASTERLINK Can't SYNC while failing over");
        return;
    }
    if (kvrepl_link_down(r)) {
        rp_error(x->out, "NOMASTERLINK Can't SYNC while not connected with my master");
        return;
    }
    int fd = c->bev ? dup(bufferevent_getfd(c->bev)) : -1;
    if (fd < 0) {
        rp_error(x->out, "ERR cannot take the connection over: %s", strerror(errno));
        return;
    }
    kvrepl_peer peer;
    memset(&peer, 0, sizeof peer);
    if (c->repl_ip[0]) {
        snprintf(peer.ip, sizeof peer.ip, "%s", c->repl_ip);
    } else {
        snprintf(peer.ip, sizeof peer.ip, "%s", c->addr); /* "host:port": the host */
        char *colon = strrchr(peer.ip, ':');
        if (colon) *colon = 0;
    }
    peer.port = c->repl_port;
    peer.capa_kvd = c->repl_capa_kvd;
    kvd_log(KVD_LOG_NOTICE, "Replica %s:%d asks for synchronization", peer.ip, peer.port);
    kvrepl_psync(r, fd, replid, offset, &peer);
    c->close_after_reply = 1; /* this thread lets go of the socket: no reply from here */
}

/* The end of a blocked WAIT / WAITAOF: the reply, then the client reads
 * on (a replication thread). */
static void wait_done(void *arg, int local, int count, int timed_out)
{
    (void)timed_out;
    kvd_job *j = arg;
    if (j->cmd) { /* WAITAOF: marked by its command row */
        rp_array(&j->reply, 2);
        rp_int(&j->reply, local);
        rp_int(&j->reply, count);
    } else {
        rp_int(&j->reply, count);
    }
    job_handback(j, KV_OK);
}

/* WAIT and WAITAOF: numlocal is -1 for WAIT. */
static void wait_common(cmdctx *x, long long numlocal, size_t argrep, size_t argtime, const kvd_cmd *self)
{
    kvd_client *c = x->c;
    kvrepl *r = x->env->repl;
    long long numreplicas, timeout;
    if (!arg_ll(x, argrep, &numreplicas)) return;
    if (!str2ll(x->argv[argtime], x->argvlen[argtime], &timeout)) {
        rp_error(x->out, "ERR timeout is not an integer or out of range");
        return;
    }
    if (timeout < 0) {
        rp_error(x->out, "ERR timeout is negative");
        return;
    }
    kvd_job *j = job_new_blocked(c);
    if (!j) {
        rp_error(x->out, "ERR out of memory");
        return;
    }
    j->cmd = self;
    int local = 0, count = 0;
    int w = kvrepl_wait(r, c->woff, numlocal > 0, (int)(numreplicas < 0 ? 0 : numreplicas), numlocal >= 0, 1, timeout,
                        wait_done, j, &local, &count);
    if (w == 0) return; /* blocked: wait_done replies */
    c->pending--;
    job_free(j);
    if (w < 0) {
        rp_error(x->out, "ERR out of memory");
        return;
    }
    if (numlocal >= 0) {
        rp_array(x->out, 2);
        rp_int(x->out, local);
    }
    rp_int(x->out, count);
}

void cmd_wait(cmdctx *x)
{
    if (kvrepl_is_replica(x->env->repl)) {
        rp_error(x->out, "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if "
                         "a replica is configured to be writable (which is not the default) writes to replicas are "
                         "just local and are not propagated.");
        return;
    }
    wait_common(x, -1, 1, 2, NULL);
}

void cmd_waitaof(cmdctx *x)
{
    if (kvrepl_is_replica(x->env->repl)) {
        rp_error(x->out, "ERR WAITAOF cannot be used with replica instances. Please also note that writes to "
                         "replicas are just local and are not propagated.");
        return;
    }
    long long numlocal;
    if (!arg_ll(x, 1, &numlocal)) return;
    wait_common(x, numlocal < 0 ? 0 : numlocal, 2, 3, kvd_cmd_lookup((const uint8_t *)"waitaof", 7));
}

/* ROLE: ["master", offset, [[ip, port, offset], ...]] or ["slave", host,
 * port, state, offset]. */
void cmd_role(cmdctx *x)
{
    kvrepl_info in;
    kvrepl_info_get(x->env->repl, &in);
    char num[32];
    if (!in.replica) {
        rp_array(x->out, 3);
        rp_bulk_str(x->out, "master");
        rp_int(x->out, (long long)in.offset);
        rp_array(x->out, (long long)in.nreplicas);
        for (size_t i = 0; i < in.nreplicas; i++) {
            rp_array(x->out, 3);
            rp_bulk_str(x->out, in.replicas[i].ip);
            snprintf(num, sizeof num, "%d", in.replicas[i].port);
            rp_bulk_str(x->out, num);
            snprintf(num, sizeof num, "%" PRIu64, in.replicas[i].ack);
            rp_bulk_str(x->out, num);
        }
    } else {
        rp_array(x->out, 5);
        rp_bulk_str(x->out, "slave");
        rp_bulk_str(x->out, in.master_host);
        rp_int(x->out, in.master_port);
        rp_bulk_str(x->out, in.link_state);
        rp_int(x->out, in.link_status[0] == 'u' || in.sync_in_progress ? (long long)in.applied : -1);
    }
    kvrepl_info_free(&in);
}

/* FAILOVER [TO host port] [TIMEOUT ms] [FORCE] | FAILOVER ABORT, with
 * Redis 6.2's parsing and errors (failoverCommand); the switchover is
 * kv/repl's (repl_failover.c). Writes pause from +OK until it ends. */
void cmd_failover(cmdctx *x)
{
    kvrepl *r = x->env->repl;
    char err[160];
    if (x->argc == 2 && arg_is(x, 1, "abort")) {
        if (kvrepl_failover_abort(r, err, sizeof err) < 0)
            rp_error(x->out, "ERR %s", err);
        else
            rp_ok(x->out);
        return;
    }
    long long timeout = 0, port = 0;
    int force = 0;
    char host[256] = "";
    for (size_t j = 1; j < x->argc; j++) {
        if (arg_is(x, j, "timeout") && j + 1 < x->argc && timeout == 0) {
            if (!arg_ll(x, j + 1, &timeout)) return;
            if (timeout <= 0) {
                rp_error(x->out, "ERR FAILOVER timeout must be greater than 0");
                return;
            }
            j++;
        } else if (arg_is(x, j, "to") && j + 2 < x->argc && !host[0]) {
            if (!arg_ll(x, j + 2, &port)) return;
            if (x->argvlen[j + 1] == 0 || x->argvlen[j + 1] >= sizeof host) {
                rp_error(x->out, "ERR FAILOVER target HOST and PORT is not a replica.");
                return;
            }
            memcpy(host, x->argv[j + 1], x->argvlen[j + 1]);
            host[x->argvlen[j + 1]] = 0;
            j += 2;
        } else if (arg_is(x, j, "force") && !force) {
            force = 1;
        } else {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
    }
    if (kvrepl_failover_start(r, host[0] ? host : NULL, (int)port, timeout, force, err, sizeof err) < 0)
        rp_error(x->out, "ERR %s", err);
    else
        rp_ok(x->out);
}
