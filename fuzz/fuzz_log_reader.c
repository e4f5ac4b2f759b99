/*
 * fuzz_log_reader — fuzz target for the log reader (recovery/kvr_reader.h)
 * and recovery (recovery/kvr_recover.h, run through kv_open).
 *
 * One LLVMFuzzerTestOneInput for libFuzzer, AFL++ (its libFuzzer driver)
 * and fuzz/replay.c, which CTest runs over the seed corpus and the past
 * crashes. See fuzz/README.md.
 *
 * Input. The bytes of segment files in an in-memory filesystem (kv_memfs),
 * data directory "db":
 *  - by default the whole input is the only, newest segment,
 *    db/0000000001.seg;
 *  - if the first byte is SPLIT_MARKER (0xA5) and the input is at least
 *    3 bytes long, bytes [1, 3) are a little-endian u16 n: the next n
 *    bytes (fewer if the input ends first) are the sealed segment
 *    db/0000000001.seg and the rest is the newest segment
 *    db/0000000002.seg. This fuzzes sealed-segment handling and sequence
 *    numbers across segments;
 *  - if the first byte is REPAIR_MARKER (0xA6), the same two segments, but
 *    the target first recomputes their CRCs (repair_segment below): most
 *    mutations of a CRC-protected input only ever reach a CRC check, and
 *    this lets them reach the length, type, batch and sequence checks and
 *    the key directory behind them. (n = 0 gives an empty sealed segment
 *    and the rest as the newest.)
 * A segment starts with "KVDS", so no valid single segment starts with a
 * marker byte. Inputs over MAX_INPUT bytes are skipped, to keep one run
 * bounded.
 *
 * Invariants checked (abort() on a violation, so every fuzzer and the
 * replay see it):
 *  1. Reader: kvr_scan_buffer returns KV_OK, or KV_VERSION without any
 *     callback. Records and problem regions come in file order and tile
 *     the buffer: every byte after a valid segment header (every byte, if
 *     the header is bad) is in exactly one record or region, and none
 *     reaches past the end. Every record is at least a header long,
 *     decodes again on its own as a valid top-level record, and a batch
 *     yields exactly `flags` entries inside it. No record follows a
 *     problem that said no valid record follows it. An unwritten region
 *     (KVR_UNWRITTEN) is all zeros and ends the buffer, and no other bad
 *     record region that ends the buffer ends in a zero byte. The scan result's
 *     counts and sizes agree with the callbacks.
 *  2. kv_open in tolerate-tail mode returns KV_OK, KV_CORRUPT or
 *     KV_VERSION (never ENOMEM or another errno: the inputs are small and
 *     the filesystem is in memory), with a message when it refuses.
 *  3. Once open, every key kv_scan yields reads back with kv_get as KV_OK
 *     (recovery verified every record it indexed), the distinct keys number
 *     what the report says, and kv_close returns KV_OK.
 *  4. Recovery is idempotent: opening again returns KV_OK with the same
 *     keys and values, no problem, no torn bytes and no unwritten bytes.
 *  5. kv_open in skip-corrupt mode on a fresh copy of the input returns
 *     KV_OK, or KV_VERSION (and then tolerate-tail gave KV_VERSION or
 *     KV_CORRUPT too); every key reads back KV_OK; when tolerate-tail
 *     opened, skip-corrupt holds the same keys and values and cut the same
 *     bytes (all problems were a torn tail); and opening it again in
 *     skip-corrupt mode gives the same keys and values and cuts nothing
 *     (skipped regions stay, so problems may be reported again).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_io_sim.h"
#include "kv_record.h"
#include "kv_store.h"
#include "kvr_reader.h"
#include "kvr_recover.h"

#define MAX_INPUT (1u << 20) /* bytes */
#define SPLIT_MARKER 0xA5u
#define REPAIR_MARKER 0xA6u
#define DB "db"
/* The store's wall clock, fixed so expiry is the same in every open:
 * 2023-11-14T22:13:20Z in ms since the epoch. */
