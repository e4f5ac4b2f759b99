/*
 * kvd_config_file — the config file reader (kvd_config_int.h).
 *
 * The config file follows Redis 7's loadServerConfigFromString()
 * (src/config.c): each line is trimmed of " \t\r\n", empty lines and lines
 * starting with '#' are skipped, the rest is split like sdssplitargs()
 * (src/sds.c, see split_line below), and the first word, lower-cased, names
 * the setting. Errors name the file and the line ("kvd.conf:12: ...")
 * instead of Redis's "*** FATAL CONFIG FILE ERROR ***" banner.
 */
#define _GNU_SOURCE
#include "kvd_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "kvd_config_int.h"

static int is_hex(int ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return ch - 'A' + 10;
}

/* The words of one line: argv points into arena. */
typedef struct line_args {
    int argc;
    char **argv;
    char *arena;
} line_args;

static void line_args_free(line_args *a)
{
    free(a->argv);
    free(a->arena);
    memset(a, 0, sizeof *a);
}

/*
 * Reads one word of a config line as sdssplitargs() does (see split_line):
 * *pp points at its first byte, not a blank. The word, quotes and escapes
 * resolved, is written at *outp with a NUL after it, and both pointers
 * move past it. Returns 0, or -1 with *why set.
 */
static int read_word(const char **pp, char **outp, const char **why)
{
    const char *p = *pp;
    char *out = *outp;
    int inq = 0, insq = 0, done = 0;
    while (!done) {
        if (inq) {
            if (p[0] == '\\' && p[1] == 'x' && is_hex(p[2]) && is_hex(p[3])) {
                char byte = (char)(hex_val(p[2]) * 16 + hex_val(p[3]));
                if (!byte) {
                    *why = "a value cannot contain a NUL byte (\\x00)";
                    return -1;
                }
                *out++ = byte;
                p += 3;
            } else if (p[0] == '\\' && p[1]) {
                p++;
                switch (*p) {
                case 'n': *out++ = '\n'; break;
                case 'r': *out++ = '\r'; break;
                case 't': *out++ = '\t'; break;
                case 'b': *out++ = '\b'; break;
                case 'a': *out++ = '\a'; break;
                default: *out++ = *p; break;
                }
            } else if (*p == '"') {
                if (p[1] && !isspace((unsigned char)p[1])) {
                    *why = "closing quote must be followed by a space";
                    return -1;
                }
                done = 1;
            } else if (!*p) {
                *why = "unbalanced quotes";
                return -1;
            } else {
                *out++ = *p;
            }
        } else if (insq) {
            if (p[0] == '\\' && p[1] == '\'') {
                p++;
                *out++ = '\'';
            } else if (*p == '\'') {
                if (p[1] && !isspace((unsigned char)p[1])) {
                    *why = "closing quote must be followed by a space";
                    return -1;
                }
                done = 1;
            } else if (!*p) {
                *why = "unbalanced quotes";
                return -1;
            } else {
                *out++ = *p;
            }
        } else {
            switch (*p) {
            case ' ':
            case '\n':
            case '\r':
            case '\t':
            case '\0': done = 1; break;
            case '"': inq = 1; break;
            case '\'': insq = 1; break;
            default: *out++ = *p; break;
            }
        }
        if (*p) p++;
    }
    *out++ = '\0';
    *pp = p;
    *outp = out;
    return 0;
}

/*
 * Splits a config line into words as Redis's sdssplitargs() does: words
 * are separated by blanks; "double quotes" take \xHH, \n \r \t \b \a and
 * \<any> escapes; 'single quotes' take only \'; a quote may open in the
 * middle of a word (foo"bar" is foobar) but a closing quote must be
 * followed by a blank or the end. Returns 0, or -1 with *why set.
 * A \x00 escape is refused (*why): values are C strings.
 */
static int split_line(const char *line, line_args *a, const char **why)
{
    size_t len = strlen(line);
    memset(a, 0, sizeof *a);
    /* Each word takes at least one source byte plus a separator, so len+1
     * slots and 2*len+2 arena bytes are always enough. */
    a->argv = calloc(len + 1, sizeof *a->argv);
    a->arena = malloc(2 * len + 2);
    if (!a->argv || !a->arena) {
        *why = "out of memory";
        goto fail;
    }
    char *out = a->arena;
    const char *p = line;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        char *word = out;
        if (read_word(&p, &out, why) < 0) goto fail;
        a->argv[a->argc++] = word;
    }
    return 0;
