/*
 * Fault injection: for every N, the Nth I/O call of a small workload fails
 * with EIO, and again with ENOSPC. Whatever N hits (open, lock, recovery,
 * a record write, an fdatasync, a segment rotation), the store must:
 *  - never lose a write it acknowledged before the failure,
 *  - refuse every write after a failed write or sync (fail-stop) with a
 *    clear reason, and keep serving reads,
 *  - leave a directory that recovers, both as it is and after a power
 *    cut that drops everything not synced,
 *  - apply the write in flight at the failure entirely or not at all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_store.h"
#include "testutil.h"

#define DIR "db"

typedef struct op {
    int kind; /* 0 put, 1 delete, 2 batch (put, put, delete), 3 get */
    int key;
    int val;
} op;

static void op_apply(tu_model *m, const op *o)
{
    char k[16], v[64];
    snprintf(k, sizeof k, "key%d", o->key);
    snprintf(v, sizeof v, "value-%d-%0*d", o->val, 20 + o->val % 30, o->val);
    switch (o->kind) {
    case 0: tu_model_put(m, k, strlen(k), v, strlen(v)); break;
    case 1: tu_model_del(m, k, strlen(k)); break;
    case 2: {
        char k2[16], k3[16];
        snprintf(k2, sizeof k2, "key%d", (o->key + 1) % 9);
        snprintf(k3, sizeof k3, "key%d", (o->key + 2) % 9);
        tu_model_put(m, k, strlen(k), v, strlen(v));
        tu_model_put(m, k2, strlen(k2), v, strlen(v));
        tu_model_del(m, k3, strlen(k3));
        break;
    }
    default: break;
    }
}

static kv_status op_run(kv_store *s, const op *o)
{
    char k[16], v[64];
    snprintf(k, sizeof k, "key%d", o->key);
    snprintf(v, sizeof v, "value-%d-%0*d", o->val, 20 + o->val % 30, o->val);
    switch (o->kind) {
    case 0: return kv_put(s, k, strlen(k), v, strlen(v), 0, 0);
    case 1: {
        kv_status st = kv_delete(s, k, strlen(k));
        return st == KV_NOT_FOUND ? KV_OK : st;
    }
    case 2: {
        char k2[16], k3[16];
        snprintf(k2, sizeof k2, "key%d", (o->key + 1) % 9);
        snprintf(k3, sizeof k3, "key%d", (o->key + 2) % 9);
        kv_batch *b = kv_batch_new();
        kv_batch_put(b, k, strlen(k), v, strlen(v), 0, 0);
        kv_batch_put(b, k2, strlen(k2), v, strlen(v), 0, 0);
        kv_batch_delete(b, k3, strlen(k3));
        kv_status st = kv_write(s, b);
        kv_batch_free(b);
        return st;
    }
    default: {
        kv_value val;
        kv_status st = kv_get(s, k, strlen(k), &val);
        kv_value_free(&val);
        ck_assert_msg(st != KV_CORRUPT, "a read returned corruption");
        return KV_OK; /* a failed read is not a failed write */
    }
    }
}

static size_t make_workload(op *ops, size_t n)
{
    uint32_t x = 7;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        ops[i].kind = (int)((x >> 8) % 10);
        ops[i].kind = ops[i].kind < 5 ? 0 : ops[i].kind < 7 ? 1 : ops[i].kind < 9 ? 2 : 3;
        ops[i].key = (int)((x >> 16) % 9);
        ops[i].val = (int)i;
    }
    return n;
}

/* Does the store hold exactly model m? (No ck_assert: returns 0/1.) */
static int store_matches(kv_store *s, const tu_model *m)
{
    kv_stats st;
    kv_get_stats(s, &st);
    if (st.keys != m->n) return 0;
    for (size_t i = 0; i < m->n; i++) {
        kv_value v;
        if (kv_get(s, m->keys[i], m->klens[i], &v) != KV_OK) return 0;
        int same = v.len == m->vlens[i] && memcmp(v.data, m->vals[i], v.len) == 0;
        kv_value_free(&v);
        if (!same) return 0;
    }
    return 1;
}

static void check_recovers(kv_memfs *fs, const tu_model *before, const tu_model *after, const char *what,
                           uint64_t n, int err)
{
    kv_store *s;
    kvr_report rep;
    kv_status st = tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 4096, KVR_TOLERATE_TAIL, &s, &rep);
    ck_assert_msg(st == KV_OK, "%s, call %llu failing with %s: reopen failed: %s: %s", what, (unsigned long long)n,
                  strerror(err), kv_strerror(st), rep.message);
    int ok = store_matches(s, before) || (after && store_matches(s, after));
    ck_assert_msg(ok, "%s, call %llu failing with %s: recovered state is neither the acknowledged state nor "
                      "that plus the write in flight", what, (unsigned long long)n, strerror(err));
    kvr_report_free(&rep);
    kv_close(s);
}