#define FUZZ_NOW_MS 1700000000000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stops here with a message: abort() so that libFuzzer, AFL++ and the
 * replay (under ASan) all report the input. */
#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "fuzz_log_reader: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                                               \
        }                                                                                                          \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    return p;
}

#include "store_digest.h"

/* ---- invariant 1: the reader ---- */

typedef struct scan_check {
    const uint8_t *buf;
    uint64_t len;
    uint32_t seg;
    uint64_t next;         /* where the next record or problem must start (0: none yet) */
    uint64_t records;
    uint64_t marks;
    uint64_t problems;
    int nothing_valid_after; /* a problem said no valid record follows */
} scan_check;

static int check_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    scan_check *c = arg;
    CHECK(seg == c->seg);
    CHECK(!c->nothing_valid_after);
    CHECK(off == (c->next ? c->next : KV_SEG_HEADER_SIZE));
    CHECK(r->len >= KV_REC_HEADER_SIZE && off + r->len <= c->len);
    CHECK(r->rflags == 0);
    CHECK(r->key == c->buf + off + KV_REC_HEADER_SIZE);
    CHECK(r->val == r->key + r->klen && (uint64_t)KV_REC_HEADER_SIZE + r->klen + r->vlen == r->len);

    kv_record again;
    CHECK(kv_record_decode(c->buf + off, (size_t)(c->len - off), &again) == KV_OK);
    CHECK(again.len == r->len && again.seq == r->seq && again.type == r->type);
    if (r->type == KV_REC_BATCH) {
        size_t pos = 0;
        uint32_t n = 0;
        kv_record e;
        kv_status st;
        while ((st = kv_record_batch_next(r, &pos, &e)) == KV_OK) {
            CHECK(e.rflags == KV_RF_IN_BATCH && (e.type == KV_REC_PUT || e.type == KV_REC_TOMBSTONE));
            CHECK(pos <= r->vlen && e.seq == r->seq + n);
            n++;
        }
        CHECK(st == KV_NOT_FOUND && n == r->flags && n > 0);
    } else if (kv_record_is_mark(r)) {
        CHECK(r->klen == 0 && r->vlen == 0);
        c->next = off + r->len;
        c->marks++;
        return 0;
    } else {
        CHECK(r->type == KV_REC_PUT || r->type == KV_REC_TOMBSTONE);
    }
    c->next = off + r->len;
    c->records++;
    return 0;
}

static void check_problem(void *arg, const kvr_problem *p)
{
    scan_check *c = arg;
    CHECK(p->seg == c->seg);
    CHECK(p->length > 0 && p->offset <= c->len && p->length <= c->len - p->offset);
    CHECK(p->offset == c->next || (c->next == 0 && p->offset == KV_SEG_HEADER_SIZE));
    CHECK(p->reason >= KVR_SEG_HEADER_SHORT && p->reason <= KVR_UNWRITTEN);
    if (p->reason == KVR_UNWRITTEN) { /* zeros to the end, after a record or a region ending non-zero */
        CHECK(p->offset + p->length == c->len && !p->valid_after);
        for (uint64_t i = p->offset; i < c->len; i++) CHECK(c->buf[i] == 0);
    } else if (p->reason != KVR_SEQ_ORDER && p->reason != KVR_SEG_HEADER_SHORT && p->reason != KVR_SEG_HEADER_BAD &&
               p->offset + p->length == c->len) {
        CHECK(c->buf[c->len - 1] != 0); /* a bad record region gives its trailing zeros up */
    }
    if (p->reason == KVR_SEG_HEADER_SHORT || p->reason == KVR_SEG_HEADER_BAD)
        CHECK(p->offset == 0);
    else
        CHECK(p->offset >= KV_SEG_HEADER_SIZE);
    if (!p->valid_after) c->nothing_valid_after = 1;
    c->next = p->offset + p->length;
    c->problems++;
}

