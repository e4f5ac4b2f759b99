/*
 * kvd_internal — what the server core (kvd_server.c) and the command
 * implementations (kvd_cmd.c) share: the server, worker and client
 * structs, the reply buffer, and the command table interface. Not for
 * use outside kvd.
 *
 * Locking rules (memcached's thread.c style, stated once):
 *  - A client and its bufferevent belong to one I/O thread (worker) and
 *    are touched only there; jobs carry a client pointer to the writer
 *    thread but only the worker dereferences it when the job comes back.
 *  - worker->mu guards only the hand-over queues (new fds, finished
 *    jobs); everything else of a worker is its own thread's.
 *  - Server counters are updated with __atomic builtins.
 *  - The config is read by any thread; CONFIG SET changes only fields
 *    that are read atomically (ints) or under srv->cfg_mu (strings).
 */
#ifndef KVD_INTERNAL_H
#define KVD_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_store.h"
#include "kvd_config.h"
#include "clock.h"
#include "hooks.h"
#include "kvd_limits.h"
#include "reply.h"
#include "resp.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;

struct kvd_client;
struct kvd_worker;

/* A write command (or EXEC) sent to the writer thread. */
typedef struct kvd_job {
    struct kvd_job *next;
    struct kvd_client *c;
    const struct kvd_cmd *cmd; /* NULL for EXEC */
    size_t argc;
    uint8_t **argv; /* copies: the input buffer moves on */
    size_t *argvlen;
    sbuf reply;
    kv_status st;
    int is_exec;
    struct kvd_job *mq;     /* EXEC: the queued commands, in order */
    struct kvd_watch *watch; /* EXEC: the watched keys */
    size_t nwatch;
} kvd_job;

struct kvd_watch;
typedef struct kvd_watch {
    uint8_t *key;
    size_t klen;
    uint64_t seq; /* 0: absent when watched */
} kvd_watch;

typedef struct kvd_client {
    uint64_t id;
    struct kvd_worker *w;
    struct bufferevent *bev;        /* output (and the descriptor) */
    struct event *rev;              /* input: readable, read(2) into `in` */
    uint8_t *in;                    /* unparsed input is in[in_off, in_len) */
    size_t in_off, in_len, in_cap;
    struct kvd_client *prev, *next; /* the worker's list */
    resp_args args;
    char addr[64];
    char *name;
    long long ctime;
    int authenticated;
    int close_after_reply;
    int eof;       /* the peer closed its side: finish the input, reply, close */
    int gone;      /* connection closed; free once pending == 0 */
    int pending;   /* write jobs in flight */
    int in_multi;
    int multi_error;
    kvd_job *mq;   /* commands queued by MULTI (as jobs, not yet sent) */
    kvd_job *mq_tail;
    size_t mq_len;
    kvd_watch *watch;
    size_t nwatch, cap_watch;
    sbuf out;      /* scratch for replies built on the I/O thread */
    int out_paused; /* input not read: unsent replies passed KVD_OUTPUT_PAUSE_BYTES */
    long long obuf_soft_since; /* ms when first seen over the soft output limit; 0 not */
} kvd_client;

typedef struct kvd_worker {
    struct kvd_server *srv;
    int idx;
    pthread_t thread;
    struct event_base *base;
    struct event *wake;
    pthread_mutex_t mu;
    int *newfds;
    size_t nnew, cap_new;
    kvd_job *done_head, *done_tail;
    kvd_client *clients;
    int stopping;
    struct event *ev_clients_cron; /* once a second: output-buffer limits */
    uint64_t obuf_peak;       /* largest unsent output seen since the last tick (this thread only) */
    uint64_t obuf_recent_max; /* the largest over the last tick or two (atomic; INFO) */
} kvd_worker;

