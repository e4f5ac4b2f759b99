/*
 * kv_batch — write batches: puts and deletes gathered by one thread and
 * handed to the writer as one atomic write (kv_store.h, "writes").
 *
 * Owns: a batch's op array and its arena of key and value bytes.
 * Guarantees: a batch never holds an entry the log could not take (key,
 * value and whole-batch limits are checked on add, KV_MAX_BATCH_LEN
 * counted in encoded bytes), so the writer can encode it without checks.
 * Never: touches a store; a batch is not thread-safe (one builder).
 * Locking: none.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store_int.h"

kv_batch *kv_batch_new(void)
{
    return calloc(1, sizeof(kv_batch));
}

void kv_batch_free(kv_batch *b)
{
    if (!b) return;
    free(b->ops);
    free(b->data);
    free(b);
}

void kv_batch_clear(kv_batch *b)
{
    b->nops = 0;
    b->data_len = 0;
    b->enc_bytes = 0;
}

size_t kv_batch_count(const kv_batch *b)
{
    return b->nops;
}

static kv_status batch_add(kv_batch *b, uint8_t type, const void *key, size_t klen, const void *val, size_t vlen,
                           uint64_t expire_ms, uint32_t flags)
{
    if (kv_record_check_sizes(klen, vlen) != KV_OK) return KV_INVALID;
    uint64_t enc = kv_record_size(klen, vlen);
    if (b->enc_bytes + enc > KV_MAX_BATCH_LEN) return KV_INVALID;
    if (b->nops == b->cap_ops) {
        size_t nc = b->cap_ops ? b->cap_ops * 2 : 8;
        batch_op *no = realloc(b->ops, nc * sizeof *no);
        if (!no) return ENOMEM;
        b->ops = no;
        b->cap_ops = nc;
    }
    if (b->data_len + klen + vlen > b->data_cap) {
        size_t nc = b->data_cap ? b->data_cap : 256;
        while (nc < b->data_len + klen + vlen) nc *= 2;
        uint8_t *nd = realloc(b->data, nc);
        if (!nd) return ENOMEM;
        b->data = nd;
        b->data_cap = nc;
    }
    batch_op *op = &b->ops[b->nops++];
    op->type = type;
    op->klen = (uint32_t)klen;
    op->vlen = (uint32_t)vlen;
    op->data_off = b->data_len;
    op->expire_ms = expire_ms;
    op->flags = flags;
    if (klen) memcpy(b->data + b->data_len, key, klen);
    if (vlen) memcpy(b->data + b->data_len + klen, val, vlen);
    b->data_len += klen + vlen;
    b->enc_bytes += enc;
    return KV_OK;
}

kv_status kv_batch_put(kv_batch *b, const void *key, size_t klen, const void *val, size_t vlen,
                       uint64_t expire_ms, uint32_t flags)
{
    return batch_add(b, KV_REC_PUT, key, klen, val, vlen, expire_ms, flags);
}

kv_status kv_batch_delete(kv_batch *b, const void *key, size_t klen)
{
    return batch_add(b, KV_REC_TOMBSTONE, key, klen, NULL, 0, 0, 0);
}
