#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/outfile.h"
#include "core/path.h"
#include "core/utf8.h"

/* Every ggml type of gguf-py's GGML_QUANT_SIZES: values per block and
 * bytes per block. Ids missing here (4, 5, 31-33, 36-38) were removed from
 * ggml and never appear in files. */
static const struct {
	const char *name;
	uint16_t blck, size;
} ggml_types[] = {
	[0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
	[3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
	[8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 40},     [10] = {"Q2_K", 256, 84},
	[11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
	[14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
	[17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
	[20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
	[23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
	[26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
	[29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
	[35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},   [40] = {"NVFP4", 64, 36},
	[41] = {"Q1_0", 128, 18},
};
#define NGGML (sizeof ggml_types / sizeof *ggml_types)

static const char *const type_names[LORA_GGUF_NTYPES] = {"u8",  "i8",  "u16", "i16", "u32", "i32", "f32",
                                                         "bool", "str", "arr", "u64", "i64", "f64"};
/* Bytes of one value (0: strings and arrays, which have their own rule). */
static const unsigned char type_size[LORA_GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* The smallest key-value pair (a one-byte key, a u8) and tensor info (a
 * one-byte name, no dimension): declared counts are checked against them
 * before anything is allocated. */
#define MIN_KV 14
#define MIN_TINFO 25
#define HEADER 24

const char *lora_gguf_ggml_name(uint32_t type)
{
	return type < NGGML ? ggml_types[type].name : NULL;
}

const char *lora_gguf_type_name(lora_gguf_type t)
{
	return (unsigned)t < LORA_GGUF_NTYPES ? type_names[t] : "?";
}

void lora_gguf_kv_describe(const lora_gguf_kv *kv, char *buf, size_t n)
{
	if (kv->type == LORA_GGUF_ARRAY)
		snprintf(buf, n, "arr[%s]", lora_gguf_type_name(kv->elem));
	else
		snprintf(buf, n, "%s", lora_gguf_type_name(kv->type));
}

int lora_gguf_ggml_of(lora_dtype t)
{
	return t == LORA_F32 ? LORA_GGML_F32 : t == LORA_F16 ? LORA_GGML_F16 : t == LORA_BF16 ? LORA_GGML_BF16 : -1;
}

int lora_gguf_dtype_of(uint32_t type, lora_dtype *t)
{
	if (type == LORA_GGML_F32)
		*t = LORA_F32;
	else if (type == LORA_GGML_F16)
		*t = LORA_F16;
	else if (type == LORA_GGML_BF16)
		*t = LORA_BF16;
	else
		return -1;
	return 0;
}

static uint64_t le(const unsigned char *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

/* ---- reader ---- */

typedef struct {
	lora_gguf g;
	lora_gguf_kv **kv_by_key;
	lora_gguf_tensor **t_by_name;
} ggfile;

/* A cursor over the mapping, with where it is for messages. */
typedef struct {
	const unsigned char *p;
	size_t pos, size;
	const char *path;
	char what[200];
	lora_err *e;
} rd;

static int truncated(rd *r)
{
	return lora_err_set(r->e, LORA_EFORMAT, "%s: truncated in %s (the file is %zu bytes)", r->path, r->what,
	                    r->size);
}

static int take(rd *r, size_t n, const unsigned char **out)
{
	if (n > r->size - r->pos)
		return truncated(r);
	*out = r->p + r->pos;
	r->pos += n;
	return 0;
}

static int get_u32(rd *r, uint32_t *v)
{
	const unsigned char *p = NULL;
	int rc = take(r, 4, &p);
	if (!rc)
		*v = (uint32_t)le(p, 4);
	return rc;
}

static int get_u64(rd *r, uint64_t *v)
{
	const unsigned char *p = NULL;
	int rc = take(r, 8, &p);
	if (!rc)
		*v = le(p, 8);
	return rc;
}

static int get_str(rd *r, const unsigned char **s, size_t *len)
{
	uint64_t n;
	int rc = get_u64(r, &n);
	if (rc)
		return rc;
	if (n > r->size - r->pos)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: string length %llu runs past the end of the file (%zu bytes)",
		                    r->path, r->what, (unsigned long long)n, r->size);
	*s = r->p + r->pos;
	*len = (size_t)n;
	r->pos += (size_t)n;
	return 0;
}

/* Keys and tensor names reach messages and lookups: non-empty UTF-8 with
 * no NUL. */
static int name_ok(const unsigned char *s, size_t n)
{
	return n > 0 && !memchr(s, 0, n) && lora_utf8_bad(s, n) == n;
}

static int read_values(rd *r, lora_gguf_kv *kv)
{
	size_t left = r->size - r->pos;
	if (kv->elem != LORA_GGUF_STRING) {
		size_t sz = type_size[kv->elem];
		if (kv->n > left / sz)
			return truncated(r);
		kv->data = r->p + r->pos;
		r->pos += kv->n * sz;
		if (kv->elem == LORA_GGUF_BOOL)
			for (size_t i = 0; i < kv->n; i++)
				if (kv->data[i] > 1)
					return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: bool value %u is neither 0 nor 1", r->path,
					                    r->what, kv->data[i]);
		return 0;
	}
	/* Each string takes at least its 8-byte length. */
	if (kv->n > left / 8)
		return truncated(r);
	kv->str = malloc((kv->n ? kv->n : 1) * sizeof *kv->str);
	kv->len = malloc((kv->n ? kv->n : 1) * sizeof *kv->len);
	if (!kv->str || !kv->len)
		return lora_err_set(r->e, LORA_ENOMEM, "%s: out of memory", r->path);
	for (size_t i = 0; i < kv->n; i++) {
		int rc = get_str(r, &kv->str[i], &kv->len[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static int parse_kv(rd *r, lora_gguf_kv *kv, size_t i)
{
	const unsigned char *k;
	size_t kl;
	uint32_t t, et;
	uint64_t n = 1;
	int rc;
	snprintf(r->what, sizeof r->what, "key-value pair %zu", i);
	if ((rc = get_str(r, &k, &kl)))
		return rc;
	if (!name_ok(k, kl))
		return lora_err_set(r->e, LORA_EFORMAT, "%s: key-value pair %zu: the key is empty, holds a NUL or is not UTF-8",
		                    r->path, i);
	if (!(kv->key = strndup((const char *)k, kl)))
		return lora_err_set(r->e, LORA_ENOMEM, "%s: out of memory", r->path);
	snprintf(r->what, sizeof r->what, "key '%s'", kv->key);
	if ((rc = get_u32(r, &t)))
		return rc;
	et = t;
	if (t == LORA_GGUF_ARRAY && ((rc = get_u32(r, &et)) || (rc = get_u64(r, &n))))
		return rc;
	if (t >= LORA_GGUF_NTYPES)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: unknown value type %u", r->path, r->what, t);
	if (et == LORA_GGUF_ARRAY)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: arrays of arrays are not supported", r->path, r->what);
	if (et >= LORA_GGUF_NTYPES)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: unknown array element type %u", r->path, r->what, et);
	if (n > r->size)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: array of %llu values runs past the end of the file (%zu bytes)",
		                    r->path, r->what, (unsigned long long)n, r->size);
	kv->type = (lora_gguf_type)t;
	kv->elem = (lora_gguf_type)et;
	kv->n = (size_t)n;
	return read_values(r, kv);
}

/* Shape and type of a tensor info: counts and bytes without overflow. */
static int parse_shape(rd *r, lora_gguf_tensor *t)
{
	uint32_t nd, type;
	int rc;
	if ((rc = get_u32(r, &nd)))
		return rc;
	if (nd > LORA_GGUF_MAX_DIMS)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: %u dimensions, at most %d", r->path, r->what, nd,
		                    LORA_GGUF_MAX_DIMS);
	t->ndim = nd;
	for (size_t d = 0; d < LORA_GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d < nd && (rc = get_u64(r, &t->ne[d])))
			return rc;
		if (t->ne[d] > INT64_MAX)
			return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: dimension %zu is negative", r->path, r->what, d);
	}
	if ((rc = get_u32(r, &type)))
		return rc;
	if (!lora_gguf_ggml_name(type))
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: unknown ggml type %u", r->path, r->what, type);
	t->type = type;
	size_t blck = ggml_types[type].blck, ne[LORA_GGUF_MAX_DIMS], blocks[LORA_GGUF_MAX_DIMS];
	if (t->ne[0] % blck)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: %s rows of %llu values are not whole blocks of %zu", r->path,
		                    r->what, ggml_types[type].name, (unsigned long long)t->ne[0], blck);
	int bad = 0;
	for (size_t d = 0; d < LORA_GGUF_MAX_DIMS; d++) {
		bad |= t->ne[d] > SIZE_MAX;
		ne[d] = blocks[d] = (size_t)t->ne[d];
	}
	blocks[0] /= blck;
	if (bad || lora_shape_bytes(ne, LORA_GGUF_MAX_DIMS, 1, &t->nelem) ||
	    lora_shape_bytes(blocks, LORA_GGUF_MAX_DIMS, ggml_types[type].size, &t->nbytes))
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: %s ne {%llu, %llu, %llu, %llu} overflows", r->path, r->what,
		                    ggml_types[type].name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
		                    (unsigned long long)t->ne[2], (unsigned long long)t->ne[3]);
	return 0;
}

static int parse_tinfo(rd *r, lora_gguf_tensor *t, size_t i)
{
	const unsigned char *s;
	size_t len;
	uint64_t off;
	int rc;
	snprintf(r->what, sizeof r->what, "tensor info %zu", i);
	if ((rc = get_str(r, &s, &len)))
		return rc;
	if (!name_ok(s, len))
		return lora_err_set(r->e, LORA_EFORMAT, "%s: tensor info %zu: the name is empty, holds a NUL or is not UTF-8",
		                    r->path, i);
	if (len > LORA_GGUF_MAX_NAME)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: tensor info %zu: name '%.40s...' is %zu bytes, longer than %d",
		                    r->path, i, (const char *)s, len, LORA_GGUF_MAX_NAME);
	if (!(t->name = strndup((const char *)s, len)))
		return lora_err_set(r->e, LORA_ENOMEM, "%s: out of memory", r->path);
	snprintf(r->what, sizeof r->what, "tensor '%s'", t->name);
	if ((rc = parse_shape(r, t)) || (rc = get_u64(r, &off)))
		return rc;
	if (off > r->size)
		return lora_err_set(r->e, LORA_EFORMAT, "%s: %s: offset %llu is past the end of the file (%zu bytes)", r->path,
		                    r->what, (unsigned long long)off, r->size);
	t->offset = (size_t)off;
	return 0;
}

static int cmp_key(const void *a, const void *b)
{
	return strcmp((*(lora_gguf_kv *const *)a)->key, (*(lora_gguf_kv *const *)b)->key);
}

static int cmp_tname(const void *a, const void *b)
{
	return strcmp((*(lora_gguf_tensor *const *)a)->name, (*(lora_gguf_tensor *const *)b)->name);
}

/* Sorted indexes for lookups; a name given twice is an error. */
static int build_indexes(ggfile *f, lora_err *e)
{
	lora_gguf *g = &f->g;
	f->kv_by_key = malloc((g->nkv ? g->nkv : 1) * sizeof *f->kv_by_key);
	f->t_by_name = malloc((g->ntensors ? g->ntensors : 1) * sizeof *f->t_by_name);
	if (!f->kv_by_key || !f->t_by_name)
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", g->path);
	for (size_t i = 0; i < g->nkv; i++)
		f->kv_by_key[i] = &g->kv[i];
	for (size_t i = 0; i < g->ntensors; i++)
		f->t_by_name[i] = &g->tensors[i];
	qsort(f->kv_by_key, g->nkv, sizeof *f->kv_by_key, cmp_key);
	qsort(f->t_by_name, g->ntensors, sizeof *f->t_by_name, cmp_tname);
	for (size_t i = 1; i < g->nkv; i++)
		if (strcmp(f->kv_by_key[i - 1]->key, f->kv_by_key[i]->key) == 0)
			return lora_err_set(e, LORA_EFORMAT, "%s: key '%s' is given twice", g->path, f->kv_by_key[i]->key);
	for (size_t i = 1; i < g->ntensors; i++)
		if (strcmp(f->t_by_name[i - 1]->name, f->t_by_name[i]->name) == 0)
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s' is given twice", g->path, f->t_by_name[i]->name);
	return 0;
}

static int read_alignment(lora_gguf *g, lora_err *e)
{
	const lora_gguf_kv *kv = lora_gguf_kv_find(g, "general.alignment");
	g->alignment = LORA_GGUF_ALIGNMENT;
	if (!kv)
		return 0;
	if (kv->type != LORA_GGUF_U32)
		return lora_err_set(e, LORA_EFORMAT, "%s: key 'general.alignment' is %s, not u32", g->path,
		                    lora_gguf_type_name(kv->type));
	uint64_t a = le(kv->data, 4);
	if (a == 0 || (a & (a - 1)))
		return lora_err_set(e, LORA_EFORMAT, "%s: general.alignment %llu is not a power of two", g->path,
		                    (unsigned long long)a);
	g->alignment = (size_t)a;
	return 0;
}

/* Round x up to a multiple of the power of two a; -1 on overflow. */
static int align_up(size_t x, size_t a, size_t *out)
{
	if (x > SIZE_MAX - (a - 1))
		return -1;
	*out = (x + a - 1) & ~(a - 1);
	return 0;
}

/* Tensors back to back from offset 0, each padded to the alignment (the
 * rule of ggml's reader), all inside the file, nothing after the padding
 * of the last. */
static int check_layout(lora_gguf *g, size_t end_of_infos, lora_err *e)
{
	size_t a = g->alignment, pos = 0, start = end_of_infos, limit;
	if (align_up(end_of_infos, a, &limit))
		return lora_err_set(e, LORA_EFORMAT, "%s: general.alignment %zu overflows", g->path, a);
	if (g->ntensors) {
		if (limit > g->file_size)
			return lora_err_set(e, LORA_EFORMAT, "%s: truncated before the data section (it would start at byte %zu of %zu)",
			                    g->path, limit, g->file_size);
		start = limit;
	}
	g->data_offset = start;
	for (size_t i = 0; i < g->ntensors; i++) {
		lora_gguf_tensor *t = &g->tensors[i];
		if (t->offset != pos)
			return lora_err_set(e, LORA_EFORMAT,
			                    "%s: tensor '%s': offset %zu, expected %zu (tensors lie back to back, each padded to %zu bytes)",
			                    g->path, t->name, t->offset, pos, a);
		if (pos > g->file_size - start || t->nbytes > g->file_size - start - pos)
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': truncated: its %zu bytes at byte %zu run past the end of the file (%zu bytes)",
			                    g->path, t->name, t->nbytes, start + pos, g->file_size);
		t->data = (const unsigned char *)g->map + start + pos;
		if (align_up(pos + t->nbytes, a, &limit))
			return lora_err_set(e, LORA_EFORMAT, "%s: tensor '%s': offsets overflow", g->path, t->name);
		pos = limit;
	}
	/* The end of the last tensor's padding, or of the header's. */
	if (g->ntensors)
		limit = start + pos < start ? SIZE_MAX : start + pos;
	if (g->file_size > limit)
		return lora_err_set(e, LORA_EFORMAT, "%s: %zu trailing bytes after the %s", g->path, g->file_size - limit,
		                    g->ntensors ? "last tensor" : "header");
	return 0;
}

static int parse(ggfile *f, lora_err *e)
{
	lora_gguf *g = &f->g;
	rd r = {.p = g->map, .size = g->file_size, .path = g->path, .e = e, .what = "the header"};
	uint64_t nt, nkv;
	const unsigned char *magic = NULL;
	int rc;
	if ((rc = take(&r, 4, &magic)))
		return rc;
	if (memcmp(magic, "GGUF", 4) != 0)
		return lora_err_set(e, LORA_EFORMAT, "%s: not a GGUF file (it does not start with 'GGUF')", g->path);
	if ((rc = get_u32(&r, &g->version)) || (rc = get_u64(&r, &nt)) || (rc = get_u64(&r, &nkv)))
		return rc;
	if (g->version != 2 && g->version != 3)
		return lora_err_set(e, LORA_EFORMAT, "%s: GGUF version %u is not supported (2 and 3 are)", g->path,
		                    g->version);
	size_t room = g->file_size - HEADER;
	if (nkv > room / MIN_KV || nt > room / MIN_TINFO || nkv * MIN_KV + nt * MIN_TINFO > room)
		return lora_err_set(e, LORA_EFORMAT,
		                    "%s: %llu key-value pairs and %llu tensors cannot fit in the file's %zu bytes", g->path,
		                    (unsigned long long)nkv, (unsigned long long)nt, g->file_size);
	g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
	g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
	if (!g->kv || !g->tensors)
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", g->path);
	for (; g->nkv < nkv; g->nkv++)
		if ((rc = parse_kv(&r, &g->kv[g->nkv], g->nkv))) {
			g->nkv++; /* freed with the others */
			return rc;
		}
	for (; g->ntensors < nt; g->ntensors++)
		if ((rc = parse_tinfo(&r, &g->tensors[g->ntensors], g->ntensors))) {
			g->ntensors++;
			return rc;
		}
	if ((rc = build_indexes(f, e)) || (rc = read_alignment(g, e)))
		return rc;
	return check_layout(g, r.pos, e);
}

int lora_gguf_open(lora_gguf **out, const char *path, lora_err *e)
{
	int rc = 0, fd;
	struct stat sb;
	ggfile *f = NULL;
	*out = NULL;
	if ((fd = lora_path_open_file(path, &sb, e)) < 0)
		return fd;
	if ((uintmax_t)sb.st_size > SIZE_MAX / 2) {
		rc = lora_err_set(e, LORA_EIO, "%s: file too large", path);
		goto out;
	}
	if ((size_t)sb.st_size < HEADER) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte GGUF header", path,
		                  (size_t)sb.st_size, HEADER);
		goto out;
	}
	if (!(f = calloc(1, sizeof *f)) || !(f->g.path = strdup(path))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	f->g.file_size = (size_t)sb.st_size;
	f->g.map = mmap(NULL, f->g.file_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->g.map == MAP_FAILED) {
		f->g.map = NULL;
		rc = lora_err_set(e, LORA_EIO, "%s: mmap: %s", path, strerror(errno));
		goto out;
	}
	if ((rc = parse(f, e)))
		goto out;
	*out = &f->g;
out:
	close(fd);
	if (rc && f)
		lora_gguf_close(&f->g);
	return rc;
}

void lora_gguf_close(lora_gguf *g)
{
	if (!g)
		return;
	ggfile *f = (ggfile *)g;
	if (g->map)
		munmap(g->map, g->file_size);
	for (size_t i = 0; i < g->nkv; i++) {
		free(g->kv[i].key);
		free(g->kv[i].str);
		free(g->kv[i].len);
	}
	for (size_t i = 0; i < g->ntensors; i++)
		free(g->tensors[i].name);
	free(g->kv);
	free(g->tensors);
	free(g->path);
	free(f->kv_by_key);
	free(f->t_by_name);
	free(f);
}

const lora_gguf_kv *lora_gguf_kv_find(const lora_gguf *g, const char *key)
{
	const ggfile *f = (const ggfile *)g;
	size_t lo = 0, hi = g->nkv;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(key, f->kv_by_key[mid]->key);
		if (c == 0)
			return f->kv_by_key[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const lora_gguf_tensor *lora_gguf_find(const lora_gguf *g, const char *name)
{
	const ggfile *f = (const ggfile *)g;
	size_t lo = 0, hi = g->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, f->t_by_name[mid]->name);
		if (c == 0)
			return f->t_by_name[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int lora_gguf_kv_uint(const lora_gguf_kv *kv, size_t i, uint64_t *v)
{
	lora_gguf_type t = kv->elem;
	if (i >= kv->n || t == LORA_GGUF_STRING || t == LORA_GGUF_BOOL || t == LORA_GGUF_F32 || t == LORA_GGUF_F64)
		return -1;
	size_t sz = type_size[t];
	uint64_t x = le(kv->data + i * sz, sz);
	int is_signed = t == LORA_GGUF_I8 || t == LORA_GGUF_I16 || t == LORA_GGUF_I32 || t == LORA_GGUF_I64;
	if (is_signed && (x >> (8 * sz - 1)) & 1)
		return -1;
	*v = x;
	return 0;
}

int lora_gguf_kv_float(const lora_gguf_kv *kv, size_t i, double *v)
{
	if (i >= kv->n)
		return -1;
	if (kv->elem == LORA_GGUF_F32) {
		uint32_t u = (uint32_t)le(kv->data + 4 * i, 4);
		float x;
		memcpy(&x, &u, 4);
		*v = x;
	} else if (kv->elem == LORA_GGUF_F64) {
		uint64_t u = le(kv->data + 8 * i, 8);
		memcpy(v, &u, 8);
	} else {
		return -1;
	}
	return 0;
}

int lora_gguf_kv_bool(const lora_gguf_kv *kv, size_t i, int *v)
{
	if (i >= kv->n || kv->elem != LORA_GGUF_BOOL)
		return -1;
	*v = kv->data[i];
	return 0;
}

int lora_gguf_kv_str(const lora_gguf_kv *kv, size_t i, const char **s, size_t *len)
{
	if (i >= kv->n || kv->elem != LORA_GGUF_STRING)
		return -1;
	*s = (const char *)kv->str[i];
	*len = kv->len[i];
	return 0;
}

/* ---- values ---- */

void lora_gguf_q8_0_quantize(void *dst, const float *src, size_t n)
{
	unsigned char *y = dst;
	for (size_t b = 0; b < n / LORA_GGML_QK8_0; b++, y += 34) {
		const float *x = src + b * LORA_GGML_QK8_0;
		float amax = 0.0f;
		for (int j = 0; j < LORA_GGML_QK8_0; j++) {
			float v = fabsf(x[j]);
			amax = v > amax ? v : amax;
		}
		/* ggml's quantize_row_q8_0_ref, operation for operation; roundf
		 * (halves away from zero) spelled so that the compiler vectorizes
		 * it: |v| <= 127, v - trunc(v) is exact. */
		const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
		uint16_t h = lora_dtype_f32_to_f16(d);
		int8_t q[LORA_GGML_QK8_0];
		y[0] = (unsigned char)h, y[1] = (unsigned char)(h >> 8);
		for (int j = 0; j < LORA_GGML_QK8_0; j++) {
			float v = x[j] * id, r;
			int i = (int)v;
			r = v - (float)i;
			q[j] = (int8_t)(i + (r >= 0.5f) - (r <= -0.5f));
		}
		memcpy(y + 2, q, sizeof q);
	}
}

void lora_gguf_q8_0_dequantize(float *dst, const void *src, size_t n)
{
	const unsigned char *y = src;
	for (size_t b = 0; b < n / LORA_GGML_QK8_0; b++, y += 34) {
		float d = lora_dtype_f16_to_f32((uint16_t)(y[0] | y[1] << 8));
		for (int j = 0; j < LORA_GGML_QK8_0; j++)
			dst[b * LORA_GGML_QK8_0 + j] = d * (float)(int8_t)y[2 + j];
	}
}

int lora_gguf_to_f32(float *dst, const lora_gguf_tensor *t)
{
	lora_dtype dt;
	if (t->type == LORA_GGML_Q8_0)
		lora_gguf_q8_0_dequantize(dst, t->data, t->nelem);
	else if (lora_gguf_dtype_of(t->type, &dt) == 0)
		lora_dtype_to_f32(dst, t->data, dt, t->nelem);
	else
		return -1;
	return 0;
}

/* ---- writer ---- */

struct lora_gguf_writer {
	lora_outfile out;
	lora_outfile_direct d; /* large files around the page cache */
	char **names;
	size_t *sizes;
	size_t n, cur, done, align;
};

static void put_n(FILE *f, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fputc((int)(v >> (8 * i) & 0xff), f);
}

static void put_str(FILE *f, const char *s)
{
	size_t n = strlen(s);
	put_n(f, n, 8);
	fwrite(s, 1, n, f);
}

/* One value of type t from a C array at p (index i) or from the scalar union. */
static void put_value(FILE *f, lora_gguf_type t, const lora_gguf_kvspec *kv, size_t i)
{
	const void *p = kv->type == LORA_GGUF_ARRAY ? kv->v.arr : NULL;
	size_t sz = type_size[t];
	uint64_t bits = 0;
	if (t == LORA_GGUF_STRING) {
		put_str(f, p ? ((const char *const *)p)[i] : kv->v.s);
		return;
	}
	if (p) {
		/* memcpy: the array need not be aligned; host order is
		 * little-endian on every machine we build for */
		memcpy(&bits, (const unsigned char *)p + i * sz, sz);
	} else if (t == LORA_GGUF_F32) {
		float x = (float)kv->v.f;
		uint32_t u;
		memcpy(&u, &x, 4);
		bits = u;
	} else if (t == LORA_GGUF_F64) {
		memcpy(&bits, &kv->v.f, 8);
	} else {
		bits = t == LORA_GGUF_I8 || t == LORA_GGUF_I16 || t == LORA_GGUF_I32 || t == LORA_GGUF_I64 ? (uint64_t)kv->v.i
		                                                                                              : kv->v.u;
	}
	put_n(f, bits, sz);
}

static int check_kv(const char *path, const lora_gguf_kvspec *kv, size_t nkv, size_t *align, lora_err *e)
{
	*align = LORA_GGUF_ALIGNMENT;
	for (size_t i = 0; i < nkv; i++) {
		const lora_gguf_kvspec *k = &kv[i];
		lora_gguf_type et = k->type == LORA_GGUF_ARRAY ? k->elem : k->type;
		if (!k->key || !*k->key || !lora_utf8_valid(k->key))
			return lora_err_set(e, LORA_EINVAL, "%s: key-value pair %zu: invalid key", path, i);
		if ((unsigned)k->type >= LORA_GGUF_NTYPES || (unsigned)et >= LORA_GGUF_NTYPES || et == LORA_GGUF_ARRAY)
			return lora_err_set(e, LORA_EINVAL, "%s: key '%s': invalid type", path, k->key);
		if (k->type == LORA_GGUF_BOOL && k->v.u > 1)
			return lora_err_set(e, LORA_EINVAL, "%s: key '%s': bool value %llu", path, k->key,
			                    (unsigned long long)k->v.u);
		if (strcmp(k->key, "general.alignment") == 0) {
			if (k->type != LORA_GGUF_U32 || !k->v.u || (k->v.u & (k->v.u - 1)) || k->v.u > UINT32_MAX)
				return lora_err_set(e, LORA_EINVAL, "%s: general.alignment must be a u32 power of two", path);
			*align = (size_t)k->v.u;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(kv[j].key, k->key) == 0)
				return lora_err_set(e, LORA_EINVAL, "%s: key '%s' is given twice", path, k->key);
	}
	return 0;
}

static int check_specs(const char *path, const lora_gguf_spec *t, size_t nt, size_t *sizes, lora_err *e)
{
	for (size_t i = 0; i < nt; i++) {
		const lora_gguf_spec *s = &t[i];
		size_t shape[LORA_GGUF_MAX_DIMS] = {1, 1, 1, 1};
		if (!s->name || !*s->name || strlen(s->name) > LORA_GGUF_MAX_NAME || !lora_utf8_valid(s->name))
			return lora_err_set(e, LORA_EINVAL, "%s: tensor %zu: invalid name", path, i);
		if (!lora_gguf_ggml_name(s->type) || s->ndim < 1 || s->ndim > LORA_GGUF_MAX_DIMS ||
		    s->ne[0] % ggml_types[s->type].blck)
			return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': invalid type or shape", path, s->name);
		for (size_t d = 0; d < s->ndim; d++)
			shape[d] = (size_t)s->ne[d];
		shape[0] /= ggml_types[s->type].blck;
		if (lora_shape_bytes(shape, LORA_GGUF_MAX_DIMS, ggml_types[s->type].size, &sizes[i]) ||
		    sizes[i] > SIZE_MAX / 4)
			return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': too large", path, s->name);
		for (size_t j = 0; j < i; j++)
			if (strcmp(t[j].name, s->name) == 0)
				return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s' is given twice", path, s->name);
	}
	return 0;
}

static int build_header(char **out, size_t *len, const lora_gguf_kvspec *kv, size_t nkv, const lora_gguf_spec *t,
                        size_t nt, const size_t *sizes, size_t align)
{
	FILE *f = open_memstream(out, len);
	if (!f)
		return -1;
	fwrite("GGUF", 1, 4, f);
	put_n(f, LORA_GGUF_VERSION, 4);
	put_n(f, nt, 8);
	put_n(f, nkv, 8);
	for (size_t i = 0; i < nkv; i++) {
		const lora_gguf_kvspec *k = &kv[i];
		put_str(f, k->key);
		put_n(f, (uint64_t)k->type, 4);
		if (k->type != LORA_GGUF_ARRAY) {
			put_value(f, k->type, k, 0);
			continue;
		}
		put_n(f, (uint64_t)k->elem, 4);
		put_n(f, k->n, 8);
		for (size_t j = 0; j < k->n; j++)
			put_value(f, k->elem, k, j);
	}
	size_t off = 0;
	for (size_t i = 0; i < nt; i++) {
		put_str(f, t[i].name);
		put_n(f, t[i].ndim, 4);
		for (size_t d = 0; d < t[i].ndim; d++)
			put_n(f, t[i].ne[d], 8);
		put_n(f, t[i].type, 4);
		put_n(f, off, 8);
		off += (sizes[i] + align - 1) & ~(align - 1);
	}
	long pos = ftell(f);
	for (long k = pos >= 0 ? (long)((align - (size_t)pos % align) % align) : 0; k > 0; k--)
		fputc(0, f);
	int bad = ferror(f) || pos < 0;
	if (fclose(f) != 0 || bad) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

static void gw_free(lora_gguf_writer *w)
{
	lora_outfile_direct_free(&w->d);
	for (size_t i = 0; i < w->n; i++)
		free(w->names[i]);
	free(w->names);
	free(w->sizes);
	free(w);
}

/* Pad and step past tensors complete, zero-byte ones included. */
static int gw_advance(lora_gguf_writer *w)
{
	static const unsigned char zeros[64];
	while (w->cur < w->n && w->done == w->sizes[w->cur]) {
		for (size_t pad = (w->align - w->sizes[w->cur] % w->align) % w->align; pad;) {
			size_t k = pad < sizeof zeros ? pad : sizeof zeros;
			if (lora_outfile_put(&w->d, &w->out, zeros, k))
				return -1;
			pad -= k;
		}
		w->cur++;
		w->done = 0;
	}
	return 0;
}

int lora_gguf_writer_open(lora_gguf_writer **out, const char *path, const lora_gguf_kvspec *kv, size_t nkv,
                          const lora_gguf_spec *t, size_t nt, int force, lora_err *e)
{
	int rc;
	char *hdr = NULL;
	size_t hlen = 0;
	const char *name = path && strcmp(path, "-") ? path : "standard output";
	*out = NULL;
	lora_gguf_writer *w = calloc(1, sizeof *w);
	if (!w || !(w->names = calloc(nt ? nt : 1, sizeof *w->names)) || !(w->sizes = calloc(nt ? nt : 1, sizeof *w->sizes))) {
		if (w)
			gw_free(w);
		return lora_err_nomem(e);
	}
	w->n = nt;
	if ((rc = check_kv(name, kv, nkv, &w->align, e)) || (rc = check_specs(name, t, nt, w->sizes, e)))
		goto fail;
	for (size_t i = 0; i < nt; i++)
		if (!(w->names[i] = strdup(t[i].name))) {
			rc = lora_err_nomem(e);
			goto fail;
		}
	if (build_header(&hdr, &hlen, kv, nkv, t, nt, w->sizes, w->align)) {
		rc = lora_err_nomem(e);
		goto fail;
	}
	if ((rc = lora_outfile_open(&w->out, path, LORA_OUT_BINARY | (force ? LORA_OUT_FORCE : 0), e)))
		goto fail;
	uint64_t bytes = hlen;
	for (size_t i = 0; i < nt; i++)
		bytes += w->sizes[i] + w->align;
	lora_outfile_direct_start(&w->d, &w->out, bytes);
	if (lora_outfile_put(&w->d, &w->out, hdr, hlen) || gw_advance(w)) {
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", name, strerror(errno));
		lora_outfile_abort(&w->out);
		goto fail;
	}
	free(hdr);
	*out = w;
	return 0;
fail:
	free(hdr);
	gw_free(w);
	return rc;
}

int lora_gguf_writer_write(lora_gguf_writer *w, const void *data, size_t nbytes, lora_err *e)
{
	const char *name = w->out.path ? w->out.path : "standard output";
	if (nbytes == 0)
		return 0;
	if (w->cur >= w->n)
		return lora_err_set(e, LORA_EINVAL, "%s: write of %zu bytes after the last tensor", name, nbytes);
	size_t left = w->sizes[w->cur] - w->done;
	if (nbytes > left)
		return lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': write of %zu bytes exceeds the %zu bytes left of its %zu",
		                    name, w->names[w->cur], nbytes, left, w->sizes[w->cur]);
	if (lora_outfile_put_data(&w->d, &w->out, data, nbytes, name, e))
		return LORA_EIO;
	w->done += nbytes;
	if (gw_advance(w))
		return lora_err_set(e, LORA_EIO, "%s: write error: %s", name, strerror(errno));
	return 0;
}

int lora_gguf_writer_commit(lora_gguf_writer *w, lora_err *e)
{
	int rc;
	if (w->cur < w->n) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: tensor '%s': only %zu of %zu bytes written",
		                  w->out.path ? w->out.path : "standard output", w->names[w->cur], w->done,
		                  w->sizes[w->cur]);
		lora_outfile_abort(&w->out);
	} else {
		rc = lora_outfile_finish(&w->d, &w->out, e);
	}
	gw_free(w);
	return rc;
}

void lora_gguf_writer_abort(lora_gguf_writer *w)
{
	if (!w)
		return;
	lora_outfile_abort(&w->out);
	gw_free(w);
}
