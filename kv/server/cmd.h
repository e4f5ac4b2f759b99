/*
 * cmd — the command interface: the context every handler gets, the
 * table row, the flags that say where a command runs, the handlers of
 * each command file, and the helpers they share (cmd_common.c).
 *
 * Handlers write their reply into x->out and return nothing. Where one
 * runs is a property of its table row:
 *  - CMD_WRITE: on the engine's writer thread, inside a transaction
 *    (x->txn set, x->c NULL); writes go through db_put/db_del.
 *  - CMD_READ: on the client's I/O thread (x->txn NULL), or inside EXEC
 *    on the writer thread (x->txn set, x->c NULL); reads go through the
 *    db_* helpers, which read through the transaction when there is one.
 *  - CMD_CONN: on the client's I/O thread with the connection (x->c set).
 *    Inside MULTI it is queued and, at EXEC, runs on the I/O thread after
 *    the transaction's reads and writes are done, its reply in its place
 *    in EXEC's array (multi.c); CMD_NOTXN ones are refused in MULTI.
 * Replies and error texts follow Redis 7 (src/t_string.c, src/db.c,
 * src/expire.c, src/server.c, src/networking.c, src/multi.c).
 *
 * Never: a command file includes the server shell's headers
 *   (server_state.h, worker.h, conn.h); what it needs of the server it
 *   finds in x->env (hooks.h).
 */
#ifndef KVD_CMD_H
#define KVD_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "hooks.h"
#include "kv_store.h"
#include "reply.h"

/* Command flags: where a command runs and what MULTI does with it. */
enum {
    CMD_WRITE = 1 << 0,      /* may write: runs as a transaction on the writer thread */
    CMD_READ = 1 << 1,       /* reads the store on the I/O thread (inside EXEC: on the writer) */
    CMD_NOAUTH = 1 << 2,     /* allowed before AUTH */
    CMD_CONN = 1 << 3,       /* needs the connection (x->c): runs on the I/O thread at once;
                                inside MULTI, queued and run after the transaction (above) */
    CMD_NOMULTI = 1 << 4,    /* runs at once even inside MULTI (EXEC, DISCARD, ...) */
    CMD_RUNS_MULTI = 1 << 5, /* sends the queued MULTI to the writer thread (EXEC) */
    CMD_STALE = 1 << 6,      /* a replica runs it even while its link is down and
                                replica-serve-stale-data is no (INFO, REPLICAOF, ...) */
    CMD_NOTXN = 1 << 7,      /* refused inside MULTI (WAIT, PSYNC, ...) */
    CMD_PUBSUB_OK = 1 << 8,  /* allowed in subscriber mode (SUBSCRIBE, PING, QUIT, ...) */
};

/* What a command handler sees. */
typedef struct cmdctx {
    kvd_env *env;
    kvd_client *c; /* NULL on the writer thread: client state is off limits there */
    size_t argc;   /* arguments, the command's name included */
    const uint8_t *const *argv;
    const size_t *argvlen; /* bytes */
    kv_txn *txn;           /* non-NULL on the writer thread */
    sbuf *out;
} cmdctx;

typedef struct kvd_cmd {
    const char *name; /* lower case */
    int arity;        /* Redis style: N exact, -N at least N (name included) */
    int flags;        /* CMD_* */
    void (*fn)(cmdctx *x);
    int first_key, last_key, key_step; /* for COMMAND */
} kvd_cmd;

/* ---- cmd_table.c ---- */

/* Looks a command up by name (case-insensitive; name need not be
 * NUL-terminated). NULL if unknown. Any thread. */
const kvd_cmd *kvd_cmd_lookup(const uint8_t *name, size_t len);
/* The table, in COMMAND's order, and its length in *n. */
const kvd_cmd *kvd_cmd_table(size_t *n);
void cmd_command(cmdctx *x);

/* ---- cmd_conn.c ---- */

void cmd_ping(cmdctx *x);
void cmd_echo(cmdctx *x);
void cmd_quit(cmdctx *x);
void cmd_select(cmdctx *x);
void cmd_auth(cmdctx *x);
void cmd_hello(cmdctx *x);
void cmd_client(cmdctx *x);
void cmd_reset(cmdctx *x);
void cmd_script(cmdctx *x);
/* 1 if requirepass is set (AUTH is needed), else 0. Takes cfg_mu. */
int kvd_password_set(kvd_env *env);

/* ---- cmd_client.c ---- */

void cmd_client(cmdctx *x);
/* 1 if the n bytes at p may be a client name (printable ASCII, no
 * space), as Redis's validateClientName; else 0. */
int client_name_valid(const uint8_t *p, size_t n);

/* ---- cmd_pubsub.c ---- */

void cmd_subscribe(cmdctx *x);
void cmd_unsubscribe(cmdctx *x);
void cmd_psubscribe(cmdctx *x);
void cmd_punsubscribe(cmdctx *x);
void cmd_publish(cmdctx *x);
void cmd_pubsub(cmdctx *x);

/* ---- cmd_server.c ---- */

