/*
 * Power loss: at every sync point (each fdatasync and directory fsync) of
 * a workload under fsync=always, build the crash states a power cut then
 * allows (kv_io_sim's model): unsynced writes dropped, kept, or torn (a
 * prefix of 0 or 1 units of 512 or 4096 bytes survives, the rest reads as
 * zeros or garbage), with unsynced creates/renames lost or kept. Each
 * state must recover, hold every acknowledged write, apply the write in
 * flight entirely or not at all, return no corrupt value, and recover the
 * same way a second time.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store.h"
#include "testutil.h"

#define DIR "db"

typedef struct state {
    kv_memfs *fs;
    tu_model before, after; /* acknowledged; acknowledged + in flight */
    char what[64];
} state;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static tu_model acked, inflight;
static size_t cur_op;
static state *states;
static size_t nstates, cap_states;
static size_t sync_points;

static void add_state(kv_memfs *fs, const kv_crash_spec *spec, const char *label)
{
    kv_memfs *c = kv_memfs_crash(fs, spec);
    ck_assert_ptr_nonnull(c);
    if (nstates == cap_states) {
        cap_states = cap_states ? cap_states * 2 : 256;
        states = realloc(states, cap_states * sizeof *states);
    }
    state *s = &states[nstates++];
    s->fs = c;
    tu_model_copy(&s->before, &acked);
    tu_model_copy(&s->after, &inflight);
    snprintf(s->what, sizeof s->what, "op %zu, %s", cur_op, label);
}

static void on_sync(void *arg, kv_memfs *fs, const char *what)
{
    (void)arg;
    (void)what;
    pthread_mutex_lock(&mu);
    sync_points++;
    char label[64];
    static const kv_tear tears[] = {KV_TEAR_ZERO, KV_TEAR_GARBAGE};
    static const uint32_t units[] = {512, 4096};
    for (int dirops = 0; dirops <= 1; dirops++) {
        kv_crash_spec drop = {0, KV_TEAR_NONE, 512, 0, dirops, 1};
        kv_crash_spec keep = {-1, KV_TEAR_NONE, 512, 0, dirops, 1};
        snprintf(label, sizeof label, "%s: drop unsynced, dir ops %s", what, dirops ? "kept" : "lost");
        add_state(fs, &drop, label);
        snprintf(label, sizeof label, "%s: keep unsynced, dir ops %s", what, dirops ? "kept" : "lost");
        add_state(fs, &keep, label);
    }
    long pend = kv_memfs_max_pending(fs);
    for (long k = 0; k < pend; k++)
        for (size_t t = 0; t < 2; t++)
            for (size_t u = 0; u < 2; u++)
                for (uint32_t keep_units = 0; keep_units <= 1; keep_units++) {
                    kv_crash_spec torn = {k, tears[t], units[u], keep_units, 1, 0x1234 + k};
                    snprintf(label, sizeof label, "%s: op %ld torn %s/%u+%u", what, k, t ? "garbage" : "zero",
                             units[u], keep_units);
                    add_state(fs, &torn, label);
                }
    pthread_mutex_unlock(&mu);
}

static int store_matches(kv_store *s, const tu_model *m)
{
    kv_stats st;
    kv_get_stats(s, &st);
    if (st.keys != m->n) return 0;
    for (size_t i = 0; i < m->n; i++) {
        kv_value v;
        kv_status g = kv_get(s, m->keys[i], m->klens[i], &v);
        ck_assert_msg(g != KV_CORRUPT, "a recovered store returned corruption");
        if (g != KV_OK) return 0;
        int same = v.len == m->vlens[i] && memcmp(v.data, m->vals[i], v.len) == 0;
        kv_value_free(&v);
        if (!same) return 0;
    }
    return 1;
}

/* Puts, deletes and batches over 12 keys, values of 20..800 bytes so tears
 * at 512 and 4096 bytes fall inside records; 4 KiB segments rotate. */