fail:
    line_args_free(a);
    return -1;
}

/* The n words (n >= 1) joined by single spaces, in a new string the
 * caller frees, or NULL when out of memory. The buffer is sized from the
 * words' lengths before anything is copied, so no copy can overrun it. */
static char *join_words(char *const *words, int n)
{
    size_t total = 1; /* the NUL */
    for (int i = 0; i < n; i++) total += strlen(words[i]) + (i ? 1 : 0);
    char *out = malloc(total);
    if (!out) return NULL;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        size_t w = strlen(words[i]);
        if (i) out[used++] = ' ';
        memcpy(out + used, words[i], w);
        used += w;
    }
    out[used] = '\0';
    return out;
}

/* See kvd_config_int.h. */
const kvd_setting *kvd_config_line_setting(const char *line)
{
    line_args a;
    const char *why;
    if (split_line(line, &a, &why) < 0) return NULL;
    const kvd_setting *s = a.argc > 0 ? kvd_setting_find(a.argv[0], strlen(a.argv[0])) : NULL;
    line_args_free(&a);
    return s;
}

/* Applies one config line (already trimmed, not a comment). */
static int apply_line(kvd_config *c, const char *path, unsigned lineno, const char *line, char *err, size_t errcap)
{
    line_args a;
    const char *why;
    if (split_line(line, &a, &why) < 0) {
        kvd_config_errf(err, errcap, "%s:%u: %s", path, lineno, why);
        return -1;
    }
    int rc = 0;
    if (a.argc == 0) goto out;
    const kvd_setting *s = kvd_setting_find(a.argv[0], strlen(a.argv[0]));
    if (!s) {
        kvd_config_errf(err, errcap, "%s:%u: unknown setting '%s'", path, lineno, a.argv[0]);
        rc = -1;
    } else if ((s->type == T_OBUF && a.argc >= 2) || (s->type == T_REPLICAOF && a.argc == 3)) {
        /* "client-output-buffer-limit normal 0 0 0", "replicaof HOST PORT"
         * (as CONFIG REWRITE writes it): the words after the name are the
         * value, as in redis.conf. */
        char *joined = join_words(a.argv + 1, a.argc - 1);
        char msg[512];
        if (!joined) {
            kvd_config_errf(err, errcap, "%s:%u: out of memory", path, lineno);
            rc = -1;
        } else {
            if (kvd_setting_apply(c, s, a.argv[0], joined, msg, sizeof msg) < 0) {
                kvd_config_errf(err, errcap, "%s:%u: '%s': %s", path, lineno, a.argv[0], msg);
                rc = -1;
            }
            free(joined);
        }
    } else if (a.argc != 2) {
        kvd_config_errf(err, errcap, "%s:%u: '%s' takes exactly one value, got %d (write \"%s value\"; quote a value with spaces)",
             path, lineno, a.argv[0], a.argc - 1, a.argv[0]);
        rc = -1;
    } else {
        char msg[512];
        if (kvd_setting_apply(c, s, a.argv[0], a.argv[1], msg, sizeof msg) < 0) {
            kvd_config_errf(err, errcap, "%s:%u: %s", path, lineno, msg);
            rc = -1;
        }
    }
out:
    line_args_free(&a);
    return rc;
}

/* See kvd_config_int.h. getline() reads a line of any length; a NUL in
 * it means the file is not text, and is refused rather than cut short. */
int kvd_config_load_file(kvd_config *c, const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        kvd_config_errf(err, errcap, "%s: cannot open config file: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t linecap = 0;
    ssize_t n;
    unsigned lineno = 0;
    int rc = 0;
    errno = 0;
    while ((n = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)n)) {
            kvd_config_errf(err, errcap, "%s:%u: NUL byte in line (not a text file?)", path, lineno);
            rc = -1;
            break;
        }
        /* Trim " \t\r\n" at both ends, as Redis's sdstrim does. */
        char *start = line, *end = line + n;
        while (start < end && strchr(" \t\r\n", *start)) start++;
        while (end > start && strchr(" \t\r\n", end[-1])) end--;
        *end = '\0';
        if (*start == '\0' || *start == '#') continue;
        if (apply_line(c, path, lineno, start, err, errcap) < 0) {
            rc = -1;
            break;
        }
        errno = 0;
    }
    if (rc == 0 && ferror(f)) {
        kvd_config_errf(err, errcap, "%s:%u: cannot read config file: %s", path, lineno + 1,
             strerror(errno ? errno : EIO));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}
