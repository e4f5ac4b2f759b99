/*
 * repl_link — the replica's side: one thread that connects to the
 * primary, speaks Redis's handshake (PING, AUTH, REPLCONF, PSYNC), takes
 * a snapshot into a directory beside the data directory when it must
 * (full resync) and switches to it only once it is complete and
 * recovered (kv_replace_dir), then appends the primary's records as they
 * come (kv_apply_records) and acknowledges them.
 *
 * Owns: the link's socket (r->link_fd), the snapshot directory
 *   "<data dir>.sync" while a full resync runs.
 * Guarantees: a record is appended only after the stream parser checked
 *   both its CRCs and its sequence number, and the writer checked them
 *   again; any bad frame drops the link, and the next PSYNC asks for the
 *   record after the last one appended. A replica killed during a full
 *   resync keeps its old data (the switch is one rename).
 * Locking: r->mu for the link's state fields; the store's writer for
 *   appends (the thread waits for each append before the next).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "repl_int.h"
#include "repl_stream.h"


static int link_stale(link_t *l)
{
    kvrepl *r = l->r;
    pthread_mutex_lock(&r->mu);
    int stale = r->stopping || r->link_gen != l->gen;
    pthread_mutex_unlock(&r->mu);
    return stale;
}


/* Connects to host:port within timeout_ms. Returns the socket or -errno. */
static int dial(const char *host, int port, long long timeout_ms)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, ps, &hints, &ai);
    if (g != 0) return -EHOSTUNREACH;
    int fd = -1, err = ECONNREFUSED;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int c = connect(fd, a->ai_addr, a->ai_addrlen);
        if (c < 0 && errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int pr = poll(&p, 1, (int)timeout_ms);
            socklen_t sl = sizeof err;
            if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0) c = 0;
            else if (pr == 0) err = ETIMEDOUT;
        } else if (c < 0) {
            err = errno;
        }
        if (c < 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) return -err;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Reads more bytes into l->in, waiting up to wait_ms. Returns the bytes
 * read, 0 on timeout, -errno (-ECONNRESET for end of stream). */
static ssize_t read_more(link_t *l, int wait_ms)
{
    if (l->cap - l->have < 65536) {
        size_t nc = l->cap ? l->cap * 2 : 1u << 20;
        while (nc - l->have < 65536) nc *= 2;
        uint8_t *nb = realloc(l->in, nc);
        if (!nb) return -ENOMEM;
        l->in = nb;
        l->cap = nc;
    }
    struct pollfd p = {l->fd, POLLIN, 0};
    int pr = poll(&p, 1, wait_ms);
    if (pr < 0) return errno == EINTR ? 0 : -errno;
    if (pr == 0) return 0;
    ssize_t n = recv(l->fd, l->in + l->have, l->cap - l->have, 0);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    if (n == 0) return -ECONNRESET;
    l->have += (size_t)n;
    pthread_mutex_lock(&l->r->mu);
    l->r->last_io_ms = repl_mono_ms();
    pthread_mutex_unlock(&l->r->mu);
    add64(&l->r->bytes_received, (uint64_t)n);
    return n;
}

static void consume(link_t *l, size_t n)
{
    memmove(l->in, l->in + n, l->have - n);
    l->have -= n;
}

/* Sends a command (a RESP array of the given words) and reads the one
 * line that answers it into line. Returns 0 or -errno. */
static int command(link_t *l, char *line, size_t cap, int argc, const char *const *argv)
{
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof buf, "*%d\r\n", argc);
    for (int i = 0; i < argc && n < sizeof buf; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    if (n >= sizeof buf) return -EINVAL;
    int e = send_all(l->fd, buf, n);
    if (e < 0) return e;
    long long deadline = repl_mono_ms() + l->timeout_ms;
    for (;;) {
        uint8_t *nl = l->have ? memchr(l->in, '\n', l->have) : NULL;
        if (nl) {
            size_t len = (size_t)(nl - l->in) + 1, t = len >= 2 && nl[-1] == '\r' ? len - 2 : len - 1;
            snprintf(line, cap, "%.*s", (int)(t < cap ? t : cap - 1), (const char *)l->in);
            consume(l, len);
            return 0;
        }
        if (l->have > 4096) return -EPROTO;
        long long left = deadline - repl_mono_ms();
        if (left <= 0) return -ETIMEDOUT;
        ssize_t r = read_more(l, (int)(left > 1000 ? 1000 : left));
        if (r < 0) return (int)r;
        if (link_stale(l)) return -ECANCELED;
    }
}

