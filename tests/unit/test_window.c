/* The windowed reader (kvr_scan_fd): for every segment shape, reading the
 * file through a bounded window gives exactly the calls and the result
 * that kvr_scan_buffer gives for the same bytes, with windows small
 * enough that a refill falls at every possible place (44 bytes, one
 * record header, upwards). Also: a read error ends the scan with its
 * errno, the on_window hook runs while the old bytes are still there, and
 * the window never holds more than max(window, the longest record). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"
#include "kvr_reader.h"
#include "testutil.h"

#define PATH "/seg"

static const size_t windows[] = {44, 45, 64, 100, 4096, 0};
#define NWINDOWS (sizeof windows / sizeof windows[0])

/* ---- building segments ---- */

typedef struct sb {
    uint8_t *b;
    size_t len, cap;
    uint64_t seq;     /* the next sequence number */
    uint32_t data;    /* top-level data records so far */
    size_t group;     /* where the open group began */
    uint32_t ingroup; /* its top-level records */
    size_t largest;   /* the longest record appended, in bytes */
} sb;

static uint8_t *sb_room(sb *s, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->b = realloc(s->b, s->cap);
        ck_assert_ptr_nonnull(s->b);
    }
    return s->b + s->len;
}

static void sb_start(sb *s, uint32_t id, int version)
{
    memset(s, 0, sizeof *s);
    kv_seg_header h = {(uint16_t)version, id, 0, 1700000000000ull, 0, 0};
    kv_seg_header_encode_h(sb_room(s, KV_SEG_HEADER_SIZE), &h);
    s->len = s->group = KV_SEG_HEADER_SIZE;
    s->seq = 1;
}

static void sb_grew(sb *s, size_t n)
{
    if (n > s->largest) s->largest = n;
    s->len += n;
}

/* Key and value bytes that differ from record to record. */
static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((seed * 131 + i * 7) % 255 + 1); /* never 0 */
}

static size_t encode_kv(uint8_t *out, uint8_t type, uint8_t rflags, uint64_t seq, size_t klen, size_t vlen)
{
    uint8_t *kv = malloc(klen + vlen + 1);
    ck_assert_ptr_nonnull(kv);
    fill(kv, klen, seq);
    fill(kv + klen, vlen, seq + 1000);
    size_t n = kv_record_encode(out, type, rflags, seq, type == KV_REC_PUT ? seq * 10 : 0, type == KV_REC_PUT ? 7 : 0,
                                kv, (uint32_t)klen, kv + klen, (uint32_t)vlen);
    free(kv);
    return n;
}

static size_t sb_put(sb *s, size_t klen, size_t vlen)
{
    size_t at = s->len;
    sb_grew(s, encode_kv(sb_room(s, kv_record_size(klen, vlen)), KV_REC_PUT, 0, s->seq++, klen, vlen));
    s->data++;
    s->ingroup++;
    return at;
}

static size_t sb_del(sb *s, size_t klen)
{
    size_t at = s->len;
    sb_grew(s, encode_kv(sb_room(s, kv_record_size(klen, 0)), KV_REC_TOMBSTONE, 0, s->seq++, klen, 0));
    s->data++;
    s->ingroup++;
    return at;
}

static size_t sb_batch(sb *s, int n, size_t vlen)
{
    size_t at = s->len, body = 0;
    uint8_t *rec = sb_room(s, KV_REC_HEADER_SIZE + (size_t)n * kv_record_size(16, vlen));
    uint64_t first = s->seq;
    for (int i = 0; i < n; i++) {
        uint8_t type = i % 3 == 2 ? KV_REC_TOMBSTONE : KV_REC_PUT;
        body += encode_kv(rec + KV_REC_HEADER_SIZE + body, type, KV_RF_IN_BATCH, s->seq++, 16,
                          type == KV_REC_PUT ? vlen : 0);
    }
    sb_grew(s, kv_record_finish(rec, KV_REC_BATCH, 0, first, 0, (uint32_t)n, 0, (uint32_t)body));
    s->data++;
    s->ingroup++;
    return at;
}

static size_t sb_commit(sb *s)
{
    size_t at = s->len;
    sb_grew(s, kv_mark_encode(sb_room(s, KV_MARK_SIZE), KV_REC_COMMIT, s->seq - 1, s->group, s->ingroup));
    s->group = s->len;
    s->ingroup = 0;
    return at;
}

