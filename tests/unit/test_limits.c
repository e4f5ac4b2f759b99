/* kvd's resource-limit decisions (kv/server/kvd_limits.h): when unsent replies
 * get a client closed (hard at once, soft only after its seconds, and only
 * when passed continuously), the descriptors reserved beside maxclients
 * and the maxclients that fits an open-file limit, raising the soft
 * RLIMIT_NOFILE to the hard one, and the once-a-second log limiter. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvd_limits.h"
#include "testutil.h"

START_TEST(hard_limit_closes_at_once)
{
    kvd_obuf_limit l = {1000, 0, 0};
    long long since = 0;
    ck_assert_int_eq(kvd_obuf_check(&l, 999, 5000, &since), KVD_OBUF_OK);
    ck_assert_int_eq(kvd_obuf_check(&l, 1000, 5000, &since), KVD_OBUF_HARD);
    ck_assert_int_eq(kvd_obuf_check(&l, 1u << 30, 5000, &since), KVD_OBUF_HARD);
    /* 0 is no limit. */
    kvd_obuf_limit none = {0, 0, 0};
    ck_assert_int_eq(kvd_obuf_check(&none, UINT64_MAX, 5000, &since), KVD_OBUF_OK);
    ck_assert_int_eq(since, 0);
}
END_TEST

START_TEST(soft_limit_closes_only_after_its_seconds)
{
    kvd_obuf_limit l = {0, 100, 2};
    long long since = 0;
    /* First sighting starts the clock, closes nothing. */
    ck_assert_int_eq(kvd_obuf_check(&l, 100, 10000, &since), KVD_OBUF_OK);
    ck_assert_int_eq(since, 10000);
    ck_assert_int_eq(kvd_obuf_check(&l, 500, 11000, &since), KVD_OBUF_OK);
    ck_assert_int_eq(kvd_obuf_check(&l, 500, 12000, &since), KVD_OBUF_OK); /* exactly 2 s: not more */
    ck_assert_int_eq(kvd_obuf_check(&l, 500, 12001, &since), KVD_OBUF_SOFT);
}
END_TEST

START_TEST(soft_limit_must_be_passed_continuously)
{
    kvd_obuf_limit l = {0, 100, 1};
    long long since = 0;
    ck_assert_int_eq(kvd_obuf_check(&l, 200, 1000, &since), KVD_OBUF_OK);
    /* Drains below the soft limit: the clock stops. */
    ck_assert_int_eq(kvd_obuf_check(&l, 99, 1500, &since), KVD_OBUF_OK);
    ck_assert_int_eq(since, 0);
    ck_assert_int_eq(kvd_obuf_check(&l, 200, 1600, &since), KVD_OBUF_OK);
    ck_assert_int_eq(kvd_obuf_check(&l, 200, 2500, &since), KVD_OBUF_OK); /* 0.9 s since the new start */
    ck_assert_int_eq(kvd_obuf_check(&l, 200, 2700, &since), KVD_OBUF_SOFT);
    /* soft seconds 0: closed at the second sighting, as Redis. */
    kvd_obuf_limit z = {0, 100, 0};
    since = 0;
    ck_assert_int_eq(kvd_obuf_check(&z, 100, 1000, &since), KVD_OBUF_OK);
    ck_assert_int_eq(kvd_obuf_check(&z, 100, 1001, &since), KVD_OBUF_SOFT);
    /* The hard limit wins over a running soft clock. */
    kvd_obuf_limit both = {300, 100, 60};
    since = 0;
    ck_assert_int_eq(kvd_obuf_check(&both, 200, 1000, &since), KVD_OBUF_OK);
    ck_assert_int_eq(kvd_obuf_check(&both, 300, 1001, &since), KVD_OBUF_HARD);
}
END_TEST

START_TEST(backpressure_marks_are_ordered)
{
    /* Resuming below the pause mark, or kvd would pause and resume on
     * every reply. */
    ck_assert_uint_lt(KVD_OUTPUT_RESUME_BYTES, KVD_OUTPUT_PAUSE_BYTES);
    /* The default hard limit of normal clients is above the largest
     * value a client may store (512 MiB), so every value can be read. */
    kvd_config c;
    kvd_config_init(&c);
    ck_assert_uint_gt(c.obuf_limits[KVD_OBUF_NORMAL].hard, c.max_bulk_len + 64);
    ck_assert_uint_gt(c.obuf_limits[KVD_OBUF_NORMAL].soft, KVD_OUTPUT_PAUSE_BYTES);
    kvd_config_free(&c);
}
END_TEST

