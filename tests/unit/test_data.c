/* Batch cutting of lib/io/data.c against an expectation written here from
 * data.h alone: exact inputs and targets of every batch of tiny token files
 * whose lengths sit on and beside multiples of B x T, the shuffled order
 * against an independent Fisher-Yates over lib/rng, and that order's
 * statistics (a shuffle that only makes cycles never leaves a window in
 * place). Usage: test_data DIR (a scratch directory). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "io/data.h"

/* Token i of every file: distinct neighbours, so a shift by one shows. */
static uint16_t tok(size_t i) { return (uint16_t)((i * 7 + 3) % 251); }

static lora_data *make(const char *dir, size_t n)
{
	char path[600];
	snprintf(path, sizeof path, "%s/n%zu.u16", dir, n);
	FILE *f = fopen(path, "wb");
	for (size_t i = 0; i < n; i++) {
		uint16_t t = tok(i);
		unsigned char b[2] = {(unsigned char)(t & 255), (unsigned char)(t >> 8)};
		fwrite(b, 1, 2, f);
	}
	fclose(f);
	lora_data *d = NULL;
	lora_err e;
	if (lora_data_open(&d, path, LORA_DATA_AUTO, 256, &e))
		printf("FAIL open %s: %s\n", path, e.msg);
	return d;
}

/* The documented order: windows 0..w-1, then for i = w-1 down to 1 swap
 * i with j = x mod (i+1), x the first lora_rng_u64 draw below the largest
 * multiple of i+1 that fits in 64 bits (rejection, so j is uniform). */
static void fisher_yates(size_t *p, size_t w, uint64_t seed)
{
	lora_rng r;
	lora_rng_seed(&r, seed);
	for (size_t i = 0; i < w; i++)
		p[i] = i;
	for (size_t i = w; i-- > 1;) {
		uint64_t n = i + 1, x;
		do
			x = lora_rng_u64(&r);
		while (x >= UINT64_MAX - UINT64_MAX % n);
		size_t j = (size_t)(x % n), t = p[i];
		p[i] = p[j], p[j] = t;
	}
}

/* Every batch of d cut B x T, in order or shuffled with seed, against the
 * expectation; the batch count must be nb. */
static void check_batches(const lora_data *d, size_t B, size_t T, int shuffle, uint64_t seed, size_t nb)
{
	lora_data_batches b;
	lora_err e;
	size_t n = d->ntokens;
	int rc = lora_data_batches_init(&b, d, B, T, shuffle, seed, &e);
	CHECK(rc == 0, "n %zu B %zu T %zu: %s", n, B, T, e.msg);
	if (rc)
		return;
	CHECK(b.nbatches == nb, "n %zu B %zu T %zu shuffle %d: %zu batches, want %zu", n, B, T, shuffle, b.nbatches, nb);
	size_t w = (n - 1) / T, *order = malloc(w * sizeof *order);
	fisher_yates(order, w, seed);
	int32_t *in = malloc(B * T * sizeof *in), *tg = malloc(B * T * sizeof *tg);
	for (size_t k = 0; k < b.nbatches && k < nb; k++) {
		lora_data_batches_get(&b, k, in, tg);
		int ok = 1;
		for (size_t r = 0; r < B; r++) {
			/* row r of batch k starts at token s */
			size_t s = shuffle ? order[k * B + r] * T : (k * B + r) * T;
			ok &= lora_data_batches_row(&b, k, r).off == s;
			for (size_t t = 0; t < T; t++)
				ok &= in[r * T + t] == tok(s + t) && tg[r * T + t] == tok(s + t + 1);
		}
		CHECK(ok, "n %zu B %zu T %zu shuffle %d seed %llu: batch %zu", n, B, T, shuffle, (unsigned long long)seed, k);
	}
	free(order), free(in), free(tg);
	lora_data_batches_free(&b);
}

