/* RESP request parser: multibulk and inline requests, every protocol error
 * with Redis's exact text, the quirks kept from Redis 7's networking.c and
 * sdssplitargs, limits, and pipelines cut at every byte. Every input is
 * parsed from the end of a page followed by a PROT_NONE guard page, so a
 * read past buf + len faults at once (picohttpparser / c-ares style). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "resp.h"

/* --- guard page ------------------------------------------------------ */

typedef struct guarded {
    uint8_t *base;
    size_t span; /* readable bytes before the guard page */
    size_t page;
} guarded;

static void guard_init(guarded *g, size_t cap)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->span = (cap + g->page - 1) / g->page * g->page;
    if (g->span == 0) g->span = g->page;
    void *p = mmap(NULL, g->span + g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    g->base = p;
    ck_assert_int_eq(mprotect(g->base + g->span, g->page, PROT_NONE), 0);
}

static void guard_free(guarded *g)
{
    munmap(g->base, g->span + g->page);
}

/* Copies data so that its last byte is the last readable one. */
static const uint8_t *guard_place(guarded *g, const void *data, size_t n)
{
    ck_assert_uint_le(n, g->span);
    uint8_t *p = g->base + g->span - n;
    if (n) memmove(p, data, n);
    return p;
}

/* --- helpers ----------------------------------------------------------- */

/* A fixture per test: the guard region, the argument vector, limits. */
typedef struct fx {
    guarded g;
    resp_args a;
    resp_limits lim;
    size_t consumed;
    const char *err;
} fx;

static void fx_init(fx *f, size_t cap)
{
    guard_init(&f->g, cap);
    resp_args_init(&f->a);
    resp_limits_default(&f->lim);
}

static void fx_free(fx *f)
{
    resp_args_free(&f->a);
    guard_free(&f->g);
}

/* Parses n bytes placed against the guard page. */
static resp_result fx_parse(fx *f, const void *data, size_t n)
{
    const uint8_t *p = guard_place(&f->g, data, n);
    f->consumed = 77;
    f->err = NULL;
    resp_result r = resp_parse(p, n, &f->lim, &f->a, &f->consumed, &f->err);
    if (r != RESP_OK) ck_assert_uint_eq(f->consumed, 0);
    if (r == RESP_ERROR) ck_assert_ptr_nonnull(f->err);
    return r;
}

#define PARSE(f, lit) fx_parse((f), (lit), sizeof(lit) - 1)

static void expect_arg(const resp_args *a, size_t i, const void *want, size_t wantlen)
{
    ck_assert_uint_gt(a->argc, i);
    ck_assert_uint_eq(a->argvlen[i], wantlen);
    ck_assert(wantlen == 0 || memcmp(a->argv[i], want, wantlen) == 0);
}

#define ARG(a, i, lit) expect_arg((a), (i), (lit), sizeof(lit) - 1)

static void expect_ok(fx *f, const void *data, size_t n, size_t consumed, size_t argc)
{
    ck_assert_int_eq(fx_parse(f, data, n), RESP_OK);
    ck_assert_uint_eq(f->consumed, consumed);
    ck_assert_uint_eq(f->a.argc, argc);
}

#define PARSE_OK(f, lit, consumed, argc) expect_ok((f), (lit), sizeof(lit) - 1, (consumed), (argc))

static void expect_error(fx *f, const void *data, size_t n, const char *msg)
{
    ck_assert_int_eq(fx_parse(f, data, n), RESP_ERROR);
    ck_assert_str_eq(f->err, msg);
    ck_assert_uint_eq(f->a.argc, 0);
}

#define PARSE_ERROR(f, lit, msg) expect_error((f), (lit), sizeof(lit) - 1, (msg))
#define PARSE_NEED_MORE(f, lit) ck_assert_int_eq(PARSE((f), (lit)), RESP_NEED_MORE)

#define E_MBULK "Protocol error: invalid multibulk length"
#define E_BULK "Protocol error: invalid bulk length"
#define E_MBULK_BIG "Protocol error: too big mbulk count string"
#define E_BULK_BIG "Protocol error: too big bulk count string"
#define E_INLINE_BIG "Protocol error: too big inline request"
#define E_QUOTES "Protocol error: unbalanced quotes in request"

/* --- multibulk --------------------------------------------------------- */

