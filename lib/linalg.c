#include "linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

static size_t min2(size_t a, size_t b) { return a < b ? a : b; }

/* R factor (k x r, k = min(rows, r), upper trapezoidal, row-major) of the
 * QR decomposition of the rows x r matrix X. */
static int rfactor(double *R, const double *X, size_t rows, size_t r)
{
	size_t k = min2(rows, r);
	double *w = malloc(rows * r * sizeof *w), *tau = malloc((k ? k : 1) * sizeof *tau);
	int rc = -1;
	if (!w || !tau)
		goto out;
	memcpy(w, X, rows * r * sizeof *w);
	if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)r, w, (lapack_int)r, tau) != 0)
		goto out;
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < r; j++)
			R[i * r + j] = j >= i ? w[i * r + j] : 0.0;
	rc = 0;
out:
	free(w);
	free(tau);
	return rc;
}

static int svals(double *sv, double *M, size_t m, size_t n)
{
	size_t k = min2(m, n);
	double *sup = malloc((k ? k : 1) * sizeof *sup);
	if (!sup)
		return -1;
	/* dgesvd with jobu=jobvt='N' computes values only. */
	int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)m, (lapack_int)n, M,
	                          (lapack_int)n, sv, NULL, 1, NULL, 1, sup);
	free(sup);
	return info == 0 ? 0 : -1;
}

int lora_lowrank_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                       lora_err *e)
{
	size_t kb = min2(m, r), ka = min2(n, r);
	double *Bd = malloc(m * r * sizeof *Bd), *At = malloc(n * r * sizeof *At);
	double *RB = malloc(kb * r * sizeof *RB), *RA = malloc(ka * r * sizeof *RA);
	double *M = malloc(kb * ka * sizeof *M);
	int rc = 0;
	if (!Bd || !At || !RB || !RA || !M) {
		rc = lora_err_set(e, LORA_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < m * r; i++)
		Bd[i] = B[i];
	for (size_t i = 0; i < r; i++)
		for (size_t j = 0; j < n; j++)
			At[j * r + i] = A[i * n + j];
	/* B A = Qb Rb (Qa Ra)^T = Qb (Rb Ra^T) Qa^T: same singular values as Rb Ra^T. */
	if (rfactor(RB, Bd, m, r) || rfactor(RA, At, n, r)) {
		rc = lora_err_set(e, LORA_EINVAL, "QR factorisation failed");
		goto out;
	}
	cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)kb, (int)ka, (int)r, 1.0, RB, (int)r,
	            RA, (int)r, 0.0, M, (int)ka);
	if (svals(sv, M, kb, ka))
		rc = lora_err_set(e, LORA_EINVAL, "SVD did not converge");
out:
	free(Bd);
	free(At);
	free(RB);
	free(RA);
	free(M);
	return rc;
}

int lora_dense_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                     lora_err *e)
{
	double *M = calloc(m * n, sizeof *M);
	if (!M)
		return lora_err_set(e, LORA_ENOMEM, "out of memory");
	for (size_t i = 0; i < m; i++)
		for (size_t k = 0; k < r; k++)
			for (size_t j = 0; j < n; j++)
				M[i * n + j] += (double)B[i * r + k] * A[k * n + j];
	size_t k = min2(m, n);
	double *all = malloc(k * sizeof *all);
	int rc = 0;
	if (!all || svals(all, M, m, n))
		rc = lora_err_set(e, LORA_EINVAL, "SVD failed");
	else
		memcpy(sv, all, min2(k, r) * sizeof *sv);
	free(all);
	free(M);
	return rc;
}
