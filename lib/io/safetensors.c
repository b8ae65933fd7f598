#include "io/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/outfile.h"

/* JSON numbers reach us as doubles; above 2^53 a double no longer names a
 * single integer, so sizes and offsets beyond it are refused. */
#define MAX_EXACT 9007199254740992.0

/* Files bigger than this are not plausible index.json or config.json. */
#define MAX_JSON_FILE (64u << 20)

/* What lora_st_open hands out: the public struct plus a name index for
 * lora_st_find (binary search). */
typedef struct {
	lora_st st;
	lora_st_tensor **by_name;
} stfile;

/* Zero-byte tensors of a file with an empty data section point here, so
 * that data is never NULL. */
static const unsigned char no_data[1];

/* ---- text checks shared by the header, index.json and config.json ---- */

/* Offset of the first byte that breaks strict UTF-8 (overlong forms,
 * surrogates and code points above U+10FFFF included), or n if none. */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t len;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (n - i < len)
			return i;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += len;
	}
	return n;
}

/* JSON allows no raw control characters (tab, LF and CR only as
 * whitespace), and cJSON returns strings NUL-terminated, so a "\u0000"
 * escape would silently cut a tensor name short: refuse both. Returns what
 * was found (and its offset in *at) or NULL. */
static const char *json_bad_char(const unsigned char *s, size_t n, size_t *at)
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

static int json_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Parse n bytes of JSON text that must be one object, with only whitespace
 * after it. what names the text in messages ("header"). */
static int parse_json(cJSON **out, const char *path, const char *what, const char *s, size_t n,
                      lora_err *e)
{
	size_t at;
	const char *bad;
	*out = NULL;
	if ((at = utf8_bad((const unsigned char *)s, n)) < n)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not valid UTF-8 (byte %zu)", path, what, at);
	if ((bad = json_bad_char((const unsigned char *)s, n, &at)))
		return lora_err_set(e, LORA_EFORMAT, "%s: %s contains a %s at byte %zu", path, what, bad, at);
	/* cJSON's require_null_terminated fails when the text ends exactly at
	 * the given length (1.7.15), so trailing bytes are checked here. */
	const char *end = NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
	if (!j)
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not valid JSON (error near byte %zu)", path,
		                    what, end ? (size_t)(end - s) : (size_t)0);
	for (const char *p = end; p < s + n; p++)
		if (!json_space((unsigned char)*p)) {
			cJSON_Delete(j);
			return lora_err_set(e, LORA_EFORMAT, "%s: %s has data after the JSON object (byte %zu)",
			                    path, what, (size_t)(p - s));
		}
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return lora_err_set(e, LORA_EFORMAT, "%s: %s is not a JSON object", path, what);
	}
	*out = j;
	return 0;
}

