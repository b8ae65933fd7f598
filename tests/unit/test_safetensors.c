/* Unit test for lib/safetensors: writer/reader round trips, every header
 * validation error (files crafted byte by byte), sharded models and writer
 * misuse. Prints "FAIL: ..." per failed check and "ok N checks" at the end. */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/ckpt.h"
#include "io/safetensors_internal.h"

/* Shard names of the sharded model fixture. */
#define N1 "model-00001-of-00002.safetensors"
#define N2 "model-00002-of-00002.safetensors"

static int nchecks, nfails;
static char dir[4096];

static void check(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(int ok, int line, const char *fmt, ...)
{
	nchecks++;
	if (ok)
		return;
	nfails++;
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL: line %d: ", line);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}
#define CHECK(cond, ...) check(!!(cond), __LINE__, __VA_ARGS__)

/* Path of name inside the test directory (rotating buffers so a few can be
 * live at once). */
static const char *P(const char *name)
{
	static char buf[8][4200];
	static int k;
	k = (k + 1) % 8;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

static void put_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
		printf("FAIL: cannot write %s\n", path);
		exit(1);
	}
}

/* A safetensors file with the given header length field, header text and
 * data bytes (zeros). */
static void put_raw(const char *path, unsigned long long hlen, const char *hdr, size_t hdr_n, size_t data_n)
{
	size_t n = 8 + hdr_n + data_n;
	unsigned char *b = calloc(1, n);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(b + 8, hdr, hdr_n);
	put_file(path, b, n);
	free(b);
}

static void put_st(const char *path, const char *hdr, size_t data_n)
{
	put_raw(path, strlen(hdr), hdr, strlen(hdr), data_n);
}

/* lora_st_open must fail with code and a message starting with the path
 * and containing want. */
static void expect_st_err(int line, const char *path, int code, const char *want)
{
	lora_st *st = (lora_st *)1;
	lora_err e = {0, ""};
	int rc = lora_st_open(&st, path, &e);
	check(rc == code && e.code == code, line, "%s: rc %d, want %d (%s)", path, rc, code, e.msg);
	check(st == NULL, line, "%s: out not NULL on error", path);
	check(strncmp(e.msg, path, strlen(path)) == 0, line, "message does not start with path: %s", e.msg);
	check(strstr(e.msg, want) != NULL, line, "message '%s' lacks '%s'", e.msg, want);
	if (rc == 0)
		lora_st_close(st);
}
#define ST_ERR(path, code, want) expect_st_err(__LINE__, path, code, want)

/* lora_ckpt_open must fail with code and a message starting with start
 * (the input or the index) and containing want. */
static void expect_model_err(int line, const char *path, int code, const char *start, const char *want)
{
	lora_ckpt *m = (lora_ckpt *)1;
	lora_err e = {0, ""};
	int rc = lora_ckpt_open(&m, path, &e);
	check(rc == code, line, "%s: rc %d, want %d (%s)", path, rc, code, e.msg);
	check(m == NULL, line, "%s: out not NULL on error", path);
	check(strncmp(e.msg, start, strlen(start)) == 0, line, "message does not start with %s: %s", start, e.msg);
	check(strstr(e.msg, want) != NULL, line, "message '%s' lacks '%s'", e.msg, want);
	if (rc == 0)
		lora_ckpt_close(m);
}
#define MODEL_ERR(path, code, start, want) expect_model_err(__LINE__, path, code, start, want)

/* Deterministic content: byte k of tensor i. */
static unsigned char pat(size_t i, size_t k) { return (unsigned char)(i * 31 + k * 7 + 1); }

/* Write tensors with pattern data, chunk bytes per write call. */
static int write_st(const char *path, const lora_st_spec *s, size_t n, const lora_st_meta *meta,
                    size_t nmeta, int force, size_t chunk, lora_err *e)
{
	lora_st_writer *w;
	int rc = lora_st_writer_open(&w, path, s, n, meta, nmeta, force, e);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		size_t nb;
		lora_shape_bytes(s[i].shape, s[i].ndim, lora_dtype_size(s[i].dtype), &nb);
		unsigned char *buf = malloc(nb + 1);
		for (size_t k = 0; k < nb; k++)
			buf[k] = pat(i, k);
		for (size_t k = 0; k < nb && !rc; k += chunk)
			rc = lora_st_writer_write(w, buf + k, nb - k < chunk ? nb - k : chunk, e);
		free(buf);
		if (rc) {
			lora_st_writer_abort(w);
			return rc;
		}
	}
	return lora_st_writer_commit(w, e);
}

