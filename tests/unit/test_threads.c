/*
 * Concurrency: many threads putting, deleting and getting at once agree
 * with a per-thread model (each thread owns its keys, so it must read its
 * own writes exactly), reads of other threads' keys are never corrupt,
 * and group commit really groups: under fsync=always with 8 writers the
 * number of writes per fdatasync is reported, and with a disk that takes
 * a while to sync it must be well above one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_store.h"
#include "testutil.h"

#define THREADS 8
#define KEYS 64

typedef struct worker {
    kv_store *s;
    int id;
    int ops;
    int vals[KEYS]; /* -1: absent */
    int errors;
} worker;

static void make_val(char *v, size_t cap, int tid, int key, int ver)
{
    snprintf(v, cap, "t%d:k%d:v%d:%0*d", tid, key, ver, (ver % 50) + 1, ver);
}

static void *work(void *arg)
{
    worker *w = arg;
    uint32_t x = (uint32_t)w->id * 2654435761u + 1;
    char k[32], v[128], ok[32];
    for (int i = 0; i < w->ops; i++) {
        x = x * 1664525u + 1013904223u;
        int key = (int)((x >> 8) % KEYS), kind = (int)((x >> 20) % 10);
        int kn = snprintf(k, sizeof k, "t%d:k%d", w->id, key);
        if (kind < 5) {
            make_val(v, sizeof v, w->id, key, i);
            if (kv_put(w->s, k, (size_t)kn, v, strlen(v), 0, 0) != KV_OK) w->errors++;
            w->vals[key] = i;
        } else if (kind < 6) {
            kv_status st = kv_delete(w->s, k, (size_t)kn);
            if (st != (w->vals[key] >= 0 ? KV_OK : KV_NOT_FOUND)) w->errors++;
            w->vals[key] = -1;
        } else if (kind < 9) {
            kv_value val;
            kv_status st = kv_get(w->s, k, (size_t)kn, &val);
            if (w->vals[key] < 0) {
                if (st != KV_NOT_FOUND) w->errors++;
            } else {
                make_val(v, sizeof v, w->id, key, w->vals[key]);
                if (st != KV_OK || val.len != strlen(v) || memcmp(val.data, v, val.len) != 0) w->errors++;
            }
            kv_value_free(&val);
        } else {
            /* Another thread's key: absent or a well-formed value of it. */
            int other = (w->id + 1 + (int)(x % (THREADS - 1))) % THREADS;
            int on = snprintf(ok, sizeof ok, "t%d:k%d", other, key);
            kv_value val;
            kv_status st = kv_get(w->s, ok, (size_t)on, &val);
            if (st == KV_OK) {
                char prefix[40];
                int pn = snprintf(prefix, sizeof prefix, "t%d:k%d:v", other, key);
                if (val.len < (size_t)pn || memcmp(val.data, prefix, (size_t)pn) != 0) w->errors++;
            } else if (st != KV_NOT_FOUND) {
                w->errors++;
            }
            kv_value_free(&val);
        }
    }
    return NULL;
}

static void run_threads(kv_store *s, worker *ws, int ops)
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        ws[t].s = s;
        ws[t].id = t;
        ws[t].ops = ops;
        ws[t].errors = 0;
        for (int k = 0; k < KEYS; k++) ws[t].vals[k] = -1;
        ck_assert_int_eq(pthread_create(&th[t], NULL, work, &ws[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < THREADS; t++) ck_assert_msg(ws[t].errors == 0, "thread %d saw %d wrong results", t, ws[t].errors);
}

static void check_models(kv_store *s, const worker *ws)
{
    char k[32], v[128];
    size_t live = 0;
    for (int t = 0; t < THREADS; t++)
        for (int key = 0; key < KEYS; key++) {
            int kn = snprintf(k, sizeof k, "t%d:k%d", t, key);
            kv_value val;
            kv_status st = kv_get(s, k, (size_t)kn, &val);
            if (ws[t].vals[key] < 0) {
                ck_assert_int_eq(st, KV_NOT_FOUND);
                continue;
            }
            live++;
            make_val(v, sizeof v, t, key, ws[t].vals[key]);
            ck_assert_int_eq(st, KV_OK);
            ck_assert_uint_eq(val.len, strlen(v));
            ck_assert(memcmp(val.data, v, val.len) == 0);
            kv_value_free(&val);
        }
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.keys, live);
}

