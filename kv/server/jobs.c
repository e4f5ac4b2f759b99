/*
 * jobs — write jobs for the engine's writer thread and their hand-back
 * (jobs.h).
 */
#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "repl.h"

void job_free(kvd_job *j)
{
    if (!j) return;
    for (size_t i = 0; i < j->argc; i++) free(j->argv[i]);
    free(j->argv);
    free(j->argvlen);
    sb_free(&j->reply);
    kvd_job *q = j->mq;
    while (q) {
        kvd_job *n = q->next;
        job_free(q);
        q = n;
    }
    for (size_t i = 0; i < j->nwatch; i++) free(j->watch[i].key);
    free(j->watch);
    free(j);
}

/* A job holding a copy of the current request's arguments. */
kvd_job *job_new(kvd_client *c, const kvd_cmd *cmd)
{
    kvd_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->c = c;
    j->cmd = cmd;
    j->argc = c->args.argc;
    j->argv = calloc(j->argc ? j->argc : 1, sizeof *j->argv);
    j->argvlen = calloc(j->argc ? j->argc : 1, sizeof *j->argvlen);
    if (!j->argv || !j->argvlen) goto oom;
    for (size_t i = 0; i < j->argc; i++) {
        size_t n = c->args.argvlen[i];
        j->argv[i] = malloc(n ? n : 1);
        if (!j->argv[i]) goto oom;
        memcpy(j->argv[i], c->args.argv[i], n);
        j->argvlen[i] = n;
    }
    return j;
oom:
    job_free(j);
    return NULL;
}

static kv_status job_txn(kv_txn *t, void *arg)
{
    kvd_job *j = arg;
    kvd_env *env = j->c->env; /* set at creation: safe to read here */
    if (j->run) return j->run(t, j, env);
    cmdctx x = {env, NULL, j->argc, (const uint8_t *const *)j->argv, j->argvlen, t, &j->reply};
    j->cmd->fn(&x);
    return j->reply.oom ? ENOMEM : KV_OK;
}

void job_handback(kvd_job *j, kv_status st)
{
    kvd_handoff *h = j->c->handoff;
    j->st = st;
    pthread_mutex_lock(&h->mu);
    if (h->tail)
        h->tail->next = j;
    else
        h->head = j;
    h->tail = j;
    pthread_mutex_unlock(&h->mu);
    event_active(h->wake, EV_READ, 0);
}

/* Synchronous mode: the wait for replicas' fsyncs ended. */
static void sync_done(void *arg, int local, int count, int timed_out)
{
    (void)local;
    kvd_job *j = arg;
    if (timed_out) {
        j->sync_short = 1;
        j->sync_count = count;
        kvrepl_note_sync_timeout(j->c->env->repl);
    }
    job_handback(j, KV_OK);
}

/* Writer thread: the job's group is acknowledged (or failed). Under
 * sync-replicas the client's reply waits until that many replicas have
 * fsynced the group (one wait covers the whole group's offset). */
static void job_done(void *arg, kv_status st)
{
    kvd_job *j = arg;
    kvd_env *env = j->c->env;
    j->seq = kv_completed_seq(env->store);
    int n = __atomic_load_n(&env->cfg->sync_replicas, __ATOMIC_RELAXED);
    if (st == KV_OK && n > 0 && env->repl && !kvrepl_is_replica(env->repl)) {
        int local, count;
        long long t = __atomic_load_n(&env->cfg->sync_replicas_timeout, __ATOMIC_RELAXED);
        int w = kvrepl_wait(env->repl, j->seq, 0, n, 1, 0, t, sync_done, j, &local, &count);
        if (w == 0) return; /* sync_done hands it back */
        if (w < 0) {
            j->sync_short = 1;
            j->sync_count = count;
        }
    }
    job_handback(j, st);
}

kvd_job *job_new_blocked(kvd_client *c)
{
    kvd_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->c = c;
    c->pending++;
    return j;
}

void job_submit(kvd_client *c, kvd_job *j)
{
    kv_status st = kv_submit(c->env->store, job_txn, j, job_done, j);
    if (st != KV_OK) {
        rp_error(&c->out, "ERR cannot queue the write: %s", kv_strerror(st));
        job_free(j);
        return;
    }
    c->pending++;
}

void job_reply(kvd_client *c, const kvd_job *j)
{
    if (j->st == KV_OK && j->sync_short) {
        int want = __atomic_load_n(&c->env->cfg->sync_replicas, __ATOMIC_RELAXED);
        rp_error(&c->out,
                 "NOREPLICAS the write is applied on this primary, but only %d of the %d replicas sync-replicas asks "
                 "for fsynced it in time; it may be lost in a failover",
                 j->sync_count, want);
        return;
    }
    if (j->st == KV_OK) {
        sb_add(&c->out, j->reply.p, j->reply.len);
        return;
    }
    char why[512];
    int fs = kv_failstop_reason(c->env->store, why, sizeof why);
    if (j->st == KV_FAILSTOP && fs)
        rp_error(&c->out, "IOERR write refused: %s", why);
    else if (fs)
        rp_error(&c->out, "IOERR write failed: %s; the store now refuses writes until restarted",
                 kv_strerror(j->st));
    else
        rp_error(&c->out, "ERR write not done: %s", kv_strerror(j->st));
}

kvd_blob *blob_new(const void *p, size_t n)
{
    kvd_blob *b = malloc(sizeof *b + (n ? n : 1));
    if (!b) return NULL;
    b->refs = 1;
    b->len = n;
    if (n) memcpy(b->data, p, n);
    return b;
}

void blob_put(kvd_blob *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) free(b);
}

int mail_post(kvd_client *c, kvd_mail_kind kind, kvd_blob *blob)
{
    kvd_mail *m = malloc(sizeof *m);
    if (!m) return -1;
    m->next = NULL;
    m->c = c;
    m->kind = kind;
    m->blob = blob;
    if (blob) __atomic_add_fetch(&blob->refs, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->mail_refs, 1, __ATOMIC_RELAXED);
    kvd_handoff *h = c->handoff;
    pthread_mutex_lock(&h->mu);
    if (h->mtail)
        h->mtail->next = m;
    else
        h->mhead = m;
    h->mtail = m;
    pthread_mutex_unlock(&h->mu);
    event_active(h->wake, EV_READ, 0);
    return 0;
}

int mail_free(kvd_mail *m)
{
    blob_put(m->blob);
    int left = __atomic_sub_fetch(&m->c->mail_refs, 1, __ATOMIC_ACQ_REL);
    free(m);
    return left;
}
