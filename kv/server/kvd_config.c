/*
 * kvd_config — see kvd_config.h.
 *
 * Every setting is one row of `settings` below: its config-file / CONFIG
 * name, its command-line flag, how its value is parsed and checked, and
 * its --help line. kvd_config_set, kvd_config_get, the file reader, the
 * flag parser and the usage text all read that one table, so a setting
 * cannot be settable in one place and missing from another.
 *
 * The config file follows Redis 7's loadServerConfigFromString()
 * (src/config.c): each line is trimmed of " \t\r\n", empty lines and lines
 * starting with '#' are skipped, the rest is split like sdssplitargs()
 * (src/sds.c, see split_line below), and the first word, lower-cased, names
 * the setting. Errors name the file and the line ("kvd.conf:12: ...")
 * instead of Redis's "*** FATAL CONFIG FILE ERROR ***" banner.
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

#ifndef KVD_VERSION
#define KVD_VERSION "0.1.0"
#endif

#define KVD_MAX_IO_THREADS 64
#define KVD_MAX_SEGMENT_SIZE KV_MAX_SEGMENT_MAX
#define KVD_MIN_BUFFER_LIMIT (1ull << 20) /* Redis's minimum for both limits */
#define KVD_MIN_SCRUB_RATE (64ull << 10)

/* How a setting's value is read. */
typedef enum setting_type {
    T_STRING,     /* char *, must not be empty */
    T_OPT_STRING, /* char *, "" stores NULL (none) */
    T_INT,        /* int in [min, max] */
    T_SIZE,       /* uint64_t bytes in [min, max], kvd_parse_size syntax */
    T_FSYNC,      /* kv_fsync_policy */
    T_LOGLEVEL,   /* kvd_log_level */
    T_RECOVERY,   /* kvr_mode */
    T_BOOL,       /* int 0/1, written "yes" or "no" */
    T_APPENDONLY, /* redis.conf compatibility: only "yes", stores nothing */
    T_OBUF,       /* kvd_obuf_limit[KVD_OBUF_CLASSES], kvd_parse_obuf_limits syntax */
} setting_type;

typedef struct setting {
    const char *name;    /* config file / CONFIG name; NULL ends the table */
    const char *flag;    /* command-line option without "--"; NULL: the name */
    setting_type type;
    size_t off;          /* offsetof(kvd_config, field) */
    uint64_t min, max;   /* T_INT, T_SIZE */
    int hidden;          /* accepted, but not in CONFIG GET, names or --help */
    const char *metavar; /* --help */
    const char *help;    /* --help, one line */
} setting;

#define F(field) offsetof(kvd_config, field)

static const setting settings[] = {
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
    {"appendonly", NULL, T_APPENDONLY, 0, 0, 0, 1, NULL, NULL},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL},
};

#undef F

/* Other names for a setting, in the file, CONFIG and as flags. */
static const struct {
    const char *alias, *name;
} aliases[] = {{"fsync", "appendfsync"}, {"log-level", "loglevel"}};

/* In `settings` order, hidden rows left out. */
const char *const kvd_config_names[] = {
    "dir",          "bind",       "port",
    "appendfsync",  "requirepass", "pidfile",
    "logfile",      "loglevel",   "maxclients",
    "recovery",     "segment-size", "io-threads",
    "proto-max-bulk-len", "client-query-buffer-limit", "client-output-buffer-limit", "hz",
    "compact-dead-ratio", "compact-min-dead", "hint-files",
    "preallocate", "scrub-interval", "scrub-rate",
    NULL,
};

static void errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || cap == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* Looks a setting up by name or alias, case-insensitively; len bytes of
 * name are compared (name need not be NUL-terminated there). */
static const setting *find_setting_n(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strlen(aliases[i].alias) == len && !strncasecmp(aliases[i].alias, name, len)) {
            name = aliases[i].name;
            len = strlen(name);
            break;
        }
    for (const setting *s = settings; s->name; s++)
        if (strlen(s->name) == len && !strncasecmp(s->name, name, len)) return s;
    return NULL;
}

