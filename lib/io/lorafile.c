#include "io/lorafile.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/json.h"
#include "core/outfile.h"
#include "core/shape.h"

#define CHUNK (1u << 16)

int lora_lorafile_is_lora(const void *buf, size_t n)
{
	return n >= 8 && memcmp(buf, LORA_FILE_MAGIC, 8) == 0;
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Byte shuffle: byte j of element i goes to plane j. Exponent bytes of
 * neighbouring floats are alike, so grouping them is what lets deflate
 * shrink float data at all. */
static void shuffle(unsigned char *dst, const unsigned char *src, size_t n, size_t s)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < s; j++)
			dst[j * n + i] = src[i * s + j];
}

static void unshuffle(unsigned char *dst, const unsigned char *src, size_t n, size_t s)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < s; j++)
			dst[i * s + j] = src[j * n + i];
}

/* ---- writing ---- */

/* One payload to compress: a float vector converted to the storage dtype
 * (A, B, magnitude, bias), or raw bytes (an extra tensor). */
typedef struct {
	const float *x;       /* float payload, or NULL */
	const void *raw;      /* raw payload when x is NULL */
	size_t n;             /* elements */
	lora_dtype t;         /* dtype stored */
	size_t cols;          /* for messages: row length of a matrix, 0 for a vector */
	unsigned char *z;
	size_t zsize;
	uint32_t crc;
	int err; /* 0, or 1 = non-finite value, 2 = out of memory, 3 = zlib, 4 = overflows dtype */
	size_t bad;
} chunk;


static void compress_chunk(chunk *c)
{
	size_t s = lora_dtype_size(c->t), raw = c->n * s;
	unsigned char *conv = NULL, *sh = malloc(raw ? raw : 1);
	const unsigned char *plain;
	uLongf zn = compressBound(raw);
	if (c->x) {
		size_t bad = lora_dtype_find_nonfinite(c->x, c->n);
		if (bad < c->n) {
			c->err = 1, c->bad = bad;
			goto out;
		}
		if (!(conv = malloc(raw ? raw : 1))) {
			c->err = 2;
			goto out;
		}
		lora_dtype_from_f32(conv, c->x, c->t, c->n);
		if ((bad = lora_dtype_find_overflow(conv, c->t, c->n)) < c->n) {
			c->err = 4, c->bad = bad;
			goto out;
		}
		plain = conv;
	} else {
		plain = c->raw;
	}
	c->z = malloc(zn);
	if (!sh || !c->z) {
		c->err = 2;
		goto out;
	}
	shuffle(sh, plain, c->n, s);
	/* Level 1: on shuffled float data it writes 2.5-4.5x faster than
	 * level 6 for 1-2.5% more bytes (measured on dense f32 and bf16
	 * factors), and adapters are written far more often than archived. */
	if (compress2(c->z, &zn, sh, raw, Z_BEST_SPEED) != Z_OK) {
		c->err = 3;
		goto out;
	}
	c->zsize = zn;
	c->crc = (uint32_t)crc32(0, Z_NULL, 0);
	/* crc32 takes uInt lengths; feed large buffers in pieces. */
	for (size_t off = 0; off < zn; off += 1u << 30) {
		size_t k = zn - off < (1u << 30) ? zn - off : (1u << 30);
		c->crc = (uint32_t)crc32(c->crc, c->z + off, (uInt)k);
	}
out:
	free(conv);
	free(sh);
}

/* Payload order, which is also the order of chunks: A and B of every
 * layer, then the magnitude and bias of every layer that has them, then
 * the extra tensors. Version-1 readers that predate the optional payloads
 * read every A and B correctly and then stop at the bytes that follow,
 * instead of silently dropping them. */
typedef struct {
	chunk *ch;
	size_t n;
	size_t *mag, *bias; /* chunk index per layer, or SIZE_MAX */
	size_t first_extra;
} plan;

static void plan_free(plan *p)
{
	for (size_t k = 0; p->ch && k < p->n; k++)
		free(p->ch[k].z);
	free(p->ch);
	free(p->mag);
	free(p->bias);
}

