#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/kvtest-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(d);
    return strdup(d);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void tu_rmrf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_model_init(tu_model *m)
{
    memset(m, 0, sizeof *m);
}

void tu_model_free(tu_model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->vals[i]);
    }
    free(m->keys);
    free(m->klens);
    free(m->vals);
    free(m->vlens);
    memset(m, 0, sizeof *m);
}

long tu_model_find(const tu_model *m, const void *k, size_t kl)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->klens[i] == kl && memcmp(m->keys[i], k, kl) == 0) return (long)i;
    return -1;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(d);
    if (n) memcpy(d, p, n);
    return d;
}

void tu_model_put(tu_model *m, const void *k, size_t kl, const void *v, size_t vl)
{
    long i = tu_model_find(m, k, kl);
    if (i >= 0) {
        free(m->vals[i]);
        m->vals[i] = dup_bytes(v, vl);
        m->vlens[i] = vl;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->keys = realloc(m->keys, m->cap * sizeof *m->keys);
        m->klens = realloc(m->klens, m->cap * sizeof *m->klens);
        m->vals = realloc(m->vals, m->cap * sizeof *m->vals);
        m->vlens = realloc(m->vlens, m->cap * sizeof *m->vlens);
    }
    m->keys[m->n] = dup_bytes(k, kl);
    m->klens[m->n] = kl;
    m->vals[m->n] = dup_bytes(v, vl);
    m->vlens[m->n] = vl;
    m->n++;
}

void tu_model_del(tu_model *m, const void *k, size_t kl)
{
    long i = tu_model_find(m, k, kl);
    if (i < 0) return;
    free(m->keys[i]);
    free(m->vals[i]);
    m->n--;
    m->keys[i] = m->keys[m->n];
    m->klens[i] = m->klens[m->n];
    m->vals[i] = m->vals[m->n];
    m->vlens[i] = m->vlens[m->n];
}

void tu_model_copy(tu_model *dst, const tu_model *src)
{
    tu_model_init(dst);
    for (size_t i = 0; i < src->n; i++) tu_model_put(dst, src->keys[i], src->klens[i], src->vals[i], src->vlens[i]);
}

void tu_assert_store_equals(kv_store *s, const tu_model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        kv_value v;
        kv_status st = kv_get(s, m->keys[i], m->klens[i], &v);
        ck_assert_msg(st == KV_OK, "key %.*s: %s", (int)m->klens[i], (char *)m->keys[i], kv_strerror(st));
        ck_assert_uint_eq(v.len, m->vlens[i]);
        ck_assert(memcmp(v.data, m->vals[i], v.len) == 0);
        kv_value_free(&v);
    }
    kv_stats stt;
    kv_get_stats(s, &stt);
    ck_assert_uint_eq(stt.keys, m->n);
}

void tu_segment_start(uint8_t **buf, size_t *len, uint32_t id)
{
    *buf = malloc(KV_SEG_HEADER_SIZE);
    ck_assert_ptr_nonnull(*buf);
    kv_seg_header_encode(*buf, id, 1700000000000ull);
    *len = KV_SEG_HEADER_SIZE;
}

void tu_append_record(uint8_t **buf, size_t *len, uint8_t type, uint64_t seq, const char *key, const char *val)
{
    size_t kl = strlen(key), vl = val ? strlen(val) : 0;
    size_t n = kv_record_size(kl, vl);
    *buf = realloc(*buf, *len + n);
    ck_assert_ptr_nonnull(*buf);
    kv_record_encode(*buf + *len, type, 0, seq, 0, 0, key, (uint32_t)kl, val, (uint32_t)vl);
    *len += n;
}

kv_status tu_open_mem(kv_memfs *fs, const char *dir, kv_fsync_policy pol, uint64_t seg_max, kvr_mode mode,
                      kv_store **out, kvr_report *rep)
{
    kv_options o;
    kv_options_init(&o);
    o.io = kv_memfs_io(fs);
    o.fsync = pol;
    if (seg_max) o.segment_max_bytes = seg_max;
    o.recovery_mode = mode;
    return kv_open(dir, &o, out, rep);
}

void tu_seg_path(char *out, size_t cap, const char *dir, uint32_t id)
{
    char name[32];
    kv_seg_name(name, sizeof name, id);
    snprintf(out, cap, "%s/%s", dir, name);
}
