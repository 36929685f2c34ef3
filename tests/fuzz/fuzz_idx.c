/* fuzz_idx.c: libFuzzer harness for the IDX reader (src/idx.c).
 *
 * Each input is written to a memfd and read through /proc/self/fd/N, as a
 * file on disk would be:
 *   1. as is (a gzip input is detected by content, so .gz seeds go through
 *      zlib's inflate and its error paths);
 *   2. gzip-compressed here as one member, and as two members split in the
 *      middle, so every header/data case is also read through the gzip path.
 * Each variant is read with expect_ndim 3 (images) and 1 (labels) by
 * idx_read_header, idx_read and idx_read_into.
 *
 * Besides ASan/UBSan/LSan, the harness aborts (a finding) when:
 *   - an error message is empty, spans lines, or does not start with the path
 *     (idx.h: "Each error message starts with the path");
 *   - for plain input and the two compressed variants, the outcome disagrees
 *     with a reference validator written from idx.h (accepted vs rejected,
 *     dims, data bytes);
 *   - an accepted file's sha256 is not that of its uncompressed bytes;
 *   - idx_read, idx_read_header and idx_read_into disagree, or idx_read_into
 *     accepts a buffer of the wrong size;
 *   - idx_read_header gives a dimension < 1 (one over INT_MAX wrapped);
 *   - bn_fatal is called (the fatal handler installed here aborts).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "bnmpi/common.h"
#include "bnmpi/idx.h"

#define FAIL(...)                                                                   \
    do {                                                                            \
        fprintf(stderr, "fuzz_idx: FINDING: " __VA_ARGS__);                        \
        fputc('\n', stderr);                                                        \
        abort();                                                                    \
    } while (0)

#define BIG_CLAIM ((uint64_t)64 << 20)

static int fd_plain = -1, fd_gz = -1;
static char path_plain[64], path_gz[64];

/* src/idx.c asks zlib for a 1 MB buffer (READ_CHUNK); zlib then allocates
 * 3 MB per open, and ASan's shadow poisoning of those chunks at every open
 * made 80% of the run time (7 ms an input). This gzbuffer, which idx.o binds
 * to ahead of libz's, caps the request at 16 KB: only how zlib refills its
 * buffer changes, not what idx.c sees. FUZZ_IDX_FULL_GZBUFFER=1 passes the
 * request through unchanged. */
int gzbuffer(gzFile file, unsigned size)
{
    static int (*real)(gzFile, unsigned);
    static int full = -1;
    if (!real) real = (int (*)(gzFile, unsigned))dlsym(RTLD_NEXT, "gzbuffer");
    if (full < 0) full = getenv("FUZZ_IDX_FULL_GZBUFFER") && getenv("FUZZ_IDX_FULL_GZBUFFER")[0] == '1';
    return real(file, full || size < (16u << 10) ? size : 16u << 10);
}

static void fatal_abort(const char *msg)
{
    fprintf(stderr, "fuzz_idx: FINDING: bn_fatal: %s\n", msg);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bn_set_fatal(fatal_abort);
    fd_plain = memfd_create("fuzz-idx", 0);
    fd_gz = memfd_create("fuzz-idx-gz", 0);
    if (fd_plain < 0 || fd_gz < 0) {
        perror("memfd_create");
        exit(1);
    }
    snprintf(path_plain, sizeof path_plain, "/proc/self/fd/%d", fd_plain);
    snprintf(path_gz, sizeof path_gz, "/proc/self/fd/%d", fd_gz);
    return 0;
}

static void put_file(int fd, const uint8_t *data, size_t n)
{
    if (ftruncate(fd, 0) != 0) {
        perror("ftruncate");
        exit(1);
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, data + done, n - done, (off_t)done);
        if (w <= 0) {
            perror("pwrite");
            exit(1);
        }
        done += (size_t)w;
    }
}

/* Appends one gzip member holding data[0..n) to out (capacity cap); returns bytes written. */
static size_t gzip_member(const uint8_t *data, size_t n, uint8_t *out, size_t cap)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    s.next_in = (Bytef *)data;
    s.avail_in = (uInt)n;
    s.next_out = out;
    s.avail_out = (uInt)cap;
    if (deflate(&s, Z_FINISH) != Z_STREAM_END) abort();
    size_t len = cap - s.avail_out;
    deflateEnd(&s);
    return len;
}

