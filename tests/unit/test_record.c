/* Record codec: round trips (empty values, binary keys with NUL, CR and
 * LF, maximum sizes), size limits, batches, segment headers and names. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kv_store.h"
#include "testutil.h"

static void roundtrip(uint8_t type, const void *key, uint32_t klen, const void *val, uint32_t vlen, uint64_t seq,
                      uint64_t expire, uint32_t flags)
{
    size_t n = kv_record_size(klen, vlen);
    uint8_t *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(kv_record_encode(buf, type, 0, seq, expire, flags, key, klen, val, vlen), n);
    kv_record r;
    ck_assert_int_eq(kv_record_decode(buf, n, &r), KV_OK);
    ck_assert_uint_eq(r.type, type);
    ck_assert_uint_eq(r.len, n);
    ck_assert_uint_eq(r.seq, seq);
    ck_assert_uint_eq(r.expire_ms, expire);
    ck_assert_uint_eq(r.flags, flags);
    ck_assert_uint_eq(r.klen, klen);
    ck_assert_uint_eq(r.vlen, vlen);
    ck_assert(klen == 0 || memcmp(r.key, key, klen) == 0);
    ck_assert(vlen == 0 || memcmp(r.val, val, vlen) == 0);
    /* Every shorter prefix asks for more bytes, never decodes. */
    ck_assert_int_eq(kv_record_decode(buf, n - 1, &r), KV_NEED_MORE);
    ck_assert_int_eq(kv_record_decode(buf, KV_REC_HEADER_SIZE - 1, &r), KV_NEED_MORE);
    free(buf);
}

START_TEST(roundtrip_empty_value_and_empty_key)
{
    roundtrip(KV_REC_PUT, "k", 1, "", 0, 1, 0, 0);
    roundtrip(KV_REC_PUT, "", 0, "v", 1, 2, 0, 0);
    roundtrip(KV_REC_TOMBSTONE, "k", 1, NULL, 0, 3, 0, 0);
}
END_TEST

START_TEST(roundtrip_binary_key_with_nul_cr_lf)
{
    const uint8_t key[] = {'a', 0, '\r', '\n', 0xff, 0, 'z'};
    const uint8_t val[] = {0, 0, '\r', '\n', 0x80, 0x00};
    roundtrip(KV_REC_PUT, key, sizeof key, val, sizeof val, UINT64_MAX - 1, 1893456000000ull, 0xdeadbeef);
}
END_TEST

START_TEST(roundtrip_maximum_sizes)
{
    uint8_t *key = malloc(KV_MAX_KEY_LEN), *val = malloc(KV_MAX_VALUE_LEN);
    ck_assert_ptr_nonnull(key);
    ck_assert_ptr_nonnull(val);
    for (size_t i = 0; i < KV_MAX_KEY_LEN; i++) key[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < KV_MAX_VALUE_LEN; i += 4096) val[i] = (uint8_t)i;
    val[KV_MAX_VALUE_LEN - 1] = 0x5a;
    ck_assert_int_eq(kv_record_check_sizes(KV_MAX_KEY_LEN, KV_MAX_VALUE_LEN), KV_OK);
    roundtrip(KV_REC_PUT, key, KV_MAX_KEY_LEN, val, KV_MAX_VALUE_LEN, 9, 0, 1);
    free(key);
    free(val);
}
END_TEST

START_TEST(over_limit_sizes_rejected)
{
    ck_assert_int_eq(kv_record_check_sizes(KV_MAX_KEY_LEN + 1, 0), KV_INVALID);
    ck_assert_int_eq(kv_record_check_sizes(0, (size_t)KV_MAX_VALUE_LEN + 1), KV_INVALID);
    ck_assert_str_eq(kv_strerror(KV_INVALID), "invalid argument or size over limit");
    kv_batch *b = kv_batch_new();
    static uint8_t big[KV_MAX_KEY_LEN + 1];
    ck_assert_int_eq(kv_batch_put(b, big, sizeof big, "v", 1, 0, 0), KV_INVALID);
    ck_assert_int_eq(kv_batch_delete(b, big, sizeof big), KV_INVALID);
    ck_assert_uint_eq(kv_batch_count(b), 0);
    kv_batch_free(b);

    /* A header that claims an over-limit key is corrupt, even with a
     * correct header checksum. */
    uint8_t rec[KV_REC_HEADER_SIZE + 1];
    kv_record_encode(rec, KV_REC_PUT, 0, 1, 0, 0, "k", 1, NULL, 0);
    kv_put_u32(rec + 16, KV_MAX_KEY_LEN + 1);
    kv_put_u32(rec + 8, KV_REC_HEADER_SIZE + KV_MAX_KEY_LEN + 1);
    kv_put_u32(rec + 4, kv_crc32(0, rec + 8, KV_REC_HEADER_SIZE - 8));
    kv_record r;
    ck_assert_int_eq(kv_record_decode_header(rec, &r), KV_CORRUPT);
}
END_TEST

