/*
 * make_hint_seeds — writes the seed corpus of fuzz_hint: hint files made
 * by the project's own builder (kvr_hint_build, recovery/kvr_hint.h) from the
 * target's fixed segments (fuzz/hint_fixture.h), so the seeds follow the
 * format and describe exactly the segments the target runs them against.
 * A tool, not a test: run it by hand when the format changes.
 *
 *   fuzz_make_hint_seeds DIR        (e.g. fuzz/corpus/hint)
 *
 * The input layout (a hint file, or 0xA6/0xA7/0xA8 + a hint file whose
 * CRC the target recomputes, for one of the three segment 1 variants) is
 * the one described at the top of fuzz_hint.c. The output is the same on
 * every run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hint_fixture.h"
#include "kvr_hint.h"

#define REPAIR_MARKER 0xA6u

static int save(const char *dir, const char *name, int marker, const uint8_t *p, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f != NULL;
    if (ok && marker >= 0) ok = fputc(marker, f) != EOF;
    if (ok && len) ok = fwrite(p, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        fprintf(stderr, "make_hint_seeds: cannot write %s\n", path);
        return 1;
    }
    printf("%s (%zu bytes)\n", path, len + (marker >= 0));
    return 0;
}

static void reseal(uint8_t *p, size_t len)
{
    kv_put_u32(p + len - 4, kv_crc32(0, p, len - 4));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int rc = 0;
    uint8_t *hint[HF_NVARIANTS];
    size_t len[HF_NVARIANTS];
    for (int v = 0; v < HF_NVARIANTS; v++) {
        uint8_t seg[HF_SEG_CAP];
        size_t n = hf_segment1((enum hf_variant)v, seg);
        kv_status st = kvr_hint_build(seg, n, 1, &hint[v], &len[v]);
        if (st != KV_OK) {
            fprintf(stderr, "make_hint_seeds: kvr_hint_build: %s\n", kv_strerror(st));
            return 1;
        }
    }

    /* The builder's hints: used by recovery, same store as a scan. */
    rc |= save(dir, "builder_full", -1, hint[HF_SEG_FULL], len[HF_SEG_FULL]);
    rc |= save(dir, "repair_builder_full", REPAIR_MARKER + HF_SEG_FULL, hint[HF_SEG_FULL], len[HF_SEG_FULL]);
    rc |= save(dir, "repair_builder_batch_last", REPAIR_MARKER + HF_SEG_BATCH_LAST, hint[HF_SEG_BATCH_LAST],
               len[HF_SEG_BATCH_LAST]);
    rc |= save(dir, "repair_builder_empty_segment", REPAIR_MARKER + HF_SEG_EMPTY, hint[HF_SEG_EMPTY],
               len[HF_SEG_EMPTY]);

    /* Stale: a valid hint of a shorter segment (the full one without its
     * last record), against the full segment. */
    rc |= save(dir, "stale_shorter_segment", -1, hint[HF_SEG_BATCH_LAST], len[HF_SEG_BATCH_LAST]);

    /* A version this build does not read, with a valid CRC. */
    uint8_t *p = malloc(len[HF_SEG_FULL]);
    if (!p) return 1;
    size_t n = len[HF_SEG_FULL];
    memcpy(p, hint[HF_SEG_FULL], n);
    kv_put_u16(p + 4, KVH_VERSION + 1);
    reseal(p, n);
    rc |= save(dir, "future_version", -1, p, n);

    /* Lying hints that recovery accepts (structure and staleness check
     * out): the first entry ("b") with another sequence number, or with
     * the offset and length of the record before it (a put of "a"); and a
     * hint without its first entry. The reads they lie about fail. */
    const size_t first = KVH_HEADER_SIZE;
    memcpy(p, hint[HF_SEG_FULL], n);
    kv_put_u64(p + first + 24, kv_get_u64(p + first + 24) + 1);
    reseal(p, n);
    rc |= save(dir, "repair_lying_seq", REPAIR_MARKER + HF_SEG_FULL, p, n);

    memcpy(p, hint[HF_SEG_FULL], n);
    kv_put_u64(p + first + 8, KV_SEG_HEADER_SIZE);
    kv_put_u32(p + first + 16, (uint32_t)kv_record_size(1, 1));
    reseal(p, n);
    rc |= save(dir, "repair_lying_offset", REPAIR_MARKER + HF_SEG_FULL, p, n);

    size_t drop = KVH_ENTRY_SIZE + kv_get_u32(hint[HF_SEG_FULL] + first + 4);
    memcpy(p, hint[HF_SEG_FULL], first);
    memcpy(p + first, hint[HF_SEG_FULL] + first + drop, n - first - drop);
    kv_put_u64(p + 24, kv_get_u64(p + 24) - 1);
    reseal(p, n - drop);
    rc |= save(dir, "repair_missing_entry", REPAIR_MARKER + HF_SEG_FULL, p, n - drop);

    /* Cut short: the header and part of the first entry. */
    rc |= save(dir, "truncated", -1, hint[HF_SEG_FULL], KVH_HEADER_SIZE + 20);

    free(p);
    for (int v = 0; v < HF_NVARIANTS; v++) free(hint[v]);
    return rc;
}
