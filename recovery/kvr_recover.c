#include "kvr_recover.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_record.h"
#include "kv_dir.h"
#include "kvr_dirops.h"
#include "kvr_hint.h"
#include "kvr_replay.h"

/* State of one recovery while segments are scanned. */
typedef struct rctx {
    const kv_io *io;
    const char *dir;
    unsigned flags;      /* KVR_HINTS_READ, KVR_HINTS_WRITE, KVR_DRY_RUN */
    int dry;             /* KVR_DRY_RUN: change nothing on disk */
    uint32_t *ids;       /* the live segments, ascending (kvr_list_segments) */
    size_t n;
    uint32_t *pending;   /* segments whose hint was written as .hint.tmp, to be
                            renamed once recovery knows it opens */
    size_t npending;
    kvr_mode mode;
    kv_keydir *kd;
    kvr_report *rep;
    kvr_replay rp;       /* the apply rule; rp.err: ENOMEM while applying */
    kvr_tail tail;       /* the segment being scanned, for the classification */
    int stop;            /* point-in-time stop or refusal: apply nothing more */
    int fatal;           /* refusal */
    int have_cut;        /* this segment gets cut at cut_off */
    uint64_t cut_off;
    int have_unwritten;  /* the newest segment ends in zeros from unwritten_off */
    uint64_t unwritten_off;
    kvr_problem first;   /* the problem that caused a refusal or stop */
    kvr_hint_builder *hb;     /* the hint of the segment being scanned, or NULL */
    int hb_failed;       /* building it ran out of memory: write none */
    uint64_t seg_problems; /* problems reported in the segment being scanned */
    uint64_t seg_records;  /* data records applied from it */
    int newest_hinted;     /* the newest segment has a hint file: it was sealed,
                              so a segment after it is missing */
} rctx;

static void on_problem(void *arg, const kvr_problem *p);

/* The replay queues keys by pointer into the reader's window: it applies
 * them before the window moves or goes (the reader calls on_window before
 * either, the end of the scan included). */
static void on_window(void *arg, uint64_t off, uint64_t len)
{
    (void)off;
    (void)len;
    kvr_replay_flush(&((rctx *)arg)->rp);
}

static int on_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    rctx *c = arg;
    if (c->stop || c->rp.err) return 1;
    if (kv_record_is_mark(r)) {
        if (c->hb && kvr_hint_builder_add(c->hb, off, r) != KV_OK) c->hb_failed = 1;
        return 0;
    }
    /* Records of the interrupted group after the first torn byte are cut
     * with it, so they are not applied. */
    if (c->have_cut && off >= c->cut_off) return 0;
    if (kvr_replay_record(&c->rp, seg, off, r) == KV_CORRUPT) {
        kvr_problem p = {NULL, seg, off, r->len, KVR_SEQ_ORDER, 1};
        on_problem(c, &p);
        return c->stop;
    }
    c->seg_records++;
    if (c->hb && kvr_hint_builder_add(c->hb, off, r) != KV_OK) c->hb_failed = 1;
    return c->rp.err != 0;
}

/* Keeps a copy of problem p in the report's list. */
static void note_problem(rctx *c, const kvr_problem *p, int torn)
{
    kvr_report *rep = c->rep;
    if ((rep->nfound & (rep->nfound + 1)) == 0 || rep->nfound == 0) { /* grows at 0, 1, 3, 7, ... */
        size_t nc = rep->nfound ? (rep->nfound + 1) * 2 : 4;
        kvr_found *nf = realloc(rep->found, nc * sizeof *nf);
        if (!nf) return; /* the list is for display; the decision stands */
        rep->found = nf;
    }
    kvr_found *f = &rep->found[rep->nfound++];
    f->p = *p;
    f->p.path = NULL;
    f->newest = c->tail.newest;
    f->torn = torn;
}

