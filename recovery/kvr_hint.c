#include "kvr_hint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "kv_dir.h"
#include "kv_keydir.h"
#include "kv_map.h"
#include "kvr_reader.h"

/* ---- builder ---- */

/* One put or tombstone, in file order. Its key is the builder's copy, at
 * key_at in b->keys: the records' bytes may be gone (a window that moved)
 * by the time the hint is encoded. */
typedef struct hint_op {
    uint64_t key_at;
    uint64_t off, seq, expire_ms, hash;
    uint32_t klen, len;
    uint8_t type;
    uint8_t superseded; /* a later record of the same key follows */
} hint_op;

/* The ops and the keys live on anonymous mappings (kv_map.h): a segment
 * holds up to millions of keys, and building its hint leaves none of that
 * memory resident. */
struct kvr_hint_builder {
    uint32_t seg;
    kv_map ops;  /* hint_op[nops] */
    kv_map keys; /* the ops' key bytes, back to back */
    size_t nops;
    uint64_t records, batches, entries, tombstones, min_seq, max_seq, last_off;
    int oom;
};

kvr_hint_builder *kvr_hint_builder_new(uint32_t seg)
{
    kvr_hint_builder *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->seg = seg;
    return b;
}

void kvr_hint_builder_free(kvr_hint_builder *b)
{
    if (!b) return;
    kv_map_free(&b->ops);
    kv_map_free(&b->keys);
    free(b);
}

static hint_op *op_at(const kvr_hint_builder *b, size_t i)
{
    return (hint_op *)b->ops.p + i;
}

static const uint8_t *op_key(const kvr_hint_builder *b, const hint_op *o)
{
    return b->keys.p + o->key_at;
}

static void add_entry(kvr_hint_builder *b, uint64_t off, const kv_record *e)
{
    b->entries++;
    if (e->type == KV_REC_TOMBSTONE) b->tombstones++;
    size_t key_at;
    if (kv_map_grow(&b->ops, sizeof(hint_op)) != KV_OK || kv_map_append(&b->keys, e->key, e->klen, &key_at) != KV_OK) {
        b->oom = 1;
        return;
    }
    hint_op *o = op_at(b, b->nops++);
    b->ops.len += sizeof *o;
    o->key_at = key_at;
    o->klen = e->klen;
    o->off = off;
    o->len = e->len;
    o->seq = e->seq;
    o->expire_ms = e->type == KV_REC_PUT ? e->expire_ms : 0;
    o->type = e->type;
    o->superseded = 0;
    o->hash = XXH3_64bits(e->key, e->klen);
}

kv_status kvr_hint_builder_add(kvr_hint_builder *b, uint64_t off, const kv_record *r)
{
    if (kv_record_is_mark(r)) {
        /* No entry; a trailer is the record the hint's last-record check
         * compares (it ends the segment). */
        if (r->type == KV_REC_SEAL && b->records) b->last_off = off;
        return KV_OK;
    }
    b->records++;
    if (b->min_seq == 0) b->min_seq = r->seq;
    b->max_seq = kv_record_last_seq(r);
    b->last_off = off;
    if (r->type == KV_REC_BATCH) {
        b->batches++;
        size_t pos = 0, before = 0;
        kv_record e;
        while (kv_record_batch_next(r, &pos, &e) == KV_OK) {
            add_entry(b, kv_batch_entry_off(off, before), &e);
            before = pos;
        }
    } else {
        add_entry(b, off, r);
    }
    return b->oom ? ENOMEM : KV_OK;
}

/* Marks every op that a later op of the same key supersedes, with an
 * open-addressing table of op indices (linear probing, at most half
 * full). Returns the number of ops left (one per key) or -1. */
static long mark_superseded(kvr_hint_builder *b)
{
    size_t slots = 16;
    while (slots < b->nops * 2) slots *= 2;
    kv_map tm = {0};
    if (kv_map_grow(&tm, slots * sizeof(uint32_t)) != KV_OK) return -1;
    uint32_t *tab = (uint32_t *)tm.p; /* index + 1; 0 = empty (fresh pages are zero) */
    long live = 0;
    for (size_t i = 0; i < b->nops; i++) {
        hint_op *o = op_at(b, i);
        size_t at = o->hash & (slots - 1);
        for (;; at = (at + 1) & (slots - 1)) {
            uint32_t t = tab[at];
            if (t == 0) {
                tab[at] = (uint32_t)i + 1;
                live++;
                break;
            }
            hint_op *p = op_at(b, t - 1);
            if (p->hash == o->hash && p->klen == o->klen && keys_equal(op_key(b, p), op_key(b, o), o->klen)) {
                p->superseded = 1;
                tab[at] = (uint32_t)i + 1;
                break;
            }
        }
    }
    kv_map_free(&tm);
    return live;
}

