/* sample: pick the next token from logits (temperature, top-k, top-p). */
#ifndef LORA_SAMPLE_H
#define LORA_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

typedef struct {
	double temperature; /* 0: greedy (argmax, lowest id on ties) */
	size_t top_k;       /* 0: no limit */
	double top_p;       /* 1: no limit; else the smallest set of most likely tokens
	                       whose probability reaches top_p */
} lora_sampler;

/* Sample one token id from logits (V values). scratch is caller-owned,
 * V * (sizeof(float) + sizeof(uint32_t)) bytes. Uses one uniform draw from r unless greedy.
 * Candidates are ordered by probability, then by id, so the result depends
 * only on the logits, the settings and the generator's state. */
uint32_t lora_sample_next(const float *logits, size_t V, const lora_sampler *s, lora_rng *r, void *scratch);

#endif