static void on_problem(void *arg, const kvr_problem *p)
{
    rctx *c = arg;
    if (kvr_tail_unwritten(&c->tail, p)) {
        c->have_unwritten = 1;
        c->unwritten_off = p->offset;
        return;
    }
    int torn = kvr_is_torn(&c->tail, p);
    c->rep->problems++;
    c->seg_problems++;
    note_problem(c, p, torn);
    if (c->stop) return;
    int refuse = 0;
    switch (c->mode) {
    case KVR_TOLERATE_TAIL: refuse = !torn; break;
    case KVR_ABSOLUTE: refuse = 1; break;
    case KVR_SKIP_CORRUPT:
        if (!torn) c->rep->skipped_bytes += p->length;
        break;
    case KVR_POINT_IN_TIME:
        c->stop = 1;
        c->first = *p;
        c->have_cut = 1;
        c->cut_off = p->offset;
        return;
    }
    if (refuse) {
        c->stop = c->fatal = 1;
        c->first = *p;
        return;
    }
    if (torn && !c->have_cut) {
        /* Cut at the first bad byte: several torn regions can follow each
         * other (a record with a bad CRC, then a short fragment). */
        c->have_cut = 1;
        c->cut_off = p->offset;
    }
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Loads sealed segment `id` from its hint file into the key directory, as
 * scanning it would. Returns 1 when loaded (*size set), 0 when the segment
 * must be scanned instead: no hint file, or one that is damaged, stale or
 * out of sequence order (counted as rejected). Nothing is applied from a
 * hint that fails any check. */
static int load_hint(const kv_io *io, const char *dir, uint32_t id, rctx *c, uint64_t *size)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    kvh_header h;
    kv_status st = kvr_hint_read_for_segment(io, dir, id, &buf, &len, &h);
    if (st == ENOENT) return 0;
    if (st == KV_OK) st = kvr_replay_hint(&c->rp, id, buf, len, &h);
    free(buf);
    if (c->rp.err) return 1; /* out of memory while applying: the caller stops */
    if (st != KV_OK) { /* damaged, stale, unreadable, or out of order (the scan reports where) */
        c->rep->hints_rejected++;
        return 0;
    }
    c->rep->hints_used++;
    *size = h.seg_size;
    return 1;
}

static void refuse_message(kvr_report *rep, const rctx *c, const char *dir, const char *path)
{
    const kvr_problem *p = &c->first;
    if (p->reason == KVR_ORPHAN_HINT) {
        char name[KV_NAME_MAX];
        kv_dir_name(name, sizeof name, KV_FILE_SEG, p->seg, 0);
        snprintf(rep->message, sizeof rep->message,
                 "missing segment: %s is the hint file of %s, which is missing; refusing to open in "
                 "recovery mode %s so that no valid data is dropped. Inspect with: kvfsck %s",
                 path, name, kvr_mode_name(c->mode), dir);
        return;
    }
    const char *kind = "torn tail";
    switch (kvr_classify(p, c->tail.newest, c->tail.newest && !p->valid_after && !c->tail.marked)) {
    case KVR_KIND_SEQ_BACK: kind = "out-of-order record"; break;
    case KVR_KIND_MISSING:
        kind = p->reason == KVR_NO_TRAILER || p->reason == KVR_PREV_SIZE ? "truncated sealed segment"
                                                                          : "missing segment";
        break;
    case KVR_KIND_SEALED: kind = "corruption in sealed segment"; break;
    case KVR_KIND_MID_LOG: kind = "mid-log corruption"; break;
    case KVR_KIND_TORN_TAIL: break;
    }
    snprintf(rep->message, sizeof rep->message,
             "%s in %s at byte offset %" PRIu64 " (%" PRIu64 " bytes: %s%s); refusing to open in "
             "recovery mode %s so that no valid data is dropped. Inspect with: kvfsck %s",
             kind, path, p->offset, p->length, kvr_reason_str(p->reason),
             p->valid_after ? ", valid records follow" : "", kvr_mode_name(c->mode), dir);
}

