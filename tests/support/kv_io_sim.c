#include "kv_io_sim.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A pending (unsynced) change to a file's data. */
typedef struct pend {
    int trunc;     /* 0: write of len bytes at off; 1: truncate to off */
    uint64_t off;
    uint64_t len;
    uint8_t *data;
} pend;

typedef struct inode {
    uint8_t *cur;
    size_t cur_len, cur_cap;
    uint8_t *dur;
    size_t dur_len;
    pend *ops;
    size_t nops, cap_ops;
    struct inode *copy; /* scratch while copying a filesystem */
} inode;

typedef struct dent {
    char *path;
    inode *ino; /* NULL for a directory */
} dent;

typedef struct dmap {
    dent *v;
    size_t n, cap;
} dmap;

typedef struct fdent {
    int used;
    inode *ino;
    char *lock_path;
} fdent;

struct kv_memfs {
    pthread_mutex_t mu;
    kv_io io;
    dmap cur, dur;
    inode **inodes;
    size_t ninodes, cap_inodes;
    fdent *fds;
    size_t nfds;
    kv_memfs_sync_hook hook;
    void *hook_arg;
    uint64_t free_bytes; /* what free_space reports (kv_memfs_set_free_space) */
};

/* ---- helpers ---- */

/* memcpy that accepts NULL pointers when n is 0 (empty files have none). */
static void mcpy(void *dst, const void *src, size_t n)
{
    if (n) memcpy(dst, src, n);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return -ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

static inode *inode_new(kv_memfs *fs)
{
    if (grow((void **)&fs->inodes, &fs->cap_inodes, fs->ninodes + 1, sizeof(inode *)) < 0) return NULL;
    inode *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    fs->inodes[fs->ninodes++] = n;
    return n;
}

static void inode_free(inode *n)
{
    free(n->cur);
    free(n->dur);
    for (size_t i = 0; i < n->nops; i++) free(n->ops[i].data);
    free(n->ops);
    free(n);
}

static int set_len(uint8_t **buf, size_t *len, size_t *cap, size_t nl)
{
    if (nl > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (nc < nl) nc *= 2;
        uint8_t *nb = realloc(*buf, nc);
        if (!nb) return -ENOMEM;
        *buf = nb;
        *cap = nc;
    }
    if (nl > *len) memset(*buf + *len, 0, nl - *len);
    *len = nl;
    return 0;
}

static dent *dmap_find(dmap *m, const char *path)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].path, path)) return &m->v[i];
    return NULL;
}

static int dmap_set(dmap *m, const char *path, inode *ino)
{
    dent *d = dmap_find(m, path);
    if (d) {
        d->ino = ino;
        return 0;
    }
    if (grow((void **)&m->v, &m->cap, m->n + 1, sizeof(dent)) < 0) return -ENOMEM;
    char *p = strdup(path);
    if (!p) return -ENOMEM;
    m->v[m->n].path = p;
    m->v[m->n].ino = ino;
    m->n++;
    return 0;
}

static void dmap_del(dmap *m, const char *path)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].path, path)) {
            free(m->v[i].path);
            m->v[i] = m->v[--m->n];
            return;
        }
}

