#include "kvr_reader.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *kvr_reason_str(kvr_reason r)
{
    switch (r) {
    case KVR_SEG_HEADER_SHORT: return "segment shorter than its header";
    case KVR_SEG_HEADER_BAD: return "segment header magic, checksum or id mismatch";
    case KVR_HEADER_SHORT: return "incomplete record header";
    case KVR_HEADER_BAD: return "record header checksum or field mismatch";
    case KVR_PAST_EOF: return "record runs past end of file";
    case KVR_CRC_MISMATCH: return "record checksum mismatch";
    case KVR_ZERO_FILL: return "zero-filled region";
    case KVR_SEQ_ORDER: return "sequence number does not increase";
    case KVR_TRAILER_BAD: return "segment trailer or commit mark does not match the segment";
    case KVR_AFTER_TRAILER: return "bytes after the segment trailer";
    case KVR_PREV_MISSING: return "the segment this one names as its predecessor is missing";
    case KVR_PREV_SIZE: return "sealed segment is not the size the next segment recorded (truncated, emptied or grown)";
    case KVR_NO_TRAILER: return "sealed segment has no trailer (truncated or emptied)";
    case KVR_NO_SUCCESSOR: return "segment is sealed but the segment after it is missing";
    case KVR_ORPHAN_HINT: return "hint file whose segment is missing";
    case KVR_UNWRITTEN: return "unwritten zero-filled space at end of file";
    }
    return "unknown problem";
}

int kvr_reason_is_missing_data(kvr_reason r)
{
    return r == KVR_PREV_MISSING || r == KVR_PREV_SIZE || r == KVR_NO_TRAILER || r == KVR_NO_SUCCESSOR ||
           r == KVR_ORPHAN_HINT;
}

uint64_t kvr_zero_tail(const uint8_t *buf, uint64_t from, uint64_t len)
{
    while (len > from && buf[len - 1] == 0) len--;
    return len;
}

/*
 * Where the walk gets a segment's bytes. Every byte the walk looks at is
 * asked for as a contiguous range [off, off + n) of the segment, and the
 * pointer it gets is good until the next request that the bytes in view
 * cannot satisfy (a refill; gen counts them). A memory buffer has the
 * whole segment in view, so for it a request is two comparisons and no
 * copy. A file has a window of `step` bytes in view, refilled with one
 * pread starting at the offset asked for; it grows past `step` only for a
 * request that needs more (one record), and shrinks back afterwards.
 */
typedef struct src {
    const uint8_t *view; /* bytes [view_off, view_off + view_len) of the segment */
    uint64_t view_off, view_len;
    uint64_t len;  /* segment size in bytes */
    uint64_t step; /* bytes a refill reads when less is needed: the window */
    uint64_t gen;  /* refills so far */
    const kv_io *io; /* NULL for a memory buffer */
    int fd;
    uint8_t *buf;    /* the window's memory */
    uint64_t cap, peak;
    kvr_window_fn on_move;
    void *arg;
    kv_status err; /* sticky: the first I/O error or ENOMEM ends the walk */
} src;

static void src_init_mem(src *s, const uint8_t *buf, uint64_t len)
{
    memset(s, 0, sizeof *s);
    s->view = buf;
    s->view_len = s->len = s->step = len;
}

static void src_init_fd(src *s, const kv_io *io, int fd, uint64_t len, size_t window, kvr_window_fn on_move,
                        void *arg)
{
    memset(s, 0, sizeof *s);
    s->len = len;
    s->step = window == 0 ? KVR_WINDOW_DEFAULT : window < KVR_WINDOW_MIN ? KVR_WINDOW_MIN : window;
    s->io = io;
    s->fd = fd;
    s->on_move = on_move;
    s->arg = arg;
}

/* The refill of a file's window, out of the inline path. The caller of
 * an on_move hook may still hold pointers into the old bytes: it is told
 * before they change, buffer included. */
