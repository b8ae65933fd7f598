/* linalg kernels and the svd module against independent computations:
 * plain-C twins of the BLAS calls, and matrices with a planted spectrum. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "math/linalg_internal.h"
#include "planted.h"
#include "ops/svd.h"

/* ---- products ---- */

static void test_gemm(void)
{
	lora_rng g;
	lora_rng_seed(&g, 11);
	size_t m = 7, n = 5, k = 9;
	float X[63], Y[45], C[35];
	double Xd[63], Yd[45], Cd[35];
	for (int i = 0; i < 63; i++)
		Xd[i] = X[i] = lora_rng_normal(&g);
	for (int i = 0; i < 45; i++)
		Yd[i] = Y[i] = lora_rng_normal(&g);
	for (int tx = 0; tx < 2; tx++)
		for (int ty = 0; ty < 2; ty++) {
			for (int i = 0; i < 35; i++)
				C[i] = 1.0f, Cd[i] = 1.0;
			lora_linalg_sgemm(tx, ty, m, n, k, 2.0f, X, Y, 0.5f, C);
			lora_linalg_dgemm(tx, ty, m, n, k, 2.0, Xd, Yd, 0.5, Cd);
			for (size_t i = 0; i < m; i++)
				for (size_t j = 0; j < n; j++) {
					double s = 0;
					for (size_t p = 0; p < k; p++)
						s += (tx ? Xd[p * m + i] : Xd[i * k + p]) * (ty ? Yd[j * k + p] : Yd[p * n + j]);
					s = 2 * s + 0.5;
					CHECK(fabs(C[i * n + j] - s) < 1e-4, "sgemm %d%d (%zu,%zu) %g vs %g", tx, ty, i, j, C[i * n + j], s);
					CHECK(fabs(Cd[i * n + j] - s) < 1e-12, "dgemm %d%d (%zu,%zu)", tx, ty, i, j);
				}
		}
}

/* ---- low-rank products ---- */

static void test_lowrank_svd(size_t m, size_t r, size_t n, int noB, int noA, uint64_t seed)
{
	lora_rng g;
	lora_rng_seed(&g, seed);
	if (noB)
		m = r;
	if (noA)
		n = r;
	float *B = malloc(m * r * sizeof *B), *A = malloc(r * n * sizeof *A);
	for (size_t i = 0; i < m * r; i++)
		B[i] = noB ? (i / r == i % r) : lora_rng_normal(&g);
	for (size_t i = 0; i < r * n; i++)
		A[i] = noA ? (i / n == i % n) : lora_rng_normal(&g);
	size_t k = m < n ? m : n;
	k = k < r ? k : r;
	double *U = malloc(m * k * sizeof *U), *S = malloc(k * sizeof *S), *Vt = malloc(k * n * sizeof *Vt);
	double *P = malloc(m * n * sizeof *P), *R = malloc(m * n * sizeof *R), *sv = malloc(k * sizeof *sv);
	lora_err e;
	CHECK(lora_linalg_lowrank_svd(U, S, Vt, noB ? NULL : B, noA ? NULL : A, m, r, n, &e) == 0, "lowrank_svd");
	CHECK(lora_linalg_dense_svals(sv, B, A, m, r, n, &e) == 0, "dense_svals");
	product(P, B, A, m, r, n);
	memset(R, 0, m * n * sizeof *R);
	for (size_t i = 0; i < m; i++)
		for (size_t p = 0; p < k; p++)
			for (size_t j = 0; j < n; j++)
				R[i * n + j] += U[i * k + p] * S[p] * Vt[p * n + j];
	double nP = fro(P, m * n);
	CHECK(fro_diff(P, R, m * n) <= 1e-12 * nP, "%zux%zux%zu: U S Vt != B A (%g)", m, r, n, fro_diff(P, R, m * n) / nP);
	for (size_t i = 0; i < k; i++) {
		CHECK(fabs(S[i] - sv[i]) <= 1e-10 * sv[0], "%zux%zux%zu: S[%zu] %g vs dense %g", m, r, n, i, S[i], sv[i]);
		if (i)
			CHECK(S[i] <= S[i - 1], "descending");
	}
	double worst = 0;
	for (size_t a = 0; a < k; a++)
		for (size_t b = 0; b < k; b++) {
			double du = 0, dv = 0;
			for (size_t i = 0; i < m; i++)
				du += U[i * k + a] * U[i * k + b];
			for (size_t j = 0; j < n; j++)
				dv += Vt[a * n + j] * Vt[b * n + j];
			double want = a == b;
			worst = fmax(worst, fmax(fabs(du - want), fabs(dv - want)));
		}
	CHECK(worst < 1e-12, "%zux%zux%zu: singular vectors not orthonormal (%g)", m, r, n, worst);
	free(B), free(A), free(U), free(S), free(Vt), free(P), free(R), free(sv);
}