static int plan_build(plan *p, const lora_adapter *a, lora_err *e)
{
	size_t nl = a->nlayers, cap = 4 * nl + a->nextras;
	memset(p, 0, sizeof *p);
	p->ch = calloc(cap ? cap : 1, sizeof *p->ch);
	p->mag = malloc((nl ? nl : 1) * sizeof *p->mag);
	p->bias = malloc((nl ? nl : 1) * sizeof *p->bias);
	if (!p->ch || !p->mag || !p->bias)
		return lora_err_nomem(e);
	for (size_t i = 0; i < nl; i++) {
		const lora_layer *l = &a->layers[i];
		if (!l->A || !l->B)
			return lora_err_set(e, LORA_EINVAL, "layer '%s': no tensor data", l->name);
		p->ch[p->n++] = (chunk){.x = l->A, .n = l->rank * l->in, .t = a->dtype, .cols = l->in};
		p->ch[p->n++] = (chunk){.x = l->B, .n = l->out * l->rank, .t = a->dtype, .cols = l->rank};
	}
	for (size_t i = 0; i < nl; i++) {
		const lora_layer *l = &a->layers[i];
		p->mag[i] = p->bias[i] = SIZE_MAX;
		if (l->magnitude) {
			p->mag[i] = p->n;
			p->ch[p->n++] = (chunk){.x = l->magnitude, .n = l->out, .t = a->dtype};
		}
		if (l->bias) {
			p->bias[i] = p->n;
			p->ch[p->n++] = (chunk){.x = l->bias, .n = l->out, .t = a->dtype};
		}
	}
	p->first_extra = p->n;
	int nomem;
	const char *dup = lora_adapter_dup_extra(a, &nomem);
	if (dup || nomem)
		return nomem ? lora_err_nomem(e) : lora_err_set(e, LORA_EINVAL, "extra '%s' appears twice", dup);
	for (size_t i = 0; i < a->nextras; i++) {
		const lora_extra *x = &a->extras[i];
		size_t nb;
		if (!x->name || !*x->name)
			return lora_err_set(e, LORA_EINVAL, "extra tensor %zu has no name", i);
		if (!x->data)
			return lora_err_set(e, LORA_EINVAL, "extra '%s': no tensor data", x->name);
		if ((unsigned)x->dtype >= LORA_DTYPE_COUNT || x->ndim > LORA_MAX_DIMS ||
		    lora_shape_bytes(x->shape, x->ndim, lora_dtype_size(x->dtype), &nb) || nb != x->nbytes)
			return lora_err_set(e, LORA_EINVAL, "extra '%s': shape and byte size disagree", x->name);
		p->ch[p->n++] = (chunk){.raw = x->data, .n = nb / lora_dtype_size(x->dtype), .t = x->dtype};
	}
	return 0;
}

/* Name of chunk k for messages: "layer 'w' A", "extra 'name'". */
static void chunk_name(char *buf, size_t n, const lora_adapter *a, const plan *p, size_t k)
{
	if (k < 2 * a->nlayers) {
		snprintf(buf, n, "layer '%s' %s", a->layers[k / 2].name, k % 2 ? "B" : "A");
		return;
	}
	if (k >= p->first_extra) {
		snprintf(buf, n, "extra '%s'", a->extras[k - p->first_extra].name);
		return;
	}
	for (size_t i = 0; i < a->nlayers; i++)
		if (p->mag[i] == k || p->bias[i] == k) {
			snprintf(buf, n, "layer '%s' %s", a->layers[i].name, p->mag[i] == k ? "magnitude" : "bias");
			return;
		}
}

static int add_sizes(cJSON *o, const char *key, const chunk *c)
{
	cJSON *s = cJSON_AddObjectToObject(o, key);
	return !s || !cJSON_AddNumberToObject(s, "zsize", (double)c->zsize) ||
	       !cJSON_AddNumberToObject(s, "crc32", (double)c->crc);
}

