/* Unit tests of the small core helpers every module shares: strict JSON,
 * UTF-8, paths, shapes, the out-of-memory error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/json.h"
#include "core/path.h"
#include "core/shape.h"
#include "core/utf8.h"

static void test_json(void)
{
	static const struct {
		const char *text, *msg; /* msg NULL: accepted */
	} cases[] = {
		{"{\"a\": {\"b\": 1, \"c\": [1, {\"d\": 2}]}, \"e\": \"x\"} \n\t", NULL},
		{"{\"a\": 1, \"b\": 2, \"a\": 3}", NULL},
		{"{\"a\": {\"k\": 1}, \"b\": {\"k\": 1}}", NULL},
		{"{\"a\": [{\"k\": 1, \"k\": 2}]}", NULL},
		{"{\"a\": 1} x", "f: file has data after the JSON object (byte 9)"},
		{"[1]", "f: file is not a JSON object"},
		{"{\"a\": \"\\u0000\"}", "f: file contains a \\u0000 escape at byte 7"},
		{"{\"a\": \"\x01\"}", "f: file contains a control character at byte 7"},
		{"{\"a\": \"\xc0\xaf\"}", "f: file is not valid UTF-8 (byte 7)"},
		{"{\"a\": ", "f: file is not valid JSON (error near byte 5)"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		cJSON *j = (cJSON *)1;
		lora_err e = {0, ""};
		int rc = lora_json_parse(&j, "f", "file", cases[i].text, strlen(cases[i].text), &e);
		if (!cases[i].msg)
			CHECK(rc == 0 && j, "json %zu: %s", i, e.msg);
		else
			CHECK(rc == LORA_EFORMAT && !j && strcmp(e.msg, cases[i].msg) == 0, "json %zu: rc %d '%s'", i, rc,
			      e.msg);
		cJSON_Delete(j);
	}
	/* a key given twice: the last one stands, as in Python, at any depth */
	static const char *twice = "{\"a\": 1, \"b\": {\"k\": 1, \"k\": [2], \"k\": 3}, \"a\": 4, \"a\": 5}";
	cJSON *t;
	lora_err te;
	CHECK(lora_json_parse(&t, "f", "file", twice, strlen(twice), &te) == 0, "twice: %s", te.msg);
	char *back = cJSON_PrintUnformatted(t);
	CHECK(back && strcmp(back, "{\"b\":{\"k\":3},\"a\":5}") == 0, "twice: last kept: %s", back);
	free(back);
	cJSON_Delete(t);
	size_t v;
	cJSON *n = cJSON_CreateNumber(9007199254740992.0);
	CHECK(lora_json_size(n, &v) == 0 && v == 9007199254740992ull, "2^53");
	cJSON_SetNumberValue(n, 9007199254740994.0);
	CHECK(lora_json_size(n, &v) == -1, "past 2^53");
	cJSON_SetNumberValue(n, 2.5);
	CHECK(lora_json_size(n, &v) == -1, "fraction");
	cJSON_SetNumberValue(n, -1);
	CHECK(lora_json_size(n, &v) == -1, "negative");
	cJSON_Delete(n);
}

static void test_utf8(void)
{
	static const struct {
		const char *s;
		size_t bad;
	} cases[] = {
		{"plain", 5},          {"\xc3\xa9t\xc3\xa9", 5}, {"\xf0\x9f\x98\x80", 4}, {"a\xc0\x80", 1},
		{"ab\xed\xa0\x80", 2}, {"\xf4\x90\x80\x80", 0},  {"x\xe2\x82", 1},        {"\x80", 0},
		{"\xf4\x8f\xbf\xbf", 4},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		CHECK(lora_utf8_bad(cases[i].s, strlen(cases[i].s)) == cases[i].bad, "utf8 %zu", i);
	CHECK(lora_utf8_valid("\xe2\x82\xac") && !lora_utf8_valid("\xe2\x82"), "valid");
}

static void test_path(void)
{
	static const char *const join[][3] = {
		{"d", "f", "d/f"}, {"d/", "f", "d/f"}, {"d//", "f", "d/f"}, {"/", "f", "/f"}, {"", "f", "f"},
	};
	for (size_t i = 0; i < sizeof join / sizeof *join; i++) {
		char *p = lora_path_join(join[i][0], join[i][1]);
		CHECK(p && strcmp(p, join[i][2]) == 0, "join '%s' '%s': %s", join[i][0], join[i][1], p);
		free(p);
	}
	static const char *const dir[][2] = {{"a/b/c", "a/b"}, {"c", "."}, {"/c", "/"}};
	for (size_t i = 0; i < sizeof dir / sizeof *dir; i++) {
		char *p = lora_path_dir(dir[i][0]);
		CHECK(p && strcmp(p, dir[i][1]) == 0, "dir '%s': %s", dir[i][0], p);
		free(p);
	}
	/* temporaries carry the writer's pid */
	static const char *const tmp[][2] = {{"a/b/c.lora", "a/b/.c.lora"}, {"c", ".c"}, {"/c", "/.c"}};
	for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) {
		char want[64], *p = lora_path_temp(tmp[i][0]);
		snprintf(want, sizeof want, "%s.lora-tmp.%ld.XXXXXX", tmp[i][1], (long)getpid());
		CHECK(p && strcmp(p, want) == 0, "temp '%s': %s", tmp[i][0], p);
		free(p);
	}
	CHECK(strcmp(lora_path_base("a/b/c.lora"), "c.lora") == 0 && strcmp(lora_path_base("c"), "c") == 0, "base");
	CHECK(lora_path_has_suffix("x.index.json", ".index.json") && !lora_path_has_suffix("json", ".json"), "suffix");
}

