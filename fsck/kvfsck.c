/*
 * kvfsck — the offline integrity checker of a kvd data directory: main(),
 * options, the text and JSON reports, and the repair steps. The checks
 * themselves are fsck/fsck_check.h; the repair of a torn tail is
 * recovery's own (kvr_recover in tolerate-tail mode).
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
#include "fsck_salvage.h"
#include "kv_dir.h"
#include "kv_io.h"
#include "kv_keydir.h"
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

/* "512 B", "1.2 KiB", "3.4 GiB". */
static const char *human(char *buf, size_t cap, uint64_t n)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", n);
    else
        snprintf(buf, cap, "%.1f %s", v, unit[u]);
    return buf;
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
    int w = fprintf(stderr, "\rsegment %zu/%zu, %s/%s", seg + 1, nsegs, human(a, sizeof a, done),
                    human(b, sizeof b, total));
    w--; /* the \r */
    if (w < p->width) fprintf(stderr, "%*s", p->width - w, "");
    if (w > p->width) p->width = w;
    fflush(stderr);
}

/* ---- JSON ---- */

/* Writes s as a JSON string: quotes, backslash and control characters
 * escaped; valid UTF-8 passed through; any other byte becomes U+FFFD, so
 * the document is always valid UTF-8 (file names need not be). */
static void json_str(FILE *f, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', f);
    while (*s) {
        unsigned c = *s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
            s++;
        } else if (c == '\n') {
            fputs("\\n", f);
            s++;
        } else if (c == '\t') {
            fputs("\\t", f);
            s++;
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
            s++;
        } else if (c < 0x80) {
            fputc((int)c, f);
            s++;
        } else {
            /* Length of a well-formed UTF-8 sequence starting here, or 0. */
            size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            for (size_t i = 1; i < n; i++)
                if ((s[i] & 0xc0) != 0x80) n = 0;
            if (n >= 3) { /* no overlong forms, surrogates or > U+10FFFF */
                if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0) || (c == 0xf0 && s[1] < 0x90) ||
                    (c == 0xf4 && s[1] >= 0x90))
                    n = 0;
            }
            if (n) {
                fwrite(s, 1, n, f);
                s += n;
            } else {
                fputs("\\ufffd", f);
                s++;
            }
        }
    }
    fputc('"', f);
}

static void json_names(FILE *f, const fsck_names *l)
{
    fputc('[', f);
    for (size_t i = 0; i < l->n; i++) {
        if (i) fputc(',', f);
        json_str(f, l->v[i]);
    }
    fputc(']', f);
}

static void json_segments(FILE *f, const char *dir, const fsck_report *rep)
{
    kv_path path;
    fputc('[', f);
    for (size_t i = 0; i < rep->nsegs; i++) {
        const fsck_segment *s = &rep->segs[i];
        kv_dir_join(&path, dir, s->name);
        fprintf(f, "%s{\"file\":", i ? "," : "");
        json_str(f, s->name);
        fputs(",\"path\":", f);
        json_str(f, path.s);
        fprintf(f, ",\"id\":%" PRIu32 ",\"newest\":%s,\"bytes\":%" PRIu64 ",\"unwritten_bytes\":%" PRIu64
                   ",\"records\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"error\":",
                s->id, s->newest ? "true" : "false", s->bytes, s->unwritten, s->records, s->entries);
        if (s->err)
            json_str(f, kv_strerror(s->err));
        else
            fputs("null", f);
        fputs(",\"problems\":[", f);
        for (size_t j = 0; j < s->nproblems; j++) {
            const fsck_problem *p = &s->problems[j];
            fprintf(f, "%s{\"offset\":%" PRIu64 ",\"length\":%" PRIu64 ",\"reason\":", j ? "," : "", p->offset,
                    p->length);
            json_str(f, kvr_reason_str(p->reason));
            fputs(",\"kind\":", f);
            json_str(f, fsck_kind_name(p->kind));
            fprintf(f, ",\"valid_after\":%s}", p->valid_after ? "true" : "false");
        }
        fputs("]}", f);
    }
    fputc(']', f);
}

