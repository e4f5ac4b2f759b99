/*
 * fsck_print — kvfsck's reports: the text a person reads and the JSON
 * document a program reads (docs/operations.md, "kvfsck"), from a check's
 * fsck_report and what a repair did.
 *
 * Owns: every line and field kvfsck prints about a directory, and the
 * advice on what to do next.
 * Guarantees: the JSON document is valid UTF-8 whatever bytes file names
 * hold (fsck_json_str); the advice's first sentence is what kvd itself
 * will do (fsck_report.kvd_verdict).
 * Never: checks, repairs or changes anything; decides the exit status.
 * Locking: none; one thread prints.
 */
#ifndef FSCK_PRINT_H
#define FSCK_PRINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fsck_check.h"
#include "fsck_salvage.h"

/* What one run of kvfsck did, for the JSON document. */
typedef struct fsck_outcome {
    const fsck_report *before;
    const fsck_report *after; /* the check after a repair, or NULL */
    const char *action;       /* "cut torn tail", "salvage", or NULL */
    const char *message;      /* what the repair did or why it did not, or NULL */
    const fsck_salvaged *salvaged;
    size_t nsalvaged;
    const fsck_names *new_torn;
    int repaired;
    int exit_code;
} fsck_outcome;

/* n bytes for a person: "512 B", "1.2 KiB", "3.4 GiB" (binary units),
 * written to buf[0, cap). Returns buf. */
const char *fsck_human(char *buf, size_t cap, uint64_t n);

/* Writes str as a JSON string to f: quotes, backslash and control
 * characters escaped; valid UTF-8 passed through; any other byte becomes
 * U+FFFD, so the document is always valid UTF-8 (file names need not be). */
void fsck_json_str(FILE *f, const char *str);

/* The whole JSON document of one run on dir (repair: --repair was given),
 * one line ending in a newline. */
void fsck_json_doc(FILE *f, const char *dir, int repair, const fsck_outcome *oc);

/* One line per problem of rep: "DIR/FILE: offset N, length N: KIND: REASON". */
void fsck_text_problems(FILE *f, const char *dir, const fsck_report *rep);

/* The summary of rep: counts, bytes, problems by kind, LOCK (locked: held
 * by this kvfsck), the files by kind, hint files. */
void fsck_text_summary(FILE *f, const fsck_report *rep, int locked);

/* What to do next about problems that are left, starting with what kvd
 * will do with the directory (its recovery run without changing anything). */
void fsck_text_advice(FILE *f, const char *dir, const fsck_report *rep);

#endif
