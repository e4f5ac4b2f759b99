/*
 * kv_active — the segment being appended, as files: creating a segment,
 * syncing it, zero-filling ahead of the log end, sealing it and starting
 * the next (rotation); and fail-stop, the state a failed write, sync or
 * creation leaves the store in.
 *
 * Owns: the active segment's descriptor and size (s->wr.active_*), the
 * fail-stop state (s->q.failstop, fail_status, fail_reason).
 * Guarantees: every crash state of a rotation is one recovery recognises
 * (docs/format.md, "Sealing"); a failed write or sync is never retried:
 * it enters fail-stop, which keeps the first reason and is never left.
 * Never: publishes records to the key directory (kv_writer.c does), or
 * retries an I/O error.
 * Locking: writer thread only (and kv_open before the writer starts,
 * kv_close after it stopped), except failstop(), which any thread may
 * call; it takes q.mu. Rotation takes tab.lock to add the new segment.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kv_store_int.h"

/* Enters fail-stop. Keeps the first reason. Any thread: the writer on a
 * failed write or sync, a compaction that cannot install its output, or
 * kv_open. The flag is stored atomically after the status and reason, all
 * under q.mu, so that a thread that sees the flag without q.mu and then
 * takes q.mu (failstop_status) finds the status that goes with it. */
void failstop(kv_store *s, kv_status st, const char *what, uint32_t seg)
{
    char reason[sizeof s->q.fail_reason];
    kv_path path;
    file_path(s, KV_FILE_SEG, seg, &path);
    pthread_mutex_lock(&s->q.mu);
    if (!s->q.failstop) {
        s->q.fail_status = st;
        snprintf(s->q.fail_reason, sizeof s->q.fail_reason,
                 "%s on %s failed: %s%s; the store refuses writes until it is restarted", what, path.s,
                 kv_strerror(st), st == ENOSPC ? " (disk full)" : "");
        __atomic_store_n(&s->q.failstop, 1, __ATOMIC_RELEASE);
        memcpy(reason, s->q.fail_reason, sizeof reason);
        pthread_mutex_unlock(&s->q.mu);
        logf_(s, KV_LOG_ERROR, "fail-stop: %s", reason);
        return;
    }
    pthread_mutex_unlock(&s->q.mu);
}

int is_failstop(kv_store *s)
{
    return __atomic_load_n(&s->q.failstop, __ATOMIC_ACQUIRE);
}

kv_status failstop_status(kv_store *s)
{
    pthread_mutex_lock(&s->q.mu);
    kv_status st = s->q.failstop ? s->q.fail_status : KV_OK;
    pthread_mutex_unlock(&s->q.mu);
    return st;
}

int kv_failstop_reason(kv_store *s, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->q.mu);
    int fs = s->q.failstop;
    snprintf(buf, cap, "%s", fs ? s->q.fail_reason : "");
    pthread_mutex_unlock(&s->q.mu);
    return fs;
}

/* Creates segment `id` durably: a version 2 header naming the segment
 * before it (prev_id, 0 for none) and that segment's final size in bytes,
 * its trailer included (prev_end), written and fdatasync'ed, then the
 * directory fsync'ed. Returns the fd or -errno (file may be left behind
 * with a torn header, which recovery cuts). */
int create_segment(kv_store *s, uint32_t id, uint32_t prev_id, uint64_t prev_end)
{
    kv_path path;
    file_path(s, KV_FILE_SEG, id, &path);
    int fd = s->io->open(s->io->ctx, path.s, KV_O_RDWR | KV_O_CREAT | KV_O_EXCL);
    if (fd < 0) return fd;
    uint8_t hdr[KV_SEG_HEADER_SIZE];
    kv_seg_header h = {KV_FORMAT_VERSION, id, 0, wall_ms(s), prev_id, (uint32_t)prev_end};
    kv_seg_header_encode_h(hdr, &h);
    int r = kv_io_write_full(s->io, fd, hdr, sizeof hdr, 0);
    if (r == 0) r = s->io->fdatasync(s->io->ctx, fd);
    if (r == 0) r = s->io->fsync_dir(s->io->ctx, s->dir);
    if (r < 0) {
        s->io->close(s->io->ctx, fd);
        return r;
    }
    return fd;
}