static cJSON *header_json(const lora_adapter *a, const plan *p, lora_err *e)
{
	cJSON *h = cJSON_CreateObject(), *layers, *t;
	const chunk *ch = p->ch;
	if (!h)
		goto nomem;
	cJSON_AddStringToObject(h, "format", "lora");
	cJSON_AddStringToObject(h, "dtype", lora_dtype_name(a->dtype));
	cJSON_AddStringToObject(h, "scaling", a->rslora ? "rslora" : "standard");
	if (a->base_name || a->base_fingerprint) {
		cJSON *b = cJSON_AddObjectToObject(h, "base_model");
		if (b && a->base_name)
			cJSON_AddStringToObject(b, "name", a->base_name);
		if (b && a->base_fingerprint)
			cJSON_AddStringToObject(b, "fingerprint", a->base_fingerprint);
	}
	t = cJSON_AddArrayToObject(h, "targets");
	for (size_t i = 0; t && i < a->ntargets; i++)
		cJSON_AddItemToArray(t, cJSON_CreateString(a->targets[i]));
	if (a->provenance) {
		cJSON *pv = cJSON_Parse(a->provenance);
		if (!pv || !cJSON_IsObject(pv)) {
			cJSON_Delete(pv);
			cJSON_Delete(h);
			lora_err_set(e, LORA_EINVAL, "provenance is not a JSON object");
			return NULL;
		}
		cJSON_AddItemToObject(h, "provenance", pv);
	}
	/* Optional keys are written only when they say something, so adapters
	 * without them stay byte-identical to what earlier writers produced. */
	if (a->fan_in_fan_out && !cJSON_AddTrueToObject(h, "fan_in_fan_out"))
		goto nomem;
	if (a->peft_config && !cJSON_AddStringToObject(h, "peft_config", a->peft_config))
		goto nomem;
	layers = cJSON_AddArrayToObject(h, "layers");
	if (!layers)
		goto nomem;
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *l = &a->layers[i];
		cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
		if (!o || !sh) {
			cJSON_Delete(o);
			cJSON_Delete(sh);
			goto nomem;
		}
		cJSON_AddItemToArray(layers, o);
		cJSON_AddStringToObject(o, "name", l->name);
		cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)l->out));
		cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)l->in));
		cJSON_AddItemToObject(o, "shape", sh);
		cJSON_AddNumberToObject(o, "rank", (double)l->rank);
		cJSON_AddNumberToObject(o, "alpha", l->alpha);
		if (add_sizes(o, "A", &ch[2 * i]) || add_sizes(o, "B", &ch[2 * i + 1]) ||
		    (p->mag[i] != SIZE_MAX && add_sizes(o, "magnitude", &ch[p->mag[i]])) ||
		    (p->bias[i] != SIZE_MAX && add_sizes(o, "bias", &ch[p->bias[i]])))
			goto nomem;
	}
	if (a->nextras) {
		cJSON *xs = cJSON_AddArrayToObject(h, "extras");
		if (!xs)
			goto nomem;
		for (size_t i = 0; i < a->nextras; i++) {
			const lora_extra *x = &a->extras[i];
			const chunk *c = &ch[p->first_extra + i];
			cJSON *o = cJSON_CreateObject(), *sh = cJSON_CreateArray();
			if (!o || !sh) {
				cJSON_Delete(o);
				cJSON_Delete(sh);
				goto nomem;
			}
			cJSON_AddItemToArray(xs, o);
			cJSON_AddStringToObject(o, "name", x->name);
			cJSON_AddStringToObject(o, "dtype", lora_dtype_st_name(x->dtype));
			for (size_t d = 0; d < x->ndim; d++)
				cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)x->shape[d]));
			cJSON_AddItemToObject(o, "shape", sh);
			cJSON_AddNumberToObject(o, "zsize", (double)c->zsize);
			cJSON_AddNumberToObject(o, "crc32", (double)c->crc);
		}
	}
	return h;
nomem:
	cJSON_Delete(h);
	lora_err_nomem(e);
	return NULL;
}

int lora_lorafile_write(const lora_adapter *a, FILE *f, const char *name, uint64_t *nbytes, lora_err *e)
{
	int rc = 0;
	plan p;
	cJSON *h = NULL;
	char *text = NULL;
	if ((rc = plan_build(&p, a, e)))
		goto out;
	/* Chunks are independent: compress them on every core. The output does
	 * not depend on the thread count. */
	size_t nch = p.n;
	chunk *ch = p.ch;
#pragma omp parallel for schedule(dynamic)
	for (size_t k = 0; k < nch; k++)
		compress_chunk(&ch[k]);
	for (size_t k = 0; k < nch; k++) {
		char what[600];
		if (!ch[k].err)
			continue;
		chunk_name(what, sizeof what, a, &p, k);
		size_t cols = ch[k].cols, bad = ch[k].bad;
		char at[64];
		if (cols)
			snprintf(at, sizeof at, "[%zu,%zu]", bad / cols, bad % cols);
		else
			snprintf(at, sizeof at, "[%zu]", bad);
		if (ch[k].err == 1)
			rc = lora_err_set(e, LORA_EINVAL, "%s: non-finite value at %s", what, at);
		else if (ch[k].err == 4)
			rc = lora_err_set(e, LORA_EINVAL, "%s: value %g at %s overflows %s", what,
			                  (double)ch[k].x[bad], at, lora_dtype_name(ch[k].t));
		else
			rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory compressing", what);
		goto out;
	}
	if (!(h = header_json(a, &p, e))) {
		rc = e ? e->code : LORA_ENOMEM;
		goto out;
	}
	text = cJSON_PrintUnformatted(h);
	if (!text) {
		rc = lora_err_nomem(e);
		goto out;
	}
	size_t hl = strlen(text);
	if (hl > LORA_FILE_MAX_HEADER) {
		rc = lora_err_set(e, LORA_EINVAL, "%s: header of %zu bytes exceeds the %u-byte limit", name,
		                  hl, LORA_FILE_MAX_HEADER);
		goto out;
	}
	unsigned char pre[16], crcb[4];
	memcpy(pre, LORA_FILE_MAGIC, 8);
	put32(pre + 8, LORA_FILE_VERSION);
	put32(pre + 12, (uint32_t)hl);
	uLong crc = crc32(crc32(0, pre, 16), (const Bytef *)text, (uInt)hl);
	put32(crcb, (uint32_t)crc);
	uint64_t total = 16 + hl + 4;
	fwrite(pre, 1, 16, f);
	fwrite(text, 1, hl, f);
	fwrite(crcb, 1, 4, f);
	for (size_t k = 0; k < nch && !ferror(f); k++) {
		fwrite(ch[k].z, 1, ch[k].zsize, f);
		total += ch[k].zsize;
	}
	if (fflush(f) != 0 || ferror(f))
		rc = lora_err_set(e, LORA_EIO, "%s: write error: %s", name, strerror(errno));
	if (nbytes)
		*nbytes = total;
out:
	plan_free(&p);
	cJSON_free(text);
	cJSON_Delete(h);
	return rc;
}

