/* Unit test for lib/io/gguf: the writer's bytes against a file laid out by
 * hand from the GGUF specification, reader round trips of every value type
 * and of F32/F16/BF16/Q8_0 tensors, q8_0 against values worked out by hand,
 * every validation error on files crafted byte by byte, every truncation of
 * a valid file, and writer misuse. Prints "ok N checks" at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/outfile_internal.h"
#include "io/gguf.h"

static char dir[4096];

static const char *P(const char *name)
{
	static char buf[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

/* A growable byte buffer for files laid out by hand. */
typedef struct {
	unsigned char b[4096];
	size_t n;
} buf;

/* v as n little-endian bytes (zeros past the eighth). */
static void u(buf *x, unsigned long long v, int n)
{
	for (int i = 0; i < n; i++)
		x->b[x->n++] = i < 8 ? (unsigned char)(v >> (8 * i)) : 0;
}
static void s(buf *x, const char *str)
{
	size_t n = strlen(str);
	u(x, n, 8);
	memcpy(x->b + x->n, str, n);
	x->n += n;
}
static void pad(buf *x, size_t a)
{
	while (x->n % a)
		x->b[x->n++] = 0;
}

static void put(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f)) {
		printf("FAIL cannot write %s\n", path);
		exit(1);
	}
}

static unsigned char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	static unsigned char b[1 << 16];
	*n = f ? fread(b, 1, sizeof b, f) : 0;
	if (f)
		fclose(f);
	return b;
}

/* Open path expecting failure with a message "<path>: <want...>". */
static void expect_err(int line, const char *path, const char *want)
{
	lora_gguf *g = (lora_gguf *)1;
	lora_err e = {0};
	int rc = lora_gguf_open(&g, path, &e);
	char full[8400];
	snprintf(full, sizeof full, "%s: %s", path, want);
	CHECK(rc == LORA_EFORMAT && g == NULL, "line %d: rc %d (%s)", line, rc, e.msg);
	CHECK(strcmp(e.msg, full) == 0, "line %d:\n  got  '%s'\n  want '%s'", line, e.msg, full);
	if (!rc)
		lora_gguf_close(g);
}
#define ERR(x, want) (put(P("bad.gguf"), (x)->b, (x)->n), expect_err(__LINE__, P("bad.gguf"), want))

/* The start of a file: magic, version, counts. */
static void head(buf *x, unsigned long long nt, unsigned long long nkv)
{
	x->n = 0;
	memcpy(x->b, "GGUF", 4);
	x->n = 4;
	u(x, 3, 4);
	u(x, nt, 8);
	u(x, nkv, 8);
}

/* The file of test_bytes, by hand: one u32 pair, one 2x1 F32 tensor. */
static void by_hand(buf *x)
{
	head(x, 1, 1);
	s(x, "a"), u(x, LORA_GGUF_U32, 4), u(x, 7, 4);
	s(x, "t"), u(x, 2, 4), u(x, 2, 8), u(x, 1, 8), u(x, LORA_GGML_F32, 4), u(x, 0, 8);
	pad(x, 32);
	u(x, 0x3f800000, 4), u(x, 0x40000000, 4); /* 1.0f, 2.0f */
	pad(x, 32);
}