START_TEST(multibulk_set_and_get)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_OK(&f, "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", 33, 3);
    ARG(&f.a, 0, "SET");
    ARG(&f.a, 1, "key");
    ARG(&f.a, 2, "value");
    PARSE_OK(&f, "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", 22, 2);
    ARG(&f.a, 0, "GET");
    ARG(&f.a, 1, "key");
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_payload_is_binary_safe)
{
    fx f;
    fx_init(&f, 4096);
    static const char req[] = "*2\r\n$6\r\n\0\r\n\r\0\n\r\n$0\r\n\r\n";
    expect_ok(&f, req, sizeof(req) - 1, sizeof(req) - 1, 2);
    expect_arg(&f.a, 0, "\0\r\n\r\0\n", 6);
    expect_arg(&f.a, 1, "", 0);
    /* Multibulk arguments point into the buffer itself, not a copy. */
    const uint8_t *start = f.g.base + f.g.span - (sizeof(req) - 1);
    ck_assert_ptr_eq(f.a.argv[0], start + 8);
    /* A bulk whose payload looks like protocol is still data. */
    PARSE_OK(&f, "*1\r\n$9\r\n*1\r\n$1\r\nx\r\n", 19, 1);
    ARG(&f.a, 0, "*1\r\n$1\r\nx");
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_zero_or_negative_count_is_empty_request)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_OK(&f, "*0\r\n", 4, 0);
    PARSE_OK(&f, "*-1\r\n", 5, 0);
    PARSE_OK(&f, "*-7\r\n*1\r\n", 5, 0);
    PARSE_OK(&f, "*-9223372036854775808\r\n", 23, 0);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_count_not_a_number_is_invalid_multibulk_length)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_ERROR(&f, "*x\r\n", E_MBULK);
    PARSE_ERROR(&f, "*\r\n", E_MBULK);
    PARSE_ERROR(&f, "*1x\r\n", E_MBULK);
    PARSE_ERROR(&f, "* 1\r\n", E_MBULK);
    PARSE_ERROR(&f, "*+1\r\n", E_MBULK);
    PARSE_ERROR(&f, "*01\r\n", E_MBULK);    /* string2ll: no leading zeros */
    PARSE_ERROR(&f, "*-0\r\n", E_MBULK);    /* nor a negative zero */
    PARSE_ERROR(&f, "*-\r\n", E_MBULK);
    PARSE_ERROR(&f, "*1 \r\n", E_MBULK);
    PARSE_ERROR(&f, "*9223372036854775808\r\n", E_MBULK);
    PARSE_ERROR(&f, "*18446744073709551617\r\n", E_MBULK);
    PARSE_ERROR(&f, "*-9223372036854775809\r\n", E_MBULK);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_count_above_max_args_is_invalid_multibulk_length)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_ERROR(&f, "*1048577\r\n", E_MBULK); /* the default limit */
    PARSE_NEED_MORE(&f, "*1048576\r\n");
    f.lim.max_args = 2;
    PARSE_ERROR(&f, "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", E_MBULK);
    PARSE_OK(&f, "*2\r\n$1\r\na\r\n$1\r\nb\r\n", 18, 2);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_expected_dollar_names_the_byte)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_ERROR(&f, "*1\r\n:3\r\n", "Protocol error: expected '$', got ':'");
    PARSE_ERROR(&f, "*2\r\n$1\r\na\r\nfoo\r\n", "Protocol error: expected '$', got 'f'");
    /* Redis's addReplyErrorFormat turns CR and LF into spaces. */
    PARSE_ERROR(&f, "*1\r\n\r\n", "Protocol error: expected '$', got ' '");
    PARSE_ERROR(&f, "*1\r\n\n\r\n", "Protocol error: expected '$', got ' '");
    /* The byte is judged only once its line has a '\r' and one more byte. */
    PARSE_NEED_MORE(&f, "*1\r\nx");
    PARSE_NEED_MORE(&f, "*1\r\nxyz\r");
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_bulk_length_errors_are_invalid_bulk_length)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_ERROR(&f, "*1\r\n$x\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$-1\r\n", E_BULK); /* no null bulk in a request */
    PARSE_ERROR(&f, "*1\r\n$3x\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$03\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$-0\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$9223372036854775808\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$99999999999999999999999\r\n", E_BULK);
    PARSE_ERROR(&f, "*1\r\n$536870913\r\n", E_BULK); /* 512 MiB + 1 */
    PARSE_NEED_MORE(&f, "*1\r\n$536870912\r\n");
    f.lim.max_bulk_len = 4;
    PARSE_ERROR(&f, "*1\r\n$5\r\nhello\r\n", E_BULK);
    PARSE_OK(&f, "*1\r\n$4\r\nhell\r\n", 14, 1);
    ARG(&f.a, 0, "hell");
    /* The second argument's length is checked like the first. */
    PARSE_ERROR(&f, "*2\r\n$1\r\na\r\n$5\r\n", E_BULK);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_count_line_without_cr_is_too_big_past_limit)
{
    fx f;
    fx_init(&f, 128 * 1024);
    static char big[65536 + 16];
    big[0] = '*';
    memset(big + 1, '1', sizeof(big) - 1);
    /* Redis: an error only once more than 64 KiB wait without a '\r'. */
    ck_assert_int_eq(fx_parse(&f, big, 65536), RESP_NEED_MORE);
    expect_error(&f, big, 65537, E_MBULK_BIG);
    /* The same long line judged on its value when its '\r' is there. */
    big[65537] = '\r';
    big[65538] = '\n';
    expect_error(&f, big, 65539, E_MBULK);

    f.lim.max_inline_len = 8;
    PARSE_NEED_MORE(&f, "*1234567");
    PARSE_ERROR(&f, "*12345678", E_MBULK_BIG);
    PARSE_ERROR(&f, "*1\0\0\0\0\0\0\0", E_MBULK_BIG);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_bulk_count_line_without_cr_is_too_big_past_limit)
{
    fx f;
    fx_init(&f, 4096);
    f.lim.max_inline_len = 8;
    /* Measured from the start of the "$" line, not of the request. */
    PARSE_NEED_MORE(&f, "*1\r\n$1234567");
    PARSE_ERROR(&f, "*1\r\n$12345678", E_BULK_BIG);
    PARSE_NEED_MORE(&f, "*2\r\n$1\r\na\r\n$1234567");
    PARSE_ERROR(&f, "*2\r\n$1\r\na\r\n$12345678", E_BULK_BIG);
    /* Redis: the size check comes before the '$' check. */
    PARSE_ERROR(&f, "*1\r\nXXXXXXXXX", E_BULK_BIG);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_bytes_after_payload_are_skipped_unchecked)
{
    fx f;
    fx_init(&f, 4096);
    /* Redis skips the two bytes after a payload without looking at them. */
    PARSE_OK(&f, "*2\r\n$3\r\nfooXY$3\r\nbarZZ*1\r\n", 22, 2);
    ARG(&f.a, 0, "foo");
    ARG(&f.a, 1, "bar");
    /* ... but waits for both of them. */
    PARSE_NEED_MORE(&f, "*1\r\n$3\r\nfoo");
    PARSE_NEED_MORE(&f, "*1\r\n$3\r\nfooX");
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_count_line_cr_then_any_byte)
{
    fx f;
    fx_init(&f, 4096);
    /* Redis needs one byte after the '\r' of a count line and skips it
     * whatever it is. */
    PARSE_NEED_MORE(&f, "*1\r");
    PARSE_OK(&f, "*1\rX$3\rYfoo\r\n", 13, 1);
    ARG(&f.a, 0, "foo");
    PARSE_NEED_MORE(&f, "*1\r\n$3\r");
    PARSE_OK(&f, "*0\r*", 4, 0);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_nul_before_cr_hides_the_line_end)
{
    fx f;
    fx_init(&f, 4096);
    /* Redis finds the '\r' with strchr(), which stops at a NUL: such a line
     * never ends and is refused once past the limit. */
    PARSE_NEED_MORE(&f, "*1\0\r\n");
    PARSE_NEED_MORE(&f, "*1\r\n$1\0\r\nx\r\n");
    f.lim.max_inline_len = 4;
    PARSE_ERROR(&f, "*1\0\r\n", E_MBULK_BIG);
    PARSE_ERROR(&f, "*1\r\n$1\0\r\nx\r\n", E_BULK_BIG);
    /* A NUL after the '\r' is harmless. */
    PARSE_OK(&f, "*1\r\n$1\r\n\0\r\n", 11, 1);
    expect_arg(&f.a, 0, "\0", 1);
    fx_free(&f);
}
END_TEST

