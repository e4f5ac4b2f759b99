/*
 * Durable expiry: a key found expired, on access or by the sweep, gets a
 * tombstone in the log, so that it stays gone after a restart even when
 * the wall clock has gone back. The tombstone never removes a newer
 * write of the key, one read storm costs one tombstone, the counters
 * count each key once, and in fail-stop expired keys still read as
 * absent. The store's clock is injected (kv_options.clock_ms).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store.h"
#include "testutil.h"

#define DIR "db"

static uint64_t fake_now;
static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}

static void set_now(uint64_t t)
{
    __atomic_store_n(&fake_now, t, __ATOMIC_RELAXED);
}

#define T0 1800000000000ull

static kv_store *open_io(const kv_io *io)
{
    kv_options o;
    kv_options_init(&o);
    o.io = io;
    o.clock_ms = fake_clock;
    kv_store *s;
    kvr_report rep;
    kv_status st = kv_open(DIR, &o, &s, &rep);
    ck_assert_msg(st == KV_OK, "open: %s: %s", kv_strerror(st), rep.message);
    kvr_report_free(&rep);
    return s;
}

static void expect_value(kv_store *s, const char *k, const char *v)
{
    kv_value val;
    kv_status st = kv_get(s, k, strlen(k), &val);
    ck_assert_msg(st == KV_OK, "get %s: %s", k, kv_strerror(st));
    ck_assert_uint_eq(val.len, strlen(v));
    ck_assert(memcmp(val.data, v, val.len) == 0);
    kv_value_free(&val);
}

static void expect_absent(kv_store *s, const char *k)
{
    kv_value val;
    ck_assert_int_eq(kv_get(s, k, strlen(k), &val), KV_NOT_FOUND);
}

/* "gone" expires and is read (GET answers nil); "unread" expires but
 * nobody reads it and no sweep runs. After a restart with the clock 10 s
 * earlier, before both expiries: "gone" stays gone (its tombstone), while
 * "unread" is live again, as nothing logged its expiry. */
START_TEST(key_found_expired_on_access_stays_gone_after_restart_with_clock_back)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    ck_assert_int_eq(kv_put(s, "gone", 4, "v", 1, T0 + 200, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "unread", 6, "u", 1, T0 + 200, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "keep", 4, "k", 1, 0, 0), KV_OK);
    expect_value(s, "gone", "v");
    set_now(T0 + 300);
    expect_absent(s, "gone"); /* answers at once; the tombstone follows */
    kv_expire_flush(s);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expiry_tombstones, 1);
    ck_assert_uint_eq(st.expired_on_access, 1);
    ck_assert_uint_eq(st.expiry_pending, 0);
    ck_assert_uint_eq(st.keys, 2); /* "gone" left the key directory */
    ck_assert_uint_eq(st.expires, 1);
    ck_assert_int_eq(kv_close(s), KV_OK);

    set_now(T0 - 10000);
    s = open_io(kv_memfs_io(fs));
    expect_absent(s, "gone");
    expect_value(s, "unread", "u");
    expect_value(s, "keep", "k");
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* Each reading call notes the key: MGET, EXISTS and the sequence lookup
 * WATCH uses, not only GET. */
