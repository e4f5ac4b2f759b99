/*
 * The log as replication sees it (kv/engine/kv_feed.c): a feed yields a
 * primary's data records verbatim, in order, from any sequence number the
 * log still holds as written, across segment rotations, and waits at the
 * end of the log; a replica appends them with kv_apply_records and
 * ends with the same keys, values, expiries and sequence numbers; a bad
 * or out-of-order record is refused whole; a compaction ends the history
 * before its output, and the retention bound keeps it; a snapshot holds
 * the files at one group boundary while the primary goes on.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store.h"
#include "testutil.h"

static kv_store *open_mem(kv_memfs *fs, const char *dir, uint64_t seg_max)
{
    kv_store *s;
    kvr_report rep;
    kv_status st = tu_open_mem(fs, dir, KV_FSYNC_ALWAYS, seg_max, KVR_TOLERATE_TAIL, &s, &rep);
    ck_assert_msg(st == KV_OK, "open %s: %s: %s", dir, kv_strerror(st), rep.message);
    kvr_report_free(&rep);
    return s;
}

/* Writes n mixed writes: puts (some with an expiry far ahead), deletes of
 * earlier keys, and 3-entry batches; the model follows. */
static void write_mix(kv_store *s, tu_model *m, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "key%d", i % 97);
        snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 0);
        if (i % 7 == 3) {
            kv_status st = kv_delete(s, k, strlen(k));
            ck_assert(st == KV_OK || st == KV_NOT_FOUND);
            tu_model_del(m, k, strlen(k));
        } else if (i % 5 == 0) {
            kv_batch *b = kv_batch_new();
            for (int j = 0; j < 3; j++) {
                char bk[32];
                snprintf(bk, sizeof bk, "b%d-%d", i % 13, j);
                ck_assert_int_eq(kv_batch_put(b, bk, strlen(bk), v, strlen(v), 0, (uint32_t)j), KV_OK);
                tu_model_put(m, bk, strlen(bk), v, strlen(v));
            }
            ck_assert_int_eq(kv_write(s, b), KV_OK);
            kv_batch_free(b);
        } else {
            uint64_t exp = (i % 3 == 0) ? 4000000000000ull + (uint64_t)i : 0;
            ck_assert_int_eq(kv_put(s, k, strlen(k), v, strlen(v), exp, (uint32_t)i), KV_OK);
            tu_model_put(m, k, strlen(k), v, strlen(v));
        }
    }
}

/* Whether apply() tells the writer the CRCs were checked. */
static int apply_crc_checked;

/* Applies buf to s and waits for the result. */
static kv_status apply(kv_store *s, const uint8_t *buf, size_t len)
{
    return kv_apply_records(s, buf, len, apply_crc_checked);
}

/* Feeds everything from `from` to the end of a's log into b. Returns the
 * records' bytes. */
static size_t feed_all(kv_store *a, kv_store *b, uint64_t from)
{
    kv_feed *f;
    ck_assert_int_eq(kv_feed_open(a, from, &f), KV_OK);
    ck_assert_uint_eq(kv_feed_next_seq(f), from);
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0, total = 0;
    kv_repl_pos pa;
    kv_repl_position(a, &pa);
    while (kv_feed_next_seq(f) <= pa.applied_seq) {
        ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 4096, 0), KV_OK);
        ck_assert_uint_gt(len, 0);
        ck_assert_int_eq(apply(b, buf, len), KV_OK);
        total += len;
    }
    ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 4096, 10), KV_OK);
    ck_assert_uint_eq(len, 0); /* nothing more: waited, then returned */
    free(buf);
    kv_feed_close(f);
    return total;
}

/* Every key of `a` reads the same in `b`: value, expiry, flags and
 * sequence number; and the counts match. */
static void assert_same(kv_store *a, kv_store *b, const tu_model *m)
{
    tu_assert_store_equals(b, m);
    for (size_t i = 0; i < m->n; i++) {
        kv_value va, vb;
        ck_assert_int_eq(kv_get(a, m->keys[i], m->klens[i], &va), KV_OK);
        ck_assert_int_eq(kv_get(b, m->keys[i], m->klens[i], &vb), KV_OK);
        ck_assert_uint_eq(va.seq, vb.seq);
        ck_assert_uint_eq(va.expire_ms, vb.expire_ms);
        ck_assert_uint_eq(va.flags, vb.flags);
        kv_value_free(&va);
        kv_value_free(&vb);
    }
    kv_repl_pos pa, pb;
    kv_repl_position(a, &pa);
    kv_repl_position(b, &pb);
    ck_assert_uint_eq(pa.applied_seq, pb.applied_seq);
    ck_assert_uint_eq(pb.synced_seq, pb.applied_seq); /* fsync always */
}

