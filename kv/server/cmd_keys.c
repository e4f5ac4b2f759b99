/*
 * cmd_keys — the keyspace commands: DEL, UNLINK, EXISTS, TYPE, RENAME,
 * KEYS, SCAN (MATCH/COUNT/TYPE), EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT
 * (NX/XX/GT/LT), TTL, PTTL, PERSIST, as Redis 7's src/db.c and
 * src/expire.c.
 *
 * Owns: nothing. Never: touches the connection (x->c). KEYS walks the
 *   whole key directory in batches of 1024 (kv_scan), as Redis's KEYS
 *   walks the whole dict.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "glob.h"
#include "kv_keydir.h"

void cmd_del(cmdctx *x)
{
    long long n = 0;
    for (size_t i = 1; i < x->argc; i++)
        if (db_del(x, KEY(i)) == KV_OK) n++;
    rp_int(x->out, n);
}

void cmd_exists(cmdctx *x)
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

void cmd_type(cmdctx *x)
{
    rp_status(x->out, db_info(x, KEY(1), NULL, NULL) == KV_OK ? "string" : "none");
}

void cmd_rename(cmdctx *x)
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

void cmd_ttl(cmdctx *x) { ttl_generic(x, 0); }
void cmd_pttl(cmdctx *x) { ttl_generic(x, 1); }

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

void cmd_expire(cmdctx *x) { expire_generic(x, EXP_EX, "expire"); }
void cmd_pexpire(cmdctx *x) { expire_generic(x, EXP_PX, "pexpire"); }
void cmd_expireat(cmdctx *x) { expire_generic(x, EXP_EXAT, "expireat"); }
void cmd_pexpireat(cmdctx *x) { expire_generic(x, EXP_PXAT, "pexpireat"); }

void cmd_persist(cmdctx *x)
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
    if (a->all || kvd_glob_match(a->pat, a->pl, key, klen)) {
        rp_bulk(&a->body, key, klen);
        a->n++;
    }
}

void cmd_keys(cmdctx *x)
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
void cmd_scan(cmdctx *x)
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

