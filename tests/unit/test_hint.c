/*
 * Hint files: written for every sealed segment, used at the next open
 * instead of a scan with exactly the same result, and never trusted when
 * damaged, stale or lying about their segment: then the segment is
 * scanned and the result is still exact.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store.h"
#include "kvr_hint.h"
#include "testutil.h"

#define DIR "db"

static uint64_t fake_now = 1800000000000ull;
static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static kv_status open_hints(kv_memfs *fs, int hints, kv_store **s, kvr_report *rep)
{
    kv_options o;
    kv_options_init(&o);
    o.io = kv_memfs_io(fs);
    o.segment_max_bytes = 4096;
    o.clock_ms = fake_clock;
    o.hint_files = hints;
    kv_status st = kv_open(DIR, &o, s, rep);
    ck_assert_msg(st == KV_OK, "open: %s: %s", kv_strerror(st), rep->message);
    return st;
}

/* Puts, overwrites, deletes, batches and expiring keys; fills the model. */
static void churn(kv_store *s, tu_model *m, int rounds)
{
    char k[16], v[200];
    for (int i = 0; i < rounds; i++) {
        int key = (i * 7) % 30;
        snprintf(k, sizeof k, "key%d", key);
        int vl = snprintf(v, sizeof v, "value-%d-%0*d", i, 20 + i % 90, i);
        if (i % 11 == 5) {
            kv_status st = kv_delete(s, k, strlen(k));
            ck_assert(st == KV_OK || st == KV_NOT_FOUND);
            tu_model_del(m, k, strlen(k));
        } else if (i % 13 == 7) {
            kv_batch *b = kv_batch_new();
            char k2[16];
            snprintf(k2, sizeof k2, "key%d", (key + 3) % 30);
            kv_batch_put(b, k, strlen(k), v, (size_t)vl, 0, 0);
            kv_batch_delete(b, k2, strlen(k2));
            ck_assert_int_eq(kv_write(s, b), KV_OK);
            kv_batch_free(b);
            tu_model_put(m, k, strlen(k), v, (size_t)vl);
            tu_model_del(m, k2, strlen(k2));
        } else if (i % 17 == 3) {
            char ek[16];
            snprintf(ek, sizeof ek, "exp%d", i);
            ck_assert_int_eq(kv_put(s, ek, strlen(ek), v, (size_t)vl, fake_now + 10, 0), KV_OK);
        } else {
            ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
            tu_model_put(m, k, strlen(k), v, (size_t)vl);
        }
    }
}

static void hint_path(char *out, size_t cap, uint32_t id)
{
    char name[32];
    kvh_name(name, sizeof name, id);
    snprintf(out, cap, "%s/%s", DIR, name);
}

/* Writes a store with several sealed segments, all hinted; returns the
 * number of sealed segments. The expiring keys have expired afterwards. */
static uint32_t make_hinted(kv_memfs *fs, tu_model *m)
{
    kv_store *s;
    kvr_report rep;
    open_hints(fs, 1, &s, &rep);
    kvr_report_free(&rep);
    churn(s, m, 300);
    uint32_t n = 0;
    ck_assert_int_eq(kv_write_hints(s, &n), KV_OK);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_ge(st.segments, 4);
    ck_assert_uint_eq(n, st.segments - 1);
    ck_assert_uint_eq(st.hint_files, st.segments - 1);
    ck_assert_uint_eq(st.hints_pending, 0);
    ck_assert_uint_eq(kv_hints_pending(s), 0);
    ck_assert_int_eq(kv_close(s), KV_OK);
    fake_now += 1000;
    return n;
}

static void assert_equals(kv_store *s, const tu_model *m)
{
    kv_expire_sweep(s, 100000);
    tu_assert_store_equals(s, m);
}

/* The recovery counts that must not depend on hints. */
static void assert_same_report(const kvr_report *a, const kvr_report *b)
{
    ck_assert_uint_eq(a->segments, b->segments);
    ck_assert_uint_eq(a->records, b->records);
    ck_assert_uint_eq(a->entries, b->entries);
    ck_assert_uint_eq(a->batches, b->batches);
    ck_assert_uint_eq(a->tombstones, b->tombstones);
    ck_assert_uint_eq(a->keys, b->keys);
    ck_assert_uint_eq(a->log_bytes, b->log_bytes);
    ck_assert_uint_eq(a->live_bytes, b->live_bytes);
    ck_assert_uint_eq(a->max_seq, b->max_seq);
}