/* fdatasync of the active segment with statistics. */
int sync_active(kv_store *s)
{
    uint64_t t0 = mono_us();
    int r = s->io->fdatasync(s->io->ctx, s->wr.active_fd);
    uint64_t dt = mono_us() - t0;
    pthread_mutex_lock(&s->q.mu);
    s->q.st_fdatasyncs++;
    s->q.st_fdatasync_us += dt;
    if (dt > s->q.st_fdatasync_max_us) s->q.st_fdatasync_max_us = dt;
    if (r == 0) {
        s->q.st_synced_writes += s->wr.unsynced_writes;
        s->q.synced_seq = s->wr.written_seq;
    }
    pthread_mutex_unlock(&s->q.mu);
    if (r < 0) {
        failstop(s, -r, "fdatasync", s->wr.active_id);
        return r;
    }
    s->wr.unsynced_writes = 0;
    s->wr.last_sync_ms = mono_us() / 1000u;
    return 0;
}

/* How far ahead of the log end the active segment is zero-filled. */
#define KV_PREALLOC_BYTES (1u << 20)

/* Preallocation (kv_options.preallocate): once the group of n bytes at
 * active_size is written, if it reached past the zeros written before
 * (active_end), writes zeros from its end to KV_PREALLOC_BYTES beyond it
 * (rounded down to 4 KiB, at most to segment_max_bytes), before the
 * group's sync, so that the next groups land in blocks already written.
 * An fdatasync after a write that grows the file must also write the
 * inode (and on a journaling file system commit the journal); a write
 * into blocks already written and synced needs neither, so all but one
 * group in every KV_PREALLOC_BYTES costs one device write and a flush.
 * PostgreSQL zero-fills its WAL segments for the same reason
 * (wal_init_zero). fallocate(2) would not do: its extents are marked
 * unwritten and the first write to each converts them, a metadata change
 * again. Recovery sees the unused zeros at the end of the newest segment
 * as KVR_UNWRITTEN and cuts them; sealing and closing cut them first.
 * A failure here is not an error: the group is already written, and
 * preallocation stops for this segment. */
void prealloc_ahead(kv_store *s, size_t n)
{
    static const uint8_t zeros[KV_PREALLOC_BYTES];
    uint64_t from = s->wr.active_size + n; /* the group's end, past active_end */
    if (!s->opt.preallocate || from <= s->wr.active_end || s->wr.active_end >= s->opt.segment_max_bytes) return;
    uint64_t to = (from + KV_PREALLOC_BYTES) & ~(uint64_t)4095;
    if (to > s->opt.segment_max_bytes) to = s->opt.segment_max_bytes;
    if (to <= from) return;
    assert(to - from <= sizeof zeros);
    int r = kv_io_write_full(s->io, s->wr.active_fd, zeros, to - from, from);
    if (r < 0) {
        /* Some zeros may have landed: they are past the log end, where
         * the next write, the seal or recovery deals with them. */
        logf_(s, KV_LOG_WARN, "preallocating segment %u up to %" PRIu64 " bytes: %s; appending without it",
              s->wr.active_id, to, kv_strerror(-r));
        s->wr.active_end = UINT64_MAX; /* no more tries; cut at the seal */
        return;
    }
    s->wr.active_end = to;
}

/* Cuts the active segment to its log end when zeros were written past it,
 * and makes that durable (sealing, closing). Returns 0 or -errno; a
 * failed fdatasync enters fail-stop (sync_active). */
int cut_prealloc(kv_store *s)
{
    if (s->wr.active_end <= s->wr.active_size) return 0;
    int r = s->io->ftruncate(s->io->ctx, s->wr.active_fd, s->wr.active_size);
    if (r == 0) r = sync_active(s);
    if (r == 0) s->wr.active_end = s->wr.active_size;
    return r;
}