/* Number of dot files (temporaries) in the test directory. */
static int count_temps(void)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

static int exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

static void test_roundtrip(void)
{
	const lora_st_spec s[] = {
		{"a", LORA_F32, 2, {2, 3}},
		{"b.weight", LORA_BF16, 1, {4}},
		{"scalar", LORA_F32, 0, {0}},
		{"empty", LORA_F16, 2, {0, 5}},
		{"x", LORA_I8, 3, {1, 1, 3}},
	};
	const lora_st_meta meta[] = {{"format", "pt"}, {"k\"q\\", "v\n\xc3\xa9"}};
	lora_err e = {0, ""};
	const char *path = P("rt.safetensors");
	int rc = write_st(path, s, 5, meta, 2, 0, 5, &e);
	CHECK(rc == 0, "write: %s", e.msg);
	lora_st *st = NULL;
	rc = lora_st_open(&st, path, &e);
	CHECK(rc == 0 && st, "open: %s", e.msg);
	if (!st)
		return;
	CHECK(st->ntensors == 5, "ntensors %zu", st->ntensors);
	CHECK(st->header_size % 8 == 0, "header size %zu not a multiple of 8", st->header_size);
	CHECK(st->file_size == 8 + st->header_size + 24 + 8 + 4 + 3, "file size %zu", st->file_size);
	CHECK(strcmp(st->path, path) == 0, "path");
	CHECK(st->map != NULL, "map");
	CHECK(st->nmeta == 2 && strcmp(st->meta[0].key, "format") == 0 && strcmp(st->meta[0].value, "pt") == 0 &&
	          strcmp(st->meta[1].key, "k\"q\\") == 0 && strcmp(st->meta[1].value, "v\n\xc3\xa9") == 0,
	      "metadata");
	/* File order: the zero-byte "empty" sits before "x" at the same offset. */
	for (size_t i = 0; i < 5 && i < st->ntensors; i++) {
		const lora_st_tensor *t = &st->tensors[i];
		CHECK(strcmp(t->name, s[i].name) == 0, "tensor %zu is '%s', want '%s'", i, t->name, s[i].name);
		CHECK(t->dtype == s[i].dtype && t->ndim == s[i].ndim, "tensor %zu dtype/ndim", i);
		for (size_t d = 0; d < t->ndim; d++)
			CHECK(t->shape[d] == s[i].shape[d], "tensor %zu shape[%zu]", i, d);
		size_t nb;
		lora_shape_bytes(s[i].shape, s[i].ndim, lora_dtype_size(s[i].dtype), &nb);
		CHECK(t->nbytes == nb, "tensor %zu nbytes %zu want %zu", i, t->nbytes, nb);
		int same = t->data != NULL;
		for (size_t k = 0; k < nb && same; k++)
			same = ((const unsigned char *)t->data)[k] == pat(i, k);
		CHECK(same, "tensor %zu data differs", i);
		CHECK(lora_st_find(st, s[i].name) == t, "find '%s'", s[i].name);
	}
	CHECK(st->tensors[2].ndim == 0 && st->tensors[2].nelem == 1 && st->tensors[2].nbytes == 4, "0-d tensor");
	CHECK(st->tensors[3].nelem == 0 && st->tensors[3].nbytes == 0, "zero-size tensor");
	CHECK(lora_st_find(st, "nope") == NULL && lora_st_find(st, "") == NULL, "find missing");
	const unsigned char *m = st->map;
	CHECK(memcmp(m + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0, "metadata first, compact");
	CHECK(m[8 + st->header_size - 1] == ' ' || m[8 + st->header_size - 1] == '}', "padding");
	lora_st_close(st);

	/* Existing target: refused without force, replaced with force. */
	rc = write_st(path, s, 1, NULL, 0, 0, 64, &e);
	CHECK(rc == LORA_EINVAL && strstr(e.msg, "already exists"), "no force: %d %s", rc, e.msg);
	rc = write_st(path, s, 1, NULL, 0, 1, 64, &e);
	CHECK(rc == 0, "force: %s", e.msg);
	rc = lora_st_open(&st, path, &e);
	CHECK(rc == 0 && st->ntensors == 1 && st->nmeta == 0, "forced rewrite: %s", e.msg);
	lora_st_close(st);
	CHECK(count_temps() == 0, "temporary files left");
}

static void test_empty(void)
{
	lora_err e = {0, ""};
	lora_st *st = NULL;
	const char *path = P("empty.safetensors");
	CHECK(write_st(path, NULL, 0, NULL, 0, 0, 1, &e) == 0, "write empty: %s", e.msg);
	CHECK(lora_st_open(&st, path, &e) == 0, "open empty: %s", e.msg);
	if (st) {
		CHECK(st->ntensors == 0 && st->nmeta == 0 && st->map == NULL && st->file_size == 16,
		      "empty file: %zu tensors, size %zu", st->ntensors, st->file_size);
		lora_st_close(st);
	}
	/* Only zero-byte tensors: empty data section, file ends at the header. */
	const lora_st_spec z[] = {{"z", LORA_F32, 1, {0}}, {"y", LORA_BF16, 2, {3, 0}}};
	path = P("zero.safetensors");
	CHECK(write_st(path, z, 2, NULL, 0, 0, 1, &e) == 0, "write zero: %s", e.msg);
	CHECK(lora_st_open(&st, path, &e) == 0, "open zero: %s", e.msg);
	if (st) {
		CHECK(st->ntensors == 2 && st->map == NULL && st->file_size == 8 + st->header_size, "zero-size file");
		CHECK(st->tensors[0].data != NULL && st->tensors[1].data != NULL, "zero-size data not NULL");
		CHECK(strcmp(st->tensors[0].name, "y") == 0, "zero-size tensors ordered by name");
		lora_st_close(st);
	}
}

/* Header of F32 tensors 'a' and 'b' of 2 elements at the given offsets. */
static void two_tensors(char *h, size_t cap, int b0, int e0, int b1, int e1)
{
	snprintf(h, cap,
	         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%d,%d]},"
	         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%d,%d]}}",
	         b0, e0, b1, e1);
}

