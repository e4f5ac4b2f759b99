/* Key directory: binary keys, replace/delete accounting, growth, and the
 * scan guarantee (every key present for the whole scan is returned). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_keydir.h"
#include "testutil.h"

START_TEST(put_get_replace_delete)
{
    kv_keydir *kd = kv_keydir_new();
    const char k1[] = {'a', 0, '\r', '\n'};
    kv_loc l1 = {1, 50, 32, 1, 0}, l2 = {2, 60, 96, 2, 99}, got, old;
    int had = -1;
    ck_assert_int_eq(kv_keydir_put(kd, k1, sizeof k1, &l1, &old, &had), KV_OK);
    ck_assert_int_eq(had, 0);
    ck_assert_int_eq(kv_keydir_get(kd, k1, sizeof k1, &got), 1);
    ck_assert_uint_eq(got.off, 32);
    /* A key that differs only after the NUL byte is another key. */
    ck_assert_int_eq(kv_keydir_get(kd, "a", 1, &got), 0);
    ck_assert_int_eq(kv_keydir_put(kd, k1, sizeof k1, &l2, &old, &had), KV_OK);
    ck_assert_int_eq(had, 1);
    ck_assert_uint_eq(old.seq, 1);
    ck_assert_uint_eq(kv_keydir_count(kd), 1);
    ck_assert_int_eq(kv_keydir_del(kd, k1, sizeof k1, &old), 1);
    ck_assert_uint_eq(old.seq, 2);
    ck_assert_int_eq(kv_keydir_del(kd, k1, sizeof k1, &old), 0);
    ck_assert_uint_eq(kv_keydir_count(kd), 0);
    /* The empty key is a valid key. */
    ck_assert_int_eq(kv_keydir_put(kd, "", 0, &l1, NULL, NULL), KV_OK);
    ck_assert_int_eq(kv_keydir_get(kd, "", 0, &got), 1);
    kv_keydir_free(kd);
}
END_TEST

static int mark(void *arg, const uint8_t *key, size_t klen, const kv_loc *loc)
{
    (void)key;
    (void)klen;
    ((unsigned char *)arg)[loc->seq]++;
    return 0;
}

START_TEST(grow_and_scan_visits_every_key)
{
    enum { N = 20000 };
    kv_keydir *kd = kv_keydir_new();
    char k[32];
    for (unsigned i = 0; i < N / 2; i++) {
        int n = snprintf(k, sizeof k, "key:%u", i);
        kv_loc l = {1, 10, i, i, 0};
        ck_assert_int_eq(kv_keydir_put(kd, k, (size_t)n, &l, NULL, NULL), KV_OK);
    }
    /* Scan while the table keeps growing between calls: the first half
     * was present all along and must each be seen at least once. */
    unsigned char *seen = calloc(N, 1);
    uint64_t cur = 0;
    unsigned next = N / 2, calls = 0;
    do {
        cur = kv_keydir_scan(kd, cur, 100, mark, seen);
        calls++;
        for (int j = 0; j < 50 && next < N; j++, next++) {
            int n = snprintf(k, sizeof k, "key:%u", next);
            kv_loc l = {1, 10, next, next, 0};
            ck_assert_int_eq(kv_keydir_put(kd, k, (size_t)n, &l, NULL, NULL), KV_OK);
        }
    } while (cur != 0);
    for (; next < N; next++) {
        int n = snprintf(k, sizeof k, "key:%u", next);
        kv_loc l = {1, 10, next, next, 0};
        ck_assert_int_eq(kv_keydir_put(kd, k, (size_t)n, &l, NULL, NULL), KV_OK);
    }
    for (unsigned i = 0; i < N / 2; i++) ck_assert_msg(seen[i] >= 1, "key:%u missed by the scan", i);
    ck_assert_uint_gt(calls, 10);
    ck_assert_uint_eq(kv_keydir_count(kd), N);
    for (unsigned i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key:%u", i);
        kv_loc l;
        ck_assert_int_eq(kv_keydir_get(kd, k, (size_t)n, &l), 1);
        ck_assert_uint_eq(l.seq, i);
    }
    ck_assert_uint_gt(kv_keydir_memory(kd), (size_t)N * 48);
    free(seen);
    kv_keydir_free(kd);
}
END_TEST

/* The running totals (live record bytes, keys with an expiry) equal a
 * recount after any mix of puts, replaces and deletes; the hashed
 * variants and reserve change nothing but speed. */
static int recount(void *arg, const uint8_t *key, size_t klen, const kv_loc *loc)
{
    (void)key;
    (void)klen;
    uint64_t *t = arg;
    t[0] += loc->len;
    t[1] += loc->expire_ms != 0;
    return 0;
}

START_TEST(running_totals_and_bulk_loading_agree_with_a_recount)
{
    kv_keydir *a = kv_keydir_new(), *b = kv_keydir_new();
    kv_keydir_reserve(b, 5000);
    kv_keydir_reserve(b, 10); /* never shrinks */
    char k[32];
    unsigned x = 12345;
    for (int i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        int n = snprintf(k, sizeof k, "key%u", (x >> 8) % 3000);
        kv_loc l = {1, 44 + (x >> 4) % 300, (uint64_t)i * 8 + 32, (uint64_t)i + 1, (x >> 3) % 4 == 0 ? 1000 + i : 0};
        uint64_t h = kv_keydir_hash(b, k, (size_t)n);
        kv_keydir_prefetch(b, h);
        kv_keydir_prefetch_entry(b, h);
        if ((x >> 6) % 5 == 0) {
            int da = kv_keydir_del(a, k, (size_t)n, NULL);
            ck_assert_int_eq(kv_keydir_del_hashed(b, k, (size_t)n, h, NULL), da);
        } else {
            ck_assert_int_eq(kv_keydir_put(a, k, (size_t)n, &l, NULL, NULL), KV_OK);
            ck_assert_int_eq(kv_keydir_put_hashed(b, k, (size_t)n, h, &l, NULL, NULL), KV_OK);
        }
        if (i % 997 == 0 || i == 19999) {
            uint64_t t[2] = {0, 0};
            kv_keydir_foreach(a, recount, t);
            ck_assert_uint_eq(kv_keydir_loc_bytes(a), t[0]);
            ck_assert_uint_eq(kv_keydir_expiring(a), t[1]);
            ck_assert_uint_eq(kv_keydir_loc_bytes(b), t[0]);
            ck_assert_uint_eq(kv_keydir_expiring(b), t[1]);
            ck_assert_uint_eq(kv_keydir_count(b), kv_keydir_count(a));
        }
    }
    ck_assert_uint_gt(kv_keydir_count(a), 1000);
    for (unsigned i = 0; i < 3000; i++) {
        int n = snprintf(k, sizeof k, "key%u", i);
        kv_loc la, lb;
        int ga = kv_keydir_get(a, k, (size_t)n, &la), gb = kv_keydir_get(b, k, (size_t)n, &lb);
        ck_assert_int_eq(ga, gb);
        if (ga) ck_assert(memcmp(&la, &lb, sizeof la) == 0);
    }
    kv_keydir_free(a);
    kv_keydir_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("keydir");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, put_get_replace_delete);
    tcase_add_test(tc, grow_and_scan_visits_every_key);
    tcase_add_test(tc, running_totals_and_bulk_loading_agree_with_a_recount);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
