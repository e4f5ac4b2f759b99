/*
 * The replication stream's framing and the replication state file
 * (kv/repl/repl_stream.c, kv/repl/repl_state.c): a stream of records
 * with consecutive sequence numbers (puts, tombstones, batches), or a
 * snapshot's files and its end, gives the same events whether it arrives
 * whole, cut in two at any byte or one byte at a time; a record out of
 * sequence, a record before the snapshot's end, a file outside a
 * snapshot, a file that names no segment, a commit mark or a trailer are
 * refused; no single flipped bit in a record, a file frame's head, a
 * file's bytes or a snapshot end is ever accepted, and a record is never
 * yielded with altered bytes; a replica's "REPLCONF ACK n FACK m" parses
 * the same however it is split, and malformed or oversized commands are
 * refused. The state file keeps every field across a save and a load,
 * and any changed byte in it makes the load refuse it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_record.h"
#include "repl_state.h"
#include "repl_stream.h"
#include "testutil.h"

/* ---- building streams ---- */

typedef struct sbuf {
    uint8_t *p;
    size_t len, cap;
} sbuf;

static uint8_t *sb_room(sbuf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n) nc *= 2;
        b->p = realloc(b->p, nc);
        ck_assert_ptr_nonnull(b->p);
        b->cap = nc;
    }
    return b->p + b->len;
}

static void sb_add(sbuf *b, const void *p, size_t n)
{
    if (n == 0) return;
    memcpy(sb_room(b, n), p, n);
    b->len += n;
}

static void sb_byte(sbuf *b, uint8_t c)
{
    sb_add(b, &c, 1);
}

/* Appends 'R' and a put; returns the frame's offset. */
static size_t add_put(sbuf *b, uint64_t seq, const char *key, const char *val, uint64_t expire_ms)
{
    size_t at = b->len;
    sb_byte(b, 'R');
    uint32_t kl = (uint32_t)strlen(key), vl = (uint32_t)strlen(val);
    b->len += kv_record_encode(sb_room(b, kv_record_size(kl, vl)), KV_REC_PUT, 0, seq, expire_ms, 7, key, kl, val,
                               vl);
    return at;
}

static size_t add_tomb(sbuf *b, uint64_t seq, const char *key)
{
    size_t at = b->len;
    sb_byte(b, 'R');
    uint32_t kl = (uint32_t)strlen(key);
    b->len += kv_record_encode(sb_room(b, kv_record_size(kl, 0)), KV_REC_TOMBSTONE, 0, seq, 0, 0, key, kl, NULL, 0);
    return at;
}

/* Appends 'R' and a batch of n entries (puts, every third a tombstone)
 * with sequence numbers seq .. seq + n - 1, built as the writer builds
 * one (kv_writer.c, encode_batch): entries with KV_RF_IN_BATCH encoded
 * after the batch's header, then the header sealed over them. */
static size_t add_batch(sbuf *b, uint64_t seq, int n)
{
    size_t at = b->len;
    sb_byte(b, 'R');
    size_t start = b->len;
    sb_room(b, KV_REC_HEADER_SIZE);
    b->len += KV_REC_HEADER_SIZE;
    for (int i = 0; i < n; i++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "bk%d", i);
        snprintf(v, sizeof v, "bv-%llu", (unsigned long long)seq + (uint64_t)i);
        uint32_t kl = (uint32_t)strlen(k), vl = i % 3 == 2 ? 0 : (uint32_t)strlen(v);
        uint8_t type = i % 3 == 2 ? KV_REC_TOMBSTONE : KV_REC_PUT;
        b->len += kv_record_encode(sb_room(b, kv_record_size(kl, vl)), type, KV_RF_IN_BATCH, seq + (uint64_t)i, 0,
                                   0, k, kl, v, vl);
    }
    kv_record_finish(b->p + start, KV_REC_BATCH, 0, seq, 0, (uint32_t)n, 0,
                     (uint32_t)(b->len - start - KV_REC_HEADER_SIZE));
    return at;
}

/* An 'F' frame's head for a name of nlen bytes (any bytes), as
 * kvrs_file_head writes one but without its limits. */
static size_t add_file_head_raw(sbuf *b, const char *name, uint32_t nlen, uint64_t size)
{
    size_t at = b->len;
    uint8_t *h = sb_room(b, 17 + (size_t)nlen);
    h[0] = 'F';
    kv_put_u32(h + 1, nlen);
    kv_put_u64(h + 5, size);
    memcpy(h + 13, name, nlen);
    kv_put_u32(h + 13 + nlen, kv_crc32(0, h + 1, 12 + (size_t)nlen));
    b->len += 17 + (size_t)nlen;
    return at;
}

/* A whole 'F' frame: head, the bytes, their CRC. */
static size_t add_file(sbuf *b, const char *name, const uint8_t *data, size_t n)
{
    size_t at = b->len;
    b->len += kvrs_file_head(sb_room(b, 17 + KVRS_MAX_NAME + 4), name, n);
    sb_add(b, data, n);
    b->len += kvrs_file_tail(sb_room(b, 4), kv_crc32(0, data, n));
    return at;
}

static size_t add_end(sbuf *b, uint64_t seq)
{
    size_t at = b->len;
    b->len += kvrs_snapshot_end(sb_room(b, 13), seq);
    return at;
}

/* ---- parsing streams ---- */

