/*
 * fuzz_store_model — stateful fuzz target: the input is decoded into a
 * sequence of operations on a store (put, delete, batch, a power cut at a
 * chosen sync point, an I/O error at a chosen call, a clean restart), and
 * after every restart the store is checked against a simple model.
 *
 * One LLVMFuzzerTestOneInput for libFuzzer, AFL++ (its libFuzzer driver)
 * and fuzz/replay.c. See fuzz/README.md.
 *
 * Setting: kv_memfs (in memory), fsync=always, 1 KiB segments (so rotation
 * happens often), 8 keys "k0".."k7". The store runs on a fault-injecting
 * layer over the memfs.
 *
 * Input, one operation per leading byte b (op = b % 8); missing operand
 * bytes read as 0:
 *  0, 1  put key (next byte % 8), value of (next byte % 200) bytes
 *  2     delete key (next byte % 8)
 *  3     batch of (next byte % 4 + 1) entries, each: selector byte (odd:
 *        delete, even: put), key byte, length byte
 *  4     power cut: arm a crash at the (next byte % 4 + 1)-th sync point
 *        from now, in mode (next byte): drop / keep / tear with zeros /
 *        tear with garbage, 512 or 4096-byte units, 0 or 1 units kept; the
 *        first sync point reached takes the crash image, the next write
 *        completes (or not), then the store is dropped and reopened on the
 *        crash image
 *  5     I/O error: fail the (next byte % 16 + 1)-th I/O call from now with
 *        EIO or ENOSPC (next byte's low bit); the store must go into
 *        fail-stop on a failed write and refuse the writes after it
 *  6     clean restart (close, reopen on the same filesystem)
 *  7     read every key and compare with the model
 *
 * Invariants (abort() on a violation):
 *  1. While no fault is armed, every write returns KV_OK (a delete of an
 *     absent key KV_NOT_FOUND) and every read equals the model.
 *  2. A write that fails returns the injected errno or KV_FAILSTOP; after
 *     the first failure every write returns KV_FAILSTOP and reads still
 *     equal the model (the failed write is not visible).
 *  3. Every reopen (after a crash image, a fault, or cleanly) succeeds in
 *     the default recovery mode, and the store equals the model of the
 *     acknowledged writes, or that model plus the one write in flight at
 *     the crash or failure, applied whole (a batch never in part).
 *  4. No read ever returns KV_CORRUPT.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_io_sim.h"
#include "kv_store.h"

#define NKEYS 8
#define MAX_OPS 64
#define CHECK(cond)                                                                                   \
    do {                                                                                              \
        if (!(cond)) {                                                                                \
            fprintf(stderr, "fuzz_store_model: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                                  \
        }                                                                                             \
    } while (0)

/* A model: per key, present flag and value. */
typedef struct model {
    int present[NKEYS];
    uint8_t len[NKEYS];
    uint8_t val[NKEYS][256];
} model;

typedef struct input {
    const uint8_t *p;
    size_t n, i;
} input;

static uint8_t next(input *in)
{
    return in->i < in->n ? in->p[in->i++] : 0;
}

typedef struct world {
    kv_memfs *fs;
    kv_faultio *fault;
    kv_store *s;
    model acked;
    /* crash capture */
    long crash_countdown; /* sync points left before capture; 0 = off */
    kv_crash_spec spec;
    kv_memfs *image;
    uint32_t value_seq;
} world;

static void on_sync(void *arg, kv_memfs *fs, const char *what)
{
    (void)what;
    world *w = arg;
    if (w->crash_countdown > 0 && --w->crash_countdown == 0 && !w->image) w->image = kv_memfs_crash(fs, &w->spec);
}

static void make_value(world *w, uint8_t *v, size_t len)
{
    w->value_seq++;
    for (size_t i = 0; i < len; i++) v[i] = (uint8_t)(w->value_seq * 31u + i);
}

