/*
 * repl_state — the replication state file (repl_state.h).
 */
#define _GNU_SOURCE
#include "repl_state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "kv_record.h"

void kvrepl_new_id(char id[41])
{
    uint8_t b[20];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0) got += (size_t)n;
        else if (n < 0 && errno != EINTR) break;
    }
    if (got < sizeof b) { /* no entropy source: time and pid, still unique enough per start */
        uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        for (size_t i = got; i < sizeof b; i++) b[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)i;
    }
    for (int i = 0; i < 20; i++) snprintf(id + 2 * i, 3, "%02x", b[i]);
}

void kvrepl_state_init(kvrepl_state *st)
{
    memset(st, 0, sizeof *st);
    kvrepl_new_id(st->replid);
    memset(st->replid2, '0', 40);
}

/* The crc line at l, the file's bytes ending at end: exactly "crc ", 8
 * lowercase hex digits and "\n", as kvrepl_state_save writes it, and the
 * file's last line, so that no byte of the file escapes the check. */
static int crc_line_ok(const char *l, const char *end)
{
    if (end - l != 13 || l[12] != '\n') return 0;
    for (int i = 4; i < 12; i++)
        if (!((l[i] >= '0' && l[i] <= '9') || (l[i] >= 'a' && l[i] <= 'f'))) return 0;
    return 1;
}

static int hex40(const char *s)
{
    if (strlen(s) != 40) return 0;
    for (int i = 0; i < 40; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int kvrepl_state_load(const char *dir, kvrepl_state *st, char *err, size_t errcap)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, KVRSTATE_FILE);
    FILE *f = fopen(path, "r");
    if (!f) return -errno;
    char buf[2048];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) return -EIO;
    buf[n] = 0;
    char *crcl = strstr(buf, "crc ");
    if (!crcl || (crcl != buf && crcl[-1] != '\n') || !crc_line_ok(crcl, buf + n)) {
        snprintf(err, errcap, "%s: no crc line at its end", path);
        return -EBADMSG;
    }
    unsigned long want = strtoul(crcl + 4, NULL, 16);
    if (kv_crc32(0, buf, (size_t)(crcl - buf)) != (uint32_t)want) {
        snprintf(err, errcap, "%s: checksum mismatch", path);
        return -EBADMSG;
    }
    kvrepl_state s;
    memset(&s, 0, sizeof s);
    memset(s.replid2, '0', 40);
    *crcl = 0;
    int have_id = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == 0) continue;
        char *v = strchr(line, ' ');
        const char *val = v ? v + 1 : "";
        if (v) *v = 0;
        if (!strcmp(line, "replid") && hex40(val)) {
            memcpy(s.replid, val, 41);
            have_id = 1;
        } else if (!strcmp(line, "replid2") && hex40(val)) {
            memcpy(s.replid2, val, 41);
        } else if (!strcmp(line, "second_offset")) {
            s.second_off = strtoull(val, NULL, 10);
        } else if (!strcmp(line, "master_host") && strlen(val) <= KVRSTATE_HOST_MAX) {
            snprintf(s.master_host, sizeof s.master_host, "%s", val);
        } else if (!strcmp(line, "master_port")) {
            s.master_port = (int)strtol(val, NULL, 10);
        } else if (!strcmp(line, "clean")) {
            s.clean = !strcmp(val, "1");
        } else if (!strcmp(line, "clean_seq")) {
            s.clean_seq = strtoull(val, NULL, 10);
        } else {
            snprintf(err, errcap, "%s: bad line \"%.40s\"", path, line);
            return -EBADMSG;
        }
    }
    if (!have_id || s.master_port < 0 || s.master_port > 65535 || (s.master_host[0] && !s.master_port)) {
        snprintf(err, errcap, "%s: no valid replid or primary", path);
        return -EBADMSG;
    }
    *st = s;
    return 0;
}

int kvrepl_state_save(const char *dir, const kvrepl_state *st)
{
    char body[1024];
    int n = snprintf(body, sizeof body,
                     "# kvd replication state: written by kvd, not to be edited\n"
                     "replid %s\nreplid2 %s\nsecond_offset %" PRIu64 "\nmaster_host %s\nmaster_port %d\n"
                     "clean %d\nclean_seq %" PRIu64 "\n",
                     st->replid, st->replid2, st->second_off, st->master_host, st->master_port, st->clean ? 1 : 0,
                     st->clean_seq);
    if (n < 0 || (size_t)n + 16 >= sizeof body) return -EINVAL;
    n += snprintf(body + n, sizeof body - (size_t)n, "crc %08x\n", kv_crc32(0, body, (size_t)n));
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, KVRSTATE_FILE);
    snprintf(path, sizeof path, "%s/%s", dir, KVRSTATE_FILE);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    ssize_t w = write(fd, body, (size_t)n);
    int r = (w == n) ? 0 : (w < 0 ? -errno : -EIO);
    if (r == 0 && fdatasync(fd) < 0) r = -errno;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0) r = -errno;
    if (r == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0) r = -errno;
        if (dfd >= 0) close(dfd);
    }
    if (r < 0) unlink(tmp);
    return r;
}