#define MAX_EVENTS 64

typedef struct event {
    kvrs_event type;
    uint64_t seq, last_seq, size;
    char name[KVRS_MAX_NAME + 1];
    size_t len;
    uint8_t bytes[4096]; /* a record's bytes, or all of a file's */
} event;

typedef struct evlist {
    int n;
    event e[MAX_EVENTS];
    kvrs_event end; /* KVRS_NEED_MORE or KVRS_ERROR */
    size_t left;    /* bytes kept unconsumed at the end */
    kvrs_parser p;  /* the parser's state at the end */
} evlist;

/* Notes one event; a file's bytes, however they were cut, become one
 * FILE_DATA event. */
static void note(evlist *l, const kvrs_ev *ev)
{
    event *last = l->n ? &l->e[l->n - 1] : NULL;
    if (ev->type == KVRS_FILE_DATA && last && last->type == KVRS_FILE_DATA) {
        ck_assert_uint_le(last->len + ev->len, sizeof last->bytes);
        memcpy(last->bytes + last->len, ev->data, ev->len);
        last->len += ev->len;
        return;
    }
    ck_assert_int_lt(l->n, MAX_EVENTS);
    event *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    e->type = ev->type;
    if (ev->type == KVRS_RECORD || ev->type == KVRS_FILE_DATA) {
        ck_assert_uint_le(ev->len, sizeof e->bytes);
        memcpy(e->bytes, ev->data, ev->len);
        e->len = ev->len;
    }
    if (ev->type == KVRS_RECORD || ev->type == KVRS_SNAPSHOT_END || ev->type == KVRS_DIVERGED) {
        e->seq = ev->seq;
        e->last_seq = ev->last_seq;
    }
    if (ev->type == KVRS_FILE_BEGIN) {
        memcpy(e->name, ev->name, sizeof e->name);
        e->size = ev->size;
    }
}

/*
 * Feeds s[0, n) to a parser started at (next_seq, snapshot) as a link
 * does: chunks end at the offsets cuts[0 .. ncuts) (ascending) and at n;
 * after each chunk every event is taken, the unconsumed bytes are kept
 * and the next chunk appended to them. Stops at the first error.
 */
static void feed(evlist *l, const uint8_t *s, size_t n, uint64_t next_seq, int snapshot, const size_t *cuts,
                 size_t ncuts)
{
    memset(l, 0, sizeof *l);
    kvrs_init(&l->p, next_seq, snapshot);
    uint8_t *pend = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(pend);
    size_t plen = 0, fed = 0;
    l->end = KVRS_NEED_MORE;
    for (size_t c = 0; c <= ncuts && l->end != KVRS_ERROR; c++) {
        size_t to = c < ncuts ? cuts[c] : n;
        ck_assert_uint_ge(to, fed);
        memcpy(pend + plen, s + fed, to - fed);
        plen += to - fed;
        fed = to;
        size_t off = 0;
        for (;;) {
            kvrs_ev ev;
            memset(&ev, 0, sizeof ev);
            size_t used = 12345;
            kvrs_event t = kvrs_next(&l->p, pend + off, plen - off, &used, &ev);
            ck_assert_int_eq(t, ev.type);
            ck_assert_uint_le(used, plen - off);
            if (t == KVRS_NEED_MORE || t == KVRS_ERROR) {
                ck_assert_uint_eq(used, 0);
                l->end = t;
                break;
            }
            ck_assert_uint_gt(used, 0);
            note(l, &ev);
            off += used;
        }
        memmove(pend, pend + off, plen - off);
        plen -= off;
    }
    l->left = plen;
    free(pend);
}

static void feed_whole(evlist *l, const uint8_t *s, size_t n, uint64_t next_seq, int snapshot)
{
    feed(l, s, n, next_seq, snapshot, NULL, 0);
}

static void feed_bytewise(evlist *l, const uint8_t *s, size_t n, uint64_t next_seq, int snapshot)
{
    size_t *cuts = malloc((n ? n : 1) * sizeof *cuts);
    ck_assert_ptr_nonnull(cuts);
    for (size_t i = 0; i < n; i++) cuts[i] = i;
    feed(l, s, n, next_seq, snapshot, cuts, n);
    free(cuts);
}

static void assert_same(const evlist *a, const evlist *b, const char *how)
{
    ck_assert_msg(a->n == b->n, "%s: %d events, %d expected", how, b->n, a->n);
    for (int i = 0; i < a->n; i++) {
        const event *x = &a->e[i], *y = &b->e[i];
        ck_assert_msg(x->type == y->type, "%s: event %d is %d, %d expected", how, i, y->type, x->type);
        ck_assert_msg(x->seq == y->seq && x->last_seq == y->last_seq && x->size == y->size, "%s: event %d", how, i);
        ck_assert_msg(strcmp(x->name, y->name) == 0, "%s: event %d names %s", how, i, y->name);
        ck_assert_msg(x->len == y->len && memcmp(x->bytes, y->bytes, x->len) == 0, "%s: event %d's bytes", how, i);
    }
    ck_assert_msg(a->end == b->end && a->left == b->left, "%s: ends %d with %zu bytes left", how, b->end, b->left);
    ck_assert_msg(a->p.next_seq == b->p.next_seq && a->p.snapshot == b->p.snapshot && a->p.in_file == b->p.in_file,
                  "%s: the parser's state differs", how);
}

