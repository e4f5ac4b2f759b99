/*
 * conn — client connections on one I/O thread (conn.h).
 */
#define _GNU_SOURCE
#include "conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "cmd.h"
#include "gate.h"
#include "kvd_limits.h"
#include "kvd_log.h"
#include "multi.h"
#include "registry.h"
#include "repl.h"

#define MAX_PENDING_PER_CLIENT 4096
/* Bytes of room offered to one read(2) of a client's input (Redis's
 * PROTO_IOBUF_LEN). */
#define KVD_READ_CHUNK (16u * 1024u)

/* Stops reading the connection for good (the input event is freed). */
static void stop_input(kvd_client *c)
{
    if (c->rev) {
        event_free(c->rev);
        c->rev = NULL;
    }
}

/* Jobs or mails still hold c: it is freed when the last comes back. */
static int client_held(const kvd_client *c)
{
    return c->pending > 0 || __atomic_load_n(&c->mail_refs, __ATOMIC_ACQUIRE) > 0;
}

static void client_free(kvd_client *c)
{
    kvd_io *io = c->io;
    reg_remove(io->env->reg, c);
    stop_input(c);
    if (c->bev) bufferevent_free(c->bev);
    free(c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        io->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    resp_args_free(&c->args);
    multi_client_free(c);
    free(c->name);
    sb_free(&c->out);
    __atomic_sub_fetch(&io->env->n.connected_clients, 1, __ATOMIC_RELAXED);
    free(c);
}

/* The connection is gone (EOF, error, or closed by us): free the client
 * now, or once its write jobs have come back. */
static void client_gone(kvd_client *c)
{
    reg_remove(c->env->reg, c); /* no new mail can reach it from here on */
    if (client_held(c)) {
        c->gone = 1;
        stop_input(c);
        if (c->bev) {
            bufferevent_free(c->bev);
            c->bev = NULL;
        }
        return;
    }
    client_free(c);
}

static void flush_out(kvd_client *c)
{
    if (c->out.oom) {
        kvd_log(KVD_LOG_WARNING, "client id=%" PRIu64 " addr=%s: out of memory building a reply; closing", c->id,
                c->addr);
        sb_free(&c->out);
        c->close_after_reply = 1;
        return;
    }
    if (c->out.len && c->bev) {
        /* Send at once when nothing is queued before it, as Redis does:
         * most replies go out whole, and then libevent never has to
         * watch the socket for writability (two epoll_ctl calls and a
         * loop iteration per reply). What does not fit goes to the
         * bufferevent, which sends it in order when the socket drains. */
        size_t off = 0;
        struct evbuffer *outb = bufferevent_get_output(c->bev);
        if (evbuffer_get_length(outb) == 0) {
            ssize_t n = send(bufferevent_getfd(c->bev), c->out.p, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) off = (size_t)n;
            /* An error (EAGAIN, a reset peer) leaves everything to the
             * bufferevent, which reports a real error through on_event. */
        }
        if (off < c->out.len) bufferevent_write(c->bev, c->out.p + off, c->out.len - off);
    }
    c->out.len = 0;
}

static void process_input(kvd_client *c);

/* ---- output-buffer limits and backpressure (kvd_limits.h) ---- */

/* Reply bytes of c not yet handed to the kernel: built, or queued in the
 * bufferevent. What Redis's client-output-buffer-limit measures. */
static uint64_t obuf_used(const kvd_client *c)
{
    return c->out.len + (c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0);
}

/* Stops reading c until its replies drain (on_write_drained resumes). */
static void pause_input(kvd_client *c)
{
    if (c->out_paused) return;
    c->out_paused = 1;
    if (c->rev) event_del(c->rev);
}

static void resume_input(kvd_client *c)
{
    c->out_paused = 0;
    if (c->rev && !c->io->stopping) event_add(c->rev, NULL);
}

/*
 * Checks c against the normal class's output-buffer limit; a client over
 * it is logged in Redis's words, counted
 * (client_output_buffer_limit_disconnections), and closed at once with
 * its unsent replies dropped. Returns 1 if c was closed (c may be freed),
 * else 0. I/O thread of c only.
 */
static int obuf_enforce(kvd_client *c)
{
    kvd_env *env = c->env;
    uint64_t used = obuf_used(c);
    if (used > c->io->obuf_peak) c->io->obuf_peak = used;
    int cls = c->nsub + c->npsub > 0 ? KVD_OBUF_PUBSUB : KVD_OBUF_NORMAL;
    kvd_obuf_limit lim = kvd_obuf_limit_load(&env->cfg->obuf_limits[cls]);
    long long now = (lim.soft && used >= lim.soft) ? kvd_mono_ms() : 0;
    kvd_obuf_verdict v = kvd_obuf_check(&lim, used, now, &c->obuf_soft_since);
    if (v == KVD_OBUF_OK) return 0;
    kvd_log(KVD_LOG_WARNING,
            "Client id=%" PRIu64 " addr=%s name=%s age=%lld omem=%" PRIu64 " limit=%s sub=%d psub=%d "
            "scheduled to be closed ASAP for overcoming of output buffer limits.",
            c->id, c->addr, c->name ? c->name : "", (kvd_mstime() - c->ctime) / 1000, used,
            v == KVD_OBUF_HARD ? "hard" : "soft", c->nsub, c->npsub);
    counter_inc(&env->n.obuf_disconnections);
    c->out.len = 0;
    c->close_after_reply = 1;
    client_gone(c);
    return 1;
}

/* The bufferevent wrote and holds KVD_OUTPUT_RESUME_BYTES or less (its
 * write low-water mark): read a paused client again, or finish closing. */
static void on_write_drained(struct bufferevent *bev, void *arg)
{
    kvd_client *c = arg;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));
    if (left == 0 && c->close_after_reply && c->pending == 0) {
        client_gone(c);
        return;
    }
    if (c->out_paused && left <= KVD_OUTPUT_RESUME_BYTES) {
        resume_input(c);
        process_input(c); /* requests already buffered */
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    kvd_client *c = arg;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) client_gone(c); /* writing failed */
}

