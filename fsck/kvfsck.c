/*
 * kvfsck — the offline integrity checker of a kvd data directory: main(),
 * options, --help, and the repair steps. The checks themselves are
 * fsck/fsck_check.h, the reports fsck/fsck_print.h; the repair of a torn
 * tail is recovery's own (kvr_recover in tolerate-tail mode).
 *
 * Read-only unless --repair: then it takes the directory's lock first
 * (kv_dir_lock_acquire: the directory and DIR/LOCK), so kvd, kvcompact and a
 * repairing kvfsck exclude each other, and asks before it
 * changes anything (as redis-check-aof does).
 *
 * Exit status, in the spirit of fsck(8): 0 clean, 1 problems found and all
 * repaired, 4 problems found and left, 8 operational error, 16 usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "fsck_check.h"
#include "fsck_print.h"
#include "fsck_salvage.h"
#include "kv_dir.h"
#include "kv_io.h"
#include "kv_keydir.h"
#include "kv_mem.h"
#include "kvr_recover.h"

#define KVFSCK_VERSION "0.1.0"

enum {
    EXIT_CLEAN = 0,
    EXIT_REPAIRED = 1,
    EXIT_LEFT = 4,
    EXIT_OPERROR = 8,
    EXIT_USAGE = 16,
};

typedef struct opts {
    int repair, salvage, yes, json;
    const char *dir;
} opts;

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- progress on stderr ---- */

typedef struct progress {
    int on;            /* stderr is a terminal */
    uint64_t start, last;
    int width;         /* of the line on screen, 0 if none */
} progress;

static void show_progress(void *arg, size_t seg, size_t nsegs, uint64_t done, uint64_t total)
{
    progress *p = arg;
    if (!p->on) return;
    if (seg >= nsegs) { /* finished: wipe the line */
        if (p->width) fprintf(stderr, "\r%*s\r", p->width, "");
        p->width = 0;
        return;
    }
    /* Only for runs long enough to need it, at most four times a second. */
    uint64_t now = mono_ms();
    if (now - p->start < 500 || now - p->last < 250) return;
    p->last = now;
    char a[32], b[32];
    int w = fprintf(stderr, "\rsegment %zu/%zu, %s/%s", seg + 1, nsegs, fsck_human(a, sizeof a, done),
                    fsck_human(b, sizeof b, total));
    w--; /* the \r */
    if (w < p->width) fprintf(stderr, "%*s", p->width - w, "");
    if (w > p->width) p->width = w;
    fflush(stderr);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: kvfsck [OPTIONS] DIR\n"
            "\n"
            "kvfsck %s checks a kvd data directory offline: it reads every segment\n"
            "(NNNNNNNNNN.seg, in id order) with the reader kvd's recovery uses, verifies\n"
            "every record's checksums and header, that sequence numbers increase through\n"
            "the whole log, and that every batch is complete, and prints each problem\n"
            "(file, byte offset, length, reason, and kind: torn tail, mid-log corruption,\n"
            "sealed-segment corruption, sequence going back, bad hint file, missing\n"
            "data: a segment gone from the log, a sealed segment without its trailer,\n"
            "a hint file without its segment) and a summary (segments, log bytes,\n"
            "records, live keys, tombstones, live and dead bytes, hint files, the .torn\n"
            "and .discarded files and the LOCK it saw). Its advice starts with what kvd\n"
            "will do with the directory (start, or refuse and why): it runs kvd's own\n"
            "recovery without changing anything.\n"
            "Zero bytes past the last commit mark of the newest segment are space kvd\n"
            "zero-filled ahead of its log (--preallocate yes) that a crash left: shown\n"
            "as 'unwritten', not a problem; kvd cuts them at its next start.\n"
            "\n"
            "Hint files (NNNNNNNNNN.hint) are decoded, checked against their segment as\n"
            "kvd checks them at start, and compared with a hint rebuilt from the\n"
            "segment's records; one that is damaged, stale or disagrees is a problem.\n"
            "\n"
            "Without --repair it only reads: it opens files read-only, never creates,\n"
            "truncates or renames anything, and does not take the LOCK, so it can run\n"
            "beside kvd (it then sees the log as it is on disk at that moment).\n"
            "\n"
            "Options:\n"
            "  --repair     lock DIR and DIR/LOCK as kvd does (exit 8 if kvd or another\n"
            "               tool holds them, even with LOCK deleted), ask,\n"
            "               then repair: a torn tail is cut exactly as kvd's recovery\n"
            "               cuts it, its bytes kept in <segment>.<offset>.torn. Any other\n"
            "               problem is left alone (nothing changes) unless --salvage.\n"
            "               Bad hint files are removed and rebuilt from their segments.\n"
            "               Then checks again and reports the result.\n"
            "  --salvage    with --repair: rewrite every damaged segment with exactly the\n"
            "               records that can be verified (all valid records in order,\n"
            "               whole batches only, records whose sequence number goes back\n"
            "               dropped) and keep each original whole as <segment>.orig.\n"
            "               Damage in the middle of the log loses the damaged records.\n"
            "  --yes        do not ask before repairing (needed when stdin is not a\n"
            "               terminal)\n"
            "  --json       print the report as one JSON document on stdout (questions\n"
            "               and messages go to stderr)\n"
            "  -h, --help   print this help and exit\n"
            "  --version    print the version and exit\n"
            "\n"
            "Exit status (as in fsck(8)):\n"
            "   0  clean: no problems\n"
            "   1  problems were found and all were repaired\n"
            "   4  problems were found and left (not repaired, or not all)\n"
            "   8  operational error: the directory or a segment cannot be read, an I/O\n"
            "      error, a segment of a format version this build cannot read, or DIR\n"
            "      is locked by kvd or another tool when --repair was asked\n"
            "  16  usage error\n"
            "\n"
            "Examples:\n"
            "  kvfsck ./data                        check, change nothing\n"
            "  kvfsck --json ./data | jq .summary   the report as JSON\n"
            "  kvfsck --repair ./data               cut a torn tail (asks first)\n"
            "  kvfsck --repair --salvage --yes ./data\n"
            "                                       keep every valid record, originals as .orig\n",
            KVFSCK_VERSION);
}