static void check_scan(const uint8_t *buf, size_t len, uint32_t seg)
{
    scan_check c = {.buf = buf, .len = len, .seg = seg};
    kvr_scan_result res;
    kv_status st = kvr_scan_buffer(buf, len, seg, NULL, check_record, check_problem, &c, &res);
    CHECK(st == KV_OK || st == KV_VERSION);
    if (st == KV_VERSION) {
        CHECK(c.records == 0 && c.problems == 0);
        return;
    }
    CHECK(res.file_size == len && res.records == c.records && res.problems == c.problems && !res.stopped);
    CHECK(res.valid_end <= len);
    /* Every byte after the segment header is in a record or a problem
     * region: together they reach the end of the buffer. */
    if (c.records == 0 && c.problems == 0)
        CHECK(len == 0 || len == KV_SEG_HEADER_SIZE);
    else
        CHECK(c.next == len);
    /* The same bytes without callbacks: the same counts. */
    kvr_scan_result res2;
    CHECK(kvr_scan_buffer(buf, len, seg, NULL, NULL, NULL, NULL, &res2) == KV_OK);
    CHECK(res2.records == res.records && res2.problems == res.problems && res2.valid_end == res.valid_end);
}

/* ---- invariants 2-5: recovery through kv_open ---- */

static uint64_t fixed_clock(void *arg)
{
    (void)arg;
    return FUZZ_NOW_MS;
}

/* Invariant 3: walks every key with kv_scan, reads each with kv_get (it
 * must be KV_OK) and digests the distinct keys (store_digest.h). */
static sd_digest read_all(kv_store *s)
{
    return sd_read_all(s, 0, 1u << 22, "fuzz_log_reader");
}

typedef struct open_result {
    kv_status st;
    sd_digest d;
    uint64_t torn_bytes;
    uint64_t unwritten_bytes;
    uint32_t problems;
} open_result;

/* Opens DB on fs in `mode`; when it opens, reads every key back and
 * closes (invariants 2 and 3). */
static open_result open_check(kv_memfs *fs, kvr_mode mode)
{
    kv_options o;
    kv_options_init(&o);
    o.io = kv_memfs_io(fs);
    o.recovery_mode = mode;
    o.clock_ms = fixed_clock;
    kv_store *s = NULL;
    kvr_report rep;
    open_result r;
    memset(&r, 0, sizeof r);
    r.st = kv_open(DB, &o, &s, &rep);
    if (r.st != KV_OK && r.st != KV_CORRUPT && r.st != KV_VERSION)
        fprintf(stderr, "fuzz_log_reader: kv_open (%s): %s: %s\n", kvr_mode_name(mode), kv_strerror(r.st),
                rep.message);
    CHECK(r.st == KV_OK || r.st == KV_CORRUPT || r.st == KV_VERSION);
    if (r.st != KV_OK) {
        CHECK(s == NULL && rep.message[0] != 0);
        kvr_report_free(&rep);
        return r;
    }
    CHECK(s != NULL);
    r.torn_bytes = rep.torn_bytes;
    r.unwritten_bytes = rep.unwritten_bytes;
    r.problems = rep.problems;
    r.d = read_all(s);
    CHECK(r.d.keys == rep.keys);
    kv_stats stats;
    kv_get_stats(s, &stats);
    CHECK(stats.keys == rep.keys && !stats.failstop);
    kvr_report_free(&rep);
    CHECK(kv_close(s) == KV_OK);
    return r;
}

static kv_memfs *make_fs(const uint8_t *seg1, size_t len1, const uint8_t *seg2, size_t len2, int two)
{
    kv_memfs *fs = kv_memfs_new();
    CHECK(fs != NULL);
    const kv_io *io = kv_memfs_io(fs);
    CHECK(io->mkdir(io->ctx, DB) == 0);
    CHECK(kv_memfs_write(fs, DB "/0000000001.seg", seg1, len1) == 0);
    if (two) CHECK(kv_memfs_write(fs, DB "/0000000002.seg", seg2, len2) == 0);
    return fs;
}