/* Read n bytes at off; a short read means the file shrank under us. */
static int pread_full(int fd, void *buf, size_t n, size_t off, const char *path, lora_err *e)
{
	unsigned char *p = buf;
	while (n) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return lora_err_set(e, LORA_EIO, "%s: read error: %s", path, strerror(errno));
		if (r == 0)
			return lora_err_set(e, LORA_EIO, "%s: unexpected end of file", path);
		p += r, off += (size_t)r, n -= (size_t)r;
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---- reader ---- */

/* Accept only exact integers in [0, 2^53]. */
static int json_size(const cJSON *j, size_t *v)
{
	if (!cJSON_IsNumber(j))
		return -1;
	double d = j->valuedouble;
	if (!(d >= 0 && d <= MAX_EXACT) || (double)(uint64_t)d != d || (uint64_t)d > SIZE_MAX)
		return -1;
	*v = (size_t)d;
	return 0;
}

static void fmt_shape(char *buf, size_t cap, const size_t *shape, size_t ndim)
{
	size_t k = (size_t)snprintf(buf, cap, "[");
	for (size_t i = 0; i < ndim && k < cap; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%zu", i ? "," : "", shape[i]);
	if (k < cap)
		snprintf(buf + k, cap - k, "]");
}

static int parse_tensor(lora_st_tensor *t, const cJSON *j, size_t data_size, const char *path,
                        lora_err *e)
{
	const char *name = j->string;
	if (!cJSON_IsObject(j))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
	const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
	const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
	if (!cJSON_IsString(dt))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': missing \"dtype\" string", path, name);
	if (lora_dtype_from_st(dt->valuestring, &t->dtype))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
		                    dt->valuestring);
	if (!cJSON_IsArray(sh))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': missing \"shape\" array", path, name);
	int nd = cJSON_GetArraySize(sh);
	if (nd > LORA_MAX_DIMS)
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shape has %d dimensions, at most %d supported",
		                    path, name, nd, LORA_MAX_DIMS);
	t->ndim = (size_t)nd;
	size_t i = 0;
	for (const cJSON *d = sh->child; d; d = d->next, i++)
		if (json_size(d, &t->shape[i])) {
			if (cJSON_IsNumber(d))
				return lora_err_set(e, LORA_EFORMAT,
				                    "%s: tensor '%s': shape[%zu] is %.17g, not a non-negative integer",
				                    path, name, i, d->valuedouble);
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shape[%zu] is not a number", path,
			                    name, i);
		}
	size_t begin, end;
	if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_size(off->child, &begin) ||
	    json_size(off->child->next, &end))
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: tensor '%s': data_offsets must be [begin, end], non-negative integers",
		                    path, name);
	if (end < begin)
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': data_offsets [%zu,%zu] end before they begin",
		                    path, name, begin, end);
	if (end > data_size)
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: tensor '%s': data_offsets [%zu,%zu] run past the end of the %zu-byte data section",
		                    path, name, begin, end, data_size);
	char sbuf[256];
	fmt_shape(sbuf, sizeof sbuf, t->shape, t->ndim);
	const char *dn = lora_dtype_st_name(t->dtype);
	if (lora_shape_bytes(t->shape, t->ndim, 1, &t->nelem) ||
	    lora_shape_bytes(t->shape, t->ndim, lora_dtype_size(t->dtype), &t->nbytes))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shape %s x %s overflows", path, name, sbuf, dn);
	if (t->nbytes != end - begin)
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: tensor '%s': shape %s x %s is %zu bytes but data_offsets span %zu", path,
		                    name, sbuf, dn, t->nbytes, end - begin);
	t->offset = begin;
	return 0;
}

static int parse_meta(lora_st *st, const cJSON *j, lora_err *e)
{
	const char *path = st->path;
	if (!cJSON_IsObject(j))
		return lora_err_set(e, LORA_EFORMAT, "%s: __metadata__ is not an object", path);
	size_t n = (size_t)cJSON_GetArraySize(j);
	st->meta = calloc(n ? n : 1, sizeof *st->meta);
	const char **keys = malloc((n ? n : 1) * sizeof *keys);
	int rc = 0;
	if (!st->meta || !keys) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (const cJSON *m = j->child; m; m = m->next) {
		if (!cJSON_IsString(m)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: __metadata__ value for key '%s' is not a string",
			                  path, m->string);
			goto out;
		}
		lora_st_meta *d = &st->meta[st->nmeta++];
		d->key = strdup(m->string);
		d->value = strdup(m->valuestring);
		if (!d->key || !d->value) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		keys[st->nmeta - 1] = d->key;
	}
	qsort(keys, n, sizeof *keys, cmp_str);
	for (size_t i = 1; i < n; i++)
		if (strcmp(keys[i - 1], keys[i]) == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: duplicate __metadata__ key '%s'", path, keys[i]);
			goto out;
		}
out:
	free(keys);
	return rc;
}

/* File order; zero-byte tensors sharing an offset are ordered by name so
 * the result does not depend on qsort. */