static void json_summary(FILE *f, const fsck_report *rep)
{
    fprintf(f,
            "{\"segments\":%zu,\"log_bytes\":%" PRIu64 ",\"records\":%" PRIu64 ",\"batches\":%" PRIu64
            ",\"entries\":%" PRIu64 ",\"live_keys\":%" PRIu64 ",\"tombstones\":%" PRIu64 ",\"expired\":%" PRIu64
            ",\"live_bytes\":%" PRIu64 ",\"dead_bytes\":%" PRIu64 ",\"unwritten_bytes\":%" PRIu64
            ",\"max_seq\":%" PRIu64 ",\"problems\":%" PRIu64 ",\"problems_by_kind\":{",
            rep->nsegs, rep->log_bytes, rep->records, rep->batches, rep->entries, rep->live_keys, rep->tombstones,
            rep->expired, rep->live_bytes, rep->dead_bytes, rep->unwritten, rep->max_seq, rep->problems);
    for (int k = 0; k < FSCK_NKINDS; k++) {
        if (k) fputc(',', f);
        json_str(f, fsck_kind_name((fsck_kind)k));
        fprintf(f, ":%" PRIu64, rep->by_kind[k]);
    }
    fprintf(f, "},\"lock_file\":%s,\"hint_files\":[", rep->lock_file ? "true" : "false");
    for (size_t i = 0; i < rep->nhints; i++) {
        const fsck_hint *h = &rep->hints[i];
        fprintf(f, "%s{\"file\":", i ? "," : "");
        json_str(f, h->name);
        fprintf(f, ",\"segment\":%" PRIu32 ",\"bytes\":%" PRIu64 ",\"state\":", h->seg, h->bytes);
        json_str(f, fsck_hint_state_name(h->state));
        fprintf(f, ",\"problem\":%s}", h->state >= FSCK_HINT_DAMAGED ? "true" : "false");
    }
    fprintf(f, "],\"sealed_without_hint\":%u,\"kvd\":{\"starts\":%s,\"torn_bytes_cut\":%" PRIu64
               ",\"segments_from_hints\":%u,\"rotations_completed\":%u,\"message\":",
            rep->sealed_without_hint, rep->kvd_verdict == KV_OK ? "true" : "false", rep->kvd_torn_bytes,
            rep->kvd_hinted, rep->kvd_rotations);
    if (rep->kvd_verdict != KV_OK)
        json_str(f, rep->kvd_message);
    else
        fputs("null", f);
    fputs("},\"torn_files\":", f);
    json_names(f, &rep->torn_files);
    fputs(",\"discarded_files\":", f);
    json_names(f, &rep->discarded_files);
    fputs(",\"orig_files\":", f);
    json_names(f, &rep->orig_files);
    fputs(",\"salvage_files\":", f);
    json_names(f, &rep->salvage_files);
    fputs(",\"compact_files\":", f);
    json_names(f, &rep->compact_files);
    fputs(",\"orphan_files\":", f);
    json_names(f, &rep->orphan_files);
    fputs(",\"other_files\":", f);
    json_names(f, &rep->other_files);
    fputs(",\"error\":", f);
    if (rep->err)
        json_str(f, rep->message);
    else
        fputs("null", f);
    fputc('}', f);
}

/* ---- text ---- */

