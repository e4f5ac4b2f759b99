#include "kvr_recover.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_record.h"
#include "kvr_hint.h"
#include "kvr_replay.h"

const char *kvr_mode_name(kvr_mode m)
{
    switch (m) {
    case KVR_TOLERATE_TAIL: return "tolerate-tail";
    case KVR_ABSOLUTE: return "absolute";
    case KVR_POINT_IN_TIME: return "point-in-time";
    case KVR_SKIP_CORRUPT: return "skip-corrupt";
    }
    return "unknown";
}

kv_status kvr_mode_parse(const char *s, kvr_mode *m)
{
    for (int i = KVR_TOLERATE_TAIL; i <= KVR_SKIP_CORRUPT; i++)
        if (!strcmp(s, kvr_mode_name((kvr_mode)i))) {
            *m = (kvr_mode)i;
            return KV_OK;
        }
    return KV_INVALID;
}

typedef struct id_list {
    uint32_t *ids;
    size_t n, cap;
    int oom;
} id_list;

static int collect_segment(void *arg, const char *name)
{
    id_list *l = arg;
    uint32_t id;
    if (!kv_seg_parse_name(name, &id)) return 0;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        uint32_t *ni = realloc(l->ids, nc * sizeof *ni);
        if (!ni) {
            l->oom = 1;
            return 1;
        }
        l->ids = ni;
        l->cap = nc;
    }
    l->ids[l->n++] = id;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* replaces_from of segment id's header, or 0 if it has none or cannot be
 * read (then it is an ordinary segment, and recovery judges its bytes). */
static uint32_t segment_replaces(const kv_io *io, const char *dir, uint32_t id)
{
    char name[32], path[4096];
    kv_seg_name(name, sizeof name, id);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = io->open(io->ctx, path, KV_O_RDONLY);
    if (fd < 0) return 0;
    uint8_t h[KV_SEG_HEADER_SIZE];
    uint32_t from = 0;
    if (kv_io_read_full(io, fd, h, sizeof h, 0) == 0 && kv_seg_header_decode(h, id, NULL) == KV_OK)
        from = kv_seg_header_replaces(h);
    io->close(io->ctx, fd);
    return from;
}

/* Lists every segment id (sorted) and marks those a compaction output
 * supersedes: a segment x is superseded when a segment y > x replaces
 * [from, y] with from <= x. */
static kv_status list_all(const kv_io *io, const char *dir, uint32_t **ids, size_t *n, uint8_t **superseded)
{
    id_list l = {0};
    int r = io->list_dir(io->ctx, dir, collect_segment, &l);
    if (l.oom) r = -ENOMEM;
    if (r < 0) {
        free(l.ids);
        return -r;
    }
    if (l.n > 1) qsort(l.ids, l.n, sizeof *l.ids, cmp_u32);
    uint8_t *sup = calloc(l.n ? l.n : 1, 1);
    if (!sup) {
        free(l.ids);
        return ENOMEM;
    }
    uint32_t min_from = UINT32_MAX;
    for (size_t i = l.n; i-- > 0;) {
        if (l.ids[i] >= min_from) sup[i] = 1;
        uint32_t from = sup[i] ? 0 : segment_replaces(io, dir, l.ids[i]);
        if (from != 0 && from < min_from) min_from = from;
    }
    *ids = l.ids;
    *n = l.n;
    *superseded = sup;
    return KV_OK;
}

static kv_status select_ids(const kv_io *io, const char *dir, uint32_t **ids, size_t *n, int want_superseded)
{
    uint32_t *all;
    size_t nall;
    uint8_t *sup;
    kv_status st = list_all(io, dir, &all, &nall, &sup);
    if (st != KV_OK) return st;
    size_t k = 0;
    for (size_t i = 0; i < nall; i++)
        if (!!sup[i] == !!want_superseded) all[k++] = all[i];
    free(sup);
    *ids = all;
    *n = k;
    return KV_OK;
}

kv_status kvr_list_segments(const kv_io *io, const char *dir, uint32_t **ids, size_t *n)
{
    return select_ids(io, dir, ids, n, 0);
}

kv_status kvr_list_superseded(const kv_io *io, const char *dir, uint32_t **ids, size_t *n)
{
    return select_ids(io, dir, ids, n, 1);
}

