/*
 * conn — client connections on one I/O thread: reading requests
 * (read(2) into the client's buffer, resp_parse), dispatching them
 * (commands run here, or go to the writer thread as jobs), sending
 * replies, and the output-buffer limits and backpressure of kvd_limits.h.
 *
 * Owns: every kvd_client of its kvd_io, their sockets and events.
 * Guarantees: per connection, replies go out in request order.
 *   Consecutive write commands of one connection are all queued at once
 *   (so pipelined writes share a group commit); any other command waits
 *   until the connection's queued writes are acknowledged, so it sees
 *   them. A client with KVD_OUTPUT_PAUSE_BYTES of unsent replies is not
 *   read until they drain to KVD_OUTPUT_RESUME_BYTES.
 * Never: replies with data from a write that is not yet acknowledged;
 *   touches another I/O thread's clients.
 * Locking: none; everything here runs on the kvd_io's own thread (the
 *   writer thread only pushes to io->ho, see jobs.h).
 */
#ifndef KVD_CONN_H
#define KVD_CONN_H

#include <stdint.h>

#include "client.h"
#include "hooks.h"
#include "jobs.h"

struct event_base;

/* One I/O thread's connections. */
typedef struct kvd_io {
    kvd_env *env;
    struct event_base *base;
    kvd_handoff ho;           /* finished jobs; ho.mu also guards the worker's new fds */
    kvd_client *clients;      /* newest first */
    int stopping;             /* shutting down: no more requests are read */
    uint64_t obuf_peak;       /* largest unsent output seen since the last tick (this thread only) */
    uint64_t obuf_recent_max; /* the largest over the last tick or two (atomic; INFO) */
} kvd_io;

/* Serves the connected socket fd (counted already in connected_clients;
 * on failure it is closed and uncounted). */
void conn_new(kvd_io *io, int fd);

/* Takes back the finished jobs `done` (a list, in the order the writer
 * finished them): each reply goes to its client, which then reads on. */
void conn_jobs_done(kvd_io *io, kvd_job *done);

/* Takes the mails `mails` (a list, in posting order; jobs.h): messages go
 * to their clients' output, subject to the pubsub class's output-buffer
 * limit; killed clients are closed. Each mail is freed. */
void conn_mail(kvd_io *io, kvd_mail *mails);

/* Once a second: the soft output limit's clock runs out even for a client
 * that gets no new replies (it is paused); publishes obuf_recent_max. */
void conn_cron(kvd_io *io);

/* Shutdown: no more requests are read on this thread. */
void conn_stop_reading(kvd_io *io);

/* Frees every client, jobs in flight or not (after the thread stopped). */
void conn_free_all(kvd_io *io);

#endif
