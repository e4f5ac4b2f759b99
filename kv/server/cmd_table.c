/*
 * cmd_table — the command table (one row per command name, in the order
 * COMMAND lists them), its lookup by name, and COMMAND itself.
 *
 * Guarantees: every command has one row and one handler; nothing else
 *   matches command names. Lookup is case-insensitive and never scans the
 *   table.
 * Never: changes after the lookup table is built (once, on first use).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "cmd.h"

#define W CMD_WRITE
#define R CMD_READ
#define L CMD_CONN
static const kvd_cmd table[] = {
    /* connection */
    {"ping", -1, R | CMD_NOAUTH | CMD_STALE | CMD_PUBSUB_OK, cmd_ping, 0, 0, 0},
    {"echo", 2, R, cmd_echo, 0, 0, 0},
    {"quit", -1, L | CMD_NOAUTH | CMD_NOMULTI | CMD_PUBSUB_OK, cmd_quit, 0, 0, 0},
    {"reset", 1, L | CMD_NOAUTH | CMD_NOMULTI | CMD_STALE | CMD_PUBSUB_OK, cmd_reset, 0, 0, 0},
    {"select", 2, L, cmd_select, 0, 0, 0},
    {"auth", -2, L | CMD_NOAUTH | CMD_NOMULTI, cmd_auth, 0, 0, 0},
    {"hello", -1, L | CMD_NOAUTH | CMD_NOMULTI, cmd_hello, 0, 0, 0},
    {"client", -2, L, cmd_client, 0, 0, 0},
    {"command", -1, L, cmd_command, 0, 0, 0},
    {"time", 1, R | CMD_STALE, cmd_time, 0, 0, 0},
    {"script", -2, L | CMD_STALE, cmd_script, 0, 0, 0},
    /* pub/sub */
    {"subscribe", -2, L | CMD_STALE | CMD_PUBSUB_OK, cmd_subscribe, 0, 0, 0},
    {"unsubscribe", -1, L | CMD_STALE | CMD_PUBSUB_OK, cmd_unsubscribe, 0, 0, 0},
    {"psubscribe", -2, L | CMD_STALE | CMD_PUBSUB_OK, cmd_psubscribe, 0, 0, 0},
    {"punsubscribe", -1, L | CMD_STALE | CMD_PUBSUB_OK, cmd_punsubscribe, 0, 0, 0},
    {"publish", 3, L | CMD_STALE, cmd_publish, 0, 0, 0},
    {"pubsub", -2, L | CMD_STALE, cmd_pubsub, 0, 0, 0},
    /* server */
    {"info", -1, R | CMD_STALE, cmd_info, 0, 0, 0},
    {"dbsize", 1, R, cmd_dbsize, 0, 0, 0},
    {"config", -2, L, cmd_config, 0, 0, 0},
    {"flushdb", -1, W, cmd_flushall, 0, 0, 0},
    {"flushall", -1, W, cmd_flushall, 0, 0, 0},
    {"shutdown", -1, L | CMD_NOMULTI, cmd_shutdown, 0, 0, 0},
    {"compact", 1, R | CMD_STALE, cmd_compact, 0, 0, 0},
    {"bgrewriteaof", 1, R, cmd_compact, 0, 0, 0},
    {"scrub", 1, R | CMD_STALE, cmd_scrub, 0, 0, 0},
    /* replication */
    {"replicaof", 3, L | CMD_STALE, cmd_replicaof, 0, 0, 0},
    {"slaveof", 3, L | CMD_STALE, cmd_replicaof, 0, 0, 0},
    {"replconf", -1, L | CMD_STALE | CMD_NOTXN, cmd_replconf, 0, 0, 0},
    {"psync", -3, L | CMD_STALE | CMD_NOTXN, cmd_psync, 0, 0, 0},
    {"wait", 3, L | CMD_NOTXN, cmd_wait, 0, 0, 0},
    {"waitaof", 4, L | CMD_NOTXN, cmd_waitaof, 0, 0, 0},
    {"role", 1, R | CMD_STALE, cmd_role, 0, 0, 0},
    {"failover", -1, L | CMD_NOTXN, cmd_failover, 0, 0, 0},
    /* strings */
    {"get", 2, R, cmd_get, 1, 1, 1},
    {"set", -3, W, cmd_set, 1, 1, 1},
    {"setnx", 3, W, cmd_setnx, 1, 1, 1},
    {"setex", 4, W, cmd_setex, 1, 1, 1},
    {"psetex", 4, W, cmd_psetex, 1, 1, 1},
    {"getdel", 2, W, cmd_getdel, 1, 1, 1},
    {"getex", -2, W, cmd_getex, 1, 1, 1},
    {"mget", -2, R, cmd_mget, 1, -1, 1},
    {"mset", -3, W, cmd_mset, 1, -1, 2},
    {"msetnx", -3, W, cmd_msetnx, 1, -1, 2},
    {"append", 3, W, cmd_append, 1, 1, 1},
    {"strlen", 2, R, cmd_strlen, 1, 1, 1},
    {"incr", 2, W, cmd_incr, 1, 1, 1},
    {"decr", 2, W, cmd_decr, 1, 1, 1},
    {"incrby", 3, W, cmd_incrby, 1, 1, 1},
    {"decrby", 3, W, cmd_decrby, 1, 1, 1},
    /* keyspace */
    {"del", -2, W, cmd_del, 1, -1, 1},
    {"unlink", -2, W, cmd_del, 1, -1, 1},
    {"exists", -2, R, cmd_exists, 1, -1, 1},
    {"type", 2, R, cmd_type, 1, 1, 1},
    {"rename", 3, W, cmd_rename, 1, 2, 1},
    {"keys", 2, R, cmd_keys, 0, 0, 0},
    {"scan", -2, R, cmd_scan, 0, 0, 0},
    {"expire", -3, W, cmd_expire, 1, 1, 1},
    {"pexpire", -3, W, cmd_pexpire, 1, 1, 1},
    {"expireat", -3, W, cmd_expireat, 1, 1, 1},
    {"pexpireat", -3, W, cmd_pexpireat, 1, 1, 1},
    {"ttl", 2, R, cmd_ttl, 1, 1, 1},
    {"pttl", 2, R, cmd_pttl, 1, 1, 1},
    {"persist", 2, W, cmd_persist, 1, 1, 1},
    /* transactions */
    {"multi", 1, L | CMD_NOMULTI, cmd_multi, 0, 0, 0},
    {"exec", 1, L | CMD_NOMULTI | CMD_RUNS_MULTI, cmd_exec, 0, 0, 0},
    {"discard", 1, L | CMD_NOMULTI, cmd_discard, 0, 0, 0},
    {"watch", -2, L | CMD_NOMULTI, cmd_watch, 1, -1, 1},
    {"unwatch", 1, L | CMD_NOMULTI, cmd_unwatch, 0, 0, 0},
};
#undef W
#undef R
#undef L