START_TEST(hints_are_used_at_the_next_open_with_the_same_result_as_a_scan)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model m;
    tu_model_init(&m);
    uint32_t sealed = make_hinted(fs, &m);
    kv_memfs *copy = kv_memfs_clone(fs);

    kv_store *s;
    kvr_report with, without;
    open_hints(fs, 1, &s, &with);
    /* The clean shutdown sealed the active segment and wrote its hint. */
    ck_assert_uint_eq(with.hints_used, sealed + 1);
    ck_assert_uint_eq(with.hints_rejected, 0);
    ck_assert_uint_eq(with.hints_written, 0);
    assert_equals(s, &m);
    kv_close(s);

    open_hints(copy, 0, &s, &without);
    ck_assert_uint_eq(without.hints_used, 0);
    assert_equals(s, &m);
    kv_close(s);
    assert_same_report(&with, &without);
    kvr_report_free(&with);
    kvr_report_free(&without);
    tu_model_free(&m);
    kv_memfs_free(copy);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(recovery_writes_the_missing_hints_and_they_equal_a_rebuild)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model m;
    tu_model_init(&m);
    kv_store *s;
    kvr_report rep;
    open_hints(fs, 0, &s, &rep); /* no hints while writing */
    kvr_report_free(&rep);
    churn(s, &m, 300);
    fake_now += 1000;
    uint32_t n = 99;
    ck_assert_int_eq(kv_write_hints(s, &n), KV_OK);
    ck_assert_uint_eq(n, 0);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.hints_pending, 0); /* disabled: nothing pending */
    kv_close(s);
    char hp[64];
    hint_path(hp, sizeof hp, 1);
    ck_assert(!kv_memfs_exists(fs, hp));

    open_hints(fs, 1, &s, &rep);
    ck_assert_uint_eq(rep.hints_used, 0);
    ck_assert_uint_eq(rep.hints_written, st.segments); /* the clean shutdown sealed the active one too */
    assert_equals(s, &m);
    kv_close(s);
    kvr_report_free(&rep);
    /* Each one equals a hint built from its segment's bytes. */
    for (uint32_t id = 1; id < st.segments; id++) {
        char sp[64];
        tu_seg_path(sp, sizeof sp, DIR, id);
        hint_path(hp, sizeof hp, id);
        uint8_t *seg, *hint, *want;
        size_t slen, hlen, wlen;
        ck_assert_int_eq(kv_memfs_read(fs, sp, &seg, &slen), 0);
        ck_assert_int_eq(kv_memfs_read(fs, hp, &hint, &hlen), 0);
        ck_assert_int_eq(kvr_hint_build(seg, slen, id, &want, &wlen), KV_OK);
        ck_assert_uint_eq(hlen, wlen);
        ck_assert(memcmp(hint, want, hlen) == 0);
        kvh_header h;
        ck_assert_int_eq(kvh_decode(hint, hlen, id, &h), KV_OK);
        ck_assert_uint_eq(h.seg_size, slen);
        free(seg);
        free(hint);
        free(want);
    }
    /* The newest segment has none: it is still appended to (the clean
     * shutdown sealed the one that was active and started it). */
    hint_path(hp, sizeof hp, st.segments + 1);
    ck_assert(!kv_memfs_exists(fs, hp));
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(every_bit_flip_of_a_hint_is_rejected_and_the_segment_scanned)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model m;
    tu_model_init(&m);
    uint32_t sealed = make_hinted(fs, &m);
    char hp[64];
    hint_path(hp, sizeof hp, 2);
    uint8_t *orig;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, hp, &orig, &len), 0);
    kvh_header h;
    ck_assert_int_eq(kvh_decode(orig, len, 2, &h), KV_OK);
    uint8_t *b = malloc(len);
    for (size_t bit = 0; bit < len * 8; bit++) {
        memcpy(b, orig, len);
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_msg(kvh_decode(b, len, 2, &h) != KV_OK, "flip of bit %zu accepted", bit);
    }
    /* Truncations too. */
    for (size_t n = 0; n < len; n += 7) ck_assert(kvh_decode(orig, n, 2, &h) != KV_OK);
    /* End to end, for a sample of flips: rejected, scanned, exact, and
     * written again as it was. */
    for (size_t bit = 3; bit < len * 8; bit += len * 8 / 5) {
        memcpy(b, orig, len);
        b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ck_assert_int_eq(kv_memfs_write(fs, hp, b, len), 0);
        kv_store *s;
        kvr_report rep;
        open_hints(fs, 1, &s, &rep);
        ck_assert_uint_eq(rep.hints_rejected, 1);
        ck_assert_uint_ge(rep.hints_used, sealed - 1);
        ck_assert_uint_ge(rep.hints_written, 1);
        assert_equals(s, &m);
        kv_close(s);
        kvr_report_free(&rep);
        uint8_t *again;
        size_t alen;
        ck_assert_int_eq(kv_memfs_read(fs, hp, &again, &alen), 0);
        ck_assert_uint_eq(alen, len);
        ck_assert(memcmp(again, orig, len) == 0);
        free(again);
    }
    free(b);
    free(orig);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

