/* kvd's settings and logger: defaults, flags in both forms, the config
 * file (comments, quotes, case, errors with file:line), sizes, CONFIG
 * GET/SET round trips, --help / --version, level filtering, the line
 * format, cut lines, and whole lines under concurrent logging; and the
 * lowered priority of background threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvd_config.h"
#include "kvd_log.h"
#include "kvd_server.h"
#include "testutil.h"

/* ---- helpers ---- */

/* Parses the NULL-terminated arguments (after "kvd") into a fresh config. */
static kvd_args_result parse(kvd_config *c, char *err, size_t errcap, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "kvd";
    va_list ap;
    va_start(ap, errcap);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL) {
        ck_assert_int_lt(argc, 31);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    kvd_config_init(c);
    err[0] = '\0';
    return kvd_config_parse_args(c, argc, argv, err, errcap);
}

/* Expects the arguments to be refused with a message containing every
 * one of the `want` strings (NULL-terminated after the arguments' NULL). */
static void expect_error(const char *const *args, const char *const *want)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "kvd";
    for (; *args; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    kvd_config c;
    kvd_config_init(&c);
    char err[512] = "";
    kvd_args_result r = kvd_config_parse_args(&c, argc, argv, err, sizeof err);
    ck_assert_msg(r == KVD_ARGS_ERROR, "'%s ...' accepted", argv[1]);
    for (; *want; want++) ck_assert_msg(strstr(err, *want), "error '%s' lacks '%s'", err, *want);
    kvd_config_free(&c);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path;
    ck_assert_int_ge(asprintf(&path, "%s/%s", dir, name), 0);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static void expect_get(const kvd_config *c, const char *name, const char *want)
{
    char buf[256];
    ck_assert_msg(kvd_config_get(c, name, buf, sizeof buf) == 0, "get '%s' failed", name);
    ck_assert_msg(!strcmp(buf, want), "%s: got '%s', want '%s'", name, buf, want);
}

/* Runs fn with stdout sent to a file; returns what it printed. */
static char *capture_stdout(kvd_args_result (*fn)(void *), void *arg, kvd_args_result *res)
{
    char *dir = tu_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/out", dir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(dup2(fd, STDOUT_FILENO), 0);
    close(fd);
    *res = fn(arg);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    char *out = read_all(path, NULL);
    tu_rmrf(dir);
    free(dir);
    return out;
}

/* ---- defaults and flags ---- */

START_TEST(defaults_are_those_of_the_header)
{
    kvd_config c;
    kvd_config_init(&c);
    ck_assert_str_eq(c.dir, "./data");
    ck_assert_str_eq(c.bind, "127.0.0.1");
    ck_assert_int_eq(c.port, 6379);
    ck_assert_int_eq(c.fsync, KV_FSYNC_ALWAYS);
    ck_assert_ptr_null(c.requirepass);
    ck_assert_ptr_null(c.pidfile);
    ck_assert(c.logfile == NULL || c.logfile[0] == '\0');
    ck_assert_int_eq(c.log_level, KVD_LOG_NOTICE);
    ck_assert_int_eq(c.maxclients, 10000);
    ck_assert_int_eq(c.recovery, KVR_TOLERATE_TAIL);
    ck_assert_uint_eq(c.segment_size, 64ull << 20);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long want = cpus - 1 < 1 ? 1 : cpus - 1 > 64 ? 64 : cpus - 1; /* one CPU left to the writer */
    ck_assert_int_eq(c.io_threads, want);
    ck_assert_int_ge(c.io_threads, 1);
    ck_assert_uint_eq(c.max_bulk_len, 512ull << 20);
    ck_assert_uint_eq(c.max_query_buffer, 1ull << 30);
    ck_assert_uint_eq(c.max_args, 1048576);
    ck_assert_int_eq(c.expire_hz, 10);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_NORMAL].hard, 1ull << 30);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_NORMAL].soft, 256ull << 20);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_NORMAL].soft_secs, 60);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_REPLICA].hard, 256ull << 20);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_PUBSUB].soft, 8ull << 20);
    ck_assert_ptr_null(c.config_file);
    kvd_config_free(&c);
    /* No arguments at all: run with the defaults. */
    char err[256];
    ck_assert_int_eq(parse(&c, err, sizeof err, NULL), KVD_ARGS_RUN);
    ck_assert_int_eq(c.port, 6379);
    kvd_config_free(&c);
}
END_TEST

/* CONFIG GET's text for the replica and pubsub classes at their defaults. */
#define OBUF_OTHERS "slave 268435456 67108864 60 pubsub 33554432 8388608 60"

static const struct flag_case {
    const char *flag, *value, *name, *get;
} flag_cases[] = {
    {"dir", "/var/lib/kvd", "dir", "/var/lib/kvd"},
    {"bind", "0.0.0.0", "bind", "0.0.0.0"},
    {"port", "6380", "port", "6380"},
    {"port", "0", "port", "0"},
    {"fsync", "everysec", "appendfsync", "everysec"},
    {"fsync", "no", "appendfsync", "no"},
    {"requirepass", "s3cret", "requirepass", "s3cret"},
    {"pidfile", "/run/kvd.pid", "pidfile", "/run/kvd.pid"},
    {"logfile", "/var/log/kvd.log", "logfile", "/var/log/kvd.log"},
    {"log-level", "debug", "loglevel", "debug"},
    {"log-level", "WARNING", "loglevel", "warning"},
    {"maxclients", "1", "maxclients", "1"},
    {"recovery", "point-in-time", "recovery", "point-in-time"},
    {"recovery", "skip-corrupt", "recovery", "skip-corrupt"},
    {"segment-size", "4k", "segment-size", "4096"},
    {"segment-size", "2gb", "segment-size", "2147483648"},
    {"io-threads", "64", "io-threads", "64"},
    {"proto-max-bulk-len", "1mb", "proto-max-bulk-len", "1048576"},
    {"client-query-buffer-limit", "2gb", "client-query-buffer-limit", "2147483648"},
    {"client-output-buffer-limit", "normal 0 0 0", "client-output-buffer-limit", "normal 0 0 0 " OBUF_OTHERS},
    {"hz", "500", "hz", "500"},
};

START_TEST(each_flag_works_as_two_arguments_and_with_equals)
{
    for (size_t i = 0; i < sizeof flag_cases / sizeof flag_cases[0]; i++) {
        const struct flag_case *fc = &flag_cases[i];
        char opt[128], joined[256], err[512];
        snprintf(opt, sizeof opt, "--%s", fc->flag);
        snprintf(joined, sizeof joined, "--%s=%s", fc->flag, fc->value);
        kvd_config c;
        ck_assert_msg(parse(&c, err, sizeof err, opt, (char *)fc->value, NULL) == KVD_ARGS_RUN, "%s %s: %s", opt,
                      fc->value, err);
        expect_get(&c, fc->name, fc->get);
        kvd_config_free(&c);
        ck_assert_msg(parse(&c, err, sizeof err, joined, NULL) == KVD_ARGS_RUN, "%s: %s", joined, err);
        expect_get(&c, fc->name, fc->get);
        kvd_config_free(&c);
    }
}
END_TEST

