/* rng: seeded random numbers, identical on every machine for the same seed.
 *
 * xoshiro256** seeded through splitmix64. Integer arithmetic only, except
 * lora_rng_normal, which uses Box-Muller in double precision and rounds to
 * float once: libm differences in the last bit of a double cannot change
 * the float except in astronomically rare ties. */
#ifndef LORA_RNG_H
#define LORA_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
	uint64_t s[4];
} lora_rng;

void lora_rng_seed(lora_rng *r, uint64_t seed);
uint64_t lora_rng_u64(lora_rng *r);
/* Uniform in [0, 1) with 24 random bits: every value is an exact float. */
float lora_rng_uniform(lora_rng *r);
/* Standard normal deviate. */
float lora_rng_normal(lora_rng *r);
/* Seed with seed mixed with a name (FNV-1a of it), so that each tensor or
 * layer has its own stream whatever else is generated. */
void lora_rng_seed_name(lora_rng *r, uint64_t seed, const char *name);
/* 64-bit FNV-1a of n bytes, continuing from h (start with LORA_FNV_INIT). */
#define LORA_FNV_INIT 0xcbf29ce484222325ull
uint64_t lora_rng_fnv1a(uint64_t h, const void *p, size_t n);

#endif
