/*
 * cmd_string — the string commands: GET, SET (EX/PX/EXAT/PXAT/NX/XX/
 * KEEPTTL/GET), SETNX, SETEX, PSETEX, GETDEL, GETEX, MGET, MSET, MSETNX,
 * APPEND, STRLEN, INCR/INCRBY/DECR/DECRBY, as Redis 7's src/t_string.c.
 *
 * Owns: nothing; each handler reads and writes through the db_* helpers
 *   (cmd.h). Never: touches the connection (x->c).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

void cmd_get(cmdctx *x)
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

void cmd_strlen(cmdctx *x)
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

void cmd_mget(cmdctx *x)
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

void cmd_set(cmdctx *x)
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

void cmd_setnx(cmdctx *x)
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

void cmd_setex(cmdctx *x) { setex_generic(x, EXP_EX, "setex"); }
void cmd_psetex(cmdctx *x) { setex_generic(x, EXP_PX, "psetex"); }

void cmd_getdel(cmdctx *x)
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
void cmd_getex(cmdctx *x)
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

void cmd_mset(cmdctx *x)
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

void cmd_msetnx(cmdctx *x)
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

void cmd_append(cmdctx *x)
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

void cmd_incr(cmdctx *x) { incr_generic(x, 1); }
void cmd_decr(cmdctx *x) { incr_generic(x, -1); }
void cmd_incrby(cmdctx *x)
{
    long long by;
    if (arg_ll(x, 2, &by)) incr_generic(x, by);
}
void cmd_decrby(cmdctx *x)
{
    long long by;
    if (!arg_ll(x, 2, &by)) return;
    if (by == LLONG_MIN) {
        rp_error(x->out, "ERR decrement would overflow");
        return;
    }
    incr_generic(x, -by);
}

