#include "core/rng.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void lora_rng_seed(lora_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lora_rng_u64(lora_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

float lora_rng_uniform(lora_rng *r) { return (float)(lora_rng_u64(r) >> 40) * 0x1p-24f; }

float lora_rng_normal(lora_rng *r)
{
	/* u1 in (0, 1] so log never sees zero. */
	double u1 = ((double)(lora_rng_u64(r) >> 11) + 1.0) * 0x1p-53;
	double u2 = (double)(lora_rng_u64(r) >> 11) * 0x1p-53;
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t lora_rng_fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

void lora_rng_seed_name(lora_rng *r, uint64_t seed, const char *name)
{
	lora_rng_seed(r, seed ^ lora_rng_fnv1a(LORA_FNV_INIT, name, strlen(name)));
}