START_TEST(eight_threads_agree_with_model_on_posix_under_always)
{
    char *dir = tu_tmpdir();
    static worker ws[THREADS];
    kv_options o;
    kv_options_init(&o);
    o.segment_max_bytes = 256 * 1024; /* several rotations under load */
    kv_store *s;
    ck_assert_int_eq(kv_open(dir, &o, &s, NULL), KV_OK);
    run_threads(s, ws, 1500);
    kv_stats st;
    kv_get_stats(s, &st);
    printf("group commit, 8 writer threads, fsync=always, POSIX: %llu writes in %llu fdatasyncs = %.2f writes "
           "per fdatasync (mean fdatasync %.0f us)\n",
           (unsigned long long)st.synced_writes, (unsigned long long)st.fdatasyncs,
           st.fdatasyncs ? (double)st.synced_writes / (double)st.fdatasyncs : 0.0,
           st.fdatasyncs ? (double)st.fdatasync_us / (double)st.fdatasyncs : 0.0);
    ck_assert_uint_eq(st.synced_writes, st.group_writes); /* every acknowledged write was synced */
    ck_assert_uint_ge(st.group_writes, st.groups);
    check_models(s, ws);
    ck_assert_int_eq(kv_close(s), KV_OK);
    ck_assert_int_eq(kv_open(dir, &o, &s, NULL), KV_OK);
    check_models(s, ws);
    kv_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static void slow_sync(void *arg, kv_memfs *fs, const char *what)
{
    (void)arg;
    (void)fs;
    if (!strcmp(what, "fdatasync")) usleep(3000);
}

START_TEST(group_commit_shares_one_fdatasync_among_waiting_writers)
{
    static worker ws[THREADS];
    kv_memfs *fs = kv_memfs_new();
    kv_memfs_set_sync_hook(fs, slow_sync, NULL);
    kv_store *s;
    ck_assert_int_eq(tu_open_mem(fs, "db", KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    kv_stats before;
    kv_get_stats(s, &before);
    run_threads(s, ws, 300);
    kv_stats st;
    kv_get_stats(s, &st);
    uint64_t syncs = st.fdatasyncs - before.fdatasyncs;
    double per = (double)st.synced_writes / (double)syncs;
    printf("group commit with a 3 ms fdatasync, 8 writer threads: %llu writes in %llu fdatasyncs = %.2f per "
           "fdatasync\n",
           (unsigned long long)st.synced_writes, (unsigned long long)syncs, per);
    /* While one sync runs, the other seven writers queue up: groups form. */
    ck_assert_msg(per > 3.0, "group commit did not group: %.2f writes per fdatasync", per);
    check_models(s, ws);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* ---- transactions: read-modify-write serialised on the writer ---- */

typedef struct waitbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    kv_status st;
} waitbox;

static void txn_done(void *arg, kv_status st)
{
    waitbox *w = arg;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* INCR of "counter" and of the caller's own key, in one transaction. */
static kv_status incr_txn(kv_txn *t, void *arg)
{
    const char *own = arg;
    const char *keys[2] = {"counter", own};
    for (int i = 0; i < 2; i++) {
        kv_value v;
        long n = 0;
        kv_status st = kv_txn_get(t, keys[i], strlen(keys[i]), &v);
        if (st == KV_OK) {
            char buf[32];
            ck_assert_uint_lt(v.len, sizeof buf);
            memcpy(buf, v.data, v.len);
            buf[v.len] = 0;
            n = strtol(buf, NULL, 10);
            kv_value_free(&v);
        } else if (st != KV_NOT_FOUND) {
            return st;
        }
        char out[32];
        int len = snprintf(out, sizeof out, "%ld", n + 1);
        st = kv_txn_put(t, keys[i], strlen(keys[i]), out, (size_t)len, 0, 0);
        if (st != KV_OK) return st;
    }
    return KV_OK;
}

static void *incr_worker(void *arg)
{
    kv_store *s = ((void **)arg)[0];
    const char *own = ((void **)arg)[1];
    for (int i = 0; i < 200; i++) {
        waitbox w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, KV_OK};
        ck_assert_int_eq(kv_submit(s, incr_txn, (void *)own, txn_done, &w), KV_OK);
        pthread_mutex_lock(&w.mu);
        while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        ck_assert_int_eq(w.st, KV_OK);
    }
    return NULL;
}

static long read_long(kv_store *s, const char *key)
{
    kv_value v;
    ck_assert_int_eq(kv_get(s, key, strlen(key), &v), KV_OK);
    char buf[32];
    memcpy(buf, v.data, v.len);
    buf[v.len] = 0;
    kv_value_free(&v);
    return strtol(buf, NULL, 10);
}

START_TEST(concurrent_read_modify_write_transactions_lose_no_update)
{
    /* A slow disk makes many increments share a group, so each reads the
     * unsynced result of the one before it. */
    kv_memfs *fs = kv_memfs_new();
    kv_memfs_set_sync_hook(fs, slow_sync, NULL);
    kv_store *s;
    ck_assert_int_eq(tu_open_mem(fs, "db", KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    pthread_t th[THREADS];
    char names[THREADS][16];
    void *args[THREADS][2];
    for (int t = 0; t < THREADS; t++) {
        snprintf(names[t], sizeof names[t], "own%d", t);
        args[t][0] = s;
        args[t][1] = names[t];
        ck_assert_int_eq(pthread_create(&th[t], NULL, incr_worker, args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    ck_assert_int_eq(read_long(s, "counter"), THREADS * 200);
    for (int t = 0; t < THREADS; t++) ck_assert_int_eq(read_long(s, names[t]), 200);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_lt(st.fdatasyncs, (uint64_t)THREADS * 200); /* grouped */
    kv_close(s);
    /* Each transaction was one batch record: all of it survives. */
    ck_assert_int_eq(tu_open_mem(fs, "db", KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    ck_assert_int_eq(read_long(s, "counter"), THREADS * 200);
    ck_assert_uint_eq(kv_recovery_report(s)->batches, (uint64_t)THREADS * 200);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* ---- fail-stop while a compaction runs ---- */

/* Writers and a compaction loop share a disk that starts failing (EIO on
 * every call from the Nth on). Whichever thread meets the error first,
 * the fail-stop state is one: once kv_failstop_reason reports it, every
 * later write and sync fails and the reason is there to read. Under
 * ThreadSanitizer this also checks that the state is published with a
 * lock or an atomic, never read bare by the writer thread while another
 * thread sets it. */
typedef struct fs_worker {
    kv_store *s;
    int id;
    int stop;            /* atomic */
    int acked_after;     /* writes acknowledged after fail-stop was seen */
    int without_reason;  /* errors while kv_failstop_reason said nothing */
    int compactions_after; /* kv_compact runs that did not refuse after it */
} fs_worker;

static void *fs_write(void *arg)
{
    fs_worker *w = arg;
    char k[32], v[64], why[512];
    for (int i = 0; !__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE); i++) {
        int kn = snprintf(k, sizeof k, "w%d:%d", w->id, i % 50);
        int vn = snprintf(v, sizeof v, "value-%d-%d", w->id, i);
        int before = kv_failstop_reason(w->s, why, sizeof why);
        kv_status st = i % 7 == 6 ? kv_sync(w->s) : kv_put(w->s, k, (size_t)kn, v, (size_t)vn, 0, 0);
        if (before && st == KV_OK) w->acked_after++;
        if (st != KV_OK && (!kv_failstop_reason(w->s, why, sizeof why) || !why[0])) w->without_reason++;
    }
    return NULL;
}

static void *fs_compact(void *arg)
{
    fs_worker *w = arg;
    char why[512];
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        int before = kv_failstop_reason(w->s, why, sizeof why);
        kv_compact_report rep;
        kv_status st = kv_compact(w->s, &rep);
        if (before && st != KV_FAILSTOP) w->compactions_after++;
        if (st != KV_OK) usleep(100);
    }
    return NULL;
}

/* Opens a store in memory through io with 4 KiB segments and fills it
 * with n puts over `keys` keys ("pre:N", 200-byte values), sealed: many
 * sealed segments for a compaction to fold. */
static kv_store *open_filled(const kv_io *io, kv_fsync_policy fsync, int n, int keys)
{
    kv_options o;
    kv_options_init(&o);
    o.io = io;
    o.segment_max_bytes = 4096;
    o.fsync = fsync;
    kv_store *s;
    ck_assert_int_eq(kv_open("db", &o, &s, NULL), KV_OK);
    char k[32], v[200];
    for (int i = 0; i < n; i++) {
        int kn = snprintf(k, sizeof k, "pre:%d", i % keys);
        memset(v, 'a' + i % 26, sizeof v);
        ck_assert_int_eq(kv_put(s, k, (size_t)kn, v, sizeof v, 0, 0), KV_OK);
    }
    ck_assert_int_eq(kv_seal(s), KV_OK);
    return s;
}

START_TEST(failstop_from_any_thread_refuses_every_later_write)
{
    enum { WRITERS = 4 };
    for (int round = 0; round < 12; round++) {
        kv_memfs *fs = kv_memfs_new();
        kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
        kv_store *s = open_filled(kv_faultio_io(f), KV_FSYNC_ALWAYS, 300, 40);
        fs_worker ws[WRITERS + 1];
        pthread_t th[WRITERS + 1];
        for (int t = 0; t <= WRITERS; t++) {
            ws[t] = (fs_worker){.s = s, .id = t};
            ck_assert_int_eq(pthread_create(&th[t], NULL, t < WRITERS ? fs_write : fs_compact, &ws[t]), 0);
        }
        /* The fault lands in a compaction's reads and writes as often as
         * in the writer's. */
        kv_faultio_arm(f, 20 + (uint64_t)round * 37, EIO, 1);
        char why[512];
        for (int i = 0; i < 2000 && !kv_failstop_reason(s, why, sizeof why); i++) usleep(1000);
        ck_assert_msg(kv_failstop_reason(s, why, sizeof why), "round %d: no fail-stop", round);
        ck_assert(why[0] != 0);
        usleep(20000); /* writes and compactions go on against the stopped store */
        for (int t = 0; t <= WRITERS; t++) __atomic_store_n(&ws[t].stop, 1, __ATOMIC_RELEASE);
        for (int t = 0; t <= WRITERS; t++) pthread_join(th[t], NULL);
        for (int t = 0; t <= WRITERS; t++) {
            ck_assert_msg(ws[t].acked_after == 0, "round %d: %d writes acknowledged after fail-stop", round,
                          ws[t].acked_after);
            ck_assert_msg(ws[t].without_reason == 0, "round %d: %d failed writes without a reason", round,
                          ws[t].without_reason);
            ck_assert_msg(ws[t].compactions_after == 0, "round %d: a compaction ran after fail-stop", round);
        }
        kv_stats st;
        kv_get_stats(s, &st);
        ck_assert_int_eq(st.failstop, 1);
        ck_assert_int_eq(kv_put(s, "late", 4, "x", 1, 0, 0), KV_FAILSTOP);
        kv_close(s);
        kv_faultio_free(f);
        kv_memfs_free(fs);
    }
}
END_TEST

/* ---- a compaction out of memory ----
 *
 * Allocation failures on demand, for this suite only: tests/CMakeLists.txt
 * links it with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc, so every
 * allocation of the engine's code comes here. While a thread's
 * alloc_countdown is positive each of its allocations counts it down, and
 * the one that brings it to zero fails. */
static __thread long alloc_countdown;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static int alloc_fails(void)
{
    return alloc_countdown > 0 && --alloc_countdown == 0;
}

void *__wrap_malloc(size_t n)
{
    return alloc_fails() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return alloc_fails() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return alloc_fails() ? NULL : __real_realloc(p, n);
}

/* Holds tab.lock shared most of the time (kv_scan calls back under it),
 * so the writer thread's publication of a group and a compaction's
 * install queue up behind it and then run back to back. */
static void slow_key(void *arg, const uint8_t *key, size_t klen, uint64_t expire_ms)
{
    (void)arg;
    (void)key;
    (void)klen;
    (void)expire_ms;
    usleep(300);
}

static void *hold_reads(void *arg)
{
    fs_worker *w = arg;
    uint64_t cursor = 0;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) kv_scan(w->s, cursor, 4, slow_key, NULL, &cursor);
    return NULL;
}

/* A compaction on this thread fails its 1st allocation, then its 2nd, ...
 * until one runs through, while writer threads write. Each failure either
 * leaves the store serving (the compaction refused, nothing lost) or, for
 * the allocation that installs the output in the segment table, puts the
 * store in fail-stop from this thread while the writer thread runs: then
 * no later write is acknowledged. Under ThreadSanitizer this is the test
 * that the fail-stop state is shared safely between the compaction's
 * thread and the writer's: before it was, the writer read it bare. */
START_TEST(compaction_out_of_memory_at_any_allocation_refuses_or_stops_writes)
{
    enum { WRITERS = 2 };
    int failstops = 0, done = 0, repeats = 0, sweeps = 1;
    long k = 1;
    /* Writers rotate segments while the compaction runs, which changes how
     * many allocations come before the install from one run to the next:
     * a sweep can step over it. Sweep again then, a few times at most. */
    while (k < 5000 && (!done || (failstops == 0 && sweeps < 6))) {
        if (done) {
            done = 0;
            k = 1;
            sweeps++;
        }
        kv_memfs *fs = kv_memfs_new();
        /* Under everysec the writer thread checks fail-stop after every
         * group, to decide whether a sync is due: many chances a second
         * for a fail-stop set on this thread to meet that check. */
        kv_store *s = open_filled(kv_memfs_io(fs), KV_FSYNC_EVERYSEC, 120, 30);
        fs_worker ws[WRITERS + 1];
        pthread_t th[WRITERS + 1];
        for (int t = 0; t <= WRITERS; t++) {
            ws[t] = (fs_worker){.s = s, .id = t};
            ck_assert_int_eq(pthread_create(&th[t], NULL, t < WRITERS ? fs_write : hold_reads, &ws[t]), 0);
        }
        kv_compact_report rep;
        alloc_countdown = k;
        kv_status st = kv_compact(s, &rep);
        int reached = alloc_countdown == 0;
        alloc_countdown = 0;
        char why[512];
        int stopped = kv_failstop_reason(s, why, sizeof why);
        if (!reached) {
            ck_assert_int_eq(st, KV_OK); /* every allocation succeeded */
            done = 1;
        } else if (stopped) {
            /* The allocation that installs the output: again, a few
             * times, for the race detector's sake. */
            if (repeats++ == 0) failstops++;
            ck_assert_int_ne(st, KV_OK);
            ck_assert_msg(strstr(why, "installing compaction output"), "fail-stop reason: %s", why);
        }
        usleep(2000); /* writes go on against the store as it now is */
        for (int t = 0; t <= WRITERS; t++) __atomic_store_n(&ws[t].stop, 1, __ATOMIC_RELEASE);
        for (int t = 0; t <= WRITERS; t++) pthread_join(th[t], NULL);
        for (int t = 0; t < WRITERS; t++) {
            ck_assert_msg(ws[t].acked_after == 0, "allocation %ld: %d writes acknowledged after fail-stop", k,
                          ws[t].acked_after);
            ck_assert_msg(ws[t].without_reason == 0, "allocation %ld: %d failed writes without a reason", k,
                          ws[t].without_reason);
        }
        kv_status late = kv_put(s, "late", 4, "x", 1, 0, 0);
        ck_assert_int_eq(late, stopped ? KV_FAILSTOP : KV_OK);
        kv_value got;
        ck_assert_int_eq(kv_get(s, "pre:29", 6, &got), KV_OK); /* never lost */
        ck_assert_uint_eq(got.len, 200);
        kv_value_free(&got);
        kv_close(s);
        kv_memfs_free(fs);
        if (!stopped || repeats >= 20) {
            repeats = 0;
            k++;
        }
    }
    ck_assert_msg(done, "no compaction ran through in 5000 allocations");
    printf("compaction out of memory: %d allocation%s put the store in fail-stop (%d sweep%s)\n", failstops,
           failstops == 1 ? "" : "s", sweeps, sweeps == 1 ? "" : "s");
    ck_assert_msg(failstops >= 1, "no allocation put the store in fail-stop");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("concurrency");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, eight_threads_agree_with_model_on_posix_under_always);
    tcase_add_test(tc, group_commit_shares_one_fdatasync_among_waiting_writers);
    tcase_add_test(tc, concurrent_read_modify_write_transactions_lose_no_update);
    tcase_add_test(tc, failstop_from_any_thread_refuses_every_later_write);
    tcase_add_test(tc, compaction_out_of_memory_at_any_allocation_refuses_or_stops_writes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