static void dmap_clear(dmap *m)
{
    for (size_t i = 0; i < m->n; i++) free(m->v[i].path);
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* Length of the parent part of a path ("a/b" -> 1), or 0 for none. */
static size_t parent_len(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? (size_t)(s - path) : 0;
}

static int is_child(const char *path, const char *dir)
{
    size_t pl = parent_len(path);
    if (pl == 0) return !strcmp(dir, ".") || (path[0] == '/' && !strcmp(dir, "/"));
    return strlen(dir) == pl && !strncmp(path, dir, pl);
}

static int parent_exists(kv_memfs *fs, const char *path)
{
    size_t pl = parent_len(path);
    if (pl == 0) return 1;
    char dir[4096];
    if (pl >= sizeof dir) return 0;
    mcpy(dir, path, pl);
    dir[pl] = 0;
    dent *d = dmap_find(&fs->cur, dir);
    return d && !d->ino;
}

static int fd_new(kv_memfs *fs, inode *ino, const char *lock_path)
{
    size_t i;
    for (i = 3; i < fs->nfds; i++)
        if (!fs->fds[i].used) break;
    if (i >= fs->nfds) {
        size_t nn = fs->nfds ? fs->nfds * 2 : 16;
        fdent *nf = realloc(fs->fds, nn * sizeof *nf);
        if (!nf) return -ENOMEM;
        memset(nf + fs->nfds, 0, (nn - fs->nfds) * sizeof *nf);
        fs->fds = nf;
        i = fs->nfds > 3 ? fs->nfds : 3;
        fs->nfds = nn;
    }
    fs->fds[i].used = 1;
    fs->fds[i].ino = ino;
    fs->fds[i].lock_path = lock_path ? strdup(lock_path) : NULL;
    return (int)i;
}

static inode *fd_ino(kv_memfs *fs, int fd)
{
    if (fd < 0 || (size_t)fd >= fs->nfds || !fs->fds[fd].used) return NULL;
    return fs->fds[fd].ino;
}

static int add_pending(inode *n, int trunc, uint64_t off, const void *data, uint64_t len)
{
    if (grow((void **)&n->ops, &n->cap_ops, n->nops + 1, sizeof(pend)) < 0) return -ENOMEM;
    pend *p = &n->ops[n->nops];
    p->trunc = trunc;
    p->off = off;
    p->len = len;
    p->data = NULL;
    if (!trunc && len) {
        p->data = malloc(len);
        if (!p->data) return -ENOMEM;
        mcpy(p->data, data, len);
    }
    n->nops++;
    return 0;
}

/* ---- kv_io implementation ---- */

#define FS(ctx) ((kv_memfs *)(ctx))

static int m_open(void *ctx, const char *path, int flags)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    int r;
    dent *d = dmap_find(&fs->cur, path);
    if (d && !d->ino) {
        r = -EISDIR;
    } else if (d && (flags & KV_O_CREAT) && (flags & KV_O_EXCL)) {
        r = -EEXIST;
    } else if (!d && !(flags & KV_O_CREAT)) {
        r = -ENOENT;
    } else if (!d && !parent_exists(fs, path)) {
        r = -ENOENT;
    } else {
        inode *n = d ? d->ino : inode_new(fs);
        r = n ? 0 : -ENOMEM;
        if (r == 0 && !d) r = dmap_set(&fs->cur, path, n);
        if (r == 0 && (flags & KV_O_TRUNC) && n->cur_len > 0) {
            r = add_pending(n, 1, 0, NULL, 0);
            if (r == 0) n->cur_len = 0;
        }
        if (r == 0) r = fd_new(fs, n, NULL);
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_close(void *ctx, int fd)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    int r = -EBADF;
    if (fd >= 0 && (size_t)fd < fs->nfds && fs->fds[fd].used) {
        free(fs->fds[fd].lock_path);
        memset(&fs->fds[fd], 0, sizeof fs->fds[fd]);
        r = 0;
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static ssize_t m_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    inode *ino = fd_ino(fs, fd);
    ssize_t r;
    if (!ino) {
        r = -EBADF;
    } else if (off >= ino->cur_len) {
        r = 0;
    } else {
        size_t k = ino->cur_len - off < n ? ino->cur_len - (size_t)off : n;
        mcpy(buf, ino->cur + off, k);
        r = (ssize_t)k;
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static ssize_t m_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    inode *ino = fd_ino(fs, fd);
    ssize_t r = -EBADF;
    if (ino) {
        size_t end = (size_t)off + n;
        r = 0;
        if (end > ino->cur_len) r = set_len(&ino->cur, &ino->cur_len, &ino->cur_cap, end);
        if (r == 0) r = add_pending(ino, 0, off, buf, n);
        if (r == 0) {
            mcpy(ino->cur + off, buf, n);
            r = (ssize_t)n;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static void run_hook(kv_memfs *fs, const char *what)
{
    pthread_mutex_lock(&fs->mu);
    kv_memfs_sync_hook h = fs->hook;
    void *a = fs->hook_arg;
    pthread_mutex_unlock(&fs->mu);
    if (h) h(a, fs, what);
}

static int m_fdatasync(void *ctx, int fd)
{
    kv_memfs *fs = FS(ctx);
    run_hook(fs, "fdatasync");
    pthread_mutex_lock(&fs->mu);
    inode *ino = fd_ino(fs, fd);
    int r = -EBADF;
    if (ino) {
        uint8_t *d = malloc(ino->cur_len ? ino->cur_len : 1);
        r = d ? 0 : -ENOMEM;
        if (d) {
            mcpy(d, ino->cur, ino->cur_len);
            free(ino->dur);
            ino->dur = d;
            ino->dur_len = ino->cur_len;
            for (size_t i = 0; i < ino->nops; i++) free(ino->ops[i].data);
            ino->nops = 0;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_ftruncate(void *ctx, int fd, uint64_t len)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    inode *ino = fd_ino(fs, fd);
    int r = -EBADF;
    if (ino) {
        r = add_pending(ino, 1, len, NULL, 0);
        if (r == 0) {
            if (len > ino->cur_len)
                r = set_len(&ino->cur, &ino->cur_len, &ino->cur_cap, (size_t)len);
            else
                ino->cur_len = (size_t)len;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_fsize(void *ctx, int fd, uint64_t *size)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    inode *ino = fd_ino(fs, fd);
    if (ino) *size = ino->cur_len;
    pthread_mutex_unlock(&fs->mu);
    return ino ? 0 : -EBADF;
}

static int m_rename(void *ctx, const char *from, const char *to)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    dent *d = dmap_find(&fs->cur, from);
    int r = -ENOENT;
    if (d && d->ino && parent_exists(fs, to)) {
        inode *n = d->ino;
        dmap_del(&fs->cur, from);
        r = dmap_set(&fs->cur, to, n);
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_unlink(void *ctx, const char *path)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    dent *d = dmap_find(&fs->cur, path);
    int r = -ENOENT;
    if (d && !d->ino) r = -EISDIR;
    if (d && d->ino) {
        dmap_del(&fs->cur, path);
        r = 0;
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_mkdir(void *ctx, const char *path)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    int r;
    if (dmap_find(&fs->cur, path))
        r = -EEXIST;
    else if (!parent_exists(fs, path))
        r = -ENOENT;
    else {
        /* Directories are durable at once (a simplification: the engine
         * fsyncs the parent anyway). */
        r = dmap_set(&fs->cur, path, NULL);
        if (r == 0) r = dmap_set(&fs->dur, path, NULL);
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_fsync_dir(void *ctx, const char *path)
{
    kv_memfs *fs = FS(ctx);
    run_hook(fs, "fsync_dir");
    pthread_mutex_lock(&fs->mu);
    int r = 0;
    dent *self = dmap_find(&fs->cur, path);
    if (strcmp(path, ".") && strcmp(path, "/") && (!self || self->ino)) r = -ENOENT;
    for (size_t i = 0; r == 0 && i < fs->dur.n;) {
        dent *d = &fs->dur.v[i];
        if (d->ino && is_child(d->path, path) && !dmap_find(&fs->cur, d->path))
            dmap_del(&fs->dur, d->path);
        else
            i++;
    }
    for (size_t i = 0; r == 0 && i < fs->cur.n; i++) {
        dent *d = &fs->cur.v[i];
        if (d->ino && is_child(d->path, path)) r = dmap_set(&fs->dur, d->path, d->ino);
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

static int m_list_dir(void *ctx, const char *path, kv_io_dirent_fn fn, void *arg)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    dent *self = dmap_find(&fs->cur, path);
    if (strcmp(path, ".") && strcmp(path, "/") && (!self || self->ino)) {
        pthread_mutex_unlock(&fs->mu);
        return -ENOENT;
    }
    char **names = calloc(fs->cur.n + 1, sizeof(char *));
    size_t n = 0;
    int r = names ? 0 : -ENOMEM;
    for (size_t i = 0; r == 0 && i < fs->cur.n; i++) {
        const char *p = fs->cur.v[i].path;
        if (!is_child(p, path)) continue;
        size_t pl = parent_len(p);
        names[n] = strdup(pl ? p + pl + 1 : p);
        if (!names[n]) r = -ENOMEM;
        else n++;
    }
    pthread_mutex_unlock(&fs->mu);
    for (size_t i = 0; i < n; i++) {
        if (r == 0 && fn(arg, names[i])) r = 1;
        free(names[i]);
    }
    free(names);
    return r < 0 ? r : 0;
}

/* As flock(2): a lock belongs to a file (its inode), not to its name, so
 * unlinking a locked file and locking the name again succeeds on the new
 * file. A directory (which has no inode here) is locked by its path. */
static int m_lock(void *ctx, const char *path)
{
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    dent *d = dmap_find(&fs->cur, path);
    int is_dir = d && !d->ino;
    int fd = is_dir ? fd_new(fs, NULL, NULL) : 0;
    pthread_mutex_unlock(&fs->mu);
    if (!is_dir) fd = m_open(ctx, path, KV_O_RDWR | KV_O_CREAT);
    if (fd < 0) return fd;
    pthread_mutex_lock(&fs->mu);
    int held = 0;
    const inode *ino = fs->fds[fd].ino;
    for (size_t i = 0; i < fs->nfds; i++) {
        const fdent *e = &fs->fds[i];
        if (!e->used || !e->lock_path || (int)i == fd) continue;
        if (is_dir ? !e->ino && !strcmp(e->lock_path, path) : e->ino == ino) held = 1;
    }
    if (!held) fs->fds[fd].lock_path = strdup(path);
    pthread_mutex_unlock(&fs->mu);
    if (held) {
        m_close(ctx, fd);
        return -EWOULDBLOCK;
    }
    return fd;
}

static int m_free_space(void *ctx, const char *path, uint64_t *bytes)
{
    (void)path;
    kv_memfs *fs = FS(ctx);
    pthread_mutex_lock(&fs->mu);
    *bytes = fs->free_bytes;
    pthread_mutex_unlock(&fs->mu);
    return 0;
}

void kv_memfs_set_free_space(kv_memfs *fs, uint64_t bytes)
{
    pthread_mutex_lock(&fs->mu);
    fs->free_bytes = bytes;
    pthread_mutex_unlock(&fs->mu);
}

kv_memfs *kv_memfs_new(void)
{
    kv_memfs *fs = calloc(1, sizeof *fs);
    if (!fs) return NULL;
    pthread_mutex_init(&fs->mu, NULL);
    fs->io = (kv_io){fs,        m_open,   m_close, m_pread,     m_pwrite,   m_fdatasync, m_ftruncate,
                     m_fsize,   m_rename, m_unlink, m_mkdir,    m_fsync_dir, m_list_dir, m_lock, m_free_space,
                     NULL,      NULL,     NULL,     NULL};
    fs->free_bytes = UINT64_MAX;
    return fs;
}

void kv_memfs_free(kv_memfs *fs)
{
    if (!fs) return;
    for (size_t i = 0; i < fs->ninodes; i++) inode_free(fs->inodes[i]);
    free(fs->inodes);
    dmap_clear(&fs->cur);
    dmap_clear(&fs->dur);
    for (size_t i = 0; i < fs->nfds; i++) free(fs->fds[i].lock_path);
    free(fs->fds);
    pthread_mutex_destroy(&fs->mu);
    free(fs);
}

const kv_io *kv_memfs_io(kv_memfs *fs)
{
    return &fs->io;
}

void kv_memfs_set_sync_hook(kv_memfs *fs, kv_memfs_sync_hook hook, void *arg)
{
    pthread_mutex_lock(&fs->mu);
    fs->hook = hook;
    fs->hook_arg = arg;
    pthread_mutex_unlock(&fs->mu);
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Contents of ino after a crash under spec, into (buf, len). */
static int crash_contents(const inode *ino, const kv_crash_spec *spec, uint8_t **buf, size_t *len)
{
    size_t l = ino->dur_len, cap = l ? l : 1;
    uint8_t *b = malloc(cap);
    if (!b) return -ENOMEM;
    mcpy(b, ino->dur, l);
    uint64_t seed = spec->seed;
    size_t keep = spec->keep_ops < 0 ? ino->nops : (size_t)spec->keep_ops;
    for (size_t i = 0; i < ino->nops && i <= keep; i++) {
        const pend *p = &ino->ops[i];
        int torn = (i == keep);
        if (torn && (spec->tear == KV_TEAR_NONE || p->trunc)) break;
        if (p->trunc) {
            if (set_len(&b, &l, &cap, (size_t)p->off) < 0) goto oom;
            continue;
        }
        size_t end = (size_t)(p->off + p->len);
        if (end > l && set_len(&b, &l, &cap, end) < 0) goto oom;
        size_t kept = p->len;
        if (torn) {
            uint64_t unit = spec->unit ? spec->unit : 512;
            uint64_t keep_end = p->off - p->off % unit + (uint64_t)spec->tear_units * unit;
            kept = keep_end <= p->off ? 0 : keep_end - p->off < p->len ? (size_t)(keep_end - p->off) : p->len;
        }
        mcpy(b + p->off, p->data, kept);
        for (size_t k = kept; k < p->len; k++)
            b[p->off + k] = spec->tear == KV_TEAR_GARBAGE ? (uint8_t)xorshift(&seed) : 0;
    }
    *buf = b;
    *len = l;
    return 0;
oom:
    free(b);
    return -ENOMEM;
}

/* Copies fs into a new filesystem: entries from `map`, each inode's data
 * from spec (or its current bytes when spec is NULL). */
static kv_memfs *copy_fs(kv_memfs *fs, const dmap *map, const kv_crash_spec *spec)
{
    kv_memfs *nfs = kv_memfs_new();
    if (!nfs) return NULL;
    int r = 0;
    for (size_t i = 0; i < fs->ninodes; i++) fs->inodes[i]->copy = NULL;
    for (size_t i = 0; r == 0 && i < map->n; i++) {
        const dent *d = &map->v[i];
        inode *n = NULL;
        if (d->ino) {
            n = d->ino->copy;
            if (!n) {
                n = inode_new(nfs);
                if (!n) {
                    r = -ENOMEM;
                    break;
                }
                uint8_t *b;
                size_t l;
                if (spec) {
                    r = crash_contents(d->ino, spec, &b, &l);
                } else {
                    l = d->ino->cur_len;
                    b = malloc(l ? l : 1);
                    r = b ? 0 : -ENOMEM;
                    if (b) mcpy(b, d->ino->cur, l);
                }
                if (r < 0) break;
                n->cur = b;
                n->cur_len = n->cur_cap = l ? l : 0;
                if (!l) n->cur_cap = 1;
                n->dur = malloc(l ? l : 1);
                if (!n->dur) {
                    r = -ENOMEM;
                    break;
                }
                mcpy(n->dur, b, l);
                n->dur_len = l;
                d->ino->copy = n;
            }
        }
        r = dmap_set(&nfs->cur, d->path, n);
        if (r == 0) r = dmap_set(&nfs->dur, d->path, n);
    }
    /* Directories always survive (see m_mkdir). */
    for (size_t i = 0; r == 0 && i < fs->dur.n; i++)
        if (!fs->dur.v[i].ino) {
            r = dmap_set(&nfs->cur, fs->dur.v[i].path, NULL);
            if (r == 0) r = dmap_set(&nfs->dur, fs->dur.v[i].path, NULL);
        }
    if (r < 0) {
        kv_memfs_free(nfs);
        return NULL;
    }
    return nfs;
}

kv_memfs *kv_memfs_crash(kv_memfs *fs, const kv_crash_spec *spec)
{
    pthread_mutex_lock(&fs->mu);
    kv_memfs *n = copy_fs(fs, spec->keep_dir_ops ? &fs->cur : &fs->dur, spec);
    pthread_mutex_unlock(&fs->mu);
    return n;
}

kv_memfs *kv_memfs_clone(kv_memfs *fs)
{
    pthread_mutex_lock(&fs->mu);
    kv_memfs *n = copy_fs(fs, &fs->cur, NULL);
    pthread_mutex_unlock(&fs->mu);
    return n;
}

long kv_memfs_max_pending(kv_memfs *fs)
{
    pthread_mutex_lock(&fs->mu);
    long m = 0;
    for (size_t i = 0; i < fs->ninodes; i++)
        if ((long)fs->inodes[i]->nops > m) m = (long)fs->inodes[i]->nops;
    pthread_mutex_unlock(&fs->mu);
    return m;
}

int kv_memfs_read(kv_memfs *fs, const char *path, uint8_t **buf, size_t *len)
{
    pthread_mutex_lock(&fs->mu);
    dent *d = dmap_find(&fs->cur, path);
    int r = -ENOENT;
    if (d && d->ino) {
        *len = d->ino->cur_len;
        *buf = malloc(*len ? *len : 1);
        r = *buf ? 0 : -ENOMEM;
        if (*buf) mcpy(*buf, d->ino->cur, *len);
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

int kv_memfs_write(kv_memfs *fs, const char *path, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&fs->mu);
    dent *d = dmap_find(&fs->cur, path);
    inode *n = d ? d->ino : inode_new(fs);
    int r = n ? 0 : -ENOMEM;
    if (r == 0 && !d) r = dmap_set(&fs->cur, path, n);
    if (r == 0) r = dmap_set(&fs->dur, path, n);
    if (r == 0) {
        n->cur_len = 0;
        r = set_len(&n->cur, &n->cur_len, &n->cur_cap, len);
    }
    if (r == 0) {
        mcpy(n->cur, buf, len);
        free(n->dur);
        n->dur = malloc(len ? len : 1);
        if (!n->dur) r = -ENOMEM;
        else {
            mcpy(n->dur, buf, len);
            n->dur_len = len;
        }
        for (size_t i = 0; i < n->nops; i++) free(n->ops[i].data);
        n->nops = 0;
    }
    pthread_mutex_unlock(&fs->mu);
    return r;
}

int kv_memfs_exists(kv_memfs *fs, const char *path)
{
    pthread_mutex_lock(&fs->mu);
    int e = dmap_find(&fs->cur, path) != NULL;
    pthread_mutex_unlock(&fs->mu);
    return e;
}

/* ---- fault injection ---- */

struct kv_faultio {
    kv_io io;
    const kv_io *base;
    pthread_mutex_t mu;
    uint64_t calls, fail_at;
    int err, sticky, fired;
};

/* Counts a call; returns the errno to fail it with, or 0. */
static int fault_tick(kv_faultio *f)
{
    pthread_mutex_lock(&f->mu);
    f->calls++;
    int e = 0;
    if (f->fail_at && (f->calls == f->fail_at || (f->sticky && f->calls > f->fail_at))) {
        e = f->err;
        f->fired = 1;
    }
    pthread_mutex_unlock(&f->mu);
    return e;
}

#define FAULT(ctx) ((kv_faultio *)(ctx))
#define B(f) ((f)->base)

static int f_open(void *c, const char *p, int fl)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->open(B(FAULT(c))->ctx, p, fl);
}
static int f_close(void *c, int fd)
{
    /* A close that "fails" still releases the descriptor, as on Linux. */
    int e = fault_tick(FAULT(c));
    int r = B(FAULT(c))->close(B(FAULT(c))->ctx, fd);
    return e ? -e : r;
}
static ssize_t f_pread(void *c, int fd, void *b, size_t n, uint64_t off)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->pread(B(FAULT(c))->ctx, fd, b, n, off);
}
static ssize_t f_pwrite(void *c, int fd, const void *b, size_t n, uint64_t off)
{
    int e = fault_tick(FAULT(c));
    if (e) {
        if (n > 1) (void)B(FAULT(c))->pwrite(B(FAULT(c))->ctx, fd, b, n / 2, off);
        return -e;
    }
    return B(FAULT(c))->pwrite(B(FAULT(c))->ctx, fd, b, n, off);
}
static int f_fdatasync(void *c, int fd)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->fdatasync(B(FAULT(c))->ctx, fd);
}
static int f_ftruncate(void *c, int fd, uint64_t l)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->ftruncate(B(FAULT(c))->ctx, fd, l);
}
static int f_fsize(void *c, int fd, uint64_t *s)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->fsize(B(FAULT(c))->ctx, fd, s);
}
static int f_rename(void *c, const char *a, const char *b)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->rename(B(FAULT(c))->ctx, a, b);
}
static int f_unlink(void *c, const char *p)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->unlink(B(FAULT(c))->ctx, p);
}
static int f_mkdir(void *c, const char *p)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->mkdir(B(FAULT(c))->ctx, p);
}
static int f_fsync_dir(void *c, const char *p)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->fsync_dir(B(FAULT(c))->ctx, p);
}
static int f_list_dir(void *c, const char *p, kv_io_dirent_fn fn, void *a)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->list_dir(B(FAULT(c))->ctx, p, fn, a);
}
static int f_lock(void *c, const char *p)
{
    int e = fault_tick(FAULT(c));
    return e ? -e : B(FAULT(c))->lock(B(FAULT(c))->ctx, p);
}
static int f_free_space(void *c, const char *p, uint64_t *bytes)
{
    int e = fault_tick(FAULT(c));
    if (e) return -e;
    if (!B(FAULT(c))->free_space) return -ENOSYS;
    return B(FAULT(c))->free_space(B(FAULT(c))->ctx, p, bytes);
}

kv_faultio *kv_faultio_new(const kv_io *base)
{
    kv_faultio *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->base = base;
    pthread_mutex_init(&f->mu, NULL);
    f->io = (kv_io){f,       f_open,   f_close,  f_pread,  f_pwrite,    f_fdatasync, f_ftruncate,
                    f_fsize, f_rename, f_unlink, f_mkdir,  f_fsync_dir, f_list_dir,  f_lock, f_free_space,
                    NULL,    NULL,     NULL,     NULL};
    return f;
}

void kv_faultio_free(kv_faultio *f)
{
    if (!f) return;
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const kv_io *kv_faultio_io(kv_faultio *f)
{
    return &f->io;
}

void kv_faultio_arm(kv_faultio *f, uint64_t n, int err, int sticky)
{
    pthread_mutex_lock(&f->mu);
    f->calls = 0;
    f->fail_at = n;
    f->err = err;
    f->sticky = sticky;
    f->fired = 0;
    pthread_mutex_unlock(&f->mu);
}

uint64_t kv_faultio_calls(kv_faultio *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t c = f->calls;
    pthread_mutex_unlock(&f->mu);
    return c;
}

int kv_faultio_fired(kv_faultio *f)
{
    pthread_mutex_lock(&f->mu);
    int r = f->fired;
    pthread_mutex_unlock(&f->mu);
    return r;
}
