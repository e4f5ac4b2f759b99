/*
 * kvd_config — see kvd_config.h; how its files divide the work is in
 * kvd_config_int.h.
 *
 * Every setting is one row of `kvd_settings` below: its config-file /
 * CONFIG name, its command-line flag, how its value is parsed and checked,
 * and its --help line. kvd_config_set, kvd_config_get, the file reader,
 * the flag parser and the usage text all read that one table, so a
 * setting cannot be settable in one place and missing from another.
 *
 * kvd_setting_apply stores every number (int, size, enum, yes/no) with a
 * relaxed __atomic store: CONFIG SET runs it on an I/O thread under
 * cfg_mu while the listener, the cron and other I/O threads read those
 * settings without the mutex (kvd_config.h, Locking). Strings get a
 * plain store: they are only read under cfg_mu.
 *
 * Sizes are parsed by kvd_parse_size, which takes k/m/g as powers of 1024
 * like kb/mb/gb (the header's contract; redis.conf's memtoll reads "1k" as
 * 1000 bytes).
 */
#define _GNU_SOURCE
#include "kvd_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
static const struct {
    const char *alias, *name;
} aliases[] = {{"fsync", "appendfsync"},
               {"log-level", "loglevel"},
               {"slaveof", "replicaof"},
               {"repl-ping-slave-period", "repl-ping-replica-period"},
               {"slave-serve-stale-data", "replica-serve-stale-data"},
               {"slave-priority", "replica-priority"},
               {"slave-read-only", "replica-read-only"}};

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
    "sync-replicas", "sync-replicas-timeout",
    NULL,
};

void kvd_config_errf(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

const kvd_setting *kvd_setting_find(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strlen(aliases[i].alias) == len && !strncasecmp(aliases[i].alias, name, len)) {
            name = aliases[i].name;
            len = strlen(name);
            break;
        }
    for (const kvd_setting *s = kvd_settings; s->name; s++)
        if (strlen(s->name) == len && !strncasecmp(s->name, name, len)) return s;
    return NULL;
}

static const kvd_setting *find_setting(const char *name)
{
    return kvd_setting_find(name, strlen(name));
}

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
    c->dir = c->bind = c->requirepass = c->pidfile = c->logfile = c->config_file = NULL;
    c->replicaof = c->masterauth = NULL;
}

/* ---- values ---- */

int kvd_parse_host_port(const char *value, char *host, size_t cap, int *port)
{
    const char *sp = strchr(value, ' ');
    if (!sp || sp == value || (size_t)(sp - value) >= cap) return -1;
    memcpy(host, value, (size_t)(sp - value));
    host[sp - value] = 0;
    char *end;
    errno = 0;
    long p = strtol(sp + 1, &end, 10);
    if (errno || end == sp + 1 || *end || p < 1 || p > 65535 || sp[1] == '-' || sp[1] == '+') return -1;
    *port = (int)p;
    return 0;
}

/* Decimal digits only: no sign, no spaces, no trailing bytes, no overflow.
 * Returns 0 and *out, or -1. */
static int parse_u64(const char *s, const char **end, uint64_t *out)
{
    const char *p = s;
    uint64_t v = 0;
    if (!isdigit((unsigned char)*p)) return -1;
    while (isdigit((unsigned char)*p)) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
        p++;
    }
    *end = p;
    *out = v;
    return 0;
}

int kvd_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 1},          {"b", 1},          {"k", 1ull << 10}, {"kb", 1ull << 10},
                 {"m", 1ull << 20}, {"mb", 1ull << 20}, {"g", 1ull << 30}, {"gb", 1ull << 30}};
    const char *rest;
    uint64_t v;
    if (!s || parse_u64(s, &rest, &v) < 0) return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcasecmp(rest, units[i].suffix)) {
            if (v > UINT64_MAX / units[i].mul) return -1;
            *out = v * units[i].mul;
            return 0;
        }
    return -1;
}

/* Redis's names of the client-output-buffer-limit classes; CONFIG GET
 * writes the first (Redis 7 writes "slave"). */
static const struct {
    const char *name;
    kvd_obuf_class cls;
} obuf_class_names[] = {
    {"normal", KVD_OBUF_NORMAL}, {"slave", KVD_OBUF_REPLICA}, {"replica", KVD_OBUF_REPLICA}, {"pubsub", KVD_OBUF_PUBSUB}};