static int usage_error(const char *msg)
{
    if (msg) fprintf(stderr, "kvfsck: %s\n", msg);
    fprintf(stderr, "Try 'kvfsck --help'.\n");
    return EXIT_USAGE;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, opts *o)
{
    enum { OPT_REPAIR = 256, OPT_SALVAGE, OPT_YES, OPT_JSON, OPT_VERSION };
    static const struct option longopts[] = {
        {"repair", no_argument, NULL, OPT_REPAIR},   {"salvage", no_argument, NULL, OPT_SALVAGE},
        {"yes", no_argument, NULL, OPT_YES},         {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},            {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    opterr = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_REPAIR: o->repair = 1; break;
        case OPT_SALVAGE: o->salvage = 1; break;
        case OPT_YES: o->yes = 1; break;
        case OPT_JSON: o->json = 1; break;
        case 'h': usage(stdout); return EXIT_CLEAN;
        case OPT_VERSION: printf("kvfsck %s\n", KVFSCK_VERSION); return EXIT_CLEAN;
        default: return usage_error(NULL); /* getopt said what */
        }
    }
    if (optind == argc) return usage_error("no data directory given");
    if (argc - optind > 1) return usage_error("one data directory only");
    o->dir = argv[optind];
    if (!o->dir[0]) return usage_error("empty data directory name");
    if (o->salvage && !o->repair) return usage_error("--salvage needs --repair");
    return -1;
}

static int ignore_entry(void *arg, const char *name)
{
    (void)arg;
    (void)name;
    return 1;
}

/* Asks on the terminal. Returns 1 for yes. */
static int confirm(const opts *o, uint64_t problems)
{
    fprintf(stderr, "Repair %" PRIu64 " problem%s in %s? [y/N] ", problems, problems == 1 ? "" : "s", o->dir);
    fflush(stderr);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;
    line[strcspn(line, "\r\n")] = '\0';
    return !strcasecmp(line, "y") || !strcasecmp(line, "yes");
}