/* The handshake, up to PSYNC's answer in line. Returns 0 or -1 (logged). */
static int handshake(link_t *l, char *line, size_t cap)
{
    kvrepl *r = l->r;
    pthread_mutex_lock(&r->mu);
    char *auth = r->masterauth ? strdup(r->masterauth) : NULL;
    char port[16], replid[41], ip[sizeof r->set.announce_ip];
    snprintf(port, sizeof port, "%d", r->set.listening_port);
    memcpy(ip, r->set.announce_ip, sizeof ip);
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    /* A log wholly within the previous history (a former primary that
     * restarted after a crash, or was promoted and took no write) asks
     * under that history's id, which its new primary may share. */
    int use2 = r->st.second_off && p.applied_seq + 1 <= r->st.second_off && strspn(r->st.replid2, "0") != 40;
    int failover = r->fo_psync && r->fo_state == FO_IN_PROGRESS;
    if (failover) use2 = 0; /* FAILOVER: the target checks it is its own id */
    memcpy(replid, use2 ? r->st.replid2 : r->st.replid, sizeof replid);
    pthread_mutex_unlock(&r->mu);
    char off[32];
    snprintf(off, sizeof off, "%" PRIu64, p.applied_seq + 1);
    int e = command(l, line, cap, 1, (const char *[]){"PING"});
    const char *step = "PING";
    if (e == 0 && line[0] == '-' && strncmp(line, "-NOAUTH", 7) && strncmp(line, "-ERR operation not permitted", 28))
        e = -EPROTO;
    if (e == 0 && auth) {
        step = "AUTH";
        e = command(l, line, cap, 2, (const char *[]){"AUTH", auth});
        if (e == 0 && line[0] != '+') e = -EACCES;
    }
    free(auth);
    if (e == 0) {
        step = "REPLCONF listening-port";
        e = command(l, line, cap, 3, (const char *[]){"REPLCONF", "listening-port", port});
        if (e == 0 && line[0] != '+') e = -EPROTO;
    }
    if (e == 0 && ip[0]) { /* replica-announce-ip, after the port as Redis sends it */
        step = "REPLCONF ip-address";
        e = command(l, line, cap, 3, (const char *[]){"REPLCONF", "ip-address", ip});
        if (e == 0 && line[0] != '+') e = -EPROTO;
    }
    if (e == 0) {
        step = "REPLCONF capa";
        e = command(l, line, cap, 7, (const char *[]){"REPLCONF", "capa", "eof", "capa", "psync2", "capa", "kvd"});
        if (e == 0 && line[0] != '+') e = -EPROTO;
    }
    if (e == 0) {
        step = "PSYNC";
        e = command(l, line, cap, failover ? 4 : 3, (const char *[]){"PSYNC", replid, off, "FAILOVER"});
        if (e == 0 && strncmp(line, "+FULLRESYNC ", 12) && strncmp(line, "+CONTINUE", 9)) e = -EPROTO;
        if (failover && (e == 0 || e == -EPROTO)) failover_psync_answered(r, e == 0);
    }
    if (e < 0) {
        rlog(r, KV_LOG_WARN, "replication: %s to primary %s:%d failed: %s%s%s", step, l->host, l->port,
             e == -EPROTO || e == -EACCES ? "it answered " : "", e == -EPROTO || e == -EACCES ? line : "",
             e == -EPROTO || e == -EACCES ? "" : strerror(-e));
        return -1;
    }
    return 0;
}

/* ---- appending and acknowledging ---- */

