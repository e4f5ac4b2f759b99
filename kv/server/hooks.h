/*
 * hooks — what command code may see of the server: the store, the
 * configuration, the server-wide counters, and a table of function
 * pointers (kvd_hooks) for the few things only the server shell can do
 * (start a compaction or a scrub, write INFO, shut down, apply a changed
 * setting). The server fills a kvd_env in at start and hands a pointer to
 * it to every command through its context (cmd.h).
 *
 * Why hooks: the server shell starts threads, owns the listener and the
 * I/O threads, and runs the commands; if commands called back into it,
 * the two would depend on each other. With the hooks, command files only
 * include headers below them and the shell is the only file that knows
 * both sides.
 *
 * The include graph inside kv/server, a DAG (an arrow: "includes";
 * kvd_main.c and the tests use only kvd_server.h, kvd_config.h,
 * kvd_log.h, kvd_limits.h and resp.h):
 *
 *   server.c listener.c bg.c info.c -> server_state.h
 *   server_state.h -> kvd_server.h, worker.h, hooks.h
 *   worker.c -> worker.h -> conn.h
 *   conn.c -> conn.h, gate.h, multi.h, registry.h, cmd.h;  gate.c -> gate.h -> client.h, cmd.h
 *   conn.h -> jobs.h, client.h, hooks.h
 *   multi.c -> multi.h, jobs.h;  jobs.c -> jobs.h
 *   multi.h -> jobs.h;  jobs.h -> cmd.h, client.h
 *   cmd_conn.c -> multi.h, registry.h;  cmd_client.c cmd_pubsub.c -> registry.h
 *   registry.c -> registry.h, jobs.h, glob.h;  registry.h -> client.h, reply.h
 *   cmd_table.c cmd_conn.c cmd_client.c cmd_pubsub.c cmd_string.c cmd_keys.c
 *     cmd_server.c cmd_common.c -> cmd.h -> client.h -> hooks.h
 *   hooks.h -> reply.h, resp.h, kvd_config.h (-> kvd_log.h)
 *   leaves: reply.h, resp.h, clock.h, glob.h, kvd_log.h, kvd_limits.h
 *
 * So command files sit below the connection code and the server shell,
 * and no file below server_state.h sees the kvd_server struct.
 *
 * Locking: the counters are read and written with __atomic builtins by
 * any thread. cfg strings are read and changed under cfg_mu; cfg integers
 * CONFIG SET may change are read and written atomically. The hooks are
 * set before the first client connects and never change.
 */
#ifndef KVD_HOOKS_H
#define KVD_HOOKS_H

#include <pthread.h>
#include <stdint.h>

#include "kv_store.h"
#include "kvd_config.h"
#include "reply.h"
#include "resp.h"

struct kvd_server; /* opaque here: only the hooks' implementations look inside */

/* Server-wide counters (INFO stats and clients). All atomic. */
typedef struct kvd_counters {
    uint64_t next_client_id;
    int64_t connected_clients;
    uint64_t total_connections, rejected_connections, total_commands, hits, misses, expired_active;
    uint64_t expired_access_base; /* the store's expired_on_access at the last CONFIG RESETSTAT */
    uint64_t ops_sec, last_cmds;  /* instantaneous_ops_per_sec, computed by the cron (atomics:
                                     CONFIG RESETSTAT zeroes them on an I/O thread) */
    uint64_t obuf_disconnections; /* clients closed for output-buffer limits */
} kvd_counters;

/* Counter updates and reads (relaxed: they are statistics). */
static inline uint64_t counter_inc(uint64_t *p)
{
    return __atomic_add_fetch(p, 1, __ATOMIC_RELAXED);
}

static inline uint64_t counter_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* What commands ask of the server shell. Each gets hooks.srv back. */
typedef struct kvd_hooks {
    struct kvd_server *srv;
    /* Makes kvd_server_run return (drain, fsync, close) soon; returns at
     * once. Any thread. */
    void (*request_shutdown)(struct kvd_server *srv);
    /* Starts a background compaction; why ("COMPACT", "BGREWRITEAOF") is
     * logged. Returns 1 if started, 0 if one is already running, -1 if
     * the thread could not be started. */
    int (*start_compaction)(struct kvd_server *srv, const char *why);
    /* Starts a background scrub pass now (kv/engine/kv_scrub.h). Returns 1
     * if started, 0 if one is already running, -1 if there is no scrub
     * thread. */
    int (*start_scrub)(struct kvd_server *srv);
    /* Appends the INFO text of `section` (NULL: the default sections) to
     * out, without RESP framing. */
    void (*info)(struct kvd_server *srv, const char *section, sbuf *out);
    /* The largest maxclients <= wanted the open-file limit allows
     * (kvd_nofile_fit with the server's limit and reserved descriptors). */
    int (*maxclients_fit)(struct kvd_server *srv, int wanted);
    /* CONFIG SET changed setting `name` (as kvd_config_set spells it):
     * the server applies what is not read from cfg each time (log level,
     * scrub schedule). Called without cfg_mu held. */
    void (*config_changed)(struct kvd_server *srv, const char *name);
} kvd_hooks;

struct kvrepl;        /* kv/repl/repl.h */
struct kvd_registry;  /* registry.h */

/* The server as commands and connections see it. */
typedef struct kvd_env {
    kv_store *store;
    struct kvrepl *repl;    /* replication (kv/repl/repl.h): set before the first client */
    struct kvd_registry *reg; /* every client, pub/sub (registry.h): set before the first client */
    char run_id[41];        /* 40 hex characters, new at every start (INFO server) */
    kvd_config *cfg;
    pthread_mutex_t cfg_mu; /* guards cfg's strings (and CONFIG SET/GET as a whole) */
    resp_limits limits;     /* request parser limits, from cfg at start */
    kvd_counters n;
    kvd_hooks hooks;
} kvd_env;

#endif