static void test_bytes(void)
{
	buf want;
	by_hand(&want);
	CHECK(want.n == 128, "hand-made file is %zu bytes", want.n);
	lora_gguf_kvspec kv[] = {{.key = "a", .type = LORA_GGUF_U32, .v.u = 7}};
	lora_gguf_spec t[] = {{.name = "t", .type = LORA_GGML_F32, .ndim = 2, .ne = {2, 1}}};
	float v[2] = {1, 2};
	lora_gguf_writer *w;
	lora_err e = {0};
	int rc = lora_gguf_writer_open(&w, P("w.gguf"), kv, 1, t, 1, 0, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, v, 4, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, v + 1, 4, &e); /* in two calls */
	rc = rc ? rc : lora_gguf_writer_commit(w, &e);
	CHECK(rc == 0, "write: %s", e.msg);
	size_t n;
	unsigned char *got = slurp(P("w.gguf"), &n);
	CHECK(n == want.n && memcmp(got, want.b, n) == 0, "writer bytes differ from the hand-made file (%zu bytes)", n);
	lora_gguf *g;
	rc = lora_gguf_open(&g, P("w.gguf"), &e);
	CHECK(rc == 0, "open: %s", e.msg);
	if (rc)
		return;
	CHECK(g->version == 3 && g->nkv == 1 && g->ntensors == 1 && g->data_offset == 96 && g->alignment == 32,
	      "header fields");
	const lora_gguf_tensor *x = lora_gguf_find(g, "t");
	CHECK(x && x->ndim == 2 && x->ne[0] == 2 && x->ne[1] == 1 && x->ne[2] == 1 && x->nelem == 2 && x->nbytes == 8 &&
	          x->offset == 0 && x->data == (const unsigned char *)g->map + 96,
	      "tensor info");
	uint64_t a;
	CHECK(lora_gguf_kv_uint(lora_gguf_kv_find(g, "a"), 0, &a) == 0 && a == 7, "u32 value");
	CHECK(!lora_gguf_kv_find(g, "b") && !lora_gguf_find(g, "a"), "missing names");
	lora_gguf_close(g);
	/* an existing file needs force */
	rc = lora_gguf_writer_open(&w, P("w.gguf"), kv, 1, t, 1, 0, &e);
	CHECK(rc != 0 && strstr(e.msg, "exists"), "existing output: %s", e.msg);
}

