/*
 * kv_mem — the allocation policy of kvd's programs, set once by each
 * main() (kvd, kvfsck, kvcompact).
 *
 * Owns: malloc's mmap threshold for the process.
 * Guarantees: a buffer of 1 MiB or more (a client's input or replies
 * under a pipeline, a hint file read whole, the key directory's bucket
 * array as it doubles, the log reader's window, the writer's group
 * buffer) gets a mapping of its own, and free() gives it back to the
 * system. glibc's default raises its threshold to the size of the
 * largest mapped block freed, up to 32 MiB, and from then on such
 * buffers come from a thread's heap and stay resident: RSS after loading
 * a million keys was 24% higher without this (tests/bench/bench-ab.sh).
 * Never: allocates, or changes anything but that threshold.
 */
#ifndef KV_MEM_H
#define KV_MEM_H

#include <malloc.h>

/* Sets the policy above (M_MMAP_THRESHOLD = 1 MiB). Call first in main(),
 * before any thread starts. */
static inline void kv_mem_policy(void)
{
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

#endif
