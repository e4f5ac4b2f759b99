/*
 * cmd_conn — the connection commands: PING, ECHO, QUIT, SELECT, AUTH,
 * HELLO, RESET and SCRIPT KILL, as Redis 7's src/server.c,
 * src/networking.c and src/eval.c. CLIENT is in cmd_client.c.
 *
 * Owns: the client's authenticated flag.
 * Locking: requirepass is read under env->cfg_mu.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cmd.h"
#include "multi.h"
#include "registry.h"
#include "repl.h"

void cmd_ping(cmdctx *x)
{
    if (x->argc > 2) {
        rp_error(x->out, "ERR wrong number of arguments for 'ping' command");
        return;
    }
    if (x->c && x->c->nsub + x->c->npsub > 0) { /* subscriber mode: an array, as Redis's RESP2 */
        rp_array(x->out, 2);
        rp_bulk_str(x->out, "pong");
        if (x->argc == 2)
            rp_bulk(x->out, KEY(1));
        else
            rp_bulk(x->out, "", 0);
    } else if (x->argc == 2) {
        rp_bulk(x->out, KEY(1));
    } else {
        rp_status(x->out, "PONG");
    }
}

void cmd_echo(cmdctx *x) { rp_bulk(x->out, KEY(1)); }

void cmd_quit(cmdctx *x)
{
    rp_ok(x->out);
    x->c->close_after_reply = 1;
}

void cmd_select(cmdctx *x)
{
    long long db;
    const uint8_t *p = x->argv[1];
    size_t len = x->argvlen[1];
    char tmp[32];
    if (len == 0 || len >= sizeof tmp) {
        rp_error(x->out, "ERR value is not an integer or out of range");
        return;
    }
    memcpy(tmp, p, len);
    tmp[len] = 0;
    char *end;
    errno = 0;
    db = strtoll(tmp, &end, 10);
    if (errno || *end || end == tmp)
        rp_error(x->out, "ERR value is not an integer or out of range");
    else if (db != 0)
        rp_error(x->out, "ERR DB index is out of range");
    else
        rp_ok(x->out);
}

static int check_password(kvd_env *env, const uint8_t *p, size_t n)
{
    pthread_mutex_lock(&env->cfg_mu);
    const char *want = env->cfg->requirepass;
    int ok = 0;
    if (want && *want) {
        size_t wn = strlen(want);
        unsigned diff = (unsigned)(wn ^ n);
        for (size_t i = 0; i < n; i++) diff |= (unsigned)(p[i] ^ (uint8_t)want[i % (wn ? wn : 1)]);
        ok = diff == 0;
    }
    pthread_mutex_unlock(&env->cfg_mu);
    return ok;
}

int kvd_password_set(kvd_env *env)
{
    pthread_mutex_lock(&env->cfg_mu);
    int set = env->cfg->requirepass && *env->cfg->requirepass;
    pthread_mutex_unlock(&env->cfg_mu);
    return set;
}

