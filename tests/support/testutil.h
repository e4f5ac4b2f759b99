/*
 * testutil — shared helpers of the Check suites: temporary directories,
 * a reference model of the key space, and builders for segment bytes.
 */
#ifndef KV_TESTUTIL_H
#define KV_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_io_sim.h"
#include "kv_record.h"
#include "kv_store.h"

/* Creates a fresh directory under $TMPDIR (or /tmp); returns a malloc'ed
 * path. tu_rmrf removes a tree and frees nothing. */
char *tu_tmpdir(void);
void tu_rmrf(const char *path);

/* A reference model: key -> value (binary-safe), linear lookup. */
typedef struct tu_model {
    size_t n, cap;
    uint8_t **keys;
    size_t *klens;
    uint8_t **vals;
    size_t *vlens;
} tu_model;

void tu_model_init(tu_model *m);
void tu_model_free(tu_model *m);
void tu_model_copy(tu_model *dst, const tu_model *src);
void tu_model_put(tu_model *m, const void *k, size_t kl, const void *v, size_t vl);
void tu_model_del(tu_model *m, const void *k, size_t kl);
/* Returns the index of key or -1. */
long tu_model_find(const tu_model *m, const void *k, size_t kl);

/* Asserts (ck_assert) that the store holds exactly the model: every model
 * key reads back its value, and the key count matches. */
void tu_assert_store_equals(kv_store *s, const tu_model *m);

/* Appends an encoded put/tombstone to a growing buffer (*buf, *len). */
void tu_append_record(uint8_t **buf, size_t *len, uint8_t type, uint64_t seq, const char *key, const char *val);
/* Starts a segment buffer with a valid header for `id`. */
void tu_segment_start(uint8_t **buf, size_t *len, uint32_t id);

/* Opens a store on a memfs with small defaults for tests. */
kv_status tu_open_mem(kv_memfs *fs, const char *dir, kv_fsync_policy pol, uint64_t seg_max, kvr_mode mode,
                      kv_store **out, kvr_report *rep);

/* Path helper: "dir/0000000001.seg" into a static-per-call buffer. */
void tu_seg_path(char *out, size_t cap, const char *dir, uint32_t id);

#endif
