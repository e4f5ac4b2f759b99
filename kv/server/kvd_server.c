#define _GNU_SOURCE
#include "kvd_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kv_scrub.h"
#include "kvd_internal.h"
#include "kvd_log.h"

#define MAX_PENDING_PER_CLIENT 4096
/* Bytes of room offered to one read(2) of a client's input (Redis's
 * PROTO_IOBUF_LEN). */
#define KVD_READ_CHUNK (16u * 1024u)

/* ---- small helpers ---- */

static uint64_t atomic_inc(uint64_t *p)
{
    return __atomic_add_fetch(p, 1, __ATOMIC_RELAXED);
}

static uint64_t atomic_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void store_log(void *arg, int level, const char *msg)
{
    (void)arg;
    kvd_log_level l = level >= KV_LOG_WARN ? KVD_LOG_WARNING : level == KV_LOG_INFO ? KVD_LOG_NOTICE : KVD_LOG_DEBUG;
    kvd_log(l, "%s", msg);
}

/* ---- clients ---- */

/* Stops reading the connection for good (the input event is freed). */
static void stop_input(kvd_client *c)
{
    if (c->rev) {
        event_free(c->rev);
        c->rev = NULL;
    }
}

static void client_free(kvd_client *c)
{
    kvd_worker *w = c->w;
    stop_input(c);
    if (c->bev) bufferevent_free(c->bev);
    free(c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    resp_args_free(&c->args);
    multi_client_free(c);
    free(c->name);
    sb_free(&c->out);
    __atomic_sub_fetch(&w->srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
    free(c);
}

/* The connection is gone (EOF, error, or closed by us): free the client
 * now, or once its write jobs have come back. */
static void client_gone(kvd_client *c)
{
    if (c->pending > 0) {
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
static void kvd_server_request_shutdown(kvd_server *srv);
static int kvd_server_start_compaction(kvd_server *srv, const char *why);

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
    if (c->rev && !c->w->stopping) event_add(c->rev, NULL);
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
    kvd_server *srv = c->w->srv;
    uint64_t used = obuf_used(c);
    if (used > c->w->obuf_peak) c->w->obuf_peak = used;
    kvd_obuf_limit lim = kvd_obuf_limit_load(&srv->env.cfg->obuf_limits[KVD_OBUF_NORMAL]);
    long long now = (lim.soft && used >= lim.soft) ? kvd_mono_ms() : 0;
    kvd_obuf_verdict v = kvd_obuf_check(&lim, used, now, &c->obuf_soft_since);
    if (v == KVD_OBUF_OK) return 0;
    kvd_log(KVD_LOG_WARNING,
            "Client id=%" PRIu64 " addr=%s name=%s age=%lld omem=%" PRIu64 " limit=%s "
            "scheduled to be closed ASAP for overcoming of output buffer limits.",
            c->id, c->addr, c->name ? c->name : "", (kvd_mstime() - c->ctime) / 1000, used,
            v == KVD_OBUF_HARD ? "hard" : "soft");
    atomic_inc(&srv->env.n.obuf_disconnections);
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

/* Once a second on each I/O thread: the soft limit's clock runs out even
 * for a client that gets no new replies (it is paused), and the largest
 * output buffer is published for INFO. */
static void on_clients_cron(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_worker *w = arg;
    uint64_t max = 0;
    kvd_client *next;
    for (kvd_client *c = w->clients; c; c = next) {
        next = c->next;
        if (c->gone || !c->bev) continue;
        uint64_t used = obuf_used(c);
        if (obuf_enforce(c)) continue;
        if (used > max) max = used;
    }
    __atomic_store_n(&w->obuf_recent_max, w->obuf_peak > max ? w->obuf_peak : max, __ATOMIC_RELAXED);
    w->obuf_peak = max;
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

/* ---- write jobs ---- */

/* ---- command dispatch ---- */

static void reply_unknown(kvd_client *c)
{
    char args[512];
    size_t used = 0;
    args[0] = 0;
    /* As Redis 7 (processCommand): the quoted arguments together take
     * about 128 characters; each is cut to what is left of them. */
    for (size_t i = 1; i < c->args.argc && used < 128; i++) {
        size_t room = 128 - used;
        int n = snprintf(args + used, sizeof args - used, "'%.*s' ",
                         (int)(c->args.argvlen[i] > room ? room : c->args.argvlen[i]), (const char *)c->args.argv[i]);
        if (n < 0) break;
        used += (size_t)n;
        if (used >= sizeof args) used = sizeof args - 1;
    }
    rp_error(&c->out, "ERR unknown command '%.*s', with args beginning with: %s",
             (int)(c->args.argvlen[0] > 128 ? 128 : c->args.argvlen[0]), (const char *)c->args.argv[0], args);
}

static int arity_ok(const kvd_cmd *cmd, size_t argc)
{
    return cmd->arity > 0 ? argc == (size_t)cmd->arity : argc >= (size_t)-cmd->arity;
}

/* Would this request be sent to the writer thread (so it may be queued
 * behind the connection's other writes)? */
static int goes_to_writer(const kvd_client *c, const kvd_cmd *cmd)
{
    if (!cmd || !arity_ok(cmd, c->args.argc)) return 0;
    if (c->in_multi) return (cmd->flags & CMD_RUNS_MULTI) && !c->multi_error;
    return (cmd->flags & CMD_WRITE) != 0;
}

/* Runs the parsed request in c->args. */
static void dispatch(kvd_client *c, const kvd_cmd *cmd)
{
    kvd_server *srv = c->w->srv;
    atomic_inc(&srv->env.n.total_commands);
    if (!cmd) {
        reply_unknown(c);
        if (c->in_multi) c->multi_error = 1;
        return;
    }
    if (!arity_ok(cmd, c->args.argc)) {
        rp_error(&c->out, "ERR wrong number of arguments for '%s' command", cmd->name);
        if (c->in_multi) c->multi_error = 1;
        return;
    }
    if (!c->authenticated && !(cmd->flags & CMD_NOAUTH) && kvd_password_set(&srv->env)) {
        rp_error(&c->out, "NOAUTH Authentication required.");
        if (c->in_multi) c->multi_error = 1;
        return;
    }
    if (c->in_multi && !(cmd->flags & CMD_NOMULTI)) {
        if (cmd->flags & CMD_CONN) {
            rp_error(&c->out, "ERR Command not allowed inside a transaction");
            c->multi_error = 1;
            return;
        }
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
        cmdctx x = {&srv->env, c, c->args.argc, c->args.argv, c->args.argvlen, NULL, &c->out};
        cmd->fn(&x);
    }
}

static void process_input(kvd_client *c)
{
    kvd_server *srv = c->w->srv;
    if (c->gone || !c->bev) return;
again:
    while (!c->close_after_reply && !c->w->stopping) {
        size_t avail = c->in_len - c->in_off;
        if (avail == 0) break;
        if (obuf_used(c) >= KVD_OUTPUT_PAUSE_BYTES) {
            /* Backpressure: no more requests until the replies drain. */
            pause_input(c);
            break;
        }
        if (avail > srv->env.cfg->max_query_buffer) {
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
        resp_result rr = resp_parse(buf, avail, &srv->env.limits, &c->args, &consumed, &err);
        if (rr == RESP_NEED_MORE) {
            if (avail > srv->env.cfg->max_query_buffer) {
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
        if (c->pending > 0 && !goes_to_writer(c, cmd)) break; /* wait: it must see those writes */
        dispatch(c, cmd);
        c->in_off += consumed;
    }
    flush_out(c);
    if (obuf_enforce(c)) return;
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
    if (c->eof && c->pending == 0 && !c->out_paused) c->close_after_reply = 1; /* paused: requests remain */
    if (c->close_after_reply && c->pending == 0 && c->bev &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        client_gone(c);
}

/* ---- I/O threads ---- */

static void new_client(kvd_worker *w, int fd)
{
    kvd_server *srv = w->srv;
    kvd_client *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(c);
        close(fd);
        __atomic_sub_fetch(&srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
        kvd_log(KVD_LOG_WARNING, "out of memory accepting a client");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->id = atomic_inc(&srv->env.n.next_client_id);
    c->env = &srv->env;
    c->w = w;
    c->handoff = &w->ho;
    c->bev = bev;
    c->ctime = kvd_mstime();
    resp_args_init(&c->args);
    /* As in Redis 7 (the default user is "nopass" while no password is
     * set): a client that connected before CONFIG SET requirepass stays
     * authenticated, so it can still use, or undo, the setting. */
    c->authenticated = !kvd_password_set(&srv->env);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char host[INET6_ADDRSTRLEN] = "?", serv[16] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->addr, sizeof c->addr, "%s:%s", host, serv);
    }
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

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_worker *w = arg;
    pthread_mutex_lock(&w->ho.mu);
    int *fds = w->newfds;
    size_t nfds = w->nnew;
    w->newfds = NULL;
    w->nnew = w->cap_new = 0;
    kvd_job *done = w->ho.head;
    w->ho.head = w->ho.tail = NULL;
    pthread_mutex_unlock(&w->ho.mu);
    for (size_t i = 0; i < nfds; i++) {
        if (w->stopping) {
            close(fds[i]);
            __atomic_sub_fetch(&w->srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
        } else {
            new_client(w, fds[i]);
        }
    }
    free(fds);
    /* Replies go out in job order; then each client reads on. */
    while (done) {
        kvd_job *j = done;
        done = j->next;
        kvd_client *c = j->c;
        c->pending--;
        if (!c->gone) job_reply(c, j);
        job_free(j);
        if (c->gone) {
            if (c->pending == 0) client_free(c);
            continue;
        }
        if (c->pending == 0 || !done || done->c != c) process_input(c);
    }
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
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* ---- main thread: accept, timers, signals ---- */

/* How long the listener rests after an accept error, and how many
 * waiting connections one rest may refuse. */
#define KVD_ACCEPT_PAUSE_MS 100
#define KVD_REFUSE_MAX 256

/* Answers a connection kvd will not serve with Redis's error and closes
 * it (counted in rejected_connections). What the client has sent already
 * is read first (a few KiB at most): closing with unread input sends a
 * reset, which can destroy the error before the client reads it. */
static void refuse_client(kvd_server *srv, int fd)
{
    static const char msg[] = "-ERR max number of clients reached\r\n";
    char drain[1024];
    for (int i = 0; i < 4 && recv(fd, drain, sizeof drain, MSG_DONTWAIT) > 0; i++) {
    }
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
    close(fd);
    atomic_inc(&srv->env.n.rejected_connections);
}

/* At the descriptor limit (EMFILE, ENFILE) the connections waiting in the
 * listen backlog would wait in silence until a descriptor frees up. Gives
 * up the spare descriptor to accept and refuse them one at a time, then
 * takes it back. Returns how many were refused. */
static unsigned refuse_backlog(kvd_server *srv)
{
    if (srv->spare_fd < 0) { /* another thread took it last time */
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return 0;
    }
    close(srv->spare_fd);
    srv->spare_fd = -1;
    int lfd = evconnlistener_get_fd(srv->listener);
    unsigned n = 0;
    while (n < KVD_REFUSE_MAX) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        refuse_client(srv, fd);
        n++;
    }
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return n;
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_server *srv = arg;
    if (srv->listener) evconnlistener_enable(srv->listener);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    kvd_server *srv = arg;
    int64_t now = __atomic_add_fetch(&srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
    if (now > __atomic_load_n(&srv->env.cfg->maxclients, __ATOMIC_RELAXED)) {
        refuse_client(srv, fd);
        __atomic_sub_fetch(&srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
        return;
    }
    atomic_inc(&srv->env.n.total_connections);
    kvd_worker *w = &srv->workers[srv->next_worker++ % (unsigned)srv->nworkers];
    pthread_mutex_lock(&w->ho.mu);
    if (w->nnew == w->cap_new) {
        size_t nc = w->cap_new ? w->cap_new * 2 : 16;
        int *nf = realloc(w->newfds, nc * sizeof *nf);
        if (!nf) {
            pthread_mutex_unlock(&w->ho.mu);
            close(fd);
            __atomic_sub_fetch(&srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
            return;
        }
        w->newfds = nf;
        w->cap_new = nc;
    }
    w->newfds[w->nnew++] = fd;
    pthread_mutex_unlock(&w->ho.mu);
    event_active(w->ho.wake, EV_READ, 0);
}

/* accept(2) failed with an error that is not retriable at once (libevent
 * retries EINTR, EAGAIN and ECONNABORTED itself). The listening socket
 * stays readable, so without a pause the loop would spin on it: the
 * listener rests KVD_ACCEPT_PAUSE_MS, at the descriptor limit the waiting
 * connections are refused, and the error is logged at most once a second
 * with the number of lines held back. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    kvd_server *srv = arg;
    int e = EVUTIL_SOCKET_ERROR();
    unsigned refused = (e == EMFILE || e == ENFILE) ? refuse_backlog(srv) : 0;
    evconnlistener_disable(l);
    struct timeval tv = {0, KVD_ACCEPT_PAUSE_MS * 1000};
    event_add(srv->ev_accept_resume, &tv);
    uint64_t held;
    if (kvd_ratelimit_allow(&srv->accept_log, kvd_mono_ms(), 1000, &held))
        kvd_log(KVD_LOG_WARNING,
                "Accepting client connection: accept: %s (%" PRIu64 " more since the last such line); new "
                "connections paused for %d ms, %u waiting refused with 'max number of clients reached'",
                strerror(e), held, KVD_ACCEPT_PAUSE_MS, refused);
}

/* The period of the active-expiry timer at hz cycles per second. */
static struct timeval cron_interval(int hz)
{
    long us = 1000000L / (hz > 0 ? hz : 10);
    struct timeval tv = {us / 1000000L, us % 1000000L};
    return tv;
}

/* ---- background hint files ---- */

/* Nice value and best-effort I/O priority level (0 highest .. 7 lowest)
 * of the background threads (compaction, hint files). */
#define KVD_BACKGROUND_NICE 10
#define KVD_BACKGROUND_IOPRIO_LEVEL 7

/* Lowers the calling thread's CPU and I/O priority, so that compaction
 * and hint writing take what the threads serving clients leave: on a
 * machine with few cores they otherwise compete with the I/O and writer
 * threads for the same CPU and disk queue. Linux keeps both per thread
 * (setpriority(2) with a thread id; ioprio_set(2), class best-effort,
 * lowest level; idle class is not used, it could starve compaction under
 * a constant load and let the log grow without bound). Failure is
 * harmless: the work only runs at normal priority. */
kvd_bg_priority kvd_lower_thread_priority(void)
{
    kvd_bg_priority r = {0, 0};
    pid_t tid = gettid();
    r.nice_ok = setpriority(PRIO_PROCESS, (id_t)tid, KVD_BACKGROUND_NICE) == 0;
    if (!r.nice_ok)
        kvd_log(KVD_LOG_VERBOSE, "background thread %d: cannot lower its CPU priority: %s", (int)tid,
                strerror(errno));
    /* IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE = 2, level), IOPRIO_WHO_PROCESS = 1 */
    r.ioprio_ok = syscall(SYS_ioprio_set, 1, (int)tid, (2 << 13) | KVD_BACKGROUND_IOPRIO_LEVEL) == 0;
    if (!r.ioprio_ok)
        kvd_log(KVD_LOG_VERBOSE, "background thread %d: cannot lower its I/O priority: %s", (int)tid,
                strerror(errno));
    return r;
}

static void *hints_main(void *arg)
{
    kvd_server *srv = arg;
    kv_io_block_async_signals(); /* as worker_main */
    pthread_setname_np(pthread_self(), "kvd-hints");
    kvd_lower_thread_priority();
    uint32_t n = 0;
    kv_status st = kv_write_hints(srv->env.store, &n);
    /* Building a hint allocates a table per segment in this thread's
     * malloc arena; give those pages back, or they stay resident. */
    malloc_trim(0);
    if (st != KV_OK) {
        kvd_log(KVD_LOG_WARNING, "writing hint files: %s (%u written)", kv_strerror(st), n);
        /* Do not retry every cron tick: a damaged segment stays damaged. */
        __atomic_store_n(&srv->hints_failed, 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&srv->hinting, 0, __ATOMIC_RELEASE);
    return NULL;
}

/* Starts a thread that writes the hint files of newly sealed segments
 * (from the event loop only). */
static void start_hints(kvd_server *srv)
{
    if (__atomic_load_n(&srv->hints_failed, __ATOMIC_ACQUIRE)) return;
    if (srv->hints_started) pthread_join(srv->hints_thread, NULL); /* the last one has ended */
    srv->hints_started = 0;
    __atomic_store_n(&srv->hinting, 1, __ATOMIC_RELEASE);
    if (pthread_create(&srv->hints_thread, NULL, hints_main, srv) == 0)
        srv->hints_started = 1;
    else
        __atomic_store_n(&srv->hinting, 0, __ATOMIC_RELEASE);
}

static void on_cron(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_server *srv = arg;
    /* Active expiry: remove expired keys a batch at a time so they do
     * not pile up in memory. */
    size_t n = kv_expire_sweep(srv->env.store, 200);
    if (n) __atomic_add_fetch(&srv->env.n.expired_active, n, __ATOMIC_RELAXED);
    long long now = kvd_mstime();
    int pct = __atomic_load_n(&srv->env.cfg->compact_dead_pct, __ATOMIC_RELAXED);
    if (pct > 0 && !__atomic_load_n(&srv->compacting, __ATOMIC_ACQUIRE)) {
        kv_stats st;
        kv_get_stats(srv->env.store, &st);
        if (st.dead_bytes >= srv->env.cfg->compact_min_dead && st.dead_bytes * 100 > st.log_bytes * (uint64_t)pct &&
            st.segments > 1 && !st.failstop)
            kvd_server_start_compaction(srv, "dead bytes over the configured share");
    }
    if (!__atomic_load_n(&srv->hinting, __ATOMIC_ACQUIRE) && kv_hints_pending(srv->env.store) > 0)
        start_hints(srv);
    if (now - srv->last_cron_ms >= 1000) {
        uint64_t cmds = atomic_get(&srv->env.n.total_commands);
        srv->env.n.ops_sec = (cmds - srv->env.n.last_cmds) * 1000 / (uint64_t)(now - srv->last_cron_ms);
        srv->env.n.last_cmds = cmds;
        srv->last_cron_ms = now;
    }
    /* CONFIG SET hz: go on at the new rate. */
    int hz = __atomic_load_n(&srv->env.cfg->expire_hz, __ATOMIC_RELAXED);
    if (hz > 0 && hz != srv->cron_hz) {
        struct timeval tv = cron_interval(hz);
        event_add(srv->ev_cron, &tv);
        srv->cron_hz = hz;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    kvd_server *srv = arg;
    if (sig == SIGUSR1) {
        if (kvd_server_start_compaction(srv, "SIGUSR1") == 0)
            kvd_log(KVD_LOG_NOTICE, "SIGUSR1: a compaction is already running");
        return;
    }
    kvd_log(KVD_LOG_WARNING, "received %s, scheduling shutdown...", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    event_base_loopbreak(srv->base);
}

static void on_shutdown_request(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kvd_server *srv = arg;
    event_base_loopbreak(srv->base);
}

static void kvd_server_request_shutdown(kvd_server *srv)
{
    event_active(srv->ev_shutdown, EV_READ, 0);
}

/* ---- background scrub ---- */

/* First thing on the scrub thread (kv_scrub_options.thread_init). */
static void scrub_thread_init(void *arg)
{
    (void)arg;
    kvd_lower_thread_priority();
}

static int kvd_server_start_scrub(kvd_server *srv)
{
    if (!srv->scrub) return -1;
    int r = kv_scrub_request(srv->scrub);
    if (r == 1) kvd_log(KVD_LOG_NOTICE, "background scrub started (SCRUB)");
    return r;
}

/* ---- background compaction ---- */

typedef struct compact_job {
    kvd_server *srv;
    char why[32];
} compact_job;

static void *compact_main(void *arg)
{
    compact_job *j = arg;
    kvd_server *srv = j->srv;
    kv_io_block_async_signals(); /* as worker_main */
    pthread_setname_np(pthread_self(), "kvd-compact");
    kvd_lower_thread_priority();
    kv_compact_report rep;
    kv_status st = kv_compact(srv->env.store, &rep);
    malloc_trim(0); /* the input buffers and moved-key list: as above */
    if (st == KV_OK && rep.segments_in)
        kvd_log(KVD_LOG_NOTICE,
                "compaction (%s) done: %u segments, %" PRIu64 " -> %" PRIu64 " bytes, %" PRIu64
                " records kept, %.1f ms",
                j->why, rep.segments_in, rep.bytes_before, rep.bytes_after, rep.records_copied,
                rep.elapsed_us / 1000.0);
    else if (st == KV_OK)
        kvd_log(KVD_LOG_VERBOSE, "compaction (%s): %s", j->why, rep.message);
    else
        kvd_log(KVD_LOG_WARNING, "compaction (%s) failed: %s", j->why, rep.message);
    if (st == KV_OK) __atomic_store_n(&srv->hints_failed, 0, __ATOMIC_RELEASE); /* try hints again */
    __atomic_store_n(&srv->compacting, 0, __ATOMIC_RELEASE);
    free(j);
    return NULL;
}

static int kvd_server_start_compaction(kvd_server *srv, const char *why)
{
    pthread_mutex_lock(&srv->compact_mu);
    if (__atomic_load_n(&srv->compacting, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&srv->compact_mu);
        return 0;
    }
    if (srv->compact_started) pthread_join(srv->compact_thread, NULL); /* the last one has ended */
    srv->compact_started = 0;
    compact_job *j = calloc(1, sizeof *j);
    int r = -1;
    if (j) {
        j->srv = srv;
        snprintf(j->why, sizeof j->why, "%s", why);
        __atomic_store_n(&srv->compacting, 1, __ATOMIC_RELEASE);
        if (pthread_create(&srv->compact_thread, NULL, compact_main, j) == 0) {
            srv->compact_started = 1;
            r = 1;
            kvd_log(KVD_LOG_NOTICE, "background compaction started (%s)", why);
        } else {
            __atomic_store_n(&srv->compacting, 0, __ATOMIC_RELEASE);
            free(j);
        }
    }
    pthread_mutex_unlock(&srv->compact_mu);
    return r;
}

/* Waits for a running compaction (shutdown). */
static void join_compaction(kvd_server *srv)
{
    pthread_mutex_lock(&srv->compact_mu);
    if (srv->compact_started) pthread_join(srv->compact_thread, NULL);
    srv->compact_started = 0;
    pthread_mutex_unlock(&srv->compact_mu);
}

/* The store's wall clock under KVD_TEST_CLOCK_OFFSET_MS (tests only):
 * CLOCK_REALTIME shifted by srv->test_clock_offset_ms, in ms since the
 * epoch. Lets a test restart kvd "with the clock set back". */
static uint64_t test_clock(void *arg)
{
    const kvd_server *srv = arg;
    return (uint64_t)(kvd_mstime() + srv->test_clock_offset_ms);
}

/* ---- INFO ---- */

static int want(const char *section, const char *name)
{
    return !section || !strcasecmp(section, "all") || !strcasecmp(section, "default") ||
           !strcasecmp(section, "everything") || !strcasecmp(section, name);
}

static void kvd_server_info(kvd_server *srv, const char *section, sbuf *o)
{
    char sec[64] = {0};
    if (section) {
        snprintf(sec, sizeof sec, "%s", section);
        section = sec;
    }
    kv_stats st;
    kv_get_stats(srv->env.store, &st);
    char line[1024];
    int n;
#define LINE(...)                                              \
    do {                                                       \
        n = snprintf(line, sizeof line, __VA_ARGS__);          \
        sb_add(o, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1); \
    } while (0)
    long long now = kvd_mstime();
    if (want(section, "server")) {
        struct utsname u;
        uname(&u);
        LINE("# Server\r\n");
        LINE("kvd_version:%s\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n", KVD_VERSION);
        LINE("os:%s %s %s\r\narch_bits:%d\r\n", u.sysname, u.release, u.machine, (int)(sizeof(void *) * 8));
        LINE("process_id:%ld\r\ntcp_port:%d\r\n", (long)getpid(), srv->port);
        LINE("uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\n", (now - srv->start_ms) / 1000,
             (now - srv->start_ms) / 86400000);
        LINE("hz:%d\r\nio_threads:%d\r\n", srv->env.cfg->expire_hz, srv->nworkers);
        LINE("data_dir:%s\r\nconfig_file:%s\r\n\r\n", srv->env.cfg->dir, srv->env.cfg->config_file ? srv->env.cfg->config_file : "");
    }
    if (want(section, "clients")) {
        LINE("# Clients\r\nconnected_clients:%lld\r\nmaxclients:%d\r\n",
             (long long)__atomic_load_n(&srv->env.n.connected_clients, __ATOMIC_RELAXED), srv->env.cfg->maxclients);
        uint64_t obuf_max = 0;
        for (int i = 0; i < srv->nworkers; i++) {
            uint64_t m = __atomic_load_n(&srv->workers[i].obuf_recent_max, __ATOMIC_RELAXED);
            if (m > obuf_max) obuf_max = m;
        }
        LINE("client_recent_max_output_buffer:%" PRIu64 "\r\n\r\n", obuf_max);
    }
    if (want(section, "persistence")) {
        char reason[512];
        int fs = kv_failstop_reason(srv->env.store, reason, sizeof reason);
        const kvr_report *r = kv_recovery_report(srv->env.store);
        LINE("# Persistence\r\n");
        LINE("loading:0\r\naof_enabled:1\r\nfsync_policy:%s\r\n", kv_fsync_name(st.fsync));
        LINE("log_bytes:%" PRIu64 "\r\nlive_bytes:%" PRIu64 "\r\ndead_bytes:%" PRIu64 "\r\n", st.log_bytes,
             st.live_bytes, st.dead_bytes);
        LINE("segments:%u\r\nactive_segment:%u\r\nrecords:%" PRIu64 "\r\nlast_seq:%" PRIu64 "\r\n", st.segments,
             st.active_segment, st.records, st.last_seq);
        LINE("fdatasyncs:%" PRIu64 "\r\nfdatasync_avg_us:%" PRIu64 "\r\nfdatasync_max_us:%" PRIu64 "\r\n",
             st.fdatasyncs, st.fdatasyncs ? st.fdatasync_us / st.fdatasyncs : 0, st.fdatasync_max_us);
        LINE("group_commits:%" PRIu64 "\r\nwrites_per_group_commit:%.2f\r\nwrites_per_fdatasync:%.2f\r\n", st.groups,
             st.groups ? (double)st.group_writes / (double)st.groups : 0.0,
             st.fdatasyncs ? (double)st.synced_writes / (double)st.fdatasyncs : 0.0);
        LINE("failstop:%d\r\nfailstop_reason:%s\r\n", fs, reason);
        char badname[32] = "";
        if (st.segments_bad) kv_seg_name(badname, sizeof badname, st.bad_segment);
        LINE("segments_bad:%u\r\nsegment_bad_last:%s\r\nsegment_bad_last_offset:%" PRIu64 "\r\n", st.segments_bad,
             badname, st.bad_offset);
        LINE("expiry_tombstones:%" PRIu64 "\r\nexpiry_tombstones_pending:%" PRIu64 "\r\n", st.expiry_tombstones,
             st.expiry_pending);
        kv_compact_progress cp;
        kv_compact_progress_get(srv->env.store, &cp);
        LINE("compaction_in_progress:%d\r\ncompaction_progress_pct:%.1f\r\ncompactions:%" PRIu64
             "\r\ncompaction_bytes_reclaimed:%" PRIu64 "\r\ncompaction_last_status:%s\r\n"
             "compaction_last_switch_ms:%.1f\r\n",
             cp.running, cp.running && cp.bytes_total ? 100.0 * (double)cp.bytes_done / (double)cp.bytes_total : 0.0,
             cp.runs, cp.bytes_reclaimed, cp.last_status == KV_OK ? "ok" : kv_strerror(cp.last_status),
             cp.last_switch_us / 1000.0);
        LINE("hint_files:%u\r\nhint_files_pending:%u\r\nhint_files_written:%" PRIu64 "\r\n", st.hint_files,
             st.hints_pending, st.hints_written);
        kv_scrub_stats ss = {0};
        if (srv->scrub) kv_scrub_get_stats(srv->scrub, &ss);
        LINE("scrub_in_progress:%d\r\nscrub_bytes_checked:%" PRIu64 "\r\nscrub_last_completed:%" PRIu64
             "\r\nscrub_passes:%" PRIu64 "\r\nscrub_errors:%" PRIu64 "\r\nscrub_last_error:%s\r\n",
             ss.in_progress, ss.bytes_checked, ss.last_completed, ss.passes, ss.errors, ss.last_error);
        LINE("recovery_mode:%s\r\nrecovery_segments:%u\r\nrecovery_records:%" PRIu64 "\r\nrecovery_keys:%" PRIu64
             "\r\n",
             kvr_mode_name(r->mode), r->segments, r->records, r->keys);
        LINE("recovery_hints_used:%u\r\nrecovery_hints_rejected:%u\r\nrecovery_hints_written:%u\r\n",
             r->hints_used, r->hints_rejected, r->hints_written);
        LINE("recovery_torn_bytes_cut:%" PRIu64 "\r\nrecovery_unwritten_bytes_cut:%" PRIu64
             "\r\nrecovery_problems:%u\r\nrecovery_skipped_bytes:%" PRIu64 "\r\n",
             r->torn_bytes, r->unwritten_bytes, r->problems, r->skipped_bytes);
        LINE("recovery_rotations_completed:%u\r\nrecovery_compact_leftovers_removed:%u\r\nrecovery_ms:%.1f\r\n\r\n",
             r->rotations_completed, r->compact_leftovers, r->elapsed_us / 1000.0);
    }
    if (want(section, "stats")) {
        LINE("# Stats\r\n");
        LINE("total_connections_received:%" PRIu64 "\r\ntotal_commands_processed:%" PRIu64
             "\r\ninstantaneous_ops_per_sec:%" PRIu64 "\r\n",
             atomic_get(&srv->env.n.total_connections), atomic_get(&srv->env.n.total_commands), srv->env.n.ops_sec);
        LINE("rejected_connections:%" PRIu64 "\r\nexpired_keys:%" PRIu64 "\r\nkeyspace_hits:%" PRIu64
             "\r\nkeyspace_misses:%" PRIu64 "\r\n",
             atomic_get(&srv->env.n.rejected_connections),
             atomic_get(&srv->env.n.expired_active) + st.expired_on_access - atomic_get(&srv->env.n.expired_access_base),
             atomic_get(&srv->env.n.hits),
             atomic_get(&srv->env.n.misses));
        LINE("client_output_buffer_limit_disconnections:%" PRIu64 "\r\n\r\n", atomic_get(&srv->env.n.obuf_disconnections));
    }
    if (want(section, "keyspace")) {
        LINE("# Keyspace\r\n");
        if (st.keys) LINE("db0:keys=%" PRIu64 ",expires=%" PRIu64 ",avg_ttl=0\r\n", st.keys, st.expires);
    }
#undef LINE
}

/* ---- start / run ---- */

int kvd_server_port(const kvd_server *srv)
{
    return srv->port;
}

static void remove_pidfile(kvd_server *srv)
{
    if (srv->pidfile_written && srv->env.cfg->pidfile) unlink(srv->env.cfg->pidfile);
}

/*
 * Raises the open-file limit and lowers maxclients to what fits beside
 * the reserved descriptors, logging both as Redis's adjustOpenFilesLimit
 * does; runs before recovery, which opens every segment. Returns 0, or -1
 * with err filled when not even one client fits (the start is refused).
 */
static int fit_open_files(kvd_server *srv, char *err, size_t errcap)
{
    kvd_config *cfg = srv->env.cfg;
    srv->fd_reserved = kvd_reserved_fds(cfg->io_threads, kvd_count_segment_files(cfg->dir));
    kvd_nofile_result nf;
    kvd_nofile_adjust(cfg->maxclients, srv->fd_reserved, &nf);
    srv->nofile_limit = nf.limit;
    if (nf.maxclients < 1) {
        snprintf(err, errcap,
                 "Your current 'ulimit -n' of %" PRIu64 " is not enough for the server to start. Please increase "
                 "your open file limit to at least %" PRIu64 ". Exiting.",
                 nf.limit, srv->fd_reserved + 1);
        return -1;
    }
    if (nf.maxclients < cfg->maxclients) {
        kvd_log(KVD_LOG_WARNING, "You requested maxclients of %d requiring at least %" PRIu64 " max file descriptors.",
                cfg->maxclients, nf.wanted);
        kvd_log(KVD_LOG_WARNING, "Server can't set maximum open files to %" PRIu64 " because of OS error: %s.",
                nf.wanted, strerror(nf.set_errno));
        kvd_log(KVD_LOG_WARNING,
                "Current maximum open files is %" PRIu64 ". maxclients has been reduced to %d to compensate for "
                "low ulimit. If you need higher maxclients increase 'ulimit -n'.",
                nf.limit, nf.maxclients);
        __atomic_store_n(&cfg->maxclients, nf.maxclients, __ATOMIC_RELAXED);
    } else if (nf.limit > nf.old_limit) {
        kvd_log(KVD_LOG_NOTICE, "Increased maximum number of open files to %" PRIu64 " (it was originally set to %" PRIu64
                ").", nf.limit, nf.old_limit);
    }
    return 0;
}

/* kvd_hooks.maxclients_fit: as Redis's updateMaxclients, no more clients
 * than the open-file limit holds beside the reserved descriptors. */
static int maxclients_fit(kvd_server *srv, int wanted)
{
    return kvd_nofile_fit(srv->nofile_limit, srv->fd_reserved, wanted);
}

/* kvd_hooks.config_changed: settings that live outside cfg once applied. */
static void config_changed(kvd_server *srv, const char *name)
{
    if (!strcasecmp(name, "loglevel")) kvd_log_set_level(srv->env.cfg->log_level);
    if (srv->scrub && (!strcasecmp(name, "scrub-interval") || !strcasecmp(name, "scrub-rate"))) {
        pthread_mutex_lock(&srv->env.cfg_mu);
        uint64_t interval = (uint64_t)srv->env.cfg->scrub_interval, rate = srv->env.cfg->scrub_rate;
        pthread_mutex_unlock(&srv->env.cfg_mu);
        kv_scrub_set_schedule(srv->scrub, interval, rate);
    }
}

kvd_server *kvd_server_start(kvd_config *cfg, char *err, size_t errcap)
{
    static int threads_ready;
    if (!threads_ready) {
        if (evthread_use_pthreads() != 0) {
            snprintf(err, errcap, "libevent has no pthreads support");
            return NULL;
        }
        threads_ready = 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* as Redis: a closed terminal does not stop the server */
    kvd_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    srv->env.cfg = cfg;
    srv->env.hooks = (kvd_hooks){
        .srv = srv,
        .request_shutdown = kvd_server_request_shutdown,
        .start_compaction = kvd_server_start_compaction,
        .start_scrub = kvd_server_start_scrub,
        .info = kvd_server_info,
        .maxclients_fit = maxclients_fit,
        .config_changed = config_changed,
    };
    pthread_mutex_init(&srv->env.cfg_mu, NULL);
    pthread_mutex_init(&srv->compact_mu, NULL);
    resp_limits_default(&srv->env.limits);
    srv->env.limits.max_bulk_len = cfg->max_bulk_len;
    srv->env.limits.max_args = cfg->max_args;
    srv->start_ms = srv->last_cron_ms = kvd_mstime();
    srv->spare_fd = -1;
    if (fit_open_files(srv, err, errcap) < 0) {
        free(srv);
        return NULL;
    }

    /* The store first: recovery decides whether we may serve at all. */
    kv_options o;
    kv_options_init(&o);
    o.fsync = cfg->fsync;
    o.segment_max_bytes = cfg->segment_size;
    o.recovery_mode = cfg->recovery;
    o.hint_files = cfg->hint_files;
    o.preallocate = cfg->preallocate;
    o.log = store_log;
    const char *off = getenv("KVD_TEST_CLOCK_OFFSET_MS");
    if (off && *off) {
        char *end;
        errno = 0;
        long long v = strtoll(off, &end, 10);
        if (errno || *end || v < -(1LL << 40) || v > (1LL << 40)) {
            snprintf(err, errcap, "KVD_TEST_CLOCK_OFFSET_MS: not a number of milliseconds: '%s'", off);
            free(srv);
            return NULL;
        }
        srv->test_clock_offset_ms = v;
        o.clock_ms = test_clock;
        o.clock_arg = srv;
        kvd_log(KVD_LOG_WARNING, "KVD_TEST_CLOCK_OFFSET_MS=%lld: the store's expiry clock is shifted (for tests only)",
                v);
    }
    kvr_report rep;
    kv_status st = kv_open(cfg->dir, &o, &srv->env.store, &rep);
    if (st != KV_OK) {
        snprintf(err, errcap, "cannot open data directory %s: %s", cfg->dir, rep.message[0] ? rep.message : kv_strerror(st));
        kvr_report_free(&rep);
        free(srv);
        return NULL;
    }
    char line[1024];
    kvr_report_format(&rep, line, sizeof line);
    kvd_log(KVD_LOG_NOTICE, "%s", line);
    kvr_report_free(&rep);

    srv->base = event_base_new();
    if (!srv->base) {
        snprintf(err, errcap, "cannot create the event loop");
        goto fail;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    int gai = getaddrinfo(cfg->bind, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errcap, "cannot resolve bind address '%s': %s", cfg->bind, gai_strerror(gai));
        goto fail;
    }
    srv->listener = evconnlistener_new_bind(srv->base, on_accept, srv,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 511,
                                            ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!srv->listener) {
        snprintf(err, errcap, "cannot listen on %s:%d: %s", cfg->bind, cfg->port, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(srv->listener, on_accept_error);
    srv->ev_accept_resume = evtimer_new(srv->base, on_accept_resume, srv);
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!srv->ev_accept_resume || srv->spare_fd < 0) {
        snprintf(err, errcap, "cannot set up the listener: %s", strerror(errno));
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&ss, &sl);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);

    srv->nworkers = cfg->io_threads;
    srv->workers = calloc((size_t)srv->nworkers, sizeof *srv->workers);
    if (!srv->workers) {
        snprintf(err, errcap, "out of memory");
        goto fail;
    }
    for (int i = 0; i < srv->nworkers; i++) {
        kvd_worker *w = &srv->workers[i];
        w->srv = srv;
        w->idx = i;
        pthread_mutex_init(&w->ho.mu, NULL);
        w->base = event_base_new();
        w->ho.wake = w->base ? event_new(w->base, -1, EV_PERSIST, on_wake, w) : NULL;
        w->ev_clients_cron = w->base ? event_new(w->base, -1, EV_PERSIST, on_clients_cron, w) : NULL;
        struct timeval second = {1, 0};
        if (!w->ho.wake || event_add(w->ho.wake, NULL) != 0 || !w->ev_clients_cron ||
            event_add(w->ev_clients_cron, &second) != 0) {
            snprintf(err, errcap, "cannot create the event loop of I/O thread %d", i);
            goto fail;
        }
    }
    for (int i = 0; i < srv->nworkers; i++)
        if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]) != 0) {
            snprintf(err, errcap, "cannot start I/O thread %d", i);
            for (int k = 0; k < i; k++) {
                event_base_loopbreak(srv->workers[k].base);
                pthread_join(srv->workers[k].thread, NULL);
            }
            srv->nworkers = 0;
            goto fail;
        }

    srv->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, on_signal, srv);
    srv->sig_usr1 = evsignal_new(srv->base, SIGUSR1, on_signal, srv);
    srv->ev_shutdown = event_new(srv->base, -1, EV_PERSIST, on_shutdown_request, srv);
    srv->ev_cron = event_new(srv->base, -1, EV_PERSIST, on_cron, srv);
    srv->cron_hz = cfg->expire_hz > 0 ? cfg->expire_hz : 10;
    struct timeval tv = cron_interval(srv->cron_hz);
    event_add(srv->sig_term, NULL);
    event_add(srv->sig_int, NULL);
    event_add(srv->sig_usr1, NULL);
    event_add(srv->ev_shutdown, NULL);
    event_add(srv->ev_cron, &tv);

    /* The scrub last: nothing after it can fail. */
    kv_scrub_options so;
    kv_scrub_options_init(&so);
    so.interval_s = (uint64_t)cfg->scrub_interval;
    so.rate = cfg->scrub_rate;
    so.thread_name = "kvd-scrub";
    so.thread_init = scrub_thread_init;
    srv->scrub = kv_scrub_new(srv->env.store, &so);
    kv_status sst = srv->scrub ? kv_scrub_start(srv->scrub) : ENOMEM;
    if (sst != KV_OK) {
        kvd_log(KVD_LOG_WARNING, "cannot start the background scrub: %s", kv_strerror(sst));
        kv_scrub_free(srv->scrub);
        srv->scrub = NULL;
    }

    if (cfg->pidfile) {
        FILE *f = fopen(cfg->pidfile, "w");
        if (!f) {
            kvd_log(KVD_LOG_WARNING, "cannot write pidfile %s: %s", cfg->pidfile, strerror(errno));
        } else {
            fprintf(f, "%ld\n", (long)getpid());
            fclose(f);
            srv->pidfile_written = 1;
        }
    }
    kvd_log(KVD_LOG_NOTICE, "kvd %s ready to accept connections on %s:%d (data directory %s, fsync %s, %d I/O thread%s)",
            KVD_VERSION, cfg->bind, srv->port, cfg->dir, kv_fsync_name(cfg->fsync), srv->nworkers,
            srv->nworkers == 1 ? "" : "s");
    return srv;
fail:
    if (srv->listener) evconnlistener_free(srv->listener);
    if (srv->ev_accept_resume) event_free(srv->ev_accept_resume);
    if (srv->spare_fd >= 0) close(srv->spare_fd);
    for (int i = 0; srv->workers && i < srv->nworkers; i++) {
        if (srv->workers[i].ev_clients_cron) event_free(srv->workers[i].ev_clients_cron);
        if (srv->workers[i].ho.wake) event_free(srv->workers[i].ho.wake);
        if (srv->workers[i].base) event_base_free(srv->workers[i].base);
    }
    free(srv->workers);
    if (srv->base) event_base_free(srv->base);
    kv_close(srv->env.store);
    free(srv);
    return NULL;
}

/* Barrier for running something on every I/O thread. */
typedef struct barrier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
} barrier;

static void barrier_arrive(barrier *b)
{
    pthread_mutex_lock(&b->mu);
    b->left--;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

typedef struct stop_arg {
    kvd_worker *w;
    barrier *b;
} stop_arg;

/* On each I/O thread: take no new requests. */
static void stop_reading(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stop_arg *a = arg;
    a->w->stopping = 1;
    for (kvd_client *c = a->w->clients; c; c = c->next)
        if (c->rev) event_del(c->rev);
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
    event_base_loopexit(w->base, &tv);
}

static void on_all_workers(kvd_server *srv, event_callback_fn fn, int wait)
{
    barrier b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, srv->nworkers};
    stop_arg *args = calloc((size_t)srv->nworkers, sizeof *args);
    struct timeval zero = {0, 0};
    for (int i = 0; i < srv->nworkers; i++) {
        args[i].w = &srv->workers[i];
        args[i].b = &b;
        event_base_once(srv->workers[i].base, -1, EV_TIMEOUT, fn, wait ? (void *)&args[i] : (void *)&srv->workers[i],
                        &zero);
    }
    if (wait) {
        pthread_mutex_lock(&b.mu);
        while (b.left > 0) pthread_cond_wait(&b.cv, &b.mu);
        pthread_mutex_unlock(&b.mu);
    }
    free(args);
}

int kvd_server_run(kvd_server *srv)
{
    event_base_dispatch(srv->base);
    kvd_log(KVD_LOG_WARNING, "shutting down: no new connections or requests; finishing writes in flight");
    evconnlistener_free(srv->listener);
    srv->listener = NULL;
    on_all_workers(srv, stop_reading, 1);
    /* Every write sent so far is queued before this barrier. */
    kv_status sync_st = kv_sync(srv->env.store);
    on_all_workers(srv, finish_worker, 0);
    for (int i = 0; i < srv->nworkers; i++) pthread_join(srv->workers[i].thread, NULL);
    for (int i = 0; i < srv->nworkers; i++) {
        kvd_worker *w = &srv->workers[i];
        while (w->clients) {
            kvd_client *c = w->clients;
            c->pending = 0;
            client_free(c);
        }
        event_free(w->ho.wake);
        event_free(w->ev_clients_cron);
        event_base_free(w->base);
        free(w->newfds);
        pthread_mutex_destroy(&w->ho.mu);
    }
    free(srv->workers);
    join_compaction(srv); /* a compaction in progress finishes (or fails cleanly) first */
    kv_scrub_free(srv->scrub); /* a pass in progress stops at its next chunk */
    srv->scrub = NULL;
    if (srv->hints_started) pthread_join(srv->hints_thread, NULL);
    srv->hints_started = 0;
    kv_status close_st = kv_close(srv->env.store);
    event_free(srv->sig_term);
    event_free(srv->sig_int);
    event_free(srv->sig_usr1);
    event_free(srv->ev_shutdown);
    event_free(srv->ev_cron);
    event_free(srv->ev_accept_resume);
    if (srv->spare_fd >= 0) close(srv->spare_fd);
    event_base_free(srv->base);
    remove_pidfile(srv);
    int rc = 0;
    if ((sync_st != KV_OK && sync_st != KV_FAILSTOP) || close_st != KV_OK) {
        kvd_log(KVD_LOG_WARNING, "final sync failed: %s", kv_strerror(sync_st != KV_OK ? sync_st : close_st));
        rc = 1;
    }
    pthread_mutex_destroy(&srv->env.cfg_mu);
    free(srv);
    kvd_log(KVD_LOG_NOTICE, "kvd is now ready to exit, bye bye...");
    return rc;
}
