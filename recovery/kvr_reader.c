#include "kvr_reader.h"

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

/* Cheap tests on a candidate header before any CRC is computed: most
 * offsets of a bad region fail here. */
static int plausible_header(const uint8_t *p, uint64_t avail)
{
    if (avail < KV_REC_HEADER_SIZE) return 0;
    uint8_t type = p[12];
    if (type < KV_REC_PUT || type > KV_REC_SEAL || p[13] != 0 || p[14] != 0 || p[15] != 0) return 0;
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

/* One step of the walk through a segment: the valid record or the bad
 * region that starts at pos. */
typedef struct item {
    int is_record;
    uint64_t off, len; /* record, or region [off, off + len) */
    kvr_reason why;
    kv_record rec;
} item;

static void step(const uint8_t *buf, uint64_t len, uint64_t pos, item *it)
{
    uint64_t avail = len - pos;
    it->off = pos;
    if (kv_record_decode(buf + pos, avail, &it->rec) == KV_OK && it->rec.rflags == 0) {
        it->is_record = 1;
        it->len = it->rec.len;
        return;
    }
    /* A bad record at pos: delimit the region (see the header). */
    it->is_record = 0;
    kv_record h;
    uint64_t end;
    if (avail < KV_REC_HEADER_SIZE) {
        it->why = all_zero(buf + pos, avail) ? KVR_ZERO_FILL : KVR_HEADER_SHORT;
        end = len;
    } else if (kv_record_decode_header(buf + pos, &h) == KV_OK && h.rflags == 0) {
        /* The header checked out, so its length is trusted. */
        it->why = h.len > avail ? KVR_PAST_EOF : KVR_CRC_MISMATCH;
        end = h.len > avail ? len : pos + h.len;
    } else {
        end = kvr_find_next_record(buf, len, pos + 1);
        it->why = all_zero(buf + pos, end - pos) ? KVR_ZERO_FILL : KVR_HEADER_BAD;
    }
    it->len = end - pos;
}

kv_status kvr_scan_buffer(const uint8_t *buf, uint64_t len, uint32_t seg, const char *path,
                          kvr_record_fn on_record, kvr_problem_fn on_problem, void *arg, kvr_scan_result *out)
{
    kvr_scan_result res;
    memset(&res, 0, sizeof res);
    res.file_size = len;
    uint64_t pos = KV_SEG_HEADER_SIZE;

    /* Problems are held back until the walk reaches the next valid record
     * (or the end), so each can say whether one follows: exactly the
     * records this walk yields, found in one linear pass. */
    kvr_problem *held = NULL;
    size_t nheld = 0, cap_held = 0;
    kv_status st;

    if (len < KV_SEG_HEADER_SIZE) {
        if (len > 0 && on_problem) {
            kvr_problem p = {path, seg, 0, len, KVR_SEG_HEADER_SHORT, 0};
            on_problem(arg, &p);
        }
        res.problems = len > 0;
        if (out) *out = res;
        return KV_OK;
    }
    st = kv_seg_header_parse(buf, seg, &res.hdr);
    if (st == KV_VERSION) {
        if (out) *out = res;
        return KV_VERSION;
    }
    if (st != KV_OK) {
        uint64_t next = kvr_find_next_record(buf, len, KV_SEG_HEADER_SIZE);
        held = malloc(sizeof *held);
        if (!held) return ENOMEM;
        cap_held = 1;
        held[nheld++] = (kvr_problem){path, seg, 0, next, KVR_SEG_HEADER_BAD, 0};
        pos = next;
    } else {
        res.valid_end = KV_SEG_HEADER_SIZE;
        res.header_ok = 1;
    }
    st = KV_OK;

    uint64_t last_seq = 0;
    for (;;) {
        item it;
        int at_end = pos >= len;
        if (!at_end) step(buf, len, pos, &it);
        int record = !at_end && it.is_record;
        int mark = record && kv_record_is_mark(&it.rec);
        /* A mark repeats the last sequence number assigned; a data record
         * must go above it. */
        int out_of_order = record && res.records > 0 && (mark ? it.rec.seq < last_seq : it.rec.seq <= last_seq);
        if (mark && !out_of_order &&
            /* The count is checked only where every record before the
             * trailer was read: damage before it already is a problem. */
            (it.rec.type == KV_REC_SEAL ? it.rec.expire_ms != it.off ||
                                              (res.problems == 0 && nheld == 0 && it.rec.flags != res.records)
                                        : it.rec.expire_ms < KV_SEG_HEADER_SIZE || it.rec.expire_ms > it.off)) {
            /* A mark that does not describe this segment: a region of
             * its own, which whatever follows delimits. */
            it.is_record = 0;
            it.why = KVR_TRAILER_BAD;
            record = mark = 0;
        }
        if (!at_end && (!record || out_of_order)) {
            if (nheld + 2 > cap_held) { /* a bad region may split in two (below) */
                size_t nc = cap_held ? cap_held * 2 : 8;
                while (nc < nheld + 2) nc *= 2;
                kvr_problem *nh = realloc(held, nc * sizeof *nh);
                if (!nh) {
                    st = ENOMEM;
                    break;
                }
                held = nh;
                cap_held = nc;
            }
            /* An out-of-order record is itself valid: a region that
             * something valid follows. */
            uint64_t end = it.off + it.len;
            /* The zero bytes that end the file are a region of their own. */
            uint64_t z = !out_of_order && end == len ? kvr_zero_tail(buf, it.off, end) : end;
            if (z > it.off)
                held[nheld++] = (kvr_problem){path, seg, it.off, z - it.off, out_of_order ? KVR_SEQ_ORDER : it.why,
                                              out_of_order};
            if (z < end)
                held[nheld++] = (kvr_problem){path, seg, z, end - z, KVR_UNWRITTEN, 0};
            pos = end;
            if (!out_of_order) continue;
        }
        /* A valid record or the end: report what was held back (each
         * followed by a valid record or not), then yield the record. */
        for (size_t i = 0; i < nheld; i++) {
            if (held[i].reason != KVR_SEQ_ORDER) held[i].valid_after = record;
            res.problems++;
            if (on_problem) on_problem(arg, &held[i]);
        }
        nheld = 0;
        if (at_end || out_of_order) {
            if (at_end) break;
            continue; /* reported; not yielded */
        }
        res.valid_end = it.off + it.len;
        pos = it.off + it.len;
        if (mark) {
            res.marks++;
            res.mark_end = it.off + it.len;
            if (it.rec.type == KV_REC_COMMIT) res.group_start = it.rec.expire_ms;
        } else {
            last_seq = kv_record_last_seq(&it.rec);
            res.records++;
            res.last_seq = last_seq;
        }
        if (on_record && on_record(arg, seg, it.off, &it.rec)) {
            res.stopped = 1;
            break;
        }
        if (mark && it.rec.type == KV_REC_SEAL) {
            /* The trailer ends the segment: kvd never writes past it. */
            res.sealed = 1;
            res.seal_off = it.off;
            res.seal_seq = it.rec.seq;
            if (pos < len) {
                kvr_problem p = {path, seg, pos, len - pos, KVR_AFTER_TRAILER, 0};
                res.problems++;
                if (on_problem) on_problem(arg, &p);
            }
            break;
        }
    }
    free(held);
    if (out) *out = res;
    return st;
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
