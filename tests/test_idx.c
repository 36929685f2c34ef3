/* test_idx.c: SHA-256 vectors, and idx_read / idx_find on small synthetic IDX
 * files (plain and gzip) written into a fresh mkdtemp directory. */
#define _XOPEN_SOURCE 700
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "bnmpi/idx.h"
#include "bnmpi/sha256.h"

static char tmp_dir[PATH_MAX]; /* created by group_setup, removed by group_teardown */

/* ---- helpers ---------------------------------------------------------------- */

static void tmp_path(char out[PATH_MAX], const char *name)
{
    int len = snprintf(out, PATH_MAX, "%s/%s", tmp_dir, name);
    assert_true(len > 0 && len < PATH_MAX);
}

static void write_plain(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_gz(const char *path, const void *bytes, size_t n)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    if (n > 0)
        assert_int_equal(gzwrite(gz, bytes, (unsigned)n), (int)n);
    assert_int_equal(gzclose(gz), Z_OK);
}

/* Reads a whole file into a malloc'd buffer; *n receives its length. */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void sha256_hex(const void *bytes, size_t n, char hex[65])
{
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, bytes, n);
    sha256_final_hex(&c, hex);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Builds an IDX file image in buf: magic 0x0000 type ndim, ndim dims, then
 * data_len bytes of data. Returns the total length. */
