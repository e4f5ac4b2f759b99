/*
 * cmd_pubsub — SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH
 * and PUBSUB, with Redis 7's RESP2 replies (src/pubsub.c). The channels
 * and patterns live in the registry (registry.h), shared by every I/O
 * thread; a message reaches a subscriber on another thread as a mail
 * (jobs.h).
 *
 * A client with a subscription is in subscriber mode: the connection code
 * lets through only the commands flagged CMD_PUBSUB_OK (conn.c).
 */
#include <stdlib.h>

#include "cmd.h"
#include "registry.h"

static const char *const verbs[2][2] = {{"subscribe", "unsubscribe"}, {"psubscribe", "punsubscribe"}};

/* One (un)subscribe confirmation: [verb, name or nil, subscriptions left]. */
static void reply_sub(cmdctx *x, reg_kind kind, int unsub, const uint8_t *p, size_t n)
{
    rp_array(x->out, 3);
    rp_bulk_str(x->out, verbs[kind][unsub]);
    if (p)
        rp_bulk(x->out, p, n);
    else
        rp_nil(x->out);
    rp_int(x->out, (long long)x->c->nsub + x->c->npsub);
}

static void subscribe(cmdctx *x, reg_kind kind)
{
    for (size_t i = 1; i < x->argc; i++) {
        if (reg_subscribe(x->env->reg, x->c, kind, x->argv[i], x->argvlen[i]) < 0) {
            rp_error(x->out, "ERR out of memory");
            return;
        }
        reply_sub(x, kind, 0, x->argv[i], x->argvlen[i]);
    }
}

static void unsubscribe(cmdctx *x, reg_kind kind)
{
    if (x->argc > 1) {
        for (size_t i = 1; i < x->argc; i++) {
            reg_unsubscribe(x->env->reg, x->c, kind, x->argv[i], x->argvlen[i]);
            reply_sub(x, kind, 1, x->argv[i], x->argvlen[i]);
        }
        return;
    }
    /* No argument: every subscription of this kind, oldest first; none at
     * all gives one reply with a nil name (Redis). */
    int any = 0;
    for (;;) {
        uint8_t *p;
        size_t n;
        int rc = reg_first(x->env->reg, x->c, kind, &p, &n);
        if (rc < 0) {
            rp_error(x->out, "ERR out of memory");
            return;
        }
        if (rc == 0) break;
        reg_unsubscribe(x->env->reg, x->c, kind, p, n);
        reply_sub(x, kind, 1, p, n);
        free(p);
        any = 1;
    }
    if (!any) reply_sub(x, kind, 1, NULL, 0);
}

void cmd_subscribe(cmdctx *x)
{
    subscribe(x, REG_CHANNEL);
}

void cmd_psubscribe(cmdctx *x)
{
    subscribe(x, REG_PATTERN);
}

void cmd_unsubscribe(cmdctx *x)
{
    unsubscribe(x, REG_CHANNEL);
}

void cmd_punsubscribe(cmdctx *x)
{
    unsubscribe(x, REG_PATTERN);
}

/* PUBLISH channel message: the number of receivers. Runs on replicas too,
 * and never touches the store (a message is not data: it is neither
 * logged nor replicated, as in Redis without cluster). */
void cmd_publish(cmdctx *x)
{
    long long n = reg_publish(x->env->reg, x->argv[1], x->argvlen[1], x->argv[2], x->argvlen[2]);
    if (n < 0)
        rp_error(x->out, "ERR out of memory");
    else
        rp_int(x->out, n);
}

static void pubsub_help(cmdctx *x)
{
    static const char *const lines[] = {
        "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CHANNELS [<pattern>]",
        "    Return the currently active channels matching a <pattern> (default: '*').",
        "NUMPAT",
        "    Return number of subscriptions to patterns.",
        "NUMSUB [<channel> ...]",
        "    Return the number of subscribers for the specified channels, excluding",
        "    pattern subscriptions(default: no channels).",
        "SHARDCHANNELS [<pattern>]",
        "    Return the currently active shard level channels matching a <pattern> (default: '*').",
        "SHARDNUMSUB [<shardchannel> ...]",
        "    Return the number of subscribers for the specified shard level channel(s)",
        "HELP",
        "    Prints this help.",
    };
    rp_help(x->out, lines, sizeof lines / sizeof lines[0]);
}

/* PUBSUB CHANNELS [pattern] | NUMSUB [channel...] | NUMPAT | HELP, and the
 * sharded forms, which have no channels in kvd (no cluster). */
void cmd_pubsub(cmdctx *x)
{
    int shard = arg_is(x, 1, "shardchannels") || arg_is(x, 1, "shardnumsub");
    if (arg_is(x, 1, "help") && x->argc == 2) {
        pubsub_help(x);
    } else if ((arg_is(x, 1, "channels") || arg_is(x, 1, "shardchannels")) && x->argc <= 3) {
        if (shard)
            rp_array(x->out, 0);
        else
            reg_channels(x->env->reg, x->argc == 3 ? x->argv[2] : NULL, x->argc == 3 ? x->argvlen[2] : 0, x->out);
    } else if (arg_is(x, 1, "numsub") || arg_is(x, 1, "shardnumsub")) {
        rp_array(x->out, ((long long)x->argc - 2) * 2);
        for (size_t i = 2; i < x->argc; i++) {
            rp_bulk(x->out, x->argv[i], x->argvlen[i]);
            rp_int(x->out, shard ? 0 : reg_numsub(x->env->reg, x->argv[i], x->argvlen[i]));
        }
    } else if (arg_is(x, 1, "numpat") && x->argc == 2) {
        rp_int(x->out, reg_numpat(x->env->reg));
    } else if (arg_is(x, 1, "help") || arg_is(x, 1, "numpat")) { /* fixed arity (Redis's table) */
        rp_error(x->out, "ERR wrong number of arguments for 'pubsub|%s' command", arg_is(x, 1, "help") ? "help" : "numpat");
    } else if (arg_is(x, 1, "channels") || arg_is(x, 1, "shardchannels")) {
        rp_error(x->out, "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try PUBSUB HELP.",
                 (int)x->argvlen[1], (const char *)x->argv[1]);
    } else {
        rp_error(x->out, "ERR unknown subcommand '%.*s'. Try PUBSUB HELP.", (int)x->argvlen[1],
                 (const char *)x->argv[1]);
    }
}
