/*
 * repl_int — kvrepl's private state, shared by the files of kv/repl: the
 * node and its cron (repl_node.c), the role (repl_role.c), FAILOVER
 * (repl_failover.c), waits (repl_ack.c), the primary's side
 * (repl_feed.c) and the replica's (repl_link.c, repl_sync.c). Nothing
 * outside kv/repl includes it.
 *
 * Locking: r->mu guards every field not marked atomic; r->cv is signalled
 * when the role or the replica list changes and when the node stops.
 * Counters and the replicas' acknowledged offsets are atomics.
 */
#ifndef REPL_INT_H
#define REPL_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>

#include "repl.h"
#include "repl_stream.h"

/* Bytes of records a sender reads from the log per send. */
#define KVREPL_SEND_BYTES (256u * 1024u)
/* How long a sender waits at the end of the log before it looks at its
 * flags again (keepalives, ack requests, stopping), ms. */
#define KVREPL_FEED_WAIT_MS 100
/* With no one waiting for acknowledgements, how long a sender lets
 * records gather after sending a small batch, microseconds. */
#define KVREPL_COALESCE_US 1000
/* The cron's period, ms. */
#define KVREPL_CRON_MS 50

enum { RSTATE_WAIT_BGSAVE = 0, RSTATE_SEND_BULK, RSTATE_ONLINE };

/* FAILOVER's states (repl_failover.c), INFO's master_failover_state. */
enum { FO_NONE = 0, FO_WAIT_SYNC, FO_IN_PROGRESS };

/* A connected replica (primary side). */
typedef struct kvrepl_replica {
    struct kvrepl_replica *next;
    struct kvrepl *r;
    int fd;
    kvrepl_peer peer;
    char replid[41];
    char offset[32];
    int state;            /* RSTATE_* (atomic) */
    uint64_t ack, fack;   /* acknowledged offsets (atomic, only grow) */
    long long last_ack_ms;/* monotonic ms of its last ACK (atomic) */
    int closing;          /* set once: the socket is being shut down (atomic) */
    unsigned getack_seen; /* the r->getack_gen it last sent 'G' for (sender only) */
    pthread_t reader;
    int reader_started;
} kvrepl_replica;

/* A WAIT, WAITAOF, or a write in synchronous mode. */
typedef struct kvrepl_waiter {
    struct kvrepl_waiter *next;
    uint64_t seq;
    int numlocal, numreplicas, fsynced;
    long long deadline_ms; /* monotonic; 0 none */
    kvrepl_wait_fn fn;
    void *arg;
} kvrepl_waiter;

struct kvrepl {
    kv_store *s;
    char *dir;
    kv_log_fn log;
    void *log_arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kvrepl_state st;
    kvrepl_settings set;
    int state_exists;   /* replication.state is on disk (do_state_save wrote it) */
    char *masterauth;
    int stopping;
    /* primary side */
    kvrepl_replica *replicas;
    int nreplicas;
    long long no_replica_since_ms; /* monotonic; when the last replica left (0: none ever came) */
    unsigned getack_gen;           /* bumped to make senders send 'G' (atomic) */
    kvrepl_waiter *waiters;
    /* replica side: the link (repl_link.c) */
    pthread_t link_thread, cron_thread;
    int link_started, cron_started;
    unsigned link_gen;        /* bumped by REPLICAOF: the link starts over */
    int link_fd;              /* the link's socket, -1 none (shut down to stop it) */
    int link_up;              /* streaming from the primary (stored atomically) */
    const char *link_state;   /* ROLE's word */
    int sync_in_progress;
    long long link_down_since_ms; /* wall ms; 0 never up */
    long long last_io_ms;         /* monotonic ms of the last byte from the primary */
    /* FAILOVER (repl_failover.c) */
    int fo_state;              /* FO_* (also read atomically without r->mu) */
    char fo_host[KVRSTATE_HOST_MAX + 1]; /* the target, "" any replica */
    int fo_port;
    int fo_force;
    long long fo_deadline_ms;  /* monotonic; 0 none */
    int fo_psync;              /* the link's next PSYNC carries FAILOVER */
    kvrepl_failover_cb fo_cb;  /* the server's: the failover ended or the role changed */
    void *fo_cb_arg;
    /* counters (atomic) */
    uint64_t sync_full, sync_partial_ok, sync_partial_err;
    uint64_t bytes_sent, records_sent, bytes_received, records_received;
    uint64_t stream_errors, divergent_records, sync_timeouts;
};