static void test_bad_files(void)
{
	const char *p = P("bad.safetensors");
	put_file(p, "\x10\0\0\0\0", 5);
	ST_ERR(p, LORA_EFORMAT, "truncated: file is 5 bytes, shorter than the 8-byte header length");
	put_raw(p, 1000, "{}", 2, 8);
	ST_ERR(p, LORA_EFORMAT, "header length 1000 exceeds file size 18");
	put_raw(p, 100000001ull, "{}", 2, 0);
	ST_ERR(p, LORA_EFORMAT, "header length 100000001 exceeds the 100000000-byte limit");
	put_raw(p, 0xffffffffffffffffull, "{}", 2, 0);
	ST_ERR(p, LORA_EFORMAT, "header length 18446744073709551615 exceeds");
	put_raw(p, 0, "", 0, 0);
	ST_ERR(p, LORA_EFORMAT, "header does not start with '{'");
	put_st(p, " {}", 0);
	ST_ERR(p, LORA_EFORMAT, "header does not start with '{'");
	put_st(p, "\xef\xbb\xbf{}", 0);
	ST_ERR(p, LORA_EFORMAT, "header does not start with '{'");

	/* UTF-8: overlong, surrogate, above U+10FFFF, truncated, stray byte. */
	put_st(p, "{\"a\xc0\x80\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "header is not valid UTF-8 (byte 3)");
	put_st(p, "{\"\xe0\x80\xaf\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "not valid UTF-8 (byte 2)");
	put_st(p, "{\"\xed\xa0\x80\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "not valid UTF-8 (byte 2)");
	put_st(p, "{\"\xf4\x90\x80\x80\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "not valid UTF-8 (byte 2)");
	put_st(p, "{\"\xe2\x82\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "not valid UTF-8 (byte 2)");
	put_st(p, "{\"\xff\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "not valid UTF-8 (byte 2)");
	/* Valid multi-byte names are fine (checked in the round trip too). */

	put_st(p, "{\"a\":", 0);
	ST_ERR(p, LORA_EFORMAT, "header is not valid JSON");
	put_st(p, "{\"a\" 1}", 0);
	ST_ERR(p, LORA_EFORMAT, "header is not valid JSON");
	put_st(p, "{} x", 0);
	ST_ERR(p, LORA_EFORMAT, "header has data after the JSON object (byte 3)");
	put_st(p, "{}{}", 0);
	ST_ERR(p, LORA_EFORMAT, "data after the JSON object");
	put_st(p, "{\"a\x01\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "header contains a control character at byte 3");
	put_raw(p, 4, "{}\0 ", 4, 0);
	ST_ERR(p, LORA_EFORMAT, "control character at byte 2");
	put_st(p, "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4);
	ST_ERR(p, LORA_EFORMAT, "\\u0000 escape");

	put_st(p, "{\"a\":1}", 0);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': entry is not an object");
	put_st(p, "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': unknown dtype 'F128'");
	put_st(p, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': missing \"dtype\"");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': missing \"shape\"");
	put_st(p, "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,60]}}", 60);
	ST_ERR(p, LORA_EFORMAT, "tensor 'x.weight': F32 4x4 is 64 bytes but data_offsets span 60");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': shape[0] is -1, not a non-negative integer");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", 12);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': shape[1] is 1.5, not a non-negative integer");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': shape[0] is not a number");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 8);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': shape[0] is 1.0000000000000001e+300");
	put_st(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': shape has 9 dimensions, at most 8");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': F32 4294967296x4294967296x4294967296 overflows");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': data_offsets must be [begin, end]");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': data_offsets must be [begin, end]");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': data_offsets [8,4] end before they begin");
	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a': data_offsets [0,8] run past the end of the 4-byte data section");

	char h[512];
	two_tensors(h, sizeof h, 0, 8, 4, 12);
	put_st(p, h, 12);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a' overlaps tensor 'b'");
	two_tensors(h, sizeof h, 0, 8, 0, 8);
	put_st(p, h, 8);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a' overlaps tensor 'b'");
	two_tensors(h, sizeof h, 0, 8, 7, 15); /* by one byte */
	put_st(p, h, 15);
	ST_ERR(p, LORA_EFORMAT, "tensor 'a' overlaps tensor 'b'");
	two_tensors(h, sizeof h, 0, 8, 12, 20);
	put_st(p, h, 20);
	ST_ERR(p, LORA_EFORMAT, "4-byte gap between tensor 'a' and tensor 'b'");
	two_tensors(h, sizeof h, 4, 12, 12, 20);
	put_st(p, h, 20);
	ST_ERR(p, LORA_EFORMAT, "4-byte gap before tensor 'a' at the start of the data");
	two_tensors(h, sizeof h, 0, 8, 8, 16);
	put_st(p, h, 20);
	ST_ERR(p, LORA_EFORMAT, "4 trailing bytes after the last tensor (data section is 20 bytes)");
	put_st(p, "{}", 3);
	ST_ERR(p, LORA_EFORMAT, "3 trailing bytes");
	/* Good twin of the cases above, to be sure they fail for their reason. */
	put_st(p, h, 16);
	lora_st *st = NULL;
	lora_err e = {0, ""};
	CHECK(lora_st_open(&st, p, &e) == 0 && st->ntensors == 2, "two tensors: %s", e.msg);
	lora_st_close(st);

	put_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	          "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16);
	ST_ERR(p, LORA_EFORMAT, "header has the key 'a' twice in one object");
	put_st(p, "{\"__metadata__\":{\"k\":1}}", 0);
	ST_ERR(p, LORA_EFORMAT, "__metadata__ value for key 'k' is not a string");
	put_st(p, "{\"__metadata__\":[\"k\"]}", 0);
	ST_ERR(p, LORA_EFORMAT, "__metadata__ is not an object");
	put_st(p, "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0);
	ST_ERR(p, LORA_EFORMAT, "header has the key 'k' twice in one object");
	put_st(p, "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
	ST_ERR(p, LORA_EFORMAT, "header has the key '__metadata__' twice in one object");
	/* Whitespace padding after the object is the standard. */
	put_st(p, "{\"__metadata__\":{\"k\":\"v\"}}  \t\r\n ", 0);
	CHECK(lora_st_open(&st, p, &e) == 0 && st->nmeta == 1, "padded header: %s", e.msg);
	lora_st_close(st);

	ST_ERR(P("missing.safetensors"), LORA_EIO, "No such file or directory");
	ST_ERR(dir, LORA_EIO, "Is a directory");
}

static void test_writer_errors(void)
{
	lora_err e = {0, ""};
	lora_st_writer *w = (lora_st_writer *)1;
	const lora_st_spec s[] = {{"a", LORA_F32, 1, {2}}, {"b", LORA_F32, 1, {2}}};
	float buf[3] = {1, 2, 3};
	const char *path = P("w.safetensors");

	CHECK(lora_st_writer_open(&w, "-", s, 2, NULL, 0, 0, &e) == LORA_EUSAGE && w == NULL, "'-' refused: %s", e.msg);

	/* Too many bytes for a tensor: refused before anything is written. */
	CHECK(lora_st_writer_open(&w, path, s, 2, NULL, 0, 0, &e) == 0, "open: %s", e.msg);
	CHECK(count_temps() == 1 && !exists(path), "temporary while writing");
	int rc = lora_st_writer_write(w, buf, 12, &e);
	CHECK(rc == LORA_EINVAL && strstr(e.msg, "tensor 'a': write of 12 bytes exceeds the 8 bytes left of its 8"),
	      "too many: %d %s", rc, e.msg);
	CHECK(lora_st_writer_write(w, buf, 8, &e) == 0 && lora_st_writer_write(w, buf, 4, &e) == 0, "writes: %s", e.msg);
	rc = lora_st_writer_write(w, buf, 8, &e);
	CHECK(rc == LORA_EINVAL && strstr(e.msg, "tensor 'b': write of 8 bytes exceeds the 4 bytes left of its 8"),
	      "too many in b: %d %s", rc, e.msg);
	CHECK(lora_st_writer_write(w, buf, 4, &e) == 0, "finish b: %s", e.msg);
	rc = lora_st_writer_write(w, buf, 1, &e);
	CHECK(rc == LORA_EINVAL && strstr(e.msg, "tensor 'b': write of 1 bytes exceeds the 0 bytes left"),
	      "past the end: %d %s", rc, e.msg);
	lora_st_writer_abort(w);
	CHECK(count_temps() == 0 && !exists(path), "abort leaves nothing");

	/* Incomplete tensor at commit. */
	CHECK(lora_st_writer_open(&w, path, s, 2, NULL, 0, 0, &e) == 0, "open: %s", e.msg);
	CHECK(lora_st_writer_write(w, buf, 8, &e) == 0 && lora_st_writer_write(w, buf, 4, &e) == 0, "writes: %s", e.msg);
	rc = lora_st_writer_commit(w, &e);
	CHECK(rc == LORA_EINVAL && strstr(e.msg, "w.safetensors: tensor 'b': only 4 of 8 bytes written"),
	      "incomplete: %d %s", rc, e.msg);
	CHECK(count_temps() == 0 && !exists(path), "failed commit leaves nothing");

	/* Requests the reader would refuse are refused up front. */
	const lora_st_spec dup[] = {{"a", LORA_F32, 1, {2}}, {"a", LORA_F32, 1, {2}}};
	CHECK(lora_st_writer_open(&w, path, dup, 2, NULL, 0, 0, &e) == LORA_EINVAL && strstr(e.msg, "duplicate tensor name 'a'"),
	      "dup names: %s", e.msg);
	const lora_st_spec bad[] = {{"a\xff", LORA_F32, 1, {2}}};
	CHECK(lora_st_writer_open(&w, path, bad, 1, NULL, 0, 0, &e) == LORA_EINVAL && strstr(e.msg, "invalid name"),
	      "bad utf-8 name: %s", e.msg);
	const lora_st_meta dm[] = {{"k", "v"}, {"k", "w"}};
	CHECK(lora_st_writer_open(&w, path, s, 2, dm, 2, 0, &e) == LORA_EINVAL && strstr(e.msg, "duplicate metadata key 'k'"),
	      "dup meta: %s", e.msg);
	CHECK(count_temps() == 0 && !exists(path), "refused opens leave nothing");
}

/* The whole of a file, or NULL. */
static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long len;
	if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)len + 1)) && fread(buf, 1, (size_t)len, f) != (size_t)len) {
		free(buf);
		buf = NULL;
	}
	if (f)
		fclose(f);
	*n = buf ? (size_t)len : 0;
	return buf;
}

/* Large files go around the page cache in aligned buffers of 4 MiB: the
 * same bytes as through the cache, whatever the header's length, the write
 * sizes and the tail; and a write error is reported as one. */
static void test_direct(void)
{
	static const lora_st_meta meta[] = {{"format", "pt"}, {"odd", "x"}};
	const lora_st_spec s[] = {
		{"big", LORA_U8, 1, {(4u << 20) * 2 + 12345}}, /* two whole buffers and more */
		{"none", LORA_F32, 2, {0, 7}},
		{"w", LORA_BF16, 2, {3, 1001}},
	};
	lora_err e = {0};
	size_t chunks[] = {1, 4095, 1000003, 5u << 20};
	for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
		for (int direct = 0; direct < 2; direct++) {
			lora_st_writer_direct_min(direct ? 0 : UINT64_MAX);
			CHECK(write_st(P(direct ? "direct.st" : "cached.st"), s, 3, meta, 2, 1, chunks[c], &e) == 0,
			      "write (direct %d, chunk %zu): %s", direct, chunks[c], e.msg);
		}
		size_t na, nb;
		unsigned char *a = slurp(P("cached.st"), &na), *b = slurp(P("direct.st"), &nb);
		CHECK(a && b && na == nb && memcmp(a, b, na) == 0, "direct and cached files differ (chunk %zu)",
		      chunks[c]);
		free(a);
		free(b);
	}
	/* a FIFO has no offsets and takes O_DIRECT as packet mode: written
	 * through the cache whatever the size, the same bytes */
	mkfifo(P("fifo.st"), 0666);
	pid_t reader = fork();
	if (reader == 0) {
		FILE *in = fopen(P("fifo.st"), "rb"), *out = fopen(P("fromfifo.st"), "wb");
		int ch;
		while (in && out && (ch = getc(in)) != EOF)
			putc(ch, out);
		_exit(!in || !out || fclose(out) != 0);
	}
	lora_st_writer_direct_min(0);
	CHECK(write_st(P("fifo.st"), s, 3, meta, 2, 1, 1u << 20, &e) == 0, "write to a FIFO: %s", e.msg);
	int status = -1;
	waitpid(reader, &status, 0);
	size_t nf, nc;
	unsigned char *f = slurp(P("fromfifo.st"), &nf), *c = slurp(P("cached.st"), &nc);
	CHECK(status == 0 && f && c && nf == nc && memcmp(f, c, nf) == 0, "FIFO bytes differ");
	free(f);
	free(c);
	unlink(P("fifo.st"));
	unlink(P("fromfifo.st"));
	lora_st *st = NULL;
	CHECK(lora_st_open(&st, P("direct.st"), &e) == 0, "reopen: %s", e.msg);
	if (st) {
		const lora_st_tensor *t = lora_st_find(st, "w");
		int ok = t && t->nbytes == 3 * 1001 * 2;
		for (size_t k = 0; ok && k < t->nbytes; k++)
			ok = ((const unsigned char *)t->data)[k] == pat(2, k);
		CHECK(ok, "direct file reads back");
		lora_st_close(st);
	}
	/* a file size limit cuts the second buffer short */
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = 6u << 20;
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &lim);
	lora_st_writer_direct_min(0);
	int rc = write_st(P("limit.st"), s, 3, meta, 2, 1, 1u << 20, &e);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_DFL);
	char want[4400];
	snprintf(want, sizeof want, "%s: write error: File too large", P("limit.st"));
	CHECK(rc == LORA_EIO && strcmp(e.msg, want) == 0, "size limit: rc %d '%s'", rc, e.msg);
	CHECK(!exists(P("limit.st")) && count_temps() == 0, "nothing left after the write error");
	lora_st_writer_direct_min(64u << 20);
	unlink(P("direct.st"));
	unlink(P("cached.st"));
}

