/* The worked example of docs/format.md, byte for byte: the encoder must
 * produce exactly the bytes the document shows, the decoder must give back
 * every field, and every single-bit flip in the header after the two CRCs
 * must be caught by hcrc (the "flipped length bit" argument). If the format
 * changes, this suite fails until the document's hex dumps are updated. */
#include <string.h>

#include "kv_record.h"
#include "kvr_reader.h"
#include "testutil.h"

/* docs/format.md, "The segment header": segment 1, created 1700000000000. */
static const uint8_t doc_seg_header[KV_SEG_HEADER_SIZE] = {
    0x4b, 0x56, 0x44, 0x53, 0x01, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0x5a, 0x30, 0x02,
};

/* docs/format.md, "The put record": "user:1" = "alice", seq 7. */
static const uint8_t doc_record[] = {
    0xfb, 0xcd, 0xfc, 0xdb, 0x16, 0x67, 0xb5, 0x33, 0x37, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x06, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x75, 0x73, 0x65, 0x72,
    0x3a, 0x31, 0x61, 0x6c, 0x69, 0x63, 0x65,
};

/* docs/format.md, "Worked example, format version 2": segment 2, after
 * segment 1 of 4181 bytes, created at 1700000000 s; then the same put, its
 * commit mark and the trailer. */
static const uint8_t doc_v2_header[KV_SEG_HEADER_SIZE] = {
    0x4b, 0x56, 0x44, 0x53, 0x02, 0x00, 0x20, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x55, 0x10, 0x00, 0x00, 0x00, 0xf1, 0x53, 0x65, 0x3c, 0xfe, 0xf6, 0xf8,
};
static const uint8_t doc_commit[KV_MARK_SIZE] = {
    0x1e, 0xc3, 0x45, 0x07, 0xb1, 0x99, 0xf6, 0x0b, 0x2c, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
};
static const uint8_t doc_trailer[KV_MARK_SIZE] = {
    0x1c, 0xb2, 0xfb, 0x31, 0xf3, 0xfa, 0x44, 0xf5, 0x2c, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x83, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
};

#define DOC_CREATED_MS 1700000000000ull
#define DOC_KEY "user:1"
#define DOC_VAL "alice"

START_TEST(segment_header_matches_doc)
{
    uint8_t h[KV_SEG_HEADER_SIZE];
    kv_seg_header_encode(h, 1, DOC_CREATED_MS);
    ck_assert_mem_eq(h, doc_seg_header, sizeof doc_seg_header);
    ck_assert_uint_eq(kv_get_u32(h + 28), 0x02305a93u);
    ck_assert_uint_eq(kv_get_u32(h + 28), kv_crc32(0, h, 28));
}
END_TEST

START_TEST(segment_header_decodes)
{
    uint32_t id = 0;
    ck_assert_int_eq(kv_seg_header_decode(doc_seg_header, 1, &id), KV_OK);
    ck_assert_uint_eq(id, 1);
    ck_assert_mem_eq(doc_seg_header, KV_SEG_MAGIC, 4);
    ck_assert_uint_eq(kv_get_u16(doc_seg_header + 4), 1); /* the version 1 example */
    ck_assert_uint_eq(kv_get_u16(doc_seg_header + 6), KV_SEG_HEADER_SIZE);
    ck_assert_uint_eq(kv_get_u64(doc_seg_header + 16), DOC_CREATED_MS);
    /* The id in the header must match the file name's. */
    ck_assert_int_eq(kv_seg_header_decode(doc_seg_header, 2, &id), KV_CORRUPT);
}
END_TEST

START_TEST(put_record_matches_doc)
{
    ck_assert_uint_eq(sizeof doc_record, kv_record_size(6, 5));
    uint8_t rec[sizeof doc_record];
    size_t n = kv_record_encode(rec, KV_REC_PUT, 0, 7, 0, 0, DOC_KEY, 6, DOC_VAL, 5);
    ck_assert_uint_eq(n, sizeof doc_record);
    ck_assert_mem_eq(rec, doc_record, sizeof doc_record);
    /* The CRC values the document names, and what each covers. */
    ck_assert_uint_eq(kv_get_u32(rec), 0xdbfccdfbu);
    ck_assert_uint_eq(kv_get_u32(rec + 4), 0x33b56716u);
    ck_assert_uint_eq(kv_get_u32(rec + 4), kv_crc32(0, rec + 8, KV_REC_HEADER_SIZE - 8));
    ck_assert_uint_eq(kv_get_u32(rec), kv_crc32(0, rec + 4, n - 4));
}
END_TEST

