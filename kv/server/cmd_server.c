/*
 * cmd_server — the server commands: TIME, INFO, DBSIZE, CONFIG
 * (GET/SET/RESETSTAT/REWRITE), FLUSHDB/FLUSHALL, SHUTDOWN, COMPACT (and its alias
 * BGREWRITEAOF), SCRUB.
 *
 * Owns: nothing. What only the server shell can do (INFO's text, start a
 * compaction or a scrub, shut down, apply a changed setting) goes through
 * env->hooks (hooks.h).
 * Locking: CONFIG GET/SET hold env->cfg_mu while they read or change cfg.
 * CONFIG REWRITE holds rewrite_mu (below) across its copy of cfg and the
 * file's I/O, and cfg_mu only while it copies.
 */
#include <fnmatch.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cmd.h"
#include "kvd_log.h"

void cmd_time(cmdctx *x)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char a[32], b[32];
    snprintf(a, sizeof a, "%lld", (long long)ts.tv_sec);
    snprintf(b, sizeof b, "%ld", ts.tv_nsec / 1000);
    rp_array(x->out, 2);
    rp_bulk_str(x->out, a);
    rp_bulk_str(x->out, b);
}

void cmd_dbsize(cmdctx *x)
{
    kv_stats st;
    kv_get_stats(x->env->store, &st);
    rp_int(x->out, (long long)st.keys);
}

void cmd_flushall(cmdctx *x)
{
    if (x->argc > 2 || (x->argc == 2 && !arg_is(x, 1, "async") && !arg_is(x, 1, "sync"))) {
        rp_error(x->out, ERR_SYNTAX);
        return;
    }
    kv_status st = kv_txn_delete_all(x->txn, NULL);
    if (st != KV_OK)
        rp_error(x->out, "ERR FLUSHALL failed: %s", kv_strerror(st));
    else
        rp_ok(x->out);
}

void cmd_compact(cmdctx *x)
{
    int r = x->env->hooks.start_compaction(x->env->hooks.srv, x->argv[0][0] == 'b' || x->argv[0][0] == 'B' ? "BGREWRITEAOF"
                                                                                           : "COMPACT");
    if (r > 0)
        rp_status(x->out, "Background compaction started");
    else if (r == 0)
        rp_error(x->out, "ERR Background compaction already in progress");
    else
        rp_error(x->out, "ERR cannot start the background compaction");
}

/* SCRUB: verify every sealed segment and hint file now, in the
 * background (kv/engine/kv_scrub.h); INFO persistence shows the progress. */
void cmd_scrub(cmdctx *x)
{
    int r = x->env->hooks.start_scrub(x->env->hooks.srv);
    if (r > 0)
        rp_status(x->out, "Background scrub started");
    else if (r == 0)
        rp_error(x->out, "ERR Background scrub already in progress");
    else
        rp_error(x->out, "ERR cannot start the background scrub");
}

void cmd_info(cmdctx *x)
{
    sbuf body = {0};
    char section[64];
    if (x->argc > 1) snprintf(section, sizeof section, "%.*s", (int)x->argvlen[1], (const char *)x->argv[1]);
    x->env->hooks.info(x->env->hooks.srv, x->argc > 1 ? section : NULL, &body);
    rp_bulk(x->out, body.p ? body.p : "", body.len);
    sb_free(&body);
}

/* Replication settings CONFIG SET may change (with Redis's old names). */
static int config_mutable_repl(const char *name)
{
    static const char *const names[] = {"masterauth", "repl-backlog-size", "repl-backlog-ttl", "repl-timeout",
                                        "repl-ping-replica-period", "repl-ping-slave-period",
                                        "replica-serve-stale-data", "slave-serve-stale-data", "replica-priority",
                                        "slave-priority", "replica-announce-ip", "slave-announce-ip",
                                        "replica-announce-port", "slave-announce-port", "replica-announced", "sync-replicas", "sync-replicas-timeout",
                                        "replica-read-only", "slave-read-only"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i])) return 1;
    return 0;
}

