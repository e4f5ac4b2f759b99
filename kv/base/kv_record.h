/*
 * kv_record — the on-disk format: segment header and record codec.
 *
 * The format is specified in docs/format.md (with a worked hex dump); this
 * comment is the short form every reader of the code needs.
 *
 * A segment file (NNNNNNNNNN.seg, the id in ten decimal digits) is a
 * 32-byte header followed by records, back to back. All integers are
 * little-endian, fixed width. CRC32 is zlib's crc32() (IEEE 802.3
 * polynomial, the same as gzip and PNG).
 *
 *   Segment header (KV_SEG_HEADER_SIZE = 32 bytes)
 *     0  u8[4] magic "KVDS"
 *     4  u16   format version (KV_FORMAT_VERSION)
 *     6  u16   header size (32)
 *     8  u32   segment id (equals the number in the file name)
 *    12  u32   replaces_from: 0, or for a compaction output with id hi,
 *                the first id of the range [replaces_from, hi] it replaces
 *                (segments in [replaces_from, hi - 1] are superseded)
 *    16  u64   creation time, milliseconds since the Unix epoch
 *    24  u32   reserved, 0
 *    28  u32   CRC32 of bytes [0, 28)
 *
 *   Record (KV_REC_HEADER_SIZE = 44 bytes of header, then key, then value)
 *     0  u32   crc    CRC32 of bytes [4, len): everything after this field
 *     4  u32   hcrc   CRC32 of bytes [8, 44): the rest of the header
 *     8  u32   len    total record length in bytes = 44 + klen + vlen
 *    12  u8    type   1 put, 2 tombstone, 3 batch
 *    13  u8    rflags bit 0: entry inside a batch (KV_RF_IN_BATCH); others 0
 *    14  u16   0      reserved
 *    16  u32   klen   key length in bytes
 *    20  u32   vlen   value length in bytes (batch: payload length)
 *    24  u64   seq    sequence number
 *    32  u64   expire absolute expiry, ms since the Unix epoch, 0 = none
 *    40  u32   flags  client flags (batch: number of entries)
 *    44  key bytes, then value bytes
 *
 * A batch record has klen 0; its value is a payload of `flags` complete
 * put/tombstone records (each with rflags bit 0 set, so a reader looking
 * for the next top-level record never mistakes one for it) whose sequence
 * numbers are seq, seq+1, ...; the outer crc covers them all, so recovery
 * applies the whole batch or none.
 *
 * Why a flipped length bit is never mistaken for a torn tail: `len`, klen
 * and vlen are covered by hcrc, which is checked on the 44 header bytes
 * alone before any length is trusted. A header whose hcrc fails is a bad
 * record, and recovery then looks for a valid record after it; only when
 * none exists is it a torn tail (see recovery/kvr_reader.h).
 */
#ifndef KV_RECORD_H
#define KV_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "kv_status.h"

/* The format version kvd writes (2) and the oldest it reads (1). A version
 * 1 segment has no group-commit marks, no trailer and no predecessor in
 * its header; kvd still reads it under the version 1 rules (see
 * docs/format.md, "Format versions"). */
#define KV_FORMAT_VERSION 2
#define KV_FORMAT_VERSION_MIN 1
#define KV_SEG_MAGIC "KVDS"
#define KV_SEG_HEADER_SIZE 32u
#define KV_REC_HEADER_SIZE 44u

/* Limits, in bytes. A key may be empty; a value may be empty. */
#define KV_MAX_KEY_LEN (64u * 1024u)            /* 64 KiB */
#define KV_MAX_VALUE_LEN (512u * 1024u * 1024u) /* 512 MiB, Redis's proto-max-bulk-len */
#define KV_MAX_BATCH_LEN (1024u * 1024u * 1024u) /* 1 GiB of batch payload */
#define KV_MAX_RECORD_LEN (KV_REC_HEADER_SIZE + KV_MAX_BATCH_LEN)

#define KV_RF_IN_BATCH 0x01u

enum kv_rec_type {
    KV_REC_PUT = 1,
    KV_REC_TOMBSTONE = 2,
    KV_REC_BATCH = 3,
    KV_REC_COMMIT = 4, /* version 2: group-commit mark, ends every group the
                          writer writes: seq = the last sequence number
                          assigned, expire field = the group's first byte
                          offset, flags = the group's top-level records */
    KV_REC_SEAL = 5,   /* version 2: segment trailer, the last record of
                          every sealed segment: seq = the last sequence
                          number assigned, expire field = the trailer's own
                          offset (the segment's bytes before it), flags =
                          the segment's top-level data records (marks not
                          counted) */
};

/* Bytes of a mark (KV_REC_COMMIT or KV_REC_SEAL): a record header with no
 * key and no value. */
