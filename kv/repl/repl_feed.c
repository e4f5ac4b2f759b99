/*
 * repl_feed — the primary's side: one sender thread per replica answers
 * its PSYNC, ships a snapshot when a partial resync is not possible, then
 * streams the log's records as they are written (kv_feed); one reader
 * thread per replica takes its REPLCONF ACKs.
 *
 * Owns: each replica's socket (closed by its sender when it leaves), its
 * feed and snapshot.
 * Guarantees: a replica receives records in log order with no gap, from
 *   exactly the sequence number it asked for (+CONTINUE) or the
 *   snapshot's end + 1 (+FULLRESYNC); a partial resync is granted only
 *   for a history this node shares (its replid, or its replid2 up to
 *   second_off) and still holds as written.
 * Locking: r->mu for the replica list; acks and state are atomics.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "repl_int.h"
#include "repl_stream.h"

int send_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EPIPE;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_line(int fd, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n > sizeof line - 3) return -EINVAL;
    memcpy(line + n, "\r\n", 2);
    return send_all(fd, line, (size_t)n + 2);
}

static int closing(kvrepl_replica *rp)
{
    return __atomic_load_n(&rp->closing, __ATOMIC_ACQUIRE) || __atomic_load_n(&rp->r->stopping, __ATOMIC_ACQUIRE);
}

/* ---- the ack reader ---- */

static void *reader_main(void *arg)
{
    kvrepl_replica *rp = arg;
    kvrepl *r = rp->r;
    pthread_setname_np(pthread_self(), "kvd-repl-ack");
    uint8_t buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(rp->fd, buf + have, sizeof buf - have, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        have += (size_t)n;
        size_t off = 0;
        for (;;) {
            char args[6][65];
            size_t used = 0;
            int argc = kvrs_parse_command(buf + off, have - off, &used, args, 6);
            if (argc == 0) break;
            if (argc < 0) {
                rlog(r, KV_LOG_WARN, "replica %s:%d sent something that is not a REPLCONF; dropping it", rp->peer.ip,
                     rp->peer.port);
                goto out;
            }
            off += used;
            if (argc >= 3 && !strcasecmp(args[0], "REPLCONF") && !strcasecmp(args[1], "ACK")) {
                uint64_t ack = strtoull(args[2], NULL, 10), fack = ack;
                if (argc >= 5 && !strcasecmp(args[3], "FACK")) fack = strtoull(args[4], NULL, 10);
                /* Offsets only grow (a replica never unacknowledges). */
                uint64_t cur = ld64(&rp->ack);
                while (ack > cur && !__atomic_compare_exchange_n(&rp->ack, &cur, ack, 0, __ATOMIC_ACQ_REL,
                                                                  __ATOMIC_ACQUIRE)) {
                }
                cur = ld64(&rp->fack);
                while (fack > cur && !__atomic_compare_exchange_n(&rp->fack, &cur, fack, 0, __ATOMIC_ACQ_REL,
                                                                   __ATOMIC_ACQUIRE)) {
                }
                __atomic_store_n(&rp->last_ack_ms, repl_mono_ms(), __ATOMIC_RELEASE);
                repl_check_waiters(r, 0);
            }
        }
        memmove(buf, buf + off, have - off);
        have -= off;
        if (have == sizeof buf) break; /* a command longer than any REPLCONF */
    }
out:
    __atomic_store_n(&rp->closing, 1, __ATOMIC_RELEASE);
    shutdown(rp->fd, SHUT_RDWR);
    return NULL;
}

/* ---- the sender ---- */