START_TEST(replica_ends_with_the_primarys_keys_and_sequence_numbers)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *a = open_mem(fs, "a", 4096), *b = open_mem(fs, "b", 8192);
    kv_set_replica(b, 1);
    tu_model m;
    tu_model_init(&m);
    write_mix(a, &m, 0, 600);
    kv_stats st;
    kv_get_stats(a, &st);
    ck_assert_uint_gt(st.segments, 5); /* the feed crosses rotations */
    ck_assert_uint_gt(feed_all(a, b, 1), 0);
    assert_same(a, b, &m);
    /* More writes, fed from where the replica stands. */
    write_mix(a, &m, 600, 200);
    kv_repl_pos pb;
    kv_repl_position(b, &pb);
    feed_all(a, b, pb.applied_seq + 1);
    assert_same(a, b, &m);
    /* The replica's log recovers to the same state. */
    ck_assert_int_eq(kv_close(b), KV_OK);
    b = open_mem(fs, "b", 8192);
    assert_same(a, b, &m);
    kv_close(a);
    kv_close(b);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(feed_starts_at_any_record_boundary_and_not_inside_a_batch)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *a = open_mem(fs, "a", 4096);
    tu_model m;
    tu_model_init(&m);
    write_mix(a, &m, 0, 300);
    kv_repl_pos p;
    kv_repl_position(a, &p);
    uint64_t seq = 1;
    int inside = 0;
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    /* Walk the whole log once, record by record, and reopen at each. */
    kv_feed *all;
    ck_assert_int_eq(kv_feed_open(a, 1, &all), KV_OK);
    while (seq <= p.applied_seq) {
        ck_assert_int_eq(kv_feed_read(all, &buf, &cap, &len, 1, 0), KV_OK); /* one record */
        kv_record r;
        ck_assert_int_eq(kv_record_decode(buf, len, &r), KV_OK);
        ck_assert_uint_eq(r.len, len);
        ck_assert_uint_eq(r.seq, seq);
        kv_feed *f;
        ck_assert_int_eq(kv_feed_open(a, seq, &f), KV_OK);
        size_t l2;
        uint8_t *b2 = NULL;
        size_t c2 = 0;
        ck_assert_int_eq(kv_feed_read(f, &b2, &c2, &l2, 1, 0), KV_OK);
        ck_assert_uint_eq(l2, len);
        ck_assert(memcmp(b2, buf, len) == 0);
        free(b2);
        kv_feed_close(f);
        if (r.type == KV_REC_BATCH) {
            ck_assert_int_eq(kv_feed_open(a, seq + 1, &f), KV_NOT_FOUND);
            inside++;
        }
        seq = kv_record_last_seq(&r) + 1;
    }
    ck_assert_int_gt(inside, 10);
    kv_feed_close(all);
    kv_feed *f;
    ck_assert_int_eq(kv_feed_open(a, p.applied_seq + 2, &f), KV_NOT_FOUND); /* past the end */
    ck_assert_int_eq(kv_feed_open(a, 0, &f), KV_NOT_FOUND);
    free(buf);
    kv_close(a);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

typedef struct later {
    kv_store *s;
    int n;
} later;

static void *write_later(void *p)
{
    later *l = p;
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    for (int i = 0; i < l->n; i++) ck_assert_int_eq(kv_put(l->s, "late", 4, "v", 1, 0, 0), KV_OK);
    return NULL;
}

