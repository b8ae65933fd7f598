/* linalg: factorisations (OpenBLAS's LAPACKE) and compact products.
 *
 * Every matrix is dense, row-major and compact (leading dimension = number
 * of columns). Dimensions must fit in an int (BLAS/LAPACK's index type);
 * functions that return int check it and fail with LORA_EINVAL otherwise.
 * f32 data is what adapters and checkpoints hold; the small factorisations
 * and every reported number are computed in double. */
#ifndef LORA_LINALG_H
#define LORA_LINALG_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Threads: lora_blas_set_threads, the one setting for everything. */

/* ---- products ---- */

/* C (m x n) = alpha * op(X) op(Y) + beta * C, where op(X) is m x k and
 * op(Y) is k x n; tX / tY nonzero means the stored matrix is the transpose
 * (X stored k x m, Y stored n x k). Dimensions must fit in an int.
 * sgemm is lora_blas_sgemm (oneDNN) on compact matrices; dgemm is
 * OpenBLAS's, oneDNN having no f64 product on the CPU. */
void lora_linalg_sgemm(int tX, int tY, size_t m, size_t n, size_t k, float alpha, const float *X,
                       const float *Y, float beta, float *C);
void lora_linalg_dgemm(int tX, int tY, size_t m, size_t n, size_t k, double alpha,
                       const double *X, const double *Y, double beta, double *C);

/* ---- singular values of a low-rank product ---- */

/* Singular values of the product B A, where B is (m x r) and A is (r x n),
 * both row-major, without forming the m x n matrix: QR of B and of A^T,
 * then the SVD of the small product of their R factors, in double
 * precision. Writes min(m, n, r) values in descending order to sv. */
int lora_linalg_lowrank_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                              lora_err *e);

/* Thin SVD of B A (B m x r, A r x n) without forming it, in O((m + n) r^2):
 * B = Qb Rb, A^T = Qa Ra (Householder QR), SVD of Rb Ra^T = Um S Vm^T, then
 * B A = (Qb Um) S (Qa Vm)^T. All in double. Writes k = min(m, n, r) triplets:
 * U (m x k), S (k, descending), Vt (k x n); U and Vt may be NULL when only
 * one side is wanted. B or A may be NULL to mean the r x r identity (then
 * m = r, resp. n = r): the SVD of A alone, resp. of B alone. */
int lora_linalg_lowrank_svd(double *U, double *S, double *Vt, const float *B, const float *A, size_t m,
                            size_t r, size_t n, lora_err *e);

/* <B1 A1, B2 A2>_F = trace((B1^T B2) (A2 A1^T)), from the small factors
 * only: two r1 x r2 Gram products in double, never the m x n matrices.
 * B1 (m x r1), A1 (r1 x n), B2 (m x r2), A2 (r2 x n). */
int lora_linalg_lowrank_inner(double *out, const float *B1, const float *A1, size_t r1, const float *B2,
                              const float *A2, size_t r2, size_t m, size_t n, lora_err *e);

/* ||s1 B1 A1 - s2 B2 A2||_F from the factors: QR of [B1 B2] and of
 * [s1 A1; -s2 A2]^T, then the Frobenius norm of the product of the two R
 * factors, in double. No squares are subtracted, so a tiny difference of
 * large products is still resolved to ~1e-15 relative. */
int lora_linalg_lowrank_dist(double *out, double s1, const float *B1, const float *A1, size_t r1, double s2,
                             const float *B2, const float *A2, size_t r2, size_t m, size_t n, lora_err *e);

/* ---- dense matrices ---- */

/* Exact SVD of the dense X (m x n f32) by LAPACK sgesdd on a copy.
 * S receives all min(m, n) singular values (descending); U (m x k) and
 * Vt (k x n) the first k singular vectors (k <= min(m, n); both may be NULL
 * when k is 0, which computes values only). Memory: about three copies of X. */
int lora_linalg_svd_exact(float *U, double *S, float *Vt, const float *X, size_t m, size_t n, size_t k,
                          lora_err *e);

/* Randomized truncated SVD (Halko, Martinsson and Tropp 2011, algorithms
 * 4.4 and 5.1): Gaussian test matrix Omega (n x l, l = min(k + p, m, n))
 * drawn from lora_rng seeded with seed, Y = X Omega, then q rounds of
 * subspace iteration with a QR re-orthonormalisation after every product,
 * Q = orth(Y), and the exact SVD (double) of the small l x n matrix Q^T X.
 * S receives l approximate singular values (descending); U (m x k) and
 * Vt (k x n) the first k vectors. Cost O(m n l (2q + 2)) in sgemm. Same
 * inputs and seed give the same bits with the same threads on the same CPU
 * (products may round differently with one thread than with several). */
int lora_linalg_svd_randomized(float *U, double *S, float *Vt, const float *X, size_t m, size_t n,
                               size_t k, size_t p, size_t q, uint64_t seed, lora_err *e);

/* Squared singular values of X (m x n f32), all min(m, n) of them in
 * descending order: eigenvalues of the smaller Gram matrix (X X^T or
 * X^T X), accumulated in double by column blocks and diagonalised by LAPACK
 * dsyevd. Accurate to ~1e-16 * ||X||_2^2 absolutely: meant for energy
 * fractions, not for tiny singular values. */
int lora_linalg_sq_svals(double *ev, const float *X, size_t m, size_t n, lora_err *e);

/* Squared Frobenius norm of the residual X - scale B A (X m x n, B m x k,
 * A k x n), computed by row blocks with sgemm and summed in double;
 * never holds more than a block of B A. */
int lora_linalg_residual_sq(double *out, const float *X, float scale, const float *B, const float *A,
                            size_t m, size_t k, size_t n, lora_err *e);

/* Squared Frobenius norm of n floats, summed in double in a fixed order. */
double lora_linalg_sumsq(const float *x, size_t n);

#endif