static void test_shape(void)
{
	char buf[LORA_SHAPE_STR];
	size_t s3[] = {4, 64, 128}, big[] = {SIZE_MAX / 2, 3}, n;
	CHECK(strcmp(lora_shape_format(buf, sizeof buf, s3, 3), "4x64x128") == 0, "3d: %s", buf);
	CHECK(strcmp(lora_shape_format(buf, sizeof buf, s3 + 1, 1), "64") == 0, "1d: %s", buf);
	CHECK(strcmp(lora_shape_format(buf, sizeof buf, s3, 0), "scalar") == 0, "0d: %s", buf);
	CHECK(lora_shape_bytes(s3, 3, 2, &n) == 0 && n == 65536, "bytes");
	CHECK(lora_shape_bytes(big, 2, 1, &n) == -1 && lora_shape_mul(SIZE_MAX / 2 + 1, 2, &n) == -1, "overflow");
	CHECK(lora_shape_alloc(SIZE_MAX / 4 + 1, 8) == NULL, "alloc overflow");
	void *p = lora_shape_alloc(0, 8);
	CHECK(p != NULL, "alloc 0");
	free(p);
	CHECK(lora_shape_min(3, 2) == 2 && lora_shape_min(2, 3) == 2, "min");
	/* growth doubles: the capacity stays under twice what was asked for,
	 * and what was there survives each move */
	int *v = NULL;
	size_t cap = 0, grows = 0;
	for (size_t i = 0; i < 1000; i++) {
		size_t was = cap;
		CHECK(lora_shape_grow(&v, &cap, i + 1, sizeof *v) == 0 && cap >= i + 1, "grow %zu", i);
		grows += cap != was;
		v[i] = (int)i;
	}
	CHECK(cap == 1024 && grows == 7, "cap %zu after %zu moves", cap, grows);
	CHECK(v[0] == 0 && v[511] == 511 && v[999] == 999, "contents");
	int *was = v;
	CHECK(lora_shape_grow(&v, &cap, SIZE_MAX / 4 + 1, 8) == -1 && v == was && cap == 1024, "grow overflow");
	CHECK(lora_shape_grow(&v, &cap, SIZE_MAX, 1) == -1 && v == was && cap == 1024, "doubling overflow");
	free(v);
}

/* The fast paths: a bad byte after ASCII runs of every length (read
 * eight bytes at a time), a key twice among thousands (sorted by hash). */
static void test_long(void)
{
	char s[64];
	for (size_t k = 0; k < 40; k++) {
		memset(s, 'a', k);
		memcpy(s + k, "\xff" "bbbbbbbbbbbbbbbbb", 18);
		CHECK(lora_utf8_bad(s, k + 18) == k, "utf8: bad byte after %zu ASCII bytes", k);
		memcpy(s + k, "\xc3\xa9" "bbbbbbbbbbbbbbbb", 18);
		CHECK(lora_utf8_bad(s, k + 18) == k + 18, "utf8: good after %zu ASCII bytes", k);
	}
	for (int twice = 0; twice < 2; twice++) {
		size_t cap = 200000, n = 0;
		char *j = malloc(cap);
		n += (size_t)snprintf(j + n, cap - n, "{");
		for (int i = 0; i < 9000; i++)
			n += (size_t)snprintf(j + n, cap - n, "\"k%d\": %d, ", i, i);
		n += (size_t)snprintf(j + n, cap - n, "\"%s\": 1}", twice ? "k4321" : "z");
		cJSON *o = NULL;
		lora_err e = {0};
		int rc = lora_json_parse(&o, "f", "file", j, n, &e);
		/* a key given twice: the last one stands, as Python reads it */
		cJSON *k = o ? cJSON_GetObjectItemCaseSensitive(o, "k4321") : NULL;
		CHECK(rc == 0 && cJSON_GetArraySize(o) == (twice ? 9000 : 9001) && k && k->valueint == (twice ? 1 : 4321),
		      "json: 9001 keys%s: %d %s", twice ? ", one twice" : "", rc, e.msg);
		cJSON_Delete(o);
		free(j);
	}
}

int main(void)
{
	test_json();
	test_long();
	test_utf8();
	test_path();
	test_shape();
	lora_err e = {0, ""};
	CHECK(lora_err_nomem(&e) == LORA_ENOMEM && e.code == LORA_ENOMEM && strcmp(e.msg, "out of memory") == 0,
	      "nomem: %s", e.msg);
	DONE();
}
