/*
 * Recovery against every corruption shape, one named test per shape (the
 * test names are the specification, as in LevelDB's log_test.cc), the
 * recovery modes, idempotency, verified reads, and exhaustive single-bit
 * flips over a small log.
 *
 * The base log: segment 1 holding five put records k1..k5 = v1..v5 with
 * sequence numbers 1..5, each 48 bytes, at offsets 32, 80, 128, 176, 224;
 * the segment ends at 272.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store.h"
#include "testutil.h"

#define DIR "db"
#define REC(i) (32u + 48u * (unsigned)((i) - 1)) /* offset of record k<i> */
#define BASE_END 272u

static kv_memfs *fs;
static uint8_t *seg;
static size_t seg_len;
static char seg1[64];

static void setup(void)
{
    fs = kv_memfs_new();
    ck_assert_int_eq(kv_memfs_io(fs)->mkdir(kv_memfs_io(fs)->ctx, DIR), 0);
    tu_segment_start(&seg, &seg_len, 1);
    char k[8], v[8];
    for (int i = 1; i <= 5; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        tu_append_record(&seg, &seg_len, KV_REC_PUT, (uint64_t)i, k, v);
    }
    ck_assert_uint_eq(seg_len, BASE_END);
    tu_seg_path(seg1, sizeof seg1, DIR, 1);
}

static void teardown(void)
{
    free(seg);
    kv_memfs_free(fs);
}

static void install(void)
{
    ck_assert_int_eq(kv_memfs_write(fs, seg1, seg, seg_len), 0);
}

static void append_bytes(const void *p, size_t n)
{
    seg = realloc(seg, seg_len + n);
    memcpy(seg + seg_len, p, n);
    seg_len += n;
}

static size_t file_size(const char *path)
{
    uint8_t *b;
    size_t n;
    if (kv_memfs_read(fs, path, &b, &n) < 0) return (size_t)-1;
    free(b);
    return n;
}

static void expect_keys(kv_store *s, int first, int last)
{
    tu_model m;
    tu_model_init(&m);
    char k[8], v[8];
    for (int i = first; i <= last; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        tu_model_put(&m, k, strlen(k), v, strlen(v));
    }
    tu_assert_store_equals(s, &m);
    tu_model_free(&m);
}

/* Opens with the given mode, expecting success and a cut of `cut` bytes
 * at `off`. The cut bytes up to their last non-zero byte are a torn tail,
 * saved beside the segment; the zero bytes after it are unwritten space
 * (KVR_UNWRITTEN), cut without being saved. Checks both, the saved bytes
 * and the segment's new size. */
static kv_store *open_expect_cut(kvr_mode mode, uint64_t off, uint64_t cut)
{
    uint64_t saved = cut;
    while (saved > 0 && seg[off + saved - 1] == 0) saved--;
    kv_store *s;
    kvr_report rep;
    kv_status st = tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, mode, &s, &rep);
    ck_assert_msg(st == KV_OK, "open: %s: %s", kv_strerror(st), rep.message);
    ck_assert_uint_eq(rep.torn_bytes, saved);
    ck_assert_uint_eq(rep.unwritten_bytes, cut - saved);
    ck_assert_uint_eq(rep.torn_offset, saved ? off : 0);
    ck_assert_uint_eq(rep.torn_segment, saved ? 1 : 0);
    char torn[128];
    snprintf(torn, sizeof torn, "%s.%llu.torn", seg1, (unsigned long long)off);
    uint8_t *b;
    size_t n;
    if (saved) {
        ck_assert_int_eq(kv_memfs_read(fs, torn, &b, &n), 0);
        ck_assert_uint_eq(n, saved);
        ck_assert(memcmp(b, seg + off, saved) == 0); /* the cut bytes are kept */
        free(b);
    } else {
        ck_assert(!kv_memfs_exists(fs, torn)); /* zeros only: nothing to keep */
    }
    ck_assert_uint_eq(file_size(seg1), off);
    kvr_report_free(&rep);
    return s;
}

