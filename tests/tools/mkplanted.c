/* mkplanted: write a .lora whose layers have a planted spectrum in a chosen
 * basis, for tests of lora-svd and lora-diff.
 *
 *   mkplanted [--alpha A] [--rslora] [--dtype T] [--seed N] [--offset K]
 *             NAME=OUTxINxRANK:s1,s2,... ... > out.lora
 *
 * Layer NAME gets B = U diag(s) (out x rank) and A = V^T (rank x in) with
 * U, V orthonormal columns: random (modified Gram-Schmidt in double, seeded
 * by the seed and the layer name) by default, or with --offset K the unit
 * vectors e_K, e_{K+1}, ... on both sides. So s * B A has singular values
 * |s_k| times the scale, its column space is span(U), its row space
 * span(V), and two adapters made with disjoint offsets span orthogonal
 * subspaces. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "io/lorafile.h"
#include "core/rng.h"
#include "../unit/planted.h"

static int usage(const char *msg, const char *arg)
{
	fprintf(stderr, "mkplanted: %s '%s'\n", msg, arg);
	return 2;
}

int main(int argc, char **argv)
{
	lora_adapter *a = lora_adapter_new();
	double alpha = 0;
	unsigned long long seed = 1;
	long offset = -1;
	lora_err e;
	for (int i = 1; i < argc; i++) {
		int opt = fx_adapter_option(a, &alpha, argc, argv, &i);
		if (opt < 0)
			return usage("bad dtype", argv[i]);
		if (opt)
			continue;
		if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 10);
			continue;
		}
		if (strcmp(argv[i], "--offset") == 0 && i + 1 < argc) {
			offset = atol(argv[++i]);
			continue;
		}
		char name[256];
		size_t out, in, rank;
		int used;
		if (sscanf(argv[i], "%255[^=]=%zux%zux%zu:%n", name, &out, &in, &rank, &used) != 4 || !rank ||
		    rank > out || rank > in || (offset >= 0 && (size_t)offset + rank > (out < in ? out : in)))
			return usage("bad layer spec", argv[i]);
		lora_layer *l = lora_adapter_add(a, name, out, in, rank, alpha ? alpha : (double)rank, 0, &e);
		double *U = calloc(out * rank, sizeof *U), *V = calloc(in * rank, sizeof *V), *s = calloc(rank, sizeof *s);
		if (!l || !U || !V || !s)
			return 1;
		char *p = argv[i] + used;
		for (size_t k = 0; k < rank; k++) {
			s[k] = strtod(p, &p);
			if (*p == ',')
				p++;
		}
		if (offset >= 0) {
			for (size_t k = 0; k < rank; k++)
				U[((size_t)offset + k) * rank + k] = V[((size_t)offset + k) * rank + k] = 1;
		} else {
			lora_rng g;
			lora_rng_seed_name(&g, seed, name);
			orthonormal(U, out, rank, &g);
			orthonormal(V, in, rank, &g);
		}
		for (size_t r = 0; r < out; r++)
			for (size_t k = 0; k < rank; k++)
				l->B[r * rank + k] = (float)(U[r * rank + k] * s[k]);
		for (size_t k = 0; k < rank; k++)
			for (size_t c = 0; c < in; c++)
				l->A[k * in + c] = (float)V[c * rank + k];
		free(U), free(V), free(s);
	}
	if (lora_lorafile_save(a, "-", 0, &e)) {
		fprintf(stderr, "mkplanted: %s\n", e.msg);
		return 1;
	}
	lora_adapter_free(a);
	return 0;
}
