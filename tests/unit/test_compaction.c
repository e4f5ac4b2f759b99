/*
 * Compaction: it keeps exactly the live keys while reclaiming the space of
 * overwritten, deleted and expired records; it loses nothing written while
 * it runs; a power cut at any of its sync points, or any of its I/O calls
 * failing, leaves a directory that recovers to the same keys and a store
 * that keeps working.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_store.h"
#include "kvr_hint.h"
#include "kvr_reader.h"
#include "testutil.h"

#define DIR "db"

/* The model holds no expired key; sweep them from the key directory
 * first, so its key count compares. */
static void assert_equals(kv_store *s, const tu_model *m)
{
    kv_expire_sweep(s, 100000);
    tu_assert_store_equals(s, m);
}

static uint64_t fake_now = 1800000000000ull;
static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static kv_store *open_on(const kv_io *io)
{
    kv_options o;
    kv_options_init(&o);
    o.io = io;
    o.segment_max_bytes = 4096;
    o.clock_ms = fake_clock;
    kv_store *s;
    kvr_report rep;
    kv_status st = kv_open(DIR, &o, &s, &rep);
    ck_assert_msg(st == KV_OK, "open: %s: %s", kv_strerror(st), rep.message);
    kvr_report_free(&rep);
    return s;
}

/* Overwrites, deletes, batches and expiring keys over 20 keys; returns the
 * model of what is live. */
static void churn(kv_store *s, tu_model *m, int rounds)
{
    char k[16], v[200];
    for (int i = 0; i < rounds; i++) {
        int key = (i * 7) % 20;
        snprintf(k, sizeof k, "key%d", key);
        int vl = snprintf(v, sizeof v, "value-%d-%0*d", i, 20 + i % 90, i);
        if (i % 11 == 5) {
            kv_status st = kv_delete(s, k, strlen(k));
            ck_assert(st == KV_OK || st == KV_NOT_FOUND);
            tu_model_del(m, k, strlen(k));
        } else if (i % 13 == 7) {
            kv_batch *b = kv_batch_new();
            char k2[16];
            snprintf(k2, sizeof k2, "key%d", (key + 3) % 20);
            kv_batch_put(b, k, strlen(k), v, (size_t)vl, 0, 0);
            kv_batch_put(b, k2, strlen(k2), v, (size_t)vl, 0, 0);
            ck_assert_int_eq(kv_write(s, b), KV_OK);
            kv_batch_free(b);
            tu_model_put(m, k, strlen(k), v, (size_t)vl);
            tu_model_put(m, k2, strlen(k2), v, (size_t)vl);
        } else if (i % 17 == 3) {
            /* A key of its own that expires at the next step of the fake
             * clock (and a put that stays). */
            char ek[16];
            snprintf(ek, sizeof ek, "exp%d", i);
            ck_assert_int_eq(kv_put(s, ek, strlen(ek), v, (size_t)vl, fake_now + 10, 0), KV_OK);
            ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
            tu_model_put(m, k, strlen(k), v, (size_t)vl);
        } else {
            ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
            tu_model_put(m, k, strlen(k), v, (size_t)vl);
        }
    }
    fake_now += 1000; /* the expiring puts are now expired */
}