void cmd_time(cmdctx *x);
void cmd_info(cmdctx *x);
void cmd_dbsize(cmdctx *x);
void cmd_config(cmdctx *x);
void cmd_flushall(cmdctx *x);
void cmd_shutdown(cmdctx *x);
void cmd_compact(cmdctx *x);
void cmd_scrub(cmdctx *x);

/* ---- cmd_string.c ---- */

void cmd_get(cmdctx *x);
void cmd_set(cmdctx *x);
void cmd_setnx(cmdctx *x);
void cmd_setex(cmdctx *x);
void cmd_psetex(cmdctx *x);
void cmd_getdel(cmdctx *x);
void cmd_getex(cmdctx *x);
void cmd_mget(cmdctx *x);
void cmd_mset(cmdctx *x);
void cmd_msetnx(cmdctx *x);
void cmd_append(cmdctx *x);
void cmd_strlen(cmdctx *x);
void cmd_incr(cmdctx *x);
void cmd_decr(cmdctx *x);
void cmd_incrby(cmdctx *x);
void cmd_decrby(cmdctx *x);

/* ---- cmd_keys.c ---- */

void cmd_del(cmdctx *x);
void cmd_exists(cmdctx *x);
void cmd_type(cmdctx *x);
void cmd_rename(cmdctx *x);
void cmd_keys(cmdctx *x);
void cmd_scan(cmdctx *x);
void cmd_expire(cmdctx *x);
void cmd_pexpire(cmdctx *x);
void cmd_expireat(cmdctx *x);
void cmd_pexpireat(cmdctx *x);
void cmd_ttl(cmdctx *x);
void cmd_pttl(cmdctx *x);
void cmd_persist(cmdctx *x);

/* ---- cmd_repl.c ---- */
void cmd_replicaof(cmdctx *x);
void cmd_replconf(cmdctx *x);
void cmd_psync(cmdctx *x);
void cmd_wait(cmdctx *x);
void cmd_waitaof(cmdctx *x);
void cmd_role(cmdctx *x);
void cmd_failover(cmdctx *x);
/* Keeps the replicaof setting on the live role (host NULL: primary), as
 * Redis's CONFIG GET replicaof shows it, so CONFIG REWRITE keeps a role
 * across a restart. Takes cfg_mu. */
void kvd_note_role(kvd_env *env, const char *host, int port);
/* ---- multi.c ---- */

void cmd_multi(cmdctx *x);
void cmd_exec(cmdctx *x);
void cmd_discard(cmdctx *x);
void cmd_watch(cmdctx *x);
void cmd_unwatch(cmdctx *x);

/* ---- cmd_common.c: helpers the command files share ---- */

#define ERR_INT "ERR value is not an integer or out of range"
#define ERR_SYNTAX "ERR syntax error"

/* Argument i as the (pointer, length) pair the db_* helpers take. */
#define KEY(i) x->argv[i], x->argvlen[i]

/* Strict integer parsing in the manner of Redis's string2ll: optional
 * '-', no leading zeros, no spaces or '+', within long long. Returns 1
 * and *out, or 0. */
int str2ll(const uint8_t *p, size_t n, long long *out);
/* Argument i as an integer; on failure replies ERR_INT and returns 0. */
int arg_ll(cmdctx *x, size_t i, long long *v);
/* 1 if argument i is `word` (ASCII, case-insensitive). */
int arg_is(cmdctx *x, size_t i, const char *word);

/* A HELP reply (Redis's addReplyHelp): an array of the n lines as status
 * replies. */
void rp_help(sbuf *b, const char *const *lines, size_t n);
/* The error reply for a failed read (IOERR; corruption names kvfsck). */
void rp_io_error(sbuf *b, kv_status st);
/* The error reply for a put refused inside a transaction (size limits,
 * memory). */
void rp_put_error(sbuf *b, kv_status st);

/* Store access, through x->txn when there is one (the writer thread). */
kv_status db_get(cmdctx *x, const uint8_t *k, size_t kl, kv_value *v);
kv_status db_info(cmdctx *x, const uint8_t *k, size_t kl, uint64_t *expire, uint64_t *seq);
/* The store's clock, ms since the epoch. */
uint64_t db_now(cmdctx *x);
/* Writes: CMD_WRITE handlers only (x->txn must be set). */
kv_status db_put(cmdctx *x, const uint8_t *k, size_t kl, const void *v, size_t vl, uint64_t expire, uint32_t flags);
kv_status db_del(cmdctx *x, const uint8_t *k, size_t kl);
/* Counts a keyspace hit (1) or miss (0) for INFO. */
void count_hit(cmdctx *x, int hit);

/* Expire options: what SET, GETEX, SETEX and EXPIRE* parse. */
enum { EXP_NONE = 0, EXP_EX, EXP_PX, EXP_EXAT, EXP_PXAT, EXP_KEEPTTL, EXP_PERSIST };
/* Turns an expire option and its number into an absolute time in ms.
 * Returns 1, or 0 with the error already replied. */
int expire_to_abs(cmdctx *x, int kind, long long v, const char *cmdname, uint64_t *abs_ms);
/* Argument i names a time-valued expire option (EX, PX, EXAT, PXAT):
 * returns its EXP_* kind, or EXP_NONE. */
int expire_option(cmdctx *x, size_t i);

#endif