static void test_lengths(const char *dir)
{
	const size_t B = 2, T = 3; /* B x T = 6 */
	struct {
		size_t n, plain, shuffled; /* tokens; batches in order; shuffled batches */
	} c[] = {
		{7, 1, 1},   /* B*T + 1: exactly one batch, 2 windows */
		{12, 1, 1},  /* 2*B*T: the last token has no target, so 11/6 = 1; 3 windows */
		{13, 2, 2},  /* 2*B*T + 1: two batches using every token; 4 windows */
		{14, 2, 2},  /* 2*B*T + 2: one token left over */
		{19, 3, 3},  /* 3*B*T + 1 */
		{18, 2, 2},  /* 3*B*T: 17/6 = 2; 5 windows, 2 batches */
		{20, 3, 3},  /* 3*B*T + 2 */
		{25, 4, 4},  /* 4*B*T + 1 */
	};
	for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
		lora_data *d = make(dir, c[i].n);
		if (!d)
			continue;
		check_batches(d, B, T, 0, 0, c[i].plain);
		for (uint64_t seed = 0; seed < 4; seed++)
			check_batches(d, B, T, 1, seed, c[i].shuffled);
		lora_data_close(d);
	}
	/* B*T tokens are one short of a batch. */
	lora_data *d = make(dir, 6);
	lora_data_batches b;
	lora_err e;
	if (d) {
		CHECK(lora_data_batches_init(&b, d, B, T, 0, 0, &e) == LORA_EINVAL &&
		          strstr(e.msg, ": 6 tokens is fewer than one batch needs (batch 2 x sequence 3 + 1 = 7)"),
		      "B*T tokens: %s", e.msg);
		CHECK(lora_data_batches_init(&b, d, B, T, 1, 5, &e) == LORA_EINVAL, "B*T tokens, shuffled");
		lora_data_close(d);
	}
	/* Rows of one token and one row per batch. */
	d = make(dir, 10);
	if (d) {
		check_batches(d, 1, 1, 0, 0, 9);
		check_batches(d, 3, 1, 1, 7, 3);
		check_batches(d, 1, 9, 0, 0, 1);
		lora_data_close(d);
	}
}

/* The vocabulary bound is exclusive: with vocab V, token V - 1 is the
 * largest allowed, in every token width. */
static void test_vocab(const char *dir)
{
	lora_data *d = make(dir, 40); /* tokens (7i + 3) mod 251: largest 248, at position 35 */
	char path[600];
	lora_err e;
	if (!d)
		return;
	snprintf(path, sizeof path, "%s", d->path);
	lora_data_close(d);
	CHECK(lora_data_open(&d, path, LORA_DATA_AUTO, 249, &e) == 0, "vocab 249 holds token 248: %s", e.msg);
	lora_data_close(d);
	CHECK(lora_data_open(&d, path, LORA_DATA_AUTO, 248, &e) == LORA_EINVAL &&
	          strstr(e.msg, ": token 248 at position 35 is >= vocab_size 248"),
	      "token 248 with vocab 248: %s", e.msg);
	/* as bytes: 3, 0, 10, 0, 17, 0, ... */
	CHECK(lora_data_open(&d, path, LORA_DATA_BYTES, 10, &e) == LORA_EINVAL &&
	          strstr(e.msg, ": token 10 at position 2 is >= vocab_size 10"),
	      "byte 10 with vocab 10: %s", e.msg);
	CHECK(lora_data_open(&d, path, LORA_DATA_BYTES, 11, &e) == LORA_EINVAL &&
	          strstr(e.msg, ": token 17 at position 4 is >= vocab_size 11"),
	      "byte 17 with vocab 11: %s", e.msg);
}

/* Over many seeds, the order of 4 windows is each of the 24 permutations
 * about as often, and window i stays in place a quarter of the time. A
 * shuffle that can only draw cycles (Sattolo's) never leaves one in place
 * and reaches 6 permutations. */