/* Parses s whole, cut in two at every offset and one byte at a time:
 * always the same events and end. Returns the whole parse in *whole. */
static void assert_any_split_same(evlist *whole, const uint8_t *s, size_t n, uint64_t next_seq, int snapshot)
{
    feed_whole(whole, s, n, next_seq, snapshot);
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    for (size_t k = 0; k <= n; k++) {
        char how[64];
        snprintf(how, sizeof how, "cut at %zu of %zu", k, n);
        feed(l, s, n, next_seq, snapshot, &k, 1);
        assert_same(whole, l, how);
    }
    feed_bytewise(l, s, n, next_seq, snapshot);
    assert_same(whole, l, "byte by byte");
    free(l);
}

static int has_event(const evlist *l, kvrs_event t)
{
    for (int i = 0; i < l->n; i++)
        if (l->e[i].type == t) return 1;
    return 0;
}

/* ---- the stream ---- */

START_TEST(records_split_at_any_byte_give_the_same_events_as_the_whole_stream)
{
    sbuf b = {0};
    size_t f[8];
    f[0] = add_put(&b, 10, "a", "1", 0);
    f[1] = add_tomb(&b, 11, "b");
    f[2] = add_batch(&b, 12, 3);
    sb_byte(&b, 'P');
    f[3] = add_put(&b, 15, "c", "a longer value than the others", 4000000000000ull);
    sb_byte(&b, 'G');
    f[4] = add_batch(&b, 16, 2);
    f[5] = add_tomb(&b, 18, "a");
    size_t ends[6] = {f[1], f[2], f[3] - 1, f[4] - 1, f[5], b.len}; /* 'P' and 'G' between */
    evlist *w = malloc(sizeof *w);
    ck_assert_ptr_nonnull(w);
    assert_any_split_same(w, b.p, b.len, 10, 0);

    /* The whole parse: every record, verbatim, with its sequence numbers. */
    static const kvrs_event types[] = {KVRS_RECORD, KVRS_RECORD, KVRS_RECORD, KVRS_PING,
                                       KVRS_RECORD, KVRS_GETACK, KVRS_RECORD, KVRS_RECORD};
    static const uint64_t seqs[][2] = {{10, 10}, {11, 11}, {12, 14}, {0, 0}, {15, 15}, {0, 0}, {16, 17}, {18, 18}};
    ck_assert_int_eq(w->n, 8);
    for (int i = 0, r = 0; i < 8; i++) {
        ck_assert_int_eq(w->e[i].type, types[i]);
        if (types[i] != KVRS_RECORD) continue;
        ck_assert_uint_eq(w->e[i].seq, seqs[i][0]);
        ck_assert_uint_eq(w->e[i].last_seq, seqs[i][1]);
        size_t len = ends[r] - f[r] - 1;
        ck_assert_uint_eq(w->e[i].len, len);
        ck_assert(memcmp(w->e[i].bytes, b.p + f[r] + 1, len) == 0);
        r++;
    }
    ck_assert_int_eq(w->end, KVRS_NEED_MORE);
    ck_assert_uint_eq(w->left, 0);
    ck_assert_uint_eq(w->p.next_seq, 19);

    /* Cut short anywhere inside the last record: it is not yielded, and
     * its bytes are kept. */
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    for (size_t n = f[5]; n < b.len; n++) {
        feed_whole(l, b.p, n, 10, 0);
        ck_assert_int_eq(l->n, 7);
        ck_assert_int_eq(l->end, KVRS_NEED_MORE);
        ck_assert_uint_eq(l->left, n - f[5]);
        ck_assert_uint_eq(l->p.next_seq, 18);
    }
    free(l);
    free(w);
    free(b.p);
}
END_TEST

START_TEST(a_snapshot_split_at_any_byte_gives_the_same_events_as_the_whole_stream)
{
    uint8_t data[100];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 37 + 'R');
    sbuf b = {0};
    add_file(&b, "0000000001.seg", data, sizeof data);
    add_file(&b, "0000000002.seg", NULL, 0);
    add_end(&b, 9);
    add_put(&b, 10, "k", "v", 0);
    sb_byte(&b, 'P');
    evlist *w = malloc(sizeof *w);
    ck_assert_ptr_nonnull(w);
    assert_any_split_same(w, b.p, b.len, 1, 1);

    static const kvrs_event types[] = {KVRS_FILE_BEGIN, KVRS_FILE_DATA,    KVRS_FILE_END, KVRS_FILE_BEGIN,
                                       KVRS_FILE_END,   KVRS_SNAPSHOT_END, KVRS_RECORD,   KVRS_PING};
    ck_assert_int_eq(w->n, 8);
    for (int i = 0; i < 8; i++) ck_assert_int_eq(w->e[i].type, types[i]);
    ck_assert_str_eq(w->e[0].name, "0000000001.seg");
    ck_assert_uint_eq(w->e[0].size, sizeof data);
    ck_assert_uint_eq(w->e[1].len, sizeof data);
    ck_assert(memcmp(w->e[1].bytes, data, sizeof data) == 0);
    ck_assert_str_eq(w->e[3].name, "0000000002.seg");
    ck_assert_uint_eq(w->e[3].size, 0);
    ck_assert_uint_eq(w->e[5].seq, 9);
    ck_assert_uint_eq(w->e[6].seq, 10);
    ck_assert_int_eq(w->end, KVRS_NEED_MORE);
    ck_assert_uint_eq(w->left, 0);
    ck_assert_int_eq(w->p.snapshot, 0);
    ck_assert_uint_eq(w->p.next_seq, 11);
    free(w);
    free(b.p);
}
END_TEST

