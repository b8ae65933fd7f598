/* dtype conversions against independent reference rules. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "core/dtype.h"

static float f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static uint32_t u(float x) { uint32_t v; memcpy(&v, &x, 4); return v; }

/* Reference: the value of every finite non-negative f16, by formula. */
static double f16_value(unsigned h)
{
	unsigned e = (h >> 10) & 31, m = h & 1023;
	return e ? ldexp(1.0 + m / 1024.0, (int)e - 15) : ldexp(m / 1024.0, -14);
}

/* Reference rounding: nearest representable by search, ties to the even
 * code, and overflow to inf at or beyond 65520 (half way to 2^16). */
static unsigned ref_f32_to_f16(float x)
{
	unsigned sign = signbit(x) ? 0x8000 : 0;
	double a = fabs((double)x);
	if (a >= 65520.0)
		return sign | 0x7c00;
	unsigned lo = 0, hi = 0x7bff;
	while (lo < hi) { /* largest code with value <= a */
		unsigned mid = (lo + hi + 1) / 2;
		if (f16_value(mid) <= a) lo = mid; else hi = mid - 1;
	}
	if (lo == 0x7bff)
		return sign | lo;
	double d0 = a - f16_value(lo), d1 = f16_value(lo + 1) - a;
	unsigned r = d0 < d1 ? lo : d1 < d0 ? lo + 1 : (lo & 1 ? lo + 1 : lo);
	return sign | r;
}

static unsigned ref_f32_to_bf16(float x)
{
	uint32_t b = u(x);
	uint32_t lo = b & 0xffff0000u, hi = lo + 0x10000u;
	double a = fabs((double)x), dlo = a - fabs((double)f(lo)), dhi = fabs((double)f(hi)) - a;
	/* beyond FLT_MAX the next code is inf: its "distance" is taken as that of 2^128 */
	if ((hi & 0x7fffffffu) == 0x7f800000u)
		dhi = ldexp(1.0, 128) - a;
	uint32_t r = dlo < dhi ? lo : dhi < dlo ? hi : ((lo >> 16) & 1 ? hi : lo);
	return r >> 16;
}

