/*
 * The scrub (kv/engine/kv_scrub.h): one pass reads every sealed segment and hint
 * file of an open store and reports damage a client has not met yet, at
 * the right file and offset, once in the log; a clean store gives no
 * report; the rate limit holds.
 *
 * The damage is made the way it happens: a byte of the file changes on
 * disk while the store is open (a write to the file, seen through the
 * store's shared mapping), with no read of the damaged key.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_scrub.h"
#include "kv_store.h"
#include "kvr_hint.h"
#include "kvr_reader.h"
#include "testutil.h"

/* Log lines the store and the scrub wrote. */
typedef struct logbuf {
    pthread_mutex_t mu;
    char text[1 << 16];
    size_t len;
} logbuf;

static void log_to(void *arg, int level, const char *msg)
{
    (void)level;
    logbuf *lb = arg;
    pthread_mutex_lock(&lb->mu);
    int n = snprintf(lb->text + lb->len, sizeof lb->text - lb->len, "%s\n", msg);
    if (n > 0 && lb->len + (size_t)n < sizeof lb->text) lb->len += (size_t)n;
    pthread_mutex_unlock(&lb->mu);
}

/* Occurrences of needle in the log. */
static int log_count(logbuf *lb, const char *needle)
{
    int n = 0;
    pthread_mutex_lock(&lb->mu);
    for (const char *p = lb->text; (p = strstr(p, needle)) != NULL; p++) n++;
    pthread_mutex_unlock(&lb->mu);
    return n;
}

static logbuf the_log = {PTHREAD_MUTEX_INITIALIZER, {0}, 0};

/* Opens a store in dir with 4 KiB segments, writes until at least 4
 * segments are sealed, and writes their hint files. */
static kv_store *open_filled(const char *dir)
{
    kv_options o;
    kv_options_init(&o);
    o.segment_max_bytes = 4096;
    o.log = log_to;
    o.log_arg = &the_log;
    kv_store *s = NULL;
    kvr_report rep;
    kv_status st = kv_open(dir, &o, &s, &rep);
    ck_assert_msg(st == KV_OK, "open: %s: %s", kv_strerror(st), rep.message);
    kvr_report_free(&rep);
    char k[32], v[160];
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "key:%d", i % 70);
        int vl = snprintf(v, sizeof v, "value-%d-%0*d", i, 60 + i % 80, i);
        ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
    }
    ck_assert_uint_ge(kv_sealed_list(s, NULL, 0), 4);
    ck_assert_int_eq(kv_write_hints(s, NULL), KV_OK);
    ck_assert_uint_eq(kv_hints_pending(s), 0);
    return s;
}

static kv_scrub *scrub_unlimited(kv_store *s)
{
    kv_scrub_options so;
    kv_scrub_options_init(&so);
    so.interval_s = 0;
    so.rate = 0;
    kv_scrub *sc = kv_scrub_new(s, &so);
    ck_assert_ptr_nonnull(sc);
    return sc;
}

/* The offsets and lengths of the records of a segment file. */
typedef struct recs {
    uint64_t off[512], len[512];
    size_t n;
} recs;

static int collect(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    (void)seg;
    recs *rs = arg;
    if (kv_record_is_mark(r)) return 0; /* group-commit marks, the trailer */
    if (rs->n < 512) {
        rs->off[rs->n] = off;
        rs->len[rs->n++] = r->len;
    }
    return 0;
}