/* Hint files: an unfinished one (.hint.tmp) or one of a superseded
 * segment is removed; one whose segment is missing is evidence of a
 * lost segment, and one of the newest segment shows that it was
 * sealed, so a segment after it is missing. Neither is ever removed.
 * Returns KV_OK, or KV_CORRUPT when an orphan hint makes recovery refuse
 * (rep->message set). */
static kv_status sweep_hints(rctx *c)
{
    kvr_names l = {0};
    kvr_list_names(c->io, c->dir, 1u << KV_FILE_HINT | 1u << KV_FILE_HINT_TMP, &l);
    for (size_t k = 0; k < l.n; k++) {
        uint32_t hid;
        int is_hint = kvh_parse_name(l.v[k], &hid);
        int live = is_hint && kvr_has_id(c->ids, c->n, hid);
        kv_path path;
        kv_dir_join(&path, c->dir, l.v[k]);
        if (!is_hint || (!live && kvr_superseded_id(c->io, c->dir, c->ids, c->n, hid))) {
            if (!c->dry && (c->flags & KVR_HINTS_WRITE)) c->io->unlink(c->io->ctx, path.s);
        } else if (live) {
            if (hid == c->ids[c->n - 1]) c->newest_hinted = 1; /* reported with the newest segment */
        } else {
            kvr_problem p = {NULL, hid, 0, 0, KVR_ORPHAN_HINT, 0};
            on_problem(c, &p);
            if (c->fatal && !c->rep->message[0]) refuse_message(c->rep, c, c->dir, path.s);
        }
    }
    kvr_names_free(&l);
    c->tail.newest = 0;
    if (c->fatal) return KV_CORRUPT;
    c->stop = 0; /* point-in-time: nothing to stop at in a hint file */
    return KV_OK;
}

/* One segment while recovery loads it. */
typedef struct seg_state {
    size_t i;               /* its index in c->ids */
    kv_path path;
    kvr_segment_info *si;   /* its entry in the report */
    kvr_seg_peek pk;        /* its size and header before the scan */
    int window;             /* it may end in a rotation's missing or torn trailer */
    int window_no_end;      /* ... and the newest segment has no valid header */
    int fd;                 /* open for reading while it is scanned and cut, else -1 */
    uint64_t blen;          /* its size in bytes when opened */
    kvr_scan_result res;
} seg_state;

static int is_v2(const kvr_seg_peek *pk)
{
    return pk->header_ok && pk->hdr.version >= 2;
}

/* The chain: a version 2 header names the segment before it and that
 * segment's size when this one was created. Returns 1 when recovery stops
 * before this segment (*st: KV_CORRUPT on a refusal, or the result of
 * setting the later segments aside at a point-in-time stop). */
static int check_chain(rctx *c, seg_state *g, kv_status *st)
{
    if (!is_v2(&g->pk)) return 0;
    size_t i = g->i;
    uint32_t want = i > 0 ? c->ids[i - 1] : 0;
    const kvr_segment_info *prev = i > 0 ? &c->rep->segs[c->rep->nsegs - 1] : NULL;
    kvr_problem p = {g->path.s, c->ids[i], 0, KV_SEG_HEADER_SIZE, KVR_PREV_MISSING, 0};
    kv_path prev_path;
    int bad = g->pk.hdr.prev_id != want;
    if (!bad && prev && prev->replaces == 0 && g->pk.hdr.prev_end != 0 && g->pk.hdr.prev_end != prev->size) {
        /* The damage is the predecessor's: it ends at prev->size, not
         * where this header says it ended when it was sealed. */
        kv_dir_path(&prev_path, c->dir, KV_FILE_SEG, prev->id, 0);
        p = (kvr_problem){prev_path.s, prev->id, prev->size, 0, KVR_PREV_SIZE, 0};
        bad = 1;
    }
    if (!bad) return 0;
    on_problem(c, &p); /* missing data: never a torn tail */
    if (c->fatal) {
        refuse_message(c->rep, c, c->dir, p.path);
        *st = KV_CORRUPT;
        return 1;
    }
    if (c->stop) { /* point-in-time: the log ends before this segment */
        if (!c->dry)
            *st = kvr_discard_segments(c->io, c->dir, c->ids, i, c->n, &c->rep->discarded_segments,
                                       c->rep->message, sizeof c->rep->message);
        return 1;
    }
    return 0;
}

