/*
 * fuzz_hint — fuzz target for the hint-file reader (recovery/kvr_hint.h:
 * kvh_decode, kvh_next) and for recovery loading a sealed segment from a
 * hint file (recovery/kvr_recover.c, load_hint, run through kv_open).
 *
 * One LLVMFuzzerTestOneInput for libFuzzer, AFL++ (its libFuzzer driver)
 * and fuzz/replay.c, which CTest runs over the seed corpus and the past
 * crashes. See fuzz/README.md.
 *
 * Input. The bytes of the hint file db/0000000001.hint, in an in-memory
 * filesystem (kv_memfs) that also holds a fixed, valid sealed segment
 * db/0000000001.seg and a fixed, valid newest segment db/0000000002.seg
 * (fuzz/hint_fixture.h):
 *  - by default the whole input is the hint file, and segment 1 is
 *    HF_SEG_FULL (puts, an overwrite, an expired put, a tombstone, a
 *    batch, a last put);
 *  - if the first byte is REPAIR_MARKER (0xA6), 0xA7 or 0xA8, the rest is
 *    the hint file and segment 1 is HF_SEG_FULL, HF_SEG_BATCH_LAST (its
 *    last record is a batch) or HF_SEG_EMPTY (its header only). The target
 *    first recomputes the hint's trailing CRC32 (zlib crc32 of every byte
 *    before the last 4): most mutations of a CRC-protected input only ever
 *    reach the CRC check, and this lets them reach the structural checks
 *    and recovery behind it.
 * A hint file starts with "KVDH", so no valid hint starts with a marker
 * byte. Inputs over MAX_INPUT bytes are skipped, to keep one run bounded.
 * The hint is decoded from a heap copy of exactly its length, so ASan
 * sees any read past its end.
 *
 * Invariants checked (abort() on a violation, so every fuzzer and the
 * replay see it):
 *  1. kvh_decode returns KV_OK, KV_CORRUPT or KV_VERSION; KV_VERSION and
 *     KV_OK only for a buffer of at least header + trailer size with the
 *     magic and a valid CRC (KV_VERSION: a version other than
 *     KVH_VERSION). Decoding with expect_seg 0 agrees: the same header
 *     when it accepts segment 1, the same KV_VERSION, and acceptance with
 *     expect_seg 1 whenever the header names segment 1.
 *  2. When kvh_decode accepts: the header is consistent (an empty segment
 *     has no entries, no sequence numbers, no last record and is exactly
 *     a segment header long; otherwise 1 <= min_seq <= max_seq, 1 <=
 *     nhints <= entries, the last record starts inside the segment), and
 *     kvh_next yields exactly h.nhints entries, each with its fixed part
 *     and key inside the buffer (before the trailer), type put or
 *     tombstone, key length within KV_MAX_KEY_LEN, records in ascending
 *     order and not overlapping from the end of the segment header, every
 *     record at least
 *     a header and its key long and inside h.seg_size, seq within
 *     [min_seq, max_seq], tombstones without expiry; the walk ends exactly
 *     at the trailer, and kvh_next keeps returning 0 after it. The decoded
 *     header and entries re-encode to exactly the input bytes (nothing in
 *     an accepted file is ignored: every reserved byte is zero).
 *  3. kv_open with hint_files = 0 returns KV_OK, every key reads back
 *     KV_OK, and the hint file is left untouched. With hint files off the
 *     hint is never read, so this store is made once per segment 1
 *     variant (with a junk hint file) and is what the opens below are
 *     compared with; the builder's hint (kvr_hint_build) of the variant is
 *     then checked to be used and to give exactly that store.
 *     In every open: kv_open returns KV_OK, the distinct keys kv_scan
 *     yields number what the report and kv_stats say, the store holds
 *     segments 1 and 2 with 2 active, all their bytes and segment 2's
 *     last sequence number, with live + dead bytes + segment headers
 *     equal to its log bytes, is not in fail-stop, has a hint for segment
 *     1 exactly when hint files are on (none pending), and kv_close
 *     returns KV_OK.
 *  4. kv_open with hint files on, with the fuzzed hint: (the segments are
 *     valid, so a hint is only ever used or rejected) it reports exactly
 *     one hint used or rejected, none failed, and it uses the hint
 *     exactly when kvh_decode accepts it for segment 1 and it matches the
 *     segment (its size, its 32-byte header, and the 44-byte record
 *     header at last_off), as kvh_matches_segment defines.
 *      - Hint rejected: the store equals the hint_files = 0 store (keys,
 *        values, expiry times and flags, every read KV_OK), and recovery
 *        replaced the hint file with the builder's hint of the segment,
 *        byte for byte (which invariant 3 showed is used next time).
 *      - Hint used: the hint file is untouched, nothing was written, and
 *        every key kv_scan yields reads back with kv_get as KV_OK or
 *        KV_CORRUPT (never another status, and no sanitizer report):
 *        recovery only checks a hint's structure and staleness, so a
 *        hint with a valid CRC that lies about its records (offsets,
 *        lengths, sequence numbers, missing or extra keys) can be
 *        accepted; a read of a key it lied about must then be refused
 *        or answered from a record that decodes with that key, length
 *        and sequence number (what kv_get verifies), never crash.
 *        When the hint is byte for byte the builder's own, the store
 *        equals the hint_files = 0 store and no read fails.
 *     "The store equals" includes its accounting (kv_stats: keys, live
 *     and dead bytes, log bytes, records, last sequence number, keys
 *     with an expiry).
 *  5. After a used hint, reopening with hint files on uses it again (one
 *     used, none rejected, none written) and gives the same store, with
 *     the same reads failing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hint_fixture.h"
#include "kv_io_sim.h"
#include "kv_record.h"
#include "kv_store.h"
#include "kvr_hint.h"
#include "kvr_recover.h"

#define MAX_INPUT (64u << 10) /* bytes */
#define REPAIR_MARKER 0xA6u   /* 0xA6 + variant (0 .. HF_NVARIANTS - 1) */
#define DB "db"
#define SEG1_PATH DB "/0000000001.seg"
#define SEG2_PATH DB "/0000000002.seg"
#define HINT_PATH DB "/0000000001.hint"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stops here with a message: abort() so that libFuzzer, AFL++ and the
 * replay (under ASan) all report the input. */
