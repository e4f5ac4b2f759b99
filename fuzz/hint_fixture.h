/*
 * hint_fixture — the fixed segments fuzz_hint runs its hint files against,
 * shared with the generator of its seeds (make_hint_seeds.c), so that the
 * seeds are hints of exactly these bytes.
 *
 * Segment 1 (the sealed segment the fuzzed hint describes) in one of three
 * variants, and segment 2 (the newest, always scanned):
 *  - HF_SEG_FULL: puts (one with flags and a live expiry, one already
 *    expired, an empty key), an overwrite, a tombstone, a batch (two puts
 *    and a tombstone), then a last put;
 *  - HF_SEG_BATCH_LAST: the same without the last put, so the last record
 *    is the batch (a hint's max_seq is the batch's last entry's);
 *  - HF_SEG_EMPTY: only the segment header (a hint without entries);
 *  - segment 2: a put of a key segment 1 deleted, a delete of a key from
 *    segment 1's batch and a new key, with sequence numbers above
 *    segment 1's.
 * Everything is built with the project's encoder (kv/base/kv_record.h) and is
 * the same on every run (fixed times).
 *
 * Header-only: static inline functions.
 */
#ifndef FUZZ_HINT_FIXTURE_H
#define FUZZ_HINT_FIXTURE_H

#include <stdint.h>
#include <string.h>

#include "kv_record.h"

/* Times relative to the target's fixed clock, 1700000000000 ms
 * (2023-11-14T22:13:20Z). */
#define HF_NOW_MS 1700000000000ull
#define HF_CREATED_MS 1699999000000ull
#define HF_PAST_MS 1600000000000ull   /* already expired when recovered */
#define HF_FUTURE_MS 1800000000000ull /* still live */

enum hf_variant { HF_SEG_FULL = 0, HF_SEG_BATCH_LAST = 1, HF_SEG_EMPTY = 2, HF_NVARIANTS = 3 };

/* Large enough for every segment below. */
#define HF_SEG_CAP 2048u

static inline size_t hf_rec(uint8_t *out, uint8_t type, uint64_t seq, const char *key, const char *val,
                     uint64_t expire_ms, uint32_t flags)
{
    uint32_t kl = (uint32_t)strlen(key), vl = val ? (uint32_t)strlen(val) : 0;
    return kv_record_encode(out, type, 0, seq, expire_ms, flags, key, kl, val, vl);
}

/* A batch record at seq: two puts and a tombstone (seq .. seq + 2). */
static inline size_t hf_batch(uint8_t *out, uint64_t seq)
{
    uint8_t *p = out + KV_REC_HEADER_SIZE;
    size_t n = 0;
    n += kv_record_encode(p + n, KV_REC_PUT, KV_RF_IN_BATCH, seq, 0, 7, "bk1", 3, "bv1", 3);
    n += kv_record_encode(p + n, KV_REC_PUT, KV_RF_IN_BATCH, seq + 1, HF_FUTURE_MS, 0, "bk2", 3, "value two", 9);
    n += kv_record_encode(p + n, KV_REC_TOMBSTONE, KV_RF_IN_BATCH, seq + 2, 0, 0, "a", 1, NULL, 0);
    return kv_record_finish(out, KV_REC_BATCH, 0, seq, 0, 3, 0, (uint32_t)n);
}

/* Writes sealed segment 1 in `variant` into out (HF_SEG_CAP bytes);
 * returns its length. */
static inline size_t hf_segment1(enum hf_variant variant, uint8_t *out)
{
    size_t n = 0;
    kv_seg_header_encode(out, 1, HF_CREATED_MS);
    n += KV_SEG_HEADER_SIZE;
    if (variant == HF_SEG_EMPTY) return n;
    n += hf_rec(out + n, KV_REC_PUT, 1, "a", "1", 0, 0);
    n += hf_rec(out + n, KV_REC_PUT, 2, "b", "two", HF_FUTURE_MS, 0xdeadbeefu);
    n += hf_rec(out + n, KV_REC_PUT, 3, "c", "three", 0, 0);
    n += hf_rec(out + n, KV_REC_PUT, 4, "expired", "gone", HF_PAST_MS, 0);
    n += hf_rec(out + n, KV_REC_PUT, 5, "", "empty key", 0, 0);
    n += hf_rec(out + n, KV_REC_PUT, 6, "a", "one, again", 0, 0);
    n += hf_rec(out + n, KV_REC_TOMBSTONE, 7, "c", NULL, 0, 0);
    n += hf_batch(out + n, 8); /* seqs 8, 9, 10 */
    if (variant == HF_SEG_BATCH_LAST) return n;
    n += hf_rec(out + n, KV_REC_PUT, 11, "after batch", "x", 0, 0);
    return n;
}

/* Writes the newest segment 2 into out (HF_SEG_CAP bytes); returns its
 * length. Its last sequence number is HF_SEG2_LAST_SEQ. */
#define HF_SEG2_LAST_SEQ 102u
static inline size_t hf_segment2(uint8_t *out)
{
    size_t n = 0;
    kv_seg_header_encode(out, 2, HF_CREATED_MS + 1000);
    n += KV_SEG_HEADER_SIZE;
    n += hf_rec(out + n, KV_REC_PUT, 100, "c", "newest c", 0, 0);
    n += hf_rec(out + n, KV_REC_TOMBSTONE, 101, "bk1", NULL, 0, 0);
    n += hf_rec(out + n, KV_REC_PUT, 102, "d", "four", 0, 0);
    return n;
}

#endif