/* State of one recovery while segments are scanned. */
typedef struct rctx {
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
    kvh_builder *hb;     /* the hint of the segment being scanned, or NULL */
    int hb_failed;       /* building it ran out of memory: write none */
    uint64_t seg_problems; /* problems reported in the segment being scanned */
    uint64_t seg_records;  /* data records applied from it */
    int newest_hinted;     /* the newest segment has a hint file: it was sealed,
                              so a segment after it is missing */
} rctx;

static void on_problem(void *arg, const kvr_problem *p);

static int on_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    rctx *c = arg;
    if (c->stop || c->rp.err) return 1;
    if (kv_record_is_mark(r)) {
        if (c->hb && kvh_builder_add(c->hb, off, r) != KV_OK) c->hb_failed = 1;
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
    if (c->hb && kvh_builder_add(c->hb, off, r) != KV_OK) c->hb_failed = 1;
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

int kvr_unused_name(const kv_io *io, const char *base, char *out, size_t cap)
{
    for (unsigned n = 0; n < 1000; n++) {
        if (n == 0)
            snprintf(out, cap, "%s", base);
        else
            snprintf(out, cap, "%s.%u", base, n);
        int fd = io->open(io->ctx, out, KV_O_RDONLY);
        if (fd == -ENOENT) return 0;
        if (fd < 0) return fd;
        io->close(io->ctx, fd);
    }
    return -EEXIST;
}

/* Truncates path to len bytes and fdatasyncs it. Returns 0 or -errno. */
static int truncate_file(const kv_io *io, const char *path, uint64_t len)
{
    int fd = io->open(io->ctx, path, KV_O_RDWR);
    if (fd < 0) return fd;
    int r = io->ftruncate(io->ctx, fd, len);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    io->close(io->ctx, fd);
    return r;
}

/* Saves bytes [off, len) of segment `id` beside it as
 * "<segment>.<off>.torn" (".N" added if that exists: nothing saved before
 * is overwritten), makes that durable, then truncates the segment to off.
 * Returns KV_OK or an errno; on error the segment is unchanged or its cut
 * bytes are already saved. */
static kv_status cut_segment(const kv_io *io, const char *dir, uint32_t id, const uint8_t *buf, uint64_t len,
                             uint64_t off, char *msg, size_t msgcap)
{
    char name[32], seg_path[4096], base[4160], torn_path[4200];
    kv_seg_name(name, sizeof name, id);
    snprintf(seg_path, sizeof seg_path, "%s/%s", dir, name);
    snprintf(base, sizeof base, "%s.%" PRIu64 ".torn", seg_path, off);
    int fd, r = kvr_unused_name(io, base, torn_path, sizeof torn_path);
    if (r < 0) goto fail;
    fd = io->open(io->ctx, torn_path, KV_O_RDWR | KV_O_CREAT | KV_O_EXCL);
    if (fd < 0) {
        r = fd;
        goto fail;
    }
    r = kv_io_write_full(io, fd, buf + off, len - off, 0);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    io->close(io->ctx, fd);
    if (r == 0) r = io->fsync_dir(io->ctx, dir);
    if (r < 0) goto fail;
    r = truncate_file(io, seg_path, off);
    if (r < 0) goto fail;
    return KV_OK;
fail:
    snprintf(msg, msgcap, "cannot cut torn tail of %s at offset %" PRIu64 ": %s", seg_path, off, kv_strerror(-r));
    return -r;
}

/* Cuts segment `id` to len bytes (dropping only zero bytes: nothing to
 * save) and makes that durable. Returns KV_OK or an errno. */
static kv_status trim_segment(const kv_io *io, const char *dir, uint32_t id, uint64_t len, char *msg, size_t msgcap)
{
    char name[32], seg_path[4096];
    kv_seg_name(name, sizeof name, id);
    snprintf(seg_path, sizeof seg_path, "%s/%s", dir, name);
    int r = truncate_file(io, seg_path, len);
    if (r < 0) {
        snprintf(msg, msgcap, "cannot cut the unwritten space of %s at offset %" PRIu64 ": %s", seg_path, len,
                 kv_strerror(-r));
        return -r;
    }
    return KV_OK;
}

/* Point-in-time: renames segments ids[from..n) to "<segment>.discarded"
 * (".N" added if taken), newest first, and fsyncs the directory. Done
 * before the cut, so a crash in between never leaves a log with a hole:
 * the later segments are gone from the log before the earlier one is
 * shortened. */
static kv_status discard_segments(const kv_io *io, const char *dir, const uint32_t *ids, size_t from, size_t n,
                                  kvr_report *rep)
{
    for (size_t j = n; j-- > from;) {
        char name[32], path[4096], base[4128], to[4160];
        kv_seg_name(name, sizeof name, ids[j]);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        snprintf(base, sizeof base, "%s.discarded", path);
        int r = kvr_unused_name(io, base, to, sizeof to);
        if (r == 0) r = io->rename(io->ctx, path, to);
        if (r < 0) {
            snprintf(rep->message, sizeof rep->message, "cannot set %s aside: %s", path, kv_strerror(-r));
            return -r;
        }
        rep->discarded_segments++;
        /* Its hint file goes with it: a hint without its segment is
         * evidence of a lost segment to the next recovery. */
        char hname[32], hpath[4096], hbase[4128], hto[4160];
        kvh_name(hname, sizeof hname, ids[j]);
        snprintf(hpath, sizeof hpath, "%s/%s", dir, hname);
        snprintf(hbase, sizeof hbase, "%s.discarded", hpath);
        int hfd = io->open(io->ctx, hpath, KV_O_RDONLY);
        if (hfd >= 0) {
            io->close(io->ctx, hfd);
            r = kvr_unused_name(io, hbase, hto, sizeof hto);
            if (r == 0) r = io->rename(io->ctx, hpath, hto);
            if (r < 0) {
                snprintf(rep->message, sizeof rep->message, "cannot set %s aside: %s", hpath, kv_strerror(-r));
                return -r;
            }
        }
    }
    if (from < n) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) {
            snprintf(rep->message, sizeof rep->message, "cannot fsync %s: %s", dir, kv_strerror(-r));
            return -r;
        }
    }
    return KV_OK;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A version 2 segment that a hint describes must end with its trailer,
 * which counts the hint's records: a hint is never trusted for a segment
 * that lost it. kvh_matches_segment has compared the hint's copy of the
 * last record's header with the segment's bytes at its offset, so for a
 * segment with records the copy is checked here without reading; an empty
 * one's trailer is read through fd. Returns KV_OK (also for version 1,
 * which has none), KV_CORRUPT or an errno. */
