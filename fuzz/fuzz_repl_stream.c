/*
 * fuzz_repl_stream — fuzz target for the replication stream's parser
 * (kv/repl/repl_stream.h: kvrs_next, as a replica reads its primary's
 * stream) and for kvrs_parse_command (as a primary reads its replicas'
 * "REPLCONF ACK n FACK m").
 *
 * One LLVMFuzzerTestOneInput for libFuzzer, AFL++ (its libFuzzer driver)
 * and fuzz/replay.c, which CTest runs over the seed corpus and the past
 * crashes. See fuzz/README.md.
 *
 * Input (fuzz/repl_stream_input.h). A 13-byte header, then a payload:
 *  - byte 0, the mode: bit 0 starts the parser in a snapshot (files, then
 *    an 'E', as after +FULLRESYNC); bit 1 lowers the parser's record
 *    limit to RSI_LIMIT bytes; if the high four bits are RSI_BUILD_MARKER
 *    (0xB?), the payload is a script (build mode), else it is the stream;
 *  - bytes 1-8: the sequence number the parser starts at (u64, LE);
 *  - bytes 9-12: the chunking: the replica's link receives the stream in
 *    chunks of b + 1 bytes, b cycling through these four bytes.
 * Build mode: the script's ops (repl_stream_input.h) make the stream of
 * valid frames from the input's bytes, with the project's encoders and
 * correct CRCs, records numbered on from the parser's first sequence
 * number (or the last 'E''s): puts, tombstones, batches, files, snapshot
 * ends, pings, ack requests, raw bytes; and ops that flip a bit of the
 * frame just built, skew a record's sequence number, make a commit mark,
 * a trailer or a top-level batch entry. Most mutations of a CRC-checked
 * stream only ever reach a CRC check; this lets them reach the sequence,
 * snapshot, name and limit checks behind it. Inputs under 13 bytes only
 * go to kvrs_parse_command; inputs over MAX_INPUT bytes are skipped.
 *
 * The stream is parsed twice: whole, and as a link reads it (the next
 * chunk appended to the bytes not yet consumed, every event taken after
 * each chunk), each time until the first error. The link's buffer holds
 * exactly the bytes received (the rest of its room is poisoned under
 * ASan), so a read past what the parser was given is caught.
 *
 * Invariants checked (abort() on a violation, so every fuzzer and the
 * replay see it):
 *  1. kvrs_next returns the type it puts in ev->type, and uses no more
 *     bytes than it was given; NEED_MORE and ERROR use none and leave the
 *     parser's state as it was; ERROR names a reason; any other event
 *     uses at least one byte.
 *  2. A RECORD's bytes lie inside the bytes used (the frame's tag, then
 *     the record); they decode with kv_record_decode to KV_OK, as a put,
 *     tombstone or batch with rflags 0, of the reported length, seq and
 *     last seq, within the parser's limit; its seq is the parser's
 *     next_seq before the call, and next_seq is last seq + 1 after.
 *  3. Records come only when no snapshot is pending and no file is open.
 *  4. FILE_BEGIN comes only in a snapshot, outside a file, for a frame
 *     whose header CRC matches, with a segment's name (NNNNNNNNNN.seg,
 *     id > 0) and a size within KVRS_MAX_FILE; FILE_DATA only inside a
 *     file, inside the buffer, never more bytes than are left of it;
 *     FILE_END only when the FILE_DATA totals equal the FILE_BEGIN size,
 *     and the 4 bytes used are the CRC32 of the file's bytes.
 *  5. SNAPSHOT_END comes only in a snapshot, outside a file, with the
 *     sequence number and a matching CRC of its frame; records then
 *     start at that number + 1. DIVERGED comes only in a snapshot before
 *     any file, at most once, with its sequence number and a matching CRC
 *     of its frame. PING and GETACK use their tag alone and change
 *     nothing.
 *  6. The chunking changes nothing: the same events (types, sequence
 *     numbers, record bytes, file names, sizes and bytes, error reasons),
 *     the same end (NEED_MORE or ERROR), the same bytes consumed in all
 *     and the same parser state.
 *  7. kvrs_parse_command, on the payload, command after command (at most
 *     MAX_COMMANDS): returns -1, 0 or an argument count up to its max;
 *     with a count, uses between 1 and the bytes given, and every
 *     argument is NUL-terminated; parsing exactly the bytes used gives
 *     the same command, and any fewer bytes need more (0). A refused
 *     command (-1) needs more at every length until one is refused, and
 *     is refused at every length after; one that needs more needs more
 *     at every shorter length too. (Within CMD_WINDOW bytes.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_record.h"
#include "repl_stream.h"
#include "repl_stream_input.h"

#if defined(__SANITIZE_ADDRESS__)
#define FZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FZ_ASAN 1
#endif
#endif
#ifdef FZ_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define MAX_INPUT (16u << 10)  /* bytes */
#define MAX_STREAM (32u << 10) /* bytes a script may build */
#define FRAME_ROOM 512u        /* more than any frame a script op builds */
#define CMD_MAX 5              /* arguments: REPLCONF ACK n FACK m */
#define CMD_WINDOW 512u        /* bytes of a command the checks look at */
#define MAX_COMMANDS 16
#define EXPIRE_BASE 1700000000000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "fuzz_repl_stream: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                                               \
        }                                                                                                          \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    return p;
}