START_TEST(flags_set_the_struct_fields)
{
    kvd_config c;
    char err[512];
    ck_assert_int_eq(parse(&c, err, sizeof err, "--dir", "d", "--port", "1", "--fsync", "everysec", "--requirepass",
                           "pw", "--log-level", "verbose", "--recovery", "absolute", "--segment-size", "1gb",
                           "--io-threads", "3", "--proto-max-bulk-len", "2mb", "--client-query-buffer-limit",
                           "3mb", "--hz", "7", "--maxclients", "9", "--pidfile", "p", "--logfile", "l", NULL),
                     KVD_ARGS_RUN);
    ck_assert_str_eq(c.dir, "d");
    ck_assert_int_eq(c.port, 1);
    ck_assert_int_eq(c.fsync, KV_FSYNC_EVERYSEC);
    ck_assert_str_eq(c.requirepass, "pw");
    ck_assert_int_eq(c.log_level, KVD_LOG_VERBOSE);
    ck_assert_int_eq(c.recovery, KVR_ABSOLUTE);
    ck_assert_uint_eq(c.segment_size, 1ull << 30);
    ck_assert_int_eq(c.io_threads, 3);
    ck_assert_uint_eq(c.max_bulk_len, 2ull << 20);
    ck_assert_uint_eq(c.max_query_buffer, 3ull << 20);
    ck_assert_int_eq(c.expire_hz, 7);
    ck_assert_int_eq(c.maxclients, 9);
    ck_assert_str_eq(c.pidfile, "p");
    ck_assert_str_eq(c.logfile, "l");
    kvd_config_free(&c);

    /* The last of a repeated flag wins; "--requirepass=" clears it; a
     * value may itself contain '=' or start with '-'. */
    ck_assert_int_eq(parse(&c, err, sizeof err, "--port", "1", "--port=2", "--requirepass", "x", "--requirepass=",
                           "--dir=a=b", "--bind", "-weird", NULL),
                     KVD_ARGS_RUN);
    ck_assert_int_eq(c.port, 2);
    ck_assert_ptr_null(c.requirepass);
    ck_assert_str_eq(c.dir, "a=b");
    ck_assert_str_eq(c.bind, "-weird");
    kvd_config_free(&c);
}
END_TEST

START_TEST(config_names_and_aliases_work_as_flags)
{
    kvd_config c;
    char err[512];
    ck_assert_int_eq(parse(&c, err, sizeof err, "--appendfsync", "no", "--loglevel=debug", NULL), KVD_ARGS_RUN);
    ck_assert_int_eq(c.fsync, KV_FSYNC_NO);
    ck_assert_int_eq(c.log_level, KVD_LOG_DEBUG);
    kvd_config_free(&c);
    ck_assert_int_eq(parse(&c, err, sizeof err, "--Port", "5", "--FSYNC=EverySec", NULL), KVD_ARGS_RUN);
    ck_assert_int_eq(c.port, 5);
    ck_assert_int_eq(c.fsync, KV_FSYNC_EVERYSEC);
    kvd_config_free(&c);
}
END_TEST

START_TEST(bad_command_lines_are_refused_naming_the_option)
{
    expect_error(ARGS("--prot", "1"), ARGS("unknown option '--prot'", "kvd --help"));
    expect_error(ARGS("--prot=1"), ARGS("unknown option '--prot'"));
    expect_error(ARGS("-p", "1"), ARGS("unknown option '-p'"));
    expect_error(ARGS("--"), ARGS("unknown option '--'"));
    expect_error(ARGS("--port"), ARGS("'--port'", "needs a value"));
    expect_error(ARGS("--dir", "d", "--hz"), ARGS("'--hz'", "needs a value"));
    expect_error(ARGS("--help=yes"), ARGS("'--help'", "no value"));
    expect_error(ARGS("--version=1"), ARGS("'--version'", "no value"));
    /* Only one bare argument, and only first. */
    expect_error(ARGS("a.conf", "b.conf"), ARGS("unexpected argument 'b.conf'"));
    expect_error(ARGS("--port", "1", "a.conf"), ARGS("unexpected argument 'a.conf'"));
    /* An error stops parsing before any file is read. */
    expect_error(ARGS("/nonexistent/kvd.conf", "--nope"), ARGS("unknown option '--nope'"));
}
END_TEST

static const struct bad_value {
    const char *flag, *value, *why;
} bad_values[] = {
    {"port", "abc", "integer from 0 to 65535"},
    {"port", "65536", "integer from 0 to 65535"},
    {"port", "-1", "integer"},
    {"port", "+1", "integer"},
    {"port", "12abc", "integer"},
    {"port", " 12", "integer"},
    {"port", "12 ", "integer"},
    {"port", "", "integer"},
    {"port", "99999999999999999999999", "integer"},
    {"port", "0x10", "integer"},
    {"maxclients", "0", "from 1 to 1000000"},
    {"maxclients", "1000001", "from 1 to 1000000"},
    {"io-threads", "0", "from 1 to 64"},
    {"io-threads", "65", "from 1 to 64"},
    {"hz", "0", "from 1 to 500"},
    {"hz", "501", "from 1 to 500"},
    {"fsync", "sometimes", "always, everysec or no"},
    {"log-level", "loud", "debug, verbose, notice or warning"},
    {"recovery", "yolo", "tolerate-tail"},
    {"segment-size", "4095", "from 4kb to 2gb"},
    {"segment-size", "2147483649", "from 4kb to 2gb"},
    {"segment-size", "5gb", "from 4kb to 2gb"},
    {"segment-size", "64tb", "size in bytes"},
    {"segment-size", "-64mb", "size in bytes"},
    {"segment-size", "64 mb", "size in bytes"},
    {"segment-size", "mb", "size in bytes"},
    {"proto-max-bulk-len", "1023kb", "from 1mb to 512mb"},
    {"proto-max-bulk-len", "513mb", "from 1mb to 512mb"},
    {"client-query-buffer-limit", "100", "at least 1mb"},
    {"client-query-buffer-limit", "99999999999gb", "size in bytes"},
    {"dir", "", "must not be empty"},
    {"bind", "", "must not be empty"},
};

START_TEST(bad_flag_values_name_the_flag_and_the_value)
{
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        const struct bad_value *b = &bad_values[i];
        char opt[128], quoted_opt[160], quoted_val[160];
        snprintf(opt, sizeof opt, "--%s", b->flag);
        snprintf(quoted_opt, sizeof quoted_opt, "'--%s'", b->flag);
        snprintf(quoted_val, sizeof quoted_val, "'%s'", b->value);
        expect_error(ARGS(opt, b->value), ARGS(quoted_opt, quoted_val, b->why));
        char joined[256];
        snprintf(joined, sizeof joined, "--%s=%s", b->flag, b->value);
        expect_error(ARGS(joined), ARGS(quoted_opt, quoted_val, b->why));
    }
}
END_TEST

static kvd_args_result run_help(void *arg)
{
    (void)arg;
    kvd_config c;
    char err[256];
    kvd_args_result r = parse(&c, err, sizeof err, "--port", "1", "--help", "--nope", NULL);
    kvd_config_free(&c);
    return r;
}

static kvd_args_result run_version(void *arg)
{
    const char *opt = arg;
    kvd_config c;
    char err[256];
    kvd_args_result r = parse(&c, err, sizeof err, (char *)opt, NULL);
    kvd_config_free(&c);
    return r;
}

START_TEST(help_lists_every_flag_default_file_form_and_exit_codes)
{
    kvd_args_result r;
    char *out = capture_stdout(run_help, NULL, &r);
    ck_assert_int_eq(r, KVD_ARGS_EXIT_OK);
    static const char *const must[] = {
        "Usage: kvd [CONFIG-FILE] [OPTIONS]",
        "--dir DIR  (default: ./data)",
        "--bind ADDR  (default: 127.0.0.1)",
        "--port N  (default: 6379)",
        "--fsync POLICY  (default: always)",
        "--requirepass PASSWORD  (default: none)",
        "--pidfile FILE  (default: none)",
        "--logfile FILE  (default: stderr)",
        "--log-level LEVEL  (default: notice)",
        "--maxclients N  (default: 10000)",
        "--recovery MODE  (default: tolerate-tail)",
        "--segment-size BYTES  (default: 64mb)",
        "--io-threads N  (default: online CPUs - 1",
        "--proto-max-bulk-len BYTES  (default: 512mb)",
        "--client-query-buffer-limit BYTES  (default: 1gb)",
        "--client-output-buffer-limit LIMITS  (default: normal 1gb 256mb 60)",
        "--hz N  (default: 10)",
        "--scrub-interval SECONDS  (default: 86400)",
        "--scrub-rate BYTES  (default: 16mb)",
        "--help",
        "--version",
        "--option=value",
        "Client limits:",
        "\"normal 1gb 256mb 60\"",
        "stops reading a client whose unsent replies pass 1 MiB",
        "ulimit -n",
        "maxclients is lowered",
        "Config file:",
        "# kvd.conf",
        "Examples:",
        "Exit status:",
        "  0  ",
        "  1  runtime failure",
        "locked",
        "  2  usage error",
    };
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        ck_assert_msg(strstr(out, must[i]), "--help lacks '%s'", must[i]);
    /* Every CONFIG name is documented for the file. */
    for (size_t i = 0; kvd_config_names[i]; i++)
        ck_assert_msg(strstr(out, kvd_config_names[i]), "--help lacks '%s'", kvd_config_names[i]);
    /* Fits a terminal. */
    for (char *line = out, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        ck_assert_msg(nl - line <= 80, "help line too long: %.*s", (int)(nl - line), line);
    }
    free(out);

    out = capture_stdout(run_version, "--version", &r);
    ck_assert_int_eq(r, KVD_ARGS_EXIT_OK);
    ck_assert_str_eq(out, "kvd 0.1.0\n");
    free(out);
    out = capture_stdout(run_version, "-v", &r);
    ck_assert_int_eq(r, KVD_ARGS_EXIT_OK);
    ck_assert_str_eq(out, "kvd 0.1.0\n");
    free(out);
    out = capture_stdout(run_version, "-h", &r);
    ck_assert_int_eq(r, KVD_ARGS_EXIT_OK);
    ck_assert_ptr_nonnull(strstr(out, "Usage: kvd"));
    free(out);
}
END_TEST