START_TEST(reserved_fds_and_the_maxclients_that_fits)
{
    ck_assert_uint_eq(kvd_reserved_fds(1, 0), 34);
    ck_assert_uint_eq(kvd_reserved_fds(4, 10), 32 + 8 + 10);
    ck_assert_int_eq(kvd_nofile_fit(64, 34, 10000), 30);
    ck_assert_int_eq(kvd_nofile_fit(20000, 34, 10000), 10000);
    ck_assert_int_eq(kvd_nofile_fit(10034, 34, 10000), 10000);
    ck_assert_int_eq(kvd_nofile_fit(10033, 34, 10000), 9999);
    ck_assert_int_eq(kvd_nofile_fit(34, 34, 10000), 0);
    ck_assert_int_eq(kvd_nofile_fit(10, 34, 10000), 0);
}
END_TEST

START_TEST(segment_files_are_counted)
{
    char *dir = tu_tmpdir();
    ck_assert_uint_eq(kvd_count_segment_files(dir), 0);
    static const char *const names[] = {"0000000001.seg", "0000000002.seg", "0000000002.hint", "LOCK",
                                        "0000000001.seg.330.torn", "x.seg"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        ck_assert_ptr_nonnull(f);
        fclose(f);
    }
    ck_assert_uint_eq(kvd_count_segment_files(dir), 2);
    tu_rmrf(dir);
    free(dir);
    ck_assert_uint_eq(kvd_count_segment_files("/nonexistent/kvd-test"), 0);
}
END_TEST

/* In a child: a soft limit under the hard one is raised to the hard one;
 * more than the hard one (unprivileged) reduces maxclients, never the
 * limit. */
START_TEST(soft_nofile_is_raised_to_the_hard_limit)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit lim = {64, 200};
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0) _exit(10);
        kvd_nofile_result r;
        kvd_nofile_adjust(100, 34, &r);
        if (r.old_limit != 64 || r.limit != 200 || r.maxclients != 100 || r.wanted != 134) _exit(11);
        struct rlimit now;
        if (getrlimit(RLIMIT_NOFILE, &now) != 0 || now.rlim_cur != 200 || now.rlim_max != 200) _exit(12);
        /* Drop any privilege to raise the hard limit, then ask for more.
         * Where that is not possible (root without CAP_SETUID but with
         * CAP_SYS_RESOURCE) the unprivileged case cannot be seen here. */
        if (geteuid() == 0 && setuid(65534) != 0) {
            struct rlimit probe = {201, 201};
            if (setrlimit(RLIMIT_NOFILE, &probe) == 0) _exit(0);
        }
        kvd_nofile_adjust(10000, 34, &r);
        if (r.limit != 200 || r.maxclients != 166 || r.set_errno == 0) _exit(14);
        if (getrlimit(RLIMIT_NOFILE, &now) != 0 || now.rlim_cur != 200 || now.rlim_max != 200) _exit(15);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child step failed: status %d", status);
}
END_TEST

START_TEST(ratelimit_lets_one_a_period_through_and_counts_the_rest)
{
    kvd_ratelimit rl = {0, 0};
    uint64_t held = 99;
    ck_assert_int_eq(kvd_ratelimit_allow(&rl, 5000, 1000, &held), 1);
    ck_assert_uint_eq(held, 0);
    for (int i = 0; i < 500; i++) ck_assert_int_eq(kvd_ratelimit_allow(&rl, 5000 + i, 1000, &held), 0);
    ck_assert_int_eq(kvd_ratelimit_allow(&rl, 5999, 1000, &held), 0);
    ck_assert_int_eq(kvd_ratelimit_allow(&rl, 6000, 1000, &held), 1);
    ck_assert_uint_eq(held, 501);
    ck_assert_int_eq(kvd_ratelimit_allow(&rl, 9000, 1000, &held), 1);
    ck_assert_uint_eq(held, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("limits");
    TCase *to = tcase_create("output-buffer");
    tcase_add_test(to, hard_limit_closes_at_once);
    tcase_add_test(to, soft_limit_closes_only_after_its_seconds);
    tcase_add_test(to, soft_limit_must_be_passed_continuously);
    tcase_add_test(to, backpressure_marks_are_ordered);
    suite_add_tcase(s, to);
    TCase *tf = tcase_create("open-files");
    tcase_add_test(tf, reserved_fds_and_the_maxclients_that_fits);
    tcase_add_test(tf, segment_files_are_counted);
    tcase_add_test(tf, soft_nofile_is_raised_to_the_hard_limit);
    suite_add_tcase(s, tf);
    TCase *tr = tcase_create("ratelimit");
    tcase_add_test(tr, ratelimit_lets_one_a_period_through_and_counts_the_rest);
    suite_add_tcase(s, tr);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