static void test_round_trip(void)
{
	static const uint8_t u8s[] = {0, 255};
	static const int16_t i16s[] = {-32768, 5};
	static const double f64s[] = {0.1, -1e300, 4};
	static const uint8_t bools[] = {1, 0, 1};
	static const char *const strs[] = {"", "caf\xc3\xa9", "x"};
	lora_gguf_kvspec kv[] = {
		{.key = "general.alignment", .type = LORA_GGUF_U32, .v.u = 64},
		{.key = "u8", .type = LORA_GGUF_U8, .v.u = 200},
		{.key = "i8", .type = LORA_GGUF_I8, .v.i = -3},
		{.key = "u16", .type = LORA_GGUF_U16, .v.u = 65535},
		{.key = "i32", .type = LORA_GGUF_I32, .v.i = -70000},
		{.key = "u64", .type = LORA_GGUF_U64, .v.u = 18446744073709551615ull},
		{.key = "i64", .type = LORA_GGUF_I64, .v.i = 9},
		{.key = "f32", .type = LORA_GGUF_F32, .v.f = 0.1},
		{.key = "f64", .type = LORA_GGUF_F64, .v.f = 0.1},
		{.key = "bool", .type = LORA_GGUF_BOOL, .v.u = 1},
		{.key = "str", .type = LORA_GGUF_STRING, .v.s = "llama"},
		{.key = "a.u8", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_U8, .n = 2, .v.arr = u8s},
		{.key = "a.i16", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_I16, .n = 2, .v.arr = i16s},
		{.key = "a.f64", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_F64, .n = 3, .v.arr = f64s},
		{.key = "a.bool", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_BOOL, .n = 3, .v.arr = bools},
		{.key = "a.str", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_STRING, .n = 3, .v.arr = strs},
		{.key = "a.empty", .type = LORA_GGUF_ARRAY, .elem = LORA_GGUF_F32, .n = 0, .v.arr = NULL},
	};
	size_t nkv = sizeof kv / sizeof *kv;
	float x[64];
	for (int i = 0; i < 64; i++)
		x[i] = (float)(i - 20) / 8.0f;
	unsigned char f16[64 * 2], bf16[3 * 2], q8[2 * 34];
	lora_dtype_from_f32(f16, x, LORA_F16, 64);
	lora_dtype_from_f32(bf16, x, LORA_BF16, 3);
	lora_gguf_q8_0_quantize(q8, x, 64);
	lora_gguf_spec t[] = {
		{.name = "f32", .type = LORA_GGML_F32, .ndim = 1, .ne = {5}},
		{.name = "empty", .type = LORA_GGML_F32, .ndim = 2, .ne = {0, 3}},
		{.name = "f16", .type = LORA_GGML_F16, .ndim = 3, .ne = {4, 8, 2}},
		{.name = "bf16", .type = LORA_GGML_BF16, .ndim = 2, .ne = {3, 1}},
		{.name = "q8", .type = LORA_GGML_Q8_0, .ndim = 2, .ne = {32, 2}},
	};
	lora_gguf_writer *w;
	lora_err e = {0};
	int rc = lora_gguf_writer_open(&w, P("rt.gguf"), kv, nkv, t, 5, 0, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, x, 20, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, f16, sizeof f16, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, bf16, sizeof bf16, &e);
	rc = rc ? rc : lora_gguf_writer_write(w, q8, sizeof q8, &e);
	rc = rc ? rc : lora_gguf_writer_commit(w, &e);
	CHECK(rc == 0, "write: %s", e.msg);
	lora_gguf *g;
	if ((rc = lora_gguf_open(&g, P("rt.gguf"), &e))) {
		CHECK(0, "open: %s", e.msg);
		return;
	}
	CHECK(g->alignment == 64 && g->data_offset % 64 == 0 && g->nkv == nkv, "alignment 64");
	uint64_t v;
	double d;
	int b;
	const char *str;
	size_t len;
	CHECK(!lora_gguf_kv_uint(lora_gguf_kv_find(g, "u8"), 0, &v) && v == 200, "u8");
	CHECK(lora_gguf_kv_uint(lora_gguf_kv_find(g, "i8"), 0, &v) == -1, "negative i8 is no uint");
	CHECK(!lora_gguf_kv_uint(lora_gguf_kv_find(g, "u16"), 0, &v) && v == 65535, "u16");
	CHECK(!lora_gguf_kv_uint(lora_gguf_kv_find(g, "u64"), 0, &v) && v == 18446744073709551615ull, "u64");
	CHECK(!lora_gguf_kv_uint(lora_gguf_kv_find(g, "i64"), 0, &v) && v == 9, "i64");
	CHECK(!lora_gguf_kv_float(lora_gguf_kv_find(g, "f32"), 0, &d) && d == (double)0.1f, "f32 %.17g", d);
	CHECK(!lora_gguf_kv_float(lora_gguf_kv_find(g, "f64"), 0, &d) && d == 0.1, "f64");
	CHECK(lora_gguf_kv_float(lora_gguf_kv_find(g, "u8"), 0, &d) == -1, "u8 is no float");
	CHECK(!lora_gguf_kv_bool(lora_gguf_kv_find(g, "bool"), 0, &b) && b == 1, "bool");
	CHECK(!lora_gguf_kv_str(lora_gguf_kv_find(g, "str"), 0, &str, &len) && len == 5 && !memcmp(str, "llama", 5), "str");
	const lora_gguf_kv *a = lora_gguf_kv_find(g, "a.i16");
	CHECK(a && a->type == LORA_GGUF_ARRAY && a->elem == LORA_GGUF_I16 && a->n == 2, "i16 array");
	CHECK(a && lora_gguf_kv_uint(a, 0, &v) == -1 && !lora_gguf_kv_uint(a, 1, &v) && v == 5 &&
	          lora_gguf_kv_uint(a, 2, &v) == -1,
	      "i16 array values");
	a = lora_gguf_kv_find(g, "a.f64");
	CHECK(a && !lora_gguf_kv_float(a, 1, &d) && d == -1e300, "f64 array");
	a = lora_gguf_kv_find(g, "a.bool");
	CHECK(a && !lora_gguf_kv_bool(a, 0, &b) && b == 1 && !lora_gguf_kv_bool(a, 1, &b) && b == 0, "bool array");
	a = lora_gguf_kv_find(g, "a.str");
	CHECK(a && a->n == 3 && !lora_gguf_kv_str(a, 0, &str, &len) && len == 0 && !lora_gguf_kv_str(a, 1, &str, &len) &&
	          len == 5 && !memcmp(str, "caf\xc3\xa9", 5),
	      "string array");
	a = lora_gguf_kv_find(g, "a.empty");
	CHECK(a && a->n == 0 && lora_gguf_kv_float(a, 0, &d) == -1, "empty array");
	char desc[32];
	lora_gguf_kv_describe(lora_gguf_kv_find(g, "a.str"), desc, sizeof desc);
	CHECK(strcmp(desc, "arr[str]") == 0, "describe: %s", desc);
	float y[64];
	const lora_gguf_tensor *tt = lora_gguf_find(g, "f32");
	CHECK(tt && !lora_gguf_to_f32(y, tt) && !memcmp(y, x, 20), "f32 tensor");
	tt = lora_gguf_find(g, "f16");
	CHECK(tt && tt->nelem == 64 && tt->nbytes == 128 && !lora_gguf_to_f32(y, tt) && !memcmp(y, x, 64 * 4),
	      "f16 tensor (values exact in f16)");
	tt = lora_gguf_find(g, "bf16");
	CHECK(tt && !lora_gguf_to_f32(y, tt) && !memcmp(y, x, 12), "bf16 tensor");
	tt = lora_gguf_find(g, "q8");
	CHECK(tt && tt->nbytes == 68 && tt->nelem == 64 && !memcmp(tt->data, q8, 68), "q8_0 tensor bytes");
	tt = lora_gguf_find(g, "empty");
	CHECK(tt && tt->nbytes == 0 && tt->nelem == 0, "empty tensor");
	for (size_t i = 0; i < g->ntensors; i++)
		CHECK(g->tensors[i].offset % 64 == 0 && strcmp(g->tensors[i].name, t[i].name) == 0, "tensor %zu order", i);
	lora_gguf_close(g);
}