static int inside(const uint8_t *p, size_t n, const uint8_t *base, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    return p != NULL && a >= b && n <= len && a - b <= len - n;
}

/* ---- build mode: a script into a stream of valid frames ---- */

typedef struct cursor {
    const uint8_t *p;
    size_t n, i;
} cursor;

static uint8_t next_byte(cursor *c)
{
    return c->i < c->n ? c->p[c->i++] : 0;
}

static void take(cursor *c, uint8_t *out, size_t n)
{
    for (size_t j = 0; j < n; j++) out[j] = next_byte(c);
}

/* A put, tombstone, batch or mark at f + 1 (f[0] = 'R'); *seq moves past
 * a data record's last sequence number. Returns the frame's length. */
static size_t build_record(cursor *c, uint8_t op, uint8_t *f, uint64_t *seq)
{
    uint64_t s = *seq;
    if (op & RSI_SKEW) s += (uint64_t)(int64_t)(int8_t)next_byte(c);
    uint8_t kv[32 + 255];
    uint32_t kl, vl, count = 1;
    size_t n;
    f[0] = 'R';
    if ((op & RSI_OP_MASK) == RSI_PUT && (op & RSI_ALT)) {
        uint8_t type = next_byte(c) & 1 ? KV_REC_SEAL : KV_REC_COMMIT;
        return 1 + kv_mark_encode(f + 1, type, s, next_byte(c), 1);
    } else if ((op & RSI_OP_MASK) == RSI_PUT) {
        kl = next_byte(c) % 33u;
        vl = next_byte(c);
        uint32_t flags = next_byte(c);
        uint64_t exp = op & RSI_EXPIRE ? EXPIRE_BASE + next_byte(c) : 0;
        take(c, kv, kl + vl);
        n = kv_record_encode(f + 1, KV_REC_PUT, 0, s, exp, flags, kv, kl, kv + kl, vl);
    } else if ((op & RSI_OP_MASK) == RSI_TOMB) {
        kl = next_byte(c) % 33u;
        take(c, kv, kl);
        n = kv_record_encode(f + 1, KV_REC_TOMBSTONE, op & RSI_ALT ? KV_RF_IN_BATCH : 0, s, 0, 0, kv, kl, NULL, 0);
    } else { /* a batch, built as kv_writer.c's encode_batch builds one */
        count = 1u + next_byte(c) % 4u;
        size_t pos = 1 + KV_REC_HEADER_SIZE;
        for (uint32_t e = 0; e < count; e++) {
            uint8_t d = next_byte(c);
            uint8_t type = d & 1 ? KV_REC_TOMBSTONE : KV_REC_PUT;
            kl = (d >> 1) & 7u;
            vl = type == KV_REC_PUT ? (uint32_t)(d >> 4) : 0;
            take(c, kv, kl + vl);
            pos += kv_record_encode(f + pos, type, KV_RF_IN_BATCH, s + e, 0, 0, kv, kl, kv + kl, vl);
        }
        n = kv_record_finish(f + 1, KV_REC_BATCH, 0, s, 0, count, 0,
                             (uint32_t)(pos - 1 - KV_REC_HEADER_SIZE));
    }
    *seq = s + count;
    return 1 + n;
}

/* An 'F' frame: head (its CRC), the file's bytes, their CRC. A
 * segment's name goes through the primary's encoder (kvrs_file_head);
 * any other name, which may hold any bytes, is framed here. */