static void test_uniform(const char *dir)
{
	enum { RUNS = 4800 };
	lora_data *d = make(dir, 13); /* 4 windows of T = 3 */
	if (!d)
		return;
	long count[24] = {0}, fixed = 0;
	for (uint64_t seed = 0; seed < RUNS; seed++) {
		lora_data_batches b;
		lora_err e;
		if (lora_data_batches_init(&b, d, 1, 3, 1, seed * 0x9e3779b97f4a7c15ull, &e) != 0) {
			CHECK(0, "init: %s", e.msg);
			break;
		}
		/* Lehmer code of the permutation */
		size_t code = 0, *p = b.order;
		for (size_t i = 0; i < 4; i++) {
			size_t smaller = 0;
			for (size_t j = i + 1; j < 4; j++)
				smaller += p[j] < p[i];
			code = code * (4 - i) + smaller;
			fixed += p[i] == i;
		}
		count[code]++;
		lora_data_batches_free(&b);
	}
	double chi2 = 0, want = RUNS / 24.0;
	for (int i = 0; i < 24; i++)
		chi2 += (count[i] - want) * (count[i] - want) / want;
	/* 23 degrees of freedom: P(chi2 > 60) < 1e-4; the seeds are fixed, so
	 * the value is too. A Sattolo shuffle gives chi2 = 3 * RUNS. */
	CHECK(chi2 < 60, "window orders are not uniform: chi2 %.1f over 24 orders", chi2);
	/* Expected RUNS fixed points in all (4 windows x 1/4); sd ~ sqrt(RUNS). */
	CHECK(fabs((double)fixed - RUNS) < 5 * sqrt((double)RUNS), "%ld windows left in place, want about %d", fixed,
	      RUNS);
	lora_data_close(d);
}

/* The identity checkpoints and provenance record: FNV-1a 64 of "foobar" is
 * 0x85944171f73967e8 (the published test vector). */
static void test_id(const char *dir)
{
	char path[600];
	snprintf(path, sizeof path, "%s/six.bytes", dir);
	FILE *f = fopen(path, "wb");
	fputs("foobar", f);
	fclose(f);
	lora_data *d = NULL;
	lora_err e;
	CHECK(lora_data_open(&d, path, LORA_DATA_BYTES, 256, &e) == 0, "open: %s", e.msg);
	char *id = d ? lora_data_id(d) : NULL;
	CHECK(id && strcmp(id, "six.bytes:6:85944171f73967e8") == 0, "id %s", id);
	free(id);
	lora_data_close(d);
}

/* ---- tok files (lora-data(5)), built here byte by byte ---- */

static void put(unsigned char **p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		*(*p)++ = (unsigned char)(v >> (8 * i));
}

/* A tok file of u16 tokens 10+i, documents of the given lengths, mask bit
 * i = masked[i] (or no mask); fields overridable to make bad files. */
typedef struct {
	uint32_t version, elem, flags, reserved;
	int64_t ntok, ndoc; /* -1: the real counts */
	int bad_end;        /* a wrong end magic */
	int pad_bit;        /* a mask bit past the last token */
	int swap_ends;      /* the first two document ends exchanged */
} tokopt;

static size_t build(unsigned char *buf, const size_t *lens, size_t nd, const int *mask, tokopt o)
{
	unsigned char *p = buf;
	size_t n = 0;
	for (size_t i = 0; i < nd; i++)
		n += lens[i];
	memcpy(p, "LORATOK\n", 8), p += 8;
	put(&p, o.version, 4), put(&p, o.elem, 4), put(&p, o.flags, 4), put(&p, o.reserved, 4);
	for (size_t i = 0; i < n; i++)
		put(&p, 10 + i, (int)o.elem);
	uint64_t ends[16], end = 0;
	for (size_t i = 0; i < nd; i++)
		ends[i] = end += lens[i];
	if (o.swap_ends) {
		uint64_t t = ends[0];
		ends[0] = ends[1], ends[1] = t;
	}
	for (size_t i = 0; i < nd; i++)
		put(&p, ends[i], 8);
	if (o.flags & 1) {
		memset(p, 0, (n + 7) / 8);
		for (size_t i = 0; i < n; i++)
			if (mask[i])
				p[i / 8] |= (unsigned char)(1 << (i % 8));
		if (o.pad_bit)
			p[n / 8] |= 0x80;
		p += (n + 7) / 8;
	}
	put(&p, o.ntok < 0 ? n : (uint64_t)o.ntok, 8);
	put(&p, o.ndoc < 0 ? nd : (uint64_t)o.ndoc, 8);
	memcpy(p, o.bad_end ? "LORAEND!" : "LORAEND\n", 8), p += 8;
	return (size_t)(p - buf);
}

