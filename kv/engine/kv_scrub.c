/*
 * kv_scrub — see kv_scrub.h.
 *
 * Locking: sc->mu guards the schedule, the flags (stop, requested,
 * running), the counters and the set of logged problems; it is never held
 * across I/O, only across the condition-variable sleeps that pace a pass
 * and wait for the next one. sc->pass_mu makes passes one at a time (the
 * thread's and kv_scrub_run's) and is held for a whole pass.
 */
#define _GNU_SOURCE
#include "kv_scrub.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kv_dir.h"
#include "kv_io.h"
#include "kv_record.h"
#include "kvr_hint.h"
#include "kvr_reader.h"

/* Bytes copied between two pacing sleeps: at most this, and about a tenth
 * of a second's worth at the configured rate, so the sleeps are short and
 * the rate is kept evenly. */
#define SCRUB_CHUNK_MAX (1u << 20)
#define SCRUB_CHUNK_MIN (4u << 10)
/* Problems remembered so as to log each once; past this many, a problem
 * met again is logged again. */
#define SCRUB_KNOWN_MAX 4096

typedef struct known_problem {
    uint32_t seg;
    int hint;
    uint64_t offset;
} known_problem;

struct kv_scrub {
    kv_store *s;
    char thread_name[16];
    void (*thread_init)(void *);
    void *thread_arg;

