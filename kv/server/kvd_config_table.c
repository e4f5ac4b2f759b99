/*
 * kvd_config_table — the settings table and the defaults (kvd_config.h;
 * how the kvd_config files divide the work is in kvd_config_int.h).
 *
 * Every setting is one row of `kvd_settings` below: its config-file /
 * CONFIG name, its command-line flag, how its value is parsed and checked,
 * and its --help line. kvd_config_set, kvd_config_get, the file reader,
 * the flag parser, the usage text, CONFIG REWRITE and the example config
 * file all read that one table, so a setting cannot be settable in one
 * place and missing from another.
 *
 * This file holds data and the two functions that fill and free a
 * kvd_config; it calls nothing of the other kvd_config files.
 */
#define _GNU_SOURCE
#include "kvd_config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_record.h"
#include "kv_scrub.h"
#include "kvd_config_int.h"

#define KVD_MAX_IO_THREADS 64
#define KVD_MAX_SEGMENT_SIZE KV_MAX_SEGMENT_MAX
#define KVD_MIN_BUFFER_LIMIT (1ull << 20) /* Redis's minimum for both limits */
#define KVD_MIN_SCRUB_RATE (64ull << 10)

#define F(field) offsetof(kvd_config, field)

const kvd_setting kvd_settings[] = {
    {"dir", NULL, T_STRING, F(dir), 0, 0, 0, "DIR", "data directory (segments and LOCK file); created if absent"},
    {"bind", NULL, T_STRING, F(bind), 0, 0, 0, "ADDR", "IP address to listen on"},
    {"port", NULL, T_INT, F(port), 0, 65535, 0, "N", "TCP port, 0..65535; 0 picks a free port"},
    {"appendfsync", "fsync", T_FSYNC, F(fsync), 0, 0, 0, "POLICY",
     "always (reply after fdatasync), everysec (sync once a second) or no"},
    {"requirepass", NULL, T_OPT_STRING, F(requirepass), 0, 0, 0, "PASSWORD", "password clients must AUTH with"},
    {"pidfile", NULL, T_OPT_STRING, F(pidfile), 0, 0, 0, "FILE", "file to write the process id to"},
    {"logfile", NULL, T_OPT_STRING, F(logfile), 0, 0, 0, "FILE", "file to append the log to"},
    {"loglevel", "log-level", T_LOGLEVEL, F(log_level), 0, 0, 0, "LEVEL", "least severe level logged: debug, verbose, notice or warning"},
    {"maxclients", NULL, T_INT, F(maxclients), 1, 1000000, 0, "N", "most client connections at once, 1..1000000"},
    {"recovery", NULL, T_RECOVERY, F(recovery), 0, 0, 0, "MODE",
     "on a damaged log: tolerate-tail, absolute, point-in-time, skip-corrupt"},
    {"segment-size", NULL, T_SIZE, F(segment_size), KV_MIN_SEGMENT_MAX, KVD_MAX_SEGMENT_SIZE, 0, "BYTES",
     "a segment is sealed once it reaches this size, 4kb..2gb"},
    {"io-threads", NULL, T_INT, F(io_threads), 1, KVD_MAX_IO_THREADS, 0, "N", "threads serving clients, 1..64"},
    {"proto-max-bulk-len", NULL, T_SIZE, F(max_bulk_len), KVD_MIN_BUFFER_LIMIT, KV_MAX_VALUE_LEN, 0, "BYTES",
     "longest bulk string (key or value) a client may send, 1mb..512mb"},
    {"client-query-buffer-limit", NULL, T_SIZE, F(max_query_buffer), KVD_MIN_BUFFER_LIMIT, INT64_MAX, 0, "BYTES",
     "most unparsed request bytes buffered per client, at least 1mb"},
    {"client-output-buffer-limit", NULL, T_OBUF, F(obuf_limits), 0, 0, 0, "LIMITS",
     "\"CLASS HARD SOFT SECONDS\": close a client whose unread replies pass them"},
    {"hz", NULL, T_INT, F(expire_hz), 1, 500, 0, "N", "active-expiry cycles per second, 1..500"},
    {"compact-dead-ratio", NULL, T_INT, F(compact_dead_pct), 0, 100, 0, "PERCENT",
     "auto-compact when dead bytes pass this % of the log (0: never)"},
    {"compact-min-dead", NULL, T_SIZE, F(compact_min_dead), 0, INT64_MAX, 0, "BYTES",
     "...and there are at least this many dead bytes"},
    {"hint-files", NULL, T_BOOL, F(hint_files), 0, 1, 0, "yes|no",
     "load sealed segments from hint files at start and write them (yes)"},
    {"preallocate", NULL, T_BOOL, F(preallocate), 0, 1, 0, "yes|no",
     "zero-fill segments 1 MiB ahead of the log: cheaper fdatasyncs (yes)"},
    {"scrub-interval", NULL, T_INT, F(scrub_interval), 0, INT32_MAX, 0, "SECONDS",
     "check every sealed segment after start and this often (0: on SCRUB only)"},
    {"scrub-rate", NULL, T_SIZE, F(scrub_rate), KVD_MIN_SCRUB_RATE, INT64_MAX, 0, "BYTES",
     "most bytes a second the scrub reads, at least 64kb"},
    {"replicaof", NULL, T_REPLICAOF, F(replicaof), 0, 0, 0, "\"HOST PORT\"",
     "start as a replica of this primary (REPLICAOF); \"no one\": as a primary"},
    {"masterauth", NULL, T_OPT_STRING, F(masterauth), 0, 0, 0, "PASSWORD", "password to AUTH with at the primary"},
    {"repl-backlog-size", NULL, T_SIZE, F(repl_backlog_size), 16 << 10, INT64_MAX, 0, "BYTES",
     "newest log bytes compaction leaves for partial resyncs, at least 16kb"},
    {"repl-backlog-ttl", NULL, T_INT, F(repl_backlog_ttl), 0, INT32_MAX, 0, "SECONDS",
     "keep them this long after the last replica left (0: always)"},
    {"repl-timeout", NULL, T_INT, F(repl_timeout), 1, INT32_MAX, 0, "SECONDS",
     "drop a replication link silent for this long"},
    {"repl-ping-replica-period", NULL, T_INT, F(repl_ping_period), 1, INT32_MAX, 0, "SECONDS",
     "keepalive to replicas this often"},
    {"replica-serve-stale-data", NULL, T_BOOL, F(replica_serve_stale), 0, 1, 0, "yes|no",
     "a replica serves reads while its link is down (yes)"},
    {"replica-priority", NULL, T_INT, F(replica_priority), 0, INT32_MAX, 0, "N",
     "Sentinel promotes lower first; 0: never"},
    {"replica-announce-ip", NULL, T_OPT_STRING, F(replica_announce_ip), 0, 0, 0, "ADDR",
     "address a replica gives its primary as its own (REPLCONF ip-address)"},
    {"replica-announce-port", NULL, T_INT, F(replica_announce_port), 0, 65535, 0, "N",
     "port a replica gives its primary as its own, 0..65535 (0: its port)"},
    {"replica-announced", NULL, T_BOOL, F(replica_announced), 0, 1, 0, "yes|no",
     "Sentinel may list this replica (INFO replica_announced) (yes)"},
    {"sync-replicas", NULL, T_INT, F(sync_replicas), 0, 1000, 0, "N",
     "acknowledge a write once N replicas fsynced it (0: asynchronous)"},
    {"sync-replicas-timeout", NULL, T_INT, F(sync_replicas_timeout), 1, INT32_MAX, 0, "MS",
     "...or fail it with NOREPLICAS after this long (it stays written)"},
    /* Accepted with "yes" only; help is the reason given for any other value. */
    {"replica-read-only", NULL, T_APPENDONLY, 0, 0, 0, 1, NULL,
     "a kvd replica's log is its primary's, so replicas are always read-only"},
    {"appendonly", NULL, T_APPENDONLY, 0, 0, 0, 1, NULL, "kvd always keeps its append-only log"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL},
};

