/*
 * Exhaustive damage to small data directories written by the engine
 * itself, judged only through the public API (kv_open, kv_get, kv_scan)
 * and the directory's files, never by parsing them, so the suite holds
 * whatever the on-disk format is.
 *
 * Single-bit flips: every bit of every file kvd left in the directory
 * (segments, hint files, anything else; not LOCK) is flipped in a fresh
 * copy, one at a time, and the copy opened with the fixture's options in
 * the default recovery mode. The only acceptable outcomes are
 *   refused  kv_open returns an error (recovery found damage it cannot
 *            prove to be an interrupted write), or
 *   correct  it opens, and every key ever written reads back exactly its
 *            acknowledged value (KV_NOT_FOUND for a deleted one) or an
 *            error status (KV_CORRUPT, an errno): the damage was found by
 *            the verified read;
 * anything else is wrong: a different value, an older (stale) value, an
 * acknowledged key lost (KV_NOT_FOUND), a deleted key resurrected, or a
 * key that was never written.
 *
 * Truncations: the newest segment of a kill -9 clone is cut at every byte
 * of its last writes. That is what a crash mid-append leaves, so kv_open
 * must open; every earlier write must read back; the last writes must be
 * applied as a prefix of the log (each one whole or not at all: a batch
 * all new or all old); and the bytes recovery cuts must be kept in a
 * "<segment>.<offset>.torn" file.
 *
 * Fixtures are a few hundred bytes of records, so that every bit can be
 * tried under AddressSanitizer in well under two minutes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_store.h"
#include "testutil.h"

/* ---- the model: every key ever written, its value or absent ---- */

enum { MAX_KEYS = 16, MAX_VAL = 32, MAX_HIST = 6 };

typedef struct model {
    int n;
    char key[MAX_KEYS][16];
    char val[MAX_KEYS][MAX_VAL]; /* the acknowledged value, if live */
    int live[MAX_KEYS];
    char hist[MAX_KEYS][MAX_HIST][MAX_VAL]; /* every value ever acknowledged */
    int nhist[MAX_KEYS];
} model;

static int model_slot(model *m, const char *k)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], k) == 0) return i;
    ck_assert_int_lt(m->n, MAX_KEYS);
    snprintf(m->key[m->n], sizeof m->key[0], "%s", k);
    m->live[m->n] = 0;
    m->nhist[m->n] = 0;
    return m->n++;
}

static void model_put(model *m, const char *k, const char *v)
{
    int i = model_slot(m, k);
    snprintf(m->val[i], sizeof m->val[0], "%s", v);
    m->live[i] = 1;
    ck_assert_int_lt(m->nhist[i], MAX_HIST);
    snprintf(m->hist[i][m->nhist[i]++], sizeof m->hist[0][0], "%s", v);
}

static void model_del(model *m, const char *k)
{
    m->live[model_slot(m, k)] = 0;
}

/* Writes through the store and the model together; every write must be
 * acknowledged. */
static void w_put(kv_store *s, model *m, const char *k, const char *v)
{
    ck_assert_int_eq(kv_put(s, k, strlen(k), v, strlen(v), 0, 0), KV_OK);
    model_put(m, k, v);
}

static void w_del(kv_store *s, model *m, const char *k)
{
    ck_assert_int_eq(kv_delete(s, k, strlen(k)), KV_OK);
    model_del(m, k);
}

/* One batch: ops[i].v NULL is a delete. */
typedef struct batch_op {
    const char *k, *v;
} batch_op;

static void w_batch(kv_store *s, model *m, const batch_op *ops, size_t n)
{
    kv_batch *b = kv_batch_new();
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++) {
        if (ops[i].v)
            ck_assert_int_eq(kv_batch_put(b, ops[i].k, strlen(ops[i].k), ops[i].v, strlen(ops[i].v), 0, 0), KV_OK);
        else
            ck_assert_int_eq(kv_batch_delete(b, ops[i].k, strlen(ops[i].k)), KV_OK);
    }
    ck_assert_int_eq(kv_write(s, b), KV_OK);
    kv_batch_free(b);
    for (size_t i = 0; i < n; i++) {
        if (ops[i].v)
            model_put(m, ops[i].k, ops[i].v);
        else
            model_del(m, ops[i].k);
    }
}

/* ---- snapshots: a data directory's files held in memory ---- */

