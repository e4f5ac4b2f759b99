/*
 * multi — MULTI/EXEC/DISCARD/WATCH/UNWATCH: a client's queued commands
 * and watched keys, and EXEC's run on the writer thread.
 *
 * Owns: c->mq (the queued commands, as jobs not yet sent) and c->watch.
 * Guarantees: EXEC runs the queue as one transaction on the writer
 *   thread, so recovery applies all of it or none; it aborts with a null
 *   array when a watched key's sequence number changed since WATCH.
 * Locking: everything here but the EXEC job's run is on the client's
 *   I/O thread.
 */
#ifndef KVD_MULTI_H
#define KVD_MULTI_H

#include "client.h"
#include "cmd.h"

/* Queues c's current request (c->args) for cmd inside MULTI and replies
 * QUEUED; on failure replies an error and marks the transaction failed. */
void multi_queue(kvd_client *c, const kvd_cmd *cmd);

/* Frees c's queued commands and watched keys (the client is going away). */
void multi_client_free(kvd_client *c);

#endif
