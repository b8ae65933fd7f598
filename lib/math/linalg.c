#include "math/linalg_internal.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/rng.h"
#include "math/blas.h"

/* BLAS and LAPACK index with int: refuse anything larger. */
static int too_big(size_t a, size_t b, size_t c)
{
	return a > INT_MAX || b > INT_MAX || c > INT_MAX;
}

/* malloc of a*b*size bytes, NULL on overflow; never malloc(0). */
static void *alloc3(size_t a, size_t b, size_t size)
{
	size_t n;
	if (lora_shape_mul(a, b, &n) || lora_shape_mul(n, size, &n))
		return NULL;
	return malloc(n ? n : 1);
}

void lora_linalg_sgemm(int tX, int tY, size_t m, size_t n, size_t k, float alpha, const float *X,
                       const float *Y, float beta, float *C)
{
	lora_blas_sgemm(tX, tY, m, n, k, alpha, X, tX ? m : k, Y, tY ? k : n, beta, C, n);
}

/* OpenBLAS still: oneDNN 2.6 has no f64 matmul on the CPU. These products
 * are the small r x r ones of the low-rank factorisations. */
void lora_linalg_dgemm(int tX, int tY, size_t m, size_t n, size_t k, double alpha,
                       const double *X, const double *Y, double beta, double *C)
{
	if (!m || !n)
		return;
	cblas_dgemm(CblasRowMajor, tX ? CblasTrans : CblasNoTrans, tY ? CblasTrans : CblasNoTrans,
	            (int)m, (int)n, (int)k, alpha, X, tX ? (int)m : (int)(k ? k : 1), Y,
	            tY ? (int)(k ? k : 1) : (int)n, beta, C, (int)n);
}

/* Householder QR of the rows x r matrix held column-major in W (leading
 * dimension rows), in place. R (k x r, k = min(rows, r), row-major) gets
 * the upper-trapezoidal factor; with want_q, W's first k columns are then
 * overwritten by the orthonormal Q, i.e. W holds Q^T as a row-major k x rows
 * matrix. Column-major input spares LAPACKE its transposition copies. */
static int qr_cm(double *R, double *W, size_t rows, size_t r, int want_q)
{
	size_t k = lora_shape_min(rows, r);
	double *tau = malloc((k ? k : 1) * sizeof *tau);
	int rc = -1;
	if (!tau)
		return -1;
	if (LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)r, W, (lapack_int)rows, tau) != 0)
		goto out;
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < r; j++)
			R[i * r + j] = j >= i ? W[j * rows + i] : 0.0;
	if (want_q && LAPACKE_dorgqr(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)k, (lapack_int)k, W,
	                             (lapack_int)rows, tau) != 0)
		goto out;
	rc = 0;
out:
	free(tau);
	return rc;
}

static int svals(double *sv, double *M, size_t m, size_t n)
{
	size_t k = lora_shape_min(m, n);
	double *sup = malloc((k ? k : 1) * sizeof *sup);
	if (!sup)
		return -1;
	/* dgesvd with jobu=jobvt='N' computes values only. */
	int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)m, (lapack_int)n, M,
	                          (lapack_int)n, sv, NULL, 1, NULL, 1, sup);
	free(sup);
	return info == 0 ? 0 : -1;
}

int lora_linalg_lowrank_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                              lora_err *e)
{
	return lora_linalg_lowrank_svd(NULL, sv, NULL, B, A, m, r, n, e);
}

int lora_linalg_dense_svals(double *sv, const float *B, const float *A, size_t m, size_t r, size_t n,
                            lora_err *e)
{
	if (too_big(m, n, r))
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for LAPACK", m, n);
	double *M = calloc(m * n, sizeof *M);
	if (!M)
		return lora_err_nomem(e);
	for (size_t i = 0; i < m; i++)
		for (size_t k = 0; k < r; k++)
			for (size_t j = 0; j < n; j++)
				M[i * n + j] += (double)B[i * r + k] * A[k * n + j];
	size_t k = lora_shape_min(m, n);
	double *all = malloc(k * sizeof *all);
	int rc = 0;
	if (!all || svals(all, M, m, n))
		rc = lora_err_set(e, LORA_EINVAL, "SVD failed");
	else
		memcpy(sv, all, lora_shape_min(k, r) * sizeof *sv);
	free(all);
	free(M);
	return rc;
}