static int cmp_offset(const void *a, const void *b)
{
	const lora_st_tensor *x = a, *y = b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int cmp_tname(const void *a, const void *b)
{
	const lora_st_tensor *x = *(lora_st_tensor *const *)a, *y = *(lora_st_tensor *const *)b;
	return strcmp(x->name, y->name);
}

static int parse_header(stfile *f, const char *hdr, size_t n, size_t data_size, lora_err *e)
{
	lora_st *st = &f->st;
	const char *path = st->path;
	cJSON *root = NULL;
	int rc;
	/* The reference implementation insists on '{' first (no BOM, no
	 * leading whitespace); so do we. */
	if (n == 0 || hdr[0] != '{')
		return lora_err_set(e, LORA_EFORMAT, "%s: header does not start with '{'", path);
	if ((rc = parse_json(&root, path, "header", hdr, n, e)))
		return rc;
	size_t nt = 0;
	const cJSON *meta = NULL;
	for (const cJSON *j = root->child; j; j = j->next) {
		if (strcmp(j->string, "__metadata__") != 0) {
			nt++;
		} else if (meta) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: duplicate __metadata__", path);
			goto out;
		} else {
			meta = j;
		}
	}
	if (meta && (rc = parse_meta(st, meta, e)))
		goto out;
	st->tensors = calloc(nt ? nt : 1, sizeof *st->tensors);
	f->by_name = malloc((nt ? nt : 1) * sizeof *f->by_name);
	if (!st->tensors || !f->by_name) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (const cJSON *j = root->child; j; j = j->next) {
		if (j == meta)
			continue;
		lora_st_tensor *t = &st->tensors[st->ntensors++];
		if (!(t->name = strdup(j->string))) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		if ((rc = parse_tensor(t, j, data_size, path, e)))
			goto out;
	}
	qsort(st->tensors, nt, sizeof *st->tensors, cmp_offset);
	/* cJSON keeps duplicate keys; sorting names finds them. */
	for (size_t i = 0; i < nt; i++)
		f->by_name[i] = &st->tensors[i];
	qsort(f->by_name, nt, sizeof *f->by_name, cmp_tname);
	for (size_t i = 1; i < nt; i++)
		if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: duplicate tensor name '%s'", path, f->by_name[i]->name);
			goto out;
		}
	/* The data section must be exactly the tensors, back to back. */
	size_t pos = 0;
	for (size_t i = 0; i < nt; i++) {
		const lora_st_tensor *t = &st->tensors[i];
		if (t->offset > pos && i == 0)
			rc = lora_err_set(e, LORA_EFORMAT, "%s: %zu-byte gap before tensor '%s' at the start of the data",
			                  path, t->offset - pos, t->name);
		else if (t->offset > pos)
			rc = lora_err_set(e, LORA_EFORMAT, "%s: %zu-byte gap between tensor '%s' and tensor '%s'", path,
			                  t->offset - pos, st->tensors[i - 1].name, t->name);
		else if (t->offset < pos)
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' overlaps tensor '%s'", path,
			                  st->tensors[i - 1].name, t->name);
		if (rc)
			goto out;
		pos = t->offset + t->nbytes;
	}
	if (pos != data_size)
		rc = lora_err_set(e, LORA_EFORMAT, "%s: %zu trailing bytes after the last tensor (data section is %zu bytes)",
		                  path, data_size - pos, data_size);
out:
	cJSON_Delete(root);
	return rc;
}

int lora_st_open(lora_st **out, const char *path, lora_err *e)
{
	int rc = 0, fd;
	char *hdr = NULL;
	stfile *f = NULL;
	struct stat sb;
	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(sb.st_mode)) {
		rc = lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(EISDIR));
		goto out;
	}
	/* Pipes and devices have no size to validate offsets against. */
	if (!S_ISREG(sb.st_mode)) {
		rc = lora_err_set(e, LORA_EIO, "%s: not a regular file", path);
		goto out;
	}
	if ((uintmax_t)sb.st_size > SIZE_MAX) {
		rc = lora_err_set(e, LORA_EIO, "%s: file too large", path);
		goto out;
	}
	size_t size = (size_t)sb.st_size;
	if (size < 8) {
		rc = lora_err_set(e, LORA_EFORMAT,
		                  "%s: truncated: file is %zu bytes, shorter than the 8-byte header length", path, size);
		goto out;
	}
	unsigned char lb[8];
	if ((rc = pread_full(fd, lb, 8, 0, path, e)))
		goto out;
	uint64_t n = 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | lb[i];
	if (n > LORA_ST_MAX_HEADER) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
		                  (unsigned long long)n, LORA_ST_MAX_HEADER);
		goto out;
	}
	if (n > size - 8) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header length %llu exceeds file size %zu", path,
		                  (unsigned long long)n, size);
		goto out;
	}
	f = calloc(1, sizeof *f);
	hdr = malloc(n ? n : 1);
	if (!f || !hdr || !(f->st.path = strdup(path))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if ((rc = pread_full(fd, hdr, n, 8, path, e)))
		goto out;
	lora_st *st = &f->st;
	st->file_size = size;
	st->header_size = n;
	size_t data_start = 8 + n, data_size = size - data_start;
	if ((rc = parse_header(f, hdr, n, data_size, e)))
		goto out;
	/* Map only after validation, and never with length 0. */
	const unsigned char *data = no_data;
	if (data_size) {
		st->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (st->map == MAP_FAILED) {
			st->map = NULL;
			rc = lora_err_set(e, LORA_EIO, "%s: mmap: %s", path, strerror(errno));
			goto out;
		}
		data = (const unsigned char *)st->map + data_start;
	}
	for (size_t i = 0; i < st->ntensors; i++)
		st->tensors[i].data = data + st->tensors[i].offset;
	*out = st;
out:
	close(fd);
	free(hdr);
	if (rc && f)
		lora_st_close(&f->st);
	return rc;
}