int kvd_parse_obuf_limits(const char *value, kvd_obuf_limit limits[KVD_OBUF_CLASSES], char *err, size_t errcap)
{
    char buf[1024];
    char *words[64];
    size_t n = 0;
    if (strlen(value) >= sizeof buf) {
        kvd_config_errf(err, errcap, "Wrong number of arguments in buffer limit configuration.");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", value);
    for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (n == sizeof words / sizeof words[0]) {
            kvd_config_errf(err, errcap, "Wrong number of arguments in buffer limit configuration.");
            return -1;
        }
        words[n++] = w;
    }
    /* Redis accepts an empty value (no groups) and changes nothing. */
    if (n % 4) {
        kvd_config_errf(err, errcap, "Wrong number of arguments in buffer limit configuration.");
        return -1;
    }
    kvd_obuf_limit next[KVD_OBUF_CLASSES];
    memcpy(next, limits, sizeof next);
    for (size_t i = 0; i < n; i += 4) {
        int cls = -1;
        for (size_t k = 0; k < sizeof obuf_class_names / sizeof obuf_class_names[0]; k++)
            if (!strcasecmp(words[i], obuf_class_names[k].name)) cls = (int)obuf_class_names[k].cls;
        if (cls < 0) {
            kvd_config_errf(err, errcap, "Invalid client class specified in buffer limit configuration.");
            return -1;
        }
        uint64_t hard, soft, secs;
        const char *rest;
        if (kvd_parse_size(words[i + 1], &hard) < 0 || kvd_parse_size(words[i + 2], &soft) < 0 ||
            parse_u64(words[i + 3], &rest, &secs) < 0 || *rest || secs > INT32_MAX) {
            kvd_config_errf(err, errcap, "Error in hard, soft or soft_seconds setting in buffer limit configuration.");
            return -1;
        }
        next[cls] = (kvd_obuf_limit){hard, soft, secs};
    }
    for (int k = 0; k < KVD_OBUF_CLASSES; k++) {
        __atomic_store_n(&limits[k].hard, next[k].hard, __ATOMIC_RELAXED);
        __atomic_store_n(&limits[k].soft, next[k].soft, __ATOMIC_RELAXED);
        __atomic_store_n(&limits[k].soft_secs, next[k].soft_secs, __ATOMIC_RELAXED);
    }
    return 0;
}

/* CONFIG GET's form: "normal 1073741824 268435456 60 slave ... pubsub ...". */
static void format_obuf_limits(const kvd_obuf_limit *l, char *buf, size_t cap)
{
    static const char *const names[KVD_OBUF_CLASSES] = {"normal", "slave", "pubsub"};
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < KVD_OBUF_CLASSES && used < cap; k++) {
        int w = snprintf(buf + used, cap - used, "%s%s %" PRIu64 " %" PRIu64 " %" PRIu64, k ? " " : "", names[k],
                         __atomic_load_n(&l[k].hard, __ATOMIC_RELAXED), __atomic_load_n(&l[k].soft, __ATOMIC_RELAXED),
                         __atomic_load_n(&l[k].soft_secs, __ATOMIC_RELAXED));
        if (w < 0) break;
        used += (size_t)w;
    }
}

void kvd_format_size(uint64_t v, char *buf, size_t cap)
{
    if (v >= (1ull << 30) && v % (1ull << 30) == 0)
        snprintf(buf, cap, "%" PRIu64 "gb", v >> 30);
    else if (v >= (1ull << 20) && v % (1ull << 20) == 0)
        snprintf(buf, cap, "%" PRIu64 "mb", v >> 20);
    else if (v >= (1ull << 10) && v % (1ull << 10) == 0)
        snprintf(buf, cap, "%" PRIu64 "kb", v >> 10);
    else
        snprintf(buf, cap, "%" PRIu64, v);
}

/* Lower-cases s into buf for the case-sensitive enum parsers of other
 * modules (redis.conf enums are case-insensitive). Returns -1 if it does
 * not fit, which no valid name would. */
static int lower_copy(const char *s, char *buf, size_t cap)
{
    size_t n = strlen(s);
    if (n >= cap) return -1;
    for (size_t i = 0; i <= n; i++) buf[i] = (char)tolower((unsigned char)s[i]);
    return 0;
}