int lora_lorafile_save(const lora_adapter *a, const char *path, int force, lora_err *e)
{
	lora_outfile o;
	const char *name = path && strcmp(path, "-") ? path : "standard output";
	int rc = lora_outfile_open(&o, path, LORA_OUT_BINARY | (force ? LORA_OUT_FORCE : 0), e);
	if (rc)
		return rc;
	rc = lora_lorafile_write(a, o.fp, name, NULL, e);
	if (rc) {
		lora_outfile_abort(&o);
		return rc;
	}
	return lora_outfile_commit(&o, e);
}

/* ---- reading ---- */

typedef struct {
	FILE *f;
	const char *name;
	uint64_t pos;
} src;

/* Read exactly n bytes; a short read is truncation, named with what. */
static int read_exact(src *s, void *buf, size_t n, const char *what, lora_err *e)
{
	size_t got = fread(buf, 1, n, s->f);
	s->pos += got;
	if (got == n)
		return 0;
	if (ferror(s->f))
		return lora_err_set(e, LORA_EIO, "%s: read error in %s: %s", s->name, what, strerror(errno));
	return lora_err_set(e, LORA_EFORMAT, "%s: truncated in %s (file ends at byte %llu)", s->name,
	                    what, (unsigned long long)s->pos);
}

/* A JSON number that is an exact non-negative integer <= max. */
static int get_uint(const cJSON *o, const char *key, uint64_t max, uint64_t *v)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(x) || !(x->valuedouble >= 0) || x->valuedouble > (double)max ||
	    x->valuedouble != floor(x->valuedouble))
		return -1;
	*v = (uint64_t)x->valuedouble;
	return 0;
}

static char *dup_string(const cJSON *o, const char *key)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(x) ? strdup(x->valuestring) : NULL;
}

/* One payload as the header announces it, in file order. */
enum { P_A, P_B, P_MAG, P_BIAS, P_EXTRA };
typedef struct {
	int kind;
	size_t idx;     /* layer or extra index */
	uint64_t zsize;
	uint32_t crc;
} payload;

typedef struct {
	payload *p;
	size_t n, cap;
} payloads;

static int push(payloads *ps, int kind, size_t idx, uint64_t zsize, uint32_t crc)
{
	if (lora_shape_grow(&ps->p, &ps->cap, ps->n + 1, sizeof *ps->p))
		return -1;
	ps->p[ps->n++] = (payload){kind, idx, zsize, crc};
	return 0;
}

/* Uncompressed bytes of a payload (sizes were bounded when parsed). */
static size_t payload_raw(const lora_adapter *a, const payload *p)
{
	const lora_layer *l = p->kind == P_EXTRA ? NULL : &a->layers[p->idx];
	size_t es = lora_dtype_size(a->dtype);
	switch (p->kind) {
	case P_A: return l->rank * l->in * es;
	case P_B: return l->out * l->rank * es;
	case P_MAG:
	case P_BIAS: return l->out * es;
	default: return a->extras[p->idx].nbytes;
	}
}

/* The "zsize"/"crc32" object c of a payload of raw bytes. deflate cannot
 * expand beyond compressBound; a larger claim is a lie. */
static int get_sizes(const cJSON *c, uint64_t raw, uint64_t *zs, uint32_t *crc)
{
	uint64_t bound = raw + raw / 1000 + 64, v;
	if (!cJSON_IsObject(c) || get_uint(c, "zsize", bound, zs) || *zs == 0 ||
	    get_uint(c, "crc32", 0xffffffffu, &v))
		return -1;
	*crc = (uint32_t)v;
	return 0;
}

/* Extra tensors: raw bytes of any safetensors dtype, carried unchanged. */
/* Names are checked once the header is read, by sorting: a check per
 * layer against those before it made 40k layers take seconds. */
static int no_dups(const lora_adapter *a, const char *name, lora_err *e)
{
	int nomem;
	const char *d = lora_adapter_dup_layer(a, &nomem);
	if (d || nomem)
		return nomem ? lora_err_nomem(e) : lora_err_set(e, LORA_EFORMAT, "%s: header: layer '%s' appears twice", name, d);
	d = lora_adapter_dup_extra(a, &nomem);
	if (d || nomem)
		return nomem ? lora_err_nomem(e) : lora_err_set(e, LORA_EFORMAT, "%s: header: extra '%s' appears twice", name, d);
	return 0;
}