START_TEST(every_kind_of_read_logs_the_expiry)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    ck_assert_int_eq(kv_put(s, "m", 1, "1", 1, T0 + 10, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "e", 1, "2", 1, T0 + 10, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "i", 1, "3", 1, T0 + 10, 0), KV_OK);
    set_now(T0 + 20);
    const uint8_t *keys[] = {(const uint8_t *)"m"};
    size_t klens[] = {1};
    kv_value vals[1];
    kv_status sts[1];
    ck_assert_int_eq(kv_mget(s, 1, keys, klens, vals, sts), KV_OK);
    ck_assert_int_eq(sts[0], KV_NOT_FOUND);
    ck_assert_int_eq(kv_exists(s, "e", 1, NULL), KV_NOT_FOUND);
    ck_assert_int_eq(kv_key_info(s, "i", 1, NULL, NULL), KV_NOT_FOUND);
    kv_expire_flush(s);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expiry_tombstones, 3);
    ck_assert_uint_eq(st.keys, 0);
    ck_assert_int_eq(kv_close(s), KV_OK);
    set_now(T0);
    s = open_io(kv_memfs_io(fs));
    expect_absent(s, "m");
    expect_absent(s, "e");
    expect_absent(s, "i");
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* The sweep path: nobody reads the keys. */
START_TEST(key_removed_by_the_sweep_stays_gone_after_restart_with_clock_back)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    for (int i = 0; i < 50; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "sw%d", i);
        ck_assert_int_eq(kv_put(s, k, (size_t)n, "v", 1, T0 + 200, 0), KV_OK);
    }
    ck_assert_int_eq(kv_put(s, "keep", 4, "k", 1, 0, 0), KV_OK);
    set_now(T0 + 300);
    size_t removed = 0;
    for (int round = 0; round < 100 && removed < 50; round++) removed += kv_expire_sweep(s, 20);
    ck_assert_uint_eq(removed, 50);
    ck_assert_uint_eq(kv_expire_sweep(s, 20), 0); /* each key counted once */
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.keys, 1); /* out of memory at once */
    ck_assert_uint_eq(st.expired_swept, 50);
    kv_expire_flush(s);
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expiry_tombstones, 50);
    ck_assert_uint_eq(st.expired_on_access, 0);
    ck_assert_uint_eq(st.expires, 0);
    ck_assert_int_eq(kv_close(s), KV_OK);

    set_now(T0 - 10000);
    s = open_io(kv_memfs_io(fs));
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.keys, 1);
    expect_absent(s, "sw0");
    expect_absent(s, "sw49");
    expect_value(s, "keep", "k");
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* Many reads of one expired key: one tombstone, counted once. */
START_TEST(read_storm_on_an_expired_key_writes_one_tombstone)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    ck_assert_int_eq(kv_put(s, "hot", 3, "v", 1, T0 + 10, 0), KV_OK);
    kv_stats before;
    kv_get_stats(s, &before);
    set_now(T0 + 20);
    for (int i = 0; i < 2000; i++) expect_absent(s, "hot");
    kv_expire_flush(s);
    for (int i = 0; i < 100; i++) expect_absent(s, "hot");
    kv_expire_flush(s);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expiry_tombstones, 1);
    ck_assert_uint_eq(st.expired_on_access, 1);
    ck_assert_uint_eq(st.records, before.records + 1);
    ck_assert_uint_eq(kv_expire_sweep(s, 100), 0);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* Two readers storm an expired key while the expiry transaction writes
 * its tombstone: a reader whose lookup saw the put before the tombstone
 * reached the key directory, but whose note arrives after the transaction
 * completed, must not cost a second tombstone. Many rounds, since the
 * window is a few instructions wide. */
typedef struct storm_arg {
    kv_store *s;
    const char *key;
} storm_arg;

static void *storm_reader(void *p)
{
    storm_arg *a = p;
    for (int i = 0; i < 400; i++) expect_absent(a->s, a->key);
    return NULL;
}

START_TEST(concurrent_read_storms_write_one_tombstone_per_expired_put)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    const int rounds = 150;
    for (int r = 0; r < rounds; r++) {
        char k[16];
        snprintf(k, sizeof k, "storm%d", r);
        uint64_t now = T0 + (uint64_t)r * 100;
        set_now(now);
        ck_assert_int_eq(kv_put(s, k, strlen(k), "v", 1, now + 10, 0), KV_OK);
        set_now(now + 20);
        storm_arg a = {s, k};
        pthread_t th[2];
        for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, storm_reader, &a), 0);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        kv_expire_flush(s);
    }
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expiry_tombstones, (uint64_t)rounds);
    ck_assert_uint_eq(st.expired_on_access, (uint64_t)rounds);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* A transaction finds "k" expired (its read notes it; the expiry
 * transaction is queued behind it, so runs in a later group) and writes
 * "k" again in the same transaction: the tombstone must not delete the
 * new value (the key directory's sequence number differs). */
static kv_status tx_reads_expired_then_rewrites(kv_txn *t, void *arg)
{
    (void)arg;
    kv_value v;
    ck_assert_int_eq(kv_txn_get(t, "k", 1, &v), KV_NOT_FOUND);
    return kv_txn_put(t, "k", 1, "new", 3, 0, 0);
}

/* A transaction that waits until the test has queued a write of "j"
 * behind it, then finds "j" expired: the expiry transaction lands behind
 * that write, in the same group (the group's overlay has "j"). */
typedef struct gate {
    int started, queued;
} gate;

static kv_status tx_notes_after_a_queued_write(kv_txn *t, void *arg)
{
    gate *g = arg;
    __atomic_store_n(&g->started, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&g->queued, __ATOMIC_ACQUIRE)) sched_yield();
    uint64_t e;
    ck_assert_int_eq(kv_txn_key_info(t, "j", 1, &e, NULL), KV_NOT_FOUND);
    return KV_OK;
}

