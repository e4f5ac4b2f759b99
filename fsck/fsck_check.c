#include "fsck_check.h"
#include "kvr_recover.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_dir.h"
#include "kv_keydir.h"
#include "kv_record.h"
#include "kvr_hint.h"
#include "kvr_replay.h"

const char *fsck_kind_name(fsck_kind k)
{
    switch (k) {
    case FSCK_TORN_TAIL: return "torn tail";
    case FSCK_MID_LOG: return "mid-log corruption";
    case FSCK_SEALED: return "sealed-segment corruption";
    case FSCK_SEQ_BACK: return "sequence going back";
    case FSCK_HINT: return "bad hint file";
    case FSCK_MISSING: return "missing data";
    case FSCK_NKINDS: break;
    }
    return "unknown";
}

const char *fsck_hint_state_name(fsck_hint_state s)
{
    switch (s) {
    case FSCK_HINT_VALID: return "valid";
    case FSCK_HINT_UNCHECKED: return "not checked (segment damaged)";
    case FSCK_HINT_DAMAGED: return "damaged";
    case FSCK_HINT_STALE: return "stale";
    case FSCK_HINT_DISAGREES: return "disagrees with its segment";
    case FSCK_HINT_ORPHAN: return "its segment is missing";
    case FSCK_HINT_SUPERSEDED: return "of a superseded segment";
    }
    return "unknown";
}

/* kvr_replay's kind as kvfsck names it (FSCK_HINT is kvfsck's own). */
static fsck_kind fsck_kind_of(kvr_kind k)
{
    switch (k) {
    case KVR_KIND_TORN_TAIL: return FSCK_TORN_TAIL;
    case KVR_KIND_MID_LOG: return FSCK_MID_LOG;
    case KVR_KIND_SEALED: return FSCK_SEALED;
    case KVR_KIND_SEQ_BACK: return FSCK_SEQ_BACK;
    case KVR_KIND_MISSING: return FSCK_MISSING;
    }
    return FSCK_MISSING;
}

fsck_kind fsck_classify(const kvr_problem *p, int newest)
{
    return fsck_kind_of(kvr_classify(p, newest, newest && !p->valid_after));
}

/* ---- names ---- */

static int names_add(fsck_names *l, const char *name)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(name))) return -1;
    l->n++;
    return 0;
}

static void names_free(fsck_names *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_sort(fsck_names *l)
{
    if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, cmp_str);
}

/* ---- the check ---- */

typedef struct listing {
    fsck_report *rep;
    int oom;
} listing;

/* 1 for the files replication keeps in a data directory (kv/repl):
 * "replication.state" and "diverged.<first>-<last>". */
static int is_repl_file(const char *name)
{
    if (!strcmp(name, "replication.state")) return 1;
    if (strncmp(name, "diverged.", 9) != 0) return 0;
    const char *p = name + 9;
    size_t a = strspn(p, "0123456789");
    if (a == 0 || p[a] != '-') return 0;
    size_t b = strspn(p + a + 1, "0123456789");
    return b > 0 && p[a + 1 + b] == 0;
}

