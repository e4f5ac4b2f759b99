/*
 * gate — the checks a parsed request passes before it runs or is queued
 * by MULTI: a known command, its arity, subscriber mode, AUTH, the
 * replica's read-only and stale-data rules, sync-replicas' minimum of
 * online replicas, commands refused inside MULTI. Each refusal replies
 * Redis 7's error to c->out; inside MULTI it also fails the transaction
 * (EXECABORT), as Redis's flagTransaction.
 *
 * Never: runs a command or changes anything but c->out and
 *   c->multi_error. Locking: c's I/O thread.
 */
#ifndef KVD_GATE_H
#define KVD_GATE_H

#include "client.h"
#include "cmd.h"

/* 1 if c's request (c->args) for cmd (NULL: unknown) is refused, the
 * error replied; 0 if it may run. */
int gate_refuses(kvd_client *c, const kvd_cmd *cmd);

/* 1 if c's request for cmd would go to the writer thread (a write, or
 * EXEC inside MULTI), so it may queue behind c's other writes. */
int gate_goes_to_writer(const kvd_client *c, const kvd_cmd *cmd);

#endif