static void tx_done(void *arg, kv_status st)
{
    __atomic_store_n((kv_status *)arg, st, __ATOMIC_RELEASE);
}

START_TEST(tombstone_is_not_written_over_a_newer_write)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    ck_assert_int_eq(kv_put(s, "k", 1, "old", 3, T0 + 10, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "j", 1, "old", 3, T0 + 10, 0), KV_OK);
    set_now(T0 + 20);
    kv_status res = -1;
    ck_assert_int_eq(kv_submit(s, tx_reads_expired_then_rewrites, NULL, tx_done, &res), KV_OK);
    ck_assert_int_eq(kv_sync(s), KV_OK);
    ck_assert_int_eq(__atomic_load_n(&res, __ATOMIC_ACQUIRE), KV_OK);

    gate g = {0, 0};
    kv_status res2 = -1, res3 = -1;
    ck_assert_int_eq(kv_submit(s, tx_notes_after_a_queued_write, &g, tx_done, &res2), KV_OK);
    while (!__atomic_load_n(&g.started, __ATOMIC_ACQUIRE)) sched_yield();
    kv_batch *b = kv_batch_new();
    ck_assert_int_eq(kv_batch_put(b, "j", 1, "new", 3, 0, 0), KV_OK);
    ck_assert_int_eq(kv_write_async(s, b, tx_done, &res3), KV_OK);
    __atomic_store_n(&g.queued, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&res2, __ATOMIC_ACQUIRE) == -1) sched_yield(); /* it has noted "j" */
    ck_assert_int_eq(res2, KV_OK);
    kv_expire_flush(s);
    ck_assert_int_eq(__atomic_load_n(&res3, __ATOMIC_ACQUIRE), KV_OK);
    kv_batch_free(b);

    expect_value(s, "k", "new");
    expect_value(s, "j", "new");
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expired_on_access, 0);
    ck_assert_uint_eq(st.expiry_tombstones, 0);
    ck_assert_int_eq(kv_close(s), KV_OK);
    set_now(T0 - 10000);
    s = open_io(kv_memfs_io(fs));
    expect_value(s, "k", "new");
    expect_value(s, "j", "new");
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* Writes fail-stopped: an expired key still reads as absent at once, no
 * tombstone is attempted, the sweep still takes it out of memory, and
 * closing does not hang. */
START_TEST(expiry_answers_nil_in_failstop)
{
    kv_memfs *fs = kv_memfs_new();
    kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
    set_now(T0);
    kv_store *s = open_io(kv_faultio_io(f));
    ck_assert_int_eq(kv_put(s, "a", 1, "v", 1, T0 + 10, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "b", 1, "v", 1, T0 + 10, 0), KV_OK);
    kv_faultio_arm(f, 1, EIO, 1);
    ck_assert_int_eq(kv_put(s, "c", 1, "v", 1, 0, 0), EIO);
    char why[512];
    ck_assert_int_eq(kv_failstop_reason(s, why, sizeof why), 1);
    set_now(T0 + 20);
    expect_absent(s, "a");
    ck_assert_int_eq(kv_exists(s, "b", 1, NULL), KV_NOT_FOUND);
    kv_expire_flush(s); /* returns: nothing can be written */
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.expiry_pending, 0);
    ck_assert_uint_eq(st.expiry_tombstones, 0);
    ck_assert_uint_eq(kv_expire_sweep(s, 100), 2);
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.keys, 0);
    expect_absent(s, "a");
    kv_close(s);
    kv_faultio_free(f);
    kv_memfs_free(fs);
}
END_TEST

