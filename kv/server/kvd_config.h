/*
 * kvd_config — kvd's settings: defaults, command-line flags, and an
 * optional redis.conf-style file ("kvd kvd.conf": one "name value" per
 * line, # comments, quoted values as in redis.conf). Flags given on the
 * command line override the file.
 *
 * Owns: the kvd_config struct and its strings.
 * Never: opens sockets or the data directory; it only parses and checks.
 *
 * Locking: kvd_config has no lock of its own. Once the server's threads
 * run, kvd_config_set and kvd_config_get are called with the server's
 * cfg_mu held (kvd_env, hooks.h), and:
 *   - every integer, size, enum and yes/no setting (port, maxclients,
 *     hz, segment-size, fsync, loglevel, hint-files, ...) and every
 *     client-output-buffer-limit field is written with a relaxed
 *     __atomic store of its own width, so any thread may read it without
 *     cfg_mu with __atomic_load_n(&cfg->x, __ATOMIC_RELAXED). Relaxed is
 *     enough: each setting is read on its own, and no reader takes a new
 *     value as a sign that other memory has changed. A plain read without
 *     cfg_mu is a data race.
 *   - strings (dir, bind, requirepass, pidfile, logfile, replicaof,
 *     masterauth, replica-announce-ip) are freed and
 *     replaced by kvd_config_set: read them only with cfg_mu held, and
 *     copy what must outlive it. config_file is set by
 *     kvd_config_parse_args alone and never changes afterwards.
 * Before the threads start (kvd_config_init, kvd_config_parse_args, the
 * server's start-up) one thread owns the struct and plain access is fine.
 */
#ifndef KVD_CONFIG_H
#define KVD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kv_store.h"
#include "kvd_log.h"

#define KVD_VERSION "0.1.0"

/* The client classes of client-output-buffer-limit, in Redis's order.
 * Only normal clients exist in kvd; the others are parsed and stored so
 * that a redis.conf line or a CONFIG SET naming them works. */
typedef enum kvd_obuf_class {
    KVD_OBUF_NORMAL = 0,
    KVD_OBUF_REPLICA, /* "replica" or "slave" */
    KVD_OBUF_PUBSUB,
    KVD_OBUF_CLASSES
} kvd_obuf_class;

/* One class's output-buffer limit (Redis's clientBufferLimitsConfig). A
 * client is closed when its unsent reply bytes reach `hard`, or stay at
 * or above `soft` for more than `soft_secs` seconds. 0 turns a limit off. */
typedef struct kvd_obuf_limit {
    uint64_t hard;      /* bytes */
    uint64_t soft;      /* bytes */
    uint64_t soft_secs; /* seconds */
} kvd_obuf_limit;