/* q8_0: a block of 0..31 has d = 31/127 in f16 and q = round(x * 127/31). */
static void test_q8_0(void)
{
	float x[32], y[32];
	unsigned char q[34];
	for (int i = 0; i < 32; i++)
		x[i] = (float)i;
	x[5] = -31; /* amax from a negative value */
	lora_gguf_q8_0_quantize(q, x, 32);
	uint16_t h = (uint16_t)(q[0] | q[1] << 8);
	CHECK(h == lora_dtype_f32_to_f16(31.0f / 127.0f), "scale %04x", h);
	CHECK((int8_t)q[2 + 5] == -127 && (int8_t)q[2 + 31] == 127 && (int8_t)q[2 + 0] == 0, "extremes");
	/* 1 * 127/31 = 4.0968 -> 4; 2 -> 8.19 -> 8; 3 -> 12.29 -> 12; 16 -> 65.55 -> 66 */
	CHECK((int8_t)q[3] == 4 && (int8_t)q[4] == 8 && (int8_t)q[5] == 12 && (int8_t)q[2 + 16] == 66, "rounding");
	lora_gguf_q8_0_dequantize(y, q, 32);
	float d = lora_dtype_f16_to_f32(h);
	CHECK(y[16] == d * 66 && y[5] == -127 * d, "dequantize");
	float z[32] = {0};
	lora_gguf_q8_0_quantize(q, z, 32);
	lora_gguf_q8_0_dequantize(y, q, 32);
	CHECK(q[0] == 0 && q[1] == 0 && y[7] == 0, "zero block");
}

