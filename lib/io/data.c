#include "io/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "core/dtype.h"
#include "core/path.h"

static const char *const names[] = {"auto", "u16", "u32", "llmc", "bytes"};

int lora_data_format_parse(const char *s, lora_data_format *f)
{
	for (int i = 0; i < 5; i++)
		if (strcmp(s, names[i]) == 0) {
			*f = (lora_data_format)i;
			return 0;
		}
	return -1;
}

const char *lora_data_format_name(lora_data_format f) { return names[f]; }


static uint32_t rd32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t lora_data_token(const lora_data *d, size_t i)
{
	const unsigned char *p = d->tokens + i * d->elem;
	switch (d->elem) {
	case 1: return p[0];
	case 2: return (uint32_t)p[0] | (uint32_t)p[1] << 8;
	default: return rd32(p);
	}
}

void lora_data_close(lora_data *d)
{
	if (!d)
		return;
	if (d->heap)
		free(d->map);
	else if (d->map)
		munmap(d->map, d->map_len);
	free(d->path);
	free(d);
}

char *lora_data_id(const lora_data *d)
{
	uint64_t h = lora_rng_fnv1a(LORA_FNV_INIT, d->map, d->map_len);
	const char *base = lora_path_base(d->path);
	size_t len = strlen(base) + 64;
	char *s = malloc(len);
	if (s)
		snprintf(s, len, "%s:%zu:%016llx", base, d->map_len, (unsigned long long)h);
	return s;
}

/* The format, token count and tokens of d's map_len bytes at map, checked. */
static int parse(lora_data *d, lora_data_format fmt, size_t vocab, lora_err *e)
{
	const char *path = d->path;
	size_t size = d->map_len;
	const unsigned char *p = d->map;
	uint32_t magic = size >= 4 ? rd32(p) : 0;
	if (fmt == LORA_DATA_AUTO) {
		if (size >= LORA_LLMC_HEADER_BYTES && (magic == LORA_LLMC_MAGIC_U16 || magic == LORA_LLMC_MAGIC_U32))
			fmt = LORA_DATA_LLMC;
		else if (lora_path_has_suffix(path, ".u32"))
			fmt = LORA_DATA_U32;
		else if (lora_path_has_suffix(path, ".bin") || lora_path_has_suffix(path, ".u16"))
			fmt = LORA_DATA_U16;
		else
			return lora_err_set(e, LORA_EUSAGE,
			                    "%s: cannot tell the token format from the name (.bin, .u16, .u32): give --data-format",
			                    path);
	}
	d->format = fmt;
	size_t body = size;
	d->tokens = p;
	switch (fmt) {
	case LORA_DATA_BYTES: d->elem = 1; break;
	case LORA_DATA_U16: d->elem = 2; break;
	case LORA_DATA_U32: d->elem = 4; break;
	case LORA_DATA_LLMC: {
		if (size < LORA_LLMC_HEADER_BYTES)
			return lora_err_set(e, LORA_EFORMAT, "%s: %zu bytes is too short for an llm.c header (1024 bytes)",
			                    path, size);
		if (magic != LORA_LLMC_MAGIC_U16 && magic != LORA_LLMC_MAGIC_U32)
			return lora_err_set(e, LORA_EFORMAT, "%s: bad llm.c magic %u (expected %d or %d)", path, magic,
			                    LORA_LLMC_MAGIC_U16, LORA_LLMC_MAGIC_U32);
		uint32_t version = rd32(p + 4), n = rd32(p + 8);
		if (version != 1)
			return lora_err_set(e, LORA_EFORMAT, "%s: llm.c token file version %u is not supported (1)", path,
			                    version);
		d->elem = magic == LORA_LLMC_MAGIC_U16 ? 2 : 4;
		d->tokens = p + LORA_LLMC_HEADER_BYTES;
		body = size - LORA_LLMC_HEADER_BYTES;
		if ((uint64_t)n * d->elem != body)
			return lora_err_set(e, LORA_EFORMAT,
			                    "%s: llm.c header says %u tokens but the file holds %zu bytes of %zu-byte tokens",
			                    path, n, body, d->elem);
		break;
	}
	default: break;
	}
	if (body % d->elem)
		return lora_err_set(e, LORA_EFORMAT, "%s: %zu bytes is not a whole number of %zu-byte tokens", path,
		                    body, d->elem);
	d->ntokens = body / d->elem;
	/* One pass over every token now, so that no batch fails half-way. */
	if (!(d->elem < 4 && vocab >= ((size_t)1 << (8 * d->elem))))
		for (size_t i = 0; i < d->ntokens; i++) {
			uint32_t t = lora_data_token(d, i);
			if (t >= vocab)
				return lora_err_set(e, LORA_EINVAL, "%s: token %u at position %zu is >= vocab_size %zu", path,
				                    t, i, vocab);
		}
	return 0;
}