static size_t build_file(cursor *c, uint8_t op, uint8_t *f)
{
    char name[KVRS_MAX_NAME + 1];
    uint8_t d = next_byte(c);
    uint32_t nlen = d < 0xC0 ? 0 : (d & 0x3fu) + 1u;
    if (nlen) take(c, (uint8_t *)name, nlen);
    else kv_seg_name(name, sizeof name, (uint32_t)d + 1u);
    uint8_t size = next_byte(c);
    uint64_t declared = size;
    if (op & RSI_ALT) declared |= (uint64_t)next_byte(c) << 25;
    size_t head;
    if (nlen == 0) {
        head = kvrs_file_head(f, name, declared);
    } else {
        f[0] = 'F';
        kv_put_u32(f + 1, nlen);
        kv_put_u64(f + 5, declared);
        memcpy(f + 13, name, nlen);
        kv_put_u32(f + 13 + nlen, kv_crc32(0, f + 1, 12 + (size_t)nlen));
        head = 17 + (size_t)nlen;
    }
    uint8_t *bytes = f + head;
    take(c, bytes, size);
    return head + size + kvrs_file_tail(bytes + size, kv_crc32(0, bytes, size));
}

/* Runs the script: the stream into out (MAX_STREAM bytes of room). */
static size_t build_stream(const uint8_t *script, size_t n, uint64_t seq, uint8_t *out)
{
    cursor c = {script, n, 0};
    size_t len = 0;
    while (c.i < c.n && len + FRAME_ROOM <= MAX_STREAM) {
        uint8_t op = next_byte(&c), *f = out + len;
        size_t fl;
        switch (op & RSI_OP_MASK) {
        case RSI_PUT:
        case RSI_TOMB:
        case RSI_BATCH:
            fl = build_record(&c, op, f, &seq);
            break;
        case RSI_RAW:
            fl = next_byte(&c);
            take(&c, f, fl);
            break;
        case RSI_PING:
        case RSI_GETACK:
            f[0] = (op & RSI_OP_MASK) == RSI_PING ? 'P' : 'G';
            fl = 1;
            break;
        case RSI_FILE:
            fl = build_file(&c, op, f);
            break;
        default: { /* RSI_END */
            uint8_t d = next_byte(&c);
            uint64_t end = op & RSI_ALT ? UINT64_MAX - d : seq - 1 + d;
            fl = kvrs_snapshot_end(f, end);
            seq = end + 1;
            break;
        }
        }
        CHECK(fl <= FRAME_ROOM);
        if ((op & RSI_CORRUPT) && fl > 0) {
            size_t pos = ((size_t)next_byte(&c) << 8) | next_byte(&c);
            f[pos % fl] ^= (uint8_t)(1u << (next_byte(&c) & 7));
        }
        len += fl;
    }
    return len;
}

/* ---- invariants 1-5: one kvrs_next call ---- */

typedef struct fev {
    kvrs_event type;
    uint64_t seq, last_seq, size;
    size_t off, len; /* in the log's bytes: a record's, a file's (all of it), a name, an error */
} fev;

typedef struct evlog {
    fev *e;
    size_t n, cap;
    uint8_t *bytes;
    size_t nbytes, bcap;
    kvrs_event end;
    size_t consumed; /* bytes the events used, in all */
    kvrs_parser p;
} evlog;

/* What the harness knows of the open file. */
typedef struct track {
    int in_file;
    uint64_t left;
    uint32_t crc;
} track;

static void log_bytes(evlog *lg, fev *e, const void *p, size_t n)
{
    if (lg->nbytes + n > lg->bcap) {
        size_t nc = lg->bcap ? lg->bcap : 1024;
        while (nc < lg->nbytes + n) nc *= 2;
        lg->bytes = realloc(lg->bytes, nc);
        CHECK(lg->bytes != NULL);
        lg->bcap = nc;
    }
    if (n) memcpy(lg->bytes + lg->nbytes, p, n);
    lg->nbytes += n;
    e->len += n;
}

/* Notes one event; consecutive FILE_DATA become one (a file's bytes,
 * however they were cut). */