static void put_config(const char *path, const char *name)
{
	char buf[256];
	snprintf(buf, sizeof buf, "{\"model_type\": \"llama\", \"_name_or_path\": \"%s\"}\n", name);
	put_file(path, buf, strlen(buf));
}

/* FNV-1a 64 written out independently of the library. */
static unsigned long long fnv(unsigned long long h, const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
	return h;
}

static void test_model(void)
{
	lora_err e = {0, ""};
	lora_ckpt *m = NULL;
	const lora_st_spec s[] = {{"z.weight", LORA_F32, 2, {2, 2}}, {"a.weight", LORA_BF16, 1, {3}}};

	/* Single file in a directory with config.json. */
	mkdir(P("single"), 0777);
	CHECK(write_st(P("single/model.safetensors"), s, 2, NULL, 0, 0, 64, &e) == 0, "write: %s", e.msg);
	put_config(P("single/config.json"), "org/my-model");
	CHECK(lora_ckpt_open(&m, P("single"), &e) == 0, "open single: %s", e.msg);
	if (m) {
		CHECK(strcmp(m->name, "org/my-model") == 0, "name '%s'", m->name);
		CHECK(m->index_path == NULL && m->config_path && strstr(m->config_path, "single/config.json"), "paths");
		CHECK(strcmp(m->path, P("single")) == 0 && strcmp(m->dir, P("single")) == 0, "dir '%s'", m->dir);
		CHECK(m->nshards == 1 && m->ntensors == 2, "counts");
		CHECK(strcmp(m->tensors[0]->name, "a.weight") == 0 && strcmp(m->tensors[1]->name, "z.weight") == 0,
		      "sorted by name");
		CHECK(m->tensor_shard[0] == 0 && m->tensor_shard[1] == 0, "shard indices");
		CHECK(lora_ckpt_find(m, "z.weight") == m->tensors[1] && !lora_ckpt_find(m, "q"), "model find");
		char fp[17];
		lora_ckpt_fingerprint(m, fp);
		unsigned long long h = 0xcbf29ce484222325ull;
		const unsigned char d3[8] = {3}, d2[8] = {2};
		h = fnv(h, "a.weight", 9), h = fnv(h, "BF16", 5), h = fnv(h, d3, 8);
		h = fnv(h, "z.weight", 9), h = fnv(h, "F32", 4), h = fnv(h, d2, 8), h = fnv(h, d2, 8);
		char want[17];
		snprintf(want, sizeof want, "%016llx", h);
		CHECK(strcmp(fp, want) == 0, "fingerprint %s, want %s", fp, want);
		lora_ckpt_close(m);
	}
	/* The file itself, with config.json beside it: the config still names it. */
	CHECK(lora_ckpt_open(&m, P("single/model.safetensors"), &e) == 0, "open file: %s", e.msg);
	if (m) {
		CHECK(strcmp(m->name, "org/my-model") == 0 && m->config_path, "file name '%s'", m->name);
		lora_ckpt_close(m);
	}
	/* Config without a usable name: directory base name. */
	put_file(P("single/config.json"), "{\"_name_or_path\": \"\"}", 21);
	CHECK(lora_ckpt_open(&m, P("single/"), &e) == 0, "open single/: %s", e.msg);
	if (m) {
		CHECK(strcmp(m->name, "single") == 0, "dir name '%s'", m->name);
		lora_ckpt_close(m);
	}
	put_file(P("single/config.json"), "{\"_name_or_path\": ", 18);
	MODEL_ERR(P("single"), LORA_EFORMAT, P("single/config.json"), "config.json: file is not valid JSON");
	unlink(P("single/config.json"));
	/* No config: a file is named after itself. */
	CHECK(lora_ckpt_open(&m, P("rt.safetensors"), &e) == 0, "open rt: %s", e.msg);
	if (m) {
		CHECK(strcmp(m->name, "rt") == 0 && !m->config_path && strcmp(m->dir, dir) == 0, "file name '%s'",
		      m->name);
		lora_ckpt_close(m);
	}

	/* Sharded. */
	mkdir(P("sh"), 0777);
	const lora_st_spec s1[] = {{"b", LORA_F32, 1, {2}}, {"a", LORA_F32, 1, {1}}};
	const lora_st_spec s2[] = {{"c", LORA_F16, 2, {2, 2}}};
	const char *n1 = N1, *n2 = N2;
	char p1[4200], p2[4200], idx[4200], buf[1024];
	snprintf(p1, sizeof p1, "%s/sh/%s", dir, n1);
	snprintf(p2, sizeof p2, "%s/sh/%s", dir, n2);
	snprintf(idx, sizeof idx, "%s/sh/model.safetensors.index.json", dir);
	CHECK(write_st(p1, s1, 2, NULL, 0, 0, 64, &e) == 0 && write_st(p2, s2, 1, NULL, 0, 0, 64, &e) == 0,
	      "write shards: %s", e.msg);
	put_config(P("sh/config.json"), "sharded");
	snprintf(buf, sizeof buf,
	         "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {\"a\": \"%s\", \"b\": \"%s\", \"c\": \"%s\"}}\n",
	         n1, n1, n2);
	put_file(idx, buf, strlen(buf));
	/* A stray model.safetensors loses to the index. */
	CHECK(write_st(P("sh/model.safetensors"), s2, 1, NULL, 0, 0, 64, &e) == 0, "write stray: %s", e.msg);
	const char *inputs[] = {P("sh"), idx};
	for (int k = 0; k < 2; k++) {
		CHECK(lora_ckpt_open(&m, inputs[k], &e) == 0, "open sharded %s: %s", inputs[k], e.msg);
		if (!m)
			continue;
		CHECK(m->index_path && strcmp(m->index_path, idx) == 0, "index path");
		CHECK(strcmp(m->name, "sharded") == 0, "sharded name '%s'", m->name);
		CHECK(m->nshards == 2 && m->ntensors == 3, "sharded counts %zu %zu", m->nshards, m->ntensors);
		const char *want[] = {"a", "b", "c"};
		size_t shard[] = {0, 0, 1};
		for (size_t i = 0; i < 3 && i < m->ntensors; i++)
			CHECK(strcmp(m->tensors[i]->name, want[i]) == 0 && m->tensor_shard[i] == shard[i],
			      "sharded tensor %zu", i);
		CHECK(strstr(m->shards[1]->path, n2) != NULL, "shard order");
		const lora_st_tensor *c = lora_ckpt_find(m, "c");
		CHECK(c && c->nbytes == 8 && ((const unsigned char *)c->data)[0] == pat(0, 0), "sharded data");
		lora_ckpt_close(m);
	}

	const char *bad[][2] = {
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"b\": \"" N1 "\", \"c\": \"" N2 "\", \"d\": \"" N1 "\"}}",
		 "tensor 'd' mapped to shard 'model-00001-of-00002.safetensors' which does not contain it"},
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"b\": \"" N1 "\", \"c\": \"model-00003.safetensors\"}}",
		 "model-00003.safetensors: No such file or directory"},
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"c\": \"" N2 "\"}}",
		 "tensor 'b' in shard 'model-00001-of-00002.safetensors' is not in the weight_map"},
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"b\": \"" N2 "\", \"c\": \"" N2 "\"}}",
		 "tensor 'b' mapped to shard 'model-00002-of-00002.safetensors' which does not contain it"},
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"b\": \"" N1 "\", \"c\": \"../sh/" N2 "\"}}",
		 "tensor 'c': shard '../sh/model-00002-of-00002.safetensors' is not a plain file name"},
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"b\": \"" N1 "\", \"c\": \"..\"}}", "shard '..' is not a plain"},
		/* a key twice: the last stands, as in Python */
		{"{\"weight_map\": {\"a\": \"" N1 "\", \"b\": \"" N1 "\", \"c\": \"" N2 "\", \"a\": \"..\"}}",
		 "shard '..' is not a plain"},
		{"{\"weight_map\": {\"a\": 1}}", "weight_map value for tensor 'a' is not a string"},
		{"{\"metadata\": {}}", "missing or empty \"weight_map\" object"},
		{"[]", "file is not a JSON object"},
	};
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		put_file(idx, bad[k][0], strlen(bad[k][0]));
		MODEL_ERR(P("sh"), k == 1 ? LORA_EIO : LORA_EFORMAT, idx, bad[k][1]);
	}
	/* Same tensor in two shards. */
	const lora_st_spec s2b[] = {{"c", LORA_F16, 2, {2, 2}}, {"b", LORA_F32, 1, {2}}};
	unlink(p2);
	CHECK(write_st(p2, s2b, 2, NULL, 0, 0, 64, &e) == 0, "write dup shard: %s", e.msg);
	snprintf(buf, sizeof buf, "{\"weight_map\": {\"a\": \"%s\", \"b\": \"%s\", \"c\": \"%s\"}}", n1, n2, n2);
	put_file(idx, buf, strlen(buf));
	MODEL_ERR(P("sh"), LORA_EFORMAT, idx,
	          "tensor 'b' is in shard 'model-00001-of-00002.safetensors' but the weight_map maps it to "
	          "'model-00002-of-00002.safetensors'");

	mkdir(P("nothing"), 0777);
	MODEL_ERR(P("nothing"), LORA_EIO, P("nothing"), "nothing: no model.safetensors or model.safetensors.index.json");
	MODEL_ERR(P("absent"), LORA_EIO, P("absent"), "absent: No such file or directory");
	put_file(P("bad.safetensors"), "abc", 3);
	MODEL_ERR(P("bad.safetensors"), LORA_EFORMAT, P("bad.safetensors"), "truncated");
}

static void rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char sub[4200];
	while (d && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
		struct stat sb;
		if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode))
			rm_tree(sub);
		else
			unlink(sub);
	}
	if (d)
		closedir(d);
	rmdir(path);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/test_safetensors.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		printf("FAIL: mkdtemp %s\n", dir);
		return 1;
	}
	test_roundtrip();
	test_empty();
	test_bad_files();
	test_writer_errors();
	test_direct();
	test_model();
	rm_tree(dir);
	if (nfails) {
		printf("FAIL: %d of %d checks failed\n", nfails, nchecks);
		return 1;
	}
	printf("ok %d checks\n", nchecks);
	return 0;
}