static void test_errors(void)
{
	buf x;
	head(&x, 0, 0);
	x.n = 10;
	ERR(&x, "truncated: 10 bytes, shorter than the 24-byte GGUF header");
	head(&x, 0, 0);
	memcpy(x.b, "GGML", 4);
	ERR(&x, "not a GGUF file (it does not start with 'GGUF')");
	head(&x, 0, 0);
	x.b[4] = 1;
	ERR(&x, "GGUF version 1 is not supported (2 and 3 are)");
	head(&x, 0, 0);
	x.b[4] = 0, x.b[7] = 3; /* a big-endian file's version */
	ERR(&x, "GGUF version 50331648 is not supported (2 and 3 are)");
	head(&x, 1ull << 40, 0);
	ERR(&x, "0 key-value pairs and 1099511627776 tensors cannot fit in the file's 24 bytes");
	head(&x, 0, 2);
	s(&x, "kkkkk"), u(&x, LORA_GGUF_U8, 4), u(&x, 1, 1), s(&x, "k"), u(&x, LORA_GGUF_U8, 4);
	ERR(&x, "truncated in key 'k' (the file is 55 bytes)");
	head(&x, 0, 1);
	u(&x, 1ull << 62, 8), u(&x, 0, 8);
	ERR(&x, "key-value pair 0: string length 4611686018427387904 runs past the end of the file (40 bytes)");
	head(&x, 0, 1);
	s(&x, ""), u(&x, 0, 4), u(&x, 0, 2);
	ERR(&x, "key-value pair 0: the key is empty, holds a NUL or is not UTF-8");
	head(&x, 0, 1);
	s(&x, "\xff"), u(&x, 0, 4), u(&x, 0, 1);
	ERR(&x, "key-value pair 0: the key is empty, holds a NUL or is not UTF-8");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, 13, 4), u(&x, 0, 1);
	ERR(&x, "key 'k': unknown value type 13");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, LORA_GGUF_ARRAY, 4), u(&x, LORA_GGUF_ARRAY, 4), u(&x, 0, 8);
	ERR(&x, "key 'k': arrays of arrays are not supported");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, LORA_GGUF_ARRAY, 4), u(&x, 99, 4), u(&x, 0, 8);
	ERR(&x, "key 'k': unknown array element type 99");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, LORA_GGUF_ARRAY, 4), u(&x, LORA_GGUF_U32, 4), u(&x, 1ull << 61, 8);
	ERR(&x, "key 'k': array of 2305843009213693952 values runs past the end of the file (49 bytes)");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, LORA_GGUF_ARRAY, 4), u(&x, LORA_GGUF_U32, 4), u(&x, 3, 8), u(&x, 0, 8);
	ERR(&x, "truncated in key 'k' (the file is 57 bytes)");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, LORA_GGUF_ARRAY, 4), u(&x, LORA_GGUF_STRING, 4), u(&x, 2, 8), s(&x, "ab"), u(&x, 9, 8), u(&x, 0, 1);
	ERR(&x, "key 'k': string length 9 runs past the end of the file (68 bytes)");
	head(&x, 0, 1);
	s(&x, "k"), u(&x, LORA_GGUF_BOOL, 4), u(&x, 2, 1);
	ERR(&x, "key 'k': bool value 2 is neither 0 nor 1");
	head(&x, 0, 2);
	s(&x, "k"), u(&x, LORA_GGUF_U8, 4), u(&x, 1, 1);
	s(&x, "k"), u(&x, LORA_GGUF_U8, 4), u(&x, 1, 1);
	ERR(&x, "key 'k' is given twice");
	head(&x, 0, 1);
	s(&x, "general.alignment"), u(&x, LORA_GGUF_U64, 4), u(&x, 32, 8);
	ERR(&x, "key 'general.alignment' is u64, not u32");
	head(&x, 0, 1);
	s(&x, "general.alignment"), u(&x, LORA_GGUF_U32, 4), u(&x, 48, 4);
	ERR(&x, "general.alignment 48 is not a power of two");
	/* tensor infos */
	head(&x, 1, 0);
	s(&x, "t"), u(&x, 5, 4), u(&x, 0, 8);
	u(&x, 0, 8);
	ERR(&x, "tensor 't': 5 dimensions, at most 4");
	head(&x, 1, 0);
	s(&x, "0123456789012345678901234567890123456789012345678901234567890123"), u(&x, 1, 4);
	ERR(&x, "tensor info 0: name '0123456789012345678901234567890123456789...' is 64 bytes, longer than 63");
	head(&x, 1, 0);
	s(&x, "t"), u(&x, 1, 4), u(&x, 1ull << 63, 8), u(&x, 0, 4), u(&x, 0, 8);
	ERR(&x, "tensor 't': dimension 0 is negative");
	head(&x, 1, 0);
	s(&x, "t"), u(&x, 1, 4), u(&x, 4, 8), u(&x, 4, 4), u(&x, 0, 8);
	ERR(&x, "tensor 't': unknown ggml type 4");
	head(&x, 1, 0);
	s(&x, "t"), u(&x, 1, 4), u(&x, 48, 8), u(&x, LORA_GGML_Q8_0, 4), u(&x, 0, 8);
	ERR(&x, "tensor 't': Q8_0 rows of 48 values are not whole blocks of 32");
	head(&x, 1, 0);
	s(&x, "t"), u(&x, 2, 4), u(&x, 1ull << 62, 8), u(&x, 1ull << 62, 8), u(&x, 0, 4), u(&x, 0, 8);
	ERR(&x, "tensor 't': F32 ne {4611686018427387904, 4611686018427387904, 1, 1} overflows");
	head(&x, 2, 0);
	s(&x, "t"), u(&x, 1, 4), u(&x, 1, 8), u(&x, 0, 4), u(&x, 0, 8);
	s(&x, "t"), u(&x, 1, 4), u(&x, 1, 8), u(&x, 0, 4), u(&x, 32, 8);
	pad(&x, 32), u(&x, 0, 64);
	ERR(&x, "tensor 't' is given twice");
	head(&x, 2, 0);
	s(&x, "a"), u(&x, 1, 4), u(&x, 1, 8), u(&x, 0, 4), u(&x, 0, 8);
	s(&x, "b"), u(&x, 1, 4), u(&x, 1, 8), u(&x, 0, 4), u(&x, 4, 8);
	pad(&x, 32), u(&x, 0, 64);
	ERR(&x, "tensor 'b': offset 4, expected 32 (tensors lie back to back, each padded to 32 bytes)");
	head(&x, 1, 0);
	s(&x, "a"), u(&x, 1, 4), u(&x, 3, 8), u(&x, 0, 4), u(&x, 0, 8);
	pad(&x, 32), u(&x, 0, 8);
	ERR(&x, "tensor 'a': truncated: its 12 bytes at byte 64 run past the end of the file (72 bytes)");
	head(&x, 1, 0);
	s(&x, "a"), u(&x, 1, 4), u(&x, 3, 8), u(&x, 0, 4), u(&x, 0, 8);
	ERR(&x, "truncated before the data section (it would start at byte 64 of 57)");
	head(&x, 1, 0);
	s(&x, "a"), u(&x, 1, 4), u(&x, 3, 8), u(&x, 0, 4), u(&x, 0, 8);
	pad(&x, 32), u(&x, 0, 32), u(&x, 0, 1);
	ERR(&x, "1 trailing bytes after the last tensor");
	head(&x, 0, 0);
	u(&x, 0, 8), u(&x, 0, 1);
	ERR(&x, "1 trailing bytes after the header");
	/* A valid file: the last tensor's padding may be short or absent. */
	head(&x, 1, 0);
	s(&x, "a"), u(&x, 1, 4), u(&x, 3, 8), u(&x, 0, 4), u(&x, 0, 8);
	pad(&x, 32), u(&x, 0, 12);
	put(P("ok.gguf"), x.b, x.n);
	lora_gguf *g;
	lora_err e = {0};
	CHECK(lora_gguf_open(&g, P("ok.gguf"), &e) == 0, "unpadded last tensor: %s", e.msg);
	if (g)
		lora_gguf_close(g);
	/* Not regular files. */
	CHECK(lora_gguf_open(&g, dir, &e) == LORA_EIO && strstr(e.msg, "Is a directory"), "directory: %s", e.msg);
	CHECK(lora_gguf_open(&g, "/dev/null", &e) == LORA_EIO && strstr(e.msg, "not a regular file"), "device: %s", e.msg);
}