static void test_inner_dist(void)
{
	lora_rng g;
	lora_rng_seed(&g, 21);
	size_t m = 23, n = 31, r1 = 4, r2 = 6;
	float B1[92], A1[124], B2[138], A2[186];
	for (size_t i = 0; i < m * r1; i++)
		B1[i] = lora_rng_normal(&g);
	for (size_t i = 0; i < r1 * n; i++)
		A1[i] = lora_rng_normal(&g);
	for (size_t i = 0; i < m * r2; i++)
		B2[i] = lora_rng_normal(&g);
	for (size_t i = 0; i < r2 * n; i++)
		A2[i] = lora_rng_normal(&g);
	double P1[713], P2[713], D[713], in, nd, dist;
	product(P1, B1, A1, m, r1, n);
	product(P2, B2, A2, m, r2, n);
	nd = 0;
	for (size_t i = 0; i < m * n; i++)
		nd += P1[i] * P2[i];
	lora_err e;
	CHECK(lora_linalg_lowrank_inner(&in, B1, A1, r1, B2, A2, r2, m, n, &e) == 0 && fabs(in - nd) < 1e-10 * fabs(nd) + 1e-10,
	      "inner %.17g vs %.17g", in, nd);
	double s1 = 0.75, s2 = -1.5;
	for (size_t i = 0; i < m * n; i++)
		D[i] = s1 * P1[i] - s2 * P2[i];
	CHECK(lora_linalg_lowrank_dist(&dist, s1, B1, A1, r1, s2, B2, A2, r2, m, n, &e) == 0 &&
	      fabs(dist - fro(D, m * n)) < 1e-12 * fro(D, m * n), "dist %.17g vs %.17g", dist, fro(D, m * n));
	/* A tiny difference of two large products is resolved: B1 with one
	 * entry nudged by 2^-20 relative. */
	float B3[92];
	memcpy(B3, B1, sizeof B3);
	B3[5] = B1[5] * (1 + 0x1p-20f);
	double P3[713];
	product(P3, B3, A1, m, r1, n);
	for (size_t i = 0; i < m * n; i++)
		D[i] = P1[i] - P3[i];
	CHECK(lora_linalg_lowrank_dist(&dist, 1, B1, A1, r1, 1, B3, A1, r1, m, n, &e) == 0 &&
	      fabs(dist - fro(D, m * n)) < 1e-6 * fro(D, m * n), "tiny dist %.17g vs %.17g", dist, fro(D, m * n));
	CHECK(lora_linalg_lowrank_dist(&dist, 2, B1, A1, r1, 2, B1, A1, r1, m, n, &e) == 0 && dist < 1e-13 * fro(P1, m * n),
	      "X - X = %g", dist);
}

/* ---- dense matrices with a planted spectrum ---- */

typedef struct {
	size_t m, n, p;
	double *U, *V, *s, *X;
	float *Xf;
} planted_t;

static planted_t plant(size_t m, size_t n, const double *s, size_t ns, uint64_t seed)
{
	planted_t t = {m, n, ns, NULL, NULL, NULL, NULL, NULL};
	lora_rng g;
	lora_rng_seed(&g, seed);
	t.U = malloc(m * ns * sizeof *t.U);
	t.V = malloc(n * ns * sizeof *t.V);
	t.s = malloc(ns * sizeof *t.s);
	t.X = malloc(m * n * sizeof *t.X);
	memcpy(t.s, s, ns * sizeof *s);
	orthonormal(t.U, m, ns, &g);
	orthonormal(t.V, n, ns, &g);
	compose(t.X, t.U, t.s, t.V, m, n, ns);
	t.Xf = to_f32(t.X, m * n);
	return t;
}