/*
 * The stores live on the in-memory file system of kv_io_sim (the I/O
 * layer every engine file operation goes through), always in directory
 * DIR. On a real disk each open and close of a copy pays several
 * fdatasyncs and the suite would take minutes; in memory the same code
 * runs with only the syscalls gone.
 */
#define DIR "db"

enum { MAX_FILES = 16 };

typedef struct dfile {
    char name[64];
    uint8_t *data;
    size_t len;
} dfile;

typedef struct snapshot {
    int n;
    dfile f[MAX_FILES];
} snapshot;

static int by_name(const void *a, const void *b)
{
    return strcmp(((const dfile *)a)->name, ((const dfile *)b)->name);
}

static int add_name(void *arg, const char *name)
{
    snapshot *sn = arg;
    ck_assert_int_lt(sn->n, MAX_FILES);
    ck_assert_uint_lt(strlen(name), sizeof sn->f[0].name);
    snprintf(sn->f[sn->n++].name, sizeof sn->f[0].name, "%s", name);
    return 0;
}

static void dir_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", DIR, name);
}

/* Copies every file of DIR in fs, sorted by name. */
static void snap_take(snapshot *sn, kv_memfs *fs)
{
    memset(sn, 0, sizeof *sn);
    const kv_io *io = kv_memfs_io(fs);
    ck_assert_int_eq(io->list_dir(io->ctx, DIR, add_name, sn), 0);
    qsort(sn->f, (size_t)sn->n, sizeof sn->f[0], by_name);
    for (int i = 0; i < sn->n; i++) {
        char path[128];
        dir_path(path, sizeof path, sn->f[i].name);
        ck_assert_int_eq(kv_memfs_read(fs, path, &sn->f[i].data, &sn->f[i].len), 0);
    }
}

/* What kill -9 leaves of a store that has DIR open: every byte written,
 * preallocated zeros included (kv_memfs_clone makes the current contents
 * durable; the page cache would keep them). */
static void snap_kill9(snapshot *sn, kv_memfs *fs)
{
    kv_memfs *clone = kv_memfs_clone(fs);
    ck_assert_ptr_nonnull(clone);
    snap_take(sn, clone);
    kv_memfs_free(clone);
}

static void snap_free(snapshot *sn)
{
    for (int i = 0; i < sn->n; i++) free(sn->f[i].data);
    memset(sn, 0, sizeof *sn);
}

/* A fresh file system whose DIR holds the snapshot's files; file `cut`
 * (-1: none) only up to cut_len bytes. */
static kv_memfs *snap_write(const snapshot *sn, int cut, size_t cut_len)
{
    kv_memfs *fs = kv_memfs_new();
    ck_assert_ptr_nonnull(fs);
    ck_assert_int_eq(kv_memfs_io(fs)->mkdir(kv_memfs_io(fs)->ctx, DIR), 0);
    for (int i = 0; i < sn->n; i++) {
        char path[128];
        dir_path(path, sizeof path, sn->f[i].name);
        ck_assert_int_eq(kv_memfs_write(fs, path, sn->f[i].data, i == cut ? cut_len : sn->f[i].len), 0);
    }
    return fs;
}

/* The newest segment: the highest-numbered NNNNNNNNNN.seg. */
static int snap_newest_segment(const snapshot *sn)
{
    int best = -1;
    for (int i = 0; i < sn->n; i++) {
        const char *nm = sn->f[i].name;
        if (strlen(nm) == 14 && strcmp(nm + 10, ".seg") == 0 && strspn(nm, "0123456789") == 10) best = i;
    }
    ck_assert_int_ge(best, 0);
    return best; /* sorted by name, and ids have ten digits */
}

static void snap_describe(const snapshot *sn, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = 0;
    for (int i = 0; i < sn->n && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s%s %zu B", i ? ", " : "", sn->f[i].name, sn->f[i].len);
}

/* ---- checking a store against the model ---- */

/* A value as printable text, for failure messages. */
static void show(char *out, size_t cap, const uint8_t *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' ? "%c" : "\\x%02x",
                              p[i]);
    out[o] = 0;
}

/* The live keys kv_scan visits (the fixtures have a handful of short
 * ones; more, or longer ones, are not looked at). */
typedef struct keylist {
    int n;
    uint8_t key[64][256];
    size_t len[64];
} keylist;

