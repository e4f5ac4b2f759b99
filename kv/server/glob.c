/*
 * glob — glob matching through fnmatch(3) (glob.h).
 */
#include "glob.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

int kvd_glob_match(const uint8_t *pat, size_t pl, const uint8_t *s, size_t sl)
{
    char pbuf[512], sbuf[512];
    char *p = pl < sizeof pbuf ? pbuf : malloc(pl + 1);
    char *k = sl < sizeof sbuf ? sbuf : malloc(sl + 1);
    int r = 0;
    if (p && k) {
        memcpy(p, pat, pl);
        p[pl] = 0;
        memcpy(k, s, sl);
        k[sl] = 0;
        r = fnmatch(p, k, 0) == 0;
    }
    if (p != pbuf) free(p);
    if (k != sbuf) free(k);
    return r;
}
