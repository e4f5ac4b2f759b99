/*
 * repl_sync — the replica's side of a full resync: the snapshot's files
 * written into "<data dir>.sync", divergent records set aside, and the
 * switch to the snapshot once it is complete (kv_replace_dir).
 *
 * Owns: the snapshot directory while the resync runs.
 * Guarantees: the data directory is switched only to a snapshot that
 *   arrived whole (every file's CRC, the end frame) and recovered; records
 *   this node holds that are not in the primary's history are saved
 *   first; a failure leaves the old data in place.
 * Locking: as repl_link.c (the link thread only).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "repl_int.h"
#include "repl_stream.h"

/* write(2) of all n bytes to a file. Returns 0, or -1 with errno. */
static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *q = buf;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Removes directory path and the files in it (no subdirectories). */
void remove_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(path);
}

int sync_begin(link_t *l, const char *line)
{
    kvrepl *r = l->r;
    unsigned long long seq = 0;
    const char *id = line + 12, *sp = strchr(id, ' ');
    char *end = NULL;
    if (sp && sp - id == 40) seq = strtoull(sp + 1, &end, 10);
    if (!sp || sp - id != 40 || !end || *end || sp[1] < '0' || sp[1] > '9') {
        rlog(r, KV_LOG_WARN, "replication: bad FULLRESYNC answer \"%s\"", line);
        return -1;
    }
    memcpy(l->primary_id, id, 40);
    l->primary_id[40] = 0;
    size_t dl = strlen(r->dir);
    while (dl > 1 && r->dir[dl - 1] == '/') dl--;
    snprintf(l->syncdir, sizeof l->syncdir, "%.*s.sync", (int)dl, r->dir);
    remove_dir(l->syncdir);
    if (mkdir(l->syncdir, 0755) < 0) {
        rlog(r, KV_LOG_WARN, "replication: cannot create %s: %s", l->syncdir, strerror(errno));
        return -1;
    }
    repl_set_link_state(r, "sync", 0, 1);
    rlog(r, KV_LOG_INFO, "MASTER <-> REPLICA sync: full resync from %s at offset %llu, into %s", l->primary_id, seq,
         l->syncdir);
    return 0;
}

