/*
 * repl_stream — the replication stream's framing, both ways (pure code:
 * no I/O, no threads; the fuzz target drives the parser directly).
 *
 * Primary to replica, after the "+FULLRESYNC <replid> <offset>" or
 * "+CONTINUE <replid>" line (docs/replication.md, "The stream"). Every
 * frame starts with one tag byte; integers are little-endian as in the
 * log (docs/format.md):
 *
 *   'R' record        a top-level data record (put, tombstone, batch) of
 *                     the primary's log, verbatim: its own 44-byte header
 *                     gives its length, both its CRCs cover it
 *   'F' file          u32 name length, u64 size, name, u32 CRC32 of the
 *                     12 + name bytes before it; then `size` bytes of the
 *                     file; then u32 CRC32 of those bytes
 *   'E' snapshot end  u64 sequence number (the last in the files sent),
 *                     u32 CRC32 of those 8 bytes
 *   'D' diverged      u64 sequence number, u32 CRC32 of those 8 bytes:
 *                     sent first in a snapshot when the replica asked for
 *                     a history this primary shares only up to that
 *                     number; the replica's records after it are not in
 *                     the primary's history (docs/replication.md,
 *                     "Divergence")
 *   'P' keepalive     (Redis sends PING in its stream)
 *   'G' ack request   (Redis's REPLCONF GETACK *): the replica answers
 *                     with an ACK at once
 *
 * A snapshot (full resync) is a run of 'F' frames then one 'E'; records
 * follow it. Records must carry consecutive sequence numbers from the
 * one the replica asked for (or the snapshot's end + 1): the parser
 * checks each record's header CRC before it trusts its length, its
 * whole CRC, and its sequence number, and any failure is an error that
 * drops the link (the replica resyncs from its last good position).
 *
 * Replica to primary: RESP arrays, as Redis's replicas send them:
 * "REPLCONF ACK <applied> FACK <fsynced>".
 *
 * Never: yields a record that failed a check; trusts a length a CRC did
 * not cover.
 */
#ifndef REPL_STREAM_H
#define REPL_STREAM_H

#include <stddef.h>
#include <stdint.h>

/* Largest file name in an 'F' frame, bytes. */
#define KVRS_MAX_NAME 64u
/* Largest file in an 'F' frame: a segment (the reader's own limit). */
#define KVRS_MAX_FILE (4ull << 30)

typedef enum kvrs_event {
    KVRS_NEED_MORE = 0, /* the buffer ends inside a frame: read more */
    KVRS_RECORD,        /* ev.data/len: one verbatim record; ev.seq its first, ev.last_seq its last */
    KVRS_FILE_BEGIN,    /* ev.name, ev.size */
    KVRS_FILE_DATA,     /* ev.data/len: the next bytes of the file (any split) */
    KVRS_FILE_END,      /* the file's CRC matched */
    KVRS_SNAPSHOT_END,  /* ev.seq: the snapshot holds the log up to it */
    KVRS_DIVERGED,      /* ev.seq: the common history ends there */
    KVRS_PING,
    KVRS_GETACK,
    KVRS_ERROR,         /* ev.error says what; the link must be dropped */
} kvrs_event;

typedef struct kvrs_ev {
    kvrs_event type;
    const uint8_t *data; /* into the caller's buffer */
    size_t len;
    uint64_t seq, last_seq;
    char name[KVRS_MAX_NAME + 1];
    uint64_t size;
    char error[160];
} kvrs_ev;

/* The parser's state between calls. */
typedef struct kvrs_parser {
    uint64_t next_seq;  /* the sequence number the next record must have */
    int in_file;        /* inside an 'F' frame's bytes */
    uint64_t file_left; /* bytes of it still to come */
    uint32_t file_crc;  /* CRC32 of its bytes so far */
    int snapshot;       /* 1 while files may come (full resync), until 'E' */
    int files_seen;     /* an 'F' came in this snapshot (a 'D' only comes before) */
    size_t max_record;  /* largest record accepted, bytes */
} kvrs_parser;

/* Starts a parser expecting records from next_seq on; snapshot = 1 if
 * files and a snapshot end come first (after +FULLRESYNC). */
void kvrs_init(kvrs_parser *p, uint64_t next_seq, int snapshot);

/*
 * Parses one event from buf[0, len). *used receives the bytes consumed
 * (0 for KVRS_NEED_MORE and KVRS_ERROR). A record is yielded only when
 * all of it is in buf; file bytes are yielded as they come. Returns the
 * event's type (also in ev->type).
 */
kvrs_event kvrs_next(kvrs_parser *p, const uint8_t *buf, size_t len, size_t *used, kvrs_ev *ev);

/* Encoders (primary side). Each returns the bytes written to out. */
/* An 'F' frame's head for a file `name` of `size` bytes: out has room for
 * 17 + KVRS_MAX_NAME + 4 bytes. */
size_t kvrs_file_head(uint8_t *out, const char *name, uint64_t size);
/* The 4-byte trailer of an 'F' frame: crc is CRC32 of the file's bytes. */
size_t kvrs_file_tail(uint8_t out[4], uint32_t crc);
/* An 'E' frame (13 bytes). */
size_t kvrs_snapshot_end(uint8_t out[13], uint64_t seq);
/* A 'D' frame (13 bytes). */
size_t kvrs_diverged(uint8_t out[13], uint64_t seq);

/*
 * Parses one RESP array of bulk strings (what a replica sends: REPLCONF
 * ACK ...) from buf[0, len): at most `max` arguments of at most 64 bytes
 * each, copied NUL-terminated into args[i] (each 65 bytes). Returns the
 * argument count with *used set, 0 if more bytes are needed, -1 for a
 * malformed or oversized command.
 */
int kvrs_parse_command(const uint8_t *buf, size_t len, size_t *used, char (*args)[65], int max);

#endif
