/*
 * kvr_hint — hint files: for one sealed segment, every key it holds and
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
 * Never: trusts an offset, length or count before checking it against the
 * buffer and the header.
 */
#ifndef KVR_HINT_H
#define KVR_HINT_H

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

/* Hint file naming: "%010u.hint" (at least 16 bytes of room). The
 * temporary name while writing is that plus ".tmp". kvh_parse_name returns
 * 1 and the id for a hint file name, 0 for any other name. */
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

/* Builds a hint from the records of one segment, fed in file order. */
typedef struct kvh_builder kvh_builder;

/* A builder for segment `seg`. Returns NULL when out of memory. */
kvh_builder *kvh_builder_new(uint32_t seg);
void kvh_builder_free(kvh_builder *b);

/* Adds a valid top-level record found at byte offset off (a batch adds
 * each of its entries). Records must come in file order, as the log
 * reader yields them, and their key bytes (in the segment's buffer) must
 * stay valid until kvh_builder_finish: the builder keeps pointers, not
 * copies, in arrays it maps with mmap(2) and unmaps when freed, so that
 * building a hint leaves no memory resident. Returns KV_OK or ENOMEM. */
kv_status kvh_builder_add(kvh_builder *b, uint64_t off, const kv_record *r);

/* Encodes the hint file into *out (malloc'ed, caller frees), *out_len
 * bytes. seg_buf[0, seg_len) are the segment's bytes the records came
 * from (its header and last record header are copied into the hint). The
 * same records always give the same bytes. Returns KV_OK or ENOMEM (*out
 * NULL). */
kv_status kvh_builder_finish(kvh_builder *b, const uint8_t *seg_buf, uint64_t seg_len, uint8_t **out,
                             size_t *out_len);

/* Scans a whole segment buffer with the log reader and builds its hint.
 * Returns KV_OK, KV_CORRUPT if the reader reports any problem (a hint is
 * only made for a clean segment), KV_VERSION, or ENOMEM. */
kv_status kvh_build(const uint8_t *buf, uint64_t len, uint32_t seg, uint8_t **out, size_t *out_len);

/* Writes hint bytes as dir/NNNNNNNNNN.hint: to "<name>.tmp", fdatasync,
 * then rename over the name. The caller fsyncs the directory (once for
 * several hints). On failure the temporary file is removed and an old hint
 * file of that name is left as it was. Returns 0 or -errno. */
int kvh_write_file(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len);

/* The two halves of kvh_write_file, for a caller that decides later
 * whether the hint is to stay (recovery writes hints only once it knows it
 * will open): kvh_write_tmp writes data to "NNNNNNNNNN.hint.tmp" and
 * fdatasyncs it (removing it again on failure); kvh_commit_tmp renames it
 * over "NNNNNNNNNN.hint". The caller fsyncs the directory. Both return 0
 * or -errno. */
int kvh_write_tmp(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len);
int kvh_commit_tmp(const kv_io *io, const char *dir, uint32_t seg);

#endif
