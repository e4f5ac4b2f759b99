/*
 * multi — MULTI, EXEC, DISCARD, WATCH and UNWATCH (multi.h), as Redis 7's
 * src/multi.c: commands queued after MULTI are copied into jobs and sent
 * to the writer thread together by EXEC, as one transaction.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "multi.h"

static void watch_clear(kvd_client *c)
{
    for (size_t i = 0; i < c->nwatch; i++) free(c->watch[i].key);
    free(c->watch);
    c->watch = NULL;
    c->nwatch = c->cap_watch = 0;
}

static void multi_reset(kvd_client *c)
{
    kvd_job *q = c->mq;
    while (q) {
        kvd_job *n = q->next;
        job_free(q);
        q = n;
    }
    c->mq = c->mq_tail = NULL;
    c->mq_len = 0;
    c->in_multi = 0;
    c->multi_error = 0;
}

/* EXEC's job on the writer thread (kvd_job.run): checks the watched keys,
 * then runs the queued commands in one transaction, their replies in one
 * array. */
static kv_status exec_txn(kv_txn *t, kvd_job *job, kvd_env *env)
{
    for (size_t i = 0; i < job->nwatch; i++) {
        uint64_t seq = 0;
        if (kv_txn_key_info(t, job->watch[i].key, job->watch[i].klen, NULL, &seq) != KV_OK) seq = 0;
        if (seq != job->watch[i].seq) {
            rp_null_array(&job->reply); /* a watched key changed: abort */
            job->aborted = 1;
            return KV_OK;
        }
    }
    size_t n = 0;
    for (kvd_job *q = job->mq; q; q = q->next) n++;
    rp_array(&job->reply, (long long)n);
    for (kvd_job *q = job->mq; q; q = q->next) {
        if (q->cmd->flags & CMD_CONN) { /* runs afterwards: multi_exec_reply */
            q->defer_off = job->reply.len;
            continue;
        }
        cmdctx x = {env, NULL, q->argc, (const uint8_t *const *)q->argv, q->argvlen, t, &job->reply};
        q->cmd->fn(&x);
    }
    return job->reply.oom ? ENOMEM : KV_OK;
}

void multi_queue(kvd_client *c, const kvd_cmd *cmd)
{
    kvd_job *q = job_new(c, cmd);
    if (!q) {
        rp_error(&c->out, "ERR out of memory");
        c->multi_error = 1;
        return;
    }
    if (c->mq_tail)
        c->mq_tail->next = q;
    else
        c->mq = q;
    c->mq_tail = q;
    c->mq_len++;
    rp_status(&c->out, "QUEUED");
}

void multi_client_free(kvd_client *c)
{
    multi_reset(c);
    watch_clear(c);
}

void cmd_multi(cmdctx *x)
{
    if (x->c->in_multi) {
        rp_error(x->out, "ERR MULTI calls can not be nested");
        return;
    }
    x->c->in_multi = 1;
    rp_ok(x->out);
}

/* Runs queued command q on c's I/O thread, its reply to out. */
static void run_here(kvd_client *c, const kvd_job *q, sbuf *out)
{
    cmdctx x = {c->env, c, q->argc, (const uint8_t *const *)q->argv, q->argvlen, NULL, out};
    q->cmd->fn(&x);
}

/* EXEC of a queue of CMD_CONN commands only, nothing watched and nothing
 * of c's in flight: no transaction needed. */
static void exec_here(kvd_client *c)
{
    kvd_job *q = c->mq;
    c->mq = c->mq_tail = NULL;
    size_t n = c->mq_len;
    multi_reset(c);
    rp_array(&c->out, (long long)n);
    for (kvd_job *k = q; k; k = k->next) run_here(c, k, &c->out);
    while (q) {
        kvd_job *next = q->next;
        job_free(q);
        q = next;
    }
}

void multi_exec_reply(kvd_client *c, kvd_job *j)
{
    if (j->st != KV_OK || j->aborted) {
        if (!c->gone) job_reply(c, j);
        return;
    }
    /* Under sync-replicas, a timeout leaves the writes applied: the rest
     * of the transaction runs too, and the reply is the error that says
     * so (job_reply). */
    sbuf scratch = {0};
    sbuf *out = c->gone || j->sync_short ? &scratch : &c->out;
    if (j->sync_short && !c->gone) job_reply(c, j);
    size_t off = 0;
    for (kvd_job *q = j->mq; q; q = q->next) {
        if (!(q->cmd->flags & CMD_CONN)) continue;
        sb_add(out, j->reply.p + off, q->defer_off - off);
        off = q->defer_off;
        run_here(c, q, out);
    }
    sb_add(out, j->reply.p + off, j->reply.len - off);
    sb_free(&scratch);
}

void cmd_exec(cmdctx *x)
{
    kvd_client *c = x->c;
    if (!c->in_multi) {
        rp_error(x->out, "ERR EXEC without MULTI");
        return;
    }
    if (c->multi_error) {
        rp_error(x->out, "EXECABORT Transaction discarded because of previous errors.");
        multi_reset(c);
        watch_clear(c);
        return;
    }
    size_t n = 0, ndefer = 0;
    for (kvd_job *q = c->mq; q; q = q->next, n++) ndefer += (q->cmd->flags & CMD_CONN) != 0;
    if (ndefer == n && c->nwatch == 0 && c->pending == 0) {
        exec_here(c);
        return;
    }
    kvd_job *j = calloc(1, sizeof *j);
    if (!j) {
        rp_error(x->out, "ERR out of memory");
        multi_reset(c);
        watch_clear(c);
        return;
    }
    j->ndefer = (int)ndefer;
    j->c = c;
    j->run = exec_txn;
    j->mq = c->mq;
    j->watch = c->watch;
    j->nwatch = c->nwatch;
    c->mq = c->mq_tail = NULL;
    c->mq_len = 0;
    c->watch = NULL;
    c->nwatch = c->cap_watch = 0;
    multi_reset(c);
    job_submit(c, j);
}

void cmd_discard(cmdctx *x)
{
    if (!x->c->in_multi) {
        rp_error(x->out, "ERR DISCARD without MULTI");
        return;
    }
    multi_reset(x->c);
    watch_clear(x->c);
    rp_ok(x->out);
}

static void watch_keys(cmdctx *x)
{
    kvd_client *c = x->c;
    for (size_t i = 1; i < x->argc; i++) {
        if (c->nwatch == c->cap_watch) {
            size_t nc = c->cap_watch ? c->cap_watch * 2 : 8;
            kvd_watch *nw = realloc(c->watch, nc * sizeof *nw);
            if (!nw) {
                rp_error(x->out, "ERR out of memory");
                return;
            }
            c->watch = nw;
            c->cap_watch = nc;
        }
        kvd_watch *wt = &c->watch[c->nwatch];
        wt->klen = x->argvlen[i];
        wt->key = malloc(wt->klen ? wt->klen : 1);
        if (!wt->key) {
            rp_error(x->out, "ERR out of memory");
            return;
        }
        memcpy(wt->key, x->argv[i], wt->klen);
        wt->seq = 0;
        if (kv_key_info(x->env->store, wt->key, wt->klen, NULL, &wt->seq) != KV_OK) wt->seq = 0;
        c->nwatch++;
    }
    rp_ok(x->out);
}

void cmd_watch(cmdctx *x)
{
    if (x->c->in_multi) {
        rp_error(x->out, "ERR WATCH inside MULTI is not allowed");
        return;
    }
    watch_keys(x);
}

void cmd_unwatch(cmdctx *x)
{
    watch_clear(x->c);
    rp_ok(x->out);
}
