/* The edges of the log (format version 2, docs/format.md, "Evidence before
 * a cut"), one named test per shape: what a crash can leave opens with
 * nothing acknowledged lost and the cut bytes kept; what damage or a lost
 * file leaves is refused, naming the file and kvfsck, with the directory
 * left exactly as it was (no hint file removed or rewritten). Each test
 * builds its directory with the store itself on the simulated disk. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_keydir.h"
#include "kv_record.h"
#include "kvr_recover.h"
#include "kvr_reader.h"
#include "testutil.h"

#define DIR "db"
#define SEG 4096u

static kv_memfs *fs;
static tu_model model;

static void setup(void)
{
    fs = kv_memfs_new();
    tu_model_init(&model);
}

static void teardown(void)
{
    tu_model_free(&model);
    kv_memfs_free(fs);
}

static kv_store *open_ok(kvr_report *rep)
{
    kv_store *s = NULL;
    kvr_report r;
    kv_status st = tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, SEG, KVR_TOLERATE_TAIL, &s, rep ? rep : &r);
    ck_assert_msg(st == KV_OK, "open: %s: %s", kv_strerror(st), rep ? rep->message : r.message);
    if (!rep) kvr_report_free(&r);
    return s;
}

static void put(kv_store *s, const char *k, const char *v)
{
    ck_assert_int_eq(kv_put(s, k, strlen(k), v, strlen(v), 0, 0), KV_OK);
    tu_model_put(&model, k, strlen(k), v, strlen(v));
}

/* Enough puts of ~150 bytes in 4 KiB segments for `segs` sealed ones. */
static kv_store *fill(int rounds)
{
    kv_store *s = open_ok(NULL);
    char k[32], v[128];
    for (int i = 0; i < rounds; i++) {
        snprintf(k, sizeof k, "key%03d", i % 70);
        snprintf(v, sizeof v, "value-%d-%080d", i, i);
        put(s, k, v);
    }
    return s;
}

/* A directory after a clean shutdown: sealed segments 1..n-1 with their
 * hints, an empty newest segment n. Returns n. */
static uint32_t clean_dir(void)
{
    kv_store *s = fill(120);
    kv_stats st;
    kv_get_stats(s, &st);
    ck_assert_uint_ge(st.segments, 4);
    ck_assert_int_eq(kv_close(s), KV_OK);
    return (uint32_t)st.segments + 1;
}

static char *path_of(char *buf, size_t cap, uint32_t id, const char *suffix)
{
    snprintf(buf, cap, DIR "/%010u%s", id, suffix);
    return buf;
}

/* ---- snapshots: a refused open changes nothing ---- */

typedef struct snap {
    size_t n;
    char *names[256];
    uint8_t *bytes[256];
    size_t lens[256];
} snap;

static int add_name(void *arg, const char *name)
{
    snap *sn = arg;
    /* LOCK is created by every open: it is no evidence. */
    if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, "LOCK") || sn->n == 256) return 0;
    sn->names[sn->n++] = strdup(name);
    return 0;
}

static void take(snap *sn)
{
    memset(sn, 0, sizeof *sn);
    const kv_io *io = kv_memfs_io(fs);
    ck_assert_int_eq(io->list_dir(io->ctx, DIR, add_name, sn), 0);
    for (size_t i = 0; i < sn->n; i++) {
        char p[64];
        snprintf(p, sizeof p, DIR "/%s", sn->names[i]);
        ck_assert_int_eq(kv_memfs_read(fs, p, &sn->bytes[i], &sn->lens[i]), 0);
    }
}

static void drop(snap *sn)
{
    for (size_t i = 0; i < sn->n; i++) {
        free(sn->names[i]);
        free(sn->bytes[i]);
    }
}

static void assert_same(const snap *a, const snap *b)
{
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        size_t j = 0;
        while (j < b->n && strcmp(a->names[i], b->names[j])) j++;
        ck_assert_msg(j < b->n, "%s is gone", a->names[i]);
        ck_assert_msg(a->lens[i] == b->lens[j] && !memcmp(a->bytes[i], b->bytes[j], a->lens[i]), "%s changed",
                      a->names[i]);
    }
}

