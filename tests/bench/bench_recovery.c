/*
 * kv_bench_recovery — measures how fast the store starts: the time kv_open
 * takes to recover a data directory (read every segment, verify every
 * record's CRCs, rebuild the key directory), in MiB of log, records and
 * keys per second.
 *
 * Phase 1 builds a data directory with N put records over K distinct keys
 * (K < N, so later records overwrite earlier ones), under fsync policy
 * "no" so that the build is quick:
 *  - default (--single): T threads call kv_put, so the log holds one put
 *    record per write, as a server's log mostly does; the writer thread's
 *    group commit packs the writes that arrive together into one write();
 *  - --batch: the threads call kv_write with batches of S puts, so the log
 *    holds batch records of S entries each.
 * Phase 2 reopens the directory R times and times each kv_open with a
 * monotonic clock; the recovery report gives the log bytes, records and
 * keys, and its own timing of the recovery proper. Every run is checked
 * against what the build wrote (records, entries, keys, log bytes, no
 * problems); a mismatch is an error.
 *
 * The page cache is not dropped between runs (that needs privileges and
 * disturbs the machine), so this is a warm-cache measurement: it shows the
 * CPU cost of recovery plus copying the log out of the cache, not the
 * speed of the disk.
 *
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_record.h"
#include "kv_status.h"
#include "kv_store.h"
#include "kvr_recover.h"

#define DEFAULT_RECORDS 1000000ull
#define DEFAULT_VALUE_BYTES 100ull
#define DEFAULT_RUNS 3u
#define DEFAULT_THREADS 8u
#define DEFAULT_BATCH 1000u
#define MAX_THREADS 256u
/* A batch is sent early once its entries reach this many bytes. */
#define BATCH_FLUSH_BYTES (16u << 20)

typedef struct config {
    uint64_t records;
    uint64_t value_bytes;
    uint64_t keys; /* 0 until parsed: records / 2 */
    unsigned runs;
    unsigned threads;
    unsigned batch; /* 0: single puts; else puts per batch */
    const char *dir;
    int keep;
} config;

typedef struct worker {
    pthread_t tid;
    const config *cfg;
    kv_store *store;
    uint64_t first, end; /* record indexes [first, end) */
    kv_status st;        /* first error */
    char what[64];       /* what failed */
} worker;

static atomic_int g_stop; /* set by the first worker that fails */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [options]\n"
            "\n"
            "Builds a data directory, then times kv_open (which runs recovery) on it.\n"
            "\n"
            "  --records N      put records to write (default %llu)\n"
            "  --value-bytes B  value size in bytes (default %llu)\n"
            "  --keys K         distinct keys, 1..N (default N/2, so half the records\n"
            "                   are overwritten)\n"
            "  --single         write with kv_put, one put record per write (default)\n"
            "  --batch [S]      write with kv_write, batches of S puts (default S %u)\n"
            "  --threads T      writer threads in the build phase (default %u)\n"
            "  --runs R         timed reopens (default %u)\n"
            "  --dir DIR        data directory; must be absent or empty (default: a new\n"
            "                   directory under $TMPDIR, or /tmp)\n"
            "  --keep           keep the data directory afterwards (it is also kept when\n"
            "                   a recovery check fails, for kvfsck)\n"
            "  --help           this text\n"
            "\n"
            "Timings are warm-cache: the page cache is not dropped between runs.\n"
            "Exit status: 0 success, 1 failure, 2 usage error.\n",
            prog, (unsigned long long)DEFAULT_RECORDS, (unsigned long long)DEFAULT_VALUE_BYTES, DEFAULT_BATCH,
            DEFAULT_THREADS, DEFAULT_RUNS);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* Per second, given a count and elapsed nanoseconds. */
static double rate(double count, uint64_t ns)
{
    return ns ? count * 1e9 / (double)ns : 0.0;
}

/* Key index of record i: records cycle through the keys, so record i
 * overwrites record i - K. */
static uint32_t key_of(const config *c, uint64_t i)
{
    return (uint32_t)(i % c->keys);
}

static int format_key(char *buf, size_t cap, uint32_t k)
{
    return snprintf(buf, cap, "key:%010" PRIu32, k);
}