START_TEST(multibulk_many_arguments)
{
    fx f;
    fx_init(&f, 64 * 1024);
    size_t n = 3000, len = 0;
    char *req = malloc(16 + n * 16);
    ck_assert_ptr_nonnull(req);
    len += (size_t)snprintf(req, 16, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++) {
        size_t digits = i < 10 ? 1 : i < 100 ? 2 : i < 1000 ? 3 : 4;
        len += (size_t)snprintf(req + len, 16, "$%zu\r\n%zu\r\n", digits, i);
    }
    expect_ok(&f, req, len, len, n);
    for (size_t i = 0; i < n; i++) {
        char want[8];
        int w = snprintf(want, sizeof(want), "%zu", i);
        expect_arg(&f.a, i, want, (size_t)w);
    }
    /* A smaller request after a big one reuses the vector. */
    PARSE_OK(&f, "*1\r\n$1\r\nz\r\n", 11, 1);
    ARG(&f.a, 0, "z");
    free(req);
    fx_free(&f);
}
END_TEST

/* --- inline ---------------------------------------------------------- */

START_TEST(inline_crlf_and_lf_line_ends)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_OK(&f, "PING\r\n", 6, 1);
    ARG(&f.a, 0, "PING");
    PARSE_OK(&f, "PING\n", 5, 1);
    ARG(&f.a, 0, "PING");
    PARSE_OK(&f, "set  k\tv \r\nGET", 11, 3);
    ARG(&f.a, 0, "set");
    ARG(&f.a, 1, "k");
    ARG(&f.a, 2, "v");
    /* Only the '\r' right before the '\n' belongs to the line end. */
    PARSE_OK(&f, "a\rb\r\r\n", 6, 2);
    ARG(&f.a, 0, "a");
    ARG(&f.a, 1, "b");
    /* Anything but '*' starts an inline request, '$' included. */
    PARSE_OK(&f, "$3\r\n", 4, 1);
    ARG(&f.a, 0, "$3");
    PARSE_NEED_MORE(&f, "PING");
    PARSE_NEED_MORE(&f, "PING\r");
    fx_free(&f);
}
END_TEST