/* Files by kind (kv_dir.h); segments are listed by kvr_list_segments. */
static int list_entry(void *arg, const char *name)
{
    listing *l = arg;
    fsck_report *rep = l->rep;
    uint32_t id;
    int r = 0;
    switch (kv_dir_parse(name, &id, NULL)) {
    case KV_FILE_SEG: break;
    case KV_FILE_HINT:
        if (rep->nhints % 16 == 0) {
            fsck_hint *nh = realloc(rep->hints, (rep->nhints + 16) * sizeof *nh);
            if (!nh) {
                l->oom = 1;
                return 1;
            }
            rep->hints = nh;
        }
        fsck_hint *h = &rep->hints[rep->nhints++];
        memset(h, 0, sizeof *h);
        snprintf(h->name, sizeof h->name, "%s", name);
        h->seg = id;
        h->state = FSCK_HINT_SUPERSEDED; /* until its segment is found (or recovery calls it an orphan) */
        break;
    case KV_FILE_LOCK: rep->lock_file = 1; break;
    case KV_FILE_SEG_TORN: r = names_add(&rep->torn_files, name); break;
    case KV_FILE_SEG_DISCARDED:
    case KV_FILE_HINT_DISCARDED: r = names_add(&rep->discarded_files, name); break;
    case KV_FILE_SEG_ORIG: r = names_add(&rep->orig_files, name); break;
    case KV_FILE_SEG_SALVAGE: r = names_add(&rep->salvage_files, name); break;
    case KV_FILE_SEG_COMPACT: r = names_add(&rep->compact_files, name); break;
    case KV_FILE_HINT_ORPHAN: r = names_add(&rep->orphan_files, name); break;
    case KV_FILE_HINT_TMP: /* an unfinished hint file: recovery removes it */
    case KV_FILE_OTHER:
    case KV_FILE_NKINDS:
        r = names_add(is_repl_file(name) ? &rep->repl_files : &rep->other_files, name);
        break;
    }
    if (r < 0) l->oom = 1;
    return l->oom;
}

/* State while one directory is checked. */
typedef struct cctx {
    fsck_report *rep;
    fsck_segment *seg;
    kvr_replay rp;       /* recovery's apply rule; rp.err: ENOMEM while applying */
    kv_status err;       /* ENOMEM while recording */
    fsck_progress_fn progress;
    void *parg;
    size_t seg_index;
    uint64_t done_before; /* bytes of the segments before this one */
    uint64_t total;
    kvr_hint_builder *hb;      /* the segment's hint, rebuilt from this scan, or NULL */
    int hb_err;           /* adding to it ran out of memory */
} cctx;

/* Appends problem p to segment s as kind `kind` and counts it. Returns 0,
 * or ENOMEM (nothing added). */
static kv_status push_problem(fsck_report *rep, fsck_segment *s, const kvr_problem *p, fsck_kind kind)
{
    if (s->nproblems == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 4;
        fsck_problem *np = realloc(s->problems, nc * sizeof *np);
        if (!np) return ENOMEM;
        s->problems = np;
        s->cap = nc;
    }
    fsck_problem *q = &s->problems[s->nproblems++];
    q->offset = p->offset;
    q->length = p->length;
    q->reason = p->reason;
    q->valid_after = p->valid_after;
    q->kind = kind;
    rep->problems++;
    rep->by_kind[kind]++;
    return KV_OK;
}

static void add_problem(cctx *c, const kvr_problem *p)
{
    fsck_segment *s = c->seg;
    if (kvr_is_unwritten_space(p, s->newest)) { /* as recovery sees it: not a problem */
        s->unwritten += p->length;
        c->rep->unwritten += p->length;
        return;
    }
    if (push_problem(c->rep, s, p, fsck_classify(p, s->newest)) != KV_OK) c->err = ENOMEM;
}

static void on_problem(void *arg, const kvr_problem *p)
{
    add_problem(arg, p);
}

static int on_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    cctx *c = arg;
    if (c->progress) c->progress(c->parg, c->seg_index, c->rep->nsegs, c->done_before + off, c->total);
    if (kv_record_is_mark(r)) {
        /* A mark carries no key; the hint records a trailer as the
         * segment's last record. */
        if (c->hb && kvr_hint_builder_add(c->hb, off, r) != KV_OK) c->hb_err = 1;
        return 0;
    }
    /* Applied exactly as recovery applies it (kvr_replay), which compares
     * the order with every earlier segment too. */
    uint64_t entries = c->rp.entries;
    kv_status st = kvr_replay_record(&c->rp, seg, off, r);
    if (st == KV_CORRUPT) {
        kvr_problem p = {NULL, seg, off, r->len, KVR_SEQ_ORDER, 1};
        add_problem(c, &p);
        return c->err != 0;
    }
    if (st != KV_OK) c->err = st;
    c->seg->records++;
    c->seg->entries += c->rp.entries - entries;
    if (c->hb && kvr_hint_builder_add(c->hb, off, r) != KV_OK) c->hb_err = 1;
    return c->err != 0;
}