static int parse_extras(lora_adapter *a, const cJSON *x, const char *name, payloads *ps, lora_err *e)
{
	const cJSON *it;
	int idx = 0;
	if (!cJSON_IsArray(x))
		return lora_err_set(e, LORA_EFORMAT, "%s: header: 'extras' must be an array", name);
	cJSON_ArrayForEach(it, x) {
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
		const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
		const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
		size_t shape[LORA_MAX_DIMS], nd = 0, nb;
		lora_dtype t;
		uint64_t zs;
		uint32_t crc;
		if (!cJSON_IsString(nm) || !*nm->valuestring)
			return lora_err_set(e, LORA_EFORMAT, "%s: header: extra %d has no name", name, idx);
		const char *xn = nm->valuestring;
		if (!cJSON_IsString(dt) || lora_dtype_from_st(dt->valuestring, &t))
			return lora_err_set(e, LORA_EFORMAT, "%s: extra '%s': 'dtype' must be a safetensors dtype name",
			                    name, xn);
		int bad = !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > LORA_MAX_DIMS;
		for (const cJSON *d = bad ? NULL : sh->child; d && !bad; d = d->next) {
			bad = !cJSON_IsNumber(d) || !(d->valuedouble >= 0) || d->valuedouble > 0x1p53 ||
			      d->valuedouble != floor(d->valuedouble);
			if (!bad)
				shape[nd++] = (size_t)d->valuedouble;
		}
		if (bad)
			return lora_err_set(e, LORA_EFORMAT,
			                    "%s: extra '%s': 'shape' must be an array of at most %d non-negative integers",
			                    name, xn, LORA_MAX_DIMS);
		/* Bound the size so that the zsize bound below cannot overflow. */
		if (lora_shape_bytes(shape, nd, lora_dtype_size(t), &nb) || nb > ((size_t)1 << 60))
			return lora_err_set(e, LORA_EFORMAT, "%s: extra '%s': shape is too large", name, xn);
		if (get_sizes(it, nb, &zs, &crc))
			return lora_err_set(e, LORA_EFORMAT, "%s: extra '%s': 'zsize' and 'crc32' must be integers in range",
			                    name, xn);
		if (!lora_adapter_add_extra(a, xn, t, nd, shape, NULL, e))
			return lora_err_prefix(e, "%s", name);
		if (push(ps, P_EXTRA, a->nextras - 1, zs, crc))
			return lora_err_nomem(e);
		idx++;
	}
	return no_dups(a, name, e);
}