void lora_st_close(lora_st *st)
{
	if (!st)
		return;
	stfile *f = (stfile *)st;
	if (st->map)
		munmap(st->map, st->file_size);
	for (size_t i = 0; i < st->ntensors; i++)
		free(st->tensors[i].name);
	for (size_t i = 0; i < st->nmeta; i++) {
		free(st->meta[i].key);
		free(st->meta[i].value);
	}
	free(st->tensors);
	free(st->meta);
	free(st->path);
	free(f->by_name);
	free(f);
}

void lora_st_release(const lora_st_tensor *t)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ((uintptr_t)t->data + page - 1) & ~(page - 1);
	uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(page - 1);
	/* Only whole pages inside the tensor: neighbours may still be in use. */
	if (t->nbytes && hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

const lora_st_tensor *lora_st_find(const lora_st *st, const char *name)
{
	const stfile *f = (const stfile *)st;
	size_t lo = 0, hi = st->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, f->by_name[mid]->name);
		if (c == 0)
			return f->by_name[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* ---- writer ---- */

struct lora_st_writer {
	lora_outfile out;
	char **names;
	size_t *sizes;
	size_t n, cur, done; /* tensor being written and its bytes so far */
};

static void json_str(FILE *f, const char *s)
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

static int valid_utf8(const char *s)
{
	size_t n = strlen(s);
	return utf8_bad((const unsigned char *)s, n) == n;
}

/* Check the request so that we never write a file our reader refuses. */
static int check_specs(const char *path, const lora_st_spec *specs, size_t n, const lora_st_meta *meta,
                       size_t nmeta, size_t *sizes, lora_err *e)
{
	const char **names = malloc(((n > nmeta ? n : nmeta) + 1) * sizeof *names);
	size_t pos = 0;
	int rc = 0;
	if (!names)
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	for (size_t i = 0; i < n && !rc; i++) {
		const lora_st_spec *s = &specs[i];
		if (!s->name || !valid_utf8(s->name) || strcmp(s->name, "__metadata__") == 0)
			rc = lora_err_set(e, LORA_EINVAL, "%s: tensor %zu: invalid name", path, i);
		else if ((unsigned)s->dtype >= LORA_DTYPE_COUNT || s->ndim > LORA_MAX_DIMS)
			rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': invalid dtype or rank", path, s->name);
		else if (lora_shape_bytes(s->shape, s->ndim, lora_dtype_size(s->dtype), &sizes[i]) ||
		         (double)pos + (double)sizes[i] > MAX_EXACT)
			rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': too large", path, s->name);
		else
			for (size_t d = 0; d < s->ndim && !rc; d++)
				if ((double)s->shape[d] > MAX_EXACT)
					rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': dimension too large", path,
					                  s->name);
		if (!rc)
			pos += sizes[i], names[i] = s->name;
	}
	if (!rc) {
		qsort(names, n, sizeof *names, cmp_str);
		for (size_t i = 1; i < n && !rc; i++)
			if (strcmp(names[i - 1], names[i]) == 0)
				rc = lora_err_set(e, LORA_EINVAL, "%s: duplicate tensor name '%s'", path, names[i]);
	}
	for (size_t i = 0; i < nmeta && !rc; i++) {
		if (!meta[i].key || !meta[i].value || !valid_utf8(meta[i].key) || !valid_utf8(meta[i].value))
			rc = lora_err_set(e, LORA_EINVAL, "%s: metadata entry %zu: invalid key or value", path, i);
		names[i] = meta[i].key;
	}
	if (!rc) {
		qsort(names, nmeta, sizeof *names, cmp_str);
		for (size_t i = 1; i < nmeta && !rc; i++)
			if (strcmp(names[i - 1], names[i]) == 0)
				rc = lora_err_set(e, LORA_EINVAL, "%s: duplicate metadata key '%s'", path, names[i]);
	}
	free(names);
	return rc;
}

/* Header JSON, compact, tensors in the given order at contiguous offsets. */
static int build_header(char **out, size_t *len, const lora_st_spec *specs, size_t n,
                        const size_t *sizes, const lora_st_meta *meta, size_t nmeta)
{
	FILE *f = open_memstream(out, len);
	if (!f)
		return -1;
	fputc('{', f);
	if (nmeta) {
		fputs("\"__metadata__\":{", f);
		for (size_t i = 0; i < nmeta; i++) {
			if (i)
				fputc(',', f);
			json_str(f, meta[i].key);
			fputc(':', f);
			json_str(f, meta[i].value);
		}
		fputc('}', f);
	}
	size_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		if (i || nmeta)
			fputc(',', f);
		json_str(f, specs[i].name);
		fprintf(f, ":{\"dtype\":\"%s\",\"shape\":[", lora_dtype_st_name(specs[i].dtype));
		for (size_t d = 0; d < specs[i].ndim; d++)
			fprintf(f, "%s%zu", d ? "," : "", specs[i].shape[d]);
		fprintf(f, "],\"data_offsets\":[%zu,%zu]}", pos, pos + sizes[i]);
		pos += sizes[i];
	}
	fputc('}', f);
	/* Like the reference writer, pad with spaces so the data section
	 * starts 8-byte aligned. */
	long len0 = ftell(f);
	for (long k = len0 >= 0 ? (8 - len0 % 8) % 8 : 0; k > 0; k--)
		fputc(' ', f);
	int bad = ferror(f) || len0 < 0;
	if (fclose(f) != 0 || bad) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

/* Step past tensors already complete, including zero-byte ones. */
static void stw_advance(lora_st_writer *w)
{
	while (w->cur < w->n && w->done == w->sizes[w->cur]) {
		w->cur++;
		w->done = 0;
	}
}

static void stw_free(lora_st_writer *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->names[i]);
	free(w->names);
	free(w->sizes);
	free(w);
}