/* Parses one frame alone with a parser at next_seq: the event's type. */
static kvrs_event first_event(const uint8_t *s, size_t n, uint64_t next_seq, int snapshot, evlist *l)
{
    feed_whole(l, s, n, next_seq, snapshot);
    return l->n ? l->e[0].type : l->end;
}

START_TEST(a_record_out_of_sequence_is_an_error)
{
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    sbuf b = {0};
    add_put(&b, 11, "k", "v", 0);
    ck_assert_int_eq(first_event(b.p, b.len, 10, 0, l), KVRS_ERROR);
    ck_assert_uint_eq(l->p.next_seq, 10);
    ck_assert_int_eq(first_event(b.p, b.len, 12, 0, l), KVRS_ERROR);
    ck_assert_int_eq(first_event(b.p, b.len, 11, 0, l), KVRS_RECORD);

    /* A batch 10..12 then a record 12 (inside it), or 14 (a gap): refused
     * after the batch; 13 follows on. */
    uint64_t next[3] = {12, 14, 13};
    for (int i = 0; i < 3; i++) {
        b.len = 0;
        add_batch(&b, 10, 3);
        add_tomb(&b, next[i], "k");
        feed_whole(l, b.p, b.len, 10, 0);
        ck_assert_int_eq(l->n, i == 2 ? 2 : 1);
        ck_assert_int_eq(l->e[0].type, KVRS_RECORD);
        ck_assert_uint_eq(l->e[0].last_seq, 12);
        ck_assert_int_eq(l->end, i == 2 ? KVRS_NEED_MORE : KVRS_ERROR);
        ck_assert_uint_eq(l->p.next_seq, i == 2 ? 14 : 13);
    }

    /* The same record twice. */
    b.len = 0;
    add_put(&b, 5, "k", "v", 0);
    add_put(&b, 5, "k", "v", 0);
    feed_whole(l, b.p, b.len, 5, 0);
    ck_assert_int_eq(l->n, 1);
    ck_assert_int_eq(l->end, KVRS_ERROR);

    /* The error consumes nothing: the parser reports it again. */
    kvrs_parser p;
    kvrs_init(&p, 6, 0);
    kvrs_ev ev;
    size_t used = 99;
    ck_assert_int_eq(kvrs_next(&p, b.p, b.len, &used, &ev), KVRS_ERROR);
    ck_assert_uint_eq(used, 0);
    ck_assert(strstr(ev.error, "sequence number 5 where 6 was due") != NULL);
    ck_assert_uint_eq(p.next_seq, 6);
    free(l);
    free(b.p);
}
END_TEST

/*
 * Flips every bit of the frame at s[at, end) in turn (followed in s by
 * more valid frames) and parses the whole stream: the parse ends in an
 * error, and no event of type `never` comes (a record, a file's end, a
 * snapshot's end). Flips outside the tag byte make the frame's own event
 * an error, after exactly `before` events; a flipped tag may read as
 * another frame first, but then still ends in an error.
 */
static void assert_every_flip_refused(const sbuf *b, size_t at, size_t end, uint64_t next_seq, int snapshot,
                                      int before, kvrs_event never)
{
    uint8_t *s = malloc(b->len);
    ck_assert_ptr_nonnull(s);
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    for (size_t bit = at * 8; bit < end * 8; bit++) {
        memcpy(s, b->p, b->len);
        s[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            if (bytewise) feed_bytewise(l, s, b->len, next_seq, snapshot);
            else feed_whole(l, s, b->len, next_seq, snapshot);
            ck_assert_msg(l->end == KVRS_ERROR, "bit %zu of byte %zu: no error", bit % 8, bit / 8);
            ck_assert_msg(!has_event(l, never), "bit %zu of byte %zu: event %d came", bit % 8, bit / 8, never);
            for (int i = 0; i < l->n; i++)
                if (l->e[i].type == KVRS_RECORD) /* a record before the flipped frame, unchanged */
                    ck_assert(memmem(b->p, at, l->e[i].bytes, l->e[i].len) != NULL);
            if (bit / 8 != at) ck_assert_msg(l->n == before, "bit %zu of byte %zu: %d events", bit % 8, bit / 8, l->n);
        }
    }
    free(l);
    free(s);
}

START_TEST(every_bit_flip_in_a_record_frame_is_an_error)
{
    sbuf b = {0};
    add_put(&b, 40, "key", "value", 1234);
    size_t f[5];
    f[0] = add_put(&b, 41, "a key", "a value", 4000000000000ull);
    f[1] = add_tomb(&b, 42, "a key");
    f[2] = add_batch(&b, 43, 3);
    f[3] = add_put(&b, 46, "after", "the batch", 0);
    f[4] = add_tomb(&b, 47, "key");
    /* The flipped record is refused, and so is the one after it: the
     * records yielded are the ones before, unchanged (no event has type
     * KVRS_ERROR + 1). */
    for (int i = 0; i < 4; i++)
        assert_every_flip_refused(&b, f[i], f[i + 1], 40, 0, 1 + i, (kvrs_event)(KVRS_ERROR + 1));
    free(b.p);
}
END_TEST