static __attribute__((noinline)) const uint8_t *src_fill(src *s, uint64_t off, uint64_t need, uint64_t *avail)
{
    assert(s->io && off + need <= s->len);
    if (!s->io && !s->err) s->err = EINVAL; /* a memory buffer has every byte in view */
    if (s->err) return NULL;
    uint64_t n = need > s->step ? need : s->step;
    if (n > s->len - off) n = s->len - off;
    if (s->view_len && s->on_move) s->on_move(s->arg, s->view_off, s->view_len);
    s->view_len = 0;
    s->gen++;
    uint64_t base = s->step < s->len ? s->step : s->len;
    uint64_t want = n > base ? n : base;
    if (s->cap < n || (s->cap > base && n <= base)) {
        free(s->buf);
        s->cap = 0;
        s->buf = want <= SIZE_MAX ? malloc((size_t)want) : NULL;
        if (!s->buf) {
            s->err = ENOMEM;
            return NULL;
        }
        s->cap = want;
        if (want > s->peak) s->peak = want;
    }
    int r = kv_io_read_full(s->io, s->fd, s->buf, (size_t)n, off);
    if (r < 0) {
        s->err = -r;
        return NULL;
    }
    s->view = s->buf;
    s->view_off = off;
    s->view_len = n;
    *avail = n;
    return s->buf;
}

/* Bytes [off, off + need) of the segment (off + need <= len), and in
 * *avail how many bytes from off are in view (at least need). NULL on an
 * error (s->err): a read's errno, or ENOMEM. */
static inline const uint8_t *src_peek(src *s, uint64_t off, uint64_t need, uint64_t *avail)
{
    uint64_t in = off - s->view_off; /* wraps when off < view_off: then out of view */
    if (off >= s->view_off && in + need <= s->view_len) {
        *avail = s->view_len - in;
        return s->view + in;
    }
    return src_fill(s, off, need, avail);
}

/* Bytes [end - *got, end) of the segment, 1 <= *got <= max: what is in
 * view before end, or a window's worth read backwards from end. */
static const uint8_t *src_peek_back(src *s, uint64_t end, uint64_t max, uint64_t *got)
{
    if (end > s->view_off && end - s->view_off <= s->view_len) {
        uint64_t n = end - s->view_off;
        *got = n < max ? n : max;
        return s->view + (n - *got);
    }
    uint64_t n = max < s->step ? max : s->step, avail;
    *got = n;
    return src_fill(s, end - n, n, &avail);
}

static int all_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* 1 if segment bytes [off, off + n) are all zero; 0 if not, or on error. */
static int src_all_zero(src *s, uint64_t off, uint64_t n)
{
    while (n > 0) {
        uint64_t avail;
        const uint8_t *p = src_peek(s, off, 1, &avail);
        if (!p) return 0;
        if (avail > n) avail = n;
        if (!all_zero(p, avail)) return 0;
        off += avail;
        n -= avail;
    }
    return 1;
}

/* kvr_zero_tail over a source, backwards a window at a time. */
static uint64_t src_zero_tail(src *s, uint64_t from, uint64_t end)
{
    while (end > from) {
        uint64_t n;
        const uint8_t *p = src_peek_back(s, end, end - from, &n);
        if (!p) break;
        for (; n > 0 && p[n - 1] == 0; n--) end--;
        if (n > 0) break;
    }
    return end;
}

/* Cheap tests on a candidate header before any CRC is computed: most
 * offsets of a bad region fail here. left: segment bytes from p on. */
static int plausible_header(const uint8_t *p, uint64_t left)
{
    if (left < KV_REC_HEADER_SIZE) return 0;
    uint8_t type = p[12];
    if (type < KV_REC_PUT || type > KV_REC_SEAL || p[13] != 0 || p[14] != 0 || p[15] != 0) return 0;
    uint32_t len = kv_get_u32(p + 8);
    return len >= KV_REC_HEADER_SIZE && len <= left;
}

/* 1 if a whole valid top-level record starts at off, r filled. *p, *avail
 * are the bytes in view at off; when the record is longer than them but
 * fits in the segment, they are refilled to hold it all. */
static int record_at(src *s, uint64_t off, const uint8_t **p, uint64_t *avail, kv_record *r)
{
    kv_status d = kv_record_decode(*p, *avail, r);
    uint64_t left = s->len - off;
    kv_record h;
    if (d == KV_NEED_MORE && *avail < left && *avail >= KV_REC_HEADER_SIZE &&
        kv_record_decode_header(*p, &h) == KV_OK && h.len <= left) {
        *p = src_peek(s, off, h.len, avail);
        if (!*p) return 0;
        d = kv_record_decode(*p, *avail, r);
    }
    return d == KV_OK && r->rflags == 0;
}

