/* The sampler against exact probabilities. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "model/sample.h"

static void freq(const float *logits, size_t V, const lora_sampler *s, size_t n, double *f)
{
	lora_rng r;
	lora_rng_seed(&r, 3);
	void *scratch = malloc(V * 8);
	size_t *count = calloc(V, sizeof *count);
	for (size_t i = 0; i < n; i++)
		count[lora_sample_next(logits, V, s, &r, scratch)]++;
	for (size_t i = 0; i < V; i++)
		f[i] = (double)count[i] / (double)n;
	free(count);
	free(scratch);
}

int main(void)
{
	/* p = softmax(log [1, 2, 3, 4] / T) */
	float lg[4] = {0, (float)log(2), (float)log(3), (float)log(4)};
	double f[4];
	size_t n = 200000;
	lora_sampler s = {1.0, 0, 1.0};
	freq(lg, 4, &s, n, f);
	for (int i = 0; i < 4; i++) /* 5 standard deviations of a binomial frequency */
		CHECK(fabs(f[i] - (i + 1) / 10.0) < 5 * sqrt(0.25 / n), "T=1 p[%d] = %g, want %g", i, f[i], (i + 1) / 10.0);
	s.temperature = 0.5; /* p ~ [1, 4, 9, 16] / 30 */
	freq(lg, 4, &s, n, f);
	for (int i = 0; i < 4; i++)
		CHECK(fabs(f[i] - (i + 1) * (i + 1) / 30.0) < 5 * sqrt(0.25 / n), "T=0.5 p[%d] = %g", i, f[i]);
	s = (lora_sampler){1.0, 2, 1.0}; /* top-k 2: [3, 4] / 7 */
	freq(lg, 4, &s, n, f);
	CHECK(f[0] == 0 && f[1] == 0 && fabs(f[3] - 4 / 7.0) < 5 * sqrt(0.25 / n), "top-k 2: %g %g %g %g", f[0], f[1], f[2], f[3]);
	s = (lora_sampler){1.0, 0, 0.65}; /* 0.4 + 0.3 reaches 0.65: [3, 4] / 7 */
	freq(lg, 4, &s, n, f);
	CHECK(f[0] == 0 && f[1] == 0 && fabs(f[2] - 3 / 7.0) < 5 * sqrt(0.25 / n), "top-p 0.65: %g %g %g %g", f[0], f[1], f[2], f[3]);
	s = (lora_sampler){1.0, 0, 0.4}; /* the top token alone has 0.4 */
	freq(lg, 4, &s, 1000, f);
	CHECK(f[3] == 1, "top-p 0.4 keeps the top token only");
	s = (lora_sampler){0, 0, 1.0};
	freq(lg, 4, &s, 1000, f);
	CHECK(f[3] == 1, "greedy takes the argmax");
	float tie[3] = {1, 5, 5};
	freq(tie, 3, &s, 100, f);
	CHECK(f[1] == 1, "greedy ties go to the lower id");
	s = (lora_sampler){1.0, 1, 1.0};
	freq(lg, 4, &s, 1000, f);
	CHECK(f[3] == 1, "top-k 1 is greedy");
	DONE();
}
