/*
 * make_repl_seeds — writes the seed corpus of fuzz_repl_stream: small,
 * valid replication streams made with the project's own encoders
 * (kv/base/kv_record.h, kv/repl/repl_stream.h), and build-mode scripts.
 * A tool, not a test: run it by hand when the stream's format changes.
 *
 *   fuzz_make_repl_seeds DIR        (e.g. fuzz/corpus/repl_stream)
 *
 * The input layout (a 13-byte header: mode, first sequence number, chunk
 * sizes; then a stream, or a script in build mode) is the one described
 * at the top of fuzz_repl_stream.c and in fuzz/repl_stream_input.h. The
 * output is the same on every run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"
#include "repl_stream.h"
#include "repl_stream_input.h"

typedef struct buf {
    uint8_t p[4096];
    size_t len;
} buf;

static void add(buf *b, const void *p, size_t n)
{
    if (b->len + n > sizeof b->p) {
        fprintf(stderr, "make_repl_seeds: a seed over %zu bytes\n", sizeof b->p);
        exit(1);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void byte(buf *b, uint8_t c)
{
    add(b, &c, 1);
}

/* The header: mode, the parser's first sequence number, chunk sizes - 1. */
static void header(buf *b, uint8_t mode, uint64_t seq, uint8_t c0, uint8_t c1, uint8_t c2, uint8_t c3)
{
    b->len = 0;
    byte(b, mode);
    uint8_t s[8];
    kv_put_u64(s, seq);
    add(b, s, 8);
    uint8_t c[4] = {c0, c1, c2, c3};
    add(b, c, 4);
}

static void put(buf *b, uint64_t seq, const char *key, const char *val, uint64_t expire_ms)
{
    uint8_t f[1 + KV_REC_HEADER_SIZE + 256] = {'R'};
    uint32_t kl = (uint32_t)strlen(key), vl = (uint32_t)strlen(val);
    add(b, f, 1 + kv_record_encode(f + 1, KV_REC_PUT, 0, seq, expire_ms, 0, key, kl, val, vl));
}

static void tomb(buf *b, uint64_t seq, const char *key)
{
    uint8_t f[1 + KV_REC_HEADER_SIZE + 256] = {'R'};
    add(b, f, 1 + kv_record_encode(f + 1, KV_REC_TOMBSTONE, 0, seq, 0, 0, key, (uint32_t)strlen(key), NULL, 0));
}

/* A batch of a put, a tombstone and a put, seq .. seq + 2. */
static void batch3(buf *b, uint64_t seq)
{
    uint8_t f[1 + 4 * (KV_REC_HEADER_SIZE + 16)] = {'R'};
    size_t pos = 1 + KV_REC_HEADER_SIZE;
    pos += kv_record_encode(f + pos, KV_REC_PUT, KV_RF_IN_BATCH, seq, 0, 0, "b1", 2, "one", 3);
    pos += kv_record_encode(f + pos, KV_REC_TOMBSTONE, KV_RF_IN_BATCH, seq + 1, 0, 0, "b2", 2, NULL, 0);
    pos += kv_record_encode(f + pos, KV_REC_PUT, KV_RF_IN_BATCH, seq + 2, 0, 0, "b3", 2, "three", 5);
    kv_record_finish(f + 1, KV_REC_BATCH, 0, seq, 0, 3, 0, (uint32_t)(pos - 1 - KV_REC_HEADER_SIZE));
    add(b, f, pos);
}

static void file(buf *b, const char *name, const uint8_t *data, size_t n)
{
    uint8_t h[17 + KVRS_MAX_NAME + 4];
    add(b, h, kvrs_file_head(h, name, n));
    if (n) add(b, data, n);
    add(b, h, kvrs_file_tail(h, kv_crc32(0, data, n)));
}

static void end(buf *b, uint64_t seq)
{
    uint8_t e[13];
    add(b, e, kvrs_snapshot_end(e, seq));
}

static int save(const char *dir, const char *name, const buf *b)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && fwrite(b->p, 1, b->len, f) == b->len;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "make_repl_seeds: cannot write %s\n", path);
        return 1;
    }
    printf("%s (%zu bytes)\n", path, b->len);
    return 0;
}

