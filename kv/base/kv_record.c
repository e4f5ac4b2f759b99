#include "kv_record.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

uint32_t kv_crc32(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = p;
    /* zlib's crc32() takes uInt lengths; feed large buffers in slices. */
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return crc;
}

kv_status kv_record_check_sizes(size_t klen, size_t vlen)
{
    if (klen > KV_MAX_KEY_LEN || vlen > KV_MAX_VALUE_LEN) return KV_INVALID;
    return KV_OK;
}

size_t kv_record_finish(uint8_t *rec, uint8_t type, uint8_t rflags, uint64_t seq, uint64_t expire_ms,
                        uint32_t flags, uint32_t klen, uint32_t vlen)
{
    uint32_t len = KV_REC_HEADER_SIZE + klen + vlen;
    kv_put_u32(rec + 8, len);
    rec[12] = type;
    rec[13] = rflags;
    kv_put_u16(rec + 14, 0);
    kv_put_u32(rec + 16, klen);
    kv_put_u32(rec + 20, vlen);
    kv_put_u64(rec + 24, seq);
    kv_put_u64(rec + 32, expire_ms);
    kv_put_u32(rec + 40, flags);
    kv_put_u32(rec + 4, kv_crc32(0, rec + 8, KV_REC_HEADER_SIZE - 8));
    kv_put_u32(rec, kv_crc32(0, rec + 4, len - 4));
    return len;
}

size_t kv_record_encode(uint8_t *out, uint8_t type, uint8_t rflags, uint64_t seq, uint64_t expire_ms,
                        uint32_t flags, const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
    if (klen) memcpy(out + KV_REC_HEADER_SIZE, key, klen);
    if (vlen) memcpy(out + KV_REC_HEADER_SIZE + klen, val, vlen);
    return kv_record_finish(out, type, rflags, seq, expire_ms, flags, klen, vlen);
}

kv_status kv_record_decode_header(const uint8_t buf[KV_REC_HEADER_SIZE], kv_record *r)
{
    if (kv_get_u32(buf + 4) != kv_crc32(0, buf + 8, KV_REC_HEADER_SIZE - 8)) return KV_CORRUPT_BKPT;
    uint8_t type = buf[12];
    uint32_t len = kv_get_u32(buf + 8), klen = kv_get_u32(buf + 16), vlen = kv_get_u32(buf + 20);
    uint8_t rflags = buf[13];
    if ((rflags & ~KV_RF_IN_BATCH) != 0 || kv_get_u16(buf + 14) != 0) return KV_CORRUPT_BKPT;
    if ((rflags & KV_RF_IN_BATCH) && type != KV_REC_PUT && type != KV_REC_TOMBSTONE) return KV_CORRUPT_BKPT;
    switch (type) {
    case KV_REC_PUT:
        if (klen > KV_MAX_KEY_LEN || vlen > KV_MAX_VALUE_LEN) return KV_CORRUPT_BKPT;
        break;
    case KV_REC_TOMBSTONE:
        if (klen > KV_MAX_KEY_LEN || vlen != 0 || kv_get_u64(buf + 32) != 0 || kv_get_u32(buf + 40) != 0)
            return KV_CORRUPT_BKPT;
        break;
    case KV_REC_BATCH:
        if (klen != 0 || vlen > KV_MAX_BATCH_LEN || kv_get_u64(buf + 32) != 0) return KV_CORRUPT_BKPT;
        break;
    case KV_REC_COMMIT:
    case KV_REC_SEAL:
        if (rflags != 0 || klen != 0 || vlen != 0) return KV_CORRUPT_BKPT;
        break;
    default:
        return KV_CORRUPT_BKPT;
    }
    if ((uint64_t)len != (uint64_t)KV_REC_HEADER_SIZE + klen + vlen) return KV_CORRUPT_BKPT;
    r->type = type;
    r->rflags = rflags;
    r->len = len;
    r->klen = klen;
    r->vlen = vlen;
    r->seq = kv_get_u64(buf + 24);
    r->expire_ms = kv_get_u64(buf + 32);
    r->flags = kv_get_u32(buf + 40);
    r->key = NULL;
    r->val = NULL;
    return KV_OK;
}

kv_status kv_record_batch_verify(const kv_record *b)
{
    size_t pos = 0;
    uint32_t n = 0;
    kv_record e;
    kv_status st;
    while ((st = kv_record_batch_next(b, &pos, &e)) == KV_OK) {
        if (e.seq != b->seq + n) return KV_CORRUPT_BKPT;
        n++;
    }
    if (st != KV_NOT_FOUND) return st;
    if (n != b->flags || n == 0) return KV_CORRUPT_BKPT;
    return KV_OK;
}

kv_status kv_record_decode(const uint8_t *buf, size_t avail, kv_record *r)
{
    if (avail < KV_REC_HEADER_SIZE) return KV_NEED_MORE;
    kv_status st = kv_record_decode_header(buf, r);
    if (st != KV_OK) return st;
    if (r->len > avail) return KV_NEED_MORE;
    if (kv_get_u32(buf) != kv_crc32(0, buf + 4, r->len - 4)) return KV_CORRUPT_BKPT;
    r->key = buf + KV_REC_HEADER_SIZE;
    r->val = buf + KV_REC_HEADER_SIZE + r->klen;
    if (r->type == KV_REC_BATCH) return kv_record_batch_verify(r);
    return KV_OK;
}