/* A rotation writes the next segment's header, naming this one and its
 * size with the trailer (E), before it writes the trailer: if the newest
 * segment is still empty and names this one, the trailer may be missing
 * or torn, and belongs at E - 44. If the newest has no valid header, the
 * crash came before the trailer was begun, or during a recovery that was
 * writing it (kvr_complete_rotation writes the trailer before kv_open
 * writes the newest's header again): a torn trailer then lies in the last
 * 44 bytes, after the last commit mark (check_ends). Sets
 * g->window(_no_end) and c->tail's window. */
static void find_window(rctx *c, seg_state *g)
{
    size_t i = g->i;
    if (c->tail.newest || i + 2 != c->n || !is_v2(&g->pk)) return;
    kv_path npath;
    kvr_seg_peek nx;
    kv_dir_path(&npath, c->dir, KV_FILE_SEG, c->ids[i + 1], 0);
    kvr_peek_segment(c->io, npath.s, c->ids[i + 1], &nx);
    if (nx.size <= KV_SEG_HEADER_SIZE && !nx.header_ok) {
        g->window = g->window_no_end = 1;
        c->tail.window = 1;
        c->tail.torn_from = g->pk.size > KV_SEG_HEADER_SIZE + KV_MARK_SIZE ? g->pk.size - KV_MARK_SIZE
                                                                          : KV_SEG_HEADER_SIZE;
    } else if (nx.size == KV_SEG_HEADER_SIZE && nx.hdr.version >= 2 && nx.hdr.prev_id == c->ids[i] &&
               nx.hdr.prev_end >= KV_SEG_HEADER_SIZE + KV_MARK_SIZE) {
        g->window = 1;
        c->tail.window = 1;
        c->tail.torn_from = nx.hdr.prev_end - KV_MARK_SIZE;
    }
}

/* After the scan of a version 2 segment: a sealed segment ends with its
 * trailer; the newest never does (a rotation writes the trailer only once
 * the next segment exists). Reports what is missing. */
static void check_ends(rctx *c, seg_state *g)
{
    const kvr_scan_result *res = &g->res;
    /* Without a successor's header to say where the trailer belongs, only
     * a tail cut right after a commit mark is a torn trailer: damage to
     * the last group itself leaves its mark invalid, and is corruption. */
    int no_end_ok = c->seg_problems == 0 ||
                    (c->have_cut && c->cut_off == res->valid_end && res->mark_end == res->valid_end);
    if (res->sealed || !(g->window_no_end ? no_end_ok : res->valid_end == c->tail.torn_from))
        g->window = 0;
    /* No more than the trailer's 44 bytes may follow: the write of a
     * trailer is all the rotation had begun. What they hold does not
     * matter (a torn write can leave any bytes, and a trailer carries no
     * data): they are saved beside the segment, and the trailer written
     * whole. */
    if (g->window && !g->window_no_end && g->blen > (uint64_t)c->tail.torn_from + KV_MARK_SIZE) g->window = 0;
    if (c->stop || c->rp.err || !is_v2(&g->pk)) return;
    uint32_t id = c->ids[g->i];
    if (!c->tail.newest && !res->sealed && !g->window) {
        kvr_problem p = {g->path.s, id, g->blen, 0, KVR_NO_TRAILER, 0};
        on_problem(c, &p);
    } else if (c->tail.newest && (res->sealed || c->newest_hinted)) {
        /* At its trailer; or, without one, at its start (its hint). */
        kvr_problem p = {g->path.s, id, res->sealed ? g->blen : 0, 0, KVR_NO_SUCCESSOR, 0};
        on_problem(c, &p);
    }
}

/* Only a segment proven whole gets a hint: version 1 scanned cleanly, or
 * version 2 with its trailer. It is written as .hint.tmp, renamed only
 * once recovery knows it opens (commit_hints). */