static size_t sb_seal(sb *s)
{
    size_t at = s->len;
    sb_grew(s, kv_mark_encode(sb_room(s, KV_MARK_SIZE), KV_REC_SEAL, s->seq - 1, s->len, s->data));
    return at;
}

static void sb_zeros(sb *s, size_t n)
{
    memset(sb_room(s, n), 0, n);
    s->len += n;
}

/* A version 2 segment as kvd writes it: groups of puts, tombstones and
 * batches of every size, each ended by its commit mark. */
static void sb_groups(sb *s, int groups)
{
    for (int g = 0; g < groups; g++) {
        sb_put(s, 5 + g % 7, (size_t)(g * 37) % 300);
        if (g % 2) sb_del(s, 9);
        if (g % 3 == 1) sb_batch(s, 1 + g % 4, 20 + g);
        sb_put(s, 0, 0);
        sb_commit(s);
    }
}

/* ---- what a scan does, as bytes ---- */

typedef struct trace {
    uint8_t *b;
    size_t len, cap;
} trace;

static void tr_add(trace *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = (t->len + n) * 2 + 256;
        t->b = realloc(t->b, t->cap);
        ck_assert_ptr_nonnull(t->b);
    }
    memcpy(t->b + t->len, p, n);
    t->len += n;
}

/* The scan's state as the hooks see it. */
typedef struct probe {
    trace t;
    int stop_at;         /* on_record returns 1 at this record (1-based); 0 never */
    int records;
    int keep; /* the bytes stay until on_window: a buffer, or a file scan with the hook */
    /* The last record's bytes, kept by pointer and by copy: they must not
     * change before on_window says the window moves. */
    const uint8_t *kept;
    uint8_t *copy;
    size_t kept_len;
    uint64_t kept_off;
    uint64_t moves;
} probe;

static void keep_check(probe *p)
{
    if (p->kept) ck_assert_msg(memcmp(p->kept, p->copy, p->kept_len) == 0, "record at %llu changed before on_window",
                               (unsigned long long)p->kept_off);
}

static int on_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    probe *p = arg;
    keep_check(p);
    uint64_t f[] = {0x52, seg, off, r->type, r->rflags, r->len, r->seq, r->expire_ms, r->flags, r->klen, r->vlen};
    tr_add(&p->t, f, sizeof f);
    tr_add(&p->t, r->key, r->klen);
    tr_add(&p->t, r->val, r->vlen);
    if (!p->keep) return ++p->records == p->stop_at;
    /* The record's bytes lie before its key: keep the whole record. */
    p->kept = r->key - KV_REC_HEADER_SIZE;
    p->kept_len = r->len;
    p->kept_off = off;
    free(p->copy);
    p->copy = malloc(r->len);
    ck_assert_ptr_nonnull(p->copy);
    memcpy(p->copy, p->kept, r->len);
    return ++p->records == p->stop_at;
}

static void on_problem(void *arg, const kvr_problem *q)
{
    probe *p = arg;
    uint64_t f[] = {0x50, q->seg, q->offset, q->length, (uint64_t)q->reason, (uint64_t)q->valid_after};
    tr_add(&p->t, f, sizeof f);
    ck_assert_str_eq(q->path, PATH);
}

static void on_window(void *arg, uint64_t off, uint64_t len)
{
    probe *p = arg;
    keep_check(p);
    if (p->kept) {
        ck_assert_uint_ge(p->kept_off, off);
        ck_assert_uint_le(p->kept_off + p->kept_len, off + len);
    }
    p->kept = NULL;
    p->moves++;
}

static void probe_free(probe *p)
{
    free(p->t.b);
    free(p->copy);
}

static void tr_result(trace *t, kv_status st, const kvr_scan_result *r)
{
    uint64_t f[] = {0x53,          (uint64_t)st, r->file_size, r->valid_end, r->records,  r->problems,
                    r->stopped,    r->header_ok, r->marks,     r->mark_end,  r->group_start, r->sealed,
                    r->seal_off,   r->seal_seq,  r->last_seq,  r->hdr.version, r->hdr.id,  r->hdr.replaces,
                    r->hdr.created_ms, r->hdr.prev_id, r->hdr.prev_end};
    tr_add(t, f, sizeof f);
}

static kv_memfs *fs;

static void setup(void)
{
    fs = kv_memfs_new();
}

static void teardown(void)
{
    kv_memfs_free(fs);
}

