#include "fsck_salvage.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_dir.h"
#include "kv_record.h"
#include "kvr_recover.h"
#include "kvr_replay.h"

/* Collects the records of one segment that the check applied. */
typedef struct keep {
    const uint8_t *in;  /* the original segment */
    uint8_t *out;       /* the new segment: header, then kept records */
    uint64_t len;
    kvr_replay rp;      /* recovery's order rule, log-wide (no key directory):
                           rp.records are the records kept */
    uint64_t dropped;   /* records dropped for going back */
    uint64_t problems;  /* problems seen again, to compare with the check */
    int newest;         /* the newest segment: trailing zeros are no problem */
} keep;

static int keep_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    keep *k = arg;
    if (kv_record_is_mark(r)) return 0; /* the rewrite gets no marks: offsets change */
    if (kvr_replay_record(&k->rp, seg, off, r) == KV_CORRUPT) { /* goes back */
        k->dropped++;
        return 0;
    }
    /* Copied byte for byte, so both CRCs stay valid. */
    memcpy(k->out + k->len, k->in + off, r->len);
    k->len += r->len;
    return 0;
}

static void count_problem(void *arg, const kvr_problem *p)
{
    keep *k = arg;
    if (kvr_is_unwritten_space(p, k->newest)) return; /* not a problem (add_problem) */
    k->problems++;
}

/* Writes buf to path (a new file when excl, else created or truncated)
 * and fdatasyncs it. Sets *created once the file exists because of this
 * call. Returns 0 or -errno. */
