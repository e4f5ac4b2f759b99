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
 * made for a segment the reader found clean (kvh_build).
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
kv_status kvh_read_for_segment(const kv_io *io, const char *dir, uint32_t id, uint8_t **buf, size_t *len,
                               kvh_header *h);

/* An upper bound on the keys the hint files of the sealed segments in
 * ids[0, n - 1) of dir hold (their entry counts, each capped by what the
 * file's size allows), to size a key directory once. Only an estimate:
 * the files are not checked. */
size_t kvh_estimate_keys(const kv_io *io, const char *dir, const uint32_t *ids, size_t n);

#endif