static int parse_header(lora_adapter *a, const char *text, size_t len, const char *name, payloads *ps,
                        lora_err *e)
{
	payloads tail = {0}; /* magnitude and bias payloads, which follow every A and B */
	cJSON *h, *x;
	int rc = lora_json_parse(&h, name, "header", text, len, e);
	if (rc)
		goto out;
	x = cJSON_GetObjectItemCaseSensitive(h, "dtype");
	if (!cJSON_IsString(x) || lora_dtype_parse(x->valuestring, &a->dtype)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header: 'dtype' must be f32, f16 or bf16", name);
		goto out;
	}
	x = cJSON_GetObjectItemCaseSensitive(h, "scaling");
	if (x && !(cJSON_IsString(x) &&
	           (strcmp(x->valuestring, "standard") == 0 || strcmp(x->valuestring, "rslora") == 0))) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header: 'scaling' must be standard or rslora", name);
		goto out;
	}
	a->rslora = x && strcmp(x->valuestring, "rslora") == 0;
	x = cJSON_GetObjectItemCaseSensitive(h, "base_model");
	if (cJSON_IsObject(x)) {
		a->base_name = dup_string(x, "name");
		a->base_fingerprint = dup_string(x, "fingerprint");
	}
	x = cJSON_GetObjectItemCaseSensitive(h, "targets");
	const cJSON *it;
	if (cJSON_IsArray(x))
		cJSON_ArrayForEach(it, x)
			if (cJSON_IsString(it) && (rc = lora_adapter_add_target(a, it->valuestring, e)))
				goto out;
	x = cJSON_GetObjectItemCaseSensitive(h, "provenance");
	if (cJSON_IsObject(x) && !(a->provenance = cJSON_PrintUnformatted(x))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	x = cJSON_GetObjectItemCaseSensitive(h, "fan_in_fan_out");
	if (x && !cJSON_IsBool(x)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header: 'fan_in_fan_out' must be true or false", name);
		goto out;
	}
	a->fan_in_fan_out = cJSON_IsTrue(x);
	x = cJSON_GetObjectItemCaseSensitive(h, "peft_config");
	if (x && !cJSON_IsString(x)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header: 'peft_config' must be a string", name);
		goto out;
	}
	if (x && !(a->peft_config = strdup(x->valuestring))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	x = cJSON_GetObjectItemCaseSensitive(h, "layers");
	if (!cJSON_IsArray(x)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header: 'layers' must be an array", name);
		goto out;
	}
	int idx = 0;
	cJSON_ArrayForEach(it, x) {
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
		const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
		const cJSON *al = cJSON_GetObjectItemCaseSensitive(it, "alpha");
		uint64_t out = 0, in = 0, rank = 0;
		if (!cJSON_IsString(nm) || !*nm->valuestring) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: header: layer %d has no name", name, idx);
			goto out;
		}
		const char *ln = nm->valuestring;
		/* Bound dimensions so products of two never overflow 64 bits. */
		if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != 2 || !cJSON_IsNumber(sh->child) ||
		    !cJSON_IsNumber(sh->child->next)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: layer '%s': 'shape' must be [out, in]", name, ln);
			goto out;
		}
		double d0 = sh->child->valuedouble, d1 = sh->child->next->valuedouble;
		if (!(d0 >= 1 && d0 <= 0x1p31 && d0 == floor(d0) && d1 >= 1 && d1 <= 0x1p31 && d1 == floor(d1))) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: layer '%s': shape must be two integers in [1, 2^31]",
			                  name, ln);
			goto out;
		}
		out = (uint64_t)d0, in = (uint64_t)d1;
		if (get_uint(it, "rank", 1u << 31, &rank) || rank == 0) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: layer '%s': 'rank' must be an integer in [1, 2^31]",
			                  name, ln);
			goto out;
		}
		if (!cJSON_IsNumber(al) || !isfinite(al->valuedouble)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: layer '%s': 'alpha' must be a finite number", name, ln);
			goto out;
		}
		lora_layer *l = lora_adapter_add(a, ln, out, in, rank, al->valuedouble, 1, e);
		if (!l) {
			rc = lora_err_prefix(e, "%s", name);
			goto out;
		}
		static const char *const keys[] = {"A", "B", "magnitude", "bias"};
		for (int k = 0; k < 4; k++) {
			const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, keys[k]);
			uint64_t zs;
			uint32_t crc;
			if (k >= 2 && !c)
				continue; /* optional: DoRA magnitude, lora_B bias */
			payload tmp = {k, a->nlayers - 1, 0, 0};
			if (get_sizes(c, payload_raw(a, &tmp), &zs, &crc)) {
				rc = lora_err_set(e, LORA_EFORMAT,
				                  "%s: layer '%s' %s: 'zsize' and 'crc32' must be integers in range",
				                  name, ln, keys[k]);
				goto out;
			}
			if (k == 0)
				l->zsize_A = zs, l->crc_A = crc;
			else if (k == 1)
				l->zsize_B = zs, l->crc_B = crc;
			else if (k == 2)
				l->has_magnitude = 1;
			else
				l->has_bias = 1;
			if (push(k < 2 ? ps : &tail, k, a->nlayers - 1, zs, crc)) {
				rc = lora_err_nomem(e);
				goto out;
			}
		}
		idx++;
	}
	if ((rc = no_dups(a, name, e)))
		goto out;
	for (size_t k = 0; k < tail.n; k++)
		if (push(ps, tail.p[k].kind, tail.p[k].idx, tail.p[k].zsize, tail.p[k].crc)) {
			rc = lora_err_nomem(e);
			goto out;
		}
	x = cJSON_GetObjectItemCaseSensitive(h, "extras");
	if (x && (rc = parse_extras(a, x, name, ps, e)))
		goto out;
out:
	free(tail.p);
	cJSON_Delete(h);
	return rc;
}

/* Read one compressed payload of zsize bytes that must inflate to exactly
 * raw bytes, verify its CRC, and (when dst) return the inflated bytes
 * unshuffled with element size es. Output is allocated as data arrives, so
 * a header that lies about sizes cannot make us allocate more than the
 * input actually supplies (times the deflate ratio bound). */