/* Fills a value: a fixed pseudo-random pattern with the record index in
 * its first bytes, so no two values are alike. */
static void fill_value(uint8_t *v, size_t n, uint64_t i)
{
    for (size_t j = 0; j < 8 && j < n; j++) v[j] = (uint8_t)(i >> (8 * j));
}

static void fail_worker(worker *w, kv_status st, const char *what)
{
    w->st = st;
    snprintf(w->what, sizeof w->what, "%s", what);
    atomic_store(&g_stop, 1);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const config *c = w->cfg;
    size_t vlen = (size_t)c->value_bytes;
    uint8_t *val = malloc(vlen ? vlen : 1);
    kv_batch *b = c->batch ? kv_batch_new() : NULL;
    if (!val || (c->batch && !b)) {
        fail_worker(w, ENOMEM, "allocating");
        goto out;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull ^ w->first;
    for (size_t j = 0; j < vlen; j++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        val[j] = (uint8_t)x;
    }
    uint64_t pending = 0; /* encoded bytes in the batch */
    for (uint64_t i = w->first; i < w->end; i++) {
        if ((i & 1023) == 0 && atomic_load(&g_stop)) goto out;
        char key[32];
        int klen = format_key(key, sizeof key, key_of(c, i));
        fill_value(val, vlen, i);
        kv_status st;
        if (!b) {
            st = kv_put(w->store, key, (size_t)klen, val, vlen, 0, 0);
            if (st != KV_OK) {
                fail_worker(w, st, "kv_put");
                goto out;
            }
            continue;
        }
        st = kv_batch_put(b, key, (size_t)klen, val, vlen, 0, 0);
        if (st != KV_OK) {
            fail_worker(w, st, "kv_batch_put");
            goto out;
        }
        pending += kv_record_size((size_t)klen, vlen);
        if (kv_batch_count(b) >= c->batch || pending >= BATCH_FLUSH_BYTES || i + 1 == w->end) {
            st = kv_write(w->store, b);
            if (st != KV_OK) {
                fail_worker(w, st, "kv_write");
                goto out;
            }
            kv_batch_clear(b);
            pending = 0;
        }
    }
out:
    kv_batch_free(b);
    free(val);
    return NULL;
}

/* ---- the data directory ---- */

/* Makes sure dir is usable: creates it if absent (*created = 1), refuses
 * one that holds anything. Returns 0 or -1 after printing why. */
static int prepare_dir(const char *dir, int *created)
{
    *created = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT) {
            fprintf(stderr, "kv_bench_recovery: cannot open %s: %s\n", dir, strerror(errno));
            return -1;
        }
        if (mkdir(dir, 0755) != 0) {
            fprintf(stderr, "kv_bench_recovery: cannot create %s: %s\n", dir, strerror(errno));
            return -1;
        }
        *created = 1;
        return 0;
    }
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    if (!empty) {
        fprintf(stderr, "kv_bench_recovery: %s is not empty; give an absent or empty directory\n", dir);
        return -1;
    }
    return 0;
}

/* Removes the files the benchmark left in dir (it holds no
 * subdirectories), and dir itself if the benchmark created it. */
static void remove_dir(const char *dir, int created)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "kv_bench_recovery: warning: cannot open %s to clean up: %s\n", dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0)
            fprintf(stderr, "kv_bench_recovery: warning: cannot remove %s/%s: %s\n", dir, e->d_name,
                    strerror(errno));
    }
    closedir(d);
    if (created && rmdir(dir) != 0)
        fprintf(stderr, "kv_bench_recovery: warning: cannot remove %s: %s\n", dir, strerror(errno));
}

/* ---- phases ---- */

/* What the build left on disk, to check every recovery against. */
typedef struct expect {
    uint64_t records, entries, keys, log_bytes;
    uint32_t segments;
} expect;