static void file_path(char *out, size_t cap, const char *dir, uint32_t id, int hint)
{
    char name[32];
    if (hint)
        kvh_name(name, sizeof name, id);
    else
        kv_seg_name(name, sizeof name, id);
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Flips every bit of the byte at off in the file (a write, as a disk's
 * damage would be seen by the page cache). */
static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0xff;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

START_TEST(a_clean_store_reports_nothing_and_every_sealed_segment_and_hint_is_read)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub *sc = scrub_unlimited(s);
    uint32_t ids[64];
    size_t n = kv_sealed_list(s, ids, 64);
    uint64_t want = 0;
    for (size_t i = 0; i < n; i++) {
        char p[4200];
        file_path(p, sizeof p, dir, ids[i], 0);
        want += file_size(p);
        file_path(p, sizeof p, dir, ids[i], 1);
        want += file_size(p);
    }
    kv_scrub_result res;
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 0);
    ck_assert_uint_eq(res.nlist, 0);
    ck_assert_uint_eq(res.segments, n);
    ck_assert_uint_eq(res.hints, n);
    ck_assert_uint_eq(res.bytes, want);
    kv_scrub_stats st;
    kv_scrub_get_stats(sc, &st);
    ck_assert_uint_eq(st.passes, 1);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_str_eq(st.last_error, "");
    ck_assert_int_eq(st.in_progress, 0);
    ck_assert_uint_eq(st.bytes_checked, want);
    ck_assert_uint_ge(st.last_completed, (uint64_t)time(NULL) - 60);

    /* A compaction's output (a fresh store id, its own hint) is clean too. */
    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(s, &cr), KV_OK);
    ck_assert_uint_gt(cr.segments_in, 1);
    ck_assert_int_eq(kv_write_hints(s, NULL), KV_OK);
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 0);
    ck_assert_uint_ge(res.hints, 1);
    ck_assert_uint_eq(res.segments, kv_sealed_list(s, NULL, 0));
    ck_assert_int_eq(log_count(&the_log, "scrub: damage"), 0);
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(a_flipped_byte_in_a_sealed_segment_is_reported_at_its_record_once)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub *sc = scrub_unlimited(s);
    uint32_t ids[64];
    size_t n = kv_sealed_list(s, ids, 64);
    ck_assert_uint_ge(n, 3);
    uint32_t victim = ids[1]; /* not the first, not the last sealed one */
    char path[4200];
    file_path(path, sizeof path, dir, victim, 0);
    recs rs = {0};
    kvr_scan_result sr;
    ck_assert_int_eq(kvr_scan_file(kv_io_posix(), path, victim, collect, NULL, &rs, &sr, NULL), KV_OK);
    ck_assert_uint_ge(rs.n, 3);
    size_t mid = rs.n / 2;
    uint64_t at = rs.off[mid] + rs.len[mid] / 2 + 22; /* inside the value */
    ck_assert_uint_lt(at, rs.off[mid] + rs.len[mid]);
    flip_byte(path, at);

    kv_scrub_result res;
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 1);
    ck_assert_uint_eq(res.nlist, 1);
    ck_assert_uint_eq(res.list[0].seg, victim);
    ck_assert_int_eq(res.list[0].hint, 0);
    ck_assert_uint_le(res.list[0].offset, at);
    ck_assert_uint_gt(res.list[0].offset + res.list[0].length, at);
    ck_assert_uint_eq(res.list[0].offset, rs.off[mid]);
    char name[32];
    kv_seg_name(name, sizeof name, victim);
    ck_assert_str_eq(res.list[0].file, name);
    ck_assert_uint_eq(res.segments, n);

    kv_scrub_stats st;
    kv_scrub_get_stats(sc, &st);
    ck_assert_uint_eq(st.errors, 1);
    char want[200];
    snprintf(want, sizeof want, "%s offset %" PRIu64 ": ", name, rs.off[mid]);
    ck_assert_msg(strncmp(st.last_error, want, strlen(want)) == 0, "last_error '%s'", st.last_error);

    /* The log names the file, the offset and the command to run. */
    char line[4400];
    snprintf(line, sizeof line, "scrub: damage in segment file %s at offset %" PRIu64 " (", path, rs.off[mid]);
    ck_assert_int_eq(log_count(&the_log, line), 1);
    snprintf(line, sizeof line, "run kvfsck %s", dir);
    ck_assert_int_ge(log_count(&the_log, line), 1);

    /* A second pass finds it again but neither logs nor counts it again. */
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 1);
    kv_scrub_get_stats(sc, &st);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.passes, 2);
    ck_assert_int_eq(log_count(&the_log, "scrub: damage"), 1);

    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(a_flipped_byte_in_a_record_header_is_reported_at_or_before_it)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub *sc = scrub_unlimited(s);
    uint32_t ids[64];
    size_t n = kv_sealed_list(s, ids, 64);
    uint32_t victim = ids[n - 2];
    char path[4200];
    file_path(path, sizeof path, dir, victim, 0);
    recs rs = {0};
    ck_assert_int_eq(kvr_scan_file(kv_io_posix(), path, victim, collect, NULL, &rs, NULL, NULL), KV_OK);
    uint64_t at = rs.off[1] + 9; /* the length field: no length is trusted */
    flip_byte(path, at);
    kv_scrub_result res;
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 1);
    ck_assert_uint_eq(res.list[0].seg, victim);
    ck_assert_int_eq(res.list[0].hint, 0);
    ck_assert_uint_le(res.list[0].offset, at);
    ck_assert_uint_eq(res.list[0].offset, rs.off[1]);
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(a_flipped_byte_in_a_hint_file_is_reported_at_that_byte)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub *sc = scrub_unlimited(s);
    uint32_t ids[64];
    size_t n = kv_sealed_list(s, ids, 64);
    uint32_t victim = ids[n / 2];
    char path[4200];
    file_path(path, sizeof path, dir, victim, 1);
    uint64_t size = file_size(path);
    uint64_t at = KVH_HEADER_SIZE + (size - KVH_HEADER_SIZE) / 2; /* an entry */
    flip_byte(path, at);
    kv_scrub_result res;
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 1);
    ck_assert_uint_eq(res.list[0].seg, victim);
    ck_assert_int_eq(res.list[0].hint, 1);
    ck_assert_uint_eq(res.list[0].offset, at);
    char name[32];
    kvh_name(name, sizeof name, victim);
    ck_assert_str_eq(res.list[0].file, name);
    char line[4400];
    snprintf(line, sizeof line, "scrub: damage in hint file %s at offset %" PRIu64 ": ", path, at);
    ck_assert_int_eq(log_count(&the_log, line), 1);
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(a_pass_reads_no_faster_than_the_rate)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub_options so;
    kv_scrub_options_init(&so);
    so.interval_s = 0;
    so.rate = 64u << 10; /* 64 KiB/s */
    kv_scrub *sc = kv_scrub_new(s, &so);
    double t0 = mono_s();
    kv_scrub_result res;
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    double took = mono_s() - t0;
    ck_assert_uint_eq(res.problems, 0);
    double floor_s = (double)res.bytes / (double)so.rate;
    ck_assert_msg(floor_s > 0.3, "too few bytes to time: %" PRIu64, res.bytes);
    ck_assert_msg(took >= floor_s * 0.95, "read %" PRIu64 " bytes in %.3f s, faster than %u bytes/s", res.bytes,
                  took, (unsigned)so.rate);
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(a_requested_pass_runs_on_the_thread_one_at_a_time_and_stops_when_freed)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub_options so;
    kv_scrub_options_init(&so);
    so.interval_s = 0; /* no pass after start: only requested ones */
    so.rate = 64u << 10;
    kv_scrub *sc = kv_scrub_new(s, &so);
    ck_assert_int_eq(kv_scrub_request(sc), -1); /* no thread yet */
    ck_assert_int_eq(kv_scrub_start(sc), KV_OK);
    ck_assert_int_eq(kv_scrub_start(sc), KV_INVALID);
    usleep(200000);
    kv_scrub_stats st;
    kv_scrub_get_stats(sc, &st);
    ck_assert_int_eq(st.in_progress, 0);
    ck_assert_uint_eq(st.passes, 0);

    ck_assert_int_eq(kv_scrub_request(sc), 1);
    ck_assert_int_eq(kv_scrub_request(sc), 0); /* already running */
    kv_scrub_get_stats(sc, &st);
    ck_assert_int_eq(st.in_progress, 1);
    /* Faster now (CONFIG SET): the pass completes. */
    kv_scrub_set_schedule(sc, 0, 0);
    for (int i = 0; i < 500 && st.passes == 0; i++) {
        usleep(10000);
        kv_scrub_get_stats(sc, &st);
    }
    ck_assert_uint_eq(st.passes, 1);
    ck_assert_int_eq(st.in_progress, 0);
    ck_assert_uint_eq(st.rate, 0);

    /* A slow pass in progress ends when the scrub is freed. */
    kv_scrub_set_schedule(sc, 0, 4096);
    ck_assert_int_eq(kv_scrub_request(sc), 1);
    usleep(100000);
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Passes run back to back on another thread while this one writes,
 * seals, writes hint files and compacts: segments retired under a pass
 * and hint files replaced by a compaction's must never be taken for
 * damage (and ASan checks that no retired segment is read after it was
 * unmapped). */