static int read_payload(src *s, unsigned char **dst, const char *what, uint64_t zsize, uint32_t want,
                        size_t raw, size_t es, lora_err *e)
{
	uint64_t left = zsize;
	unsigned char *in = malloc(CHUNK), *buf = NULL;
	size_t cap = 0;
	int rc = 0, zrc = Z_OK;
	z_stream z;
	memset(&z, 0, sizeof z);
	if (!in || inflateInit(&z) != Z_OK) {
		free(in);
		return lora_err_nomem(e);
	}
	uLong crc = crc32(0, NULL, 0);
	unsigned char sink[CHUNK];
	/* Inflate into a sink when only verifying, and for an empty tensor,
	 * which has no buffer to inflate into. */
	int to_sink = !dst || raw == 0;
	while (left > 0) {
		size_t k = left < CHUNK ? (size_t)left : CHUNK;
		if ((rc = read_exact(s, in, k, what, e)))
			goto out;
		left -= k;
		crc = crc32(crc, in, (uInt)k);
		if (zrc != Z_OK)
			continue; /* keep reading to finish the CRC for a better message */
		z.next_in = in;
		z.avail_in = (uInt)k;
		while (z.avail_in > 0 && zrc == Z_OK) {
			if (!to_sink) {
				if (z.total_out == cap && cap < raw) {
					size_t ncap = cap ? cap * 2 : (1u << 20);
					if (ncap > raw)
						ncap = raw;
					unsigned char *nb = realloc(buf, ncap);
					if (!nb) {
						rc = lora_err_set(e, LORA_ENOMEM, "%s: %s: out of memory", s->name, what);
						goto out;
					}
					buf = nb, cap = ncap;
				}
				z.next_out = buf + z.total_out;
				z.avail_out = (uInt)(cap - z.total_out < (1u << 30) ? cap - z.total_out : (1u << 30));
			} else {
				z.next_out = sink;
				z.avail_out = sizeof sink;
			}
			zrc = inflate(&z, Z_NO_FLUSH);
			/* No progress with input left means the output is full at the
			 * declared size: the stream holds more than the header says. */
			if (zrc == Z_BUF_ERROR)
				zrc = z.avail_in ? Z_DATA_ERROR : Z_OK;
			if (to_sink && z.total_out > raw)
				zrc = Z_DATA_ERROR;
		}
		if (zrc == Z_STREAM_END && (z.avail_in > 0 || left > 0))
			zrc = Z_DATA_ERROR; /* compressed stream ends before its chunk does */
	}
	if ((uint32_t)crc != want) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: %s: CRC mismatch (corrupt data)", s->name, what);
		goto out;
	}
	if (zrc != Z_STREAM_END || z.total_out != raw) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: %s: invalid compressed data", s->name, what);
		goto out;
	}
	if (dst) {
		unsigned char *plain = malloc(raw ? raw : 1);
		if (!plain) {
			rc = lora_err_set(e, LORA_ENOMEM, "%s: %s: out of memory", s->name, what);
			goto out;
		}
		if (raw)
			unshuffle(plain, buf, raw / es, es);
		*dst = plain;
	}
out:
	inflateEnd(&z);
	free(in);
	free(buf);
	return rc;
}

/* Payload p for messages: "layer 'w' A", "extra 'name'". */
static void payload_name(char *buf, size_t n, const lora_adapter *a, const payload *p)
{
	static const char *const which[] = {"A", "B", "magnitude", "bias"};
	if (p->kind == P_EXTRA)
		snprintf(buf, n, "extra '%s'", a->extras[p->idx].name);
	else
		snprintf(buf, n, "layer '%s' %s", a->layers[p->idx].name, which[p->kind]);
}

static uint64_t max_payload = LORA_FILE_MAX_PAYLOAD;

void lora_lorafile_set_max_payload(uint64_t bytes)
{
	max_payload = bytes ? bytes : 1;
}

uint64_t lora_lorafile_max_payload(void)
{
	return max_payload;
}

/* Deflate expands up to 1032 times, so a small file with honest shapes can
 * still ask for terabytes. The header says exactly how much every payload
 * inflates to (a stream that inflates further is refused), so the total is
 * known before the first byte is inflated: refuse it there. */
static int check_total(const lora_adapter *a, const payloads *ps, const char *name, lora_err *e)
{
	uint64_t sum = 0;
	for (size_t k = 0; k < ps->n; k++) {
		uint64_t raw = payload_raw(a, &ps->p[k]);
		if (raw <= max_payload - sum) {
			sum += raw;
			continue;
		}
		char what[600];
		payload_name(what, sizeof what, a, &ps->p[k]);
		return lora_err_set(e, LORA_EINVAL,
		                    "%s: %s: the payloads up to here decompress to %llu bytes, past the limit of %llu; "
		                    "raise it with %s=SIZE (e.g. 32G)",
		                    name, what, (unsigned long long)(raw > UINT64_MAX - sum ? UINT64_MAX : sum + raw),
		                    (unsigned long long)max_payload,
		                    LORA_FILE_MAX_PAYLOAD_ENV);
	}
	return 0;
}

/* Read payload p into the adapter (or only verify it). */
static int read_one(src *s, lora_adapter *a, const payload *p, int keep, lora_err *e)
{
	char what[600];
	size_t raw = payload_raw(a, p);
	lora_extra *x = p->kind == P_EXTRA ? &a->extras[p->idx] : NULL;
	lora_layer *l = x ? NULL : &a->layers[p->idx];
	size_t es = x ? lora_dtype_size(x->dtype) : lora_dtype_size(a->dtype);
	unsigned char *plain = NULL;
	payload_name(what, sizeof what, a, p);
	int rc = read_payload(s, keep ? &plain : NULL, what, p->zsize, p->crc, raw, es, e);
	if (rc || !keep)
		return rc;
	if (x) {
		x->data = plain;
		return 0;
	}
	size_t n = raw / es, cols = p->kind == P_A ? l->in : p->kind == P_B ? l->rank : 0;
	float *f = malloc((n ? n : 1) * sizeof(float));
	if (!f) {
		free(plain);
		return lora_err_set(e, LORA_ENOMEM, "%s: %s: out of memory", s->name, what);
	}
	lora_dtype_to_f32(f, plain, a->dtype, n);
	free(plain);
	size_t bad = lora_dtype_find_nonfinite(f, n);
	if (bad < n) {
		free(f);
		if (cols)
			return lora_err_set(e, LORA_EFORMAT, "%s: %s: non-finite value at [%zu,%zu]", s->name, what,
			                    bad / cols, bad % cols);
		return lora_err_set(e, LORA_EFORMAT, "%s: %s: non-finite value at [%zu]", s->name, what, bad);
	}
	float **slot = p->kind == P_A ? &l->A : p->kind == P_B ? &l->B : p->kind == P_MAG ? &l->magnitude : &l->bias;
	*slot = f;
	return 0;
}