static void unplant(planted_t *t) { free(t->U), free(t->V), free(t->s), free(t->X), free(t->Xf); }

/* ||X - U_k S_k Vt_k||_F for f32 U (m x k), Vt (k x n). */
static double trunc_err(const planted_t *t, const float *U, const double *S, const float *Vt, size_t k)
{
	double s = 0;
	for (size_t i = 0; i < t->m; i++)
		for (size_t j = 0; j < t->n; j++) {
			double v = t->X[i * t->n + j];
			for (size_t p = 0; p < k; p++)
				v -= (double)U[i * k + p] * S[p] * Vt[p * t->n + j];
			s += v * v;
		}
	return sqrt(s);
}

static double tail(const planted_t *t, size_t k)
{
	double s = 0;
	for (size_t i = k; i < t->p; i++)
		s += t->s[i] * t->s[i];
	return sqrt(s);
}

static void test_exact(size_t m, size_t n)
{
	size_t p = m < n ? m : n, k = 5;
	double *s = malloc(p * sizeof *s);
	for (size_t i = 0; i < p; i++)
		s[i] = 10.0 / (double)(i + 1);
	planted_t t = plant(m, n, s, p, 31 + m);
	float *U = malloc(m * k * sizeof *U), *Vt = malloc(k * n * sizeof *Vt);
	double *S = malloc(p * sizeof *S);
	lora_err e;
	CHECK(lora_linalg_svd_exact(U, S, Vt, t.Xf, m, n, k, &e) == 0, "exact");
	for (size_t i = 0; i < p; i++)
		CHECK(fabs(S[i] - s[i]) < 2e-5 * s[0], "%zux%zu exact S[%zu] %g vs planted %g", m, n, i, S[i], s[i]);
	/* The rank-k truncation equals the planted one: U_k s_k V_k^T. */
	double *T = malloc(m * n * sizeof *T), *R = malloc(m * n * sizeof *R);
	memset(T, 0, m * n * sizeof *T);
	for (size_t i = 0; i < m; i++)
		for (size_t q = 0; q < k; q++)
			for (size_t j = 0; j < n; j++)
				T[i * n + j] += t.U[i * p + q] * s[q] * t.V[j * p + q];
	memset(R, 0, m * n * sizeof *R);
	for (size_t i = 0; i < m; i++)
		for (size_t q = 0; q < k; q++)
			for (size_t j = 0; j < n; j++)
				R[i * n + j] += (double)U[i * k + q] * S[q] * Vt[q * n + j];
	CHECK(fro_diff(T, R, m * n) < 1e-5 * fro(T, m * n), "%zux%zu exact truncation differs by %g", m, n,
	      fro_diff(T, R, m * n) / fro(T, m * n));
	double err = trunc_err(&t, U, S, Vt, k);
	CHECK(fabs(err - tail(&t, k)) < 1e-5 * s[0], "exact error %g vs optimal %g", err, tail(&t, k));
	/* Values only. */
	double *S2 = malloc(p * sizeof *S2);
	CHECK(lora_linalg_svd_exact(NULL, S2, NULL, t.Xf, m, n, 0, &e) == 0 && fabs(S2[p - 1] - S[p - 1]) < 1e-6 * s[0],
	      "values only");
	/* Squared singular values from the Gram matrix. */
	CHECK(lora_linalg_sq_svals(S2, t.Xf, m, n, &e) == 0, "sq_svals");
	for (size_t i = 0; i < p; i++)
		CHECK(fabs(S2[i] - s[i] * s[i]) < 1e-5 * s[0] * s[0], "%zux%zu sq_svals[%zu] %g vs %g", m, n, i, S2[i],
		      s[i] * s[i]);
	CHECK(lora_linalg_svd_exact(U, S, Vt, t.Xf, m, n, p + 1, &e) == LORA_EINVAL, "rank above min(m, n)");
	free(s), free(U), free(Vt), free(S), free(S2), free(T), free(R);
	unplant(&t);
}