#define KV_MARK_SIZE KV_REC_HEADER_SIZE



/* A decoded record. key and val point into the buffer it was decoded from
 * (no copy). For a batch, val/vlen is the payload and flags the count. */
typedef struct kv_record {
    uint8_t type;
    uint8_t rflags; /* KV_RF_IN_BATCH for an entry inside a batch */
    uint32_t len; /* total encoded length, bytes */
    uint64_t seq;
    uint64_t expire_ms;
    uint32_t flags;
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *val;
    uint32_t vlen;
} kv_record;

/* 1 for a group-commit mark or a segment trailer: a record that carries no
 * key, which every consumer of the reader's records skips when it applies,
 * copies or indexes records. */
static inline int kv_record_is_mark(const kv_record *r)
{
    return r->type == KV_REC_COMMIT || r->type == KV_REC_SEAL;
}

/* The last sequence number a top-level data record carries: seq for a put
 * or tombstone, seq + count - 1 for a batch, whose entries carry seq,
 * seq + 1, ... (docs/format.md, "Sequence numbers"). The next top-level
 * record's seq must be greater. */
static inline uint64_t kv_record_last_seq(const kv_record *r)
{
    return r->type == KV_REC_BATCH ? r->seq + r->flags - 1 : r->seq;
}

/* Byte offset in the segment of the batch entry that kv_record_batch_next
 * returned from payload position pos (the *pos it had before the call),
 * the batch itself being at batch_off: the entry follows the batch's
 * 44-byte header and the entries before it. */
static inline uint64_t kv_batch_entry_off(uint64_t batch_off, size_t pos)
{
    return batch_off + KV_REC_HEADER_SIZE + pos;
}

/* 1 if a record with absolute expiry expire_ms (ms since the epoch, 0 =
 * never) has expired at now_ms: its expiry is not later than now. */
static inline int kv_expired(uint64_t expire_ms, uint64_t now_ms)
{
    return expire_ms != 0 && expire_ms <= now_ms;
}

/* CRC32 (zlib, IEEE) of n bytes, continuing from crc (start with 0). */
uint32_t kv_crc32(uint32_t crc, const void *p, size_t n);

/* Little-endian helpers. */
static inline void kv_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void kv_put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void kv_put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t kv_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t kv_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t kv_get_u64(const uint8_t *p)
{
    return (uint64_t)kv_get_u32(p) | ((uint64_t)kv_get_u32(p + 4) << 32);
}

/* Checks key and value sizes against the limits. Returns KV_OK or
 * KV_INVALID (key over KV_MAX_KEY_LEN or value over KV_MAX_VALUE_LEN). */
kv_status kv_record_check_sizes(size_t klen, size_t vlen);

/* Encoded size in bytes of a record with these key and value lengths. */
static inline size_t kv_record_size(size_t klen, size_t vlen) { return KV_REC_HEADER_SIZE + klen + vlen; }

/* Encodes a put or tombstone record into out, which must hold
 * kv_record_size(klen, vlen) bytes. A tombstone must have vlen 0, expire 0
 * and flags 0. rflags is 0, or KV_RF_IN_BATCH for a batch entry. Returns
 * the bytes written. Sizes must have passed kv_record_check_sizes(). */
size_t kv_record_encode(uint8_t *out, uint8_t type, uint8_t rflags, uint64_t seq, uint64_t expire_ms,
                        uint32_t flags, const void *key, uint32_t klen, const void *val, uint32_t vlen);

/* Writes the header of a record whose klen + vlen body bytes already sit at
 * rec + KV_REC_HEADER_SIZE, and computes both CRCs. Used to seal a batch
 * after its entries were encoded in place. Returns the record length. */
size_t kv_record_finish(uint8_t *rec, uint8_t type, uint8_t rflags, uint64_t seq, uint64_t expire_ms,
                        uint32_t flags, uint32_t klen, uint32_t vlen);

/* Decodes and verifies the 44-byte header at buf: hcrc, type, reserved
 * bytes, and that len == 44 + klen + vlen within the limits. A batch entry
 * (rflags KV_RF_IN_BATCH) is accepted only for put and tombstone. Fills
 * r->type, len, seq, expire_ms, flags, klen, vlen (not key/val).
 * Returns KV_OK or KV_CORRUPT. Never trusts a length whose hcrc failed. */
kv_status kv_record_decode_header(const uint8_t buf[KV_REC_HEADER_SIZE], kv_record *r);

/* Decodes and verifies a whole record at buf, of which avail bytes are
 * readable. Returns KV_OK (r filled, key/val pointing into buf),
 * KV_NEED_MORE (header valid but the record runs past avail, or fewer than
 * 44 bytes available), or KV_CORRUPT (a CRC or structural check failed; for
 * a batch, also a malformed payload). */
