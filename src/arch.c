/* arch.c: parsing and describing the hidden layers (see arch.h). */
#include "bnmpi/arch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A whole decimal number from p (no sign), up to *end; -1 if none or too large. */
static long number(const char *p, const char **end) {
    if (*p < '0' || *p > '9') return -1;
    errno = 0;
    char *e;
    long v = strtol(p, &e, 10);
    *end = e;
    return errno ? -1 : v;
}

/* One token, given the shape before it (a->layer[a->n - 1] or the input). */
static int parse_token(arch_spec *a, const char *tok, int pos, bn_err *e) {
    const arch_layer *prev = a->n ? &a->layer[a->n - 1] : NULL;
    const int h = prev ? prev->h : ARCH_INPUT_SIDE, w = prev ? prev->w : ARCH_INPUT_SIDE, c = prev ? prev->c : 1;
    const int flat = prev && prev->kind == ARCH_DENSE;
    if (a->n == ARCH_MAX_TOKENS) return bn_fail(e, "--arch: at most %d layers; '%s' is layer %d", ARCH_MAX_TOKENS, tok, pos);
    arch_layer *l = &a->layer[a->n];
    memset(l, 0, sizeof *l);
    const char *end = tok;
    if (strcmp(tok, "pool") == 0) {
        if (flat) return bn_fail(e, "--arch: pool (layer %d) after a dense layer; pooling needs an image", pos);
        if (h < 2 || w < 2)
            return bn_fail(e, "--arch: pool (layer %d) on a %dx%d map; 2x2 pooling needs at least 2x2", pos, h, w);
        *l = (arch_layer){ARCH_POOL, 0, 0, h / 2, w / 2, c};
    } else if (strncmp(tok, "conv", 4) == 0) {
        if (flat) return bn_fail(e, "--arch: %s (layer %d) after a dense layer; convolutions come first", tok, pos);
        long ch = number(tok + 4, &end), k = 3;
        if (ch >= 0 && *end == 'k') k = number(end + 1, &end);
        if (ch < 1 || ch > ARCH_MAX_CHANNELS || *end != '\0')
            return bn_fail(e, "--arch: '%s' (layer %d): expected convC or convCkK with C from 1 to %d channels", tok,
                           pos, ARCH_MAX_CHANNELS);
        if (k < 1 || k > 7 || k % 2 == 0)
            return bn_fail(e, "--arch: '%s' (layer %d): expected an odd kernel size K from 1 to 7", tok, pos);
        *l = (arch_layer){ARCH_CONV, (int)ch, (int)k, h, w, (int)ch};
    } else if (strncmp(tok, "dense", 5) == 0) {
        long n = number(tok + 5, &end);
        if (n < 1 || n > ARCH_MAX_UNITS || *end != '\0')
            return bn_fail(e, "--arch: '%s' (layer %d): expected denseN with N from 1 to %d", tok, pos,
                           ARCH_MAX_UNITS);
        *l = (arch_layer){ARCH_DENSE, (int)n, 0, 1, 1, (int)n};
    } else {
        return bn_fail(e, "--arch: '%s' (layer %d) is not a layer; expected convC, convCkK, pool or denseN", tok, pos);
    }
    if (l->kind != ARCH_POOL && ++a->n_linear > ARCH_MAX_LINEAR)
        return bn_fail(e, "--arch: at most %d conv and dense layers; '%s' is one more", ARCH_MAX_LINEAR, tok);
    a->convnet |= l->kind != ARCH_DENSE;
    a->n++;
    return BN_OK;
}

int arch_parse(arch_spec *a, const char *text, const char *hidden, bn_err *e) {
    memset(a, 0, sizeof *a);
    char buf[512];
    if (text[0]) {
        if (strlen(text) >= sizeof buf) return bn_fail(e, "--arch: longer than %zu characters", sizeof buf - 1);
        snprintf(buf, sizeof buf, "%s", text);
        int pos = 1;
        for (char *p = buf;; pos++) {
            char *comma = strchr(p, ',');
            if (comma) *comma = '\0';
            if (!*p) return bn_fail(e, "--arch: empty layer %d in '%s'", pos, text);
            if (parse_token(a, p, pos, e) != BN_OK) return BN_ERR;
            if (!comma) break;
            p = comma + 1;
        }
        return BN_OK;
    }
    /* --hidden W1,W2,...: dense layers */
    const char *p = hidden;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > ARCH_MAX_UNITS || (*end != ',' && *end != '\0'))
            return bn_fail(e, "--hidden: expected comma-separated widths from 1 to %d, got '%s'", ARCH_MAX_UNITS,
                           hidden);
        if (a->n == ARCH_MAX_LINEAR)
            return bn_fail(e, "--hidden: at most %d hidden layers, got '%s'", ARCH_MAX_LINEAR, hidden);
        a->layer[a->n++] = (arch_layer){ARCH_DENSE, (int)v, 0, 1, 1, (int)v};
        a->n_linear++;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && *p == '\0') return bn_fail(e, "--hidden: trailing comma in '%s'", hidden);
    }
    if (a->n == 0) return bn_fail(e, "--hidden: expected at least one width, got ''");
    return BN_OK;
}

void arch_describe(const arch_spec *a, char *out, size_t n) {
    size_t used = 0;
    out[0] = '\0';
    if (!a->convnet) { /* the MLP as it always read: 784-256-10 */
        used += (size_t)snprintf(out, n, "%d", ARCH_INPUT_SIDE * ARCH_INPUT_SIDE);
        for (int i = 0; i < a->n && used < n; i++) used += (size_t)snprintf(out + used, n - used, "-%d", a->layer[i].units);
        if (used < n) snprintf(out + used, n - used, "-%d", ARCH_OUTPUT);
        return;
    }
    used += (size_t)snprintf(out, n, "input 28x28x1");
    for (int i = 0; i < a->n && used < n; i++) {
        const arch_layer *l = &a->layer[i];
        if (l->kind == ARCH_CONV)
            used += (size_t)snprintf(out + used, n - used, ", conv%dx%d %dx%dx%d", l->k, l->k, l->h, l->w, l->c);
        else if (l->kind == ARCH_POOL)
            used += (size_t)snprintf(out + used, n - used, ", pool %dx%dx%d", l->h, l->w, l->c);
        else
            used += (size_t)snprintf(out + used, n - used, ", dense %d", l->units);
    }
    if (used < n) snprintf(out + used, n - used, ", dense %d", ARCH_OUTPUT);
}

void arch_file_tag(const arch_spec *a, const char *text, const char *hidden, char *out, size_t n) {
    const char *src = a->convnet || text[0] ? text : hidden;
    const char sep = a->convnet || text[0] ? '-' : 'x';
    snprintf(out, n, "%s%s", a->convnet || text[0] ? "" : "h", src);
    for (char *p = out; *p; p++)
        if (*p == ',') *p = sep;
}