static void log_event(evlog *lg, const kvrs_ev *ev)
{
    fev *last = lg->n ? &lg->e[lg->n - 1] : NULL;
    if (ev->type == KVRS_FILE_DATA && last && last->type == KVRS_FILE_DATA) {
        log_bytes(lg, last, ev->data, ev->len);
        return;
    }
    if (lg->n == lg->cap) {
        lg->cap = lg->cap ? 2 * lg->cap : 64;
        lg->e = realloc(lg->e, lg->cap * sizeof *lg->e);
        CHECK(lg->e != NULL);
    }
    fev *e = &lg->e[lg->n++];
    memset(e, 0, sizeof *e);
    e->type = ev->type;
    e->off = lg->nbytes;
    if (ev->type == KVRS_RECORD || ev->type == KVRS_SNAPSHOT_END) e->seq = ev->seq;
    if (ev->type == KVRS_RECORD) e->last_seq = ev->last_seq;
    if (ev->type == KVRS_FILE_BEGIN) e->size = ev->size;
    if (ev->type == KVRS_RECORD || ev->type == KVRS_FILE_DATA) log_bytes(lg, e, ev->data, ev->len);
    if (ev->type == KVRS_FILE_BEGIN) log_bytes(lg, e, ev->name, strlen(ev->name));
    if (ev->type == KVRS_ERROR) log_bytes(lg, e, ev->error, strlen(ev->error));
}

static int same_parser(const kvrs_parser *a, const kvrs_parser *b)
{
    return a->next_seq == b->next_seq && a->in_file == b->in_file && a->file_left == b->file_left &&
           a->file_crc == b->file_crc && a->snapshot == b->snapshot && a->max_record == b->max_record &&
           a->files_seen == b->files_seen;
}

static void check_record(const kvrs_parser *was, const kvrs_parser *p, const uint8_t *buf, size_t used,
                         const kvrs_ev *ev)
{
    CHECK(!was->snapshot && !was->in_file && !p->snapshot && !p->in_file); /* 3 */
    CHECK(buf[0] == 'R' && used == 1 + ev->len && inside(ev->data, ev->len, buf + 1, used - 1));
    CHECK(ev->len >= KV_REC_HEADER_SIZE && ev->len <= was->max_record);
    kv_record r;
    CHECK(kv_record_decode(ev->data, ev->len, &r) == KV_OK);
    CHECK(r.type == KV_REC_PUT || r.type == KV_REC_TOMBSTONE || r.type == KV_REC_BATCH);
    CHECK(r.rflags == 0 && r.len == ev->len && r.seq == ev->seq && kv_record_last_seq(&r) == ev->last_seq);
    CHECK(ev->seq == was->next_seq && p->next_seq == ev->last_seq + 1);
    CHECK(p->max_record == was->max_record);
}

static void check_file_begin(const kvrs_parser *was, const kvrs_parser *p, track *t, const uint8_t *buf,
                             size_t used, const kvrs_ev *ev)
{
    CHECK(was->snapshot && !was->in_file && !t->in_file && p->snapshot && p->in_file);
    CHECK(p->next_seq == was->next_seq && buf[0] == 'F');
    size_t nl = strnlen(ev->name, sizeof ev->name);
    CHECK(nl >= 1 && nl <= KVRS_MAX_NAME && used == 17 + nl);
    CHECK(kv_get_u32(buf + 1) == nl && memcmp(buf + 13, ev->name, nl) == 0);
    CHECK(kv_crc32(0, buf + 1, 12 + nl) == kv_get_u32(buf + 13 + nl));
    uint32_t id;
    CHECK(kv_seg_parse_name(ev->name, &id) == 1 && id > 0);
    CHECK(ev->size == kv_get_u64(buf + 5) && ev->size <= KVRS_MAX_FILE && p->file_left == ev->size);
    t->in_file = 1;
    t->left = ev->size;
    t->crc = 0;
}

static void check_file_data(const kvrs_parser *was, const kvrs_parser *p, track *t, const uint8_t *buf,
                            size_t used, const kvrs_ev *ev)
{
    CHECK(was->in_file && t->in_file && p->in_file && p->snapshot && p->next_seq == was->next_seq);
    CHECK(ev->len >= 1 && ev->len <= t->left && used == ev->len && inside(ev->data, ev->len, buf, used));
    t->left -= ev->len;
    t->crc = kv_crc32(t->crc, ev->data, ev->len);
    CHECK(p->file_left == t->left);
}

