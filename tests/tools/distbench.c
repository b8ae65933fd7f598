/* distbench: lora-train's gradient exchange on its own, for bench/dist.sh.
 *
 *   mpirun -np N distbench PARAMS STEPS [LOCAL]
 *
 * Each rank fills LOCAL (default 1) micro-batch gradients of PARAMS values
 * and runs STEPS exchanges (lora_dist_reduce) after one to warm up; rank 0
 * prints ranks=, params=, bytes_per_step= (what each link carries: the
 * chain's partial sums and the broadcast sum, 4 bytes a value each way),
 * reduce_ms= (the mean time of an exchange) and allreduce_ms= (the MPI
 * library's own MPI_Allreduce of the same values, the baseline). */
#include <stdio.h>
#include <stdlib.h>

#include "train/dist_internal.h"

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: distbench PARAMS STEPS [LOCAL]\n");
		return 2;
	}
	size_t n = strtoull(argv[1], NULL, 10), local = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
	int steps = atoi(argv[2]), rc = 1;
	lora_err e = {0};
	lora_dist *d = NULL;
	float *g = malloc((n ? n : 1) * sizeof *g);
	double total = 0, base = 0;
	if (!g || steps < 1 || local < 1 || lora_dist_open(&d, 1, &e) || lora_dist_plan(d, n, local, &e))
		goto out;
	for (int s = 0; s <= steps; s++) {
		for (size_t m = 0; m < local; m++) {
			float *slot = lora_dist_slot(d, m);
			for (size_t j = 0; j < n; j++)
				slot[j] = (float)((j + m) % 7) * 0.25f;
			lora_dist_add(d, m, 1.0, 1);
		}
		lora_dist_sums sum = {.failed = -1};
		if (lora_dist_reduce(d, g, 1.0f, &sum, 0, &e))
			goto out;
		if (s > 0)
			total += sum.wait;
	}
	for (int s = 0; s <= steps; s++) {
		double t = lora_dist_bench_allreduce(d, g, n);
		if (t < 0)
			goto out;
		if (s > 0)
			base += t;
	}
	if (lora_dist_rank(d) == 0)
		printf("ranks=%d\nparams=%zu\nbytes_per_step=%zu\nreduce_ms=%.3f\nallreduce_ms=%.3f\n", lora_dist_size(d), n,
		       2 * n * sizeof(float), total / steps * 1e3, base / steps * 1e3);
	rc = 0;
out:
	if (rc && e.msg[0])
		fprintf(stderr, "distbench: %s\n", e.msg);
	lora_dist_close(d);
	free(g);
	return rc;
}
