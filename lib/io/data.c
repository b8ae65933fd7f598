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
#include "core/shape.h"

static const char *const names[] = {"auto", "u16", "u32", "llmc", "bytes", "tok"};

int lora_data_format_parse(const char *s, lora_data_format *f)
{
	for (int i = 0; i < 6; i++)
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

static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

size_t lora_data_doc_end(const lora_data *d, size_t i) { return (size_t)rd64(d->ends + 8 * i); }

int lora_data_target(const lora_data *d, size_t i) { return !d->mask || (d->mask[i / 8] >> (i % 8) & 1); }

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

static const char *const tok_why[] = {
	NULL,
	"too short for a tok file's header and trailer (48 bytes)",
	"not a tok file (bad magic)",
	"tok file version is not 1",
	"tok file tokens are neither 2 nor 4 bytes",
	"unknown flags or reserved bits set in the tok header",
	"tok trailer is missing or damaged (bad end magic)",
	"tok trailer's token and document counts do not fit the file's size",
};

/* The header and trailer of a tok file; the tokens' bytes into *body. A
 * nonzero return indexes tok_why. Counts are checked against the size
 * before any product is formed, so nothing overflows. */
static int parse_tok(lora_data *d, size_t *body)
{
	const unsigned char *p = d->map;
	size_t size = d->map_len, room;
	if (size < LORA_TOK_HEADER_BYTES + LORA_TOK_TRAILER_BYTES)
		return 1;
	if (memcmp(p, LORA_TOK_MAGIC, 8))
		return 2;
	if (rd32(p + 8) != 1)
		return 3;
	uint32_t elem = rd32(p + 12), flags = rd32(p + 16);
	if (elem != 2 && elem != 4)
		return 4;
	if ((flags & ~LORA_TOK_MASK) || rd32(p + 20))
		return 5;
	const unsigned char *tr = p + size - LORA_TOK_TRAILER_BYTES;
	if (memcmp(tr + 16, LORA_TOK_END, 8))
		return 6;
	uint64_t n = rd64(tr), nd = rd64(tr + 8);
	room = size - LORA_TOK_HEADER_BYTES - LORA_TOK_TRAILER_BYTES;
	if (n > room / elem || nd > n || (n && !nd))
		return 7;
	size_t need = (size_t)n * elem + (size_t)nd * 8 + ((flags & LORA_TOK_MASK) ? ((size_t)n + 7) / 8 : 0);
	if (need != room)
		return 7;
	d->elem = elem;
	d->tokens = p + LORA_TOK_HEADER_BYTES;
	*body = (size_t)n * elem;
	d->ndocs = (size_t)nd;
	d->ends = d->tokens + *body;
	d->mask = (flags & LORA_TOK_MASK) ? d->ends + 8 * nd : NULL;
	return 0;
}

/* A tok file's boundaries rise to its token count; its mask has no bit
 * past the last token. */
static int check_docs(const lora_data *d, lora_err *e)
{
	size_t prev = 0, n = d->ntokens;
	for (size_t i = 0; i < d->ndocs; i++) {
		uint64_t end = rd64(d->ends + 8 * i);
		if (end <= prev || end > n)
			return lora_err_set(e, LORA_EFORMAT, "%s: document %zu ends at token %llu, not within (%zu, %zu]",
			                    d->path, i, (unsigned long long)end, prev, n);
		prev = (size_t)end;
	}
	if (prev != n)
		return lora_err_set(e, LORA_EFORMAT, "%s: the last document ends at token %zu, not at the last token (%zu)",
		                    d->path, prev, n);
	if (d->mask && n % 8 && (d->mask[n / 8] >> (n % 8)))
		return lora_err_set(e, LORA_EFORMAT, "%s: loss mask has bits set past the last token", d->path);
	return 0;
}

/* The format, token count and tokens of d's map_len bytes at map, checked. */
static int parse(lora_data *d, lora_data_format fmt, size_t vocab, lora_err *e)
{
	int rc;
	const char *path = d->path;
	size_t size = d->map_len;
	const unsigned char *p = d->map;
	uint32_t magic = size >= 4 ? rd32(p) : 0;
	if (fmt == LORA_DATA_AUTO) {
		if (size >= 8 && !memcmp(p, LORA_TOK_MAGIC, 8))
			fmt = LORA_DATA_TOK;
		else if (size >= LORA_LLMC_HEADER_BYTES && (magic == LORA_LLMC_MAGIC_U16 || magic == LORA_LLMC_MAGIC_U32))
			fmt = LORA_DATA_LLMC;
		else if (lora_path_has_suffix(path, ".tok"))
			fmt = LORA_DATA_TOK;
		else if (lora_path_has_suffix(path, ".u32"))
			fmt = LORA_DATA_U32;
		else if (lora_path_has_suffix(path, ".bin") || lora_path_has_suffix(path, ".u16"))
			fmt = LORA_DATA_U16;
		else
			return lora_err_set(e, LORA_EUSAGE,
			                    "%s: cannot tell the token format from the name (.bin, .u16, .u32, .tok) or a header: give --data-format",
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
	case LORA_DATA_TOK: {
		int why = parse_tok(d, &body);
		if (why)
			return lora_err_set(e, LORA_EFORMAT, "%s: %s", path, tok_why[why]);
		break;
	}
	default: break;
	}
	if (body % d->elem)
		return lora_err_set(e, LORA_EFORMAT, "%s: %zu bytes is not a whole number of %zu-byte tokens", path,
		                    body, d->elem);
	d->ntokens = body / d->elem;
	if (d->ndocs && (rc = check_docs(d, e)))
		return rc;
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

/* The first document end after token off. */
static size_t next_end(const lora_data *d, size_t off, size_t *doc)
{
	size_t lo = 0, hi = d->ndocs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (lora_data_doc_end(d, mid) <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	*doc = lo;
	return lora_data_doc_end(d, lo);
}

/* Append row (off, len) to b->rows when one of its targets gets loss. */
static int add_row(lora_data_batches *b, size_t *cap, size_t off, size_t len)
{
	const lora_data *d = b->d;
	size_t doc, end = next_end(d, off, &doc);
	int any = 0;
	for (size_t i = off + 1; i < off + len && !any; i++) {
		if (i == end) {
			end = lora_data_doc_end(d, ++doc);
			continue;
		}
		any = lora_data_target(d, i);
	}
	if (!any)
		return 0;
	if (lora_shape_grow(&b->rows, cap, b->nrows + 1, sizeof *b->rows))
		return -1;
	b->rows[b->nrows++] = (lora_data_row){off, len};
	return 0;
}

/* The rows of a tok file (data.h): packed or a document each. */
static int plan_rows(lora_data_batches *b, int packed)
{
	const lora_data *d = b->d;
	size_t W = b->T + 1, cap = 0, cur = 0, curlen = 0, start = 0;
	for (size_t i = 0; i < d->ndocs; i++) {
		size_t end = lora_data_doc_end(d, i), n = end - start;
		if (!packed) {
			if (add_row(b, &cap, start, n < W ? n : W))
				return -1;
		} else if (n > W) {
			if (curlen && add_row(b, &cap, cur, curlen))
				return -1;
			curlen = 0;
			for (size_t k = 0; k * b->T + 1 < n; k++) {
				size_t o = k * b->T, len = n - o < W ? n - o : W;
				if (add_row(b, &cap, start + o, len))
					return -1;
			}
		} else if (curlen && curlen + n <= W) {
			curlen += n;
		} else {
			if (curlen && add_row(b, &cap, cur, curlen))
				return -1;
			cur = start, curlen = n;
		}
		start = end;
	}
	if (curlen && add_row(b, &cap, cur, curlen))
		return -1;
	return 0;
}

int lora_data_batches_init(lora_data_batches *b, const lora_data *d, size_t B, size_t T, unsigned flags,
                           uint64_t seed, lora_err *e)
{
	memset(b, 0, sizeof *b);
	b->d = d, b->B = B, b->T = T;
	size_t bt, nwin;
	if (B == 0 || T == 0 || lora_shape_mul(B, T, &bt) || bt == SIZE_MAX)
		return lora_err_set(e, LORA_EUSAGE, "batch %zu x %zu is out of range", B, T);
	if (d->ndocs) {
		if (plan_rows(b, !(flags & LORA_DATA_UNPACKED))) {
			lora_data_batches_free(b);
			return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", d->path);
		}
		if (b->nrows < B) {
			size_t n = b->nrows;
			lora_data_batches_free(b);
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: %zu documents make %zu row%s of %zu tokens with loss, fewer than a batch of %zu",
			                    d->path, d->ndocs, n, n == 1 ? "" : "s", T + 1, B);
		}
		nwin = b->nrows;
	} else {
		if (d->ntokens < bt + 1)
			return lora_err_set(e, LORA_EINVAL,
			                    "%s: %zu tokens is fewer than one batch needs (batch %zu x sequence %zu + 1 = %zu)",
			                    d->path, d->ntokens, B, T, bt + 1);
		nwin = (d->ntokens - 1) / T;
	}
	b->nbatches = nwin / B;
	if (!(flags & LORA_DATA_SHUFFLE))
		return 0;
	if (!(b->order = malloc(nwin * sizeof *b->order))) {
		lora_data_batches_free(b);
		return lora_err_set(e, LORA_ENOMEM, "%s: out of memory", d->path);
	}
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
	free(b->rows);
	b->order = NULL;
	b->rows = NULL;
	b->nrows = 0;
}

lora_data_row lora_data_batches_row(const lora_data_batches *b, size_t k, size_t r)
{
	size_t i = k * b->B + r;
	if (b->order)
		i = b->order[i];
	if (b->rows)
		return b->rows[i];
	return (lora_data_row){i * b->T, b->T + 1};
}

size_t lora_data_batches_get(const lora_data_batches *b, size_t k, int32_t *inputs, int32_t *targets)
{
	const lora_data *d = b->d;
	size_t T = b->T, count = 0;
	for (size_t r = 0; r < b->B; r++) {
		lora_data_row row = lora_data_batches_row(b, k, r);
		int32_t *in = inputs + r * T, *tg = targets + r * T;
		if (!d->ndocs) {
			for (size_t t = 0; t < T; t++) {
				in[t] = (int32_t)lora_data_token(d, row.off + t);
				tg[t] = (int32_t)lora_data_token(d, row.off + t + 1);
			}
			count += T;
			continue;
		}
		size_t doc, end = next_end(d, row.off, &doc);
		for (size_t t = 0; t < T; t++) {
			size_t p = row.off + t;
			in[t] = t < row.len ? (int32_t)lora_data_token(d, p) : 0;
			tg[t] = -1;
			if (t + 1 >= row.len)
				continue;
			if (p + 1 == end) { /* the next document starts: not predicted from this one */
				end = lora_data_doc_end(d, ++doc);
				continue;
			}
			if (lora_data_target(d, p + 1)) {
				tg[t] = (int32_t)lora_data_token(d, p + 1);
				count++;
			}
		}
	}
	return count;
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

static void wr32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

int lora_data_writer_open(lora_data_writer *w, FILE *f, lora_data_format fmt, size_t elem, int masked)
{
	memset(w, 0, sizeof *w);
	w->f = f, w->fmt = fmt, w->masked = masked;
	w->elem = fmt == LORA_DATA_U16 ? 2 : fmt == LORA_DATA_U32 ? 4 : elem;
	if (fmt != LORA_DATA_TOK)
		return 0;
	unsigned char h[LORA_TOK_HEADER_BYTES] = {0};
	memcpy(h, LORA_TOK_MAGIC, 8);
	wr32(h + 8, 1);
	wr32(h + 12, (uint32_t)elem);
	wr32(h + 16, masked ? LORA_TOK_MASK : 0);
	return fwrite(h, 1, sizeof h, f) == sizeof h ? 0 : LORA_EIO;
}

int lora_data_writer_doc(lora_data_writer *w, const uint32_t *ids, const unsigned char *target, size_t n)
{
	if (!n)
		return 0;
	if (lora_data_write(w->f, (const int32_t *)ids, n, w->elem == 4 ? LORA_DATA_U32 : LORA_DATA_U16))
		return LORA_EIO;
	if (w->fmt != LORA_DATA_TOK) {
		w->n += n;
		return 0;
	}
	if (lora_shape_grow(&w->ends, &w->dcap, w->nd + 1, sizeof *w->ends))
		return LORA_ENOMEM;
	if (w->masked) {
		size_t had = w->mcap;
		if (lora_shape_grow(&w->mask, &w->mcap, (size_t)((w->n + n + 7) / 8), 1))
			return LORA_ENOMEM;
		memset(w->mask + had, 0, w->mcap - had);
		for (size_t i = 0; i < n; i++)
			if (!target || target[i]) {
				uint64_t k = w->n + i;
				w->mask[k / 8] |= (unsigned char)(1u << (k % 8));
			}
	}
	w->n += n;
	w->ends[w->nd++] = w->n;
	return 0;
}

void lora_data_writer_free(lora_data_writer *w)
{
	free(w->ends);
	free(w->mask);
	w->ends = NULL, w->mask = NULL;
}

int lora_data_writer_close(lora_data_writer *w)
{
	int rc = 0;
	if (w->fmt == LORA_DATA_TOK) {
		unsigned char b[4096], t[LORA_TOK_TRAILER_BYTES];
		for (size_t i = 0; i < w->nd && !rc;) {
			size_t m = 0;
			for (; i < w->nd && m + 8 <= sizeof b; i++, m += 8)
				wr64(b + m, w->ends[i]);
			if (fwrite(b, 1, m, w->f) != m)
				rc = LORA_EIO;
		}
		size_t mb = (size_t)((w->n + 7) / 8);
		if (!rc && w->masked && mb && fwrite(w->mask, 1, mb, w->f) != mb)
			rc = LORA_EIO;
		wr64(t, w->n);
		wr64(t + 8, w->nd);
		memcpy(t + 16, LORA_TOK_END, 8);
		if (!rc && fwrite(t, 1, sizeof t, w->f) != sizeof t)
			rc = LORA_EIO;
	}
	lora_data_writer_free(w);
	return rc;
}