/* kvr_find_next_record over a source. Returns len as well on an error. */
static uint64_t src_find_next(src *s, uint64_t from)
{
    uint64_t len = s->len;
    for (uint64_t o = from; o + KV_REC_HEADER_SIZE <= len;) {
        uint64_t avail;
        const uint8_t *p = src_peek(s, o, KV_REC_HEADER_SIZE, &avail);
        if (!p) return len;
        uint64_t gen = s->gen, left = len - o;
        /* Every offset whose header bytes are in view, without asking the
         * source again until a candidate needs more: offsets o + i. */
        uint64_t i = 0, n = avail - (KV_REC_HEADER_SIZE - 1);
        for (; i < n; i++) {
            if (!plausible_header(p + i, left - i)) continue;
            const uint8_t *q = p + i;
            uint64_t qa = avail - i;
            kv_record r;
            if (record_at(s, o + i, &q, &qa, &r)) return o + i;
            if (s->err) return len;
            if (s->gen != gen) {
                i++;
                break;
            }
        }
        o += i;
    }
    return len;
}

uint64_t kvr_find_next_record(const uint8_t *buf, uint64_t len, uint64_t from)
{
    src s;
    src_init_mem(&s, buf, len);
    return src_find_next(&s, from);
}

/* One step of the walk through a segment: the valid record or the bad
 * region that starts at pos. */
typedef struct item {
    int is_record;
    uint64_t off, len; /* record, or region [off, off + len) */
    kvr_reason why;
    kv_record rec;
} item;

/* Fills *it for pos. Returns 0, or -1 on an error (s->err). */
static int step(src *s, uint64_t pos, item *it)
{
    uint64_t left = s->len - pos, avail;
    const uint8_t *p = src_peek(s, pos, left < KV_REC_HEADER_SIZE ? left : KV_REC_HEADER_SIZE, &avail);
    if (!p) return -1;
    it->off = pos;
    if (record_at(s, pos, &p, &avail, &it->rec)) {
        it->is_record = 1;
        it->len = it->rec.len;
        return 0;
    }
    if (s->err) return -1;
    /* A bad record at pos: delimit the region (see the header). */
    it->is_record = 0;
    kv_record h;
    uint64_t end;
    if (left < KV_REC_HEADER_SIZE) {
        it->why = all_zero(p, left) ? KVR_ZERO_FILL : KVR_HEADER_SHORT;
        end = s->len;
    } else if (kv_record_decode_header(p, &h) == KV_OK && h.rflags == 0) {
        /* The header checked out, so its length is trusted. */
        it->why = h.len > left ? KVR_PAST_EOF : KVR_CRC_MISMATCH;
        end = h.len > left ? s->len : pos + h.len;
    } else {
        end = src_find_next(s, pos + 1);
        it->why = src_all_zero(s, pos, end - pos) ? KVR_ZERO_FILL : KVR_HEADER_BAD;
        if (s->err) return -1;
    }
    it->len = end - pos;
    return 0;
}

/* The state of one walk. Problems are held back until the walk reaches
 * the next valid record (or the end), so each can say whether one
 * follows: exactly the records this walk yields, found in one linear
 * pass. */
typedef struct walk {
    src *s;
    uint32_t seg;
    const char *path;
    const kvr_scan_hooks *h;
    kvr_scan_result res;
    kvr_problem *held;
    size_t nheld, cap_held;
    uint64_t last_seq;
} walk;

/* Room for two more held problems (a bad region may split in two).
 * Returns 0 or ENOMEM. */
static kv_status hold_room(walk *w)
{
    if (w->nheld + 2 <= w->cap_held) return KV_OK;
    size_t nc = w->cap_held ? w->cap_held * 2 : 8;
    kvr_problem *nh = realloc(w->held, nc * sizeof *nh);
    if (!nh) return ENOMEM;
    w->held = nh;
    w->cap_held = nc;
    return KV_OK;
}

static void report(walk *w, kvr_problem *p)
{
    w->res.problems++;
    if (w->h->on_problem) w->h->on_problem(w->h->arg, p);
}

/* Reports what was held back, each followed by a valid record or not. */
static void release_held(walk *w, int record)
{
    for (size_t i = 0; i < w->nheld; i++) {
        if (w->held[i].reason != KVR_SEQ_ORDER) w->held[i].valid_after = record;
        report(w, &w->held[i]);
    }
    w->nheld = 0;
}