static void text_problems(FILE *f, const char *dir, const fsck_report *rep)
{
    for (size_t i = 0; i < rep->nsegs; i++) {
        const fsck_segment *s = &rep->segs[i];
        for (size_t j = 0; j < s->nproblems; j++) {
            const fsck_problem *p = &s->problems[j];
            fprintf(f, "%s/%s: offset %" PRIu64 ", length %" PRIu64 ": %s: %s%s\n", dir, s->name, p->offset,
                    p->length, fsck_kind_name(p->kind), kvr_reason_str(p->reason),
                    p->valid_after && p->kind != FSCK_SEQ_BACK ? " (valid records follow)" : "");
        }
        if (s->err) fprintf(f, "%s/%s: not checked: %s\n", dir, s->name, kv_strerror(s->err));
    }
    for (size_t i = 0; i < rep->nhints; i++) {
        const fsck_hint *h = &rep->hints[i];
        if (h->state >= FSCK_HINT_DAMAGED)
            fprintf(f, "%s/%s: offset 0, length %" PRIu64 ": %s: %s\n", dir, h->name, h->bytes,
                    fsck_kind_name(h->state == FSCK_HINT_ORPHAN ? FSCK_MISSING : FSCK_HINT),
                    h->state == FSCK_HINT_ORPHAN ? kvr_reason_str(KVR_ORPHAN_HINT) : fsck_hint_state_name(h->state));
    }
}

static void text_names(FILE *f, const char *label, const fsck_names *l)
{
    fprintf(f, "%-13s %zu", label, l->n);
    for (size_t i = 0; i < l->n; i++) fprintf(f, "%s%s", i ? ", " : ": ", l->v[i]);
    fputc('\n', f);
}

static void text_summary(FILE *f, const fsck_report *rep, int locked)
{
    char h[32];
    fprintf(f, "segments:     %zu", rep->nsegs);
    if (rep->nsegs) fprintf(f, " (newest %s)", rep->segs[rep->nsegs - 1].name);
    fprintf(f, "\nlog bytes:    %" PRIu64 " (%s)\n", rep->log_bytes, human(h, sizeof h, rep->log_bytes));
    fprintf(f, "records:      %" PRIu64 " (%" PRIu64 " batches; %" PRIu64 " entries, batch entries included)\n",
            rep->records, rep->batches, rep->entries);
    fprintf(f, "live keys:    %" PRIu64 "\n", rep->live_keys);
    fprintf(f, "tombstones:   %" PRIu64 "\n", rep->tombstones);
    fprintf(f, "expired:      %" PRIu64 "\n", rep->expired);
    fprintf(f, "live bytes:   %" PRIu64 " (%s)\n", rep->live_bytes, human(h, sizeof h, rep->live_bytes));
    fprintf(f, "dead bytes:   %" PRIu64 " (%s)\n", rep->dead_bytes, human(h, sizeof h, rep->dead_bytes));
    if (rep->unwritten)
        fprintf(f, "unwritten:    %" PRIu64 " (%s) zero bytes preallocated at the end of the newest segment; kvd "
                   "cuts them at start\n",
                rep->unwritten, human(h, sizeof h, rep->unwritten));
    fprintf(f, "problems:     %" PRIu64, rep->problems);
    for (int k = 0; k < FSCK_NKINDS; k++)
        fprintf(f, "%s%s %" PRIu64, k ? ", " : " (", fsck_kind_name((fsck_kind)k), rep->by_kind[k]);
    fputs(")\n", f);
    fprintf(f, "LOCK:         %s\n",
            locked           ? "held by this kvfsck"
            : rep->lock_file ? "present (not taken: this check is read-only)"
                             : "absent");
    text_names(f, ".torn:", &rep->torn_files);
    text_names(f, ".discarded:", &rep->discarded_files);
    if (rep->orig_files.n) text_names(f, ".orig:", &rep->orig_files);
    if (rep->salvage_files.n) text_names(f, ".salvage:", &rep->salvage_files);
    if (rep->compact_files.n) text_names(f, ".compact:", &rep->compact_files);
    if (rep->orphan_files.n) text_names(f, ".orphan:", &rep->orphan_files);
    if (rep->other_files.n) text_names(f, "other files:", &rep->other_files);
    size_t by_state[FSCK_HINT_ORPHAN + 1] = {0};
    for (size_t i = 0; i < rep->nhints; i++) by_state[rep->hints[i].state]++;
    fprintf(f, "hint files:   %zu (%zu valid, %zu bad, %zu not checked, %zu without a segment); %u sealed "
               "segment%s without one\n",
            rep->nhints, by_state[FSCK_HINT_VALID],
            by_state[FSCK_HINT_DAMAGED] + by_state[FSCK_HINT_STALE] + by_state[FSCK_HINT_DISAGREES],
            by_state[FSCK_HINT_UNCHECKED], by_state[FSCK_HINT_ORPHAN], rep->sealed_without_hint,
            rep->sealed_without_hint == 1 ? "" : "s");
}

