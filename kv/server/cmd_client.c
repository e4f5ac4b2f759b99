/*
 * cmd_client — CLIENT ID, SETNAME, GETNAME, SETINFO, INFO, LIST, KILL and
 * HELP, as Redis 7.0's src/networking.c (clientCommand), over every I/O
 * thread's clients through the registry (registry.h).
 *
 * Owns: nothing; names and the client list are the registry's.
 * Guarantees: CLIENT KILL never closes the caller unless asked (SKIPME no,
 *   or the old CLIENT KILL addr:port form naming it), and then only after
 *   its reply; other clients are closed on their own threads, their
 *   unsent replies dropped, as Redis's freeClientAsync.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "cmd.h"
#include "registry.h"

int client_name_valid(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < '!' || p[i] > '~') return 0;
    return 1;
}

/* A NUL-terminated copy of argument i in buf (cut to its size). */
static const char *arg_str(cmdctx *x, size_t i, char *buf, size_t cap)
{
    size_t n = x->argvlen[i] < cap - 1 ? x->argvlen[i] : cap - 1;
    memcpy(buf, x->argv[i], n);
    buf[n] = 0;
    return buf;
}

/* A client type's name (Redis's getClientTypeByName). Returns 0 and *t,
 * or -1 with Redis's error replied. */
static int parse_type(cmdctx *x, size_t i, reg_ctype *t)
{
    if (arg_is(x, i, "normal"))
        *t = CTYPE_NORMAL;
    else if (arg_is(x, i, "slave") || arg_is(x, i, "replica"))
        *t = CTYPE_REPLICA;
    else if (arg_is(x, i, "pubsub"))
        *t = CTYPE_PUBSUB;
    else if (arg_is(x, i, "master"))
        *t = CTYPE_MASTER;
    else {
        rp_error(x->out, "ERR Unknown client type '%.*s'", (int)x->argvlen[i], (const char *)x->argv[i]);
        return -1;
    }
    return 0;
}

/* A client id: an integer of at least 1. */
static int parse_id(cmdctx *x, size_t i, uint64_t *id)
{
    long long v;
    if (!str2ll(x->argv[i], x->argvlen[i], &v) || v < 1) return -1;
    *id = (uint64_t)v;
    return 0;
}

/* CLIENT LIST [TYPE type] [ID id [id ...]] */
static void client_list(cmdctx *x)
{
    reg_filter f = {.type = CTYPE_ANY};
    uint64_t *ids = NULL;
    if (x->argc == 4 && arg_is(x, 2, "type")) {
        if (parse_type(x, 3, &f.type) < 0) return;
    } else if (x->argc > 3 && arg_is(x, 2, "id")) {
        ids = calloc(x->argc - 3, sizeof *ids);
        if (!ids) {
            rp_error(x->out, "ERR out of memory");
            return;
        }
        for (size_t i = 3; i < x->argc; i++) {
            long long v; /* Redis 7.0: any integer; 0 and below match no client */
            if (!str2ll(x->argv[i], x->argvlen[i], &v)) {
                rp_error(x->out, "ERR Invalid client ID");
                free(ids);
                return;
            }
            ids[i - 3] = v > 0 ? (uint64_t)v : 0;
        }
        f.ids = ids;
        f.nids = x->argc - 3;
    } else if (x->argc != 2) {
        rp_error(x->out, ERR_SYNTAX);
        return;
    }
    sbuf b = {0};
    reg_list(x->env->reg, &f, kvd_mstime(), &b);
    rp_bulk(x->out, b.p ? b.p : "", b.len);
    sb_free(&b);
    free(ids);
}

/* The old form, CLIENT KILL addr:port: +OK, or an error if no client has
 * that address. */
static void kill_addr(cmdctx *x)
{
    char addr[64];
    reg_filter f = {.type = CTYPE_ANY, .addr = arg_str(x, 2, addr, sizeof addr)};
    int self;
    if (x->argvlen[2] >= sizeof addr || reg_kill(x->env->reg, &f, x->c, &self) == 0) {
        rp_error(x->out, "ERR No such client");
        return;
    }
    if (self) x->c->close_after_reply = 1;
    rp_ok(x->out);
}

/* CLIENT KILL <filter> <value> ... (ID, TYPE, ADDR, LADDR, USER, SKIPME):
 * the number of clients closed. */