static void set_error(fsck_report *rep, kv_status st, const char *what, const char *path)
{
    if (rep->err != KV_OK) return; /* keep the first */
    rep->err = st;
    if (st == KV_VERSION)
        snprintf(rep->message, sizeof rep->message,
                 "%s has an on-disk format version this build cannot read (it reads version %d); check it "
                 "with a kvfsck of that version",
                 path, KV_FORMAT_VERSION);
    else
        snprintf(rep->message, sizeof rep->message, "%s %s: %s", what, path, kv_strerror(st));
}

static int cmp_hint(const void *a, const void *b)
{
    uint32_t x = ((const fsck_hint *)a)->seg, y = ((const fsck_hint *)b)->seg;
    return x < y ? -1 : x > y;
}

/* The hint file of segment s, or NULL. */
static fsck_hint *find_hint(fsck_report *rep, uint32_t seg)
{
    for (size_t i = 0; i < rep->nhints; i++)
        if (rep->hints[i].seg == seg) return &rep->hints[i];
    return NULL;
}

/* Checks hint file h against segment s, whose bytes are seg[0, len)
 * (NULL if they could not be read); hb holds the hint the check's scan
 * built from the segment's records (NULL: out of memory). */
static fsck_hint_state check_hint(const kv_io *io, const char *dir, fsck_report *rep, fsck_hint *h,
                                  const fsck_segment *s, const uint8_t *seg, uint64_t len, kvr_hint_builder *hb)
{
    kv_path hp;
    const char *path = hp.s;
    kv_dir_join(&hp, dir, h->name);
    uint8_t *buf = NULL;
    uint64_t blen = 0;
    int r = kv_io_read_file(io, path, KVH_MAX_FILE_BYTES, &buf, &blen);
    if (r == -EFBIG) {
        /* Too large to be a hint: report how large it is. */
        int fd = io->open(io->ctx, path, KV_O_RDONLY);
        if (fd >= 0) {
            io->fsize(io->ctx, fd, &h->bytes);
            io->close(io->ctx, fd);
        }
        return FSCK_HINT_DAMAGED;
    }
    if (r < 0) {
        set_error(rep, -r, "cannot read", path);
        return FSCK_HINT_UNCHECKED;
    }
    h->bytes = blen;
    kvh_header hh;
    fsck_hint_state state;
    uint8_t *want = NULL;
    size_t wlen = 0;
    if (kvh_decode(buf, blen, s->id, &hh) != KV_OK) {
        state = FSCK_HINT_DAMAGED;
    } else if (!seg || s->err || s->nproblems) {
        state = FSCK_HINT_UNCHECKED;
    } else if (hh.seg_size != len || len < KV_SEG_HEADER_SIZE ||
               (hh.records && hh.last_off + KV_REC_HEADER_SIZE > len) ||
               kvh_matches(&hh, len, seg, hh.records ? seg + hh.last_off : seg) != KV_OK) {
        state = FSCK_HINT_STALE; /* recovery's check, on the bytes read */
    } else {
        kv_status st = hb ? kvr_hint_builder_finish_buf(hb, seg, len, &want, &wlen) : ENOMEM;
        if (st == ENOMEM) set_error(rep, ENOMEM, "out of memory checking", path);
        if (st != KV_OK)
            state = FSCK_HINT_UNCHECKED;
        else
            state = wlen == blen && !memcmp(want, buf, blen) ? FSCK_HINT_VALID : FSCK_HINT_DISAGREES;
    }
    free(want);
    free(buf);
    return state;
}

/* Recovery is the judge (recovery/kvr_recover.h): runs it twice without
 * changing anything (KVR_DRY_RUN). Once in skip-corrupt mode over every
 * segment, which meets every problem: its classification (torn tail or
 * not, which depends on the group-commit marks and the trailers of
 * format 2) replaces the reader-only one, and the problems only recovery
 * sees (a broken chain, a lost trailer, a missing successor, an orphan
 * hint) are added. Once as kvd starts by default (tolerate-tail, hint
 * files read), for the verdict: whether kvd starts or refuses, and why. */