const kvd_cmd *kvd_cmd_table(size_t *n)
{
    *n = sizeof table / sizeof table[0];
    return table;
}

/*
 * Lookup: a static open-addressing table of indexes into `table`, built
 * once (pthread_once) on first use. The hash is FNV-1a over the name's
 * bytes folded to lower case, so a request's name is hashed as sent,
 * without a copy. Linear probing; the table is at least twice the
 * number of commands, so a probe sequence is short and always ends at
 * an empty slot.
 */
#define NCMDS (sizeof table / sizeof table[0])
#define LOOKUP_SLOTS 256 /* a power of two, over 2 * NCMDS */
#define MAX_NAME_LEN 16  /* longer than any command name */
_Static_assert(LOOKUP_SLOTS >= 2 * NCMDS, "lookup table too small for the commands");

static uint8_t lookup_slot[LOOKUP_SLOTS]; /* index + 1 into table; 0 empty */
static pthread_once_t lookup_once = PTHREAD_ONCE_INIT;

static uint32_t name_hash(const uint8_t *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)tolower(name[i]);
        h *= 16777619u;
    }
    return h;
}

static void lookup_build(void)
{
    for (size_t i = 0; i < NCMDS; i++) {
        size_t len = strlen(table[i].name);
        uint32_t h = name_hash((const uint8_t *)table[i].name, len) & (LOOKUP_SLOTS - 1);
        while (lookup_slot[h]) h = (h + 1) & (LOOKUP_SLOTS - 1);
        lookup_slot[h] = (uint8_t)(i + 1);
    }
}

const kvd_cmd *kvd_cmd_lookup(const uint8_t *name, size_t len)
{
    if (len == 0 || len > MAX_NAME_LEN) return NULL;
    pthread_once(&lookup_once, lookup_build);
    uint32_t h = name_hash(name, len) & (LOOKUP_SLOTS - 1);
    for (; lookup_slot[h]; h = (h + 1) & (LOOKUP_SLOTS - 1)) {
        const kvd_cmd *cmd = &table[lookup_slot[h] - 1];
        if (strlen(cmd->name) == len && strncasecmp(cmd->name, (const char *)name, len) == 0) return cmd;
    }
    return NULL;
}

static void command_info(sbuf *b, const kvd_cmd *cmd)
{
    rp_array(b, 6);
    rp_bulk_str(b, cmd->name);
    rp_int(b, cmd->arity);
    int nflags = 0;
    const char *flags[4];
    if (cmd->flags & CMD_WRITE) flags[nflags++] = "write";
    if (cmd->flags & CMD_READ) flags[nflags++] = "readonly";
    if (cmd->flags & CMD_NOAUTH) flags[nflags++] = "no_auth";
    if (cmd->flags & CMD_CONN) flags[nflags++] = "fast";
    rp_array(b, nflags);
    for (int i = 0; i < nflags; i++) rp_status(b, flags[i]);
    rp_int(b, cmd->first_key);
    rp_int(b, cmd->last_key);
    rp_int(b, cmd->key_step);
}

void cmd_command(cmdctx *x)
{
    size_t n;
    const kvd_cmd *t = kvd_cmd_table(&n);
    if (x->argc == 1) {
        rp_array(x->out, (long long)n);
        for (size_t i = 0; i < n; i++) command_info(x->out, &t[i]);
    } else if (arg_is(x, 1, "count") && x->argc == 2) {
        rp_int(x->out, (long long)n);
    } else if (arg_is(x, 1, "docs")) {
        rp_array(x->out, 0); /* no docs: clients fall back to their own */
    } else if (arg_is(x, 1, "info")) {
        rp_array(x->out, (long long)x->argc - 2);
        for (size_t i = 2; i < x->argc; i++) {
            const kvd_cmd *cmd = kvd_cmd_lookup(x->argv[i], x->argvlen[i]);
            if (cmd)
                command_info(x->out, cmd);
            else
                rp_null_array(x->out);
        }
    } else {
        rp_error(x->out, "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try COMMAND HELP.",
                 (int)x->argvlen[1], (const char *)x->argv[1]);
    }
}
