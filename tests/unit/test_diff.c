/* diff and combine modules against dense computations in plain C. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops/combine.h"
#include "ops/diff.h"
#include "math/linalg_internal.h"
#include "planted.h"

static lora_layer *random_layer(lora_adapter *a, const char *name, size_t m, size_t n, size_t r, double alpha,
                                lora_rng *g)
{
	lora_err e;
	lora_layer *l = lora_adapter_add(a, name, m, n, r, alpha, 0, &e);
	for (size_t i = 0; i < m * r; i++)
		l->B[i] = lora_rng_normal(g);
	for (size_t i = 0; i < r * n; i++)
		l->A[i] = lora_rng_normal(g);
	return l;
}

/* Dense s B A of a layer, in double. */
static double *delta(const lora_adapter *a, const lora_layer *l)
{
	double *P = malloc(l->out * l->in * sizeof *P), s = lora_adapter_layer_scale(a, l);
	product(P, l->B, l->A, l->out, l->rank, l->in);
	for (size_t i = 0; i < l->out * l->in; i++)
		P[i] *= s;
	return P;
}

static void test_phi(void)
{
	/* U1 = [e1 e2], U2 = [e2 e3] in R^4 (rows are the vectors). */
	double U1[8] = {1, 0, 0, 0, 0, 1, 0, 0}, U2[8] = {0, 1, 0, 0, 0, 0, 1, 0}, phi[4];
	lora_err e;
	CHECK(lora_diff_subspace_phi(phi, U1, 2, U2, 2, 4, &e) == 0, "phi");
	CHECK(phi[0] == 0 && phi[1] == 0 && phi[2] == 1 && phi[3] == 0.5, "phi = %g %g %g %g, want 0 0 1 0.5", phi[0],
	      phi[1], phi[2], phi[3]);
	/* Self-similarity is 1 everywhere, in any basis. */
	lora_rng g;
	lora_rng_seed(&g, 5);
	double Q[50 * 6], Qt[6 * 50], P[36];
	orthonormal(Q, 50, 6, &g);
	for (size_t i = 0; i < 50; i++)
		for (size_t j = 0; j < 6; j++)
			Qt[j * 50 + i] = Q[i * 6 + j];
	CHECK(lora_diff_subspace_phi(P, Qt, 6, Qt, 6, 50, &e) == 0, "self phi");
	double worst = 0;
	for (int i = 0; i < 36; i++)
		worst = fmax(worst, fabs(P[i] - 1));
	CHECK(worst < 1e-12, "self phi off by %g", worst);
}