/* The names in after that are not in before (the .torn files a cut made). */
static void new_names(const fsck_names *before, const fsck_names *after, fsck_names *out)
{
    for (size_t i = 0; i < after->n; i++) {
        int seen = 0;
        for (size_t j = 0; j < before->n && !seen; j++) seen = !strcmp(after->v[i], before->v[j]);
        if (seen) continue;
        char **nv = realloc(out->v, (out->n + 1) * sizeof *nv);
        if (!nv) return;
        out->v = nv;
        out->v[out->n++] = after->v[i]; /* borrowed from after */
    }
}

/* Removes the hint files the check found bad, and those of the segments
 * in salvaged[0, n) (rewritten: their hints describe the old bytes); a
 * hint whose segment is missing is renamed "<hint>.orphan" instead. Then
 * fsyncs the directory. Returns 0 or -errno with msg set. */
static int remove_bad_hints(const kv_io *io, const char *dir, const fsck_report *rep,
                            const fsck_salvaged *salvaged, size_t n, char *msg, size_t msgcap)
{
    int any = 0;
    kv_path path;
    for (size_t i = 0; i < rep->nhints; i++) {
        const fsck_hint *h = &rep->hints[i];
        int drop = h->state >= FSCK_HINT_DAMAGED;
        for (size_t j = 0; j < n && !drop; j++) drop = salvaged[j].id == h->seg;
        if (!drop) continue;
        int r = kv_dir_path(&path, dir, KV_FILE_HINT, h->seg, 0);
        if (r < 0) {
            /* cannot name it: reported below */
        } else if (h->state == FSCK_HINT_ORPHAN) {
            /* The evidence of a lost segment is kept, out of recovery's way. */
            kv_path base, to;
            r = kv_dir_path(&base, dir, KV_FILE_HINT_ORPHAN, h->seg, 0);
            if (r == 0) r = kv_dir_unused(io, &base, &to);
            if (r == 0) r = io->rename(io->ctx, path.s, to.s);
        } else {
            r = io->unlink(io->ctx, path.s);
        }
        if (r < 0 && r != -ENOENT) {
            snprintf(msg, msgcap, "cannot remove %s/%s: %s", dir, h->name, kv_strerror(-r));
            return r;
        }
        any = 1;
    }
    if (any) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) {
            snprintf(msg, msgcap, "cannot fsync %s: %s", dir, kv_strerror(-r));
            return r;
        }
    }
    return 0;
}

/* The repair of torn tails and bad hint files, which loses nothing:
 * recovery's own cut (tolerate-tail mode), after the bad hint files are
 * removed. Fills oc; returns the exit status. */
static int repair_tail(const kv_io *io, const opts *o, const fsck_report *rep, uint64_t now, fsck_outcome *oc,
                       char *msg, size_t msgcap)
{
    /* Recovery's own cut: tolerate-tail cuts torn tails and refuses
     * (before changing anything) on any other problem. The bad hint
     * files go first; recovery writes them again from a scan. */
    int r = remove_bad_hints(io, o->dir, rep, NULL, 0, msg, msgcap);
    if (r < 0) {
        oc->message = msg;
        return EXIT_OPERROR;
    }
    kv_keydir *kd = kv_keydir_new();
    if (!kd) {
        snprintf(msg, msgcap, "out of memory");
        oc->message = msg;
        return EXIT_OPERROR;
    }
    kvr_report rr;
    kv_status st = kvr_recover(io, o->dir, KVR_TOLERATE_TAIL, KVR_HINTS_READ | KVR_HINTS_WRITE, now, kd, &rr);
    kv_keydir_free(kd);
    if (st == KV_OK && (r = io->fsync_dir(io->ctx, o->dir)) < 0) st = -r;
    size_t m = 0;
    char seg[KV_NAME_MAX];
    kv_seg_name(seg, sizeof seg, rr.torn_segment);
    if (st == KV_OK && rep->by_kind[FSCK_TORN_TAIL])
        m += (size_t)snprintf(msg, msgcap, "cut %" PRIu64 " bytes from %s/%s at offset %" PRIu64, rr.torn_bytes,
                              o->dir, seg, rr.torn_offset);
    if (st == KV_OK && rep->by_kind[FSCK_HINT] && m < msgcap)
        snprintf(msg + m, msgcap - m, "%sremoved %" PRIu64 " bad hint file%s, wrote %u hint file%s",
                 m ? "; " : "", rep->by_kind[FSCK_HINT], rep->by_kind[FSCK_HINT] == 1 ? "" : "s",
                 rr.hints_written, rr.hints_written == 1 ? "" : "s");
    if (st != KV_OK) snprintf(msg, msgcap, "recovery did not repair: %s", rr.message[0] ? rr.message : kv_strerror(st));
    kvr_report_free(&rr);
    oc->message = msg;
    if (st == KV_CORRUPT) return EXIT_LEFT; /* refused: nothing changed */
    return st == KV_OK ? EXIT_REPAIRED : EXIT_OPERROR;
}