static const setting *find_setting(const char *name)
{
    return find_setting_n(name, strlen(name));
}

static void *field(kvd_config *c, const setting *s)
{
    return (char *)c + s->off;
}

static const void *cfield(const kvd_config *c, const setting *s)
{
    return (const char *)c + s->off;
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
}

void kvd_config_free(kvd_config *c)
{
    free(c->dir);
    free(c->bind);
    free(c->requirepass);
    free(c->pidfile);
    free(c->logfile);
    free(c->config_file);
    c->dir = c->bind = c->requirepass = c->pidfile = c->logfile = c->config_file = NULL;
}

/* ---- values ---- */

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
        errf(err, errcap, "Wrong number of arguments in buffer limit configuration.");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", value);
    for (char *save = NULL, *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (n == sizeof words / sizeof words[0]) {
            errf(err, errcap, "Wrong number of arguments in buffer limit configuration.");
            return -1;
        }
        words[n++] = w;
    }
    /* Redis accepts an empty value (no groups) and changes nothing. */
    if (n % 4) {
        errf(err, errcap, "Wrong number of arguments in buffer limit configuration.");
        return -1;
    }
    kvd_obuf_limit next[KVD_OBUF_CLASSES];
    memcpy(next, limits, sizeof next);
    for (size_t i = 0; i < n; i += 4) {
        int cls = -1;
        for (size_t k = 0; k < sizeof obuf_class_names / sizeof obuf_class_names[0]; k++)
            if (!strcasecmp(words[i], obuf_class_names[k].name)) cls = (int)obuf_class_names[k].cls;
        if (cls < 0) {
            errf(err, errcap, "Invalid client class specified in buffer limit configuration.");
            return -1;
        }
        uint64_t hard, soft, secs;
        const char *rest;
        if (kvd_parse_size(words[i + 1], &hard) < 0 || kvd_parse_size(words[i + 2], &soft) < 0 ||
            parse_u64(words[i + 3], &rest, &secs) < 0 || *rest || secs > INT32_MAX) {
            errf(err, errcap, "Error in hard, soft or soft_seconds setting in buffer limit configuration.");
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

/* "64mb" for 64 MiB; plain bytes when not a whole number of KiB. */
static void format_size_human(uint64_t v, char *buf, size_t cap)
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

/*
 * Checks value for setting s and stores it in c; c is unchanged on error.
 * label names the setting in the message as the user wrote it ("port",
 * "--port"). Returns 0, or -1 with err filled.
 */
static int apply(kvd_config *c, const setting *s, const char *label, const char *value, char *err, size_t errcap)
{
    char low[32];
    switch (s->type) {
    case T_STRING:
    case T_OPT_STRING: {
        if (s->type == T_STRING && !*value) {
            errf(err, errcap, "invalid value '' for '%s': must not be empty", label);
            return -1;
        }
        char *copy = NULL;
        if (*value && !(copy = strdup(value))) {
            errf(err, errcap, "'%s': out of memory", label);
            return -1;
        }
        char **slot = field(c, s);
        free(*slot);
        *slot = copy;
        return 0;
    }
    case T_INT: {
        const char *rest;
        uint64_t v;
        if (parse_u64(value, &rest, &v) < 0 || *rest || v < s->min || v > s->max) {
            errf(err, errcap, "invalid value '%s' for '%s': must be an integer from %" PRIu64 " to %" PRIu64,
                 value, label, s->min, s->max);
            return -1;
        }
        *(int *)field(c, s) = (int)v;
        return 0;
    }
    case T_SIZE: {
        uint64_t v;
        char lo[32], hi[32];
        format_size_human(s->min, lo, sizeof lo);
        format_size_human(s->max, hi, sizeof hi);
        if (kvd_parse_size(value, &v) < 0) {
            errf(err, errcap,
                 "invalid value '%s' for '%s': must be a size in bytes, a number with an optional unit "
                 "k/kb, m/mb or g/gb (like 4096, 64mb, 1gb)",
                 value, label);
            return -1;
        }
        if (v < s->min || v > s->max) {
            if (s->max == INT64_MAX)
                errf(err, errcap, "invalid value '%s' for '%s': must be at least %s", value, label, lo);
            else
                errf(err, errcap, "invalid value '%s' for '%s': must be from %s to %s", value, label, lo, hi);
            return -1;
        }
        *(uint64_t *)field(c, s) = v;
        return 0;
    }
    case T_FSYNC: {
        kv_fsync_policy p;
        if (lower_copy(value, low, sizeof low) < 0 || kv_fsync_parse(low, &p) != KV_OK) {
            errf(err, errcap, "invalid value '%s' for '%s': must be always, everysec or no", value, label);
            return -1;
        }
        *(kv_fsync_policy *)field(c, s) = p;
        return 0;
    }
    case T_LOGLEVEL: {
        kvd_log_level l;
        if (kvd_log_level_parse(value, &l) < 0) {
            errf(err, errcap, "invalid value '%s' for '%s': must be debug, verbose, notice or warning", value,
                 label);
            return -1;
        }
        *(kvd_log_level *)field(c, s) = l;
        return 0;
    }
    case T_RECOVERY: {
        kvr_mode m;
        if (lower_copy(value, low, sizeof low) < 0 || kvr_mode_parse(low, &m) != KV_OK) {
            errf(err, errcap,
                 "invalid value '%s' for '%s': must be tolerate-tail, absolute, point-in-time or skip-corrupt",
                 value, label);
            return -1;
        }
        *(kvr_mode *)field(c, s) = m;
        return 0;
    }
    case T_BOOL:
        if (!strcasecmp(value, "yes"))
            *(int *)field(c, s) = 1;
        else if (!strcasecmp(value, "no"))
            *(int *)field(c, s) = 0;
        else {
            errf(err, errcap, "invalid value '%s' for '%s': must be yes or no", value, label);
            return -1;
        }
        return 0;
    case T_OBUF: {
        char why[128];
        if (kvd_parse_obuf_limits(value, field(c, s), why, sizeof why) < 0) {
            /* Redis's text alone: CONFIG SET wraps it in its own prefix. */
            errf(err, errcap, "%s", why);
            return -1;
        }
        return 0;
    }
    case T_APPENDONLY:
        if (strcasecmp(value, "yes") != 0) {
            errf(err, errcap, "invalid value '%s' for '%s': kvd always keeps its append-only log, only 'yes' is accepted",
                 value, label);
            return -1;
        }
        return 0;
    }
    errf(err, errcap, "'%s': internal error: bad setting type", label);
    return -1;
}

int kvd_config_set(kvd_config *c, const char *name, const char *value, char *err, size_t errcap)
{
    const setting *s = find_setting(name);
    if (!s) {
        errf(err, errcap, "unknown setting '%s'", name);
        return -1;
    }
    return apply(c, s, name, value, err, errcap);
}

int kvd_config_get(const kvd_config *c, const char *name, char *buf, size_t cap)
{
    const setting *s = find_setting(name);
    if (!s || s->hidden || cap == 0) return -1;
    const void *p = cfield(c, s);
    switch (s->type) {
    case T_STRING:
    case T_OPT_STRING: {
        const char *v = *(char *const *)p;
        snprintf(buf, cap, "%s", v ? v : "");
        return 0;
    }
    case T_INT: snprintf(buf, cap, "%d", *(const int *)p); return 0;
    case T_BOOL: snprintf(buf, cap, "%s", *(const int *)p ? "yes" : "no"); return 0;
    case T_SIZE: snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)p); return 0;
    case T_FSYNC: snprintf(buf, cap, "%s", kv_fsync_name(*(const kv_fsync_policy *)p)); return 0;
    case T_LOGLEVEL: snprintf(buf, cap, "%s", kvd_log_level_name(*(const kvd_log_level *)p)); return 0;
    case T_RECOVERY: snprintf(buf, cap, "%s", kvr_mode_name(*(const kvr_mode *)p)); return 0;
    case T_OBUF: format_obuf_limits(p, buf, cap); return 0;
    case T_APPENDONLY: break;
    }
    return -1;
}

