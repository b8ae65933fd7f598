#include "core/json.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/path.h"
#include "core/utf8.h"

#define MAX_EXACT 9007199254740992.0

/* JSON allows no raw control characters (tab, LF and CR only as
 * whitespace), and cJSON returns strings NUL-terminated, so a "\u0000"
 * escape would silently cut a name short: refuse both. Returns what was
 * found (and its offset in *at) or NULL. */
static const char *bad_char(const unsigned char *s, size_t n, size_t *at)
{
	int in_str = 0;
	for (size_t i = 0; i < n; i++) {
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

static int cmp_key(const void *a, const void *b)
{
	return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* The first key that appears twice in one object of the tree, or NULL.
 * Sorting the keys of each object keeps it O(n log n) for any input. */
static const char *dup_key(const cJSON *j, int *nomem)
{
	const char *dup = NULL;
	size_t n = 0;
	for (const cJSON *c = j->child; c; c = c->next)
		n++;
	if (cJSON_IsObject(j) && n > 1) {
		const cJSON **v = malloc(n * sizeof *v);
		if (!v) {
			*nomem = 1;
			return NULL;
		}
		n = 0;
		for (const cJSON *c = j->child; c; c = c->next)
			v[n++] = c;
		qsort(v, n, sizeof *v, cmp_key);
		for (size_t i = 1; i < n && !dup; i++)
			if (strcmp(v[i - 1]->string, v[i]->string) == 0)
				dup = v[i]->string;
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