/* Streams one held snapshot: every file, then the end frame. */
static int send_snapshot(kvrepl_replica *rp, const kv_snapshot *snap)
{
    kvrepl *r = rp->r;
    const kv_io *io = kv_store_io(r->s);
    size_t cap = 1u << 20;
    uint8_t *buf = malloc(cap);
    if (!buf) return -ENOMEM;
    int e = 0;
    for (size_t i = 0; e == 0 && i < snap->n; i++) {
        char name[32];
        kv_seg_name(name, sizeof name, snap->files[i].file_id);
        uint8_t head[17 + KVRS_MAX_NAME + 4];
        e = send_all(rp->fd, head, kvrs_file_head(head, name, snap->files[i].size));
        uint32_t crc = 0;
        for (uint64_t off = 0; e == 0 && off < snap->files[i].size;) {
            size_t n = snap->files[i].size - off < cap ? (size_t)(snap->files[i].size - off) : cap;
            e = kv_io_read_full(io, snap->files[i].fd, buf, n, off);
            if (e == 0) {
                crc = kv_crc32(crc, buf, n);
                e = send_all(rp->fd, buf, n);
                add64(&r->bytes_sent, n);
            }
            off += n;
            if (closing(rp)) e = -ECANCELED;
        }
        uint8_t tail[4];
        if (e == 0) e = send_all(rp->fd, tail, kvrs_file_tail(tail, crc));
    }
    uint8_t end[13];
    if (e == 0) e = send_all(rp->fd, end, kvrs_snapshot_end(end, snap->seq));
    free(buf);
    return e;
}

/* Answers PSYNC: a feed from the asked offset (+CONTINUE), or a snapshot
 * and a feed from its end (+FULLRESYNC). Returns the feed or NULL. */
static kv_feed *answer_psync(kvrepl_replica *rp)
{
    kvrepl *r = rp->r;
    char myid[41], id2[41];
    pthread_mutex_lock(&r->mu);
    memcpy(myid, r->st.replid, sizeof myid);
    memcpy(id2, r->st.replid2, sizeof id2);
    uint64_t second = r->st.second_off;
    int replica = r->st.master_host[0] != 0;
    pthread_mutex_unlock(&r->mu);
    char *end = NULL;
    unsigned long long off = strtoull(rp->offset, &end, 10);
    int offset_ok = end && *end == 0 && rp->offset[0] != '-' && off > 0;
    kv_feed *f = NULL;
    int asked = strcmp(rp->replid, "?") != 0;
    if (offset_ok && (!strcmp(rp->replid, myid) || (second && !strcmp(rp->replid, id2) && off <= second)) &&
        kv_feed_open(r->s, off, &f) == KV_OK) {
        if (send_line(rp->fd, "+CONTINUE %s", myid) < 0) {
            kv_feed_close(f);
            return NULL;
        }
        add64(&r->sync_partial_ok, 1);
        rlog(r, KV_LOG_INFO, "Partial resynchronization request from %s:%d accepted. Sending records from offset %llu",
             rp->peer.ip, rp->peer.port, off);
        return f;
    }
    (void)replica;
    /* Divergence: the replica asks for a history this node shares only up
     * to a point (its predecessor's, past where this node took over; or
     * its own, past its end): it must set aside what it holds after. */
    uint64_t common = 0;
    int diverged = 0;
    if (offset_ok && second && !strcmp(rp->replid, id2) && off > second) {
        common = second - 1;
        diverged = 1;
    } else if (offset_ok && !strcmp(rp->replid, myid)) {
        kv_repl_pos pos;
        kv_repl_position(r->s, &pos);
        if (off > pos.written_seq + 1) {
            common = pos.written_seq;
            diverged = 1;
        }
    }
    if (asked) add64(&r->sync_partial_err, 1);
    add64(&r->sync_full, 1);
    rlog(r, KV_LOG_INFO, "Full resync requested by replica %s:%d (asked for %s at %s)", rp->peer.ip, rp->peer.port,
         rp->replid, rp->offset);
    kv_snapshot snap;
    kv_status st = kv_snapshot_hold(r->s, &snap);
    if (st == KV_OK && (st = kv_feed_open(r->s, snap.seq + 1, &f)) != KV_OK) kv_snapshot_release(r->s, &snap);
    if (st != KV_OK) {
        rlog(r, KV_LOG_WARN, "cannot take a snapshot for replica %s:%d: %s", rp->peer.ip, rp->peer.port,
             kv_strerror(st));
        send_line(rp->fd, "-ERR cannot take a snapshot: %s", kv_strerror(st));
        return NULL;
    }
    __atomic_store_n(&rp->state, RSTATE_SEND_BULK, __ATOMIC_RELEASE);
    int e = send_line(rp->fd, "+FULLRESYNC %s %" PRIu64, myid, snap.seq);
    if (e == 0 && diverged) {
        uint8_t d[13];
        rlog(r, KV_LOG_WARN, "replica %s:%d asked for offset %llu of a history this node shares up to %" PRIu64
             " only: it sets aside its records after that", rp->peer.ip, rp->peer.port, off, common);
        e = send_all(rp->fd, d, kvrs_diverged(d, common));
    }
    if (e == 0) e = send_snapshot(rp, &snap);
    uint64_t files = snap.n;
    kv_snapshot_release(r->s, &snap);
    if (e < 0) {
        rlog(r, KV_LOG_WARN, "sending the snapshot to replica %s:%d failed: %s", rp->peer.ip, rp->peer.port,
             strerror(-e));
        kv_feed_close(f);
        return NULL;
    }
    rlog(r, KV_LOG_INFO, "Synchronization with replica %s:%d succeeded (%" PRIu64 " segments)", rp->peer.ip,
         rp->peer.port, files);
    return f;
}

