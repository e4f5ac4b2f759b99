/*
 * kvd_cmd — the command table and every command's implementation.
 *
 * Each handler writes its reply into x->out. Handlers of CMD_WRITE
 * commands run on the engine's writer thread inside a transaction
 * (x->txn != NULL, x->c == NULL); CMD_READ handlers run on an I/O thread
 * (or inside EXEC on the writer thread) and use the db_* helpers, which
 * read through the transaction when there is one. Replies and error texts
 * follow Redis 7 (src/t_string.c, src/db.c, src/expire.c, src/server.c).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <pthread.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kv_keydir.h"
#include "kvd_internal.h"
#include "kvd_log.h"

/* ---- common replies and parsing ---- */

#define ERR_INT "ERR value is not an integer or out of range"
#define ERR_SYNTAX "ERR syntax error"

static void rp_io_error(sbuf *b, kv_status st)
{
    if (st == KV_CORRUPT)
        rp_error(b, "IOERR data corruption detected while reading a value; run kvfsck on the data directory");
    else
        rp_error(b, "IOERR %s", kv_strerror(st));
}

/* Strict integer parsing in the manner of Redis's string2ll: optional
 * '-', no leading zeros, no spaces or '+', within long long. */
static int str2ll(const uint8_t *p, size_t n, long long *out)
{
    if (n == 0 || n > 20) return 0;
    if (n == 1 && p[0] == '0') {
        *out = 0;
        return 1;
    }
    size_t i = 0;
    int neg = 0;
    if (p[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1) return 0;
    }
    if (p[i] < '1' || p[i] > '9') return 0;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (ULLONG_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1) return 0;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX) return 0;
        *out = (long long)v;
    }
    return 1;
}

static int arg_ll(cmdctx *x, size_t i, long long *v)
{
    if (!str2ll(x->argv[i], x->argvlen[i], v)) {
        rp_error(x->out, ERR_INT);
        return 0;
    }
    return 1;
}

static int arg_is(cmdctx *x, size_t i, const char *word)
{
    size_t n = strlen(word);
    return x->argvlen[i] == n && strncasecmp((const char *)x->argv[i], word, n) == 0;
}

#define KEY(i) x->argv[i], x->argvlen[i]

/* ---- store access: through the transaction when there is one ---- */

static kv_status db_get(cmdctx *x, const uint8_t *k, size_t kl, kv_value *v)
{
    return x->txn ? kv_txn_get(x->txn, k, kl, v) : kv_get(x->env->store, k, kl, v);
}

static kv_status db_info(cmdctx *x, const uint8_t *k, size_t kl, uint64_t *expire, uint64_t *seq)
{
    return x->txn ? kv_txn_key_info(x->txn, k, kl, expire, seq) : kv_key_info(x->env->store, k, kl, expire, seq);
}

static uint64_t db_now(cmdctx *x)
{
    return x->txn ? kv_txn_now_ms(x->txn) : (uint64_t)kvd_mstime();
}

/* Writes go only through a transaction (CMD_WRITE handlers). */
static kv_status db_put(cmdctx *x, const uint8_t *k, size_t kl, const void *v, size_t vl, uint64_t expire, uint32_t flags)
{
    return kv_txn_put(x->txn, k, kl, v, vl, expire, flags);
}

static kv_status db_del(cmdctx *x, const uint8_t *k, size_t kl)
{
    return kv_txn_delete(x->txn, k, kl);
}

static void count_hit(cmdctx *x, int hit)
{
    __atomic_add_fetch(hit ? &x->env->n.hits : &x->env->n.misses, 1, __ATOMIC_RELAXED);
}

/* A put failed inside a transaction: the only possible causes are sizes
 * over the limits or memory. */
static void rp_put_error(sbuf *b, kv_status st)
{
    if (st == KV_INVALID)
        rp_error(b, "ERR write exceeds kvd's size limits (key %u bytes, value %u bytes, %u bytes per transaction)",
                 KV_MAX_KEY_LEN, KV_MAX_VALUE_LEN, KV_MAX_BATCH_LEN);
    else
        rp_error(b, "ERR %s", kv_strerror(st));
}