int lora_data_open(lora_data **out, const char *path, lora_data_format fmt, size_t vocab, lora_err *e)
{
	int fd, rc = 0;
	struct stat sb;
	lora_data *d = NULL;
	*out = NULL;
	if ((fd = lora_path_open_file(path, &sb, e)) < 0)
		return fd;
	if (!(d = calloc(1, sizeof *d)) || !(d->path = strdup(path))) {
		rc = lora_err_set(e, LORA_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	size_t size = (size_t)sb.st_size;
	if (size) {
		d->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (d->map == MAP_FAILED) {
			d->map = NULL;
			rc = lora_err_set(e, LORA_EIO, "%s: cannot map: %s", path, strerror(errno));
			goto out;
		}
		d->map_len = size;
		madvise(d->map, size, MADV_SEQUENTIAL);
	}
	if (!(rc = parse(d, fmt, vocab, e)))
		*out = d;
out:
	close(fd);
	if (rc)
		lora_data_close(d);
	return rc;
}

int lora_data_from_memory(lora_data **out, const char *name, void *buf, size_t n, lora_data_format fmt, size_t vocab,
                          lora_err *e)
{
	lora_data *d = calloc(1, sizeof *d);
	int rc;
	*out = NULL;
	if (!d || !(d->path = strdup(name))) {
		free(d);
		free(buf);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", name);
	}
	d->map = buf, d->map_len = n, d->heap = 1;
	if ((rc = parse(d, fmt, vocab, e)))
		lora_data_close(d);
	else
		*out = d;
	return rc;
}

int lora_data_batches_init(lora_data_batches *b, const lora_data *d, size_t B, size_t T, int shuffle, uint64_t seed,
                           lora_err *e)
{
	memset(b, 0, sizeof *b);
	b->d = d, b->B = B, b->T = T;
	size_t bt;
	if (B == 0 || T == 0 || lora_shape_mul(B, T, &bt) || bt == SIZE_MAX)
		return lora_err_set(e, LORA_EUSAGE, "batch %zu x %zu is out of range", B, T);
	if (d->ntokens < bt + 1)
		return lora_err_set(e, LORA_EINVAL,
		                    "%s: %zu tokens is fewer than one batch needs (batch %zu x sequence %zu + 1 = %zu)",
		                    d->path, d->ntokens, B, T, bt + 1);
	if (!shuffle) {
		b->nbatches = (d->ntokens - 1) / bt;
		return 0;
	}
	size_t nwin = (d->ntokens - 1) / T;
	b->nbatches = nwin / B;
	if (!(b->order = malloc(nwin * sizeof *b->order)))
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", d->path);
	for (size_t i = 0; i < nwin; i++)
		b->order[i] = i;
	/* Fisher-Yates with an unbiased bounded draw (rejection). */
	lora_rng r;
	lora_rng_seed(&r, seed);
	for (size_t i = nwin - 1; i > 0; i--) {
		uint64_t n = (uint64_t)i + 1, lim = UINT64_MAX - UINT64_MAX % n, x;
		do
			x = lora_rng_u64(&r);
		while (x >= lim);
		size_t j = (size_t)(x % n), t = b->order[i];
		b->order[i] = b->order[j];
		b->order[j] = t;
	}
	return 0;
}

void lora_data_batches_free(lora_data_batches *b)
{
	free(b->order);
	b->order = NULL;
}

size_t lora_data_batches_row_offset(const lora_data_batches *b, size_t k, size_t r)
{
	if (b->order)
		return b->order[k * b->B + r] * b->T;
	return (k * b->B + r) * b->T;
}

void lora_data_batches_get(const lora_data_batches *b, size_t k, int32_t *inputs, int32_t *targets)
{
	size_t T = b->T;
	for (size_t r = 0; r < b->B; r++) {
		size_t off = lora_data_batches_row_offset(b, k, r);
		for (size_t t = 0; t < T; t++) {
			inputs[r * T + t] = (int32_t)lora_data_token(b->d, off + t);
			targets[r * T + t] = (int32_t)lora_data_token(b->d, off + t + 1);
		}
	}
}

int lora_data_write(FILE *f, const int32_t *tokens, size_t n, lora_data_format fmt)
{
	size_t k = fmt == LORA_DATA_BYTES ? 1 : fmt == LORA_DATA_U32 ? 4 : 2;
	unsigned char b[4096];
	/* packed a block at a time: one fwrite per token costs more than
	 * tokenizing does */
	for (size_t i = 0; i < n;) {
		size_t m = 0;
		for (; i < n && m + k <= sizeof b; i++) {
			uint32_t v = (uint32_t)tokens[i];
			for (size_t c = 0; c < k; c++)
				b[m++] = (unsigned char)(v >> (8 * c));
		}
		if (fwrite(b, 1, m, f) != m)
			return LORA_EIO;
	}
	return 0;
}