#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "fuzz_hint: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);              \
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

/* ---- invariants 1 and 2: the decoder ---- */

static int crc_ok(const uint8_t *buf, size_t len)
{
    return len >= KVH_TRAILER_SIZE && kv_get_u32(buf + len - 4) == kv_crc32(0, buf, len - 4);
}

/* Re-encodes the accepted hint from its decoded header and entries into a
 * fresh buffer and compares it with the input. */
static void check_reencode(const uint8_t *buf, size_t len, const kvh_header *h)
{
    uint8_t *p = calloc(1, len);
    CHECK(p != NULL);
    memcpy(p, KVH_MAGIC, 4);
    kv_put_u16(p + 4, KVH_VERSION);
    kv_put_u16(p + 6, KVH_HEADER_SIZE);
    kv_put_u32(p + 8, h->seg);
    kv_put_u64(p + 16, h->seg_size);
    kv_put_u64(p + 24, h->nhints);
    kv_put_u64(p + 32, h->records);
    kv_put_u64(p + 40, h->batches);
    kv_put_u64(p + 48, h->entries);
    kv_put_u64(p + 56, h->tombstones);
    kv_put_u64(p + 64, h->min_seq);
    kv_put_u64(p + 72, h->max_seq);
    kv_put_u64(p + 80, h->last_off);
    memcpy(p + 88, h->seg_header, KV_SEG_HEADER_SIZE);
    memcpy(p + 120, h->last_header, KV_REC_HEADER_SIZE);
    size_t pos = 0, at = KVH_HEADER_SIZE;
    kvh_entry e;
    while (kvh_next(buf, len, &pos, &e)) {
        uint8_t *q = p + at;
        q[0] = e.type;
        kv_put_u32(q + 4, e.klen);
        kv_put_u64(q + 8, e.off);
        kv_put_u32(q + 16, e.len);
        kv_put_u64(q + 24, e.seq);
        kv_put_u64(q + 32, e.expire_ms);
        if (e.klen) memcpy(q + KVH_ENTRY_SIZE, e.key, e.klen);
        at += KVH_ENTRY_SIZE + e.klen;
    }
    CHECK(at == len - KVH_TRAILER_SIZE);
    kv_put_u32(p + at, kv_crc32(0, p, at));
    CHECK(memcmp(p, buf, len) == 0);
    free(p);
}

