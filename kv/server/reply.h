/*
 * reply — a growable byte buffer (sbuf) and the RESP2 reply encoder that
 * writes into it. Replies follow Redis 7's framing byte for byte.
 *
 * Owns: the bytes of each sbuf (sb_free gives them back).
 * Guarantees: a failed allocation never loses the caller's data silently:
 *   the buffer is marked oom and every later append is dropped, so the
 *   caller checks b->oom once, after building a whole reply.
 * Never: touches a socket, a client or the store; keeps no state between
 *   calls. Any thread may use its own sbuf; an sbuf is not shared.
 */
#ifndef KVD_REPLY_H
#define KVD_REPLY_H

#include <stddef.h>

/* A growable byte buffer for replies. Zero-initialise it. */
typedef struct sbuf {
    char *p;
    size_t len, cap; /* bytes used, bytes allocated */
    int oom;         /* an append failed: contents are incomplete */
} sbuf;

/* Appends n bytes (nothing when n is 0 or b->oom is set). */
void sb_add(sbuf *b, const void *p, size_t n);
/* Frees the bytes and zeroes b (it can be used again). */
void sb_free(sbuf *b);
/* Appends printf-formatted text, however long. */
void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* RESP2 reply encoders. */
void rp_ok(sbuf *b);                    /* "+OK" */
void rp_status(sbuf *b, const char *s); /* "+" + s */
/* "-" + text + CRLF; CR and LF inside the text become spaces (an error
 * reply is one line); the text is cut at 1023 bytes. */
void rp_error(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rp_int(sbuf *b, long long v);              /* ":" v */
void rp_bulk(sbuf *b, const void *p, size_t n); /* "$" n, then n bytes */
void rp_bulk_str(sbuf *b, const char *s);       /* rp_bulk of a C string */
void rp_nil(sbuf *b);                           /* "$-1" */
void rp_array(sbuf *b, long long n);            /* "*" n: n replies follow */
void rp_null_array(sbuf *b);                    /* "*-1" */

#endif
