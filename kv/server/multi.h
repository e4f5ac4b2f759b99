/*
 * multi — MULTI/EXEC/DISCARD/WATCH/UNWATCH: a client's queued commands
 * and watched keys, and EXEC's run on the writer thread.
 *
 * Owns: c->mq (the queued commands, as jobs not yet sent) and c->watch.
 * Guarantees: EXEC runs the queue as one transaction on the writer
 *   thread, so recovery applies all of it or none; it aborts with a null
 *   array when a watched key's sequence number changed since WATCH.
 *   Queued commands that act on the server or the connection (CMD_CONN:
 *   CLIENT, CONFIG, REPLICAOF, PUBLISH, SUBSCRIBE, ...) run after the
 *   transaction is acknowledged, on the I/O thread, in their order: a
 *   PUBLISH after a SET in one MULTI reaches subscribers once the SET is
 *   durable. A queue of such commands alone, with no key watched, runs
 *   at once on the I/O thread.
 * Locking: everything here but the EXEC job's run is on the client's
 *   I/O thread.
 */
#ifndef KVD_MULTI_H
#define KVD_MULTI_H

#include "client.h"
#include "cmd.h"
#include "jobs.h"

/* Queues c's current request (c->args) for cmd inside MULTI and replies
 * QUEUED; on failure replies an error and marks the transaction failed. */
void multi_queue(kvd_client *c, const kvd_cmd *cmd);

/* The reply of finished EXEC job j with queued CMD_CONN commands
 * (j->ndefer > 0): runs them now, on c's I/O thread, in their order, and
 * appends the whole array to c->out with each reply in its place. A
 * transaction that failed or was aborted runs none of them; one whose
 * writes are applied but not fsynced by enough replicas in time
 * (sync-replicas) runs them, and its reply is that error. Runs them
 * even for a client whose connection is gone (the reply is dropped). */
void multi_exec_reply(kvd_client *c, kvd_job *j);

/* Frees c's queued commands and watched keys (the client is going away). */
void multi_client_free(kvd_client *c);

#endif
