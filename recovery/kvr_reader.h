/*
 * kvr_reader — the log reader. Walks one segment's bytes, yields every
 * valid top-level record, and reports every bad region through a callback.
 * It does not decide policy (the Reporter idea of LevelDB's
 * db/log_reader.cc): recovery, kvfsck, kvcompact and the fuzz targets all
 * use this one reader and decide for themselves what a problem means.
 *
 * How a bad region is delimited. At offset X a record fails to decode:
 *  - its 44-byte header checks out (hcrc) but the record runs past the end
 *    of the file: the header is trusted, the region is [X, EOF);
 *  - its header checks out but the record CRC fails: the header (and so its
 *    length) is trusted, the region is [X, X + len) and reading goes on
 *    after it;
 *  - fewer than 44 bytes remain, or the header fails its check: no length
 *    is trusted; the reader looks for the first offset after X where a
 *    whole valid top-level record starts (batch entries are marked and
 *    never match), and the region ends there, or at end of file.
 * A bad record region (not the segment header's, not an out-of-order
 * record) that reaches the end of the file gives up its trailing zero
 * bytes to a region of their own, KVR_UNWRITTEN (the whole region when it
 * is all zeros): space the writer zero-filled ahead of the log and never
 * used. A zero-filled region that a valid record follows stays
 * KVR_ZERO_FILL.
 * Each problem says whether a valid record follows it in this segment
 * (valid_after); that is what separates a torn tail from mid-log
 * corruption.
 *
 * Where the bytes come from. The walk asks a byte source for contiguous
 * ranges of the segment: a memory buffer (kvr_scan_buffer: the whole
 * segment is in view, nothing is copied) or a file read through kv_io
 * into a bounded window (kvr_scan_fd: pread into a buffer of
 * window_bytes, refilled as the walk moves on). Both give the same calls
 * in the same order with the same arguments, and the same result.
 *
 * Never: writes, trusts a length whose header check failed, or (reading
 * a file) holds more of it in memory than max(window_bytes, the longest
 * record whose header checks out) bytes.
 */
#ifndef KVR_READER_H
#define KVR_READER_H

#include <stdint.h>

#include "kv_io.h"
#include "kv_record.h"
#include "kv_status.h"

typedef enum kvr_reason {
    KVR_SEG_HEADER_SHORT = 1, /* file shorter than the segment header */
    KVR_SEG_HEADER_BAD,       /* segment header magic, CRC or id mismatch */
    KVR_HEADER_SHORT,         /* fewer than 44 bytes left for a record header */
    KVR_HEADER_BAD,           /* record header check (hcrc, type, lengths) failed */
    KVR_PAST_EOF,             /* valid header, record runs past end of file */
    KVR_CRC_MISMATCH,         /* valid header, record CRC (key/value/batch) failed */
    KVR_ZERO_FILL,            /* a run of zero bytes where a record should start */
    KVR_SEQ_ORDER,            /* valid record whose sequence number does not increase */
    KVR_TRAILER_BAD,          /* version 2: a segment trailer whose offset or record
                                 count does not match the segment, or a group-commit
                                 mark whose group start lies outside the segment */
    KVR_AFTER_TRAILER,        /* version 2: bytes after a segment's trailer (kvd never
                                 writes past one) */
    /* Problems of the log as a whole, which recovery (not the reader)
     * finds from segment headers, trailers and hint files (version 2): */
    KVR_PREV_MISSING,         /* the segment before this one, which its header names,
                                 is missing (a deleted segment) */
    KVR_PREV_SIZE,            /* a sealed segment is not the size its successor's
                                 header recorded (truncated, emptied or grown);
                                 region: its end */
    KVR_NO_TRAILER,           /* a sealed segment without its trailer: truncated or
                                 emptied (region: its end) */
    KVR_NO_SUCCESSOR,         /* the newest segment ends with a trailer, so a segment
                                 followed it: that segment is missing */
    KVR_ORPHAN_HINT,          /* a hint file whose segment is missing */
    KVR_UNWRITTEN,            /* zero bytes from here to end of file, after the last
                                 record or the last non-zero byte of a bad region:
                                 space the writer zero-filled ahead and never used
                                 (kv_options.preallocate), or a tail the disk never
                                 wrote */
} kvr_reason;