/* ---- connection commands (the I/O-thread parts live in kvd_server.c) ---- */

static void cmd_ping(cmdctx *x)
{
    if (x->argc > 2) {
        rp_error(x->out, "ERR wrong number of arguments for 'ping' command");
        return;
    }
    if (x->argc == 2)
        rp_bulk(x->out, KEY(1));
    else
        rp_status(x->out, "PONG");
}

static void cmd_echo(cmdctx *x) { rp_bulk(x->out, KEY(1)); }

static void cmd_time(cmdctx *x)
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

static void cmd_dbsize(cmdctx *x)
{
    kv_stats st;
    kv_get_stats(x->env->store, &st);
    rp_int(x->out, (long long)st.keys);
}

/* ---- strings ---- */

static void cmd_get(cmdctx *x)
{
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st == KV_NOT_FOUND) {
        count_hit(x, 0);
        rp_nil(x->out);
    } else if (st != KV_OK) {
        rp_io_error(x->out, st);
    } else {
        count_hit(x, 1);
        rp_bulk(x->out, v.data, v.len);
        kv_value_free(&v);
    }
}

static void cmd_strlen(cmdctx *x)
{
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st == KV_NOT_FOUND) {
        rp_int(x->out, 0);
    } else if (st != KV_OK) {
        rp_io_error(x->out, st);
    } else {
        rp_int(x->out, (long long)v.len);
        kv_value_free(&v);
    }
}