kv_status kv_record_batch_next(const kv_record *batch, size_t *pos, kv_record *e)
{
    if (*pos >= batch->vlen) return KV_NOT_FOUND;
    size_t avail = batch->vlen - *pos;
    const uint8_t *p = batch->val + *pos;
    /* The batch's own CRC covers every entry byte, so an entry's CRC is not
     * computed again here (a read of one entry verifies it); its header is
     * still checked, so lengths are trusted only after their hcrc. */
    if (avail < KV_REC_HEADER_SIZE) return KV_CORRUPT_BKPT;
    kv_status st = kv_record_decode_header(p, e);
    if (st != KV_OK) return st;
    if (e->len > avail) return KV_CORRUPT_BKPT; /* entry runs past the payload */
    if (!(e->rflags & KV_RF_IN_BATCH)) return KV_CORRUPT_BKPT;
    e->key = p + KV_REC_HEADER_SIZE;
    e->val = p + KV_REC_HEADER_SIZE + e->klen;
    *pos += e->len;
    return KV_OK;
}

size_t kv_mark_encode(uint8_t out[KV_MARK_SIZE], uint8_t type, uint64_t seq, uint64_t offset, uint32_t count)
{
    return kv_record_finish(out, type, 0, seq, offset, count, 0, 0);
}

void kv_seg_header_encode_h(uint8_t out[KV_SEG_HEADER_SIZE], const kv_seg_header *h)
{
    memset(out, 0, KV_SEG_HEADER_SIZE);
    memcpy(out, KV_SEG_MAGIC, 4);
    kv_put_u16(out + 4, h->version);
    kv_put_u16(out + 6, KV_SEG_HEADER_SIZE);
    kv_put_u32(out + 8, h->id);
    kv_put_u32(out + 12, h->replaces);
    if (h->version == 1) {
        kv_put_u64(out + 16, h->created_ms);
    } else {
        kv_put_u32(out + 16, h->prev_id);
        kv_put_u32(out + 20, h->prev_end);
        kv_put_u32(out + 24, (uint32_t)(h->created_ms / 1000u));
    }
    kv_put_u32(out + 28, kv_crc32(0, out, 28));
}

void kv_seg_header_encode_compacted(uint8_t out[KV_SEG_HEADER_SIZE], uint32_t id, uint64_t created_ms,
                                    uint32_t replaces_from)
{
    kv_seg_header h = {1, id, replaces_from, created_ms, 0, 0};
    kv_seg_header_encode_h(out, &h);
}

void kv_seg_header_encode(uint8_t out[KV_SEG_HEADER_SIZE], uint32_t id, uint64_t created_ms)
{
    kv_seg_header_encode_compacted(out, id, created_ms, 0);
}

uint32_t kv_seg_header_replaces(const uint8_t in[KV_SEG_HEADER_SIZE])
{
    return kv_get_u32(in + 12);
}

kv_status kv_seg_header_parse(const uint8_t in[KV_SEG_HEADER_SIZE], uint32_t expect_id, kv_seg_header *h)
{
    if (memcmp(in, KV_SEG_MAGIC, 4) != 0) return KV_CORRUPT_BKPT;
    if (kv_get_u32(in + 28) != kv_crc32(0, in, 28)) return KV_CORRUPT_BKPT;
    uint16_t version = kv_get_u16(in + 4);
    if (version < KV_FORMAT_VERSION_MIN || version > KV_FORMAT_VERSION) return KV_VERSION;
    if (kv_get_u16(in + 6) != KV_SEG_HEADER_SIZE) return KV_CORRUPT_BKPT;
    kv_seg_header d = {version, kv_get_u32(in + 8), kv_get_u32(in + 12), 0, 0, 0};
    if (d.replaces > d.id) return KV_CORRUPT_BKPT;
    if (version == 1) {
        if (kv_get_u32(in + 24) != 0) return KV_CORRUPT_BKPT;
        d.created_ms = kv_get_u64(in + 16);
    } else {
        d.prev_id = kv_get_u32(in + 16);
        d.prev_end = kv_get_u32(in + 20);
        d.created_ms = (uint64_t)kv_get_u32(in + 24) * 1000u;
        /* The predecessor comes before this segment and the range it replaces. */
        if (d.prev_id >= (d.replaces ? d.replaces : d.id)) return KV_CORRUPT_BKPT;
        if (d.prev_id == 0 && d.prev_end != 0) return KV_CORRUPT_BKPT;
    }
    if (expect_id != 0 && d.id != expect_id) return KV_CORRUPT_BKPT;
    if (h) *h = d;
    return KV_OK;
}

kv_status kv_seg_header_decode(const uint8_t in[KV_SEG_HEADER_SIZE], uint32_t expect_id, uint32_t *id)
{
    kv_seg_header h;
    kv_status st = kv_seg_header_parse(in, expect_id, &h);
    if (st == KV_OK && id) *id = h.id;
    return st;
}
