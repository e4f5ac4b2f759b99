/*
 * make_seeds — writes the seed corpus of fuzz_log_reader with the
 * project's own encoder (kv/base/kv_record.h), so the seeds follow the format.
 * A tool, not a test: run it by hand when the format changes.
 *
 *   fuzz_make_seeds DIR        (e.g. fuzz/corpus/log_reader)
 *
 * Each seed is one shape the reader and recovery must handle; the input
 * layout (one segment, or 0xA5 + u16 + sealed + newest segment) is the
 * one described at the top of fuzz_log_reader.c. The output is the same
 * on every run (fixed times, no randomness).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"

#define SPLIT_MARKER 0xA5u
#define REPAIR_MARKER 0xA6u
/* Times relative to the target's fixed clock (1700000000000 ms). */
#define CREATED_MS 1699999000000ull
#define PAST_MS 1600000000000ull   /* already expired when recovered */
#define FUTURE_MS 1800000000000ull /* still live */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static uint8_t *reserve(buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n) nc *= 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np) {
            fprintf(stderr, "make_seeds: out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = nc;
    }
    return b->p + b->len;
}

static void append(buf *b, const void *p, size_t n)
{
    if (n == 0) return;
    memcpy(reserve(b, n), p, n);
    b->len += n;
}

static void seg_start(buf *b, uint32_t id)
{
    kv_seg_header_encode(reserve(b, KV_SEG_HEADER_SIZE), id, CREATED_MS);
    b->len += KV_SEG_HEADER_SIZE;
}

/* A version 2 segment header naming its predecessor and that one's size. */
static void seg_v2(buf *b, uint32_t id, uint32_t prev_id, uint32_t prev_end)
{
    kv_seg_header h = {2, id, 0, CREATED_MS, prev_id, prev_end};
    kv_seg_header_encode_h(reserve(b, KV_SEG_HEADER_SIZE), &h);
    b->len += KV_SEG_HEADER_SIZE;
}

/* A commit mark (offset: the group's start) or a trailer (its own offset). */
static void mark(buf *b, uint8_t type, uint64_t seq, uint64_t offset, uint32_t count)
{
    b->len += kv_mark_encode(reserve(b, KV_MARK_SIZE), type, seq, offset, count);
}

static void rec(buf *b, uint8_t type, uint64_t seq, const char *key, const char *val, uint64_t expire_ms,
                uint32_t flags)
{
    uint32_t kl = (uint32_t)strlen(key), vl = val ? (uint32_t)strlen(val) : 0;
    b->len += kv_record_encode(reserve(b, kv_record_size(kl, vl)), type, 0, seq, expire_ms, flags, key, kl, val,
                               vl);
}

static void put(buf *b, uint64_t seq, const char *key, const char *val)
{
    rec(b, KV_REC_PUT, seq, key, val, 0, 0);
}

static void del(buf *b, uint64_t seq, const char *key)
{
    rec(b, KV_REC_TOMBSTONE, seq, key, NULL, 0, 0);
}

/* A batch record at seq: two puts and a tombstone, as MSET + DEL in one
 * MULTI/EXEC would write them. */
static void batch(buf *b, uint64_t seq)
{
    uint8_t payload[512];
    size_t n = 0;
    n += kv_record_encode(payload + n, KV_REC_PUT, KV_RF_IN_BATCH, seq, 0, 7, "bk1", 3, "bv1", 3);
    n += kv_record_encode(payload + n, KV_REC_PUT, KV_RF_IN_BATCH, seq + 1, FUTURE_MS, 0, "bk2", 3, "value two", 9);
    n += kv_record_encode(payload + n, KV_REC_TOMBSTONE, KV_RF_IN_BATCH, seq + 2, 0, 0, "a", 1, NULL, 0);
    uint8_t *r = reserve(b, KV_REC_HEADER_SIZE + n);
    memcpy(r + KV_REC_HEADER_SIZE, payload, n);
    b->len += kv_record_finish(r, KV_REC_BATCH, 0, seq, 0, 3, 0, (uint32_t)n);
}