static void collect_key(void *arg, const uint8_t *key, size_t klen, uint64_t expire_ms)
{
    (void)expire_ms;
    keylist *l = arg;
    if (l->n == 64 || klen > sizeof l->key[0]) return;
    memcpy(l->key[l->n], key, klen);
    l->len[l->n++] = klen;
}

/*
 * Reads every key of the model. Returns the number of keys answered
 * wrongly (a different value, a lost key, a resurrected key, or a key the
 * model never had that reads back a value); *why describes the first.
 * *read_errors counts keys that answered an error status instead of a
 * value (damage found by the verified read: acceptable).
 */
static int check_store(kv_store *s, const model *m, char *why, size_t cap, size_t *read_errors)
{
    int wrong = 0;
    char got[160];
    why[0] = 0;
    for (int i = 0; i < m->n; i++) {
        kv_value v;
        kv_status st = kv_get(s, m->key[i], strlen(m->key[i]), &v);
        if (st == KV_OK) {
            int bad = !m->live[i] || v.len != strlen(m->val[i]) || memcmp(v.data, m->val[i], v.len) != 0;
            if (bad && !wrong++) {
                show(got, sizeof got, v.data, v.len);
                const char *kind = "a value never written";
                for (int h = 0; h < m->nhist[i]; h++)
                    if (v.len == strlen(m->hist[i][h]) && memcmp(v.data, m->hist[i][h], v.len) == 0)
                        kind = "stale";
                if (!m->live[i])
                    snprintf(why, cap, "key \"%s\" resurrected: deleted, read \"%s\"", m->key[i], got);
                else
                    snprintf(why, cap, "key \"%s\": acknowledged \"%s\", read \"%s\" (%s)", m->key[i], m->val[i],
                             got, kind);
            }
            kv_value_free(&v);
        } else if (st == KV_NOT_FOUND) {
            if (m->live[i] && !wrong++)
                snprintf(why, cap, "key \"%s\" lost: acknowledged \"%s\", read not found", m->key[i], m->val[i]);
        } else {
            (*read_errors)++;
        }
    }
    /* A key the model never had must not read back a value either. */
    static keylist l; /* 16 KiB: off the stack */
    l.n = 0;
    uint64_t cur = 0;
    do {
        ck_assert_int_eq(kv_scan(s, cur, 64, collect_key, &l, &cur), KV_OK);
    } while (cur != 0);
    for (int j = 0; j < l.n; j++) {
        int known = 0;
        for (int i = 0; i < m->n; i++)
            if (l.len[j] == strlen(m->key[i]) && memcmp(l.key[j], m->key[i], l.len[j]) == 0) known = 1;
        if (known) continue;
        kv_value v;
        if (kv_get(s, l.key[j], l.len[j], &v) == KV_OK) {
            if (!wrong++) {
                char k[160];
                show(k, sizeof k, l.key[j], l.len[j]);
                show(got, sizeof got, v.data, v.len);
                snprintf(why, cap, "key \"%s\" never written, read \"%s\"", k, got);
            }
            kv_value_free(&v);
        }
    }
    return wrong;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The options every fixture uses: 4 KiB segments (the smallest allowed),
 * fsync always, hint files on, the default recovery mode; preallocation
 * as the fixture says. */
static void fixture_options(kv_options *o, int preallocate)
{
    kv_options_init(o);
    o->fsync = KV_FSYNC_ALWAYS;
    o->segment_max_bytes = KV_MIN_SEGMENT_MAX;
    o->preallocate = preallocate;
}

/* ---- exhaustive single-bit flips ---- */

typedef struct flip_counts {
    size_t flips, refused, correct, with_read_errors, wrong;
} flip_counts;

/* Consecutive bytes of one file whose flips gave wrong answers: printed
 * as one line, with the first flip's answer. */
typedef struct wrong_run {
    size_t from, to, flips, bit;
    char why[400];
} wrong_run;

static void run_print(const char *label, const char *file, const wrong_run *r)
{
    if (r->flips)
        printf("bitflip %s: WRONG: %s bytes %zu..%zu (%zu flips), first at byte %zu bit %zu: opened, %s\n", label,
               file, r->from, r->to, r->flips, r->from, r->bit, r->why);
}

/* Opens a fresh copy of sn with o; the store or NULL (refused). *fs must
 * be freed after the store is closed. */
static kv_store *open_copy(const snapshot *sn, const kv_options *o, kv_memfs **fs, kvr_report *rep)
{
    *fs = snap_write(sn, -1, 0);
    kv_options oo = *o;
    oo.io = kv_memfs_io(*fs);
    kv_store *s;
    kv_status st = kv_open(DIR, &oo, &s, rep);
    return st == KV_OK ? s : NULL;
}

/*
 * Flips every bit of every file of sn but LOCK, one at a time in a fresh
 * copy, opens it with o and checks every key of m. Prints the counts per
 * file and in all, and the byte ranges whose flips were answered wrongly;
 * asserts none was. The unchanged copy must open and read back exactly m.
 */
static void run_bitflips(const char *label, snapshot *sn, const model *m, const kv_options *o)
{
    char files[512];
    snap_describe(sn, files, sizeof files);
    printf("bitflip %s: files %s\n", label, files);
    kv_memfs *fs;
    kvr_report rep;
    kv_store *s = open_copy(sn, o, &fs, &rep);
    ck_assert_msg(s != NULL, "bitflip %s: the undamaged copy does not open: %s", label, rep.message);
    kvr_report_free(&rep);
    char why[400];
    size_t errs = 0;
    ck_assert_msg(check_store(s, m, why, sizeof why, &errs) == 0 && errs == 0,
                  "bitflip %s: the undamaged copy reads wrong: %s", label, why);
    kv_close(s);
    kv_memfs_free(fs);

    flip_counts all = {0};
    char first_wrong[600] = "";
    int runs_printed = 0;
    double t0 = now_s();
    for (int fi = 0; fi < sn->n; fi++) {
        dfile *f = &sn->f[fi];
        if (strcmp(f->name, "LOCK") == 0) continue;
        flip_counts c = {0};
        wrong_run run = {0};
        for (size_t bit = 0; bit < f->len * 8; bit++) {
            uint8_t mask = (uint8_t)(1u << (bit % 8));
            f->data[bit / 8] ^= mask;
            s = open_copy(sn, o, &fs, &rep);
            f->data[bit / 8] ^= mask;
            kvr_report_free(&rep);
            c.flips++;
            if (!s) {
                c.refused++;
            } else {
                errs = 0;
                if (check_store(s, m, why, sizeof why, &errs)) {
                    c.wrong++;
                    if (!first_wrong[0])
                        snprintf(first_wrong, sizeof first_wrong, "%s byte %zu bit %zu: %s", f->name, bit / 8,
                                 bit % 8, why);
                    if (run.flips && bit / 8 > run.to + 1) {
                        if (runs_printed++ < 20) run_print(label, f->name, &run);
                        run.flips = 0;
                    }
                    if (!run.flips) {
                        run.from = bit / 8;
                        run.bit = bit % 8;
                        snprintf(run.why, sizeof run.why, "%s", why);
                    }
                    run.to = bit / 8;
                    run.flips++;
                } else {
                    c.correct++;
                    if (errs) c.with_read_errors++;
                }
                kv_close(s);
            }
            kv_memfs_free(fs);
        }
        if (run.flips && runs_printed++ < 20) run_print(label, f->name, &run);
        printf("bitflip %s: %s: %zu flips: %zu refused, %zu opened correct (%zu with read errors), %zu wrong\n",
               label, f->name, c.flips, c.refused, c.correct, c.with_read_errors, c.wrong);
        all.flips += c.flips;
        all.refused += c.refused;
        all.correct += c.correct;
        all.with_read_errors += c.with_read_errors;
        all.wrong += c.wrong;
    }
    printf("bitflip %s: %zu flips: %zu refused, %zu opened correct (%zu with read errors), %zu wrong (%.1f s)\n",
           label, all.flips, all.refused, all.correct, all.with_read_errors, all.wrong, now_s() - t0);
    fflush(stdout);
    ck_assert_msg(all.wrong == 0, "bitflip %s: %zu of %zu flips opened and answered wrongly; first: %s", label,
                  all.wrong, all.flips, first_wrong);
}

/* ---- fixtures ---- */

/* The kill -9 fixture's last three writes: their models and where each
 * ends in the newest segment. */
enum { LAST_WRITES = 3 };

typedef struct fixture {
    kv_options opt;
    snapshot snap;
    model m;                       /* every acknowledged write */
    model before[LAST_WRITES + 1]; /* before[k]: the first k of the last writes applied */
    uint64_t end[LAST_WRITES + 1]; /* end[k]: the active segment's file size after them
                                      (where the log ends, if preallocation is off) */
} fixture;

static size_t file_size(kv_memfs *fs, const char *path)
{
    uint8_t *b;
    size_t n;
    ck_assert_int_eq(kv_memfs_read(fs, path, &b, &n), 0);
    free(b);
    return n;
}

static uint64_t active_segment_size(kv_store *s, kv_memfs *fs)
{
    kv_stats st;
    kv_get_stats(s, &st);
    char path[128];
    tu_seg_path(path, sizeof path, DIR, st.active_segment);
    return file_size(fs, path);
}

/* Opens a new store in DIR of a new file system with fx's options. */
static kv_store *fixture_open(fixture *fx, kv_memfs **fs)
{
    *fs = kv_memfs_new();
    ck_assert_ptr_nonnull(*fs);
    kv_options o = fx->opt;
    o.io = kv_memfs_io(*fs);
    kv_store *s;
    ck_assert_int_eq(kv_open(DIR, &o, &s, NULL), KV_OK);
    return s;
}

/*
 * Sealed segment, its hint file, clean shutdown. Segment 1 holds a, b, c,
 * d, an overwrite of a and a delete of c; it is sealed and its hint
 * written, so the next open loads it from the hint without reading its
 * records. The newest segment overwrites b, adds e and deletes d (whose
 * value stays in the sealed segment). Proves: damage in a hint file, in a
 * hint-loaded sealed segment, or in the newest segment after a clean
 * close is refused or answered as an error, never as a wrong, lost or
 * resurrected key.
 */
static void build_sealed_hint_clean(fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    fixture_options(&fx->opt, 1);
    kv_memfs *fs;
    kv_store *s = fixture_open(fx, &fs);
    w_put(s, &fx->m, "a", "a-one");
    w_put(s, &fx->m, "b", "b-one");
    w_put(s, &fx->m, "c", "c-one");
    w_put(s, &fx->m, "d", "d-one");
    w_put(s, &fx->m, "a", "a-two");
    w_del(s, &fx->m, "c");
    ck_assert_int_eq(kv_seal(s), KV_OK);
    ck_assert_int_eq(kv_write_hints(s, NULL), KV_OK);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_ge(st.segments, 2);
    ck_assert_uint_ge(st.hint_files, 1);
    ck_assert_uint_eq(st.hints_pending, 0);
    w_put(s, &fx->m, "b", "b-two");
    w_put(s, &fx->m, "e", "e-one");
    w_del(s, &fx->m, "d");
    ck_assert_int_eq(kv_close(s), KV_OK);
    snap_take(&fx->snap, fs);
    kv_memfs_free(fs);
    /* The next open loads the sealed segment from its hint. */
    kvr_report rep;
    s = open_copy(&fx->snap, &fx->opt, &fs, &rep);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_ge(rep.hints_used, 1);
    kvr_report_free(&rep);
    kv_close(s);
    kv_memfs_free(fs);
}

/*
 * kill -9 with a batch last. Puts, an overwrite and a delete, then the
 * last three writes: a put overwriting b, a put of a new key e, and a
 * batch of three puts (a and c overwritten, f new) and a delete of b. The
 * fixture is a copy of the directory taken while the store is still open:
 * what kill -9 leaves, with the preallocated zeros if preallocation is
 * on. Proves: damage anywhere in an unclosed newest segment, its last
 * (batch) record and its zero-filled tail included, never loses, changes
 * or resurrects an acknowledged key, nor applies part of a batch.
 */
static void build_kill9_batch_last(fixture *fx, int preallocate)
{
    memset(fx, 0, sizeof *fx);
    fixture_options(&fx->opt, preallocate);
    kv_memfs *fs;
    kv_store *s = fixture_open(fx, &fs);
    w_put(s, &fx->m, "a", "a-one");
    w_put(s, &fx->m, "b", "b-one");
    w_put(s, &fx->m, "c", "c-one");
    w_put(s, &fx->m, "d", "d-one");
    w_put(s, &fx->m, "a", "a-two");
    w_del(s, &fx->m, "d");
    fx->before[0] = fx->m;
    fx->end[0] = active_segment_size(s, fs);
    w_put(s, &fx->m, "b", "b-two");
    fx->before[1] = fx->m;
    fx->end[1] = active_segment_size(s, fs);
    w_put(s, &fx->m, "e", "e-one");
    fx->before[2] = fx->m;
    fx->end[2] = active_segment_size(s, fs);
    const batch_op last[] = {{"a", "a-three"}, {"c", "c-two"}, {"f", "f-one"}, {"b", NULL}};
    w_batch(s, &fx->m, last, sizeof last / sizeof last[0]);
    fx->before[3] = fx->m;
    fx->end[3] = active_segment_size(s, fs);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_eq(st.segments, 1); /* one segment: the last writes are the newest's tail */
    snap_kill9(&fx->snap, fs);         /* kill -9 now */
    ck_assert_int_eq(kv_close(s), KV_OK);
    kv_memfs_free(fs);
}

/*
 * Clean shutdown, last record an overwrite: x, then k old, k new, close.
 * Proves: a flip in the newest segment's last record after a clean close
 * (nothing was being written: it cannot be an interrupted write) is not
 * cut away as a torn tail, which would silently give k's old value back.
 */
static void build_clean_last_overwrite(fixture *fx)
{
    memset(fx, 0, sizeof *fx);
    fixture_options(&fx->opt, 1);
    kv_memfs *fs;
    kv_store *s = fixture_open(fx, &fs);
    w_put(s, &fx->m, "x", "x-one");
    w_put(s, &fx->m, "k", "k-old");
    w_put(s, &fx->m, "k", "k-new");
    ck_assert_int_eq(kv_close(s), KV_OK);
    snap_take(&fx->snap, fs);
    kv_memfs_free(fs);
}

START_TEST(bitflip_sealed_hint_clean_shutdown)
{
    static fixture fx;
    build_sealed_hint_clean(&fx);
    run_bitflips("sealed-hint-clean-shutdown", &fx.snap, &fx.m, &fx.opt);
    snap_free(&fx.snap);
}
END_TEST

START_TEST(bitflip_kill9_batch_last_preallocated)
{
    static fixture fx;
    build_kill9_batch_last(&fx, 1);
    run_bitflips("kill9-batch-last-preallocated", &fx.snap, &fx.m, &fx.opt);
    snap_free(&fx.snap);
}
END_TEST

START_TEST(bitflip_kill9_batch_last_no_preallocation)
{
    static fixture fx;
    build_kill9_batch_last(&fx, 0);
    run_bitflips("kill9-batch-last-no-preallocation", &fx.snap, &fx.m, &fx.opt);
    snap_free(&fx.snap);
}
END_TEST

START_TEST(bitflip_clean_shutdown_last_overwrite)
{
    static fixture fx;
    build_clean_last_overwrite(&fx);
    run_bitflips("clean-shutdown-last-overwrite", &fx.snap, &fx.m, &fx.opt);
    snap_free(&fx.snap);
}
END_TEST

/* ---- truncation of the newest segment ---- */

/* Whether the store holds exactly m: every key its value or absent, no
 * read error. */
static int store_is(kv_store *s, const model *m)
{
    char why[400];
    size_t errs = 0;
    return check_store(s, m, why, sizeof why, &errs) == 0 && errs == 0;
}

static void describe_store(kv_store *s, const model *m, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < m->n && o < cap; i++) {
        kv_value v;
        kv_status st = kv_get(s, m->key[i], strlen(m->key[i]), &v);
        char got[80];
        if (st == KV_OK) {
            show(got, sizeof got, v.data, v.len);
            kv_value_free(&v);
        } else {
            snprintf(got, sizeof got, "<%s>", kv_strerror(st));
        }
        o += (size_t)snprintf(out + o, cap - o, "%s%s=%s", i ? " " : "", m->key[i], got);
    }
}