/* Opens expecting a refusal; checks the message and that nothing changed. */
static void open_expect_refusal(kvr_mode mode, uint64_t off, const char *kind)
{
    kv_store *s;
    kvr_report rep;
    kv_status st = tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, mode, &s, &rep);
    ck_assert_int_eq(st, KV_CORRUPT);
    ck_assert_ptr_null(s);
    char at[64];
    snprintf(at, sizeof at, "offset %llu ", (unsigned long long)off);
    ck_assert_msg(strstr(rep.message, at) != NULL, "message lacks '%s': %s", at, rep.message);
    ck_assert_msg(strstr(rep.message, "0000000001.seg") != NULL, "message lacks the file: %s", rep.message);
    ck_assert_msg(strstr(rep.message, "kvfsck " DIR) != NULL, "message lacks the kvfsck command: %s", rep.message);
    ck_assert_msg(strstr(rep.message, kind) != NULL, "message lacks '%s': %s", kind, rep.message);
    uint8_t *b;
    size_t n;
    ck_assert_int_eq(kv_memfs_read(fs, seg1, &b, &n), 0);
    ck_assert_uint_eq(n, seg_len);
    ck_assert(memcmp(b, seg, n) == 0); /* a refusal changes nothing */
    free(b);
    kvr_report_free(&rep);
}

START_TEST(truncated_header_is_torn_tail)
{
    uint8_t extra[64];
    kv_record_encode(extra, KV_REC_PUT, 0, 6, 0, 0, "k6", 2, "v6", 2);
    append_bytes(extra, 20); /* 20 of the 44 header bytes */
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, 20);
    expect_keys(s, 1, 5);
    /* Writes go on after the cut, and survive a reopen. */
    ck_assert_int_eq(kv_put(s, "k6", 2, "v6", 2, 0, 0), KV_OK);
    ck_assert_int_eq(kv_close(s), KV_OK);
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    expect_keys(s, 1, 6);
    kv_close(s);
}
END_TEST

START_TEST(truncated_payload_is_torn_tail)
{
    uint8_t extra[128];
    size_t n = kv_record_encode(extra, KV_REC_PUT, 0, 6, 0, 0, "k6", 2, "a-longer-value-for-k6", 21);
    append_bytes(extra, n - 10); /* header whole, payload cut */
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, n - 10);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(length_past_end_of_file_is_torn_tail)
{
    uint8_t extra[128];
    kv_record_encode(extra, KV_REC_PUT, 0, 6, 0, 0, "k6", 2, "a-longer-value-for-k6", 21);
    append_bytes(extra, KV_REC_HEADER_SIZE); /* only the header: len runs past EOF */
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, KV_REC_HEADER_SIZE);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(zero_filled_tail_is_unwritten_space_cut_without_a_problem)
{
    uint8_t zeros[4096] = {0};
    append_bytes(zeros, sizeof zeros);
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, sizeof zeros);
    ck_assert_uint_eq(kv_recovery_report(s)->problems, 0);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(torn_record_in_preallocated_space_saves_only_its_written_bytes)
{
    /* A group cut short inside zero-filled space: the record's first 20
     * bytes (its header no longer checks out), then the zeros that were
     * there before it. */
    uint8_t extra[4096] = {0};
    kv_record_encode(extra, KV_REC_PUT, 0, 6, 0, 0, "k6", 2, "v6", 2);
    memset(extra + 20, 0, sizeof extra - 20);
    append_bytes(extra, sizeof extra);
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, sizeof extra);
    ck_assert_uint_lt(kv_recovery_report(s)->torn_bytes, 21); /* the zeros are not kept */
    ck_assert_uint_gt(kv_recovery_report(s)->torn_bytes, 0);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(absolute_mode_opens_past_unwritten_space)
{
    uint8_t zeros[1000] = {0};
    append_bytes(zeros, sizeof zeros);
    install();
    kv_store *s = open_expect_cut(KVR_ABSOLUTE, BASE_END, sizeof zeros);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(point_in_time_cut_keeps_no_trailing_zeros)
{
    /* Damage mid-log in the newest segment, valid records after it, then
     * preallocated zeros: point-in-time stops at the damage, before the
     * reader reaches the zeros; the cut still saves only up to the last
     * non-zero byte. */
    seg[REC(3) + 30] ^= 0x01;
    uint8_t zeros[3000] = {0};
    append_bytes(zeros, sizeof zeros);
    install();
    kv_store *s = open_expect_cut(KVR_POINT_IN_TIME, REC(3), seg_len - REC(3));
    ck_assert_uint_eq(kv_recovery_report(s)->unwritten_bytes, sizeof zeros);
    expect_keys(s, 1, 2);
    kv_close(s);
}
END_TEST

START_TEST(zeros_ending_a_sealed_segment_are_corruption)
{
    /* kvd cuts a segment's zeros before it seals it, so in any segment
     * but the newest they are damage, as any other bad region is. */
    uint8_t zeros[512] = {0};
    append_bytes(zeros, sizeof zeros);
    uint8_t *s2;
    size_t s2_len;
    tu_segment_start(&s2, &s2_len, 2);
    tu_append_record(&s2, &s2_len, KV_REC_PUT, 6, "k6", "v6");
    char p2[64];
    tu_seg_path(p2, sizeof p2, DIR, 2);
    ck_assert_int_eq(kv_memfs_write(fs, p2, s2, s2_len), 0);
    free(s2);
    install();
    open_expect_refusal(KVR_TOLERATE_TAIL, BASE_END, "corruption in sealed segment");
}
END_TEST

START_TEST(garbage_appended_is_torn_tail)
{
    uint8_t junk[300];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (uint8_t)(x >> 16);
    }
    append_bytes(junk, sizeof junk);
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, sizeof junk);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(torn_record_followed_by_a_fragment_is_cut_at_the_first_bad_byte)
{
    /* A whole record whose payload is damaged, then a few stray bytes:
     * two bad regions, neither followed by a valid record. */
    uint8_t extra[128];
    size_t n = kv_record_encode(extra, KV_REC_PUT, 0, 6, 0, 0, "k6", 2, "a-longer-value-for-k6", 21);
    extra[n - 1] ^= 0x40;
    append_bytes(extra, n);
    append_bytes("\x01\x02\x03\x04\x05", 5);
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, n + 5);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(bit_flip_in_header_field_mid_log_is_corruption)
{
    seg[REC(3) + 24] ^= 0x04; /* sequence number of k3 */
    install();
    open_expect_refusal(KVR_TOLERATE_TAIL, REC(3), "mid-log corruption");
}
END_TEST