START_TEST(compaction_keeps_every_live_key_and_reclaims_space)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s = open_on(kv_memfs_io(fs));
    tu_model m;
    tu_model_init(&m);
    churn(s, &m, 400);
    kv_stats before, after;
    kv_get_stats(s, &before);
    ck_assert_uint_ge(before.segments, 5);
    kv_compact_report rep;
    ck_assert_int_eq(kv_compact(s, &rep), KV_OK);
    ck_assert_uint_eq(rep.segments_in, before.segments - 1);
    ck_assert_uint_lt(rep.bytes_after, rep.bytes_before / 2);
    ck_assert_uint_gt(rep.dead_dropped, 100);
    ck_assert_uint_gt(rep.tombstones_dropped, 10);
    ck_assert_uint_gt(rep.expired_dropped, 0);
    kv_get_stats(s, &after);
    ck_assert_uint_eq(after.segments, 2);
    ck_assert_uint_lt(after.dead_bytes, before.dead_bytes / 4);
    ck_assert_uint_eq(after.live_bytes + after.dead_bytes + 32u * after.segments, after.log_bytes);
    assert_equals(s, &m);
    /* Writes go on, and a second compaction folds in the first's output. */
    churn(s, &m, 100);
    ck_assert_int_eq(kv_compact(s, &rep), KV_OK);
    assert_equals(s, &m);
    ck_assert_int_eq(kv_close(s), KV_OK);
    /* Only the output and the newer segments are left on disk. */
    char p1[64];
    tu_seg_path(p1, sizeof p1, DIR, 1);
    ck_assert(!kv_memfs_exists(fs, p1));
    s = open_on(kv_memfs_io(fs));
    assert_equals(s, &m);
    ck_assert_uint_eq(kv_recovery_report(s)->problems, 0);
    kv_close(s);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(compaction_without_free_space_fails_cleanly_before_writing)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s = open_on(kv_memfs_io(fs));
    tu_model m;
    tu_model_init(&m);
    churn(s, &m, 300);
    kv_memfs_set_free_space(fs, 100);
    kv_compact_report rep;
    ck_assert_int_eq(kv_compact(s, &rep), ENOSPC);
    ck_assert_ptr_nonnull(strstr(rep.message, "not enough free space"));
    char tmp[64];
    kv_stats st;
    kv_get_stats(s, &st);
    tu_seg_path(tmp, sizeof tmp, DIR, st.active_segment - 1);
    size_t tl = strlen(tmp);
    snprintf(tmp + tl, sizeof tmp - tl, ".compact");
    ck_assert(!kv_memfs_exists(fs, tmp)); /* nothing written */
    ck_assert_int_eq(st.failstop, 0);
    ck_assert_int_eq(kv_put(s, "still", 5, "writes", 6, 0, 0), KV_OK);
    tu_model_put(&m, "still", 5, "writes", 6);
    assert_equals(s, &m);
    kv_memfs_set_free_space(fs, UINT64_MAX);
    ck_assert_int_eq(kv_compact(s, &rep), KV_OK);
    ck_assert_uint_gt(rep.segments_in, 1);
    assert_equals(s, &m);
    kv_close(s);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(nothing_to_compact_is_not_an_error)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s = open_on(kv_memfs_io(fs));
    ck_assert_int_eq(kv_put(s, "a", 1, "1", 1, 0, 0), KV_OK);
    kv_compact_report rep;
    ck_assert_int_eq(kv_compact(s, &rep), KV_OK);
    ck_assert_uint_eq(rep.segments_in, 0);
    ck_assert_ptr_nonnull(strstr(rep.message, "nothing to compact"));
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* ---- writers racing with compactions ---- */

typedef struct racer {
    kv_store *s;
    int id, ops;
    int vals[32];
    int finished;
} racer;