START_TEST(put_record_decodes_every_field)
{
    kv_record r;
    memset(&r, 0xee, sizeof r);
    ck_assert_int_eq(kv_record_decode_header(doc_record, &r), KV_OK);
    ck_assert_uint_eq(r.len, 55);
    ck_assert_uint_eq(r.type, KV_REC_PUT);
    ck_assert_uint_eq(r.rflags, 0);
    ck_assert_uint_eq(r.klen, 6);
    ck_assert_uint_eq(r.vlen, 5);
    ck_assert_uint_eq(r.seq, 7);
    ck_assert_uint_eq(r.expire_ms, 0);
    ck_assert_uint_eq(r.flags, 0);

    memset(&r, 0xee, sizeof r);
    ck_assert_int_eq(kv_record_decode(doc_record, sizeof doc_record, &r), KV_OK);
    ck_assert_uint_eq(r.len, sizeof doc_record);
    ck_assert_uint_eq(r.type, KV_REC_PUT);
    ck_assert_uint_eq(r.rflags, 0);
    ck_assert_uint_eq(r.seq, 7);
    ck_assert_uint_eq(r.expire_ms, 0);
    ck_assert_uint_eq(r.flags, 0);
    ck_assert_uint_eq(r.klen, 6);
    ck_assert_uint_eq(r.vlen, 5);
    ck_assert_ptr_eq(r.key, doc_record + KV_REC_HEADER_SIZE);
    ck_assert_ptr_eq(r.val, doc_record + KV_REC_HEADER_SIZE + 6);
    ck_assert_mem_eq(r.key, DOC_KEY, 6);
    ck_assert_mem_eq(r.val, DOC_VAL, 5);
}
END_TEST

/* The example as the only record of segment 1: 87 bytes, record at 32. */
START_TEST(example_segment_layout)
{
    uint8_t seg[KV_SEG_HEADER_SIZE + sizeof doc_record];
    memcpy(seg, doc_seg_header, KV_SEG_HEADER_SIZE);
    memcpy(seg + KV_SEG_HEADER_SIZE, doc_record, sizeof doc_record);
    ck_assert_uint_eq(sizeof seg, 87);
    kv_record r;
    ck_assert_int_eq(kv_record_decode(seg + KV_SEG_HEADER_SIZE, sizeof seg - KV_SEG_HEADER_SIZE, &r), KV_OK);
    char name[16];
    kv_seg_name(name, sizeof name, 1);
    ck_assert_str_eq(name, "0000000001.seg");
}
END_TEST

/* Every one of the 288 bits of bytes [8, 44) (len, type, rflags, reserved,
 * klen, vlen, seq, expire, flags) is covered by hcrc: flipping any one of
 * them makes the header corrupt, so no flipped length is ever trusted. */
START_TEST(every_header_bit_flip_is_corrupt)
{
    uint8_t rec[sizeof doc_record];
    kv_record r;
    for (unsigned byte = 8; byte < KV_REC_HEADER_SIZE; byte++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            memcpy(rec, doc_record, sizeof rec);
            rec[byte] ^= (uint8_t)(1u << bit);
            ck_assert_msg(kv_record_decode_header(rec, &r) == KV_CORRUPT, "flip of byte %u bit %u not detected",
                          byte, bit);
            /* With the whole record, or with all but its last byte (what a
             * torn tail looks like), it is corruption, never need-more. */
            ck_assert_int_eq(kv_record_decode(rec, sizeof rec, &r), KV_CORRUPT);
            ck_assert_int_eq(kv_record_decode(rec, sizeof rec - 1, &r), KV_CORRUPT);
        }
    }
}
END_TEST

/* A flip in hcrc itself also fails the header check. */
START_TEST(hcrc_bit_flip_is_corrupt)
{
    uint8_t rec[sizeof doc_record];
    kv_record r;
    for (unsigned byte = 4; byte < 8; byte++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            memcpy(rec, doc_record, sizeof rec);
            rec[byte] ^= (uint8_t)(1u << bit);
            ck_assert_int_eq(kv_record_decode_header(rec, &r), KV_CORRUPT);
        }
    }
}
END_TEST

/* A flip in crc or in the key/value leaves the header, and so its length,
 * valid; the record CRC catches it. */
START_TEST(body_bit_flip_keeps_header_trusted)
{
    uint8_t rec[sizeof doc_record];
    kv_record r;
    for (unsigned byte = 0; byte < sizeof rec; byte++) {
        if (byte == 4) byte = KV_REC_HEADER_SIZE; /* skip hcrc and the covered header */
        for (unsigned bit = 0; bit < 8; bit++) {
            memcpy(rec, doc_record, sizeof rec);
            rec[byte] ^= (uint8_t)(1u << bit);
            ck_assert_int_eq(kv_record_decode_header(rec, &r), KV_OK);
            ck_assert_uint_eq(r.len, sizeof doc_record);
            ck_assert_int_eq(kv_record_decode(rec, sizeof rec, &r), KV_CORRUPT);
        }
    }
}
END_TEST

/* A valid header with the record cut short is "need more": the shape of a
 * record running past end of file. */
