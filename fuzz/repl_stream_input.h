/*
 * repl_stream_input — the input layout of fuzz_repl_stream (described at
 * the top of fuzz_repl_stream.c), shared with the generator of its seeds
 * (make_repl_seeds.c), so that the seeds are written in exactly this
 * layout.
 */
#ifndef FUZZ_REPL_STREAM_INPUT_H
#define FUZZ_REPL_STREAM_INPUT_H

/* The input's header: mode byte, the parser's first sequence number (u64,
 * little-endian), four chunk sizes (each byte + 1). */
#define RSI_HEADER 13u
#define RSI_MODE 0
#define RSI_SEQ 1
#define RSI_CHUNKS 9

/* Mode bits. */
#define RSI_SNAPSHOT 0x01u    /* the parser starts in a snapshot (+FULLRESYNC) */
#define RSI_SMALL_LIMIT 0x02u /* records over RSI_LIMIT bytes are over the parser's limit */
#define RSI_LIMIT 256u
#define RSI_BUILD_MASK 0xF0u
#define RSI_BUILD_MARKER 0xB0u /* (mode & RSI_BUILD_MASK) == this: the rest is a script */

/* Script ops: the low three bits of an op byte pick the frame, the high
 * bits change it. The operands follow the op byte (a byte each, unless
 * said otherwise); the script reads zeros past its end. */
enum rsi_op {
    RSI_PUT = 0,    /* klen % 33, vlen, flags, [expiry], key, value bytes; ALT: a mark instead
                       (commit, or trailer if the next byte is odd) */
    RSI_TOMB = 1,   /* klen % 33, key bytes; ALT: with rflags KV_RF_IN_BATCH */
    RSI_BATCH = 2,  /* count - 1 (% 4), then per entry a byte d: tombstone if d & 1, klen
                       (d >> 1) & 7, vlen d >> 4 (a put's), and its key and value bytes */
    RSI_RAW = 3,    /* n, then n bytes copied verbatim */
    RSI_PING = 4,   /* 'P' */
    RSI_GETACK = 5, /* 'G' */
    RSI_FILE = 6,   /* name byte d: d < 0xC0 names segment d + 1, else (d & 0x3f) + 1 name
                       bytes follow; then size, and size bytes; ALT: the size field also
                       holds the next byte << 25 (up to 8 GiB) */
    RSI_END = 7,    /* d: the snapshot's end at (next sequence number - 1 + d); ALT: at
                       UINT64_MAX - d */
};
#define RSI_OP_MASK 0x07u
#define RSI_CORRUPT 0x08u /* after the frame: a u16 (big-endian) position % the frame's length
                             and a bit number: that bit is flipped */
#define RSI_SKEW 0x10u    /* records: the next byte, signed, is added to the sequence number */
#define RSI_EXPIRE 0x20u  /* puts: an expiry byte follows the flags */
#define RSI_ALT 0x40u     /* as each op says */

#endif
