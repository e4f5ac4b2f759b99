/*
 * kv_hints — hint files for the sealed segments (recovery/kvr_hint.h),
 * and the sealed-segment API through which a reader outside the store
 * (kv_scrub.c) holds and reads sealed segments and their hints.
 *
 * Owns: segment.hinted (which sealed segments have a valid hint file).
 * Guarantees: a hint file is built from a clean scan of its segment and
 * written durably (temporary file, fdatasync, rename, directory fsync);
 * a segment with damage gets none. A held sealed segment stays readable
 * until released, even if a compaction retires it meanwhile.
 * Never: writes a hint for the active segment; runs beside a compaction.
 * Locking: cmp.mu while hint files are written or read; tab.lock shared
 * to choose segments, exclusive to set segment.hinted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"
#include "kvr_hint.h"

/* Builds and writes the hint file of sealed segment g (a reference held by
 * the caller, who also holds cmp.mu) without a directory fsync. The
 * segment is read through the log reader's window (kvr_hint_build_fd), never
 * whole. Returns KV_OK, KV_CORRUPT (damage: no hint), an errno, ENOMEM. */
kv_status write_segment_hint(kv_store *s, segment *g)
{
    uint64_t size = 0;
    int r = s->io->fsize(s->io->ctx, g->fd, &size);
    if (r < 0) return -r;
    uint8_t *hint = NULL;
    size_t hlen = 0;
    kv_status st = kvr_hint_build_fd(s->io, g->fd, size, g->file_id, &hint, &hlen);
    if (st == EIO) mark_bad(s, g, 0, size > UINT32_MAX ? UINT32_MAX : (uint32_t)size, -EIO);
    if (st != KV_OK) return st;
    r = kvr_hint_write_file(s->io, s->dir, g->file_id, hint, hlen);
    free(hint);
    return r < 0 ? -r : KV_OK;
}

kv_status kv_write_hints(kv_store *s, uint32_t *written)
{
    if (written) *written = 0;
    if (!s->opt.hint_files) return KV_OK;
    pthread_mutex_lock(&s->cmp.mu);
    pthread_rwlock_rdlock(&s->tab.lock);
    size_t n = 0, cap = s->tab.nsegs;
    segment **todo = calloc(cap ? cap : 1, sizeof *todo);
    for (size_t i = 0; todo && i + 1 < s->tab.nsegs; i++) {
        if (s->tab.segs[i]->hinted) continue;
        __atomic_add_fetch(&s->tab.segs[i]->refs, 1, __ATOMIC_ACQ_REL);
        todo[n++] = s->tab.segs[i];
    }
    pthread_rwlock_unlock(&s->tab.lock);
    if (!todo) {
        pthread_mutex_unlock(&s->cmp.mu);
        return ENOMEM;
    }
    kv_status first = KV_OK;
    uint32_t done = 0;
    for (size_t i = 0; i < n; i++) {
        kv_status st = write_segment_hint(s, todo[i]);
        if (st == KV_OK) {
            done++;
            pthread_rwlock_wrlock(&s->tab.lock);
            todo[i]->hinted = 1;
            s->tab.hints_written++;
            pthread_rwlock_unlock(&s->tab.lock);
        } else {
            if (first == KV_OK) first = st;
            logf_(s, KV_LOG_WARN, "no hint file for segment %u: %s", todo[i]->file_id,
                  st == KV_CORRUPT ? "the segment has damage (run kvfsck)" : kv_strerror(st));
        }
    }
    if (done > 0) {
        int r = s->io->fsync_dir(s->io->ctx, s->dir);
        if (r < 0) {
            /* The hints may not survive a power cut; the next start then
             * scans those segments and writes them again. */
            if (first == KV_OK) first = -r;
            logf_(s, KV_LOG_WARN, "cannot fsync %s after writing hint files: %s", s->dir, kv_strerror(-r));
        }
        logf_(s, KV_LOG_INFO, "wrote %u hint file%s", done, done == 1 ? "" : "s");
    }
    for (size_t i = 0; i < n; i++) seg_release(s, todo[i]);
    free(todo);
    pthread_mutex_unlock(&s->cmp.mu);
    if (written) *written = done;
    return first;
}

uint32_t kv_hints_pending(kv_store *s)
{
    if (!s->opt.hint_files) return 0;
    uint32_t n = 0;
    pthread_rwlock_rdlock(&s->tab.lock);
    for (size_t i = 0; i + 1 < s->tab.nsegs; i++)
        if (!s->tab.segs[i]->hinted) n++;
    pthread_rwlock_unlock(&s->tab.lock);
    return n;
}

/* ---- sealed segments, for a reader outside the store (kv_scrub.c) ---- */

size_t kv_sealed_list(kv_store *s, uint32_t *ids, size_t cap)
{
    pthread_rwlock_rdlock(&s->tab.lock);
    size_t n = s->tab.nsegs > 0 ? s->tab.nsegs - 1 : 0;
    for (size_t i = 0; i < n && i < cap; i++) ids[i] = s->tab.segs[i]->id;
    pthread_rwlock_unlock(&s->tab.lock);
    return n;
}

kv_status kv_sealed_hold(kv_store *s, uint32_t id, kv_sealed *h)
{
    memset(h, 0, sizeof *h);
    pthread_rwlock_rdlock(&s->tab.lock);
    segment *g = NULL;
    long i = do_seg_index(s, id);
    if (i >= 0 && s->tab.byid[i] != s->tab.segs[s->tab.nsegs - 1]) g = do_seg_acquire(s, id);
    pthread_rwlock_unlock(&s->tab.lock);
    if (!g) return KV_NOT_FOUND;
    uint64_t size = 0;
    int r = s->io->fsize(s->io->ctx, g->fd, &size);
    if (r < 0) {
        seg_release(s, g);
        return -r;
    }
    h->id = g->id;
    h->file_id = g->file_id;
    h->fd = g->fd;
    h->map = g->map && g->map_len >= size ? g->map : NULL;
    h->size = size;
    h->ref_ = g;
    return KV_OK;
}

void kv_sealed_media_error(kv_store *s, const kv_sealed *h, uint64_t off, uint64_t len, int err)
{
    if (h->ref_) mark_bad(s, h->ref_, off, len > UINT32_MAX ? UINT32_MAX : (uint32_t)len, err);
}

void kv_sealed_release(kv_store *s, kv_sealed *h)
{
    if (h->ref_) seg_release(s, h->ref_);
    memset(h, 0, sizeof *h);
}

int kv_sealed_retired(kv_store *s, const kv_sealed *h)
{
    pthread_rwlock_rdlock(&s->tab.lock);
    int in = do_seg_in_log(s, h->ref_);
    pthread_rwlock_unlock(&s->tab.lock);
    return !in;
}

kv_status kv_sealed_read_hint(kv_store *s, const kv_sealed *h, uint8_t **buf, uint64_t *len)
{
    *buf = NULL;
    *len = 0;
    if (!s->opt.hint_files) return KV_NOT_FOUND;
    /* cmp.mu: no compaction renames an output over this file id, and
     * no hint is written, while the file is read. */
    pthread_mutex_lock(&s->cmp.mu);
    kv_status st = KV_NOT_FOUND;
    if (!kv_sealed_retired(s, h)) {
        kv_path path;
        file_path(s, KV_FILE_HINT, h->file_id, &path);
        int r = kv_io_read_file(s->io, path.s, KVH_MAX_FILE_BYTES, buf, len);
        st = r == 0 ? KV_OK : r == -ENOENT ? KV_NOT_FOUND : -r;
    }
    pthread_mutex_unlock(&s->cmp.mu);
    return st;
}
