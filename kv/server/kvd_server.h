/*
 * kvd_server — the Redis-protocol server around one kv_store.
 *
 * Owns: the listening socket, the I/O threads (one libevent event_base
 * each), the clients, the server-wide counters, and the shutdown sequence.
 * Threads:
 *  - main: accepts connections and hands each to an I/O thread (round
 *    robin); runs timers (active expiry, ops/sec) and signals.
 *  - I/O threads: read, parse (kv/server/resp.h), and run commands. Reads and
 *    connection commands run here directly. Every command that may write
 *    is sent to the engine's writer thread as a transaction (kv_submit),
 *    where it runs serialised with all other writes; its reply is held
 *    back until the engine acknowledges the write (under fsync=always:
 *    after fdatasync), then handed back to the client's I/O thread.
 *  - the engine's writer thread (group commit).
 *  - background threads, one at a time of each kind: compaction, hint
 *    file writing and the scrub (kv/engine/kv_scrub.h), at a lowered CPU and I/O
 *    priority (kvd_lower_thread_priority).
 * Thread names (top -H, /proc/PID/task/TID/comm): kvd-io-N, kv-writer,
 * kvd-compact, kvd-hints, kvd-scrub.
 * Ordering: per connection, replies go out in request order. Consecutive
 * write commands of one connection are all queued at once (so pipelined
 * writes share a group commit); any other command waits until the
 * connection's queued writes are acknowledged, so it sees them.
 * Never: replies to any client with data from a write that is not yet
 * acknowledged.
 */
#ifndef KVD_SERVER_H
#define KVD_SERVER_H

#include "kv_store.h"
#include "kvd_config.h"

typedef struct kvd_server kvd_server;

/*
 * Opens the data directory (recovery runs), binds the listening socket,
 * starts the I/O threads, writes the pidfile. cfg must outlive the
 * server. On failure returns NULL and writes a message to err (the
 * caller exits 1).
 */
kvd_server *kvd_server_start(kvd_config *cfg, char *err, size_t errcap);

/* Runs until SIGTERM, SIGINT or SHUTDOWN, then stops accepting, lets
 * in-flight writes finish and their replies go out, fsyncs and closes the
 * store. Returns 0, or 1 if the final sync failed. Frees the server. */
int kvd_server_run(kvd_server *srv);

/* The port actually bound (useful with --port 0). */
int kvd_server_port(const kvd_server *srv);

/* What kvd_lower_thread_priority managed to change (1 = done). */
typedef struct kvd_bg_priority {
    int nice_ok;   /* nice value set to 10 */
    int ioprio_ok; /* I/O priority set to best-effort, level 7 (lowest) */
} kvd_bg_priority;

/*
 * Lowers the calling thread's priority for background work (compaction,
 * hint files, the scrub): nice 10 and best-effort I/O level 7, for this thread only
 * (Linux keeps both per thread). Never fails the caller: what could not
 * be changed is logged at verbose level and reported in the result
 * (setpriority may fail with EACCES/EPERM under a restrictive sandbox;
 * ioprio_set with EPERM or ENOSYS).
 */
kvd_bg_priority kvd_lower_thread_priority(void);

#endif