static kv_status check_trailer(const kv_io *io, int fd, uint32_t id, const kvh_header *h)
{
    kv_seg_header sh;
    if (kv_seg_header_parse(h->seg_header, id, &sh) != KV_OK) return KV_CORRUPT;
    if (sh.version < 2) return KV_OK;
    if (h->seg_size < KV_SEG_HEADER_SIZE + KV_MARK_SIZE) return KV_CORRUPT;
    uint64_t at = h->seg_size - KV_MARK_SIZE;
    uint8_t m[KV_MARK_SIZE];
    if (h->records) {
        memcpy(m, h->last_header, sizeof m);
    } else {
        int r = kv_io_read_full(io, fd, m, sizeof m, at);
        if (r == -ENODATA) return KV_CORRUPT;
        if (r < 0) return -r;
    }
    kv_record t;
    if (kv_record_decode(m, sizeof m, &t) != KV_OK || t.type != KV_REC_SEAL || t.expire_ms != at ||
        t.flags != h->records)
        return KV_CORRUPT;
    return KV_OK;
}

/* Loads sealed segment `id` from its hint file into the key directory, as
 * scanning it would. Returns 1 when loaded (*size set), 0 when the segment
 * must be scanned instead: no hint file, or one that is damaged, stale or
 * out of sequence order (counted as rejected). Nothing is applied from a
 * hint that fails any check. */
static int load_hint(const kv_io *io, const char *dir, uint32_t id, rctx *c, uint64_t *size)
{
    char name[32], path[4096];
    kvh_name(name, sizeof name, id);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *buf = NULL;
    uint64_t len = 0;
    int r = kv_io_read_file(io, path, KVH_MAX_FILE_BYTES, &buf, &len);
    if (r < 0) {
        if (r != -ENOENT) c->rep->hints_rejected++;
        return 0;
    }
    kvh_header h;
    kv_status st = kvh_decode(buf, len, id, &h);
    if (st == KV_OK) {
        kv_seg_name(name, sizeof name, id);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = io->open(io->ctx, path, KV_O_RDONLY);
        st = fd < 0 ? -fd : kvh_matches_segment(io, fd, &h);
        if (st == KV_OK) st = check_trailer(io, fd, id, &h);
        if (fd >= 0) io->close(io->ctx, fd);
    }
    if (st == KV_OK) st = kvr_replay_hint(&c->rp, id, buf, len, &h);
    free(buf);
    if (c->rp.err) return 1; /* out of memory while applying: the caller stops */
    if (st != KV_OK) { /* KV_CORRUPT: out of order; the scan reports where */
        c->rep->hints_rejected++;
        return 0;
    }
    c->rep->hints_used++;
    *size = h.seg_size;
    return 1;
}