START_TEST(every_bit_flip_in_a_file_or_a_snapshot_end_is_an_error)
{
    uint8_t data[20];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(0xA0 + i);
    sbuf b = {0};
    add_file(&b, "0000000007.seg", data, sizeof data);
    size_t head_end = 17 + 14, data_end = head_end + sizeof data, file_end = b.len;
    size_t e = add_end(&b, 0x123456789aull);
    add_put(&b, 0x123456789bull, "k", "v", 0);
    /* The head: no FILE_BEGIN. */
    assert_every_flip_refused(&b, 0, head_end, 1, 1, 0, KVRS_FILE_BEGIN);
    /* The bytes and their CRC: the file begins, never ends. */
    assert_every_flip_refused(&b, head_end, data_end, 1, 1, 2, KVRS_FILE_END);
    assert_every_flip_refused(&b, data_end, file_end, 1, 1, 2, KVRS_FILE_END);
    /* The snapshot end: none, and so no record. */
    assert_every_flip_refused(&b, e, e + 13, 1, 1, 3, KVRS_SNAPSHOT_END);
    assert_every_flip_refused(&b, e, e + 13, 1, 1, 3, KVRS_RECORD);
    free(b.p);
}
END_TEST

/* 'D' says where the replica's history left the primary's: only first
 * in a snapshot, once, with its CRC. */
START_TEST(a_divergence_frame_comes_only_first_in_a_snapshot)
{
    uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    sbuf b = {0};
    b.len += kvrs_diverged(sb_room(&b, 13), 100);
    add_file(&b, "0000000001.seg", data, sizeof data);
    add_end(&b, 150);
    add_put(&b, 151, "k", "v", 0);
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    feed_whole(l, b.p, b.len, 1, 1);
    ck_assert_int_eq(l->end, KVRS_NEED_MORE);
    ck_assert_int_eq(l->e[0].type, KVRS_DIVERGED);
    ck_assert_uint_eq(l->e[0].seq, 100);
    ck_assert(has_event(l, KVRS_RECORD));
    /* Outside a snapshot, after a file, or twice: refused. */
    ck_assert_int_eq(first_event(b.p, 13, 1, 0, l), KVRS_ERROR);
    sbuf c = {0};
    add_file(&c, "0000000001.seg", data, sizeof data);
    c.len += kvrs_diverged(sb_room(&c, 13), 100);
    feed_whole(l, c.p, c.len, 1, 1);
    ck_assert_int_eq(l->end, KVRS_ERROR);
    ck_assert(!has_event(l, KVRS_DIVERGED));
    sbuf d = {0};
    d.len += kvrs_diverged(sb_room(&d, 13), 100);
    d.len += kvrs_diverged(sb_room(&d, 13), 100);
    feed_whole(l, d.p, d.len, 1, 1);
    ck_assert_int_eq(l->end, KVRS_ERROR);
    ck_assert_int_eq(l->n, 1);
    free(l);
    /* Every bit flip in it: an error, and no divergence reported. */
    assert_every_flip_refused(&b, 0, 13, 1, 1, 0, KVRS_DIVERGED);
    free(b.p);
    free(c.p);
    free(d.p);
}
END_TEST

START_TEST(records_before_the_snapshot_end_are_refused)
{
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    sbuf b = {0};
    add_put(&b, 1, "k", "v", 0);
    ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_ERROR);

    /* After a whole file, still before the end. */
    b.len = 0;
    add_file(&b, "0000000001.seg", (const uint8_t *)"bytes", 5);
    add_put(&b, 1, "k", "v", 0);
    feed_whole(l, b.p, b.len, 1, 1);
    ck_assert_int_eq(l->n, 3);
    ck_assert_int_eq(l->e[2].type, KVRS_FILE_END);
    ck_assert_int_eq(l->end, KVRS_ERROR);

    /* After the end, the record that follows on from it. */
    b.len = 0;
    add_end(&b, 4);
    add_put(&b, 5, "k", "v", 0);
    feed_whole(l, b.p, b.len, 1, 1);
    ck_assert_int_eq(l->n, 2);
    ck_assert_int_eq(l->e[1].type, KVRS_RECORD);
    ck_assert_int_eq(l->end, KVRS_NEED_MORE);
    free(l);
    free(b.p);
}
END_TEST

START_TEST(a_file_or_a_snapshot_end_outside_a_snapshot_is_refused)
{
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    sbuf b = {0};
    add_file(&b, "0000000001.seg", (const uint8_t *)"bytes", 5);
    ck_assert_int_eq(first_event(b.p, b.len, 1, 0, l), KVRS_ERROR);
    ck_assert_int_eq(first_event(b.p, 1, 1, 0, l), KVRS_ERROR); /* from its tag alone */
    ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_FILE_BEGIN);

    /* After the snapshot's end: no more files, no second end. */
    b.len = 0;
    add_end(&b, 3);
    add_file(&b, "0000000001.seg", (const uint8_t *)"bytes", 5);
    feed_whole(l, b.p, b.len, 1, 1);
    ck_assert_int_eq(l->n, 1);
    ck_assert_int_eq(l->end, KVRS_ERROR);
    b.len = 0;
    add_end(&b, 3);
    add_end(&b, 3);
    feed_whole(l, b.p, b.len, 1, 1);
    ck_assert_int_eq(l->n, 1);
    ck_assert_int_eq(l->end, KVRS_ERROR);
    ck_assert_int_eq(first_event(b.p, 13, 1, 0, l), KVRS_ERROR);
    free(l);
    free(b.p);
}
END_TEST