static void agree_with_recovery(const kv_io *io, const char *dir, uint64_t now_ms, fsck_report *rep)
{
    kvr_report rr;
    kv_keydir *kd = kv_keydir_new();
    if (!kd) return;
    kv_status st = kvr_recover(io, dir, KVR_SKIP_CORRUPT, KVR_DRY_RUN, now_ms, kd, &rr);
    kv_keydir_free(kd);
    for (size_t k = 0; st == KV_OK && k < rr.nfound; k++) {
        const kvr_found *f = &rr.found[k];
        if (f->p.reason == KVR_ORPHAN_HINT) {
            for (size_t j = 0; j < rep->nhints; j++)
                if (rep->hints[j].seg == f->p.seg && rep->hints[j].state < FSCK_HINT_DAMAGED) {
                    rep->hints[j].state = FSCK_HINT_ORPHAN;
                    rep->problems++;
                    rep->by_kind[FSCK_MISSING]++;
                }
            continue;
        }
        fsck_segment *s = NULL;
        for (size_t j = 0; j < rep->nsegs; j++)
            if (rep->segs[j].id == f->p.seg) s = &rep->segs[j];
        if (!s) continue;
        if (fsck_classify(&f->p, f->newest) == FSCK_MISSING) {
            (void)push_problem(rep, s, &f->p, FSCK_MISSING); /* a problem recovery sees, the reader does not */
            continue;
        }
        /* A reader problem: recovery's classification of it. */
        for (size_t j = 0; j < s->nproblems; j++) {
            fsck_problem *q = &s->problems[j];
            if (q->offset != f->p.offset || q->reason != f->p.reason || q->kind == FSCK_SEQ_BACK) continue;
            fsck_kind want = fsck_kind_of(kvr_classify(&f->p, f->newest, f->torn));
            rep->by_kind[q->kind]--;
            q->kind = want;
            rep->by_kind[want]++;
        }
    }
    /* Zeros recovery takes for unwritten space that the reader alone calls
     * a problem: the end of a torn trailer before an empty newest segment
     * (a crash in the middle of a rotation), which recovery cuts. */
    for (size_t j = 0; st == KV_OK && j < rep->nsegs; j++) {
        fsck_segment *s = &rep->segs[j];
        size_t w = 0;
        for (size_t q = 0; q < s->nproblems; q++) {
            fsck_problem *pr = &s->problems[q];
            int seen = pr->reason != KVR_UNWRITTEN;
            for (size_t k = 0; !seen && k < rr.nfound; k++)
                seen = rr.found[k].p.seg == s->id && rr.found[k].p.offset == pr->offset &&
                       rr.found[k].p.reason == pr->reason;
            if (seen) {
                s->problems[w++] = *pr;
                continue;
            }
            rep->problems--;
            rep->by_kind[pr->kind]--;
            s->unwritten += pr->length;
            rep->unwritten += pr->length;
        }
        s->nproblems = w;
    }
    kvr_report_free(&rr);
    kd = kv_keydir_new();
    if (!kd) return;
    rep->kvd_verdict = kvr_recover(io, dir, KVR_TOLERATE_TAIL, KVR_DRY_RUN | KVR_HINTS_READ, now_ms, kd, &rr);
    kv_keydir_free(kd);
    snprintf(rep->kvd_message, sizeof rep->kvd_message, "%s", rr.message);
    rep->kvd_torn_bytes = rr.torn_bytes;
    rep->kvd_hinted = rr.hints_used;
    rep->kvd_rotations = rr.rotations_completed;
    kvr_report_free(&rr);
}