void cmd_auth(cmdctx *x)
{
    kvd_client *c = x->c;
    if (x->argc > 3) {
        rp_error(x->out, "ERR syntax error");
        return;
    }
    /* Redis 7: only the one-argument form is an error without a
     * password; "AUTH default <anything>" succeeds, as the default user
     * then has nopass. */
    if (!kvd_password_set(x->env) && x->argc == 2) {
        rp_error(x->out, "ERR AUTH <password> called without any password configured for the default user. "
                          "Are you sure your configuration is correct?");
        return;
    }
    size_t pi = x->argc == 3 ? 2 : 1;
    if ((x->argc == 3 && !arg_is(x, 1, "default")) ||
        (kvd_password_set(x->env) && !check_password(x->env, x->argv[pi], x->argvlen[pi]))) {
        rp_error(x->out, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
    }
    c->authenticated = 1;
    rp_ok(x->out);
}

/* HELLO [protover [AUTH username password] [SETNAME clientname]] */
void cmd_hello(cmdctx *x)
{
    kvd_client *c = x->c;
    size_t i = 1;
    if (x->argc >= 2) {
        const uint8_t *v = x->argv[1];
        size_t n = x->argvlen[1];
        long long ver = 0;
        int ok = n > 0 && n < 19;
        for (size_t k = 0; ok && k < n; k++) {
            ok = v[k] >= '0' && v[k] <= '9';
            ver = ver * 10 + (v[k] - '0');
        }
        if (!ok) {
            rp_error(x->out, "ERR Protocol version is not an integer or out of range");
            return;
        }
        if (ver != 2) {
            rp_error(x->out, "NOPROTO unsupported protocol version");
            return;
        }
        i = 2;
    }
    const uint8_t *name = NULL;
    size_t name_len = 0;
    for (; i < x->argc; i++) {
        if (arg_is(x, i, "auth") && i + 2 < x->argc) {
            if (!arg_is(x, i + 1, "default") ||
                (kvd_password_set(x->env) && !check_password(x->env, x->argv[i + 2], x->argvlen[i + 2]))) {
                rp_error(x->out, "WRONGPASS invalid username-password pair or user is disabled.");
                return;
            }
            c->authenticated = 1;
            i += 2;
        } else if (arg_is(x, i, "setname") && i + 1 < x->argc) {
            name = x->argv[i + 1];
            name_len = x->argvlen[i + 1];
            if (!client_name_valid(name, name_len)) {
                rp_error(x->out, "ERR Client names cannot contain spaces, newlines or special characters.");
                return;
            }
            i++;
        } else {
            rp_error(x->out, "ERR Syntax error in HELLO option '%.*s'", (int)x->argvlen[i],
                     (const char *)x->argv[i]);
            return;
        }
    }
    if (kvd_password_set(x->env) && !c->authenticated) {
        rp_error(x->out, "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                          "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
                          "select the RESP protocol version at the same time");
        return;
    }
    if (name && reg_set_name(x->env->reg, c, name, name_len) != 0) {
        rp_error(x->out, "ERR out of memory");
        return;
    }
    rp_array(x->out, 14);
    rp_bulk_str(x->out, "server");
    rp_bulk_str(x->out, "kvd");
    rp_bulk_str(x->out, "version");
    rp_bulk_str(x->out, KVD_VERSION);
    rp_bulk_str(x->out, "proto");
    rp_int(x->out, 2);
    rp_bulk_str(x->out, "id");
    rp_int(x->out, (long long)c->id);
    rp_bulk_str(x->out, "mode");
    rp_bulk_str(x->out, "standalone");
    rp_bulk_str(x->out, "role");
    rp_bulk_str(x->out, x->env->repl && kvrepl_is_replica(x->env->repl) ? "replica" : "master");
    rp_bulk_str(x->out, "modules");
    rp_array(x->out, 0);
}

/* RESET: the connection as new (Redis 6.2's clearClientConnectionState):
 * MULTI discarded, keys unwatched, every subscription dropped, the name
 * cleared, authenticated only if no password is set. */
void cmd_reset(cmdctx *x)
{
    kvd_client *c = x->c;
    multi_client_free(c);
    for (int k = 0; k < 2; k++) {
        uint8_t *p;
        size_t n;
        while (reg_first(x->env->reg, c, (reg_kind)k, &p, &n) == 1) {
            reg_unsubscribe(x->env->reg, c, (reg_kind)k, p, n);
            free(p);
        }
    }
    reg_set_name(x->env->reg, c, NULL, 0);
    c->authenticated = !kvd_password_set(x->env);
    rp_status(x->out, "RESET");
}

/* SCRIPT: kvd runs no scripts (yet), so KILL answers as Redis does when
 * none is running; Sentinel sends it to a server that answers -BUSY. */
void cmd_script(cmdctx *x)
{
    if (arg_is(x, 1, "kill") && x->argc == 2)
        rp_error(x->out, "NOTBUSY No scripts in execution right now.");
    else if (arg_is(x, 1, "kill"))
        rp_error(x->out, "ERR wrong number of arguments for 'script|kill' command");
    else
        rp_error(x->out, "ERR unknown subcommand '%.*s'. Try SCRIPT HELP.", (int)x->argvlen[1],
                 (const char *)x->argv[1]);
}
