/* lora_init_weights against PEFT's distributions: kaiming A uniform in
 * (-1/sqrt(in), 1/sqrt(in)) with variance 1/(3 in), gaussian A with
 * standard deviation 1/r, B zero, and per-layer streams. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "ops/init.h"

static void moments(const float *x, size_t n, double *mean, double *var, double *amax)
{
	double s = 0, s2 = 0, m = 0;
	for (size_t i = 0; i < n; i++) {
		s += x[i], s2 += (double)x[i] * x[i];
		if (fabs(x[i]) > m)
			m = fabs(x[i]);
	}
	*mean = s / (double)n, *var = s2 / (double)n - *mean * *mean, *amax = m;
}

int main(void)
{
	lora_err e;
	lora_adapter *a = lora_adapter_new();
	lora_adapter_add(a, "w", 64, 400, 16, 8, 0, &e);
	lora_adapter_add(a, "v", 32, 100, 4, 8, 0, &e);
	double mean, var, amax, n = 16 * 400, b = 1 / sqrt(400.0);
	lora_init_weights(a, LORA_INIT_KAIMING, 1);
	moments(a->layers[0].A, (size_t)n, &mean, &var, &amax);
	CHECK(amax < b && amax > 0.99 * b, "kaiming bound: max |A| %g, bound %g", amax, b);
	/* uniform(-b, b): variance b^2/3; 5 standard errors of mean and variance */
	CHECK(fabs(mean) < 5 * sqrt(b * b / 3 / n), "kaiming mean %g", mean);
	CHECK(fabs(var - b * b / 3) < 5 * b * b * sqrt(4.0 / 45 / n), "kaiming variance %g, want %g", var, b * b / 3);
	for (size_t i = 0; i < 64 * 16; i++)
		CHECK(a->layers[0].B[i] == 0, "B[%zu] not zero", i);
	float first[400];
	memcpy(first, a->layers[1].A, sizeof(float) * 400);
	lora_init_weights(a, LORA_INIT_GAUSSIAN, 1);
	moments(a->layers[0].A, (size_t)n, &mean, &var, &amax);
	CHECK(fabs(sqrt(var) - 1.0 / 16) < 5 * (1.0 / 16) / sqrt(2 * n), "gaussian sd %g, want %g", sqrt(var), 1.0 / 16);
	/* a layer's values depend on the seed and its name only */
	lora_adapter *b2 = lora_adapter_new();
	lora_adapter_add(b2, "v", 32, 100, 4, 8, 0, &e);
	lora_init_weights(b2, LORA_INIT_KAIMING, 1);
	CHECK(memcmp(b2->layers[0].A, first, sizeof first) == 0, "layer 'v' differs without layer 'w'");
	lora_init_weights(b2, LORA_INIT_KAIMING, 2);
	CHECK(memcmp(b2->layers[0].A, first, sizeof first) != 0, "another seed, other values");
	lora_init_weights(b2, LORA_INIT_ZEROS, 1);
	moments(b2->layers[0].A, 400, &mean, &var, &amax);
	CHECK(amax == 0, "zeros");
	lora_adapter_free(a);
	lora_adapter_free(b2);
	DONE();
}