static void test_randomized(size_t m, size_t n, double decay, size_t k)
{
	size_t p = m < n ? m : n;
	double *s = malloc(p * sizeof *s);
	for (size_t i = 0; i < p; i++)
		s[i] = pow((double)(i + 1), -decay);
	planted_t t = plant(m, n, s, p, 41 + m + n);
	float *U = malloc(m * k * sizeof *U), *Vt = malloc(k * n * sizeof *Vt);
	float *U2 = malloc(m * k * sizeof *U2), *Vt2 = malloc(k * n * sizeof *Vt2);
	double *S = malloc((k + 10) * sizeof *S), *S2 = malloc((k + 10) * sizeof *S2);
	lora_err e;
	CHECK(lora_linalg_svd_randomized(U, S, Vt, t.Xf, m, n, k, 10, 2, 7, &e) == 0, "randomized");
	double err = trunc_err(&t, U, S, Vt, k), opt = tail(&t, k);
	CHECK(err <= 1.01 * opt, "%zux%zu decay %g k %zu: randomized error %g above 1.01 x optimal %g", m, n, decay,
	      k, err, opt);
	for (size_t i = 0; i < k; i++)
		CHECK(S[i] <= s[i] * (1 + 1e-5) && S[i] >= s[i] * 0.95, "randomized S[%zu] %g vs %g", i, S[i], s[i]);
	/* Same seed, same bits; the thread count is not an input. */
	CHECK(lora_linalg_svd_randomized(U2, S2, Vt2, t.Xf, m, n, k, 10, 2, 7, &e) == 0 &&
	      !memcmp(U, U2, m * k * sizeof *U) && !memcmp(Vt, Vt2, k * n * sizeof *Vt) &&
	      !memcmp(S, S2, k * sizeof *S), "same seed, same output");
	free(s), free(U), free(Vt), free(U2), free(Vt2), free(S), free(S2);
	unplant(&t);
}

static void test_exact_lowrank_randomized(void)
{
	/* A matrix of exact rank 6: the randomized path recovers it. */
	double s[6] = {5, 4, 3, 2, 1, 0.5};
	planted_t t = plant(90, 70, s, 6, 51);
	float U[90 * 6], Vt[6 * 70];
	double S[16];
	lora_err e;
	CHECK(lora_linalg_svd_randomized(U, S, Vt, t.Xf, 90, 70, 6, 10, 2, 1, &e) == 0, "randomized rank 6");
	for (int i = 0; i < 6; i++)
		CHECK(fabs(S[i] - s[i]) < 1e-5 * s[0], "rank-6 S[%d] %g vs %g", i, S[i], s[i]);
	CHECK(trunc_err(&t, U, S, Vt, 6) < 1e-5 * 5, "rank-6 residual %g", trunc_err(&t, U, S, Vt, 6));
	/* q = 0 and p = 0 still give a valid (if worse) answer. */
	CHECK(lora_linalg_svd_randomized(U, S, Vt, t.Xf, 90, 70, 6, 0, 0, 1, &e) == 0 && trunc_err(&t, U, S, Vt, 6) < 1e-4,
	      "p = q = 0");
	CHECK(lora_linalg_svd_randomized(U, S, Vt, t.Xf, 90, 70, 0, 10, 2, 1, &e) == LORA_EINVAL, "rank 0 refused");
	unplant(&t);
}

