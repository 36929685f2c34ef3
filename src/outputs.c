/* outputs.c: output paths and their collisions (see outputs.h). */
#define _GNU_SOURCE
#include "bnmpi/outputs.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void outputs_signal_checkpoint(const char *metrics, char *out, size_t n) {
    size_t len = strlen(metrics);
    int h5 = len > 3 && strcmp(metrics + len - 3, ".h5") == 0;
    snprintf(out, n, "%.*s.ckpt.h5", (int)(h5 ? len - 3 : len), metrics);
}

/* The file path names, with every symlink and ./.. resolved: the path
 * itself when it exists; else, after following the symlinks it is (which may
 * dangle), its resolved directory and its last part. */
static void canonical(const char *path, char out[PATH_MAX + 256]) {
    char buf[PATH_MAX], p[PATH_MAX], target[PATH_MAX];
    if (realpath(path, buf)) {
        snprintf(out, PATH_MAX + 256, "%s", buf);
        return;
    }
    snprintf(p, sizeof p, "%s", path);
    struct stat st;
    for (int hops = 0; hops < 40 && lstat(p, &st) == 0 && S_ISLNK(st.st_mode); hops++) {
        ssize_t n = readlink(p, target, sizeof target - 1);
        if (n <= 0) break;
        target[n] = '\0';
        if (target[0] == '/') snprintf(p, sizeof p, "%s", target);
        else {
            char dir[PATH_MAX], joined[2 * PATH_MAX + 2];
            snprintf(dir, sizeof dir, "%s", p);
            size_t len = (size_t)snprintf(joined, sizeof joined, "%s/%s", dirname(dir), target);
            if (len >= sizeof p) break;
            memcpy(p, joined, len + 1);
        }
    }
    char dir[PATH_MAX], base[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", p);
    snprintf(base, sizeof base, "%s", p);
    const char *d = dirname(dir), *b = basename(base);
    if (realpath(d, buf)) snprintf(out, PATH_MAX + 256, "%s/%s", buf, b);
    else snprintf(out, PATH_MAX + 256, "%s", p);
}

/* Whether writing a (and a.tmp) and b (and b.tmp) touches one file twice. */
static int collide(const char *a, const char *b) {
    char ca[PATH_MAX + 256], cb[PATH_MAX + 256], t[PATH_MAX + 264];
    canonical(a, ca);
    canonical(b, cb);
    if (strcmp(ca, cb) == 0) return 1;
    snprintf(t, sizeof t, "%s.tmp", ca);
    if (strcmp(t, cb) == 0) return 1;
    snprintf(t, sizeof t, "%s.tmp", cb);
    return strcmp(t, ca) == 0;
}

int outputs_check_distinct(const char *metrics, const char *checkpoint, const char *resume, bn_err *e) {
    if (resume[0] && collide(metrics, resume))
        return bn_fail(e, "--metrics %s and --resume %s are one file; the metrics would overwrite the checkpoint "
                          "(pass --metrics with another path)",
                       metrics, resume);
    if (collide(metrics, checkpoint))
        return bn_fail(e, "--metrics %s and the checkpoint %s are one file, so each write would destroy the other; "
                          "give them different paths",
                       metrics, checkpoint);
    return BN_OK;
}