static const tokopt good = {1, 2, 1, 0, -1, -1, 0, 0, 0};

static int open_bytes(lora_data **d, const unsigned char *b, size_t n, lora_err *e)
{
	void *copy = malloc(n);
	memcpy(copy, b, n);
	return lora_data_from_memory(d, "t.tok", copy, n, LORA_DATA_AUTO, 1000, e);
}

static void test_tok_reader(void)
{
	static const size_t lens[] = {2, 2, 6, 1, 3};
	static const int mask[14] = {1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1};
	unsigned char buf[512];
	lora_data *d;
	lora_err e;
	size_t n = build(buf, lens, 5, mask, good);
	CHECK(n == 24 + 28 + 40 + 2 + 24, "tok size %zu", n);
	CHECK(open_bytes(&d, buf, n, &e) == 0, "tok open: %s", e.msg);
	if (!d)
		return;
	CHECK(d->format == LORA_DATA_TOK && d->ntokens == 14 && d->ndocs == 5 && d->elem == 2, "tok counts");
	CHECK(lora_data_token(d, 13) == 23 && lora_data_doc_end(d, 2) == 10, "tok token and end");
	int ok = 1;
	for (size_t i = 0; i < 14; i++)
		ok &= lora_data_target(d, i) == mask[i];
	CHECK(ok, "tok mask bits");
	lora_data_close(d);
	struct {
		tokopt o;
		const char *msg;
	} bad[] = {
		{{2, 2, 1, 0, -1, -1, 0, 0, 0}, "t.tok: tok file version is not 1"},
		{{1, 3, 1, 0, -1, -1, 0, 0, 0}, "t.tok: tok file tokens are neither 2 nor 4 bytes"},
		{{1, 2, 3, 0, -1, -1, 0, 0, 0}, "t.tok: unknown flags or reserved bits set in the tok header"},
		{{1, 2, 1, 7, -1, -1, 0, 0, 0}, "t.tok: unknown flags or reserved bits set in the tok header"},
		{{1, 2, 1, 0, 15, -1, 0, 0, 0}, "t.tok: tok trailer's token and document counts do not fit the file's size"},
		{{1, 2, 1, 0, -1, 6, 0, 0, 0}, "t.tok: tok trailer's token and document counts do not fit the file's size"},
		{{1, 2, 1, 0, -1, (int64_t)1 << 61, 0, 0, 0},
		 "t.tok: tok trailer's token and document counts do not fit the file's size"},
		{{1, 2, 1, 0, -1, -1, 1, 0, 0}, "t.tok: tok trailer is missing or damaged (bad end magic)"},
		{{1, 2, 1, 0, -1, -1, 0, 1, 0}, "t.tok: loss mask has bits set past the last token"},
		{{1, 2, 1, 0, -1, -1, 0, 0, 1}, "t.tok: document 1 ends at token 2, not within (4, 14]"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		n = build(buf, lens, 5, mask, bad[i].o);
		int rc = open_bytes(&d, buf, n, &e);
		CHECK(rc == LORA_EFORMAT && d == NULL && !strcmp(e.msg, bad[i].msg), "bad tok %zu: %d %s", i, rc, e.msg);
	}
	/* the last end short of the token count; a file cut anywhere */
	static const size_t short_lens[] = {2, 2};
	n = build(buf, short_lens, 2, mask, (tokopt){1, 2, 0, 0, 5, -1, 0, 0, 0});
	CHECK(open_bytes(&d, buf, n, &e) == LORA_EFORMAT, "counts and size");
	n = build(buf, lens, 5, mask, good);
	for (size_t cut = 0; cut < n; cut++)
		if (open_bytes(&d, buf, cut, &e) != LORA_EFORMAT) {
			CHECK(0, "cut at %zu accepted", cut);
			lora_data_close(d);
			break;
		}
}

/* The writer gives build()'s bytes. */
static void test_tok_writer(const char *dir)
{
	static const size_t lens[] = {2, 2, 6, 1, 3};
	static const int mask[14] = {1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1};
	unsigned char want[512], got[512];
	size_t n = build(want, lens, 5, mask, good), off = 0;
	char path[600];
	snprintf(path, sizeof path, "%s/w.tok", dir);
	FILE *f = fopen(path, "wb");
	lora_data_writer w;
	int rc = lora_data_writer_open(&w, f, LORA_DATA_TOK, 2, 1);
	for (size_t i = 0; i < 5 && !rc; i++) {
		uint32_t ids[8];
		unsigned char tg[8];
		for (size_t k = 0; k < lens[i]; k++)
			ids[k] = (uint32_t)(10 + off + k), tg[k] = (unsigned char)mask[off + k];
		rc = lora_data_writer_doc(&w, ids, tg, lens[i]);
		off += lens[i];
	}
	rc |= lora_data_writer_close(&w);
	fclose(f);
	f = fopen(path, "rb");
	size_t m = fread(got, 1, sizeof got, f);
	fclose(f);
	CHECK(rc == 0 && m == n && !memcmp(got, want, n), "writer: %zu bytes, want %zu", m, n);
}

/* Rows of the tok file above, T = 4, packed and not (data.h's rules,
 * worked by hand), and every input and target against a direct reading of
 * the rules: a target has loss when its mask bit is set and it is in the
 * document of the token before it; padding is input 0, no loss. */
static void test_tok_rows(void)
{
	static const size_t lens[] = {2, 2, 6, 1, 3};
	static const int doc_of[14] = {0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 3, 4, 4, 4};
	static const int mask[14] = {1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1};
	unsigned char buf[512];
	lora_data *d;
	lora_err e;
	open_bytes(&d, buf, build(buf, lens, 5, mask, good), &e);
	/* packed: docs 0+1 (4 tokens), doc 2 as windows of 5 every 4, docs 3+4;
	 * unpacked: doc 1 has no target with loss, doc 3 no target at all */
	static const lora_data_row packed[] = {{0, 4}, {4, 5}, {8, 2}, {10, 4}}, unpacked[] = {{0, 2}, {4, 5}, {11, 3}};
	for (int pk = 0; pk < 2; pk++) {
		const lora_data_row *want = pk ? packed : unpacked;
		size_t nw = pk ? 4 : 3, T = 4;
		lora_data_batches b;
		int rc = lora_data_batches_init(&b, d, 1, T, pk ? 0 : LORA_DATA_UNPACKED, 0, &e);
		CHECK(rc == 0 && b.nbatches == nw, "packed %d: %zu rows: %s", pk, b.nbatches, e.msg);
		for (size_t k = 0; k < b.nbatches && k < nw; k++) {
			lora_data_row r = lora_data_batches_row(&b, k, 0);
			CHECK(r.off == want[k].off && r.len == want[k].len, "packed %d row %zu: (%zu, %zu)", pk, k, r.off, r.len);
			int32_t in[4], tg[4];
			size_t cnt = lora_data_batches_get(&b, k, in, tg), c = 0;
			for (size_t t = 0; t < T; t++) {
				size_t p = r.off + t;
				int32_t wi = t < r.len ? (int32_t)(10 + p) : 0, wt = -1;
				if (t + 1 < r.len && doc_of[p] == doc_of[p + 1] && mask[p + 1])
					wt = (int32_t)(10 + p + 1), c++;
				CHECK(in[t] == wi && tg[t] == wt, "packed %d row %zu pos %zu: %d %d, want %d %d", pk, k, t, in[t],
				      tg[t], wi, wt);
			}
			CHECK(cnt == c, "packed %d row %zu: count %zu, want %zu", pk, k, cnt, c);
		}
		lora_data_batches_free(&b);
	}
	lora_data_batches b;
	CHECK(lora_data_batches_init(&b, d, 4, 4, LORA_DATA_UNPACKED, 0, &e) == LORA_EINVAL &&
	          !strcmp(e.msg, "t.tok: 5 documents make 3 rows of 5 tokens with loss, fewer than a batch of 4"),
	      "too few rows: %s", e.msg);
	lora_data_close(d);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: test_data DIR\n");
		return 2;
	}
	test_lengths(argv[1]);
	test_vocab(argv[1]);
	test_uniform(argv[1]);
	test_id(argv[1]);
	test_tok_reader();
	test_tok_writer(argv[1]);
	test_tok_rows();
	DONE();
}
