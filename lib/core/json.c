#include "core/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/path.h"
#include "core/rng.h"
#include "core/utf8.h"

#define MAX_EXACT 9007199254740992.0

/* JSON allows no raw control characters (tab, LF and CR only as
 * whitespace), and cJSON returns strings NUL-terminated, so a "\u0000"
 * escape would silently cut a name short: refuse both. Returns what was
 * found (and its offset in *at) or NULL. */
static const char *bad_char(const unsigned char *s, size_t n, size_t *at)
{
	/* only control characters, quotes and backslashes matter */
	static const unsigned char stop[256] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	                                        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	                                        ['"'] = 1, ['\\'] = 1};
	int in_str = 0;
	for (size_t i = 0; i < n; i++) {
		while (i < n && !stop[s[i]])
			i++;
		if (i == n)
			break;
		unsigned c = s[i];
		*at = i;
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
			return "control character";
		if (!in_str) {
			in_str = c == '"';
		} else if (c == '"') {
			in_str = 0;
		} else if (c == '\\' && i + 1 < n) {
			if (n - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0)
				return "\\u0000 escape";
			i++;
		}
	}
	return NULL;
}

/* cJSON answers NULL both for bad text and for a failed allocation: its
 * allocator notes the second, so that running out of memory is reported
 * as such, not as invalid JSON. */
static _Thread_local int cjson_oom;

static void *cjson_malloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		cjson_oom = 1;
	return p;
}

static void hooks(void)
{
	static cJSON_Hooks h = {cjson_malloc, free};
	cJSON_InitHooks(&h);
	cjson_oom = 0;
}

/* A key, its hash and its place: the keys of an object are sorted by
 * hash (integer comparisons, no string walks), and only keys of equal hash
 * are compared as strings, then by place, so that even keys made to
 * collide cost O(n log n). */
typedef struct {
	uint64_t h;
	cJSON *item;
	size_t pos;
} hkey;

static int cmp_hash(const void *a, const void *b)
{
	uint64_t x = ((const hkey *)a)->h, y = ((const hkey *)b)->h;
	return (x > y) - (x < y);
}