/* The repair after the first check found problems. Fills oc; returns the
 * exit status (before the re-check). out is stdout for text, stderr for
 * JSON. */
static int do_repair(const kv_io *io, const opts *o, const fsck_report *rep, FILE *out, fsck_outcome *oc,
                     char *msg, size_t msgcap, fsck_salvaged **salvaged)
{
    /* Torn tails and bad hint files are repaired without losing anything. */
    uint64_t torn = rep->by_kind[FSCK_TORN_TAIL] + rep->by_kind[FSCK_HINT];
    int tail_only = rep->problems == torn;
    if (!tail_only && !o->salvage) {
        snprintf(msg, msgcap,
                 "not repaired: %" PRIu64 " problem%s %s not a torn tail or a bad hint file, and kvfsck does "
                 "not drop valid records after corruption unless --salvage is given; nothing was changed",
                 rep->problems - torn, rep->problems - torn == 1 ? "" : "s",
                 rep->problems - torn == 1 ? "is" : "are");
        oc->message = msg;
        return EXIT_LEFT;
    }
    oc->action = tail_only ? (rep->by_kind[FSCK_TORN_TAIL] ? "cut torn tail" : "rebuild hint files") : "salvage";
    if (tail_only)
        fprintf(out, "repair plan: %s%s%s\n",
                rep->by_kind[FSCK_TORN_TAIL] ? "cut the torn tail as kvd's recovery does, keeping the cut bytes "
                                               "in a .torn file"
                                             : "",
                rep->by_kind[FSCK_TORN_TAIL] && rep->by_kind[FSCK_HINT] ? "; " : "",
                rep->by_kind[FSCK_HINT] ? "remove the bad hint files and rebuild them from their segments" : "");
    else
        fprintf(out,
                "repair plan: salvage: rewrite the damaged segments with every record that verifies, keeping "
                "each original as <segment>.orig\n");
    if (!o->yes) {
        if (!isatty(0)) {
            snprintf(msg, msgcap, "not repaired: --yes needed when not on a terminal; nothing was changed");
            oc->message = msg;
            return EXIT_LEFT;
        }
        if (!confirm(o, rep->problems)) {
            snprintf(msg, msgcap, "not repaired: not confirmed; nothing was changed");
            oc->message = msg;
            return EXIT_LEFT;
        }
    }
    uint64_t now = wall_ms();
    if (tail_only) return repair_tail(io, o, rep, now, oc, msg, msgcap);
    size_t n = 0;
    kv_status st = fsck_salvage(io, o->dir, rep, now, salvaged, &n, msg, msgcap);
    oc->salvaged = *salvaged;
    oc->nsalvaged = n;
    if (st != KV_OK) {
        oc->message = msg;
        return st == KV_CORRUPT ? EXIT_LEFT : EXIT_OPERROR;
    }
    uint64_t kept = 0;
    for (size_t i = 0; i < n; i++) kept += (*salvaged)[i].records;
    /* Hints of rewritten segments describe the old bytes: remove them and
     * the bad ones, then let recovery (which now finds a clean log) write
     * them again. A failure here leaves only slower starts. */
    uint32_t rebuilt = 0;
    char hmsg[512] = "";
    if (remove_bad_hints(io, o->dir, rep, *salvaged, n, hmsg, sizeof hmsg) == 0) {
        kv_keydir *kd = kv_keydir_new();
        kvr_report rr;
        if (kd && kvr_recover(io, o->dir, KVR_TOLERATE_TAIL, KVR_HINTS_READ | KVR_HINTS_WRITE, now, kd, &rr) ==
                      KV_OK &&
            io->fsync_dir(io->ctx, o->dir) == 0)
            rebuilt = rr.hints_written;
        if (kd) kvr_report_free(&rr);
        kv_keydir_free(kd);
    }
    snprintf(msg, msgcap,
             "salvaged %zu segment%s keeping %" PRIu64 " records; originals kept in %s; wrote %u hint file%s%s%s", n,
             n == 1 ? "" : "s", kept, o->dir, rebuilt, rebuilt == 1 ? "" : "s", hmsg[0] ? "; " : "", hmsg);
    oc->message = msg;
    return EXIT_REPAIRED;
}