/* Readable: one read(2) into the client's input buffer (no FIONREAD
 * ioctl, unlike a bufferevent), then parse and run what is complete. */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    kvd_client *c = arg;
    if (c->in_off > 0 && c->in_off == c->in_len) c->in_off = c->in_len = 0;
    if (c->in_cap - c->in_len < KVD_READ_CHUNK) {
        if (c->in_off > 0) { /* reclaim the consumed front first */
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        if (c->in_cap - c->in_len < KVD_READ_CHUNK) {
            size_t nc = c->in_cap ? c->in_cap * 2 : KVD_READ_CHUNK;
            while (nc - c->in_len < KVD_READ_CHUNK) nc *= 2;
            uint8_t *ni = realloc(c->in, nc);
            if (!ni) {
                kvd_log(KVD_LOG_WARNING, "client id=%" PRIu64 " addr=%s: out of memory reading a request; closing",
                        c->id, c->addr);
                client_gone(c);
                return;
            }
            c->in = ni;
            c->in_cap = nc;
        }
    }
    ssize_t n = read(fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n > 0) {
        c->in_len += (size_t)n;
        process_input(c);
    } else if (n == 0) {
        /* A half-close (nc, a script piping commands): run what was
         * sent, deliver the replies, then close. */
        c->eof = 1;
        stop_input(c);
        process_input(c);
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        client_gone(c);
    }
}

/* ---- command dispatch ---- */

/* Runs the parsed request in c->args, or queues it inside MULTI. */
static void dispatch(kvd_client *c, const kvd_cmd *cmd)
{
    kvd_env *env = c->env;
    counter_inc(&env->n.total_commands);
    if (gate_refuses(c, cmd)) return;
    if (c->in_multi && !(cmd->flags & CMD_NOMULTI)) {
        multi_queue(c, cmd);
        return;
    }
    if (cmd->flags & CMD_WRITE) {
        kvd_job *j = job_new(c, cmd);
        if (!j)
            rp_error(&c->out, "ERR out of memory");
        else
            job_submit(c, j);
    } else {
        cmdctx x = {env, c, c->args.argc, c->args.argv, c->args.argvlen, NULL, &c->out};
        cmd->fn(&x);
    }
}

/*
 * FAILOVER pauses writes (kvrepl_writes_paused): a write command (or
 * EXEC) waits in c's input until the pause ends, as under Redis's CLIENT
 * PAUSE WRITE; reads go on. c marks itself with pub_blocked and then looks
 * at the pause again, while the failover's end clears the pause and then
 * looks for marked clients (reg_resume_paused), both sequentially
 * consistent: one of the two always sees the other, so no client is left
 * waiting. Returns 1 if c must wait.
 */
static int write_paused(kvd_client *c, const kvd_cmd *cmd)
{
    kvd_env *env = c->env;
    if (!env->repl || !gate_goes_to_writer(c, cmd) || !kvrepl_writes_paused(env->repl)) return 0;
    if (c->in_multi) { /* EXEC waits only if it writes (Sentinel's transaction does not) */
        const kvd_job *q = c->mq;
        while (q && !(q->cmd->flags & CMD_WRITE)) q = q->next;
        if (!q) return 0;
    }
    __atomic_store_n(&c->pub_blocked, 1, __ATOMIC_SEQ_CST);
    if (kvrepl_writes_paused(env->repl)) return 1;
    __atomic_store_n(&c->pub_blocked, 0, __ATOMIC_SEQ_CST);
    return 0;
}