START_TEST(bit_flip_in_key_mid_log_is_corruption)
{
    seg[REC(3) + KV_REC_HEADER_SIZE] ^= 0x01; /* 'k' of k3 */
    install();
    open_expect_refusal(KVR_TOLERATE_TAIL, REC(3), "record checksum mismatch");
}
END_TEST

START_TEST(bit_flip_in_value_mid_log_is_corruption)
{
    seg[REC(2) + KV_REC_HEADER_SIZE + 3] ^= 0x80; /* '2' of v2 */
    install();
    open_expect_refusal(KVR_TOLERATE_TAIL, REC(2), "mid-log corruption");
}
END_TEST

/* The case a naive reader gets wrong: the flipped length makes record 3
 * appear to run past end of file, which looks exactly like a torn tail.
 * The header checksum exposes it, and the valid records 4 and 5 after it
 * make it mid-log corruption: nothing may be cut. */
START_TEST(bit_flip_in_length_mid_newest_segment_followed_by_valid_records_is_corruption)
{
    seg[REC(3) + 8 + 2] ^= 0x01; /* len += 65536: past end of file */
    install();
    open_expect_refusal(KVR_TOLERATE_TAIL, REC(3), "mid-log corruption");
    char torn[128];
    snprintf(torn, sizeof torn, "%s.%u.torn", seg1, REC(3));
    ck_assert(!kv_memfs_exists(fs, torn));
    /* kvfsck-style scan sees exactly one problem, with valid records after. */
    kvr_scan_result res;
    ck_assert_int_eq(kvr_scan_buffer(seg, seg_len, 1, seg1, NULL, NULL, NULL, &res), KV_OK);
    ck_assert_uint_eq(res.problems, 1);
    ck_assert_uint_eq(res.records, 4);
}
END_TEST

START_TEST(bit_flip_in_last_record_of_newest_segment_is_torn_tail)
{
    seg[REC(5) + KV_REC_HEADER_SIZE + 2] ^= 0x02;
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, REC(5), 48);
    expect_keys(s, 1, 4);
    kv_close(s);
}
END_TEST

START_TEST(corrupt_sealed_segment_refuses_to_open)
{
    /* Segment 1 keeps k1..k3 with its last record cut short; segment 2
     * holds k4, k5. A short record at the end of a sealed segment is not a
     * torn tail: that segment was complete when it was sealed. */
    uint8_t *s2;
    size_t s2_len;
    tu_segment_start(&s2, &s2_len, 2);
    tu_append_record(&s2, &s2_len, KV_REC_PUT, 4, "k4", "v4");
    tu_append_record(&s2, &s2_len, KV_REC_PUT, 5, "k5", "v5");
    char p2[64];
    tu_seg_path(p2, sizeof p2, DIR, 2);
    ck_assert_int_eq(kv_memfs_write(fs, p2, s2, s2_len), 0);
    free(s2);
    seg_len = REC(4) - 10;
    install();
    open_expect_refusal(KVR_TOLERATE_TAIL, REC(3), "sealed segment");
}
END_TEST