/* CRC repair (inputs starting with REPAIR_MARKER): walks the records the
 * way a writer lays them out, trusting each length field, and recomputes
 * the segment header CRC and every record's hcrc and crc (a batch's
 * entries first), so that mutations reach the checks behind the CRCs.
 * Stops at the first length that does not fit; the rest stays as it is. */
static void repair_records(uint8_t *b, size_t len, int in_batch)
{
    size_t pos = 0;
    while (len - pos >= KV_REC_HEADER_SIZE) {
        uint8_t *r = b + pos;
        uint32_t rl = kv_get_u32(r + 8), klen = kv_get_u32(r + 16), vlen = kv_get_u32(r + 20);
        if (rl < KV_REC_HEADER_SIZE || rl > len - pos) break;
        if (!in_batch && r[12] == KV_REC_BATCH && (uint64_t)KV_REC_HEADER_SIZE + klen + vlen == rl)
            repair_records(r + KV_REC_HEADER_SIZE + klen, vlen, 1);
        kv_put_u32(r + 4, kv_crc32(0, r + 8, KV_REC_HEADER_SIZE - 8));
        kv_put_u32(r, kv_crc32(0, r + 4, rl - 4));
        pos += rl;
    }
}

static void repair_segment(uint8_t *b, size_t len)
{
    if (len < KV_SEG_HEADER_SIZE) return;
    kv_put_u32(b + 28, kv_crc32(0, b, 28));
    repair_records(b + KV_SEG_HEADER_SIZE, len - KV_SEG_HEADER_SIZE, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT) return 0;

    const uint8_t *seg1 = data, *seg2 = NULL;
    size_t len1 = size, len2 = 0;
    uint8_t *copy = NULL;
    int two = size >= 3 && (data[0] == SPLIT_MARKER || data[0] == REPAIR_MARKER);
    if (two) {
        size_t n = (size_t)data[1] | ((size_t)data[2] << 8);
        len1 = size - 3 < n ? size - 3 : n;
        len2 = size - 3 - len1;
        seg1 = data + 3;
        if (data[0] == REPAIR_MARKER) {
            copy = xmalloc(size - 3);
            memcpy(copy, data + 3, size - 3);
            repair_segment(copy, len1);
            repair_segment(copy + len1, len2);
            seg1 = copy;
        }
        seg2 = seg1 + len1;
    }

    /* 1: the reader alone. */
    check_scan(seg1, len1, 1);
    if (two) check_scan(seg2, len2, 2);

    /* 2-4: tolerate-tail, then the same directory again. */
    kv_memfs *fs = make_fs(seg1, len1, seg2, len2, two);
    open_result tol = open_check(fs, KVR_TOLERATE_TAIL);
    if (tol.st == KV_OK) {
        open_result again = open_check(fs, KVR_TOLERATE_TAIL);
        CHECK(again.st == KV_OK);
        CHECK(sd_same(again.d, tol.d));
        CHECK(again.torn_bytes == 0 && again.unwritten_bytes == 0 && again.problems == 0);
    }
    kv_memfs_free(fs);

    /* 5: skip-corrupt on a fresh copy, then again. */
    fs = make_fs(seg1, len1, seg2, len2, two);
    open_result skip = open_check(fs, KVR_SKIP_CORRUPT);
    CHECK(skip.st == KV_OK || skip.st == KV_VERSION);
    if (skip.st == KV_VERSION) CHECK(tol.st != KV_OK);
    if (tol.st == KV_VERSION) CHECK(skip.st == KV_VERSION);
    if (tol.st == KV_OK)
        CHECK(sd_same(skip.d, tol.d) && skip.torn_bytes == tol.torn_bytes && skip.unwritten_bytes == tol.unwritten_bytes);
    if (skip.st == KV_OK) {
        open_result again = open_check(fs, KVR_SKIP_CORRUPT);
        CHECK(again.st == KV_OK);
        CHECK(sd_same(again.d, skip.d));
        CHECK(again.torn_bytes == 0 && again.unwritten_bytes == 0);
    }
    kv_memfs_free(fs);
    free(copy);
    return 0;
}
