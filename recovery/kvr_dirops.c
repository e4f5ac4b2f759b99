#include "kvr_dirops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_dir.h"

/* ---- listing ---- */

typedef struct id_list {
    uint32_t *ids;
    size_t n, cap;
    int oom;
} id_list;

static int collect_segment(void *arg, const char *name)
{
    id_list *l = arg;
    uint32_t id;
    if (kv_dir_parse(name, &id, NULL) != KV_FILE_SEG) return 0;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        uint32_t *ni = realloc(l->ids, nc * sizeof *ni);
        if (!ni) {
            l->oom = 1;
            return 1;
        }
        l->ids = ni;
        l->cap = nc;
    }
    l->ids[l->n++] = id;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int kvr_has_id(const uint32_t *ids, size_t n, uint32_t id)
{
    return n && bsearch(&id, ids, n, sizeof *ids, cmp_u32) != NULL;
}

/* replaces_from of segment id's header, or 0 if it has none or cannot be
 * read (then it is an ordinary segment, and recovery judges its bytes). */
static uint32_t segment_replaces(const kv_io *io, const char *dir, uint32_t id)
{
    kv_path path;
    if (kv_dir_path(&path, dir, KV_FILE_SEG, id, 0) < 0) return 0;
    int fd = io->open(io->ctx, path.s, KV_O_RDONLY);
    if (fd < 0) return 0;
    uint8_t h[KV_SEG_HEADER_SIZE];
    uint32_t from = 0;
    if (kv_io_read_full(io, fd, h, sizeof h, 0) == 0 && kv_seg_header_decode(h, id, NULL) == KV_OK)
        from = kv_seg_header_replaces(h);
    io->close(io->ctx, fd);
    return from;
}
/* Lists every segment id (sorted) and marks those a compaction output
 * supersedes: a segment x is superseded when a segment y > x replaces
 * [from, y] with from <= x. */
static kv_status list_all(const kv_io *io, const char *dir, uint32_t **ids, size_t *n, uint8_t **superseded)
{
    id_list l = {0};
    int r = io->list_dir(io->ctx, dir, collect_segment, &l);
    if (l.oom) r = -ENOMEM;
    if (r < 0) {
        free(l.ids);
        return -r;
    }
    if (l.n > 1) qsort(l.ids, l.n, sizeof *l.ids, cmp_u32);
    uint8_t *sup = calloc(l.n ? l.n : 1, 1);
    if (!sup) {
        free(l.ids);
        return ENOMEM;
    }
    uint32_t min_from = UINT32_MAX;
    for (size_t i = l.n; i-- > 0;) {
        if (l.ids[i] >= min_from) sup[i] = 1;
        uint32_t from = sup[i] ? 0 : segment_replaces(io, dir, l.ids[i]);
        if (from != 0 && from < min_from) min_from = from;
    }
    *ids = l.ids;
    *n = l.n;
    *superseded = sup;
    return KV_OK;
}

static kv_status select_ids(const kv_io *io, const char *dir, uint32_t **ids, size_t *n, int want_superseded)
{
    uint32_t *all;
    size_t nall;
    uint8_t *sup;
    kv_status st = list_all(io, dir, &all, &nall, &sup);
    if (st != KV_OK) return st;
    size_t k = 0;
    for (size_t i = 0; i < nall; i++)
        if (!!sup[i] == !!want_superseded) all[k++] = all[i];
    free(sup);
    *ids = all;
    *n = k;
    return KV_OK;
}

kv_status kvr_list_segments(const kv_io *io, const char *dir, uint32_t **ids, size_t *n)
{
    return select_ids(io, dir, ids, n, 0);
}

kv_status kvr_list_superseded(const kv_io *io, const char *dir, uint32_t **ids, size_t *n)
{
    return select_ids(io, dir, ids, n, 1);
}

int kvr_superseded_id(const kv_io *io, const char *dir, const uint32_t *ids, size_t n, uint32_t hid)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] <= hid) continue;
        uint32_t from = segment_replaces(io, dir, ids[i]);
        if (from && from <= hid) return 1;
    }
    return 0;
}

typedef struct names_arg {
    kvr_names *l;
    unsigned kinds;
} names_arg;

static int collect_name(void *arg, const char *name)
{
    names_arg *a = arg;
    kvr_names *l = a->l;
    if (!(a->kinds & (1u << kv_dir_parse(name, NULL, NULL)))) return 0;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) {
            l->oom = 1;
            return 1;
        }
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(name))) {
        l->oom = 1;
        return 1;
    }
    l->n++;
    return 0;
}