uint64_t kvr_hint_builder_last_off(const kvr_hint_builder *b, uint64_t seg_len)
{
    return b->records && b->last_off + KV_REC_HEADER_SIZE <= seg_len ? b->last_off : UINT64_MAX;
}

kv_status kvr_hint_builder_finish(kvr_hint_builder *b, uint64_t seg_len, const uint8_t *seg_header, const uint8_t *last_header,
                             uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (b->oom || b->nops >= UINT32_MAX) return ENOMEM;
    long live = mark_superseded(b);
    if (live < 0) return ENOMEM;
    size_t len = KVH_HEADER_SIZE + KVH_TRAILER_SIZE;
    for (size_t i = 0; i < b->nops; i++)
        if (!op_at(b, i)->superseded) len += KVH_ENTRY_SIZE + op_at(b, i)->klen;
    uint8_t *p = calloc(1, len);
    if (!p) return ENOMEM;
    kvh_header h = {.seg = b->seg,
                    .seg_size = seg_len,
                    .nhints = (uint64_t)live,
                    .records = b->records,
                    .batches = b->batches,
                    .entries = b->entries,
                    .tombstones = b->tombstones,
                    .min_seq = b->min_seq,
                    .max_seq = b->max_seq,
                    .last_off = b->records ? b->last_off : 0};
    memcpy(h.seg_header, seg_header, seg_len < KV_SEG_HEADER_SIZE ? seg_len : KV_SEG_HEADER_SIZE);
    if (last_header && kvr_hint_builder_last_off(b, seg_len) != UINT64_MAX)
        memcpy(h.last_header, last_header, KV_REC_HEADER_SIZE);
    kvh_encode_header(p, &h);
    /* The ops are in file order, so the entries come out by offset. */
    size_t pos = KVH_HEADER_SIZE;
    for (size_t i = 0; i < b->nops; i++) {
        const hint_op *o = op_at(b, i);
        if (o->superseded) continue;
        kvh_entry e = {o->type, o->klen, o->off, o->len, o->seq, o->expire_ms, op_key(b, o)};
        pos += kvh_encode_entry(p + pos, &e);
    }
    kvh_encode_trailer(p, pos);
    *out = p;
    *out_len = len;
    return KV_OK;
}

kv_status kvr_hint_builder_finish_buf(kvr_hint_builder *b, const uint8_t *seg_buf, uint64_t seg_len, uint8_t **out,
                                 size_t *out_len)
{
    uint64_t lo = kvr_hint_builder_last_off(b, seg_len);
    return kvr_hint_builder_finish(b, seg_len, seg_buf, lo == UINT64_MAX ? NULL : seg_buf + lo, out, out_len);
}

kv_status kvr_hint_builder_finish_fd(kvr_hint_builder *b, const kv_io *io, int fd, uint64_t seg_len, uint8_t **out,
                                size_t *out_len)
{
    uint8_t hdr[KV_SEG_HEADER_SIZE] = {0}, last[KV_REC_HEADER_SIZE];
    *out = NULL;
    *out_len = 0;
    size_t hn = seg_len < sizeof hdr ? (size_t)seg_len : sizeof hdr;
    uint64_t lo = kvr_hint_builder_last_off(b, seg_len);
    int r = kv_io_read_full(io, fd, hdr, hn, 0);
    if (r == 0 && lo != UINT64_MAX) r = kv_io_read_full(io, fd, last, sizeof last, lo);
    if (r < 0) return -r;
    return kvr_hint_builder_finish(b, seg_len, hdr, lo == UINT64_MAX ? NULL : last, out, out_len);
}

typedef struct build_ctx {
    kvr_hint_builder *b;
    uint64_t problems;
    kv_status err;
} build_ctx;

static int build_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    (void)seg;
    build_ctx *c = arg;
    c->err = kvr_hint_builder_add(c->b, off, r);
    return c->err != KV_OK;
}

static void build_problem(void *arg, const kvr_problem *p)
{
    (void)p;
    ((build_ctx *)arg)->problems++;
}

