#include "core/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* A key and its hash: the keys of an object are sorted by hash (integer
 * comparisons, no string walks), and only keys of equal hash are compared
 * as strings, themselves sorted, so that even keys made to collide cost
 * O(n log n). */
typedef struct {
	uint64_t h;
	const char *s;
} hkey;

static int cmp_hash(const void *a, const void *b)
{
	uint64_t x = ((const hkey *)a)->h, y = ((const hkey *)b)->h;
	return (x > y) - (x < y);
}

static int cmp_str(const void *a, const void *b) { return strcmp(((const hkey *)a)->s, ((const hkey *)b)->s); }

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

/* A key that appears twice in one object of the tree, or NULL. */
static const char *dup_key(const cJSON *j, int *nomem)
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
		for (const cJSON *c = j->child; c; c = c->next)
			v[n++] = (hkey){lora_rng_fnv1a(LORA_FNV_INIT, c->string, strlen(c->string)), c->string};
		if (n < 4096 || sort_hashes(v, n))
			qsort(v, n, sizeof *v, cmp_hash);
		for (size_t i = 0, k; i < n && !dup; i = k) {
			for (k = i + 1; k < n && v[k].h == v[i].h; k++)
				;
			if (k - i > 1)
				qsort(v + i, k - i, sizeof *v, cmp_str);
			for (size_t m = i + 1; m < k && !dup; m++)
				if (strcmp(v[m - 1].s, v[m].s) == 0)
					dup = v[m].s;
		}
		free(v);
	}
	for (const cJSON *c = j->child; c && !dup && !*nomem; c = c->next)
		dup = dup_key(c, nomem);
	return dup;
}

int lora_json_parse(cJSON **out, const char *path, const char *what, const char *s, size_t n,
                    lora_err *e)
{
	size_t at;
	const char *bad;
	int nomem = 0;
	*out = NULL;
	if ((at = lora_utf8_bad(s, n)) < n)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not valid UTF-8 (byte %zu)", path, what, at);
	if ((bad = bad_char((const unsigned char *)s, n, &at)))
		return lora_err_set(e, LORA_EFORMAT, "%s: %s contains a %s at byte %zu", path, what, bad, at);
	/* cJSON's require_null_terminated fails when the text ends exactly at
	 * the given length (1.7.15), so trailing bytes are checked here. */
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
	if (!j)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not valid JSON (error near byte %zu)", path,
		                    what, end ? (size_t)(end - s) : (size_t)0);
	for (const char *p = end; p < s + n; p++)
		if (!strchr(" \t\n\r", *p)) {
			cJSON_Delete(j);
			return lora_err_set(e, LORA_EFORMAT, "%s: %s has data after the JSON object (byte %zu)",
			                    path, what, (size_t)(p - s));
		}
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not a JSON object", path, what);
	}
	if ((bad = dup_key(j, &nomem)) || nomem) {
		int rc = nomem ? lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path)
		               : lora_err_set(e, LORA_EFORMAT, "%s: %s has the key '%s' twice in one object", path,
		                              what, bad);
		cJSON_Delete(j);
		return rc;
	}
	*out = j;
	return 0;
}

int lora_json_slurp(char **buf, size_t *len, const char *path, size_t max, lora_err *e)
{
	int rc = 0, fd;
	struct stat sb;
	*buf = NULL;
	if (!max)
		max = LORA_JSON_MAX_FILE;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		rc = lora_err_set(e, LORA_EIO, "%s: not a readable regular file", path);
		goto out;
	}
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