typedef struct racer {
    kv_scrub *sc;
    int stop;
    int passes;
    uint64_t problems, segments;
    kv_scrub_problem first;
} racer;

static void *race_passes(void *arg)
{
    racer *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        kv_scrub_result res;
        ck_assert_int_eq(kv_scrub_run(r->sc, &res), KV_OK);
        if (res.problems && !r->problems) r->first = res.list[0];
        r->problems += res.problems;
        r->segments += res.segments;
        __atomic_add_fetch(&r->passes, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

START_TEST(passes_beside_writes_and_compactions_find_nothing_in_a_clean_store)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    racer r = {.sc = scrub_unlimited(s)};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, race_passes, &r), 0);
    char k[32], v[160];
    for (int round = 0; round < 12; round++) {
        for (int i = 0; i < 60; i++) {
            snprintf(k, sizeof k, "key:%d", (round * 13 + i) % 70);
            int vl = snprintf(v, sizeof v, "round-%d-%0*d", round, 40 + i, i);
            ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
        }
        ck_assert_int_eq(kv_write_hints(s, NULL), KV_OK);
        kv_compact_report cr;
        ck_assert_int_eq(kv_compact(s, &cr), KV_OK);
        ck_assert_int_eq(kv_write_hints(s, NULL), KV_OK);
    }
    /* At least a few passes overlapped the compactions. */
    for (int i = 0; i < 500 && __atomic_load_n(&r.passes, __ATOMIC_ACQUIRE) < 3; i++) usleep(10000);
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    ck_assert_int_ge(r.passes, 3);
    ck_assert_uint_gt(r.segments, 0);
    ck_assert_msg(r.problems == 0, "%" PRIu64 " problems, the first in %s at %" PRIu64 ": %s", r.problems,
                  r.first.file, r.first.offset, r.first.reason);
    ck_assert_int_eq(log_count(&the_log, "scrub: damage"), 0);
    kv_scrub_free(r.sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The race the hint read guards against, made deterministic: a segment
 * held across a compaction that replaces it (the output takes the newest
 * input's file id and gets a hint file of that name) is seen as retired,
 * its bytes stay readable, and the hint file now beside its name is not
 * handed out as its own. */
START_TEST(a_segment_held_across_a_compaction_is_retired_and_not_given_the_outputs_hint)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    uint32_t ids[64];
    size_t n = kv_sealed_list(s, ids, 64);
    kv_sealed h;
    ck_assert_int_eq(kv_sealed_hold(s, ids[n - 1], &h), KV_OK); /* the newest sealed: the output's file id */
    ck_assert_int_eq(kv_sealed_retired(s, &h), 0);
    uint8_t *hb = NULL;
    uint64_t hlen = 0;
    ck_assert_int_eq(kv_sealed_read_hint(s, &h, &hb, &hlen), KV_OK);
    uint8_t *before = hb;
    ck_assert_uint_gt(hlen, KVH_HEADER_SIZE);

    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(s, &cr), KV_OK);
    ck_assert_uint_eq(cr.output_segment, h.file_id);
    char path[4200];
    file_path(path, sizeof path, dir, h.file_id, 1);
    ck_assert_int_eq(access(path, F_OK), 0); /* the output's hint, same name */
    ck_assert_int_eq(kv_sealed_retired(s, &h), 1);
    ck_assert_int_eq(kv_sealed_read_hint(s, &h, &hb, &hlen), KV_NOT_FOUND);
    ck_assert_ptr_null(hb);
    /* Still open and mapped: its header is still there to read. */
    uint8_t hdr[KV_SEG_HEADER_SIZE];
    if (h.map)
        ck_assert_int_eq(kv_io_copy_mapped(hdr, h.map, sizeof hdr), 0);
    else
        ck_assert_int_eq(kv_io_read_full(kv_store_io(s), h.fd, hdr, sizeof hdr, 0), 0);
    ck_assert_int_eq(memcmp(hdr, "KVDS", 4), 0);
    kv_sealed_release(s, &h);
    free(before);
    /* The active segment is not handed out. */
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(kv_sealed_list(s, ids, 64), st.segments - 1);
    for (size_t i = 0; i < st.segments - 1; i++) ck_assert_uint_ne(ids[i], st.active_segment);
    ck_assert_int_eq(kv_sealed_hold(s, st.active_segment, &h), KV_NOT_FOUND);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Every kv_io call of a pass failing in turn (EIO): a failed segment read
 * is reported as "cannot read" at that segment (and marks it bad in the
 * store's stats), a failed hint read or
 * size query is logged, nothing else is taken for damage, and the store
 * serves on. Through the simulated filesystem, which has no mapping, so
 * segments are read with pread. */
START_TEST(a_failing_read_during_a_pass_is_reported_as_a_read_error_only)
{
    kv_memfs *fs = kv_memfs_new();
    kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
    kv_options o;
    kv_options_init(&o);
    o.io = kv_faultio_io(f);
    o.segment_max_bytes = 4096;
    o.log = log_to;
    o.log_arg = &the_log;
    kv_store *s = NULL;
    kvr_report rep;
    ck_assert_int_eq(kv_open("db", &o, &s, &rep), KV_OK);
    kvr_report_free(&rep);
    char k[32], v[160];
    for (int i = 0; i < 120; i++) {
        snprintf(k, sizeof k, "key:%d", i % 50);
        int vl = snprintf(v, sizeof v, "value-%d-%0*d", i, 60 + i % 80, i);
        ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
    }
    ck_assert_int_eq(kv_write_hints(s, NULL), KV_OK);
    kv_scrub *sc = scrub_unlimited(s);
    kv_scrub_result res;
    kv_faultio_arm(f, 0, 0, 0);
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 0);
    uint64_t calls = kv_faultio_calls(f);
    ck_assert_uint_gt(calls, 4);
    int read_errors = 0;
    for (uint64_t n = 1; n <= calls; n++) {
        kv_faultio_arm(f, n, EIO, 0);
        ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
        ck_assert_int_eq(kv_faultio_fired(f), 1);
        for (size_t i = 0; i < res.nlist; i++) {
            ck_assert_msg(strncmp(res.list[i].reason, "cannot read: ", 13) == 0, "call %" PRIu64 ": %s at %" PRIu64 ": %s",
                          n, res.list[i].file, res.list[i].offset, res.list[i].reason);
            ck_assert_int_eq(res.list[i].hint, 0);
            read_errors++;
        }
        ck_assert_uint_le(res.problems, 1);
    }
    kv_faultio_arm(f, 0, 0, 0);
    ck_assert_int_gt(read_errors, 0);
    ck_assert_int_ge(log_count(&the_log, "scrub: cannot read the hint file"), 1);
    /* A segment the scrub could not read is marked bad for the store, as
     * a failed GET would mark it: counted, and logged once per segment. */
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_ge(st.segments_bad, 1);
    ck_assert_int_eq(log_count(&the_log, "media error reading"), (int)st.segments_bad);
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 0);
    kv_value val;
    ck_assert_int_eq(kv_get(s, "key:7", 5, &val), KV_OK);
    kv_value_free(&val);
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    kv_faultio_free(f);
    kv_memfs_free(fs);
}
END_TEST