/* The segment header, and where records begin. Returns KV_OK, KV_VERSION,
 * ENOMEM or an I/O error; *pos = len when there is nothing more to walk. */
static kv_status walk_header(walk *w, uint64_t *pos)
{
    src *s = w->s;
    uint64_t avail;
    *pos = KV_SEG_HEADER_SIZE;
    if (s->len < KV_SEG_HEADER_SIZE) {
        if (s->len > 0) {
            kvr_problem p = {w->path, w->seg, 0, s->len, KVR_SEG_HEADER_SHORT, 0};
            report(w, &p);
        }
        *pos = s->len;
        return KV_OK;
    }
    const uint8_t *p = src_peek(s, 0, KV_SEG_HEADER_SIZE, &avail);
    if (!p) return s->err;
    kv_status st = kv_seg_header_parse(p, w->seg, &w->res.hdr);
    if (st == KV_VERSION) return st;
    if (st == KV_OK) {
        w->res.valid_end = KV_SEG_HEADER_SIZE;
        w->res.header_ok = 1;
        return KV_OK;
    }
    uint64_t next = src_find_next(s, KV_SEG_HEADER_SIZE);
    if (s->err) return s->err;
    if (hold_room(w) != KV_OK) return ENOMEM;
    w->held[w->nheld++] = (kvr_problem){w->path, w->seg, 0, next, KVR_SEG_HEADER_BAD, 0};
    *pos = next;
    return KV_OK;
}

/* 1 for a valid mark that does not describe this segment. The count is
 * checked only where every record before the trailer was read: damage
 * before it already is a problem. */
static int mark_mismatch(const walk *w, const item *it)
{
    const kv_record *r = &it->rec;
    if (r->type == KV_REC_SEAL)
        return r->expire_ms != it->off || (w->res.problems == 0 && w->nheld == 0 && r->flags != w->res.records);
    return r->expire_ms < KV_SEG_HEADER_SIZE || r->expire_ms > it->off;
}

/* Counts a valid record and hands it on. Returns 1 when the walk ends
 * here: the callback asked to stop, or the trailer ends the segment. */
static int yield(walk *w, const item *it, int mark)
{
    kvr_scan_result *res = &w->res;
    res->valid_end = it->off + it->len;
    if (mark) {
        res->marks++;
        res->mark_end = it->off + it->len;
        if (it->rec.type == KV_REC_COMMIT) res->group_start = it->rec.expire_ms;
    } else {
        w->last_seq = kv_record_last_seq(&it->rec);
        res->records++;
        res->last_seq = w->last_seq;
    }
    if (w->h->on_record && w->h->on_record(w->h->arg, w->seg, it->off, &it->rec)) {
        res->stopped = 1;
        return 1;
    }
    if (!mark || it->rec.type != KV_REC_SEAL) return 0;
    /* The trailer ends the segment: kvd never writes past it. */
    res->sealed = 1;
    res->seal_off = it->off;
    res->seal_seq = it->rec.seq;
    uint64_t end = it->off + it->len;
    if (end < w->s->len) {
        kvr_problem p = {w->path, w->seg, end, w->s->len - end, KVR_AFTER_TRAILER, 0};
        report(w, &p);
    }
    return 1;
}

/* Holds the bad region *it (or the out-of-order record). The zero bytes
 * that end the file are a region of their own. Returns 0, ENOMEM or an
 * I/O error. */
static kv_status hold_region(walk *w, const item *it, int out_of_order)
{
    if (hold_room(w) != KV_OK) return ENOMEM;
    uint64_t end = it->off + it->len, z = end;
    if (!out_of_order && end == w->s->len)
        z = it->why == KVR_ZERO_FILL ? it->off : src_zero_tail(w->s, it->off, end);
    if (w->s->err) return w->s->err;
    /* An out-of-order record is itself valid: a region that something
     * valid follows. */
    if (z > it->off)
        w->held[w->nheld++] = (kvr_problem){w->path, w->seg, it->off, z - it->off,
                                            out_of_order ? KVR_SEQ_ORDER : it->why, out_of_order};
    if (z < end) w->held[w->nheld++] = (kvr_problem){w->path, w->seg, z, end - z, KVR_UNWRITTEN, 0};
    return KV_OK;
}