/* Walks the entries of a hint kvh_decode accepted. */
static void check_entries(const uint8_t *buf, size_t len, const kvh_header *h)
{
    if (h->records == 0) {
        CHECK(h->nhints == 0 && h->batches == 0 && h->entries == 0 && h->tombstones == 0);
        CHECK(h->min_seq == 0 && h->max_seq == 0 && h->last_off == 0 && h->seg_size == KV_SEG_HEADER_SIZE);
    } else {
        CHECK(h->min_seq >= 1 && h->min_seq <= h->max_seq);
        CHECK(h->nhints >= 1 && h->nhints <= h->entries && h->batches <= h->records);
        CHECK(h->tombstones <= h->entries && h->records <= h->entries);
        CHECK(h->last_off >= KV_SEG_HEADER_SIZE && h->last_off < h->seg_size);
    }
    const uint8_t *end = buf + len - KVH_TRAILER_SIZE;
    size_t pos = 0;
    uint64_t n = 0, prev_end = KV_SEG_HEADER_SIZE;
    kvh_entry e;
    while (kvh_next(buf, len, &pos, &e)) {
        CHECK(++n <= h->nhints);
        const uint8_t *fixed = e.key - KVH_ENTRY_SIZE;
        CHECK(fixed >= buf + KVH_HEADER_SIZE && e.key <= end && e.klen <= (size_t)(end - e.key));
        CHECK(buf + pos == e.key + e.klen);
        CHECK(e.type == KV_REC_PUT || e.type == KV_REC_TOMBSTONE);
        CHECK(e.klen <= KV_MAX_KEY_LEN);
        CHECK(e.off >= prev_end && e.off < h->seg_size); /* no overlap */
        CHECK(e.len >= KV_REC_HEADER_SIZE + (uint64_t)e.klen && e.len <= h->seg_size - e.off);
        CHECK(e.seq >= h->min_seq && e.seq <= h->max_seq);
        if (e.type == KV_REC_TOMBSTONE) CHECK(e.expire_ms == 0);
        prev_end = e.off + e.len;
    }
    CHECK(n == h->nhints);
    CHECK(pos == len - KVH_TRAILER_SIZE);
    CHECK(!kvh_next(buf, len, &pos, &e) && pos == len - KVH_TRAILER_SIZE);
    check_reencode(buf, len, h);
}

/* Decodes the hint (for segment 1 and for any segment) and checks what
 * the decoder promises; returns kvh_decode's status for segment 1. */
static kv_status check_decode(const uint8_t *buf, size_t len, kvh_header *h)
{
    kv_status st = kvh_decode(buf, len, 1, h);
    CHECK(st == KV_OK || st == KV_CORRUPT || st == KV_VERSION);
    if (st != KV_CORRUPT) {
        CHECK(len >= KVH_HEADER_SIZE + KVH_TRAILER_SIZE && memcmp(buf, KVH_MAGIC, 4) == 0 && crc_ok(buf, len));
        CHECK((st == KV_VERSION) == (kv_get_u16(buf + 4) != KVH_VERSION));
    }
    kvh_header any;
    kv_status st0 = kvh_decode(buf, len, 0, &any);
    CHECK(st0 == KV_OK || st0 == KV_CORRUPT || st0 == KV_VERSION);
    CHECK((st0 == KV_VERSION) == (st == KV_VERSION));
    if (st == KV_OK) CHECK(st0 == KV_OK && memcmp(&any, h, sizeof any) == 0 && h->seg == 1);
    if (st0 == KV_OK && any.seg == 1) CHECK(st == KV_OK);
    if (st0 == KV_OK) check_entries(buf, len, &any);
    return st;
}

/* What kvh_matches_segment decides for segment bytes seg[0, len). */
static int matches(const kvh_header *h, const uint8_t *seg, size_t len)
{
    if (h->seg_size != len || memcmp(h->seg_header, seg, KV_SEG_HEADER_SIZE) != 0) return 0;
    if (h->records == 0) return 1;
    return h->last_off + KV_REC_HEADER_SIZE <= len &&
           memcmp(seg + h->last_off, h->last_header, KV_REC_HEADER_SIZE) == 0;
}

/* ---- invariants 3-5: recovery through kv_open ---- */

static uint64_t fixed_clock(void *arg)
{
    (void)arg;
    return HF_NOW_MS;
}