int main(void)
{
	/* every f16 and bf16 code through f32 and back */
	for (unsigned h = 0; h < 65536; h++) {
		float x = lora_dtype_f16_to_f32((uint16_t)h);
		unsigned back = lora_dtype_f32_to_f16(x);
		int nan = ((h >> 10) & 31) == 31 && (h & 1023);
		if (nan)
			CHECK(isnan(x) && (back & 0x7e00) == 0x7e00 && (back & 0x8000) == (h & 0x8000),
			      "f16 NaN %04x -> %04x", h, back);
		else
			CHECK(back == h, "f16 %04x -> %g -> %04x", h, x, back);
		if (!nan && ((h >> 10) & 31) != 31) {
			double ref = f16_value(h & 0x7fff) * ((h & 0x8000) ? -1 : 1);
			CHECK((double)x == ref, "f16 %04x decodes to %g, want %g", h, x, ref);
		}
		float y = lora_dtype_bf16_to_f32((uint16_t)h);
		unsigned bb = lora_dtype_f32_to_bf16(y);
		if (isnan(y))
			CHECK(isnan(lora_dtype_bf16_to_f32((uint16_t)bb)) && (bb & 0x8000) == (h & 0x8000),
			      "bf16 NaN %04x -> %04x", h, bb);
		else
			CHECK(bb == h, "bf16 %04x -> %04x", h, bb);
	}
	/* random f32 bit patterns and the exact midpoints between f16 codes */
	lora_rng r;
	lora_rng_seed(&r, 42);
	for (int i = 0; i < 2000000; i++) {
		float x = f((uint32_t)lora_rng_u64(&r));
		if (i & 1) /* half of them in f16's range, where rounding matters */
			x = f((u(x) & 0x80ffffffu) | ((uint32_t)(100 + lora_rng_u64(&r) % 48) << 23));
		if (isnan(x))
			continue;
		CHECK(lora_dtype_f32_to_f16(x) == ref_f32_to_f16(x), "f32 %08x -> f16 %04x, want %04x", u(x),
		      lora_dtype_f32_to_f16(x), ref_f32_to_f16(x));
		CHECK(lora_dtype_f32_to_bf16(x) == ref_f32_to_bf16(x), "f32 %08x -> bf16 %04x, want %04x", u(x),
		      lora_dtype_f32_to_bf16(x), ref_f32_to_bf16(x));
	}
	for (unsigned h = 0; h < 0x7bff; h++) {
		float mid = (float)((f16_value(h) + f16_value(h + 1)) / 2); /* exact in f32 */
		CHECK(lora_dtype_f32_to_f16(mid) == ref_f32_to_f16(mid), "f16 tie after %04x", h);
		CHECK(lora_dtype_f32_to_f16(mid) == ((h & 1) ? h + 1 : h), "f16 tie after %04x rounds to even", h);
	}
	/* named edge cases */
	CHECK(lora_dtype_f32_to_f16(65504.0f) == 0x7bff, "f16 max");
	CHECK(lora_dtype_f32_to_f16(65519.99f) == 0x7bff, "just below the overflow threshold");
	CHECK(lora_dtype_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to inf");
	CHECK(lora_dtype_f32_to_f16(-INFINITY) == 0xfc00, "-inf");
	CHECK(lora_dtype_f32_to_f16(0x1p-25f) == 0x0000, "half the smallest subnormal ties to zero");
	CHECK(lora_dtype_f32_to_f16(0x1.8p-25f) == 0x0001, "above half rounds up to 2^-24");
	CHECK(lora_dtype_f32_to_f16(-0.0f) == 0x8000, "negative zero keeps its sign");
	CHECK(lora_dtype_f32_to_bf16(f(0x3f808000u)) == 0x3f80, "bf16 tie to even (down)");
	CHECK(lora_dtype_f32_to_bf16(f(0x3f818000u)) == 0x3f82, "bf16 tie to even (up)");
	CHECK(lora_dtype_f32_to_bf16(f(0x7f7fffffu)) == 0x7f80, "FLT_MAX rounds to bf16 inf");
	CHECK(lora_dtype_f32_to_bf16(f(0x00000001u)) == 0x0000, "smallest f32 subnormal to bf16 zero");
	CHECK(lora_dtype_f32_to_bf16(NAN) != 0x7f80 && isnan(lora_dtype_bf16_to_f32(lora_dtype_f32_to_bf16(NAN))), "bf16 NaN stays NaN");

	/* buffer conversions are little-endian */
	float v[3] = {1.0f, -2.0f, 0.5f}, back[3];
	unsigned char buf[12];
	lora_dtype_from_f32(buf, v, LORA_BF16, 3);
	CHECK(buf[0] == 0x80 && buf[1] == 0x3f && buf[2] == 0x00 && buf[3] == 0xc0, "bf16 LE bytes");
	lora_dtype_to_f32(back, buf, LORA_BF16, 3);
	CHECK(memcmp(back, v, sizeof v) == 0, "bf16 buffer round trip");
	lora_dtype_from_f32(buf, v, LORA_F16, 3);
	CHECK(buf[0] == 0x00 && buf[1] == 0x3c, "f16 LE bytes");
	lora_dtype_to_f32(back, buf, LORA_F16, 3);
	CHECK(memcmp(back, v, sizeof v) == 0, "f16 buffer round trip");

	/* overflow-checked shape products */
	size_t shape[3] = {1u << 20, 1u << 20, 1u << 22}, n;
	CHECK(lora_shape_bytes(shape, 3, 4, &n) == -1, "2^62 x 4 bytes overflows");
	CHECK(lora_shape_bytes(shape, 2, 4, &n) == 0 && n == (size_t)1 << 42, "2^40 x 4 fits");
	lora_dtype t;
	CHECK(lora_dtype_from_st("BF16", &t) == 0 && t == LORA_BF16, "BF16 name");
	CHECK(lora_dtype_from_st("bf16", &t) == -1, "safetensors names are upper case");
	CHECK(lora_dtype_parse("f16", &t) == 0 && t == LORA_F16, "f16 option name");
	CHECK(lora_dtype_parse("i64", &t) == -1, "only float dtypes are options");
	DONE();
}
