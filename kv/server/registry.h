/*
 * registry — what one I/O thread may know of the clients of the others:
 * the list of every connected client (CLIENT LIST, CLIENT KILL) and the
 * pub/sub subscriptions (channels and patterns, PUBLISH), as Redis 7's
 * src/pubsub.c and src/networking.c keep them, under one lock.
 *
 * Owns: the channel and pattern tables and each client's subscription
 *   sets (kvd_client.subs/psubs). A channel or pattern exists while one
 *   client is subscribed to it.
 * Guarantees: a registered client stays allocated while the lock is held,
 *   so a thread holding it may post mails to it (jobs.h: mail_post);
 *   reg_remove takes a client out of every table, after which no new mail
 *   can reach it. Messages published under the lock are posted in one
 *   order to every subscriber: two subscribers of the same channels see
 *   them in the same order.
 * Never: touches another thread's client beyond its registered fields
 *   (id, addr, laddr, fd, ctime set before reg_add; name, the
 *   subscriptions and their counts changed only under the lock; the
 *   published atomics of CLIENT LIST), or writes a socket.
 * Locking: one mutex, reg->mu, taken by every function here; none calls
 *   out while holding it except to mail_post (the hand-off's own lock,
 *   always taken after this one).
 */
#ifndef KVD_REGISTRY_H
#define KVD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "reply.h"

typedef struct kvd_registry kvd_registry;

/* A new empty registry, or NULL when out of memory. */
kvd_registry *reg_new(void);
/* Frees r (every client must have been removed). NULL is fine. */
void reg_free(kvd_registry *r);

/* Registers c (its id, addr, laddr, fd and ctime set). Its thread only. */
void reg_add(kvd_registry *r, kvd_client *c);
/* Takes c out of the client list and every channel and pattern (once; a
 * second call does nothing). Its thread only. */
void reg_remove(kvd_registry *r, kvd_client *c);
/* Sets c's name to the n bytes at p (n 0: no name). Returns 0, or -1 when
 * out of memory (the old name stays). Its thread only. */
int reg_set_name(kvd_registry *r, kvd_client *c, const uint8_t *p, size_t n);

/* Which subscriptions: channels (SUBSCRIBE) or patterns (PSUBSCRIBE). */
typedef enum { REG_CHANNEL = 0, REG_PATTERN = 1 } reg_kind;

/* Subscribes c to the channel or pattern of n bytes at p. Returns 1 if it
 * is new, 0 if c had it already, -1 when out of memory. Its thread only. */
int reg_subscribe(kvd_registry *r, kvd_client *c, reg_kind kind, const uint8_t *p, size_t n);
/* Unsubscribes c. Returns 1 if c had it, else 0. Its thread only. */
int reg_unsubscribe(kvd_registry *r, kvd_client *c, reg_kind kind, const uint8_t *p, size_t n);
/* A malloc'ed copy of the name of c's oldest subscription of `kind` in
 * *p, *n (the next one UNSUBSCRIBE with no argument drops). Returns 1, 0
 * when c has none, -1 when out of memory. Its thread only. */
int reg_first(kvd_registry *r, kvd_client *c, reg_kind kind, uint8_t **p, size_t *n);

/*
 * PUBLISH: posts `message` (ml bytes) on channel ch (cl bytes) to every
 * client subscribed to ch, then to every client of every pattern that
 * matches ch (Redis's order), as RESP2 "message" and "pmessage" arrays.
 * Returns the number of receivers (a client counts once per channel and
 * once per matching pattern, as in Redis), or -1 when out of memory
 * before anything was posted. Any thread.
 */
long long reg_publish(kvd_registry *r, const uint8_t *ch, size_t cl, const uint8_t *msg, size_t ml);

/* PUBSUB CHANNELS: appends a RESP array of the channels that have
 * subscribers and match pattern (NULL: all) to out. */
void reg_channels(kvd_registry *r, const uint8_t *pat, size_t pl, sbuf *out);
/* The number of subscribers of channel ch (PUBSUB NUMSUB). */
long long reg_numsub(kvd_registry *r, const uint8_t *ch, size_t cl);
/* The number of distinct patterns with subscribers (PUBSUB NUMPAT). */
long long reg_numpat(kvd_registry *r);
/* Channels and patterns with subscribers (INFO stats). */
void reg_counts(kvd_registry *r, long long *channels, long long *patterns);

/* Client types, as Redis's getClientType (CLIENT KILL/LIST TYPE). kvd's
 * replicas leave the client list once their PSYNC is answered, and a kvd
 * replica's link to its primary is not a client: no client has the
 * master or replica type. */
typedef enum { CTYPE_ANY = -1, CTYPE_NORMAL = 0, CTYPE_REPLICA, CTYPE_PUBSUB, CTYPE_MASTER } reg_ctype;

/* A CLIENT KILL or CLIENT LIST filter; zeroed (type CTYPE_ANY) matches all. */
typedef struct reg_filter {
    reg_ctype type;
    const uint64_t *ids; /* ID: any of these (nids > 0) */
    size_t nids;
    const char *addr;  /* ADDR ip:port, or NULL */
    const char *laddr; /* LADDR ip:port, or NULL */
    const kvd_client *skip; /* SKIPME yes: the caller, or NULL */
} reg_filter;

/* Appends one CLIENT LIST line of each client that matches f, in
 * connection order, to out (text, no RESP framing); now in ms since the
 * epoch. */
void reg_list(kvd_registry *r, const reg_filter *f, long long now, sbuf *out);
/* The CLIENT INFO line of c (its own thread). */
void reg_info_line(kvd_registry *r, const kvd_client *c, long long now, sbuf *out);
/* Asks every client that matches f to close (MAIL_KILL; the caller, if it
 * matches, is not mailed but *self set to 1). Returns how many matched,
 * the caller included. */
long long reg_kill(kvd_registry *r, const reg_filter *f, const kvd_client *caller, int *self);

/* Wakes every client waiting for the write pause to end (pub_blocked;
 * MAIL_RESUME). Any thread. */
void reg_resume_paused(kvd_registry *r);

#endif
