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
	DONE();
}