int lora_st_writer_open(lora_st_writer **out, const char *path, const lora_st_spec *specs, size_t n,
                  const lora_st_meta *meta, size_t nmeta, int force, lora_err *e)
{
	int rc;
	char *hdr = NULL;
	size_t hlen = 0;
	*out = NULL;
	if (!path || strcmp(path, "-") == 0)
		return lora_err_set(e, LORA_EUSAGE, "safetensors output needs a file name, not standard output");
	lora_st_writer *w = calloc(1, sizeof *w);
	if (!w)
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	w->names = calloc(n ? n : 1, sizeof *w->names);
	w->sizes = calloc(n ? n : 1, sizeof *w->sizes);
	if (!w->names || !w->sizes) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	w->n = n;
	if ((rc = check_specs(path, specs, n, meta, nmeta, w->sizes, e)))
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (!(w->names[i] = strdup(specs[i].name))) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto fail;
		}
	if (build_header(&hdr, &hlen, specs, n, w->sizes, meta, nmeta)) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	if (hlen > LORA_ST_MAX_HEADER) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: header of %zu bytes exceeds the %u-byte limit", path, hlen,
		                  LORA_ST_MAX_HEADER);
		goto fail;
	}
	if ((rc = lora_outfile_open(&w->out, path, force ? LORA_OUT_FORCE : 0, e)))
		goto fail;
	unsigned char lb[8];
	for (int i = 0; i < 8; i++)
		lb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	if (fwrite(lb, 1, 8, w->out.fp) != 8 || fwrite(hdr, 1, hlen, w->out.fp) != hlen) {
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", path, strerror(errno));
		lora_outfile_abort(&w->out);
		goto fail;
	}
	free(hdr);
	stw_advance(w);
	*out = w;
	return 0;
fail:
	free(hdr);
	stw_free(w);
	return rc;
}