struct kvd_server {
    kvd_env env; /* store, config, counters, hooks: what commands see */
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *sig_term, *sig_int, *sig_usr1, *ev_shutdown, *ev_cron;
    kvd_worker *workers;
    int nworkers;
    unsigned next_worker;
    int port;
    long long start_ms;
    int pidfile_written;
    /* background compaction (COMPACT, SIGUSR1, or dead bytes over the
     * configured share): one thread at a time */
    pthread_mutex_t compact_mu;
    pthread_t compact_thread;
    int compact_started; /* a thread exists that must be joined */
    int compacting;      /* it is running (atomic) */
    pthread_t hints_thread; /* writes hint files of sealed segments */
    int hints_started;   /* a thread exists that must be joined (event loop only) */
    int hinting;         /* it is running (atomic) */
    int hints_failed;    /* a run failed: no more automatic runs (atomic) */
    struct kv_scrub *scrub; /* the background scrub (its own thread), or NULL */
    long long test_clock_offset_ms; /* KVD_TEST_CLOCK_OFFSET_MS: tests only (test_clock) */
    long long last_cron_ms;
    int cron_hz; /* the rate ev_cron runs at now (main thread only) */
    /* resource limits (kvd_limits.h) */
    uint64_t nofile_limit;        /* the soft RLIMIT_NOFILE after start */
    uint64_t fd_reserved;         /* descriptors kept beside maxclients' */
    int spare_fd;                 /* /dev/null, given up to refuse a client at EMFILE; -1 none */
    struct event *ev_accept_resume; /* re-enables the listener after an accept error */
    kvd_ratelimit accept_log;     /* accept errors: one log line a second (main thread) */
};

/* Command flags: where a command runs and what MULTI does with it. */
enum {
    CMD_WRITE = 1 << 0,      /* may write: runs as a transaction on the writer thread */
    CMD_READ = 1 << 1,       /* reads the store on the I/O thread (inside EXEC: on the writer) */
    CMD_NOAUTH = 1 << 2,     /* allowed before AUTH */
    CMD_CONN = 1 << 3,       /* needs the connection (x->c): runs on the I/O thread at once;
                                refused inside MULTI unless CMD_NOMULTI */
    CMD_NOMULTI = 1 << 4,    /* runs at once even inside MULTI (EXEC, DISCARD, ...) */
    CMD_RUNS_MULTI = 1 << 5, /* sends the queued MULTI to the writer thread (EXEC) */
};

/* What a command handler sees. txn is non-NULL on the writer thread. */
typedef struct cmdctx {
    kvd_env *env;
    kvd_client *c; /* NULL on the writer thread: client state is off limits there */
    size_t argc;
    const uint8_t *const *argv;
    const size_t *argvlen;
    kv_txn *txn;
    sbuf *out;
} cmdctx;

typedef struct kvd_cmd {
    const char *name; /* lower case */
    int arity;        /* Redis style: N exact, -N at least N (name included) */
    int flags;
    void (*fn)(cmdctx *x);
    int first_key, last_key, key_step; /* for COMMAND */
} kvd_cmd;

/* Looks a command up by name (case-insensitive). NULL if unknown. */
const kvd_cmd *kvd_cmd_lookup(const uint8_t *name, size_t len);
/* The table, and its length. */
const kvd_cmd *kvd_cmd_table(size_t *n);

/* Handlers of the CMD_CONN commands (kvd_server.c). */
void cmd_quit(cmdctx *x);
void cmd_select(cmdctx *x);
void cmd_auth(cmdctx *x);
void cmd_hello(cmdctx *x);
void cmd_client(cmdctx *x);
void cmd_command(cmdctx *x);
void cmd_config(cmdctx *x);
void cmd_shutdown(cmdctx *x);
void cmd_multi(cmdctx *x);
void cmd_exec(cmdctx *x);
void cmd_discard(cmdctx *x);
void cmd_watch(cmdctx *x);
void cmd_unwatch(cmdctx *x);

/* Runs a queued MULTI as one transaction on the writer thread (EXEC's
 * job). */
kv_status kvd_exec_txn(kv_txn *t, kvd_job *job, kvd_env *env);

#endif