/* An upper bound on the keys the hint files of the sealed segments in
 * ids[0, n - 1) hold (their entry counts, each capped by what the file's
 * size allows), to size the key directory once. Only an estimate: the
 * files are checked when they are loaded. */
static size_t hinted_keys(const kv_io *io, const char *dir, const uint32_t *ids, size_t n)
{
    uint64_t total = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        char name[32], path[4096];
        kvh_name(name, sizeof name, ids[i]);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = io->open(io->ctx, path, KV_O_RDONLY);
        if (fd < 0) continue;
        uint8_t h[32];
        uint64_t size = 0;
        if (io->fsize(io->ctx, fd, &size) == 0 && kv_io_read_full(io, fd, h, sizeof h, 0) == 0 &&
            memcmp(h, KVH_MAGIC, 4) == 0) {
            uint64_t k = kv_get_u64(h + 24), most = size / KVH_ENTRY_SIZE;
            total += k < most ? k : most;
        }
        io->close(io->ctx, fd);
    }
    return total > SIZE_MAX ? SIZE_MAX : (size_t)total;
}

typedef struct name_list {
    char **v;
    size_t n, cap;
    int oom;
} name_list;

static int collect_hint_name_raw(void *arg, const char *name)
{
    name_list *l = arg;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) {
            l->oom = 1;
            return 1;
        }
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(name))) {
        l->oom = 1;
        return 1;
    }
    l->n++;
    return 0;
}

static int collect_hint_name(void *arg, const char *name)
{
    uint32_t id;
    size_t nl = strlen(name);
    int tmp = nl > 9 && !strcmp(name + nl - 9, ".hint.tmp");
    if (!tmp && !kvh_parse_name(name, &id)) return 0;
    return collect_hint_name_raw(arg, name);
}

/* What recovery reads of a segment before it loads it: its size and, if
 * valid, its header. */
typedef struct seg_peek {
    int header_ok;
    kv_seg_header hdr;
    uint64_t size;
} seg_peek;

static void peek_segment(const kv_io *io, const char *path, uint32_t id, seg_peek *pk)
{
    memset(pk, 0, sizeof *pk);
    int fd = io->open(io->ctx, path, KV_O_RDONLY);
    if (fd < 0) return;
    uint8_t h[KV_SEG_HEADER_SIZE];
    if (io->fsize(io->ctx, fd, &pk->size) == 0 && pk->size >= KV_SEG_HEADER_SIZE &&
        kv_io_read_full(io, fd, h, sizeof h, 0) == 0 && kv_seg_header_parse(h, id, &pk->hdr) == KV_OK)
        pk->header_ok = 1;
    io->close(io->ctx, fd);
}

/* Appends the trailer a crash in the middle of a rotation left unwritten
 * to sealed segment `id` of `size` bytes, and makes it durable. */
static kv_status complete_rotation(const kv_io *io, const char *dir, uint32_t id, uint64_t size, uint64_t seq,
                                   uint64_t records, char *msg, size_t msgcap)
{
    char name[32], path[4096];
    kv_seg_name(name, sizeof name, id);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t m[KV_MARK_SIZE];
    kv_mark_encode(m, KV_REC_SEAL, seq, size, (uint32_t)records);
    int fd = io->open(io->ctx, path, KV_O_RDWR);
    int r = fd;
    if (fd >= 0) {
        r = kv_io_write_full(io, fd, m, sizeof m, size);
        if (r == 0) r = io->fdatasync(io->ctx, fd);
        io->close(io->ctx, fd);
    }
    if (r < 0) {
        snprintf(msg, msgcap, "cannot write the trailer of %s: %s", path, kv_strerror(-r));
        return -r;
    }
    return KV_OK;
}

/* The ranges compaction outputs replace, [from, id - 1] each, from the
 * live segments' headers: a hint file of an id in one of them belongs to a
 * superseded segment. */
static int superseded_id(const kv_io *io, const char *dir, const uint32_t *ids, size_t n, uint32_t hid)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] <= hid) continue;
        uint32_t from = segment_replaces(io, dir, ids[i]);
        if (from && from <= hid) return 1;
    }
    return 0;
}