START_TEST(feed_waits_at_the_end_of_the_log_and_wakes_for_a_write)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *a = open_mem(fs, "a", 4096);
    ck_assert_int_eq(kv_put(a, "k", 1, "v", 1, 0, 0), KV_OK);
    kv_feed *f;
    ck_assert_int_eq(kv_feed_open(a, 2, &f), KV_OK);
    uint8_t *buf = NULL;
    size_t cap = 0, len = 1;
    ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 4096, 20), KV_OK);
    ck_assert_uint_eq(len, 0);
    later l = {a, 200}; /* enough to rotate segments while the feed waits */
    pthread_t th;
    pthread_create(&th, NULL, write_later, &l);
    uint64_t got = 0;
    while (got < 200) {
        ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 4096, 5000), KV_OK);
        ck_assert_uint_gt(len, 0);
        for (size_t off = 0; off < len;) {
            kv_record r;
            ck_assert_int_eq(kv_record_decode(buf + off, len - off, &r), KV_OK);
            ck_assert_uint_eq(r.seq, 2 + got);
            got++;
            off += r.len;
        }
    }
    pthread_join(th, NULL);
    kv_stats st;
    kv_get_stats(a, &st);
    ck_assert_uint_gt(st.segments, 2);
    free(buf);
    kv_feed_close(f);
    kv_close(a);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(bad_or_out_of_order_records_are_refused_whole)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *a = open_mem(fs, "a", 1 << 20), *b = open_mem(fs, "b", 1 << 20);
    tu_model m;
    tu_model_init(&m);
    write_mix(a, &m, 0, 40);
    kv_feed *f;
    ck_assert_int_eq(kv_feed_open(a, 1, &f), KV_OK);
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 1 << 20, 0), KV_OK);
    kv_feed_close(f);
    /* Out of order: starting at the second record. */
    kv_record r;
    ck_assert_int_eq(kv_record_decode(buf, len, &r), KV_OK);
    ck_assert_int_eq(apply(b, buf + r.len, len - r.len), KV_INVALID);
    /* Every single flipped bit of the whole run: refused, nothing written. */
    for (size_t bit = 0; bit < len * 8; bit += 7) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_int_eq(apply(b, buf, len), KV_CORRUPT);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* Told the CRCs were checked, the writer still refuses every flip in
     * a record's header past its CRC field (hcrc, fields, lengths), and
     * records out of order. */
    apply_crc_checked = 1;
    for (size_t bit = 32; bit < KV_REC_HEADER_SIZE * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_int_eq(apply(b, buf, len), KV_CORRUPT);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    ck_assert_int_eq(apply(b, buf + r.len, len - r.len), KV_INVALID);
    apply_crc_checked = 0;
    kv_stats st;
    kv_get_stats(b, &st);
    ck_assert_uint_eq(st.records, 0);
    ck_assert_uint_eq(st.last_seq, 0);
    ck_assert_int_eq(apply(b, buf, len), KV_OK);
    assert_same(a, b, &m);
    free(buf);
    kv_close(a);
    kv_close(b);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(compaction_ends_the_history_unless_retention_keeps_it)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *a = open_mem(fs, "a", 4096);
    tu_model m;
    tu_model_init(&m);
    write_mix(a, &m, 0, 400);
    kv_set_retention(a, 1ull << 40);
    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(a, &cr), KV_OK);
    ck_assert_uint_eq(cr.segments_in, 0); /* everything retained */
    kv_feed *f;
    ck_assert_int_eq(kv_feed_open(a, 1, &f), KV_OK);
    kv_feed_close(f);
    /* Retain only the newest 6 KiB: the older segments are compacted. */
    kv_set_retention(a, 6144);
    ck_assert_int_eq(kv_compact(a, &cr), KV_OK);
    ck_assert_uint_gt(cr.segments_in, 0);
    ck_assert_int_eq(kv_feed_open(a, 1, &f), KV_NOT_FOUND);
    /* The retained history still feeds a replica that has the rest. */
    kv_repl_pos p;
    kv_repl_position(a, &p);
    uint64_t from = 1;
    while (from <= p.applied_seq && kv_feed_open(a, from, &f) != KV_OK) from++;
    ck_assert_uint_lt(from, p.applied_seq);
    kv_feed_close(f);
    ck_assert_int_eq(kv_feed_open(a, from, &f), KV_OK);
    uint8_t *buf = NULL;
    size_t cap = 0, len, total = 0;
    do {
        ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 1 << 20, 0), KV_OK);
        total += len;
    } while (len > 0);
    ck_assert_uint_ge(total, 6144 / 2);
    free(buf);
    kv_feed_close(f);
    kv_close(a);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(snapshot_holds_the_files_at_one_group_boundary)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *a = open_mem(fs, "a", 4096);
    tu_model m;
    tu_model_init(&m);
    write_mix(a, &m, 0, 300);
    kv_snapshot snap;
    ck_assert_int_eq(kv_snapshot_hold(a, &snap), KV_OK);
    tu_model at_snap;
    tu_model_copy(&at_snap, &m);
    ck_assert_uint_gt(snap.n, 2);
    /* The feed that follows the snapshot, opened with it: it pins the
     * segments it has yet to read. */
    kv_feed *f;
    ck_assert_int_eq(kv_feed_open(a, snap.seq + 1, &f), KV_OK);
    /* The primary goes on: writes, rotations and a compaction. */
    write_mix(a, &m, 300, 300);
    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(a, &cr), KV_OK);
    ck_assert_uint_gt(cr.segments_in, 0);
    /* Copy the snapshot's files into a new directory and open it. */
    const kv_io *io = kv_store_io(a);
    for (size_t i = 0; i < snap.n; i++) {
        uint8_t *b = malloc(snap.files[i].size);
        ck_assert_int_eq(kv_io_read_full(io, snap.files[i].fd, b, snap.files[i].size, 0), 0);
        char path[64];
        tu_seg_path(path, sizeof path, "c", snap.files[i].file_id);
        if (i == 0) ck_assert_int_eq(io->mkdir(io->ctx, "c"), 0);
        ck_assert_int_eq(kv_memfs_write(fs, path, b, snap.files[i].size), 0);
        free(b);
    }
    uint64_t seq = snap.seq;
    kv_snapshot_release(a, &snap);
    kv_store *c = open_mem(fs, "c", 4096);
    tu_assert_store_equals(c, &at_snap);
    kv_repl_pos pc;
    kv_repl_position(c, &pc);
    ck_assert_uint_eq(pc.applied_seq, seq);
    /* And the primary's feed from there brings it up to date. */
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    do {
        ck_assert_int_eq(kv_feed_read(f, &buf, &cap, &len, 4096, 0), KV_OK);
        if (len) ck_assert_int_eq(apply(c, buf, len), KV_OK);
    } while (len > 0);
    free(buf);
    kv_feed_close(f);
    tu_assert_store_equals(c, &m);
    kv_close(a);
    kv_close(c);
    tu_model_free(&m);
    tu_model_free(&at_snap);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(replica_store_writes_no_expiry_tombstones)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *b = open_mem(fs, "b", 1 << 20);
    ck_assert_int_eq(kv_put(b, "gone", 4, "v", 1, 1000, 0), KV_OK); /* long expired */
    kv_set_replica(b, 1);
    kv_value v;
    ck_assert_int_eq(kv_get(b, "gone", 4, &v), KV_NOT_FOUND);
    ck_assert_uint_eq(kv_expire_sweep(b, 100), 0);
    kv_expire_flush(b);
    kv_stats st;
    kv_get_stats(b, &st);
    ck_assert_uint_eq(st.records, 1);
    ck_assert_uint_eq(st.expiry_tombstones, 0);
    kv_set_replica(b, 0); /* promoted: it writes them again */
    ck_assert_int_eq(kv_get(b, "gone", 4, &v), KV_NOT_FOUND);
    kv_expire_flush(b);
    kv_get_stats(b, &st);
    ck_assert_uint_eq(st.expiry_tombstones, 1);
    kv_close(b);
    kv_memfs_free(fs);
}
END_TEST