/* Lists dir into rep: files by kind (list_entry), and in *ids the
 * segments to check, the ones recovery loads: the same list, without
 * those a compaction output supersedes (left by a crash between its
 * rename and its unlinks; recovery removes them), which are listed among
 * the other files. Returns KV_OK or rep->err. */
static kv_status list_directory(const kv_io *io, const char *dir, fsck_report *rep, uint32_t **ids, size_t *n)
{
    listing l = {.rep = rep};
    int r = io->list_dir(io->ctx, dir, list_entry, &l);
    if (l.oom) r = -ENOMEM;
    if (r < 0) {
        set_error(rep, -r, "cannot read data directory", dir);
        return rep->err;
    }
    kv_status lst = kvr_list_segments(io, dir, ids, n);
    if (lst != KV_OK) {
        set_error(rep, lst, "cannot read data directory", dir);
        return rep->err;
    }
    uint32_t *sup = NULL;
    size_t nsup = 0;
    if (kvr_list_superseded(io, dir, &sup, &nsup) == KV_OK)
        for (size_t i = 0; i < nsup; i++) {
            char nm[KV_NAME_MAX];
            kv_dir_name(nm, sizeof nm, KV_FILE_SEG, sup[i], 0);
            names_add(&rep->other_files, nm);
        }
    free(sup);
    rep->listed = 1;
    names_sort(&rep->torn_files);
    names_sort(&rep->discarded_files);
    names_sort(&rep->orig_files);
    names_sort(&rep->salvage_files);
    names_sort(&rep->compact_files);
    names_sort(&rep->orphan_files);
    names_sort(&rep->other_files);
    names_sort(&rep->repl_files);
    if (rep->nhints > 1) qsort(rep->hints, rep->nhints, sizeof *rep->hints, cmp_hint);
    return KV_OK;
}

/* Size in bytes of dir/name, 0 if it cannot be read. */
static uint64_t file_size(const kv_io *io, const kv_path *path)
{
    uint64_t size = 0;
    int fd = io->open(io->ctx, path->s, KV_O_RDONLY);
    if (fd >= 0) {
        if (io->fsize(io->ctx, fd, &size) < 0) size = 0;
        io->close(io->ctx, fd);
    }
    return size;
}

/* Scans segment i (rep->segs[i]) with recovery's reader and apply rule,
 * rebuilds and checks its hint file. Returns KV_OK, or the segment's error
 * (also in s->err and rep->err). */
static kv_status check_segment(const kv_io *io, const char *dir, cctx *c, size_t i)
{
    fsck_report *rep = c->rep;
    fsck_segment *s = &rep->segs[i];
    kv_path path;
    kv_dir_path(&path, dir, KV_FILE_SEG, s->id, 0);
    c->seg = s;
    c->seg_index = i;
    s->seq_before = c->rp.max_seq;
    if (c->progress) c->progress(c->parg, i, rep->nsegs, c->done_before, c->total);
    kvr_scan_result res = {0};
    fsck_hint *hint = find_hint(rep, s->id);
    uint8_t *segbuf = NULL;
    c->hb = hint ? kvr_hint_builder_new(s->id) : NULL; /* the hint is rebuilt by this same scan */
    c->hb_err = 0;
    /* The buffer is kept until the queued puts and deletes, which point
     * into it, are applied. */
    kv_status st = kvr_scan_file(io, path.s, s->id, on_record, on_problem, c, &res, &segbuf);
    kvr_replay_flush(&c->rp);
    if (st == KV_OK && c->rp.err) c->err = c->rp.err;
    if (st == KV_OK && c->err) st = c->err;
    if (hint)
        hint->state = check_hint(io, dir, rep, hint, s, st == KV_OK ? segbuf : NULL, res.file_size,
                                 c->hb_err ? NULL : c->hb);
    else if (!s->newest)
        rep->sealed_without_hint++;
    kvr_hint_builder_free(c->hb);
    c->hb = NULL;
    free(segbuf);
    if (st != KV_OK) {
        s->err = st;
        set_error(rep, st, "cannot read", path.s);
    } else {
        s->bytes = res.file_size;
    }
    return st;
}

