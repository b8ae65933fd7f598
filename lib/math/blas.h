/* blas: the model's matrix products and the one thread setting.
 *
 * One pool of threads does everything: the OpenMP pool. OpenBLAS is kept
 * single-threaded and each product is split across the pool by rows or
 * columns, so OpenBLAS's own worker threads never spin on cores that
 * OpenMP kernels are using, and products issued from inside a parallel
 * region (attention, one per head) run on the calling thread.
 *
 * Matrices are row-major f32. op(X) is X or X^T as ta/tb say. */
#ifndef LORA_BLAS_H
#define LORA_BLAS_H

#include <stddef.h>

/* Use n threads (n <= 0: OMP_NUM_THREADS if set, else every core) for
 * OpenMP kernels and matrix products alike. Returns the count in effect. */
int lora_blas_set_threads(int n);
/* Threads in effect; the first call without an earlier
 * lora_blas_set_threads sets the default. */
int lora_blas_threads(void);

/* C (M x N) = alpha * op(A) op(B) + beta * C, op(A) M x K, op(B) K x N,
 * lda/ldb/ldc the row strides. Split across the thread pool; call it from
 * serial code only. Every size must be below 2^31. */
void lora_blas_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                     const float *B, size_t ldb, float beta, float *C, size_t ldc);
/* Same on the calling thread only: for use inside a parallel region. */
void lora_blas_sgemm_serial(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                            size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc);
#endif
