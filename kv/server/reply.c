/* reply — see reply.h. */
#include "reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_add(sbuf *b, const void *p, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void sb_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, big, (size_t)n);
    free(big);
}

void rp_ok(sbuf *b) { sb_add(b, "+OK\r\n", 5); }
void rp_status(sbuf *b, const char *s) { sb_printf(b, "+%s\r\n", s); }
/* Appends type, v in decimal, CRLF: the header of an integer, bulk or
 * array reply, without printf (it is on every reply's path). */
static void sb_header(sbuf *b, char type, long long v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *p = e;
    *--p = '\n';
    *--p = '\r';
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    *--p = type;
    sb_add(b, p, (size_t)(e - p));
}

void rp_int(sbuf *b, long long v) { sb_header(b, ':', v); }
void rp_nil(sbuf *b) { sb_add(b, "$-1\r\n", 5); }
void rp_array(sbuf *b, long long n) { sb_header(b, '*', n); }
void rp_null_array(sbuf *b) { sb_add(b, "*-1\r\n", 5); }

void rp_error(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    /* An error reply is one line: no CR or LF inside. */
    for (char *p = tmp; *p; p++)
        if (*p == '\r' || *p == '\n') *p = ' ';
    sb_add(b, "-", 1);
    sb_add(b, tmp, strlen(tmp));
    sb_add(b, "\r\n", 2);
}

void rp_bulk(sbuf *b, const void *p, size_t n)
{
    sb_header(b, '$', (long long)n);
    sb_add(b, p, n);
    sb_add(b, "\r\n", 2);
}

void rp_bulk_str(sbuf *b, const char *s) { rp_bulk(b, s, strlen(s)); }
