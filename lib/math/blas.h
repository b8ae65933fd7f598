/* blas: every f32 matrix product of the model and the tools, and the one
 * thread setting.
 *
 * Products run in oneDNN's matmul primitive, created once per (shape,
 * transposes, strides, alpha, beta) and kept in a small cache; transposed
 * operands are described by their strides, never copied. oneDNN picks its
 * kernels for the CPU at run time (DNNL_MAX_CPU_ISA caps them). One pool
 * of threads does everything: the OpenMP pool, which oneDNN shares (Debian
 * builds it on libgomp). A product issued inside a parallel region
 * (attention, one per head) runs on the calling thread.
 *
 * Matrices are row-major f32. op(X) is X or X^T as ta/tb say. */
#ifndef LORA_BLAS_H
#define LORA_BLAS_H

#include <stddef.h>

#include "core/dtype.h"
#include "core/err.h"

/* Use n threads (n <= 0: OMP_NUM_THREADS if set, else every core) for
 * OpenMP kernels, oneDNN's products and OpenBLAS's factorisations alike.
 * Returns the count in effect. */
int lora_blas_set_threads(int n);
/* Call first thing in main: under an address-space limit, the process
 * will end without waiting for OpenBLAS's threads (see blas.c); registered
 * after the C library's exit handlers, it runs before them, and after
 * those registered later. */
void lora_blas_guard_exit(void);
/* Most threads a tool may be asked for (-j). */
#define LORA_BLAS_MAX_THREADS 1024
/* Start n - 1 threads beside the caller, as the pool will, and stop them
 * again: 0 when all started; otherwise LORA_ENOMEM and "cannot start N
 * threads (K started): why", so that a memory or process limit gets one
 * line before the OpenMP runtime, which aborts, meets it. */
int lora_blas_try_threads(int n, lora_err *e);
/* Threads in effect; the first call without an earlier
 * lora_blas_set_threads sets the default. */
int lora_blas_threads(void);

/* C (M x N) = alpha * op(A) op(B) + beta * C, op(A) M x K, op(B) K x N,
 * lda/ldb/ldc the row strides; C is not read when beta is 0. Every size
 * must be below 2^31. Safe to call from several threads at once. Should
 * oneDNN fail (no memory, no implementation), the product is computed by
 * OpenBLAS instead and the failure kept for lora_blas_error (every tool
 * prints it as a warning when it exits). */
void lora_blas_sgemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                     const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* The same product with A of type adt (LORA_F32 or LORA_BF16) and B of
 * any float type (F32, F16, BF16; any alignment), C f32, accumulated in
 * f32. When B's type is A's, oneDNN reads B where it lies; otherwise B is
 * converted to A's type a panel of rows at a time (a bounded buffer, no
 * copy of B). f16 and bf16 widen to f32 exactly, so with A in f32 the
 * result is the f32 product of B's values. With A in bf16 the product
 * needs lora_blas_bf16(); should it fail, both operands are widened to
 * f32 (exact) and the failure kept for lora_blas_error. */
void lora_blas_gemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const void *A, lora_dtype adt,
                    size_t lda, const void *B, lora_dtype bdt, size_t ldb, float beta, float *C, size_t ldc);

enum { LORA_BLAS_BF16_NONE, LORA_BLAS_BF16_EMULATED, LORA_BLAS_BF16_NATIVE };
/* Whether oneDNN multiplies bf16 on this CPU (under DNNL_MAX_CPU_ISA):
 * NATIVE with AVX512-BF16 or AMX instructions, EMULATED on plain AVX-512
 * (slower than f32), NONE below (AVX2). */
int lora_blas_bf16(void);

/* The instruction set oneDNN's kernels use on this CPU under the
 * DNNL_MAX_CPU_ISA cap: "avx2", "avx512_core_amx", ... */
const char *lora_blas_isa(void);

/* The first oneDNN failure since the last call (products fell back to
 * OpenBLAS): returns its LORA_E* code and fills e, or 0. Clears it. */
int lora_blas_error(lora_err *e);
#endif
