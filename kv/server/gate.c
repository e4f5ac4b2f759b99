/*
 * gate — the checks a parsed request passes before it runs (gate.h), in
 * the order of Redis 7.0's processCommand (src/server.c): unknown
 * command, arity, AUTH, refused inside MULTI, min-replicas, read-only
 * replica, subscriber mode, stale replica.
 */
#include "gate.h"

#include <stdio.h>

#include "repl.h"

static void reply_unknown(kvd_client *c)
{
    char args[512];
    size_t used = 0;
    args[0] = 0;
    /* As Redis 7 (processCommand): the quoted arguments together take
     * about 128 characters; each is cut to what is left of them. */
    for (size_t i = 1; i < c->args.argc && used < 128; i++) {
        size_t room = 128 - used;
        int n = snprintf(args + used, sizeof args - used, "'%.*s' ",
                         (int)(c->args.argvlen[i] > room ? room : c->args.argvlen[i]), (const char *)c->args.argv[i]);
        if (n < 0) break;
        used += (size_t)n;
        if (used >= sizeof args) used = sizeof args - 1;
    }
    rp_error(&c->out, "ERR unknown command '%.*s', with args beginning with: %s",
             (int)(c->args.argvlen[0] > 128 ? 128 : c->args.argvlen[0]), (const char *)c->args.argv[0], args);
}

static int arity_ok(const kvd_cmd *cmd, size_t argc)
{
    return cmd->arity > 0 ? argc == (size_t)cmd->arity : argc >= (size_t)-cmd->arity;
}

/* Would this request be sent to the writer thread (so it may be queued
 * behind the connection's other writes)? */
int gate_goes_to_writer(const kvd_client *c, const kvd_cmd *cmd)
{
    if (!cmd || !arity_ok(cmd, c->args.argc)) return 0;
    if (c->in_multi) return (cmd->flags & CMD_RUNS_MULTI) && !c->multi_error;
    return (cmd->flags & CMD_WRITE) != 0;
}

/* A replica refuses writes (Redis's -READONLY). */
static int replica_readonly(kvd_client *c, const kvd_cmd *cmd)
{
    return (cmd->flags & CMD_WRITE) && !(cmd->flags & CMD_STALE) && kvrepl_is_replica(c->env->repl);
}

/* With replica-serve-stale-data no, a replica whose link is down refuses
 * reads too. */
static int replica_stale(kvd_client *c, const kvd_cmd *cmd)
{
    return (cmd->flags & CMD_READ) && !(cmd->flags & CMD_STALE) &&
           !__atomic_load_n(&c->env->cfg->replica_serve_stale, __ATOMIC_RELAXED) && kvrepl_link_down(c->env->repl);
}

/* Under sync-replicas N, a write is refused before it runs while fewer
 * than N replicas are connected and streaming (Redis's reply for
 * min-replicas-to-write): it could only end in a timeout, "maybe
 * applied". A replica that goes away after the check leaves the write to
 * that timeout. */
static int too_few_replicas(kvd_client *c)
{
    int n = __atomic_load_n(&c->env->cfg->sync_replicas, __ATOMIC_RELAXED);
    return n > 0 && !kvrepl_is_replica(c->env->repl) && kvrepl_online_count(c->env->repl) < n;
}

int gate_refuses(kvd_client *c, const kvd_cmd *cmd)
{
    kvd_env *env = c->env;
    int refused = 1;
    if (!cmd) {
        reply_unknown(c);
    } else if (!arity_ok(cmd, c->args.argc)) {
        rp_error(&c->out, "ERR wrong number of arguments for '%s' command", cmd->name);
    } else if (!c->authenticated && !(cmd->flags & CMD_NOAUTH) && kvd_password_set(env)) {
        rp_error(&c->out, "NOAUTH Authentication required.");
    } else if (c->in_multi && !(cmd->flags & CMD_NOMULTI) && (cmd->flags & CMD_NOTXN)) {
        rp_error(&c->out, "ERR Command not allowed inside a transaction");
    } else if ((cmd->flags & CMD_WRITE) && env->repl && too_few_replicas(c)) {
        rp_error(&c->out, "NOREPLICAS Not enough good replicas to write.");
    } else if (env->repl && replica_readonly(c, cmd)) {
        rp_error(&c->out, "READONLY You can't write against a read only replica.");
    } else if (c->nsub + c->npsub > 0 && !(cmd->flags & CMD_PUBSUB_OK)) {
        rp_error(&c->out, "ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
                          "are allowed in this context", cmd->name);
    } else if (env->repl && replica_stale(c, cmd)) {
        rp_error(&c->out, "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.");
    } else {
        refused = 0;
    }
    if (refused && c->in_multi) c->multi_error = 1;
    return refused;
}
