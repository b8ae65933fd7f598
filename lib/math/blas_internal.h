/* blas_internal: test and benchmark hooks of math/blas, kept out of its
 * public contract: the naive twin the tests compare products with, the
 * OpenBLAS ceiling the benchmarks measure against, and a shape trace. */
#ifndef LORA_BLAS_INTERNAL_H
#define LORA_BLAS_INTERNAL_H

#include "math/blas.h"

/* Naive twin for the tests: triple loop, double accumulation. */
void lora_blas_sgemm_naive(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                      size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* For benchmarks: one product by OpenBLAS with its own threading at n
 * threads, the path products took before oneDNN (the baseline the
 * benchmarks print ratios against). Restores the pool's count after. */
void lora_blas_sgemm_openblas(int nthreads, int ta, int tb, size_t M, size_t N, size_t K, float alpha,
                         const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                         size_t ldc);

/* Make the next product's oneDNN call fail as if it had no
 * implementation, to test the OpenBLAS fallback and lora_blas_error. */
void lora_blas_fail_next(void);


/* Shape trace, for benchmarks: while on, every lora_blas_sgemm
 * call is recorded (thread-safe). */
typedef struct {
	int ta, tb;
	size_t M, N, K;
	lora_dtype dt; /* of the operands: LORA_F32 or LORA_BF16 (lora_blas_gemm's A) */
} lora_blas_shape;
/* Start recording (discarding any earlier record). */
void lora_blas_trace_begin(void);
/* Stop; *n receives the count. The array (caller frees) lists the calls
 * in an unspecified order; NULL when there were none or memory ran out. */
lora_blas_shape *lora_blas_trace_end(size_t *n);

/* Product clock, for benchmarks: while on, the wall-clock seconds of every
 * lora_blas_sgemm called outside any parallel region (even a team of one)
 * are summed; products issued inside one, as attention's, count as the
 * caller's time. Start from zero; stop and return the sum. */
void lora_blas_clock_begin(void);
double lora_blas_clock_end(void);

#endif