/* One kvrs_next call on buf[0, len), checked and logged. */
static kvrs_event step(kvrs_parser *p, track *t, const uint8_t *buf, size_t len, size_t *used, evlog *lg)
{
    kvrs_parser was = *p;
    kvrs_ev ev;
    memset(&ev, 0, sizeof ev);
    size_t u = (size_t)-1;
    kvrs_event r = kvrs_next(p, buf, len, &u, &ev);
    CHECK(r == ev.type && u <= len);
    *used = u;
    if (r == KVRS_NEED_MORE || r == KVRS_ERROR) {
        CHECK(u == 0 && same_parser(&was, p));
        CHECK(r == KVRS_NEED_MORE || (memchr(ev.error, 0, sizeof ev.error) != NULL && ev.error[0] != 0));
        if (r == KVRS_ERROR) log_event(lg, &ev);
        return r;
    }
    CHECK(u >= 1);
    switch (r) {
    case KVRS_RECORD:
        check_record(&was, p, buf, u, &ev);
        break;
    case KVRS_FILE_BEGIN:
        check_file_begin(&was, p, t, buf, u, &ev);
        break;
    case KVRS_FILE_DATA:
        check_file_data(&was, p, t, buf, u, &ev);
        break;
    case KVRS_FILE_END:
        CHECK(was.in_file && t->in_file && !p->in_file && p->snapshot && t->left == 0 && u == 4);
        CHECK(kv_get_u32(buf) == t->crc && p->next_seq == was.next_seq);
        t->in_file = 0;
        break;
    case KVRS_SNAPSHOT_END:
        CHECK(was.snapshot && !was.in_file && !t->in_file && !p->snapshot && !p->in_file);
        CHECK(u == 13 && buf[0] == 'E' && ev.seq == kv_get_u64(buf + 1));
        CHECK(kv_crc32(0, buf + 1, 8) == kv_get_u32(buf + 9) && p->next_seq == ev.seq + 1);
        break;
    case KVRS_DIVERGED:
        CHECK(was.snapshot && !was.files_seen && !was.in_file && p->snapshot && p->files_seen);
        CHECK(u == 13 && buf[0] == 'D' && ev.seq == kv_get_u64(buf + 1));
        CHECK(kv_crc32(0, buf + 1, 8) == kv_get_u32(buf + 9) && p->next_seq == was.next_seq);
        break;
    case KVRS_PING:
    case KVRS_GETACK:
        CHECK(!was.in_file && u == 1 && buf[0] == (r == KVRS_PING ? 'P' : 'G') && same_parser(&was, p));
        break;
    default:
        CHECK(!"an event kvrs_next does not have");
    }
    log_event(lg, &ev);
    return r;
}

/* ---- invariant 6: the chunking changes nothing ---- */

typedef struct start {
    uint64_t next_seq;
    int snapshot;
    size_t max_record;
} start;

/*
 * Parses s[0, n) as a replica's link reads it: chunks of pat[k % 4] + 1
 * bytes (pat NULL: one chunk), the bytes not consumed kept and the next
 * chunk appended, every event taken after each chunk; up to the first
 * error. The link's buffer has room for the whole stream; what it does
 * not hold is poisoned.
 */
static void parse_stream(const start *st, const uint8_t *s, size_t n, const uint8_t *pat, evlog *lg)
{
    kvrs_parser p;
    kvrs_init(&p, st->next_seq, st->snapshot);
    p.max_record = st->max_record;
    track t = {0, 0, 0};
    uint8_t *pend = xmalloc(n);
    POISON(pend, n);
    size_t plen = 0, fed = 0, k = 0;
    kvrs_event r;
    do {
        size_t c = pat ? (size_t)pat[k++ % 4] + 1 : n;
        if (c > n - fed) c = n - fed;
        UNPOISON(pend + plen, c);
        if (c) memcpy(pend + plen, s + fed, c);
        plen += c;
        fed += c;
        size_t off = 0, used;
        while ((r = step(&p, &t, pend + off, plen - off, &used, lg)) != KVRS_NEED_MORE && r != KVRS_ERROR)
            off += used;
        if (off) {
            memmove(pend, pend + off, plen - off);
            plen -= off;
            POISON(pend + plen, n - plen);
        }
    } while (r != KVRS_ERROR && fed < n);
    lg->end = r;
    lg->consumed = fed - plen;
    lg->p = p;
    UNPOISON(pend, n);
    free(pend);
}