/* Re-seals a hint buffer's CRC after an edit. */
static void reseal(uint8_t *b, size_t len)
{
    kv_put_u32(b + len - 4, kv_crc32(0, b, len - 4));
}

START_TEST(a_hint_with_a_valid_crc_but_impossible_fields_is_rejected)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model m;
    tu_model_init(&m);
    make_hinted(fs, &m);
    char hp[64];
    hint_path(hp, sizeof hp, 1);
    uint8_t *orig;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, hp, &orig, &len), 0);
    kvh_header h;
    ck_assert_int_eq(kvh_decode(orig, len, 1, &h), KV_OK);
    ck_assert_uint_ge(h.nhints, 2);
    uint8_t *e0 = orig + KVH_HEADER_SIZE;             /* first entry */
    size_t e1 = KVH_HEADER_SIZE + KVH_ENTRY_SIZE + kv_get_u32(e0 + 4); /* second entry */
    struct {
        const char *what;
        size_t off;
        int width;
        uint64_t value;
    } lies[] = {
        {"wrong segment id", 8, 4, 7},
        {"entry count one more", 24, 8, h.nhints + 1},
        {"entry type batch", KVH_HEADER_SIZE, 1, KV_REC_BATCH},
        {"entry type zero", KVH_HEADER_SIZE, 1, 0},
        {"key length past the end", KVH_HEADER_SIZE + 4, 4, 1u << 20},
        {"record past the segment", KVH_HEADER_SIZE + 8, 8, h.seg_size},
        {"record inside the segment header", KVH_HEADER_SIZE + 8, 8, 4},
        {"record shorter than its header", KVH_HEADER_SIZE + 16, 4, 10},
        {"sequence number above the last", KVH_HEADER_SIZE + 24, 8, h.max_seq + 1},
        {"sequence number below the first", KVH_HEADER_SIZE + 24, 8, h.min_seq - 1},
        {"offsets not ascending", e1 + 8, 8, kv_get_u64(e0 + 8)},
        {"record overlapping the one before", e1 + 8, 8, kv_get_u64(e0 + 8) + kv_get_u32(e0 + 16) - 1},
        {"segment size", 16, 8, h.seg_size + 1},
        {"last record offset", 80, 8, h.last_off - 1},
        {"header size", 6, 2, 100},
        {"reserved bytes", 12, 4, 1},
    };
    uint8_t *b = malloc(len);
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        memcpy(b, orig, len);
        if (lies[i].width == 1)
            b[lies[i].off] = (uint8_t)lies[i].value;
        else if (lies[i].width == 2)
            kv_put_u16(b + lies[i].off, (uint16_t)lies[i].value);
        else if (lies[i].width == 4)
            kv_put_u32(b + lies[i].off, (uint32_t)lies[i].value);
        else
            kv_put_u64(b + lies[i].off, lies[i].value);
        reseal(b, len);
        ck_assert_msg(kvh_decode(b, len, 1, &h) == KV_CORRUPT, "accepted: %s", lies[i].what);
    }
    /* A version this build does not know is KV_VERSION, not corruption. */
    memcpy(b, orig, len);
    kv_put_u16(b + 4, KVH_VERSION + 1);
    reseal(b, len);
    ck_assert_int_eq(kvh_decode(b, len, 1, &h), KV_VERSION);
    free(b);
    free(orig);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(a_stale_hint_is_rejected)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model m;
    tu_model_init(&m);
    make_hinted(fs, &m);
    char sp[64], hp[64];
    tu_seg_path(sp, sizeof sp, DIR, 1);
    hint_path(hp, sizeof hp, 1);
    uint8_t *seg, *hint;
    size_t slen, hlen;
    ck_assert_int_eq(kv_memfs_read(fs, sp, &seg, &slen), 0);
    ck_assert_int_eq(kv_memfs_read(fs, hp, &hint, &hlen), 0);
    kvh_header h;
    ck_assert_int_eq(kvh_decode(hint, hlen, 1, &h), KV_OK);
    const kv_io *io = kv_memfs_io(fs);
    int fd = io->open(io->ctx, sp, KV_O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(kvh_matches_segment(io, fd, &h), KV_OK);
    io->close(io->ctx, fd);

    /* The segment without its last record: shorter than the hint says. */
    ck_assert_int_eq(kv_memfs_write(fs, sp, seg, h.last_off), 0);
    fd = io->open(io->ctx, sp, KV_O_RDONLY);
    ck_assert_int_eq(kvh_matches_segment(io, fd, &h), KV_CORRUPT);
    io->close(io->ctx, fd);
    /* Same size, another segment header (another creation time). */
    uint8_t *b = malloc(slen);
    memcpy(b, seg, slen);
    kv_seg_header_encode(b, 1, 12345);
    ck_assert_int_eq(kv_memfs_write(fs, sp, b, slen), 0);
    fd = io->open(io->ctx, sp, KV_O_RDONLY);
    ck_assert_int_eq(kvh_matches_segment(io, fd, &h), KV_CORRUPT);
    io->close(io->ctx, fd);
    /* Same size and header, another last record (its sequence number). */
    memcpy(b, seg, slen);
    b[h.last_off + 24] ^= 1;
    ck_assert_int_eq(kv_memfs_write(fs, sp, b, slen), 0);
    fd = io->open(io->ctx, sp, KV_O_RDONLY);
    ck_assert_int_eq(kvh_matches_segment(io, fd, &h), KV_CORRUPT);
    io->close(io->ctx, fd);

    /* A stale hint at open: the segment is scanned (and here, its last
     * record being damaged, recovery refuses as it must without hints). */
    kv_options o;
    kv_options_init(&o);
    o.io = io;
    o.segment_max_bytes = 4096;
    o.clock_ms = fake_clock;
    kv_store *s;
    kvr_report rep;
    ck_assert_int_eq(kv_open(DIR, &o, &s, &rep), KV_CORRUPT);
    ck_assert_uint_eq(rep.hints_rejected, 1);
    ck_assert_ptr_nonnull(strstr(rep.message, "0000000001.seg"));
    kvr_report_free(&rep);
    /* The original bytes back: the hint is used again. */
    ck_assert_int_eq(kv_memfs_write(fs, sp, seg, slen), 0);
    open_hints(fs, 1, &s, &rep);
    ck_assert_uint_eq(rep.hints_rejected, 0);
    assert_equals(s, &m);
    kv_close(s);
    kvr_report_free(&rep);
    free(b);
    free(seg);
    free(hint);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(expired_puts_in_a_hint_are_dropped_at_open)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s;
    kvr_report rep;
    open_hints(fs, 1, &s, &rep);
    kvr_report_free(&rep);
    ck_assert_int_eq(kv_put(s, "soon", 4, "v", 1, fake_now + 50, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "later", 5, "v", 1, fake_now + 1000000, 0), KV_OK);
    ck_assert_int_eq(kv_put(s, "gone", 4, "v", 1, 0, 0), KV_OK);
    ck_assert_int_eq(kv_delete(s, "gone", 4), KV_OK);
    ck_assert_int_eq(kv_seal(s), KV_OK);
    uint32_t n;
    ck_assert_int_eq(kv_write_hints(s, &n), KV_OK);
    ck_assert_uint_eq(n, 1);
    kv_close(s);
    fake_now += 100;
    open_hints(fs, 1, &s, &rep);
    ck_assert_uint_eq(rep.hints_used, 1);
    ck_assert_uint_eq(rep.expired, 1);
    ck_assert_uint_eq(rep.tombstones, 1);
    ck_assert_uint_eq(rep.keys, 1);
    uint64_t exp = 0;
    ck_assert_int_eq(kv_exists(s, "later", 5, &exp), KV_OK);
    ck_assert_uint_eq(exp, fake_now - 100 + 1000000);
    ck_assert_int_eq(kv_exists(s, "soon", 4, NULL), KV_NOT_FOUND);
    ck_assert_int_eq(kv_exists(s, "gone", 4, NULL), KV_NOT_FOUND);
    kv_close(s);
    kvr_report_free(&rep);
    kv_memfs_free(fs);
}
END_TEST

