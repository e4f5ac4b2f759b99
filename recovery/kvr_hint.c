#define _GNU_SOURCE /* mremap */
#include "kvr_hint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <xxhash.h>

#include "kv_keydir.h"
#include "kvr_reader.h"

void kvh_name(char *out, size_t cap, uint32_t id)
{
    snprintf(out, cap, "%010u.hint", id);
}

int kvh_parse_name(const char *name, uint32_t *id)
{
    return kv_parse_id_name(name, ".hint", id);
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

kv_status kvh_decode(const uint8_t *buf, size_t len, uint32_t expect_seg, kvh_header *h)
{
    if (len < KVH_HEADER_SIZE + KVH_TRAILER_SIZE || memcmp(buf, KVH_MAGIC, 4) != 0) return KV_CORRUPT;
    if (kv_get_u32(buf + len - 4) != kv_crc32(0, buf, len - 4)) return KV_CORRUPT;
    if (kv_get_u16(buf + 4) != KVH_VERSION) return KV_VERSION;
    if (kv_get_u16(buf + 6) != KVH_HEADER_SIZE || kv_get_u32(buf + 12) != 0 || kv_get_u32(buf + 164) != 0)
        return KV_CORRUPT;
    memset(h, 0, sizeof *h);
    h->seg = kv_get_u32(buf + 8);
    h->seg_size = kv_get_u64(buf + 16);
    h->nhints = kv_get_u64(buf + 24);
    h->records = kv_get_u64(buf + 32);
    h->batches = kv_get_u64(buf + 40);
    h->entries = kv_get_u64(buf + 48);
    h->tombstones = kv_get_u64(buf + 56);
    h->min_seq = kv_get_u64(buf + 64);
    h->max_seq = kv_get_u64(buf + 72);
    h->last_off = kv_get_u64(buf + 80);
    memcpy(h->seg_header, buf + 88, KV_SEG_HEADER_SIZE);
    memcpy(h->last_header, buf + 120, KV_REC_HEADER_SIZE);
    if (h->seg == 0 || (expect_seg != 0 && h->seg != expect_seg)) return KV_CORRUPT;
    if (h->seg_size < KV_SEG_HEADER_SIZE) return KV_CORRUPT;
    kv_seg_header sh;
    if (kv_seg_header_parse(h->seg_header, h->seg, &sh) != KV_OK) return KV_CORRUPT;
    if (h->records == 0) {
        /* An empty segment: nothing but its header, and in format 2 its
         * trailer (a compaction output that kept no record). */
        uint64_t empty = KV_SEG_HEADER_SIZE + (sh.version >= 2 ? KV_MARK_SIZE : 0);
        if (h->nhints || h->batches || h->entries || h->tombstones || h->min_seq || h->max_seq || h->last_off ||
            h->seg_size != empty || !all_zero(h->last_header, KV_REC_HEADER_SIZE))
            return KV_CORRUPT;
    } else {
        kv_record last;
        if (h->min_seq == 0 || h->max_seq < h->min_seq || h->batches > h->records || h->entries < h->records ||
            h->tombstones > h->entries || h->nhints > h->entries || h->nhints == 0 ||
            h->last_off < KV_SEG_HEADER_SIZE || h->last_off >= h->seg_size ||
            kv_record_decode_header(h->last_header, &last) != KV_OK || last.rflags != 0 ||
            h->last_off + last.len != h->seg_size)
            return KV_CORRUPT;
        uint64_t last_seq = kv_record_last_seq(&last);
        /* A trailer repeats the last sequence number assigned, which for
         * a compaction's output is its inputs' last: above its own last
         * record's when the inputs ended in records it dropped
         * (tombstones, expired or overwritten puts). */
        int above_ok = last.type == KV_REC_SEAL;
        if ((above_ok ? last_seq < h->max_seq : last_seq != h->max_seq) || last.seq < h->min_seq)
            return KV_CORRUPT;
    }
    /* Every entry, before the caller applies any. */
    size_t pos = KVH_HEADER_SIZE, end = len - KVH_TRAILER_SIZE;
    uint64_t count = 0, prev_end = KV_SEG_HEADER_SIZE;
    while (pos < end) {
        if (end - pos < KVH_ENTRY_SIZE) return KV_CORRUPT;
        const uint8_t *p = buf + pos;
        uint8_t type = p[0];
        uint32_t klen = kv_get_u32(p + 4);
        uint64_t off = kv_get_u64(p + 8);
        uint32_t rlen = kv_get_u32(p + 16);
        uint64_t seq = kv_get_u64(p + 24);
        uint64_t exp = kv_get_u64(p + 32);
        if ((type != KV_REC_PUT && type != KV_REC_TOMBSTONE) || p[1] || p[2] || p[3] || kv_get_u32(p + 20))
            return KV_CORRUPT;
        if (klen > KV_MAX_KEY_LEN || klen > end - pos - KVH_ENTRY_SIZE) return KV_CORRUPT;
        /* Records never overlap: each entry starts at or after the end
         * of the one before (which also keeps the live bytes a hint
         * claims within the segment's size). */
        if (off < prev_end || off >= h->seg_size || rlen < KV_REC_HEADER_SIZE + (uint64_t)klen ||
            rlen > h->seg_size - off)
            return KV_CORRUPT;
        if (seq < h->min_seq || seq > h->max_seq || (type == KV_REC_TOMBSTONE && exp != 0)) return KV_CORRUPT;
        prev_end = off + rlen;
        count++;
        pos += KVH_ENTRY_SIZE + klen;
    }
    if (count != h->nhints) return KV_CORRUPT;
    return KV_OK;
}

int kvh_next(const uint8_t *buf, size_t len, size_t *pos, kvh_entry *e)
{
    if (*pos == 0) *pos = KVH_HEADER_SIZE;
    if (*pos + KVH_ENTRY_SIZE > len - KVH_TRAILER_SIZE) return 0;
    const uint8_t *p = buf + *pos;
    e->type = p[0];
    e->klen = kv_get_u32(p + 4);
    e->off = kv_get_u64(p + 8);
    e->len = kv_get_u32(p + 16);
    e->seq = kv_get_u64(p + 24);
    e->expire_ms = kv_get_u64(p + 32);
    e->key = p + KVH_ENTRY_SIZE;
    *pos += KVH_ENTRY_SIZE + e->klen;
    return 1;
}

kv_status kvh_matches(const kvh_header *h, uint64_t seg_size, const uint8_t *seg_header,
                      const uint8_t *last_header)
{
    if (seg_size != h->seg_size || memcmp(seg_header, h->seg_header, KV_SEG_HEADER_SIZE) != 0) return KV_CORRUPT;
    if (h->records == 0) return KV_OK;
    return memcmp(last_header, h->last_header, KV_REC_HEADER_SIZE) == 0 ? KV_OK : KV_CORRUPT;
}

kv_status kvh_matches_segment(const kv_io *io, int fd, const kvh_header *h)
{
    uint64_t size;
    int r = io->fsize(io->ctx, fd, &size);
    if (r < 0) return -r;
    if (size != h->seg_size) return KV_CORRUPT;
    uint8_t sh[KV_SEG_HEADER_SIZE], lh[KV_REC_HEADER_SIZE] = {0};
    r = kv_io_read_full(io, fd, sh, sizeof sh, 0);
    if (r == 0 && h->records) r = kv_io_read_full(io, fd, lh, sizeof lh, h->last_off);
    if (r == -ENODATA) return KV_CORRUPT;
    if (r < 0) return -r;
    return kvh_matches(h, size, sh, lh);
}

/* ---- builder ---- */

/* The builder's arrays are mapped with mmap(2) rather than malloc'ed: a
 * segment holds up to millions of keys, and memory that malloc hands back
 * to a thread's arena stays resident after the hint is written, while an
 * unmapped array is returned to the system at once. */
static void *map_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void map_free(void *p, size_t bytes)
{
    if (p) munmap(p, bytes);
}

/* One put or tombstone, in file order. key points into the segment's
 * bytes (which the caller keeps until kvh_builder_finish). */
typedef struct hint_op {
    const uint8_t *key;
    uint64_t off, seq, expire_ms, hash;
    uint32_t klen, len;
    uint8_t type;
    uint8_t superseded; /* a later record of the same key follows */
} hint_op;

struct kvh_builder {
    uint32_t seg;
    hint_op *ops;
    size_t nops, cap; /* cap in elements; the mapping is cap * sizeof(hint_op) */
    uint64_t records, batches, entries, tombstones, min_seq, max_seq, last_off;
    int oom;
};

kvh_builder *kvh_builder_new(uint32_t seg)
{
    kvh_builder *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->seg = seg;
    return b;
}

void kvh_builder_free(kvh_builder *b)
{
    if (!b) return;
    map_free(b->ops, b->cap * sizeof *b->ops);
    free(b);
}

static void add_entry(kvh_builder *b, uint64_t off, const kv_record *e)
{
    b->entries++;
    if (e->type == KV_REC_TOMBSTONE) b->tombstones++;
    if (b->nops == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        void *np = b->ops ? mremap(b->ops, b->cap * sizeof *b->ops, nc * sizeof *b->ops, MREMAP_MAYMOVE)
                          : map_alloc(nc * sizeof *b->ops);
        if (np == MAP_FAILED || !np) {
            b->oom = 1;
            return;
        }
        b->ops = np;
        b->cap = nc;
    }
    hint_op *o = &b->ops[b->nops++];
    o->key = e->key;
    o->klen = e->klen;
    o->off = off;
    o->len = e->len;
    o->seq = e->seq;
    o->expire_ms = e->type == KV_REC_PUT ? e->expire_ms : 0;
    o->type = e->type;
    o->superseded = 0;
    o->hash = XXH3_64bits(e->key, e->klen);
}

kv_status kvh_builder_add(kvh_builder *b, uint64_t off, const kv_record *r)
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
        while (kv_batch_next(r, &pos, &e) == KV_OK) {
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
static long mark_superseded(kvh_builder *b)
{
    size_t slots = 16;
    while (slots < b->nops * 2) slots *= 2;
    uint32_t *tab = map_alloc(slots * sizeof *tab); /* index + 1; 0 = empty */
    if (!tab) return -1;
    long live = 0;
    for (size_t i = 0; i < b->nops; i++) {
        hint_op *o = &b->ops[i];
        size_t at = o->hash & (slots - 1);
        for (;; at = (at + 1) & (slots - 1)) {
            uint32_t t = tab[at];
            if (t == 0) {
                tab[at] = (uint32_t)i + 1;
                live++;
                break;
            }
            hint_op *p = &b->ops[t - 1];
            if (p->hash == o->hash && p->klen == o->klen && keys_equal(p->key, o->key, o->klen)) {
                p->superseded = 1;
                tab[at] = (uint32_t)i + 1;
                break;
            }
        }
    }
    map_free(tab, slots * sizeof *tab);
    return live;
}

kv_status kvh_builder_finish(kvh_builder *b, const uint8_t *seg_buf, uint64_t seg_len, uint8_t **out,
                             size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (b->oom || b->nops >= UINT32_MAX) return ENOMEM;
    long live = mark_superseded(b);
    if (live < 0) return ENOMEM;
    size_t len = KVH_HEADER_SIZE + KVH_TRAILER_SIZE;
    for (size_t i = 0; i < b->nops; i++)
        if (!b->ops[i].superseded) len += KVH_ENTRY_SIZE + b->ops[i].klen;
    uint8_t *p = calloc(1, len);
    if (!p) return ENOMEM;
    memcpy(p, KVH_MAGIC, 4);
    kv_put_u16(p + 4, KVH_VERSION);
    kv_put_u16(p + 6, KVH_HEADER_SIZE);
    kv_put_u32(p + 8, b->seg);
    kv_put_u64(p + 16, seg_len);
    kv_put_u64(p + 24, (uint64_t)live);
    kv_put_u64(p + 32, b->records);
    kv_put_u64(p + 40, b->batches);
    kv_put_u64(p + 48, b->entries);
    kv_put_u64(p + 56, b->tombstones);
    kv_put_u64(p + 64, b->min_seq);
    kv_put_u64(p + 72, b->max_seq);
    kv_put_u64(p + 80, b->records ? b->last_off : 0);
    memcpy(p + 88, seg_buf, seg_len < KV_SEG_HEADER_SIZE ? seg_len : KV_SEG_HEADER_SIZE);
    if (b->records && b->last_off + KV_REC_HEADER_SIZE <= seg_len)
        memcpy(p + 120, seg_buf + b->last_off, KV_REC_HEADER_SIZE);
    /* The ops are in file order, so the entries come out by offset. */
    size_t pos = KVH_HEADER_SIZE;
    for (size_t i = 0; i < b->nops; i++) {
        const hint_op *o = &b->ops[i];
        if (o->superseded) continue;
        uint8_t *e = p + pos;
        e[0] = o->type;
        kv_put_u32(e + 4, o->klen);
        kv_put_u64(e + 8, o->off);
        kv_put_u32(e + 16, o->len);
        kv_put_u64(e + 24, o->seq);
        kv_put_u64(e + 32, o->expire_ms);
        if (o->klen) memcpy(e + KVH_ENTRY_SIZE, o->key, o->klen);
        pos += KVH_ENTRY_SIZE + o->klen;
    }
    kv_put_u32(p + pos, kv_crc32(0, p, pos));
    *out = p;
    *out_len = len;
    return KV_OK;
}

typedef struct build_ctx {
    kvh_builder *b;
    uint64_t problems;
    kv_status err;
} build_ctx;

static int build_record(void *arg, uint32_t seg, uint64_t off, const kv_record *r)
{
    (void)seg;
    build_ctx *c = arg;
    c->err = kvh_builder_add(c->b, off, r);
    return c->err != KV_OK;
}

static void build_problem(void *arg, const kvr_problem *p)
{
    (void)p;
    ((build_ctx *)arg)->problems++;
}

kv_status kvh_build(const uint8_t *buf, uint64_t len, uint32_t seg, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    build_ctx c = {kvh_builder_new(seg), 0, KV_OK};
    if (!c.b) return ENOMEM;
    kv_status st = kvr_scan_buffer(buf, len, seg, NULL, build_record, build_problem, &c, NULL);
    if (st == KV_OK) st = c.err;
    if (st == KV_OK && c.problems) st = KV_CORRUPT;
    if (st == KV_OK) st = kvh_builder_finish(c.b, buf, len, out, out_len);
    kvh_builder_free(c.b);
    return st;
}

int kvh_write_tmp(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len)
{
    char name[32], path[4096], tmp[4200];
    kvh_name(name, sizeof name, seg);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = io->open(io->ctx, tmp, KV_O_RDWR | KV_O_CREAT | KV_O_TRUNC);
    if (fd < 0) return fd;
    int r = kv_io_write_full(io, fd, data, len, 0);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    int rc = io->close(io->ctx, fd);
    if (r == 0) r = rc;
    if (r < 0) io->unlink(io->ctx, tmp);
    return r;
}

int kvh_commit_tmp(const kv_io *io, const char *dir, uint32_t seg)
{
    char name[32], path[4096], tmp[4200];
    kvh_name(name, sizeof name, seg);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int r = io->rename(io->ctx, tmp, path);
    if (r < 0) io->unlink(io->ctx, tmp);
    return r;
}

int kvh_write_file(const kv_io *io, const char *dir, uint32_t seg, const uint8_t *data, size_t len)
{
    int r = kvh_write_tmp(io, dir, seg, data, len);
    return r == 0 ? kvh_commit_tmp(io, dir, seg) : r;
}