/* A sealed segment cut short at a record boundary has no bad record for
 * the reader to find; its missing trailer gives it away (version 2). */
START_TEST(a_sealed_segment_cut_at_a_record_boundary_is_reported_by_its_missing_trailer)
{
    char *dir = tu_tmpdir();
    kv_store *s = open_filled(dir);
    kv_scrub *sc = scrub_unlimited(s);
    uint32_t ids[64];
    size_t n = kv_sealed_list(s, ids, 64);
    uint32_t victim = ids[n / 2];
    char path[4200];
    file_path(path, sizeof path, dir, victim, 0);
    recs rs = {0};
    kvr_scan_result sr;
    ck_assert_int_eq(kvr_scan_file(kv_io_posix(), path, victim, collect, NULL, &rs, &sr, NULL), KV_OK);
    ck_assert_int_eq(sr.sealed, 1);
    ck_assert_uint_ge(rs.n, 2);
    uint64_t cut = rs.off[rs.n - 1]; /* drop the last data record and all after it */
    ck_assert_int_eq(truncate(path, (off_t)cut), 0);
    kv_scrub_result res;
    ck_assert_int_eq(kv_scrub_run(sc, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 1);
    ck_assert_uint_eq(res.list[0].seg, victim);
    ck_assert_int_eq(res.list[0].hint, 0);
    ck_assert_uint_eq(res.list[0].offset, cut);
    ck_assert_str_eq(res.list[0].reason, kvr_reason_str(KVR_NO_TRAILER));
    kv_scrub_free(sc);
    ck_assert_int_eq(kv_close(s), KV_OK);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("scrub");
    TCase *tc = tcase_create("scrub");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_clean_store_reports_nothing_and_every_sealed_segment_and_hint_is_read);
    tcase_add_test(tc, a_flipped_byte_in_a_sealed_segment_is_reported_at_its_record_once);
    tcase_add_test(tc, a_flipped_byte_in_a_record_header_is_reported_at_or_before_it);
    tcase_add_test(tc, a_flipped_byte_in_a_hint_file_is_reported_at_that_byte);
    tcase_add_test(tc, a_sealed_segment_cut_at_a_record_boundary_is_reported_by_its_missing_trailer);
    tcase_add_test(tc, a_pass_reads_no_faster_than_the_rate);
    tcase_add_test(tc, a_requested_pass_runs_on_the_thread_one_at_a_time_and_stops_when_freed);
    tcase_add_test(tc, passes_beside_writes_and_compactions_find_nothing_in_a_clean_store);
    tcase_add_test(tc, a_segment_held_across_a_compaction_is_retired_and_not_given_the_outputs_hint);
    tcase_add_test(tc, a_failing_read_during_a_pass_is_reported_as_a_read_error_only);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
