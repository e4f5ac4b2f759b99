#include "kvr_reader.h"

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
    }
    return "unknown problem";
}

/* Cheap tests on a candidate header before any CRC is computed: most
 * offsets of a bad region fail here. */
static int plausible_header(const uint8_t *p, uint64_t avail)
{
    if (avail < KV_REC_HEADER_SIZE) return 0;
    uint8_t type = p[12];
    if (type < KV_REC_PUT || type > KV_REC_BATCH || p[13] != 0 || p[14] != 0 || p[15] != 0) return 0;
    uint32_t len = kv_get_u32(p + 8);
    return len >= KV_REC_HEADER_SIZE && len <= avail;
}

uint64_t kvr_find_next_record(const uint8_t *buf, uint64_t len, uint64_t from)
{
    for (uint64_t o = from; o + KV_REC_HEADER_SIZE <= len; o++) {
        if (!plausible_header(buf + o, len - o)) continue;
        kv_record r;
        if (kv_record_decode(buf + o, len - o, &r) == KV_OK && r.rflags == 0) return o;
    }
    return len;
}

static int all_zero(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* Reports [off, off + n); valid_after is worked out here: whether a valid
 * top-level record starts anywhere after the region. */
static void report(kvr_problem_fn fn, void *arg, kvr_scan_result *res, const char *path, uint32_t seg,
                   uint64_t off, uint64_t n, kvr_reason why, const uint8_t *buf, uint64_t len)
{
    res->problems++;
    if (!fn) return;
    int valid_after = why == KVR_SEQ_ORDER || kvr_find_next_record(buf, len, off + n) < len;
    kvr_problem p = {path, seg, off, n, why, valid_after};
    fn(arg, &p);
}

kv_status kvr_scan_buffer(const uint8_t *buf, uint64_t len, uint32_t seg, const char *path,
                          kvr_record_fn on_record, kvr_problem_fn on_problem, void *arg, kvr_scan_result *out)
{
    kvr_scan_result res;
    memset(&res, 0, sizeof res);
    res.file_size = len;
    uint64_t pos = KV_SEG_HEADER_SIZE;

    if (len < KV_SEG_HEADER_SIZE) {
        if (len > 0) report(on_problem, arg, &res, path, seg, 0, len, KVR_SEG_HEADER_SHORT, buf, len);
        if (out) *out = res;
        return KV_OK;
    }
    kv_status st = kv_seg_header_decode(buf, seg, NULL);
    if (st == KV_VERSION) {
        if (out) *out = res;
        return KV_VERSION;
    }
    if (st != KV_OK) {
        uint64_t next = kvr_find_next_record(buf, len, KV_SEG_HEADER_SIZE);
        report(on_problem, arg, &res, path, seg, 0, next, KVR_SEG_HEADER_BAD, buf, len);
        pos = next;
    } else {
        res.valid_end = KV_SEG_HEADER_SIZE;
    }

    uint64_t last_seq = 0;
    while (pos < len) {
        kv_record r;
        uint64_t avail = len - pos;
        st = kv_record_decode(buf + pos, avail, &r);
        if (st == KV_OK && r.rflags == 0) {
            if (res.records > 0 && r.seq <= last_seq) {
                report(on_problem, arg, &res, path, seg, pos, r.len, KVR_SEQ_ORDER, buf, len);
            } else {
                last_seq = r.type == KV_REC_BATCH ? r.seq + r.flags - 1 : r.seq;
                res.records++;
                res.valid_end = pos + r.len;
                if (on_record && on_record(arg, seg, pos, &r)) {
                    res.stopped = 1;
                    break;
                }
            }
            pos += r.len;
            continue;
        }

        /* A bad record at pos: delimit the region (see the header). */
        kvr_reason why;
        uint64_t end;
        kv_record h;
        if (avail < KV_REC_HEADER_SIZE) {
            why = all_zero(buf + pos, avail) ? KVR_ZERO_FILL : KVR_HEADER_SHORT;
            end = len;
        } else if (kv_record_decode_header(buf + pos, &h) == KV_OK && h.rflags == 0) {
            if (h.len > avail) {
                why = KVR_PAST_EOF;
                end = len;
            } else {
                why = KVR_CRC_MISMATCH;
                end = pos + h.len;
            }
        } else {
            end = kvr_find_next_record(buf, len, pos + 1);
            why = all_zero(buf + pos, end - pos) ? KVR_ZERO_FILL : KVR_HEADER_BAD;
        }
        report(on_problem, arg, &res, path, seg, pos, end - pos, why, buf, len);
        pos = end;
    }
    if (out) *out = res;
    return KV_OK;
}

kv_status kvr_scan_file(const kv_io *io, const char *path, uint32_t seg, kvr_record_fn on_record,
                        kvr_problem_fn on_problem, void *arg, kvr_scan_result *out, uint8_t **buf_out)
{
    uint8_t *buf;
    uint64_t len;
    if (buf_out) *buf_out = NULL;
    int r = kv_io_read_file(io, path, KVR_MAX_SEGMENT_BYTES, &buf, &len);
    if (r < 0) return -r;
    kv_status st = kvr_scan_buffer(buf, len, seg, path, on_record, on_problem, arg, out);
    if (buf_out && st == KV_OK)
        *buf_out = buf;
    else
        free(buf);
    return st;
}