/* Finds "<name>.<offset>.torn" in DIR: its offset, or -1 if none (or
 * several). */
typedef struct torn_find {
    const char *seg;
    long long off;
    int n;
} torn_find;

static int find_torn(void *arg, const char *name)
{
    torn_find *t = arg;
    size_t sl = strlen(t->seg), nl = strlen(name);
    if (nl <= sl + 6 || strncmp(name, t->seg, sl) != 0 || name[sl] != '.' || strcmp(name + nl - 5, ".torn") != 0)
        return 0;
    char digits[32];
    size_t dl = nl - sl - 6;
    if (dl == 0 || dl >= sizeof digits) return 0;
    memcpy(digits, name + sl + 1, dl);
    digits[dl] = 0;
    if (strspn(digits, "0123456789") != dl) return 0;
    t->off = strtoll(digits, NULL, 10);
    t->n++;
    return 0;
}

/*
 * After recovery opened a copy whose newest segment f was cut to L bytes:
 * if recovery removed bytes of [0, L) that are not zero (the segment no
 * longer starts with them), they must be saved in one
 * "<segment>.<offset>.torn" file holding [offset, Z), Z the end of the
 * last non-zero byte. Returns 0 (nothing was cut), 1 (a cut, saved), 2 (a
 * cut of zeros only: nothing to save), or -1 with *why filled.
 */