int lora_st_writer_write(lora_st_writer *w, const void *data, size_t nbytes, lora_err *e)
{
	if (nbytes == 0)
		return 0;
	if (w->n == 0)
		return lora_err_set(e, LORA_EINVAL, "%s: write of %zu bytes but no tensors were declared",
		                    w->out.path, nbytes);
	/* Writes never cross into the next tensor: a size mistake is caught at
	 * the tensor where it happens. */
	size_t i = w->cur < w->n ? w->cur : w->n - 1;
	size_t left = w->cur < w->n ? w->sizes[i] - w->done : 0;
	if (nbytes > left)
		return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': write of %zu bytes exceeds the %zu bytes left of its %zu",
		                    w->out.path, w->names[i], nbytes, left, w->sizes[i]);
	if (fwrite(data, 1, nbytes, w->out.fp) != nbytes) {
		/* Large writes go from the caller's buffer straight to write(2),
		 * which fails with EFAULT, where a load would raise SIGBUS, when the
		 * buffer is a mapped input that has shrunk since it was mapped. */
		if (errno == EFAULT)
			return lora_err_set(e, LORA_EIO, "an input file changed or shrank while being read");
		return lora_err_set(e, LORA_EIO, "%s: write error: %s", w->out.path, strerror(errno));
	}
	w->done += nbytes;
	stw_advance(w);
	return 0;
}

int lora_st_writer_commit(lora_st_writer *w, lora_err *e)
{
	int rc;
	if (w->cur < w->n) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': only %zu of %zu bytes written", w->out.path,
		                  w->names[w->cur], w->done, w->sizes[w->cur]);
		lora_outfile_abort(&w->out);
	} else {
		rc = lora_outfile_commit(&w->out, e);
	}
	stw_free(w);
	return rc;
}

void lora_st_writer_abort(lora_st_writer *w)
{
	if (!w)
		return;
	lora_outfile_abort(&w->out);
	stw_free(w);
}

/* ---- models ---- */

static char *join(const char *prefix, const char *name)
{
	size_t a = strlen(prefix), b = strlen(name);
	char *s = malloc(a + b + 1);
	if (s) {
		memcpy(s, prefix, a);
		memcpy(s + a, name, b + 1);
	}
	return s;
}

static int is_file(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

static int read_json_file(cJSON **out, const char *path, lora_err *e)
{
	int rc = 0, fd;
	char *buf = NULL;
	struct stat sb;
	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		rc = lora_err_set(e, LORA_EIO, "%s: not a readable regular file", path);
		goto out;
	}
	if ((uintmax_t)sb.st_size > MAX_JSON_FILE) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: %lld bytes is too large for a JSON file", path,
		                  (long long)sb.st_size);
		goto out;
	}
	size_t n = (size_t)sb.st_size;
	if (!(buf = malloc(n ? n : 1))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if (!(rc = pread_full(fd, buf, n, 0, path, e)))
		rc = parse_json(out, path, "file", buf, n, e);
out:
	free(buf);
	close(fd);
	return rc;
}

typedef struct {
	const char *name, *shard;
	size_t si;
} wm_entry;

static int cmp_wm(const void *a, const void *b)
{
	return strcmp(((const wm_entry *)a)->name, ((const wm_entry *)b)->name);
}

static size_t find_str(const char *const *v, size_t n, const char *s)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s, v[mid]);
		if (c == 0)
			return mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return n;
}

/* Open every shard named in the index once (in file-name order) and check
 * that the weight_map and the shards' contents agree exactly. */
