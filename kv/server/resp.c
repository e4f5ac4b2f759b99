/*
 * resp — Redis protocol request parser. Follows Redis 7's src/networking.c
 * (processMultibulkBuffer, processInlineBuffer), src/util.c (string2ll) and
 * src/sds.c (sdssplitargs) decision for decision, so that a client sees the
 * same reply, or the same wait, from kvd as from Redis. The points where
 * Redis's behaviour is not what one would guess are marked "Redis:".
 *
 * Redis parses incrementally, keeping its place between reads; this parser
 * starts again from the first byte of the request each time. Every Redis
 * decision depends only on the bytes from the start of the current line to
 * the end of the buffer, so both give the same answer for the same bytes.
 *
 * Redis searches for line ends with strchr() on its NUL-terminated query
 * buffer, so a NUL byte before the '\r' (count lines) or '\n' (inline
 * lines) hides the line end: the request waits for more bytes until the
 * buffer passes the limit and is refused as too big. find_line_end()
 * reproduces that.
 *
 * Redis uses one constant, PROTO_INLINE_MAX_SIZE (64 KiB), for the inline
 * line and for both kinds of count line; here lim->max_inline_len plays
 * that part for all three.
 */
#include "resp.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define ERR_MBULK_LEN "Protocol error: invalid multibulk length"
#define ERR_BULK_LEN "Protocol error: invalid bulk length"
#define ERR_MBULK_TOO_BIG "Protocol error: too big mbulk count string"
#define ERR_BULK_TOO_BIG "Protocol error: too big bulk count string"
#define ERR_INLINE_TOO_BIG "Protocol error: too big inline request"
#define ERR_QUOTES "Protocol error: unbalanced quotes in request"
#define ERR_NOMEM "Protocol error: out of memory"
#define ERR_EXPECTED_DOLLAR "Protocol error: expected '$', got '"

void resp_limits_default(resp_limits *l)
{
    l->max_bulk_len = 512u * 1024 * 1024; /* Redis: proto-max-bulk-len */
    /* Redis 7 allows up to INT_MAX arguments (and grows argv as they
     * arrive); kvd keeps the 1 Mi limit of Redis 6 and earlier (resp.h). */
    l->max_args = 1024 * 1024;
    l->max_inline_len = 64 * 1024; /* Redis: PROTO_INLINE_MAX_SIZE */
}

void resp_args_init(resp_args *a)
{
    memset(a, 0, sizeof(*a));
}

void resp_args_free(resp_args *a)
{
    free(a->argv);
    free(a->argvlen);
    free(a->arena);
    resp_args_init(a);
}

/* Room for one more argument; false when out of memory. */
static bool args_grow(resp_args *a)
{
    if (a->argc < a->cap) return true;
    size_t cap = a->cap ? a->cap * 2 : 8;
    if (cap > SIZE_MAX / sizeof(*a->argvlen)) return false;
    const uint8_t **argv = realloc(a->argv, cap * sizeof(*argv));
    if (!argv) return false;
    a->argv = argv;
    size_t *argvlen = realloc(a->argvlen, cap * sizeof(*argvlen));
    if (!argvlen) return false;
    a->argvlen = argvlen;
    a->cap = cap;
    return true;
}

static bool args_push(resp_args *a, const uint8_t *p, size_t n)
{
    if (!args_grow(a)) return false;
    a->argv[a->argc] = p;
    a->argvlen[a->argc] = n;
    a->argc++;
    return true;
}

/* Capacity for n arena bytes, reserved before any argument points into the
 * arena, so a realloc never moves bytes an argument already points at. */
static bool arena_reserve(resp_args *a, size_t n)
{
    if (n <= a->arena_cap) return true;
    uint8_t *p = realloc(a->arena, n);
    if (!p) return false;
    a->arena = p;
    a->arena_cap = n;
    return true;
}

/*
 * Where Redis's strchr(buf + from, ch) stops: the index of the first `ch` in
 * buf[from, len), or len when there is none or a NUL comes before it.
 */
static size_t find_line_end(const uint8_t *buf, size_t from, size_t len, uint8_t ch)
{
    if (from >= len) return len;
    const uint8_t *end = memchr(buf + from, ch, len - from);
    if (!end) return len;
    if (memchr(buf + from, '\0', (size_t)(end - (buf + from)))) return len;
    return (size_t)(end - buf);
}

/*
 * Redis's string2ll: an optional '-', then digits with no leading zero
 * ("0" alone is fine, "-0", "01", "+1", " 1" and "" are not), the whole of
 * s[0, n), within long long. Returns false otherwise.
 */
