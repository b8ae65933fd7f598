/* Compare two adapters field by field (for round-trip checks in fuzz
 * harnesses): values bit for bit, names and metadata as strings. */
#ifndef LORA_FUZZ_SAME_H
#define LORA_FUZZ_SAME_H

#include <string.h>

#include "core/adapter.h"
#include "fuzz.h"

static inline int fuzz_same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static inline int fuzz_same_floats(const float *a, const float *b, size_t n)
{
	return (!a && !b) || (a && b && memcmp(a, b, n * sizeof *a) == 0);
}

/* The factors, vectors, extras and flags; with meta also the identity,
 * targets, provenance and imported config (a .lora carries all of them). */
static inline void fuzz_check_same(const lora_adapter *a, const lora_adapter *b, int meta)
{
	FUZZ_CHECK(a->nlayers == b->nlayers);
	FUZZ_CHECK(a->dtype == b->dtype);
	FUZZ_CHECK(a->rslora == b->rslora);
	FUZZ_CHECK(a->fan_in_fan_out == b->fan_in_fan_out);
	for (size_t i = 0; i < a->nlayers; i++) {
		const lora_layer *x = &a->layers[i], *y = &b->layers[i];
		FUZZ_CHECK(strcmp(x->name, y->name) == 0);
		FUZZ_CHECK(x->out == y->out && x->in == y->in && x->rank == y->rank);
		FUZZ_CHECK(memcmp(&x->alpha, &y->alpha, sizeof x->alpha) == 0);
		FUZZ_CHECK(fuzz_same_floats(x->A, y->A, x->rank * x->in));
		FUZZ_CHECK(fuzz_same_floats(x->B, y->B, x->out * x->rank));
		FUZZ_CHECK(fuzz_same_floats(x->magnitude, y->magnitude, x->out));
		FUZZ_CHECK(fuzz_same_floats(x->bias, y->bias, x->out));
	}
	FUZZ_CHECK(a->nextras == b->nextras);
	for (size_t i = 0; i < a->nextras; i++) {
		const lora_extra *x = &a->extras[i], *y = &b->extras[i];
		FUZZ_CHECK(strcmp(x->name, y->name) == 0);
		FUZZ_CHECK(x->dtype == y->dtype && x->ndim == y->ndim && x->nbytes == y->nbytes);
		FUZZ_CHECK(memcmp(x->shape, y->shape, x->ndim * sizeof *x->shape) == 0);
		FUZZ_CHECK((!x->data && !y->data) || (x->data && y->data && memcmp(x->data, y->data, x->nbytes) == 0));
	}
	if (!meta)
		return;
	FUZZ_CHECK(fuzz_same_str(a->base_name, b->base_name));
	FUZZ_CHECK(fuzz_same_str(a->base_fingerprint, b->base_fingerprint));
	FUZZ_CHECK(fuzz_same_str(a->provenance, b->provenance));
	FUZZ_CHECK(fuzz_same_str(a->peft_config, b->peft_config));
	FUZZ_CHECK(a->ntargets == b->ntargets);
	for (size_t i = 0; i < a->ntargets; i++)
		FUZZ_CHECK(strcmp(a->targets[i], b->targets[i]) == 0);
}

#endif