    pthread_mutex_t pass_mu; /* held for a whole pass */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    int started, stop, requested, running;
    uint64_t interval_s, rate;
    uint64_t sched_base_ms; /* monotonic: end of the last pass, or the start */
    uint64_t bytes_checked, last_completed, passes, errors;
    char last_error[160];
    known_problem *known;
    size_t nknown, cap_known;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Waits on sc->cv (caller holds sc->mu) until monotonic time due_us, a
 * signal, or a spurious wake-up. */
static void wait_until_us(kv_scrub *sc, uint64_t due_us)
{
    struct timespec ts = {(time_t)(due_us / 1000000u), (long)(due_us % 1000000u) * 1000L};
    pthread_cond_timedwait(&sc->cv, &sc->mu, &ts);
}

void kv_scrub_options_init(kv_scrub_options *o)
{
    memset(o, 0, sizeof *o);
    o->interval_s = KV_SCRUB_DEFAULT_INTERVAL_S;
    o->rate = KV_SCRUB_DEFAULT_RATE;
}

kv_scrub *kv_scrub_new(kv_store *s, const kv_scrub_options *o)
{
    kv_scrub_options d;
    if (!o) {
        kv_scrub_options_init(&d);
        o = &d;
    }
    kv_scrub *sc = calloc(1, sizeof *sc);
    if (!sc) return NULL;
    sc->s = s;
    snprintf(sc->thread_name, sizeof sc->thread_name, "%s", o->thread_name ? o->thread_name : "kv-scrub");
    sc->thread_init = o->thread_init;
    sc->thread_arg = o->thread_arg;
    sc->interval_s = o->interval_s;
    sc->rate = o->rate;
    pthread_mutex_init(&sc->pass_mu, NULL);
    pthread_mutex_init(&sc->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sc->cv, &ca);
    pthread_condattr_destroy(&ca);
    sc->sched_base_ms = mono_ms();
    return sc;
}

/* ---- one pass ---- */

typedef struct pass {
    kv_scrub *sc;
    kv_scrub_result *res;
    uint64_t rate;      /* the rate paced_bytes were read at */
    uint64_t anchor_us; /* monotonic time pacing counts from */
    uint64_t paced;     /* bytes read since anchor_us */
} pass;

/* Records a problem in the pass's result; logs and counts it if it was
 * not known yet. */
static void report(pass *p, uint32_t seg, int hint, uint64_t off, uint64_t len, const char *reason)
{
    kv_scrub *sc = p->sc;
    kv_scrub_result *res = p->res;
    kv_scrub_problem pr;
    memset(&pr, 0, sizeof pr);
    (void)kv_dir_name(pr.file, sizeof pr.file, hint ? KV_FILE_HINT : KV_FILE_SEG, seg, 0);
    pr.seg = seg;
    pr.hint = hint;
    pr.offset = off;
    pr.length = len;
    snprintf(pr.reason, sizeof pr.reason, "%s", reason);
    if (res->nlist < KV_SCRUB_LIST_MAX) res->list[res->nlist++] = pr;
    res->problems++;

    int fresh = 1;
    pthread_mutex_lock(&sc->mu);
    for (size_t i = 0; i < sc->nknown; i++)
        if (sc->known[i].seg == seg && sc->known[i].hint == hint && sc->known[i].offset == off) {
            fresh = 0;
            break;
        }
    if (fresh) {
        if (sc->nknown == sc->cap_known && sc->cap_known < SCRUB_KNOWN_MAX) {
            size_t nc = sc->cap_known ? sc->cap_known * 2 : 16;
            known_problem *nk = realloc(sc->known, nc * sizeof *nk);
            if (nk) {
                sc->known = nk;
                sc->cap_known = nc;
            }
        }
        if (sc->nknown < sc->cap_known) sc->known[sc->nknown++] = (known_problem){seg, hint, off};
        sc->errors++;
        snprintf(sc->last_error, sizeof sc->last_error, "%s offset %" PRIu64 ": %s", pr.file, off, reason);
    }
    pthread_mutex_unlock(&sc->mu);
    if (!fresh) return;
    const char *dir = kv_store_dir(sc->s);
    if (hint)
        kv_store_log(sc->s, KV_LOG_ERROR, "scrub: damage in hint file %s/%s at offset %" PRIu64 ": %s; run kvfsck %s",
                     dir, pr.file, off, reason, dir);
    else if (len)
        kv_store_log(sc->s, KV_LOG_ERROR,
                     "scrub: damage in segment file %s/%s at offset %" PRIu64 " (%" PRIu64 " bytes): %s; run kvfsck %s",
                     dir, pr.file, off, len, reason, dir);
    else /* a read error: the extent is not known */
        kv_store_log(sc->s, KV_LOG_ERROR, "scrub: damage in segment file %s/%s at offset %" PRIu64 ": %s; run kvfsck %s",
                     dir, pr.file, off, reason, dir);
}

/* Counts n bytes just read and sleeps until they are due at the rate in
 * force. Returns 1 if the scrub is stopping, else 0. */
static int pace(pass *p, uint64_t n)
{
    kv_scrub *sc = p->sc;
    p->res->bytes += n;
    pthread_mutex_lock(&sc->mu);
    sc->bytes_checked += n;
    for (;;) {
        if (sc->stop) break;
        if (sc->rate != p->rate) { /* CONFIG SET: count from now at the new rate */
            p->rate = sc->rate;
            p->anchor_us = mono_us();
            p->paced = 0;
        }
        if (p->rate == 0) break;
        uint64_t due = p->anchor_us + (uint64_t)((unsigned __int128)(p->paced + n) * 1000000u / p->rate);
        if (mono_us() >= due) break;
        wait_until_us(sc, due);
    }
    p->paced += n;
    int stop = sc->stop;
    pthread_mutex_unlock(&sc->mu);
    return stop;
}

/* Chunk size for the rate in force. */
static size_t chunk_bytes(kv_scrub *sc)
{
    pthread_mutex_lock(&sc->mu);
    uint64_t rate = sc->rate;
    pthread_mutex_unlock(&sc->mu);
    uint64_t c = rate == 0 ? SCRUB_CHUNK_MAX : rate / 10;
    if (c > SCRUB_CHUNK_MAX) c = SCRUB_CHUNK_MAX;
    if (c < SCRUB_CHUNK_MIN) c = SCRUB_CHUNK_MIN;
    return (size_t)c;
}

/* The log reader's callbacks: rebuild the segment's hint, and report
 * every bad region (in a sealed segment each one is damage). */
typedef struct seg_scan {
    pass *p;
    uint32_t seg;
    kvr_hint_builder *b; /* NULL once a build step failed (ENOMEM): no rebuild */
    uint64_t problems;
} seg_scan;

static int on_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    (void)seg;
    seg_scan *c = arg;
    if (c->b && kvr_hint_builder_add(c->b, off, r) != KV_OK) {
        kvr_hint_builder_free(c->b);
        c->b = NULL;
    }
    return 0;
}

static void on_problem(void *arg, const kvr_problem *pr)
{
    seg_scan *c = arg;
    c->problems++;
    report(c->p, c->seg, 0, pr->offset, pr->length, kvr_reason_str(pr->reason));
}

/* Offset of the first byte where a and b differ (the shorter length if
 * one is a prefix of the other), or UINT64_MAX if they are equal. */
