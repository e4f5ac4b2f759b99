/*
 * repl_stream — the replication stream's framing (repl_stream.h).
 */
#include "repl_stream.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kv_record.h"

void kvrs_init(kvrs_parser *p, uint64_t next_seq, int snapshot)
{
    memset(p, 0, sizeof *p);
    p->next_seq = next_seq;
    p->snapshot = snapshot;
    p->max_record = KV_MAX_RECORD_LEN;
}

static kvrs_event fail(kvrs_ev *ev, size_t *used, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kvrs_event fail(kvrs_ev *ev, size_t *used, const char *fmt, ...)
{
    ev->type = KVRS_ERROR;
    *used = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->error, sizeof ev->error, fmt, ap);
    va_end(ap);
    return KVRS_ERROR;
}

/* A file name a snapshot may carry: a segment's, NNNNNNNNNN.seg. */
static int name_ok(const char *name)
{
    uint32_t id;
    return kv_seg_parse_name(name, &id) && id > 0;
}

static kvrs_event parse_file_head(kvrs_parser *p, const uint8_t *buf, size_t len, size_t *used, kvrs_ev *ev)
{
    if (!p->snapshot) return fail(ev, used, "file frame outside a snapshot");
    if (len < 13) return KVRS_NEED_MORE;
    uint32_t nlen = kv_get_u32(buf + 1);
    uint64_t size = kv_get_u64(buf + 5);
    if (nlen == 0 || nlen > KVRS_MAX_NAME) return fail(ev, used, "file name of %llu bytes", (unsigned long long)nlen);
    if (len < 13 + (size_t)nlen + 4) return KVRS_NEED_MORE;
    if (kv_crc32(0, buf + 1, 12 + nlen) != kv_get_u32(buf + 13 + nlen))
        return fail(ev, used, "file frame header checksum mismatch");
    memcpy(ev->name, buf + 13, nlen);
    ev->name[nlen] = 0;
    if (strlen(ev->name) != nlen || !name_ok(ev->name))
        return fail(ev, used, "file frame names no segment");
    if (size > KVRS_MAX_FILE) return fail(ev, used, "file of %llu bytes is over the limit", (unsigned long long)size);
    ev->size = size;
    p->in_file = 1;
    p->files_seen = 1;
    p->file_left = size;
    p->file_crc = 0;
    *used = 13 + nlen + 4;
    return ev->type = KVRS_FILE_BEGIN;
}

static kvrs_event parse_file_bytes(kvrs_parser *p, const uint8_t *buf, size_t len, size_t *used, kvrs_ev *ev)
{
    if (p->file_left > 0) {
        if (len == 0) return KVRS_NEED_MORE;
        size_t n = len < p->file_left ? len : (size_t)p->file_left;
        p->file_crc = kv_crc32(p->file_crc, buf, n);
        p->file_left -= n;
        ev->data = buf;
        ev->len = n;
        *used = n;
        return ev->type = KVRS_FILE_DATA;
    }
    if (len < 4) return KVRS_NEED_MORE;
    if (kv_get_u32(buf) != p->file_crc) return fail(ev, used, "file checksum mismatch");
    p->in_file = 0;
    *used = 4;
    return ev->type = KVRS_FILE_END;
}

static kvrs_event parse_record(kvrs_parser *p, const uint8_t *buf, size_t len, size_t *used, kvrs_ev *ev)
{
    if (p->snapshot) return fail(ev, used, "record before the snapshot's end");
    if (len < 1 + KV_REC_HEADER_SIZE) return KVRS_NEED_MORE;
    kv_record r;
    if (kv_record_decode_header(buf + 1, &r) != KV_OK)
        return fail(ev, used, "record header checksum or fields bad");
    if (r.type != KV_REC_PUT && r.type != KV_REC_TOMBSTONE && r.type != KV_REC_BATCH)
        return fail(ev, used, "record of type %llu is not a data record", (unsigned long long)r.type);
    if (r.len > p->max_record) return fail(ev, used, "record of %llu bytes over the limit", (unsigned long long)r.len);
    if (len < 1 + (size_t)r.len) return KVRS_NEED_MORE;
    kv_record full;
    if (kv_record_decode(buf + 1, r.len, &full) != KV_OK || full.rflags != 0)
        return fail(ev, used, "record checksum mismatch (sequence number %llu)", (unsigned long long)r.seq);
    if (kv_record_last_seq(&full) == UINT64_MAX)
        return fail(ev, used, "record with the last sequence number there is");
    if (full.seq != p->next_seq)
        return fail(ev, used, "record with sequence number %llu where %llu was due",
                    (unsigned long long)full.seq, (unsigned long long)p->next_seq);
    ev->data = buf + 1;
    ev->len = r.len;
    ev->seq = full.seq;
    ev->last_seq = kv_record_last_seq(&full);
    p->next_seq = ev->last_seq + 1;
    *used = 1 + r.len;
    return ev->type = KVRS_RECORD;
}