static int check_cut_saved(kv_memfs *fs, const dfile *f, size_t L, char *why, size_t cap)
{
    char path[128];
    dir_path(path, sizeof path, f->name);
    uint8_t *now;
    size_t n;
    ck_assert_int_eq(kv_memfs_read(fs, path, &now, &n), 0);
    size_t same = 0; /* bytes recovery left as they were */
    while (same < n && same < L && now[same] == f->data[same]) same++;
    free(now);
    size_t z = L;
    while (z > same && f->data[z - 1] == 0) z--;
    if (same == L) return 0;
    if (z == same) return 2;
    torn_find t = {f->name, -1, 0};
    const kv_io *io = kv_memfs_io(fs);
    ck_assert_int_eq(io->list_dir(io->ctx, DIR, find_torn, &t), 0);
    if (t.n != 1 || t.off < 0 || (size_t)t.off > same) {
        snprintf(why, cap, "recovery cut %s (%zu bytes) at %zu, but %d %s.<offset>.torn files hold the bytes",
                 f->name, L, same, t.n, f->name);
        return -1;
    }
    size_t from = (size_t)t.off;
    char torn[160];
    snprintf(torn, sizeof torn, "%s.%zu.torn", path, from);
    uint8_t *b;
    size_t bl;
    ck_assert_int_eq(kv_memfs_read(fs, torn, &b, &bl), 0);
    int ok = bl == z - from && memcmp(b, f->data + from, bl) == 0;
    free(b);
    if (!ok) {
        snprintf(why, cap, "%s.%zu.torn holds %zu bytes, not the %zu bytes [%zu, %zu) cut", f->name, from, bl,
                 z - from, from, z);
        return -1;
    }
    return 1;
}