/* Settings CONFIG SET may change while kvd runs. */
static int config_mutable(const char *name)
{
    return !strcasecmp(name, "loglevel") || !strcasecmp(name, "requirepass") || !strcasecmp(name, "maxclients") ||
           !strcasecmp(name, "hz") || !strcasecmp(name, "compact-dead-ratio") || !strcasecmp(name, "compact-min-dead") ||
           !strcasecmp(name, "scrub-interval") || !strcasecmp(name, "scrub-rate") ||
           !strcasecmp(name, "client-output-buffer-limit") || config_mutable_repl(name);
}

/* CONFIG GET pattern...: the matching settings, then the compatibility
 * values some clients ask for. */
static void config_get(cmdctx *x)
{
    kvd_env *env = x->env;
    sbuf body = {0};
    long long n = 0;
    /* Compatibility values some clients ask for (redis-benchmark). */
    static const char *const compat[][2] = {{"save", ""}, {"appendonly", "yes"}};
    for (size_t a = 2; a < x->argc; a++) {
        char pat[256];
        snprintf(pat, sizeof pat, "%.*s", (int)x->argvlen[a], (const char *)x->argv[a]);
        pthread_mutex_lock(&env->cfg_mu);
        for (size_t i = 0; kvd_config_names[i]; i++) {
            if (fnmatch(pat, kvd_config_names[i], FNM_CASEFOLD) != 0) continue;
            char val[4096];
            if (kvd_config_get(env->cfg, kvd_config_names[i], val, sizeof val) != 0) continue;
            rp_bulk_str(&body, kvd_config_names[i]);
            rp_bulk_str(&body, val);
            n++;
        }
        pthread_mutex_unlock(&env->cfg_mu);
        for (size_t i = 0; i < sizeof compat / sizeof compat[0]; i++)
            if (fnmatch(pat, compat[i][0], FNM_CASEFOLD) == 0) {
                rp_bulk_str(&body, compat[i][0]);
                rp_bulk_str(&body, compat[i][1]);
                n++;
            }
    }
    rp_array(x->out, n * 2);
    sb_add(x->out, body.p, body.len);
    sb_free(&body);
}

/* CONFIG SET name value [name value ...]: each is applied in turn; the
 * first refused one stops with its error. */
static void config_set(cmdctx *x)
{
    kvd_env *env = x->env;
    for (size_t a = 2; a + 1 < x->argc; a += 2) {
        char name[128], val[4096], err[512];
        snprintf(name, sizeof name, "%.*s", (int)x->argvlen[a], (const char *)x->argv[a]);
        snprintf(val, sizeof val, "%.*s", (int)x->argvlen[a + 1], (const char *)x->argv[a + 1]);
        char cur[4096];
        pthread_mutex_lock(&env->cfg_mu);
        int known = kvd_config_get(env->cfg, name, cur, sizeof cur) == 0;
        int r = -1;
        if (known && config_mutable(name)) {
            int old_max = env->cfg->maxclients;
            r = kvd_config_set(env->cfg, name, val, err, sizeof err);
            /* As Redis's updateMaxclients: no more clients than the
             * open-file limit holds beside the reserved descriptors. */
            int fits = env->hooks.maxclients_fit(env->hooks.srv, env->cfg->maxclients);
            if (r == 0 && !strcasecmp(name, "maxclients") && fits < env->cfg->maxclients) {
                __atomic_store_n(&env->cfg->maxclients, old_max, __ATOMIC_RELAXED);
                snprintf(err, sizeof err,
                         "The operating system is not able to handle the specified number of clients, try with %d",
                         fits);
                r = -1;
            }
        }
        pthread_mutex_unlock(&env->cfg_mu);
        if (!known) {
            rp_error(x->out, "ERR Unknown option or number of arguments for CONFIG SET - '%s'", name);
            return;
        }
        if (!config_mutable(name)) {
            rp_error(x->out, "ERR CONFIG SET failed (possibly related to argument '%s') - can't set "
                              "immutable config", name);
            return;
        }
        if (r != 0) {
            rp_error(x->out, "ERR CONFIG SET failed (possibly related to argument '%s') - %s", name, err);
            return;
        }
        env->hooks.config_changed(env->hooks.srv, name);
    }
    rp_ok(x->out);
}