/* Opens expecting a refusal whose message names `file` and `kind` and the
 * kvfsck command; the directory must be left as it was. */
static void expect_refusal(const char *file, const char *kind)
{
    snap before, after;
    take(&before);
    kv_store *s = NULL;
    kvr_report rep;
    kv_status st = tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, SEG, KVR_TOLERATE_TAIL, &s, &rep);
    ck_assert_msg(st == KV_CORRUPT, "opened (%s): %s", kv_strerror(st), rep.message);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(rep.message, file), "message lacks %s: %s", file, rep.message);
    ck_assert_msg(strstr(rep.message, kind), "message lacks '%s': %s", kind, rep.message);
    ck_assert_msg(strstr(rep.message, "kvfsck " DIR), "message lacks the kvfsck command: %s", rep.message);
    kvr_report_free(&rep);
    take(&after);
    assert_same(&before, &after);
    drop(&before);
    drop(&after);
}

static void remove_file(const char *p)
{
    ck_assert_int_eq(kv_memfs_io(fs)->unlink(kv_memfs_io(fs)->ctx, p), 0);
}

static void resize(const char *p, size_t len)
{
    uint8_t *b;
    size_t n;
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &n), 0);
    ck_assert_uint_le(len, n);
    ck_assert_int_eq(kv_memfs_write(fs, p, b, len), 0);
    free(b);
}

static size_t size_of(const char *p)
{
    uint8_t *b;
    size_t n;
    if (kv_memfs_read(fs, p, &b, &n) < 0) return (size_t)-1;
    free(b);
    return n;
}

/* ---- sealed segments ---- */

START_TEST(deleted_sealed_segment_with_its_hint_is_a_missing_segment)
{
    clean_dir();
    char p[64];
    remove_file(path_of(p, sizeof p, 2, ".seg"));
    remove_file(path_of(p, sizeof p, 2, ".hint"));
    expect_refusal("0000000003.seg", "missing segment");
}
END_TEST

START_TEST(deleted_sealed_segment_keeping_its_hint_is_refused_and_the_hint_kept)
{
    clean_dir();
    char p[64];
    remove_file(path_of(p, sizeof p, 2, ".seg"));
    expect_refusal("0000000002.hint", "missing segment");
    ck_assert(kv_memfs_exists(fs, path_of(p, sizeof p, 2, ".hint")));
}
END_TEST

START_TEST(emptied_sealed_segment_is_refused)
{
    clean_dir();
    char p[64];
    resize(path_of(p, sizeof p, 2, ".seg"), 0);
    expect_refusal("0000000002.seg", "truncated sealed segment"); /* its successor recorded its size */
}
END_TEST

START_TEST(sealed_segment_truncated_at_a_record_boundary_is_refused_and_its_hint_kept)
{
    uint32_t n = clean_dir();
    char p[64];
    /* Drop the trailer and the last group (one put and its commit mark). */
    path_of(p, sizeof p, 2, ".seg");
    uint8_t *b;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &len), 0);
    kv_record r;
    ck_assert_int_eq(kv_record_decode(b + len - KV_MARK_SIZE, KV_MARK_SIZE, &r), KV_OK);
    ck_assert_uint_eq(r.type, KV_REC_SEAL);
    ck_assert_int_eq(kv_record_decode(b + len - 2 * KV_MARK_SIZE, KV_MARK_SIZE, &r), KV_OK);
    ck_assert_uint_eq(r.type, KV_REC_COMMIT);
    size_t cut = (size_t)r.expire_ms; /* the group's start: a record boundary */
    free(b);
    resize(p, cut);
    expect_refusal("0000000002.seg", "truncated sealed segment");
    /* The same for the segment just before the empty newest one, whose
     * successor's header allows only a missing trailer. */
    teardown(); /* a second directory: the first one is done with */
    setup();
    n = clean_dir();
    path_of(p, sizeof p, n - 1, ".seg");
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &len), 0);
    ck_assert_int_eq(kv_record_decode(b + len - 2 * KV_MARK_SIZE, KV_MARK_SIZE, &r), KV_OK);
    cut = (size_t)r.expire_ms;
    free(b);
    resize(p, cut);
    char name[32];
    snprintf(name, sizeof name, "%010u.seg", n - 1);
    expect_refusal(name, "truncated sealed segment");
}
END_TEST

