#include "lorafile.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "outfile.h"

#define CHUNK (1u << 16)

int lora_file_is_lora(const void *buf, size_t n)
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

typedef struct {
	unsigned char *z;
	size_t zsize;
	uint32_t crc;
	int err; /* 0, or 1 = non-finite value, 2 = out of memory, 3 = zlib */
	size_t bad;
} chunk;

static void compress_tensor(chunk *c, const float *x, size_t n, lora_dtype t)
{
	size_t s = lora_dtype_size(t), raw = n * s;
	size_t bad = lora_find_nonfinite(x, n);
	if (bad < n) {
		c->err = 1, c->bad = bad;
		return;
	}
	unsigned char *conv = malloc(raw ? raw : 1), *sh = malloc(raw ? raw : 1);
	uLongf zn = compressBound(raw);
	c->z = malloc(zn);
	if (!conv || !sh || !c->z) {
		c->err = 2;
		goto out;
	}
	lora_from_f32(conv, x, t, n);
	shuffle(sh, conv, n, s);
	if (compress2(c->z, &zn, sh, raw, 6) != Z_OK) {
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

static cJSON *header_json(const lora_adapter *a, const chunk *ch, lora_err *e)
{
	cJSON *h = cJSON_CreateObject(), *layers, *t;
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
		cJSON *p = cJSON_Parse(a->provenance);
		if (!p || !cJSON_IsObject(p)) {
			cJSON_Delete(p);
			cJSON_Delete(h);
			lora_err_set(e, LORA_EINVAL, "provenance is not a JSON object");
			return NULL;
		}
		cJSON_AddItemToObject(h, "provenance", p);
	}
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
		for (int k = 0; k < 2; k++) {
			cJSON *c = cJSON_AddObjectToObject(o, k ? "B" : "A");
			if (!c)
				goto nomem;
			cJSON_AddNumberToObject(c, "zsize", (double)ch[2 * i + k].zsize);
			cJSON_AddNumberToObject(c, "crc32", (double)ch[2 * i + k].crc);
		}
	}
	return h;
nomem:
	cJSON_Delete(h);
	lora_err_set(e, LORA_ENOMEM, "out of memory");
	return NULL;
}

int lora_file_write(const lora_adapter *a, FILE *f, const char *name, uint64_t *nbytes, lora_err *e)
{
	int rc = 0;
	size_t nch = 2 * a->nlayers;
	chunk *ch = calloc(nch ? nch : 1, sizeof *ch);
	cJSON *h = NULL;
	char *text = NULL;
	if (!ch)
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	for (size_t i = 0; i < a->nlayers; i++)
		if (!a->layers[i].A || !a->layers[i].B) {
			rc = lora_err_set(e, LORA_EINVAL, "layer '%s': no tensor data", a->layers[i].name);
			goto out;
		}
	/* Chunks are independent: compress them on every core. The output does
	 * not depend on the thread count. */
#pragma omp parallel for schedule(dynamic)
	for (size_t k = 0; k < nch; k++) {
		const lora_layer *l = &a->layers[k / 2];
		if (k % 2 == 0)
			compress_tensor(&ch[k], l->A, l->rank * l->in, a->dtype);
		else
			compress_tensor(&ch[k], l->B, l->out * l->rank, a->dtype);
	}
	for (size_t k = 0; k < nch; k++) {
		const lora_layer *l = &a->layers[k / 2];
		const char *which = k % 2 ? "B" : "A";
		size_t cols = k % 2 ? l->rank : l->in;
		if (ch[k].err == 1) {
			rc = lora_err_set(e, LORA_EINVAL, "layer '%s' %s: non-finite value at [%zu,%zu]", l->name,
			                  which, ch[k].bad / cols, ch[k].bad % cols);
			goto out;
		}
		if (ch[k].err) {
			rc = lora_err_set(e, LORA_ENOMEM, "layer '%s' %s: out of memory compressing", l->name,
			                  which);
			goto out;
		}
	}
	if (!(h = header_json(a, ch, e))) {
		rc = e ? e->code : LORA_ENOMEM;
		goto out;
	}
	text = cJSON_PrintUnformatted(h);
	if (!text) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
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
	for (size_t k = 0; k < nch; k++)
		free(ch[k].z);
	free(ch);
	cJSON_free(text);
	cJSON_Delete(h);
	return rc;
}

int lora_file_save(const lora_adapter *a, const char *path, int force, lora_err *e)
{
	lora_outfile o;
	const char *name = path && strcmp(path, "-") ? path : "standard output";
	int rc = lora_outfile_open(&o, path, LORA_OUT_BINARY | (force ? LORA_OUT_FORCE : 0), e);
	if (rc)
		return rc;
	rc = lora_file_write(a, o.fp, name, NULL, e);
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

static int parse_header(lora_adapter *a, const char *text, const char *name, lora_err *e)
{
	int rc = 0;
	cJSON *h = cJSON_Parse(text), *x;
	if (!h || !cJSON_IsObject(h)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header is not a JSON object", name);
		goto out;
	}
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
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
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
		if (lora_adapter_find(a, ln)) {
			rc = lora_err_set(e, LORA_EFORMAT, "%s: header: layer '%s' appears twice", name, ln);
			goto out;
		}
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
		for (int k = 0; k < 2; k++) {
			const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, k ? "B" : "A");
			uint64_t zs, crc, raw = (k ? out * rank : rank * in) * lora_dtype_size(a->dtype);
			/* deflate cannot expand beyond compressBound; a larger claim is a lie. */
			uint64_t bound = raw + raw / 1000 + 64;
			if (!cJSON_IsObject(c) || get_uint(c, "zsize", bound, &zs) || zs == 0 ||
			    get_uint(c, "crc32", 0xffffffffu, &crc)) {
				rc = lora_err_set(e, LORA_EFORMAT,
				                  "%s: layer '%s' %s: 'zsize' and 'crc32' must be integers in range",
				                  name, ln, k ? "B" : "A");
				goto out;
			}
			if (k) {
				l->zsize_B = zs, l->crc_B = (uint32_t)crc;
			} else {
				l->zsize_A = zs, l->crc_A = (uint32_t)crc;
			}
		}
		idx++;
	}