/* Runs the workload with call n failing; returns 1 if the fault fired. */
static int run_one(const kv_io *base_io, kv_memfs *mem, const op *ops, size_t nops, uint64_t n, int err,
                   size_t *failed_writes, tu_model *acked_out, tu_model *inflight_out, int *have_inflight_out)
{
    kv_faultio *f = kv_faultio_new(base_io);
    kv_faultio_arm(f, n, err, 0);
    kv_options o;
    kv_options_init(&o);
    o.io = kv_faultio_io(f);
    o.segment_max_bytes = 4096;
    kv_store *s;
    kvr_report rep;
    tu_model acked, inflight;
    tu_model_init(&acked);
    tu_model_init(&inflight);
    int have_inflight = 0;
    kv_status st = kv_open(DIR, &o, &s, &rep);
    if (st != KV_OK) {
        ck_assert_msg(kv_faultio_fired(f), "open failed without a fault: %s", rep.message);
        ck_assert_msg(rep.message[0] != 0 || st == err, "open failed (%s) without a message", kv_strerror(st));
        kvr_report_free(&rep);
    } else {
        kvr_report_free(&rep);
        for (size_t i = 0; i < nops; i++) {
            st = op_run(s, &ops[i]);
            if (st == KV_OK) {
                op_apply(&acked, &ops[i]);
                continue;
            }
            /* The first failed write: the store is in fail-stop now. */
            ck_assert_msg(st == err, "write failed with %s, expected %s", kv_strerror(st), strerror(err));
            (*failed_writes)++;
            tu_model_copy(&inflight, &acked);
            op_apply(&inflight, &ops[i]);
            have_inflight = 1;
            char why[512];
            ck_assert_int_eq(kv_failstop_reason(s, why, sizeof why), 1);
            ck_assert_ptr_nonnull(strstr(why, "refuses writes"));
            if (err == ENOSPC) ck_assert_ptr_nonnull(strstr(why, "disk full"));
            /* Sticky: later writes are refused even though the disk would
             * now accept them, and reads go on. */
            ck_assert_int_eq(kv_put(s, "after", 5, "x", 1, 0, 0), KV_FAILSTOP);
            ck_assert_int_eq(kv_sync(s), KV_FAILSTOP);
            for (size_t k = 0; k < acked.n; k++) {
                kv_value v;
                ck_assert_int_eq(kv_get(s, acked.keys[k], acked.klens[k], &v), KV_OK);
                ck_assert_uint_eq(v.len, acked.vlens[k]);
                ck_assert(memcmp(v.data, acked.vals[k], v.len) == 0);
                kv_value_free(&v);
            }
            break;
        }
        kv_close(s);
    }
    int fired = kv_faultio_fired(f);
    kv_faultio_free(f);
    if (mem) {
        /* As the process left it, and after a power cut right then. */
        kv_memfs *clean = kv_memfs_clone(mem);
        check_recovers(clean, &acked, have_inflight ? &inflight : NULL, "process stop", n, err);
        kv_memfs_free(clean);
        kv_crash_spec drop = {0, KV_TEAR_NONE, 512, 0, 0, 1};
        kv_memfs *cut = kv_memfs_crash(mem, &drop);
        check_recovers(cut, &acked, have_inflight ? &inflight : NULL, "power cut", n, err);
        kv_memfs_free(cut);
    }
    *acked_out = acked;
    *inflight_out = inflight;
    *have_inflight_out = have_inflight;
    return fired;
}

static void every_n(int err)
{
    op ops[60];
    size_t nops = make_workload(ops, 60);
    uint64_t n;
    size_t failed_writes = 0;
    for (n = 1;; n++) {
        kv_memfs *mem = kv_memfs_new();
        tu_model acked, inflight;
        int have_inflight;
        int fired = run_one(kv_memfs_io(mem), mem, ops, nops, n, err, &failed_writes, &acked, &inflight,
                            &have_inflight);
        tu_model_free(&acked);
        tu_model_free(&inflight);
        kv_memfs_free(mem);
        if (!fired) break;
        ck_assert_uint_lt(n, 100000);
    }
    printf("fault injection (%s): failed each of the %llu I/O calls of a %zu-operation workload in turn; "
           "%zu of them failed a write and put the store in fail-stop; all recovered\n",
           strerror(err), (unsigned long long)(n - 1), nops, failed_writes);
    ck_assert_uint_gt(n, 100);
    ck_assert_uint_gt(failed_writes, 30);
}

START_TEST(every_io_call_failing_with_eio)
{
    every_n(EIO);
}
END_TEST

START_TEST(every_io_call_failing_with_enospc)
{
    every_n(ENOSPC);
}
END_TEST

/* The same on the real filesystem through the POSIX layer (fewer ops: each
 * acknowledged write costs a real fdatasync). */