static void key_name(char *k, int i)
{
    k[0] = 'k';
    k[1] = (char)('0' + i);
}

static kv_store *open_store(world *w, kv_memfs *fs)
{
    kv_faultio_free(w->fault);
    w->fault = kv_faultio_new(kv_memfs_io(fs));
    CHECK(w->fault != NULL);
    kv_options o;
    kv_options_init(&o);
    o.io = kv_faultio_io(w->fault);
    o.segment_max_bytes = 4096;
    kv_store *s = NULL;
    kvr_report rep;
    kv_status st = kv_open("db", &o, &s, &rep);
    if (st != KV_OK) fprintf(stderr, "fuzz_store_model: reopen failed: %s: %s\n", kv_strerror(st), rep.message);
    CHECK(st == KV_OK);
    kvr_report_free(&rep);
    return s;
}

static int store_equals(kv_store *s, const model *m)
{
    for (int i = 0; i < NKEYS; i++) {
        char k[2];
        key_name(k, i);
        kv_value v;
        kv_status st = kv_get(s, k, 2, &v);
        /* An injected error may hit this read's pread: the read fails
         * cleanly (never with bad bytes), and the fault fires only once. */
        if (st == EIO || st == ENOSPC) st = kv_get(s, k, 2, &v);
        CHECK(st != KV_CORRUPT);
        if (st == KV_NOT_FOUND) {
            if (m->present[i]) return 0;
            continue;
        }
        CHECK(st == KV_OK);
        int same = m->present[i] && v.len == m->len[i] && memcmp(v.data, m->val[i], v.len) == 0;
        kv_value_free(&v);
        if (!same) return 0;
    }
    return 1;
}

/* One write as a batch: fills *after with the model once it applies. */
typedef struct write_op {
    int n;
    int del[4], key[4];
    uint8_t len[4];
    uint8_t val[4][256];
} write_op;

static void apply(model *m, const write_op *op)
{
    for (int i = 0; i < op->n; i++) {
        int k = op->key[i];
        if (op->del[i]) {
            m->present[k] = 0;
        } else {
            m->present[k] = 1;
            m->len[k] = op->len[i];
            memcpy(m->val[k], op->val[i], op->len[i]);
        }
    }
}

/* Restarts on fs (the same or a crash image) and checks the store equals
 * the acknowledged model, or that plus the write in flight. */
static void restart(world *w, kv_memfs *fs, const write_op *inflight)
{
    /* A crash image armed or taken before the restart is void. */
    kv_memfs_free(w->image);
    w->image = NULL;
    w->crash_countdown = 0;
    if (w->s) kv_close(w->s);
    w->s = NULL;
    if (fs != w->fs) {
        kv_memfs_free(w->fs);
        w->fs = fs;
    }
    kv_memfs_set_sync_hook(w->fs, on_sync, w);
    w->s = open_store(w, w->fs);
    if (store_equals(w->s, &w->acked)) return;
    CHECK(inflight != NULL);
    model after = w->acked;
    apply(&after, inflight);
    CHECK(store_equals(w->s, &after));
    w->acked = after;
}