static void *race_writer(void *arg)
{
    racer *w = arg;
    char k[32], v[128];
    for (int i = 0; i < w->ops; i++) {
        int key = (i * 5 + w->id) % 32;
        snprintf(k, sizeof k, "r%d:%d", w->id, key);
        if (i % 9 == 4) {
            kv_status st = kv_delete(w->s, k, strlen(k));
            ck_assert(st == KV_OK || st == KV_NOT_FOUND);
            w->vals[key] = -1;
        } else {
            int vl = snprintf(v, sizeof v, "%d:%d:%0*d", w->id, i, 10 + i % 60, i);
            ck_assert_int_eq(kv_put(w->s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
            w->vals[key] = i;
        }
        /* Read back something of our own: never lost, never corrupt. */
        kv_value val;
        kv_status st = kv_get(w->s, k, strlen(k), &val);
        ck_assert_int_eq(st, w->vals[key] < 0 ? KV_NOT_FOUND : KV_OK);
        kv_value_free(&val);
    }
    __atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void check_racers(kv_store *s, racer *ws, int n)
{
    char k[32], v[128];
    for (int t = 0; t < n; t++)
        for (int key = 0; key < 32; key++) {
            snprintf(k, sizeof k, "r%d:%d", t, key);
            kv_value val;
            kv_status st = kv_get(s, k, strlen(k), &val);
            if (ws[t].vals[key] < 0) {
                ck_assert_int_eq(st, KV_NOT_FOUND);
                continue;
            }
            ck_assert_int_eq(st, KV_OK);
            int i = ws[t].vals[key];
            int vl = snprintf(v, sizeof v, "%d:%d:%0*d", t, i, 10 + i % 60, i);
            ck_assert_uint_eq(val.len, (size_t)vl);
            ck_assert(memcmp(val.data, v, val.len) == 0);
            kv_value_free(&val);
        }
}

START_TEST(compactions_racing_with_writers_lose_nothing)
{
    char *dir = tu_tmpdir();
    kv_options o;
    kv_options_init(&o);
    o.segment_max_bytes = 8192;
    o.fsync = KV_FSYNC_NO;
    kv_store *s;
    ck_assert_int_eq(kv_open(dir, &o, &s, NULL), KV_OK);
    enum { N = 4 };
    racer ws[N];
    pthread_t th[N];
    for (int t = 0; t < N; t++) {
        memset(&ws[t], 0, sizeof ws[t]);
        ws[t].s = s;
        ws[t].id = t;
        ws[t].ops = 3000;
        for (int k = 0; k < 32; k++) ws[t].vals[k] = -1;
        ck_assert_int_eq(pthread_create(&th[t], NULL, race_writer, &ws[t]), 0);
    }
    /* Compact over and over while the writers run (bounded). */
    int runs = 0;
    for (int i = 0; i < 5000; i++) {
        kv_compact_report rep;
        kv_status st = kv_compact(s, &rep);
        ck_assert_msg(st == KV_OK, "compaction: %s", rep.message);
        if (rep.segments_in) runs++;
        int done = 1;
        for (int t = 0; t < N; t++) done &= __atomic_load_n(&ws[t].finished, __ATOMIC_ACQUIRE);
        if (done) break;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    for (int t = 0; t < N; t++) pthread_join(th[t], NULL);
    printf("compaction race: %d compactions while 4 threads wrote 12000 operations\n", runs);
    ck_assert_int_gt(runs, 3);
    check_racers(s, ws, N);
    ck_assert_int_eq(kv_close(s), KV_OK);
    ck_assert_int_eq(kv_open(dir, &o, &s, NULL), KV_OK);
    check_racers(s, ws, N);
    ck_assert_uint_eq(kv_recovery_report(s)->problems, 0);
    kv_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

typedef struct compact_args {
    kv_store *s;
    kv_compact_report *rep;
    kv_status *st;
} compact_args;

static void *compact_thread(void *arg)
{
    compact_args *a = arg;
    *a->st = kv_compact(a->s, a->rep);
    return NULL;
}

/* A compaction moves keys to its output in steps (KV_SWITCH_STEP keys per
 * hold of the write lock), so readers and writers run between them: every
 * key stays readable with its latest value the whole time, and a key
 * written during the switch keeps the newer value. */
typedef struct step_reader {
    kv_store *s;
    int nkeys;
    int stop;
    long reads, wrong;
} step_reader;

static void *step_read(void *arg)
{
    step_reader *r = arg;
    char k[32], want[64];
    unsigned x = 99;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        x = x * 1103515245u + 12345u;
        int key = (int)((x >> 8) % (unsigned)r->nkeys);
        snprintf(k, sizeof k, "step:%06d", key);
        kv_value v;
        kv_status st = kv_get(r->s, k, strlen(k), &v);
        /* Keys below nkeys/2 are stable; the others may be rewritten
         * ("new:...") by the main thread meanwhile. */
        int n = snprintf(want, sizeof want, "value-%06d-stable", key);
        if (st != KV_OK || (key < r->nkeys / 2 && (v.len != (size_t)n || memcmp(v.data, want, (size_t)n))))
            r->wrong++;
        if (st == KV_OK) kv_value_free(&v);
        r->reads++;
    }
    return NULL;
}

START_TEST(readers_see_every_key_while_a_compaction_moves_them_in_steps)
{
    char *dir = tu_tmpdir();
    kv_options o;
    kv_options_init(&o);
    o.segment_max_bytes = 64 * 1024;
    o.fsync = KV_FSYNC_NO;
    kv_store *s;
    ck_assert_int_eq(kv_open(dir, &o, &s, NULL), KV_OK);
    enum { NKEYS = 20000 };
    char k[32], v[64];
    for (int round = 0; round < 2; round++) /* the first round becomes dead */
        for (int i = 0; i < NKEYS; i++) {
            snprintf(k, sizeof k, "step:%06d", i);
            int n = snprintf(v, sizeof v, round ? "value-%06d-stable" : "old-%06d", i);
            ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)n, 0, 0), KV_OK);
        }
    ck_assert_int_eq(kv_seal(s), KV_OK);
    step_reader rd[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        rd[t] = (step_reader){s, NKEYS, 0, 0, 0};
        ck_assert_int_eq(pthread_create(&th[t], NULL, step_read, &rd[t]), 0);
    }
    /* Rewrite the upper half while the compaction runs. */
    kv_compact_report rep;
    kv_status cst = KV_OK;
    int rewritten = 0;
    pthread_t cth;
    compact_args ca = {s, &rep, &cst};
    ck_assert_int_eq(pthread_create(&cth, NULL, compact_thread, &ca), 0);
    for (int i = NKEYS / 2; i < NKEYS; i += 3) {
        snprintf(k, sizeof k, "step:%06d", i);
        int n = snprintf(v, sizeof v, "new-%06d", i);
        ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)n, 0, 0), KV_OK);
        rewritten++;
    }
    pthread_join(cth, NULL);
    for (int t = 0; t < 2; t++) {
        __atomic_store_n(&rd[t].stop, 1, __ATOMIC_RELEASE);
        pthread_join(th[t], NULL);
        ck_assert_int_eq(rd[t].wrong, 0);
        ck_assert_int_gt(rd[t].reads, 0);
    }
    ck_assert_int_eq(cst, KV_OK);
    ck_assert_uint_ge(rep.records_copied, NKEYS / 2); /* several steps */
    /* Every key has its latest value, now and after a restart. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < NKEYS; i++) {
            snprintf(k, sizeof k, "step:%06d", i);
            int n = i >= NKEYS / 2 && (i - NKEYS / 2) % 3 == 0 ? snprintf(v, sizeof v, "new-%06d", i)
                                                                : snprintf(v, sizeof v, "value-%06d-stable", i);
            kv_value got;
            ck_assert_int_eq(kv_get(s, k, strlen(k), &got), KV_OK);
            ck_assert_uint_eq(got.len, (size_t)n);
            ck_assert(memcmp(got.data, v, (size_t)n) == 0);
            kv_value_free(&got);
        }
        ck_assert_int_eq(kv_close(s), KV_OK);
        ck_assert_int_eq(kv_open(dir, &o, &s, NULL), KV_OK);
    }
    ck_assert_uint_gt(rewritten, 0);
    kv_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- power cuts during a compaction ---- */