static void write_hint(rctx *c, seg_state *g)
{
    int whole = g->pk.header_ok && (g->pk.hdr.version == 1 || g->res.sealed);
    if (!c->hb || !whole || c->rp.err || c->hb_failed || c->seg_problems || c->stop || g->window) return;
    uint8_t *hint;
    size_t hlen;
    uint32_t id = c->ids[g->i];
    int r = kvr_hint_builder_finish_fd(c->hb, c->io, g->fd, g->res.file_size, &hint, &hlen) == KV_OK
                ? kvr_hint_write_tmp(c->io, c->dir, id, hint, hlen)
                : -ENOMEM;
    free(hint); /* NULL when finishing failed */
    if (r == 0) {
        c->pending[c->npending++] = id;
        g->si->hint = 1;
    } else {
        c->rep->hints_failed++;
    }
}

/* Opens segment g and takes its size into g->fd and g->blen. Returns
 * KV_OK, or an errno (EFBIG over KVR_MAX_SEGMENT_BYTES). */
static kv_status open_segment(rctx *c, seg_state *g)
{
    g->fd = c->io->open(c->io->ctx, g->path.s, KV_O_RDONLY);
    if (g->fd < 0) {
        kv_status st = -g->fd;
        g->fd = -1;
        return st;
    }
    int r = c->io->fsize(c->io->ctx, g->fd, &g->blen);
    if (r < 0) return -r;
    return g->blen > KVR_MAX_SEGMENT_BYTES ? EFBIG : KV_OK;
}

/* Scans segment g (the newest, or a sealed one without a usable hint)
 * through the reader's window, applying its records, and builds its
 * hint. Returns KV_OK or why recovery stops here (rep->message set):
 * KV_VERSION, an errno, ENOMEM, or KV_CORRUPT on a refusal. */
static kv_status scan_segment(rctx *c, seg_state *g)
{
    uint32_t id = c->ids[g->i];
    c->hb_failed = 0;
    c->hb = !c->tail.newest && !c->dry && (c->flags & KVR_HINTS_WRITE) ? kvr_hint_builder_new(id) : NULL;
    kv_status st = open_segment(c, g);
    if (st == KV_OK && c->tail.newest && is_v2(&g->pk) && kvr_tail_find(&c->tail, c->io, g->fd, g->blen, id)) {
        c->have_cut = 1; /* the whole last group is torn */
        c->cut_off = c->tail.torn_from;
    }
    kvr_scan_hooks h = {on_record, on_problem, on_window, c};
    if (st == KV_OK) st = kvr_scan_fd(c->io, g->fd, g->blen, id, g->path.s, KVR_WINDOW_DEFAULT, &h, &g->res);
    g->si->records = c->seg_records;
    g->si->sealed = g->res.sealed;
    if (st == KV_OK) {
        check_ends(c, g);
        write_hint(c, g);
    }
    kvr_hint_builder_free(c->hb);
    c->hb = NULL;
    kvr_report *rep = c->rep;
    if (st == KV_VERSION)
        snprintf(rep->message, sizeof rep->message,
                 "%s has an on-disk format version this build cannot read (it reads versions %d to %d)", g->path.s,
                 KV_FORMAT_VERSION_MIN, KV_FORMAT_VERSION);
    else if (st != KV_OK)
        snprintf(rep->message, sizeof rep->message, "cannot read %s: %s", g->path.s, kv_strerror(st));
    else if (c->rp.err)
        snprintf(rep->message, sizeof rep->message, "out of memory while loading %s", g->path.s);
    else if (c->fatal)
        refuse_message(rep, c, c->dir, g->path.s);
    if (st == KV_OK && c->rp.err) st = c->rp.err;
    if (st == KV_OK && c->fatal) st = KV_CORRUPT;
    return st;
}

/* After a scan: sets the later segments aside at a point-in-time stop,
 * cuts a torn tail (saving it) or trims unwritten zeros, and writes the
 * trailer of an interrupted rotation. *size becomes the segment's size
 * afterwards. Returns KV_OK or an errno (rep->message set). */