/* ---- the config file ---- */

START_TEST(config_file_takes_comments_quotes_and_any_case)
{
    char *dir = tu_tmpdir();
    char *path = write_file(dir, "kvd.conf",
                            "# kvd test config\n"
                            "\n"
                            "   # an indented comment\n"
                            "dir \"/srv/my data\"\n"
                            "PORT 7000\r\n"
                            "\tBind\t10.0.0.1   \n"
                            "requirepass \"a\\\"b\\\\c\\x41\\n\"\n"
                            "pidfile 'it\\'s.pid'\n"
                            "logfile ''\n"
                            "fsync EVERYSEC\n"
                            "LogLevel warning\n"
                            "maxclients 10\n"
                            "recovery skip-corrupt\n"
                            "segment-size 1MB\n"
                            "io-threads 2\n"
                            "proto-max-bulk-len 8mb\n"
                            "client-query-buffer-limit 16mb\n"
                            "hz 100\n"
                            "appendonly yes\n"
                            "port 7001\n" /* last one wins */
                            "# trailing comment without newline");
    kvd_config c;
    char err[512];
    ck_assert_msg(parse(&c, err, sizeof err, path, NULL) == KVD_ARGS_RUN, "%s", err);
    ck_assert_str_eq(c.config_file, path);
    ck_assert_str_eq(c.dir, "/srv/my data");
    ck_assert_int_eq(c.port, 7001);
    ck_assert_str_eq(c.bind, "10.0.0.1");
    ck_assert_str_eq(c.requirepass, "a\"b\\cA\n");
    ck_assert_str_eq(c.pidfile, "it's.pid");
    ck_assert(c.logfile == NULL || !*c.logfile);
    ck_assert_int_eq(c.fsync, KV_FSYNC_EVERYSEC);
    ck_assert_int_eq(c.log_level, KVD_LOG_WARNING);
    ck_assert_int_eq(c.maxclients, 10);
    ck_assert_int_eq(c.recovery, KVR_SKIP_CORRUPT);
    ck_assert_uint_eq(c.segment_size, 1ull << 20);
    ck_assert_int_eq(c.io_threads, 2);
    ck_assert_uint_eq(c.max_bulk_len, 8ull << 20);
    ck_assert_uint_eq(c.max_query_buffer, 16ull << 20);
    ck_assert_int_eq(c.expire_hz, 100);
    kvd_config_free(&c);

    /* appendfsync is the same setting as fsync. */
    char *p2 = write_file(dir, "b.conf", "appendfsync no\n");
    ck_assert_int_eq(parse(&c, err, sizeof err, p2, NULL), KVD_ARGS_RUN);
    ck_assert_int_eq(c.fsync, KV_FSYNC_NO);
    kvd_config_free(&c);
    /* An empty file and a comments-only file change nothing. */
    char *p3 = write_file(dir, "empty.conf", "");
    ck_assert_int_eq(parse(&c, err, sizeof err, p3, NULL), KVD_ARGS_RUN);
    ck_assert_int_eq(c.port, 6379);
    kvd_config_free(&c);
    free(p3);
    free(p2);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(flags_override_the_file)
{
    char *dir = tu_tmpdir();
    char *path = write_file(dir, "kvd.conf", "port 1000\ndir /from/file\nfsync no\n");
    kvd_config c;
    char err[512];
    ck_assert_msg(parse(&c, err, sizeof err, path, "--port", "2000", "--fsync=always", NULL) == KVD_ARGS_RUN, "%s",
                  err);
    ck_assert_int_eq(c.port, 2000);
    ck_assert_int_eq(c.fsync, KV_FSYNC_ALWAYS);
    ck_assert_str_eq(c.dir, "/from/file"); /* not overridden: the file's */
    kvd_config_free(&c);
    /* A bad value in the file is reported even if a flag would replace it:
     * the file is read in full first. */
    char *bad = write_file(dir, "bad.conf", "port 99999\n");
    expect_error(ARGS(bad, "--port", "1"), ARGS("bad.conf:1:", "'port'", "'99999'"));
    free(bad);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static const struct file_error {
    const char *text, *where, *what;
} file_errors[] = {
    {"port 1\nfoo bar\n", ":2:", "unknown setting 'foo'"},
    {"# c\n\nsave 900 1\n", ":3:", "unknown setting 'save'"},
    {"port abc\n", ":1:", "invalid value 'abc' for 'port'"},
    {"\n\n\n\nsegment-size 12xb\n", ":5:", "'12xb'"},
    {"port\n", ":1:", "'port' takes exactly one value, got 0"},
    {"bind 127.0.0.1 ::1\n", ":1:", "'bind' takes exactly one value, got 2"},
    {"dir \"/tmp\n", ":1:", "unbalanced quotes"},
    {"dir '/tmp\n", ":1:", "unbalanced quotes"},
    {"dir \"/tmp\"x\n", ":1:", "closing quote must be followed by a space"},
    {"dir '/tmp'x\n", ":1:", "closing quote must be followed by a space"},
    {"requirepass \"a\\x00b\"\n", ":1:", "NUL"},
    {"appendonly no\n", ":1:", "only 'yes'"},
    {"fsync sometimes\n", ":1:", "always, everysec or no"},
    {"dir \"\"\n", ":1:", "must not be empty"},
};

START_TEST(config_file_errors_name_the_file_and_line)
{
    char *dir = tu_tmpdir();
    for (size_t i = 0; i < sizeof file_errors / sizeof file_errors[0]; i++) {
        char name[32], where[64];
        snprintf(name, sizeof name, "e%zu.conf", i);
        char *path = write_file(dir, name, file_errors[i].text);
        snprintf(where, sizeof where, "%s%s", name, file_errors[i].where);
        expect_error(ARGS(path), ARGS(where, file_errors[i].what));
        free(path);
    }
    /* A NUL byte in the file. */
    char path[4200];
    snprintf(path, sizeof path, "%s/nul.conf", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fwrite("port 1\npo\0rt 2\n", 1, 15, f);
    fclose(f);
    expect_error(ARGS(path), ARGS("nul.conf:2:", "NUL"));
    /* A missing file and a directory. */
    expect_error(ARGS("/nonexistent/kvd.conf"), ARGS("/nonexistent/kvd.conf", "No such file"));
    expect_error(ARGS(dir), ARGS(dir, "config file"));
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- sizes ---- */

START_TEST(sizes_take_units_in_powers_of_1024)
{
    static const struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0},
        {"4096", 4096},
        {"4k", 4096},
        {"4kb", 4096},
        {"4KB", 4096},
        {"64mb", 64ull << 20},
        {"64M", 64ull << 20},
        {"1gb", 1ull << 30},
        {"1G", 1ull << 30},
        {"1Gb", 1ull << 30},
        {"10b", 10},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183gb", 17179869183ull << 30},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1;
        ck_assert_msg(kvd_parse_size(good[i].s, &v) == 0, "'%s' refused", good[i].s);
        ck_assert_msg(v == good[i].v, "'%s' = %" PRIu64, good[i].s, v);
    }
    static const char *const bad[] = {
        "",    "mb",   "-1", "+1",  " 1",  "1 ",   "1 mb", "1.5mb", "1tb", "1kbb",
        "1bk", "0x10", "k",  "1mbx", "18446744073709551616", "17179869184gb", "99999999999999999999k",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 77;
        ck_assert_msg(kvd_parse_size(bad[i], &v) == -1, "'%s' accepted", bad[i]);
        ck_assert_uint_eq(v, 77);
    }
}
END_TEST

/* ---- CONFIG GET / SET ---- */

static const char *const expected_names[] = {
    "dir",      "bind",       "port",         "appendfsync", "requirepass",        "pidfile",
    "logfile",  "loglevel",   "maxclients",   "recovery",    "segment-size",       "io-threads",
    "proto-max-bulk-len",     "client-query-buffer-limit",   "client-output-buffer-limit", "hz", "compact-dead-ratio",
    "compact-min-dead", "hint-files", "preallocate", "scrub-interval", "scrub-rate",
    "replicaof", "masterauth", "repl-backlog-size", "repl-backlog-ttl", "repl-timeout",
    "repl-ping-replica-period", "replica-serve-stale-data", "replica-priority",
    "replica-announce-ip", "replica-announce-port", "replica-announced", "sync-replicas",
    "sync-replicas-timeout",
};

/* A value other than the default for each name, and how GET shows it. */
static const struct {
    const char *name, *set, *get;
} other_values[] = {
    {"dir", "/x y", "/x y"},
    {"bind", "::1", "::1"},
    {"port", "1234", "1234"},
    {"appendfsync", "everysec", "everysec"},
    {"requirepass", "pw d", "pw d"},
    {"pidfile", "/run/k.pid", "/run/k.pid"},
    {"logfile", "k.log", "k.log"},
    {"loglevel", "debug", "debug"},
    {"maxclients", "1000000", "1000000"},
    {"recovery", "absolute", "absolute"},
    {"segment-size", "128mb", "134217728"},
    {"io-threads", "64", "64"},
    {"proto-max-bulk-len", "16mb", "16777216"},
    {"client-query-buffer-limit", "4gb", "4294967296"},
    {"client-output-buffer-limit", "normal 64mb 16mb 10", "normal 67108864 16777216 10 " OBUF_OTHERS},
    {"hz", "1", "1"},
    {"compact-dead-ratio", "25", "25"},
    {"compact-min-dead", "1gb", "1073741824"},
    {"hint-files", "NO", "no"},
    {"preallocate", "no", "no"},
    {"scrub-interval", "3600", "3600"},
    {"scrub-rate", "1mb", "1048576"},
    {"replicaof", "10.0.0.1 6380", "10.0.0.1 6380"},
    {"masterauth", "s3cret", "s3cret"},
    {"repl-backlog-size", "1gb", "1073741824"},
    {"repl-backlog-ttl", "0", "0"},
    {"repl-timeout", "5", "5"},
    {"repl-ping-replica-period", "1", "1"},
    {"replica-serve-stale-data", "no", "no"},
    {"replica-priority", "0", "0"},
    {"replica-announce-ip", "10.0.0.9", "10.0.0.9"},
    {"replica-announce-port", "12345", "12345"},
    {"replica-announced", "no", "no"},
    {"sync-replicas", "2", "2"},
    {"sync-replicas-timeout", "250", "250"},
};

START_TEST(config_get_and_set_round_trip_every_name)
{
    size_t n = 0;
    while (kvd_config_names[n]) n++;
    ck_assert_uint_eq(n, sizeof expected_names / sizeof expected_names[0]);
    for (size_t i = 0; i < n; i++) ck_assert_str_eq(kvd_config_names[i], expected_names[i]);

    kvd_config c;
    kvd_config_init(&c);
    /* Defaults by name: sizes as byte counts, enums by name. */
    expect_get(&c, "appendfsync", "always");
    expect_get(&c, "recovery", "tolerate-tail");
    expect_get(&c, "loglevel", "notice");
    expect_get(&c, "segment-size", "67108864");
    expect_get(&c, "requirepass", "");
    expect_get(&c, "fsync", "always"); /* the alias */
    expect_get(&c, "PORT", "6379");
    expect_get(&c, "hint-files", "yes");
    expect_get(&c, "preallocate", "yes");
    expect_get(&c, "scrub-interval", "86400");
    expect_get(&c, "scrub-rate", "16777216");
    char buf[256], err[512];
    ck_assert_int_eq(kvd_config_set(&c, "scrub-rate", "1kb", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "must be at least 64kb"));
    ck_assert_int_eq(kvd_config_set(&c, "scrub-interval", "-1", err, sizeof err), -1);
    ck_assert_int_eq(kvd_config_set(&c, "hint-files", "maybe", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "must be yes or no"));
    ck_assert_int_eq(kvd_config_get(&c, "nope", buf, sizeof buf), -1);
    ck_assert_int_eq(kvd_config_get(&c, "appendonly", buf, sizeof buf), -1);
    ck_assert_int_eq(kvd_config_get(&c, "config_file", buf, sizeof buf), -1);

    for (size_t i = 0; i < n; i++) {
        const char *name = kvd_config_names[i];
        /* GET's value SETs back to the same value. */
        ck_assert_int_eq(kvd_config_get(&c, name, buf, sizeof buf), 0);
        char before[256];
        snprintf(before, sizeof before, "%s", buf);
        ck_assert_msg(kvd_config_set(&c, name, before, err, sizeof err) == 0, "%s '%s': %s", name, before, err);
        expect_get(&c, name, before);
        /* A different value is taken, shown, and round-trips too. */
        ck_assert_str_eq(other_values[i].name, name);
        ck_assert_msg(kvd_config_set(&c, name, other_values[i].set, err, sizeof err) == 0, "%s: %s", name, err);
        expect_get(&c, name, other_values[i].get);
        ck_assert_msg(strcmp(other_values[i].get, before) != 0, "%s: test value equals the default", name);
        ck_assert_int_eq(kvd_config_get(&c, name, buf, sizeof buf), 0);
        ck_assert_int_eq(kvd_config_set(&c, name, buf, err, sizeof err), 0);
        expect_get(&c, name, other_values[i].get);
    }
    /* Setting an optional string to "" clears it. */
    ck_assert_int_eq(kvd_config_set(&c, "requirepass", "", err, sizeof err), 0);
    ck_assert_ptr_null(c.requirepass);
    ck_assert_int_eq(kvd_config_set(&c, "pidfile", "", err, sizeof err), 0);
    ck_assert_ptr_null(c.pidfile);
    /* Names are case-insensitive; fsync is appendfsync. */
    ck_assert_int_eq(kvd_config_set(&c, "FSYNC", "no", err, sizeof err), 0);
    ck_assert_int_eq(c.fsync, KV_FSYNC_NO);
    ck_assert_int_eq(kvd_config_set(&c, "appendonly", "yes", err, sizeof err), 0);
    /* Replicas are read-only; replicaof takes "HOST PORT" or "no one". */
    ck_assert_int_eq(kvd_config_set(&c, "slave-read-only", "yes", err, sizeof err), 0);
    ck_assert_int_eq(kvd_config_set(&c, "replica-read-only", "no", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "always read-only"));
    ck_assert_int_eq(kvd_config_set(&c, "slaveof", "h 70000", err, sizeof err), -1);
    ck_assert_int_eq(kvd_config_set(&c, "replicaof", "h", err, sizeof err), -1);
    ck_assert_int_eq(kvd_config_set(&c, "replicaof", "h 1 2", err, sizeof err), -1);
    ck_assert_int_eq(kvd_config_set(&c, "replicaof", "h 6379", err, sizeof err), 0);
    ck_assert_str_eq(c.replicaof, "h 6379");
    ck_assert_int_eq(kvd_config_set(&c, "replicaof", "NO ONE", err, sizeof err), 0);
    ck_assert_ptr_null(c.replicaof);
    /* A small get buffer is NUL-terminated, not overrun. */
    char tiny[4];
    ck_assert_int_eq(kvd_config_get(&c, "dir", tiny, sizeof tiny), 0);
    ck_assert_str_eq(tiny, "/x ");
    kvd_config_free(&c);
}
END_TEST

START_TEST(config_set_refuses_bad_values_and_changes_nothing)
{
    kvd_config c;
    kvd_config_init(&c);
    char err[512];
    ck_assert_int_eq(kvd_config_set(&c, "port", "abc", err, sizeof err), -1);
    ck_assert_str_eq(err, "invalid value 'abc' for 'port': must be an integer from 0 to 65535");
    ck_assert_int_eq(c.port, 6379);
    ck_assert_int_eq(kvd_config_set(&c, "nosuch", "1", err, sizeof err), -1);
    ck_assert_str_eq(err, "unknown setting 'nosuch'");
    ck_assert_int_eq(kvd_config_set(&c, "segment-size", "1k", err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "'segment-size'"));
    ck_assert_ptr_nonnull(strstr(err, "'1k'"));
    ck_assert_uint_eq(c.segment_size, 64ull << 20);
    ck_assert_int_eq(kvd_config_set(&c, "loglevel", "chatty", err, sizeof err), -1);
    ck_assert_int_eq(c.log_level, KVD_LOG_NOTICE);
    ck_assert_int_eq(kvd_config_set(&c, "recovery", "Absolute-ish", err, sizeof err), -1);
    ck_assert_int_eq(c.recovery, KVR_TOLERATE_TAIL);
    ck_assert_int_eq(kvd_config_set(&c, "dir", "", err, sizeof err), -1);
    ck_assert_str_eq(c.dir, "./data");
    ck_assert_int_eq(kvd_config_set(&c, "appendfsync", "alwaysx", err, sizeof err), -1);
    ck_assert_int_eq(c.fsync, KV_FSYNC_ALWAYS);
    /* A long value is cut to the error buffer, not overrun. */
    char longv[2000];
    memset(longv, '9', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    char small[40];
    ck_assert_int_eq(kvd_config_set(&c, "hz", longv, small, sizeof small), -1);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    kvd_config_free(&c);
}
END_TEST

/* client-output-buffer-limit takes Redis's syntax and Redis's errors, and
 * a bad value changes no class at all. */
START_TEST(client_output_buffer_limit_parses_like_redis)
{
    kvd_config c;
    kvd_config_init(&c);
    char err[512];
    expect_get(&c, "client-output-buffer-limit", "normal 1073741824 268435456 60 " OBUF_OTHERS);
    /* Units, any case, several groups; only the named classes change. */
    ck_assert_int_eq(kvd_config_set(&c, "client-output-buffer-limit", "NORMAL 2MB 512kb 5 pubsub 1gb 0 0", err,
                                    sizeof err), 0);
    expect_get(&c, "client-output-buffer-limit",
               "normal 2097152 524288 5 slave 268435456 67108864 60 pubsub 1073741824 0 0");
    /* replica and slave are one class. */
    ck_assert_int_eq(kvd_config_set(&c, "client-output-buffer-limit", "replica 1mb 1mb 1", err, sizeof err), 0);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_REPLICA].hard, 1u << 20);
    ck_assert_int_eq(kvd_config_set(&c, "client-output-buffer-limit", "slave 3 2 1", err, sizeof err), 0);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_REPLICA].hard, 3);
    ck_assert_uint_eq(c.obuf_limits[KVD_OBUF_REPLICA].soft, 2);
    /* Redis accepts an empty value and changes nothing. */
    ck_assert_int_eq(kvd_config_set(&c, "client-output-buffer-limit", "", err, sizeof err), 0);

    kvd_obuf_limit before[KVD_OBUF_CLASSES];
    memcpy(before, c.obuf_limits, sizeof before);
    static const struct {
        const char *value, *err;
    } bad[] = {
        {"normal 1mb 1mb", "Wrong number of arguments in buffer limit configuration."},
        {"normal 1 2 3 pubsub", "Wrong number of arguments in buffer limit configuration."},
        {"master 0 0 0", "Invalid client class specified in buffer limit configuration."},
        {"normal 0 0 0 nosuch 1 1 1", "Invalid client class specified in buffer limit configuration."},
        {"normal -1 0 0", "Error in hard, soft or soft_seconds setting in buffer limit configuration."},
        {"normal 1mb 1xb 0", "Error in hard, soft or soft_seconds setting in buffer limit configuration."},
        {"normal 1mb 1mb -5", "Error in hard, soft or soft_seconds setting in buffer limit configuration."},
        {"normal 1mb 1mb 6s", "Error in hard, soft or soft_seconds setting in buffer limit configuration."},
        /* A good group before a bad one is not applied either. */
        {"pubsub 7 7 7 normal 1 1 x", "Error in hard, soft or soft_seconds setting in buffer limit configuration."},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(kvd_config_set(&c, "client-output-buffer-limit", bad[i].value, err, sizeof err) == -1,
                      "'%s' accepted", bad[i].value);
        ck_assert_str_eq(err, bad[i].err);
        ck_assert_msg(!memcmp(before, c.obuf_limits, sizeof before), "'%s' changed the limits", bad[i].value);
    }
    kvd_config_free(&c);

    /* The config file takes the words after the name, as redis.conf. */
    char *dir = tu_tmpdir();
    char *path = write_file(dir, "kvd.conf",
                            "client-output-buffer-limit normal 8mb 4mb 30\n"
                            "client-output-buffer-limit pubsub 0 0 0\n");
    char *argv[] = {"kvd", path, NULL};
    kvd_config_init(&c);
    ck_assert_int_eq(kvd_config_parse_args(&c, 2, argv, err, sizeof err), KVD_ARGS_RUN);
    expect_get(&c, "client-output-buffer-limit", "normal 8388608 4194304 30 slave 268435456 67108864 60 pubsub 0 0 0");
    kvd_config_free(&c);
    free(path);
    path = write_file(dir, "bad.conf", "port 7000\nclient-output-buffer-limit normal 8mb 4mb\n");
    argv[1] = path;
    kvd_config_init(&c);
    ck_assert_int_eq(kvd_config_parse_args(&c, 2, argv, err, sizeof err), KVD_ARGS_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "bad.conf:2: 'client-output-buffer-limit': Wrong number of arguments"));
    kvd_config_free(&c);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- the logger ---- */