typedef struct cut_states {
    kv_memfs **fs;
    size_t n, cap;
} cut_states;

static void take_states(void *arg, kv_memfs *fs, const char *what)
{
    (void)what;
    cut_states *c = arg;
    for (int v = 0; v < 4; v++) {
        kv_crash_spec spec = {v == 1 ? -1 : 0, v >= 2 ? KV_TEAR_ZERO : KV_TEAR_NONE, 512, 1, v % 2, 7};
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 64;
            c->fs = realloc(c->fs, c->cap * sizeof *c->fs);
        }
        c->fs[c->n++] = kv_memfs_crash(fs, &spec);
    }
}

START_TEST(a_power_cut_at_any_sync_point_of_a_compaction_recovers_the_same_keys)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s = open_on(kv_memfs_io(fs));
    tu_model m;
    tu_model_init(&m);
    churn(s, &m, 300);
    cut_states c = {0};
    kv_memfs_set_sync_hook(fs, take_states, &c);
    kv_compact_report rep;
    ck_assert_int_eq(kv_compact(s, &rep), KV_OK);
    kv_memfs_set_sync_hook(fs, NULL, NULL);
    ck_assert_uint_gt(rep.segments_in, 2);
    kv_close(s);
    ck_assert_uint_ge(c.n, 8);
    for (size_t i = 0; i < c.n; i++) {
        kv_store *r = open_on(kv_memfs_io(c.fs[i]));
        assert_equals(r, &m);
        ck_assert_uint_eq(kv_recovery_report(r)->problems, 0);
        kv_close(r);
        /* Recovery is idempotent here too. */
        r = open_on(kv_memfs_io(c.fs[i]));
        assert_equals(r, &m);
        kv_close(r);
        kv_memfs_free(c.fs[i]);
    }
    printf("compaction power cuts: %zu crash states, all recovered to the same keys\n", c.n);
    free(c.fs);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(any_io_call_of_a_compaction_failing_leaves_a_working_store)
{
    uint64_t n;
    size_t failed = 0, read_failed = 0;
    for (n = 1;; n++) {
        kv_memfs *fs = kv_memfs_new();
        kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
        kv_store *s = open_on(kv_faultio_io(f));
        tu_model m;
        tu_model_init(&m);
        churn(s, &m, 200);
        kv_faultio_arm(f, n, n % 2 ? EIO : ENOSPC, 0);
        kv_compact_report rep;
        kv_status st = kv_compact(s, &rep);
        int fired = kv_faultio_fired(f);
        kv_faultio_arm(f, 0, 0, 0);
        if (st != KV_OK) {
            failed++;
            ck_assert_msg(rep.message[0] != 0, "a failed compaction says why");
        }
        /* A failed read inside the compaction is its own failure, never
         * fail-stop; the store keeps taking writes. */
        kv_stats stt;
        kv_get_stats(s, &stt);
        ck_assert_int_eq(stt.failstop, 0);
        /* An input it could not read (EIO) is marked bad, as a failed GET
         * would mark it; no other failure marks anything. */
        if (st == EIO && strncmp(rep.message, "cannot read ", 12) == 0) {
            ck_assert_uint_eq(stt.segments_bad, 1);
            read_failed++;
        } else if (n % 2 == 0) {
            ck_assert_uint_eq(stt.segments_bad, 0);
        }
        ck_assert_int_eq(kv_put(s, "after", 5, "x", 1, 0, 0), KV_OK);
        tu_model_put(&m, "after", 5, "x", 1);
        assert_equals(s, &m);
        kv_close(s);
        kv_crash_spec drop = {0, KV_TEAR_NONE, 512, 0, 0, 1};
        kv_memfs *cut = kv_memfs_crash(fs, &drop);
        kv_store *r = open_on(kv_memfs_io(cut));
        assert_equals(r, &m);
        kv_close(r);
        kv_memfs_free(cut);
        r = open_on(kv_memfs_io(fs));
        assert_equals(r, &m);
        kv_close(r);
        tu_model_free(&m);
        kv_faultio_free(f);
        kv_memfs_free(fs);
        if (!fired) break;
        ck_assert_uint_lt(n, 10000);
    }
    printf("compaction fault injection: each of %llu I/O calls failed in turn, %zu compactions failed cleanly\n",
           (unsigned long long)(n - 1), failed);
    ck_assert_uint_gt(failed, 5);
    ck_assert_uint_gt(read_failed, 0);
}
END_TEST