kv_status kv_record_decode(const uint8_t *buf, size_t avail, kv_record *r);

/* Checks a decoded batch record's payload (b->val, b->vlen): exactly
 * b->flags >= 1 put/tombstone entries, each header valid, with sequence
 * numbers b->seq, b->seq + 1, ..., and nothing left over. The entries'
 * and the batch's CRCs are not computed (kv_record_decode does that).
 * Returns KV_OK or KV_CORRUPT. */
kv_status kv_record_batch_verify(const kv_record *b);

/* Iterates the entries of a batch record. *pos starts at 0. Returns KV_OK
 * with *e filled, KV_NOT_FOUND after the last entry, or KV_CORRUPT. Each
 * entry's header is checked (hcrc, fields, bounds); its record CRC is not
 * recomputed, because the batch's CRC covers it: call this on a batch
 * that kv_record_decode() accepted (which has walked every entry, so this
 * then never yields KV_CORRUPT). */
kv_status kv_record_batch_next(const kv_record *batch, size_t *pos, kv_record *e);

/* Encodes a mark of `type` (KV_REC_COMMIT or KV_REC_SEAL) into out
 * (KV_MARK_SIZE bytes): seq, the offset field (a commit mark's group start,
 * a trailer's own offset) and the record count, as kv_rec_type describes.
 * Returns KV_MARK_SIZE. */
size_t kv_mark_encode(uint8_t out[KV_MARK_SIZE], uint8_t type, uint64_t seq, uint64_t offset, uint32_t count);

/* A decoded segment header, either version.
 *   version 1: created_ms in ms; prev_id and prev_end are 0 (absent).
 *   version 2: bytes 16..27 are prev_id (u32), prev_end (u32) and the
 *              creation time in seconds (u32; created_ms is that * 1000).
 * prev_id is the id of the segment before this one in the log (0: none),
 * prev_end that segment's size in bytes, its trailer included, when this
 * one was created (for a compaction output's predecessor: its size then). */
typedef struct kv_seg_header {
    uint16_t version;
    uint32_t id;
    uint32_t replaces; /* 0, or a compaction output's first replaced id */
    uint64_t created_ms;
    uint32_t prev_id;
    uint32_t prev_end;
} kv_seg_header;

/* Encodes h (version 1 or 2, as h->version says) into out. */
void kv_seg_header_encode_h(uint8_t out[KV_SEG_HEADER_SIZE], const kv_seg_header *h);

/* Encodes a version 1 segment header for segment `id` into out: the old
 * format, for tests and tools that build version 1 directories. */
void kv_seg_header_encode(uint8_t out[KV_SEG_HEADER_SIZE], uint32_t id, uint64_t created_ms);

/* Encodes a version 1 header of a compaction output: segment `id` holds
 * the live records of segments [replaces_from, id], which it replaces. */
void kv_seg_header_encode_compacted(uint8_t out[KV_SEG_HEADER_SIZE], uint32_t id, uint64_t created_ms,
                                    uint32_t replaces_from);

/* Verifies and decodes a segment header as kv_seg_header_decode does,
 * filling *h (may be NULL). Same returns. */
kv_status kv_seg_header_parse(const uint8_t in[KV_SEG_HEADER_SIZE], uint32_t expect_id, kv_seg_header *h);

/* The replaces_from field of a header that kv_seg_header_decode accepted
 * (0 for an ordinary segment). */
uint32_t kv_seg_header_replaces(const uint8_t in[KV_SEG_HEADER_SIZE]);

/* Verifies a segment header: magic, CRC, header size, version, and (when
 * expect_id != 0) the segment id. Returns KV_OK, KV_CORRUPT or KV_VERSION
 * (valid header of a format version this build does not read). */
kv_status kv_seg_header_decode(const uint8_t in[KV_SEG_HEADER_SIZE], uint32_t expect_id, uint32_t *id);

/* Segment file naming: "%010u.seg" (the directory's vocabulary is
 * kv_dir.h, which defines these; they stay here for their callers).
 * kv_seg_name writes the name (at least 16 bytes of room); kv_seg_parse_name
 * returns 1 and the id for a segment file name, 0 for any other name. */
void kv_seg_name(char *out, size_t cap, uint32_t id);
int kv_seg_parse_name(const char *name, uint32_t *id);

/* The parser behind kv_seg_parse_name and kv_dir_parse: returns 1 and the
 * id for a name of exactly ten decimal digits (an id in 1..4294967295)
 * followed by `suffix` (".seg", ".hint"), 0 for any other name. */
int kv_parse_id_name(const char *name, const char *suffix, uint32_t *id);

#endif