/* ---- the config file ---- */

static int is_hex(int ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return ch - 'A' + 10;
}

/* The words of one line: argv points into arena. */
typedef struct line_args {
    int argc;
    char **argv;
    char *arena;
} line_args;

static void line_args_free(line_args *a)
{
    free(a->argv);
    free(a->arena);
    memset(a, 0, sizeof *a);
}

/*
 * Splits a config line into words as Redis's sdssplitargs() does: words
 * are separated by blanks; "double quotes" take \xHH, \n \r \t \b \a and
 * \<any> escapes; 'single quotes' take only \'; a quote may open in the
 * middle of a word (foo"bar" is foobar) but a closing quote must be
 * followed by a blank or the end. Returns 0, or -1 with *why set.
 * A \x00 escape is refused (*why): values are C strings.
 */
static int split_line(const char *line, line_args *a, const char **why)
{
    size_t len = strlen(line);
    memset(a, 0, sizeof *a);
    /* Each word takes at least one source byte plus a separator, so len+1
     * slots and 2*len+2 arena bytes are always enough. */
    a->argv = calloc(len + 1, sizeof *a->argv);
    a->arena = malloc(2 * len + 2);
    if (!a->argv || !a->arena) {
        *why = "out of memory";
        goto fail;
    }
    char *out = a->arena;
    const char *p = line;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        int inq = 0, insq = 0, done = 0;
        char *word = out;
        while (!done) {
            if (inq) {
                if (p[0] == '\\' && p[1] == 'x' && is_hex(p[2]) && is_hex(p[3])) {
                    char byte = (char)(hex_val(p[2]) * 16 + hex_val(p[3]));
                    if (!byte) {
                        *why = "a value cannot contain a NUL byte (\\x00)";
                        goto fail;
                    }
                    *out++ = byte;
                    p += 3;
                } else if (p[0] == '\\' && p[1]) {
                    p++;
                    switch (*p) {
                    case 'n': *out++ = '\n'; break;
                    case 'r': *out++ = '\r'; break;
                    case 't': *out++ = '\t'; break;
                    case 'b': *out++ = '\b'; break;
                    case 'a': *out++ = '\a'; break;
                    default: *out++ = *p; break;
                    }
                } else if (*p == '"') {
                    if (p[1] && !isspace((unsigned char)p[1])) {
                        *why = "closing quote must be followed by a space";
                        goto fail;
                    }
                    done = 1;
                } else if (!*p) {
                    *why = "unbalanced quotes";
                    goto fail;
                } else {
                    *out++ = *p;
                }
            } else if (insq) {
                if (p[0] == '\\' && p[1] == '\'') {
                    p++;
                    *out++ = '\'';
                } else if (*p == '\'') {
                    if (p[1] && !isspace((unsigned char)p[1])) {
                        *why = "closing quote must be followed by a space";
                        goto fail;
                    }
                    done = 1;
                } else if (!*p) {
                    *why = "unbalanced quotes";
                    goto fail;
                } else {
                    *out++ = *p;
                }
            } else {
                switch (*p) {
                case ' ':
                case '\n':
                case '\r':
                case '\t':
                case '\0': done = 1; break;
                case '"': inq = 1; break;
                case '\'': insq = 1; break;
                default: *out++ = *p; break;
                }
            }
            if (*p) p++;
        }
        *out++ = '\0';
        a->argv[a->argc++] = word;
    }
    return 0;