static int build(const config *c, const char *dir, expect *ex)
{
    kv_options o;
    kv_options_init(&o);
    o.fsync = KV_FSYNC_NO;
    kv_store *s;
    kvr_report rep;
    kv_status st = kv_open(dir, &o, &s, &rep);
    if (st != KV_OK) {
        fprintf(stderr, "kv_bench_recovery: kv_open %s failed: %s%s%s\n", dir, kv_strerror(st),
                rep.message[0] ? ": " : "", rep.message);
        kvr_report_free(&rep);
        return -1;
    }
    kvr_report_free(&rep);

    worker *ws = calloc(c->threads, sizeof *ws);
    if (!ws) {
        fprintf(stderr, "kv_bench_recovery: out of memory\n");
        kv_close(s);
        return -1;
    }
    atomic_store(&g_stop, 0);
    uint64_t t0 = mono_ns();
    unsigned started = 0;
    for (unsigned t = 0; t < c->threads; t++) {
        ws[t].cfg = c;
        ws[t].store = s;
        ws[t].first = c->records * t / c->threads;
        ws[t].end = c->records * (t + 1) / c->threads;
        int r = pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]);
        if (r != 0) {
            fprintf(stderr, "kv_bench_recovery: cannot start a writer thread: %s\n", strerror(r));
            atomic_store(&g_stop, 1);
            break;
        }
        started++;
    }
    for (unsigned t = 0; t < started; t++) pthread_join(ws[t].tid, NULL);
    uint64_t t_write = mono_ns() - t0;

    int ok = started == c->threads;
    for (unsigned t = 0; t < started; t++)
        if (ws[t].st != KV_OK) {
            fprintf(stderr, "kv_bench_recovery: build: %s failed: %s\n", ws[t].what, kv_strerror(ws[t].st));
            char why[512];
            if (kv_failstop_reason(s, why, sizeof why)) fprintf(stderr, "kv_bench_recovery: %s\n", why);
            ok = 0;
            break;
        }
    free(ws);

    kv_stats stats;
    kv_get_stats(s, &stats);
    uint64_t t1 = mono_ns();
    st = kv_close(s); /* fdatasyncs the active segment */
    uint64_t t_close = mono_ns() - t1;
    if (st != KV_OK) {
        fprintf(stderr, "kv_bench_recovery: kv_close failed: %s\n", kv_strerror(st));
        return -1;
    }
    if (!ok) return -1;

    ex->records = stats.records;
    ex->entries = c->records;
    ex->keys = c->keys;
    ex->log_bytes = stats.log_bytes;
    ex->segments = stats.segments;
    if (stats.keys != c->keys) {
        fprintf(stderr, "kv_bench_recovery: build: the store holds %" PRIu64 " keys, expected %" PRIu64 "\n",
                stats.keys, c->keys);
        return -1;
    }
    printf("build: %" PRIu64 " records (%" PRIu64 " writes in %" PRIu64 " group commits, %.1f writes/group), "
           "%" PRIu64 " keys, %.1f MiB log in %u segments\n",
           stats.records, stats.group_writes, stats.groups,
           stats.groups ? (double)stats.group_writes / (double)stats.groups : 0.0, stats.keys, mib(stats.log_bytes),
           stats.segments);
    printf("build: %.1f ms writing (%.0f puts/s, %.1f MiB/s), %.1f ms kv_close\n", t_write / 1e6,
           rate((double)c->records, t_write), rate(mib(stats.log_bytes), t_write), t_close / 1e6);
    return 0;
}

typedef struct run_result {
    uint64_t open_ns;
    kvr_report rep;
} run_result;

/* Checks a recovery report against what the build wrote. Returns 0 or -1
 * after printing what differs. */
static int check_report(const kvr_report *r, const expect *ex, unsigned run)
{
    int bad = 0;
#define CHECK(cond, fmt, ...)                                                                                   \
    do {                                                                                                        \
        if (!(cond)) {                                                                                          \
            fprintf(stderr, "kv_bench_recovery: run %u: " fmt "\n", run, __VA_ARGS__);                          \
            bad = 1;                                                                                            \
        }                                                                                                       \
    } while (0)
    CHECK(r->records == ex->records, "recovered %" PRIu64 " records, the build wrote %" PRIu64, r->records,
          ex->records);
    CHECK(r->entries == ex->entries, "recovered %" PRIu64 " entries, the build wrote %" PRIu64, r->entries,
          ex->entries);
    CHECK(r->keys == ex->keys, "recovered %" PRIu64 " keys, the build wrote %" PRIu64, r->keys, ex->keys);
    CHECK(r->log_bytes == ex->log_bytes, "recovered %" PRIu64 " log bytes, the build wrote %" PRIu64,
          r->log_bytes, ex->log_bytes);
    CHECK(r->segments == ex->segments, "recovered %u segments, the build wrote %u", r->segments, ex->segments);
    CHECK(r->problems == 0 && r->torn_bytes == 0,
          "recovery reported %u problems and cut %" PRIu64 " torn bytes in a cleanly closed log", r->problems,
          r->torn_bytes);
#undef CHECK
    return bad ? -1 : 0;
}