/* 1 for a problem of the log as a whole, which recovery finds from
 * headers, trailers and hint files (KVR_PREV_MISSING, KVR_PREV_SIZE,
 * KVR_NO_TRAILER, KVR_NO_SUCCESSOR, KVR_ORPHAN_HINT): never a torn tail,
 * always a missing piece of the log. 0 for what a scan of one segment
 * reports. */
int kvr_reason_is_missing_data(kvr_reason r);

/* Short text for a reason, e.g. "record header checksum mismatch". */
const char *kvr_reason_str(kvr_reason r);

/* Where the run of zero bytes that ends buf[from, len) begins: len if
 * buf[len - 1] is not zero, from if the range is all zeros. */
uint64_t kvr_zero_tail(const uint8_t *buf, uint64_t from, uint64_t len);

/* One bad region of a segment. */
typedef struct kvr_problem {
    const char *path;   /* segment file path (may be NULL for a buffer) */
    uint32_t seg;       /* segment id */
    uint64_t offset;    /* byte offset where the region starts */
    uint64_t length;    /* bytes in the region */
    kvr_reason reason;
    int valid_after;    /* 1 if a valid record follows in this segment */
} kvr_problem;

/* Called for each valid top-level record at byte offset off, marks
 * (kv_record_is_mark: group-commit marks and the trailer) included: a
 * consumer that applies, copies or indexes records skips them. For a batch,
 * r->val holds the verified entries (see kv_record_batch_next). Return 0 to go
 * on, non-zero to stop the scan (kvr_scan returns that value's status
 * KV_OK and sets stopped). */
typedef int (*kvr_record_fn)(void *arg, uint32_t seg, uint64_t off, const kv_record *r);
typedef void (*kvr_problem_fn)(void *arg, const kvr_problem *p);

typedef struct kvr_scan_result {
    uint64_t file_size;  /* bytes scanned */
    uint64_t valid_end;  /* end offset of the last valid record (or header) */
    uint64_t records;    /* valid top-level data records (marks not counted) */
    uint64_t problems;
    int stopped;         /* the record callback asked to stop */
    int header_ok;       /* the segment header is valid (hdr filled) */
    kv_seg_header hdr;   /* the decoded segment header */
    uint64_t marks;      /* valid group-commit marks and trailers */
    uint64_t mark_end;   /* end offset of the last valid mark, 0 if none */
    uint64_t group_start;/* the last valid commit mark's group start, 0 if none */
    int sealed;          /* a valid trailer was read (it is the segment's last record) */
    uint64_t seal_off;   /* its offset */
    uint64_t seal_seq;   /* its sequence number */
    uint64_t last_seq;   /* the last sequence number of the last data record, 0 if none */
    uint64_t window_peak;/* kvr_scan_fd: the largest window buffer it allocated, in
                            bytes (see kvr_scan_fd); 0 for a memory buffer */
} kvr_scan_result;

/*
 * Scans segment `seg` held in buf[0, len). Calls on_record for each valid
 * record and on_problem (may be NULL) for each bad region, in file order.
 * A record's key and val point into buf (no copy), valid as long as buf.
 * Returns KV_OK (problems are reported, not returned), KV_VERSION for a
 * valid header of a format version this build cannot read, or ENOMEM.
 */
kv_status kvr_scan_buffer(const uint8_t *buf, uint64_t len, uint32_t seg, const char *path,
                          kvr_record_fn on_record, kvr_problem_fn on_problem, void *arg, kvr_scan_result *out);

/*
 * Finds the first offset in [from, len) where a whole valid top-level
 * record starts. Returns that offset, or len if there is none.
 */
uint64_t kvr_find_next_record(const uint8_t *buf, uint64_t len, uint64_t from);

/* Largest segment file the reader loads, in bytes (4 GiB). */
#define KVR_MAX_SEGMENT_BYTES (4ull << 30)