static kv_status finish_segment(rctx *c, seg_state *g, uint64_t *size)
{
    kvr_report *rep = c->rep;
    uint32_t id = c->ids[g->i];
    uint64_t file_size = g->res.file_size;
    kv_status st = KV_OK;
    *size = file_size;
    if (c->stop && !c->dry) { /* point-in-time: set the later segments aside first */
        st = kvr_discard_segments(c->io, c->dir, c->ids, g->i + 1, c->n, &rep->discarded_segments, rep->message,
                                  sizeof rep->message);
        if (st != KV_OK) return st;
    }
    /* The bytes worth saving end where the trailing zeros begin. A
     * point-in-time stop ends the scan early, before the reader could
     * report them: find them here. */
    uint64_t end = c->have_unwritten ? c->unwritten_off : file_size;
    if ((c->tail.newest || c->tail.window) && c->have_cut && !c->have_unwritten && c->cut_off < file_size) {
        st = kvr_zero_tail_fd(c->io, g->fd, c->cut_off, file_size, 0, &end);
        if (st != KV_OK) {
            snprintf(rep->message, sizeof rep->message, "cannot read %s: %s", g->path.s, kv_strerror(st));
            return st;
        }
        c->have_unwritten = end < file_size;
    }
    if (c->have_cut && c->cut_off < end) {
        if (!c->dry)
            st = kvr_cut_segment(c->io, c->dir, id, g->fd, end, c->cut_off, rep->message, sizeof rep->message);
        if (st != KV_OK) return st;
        rep->torn_bytes += end - c->cut_off;
        rep->torn_segment = id;
        rep->torn_offset = c->cut_off;
        *size = c->cut_off;
    } else if (c->have_unwritten || (c->have_cut && c->cut_off < file_size)) {
        uint64_t to = c->have_cut && c->cut_off < end ? c->cut_off : end;
        if (!c->dry) st = kvr_trim_segment(c->io, c->dir, id, to, rep->message, sizeof rep->message);
        if (st != KV_OK) return st;
        *size = to;
    }
    if (c->have_unwritten) rep->unwritten_bytes += file_size - end;
    if (g->window) { /* the torn trailer is cut and saved above; write it whole */
        if (!c->dry) {
            st = kvr_complete_rotation(c->io, c->dir, id, *size, c->rp.max_seq, c->seg_records, rep->message,
                                       sizeof rep->message);
            if (st != KV_OK) return st;
        }
        *size += KV_MARK_SIZE;
        g->si->sealed = 1;
        rep->rotations_completed++;
    }
    return KV_OK;
}

/* Loads segment ids[i]: from its hint file when it is sealed and the hint
 * is good, else by scanning it. Returns KV_OK, or why recovery stops
 * (rep->message set); *stop is set when recovery stops here without an
 * error (point-in-time). */
static kv_status load_segment(rctx *c, size_t i, int *stop)
{
    kvr_report *rep = c->rep;
    seg_state g = {.i = i, .si = &rep->segs[rep->nsegs], .fd = -1};
    kv_dir_path(&g.path, c->dir, KV_FILE_SEG, c->ids[i], 0);
    c->tail = (kvr_tail){.newest = i + 1 == c->n};
    c->have_cut = c->have_unwritten = 0;
    c->seg_problems = c->seg_records = 0;
    g.si->id = c->ids[i];
    kvr_peek_segment(c->io, g.path.s, c->ids[i], &g.pk);
    g.si->version = g.pk.header_ok ? g.pk.hdr.version : 0;
    g.si->replaces = g.pk.header_ok ? g.pk.hdr.replaces : 0;
    kv_status st = KV_OK;
    if (check_chain(c, &g, &st)) {
        *stop = 1;
        return st;
    }
    find_window(c, &g);
    uint64_t size = 0;
    if (!c->tail.newest && (c->flags & KVR_HINTS_READ) && load_hint(c->io, c->dir, c->ids[i], c, &size)) {
        if (c->rp.err) {
            snprintf(rep->message, sizeof rep->message, "out of memory while loading %s", g.path.s);
            return c->rp.err;
        }
        g.si->hint = 1;
        g.si->sealed = g.si->version >= 2;
    } else {
        st = scan_segment(c, &g);
        if (st == KV_OK) st = finish_segment(c, &g, &size);
        if (g.fd >= 0) c->io->close(c->io->ctx, g.fd);
        if (st != KV_OK) return st;
    }
    g.si->size = size;
    rep->nsegs++;
    rep->segments++;
    rep->log_bytes += size;
    *stop = c->stop; /* point-in-time: nothing after this point is loaded */
    return KV_OK;
}