/* What to do next about problems that are left. The first sentence is
 * what kvd itself will do with the directory: its recovery run without
 * changing anything (fsck_report.kvd_verdict), so the two cannot
 * disagree. */
static void text_advice(FILE *f, const char *dir, const fsck_report *rep)
{
    uint64_t torn = rep->by_kind[FSCK_TORN_TAIL];
    if (rep->kvd_verdict != KV_OK) {
        fprintf(f,
                "kvd refuses to start on this directory in its default recovery mode:\n  %s\n"
                "Copy the directory aside first (cp -a). Then either keep every valid record and set\n"
                "the damaged segments aside as .orig files:\n"
                "  kvfsck --repair --salvage %s\n"
                "or start kvd once with another --recovery mode (docs/operations.md).\n",
                rep->kvd_message, dir);
        return;
    }
    if (rep->problems == rep->by_kind[FSCK_HINT]) {
        fprintf(f,
                "kvd starts on this directory. The only problems are bad hint files. Nothing is lost:\n"
                "kvd does not use them and scans those segments instead (then writes new hint files).\n"
                "To rebuild them now:\n"
                "  kvfsck --repair %s\n",
                dir);
        return;
    }
    if (rep->problems == torn + rep->by_kind[FSCK_HINT]) {
        fprintf(f,
                "kvd starts on this directory. The only problem is a torn tail: a write that was cut\n"
                "short by a crash, never acknowledged. kvd cuts it itself at its next start (keeping the\n"
                "bytes in a .torn file)%s; or run:\n"
                "  kvfsck --repair %s\n",
                rep->kvd_rotations ? " and writes the trailer the crash left unwritten" : "", dir);
        return;
    }
    fprintf(f,
            "kvd starts on this directory: it loads %u sealed segment%s from hint files without\n"
            "reading their records, so the damage above is not seen at start. A read of a damaged\n"
            "key answers an error (never wrong data), and the background scrub reports the damage.\n"
            "Copy the directory aside (cp -a) and keep every valid record with:\n"
            "  kvfsck --repair --salvage %s\n",
            rep->kvd_hinted, rep->kvd_hinted == 1 ? "" : "s", dir);
}

/* ---- the document ---- */

typedef struct outcome {
    const fsck_report *before;
    const fsck_report *after; /* the check after a repair, or NULL */
    const char *action;       /* "cut torn tail", "salvage", or NULL */
    const char *message;      /* what the repair did or why it did not, or NULL */
    const fsck_salvaged *salvaged;
    size_t nsalvaged;
    const fsck_names *new_torn;
    int repaired;
    int exit_code;
} outcome;