/* Thin SVD of a row-major m x n double matrix by dgesdd, without LAPACKE's
 * transposition copies: a row-major m x n buffer is the column-major
 * n x m matrix X^T = V S U^T, so LAPACK's "u" is our V^T and its "vt" our U.
 * M is destroyed. U (m x kk) and Vt (kk x n), kk = min(m, n), may be NULL
 * together for values only. */
static int dsvd(double *U, double *S, double *Vt, double *M, size_t m, size_t n)
{
	size_t kk = lora_shape_min(m, n);
	lapack_int info;
	if (!U)
		info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)n, (lapack_int)m, M, (lapack_int)n, S,
		                      NULL, 1, NULL, 1);
	else
		info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, M, (lapack_int)n, S,
		                      Vt, (lapack_int)n, U, (lapack_int)kk);
	return info == 0 ? 0 : -1;
}

int lora_linalg_lowrank_svd(double *U, double *S, double *Vt, const float *B, const float *A, size_t m,
                            size_t r, size_t n, lora_err *e)
{
	if (too_big(m, n, r))
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu at rank %zu is too large for LAPACK", m,
		                    n, r);
	size_t kb = lora_shape_min(m, r), ka = lora_shape_min(n, r), k = lora_shape_min(kb, ka);
	if (!k)
		return 0;
	/* B column-major (m x r) and A^T column-major (n x r), which is A's own
	 * row-major layout. */
	double *Wb = alloc3(m, r, sizeof(double)), *Wa = alloc3(n, r, sizeof(double));
	double *RB = alloc3(kb, r, sizeof(double)), *RA = alloc3(ka, r, sizeof(double));
	double *M = alloc3(kb, ka, sizeof(double)), *Um = NULL, *Vm = NULL;
	int rc = 0, vec = U || Vt;
	if (!Wb || !Wa || !RB || !RA || !M ||
	    (vec && (!(Um = alloc3(kb, k, sizeof(double))) || !(Vm = alloc3(k, ka, sizeof(double)))))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	for (size_t j = 0; j < r; j++)
		for (size_t i = 0; i < m; i++)
			Wb[j * m + i] = B ? B[i * r + j] : (double)(i == j);
	for (size_t i = 0; i < r * n; i++)
		Wa[i] = A ? A[i] : (double)(i / n == i % n);
	/* B A = Qb Rb (Qa Ra)^T = Qb (Rb Ra^T) Qa^T: the small product carries
	 * the singular values, the Q factors rotate its vectors back. */
	if (qr_cm(RB, Wb, m, r, vec) || qr_cm(RA, Wa, n, r, vec)) {
		rc = lora_err_set(e, LORA_EINVAL, "QR factorisation failed");
		goto out;
	}
	lora_linalg_dgemm(0, 1, kb, ka, r, 1.0, RB, RA, 0.0, M);
	if (dsvd(Um, S, Vm, M, kb, ka)) {
		rc = lora_err_set(e, LORA_EINVAL, "SVD did not converge");
		goto out;
	}
	if (U) /* Qb Um, with Wb holding Qb^T (kb x m) */
		lora_linalg_dgemm(1, 0, m, k, kb, 1.0, Wb, Um, 0.0, U);
	if (Vt) /* Vm Qa^T, with Wa holding Qa^T (ka x n) */
		lora_linalg_dgemm(0, 0, k, n, ka, 1.0, Vm, Wa, 0.0, Vt);
out:
	free(Wb), free(Wa), free(RB), free(RA), free(M), free(Um), free(Vm);
	return rc;
}

static double *to_double(const float *x, size_t n)
{
	double *d = malloc((n ? n : 1) * sizeof *d);
	if (d)
		for (size_t i = 0; i < n; i++)
			d[i] = x[i];
	return d;
}