#undef F

/* Other names for a setting, in the file, CONFIG and as flags. */
const kvd_setting_alias kvd_setting_aliases[] = {{"fsync", "appendfsync"},
               {"log-level", "loglevel"},
               {"slaveof", "replicaof"},
               {"repl-ping-slave-period", "repl-ping-replica-period"},
               {"slave-serve-stale-data", "replica-serve-stale-data"},
               {"slave-priority", "replica-priority"},
               {"slave-read-only", "replica-read-only"},
               {"slave-announce-ip", "replica-announce-ip"},
               {"slave-announce-port", "replica-announce-port"},
               {NULL, NULL}};

/* In `kvd_settings` order, hidden rows left out. */
const char *const kvd_config_names[] = {
    "dir",          "bind",       "port",
    "appendfsync",  "requirepass", "pidfile",
    "logfile",      "loglevel",   "maxclients",
    "recovery",     "segment-size", "io-threads",
    "proto-max-bulk-len", "client-query-buffer-limit", "client-output-buffer-limit", "hz",
    "compact-dead-ratio", "compact-min-dead", "hint-files",
    "preallocate", "scrub-interval", "scrub-rate",
    "replicaof", "masterauth", "repl-backlog-size", "repl-backlog-ttl",
    "repl-timeout", "repl-ping-replica-period", "replica-serve-stale-data", "replica-priority",
    "replica-announce-ip", "replica-announce-port", "replica-announced", "sync-replicas", "sync-replicas-timeout",
    NULL,
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) {
        /* kvd_config_init cannot fail by contract; a process that cannot
         * copy "./data" at start-up cannot serve either. */
        static const char msg[] = "kvd: out of memory\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)ignored;
        abort();
    }
    return d;
}