int lora_lorafile_readf(lora_adapter **out, FILE *f, const char *name, int mode, lora_err *e)
{
	unsigned char pre[16], crcb[4];
	char *text = NULL;
	src s = {f, name, 0};
	payloads ps = {0};
	int rc;
	lora_adapter *a = lora_adapter_new();
	*out = NULL;
	if (!a)
		return lora_err_nomem(e);
	size_t got = fread(pre, 1, 16, f);
	s.pos = got;
	if (got < 8 || !lora_lorafile_is_lora(pre, got)) {
		rc = ferror(f) ? lora_err_set(e, LORA_EIO, "%s: read error: %s", name, strerror(errno))
		               : lora_err_set(e, LORA_EFORMAT, "%s: not a .lora file (bad magic)", name);
		goto out;
	}
	if (got < 16) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: truncated in the file header (file ends at byte %zu)",
		                  name, got);
		goto out;
	}
	uint32_t ver = get32(pre + 8), hl = get32(pre + 12);
	if (ver != LORA_FILE_VERSION) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: unsupported .lora version %u (this build reads version %d)",
		                  name, ver, LORA_FILE_VERSION);
		goto out;
	}
	if (hl == 0 || hl > LORA_FILE_MAX_HEADER) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header length %u out of range [1, %u]", name, hl,
		                  LORA_FILE_MAX_HEADER);
		goto out;
	}
	/* The header length is bounded above, but read it in pieces anyway so a
	 * short hostile file costs little memory. */
	size_t have = 0, cap = 0;
	while (have < hl) {
		size_t k = hl - have < CHUNK ? hl - have : CHUNK;
		if (have + k + 1 > cap) {
			cap = have + k + 1 > 2 * cap ? have + k + 1 : 2 * cap;
			cap = cap > (size_t)hl + 1 ? (size_t)hl + 1 : cap;
			char *nt = realloc(text, cap);
			if (!nt) {
				rc = lora_err_nomem(e);
				goto out;
			}
			text = nt;
		}
		if ((rc = read_exact(&s, text + have, k, "the header", e)))
			goto out;
		have += k;
	}
	text[hl] = 0;
	if ((rc = read_exact(&s, crcb, 4, "the header CRC", e)))
		goto out;
	uLong crc = crc32(crc32(0, pre, 16), (const Bytef *)text, hl);
	if ((uint32_t)crc != get32(crcb)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header CRC mismatch (corrupt header)", name);
		goto out;
	}
	if ((rc = parse_header(a, text, hl, name, &ps, e)))
		goto out;
	a->version = (int)ver;
	uint64_t total = s.pos;
	for (size_t k = 0; k < ps.n; k++)
		total += ps.p[k].zsize;
	struct stat sb;
	int regular = fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode);
	if (regular && (uint64_t)sb.st_size < total) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: truncated: header promises %llu bytes, file has %llu",
		                  name, (unsigned long long)total, (unsigned long long)sb.st_size);
		goto out;
	}
	if (mode == LORA_READ_HEADER) {
		if (regular && (uint64_t)sb.st_size > total) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: %llu unexpected bytes after the last tensor", name,
			                  (unsigned long long)(sb.st_size - total));
			goto out;
		}
		a->file_bytes = total;
		*out = a;
		a = NULL;
		goto out;
	}
	if ((rc = check_total(a, &ps, name, e)))
		goto out;
	for (size_t k = 0; k < ps.n; k++)
		if ((rc = read_one(&s, a, &ps.p[k], mode == LORA_READ_ALL, e)))
			goto out;
	int c = fgetc(f);
	if (c != EOF) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: unexpected bytes after the last tensor", name);
		goto out;
	}
	a->file_bytes = s.pos;
	*out = a;
	a = NULL;
out:
	free(text);
	free(ps.p);
	lora_adapter_free(a);
	return rc;
}

int lora_lorafile_read(lora_adapter **out, const char *path, int mode, lora_err *e)
{
	*out = NULL;
	if (!path || strcmp(path, "-") == 0)
		return lora_lorafile_readf(out, stdin, "standard input", mode, e);
	FILE *f = fopen(path, "rb");
	if (!f)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	int rc = lora_lorafile_readf(out, f, path, mode, e);
	fclose(f);
	return rc;
}