/* Sends the records of buf[0, len) as 'R' frames. Returns 0 or -errno. */
static int send_records(kvrepl_replica *rp, const uint8_t *buf, size_t len, uint8_t **out, size_t *cap)
{
    size_t n = 0, need = len + len / 44 + 1;
    if (need > *cap) {
        uint8_t *nb = realloc(*out, need);
        if (!nb) return -ENOMEM;
        *out = nb;
        *cap = need;
    }
    uint64_t records = 0;
    for (size_t off = 0; off < len;) {
        uint32_t rl = kv_get_u32(buf + off + 8); /* checked by the feed */
        (*out)[n++] = 'R';
        memcpy(*out + n, buf + off, rl);
        n += rl;
        off += rl;
        records++;
    }
    add64(&rp->r->records_sent, records);
    add64(&rp->r->bytes_sent, n);
    return send_all(rp->fd, *out, n);
}

/* 1 when someone waits for this replica's acknowledgements (a WAIT, or
 * the synchronous mode): records go out the moment they are written. */
static int acks_awaited(kvrepl *r)
{
    pthread_mutex_lock(&r->mu);
    int v = r->waiters != NULL || r->set.sync_replicas > 0;
    pthread_mutex_unlock(&r->mu);
    return v;
}

static long long ping_period(kvrepl *r)
{
    pthread_mutex_lock(&r->mu);
    long long v = r->set.ping_period_ms;
    pthread_mutex_unlock(&r->mu);
    return v;
}

static void stream(kvrepl_replica *rp, kv_feed *f)
{
    kvrepl *r = rp->r;
    uint8_t *buf = NULL, *out = NULL;
    size_t cap = 0, ocap = 0, len;
    long long last_send = repl_mono_ms();
    while (!closing(rp)) {
        kv_status st = kv_feed_read(f, &buf, &cap, &len, KVREPL_SEND_BYTES, KVREPL_FEED_WAIT_MS);
        if (st != KV_OK) {
            if (st != KV_CLOSED)
                rlog(r, KV_LOG_WARN, "replica %s:%d: the log cannot be streamed from offset %" PRIu64 ": %s; dropping it",
                     rp->peer.ip, rp->peer.port, kv_feed_next_seq(f), kv_strerror(st));
            break;
        }
        int e = 0;
        long long now = repl_mono_ms();
        unsigned gen = __atomic_load_n(&r->getack_gen, __ATOMIC_ACQUIRE);
        if (len > 0) {
            e = send_records(rp, buf, len, &out, &ocap);
            last_send = now;
        }
        if (e == 0 && gen != rp->getack_seen) {
            rp->getack_seen = gen;
            e = send_all(rp->fd, "G", 1);
        } else if (e == 0 && len == 0 && now - last_send >= ping_period(r)) {
            e = send_all(rp->fd, "P", 1);
            last_send = now;
        }
        if (e < 0) break;
        if (len > 0 && len < KVREPL_SEND_BYTES / 2 && !acks_awaited(r)) {
            /* Asynchronous and nobody waiting: let a few more groups
             * gather, so that the replica appends (and syncs) them
             * together and both sides wake less often. */
            struct timespec ts = {0, KVREPL_COALESCE_US * 1000L};
            nanosleep(&ts, NULL);
        }
    }
    free(buf);
    free(out);
}