void kvd_config_init(kvd_config *c)
{
    memset(c, 0, sizeof *c);
    c->dir = xstrdup("./data");
    c->bind = xstrdup("127.0.0.1");
    c->port = 6379;
    c->fsync = KV_FSYNC_ALWAYS;
    c->log_level = KVD_LOG_NOTICE;
    c->maxclients = 10000;
    c->recovery = KVR_TOLERATE_TAIL;
    c->segment_size = KV_DEFAULT_SEGMENT_MAX;
    /* One I/O thread per online CPU but one: the writer thread needs a
     * CPU of its own under a write load (it encodes, syncs and publishes
     * every group). On 2 CPUs, 1 I/O thread serves 11% more SETs and
     * GETs per second than 2 do (docs/performance.md). */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long threads = cpus - 1;
    if (threads < 1) threads = 1;
    if (threads > KVD_MAX_IO_THREADS) threads = KVD_MAX_IO_THREADS; /* so CONFIG GET's value can be SET back */
    c->io_threads = (int)threads;
    c->max_bulk_len = 512ull << 20;
    c->max_query_buffer = 1ull << 30;
    c->max_args = 1048576;
    c->expire_hz = 10;
    c->compact_dead_pct = 50;
    c->compact_min_dead = 64ull << 20;
    c->hint_files = 1;
    c->preallocate = 1;
    c->scrub_interval = KV_SCRUB_DEFAULT_INTERVAL_S;
    c->scrub_rate = KV_SCRUB_DEFAULT_RATE;
    /* Redis's default for normal clients is no limit at all (0 0 0). The
     * hard limit must stay above the largest reply one command can make
     * (GET of a proto-max-bulk-len value, 512 MiB), or a stored value
     * could not be read back; 256 MiB unread for a minute is a client
     * that is not reading. Pipelined replies never pile up this high:
     * kvd stops reading a client whose unsent replies pass 1 MiB. The
     * other two classes have Redis's defaults. */
    c->obuf_limits[KVD_OBUF_NORMAL] = (kvd_obuf_limit){1ull << 30, 256ull << 20, 60};
    c->obuf_limits[KVD_OBUF_REPLICA] = (kvd_obuf_limit){256ull << 20, 64ull << 20, 60};
    c->obuf_limits[KVD_OBUF_PUBSUB] = (kvd_obuf_limit){32ull << 20, 8ull << 20, 60};
    c->repl_backlog_size = 64ull << 20;
    c->repl_backlog_ttl = 3600;
    c->repl_timeout = 60;
    c->repl_ping_period = 10;
    c->replica_serve_stale = 1;
    c->replica_priority = 100;
    c->replica_announced = 1;
    c->sync_replicas = 0;
    c->sync_replicas_timeout = 10000;
}

void kvd_config_free(kvd_config *c)
{
    free(c->dir);
    free(c->bind);
    free(c->requirepass);
    free(c->pidfile);
    free(c->logfile);
    free(c->config_file);
    free(c->replicaof);
    free(c->masterauth);
    free(c->replica_announce_ip);
    c->dir = c->bind = c->requirepass = c->pidfile = c->logfile = c->config_file = NULL;
    c->replicaof = c->masterauth = c->replica_announce_ip = NULL;
}

/* A copy of *s in a new string, NULL staying NULL. Returns 0, or -1 when
 * out of memory. */
static int dup_str(char **dst, const char *s)
{
    *dst = s ? strdup(s) : NULL;
    return s && !*dst ? -1 : 0;
}

int kvd_config_copy(kvd_config *dst, const kvd_config *src)
{
    memcpy(dst, src, sizeof *dst);
    char **strs[] = {&dst->dir,        &dst->bind,       &dst->requirepass,         &dst->pidfile,
                     &dst->logfile,    &dst->config_file, &dst->replicaof,          &dst->masterauth,
                     &dst->replica_announce_ip};
    int failed = 0;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (dup_str(strs[i], *strs[i]) < 0) failed = 1;
    if (failed) kvd_config_free(dst); /* frees the copies made; the others are NULL */
    return failed ? -1 : 0;
}