START_TEST(orphan_hints_refuse_the_open_and_compaction_keeps_hints_current)
{
    kv_memfs *fs = kv_memfs_new();
    tu_model m;
    tu_model_init(&m);
    make_hinted(fs, &m);
    char hp[64], tmp[80];
    hint_path(hp, sizeof hp, 99);
    hint_path(tmp, sizeof tmp - 4, 2);
    size_t tl = strlen(tmp);
    snprintf(tmp + tl, sizeof tmp - tl, ".tmp");
    ck_assert_int_eq(kv_memfs_write(fs, hp, (const uint8_t *)"junk", 4), 0);
    ck_assert_int_eq(kv_memfs_write(fs, tmp, (const uint8_t *)"junk", 4), 0);
    kv_store *s;
    kvr_report rep;
    /* A hint file without its segment is evidence of a lost segment: the
     * open is refused, naming it, and the file is kept. An unfinished
     * .hint.tmp is only removed. */
    kv_options o;
    kv_options_init(&o);
    o.io = kv_memfs_io(fs);
    o.segment_max_bytes = 4096;
    o.clock_ms = fake_clock;
    ck_assert_int_eq(kv_open(DIR, &o, &s, &rep), KV_CORRUPT);
    ck_assert_msg(strstr(rep.message, "0000000099.hint") && strstr(rep.message, "kvfsck"), "%s", rep.message);
    kvr_report_free(&rep);
    ck_assert(kv_memfs_exists(fs, hp));
    ck_assert(!kv_memfs_exists(fs, tmp));
    ck_assert_int_eq(kv_memfs_io(fs)->unlink(kv_memfs_io(fs)->ctx, hp), 0); /* the operator's decision */
    open_hints(fs, 1, &s, &rep);
    kvr_report_free(&rep);

    kv_stats before, after;
    kv_get_stats(s, &before);
    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(s, &cr), KV_OK);
    ck_assert_uint_ge(cr.segments_in, 2);
    kv_get_stats(s, &after);
    ck_assert_uint_eq(after.hint_files, after.segments - 1); /* the output has one */
    /* The inputs' hints are gone; the output's describes the output. */
    for (uint32_t id = 1; id < cr.output_segment; id++) {
        hint_path(hp, sizeof hp, id);
        ck_assert_msg(!kv_memfs_exists(fs, hp), "hint of compacted segment %u left", id);
    }
    kv_close(s);
    open_hints(fs, 1, &s, &rep);
    ck_assert_uint_eq(rep.hints_used, after.segments - 1);
    ck_assert_uint_eq(rep.hints_rejected, 0);
    assert_equals(s, &m);
    kv_close(s);
    kvr_report_free(&rep);
    tu_model_free(&m);
    kv_memfs_free(fs);
}
END_TEST