static void check_same(const evlog *a, const evlog *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const fev *x = &a->e[i], *y = &b->e[i];
        CHECK(x->type == y->type && x->seq == y->seq && x->last_seq == y->last_seq && x->size == y->size);
        CHECK(x->len == y->len && (x->len == 0 || memcmp(a->bytes + x->off, b->bytes + y->off, x->len) == 0));
    }
    CHECK(a->end == b->end && a->consumed == b->consumed && same_parser(&a->p, &b->p));
}

static void evlog_free(evlog *lg)
{
    free(lg->e);
    free(lg->bytes);
}

/* ---- invariant 7: the replicas' commands ---- */

/* kvrs_parse_command on block[0, k), the rest of the block's cap bytes
 * poisoned. */
static int command_at(uint8_t *block, size_t cap, size_t k, size_t *used, char (*args)[65])
{
    UNPOISON(block, cap);
    POISON(block + k, cap - k);
    memset(args, 0, CMD_MAX * sizeof *args);
    *used = (size_t)-1;
    int r = kvrs_parse_command(block, k, used, args, CMD_MAX);
    CHECK(r >= -1 && r <= CMD_MAX);
    return r;
}

/* Checks the command at buf[0, len) (its first CMD_WINDOW bytes); returns
 * the bytes it used, 0 if none was parsed. */
static size_t check_command(const uint8_t *buf, size_t len)
{
    size_t cap = len < CMD_WINDOW ? len : CMD_WINDOW, used, u2, k = 0;
    uint8_t *block = xmalloc(cap);
    if (cap) memcpy(block, buf, cap);
    char(*args)[65] = xmalloc(CMD_MAX * sizeof *args);
    char(*again)[65] = xmalloc(CMD_MAX * sizeof *again);
    int r = command_at(block, cap, cap, &used, args), rk;
    if (r > 0) {
        CHECK(used >= 1 && used <= cap);
        for (int i = 0; i < r; i++) CHECK(memchr(args[i], 0, sizeof args[i]) != NULL);
        CHECK(command_at(block, cap, used, &u2, again) == r && u2 == used);
        CHECK(memcmp(args, again, (size_t)r * sizeof *args) == 0);
        for (k = 0; k < used; k++) CHECK(command_at(block, cap, k, &u2, again) == 0);
    } else if (r < 0) {
        while ((rk = command_at(block, cap, k, &u2, again)) == 0) {
            CHECK(k < cap);
            k++;
        }
        CHECK(rk == -1);
        for (size_t j = k + 1; j < cap && j <= k + 16; j++) CHECK(command_at(block, cap, j, &u2, again) == -1);
    } else {
        for (k = 0; k < cap; k += 1 + k / 2) CHECK(command_at(block, cap, k, &u2, again) == 0);
    }
    UNPOISON(block, cap);
    free(block);
    free(args);
    free(again);
    return r > 0 ? used : 0;
}

static void check_commands(const uint8_t *buf, size_t len)
{
    size_t off = 0, used;
    for (int i = 0; i < MAX_COMMANDS && off < len && (used = check_command(buf + off, len - off)) > 0; i++)
        off += used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT) return 0;
    if (size < RSI_HEADER) {
        check_commands(data, size);
        return 0;
    }
    uint8_t mode = data[RSI_MODE];
    start st = {kv_get_u64(data + RSI_SEQ), (mode & RSI_SNAPSHOT) != 0,
                mode & RSI_SMALL_LIMIT ? RSI_LIMIT : KV_MAX_RECORD_LEN};
    const uint8_t *pat = data + RSI_CHUNKS, *payload = data + RSI_HEADER;
    size_t plen = size - RSI_HEADER;
    check_commands(payload, plen);

    /* The stream, in a heap block of exactly its length. */
    uint8_t *s;
    size_t n;
    if ((mode & RSI_BUILD_MASK) == RSI_BUILD_MARKER) {
        uint8_t *built = xmalloc(MAX_STREAM);
        n = build_stream(payload, plen, st.next_seq, built);
        s = xmalloc(n);
        if (n) memcpy(s, built, n);
        free(built);
    } else {
        n = plen;
        s = xmalloc(n);
        if (n) memcpy(s, payload, n);
    }
    evlog whole, chunked;
    memset(&whole, 0, sizeof whole);
    memset(&chunked, 0, sizeof chunked);
    parse_stream(&st, s, n, NULL, &whole);
    parse_stream(&st, s, n, pat, &chunked);
    check_same(&whole, &chunked);
    evlog_free(&whole);
    evlog_free(&chunked);
    free(s);
    return 0;
}