/* The common body: puts (one with flags and a live expiry, one already
 * expired, an empty key), an overwrite and a tombstone. Seqs 1..7. */
static void puts_and_tombstone(buf *b)
{
    put(b, 1, "a", "1");
    rec(b, KV_REC_PUT, 2, "b", "two", FUTURE_MS, 0xdeadbeef);
    put(b, 3, "c", "three");
    rec(b, KV_REC_PUT, 4, "expired", "gone", PAST_MS, 0);
    put(b, 5, "", "empty key");
    put(b, 6, "a", "one, again");
    del(b, 7, "c");
}

static int save(const char *dir, const char *name, const buf *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (b->len && fwrite(b->p, 1, b->len, f) != b->len) || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        return 1;
    }
    printf("%s (%zu bytes)\n", path, b->len);
    return 0;
}

/* Marker (0xA5 split, 0xA6 split and repair CRCs), u16 length of the
 * sealed segment, sealed segment, newest segment. */
static void split(buf *out, uint8_t marker, const buf *sealed, const buf *newest)
{
    uint8_t h[3] = {marker, (uint8_t)sealed->len, (uint8_t)(sealed->len >> 8)};
    append(out, h, 3);
    append(out, sealed->p, sealed->len);
    append(out, newest->p, newest->len);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int rc = 0;
    buf b = {0};

    /* A segment with only its header (what kv_open creates). */
    seg_start(&b, 1);
    rc |= save(dir, "empty_segment", &b);

    /* Puts, an overwrite, an expired put and a tombstone. */
    puts_and_tombstone(&b);
    rc |= save(dir, "puts_tombstone", &b);
    size_t body_len = b.len;

    /* A batch record between plain records. */
    batch(&b, 8);
    put(&b, 11, "after batch", "x");
    rc |= save(dir, "batch", &b);

    buf with_batch = {0};
    append(&with_batch, b.p, b.len);

    /* Torn tail: the last record cut short by 5 bytes. */
    b.len = body_len;
    put(&b, 8, "torn", "this record is cut short");
    b.len -= 5;
    rc |= save(dir, "torn_tail", &b);

    /* Zero-filled tail: a preallocated or torn block after the records. */
    b.len = body_len;
    memset(reserve(&b, 100), 0, 100);
    b.len += 100;
    rc |= save(dir, "zero_tail", &b);

    /* Mid-log bit flip in the len field of the second record (offset 8 of
     * its header): hcrc fails, valid records follow. */
    b.len = body_len;
    size_t second = KV_SEG_HEADER_SIZE + kv_record_size(1, 1);
    buf flip = {0};
    append(&flip, b.p, b.len);
    flip.p[second + 8] ^= 0x10;
    rc |= save(dir, "len_bitflip", &flip);

    /* Mid-log value corruption: the third record's crc fails, its header
     * (and length) is still trusted. */
    flip.len = 0;
    append(&flip, b.p, b.len);
    size_t third = second + kv_record_size(1, 3);
    flip.p[third + KV_REC_HEADER_SIZE + 2] ^= 0x01;
    rc |= save(dir, "crc_mismatch", &flip);

    /* Bad segment header (magic byte changed), valid records after it. */
    flip.len = 0;
    append(&flip, b.p, b.len);
    flip.p[0] = 'X';
    rc |= save(dir, "bad_segment_header", &flip);

    /* A file shorter than the segment header. */
    flip.len = 20;
    rc |= save(dir, "short_file", &flip);
    free(flip.p);

    /* A valid header of a format version this build does not read. */
    buf v = {0};
    seg_start(&v, 1);
    kv_put_u16(v.p + 4, KV_FORMAT_VERSION + 1);
    kv_put_u32(v.p + 28, kv_crc32(0, v.p, 28));
    put(&v, 1, "k", "v");
    rc |= save(dir, "future_version", &v);
    free(v.p);

    /* A sequence number that goes back. */
    buf sq = {0};
    seg_start(&sq, 1);
    put(&sq, 5, "k", "v5");
    put(&sq, 3, "k", "v3");
    put(&sq, 6, "j", "v6");
    rc |= save(dir, "seq_back", &sq);
    free(sq.p);

    /* Two segments: a sealed one and the newest, which overwrites and
     * deletes keys of the sealed one. */
    buf s1 = {0}, s2 = {0}, out = {0};
    seg_start(&s1, 1);
    puts_and_tombstone(&s1);
    batch(&s1, 8);
    seg_start(&s2, 2);
    put(&s2, 11, "a", "newest");
    del(&s2, 12, "b");
    put(&s2, 13, "d", "four");
    split(&out, SPLIT_MARKER, &s1, &s2);
    rc |= save(dir, "two_segments", &out);

    /* The same in CRC-repair mode, and a batch alone in it (an empty
     * sealed segment): seeds whose mutations keep valid CRCs. */
    out.len = 0;
    split(&out, REPAIR_MARKER, &s1, &s2);
    rc |= save(dir, "repair_two_segments", &out);
    buf none = {0};
    kv_put_u32(with_batch.p + 8, 2); /* the newest segment is now id 2 */
    kv_put_u32(with_batch.p + 28, kv_crc32(0, with_batch.p, 28));
    out.len = 0;
    split(&out, REPAIR_MARKER, &none, &with_batch);
    rc |= save(dir, "repair_batch", &out);

    /* Two segments, the sealed one with a torn tail: corruption in a
     * sealed segment, never cut as a torn tail. */
    out.len = 0;
    s1.len -= 3;
    split(&out, SPLIT_MARKER, &s1, &s2);
    rc |= save(dir, "two_segments_sealed_torn", &out);

    /* Format version 2: sealed segment 1 (groups ending with commit marks,
     * then its trailer) and segment 2 naming it, with one group and a
     * torn second one; in both modes. Then the crash in the middle of a
     * rotation: segment 1 without its trailer, segment 2 empty, naming it
     * and its size with the trailer. */
    buf t1 = {0}, t2 = {0};
    seg_v2(&t1, 1, 0, 0);
    uint64_t g = t1.len;
    put(&t1, 1, "a", "1");
    put(&t1, 2, "b", "two");
    mark(&t1, KV_REC_COMMIT, 2, g, 2);
    g = t1.len;
    batch(&t1, 3);
    mark(&t1, KV_REC_COMMIT, 5, g, 1);
    size_t t1_open = t1.len;
    mark(&t1, KV_REC_SEAL, 5, t1.len, 3);
    seg_v2(&t2, 2, 1, (uint32_t)t1.len);
    g = t2.len;
    put(&t2, 6, "a", "newest");
    del(&t2, 7, "b");
    mark(&t2, KV_REC_COMMIT, 7, g, 2);
    put(&t2, 8, "torn", "this group has no mark");
    out.len = 0;
    split(&out, SPLIT_MARKER, &t1, &t2);
    rc |= save(dir, "v2_two_segments", &out);
    out.len = 0;
    split(&out, REPAIR_MARKER, &t1, &t2);
    rc |= save(dir, "repair_v2_two_segments", &out);
    t1.len = t1_open;
    t2.len = 0;
    seg_v2(&t2, 2, 1, (uint32_t)(t1_open + KV_MARK_SIZE));
    out.len = 0;
    split(&out, SPLIT_MARKER, &t1, &t2);
    rc |= save(dir, "v2_rotation_interrupted", &out);
    free(t1.p);
    free(t2.p);

    free(with_batch.p);
    free(s1.p);
    free(s2.p);
    free(out.p);
    free(b.p);
    return rc;
}