/* Walks every key with kv_scan and reads each distinct one with kv_get:
 * KV_OK or KV_CORRUPT (counted), nothing else (store_digest.h). */
static sd_digest read_all(kv_store *s)
{
    return sd_read_all(s, 1, 1u << 20, "fuzz_hint");
}

typedef struct open_result {
    sd_digest d;
    uint32_t hints_used, hints_rejected, hints_written, hints_failed;
    kv_stats stats;
} open_result;

/* The store's accounting of what it loaded: the same whether segment 1
 * was scanned or loaded from a truthful hint. */
static int same_accounting(const kv_stats *a, const kv_stats *b)
{
    return a->keys == b->keys && a->live_bytes == b->live_bytes && a->dead_bytes == b->dead_bytes &&
           a->log_bytes == b->log_bytes && a->records == b->records && a->last_seq == b->last_seq &&
           a->expires == b->expires;
}

/* Opens DB on fs (tolerate-tail, hint files on or off), which must
 * succeed, reads every key back and closes. The store holds the two
 * segments, the newest active, and with hint files on segment 1 has a
 * hint (used or just written). */
static open_result open_check(kv_memfs *fs, int hint_files, size_t log_bytes)
{
    kv_options o;
    kv_options_init(&o);
    o.io = kv_memfs_io(fs);
    o.clock_ms = fixed_clock;
    o.hint_files = hint_files;
    kv_store *s = NULL;
    kvr_report rep;
    kv_status st = kv_open(DB, &o, &s, &rep);
    if (st != KV_OK)
        fprintf(stderr, "fuzz_hint: kv_open (hint_files=%d): %s: %s\n", hint_files, kv_strerror(st), rep.message);
    CHECK(st == KV_OK && s != NULL);
    open_result r;
    memset(&r, 0, sizeof r);
    r.hints_used = rep.hints_used;
    r.hints_rejected = rep.hints_rejected;
    r.hints_written = rep.hints_written;
    r.hints_failed = rep.hints_failed;
    r.d = read_all(s);
    CHECK(r.d.keys == rep.keys);
    kv_get_stats(s, &r.stats);
    CHECK(r.stats.keys == rep.keys && !r.stats.failstop);
    CHECK(r.stats.segments == 2 && r.stats.active_segment == 2 && r.stats.log_bytes == log_bytes);
    CHECK(r.stats.last_seq == HF_SEG2_LAST_SEQ);
    /* Accounting stays consistent even with a lying hint: its records
     * never overlap, so the live bytes fit in the log. */
    CHECK(r.stats.live_bytes + r.stats.dead_bytes + 2u * KV_SEG_HEADER_SIZE == r.stats.log_bytes);
    CHECK(r.stats.hint_files == (uint32_t)(hint_files != 0) && r.stats.hints_pending == 0);
    kvr_report_free(&rep);
    CHECK(kv_close(s) == KV_OK);
    return r;
}

/* Whether file `path` in fs holds exactly buf[0, len). */
static int file_is(kv_memfs *fs, const char *path, const uint8_t *buf, size_t len)
{
    uint8_t *got = NULL;
    size_t got_len = 0;
    if (kv_memfs_read(fs, path, &got, &got_len) != 0) return 0;
    int eq = got_len == len && (len == 0 || memcmp(got, buf, len) == 0);
    free(got);
    return eq;
}

/* ---- the fixed segments, their builder hints and the hint_files = 0
 * store, made once ---- */

typedef struct fixture {
    uint8_t seg1[HF_SEG_CAP];
    size_t seg1_len;
    uint8_t *hint; /* kvr_hint_build of seg1 */
    size_t hint_len;
    open_result base; /* the store opened with hint_files = 0 */
} fixture;

static fixture fixtures[HF_NVARIANTS];
static uint8_t seg2[HF_SEG_CAP];
static size_t seg2_len;
static int fixtures_ready;

/* A filesystem holding the two segments and the hint file. */
static kv_memfs *make_fs(const fixture *f, const uint8_t *hint, size_t hint_len)
{
    kv_memfs *fs = kv_memfs_new();
    CHECK(fs != NULL);
    const kv_io *io = kv_memfs_io(fs);
    CHECK(io->mkdir(io->ctx, DB) == 0);
    CHECK(kv_memfs_write(fs, SEG1_PATH, f->seg1, f->seg1_len) == 0);
    CHECK(kv_memfs_write(fs, SEG2_PATH, seg2, seg2_len) == 0);
    CHECK(kv_memfs_write(fs, HINT_PATH, hint, hint_len) == 0);
    return fs;
}

