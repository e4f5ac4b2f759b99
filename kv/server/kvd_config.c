/*
 * kvd_config — see kvd_config.h; how its files divide the work is in
 * kvd_config_int.h. This file gives the rows of `kvd_settings`
 * (kvd_config_table.c) their meaning: value syntax, checks, storage.
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

#include "kvd_config_int.h"

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
    for (const kvd_setting_alias *a = kvd_setting_aliases; a->alias; a++)
        if (strlen(a->alias) == len && !strncasecmp(a->alias, name, len)) {
            name = a->name;
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

/* See kvd_config_int.h. */
void kvd_setting_default_text(const kvd_config *d, const kvd_setting *s, int here, char *buf, size_t cap)
{
    if (s->type == T_SIZE) {
        kvd_format_size(*(const uint64_t *)kvd_setting_cfield(d, s), buf, cap);
    } else if (s->type == T_OBUF) {
        const kvd_obuf_limit *l = &d->obuf_limits[KVD_OBUF_NORMAL];
        char hard[24], soft[24];
        kvd_format_size(l->hard, hard, sizeof hard);
        kvd_format_size(l->soft, soft, sizeof soft);
        snprintf(buf, cap, "normal %s %s %" PRIu64, hard, soft, l->soft_secs);
    } else if (s->off == offsetof(kvd_config, io_threads)) {
        if (here)
            snprintf(buf, cap, "online CPUs - 1, %d here", d->io_threads);
        else
            snprintf(buf, cap, "online CPUs - 1");
    } else if (s->off == offsetof(kvd_config, logfile)) {
        snprintf(buf, cap, "stderr");
    } else if (s->type == T_OPT_STRING || s->type == T_REPLICAOF) {
        snprintf(buf, cap, "none");
    } else if (kvd_config_get(d, s->name, buf, cap) < 0) {
        snprintf(buf, cap, "?");
    }
}