int sync_file(link_t *l, const kvrs_ev *ev)
{
    char p[4400];
    if (ev->type == KVRS_FILE_BEGIN) {
        snprintf(p, sizeof p, "%s/%s", l->syncdir, ev->name);
        l->file_fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (l->file_fd < 0) {
            rlog(l->r, KV_LOG_WARN, "replication: cannot create %s: %s", p, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (ev->type == KVRS_FILE_DATA) {
        if (l->file_fd < 0) return -1;
        if (write_all(l->file_fd, ev->data, ev->len) < 0) {
            rlog(l->r, KV_LOG_WARN, "replication: writing the snapshot failed: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    /* KVRS_FILE_END */
    int e = l->file_fd >= 0 && fdatasync(l->file_fd) == 0 ? 0 : -1;
    if (l->file_fd >= 0) close(l->file_fd);
    l->file_fd = -1;
    if (e < 0) rlog(l->r, KV_LOG_WARN, "replication: syncing the snapshot failed: %s", strerror(errno));
    return e;
}

/* 'D': this node's records after `common` are not in the primary's
 * history. They are copied, verbatim, into "diverged.<first>-<last>" in
 * the snapshot's directory (the data directory once it is switched to);
 * if the log no longer holds them as written, the whole old directory is
 * kept instead (sync_end). Nothing is dropped unseen. Returns 0 or -1. */
int save_divergent(link_t *l, uint64_t common)
{
    kvrepl *r = l->r;
    kv_repl_pos p;
    kv_repl_position(r->s, &p);
    if (p.applied_seq <= common) return 0;
    uint64_t n = p.applied_seq - common;
    kv_feed *f = NULL;
    kv_status st = kv_feed_open(r->s, common + 1, &f);
    char path[4400];
    snprintf(path, sizeof path, "%s/diverged.%" PRIu64 "-%" PRIu64, l->syncdir, common + 1, p.applied_seq);
    int fd = st == KV_OK ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    uint64_t records = 0;
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    while (fd >= 0 && kv_feed_next_seq(f) <= p.applied_seq) {
        if ((st = kv_feed_read(f, &buf, &cap, &len, 1u << 20, 0)) != KV_OK) break;
        if (len == 0 || write_all(fd, buf, len) < 0) {
            st = len == 0 ? KV_NOT_FOUND : EIO; /* the log ends before them, or the disk refused */
            break;
        }
        for (size_t off = 0; off < len; off += kv_get_u32(buf + off + 8)) records++;
    }
    free(buf);
    kv_feed_close(f);
    int ok = fd >= 0 && st == KV_OK && fdatasync(fd) == 0;
    if (fd >= 0) close(fd);
    if (ok) {
        add64(&r->divergent_records, records);
        rlog(r, KV_LOG_WARN, "replication: %" PRIu64 " records (sequence numbers %" PRIu64 " to %" PRIu64
             ") are not in the primary's history; saved to %s", records, common + 1, p.applied_seq, path);
        return 0;
    }
    unlink(path);
    l->keep_old = common + 1;
    add64(&r->divergent_records, n);
    rlog(r, KV_LOG_WARN, "replication: sequence numbers %" PRIu64 " to %" PRIu64 " are not in the primary's history "
         "and cannot be read back one by one (%s); the old data directory is kept whole beside the new one",
         common + 1, p.applied_seq, kv_strerror(st == KV_OK ? EIO : st));
    return 0;
}

/* The snapshot is complete: its state file, then the switch. */
int sync_end(link_t *l, uint64_t seq)
{
    kvrepl *r = l->r;
    int dfd = open(l->syncdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    kvrepl_state st;
    pthread_mutex_lock(&r->mu);
    st = r->st;
    pthread_mutex_unlock(&r->mu);
    memcpy(st.replid, l->primary_id, sizeof st.replid);
    memset(st.replid2, '0', 40);
    st.second_off = 0;
    st.clean = 0;
    int e = kvrepl_state_save(l->syncdir, &st);
    if (e < 0) {
        rlog(r, KV_LOG_WARN, "replication: cannot write the snapshot's state: %s", strerror(-e));
        return -1;
    }
    feed_drop_all(r, 1); /* this node's own replicas: their history ends here */
    kvr_report rep;
    kv_status ks = kv_replace_dir(r->s, l->syncdir, seq, &rep);
    if (ks != KV_OK) {
        rlog(r, KV_LOG_WARN, "replication: the snapshot was not loaded: %s: %s", kv_strerror(ks), rep.message);
        kvr_report_free(&rep);
        return -1;
    }
    kvr_report_free(&rep);
    pthread_mutex_lock(&r->mu);
    memcpy(r->st.replid, st.replid, sizeof st.replid);
    memcpy(r->st.replid2, st.replid2, sizeof st.replid2);
    r->st.second_off = 0;
    pthread_mutex_unlock(&r->mu);
    if (l->keep_old) { /* divergent records that could not be saved one by one */
        char kept[4400];
        size_t dl = strlen(r->dir);
        while (dl > 1 && r->dir[dl - 1] == '/') dl--;
        snprintf(kept, sizeof kept, "%.*s.diverged.%" PRIu64, (int)dl, r->dir, l->keep_old);
        if (rename(l->syncdir, kept) == 0)
            rlog(r, KV_LOG_WARN, "replication: the old data directory is kept as %s", kept);
        else
            rlog(r, KV_LOG_WARN, "replication: cannot keep the old data directory as %s: %s; it stays as %s", kept,
                 strerror(errno), l->syncdir);
        l->keep_old = 0;
    } else {
        remove_dir(l->syncdir); /* the old data, exchanged out */
    }
    l->syncdir[0] = 0;
    rlog(r, KV_LOG_INFO, "MASTER <-> REPLICA sync: Finished with success at offset %" PRIu64, seq);
    return 0;
}

