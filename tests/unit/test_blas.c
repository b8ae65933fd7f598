/* Unit tests of math/blas: every oneDNN product against the naive twin
 * (double accumulation) over shapes, transposes, padded strides, alpha and
 * beta, including the odd ones (a side of 1, K = 1 or 0, sizes that are no
 * multiple of 16, a wide one done in column panels); products run at once
 * from a parallel region; more
 * shapes than the primitive cache holds; the OpenBLAS fallback and its
 * error. Run under DNNL_MAX_CPU_ISA=AVX2 too: then the kernels must be
 * AVX2 ones. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "math/blas_internal.h"

typedef struct {
	int ta, tb;
	size_t M, N, K, lda, ldb, ldc;
	float alpha, beta;
	float *A, *B, *C, *ref;
} prob;

static void fill(float *x, size_t n, lora_rng *r)
{
	for (size_t i = 0; i < n; i++)
		x[i] = 2 * lora_rng_uniform(r) - 1;
}

/* A problem with operands of random values; pad adds to every stride. C
 * holds NaNs when beta is 0: they must not be read. */
static prob make(int ta, int tb, size_t M, size_t N, size_t K, size_t pad, float alpha, float beta, lora_rng *r)
{
	prob p = {ta, tb, M, N, K, (ta ? M : K) + pad, (tb ? K : N) + pad, N + pad, alpha, beta, 0, 0, 0, 0};
	size_t na = (ta ? K : M) * p.lda + 1, nb = (tb ? N : K) * p.ldb + 1, nc = M * p.ldc + 1;
	p.A = malloc(na * 4), p.B = malloc(nb * 4), p.C = malloc(nc * 4), p.ref = malloc(nc * 4);
	fill(p.A, na, r);
	fill(p.B, nb, r);
	fill(p.C, nc, r);
	if (beta == 0)
		for (size_t i = 0; i < nc; i++)
			p.C[i] = NAN;
	memcpy(p.ref, p.C, nc * 4);
	lora_blas_sgemm_naive(ta, tb, M, N, K, alpha, p.A, p.lda, p.B, p.ldb, beta, p.ref, p.ldc);
	return p;
}

/* Worst error relative to 1 + |reference|; padding (between rows and after
 * the last) must be left as it was. */
static double worst(const prob *p)
{
	double w = 0;
	for (size_t i = 0; i < p->M * p->ldc + 1; i++) {
		int pad = i == p->M * p->ldc || i % p->ldc >= p->N;
		double d = pad ? (memcmp(&p->C[i], &p->ref[i], 4) ? 1 : 0)
		               : fabs((double)p->C[i] - p->ref[i]) / (1 + fabs(p->ref[i]));
		w = d > w || d != d ? d : w;
	}
	return w;
}

static void drop(prob *p) { free(p->A), free(p->B), free(p->C), free(p->ref); }

static void run(prob *p)
{
	lora_blas_sgemm(p->ta, p->tb, p->M, p->N, p->K, p->alpha, p->A, p->lda, p->B, p->ldb, p->beta, p->C, p->ldc);
}

static const size_t shapes[][3] = {
	{1, 1, 1},    {1, 37, 19},  {23, 1, 19},   {23, 37, 1},   {1, 1, 300},  {17, 33, 5},
	{16, 16, 16}, {31, 47, 63}, {64, 48, 128}, {100, 300, 50}, {257, 65, 33}, {64, 8, 0},
	{3, 5000, 7}, /* wide: split into column panels */
};