int lora_linalg_lowrank_inner(double *out, const float *B1, const float *A1, size_t r1, const float *B2,
                              const float *A2, size_t r2, size_t m, size_t n, lora_err *e)
{
	if (too_big(m, n, r1) || too_big(r2, 1, 1))
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for BLAS", m, n);
	size_t nb1, nb2, na1, na2;
	if (lora_shape_mul(m, r1, &nb1) || lora_shape_mul(m, r2, &nb2) || lora_shape_mul(r1, n, &na1) ||
	    lora_shape_mul(r2, n, &na2))
		return lora_err_nomem(e);
	double *b1 = to_double(B1, nb1), *b2 = to_double(B2, nb2), *a1 = to_double(A1, na1);
	double *a2 = to_double(A2, na2), *GB = alloc3(r1, r2, sizeof(double));
	double *GA = alloc3(r1, r2, sizeof(double));
	int rc = 0;
	if (!b1 || !b2 || !a1 || !a2 || !GB || !GA) {
		rc = lora_err_nomem(e);
		goto out;
	}
	lora_linalg_dgemm(1, 0, r1, r2, m, 1.0, b1, b2, 0.0, GB); /* B1^T B2 */
	lora_linalg_dgemm(0, 1, r1, r2, n, 1.0, a1, a2, 0.0, GA); /* A1 A2^T */
	double s = 0;
	for (size_t i = 0; i < r1 * r2; i++)
		s += GB[i] * GA[i];
	*out = s;
out:
	free(b1), free(b2), free(a1), free(a2), free(GB), free(GA);
	return rc;
}

int lora_linalg_svd_exact(float *U, double *S, float *Vt, const float *X, size_t m, size_t n, size_t k,
                          lora_err *e)
{
	size_t kk = lora_shape_min(m, n);
	/* gesdd indexes its workspace with int: the whole matrix must fit. */
	if (too_big(m, n, 1) || m * n > INT_MAX / 4)
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for LAPACK's gesdd", m, n);
	if (k > kk)
		return lora_err_set(e, LORA_EINVAL, "rank %zu exceeds min(%zu, %zu)", k, m, n);
	float *w = alloc3(m, n, sizeof *w), *s = alloc3(kk, 1, sizeof *s), *u = NULL, *vt = NULL;
	int rc = 0;
	if (!w || !s || (k && (!(u = alloc3(m, kk, sizeof *u)) || !(vt = alloc3(kk, n, sizeof *vt))))) {
		rc = lora_err_nomem(e);
		goto out;
	}
	memcpy(w, X, m * n * sizeof *w);
	/* Column-major view of the row-major buffer, as in dsvd. */
	lapack_int info;
	if (k)
		info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, w, (lapack_int)n, s,
		                      vt, (lapack_int)n, u, (lapack_int)kk);
	else
		info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)n, (lapack_int)m, w, (lapack_int)n, s,
		                      NULL, 1, NULL, 1);
	if (info != 0) {
		rc = lora_err_set(e, info < 0 ? LORA_ENOMEM : LORA_EINVAL, "SVD did not converge");
		goto out;
	}
	for (size_t i = 0; i < kk; i++)
		S[i] = s[i];
	for (size_t i = 0; k && i < m; i++)
		memcpy(U + i * k, u + i * kk, k * sizeof *U);
	if (k)
		memcpy(Vt, vt, k * n * sizeof *Vt);
out:
	free(w), free(s), free(u), free(vt);
	return rc;
}

/* Orthonormal basis of the columns of the column-major rows x l matrix
 * held in X (leading dimension rows), in place: Householder QR, then Q. */
static int orth_cm(float *X, size_t rows, size_t l, float *tau)
{
	if (LAPACKE_sgeqrf(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)l, X, (lapack_int)rows, tau))
		return -1;
	return LAPACKE_sorgqr(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)l, (lapack_int)l, X,
	                      (lapack_int)rows, tau) ? -1 : 0;
}