static void ops(buf *b, const uint8_t *p, size_t n)
{
    add(b, p, n);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int rc = 0;
    buf b;

    /* Records from sequence number 1: a put, a tombstone, a batch, a put
     * with an expiry, a ping and an ack request; in chunks of 1, 8, 45
     * and 256 bytes. */
    header(&b, 0, 1, 0, 7, 44, 255);
    put(&b, 1, "key", "value", 0);
    tomb(&b, 2, "gone");
    batch3(&b, 3);
    put(&b, 6, "ttl", "expires", 1800000000000ull);
    byte(&b, 'P');
    byte(&b, 'G');
    rc |= save(dir, "records", &b);

    /* A full resync: a segment's first bytes as one file, an empty file,
     * the snapshot's end at 6, then the records from 7. */
    uint8_t seg[KV_SEG_HEADER_SIZE + KV_REC_HEADER_SIZE + 2];
    kv_seg_header_encode(seg, 1, 1699999000000ull);
    kv_record_encode(seg + KV_SEG_HEADER_SIZE, KV_REC_PUT, 0, 6, 0, 0, "k", 1, "v", 1);
    header(&b, RSI_SNAPSHOT, 1, 2, 0, 99, 15);
    file(&b, "0000000001.seg", seg, sizeof seg);
    file(&b, "0000000002.seg", NULL, 0);
    end(&b, 6);
    put(&b, 7, "after", "the snapshot", 0);
    byte(&b, 'P');
    rc |= save(dir, "snapshot", &b);

    /* Keepalives and ack requests only, byte by byte. */
    header(&b, 0, 42, 0, 0, 0, 0);
    add(&b, "PGPPG", 5);
    rc |= save(dir, "pings", &b);

    /* A replica's acks, for kvrs_parse_command (the stream refuses '*'),
     * then a command whose count has too many digits: refused, however
     * it is cut. */
    static const char acks[] = "*5\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n5\r\n$4\r\nFACK\r\n$1\r\n4\r\n"
                               "*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$5\r\n12345\r\n"
                               "*000000000000001\r\n$1\r\na\r\n";
    header(&b, 0, 1, 3, 3, 3, 3);
    add(&b, acks, sizeof acks - 1);
    rc |= save(dir, "acks", &b);

    /* Build mode: a put (klen 3, vlen 5, flags 9), a tombstone, a batch
     * of three, a ping, an ack request, a put with an expiry, a batch of
     * two, all numbered from 100. */
    static const uint8_t mix[] = {
        RSI_PUT, 3, 5, 9, 'k', 'e', 'y', 'v', 'a', 'l', 'u', 'e',
        RSI_TOMB, 3, 'k', 'e', 'y',
        RSI_BATCH, 2, 0x22, 'a', 'b', 'c', 0x03, 'd', 0x10, 'v',
        RSI_PING, RSI_GETACK,
        RSI_PUT | RSI_EXPIRE, 1, 1, 0, 200, 'x', 'y',
        RSI_BATCH, 1, 0x12, 'p', 'q', 0x05, 'r', 's',
    };
    header(&b, RSI_BUILD_MARKER, 100, 5, 0, 60, 200);
    ops(&b, mix, sizeof mix);
    rc |= save(dir, "build_records", &b);

    /* Build mode, a full resync, one byte at a time: segment 1 with 40
     * bytes, segment 2 empty, the end (at 0 + 9), a put and a batch from
     * 10. */
    uint8_t snap[128];
    size_t sn = 0;
    snap[sn++] = RSI_FILE;
    snap[sn++] = 0;
    snap[sn++] = 40;
    for (int i = 0; i < 40; i++) snap[sn++] = (uint8_t)('a' + i % 26);
    static const uint8_t rest[] = {
        RSI_FILE, 1, 0, RSI_END, 9, RSI_PUT, 1, 1, 0, 'k', 'v', RSI_BATCH, 0, 0x02, 'z', RSI_PING,
    };
    memcpy(snap + sn, rest, sizeof rest);
    sn += sizeof rest;
    header(&b, RSI_BUILD_MARKER | RSI_SNAPSHOT, 1, 0, 0, 0, 0);
    ops(&b, snap, sn);
    rc |= save(dir, "build_snapshot", &b);

    /* Build mode, things refused: a commit mark, a batch entry at the
     * top level, a record out of sequence, a flipped bit, a record over
     * a small limit; each stream stops at its first error, so one seed
     * each. */
    static const uint8_t mark[] = {RSI_PUT, 1, 0, 0, 'a', RSI_PUT | RSI_ALT, 0, 0};
    header(&b, RSI_BUILD_MARKER, 7, 0, 1, 2, 3);
    ops(&b, mark, sizeof mark);
    rc |= save(dir, "build_commit_mark", &b);
    static const uint8_t entry[] = {RSI_TOMB | RSI_ALT, 1, 'k'};
    header(&b, RSI_BUILD_MARKER, 7, 10, 0, 0, 0);
    ops(&b, entry, sizeof entry);
    rc |= save(dir, "build_batch_entry", &b);
    static const uint8_t skew[] = {RSI_TOMB, 1, 'k', RSI_TOMB | RSI_SKEW, 0xff, 1, 'k'};
    header(&b, RSI_BUILD_MARKER, 7, 30, 0, 0, 0);
    ops(&b, skew, sizeof skew);
    rc |= save(dir, "build_out_of_sequence", &b);
    static const uint8_t flip[] = {RSI_PUT | RSI_CORRUPT, 1, 1, 0, 'k', 'v', 0, 30, 4};
    header(&b, RSI_BUILD_MARKER, 7, 0, 0, 0, 0);
    ops(&b, flip, sizeof flip);
    rc |= save(dir, "build_flipped_bit", &b);
    static const uint8_t big[] = {RSI_PUT, 32, 255, 0};
    header(&b, RSI_BUILD_MARKER | RSI_SMALL_LIMIT, 7, 100, 100, 100, 100);
    ops(&b, big, sizeof big);
    rc |= save(dir, "build_over_the_limit", &b);
    return rc;
}