static void run_workload(kv_store *s, size_t nops)
{
    uint32_t x = 99;
    char k[16], k2[16];
    static char v[1024];
    for (size_t i = 0; i < nops; i++) {
        x = x * 1664525u + 1013904223u;
        int kind = (int)((x >> 8) % 10), key = (int)((x >> 16) % 12);
        size_t vl = (i % 5 == 4) ? 600 + (x % 200) : 20 + (x % 40);
        snprintf(k, sizeof k, "key%d", key);
        snprintf(k2, sizeof k2, "key%d", (key + 5) % 12);
        memset(v, 'a' + (int)(i % 26), vl);
        snprintf(v, 16, "%zu:", i);
        pthread_mutex_lock(&mu);
        cur_op = i;
        tu_model_free(&inflight);
        tu_model_copy(&inflight, &acked);
        if (kind < 6) {
            tu_model_put(&inflight, k, strlen(k), v, vl);
        } else if (kind < 8) {
            tu_model_del(&inflight, k, strlen(k));
        } else {
            tu_model_put(&inflight, k, strlen(k), v, vl);
            tu_model_del(&inflight, k2, strlen(k2));
        }
        pthread_mutex_unlock(&mu);
        kv_status st;
        if (kind < 6) {
            st = kv_put(s, k, strlen(k), v, vl, 0, 0);
        } else if (kind < 8) {
            st = kv_delete(s, k, strlen(k));
            if (st == KV_NOT_FOUND) st = KV_OK;
        } else {
            kv_batch *b = kv_batch_new();
            kv_batch_put(b, k, strlen(k), v, vl, 0, 0);
            kv_batch_delete(b, k2, strlen(k2));
            st = kv_write(s, b);
            kv_batch_free(b);
        }
        ck_assert_int_eq(st, KV_OK);
        pthread_mutex_lock(&mu);
        tu_model_free(&acked);
        tu_model_copy(&acked, &inflight);
        pthread_mutex_unlock(&mu);
    }
}

START_TEST(every_sync_point_crash_states_recover)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model_init(&acked);
    tu_model_init(&inflight);
    kv_memfs_set_sync_hook(fs, on_sync, NULL);
    kv_store *s;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 4096, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    run_workload(s, 120);
    kv_memfs_set_sync_hook(fs, NULL, NULL);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_ge(st.segments, 4); /* rotation happened under the crash model */
    ck_assert_int_eq(kv_close(s), KV_OK);

    size_t matched_before = 0, matched_after = 0, torn_cut = 0;
    for (size_t i = 0; i < nstates; i++) {
        state *c = &states[i];
        int which = 0;
        for (int round = 0; round < 2; round++) {
            kvr_report rep;
            kv_status o = tu_open_mem(c->fs, DIR, KV_FSYNC_ALWAYS, 4096, KVR_TOLERATE_TAIL, &s, &rep);
            ck_assert_msg(o == KV_OK, "crash state %zu (%s): open failed: %s", i, c->what, rep.message);
            if (round == 0 && rep.torn_bytes) torn_cut++;
            if (round == 1)
                ck_assert_msg(rep.torn_bytes == 0 && rep.unwritten_bytes == 0, "state %zu: second recovery cut again",
                              i);
            kvr_report_free(&rep);
            int w = store_matches(s, &c->before) ? 1 : store_matches(s, &c->after) ? 2 : 0;
            ck_assert_msg(w != 0, "crash state %zu (%s): an acknowledged write is missing or the write in "
                                  "flight was applied in part", i, c->what);
            if (round == 0) which = w;
            ck_assert_msg(w == which, "state %zu: second recovery differs from the first", i);
            /* The recovered store takes writes again. */
            if (round == 0) ck_assert_int_eq(kv_put(s, "probe", 5, "p", 1, 0, 0), KV_OK);
            if (round == 0) ck_assert_int_eq(kv_delete(s, "probe", 5), KV_OK);
            kv_close(s);
        }
        if (which == 1) matched_before++;
        else matched_after++;
        kv_memfs_free(c->fs);
        tu_model_free(&c->before);
        tu_model_free(&c->after);
    }
    printf("power loss: %zu sync points, %zu crash states checked (%zu without the write in flight, %zu with it, "
           "%zu cut a torn tail), all recovered with every acknowledged write\n",
           sync_points, nstates, matched_before, matched_after, torn_cut);
    ck_assert_uint_gt(nstates, 1000);
    ck_assert_uint_gt(matched_before, 0);
    ck_assert_uint_gt(matched_after, 0);
    ck_assert_uint_gt(torn_cut, 0);
    free(states);
    tu_model_free(&acked);
    tu_model_free(&inflight);
    kv_memfs_free(fs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("powerloss");
    TCase *tc = tcase_create("sync-points");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, every_sync_point_crash_states_recover);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
