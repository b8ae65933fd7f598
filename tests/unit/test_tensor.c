/* dtype conversions against independent reference rules. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "core/dtype_internal.h"

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

/* f32 inputs where a conversion can go wrong: every bf16 code and every
 * f16 value, one unit either side and the midpoints to their neighbours
 * (ties), the f16 overflow and subnormal thresholds, f32 subnormals, NaNs
 * quiet and signalling with payloads, and random bit patterns. */
static uint32_t *edge_values(size_t *n)
{
	uint32_t *v = malloc((65536 * 12 + 64 + 200000) * sizeof *v);
	size_t k = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		uint32_t b = h << 16, m = u(lora_dtype_f16_to_f32((uint16_t)h));
		uint32_t near[] = {b, b + 1, b - 1, b + 0x8000u, b + 0x7fffu, b + 0x8001u,
		                   m, m + 1, m - 1, m + 0x1000u, m + 0xfffu, m + 0x1001u};
		for (size_t i = 0; i < 12; i++)
			v[k++] = near[i];
	}
	static const uint32_t named[] = {
		0x7f800000u, 0xff800000u, 0x7f7fffffu, 0xff7fffffu, 0x7f800001u, 0xff800001u, 0x7fbfffffu,
		0x7fc00000u, 0xffc00000u, 0x7fffffffu, 0xffffffffu, 0x7f80ffffu, 0x7f810000u, 0x7fa00000u,
		0x7f802000u, 0x7f801fffu, 0x00000001u, 0x80000001u, 0x007fffffu, 0x00400000u, 0x80400000u,
		0x477fefffu, 0x477ff000u, 0x477ff001u, 0x477fe000u, 0x38800000u, 0x387fffffu, 0x38800001u,
		0x33000000u, 0x33000001u, 0x32ffffffu, 0x33800000u, 0x33c00000u, 0x00000000u, 0x80000000u,
		0x7f7f8000u, 0x7f7f7fffu, 0x3f808000u, 0x3f818000u, 0x47800000u, 0xc77ff000u, 0xb3000001u,
	};
	for (size_t i = 0; i < sizeof named / sizeof *named; i++)
		v[k++] = named[i];
	lora_rng r;
	lora_rng_seed(&r, 7);
	for (int i = 0; i < 200000; i++)
		v[k++] = (uint32_t)lora_rng_u64(&r);
	*n = k;
	return v;
}

/* The array conversions and the scan of the variant in effect against the
 * scalar functions, bit for bit, at every length of a block and a half and
 * at odd byte addresses. */
static void test_arrays(int variant)
{
	size_t n;
	uint32_t *in = edge_values(&n);
	float *x = malloc(n * sizeof *x), *y = malloc(65536 * sizeof *y);
	unsigned char *codes = malloc(2 * 65536 + 1), *out = malloc(2 * n + 1);
	for (size_t i = 0; i < n; i++)
		x[i] = f(in[i]);
	for (int t = LORA_F16; t <= LORA_BF16; t++) {
		const char *tn = lora_dtype_name((lora_dtype)t);
		uint16_t (*to)(float) = t == LORA_F16 ? lora_dtype_f32_to_f16 : lora_dtype_f32_to_bf16;
		float (*from)(uint16_t) = t == LORA_F16 ? lora_dtype_f16_to_f32 : lora_dtype_bf16_to_f32;
		/* every code, read from an odd address */
		for (unsigned h = 0; h < 65536; h++)
			codes[1 + 2 * h] = (unsigned char)h, codes[2 + 2 * h] = (unsigned char)(h >> 8);
		lora_dtype_to_f32(y, codes + 1, (lora_dtype)t, 65536);
		size_t bad = 0;
		for (unsigned h = 0; h < 65536; h++)
			if (u(y[h]) != u(from((uint16_t)h)) && bad++ < 3)
				CHECK(0, "variant %d: %s %04x widens to %08x, scalar %08x", variant, tn, h, u(y[h]),
				      u(from((uint16_t)h)));
		CHECK(bad == 0, "variant %d: %zu %s codes widen unlike the scalar rule", variant, bad, tn);
		/* every edge value, written to an odd address */
		lora_dtype_from_f32(out + 1, x, (lora_dtype)t, n);
		bad = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned got = out[1 + 2 * i] | out[2 + 2 * i] << 8;
			if (got != to(x[i]) && bad++ < 3)
				CHECK(0, "variant %d: f32 %08x to %s gives %04x, scalar %04x", variant, in[i], tn, got,
				      to(x[i]));
		}
		CHECK(bad == 0, "variant %d: %zu f32 values narrow to %s unlike the scalar rule", variant, bad, tn);
		/* short runs and tails: lengths 0..96 at offsets 0..3 */
		for (size_t off = 0; off < 4; off++)
			for (size_t len = 0; len <= 96; len++) {
				memset(out, 0xa5, 2 * 100);
				lora_dtype_from_f32(out, x + 1000 * off, (lora_dtype)t, len);
				int ok = out[2 * len] == 0xa5; /* nothing past the end */
				for (size_t i = 0; i < len; i++)
					ok &= (unsigned)(out[2 * i] | out[2 * i + 1] << 8) == to(x[1000 * off + i]);
				lora_dtype_to_f32(y, out, (lora_dtype)t, len);
				for (size_t i = 0; i < len; i++)
					ok &= u(y[i]) == u(from(to(x[1000 * off + i])));
				CHECK(ok, "variant %d: %s run of %zu at %zu", variant, tn, len, off);
			}
	}
	/* the scan: the first of one or two non-finite values, wherever they fall */
	static const size_t at[] = {0, 1, 62, 63, 64, 65, 127, 128, 500, 998, 999};
	static const uint32_t kinds[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffffffffu};
	float *v = malloc(1000 * sizeof *v);
	for (size_t i = 0; i < 1000; i++)
		v[i] = i % 7 ? f(0x7f7fffffu) : -f(0x00000001u) * (float)i; /* finite extremes */
	CHECK(lora_dtype_find_nonfinite(v, 1000) == 1000, "variant %d: nothing to find", variant);
	for (size_t a = 0; a < sizeof at / sizeof *at; a++)
		for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
			float keep = v[at[a]], keep2 = v[999];
			v[at[a]] = f(kinds[k]);
			v[999] = f(kinds[(k + 1) % 5]);
			CHECK(lora_dtype_find_nonfinite(v, 1000) == at[a], "variant %d: %08x at %zu", variant, kinds[k], at[a]);
			CHECK(lora_dtype_find_nonfinite(v, at[a]) == at[a], "variant %d: scan stops at n = %zu", variant, at[a]);
			v[at[a]] = keep, v[999] = keep2;
		}
	free(v), free(in), free(x), free(y), free(codes), free(out);
}

int main(void)
{
	/* each array variant this CPU runs, then back to the best */
	int best = lora_dtype_kernels(2);
	for (int variant = 0; variant <= best; variant++) {
		CHECK(lora_dtype_kernels(variant) == variant, "variant %d runs here", variant);
		test_arrays(variant);
	}
	lora_dtype_kernels(2);

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