START_TEST(stale_hint_of_a_whole_segment_is_rejected_and_rewritten)
{
    clean_dir();
    char p1[64], p2[64];
    uint8_t *b;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, path_of(p1, sizeof p1, 1, ".hint"), &b, &len), 0);
    ck_assert_int_eq(kv_memfs_write(fs, path_of(p2, sizeof p2, 2, ".hint"), b, len), 0);
    free(b);
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    ck_assert_uint_eq(rep.hints_rejected, 1);
    ck_assert_uint_eq(rep.hints_written, 1);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
    /* The rewritten hint is used at the next start. */
    s = open_ok(&rep);
    ck_assert_uint_eq(rep.hints_rejected, 0);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
}
END_TEST

START_TEST(deleted_newest_segment_is_a_missing_segment)
{
    uint32_t n = clean_dir();
    char p[64], name[32];
    remove_file(path_of(p, sizeof p, n, ".seg"));
    snprintf(name, sizeof name, "%010u.", n - 1); /* its trailer, or its hint file, shows it */
    expect_refusal(name, "missing segment");
    /* After a crash too: the newest holds records, the one before it was
     * sealed by a rotation. */
    teardown(); /* a second directory: the first one is done with */
    setup();
    kv_store *s = fill(120);
    kv_memfs *img = kv_memfs_clone(fs);
    kv_close(s);
    kv_memfs_free(fs);
    fs = img;
    kv_stats st;
    (void)st;
    uint32_t newest = 0;
    for (uint32_t id = 1; id < 100; id++)
        if (kv_memfs_exists(fs, path_of(p, sizeof p, id, ".seg"))) newest = id;
    ck_assert_uint_ge(newest, 3);
    remove_file(path_of(p, sizeof p, newest, ".seg"));
    snprintf(name, sizeof name, "%010u.", newest - 1);
    expect_refusal(name, "missing segment");
}
END_TEST

/* ---- the crash in the middle of a rotation ---- */

START_TEST(missing_trailer_before_an_empty_newest_segment_is_written_again)
{
    uint32_t n = clean_dir();
    char p[64];
    path_of(p, sizeof p, n - 1, ".seg");
    size_t len = size_of(p);
    resize(p, len - KV_MARK_SIZE); /* the trailer never reached the disk */
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    ck_assert_uint_eq(rep.rotations_completed, 1);
    ck_assert_uint_eq(rep.torn_bytes, 0);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
    ck_assert_uint_eq(size_of(p), len);
}
END_TEST

START_TEST(torn_trailer_before_an_empty_newest_segment_is_saved_and_written_again)
{
    uint32_t n = clean_dir();
    char p[64], torn[96];
    path_of(p, sizeof p, n - 1, ".seg");
    uint8_t *b;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &len), 0);
    uint8_t orig[KV_MARK_SIZE];
    memcpy(orig, b + len - KV_MARK_SIZE, sizeof orig);
    memset(b + len - 20, 0xa5, 20); /* garbage where the trailer's end should be */
    ck_assert_int_eq(kv_memfs_write(fs, p, b, len), 0);
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    ck_assert_uint_eq(rep.rotations_completed, 1);
    ck_assert_uint_eq(rep.torn_bytes, KV_MARK_SIZE);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
    snprintf(torn, sizeof torn, "%s.%zu.torn", p, len - KV_MARK_SIZE);
    uint8_t *t;
    size_t tl;
    ck_assert_int_eq(kv_memfs_read(fs, torn, &t, &tl), 0); /* the torn bytes are kept */
    ck_assert_uint_eq(tl, KV_MARK_SIZE);
    ck_assert(!memcmp(t, b + len - KV_MARK_SIZE, tl));
    free(t);
    free(b);
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &len), 0);
    ck_assert(!memcmp(b + len - KV_MARK_SIZE, orig, sizeof orig)); /* the same trailer again */
    free(b);
}
END_TEST