static void test_shapes(void)
{
	const float ab[][2] = {{1, 0}, {0.75f, 1}, {-2, 0.5f}};
	lora_rng r;
	lora_rng_seed(&r, 1);
	for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
		for (int t = 0; t < 4; t++)
			for (size_t pad = 0; pad < 4; pad += 3)
				for (size_t a = 0; a < sizeof ab / sizeof *ab; a++) {
					prob p = make(t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2], pad, ab[a][0], ab[a][1], &r);
					run(&p);
					double w = worst(&p);
					CHECK(w < 1e-5, "%zux%zux%zu ta %d tb %d pad %zu alpha %g beta %g: error %g", p.M, p.N, p.K, p.ta,
					      p.tb, pad, p.alpha, p.beta, w);
					drop(&p);
				}
	/* An empty product leaves C alone; alpha 0 only scales it. */
	float c[2] = {3, 4};
	lora_blas_sgemm(0, 0, 0, 2, 2, 1, c, 2, c, 2, 0, c, 2);
	CHECK(c[0] == 3 && c[1] == 4, "M = 0 wrote C");
	lora_blas_sgemm(0, 0, 1, 2, 1, 0, c, 1, c, 2, 0.5f, c, 2);
	CHECK(c[0] == 1.5f && c[1] == 2, "alpha 0: %g %g", c[0], c[1]);
	/* The trace sees every call, in the order made from one thread. */
	float x[4] = {1, 2, 3, 4}, y[4];
	lora_blas_trace_begin();
	lora_blas_sgemm(0, 0, 2, 2, 2, 1, x, 2, x, 2, 0, y, 2);
	lora_blas_sgemm(1, 1, 1, 2, 2, 1, x, 1, x, 2, 0, y, 2);
	size_t n;
	lora_blas_shape *t = lora_blas_trace_end(&n);
	CHECK(n == 2 && t && t[0].ta == 0 && t[1].ta == 1 && t[1].M == 1 && t[1].N == 2 && t[1].K == 2, "trace");
	free(t);
	/* The clock counts products at the top level only, not inside a
	 * parallel region even of one thread (attention's). */
	lora_blas_clock_begin();
#pragma omp parallel num_threads(1)
	lora_blas_sgemm(0, 0, 2, 2, 2, 1, x, 2, x, 2, 0, y, 2);
	double inside = lora_blas_clock_end();
	lora_blas_clock_begin();
	lora_blas_sgemm(0, 0, 2, 2, 2, 1, x, 2, x, 2, 0, y, 2);
	double top = lora_blas_clock_end();
	CHECK(inside == 0 && top > 0, "product clock: %g s inside a parallel region, %g s at the top", inside, top);
}

/* Many products at once, one per thread as attention issues them: some
 * sharing one shape (one primitive), some of their own. */
static void test_parallel(void)
{
	enum { NP = 16 };
	prob p[NP];
	lora_rng r;
	lora_rng_seed(&r, 2);
	for (int i = 0; i < NP; i++)
		p[i] = i % 2 ? make(0, 1, 64, 40, 32, 1, 0.125f, 0, &r) : make(1, 0, 20 + i, 33, 17, 0, 1, 1, &r);
	int nt = lora_blas_threads();
	lora_blas_set_threads(4);
#pragma omp parallel for schedule(dynamic, 1)
	for (int i = 0; i < NP; i++)
		run(&p[i]);
	for (int i = 0; i < NP; i++) {
		CHECK(worst(&p[i]) < 1e-5, "parallel product %d: error %g", i, worst(&p[i]));
		drop(&p[i]);
	}
	/* The same shape at another thread count. */
	lora_blas_set_threads(1);
	prob q = make(0, 1, 64, 40, 32, 1, 0.125f, 0, &r);
	run(&q);
	CHECK(worst(&q) < 1e-5, "one thread: error %g", worst(&q));
	drop(&q);
	lora_blas_set_threads(nt);
}

/* More shapes than the cache holds (decoding adds one per context
 * length), then the first ones again. */
static void test_eviction(void)
{
	lora_rng r;
	lora_rng_seed(&r, 3);
	int bad = 0;
	for (int round = 0; round < 2; round++)
		for (size_t n = 1; n <= 300; n += round ? 37 : 1) {
			prob p = make(0, 1, 1, n, 24, 0, 0.5f, 0, &r);
			run(&p);
			bad += worst(&p) >= 1e-5;
			drop(&p);
		}
	CHECK(bad == 0, "%d products wrong across evictions", bad);
}

static void test_fallback(void)
{
	lora_err e = {0};
	lora_rng r;
	lora_rng_seed(&r, 4);
	CHECK(lora_blas_error(&e) == 0, "an error before any failure: %s", e.msg);
	prob p = make(1, 1, 5, 7, 3, 2, 1.5f, 0.5f, &r);
	lora_blas_fail_next();
	run(&p);
	CHECK(worst(&p) < 1e-5, "fallback product: error %g", worst(&p));
	CHECK(lora_blas_error(&e) == LORA_EINVAL && !strcmp(e.msg, "matrix product 5x7x3: oneDNN primitive creation failed (status 3)"),
	      "fallback error: %d %s", e.code, e.msg);
	CHECK(lora_blas_error(&e) == 0, "error not cleared");
	drop(&p);
}