/* Copies the snapshot's files into directory `to` (created). */
static void copy_snapshot(kv_store *a, const kv_snapshot *snap, const char *to)
{
    const kv_io *io = kv_store_io(a);
    ck_assert_int_eq(io->mkdir(io->ctx, to), 0);
    for (size_t i = 0; i < snap->n; i++) {
        uint8_t *b = malloc(snap->files[i].size);
        ck_assert_int_eq(kv_io_read_full(io, snap->files[i].fd, b, snap->files[i].size, 0), 0);
        char path[4200];
        tu_seg_path(path, sizeof path, to, snap->files[i].file_id);
        int fd = io->open(io->ctx, path, KV_O_RDWR | KV_O_CREAT);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(kv_io_write_full(io, fd, b, snap->files[i].size, 0), 0);
        io->close(io->ctx, fd);
        free(b);
    }
}

static kv_store *open_posix(const char *dir)
{
    kv_options o;
    kv_options_init(&o);
    o.segment_max_bytes = 4096;
    kv_store *s;
    kvr_report rep;
    kv_status st = kv_open(dir, &o, &s, &rep);
    ck_assert_msg(st == KV_OK, "open %s: %s: %s", dir, kv_strerror(st), rep.message);
    kvr_report_free(&rep);
    return s;
}

typedef struct reader_arg {
    kv_store *s;
    int stop; /* atomic */
    long reads, bad; /* reads: atomic */
} reader_arg;

/* Reads "old"/"new" markers while the contents switch: every read sees
 * one whole state or the other. */