out:
	cJSON_Delete(h);
	return rc;
}

/* Read one compressed tensor of zsize bytes, verify its CRC and size, and
 * (when dst) convert it to f32. Output is allocated as data arrives, so a
 * header that lies about sizes cannot make us allocate more than the input
 * actually supplies (times the deflate ratio bound). */
static int read_tensor(src *s, float **dst, const lora_layer *l, int isB, lora_dtype t,
                       lora_err *e)
{
	size_t es = lora_dtype_size(t);
	size_t n = isB ? l->out * l->rank : l->rank * l->in, raw = n * es;
	uint64_t zsize = isB ? l->zsize_B : l->zsize_A, left = zsize;
	uint32_t want = isB ? l->crc_B : l->crc_A;
	const char *which = isB ? "B" : "A";
	unsigned char *in = malloc(CHUNK), *buf = NULL, *plain = NULL;
	size_t cap = 0;
	int rc = 0, zrc = Z_OK;
	z_stream z;
	memset(&z, 0, sizeof z);
	char what[600];
	snprintf(what, sizeof what, "layer '%s' %s", l->name, which);
	if (!in || inflateInit(&z) != Z_OK) {
		free(in);
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	}
	uLong crc = crc32(0, NULL, 0);
	unsigned char sink[CHUNK];
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
			if (dst) {
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
			if (!dst && z.total_out > raw)
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
		plain = malloc(raw ? raw : 1);
		float *f = malloc(n * sizeof(float));
		if (!plain || !f) {
			free(f);
			rc = lora_err_set(e, LORA_ENOMEM, "%s: %s: out of memory", s->name, what);
			goto out;
		}
		unshuffle(plain, buf, n, es);
		lora_to_f32(f, plain, t, n);
		size_t bad = lora_find_nonfinite(f, n);
		if (bad < n) {
			free(f);
			size_t cols = isB ? l->rank : l->in;
			rc = lora_err_set(e, LORA_EFORMAT, "%s: %s: non-finite value at [%zu,%zu]", s->name, what,
			                  bad / cols, bad % cols);
			goto out;
		}
		*dst = f;
	}
out:
	inflateEnd(&z);
	free(in);
	free(buf);
	free(plain);
	return rc;
}

int lora_file_readf(lora_adapter **out, FILE *f, const char *name, int mode, lora_err *e)
{
	unsigned char pre[16], crcb[4];
	char *text = NULL;
	src s = {f, name, 0};
	int rc;
	lora_adapter *a = lora_adapter_new();
	*out = NULL;
	if (!a)
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	size_t got = fread(pre, 1, 16, f);
	s.pos = got;
	if (got < 8 || !lora_file_is_lora(pre, got)) {
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
	size_t have = 0;
	while (have < hl) {
		size_t k = hl - have < CHUNK ? hl - have : CHUNK;
		char *nt = realloc(text, have + k + 1);
		if (!nt) {
			rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
			goto out;
		}
		text = nt;
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
	if (memchr(text, 0, hl)) {
		rc = lora_err_set(e, LORA_EFORMAT, "%s: header contains a NUL byte", name);
		goto out;
	}
	if ((rc = parse_header(a, text, name, e)))
		goto out;
	a->version = (int)ver;
	uint64_t total = s.pos;
	for (size_t i = 0; i < a->nlayers; i++)
		total += a->layers[i].zsize_A + a->layers[i].zsize_B;
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
	for (size_t i = 0; i < a->nlayers; i++) {
		lora_layer *l = &a->layers[i];
		int keep = mode == LORA_READ_ALL;
		if ((rc = read_tensor(&s, keep ? &l->A : NULL, l, 0, a->dtype, e)) ||
		    (rc = read_tensor(&s, keep ? &l->B : NULL, l, 1, a->dtype, e)))
			goto out;
	}
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
	lora_adapter_free(a);
	return rc;
}

int lora_file_read(lora_adapter **out, const char *path, int mode, lora_err *e)
{
	*out = NULL;
	if (!path || strcmp(path, "-") == 0)
		return lora_file_readf(out, stdin, "standard input", mode, e);
	FILE *f = fopen(path, "rb");
	if (!f)
		return lora_err_set(e, LORA_EIO, "%s: %s", path, strerror(errno));
	int rc = lora_file_readf(out, f, path, mode, e);
	fclose(f);
	return rc;
}