/* Opening: the hints written as .hint.tmp become real. Refused (st not
 * KV_OK): they are unwritten again, so a refused start changes nothing. */
static void commit_hints(rctx *c, kv_status st)
{
    kvr_report *rep = c->rep;
    for (size_t k = 0; k < c->npending; k++) {
        if (st != KV_OK) {
            kv_path path;
            if (kv_dir_path(&path, c->dir, KV_FILE_HINT_TMP, c->pending[k], 0) == 0) c->io->unlink(c->io->ctx, path.s);
        } else if (kvr_hint_commit_tmp(c->io, c->dir, c->pending[k]) == 0) {
            rep->hints_written++;
        } else {
            rep->hints_failed++;
            for (size_t j = 0; j < rep->nsegs; j++)
                if (rep->segs[j].id == c->pending[k]) rep->segs[j].hint = 0;
        }
    }
}

kv_status kvr_recover(const kv_io *io, const char *dir, kvr_mode mode, unsigned flags, uint64_t now_ms,
                      kv_keydir *kd, kvr_report *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->mode = mode;
    uint64_t t0 = now_us();
    rctx c = {.mode = mode, .kd = kd, .rep = rep, .io = io, .dir = dir, .flags = flags};
    c.dry = (flags & KVR_DRY_RUN) != 0;
    kvr_replay_init(&c.rp, kd, now_ms);
    kv_status st = kvr_list_segments(io, dir, &c.ids, &c.n);
    if (st != KV_OK) {
        if (!rep->message[0])
            snprintf(rep->message, sizeof rep->message, "cannot list data directory %s: %s", dir, kv_strerror(st));
        return st;
    }
    rep->segs = calloc(c.n ? c.n : 1, sizeof *rep->segs);
    c.pending = calloc(c.n ? c.n : 1, sizeof *c.pending);
    if (!rep->segs || !c.pending) {
        free(c.ids);
        free(c.pending);
        return ENOMEM;
    }
    if (sweep_hints(&c) != KV_OK) {
        free(c.ids);
        free(c.pending);
        rep->elapsed_us = now_us() - t0;
        return KV_CORRUPT;
    }
    if (flags & KVR_HINTS_READ) kv_keydir_reserve(kd, kvr_hint_estimate_keys(io, dir, c.ids, c.n));
    int stop = 0;
    for (size_t i = 0; i < c.n && st == KV_OK && !stop; i++) st = load_segment(&c, i, &stop);
    free(c.ids);
    commit_hints(&c, st);
    free(c.pending);
    /* What a crash left of a compaction goes once recovery opens. */
    if (st == KV_OK && !c.dry) st = kvr_remove_superseded(io, dir, rep->message, sizeof rep->message);
    if (st == KV_OK && !c.dry)
        st = kvr_remove_compact_leftovers(io, dir, &rep->compact_leftovers, rep->message, sizeof rep->message);
    rep->records = c.rp.records;
    rep->batches = c.rp.batches;
    rep->entries = c.rp.entries;
    rep->tombstones = c.rp.tombstones;
    rep->expired = c.rp.expired;
    rep->max_seq = c.rp.max_seq;
    rep->keys = kv_keydir_count(kd);
    rep->live_bytes = kv_keydir_loc_bytes(kd);
    rep->elapsed_us = now_us() - t0;
    return st;
}