int kvr_list_names(const kv_io *io, const char *dir, unsigned kinds, kvr_names *l)
{
    names_arg a = {l, kinds};
    int r = io->list_dir(io->ctx, dir, collect_name, &a);
    return l->oom ? -ENOMEM : r;
}

void kvr_names_free(kvr_names *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

void kvr_peek_segment(const kv_io *io, const char *path, uint32_t id, kvr_seg_peek *pk)
{
    memset(pk, 0, sizeof *pk);
    int fd = io->open(io->ctx, path, KV_O_RDONLY);
    if (fd < 0) return;
    uint8_t h[KV_SEG_HEADER_SIZE];
    if (io->fsize(io->ctx, fd, &pk->size) == 0 && pk->size >= KV_SEG_HEADER_SIZE &&
        kv_io_read_full(io, fd, h, sizeof h, 0) == 0 && kv_seg_header_parse(h, id, &pk->hdr) == KV_OK)
        pk->header_ok = 1;
    io->close(io->ctx, fd);
}

/* ---- changes ---- */

/* Truncates path to len bytes and fdatasyncs it. Returns 0 or -errno. */
static int truncate_file(const kv_io *io, const char *path, uint64_t len)
{
    int fd = io->open(io->ctx, path, KV_O_RDWR);
    if (fd < 0) return fd;
    int r = io->ftruncate(io->ctx, fd, len);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    io->close(io->ctx, fd);
    return r;
}

/* Copies bytes [off, len) of src to dst from its start, in pieces of at
 * most KV_CUT_COPY_BYTES: a torn tail can be as long as the segment, and
 * is never held whole. Returns 0 or -errno. */
#define KV_CUT_COPY_BYTES (1u << 20)
static int copy_range(const kv_io *io, int src, int dst, uint64_t off, uint64_t len)
{
    uint64_t left = len - off;
    size_t cap = left < KV_CUT_COPY_BYTES ? (size_t)left : KV_CUT_COPY_BYTES;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) return -ENOMEM;
    int r = 0;
    for (uint64_t at = off; r == 0 && at < len; at += cap) {
        size_t n = len - at < cap ? (size_t)(len - at) : cap;
        r = kv_io_read_full(io, src, buf, n, at);
        if (r == 0) r = kv_io_write_full(io, dst, buf, n, at - off);
    }
    free(buf);
    return r;
}

kv_status kvr_cut_segment(const kv_io *io, const char *dir, uint32_t id, int seg_fd, uint64_t len, uint64_t off,
                          char *msg, size_t msgcap)
{
    kv_path seg_path, base, torn_path;
    int fd, r = kv_dir_path(&seg_path, dir, KV_FILE_SEG, id, 0);
    if (r == 0) r = kv_dir_path(&base, dir, KV_FILE_SEG_TORN, id, off);
    if (r == 0) r = kv_dir_unused(io, &base, &torn_path);
    if (r < 0) goto fail;
    fd = io->open(io->ctx, torn_path.s, KV_O_RDWR | KV_O_CREAT | KV_O_EXCL);
    if (fd < 0) {
        r = fd;
        goto fail;
    }
    r = copy_range(io, seg_fd, fd, off, len);
    if (r == 0) r = io->fdatasync(io->ctx, fd);
    io->close(io->ctx, fd);
    if (r == 0) r = io->fsync_dir(io->ctx, dir);
    if (r < 0) goto fail;
    r = truncate_file(io, seg_path.s, off);
    if (r < 0) goto fail;
    return KV_OK;
fail:
    snprintf(msg, msgcap, "cannot cut torn tail of %s at offset %" PRIu64 ": %s", seg_path.s, off,
             kv_strerror(-r));
    return -r;
}

kv_status kvr_trim_segment(const kv_io *io, const char *dir, uint32_t id, uint64_t len, char *msg,
                           size_t msgcap)
{
    kv_path seg_path;
    int r = kv_dir_path(&seg_path, dir, KV_FILE_SEG, id, 0);
    if (r == 0) r = truncate_file(io, seg_path.s, len);
    if (r < 0) {
        snprintf(msg, msgcap, "cannot cut the unwritten space of %s at offset %" PRIu64 ": %s", seg_path.s, len,
                 kv_strerror(-r));
        return -r;
    }
    return KV_OK;
}

/* Renames file `kind` of segment id to its `set_aside` kind (".N" added if
 * taken). Returns 0 or -errno with msg set. */