static uint64_t first_difference(const uint8_t *a, uint64_t alen, const uint8_t *b, uint64_t blen)
{
    uint64_t n = alen < blen ? alen : blen;
    for (uint64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return alen == blen ? UINT64_MAX : n;
}

/* Checks the hint file of held segment h, whose bytes are seg[0, h->size),
 * as kvfsck does (fsck/fsck_check.c). clean: the log reader found no
 * problem in the segment. */
static void check_hint(pass *p, const kv_sealed *h, const uint8_t *seg, seg_scan *c)
{
    kv_scrub *sc = p->sc;
    uint8_t *hb = NULL;
    uint64_t hlen = 0;
    kv_status st = kv_sealed_read_hint(sc->s, h, &hb, &hlen);
    if (st == KV_NOT_FOUND) return;
    if (st == EFBIG) {
        report(p, h->file_id, 1, 0, 0, "hint file larger than any hint file can be");
        return;
    }
    if (st != KV_OK) {
        kv_store_log(sc->s, KV_LOG_WARN, "scrub: cannot read the hint file of segment %u: %s", h->file_id,
                     kv_strerror(st));
        return;
    }
    p->res->hints++;
    int clean = c->problems == 0;
    uint8_t *want = NULL;
    size_t wlen = 0;
    if (clean && c->b && kvr_hint_builder_finish_buf(c->b, seg, h->size, &want, &wlen) != KV_OK) want = NULL;
    uint64_t diff = want ? first_difference(hb, hlen, want, wlen) : 0;
    kvh_header hh;
    kv_status dst = kvh_decode(hb, hlen, h->file_id, &hh);
    if (dst != KV_OK) {
        report(p, h->file_id, 1, diff == UINT64_MAX ? 0 : diff, 0,
               dst == KV_VERSION ? "hint file of a format version this build cannot read"
                                 : "hint file fails its checksum or structure check");
    } else if (!clean) {
        /* Nothing to compare it with: the segment's own damage is reported. */
    } else if (hh.seg_size != h->size || h->size < KV_SEG_HEADER_SIZE ||
               (hh.records && hh.last_off + KV_REC_HEADER_SIZE > h->size) ||
               kvh_matches(&hh, h->size, seg, hh.records ? seg + hh.last_off : seg) != KV_OK) {
        report(p, h->file_id, 1, diff == UINT64_MAX ? 0 : diff, 0, "hint file describes other bytes (stale)");
    } else if (want && diff != UINT64_MAX) {
        report(p, h->file_id, 1, diff, 0, "hint file disagrees with its segment's records");
    }
    free(want);
    free(hb);
    pace(p, hlen);
}

/* Reads, checks and releases sealed segment `id`. Returns 1 if the scrub
 * is stopping. */
static int scrub_segment(pass *p, uint32_t id)
{
    kv_scrub *sc = p->sc;
    kv_store *s = sc->s;
    const kv_io *io = kv_store_io(s);
    kv_sealed h;
    kv_status st = kv_sealed_hold(s, id, &h);
    if (st == KV_NOT_FOUND) return 0; /* compacted away meanwhile */
    if (st != KV_OK) {
        kv_store_log(s, KV_LOG_WARN, "scrub: cannot read segment %u: %s", id, kv_strerror(st));
        return 0;
    }
    int stop = 0;
    uint8_t *buf = MAP_FAILED;
    size_t maplen = h.size ? (size_t)h.size : 1;
    kv_path segp;
    (void)kv_dir_path(&segp, kv_store_dir(s), KV_FILE_SEG, h.file_id, 0); /* fits: kv_open checked the dir */
    const char *path = segp.s;
    seg_scan c = {p, h.file_id, NULL, 0};
    if (h.size > KVR_MAX_SEGMENT_BYTES) {
        report(p, h.file_id, 0, 0, h.size, "segment larger than the reader loads");
        goto out;
    }
    /* A private anonymous mapping, not malloc: its pages go back to the
     * system the moment it is unmapped. */
    buf = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        kv_store_log(s, KV_LOG_WARN, "scrub: no memory to read segment %u (%" PRIu64 " bytes)", h.file_id, h.size);
        goto out;
    }
    for (uint64_t off = 0; off < h.size;) {
        if (kv_sealed_retired(s, &h)) goto out; /* compaction checked its records */
        size_t n = chunk_bytes(sc);
        if (n > h.size - off) n = (size_t)(h.size - off);
        int r = h.map ? kv_io_copy_mapped(buf + off, h.map + off, n) : kv_io_read_full(io, h.fd, buf + off, n, off);
        if (r < 0) {
            /* A media error: the segment is bad for the store too. */
            if (r == -EIO || r == -ENODATA) kv_sealed_media_error(s, &h, off, n, r);
            char why[96];
            snprintf(why, sizeof why, "cannot read: %s", kv_strerror(-r));
            report(p, h.file_id, 0, off, 0, why);
            goto out;
        }
        off += n;
        if ((stop = pace(p, n)) != 0) goto out;
    }
    c.b = kvr_hint_builder_new(h.file_id);
    kvr_scan_result sr;
    memset(&sr, 0, sizeof sr);
    st = kvr_scan_buffer(buf, h.size, h.file_id, path, on_record, on_problem, &c, &sr);
    if (st == KV_VERSION) {
        c.problems++;
        report(p, h.file_id, 0, 0, h.size, "segment of a format version this build cannot read");
    } else if (c.problems == 0 && sr.header_ok && sr.hdr.version >= 2 && !sr.sealed) {
        /* Every record intact, but the trailer a version 2 segment is
         * sealed with (before the store lists it as sealed) is gone: the
         * segment was cut short at a record boundary. As recovery reports
         * it: at the end of the file. */
        c.problems++;
        report(p, h.file_id, 0, h.size, 0, kvr_reason_str(KVR_NO_TRAILER));
    }
    p->res->segments++;
    check_hint(p, &h, buf, &c);
out:
    kvr_hint_builder_free(c.b);
    if (buf != MAP_FAILED) munmap(buf, maplen);
    kv_sealed_release(s, &h);
    return stop;
}

