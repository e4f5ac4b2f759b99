#include "fsck_print.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kv_dir.h"
#include "kvr_reader.h"

/* "512 B", "1.2 KiB", "3.4 GiB". */
const char *fsck_human(char *buf, size_t cap, uint64_t n)
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

/* ---- JSON ---- */

/* Writes s as a JSON string: quotes, backslash and control characters
 * escaped; valid UTF-8 passed through; any other byte becomes U+FFFD, so
 * the document is always valid UTF-8 (file names need not be). */
void fsck_json_str(FILE *f, const char *str)
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
        fsck_json_str(f, l->v[i]);
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
        fsck_json_str(f, s->name);
        fputs(",\"path\":", f);
        fsck_json_str(f, path.s);
        fprintf(f, ",\"id\":%" PRIu32 ",\"newest\":%s,\"bytes\":%" PRIu64 ",\"unwritten_bytes\":%" PRIu64
                   ",\"records\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"error\":",
                s->id, s->newest ? "true" : "false", s->bytes, s->unwritten, s->records, s->entries);
        if (s->err)
            fsck_json_str(f, kv_strerror(s->err));
        else
            fputs("null", f);
        fputs(",\"problems\":[", f);
        for (size_t j = 0; j < s->nproblems; j++) {
            const fsck_problem *p = &s->problems[j];
            fprintf(f, "%s{\"offset\":%" PRIu64 ",\"length\":%" PRIu64 ",\"reason\":", j ? "," : "", p->offset,
                    p->length);
            fsck_json_str(f, kvr_reason_str(p->reason));
            fputs(",\"kind\":", f);
            fsck_json_str(f, fsck_kind_name(p->kind));
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
        fsck_json_str(f, fsck_kind_name((fsck_kind)k));
        fprintf(f, ":%" PRIu64, rep->by_kind[k]);
    }
    fprintf(f, "},\"lock_file\":%s,\"hint_files\":[", rep->lock_file ? "true" : "false");
    for (size_t i = 0; i < rep->nhints; i++) {
        const fsck_hint *h = &rep->hints[i];
        fprintf(f, "%s{\"file\":", i ? "," : "");
        fsck_json_str(f, h->name);
        fprintf(f, ",\"segment\":%" PRIu32 ",\"bytes\":%" PRIu64 ",\"state\":", h->seg, h->bytes);
        fsck_json_str(f, fsck_hint_state_name(h->state));
        fprintf(f, ",\"problem\":%s}", h->state >= FSCK_HINT_DAMAGED ? "true" : "false");
    }
    fprintf(f, "],\"sealed_without_hint\":%u,\"kvd\":{\"starts\":%s,\"torn_bytes_cut\":%" PRIu64
               ",\"segments_from_hints\":%u,\"rotations_completed\":%u,\"message\":",
            rep->sealed_without_hint, rep->kvd_verdict == KV_OK ? "true" : "false", rep->kvd_torn_bytes,
            rep->kvd_hinted, rep->kvd_rotations);
    if (rep->kvd_verdict != KV_OK)
        fsck_json_str(f, rep->kvd_message);
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
    fputs(",\"replication_files\":", f);
    json_names(f, &rep->repl_files);
    fputs(",\"other_files\":", f);
    json_names(f, &rep->other_files);
    fputs(",\"error\":", f);
    if (rep->err)
        fsck_json_str(f, rep->message);
    else
        fputs("null", f);
    fputc('}', f);
}

/* ---- text ---- */

void fsck_text_problems(FILE *f, const char *dir, const fsck_report *rep)
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

void fsck_text_summary(FILE *f, const fsck_report *rep, int locked)
{
    char h[32];
    fprintf(f, "segments:     %zu", rep->nsegs);
    if (rep->nsegs) fprintf(f, " (newest %s)", rep->segs[rep->nsegs - 1].name);
    fprintf(f, "\nlog bytes:    %" PRIu64 " (%s)\n", rep->log_bytes, fsck_human(h, sizeof h, rep->log_bytes));
    fprintf(f, "records:      %" PRIu64 " (%" PRIu64 " batches; %" PRIu64 " entries, batch entries included)\n",
            rep->records, rep->batches, rep->entries);
    fprintf(f, "live keys:    %" PRIu64 "\n", rep->live_keys);
    fprintf(f, "tombstones:   %" PRIu64 "\n", rep->tombstones);
    fprintf(f, "expired:      %" PRIu64 "\n", rep->expired);
    fprintf(f, "live bytes:   %" PRIu64 " (%s)\n", rep->live_bytes, fsck_human(h, sizeof h, rep->live_bytes));
    fprintf(f, "dead bytes:   %" PRIu64 " (%s)\n", rep->dead_bytes, fsck_human(h, sizeof h, rep->dead_bytes));
    if (rep->unwritten)
        fprintf(f, "unwritten:    %" PRIu64 " (%s) zero bytes preallocated at the end of the newest segment; kvd "
                   "cuts them at start\n",
                rep->unwritten, fsck_human(h, sizeof h, rep->unwritten));
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
    if (rep->repl_files.n) text_names(f, "replication:", &rep->repl_files);
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
void fsck_text_advice(FILE *f, const char *dir, const fsck_report *rep)
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


void fsck_json_doc(FILE *f, const char *dir, int repair, const fsck_outcome *oc)
{
    fputs("{\"dir\":", f);
    fsck_json_str(f, dir);
    fprintf(f, ",\"mode\":\"%s\",\"error\":", repair ? "repair" : "check");
    if (oc->before->err)
        fsck_json_str(f, oc->before->message);
    else if (oc->after && oc->after->err)
        fsck_json_str(f, oc->after->message);
    else
        fputs("null", f);
    fputs(",\"segments\":", f);
    json_segments(f, dir, oc->before);
    fputs(",\"summary\":", f);
    json_summary(f, oc->before);
    fputs(",\"repair\":", f);
    if (oc->action || oc->message) {
        fputs("{\"action\":", f);
        if (oc->action)
            fsck_json_str(f, oc->action);
        else
            fputs("null", f);
        fputs(",\"message\":", f);
        fsck_json_str(f, oc->message ? oc->message : "");
        fputs(",\"torn_files\":", f);
        if (oc->new_torn)
            json_names(f, oc->new_torn);
        else
            fputs("[]", f);
        fputs(",\"salvaged\":[", f);
        for (size_t i = 0; i < oc->nsalvaged; i++) {
            const fsck_salvaged *s = &oc->salvaged[i];
            fprintf(f, "%s{\"file\":", i ? "," : "");
            fsck_json_str(f, s->name);
            fputs(",\"original\":", f);
            fsck_json_str(f, s->orig);
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
        json_segments(f, dir, oc->after);
        fputs(",\"summary\":", f);
        json_summary(f, oc->after);
        fputc('}', f);
    } else {
        fputs("null", f);
    }
    fprintf(f, ",\"repaired\":%s,\"exit_code\":%d}\n", oc->repaired ? "true" : "false", oc->exit_code);
}