static void scan_buffer(const uint8_t *b, size_t len, uint32_t id, int stop_at, probe *p, kvr_scan_result *res)
{
    memset(p, 0, sizeof *p);
    p->stop_at = stop_at;
    p->keep = 1;
    kv_status st = kvr_scan_buffer(b, len, id, PATH, on_record, on_problem, p, res);
    tr_result(&p->t, st, res);
    ck_assert_uint_eq(res->window_peak, 0);
}

/* Scans the file PATH through io with window w; hook: set on_window. */
static kv_status scan_file(const kv_io *io, size_t len, uint32_t id, size_t w, int hook, int stop_at, probe *p,
                           kvr_scan_result *res)
{
    memset(p, 0, sizeof *p);
    p->stop_at = stop_at;
    p->keep = hook;
    const kv_io *mio = kv_memfs_io(fs);
    int fd = mio->open(mio->ctx, PATH, KV_O_RDONLY);
    ck_assert_int_ge(fd, 0);
    kvr_scan_hooks h = {on_record, on_problem, hook ? on_window : NULL, p};
    memset(res, 0xa5, sizeof *res);
    kv_status st = kvr_scan_fd(io, fd, len, id, PATH, w, &h, res);
    ck_assert_int_eq(mio->close(mio->ctx, fd), 0);
    tr_result(&p->t, st, res);
    return st;
}

/* The heart of every test: the buffer scan and the windowed scan of the
 * same bytes agree call for call, through every window, with and
 * without the hook, and the window stays within its bound. largest: the
 * longest record in the segment (0: none longer than the smallest
 * window). */
static void check_same_stop(const uint8_t *b, size_t len, uint32_t id, size_t largest, int stop_at)
{
    probe ref, got;
    kvr_scan_result rr, gr;
    scan_buffer(b, len, id, stop_at, &ref, &rr);
    ck_assert_int_eq(kv_memfs_write(fs, PATH, b, len), 0);
    for (size_t i = 0; i < NWINDOWS; i++) {
        for (int hook = 0; hook < 2; hook++) {
            scan_file(kv_memfs_io(fs), len, id, windows[i], hook, stop_at, &got, &gr);
            ck_assert_msg(got.t.len == ref.t.len && memcmp(got.t.b, ref.t.b, ref.t.len) == 0,
                          "window %zu (hook %d): the calls or the result differ from kvr_scan_buffer's", windows[i],
                          hook);
            size_t w = windows[i] ? windows[i] : KVR_WINDOW_DEFAULT;
            size_t bound = w > largest ? w : largest;
            ck_assert_uint_le(gr.window_peak, bound);
            ck_assert_uint_le(gr.window_peak, len);
            probe_free(&got);
        }
    }
    probe_free(&ref);
}

static void check_same(const uint8_t *b, size_t len, uint32_t id, size_t largest)
{
    check_same_stop(b, len, id, largest, 0);
}

/* The reasons the buffer scan reports, in order, for a test to state
 * which shape it built. */
static int reasons(const uint8_t *b, size_t len, uint32_t id, kvr_reason *out, int cap)
{
    probe p;
    kvr_scan_result r;
    scan_buffer(b, len, id, 0, &p, &r);
    int n = 0;
    for (size_t o = 0; o < p.t.len;) {
        uint64_t tag;
        memcpy(&tag, p.t.b + o, sizeof tag);
        if (tag == 0x52) {
            uint64_t f[11];
            memcpy(f, p.t.b + o, sizeof f);
            o += sizeof f + f[9] + f[10];
        } else if (tag == 0x50) {
            uint64_t f[6];
            memcpy(f, p.t.b + o, sizeof f);
            if (n < cap) out[n] = (kvr_reason)f[4];
            n++;
            o += sizeof f;
        } else {
            break;
        }
    }
    probe_free(&p);
    return n;
}

/* ---- clean segments ---- */

START_TEST(clean_version_1_segment_reads_the_same_through_every_window)
{
    sb s;
    sb_start(&s, 3, 1);
    for (int i = 0; i < 40; i++) i % 5 == 4 ? sb_del(&s, 8) : sb_put(&s, 1 + i % 9, (size_t)(i * 13) % 200);
    check_same(s.b, s.len, 3, s.largest);
    ck_assert_int_eq(reasons(s.b, s.len, 3, NULL, 0), 0);
    free(s.b);
}
END_TEST