/* A compaction output's trailer carries its inputs' last sequence number.
 * When the inputs end in records it drops (here tombstones, as a DEL or a
 * key's logged expiry writes), that number is above the output's last
 * record's: its hint must still be accepted, used at the next open, and
 * agree with a rebuild. */
START_TEST(the_hint_of_a_compaction_whose_inputs_end_in_tombstones_is_used)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s;
    kvr_report rep;
    open_hints(fs, 1, &s, &rep);
    kvr_report_free(&rep);
    char k[16], v[200];
    for (int i = 0; i < 80; i++) {
        snprintf(k, sizeof k, "key%d", i % 40);
        int vl = snprintf(v, sizeof v, "value-%d-%0120d", i, i);
        ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "key%d", i);
        ck_assert_int_eq(kv_delete(s, k, strlen(k)), KV_OK);
    }
    ck_assert_int_eq(kv_seal(s), KV_OK); /* the tombstones are the last input records */
    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(s, &cr), KV_OK);
    ck_assert_uint_ge(cr.tombstones_dropped, 10);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.hint_files, st.segments - 1);
    char hp[64];
    hint_path(hp, sizeof hp, cr.output_segment);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, hp, &buf, &len), 0);
    kvh_header hh;
    ck_assert_int_eq(kvh_decode(buf, len, cr.output_segment, &hh), KV_OK);
    free(buf);
    ck_assert_int_eq(kv_close(s), KV_OK);
    open_hints(fs, 1, &s, &rep);
    ck_assert_uint_eq(rep.hints_rejected, 0);
    ck_assert_uint_ge(rep.hints_used, 1);
    ck_assert_uint_eq(rep.keys, 30);
    kvr_report_free(&rep);
    kv_value val;
    ck_assert_int_eq(kv_get(s, "key3", 4, &val), KV_NOT_FOUND);
    ck_assert_int_eq(kv_get(s, "key33", 5, &val), KV_OK);
    kv_value_free(&val);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* A compaction that keeps no record at all (every input record deleted)
 * writes an output of its header and trailer only: its hint (no entries)
 * must decode and be used at the next open. */