static void print_run(const char *label, const run_result *rr)
{
    const kvr_report *r = &rr->rep;
    printf("%s: kv_open %.1f ms (recovery %.1f ms): %.1f MiB log (%" PRIu64 " bytes), %" PRIu64
           " records, %" PRIu64 " entries, %" PRIu64 " keys: %.1f MiB/s, %.0f records/s, ",
           label, rr->open_ns / 1e6, r->elapsed_us / 1e3, mib(r->log_bytes), r->log_bytes, r->records, r->entries,
           r->keys, rate(mib(r->log_bytes), rr->open_ns), rate((double)r->records, rr->open_ns));
    if (r->entries != r->records) printf("%.0f entries/s, ", rate((double)r->entries, rr->open_ns));
    printf("%.0f keys/s\n", rate((double)r->keys, rr->open_ns));
}

static int measure(const config *c, const char *dir, const expect *ex)
{
    printf("recovery: %u runs of kv_open on a cleanly closed directory; warm page cache (caches are not "
           "dropped: the log is read from memory, so this measures CPU cost, not the disk); rates use the wall "
           "time of kv_open\n",
           c->runs);
    fflush(stdout);
    kv_options o;
    kv_options_init(&o);
    o.fsync = KV_FSYNC_NO;
    run_result best = {0};
    for (unsigned run = 1; run <= c->runs; run++) {
        run_result rr;
        kv_store *s;
        uint64_t t0 = mono_ns();
        kv_status st = kv_open(dir, &o, &s, &rr.rep);
        rr.open_ns = mono_ns() - t0;
        if (st != KV_OK) {
            fprintf(stderr, "kv_bench_recovery: run %u: kv_open %s failed: %s%s%s\n", run, dir, kv_strerror(st),
                    rr.rep.message[0] ? ": " : "", rr.rep.message);
            kvr_report_free(&rr.rep);
            return -1;
        }
        kvr_report_free(&rr.rep);
        if (run == 1) {
            char line[1024];
            kvr_report_format(&rr.rep, line, sizeof line);
            printf("  %s\n", line);
        }
        char label[32];
        snprintf(label, sizeof label, "  run %u", run);
        print_run(label, &rr);
        fflush(stdout);
        int bad = check_report(&rr.rep, ex, run);
        st = kv_close(s);
        if (st != KV_OK) {
            fprintf(stderr, "kv_bench_recovery: run %u: kv_close failed: %s\n", run, kv_strerror(st));
            return -1;
        }
        if (bad) return -2;
        if (run == 1 || rr.open_ns < best.open_ns) best = rr;
    }
    print_run("  best", &best);
    const kvr_report *r = &best.rep;
    char entries[64] = "", entries_rate[64] = "";
    if (r->entries != r->records) {
        snprintf(entries, sizeof entries, " (%" PRIu64 " entries)", r->entries);
        snprintf(entries_rate, sizeof entries_rate, " %.0f entries/s,", rate((double)r->entries, best.open_ns));
    }
    printf("recovery: %" PRIu64 " records%s, %" PRIu64 " keys, %.1f MiB log, best %.1f ms: %.1f MiB/s, %.0f "
           "records/s,%s %.0f keys/s\n",
           r->records, entries, r->keys, mib(r->log_bytes), best.open_ns / 1e6, rate(mib(r->log_bytes), best.open_ns),
           rate((double)r->records, best.open_ns), entries_rate, rate((double)r->keys, best.open_ns));
    return 0;
}

/* ---- main ---- */

