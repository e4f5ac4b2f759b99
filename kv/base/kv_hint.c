#include "kv_hint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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

/* ---- encoders ---- */

void kvh_encode_header(uint8_t out[KVH_HEADER_SIZE], const kvh_header *h)
{
    memset(out, 0, KVH_HEADER_SIZE);
    memcpy(out, KVH_MAGIC, 4);
    kv_put_u16(out + 4, KVH_VERSION);
    kv_put_u16(out + 6, KVH_HEADER_SIZE);
    kv_put_u32(out + 8, h->seg);
    kv_put_u64(out + 16, h->seg_size);
    kv_put_u64(out + 24, h->nhints);
    kv_put_u64(out + 32, h->records);
    kv_put_u64(out + 40, h->batches);
    kv_put_u64(out + 48, h->entries);
    kv_put_u64(out + 56, h->tombstones);
    kv_put_u64(out + 64, h->min_seq);
    kv_put_u64(out + 72, h->max_seq);
    kv_put_u64(out + 80, h->last_off);
    memcpy(out + 88, h->seg_header, KV_SEG_HEADER_SIZE);
    memcpy(out + 120, h->last_header, KV_REC_HEADER_SIZE);
}

size_t kvh_encode_entry(uint8_t *out, const kvh_entry *e)
{
    memset(out, 0, KVH_ENTRY_SIZE);
    out[0] = e->type;
    kv_put_u32(out + 4, e->klen);
    kv_put_u64(out + 8, e->off);
    kv_put_u32(out + 16, e->len);
    kv_put_u64(out + 24, e->seq);
    kv_put_u64(out + 32, e->expire_ms);
    if (e->klen) memcpy(out + KVH_ENTRY_SIZE, e->key, e->klen);
    return KVH_ENTRY_SIZE + e->klen;
}

size_t kvh_encode_trailer(uint8_t *buf, size_t len)
{
    kv_put_u32(buf + len, kv_crc32(0, buf, len));
    return len + KVH_TRAILER_SIZE;
}