static int set_aside(const kv_io *io, const char *dir, uint32_t id, kv_file_kind kind, kv_file_kind set_aside,
                     char *msg, size_t msgcap)
{
    kv_path path, base, to;
    int r = kv_dir_path(&path, dir, kind, id, 0);
    if (r == 0) r = kv_dir_path(&base, dir, set_aside, id, 0);
    if (r == 0) r = kv_dir_unused(io, &base, &to);
    if (r == 0) r = io->rename(io->ctx, path.s, to.s);
    if (r < 0) snprintf(msg, msgcap, "cannot set %s aside: %s", path.s, kv_strerror(-r));
    return r;
}

kv_status kvr_discard_segments(const kv_io *io, const char *dir, const uint32_t *ids, size_t from, size_t n,
                               uint32_t *discarded, char *msg, size_t msgcap)
{
    for (size_t j = n; j-- > from;) {
        int r = set_aside(io, dir, ids[j], KV_FILE_SEG, KV_FILE_SEG_DISCARDED, msg, msgcap);
        if (r < 0) return -r;
        (*discarded)++;
        /* Its hint file goes with it: a hint without its segment is
         * evidence of a lost segment to the next recovery. */
        kv_path hpath;
        if (kv_dir_path(&hpath, dir, KV_FILE_HINT, ids[j], 0) < 0) continue; /* set_aside failed on it already */
        int hfd = io->open(io->ctx, hpath.s, KV_O_RDONLY);
        if (hfd >= 0) {
            io->close(io->ctx, hfd);
            r = set_aside(io, dir, ids[j], KV_FILE_HINT, KV_FILE_HINT_DISCARDED, msg, msgcap);
            if (r < 0) return -r;
        }
    }
    if (from < n) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) {
            snprintf(msg, msgcap, "cannot fsync %s: %s", dir, kv_strerror(-r));
            return -r;
        }
    }
    return KV_OK;
}

kv_status kvr_complete_rotation(const kv_io *io, const char *dir, uint32_t id, uint64_t size, uint64_t seq,
                                uint64_t records, char *msg, size_t msgcap)
{
    kv_path path;
    uint8_t m[KV_MARK_SIZE];
    kv_mark_encode(m, KV_REC_SEAL, seq, size, (uint32_t)records);
    int r = kv_dir_path(&path, dir, KV_FILE_SEG, id, 0);
    int fd = r < 0 ? r : io->open(io->ctx, path.s, KV_O_RDWR);
    r = fd;
    if (fd >= 0) {
        r = kv_io_write_full(io, fd, m, sizeof m, size);
        if (r == 0) r = io->fdatasync(io->ctx, fd);
        io->close(io->ctx, fd);
    }
    if (r < 0) {
        snprintf(msg, msgcap, "cannot write the trailer of %s: %s", path.s, kv_strerror(-r));
        return -r;
    }
    return KV_OK;
}

kv_status kvr_remove_compact_leftovers(const kv_io *io, const char *dir, uint32_t *removed, char *msg,
                                       size_t msgcap)
{
    kvr_names l = {0};
    kvr_list_names(io, dir, 1u << KV_FILE_SEG_COMPACT, &l);
    kv_status st = l.oom ? ENOMEM : KV_OK;
    uint32_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        kv_path path;
        int r = kv_dir_join(&path, dir, l.v[i]);
        if (r == 0 && st == KV_OK) r = io->unlink(io->ctx, path.s);
        if (r < 0 && r != -ENOENT) {
            st = -r;
            snprintf(msg, msgcap, "cannot remove %s: %s", path.s, kv_strerror(st));
        } else if (r == 0 && st == KV_OK) {
            n++;
        }
    }
    kvr_names_free(&l);
    *removed += n;
    if (st == KV_OK && n) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) st = -r;
    }
    return st;
}

kv_status kvr_remove_superseded(const kv_io *io, const char *dir, char *msg, size_t msgcap)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    kv_status st = kvr_list_superseded(io, dir, &ids, &n);
    for (size_t i = 0; st == KV_OK && i < n; i++) {
        kv_path path;
        int r = kv_dir_path(&path, dir, KV_FILE_SEG, ids[i], 0);
        if (r == 0) r = io->unlink(io->ctx, path.s);
        if (r < 0) {
            st = -r;
            snprintf(msg, msgcap, "cannot remove superseded %s: %s", path.s, kv_strerror(st));
        }
    }
    if (st == KV_OK && n > 0) {
        int r = io->fsync_dir(io->ctx, dir);
        if (r < 0) st = -r;
    }
    free(ids);
    return st;
}