/* A crash during the recovery that was completing a rotation: it had
 * begun writing the trailer of the segment before the newest, and the
 * newest, whose header kvd writes again only after recovery, has none.
 * The next start sees a torn trailer right after the last commit mark. */
START_TEST(torn_trailer_before_a_newest_segment_without_header_is_written_again)
{
    uint32_t n = clean_dir();
    char p[64], np[64];
    path_of(p, sizeof p, n - 1, ".seg");
    path_of(np, sizeof np, n, ".seg");
    uint8_t *b;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &len), 0);
    memset(b + len - 20, 0xa5, 20); /* the trailer's last 20 bytes never written */
    ck_assert_int_eq(kv_memfs_write(fs, p, b, len), 0);
    uint8_t junk[KV_SEG_HEADER_SIZE];
    memset(junk, 0x5a, sizeof junk);
    ck_assert_int_eq(kv_memfs_write(fs, np, junk, sizeof junk), 0); /* a header that never reached the disk */
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    ck_assert_uint_eq(rep.rotations_completed, 1);
    ck_assert_uint_eq(rep.torn_bytes, KV_MARK_SIZE + KV_SEG_HEADER_SIZE); /* the trailer, and the header */
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
    /* And the store reopens as it closed. */
    s = open_ok(&rep);
    ck_assert_uint_eq(rep.rotations_completed, 0);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
    free(b);
}
END_TEST

/* The same, but the damage reaches the last group's commit mark: the
 * group is not proven whole, and that is corruption, not a torn trailer. */
START_TEST(damaged_last_mark_before_a_newest_segment_without_header_is_refused)
{
    uint32_t n = clean_dir();
    char p[64], np[64], name[32];
    path_of(p, sizeof p, n - 1, ".seg");
    path_of(np, sizeof np, n, ".seg");
    uint8_t *b;
    size_t len;
    ck_assert_int_eq(kv_memfs_read(fs, p, &b, &len), 0);
    len -= KV_MARK_SIZE - 10; /* 10 bytes of the trailer written */
    b[len - 10 - KV_MARK_SIZE + 30] ^= 0x04; /* and a flipped bit in the last commit mark */
    ck_assert_int_eq(kv_memfs_write(fs, p, b, len), 0);
    uint8_t junk[KV_SEG_HEADER_SIZE];
    memset(junk, 0x5a, sizeof junk);
    ck_assert_int_eq(kv_memfs_write(fs, np, junk, sizeof junk), 0);
    snprintf(name, sizeof name, "%010u.seg", n - 1);
    expect_refusal(name, "");
    free(b);
}
END_TEST

/* ---- the newest segment after a crash ---- */

/* A newest segment as a kill -9 leaves it, built record by record: group 1
 * (keys a, b and a filler, ending with its commit mark exactly at 4096),
 * then group 2 at 4096: 24 puts of 512 bytes each (keys g00..g23, eight
 * to a page) and its commit mark. The model holds group 1 only; the
 * offsets are page aligned so that a page of group 2 can go missing whole. */
#define G2 4096u
static uint8_t *image;
static size_t image_len;

static void add(uint8_t type, uint64_t seq, const char *k, const char *v, size_t vlen)
{
    size_t n = kv_record_size(strlen(k), vlen);
    image = realloc(image, image_len + n);
    kv_record_encode(image + image_len, type, 0, seq, 0, 0, k, (uint32_t)strlen(k), v, (uint32_t)vlen);
    image_len += n;
}

