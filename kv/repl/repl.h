/*
 * repl — a node's replication (docs/replication.md): its role (primary or
 * replica of a primary), its replication ids, its replicas and their
 * acknowledgements, WAIT and the synchronous mode, and the link to its
 * primary. The server owns one kvrepl beside its store and hands it the
 * sockets of replicas that sent PSYNC; everything else happens on the
 * threads this module starts:
 *   - one link thread while the node is a replica (repl_link.c);
 *   - two threads per connected replica, a sender and an ack reader
 *     (repl_feed.c);
 *   - one cron thread: acknowledgement timeouts, keepalives, retention.
 *
 * The replication offset is the last sequence number of the log (a
 * replica's: the last it applied); PSYNC asks for the next one. Sequence
 * numbers are assigned one per put or tombstone, from 1, strictly
 * increasing, and a replica appends the primary's records with the same
 * numbers, so the offset is monotonic and comparable across every replica
 * of one primary, survives restarts (it is in the log), and needs no
 * counter of its own.
 *
 * Owns: the state file (repl_state.h), the threads above, the replicas'
 *   sockets once handed over.
 * Locking: one mutex (kvrepl.mu) for the role, the ids, the replica list
 *   and the waiters; replicas' acknowledged offsets are atomics. Never
 *   held while calling into the store, or while a thread is joined.
 *   kvrepl_replicaof never blocks on the store's writer, so it may run on
 *   the writer thread (inside EXEC).
 */
#ifndef REPL_H
#define REPL_H

#include <stddef.h>
#include <stdint.h>

#include "kv_store.h"
#include "repl_state.h"

typedef struct kvrepl kvrepl;

/* Settings the server passes in (at start and on CONFIG SET). Times in
 * milliseconds, sizes in bytes. */
typedef struct kvrepl_settings {
    int listening_port;          /* the port a replica gives its primary (REPLCONF
                                    listening-port): its client port, or
                                    replica-announce-port */
    char announce_ip[KVRSTATE_HOST_MAX + 1]; /* replica-announce-ip: sent as REPLCONF
                                    ip-address; "" (default): not sent, the
                                    primary takes the connection's address */
    uint64_t backlog_bytes;      /* repl-backlog-size: log kept for partial resyncs */
    long long backlog_ttl_ms;    /* repl-backlog-ttl: kept that long with no replica (0 = always) */
    long long timeout_ms;        /* repl-timeout: a silent link is dropped after it */
    long long ping_period_ms;    /* repl-ping-replica-period: keepalives to replicas */
    int sync_replicas;           /* sync-replicas: fsynced replicas a write waits for (0: off) */
    long long sync_timeout_ms;   /* sync-replicas-timeout */
    int serve_stale;             /* replica-serve-stale-data */
    int priority;                /* replica-priority (0: never promoted) */
} kvrepl_settings;

/* Redis's defaults for the settings above (port 6379). */
void kvrepl_settings_init(kvrepl_settings *s);

/*
 * Loads the state file of data directory dir (or starts a fresh one) for
 * store s, decides this run's replication ids (a clean shutdown with the
 * log unchanged keeps them; any other start takes a new replid and keeps
 * the old one as replid2, valid up to the log's end, as Redis's PSYNC2
 * does after a restart), and marks the file "running" durably.
 * log/log_arg: where lines go (KV_LOG_* levels). Returns the node, or
 * NULL with err filled (the file could not be written).
 */
kvrepl *kvrepl_new(kv_store *s, const char *dir, const kvrepl_settings *set, kv_log_fn log, void *log_arg,
                   char *err, size_t errcap);
/* Starts the cron thread and, if the state names a primary, the link.
 * Returns 0 or -1 (err filled). */
int kvrepl_start(kvrepl *r, char *err, size_t errcap);
/* Stops every thread and closes every replica's socket; call before
 * kv_close. */
void kvrepl_stop(kvrepl *r);
/* After a clean kv_close: records the log's last sequence number in the
 * state file, so the next start keeps the ids. */
void kvrepl_mark_clean(kvrepl *r, uint64_t last_seq);
void kvrepl_free(kvrepl *r);

/* Applies changed settings (any thread). masterauth may be NULL (none). */
void kvrepl_set(kvrepl *r, const kvrepl_settings *set);
void kvrepl_set_masterauth(kvrepl *r, const char *pass);

/*
 * REPLICAOF host port (host NULL: REPLICAOF NO ONE). Records the change
 * durably and returns at once; the link thread connects (or stops) on
 * its own. Idempotent: *already is set when nothing changed (Redis then
 * answers "+OK Already connected to specified master"). Promotion keeps
 * the current replid as replid2, valid up to the log's end, and takes a
 * new one (PSYNC2). Returns 0, or -1 with err filled (a host that is
 * empty, longer than 255 bytes or holds a space or control character;
 * or the state file could not be written): nothing changed.
 */
int kvrepl_replicaof(kvrepl *r, const char *host, int port, int *already, char *err, size_t errcap);
/* 1 while the node is a replica. */
int kvrepl_is_replica(kvrepl *r);
/* 1 if the node is a replica whose link is not up (for
 * replica-serve-stale-data no). */
int kvrepl_link_down(kvrepl *r);

/* What a replica said about itself before PSYNC (REPLCONF). */
typedef struct kvrepl_peer {
    char ip[64];        /* its address (REPLCONF ip-address, or the socket's peer) */
    int port;           /* REPLCONF listening-port, 0 if not sent */
    int capa_kvd;       /* REPLCONF capa kvd: it reads kvd's stream */
} kvrepl_peer;