int lora_linalg_svd_randomized(float *U, double *S, float *Vt, const float *X, size_t m, size_t n,
                               size_t k, size_t p, size_t q, uint64_t seed, lora_err *e)
{
	size_t kk = lora_shape_min(m, n), l = k + p < kk ? k + p : kk;
	if (too_big(m, n, l))
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for BLAS", m, n);
	if (k > kk || k == 0)
		return lora_err_set(e, LORA_EINVAL, "rank %zu is not in [1, min(%zu, %zu)]", k, m, n);
	/* Tall-skinny factors are kept transposed (l x rows, row-major), which is
	 * the column-major rows x l layout LAPACK's QR wants: no copies. */
	float *om = alloc3(l, n, sizeof *om), *yt = alloc3(l, m, sizeof *yt);
	float *zt = alloc3(l, n, sizeof *zt), *tau = alloc3(l, 1, sizeof *tau);
	float *ubk = alloc3(l, k, sizeof *ubk);
	double *bs = alloc3(l, n, sizeof *bs), *ub = alloc3(l, l, sizeof *ub);
	double *vt = alloc3(l, n, sizeof *vt);
	int rc = 0;
	if (!om || !yt || !zt || !tau || !ubk || !bs || !ub || !vt) {
		rc = lora_err_nomem(e);
		goto out;
	}
	lora_rng g;
	lora_rng_seed(&g, seed);
	for (size_t i = 0; i < l * n; i++)
		om[i] = lora_rng_normal(&g);
	lora_linalg_sgemm(0, 1, l, m, n, 1.0f, om, X, 0.0f, yt); /* Y^T = Omega^T X^T */
	if (orth_cm(yt, m, l, tau))
		goto fail;
	for (size_t it = 0; it < q; it++) {
		lora_linalg_sgemm(0, 0, l, n, m, 1.0f, yt, X, 0.0f, zt); /* Z^T = Q^T X */
		if (orth_cm(zt, n, l, tau))
			goto fail;
		lora_linalg_sgemm(0, 1, l, m, n, 1.0f, zt, X, 0.0f, yt); /* Y^T = Z^T X^T */
		if (orth_cm(yt, m, l, tau))
			goto fail;
	}
	/* Small matrix Q^T X (l x n), reusing zt, then its SVD in double. */
	lora_linalg_sgemm(0, 0, l, n, m, 1.0f, yt, X, 0.0f, zt);
	for (size_t i = 0; i < l * n; i++)
		bs[i] = zt[i];
	if (dsvd(ub, S, vt, bs, l, n))
		goto fail;
	for (size_t i = 0; i < l; i++)
		for (size_t j = 0; j < k; j++)
			ubk[i * k + j] = (float)ub[i * l + j];
	lora_linalg_sgemm(1, 0, m, k, l, 1.0f, yt, ubk, 0.0f, U); /* U = Q Ub */
	for (size_t i = 0; i < k * n; i++)
		Vt[i] = (float)vt[i];
	goto out;
fail:
	rc = lora_err_set(e, LORA_EINVAL, "randomized SVD: LAPACK factorisation failed");
out:
	free(om), free(yt), free(zt), free(tau), free(ubk), free(bs), free(ub), free(vt);
	return rc;
}

int lora_linalg_sq_svals(double *ev, const float *X, size_t m, size_t n, lora_err *e)
{
	size_t p = lora_shape_min(m, n), bs = 256;
	/* dsyevd's workspace is 1 + 6p + 2p^2 doubles, indexed with int. */
	if (too_big(m, n, 1) || p > 30000)
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for LAPACK's syevd", m, n);
	if (!p)
		return 0;
	double *G = alloc3(p, p, sizeof *G), *blk = alloc3(p, bs, sizeof *blk);
	int rc = 0;
	if (!G || !blk) {
		rc = lora_err_nomem(e);
		goto out;
	}
	memset(G, 0, p * p * sizeof *G);
	/* G = sum over blocks of the long side of Xb Xb^T, Xb p x bs in double. */
	size_t len = m <= n ? n : m;
	for (size_t j0 = 0; j0 < len; j0 += bs) {
		size_t b = len - j0 < bs ? len - j0 : bs;
		for (size_t i = 0; i < p; i++)
			for (size_t j = 0; j < b; j++)
				blk[i * b + j] = m <= n ? X[i * n + j0 + j] : X[(j0 + j) * n + i];
		/* Row-major upper is column-major lower: dsyevd reads it in place. */
		cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)p, (int)b, 1.0, blk, (int)b, 1.0, G,
		            (int)p);
	}
	if (LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'L', (lapack_int)p, G, (lapack_int)p, blk) != 0) {
		rc = lora_err_set(e, LORA_EINVAL, "eigenvalue decomposition did not converge");
		goto out;
	}
	for (size_t i = 0; i < p; i++) /* ascending -> descending, rounding below 0 clamped */
		ev[i] = blk[p - 1 - i] > 0 ? blk[p - 1 - i] : 0.0;
