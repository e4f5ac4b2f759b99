/*
 * kvd_config_int — what the files of kvd_config share (kvd_config.h is
 * the public side): the table of settings and the one function that
 * checks a value and stores it.
 *
 *   kvd_config_table.c    the settings table, aliases, defaults
 *                         (kvd_config_init, kvd_config_free)
 *   kvd_config.c          value syntax, kvd_setting_apply,
 *                         kvd_config_set and _get
 *   kvd_config_file.c     the config file: lines, trimming, quoting
 *   kvd_config_args.c     the command line (file first, then flags), --help
 *   kvd_config_rewrite.c  CONFIG REWRITE and the example config file
 *
 * Calls go one way: kvd_config_args.c calls the file reader, the rewrite
 * and kvd_config.c; the rewrite calls the file reader and kvd_config.c;
 * the file reader calls kvd_config.c; kvd_config.c calls none of them,
 * and kvd_config_table.c calls nothing. So all of them read settings
 * through kvd_setting_apply and a value means the same from a file, a
 * flag and CONFIG SET.
 *
 * Owns: nothing; the table is constant.
 * Never: included outside the kvd_config files.
 * Locking: as kvd_config.h; kvd_setting_apply is what CONFIG SET runs
 * under cfg_mu.
 *
 * This header names `struct kvd_config` without including kvd_config.h:
 * kvd_config.c includes it, and an include back would make the two one
 * module cycle for the tree check (docs/hacking.md, Layers).
 */
#ifndef KVD_CONFIG_INT_H
#define KVD_CONFIG_INT_H

#include <stddef.h>
#include <stdint.h>

struct kvd_config;

/* How a setting's value is read. */
typedef enum kvd_setting_type {
    T_STRING,     /* char *, must not be empty */
    T_OPT_STRING, /* char *, "" stores NULL (none) */
    T_INT,        /* int in [min, max] */
    T_SIZE,       /* uint64_t bytes in [min, max], kvd_parse_size syntax */
    T_FSYNC,      /* kv_fsync_policy */
    T_LOGLEVEL,   /* kvd_log_level */
    T_RECOVERY,   /* kvr_mode */
    T_BOOL,       /* int 0/1, written "yes" or "no" */
    T_APPENDONLY, /* redis.conf compatibility (appendonly, replica-read-only): only "yes",
                     stores nothing; help says why */
    T_OBUF,       /* kvd_obuf_limit[KVD_OBUF_CLASSES], kvd_parse_obuf_limits syntax */
    T_REPLICAOF,  /* char *: "HOST PORT" or "no one" (stored as NULL) */
} kvd_setting_type;

typedef struct kvd_setting {
    const char *name;    /* config file / CONFIG name; NULL ends the table */
    const char *flag;    /* command-line option without "--"; NULL: the name */
    kvd_setting_type type;
    size_t off;          /* offsetof(kvd_config, field) */
    uint64_t min, max;   /* T_INT, T_SIZE */
    int hidden;          /* accepted, but not in CONFIG GET, names or --help */
    const char *metavar; /* --help */
    const char *help;    /* --help, one line */
} kvd_setting;

/* Every setting, in CONFIG GET and --help order; a row with a NULL name
 * ends it. */
extern const kvd_setting kvd_settings[];

/* Another name for a setting ("fsync" for "appendfsync", Redis's slave*
 * names), in the file, CONFIG and as a flag. */
typedef struct kvd_setting_alias {
    const char *alias, *name;
} kvd_setting_alias;

/* Every alias; a row with a NULL alias ends it. */
extern const kvd_setting_alias kvd_setting_aliases[];

/* The field of c that s describes. */
static inline void *kvd_setting_field(struct kvd_config *c, const kvd_setting *s)
{
    return (char *)c + s->off;
}

static inline const void *kvd_setting_cfield(const struct kvd_config *c, const kvd_setting *s)
{
    return (const char *)c + s->off;
}

/* Looks a setting up by name or alias ("fsync", "log-level"),
 * case-insensitively; len bytes of name are compared, so name need not
 * be NUL-terminated there. Returns the row, or NULL. */
const kvd_setting *kvd_setting_find(const char *name, size_t len);

/*
 * Checks value for setting s and stores it in c; c is unchanged on error.
 * label names the setting in the message as the user wrote it ("port",
 * "--port"). Returns 0, or -1 with err (errcap bytes) filled.
 */
int kvd_setting_apply(struct kvd_config *c, const kvd_setting *s, const char *label, const char *value, char *err,
                      size_t errcap);

/* snprintf into err (cap bytes); does nothing when err is NULL or cap 0. */
void kvd_config_errf(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* v bytes as --help and range errors write it: "64mb" for 64 MiB, plain
 * bytes when not a whole number of KiB. */
void kvd_format_size(uint64_t v, char *buf, size_t cap);

/*
 * The default of s as --help and the example config file show it, d a
 * kvd_config_init'ed struct: sizes with units ("64mb"), "none" for an
 * unset string, "stderr" for logfile, the normal class of
 * client-output-buffer-limit; io-threads as "online CPUs - 1", with ", N
 * here" when `here` is 1. Writes at most cap bytes into buf.
 */
void kvd_setting_default_text(const struct kvd_config *d, const kvd_setting *s, int here, char *buf, size_t cap);

/*
 * The setting a config-file line names: line is trimmed, not empty and not
 * a comment. Returns its row (aliases resolved), or NULL when the line
 * does not split into words (unbalanced quotes, a closing quote followed
 * by a letter) or its first word names no setting, or out of memory.
 */
const kvd_setting *kvd_config_line_setting(const char *line);

/*
 * Reads the config file at path into c, line by line as Redis 7's
 * loadServerConfigFromString() does, stopping at the first bad line.
 * Settings of lines before it stay applied. Returns 0, or -1 with err
 * holding "path:line: what" (or "path: cannot open config file: why").
 */
int kvd_config_load_file(struct kvd_config *c, const char *path, char *err, size_t errcap);

#endif
