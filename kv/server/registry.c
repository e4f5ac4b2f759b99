/*
 * registry — every client, and the pub/sub channels and patterns
 * (registry.h). The tables are uthash hash tables (Debian's uthash-dev),
 * which iterate in insertion order: subscribers get a message in the
 * order they subscribed, as Redis's lists give it.
 */
#include "registry.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "glob.h"
#include "jobs.h"

/* A failed allocation inside uthash leaves the table as it was and the
 * element out; the caller sees it through reg_oom. */
#define HASH_NONFATAL_OOM 1
static __thread int reg_oom;
#define uthash_nonfatal_oom(elt) (reg_oom = 1)
#include <uthash.h>

/* One client on one channel or pattern (kvd_channel.subs, keyed by the
 * client pointer). */
typedef struct kvd_subscriber {
    UT_hash_handle hh;
    kvd_client *c;
} kvd_subscriber;

/* A channel or a pattern with at least one subscriber (keyed by name). */
typedef struct kvd_channel {
    UT_hash_handle hh;
    kvd_subscriber *subs;
    size_t len;
    uint8_t name[];
} kvd_channel;

/* One of a client's subscriptions (kvd_client.subs/psubs, keyed by the
 * channel pointer). */
typedef struct kvd_subref {
    UT_hash_handle hh;
    kvd_channel *ch;
} kvd_subref;

struct kvd_registry {
    pthread_mutex_t mu;
    kvd_client *head, *tail;  /* every registered client, oldest first */
    kvd_channel *tables[2];   /* REG_CHANNEL, REG_PATTERN */
};

kvd_registry *reg_new(void)
{
    kvd_registry *r = calloc(1, sizeof *r);
    if (r) pthread_mutex_init(&r->mu, NULL);
    return r;
}