/* Every proper prefix of a valid file is refused, never read past. */
static void test_truncation(void)
{
	size_t n;
	unsigned char *b = slurp(P("rt.gguf"), &n), *copy = malloc(n);
	memcpy(copy, b, n);
	int all = 1;
	size_t last_data = 0;
	lora_gguf *g;
	lora_err e = {0};
	if (lora_gguf_open(&g, P("rt.gguf"), &e) == 0) {
		const lora_gguf_tensor *t = &g->tensors[g->ntensors - 1];
		last_data = g->data_offset + t->offset + t->nbytes;
		lora_gguf_close(g);
	}
	CHECK(last_data > 0 && last_data <= n, "last tensor end %zu of %zu", last_data, n);
	for (size_t k = 0; k < last_data; k++) {
		put(P("cut.gguf"), copy, k);
		int rc = lora_gguf_open(&g, P("cut.gguf"), &e);
		if (rc == 0) {
			lora_gguf_close(g);
			all = 0;
			printf("FAIL prefix of %zu bytes accepted\n", k);
			break;
		}
		if (rc != LORA_EFORMAT || strncmp(e.msg, P("cut.gguf"), strlen(P("cut.gguf"))) != 0) {
			all = 0;
			printf("FAIL prefix %zu: %s\n", k, e.msg);
			break;
		}
	}
	CHECK(all, "every prefix refused");
	free(copy);
}