static char *log_path(char **dir)
{
    *dir = tu_tmpdir();
    char *p;
    ck_assert_int_ge(asprintf(&p, "%s/kvd.log", *dir), 0);
    return p;
}

START_TEST(log_levels_filter_and_mark_lines)
{
    char *dir, *path = log_path(&dir);
    ck_assert_int_eq(kvd_log_open(path, KVD_LOG_NOTICE), 0);
    ck_assert_int_eq(kvd_log_get_level(), KVD_LOG_NOTICE);
    kvd_log(KVD_LOG_DEBUG, "debug %d", 1);
    kvd_log(KVD_LOG_VERBOSE, "verbose %d", 1);
    kvd_log(KVD_LOG_NOTICE, "notice %d", 1);
    kvd_log(KVD_LOG_WARNING, "warning %d", 1);
    kvd_log_set_level(KVD_LOG_DEBUG); /* at run time, as CONFIG SET loglevel */
    ck_assert_int_eq(kvd_log_get_level(), KVD_LOG_DEBUG);
    kvd_log(KVD_LOG_DEBUG, "debug %d", 2);
    kvd_log(KVD_LOG_VERBOSE, "verbose %d", 2);
    kvd_log_set_level(KVD_LOG_WARNING);
    kvd_log(KVD_LOG_NOTICE, "notice %d", 3);
    kvd_log(KVD_LOG_WARNING, "warning %d", 3);
    kvd_log_close();

    char *text = read_all(path, NULL);
    const char *want[] = {"* notice 1\n", "# warning 1\n", ". debug 2\n", "- verbose 2\n", "# warning 3\n"};
    char *p = text;
    size_t lines = 0;
    for (char *nl; (nl = strchr(p, '\n')); p = nl + 1, lines++) {
        ck_assert_uint_lt(lines, 5);
        size_t wl = strlen(want[lines]);
        ck_assert_msg((size_t)(nl + 1 - p) > wl && !memcmp(nl + 1 - wl, want[lines], wl), "line %zu: %.*s", lines,
                      (int)(nl - p), p);
    }
    ck_assert_uint_eq(lines, 5);
    ck_assert_str_eq(p, "");
    ck_assert_ptr_null(strstr(text, "debug 1"));
    ck_assert_ptr_null(strstr(text, "notice 3"));

    /* Appends, never truncates. */
    ck_assert_int_eq(kvd_log_open(path, KVD_LOG_NOTICE), 0);
    kvd_log(KVD_LOG_NOTICE, "again");
    kvd_log_close();
    char *text2 = read_all(path, NULL);
    ck_assert_int_eq(strncmp(text2, text, strlen(text)), 0);
    ck_assert_ptr_nonnull(strstr(text2 + strlen(text), "* again\n"));
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0644 & ~umask(022));
    free(text2);
    free(text);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(log_lines_have_the_redis_format)
{
    char *dir, *path = log_path(&dir);
    ck_assert_int_eq(kvd_log_open(path, KVD_LOG_DEBUG), 0);
    kvd_log(KVD_LOG_NOTICE, "hello %s", "world");
    kvd_log(KVD_LOG_WARNING, "two\nlines\rhere");
    kvd_log_close();
    char *text = read_all(path, NULL);
    regex_t re;
    ck_assert_int_eq(regcomp(&re,
                             "^([0-9]+):M [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                             "[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3} \\* hello world\n"
                             "[0-9]+:M [^\n]* # two lines here\n$",
                             REG_EXTENDED),
                     0);
    regmatch_t m[2];
    ck_assert_msg(regexec(&re, text, 2, m, 0) == 0, "log text: %s", text);
    ck_assert_int_eq(strtol(text, NULL, 10), getpid()); /* digits only, checked by the pattern */
    regfree(&re);
    free(text);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(log_cuts_long_lines_with_an_ellipsis)
{
    char *dir, *path = log_path(&dir);
    ck_assert_int_eq(kvd_log_open(path, KVD_LOG_NOTICE), 0);
    size_t big = 100000;
    char *msg = malloc(big + 1);
    ck_assert_ptr_nonnull(msg);
    memset(msg, 'x', big);
    msg[big] = '\0';
    kvd_log(KVD_LOG_NOTICE, "%s", msg);
    kvd_log(KVD_LOG_NOTICE, "short");
    kvd_log_close();
    size_t len;
    char *text = read_all(path, &len);
    char *nl = strchr(text, '\n');
    ck_assert_ptr_nonnull(nl);
    size_t first = (size_t)(nl - text);
    ck_assert_uint_gt(first, 1000);
    ck_assert_uint_lt(first, big);
    ck_assert_int_eq(memcmp(nl - 4, "x...", 4), 0);
    ck_assert_ptr_nonnull(strstr(nl + 1, "* short\n"));
    ck_assert_int_eq(text[len - 1], '\n');
    free(text);
    free(msg);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(log_level_names_parse_and_open_errors)
{
    static const char *const names[] = {"debug", "verbose", "notice", "warning"};
    for (int i = KVD_LOG_DEBUG; i <= KVD_LOG_WARNING; i++) {
        ck_assert_str_eq(kvd_log_level_name((kvd_log_level)i), names[i]);
        kvd_log_level l = (kvd_log_level)99;
        ck_assert_int_eq(kvd_log_level_parse(names[i], &l), 0);
        ck_assert_int_eq(l, i);
    }
    kvd_log_level l;
    ck_assert_int_eq(kvd_log_level_parse("NOTICE", &l), 0);
    ck_assert_int_eq(l, KVD_LOG_NOTICE);
    ck_assert_int_eq(kvd_log_level_parse("info", &l), -1);
    ck_assert_int_eq(kvd_log_level_parse("", &l), -1);
    ck_assert_int_eq(kvd_log_open("/nonexistent-dir/kvd.log", KVD_LOG_NOTICE), -ENOENT);
    /* stderr needs no file. */
    ck_assert_int_eq(kvd_log_open(NULL, KVD_LOG_WARNING), 0);
    ck_assert_int_eq(kvd_log_get_level(), KVD_LOG_WARNING);
    ck_assert_int_eq(kvd_log_open("", KVD_LOG_NOTICE), 0);
    kvd_log_close();
}
END_TEST

#define LOG_THREADS 8
#define LOG_LINES 1000

static void *log_worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    char pad[201];
    memset(pad, 'a' + t, 200);
    pad[200] = '\0';
    for (int i = 0; i < LOG_LINES; i++) kvd_log(KVD_LOG_NOTICE, "t=%d i=%d %s end", t, i, pad);
    return NULL;
}

START_TEST(concurrent_log_lines_never_interleave)
{
    char *dir, *path = log_path(&dir);
    ck_assert_int_eq(kvd_log_open(path, KVD_LOG_NOTICE), 0);
    pthread_t th[LOG_THREADS];
    for (int t = 0; t < LOG_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, log_worker, (void *)(intptr_t)t), 0);
    for (int t = 0; t < LOG_THREADS; t++) pthread_join(th[t], NULL);
    kvd_log_close();

    char *text = read_all(path, NULL);
    static unsigned char seen[LOG_THREADS][LOG_LINES];
    memset(seen, 0, sizeof seen);
    size_t lines = 0;
    char *p = text;
    for (char *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = '\0';
        lines++;
        char *body = strstr(p, " * t=");
        ck_assert_msg(body, "bad line: %s", p);
        char *end;
        int t = (int)strtol(body + 5, &end, 10);
        ck_assert_msg(strncmp(end, " i=", 3) == 0, "bad line: %s", p);
        int i = (int)strtol(end + 3, &end, 10);
        ck_assert_msg(*end == ' ', "bad line: %s", p);
        int used = (int)(end + 1 - body);
        ck_assert(t >= 0 && t < LOG_THREADS && i >= 0 && i < LOG_LINES);
        const char *rest = body + used;
        ck_assert_uint_eq(strlen(rest), 204);
        for (int k = 0; k < 200; k++) ck_assert_int_eq(rest[k], 'a' + t);
        ck_assert_str_eq(rest + 200, " end");
        ck_assert_int_eq(seen[t][i], 0);
        seen[t][i] = 1;
    }
    ck_assert_str_eq(p, "");
    ck_assert_uint_eq(lines, LOG_THREADS * LOG_LINES);
    free(text);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

typedef struct prio_seen {
    kvd_bg_priority r;
    int nice, ioprio;
} prio_seen;

static void *lower_and_look(void *arg)
{
    prio_seen *p = arg;
    p->r = kvd_lower_thread_priority();
    errno = 0;
    p->nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    p->ioprio = (int)syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, (int)gettid());
    return NULL;
}

