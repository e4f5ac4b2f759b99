/*
 * kv_log — the store's log lines and the accessors the modules beside the
 * store (kv_scrub) use. At the bottom of the engine: every module logs
 * through it, and it calls none of them.
 *
 * Owns: nothing; lines go to kv_options.log (none when it is NULL).
 * Guarantees: a line is at most 1023 bytes (longer ones are cut).
 * Never: blocks on anything but the log callback; takes a lock.
 */
#include "kv_store_int.h"

#include <stdarg.h>
#include <stdio.h>

static void vlogf_(kv_store *s, int level, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
static void vlogf_(kv_store *s, int level, const char *fmt, va_list ap)
{
    if (!s->opt.log) return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    s->opt.log(s->opt.log_arg, level, msg);
}

void logf_(kv_store *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf_(s, level, fmt, ap);
    va_end(ap);
}

const char *kv_store_dir(const kv_store *s)
{
    return s->dir;
}

const kv_io *kv_store_io(const kv_store *s)
{
    return s->io;
}

void kv_store_log(kv_store *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogf_(s, level, fmt, ap);
    va_end(ap);
}

