/*
 * Fuzz target for the RESP request parser (kv/server/resp.c): the input is one
 * client's byte stream, parsed as a pipeline with small limits so that
 * every limit is reachable. Builds for libFuzzer and AFL++ alike
 * (LLVMFuzzerTestOneInput only; no main here).
 *
 * Invariants, each abort()s when broken:
 *  1. OK consumes at least one byte and no more than it was given.
 *  2. Every argument lies inside the buffer or inside the args' arena;
 *     a multibulk request has at most max_args arguments.
 *  3. Parsing exactly the consumed bytes again gives the same request;
 *     one byte fewer is never OK (a request ends where the parser says).
 *  4. NEED_MORE and ERROR consume nothing and leave no arguments; ERROR
 *     names a "Protocol error: ..." message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

static int inside(const uint8_t *p, size_t n, const uint8_t *base, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return base != NULL && a >= b && n <= len && a - b <= len - n;
}

static void check_args(const resp_args *a, const uint8_t *buf, size_t len, const resp_limits *lim)
{
    if (a->argc > a->cap) abort();
    if (buf[0] == '*' && a->argc > lim->max_args) abort();
    for (size_t i = 0; i < a->argc; i++) {
        const uint8_t *p = a->argv[i];
        size_t n = a->argvlen[i];
        if (n > len) abort();
        if (!inside(p, n, buf, len) && !inside(p, n, a->arena, a->arena_len)) abort();
    }
}

static int same_args(const resp_args *x, const resp_args *y)
{
    if (x->argc != y->argc) return 0;
    for (size_t i = 0; i < x->argc; i++) {
        if (x->argvlen[i] != y->argvlen[i]) return 0;
        if (x->argvlen[i] && memcmp(x->argv[i], y->argv[i], x->argvlen[i]) != 0) return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    resp_limits lim = {.max_bulk_len = 4096, .max_args = 64, .max_inline_len = 256};
    resp_args a, again;
    resp_args_init(&a);
    resp_args_init(&again);
    size_t off = 0;
    while (off < size) {
        const uint8_t *buf = data + off;
        size_t len = size - off, consumed = 99, c2 = 99;
        const char *err = NULL, *err2 = NULL;
        resp_result r = resp_parse(buf, len, &lim, &a, &consumed, &err);
        if (r == RESP_OK) {
            if (consumed == 0 || consumed > len) abort();
            check_args(&a, buf, len, &lim);
            if (resp_parse(buf, consumed, &lim, &again, &c2, &err2) != RESP_OK || c2 != consumed) abort();
            if (!same_args(&a, &again)) abort();
            if (resp_parse(buf, consumed - 1, &lim, &again, &c2, &err2) == RESP_OK) abort();
            off += consumed;
            continue;
        }
        if (consumed != 0 || a.argc != 0) abort();
        if (r == RESP_ERROR) {
            if (!err || strncmp(err, "Protocol error: ", 16) != 0) abort();
        } else if (r != RESP_NEED_MORE) {
            abort();
        }
        break;
    }
    resp_args_free(&a);
    resp_args_free(&again);
    return 0;
}
