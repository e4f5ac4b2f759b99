/*
 * kv_segtab — the segment table: every open segment of the log, its
 * descriptor, its read-only mapping and its reference count, and the
 * marking of segments in which a read met a media error.
 *
 * Owns: the segment descriptors (struct segment) and the two orders of
 * the table (s->tab.segs in log order, s->tab.byid by id).
 * Guarantees: a segment's descriptor and mapping stay valid while anyone
 * holds a reference (do_seg_acquire / seg_release), even after a
 * compaction took it out of the table; the last release closes it.
 * A segment is marked bad at most once, and logged once.
 * Never: reads or writes segment contents (the readers, the writer and
 * compaction do), or removes files.
 * Locking: the do_ functions expect tab.lock (shared for lookups,
 * exclusive for changes; kv_open before the writer starts needs none).
 * seg_release and mark_bad take no table lock: refs and bad are atomics,
 * and mark_bad's counters are under q.mu.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"

void file_path(const kv_store *s, kv_file_kind kind, uint32_t id, kv_path *p)
{
    (void)kv_dir_path(p, s->dir, kind, id, 0);
}

/* Segment table lookup by id (caller holds tab.lock). Returns the index in
 * byid, or -1. */
long do_seg_index(const kv_store *s, uint32_t id)
{
    size_t lo = 0, hi = s->tab.nsegs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->tab.byid[mid]->id == id) return (long)mid;
        if (s->tab.byid[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Takes a reference on segment id for a read (caller holds tab.lock), or NULL. */
segment *do_seg_acquire(const kv_store *s, uint32_t id)
{
    long i = do_seg_index(s, id);
    if (i < 0) return NULL;
    __atomic_add_fetch(&s->tab.byid[i]->refs, 1, __ATOMIC_ACQ_REL);
    return s->tab.byid[i];
}

void seg_release(kv_store *s, segment *g)
{
    if (g && __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        if (g->map) s->io->unmap(s->io->ctx, g->map, g->map_len);
        s->io->close(s->io->ctx, g->fd);
        free(g);
    }
}

/* Adds a segment to the tables (caller holds the write lock, or is
 * kv_open): at the end of the log order (front = 0), or at its front
 * (front = 1, a compaction output, which replaces the oldest segments).
 * Returns the new entry, or NULL when out of memory (nothing changed). */
segment *do_seg_insert(kv_store *s, int front, uint32_t id, uint32_t file_id, int fd)
{
    if (s->tab.nsegs == s->tab.cap_segs) {
        size_t nc = s->tab.cap_segs ? s->tab.cap_segs * 2 : 16;
        segment **ns = realloc(s->tab.segs, nc * sizeof *ns);
        if (!ns) return NULL;
        s->tab.segs = ns;
        segment **nb = realloc(s->tab.byid, nc * sizeof *nb);
        if (!nb) return NULL;
        s->tab.byid = nb;
        s->tab.cap_segs = nc;
    }
    segment *g = malloc(sizeof *g);
    if (!g) return NULL;
    g->id = id;
    g->file_id = file_id;
    g->fd = fd;
    g->refs = 1;
    g->hinted = 0;
    g->bad = 0;
    g->map = NULL;
    g->map_len = 0;
    /* Reads copy records out of a mapping instead of calling pread(2):
     * one system call fewer per GET. The mapping covers the file, and for
     * a segment that may still grow (one at or below the rotation size)
     * room for it to reach that size and one more group; reads beyond it
     * use pread. Records are never rewritten or truncated while the store
     * holds the directory, and only published records are read. */
    uint64_t size = 0;
    if (s->io->map && s->io->fsize(s->io->ctx, fd, &size) == 0) {
        uint64_t len = size;
        if (size <= s->opt.segment_max_bytes) len = s->opt.segment_max_bytes + s->opt.group_max_bytes;
        const void *addr;
        if (len > 0 && s->io->map(s->io->ctx, fd, len, &addr) == 0) {
            g->map = addr;
            g->map_len = len;
        }
    }
    if (front) {
        memmove(s->tab.segs + 1, s->tab.segs, s->tab.nsegs * sizeof *s->tab.segs);
        s->tab.segs[0] = g;
    } else {
        s->tab.segs[s->tab.nsegs] = g;
    }
    size_t at = s->tab.nsegs;
    while (at > 0 && s->tab.byid[at - 1]->id > id) at--;
    memmove(s->tab.byid + at + 1, s->tab.byid + at, (s->tab.nsegs - at) * sizeof *s->tab.byid);
    s->tab.byid[at] = g;
    s->tab.nsegs++;
    return g;
}

/* A segment of the log, numbered as its file (open, rotation). Returns 0
 * or -ENOMEM. */
int do_seg_add(kv_store *s, uint32_t id, int fd)
{
    return do_seg_insert(s, 0, id, id, fd) ? 0 : -ENOMEM;
}

void do_seg_remove(kv_store *s, segment *g)
{
    for (size_t i = 0; i < s->tab.nsegs; i++)
        if (s->tab.segs[i] == g) {
            memmove(s->tab.segs + i, s->tab.segs + i + 1, (s->tab.nsegs - i - 1) * sizeof *s->tab.segs);
            break;
        }
    long b = do_seg_index(s, g->id);
    if (b >= 0) memmove(s->tab.byid + b, s->tab.byid + b + 1, (s->tab.nsegs - (size_t)b - 1) * sizeof *s->tab.byid);
    s->tab.nsegs--;
    seg_release(s, g);
}

/* 1 if g is in the segment table (caller holds tab.lock). */
int do_seg_in_log(const kv_store *s, const segment *g)
{
    long i = do_seg_index(s, g->id);
    return i >= 0 && s->tab.byid[i] == g;
}

/* A read of [off, off + len) of segment g failed with a media error: EIO
 * (from pread, or a SIGBUS under its mapping) or -ENODATA (the file is
 * shorter than its records). Marks the segment bad (counted and logged
 * once per segment) and remembers where, for INFO. */
void mark_bad(kv_store *s, segment *g, uint64_t off, uint32_t len, int err)
{
    int first = __atomic_exchange_n(&g->bad, 1, __ATOMIC_ACQ_REL) == 0;
    pthread_mutex_lock(&s->q.mu);
    if (first) s->q.segs_bad++;
    s->q.bad_seg = g->file_id;
    s->q.bad_off = off;
    pthread_mutex_unlock(&s->q.mu);
    if (!first) return;
    kv_path path;
    file_path(s, KV_FILE_SEG, g->file_id, &path);
    logf_(s, KV_LOG_ERROR,
          "media error reading %s at offset %" PRIu64 " (%u bytes): %s; the segment is marked bad and reads of "
          "its damaged records answer an I/O error. Check the disk, then stop the server and run: kvfsck %s",
          path.s, off, len, err == -ENODATA ? "the file is shorter than its records" : kv_strerror(-err), s->dir);
}