static int cmp_key(const void *a, const void *b)
{
	const hkey *x = a, *y = b;
	int c = strcmp(x->item->string, y->item->string);
	return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* v[0..n) sorted by hash, least significant 16 bits first (an object of
 * a tokenizer.json holds some 150k keys); -1 without memory. */
static int sort_hashes(hkey *v, size_t n)
{
	hkey *t = malloc(n * sizeof *t), *a = v, *b = t;
	size_t *count = calloc(1u << 16, sizeof *count);
	if (!t || !count) {
		free(t), free(count);
		return -1;
	}
	for (int shift = 0; shift < 64; shift += 16) {
		memset(count, 0, (1u << 16) * sizeof *count);
		for (size_t i = 0; i < n; i++)
			count[a[i].h >> shift & 0xffff]++;
		for (size_t d = 0, sum = 0; d < 1u << 16; d++) {
			size_t c = count[d];
			count[d] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			b[count[a[i].h >> shift & 0xffff]++] = a[i];
		hkey *x = a;
		a = b, b = x;
	}
	/* four passes: the sorted keys are back in v */
	free(t), free(count);
	return 0;
}

/* Keys given twice in one object, anywhere in the tree: with refuse, the
 * first such key is returned; otherwise every earlier one is removed, so
 * the last one given stands, as Python's json module reads it. Sorting the
 * keys of each object keeps it O(n log n) for any input. Returns NULL when
 * done (*nomem = 1 if memory ran out). */
static const char *dup_keys(cJSON *j, int refuse, int *nomem)
{
	const char *dup = NULL;
	size_t n = 0;
	for (const cJSON *c = j->child; c; c = c->next)
		n++;
	if (cJSON_IsObject(j) && n > 1) {
		hkey *v = malloc(n * sizeof *v);
		if (!v) {
			*nomem = 1;
			return NULL;
		}
		n = 0;
		for (cJSON *c = j->child; c; c = c->next, n++)
			v[n] = (hkey){lora_rng_fnv1a(LORA_FNV_INIT, c->string, strlen(c->string)), c, n};
		if (n < 4096 || sort_hashes(v, n))
			qsort(v, n, sizeof *v, cmp_hash);
		for (size_t i = 0, k; i < n && !dup; i = k) {
			for (k = i + 1; k < n && v[k].h == v[i].h; k++)
				;
			if (k - i > 1)
				qsort(v + i, k - i, sizeof *v, cmp_key);
			for (size_t m = i + 1; m < k && !dup; m++) {
				if (strcmp(v[m - 1].item->string, v[m].item->string) != 0)
					continue;
				if (refuse)
					dup = v[m].item->string;
				else
					cJSON_Delete(cJSON_DetachItemViaPointer(j, v[m - 1].item));
			}
		}
		free(v);
	}
	for (cJSON *c = j->child; c && !dup && !*nomem; c = c->next)
		dup = dup_keys(c, refuse, nomem);
	return dup;
}

/* The text checks cJSON does not make (UTF-8, control characters). */
static int text_ok(const char *path, const char *what, const char *s, size_t n, lora_err *e)
{
	size_t at;
	const char *bad;
	if ((at = lora_utf8_bad(s, n)) < n)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not valid UTF-8 (byte %zu)", path, what, at);
	if ((bad = bad_char((const unsigned char *)s, n, &at)))
		return lora_err_set(e, LORA_EFORMAT, "%s: %s contains a %s at byte %zu", path, what, bad, at);
	return 0;
}

static int not_json(const char *path, const char *what, size_t at, lora_err *e)
{
	if (cjson_oom)
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory reading the %s", path, what);
	return lora_err_set(e, LORA_EFORMAT, "%s: %s is not valid JSON (error near byte %zu)", path, what, at);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* One JSON value of s[0, n) parsed strictly (base: its offset in the
 * whole text, for messages); only whitespace may follow it. */
static int parse_value(cJSON **out, const char *path, const char *what, const char *s, size_t n, size_t base,
                       int refuse, lora_err *e)
{
	const char *bad;
	int nomem = 0;
	/* cJSON's require_null_terminated fails when the text ends exactly at
	 * the given length (1.7.15), so trailing bytes are checked here. */
	const char *end = NULL;
	hooks();
	cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
	*out = NULL;
	if (!j)
		return not_json(path, what, base + (end ? (size_t)(end - s) : 0), e);
	for (const char *p = end; p < s + n; p++)
		if (!is_ws(*p)) {
			cJSON_Delete(j);
			return base ? not_json(path, what, base + (size_t)(p - s), e)
			            : lora_err_set(e, LORA_EFORMAT, "%s: %s has data after the JSON object (byte %zu)",
			                           path, what, (size_t)(p - s));
		}
	if ((bad = dup_keys(j, refuse, &nomem)) || nomem) {
		int rc = nomem ? lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path)
		               : lora_err_set(e, LORA_EFORMAT, "%s: %s has the key '%s' twice in one object", path,
		                              what, bad);
		cJSON_Delete(j);
		return rc;
	}
	*out = j;
	return 0;
}

int lora_json_parse(cJSON **out, const char *path, const char *what, const char *s, size_t n,
                    lora_err *e)
{
	int rc;
	*out = NULL;
	if ((rc = text_ok(path, what, s, n, e)) || (rc = parse_value(out, path, what, s, n, 0, 0, e)))
		return rc;
	if (!cJSON_IsObject(*out)) {
		cJSON_Delete(*out);
		*out = NULL;
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not a JSON object", path, what);
	}
	return 0;
}

/* The end of the JSON string literal opening at s[i] (just past its
 * closing quote), or n. The text passed bad_char, so escapes are whole. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
	for (i++; i < n && s[i] != '"'; i++)
		if (s[i] == '\\')
			i++;
	return i < n ? i + 1 : n;
}

/* The end of the JSON value starting at s[i]: a balanced {...} or [...],
 * a string, or a bare word or number. Invalid text inside is left for
 * cJSON to name. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
	size_t depth = 0;
	if (i < n && s[i] == '"')
		return skip_string(s, i, n);
	if (i < n && s[i] != '{' && s[i] != '[') {
		while (i < n && !is_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']')
			i++;
		return i;
	}
	for (; i < n; i++) {
		if (s[i] == '"')
			i = skip_string(s, i, n) - 1;
		else if (s[i] == '{' || s[i] == '[')
			depth++;
		else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
			return i + 1;
	}
	return n;
}

int lora_json_each(const char *path, const char *what, const char *s, size_t n,
                   int (*f)(void *ctx, cJSON *member, lora_err *e), void *ctx, lora_err *e)
{
	int rc;
	size_t i = 0;
	if ((rc = text_ok(path, what, s, n, e)))
		return rc;
#define WS() while (i < n && is_ws(s[i])) i++
	WS();
	if (i == n || s[i] != '{')
		return i < n && s[i] != '{' && s[i] != '[' ? lora_err_set(e, LORA_EFORMAT, "%s: %s is not a JSON object", path, what)
		                                          : not_json(path, what, i, e);
	i++;
	WS();
	if (i < n && s[i] == '}')
		i++;
	else
		for (;;) {
			cJSON *k = NULL, *v = NULL;
			if (i == n || s[i] != '"')
				return not_json(path, what, i, e);
			size_t ke = skip_string(s, i, n);
			if ((rc = parse_value(&k, path, what, s + i, ke - i, i, 1, e)))
				return rc;
			i = ke;
			WS();
			if (i == n || s[i] != ':') {
				cJSON_Delete(k);
				return not_json(path, what, i, e);
			}
			i++;
			WS();
			size_t ve = skip_value(s, i, n);
			if ((rc = parse_value(&v, path, what, s + i, ve - i, i, 1, e))) {
				cJSON_Delete(k);
				return rc;
			}
			/* the member as cJSON would have made it: the key in ->string */
			v->string = k->valuestring;
			k->valuestring = NULL;
			cJSON_Delete(k);
			rc = f(ctx, v, e);
			cJSON_Delete(v);
			if (rc)
				return rc;
			i = ve;
			WS();
			if (i < n && s[i] == ',') {
				i++;
				WS();
				continue;
			}
			if (i < n && s[i] == '}') {
				i++;
				break;
			}
			return not_json(path, what, i, e);
		}
	WS();
#undef WS
	if (i < n)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s has data after the JSON object (byte %zu)", path, what, i);
	return 0;
}