typedef struct kvd_config {
    char *dir;                 /* data directory, default "./data" */
    char *bind;                /* listen address, default "127.0.0.1" */
    int port;                  /* TCP port, default 6379; 0 = pick a free one */
    kv_fsync_policy fsync;     /* default always */
    char *requirepass;         /* NULL: no AUTH needed */
    char *pidfile;             /* NULL: none */
    char *logfile;             /* NULL or "": stderr */
    kvd_log_level log_level;   /* default notice */
    int maxclients;            /* default 10000 */
    kvr_mode recovery;         /* default tolerate-tail */
    uint64_t segment_size;     /* bytes, default 64 MiB; "64mb" style accepted */
    int io_threads;            /* default: online CPUs - 1, at least 1 */
    uint64_t max_bulk_len;     /* bytes, default 512 MiB (proto-max-bulk-len) */
    uint64_t max_query_buffer; /* bytes per client, default 1 GiB (client-query-buffer-limit) */
    size_t max_args;           /* arguments per command, default 1048576 */
    int expire_hz;             /* active expiry cycles per second, default 10 */
    int compact_dead_pct;      /* start a compaction when dead bytes pass this
                                  percentage of the log (default 50; 0 = never) */
    uint64_t compact_min_dead; /* ... and at least this many bytes (default 64 MiB) */
    int hint_files;            /* 1 (default): read and write hint files */
    int preallocate;           /* 1 (default): kv_options.preallocate */
    int scrub_interval;        /* seconds between background scrub passes
                                  (kv/engine/kv_scrub.h), the first after start;
                                  default 86400; 0 = off */
    uint64_t scrub_rate;       /* bytes per second a scrub reads at most,
                                  default 16 MiB */
    kvd_obuf_limit obuf_limits[KVD_OBUF_CLASSES]; /* client-output-buffer-limit;
                                  normal 1gb 256mb 60, replica 256mb 64mb 60,
                                  pubsub 32mb 8mb 60. Written with __atomic
                                  stores, read with __atomic loads
                                  (kvd_obuf_limit_load, kvd_limits.h). */
    /* Replication (docs/replication.md); Redis's names and defaults. */
    char *replicaof;           /* "HOST PORT" to follow at start, or NULL ("no one");
                                  once the server runs, the live role: REPLICAOF
                                  and the start set it under cfg_mu */
    char *masterauth;          /* password to AUTH with at the primary, or NULL */
    uint64_t repl_backlog_size; /* bytes of newest log kept from compaction for
                                  partial resyncs, default 64 MiB */
    int repl_backlog_ttl;      /* seconds it is kept with no replica, default 3600; 0 = always */
    int repl_timeout;          /* seconds of silence before a link is dropped, default 60 */
    int repl_ping_period;      /* seconds between keepalives to replicas, default 10 */
    int replica_serve_stale;   /* 1 (default): a replica serves reads while its link is down */
    int replica_priority;      /* Sentinel's promotion order, default 100; 0 = never */
    char *replica_announce_ip; /* address a replica sends its primary as its own
                                  (REPLCONF ip-address), or NULL: the primary
                                  takes the connection's */
    int replica_announce_port; /* port it sends (REPLCONF listening-port),
                                  0 (default): its own */
    int replica_announced;     /* 1 (default): INFO replica_announced:1, so
                                  Sentinel lists this replica */
    int sync_replicas;         /* replicas that must fsync a write before it is
                                  acknowledged, default 0 (asynchronous) */
    int sync_replicas_timeout; /* ms a write waits for them, default 10000 */
    char *config_file;         /* the file read, if any, as an absolute path
                                  (CONFIG REWRITE writes it) */
} kvd_config;

/* Fills c with the defaults. */
void kvd_config_init(kvd_config *c);
void kvd_config_free(kvd_config *c);

/* Makes dst a copy of src with strings of its own (free it with
 * kvd_config_free). Reads src's strings: hold cfg_mu once the server
 * runs. Returns 0, or -1 when out of memory (dst then holds nothing to
 * free). */
int kvd_config_copy(kvd_config *dst, const kvd_config *src);

/* Result of parsing the command line. */
typedef enum kvd_args_result {
    KVD_ARGS_RUN = 0,  /* start the server */
    KVD_ARGS_EXIT_OK,  /* --help or --version printed: exit 0 */
    KVD_ARGS_ERROR,    /* err holds the message: exit 2 */
} kvd_args_result;

/*
 * Parses argv: an optional config file path as the first non-flag
 * argument, then flags (--dir D, --bind A, --port N, --fsync always|
 * everysec|no, --requirepass P, --pidfile F, --logfile F, --log-level
 * debug|verbose|notice|warning, --maxclients N, --recovery MODE,
 * --segment-size BYTES, --io-threads N, --proto-max-bulk-len BYTES,
 * --client-query-buffer-limit BYTES, --client-output-buffer-limit
 * "CLASS HARD SOFT SECONDS", --hz N, --scrub-interval SECONDS,
 * --scrub-rate BYTES, --help, --version). Each flag
 * also accepts "--flag=value". The file is read first, flags override it.
 * On KVD_ARGS_ERROR, err (cap bytes) says what was wrong and where
 * ("kvd.conf:12: unknown setting 'foo'").
 */
kvd_args_result kvd_config_parse_args(kvd_config *c, int argc, char **argv, char *err, size_t errcap);

/*
 * Applies one setting by its name in the config file / CONFIG SET
 * vocabulary ("dir", "bind", "port", "appendfsync" and "fsync",
 * "requirepass", "pidfile", "logfile", "loglevel", "maxclients",
 * "recovery", "segment-size", "io-threads", "proto-max-bulk-len",
 * "client-query-buffer-limit", "client-output-buffer-limit", "hz",
 * "scrub-interval", "scrub-rate").
 * Returns 0, or -1 with err filled; c is unchanged on error. Numbers are
 * stored atomically, strings are not: see Locking above.
 */