/* An operational error before any check: the message on stderr and, with
 * --json, a document that says only that. Returns the exit status. */
static int early_error(const opts *o, const char *m)
{
    fprintf(stderr, "kvfsck: %s\n", m);
    if (o->json) {
        fputs("{\"dir\":", stdout);
        fsck_json_str(stdout, o->dir);
        fputs(",\"error\":", stdout);
        fsck_json_str(stdout, m);
        fprintf(stdout, ",\"repaired\":false,\"exit_code\":%d}\n", EXIT_OPERROR);
    }
    return EXIT_OPERROR;
}

/* --repair: the directory must be readable, and its lock is taken, the
 * same two locks kvd and kvcompact take (kv_dir_lock_acquire): the
 * directory's own lock still excludes them if LOCK was deleted. Returns -1
 * to go on, else the exit status (the error already reported). */
static int take_lock(const kv_io *io, const opts *o, kv_dir_lock *dlock, kv_path *lock_path)
{
    int r = io->list_dir(io->ctx, o->dir, ignore_entry, NULL);
    if (r < 0) {
        char m[4400];
        snprintf(m, sizeof m, "cannot read data directory %s: %s", o->dir, kv_strerror(-r));
        return early_error(o, m);
    }
    r = kv_dir_path(lock_path, o->dir, KV_FILE_LOCK, 0, 0);
    if (r == 0) r = kv_dir_lock_acquire(io, o->dir, dlock);
    if (r < 0) {
        char m[4400];
        if (r == -EWOULDBLOCK)
            snprintf(m, sizeof m, "%s is in use (kvd or another tool holds %s); stop it first", o->dir,
                     lock_path->s);
        else if (r == -ENAMETOOLONG)
            snprintf(m, sizeof m, "cannot lock %s: %s", o->dir, kv_strerror(-r));
        else
            snprintf(m, sizeof m, "cannot lock %s: %s", lock_path->s, kv_strerror(-r));
        return early_error(o, m);
    }
    return -1;
}

/* What one run keeps until it prints the JSON document and exits. */
typedef struct run {
    const kv_io *io;
    const opts *o;
    FILE *out;               /* human text: stdout, or stderr with --json */
    progress pg;
    fsck_report rep, after;  /* the check, and the check after a repair */
    fsck_outcome oc;
    char msg[2048];
    fsck_salvaged *salvaged;
    fsck_names new_torn;     /* .torn files the repair made (borrowed from after) */
} run;

/* --repair on problems the check found: repairs, checks again and says
 * what is left. Returns the exit status. */