/* Sends REPLCONF ACK <applied> FACK <fsynced>. Returns 0 or -errno. */
static int send_ack(link_t *l)
{
    kv_repl_pos p;
    kv_repl_position(l->r->s, &p);
    char a[24], f[24], buf[160];
    int na = snprintf(a, sizeof a, "%" PRIu64, p.applied_seq), nf = snprintf(f, sizeof f, "%" PRIu64, p.synced_seq);
    int n = snprintf(buf, sizeof buf, "*5\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$%d\r\n%s\r\n$4\r\nFACK\r\n$%d\r\n%s\r\n", na,
                     a, nf, f);
    l->acked = p.applied_seq;
    l->facked = p.synced_seq;
    l->last_ack_ms = repl_mono_ms();
    return send_all(l->fd, buf, (size_t)n);
}

/* Appends the gathered records and waits for them. Returns 0 or -1
 * (logged: the link must be dropped). */
static int flush_apply(link_t *l)
{
    if (l->napply == 0) return 0;
    kv_status st = kv_apply_records(l->r->s, l->apply, l->napply, 1); /* CRCs checked by the parser */
    l->napply = 0;
    if (st != KV_OK) {
        rlog(l->r, KV_LOG_WARN, "replication: appending the primary's records failed: %s; dropping the link",
             kv_strerror(st));
        if (st == KV_CORRUPT || st == KV_INVALID) add64(&l->r->stream_errors, 1);
        return -1;
    }
    return send_ack(l) < 0 ? -1 : 0;
}

static int gather(link_t *l, const kvrs_ev *ev)
{
    if (l->napply + ev->len > l->apply_cap) {
        size_t nc = l->apply_cap ? l->apply_cap : 1u << 20;
        while (nc < l->napply + ev->len) nc *= 2;
        uint8_t *nb = realloc(l->apply, nc);
        if (!nb) return -1;
        l->apply = nb;
        l->apply_cap = nc;
    }
    memcpy(l->apply + l->napply, ev->data, ev->len);
    l->napply += ev->len;
    add64(&l->r->records_received, 1);
    return 0;
}

/* +CONTINUE [<id>]: a new id means the primary was promoted; this node
 * keeps the old one as replid2 for its own replicas (PSYNC2). */
