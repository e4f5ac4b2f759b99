/*
 * resp — the Redis protocol request parser (RESP2 multibulk and inline
 * commands), as a pure function over a byte buffer: no socket, no store,
 * no global state, so it can be unit-tested and fuzzed alone (the shape
 * of picohttpparser's phr_parse_request).
 *
 * Follows Redis's own parser (src/networking.c, processMultibulkBuffer and
 * processInlineBuffer) and its exact protocol-error strings, e.g.
 * "Protocol error: invalid multibulk length". Inline commands are split
 * like Redis's sdssplitargs: spaces and tabs separate arguments; "double
 * quotes" take \n \r \t \b \a \\ \" and \xHH escapes; 'single quotes' take
 * \' only; a closing quote must be followed by a space or the end.
 *
 * Owns: nothing but what the caller passes in.
 * Never: allocates except through resp_args_* (the argument arena), reads
 * past buf + len, or keeps state between calls: a request split across
 * reads is parsed again from its first byte once more bytes arrived.
 */
#ifndef KV_RESP_H
#define KV_RESP_H

#include <stddef.h>
#include <stdint.h>

/* Limits, in the units named; resp_limits_default() gives Redis's
 * defaults. */
typedef struct resp_limits {
    size_t max_bulk_len;   /* bytes in one bulk string (512 MiB) */
    size_t max_args;       /* arguments in one multibulk request (1048576) */
    size_t max_inline_len; /* bytes in one inline request line (65536) */
} resp_limits;

void resp_limits_default(resp_limits *l);

/* The arguments of one parsed request. argv[i] points either into the
 * parsed buffer (multibulk) or into `arena` (inline, after unquoting);
 * either way they stay valid until the buffer is changed or the next
 * resp_parse call with the same resp_args. */
typedef struct resp_args {
    size_t argc;
    const uint8_t **argv;
    size_t *argvlen;
    size_t cap;          /* private: capacity of argv/argvlen */
    uint8_t *arena;      /* private: storage for unquoted inline args */
    size_t arena_len, arena_cap;
    char errbuf[64];     /* private: text of a formatted protocol error */
} resp_args;

void resp_args_init(resp_args *a);
void resp_args_free(resp_args *a);

typedef enum resp_result {
    RESP_OK = 0,    /* one request parsed; *consumed bytes of buf used */
    RESP_NEED_MORE, /* the request is incomplete: read more, call again */
    RESP_ERROR,     /* protocol error: reply "-ERR " + err, then close */
} resp_result;

/*
 * Parses the first request in buf[0, len).
 *  RESP_OK: *consumed is its length in bytes (> 0). args->argc may be 0
 *           for an empty inline line or a multibulk of "*0" / "*-1": skip
 *           it, like Redis.
 *  RESP_NEED_MORE: nothing consumed; *consumed is 0. When a single inline
 *           line or a multibulk header grows past its limit without
 *           ending, RESP_ERROR is returned instead ("too big inline
 *           request", "too big mbulk count string", "too big bulk count
 *           string"), as Redis does.
 *  RESP_ERROR: *err is the message without the "ERR " prefix, e.g.
 *           "Protocol error: invalid bulk length" or "Protocol error:
 *           expected '$', got 'x'" (static, or held in args until the
 *           next call).
 * Out-of-memory while growing args returns RESP_ERROR with
 * err = "Protocol error: out of memory".
 */
resp_result resp_parse(const uint8_t *buf, size_t len, const resp_limits *lim, resp_args *args, size_t *consumed,
                       const char **err);

#endif
