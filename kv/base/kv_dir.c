#include "kv_dir.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kv_io.h"
#include "kv_record.h"

/* Each kind's name after the ten-digit id. A torn file's offset sits
 * between ".seg." and ".torn" and is handled apart. */
static const struct kind_name {
    const char *tail; /* after "NNNNNNNNNN"; NULL: not an id name */
    const char *str;  /* kv_file_kind_str */
    int copies;       /* kept with ".N" rather than overwritten */
} kinds[KV_FILE_NKINDS] = {
    [KV_FILE_OTHER] = {NULL, "other", 0},
    [KV_FILE_LOCK] = {NULL, "LOCK", 0},
    [KV_FILE_SEG] = {".seg", ".seg", 0},
    [KV_FILE_SEG_TORN] = {".torn", ".torn", 1},
    [KV_FILE_SEG_DISCARDED] = {".seg.discarded", ".discarded", 1},
    [KV_FILE_SEG_COMPACT] = {".seg.compact", ".compact", 0},
    [KV_FILE_SEG_ORIG] = {".seg.orig", ".orig", 1},
    [KV_FILE_SEG_SALVAGE] = {".seg.salvage", ".salvage", 0},
    [KV_FILE_HINT] = {".hint", ".hint", 0},
    [KV_FILE_HINT_TMP] = {".hint.tmp", ".hint.tmp", 0},
    [KV_FILE_HINT_DISCARDED] = {".hint.discarded", ".hint.discarded", 1},
    [KV_FILE_HINT_ORPHAN] = {".hint.orphan", ".hint.orphan", 1},
};

const char *kv_file_kind_str(kv_file_kind kind)
{
    return (unsigned)kind < KV_FILE_NKINDS ? kinds[kind].str : "other";
}

int kv_file_kind_keeps_copies(kv_file_kind kind)
{
    return (unsigned)kind < KV_FILE_NKINDS && kinds[kind].copies;
}

int kv_dir_name(char *out, size_t cap, kv_file_kind kind, uint32_t id, uint64_t off)
{
    int n;
    if (cap) out[0] = '\0';
    if (kind == KV_FILE_LOCK)
        n = snprintf(out, cap, "LOCK");
    else if (kind <= KV_FILE_LOCK || kind >= KV_FILE_NKINDS || id == 0)
        return -EINVAL;
    else if (kind == KV_FILE_SEG_TORN)
        n = snprintf(out, cap, "%010" PRIu32 ".seg.%" PRIu64 ".torn", id, off);
    else
        n = snprintf(out, cap, "%010" PRIu32 "%s", id, kinds[kind].tail);
    if (n < 0 || (size_t)n >= cap) {
        if (cap) out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return n;
}

int kv_dir_join(kv_path *p, const char *dir, const char *name)
{
    int n = snprintf(p->s, sizeof p->s, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof p->s) {
        p->s[0] = '\0';
        return -ENAMETOOLONG;
    }
    return 0;
}

int kv_dir_path(kv_path *p, const char *dir, kv_file_kind kind, uint32_t id, uint64_t off)
{
    char name[KV_NAME_MAX];
    int r = kv_dir_name(name, sizeof name, kind, id, off);
    p->s[0] = '\0';
    return r < 0 ? r : kv_dir_join(p, dir, name);
}

/* 1 if s is "" or, when copies is set, ".N" with N one or more decimal
 * digits (the suffix kv_dir_unused adds when a name is taken). */
static int end_ok(const char *s, int copies)
{
    if (*s == '\0') return 1;
    if (!copies || *s++ != '.' || *s == '\0') return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* "<digits>.torn[.N]" after "NNNNNNNNNN.seg.": the offset, saturating. */
static int parse_torn(const char *s, uint64_t *off)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++)
        v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(*p - '0');
    if (p == s || strncmp(p, ".torn", 5) != 0 || !end_ok(p + 5, 1)) return 0;
    *off = v;
    return 1;
}

kv_file_kind kv_dir_parse(const char *name, uint32_t *id, uint64_t *off)
{
    uint32_t sid = 0;
    uint64_t soff = 0;
    kv_file_kind kind = KV_FILE_OTHER;
    if (!strcmp(name, "LOCK")) {
        kind = KV_FILE_LOCK;
    } else if (strlen(name) > 10 && strspn(name, "0123456789") >= 10) {
        char digits[16];
        memcpy(digits, name, 10);
        memcpy(digits + 10, ".seg", 5);
        const char *tail = name + 10;
        if (kv_parse_id_name(digits, ".seg", &sid)) { /* the id's own rules: 1..4294967295 */
            if (!strncmp(tail, ".seg.", 5) && parse_torn(tail + 5, &soff))
                kind = KV_FILE_SEG_TORN;
            for (int k = KV_FILE_SEG; kind == KV_FILE_OTHER && k < KV_FILE_NKINDS; k++) {
                size_t tl = strlen(kinds[k].tail);
                if (k != KV_FILE_SEG_TORN && !strncmp(tail, kinds[k].tail, tl) && end_ok(tail + tl, kinds[k].copies))
                    kind = (kv_file_kind)k;
            }
        }
    }
    if (kind == KV_FILE_OTHER || kind == KV_FILE_LOCK) sid = 0;
    if (id) *id = sid;
    if (off) *off = kind == KV_FILE_SEG_TORN ? soff : 0;
    return kind;
}

int kv_dir_unused(const kv_io *io, const kv_path *base, kv_path *out)
{
    for (unsigned n = 0; n < 1000; n++) {
        int len = n == 0 ? snprintf(out->s, sizeof out->s, "%s", base->s)
                         : snprintf(out->s, sizeof out->s, "%s.%u", base->s, n);
        if (len < 0 || (size_t)len >= sizeof out->s) {
            out->s[0] = '\0';
            return -ENAMETOOLONG;
        }
        int fd = io->open(io->ctx, out->s, KV_O_RDONLY);
        if (fd == -ENOENT) return 0;
        if (fd < 0) return fd;
        io->close(io->ctx, fd);
    }
    return -EEXIST;
}

/* ---- the data directory's lock ---- */

int kv_dir_lock_acquire(const kv_io *io, const char *dir, kv_dir_lock *l)
{
    l->dir_fd = l->file_fd = -1;
    kv_path path;
    int r = kv_dir_path(&path, dir, KV_FILE_LOCK, 0, 0);
    if (r < 0) return r;
    int fd = io->lock(io->ctx, dir);
    if (fd < 0) return fd;
    l->dir_fd = fd;
    fd = io->lock(io->ctx, path.s);
    if (fd < 0) {
        kv_dir_lock_release(io, l);
        return fd;
    }
    l->file_fd = fd;
    return 0;
}

void kv_dir_lock_release(const kv_io *io, kv_dir_lock *l)
{
    if (l->file_fd >= 0) io->close(io->ctx, l->file_fd);
    if (l->dir_fd >= 0) io->close(io->ctx, l->dir_fd);
    l->dir_fd = l->file_fd = -1;
}

/* ---- the old names, kept in kv_record.h for their callers ---- */

void kv_seg_name(char *out, size_t cap, uint32_t id)
{
    snprintf(out, cap, "%010u.seg", id);
}

int kv_parse_id_name(const char *name, const char *suffix, uint32_t *id)
{
    if (strlen(name) != 10 + strlen(suffix) || strcmp(name + 10, suffix) != 0) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (v == 0 || v > UINT32_MAX) return 0;
    *id = (uint32_t)v;
    return 1;
}

int kv_seg_parse_name(const char *name, uint32_t *id)
{
    return kv_parse_id_name(name, ".seg", id);
}