/* Compaction and hint threads call this: it must lower only the calling
 * thread, to nice 10 and best-effort I/O level 7. */
START_TEST(background_priority_is_lowered_for_the_calling_thread_only)
{
    int nice_before = getpriority(PRIO_PROCESS, (id_t)gettid());
    int io_before = (int)syscall(SYS_ioprio_get, 1, (int)gettid());
    prio_seen p;
    memset(&p, 0, sizeof p);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, lower_and_look, &p), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(p.r.nice_ok, 1);
    ck_assert_int_eq(p.r.ioprio_ok, 1);
    ck_assert_int_eq(p.nice, 10);
    ck_assert_int_eq(p.ioprio >> 13, 2); /* class best-effort */
    ck_assert_int_eq(p.ioprio & 0xff, 7); /* lowest level */
    /* This thread is untouched. */
    ck_assert_int_eq(getpriority(PRIO_PROCESS, (id_t)gettid()), nice_before);
    ck_assert_int_eq((int)syscall(SYS_ioprio_get, 1, (int)gettid()), io_before);
}
END_TEST

/* ---- CONFIG REWRITE ---- */

/* The rewrite of `old` for the config that `path`'s file and the flags
 * give (the flags change what CONFIG SET would). */
static char *rewrite_of(const char *old, kvd_config *c)
{
    char *text = kvd_config_rewrite_text(c, old, old ? strlen(old) : 0);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* Every visible setting of a and b reads the same through CONFIG GET. */
static void expect_same_config(const kvd_config *a, const kvd_config *b)
{
    for (size_t i = 0; kvd_config_names[i]; i++) {
        char va[4096], vb[4096];
        ck_assert_int_eq(kvd_config_get(a, kvd_config_names[i], va, sizeof va), 0);
        ck_assert_int_eq(kvd_config_get(b, kvd_config_names[i], vb, sizeof vb), 0);
        ck_assert_msg(!strcmp(va, vb), "%s: '%s' read back as '%s'", kvd_config_names[i], va, vb);
    }
}

/* Writes text as a config file, reads it back into a fresh config (with
 * the file as argv[1]) and checks that it equals want. */
static void expect_reads_back(const char *text, const kvd_config *want)
{
    char *dir = tu_tmpdir();
    char *path = write_file(dir, "kvd.conf", text);
    kvd_config back;
    char err[512];
    ck_assert_msg(parse(&back, err, sizeof err, path, NULL) == KVD_ARGS_RUN, "%s\n--- text:\n%s", err, text);
    expect_same_config(want, &back);
    kvd_config_free(&back);
    tu_rmrf(dir);
    free(dir);
    free(path);
}

static void set(kvd_config *c, const char *name, const char *value)
{
    char err[512];
    ck_assert_msg(kvd_config_set(c, name, value, err, sizeof err) == 0, "%s %s: %s", name, value, err);
}

START_TEST(rewrite_keeps_comments_and_order_and_comments_out_what_it_cannot_read)
{
    kvd_config c;
    kvd_config_init(&c);
    set(&c, "port", "7000");
    set(&c, "hz", "20");
    const char *old = "# kvd test config\n"
                      "\n"
                      "\n"
                      "   # an indented comment, trimmed as Redis does\n"
                      "  Port 6380  \r\n"
                      "maxmemory 100mb\n"
                      "requirepass \"open\n"
                      "# between\n"
                      "hz 10";
    char *text = rewrite_of(old, &c);
    ck_assert_str_eq(text, "# kvd test config\n"
                           "\n"
                           "# an indented comment, trimmed as Redis does\n"
                           "port 7000\n"
                           "# ??? maxmemory 100mb\n"
                           "# ??? requirepass \"open\n"
                           "# between\n"
                           "hz 20\n");
    free(text);
    kvd_config_free(&c);
}
END_TEST

START_TEST(rewrite_changes_lines_in_place_and_blanks_repeated_ones)
{
    kvd_config c;
    kvd_config_init(&c);
    set(&c, "maxclients", "500");
    set(&c, "replica-priority", "100"); /* the default, set in the file */
    const char *old = "maxclients 10\n"
                      "slave-priority 7\n"
                      "# keep me\n"
                      "MAXCLIENTS 20\n"
                      "\n"
                      "loglevel notice\n"
                      "maxclients 30\n";
    char *text = rewrite_of(old, &c);
    /* The first line of a setting takes the value (an alias line takes
     * the name), the others are blanked, runs of empty lines cut to one;
     * a line at the default stays. The file's last '\n' leaves an empty
     * last line, as Redis's sdssplitlen does. */
    ck_assert_str_eq(text, "maxclients 500\n"
                           "replica-priority 100\n"
                           "# keep me\n"
                           "\n"
                           "loglevel notice\n"
                           "\n");
    /* Rewriting that again changes nothing. */
    char *again = rewrite_of(text, &c);
    ck_assert_str_eq(again, text);
    free(again);
    free(text);
    kvd_config_free(&c);
}
END_TEST

START_TEST(rewrite_appends_changed_settings_once_after_the_signature)
{
    kvd_config c;
    kvd_config_init(&c);
    /* Nothing changed: nothing is added, to no file or to one. */
    char *text = rewrite_of(NULL, &c);
    ck_assert_str_eq(text, "");
    free(text);
    text = rewrite_of("# only a comment\n", &c);
    ck_assert_str_eq(text, "# only a comment\n\n");
    free(text);

    set(&c, "requirepass", "pw");
    set(&c, "segment-size", "128mb");
    set(&c, "hint-files", "no");
    set(&c, "appendfsync", "everysec");
    set(&c, "compact-min-dead", "1000");
    text = rewrite_of(NULL, &c);
    ck_assert_str_eq(text, "# Generated by CONFIG REWRITE\n"
                           "appendfsync everysec\n"
                           "requirepass \"pw\"\n"
                           "segment-size 128mb\n"
                           "compact-min-dead 1000\n"
                           "hint-files no\n");
    /* Once the file has the signature, a new setting goes after the rest
     * (and an empty line, Redis's split of the final '\n'); no second
     * signature. */
    set(&c, "scrub-rate", "1mb");
    char *more = rewrite_of(text, &c);
    ck_assert_str_eq(more, "# Generated by CONFIG REWRITE\n"
                           "appendfsync everysec\n"
                           "requirepass \"pw\"\n"
                           "segment-size 128mb\n"
                           "compact-min-dead 1000\n"
                           "hint-files no\n"
                           "\n"
                           "scrub-rate 1mb\n");
    /* Back to the default: the line stays, with the default value. A
     * string without a value loses its line. */
    set(&c, "segment-size", "64mb");
    set(&c, "requirepass", "");
    char *back = rewrite_of(more, &c);
    ck_assert_str_eq(back, "# Generated by CONFIG REWRITE\n"
                           "appendfsync everysec\n"
                           "\n"
                           "segment-size 64mb\n"
                           "compact-min-dead 1000\n"
                           "hint-files no\n"
                           "\n"
                           "scrub-rate 1mb\n"
                           "\n");
    expect_reads_back(back, &c);
    free(back);
    free(more);
    free(text);
    kvd_config_free(&c);
}
END_TEST

START_TEST(rewrite_writes_replicaof_and_buffer_limits_as_redis_does)
{
    kvd_config c;
    kvd_config_init(&c);
    set(&c, "replicaof", "10.0.0.1 6380");
    set(&c, "client-output-buffer-limit", "normal 0 0 0 pubsub 64mb 16mb 30");
    /* An old pubsub line is the first line of the setting: the normal
     * class takes it (rewriteConfigClientOutputBufferLimitOption). */
    char *text = rewrite_of("client-output-buffer-limit pubsub 32mb 8mb 60\nslaveof 10.0.0.9 1\n", &c);
    ck_assert_str_eq(text, "client-output-buffer-limit normal 0 0 0\n"
                           "replicaof 10.0.0.1 6380\n"
                           "\n"
                           "# Generated by CONFIG REWRITE\n"
                           "client-output-buffer-limit pubsub 64mb 16mb 30\n");
    expect_reads_back(text, &c);
    /* A primary has no replicaof line (REPLICAOF NO ONE). */
    set(&c, "replicaof", "no one");
    char *primary = rewrite_of(text, &c);
    ck_assert_ptr_null(strstr(primary, "replicaof"));
    expect_reads_back(primary, &c);
    /* A host the reader would split is quoted. */
    set(&c, "replicaof", "we\"ird#host 7");
    char *odd = rewrite_of(NULL, &c);
    ck_assert_ptr_nonnull(strstr(odd, "replicaof \"we\\\"ird#host\" 7\n"));
    expect_reads_back(odd, &c);
    free(odd);
    free(primary);
    free(text);
    kvd_config_free(&c);
}
END_TEST

START_TEST(rewrite_reads_back_as_the_same_config_for_every_setting)
{
    kvd_config c;
    kvd_config_init(&c);
    for (size_t i = 0; i < sizeof other_values / sizeof other_values[0]; i++)
        set(&c, other_values[i].name, other_values[i].set);
    /* Strings that need quoting and escapes. */
    set(&c, "requirepass", "a \"quoted\" \\ back\\slash\n\t\r\a\b 'single' # not a comment \x01\x7f\xc3\xa9");
    set(&c, "masterauth", "'");
    set(&c, "dir", "/srv/with space/#x");
    set(&c, "logfile", "\\x41");
    char *text = rewrite_of("# a comment that stays\n", &c);
    ck_assert_ptr_nonnull(strstr(text, "# a comment that stays\n\n# Generated by CONFIG REWRITE\n"));
    ck_assert_ptr_nonnull(strstr(text, "requirepass \"a \\\"quoted\\\" \\\\ back\\\\slash\\n\\t\\r\\a\\b 'single' "
                                       "# not a comment \\x01\\x7f\\xc3\\xa9\"\n"));
    expect_reads_back(text, &c);
    /* And so does a rewrite over a file that had every setting. */
    kvd_config d;
    kvd_config_init(&d);
    char *again = rewrite_of(text, &d);
    expect_reads_back(again, &d);
    free(again);
    kvd_config_free(&d);
    free(text);
    kvd_config_free(&c);
}
END_TEST

START_TEST(rewrite_replaces_the_file_whole_keeping_its_mode)
{
    char *dir = tu_tmpdir();
    char *path = write_file(dir, "kvd.conf", "# mine\nport 7000\n");
    ck_assert_int_eq(chmod(path, 0600), 0);
    kvd_config c;
    char err[512];
    ck_assert_msg(parse(&c, err, sizeof err, path, "--hz", "30", NULL) == KVD_ARGS_RUN, "%s", err);
    set(&c, "maxclients", "77");
    ck_assert_int_eq(kvd_config_rewrite(&c, c.config_file), 0);
    char *text = read_all(path, NULL);
    ck_assert_str_eq(text, "# mine\nport 7000\n\n# Generated by CONFIG REWRITE\nmaxclients 77\nhz 30\n");
    free(text);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 07777, 0600);
    /* Nothing else in the directory: the temporary file was renamed. */
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir);
    ck_assert_int_eq(system(cmd), 0);
    /* A symbolic link stays one; the file it names is rewritten. */
    char link[4200];
    snprintf(link, sizeof link, "%s/link.conf", dir);
    ck_assert_int_eq(symlink(path, link), 0);
    set(&c, "maxclients", "78");
    ck_assert_int_eq(kvd_config_rewrite(&c, link), 0);
    ck_assert_int_eq(lstat(link, &sb), 0);
    ck_assert(S_ISLNK(sb.st_mode));
    text = read_all(path, NULL);
    ck_assert_ptr_nonnull(strstr(text, "maxclients 78\n"));
    free(text);
    /* A file that is gone is written anew; a directory that is gone is
     * an error, and leaves nothing. */
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(kvd_config_rewrite(&c, path), 0);
    text = read_all(path, NULL);
    ck_assert(!strncmp(text, "# Generated by CONFIG REWRITE\n", 30));
    free(text);
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/nodir/kvd.conf", dir);
    ck_assert_int_eq(kvd_config_rewrite(&c, missing), -ENOENT);
    kvd_config_free(&c);
    tu_rmrf(dir);
    free(dir);
    free(path);
}
END_TEST