static void test_residual_sumsq(void)
{
	lora_rng g;
	lora_rng_seed(&g, 61);
	size_t m = 300, n = 17, k = 3; /* more rows than one block */
	float *X = malloc(m * n * sizeof *X), *B = malloc(m * k * sizeof *B), *A = malloc(k * n * sizeof *A);
	for (size_t i = 0; i < m * n; i++)
		X[i] = lora_rng_normal(&g);
	for (size_t i = 0; i < m * k; i++)
		B[i] = lora_rng_normal(&g);
	for (size_t i = 0; i < k * n; i++)
		A[i] = lora_rng_normal(&g);
	double *P = malloc(m * n * sizeof *P), want = 0, ss = 0, got;
	product(P, B, A, m, k, n);
	for (size_t i = 0; i < m * n; i++) {
		want += (X[i] - P[i]) * (X[i] - P[i]);
		ss += (double)X[i] * X[i];
	}
	lora_err e;
	CHECK(lora_linalg_residual_sq(&got, X, 1.0f, B, A, m, k, n, &e) == 0 && fabs(got - want) < 1e-5 * want,
	      "residual %g vs %g", got, want);
	/* X - 2 B A */
	double want2 = 0;
	for (size_t i = 0; i < m * n; i++)
		want2 += (X[i] - 2 * P[i]) * (X[i] - 2 * P[i]);
	CHECK(lora_linalg_residual_sq(&got, X, 2.0f, B, A, m, k, n, &e) == 0 && fabs(got - want2) < 1e-5 * want2,
	      "scaled residual %g vs %g", got, want2);
	CHECK(fabs(lora_linalg_sumsq(X, m * n) - ss) < 1e-12 * ss, "sumsq");
	free(X), free(B), free(A), free(P);
}

/* ---- svd module ---- */

static void test_pick_rank(void)
{
	double s2[4] = {16, 4, 1, 0.25}; /* total 21.25 */
	CHECK(lora_svd_pick_rank(s2, 4, 21.25, 0.5, 0) == 1, "50%%");
	CHECK(lora_svd_pick_rank(s2, 4, 21.25, 0.9, 0) == 2, "90%%: 20/21.25 = 0.941");
	CHECK(lora_svd_pick_rank(s2, 4, 21.25, 0.99, 0) == 4, "99%%: 21/21.25 = 0.988");
	CHECK(lora_svd_pick_rank(s2, 4, 21.25, 0.99, 3) == 3, "cap");
	CHECK(lora_svd_pick_rank(s2, 4, 21.25, 1.0, 0) == 4, "all");
	CHECK(lora_svd_pick_rank(s2, 4, 100, 0.5, 0) == 4, "never reached");
	/* Exact ties (every number a power of two or a sum of a few): the
	 * smallest rank whose kept energy reaches E, equality included. */
	double t2[5] = {16, 4, 4, 4, 4}; /* total 32 */
	const double E[5] = {0.5, 0.625, 0.75, 0.875, 1};
	for (size_t i = 0; i < 5; i++)
		CHECK(lora_svd_pick_rank(t2, 5, 32, E[i], 0) == i + 1, "energy %g of 32 is reached at rank %zu, got %zu",
		      E[i], i + 1, lora_svd_pick_rank(t2, 5, 32, E[i], 0));
}

/* The same ties end to end, where the SVD is exact in floating point: a
 * diagonal difference for extraction, and factors that are scaled unit
 * vectors for re-ranking (mkadapter's layers), both with singular values
 * 4, 2, 2, 2, 2 (energies 16, 4, 4, 4, 4 of 32). */
static void test_energy_ties(void)
{
	const double E[5] = {0.5, 0.625, 0.75, 0.875, 1};
	const float sv[5] = {4, 2, 2, 2, 2};
	size_t m = 9, n = 7;
	float dW[63] = {0};
	for (size_t i = 0; i < 5; i++)
		dW[i * n + (n - 1 - i)] = i % 2 ? -sv[i] : sv[i];
	lora_adapter *a = lora_adapter_new(), *b = NULL;
	lora_err e;
	lora_layer *l = lora_adapter_add(a, "w", m, n, 5, 5, 0, &e);
	for (size_t k = 0; k < 5; k++) {
		l->B[(k + 2) * 5 + k] = sv[k];
		l->A[k * n + k] = 1;
	}
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	o.method = LORA_SVD_EXACT;
	for (size_t i = 0; i < 5; i++) {
		float *B, *A;
		size_t k = 0;
		lora_svd_layer_report r = {0};
		o.energy = E[i];
		CHECK(lora_svd_factor(&B, &A, &k, dW, m, n, &o, 1, &r, &e) == 0 && k == i + 1 && r.energy == E[i],
		      "extraction, energy %g: rank %zu (kept %.17g), want %zu", E[i], k, r.energy, i + 1);
		free(B), free(A), free(r.name);
		lora_svd_report rep = {0};
		CHECK(lora_svd_rerank(&b, a, &o, &rep, &e) == 0 && b->layers[0].rank == i + 1 && rep.layers[0].energy == E[i],
		      "re-rank, energy %g: rank %zu, want %zu", E[i], b ? b->layers[0].rank : 0, i + 1);
		lora_adapter_free(b);
		b = NULL;
		lora_svd_report_free(&rep);
	}
	lora_adapter_free(a);
}