/* op(B) stored in dtype bt at a byte offset (misaligned when odd), A in
 * f32 or bf16: the product must equal the f32 product of the values the
 * operands hold (B rounded to A's type first: bf16 products convert it).
 * Sizes make B span several conversion panels (2^21 elements each). */
static void test_mixed(void)
{
	static const size_t sh[][3] = {{3, 1100, 2000}, {9, 2000, 1100}, {1, 5, 3}, {5, 1000, 1}};
	static const lora_dtype bts[] = {LORA_F32, LORA_F16, LORA_BF16};
	int bf16 = lora_blas_bf16();
	lora_rng r;
	lora_rng_seed(&r, 5);
	for (size_t s = 0; s < sizeof sh / sizeof *sh; s++)
		for (int t = 0; t < 4; t++)
			for (int at = 0; at < 2; at++)
				for (size_t b = 0; b < 3; b++)
					for (size_t off = 0; off < 2; off++) {
						lora_dtype adt = at ? LORA_BF16 : LORA_F32, bdt = bts[b];
						prob p = make(t & 1, t >> 1, sh[s][0], sh[s][1], sh[s][2], 1, 0.5f, t == 3 ? 0.25f : 0, &r);
						size_t na = (p.ta ? p.K : p.M) * p.lda, nb = (p.tb ? p.N : p.K) * p.ldb;
						size_t eb = lora_dtype_size(bdt);
						unsigned char *A = malloc(na * 4), *B = malloc(nb * eb + 1);
						/* operands hold representable values; the reference
						 * sees what the product must see */
						lora_dtype_from_f32(A, p.A, adt, na);
						lora_dtype_to_f32(p.A, A, adt, na);
						lora_dtype_from_f32(B + off, p.B, bdt, nb);
						lora_dtype_to_f32(p.B, B + off, bdt, nb);
						if (at)
							for (size_t i = 0; i < nb; i++)
								p.B[i] = lora_dtype_bf16_to_f32(lora_dtype_f32_to_bf16(p.B[i]));
						memcpy(p.ref, p.C, (p.M * p.ldc + 1) * 4);
						lora_blas_sgemm_naive(p.ta, p.tb, p.M, p.N, p.K, p.alpha, p.A, p.lda, p.B, p.ldb, p.beta,
						                      p.ref, p.ldc);
						lora_blas_gemm(p.ta, p.tb, p.M, p.N, p.K, p.alpha, A, adt, p.lda, B + off, bdt, p.ldb, p.beta,
						               p.C, p.ldc);
						double w = worst(&p);
						CHECK(w < 3e-5, "%zux%zux%zu ta %d tb %d A %s B %s at offset %zu: error %g", p.M, p.N, p.K,
						      p.ta, p.tb, lora_dtype_name(adt), lora_dtype_name(bdt), off, w);
						lora_err e = {0};
						int rc = lora_blas_error(&e);
						CHECK(rc == 0 || (at && bf16 == LORA_BLAS_BF16_NONE), "product failed: %s", e.msg);
						CHECK(rc != 0 || !at || bf16 != LORA_BLAS_BF16_NONE,
						      "bf16 product without bf16 in oneDNN reported no failure");
						free(A), free(B);
						drop(&p);
					}
	const char *cap = getenv("DNNL_MAX_CPU_ISA");
	if (cap && !strcmp(cap, "AVX2"))
		CHECK(bf16 == LORA_BLAS_BF16_NONE, "bf16 under AVX2: %d", bf16);
}

int main(void)
{
	const char *cap = getenv("DNNL_MAX_CPU_ISA");
	if (cap && !strcmp(cap, "AVX2"))
		CHECK(!strcmp(lora_blas_isa(), "avx2"), "DNNL_MAX_CPU_ISA=AVX2 but kernels use %s", lora_blas_isa());
	test_shapes();
	test_parallel();
	test_eviction();
	test_fallback();
	test_mixed();
	lora_err e;
	CHECK(lora_blas_error(&e) == 0, "a product failed in oneDNN: %s", e.msg);
	DONE();
}