static void cmd_mget(cmdctx *x)
{
    size_t n = x->argc - 1;
    kv_value *vals = calloc(n, sizeof *vals);
    kv_status *sts = calloc(n, sizeof *sts);
    if (!vals || !sts) {
        free(vals);
        free(sts);
        rp_error(x->out, "ERR out of memory");
        return;
    }
    if (x->txn) {
        for (size_t i = 0; i < n; i++) sts[i] = kv_txn_get(x->txn, KEY(i + 1), &vals[i]);
    } else if (kv_mget(x->env->store, n, x->argv + 1, x->argvlen + 1, vals, sts) != KV_OK) {
        free(vals);
        free(sts);
        rp_error(x->out, "ERR out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (sts[i] != KV_OK && sts[i] != KV_NOT_FOUND) {
            /* Do not hide a corrupt value (or a failed read) behind a nil. */
            rp_io_error(x->out, sts[i]);
            for (size_t k = 0; k < n; k++)
                if (sts[k] == KV_OK) kv_value_free(&vals[k]);
            free(vals);
            free(sts);
            return;
        }
    rp_array(x->out, (long long)n);
    for (size_t i = 0; i < n; i++) {
        if (sts[i] == KV_OK) {
            count_hit(x, 1);
            rp_bulk(x->out, vals[i].data, vals[i].len);
            kv_value_free(&vals[i]);
        } else {
            if (sts[i] == KV_NOT_FOUND) count_hit(x, 0);
            rp_nil(x->out);
        }
    }
    free(vals);
    free(sts);
}

enum { EXP_NONE = 0, EXP_EX, EXP_PX, EXP_EXAT, EXP_PXAT, EXP_KEEPTTL, EXP_PERSIST };

/* Turns an expire option and its number into an absolute ms time.
 * Returns 0 and the error already replied on failure. */
static int expire_to_abs(cmdctx *x, int kind, long long v, const char *cmdname, uint64_t *abs_ms)
{
    if (v <= 0) {
        rp_error(x->out, "ERR invalid expire time in '%s' command", cmdname);
        return 0;
    }
    long long now = (long long)db_now(x), ms;
    if (kind == EXP_EX || kind == EXP_EXAT) {
        if (v > LLONG_MAX / 1000) {
            rp_error(x->out, "ERR invalid expire time in '%s' command", cmdname);
            return 0;
        }
        v *= 1000;
    }
    if (kind == EXP_EX || kind == EXP_PX) {
        if (v > LLONG_MAX - now) {
            rp_error(x->out, "ERR invalid expire time in '%s' command", cmdname);
            return 0;
        }
        ms = now + v;
    } else {
        ms = v;
    }
    *abs_ms = (uint64_t)ms;
    return 1;
}

/* Argument i names a time-valued expire option (EX, PX, EXAT, PXAT):
 * returns its EXP_* kind, or EXP_NONE. */
static int expire_option(cmdctx *x, size_t i)
{
    return arg_is(x, i, "ex") ? EXP_EX : arg_is(x, i, "px") ? EXP_PX : arg_is(x, i, "exat") ? EXP_EXAT
           : arg_is(x, i, "pxat")                            ? EXP_PXAT
                                                             : EXP_NONE;
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] */
static void cmd_set(cmdctx *x)
{
    int nx = 0, xx = 0, get = 0, exp = EXP_NONE;
    long long expv = 0;
    for (size_t i = 3; i < x->argc; i++) {
        int has_next = i + 1 < x->argc;
        if (arg_is(x, i, "nx") && !xx) {
            nx = 1;
        } else if (arg_is(x, i, "xx") && !nx) {
            xx = 1;
        } else if (arg_is(x, i, "get")) {
            get = 1;
        } else if (arg_is(x, i, "keepttl") && exp == EXP_NONE) {
            exp = EXP_KEEPTTL;
        } else if (exp == EXP_NONE && has_next && expire_option(x, i) != EXP_NONE) {
            exp = expire_option(x, i);
            if (!arg_ll(x, ++i, &expv)) return;
        } else {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
    }
    uint64_t expire = 0;
    if (exp != EXP_NONE && exp != EXP_KEEPTTL && !expire_to_abs(x, exp, expv, "set", &expire)) return;
    uint64_t old_exp = 0;
    kv_value old;
    int have_old = 0;
    kv_status st;
    if (get) {
        st = db_get(x, KEY(1), &old);
        if (st != KV_OK && st != KV_NOT_FOUND) {
            rp_io_error(x->out, st);
            return;
        }
        have_old = st == KV_OK;
        old_exp = have_old ? old.expire_ms : 0;
    } else if (nx || xx || exp == EXP_KEEPTTL) {
        have_old = db_info(x, KEY(1), &old_exp, NULL) == KV_OK;
    }
    if ((nx && have_old) || (xx && !have_old)) {
        if (get && have_old)
            rp_bulk(x->out, old.data, old.len);
        else
            rp_nil(x->out);
        if (get && have_old) kv_value_free(&old);
        return;
    }
    if (exp == EXP_KEEPTTL) expire = have_old ? old_exp : 0;
    st = db_put(x, KEY(1), KEY(2), expire, 0);
    if (st != KV_OK) {
        rp_put_error(x->out, st);
    } else if (get) {
        if (have_old)
            rp_bulk(x->out, old.data, old.len);
        else
            rp_nil(x->out);
    } else {
        rp_ok(x->out);
    }
    if (get && have_old) kv_value_free(&old);
}

static void cmd_setnx(cmdctx *x)
{
    if (db_info(x, KEY(1), NULL, NULL) == KV_OK) {
        rp_int(x->out, 0);
        return;
    }
    kv_status st = db_put(x, KEY(1), KEY(2), 0, 0);
    if (st != KV_OK)
        rp_put_error(x->out, st);
    else
        rp_int(x->out, 1);
}

static void setex_generic(cmdctx *x, int kind, const char *name)
{
    long long v;
    uint64_t expire;
    if (!arg_ll(x, 2, &v) || !expire_to_abs(x, kind, v, name, &expire)) return;
    kv_status st = db_put(x, KEY(1), KEY(3), expire, 0);
    if (st != KV_OK)
        rp_put_error(x->out, st);
    else
        rp_ok(x->out);
}

static void cmd_setex(cmdctx *x) { setex_generic(x, EXP_EX, "setex"); }
static void cmd_psetex(cmdctx *x) { setex_generic(x, EXP_PX, "psetex"); }

static void cmd_getdel(cmdctx *x)
{
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st == KV_NOT_FOUND) {
        rp_nil(x->out);
        return;
    }
    if (st != KV_OK) {
        rp_io_error(x->out, st);
        return;
    }
    db_del(x, KEY(1));
    rp_bulk(x->out, v.data, v.len);
    kv_value_free(&v);
}

/* GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST] */
static void cmd_getex(cmdctx *x)
{
    int exp = EXP_NONE;
    long long expv = 0;
    for (size_t i = 2; i < x->argc; i++) {
        if (exp == EXP_NONE && arg_is(x, i, "persist")) {
            exp = EXP_PERSIST;
        } else if (exp == EXP_NONE && i + 1 < x->argc && expire_option(x, i) != EXP_NONE) {
            exp = expire_option(x, i);
            if (!arg_ll(x, ++i, &expv)) return;
        } else {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
    }
    uint64_t expire = 0;
    if (exp != EXP_NONE && exp != EXP_PERSIST && !expire_to_abs(x, exp, expv, "getex", &expire)) return;
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st == KV_NOT_FOUND) {
        rp_nil(x->out);
        return;
    }
    if (st != KV_OK) {
        rp_io_error(x->out, st);
        return;
    }
    if (exp != EXP_NONE && !(exp == EXP_PERSIST && v.expire_ms == 0)) {
        if (exp != EXP_PERSIST && expire <= db_now(x))
            db_del(x, KEY(1));
        else
            st = db_put(x, KEY(1), v.data, v.len, exp == EXP_PERSIST ? 0 : expire, v.flags);
    }
    if (st != KV_OK)
        rp_put_error(x->out, st);
    else
        rp_bulk(x->out, v.data, v.len);
    kv_value_free(&v);
}

static void cmd_mset(cmdctx *x)
{
    if (x->argc % 2 == 0) {
        rp_error(x->out, "ERR wrong number of arguments for 'mset' command");
        return;
    }
    for (size_t i = 1; i < x->argc; i += 2) {
        kv_status st = db_put(x, KEY(i), KEY(i + 1), 0, 0);
        if (st != KV_OK) {
            rp_put_error(x->out, st);
            return;
        }
    }
    rp_ok(x->out);
}

static void cmd_msetnx(cmdctx *x)
{
    if (x->argc % 2 == 0) {
        rp_error(x->out, "ERR wrong number of arguments for 'msetnx' command");
        return;
    }
    for (size_t i = 1; i < x->argc; i += 2)
        if (db_info(x, KEY(i), NULL, NULL) == KV_OK) {
            rp_int(x->out, 0);
            return;
        }
    for (size_t i = 1; i < x->argc; i += 2) {
        kv_status st = db_put(x, KEY(i), KEY(i + 1), 0, 0);
        if (st != KV_OK) {
            rp_put_error(x->out, st);
            return;
        }
    }
    rp_int(x->out, 1);
}

static void cmd_append(cmdctx *x)
{
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st != KV_OK && st != KV_NOT_FOUND) {
        rp_io_error(x->out, st);
        return;
    }
    size_t oldlen = st == KV_OK ? v.len : 0;
    size_t total = oldlen + x->argvlen[2];
    if (total > KV_MAX_VALUE_LEN || total > x->env->cfg->max_bulk_len) {
        rp_error(x->out, "ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        if (st == KV_OK) kv_value_free(&v);
        return;
    }
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf) {
        rp_error(x->out, "ERR out of memory");
        if (st == KV_OK) kv_value_free(&v);
        return;
    }
    if (oldlen) memcpy(buf, v.data, oldlen);
    memcpy(buf + oldlen, x->argv[2], x->argvlen[2]);
    kv_status ps = db_put(x, KEY(1), buf, total, st == KV_OK ? v.expire_ms : 0, st == KV_OK ? v.flags : 0);
    if (ps != KV_OK)
        rp_put_error(x->out, ps);
    else
        rp_int(x->out, (long long)total);
    free(buf);
    if (st == KV_OK) kv_value_free(&v);
}