/* What CLIENT LIST shows of c, stored for other threads (registry.h). */
static void publish_state(kvd_client *c)
{
    __atomic_store_n(&c->pub_qbuf, (uint64_t)(c->in_len - c->in_off), __ATOMIC_RELAXED);
    __atomic_store_n(&c->pub_omem, obuf_used(c), __ATOMIC_RELAXED);
    __atomic_store_n(&c->pub_multi, c->in_multi ? (long long)c->mq_len : -1, __ATOMIC_RELAXED);
}

static void process_input(kvd_client *c)
{
    kvd_env *env = c->env;
    if (c->gone || !c->bev) return;
    __atomic_store_n(&c->last_ms, kvd_mstime(), __ATOMIC_RELAXED);
again:
    while (!c->close_after_reply && !c->io->stopping) {
        size_t avail = c->in_len - c->in_off;
        if (avail == 0) break;
        if (obuf_used(c) >= KVD_OUTPUT_PAUSE_BYTES) {
            /* Backpressure: no more requests until the replies drain. */
            pause_input(c);
            break;
        }
        if (avail > env->cfg->max_query_buffer) {
            /* Also when complete requests wait behind in-flight writes. */
            kvd_log(KVD_LOG_WARNING, "closing client id=%" PRIu64 " addr=%s that reached max query buffer "
                                     "length (%zu bytes)", c->id, c->addr, avail);
            c->close_after_reply = 1;
            stop_input(c);
            if (!c->pending) c->in_off = c->in_len;
            break;
        }
        if (c->pending >= MAX_PENDING_PER_CLIENT) break;
        const uint8_t *buf = c->in + c->in_off;
        size_t consumed = 0;
        const char *err = NULL;
        resp_result rr = resp_parse(buf, avail, &env->limits, &c->args, &consumed, &err);
        if (rr == RESP_NEED_MORE) {
            if (avail > env->cfg->max_query_buffer) {
                kvd_log(KVD_LOG_WARNING, "closing client id=%" PRIu64 " addr=%s that reached max query buffer "
                                         "length (%zu bytes)", c->id, c->addr, avail);
                c->close_after_reply = 1;
                c->in_off = c->in_len;
            }
            break;
        }
        if (rr == RESP_ERROR) {
            if (c->pending > 0) break; /* reply in order, after the writes */
            rp_error(&c->out, "ERR %s", err);
            kvd_log(KVD_LOG_VERBOSE, "protocol error from client id=%" PRIu64 " addr=%s: %s", c->id, c->addr, err);
            c->close_after_reply = 1;
            c->in_off = c->in_len;
            break;
        }
        if (c->args.argc == 0) {
            c->in_off += consumed;
            continue;
        }
        const kvd_cmd *cmd = kvd_cmd_lookup(c->args.argv[0], c->args.argvlen[0]);
        if (c->pending > 0 && !gate_goes_to_writer(c, cmd)) break; /* wait: it must see those writes */
        if (cmd) __atomic_store_n(&c->last_cmd, cmd->name, __ATOMIC_RELAXED);
        if (write_paused(c, cmd)) break; /* the request stays in the buffer */
        dispatch(c, cmd);
        c->in_off += consumed;
    }
    /* The limit is checked before the replies go to the socket, as Redis
     * checks it when it adds a reply: checked after, a kernel that took
     * part of a paused client's replies could leave it under a hard limit
     * below KVD_OUTPUT_PAUSE_BYTES, paused for good and never closed. */
    if (obuf_enforce(c)) return;
    flush_out(c);
    if (c->out_paused && !c->close_after_reply && obuf_used(c) <= KVD_OUTPUT_RESUME_BYTES) {
        /* The socket took it all at once: no write callback will come. */
        resume_input(c);
        goto again;
    }
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
        if (c->in_cap > 64 * KVD_READ_CHUNK) { /* after a large request: give the memory back */
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    }
    publish_state(c);
    if (c->eof && c->pending == 0 && !c->out_paused && !c->pub_blocked)
        c->close_after_reply = 1; /* paused: requests remain */
    if (c->close_after_reply && c->pending == 0 && c->bev &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        client_gone(c);
}

/* ---- the I/O thread's side ---- */

void conn_new(kvd_io *w, int fd)
{
    kvd_env *env = w->env;
    kvd_client *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(c);
        close(fd);
        __atomic_sub_fetch(&env->n.connected_clients, 1, __ATOMIC_RELAXED);
        kvd_log(KVD_LOG_WARNING, "out of memory accepting a client");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->id = counter_inc(&env->n.next_client_id);
    c->fd = fd;
    c->pub_multi = -1;
    c->env = env;
    c->io = w;
    c->handoff = &w->ho;
    c->bev = bev;
    c->ctime = kvd_mstime();
    resp_args_init(&c->args);
    /* As in Redis 7 (the default user is "nopass" while no password is
     * set): a client that connected before CONFIG SET requirepass stays
     * authenticated, so it can still use, or undo, the setting. */
    c->authenticated = !kvd_password_set(env);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char host[INET6_ADDRSTRLEN] = "?", serv[16] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->addr, sizeof c->addr, "%s:%s", host, serv);
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char host[INET6_ADDRSTRLEN] = "?", serv[16] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->laddr, sizeof c->laddr, "%s:%s", host, serv);
    }
    reg_add(env->reg, c);
    c->next = w->clients;
    if (w->clients) w->clients->prev = c;
    w->clients = c;
    bufferevent_setcb(bev, NULL, on_write_drained, on_event, c);
    bufferevent_setwatermark(bev, EV_WRITE, KVD_OUTPUT_RESUME_BYTES, 0);
    bufferevent_disable(bev, EV_READ);
    bufferevent_enable(bev, EV_WRITE);
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    if (!c->rev || event_add(c->rev, NULL) < 0) {
        kvd_log(KVD_LOG_WARNING, "out of memory accepting a client");
        client_free(c);
    }
}