START_TEST(clean_version_2_segment_with_batches_marks_and_trailer_reads_the_same)
{
    sb s;
    sb_start(&s, 7, 2);
    sb_groups(&s, 30);
    sb_seal(&s);
    check_same(s.b, s.len, 7, s.largest);
    ck_assert_int_eq(reasons(s.b, s.len, 7, NULL, 0), 0);
    free(s.b);
}
END_TEST

START_TEST(on_record_asking_to_stop_stops_the_same)
{
    sb s;
    sb_start(&s, 1, 2);
    sb_groups(&s, 10);
    for (int k = 1; k < 20; k += 3) check_same_stop(s.b, s.len, 1, s.largest, k);
    free(s.b);
}
END_TEST

START_TEST(empty_short_and_header_only_files_read_the_same)
{
    sb s;
    sb_start(&s, 1, 2);
    sb_put(&s, 3, 3);
    for (size_t len = 0; len <= s.len; len++) check_same(s.b, len, 1, s.largest);
    free(s.b);
}
END_TEST

/* ---- damage ---- */

START_TEST(torn_tail_reads_the_same)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 6);
    size_t last = sb_put(&s, 12, 700);
    /* Every cut inside the last record: the header torn, then the body. */
    for (size_t len = last + 1; len < s.len; len += (len - last < 50 ? 1 : 61)) check_same(s.b, len, 2, s.largest);
    kvr_reason r[4];
    ck_assert_int_eq(reasons(s.b, last + 17, 2, r, 4), 1); /* ends in klen's low byte, not 0 */
    ck_assert_int_eq(r[0], KVR_HEADER_SHORT);
    ck_assert_int_eq(reasons(s.b, last + 100, 2, r, 4), 1);
    ck_assert_int_eq(r[0], KVR_PAST_EOF);
    free(s.b);
}
END_TEST

START_TEST(bad_record_crc_mid_log_reads_the_same)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 4);
    size_t bad = sb_put(&s, 10, 500);
    sb_commit(&s);
    sb_groups(&s, 4);
    s.b[bad + KV_REC_HEADER_SIZE + 200] ^= 0x10; /* a value byte: the header still checks out */
    check_same(s.b, s.len, 2, s.largest);
    kvr_reason r[4];
    ck_assert_int_eq(reasons(s.b, s.len, 2, r, 4), 1);
    ck_assert_int_eq(r[0], KVR_CRC_MISMATCH);
    free(s.b);
}
END_TEST

START_TEST(corrupted_record_header_then_resync_reads_the_same)
{
    sb s;
    sb_start(&s, 2, 1);
    for (int i = 0; i < 10; i++) sb_put(&s, 6, 90);
    size_t bad = sb_put(&s, 6, 400);
    for (int i = 0; i < 10; i++) sb_put(&s, 6, 90);
    s.b[bad + 20] ^= 0x01; /* vlen: the header check fails, no length is trusted */
    check_same(s.b, s.len, 2, s.largest);
    kvr_reason r[2];
    ck_assert_int_eq(reasons(s.b, s.len, 2, r, 2), 1);
    ck_assert_int_eq(r[0], KVR_HEADER_BAD);
    free(s.b);
}
END_TEST

START_TEST(corrupted_segment_header_then_resync_reads_the_same)
{
    sb s;
    sb_start(&s, 4, 2);
    sb_groups(&s, 5);
    s.b[9] ^= 0xff; /* the id */
    check_same(s.b, s.len, 4, s.largest);
    kvr_reason r[2];
    ck_assert_int_eq(reasons(s.b, s.len, 4, r, 2), 1);
    ck_assert_int_eq(r[0], KVR_SEG_HEADER_BAD);
    /* A header that names another segment. */
    s.b[9] ^= 0xff;
    check_same(s.b, s.len, 5, s.largest);
    free(s.b);
}
END_TEST

START_TEST(zero_filled_region_mid_file_reads_the_same)
{
    sb s;
    sb_start(&s, 2, 1);
    for (int i = 0; i < 8; i++) sb_put(&s, 6, 120);
    size_t hole = sb_put(&s, 6, 300);
    for (int i = 0; i < 8; i++) sb_put(&s, 6, 120);
    memset(s.b + hole, 0, kv_record_size(6, 300)); /* a page that never reached the disk */
    check_same(s.b, s.len, 2, s.largest);
    kvr_reason r[2];
    ck_assert_int_eq(reasons(s.b, s.len, 2, r, 2), 1);
    ck_assert_int_eq(r[0], KVR_ZERO_FILL);
    free(s.b);
}
END_TEST