/*
 * Called by kvr_scan_fd before the bytes [off, off + len) in its window
 * are replaced (or their memory freed or moved): the last moment at which
 * pointers into them, such as a kv_record's key and val, may still be
 * used. A caller that keeps such pointers past on_record (a queue of keys
 * to prefetch) uses them up here.
 */
typedef void (*kvr_window_fn)(void *arg, uint64_t off, uint64_t len);

/* What kvr_scan_fd calls, each may be NULL; arg is passed to all three. */
typedef struct kvr_scan_hooks {
    kvr_record_fn on_record;
    kvr_problem_fn on_problem;
    kvr_window_fn on_window;
    void *arg;
} kvr_scan_hooks;

/* The window kvr_scan_fd reads through when asked for 0 bytes, and the
 * smallest it accepts (one record header): smaller requests get this. */
#define KVR_WINDOW_DEFAULT (1u << 20)
#define KVR_WINDOW_MIN KV_REC_HEADER_SIZE

/*
 * Scans segment `seg`, the first `size` bytes of the open file fd, as
 * kvr_scan_buffer scans a buffer holding them: the same calls, in the
 * same order, and the same *out (window_peak aside). The file is read
 * with io->pread into a window of window_bytes (0: KVR_WINDOW_DEFAULT; at
 * least KVR_WINDOW_MIN), which grows for a record longer than that to
 * hold the whole record, and shrinks back after it: the memory used is at
 * most max(window_bytes, the longest record whose header checks out),
 * and a record is never longer than KV_MAX_RECORD_LEN (44 bytes + 1 GiB)
 * or the file. path is only passed on in problems (may be NULL).
 *
 * Lifetime: the kv_record given to on_record points into the window. It
 * is valid while on_record runs and, when on_window is set, until the
 * next on_window call, which comes before any of those bytes change or
 * go (the end of the scan frees the last window: on_window comes first,
 * on success, stop or error alike); a caller without on_window must copy
 * what it keeps. A kvr_problem is
 * valid only during its call.
 *
 * Returns KV_OK, KV_VERSION (as kvr_scan_buffer), EFBIG for a size over
 * KVR_MAX_SEGMENT_BYTES (nothing read, *out untouched), ENOMEM, or the
 * errno of a failed read (EIO, ...; ENODATA if the file is shorter than
 * size). A read error ends the scan: the calls made so far stand, the
 * problems held back to learn whether a record follows them are not
 * reported, and *out describes the part walked.
 */
kv_status kvr_scan_fd(const kv_io *io, int fd, uint64_t size, uint32_t seg, const char *path, size_t window_bytes,
                      const kvr_scan_hooks *hooks, kvr_scan_result *out);

/*
 * kvr_zero_tail for bytes [from, len) of the open file fd: stores in
 * *zero_from where the zero bytes that end them begin (len if byte len - 1
 * is not zero, from if all are zero, len if from >= len). Reads backwards
 * from len through a window of window_bytes (0: KVR_WINDOW_DEFAULT).
 * Returns KV_OK, ENOMEM or a read's errno (then *zero_from is not
 * meaningful).
 */
kv_status kvr_zero_tail_fd(const kv_io *io, int fd, uint64_t from, uint64_t len, size_t window_bytes,
                           uint64_t *zero_from);

/*
 * Reads a segment file through io and scans it as kvr_scan_buffer does.
 * With buf_out NULL the file is read through kvr_scan_fd's window
 * (KVR_WINDOW_DEFAULT; the same lifetime rule: a record's bytes are valid
 * only during on_record). With buf_out non-NULL the whole file is read
 * into one buffer, up to KVR_MAX_SEGMENT_BYTES, and returned there
 * (malloc'ed, caller frees) for a caller that still needs all its bytes;
 * records then point into it.
 * Returns KV_OK, KV_VERSION, EFBIG (over KVR_MAX_SEGMENT_BYTES), ENOMEM,
 * or an errno from the I/O layer.
 */
kv_status kvr_scan_file(const kv_io *io, const char *path, uint32_t seg, kvr_record_fn on_record,
                        kvr_problem_fn on_problem, void *arg, kvr_scan_result *out, uint8_t **buf_out);

#endif