START_TEST(file_names_other_than_a_segments_are_refused)
{
    static const char *bad[] = {
        "0000000001.hint", "000000001.seg", "00000000001.seg", "0000000000.seg", "4294967296.seg",
        "../0000000001.seg", "/0000000001.seg", "0000000001.seg/", "0000000001.SEG", "000000000a.seg",
        "replication.state", "0000000001.seg.tmp", "x", " 0000000001.seg", "+000000001.seg",
    };
    static const char *good[] = {"0000000001.seg", "0000000042.seg", "4294967295.seg"};
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    sbuf b = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b.len = 0;
        add_file_head_raw(&b, bad[i], (uint32_t)strlen(bad[i]), 0);
        ck_assert_msg(first_event(b.p, b.len, 1, 1, l) == KVRS_ERROR, "\"%s\" accepted", bad[i]);
    }
    /* A NUL inside the name, an empty name, one over the limit. */
    static const char nul[] = "0000000001.seg\0x";
    b.len = 0;
    add_file_head_raw(&b, nul, sizeof nul - 1, 0);
    ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_ERROR);
    b.len = 0;
    add_file_head_raw(&b, "", 0, 0);
    ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_ERROR);
    char longname[KVRS_MAX_NAME + 2];
    memset(longname, '0', sizeof longname);
    memcpy(longname + KVRS_MAX_NAME + 1 - 14, "0000000001.seg", 14);
    b.len = 0;
    add_file_head_raw(&b, longname, KVRS_MAX_NAME + 1, 0);
    ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_ERROR);
    /* A file over the limit, with a good name. */
    b.len = 0;
    add_file_head_raw(&b, "0000000001.seg", 14, KVRS_MAX_FILE + 1);
    ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_ERROR);

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        b.len = 0;
        add_file_head_raw(&b, good[i], (uint32_t)strlen(good[i]), 3);
        ck_assert_int_eq(first_event(b.p, b.len, 1, 1, l), KVRS_FILE_BEGIN);
        ck_assert_str_eq(l->e[0].name, good[i]);
        ck_assert_uint_eq(l->e[0].size, 3);
    }
    free(l);
    free(b.p);
}
END_TEST

START_TEST(commit_marks_trailers_and_batch_entries_are_not_records)
{
    evlist *l = malloc(sizeof *l);
    ck_assert_ptr_nonnull(l);
    uint8_t frame[1 + KV_MARK_SIZE];
    frame[0] = 'R';
    kv_mark_encode(frame + 1, KV_REC_COMMIT, 8, 32, 1);
    ck_assert_int_eq(first_event(frame, sizeof frame, 8, 0, l), KVRS_ERROR);
    kv_mark_encode(frame + 1, KV_REC_SEAL, 8, 32, 1);
    ck_assert_int_eq(first_event(frame, sizeof frame, 8, 0, l), KVRS_ERROR);
    ck_assert_uint_eq(l->p.next_seq, 8);

    /* A batch's entry alone, at the top level. */
    uint8_t rec[1 + 64];
    rec[0] = 'R';
    size_t n = kv_record_encode(rec + 1, KV_REC_PUT, KV_RF_IN_BATCH, 8, 0, 0, "k", 1, "v", 1);
    ck_assert_int_eq(first_event(rec, 1 + n, 8, 0, l), KVRS_ERROR);
    n = kv_record_encode(rec + 1, KV_REC_PUT, 0, 8, 0, 0, "k", 1, "v", 1);
    ck_assert_int_eq(first_event(rec, 1 + n, 8, 0, l), KVRS_RECORD);

    /* A record over the parser's limit. */
    kvrs_parser p;
    kvrs_init(&p, 8, 0);
    p.max_record = n - 1;
    kvrs_ev ev;
    size_t used;
    ck_assert_int_eq(kvrs_next(&p, rec, 1 + KV_REC_HEADER_SIZE, &used, &ev), KVRS_ERROR);
    free(l);
}
END_TEST

/* ---- the replica's commands ---- */

static const char ACK[] = "*5\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n5\r\n$4\r\nFACK\r\n$1\r\n4\r\n";

/* kvrs_parse_command on a heap copy of exactly buf[0, len). */
static int parse_cmd(const char *buf, size_t len, size_t *used, char (*args)[65], int max)
{
    uint8_t *c = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(c);
    memcpy(c, buf, len);
    memset(args, 0, (size_t)max * 65);
    *used = 0;
    int r = kvrs_parse_command(c, len, used, args, max);
    free(c);
    return r;
}