static int open_index(lora_ckpt *m, const char *prefix, lora_err *e)
{
	const char *ip = m->index_path;
	cJSON *root = NULL;
	wm_entry *ent = NULL;
	const char **shard = NULL;
	int rc;
	if ((rc = read_json_file(&root, ip, e)))
		return rc;
	const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(wm) || !wm->child) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: missing or empty \"weight_map\" object", ip);
		goto out;
	}
	size_t n = (size_t)cJSON_GetArraySize(wm), k = 0;
	ent = malloc(n * sizeof *ent);
	shard = malloc(n * sizeof *shard);
	if (!ent || !shard) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", ip);
		goto out;
	}
	for (const cJSON *j = wm->child; j; j = j->next, k++) {
		const char *s = cJSON_IsString(j) ? j->valuestring : NULL;
		if (!s) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: weight_map value for tensor '%s' is not a string", ip,
			                  j->string);
			goto out;
		}
		/* Shards must sit beside the index: no paths, no "..". */
		if (!*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shard '%s' is not a plain file name", ip,
			                  j->string, s);
			goto out;
		}
		ent[k] = (wm_entry){j->string, s, 0};
		shard[k] = s;
	}
	qsort(ent, n, sizeof *ent, cmp_wm);
	for (size_t i = 1; i < n; i++)
		if (strcmp(ent[i - 1].name, ent[i].name) == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' appears twice in the weight_map", ip,
			                  ent[i].name);
			goto out;
		}
	qsort(shard, n, sizeof *shard, cmp_str);
	size_t ns = 0;
	for (size_t i = 0; i < n; i++)
		if (ns == 0 || strcmp(shard[ns - 1], shard[i]) != 0)
			shard[ns++] = shard[i];
	if (!(m->shards = calloc(ns, sizeof *m->shards))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", ip);
		goto out;
	}
	for (size_t i = 0; i < ns; i++) {
		char *sp = join(prefix, shard[i]);
		if (!sp) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", ip);
			goto out;
		}
		rc = lora_st_open(&m->shards[i], sp, e);
		free(sp);
		if (rc) {
			lora_err_prefix(e, "%s", ip);
			goto out;
		}
		m->nshards++;
	}
	for (size_t i = 0; i < n; i++) {
		ent[i].si = find_str(shard, ns, ent[i].shard);
		if (!lora_st_find(m->shards[ent[i].si], ent[i].name)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' mapped to shard '%s' which does not contain it",
			                  ip, ent[i].name, ent[i].shard);
			goto out;
		}
	}
	for (size_t si = 0; si < ns; si++) {
		const lora_st *st = m->shards[si];
		for (size_t t = 0; t < st->ntensors; t++) {
			wm_entry key = {st->tensors[t].name, NULL, 0};
			const wm_entry *f = bsearch(&key, ent, n, sizeof *ent, cmp_wm);
			if (!f)
				rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' in shard '%s' is not in the weight_map",
				                  ip, key.name, shard[si]);
			else if (f->si != si)
				rc = lora_err_set(e, LORA_EFORMAT,
				                  "%s: tensor '%s' is in shard '%s' but the weight_map maps it to '%s'", ip,
				                  key.name, shard[si], f->shard);
			if (rc)
				goto out;
		}
	}
out:
	free(ent);
	free(shard);
	cJSON_Delete(root);
	return rc;
}

/* Base name of a directory, resolved so that "." and "dir/" give a name. */
static char *dir_base(const char *dir)
{
	char *real = realpath(dir, NULL);
	const char *p = real ? real : dir;
	const char *slash = strrchr(p, '/');
	char *s = strdup(slash && slash[1] ? slash + 1 : p);
	free(real);
	return s;
}

static int model_name(lora_ckpt *m, int dir_input, lora_err *e)
{
	if (m->config_path) {
		cJSON *cfg;
		int rc = read_json_file(&cfg, m->config_path, e);
		if (rc)
			return rc;
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cfg, "_name_or_path");
		if (cJSON_IsString(nm) && nm->valuestring[0])
			m->name = strdup(nm->valuestring);
		cJSON_Delete(cfg);
		if (!m->name)
			m->name = dir_base(m->dir);
	} else if (dir_input) {
		m->name = dir_base(m->dir);
	} else {
		const char *slash = strrchr(m->path, '/');
		const char *base = slash ? slash + 1 : m->path;
		size_t len = strlen(base);
		if (ends_with(base, ".index.json"))
			len -= strlen(".index.json");
		if (len > 12 && strncmp(base + len - 12, ".safetensors", 12) == 0)
			len -= 12;
		m->name = strndup(base, len);
	}
	return m->name ? 0 : lora_err_set(e, LORA_ENOMEM, "%s: out of memory", m->path);
}

static int cmp_tptr(const void *a, const void *b)
{
	const lora_st_tensor *x = *(const lora_st_tensor *const *)a, *y = *(const lora_st_tensor *const *)b;
	return strcmp(x->name, y->name);
}

