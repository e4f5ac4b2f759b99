/*
 * clock — the two clocks the server reads.
 *
 * Guarantees: kvd_mstime is wall-clock time (what expiry, INFO uptime and
 *   CLIENT age use); kvd_mono_ms is for intervals (the soft output limit,
 *   the accept-error log), which a wall-clock step must not cut short or
 *   stretch.
 * Never: keeps state; both are safe on any thread.
 */
#ifndef KVD_CLOCK_H
#define KVD_CLOCK_H

#include <time.h>

/* Milliseconds since the epoch (CLOCK_REALTIME). */
static inline long long kvd_mstime(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds on the monotonic clock (CLOCK_MONOTONIC). */
static inline long long kvd_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