static void json_doc(FILE *f, const opts *o, const outcome *oc)
{
    fputs("{\"dir\":", f);
    json_str(f, o->dir);
    fprintf(f, ",\"mode\":\"%s\",\"error\":", o->repair ? "repair" : "check");
    if (oc->before->err)
        json_str(f, oc->before->message);
    else if (oc->after && oc->after->err)
        json_str(f, oc->after->message);
    else
        fputs("null", f);
    fputs(",\"segments\":", f);
    json_segments(f, o->dir, oc->before);
    fputs(",\"summary\":", f);
    json_summary(f, oc->before);
    fputs(",\"repair\":", f);
    if (oc->action || oc->message) {
        fputs("{\"action\":", f);
        if (oc->action)
            json_str(f, oc->action);
        else
            fputs("null", f);
        fputs(",\"message\":", f);
        json_str(f, oc->message ? oc->message : "");
        fputs(",\"torn_files\":", f);
        if (oc->new_torn)
            json_names(f, oc->new_torn);
        else
            fputs("[]", f);
        fputs(",\"salvaged\":[", f);
        for (size_t i = 0; i < oc->nsalvaged; i++) {
            const fsck_salvaged *s = &oc->salvaged[i];
            fprintf(f, "%s{\"file\":", i ? "," : "");
            json_str(f, s->name);
            fputs(",\"original\":", f);
            json_str(f, s->orig);
            fprintf(f, ",\"old_bytes\":%" PRIu64 ",\"new_bytes\":%" PRIu64 ",\"records\":%" PRIu64 "}",
                    s->old_bytes, s->new_bytes, s->records);
        }
        fputs("]}", f);
    } else {
        fputs("null", f);
    }
    fputs(",\"after\":", f);
    if (oc->after) {
        fputs("{\"segments\":", f);
        json_segments(f, o->dir, oc->after);
        fputs(",\"summary\":", f);
        json_summary(f, oc->after);
        fputc('}', f);
    } else {
        fputs("null", f);
    }
    fprintf(f, ",\"repaired\":%s,\"exit_code\":%d}\n", oc->repaired ? "true" : "false", oc->exit_code);
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

/* The repair after the first check found problems. Fills oc; returns the
 * exit status (before the re-check). out is stdout for text, stderr for
 * JSON. */
static int do_repair(const kv_io *io, const opts *o, const fsck_report *rep, FILE *out, outcome *oc,
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
    if (tail_only) {
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
        if (st == KV_OK && rep->by_kind[FSCK_TORN_TAIL])
            m += (size_t)snprintf(msg, msgcap, "cut %" PRIu64 " bytes from %s/%010" PRIu32 ".seg at offset %" PRIu64,
                                  rr.torn_bytes, o->dir, rr.torn_segment, rr.torn_offset);
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
        json_str(stdout, o->dir);
        fputs(",\"error\":", stdout);
        json_str(stdout, m);
        fprintf(stdout, ",\"repaired\":false,\"exit_code\":%d}\n", EXIT_OPERROR);
    }
    return EXIT_OPERROR;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;

    const kv_io *io = kv_io_posix();
    FILE *out = o.json ? stderr : stdout; /* human text */
    kv_path lock_path = {""};
    kv_dir_lock dlock = {-1, -1};
    if (o.repair) {
        int r = io->list_dir(io->ctx, o.dir, ignore_entry, NULL);
        if (r < 0) {
            char m[4400];
            snprintf(m, sizeof m, "cannot read data directory %s: %s", o.dir, kv_strerror(-r));
            return early_error(&o, m);
        }
        /* The same two locks kvd and kvcompact take (kv_dir_lock_acquire):
         * the directory's own lock still excludes them if LOCK was deleted. */
        int r2 = kv_dir_path(&lock_path, o.dir, KV_FILE_LOCK, 0, 0);
        if (r2 == 0) r2 = kv_dir_lock_acquire(io, o.dir, &dlock);
        if (r2 < 0) {
            char m[4400];
            if (r2 == -EWOULDBLOCK)
                snprintf(m, sizeof m, "%s is in use (kvd or another tool holds %s); stop it first", o.dir,
                         lock_path.s);
            else if (r2 == -ENAMETOOLONG)
                snprintf(m, sizeof m, "cannot lock %s: %s", o.dir, kv_strerror(-r2));
            else
                snprintf(m, sizeof m, "cannot lock %s: %s", lock_path.s, kv_strerror(-r2));
            return early_error(&o, m);
        }
    }

    progress pg = {.on = isatty(2), .start = mono_ms()};
    fsck_report rep, after;
    memset(&after, 0, sizeof after);
    if (!o.json) {
        if (o.repair)
            fprintf(out, "kvfsck %s: checking %s (repair: %s held)\n", KVFSCK_VERSION, o.dir, lock_path.s);
        else
            fprintf(out, "kvfsck %s: checking %s (read-only)\n", KVFSCK_VERSION, o.dir);
    }
    fsck_check(io, o.dir, wall_ms(), show_progress, &pg, &rep);
    show_progress(&pg, 1, 1, 0, 0); /* wipe the line */

    outcome oc = {.before = &rep};
    char msg[2048] = "";
    fsck_salvaged *salvaged = NULL;
    fsck_names new_torn = {0};
    if (!o.json && rep.listed) {
        text_problems(out, o.dir, &rep);
        text_summary(out, &rep, dlock.file_fd >= 0);
    }
    if (rep.err) {
        fprintf(stderr, "kvfsck: %s\n", rep.message);
        if (!o.json && rep.listed) fprintf(out, "result: check incomplete: %s\n", rep.message);
        rc = EXIT_OPERROR;
    } else if (rep.problems == 0) {
        if (!o.json) fprintf(out, "result: clean%s\n", o.repair ? "; nothing to repair" : "");
        rc = EXIT_CLEAN;
    } else if (!o.repair) {
        if (!o.json) {
            fprintf(out, "result: %" PRIu64 " problem%s found, not repaired\n", rep.problems,
                    rep.problems == 1 ? "" : "s");
            text_advice(out, o.dir, &rep);
        }
        rc = EXIT_LEFT;
    } else {
        rc = do_repair(io, &o, &rep, out, &oc, msg, sizeof msg, &salvaged);
        fprintf(out, "%s\n", msg);
        for (size_t i = 0; i < oc.nsalvaged; i++)
            fprintf(out, "  %s/%s: %" PRIu64 " -> %" PRIu64 " bytes, %" PRIu64 " records kept; original in %s/%s\n",
                    o.dir, salvaged[i].name, salvaged[i].old_bytes, salvaged[i].new_bytes, salvaged[i].records,
                    o.dir, salvaged[i].orig);
        if (rc == EXIT_REPAIRED || (rc == EXIT_OPERROR && oc.action)) {
            /* Whatever happened, report the directory as it is now. */
            pg.start = mono_ms();
            fsck_check(io, o.dir, wall_ms(), show_progress, &pg, &after);
            show_progress(&pg, 1, 1, 0, 0);
            oc.after = &after;
            new_names(&rep.torn_files, &after.torn_files, &new_torn);
            oc.new_torn = &new_torn;
            for (size_t i = 0; i < new_torn.n; i++)
                fprintf(out, "  the cut bytes are in %s/%s\n", o.dir, new_torn.v[i]);
            if (!o.json) {
                fprintf(out, "after repair:\n");
                text_problems(out, o.dir, &after);
                text_summary(out, &after, 1);
            }
            if (after.err) {
                fprintf(stderr, "kvfsck: %s\n", after.message);
                rc = EXIT_OPERROR;
            } else if (rc == EXIT_REPAIRED && after.problems != 0) {
                rc = EXIT_LEFT;
            }
        }
        if (!o.json) {
            if (rc == EXIT_REPAIRED)
                fprintf(out, "result: all %" PRIu64 " problem%s repaired\n", rep.problems,
                        rep.problems == 1 ? "" : "s");
            else if (rc == EXIT_LEFT)
                fprintf(out, "result: %" PRIu64 " problem%s left\n", oc.after ? after.problems : rep.problems,
                        (oc.after ? after.problems : rep.problems) == 1 ? "" : "s");
            else
                fprintf(out, "result: operational error\n");
        }
    }
    oc.repaired = rc == EXIT_REPAIRED;
    oc.exit_code = rc;
    if (o.json) json_doc(stdout, &o, &oc);
    if (fflush(stdout) != 0 && rc < EXIT_OPERROR) rc = EXIT_OPERROR;

    free(new_torn.v);
    free(salvaged);
    fsck_report_free(&after);
    fsck_report_free(&rep);
    kv_dir_lock_release(io, &dlock);
    return rc;
}