/*
 * PSYNC replid offset from a replica on socket fd (ownership passes to
 * the module, also on failure). Answers +FULLRESYNC or +CONTINUE (or an
 * error) on the socket from the replica's own sender thread.
 */
void kvrepl_psync(kvrepl *r, int fd, const char *replid, const char *offset, const kvrepl_peer *peer);

/* ---- acknowledgements ---- */

/* Replicas connected and streaming now (state online). */
int kvrepl_online_count(kvrepl *r);
/* Replicas whose acknowledged offset (fsynced = 1: fsynced offset) is at
 * least seq. */
int kvrepl_count_acked(kvrepl *r, uint64_t seq, int fsynced);
/* Called once when a wait ends: count = replicas that had it (and, for
 * WAITAOF, local = 1 if this node had synced it), timed_out = 1 if the
 * timeout ended it. Runs on a replication thread; must be quick. */
typedef void (*kvrepl_wait_fn)(void *arg, int local, int count, int timed_out);
/*
 * Waits for numreplicas replicas to acknowledge seq (fsynced = 1: to have
 * fsynced it), and, if numlocal, for this node to have fsynced it;
 * timeout_ms 0 waits for ever; getack = 1 asks the replicas for an ACK at
 * once (WAIT; they also acknowledge every append on their own). If that
 * holds now, returns 1 with *local and *count filled and fn is never
 * called; else returns 0 and fn runs later exactly once; -1 when out of
 * memory.
 */
int kvrepl_wait(kvrepl *r, uint64_t seq, int numlocal, int numreplicas, int fsynced, int getack, long long timeout_ms,
                kvrepl_wait_fn fn, void *arg, int *local, int *count);

/* A write in synchronous mode timed out waiting for its replicas
 * (counted for INFO repl_sync_timeouts). */
void kvrepl_note_sync_timeout(kvrepl *r);

/* ---- state for INFO and ROLE ---- */

typedef struct kvrepl_replica_info {
    char ip[64];
    int port;
    const char *state;  /* "wait_bgsave", "send_bulk", "online" (Redis's words) */
    uint64_t ack, fack; /* offsets acknowledged, fsynced */
    long long lag_s;    /* seconds since its last acknowledgement */
} kvrepl_replica_info;

typedef struct kvrepl_info {
    int replica;                       /* role */
    char replid[41], replid2[41];
    uint64_t second_off;               /* second_repl_offset (-1 when none is shown as such) */
    int has_second;
    uint64_t offset;                   /* master_repl_offset */
    char master_host[KVRSTATE_HOST_MAX + 1];
    int master_port;
    const char *link_status;           /* "up" / "down" */
    const char *link_state;            /* ROLE's: "connect", "connecting", "sync", "connected" */
    long long last_io_s;               /* master_last_io_seconds_ago (-1 when down) */
    int sync_in_progress;
    long long link_down_s;             /* master_link_down_since_seconds (-1 when up) */
    uint64_t applied, synced;          /* slave_repl_offset, and its fsynced part */
    int priority, read_only;
    size_t nreplicas;
    kvrepl_replica_info *replicas;     /* malloc'ed; kvrepl_info_free */
    /* kvd's own counters */
    uint64_t sync_full, sync_partial_ok, sync_partial_err;
    uint64_t bytes_sent, records_sent, bytes_received, records_received;
    uint64_t stream_errors;            /* links dropped for a bad frame or record */
    uint64_t divergent_records;        /* saved aside (docs/replication.md) */
    uint64_t sync_timeouts;            /* writes that timed out waiting for replicas */
} kvrepl_info;

void kvrepl_info_get(kvrepl *r, kvrepl_info *in);
void kvrepl_info_free(kvrepl_info *in);


/* ---- FAILOVER (repl_failover.c) ---- */

/* Told when a failover changes the role (host NULL: primary, else a
 * replica of host:port) or ends; called on a replication thread, without
 * the module's lock. The server keeps its replicaof setting and resumes
 * paused writes from it. */
typedef void (*kvrepl_failover_cb)(void *arg, const char *host, int port);
void kvrepl_set_failover_cb(kvrepl *r, kvrepl_failover_cb cb, void *arg);

/*
 * FAILOVER [TO host port] [TIMEOUT ms] [FORCE] (Redis 6.2): starts a
 * switchover to replica host:port (NULL: the first replica that holds the
 * log's end). timeout_ms 0: wait as long as it takes; force (only with a
 * host and a timeout): switch at the timeout even if the target has not
 * caught up. Returns 0 (writes are paused from now until the failover
 * ends: kvrepl_writes_paused), or -1 with Redis's error text in err
 * (without "ERR "): already in progress, a replica, no replicas, an
 * unknown or offline target.
 */
int kvrepl_failover_start(kvrepl *r, const char *host, int port, long long timeout_ms, int force, char *err,
                          size_t errcap);
/* FAILOVER ABORT. Returns 0, or -1 with "No failover in progress." */
int kvrepl_failover_abort(kvrepl *r, char *err, size_t errcap);
/* "no-failover", "waiting-for-sync" or "failover-in-progress". Any thread. */
const char *kvrepl_failover_state(kvrepl *r);
/* 1 while a failover runs: writes must wait. Any thread, no lock. */
int kvrepl_writes_paused(kvrepl *r);
/* The target's side of PSYNC <replid> <offset> FAILOVER: promotes this
 * replica if replid is its primary's id. Returns 0 (now a primary), or -1
 * with Redis's error text in err. */
int kvrepl_failover_promote(kvrepl *r, const char *replid, char *err, size_t errcap);

#endif