void conn_jobs_done(kvd_io *io, kvd_job *done)
{
    (void)io;
    /* Replies go out in job order; then each client reads on. */
    while (done) {
        kvd_job *j = done;
        done = j->next;
        kvd_client *c = j->c;
        c->pending--;
        if (j->st == KV_OK && j->seq > c->woff) c->woff = j->seq;
        if (j->ndefer > 0)
            multi_exec_reply(c, j);
        else if (!c->gone)
            job_reply(c, j);
        job_free(j);
        if (c->gone) {
            if (!client_held(c)) client_free(c);
            continue;
        }
        if (c->pending == 0 || !done || done->c != c) process_input(c);
    }
}

void conn_mail(kvd_io *io, kvd_mail *mails)
{
    (void)io;
    while (mails) {
        kvd_mail *m = mails;
        mails = m->next;
        kvd_client *c = m->c;
        if (!c->gone && c->bev && m->kind == MAIL_MESSAGE) {
            sb_add(&c->out, m->blob->data, m->blob->len);
        } else if (!c->gone && m->kind == MAIL_RESUME) {
            __atomic_store_n(&c->pub_blocked, 0, __ATOMIC_SEQ_CST);
            process_input(c);
        } else if (!c->gone && m->kind == MAIL_KILL) {
            kvd_log(KVD_LOG_VERBOSE, "client id=%" PRIu64 " addr=%s closed by CLIENT KILL", c->id, c->addr);
            c->out.len = 0;
            c->close_after_reply = 1;
            client_gone(c);
        }
        int left = mail_free(m);
        if (c->gone) {
            if (left == 0 && !client_held(c)) client_free(c);
            continue;
        }
        /* The last mail of a run for c: check its limit, then send. */
        if (!mails || mails->c != c) {
            if (obuf_enforce(c)) continue;
            flush_out(c);
        }
    }
}

void conn_cron(kvd_io *w)
{
    uint64_t max = 0;
    kvd_client *next;
    for (kvd_client *c = w->clients; c; c = next) {
        next = c->next;
        if (c->gone || !c->bev) continue;
        if (__atomic_load_n(&c->pub_blocked, __ATOMIC_SEQ_CST) && !kvrepl_writes_paused(c->env->repl)) {
            __atomic_store_n(&c->pub_blocked, 0, __ATOMIC_SEQ_CST); /* a missed wake-up cannot last */
            process_input(c);
            if (c->gone) continue;
        }
        uint64_t used = obuf_used(c);
        if (obuf_enforce(c)) continue;
        if (used > max) max = used;
    }
    __atomic_store_n(&w->obuf_recent_max, w->obuf_peak > max ? w->obuf_peak : max, __ATOMIC_RELAXED);
    w->obuf_peak = max;
}

void conn_stop_reading(kvd_io *io)
{
    io->stopping = 1;
    for (kvd_client *c = io->clients; c; c = c->next)
        if (c->rev) event_del(c->rev);
}

void conn_free_all(kvd_io *io)
{
    while (io->clients) {
        kvd_client *c = io->clients;
        c->pending = 0;
        client_free(c);
    }
}