fail:
    line_args_free(a);
    return -1;
}

/* The n words (n >= 1) joined by single spaces, in a new string the
 * caller frees, or NULL when out of memory. The buffer is sized from the
 * words' lengths before anything is copied, so no copy can overrun it. */
static char *join_words(char *const *words, int n)
{
    size_t total = 1; /* the NUL */
    for (int i = 0; i < n; i++) total += strlen(words[i]) + (i ? 1 : 0);
    char *out = malloc(total);
    if (!out) return NULL;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        size_t w = strlen(words[i]);
        if (i) out[used++] = ' ';
        memcpy(out + used, words[i], w);
        used += w;
    }
    out[used] = '\0';
    return out;
}

/* Applies one config line (already trimmed, not a comment). */
static int apply_line(kvd_config *c, const char *path, unsigned lineno, const char *line, char *err, size_t errcap)
{
    line_args a;
    const char *why;
    if (split_line(line, &a, &why) < 0) {
        errf(err, errcap, "%s:%u: %s", path, lineno, why);
        return -1;
    }
    int rc = 0;
    if (a.argc == 0) goto out;
    const setting *s = find_setting(a.argv[0]);
    if (!s) {
        errf(err, errcap, "%s:%u: unknown setting '%s'", path, lineno, a.argv[0]);
        rc = -1;
    } else if (s->type == T_OBUF && a.argc >= 2) {
        /* "client-output-buffer-limit normal 0 0 0": the words after the
         * name are the value, as in redis.conf. */
        char *joined = join_words(a.argv + 1, a.argc - 1);
        char msg[512];
        if (!joined) {
            errf(err, errcap, "%s:%u: out of memory", path, lineno);
            rc = -1;
        } else {
            if (apply(c, s, a.argv[0], joined, msg, sizeof msg) < 0) {
                errf(err, errcap, "%s:%u: '%s': %s", path, lineno, a.argv[0], msg);
                rc = -1;
            }
            free(joined);
        }
    } else if (a.argc != 2) {
        errf(err, errcap, "%s:%u: '%s' takes exactly one value, got %d (write \"%s value\"; quote a value with spaces)",
             path, lineno, a.argv[0], a.argc - 1, a.argv[0]);
        rc = -1;
    } else {
        char msg[512];
        if (apply(c, s, a.argv[0], a.argv[1], msg, sizeof msg) < 0) {
            errf(err, errcap, "%s:%u: %s", path, lineno, msg);
            rc = -1;
        }
    }
out:
    line_args_free(&a);
    return rc;
}