static int repair_and_recheck(run *u)
{
    const opts *o = u->o;
    FILE *out = u->out;
    int rc = do_repair(u->io, o, &u->rep, out, &u->oc, u->msg, sizeof u->msg, &u->salvaged);
    fprintf(out, "%s\n", u->msg);
    for (size_t i = 0; i < u->oc.nsalvaged; i++)
        fprintf(out, "  %s/%s: %" PRIu64 " -> %" PRIu64 " bytes, %" PRIu64 " records kept; original in %s/%s\n",
                o->dir, u->salvaged[i].name, u->salvaged[i].old_bytes, u->salvaged[i].new_bytes,
                u->salvaged[i].records, o->dir, u->salvaged[i].orig);
    if (rc == EXIT_REPAIRED || (rc == EXIT_OPERROR && u->oc.action)) {
        /* Whatever happened, report the directory as it is now. */
        u->pg.start = mono_ms();
        fsck_check(u->io, o->dir, wall_ms(), show_progress, &u->pg, &u->after);
        show_progress(&u->pg, 1, 1, 0, 0);
        u->oc.after = &u->after;
        new_names(&u->rep.torn_files, &u->after.torn_files, &u->new_torn);
        u->oc.new_torn = &u->new_torn;
        for (size_t i = 0; i < u->new_torn.n; i++)
            fprintf(out, "  the cut bytes are in %s/%s\n", o->dir, u->new_torn.v[i]);
        if (!o->json) {
            fprintf(out, "after repair:\n");
            fsck_text_problems(out, o->dir, &u->after);
            fsck_text_summary(out, &u->after, 1);
        }
        if (u->after.err) {
            fprintf(stderr, "kvfsck: %s\n", u->after.message);
            rc = EXIT_OPERROR;
        } else if (rc == EXIT_REPAIRED && u->after.problems != 0) {
            rc = EXIT_LEFT;
        }
    }
    if (!o->json) {
        uint64_t left = u->oc.after ? u->after.problems : u->rep.problems;
        if (rc == EXIT_REPAIRED)
            fprintf(out, "result: all %" PRIu64 " problem%s repaired\n", u->rep.problems,
                    u->rep.problems == 1 ? "" : "s");
        else if (rc == EXIT_LEFT)
            fprintf(out, "result: %" PRIu64 " problem%s left\n", left, left == 1 ? "" : "s");
        else
            fprintf(out, "result: operational error\n");
    }
    return rc;
}

/* The result of the first check, when it is final (no repair asked, or
 * nothing to repair). Returns the exit status, or -1 to repair. */
static int first_result(const run *u)
{
    const opts *o = u->o;
    const fsck_report *rep = &u->rep;
    if (rep->err) {
        fprintf(stderr, "kvfsck: %s\n", rep->message);
        if (!o->json && rep->listed) fprintf(u->out, "result: check incomplete: %s\n", rep->message);
        return EXIT_OPERROR;
    }
    if (rep->problems == 0) {
        if (!o->json) fprintf(u->out, "result: clean%s\n", o->repair ? "; nothing to repair" : "");
        return EXIT_CLEAN;
    }
    if (o->repair) return -1;
    if (!o->json) {
        fprintf(u->out, "result: %" PRIu64 " problem%s found, not repaired\n", rep->problems,
                rep->problems == 1 ? "" : "s");
        fsck_text_advice(u->out, o->dir, rep);
    }
    return EXIT_LEFT;
}

int main(int argc, char **argv)
{
    kv_mem_policy();
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;

    static run u; /* a few KiB of paths and messages: not on the stack */
    u.io = kv_io_posix();
    u.o = &o;
    u.out = o.json ? stderr : stdout;
    kv_path lock_path = {""};
    kv_dir_lock dlock = {-1, -1};
    if (o.repair && (rc = take_lock(u.io, &o, &dlock, &lock_path)) >= 0) return rc;

    u.pg = (progress){.on = isatty(2), .start = mono_ms()};
    if (!o.json) {
        if (o.repair)
            fprintf(u.out, "kvfsck %s: checking %s (repair: %s held)\n", KVFSCK_VERSION, o.dir, lock_path.s);
        else
            fprintf(u.out, "kvfsck %s: checking %s (read-only)\n", KVFSCK_VERSION, o.dir);
    }
    fsck_check(u.io, o.dir, wall_ms(), show_progress, &u.pg, &u.rep);
    show_progress(&u.pg, 1, 1, 0, 0); /* wipe the line */

    u.oc = (fsck_outcome){.before = &u.rep};
    if (!o.json && u.rep.listed) {
        fsck_text_problems(u.out, o.dir, &u.rep);
        fsck_text_summary(u.out, &u.rep, dlock.file_fd >= 0);
    }
    rc = first_result(&u);
    if (rc < 0) rc = repair_and_recheck(&u);
    u.oc.repaired = rc == EXIT_REPAIRED;
    u.oc.exit_code = rc;
    if (o.json) fsck_json_doc(stdout, o.dir, o.repair, &u.oc);
    if (fflush(stdout) != 0 && rc < EXIT_OPERROR) rc = EXIT_OPERROR;

    free(u.new_torn.v);
    free(u.salvaged);
    fsck_report_free(&u.after);
    fsck_report_free(&u.rep);
    kv_dir_lock_release(u.io, &dlock);
    return rc;
}