/* Bytes "dir/NNNNNNNNNN.hint" of segment file id, or NULL if none. */
static uint8_t *read_hint(kv_memfs *fs, uint32_t id, size_t *len)
{
    char path[64];
    snprintf(path, sizeof path, "%s/%010u.hint", DIR, id);
    uint8_t *b = NULL;
    return kv_memfs_read(fs, path, &b, len) == 0 ? b : NULL;
}

/* Every hint file on fs is what kvr_hint_build makes from its segment's bytes
 * held whole in memory. Returns how many were compared. */
static int hints_match_whole_segment_builds(kv_memfs *fs)
{
    int compared = 0;
    for (uint32_t id = 1; id < 64; id++) {
        size_t hlen, slen, wlen;
        uint8_t *hint = read_hint(fs, id, &hlen), *seg = NULL, *want = NULL;
        if (!hint) continue;
        char sp[64];
        tu_seg_path(sp, sizeof sp, DIR, id);
        ck_assert_int_eq(kv_memfs_read(fs, sp, &seg, &slen), 0);
        ck_assert_int_eq(kvr_hint_build(seg, slen, id, &want, &wlen), KV_OK);
        ck_assert_msg(wlen == hlen && memcmp(want, hint, hlen) == 0,
                      "the hint of segment %u differs from the one built from its whole bytes", id);
        free(want);
        free(seg);
        free(hint);
        compared++;
    }
    return compared;
}