static void test_diff_adapters(void)
{
	lora_rng g;
	lora_rng_seed(&g, 3);
	lora_adapter *a = lora_adapter_new(), *b = lora_adapter_new();
	lora_err e;
	b->rslora = 1;
	random_layer(a, "x", 20, 30, 4, 8, &g);
	random_layer(a, "only_a", 5, 5, 1, 1, &g);
	random_layer(b, "only_b", 5, 5, 1, 1, &g);
	random_layer(b, "x", 20, 30, 6, -3, &g);
	lora_diff_result r;
	CHECK(lora_diff_adapters(&r, a, "a", b, "b", 1, 0, &e) == 0, "diff: %s", e.msg);
	CHECK(r.nlayers == 1 && r.n_only_a == 1 && r.n_only_b == 1 && !strcmp(r.only_a[0], "only_a") &&
	      !strcmp(r.only_b[0], "only_b"), "layer sets");
	const lora_layer *la = lora_adapter_find(a, "x"), *lb = lora_adapter_find(b, "x");
	double *Pa = delta(a, la), *Pb = delta(b, lb), D[600], ip = 0;
	for (int i = 0; i < 600; i++) {
		D[i] = Pa[i] - Pb[i];
		ip += Pa[i] * Pb[i];
	}
	double na = fro(Pa, 600), nb = fro(Pb, 600), mx = fmax(na, nb);
	const lora_diff_layer *d = &r.layers[0];
	CHECK(fabs(d->norm_a - na) < 1e-12 * na && fabs(d->norm_b - nb) < 1e-12 * nb, "norms");
	CHECK(fabs(d->rel_diff - fro(D, 600) / mx) < 1e-12, "rel diff %.17g vs %.17g", d->rel_diff, fro(D, 600) / mx);
	CHECK(fabs(d->cosine - ip / (na * nb)) < 1e-12, "cosine %.17g vs %.17g", d->cosine, ip / (na * nb));
	CHECK(d->phiA_rows == 4 && d->phiA_cols == 6 && d->phiB_rows == 4 && d->phiB_cols == 6 && d->top == 4,
	      "phi shapes");
	/* Random 4- and 6-dim subspaces of R^30: phi(4, 6) = ||U1^T U2||^2 / 4. */
	CHECK(d->phi_A[23] > 0 && d->phi_A[23] < 1, "phi in (0, 1): %g", d->phi_A[23]);
	lora_diff_result_free(&r);
	/* An adapter against itself: 0, cosine 1, phi 1. */
	CHECK(lora_diff_adapters(&r, a, "a", a, "a", 1, 2, &e) == 0, "self");
	d = &r.layers[0];
	double worst = 0;
	for (size_t i = 0; i < 16; i++)
		worst = fmax(worst, fmax(fabs(d->phi_A[i] - 1), fabs(d->phi_B[i] - 1)));
	CHECK(d->rel_diff == 0 && fabs(d->cosine - 1) < 1e-12 && worst < 1e-12 && d->top == 2 &&
	      fabs(d->top_out - 1) < 1e-12 && fabs(d->top_in - 1) < 1e-12, "self: %g %g %g", d->rel_diff, d->cosine, worst);
	CHECK(r.n_only_a == 0 && r.n_only_b == 0, "self: no lone layers");
	lora_diff_result_free(&r);
	/* Shapes must agree. */
	lora_adapter *c = lora_adapter_new();
	random_layer(c, "x", 30, 20, 4, 8, &g);
	CHECK(lora_diff_adapters(&r, a, "a.lora", c, "c.lora", 0, 0, &e) == LORA_EINVAL &&
	      !strcmp(e.msg, "layer 'x': shape 20x30 in a.lora but 30x20 in c.lora"), "shape: %s", e.msg);
	/* A zero delta: cosine undefined, relative difference 1 against anything else. */
	lora_adapter_free(c);
	c = lora_adapter_new();
	memset(random_layer(c, "x", 20, 30, 4, 8, &g)->B, 0, 20 * 4 * sizeof(float));
	CHECK(lora_diff_adapters(&r, a, "a", c, "c", 0, 0, &e) == 0 && isnan(r.layers[0].cosine) &&
	      fabs(r.layers[0].rel_diff - 1) < 1e-12, "zero delta: %g", r.layers[0].rel_diff);
	lora_diff_result_free(&r);
	free(Pa), free(Pb);
	lora_adapter_free(a), lora_adapter_free(b), lora_adapter_free(c);
}