static void add_mark(uint64_t seq, uint64_t start, uint32_t count)
{
    image = realloc(image, image_len + KV_MARK_SIZE);
    image_len += kv_mark_encode(image + image_len, KV_REC_COMMIT, seq, start, count);
}

static void two_groups(void)
{
    static char fill[4096];
    memset(fill, 'f', sizeof fill);
    image = malloc(KV_SEG_HEADER_SIZE);
    kv_seg_header h = {2, 1, 0, 1700000000000ull, 0, 0};
    kv_seg_header_encode_h(image, &h);
    image_len = KV_SEG_HEADER_SIZE;
    add(KV_REC_PUT, 1, "a", "one", 3);
    add(KV_REC_PUT, 2, "b", "two", 3);
    size_t filler = G2 - KV_MARK_SIZE - image_len - kv_record_size(1, 0);
    add(KV_REC_PUT, 3, "f", fill, filler);
    add_mark(3, KV_SEG_HEADER_SIZE, 3);
    ck_assert_uint_eq(image_len, G2);
    tu_model_put(&model, "a", 1, "one", 3);
    tu_model_put(&model, "b", 1, "two", 3);
    tu_model_put(&model, "f", 1, fill, filler);
    char k[8];
    for (int i = 0; i < 24; i++) {
        snprintf(k, sizeof k, "g%02d", i);
        add(KV_REC_PUT, 4 + (uint64_t)i, k, fill, 512 - kv_record_size(3, 0));
    }
    add_mark(27, G2, 24);
    ck_assert_int_eq(kv_memfs_io(fs)->mkdir(kv_memfs_io(fs)->ctx, DIR), 0);
}

static void install_image(void)
{
    ck_assert_int_eq(kv_memfs_write(fs, DIR "/0000000001.seg", image, image_len), 0);
    free(image);
    image = NULL;
}

START_TEST(unsynced_last_group_with_a_page_never_written_is_cut_whole)
{
    two_groups();
    memset(image + 2 * 4096, 0, 4096); /* the group's second page never reached the disk */
    uint8_t *orig = malloc(image_len);
    memcpy(orig, image, image_len);
    size_t len = image_len;
    install_image();
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    size_t saved = len;
    while (orig[saved - 1] == 0) saved--; /* zeros ending the file are unwritten space, not saved */
    ck_assert_uint_eq(rep.torn_offset, G2); /* the whole group, from its start */
    ck_assert_uint_eq(rep.torn_bytes, saved - G2);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
    uint8_t *t;
    size_t tl;
    ck_assert_int_eq(kv_memfs_read(fs, DIR "/0000000001.seg.4096.torn", &t, &tl), 0);
    ck_assert_uint_eq(tl, saved - G2);
    ck_assert(!memcmp(t, orig + G2, tl)); /* every byte of the group kept */
    free(t);
    free(orig);
}
END_TEST

START_TEST(flipped_bit_in_the_last_complete_group_is_refused)
{
    two_groups();
    image[2 * 4096 + 300] ^= 0x04; /* one bit in the same page, the group's mark intact */
    install_image();
    expect_refusal("0000000001.seg", "mid-log corruption");
}
END_TEST

START_TEST(zeroed_page_and_a_flipped_bit_in_the_last_group_are_refused)
{
    /* A page of zeros explains one bad region, not the flipped bit in
     * another: corruption. */
    two_groups();
    memset(image + 2 * 4096, 0, 4096);
    image[3 * 4096 + 100] ^= 0x01;
    install_image();
    expect_refusal("0000000001.seg", "mid-log corruption");
}
END_TEST

START_TEST(torn_last_group_after_the_last_mark_is_cut_and_kept)
{
    two_groups();
    size_t cut = image_len - KV_MARK_SIZE - 100; /* the mark and a record's end never written */
    image_len = cut;
    install_image();
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    /* The group's complete records before the torn one are kept. */
    ck_assert_uint_eq(rep.torn_offset, G2 + 23 * 512);
    ck_assert_uint_eq(rep.torn_bytes, cut - (G2 + 23 * 512));
    static char fill[512];
    memset(fill, 'f', sizeof fill);
    char k[8];
    for (int i = 0; i < 23; i++) {
        snprintf(k, sizeof k, "g%02d", i);
        tu_model_put(&model, k, 3, fill, 512 - kv_record_size(3, 0));
    }
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
}
END_TEST

