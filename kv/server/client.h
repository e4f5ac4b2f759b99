/*
 * client — one connection's state, as the connection code (conn.c) and
 * the commands that act on the connection (cmd_conn.c, multi.c) share it.
 *
 * Owns: nothing by itself; conn.c creates and frees clients, multi.c
 *   owns the queued commands and watched keys inside one.
 * Locking: a client belongs to one I/O thread and is touched only there.
 *   A job in flight carries a client pointer to the writer thread, which
 *   reads only the pointers set at creation (env, handoff), never the
 *   rest; the I/O thread takes the job back before it looks at the client.
 */
#ifndef KVD_CLIENT_H
#define KVD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "hooks.h"
#include "reply.h"
#include "resp.h"

struct bufferevent;
struct event;
struct kvd_job;
struct kvd_handoff;
struct kvd_io;
struct kvd_subref;

/* A key WATCHed by a client, with its sequence number when watched. */
typedef struct kvd_watch {
    uint8_t *key;
    size_t klen;
    uint64_t seq; /* 0: absent when watched */
} kvd_watch;

typedef struct kvd_client {
    uint64_t id;
    kvd_env *env;                   /* the server as commands see it */
    struct kvd_io *io;              /* its I/O thread's connections (conn.h) */
    struct kvd_handoff *handoff;    /* where finished jobs come back (jobs.h) */
    struct bufferevent *bev;        /* output (and the descriptor) */
    struct event *rev;              /* input: readable, read(2) into `in` */
    uint8_t *in;                    /* unparsed input is in[in_off, in_len) */
    size_t in_off, in_len, in_cap;
    struct kvd_client *prev, *next; /* the I/O thread's list, newest first */
    resp_args args;
    char addr[64];
    char *name;
    long long ctime; /* ms since the epoch */
    int authenticated;
    int close_after_reply;
    int eof;       /* the peer closed its side: finish the input, reply, close */
    int gone;      /* connection closed; free once pending == 0 */
    int pending;   /* write jobs in flight */
    int in_multi;
    int multi_error;
    struct kvd_job *mq; /* commands queued by MULTI (as jobs, not yet sent) */
    struct kvd_job *mq_tail;
    size_t mq_len;
    kvd_watch *watch;
    size_t nwatch, cap_watch;
    sbuf out;      /* scratch for replies built on the I/O thread */
    int out_paused; /* input not read: unsent replies passed KVD_OUTPUT_PAUSE_BYTES */
    long long obuf_soft_since; /* ms when first seen over the soft output limit; 0 not */
    uint64_t woff;       /* the log's offset after this client's last write (WAIT) */
    int repl_port;       /* REPLCONF listening-port, 0 none */
    char repl_ip[64];    /* REPLCONF ip-address, "" none */
    int repl_capa_kvd;   /* REPLCONF capa kvd */
    /* The registry (registry.h): the links, name, subscriptions and their
     * counts change under its lock on this client's thread; other
     * threads read them under it. */
    struct kvd_client *reg_prev, *reg_next;
    int registered;
    struct kvd_subref *subs, *psubs; /* channels and patterns subscribed */
    int nsub, npsub;
    char laddr[64];                  /* the server's side of the connection */
    int fd;
    int mail_refs; /* atomic: mails posted to it and not yet taken (jobs.h) */
    /* What CLIENT LIST shows of it, stored by its thread with relaxed
     * atomics for other threads to read. */
    long long last_ms;    /* ms since the epoch of its last command */
    const char *last_cmd; /* the command table's name, or NULL */
    long long pub_multi;  /* commands queued by MULTI, -1 outside MULTI */
    uint64_t pub_qbuf;    /* unparsed input bytes */
    uint64_t pub_omem;    /* unsent reply bytes */
    int pub_blocked;      /* a write waits for FAILOVER's pause to end (seq_cst: see conn.c) */
} kvd_client;

#endif
