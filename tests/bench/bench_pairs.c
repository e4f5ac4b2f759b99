/*
 * bench_pairs — a load generator for synchronous replication: C
 * connections on 127.0.0.1:PORT, each sending one request at a time (a
 * SET, or with --wait a SET and "WAIT 1 0" in one pipeline, the closest
 * Redis comes to a write its replica holds) and timing it until every
 * reply is back. Prints requests per second and p50/p99/max latency in
 * microseconds, one line, for tests/bench/bench-replication.sh.
 *
 *   kv_bench_pairs PORT CONNECTIONS REQUESTS [--wait] [--keys N] [--size BYTES]
 *
 * Replies are read as RESP simple lines (+OK, :1, -ERR ...); an error
 * reply is counted and printed at the end (the run still completes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct worker {
    int port, wait, nreq, keys, size, seed;
    uint64_t *lat_us; /* nreq entries */
    int done, errors;
    char last_error[128];
} worker;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Reads n reply lines (each "...\r\n"); notes an error reply. Returns 0
 * or -1 when the connection ends. */
static int read_replies(int fd, int n, worker *w)
{
    char buf[4096];
    int lines = 0;
    size_t have = 0;
    while (lines < n) {
        ssize_t r = recv(fd, buf + have, sizeof buf - have - 1, 0);
        if (r <= 0) return -1;
        have += (size_t)r;
        buf[have] = 0;
        char *p = buf;
        char *nl;
        while (lines < n && (nl = strstr(p, "\r\n"))) {
            if (*p == '-') {
                w->errors++;
                snprintf(w->last_error, sizeof w->last_error, "%.*s", (int)(nl - p), p);
            }
            lines++;
            p = nl + 2;
        }
        have -= (size_t)(p - buf);
        memmove(buf, p, have);
    }
    return 0;
}

static void *run(void *arg)
{
    worker *w = arg;
    int fd = dial(w->port);
    if (fd < 0) return NULL;
    char *val = malloc((size_t)w->size + 1);
    memset(val, 'v', (size_t)w->size);
    val[w->size] = 0;
    size_t cap = (size_t)w->size + 256;
    char *req = malloc(cap);
    unsigned s = (unsigned)w->seed;
    for (int i = 0; i < w->nreq; i++) {
        char key[32];
        int kl = snprintf(key, sizeof key, "key:%012d", (int)(rand_r(&s) % (unsigned)w->keys));
        int n = snprintf(req, cap, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", kl, key, w->size, val);
        if (w->wait) n += snprintf(req + n, cap - (size_t)n, "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$1\r\n0\r\n");
        uint64_t t0 = now_us();
        if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n || read_replies(fd, w->wait ? 2 : 1, w) < 0) break;
        w->lat_us[w->done++] = now_us() - t0;
    }
    free(val);
    free(req);
    close(fd);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s PORT CONNECTIONS REQUESTS [--wait] [--keys N] [--size BYTES]\n", argv[0]);
        return 2;
    }
    int port = (int)strtol(argv[1], NULL, 10), conns = (int)strtol(argv[2], NULL, 10);
    long total = strtol(argv[3], NULL, 10);
    int wait = 0, keys = 100000, size = 100;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--wait")) wait = 1;
        else if (!strcmp(argv[i], "--keys") && i + 1 < argc) keys = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = (int)strtol(argv[++i], NULL, 10);
    }
    if (port <= 0 || conns <= 0 || total <= 0 || keys <= 0 || size <= 0) return 2;
    worker *ws = calloc((size_t)conns, sizeof *ws);
    pthread_t *th = calloc((size_t)conns, sizeof *th);
    for (int i = 0; i < conns; i++) {
        ws[i] = (worker){port, wait, (int)(total / conns), keys, size, i + 1, NULL, 0, 0, ""};
        ws[i].lat_us = calloc((size_t)ws[i].nreq + 1, sizeof(uint64_t));
    }
    uint64_t t0 = now_us();
    for (int i = 0; i < conns; i++) pthread_create(&th[i], NULL, run, &ws[i]);
    for (int i = 0; i < conns; i++) pthread_join(th[i], NULL);
    uint64_t el = now_us() - t0;
    size_t n = 0;
    int errors = 0;
    const char *last = "";
    for (int i = 0; i < conns; i++) {
        n += (size_t)ws[i].done;
        errors += ws[i].errors;
        if (ws[i].errors) last = ws[i].last_error;
    }
    uint64_t *all = calloc(n + 1, sizeof *all);
    size_t k = 0;
    for (int i = 0; i < conns; i++)
        for (int j = 0; j < ws[i].done; j++) all[k++] = ws[i].lat_us[j];
    qsort(all, n, sizeof *all, cmp_u64);
    printf("requests=%zu rps=%.0f p50_us=%llu p99_us=%llu max_us=%llu errors=%d%s%s\n", n,
           el ? (double)n * 1e6 / (double)el : 0.0, n ? (unsigned long long)all[n / 2] : 0ULL,
           n ? (unsigned long long)all[n * 99 / 100] : 0ULL, n ? (unsigned long long)all[n - 1] : 0ULL, errors,
           errors ? " last_error=" : "", last);
    return n == (size_t)(total / conns) * (size_t)conns ? 0 : 1;
}
