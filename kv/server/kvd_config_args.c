/*
 * kvd_config_args — the command line and --help (kvd_config_int.h).
 *
 * The command line is read in three passes so that a flag overrides the
 * file whatever their order: the shape of argv first, then the file, then
 * the flags' values. --help prints one line per row of kvd_settings with
 * the row's default, so the text cannot drift from what kvd accepts.
 */
#define _GNU_SOURCE
#include "kvd_config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvd_config_int.h"

/* ---- the command line ---- */

typedef struct pending_flag {
    const kvd_setting *s;
    const char *opt; /* "--port" or "--port=1", as typed */
    size_t optlen;   /* bytes of opt up to any '=' */
    const char *value;
} pending_flag;

/* What pass 1 finds on the command line. */
typedef struct arg_scan {
    const char *file;    /* the config file, or NULL */
    pending_flag *flags; /* argc entries, nflags used */
    size_t nflags;
} arg_scan;

/*
 * The flag at argv[*i], as "--name value" or "--name=value": finds its
 * setting and its value, moving *i past a value given as the next word.
 * Returns 0 with *out filled, or -1 with err filled.
 */
static int scan_flag(int argc, char **argv, int *i, pending_flag *out, char *err, size_t errcap)
{
    const char *a = argv[*i];
    const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
    size_t optlen = eq ? (size_t)(eq - a) : strlen(a);
    const kvd_setting *s = (a[1] == '-' && optlen > 2) ? kvd_setting_find(a + 2, optlen - 2) : NULL;
    if (!s) {
        if (optlen == 6 && !strncmp(a, "--help", 6))
            kvd_config_errf(err, errcap, "option '--help' takes no value");
        else if (optlen == 9 && !strncmp(a, "--version", 9))
            kvd_config_errf(err, errcap, "option '--version' takes no value");
        else
            kvd_config_errf(err, errcap, "unknown option '%.*s' (see kvd --help)", (int)optlen, a);
        return -1;
    }
    const char *value;
    if (eq) {
        value = eq + 1;
    } else if (*i + 1 < argc) {
        value = argv[++*i];
    } else {
        kvd_config_errf(err, errcap, "option '%s' needs a value (see kvd --help)", a);
        return -1;
    }
    *out = (pending_flag){s, a, optlen, value};
    return 0;
}

/*
 * Pass 1: the shape of the command line. Values are checked in pass 3,
 * after the file, so that a flag overrides the file. Returns KVD_ARGS_RUN
 * with sc filled, KVD_ARGS_EXIT_OK once --help or --version is printed,
 * or KVD_ARGS_ERROR with err filled.
 */
static kvd_args_result scan_args(int argc, char **argv, arg_scan *sc, char *err, size_t errcap)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            if (i == 1) {
                sc->file = a;
                continue;
            }
            kvd_config_errf(err, errcap,
                            "unexpected argument '%s': only a config file may be given without a flag, and only "
                            "first (see kvd --help)",
                            a);
            return KVD_ARGS_ERROR;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            kvd_config_usage();
            return KVD_ARGS_EXIT_OK;
        }
        if (!strcmp(a, "--print-example-config")) {
            kvd_config_print_example(stdout);
            fflush(stdout);
            return KVD_ARGS_EXIT_OK;
        }
        if (!strcmp(a, "--version") || !strcmp(a, "-v")) {
            printf("kvd %s\n", KVD_VERSION);
            fflush(stdout);
            return KVD_ARGS_EXIT_OK;
        }
        if (scan_flag(argc, argv, &i, &sc->flags[sc->nflags], err, errcap) < 0) return KVD_ARGS_ERROR;
        sc->nflags++;
    }
    return KVD_ARGS_RUN;
}

/* path made absolute against the current directory, as Redis's
 * getAbsolutePath, so CONFIG REWRITE finds the file whatever directory
 * kvd is in then. A new string, or NULL when out of memory (or the current
 * directory is gone). */
static char *absolute_path(const char *path)
{
    if (path[0] == '/') return strdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return NULL;
    char *out = NULL;
    if (asprintf(&out, "%s/%s", cwd, path) < 0) out = NULL;
    free(cwd);
    return out;
}

/* Passes 2 and 3: the file, then the flags in order, so the last of a
 * repeated flag wins. Returns KVD_ARGS_RUN, or KVD_ARGS_ERROR with err
 * filled. */
static kvd_args_result apply_args(kvd_config *c, const arg_scan *sc, char *err, size_t errcap)
{
    if (sc->file) {
        char *copy = absolute_path(sc->file);
        if (!copy) {
            kvd_config_errf(err, errcap, "%s: cannot make the path absolute: %s", sc->file, strerror(errno));
            return KVD_ARGS_ERROR;
        }
        free(c->config_file);
        c->config_file = copy;
        if (kvd_config_load_file(c, sc->file, err, errcap) < 0) return KVD_ARGS_ERROR;
    }
    for (size_t i = 0; i < sc->nflags; i++) {
        char label[128];
        snprintf(label, sizeof label, "%.*s", (int)sc->flags[i].optlen, sc->flags[i].opt);
        if (kvd_setting_apply(c, sc->flags[i].s, label, sc->flags[i].value, err, errcap) < 0) return KVD_ARGS_ERROR;
    }
    return KVD_ARGS_RUN;
}

