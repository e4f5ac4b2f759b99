/*
 * cmd_common — what the command files share: strict argument parsing,
 * the common error replies, and store access that goes through the
 * writer's transaction when there is one (cmd.h).
 */
#include <limits.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "cmd.h"

void rp_io_error(sbuf *b, kv_status st)
{
    if (st == KV_CORRUPT)
        rp_error(b, "IOERR data corruption detected while reading a value; run kvfsck on the data directory");
    else
        rp_error(b, "IOERR %s", kv_strerror(st));
}

/* Strict integer parsing in the manner of Redis's string2ll: optional
 * '-', no leading zeros, no spaces or '+', within long long. */
int str2ll(const uint8_t *p, size_t n, long long *out)
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

int arg_ll(cmdctx *x, size_t i, long long *v)
{
    if (!str2ll(x->argv[i], x->argvlen[i], v)) {
        rp_error(x->out, ERR_INT);
        return 0;
    }
    return 1;
}

int arg_is(cmdctx *x, size_t i, const char *word)
{
    size_t n = strlen(word);
    return x->argvlen[i] == n && strncasecmp((const char *)x->argv[i], word, n) == 0;
}

/* ---- store access: through the transaction when there is one ---- */

kv_status db_get(cmdctx *x, const uint8_t *k, size_t kl, kv_value *v)
{
    return x->txn ? kv_txn_get(x->txn, k, kl, v) : kv_get(x->env->store, k, kl, v);
}

kv_status db_info(cmdctx *x, const uint8_t *k, size_t kl, uint64_t *expire, uint64_t *seq)
{
    return x->txn ? kv_txn_key_info(x->txn, k, kl, expire, seq) : kv_key_info(x->env->store, k, kl, expire, seq);
}

uint64_t db_now(cmdctx *x)
{
    return x->txn ? kv_txn_now_ms(x->txn) : (uint64_t)kvd_mstime();
}

/* Writes go only through a transaction (CMD_WRITE handlers). */
kv_status db_put(cmdctx *x, const uint8_t *k, size_t kl, const void *v, size_t vl, uint64_t expire, uint32_t flags)
{
    return kv_txn_put(x->txn, k, kl, v, vl, expire, flags);
}

kv_status db_del(cmdctx *x, const uint8_t *k, size_t kl)
{
    return kv_txn_delete(x->txn, k, kl);
}

void count_hit(cmdctx *x, int hit)
{
    __atomic_add_fetch(hit ? &x->env->n.hits : &x->env->n.misses, 1, __ATOMIC_RELAXED);
}

/* A put failed inside a transaction: the only possible causes are sizes
 * over the limits or memory. */
void rp_put_error(sbuf *b, kv_status st)
{
    if (st == KV_INVALID)
        rp_error(b, "ERR write exceeds kvd's size limits (key %u bytes, value %u bytes, %u bytes per transaction)",
                 KV_MAX_KEY_LEN, KV_MAX_VALUE_LEN, KV_MAX_BATCH_LEN);
    else
        rp_error(b, "ERR %s", kv_strerror(st));
}

/* Turns an expire option and its number into an absolute ms time.
 * Returns 0 and the error already replied on failure. */
int expire_to_abs(cmdctx *x, int kind, long long v, const char *cmdname, uint64_t *abs_ms)
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
int expire_option(cmdctx *x, size_t i)
{
    return arg_is(x, i, "ex") ? EXP_EX : arg_is(x, i, "px") ? EXP_PX : arg_is(x, i, "exat") ? EXP_EXAT
           : arg_is(x, i, "pxat")                            ? EXP_PXAT
                                                             : EXP_NONE;
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] */

void rp_help(sbuf *b, const char *const *lines, size_t n)
{
    rp_array(b, (long long)n);
    for (size_t i = 0; i < n; i++) rp_status(b, lines[i]);
}
