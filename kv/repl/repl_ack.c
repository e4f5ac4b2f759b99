/*
 * repl_ack — acknowledgements: counting the replicas that hold an offset,
 * and the waits (WAIT, WAITAOF, synchronous mode) that end when enough
 * do or their time runs out (repl.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repl_int.h"

/* Replicas online (streaming, link not closing) that hold seq. */
static int do_count(kvrepl *r, uint64_t seq, int fsynced)
{
    int n = 0;
    for (kvrepl_replica *rp = r->replicas; rp; rp = rp->next)
        if (__atomic_load_n(&rp->state, __ATOMIC_ACQUIRE) == RSTATE_ONLINE &&
            !__atomic_load_n(&rp->closing, __ATOMIC_ACQUIRE) && ld64(fsynced ? &rp->fack : &rp->ack) >= seq)
            n++;
    return n;
}

int kvrepl_online_count(kvrepl *r)
{
    pthread_mutex_lock(&r->mu);
    int n = do_count(r, 0, 0);
    pthread_mutex_unlock(&r->mu);
    return n;
}

int kvrepl_count_acked(kvrepl *r, uint64_t seq, int fsynced)
{
    pthread_mutex_lock(&r->mu);
    int n = do_count(r, seq, fsynced);
    pthread_mutex_unlock(&r->mu);
    return n;
}

int kvrepl_wait(kvrepl *r, uint64_t seq, int numlocal, int numreplicas, int fsynced, int getack, long long timeout_ms,
                kvrepl_wait_fn fn, void *arg, int *local, int *count)
{
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    pthread_mutex_lock(&r->mu);
    *local = p.synced_seq >= seq;
    *count = do_count(r, seq, fsynced);
    if ((*local || !numlocal) && *count >= numreplicas) {
        pthread_mutex_unlock(&r->mu);
        return 1;
    }
    kvrepl_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    *w = (kvrepl_waiter){r->waiters, seq, numlocal, numreplicas, fsynced,
                         timeout_ms > 0 ? repl_mono_ms() + timeout_ms : 0, fn, arg};
    r->waiters = w;
    /* WAIT and WAITAOF ask the replicas for fresh ACKs, as Redis's WAIT
     * does (replicas also acknowledge every append on their own; the
     * synchronous mode relies on that alone). */
    if (getack) __atomic_add_fetch(&r->getack_gen, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void repl_check_waiters(kvrepl *r, long long now_ms)
{
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    kvrepl_waiter *done = NULL;
    pthread_mutex_lock(&r->mu);
    for (kvrepl_waiter **pw = &r->waiters; *pw;) {
        kvrepl_waiter *w = *pw;
        int local = p.synced_seq >= w->seq, count = do_count(r, w->seq, w->fsynced);
        int ok = (local || !w->numlocal) && count >= w->numreplicas;
        int late = now_ms < 0 || (w->deadline_ms && now_ms >= w->deadline_ms);
        if (ok || late) {
            *pw = w->next;
            w->next = done;
            done = w;
            w->numlocal = local; /* what fn gets */
            w->numreplicas = count;
            w->fsynced = !ok;
        } else {
            pw = &w->next;
        }
    }
    pthread_mutex_unlock(&r->mu);
    while (done) {
        kvrepl_waiter *w = done;
        done = w->next;
        w->fn(w->arg, w->numlocal, w->numreplicas, w->fsynced);
        free(w);
    }
}


void kvrepl_note_sync_timeout(kvrepl *r)
{
    add64(&r->sync_timeouts, 1);
}
