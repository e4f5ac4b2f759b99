/*
 * The parts of kvr_recover.h that are about names and reports rather
 * than the recovery itself: the modes' names, and the report's text and
 * memory. Apart from kvr_recover.c so that file holds the policy alone.
 */
#include "kvr_recover.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *kvr_mode_name(kvr_mode m)
{
    switch (m) {
    case KVR_TOLERATE_TAIL: return "tolerate-tail";
    case KVR_ABSOLUTE: return "absolute";
    case KVR_POINT_IN_TIME: return "point-in-time";
    case KVR_SKIP_CORRUPT: return "skip-corrupt";
    }
    return "unknown";
}

kv_status kvr_mode_parse(const char *s, kvr_mode *m)
{
    for (int i = KVR_TOLERATE_TAIL; i <= KVR_SKIP_CORRUPT; i++)
        if (!strcmp(s, kvr_mode_name((kvr_mode)i))) {
            *m = (kvr_mode)i;
            return KV_OK;
        }
    return KV_INVALID;
}

void kvr_report_free(kvr_report *rep)
{
    free(rep->found);
    rep->found = NULL;
    rep->nfound = 0;
    free(rep->segs);
    rep->segs = NULL;
    rep->nsegs = 0;
}

int kvr_report_format(const kvr_report *rep, char *buf, size_t cap)
{
    return snprintf(buf, cap,
                    "recovery (%s): %u segments, %" PRIu64 " records (%" PRIu64 " entries, %" PRIu64
                    " batches, %" PRIu64 " tombstones, %" PRIu64 " expired), %" PRIu64 " keys, %" PRIu64
                    " log bytes, %" PRIu64 " live bytes, %u problems, %" PRIu64 " torn bytes cut, %" PRIu64
                    " unwritten bytes cut, %" PRIu64 " bytes skipped, %u segments discarded, %u loaded from "
                    "hint files (%u rejected, %u written), %.1f ms",
                    kvr_mode_name(rep->mode), rep->segments, rep->records, rep->entries, rep->batches,
                    rep->tombstones, rep->expired, rep->keys, rep->log_bytes, rep->live_bytes, rep->problems,
                    rep->torn_bytes, rep->unwritten_bytes, rep->skipped_bytes, rep->discarded_segments,
                    rep->hints_used, rep->hints_rejected, rep->hints_written, rep->elapsed_us / 1000.0);
}