void reg_free(kvd_registry *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void reg_add(kvd_registry *r, kvd_client *c)
{
    pthread_mutex_lock(&r->mu);
    c->reg_prev = r->tail;
    c->reg_next = NULL;
    if (r->tail)
        r->tail->reg_next = c;
    else
        r->head = c;
    r->tail = c;
    c->registered = 1;
    pthread_mutex_unlock(&r->mu);
}

static kvd_subref **subs_of(kvd_client *c, reg_kind kind)
{
    return kind == REG_CHANNEL ? &c->subs : &c->psubs;
}

static int *count_of(kvd_client *c, reg_kind kind)
{
    return kind == REG_CHANNEL ? &c->nsub : &c->npsub;
}

/* Drops c's subscription ref from channel ch (and ch when it was the
 * last). Lock held. */
static void do_drop(kvd_registry *r, kvd_client *c, reg_kind kind, kvd_subref *ref)
{
    kvd_channel *ch = ref->ch;
    kvd_subscriber *s = NULL;
    HASH_FIND_PTR(ch->subs, &c, s);
    if (s) {
        HASH_DEL(ch->subs, s);
        free(s);
    }
    if (!ch->subs) {
        HASH_DEL(r->tables[kind], ch);
        free(ch);
    }
    HASH_DEL(*subs_of(c, kind), ref);
    free(ref);
    (*count_of(c, kind))--;
}

void reg_remove(kvd_registry *r, kvd_client *c)
{
    if (!c->registered) return;
    pthread_mutex_lock(&r->mu);
    for (int k = 0; k < 2; k++) {
        kvd_subref *ref, *tmp;
        HASH_ITER(hh, *subs_of(c, (reg_kind)k), ref, tmp) do_drop(r, c, (reg_kind)k, ref);
    }
    if (c->reg_prev)
        c->reg_prev->reg_next = c->reg_next;
    else
        r->head = c->reg_next;
    if (c->reg_next)
        c->reg_next->reg_prev = c->reg_prev;
    else
        r->tail = c->reg_prev;
    c->reg_prev = c->reg_next = NULL;
    c->registered = 0;
    pthread_mutex_unlock(&r->mu);
}

int reg_set_name(kvd_registry *r, kvd_client *c, const uint8_t *p, size_t n)
{
    char *name = NULL;
    if (n) {
        name = malloc(n + 1);
        if (!name) return -1;
        memcpy(name, p, n);
        name[n] = 0;
    }
    pthread_mutex_lock(&r->mu);
    char *old = c->name;
    c->name = name;
    pthread_mutex_unlock(&r->mu);
    free(old);
    return 0;
}

/* The channel or pattern named p, created when `create`. Lock held. NULL
 * when absent (or out of memory). */
static kvd_channel *do_channel(kvd_registry *r, reg_kind kind, const uint8_t *p, size_t n, int create)
{
    kvd_channel *ch = NULL;
    HASH_FIND(hh, r->tables[kind], p, n, ch);
    if (ch || !create) return ch;
    ch = calloc(1, sizeof *ch + (n ? n : 1));
    if (!ch) return NULL;
    ch->len = n;
    memcpy(ch->name, p, n);
    reg_oom = 0;
    HASH_ADD_KEYPTR(hh, r->tables[kind], ch->name, ch->len, ch);
    if (reg_oom) {
        free(ch);
        return NULL;
    }
    return ch;
}

/* Adds c to ch and ch to c's set. Lock held. Returns 0 or -1 (out of
 * memory, nothing changed but an empty ch, which is removed). */
static int do_join(kvd_registry *r, kvd_client *c, reg_kind kind, kvd_channel *ch)
{
    kvd_subscriber *s = calloc(1, sizeof *s);
    kvd_subref *ref = calloc(1, sizeof *ref);
    if (s && ref) {
        s->c = c;
        ref->ch = ch;
        reg_oom = 0;
        HASH_ADD_PTR(ch->subs, c, s);
        if (!reg_oom) {
            HASH_ADD_PTR(*subs_of(c, kind), ch, ref);
            if (!reg_oom) {
                (*count_of(c, kind))++;
                return 0;
            }
            HASH_DEL(ch->subs, s);
        }
    }
    free(s);
    free(ref);
    if (!ch->subs) {
        HASH_DEL(r->tables[kind], ch);
        free(ch);
    }
    return -1;
}

int reg_subscribe(kvd_registry *r, kvd_client *c, reg_kind kind, const uint8_t *p, size_t n)
{
    int rc = -1;
    pthread_mutex_lock(&r->mu);
    kvd_channel *ch = do_channel(r, kind, p, n, 1);
    if (ch) {
        kvd_subref *ref = NULL;
        HASH_FIND_PTR(*subs_of(c, kind), &ch, ref);
        rc = ref ? 0 : do_join(r, c, kind, ch) == 0 ? 1 : -1;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int reg_unsubscribe(kvd_registry *r, kvd_client *c, reg_kind kind, const uint8_t *p, size_t n)
{
    int had = 0;
    pthread_mutex_lock(&r->mu);
    kvd_channel *ch = do_channel(r, kind, p, n, 0);
    kvd_subref *ref = NULL;
    if (ch) HASH_FIND_PTR(*subs_of(c, kind), &ch, ref);
    if (ref) {
        do_drop(r, c, kind, ref);
        had = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return had;
}

int reg_first(kvd_registry *r, kvd_client *c, reg_kind kind, uint8_t **p, size_t *n)
{
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    kvd_subref *ref = *subs_of(c, kind);
    if (ref) {
        *n = ref->ch->len;
        *p = malloc(*n ? *n : 1);
        rc = *p ? 1 : -1;
        if (*p) memcpy(*p, ref->ch->name, *n);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* ---- PUBLISH ---- */

/* The RESP2 message array for one channel subscriber, or one pattern's. */
static kvd_blob *message_blob(const kvd_channel *pat, const uint8_t *ch, size_t cl, const uint8_t *msg, size_t ml)
{
    sbuf b = {0};
    rp_array(&b, pat ? 4 : 3);
    if (pat) {
        rp_bulk_str(&b, "pmessage");
        rp_bulk(&b, pat->name, pat->len);
    } else {
        rp_bulk_str(&b, "message");
    }
    rp_bulk(&b, ch, cl);
    rp_bulk(&b, msg, ml);
    kvd_blob *blob = b.oom ? NULL : blob_new(b.p, b.len);
    sb_free(&b);
    return blob;
}

/* Posts blob to every subscriber of ch. Lock held. Returns how many. */
static long long do_post_all(kvd_channel *ch, kvd_blob *blob)
{
    long long n = 0;
    for (kvd_subscriber *s = ch->subs; s; s = s->hh.next)
        if (mail_post(s->c, MAIL_MESSAGE, blob) == 0) n++;
    return n;
}

long long reg_publish(kvd_registry *r, const uint8_t *ch, size_t cl, const uint8_t *msg, size_t ml)
{
    kvd_blob *plain = message_blob(NULL, ch, cl, msg, ml);
    if (!plain) return -1;
    long long n = 0;
    pthread_mutex_lock(&r->mu);
    kvd_channel *c = do_channel(r, REG_CHANNEL, ch, cl, 0);
    if (c) n += do_post_all(c, plain);
    for (kvd_channel *p = r->tables[REG_PATTERN]; p; p = p->hh.next) {
        if (!kvd_glob_match(p->name, p->len, ch, cl)) continue;
        kvd_blob *pm = message_blob(p, ch, cl, msg, ml);
        if (!pm) continue; /* out of memory: this pattern's clients miss it */
        n += do_post_all(p, pm);
        blob_put(pm);
    }
    pthread_mutex_unlock(&r->mu);
    blob_put(plain);
    return n;
}

/* ---- PUBSUB and INFO ---- */

void reg_channels(kvd_registry *r, const uint8_t *pat, size_t pl, sbuf *out)
{
    sbuf body = {0};
    long long n = 0;
    pthread_mutex_lock(&r->mu);
    for (kvd_channel *ch = r->tables[REG_CHANNEL]; ch; ch = ch->hh.next) {
        if (pat && !kvd_glob_match(pat, pl, ch->name, ch->len)) continue;
        rp_bulk(&body, ch->name, ch->len);
        n++;
    }
    pthread_mutex_unlock(&r->mu);
    rp_array(out, n);
    sb_add(out, body.p, body.len);
    if (body.oom) out->oom = 1;
    sb_free(&body);
}

long long reg_numsub(kvd_registry *r, const uint8_t *ch, size_t cl)
{
    pthread_mutex_lock(&r->mu);
    kvd_channel *c = do_channel(r, REG_CHANNEL, ch, cl, 0);
    long long n = c ? (long long)HASH_COUNT(c->subs) : 0;
    pthread_mutex_unlock(&r->mu);
    return n;
}

long long reg_numpat(kvd_registry *r)
{
    pthread_mutex_lock(&r->mu);
    long long n = (long long)HASH_COUNT(r->tables[REG_PATTERN]);
    pthread_mutex_unlock(&r->mu);
    return n;
}

void reg_counts(kvd_registry *r, long long *channels, long long *patterns)
{
    pthread_mutex_lock(&r->mu);
    *channels = (long long)HASH_COUNT(r->tables[REG_CHANNEL]);
    *patterns = (long long)HASH_COUNT(r->tables[REG_PATTERN]);
    pthread_mutex_unlock(&r->mu);
}

/* ---- CLIENT LIST, INFO and KILL ---- */

static reg_ctype client_type(const kvd_client *c)
{
    return c->nsub + c->npsub > 0 ? CTYPE_PUBSUB : CTYPE_NORMAL;
}

static int filter_match(const reg_filter *f, const kvd_client *c)
{
    if (f->skip == c) return 0;
    if (f->type != CTYPE_ANY && client_type(c) != f->type) return 0;
    if (f->addr && strcmp(f->addr, c->addr) != 0) return 0;
    if (f->laddr && strcmp(f->laddr, c->laddr) != 0) return 0;
    if (f->nids) {
        size_t i = 0;
        while (i < f->nids && f->ids[i] != c->id) i++;
        if (i == f->nids) return 0;
    }
    return 1;
}

/* One line in Redis 7.0's CLIENT LIST format (networking.c,
 * catClientInfoString), every field in Redis's order. Fields kvd has no
 * counterpart for (db, ssub, qbuf-free, argv-mem, multi-mem, rbs, rbp,
 * obl, oll, events, user, redir, resp) are fixed values; qbuf, omem and
 * tot-mem are kvd's own figures. Lock held. */
static void do_line(const kvd_client *c, long long now, sbuf *out)
{
    long long last = __atomic_load_n(&c->last_ms, __ATOMIC_RELAXED);
    const char *cmd = __atomic_load_n(&c->last_cmd, __ATOMIC_RELAXED);
    long long multi = __atomic_load_n(&c->pub_multi, __ATOMIC_RELAXED);
    uint64_t qbuf = __atomic_load_n(&c->pub_qbuf, __ATOMIC_RELAXED);
    uint64_t omem = __atomic_load_n(&c->pub_omem, __ATOMIC_RELAXED);
    char flags[8];
    size_t nf = 0;
    if (c->nsub + c->npsub > 0) flags[nf++] = 'P';
    if (multi >= 0) flags[nf++] = 'x';
    if (__atomic_load_n(&c->pub_blocked, __ATOMIC_RELAXED)) flags[nf++] = 'b';
    if (nf == 0) flags[nf++] = 'N';
    flags[nf] = 0;
    sb_printf(out,
              "id=%" PRIu64 " addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=0 sub=%d psub=%d "
              "ssub=0 multi=%lld qbuf=%" PRIu64 " qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 "
              "omem=%" PRIu64 " tot-mem=%" PRIu64 " events=r cmd=%s user=default redir=-1 resp=2\n",
              c->id, c->addr, c->laddr, c->fd, c->name ? c->name : "", (now - c->ctime) / 1000,
              last ? (now - last) / 1000 : (now - c->ctime) / 1000, flags, c->nsub, c->npsub, multi, qbuf, omem,
              (uint64_t)sizeof *c + qbuf + omem, cmd ? cmd : "NULL");
}

void reg_list(kvd_registry *r, const reg_filter *f, long long now, sbuf *out)
{
    pthread_mutex_lock(&r->mu);
    for (const kvd_client *c = r->head; c; c = c->reg_next)
        if (filter_match(f, c)) do_line(c, now, out);
    pthread_mutex_unlock(&r->mu);
}

void reg_info_line(kvd_registry *r, const kvd_client *c, long long now, sbuf *out)
{
    pthread_mutex_lock(&r->mu);
    do_line(c, now, out);
    pthread_mutex_unlock(&r->mu);
}

long long reg_kill(kvd_registry *r, const reg_filter *f, const kvd_client *caller, int *self)
{
    long long n = 0;
    *self = 0;
    pthread_mutex_lock(&r->mu);
    for (kvd_client *c = r->head; c; c = c->reg_next) {
        if (!filter_match(f, c)) continue;
        n++;
        if (c == caller)
            *self = 1;
        else
            mail_post(c, MAIL_KILL, NULL); /* out of memory: it stays */
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

void reg_resume_paused(kvd_registry *r)
{
    pthread_mutex_lock(&r->mu);
    for (kvd_client *c = r->head; c; c = c->reg_next)
        if (__atomic_load_n(&c->pub_blocked, __ATOMIC_SEQ_CST)) mail_post(c, MAIL_RESUME, NULL);
    pthread_mutex_unlock(&r->mu);
}