/* A tombstone noted just before close is written by kv_close. */
START_TEST(close_writes_the_tombstones_noted_before_it)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0);
    kv_store *s = open_io(kv_memfs_io(fs));
    for (int i = 0; i < 300; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "c%d", i);
        ck_assert_int_eq(kv_put(s, k, (size_t)n, "v", 1, T0 + 10, 0), KV_OK);
    }
    set_now(T0 + 20);
    for (int i = 0; i < 300; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "c%d", i);
        ck_assert_int_eq(kv_exists(s, k, (size_t)n, NULL), KV_NOT_FOUND);
    }
    ck_assert_int_eq(kv_close(s), KV_OK);
    set_now(T0);
    s = open_io(kv_memfs_io(fs));
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.keys, 0);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* Readers, the sweep and a writer race on keys that keep expiring and
 * being written again: no tombstone may ever remove a newer write. */
#define RACE_KEYS 32
#define RACE_ROUNDS 40 /* even: the last round (odd) writes values without expiry */

typedef struct race {
    kv_store *s;
    int done;
} race;

static void race_key(char *k, size_t cap, int i)
{
    snprintf(k, cap, "r%d", i);
}

static void *race_writer(void *arg)
{
    race *r = arg;
    for (int round = 0; round < RACE_ROUNDS; round++)
        for (int i = 0; i < RACE_KEYS; i++) {
            char k[16], v[32];
            race_key(k, sizeof k, i);
            int n = snprintf(v, sizeof v, "v%d", round);
            /* Even rounds write values that are expired already. */
            uint64_t exp = round % 2 == 0 ? T0 + 15 : 0;
            ck_assert_int_eq(kv_put(r->s, k, strlen(k), v, (size_t)n, exp, 0), KV_OK);
        }
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *race_reader(void *arg)
{
    race *r = arg;
    while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE))
        for (int i = 0; i < RACE_KEYS; i++) {
            char k[16];
            race_key(k, sizeof k, i);
            kv_value v;
            if (kv_get(r->s, k, strlen(k), &v) == KV_OK) kv_value_free(&v);
            kv_exists(r->s, k, strlen(k), NULL);
        }
    return NULL;
}

static void *race_sweeper(void *arg)
{
    race *r = arg;
    while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) kv_expire_sweep(r->s, 8);
    return NULL;
}

START_TEST(racing_rewrites_are_never_deleted_by_an_expiry_tombstone)
{
    kv_memfs *fs = kv_memfs_new();
    set_now(T0 + 20);
    kv_store *s = open_io(kv_memfs_io(fs));
    race r = {s, 0};
    pthread_t w, rd[2], sw;
    ck_assert_int_eq(pthread_create(&rd[0], NULL, race_reader, &r), 0);
    ck_assert_int_eq(pthread_create(&rd[1], NULL, race_reader, &r), 0);
    ck_assert_int_eq(pthread_create(&sw, NULL, race_sweeper, &r), 0);
    ck_assert_int_eq(pthread_create(&w, NULL, race_writer, &r), 0);
    pthread_join(w, NULL);
    pthread_join(rd[0], NULL);
    pthread_join(rd[1], NULL);
    pthread_join(sw, NULL);
    kv_expire_flush(s);
    char last[16];
    snprintf(last, sizeof last, "v%d", RACE_ROUNDS - 1);
    for (int i = 0; i < RACE_KEYS; i++) {
        char k[16];
        race_key(k, sizeof k, i);
        expect_value(s, k, last);
    }
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.keys, RACE_KEYS);
    ck_assert_uint_eq(st.expiry_pending, 0);
    ck_assert_int_eq(kv_close(s), KV_OK);
    set_now(T0);
    s = open_io(kv_memfs_io(fs));
    for (int i = 0; i < RACE_KEYS; i++) {
        char k[16];
        race_key(k, sizeof k, i);
        expect_value(s, k, last);
    }
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("expiry");
    TCase *tc = tcase_create("durable");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, key_found_expired_on_access_stays_gone_after_restart_with_clock_back);
    tcase_add_test(tc, every_kind_of_read_logs_the_expiry);
    tcase_add_test(tc, key_removed_by_the_sweep_stays_gone_after_restart_with_clock_back);
    tcase_add_test(tc, read_storm_on_an_expired_key_writes_one_tombstone);
    tcase_add_test(tc, concurrent_read_storms_write_one_tombstone_per_expired_put);
    tcase_add_test(tc, tombstone_is_not_written_over_a_newer_write);
    tcase_add_test(tc, expiry_answers_nil_in_failstop);
    tcase_add_test(tc, close_writes_the_tombstones_noted_before_it);
    tcase_add_test(tc, racing_rewrites_are_never_deleted_by_an_expiry_tombstone);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