/* Ends a replica: its reader joined, its socket closed, out of the list.
 * The last thing that touches r (kvrepl_stop may free r right after). */
static void replica_leave(kvrepl_replica *rp)
{
    kvrepl *r = rp->r;
    __atomic_store_n(&rp->closing, 1, __ATOMIC_RELEASE);
    shutdown(rp->fd, SHUT_RDWR);
    if (rp->reader_started) pthread_join(rp->reader, NULL);
    close(rp->fd);
    rlog(r, KV_LOG_INFO, "Connection with replica %s:%d lost.", rp->peer.ip, rp->peer.port);
    pthread_mutex_lock(&r->mu);
    for (kvrepl_replica **p = &r->replicas; *p; p = &(*p)->next)
        if (*p == rp) {
            *p = rp->next;
            break;
        }
    if (--r->nreplicas == 0) r->no_replica_since_ms = repl_mono_ms();
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(rp);
}

static void *sender_main(void *arg)
{
    kvrepl_replica *rp = arg;
    pthread_setname_np(pthread_self(), "kvd-repl-send");
    /* The server's event loop made the socket non-blocking; these threads
     * block on it (shutdown(2) wakes them). */
    int fl = fcntl(rp->fd, F_GETFL);
    if (fl >= 0) fcntl(rp->fd, F_SETFL, fl & ~O_NONBLOCK);
    int one = 1;
    setsockopt(rp->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    kv_feed *f = NULL;
    if (!rp->peer.capa_kvd) {
        send_line(rp->fd, "-ERR this primary is kvd: it streams its own log, which only a kvd replica reads "
                          "(REPLCONF capa kvd)");
    } else if ((f = answer_psync(rp))) {
        __atomic_store_n(&rp->last_ack_ms, repl_mono_ms(), __ATOMIC_RELEASE);
        __atomic_store_n(&rp->state, RSTATE_ONLINE, __ATOMIC_RELEASE);
        rp->reader_started = pthread_create(&rp->reader, NULL, reader_main, rp) == 0;
        if (rp->reader_started) stream(rp, f);
        kv_feed_close(f);
    }
    replica_leave(rp);
    return NULL;
}

void feed_start(kvrepl *r, int fd, const char *replid, const char *offset, const kvrepl_peer *peer)
{
    kvrepl_replica *rp = calloc(1, sizeof *rp);
    if (!rp) {
        close(fd);
        return;
    }
    rp->r = r;
    rp->fd = fd;
    rp->peer = *peer;
    snprintf(rp->replid, sizeof rp->replid, "%s", replid);
    snprintf(rp->offset, sizeof rp->offset, "%s", offset);
    rp->last_ack_ms = repl_mono_ms();
    pthread_mutex_lock(&r->mu);
    if (r->stopping) {
        pthread_mutex_unlock(&r->mu);
        close(fd);
        free(rp);
        return;
    }
    rp->next = r->replicas;
    r->replicas = rp;
    r->nreplicas++;
    /* The first replica: from now on the ids must outlive a restart, so
     * that replicas can resume from this node's log after it. */
    if (!r->state_exists) do_state_save(r);
    pthread_mutex_unlock(&r->mu);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, sender_main, rp) != 0) replica_leave(rp);
    pthread_attr_destroy(&at);
}

void feed_drop_all(kvrepl *r, int wait)
{
    pthread_mutex_lock(&r->mu);
    for (kvrepl_replica *rp = r->replicas; rp; rp = rp->next)
        if (!__atomic_exchange_n(&rp->closing, 1, __ATOMIC_ACQ_REL)) shutdown(rp->fd, SHUT_RDWR);
    while (wait && r->nreplicas > 0) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}