START_TEST(every_io_call_failing_on_posix)
{
    op ops[12];
    size_t nops = make_workload(ops, 12);
    size_t failed_writes = 0;
    char *root = tu_tmpdir();
    uint64_t n;
    for (n = 1;; n++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/run%llu", root, (unsigned long long)n);
        ck_assert_int_eq(kv_io_posix()->mkdir(NULL, dir), 0);
        /* Work inside the run's directory: DIR is relative. */
        char cwd[4200];
        ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
        ck_assert_int_eq(chdir(dir), 0);
        tu_model acked, inflight;
        int have_inflight;
        int fired = run_one(kv_io_posix(), NULL, ops, nops, n, EIO, &failed_writes, &acked, &inflight,
                            &have_inflight);
        /* Reopen on disk: acknowledged writes are all there. */
        kv_store *s;
        kvr_report rep;
        kv_status st = kv_open(DIR, NULL, &s, &rep);
        ck_assert_msg(st == KV_OK, "posix reopen after fault at call %llu: %s", (unsigned long long)n, rep.message);
        ck_assert_msg(store_matches(s, &acked) || (have_inflight && store_matches(s, &inflight)),
                      "posix, call %llu failing: recovered state lost an acknowledged write", (unsigned long long)n);
        kv_close(s);
        kvr_report_free(&rep);
        tu_model_free(&acked);
        tu_model_free(&inflight);
        ck_assert_int_eq(chdir(cwd), 0);
        if (!fired) break;
    }
    ck_assert_uint_gt(failed_writes, 5);
    tu_rmrf(root);
    free(root);
}
END_TEST

/* An I/O layer that fails the next directory fsync once when told to. */
static const kv_io *dirsync_base;
static int dirsync_fail;
static int failing_fsync_dir(void *ctx, const char *path)
{
    (void)ctx;
    if (dirsync_fail) {
        dirsync_fail = 0;
        return -EIO;
    }
    return dirsync_base->fsync_dir(dirsync_base->ctx, path);
}

/* A failed directory fsync while a new segment is created leaves that
 * segment's entry not durable. After a restart (no power cut), writes land
 * in that segment; the restart must make the entry durable before it
 * acknowledges any, or a later power cut loses them. */
START_TEST(restart_makes_a_segment_created_before_a_failed_directory_sync_durable)
{
    kv_memfs *mem = kv_memfs_new();
    dirsync_base = kv_memfs_io(mem);
    kv_io io = *dirsync_base;
    io.fsync_dir = failing_fsync_dir;
    kv_options o;
    kv_options_init(&o);
    o.io = &io;
    o.segment_max_bytes = 4096;
    kv_store *s;
    ck_assert_int_eq(kv_open(DIR, &o, &s, NULL), KV_OK);
    char k[32], v[200];
    memset(v, 'v', sizeof v);
    dirsync_fail = 1; /* the next fsync_dir is the first rotation's */
    kv_status st = KV_OK;
    for (int i = 0; i < 40 && st == KV_OK; i++) {
        int n = snprintf(k, sizeof k, "k%d", i);
        st = kv_put(s, k, (size_t)n, v, sizeof v, 0, 0);
    }
    ck_assert_int_eq(st, EIO);
    ck_assert_int_eq(dirsync_fail, 0);
    kv_close(s);
    char p2[64];
    tu_seg_path(p2, sizeof p2, DIR, 2);
    ck_assert(kv_memfs_exists(mem, p2)); /* created; its entry is not durable */

    /* Restart on the same (not power-cut) filesystem and write. */
    ck_assert_int_eq(kv_open(DIR, &o, &s, NULL), KV_OK);
    ck_assert_int_eq(kv_put(s, "after", 5, "restart", 7, 0, 0), KV_OK);
    kv_stats stt;
    kv_get_stats(s, &stt);
    ck_assert_uint_eq(stt.active_segment, 2);
    kv_close(s);
    /* Power cut: only durable state survives. */
    kv_crash_spec drop = {0, KV_TEAR_NONE, 512, 0, 0, 1};
    kv_memfs *cut = kv_memfs_crash(mem, &drop);
    o.io = kv_memfs_io(cut);
    ck_assert_int_eq(kv_open(DIR, &o, &s, NULL), KV_OK);
    kv_value val;
    ck_assert_int_eq(kv_get(s, "after", 5, &val), KV_OK);
    ck_assert_mem_eq(val.data, "restart", 7);
    kv_value_free(&val);
    kv_close(s);
    kv_memfs_free(cut);
    kv_memfs_free(mem);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("nth-call");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, every_io_call_failing_with_eio);
    tcase_add_test(tc, every_io_call_failing_with_enospc);
    tcase_add_test(tc, every_io_call_failing_on_posix);
    tcase_add_test(tc, restart_makes_a_segment_created_before_a_failed_directory_sync_durable);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
