#include "io/safetensors_internal.h"

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

#include "core/json.h"
#include "core/outfile_internal.h"
#include "core/path.h"
#include "core/shape.h"
#include "core/utf8.h"

/* JSON numbers reach us as doubles; above 2^53 a double no longer names a
 * single integer, so sizes and offsets beyond it are refused. */
#define MAX_EXACT 9007199254740992.0


/* What lora_st_open hands out: the public struct plus a name index for
 * lora_st_find (binary search). */
typedef struct {
	lora_st st;
	lora_st_tensor **by_name;
} stfile;

/* Zero-byte tensors of a file with an empty data section point here, so
 * that data is never NULL. */
static const unsigned char no_data[1];




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
		if (lora_json_size(d, &t->shape[i])) {
			if (cJSON_IsNumber(d))
				return lora_err_set(e, LORA_EFORMAT,
				                    "%s: tensor '%s': shape[%zu] is %.17g, not a non-negative integer",
				                    path, name, i, d->valuedouble);
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': shape[%zu] is not a number", path,
			                    name, i);
		}
	size_t begin, end;
	if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || lora_json_size(off->child, &begin) ||
	    lora_json_size(off->child->next, &end))
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
	lora_shape_format(sbuf, sizeof sbuf, t->shape, t->ndim);
	const char *dn = lora_dtype_st_name(t->dtype);
	if (lora_shape_bytes(t->shape, t->ndim, 1, &t->nelem) ||
	    lora_shape_bytes(t->shape, t->ndim, lora_dtype_size(t->dtype), &t->nbytes))
		return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': %s %s overflows", path, name, dn, sbuf);
	if (t->nbytes != end - begin)
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: tensor '%s': %s %s is %zu bytes but data_offsets span %zu", path,
		                    name, dn, sbuf, t->nbytes, end - begin);
	t->offset = begin;
	return 0;
}

static int parse_meta(lora_st *st, const cJSON *j, lora_err *e)
{
	const char *path = st->path;
	if (!cJSON_IsObject(j))
		return lora_err_set(e, LORA_EFORMAT, "%s: __metadata__ is not an object", path);
	size_t n = (size_t)cJSON_GetArraySize(j);
	if (!(st->meta = calloc(n ? n : 1, sizeof *st->meta)))
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	for (const cJSON *m = j->child; m; m = m->next) {
		if (!cJSON_IsString(m))
			return lora_err_set(e, LORA_EFORMAT, "%s: __metadata__ value for key '%s' is not a string",
			                    path, m->string);
		lora_st_meta *d = &st->meta[st->nmeta++];
		d->key = strdup(m->string);
		d->value = strdup(m->valuestring);
		if (!d->key || !d->value)
			return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
	}
	return 0;
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

typedef struct {
	stfile *f;
	size_t data_size, cap;
	int meta;
} header_walk;

/* One member of the header: __metadata__ or a tensor. */
static int take_member(void *ctx, cJSON *j, lora_err *e)
{
	header_walk *h = ctx;
	lora_st *st = &h->f->st;
	if (strcmp(j->string, "__metadata__") == 0)
		return h->meta++ ? lora_err_set(e, LORA_EFORMAT, "%s: header has the key '__metadata__' twice in one object",
		                                st->path)
		                 : parse_meta(st, j, e);
	if (lora_shape_grow(&st->tensors, &h->cap, st->ntensors + 1, sizeof *st->tensors))
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", st->path);
	lora_st_tensor *t = &st->tensors[st->ntensors];
	memset(t, 0, sizeof *t);
	if (!(t->name = strdup(j->string)))
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", st->path);
	st->ntensors++;
	return parse_tensor(t, j, h->data_size, st->path, e);
}

static int parse_header(stfile *f, const char *hdr, size_t n, size_t data_size, lora_err *e)
{
	lora_st *st = &f->st;
	const char *path = st->path;
	cJSON *root = NULL;
	header_walk h = {f, data_size, 0, 0};
	int rc;
	/* The reference implementation insists on '{' first (no BOM, no
	 * leading whitespace); so do we. */
	if (n == 0 || hdr[0] != '{')
		return lora_err_set(e, LORA_EFORMAT, "%s: header does not start with '{'", path);
	/* A member at a time: the whole tree of a 100 MB header would take
	 * fifteen times its size. */
	if ((rc = lora_json_each(path, "header", hdr, n, take_member, &h, e)))
		return rc;
	size_t nt = st->ntensors;
	if (!(f->by_name = malloc((nt ? nt : 1) * sizeof *f->by_name))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if (nt) { /* tensors is NULL in a header of metadata only */
		qsort(st->tensors, nt, sizeof *st->tensors, cmp_offset);
		for (size_t i = 0; i < nt; i++)
			f->by_name[i] = &st->tensors[i];
		qsort(f->by_name, nt, sizeof *f->by_name, cmp_tname);
	}
	/* A name given twice would leave the data of one unaccounted for;
	 * the reference reader refuses it too (as a gap in the data). */
	for (size_t i = 1; i < nt; i++)
		if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: header has the key '%s' twice in one object", path,
			                  f->by_name[i]->name);
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
	/* Pipes and devices have no size to validate offsets against. */
	if ((fd = lora_path_open_file(path, &sb, e)) < 0)
		return fd;
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
	lora_outfile_direct d; /* large files around the page cache */
	char **names;
	size_t *sizes;
	size_t n, cur, done; /* tensor being written and its bytes so far */
};

void lora_st_writer_direct_min(uint64_t bytes) { lora_outfile_direct_min(bytes); }

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
		if (!s->name || !lora_utf8_valid(s->name) || strcmp(s->name, "__metadata__") == 0)
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
		if (!meta[i].key || !meta[i].value || !lora_utf8_valid(meta[i].key) || !lora_utf8_valid(meta[i].value))
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
			lora_json_write_str(f, meta[i].key);
			fputc(':', f);
			lora_json_write_str(f, meta[i].value);
		}
		fputc('}', f);
	}
	size_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		if (i || nmeta)
			fputc(',', f);
		lora_json_write_str(f, specs[i].name);
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
	lora_outfile_direct_free(&w->d);
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
	uint64_t bytes = 8 + hlen;
	for (size_t i = 0; i < n; i++)
		bytes += w->sizes[i];
	lora_outfile_direct_start(&w->d, &w->out, bytes);
	if (lora_outfile_put(&w->d, &w->out, lb, 8) || lora_outfile_put(&w->d, &w->out, hdr, hlen)) {
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
	if (lora_outfile_put_data(&w->d, &w->out, data, nbytes, w->out.path, e))
		return LORA_EIO;
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
		rc = lora_outfile_finish(&w->d, &w->out, e);
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