/*
 * Cuts the newest segment of sn at every length from fx->end[0] (where
 * the last writes begin) to its end, in a fresh copy each time, and opens
 * it with fx's options. Each must open; the store
 * must equal before[k] for some k between the number of last writes that
 * end at or before the cut and the number that begin before it; bytes
 * recovery cut off (non-zero ones) must be in "<segment>.<offset>.torn".
 */
static void run_truncations(const char *label, const snapshot *sn, const fixture *fx)
{
    int seg = snap_newest_segment(sn);
    const dfile *f = &sn->f[seg];
    size_t lengths = 0, refused = 0, wrong = 0, torn_checked = 0, zeros_only_cuts = 0;
    size_t applied[LAST_WRITES + 1] = {0};
    char first_bad[900] = "";
    double t0 = now_s();
    for (size_t L = fx->end[0]; L <= f->len; L++) {
        lengths++;
        kv_memfs *fs = snap_write(sn, seg, L);
        kv_options o = fx->opt;
        o.io = kv_memfs_io(fs);
        kv_store *s;
        kvr_report rep;
        kv_status st = kv_open(DIR, &o, &s, &rep);
        char why[900] = "";
        if (st != KV_OK) {
            refused++;
            snprintf(why, sizeof why, "refused (%s): %s", kv_strerror(st), rep.message);
        } else {
            int kmin = 0, kmax = 0;
            for (int k = 1; k <= LAST_WRITES; k++) {
                if (fx->end[k] <= L) kmin = k;
                if (fx->end[k - 1] < L) kmax = k;
            }
            int got = -1;
            for (int k = kmin; k <= kmax && got < 0; k++)
                if (store_is(s, &fx->before[k])) got = k;
            if (got < 0) {
                char now[400];
                describe_store(s, &fx->m, now, sizeof now);
                snprintf(why, sizeof why, "reads %s; expected the first %d..%d of the last %d writes applied", now,
                         kmin, kmax, LAST_WRITES);
            } else {
                applied[got]++;
            }
            /* The bytes cut must be kept beside the segment. */
            if (!why[0]) {
                int r = check_cut_saved(fs, f, L, why, sizeof why);
                if (r == 1) torn_checked++;
                if (r == 2) zeros_only_cuts++;
            }
            kv_close(s);
            if (why[0]) wrong++;
        }
        kvr_report_free(&rep);
        if (why[0]) {
            if (refused + wrong <= 10) printf("truncation %s: BAD: %s cut to %zu bytes: %s\n", label, f->name, L, why);
            if (!first_bad[0]) snprintf(first_bad, sizeof first_bad, "%s cut to %zu bytes: %s", f->name, L, why);
        }
        kv_memfs_free(fs);
    }
    printf("truncation %s: %s cut at every length %llu..%zu: %zu cuts: %zu opened (last %d writes applied "
           "0/1/2/3: %zu/%zu/%zu/%zu; %zu cuts saved in .torn files, %zu cut zeros only), %zu refused, %zu wrong "
           "(%.1f s)\n",
           label, f->name, (unsigned long long)fx->end[0], f->len, lengths, lengths - refused, LAST_WRITES,
           applied[0], applied[1], applied[2], applied[3], torn_checked, zeros_only_cuts, refused, wrong,
           now_s() - t0);
    fflush(stdout);
    ck_assert_msg(refused + wrong == 0, "truncation %s: %zu of %zu cuts refused, %zu wrong; first: %s", label,
                  refused, lengths, wrong, first_bad);
}

