/* svdbench: timings for bench/svd.sh, each against a baseline measured in
 * the same run. Not a test: it asserts nothing.
 *
 *   svdbench extract M N K   randomized vs exact extraction of rank K from an
 *                            M x N difference (lora_svd_factor, as lora-svd)
 *   svdbench rerank M N R K L  re-rank L layers of rank R (M x N) to rank K
 *                            from the factors (lora_svd_rerank) vs forming
 *                            B A and factoring it densely (one layer)
 *
 * The difference matrix imitates a fine-tune: 256 directions with a
 * decaying spectrum s_i = 1 / sqrt(i + 1) plus full-rank Gaussian noise
 * carrying about a tenth of the energy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "math/linalg.h"
#include "core/rng.h"
#include "ops/svd.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float *gaussian(size_t n, lora_rng *g, float scale)
{
	float *x = malloc(n * sizeof *x);
	if (!x) {
		fprintf(stderr, "svdbench: out of memory\n");
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		x[i] = scale * lora_rng_normal(g);
	return x;
}

static float *finetune_like(size_t m, size_t n, uint64_t seed)
{
	size_t k = 256;
	lora_rng g;
	lora_rng_seed(&g, seed);
	float *U = gaussian(m * k, &g, (float)(1 / sqrt((double)m)));
	float *V = gaussian(k * n, &g, (float)(1 / sqrt((double)n)));
	for (size_t i = 0; i < k; i++)
		for (size_t j = 0; j < n; j++)
			V[i * n + j] *= (float)(1 / sqrt((double)i + 1));
	float *X = malloc(m * n * sizeof *X);
	if (!X) {
		fprintf(stderr, "svdbench: out of memory\n");
		exit(1);
	}
	lora_linalg_sgemm(0, 0, m, n, k, 1.0f, U, V, 0.0f, X);
	/* signal energy ~ sum 1/(i+1) ~ 6.1; noise energy = m n sigma^2 ~ 0.6 */
	float sigma = (float)sqrt(0.6 / ((double)m * (double)n));
	for (size_t i = 0; i < m * n; i++)
		X[i] += sigma * lora_rng_normal(&g);
	free(U), free(V);
	return X;
}

static int factor(const float *X, size_t m, size_t n, size_t k, lora_svd_method meth, double *secs,
                  double *err)
{
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	o.rank = k;
	o.method = meth;
	float *B, *A;
	size_t r;
	lora_svd_layer_report rep = {0};
	lora_err e;
	double t = now();
	if (lora_svd_factor(&B, &A, &r, X, m, n, &o, 1, &rep, &e)) {
		fprintf(stderr, "svdbench: %s\n", e.msg);
		return 1;
	}
	*secs = now() - t;
	*err = rep.rel_error;
	free(B), free(A);
	return 0;
}

static int extract(size_t m, size_t n, size_t k)
{
	float *X = finetune_like(m, n, 1);
	double te, ee, tr = 1e30, er = 0;
	/* Randomized: best of three (it is short enough to be noisy). */
	for (int i = 0; i < 3; i++) {
		double t, err;
		if (factor(X, m, n, k, LORA_SVD_RANDOMIZED, &t, &err))
			return 1;
		if (t < tr)
			tr = t, er = err;
	}
	if (factor(X, m, n, k, LORA_SVD_EXACT, &te, &ee))
		return 1;
	double ratio = te / tr, rel = er / ee - 1;
	printf("extract %zux%zu rank %zu: exact %.2f s (rel.error %.6f), randomized %.3f s (rel.error %.6f)\n", m, n,
	       k, te, ee, tr, er);
	printf("  randomized is %.1fx faster, error %+.4f%% of exact's  [target >= 10x, <= 1%%: %s]\n", ratio,
	       100 * rel, ratio >= 10 && rel <= 0.01 ? "met" : "MISSED");
	free(X);
	return 0;
}

static int rerank(size_t m, size_t n, size_t r, size_t k, size_t layers)
{
	lora_rng g;
	lora_rng_seed(&g, 2);
	lora_adapter *a = lora_adapter_new(), *out = NULL;
	lora_err e;
	char name[32];
	for (size_t i = 0; i < layers; i++) {
		snprintf(name, sizeof name, "layer.%zu", i);
		lora_layer *l = lora_adapter_add(a, name, m, n, r, 2.0 * (double)r, 0, &e);
		for (size_t j = 0; j < m * r; j++)
			l->B[j] = lora_rng_normal(&g);
		for (size_t j = 0; j < r * n; j++)
			l->A[j] = lora_rng_normal(&g);
	}
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	o.rank = k;
	lora_svd_report rep = {0};
	double t = now();
	if (lora_svd_rerank(&out, a, &o, &rep, &e)) {
		fprintf(stderr, "svdbench: %s\n", e.msg);
		return 1;
	}
	double per = (now() - t) / (double)layers;
	double err = rep.layers[0].rel_error;
	lora_adapter_free(out);
	lora_svd_report_free(&rep);
	o.rank = r;
	t = now();
	if (lora_svd_rerank(&out, a, &o, &rep, &e)) {
		fprintf(stderr, "svdbench: %s\n", e.msg);
		return 1;
	}
	double per_same = (now() - t) / (double)layers, err_same = rep.layers[0].rel_error;
	lora_adapter_free(out);
	lora_svd_report_free(&rep);
	/* Baseline: form the product and factor it densely, exactly. */
	const lora_layer *l = &a->layers[0];
	float *X = malloc(m * n * sizeof *X);
	double tb, eb;
	t = now();
	lora_linalg_sgemm(0, 0, m, n, r, (float)lora_adapter_layer_scale(a, l), l->B, l->A, 0.0f, X);
	double tform = now() - t;
	if (factor(X, m, n, k, LORA_SVD_EXACT, &tb, &eb))
		return 1;
	tb += tform;
	printf("rerank %zux%zu rank %zu -> %zu: %.1f ms per layer (rel.error %.6f); dense B A + exact SVD %.2f s "
	       "(rel.error %.6f): %.0fx faster\n",
	       m, n, r, k, 1e3 * per, err, tb, eb, tb / per);
	printf("rerank %zux%zu rank %zu -> %zu: %.1f ms per layer (update preserved to %.1e)\n", m, n, r, r,
	       1e3 * per_same, err_same);
	free(X);
	lora_adapter_free(a);
	return 0;
}

static size_t arg(char **argv, int i)
{
	char *end;
	unsigned long long v = strtoull(argv[i], &end, 10);
	if (*end || !v) {
		fprintf(stderr, "svdbench: bad number '%s'\n", argv[i]);
		exit(2);
	}
	return (size_t)v;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "extract") == 0)
		return extract(arg(argv, 2), arg(argv, 3), arg(argv, 4));
	if (argc == 7 && strcmp(argv[1], "rerank") == 0)
		return rerank(arg(argv, 2), arg(argv, 3), arg(argv, 4), arg(argv, 5), arg(argv, 6));
	fprintf(stderr, "usage: svdbench extract M N K | svdbench rerank M N R K LAYERS\n");
	return 2;
}