static int load_file(kvd_config *c, const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        errf(err, errcap, "%s: cannot open config file: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t linecap = 0;
    ssize_t n;
    unsigned lineno = 0;
    int rc = 0;
    errno = 0;
    while ((n = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            errf(err, errcap, "%s:%u: NUL byte in line (not a text file?)", path, lineno);
            rc = -1;
            break;
        }
        /* Trim " \t\r\n" at both ends, as Redis's sdstrim does. */
        char *start = line, *end = line + n;
        while (start < end && strchr(" \t\r\n", *start)) start++;
        while (end > start && strchr(" \t\r\n", end[-1])) end--;
        *end = '\0';
        if (*start == '\0' || *start == '#') continue;
        if (apply_line(c, path, lineno, start, err, errcap) < 0) {
            rc = -1;
            break;
        }
        errno = 0;
    }
    if (rc == 0 && ferror(f)) {
        errf(err, errcap, "%s:%u: cannot read config file: %s", path, lineno + 1,
             strerror(errno ? errno : EIO));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

/* ---- the command line ---- */

typedef struct pending_flag {
    const setting *s;
    const char *opt; /* "--port" or "--port=1", as typed */
    size_t optlen;   /* bytes of opt up to any '=' */
    const char *value;
} pending_flag;

kvd_args_result kvd_config_parse_args(kvd_config *c, int argc, char **argv, char *err, size_t errcap)
{
    if (err && errcap) err[0] = '\0';
    pending_flag *flags = calloc(argc > 0 ? (size_t)argc : 1, sizeof *flags);
    if (!flags) {
        errf(err, errcap, "out of memory");
        return KVD_ARGS_ERROR;
    }
    size_t nflags = 0;
    const char *file = NULL;
    kvd_args_result res = KVD_ARGS_ERROR;

    /* Pass 1: the shape of the command line. Values are checked in pass 3,
     * after the file, so that a flag overrides the file. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            if (i == 1) {
                file = a;
                continue;
            }
            errf(err, errcap,
                 "unexpected argument '%s': only a config file may be given without a flag, and only first "
                 "(see kvd --help)",
                 a);
            goto out;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            kvd_config_usage();
            res = KVD_ARGS_EXIT_OK;
            goto out;
        }
        if (!strcmp(a, "--version") || !strcmp(a, "-v")) {
            printf("kvd %s\n", KVD_VERSION);
            fflush(stdout);
            res = KVD_ARGS_EXIT_OK;
            goto out;
        }
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        size_t optlen = eq ? (size_t)(eq - a) : strlen(a);
        const setting *s = (a[1] == '-' && optlen > 2) ? find_setting_n(a + 2, optlen - 2) : NULL;
        if (!s) {
            if (optlen == 6 && !strncmp(a, "--help", 6))
                errf(err, errcap, "option '--help' takes no value");
            else if (optlen == 9 && !strncmp(a, "--version", 9))
                errf(err, errcap, "option '--version' takes no value");
            else
                errf(err, errcap, "unknown option '%.*s' (see kvd --help)", (int)optlen, a);
            goto out;
        }
        const char *value;
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            errf(err, errcap, "option '%s' needs a value (see kvd --help)", a);
            goto out;
        }
        flags[nflags++] = (pending_flag){s, a, optlen, value};
    }

    /* Pass 2: the file. */
    if (file) {
        char *copy = strdup(file);
        if (!copy) {
            errf(err, errcap, "out of memory");
            goto out;
        }
        free(c->config_file);
        c->config_file = copy;
        if (load_file(c, file, err, errcap) < 0) goto out;
    }

    /* Pass 3: flags, in order; the last of a repeated flag wins. */
    for (size_t i = 0; i < nflags; i++) {
        char label[128];
        snprintf(label, sizeof label, "%.*s", (int)flags[i].optlen, flags[i].opt);
        if (apply(c, flags[i].s, label, flags[i].value, err, errcap) < 0) goto out;
    }
    res = KVD_ARGS_RUN;
out:
    free(flags);
    return res;
}

/* ---- --help ---- */

/* The default of s, as --help shows it. */
static void default_text(const kvd_config *d, const setting *s, char *buf, size_t cap)
{
    if (s->type == T_SIZE) {
        format_size_human(*(const uint64_t *)cfield(d, s), buf, cap);
    } else if (s->type == T_OBUF) {
        const kvd_obuf_limit *l = &d->obuf_limits[KVD_OBUF_NORMAL];
        char hard[24], soft[24];
        format_size_human(l->hard, hard, sizeof hard);
        format_size_human(l->soft, soft, sizeof soft);
        snprintf(buf, cap, "normal %s %s %" PRIu64, hard, soft, l->soft_secs);
    } else if (s->off == offsetof(kvd_config, io_threads)) {
        snprintf(buf, cap, "online CPUs - 1, %d here", d->io_threads);
    } else if (s->off == offsetof(kvd_config, logfile)) {
        snprintf(buf, cap, "stderr");
    } else if (s->type == T_OPT_STRING) {
        snprintf(buf, cap, "none");
    } else if (kvd_config_get(d, s->name, buf, cap) < 0) {
        snprintf(buf, cap, "?");
    }
}

void kvd_config_usage(void)
{
    kvd_config d;
    kvd_config_init(&d);
    printf("Usage: kvd [CONFIG-FILE] [OPTIONS]\n"
           "\n"
           "kvd %s is a crash-safe key-value server speaking the Redis protocol. Every\n"
           "write is appended to a log of segments in the data directory; with the\n"
           "default --fsync always a write is acknowledged only once it is on disk.\n"
           "\n"
           "Options (each also as --option=value):\n",
           KVD_VERSION);
    for (const setting *s = settings; s->name; s++) {
        if (s->hidden) continue;
        char def[64];
        default_text(&d, s, def, sizeof def);
        printf("  --%s %s  (default: %s)\n      %s\n", s->flag ? s->flag : s->name, s->metavar, def, s->help);
    }
    printf("  -h, --help\n      print this help and exit\n"
           "  -v, --version\n      print the version and exit\n");
    printf("\n"
           "Sizes (BYTES) are in bytes, with an optional unit: k or kb (1024), m or mb\n"
           "(1024*1024), g or gb (1024*1024*1024), in any case: 4096, 4k, 64mb, 1GB.\n"
           "Every config-file name below also works as an option (--appendfsync,\n"
           "--loglevel).\n"
           "\n"
           "Client limits:\n"
           "  --client-output-buffer-limit takes Redis's form as one quoted value,\n"
           "  \"normal 1gb 256mb 60\": a client is closed once its unsent replies reach\n"
           "  1gb, or stay at 256mb or more for over 60 s (0: no limit). The classes\n"
           "  replica (or slave) and pubsub are accepted and stored, not used. kvd\n"
           "  stops reading a client whose unsent replies pass 1 MiB, until they\n"
           "  drain to 256 KiB.\n"
           "  At start kvd raises its open-file limit (ulimit -n) to the hard limit;\n"
           "  if maxclients plus the descriptors kvd keeps for itself (32, 2 per I/O\n"
           "  thread, 1 per segment) do not fit, maxclients is lowered, and logged.\n"
           "\n"
           "Config file:\n"
           "  kvd reads CONFIG-FILE first, then applies the options, so an option\n"
           "  overrides the file. The file has one \"name value\" per line, as in\n"
           "  redis.conf: names are case-insensitive, blank lines and lines starting\n"
           "  with # are ignored, a value may be \"double-quoted\" (escapes \\n \\t \\\"\n"
           "  \\\\ \\xHH) or 'single-quoted'. The names are those of CONFIG GET:\n"
           "   ");
    int col = 3;
    for (size_t i = 0; kvd_config_names[i]; i++) {
        int w = (int)strlen(kvd_config_names[i]) + 1;
        if (col + w > 78) {
            printf("\n   ");
            col = 3;
        }
        printf(" %s", kvd_config_names[i]);
        col += w;
    }
    printf("\n"
           "  \"fsync\" is another name for appendfsync; \"appendonly yes\" is accepted\n"
           "  and ignored (kvd always keeps its log).\n"
           "\n"
           "  # kvd.conf\n"
           "  dir /var/lib/kvd\n"
           "  port 6380\n"
           "  appendfsync everysec\n"
           "  requirepass \"correct horse battery staple\"\n"
           "  segment-size 256mb\n"
           "\n"
           "Examples:\n"
           "  kvd                                  serve ./data on 127.0.0.1:6379\n"
           "  kvd --dir /var/lib/kvd --port 6380   another directory and port\n"
           "  kvd kvd.conf --log-level=verbose     read kvd.conf, then raise the log level\n"
           "  kvd --fsync everysec --io-threads 4  group syncs once a second, 4 threads\n"
           "  kvd --recovery absolute              refuse to start on any damage to the log\n"
           "\n"
           "Signals:\n"
           "  SIGTERM, SIGINT  stop accepting, finish writes in flight, fsync, exit 0\n"
           "  SIGUSR1          start a background compaction (as COMPACT)\n"
           "  SIGHUP           ignored\n"
           "\n"
           "Exit status:\n"
           "  0  clean shutdown, or --help / --version printed\n"
           "  1  runtime failure: the start was refused (recovery found corruption: run\n"
           "     kvfsck on the directory), the data directory is locked by another\n"
           "     process, the address is in use, an I/O error\n"
           "  2  usage error: a bad option, value or config file\n");
    fflush(stdout);
    kvd_config_free(&d);
}
