/*
 * kv_hint — the hint file codec. Hint files: for one sealed segment, every key it holds and
 * where that key's last record in the segment is (Bitcask's hint files,
 * "Bitcask: A Log-Structured Hash Table for Fast Key/Value Data", Sheehy &
 * Smith, 2010). Recovery reads a valid hint file instead of scanning the
 * segment's records; a missing, damaged or stale hint file only costs the
 * scan. The format is specified in docs/format.md ("Hint files").
 *
 * A hint file NNNNNNNNNN.hint (the segment's id) is little-endian:
 *
 *   Header (KVH_HEADER_SIZE = 168 bytes)
 *     0  u8[4] magic "KVDH"
 *     4  u16   format version (KVH_VERSION)
 *     6  u16   header size (168)
 *     8  u32   segment id
 *    12  u32   reserved, 0
 *    16  u64   segment size in bytes the hint describes
 *    24  u64   number of hint entries
 *    32  u64   top-level records in the segment
 *    40  u64   batch records
 *    48  u64   entries: puts and tombstones, batch entries included
 *    56  u64   tombstone entries
 *    64  u64   first sequence number in the segment (0: no records)
 *    72  u64   last sequence number (a batch's last entry's)
 *    80  u64   offset of the last top-level record (0: no records)
 *    88  u8[32] copy of the segment's header
 *   120  u8[44] copy of the last record's header (zeros: no records)
 *   164  u32   reserved, 0
 *   Entries, one per key, in ascending offset order (KVH_ENTRY_SIZE = 40
 *   bytes, then the key):
 *     0  u8    type: 1 put, 2 tombstone (the key's last record in the segment)
 *     1  u8[3] reserved, 0
 *     4  u32   key length in bytes
 *     8  u64   byte offset of that record in the segment
 *    16  u32   record length in bytes
 *    20  u32   reserved, 0
 *    24  u64   sequence number
 *    32  u64   expiry, ms since the Unix epoch, 0 = none
 *    40  key bytes
 *   Trailer: u32 CRC32 (zlib) of every byte before it.
 *
 * A hint is valid for a segment only if its CRC and structure check out
 * and the segment still is what it describes: same size, same 32-byte
 * header (id, creation time, replaces_from), and the same 44-byte header
 * at the last record's offset (kvh_matches_segment). A segment rewritten
 * by compaction or salvage so never borrows an old hint.
 *
 * Owns: the hint file format (this comment and docs/format.md), its
 * encoding, decoding and verification, and the hint file's name.
 * Guarantees: the same header and entries always encode to the same bytes;
 * kvh_decode accepts exactly what the encoders write.
 * Never: trusts an offset, length or count before checking it against the
 * buffer and the header; builds a hint from a segment (recovery/kvr_hint.h
 * does, with the log reader); locks.
 */
#ifndef KV_HINT_H
#define KV_HINT_H

#include <stddef.h>
#include <stdint.h>

#include "kv_io.h"
#include "kv_record.h"
#include "kv_status.h"

#define KVH_MAGIC "KVDH"
#define KVH_VERSION 1
#define KVH_HEADER_SIZE 168u
#define KVH_ENTRY_SIZE 40u
#define KVH_TRAILER_SIZE 4u
/* Largest hint file read, in bytes (1 GiB). */
#define KVH_MAX_FILE_BYTES (1ull << 30)

/* A decoded hint header. */
typedef struct kvh_header {
    uint32_t seg;
    uint64_t seg_size;   /* bytes */
    uint64_t nhints;     /* entries in the hint file */
    uint64_t records, batches, entries, tombstones;
    uint64_t min_seq, max_seq;
    uint64_t last_off;   /* bytes */
    uint8_t seg_header[KV_SEG_HEADER_SIZE];
    uint8_t last_header[KV_REC_HEADER_SIZE];
} kvh_header;

/* One hint entry; key points into the hint buffer. */
typedef struct kvh_entry {
    uint8_t type;        /* KV_REC_PUT or KV_REC_TOMBSTONE */
    uint32_t klen;       /* bytes */
    uint64_t off;        /* byte offset of the record in the segment */
    uint32_t len;        /* record length, bytes */
    uint64_t seq;
    uint64_t expire_ms;  /* ms since the epoch, 0 = none */
    const uint8_t *key;
} kvh_entry;

/* Hint file naming: "%010u.hint" (at least 16 bytes of room), kv_dir.h's
 * KV_FILE_HINT. The temporary name while writing is that plus ".tmp"
 * (KV_FILE_HINT_TMP). kvh_parse_name returns 1 and the id for a hint file
 * name, 0 for any other name. */
void kvh_name(char *out, size_t cap, uint32_t id);
int kvh_parse_name(const char *name, uint32_t *id);

/*
 * Decodes and verifies a whole hint file held in buf[0, len): size, magic,
 * header size, CRC trailer, and every entry (type, reserved bytes, key
 * length within KV_MAX_KEY_LEN, record within the segment size and at
 * least 44 + klen bytes long, records in ascending order and not overlapping, sequence numbers
 * within [min_seq, max_seq], tombstones without expiry), that the
 * entry count matches, and that the last record's header carries max_seq
 * (a trailer: max_seq or above, as a compaction's may). expect_seg != 0 also requires that segment id.
 * Returns KV_OK (h filled), KV_VERSION (a valid magic with a version this
 * build does not read) or KV_CORRUPT.
 */
kv_status kvh_decode(const uint8_t *buf, size_t len, uint32_t expect_seg, kvh_header *h);

/* Iterates the entries of a buffer kvh_decode accepted. *pos starts at 0.
 * Returns 1 with *e filled, or 0 after the last entry. */
int kvh_next(const uint8_t *buf, size_t len, size_t *pos, kvh_entry *e);

/*
 * Checks that the open segment file fd still is what hint header h
 * describes: its size, its 32-byte header, and the 44-byte record header
 * at h->last_off (which must decode, and end exactly at the end of the
 * file). Returns KV_OK, KV_CORRUPT (stale: the hint describes other
 * bytes), or an errno from the I/O layer.
 */
kv_status kvh_matches_segment(const kv_io *io, int fd, const kvh_header *h);

/* The comparison behind kvh_matches_segment, on bytes already read (as
 * kvfsck has them): the segment's size, its 32-byte header, and the 44
 * bytes at h->last_off (not looked at when the hint has no records).
 * Returns KV_OK or KV_CORRUPT (stale). */
kv_status kvh_matches(const kvh_header *h, uint64_t seg_size, const uint8_t *seg_header,
                      const uint8_t *last_header);

/* Encoders. The builder (recovery/kvr_hint.h) lays a hint file out as
 * header, entries in ascending offset order, trailer, and calls these.
 *
 * kvh_encode_header writes the KVH_HEADER_SIZE-byte header for h into
 * out: magic, version, header size, and h's fields at the offsets above
 * (h->nhints is the number of entries that follow; reserved bytes 0).
 *
 * kvh_encode_entry writes entry e (KVH_ENTRY_SIZE bytes, then e->klen key
 * bytes) at out, which must have KVH_ENTRY_SIZE + e->klen bytes of room.
 * Returns the bytes written.
 *
 * kvh_encode_trailer writes the CRC32 of buf[0, len) as the u32 at
 * buf + len (KVH_TRAILER_SIZE bytes of room). Returns len +
 * KVH_TRAILER_SIZE, the file's length. */
void kvh_encode_header(uint8_t out[KVH_HEADER_SIZE], const kvh_header *h);
size_t kvh_encode_entry(uint8_t *out, const kvh_entry *e);
size_t kvh_encode_trailer(uint8_t *buf, size_t len);

#endif