START_TEST(zeros_at_the_end_are_unwritten_through_every_window)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 5);
    size_t end = s.len;
    sb_zeros(&s, 9000); /* preallocated space, longer than the small windows */
    check_same(s.b, s.len, 2, s.largest);
    kvr_reason r[2];
    ck_assert_int_eq(reasons(s.b, s.len, 2, r, 2), 1);
    ck_assert_int_eq(r[0], KVR_UNWRITTEN);
    /* A torn record before the zeros: the region keeps its non-zero bytes. */
    s.len = end;
    sb_put(&s, 8, 600);
    memset(s.b + s.len - 300, 0, 300);
    sb_zeros(&s, 5000);
    check_same(s.b, s.len, 2, s.largest);
    ck_assert_int_eq(reasons(s.b, s.len, 2, r, 2), 2);
    ck_assert_int_eq(r[0], KVR_CRC_MISMATCH);
    ck_assert_int_eq(r[1], KVR_UNWRITTEN);
    /* Garbage that the resync finds no record after, then zeros. */
    s.len = end;
    memset(sb_room(&s, 30), 0x77, 30);
    s.len += 30;
    sb_zeros(&s, 3000);
    check_same(s.b, s.len, 2, s.largest);
    free(s.b);
}
END_TEST

START_TEST(sequence_going_back_bad_trailer_and_bytes_after_it_read_the_same)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 3);
    s.seq -= 2; /* a record that does not go above the one before */
    sb_put(&s, 4, 40);
    s.seq += 2;
    sb_commit(&s);
    size_t seal = sb_seal(&s);
    sb_groups(&s, 1); /* after the trailer */
    check_same(s.b, s.len, 2, s.largest);
    /* A trailer whose offset is wrong, followed by more records. */
    kv_mark_encode(s.b + seal, KV_REC_SEAL, s.seq, seal + 1, 0);
    check_same(s.b, s.len, 2, s.largest);
    free(s.b);
}
END_TEST

/* ---- records against the window ---- */

START_TEST(records_longer_than_the_window_grow_it_to_the_record_only)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_put(&s, 10, 20);
    sb_put(&s, 100, 70000); /* longer than the 4096-byte window */
    sb_batch(&s, 30, 3000);  /* a batch longer than it too */
    sb_commit(&s);
    sb_put(&s, 10, 20);
    sb_commit(&s);
    sb_seal(&s);
    check_same(s.b, s.len, 2, s.largest);
    ck_assert_int_eq(kv_memfs_write(fs, PATH, s.b, s.len), 0);
    for (size_t i = 0; i < NWINDOWS; i++) {
        probe p;
        kvr_scan_result r;
        ck_assert_int_eq(scan_file(kv_memfs_io(fs), s.len, 2, windows[i], 1, 0, &p, &r), KV_OK);
        size_t w = windows[i] ? windows[i] : KVR_WINDOW_DEFAULT;
        /* Exactly as large as it had to be: the window, or the longest record. */
        ck_assert_uint_eq(r.window_peak, w < s.largest ? s.largest : (w < s.len ? w : s.len));
        probe_free(&p);
    }
    /* Damaged, its length still trusted: the window grows to check it. */
    s.b[KV_SEG_HEADER_SIZE + kv_record_size(10, 20) + 5000] ^= 4;
    check_same(s.b, s.len, 2, s.largest);
    free(s.b);
}
END_TEST

START_TEST(flipped_bit_at_every_byte_reads_the_same)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_put(&s, 3, 10);
    sb_batch(&s, 2, 5);
    sb_commit(&s);
    sb_del(&s, 4);
    sb_commit(&s);
    sb_seal(&s);
    uint8_t *b = malloc(s.len);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < s.len; i++) {
        memcpy(b, s.b, s.len);
        b[i] ^= (uint8_t)(1u << (i % 8));
        check_same(b, s.len, 2, s.largest);
    }
    free(b);
    free(s.b);
}
END_TEST

