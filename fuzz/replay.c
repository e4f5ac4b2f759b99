/*
 * replay — runs a fuzz target's LLVMFuzzerTestOneInput over saved inputs,
 * with the normal compiler and no fuzzing engine. CTest uses it to replay
 * the seed corpus and every past crash (fuzz/CMakeLists.txt).
 *
 *   fuzz_log_reader_replay PATH...
 *
 * Each PATH is a file (run as one input) or a directory (every regular
 * file directly inside it is run, in name order; names starting with "."
 * are skipped). A violated invariant aborts inside the target, so a
 * failing input fails the run; its path was printed just before.
 * Exit status: 0 when every input ran, 1 if a path cannot be read.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Largest input read, in bytes; a target skips what it considers too big. */
#define REPLAY_MAX_INPUT (64u << 20)

static int run_file(const char *path, unsigned long *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    int err = buf == NULL;
    while (!err) {
        if (len == cap) {
            if (cap >= REPLAY_MAX_INPUT) {
                fprintf(stderr, "replay: %s is larger than %u bytes\n", path, REPLAY_MAX_INPUT);
                err = 1;
                break;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                err = 1;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
                err = 1;
            }
            break;
        }
    }
    fclose(f);
    if (err) {
        if (!buf) fprintf(stderr, "replay: out of memory reading %s\n", path);
        free(buf);
        return -1;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    (*count)++;
    return 0;
}

static int skip_hidden(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

static int run_dir(const char *dir, unsigned long *count)
{
    struct dirent **names;
    int n = scandir(dir, &names, skip_hidden, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        size_t plen = strlen(dir) + strlen(names[i]->d_name) + 2;
        char *path = malloc(plen);
        struct stat st;
        if (!path) {
            rc = -1;
        } else {
            snprintf(path, plen, "%s/%s", dir, names[i]->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && run_file(path, count) < 0) rc = -1;
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned long count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            rc = 1;
        } else if (S_ISDIR(st.st_mode)) {
            if (run_dir(argv[i], &count) < 0) rc = 1;
        } else if (run_file(argv[i], &count) < 0) {
            rc = 1;
        }
    }
    printf("replay: %lu inputs run\n", count);
    return rc;
}
