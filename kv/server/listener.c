/*
 * listener — accepting connections on the main thread (server_state.h):
 * each accepted socket goes to an I/O thread, round robin; a connection
 * over maxclients is answered with Redis's error and closed.
 *
 * Owns: the listening socket, the spare descriptor and the accept-resume
 *   timer.
 * Guarantees: at the descriptor limit (EMFILE, ENFILE) the listener never
 *   spins: it rests KVD_ACCEPT_PAUSE_MS and refuses the waiting
 *   connections instead of leaving them hanging in silence.
 * Locking: main thread only; counters are atomic.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "kvd_log.h"
#include "server_state.h"

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
    counter_inc(&srv->env.n.rejected_connections);
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
    counter_inc(&srv->env.n.total_connections);
    kvd_worker *w = &srv->workers[srv->next_worker++ % (unsigned)srv->nworkers];
    if (kvd_worker_hand_fd(w, fd) != 0) {
        close(fd);
        __atomic_sub_fetch(&srv->env.n.connected_clients, 1, __ATOMIC_RELAXED);
    }
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

int kvd_listener_open(kvd_server *srv, char *err, size_t errcap)
{
    const kvd_config *cfg = srv->env.cfg;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    int gai = getaddrinfo(cfg->bind, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errcap, "cannot resolve bind address '%s': %s", cfg->bind, gai_strerror(gai));
        return -1;
    }
    srv->listener = evconnlistener_new_bind(srv->base, on_accept, srv,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 511,
                                            ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!srv->listener) {
        snprintf(err, errcap, "cannot listen on %s:%d: %s", cfg->bind, cfg->port, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(srv->listener, on_accept_error);
    srv->ev_accept_resume = evtimer_new(srv->base, on_accept_resume, srv);
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!srv->ev_accept_resume || srv->spare_fd < 0) {
        snprintf(err, errcap, "cannot set up the listener: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&ss, &sl);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

void kvd_listener_close(kvd_server *srv)
{
    evconnlistener_free(srv->listener);
    srv->listener = NULL;
}

void kvd_listener_free(kvd_server *srv)
{
    if (srv->listener) evconnlistener_free(srv->listener);
    srv->listener = NULL;
    if (srv->ev_accept_resume) event_free(srv->ev_accept_resume);
    srv->ev_accept_resume = NULL;
    if (srv->spare_fd >= 0) close(srv->spare_fd);
    srv->spare_fd = -1;
}