START_TEST(header_fields_are_checked)
{
    uint8_t rec[KV_REC_HEADER_SIZE + 8];
    kv_record r;
    kv_record_encode(rec, KV_REC_PUT, 0, 5, 0, 0, "key", 3, "value", 5);
    ck_assert_int_eq(kv_record_decode(rec, sizeof rec, &r), KV_OK);
    /* len that disagrees with klen + vlen, re-checksummed: still corrupt */
    uint8_t bad[sizeof rec];
    memcpy(bad, rec, sizeof rec);
    kv_put_u32(bad + 8, KV_REC_HEADER_SIZE + 7);
    kv_put_u32(bad + 4, kv_crc32(0, bad + 8, KV_REC_HEADER_SIZE - 8));
    ck_assert_int_eq(kv_record_decode_header(bad, &r), KV_CORRUPT);
    /* unknown type */
    memcpy(bad, rec, sizeof rec);
    bad[12] = 9;
    kv_put_u32(bad + 4, kv_crc32(0, bad + 8, KV_REC_HEADER_SIZE - 8));
    ck_assert_int_eq(kv_record_decode_header(bad, &r), KV_CORRUPT);
    /* a tombstone with a value */
    memcpy(bad, rec, sizeof rec);
    bad[12] = KV_REC_TOMBSTONE;
    kv_put_u32(bad + 4, kv_crc32(0, bad + 8, KV_REC_HEADER_SIZE - 8));
    ck_assert_int_eq(kv_record_decode_header(bad, &r), KV_CORRUPT);
    /* value byte changed: header fine, record CRC fails */
    memcpy(bad, rec, sizeof rec);
    bad[KV_REC_HEADER_SIZE + 4] ^= 1;
    ck_assert_int_eq(kv_record_decode_header(bad, &r), KV_OK);
    ck_assert_int_eq(kv_record_decode(bad, sizeof bad, &r), KV_CORRUPT);
}
END_TEST

START_TEST(batch_roundtrip_and_structure)
{
    uint8_t buf[512];
    size_t pos = KV_REC_HEADER_SIZE;
    pos += kv_record_encode(buf + pos, KV_REC_PUT, KV_RF_IN_BATCH, 10, 0, 0, "a", 1, "1", 1);
    pos += kv_record_encode(buf + pos, KV_REC_TOMBSTONE, KV_RF_IN_BATCH, 11, 0, 0, "b", 1, NULL, 0);
    pos += kv_record_encode(buf + pos, KV_REC_PUT, KV_RF_IN_BATCH, 12, 0, 7, "c", 1, "333", 3);
    size_t len = kv_record_finish(buf, KV_REC_BATCH, 0, 10, 0, 3, 0, (uint32_t)(pos - KV_REC_HEADER_SIZE));
    ck_assert_uint_eq(len, pos);
    kv_record b, e;
    ck_assert_int_eq(kv_record_decode(buf, len, &b), KV_OK);
    ck_assert_uint_eq(b.type, KV_REC_BATCH);
    size_t it = 0;
    const char *keys = "abc";
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(kv_record_batch_next(&b, &it, &e), KV_OK);
        ck_assert_uint_eq(e.seq, 10u + (unsigned)i);
        ck_assert_int_eq(e.key[0], keys[i]);
    }
    ck_assert_int_eq(kv_record_batch_next(&b, &it, &e), KV_NOT_FOUND);
    ck_assert_uint_eq(e.flags, 7);

    /* A count that disagrees with the entries is corrupt. */
    kv_record_finish(buf, KV_REC_BATCH, 0, 10, 0, 2, 0, (uint32_t)(pos - KV_REC_HEADER_SIZE));
    ck_assert_int_eq(kv_record_decode(buf, len, &b), KV_CORRUPT);
    /* Non-consecutive sequence numbers are corrupt. */
    kv_record_finish(buf, KV_REC_BATCH, 0, 9, 0, 3, 0, (uint32_t)(pos - KV_REC_HEADER_SIZE));
    ck_assert_int_eq(kv_record_decode(buf, len, &b), KV_CORRUPT);
    /* An entry alone is not a top-level record: the in-batch flag is set. */
    kv_record_finish(buf, KV_REC_BATCH, 0, 10, 0, 3, 0, (uint32_t)(pos - KV_REC_HEADER_SIZE));
    ck_assert_int_eq(kv_record_decode(buf + KV_REC_HEADER_SIZE, len - KV_REC_HEADER_SIZE, &e), KV_OK);
    ck_assert_uint_eq(e.rflags, KV_RF_IN_BATCH);
    /* A batch may not nest a top-level record (rflags 0). */
    kv_record_encode(buf + KV_REC_HEADER_SIZE, KV_REC_PUT, 0, 10, 0, 0, "a", 1, "1", 1);
    kv_record_finish(buf, KV_REC_BATCH, 0, 10, 0, 3, 0, (uint32_t)(pos - KV_REC_HEADER_SIZE));
    ck_assert_int_eq(kv_record_decode(buf, len, &b), KV_CORRUPT);
}
END_TEST