START_TEST(the_hint_of_a_compaction_that_keeps_nothing_is_used)
{
    kv_memfs *fs = kv_memfs_new();
    kv_store *s;
    kvr_report rep;
    open_hints(fs, 1, &s, &rep);
    kvr_report_free(&rep);
    char k[16], v[200];
    for (int i = 0; i < 60; i++) {
        snprintf(k, sizeof k, "key%d", i % 20);
        int vl = snprintf(v, sizeof v, "value-%d-%0120d", i, i);
        ck_assert_int_eq(kv_put(s, k, strlen(k), v, (size_t)vl, 0, 0), KV_OK);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "key%d", i);
        ck_assert_int_eq(kv_delete(s, k, strlen(k)), KV_OK);
    }
    ck_assert_int_eq(kv_seal(s), KV_OK);
    kv_compact_report cr;
    ck_assert_int_eq(kv_compact(s, &cr), KV_OK);
    ck_assert_uint_eq(cr.records_copied, 0);
    char hp[64];
    hint_path(hp, sizeof hp, cr.output_segment);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, hp, &buf, &len), 0);
    kvh_header hh;
    ck_assert_int_eq(kvh_decode(buf, len, cr.output_segment, &hh), KV_OK);
    ck_assert_uint_eq(hh.records, 0);
    ck_assert_uint_eq(hh.seg_size, KV_SEG_HEADER_SIZE + KV_MARK_SIZE); /* header and trailer */
    free(buf);
    ck_assert_int_eq(kv_close(s), KV_OK);
    open_hints(fs, 1, &s, &rep);
    ck_assert_uint_eq(rep.hints_rejected, 0);
    ck_assert_uint_eq(rep.keys, 0);
    kvr_report_free(&rep);
    kv_close(s);
    kv_memfs_free(fs);
}
END_TEST

/* Each I/O call of kv_write_hints failing in turn with EIO: a sealed
 * segment it could not read is marked bad for the store (as a failed GET
 * would mark it), a failed write of the hint file marks nothing, and the
 * store goes on either way. */
