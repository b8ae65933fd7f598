/* Low-rank singular values against the dense SVD of the formed product. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "math/linalg_internal.h"
#include "core/rng.h"

static void one(size_t m, size_t r, size_t n, uint64_t seed)
{
	lora_rng g;
	lora_rng_seed(&g, seed);
	float *B = malloc(m * r * sizeof *B), *A = malloc(r * n * sizeof *A);
	for (size_t i = 0; i < m * r; i++)
		B[i] = lora_rng_normal(&g);
	for (size_t i = 0; i < r * n; i++)
		A[i] = lora_rng_normal(&g);
	size_t k = m < n ? m : n;
	k = k < r ? k : r;
	double *s1 = calloc(k, sizeof *s1), *s2 = calloc(k, sizeof *s2);
	lora_err e;
	CHECK(lora_linalg_lowrank_svals(s1, B, A, m, r, n, &e) == 0, "lowrank %zux%zux%zu", m, r, n);
	CHECK(lora_linalg_dense_svals(s2, B, A, m, r, n, &e) == 0, "dense %zux%zux%zu", m, r, n);
	for (size_t i = 0; i < k; i++)
		CHECK(fabs(s1[i] - s2[i]) <= 1e-9 * s2[0], "%zux%zux%zu sv[%zu] %.17g vs %.17g", m, r, n, i,
		      s1[i], s2[i]);
	for (size_t i = 1; i < k; i++)
		CHECK(s1[i] <= s1[i - 1], "descending");
	free(A), free(B), free(s1), free(s2);
}

int main(void)
{
	one(30, 5, 20, 1);
	one(64, 8, 64, 2);
	one(3, 5, 40, 3);   /* rank above out: only 3 values */
	one(40, 6, 4, 4);   /* rank above in */
	one(1, 1, 1, 5);
	one(200, 16, 150, 6);
	/* planted spectrum: B = U diag(s), A = V^T with orthonormal columns */
	size_t m = 6, n = 5, r = 2;
	float B[12] = {0}, A[10] = {0};
	B[0 * 2 + 0] = 3.0f, B[1 * 2 + 1] = 0.5f; /* e1*3, e2*0.5 */
	A[0 * 5 + 2] = 1.0f, A[1 * 5 + 4] = 1.0f;
	double sv[2];
	lora_err e;
	CHECK(lora_linalg_lowrank_svals(sv, B, A, m, r, n, &e) == 0 && fabs(sv[0] - 3) < 1e-12 &&
	      fabs(sv[1] - 0.5) < 1e-12, "planted 3, 0.5: got %g %g", sv[0], sv[1]);
	DONE();
}
