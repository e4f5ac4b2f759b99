/*
 * kv_dir — the data directory's vocabulary: every name kvd, recovery and
 * the offline tools give a file, the path of a file in a directory, the
 * parse of a directory entry back into (kind, id), and the directory's
 * lock. docs/format.md ("Data directory") lists the same kinds for the
 * operator.
 *
 * Owns: the file kinds (kv_file_kind) and their names, the fixed-size
 * path type (kv_path), the ".N" suffix that keeps a saved file from being
 * overwritten, and the two locks that give a data directory one owner
 * (kv_dir_lock).
 * Guarantees: kv_dir_name and kv_dir_parse are inverses: every name
 * kv_dir_name writes parses back to the same kind, id and offset, and
 * kv_dir_parse accepts no other spelling (ten decimal digits, an id in
 * 1..4294967295, the exact suffix). A path that does not fit a kv_path is
 * an error (-ENAMETOOLONG), never cut short.
 * Never: reads or writes file contents, or decides what a kind means to
 * recovery (that is recovery/'s policy).
 * Locking: none; the functions keep no state. kv_dir_lock_acquire is what
 * excludes other processes.
 */
#ifndef KV_DIR_H
#define KV_DIR_H

#include <stddef.h>
#include <stdint.h>

struct kv_io; /* kv_io.h, which includes this header */

/* The kinds of file a data directory holds. NNNNNNNNNN is a segment id in
 * ten decimal digits; [.N] marks the kinds that are kept, never
 * overwritten: a name already taken gets ".1", ".2", ... (kv_dir_unused). */
typedef enum kv_file_kind {
    KV_FILE_OTHER = 0,      /* no name kvd gives */
    KV_FILE_LOCK,           /* "LOCK": locked by the directory's owner */
    KV_FILE_SEG,            /* "NNNNNNNNNN.seg": a segment */
    KV_FILE_SEG_TORN,       /* "NNNNNNNNNN.seg.<offset>.torn[.N]": bytes recovery cut
                               from the segment at <offset> (decimal) */
    KV_FILE_SEG_DISCARDED,  /* "NNNNNNNNNN.seg.discarded[.N]": a segment point-in-time
                               recovery set aside */
    KV_FILE_SEG_COMPACT,    /* "NNNNNNNNNN.seg.compact": a compaction's output while it
                               is written */
    KV_FILE_SEG_ORIG,       /* "NNNNNNNNNN.seg.orig[.N]": a segment kvfsck --salvage
                               rewrote, the original bytes */
    KV_FILE_SEG_SALVAGE,    /* "NNNNNNNNNN.seg.salvage": kvfsck --salvage's rewrite
                               while it is written */
    KV_FILE_HINT,           /* "NNNNNNNNNN.hint": the hint file of a sealed segment */
    KV_FILE_HINT_TMP,       /* "NNNNNNNNNN.hint.tmp": a hint file while it is written */
    KV_FILE_HINT_DISCARDED, /* "NNNNNNNNNN.hint.discarded[.N]": the hint of a segment
                               point-in-time recovery set aside */
    KV_FILE_HINT_ORPHAN,    /* "NNNNNNNNNN.hint.orphan[.N]": a hint whose segment is
                               missing, set aside by kvfsck --repair */
    KV_FILE_NKINDS
} kv_file_kind;

/* Bytes of a path, its NUL included (Linux's PATH_MAX). */
#define KV_PATH_MAX 4096
/* Bytes of room for any name kv_dir_name writes, its NUL included: the
 * longest is a torn file's, "NNNNNNNNNN.seg.<20 digits>.torn", and a ".N"
 * copy suffix of up to 3 digits. */
#define KV_NAME_MAX 48

/* A path in a data directory: "<dir>/<name>". Fixed size, so it can live
 * on the stack or in a struct; s is always NUL-terminated. */
typedef struct kv_path {
    char s[KV_PATH_MAX];
} kv_path;

/* Short text for a kind, as an operator reads it in a listing: "LOCK",
 * ".seg", ".torn", ".discarded", ".compact", ".orig", ".salvage", ".hint",
 * ".hint.tmp", ".hint.discarded", ".hint.orphan", "other". Never NULL. */
const char *kv_file_kind_str(kv_file_kind kind);