static void test_cat_and_svd(void)
{
	lora_rng g;
	lora_rng_seed(&g, 9);
	lora_adapter *in[3] = {lora_adapter_new(), lora_adapter_new(), lora_adapter_new()};
	lora_err e;
	in[1]->rslora = 1;
	random_layer(in[0], "p", 16, 12, 2, 4, &g);
	random_layer(in[0], "q", 8, 8, 1, 1, &g);
	random_layer(in[1], "p", 16, 12, 3, 6, &g);
	random_layer(in[2], "r", 4, 4, 2, 2, &g);
	lora_layer *pb = random_layer(in[2], "p", 16, 12, 1, -1, &g);
	pb->bias = calloc(16, sizeof *pb->bias);
	pb->bias[3] = 2;
	lora_adapter_add_target(in[0], "q_proj", &e);
	lora_adapter_add_target(in[1], "q_proj", &e);
	lora_adapter_add_target(in[1], "v_proj", &e);
	double w[3] = {0.5, -2, 3};
	lora_adapter *c = NULL;
	CHECK(lora_combine_cat(&c, in, w, NULL, 3, &e) == 0, "cat: %s", e.msg);
	CHECK(c->nlayers == 3 && !strcmp(c->layers[0].name, "p") && !strcmp(c->layers[1].name, "q") &&
	      !strcmp(c->layers[2].name, "r"), "layer order of first appearance");
	CHECK(c->ntargets == 2 && !c->rslora, "targets union, standard scaling");
	const lora_layer *p = lora_adapter_find(c, "p");
	CHECK(p->rank == 6 && p->alpha == 6 && lora_adapter_layer_scale(c, p) == 1, "rank sum 2+3+1");
	double want[192] = {0};
	for (int i = 0; i < 3; i++) {
		const lora_layer *x = lora_adapter_find(in[i], "p");
		double *P = delta(in[i], x);
		for (int j = 0; j < 192; j++)
			want[j] += w[i] * P[j];
		free(P);
	}
	double *got = delta(c, p);
	CHECK(fro_diff(want, got, 192) < 1e-6 * fro(want, 192), "cat delta off by %g",
	      fro_diff(want, got, 192) / fro(want, 192));
	CHECK(p->bias && p->bias[3] == -6 && p->bias[0] == 0, "bias = sum w s b: %g", p->bias ? p->bias[3] : 0);
	free(got);
	/* SVD combination: the optimal rank-2 approximation of the sum. */
	lora_svd_opts o;
	lora_svd_opts_init(&o);
	o.rank = 2;
	lora_adapter *s = NULL;
	lora_svd_report rep = {0};
	CHECK(lora_combine_svd(&s, in, w, NULL, 3, &o, &rep, &e) == 0, "combine svd: %s", e.msg);
	const lora_layer *sp = lora_adapter_find(s, "p");
	double sv[6], sv2[2];
	CHECK(lora_linalg_dense_svals(sv, p->B, p->A, 16, 6, 12, &e) == 0 && lora_linalg_dense_svals(sv2, sp->B, sp->A, 16, 2, 12, &e) == 0,
	      "svals");
	CHECK(sp->rank == 2 && fabs(sv2[0] - sv[0]) < 1e-5 * sv[0] && fabs(sv2[1] - sv[1]) < 1e-5 * sv[0],
	      "top-2 values %g %g vs %g %g", sv2[0], sv2[1], sv[0], sv[1]);
	CHECK(unbalance(sp->B, sp->A, sv, 16, 2, 12) < 1e-5, "combined factors not U S^(1/2), S^(1/2) V^T: %g",
	      unbalance(sp->B, sp->A, sv, 16, 2, 12));
	double tail = sqrt(sv[2] * sv[2] + sv[3] * sv[3] + sv[4] * sv[4] + sv[5] * sv[5]);
	got = delta(s, sp);
	CHECK(fabs(fro_diff(want, got, 192) - tail) < 1e-5 * fro(want, 192), "optimal error %g vs %g",
	      fro_diff(want, got, 192), tail);
	CHECK(rep.nlayers == 3 && fabs(rep.layers[0].rel_error - tail / fro(want, 192)) < 1e-5, "report error");
	free(got);
	lora_svd_report_free(&rep);
	lora_adapter_free(s);
	lora_adapter_free(c);
	/* Errors name the inputs. */
	const char *names[3] = {"one.lora", "two.lora", "three.lora"};
	in[2]->layers[1].out = 15; /* "p" of the third input (its B stays large enough) */
	CHECK(lora_combine_cat(&c, in, NULL, names, 3, &e) == LORA_EINVAL &&
	      !strcmp(e.msg, "layer 'p': shape 16x12 in one.lora but 15x12 in three.lora"), "shape: %s", e.msg);
	in[2]->layers[1].out = 16;
	in[1]->fan_in_fan_out = 1;
	CHECK(lora_combine_cat(&c, in, NULL, names, 3, &e) == LORA_EINVAL &&
	      !strcmp(e.msg, "two.lora has fan_in_fan_out on but one.lora has it off"), "fan_in_fan_out: %s", e.msg);
	in[1]->fan_in_fan_out = 0;
	in[0]->base_fingerprint = strdup("0123456789abcdef");
	in[2]->base_fingerprint = strdup("fedcba9876543210");
	CHECK(lora_combine_cat(&c, in, NULL, names, 3, &e) == LORA_EINVAL &&
	      !strcmp(e.msg, "three.lora was made for another base model (fingerprint fedcba9876543210, one.lora has 0123456789abcdef)"),
	      "fingerprint: %s", e.msg);
	free(in[2]->base_fingerprint);
	in[2]->base_fingerprint = NULL;
	in[1]->layers[0].magnitude = calloc(16, sizeof(float));
	CHECK(lora_combine_cat(&c, in, NULL, names, 3, &e) == LORA_EINVAL &&
	      !strcmp(e.msg, "two.lora: layer 'p' is DoRA (magnitude vector): it cannot be combined linearly"), "dora: %s",
	      e.msg);
	/* Re-ranking keeps DoRA magnitudes and biases, and the fingerprint. */
	lora_adapter *rr = NULL;
	o.rank = 1;
	CHECK(lora_svd_rerank(&rr, in[1], &o, NULL, &e) == 0 && rr->layers[0].magnitude &&
	      rr->layers[0].has_magnitude, "rerank keeps magnitude");
	lora_adapter_free(rr);
	/* in[2]'s "p" has scale -1 / 1: the folded bias changes sign */
	CHECK(lora_svd_rerank(&rr, in[2], &o, NULL, &e) == 0 && rr->layers[1].bias && rr->layers[1].bias[3] == -2,
	      "rerank folds the scale into the bias");
	lora_adapter_free(rr);
	CHECK(lora_combine_cat(&c, in, NULL, NULL, 0, &e) == LORA_EUSAGE, "nothing to combine");
	for (int i = 0; i < 3; i++)
		lora_adapter_free(in[i]);
}

int main(void)
{
	test_phi();
	test_diff_adapters();
	test_cat_and_svd();
	DONE();
}