static kv_status walk_records(walk *w, uint64_t pos)
{
    src *s = w->s;
    for (;;) {
        item it;
        int at_end = pos >= s->len;
        if (!at_end && step(s, pos, &it) < 0) return s->err;
        int record = !at_end && it.is_record;
        int mark = record && kv_record_is_mark(&it.rec);
        /* A mark repeats the last sequence number assigned; a data record
         * must go above it. */
        int out_of_order =
            record && w->res.records > 0 && (mark ? it.rec.seq < w->last_seq : it.rec.seq <= w->last_seq);
        if (mark && !out_of_order && mark_mismatch(w, &it)) {
            /* A region of its own, which whatever follows delimits. */
            it.is_record = 0;
            it.why = KVR_TRAILER_BAD;
            record = mark = 0;
        }
        if (!at_end && (!record || out_of_order)) {
            kv_status st = hold_region(w, &it, out_of_order);
            if (st != KV_OK) return st;
            pos = it.off + it.len;
            if (!out_of_order) continue;
        }
        release_held(w, record);
        if (at_end) return KV_OK;
        if (out_of_order) continue; /* reported; not yielded */
        pos = it.off + it.len;
        if (yield(w, &it, mark)) return KV_OK;
    }
}

/* The walk over any source; fills *out (may be NULL). */
static kv_status scan(src *s, uint32_t seg, const char *path, const kvr_scan_hooks *h, kvr_scan_result *out)
{
    walk w = {.s = s, .seg = seg, .path = path, .h = h};
    w.res.file_size = s->len;
    uint64_t pos;
    kv_status st = walk_header(&w, &pos);
    if (st == KV_OK) st = walk_records(&w, pos);
    free(w.held);
    w.res.window_peak = s->peak;
    if (out) *out = w.res;
    return st;
}

kv_status kvr_scan_buffer(const uint8_t *buf, uint64_t len, uint32_t seg, const char *path,
                          kvr_record_fn on_record, kvr_problem_fn on_problem, void *arg, kvr_scan_result *out)
{
    src s;
    src_init_mem(&s, buf, len);
    kvr_scan_hooks h = {on_record, on_problem, NULL, arg};
    return scan(&s, seg, path, &h, out);
}

kv_status kvr_scan_fd(const kv_io *io, int fd, uint64_t size, uint32_t seg, const char *path, size_t window_bytes,
                      const kvr_scan_hooks *hooks, kvr_scan_result *out)
{
    static const kvr_scan_hooks none;
    if (size > KVR_MAX_SEGMENT_BYTES) return EFBIG;
    if (!hooks) hooks = &none;
    src s;
    src_init_fd(&s, io, fd, size, window_bytes, hooks->on_window, hooks->arg);
    kv_status st = scan(&s, seg, path, hooks, out);
    /* The last window goes too: the caller is told, as for every move. */
    if (s.view_len && s.on_move) s.on_move(s.arg, s.view_off, s.view_len);
    free(s.buf);
    return st;
}

kv_status kvr_zero_tail_fd(const kv_io *io, int fd, uint64_t from, uint64_t len, size_t window_bytes,
                           uint64_t *zero_from)
{
    src s;
    src_init_fd(&s, io, fd, len, window_bytes, NULL, NULL);
    *zero_from = from < len ? src_zero_tail(&s, from, len) : len;
    free(s.buf);
    return s.err;
}

kv_status kvr_scan_file(const kv_io *io, const char *path, uint32_t seg, kvr_record_fn on_record,
                        kvr_problem_fn on_problem, void *arg, kvr_scan_result *out, uint8_t **buf_out)
{
    if (buf_out) {
        uint8_t *buf;
        uint64_t len;
        *buf_out = NULL;
        int r = kv_io_read_file(io, path, KVR_MAX_SEGMENT_BYTES, &buf, &len);
        if (r < 0) return -r;
        kv_status st = kvr_scan_buffer(buf, len, seg, path, on_record, on_problem, arg, out);
        if (st == KV_OK)
            *buf_out = buf;
        else
            free(buf);
        return st;
    }
    int fd = io->open(io->ctx, path, KV_O_RDONLY);
    if (fd < 0) return -fd;
    uint64_t size;
    int r = io->fsize(io->ctx, fd, &size);
    kv_status st = r < 0 ? -r : KV_OK;
    kvr_scan_hooks h = {on_record, on_problem, NULL, arg};
    if (st == KV_OK) st = kvr_scan_fd(io, fd, size, seg, path, 0, &h, out);
    io->close(io->ctx, fd);
    return st;
}