static void kill_filters(cmdctx *x)
{
    reg_filter f = {.type = CTYPE_ANY, .skip = x->c};
    uint64_t id;
    char addr[64], laddr[64];
    for (size_t i = 2; i < x->argc; i += 2) {
        if (i + 1 >= x->argc) {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
        if (arg_is(x, i, "id")) {
            if (parse_id(x, i + 1, &id) < 0) {
                rp_error(x->out, "ERR client-id should be greater than 0");
                return;
            }
            f.ids = &id;
            f.nids = 1;
        } else if (arg_is(x, i, "type")) {
            if (parse_type(x, i + 1, &f.type) < 0) return;
        } else if (arg_is(x, i, "addr")) {
            f.addr = arg_str(x, i + 1, addr, sizeof addr);
        } else if (arg_is(x, i, "laddr")) {
            f.laddr = arg_str(x, i + 1, laddr, sizeof laddr);
        } else if (arg_is(x, i, "user")) {
            if (!arg_is(x, i + 1, "default")) { /* the only user there is */
                rp_error(x->out, "ERR No such user '%.*s'", (int)x->argvlen[i + 1], (const char *)x->argv[i + 1]);
                return;
            }
        } else if (arg_is(x, i, "skipme")) {
            if (arg_is(x, i + 1, "yes"))
                f.skip = x->c;
            else if (arg_is(x, i + 1, "no"))
                f.skip = NULL;
            else {
                rp_error(x->out, ERR_SYNTAX);
                return;
            }
        } else {
            rp_error(x->out, ERR_SYNTAX);
            return;
        }
    }
    int self;
    long long n = reg_kill(x->env->reg, &f, x->c, &self);
    if (self) x->c->close_after_reply = 1;
    rp_int(x->out, n);
}

static void client_help(cmdctx *x)
{
    static const char *const lines[] = {
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "KILL <ip:port>",
        "    Kill connection made from <ip:port>.",
        "KILL <option> <value> [<option> <value> [...]]",
        "    Kill connections. Options are:",
        "    * ADDR (<ip:port>|<unixsocket>:0)",
        "      Kill connections made from the specified address",
        "    * LADDR (<ip:port>|<unixsocket>:0)",
        "      Kill connections made to specified local address",
        "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
        "      Kill connections by type.",
        "    * USER <username>",
        "      Kill connections authenticated by <username>.",
        "    * SKIPME (YES|NO)",
        "      Skip killing current connection (default: yes).",
        "    * ID <client-id>",
        "      Kill connections by client id.",
        "LIST [options ...]",
        "    Return information about client connections. Options:",
        "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
        "      Return clients of specified type.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "SETINFO <option> <value>",
        "    Set client meta attr. Options are:",
        "    * LIB-NAME: the client lib name.",
        "    * LIB-VER: the client lib version.",
        "HELP",
        "    Prints this help.",
    };
    rp_help(x->out, lines, sizeof lines / sizeof lines[0]);
}

static void client_setname(cmdctx *x)
{
    if (!client_name_valid(x->argv[2], x->argvlen[2])) {
        rp_error(x->out, "ERR Client names cannot contain spaces, newlines or special characters.");
        return;
    }
    if (reg_set_name(x->env->reg, x->c, x->argv[2], x->argvlen[2]) != 0)
        rp_error(x->out, "ERR out of memory");
    else
        rp_ok(x->out);
}

/* Subcommands with a fixed argument count: name, then argc with it. */
static const struct {
    const char *name;
    size_t argc;
} fixed[] = {{"id", 2}, {"setname", 3}, {"getname", 2}, {"setinfo", 4}, {"info", 2}, {"help", 2}};

void cmd_client(cmdctx *x)
{
    kvd_client *c = x->c;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (arg_is(x, 1, fixed[i].name) && x->argc != fixed[i].argc) {
            rp_error(x->out, "ERR wrong number of arguments for 'client|%s' command", fixed[i].name);
            return;
        }
    }
    if (arg_is(x, 1, "id")) {
        rp_int(x->out, (long long)c->id);
    } else if (arg_is(x, 1, "setname")) {
        client_setname(x);
    } else if (arg_is(x, 1, "getname")) {
        if (c->name)
            rp_bulk_str(x->out, c->name);
        else
            rp_nil(x->out);
    } else if (arg_is(x, 1, "setinfo")) {
        if (!arg_is(x, 2, "lib-name") && !arg_is(x, 2, "lib-ver")) {
            rp_error(x->out, "ERR Unrecognized option '%.*s'", (int)x->argvlen[2], (const char *)x->argv[2]);
            return;
        }
        rp_ok(x->out);
    } else if (arg_is(x, 1, "info")) {
        sbuf b = {0};
        reg_info_line(x->env->reg, c, kvd_mstime(), &b);
        rp_bulk(x->out, b.p ? b.p : "", b.len);
        sb_free(&b);
    } else if (arg_is(x, 1, "list")) {
        client_list(x);
    } else if (arg_is(x, 1, "kill") && x->argc == 3) {
        kill_addr(x);
    } else if (arg_is(x, 1, "kill") && x->argc > 3) {
        kill_filters(x);
    } else if (arg_is(x, 1, "kill")) {
        rp_error(x->out, "ERR wrong number of arguments for 'client|kill' command");
    } else if (arg_is(x, 1, "help")) {
        client_help(x);
    } else {
        rp_error(x->out, "ERR unknown subcommand '%.*s'. Try CLIENT HELP.", (int)x->argvlen[1],
                 (const char *)x->argv[1]);
    }
}