static bool parse_ll(const uint8_t *s, size_t n, long long *out)
{
    size_t i = 0;
    bool neg = false;
    if (n == 0) return false;
    if (n == 1 && s[0] == '0') {
        *out = 0;
        return true;
    }
    if (s[0] == '-') {
        neg = true;
        if (++i == n) return false;
    }
    if (s[i] < '1' || s[i] > '9') return false;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULLONG_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (unsigned long long)LLONG_MAX + 1) return false;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX) return false;
        *out = (long long)v;
    }
    return true;
}

static resp_result fail(resp_args *a, const char *msg, const char **err)
{
    a->argc = 0;
    *err = msg;
    return RESP_ERROR;
}

/* Redis formats this one with addReplyErrorFormat, which turns '\r' and
 * '\n' into spaces so that the reply stays one line. */
static resp_result fail_expected_dollar(resp_args *a, uint8_t got, const char **err)
{
    size_t n = sizeof(ERR_EXPECTED_DOLLAR) - 1;
    memcpy(a->errbuf, ERR_EXPECTED_DOLLAR, n);
    a->errbuf[n] = (char)(got == '\r' || got == '\n' ? ' ' : got);
    a->errbuf[n + 1] = '\'';
    a->errbuf[n + 2] = '\0';
    return fail(a, a->errbuf, err);
}

/*
 * One count line at buf[pos]: "<c><digits>\r\n". Returns RESP_OK with the
 * value and the index after the line in *next, RESP_NEED_MORE, or
 * RESP_ERROR (too big). The caller checks the first byte and the value.
 */
static resp_result count_line(const uint8_t *buf, size_t pos, size_t len, const resp_limits *lim, bool *number_ok,
                              long long *value, size_t *next)
{
    size_t cr = find_line_end(buf, pos, len, '\r');
    if (cr == len) return len - pos > lim->max_inline_len ? RESP_ERROR : RESP_NEED_MORE;
    /* Redis: it waits for one byte after the '\r' and skips it without
     * looking: "*1\rX" reads as "*1\r\n". */
    if (cr + 1 >= len) return RESP_NEED_MORE;
    *number_ok = cr > pos && parse_ll(buf + pos + 1, cr - pos - 1, value);
    *next = cr + 2;
    return RESP_OK;
}

static resp_result parse_multibulk(const uint8_t *buf, size_t len, const resp_limits *lim, resp_args *a,
                                   size_t *consumed, const char **err)
{
    bool ok;
    long long ll;
    size_t pos;
    resp_result r = count_line(buf, 0, len, lim, &ok, &ll, &pos);
    if (r == RESP_ERROR) return fail(a, ERR_MBULK_TOO_BIG, err);
    if (r != RESP_OK) return r;
    if (!ok || (ll > 0 && (unsigned long long)ll > lim->max_args)) return fail(a, ERR_MBULK_LEN, err);
    /* Redis: "*0" and any negative count ("*-1", "*-7") are an empty
     * request, skipped without a reply. */
    for (long long n = ll; n > 0; n--) {
        size_t line = pos;
        r = count_line(buf, line, len, lim, &ok, &ll, &pos);
        if (r == RESP_ERROR) return fail(a, ERR_BULK_TOO_BIG, err);
        if (r != RESP_OK) return r;
        /* Checked only once the whole line is there, as Redis does. */
        if (buf[line] != '$') return fail_expected_dollar(a, buf[line], err);
        if (!ok || ll < 0 || (unsigned long long)ll > lim->max_bulk_len) return fail(a, ERR_BULK_LEN, err);
        size_t blen = (size_t)ll;
        /* Redis: it waits for blen + 2 bytes and skips the last two without
         * checking that they are "\r\n". */
        if (blen > len - pos || len - pos - blen < 2) return RESP_NEED_MORE;
        if (!args_push(a, buf + pos, blen)) return fail(a, ERR_NOMEM, err);
        pos += blen + 2;
    }
    *consumed = pos;
    return RESP_OK;
}

/* isspace() in the C locale, which sdssplitargs uses to skip blanks and to
 * accept what follows a closing quote. */
static bool is_blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static uint8_t hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9') return (uint8_t)(c - '0');
    if (c >= 'a' && c <= 'f') return (uint8_t)(c - 'a' + 10);
    return (uint8_t)(c - 'A' + 10);
}