int kvd_config_set(kvd_config *c, const char *name, const char *value, char *err, size_t errcap);

/*
 * Writes the current value of setting `name` (as kvd_config_set takes it)
 * into buf. Returns 0, or -1 for an unknown name.
 */
int kvd_config_get(const kvd_config *c, const char *name, char *buf, size_t cap);

/* The names kvd_config_get knows, NULL-terminated (for CONFIG GET *). */
extern const char *const kvd_config_names[];

/* Parses a size like "4096", "64kb", "64mb", "1gb" (case-insensitive,
 * powers of 1024 as in redis.conf; also "k", "m", "g"). Returns 0 or -1. */
int kvd_parse_size(const char *s, uint64_t *out);

/*
 * Parses a client-output-buffer-limit value as Redis 7 does
 * (setConfigClientOutputBufferLimitOption): one or more groups of four
 * words "<class> <hard> <soft> <soft-seconds>", class normal, replica,
 * slave or pubsub, hard and soft sizes in kvd_parse_size syntax (0 = no
 * limit), soft-seconds a decimal integer. Either every group is valid and
 * the named classes of `limits` are replaced (others kept), or nothing
 * changes. Returns 0, or -1 with err holding Redis's message ("Wrong
 * number of arguments in buffer limit configuration.", "Invalid client
 * class specified in buffer limit configuration.", "Error in hard, soft
 * or soft_seconds setting in buffer limit configuration.").
 */
int kvd_parse_obuf_limits(const char *value, kvd_obuf_limit limits[KVD_OBUF_CLASSES], char *err, size_t errcap);

/* Splits "HOST PORT" (one space, a port 1..65535) into host (cap bytes)
 * and *port. Returns 0 or -1. */
int kvd_parse_host_port(const char *value, char *host, size_t cap, int *port);
/* Prints the --help text to stdout. */
void kvd_config_usage(void);

/*
 * CONFIG REWRITE's new text for a config file: `old` (len bytes, as read
 * from the file; NULL or 0 for none) with c's values written in, as Redis
 * 7's rewriteConfig (src/config.c) does: comments, empty lines and the
 * order kept; a line that does not parse or names no setting turned into
 * "# ??? <line>"; each setting's first line rewritten in place with its
 * value (also when that is the default), its other lines blanked; a
 * setting the file lacks appended, after a "# Generated by CONFIG
 * REWRITE" line, when it differs from the default; a string without a
 * value (requirepass "", replicaof on a primary) left out. Reading the
 * text back gives c (see kvd_config_rewrite.c for the value forms).
 * Returns a malloc'ed NUL-terminated string, or NULL when out of memory.
 */
char *kvd_config_rewrite_text(const kvd_config *c, const char *old, size_t len);

/*
 * CONFIG REWRITE: rewrites the config file at path (absolute; a symbolic
 * link's target) with kvd_config_rewrite_text, durably, as Redis's
 * rewriteConfigOverwriteFile: the text is written to a new file
 * "<path>.XXXXXX" in the same directory with the old file's mode (0644 if
 * there was none), fsynced, renamed over path, and the directory fsynced.
 * A missing file is written anew. Blocks for the file I/O (two fsyncs);
 * c must not change meanwhile (pass a kvd_config_copy).
 * Returns 0, or -errno: reading the old file, creating, writing, syncing
 * or renaming the new one failed (the old file is untouched and the
 * temporary file removed), or, after the rename, the directory's fsync
 * failed (the file is the new one, which a power cut may still undo).
 * A crash (kill -9) leaves the old file or the new one whole, and may
 * leave a "<path>.XXXXXX" file behind.
 */
int kvd_config_rewrite(const kvd_config *c, const char *path);

/*
 * Writes the example config file (kvd --print-example-config, kvd.conf
 * in the source tree) to out: a header on the syntax, then for each
 * visible setting in table order its help line, its default, and its
 * line as CONFIG REWRITE writes the default, or "name METAVAR" when there
 * is no default, all commented out, so a kvd started with it runs with
 * the defaults.
 */
void kvd_config_print_example(FILE *out);

#endif
