/*
 * repl_state — what a node keeps of replication across restarts, in one
 * small file of the data directory, "replication.state": its replication
 * ids, the primary it follows, and whether it shut down cleanly. Its
 * position needs no file: it is the log's last sequence number.
 *
 * Format: text lines "<name> <value>", then "crc <hex>", the CRC32 of
 * every byte before that line. Written whole to "replication.state.tmp",
 * fdatasync'ed, renamed over the file, and the directory fsync'ed, so a
 * crash leaves the old file or the new one. A file that fails its CRC or
 * does not parse is refused (the caller starts as a primary with new
 * ids, and says so).
 *
 * Never: keeps a password (masterauth stays in the configuration).
 */
#ifndef REPL_STATE_H
#define REPL_STATE_H

#include <stddef.h>
#include <stdint.h>

#define KVRSTATE_FILE "replication.state"
#define KVRSTATE_HOST_MAX 255

typedef struct kvrepl_state {
    char replid[41];      /* 40 hex characters: this history's id */
    char replid2[41];     /* the id before the last promotion or unclean restart,
                             or 40 zeros */
    uint64_t second_off;  /* replid2's history is valid up to this sequence number
                             + 1 exclusive (Redis's second_replid_offset); 0 none */
    char master_host[KVRSTATE_HOST_MAX + 1]; /* "" on a primary */
    int master_port;      /* 0 on a primary */
    int clean;            /* 1: written at a clean shutdown; 0 while the node runs
                             (so still 0 at the next start after a crash) */
    uint64_t clean_seq;   /* with clean: the log's last sequence number then */
} kvrepl_state;

/* A fresh state: a new random replid, no replid2, a primary. */
void kvrepl_state_init(kvrepl_state *st);
/* Fills id (41 bytes) with 40 random hex characters (getrandom). */
void kvrepl_new_id(char id[41]);

/* Reads DIR/replication.state. Returns 0, -ENOENT (no file), -EBADMSG
 * (a CRC or syntax error; err says which line), or another -errno. */
int kvrepl_state_load(const char *dir, kvrepl_state *st, char *err, size_t errcap);
/* Writes it durably (see the top). Returns 0 or -errno. */
int kvrepl_state_save(const char *dir, const kvrepl_state *st);

#endif