kv_status kvr_hint_build(const uint8_t *buf, uint64_t len, uint32_t seg, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    build_ctx c = {kvr_hint_builder_new(seg), 0, KV_OK};
    if (!c.b) return ENOMEM;
    kv_status st = kvr_scan_buffer(buf, len, seg, NULL, build_record, build_problem, &c, NULL);
    if (st == KV_OK) st = c.err;
    if (st == KV_OK && c.problems) st = KV_CORRUPT;
    if (st == KV_OK) st = kvr_hint_builder_finish_buf(c.b, buf, len, out, out_len);
    kvr_hint_builder_free(c.b);
    return st;
}

kv_status kvr_hint_build_fd(const kv_io *io, int fd, uint64_t size, uint32_t seg, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    build_ctx c = {kvr_hint_builder_new(seg), 0, KV_OK};
    if (!c.b) return ENOMEM;
    /* The builder copies the keys it keeps, so no window hook is needed. */
    kvr_scan_hooks h = {build_record, build_problem, NULL, &c};
    kv_status st = kvr_scan_fd(io, fd, size, seg, NULL, 0, &h, NULL);
    if (st == KV_OK) st = c.err;
    if (st == KV_OK && c.problems) st = KV_CORRUPT;
    if (st == KV_OK) st = kvr_hint_builder_finish_fd(c.b, io, fd, size, out, out_len);
    kvr_hint_builder_free(c.b);
    return st;
}

int kvr_hint_write_tmp(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len)
{
    kv_path tmp;
    int r = kv_dir_path(&tmp, dir, KV_FILE_HINT_TMP, seg, 0);
    if (r < 0) return r;
    int fd = io->open(io->ctx, tmp.s, KV_O_RDWR | KV_O_CREAT | KV_O_TRUNC);
    if (fd < 0) return fd;
    r = kv_io_write_full(io, fd, data, len, 0);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    int rc = io->close(io->ctx, fd);
    if (r == 0) r = rc;
    if (r < 0) io->unlink(io->ctx, tmp.s);
    return r;
}

int kvr_hint_commit_tmp(const kv_io *io, const char *dir, uint32_t seg)
{
    kv_path path, tmp;
    int r = kv_dir_path(&path, dir, KV_FILE_HINT, seg, 0);
    if (r == 0) r = kv_dir_path(&tmp, dir, KV_FILE_HINT_TMP, seg, 0);
    if (r < 0) return r;
    r = io->rename(io->ctx, tmp.s, path.s);
    if (r < 0) io->unlink(io->ctx, tmp.s);
    return r;
}

int kvr_hint_write_file(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len)
{
    int r = kvr_hint_write_tmp(io, dir, seg, data, len);
    return r == 0 ? kvr_hint_commit_tmp(io, dir, seg) : r;
}

/* ---- reading a hint for its segment ---- */

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

kv_status kvr_hint_read_for_segment(const kv_io *io, const char *dir, uint32_t id, uint8_t **buf, size_t *len,
                               kvh_header *h)
{
    kv_path path;
    uint64_t blen = 0;
    *buf = NULL;
    *len = 0;
    int r = kv_dir_path(&path, dir, KV_FILE_HINT, id, 0);
    if (r == 0) r = kv_io_read_file(io, path.s, KVH_MAX_FILE_BYTES, buf, &blen);
    if (r < 0) return -r;
    kv_status st = kvh_decode(*buf, blen, id, h);
    if (st == KV_OK) {
        kv_dir_path(&path, dir, KV_FILE_SEG, id, 0); /* it fits: the hint's did */
        int fd = io->open(io->ctx, path.s, KV_O_RDONLY);
        st = fd < 0 ? -fd : kvh_matches_segment(io, fd, h);
        if (st == KV_OK) st = check_trailer(io, fd, id, h);
        if (fd >= 0) io->close(io->ctx, fd);
    }
    if (st != KV_OK) {
        free(*buf);
        *buf = NULL;
        return st == ENOENT ? KV_CORRUPT : st; /* ENOENT is for a missing hint only */
    }
    *len = (size_t)blen;
    return KV_OK;
}

size_t kvr_hint_estimate_keys(const kv_io *io, const char *dir, const uint32_t *ids, size_t n)
{
    uint64_t total = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        kv_path path;
        if (kv_dir_path(&path, dir, KV_FILE_HINT, ids[i], 0) < 0) continue;
        int fd = io->open(io->ctx, path.s, KV_O_RDONLY);
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