static void test_factor(lora_svd_method method)
{
	size_t m = 80, n = 60, p = 60;
	double s[60];
	for (size_t i = 0; i < p; i++)
		s[i] = i < 45 ? 1.0 : 1e-3; /* flat top of 45 directions */
	planted_t t = plant(m, n, s, p, 71);
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	o.method = method;
	float *B, *A;
	size_t k;
	lora_svd_layer_report r = {0};
	lora_err e;
	double total = 0;
	for (size_t i = 0; i < p; i++)
		total += s[i] * s[i];
	/* Fixed rank. */
	o.rank = 8;
	CHECK(lora_svd_factor(&B, &A, &k, t.Xf, m, n, &o, 3, &r, &e) == 0 && k == 8, "rank 8");
	CHECK(fabs(r.norm - sqrt(total)) < 1e-5 * sqrt(total), "norm %g", r.norm);
	CHECK(fabs(r.energy - 8 / total) < 1e-4, "energy %g vs %g", r.energy, 8 / total);
	/* In a flat spectrum any 8 of the 45 top directions are optimal. */
	CHECK(r.rel_error <= 1.01 * sqrt(1 - 8 / total), "rel error %g vs optimal %g", r.rel_error, sqrt(1 - 8 / total));
	free(B), free(A);
	/* Energy: 45 directions hold all but 15e-6 / 45 of it: a sketch of 32
	 * is not enough, so the randomized path must grow it. */
	o.rank = 0;
	o.energy = 0.999;
	CHECK(lora_svd_factor(&B, &A, &k, t.Xf, m, n, &o, 3, &r, &e) == 0, "energy");
	CHECK(k == 45, "%s energy 0.999: rank %zu, want 45", lora_svd_method_name(method), k);
	CHECK(r.rel_error < 1e-3 && fabs(r.energy + r.rel_error * r.rel_error - 1) < 1e-4, "energy %g error %g",
	      r.energy, r.rel_error);
	/* B = U S^(1/2), A = S^(1/2) V^T: equal column and row norms. */
	double nb = 0, na = 0;
	for (size_t i = 0; i < m; i++)
		nb += (double)B[i * k] * B[i * k];
	for (size_t j = 0; j < n; j++)
		na += (double)A[j] * A[j];
	CHECK(fabs(nb - na) < 1e-4 && fabs(nb - 1) < 1e-3, "balanced factors: %g vs %g", nb, na);
	free(B), free(A);
	o.max_rank = 10;
	CHECK(lora_svd_factor(&B, &A, &k, t.Xf, m, n, &o, 3, &r, &e) == 0 && k == 10, "max-rank caps: %zu", k);
	free(B), free(A);
	/* bf16 storage: the factors are rounded, and the report measures them. */
	o.max_rank = 0;
	o.energy = 0;
	o.rank = 45;
	o.dtype = LORA_BF16;
	CHECK(lora_svd_factor(&B, &A, &k, t.Xf, m, n, &o, 3, &r, &e) == 0, "bf16");
	int exact_bf16 = 1;
	for (size_t i = 0; i < m * k; i++)
		exact_bf16 &= lora_dtype_bf16_to_f32(lora_dtype_f32_to_bf16(B[i])) == B[i];
	CHECK(exact_bf16, "bf16 factors are bf16 values");
	CHECK(r.rel_error > 1e-3 && r.rel_error < 1e-2, "bf16 rounding shows in the error: %g", r.rel_error);
	free(B), free(A);
	free(r.name);
	unplant(&t);
}