static void continue_with(link_t *l, const char *line)
{
    kvrepl *r = l->r;
    char id[41] = "";
    if (strlen(line) != 10 + 40 || line[9] != ' ') return; /* "+CONTINUE": the id stays */
    memcpy(id, line + 10, 40);
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    pthread_mutex_lock(&r->mu);
    if (strcmp(id, r->st.replid)) {
        memcpy(r->st.replid2, r->st.replid, sizeof r->st.replid2);
        r->st.second_off = p.applied_seq + 1;
        memcpy(r->st.replid, id, sizeof r->st.replid);
        do_state_save(r);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- the stream ---- */

/* Handles the events in l->in. Returns 0 to go on, -1 to drop the link. */
static int drain_events(link_t *l, kvrs_parser *ps)
{
    size_t off = 0;
    int getack = 0;
    for (;;) {
        kvrs_ev ev;
        size_t used = 0;
        kvrs_event t = kvrs_next(ps, l->in + off, l->have - off, &used, &ev);
        if (t == KVRS_NEED_MORE) break;
        int e = 0;
        switch (t) {
        case KVRS_RECORD: e = gather(l, &ev); break;
        case KVRS_FILE_BEGIN:
        case KVRS_FILE_DATA:
        case KVRS_FILE_END: e = sync_file(l, &ev); break;
        case KVRS_DIVERGED: e = save_divergent(l, ev.seq); break;
        case KVRS_SNAPSHOT_END:
            e = sync_end(l, ev.seq);
            if (e == 0) repl_set_link_state(l->r, "connected", 1, 0);
            break;
        case KVRS_GETACK: getack = 1; break; /* answered below, after what came with it is appended */
        case KVRS_PING: break;
        case KVRS_ERROR:
        default:
            rlog(l->r, KV_LOG_WARN, "replication: bad stream from primary %s:%d: %s; resyncing from offset %" PRIu64,
                 l->host, l->port, ev.error, ps->next_seq);
            add64(&l->r->stream_errors, 1);
            e = -1;
            break;
        }
        if (e < 0) return -1;
        off += used;
    }
    consume(l, off);
    int had = l->napply > 0;
    if (flush_apply(l) < 0) return -1;
    return getack && !had ? send_ack(l) : 0; /* flush_apply acknowledged what it appended */
}

static void run_stream(link_t *l, const char *line)
{
    kvrepl *r = l->r;
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    kvrs_parser ps;
    int full = !strncmp(line, "+FULLRESYNC ", 12);
    if (full && sync_begin(l, line) < 0) return;
    if (!full) {
        continue_with(l, line);
        repl_set_link_state(r, "connected", 1, 0);
        rlog(r, KV_LOG_INFO, "MASTER <-> REPLICA sync: partial resync from offset %" PRIu64 " accepted",
             p.applied_seq + 1);
    }
    kvrs_init(&ps, p.applied_seq + 1, full);
    long long last_rx = repl_mono_ms();
    for (;;) {
        if (l->have > 0 && drain_events(l, &ps) < 0) break;
        if (link_stale(l)) break;
        long long now = repl_mono_ms();
        if (!full || !ps.snapshot) {
            kv_repl_pos q;
            kv_repl_position(r->s, &q);
            if ((now - l->last_ack_ms >= 1000 || q.synced_seq != l->facked) && send_ack(l) < 0) break;
        }
        ssize_t n = read_more(l, 200);
        if (n < 0) {
            rlog(r, KV_LOG_WARN, "replication: connection with primary %s:%d lost: %s", l->host, l->port,
                 n == -ECONNRESET ? "closed by the primary" : strerror((int)-n));
            break;
        }
        if (n > 0) last_rx = now;
        if (l->timeout_ms > 0 && now - last_rx > l->timeout_ms) {
            rlog(r, KV_LOG_WARN, "MASTER timeout: no data nor PING received from %s:%d", l->host, l->port);
            break;
        }
    }
    if (l->file_fd >= 0) close(l->file_fd);
    l->file_fd = -1;
    if (l->syncdir[0]) remove_dir(l->syncdir); /* an unfinished snapshot; the old data stays */
    l->syncdir[0] = 0;
}

/* One connection, from dialling to the end of its stream. */
static void run_link(link_t *l)
{
    kvrepl *r = l->r;
    repl_set_link_state(r, "connecting", 0, 0);
    int fd = dial(l->host, l->port, l->timeout_ms > 0 ? l->timeout_ms : 60000);
    if (fd < 0) {
        rlog(r, KV_LOG_WARN, "replication: cannot connect to primary %s:%d: %s", l->host, l->port, strerror(-fd));
        repl_set_link_state(r, "connect", 0, 0);
        return;
    }
    pthread_mutex_lock(&r->mu);
    int stale = r->stopping || r->link_gen != l->gen;
    if (!stale) r->link_fd = fd;
    pthread_mutex_unlock(&r->mu);
    if (!stale) {
        l->fd = fd;
        l->have = 0;
        l->last_ack_ms = 0; /* the first ACK goes out as soon as the stream (or snapshot) is in */
        char line[512];
        if (handshake(l, line, sizeof line) == 0) run_stream(l, line);
    }
    pthread_mutex_lock(&r->mu);
    r->link_fd = -1;
    pthread_mutex_unlock(&r->mu);
    close(fd);
    repl_set_link_state(r, "connect", 0, 0);
}

void *link_main(void *arg)
{
    kvrepl *r = arg;
    pthread_setname_np(pthread_self(), "kvd-repl-link");
    link_t l;
    memset(&l, 0, sizeof l);
    l.r = r;
    l.file_fd = -1;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stopping && !r->st.master_host[0]) pthread_cond_wait(&r->cv, &r->mu);
        if (r->stopping) break;
        l.gen = r->link_gen;
        memcpy(l.host, r->st.master_host, sizeof l.host);
        l.port = r->st.master_port;
        l.timeout_ms = r->set.timeout_ms;
        pthread_mutex_unlock(&r->mu);
        run_link(&l);
        pthread_mutex_lock(&r->mu);
        if (r->stopping) break;
        if (r->link_gen == l.gen) { /* failed or dropped: try again in a second */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
    }
    pthread_mutex_unlock(&r->mu);
    free(l.in);
    free(l.apply);
    return NULL;
}