/* After the scans: the size of every superseded hint file, and the bad
 * hint files counted as problems. */
static void count_hints(const kv_io *io, const char *dir, fsck_report *rep)
{
    for (size_t i = 0; i < rep->nhints; i++) {
        fsck_hint *h = &rep->hints[i];
        if (h->state == FSCK_HINT_SUPERSEDED) {
            kv_path path;
            kv_dir_join(&path, dir, h->name);
            h->bytes = file_size(io, &path);
        }
        if (h->state >= FSCK_HINT_DAMAGED) {
            rep->problems++;
            rep->by_kind[FSCK_HINT]++;
        }
    }
}

kv_status fsck_check(const kv_io *io, const char *dir, uint64_t now_ms, fsck_progress_fn progress, void *parg,
                     fsck_report *rep)
{
    memset(rep, 0, sizeof *rep);
    uint32_t *ids = NULL;
    size_t n = 0;
    if (list_directory(io, dir, rep, &ids, &n) != KV_OK) {
        free(ids);
        return rep->err;
    }
    rep->segs = calloc(n ? n : 1, sizeof *rep->segs);
    kv_keydir *kd = kv_keydir_new();
    if (!rep->segs || !kd) {
        free(ids);
        kv_keydir_free(kd);
        set_error(rep, ENOMEM, "out of memory checking", dir);
        return rep->err;
    }
    rep->nsegs = n;
    /* Sizes first, for the progress total (a failure shows up below). */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        fsck_segment *s = &rep->segs[i];
        kv_path path;
        s->id = ids[i];
        kv_dir_name(s->name, sizeof s->name, KV_FILE_SEG, s->id, 0);
        s->newest = (i + 1 == n);
        kv_dir_path(&path, dir, KV_FILE_SEG, s->id, 0);
        s->bytes = file_size(io, &path);
        total += s->bytes;
    }
    free(ids);

    cctx c = {.rep = rep, .progress = progress, .parg = parg, .total = total};
    kvr_replay_init(&c.rp, kd, now_ms);
    uint64_t headers = 0;
    for (size_t i = 0; i < rep->nsegs; i++) {
        fsck_segment *s = &rep->segs[i];
        if (check_segment(io, dir, &c, i) == ENOMEM) break;
        rep->log_bytes += s->bytes;
        headers += s->bytes < KV_SEG_HEADER_SIZE ? s->bytes : KV_SEG_HEADER_SIZE;
        c.done_before += s->bytes;
    }
    if (progress) progress(parg, rep->nsegs, rep->nsegs, total, total);
    count_hints(io, dir, rep);
    rep->records = c.rp.records;
    rep->batches = c.rp.batches;
    rep->entries = c.rp.entries;
    rep->tombstones = c.rp.tombstones;
    rep->expired = c.rp.expired;
    rep->max_seq = c.rp.max_seq;
    rep->live_keys = kv_keydir_count(kd);
    rep->live_bytes = kv_keydir_loc_bytes(kd);
    kv_keydir_free(kd);
    if (rep->err == KV_OK) agree_with_recovery(io, dir, now_ms, rep);
    uint64_t used = rep->live_bytes + headers + rep->unwritten;
    rep->dead_bytes = rep->log_bytes > used ? rep->log_bytes - used : 0;
    return rep->err;
}

void fsck_report_free(fsck_report *rep)
{
    for (size_t i = 0; i < rep->nsegs; i++) free(rep->segs[i].problems);
    free(rep->segs);
    names_free(&rep->torn_files);
    names_free(&rep->discarded_files);
    names_free(&rep->orig_files);
    names_free(&rep->salvage_files);
    names_free(&rep->compact_files);
    names_free(&rep->orphan_files);
    names_free(&rep->other_files);
    names_free(&rep->repl_files);
    free(rep->hints);
    rep->hints = NULL;
    rep->nhints = 0;
    rep->segs = NULL;
    rep->nsegs = 0;
}

/* ---- salvage ---- */
