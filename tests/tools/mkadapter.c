/* mkadapter: write a .lora with a planted spectrum, for tests.
 *
 *   mkadapter [--dtype T] [--alpha A] [--rslora] NAME=OUTxINxRANK:s1,s2,... ... > out.lora
 *   mkadapter --gaussian SEED [--dtype T] NAME=OUTxINxRANK ... > out.lora
 *
 * Layer NAME gets B = [s1 e_1, s2 e_2, ...] (out x rank, column k is s_k
 * times the k-th unit vector) and A = [e_{p(1)}; e_{p(2)}; ...] (rank x in,
 * rows are distinct unit vectors, p(k) = in-1-k), so B A has exactly the
 * singular values |s_k| (times the scale) and ||B A||_F^2 = sum s_k^2.
 * With --gaussian, A ~ N(0, 1/in) and B ~ N(0, 1e-4) instead: the dense
 * factors of a trained adapter, for size and speed benchmarks.
 *
 *   mkadapter --many N > out.lora
 *
 * adds N layers model.layers.K.mlp.up_proj (1x1, rank 1, A = B = 1): a
 * header as large as you like, for the header-parsing benchmark. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "io/lorafile.h"
#include "core/rng.h"

int main(int argc, char **argv)
{
	lora_adapter *a = lora_adapter_new();
	double alpha = 0;
	int gaussian = 0;
	lora_rng g;
	lora_err e;
	for (int i = 1; i < argc; i++) {
		int opt = fx_adapter_option(a, &alpha, argc, argv, &i);
		if (opt < 0)
			return 2;
		if (opt)
			continue;
		if (strcmp(argv[i], "--gaussian") == 0 && i + 1 < argc) {
			gaussian = 1;
			lora_rng_seed(&g, strtoull(argv[++i], NULL, 10));
			continue;
		}
		if (strcmp(argv[i], "--many") == 0 && i + 1 < argc) {
			size_t n = strtoull(argv[++i], NULL, 10);
			for (size_t k = 0; k < n; k++) {
				char nm[64];
				snprintf(nm, sizeof nm, "model.layers.%zu.mlp.up_proj", k);
				lora_layer *l = lora_adapter_add(a, nm, 1, 1, 1, 1, 0, &e);
				if (!l) {
					fprintf(stderr, "mkadapter: %s\n", e.msg);
					return 1;
				}
				l->A[0] = l->B[0] = 1;
			}
			continue;
		}
		char name[256];
		size_t out, in, rank;
		int used;
		used = 0;
		if (sscanf(argv[i], "%255[^=]=%zux%zux%zu%n", name, &out, &in, &rank, &used) != 4 ||
		    rank > out || rank > in) {
			fprintf(stderr, "mkadapter: bad layer spec '%s'\n", argv[i]);
			return 2;
		}
		lora_layer *l = lora_adapter_add(a, name, out, in, rank, alpha ? alpha : (double)rank, 0, &e);
		if (!l) {
			fprintf(stderr, "mkadapter: %s\n", e.msg);
			return 1;
		}
		if (gaussian) {
			for (size_t k = 0; k < rank * in; k++)
				l->A[k] = lora_rng_normal(&g) / sqrtf((float)in);
			for (size_t k = 0; k < out * rank; k++)
				l->B[k] = lora_rng_normal(&g) * 1e-2f;
			continue;
		}
		char *p = argv[i] + used + (argv[i][used] == ':');
		for (size_t k = 0; k < rank; k++) {
			l->B[k * rank + k] = strtof(p, &p);
			l->A[k * in + (in - 1 - k)] = 1.0f;
			if (*p == ',')
				p++;
		}
	}
	if (lora_lorafile_save(a, "-", 0, &e)) {
		fprintf(stderr, "mkadapter: %s\n", e.msg);
		return 1;
	}
	lora_adapter_free(a);
	return 0;
}