static int collect_compact_name(void *arg, const char *name)
{
    uint32_t id;
    if (!kv_parse_id_name(name, ".seg.compact", &id)) return 0;
    return collect_hint_name_raw(arg, name);
}

/* Removes the outputs of compactions a crash interrupted before their
 * rename ("NNNNNNNNNN.seg.compact"): never part of the log (the segments
 * they were made from are all still there), up to 2 GiB each. */
static kv_status remove_compact_leftovers(const kv_io *io, const char *dir, kvr_report *rep)
{
    name_list l = {0};
    io->list_dir(io->ctx, dir, collect_compact_name, &l);
    kv_status st = l.oom ? ENOMEM : KV_OK;
    for (size_t i = 0; i < l.n; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, l.v[i]);
        int r = st == KV_OK ? io->unlink(io->ctx, path) : 0;
        if (r < 0 && r != -ENOENT) {
            st = -r;
            snprintf(rep->message, sizeof rep->message, "cannot remove %s: %s", path, kv_strerror(st));
        } else if (r == 0 && st == KV_OK) {
            rep->compact_leftovers++;
        }
        free(l.v[i]);
    }
    free(l.v);
    if (st == KV_OK && rep->compact_leftovers) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) st = -r;
    }
    return st;
}

/* Unlinks the segments a compaction output replaces, left by a crash
 * between its rename and its unlinks (their live records are all in the
 * output), and fsyncs the directory. */
static kv_status remove_superseded(const kv_io *io, const char *dir, kvr_report *rep)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    kv_status st = kvr_list_superseded(io, dir, &ids, &n);
    for (size_t i = 0; st == KV_OK && i < n; i++) {
        char name[32], path[4096];
        kv_seg_name(name, sizeof name, ids[i]);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int r = io->unlink(io->ctx, path);
        if (r < 0) {
            st = -r;
            snprintf(rep->message, sizeof rep->message, "cannot remove superseded %s: %s", path, kv_strerror(st));
        }
    }
    if (st == KV_OK && n > 0) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) st = -r;
    }
    free(ids);
    return st;
}

