/*
 * worker — the I/O threads (worker.h).
 */
#define _GNU_SOURCE
#include "worker.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kv_store.h"

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_worker *w = arg;
    pthread_mutex_lock(&w->io.ho.mu);
    int *fds = w->newfds;
    size_t nfds = w->nnew;
    w->newfds = NULL;
    w->nnew = w->cap_new = 0;
    kvd_job *done = w->io.ho.head;
    w->io.ho.head = w->io.ho.tail = NULL;
    kvd_mail *mails = w->io.ho.mhead;
    w->io.ho.mhead = w->io.ho.mtail = NULL;
    pthread_mutex_unlock(&w->io.ho.mu);
    for (size_t i = 0; i < nfds; i++) {
        if (w->io.stopping) {
            close(fds[i]);
            __atomic_sub_fetch(&w->io.env->n.connected_clients, 1, __ATOMIC_RELAXED);
        } else {
            conn_new(&w->io, fds[i]);
        }
    }
    free(fds);
    conn_jobs_done(&w->io, done);
    conn_mail(&w->io, mails);
}

/* Once a second on each I/O thread (conn_cron). */
static void on_clients_cron(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_worker *w = arg;
    conn_cron(&w->io);
}

static void *worker_main(void *arg)
{
    kvd_worker *w = arg;
    /* Signals go to the main thread, except the synchronous ones: a
     * media error under a mapped segment must reach kv_io's SIGBUS
     * handler in the thread that read it (an I/O error reply), not kill
     * kvd. */
    kv_io_block_async_signals();
    char name[16];
    snprintf(name, sizeof name, "kvd-io-%d", w->idx);
    pthread_setname_np(pthread_self(), name);
    /* The wake event has no descriptor: keep looping while idle. */
    event_base_loop(w->io.base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Barrier for running something on every I/O thread. */
typedef struct barrier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
} barrier;

typedef struct stop_arg {
    kvd_worker *w;
    barrier *b;
} stop_arg;

static void barrier_arrive(barrier *b)
{
    pthread_mutex_lock(&b->mu);
    b->left--;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* On each I/O thread: take no new requests. */
static void stop_reading(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stop_arg *a = arg;
    conn_stop_reading(&a->w->io);
    barrier_arrive(a->b);
}

/* On each I/O thread, after the store drained: send the last replies,
 * then leave the loop. */
static void finish_worker(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_worker *w = arg;
    on_wake(-1, 0, w);
    struct timeval tv = {0, 200000};
    event_base_loopexit(w->io.base, &tv);
}

static void on_all_workers(kvd_worker *ws, int n, event_callback_fn fn, int wait)
{
    barrier b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, n};
    stop_arg *args = calloc((size_t)n, sizeof *args);
    struct timeval zero = {0, 0};
    for (int i = 0; i < n; i++) {
        args[i].w = &ws[i];
        args[i].b = &b;
        event_base_once(ws[i].io.base, -1, EV_TIMEOUT, fn, wait ? (void *)&args[i] : (void *)&ws[i],
                        &zero);
    }
    if (wait) {
        pthread_mutex_lock(&b.mu);
        while (b.left > 0) pthread_cond_wait(&b.cv, &b.mu);
        pthread_mutex_unlock(&b.mu);
    }
    free(args);
}

kvd_worker *kvd_workers_new(int n, kvd_env *env, char *err, size_t errcap)
{
    kvd_worker *ws = calloc((size_t)n, sizeof *ws);
    if (!ws) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        kvd_worker *w = &ws[i];
        w->io.env = env;
        w->idx = i;
        pthread_mutex_init(&w->io.ho.mu, NULL);
        w->io.base = event_base_new();
        w->io.ho.wake = w->io.base ? event_new(w->io.base, -1, EV_PERSIST, on_wake, w) : NULL;
        w->ev_clients_cron = w->io.base ? event_new(w->io.base, -1, EV_PERSIST, on_clients_cron, w) : NULL;
        struct timeval second = {1, 0};
        if (!w->io.ho.wake || event_add(w->io.ho.wake, NULL) != 0 || !w->ev_clients_cron ||
            event_add(w->ev_clients_cron, &second) != 0) {
            snprintf(err, errcap, "cannot create the event loop of I/O thread %d", i);
            kvd_workers_free(ws, n);
            return NULL;
        }
    }
    return ws;
}

int kvd_workers_start(kvd_worker *ws, int n, char *err, size_t errcap)
{
    for (int i = 0; i < n; i++)
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            snprintf(err, errcap, "cannot start I/O thread %d", i);
            for (int k = 0; k < i; k++) {
                event_base_loopbreak(ws[k].io.base);
                pthread_join(ws[k].thread, NULL);
            }
            return -1;
        }
    return 0;
}

int kvd_worker_hand_fd(kvd_worker *w, int fd)
{
    pthread_mutex_lock(&w->io.ho.mu);
    if (w->nnew == w->cap_new) {
        size_t nc = w->cap_new ? w->cap_new * 2 : 16;
        int *nf = realloc(w->newfds, nc * sizeof *nf);
        if (!nf) {
            pthread_mutex_unlock(&w->io.ho.mu);
            return -1;
        }
        w->newfds = nf;
        w->cap_new = nc;
    }
    w->newfds[w->nnew++] = fd;
    pthread_mutex_unlock(&w->io.ho.mu);
    event_active(w->io.ho.wake, EV_READ, 0);
    return 0;
}

void kvd_workers_stop_reading(kvd_worker *ws, int n)
{
    on_all_workers(ws, n, stop_reading, 1);
}

void kvd_workers_finish(kvd_worker *ws, int n)
{
    on_all_workers(ws, n, finish_worker, 0);
    for (int i = 0; i < n; i++) pthread_join(ws[i].thread, NULL);
    for (int i = 0; i < n; i++) {
        kvd_worker *w = &ws[i];
        while (w->io.ho.mhead) { /* posted after the last wake-up: its clients are still here */
            kvd_mail *m = w->io.ho.mhead;
            w->io.ho.mhead = m->next;
            mail_free(m);
        }
        conn_free_all(&w->io);
        event_free(w->io.ho.wake);
        event_free(w->ev_clients_cron);
        event_base_free(w->io.base);
        free(w->newfds);
        pthread_mutex_destroy(&w->io.ho.mu);
    }
    free(ws);
}

void kvd_workers_free(kvd_worker *ws, int n)
{
    for (int i = 0; ws && i < n; i++) {
        if (ws[i].ev_clients_cron) event_free(ws[i].ev_clients_cron);
        if (ws[i].io.ho.wake) event_free(ws[i].io.ho.wake);
        if (ws[i].io.base) event_base_free(ws[i].io.base);
    }
    free(ws);
}