static size_t build_idx(uint8_t *buf, uint8_t type, int ndim, const uint32_t *dims,
                        const uint8_t *data, size_t data_len)
{
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = type;
    buf[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    size_t header_len = 4 + 4 * (size_t)ndim;
    if (data_len > 0)
        memcpy(buf + header_len, data, data_len);
    return header_len + data_len;
}

/* The reference image file: 5 images of 3x2 pixels, pixel k = 7k mod 256. */
enum { IMG_COUNT = 5, IMG_ROWS = 3, IMG_COLS = 2, IMG_BYTES = IMG_COUNT * IMG_ROWS * IMG_COLS };
static const uint32_t img_dims[3] = {IMG_COUNT, IMG_ROWS, IMG_COLS};

static size_t build_images(uint8_t *buf, uint8_t pixels[IMG_BYTES])
{
    for (int k = 0; k < IMG_BYTES; k++)
        pixels[k] = (uint8_t)(7 * k);
    return build_idx(buf, 0x08, 3, img_dims, pixels, IMG_BYTES);
}

/* The reference label file: 10 labels, label k = (3k) mod 10. */
enum { LBL_COUNT = 10 };
static const uint32_t lbl_dims[1] = {LBL_COUNT};

static size_t build_labels(uint8_t *buf, uint8_t labels[LBL_COUNT])
{
    for (int k = 0; k < LBL_COUNT; k++)
        labels[k] = (uint8_t)(3 * k % 10);
    return build_idx(buf, 0x08, 1, lbl_dims, labels, LBL_COUNT);
}

/* Asserts rc is BN_ERR, the message starts with path, and contains every key
 * (a NULL-terminated list). Prints the message when it does not. */
static void assert_error(int rc, const bn_err *err, const char *path, ...)
{
    assert_int_equal(rc, BN_ERR);
    if (strncmp(err->msg, path, strlen(path)) != 0) {
        print_error("message does not start with %s: \"%s\"\n", path, err->msg);
        fail();
    }
    va_list keys;
    va_start(keys, path);
    for (const char *key = va_arg(keys, const char *); key; key = va_arg(keys, const char *)) {
        if (strstr(err->msg, key) == NULL) {
            print_error("message lacks \"%s\": \"%s\"\n", key, err->msg);
            va_end(keys);
            fail();
        }
    }
    va_end(keys);
    assert_null(strchr(err->msg, '\n'));
}

/* Writes bytes to name (plain) and expects idx_read to fail naming the keys. */
#define EXPECT_READ_ERROR(name, bytes, n, ndim, ...)                                   \
    do {                                                                               \
        char path_[PATH_MAX];                                                          \
        tmp_path(path_, name);                                                         \
        write_plain(path_, bytes, n);                                                  \
        idx_array arr_;                                                                \
        bn_err err_ = {{0}};                                                           \
        int rc_ = idx_read(path_, ndim, &arr_, &err_);                                 \
        assert_error(rc_, &err_, path_, __VA_ARGS__, (const char *)NULL);              \
        assert_null(arr_.data);                                                        \
    } while (0)

/* ---- SHA-256 ---------------------------------------------------------------- */

static void test_sha256_empty(void **state)
{
    (void)state;
    char hex[65];
    sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_sha256_abc(void **state)
{
    (void)state;
    char hex[65];
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* 56 bytes: the padding no longer fits, so the digest spans two blocks. */
static void test_sha256_two_blocks(void **state)
{
    (void)state;
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    char hex[65];
    sha256_hex(msg, strlen(msg), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* One million 'a', fed in uneven pieces so partial blocks are exercised. */
static void test_sha256_million_a_streamed(void **state)
{
    (void)state;
    enum { TOTAL = 1000000 };
    char *a = malloc(TOTAL);
    assert_non_null(a);
    memset(a, 'a', TOTAL);

    sha256_ctx c;
    sha256_init(&c);
    size_t fed = 0;
    for (size_t piece = 1; fed < TOTAL; piece = piece * 3 % 1000 + 1) {
        size_t n = BN_MIN(piece, TOTAL - fed);
        sha256_update(&c, a + fed, n);
        fed += n;
    }
    char hex[65];
    sha256_final_hex(&c, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    sha256_hex(a, TOTAL, hex); /* and in one call */
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* ---- idx_read: valid files -------------------------------------------------- */

/* Reads path as images and checks it equals the reference image file. */
static void check_reference_images(const char *path, const uint8_t *file, size_t file_len,
                                   const uint8_t *pixels)
{
    idx_array arr;
    bn_err err = {{0}};
    int rc = idx_read(path, 3, &arr, &err);
    if (rc != BN_OK)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, BN_OK);
    assert_int_equal(arr.count, IMG_COUNT);
    assert_int_equal(arr.rows, IMG_ROWS);
    assert_int_equal(arr.cols, IMG_COLS);
    assert_memory_equal(arr.data, pixels, IMG_BYTES);

    char expected_sha[65];
    sha256_hex(file, file_len, expected_sha);
    assert_string_equal(arr.sha256, expected_sha);
    idx_free(&arr);
}

static void check_reference_labels(const char *path, const uint8_t *file, size_t file_len,
                                   const uint8_t *labels)
{
    idx_array arr;
    bn_err err = {{0}};
    int rc = idx_read(path, 1, &arr, &err);
    if (rc != BN_OK)
        print_error("%s\n", err.msg);
    assert_int_equal(rc, BN_OK);
    assert_int_equal(arr.count, LBL_COUNT);
    assert_int_equal(arr.rows, 1);
    assert_int_equal(arr.cols, 1);
    assert_memory_equal(arr.data, labels, LBL_COUNT);

    char expected_sha[65];
    sha256_hex(file, file_len, expected_sha);
    assert_string_equal(arr.sha256, expected_sha);
    idx_free(&arr);
}

static void test_read_images_plain(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    assert_int_equal(len, 16 + IMG_BYTES);
    char path[PATH_MAX];
    tmp_path(path, "images-idx3-ubyte");
    write_plain(path, file, len);

    /* the sha256 must be of the bytes on disk */
    size_t disk_len = 0;
    uint8_t *disk = slurp(path, &disk_len);
    check_reference_images(path, disk, disk_len, pixels);
    free(disk);
}

static void test_read_labels_plain(void **state)
{
    (void)state;
    uint8_t file[32], labels[LBL_COUNT];
    size_t len = build_labels(file, labels);
    char path[PATH_MAX];
    tmp_path(path, "labels-idx1-ubyte");
    write_plain(path, file, len);
    check_reference_labels(path, file, len, labels);
}

static void test_read_images_gz(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    char path[PATH_MAX];
    tmp_path(path, "images-idx3-ubyte.gz");
    write_gz(path, file, len);
    check_reference_images(path, file, len, pixels); /* sha of the uncompressed bytes */
}

static void test_read_labels_gz(void **state)
{
    (void)state;
    uint8_t file[32], labels[LBL_COUNT];
    size_t len = build_labels(file, labels);
    char path[PATH_MAX];
    tmp_path(path, "labels-idx1-ubyte.gz");
    write_gz(path, file, len);
    check_reference_labels(path, file, len, labels);
}

/* gzip is detected by content, not by name. */
static void test_read_names_do_not_matter(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    char plain_named_gz[PATH_MAX], gz_named_plain[PATH_MAX];
    tmp_path(plain_named_gz, "plain-but-named.gz");
    tmp_path(gz_named_plain, "gzip-but-named-plain");
    write_plain(plain_named_gz, file, len);
    write_gz(gz_named_plain, file, len);
    check_reference_images(plain_named_gz, file, len, pixels);
    check_reference_images(gz_named_plain, file, len, pixels);
}

/* A larger file spans several zlib buffers and read chunks. */
static void test_read_large_gz(void **state)
{
    (void)state;
    const uint32_t dims[3] = {3000, 28, 28};
    size_t data_len = 3000 * 28 * 28;
    uint8_t *data = malloc(data_len);
    uint8_t *file = malloc(16 + data_len);
    assert_non_null(data);
    assert_non_null(file);
    for (size_t k = 0; k < data_len; k++)
        data[k] = (uint8_t)((k * 2654435761u) >> 13);
    size_t len = build_idx(file, 0x08, 3, dims, data, data_len);
    char path[PATH_MAX];
    tmp_path(path, "large-idx3-ubyte.gz");
    write_gz(path, file, len);

    idx_array arr;
    bn_err err = {{0}};
    assert_int_equal(idx_read(path, 3, &arr, &err), BN_OK);
    assert_int_equal(arr.count, 3000);
    assert_memory_equal(arr.data, data, data_len);
    char expected_sha[65];
    sha256_hex(file, len, expected_sha);
    assert_string_equal(arr.sha256, expected_sha);
    idx_free(&arr);
    free(data);
    free(file);
}

static void test_idx_free_zeroes(void **state)
{
    (void)state;
    uint8_t file[32], labels[LBL_COUNT];
    size_t len = build_labels(file, labels);
    char path[PATH_MAX];
    tmp_path(path, "labels-for-free");
    write_plain(path, file, len);

    idx_array arr;
    bn_err err = {{0}};
    assert_int_equal(idx_read(path, 1, &arr, &err), BN_OK);
    idx_free(&arr);
    assert_null(arr.data);
    assert_int_equal(arr.count, 0);
    assert_int_equal(arr.rows, 0);
    assert_int_equal(arr.cols, 0);
    assert_int_equal(arr.sha256[0], '\0');
    idx_free(&arr); /* twice is harmless */
}

/* ---- idx_read: bad input ---------------------------------------------------- */

static void test_wrong_magic(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    memcpy(file, "GIF8", 4);
    EXPECT_READ_ERROR("not-idx", file, len, 3, "wrong magic 0x47494638",
                      "expected 0x00000803 (IDX uint8, 3 dimensions)");
}

static void test_wrong_element_type(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    file[2] = 0x0d; /* float */
    EXPECT_READ_ERROR("float-idx3", file, len, 3, "wrong magic 0x00000d03",
                      "element type 0x0d");
}

static void test_labels_read_as_images(void **state)
{
    (void)state;
    uint8_t file[32], labels[LBL_COUNT];
    size_t len = build_labels(file, labels);
    EXPECT_READ_ERROR("labels-as-images", file, len, 3, "wrong magic 0x00000801",
                      "expected 0x00000803", "1 dimension (labels), expected images");
}

static void test_images_read_as_labels(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    EXPECT_READ_ERROR("images-as-labels", file, len, 1,
                      "wrong magic 0x00000803, expected 0x00000801 (IDX uint8, 1 dimension)",
                      "3 dimensions (images), expected labels");
}

static void test_truncated_header(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    build_images(file, pixels);
    EXPECT_READ_ERROR("header-5", file, 5, 3, "truncated header: 5 bytes, expected 16");
    EXPECT_READ_ERROR("header-2", file, 2, 3, "truncated header: 2 bytes, expected 16");
}

static void test_truncated_data(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    EXPECT_READ_ERROR("short-data", file, len - 10, 3, "truncated data: 20 of 30 bytes");
    EXPECT_READ_ERROR("no-data", file, 16, 3, "truncated data: 0 of 30 bytes");
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    memset(file + len, 0, 12);
    EXPECT_READ_ERROR("trailing", file, len + 12, 3, "12 bytes after the data",
                      "dimensions 5x3x2 disagree with the file size");
}

static void test_label_out_of_range(void **state)
{
    (void)state;
    uint8_t file[32], labels[LBL_COUNT];
    size_t len = build_labels(file, labels);
    file[8 + 7] = 11;
    EXPECT_READ_ERROR("label-11", file, len, 1, "label 11 at index 7, expected 0-9");
    file[8 + 7] = 3;
    file[8 + 9] = 10; /* the last one counts too */
    EXPECT_READ_ERROR("label-10", file, len, 1, "label 10 at index 9, expected 0-9");
}

static void test_zero_dimensions(void **state)
{
    (void)state;
    uint8_t file[64];
    const uint32_t zero_count[3] = {0, 28, 28};
    size_t len = build_idx(file, 0x08, 3, zero_count, NULL, 0);
    EXPECT_READ_ERROR("zero-count", file, len, 3, "zero dimension in 0x28x28");

    const uint32_t zero_cols[3] = {5, 3, 0};
    len = build_idx(file, 0x08, 3, zero_cols, NULL, 0);
    EXPECT_READ_ERROR("zero-cols", file, len, 3, "zero dimension in 5x3x0");

    const uint32_t zero_labels[1] = {0};
    len = build_idx(file, 0x08, 1, zero_labels, NULL, 0);
    EXPECT_READ_ERROR("zero-labels", file, len, 1, "zero dimension in 0");
}

static void test_absurd_dimensions(void **state)
{
    (void)state;
    uint8_t file[64];
    const uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu}; /* product overflows u64 */
    size_t len = build_idx(file, 0x08, 3, huge, NULL, 0);
    EXPECT_READ_ERROR("huge-dims", file, len, 3, "4294967295x4294967295x4294967295",
                      "exceed 2147483648 bytes");

    const uint32_t just_over[3] = {1u << 21, 32, 33};
    len = build_idx(file, 0x08, 3, just_over, NULL, 0);
    EXPECT_READ_ERROR("over-2gib", file, len, 3, "exceed 2147483648 bytes");

    const uint32_t many_labels[1] = {0x90000000u}; /* > 2^31 bytes */
    len = build_idx(file, 0x08, 1, many_labels, NULL, 0);
    EXPECT_READ_ERROR("many-labels", file, len, 1, "exceed");

    const uint32_t int_max_plus_one[1] = {0x80000000u}; /* exactly 2^31 bytes, count > INT_MAX */
    len = build_idx(file, 0x08, 1, int_max_plus_one, NULL, 0);
    EXPECT_READ_ERROR("count-over-int", file, len, 1, "dimension 2147483648 of 2147483648 does not fit an int");

    /* exactly 2^31 bytes, rows > INT_MAX: idx_array's int rows came back negative (found by fuzz_idx) */
    const uint32_t rows_over_int[3] = {1, 0x80000000u, 1};
    len = build_idx(file, 0x08, 3, rows_over_int, NULL, 0);
    EXPECT_READ_ERROR("rows-over-int", file, len, 3, "dimension 2147483648 of 1x2147483648x1 does not fit an int");
}

static void test_empty_file(void **state)
{
    (void)state;
    EXPECT_READ_ERROR("empty", "", 0, 3, "empty file");

    char path[PATH_MAX];
    tmp_path(path, "empty.gz");
    write_gz(path, "", 0);
    idx_array arr;
    bn_err err = {{0}};
    assert_error(idx_read(path, 1, &arr, &err), &err, path, "empty file", (const char *)NULL);
}

static void test_directory(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, "a-directory");
    assert_int_equal(mkdir(path, 0700), 0);
    idx_array arr;
    bn_err err = {{0}};
    assert_error(idx_read(path, 3, &arr, &err), &err, path,
                 "is a directory, expected an IDX file", (const char *)NULL);
}

static void test_missing_file(void **state)
{
    (void)state;
    char path[PATH_MAX];
    tmp_path(path, "does-not-exist");
    idx_array arr;
    bn_err err = {{0}};
    assert_error(idx_read(path, 3, &arr, &err), &err, path, "No such file",
                 (const char *)NULL);
}

static void test_gz_garbage_after_header(void **state)
{
    (void)state;
    /* a valid 10-byte gzip member header, then bytes that are not deflate data */
    uint8_t file[74] = {0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03};
    memset(file + 10, 0xff, sizeof file - 10);
    EXPECT_READ_ERROR("garbage.gz", file, sizeof file, 3, "corrupt gzip stream");
}

/* Writes the gzip of a 100x28x28 image file; returns its bytes (malloc'd). */
static uint8_t *gzip_images(const char *name, size_t *gz_len)
{
    const uint32_t dims[3] = {100, 28, 28};
    size_t data_len = 100 * 28 * 28;
    uint8_t *data = malloc(data_len);
    uint8_t *file = malloc(16 + data_len);
    assert_non_null(data);
    assert_non_null(file);
    for (size_t k = 0; k < data_len; k++)
        data[k] = (uint8_t)((k * 2654435761u) >> 11);
    size_t len = build_idx(file, 0x08, 3, dims, data, data_len);
    char path[PATH_MAX];
    tmp_path(path, name);
    write_gz(path, file, len);
    free(data);
    free(file);
    return slurp(path, gz_len);
}

static void test_gz_cut_in_half(void **state)
{
    (void)state;
    size_t gz_len = 0;
    uint8_t *gz = gzip_images("whole.gz", &gz_len);
    assert_true(gz_len > 1000);
    EXPECT_READ_ERROR("half.gz", gz, gz_len / 2, 3, "corrupt gzip stream");
    /* cut inside the 8-byte trailer: all data decodes, the stream still is not whole */
    EXPECT_READ_ERROR("no-trailer.gz", gz, gz_len - 4, 3, "corrupt gzip stream");
    free(gz);
}

static void test_gz_bad_checksum(void **state)
{
    (void)state;
    size_t gz_len = 0;
    uint8_t *gz = gzip_images("whole2.gz", &gz_len);
    gz[gz_len - 8] ^= 0x01; /* CRC-32 in the trailer */
    EXPECT_READ_ERROR("bad-crc.gz", gz, gz_len, 3, "corrupt gzip stream");
    free(gz);
}

static void test_bad_expect_ndim(void **state)
{
    (void)state;
    uint8_t file[64], pixels[IMG_BYTES];
    size_t len = build_images(file, pixels);
    EXPECT_READ_ERROR("ndim-2", file, len, 2, "expect_ndim 2");
}

/* ---- idx_find --------------------------------------------------------------- */

static void test_find_prefers_plain(void **state)
{
    (void)state;
    char dir[PATH_MAX], plain[PATH_MAX], gz[PATH_MAX], found[PATH_MAX];
    tmp_path(dir, "find-both");
    tmp_path(plain, "find-both/data");
    tmp_path(gz, "find-both/data.gz");
    assert_int_equal(mkdir(dir, 0700), 0);
    write_plain(plain, "x", 1);
    write_plain(gz, "x", 1);
    bn_err err = {{0}};
    assert_int_equal(idx_find(dir, "data", found, sizeof found, &err), BN_OK);
    assert_string_equal(found, plain);
}

static void test_find_falls_back_to_gz(void **state)
{
    (void)state;
    char dir[PATH_MAX], gz[PATH_MAX], found[PATH_MAX];
    tmp_path(dir, "find-gz");
    tmp_path(gz, "find-gz/data.gz");
    assert_int_equal(mkdir(dir, 0700), 0);
    write_plain(gz, "x", 1);
    bn_err err = {{0}};
    assert_int_equal(idx_find(dir, "data", found, sizeof found, &err), BN_OK);
    assert_string_equal(found, gz);
}

static void test_find_neither(void **state)
{
    (void)state;
    char dir[PATH_MAX], plain[PATH_MAX], gz[PATH_MAX], found[PATH_MAX];
    tmp_path(dir, "find-none");
    tmp_path(plain, "find-none/data");
    tmp_path(gz, "find-none/data.gz");
    assert_int_equal(mkdir(dir, 0700), 0);
    bn_err err = {{0}};
    assert_error(idx_find(dir, "data", found, sizeof found, &err), &err, plain, "not found",
                 gz, (const char *)NULL);
}

static void test_find_buffer_too_small(void **state)
{
    (void)state;
    char found[8];
    bn_err err = {{0}};
    assert_error(idx_find(tmp_dir, "data", found, sizeof found, &err), &err, tmp_dir,
                 "too long", (const char *)NULL);
}

/* ---- fixture ---------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/bnmpi-test-idx.XXXXXX");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_empty),
        cmocka_unit_test(test_sha256_abc),
        cmocka_unit_test(test_sha256_two_blocks),
        cmocka_unit_test(test_sha256_million_a_streamed),
        cmocka_unit_test(test_read_images_plain),
        cmocka_unit_test(test_read_labels_plain),
        cmocka_unit_test(test_read_images_gz),
        cmocka_unit_test(test_read_labels_gz),
        cmocka_unit_test(test_read_names_do_not_matter),
        cmocka_unit_test(test_read_large_gz),
        cmocka_unit_test(test_idx_free_zeroes),
        cmocka_unit_test(test_wrong_magic),
        cmocka_unit_test(test_wrong_element_type),
        cmocka_unit_test(test_labels_read_as_images),
        cmocka_unit_test(test_images_read_as_labels),
        cmocka_unit_test(test_truncated_header),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_label_out_of_range),
        cmocka_unit_test(test_zero_dimensions),
        cmocka_unit_test(test_absurd_dimensions),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_directory),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_gz_garbage_after_header),
        cmocka_unit_test(test_gz_cut_in_half),
        cmocka_unit_test(test_gz_bad_checksum),
        cmocka_unit_test(test_bad_expect_ndim),
        cmocka_unit_test(test_find_prefers_plain),
        cmocka_unit_test(test_find_falls_back_to_gz),
        cmocka_unit_test(test_find_neither),
        cmocka_unit_test(test_find_buffer_too_small),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
