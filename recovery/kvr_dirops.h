/*
 * kvr_dirops — what recovery reads of the data directory before it
 * scans, and every change it makes to it: the list of live and superseded
 * segments, a look at one segment's header, the cut of a torn tail (saved
 * beside the segment first), the trim of unwritten zeros, setting later
 * segments aside (point-in-time), the trailer of an interrupted rotation,
 * and the removal of what a crashed compaction left. Names and paths come
 * from kv/base/kv_dir.h.
 *
 * Owns: the order of each change's steps and its durability (data
 * fdatasync'ed, then the directory fsync'ed, before anything is removed
 * or shortened).
 * Guarantees: no byte is destroyed that is not saved first (".torn",
 * ".discarded", kept with kv_dir_unused's ".N" suffix), except zeros the
 * writer preallocated and a compaction's unfinished output, which is not
 * part of the log.
 * Never: decides whether to make a change (kvr_recover's policy does);
 * takes the lock (the caller holds it).
 * Locking: none of its own; the caller holds the directory's lock.
 */
#ifndef KVR_DIROPS_H
#define KVR_DIROPS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_io.h"
#include "kv_record.h"
#include "kv_status.h"

/*
 * Lists the ids of the live segments in dir, sorted ascending (malloc'ed
 * array in *ids, count in *n; free(*ids)): every NNNNNNNNNN.seg except
 * those a compaction output replaces (its header's replaces_from field:
 * see kv_record.h). Returns KV_OK, ENOMEM or an errno.
 */
kv_status kvr_list_segments(const kv_io *io, const char *dir, uint32_t **ids, size_t *n);

/* Lists the ids of the superseded segments (the complement of
 * kvr_list_segments); recovery unlinks them. Same returns. */
kv_status kvr_list_superseded(const kv_io *io, const char *dir, uint32_t **ids, size_t *n);

/* 1 if hint id hid lies in a range a compaction output among the live
 * segments ids[0, n) replaces, [replaces_from, output id - 1]: the hint of
 * a superseded segment. Reads those segments' headers. */
int kvr_superseded_id(const kv_io *io, const char *dir, const uint32_t *ids, size_t n, uint32_t hid);

/* 1 if id is in the ascending array ids[0, n). */
int kvr_has_id(const uint32_t *ids, size_t n, uint32_t id);

/* Names read from a directory (malloc'ed copies; kvr_names_free). */
typedef struct kvr_names {
    char **v;
    size_t n, cap;
    int oom; /* a name could not be kept */
} kvr_names;

/* Collects into *l the names in dir of the kinds set in `kinds`, a mask of
 * (1u << kv_file_kind) bits. Returns 0 or -errno (-ENOMEM: l->oom). */
int kvr_list_names(const kv_io *io, const char *dir, unsigned kinds, kvr_names *l);
void kvr_names_free(kvr_names *l);

/* What recovery reads of a segment before it loads it: its size in bytes
 * and, if valid, its header. */
typedef struct kvr_seg_peek {
    int header_ok;
    kv_seg_header hdr;
    uint64_t size;
} kvr_seg_peek;

/* Fills *pk for segment id at path (all zero when it cannot be opened). */
void kvr_peek_segment(const kv_io *io, const char *path, uint32_t id, kvr_seg_peek *pk);

/*
 * Saves bytes [off, len) of segment `id` of dir, read from seg_fd (the
 * segment open for reading) in pieces of at most 1 MiB, beside it as
 * "<segment>.<off>.torn" (".N" added if that exists: nothing saved before
 * is overwritten), makes that durable (fdatasync, directory fsync), then
 * truncates the segment to off bytes and fdatasyncs it. Returns KV_OK or
 * an errno with msg naming the file; on error the segment is unchanged or
 * its cut bytes are already saved.
 */
kv_status kvr_cut_segment(const kv_io *io, const char *dir, uint32_t id, int seg_fd, uint64_t len, uint64_t off,
                          char *msg, size_t msgcap);

/* Cuts segment `id` to len bytes (dropping only zero bytes: nothing to
 * save) and fdatasyncs it. Returns KV_OK or an errno with msg set. */
kv_status kvr_trim_segment(const kv_io *io, const char *dir, uint32_t id, uint64_t len, char *msg,
                           size_t msgcap);

/*
 * Point-in-time: renames segments ids[from, n) to "<segment>.discarded"
 * and their hint files to "<hint>.discarded" (".N" added if taken), newest
 * first, and fsyncs the directory. Done before the cut, so a crash in
 * between never leaves a log with a hole: the later segments are gone
 * from the log before the earlier one is shortened. Counts the segments in
 * *discarded. Returns KV_OK or an errno with msg set.
 */
kv_status kvr_discard_segments(const kv_io *io, const char *dir, const uint32_t *ids, size_t from, size_t n,
                               uint32_t *discarded, char *msg, size_t msgcap);

/* Appends the trailer a crash in the middle of a rotation left unwritten
 * to sealed segment `id` of `size` bytes (seq: the last sequence number
 * assigned; records: its data records), and fdatasyncs it. Returns KV_OK
 * or an errno with msg set. */
kv_status kvr_complete_rotation(const kv_io *io, const char *dir, uint32_t id, uint64_t size, uint64_t seq,
                                uint64_t records, char *msg, size_t msgcap);

/* Removes the outputs of compactions a crash interrupted before their
 * rename ("NNNNNNNNNN.seg.compact"): never part of the log (the segments
 * they were made from are all still there), up to 2 GiB each; fsyncs the
 * directory if it removed any. Counts them in *removed. Returns KV_OK,
 * ENOMEM or an errno with msg set. */
kv_status kvr_remove_compact_leftovers(const kv_io *io, const char *dir, uint32_t *removed, char *msg,
                                       size_t msgcap);

/* Unlinks the segments a compaction output replaces, left by a crash
 * between its rename and its unlinks (their live records are all in the
 * output), and fsyncs the directory. Returns KV_OK or an errno with msg
 * set. */
kv_status kvr_remove_superseded(const kv_io *io, const char *dir, char *msg, size_t msgcap);

#endif