/* Extraction splits the truncated SVD evenly: B^T B = A A^T = diag(s). */
static void test_factor_balanced(lora_svd_method method)
{
	size_t m = 50, n = 40;
	double s[6] = {8, 4, 2, 1, 0.5, 0.25};
	planted_t t = plant(m, n, s, 6, 73);
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	o.method = method;
	o.rank = 4;
	float *B, *A;
	size_t k;
	lora_err e;
	CHECK(lora_svd_factor(&B, &A, &k, t.Xf, m, n, &o, 5, NULL, &e) == 0 && k == 4, "factor: %s", e.msg);
	CHECK(unbalance(B, A, s, m, k, n) < 1e-5, "%s: factors not U S^(1/2), S^(1/2) V^T: %g",
	      lora_svd_method_name(method), unbalance(B, A, s, m, k, n));
	free(B), free(A);
	unplant(&t);
}

/* An adapter layer with planted spectrum: B = U diag(sb), A = V^T. */
static lora_adapter *planted_adapter(size_t m, size_t n, size_t r, const double *s, double alpha, int rslora,
                                     uint64_t seed, double **U, double **V)
{
	lora_adapter *a = lora_adapter_new();
	lora_err e;
	lora_rng g;
	lora_rng_seed(&g, seed);
	a->rslora = rslora;
	lora_layer *l = lora_adapter_add(a, "w", m, n, r, alpha, 0, &e);
	*U = malloc(m * r * sizeof **U);
	*V = malloc(n * r * sizeof **V);
	orthonormal(*U, m, r, &g);
	orthonormal(*V, n, r, &g);
	for (size_t i = 0; i < m; i++)
		for (size_t j = 0; j < r; j++)
			l->B[i * r + j] = (float)((*U)[i * r + j] * s[j]);
	for (size_t j = 0; j < r; j++)
		for (size_t c = 0; c < n; c++)
			l->A[j * n + c] = (float)(*V)[c * r + j];
	return a;
}

