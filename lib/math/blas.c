#include "math/blas_internal.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

static int nthreads; /* 0 until set: the first use sets the default */

/* Below this many multiply-adds a product is not worth waking the pool. */
#define SPLIT_MIN_MNK (1u << 18)

int lora_blas_set_threads(int n)
{
	if (n <= 0) {
		const char *s = getenv("OMP_NUM_THREADS");
		char *end;
		long v = s ? strtol(s, &end, 10) : 0;
		n = s && end != s && v > 0 && v < 4096 ? (int)v : omp_get_num_procs();
	}
	if (n < 1)
		n = 1;
	nthreads = n;
	omp_set_num_threads(n);
	/* OpenBLAS stays single-threaded: the pool splits the work instead. */
	openblas_set_num_threads(1);
	return n;
}

int lora_blas_threads(void) { return nthreads ? nthreads : lora_blas_set_threads(0); }

/* ---- shape trace ---- */

static volatile int tracing;
static lora_blas_shape *trace;
static size_t ntrace, captrace;

static void record(int ta, int tb, size_t M, size_t N, size_t K)
{
#pragma omp critical(lora_blas_trace)
	{
		if (ntrace == captrace) {
			size_t cap = captrace ? 2 * captrace : 256;
			lora_blas_shape *t = realloc(trace, cap * sizeof *t);
			if (t)
				trace = t, captrace = cap;
		}
		if (ntrace < captrace)
			trace[ntrace++] = (lora_blas_shape){ta, tb, M, N, K};
	}
}

void lora_blas_trace_begin(void)
{
	free(trace);
	trace = NULL;
	ntrace = captrace = 0;
	tracing = 1;
}

lora_blas_shape *lora_blas_trace_end(size_t *n)
{
	lora_blas_shape *t = trace;
	tracing = 0;
	*n = t ? ntrace : 0;
	trace = NULL;
	ntrace = captrace = 0;
	return t;
}

/* ---- products ---- */

static void gemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                 const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	if (M == 0 || N == 0)
		return;
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M,
	            (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void lora_blas_sgemm_serial(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                            size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	if (tracing)
		record(ta, tb, M, N, K);
	gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void lora_blas_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                     const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	if (tracing)
		record(ta, tb, M, N, K);
	int nt = lora_blas_threads();
	if (nt <= 1 || (double)M * (double)N * (double)K < SPLIT_MIN_MNK || omp_in_parallel()) {
		gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		return;
	}
	/* Split the longer side into one slice per thread, in multiples of 16
	 * so that every slice but the last runs the kernel at full width. */
	int by_rows = M >= N;
	size_t len = by_rows ? M : N, unit = 16;
	size_t per = (len + (size_t)nt - 1) / (size_t)nt;
	per = (per + unit - 1) / unit * unit;
	int parts = (int)((len + per - 1) / per);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
	for (int p = 0; p < parts; p++) {
		size_t lo = (size_t)p * per, n = len - lo < per ? len - lo : per;
		if (by_rows)
			gemm(ta, tb, n, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B, ldb, beta, C + lo * ldc, ldc);
		else
			gemm(ta, tb, M, n, K, alpha, A, lda, tb ? B + lo * ldb : B + lo, ldb, beta, C + lo, ldc);
	}
}

void lora_blas_sgemm_naive(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                           size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	for (size_t i = 0; i < M; i++)
		for (size_t j = 0; j < N; j++) {
			double s = 0;
			for (size_t k = 0; k < K; k++) {
				float a = ta ? A[k * lda + i] : A[i * lda + k];
				float b = tb ? B[j * ldb + k] : B[k * ldb + j];
				s += (double)a * b;
			}
			float *c = &C[i * ldc + j];
			*c = (float)(alpha * s + (beta != 0 ? (double)beta * *c : 0));
		}
}

void lora_blas_sgemm_openblas(int n, int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                              size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
	openblas_set_num_threads(n < 1 ? 1 : n);
	gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
	openblas_set_num_threads(1);
}