START_TEST(an_ack_parses_the_same_split_at_any_byte)
{
    size_t n = strlen(ACK), used;
    char args[5][65];
    for (size_t k = 0; k < n; k++)
        ck_assert_msg(parse_cmd(ACK, k, &used, args, 5) == 0, "%zu bytes of %zu: not \"need more\"", k, n);
    ck_assert_int_eq(parse_cmd(ACK, n, &used, args, 5), 5);
    ck_assert_uint_eq(used, n);
    static const char *want[5] = {"REPLCONF", "ACK", "5", "FACK", "4"};
    for (int i = 0; i < 5; i++) ck_assert_str_eq(args[i], want[i]);

    /* Two back to back, as a replica's pipeline: one at a time. */
    char two[256];
    snprintf(two, sizeof two, "%s*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$2\r\n17\r\n", ACK);
    ck_assert_int_eq(parse_cmd(two, strlen(two), &used, args, 5), 5);
    ck_assert_uint_eq(used, n);
    ck_assert_int_eq(parse_cmd(two + used, strlen(two) - n, &used, args, 5), 3);
    ck_assert_uint_eq(used, strlen(two) - n);
    ck_assert_str_eq(args[2], "17");

    /* An argument of the largest size. */
    char big[128];
    snprintf(big, sizeof big, "*1\r\n$64\r\n%064d\r\n", 7);
    ck_assert_int_eq(parse_cmd(big, strlen(big), &used, args, 5), 1);
    ck_assert_uint_eq(strlen(args[0]), 64);
}
END_TEST

START_TEST(malformed_or_oversized_commands_are_refused)
{
    static const char *bad[] = {
        "+OK\r\n",                      /* not an array */
        "*0\r\n",                       /* no arguments */
        "*6\r\n$1\r\na\r\n",            /* more than max (5) */
        "*1\r\n$65\r\n",                /* an argument over 64 bytes */
        "*1\r\n$3\r\nabcX\n",           /* no CRLF after the bytes */
        "*1\r\n:3\r\n",                 /* not a bulk string */
        "*1\r\n$-1\r\n",                /* a null bulk */
        "*x\r\n",                       /* no count */
        "*\r\n",                        /* an empty count */
        "*1\n$1\r\n",                   /* LF alone */
        "*1\r\n$1\r\nab\r\n",           /* longer than said */
        "*99999999\r\n",                /* a count over the limit */
        "*1\r\n$9999999999\r\n",        /* a length over the limit */
        "*0000000000000",               /* a count line that never ends */
        "*1\r\n$000000000000000000000", /* a length line that never ends */
    };
    size_t used;
    char args[5][65];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(parse_cmd(bad[i], strlen(bad[i]), &used, args, 5) == -1, "\"%s\" not refused", bad[i]);
    ck_assert_int_eq(parse_cmd(ACK, strlen(ACK), &used, args, 4), -1);
}
END_TEST

START_TEST(a_command_refused_in_part_is_refused_whole)
{
    /* Counts and lengths padded with zeros: a long line is refused before
     * its CRLF comes, so it is refused after too, whatever the split. */
    static const char *cmds[] = {
        "*000000000000001\r\n$1\r\na\r\n",
        "*1\r\n$000000000000001\r\na\r\n",
        "*00000000001\r\n$00000000001\r\na\r\n", /* 11 digits: accepted */
    };
    size_t used;
    char args[5][65];
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        size_t n = strlen(cmds[i]);
        int whole = parse_cmd(cmds[i], n, &used, args, 5);
        ck_assert_int_eq(whole, (i == 2 ? 1 : -1));
        int refused = 0;
        for (size_t k = 0; k < n; k++) {
            int r = parse_cmd(cmds[i], k, &used, args, 5);
            ck_assert_msg(r == 0 || r == -1, "\"%s\" cut at %zu: %d", cmds[i], k, r);
            if (refused) ck_assert_msg(r == -1, "\"%s\" cut at %zu: refused shorter, not now", cmds[i], k);
            refused |= r == -1;
            if (refused) ck_assert_msg(whole == -1, "\"%s\" cut at %zu refused, accepted whole", cmds[i], k);
        }
    }
}
END_TEST

/* ---- the state file ---- */

static void sample_state(kvrepl_state *st)
{
    memset(st, 0, sizeof *st);
    snprintf(st->replid, sizeof st->replid, "%s", "0123456789abcdef0123456789abcdef01234567");
    snprintf(st->replid2, sizeof st->replid2, "%s", "fedcba9876543210fedcba9876543210fedcba98");
    st->second_off = 18446744073709551615ull;
    snprintf(st->master_host, sizeof st->master_host, "%s", "primary-1.example.net");
    st->master_port = 6380;
    st->clean_seq = 1234567890123ull;
}

static void assert_state_eq(const kvrepl_state *a, const kvrepl_state *b)
{
    ck_assert_str_eq(a->replid, b->replid);
    ck_assert_str_eq(a->replid2, b->replid2);
    ck_assert_uint_eq(a->second_off, b->second_off);
    ck_assert_str_eq(a->master_host, b->master_host);
    ck_assert_int_eq(a->master_port, b->master_port);
    ck_assert_uint_eq(a->clean_seq, b->clean_seq);
}