START_TEST(segment_header_and_names)
{
    uint8_t h[KV_SEG_HEADER_SIZE];
    uint32_t id = 0;
    kv_seg_header_encode(h, 42, 1700000000000ull);
    ck_assert_int_eq(kv_seg_header_decode(h, 42, &id), KV_OK);
    ck_assert_uint_eq(id, 42);
    ck_assert_int_eq(kv_seg_header_decode(h, 43, &id), KV_CORRUPT);
    h[9] ^= 0x10;
    ck_assert_int_eq(kv_seg_header_decode(h, 0, &id), KV_CORRUPT);
    kv_seg_header_encode(h, 42, 1);
    kv_put_u16(h + 4, KV_FORMAT_VERSION + 1);
    kv_put_u32(h + 28, kv_crc32(0, h, 28));
    ck_assert_int_eq(kv_seg_header_decode(h, 42, &id), KV_VERSION);

    /* Version 2: the predecessor and its size; a predecessor that does
     * not come before the segment, or a size without an id, is corrupt. */
    kv_seg_header v2 = {2, 42, 0, 1700000000000ull, 41, 4096}, got;
    kv_seg_header_encode_h(h, &v2);
    ck_assert_int_eq(kv_seg_header_parse(h, 42, &got), KV_OK);
    ck_assert_uint_eq(got.version, 2);
    ck_assert_uint_eq(got.prev_id, 41);
    ck_assert_uint_eq(got.prev_end, 4096);
    ck_assert_uint_eq(got.created_ms, 1700000000000ull);
    v2.prev_id = 42;
    kv_seg_header_encode_h(h, &v2);
    ck_assert_int_eq(kv_seg_header_parse(h, 42, &got), KV_CORRUPT);
    v2.prev_id = 0; /* no predecessor, but a size */
    kv_seg_header_encode_h(h, &v2);
    ck_assert_int_eq(kv_seg_header_parse(h, 42, &got), KV_CORRUPT);

    char name[32];
    kv_seg_name(name, sizeof name, 7);
    ck_assert_str_eq(name, "0000000007.seg");
    ck_assert_int_eq(kv_seg_parse_name(name, &id), 1);
    ck_assert_uint_eq(id, 7);
    ck_assert_int_eq(kv_seg_parse_name("0000000007.seg.12.torn", &id), 0);
    ck_assert_int_eq(kv_seg_parse_name("0000000000.seg", &id), 0);
    ck_assert_int_eq(kv_seg_parse_name("00000000x7.seg", &id), 0);
    ck_assert_int_eq(kv_seg_parse_name("LOCK", &id), 0);
}
END_TEST

START_TEST(status_text_covers_errno_and_own_codes)
{
    ck_assert_str_eq(kv_strerror(KV_OK), "ok");
    ck_assert_str_eq(kv_strerror(KV_NOT_FOUND), "key not found");
    ck_assert_ptr_nonnull(strstr(kv_strerror(ENOSPC), "space"));
    ck_assert_ptr_nonnull(strstr(kv_strerror(KV_FAILSTOP), "refuses writes"));
    ck_assert_str_eq(kv_strerror(-77), "unknown error");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("record");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, roundtrip_empty_value_and_empty_key);
    tcase_add_test(tc, roundtrip_binary_key_with_nul_cr_lf);
    tcase_add_test(tc, roundtrip_maximum_sizes);
    tcase_add_test(tc, over_limit_sizes_rejected);
    tcase_add_test(tc, header_fields_are_checked);
    tcase_add_test(tc, batch_roundtrip_and_structure);
    tcase_add_test(tc, segment_header_and_names);
    tcase_add_test(tc, status_text_covers_errno_and_own_codes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