static void refuse_message(kvr_report *rep, const rctx *c, const char *dir, const char *path)
{
    const kvr_problem *p = &c->first;
    if (p->reason == KVR_ORPHAN_HINT) {
        char name[32];
        kv_seg_name(name, sizeof name, p->seg);
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

kv_status kvr_recover(const kv_io *io, const char *dir, kvr_mode mode, unsigned flags, uint64_t now_ms,
                      kv_keydir *kd, kvr_report *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->mode = mode;
    int dry = (flags & KVR_DRY_RUN) != 0;
    uint64_t t0 = now_us();
    uint32_t *ids = NULL;
    size_t n = 0;
    kv_status st = kvr_list_segments(io, dir, &ids, &n);
    if (st != KV_OK) {
        if (!rep->message[0])
            snprintf(rep->message, sizeof rep->message, "cannot list data directory %s: %s", dir, kv_strerror(st));
        return st;
    }
    rep->segs = calloc(n ? n : 1, sizeof *rep->segs);
    if (!rep->segs) {
        free(ids);
        return ENOMEM;
    }
    rctx c = {.mode = mode, .kd = kd, .rep = rep};
    kvr_replay_init(&c.rp, kd, now_ms);
    /* Hint files of scanned segments are written as .hint.tmp and renamed
     * only once recovery knows it opens: a refused start changes nothing. */
    uint32_t *pending = calloc(n ? n : 1, sizeof *pending);
    size_t npending = 0;
    if (!pending) {
        free(ids);
        return ENOMEM;
    }
    /* Hint files: an unfinished one (.hint.tmp) or one of a superseded
     * segment is removed; one whose segment is missing is evidence of a
     * lost segment, and one of the newest segment shows that it was
     * sealed, so a segment after it is missing. Neither is ever removed. */
    {
        name_list l = {0};
        io->list_dir(io->ctx, dir, collect_hint_name, &l);
        for (size_t k = 0; k < l.n; k++) {
            uint32_t hid;
            int is_hint = kvh_parse_name(l.v[k], &hid);
            int live = is_hint && bsearch(&hid, ids, n, sizeof *ids, cmp_u32);
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", dir, l.v[k]);
            if (!is_hint || (!live && superseded_id(io, dir, ids, n, hid))) {
                if (!dry && (flags & KVR_HINTS_WRITE)) io->unlink(io->ctx, path);
            } else if (live) {
                if (hid == ids[n - 1]) c.newest_hinted = 1; /* reported with the newest segment, below */
            } else {
                kvr_problem p = {NULL, hid, 0, 0, KVR_ORPHAN_HINT, 0};
                on_problem(&c, &p);
                if (c.fatal && !rep->message[0]) refuse_message(rep, &c, dir, path);
            }
            free(l.v[k]);
        }
        free(l.v);
        c.tail.newest = 0;
        if (c.fatal) {
            free(ids);
            free(pending);
            rep->elapsed_us = now_us() - t0;
            return KV_CORRUPT;
        }
        c.stop = 0; /* point-in-time: nothing to stop at in a hint file */
    }
    if (flags & KVR_HINTS_READ) kv_keydir_reserve(kd, hinted_keys(io, dir, ids, n));
    size_t i;
    for (i = 0; i < n; i++) {
        char name[32], path[4096];
        kv_seg_name(name, sizeof name, ids[i]);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        c.tail.newest = (i + 1 == n);
        c.tail.marked = 0;
        c.tail.window = 0;
        c.tail.torn_from = 0;
        c.have_cut = 0;
        c.have_unwritten = 0;
        c.seg_problems = 0;
        c.seg_records = 0;
        kvr_segment_info *si = &rep->segs[rep->nsegs];
        si->id = ids[i];
        seg_peek pk;
        peek_segment(io, path, ids[i], &pk);
        si->version = pk.header_ok ? pk.hdr.version : 0;
        si->replaces = pk.header_ok ? pk.hdr.replaces : 0;
        /* The chain: a version 2 header names the segment before it and
         * that segment's size when this one was created. */
        if (pk.header_ok && pk.hdr.version >= 2) {
            uint32_t want = i > 0 ? ids[i - 1] : 0;
            const kvr_segment_info *prev = i > 0 ? &rep->segs[rep->nsegs - 1] : NULL;
            kvr_problem p = {path, ids[i], 0, KV_SEG_HEADER_SIZE, KVR_PREV_MISSING, 0};
            char prev_path[4096];
            int bad = pk.hdr.prev_id != want;
            if (!bad && prev && prev->replaces == 0 && pk.hdr.prev_end != 0 &&
                pk.hdr.prev_end != prev->size) {
                /* The damage is the predecessor's: it ends at prev->size,
                 * not where this header says it ended when it was sealed. */
                char pname[32];
                kv_seg_name(pname, sizeof pname, prev->id);
                snprintf(prev_path, sizeof prev_path, "%s/%s", dir, pname);
                p = (kvr_problem){prev_path, prev->id, prev->size, 0, KVR_PREV_SIZE, 0};
                bad = 1;
            }
            if (bad) {
                on_problem(&c, &p); /* missing data: never a torn tail */
                if (c.fatal) {
                    refuse_message(rep, &c, dir, p.path);
                    st = KV_CORRUPT;
                    break;
                }
                if (c.stop) { /* point-in-time: the log ends before this segment */
                    if (!dry) st = discard_segments(io, dir, ids, i, n, rep);
                    break;
                }
            }
        }
        /* A rotation writes the next segment's header, naming this one
         * and its size with the trailer (E), before it writes the trailer:
         * if the newest segment is still empty and names this one, the
         * trailer may be missing or torn, and belongs at E - 44. If the
         * newest has no valid header, the crash came before the trailer
         * was begun. */
        int window = 0, window_no_end = 0;
        if (!c.tail.newest && i + 2 == n && pk.header_ok && pk.hdr.version >= 2) {
            char nname[32], npath[4096];
            kv_seg_name(nname, sizeof nname, ids[i + 1]);
            snprintf(npath, sizeof npath, "%s/%s", dir, nname);
            seg_peek nx;
            peek_segment(io, npath, ids[i + 1], &nx);
            if (nx.size <= KV_SEG_HEADER_SIZE && !nx.header_ok) {
                window = window_no_end = 1;
            } else if (nx.size == KV_SEG_HEADER_SIZE && nx.hdr.version >= 2 && nx.hdr.prev_id == ids[i] &&
                       nx.hdr.prev_end >= KV_SEG_HEADER_SIZE + KV_MARK_SIZE) {
                window = 1;
                c.tail.window = 1;
                c.tail.torn_from = nx.hdr.prev_end - KV_MARK_SIZE;
            }
        }
        uint64_t hsize = 0;
        if (!c.tail.newest && (flags & KVR_HINTS_READ) && load_hint(io, dir, ids[i], &c, &hsize)) {
            if (c.rp.err) {
                st = c.rp.err;
                snprintf(rep->message, sizeof rep->message, "out of memory while loading %s", path);
                break;
            }
            si->size = hsize;
            si->hint = 1;
            si->sealed = si->version >= 2;
            rep->nsegs++;
            rep->segments++;
            rep->log_bytes += hsize;
            continue;
        }
        uint8_t *buf = NULL;
        uint64_t blen = 0;
        kvr_scan_result res;
        memset(&res, 0, sizeof res);
        c.hb_failed = 0;
        c.hb = !c.tail.newest && !dry && (flags & KVR_HINTS_WRITE) ? kvh_builder_new(ids[i]) : NULL;
        int rr = kv_io_read_file(io, path, KVR_MAX_SEGMENT_BYTES, &buf, &blen);
        st = rr < 0 ? -rr : KV_OK;
        if (st == KV_OK && c.tail.newest && pk.header_ok && pk.hdr.version >= 2) {
            if (kvr_tail_find(&c.tail, buf, blen, ids[i])) { /* the whole last group is torn */
                c.have_cut = 1;
                c.cut_off = c.tail.torn_from;
            }
        }
        if (st == KV_OK) st = kvr_scan_buffer(buf, blen, ids[i], path, on_record, on_problem, &c, &res);
        kvr_replay_flush(&c.rp); /* before buf, which the queued keys point into, goes */
        si->records = c.seg_records;
        si->sealed = res.sealed;
        /* Version 2: a sealed segment ends with its trailer; the newest
         * never does (a rotation writes the trailer only once the next
         * segment exists). */
        if (res.sealed || !(window_no_end ? c.seg_problems == 0 : res.valid_end == c.tail.torn_from)) window = 0;
        /* No more than the trailer's 44 bytes may follow: the write of a
         * trailer is all the rotation had begun. What they hold does not
         * matter (a torn write can leave any bytes, and a trailer carries no
         * data): they are saved beside the segment, and the trailer written
         * whole. */
        if (window && !window_no_end && blen > (uint64_t)c.tail.torn_from + KV_MARK_SIZE) window = 0;
        if (st == KV_OK && !c.stop && !c.rp.err && pk.header_ok && pk.hdr.version >= 2) {
            if (!c.tail.newest && !res.sealed && !window) {
                kvr_problem p = {path, ids[i], blen, 0, KVR_NO_TRAILER, 0};
                on_problem(&c, &p);
            } else if (c.tail.newest && (res.sealed || c.newest_hinted)) {
                /* At its trailer; or, without one, at its start (its hint). */
                kvr_problem p = {path, ids[i], res.sealed ? blen : 0, 0, KVR_NO_SUCCESSOR, 0};
                on_problem(&c, &p);
            }
        }
        /* Only a segment proven whole gets a hint: version 1 scanned
         * cleanly, or version 2 with its trailer. */
        int whole = pk.header_ok && (pk.hdr.version == 1 || res.sealed);
        if (c.hb && whole && st == KV_OK && !c.rp.err && !c.hb_failed && !c.seg_problems && !c.stop && !window) {
            uint8_t *hint;
            size_t hlen;
            int r = kvh_builder_finish(c.hb, buf, res.file_size, &hint, &hlen) == KV_OK
                        ? kvh_write_tmp(io, dir, ids[i], hint, hlen)
                        : -ENOMEM;
            if (r == 0) {
                free(hint);
                pending[npending++] = ids[i];
                si->hint = 1;
            } else {
                if (r != -ENOMEM) free(hint);
                rep->hints_failed++;
            }
        }
        kvh_builder_free(c.hb);
        c.hb = NULL;
        if (st == KV_VERSION) {
            free(buf);
            snprintf(rep->message, sizeof rep->message,
                     "%s has an on-disk format version this build cannot read (it reads versions %d to %d)", path,
                     KV_FORMAT_VERSION_MIN, KV_FORMAT_VERSION);
            break;
        }
        if (st != KV_OK) {
            free(buf);
            snprintf(rep->message, sizeof rep->message, "cannot read %s: %s", path, kv_strerror(st));
            break;
        }
        if (c.rp.err) {
            free(buf);
            st = c.rp.err;
            snprintf(rep->message, sizeof rep->message, "out of memory while loading %s", path);
            break;
        }
        if (c.fatal) {
            free(buf);
            refuse_message(rep, &c, dir, path);
            st = KV_CORRUPT;
            break;
        }
        uint64_t size = res.file_size;
        if (c.stop && !dry) { /* point-in-time: set the later segments aside first */
            st = discard_segments(io, dir, ids, i + 1, n, rep);
            if (st != KV_OK) {
                free(buf);
                break;
            }
        }
        /* The bytes worth saving end where the trailing zeros begin. A
         * point-in-time stop ends the scan early, before the reader could
         * report them: find them here. */
        uint64_t end = c.have_unwritten ? c.unwritten_off : res.file_size;
        if ((c.tail.newest || c.tail.window) && c.have_cut && !c.have_unwritten && buf && c.cut_off < res.file_size) {
            end = kvr_zero_tail(buf, c.cut_off, res.file_size);
            c.have_unwritten = end < res.file_size;
        }
        if (c.have_cut && c.cut_off < end) {
            if (!dry) st = cut_segment(io, dir, ids[i], buf, end, c.cut_off, rep->message, sizeof rep->message);
            if (st != KV_OK) {
                free(buf);
                break;
            }
            rep->torn_bytes += end - c.cut_off;
            rep->torn_segment = ids[i];
            rep->torn_offset = c.cut_off;
            size = c.cut_off;
        } else if (c.have_unwritten || (c.have_cut && c.cut_off < res.file_size)) {
            uint64_t to = c.have_cut && c.cut_off < end ? c.cut_off : end;
            if (!dry) st = trim_segment(io, dir, ids[i], to, rep->message, sizeof rep->message);
            if (st != KV_OK) {
                free(buf);
                break;
            }
            size = to;
        }
        if (c.have_unwritten) rep->unwritten_bytes += res.file_size - end;
        if (window) { /* the torn trailer is cut and saved above; write it whole */
            if (!dry) {
                st = complete_rotation(io, dir, ids[i], size, c.rp.max_seq, c.seg_records, rep->message,
                                       sizeof rep->message);
                if (st != KV_OK) {
                    free(buf);
                    break;
                }
            }
            size += KV_MARK_SIZE;
            si->sealed = 1;
            rep->rotations_completed++;
        }
        free(buf);
        si->size = size;
        rep->nsegs++;
        rep->segments++;
        rep->log_bytes += size;
        if (c.stop) break; /* point-in-time: nothing after this point is loaded */
    }
    free(ids);
    /* Opening: the hints become real, and what a crash left of a
     * compaction goes. Refused: the hints are unwritten again. */
    for (size_t k = 0; k < npending; k++) {
        if (st != KV_OK) {
            char name[32], path[4200];
            kvh_name(name, sizeof name, pending[k]);
            snprintf(path, sizeof path, "%s/%s.tmp", dir, name);
            io->unlink(io->ctx, path);
        } else if (kvh_commit_tmp(io, dir, pending[k]) == 0) {
            rep->hints_written++;
        } else {
            rep->hints_failed++;
            for (size_t j = 0; j < rep->nsegs; j++)
                if (rep->segs[j].id == pending[k]) rep->segs[j].hint = 0;
        }
    }
    free(pending);
    if (st == KV_OK && !dry) st = remove_superseded(io, dir, rep);
    if (st == KV_OK && !dry) st = remove_compact_leftovers(io, dir, rep);
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

void kvr_report_free(kvr_report *rep)
{
    free(rep->found);
    rep->found = NULL;
    rep->nfound = 0;
    free(rep->segs);
    rep->segs = NULL;
    rep->nsegs = 0;
}

int kvr_report_format(const kvr_report *rep, char *buf, size_t cap)
{
    return snprintf(buf, cap,
                    "recovery (%s): %u segments, %" PRIu64 " records (%" PRIu64 " entries, %" PRIu64
                    " batches, %" PRIu64 " tombstones, %" PRIu64 " expired), %" PRIu64 " keys, %" PRIu64
                    " log bytes, %" PRIu64 " live bytes, %u problems, %" PRIu64 " torn bytes cut, %" PRIu64
                    " unwritten bytes cut, %" PRIu64 " bytes skipped, %u segments discarded, %u loaded from "
                    "hint files (%u rejected, %u written), %.1f ms",
                    kvr_mode_name(rep->mode), rep->segments, rep->records, rep->entries, rep->batches,
                    rep->tombstones, rep->expired, rep->keys, rep->log_bytes, rep->live_bytes, rep->problems,
                    rep->torn_bytes, rep->unwritten_bytes, rep->skipped_bytes, rep->discarded_segments,
                    rep->hints_used, rep->hints_rejected, rep->hints_written, rep->elapsed_us / 1000.0);
}