kvrs_event kvrs_next(kvrs_parser *p, const uint8_t *buf, size_t len, size_t *used, kvrs_ev *ev)
{
    ev->type = KVRS_NEED_MORE;
    ev->data = NULL;
    ev->len = 0;
    *used = 0;
    if (p->in_file) return parse_file_bytes(p, buf, len, used, ev);
    if (len == 0) return KVRS_NEED_MORE;
    switch (buf[0]) {
    case 'R':
        return parse_record(p, buf, len, used, ev);
    case 'F':
        return parse_file_head(p, buf, len, used, ev);
    case 'E':
        if (!p->snapshot) return fail(ev, used, "snapshot end outside a snapshot");
        if (len < 13) return KVRS_NEED_MORE;
        if (kv_crc32(0, buf + 1, 8) != kv_get_u32(buf + 9))
            return fail(ev, used, "snapshot end checksum mismatch");
        ev->seq = kv_get_u64(buf + 1);
        if (ev->seq == UINT64_MAX) return fail(ev, used, "snapshot end at the last sequence number there is");
        p->snapshot = 0;
        p->next_seq = ev->seq + 1;
        *used = 13;
        return ev->type = KVRS_SNAPSHOT_END;
    case 'D':
        if (!p->snapshot || p->files_seen) return fail(ev, used, "divergence frame outside a snapshot's start");
        if (len < 13) return KVRS_NEED_MORE;
        if (kv_crc32(0, buf + 1, 8) != kv_get_u32(buf + 9)) return fail(ev, used, "divergence frame checksum mismatch");
        ev->seq = kv_get_u64(buf + 1);
        p->files_seen = 1; /* one per snapshot */
        *used = 13;
        return ev->type = KVRS_DIVERGED;
    case 'P':
        *used = 1;
        return ev->type = KVRS_PING;
    case 'G':
        *used = 1;
        return ev->type = KVRS_GETACK;
    default:
        return fail(ev, used, "unknown frame tag 0x%02llx", (unsigned long long)buf[0]);
    }
}

size_t kvrs_file_head(uint8_t *out, const char *name, uint64_t size)
{
    size_t n = strlen(name);
    if (n > KVRS_MAX_NAME) n = KVRS_MAX_NAME;
    out[0] = 'F';
    kv_put_u32(out + 1, (uint32_t)n);
    kv_put_u64(out + 5, size);
    memcpy(out + 13, name, n);
    kv_put_u32(out + 13 + n, kv_crc32(0, out + 1, 12 + n));
    return 13 + n + 4;
}

size_t kvrs_file_tail(uint8_t out[4], uint32_t crc)
{
    kv_put_u32(out, crc);
    return 4;
}

size_t kvrs_diverged(uint8_t out[13], uint64_t seq)
{
    kvrs_snapshot_end(out, seq);
    out[0] = 'D';
    return 13;
}

size_t kvrs_snapshot_end(uint8_t out[13], uint64_t seq)
{
    out[0] = 'E';
    kv_put_u64(out + 1, seq);
    kv_put_u32(out + 9, kv_crc32(0, out + 1, 8));
    return 13;
}

/* Reads "<c><digits>\r\n" at buf[*pos]: returns 1 with *v, 0 for more
 * bytes, -1 malformed. At most 11 digits, whether the line's end has come
 * or not: a line refused before its end is refused after it too. */
static int read_len_line(const uint8_t *buf, size_t len, size_t *pos, char c, long *v)
{
    if (*pos >= len) return 0;
    if (buf[*pos] != c) return -1;
    long n = 0;
    size_t i = *pos + 1;
    for (; i < len && buf[i] >= '0' && buf[i] <= '9'; i++) {
        n = n * 10 + (buf[i] - '0');
        if (n > 1000000 || i - *pos > 11) return -1;
    }
    if (i + 1 >= len) return 0;
    if (i == *pos + 1 || buf[i] != '\r' || buf[i + 1] != '\n') return -1;
    *v = n;
    *pos = i + 2;
    return 1;
}

int kvrs_parse_command(const uint8_t *buf, size_t len, size_t *used, char (*args)[65], int max)
{
    size_t pos = 0;
    long n;
    int r = read_len_line(buf, len, &pos, '*', &n);
    if (r <= 0) return r;
    if (n < 1 || n > max) return -1;
    for (long i = 0; i < n; i++) {
        long blen;
        if ((r = read_len_line(buf, len, &pos, '$', &blen)) <= 0) return r;
        if (blen > 64) return -1;
        if (len - pos < (size_t)blen + 2) return 0;
        if (buf[pos + blen] != '\r' || buf[pos + blen + 1] != '\n') return -1;
        memcpy(args[i], buf + pos, (size_t)blen);
        args[i][blen] = 0;
        pos += (size_t)blen + 2;
    }
    *used = pos;
    return (int)n;
}