START_TEST(the_state_file_keeps_every_field)
{
    char *dir = tu_tmpdir();
    kvrepl_state st, got;
    char err[256] = "";
    sample_state(&st);
    ck_assert_int_eq(kvrepl_state_save(dir, &st), 0);
    memset(&got, 0x5a, sizeof got);
    ck_assert_msg(kvrepl_state_load(dir, &got, err, sizeof err) == 0, "%s", err);
    assert_state_eq(&st, &got);

    /* A primary's: no host, no port, no second id, running. */
    kvrepl_state_init(&st);
    ck_assert_int_eq(kvrepl_state_save(dir, &st), 0);
    ck_assert_msg(kvrepl_state_load(dir, &got, err, sizeof err) == 0, "%s", err);
    assert_state_eq(&st, &got);
    ck_assert_str_eq(got.replid2, "0000000000000000000000000000000000000000");

    /* Saved over again: the last one wins, and no temporary file stays. */
    sample_state(&st);
    st.master_port = 1;
    ck_assert_int_eq(kvrepl_state_save(dir, &st), 0);
    ck_assert_msg(kvrepl_state_load(dir, &got, err, sizeof err) == 0, "%s", err);
    assert_state_eq(&st, &got);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, KVRSTATE_FILE);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static size_t read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void write_all(const char *path, const char *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(any_changed_byte_in_the_state_file_is_refused)
{
    char *dir = tu_tmpdir();
    kvrepl_state st, got;
    char err[256];
    sample_state(&st);
    ck_assert_int_eq(kvrepl_state_save(dir, &st), 0);
    char path[4096], orig[2048], buf[2048];
    snprintf(path, sizeof path, "%s/%s", dir, KVRSTATE_FILE);
    size_t n = read_all(path, orig, sizeof orig);
    ck_assert_uint_gt(n, 100);
    ck_assert_uint_lt(n, sizeof orig);
    /* Every bit of every byte, the CRC line's too, and whole bytes. */
    static const uint8_t masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    for (size_t i = 0; i < n; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(buf, orig, n);
            buf[i] = (char)(buf[i] ^ masks[m]);
            write_all(path, buf, n);
            err[0] = 0;
            int r = kvrepl_state_load(dir, &got, err, sizeof err);
            ck_assert_msg(r == -EBADMSG, "byte %zu ^ 0x%02x ('%c'): %d", i, masks[m], orig[i], r);
            ck_assert(err[0] != 0);
        }
    }
    /* Cut short, or with a byte more. */
    for (size_t k = 0; k < n; k++) {
        write_all(path, orig, k);
        ck_assert_msg(kvrepl_state_load(dir, &got, err, sizeof err) == -EBADMSG, "cut at %zu", k);
    }
    memcpy(buf, orig, n);
    buf[n] = '\n';
    write_all(path, buf, n + 1);
    ck_assert_int_eq(kvrepl_state_load(dir, &got, err, sizeof err), -EBADMSG);
    write_all(path, orig, n);
    ck_assert_int_eq(kvrepl_state_load(dir, &got, err, sizeof err), 0);
    assert_state_eq(&st, &got);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(a_missing_state_file_is_enoent)
{
    char *dir = tu_tmpdir();
    kvrepl_state got;
    char err[256];
    ck_assert_int_eq(kvrepl_state_load(dir, &got, err, sizeof err), -ENOENT);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(new_ids_are_40_lowercase_hex_characters_and_differ)
{
    char a[41], b[41];
    memset(a, 'X', sizeof a);
    memset(b, 'X', sizeof b);
    kvrepl_new_id(a);
    kvrepl_new_id(b);
    ck_assert_uint_eq(strlen(a), 40);
    ck_assert_uint_eq(strlen(b), 40);
    for (int i = 0; i < 40; i++) {
        ck_assert_msg((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'), "'%c' in %s", a[i], a);
        ck_assert_msg((b[i] >= '0' && b[i] <= '9') || (b[i] >= 'a' && b[i] <= 'f'), "'%c' in %s", b[i], b);
    }
    ck_assert_str_ne(a, b);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("repl_stream");
    TCase *tc = tcase_create("stream");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, records_split_at_any_byte_give_the_same_events_as_the_whole_stream);
    tcase_add_test(tc, a_snapshot_split_at_any_byte_gives_the_same_events_as_the_whole_stream);
    tcase_add_test(tc, a_record_out_of_sequence_is_an_error);
    tcase_add_test(tc, every_bit_flip_in_a_record_frame_is_an_error);
    tcase_add_test(tc, every_bit_flip_in_a_file_or_a_snapshot_end_is_an_error);
    tcase_add_test(tc, records_before_the_snapshot_end_are_refused);
    tcase_add_test(tc, a_divergence_frame_comes_only_first_in_a_snapshot);
    tcase_add_test(tc, a_file_or_a_snapshot_end_outside_a_snapshot_is_refused);
    tcase_add_test(tc, file_names_other_than_a_segments_are_refused);
    tcase_add_test(tc, commit_marks_trailers_and_batch_entries_are_not_records);
    suite_add_tcase(su, tc);
    TCase *tcmd = tcase_create("commands");
    tcase_add_test(tcmd, an_ack_parses_the_same_split_at_any_byte);
    tcase_add_test(tcmd, malformed_or_oversized_commands_are_refused);
    tcase_add_test(tcmd, a_command_refused_in_part_is_refused_whole);
    suite_add_tcase(su, tcmd);
    TCase *tst = tcase_create("state");
    tcase_set_timeout(tst, 120);
    tcase_add_test(tst, the_state_file_keeps_every_field);
    tcase_add_test(tst, any_changed_byte_in_the_state_file_is_refused);
    tcase_add_test(tst, a_missing_state_file_is_enoent);
    tcase_add_test(tst, new_ids_are_40_lowercase_hex_characters_and_differ);
    suite_add_tcase(su, tst);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