static void incr_generic(cmdctx *x, long long by)
{
    kv_value v;
    long long cur = 0;
    kv_status st = db_get(x, KEY(1), &v);
    if (st != KV_OK && st != KV_NOT_FOUND) {
        rp_io_error(x->out, st);
        return;
    }
    uint64_t expire = 0;
    uint32_t flags = 0;
    if (st == KV_OK) {
        int ok = str2ll(v.data, v.len, &cur);
        expire = v.expire_ms;
        flags = v.flags;
        kv_value_free(&v);
        if (!ok) {
            rp_error(x->out, ERR_INT);
            return;
        }
    }
    if ((by < 0 && cur < 0 && by < LLONG_MIN - cur) || (by > 0 && cur > 0 && by > LLONG_MAX - cur)) {
        rp_error(x->out, "ERR increment or decrement would overflow");
        return;
    }
    cur += by;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", cur);
    st = db_put(x, KEY(1), buf, (size_t)n, expire, flags);
    if (st != KV_OK)
        rp_put_error(x->out, st);
    else
        rp_int(x->out, cur);
}

static void cmd_incr(cmdctx *x) { incr_generic(x, 1); }
static void cmd_decr(cmdctx *x) { incr_generic(x, -1); }
static void cmd_incrby(cmdctx *x)
{
    long long by;
    if (arg_ll(x, 2, &by)) incr_generic(x, by);
}
static void cmd_decrby(cmdctx *x)
{
    long long by;
    if (!arg_ll(x, 2, &by)) return;
    if (by == LLONG_MIN) {
        rp_error(x->out, "ERR decrement would overflow");
        return;
    }
    incr_generic(x, -by);
}