/* T_STRING and T_OPT_STRING: the old string is freed only once the copy
 * exists, so c is unchanged when memory runs out. A plain store: readers
 * of strings hold cfg_mu, as the caller does. */
static int apply_string(kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                        size_t errcap)
{
    if (s->type == T_STRING && !*value) {
        kvd_config_errf(err, errcap, "invalid value '' for '%s': must not be empty", label);
        return -1;
    }
    char *copy = NULL;
    if (*value && !(copy = strdup(value))) {
        kvd_config_errf(err, errcap, "'%s': out of memory", label);
        return -1;
    }
    char **slot = kvd_setting_field(c, s);
    free(*slot);
    *slot = copy;
    return 0;
}

static int apply_int(kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                     size_t errcap)
{
    const char *rest;
    uint64_t v;
    if (parse_u64(value, &rest, &v) < 0 || *rest || v < s->min || v > s->max) {
        kvd_config_errf(err, errcap, "invalid value '%s' for '%s': must be an integer from %" PRIu64 " to %" PRIu64,
                        value, label, s->min, s->max);
        return -1;
    }
    __atomic_store_n((int *)kvd_setting_field(c, s), (int)v, __ATOMIC_RELAXED);
    return 0;
}

/* The range error says "at least" for a size with no real upper bound
 * (INT64_MAX), so it never prints a number nobody would type. */
static int apply_size(kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                      size_t errcap)
{
    uint64_t v;
    char lo[32], hi[32];
    kvd_format_size(s->min, lo, sizeof lo);
    kvd_format_size(s->max, hi, sizeof hi);
    if (kvd_parse_size(value, &v) < 0) {
        kvd_config_errf(err, errcap,
                        "invalid value '%s' for '%s': must be a size in bytes, a number with an optional unit "
                        "k/kb, m/mb or g/gb (like 4096, 64mb, 1gb)",
                        value, label);
        return -1;
    }
    if (v < s->min || v > s->max) {
        if (s->max == INT64_MAX)
            kvd_config_errf(err, errcap, "invalid value '%s' for '%s': must be at least %s", value, label, lo);
        else
            kvd_config_errf(err, errcap, "invalid value '%s' for '%s': must be from %s to %s", value, label, lo, hi);
        return -1;
    }
    __atomic_store_n((uint64_t *)kvd_setting_field(c, s), v, __ATOMIC_RELAXED);
    return 0;
}

/* T_FSYNC, T_LOGLEVEL, T_RECOVERY: a name parsed by the module that owns
 * the enum, stored with the enum's own type. */
static int apply_enum(kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                      size_t errcap)
{
    char low[32];
    if (s->type == T_FSYNC) {
        kv_fsync_policy p;
        if (lower_copy(value, low, sizeof low) < 0 || kv_fsync_parse(low, &p) != KV_OK) {
            kvd_config_errf(err, errcap, "invalid value '%s' for '%s': must be always, everysec or no", value, label);
            return -1;
        }
        __atomic_store_n((kv_fsync_policy *)kvd_setting_field(c, s), p, __ATOMIC_RELAXED);
    } else if (s->type == T_LOGLEVEL) {
        kvd_log_level l;
        if (kvd_log_level_parse(value, &l) < 0) {
            kvd_config_errf(err, errcap, "invalid value '%s' for '%s': must be debug, verbose, notice or warning",
                            value, label);
            return -1;
        }
        __atomic_store_n((kvd_log_level *)kvd_setting_field(c, s), l, __ATOMIC_RELAXED);
    } else {
        kvr_mode m;
        if (lower_copy(value, low, sizeof low) < 0 || kvr_mode_parse(low, &m) != KV_OK) {
            kvd_config_errf(err, errcap,
                            "invalid value '%s' for '%s': must be tolerate-tail, absolute, point-in-time or "
                            "skip-corrupt",
                            value, label);
            return -1;
        }
        __atomic_store_n((kvr_mode *)kvd_setting_field(c, s), m, __ATOMIC_RELAXED);
    }
    return 0;
}

