/*
 * kvcompact — offline compaction of a kvd data directory.
 *
 * Opens the directory as kvd does (the LOCK excludes a running kvd, and
 * recovery runs first), seals the active segment, and runs the engine's
 * compaction (kv_compact, kv/engine/kv_store.h) until every sealed segment is
 * folded into compacted output: live records are kept, overwritten and
 * deleted records, tombstones and expired records are dropped. Files are
 * replaced durably (write, fdatasync, rename, directory fsync, only then
 * unlink), so a crash at any point leaves a directory that recovers to
 * the same keys. Reports bytes before and after.
 *
 * Exit codes: 0 compacted (or nothing to do), 1 failure (locked, refused
 * by recovery, I/O error, damage in a segment: run kvfsck), 2 usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kv_mem.h"
#include "kv_store.h"

#define KVCOMPACT_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: kvcompact [OPTIONS] DIR\n"
            "\n"
            "kvcompact %s compacts a stopped kvd data directory: it rewrites the live\n"
            "records of every segment into compacted segments and removes the old ones\n"
            "(overwritten and deleted records, tombstones and expired records are\n"
            "dropped), then reports the bytes before and after. It takes DIR/LOCK, so it\n"
            "refuses to run while kvd (or kvfsck --repair) holds the directory; a\n"
            "running kvd compacts online instead (COMPACT, BGREWRITEAOF, SIGUSR1).\n"
            "Recovery runs first, as at kvd's start: a torn tail is cut, and a damaged\n"
            "log is refused (run kvfsck DIR).\n"
            "\n"
            "Options:\n"
            "  --quiet      print only errors\n"
            "  --help       this text\n"
            "  --version    print the version\n"
            "\n"
            "Exit codes: 0 compacted (or nothing to compact), 1 failure (locked,\n"
            "refused by recovery, I/O error, damage found), 2 usage error.\n"
            "\n"
            "Example:\n"
            "  kvcompact ./data\n",
            KVCOMPACT_VERSION);
}

/* Reads the options into *dir and *quiet. Returns -1 to go on, else the
 * exit status (0 after --help or --version, 2 on a usage error). */
static int parse_args(int argc, char **argv, const char **dir, int *quiet)
{
    *dir = NULL;
    *quiet = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("kvcompact %s\n", KVCOMPACT_VERSION);
            return 0;
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            *quiet = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "kvcompact: unknown option '%s' (see kvcompact --help)\n", argv[i]);
            return 2;
        } else if (*dir) {
            fprintf(stderr, "kvcompact: one data directory only (see kvcompact --help)\n");
            return 2;
        } else {
            *dir = argv[i];
        }
    }
    if (!*dir) {
        usage(stderr);
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    kv_mem_policy();
    const char *dir;
    int quiet;
    int rc = parse_args(argc, argv, &dir, &quiet);
    if (rc >= 0) return rc;
    if (access(dir, F_OK) != 0) {
        fprintf(stderr, "kvcompact: %s: no such data directory\n", dir);
        return 1;
    }
    kv_options o;
    kv_options_init(&o);
    kv_store *s;
    kvr_report rep;
    kv_status st = kv_open(dir, &o, &s, &rep);
    if (st != KV_OK) {
        fprintf(stderr, "kvcompact: cannot open %s: %s\n", dir, rep.message[0] ? rep.message : kv_strerror(st));
        kvr_report_free(&rep);
        return 1;
    }
    if (!quiet && rep.torn_bytes)
        printf("recovery cut a torn tail of %" PRIu64 " bytes (kept beside segment %u)\n", rep.torn_bytes,
               rep.torn_segment);
    kvr_report_free(&rep);
    kv_stats before, after;
    kv_get_stats(s, &before);
    st = kv_seal(s);
    if (st != KV_OK) {
        fprintf(stderr, "kvcompact: cannot seal the active segment: %s\n", kv_strerror(st));
        kv_close(s);
        return 1;
    }
    int isatty_err = isatty(2);
    for (int run = 1;; run++) {
        kv_compact_report cr;
        st = kv_compact(s, &cr);
        if (st != KV_OK) {
            fprintf(stderr, "kvcompact: compaction failed: %s\n", cr.message);
            kv_close(s);
            return 1;
        }
        if (cr.segments_in <= 1 && cr.bytes_before == cr.bytes_after) break;
        if (!quiet && isatty_err)
            fprintf(stderr, "\rrun %d: %u segments, %" PRIu64 " -> %" PRIu64 " bytes   ", run, cr.segments_in,
                    cr.bytes_before, cr.bytes_after);
        kv_stats mid;
        kv_get_stats(s, &mid);
        if (mid.segments <= 2 || cr.segments_in <= 1) break; /* one output and the empty active segment */
    }
    if (!quiet && isatty_err) fprintf(stderr, "\n");
    uint32_t hints = 0;
    st = kv_write_hints(s, &hints); /* outputs have theirs; this covers any other sealed segment */
    if (st != KV_OK) fprintf(stderr, "kvcompact: warning: not every segment got a hint file: %s\n", kv_strerror(st));
    kv_get_stats(s, &after);
    st = kv_close(s);
    if (st != KV_OK) {
        fprintf(stderr, "kvcompact: closing %s failed: %s\n", dir, kv_strerror(st));
        return 1;
    }
    if (!quiet)
        printf("compacted %s: %" PRIu64 " -> %" PRIu64 " bytes (%u -> %u segments), %" PRIu64 " keys, %" PRIu64
               " live bytes, %u hint files\n",
               dir, before.log_bytes, after.log_bytes, before.segments, after.segments, after.keys,
               after.live_bytes, after.hint_files);
    return 0;
}