START_TEST(inline_empty_line_is_empty_request)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_OK(&f, "\r\n", 2, 0);
    PARSE_OK(&f, "\n", 1, 0);
    PARSE_OK(&f, " \t \r\n", 5, 0);
    PARSE_OK(&f, "\v\f\r\r\n", 5, 0);
    PARSE_NEED_MORE(&f, "");
    fx_free(&f);
}
END_TEST

START_TEST(inline_quotes_follow_sdssplitargs)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_OK(&f, "set \"a b\" 'c d'\r\n", 17, 3);
    ARG(&f.a, 0, "set");
    ARG(&f.a, 1, "a b");
    ARG(&f.a, 2, "c d");
    PARSE_OK(&f, "\"\\x41\\x42\"\n", 11, 1);
    ARG(&f.a, 0, "AB");
    PARSE_OK(&f, "\"\\x00\\xfF\\x7e\"\n", 15, 1);
    expect_arg(&f.a, 0, "\0\xff~", 3);
    /* Not two hex digits: "\x" is an escaped 'x'. */
    PARSE_OK(&f, "\"\\x4\" \"\\xzz\"\n", 13, 2);
    ARG(&f.a, 0, "x4");
    ARG(&f.a, 1, "xzz");
    PARSE_OK(&f, "\"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n", 19, 1);
    ARG(&f.a, 0, "\n\r\t\b\a\\\"q");
    /* Single quotes take \' only. */
    PARSE_OK(&f, "'it\\'s' '\\n\\x41'\n", 17, 2);
    ARG(&f.a, 0, "it's");
    ARG(&f.a, 1, "\\n\\x41");
    /* Empty quoted arguments are kept. */
    PARSE_OK(&f, "set k \"\" ''\n", 12, 4);
    ARG(&f.a, 2, "");
    ARG(&f.a, 3, "");
    /* A quote inside a word opens a quoted part of the same word. */
    PARSE_OK(&f, "a\"b c\" d'e f'\n", 14, 2);
    ARG(&f.a, 0, "ab c");
    ARG(&f.a, 1, "de f");
    /* A closing quote may be followed by any blank, '\v' and '\f' too. */
    PARSE_OK(&f, "\"a\"\v'b'\fc\n", 10, 3);
    ARG(&f.a, 0, "a");
    ARG(&f.a, 1, "b");
    ARG(&f.a, 2, "c");
    fx_free(&f);
}
END_TEST