/* The byte sdssplitargs would see at i: the line holds no NUL (see
 * find_line_end), so its end reads as the terminating NUL. */
static uint8_t at(const uint8_t *line, size_t n, size_t i)
{
    return i < n ? line[i] : 0;
}

/*
 * sdssplitargs over line[0, n), the arguments unquoted into the arena.
 * Returns false on unbalanced quotes (*nomem false) or when out of memory
 * (*nomem true).
 */
static bool split_args(const uint8_t *line, size_t n, resp_args *a, bool *nomem)
{
    *nomem = false;
    /* Unquoting never lengthens: every byte out takes one or more in. */
    if (!arena_reserve(a, n)) {
        *nomem = true;
        return false;
    }
    size_t i = 0;
    for (;;) {
        while (i < n && is_blank(line[i])) i++;
        if (i >= n) return true;
        size_t start = a->arena_len;
        bool inq = false, insq = false, done = false;
        while (!done) {
            uint8_t c = at(line, n, i);
            if (inq) {
                if (c == '\\' && at(line, n, i + 1) == 'x' && is_hex(at(line, n, i + 2)) &&
                    is_hex(at(line, n, i + 3))) {
                    a->arena[a->arena_len++] =
                        (uint8_t)(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3]));
                    i += 3;
                } else if (c == '\\' && at(line, n, i + 1)) {
                    i++;
                    switch (line[i]) {
                    case 'n': c = '\n'; break;
                    case 'r': c = '\r'; break;
                    case 't': c = '\t'; break;
                    case 'b': c = '\b'; break;
                    case 'a': c = '\a'; break;
                    default: c = line[i]; break;
                    }
                    a->arena[a->arena_len++] = c;
                } else if (c == '"') {
                    /* Redis: a closing quote must be followed by a blank
                     * or the end: "a"b is an error, not "ab". */
                    if (at(line, n, i + 1) && !is_blank(line[i + 1])) return false;
                    done = true;
                } else if (!c) {
                    return false; /* unterminated */
                } else {
                    a->arena[a->arena_len++] = c;
                }
            } else if (insq) {
                if (c == '\\' && at(line, n, i + 1) == '\'') {
                    i++;
                    a->arena[a->arena_len++] = '\'';
                } else if (c == '\'') {
                    if (at(line, n, i + 1) && !is_blank(line[i + 1])) return false;
                    done = true;
                } else if (!c) {
                    return false;
                } else {
                    a->arena[a->arena_len++] = c;
                }
            } else {
                /* Redis: only these end an unquoted argument; '\v' and '\f'
                 * are skipped between arguments but kept inside one. A quote
                 * inside an argument opens a quoted part: a"b c" is "ab c". */
                switch (c) {
                case ' ':
                case '\n':
                case '\r':
                case '\t':
                case '\0': done = true; break;
                case '"': inq = true; break;
                case '\'': insq = true; break;
                default: a->arena[a->arena_len++] = c; break;
                }
            }
            if (i < n) i++;
        }
        if (!args_push(a, a->arena + start, a->arena_len - start)) {
            *nomem = true;
            return false;
        }
    }
}

static resp_result parse_inline(const uint8_t *buf, size_t len, const resp_limits *lim, resp_args *a,
                                size_t *consumed, const char **err)
{
    size_t nl = find_line_end(buf, 0, len, '\n');
    if (nl == len) {
        /* Redis: the limit applies only while no '\n' has arrived; a longer
         * line that arrives whole is accepted. */
        if (len > lim->max_inline_len) return fail(a, ERR_INLINE_TOO_BIG, err);
        return RESP_NEED_MORE;
    }
    size_t qlen = nl > 0 && buf[nl - 1] == '\r' ? nl - 1 : nl;
    bool nomem;
    if (!split_args(buf, qlen, a, &nomem)) return fail(a, nomem ? ERR_NOMEM : ERR_QUOTES, err);
    *consumed = nl + 1;
    return RESP_OK;
}

resp_result resp_parse(const uint8_t *buf, size_t len, const resp_limits *lim, resp_args *args, size_t *consumed,
                       const char **err)
{
    args->argc = 0;
    args->arena_len = 0;
    *consumed = 0;
    *err = NULL;
    if (len == 0) return RESP_NEED_MORE;
    resp_result r = buf[0] == '*' ? parse_multibulk(buf, len, lim, args, consumed, err)
                                  : parse_inline(buf, len, lim, args, consumed, err);
    if (r != RESP_OK) {
        args->argc = 0;
        *consumed = 0;
    }
    return r;
}