START_TEST(random_garbage_reads_the_same)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 12; round++) {
        sb s;
        sb_start(&s, 2, 1 + round % 2);
        sb_groups(&s, 3);
        size_t n = 200 + (size_t)round * 311;
        uint8_t *g = sb_room(&s, n);
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Sparse garbage leaves many plausible-looking headers. */
            g[i] = round % 3 == 0 ? (uint8_t)x : (x & 7) == 0 ? (uint8_t)(x >> 8) : 0;
        }
        s.len += n;
        sb_groups(&s, 2);
        if (round % 4 == 3) memset(s.b, 0x5a, KV_SEG_HEADER_SIZE); /* no header either */
        check_same(s.b, s.len, 2, s.largest);
        free(s.b);
    }
}
END_TEST

/* ---- the file path's own behaviour ---- */

START_TEST(read_error_ends_the_scan_with_eio)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 12);
    sb_zeros(&s, 500);
    ck_assert_int_eq(kv_memfs_write(fs, PATH, s.b, s.len), 0);
    probe ref, got;
    kvr_scan_result rr, gr;
    scan_buffer(s.b, s.len, 2, 0, &ref, &rr);
    kv_faultio *f = kv_faultio_new(kv_memfs_io(fs));
    ck_assert_ptr_nonnull(f);
    kv_faultio_arm(f, 0, 0, 0);
    ck_assert_int_eq(scan_file(kv_faultio_io(f), s.len, 2, 100, 1, 0, &got, &gr), KV_OK);
    uint64_t reads = kv_faultio_calls(f);
    ck_assert_uint_gt(reads, 10);
    probe_free(&got);
    for (uint64_t n = 1; n <= reads; n++) {
        kv_faultio_arm(f, n, EIO, 0);
        ck_assert_int_eq(scan_file(kv_faultio_io(f), s.len, 2, 100, 1, 0, &got, &gr), EIO);
        ck_assert(kv_faultio_fired(f));
        /* What was called before the error is what the buffer scan called
         * first (the result record aside). */
        ck_assert_uint_le(got.t.len, ref.t.len);
        size_t calls = got.t.len - 21 * sizeof(uint64_t);
        ck_assert(memcmp(got.t.b, ref.t.b, calls) == 0);
        probe_free(&got);
    }
    kv_faultio_free(f);
    /* A file shorter than the size given: the read comes up short. */
    ck_assert_int_eq(scan_file(kv_memfs_io(fs), s.len + 100, 2, 64, 0, 0, &got, &gr), ENODATA);
    probe_free(&got);
    probe_free(&ref);
    free(s.b);
}
END_TEST

START_TEST(window_hook_runs_before_the_bytes_change)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 20);
    sb_seal(&s);
    ck_assert_int_eq(kv_memfs_write(fs, PATH, s.b, s.len), 0);
    probe p;
    kvr_scan_result r;
    /* on_window checks that the last record, kept by pointer since its
     * on_record, still holds its bytes, and lies in the window that moves. */
    ck_assert_int_eq(scan_file(kv_memfs_io(fs), s.len, 2, 64, 1, 0, &p, &r), KV_OK);
    ck_assert_uint_gt(p.moves, 20);
    ck_assert_int_eq(r.sealed, 1);
    probe_free(&p);
    /* The whole file fits in the default window: it goes once, when the
     * scan ends. */
    ck_assert_int_eq(scan_file(kv_memfs_io(fs), s.len, 2, 0, 1, 0, &p, &r), KV_OK);
    ck_assert_uint_eq(p.moves, 1);
    ck_assert_uint_eq(r.window_peak, s.len);
    probe_free(&p);
    free(s.b);
}
END_TEST

START_TEST(zero_tail_of_a_file_matches_kvr_zero_tail)
{
    uint8_t b[3000];
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)(i % 5 ? 0 : i);
    memset(b + 1200, 0, 1800);
    b[1500] = 9;
    ck_assert_int_eq(kv_memfs_write(fs, PATH, b, sizeof b), 0);
    const kv_io *io = kv_memfs_io(fs);
    int fd = io->open(io->ctx, PATH, KV_O_RDONLY);
    ck_assert_int_ge(fd, 0);
    const uint64_t ends[] = {0, 1, 5, 1200, 1501, 1502, 2000, 3000};
    for (size_t i = 0; i < NWINDOWS; i++)
        for (size_t e = 0; e < sizeof ends / sizeof ends[0]; e++)
            for (uint64_t from = 0; from <= ends[e]; from += 97) {
                uint64_t z = 12345;
                ck_assert_int_eq(kvr_zero_tail_fd(io, fd, from, ends[e], windows[i], &z), KV_OK);
                ck_assert_uint_eq(z, kvr_zero_tail(b, from, ends[e]));
            }
    uint64_t z;
    ck_assert_int_eq(kvr_zero_tail_fd(io, fd, 10, 4000, 64, &z), ENODATA);
    ck_assert_int_eq(io->close(io->ctx, fd), 0);
}
END_TEST