/* Builds k1, k2 then a batch {k3, k4, k5}; returns the batch's offset and
 * length. */
static void add_batch(size_t *boff, size_t *blen)
{
    seg_len = REC(3);
    uint8_t b[512];
    size_t pos = KV_REC_HEADER_SIZE;
    pos += kv_record_encode(b + pos, KV_REC_PUT, KV_RF_IN_BATCH, 3, 0, 0, "k3", 2, "v3", 2);
    pos += kv_record_encode(b + pos, KV_REC_PUT, KV_RF_IN_BATCH, 4, 0, 0, "k4", 2, "v4", 2);
    pos += kv_record_encode(b + pos, KV_REC_PUT, KV_RF_IN_BATCH, 5, 0, 0, "k5", 2, "v5", 2);
    kv_record_finish(b, KV_REC_BATCH, 0, 3, 0, 3, 0, (uint32_t)(pos - KV_REC_HEADER_SIZE));
    *boff = seg_len;
    *blen = pos;
    append_bytes(b, pos);
}

START_TEST(whole_batch_is_applied)
{
    size_t boff, blen;
    add_batch(&boff, &blen);
    install();
    kv_store *s;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    expect_keys(s, 1, 5);
    kv_close(s);
}
END_TEST

START_TEST(batch_torn_in_the_middle_applies_none_of_it)
{
    size_t boff, blen;
    add_batch(&boff, &blen);
    /* Cut after the batch header and its first two entries: those entries
     * are complete, valid-looking records, and still none may apply. */
    seg_len = boff + KV_REC_HEADER_SIZE + 2 * 48 + 5;
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, boff, seg_len - boff);
    expect_keys(s, 1, 2);
    kv_close(s);
}
END_TEST

START_TEST(absolute_mode_refuses_a_torn_tail)
{
    uint8_t zeros[100];
    memset(zeros, 0x5a, sizeof zeros);
    append_bytes(zeros, sizeof zeros);
    install();
    open_expect_refusal(KVR_ABSOLUTE, BASE_END, "torn tail");
}
END_TEST

START_TEST(skip_corrupt_mode_loads_records_around_corruption)
{
    seg[REC(3) + KV_REC_HEADER_SIZE + 3] ^= 0x01;
    install();
    kv_store *s;
    kvr_report rep;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_SKIP_CORRUPT, &s, &rep), KV_OK);
    ck_assert_uint_eq(rep.skipped_bytes, 48);
    ck_assert_uint_eq(rep.problems, 1);
    ck_assert_uint_eq(rep.torn_bytes, 0);
    kv_value v;
    ck_assert_int_eq(kv_get(s, "k3", 2, &v), KV_NOT_FOUND);
    ck_assert_int_eq(kv_get(s, "k5", 2, &v), KV_OK);
    kv_value_free(&v);
    ck_assert_uint_eq(kv_recovery_report(s)->keys, 4);
    ck_assert_uint_eq(file_size(seg1), BASE_END); /* nothing cut mid-log */
    kvr_report_free(&rep);
    kv_close(s);
}
END_TEST

START_TEST(point_in_time_mode_stops_at_first_corruption)
{
    uint8_t *s2;
    size_t s2_len;
    tu_segment_start(&s2, &s2_len, 2);
    tu_append_record(&s2, &s2_len, KV_REC_PUT, 6, "k6", "v6");
    char p2[64], p2d[80];
    tu_seg_path(p2, sizeof p2, DIR, 2);
    ck_assert_int_eq(kv_memfs_write(fs, p2, s2, s2_len), 0);
    free(s2);
    seg[REC(3) + 30] ^= 0x01;
    install();
    kv_store *s = open_expect_cut(KVR_POINT_IN_TIME, REC(3), BASE_END - REC(3));
    expect_keys(s, 1, 2);
    snprintf(p2d, sizeof p2d, "%s.discarded", p2);
    ck_assert(kv_memfs_exists(fs, p2d));
    ck_assert(!kv_memfs_exists(fs, p2));
    ck_assert_uint_eq(kv_recovery_report(s)->discarded_segments, 1);
    kv_close(s);
}
END_TEST