static int apply_bool(kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                      size_t errcap)
{
    int v;
    if (!strcasecmp(value, "yes")) {
        v = 1;
    } else if (!strcasecmp(value, "no")) {
        v = 0;
    } else {
        kvd_config_errf(err, errcap, "invalid value '%s' for '%s': must be yes or no", value, label);
        return -1;
    }
    __atomic_store_n((int *)kvd_setting_field(c, s), v, __ATOMIC_RELAXED);
    return 0;
}

int kvd_setting_apply(kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                      size_t errcap)
{
    switch (s->type) {
    case T_STRING:
    case T_OPT_STRING: return apply_string(c, s, label, value, err, errcap);
    case T_INT: return apply_int(c, s, label, value, err, errcap);
    case T_SIZE: return apply_size(c, s, label, value, err, errcap);
    case T_FSYNC:
    case T_LOGLEVEL:
    case T_RECOVERY: return apply_enum(c, s, label, value, err, errcap);
    case T_BOOL: return apply_bool(c, s, label, value, err, errcap);
    case T_OBUF: {
        char why[128];
        if (kvd_parse_obuf_limits(value, kvd_setting_field(c, s), why, sizeof why) < 0) {
            /* Redis's text alone: CONFIG SET wraps it in its own prefix. */
            kvd_config_errf(err, errcap, "%s", why);
            return -1;
        }
        return 0;
    }
    case T_REPLICAOF: {
        char **field = kvd_setting_field(c, s);
        if (!strcasecmp(value, "no one") || value[0] == 0) {
            free(*field);
            *field = NULL;
            return 0;
        }
        char host[256];
        int port;
        if (kvd_parse_host_port(value, host, sizeof host, &port) < 0) {
            kvd_config_errf(err, errcap, "invalid value '%s' for '%s': expected \"HOST PORT\" or \"no one\"", value,
                            label);
            return -1;
        }
        char *copy = strdup(value);
        if (!copy) {
            kvd_config_errf(err, errcap, "out of memory");
            return -1;
        }
        free(*field);
        *field = copy;
        return 0;
    }
    case T_APPENDONLY:
        if (strcasecmp(value, "yes") != 0) {
            kvd_config_errf(err, errcap, "invalid value '%s' for '%s': %s, only 'yes' is accepted", value, label,
                            s->help);
            return -1;
        }
        return 0;
    }
    kvd_config_errf(err, errcap, "'%s': internal error: bad setting type", label);
    return -1;
}

int kvd_config_set(kvd_config *c, const char *name, const char *value, char *err, size_t errcap)
{
    const kvd_setting *s = find_setting(name);
    if (!s) {
        kvd_config_errf(err, errcap, "unknown setting '%s'", name);
        return -1;
    }
    return kvd_setting_apply(c, s, name, value, err, errcap);
}

int kvd_config_get(const kvd_config *c, const char *name, char *buf, size_t cap)
{
    const kvd_setting *s = find_setting(name);
    if (!s || s->hidden || cap == 0) return -1;
    const void *p = kvd_setting_cfield(c, s);
    switch (s->type) {
    case T_STRING:
    case T_OPT_STRING:
    case T_REPLICAOF: {
        const char *v = *(char *const *)p;
        snprintf(buf, cap, "%s", v ? v : "");
        return 0;
    }
    case T_INT: snprintf(buf, cap, "%d", __atomic_load_n((const int *)p, __ATOMIC_RELAXED)); return 0;
    case T_BOOL: snprintf(buf, cap, "%s", __atomic_load_n((const int *)p, __ATOMIC_RELAXED) ? "yes" : "no"); return 0;
    case T_SIZE: snprintf(buf, cap, "%" PRIu64, __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED)); return 0;
    case T_FSYNC:
        snprintf(buf, cap, "%s", kv_fsync_name(__atomic_load_n((const kv_fsync_policy *)p, __ATOMIC_RELAXED)));
        return 0;
    case T_LOGLEVEL:
        snprintf(buf, cap, "%s", kvd_log_level_name(__atomic_load_n((const kvd_log_level *)p, __ATOMIC_RELAXED)));
        return 0;
    case T_RECOVERY:
        snprintf(buf, cap, "%s", kvr_mode_name(__atomic_load_n((const kvr_mode *)p, __ATOMIC_RELAXED)));
        return 0;
    case T_OBUF: format_obuf_limits(p, buf, cap); return 0;
    case T_APPENDONLY: break;
    }
    return -1;
}