START_TEST(v2_header_matches_doc)
{
    uint8_t h[KV_SEG_HEADER_SIZE];
    kv_seg_header in = {2, 2, 0, DOC_CREATED_MS, 1, 4181};
    kv_seg_header_encode_h(h, &in);
    ck_assert_mem_eq(h, doc_v2_header, sizeof doc_v2_header);
    ck_assert_uint_eq(kv_get_u32(h + 28), 0xf8f6fe3cu);
    kv_seg_header out;
    ck_assert_int_eq(kv_seg_header_parse(doc_v2_header, 2, &out), KV_OK);
    ck_assert_uint_eq(out.version, 2);
    ck_assert_uint_eq(out.prev_id, 1);
    ck_assert_uint_eq(out.prev_end, 4181);
    ck_assert_uint_eq(out.created_ms, DOC_CREATED_MS);
    ck_assert_uint_eq(out.replaces, 0);
}
END_TEST

START_TEST(marks_match_doc)
{
    uint8_t m[KV_MARK_SIZE];
    ck_assert_uint_eq(kv_mark_encode(m, KV_REC_COMMIT, 7, 32, 1), KV_MARK_SIZE);
    ck_assert_mem_eq(m, doc_commit, KV_MARK_SIZE);
    ck_assert_uint_eq(kv_get_u32(m), 0x0745c31eu);
    ck_assert_uint_eq(kv_get_u32(m + 4), 0x0bf699b1u);
    kv_mark_encode(m, KV_REC_SEAL, 7, 131, 1);
    ck_assert_mem_eq(m, doc_trailer, KV_MARK_SIZE);
    ck_assert_uint_eq(kv_get_u32(m), 0x31fbb21cu);
    ck_assert_uint_eq(kv_get_u32(m + 4), 0xf544faf3u);
    kv_record r;
    ck_assert_int_eq(kv_record_decode(doc_trailer, sizeof doc_trailer, &r), KV_OK);
    ck_assert(kv_record_is_mark(&r));
    ck_assert_uint_eq(r.expire_ms, 131);
    /* A mark is never an entry of a batch, and carries no key or value. */
    uint8_t bad[KV_MARK_SIZE];
    memcpy(bad, doc_commit, sizeof bad);
    bad[13] = KV_RF_IN_BATCH;
    kv_put_u32(bad + 4, kv_crc32(0, bad + 8, 36));
    ck_assert_int_eq(kv_record_decode_header(bad, &r), KV_CORRUPT);
}
END_TEST

/* The whole version 2 example: 175 bytes that read back as one record,
 * two marks, sealed; and every single-bit flip anywhere in it is a
 * problem the reader reports (none passes as a valid segment). */
START_TEST(v2_example_segment_reads_back_and_every_flip_is_seen)
{
    uint8_t seg[175];
    memcpy(seg, doc_v2_header, 32);
    memcpy(seg + 32, doc_record, sizeof doc_record);
    memcpy(seg + 87, doc_commit, 44);
    memcpy(seg + 131, doc_trailer, 44);
    kvr_scan_result res;
    ck_assert_int_eq(kvr_scan_buffer(seg, sizeof seg, 2, NULL, NULL, NULL, NULL, &res), KV_OK);
    ck_assert_uint_eq(res.records, 1);
    ck_assert_uint_eq(res.marks, 2);
    ck_assert_uint_eq(res.problems, 0);
    ck_assert(res.sealed);
    ck_assert_uint_eq(res.seal_off, 131);
    ck_assert_uint_eq(res.mark_end, 175);
    ck_assert_uint_eq(res.group_start, 32);
    for (size_t bit = 0; bit < sizeof seg * 8; bit++) {
        seg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        kv_status st = kvr_scan_buffer(seg, sizeof seg, 2, NULL, NULL, NULL, NULL, &res);
        ck_assert_msg(st == KV_VERSION || res.problems > 0 || !res.sealed, "flip of bit %zu unseen", bit);
        seg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}
END_TEST

START_TEST(truncated_example_needs_more)
{
    kv_record r;
    for (size_t n = 0; n < sizeof doc_record; n++)
        ck_assert_int_eq(kv_record_decode(doc_record, n, &r), KV_NEED_MORE);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("format_doc");
    TCase *tc = tcase_create("worked_example");
    tcase_add_test(tc, segment_header_matches_doc);
    tcase_add_test(tc, segment_header_decodes);
    tcase_add_test(tc, put_record_matches_doc);
    tcase_add_test(tc, put_record_decodes_every_field);
    tcase_add_test(tc, example_segment_layout);
    tcase_add_test(tc, every_header_bit_flip_is_corrupt);
    tcase_add_test(tc, hcrc_bit_flip_is_corrupt);
    tcase_add_test(tc, body_bit_flip_keeps_header_trusted);
    tcase_add_test(tc, truncated_example_needs_more);
    tcase_add_test(tc, v2_header_matches_doc);
    tcase_add_test(tc, marks_match_doc);
    tcase_add_test(tc, v2_example_segment_reads_back_and_every_flip_is_seen);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
