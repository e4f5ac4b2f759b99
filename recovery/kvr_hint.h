/*
 * kvr_hint — the hint builder: makes the hint file of a sealed segment
 * from the records the log reader yields, and writes it durably. The
 * format and its codec (kvh_decode, kvh_next, kvh_matches, the encoders)
 * are kv/base/kv_hint.h, which this header includes so that its callers
 * see both.
 *
 * Owns: the builder (one op per put or tombstone, superseded ones dropped),
 * the write of a hint file (temporary name, fdatasync, rename), and the
 * read of a hint file checked against its segment.
 * Guarantees: the same records always give the same bytes; a hint is only
 * made for a segment the reader found clean (kvr_hint_build).
 * Never: fsyncs the directory (the caller does, once for several hints);
 * locks.
 */
#ifndef KVR_HINT_H
#define KVR_HINT_H

#include <stddef.h>
#include <stdint.h>

#include "kv_hint.h"
#include "kv_io.h"
#include "kv_record.h"
#include "kv_status.h"

/* Builds a hint from the records of one segment, fed in file order. */
typedef struct kvr_hint_builder kvr_hint_builder;

/* A builder for segment `seg`. Returns NULL when out of memory. */
kvr_hint_builder *kvr_hint_builder_new(uint32_t seg);
void kvr_hint_builder_free(kvr_hint_builder *b);

/* Adds a valid top-level record found at byte offset off (a batch adds
 * each of its entries). Records must come in file order, as the log
 * reader yields them. The builder copies the keys it keeps, so r's bytes
 * may go as soon as this returns (a window that moves on); the copies and
 * the builder's arrays are anonymous mappings (kv_map.h), unmapped when
 * freed, so that building a hint leaves no memory resident. Returns KV_OK
 * or ENOMEM. */
kv_status kvr_hint_builder_add(kvr_hint_builder *b, uint64_t off, const kv_record *r);

/* The byte offset of the record header a hint of a segment of seg_len
 * bytes copies (the last record's, or the trailer's), or UINT64_MAX when
 * it copies none (no record, or a header that does not fit). */
uint64_t kvr_hint_builder_last_off(const kvr_hint_builder *b, uint64_t seg_len);

/* Encodes the hint file into *out (malloc'ed, caller frees), *out_len
 * bytes, for a segment of seg_len bytes: seg_header holds its first
 * min(seg_len, KV_SEG_HEADER_SIZE) bytes, last_header the
 * KV_REC_HEADER_SIZE bytes at kvr_hint_builder_last_off (NULL when that is
 * UINT64_MAX); both are copied into the hint. The same records always
 * give the same bytes. Returns KV_OK or ENOMEM (*out NULL). */
kv_status kvr_hint_builder_finish(kvr_hint_builder *b, uint64_t seg_len, const uint8_t *seg_header, const uint8_t *last_header,
                             uint8_t **out, size_t *out_len);

/* kvr_hint_builder_finish with those bytes taken from seg_buf[0, seg_len), the
 * whole segment in memory. Same returns. */
kv_status kvr_hint_builder_finish_buf(kvr_hint_builder *b, const uint8_t *seg_buf, uint64_t seg_len, uint8_t **out,
                                 size_t *out_len);

/* kvr_hint_builder_finish with those bytes read from the open segment file fd
 * (seg_len bytes) through io: two reads of at most 44 bytes. Returns
 * KV_OK, ENOMEM, or a read's errno (ENODATA: the file is shorter). */
kv_status kvr_hint_builder_finish_fd(kvr_hint_builder *b, const kv_io *io, int fd, uint64_t seg_len, uint8_t **out,
                                size_t *out_len);

/* Scans a whole segment buffer with the log reader and builds its hint.
 * Returns KV_OK, KV_CORRUPT if the reader reports any problem (a hint is
 * only made for a clean segment), KV_VERSION, or ENOMEM. */
kv_status kvr_hint_build(const uint8_t *buf, uint64_t len, uint32_t seg, uint8_t **out, size_t *out_len);

/* kvr_hint_build for the first size bytes of the open segment file fd, read
 * through the log reader's window (kvr_scan_fd, KVR_WINDOW_DEFAULT): the
 * segment is never in memory whole. Returns what kvr_hint_build does, EFBIG
 * (size over KVR_MAX_SEGMENT_BYTES), or a read's errno (EIO, ...). */
kv_status kvr_hint_build_fd(const kv_io *io, int fd, uint64_t size, uint32_t seg, uint8_t **out, size_t *out_len);

/* Writes hint bytes as dir/NNNNNNNNNN.hint: to "<name>.tmp", fdatasync,
 * then rename over the name. The caller fsyncs the directory (once for
 * several hints). On failure the temporary file is removed and an old hint
 * file of that name is left as it was. Returns 0 or -errno. */
int kvr_hint_write_file(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len);

/* The two halves of kvr_hint_write_file, for a caller that decides later
 * whether the hint is to stay (recovery writes hints only once it knows it
 * will open): kvr_hint_write_tmp writes data to "NNNNNNNNNN.hint.tmp" and
 * fdatasyncs it (removing it again on failure); kvr_hint_commit_tmp renames it
 * over "NNNNNNNNNN.hint". The caller fsyncs the directory. Both return 0
 * or -errno. */
int kvr_hint_write_tmp(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len);
int kvr_hint_commit_tmp(const kv_io *io, const char *dir, uint32_t seg);

/*
 * Reads the hint file of sealed segment `id` in dir and checks it against
 * the segment as recovery must before it trusts it: kvh_decode (expecting
 * that id), kvh_matches_segment (size, segment header, last record
 * header), and for a version 2 segment its trailer (at the hint's end of
 * segment, counting the hint's records). On KV_OK, *buf (malloc'ed,
 * caller frees) holds the hint's *len bytes and *h its header.
 * Returns KV_OK, ENOENT when there is no hint file, KV_CORRUPT (damaged
 * or stale), KV_VERSION, or another errno (the hint or the segment could
 * not be read; a segment that is missing is KV_CORRUPT). *buf is NULL on
 * any failure.
 */
kv_status kvr_hint_read_for_segment(const kv_io *io, const char *dir, uint32_t id, uint8_t **buf, size_t *len,
                               kvh_header *h);

/* An upper bound on the keys the hint files of the sealed segments in
 * ids[0, n - 1) of dir hold (their entry counts, each capped by what the
 * file's size allows), to size a key directory once. Only an estimate:
 * the files are not checked. */
size_t kvr_hint_estimate_keys(const kv_io *io, const char *dir, const uint32_t *ids, size_t n);

#endif