/* Matches "--name" (value in the next argument) or "--name=value". Returns
 * 1 and the value in *val, or 0. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != 0) return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

int main(int argc, char **argv)
{
    const char *prog = "kv_bench_recovery";
    config c = {DEFAULT_RECORDS, DEFAULT_VALUE_BYTES, 0, DEFAULT_RUNS, DEFAULT_THREADS, 0, NULL, 0};
    int keys_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        uint64_t n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, prog);
            return 0;
        } else if (!strcmp(a, "--keep")) {
            c.keep = 1;
        } else if (!strcmp(a, "--single")) {
            c.batch = 0;
        } else if (!strcmp(a, "--batch")) {
            c.batch = DEFAULT_BATCH;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                if (parse_u64(argv[i + 1], 1, 1000000, &n) < 0) goto bad_value;
                c.batch = (unsigned)n;
                i++;
            }
        } else if (!strncmp(a, "--batch=", 8)) {
            if (parse_u64(a + 8, 1, 1000000, &n) < 0) goto bad_value;
            c.batch = (unsigned)n;
        } else if (opt_value(argc, argv, &i, "--records", &v)) {
            if (parse_u64(v, 1, 1ull << 40, &n) < 0) goto bad_value;
            c.records = n;
        } else if (opt_value(argc, argv, &i, "--value-bytes", &v)) {
            if (parse_u64(v, 0, KV_MAX_VALUE_LEN, &n) < 0) goto bad_value;
            c.value_bytes = n;
        } else if (opt_value(argc, argv, &i, "--keys", &v)) {
            if (parse_u64(v, 1, 1ull << 32, &n) < 0) goto bad_value;
            c.keys = n;
            keys_given = 1;
        } else if (opt_value(argc, argv, &i, "--runs", &v)) {
            if (parse_u64(v, 1, 1000, &n) < 0) goto bad_value;
            c.runs = (unsigned)n;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (parse_u64(v, 1, MAX_THREADS, &n) < 0) goto bad_value;
            c.threads = (unsigned)n;
        } else if (opt_value(argc, argv, &i, "--dir", &v)) {
            if (!v || !*v) goto bad_value;
            c.dir = v;
        } else {
            fprintf(stderr, "%s: unknown option %s\n", prog, a);
            usage(stderr, prog);
            return 2;
        }
        continue;
    bad_value:
        fprintf(stderr, "%s: bad or missing value for %s (see --help)\n", prog, a);
        return 2;
    }
    if (!keys_given) c.keys = c.records / 2 ? c.records / 2 : 1;
    if (c.keys > c.records) {
        fprintf(stderr, "%s: --keys %" PRIu64 " is more than --records %" PRIu64 "\n", prog, c.keys, c.records);
        return 2;
    }
    if (c.threads > c.records) c.threads = (unsigned)c.records;

    char tmpl[4096];
    const char *dir = c.dir;
    int created = 0;
    if (!dir) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpl, sizeof tmpl, "%s/kv_bench_recovery.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmpl)) {
            fprintf(stderr, "%s: cannot create a directory from %s: %s\n", prog, tmpl, strerror(errno));
            return 1;
        }
        dir = tmpl;
        created = 1;
    } else if (prepare_dir(dir, &created) < 0) {
        return 1;
    }

    printf("kv_bench_recovery: %" PRIu64 " records, %" PRIu64 "-byte values, %" PRIu64 " keys, %s, %u writer "
           "threads, fsync no, in %s\n",
           c.records, c.value_bytes, c.keys, c.batch ? "batches" : "single put records", c.threads, dir);
    if (c.batch) printf("kv_bench_recovery: batches of up to %u puts\n", c.batch);
    fflush(stdout);

    expect ex;
    int rc = 0;
    if (build(&c, dir, &ex) < 0) {
        rc = 1;
    } else {
        int r = measure(&c, dir, &ex);
        if (r == -2) {
            fprintf(stderr, "kv_bench_recovery: recovery did not match the build; data directory kept: %s\n", dir);
            return 1;
        }
        if (r < 0) rc = 1;
    }
    if (c.keep)
        printf("data directory kept: %s\n", dir);
    else
        remove_dir(dir, created);
    return rc;
}