out:
	free(G), free(blk);
	return rc;
}

int lora_linalg_residual_sq(double *out, const float *X, float scale, const float *B, const float *A,
                            size_t m, size_t k, size_t n, lora_err *e)
{
	size_t rows = 256;
	if (too_big(m, n, k))
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for BLAS", m, n);
	float *t = alloc3(rows, n, sizeof *t);
	if (!t)
		return lora_err_nomem(e);
	double s = 0;
	/* T = X_block - B_block A by sgemm (beta 1 on a copy), then summed in
	 * double in a fixed order. No OpenMP here: its spinning threads would
	 * fight OpenBLAS's for the same cores between the two steps. */
	for (size_t i0 = 0; i0 < m; i0 += rows) {
		size_t b = m - i0 < rows ? m - i0 : rows;
		memcpy(t, X + i0 * n, b * n * sizeof *t);
		lora_linalg_sgemm(0, 0, b, n, k, -scale, B + i0 * k, A, 1.0f, t);
		s += lora_linalg_sumsq(t, b * n);
	}
	free(t);
	*out = s;
	return 0;
}

double lora_linalg_sumsq(const float *x, size_t n)
{
	/* Four interleaved partial sums: the loop vectorises without -ffast-math
	 * and the order, hence the result, is fixed. */
	double p[4] = {0, 0, 0, 0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++)
			p[j] += (double)x[i + j] * x[i + j];
	for (; i < n; i++)
		p[0] += (double)x[i] * x[i];
	return (p[0] + p[1]) + (p[2] + p[3]);
}

int lora_linalg_lowrank_dist(double *out, double s1, const float *B1, const float *A1, size_t r1, double s2,
                             const float *B2, const float *A2, size_t r2, size_t m, size_t n, lora_err *e)
{
	size_t r = r1 + r2;
	if (r < r1 || too_big(m, n, r))
		return lora_err_set(e, LORA_EINVAL, "matrix of %zux%zu is too large for LAPACK", m, n);
	size_t kb = lora_shape_min(m, r), ka = lora_shape_min(n, r);
	double *Wb = alloc3(m, r, sizeof(double)), *Wa = alloc3(n, r, sizeof(double));
	double *RB = alloc3(kb, r, sizeof(double)), *RA = alloc3(ka, r, sizeof(double));
	double *M = alloc3(kb, ka, sizeof(double));
	int rc = 0;
	if (!Wb || !Wa || !RB || !RA || !M) {
		rc = lora_err_nomem(e);
		goto out;
	}
	/* [B1 B2] and [s1 A1; -s2 A2]^T, column-major. */
	for (size_t j = 0; j < r1; j++)
		for (size_t i = 0; i < m; i++)
			Wb[j * m + i] = B1[i * r1 + j];
	for (size_t j = 0; j < r2; j++)
		for (size_t i = 0; i < m; i++)
			Wb[(r1 + j) * m + i] = B2[i * r2 + j];
	for (size_t i = 0; i < r1 * n; i++)
		Wa[i] = s1 * A1[i];
	for (size_t i = 0; i < r2 * n; i++)
		Wa[r1 * n + i] = -s2 * A2[i];
	/* Frobenius norms are invariant under the orthonormal Q factors. */
	if (qr_cm(RB, Wb, m, r, 0) || qr_cm(RA, Wa, n, r, 0)) {
		rc = lora_err_set(e, LORA_EINVAL, "QR factorisation failed");
		goto out;
	}
	lora_linalg_dgemm(0, 1, kb, ka, r, 1.0, RB, RA, 0.0, M);
	double s = 0;
	for (size_t i = 0; i < kb * ka; i++)
		s += M[i] * M[i];
	*out = sqrt(s);
out:
	free(Wb), free(Wa), free(RB), free(RA), free(M);
	return rc;
}
