/*
 * worker — the I/O threads: one libevent event_base each, serving the
 * connections the listener hands over (round robin) and taking back the
 * jobs the writer thread finished.
 *
 * Owns: the threads, their event bases and wake-up events.
 * Guarantees: a connection handed to a worker is served on its thread
 *   only. Shutdown happens in two steps (kvd_workers_stop_reading, then
 *   kvd_workers_finish) so the store can drain in between.
 * Locking: io.ho.mu guards newfds and the finished-job queue; the rest of
 *   a worker is its own thread's.
 */
#ifndef KVD_WORKER_H
#define KVD_WORKER_H

#include <pthread.h>
#include <stddef.h>

#include "conn.h"

struct event;

typedef struct kvd_worker {
    kvd_io io;
    int idx;
    pthread_t thread;
    int *newfds; /* connections handed over, not yet served (io.ho.mu) */
    size_t nnew, cap_new;
    struct event *ev_clients_cron; /* once a second: output-buffer limits */
} kvd_worker;

/* Creates n workers' event bases and events (no threads yet). Returns the
 * array, or NULL with err filled. */
kvd_worker *kvd_workers_new(int n, kvd_env *env, char *err, size_t errcap);

/* Starts the n threads (named kvd-io-N). Returns 0, or -1 with err
 * filled and the threads that had started stopped again. */
int kvd_workers_start(kvd_worker *ws, int n, char *err, size_t errcap);

/* Hands the accepted socket fd to w. Returns 0, or -1 when out of memory
 * (fd is then still the caller's). Any thread. */
int kvd_worker_hand_fd(kvd_worker *w, int fd);

/* Shutdown, step 1: every worker stops reading requests; returns when
 * all have. Writes already sent stay queued in the store. */
void kvd_workers_stop_reading(kvd_worker *ws, int n);

/* Shutdown, step 2 (after the store drained): the last replies go out,
 * the threads end and are joined, and every client and worker is freed. */
void kvd_workers_finish(kvd_worker *ws, int n);

/* Frees n workers whose threads never started (a failed start). */
void kvd_workers_free(kvd_worker *ws, int n);

#endif