static void config_resetstat(cmdctx *x)
{
    kvd_env *env = x->env;
    __atomic_store_n(&env->n.total_commands, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.hits, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.misses, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.total_connections, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.rejected_connections, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.expired_active, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.obuf_disconnections, 0, __ATOMIC_RELAXED);
    kv_stats kst;
    kv_get_stats(env->store, &kst);
    __atomic_store_n(&env->n.expired_access_base, kst.expired_on_access, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.last_cmds, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&env->n.ops_sec, 0, __ATOMIC_RELAXED);
    rp_ok(x->out);
}

/* One CONFIG REWRITE at a time, from its copy of cfg to the rename, so
 * the file always ends with the newest copy. Held across the file's I/O
 * (two fsyncs): only another CONFIG REWRITE waits for it. */
static pthread_mutex_t rewrite_mu = PTHREAD_MUTEX_INITIALIZER;

/* CONFIG REWRITE: the running settings into the config file kvd started
 * with (kvd_config_rewrite), with Redis's replies and log lines
 * (configRewriteCommand). Blocks this thread for the file's fsyncs. */
static void config_rewrite(cmdctx *x)
{
    kvd_env *env = x->env;
    kvd_config snap;
    pthread_mutex_lock(&rewrite_mu);
    pthread_mutex_lock(&env->cfg_mu);
    int r = kvd_config_copy(&snap, env->cfg);
    pthread_mutex_unlock(&env->cfg_mu);
    if (r < 0) {
        pthread_mutex_unlock(&rewrite_mu);
        rp_error(x->out, "ERR Rewriting config file: Cannot allocate memory"); /* strerror(ENOMEM) */
        return;
    }
    if (!snap.config_file) {
        pthread_mutex_unlock(&rewrite_mu);
        kvd_config_free(&snap);
        rp_error(x->out, "ERR The server is running without a config file");
        return;
    }
    int e = kvd_config_rewrite(&snap, snap.config_file);
    pthread_mutex_unlock(&rewrite_mu);
    if (e < 0) {
        kvd_log(KVD_LOG_WARNING, "CONFIG REWRITE failed: %s", strerror(-e));
        rp_error(x->out, "ERR Rewriting config file: %s", strerror(-e));
    } else {
        kvd_log(KVD_LOG_NOTICE, "CONFIG REWRITE executed with success.");
        rp_ok(x->out);
    }
    kvd_config_free(&snap);
}

void cmd_config(cmdctx *x)
{
    if (arg_is(x, 1, "get") && x->argc >= 3) {
        config_get(x);
    } else if (arg_is(x, 1, "set") && x->argc >= 4 && x->argc % 2 == 0) {
        config_set(x);
    } else if (arg_is(x, 1, "resetstat") && x->argc == 2) {
        config_resetstat(x);
    } else if (arg_is(x, 1, "rewrite") && x->argc == 2) {
        config_rewrite(x);
    } else {
        rp_error(x->out, "ERR unknown subcommand or wrong number of arguments for '%.*s'. Try CONFIG HELP.",
                 (int)x->argvlen[1], (const char *)x->argv[1]);
    }
}

void cmd_shutdown(cmdctx *x)
{
    kvd_log(KVD_LOG_WARNING, "user requested shutdown (client id=%" PRIu64 " addr=%s)", x->c->id, x->c->addr);
    x->env->hooks.request_shutdown(x->env->hooks.srv);
}