START_TEST(a_segment_the_hint_writer_cannot_read_is_marked_bad)
{
    int marked = 0, clean = 0;
    for (uint64_t nth = 1;; nth++) {
        kv_memfs *fs = kv_memfs_new();
        kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
        kv_options o;
        kv_options_init(&o);
        o.io = kv_faultio_io(f);
        o.segment_max_bytes = 4096;
        o.clock_ms = fake_clock;
        kv_store *s;
        kvr_report rep;
        ck_assert_int_eq(kv_open(DIR, &o, &s, &rep), KV_OK);
        kvr_report_free(&rep);
        tu_model m;
        tu_model_init(&m);
        churn(s, &m, 60);
        ck_assert_uint_ge(kv_hints_pending(s), 1);
        kv_faultio_arm(f, nth, EIO, 0);
        uint32_t written = 0;
        kv_status st = kv_write_hints(s, &written);
        int fired = kv_faultio_fired(f);
        kv_faultio_arm(f, 0, 0, 0);
        kv_stats st2;
        kv_get_stats(s, &st2);
        ck_assert_uint_le(st2.segments_bad, 1);
        if (st2.segments_bad) {
            ck_assert_int_eq(st, EIO);
            marked++;
        } else {
            clean++;
        }
        ck_assert_int_eq(kv_put(s, "after", 5, "x", 1, 0, 0), KV_OK);
        kv_close(s);
        tu_model_free(&m);
        kv_faultio_free(f);
        kv_memfs_free(fs);
        if (!fired) break;
        ck_assert_uint_lt(nth, 2000);
    }
    ck_assert_int_ge(marked, 1); /* the pread of each segment */
    ck_assert_int_gt(clean, marked); /* every other call */
}
END_TEST

START_TEST(a_failing_io_call_while_writing_hints_never_harms_the_store)
{
    /* Each I/O call of an open that writes hint files fails in turn, with
     * EIO and with ENOSPC (a full disk): the store goes on, and the next
     * open is exact (using whatever hint files are whole, scanning the
     * rest). */
    for (int ei = 0; ei < 2; ei++)
    for (uint64_t nth = 1;; nth++) {
        kv_memfs *fs = kv_memfs_new();
        tu_model m;
        tu_model_init(&m);
        kv_store *s;
        kvr_report rep;
        open_hints(fs, 0, &s, &rep);
        kvr_report_free(&rep);
        churn(s, &m, 150);
        fake_now += 1000;
        kv_close(s);
        kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
        kv_options o;
        kv_options_init(&o);
        o.io = kv_faultio_io(f);
        o.segment_max_bytes = 4096;
        o.clock_ms = fake_clock;
        o.hint_files = 0; /* open without writing hints ... */
        ck_assert_int_eq(kv_open(DIR, &o, &s, &rep), KV_OK);
        kvr_report_free(&rep);
        kv_close(s);
        o.hint_files = 1; /* ... then reopen and fail one call of the writes */
        kv_faultio_arm(f, nth, ei ? ENOSPC : EIO, 0);
        kv_status st = kv_open(DIR, &o, &s, &rep);
        int fired = kv_faultio_fired(f);
        kvr_report_free(&rep);
        if (st == KV_OK) {
            /* A failed hint write is no failure of the store: it takes
             * writes (the fault disarmed if it has not fired yet). */
            if (!fired) kv_faultio_arm(f, 0, 0, 0);
            ck_assert_int_eq(kv_put(s, "after", 5, "x", 1, 0, 0), KV_OK);
            tu_model_put(&m, "after", 5, "x", 1);
            kv_close(s);
        }
        kv_faultio_free(f);
        /* Whatever failed, a clean open is exact. */
        open_hints(fs, 1, &s, &rep);
        assert_equals(s, &m);
        kv_close(s);
        kvr_report_free(&rep);
        tu_model_free(&m);
        kv_memfs_free(fs);
        if (!fired) break;
        ck_assert_uint_lt(nth, 2000);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hint");
    TCase *tc = tcase_create("hint");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, hints_are_used_at_the_next_open_with_the_same_result_as_a_scan);
    tcase_add_test(tc, recovery_writes_the_missing_hints_and_they_equal_a_rebuild);
    tcase_add_test(tc, every_bit_flip_of_a_hint_is_rejected_and_the_segment_scanned);
    tcase_add_test(tc, a_hint_with_a_valid_crc_but_impossible_fields_is_rejected);
    tcase_add_test(tc, a_stale_hint_is_rejected);
    tcase_add_test(tc, expired_puts_in_a_hint_are_dropped_at_open);
    tcase_add_test(tc, orphan_hints_refuse_the_open_and_compaction_keeps_hints_current);
    tcase_add_test(tc, the_hint_of_a_compaction_whose_inputs_end_in_tombstones_is_used);
    tcase_add_test(tc, the_hint_of_a_compaction_that_keeps_nothing_is_used);
    tcase_add_test(tc, a_segment_the_hint_writer_cannot_read_is_marked_bad);
    tcase_add_test(tc, a_failing_io_call_while_writing_hints_never_harms_the_store);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