int lora_json_slurp(char **buf, size_t *len, const char *path, size_t max, lora_err *e)
{
	int rc = 0, fd;
	struct stat sb;
	*buf = NULL;
	if (!max)
		max = LORA_JSON_MAX_FILE;
	if ((fd = lora_path_open_file(path, &sb, e)) < 0)
		return fd;
	if ((uintmax_t)sb.st_size > max) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: %lld bytes is too large for a JSON file (limit %zu)",
		                  path, (long long)sb.st_size, max);
		goto out;
	}
	size_t n = (size_t)sb.st_size, have = 0;
	if (!(*buf = malloc(n + 1))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	while (have < n) {
		ssize_t k = read(fd, *buf + have, n - have);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			rc = k < 0 ? lora_err_set(e, LORA_EIO, "%s: read error: %s", path, strerror(errno))
			           : lora_err_set(e, LORA_EIO, "%s: file shrank while being read", path);
			goto out;
		}
		have += (size_t)k;
	}
	(*buf)[n] = 0;
	*len = n;
out:
	close(fd);
	if (rc) {
		free(*buf);
		*buf = NULL;
	}
	return rc;
}

int lora_json_read_file(cJSON **out, const char *path, size_t max, lora_err *e)
{
	char *buf;
	size_t n;
	*out = NULL;
	int rc = lora_json_slurp(&buf, &n, path, max, e);
	if (!rc)
		rc = lora_json_parse(out, path, "file", buf, n, e);
	free(buf);
	return rc;
}

int lora_json_size(const cJSON *j, size_t *v)
{
	if (!cJSON_IsNumber(j))
		return -1;
	double d = j->valuedouble;
	if (!(d >= 0 && d <= MAX_EXACT) || (double)(uint64_t)d != d || (uint64_t)d > SIZE_MAX)
		return -1;
	*v = (size_t)d;
	return 0;
}

void lora_json_write_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}