START_TEST(sequence_number_going_back_is_corruption)
{
    uint8_t *s2;
    size_t s2_len;
    tu_segment_start(&s2, &s2_len, 2);
    tu_append_record(&s2, &s2_len, KV_REC_PUT, 3, "k1", "stale"); /* seq 3 <= 5 */
    tu_append_record(&s2, &s2_len, KV_REC_PUT, 7, "k6", "v6");
    char p2[64];
    tu_seg_path(p2, sizeof p2, DIR, 2);
    ck_assert_int_eq(kv_memfs_write(fs, p2, s2, s2_len), 0);
    free(s2);
    install();
    kv_store *s;
    kvr_report rep;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, &rep), KV_CORRUPT);
    ck_assert_ptr_nonnull(strstr(rep.message, "out-of-order record"));
    kvr_report_free(&rep);
}
END_TEST

START_TEST(recovery_is_idempotent)
{
    uint8_t zeros[700] = {0};
    append_bytes(zeros, sizeof zeros);
    install();
    kv_store *s = open_expect_cut(KVR_TOLERATE_TAIL, BASE_END, sizeof zeros);
    kv_close(s);
    for (int round = 0; round < 2; round++) {
        kvr_report rep;
        ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, &rep), KV_OK);
        ck_assert_uint_eq(rep.torn_bytes, 0);
        ck_assert_uint_eq(rep.problems, 0);
        ck_assert_uint_eq(rep.keys, 5);
        ck_assert_uint_eq(rep.log_bytes, BASE_END);
        expect_keys(s, 1, 5);
        kvr_report_free(&rep);
        kv_close(s);
        ck_assert_uint_eq(file_size(seg1), BASE_END);
    }
}
END_TEST

START_TEST(verified_read_returns_corruption_not_bytes)
{
    install();
    kv_store *s;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    /* Rot a value byte under the running store. */
    uint8_t *b;
    size_t n;
    ck_assert_int_eq(kv_memfs_read(fs, seg1, &b, &n), 0);
    b[REC(2) + KV_REC_HEADER_SIZE + 2] ^= 0x20;
    ck_assert_int_eq(kv_memfs_write(fs, seg1, b, n), 0);
    free(b);
    kv_value v;
    ck_assert_int_eq(kv_get(s, "k2", 2, &v), KV_CORRUPT);
    ck_assert_ptr_null(v.data);
    ck_assert_int_eq(kv_get(s, "k1", 2, &v), KV_OK);
    ck_assert_mem_eq(v.data, "v1", 2);
    kv_value_free(&v);
    kv_close(s);
}
END_TEST

/* ---- exhaustive single-bit flips ---- */

typedef struct hist {
    const char *key;
    const char *values[4]; /* every value ever written, NULL-terminated */
    const char *final;     /* NULL: deleted */
} hist;