kvd_args_result kvd_config_parse_args(kvd_config *c, int argc, char **argv, char *err, size_t errcap)
{
    if (err && errcap) err[0] = '\0';
    arg_scan sc = {NULL, calloc(argc > 0 ? (size_t)argc : 1, sizeof(pending_flag)), 0};
    if (!sc.flags) {
        kvd_config_errf(err, errcap, "out of memory");
        return KVD_ARGS_ERROR;
    }
    kvd_args_result res = scan_args(argc, argv, &sc, err, errcap);
    if (res == KVD_ARGS_RUN) res = apply_args(c, &sc, err, errcap);
    free(sc.flags);
    return res;
}

/* ---- --help ---- */

/* One entry per visible row of kvd_settings, its default taken from a
 * kvd_config_init'ed struct so the text shows what kvd really starts with. */
static void print_options(void)
{
    kvd_config d;
    kvd_config_init(&d);
    for (const kvd_setting *s = kvd_settings; s->name; s++) {
        if (s->hidden) continue;
        char def[64];
        kvd_setting_default_text(&d, s, 1, def, sizeof def);
        printf("  --%s %s  (default: %s)\n      %s\n", s->flag ? s->flag : s->name, s->metavar, def, s->help);
    }
    kvd_config_free(&d);
}

/* The CONFIG GET names, wrapped before column 78 with a three-space
 * indent; the cursor is at column col when called. */
static void print_names(int col)
{
    for (size_t i = 0; kvd_config_names[i]; i++) {
        int w = (int)strlen(kvd_config_names[i]) + 1;
        if (col + w > 78) {
            printf("\n   ");
            col = 3;
        }
        printf(" %s", kvd_config_names[i]);
        col += w;
    }
}

void kvd_config_usage(void)
{
    printf("Usage: kvd [CONFIG-FILE] [OPTIONS]\n"
           "\n"
           "kvd %s is a crash-safe key-value server speaking the Redis protocol. Every\n"
           "write is appended to a log of segments in the data directory; with the\n"
           "default --fsync always a write is acknowledged only once it is on disk.\n"
           "\n"
           "Options (each also as --option=value):\n",
           KVD_VERSION);
    print_options();
    printf("  --print-example-config\n      print a config file with every setting commented out (kvd.conf) and exit\n"
           "  -h, --help\n      print this help and exit\n"
           "  -v, --version\n      print the version and exit\n");
    printf("\n"
           "Sizes (BYTES) are in bytes, with an optional unit: k or kb (1024), m or mb\n"
           "(1024*1024), g or gb (1024*1024*1024), in any case: 4096, 4k, 64mb, 1GB.\n"
           "Every config-file name below also works as an option (--appendfsync,\n"
           "--loglevel).\n"
           "\n"
           "Client limits:\n"
           "  --client-output-buffer-limit takes Redis's form as one quoted value,\n"
           "  \"normal 1gb 256mb 60\": a client is closed once its unsent replies reach\n"
           "  1gb, or stay at 256mb or more for over 60 s (0: no limit). The classes\n"
           "  replica (or slave) and pubsub are accepted and stored, not used. kvd\n"
           "  stops reading a client whose unsent replies pass 1 MiB, until they\n"
           "  drain to 256 KiB.\n"
           "  At start kvd raises its open-file limit (ulimit -n) to the hard limit;\n"
           "  if maxclients plus the descriptors kvd keeps for itself (32, 2 per I/O\n"
           "  thread, 1 per segment) do not fit, maxclients is lowered, and logged.\n"
           "\n"
           "Config file:\n"
           "  kvd reads CONFIG-FILE first, then applies the options, so an option\n"
           "  overrides the file. The file has one \"name value\" per line, as in\n"
           "  redis.conf: names are case-insensitive, blank lines and lines starting\n"
           "  with # are ignored, a value may be \"double-quoted\" (escapes \\n \\t \\\"\n"
           "  \\\\ \\xHH) or 'single-quoted'. The names are those of CONFIG GET:\n"
           "   ");
    print_names(3);
    printf("\n"
           "  \"fsync\" is another name for appendfsync; \"appendonly yes\" is accepted\n"
           "  and ignored (kvd always keeps its log). kvd --print-example-config prints\n"
           "  every setting with its default, commented out (kvd.conf in the source).\n"
           "  CONFIG REWRITE writes the running settings back into CONFIG-FILE,\n"
           "  keeping its comments, as Redis does.\n"
           "\n"
           "  # kvd.conf\n"
           "  dir /var/lib/kvd\n"
           "  port 6380\n"
           "  appendfsync everysec\n"
           "  requirepass \"correct horse battery staple\"\n"
           "  segment-size 256mb\n"
           "\n"
           "Examples:\n"
           "  kvd                                  serve ./data on 127.0.0.1:6379\n"
           "  kvd --dir /var/lib/kvd --port 6380   another directory and port\n"
           "  kvd kvd.conf --log-level=verbose     read kvd.conf, then raise the log level\n"
           "  kvd --fsync everysec --io-threads 4  group syncs once a second, 4 threads\n"
           "  kvd --recovery absolute              refuse to start on any damage to the log\n"
           "\n"
           "Signals:\n"
           "  SIGTERM, SIGINT  stop accepting, finish writes in flight, fsync, exit 0\n"
           "  SIGUSR1          start a background compaction (as COMPACT)\n"
           "  SIGHUP           ignored\n"
           "\n"
           "Exit status:\n"
           "  0  clean shutdown, or --help / --version printed\n"
           "  1  runtime failure: the start was refused (recovery found corruption: run\n"
           "     kvfsck on the directory), the data directory is locked by another\n"
           "     process, the address is in use, an I/O error\n"
           "  2  usage error: a bad option, value or config file\n");
    fflush(stdout);
}