static int write_file(const kv_io *io, const char *path, const uint8_t *buf, uint64_t len, int excl, int *created)
{
    int fd = io->open(io->ctx, path, KV_O_RDWR | KV_O_CREAT | (excl ? KV_O_EXCL : KV_O_TRUNC));
    if (fd < 0) return fd;
    *created = 1;
    int r = kv_io_write_full(io, fd, buf, (size_t)len, 0);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    int rc = io->close(io->ctx, fd);
    return r < 0 ? r : rc;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* What step 1 of a salvage created for one segment, to undo on failure. */
typedef struct made {
    int tmp, orig;
} made;

/* Rewrites segment s into "<path>.salvage" and copies the original to
 * "<path>.orig[.N]" (both fdatasync'ed); fills *done. */
/* Problems of s the reader reports (not those recovery adds: kind
 * FSCK_MISSING), to compare with a scan again. */
static size_t reader_problems(const fsck_segment *s)
{
    size_t n = 0;
    for (size_t j = 0; j < s->nproblems; j++) n += s->problems[j].kind != FSCK_MISSING;
    return n;
}

static kv_status salvage_one(const kv_io *io, const char *dir, const fsck_segment *s, const fsck_segment *prev,
                             uint64_t now_ms, fsck_salvaged *done, made *m, char *msg, size_t msgcap)
{
    kv_path seg_path, tmp_path, base, orig_path;
    const char *path = seg_path.s, *tmp = tmp_path.s, *orig = orig_path.s;
    snprintf(done->name, sizeof done->name, "%s", s->name);
    done->id = s->id;
    int r = kv_dir_path(&seg_path, dir, KV_FILE_SEG, s->id, 0);
    if (r == 0) r = kv_dir_path(&tmp_path, dir, KV_FILE_SEG_SALVAGE, s->id, 0);
    if (r < 0) {
        snprintf(msg, msgcap, "cannot name %s/%s: %s", dir, s->name, kv_strerror(-r));
        return -r;
    }
    uint8_t *buf = NULL;
    kvr_scan_result res;
    kv_status st = kvr_scan_file(io, path, s->id, NULL, NULL, NULL, &res, &buf);
    if (st != KV_OK) {
        snprintf(msg, msgcap, "cannot read %s: %s", path, kv_strerror(st));
        return st;
    }
    /* The kept records are never longer than the file; the segment
     * header is written anew (the old one may be the damage). */
    keep k = {.in = buf, .newest = s->newest};
    kvr_replay_init(&k.rp, NULL, now_ms);
    k.rp.max_seq = s->seq_before; /* what the check applied before this segment */
    k.out = malloc(res.file_size + KV_SEG_HEADER_SIZE + KV_MARK_SIZE);
    if (!k.out) {
        free(buf);
        snprintf(msg, msgcap, "out of memory salvaging %s", path);
        return ENOMEM;
    }
    /* The rewrite is a format 2 segment that replaces itself (replaces =
     * its own id, like a compaction output of one segment: the segment
     * after it does not check its size), names the segment before it and
     * that one's size, and ends with a trailer unless it is the newest. */
    kv_seg_header old, nh = {KV_FORMAT_VERSION, s->id, s->id, now_ms, prev ? prev->id : 0,
                             prev ? (uint32_t)prev->bytes : 0};
    if (res.file_size >= KV_SEG_HEADER_SIZE && kv_seg_header_parse(buf, s->id, &old) == KV_OK)
        nh.created_ms = old.created_ms; /* keep the original creation time */
    kv_seg_header_encode_h(k.out, &nh);
    k.len = KV_SEG_HEADER_SIZE;
    uint64_t old_bytes = res.file_size;
    st = kvr_scan_buffer(buf, old_bytes, s->id, path, keep_record, count_problem, &k, &res);
    if (st == KV_OK && (k.rp.records != s->records || k.problems + k.dropped != reader_problems(s))) {
        snprintf(msg, msgcap,
                 "%s changed since it was checked (%" PRIu64 " records and %" PRIu64 " problems now, %" PRIu64
                 " and %zu before)",
                 path, k.rp.records, k.problems + k.dropped, s->records, reader_problems(s));
        st = KV_CORRUPT;
    }
    if (st == KV_OK && !s->newest)
        k.len += kv_mark_encode(k.out + k.len, KV_REC_SEAL, k.rp.max_seq, k.len, (uint32_t)k.rp.records);
    /* The rewrite must read back clean, with every kept record. */
    kvr_scan_result again;
    if (st == KV_OK &&
        (kvr_scan_buffer(k.out, k.len, s->id, tmp, NULL, NULL, NULL, &again) != KV_OK || again.problems != 0 ||
         again.records != k.rp.records)) {
        snprintf(msg, msgcap, "the rewrite of %s does not read back clean", path);
        st = KV_CORRUPT;
    }
    if (st == KV_OK) {
        r = write_file(io, tmp, k.out, k.len, 0, &m->tmp);
        if (r < 0) snprintf(msg, msgcap, "cannot write %s: %s", tmp, kv_strerror(-r));
    }
    if (st == KV_OK && r == 0) {
        r = kv_dir_path(&base, dir, KV_FILE_SEG_ORIG, s->id, 0);
        if (r == 0) r = kv_dir_unused(io, &base, &orig_path);
        if (r == 0) r = write_file(io, orig, buf, old_bytes, 1, &m->orig);
        if (r < 0) snprintf(msg, msgcap, "cannot copy %s to %s: %s", path, orig, kv_strerror(-r));
        if (m->orig) snprintf(done->orig, sizeof done->orig, "%s", base_name(orig));
    }
    if (st == KV_OK && r < 0) st = -r;
    done->old_bytes = old_bytes;
    done->new_bytes = k.len;
    done->records = k.rp.records;
    free(buf);
    free(k.out);
    return st;
}

kv_status fsck_salvage(const kv_io *io, const char *dir, const fsck_report *rep, uint64_t now_ms,
                       fsck_salvaged **out, size_t *nout, char *msg, size_t msgcap)
{
    *out = NULL;
    *nout = 0;
    msg[0] = '\0';
    if (rep->err != KV_OK) {
        snprintf(msg, msgcap, "the check of %s did not finish: %s", dir, rep->message);
        return KV_INVALID;
    }
    size_t cap = rep->nsegs ? rep->nsegs : 1;
    fsck_salvaged *done = calloc(cap, sizeof *done);
    made *m = calloc(cap, sizeof *m);
    if (!done || !m) {
        free(done);
        free(m);
        snprintf(msg, msgcap, "out of memory salvaging %s", dir);
        return ENOMEM;
    }
    size_t n = 0;
    kv_status st = KV_OK;
    kv_path tmp, path;

    /* 1. Rewrites and copies of the originals: nothing in the log changes. */
    for (size_t i = 0; i < rep->nsegs && st == KV_OK; i++) {
        if (rep->segs[i].nproblems == 0) continue;
        st = salvage_one(io, dir, &rep->segs[i], i ? &rep->segs[i - 1] : NULL, now_ms, &done[n], &m[n], msg, msgcap);
        n++;
    }
    if (st == KV_OK) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) {
            st = -r;
            snprintf(msg, msgcap, "cannot fsync %s: %s", dir, kv_strerror(st));
        }
    }
    if (st != KV_OK) {
        /* The log is untouched: remove what this salvage created (its
         * temporary files, and fresh copies of segments still in place). */
        for (size_t i = 0; i < n; i++) {
            if (m[i].tmp && kv_dir_path(&tmp, dir, KV_FILE_SEG_SALVAGE, done[i].id, 0) == 0) io->unlink(io->ctx, tmp.s);
            if (m[i].orig && kv_dir_join(&tmp, dir, done[i].orig) == 0) io->unlink(io->ctx, tmp.s);
        }
        io->fsync_dir(io->ctx, dir);
        free(done);
        free(m);
        return st;
    }
    free(m);

    /* 2. Each rename replaces a segment atomically: by its verified
     * rewrite, the original's bytes being durable in the .orig copy. */
    for (size_t i = 0; i < n; i++) {
        int r = kv_dir_path(&path, dir, KV_FILE_SEG, done[i].id, 0);
        if (r == 0) r = kv_dir_path(&tmp, dir, KV_FILE_SEG_SALVAGE, done[i].id, 0);
        if (r == 0) r = io->rename(io->ctx, tmp.s, path.s);
        if (r < 0) {
            st = -r;
            snprintf(msg, msgcap,
                     "cannot rename %s to %s: %s; %zu of %zu damaged segments were replaced, the others are "
                     "unchanged",
                     tmp.s, path.s, kv_strerror(st), i, n);
            n = i;
            break;
        }
    }
    int r = io->fsync_dir(io->ctx, dir);
    if (st == KV_OK && r < 0) {
        st = -r;
        snprintf(msg, msgcap, "cannot fsync %s after the renames: %s", dir, kv_strerror(st));
    }
    *out = done;
    *nout = n;
    return st;
}