static void test_writer_misuse(void)
{
	lora_gguf_writer *w;
	lora_err e = {0};
	lora_gguf_spec t[] = {{.name = "a", .type = LORA_GGML_F32, .ndim = 1, .ne = {2}},
	                      {.name = "a", .type = LORA_GGML_F32, .ndim = 1, .ne = {2}}};
	CHECK(lora_gguf_writer_open(&w, P("m.gguf"), NULL, 0, t, 2, 0, &e) == LORA_EINVAL &&
	          strstr(e.msg, "tensor 'a' is given twice"),
	      "duplicate tensor: %s", e.msg);
	lora_gguf_spec q[] = {{.name = "q", .type = LORA_GGML_Q8_0, .ndim = 1, .ne = {16}}};
	CHECK(lora_gguf_writer_open(&w, P("m.gguf"), NULL, 0, q, 1, 0, &e) == LORA_EINVAL, "q8_0 of 16: %s", e.msg);
	lora_gguf_kvspec kv[] = {{.key = "general.alignment", .type = LORA_GGUF_U32, .v.u = 3}};
	CHECK(lora_gguf_writer_open(&w, P("m.gguf"), kv, 1, t, 1, 0, &e) == LORA_EINVAL, "alignment 3: %s", e.msg);
	CHECK(access(P("m.gguf"), F_OK) != 0, "nothing written on refusal");
	float v[3] = {1, 2, 3};
	CHECK(lora_gguf_writer_open(&w, P("m.gguf"), NULL, 0, t, 1, 0, &e) == 0, "open");
	CHECK(lora_gguf_writer_write(w, v, 12, &e) == LORA_EINVAL &&
	          strstr(e.msg, "tensor 'a': write of 12 bytes exceeds the 8 bytes left of its 8"),
	      "overlong write: %s", e.msg);
	CHECK(lora_gguf_writer_write(w, v, 4, &e) == 0, "short write");
	CHECK(lora_gguf_writer_commit(w, &e) == LORA_EINVAL && strstr(e.msg, "tensor 'a': only 4 of 8 bytes written"),
	      "short commit: %s", e.msg);
	CHECK(access(P("m.gguf"), F_OK) != 0, "no output after a failed commit");
}

/* Large files go around the page cache (core/outfile): the same bytes as
 * through the cache, with tensors and padding across the 4 MiB buffers,
 * whatever the write sizes. */
static void test_direct(void)
{
	const lora_gguf_kvspec kv[] = {{.key = "general.architecture", .type = LORA_GGUF_STRING, .v.s = "llama"}};
	const lora_gguf_spec t[] = {
		{"big", LORA_GGML_F32, 1, {(1u << 20) * 2 + 1237}}, /* two buffers and a tail, padded */
		{"q", LORA_GGML_Q8_0, 2, {64, 3}},
		{"h", LORA_GGML_F16, 1, {7}},
	};
	size_t sizes[] = {((1u << 20) * 2 + 1237) * 4, 2 * 3 * 34, 14}, chunks[] = {1, 4095, 3u << 20};
	lora_err e = {0};
	for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
		for (int direct = 0; direct < 2; direct++) {
			lora_gguf_writer *w = NULL;
			lora_outfile_direct_min(direct ? 0 : UINT64_MAX);
			int rc = lora_gguf_writer_open(&w, P(direct ? "direct.gguf" : "cached.gguf"), kv, 1, t, 3, 1, &e);
			for (size_t i = 0; i < 3 && !rc; i++) {
				unsigned char *b = malloc(sizes[i]);
				for (size_t k = 0; k < sizes[i]; k++)
					b[k] = (unsigned char)(k * 7 + i);
				for (size_t k = 0; k < sizes[i] && !rc; k += chunks[c])
					rc = lora_gguf_writer_write(w, b + k, sizes[i] - k < chunks[c] ? sizes[i] - k : chunks[c], &e);
				free(b);
			}
			CHECK(rc == 0 && lora_gguf_writer_commit(w, &e) == 0, "write (direct %d, chunk %zu): %s", direct,
			      chunks[c], e.msg);
		}
		FILE *fa = fopen(P("cached.gguf"), "rb"), *fb = fopen(P("direct.gguf"), "rb");
		int same = fa && fb, x = 0, y = 0;
		size_t n = 0;
		while (same && (x = getc(fa)) == (y = getc(fb)) && x != EOF)
			n++;
		CHECK(same && x == EOF && y == EOF && n > sizes[0], "direct and cached files differ at %zu (chunk %zu)", n,
		      chunks[c]);
		if (fa)
			fclose(fa);
		if (fb)
			fclose(fb);
	}
	lora_gguf *g = NULL;
	CHECK(lora_gguf_open(&g, P("direct.gguf"), &e) == 0 && g->ntensors == 3, "reopen: %s", e.msg);
	lora_gguf_close(g);
	lora_outfile_direct_min(64u << 20);
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof dir, "%s/test_gguf.XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	test_bytes();
	test_round_trip();
	test_q8_0();
	test_errors();
	test_truncation();
	test_writer_misuse();
	test_direct();
	char cmd[4300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;
	DONE();
}