START_TEST(exhaustive_single_bit_flips_are_all_detected)
{
    /* A small log written by the engine itself: puts, a batch with a
     * delete, an expiring put, a delete. */
    kv_store *s;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, NULL), KV_OK);
    ck_assert_int_eq(kv_put(s, "a", 1, "1", 1, 0, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "b", 1, "22", 2, 0, 5), KV_OK);
    kv_batch *bt = kv_batch_new();
    kv_batch_put(bt, "c", 1, "333", 3, 0, 0);
    kv_batch_delete(bt, "a", 1);
    ck_assert_int_eq(kv_write(s, bt), KV_OK);
    kv_batch_free(bt);
    ck_assert_int_eq(kv_put(s, "d", 1, "4444", 4, 4102444800000ull, 0), KV_OK);
    ck_assert_int_eq(kv_delete(s, "b", 1), KV_OK);
    ck_assert_int_eq(kv_close(s), KV_OK);
    uint8_t *log;
    size_t log_len;
    ck_assert_int_eq(kv_memfs_read(fs, seg1, &log, &log_len), 0);
    const hist h[] = {
        {"a", {"1", NULL}, NULL},
        {"b", {"22", NULL}, NULL},
        {"c", {"333", NULL}, "333"},
        {"d", {"4444", NULL}, "4444"},
    };

    size_t tried = 0, refused = 0, cut = 0, read_caught = 0;
    for (size_t bit = 0; bit < log_len * 8; bit++) {
        kv_memfs *f = kv_memfs_new();
        ck_assert_int_eq(kv_memfs_io(f)->mkdir(kv_memfs_io(f)->ctx, DIR), 0);
        log[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_int_eq(kv_memfs_write(f, seg1, log, log_len), 0);
        log[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        tried++;
        kvr_report rep;
        kv_status st = tu_open_mem(f, DIR, KV_FSYNC_ALWAYS, 0, KVR_TOLERATE_TAIL, &s, &rep);
        if (st != KV_OK) {
            ck_assert_msg(st == KV_CORRUPT || st == KV_VERSION, "bit %zu: open failed with %s", bit, kv_strerror(st));
            refused++;
        } else {
            int detected = rep.problems > 0;
            if (rep.torn_bytes) cut++;
            for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
                kv_value v;
                kv_status g = kv_get(s, h[i].key, 1, &v);
                if (g == KV_CORRUPT) {
                    detected = 1;
                    read_caught++;
                    continue;
                }
                if (!detected) {
                    /* Nothing reported: the store must be exactly right. */
                    ck_assert_msg(g == (h[i].final ? KV_OK : KV_NOT_FOUND), "bit %zu: key %s: %s", bit, h[i].key,
                                  kv_strerror(g));
                }
                if (g == KV_OK) {
                    int known = 0;
                    for (int j = 0; h[i].values[j]; j++)
                        if (v.len == strlen(h[i].values[j]) && !memcmp(v.data, h[i].values[j], v.len)) known = 1;
                    ck_assert_msg(known, "bit %zu: key %s returned a value never written", bit, h[i].key);
                    kv_value_free(&v);
                }
            }
            ck_assert_msg(detected, "bit %zu (byte %zu) flipped without detection", bit, bit / 8);
            kv_close(s);
        }
        kvr_report_free(&rep);
        kv_memfs_free(f);
    }
    printf("exhaustive single-bit flips over a %zu-byte log: %zu tried, %zu refused at open, %zu cut as torn "
           "tail, %zu caught by a verified read, 0 undetected\n",
           log_len, tried, refused, cut, read_caught);
    ck_assert_uint_eq(tried, log_len * 8);
    free(log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("corruption");
    TCase *tc = tcase_create("shapes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, truncated_header_is_torn_tail);
    tcase_add_test(tc, truncated_payload_is_torn_tail);
    tcase_add_test(tc, length_past_end_of_file_is_torn_tail);
    tcase_add_test(tc, zero_filled_tail_is_unwritten_space_cut_without_a_problem);
    tcase_add_test(tc, torn_record_in_preallocated_space_saves_only_its_written_bytes);
    tcase_add_test(tc, absolute_mode_opens_past_unwritten_space);
    tcase_add_test(tc, zeros_ending_a_sealed_segment_are_corruption);
    tcase_add_test(tc, point_in_time_cut_keeps_no_trailing_zeros);
    tcase_add_test(tc, garbage_appended_is_torn_tail);
    tcase_add_test(tc, torn_record_followed_by_a_fragment_is_cut_at_the_first_bad_byte);
    tcase_add_test(tc, bit_flip_in_header_field_mid_log_is_corruption);
    tcase_add_test(tc, bit_flip_in_key_mid_log_is_corruption);
    tcase_add_test(tc, bit_flip_in_value_mid_log_is_corruption);
    tcase_add_test(tc, bit_flip_in_length_mid_newest_segment_followed_by_valid_records_is_corruption);
    tcase_add_test(tc, bit_flip_in_last_record_of_newest_segment_is_torn_tail);
    tcase_add_test(tc, corrupt_sealed_segment_refuses_to_open);
    tcase_add_test(tc, whole_batch_is_applied);
    tcase_add_test(tc, batch_torn_in_the_middle_applies_none_of_it);
    tcase_add_test(tc, absolute_mode_refuses_a_torn_tail);
    tcase_add_test(tc, skip_corrupt_mode_loads_records_around_corruption);
    tcase_add_test(tc, point_in_time_mode_stops_at_first_corruption);
    tcase_add_test(tc, sequence_number_going_back_is_corruption);
    tcase_add_test(tc, recovery_is_idempotent);
    tcase_add_test(tc, verified_read_returns_corruption_not_bytes);
    tcase_add_test(tc, exhaustive_single_bit_flips_are_all_detected);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