START_TEST(inline_vertical_tab_and_form_feed_stay_inside_a_word)
{
    fx f;
    fx_init(&f, 4096);
    /* Skipped between words (isspace) but not word ends (sdssplitargs
     * ends a bare word only at ' ', '\t', '\r', '\n'). */
    PARSE_OK(&f, "\v\fa\vb\fc d\n", 10, 2);
    ARG(&f.a, 0, "a\vb\fc");
    ARG(&f.a, 1, "d");
    fx_free(&f);
}
END_TEST

START_TEST(inline_unbalanced_quotes)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_ERROR(&f, "\"unterminated\r\n", E_QUOTES);
    PARSE_ERROR(&f, "set 'unterminated\n", E_QUOTES);
    PARSE_ERROR(&f, "\"closing\"quote-not-followed-by-space\r\n", E_QUOTES);
    PARSE_ERROR(&f, "'a'b\n", E_QUOTES);
    PARSE_ERROR(&f, "\"a\"\"b\"\n", E_QUOTES);
    PARSE_ERROR(&f, "\"ends with a backslash\\\n", E_QUOTES);
    PARSE_ERROR(&f, "\"escaped close\\\"\n", E_QUOTES);
    PARSE_ERROR(&f, "'escaped close\\'\n", E_QUOTES);
    /* The line ends at the '\n': a quote cannot span lines. */
    PARSE_ERROR(&f, "\"a\nb\"\n", E_QUOTES);
    fx_free(&f);
}
END_TEST

START_TEST(inline_too_big_only_without_newline)
{
    fx f;
    fx_init(&f, 128 * 1024);
    static char big[65536 + 16];
    memset(big, 'a', sizeof(big));
    ck_assert_int_eq(fx_parse(&f, big, 65536), RESP_NEED_MORE);
    expect_error(&f, big, 65537, E_INLINE_BIG);
    /* Redis checks the size only while no '\n' has arrived. */
    big[65540] = '\n';
    expect_ok(&f, big, 65541, 65541, 1);
    ck_assert_uint_eq(f.a.argvlen[0], 65540);

    f.lim.max_inline_len = 8;
    PARSE_NEED_MORE(&f, "GET abcd");
    PARSE_ERROR(&f, "GET abcde", E_INLINE_BIG);
    PARSE_OK(&f, "GET abcdefghij\n", 15, 2);
    fx_free(&f);
}
END_TEST

START_TEST(inline_nul_before_newline_hides_the_line_end)
{
    fx f;
    fx_init(&f, 4096);
    /* Redis finds the '\n' with strchr(): a NUL before it keeps the line
     * open until the buffer passes the limit. */
    PARSE_NEED_MORE(&f, "GET a\0b\r\n");
    PARSE_NEED_MORE(&f, "\0\n");
    f.lim.max_inline_len = 8;
    PARSE_ERROR(&f, "GET a\0b\r\n", E_INLINE_BIG);
    fx_free(&f);
}
END_TEST

START_TEST(inline_many_arguments)
{
    fx f;
    fx_init(&f, 64 * 1024);
    size_t n = 5000;
    char *line = malloc(2 * n + 1);
    ck_assert_ptr_nonnull(line);
    for (size_t i = 0; i < n; i++) {
        line[2 * i] = (char)('a' + i % 26);
        line[2 * i + 1] = ' ';
    }
    line[2 * n - 1] = '\n';
    expect_ok(&f, line, 2 * n, 2 * n, n);
    for (size_t i = 0; i < n; i++) expect_arg(&f.a, i, line + 2 * i, 1);
    free(line);
    fx_free(&f);
}
END_TEST

/* --- pipelines ----------------------------------------------------------- */

typedef struct want_req {
    const char *bytes;
    size_t len;
    size_t argc;
    const char *argv[4];
    size_t argvlen[4];
} want_req;

#define REQ(lit) (lit), sizeof(lit) - 1

/* Multibulk with binary payloads, inline with quotes and \xHH escapes,
 * empty requests of both kinds, LF-only inline. */