/* Seals the active segment and starts the next one. The order makes
 * every crash state recognisable (docs/format.md, "Sealing"): the sealed
 * segment is synced and cut to its last record; the next segment is
 * created, its header naming this one and its size with the trailer; only
 * then is the trailer appended and synced. A crash before the trailer is
 * durable leaves an empty next segment whose header recovery checks this
 * one against, and recovery writes the trailer. With trailer = 0 (a
 * version 1 segment, which has none) the next segment is created and
 * nothing is appended. */
static int rotate_ex(kv_store *s, int trailer)
{
    if (s->wr.unsynced_writes > 0 && sync_active(s) < 0) return -1;
    /* The sealed segment ends at its trailer: recovery takes anything after
     * one, zeros included, for damage. */
    int c = cut_prealloc(s);
    if (c < 0) {
        failstop(s, -c, "cutting the preallocated space of", s->wr.active_id);
        return -1;
    }
    uint32_t id = s->wr.active_id + 1;
    if (id >= KV_VIRTUAL_ID_BASE - 1) { /* the same limit kv_open holds a directory to */
        failstop(s, EOVERFLOW, "numbering a new segment (ids exhausted)", s->wr.active_id);
        return -1;
    }
    uint64_t sealed_size = s->wr.active_size + (trailer ? KV_MARK_SIZE : 0);
    int fd = create_segment(s, id, s->wr.active_id, sealed_size);
    if (fd < 0) {
        failstop(s, -fd, "creating segment", id);
        return -1;
    }
    if (trailer) {
        uint8_t m[KV_MARK_SIZE];
        pthread_mutex_lock(&s->q.mu);
        uint64_t seq = s->q.last_seq;
        pthread_mutex_unlock(&s->q.mu);
        kv_mark_encode(m, KV_REC_SEAL, seq, s->wr.active_size, (uint32_t)s->wr.active_records);
        int w = kv_io_write_full(s->io, s->wr.active_fd, m, sizeof m, s->wr.active_size);
        if (w < 0) {
            s->io->close(s->io->ctx, fd);
            failstop(s, -w, "write", s->wr.active_id);
            return -1;
        }
        if (sync_active(s) < 0) {
            s->io->close(s->io->ctx, fd);
            return -1;
        }
        s->wr.active_size = sealed_size;
        s->wr.active_end = sealed_size;
        pthread_rwlock_wrlock(&s->tab.lock);
        s->tab.log_bytes += KV_MARK_SIZE;
        s->tab.dead_bytes += KV_MARK_SIZE; /* like a group's mark: no key's record */
        pthread_rwlock_unlock(&s->tab.lock);
    }
    pthread_rwlock_wrlock(&s->tab.lock);
    int r = do_seg_add(s, id, fd);
    if (r == 0) {
        s->tab.log_bytes += KV_SEG_HEADER_SIZE;
        s->tab.header_bytes += KV_SEG_HEADER_SIZE;
    }
    pthread_rwlock_unlock(&s->tab.lock);
    if (r < 0) {
        s->io->close(s->io->ctx, fd);
        failstop(s, -r, "adding segment", id);
        return -1;
    }
    logf_(s, KV_LOG_INFO, "sealed segment %u at %" PRIu64 " bytes, appending to segment %u", s->wr.active_id,
          s->wr.active_size, id);
    s->wr.active_fd = fd;
    s->wr.active_id = id;
    s->wr.active_size = KV_SEG_HEADER_SIZE;
    s->wr.active_end = KV_SEG_HEADER_SIZE;
    s->wr.active_records = 0;
    s->wr.active_version = KV_FORMAT_VERSION;
    s->wr.writeback_off = 0;
    feed_publish(s, id, KV_SEG_HEADER_SIZE, s->wr.written_seq);
    return 0;
}

int rotate(kv_store *s)
{
    return rotate_ex(s, s->wr.active_version >= 2);
}