/* Segments of 8 MiB, eight times the reader's window (KVR_WINDOW_DEFAULT):
 * the hint writer, compaction and recovery read them through many window
 * refills, so any key kept by pointer after its window moved would show
 * up as a wrong value, a missing key or a different hint. */
START_TEST(segments_many_windows_long_keep_every_value_through_hints_compaction_and_reopen)
{
    kv_memfs *fs = kv_memfs_new();
    kv_options o;
    kv_options_init(&o);
    o.io = kv_memfs_io(fs);
    o.segment_max_bytes = 4u << 20; /* four windows */
    o.clock_ms = fake_clock;
    o.fsync = KV_FSYNC_NO; /* about reading, not syncing: the simulator copies a file at each sync */
    kv_store *s;
    ck_assert_int_eq(kv_open(DIR, &o, &s, NULL), KV_OK);
    tu_model m;
    tu_model_init(&m);
    char k[48], v[1300];
    /* Three passes over 8000 keys of ~1,100 bytes each (about 13 MiB): the
     * second overwrites half of them, the third deletes every seventh. */
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < 8000; i++) {
            int kl = snprintf(k, sizeof k, "key-%d-%.*s", i, i % 23, "abcdefghijklmnopqrstuvw");
            if (pass == 2 && i % 7 == 0) {
                ck_assert_int_eq(kv_delete(s, k, (size_t)kl), KV_OK);
                tu_model_del(&m, k, (size_t)kl);
                continue;
            }
            if (pass == 2 || (pass == 1 && i % 2)) continue;
            int vl = snprintf(v, sizeof v, "v%d-%d-%0*d", pass, i, 1000 + i % 150, i);
            ck_assert_int_eq(kv_put(s, k, (size_t)kl, v, (size_t)vl, 0, 0), KV_OK);
            tu_model_put(&m, k, (size_t)kl, v, (size_t)vl);
        }
    }
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_ge(st.segments, 3);
    uint32_t written = 0;
    ck_assert_int_eq(kv_write_hints(s, &written), KV_OK);
    ck_assert_uint_ge(written, 2);
    ck_assert_int_ge(hints_match_whole_segment_builds(fs), 2);
    kv_compact_report rep;
    ck_assert_int_eq(kv_compact(s, &rep), KV_OK);
    ck_assert_uint_gt(rep.bytes_after, 4 * KVR_WINDOW_DEFAULT);
    assert_equals(s, &m);
    ck_assert_int_ge(hints_match_whole_segment_builds(fs), 1); /* the output's, written through the window */
    ck_assert_int_eq(kv_close(s), KV_OK);
    /* Reopened from the output's hint, then by scanning every segment. */
    for (int hints = 1; hints >= 0; hints--) {
        o.hint_files = hints;
        ck_assert_int_eq(kv_open(DIR, &o, &s, NULL), KV_OK);
        ck_assert_uint_eq(kv_recovery_report(s)->problems, 0);
        if (hints)
            ck_assert_uint_ge(kv_recovery_report(s)->hints_used, 1);
        else
            ck_assert_uint_eq(kv_recovery_report(s)->hints_used, 0);
        assert_equals(s, &m);
        ck_assert_int_eq(kv_close(s), KV_OK);
    }
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("compaction");
    TCase *tc = tcase_create("compaction");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, compaction_keeps_every_live_key_and_reclaims_space);
    tcase_add_test(tc, nothing_to_compact_is_not_an_error);
    tcase_add_test(tc, compaction_without_free_space_fails_cleanly_before_writing);
    tcase_add_test(tc, compactions_racing_with_writers_lose_nothing);
    tcase_add_test(tc, readers_see_every_key_while_a_compaction_moves_them_in_steps);
    tcase_add_test(tc, a_power_cut_at_any_sync_point_of_a_compaction_recovers_the_same_keys);
    tcase_add_test(tc, any_io_call_of_a_compaction_failing_leaves_a_working_store);
    tcase_add_test(tc, segments_many_windows_long_keep_every_value_through_hints_compaction_and_reopen);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