START_TEST(config_file_path_is_made_absolute)
{
    char *dir = tu_tmpdir();
    char *path = write_file(dir, "rel.conf", "hz 12\n");
    char *cwd = getcwd(NULL, 0);
    ck_assert_ptr_nonnull(cwd);
    ck_assert_int_eq(chdir(dir), 0);
    kvd_config c;
    char err[512];
    ck_assert_msg(parse(&c, err, sizeof err, "rel.conf", NULL) == KVD_ARGS_RUN, "%s", err);
    ck_assert_int_eq(chdir(cwd), 0);
    char want[4300];
    snprintf(want, sizeof want, "%s/rel.conf", dir);
    ck_assert_str_eq(c.config_file, want);
    ck_assert_int_eq(c.expire_hz, 12);
    kvd_config_free(&c);
    free(cwd);
    tu_rmrf(dir);
    free(dir);
    free(path);
}
END_TEST

static kvd_args_result run_example(void *arg)
{
    (void)arg;
    char *argv[] = {"kvd", "--print-example-config", NULL};
    kvd_config c;
    kvd_config_init(&c);
    char err[256];
    kvd_args_result r = kvd_config_parse_args(&c, 2, argv, err, sizeof err);
    kvd_config_free(&c);
    return r;
}

START_TEST(example_config_comments_out_every_setting_at_its_default)
{
    kvd_args_result r;
    char *out = capture_stdout(run_example, NULL, &r);
    ck_assert_int_eq(r, KVD_ARGS_EXIT_OK);
    /* Every line is a comment or empty. */
    for (const char *p = out; *p; p = strchr(p, '\n') + 1) {
        ck_assert_msg(*p == '#' || *p == '\n', "not a comment: %.60s", p);
        ck_assert_ptr_nonnull(strchr(p, '\n'));
    }
    /* Every visible setting has its line, and uncommented the lines give
     * the defaults (io-threads and the settings with no default aside). */
    char *plain = strdup(out);
    ck_assert_ptr_nonnull(plain);
    size_t o = 0;
    int in_setting = 0; /* the lines after "# (default: ...)" up to an empty one */
    for (const char *p = out; *p; p = strchr(p, '\n') + 1) {
        size_t len = (size_t)(strchr(p, '\n') - p);
        if (len == 0) in_setting = 0;
        if (in_setting && strncmp(p, "# io-threads ", 13) && !memmem(p, len, "PASSWORD", 8) &&
            !memmem(p, len, " FILE", 5) && !memmem(p, len, "HOST PORT", 9) && !memmem(p, len, "ADDR", 4)) {
            memcpy(plain + o, p + 2, len - 2);
            o += len - 2;
            plain[o++] = '\n';
        }
        if (!strncmp(p, "# (default: ", 12)) in_setting = 1;
    }
    plain[o] = '\0';
    ck_assert_ptr_nonnull(strstr(plain, "\nsegment-size 64mb\n"));
    ck_assert_ptr_nonnull(strstr(plain, "\nclient-output-buffer-limit pubsub 32mb 8mb 60\n"));
    for (size_t i = 0; kvd_config_names[i]; i++) {
        char want[128];
        snprintf(want, sizeof want, "\n# %s ", kvd_config_names[i]);
        ck_assert_msg(strstr(out, want), "example lacks '%s'", kvd_config_names[i]);
    }
    kvd_config d;
    kvd_config_init(&d);
    expect_reads_back(plain, &d);
    kvd_config_free(&d);
    free(plain);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults_are_those_of_the_header);
    tcase_add_test(tc, each_flag_works_as_two_arguments_and_with_equals);
    tcase_add_test(tc, flags_set_the_struct_fields);
    tcase_add_test(tc, config_names_and_aliases_work_as_flags);
    tcase_add_test(tc, bad_command_lines_are_refused_naming_the_option);
    tcase_add_test(tc, bad_flag_values_name_the_flag_and_the_value);
    tcase_add_test(tc, help_lists_every_flag_default_file_form_and_exit_codes);
    tcase_add_test(tc, config_file_takes_comments_quotes_and_any_case);
    tcase_add_test(tc, flags_override_the_file);
    tcase_add_test(tc, config_file_errors_name_the_file_and_line);
    tcase_add_test(tc, sizes_take_units_in_powers_of_1024);
    tcase_add_test(tc, config_get_and_set_round_trip_every_name);
    tcase_add_test(tc, config_set_refuses_bad_values_and_changes_nothing);
    tcase_add_test(tc, client_output_buffer_limit_parses_like_redis);
    suite_add_tcase(s, tc);
    TCase *tr = tcase_create("rewrite");
    tcase_add_test(tr, rewrite_keeps_comments_and_order_and_comments_out_what_it_cannot_read);
    tcase_add_test(tr, rewrite_changes_lines_in_place_and_blanks_repeated_ones);
    tcase_add_test(tr, rewrite_appends_changed_settings_once_after_the_signature);
    tcase_add_test(tr, rewrite_writes_replicaof_and_buffer_limits_as_redis_does);
    tcase_add_test(tr, rewrite_reads_back_as_the_same_config_for_every_setting);
    tcase_add_test(tr, rewrite_replaces_the_file_whole_keeping_its_mode);
    tcase_add_test(tr, config_file_path_is_made_absolute);
    tcase_add_test(tr, example_config_comments_out_every_setting_at_its_default);
    suite_add_tcase(s, tr);
    TCase *tl = tcase_create("log");
    tcase_set_timeout(tl, 60);
    tcase_add_test(tl, log_levels_filter_and_mark_lines);
    tcase_add_test(tl, log_lines_have_the_redis_format);
    tcase_add_test(tl, log_cuts_long_lines_with_an_ellipsis);
    tcase_add_test(tl, log_level_names_parse_and_open_errors);
    tcase_add_test(tl, concurrent_log_lines_never_interleave);
    suite_add_tcase(s, tl);
    TCase *tp = tcase_create("priority");
    tcase_add_test(tp, background_priority_is_lowered_for_the_calling_thread_only);
    suite_add_tcase(s, tp);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
