/*
 * repl_util — what every part of kv/repl uses: clocks, the log line, and
 * saving the state file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "repl_int.h"

long long repl_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long repl_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rlog(kvrepl *r, int level, const char *fmt, ...)
{
    if (!r->log) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->log(r->log_arg, level, msg);
}

int do_state_save(kvrepl *r)
{
    int e = kvrepl_state_save(r->dir, &r->st);
    if (e == 0) r->state_exists = 1;
    if (e < 0) rlog(r, KV_LOG_ERROR, "cannot write %s/%s: %s", r->dir, KVRSTATE_FILE, strerror(-e));
    return e;
}

void repl_set_link_state(kvrepl *r, const char *state, int up, int syncing)
{
    pthread_mutex_lock(&r->mu);
    r->link_state = state;
    if (up && !r->link_up) r->link_down_since_ms = 0;
    if (!up && r->link_up) r->link_down_since_ms = repl_wall_ms();
    __atomic_store_n(&r->link_up, up, __ATOMIC_RELEASE); /* kvrepl_link_down reads it unlocked */
    r->sync_in_progress = syncing;
    pthread_mutex_unlock(&r->mu);
}