/* Invariant 3, once per variant: with hint files off the hint file is
 * never read, so the store does not depend on it. Also checks that the
 * builder's hint is used and gives that same store. */
static void make_fixtures(void)
{
    if (fixtures_ready) return;
    seg2_len = hf_segment2(seg2);
    static const uint8_t junk[] = "not a hint file";
    for (int v = 0; v < HF_NVARIANTS; v++) {
        fixture *f = &fixtures[v];
        f->seg1_len = hf_segment1((enum hf_variant)v, f->seg1);
        CHECK(f->seg1_len <= HF_SEG_CAP);
        CHECK(kvr_hint_build(f->seg1, f->seg1_len, 1, &f->hint, &f->hint_len) == KV_OK);
        kvh_header h;
        CHECK(kvh_decode(f->hint, f->hint_len, 1, &h) == KV_OK);
        CHECK(h.seg_size == f->seg1_len && (h.records == 0) == (v == HF_SEG_EMPTY));

        kv_memfs *fs = make_fs(f, junk, sizeof junk);
        f->base = open_check(fs, 0, f->seg1_len + seg2_len);
        CHECK(f->base.d.corrupt == 0);
        CHECK(f->base.hints_used == 0 && f->base.hints_rejected == 0 && f->base.hints_written == 0);
        CHECK(file_is(fs, HINT_PATH, junk, sizeof junk));
        kv_memfs_free(fs);

        fs = make_fs(f, f->hint, f->hint_len);
        open_result r = open_check(fs, 1, f->seg1_len + seg2_len);
        CHECK(r.hints_used == 1 && r.hints_rejected == 0 && r.hints_written == 0);
        CHECK(sd_same(r.d, f->base.d) && same_accounting(&r.stats, &f->base.stats));
        kv_memfs_free(fs);
    }
    fixtures_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT) return 0;
    make_fixtures();

    int variant = HF_SEG_FULL, repair = 0;
    if (size >= 1 && data[0] >= REPAIR_MARKER && data[0] < REPAIR_MARKER + HF_NVARIANTS) {
        variant = data[0] - REPAIR_MARKER;
        repair = 1;
        data++;
        size--;
    }
    const fixture *f = &fixtures[variant];
    /* A copy of exactly the hint's length: ASan catches any read past it. */
    uint8_t *hint = xmalloc(size);
    if (size) memcpy(hint, data, size);
    if (repair && size >= KVH_TRAILER_SIZE) kv_put_u32(hint + size - 4, kv_crc32(0, hint, size - 4));

    /* 1, 2: the decoder alone. */
    kvh_header h;
    kv_status st = check_decode(hint, size, &h);
    int accept = st == KV_OK && matches(&h, f->seg1, f->seg1_len);
    int builders = size == f->hint_len && memcmp(hint, f->hint, size) == 0;
    if (builders) CHECK(accept);

    /* 4: hint files on. */
    kv_memfs *fs = make_fs(f, hint, size);
    open_result on = open_check(fs, 1, f->seg1_len + seg2_len);
    CHECK(on.hints_used + on.hints_rejected == 1 && on.hints_failed == 0);
    CHECK(on.hints_used == (uint32_t)accept);
    if (accept) {
        CHECK(on.hints_written == 0);
        CHECK(file_is(fs, HINT_PATH, hint, size));
        if (builders) CHECK(sd_same(on.d, f->base.d) && same_accounting(&on.stats, &f->base.stats));

        /* 5: again, from the same hint. */
        open_result again = open_check(fs, 1, f->seg1_len + seg2_len);
        CHECK(again.hints_used == 1 && again.hints_rejected == 0 && again.hints_written == 0);
        CHECK(sd_same(again.d, on.d) && same_accounting(&again.stats, &on.stats));
    } else {
        /* The builder's hint replaced it; make_fixtures checked that it
         * is used and gives this store (invariant 5). */
        CHECK(on.hints_written == 1);
        CHECK(sd_same(on.d, f->base.d) && same_accounting(&on.stats, &f->base.stats));
        CHECK(file_is(fs, HINT_PATH, f->hint, f->hint_len));
    }

    kv_memfs_free(fs);
    free(hint);
    return 0;
}