/* ---- leftovers and upgrades ---- */

START_TEST(leftover_compaction_output_is_removed)
{
    clean_dir();
    char p[64];
    static const uint8_t junk[4096];
    ck_assert_int_eq(kv_memfs_write(fs, path_of(p, sizeof p, 2, ".seg.compact"), junk, sizeof junk), 0);
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    ck_assert_uint_eq(rep.compact_leftovers, 1);
    ck_assert(!kv_memfs_exists(fs, p));
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
}
END_TEST

START_TEST(version_1_directory_opens_and_continues_in_version_2)
{
    /* A version 1 segment, as an older kvd wrote it. */
    uint8_t *seg;
    size_t len;
    tu_segment_start(&seg, &len, 1);
    char k[16], v[16];
    for (int i = 1; i <= 5; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "v%d", i);
        tu_append_record(&seg, &len, KV_REC_PUT, (uint64_t)i, k, v);
        tu_model_put(&model, k, strlen(k), v, strlen(v));
    }
    ck_assert_int_eq(kv_memfs_io(fs)->mkdir(kv_memfs_io(fs)->ctx, DIR), 0);
    ck_assert_int_eq(kv_memfs_write(fs, DIR "/0000000001.seg", seg, len), 0);
    free(seg);
    kv_store *s = open_ok(NULL);
    tu_assert_store_equals(s, &model);
    char kk[32], vv[128];
    for (int i = 0; i < 80; i++) { /* past the segment size: sealed, then version 2 */
        snprintf(kk, sizeof kk, "n%03d", i);
        snprintf(vv, sizeof vv, "value-%090d", i);
        put(s, kk, vv);
    }
    kv_close(s);
    uint8_t *b;
    ck_assert_int_eq(kv_memfs_read(fs, DIR "/0000000001.seg", &b, &len), 0);
    ck_assert_uint_eq(kv_get_u16(b + 4), 1); /* still version 1, no trailer */
    kv_record r;
    ck_assert(kv_record_decode(b + len - KV_MARK_SIZE, KV_MARK_SIZE, &r) != KV_OK || r.type != KV_REC_SEAL);
    kvr_scan_result res;
    ck_assert_int_eq(kvr_scan_buffer(b, len, 1, NULL, NULL, NULL, NULL, &res), KV_OK);
    ck_assert_uint_eq(res.marks, 0); /* nothing an older build cannot read */
    ck_assert_uint_gt(res.records, 5);
    free(b);
    ck_assert_int_eq(kv_memfs_read(fs, DIR "/0000000002.seg", &b, &len), 0);
    kv_seg_header h;
    ck_assert_int_eq(kv_seg_header_parse(b, 2, &h), KV_OK);
    ck_assert_uint_eq(h.version, 2);
    ck_assert_uint_eq(h.prev_id, 1);
    free(b);
    s = open_ok(NULL);
    tu_assert_store_equals(s, &model);
    kv_close(s);
}
END_TEST

START_TEST(point_in_time_stops_before_a_missing_segment)
{
    uint32_t n = clean_dir();
    char p[64];
    remove_file(path_of(p, sizeof p, 2, ".seg"));
    remove_file(path_of(p, sizeof p, 2, ".hint"));
    kv_store *s = NULL;
    kvr_report rep;
    ck_assert_int_eq(tu_open_mem(fs, DIR, KV_FSYNC_ALWAYS, SEG, KVR_POINT_IN_TIME, &s, &rep), KV_OK);
    ck_assert_uint_eq(rep.discarded_segments, n - 2); /* 3..n set aside, nothing deleted */
    for (uint32_t id = 3; id <= n; id++) {
        char d[96];
        snprintf(d, sizeof d, "%s.discarded", path_of(p, sizeof p, id, ".seg"));
        ck_assert_msg(kv_memfs_exists(fs, d), "%s missing", d);
    }
    kvr_report_free(&rep);
    kv_close(s);
}
END_TEST