int lora_ckpt_open(lora_ckpt **out, const char *path, lora_err *e)
{
	int rc = 0, dir_input;
	char *prefix = NULL, *single = NULL;
	struct stat sb;
	*out = NULL;
	if (stat(path, &sb) != 0)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	lora_ckpt *m = calloc(1, sizeof *m);
	if (!m || !(m->path = strdup(path))) {
		free(m);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	}
	/* prefix: what to put before a file name to reach the model's directory. */
	size_t len = strlen(path);
	if ((dir_input = S_ISDIR(sb.st_mode))) {
		m->dir = strdup(path);
		prefix = malloc(len + 2);
		if (prefix)
			snprintf(prefix, len + 2, "%s%s", path, len && path[len - 1] == '/' ? "" : "/");
	} else {
		const char *slash = strrchr(path, '/');
		size_t plen = slash ? (size_t)(slash - path) + 1 : 0;
		prefix = strndup(path, plen);
		m->dir = plen ? strndup(path, plen > 1 ? plen - 1 : 1) : strdup(".");
	}
	if (!m->dir || !prefix) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if (dir_input) {
		char *idx = join(prefix, "model.safetensors.index.json");
		single = join(prefix, "model.safetensors");
		if (!idx || !single) {
			free(idx);
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		if (is_file(idx)) {
			m->index_path = idx;
		} else {
			free(idx);
			if (!is_file(single)) {
				rc = lora_err_set(e, LORA_EIO, "%s: no model.safetensors or model.safetensors.index.json",
				                  path);
				goto out;
			}
		}
	} else if (ends_with(path, ".index.json")) {
		if (!(m->index_path = strdup(path))) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
	} else if (!(single = strdup(path))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	char *cfg = join(prefix, "config.json");
	if (cfg && is_file(cfg))
		m->config_path = cfg;
	else
		free(cfg);
	if (m->index_path) {
		if ((rc = open_index(m, prefix, e)))
			goto out;
	} else {
		if (!(m->shards = calloc(1, sizeof *m->shards))) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		if ((rc = lora_st_open(&m->shards[0], single, e)))
			goto out;
		m->nshards = 1;
	}
	if ((rc = model_name(m, dir_input, e)))
		goto out;
	size_t nt = 0;
	for (size_t i = 0; i < m->nshards; i++)
		nt += m->shards[i]->ntensors;
	m->tensors = malloc((nt ? nt : 1) * sizeof *m->tensors);
	m->tensor_shard = malloc((nt ? nt : 1) * sizeof *m->tensor_shard);
	if (!m->tensors || !m->tensor_shard) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; i < m->nshards; i++)
		for (size_t t = 0; t < m->shards[i]->ntensors; t++)
			m->tensors[m->ntensors++] = &m->shards[i]->tensors[t];
	qsort(m->tensors, nt, sizeof *m->tensors, cmp_tptr);
	/* The shard of each tensor: a shard's tensors form one contiguous
	 * array, so the pointer tells which. */
	for (size_t i = 0; i < nt; i++) {
		for (size_t s = 0; s < m->nshards; s++) {
			const lora_st *st = m->shards[s];
			if (m->tensors[i] >= st->tensors && m->tensors[i] < st->tensors + st->ntensors)
				m->tensor_shard[i] = s;
		}
		/* Already guaranteed by the index checks; kept as a backstop. */
		if (i && strcmp(m->tensors[i - 1]->name, m->tensors[i]->name) == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' appears in more than one shard", path,
			                  m->tensors[i]->name);
			goto out;
		}
	}
	*out = m;
out:
	free(prefix);
	free(single);
	if (rc)
		lora_ckpt_close(m);
	return rc;
}

void lora_ckpt_close(lora_ckpt *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nshards; i++)
		lora_st_close(m->shards[i]);
	free(m->shards);
	free(m->tensors);
	free(m->tensor_shard);
	free(m->path);
	free(m->dir);
	free(m->index_path);
	free(m->config_path);
	free(m->name);
	free(m);
}

const lora_st_tensor *lora_ckpt_find(const lora_ckpt *m, const char *name)
{
	size_t lo = 0, hi = m->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, m->tensors[mid]->name);
		if (c == 0)
			return m->tensors[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

void lora_ckpt_fingerprint(const lora_ckpt *m, char buf[17])
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < m->ntensors; i++) {
		const lora_st_tensor *t = m->tensors[i];
		const char *dn = lora_dtype_st_name(t->dtype);
		h = fnv1a(h, t->name, strlen(t->name) + 1);
		h = fnv1a(h, dn, strlen(dn) + 1);
		for (size_t d = 0; d < t->ndim; d++) {
			unsigned char le[8];
			for (int k = 0; k < 8; k++)
				le[k] = (unsigned char)((uint64_t)t->shape[d] >> (8 * k));
			h = fnv1a(h, le, 8);
		}
	}
	snprintf(buf, 17, "%016llx", (unsigned long long)h);
}