static const want_req pipeline[] = {
    {REQ("*3\r\n$3\r\nSET\r\n$5\r\nk\0\r\nv\r\n$4\r\n\r\n\0\n\r\n"), 3, {"SET", "k\0\r\nv", "\r\n\0\n"}, {3, 5, 4}},
    {REQ("SET \"a b\" 'it\\'s' \"\\x41\\x00\\n\"\r\n"), 4, {"SET", "a b", "it's", "A\0\n"}, {3, 3, 4, 3}},
    {REQ("*1\r\n$4\r\nPING\r\n"), 1, {"PING"}, {4}},
    {REQ("\r\n"), 0, {0}, {0}},
    {REQ("*0\r\n"), 0, {0}, {0}},
    {REQ("GET k\n"), 2, {"GET", "k"}, {3, 1}},
    {REQ("*2\r\n$3\r\nGET\r\n$0\r\n\r\n"), 2, {"GET", ""}, {3, 0}},
    {REQ("*-1\r\n"), 0, {0}, {0}},
    {REQ("ECHO \"*1\\r\\n\"\n"), 2, {"ECHO", "*1\r\n"}, {4, 4}},
};
#define NPIPE (sizeof(pipeline) / sizeof(pipeline[0]))

static size_t pipeline_build(uint8_t *out)
{
    size_t len = 0;
    for (size_t i = 0; i < NPIPE; i++) {
        memcpy(out + len, pipeline[i].bytes, pipeline[i].len);
        len += pipeline[i].len;
    }
    return len;
}

static void expect_req(const resp_args *a, const want_req *w)
{
    ck_assert_uint_eq(a->argc, w->argc);
    for (size_t j = 0; j < w->argc; j++) expect_arg(a, j, w->argv[j], w->argvlen[j]);
}

START_TEST(pipeline_parses_in_order_with_consumed_counts)
{
    fx f;
    fx_init(&f, 4096);
    uint8_t all[1024];
    size_t len = pipeline_build(all);
    const uint8_t *buf = guard_place(&f.g, all, len);
    size_t off = 0;
    for (size_t i = 0; i < NPIPE; i++) {
        ck_assert_int_eq(resp_parse(buf + off, len - off, &f.lim, &f.a, &f.consumed, &f.err), RESP_OK);
        ck_assert_uint_eq(f.consumed, pipeline[i].len);
        expect_req(&f.a, &pipeline[i]);
        off += f.consumed;
    }
    ck_assert_uint_eq(off, len);
    ck_assert_int_eq(resp_parse(buf + off, 0, &f.lim, &f.a, &f.consumed, &f.err), RESP_NEED_MORE);
    fx_free(&f);
}
END_TEST

START_TEST(pipeline_every_prefix_needs_more_and_never_overreads)
{
    fx f;
    fx_init(&f, 4096);
    uint8_t all[1024];
    size_t len = pipeline_build(all);
    for (size_t k = 0; k <= len; k++) {
        /* The first k bytes, the last of them against the guard page. */
        const uint8_t *buf = guard_place(&f.g, all, k);
        size_t off = 0, done = 0, end = 0;
        for (;;) {
            resp_result r = resp_parse(buf + off, k - off, &f.lim, &f.a, &f.consumed, &f.err);
            if (r != RESP_OK) {
                ck_assert_int_eq(r, RESP_NEED_MORE);
                ck_assert_uint_eq(f.consumed, 0);
                break;
            }
            ck_assert_uint_lt(done, NPIPE);
            ck_assert_uint_eq(f.consumed, pipeline[done].len);
            expect_req(&f.a, &pipeline[done]);
            off += f.consumed;
            done++;
        }
        /* Exactly the requests that end within the prefix were parsed. */
        size_t complete = 0;
        for (size_t i = 0; i < NPIPE; i++) {
            end += pipeline[i].len;
            if (end <= k) complete++;
        }
        ck_assert_uint_eq(done, complete);
    }
    fx_free(&f);
}
END_TEST

START_TEST(pipeline_mixes_inline_and_multibulk_back_to_back)
{
    fx f;
    fx_init(&f, 4096);
    static const char req[] = "PING\n*1\r\n$4\r\nPING\r\nPING\r\n";
    size_t len = sizeof(req) - 1;
    const uint8_t *buf = guard_place(&f.g, req, len);
    size_t want[] = {5, 14, 6}, off = 0;
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(resp_parse(buf + off, len - off, &f.lim, &f.a, &f.consumed, &f.err), RESP_OK);
        ck_assert_uint_eq(f.consumed, want[i]);
        ARG(&f.a, 0, "PING");
        off += f.consumed;
    }
    ck_assert_uint_eq(off, len);
    fx_free(&f);
}
END_TEST