static void sha256_hex(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (!m || EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(m, a, na) != 1 ||
        (nb && EVP_DigestUpdate(m, b, nb) != 1) || EVP_DigestFinal_ex(m, d, &len) != 1)
        abort();
    EVP_MD_CTX_free(m);
    for (unsigned i = 0; i < len; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* What idx.h promises for the uncompressed bytes data[0..n). */
typedef struct {
    int header_ok, ok;
    uint32_t dims[3];
    size_t hdr_len, data_len;
} expectation;

static expectation reference(const uint8_t *data, size_t n, int ndim)
{
    expectation x = {0, 0, {1, 1, 1}, 4 + 4 * (size_t)ndim, 0};
    if (n < x.hdr_len) return x;
    if (data[0] != 0 || data[1] != 0 || data[2] != 0x08 || data[3] != ndim) return x;
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        x.dims[i] = be32(data + 4 + 4 * i);
        if (x.dims[i] == 0) return x;
        total *= x.dims[i];
        if (total > ((uint64_t)1 << 31)) return x;
    }
    for (int i = 0; i < ndim; i++) /* idx_array holds count, rows and cols as int */
        if (x.dims[i] > 0x7fffffffu) return x;
    x.header_ok = 1;
    x.data_len = (size_t)total;
    if (n - x.hdr_len != x.data_len) return x;
    if (ndim == 1)
        for (size_t i = 0; i < x.data_len; i++)
            if (data[x.hdr_len + i] > 9) return x;
    x.ok = 1;
    return x;
}

static void check_msg(const char *what, const char *path, const bn_err *e)
{
    size_t len = strnlen(e->msg, sizeof e->msg);
    if (len == 0 || len == sizeof e->msg) FAIL("%s(%s): empty or unterminated error message", what, path);
    if (strchr(e->msg, '\n') || strchr(e->msg, '\r'))
        FAIL("%s(%s): error message spans lines: \"%s\"", what, path, e->msg);
    if (strncmp(e->msg, path, strlen(path)) != 0 || e->msg[strlen(path)] != ':')
        FAIL("%s(%s): error message does not start with the path: \"%s\"", what, path, e->msg);
}

/* Reads path with expect_ndim; `ref` is the expected outcome, or NULL when the
 * uncompressed bytes are unknown (an input that is itself gzip). */
static void read_and_check(const char *path, int ndim, const expectation *ref, const uint8_t *plain)
{
    idx_array h, a;
    bn_err e;
    memset(&e, 0, sizeof e);
    int rc_h = idx_read_header(path, ndim, &h, &e);
    if (rc_h != BN_OK) check_msg("idx_read_header", path, &e);
    else if (h.data != NULL) FAIL("idx_read_header(%s): returned data", path);
    if (ref && (rc_h == BN_OK) != ref->header_ok)
        FAIL("idx_read_header(%s, ndim %d): %s, the reference says %s", path, ndim,
             rc_h == BN_OK ? "accepted" : e.msg, ref->header_ok ? "valid" : "invalid");
    if (rc_h == BN_OK) {
        if (h.count < 1 || h.rows < 1 || h.cols < 1)
            FAIL("idx_read_header(%s): non-positive dims %dx%dx%d (a dimension over INT_MAX)", path, h.count,
                 h.rows, h.cols);
        if (ndim == 1 && (h.rows != 1 || h.cols != 1))
            FAIL("idx_read_header(%s): labels with rows %d cols %d", path, h.rows, h.cols);
        if (ref && ((uint32_t)h.count != ref->dims[0] || (uint32_t)h.rows != ref->dims[1] ||
                    (uint32_t)h.cols != ref->dims[2]))
            FAIL("idx_read_header(%s): dims %dx%dx%d, the header says %ux%ux%u", path, h.count, h.rows,
                 h.cols, ref->dims[0], ref->dims[1], ref->dims[2]);
        /* A header may claim up to 2 GiB (IDX_MAX_DATA_BYTES), which idx_read
         * callocs before reading: by design, but ASan poisons such a chunk at
         * ~0.5 s a GiB. Beyond BIG_CLAIM only the header is read; the data
         * path is the one of a smaller claim cut short. */
        if ((uint64_t)h.count * (uint64_t)h.rows * (uint64_t)h.cols > BIG_CLAIM) {
            if (ref && ref->ok) FAIL("%s: the reference accepts a file larger than -max_len", path);
            return;
        }
    }

    memset(&e, 0, sizeof e);
    int rc = idx_read(path, ndim, &a, &e);
    if (rc != BN_OK) check_msg("idx_read", path, &e);
    if (ref && (rc == BN_OK) != ref->ok)
        FAIL("idx_read(%s, ndim %d): %s, the reference says %s", path, ndim, rc == BN_OK ? "accepted" : e.msg,
             ref->ok ? "valid" : "invalid");
    if (rc != BN_OK) {
        idx_free(&h);
        return;
    }

    if (rc_h != BN_OK) FAIL("%s: idx_read accepted what idx_read_header rejected", path);
    if (a.count != h.count || a.rows != h.rows || a.cols != h.cols)
        FAIL("%s: idx_read dims %dx%dx%d, idx_read_header %dx%dx%d", path, a.count, a.rows, a.cols,
             h.count, h.rows, h.cols);
    size_t bytes = (size_t)a.count * (size_t)a.rows * (size_t)a.cols;
    if (ndim == 1)
        for (size_t i = 0; i < bytes; i++)
            if (a.data[i] > 9) FAIL("%s: accepted label %u at %zu", path, a.data[i], i);
    if (ref && memcmp(a.data, plain + ref->hdr_len, bytes) != 0) FAIL("%s: data differ from the file's", path);

    /* The hash covers the uncompressed file: the header rebuilt from the dims, then the data. */
    uint8_t hdr[16] = {0, 0, 0x08, (uint8_t)ndim};
    uint32_t dims[3] = {(uint32_t)a.count, (uint32_t)a.rows, (uint32_t)a.cols};
    for (int i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++) hdr[4 + 4 * i + k] = (uint8_t)(dims[i] >> (24 - 8 * k));
    char hex[65];
    sha256_hex(hdr, 4 + 4 * (size_t)ndim, a.data, bytes, hex);
    if (strcmp(hex, a.sha256) != 0) FAIL("%s: sha256 %s, expected %s", path, a.sha256, hex);

    /* idx_read_into: the right size gives the same array; a wrong one is refused. */
    uint8_t *buf = malloc(bytes + 1);
    if (!buf) abort();
    idx_array b;
    memset(&e, 0, sizeof e);
    if (idx_read_into(path, ndim, &b, buf, bytes, &e) != BN_OK)
        FAIL("idx_read_into(%s): refused what idx_read accepted: %s", path, e.msg);
    if (b.data != buf || b.count != a.count || b.rows != a.rows || b.cols != a.cols ||
        memcmp(buf, a.data, bytes) != 0 || strcmp(b.sha256, a.sha256) != 0)
        FAIL("idx_read_into(%s): differs from idx_read", path);
    memset(&e, 0, sizeof e);
    if (idx_read_into(path, ndim, &b, buf, bytes + 1, &e) == BN_OK)
        FAIL("idx_read_into(%s): accepted a buffer of %zu bytes for %zu", path, bytes + 1, bytes);
    check_msg("idx_read_into", path, &e);
    free(buf);
    idx_free(&a);
    idx_free(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const int is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;

    /* 1. the input as a file */
    put_file(fd_plain, data, size);
    for (int ndim = 3; ndim >= 1; ndim -= 2) {
        expectation x = reference(data, size, ndim);
        read_and_check(path_plain, ndim, is_gzip ? NULL : &x, data);
    }

    /* 2. gzip of the input: one member, then two members split in the middle */
    if (size == 0) return 0;
    size_t cap = 2 * size + 256;
    uint8_t *gz = malloc(cap);
    if (!gz) abort();
    for (int members = 1; members <= 2; members++) {
        size_t half = members == 1 ? size : size / 2;
        size_t len = gzip_member(data, half, gz, cap);
        if (members == 2) len += gzip_member(data + half, size - half, gz + len, cap - len);
        put_file(fd_gz, gz, len);
        for (int ndim = 3; ndim >= 1; ndim -= 2) {
            expectation x = reference(data, size, ndim);
            read_and_check(path_gz, ndim, &x, data);
        }
    }
    free(gz);
    return 0;
}
