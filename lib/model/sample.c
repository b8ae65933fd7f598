#include "model/sample.h"

#include <math.h>
#include <stdlib.h>

/* Descending probability, ascending id on ties: a total order, so qsort's
 * instability cannot change the result. */
static int by_prob(const void *a, const void *b, void *key)
{
	const float *p = key;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	float x = p[i], y = p[j];
	if (x != y)
		return x > y ? -1 : 1;
	return (i > j) - (i < j);
}

uint32_t lora_sample_next(const float *logits, size_t V, const lora_sampler *s, lora_rng *r, void *scratch)
{
	uint32_t best = 0;
	for (size_t i = 1; i < V; i++)
		if (logits[i] > logits[best])
			best = (uint32_t)i;
	if (s->temperature <= 0 || s->top_k == 1)
		return best;
	float *p = scratch;
	uint32_t *idx = (uint32_t *)(p + V);
	/* Softmax at the temperature, in double for the normaliser. */
	double sum = 0, mx = logits[best];
	for (size_t i = 0; i < V; i++) {
		p[i] = (float)exp(((double)logits[i] - mx) / s->temperature);
		sum += p[i];
	}
	for (size_t i = 0; i < V; i++) {
		p[i] = (float)(p[i] / sum);
		idx[i] = (uint32_t)i;
	}
	size_t n = V;
	if (s->top_k || s->top_p < 1) {
		qsort_r(idx, V, sizeof *idx, by_prob, p);
		if (s->top_k && s->top_k < n)
			n = s->top_k;
		if (s->top_p < 1) {
			double c = 0;
			size_t k = 0;
			while (k < n && c < s->top_p)
				c += p[idx[k++]];
			n = k ? k : 1;
		}
	}
	double total = 0;
	for (size_t k = 0; k < n; k++)
		total += p[idx[k]];
	double u = (double)lora_rng_uniform(r) * total, c = 0;
	for (size_t k = 0; k < n; k++) {
		c += p[idx[k]];
		if (u < c)
			return idx[k];
	}
	return idx[n - 1];
}