/* One pass over every sealed segment; the caller holds pass_mu and has
 * set running. */
static void do_pass(kv_scrub *sc, kv_scrub_result *res)
{
    memset(res, 0, sizeof *res);
    pass p = {.sc = sc, .res = res, .anchor_us = mono_us()};
    pthread_mutex_lock(&sc->mu);
    p.rate = sc->rate;
    pthread_mutex_unlock(&sc->mu);
    uint64_t t0 = mono_us();
    size_t n = kv_sealed_list(sc->s, NULL, 0);
    uint32_t *ids = calloc(n ? n : 1, sizeof *ids);
    if (!ids) {
        kv_store_log(sc->s, KV_LOG_WARN, "scrub: out of memory listing segments");
        return;
    }
    size_t now_n = kv_sealed_list(sc->s, ids, n);
    if (now_n < n) n = now_n; /* some were compacted away meanwhile */
    if (n == 0) { /* nothing sealed yet: a pass, but not worth two lines */
        free(ids);
        return;
    }
    kv_store_log(sc->s, KV_LOG_INFO, "scrub: pass started over %zu sealed segment%s", n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n && !res->stopped; i++) res->stopped = scrub_segment(&p, ids[i]);
    free(ids);
    kv_store_log(sc->s, res->problems ? KV_LOG_WARN : KV_LOG_INFO,
                 "scrub: pass %s: %u segments and %u hint files, %" PRIu64 " bytes in %.1f s, %" PRIu64
                 " problem%s found",
                 res->stopped ? "stopped" : "done", res->segments, res->hints, res->bytes, (mono_us() - t0) / 1e6,
                 res->problems, res->problems == 1 ? "" : "s");
}

/* Marks the end of a pass in the counters (caller holds sc->mu). */
static void pass_ended(kv_scrub *sc, const kv_scrub_result *res)
{
    sc->running = 0;
    sc->sched_base_ms = mono_ms();
    if (!res->stopped) {
        sc->passes++;
        sc->last_completed = (uint64_t)time(NULL);
    }
}

kv_status kv_scrub_run(kv_scrub *sc, kv_scrub_result *out)
{
    kv_scrub_result local;
    if (!out) out = &local;
    pthread_mutex_lock(&sc->pass_mu);
    pthread_mutex_lock(&sc->mu);
    sc->running = 1;
    sc->bytes_checked = 0;
    pthread_mutex_unlock(&sc->mu);
    do_pass(sc, out);
    pthread_mutex_lock(&sc->mu);
    pass_ended(sc, out);
    pthread_mutex_unlock(&sc->mu);
    pthread_mutex_unlock(&sc->pass_mu);
    return KV_OK;
}