static void do_write(world *w, const write_op *op)
{
    kv_batch *b = kv_batch_new();
    CHECK(b != NULL);
    for (int i = 0; i < op->n; i++) {
        char k[2];
        key_name(k, op->key[i]);
        if (op->del[i])
            CHECK(kv_batch_delete(b, k, 2) == KV_OK);
        else
            CHECK(kv_batch_put(b, k, 2, op->val[i], op->len[i], 0, 0) == KV_OK);
    }
    model before = w->acked;
    kv_status st = kv_write(w->s, b);
    kv_batch_free(b);
    model after = w->acked;
    apply(&after, op);
    int faulted = kv_faultio_fired(w->fault);
    if (st == KV_OK || (st == KV_NOT_FOUND && op->n == 1 && op->del[0])) {
        w->acked = after;
    } else {
        CHECK(faulted || st == KV_FAILSTOP);
        CHECK(st == EIO || st == ENOSPC || st == KV_FAILSTOP);
        /* Fail-stop: refused from now on, reads unchanged... */
        CHECK(kv_put(w->s, "x", 1, "y", 1, 0, 0) == KV_FAILSTOP);
        CHECK(store_equals(w->s, &w->acked));
        /* ...and a restart recovers the acknowledged writes, and this one
         * whole or not at all. */
        restart(w, w->fs, op);
        return;
    }
    if (w->image) {
        kv_memfs *img = w->image;
        w->image = NULL;
        w->crash_countdown = 0;
        /* The image was taken at a sync point of this write: it holds
         * everything acknowledged before it, and this write whole or not
         * at all. */
        kv_close(w->s);
        w->s = NULL;
        kv_memfs_free(w->fs);
        w->fs = img;
        kv_memfs_set_sync_hook(w->fs, on_sync, w);
        w->s = open_store(w, w->fs);
        /* Everything acknowledged before this write must be there; this
         * write may be there whole or not at all. */
        if (!store_equals(w->s, &after)) {
            CHECK(store_equals(w->s, &before));
            w->acked = before;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) return 0;
    world w;
    memset(&w, 0, sizeof w);
    w.fs = kv_memfs_new();
    CHECK(w.fs != NULL);
    kv_memfs_set_sync_hook(w.fs, on_sync, &w);
    w.s = open_store(&w, w.fs);
    input in = {data, size, 0};
    int ops = 0;
    while (in.i < in.n && ops++ < MAX_OPS) {
        uint8_t b = next(&in);
        write_op op;
        memset(&op, 0, sizeof op);
        switch (b % 8) {
        case 0:
        case 1:
            op.n = 1;
            op.key[0] = next(&in) % NKEYS;
            op.len[0] = (uint8_t)(next(&in) % 200);
            make_value(&w, op.val[0], op.len[0]);
            do_write(&w, &op);
            break;
        case 2:
            op.n = 1;
            op.del[0] = 1;
            op.key[0] = next(&in) % NKEYS;
            do_write(&w, &op);
            break;
        case 3:
            op.n = next(&in) % 4 + 1;
            for (int i = 0; i < op.n; i++) {
                op.del[i] = next(&in) & 1;
                op.key[i] = next(&in) % NKEYS;
                op.len[i] = op.del[i] ? 0 : (uint8_t)(next(&in) % 200);
                if (!op.del[i]) make_value(&w, op.val[i], op.len[i]);
            }
            do_write(&w, &op);
            break;
        case 4: {
            uint8_t when = next(&in), mode = next(&in);
            if (w.image) break;
            w.crash_countdown = when % 4 + 1;
            w.spec.keep_ops = (mode & 3) == 1 ? -1 : 0;
            w.spec.tear = (mode & 3) == 2 ? KV_TEAR_ZERO : (mode & 3) == 3 ? KV_TEAR_GARBAGE : KV_TEAR_NONE;
            w.spec.unit = (mode & 4) ? 4096 : 512;
            w.spec.tear_units = (mode >> 3) & 1;
            w.spec.keep_dir_ops = (mode >> 4) & 1;
            w.spec.seed = mode;
            break;
        }
        case 5: {
            uint8_t nth = next(&in), kind = next(&in);
            kv_faultio_arm(w.fault, nth % 16 + 1, (kind & 1) ? ENOSPC : EIO, 0);
            break;
        }
        case 6:
            restart(&w, w.fs, NULL);
            break;
        default:
            CHECK(store_equals(w.s, &w.acked));
            break;
        }
    }
    /* A fault armed but not fired may still fire on close: that is fine. */
    kv_faultio_arm(w.fault, 0, 0, 0);
    restart(&w, w.fs, NULL);
    kv_close(w.s);
    kv_faultio_free(w.fault);
    kv_memfs_free(w.fs);
    kv_memfs_free(w.image);
    return 0;
}