/* ---- keyspace ---- */

static void cmd_del(cmdctx *x)
{
    long long n = 0;
    for (size_t i = 1; i < x->argc; i++)
        if (db_del(x, KEY(i)) == KV_OK) n++;
    rp_int(x->out, n);
}

static void cmd_exists(cmdctx *x)
{
    size_t n = x->argc - 1;
    long long count = 0;
    kv_status *sts = calloc(n, sizeof *sts);
    if (!sts) {
        rp_error(x->out, "ERR out of memory");
        return;
    }
    if (x->txn) {
        for (size_t i = 0; i < n; i++) sts[i] = kv_txn_key_info(x->txn, KEY(i + 1), NULL, NULL);
    } else if (kv_mget(x->env->store, n, x->argv + 1, x->argvlen + 1, NULL, sts) != KV_OK) {
        free(sts);
        rp_error(x->out, "ERR out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) count += sts[i] == KV_OK;
    free(sts);
    rp_int(x->out, count);
}

static void cmd_type(cmdctx *x)
{
    rp_status(x->out, db_info(x, KEY(1), NULL, NULL) == KV_OK ? "string" : "none");
}

static void cmd_rename(cmdctx *x)
{
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st == KV_NOT_FOUND) {
        rp_error(x->out, "ERR no such key");
        return;
    }
    if (st != KV_OK) {
        rp_io_error(x->out, st);
        return;
    }
    int same = x->argvlen[1] == x->argvlen[2] && keys_equal(x->argv[1], x->argv[2], x->argvlen[1]);
    if (!same) {
        st = db_put(x, KEY(2), v.data, v.len, v.expire_ms, v.flags);
        if (st == KV_OK) db_del(x, KEY(1));
    }
    if (st != KV_OK)
        rp_put_error(x->out, st);
    else
        rp_ok(x->out);
    kv_value_free(&v);
}

static void ttl_generic(cmdctx *x, int ms)
{
    uint64_t expire;
    if (db_info(x, KEY(1), &expire, NULL) != KV_OK) {
        rp_int(x->out, -2);
        return;
    }
    if (expire == 0) {
        rp_int(x->out, -1);
        return;
    }
    long long left = (long long)expire - (long long)db_now(x);
    if (left < 0) left = 0;
    rp_int(x->out, ms ? left : (left + 500) / 1000);
}

static void cmd_ttl(cmdctx *x) { ttl_generic(x, 0); }
static void cmd_pttl(cmdctx *x) { ttl_generic(x, 1); }

/* EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT] */
static void expire_generic(cmdctx *x, int kind, const char *name)
{
    long long v;
    if (!arg_ll(x, 2, &v)) return;
    int nx = 0, xx = 0, gt = 0, lt = 0;
    for (size_t i = 3; i < x->argc; i++) {
        if (arg_is(x, i, "nx")) nx = 1;
        else if (arg_is(x, i, "xx")) xx = 1;
        else if (arg_is(x, i, "gt")) gt = 1;
        else if (arg_is(x, i, "lt")) lt = 1;
        else {
            rp_error(x->out, "ERR Unsupported option %.*s", (int)x->argvlen[i], (const char *)x->argv[i]);
            return;
        }
    }
    if (nx && (xx || gt || lt)) {
        rp_error(x->out, "ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if (gt && lt) {
        rp_error(x->out, "ERR GT and LT options at the same time are not compatible");
        return;
    }
    /* Compute the absolute time; past (or zero/negative) means delete. */
    long long now = (long long)db_now(x), when;
    long long mul = (kind == EXP_EX || kind == EXP_EXAT) ? 1000 : 1;
    if (v > LLONG_MAX / mul || v < LLONG_MIN / mul) {
        rp_error(x->out, "ERR invalid expire time in '%s' command", name);
        return;
    }
    when = v * mul;
    if (kind == EXP_EX || kind == EXP_PX) {
        if ((when > 0 && when > LLONG_MAX - now) || (when < 0 && when < LLONG_MIN + now)) {
            rp_error(x->out, "ERR invalid expire time in '%s' command", name);
            return;
        }
        when += now;
    }
    kv_value val;
    kv_status st = db_get(x, KEY(1), &val);
    if (st == KV_NOT_FOUND) {
        rp_int(x->out, 0);
        return;
    }
    if (st != KV_OK) {
        rp_io_error(x->out, st);
        return;
    }
    uint64_t cur = val.expire_ms; /* 0 = no expiry: "infinite" for GT/LT */
    /* Compared signed, as in Redis: a negative time (EXPIREAT k -5) is
     * earlier than any expiry, not a huge unsigned one. */
    int skip = (nx && cur != 0) || (xx && cur == 0) || (gt && (cur == 0 || when <= (long long)cur)) ||
               (lt && cur != 0 && when >= (long long)cur);
    if (skip) {
        rp_int(x->out, 0);
    } else if (when <= now) {
        db_del(x, KEY(1));
        rp_int(x->out, 1);
    } else {
        st = db_put(x, KEY(1), val.data, val.len, (uint64_t)when, val.flags);
        if (st != KV_OK)
            rp_put_error(x->out, st);
        else
            rp_int(x->out, 1);
    }
    kv_value_free(&val);
}

static void cmd_expire(cmdctx *x) { expire_generic(x, EXP_EX, "expire"); }
static void cmd_pexpire(cmdctx *x) { expire_generic(x, EXP_PX, "pexpire"); }
static void cmd_expireat(cmdctx *x) { expire_generic(x, EXP_EXAT, "expireat"); }
static void cmd_pexpireat(cmdctx *x) { expire_generic(x, EXP_PXAT, "pexpireat"); }

static void cmd_persist(cmdctx *x)
{
    kv_value v;
    kv_status st = db_get(x, KEY(1), &v);
    if (st == KV_NOT_FOUND) {
        rp_int(x->out, 0);
        return;
    }
    if (st != KV_OK) {
        rp_io_error(x->out, st);
        return;
    }
    if (v.expire_ms == 0) {
        rp_int(x->out, 0);
    } else {
        st = db_put(x, KEY(1), v.data, v.len, 0, v.flags);
        if (st != KV_OK)
            rp_put_error(x->out, st);
        else
            rp_int(x->out, 1);
    }
    kv_value_free(&v);
}

/* Glob matching as Redis's stringmatchlen, through fnmatch(3): keys and
 * patterns are NUL-terminated copies (a key holding a NUL byte matches
 * only on the part before it). */
static int glob_match(const uint8_t *pat, size_t pl, const uint8_t *key, size_t kl)
{
    char pbuf[512], kbuf[512];
    char *p = pl < sizeof pbuf ? pbuf : malloc(pl + 1);
    char *k = kl < sizeof kbuf ? kbuf : malloc(kl + 1);
    int r = 0;
    if (p && k) {
        memcpy(p, pat, pl);
        p[pl] = 0;
        memcpy(k, key, kl);
        k[kl] = 0;
        r = fnmatch(p, k, 0) == 0;
    }
    if (p != pbuf) free(p);
    if (k != kbuf) free(k);
    return r;
}

typedef struct keys_acc {
    const uint8_t *pat;
    size_t pl;
    int all;
    sbuf body;
    long long n;
} keys_acc;

static void keys_one(void *arg, const uint8_t *key, size_t klen, uint64_t expire_ms)
{
    (void)expire_ms;
    keys_acc *a = arg;
    if (a->all || glob_match(a->pat, a->pl, key, klen)) {
        rp_bulk(&a->body, key, klen);
        a->n++;
    }
}

static void cmd_keys(cmdctx *x)
{
    keys_acc a = {x->argv[1], x->argvlen[1], x->argvlen[1] == 1 && x->argv[1][0] == '*', {0}, 0};
    uint64_t cur = 0;
    do kv_scan(x->env->store, cur, 1024, keys_one, &a, &cur);
    while (cur != 0);
    rp_array(x->out, a.n);
    sb_add(x->out, a.body.p, a.body.len);
    sb_free(&a.body);
}

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE type] */
static void cmd_scan(cmdctx *x)
{
    uint64_t cursor = 0;
    const uint8_t *c = x->argv[1];
    size_t cl = x->argvlen[1];
    if (cl == 0 || cl > 20) goto bad_cursor;
    for (size_t i = 0; i < cl; i++) {
        if (c[i] < '0' || c[i] > '9' || cursor > (UINT64_MAX - (uint64_t)(c[i] - '0')) / 10) goto bad_cursor;
        cursor = cursor * 10 + (uint64_t)(c[i] - '0');
    }
    keys_acc a = {NULL, 0, 1, {0}, 0};
    long long count = 10;
    int type_none = 0;
    for (size_t i = 2; i < x->argc; i += 2) { /* option, value */
        if (i + 1 >= x->argc) {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
        if (arg_is(x, i, "match")) {
            a.pat = x->argv[i + 1];
            a.pl = x->argvlen[i + 1];
            a.all = a.pl == 1 && a.pat[0] == '*';
        } else if (arg_is(x, i, "count")) {
            if (!arg_ll(x, i + 1, &count)) return;
            if (count < 1) {
                rp_error(x->out, ERR_SYNTAX);
                return;
            }
        } else if (arg_is(x, i, "type")) {
            type_none = !arg_is(x, i + 1, "string");
        } else {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
    }
    uint64_t next = 0;
    kv_scan(x->env->store, cursor, (size_t)count, keys_one, &a, &next);
    char cbuf[32];
    snprintf(cbuf, sizeof cbuf, "%" PRIu64, next);
    rp_array(x->out, 2);
    rp_bulk_str(x->out, cbuf);
    if (type_none) {
        rp_array(x->out, 0);
    } else {
        rp_array(x->out, a.n);
        sb_add(x->out, a.body.p, a.body.len);
    }
    sb_free(&a.body);
    return;
bad_cursor:
    rp_error(x->out, "ERR invalid cursor");
}

static void cmd_flushall(cmdctx *x)
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

static void cmd_compact(cmdctx *x)
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
static void cmd_scrub(cmdctx *x)
{
    int r = x->env->hooks.start_scrub(x->env->hooks.srv);
    if (r > 0)
        rp_status(x->out, "Background scrub started");
    else if (r == 0)
        rp_error(x->out, "ERR Background scrub already in progress");
    else
        rp_error(x->out, "ERR cannot start the background scrub");
}

static void cmd_info(cmdctx *x)
{
    sbuf body = {0};
    char section[64];
    if (x->argc > 1) snprintf(section, sizeof section, "%.*s", (int)x->argvlen[1], (const char *)x->argv[1]);
    x->env->hooks.info(x->env->hooks.srv, x->argc > 1 ? section : NULL, &body);
    rp_bulk(x->out, body.p ? body.p : "", body.len);
    sb_free(&body);
}

/* ---- EXEC on the writer thread ---- */

kv_status kvd_exec_txn(kv_txn *t, kvd_job *job, kvd_env *env)
{
    for (size_t i = 0; i < job->nwatch; i++) {
        uint64_t seq = 0;
        if (kv_txn_key_info(t, job->watch[i].key, job->watch[i].klen, NULL, &seq) != KV_OK) seq = 0;
        if (seq != job->watch[i].seq) {
            rp_null_array(&job->reply); /* a watched key changed: abort */
            return KV_OK;
        }
    }
    size_t n = 0;
    for (kvd_job *q = job->mq; q; q = q->next) n++;
    rp_array(&job->reply, (long long)n);
    for (kvd_job *q = job->mq; q; q = q->next) {
        cmdctx x = {env, NULL, q->argc, (const uint8_t *const *)q->argv, q->argvlen, t, &job->reply};
        q->cmd->fn(&x);
    }
    return job->reply.oom ? ENOMEM : KV_OK;
}

/* ---- the table ---- */

#define W CMD_WRITE
#define R CMD_READ
#define L CMD_CONN
static const kvd_cmd table[] = {
    /* connection */
    {"ping", -1, R | CMD_NOAUTH, cmd_ping, 0, 0, 0},
    {"echo", 2, R, cmd_echo, 0, 0, 0},
    {"quit", -1, L | CMD_NOAUTH | CMD_NOMULTI, cmd_quit, 0, 0, 0},
    {"select", 2, L, cmd_select, 0, 0, 0},
    {"auth", -2, L | CMD_NOAUTH | CMD_NOMULTI, cmd_auth, 0, 0, 0},
    {"hello", -1, L | CMD_NOAUTH | CMD_NOMULTI, cmd_hello, 0, 0, 0},
    {"client", -2, L, cmd_client, 0, 0, 0},
    {"command", -1, L, cmd_command, 0, 0, 0},
    {"time", 1, R, cmd_time, 0, 0, 0},
    /* server */
    {"info", -1, R, cmd_info, 0, 0, 0},
    {"dbsize", 1, R, cmd_dbsize, 0, 0, 0},
    {"config", -2, L, cmd_config, 0, 0, 0},
    {"flushdb", -1, W, cmd_flushall, 0, 0, 0},
    {"flushall", -1, W, cmd_flushall, 0, 0, 0},
    {"shutdown", -1, L | CMD_NOMULTI, cmd_shutdown, 0, 0, 0},
    {"compact", 1, R, cmd_compact, 0, 0, 0},
    {"bgrewriteaof", 1, R, cmd_compact, 0, 0, 0},
    {"scrub", 1, R, cmd_scrub, 0, 0, 0},
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