/* repl.c */
void rlog(kvrepl *r, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
long long repl_mono_ms(void);
long long repl_wall_ms(void);
/* Saves r->st (r->mu held; or before the threads start). Returns 0 or
 * -errno. */
int do_state_save(kvrepl *r);
/* Checks the waiters against the replicas' acknowledgements and the
 * local fsync, completing those satisfied (and, with now_ms, those timed
 * out). Takes r->mu; calls the waiters' functions without it. */
void repl_check_waiters(kvrepl *r, long long now_ms);
static inline uint64_t ld64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void add64(uint64_t *p, uint64_t v)
{
    __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

/* repl_feed.c (primary side) */
/* Starts serving a replica that sent PSYNC (its sender thread). */
void feed_start(kvrepl *r, int fd, const char *replid, const char *offset, const kvrepl_peer *peer);
/* Shuts down every replica's socket; with wait, returns once all have
 * left (their feeds closed). r->mu not held. */
void feed_drop_all(kvrepl *r, int wait);

/* repl_link.c and repl_sync.c (replica side): one connection to the
 * primary, owned by the link thread. */
/* What one connection to the primary holds. */
typedef struct link_t {
    kvrepl *r;
    int fd;
    unsigned gen;          /* r->link_gen it belongs to */
    char host[KVRSTATE_HOST_MAX + 1];
    int port;
    long long timeout_ms;
    uint8_t *in;           /* bytes received, not yet parsed: in[0, have) */
    size_t have, cap;
    uint8_t *apply;        /* records to append: apply[0, napply) */
    size_t napply, apply_cap;
    uint64_t acked;        /* the offsets last sent in an ACK */
    uint64_t facked;
    long long last_ack_ms;
    /* a full resync in progress */
    char syncdir[4200];
    uint64_t keep_old;     /* divergent records not read back: keep the old
                              directory as <dir>.diverged.<keep_old> (0: no) */
    int file_fd;
    char primary_id[41];
} link_t;

/* repl_util.c: the link's state for INFO and ROLE (takes r->mu). */
void repl_set_link_state(kvrepl *r, const char *state, int up, int syncing);

/* repl_sync.c: a full resync, event by event (the link thread). Each
 * returns 0, or -1 (logged) to drop the link. */
int sync_begin(link_t *l, const char *line);        /* "+FULLRESYNC <id> <offset>" */
int sync_file(link_t *l, const kvrs_ev *ev);         /* FILE_BEGIN, FILE_DATA, FILE_END */
int save_divergent(link_t *l, uint64_t common);      /* 'D' */
int sync_end(link_t *l, uint64_t seq);               /* 'E': the switch */
/* Removes directory path and the files in it (no subdirectories). */
void remove_dir(const char *path);

/* repl_failover.c */
/* The cron: step 1's check for a synced target, and its timeout. */
void failover_tick(kvrepl *r, long long now_ms);
/* The link: 1 if the next PSYNC is FAILOVER's. */
int failover_psync_flag(kvrepl *r);
/* The link: the target answered that PSYNC (accepted 1: +CONTINUE or
 * +FULLRESYNC; 0: an error). */
void failover_psync_answered(kvrepl *r, int accepted);

/* repl_link.c (replica side) */
void *link_main(void *arg);
/* Sends n bytes (blocking, MSG_NOSIGNAL). Returns 0 or -errno. */
int send_all(int fd, const void *buf, size_t n);

#endif