/*
 * The kill -9 fixture with preallocation on; the offsets where the last
 * writes end come from the same writes made without preallocation (the
 * records are the same; there the file ends where the log does).
 */
static void build_truncation_fixture(fixture *fx)
{
    static fixture plain;
    build_kill9_batch_last(&plain, 0);
    build_kill9_batch_last(fx, 1);
    memcpy(fx->end, plain.end, sizeof fx->end);
    const dfile *f = &fx->snap.f[snap_newest_segment(&fx->snap)];
    ck_assert_uint_ge(f->len, fx->end[LAST_WRITES]);
    for (size_t i = fx->end[LAST_WRITES]; i < f->len; i++)
        ck_assert_msg(f->data[i] == 0, "byte %zu past the log end is not zero", i);
    snap_free(&plain.snap);
}

/* Proves: wherever kill -9 or a crash mid-append leaves the end of the
 * newest segment, with the preallocated zeros after it, the store opens
 * with every acknowledged write before the last ones, the last ones whole
 * or not at all, in log order, and keeps the bytes it cut. */
START_TEST(truncation_kill9_zeros_kept)
{
    static fixture fx;
    build_truncation_fixture(&fx);
    ck_assert_uint_gt(fx.snap.f[snap_newest_segment(&fx.snap)].len, fx.end[LAST_WRITES]);
    run_truncations("kill9-zeros-kept", &fx.snap, &fx);
    snap_free(&fx.snap);
}
END_TEST

/* The same with the clone's trailing zeros removed first: the file ends
 * inside the last writes, as after a crash without preallocation. */
START_TEST(truncation_kill9_zeros_removed)
{
    static fixture fx;
    build_truncation_fixture(&fx);
    fx.snap.f[snap_newest_segment(&fx.snap)].len = fx.end[LAST_WRITES];
    run_truncations("kill9-zeros-removed", &fx.snap, &fx);
    snap_free(&fx.snap);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bitflip");
    TCase *tc = tcase_create("damage");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, bitflip_sealed_hint_clean_shutdown);
    tcase_add_test(tc, bitflip_kill9_batch_last_preallocated);
    tcase_add_test(tc, bitflip_kill9_batch_last_no_preallocation);
    tcase_add_test(tc, bitflip_clean_shutdown_last_overwrite);
    tcase_add_test(tc, truncation_kill9_zeros_kept);
    tcase_add_test(tc, truncation_kill9_zeros_removed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
