/*
 * jobs — write commands (and EXEC) sent to the engine's writer thread as
 * transactions (kv_submit), and their way back to the client's I/O
 * thread.
 *
 * Owns: each job and its copies of the request's arguments; the hand-off
 *   queue of finished jobs (one per I/O thread, kvd_handoff).
 * Guarantees: a job's handler runs on the writer thread inside its
 *   transaction, with x->c NULL; the job is queued back to the I/O thread
 *   of its client in the order the writer finished them, and the thread
 *   is woken (kvd_handoff.wake).
 * Never: touches a client's state on the writer thread.
 * Locking: kvd_handoff.mu guards head/tail (the worker also keeps its
 *   list of new connections under it).
 */
#ifndef KVD_JOBS_H
#define KVD_JOBS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "cmd.h"

struct event;

/* A write command (or EXEC) sent to the writer thread. */
typedef struct kvd_job {
    struct kvd_job *next;
    kvd_client *c;
    const kvd_cmd *cmd; /* NULL when run is set */
    /* When set, runs instead of cmd->fn on the writer thread (EXEC:
     * multi.c). Returns the transaction's status. */
    kv_status (*run)(kv_txn *t, struct kvd_job *j, kvd_env *env);
    size_t argc;
    uint8_t **argv; /* copies: the input buffer moves on */
    size_t *argvlen;
    sbuf reply;
    kv_status st;
    struct kvd_job *mq;      /* EXEC: the queued commands, in order */
    kvd_watch *watch;        /* EXEC: the watched keys */
    size_t nwatch;
    uint64_t seq;            /* the log's offset when it completed (the client's WAIT offset) */
    int sync_short;          /* synchronous mode: fewer replicas than asked fsynced it in time */
    int sync_count;          /* ... how many did */
    size_t defer_off;        /* a queued CMD_CONN command: where in EXEC's reply its own goes */
    int ndefer;              /* EXEC: queued CMD_CONN commands, run on the I/O thread after */
    int aborted;             /* EXEC: a watched key had changed; nothing ran */
} kvd_job;

/* Bytes shared by the mails of one message (a published message goes
 * to many subscribers): freed by the last mail_free. */
typedef struct kvd_blob {
    int refs; /* atomic */
    size_t len;
    char data[];
} kvd_blob;

/* What one client's I/O thread is asked to do for it by another thread. */
typedef enum kvd_mail_kind {
    MAIL_MESSAGE, /* append blob (a pub/sub message, RESP) to its output */
    MAIL_KILL,    /* close it (CLIENT KILL): unsent replies are dropped */
    MAIL_RESUME,  /* the write pause (FAILOVER) ended: read its requests again */
} kvd_mail_kind;

typedef struct kvd_mail {
    struct kvd_mail *next;
    kvd_client *c; /* holds one of c->mail_refs until the mail is taken */
    kvd_mail_kind kind;
    kvd_blob *blob; /* MAIL_MESSAGE; one reference */
} kvd_mail;

/* Finished jobs and mails on their way back to one I/O thread. */
typedef struct kvd_handoff {
    pthread_mutex_t mu;
    kvd_job *head, *tail;
    kvd_mail *mhead, *mtail;
    struct event *wake; /* made active (event_active) after each job or mail */
} kvd_handoff;

/* A job holding a copy of c's current request (c->args) for cmd.
 * Returns NULL when out of memory. */
kvd_job *job_new(kvd_client *c, const kvd_cmd *cmd);

/* Frees j, its queued commands and watched keys. NULL is fine. */
void job_free(kvd_job *j);

/* Sends j to the writer thread; c->pending counts it until it comes back
 * through c->handoff. If the engine refuses it, an error reply goes to
 * c->out and j is freed. */
void job_submit(kvd_client *c, kvd_job *j);

/* Hands a finished job back to its client's I/O thread with status st
 * (any thread). */
void job_handback(kvd_job *j, kv_status st);

/* A job that runs nothing: it holds its client's place (c->pending)
 * until job_handback (WAIT). NULL when out of memory. */
kvd_job *job_new_blocked(kvd_client *c);

/* Appends the reply of finished job j to c->out: its own reply, or the
 * error that explains why the write was not done (fail-stop). */
void job_reply(kvd_client *c, const kvd_job *j);

/* A blob holding a copy of n bytes at p, with one reference. NULL when
 * out of memory. */
kvd_blob *blob_new(const void *p, size_t n);
/* Drops one reference (any thread); the last frees it. NULL is fine. */
void blob_put(kvd_blob *b);

/*
 * Posts a mail of `kind` for client c to c's I/O thread and wakes it
 * (any thread). Takes a reference on blob (may be NULL for MAIL_KILL)
 * and one of c->mail_refs, which keep c allocated until the mail is
 * taken (conn.c). The caller must know c is alive: it holds the
 * registry's lock with c registered (registry.h). Returns 0, or -1 when
 * out of memory (nothing posted).
 */
int mail_post(kvd_client *c, kvd_mail_kind kind, kvd_blob *blob);

/* Frees one taken mail: drops its blob reference and c's mail_refs.
 * Returns c's mail_refs left (the I/O thread frees a gone client at 0). */
int mail_free(kvd_mail *m);

#endif