/* ---- the thread ---- */

static void *scrub_main(void *arg)
{
    kv_scrub *sc = arg;
    /* Signals go to other threads; not the faults a mapped read may raise
     * (kv_io_copy_mapped turns SIGBUS into -EIO; a blocked SIGBUS would
     * kill the process instead). */
    kv_io_block_async_signals();
    pthread_setname_np(pthread_self(), sc->thread_name);
    if (sc->thread_init) sc->thread_init(sc->thread_arg);
    pthread_mutex_lock(&sc->mu);
    int first = sc->interval_s > 0; /* the pass after start */
    while (!sc->stop) {
        uint64_t now = mono_ms();
        uint64_t due = sc->interval_s ? (first ? now : sc->sched_base_ms + sc->interval_s * 1000u) : UINT64_MAX;
        if (!sc->requested && now < due) {
            /* Sleep until due (at most an hour at a time, so a changed
             * clock or schedule is never waited out for long). */
            uint64_t until = due - now < 3600000u ? due : now + 3600000u;
            wait_until_us(sc, until * 1000u);
            continue;
        }
        first = 0;
        /* pass_mu before mu, as kv_scrub_run takes them; `requested`
         * stays set until `running` is, so INFO never shows a gap. */
        pthread_mutex_unlock(&sc->mu);
        pthread_mutex_lock(&sc->pass_mu);
        pthread_mutex_lock(&sc->mu);
        if (sc->stop) {
            pthread_mutex_unlock(&sc->pass_mu);
            break;
        }
        sc->requested = 0;
        sc->running = 1;
        sc->bytes_checked = 0;
        pthread_mutex_unlock(&sc->mu);
        kv_scrub_result res;
        do_pass(sc, &res);
        pthread_mutex_lock(&sc->mu);
        pass_ended(sc, &res);
        pthread_mutex_unlock(&sc->pass_mu);
    }
    pthread_mutex_unlock(&sc->mu);
    return NULL;
}

kv_status kv_scrub_start(kv_scrub *sc)
{
    pthread_mutex_lock(&sc->mu);
    kv_status st = KV_OK;
    if (sc->started) {
        st = KV_INVALID;
    } else {
        sc->sched_base_ms = mono_ms();
        int r = pthread_create(&sc->thread, NULL, scrub_main, sc);
        if (r == 0)
            sc->started = 1;
        else
            st = r;
    }
    pthread_mutex_unlock(&sc->mu);
    return st;
}

void kv_scrub_free(kv_scrub *sc)
{
    if (!sc) return;
    pthread_mutex_lock(&sc->mu);
    sc->stop = 1;
    pthread_cond_broadcast(&sc->cv);
    int started = sc->started;
    pthread_mutex_unlock(&sc->mu);
    if (started) pthread_join(sc->thread, NULL);
    pthread_cond_destroy(&sc->cv);
    pthread_mutex_destroy(&sc->mu);
    pthread_mutex_destroy(&sc->pass_mu);
    free(sc->known);
    free(sc);
}

int kv_scrub_request(kv_scrub *sc)
{
    pthread_mutex_lock(&sc->mu);
    int r;
    if (!sc->started)
        r = -1;
    else if (sc->running || sc->requested)
        r = 0;
    else {
        sc->requested = 1;
        pthread_cond_broadcast(&sc->cv);
        r = 1;
    }
    pthread_mutex_unlock(&sc->mu);
    return r;
}

void kv_scrub_set_schedule(kv_scrub *sc, uint64_t interval_s, uint64_t rate)
{
    pthread_mutex_lock(&sc->mu);
    sc->interval_s = interval_s;
    sc->rate = rate;
    pthread_cond_broadcast(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
}

void kv_scrub_get_stats(kv_scrub *sc, kv_scrub_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&sc->mu);
    st->in_progress = sc->running || sc->requested;
    st->bytes_checked = sc->bytes_checked;
    st->last_completed = sc->last_completed;
    st->passes = sc->passes;
    st->errors = sc->errors;
    snprintf(st->last_error, sizeof st->last_error, "%s", sc->last_error);
    st->interval_s = sc->interval_s;
    st->rate = sc->rate;
    pthread_mutex_unlock(&sc->mu);
}