START_TEST(scan_file_reads_through_the_window_unless_asked_for_the_bytes)
{
    sb s;
    sb_start(&s, 2, 2);
    sb_groups(&s, 8);
    sb_put(&s, 3, 1000);
    ck_assert_int_eq(kv_memfs_write(fs, PATH, s.b, s.len - 10), 0);
    probe ref, a, b;
    kvr_scan_result rr, ra, rb;
    scan_buffer(s.b, s.len - 10, 2, 0, &ref, &rr);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    ck_assert_int_eq(kvr_scan_file(kv_memfs_io(fs), PATH, 2, on_record, on_problem, &a, &ra, NULL), KV_OK);
    tr_result(&a.t, KV_OK, &ra);
    ck_assert(a.t.len == ref.t.len && memcmp(a.t.b, ref.t.b, ref.t.len) == 0);
    ck_assert_uint_eq(ra.window_peak, s.len - 10); /* the default window, cut to the file */
    uint8_t *buf = NULL;
    ck_assert_int_eq(kvr_scan_file(kv_memfs_io(fs), PATH, 2, on_record, on_problem, &b, &rb, &buf), KV_OK);
    tr_result(&b.t, KV_OK, &rb);
    ck_assert(b.t.len == ref.t.len && memcmp(b.t.b, ref.t.b, ref.t.len) == 0);
    ck_assert_ptr_nonnull(buf);
    ck_assert(memcmp(buf, s.b, s.len - 10) == 0);
    ck_assert_uint_eq(rb.window_peak, 0);
    free(buf);
    ck_assert_int_eq(kvr_scan_file(kv_memfs_io(fs), "/none", 2, NULL, NULL, NULL, &ra, NULL), ENOENT);
    probe_free(&ref);
    probe_free(&a);
    probe_free(&b);
    free(s.b);
}
END_TEST

START_TEST(segment_over_the_limit_is_refused_with_efbig)
{
    kvr_scan_result r;
    ck_assert_int_eq(kvr_scan_fd(kv_memfs_io(fs), -1, KVR_MAX_SEGMENT_BYTES + 1, 1, PATH, 0, NULL, &r), EFBIG);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("window");
    TCase *tc = tcase_create("same_as_buffer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, clean_version_1_segment_reads_the_same_through_every_window);
    tcase_add_test(tc, clean_version_2_segment_with_batches_marks_and_trailer_reads_the_same);
    tcase_add_test(tc, on_record_asking_to_stop_stops_the_same);
    tcase_add_test(tc, empty_short_and_header_only_files_read_the_same);
    tcase_add_test(tc, torn_tail_reads_the_same);
    tcase_add_test(tc, bad_record_crc_mid_log_reads_the_same);
    tcase_add_test(tc, corrupted_record_header_then_resync_reads_the_same);
    tcase_add_test(tc, corrupted_segment_header_then_resync_reads_the_same);
    tcase_add_test(tc, zero_filled_region_mid_file_reads_the_same);
    tcase_add_test(tc, zeros_at_the_end_are_unwritten_through_every_window);
    tcase_add_test(tc, sequence_going_back_bad_trailer_and_bytes_after_it_read_the_same);
    tcase_add_test(tc, records_longer_than_the_window_grow_it_to_the_record_only);
    tcase_add_test(tc, flipped_bit_at_every_byte_reads_the_same);
    tcase_add_test(tc, random_garbage_reads_the_same);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("file");
    tcase_add_checked_fixture(tf, setup, teardown);
    tcase_set_timeout(tf, 120);
    tcase_add_test(tf, read_error_ends_the_scan_with_eio);
    tcase_add_test(tf, window_hook_runs_before_the_bytes_change);
    tcase_add_test(tf, zero_tail_of_a_file_matches_kvr_zero_tail);
    tcase_add_test(tf, scan_file_reads_through_the_window_unless_asked_for_the_bytes);
    tcase_add_test(tf, segment_over_the_limit_is_refused_with_efbig);
    suite_add_tcase(s, tf);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