/* 1 if files of this kind are kept with a ".N" suffix rather than
 * overwritten (the kinds marked [.N] above), 0 otherwise. */
int kv_file_kind_keeps_copies(kv_file_kind kind);

/*
 * Writes the name of the file of `kind` for segment `id` to out[0, cap):
 * e.g. (KV_FILE_SEG, 7) -> "0000000007.seg", (KV_FILE_SEG_TORN, 3, off
 * 4096) -> "0000000003.seg.4096.torn". off is used by KV_FILE_SEG_TORN
 * only (a byte offset); id by every kind but KV_FILE_LOCK.
 * Returns the name's length in bytes, -EINVAL for KV_FILE_OTHER, an id of
 * 0 or an unknown kind, or -ENAMETOOLONG if cap is too small (out is then
 * ""). KV_NAME_MAX bytes are always enough.
 */
int kv_dir_name(char *out, size_t cap, kv_file_kind kind, uint32_t id, uint64_t off);

/* The path "<dir>/<name>" of the file kv_dir_name names, in *p. Returns 0,
 * -EINVAL as kv_dir_name, or -ENAMETOOLONG when dir is too long for a
 * kv_path (p->s is then ""). */
int kv_dir_path(kv_path *p, const char *dir, kv_file_kind kind, uint32_t id, uint64_t off);

/* The path "<dir>/<name>" for a name read from the directory (any name).
 * Returns 0 or -ENAMETOOLONG (p->s is then ""). */
int kv_dir_join(kv_path *p, const char *dir, const char *name);

/*
 * Parses a directory entry name. Returns its kind and stores the segment
 * id in *id (0 for LOCK and OTHER) and, for KV_FILE_SEG_TORN, the cut's
 * byte offset in *off (0 otherwise; an offset too large for 64 bits is
 * stored as UINT64_MAX); either pointer may be NULL. A kind that keeps
 * copies also accepts its name followed by ".N" (N decimal digits).
 * Returns KV_FILE_OTHER for any name kvd does not give, including a
 * segment name whose id is 0 or above 4294967295.
 */
kv_file_kind kv_dir_parse(const char *name, uint32_t *id, uint64_t *off);

/*
 * Writes to *out base itself, or "<base>.N" (N = 1, 2, ...), whichever
 * does not exist yet, so that saved bytes are never overwritten. The
 * caller holds the directory's lock, so no cooperating process creates
 * the name meanwhile. Existence is tested with io->open (read-only).
 * Returns 0, -EEXIST after 1000 tries, -ENAMETOOLONG, or the -errno of an
 * open that failed for another reason than ENOENT.
 */
int kv_dir_unused(const struct kv_io *io, const kv_path *base, kv_path *out);

/* The two locks that give a data directory one owner (kv_dir_lock_acquire). */
typedef struct kv_dir_lock {
    int dir_fd;  /* lock on the directory itself, or -1 */
    int file_fd; /* lock on DIR/LOCK, or -1 */
} kv_dir_lock;

/*
 * Takes the data directory's lock, as kvd, kvcompact and a repairing
 * kvfsck all do: an exclusive, non-blocking io->lock on the directory
 * itself, then on DIR/LOCK (created if absent). The directory's lock is
 * the one that cannot be sidestepped: deleting LOCK while its owner runs
 * only lets the next opener create a new, unlocked LOCK file, but the
 * directory stays the same inode. LOCK is kept so that older builds,
 * which lock only it, are still excluded. The directory's lock is taken
 * first, so a refused opener creates nothing (docs/format.md, "LOCK").
 * Returns 0 (both held; release with kv_dir_lock_release), -EWOULDBLOCK
 * if another process (or another kv_dir_lock_acquire in this one) holds
 * either, -ENAMETOOLONG if dir is too long for a kv_path, or -errno
 * (-ENOENT: no such directory). On failure nothing is held and
 * l->dir_fd == l->file_fd == -1.
 */
int kv_dir_lock_acquire(const struct kv_io *io, const char *dir, kv_dir_lock *l);

/* Releases what kv_dir_lock_acquire took (either descriptor may be -1)
 * and sets both to -1. */
void kv_dir_lock_release(const struct kv_io *io, kv_dir_lock *l);

#endif