START_TEST(a_dry_run_decides_as_recovery_and_changes_nothing)
{
    /* A missing trailer before the empty newest segment (completed by a
     * real recovery), a leftover compaction output (removed by one), and
     * then a torn group in the newest segment (cut by one). */
    uint32_t n = clean_dir();
    char p[64];
    path_of(p, sizeof p, n - 1, ".seg");
    resize(p, size_of(p) - KV_MARK_SIZE);
    static const uint8_t junk[100];
    ck_assert_int_eq(kv_memfs_write(fs, path_of(p, sizeof p, 1, ".seg.compact"), junk, sizeof junk), 0);
    snap before, after;
    take(&before);
    for (int pass = 0; pass < 2; pass++) {
        kv_keydir *kd = kv_keydir_new();
        kvr_report rep;
        kv_status st = kvr_recover(kv_memfs_io(fs), DIR, pass ? KVR_POINT_IN_TIME : KVR_TOLERATE_TAIL,
                                   KVR_DRY_RUN | KVR_HINTS_READ | KVR_HINTS_WRITE, 0, kd, &rep);
        ck_assert_msg(st == KV_OK, "%s", rep.message);
        ck_assert_uint_eq(rep.rotations_completed, 1);
        ck_assert_uint_eq(rep.keys, model.n);
        kvr_report_free(&rep);
        kv_keydir_free(kd);
        take(&after);
        assert_same(&before, &after);
        drop(&after);
    }
    drop(&before);
    /* The real recovery then does what the dry run said. */
    kvr_report rep;
    kv_store *s = open_ok(&rep);
    ck_assert_uint_eq(rep.rotations_completed, 1);
    ck_assert_uint_eq(rep.compact_leftovers, 1);
    tu_assert_store_equals(s, &model);
    kvr_report_free(&rep);
    kv_close(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("integrity");
    TCase *tc = tcase_create("edges");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, deleted_sealed_segment_with_its_hint_is_a_missing_segment);
    tcase_add_test(tc, deleted_sealed_segment_keeping_its_hint_is_refused_and_the_hint_kept);
    tcase_add_test(tc, emptied_sealed_segment_is_refused);
    tcase_add_test(tc, sealed_segment_truncated_at_a_record_boundary_is_refused_and_its_hint_kept);
    tcase_add_test(tc, stale_hint_of_a_whole_segment_is_rejected_and_rewritten);
    tcase_add_test(tc, deleted_newest_segment_is_a_missing_segment);
    tcase_add_test(tc, missing_trailer_before_an_empty_newest_segment_is_written_again);
    tcase_add_test(tc, torn_trailer_before_an_empty_newest_segment_is_saved_and_written_again);
    tcase_add_test(tc, torn_trailer_before_a_newest_segment_without_header_is_written_again);
    tcase_add_test(tc, damaged_last_mark_before_a_newest_segment_without_header_is_refused);
    tcase_add_test(tc, unsynced_last_group_with_a_page_never_written_is_cut_whole);
    tcase_add_test(tc, flipped_bit_in_the_last_complete_group_is_refused);
    tcase_add_test(tc, zeroed_page_and_a_flipped_bit_in_the_last_group_are_refused);
    tcase_add_test(tc, torn_last_group_after_the_last_mark_is_cut_and_kept);
    tcase_add_test(tc, leftover_compaction_output_is_removed);
    tcase_add_test(tc, version_1_directory_opens_and_continues_in_version_2);
    tcase_add_test(tc, point_in_time_stops_before_a_missing_segment);
    tcase_add_test(tc, a_dry_run_decides_as_recovery_and_changes_nothing);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