static void *switch_reader(void *p)
{
    reader_arg *r = p;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        kv_value v;
        kv_status st = kv_get(r->s, "marker", 6, &v);
        if (st == KV_OK) {
            if (!((v.len == 3 && !memcmp(v.data, "old", 3)) || (v.len == 3 && !memcmp(v.data, "new", 3)))) r->bad++;
            kv_value_free(&v);
        } else {
            r->bad++;
        }
        __atomic_add_fetch(&r->reads, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

START_TEST(full_sync_replaces_the_contents_in_one_step)
{
    char *root = tu_tmpdir();
    char pa[4096], pb[4096], psync[4200];
    snprintf(pa, sizeof pa, "%s/a", root);
    snprintf(pb, sizeof pb, "%s/b", root);
    snprintf(psync, sizeof psync, "%s/b.sync", root);
    kv_store *a = open_posix(pa), *b = open_posix(pb);
    tu_model m, old;
    tu_model_init(&m);
    tu_model_init(&old);
    ck_assert_int_eq(kv_put(a, "marker", 6, "new", 3, 0, 0), KV_OK);
    tu_model_put(&m, "marker", 6, "new", 3);
    write_mix(a, &m, 0, 300);
    ck_assert_int_eq(kv_put(b, "marker", 6, "old", 3, 0, 0), KV_OK);
    tu_model_put(&old, "marker", 6, "old", 3);
    ck_assert_int_eq(kv_put(b, "only-old", 8, "x", 1, 0, 0), KV_OK);
    tu_model_put(&old, "only-old", 8, "x", 1);
    kv_set_replica(b, 1);
    kv_snapshot snap;
    ck_assert_int_eq(kv_snapshot_hold(a, &snap), KV_OK);
    copy_snapshot(a, &snap, psync);
    uint64_t seq = snap.seq;
    kv_snapshot_release(a, &snap);
    /* A snapshot with a flipped byte in a sealed segment is refused (a
     * snapshot comes without hint files: its first open reads every
     * record): nothing switches, the old contents stay served. */
    kvr_report rep;
    char seg1[4300];
    tu_seg_path(seg1, sizeof seg1, psync, 1);
    FILE *fp = fopen(seg1, "r+b");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fseek(fp, 200, SEEK_SET), 0);
    int c0 = fgetc(fp);
    ck_assert_int_eq(fseek(fp, 200, SEEK_SET), 0);
    fputc(c0 ^ 0x10, fp);
    fclose(fp);
    ck_assert_int_eq(kv_replace_dir(b, psync, seq, &rep), KV_CORRUPT);
    ck_assert_ptr_nonnull(strstr(rep.message, "0000000001.seg"));
    kvr_report_free(&rep);
    tu_assert_store_equals(b, &old);
    fp = fopen(seg1, "r+b");
    ck_assert_int_eq(fseek(fp, 200, SEEK_SET), 0);
    fputc(c0, fp);
    fclose(fp);
    /* So is one that ends elsewhere than announced. */
    ck_assert_int_eq(kv_replace_dir(b, psync, seq + 1, &rep), KV_CORRUPT);
    kvr_report_free(&rep);
    tu_assert_store_equals(b, &old);
    reader_arg ra = {b, 0, 0, 0};
    pthread_t th;
    pthread_create(&th, NULL, switch_reader, &ra);
    while (__atomic_load_n(&ra.reads, __ATOMIC_ACQUIRE) == 0) sched_yield(); /* reading before the switch */
    ck_assert_int_eq(kv_replace_dir(b, psync, seq, &rep), KV_OK);
    kvr_report_free(&rep);
    __atomic_store_n(&ra.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    ck_assert_int_eq(ra.bad, 0);
    ck_assert_int_gt(ra.reads, 0);
    tu_assert_store_equals(b, &m);
    /* The old contents are at the snapshot's path now. */
    kv_store *o = open_posix(psync);
    tu_assert_store_equals(o, &old);
    kv_close(o);
    /* The replica goes on from the snapshot's end, and keeps it all. */
    write_mix(a, &m, 300, 100);
    feed_all(a, b, seq + 1);
    tu_assert_store_equals(b, &m);
    ck_assert_int_eq(kv_close(b), KV_OK);
    b = open_posix(pb);
    assert_same(a, b, &m);
    kv_close(a);
    kv_close(b);
    tu_model_free(&m);
    tu_model_free(&old);
    tu_rmrf(root);
    free(root);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("feed");
    TCase *tc = tcase_create("feed");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, replica_ends_with_the_primarys_keys_and_sequence_numbers);
    tcase_add_test(tc, feed_starts_at_any_record_boundary_and_not_inside_a_batch);
    tcase_add_test(tc, feed_waits_at_the_end_of_the_log_and_wakes_for_a_write);
    tcase_add_test(tc, bad_or_out_of_order_records_are_refused_whole);
    tcase_add_test(tc, compaction_ends_the_history_unless_retention_keeps_it);
    tcase_add_test(tc, snapshot_holds_the_files_at_one_group_boundary);
    tcase_add_test(tc, replica_store_writes_no_expiry_tombstones);
    tcase_add_test(tc, full_sync_replaces_the_contents_in_one_step);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
