/* Independent helpers for the numerical unit tests: plain C in double, no
 * BLAS, so the library is checked against something it does not use.
 * planted() builds X = U diag(s) V^T with U, V random orthonormal columns
 * (modified Gram-Schmidt, twice), so every singular value and vector is
 * known in advance. */
#ifndef PLANTED_H
#define PLANTED_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* Orthonormal columns: Q (rows x k, row-major) from a seeded Gaussian. */
static inline void orthonormal(double *Q, size_t rows, size_t k, lora_rng *g)
{
	for (size_t i = 0; i < rows * k; i++)
		Q[i] = lora_rng_normal(g);
	for (int pass = 0; pass < 2; pass++)
		for (size_t j = 0; j < k; j++) {
			for (size_t p = 0; p < j; p++) {
				double d = 0;
				for (size_t i = 0; i < rows; i++)
					d += Q[i * k + p] * Q[i * k + j];
				for (size_t i = 0; i < rows; i++)
					Q[i * k + j] -= d * Q[i * k + p];
			}
			double nrm = 0;
			for (size_t i = 0; i < rows; i++)
				nrm += Q[i * k + j] * Q[i * k + j];
			nrm = sqrt(nrm);
			for (size_t i = 0; i < rows; i++)
				Q[i * k + j] /= nrm;
		}
}

/* X (m x n, double) = sum over i < k of s[i] U[:, i] V[:, i]^T; U (m x k),
 * V (n x k). */
static inline void compose(double *X, const double *U, const double *s, const double *V, size_t m, size_t n,
                    size_t k)
{
	memset(X, 0, m * n * sizeof *X);
	for (size_t i = 0; i < m; i++)
		for (size_t p = 0; p < k; p++) {
			double u = U[i * k + p] * s[p];
			for (size_t j = 0; j < n; j++)
				X[i * n + j] += u * V[j * k + p];
		}
}

/* Dense product in double of f32 factors: P (m x n) = B (m x r) A (r x n). */
static inline void product(double *P, const float *B, const float *A, size_t m, size_t r, size_t n)
{
	memset(P, 0, m * n * sizeof *P);
	for (size_t i = 0; i < m; i++)
		for (size_t p = 0; p < r; p++)
			for (size_t j = 0; j < n; j++)
				P[i * n + j] += (double)B[i * r + p] * A[p * n + j];
}

static inline double fro(const double *X, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += X[i] * X[i];
	return sqrt(s);
}

static inline double fro_diff(const double *X, const double *Y, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += (X[i] - Y[i]) * (X[i] - Y[i]);
	return sqrt(s);
}

static inline float *to_f32(const double *x, size_t n)
{
	float *f = malloc(n * sizeof *f);
	for (size_t i = 0; i < n; i++)
		f[i] = (float)x[i];
	return f;
}

/* How far factors B (m x k) and A (k x n) are from the balanced split of
 * their product's SVD, B = U S^(1/2), A = S^(1/2) V^T, whose Gram matrices
 * are B^T B = A A^T = diag(s) (s the k singular values, descending): the
 * largest entry of |B^T B - diag(s)| and |A A^T - diag(s)|, over s[0].
 * Every split with the same product (U S and V^T, say) fails this. */
static inline double unbalance(const float *B, const float *A, const double *s, size_t m, size_t k, size_t n)
{
	double worst = 0;
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < k; j++) {
			double gb = 0, ga = 0, want = i == j ? s[i] : 0;
			for (size_t r = 0; r < m; r++)
				gb += (double)B[r * k + i] * B[r * k + j];
			for (size_t c = 0; c < n; c++)
				ga += (double)A[i * n + c] * A[j * n + c];
			worst = fmax(worst, fmax(fabs(gb - want), fabs(ga - want)));
		}
	return s[0] > 0 ? worst / s[0] : worst;
}

#endif