/* --- API ----------------------------------------------------------------- */

START_TEST(default_limits_are_redis_defaults)
{
    resp_limits l;
    resp_limits_default(&l);
    ck_assert_uint_eq(l.max_bulk_len, 512u * 1024 * 1024);
    ck_assert_uint_eq(l.max_args, 1048576);
    ck_assert_uint_eq(l.max_inline_len, 65536);
}
END_TEST

START_TEST(error_and_need_more_leave_no_arguments)
{
    fx f;
    fx_init(&f, 4096);
    PARSE_OK(&f, "*1\r\n$1\r\na\r\n", 11, 1);
    PARSE_NEED_MORE(&f, "*2\r\n$1\r\na\r\n$1\r\n");
    ck_assert_uint_eq(f.a.argc, 0);
    PARSE_OK(&f, "a b\n", 4, 2);
    PARSE_ERROR(&f, "*2\r\n$1\r\na\r\n:\r\n", "Protocol error: expected '$', got ':'");
    fx_free(&f);
}
END_TEST

START_TEST(args_free_then_reuse)
{
    resp_args a;
    resp_args_init(&a);
    resp_args_free(&a); /* free of an unused vector is fine */
    resp_limits lim;
    resp_limits_default(&lim);
    size_t consumed;
    const char *err;
    const uint8_t req[] = "x \"y\"\n";
    ck_assert_int_eq(resp_parse(req, sizeof(req) - 1, &lim, &a, &consumed, &err), RESP_OK);
    ck_assert_uint_eq(a.argc, 2);
    resp_args_free(&a);
    ck_assert_ptr_null(a.argv);
    ck_assert_uint_eq(a.argc, 0);
    ck_assert_int_eq(resp_parse(req, sizeof(req) - 1, &lim, &a, &consumed, &err), RESP_OK);
    ck_assert_uint_eq(a.argc, 2);
    resp_args_free(&a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("resp");
    TCase *tc = tcase_create("parser");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, multibulk_set_and_get);
    tcase_add_test(tc, multibulk_payload_is_binary_safe);
    tcase_add_test(tc, multibulk_zero_or_negative_count_is_empty_request);
    tcase_add_test(tc, multibulk_count_not_a_number_is_invalid_multibulk_length);
    tcase_add_test(tc, multibulk_count_above_max_args_is_invalid_multibulk_length);
    tcase_add_test(tc, multibulk_expected_dollar_names_the_byte);
    tcase_add_test(tc, multibulk_bulk_length_errors_are_invalid_bulk_length);
    tcase_add_test(tc, multibulk_count_line_without_cr_is_too_big_past_limit);
    tcase_add_test(tc, multibulk_bulk_count_line_without_cr_is_too_big_past_limit);
    tcase_add_test(tc, multibulk_bytes_after_payload_are_skipped_unchecked);
    tcase_add_test(tc, multibulk_count_line_cr_then_any_byte);
    tcase_add_test(tc, multibulk_nul_before_cr_hides_the_line_end);
    tcase_add_test(tc, multibulk_many_arguments);
    tcase_add_test(tc, inline_crlf_and_lf_line_ends);
    tcase_add_test(tc, inline_empty_line_is_empty_request);
    tcase_add_test(tc, inline_quotes_follow_sdssplitargs);
    tcase_add_test(tc, inline_vertical_tab_and_form_feed_stay_inside_a_word);
    tcase_add_test(tc, inline_unbalanced_quotes);
    tcase_add_test(tc, inline_too_big_only_without_newline);
    tcase_add_test(tc, inline_nul_before_newline_hides_the_line_end);
    tcase_add_test(tc, inline_many_arguments);
    tcase_add_test(tc, pipeline_parses_in_order_with_consumed_counts);
    tcase_add_test(tc, pipeline_every_prefix_needs_more_and_never_overreads);
    tcase_add_test(tc, pipeline_mixes_inline_and_multibulk_back_to_back);
    tcase_add_test(tc, default_limits_are_redis_defaults);
    tcase_add_test(tc, error_and_need_more_leave_no_arguments);
    tcase_add_test(tc, args_free_then_reuse);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