static void test_rerank(void)
{
	size_t m = 40, n = 30, r = 6;
	double s[6] = {6, 5, 4, 3, 2, 1}, *U, *V;
	/* alpha -12 at rank 6 with rsLoRA: scale -12 / sqrt(6). */
	lora_adapter *a = planted_adapter(m, n, r, s, -12, 1, 81, &U, &V), *b = NULL;
	double sc = lora_adapter_layer_scale(a, &a->layers[0]), tot = 0;
	for (int i = 0; i < 6; i++)
		tot += s[i] * s[i] * sc * sc;
	double *P = malloc(m * n * sizeof *P), *Q = malloc(m * n * sizeof *Q);
	product(P, a->layers[0].B, a->layers[0].A, m, r, n);
	for (size_t i = 0; i < m * n; i++)
		P[i] *= sc;
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	lora_svd_report rep = {0};
	lora_err e;
	for (size_t newr = 3; newr <= 9; newr += 3) {
		o.rank = newr;
		CHECK(lora_svd_rerank(&b, a, &o, &rep, &e) == 0, "rerank %zu", newr);
		const lora_layer *l = &b->layers[0];
		CHECK(l->rank == newr && l->alpha == (double)newr && !b->rslora && lora_adapter_layer_scale(b, l) == 1,
		      "rank %zu alpha %g scale 1", l->rank, l->alpha);
		product(Q, l->B, l->A, m, newr, n);
		if (newr >= r) {
			/* The delta is preserved to f32 rounding. */
			CHECK(fro_diff(P, Q, m * n) < 1e-6 * fro(P, m * n), "rank %zu: delta moved by %g", newr,
			      fro_diff(P, Q, m * n) / fro(P, m * n));
			CHECK(rep.layers[rep.nlayers - 1].rel_error < 1e-6, "report error %g",
			      rep.layers[rep.nlayers - 1].rel_error);
		} else {
			/* The optimal truncation: the planted top-3 directions. */
			double *T = malloc(m * n * sizeof *T), sk[3];
			double *Uk = malloc(m * 3 * sizeof *Uk), *Vk = malloc(n * 3 * sizeof *Vk);
			for (size_t i = 0; i < 3; i++)
				sk[i] = s[i] * sc;
			for (size_t i = 0; i < m; i++)
				memcpy(Uk + i * 3, U + i * r, 3 * sizeof *Uk);
			for (size_t i = 0; i < n; i++)
				memcpy(Vk + i * 3, V + i * r, 3 * sizeof *Vk);
			compose(T, Uk, sk, Vk, m, n, 3);
			CHECK(fro_diff(T, Q, m * n) < 1e-6 * fro(T, m * n), "rank 3 is not the planted truncation: %g",
			      fro_diff(T, Q, m * n) / fro(T, m * n));
			double want = sqrt((9 + 4 + 1) * sc * sc / tot);
			CHECK(fabs(rep.layers[0].rel_error - want) < 1e-6, "rank 3 error %.9g vs %.9g", rep.layers[0].rel_error, want);
			CHECK(fabs(rep.layers[0].energy - (36 + 25 + 16) * sc * sc / tot) < 1e-6, "rank 3 energy");
			free(T), free(Uk), free(Vk);
		}
		/* Balanced: B^T B = A A^T = diag(|sc| s) on the kept directions. */
		double sv[9] = {0};
		for (size_t i = 0; i < newr && i < r; i++)
			sv[i] = s[i] * fabs(sc);
		CHECK(unbalance(l->B, l->A, sv, m, newr, n) < 1e-6, "rank %zu: factors not U S^(1/2), S^(1/2) V^T: %g",
		      newr, unbalance(l->B, l->A, sv, m, newr, n));
		if (newr == 9) {
			for (size_t i = 0; i < m; i++)
				for (size_t j = 6; j < 9; j++)
					CHECK(l->B[i * 9 + j] == 0, "padding is zero");
		}
		lora_adapter_free(b);
		lora_svd_report_free(&rep);
	}
	/* Energy rule. */
	o.rank = 0;
	o.energy = 0.9; /* (36+25+16+9)/91 = 0.945, (36+25+16)/91 = 0.846 */
	CHECK(lora_svd_rerank(&b, a, &o, &rep, &e) == 0 && b->layers[0].rank == 4, "energy 0.9 -> rank %zu",
	      b->layers[0].rank);
	lora_adapter_free(b);
	lora_svd_report_free(&rep);
	/* A zero layer keeps rank 1 under an energy rule, and r under a rank rule. */
	memset(a->layers[0].B, 0, m * r * sizeof(float));
	CHECK(lora_svd_rerank(&b, a, &o, &rep, &e) == 0 && b->layers[0].rank == 1 && rep.layers[0].energy == 1 &&
	      rep.layers[0].rel_error == 0, "zero layer");
	lora_adapter_free(b);
	lora_svd_report_free(&rep);
	lora_adapter_free(a);
	free(U), free(V), free(P), free(Q);
}

int main(void)
{
	test_gemm();
	test_lowrank_svd(30, 5, 20, 0, 0, 1);
	test_lowrank_svd(3, 5, 40, 0, 0, 2);
	test_lowrank_svd(40, 6, 4, 0, 0, 3);
	test_lowrank_svd(1, 1, 1, 0, 0, 4);
	test_lowrank_svd(0, 7, 25, 1, 0, 5); /* SVD of A alone */
	test_lowrank_svd(25, 7, 0, 0, 1, 6); /* SVD of B alone */
	test_inner_dist();
	test_exact(50, 35);
	test_exact(20, 45);
	test_randomized(200, 150, 1.0, 10);
	test_randomized(150, 200, 0.5, 16);
	test_randomized(300, 120, 2.0, 8);
	test_exact_lowrank_randomized();
	test_residual_sumsq();
	test_pick_rank();
	test_energy_ties();
	test_factor(LORA_SVD_EXACT);
	test_factor(LORA_SVD_RANDOMIZED);
	test_factor_balanced(LORA_SVD_EXACT);
	test_factor_balanced(LORA_SVD_RANDOMIZED);
	test_rerank();
	DONE();
}
